"""Ancestral / SDE DPM-Solver samplers, DDPM and LCM: exact equivalences, parity with diffusers given the same
noise, and the data distribution at high NFE."""
import math

import pytest
import torch

import samplers
from benchmarks.common import sliced_wasserstein
from samplers.core.native import RectifiedFlow
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 3, 3), components=4, seed=2)
X = GM.noise(4, seed=1) * 20.0
SIGMAS = samplers.get_sigmas("karras", 9, sigma_min=0.02, sigma_max=20.0)

ANCESTRAL = ["dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm"]


def replay(seed, shape=X.shape):
    """A noise sampler that hands out one fixed stream: two runs with replay(s) see the same noise."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=g, dtype=torch.float64)


def run(name, **kw):
    return samplers.sample(name, GM.denoiser, X, SIGMAS, disable=True, **kw)


def close(a, b, tol=1e-11):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_ddpm_is_ddim_eta_1_is_euler_ancestral():
    ddpm = run("ddpm", noise_sampler=replay(3))
    close(ddpm, run("euler_ancestral", noise_sampler=replay(3)))
    close(ddpm, run("ddim", eta=1.0, noise_sampler=replay(3)))


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_at_eta_0_is_dpmpp_2m(solver_type):
    close(run("dpmpp_2m_sde", eta=0.0, solver_type=solver_type, noise_sampler=replay(0)),
          run("dpmpp_2m", solver_type=solver_type))


def test_deterministic_limits():
    close(run("dpmpp_2s_ancestral", eta=0.0, noise_sampler=replay(0)), run("dpmpp_2s"))
    close(run("dpm_2_ancestral", eta=0.0, noise_sampler=replay(0)), run("dpm_2"))
    close(run("dpmpp_sde", eta=0.0, noise_sampler=replay(0)), run("dpmpp_2s"))
    close(run("dpmpp_sde", eta=0.0, r=0.3, noise_sampler=replay(0)), run("dpmpp_2s", r=0.3))
    # k-diffusion's 3M SDE warms up with the heun-type 2nd-order step and has no lower-order final rule
    close(run("dpmpp_3m_sde", eta=0.0, noise_sampler=replay(0)),
          run("dpmpp_3m", solver_type="heun", lower_order_final=False))
    close(run("lcm", eta=0.0, noise_sampler=replay(0)), run("ddim"))


def test_noise_enters_and_s_noise_scales_it():
    for name in ANCESTRAL:
        a, b = run(name, seed=[1, 2, 3, 4]), run(name, seed=[5, 6, 7, 8])
        assert float((a - b).abs().max()) > 1e-3, f"{name} ignores its noise"
        close(run(name, s_noise=0.0, seed=[1, 2, 3, 4]), run(name, s_noise=0.0, seed=[5, 6, 7, 8]))


@pytest.mark.parametrize("name,stated", [("dpmpp_2m_sde", 2), ("dpmpp_2s_ancestral", 2), ("dpm_2_ancestral", 2),
                                         ("dpmpp_sde", 2)])
def test_eta_0_convergence_order(name, stated):
    mix = GaussianMixture(means=[[0.7, -0.3, 0.2, 1.1], [-0.5, 0.4, 0.9, -0.2]], stds=[0.6, 0.8], weights=[0.4, 0.6])
    x = mix.noise(16, seed=0) * 10.0
    ref = mix.ode_endpoint(x, 10.0, 0.1, rtol=1e-13, atol=1e-13)

    def err(n):
        sig = torch.logspace(1, -1, n + 1, dtype=torch.float64)
        out = samplers.sample(name, mix.denoiser, x, sig, disable=True, eta=0.0, noise_sampler=replay(0, x.shape))
        return float((out - ref).abs().max())
    slope = math.log2(err(32) / err(64))
    assert abs(slope - stated) < 0.3, f"{name}: observed order {slope:.2f}"


# ---------------------------------------------------------------------------------------------------
# the data distribution at high NFE (2-D mixture, 4000 samples)

DATA = GaussianMixture(means=[[-2.0, 0.5], [1.5, 1.5], [0.5, -2.0]], stds=[0.3, 0.5, 0.4], weights=[0.3, 0.4, 0.3])
N = 4000


def _floor():
    """Mean and std of the distance between independent exact sample sets of size N (the estimator's noise)."""
    d = torch.tensor([sliced_wasserstein(DATA.sample(N, seed=100 + k), DATA.sample(N, seed=200 + k)) for k in range(8)])
    return float(d.mean()), float(d.std())


FLOOR_MEAN, FLOOR_STD = _floor()
THRESHOLD = 1.2 * FLOOR_MEAN + 3 * FLOOR_STD  # 20% bias allowed, plus the estimator's own noise


def sample_data(name, steps, **options):
    sigma_max = 80.0
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.002, sigma_max=sigma_max)
    g = torch.Generator().manual_seed(7)
    x = DATA.sample(N, seed=2) + sigma_max * torch.randn(N, 2, generator=g, dtype=torch.float64)

    def noise(sigma, sigma_next):
        return torch.randn(N, 2, generator=g, dtype=torch.float64)
    return samplers.sample(name, DATA.denoiser, x, sigmas, disable=True, noise_sampler=noise, **options)


@pytest.mark.parametrize("name", [n for n in ANCESTRAL if n != "lcm"])
def test_reaches_the_data_distribution(name):
    steps = 25 if samplers.info(name).nfe_per_step > 1 else 50
    distance = sliced_wasserstein(sample_data(name, steps), DATA.sample(N, seed=1))
    assert distance < THRESHOLD, f"{name}: SW {distance:.4f} vs threshold {THRESHOLD:.4f} (floor {FLOOR_MEAN:.4f})"


def test_lcm_on_the_exact_consistency_function_draws_the_data_distribution():
    """LCM jumps with a consistency function f(x, σ) = the PF-ODE endpoint (what an LCM learns), not with the
    posterior mean D: given the exact f (a dopri5 solve here), 4 steps already draw the data distribution.
    With a plain denoiser the re-noised posterior means are too concentrated (the first check)."""
    assert sliced_wasserstein(sample_data("lcm", 50), DATA.sample(N, seed=1)) > THRESHOLD

    def consistency(x, sigma):
        return DATA.ode_endpoint(x, float(sigma[0]), rtol=1e-6, atol=1e-6)
    sigmas = torch.tensor([80.0, 5.0, 1.0, 0.3, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    x = DATA.sample(N, seed=2) + 80.0 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    out = samplers.sample("lcm", consistency, x, sigmas, disable=True,
                          noise_sampler=lambda s, s_next: torch.randn(N, 2, generator=g, dtype=torch.float64))
    assert sliced_wasserstein(out, DATA.sample(N, seed=1)) < THRESHOLD


def test_the_distribution_test_rejects_a_wrong_sampler():
    """No noise (s_noise = 0) collapses the ancestral samplers towards the modes: the test must see it."""
    distance = sliced_wasserstein(sample_data("dpmpp_2m_sde", 50, s_noise=0.0), DATA.sample(N, seed=1))
    assert distance > THRESHOLD


# ---------------------------------------------------------------------------------------------------
# parity with diffusers on the same native model, timesteps and noise (float32)

diffusers = pytest.importorskip("diffusers")

def ours(sd15, name, sig, seed, start_scale=None, **kw):
    scale = math.sqrt(1 + float(sig[0]) ** 2) if start_scale is None else start_scale
    g = torch.Generator().manual_seed(seed)
    noise = lambda s, s_next: torch.randn(sd15.noise.shape, generator=g)  # noqa: E731
    return samplers.sample(name, sd15.denoiser, sd15.noise * scale, sig, disable=True, noise_sampler=noise, **kw)


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmsolver_sde_2m_parity(sd15, solver_type):
    sch = diffusers.DPMSolverMultistepScheduler(**sd15.betas, algorithm_type="sde-dpmsolver++", solver_order=2,
                                                solver_type=solver_type, final_sigmas_type="zero")
    theirs = sd15.diffusers_loop(sch, 12, seed=4)
    out = ours(sd15, "dpmpp_2m_sde", sd15.table_sigmas(sch.timesteps), seed=4, solver_type=solver_type)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


def test_ddpm_parity(sd15):
    sch = diffusers.DDPMScheduler(**sd15.betas, clip_sample=False, variance_type="fixed_small")
    theirs = sd15.diffusers_loop(sch, 10, seed=6)
    out = ours(sd15, "ddpm", sd15.table_sigmas(sch.timesteps), seed=6)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_kdpm2_ancestral_parity(sd15):
    sch = diffusers.KDPM2AncestralDiscreteScheduler(**sd15.betas, timestep_spacing="leading", steps_offset=1)
    theirs = sd15.diffusers_loop(sch, 10, seed=8)
    sig = sd15.table_sigmas(sch.timesteps[::2])
    out = ours(sd15, "dpm_2_ancestral", sig, seed=8, start_scale=float(sch.init_noise_sigma))
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


def test_lcm_parity(sd15):
    sch = diffusers.LCMScheduler(**sd15.betas, clip_sample=False)
    theirs = sd15.diffusers_loop(sch, 4, seed=9)
    out = ours(sd15, "lcm", sd15.table_sigmas(sch.timesteps), seed=9)
    # diffusers applies LCM's consistency boundary scalings (c_skip = 0.25/((10 t)² + 0.25) ≤ 1e-5 here) on top
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


def test_flow_match_euler_stochastic_is_lcm_on_a_flow_model(sd15):
    """diffusers' flow ancestral step x_next = (1 − s')·x̂0 + s'·z is LCM in VE coordinates, from t = 1 on."""
    flow = RectifiedFlow(shift=3.0)
    native = sd15.gm.as_model("flow", flow)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True)
    sch.set_timesteps(8)
    latents, g = sd15.noise.clone(), torch.Generator().manual_seed(12)
    for t in sch.timesteps:
        tt = (t / 1000).double().reshape(1).expand(sd15.noise.shape[0])
        v = native(latents.double(), flow.time(flow_sigma(tt))).float()
        latents = sch.step(v, t, latents, generator=g).prev_sample
    s_flow = sch.sigmas.double()
    sig = torch.cat([s_flow[:-1] / (1 - s_flow[:-1]), torch.zeros(1, dtype=torch.float64)])
    dn = samplers.to_denoiser(native, "flow", flow)
    g2 = torch.Generator().manual_seed(12)
    out = samplers.sample("lcm", dn, samplers.initial_latent(sd15.noise, sig), sig, disable=True,
                          noise_sampler=lambda s, s_next: torch.randn(sd15.noise.shape, generator=g2))
    torch.testing.assert_close(out, latents, rtol=1e-4, atol=1e-4)


def flow_sigma(t):
    """VE σ of flow time t (σ = t/(1 − t); inf at t = 1)."""
    return torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dpmsolver_sde_parity_given_the_same_draws(sd15):
    """DPMSolverSDEScheduler (k-diffusion's DPM++ SDE) with its Brownian-tree sampler replaced by a seeded stream,
    and dpmpp_sde fed the same stream: both draw for (σ, σ_mid) then (σ, σ_next) in each step."""
    sch = diffusers.DPMSolverSDEScheduler(**sd15.betas, timestep_spacing="leading", steps_offset=1)
    sch.set_timesteps(10)
    g = torch.Generator().manual_seed(5)
    sch.noise_sampler = lambda s, s_next: torch.randn(sd15.noise.shape, generator=g)
    latents = sd15.noise * sch.init_noise_sigma
    for t in sch.timesteps:
        latents = sch.step(sd15.model32(sch.scale_model_input(latents, t), t), t, latents).prev_sample
    out = ours(sd15, "dpmpp_sde", sd15.table_sigmas(sch.timesteps[::2]), seed=5, start_scale=float(sch.init_noise_sigma))
    torch.testing.assert_close(out, latents, rtol=1e-4, atol=1e-4)

"""The registry samplers called directly equal diffusers' own schedulers on the same model, timesteps and noise
(float32, ≤ 1e-5): the equivalences the shim relies on, without the shim.

The model is the Gaussian mixture written as a native eps- (or flow-) model taking diffusers' timesteps.
diffusers runs its own loop; we run the registry sampler on the converted denoiser with its sigmas. Every
scheduler class through the shim is tests/test_diffusers_compat_table.py.
"""
import math

import pytest
import torch

import samplers
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.problems import GaussianMixture

diffusers = pytest.importorskip("diffusers")

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=7)
BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
EPS = GM.as_model("eps", VP)
D = samplers.to_denoiser(EPS, "eps", VP)
# A step count that divides 1000: diffusers' DDIM steps from t to t − 1000 // steps, which is the next listed
# timestep only then (with "trailing" spacing and 12 steps it is not, a quirk of diffusers, not a sampler).
STEPS = 10


def model32(x, t):
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
    return EPS(x.double(), t).float()


def noise32(batch=3):
    return GM.noise(batch, seed=11, dtype=torch.float32)


def ours(name, sched, x, **kw):
    sig = torch.cat([sched.sigmas[:-1].double(), torch.zeros(1, dtype=torch.float64)])
    return samplers.sample(name, D, x, sig, disable=True, **kw)


def replay_generator(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return lambda s, s_next: torch.randn(shape, generator=g)


@pytest.mark.parametrize("spacing, eta", [("leading", 0.0), ("trailing", 1.0)])
def test_ddim(spacing, eta):
    sch = diffusers.DDIMScheduler(**BETAS, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
                                  set_alpha_to_one=True, clip_sample=False)
    sch.set_timesteps(STEPS)
    n = noise32()
    latents, g = n.clone(), torch.Generator().manual_seed(5)
    for t in sch.timesteps:
        latents = sch.step(model32(latents, t), t, latents, eta=eta, generator=g).prev_sample
    sig = torch.cat([VP.sigmas[sch.timesteps.long()], torch.zeros(1, dtype=torch.float64)])
    x = n * math.sqrt(1 + float(sig[0]) ** 2)  # DDIM starts at x_T = n: x_T/√ᾱ_T in VE
    kw = {"eta": eta, "noise_sampler": replay_generator(5, n.shape)} if eta else {}
    out = samplers.sample("ddim", D, x, sig, disable=True, **kw)
    torch.testing.assert_close(out, latents, rtol=1e-5, atol=1e-5)


def run_k_scheduler(sch, n, generator=None):
    latents = n * sch.init_noise_sigma
    for t in sch.timesteps:
        inp = sch.scale_model_input(latents, t)
        kw = {"generator": generator} if generator is not None else {}
        latents = sch.step(model32(inp, t), t, latents, **kw).prev_sample
    return latents


@pytest.mark.parametrize("spacing", ["trailing"])
def test_euler_discrete(spacing):
    sch = diffusers.EulerDiscreteScheduler(**BETAS, timestep_spacing=spacing, steps_offset=1)
    sch.set_timesteps(STEPS)
    n = noise32()
    ref = run_k_scheduler(sch, n)
    out = ours("euler", sch, n * sch.init_noise_sigma)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading"])
def test_euler_ancestral_discrete_same_noise(spacing):
    sch = diffusers.EulerAncestralDiscreteScheduler(**BETAS, timestep_spacing=spacing, steps_offset=1)
    sch.set_timesteps(STEPS)
    n = noise32()
    ref = run_k_scheduler(sch, n, generator=torch.Generator().manual_seed(3))
    out = ours("euler_ancestral", sch, n * sch.init_noise_sigma, noise_sampler=replay_generator(3, n.shape))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["trailing"])
def test_heun_discrete(spacing):
    sch = diffusers.HeunDiscreteScheduler(**BETAS, timestep_spacing=spacing, steps_offset=1)
    sch.set_timesteps(STEPS)
    n = noise32()
    ref = run_k_scheduler(sch, n)
    sig = torch.cat([sch.sigmas[:1], sch.sigmas[1::2]]).double()  # diffusers repeats each inner σ for stage 2
    assert float(sig[-1]) == 0.0 and len(sig) == STEPS + 1
    out = samplers.sample("heun", D, n * sch.init_noise_sigma, sig, disable=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [3.0])
def test_flow_match_euler_from_t1(shift):
    flow = RectifiedFlow(shift=shift, multiplier=1000.0)
    fmodel = GM.as_model("flow", flow)
    Df = samplers.to_denoiser(fmodel, "flow", flow)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sch.set_timesteps(STEPS)
    assert float(sch.sigmas[0]) == 1.0  # t = 1: pure noise, σ_VE = inf
    n = noise32()
    latents = n.clone()
    for t in sch.timesteps:
        u = fmodel(latents.double(), t.double().expand(n.shape[0])).float()
        latents = sch.step(u, t, latents).prev_sample
    t_flow = sch.sigmas.double()
    sig = torch.where(t_flow >= 1, torch.full_like(t_flow, math.inf), t_flow / (1 - t_flow))
    out = samplers.sample("euler", Df, samplers.initial_latent(n, sig), sig, disable=True)
    torch.testing.assert_close(out, latents, rtol=1e-5, atol=1e-5)

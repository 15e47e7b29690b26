"""torchsde's solvers through the adapter: strong order on a shared Brownian path, the right distribution at
high NFE, the equivalences that hold for this (additive-noise) SDE, and honest metadata."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import samplers
from benchmarks.common import sliced_wasserstein
from samplers.core.brownian import BrownianNoise
from samplers.core.graph import count_host_reads
from samplers.problems import GaussianMixture
from samplers.interop.torchsde_adapter import METHODS

NAMES = [spec[0] for spec in METHODS.values()]
GM = GaussianMixture.default(shape=(8,), components=2, seed=1)  # two clusters: a nonlinear denoiser
SIGMA_MAX, SIGMA_MIN = 2.0, 0.5


def test_every_torchsde_method_is_registered_once_as_an_sde():
    assert set(NAMES) <= set(samplers.available("sde"))
    assert {"euler", "milstein", "srk", "heun", "midpoint", "euler_heun", "reversible_heun", "log_ode"} == set(METHODS)
    for name in NAMES:
        spec = samplers.info(name)
        assert spec.host_sync and {"eta", "s_noise", "noise_sampler", "seed"} <= set(spec.options)


def tau_grid(n: int) -> torch.Tensor:
    """Sigmas uniform in τ = 1/σ², the adapter's time for η = 1 (so the fine grid refines the coarse one)."""
    tau = torch.linspace(SIGMA_MAX**-2, SIGMA_MIN**-2, n + 1, dtype=torch.float64)
    return tau**-0.5


@functools.cache
def shared_path():
    x = GM.noise(4, seed=3) * SIGMA_MAX
    noise = BrownianNoise(x, [1, 2, 3, 4], SIGMA_MIN, SIGMA_MAX)
    # the pathwise solution: order-1.5 SRK on a 5× finer grid than the finest coarse run, on the same path
    fine = samplers.sample("torchsde.srk", GM.denoiser, x, tau_grid(160), noise_sampler=noise, disable=True)
    return x, noise, fine


@pytest.mark.parametrize("name", NAMES)
def test_strong_order_on_a_shared_brownian_path(name):
    x, noise, fine = shared_path()
    steps = [4, 8, 16, 32]
    errors = [float((samplers.sample(name, GM.denoiser, x, tau_grid(n), noise_sampler=noise, disable=True)
                     - fine).pow(2).mean().sqrt()) for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    order = samplers.info(name).order
    assert abs(slope - order) <= 0.3, f"{name}: strong-order slope {slope:.2f}, stated {order} (errors {errors})"


@pytest.mark.parametrize("name", NAMES)
def test_distribution_at_high_nfe(name):
    gm = GaussianMixture.default(shape=(8,), components=4, seed=2)
    n = 512
    exact, other = gm.sample(n, seed=1), gm.sample(n, seed=2)
    floor = sliced_wasserstein(exact, other)
    sig = samplers.get_sigmas("karras", 50, sigma_min=0.002, sigma_max=80.0)
    out = samplers.sample(name, gm.denoiser, gm.noise(n, seed=3) * 80.0, sig, seed=5, disable=True)
    sw = sliced_wasserstein(out, exact)
    assert sw < 1.6 * floor, f"{name}: sliced Wasserstein {sw:.4f} vs floor {floor:.4f}"
    # and the check can fail: the starting noise itself is far from the data
    assert sliced_wasserstein(gm.noise(n, seed=3), exact) > 3 * floor


def _run(name, x, sig, **kw):
    return samplers.sample(name, GM.denoiser, x, sig, disable=True, **kw)


def test_euler_maruyama_is_the_ancestral_step():
    """In u = x/σ², τ = 1/σ² the Euler–Maruyama step is the DDPM / Euler-ancestral step, noise for noise."""
    x = GM.noise(3, seed=1).float() * 20
    sig = samplers.get_sigmas("karras", 7, sigma_min=0.02, sigma_max=20.0)
    ancestral = _run("euler_ancestral", x, sig, seed=[4, 5, 6])
    torch.testing.assert_close(_run("torchsde.euler", x, sig, seed=[4, 5, 6]), ancestral, rtol=1e-5, atol=1e-5)
    # η = 0 is the probability-flow ODE, and its Euler step is Euler in σ
    torch.testing.assert_close(_run("torchsde.euler", x, sig, seed=1, eta=0.0), _run("euler", x, sig),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,same_as", [("torchsde.milstein", "torchsde.euler"),
                                          ("torchsde.euler_heun", "torchsde.euler"),
                                          ("torchsde.log_ode_midpoint", "torchsde.midpoint")])
def test_methods_that_coincide_for_additive_noise(name, same_as):
    # the diffusion does not depend on the state: Milstein's and the log-ODE correction terms are 0
    x = GM.noise(3, seed=1).float() * 20
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.02, sigma_max=20.0)
    torch.testing.assert_close(_run(name, x, sig, seed=3), _run(same_as, x, sig, seed=3), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(_run(name, x, sig, seed=3), _run(name, x, sig, seed=4))


@pytest.mark.parametrize("name", NAMES)
def test_nfe_per_step_and_host_reads_are_as_declared(name):
    spec = samplers.info(name)
    calls = {"n": 0}

    def model(x, sigma):
        calls["n"] += 1
        return GM.denoiser(x, sigma)

    x = GM.noise(2, seed=1).float() * 20
    for steps in (3, 6):
        calls["n"] = 0
        with count_host_reads() as reads:
            samplers.sample(name, model, x, samplers.get_sigmas("karras", steps, sigma_min=0.02, sigma_max=20.0),
                            seed=1, disable=True)
        extra = 1 if name == "torchsde.reversible_heun" else 0  # its first drift is evaluated before step 1
        assert calls["n"] == spec.nfe_per_step * (steps - 1) + 1 + extra  # + the final denoise
        assert reads["n"] > 0  # torchsde reads its time tensors on the host: host_sync=True is honest


def test_brownian_path_is_batch_invariant_and_stable_in_the_step_count():
    gm = GaussianMixture.default(shape=(8,), components=4, seed=1)
    x = gm.noise(3, seed=2).float() * 20
    sig = samplers.get_sigmas("karras", 8, sigma_min=0.02, sigma_max=20.0)
    batch = samplers.sample("torchsde.srk", gm.denoiser, x, sig, seed=[1, 2, 3], noise_sampler="brownian",
                            disable=True)
    alone = samplers.sample("torchsde.srk", gm.denoiser, x[1:2], sig, seed=[2], noise_sampler="brownian",
                            disable=True)
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-6, atol=1e-6)

    def run(steps, kind):
        sig = samplers.get_sigmas("karras", steps, sigma_min=0.02, sigma_max=20.0)
        return samplers.sample("torchsde.euler", gm.denoiser, x, sig, seed=7, noise_sampler=kind, disable=True)

    def rms(a, b):
        return float((a - b).pow(2).mean().sqrt())

    assert rms(run(10, "brownian"), run(20, "brownian")) < 0.3 * rms(run(10, "seeded"), run(20, "seeded"))


def test_a_path_that_does_not_cover_the_schedule_is_refused():
    x = GM.noise(1, seed=1).float() * 20
    noise = BrownianNoise(x, [1], 0.5, 2.0)
    with pytest.raises(ValueError, match="does not hold the schedule"):
        samplers.sample("torchsde.euler", GM.denoiser, x, samplers.get_sigmas("karras", 4, sigma_min=0.02,
                                                                               sigma_max=20.0),
                        noise_sampler=noise, disable=True)


@pytest.mark.parametrize("name", ["torchsde.euler", "torchsde.srk"])
@pytest.mark.parametrize("draw", [
    lambda s, t: torch.zeros(24),  # flat: not the latent's shape
    lambda s, t: torch.zeros(2, 3, 4, dtype=torch.int64),  # not floating point
    lambda s, t: torch.zeros(2, 3, 4, device="meta"),  # not on the latent's device
], ids=["flat", "int64", "device"])
def test_a_callers_noise_sampler_is_checked_as_for_every_sampler(name, draw):
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    sigmas = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(samplers.InvalidInput, match="the noise sampler returned"):
        samplers.sample(name, lambda x, s: x / (1 + s * s), x, sigmas, noise_sampler=draw, disable=True)


def test_an_eta_whose_tau_overflows_the_state_dtype_is_refused_before_any_model_call():
    """u = x·σ^−(1+η²) at σ_min = 0.0292 and η = 5 is 7.9e39 · x: past float32 (it raised NonFiniteError after every
    model call, blaming fp16 overflow in the model); float64 holds it, and η = 4 runs in float32."""
    calls = []

    def model(x, sigma):
        calls.append(1)
        return x / (1 + sigma.reshape(-1, 1) ** 2)
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0)) * 14.6
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.0292, sigma_max=14.6)
    with pytest.raises(samplers.InvalidInput, match=r"eta=5 .* use eta <= 4\.\d+ on this schedule, float64 latents"):
        samplers.sample("torchsde.euler", model, x, sig, eta=5.0, seed=0, disable=True)
    assert calls == []
    assert torch.isfinite(samplers.sample("torchsde.euler", model, x.double(), sig, eta=5.0, seed=0, disable=True)).all()
    assert torch.isfinite(samplers.sample("torchsde.euler", model, x, sig, eta=4.0, seed=0, disable=True)).all()


@pytest.mark.parametrize("name", ["torchsde.euler", "torchsde.srk", "euler_ancestral", "dpmpp_2m_sde"])
def test_a_torchsde_brownian_interval_is_refused_as_a_noise_sampler_before_any_model_call(name):
    # it is queried as bm(ta, tb) with ta <= tb: torchsde's raw "Query times ta=20.000 and tb=8.503 must respect
    # ta <= tb" came from the torchsde samplers, and the others after their first model call
    import torchsde
    from samplers.problems import GaussianMixture

    gm = GaussianMixture.default(shape=(6,), components=3, seed=1)
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=20.0).double()
    x = gm.noise(2, seed=0) * 20.0
    bm = torchsde.BrownianInterval(t0=0.0, t1=30.0, size=(2, 6), dtype=torch.float64, entropy=1)
    calls = []

    def model(x, s):
        calls.append(s)
        return gm.denoiser(x, s)
    with pytest.raises(samplers.InvalidType, match="torchsde BrownianInterval.*noise_sampler\\(sigma, sigma_next\\) "
                                                   "with sigma decreasing.*noise_sampler='brownian'.*wrap"):
        samplers.sample(name, model, x, sig, disable=True, noise_sampler=bm)
    assert calls == []
    if name != "torchsde.srk":  # SRK refuses a sampler that repeats its draw (its Lévy area), the wrapped path too
        wrapped = samplers.sample(name, model, x, sig, disable=True,
                                  noise_sampler=lambda s, s_next: bm(s_next, s) / abs(s - s_next) ** 0.5)
        assert bool(torch.isfinite(wrapped).all())


@pytest.mark.parametrize("noise", [None, "brownian"])
def test_srk_refuses_an_eta_whose_levy_term_overflows_and_advises_one_that_runs(noise):
    """SRK reads each step's space-time Lévy term U = Δτ·(W/2 + H), of size Δτ^1.5: in float32 it overflowed from
    η ≈ 3.74 at σ_min = 0.02 (NaN after every model call, blamed on the model), while the check on u = x·τ passed up to
    4.53 and advised "eta <= 4.53" at η = 5, where every η from 3.8 on failed. The advice must run, finite."""
    import re

    gm = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.02, sigma_max=20.0)
    x = gm.noise(3, seed=0).float() * 20
    calls = []

    def model(x, s):
        calls.append(1)
        return gm.denoiser(x, s)
    kw = {"seed": 0, "disable": True, **({"noise_sampler": noise} if noise else {})}
    for eta in (3.8, 4.5, 5.0):
        with pytest.raises(samplers.InvalidInput, match=r"torchsde\.srk with eta=.* use eta <= 3\.\d+ on this "
                                                         r"schedule, float64 latents") as refused:
            samplers.sample("torchsde.srk", model, x, sig, eta=eta, **kw)
        assert calls == []
    advised = float(re.search(r"use eta <= ([\d.]+)", str(refused.value)).group(1))
    assert torch.isfinite(samplers.sample("torchsde.srk", model, x, sig, eta=advised, **kw)).all()
    # the other methods read no Lévy term: they keep u's larger bound
    assert torch.isfinite(samplers.sample("torchsde.heun", model, x, sig, eta=4.5, **kw)).all()


@pytest.mark.parametrize("name", ["torchsde.euler", "torchsde.srk"])
def test_a_brownian_step_shorter_than_the_paths_resolution_is_an_independent_draw(name):
    """A step shorter than the τ path's resolution (float32 [20, 20·(1 − 1e-7), 0]) ended in a raw RecursionError
    inside torchsde before any model call; as BrownianNoise does for such a piece, it is drawn independently from
    the item's own generator: finite, batch invariant and the same on a rerun."""
    gm = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)
    x = gm.noise(3, seed=0).float() * 20
    for sig in (torch.tensor([20.0, 20.0 * (1 - 1e-7), 0.0]),
                torch.tensor([20.0, 20.0 * (1 - 1e-9), 0.0], dtype=torch.float64)):
        xs = x.to(sig.dtype)
        run = functools.partial(samplers.sample, name, gm.denoiser, sigmas=sig, disable=True,
                                noise_sampler="brownian")
        full = run(x=xs, seed=[5, 6, 7])
        assert torch.isfinite(full).all()
        assert torch.equal(full, run(x=xs, seed=[5, 6, 7]))
        torch.testing.assert_close(full[1:2], run(x=xs[1:2], seed=[6]))  # the denoiser's batched rounding


@pytest.mark.parametrize("name", NAMES)
def test_at_eta_0_nothing_is_drawn_and_no_generator_is_touched(name):
    """η = 0 is the PF-ODE: as for every sampler (run.draws_noise), the run draws nothing — a caller's noise sampler
    is never called, no Brownian tree is built, and without a seed torch's global generator is left alone (the adapter
    queried the noise at every step and multiplied it by 0, drawing its base seed from the global generator)."""
    x = GM.noise(2, seed=5) * SIGMA_MAX
    sigmas = tau_grid(4)
    calls = []

    def counting(sigma, sigma_next):
        calls.append((sigma, sigma_next))
        return torch.randn_like(x)

    with_sampler = samplers.sample(name, GM.denoiser, x, sigmas, eta=0.0, noise_sampler=counting, disable=True)
    assert calls == []
    state = torch.get_rng_state()
    for kind in (None, "brownian", "brownian_tree"):
        out = samplers.sample(name, GM.denoiser, x, sigmas, eta=0.0, noise_sampler=kind, disable=True)
        torch.testing.assert_close(out, with_sampler, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)

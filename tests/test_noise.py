"""Noise samplers: the seeded default is i.i.d. N(0, 1) per item, Brownian noise is the increments of one path
per item (stable when the step count changes), pre-drawn noise hands out the caller's draws."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy import stats

import samplers
from samplers.core.brownian import BrownianNoise, for_schedule
from samplers.core.noise import NoiseExhaustedError, PredrawnNoise, SeededNoise, resolve
from samplers.core.seeds import seeded_randn
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(8,), components=4, seed=1)


def karras(steps, sigma_min=0.02, sigma_max=20.0):
    return samplers.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max)


def rms(a, b):
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------------------------
# the seeded default


def _seeded_draws(calls=12, batch=6, dim=400):
    noise = SeededNoise(torch.zeros(batch, dim), list(range(100, 100 + batch)))
    return torch.stack([noise(1.0, 0.5) for _ in range(calls)])  # [calls, batch, dim]


def test_seeded_noise_is_standard_normal():
    draws = _seeded_draws().double().flatten().numpy()
    assert stats.kstest(draws, "norm").pvalue > 1e-3
    # and not merely normal-shaped: unit variance, zero mean (5 standard errors)
    n = draws.size
    assert abs(draws.mean()) < 5 / math.sqrt(n)
    assert abs(draws.var() - 1) < 5 * math.sqrt(2 / n)


def test_seeded_noise_draws_are_independent():
    draws = _seeded_draws().double()
    calls, batch, dim = draws.shape
    bound = 5 / math.sqrt(dim)  # |correlation| of two independent N(0, 1) vectors of length dim: ~1/√dim

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    for k in range(batch):
        for i in range(calls - 1):
            assert abs(corr(draws[i, k], draws[i + 1, k])) < bound  # successive draws of one item
        for j in range(k + 1, batch):
            assert abs(corr(draws[0, k], draws[0, j])) < bound  # two items at the same call
    # the in-loop stream is not the initial-latent stream of the same seeds
    start = seeded_randn((batch, dim), list(range(100, 100 + batch))).double()
    for k in range(batch):
        assert abs(corr(start[k], draws[0, k])) < bound


def test_seeded_noise_is_batch_invariant():
    three = SeededNoise(torch.zeros(3, 5), [7, 8, 9])
    one = SeededNoise(torch.zeros(1, 5), [8])
    for _ in range(3):
        torch.testing.assert_close(three(1.0, 0.5)[1:2], one(1.0, 0.5), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------
# Brownian noise


def test_brownian_increments_have_variance_delta_sigma():
    sig = karras(4).tolist()[:-1]  # 20 → 0.02
    batch, dim = 24, 64
    noise = BrownianNoise(torch.zeros(batch, dim), list(range(batch)), sig[-1], sig[0])
    n = batch * dim
    for s, s_next in zip(sig[:-1], sig[1:]):
        inc = noise.increment(s, s_next).double()
        assert abs(float(inc.var()) / (s - s_next) - 1) < 5 * math.sqrt(2 / n)
        unit = noise(s, s_next).double()  # what a sampler gets: unit variance per call
        torch.testing.assert_close(unit, inc / math.sqrt(s - s_next), rtol=1e-5, atol=1e-5)
        assert abs(float(unit.mean())) < 5 / math.sqrt(n)
    # increments of ONE path: they add up over adjacent intervals
    whole = noise.increment(sig[0], sig[2])
    torch.testing.assert_close(whole, noise.increment(sig[0], sig[1]) + noise.increment(sig[1], sig[2]),
                               rtol=1e-4, atol=1e-4)
    # and disjoint intervals are independent
    a, b = noise(sig[0], sig[1]).double().flatten(), noise(sig[1], sig[2]).double().flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(n)


def test_brownian_noise_is_batch_invariant_and_seeded():
    x = torch.zeros(3, 2, 4)
    sig = karras(3).tolist()
    three = BrownianNoise(x, [5, 6, 7], 0.02, 20.0)
    alone = BrownianNoise(x[1:2], [6], 0.02, 20.0)
    other = BrownianNoise(x[1:2], [60], 0.02, 20.0)
    for s, s_next in zip(sig[:-2], sig[1:-1]):
        torch.testing.assert_close(three(s, s_next)[1:2], alone(s, s_next), rtol=0, atol=0)
        assert not torch.allclose(alone(s, s_next), other(s, s_next))
    # through the public call: item 1 of a batch equals the same item alone
    start = GM.noise(3, seed=2).float() * 20
    batch = samplers.sample("euler_ancestral", GM.denoiser, start, karras(6), seed=[1, 2, 3],
                            noise_sampler="brownian", disable=True)
    single = samplers.sample("euler_ancestral", GM.denoiser, start[1:2], karras(6), seed=[2],
                             noise_sampler="brownian", disable=True)
    torch.testing.assert_close(batch[1:2], single, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,options", [("euler_ancestral", {}), ("ddim", {"eta": 1.0})])
def test_brownian_noise_keeps_the_sample_when_the_step_count_changes(name, options):
    start = GM.noise(6, seed=4).float() * 20

    def run(steps, kind):
        return samplers.sample(name, GM.denoiser, start, karras(steps), seed=11, noise_sampler=kind, disable=True,
                               **options)

    seeded = rms(run(20, "seeded"), run(40, "seeded"))
    brownian = rms(run(20, "brownian"), run(40, "brownian"))
    # fresh noise per step: 20 and 40 steps give unrelated samples of the mixture (~ its spread)
    assert seeded > 0.5
    # one path: the two runs discretise the same SDE solution
    assert brownian < 0.3 * seeded
    # the figures docs/guide.md quotes (0.59 and 0.061 for both samplers)
    assert 0.55 < seeded < 0.65 and 0.055 < brownian < 0.067, (seeded, brownian)


def test_brownian_noise_raises_no_warnings_on_karras_and_from_infinity():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for steps in (5, 17, 40):
            samplers.sample("euler_ancestral", GM.denoiser, GM.noise(2, seed=1).float() * 14.6,
                            karras(steps, 0.0292, 14.6), seed=1, noise_sampler="brownian", disable=True)
        # a flow model from t = 1: the first step is from σ = inf
        flow = samplers.RectifiedFlow(shift=3.0)
        model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
        sig = samplers.get_sigmas("flow", 9, native=flow)
        assert math.isinf(float(sig[0]))
        out = samplers.sample("euler_ancestral", model, GM.noise(2, seed=1).float(), sig, seed=1,
                              noise_sampler="brownian", disable=True)
        assert bool(torch.isfinite(out).all())
        # EDM churn raises σ above the schedule's first value: outside the path, still no warning
        out = samplers.sample("euler", GM.denoiser, GM.noise(2, seed=1).float() * 20, karras(8), seed=1,
                              noise_sampler="brownian", s_churn=10.0, disable=True)
        assert bool(torch.isfinite(out).all())
        noise = for_schedule(torch.zeros(2, 8), [1, 2], sig)
        first = noise(math.inf, float(sig[1]))  # the limit of (W(T) − W(σ₁))/√(T − σ₁): a unit normal
        assert first.shape == (2, 8) and bool(torch.isfinite(first).all())


@pytest.mark.parametrize("name", samplers.available("ancestral") + samplers.available("sde"))
def test_every_stochastic_sampler_takes_brownian_noise_from_infinity_without_warnings(name):
    flow = samplers.RectifiedFlow(shift=3.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    sig = samplers.get_sigmas("flow", 6, native=flow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = samplers.sample(name, model, GM.noise(2, seed=1).float(), sig, seed=[3, 4], noise_sampler="brownian",
                              disable=True)
    assert bool(torch.isfinite(out).all())


def test_brownian_noise_device_option():
    x = torch.zeros(2, 6, dtype=torch.float64)
    on_cpu = BrownianNoise(x, [1, 2], 0.1, 5.0)
    on_x = BrownianNoise(x, [1, 2], 0.1, 5.0, device=None)
    assert on_x.path_device == x.device and on_cpu.path_device == torch.device("cpu")
    draw = on_cpu(5.0, 1.0)
    assert draw.dtype == torch.float64 and draw.device == x.device
    torch.testing.assert_close(draw, on_x(5.0, 1.0))


def test_brownian_noise_checks_its_range():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        BrownianNoise(torch.zeros(1, 2), [1], 1.0, 0.5)
    with pytest.raises(ValueError, match="unknown noise_sampler"):
        samplers.sample("euler_ancestral", GM.denoiser, torch.zeros(1, 8), karras(3), noise_sampler="browian")


# ------------------------------------------------------------------------------------------------------
# pre-drawn noise


def test_predrawn_noise_reproduces_the_run_and_raises_when_exhausted():
    start = GM.noise(3, seed=6).float() * 20
    sig = karras(5)
    seeded = SeededNoise(start, [4, 5, 6])
    draws = torch.stack([seeded(1.0, 0.5) for _ in range(4)])  # euler_ancestral draws once per step but the last
    expected = samplers.sample("euler_ancestral", GM.denoiser, start, sig, seed=[4, 5, 6], disable=True)
    got = samplers.sample("euler_ancestral", GM.denoiser, start, sig, noise_sampler=PredrawnNoise(draws),
                          disable=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    listed = samplers.sample("euler_ancestral", GM.denoiser, start, sig, noise_sampler=PredrawnNoise(list(draws)),
                             disable=True)
    torch.testing.assert_close(listed, expected, rtol=0, atol=0)
    as_float64 = samplers.sample("euler_ancestral", GM.denoiser, start, sig, disable=True,
                                 noise_sampler=PredrawnNoise(draws.double()))
    assert as_float64.dtype == torch.float32  # handed out in the run's dtype
    torch.testing.assert_close(as_float64, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(NoiseExhaustedError, match="only 3 were pre-drawn"):
        samplers.sample("euler_ancestral", GM.denoiser, start, sig, noise_sampler=PredrawnNoise(draws[:3]),
                        disable=True)
    # one object in two runs: each starts from draws[0], as the library's other noise objects are rewound (the
    # second run handed out draws 3, 4, ... or ran out: 3.79 apart on a 20-draw object)
    shared = PredrawnNoise(torch.cat([draws, -draws]))
    for _ in range(2):
        again = samplers.sample("euler_ancestral", GM.denoiser, start, sig, noise_sampler=shared, disable=True)
        torch.testing.assert_close(again, expected, rtol=0, atol=0)
    from samplers.interop import kdiffusion  # and in the k-diffusion drop-in, which rewinds its noise itself

    first = kdiffusion.sample_euler_ancestral(GM.denoiser, start, sig, disable=True, noise_sampler=shared)
    again = kdiffusion.sample_euler_ancestral(GM.denoiser, start, sig, disable=True, noise_sampler=shared)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    with pytest.raises(ValueError, match="per call but the latent is"):
        samplers.sample("euler_ancestral", GM.denoiser, start, sig, noise_sampler=PredrawnNoise(draws[:, :2]),
                        disable=True)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "torchsde.euler"])
@pytest.mark.parametrize("latent, draw", [
    (torch.float32, {"dtype": torch.float64}),  # would promote the state: every later model call in float64
    (torch.float16, {"dtype": torch.float64}),
    (torch.float32, {"device": "meta"}),        # a raw torch error mid-run before
], ids=["f64-for-f32", "f64-for-f16", "device"])
def test_a_callers_draw_in_another_dtype_or_device_is_refused_at_the_first_draw(name, latent, draw):
    x = GM.noise(2, seed=3).to(latent) * 20
    seen = []

    def model(x, sigma):
        seen.append(x.dtype)
        return GM.denoiser(x, sigma)
    noise = lambda s, s_next: torch.randn(x.shape, **draw)  # noqa: E731
    with pytest.raises(samplers.InvalidInput, match=r"the noise sampler returned .*torch\.randn_like\(x\)"):
        samplers.sample(name, model, x, karras(4), noise_sampler=noise, disable=True)
    assert torch.float64 not in seen or latent == torch.float64  # no model call after a promoting draw


@pytest.mark.parametrize("latent, drawn", [(torch.float16, torch.float16), (torch.float16, torch.float32),
                                           (torch.bfloat16, torch.bfloat16), (torch.float64, torch.float64),
                                           (torch.float32, torch.float16), (torch.float64, torch.float32)])
def test_draws_no_wider_than_the_state_are_taken(latent, drawn):
    """``torch.randn_like(x)`` of an fp16 latent is fp16, its state float32; k-diffusion's and diffusers' own draws
    (which the drop-in and the shim reproduce) may be narrower than the state: all run, as before."""
    x = GM.noise(2, seed=3).to(latent) * 20
    g = torch.Generator().manual_seed(0)
    out = samplers.sample("euler_ancestral", GM.denoiser, x, karras(4), disable=True,
                          noise_sampler=lambda s, s_next: torch.randn(x.shape, generator=g).to(drawn))
    assert out.dtype == latent and bool(torch.isfinite(out).all())


def test_resolve_rules():
    x = torch.zeros(2, 3)
    assert isinstance(resolve(None, 1, x), SeededNoise)
    assert isinstance(resolve("seeded", 1, x), SeededNoise)
    assert isinstance(resolve("brownian", 1, x, sigmas=[10.0, 1.0, 0.0]), BrownianNoise)
    with pytest.raises(ValueError, match="needs the schedule"):
        resolve("brownian", 1, x)
    with pytest.raises(ValueError, match="not both"):
        resolve(PredrawnNoise(torch.zeros(1, 2, 3)), 1, x)
    with pytest.raises(TypeError, match="must be callable"):
        resolve(3.0, None, x)


@pytest.mark.parametrize("name, sigmas, options", [
    ("euler_ancestral", [math.inf, 10.0, 3.0, 0.5, 0.0], {}),  # the step from σ = inf draws outside the path
    ("ddpm", [math.inf, 10.0, 3.0, 0.5, 0.0], {}),
    ("euler", [14.6, 5.0, 1.0, 0.1, 0.0], {"s_churn": 1.0}),   # churn above σ_max draws outside the path
])
def test_a_shared_brownian_noise_object_gives_every_run_the_same_noise(name, sigmas, options):
    """Its draws outside [σ_min, σ_max] came from generators that ran on between runs: a second identical run was
    0.47-1.4 away. The run rewinds them."""
    x = GM.noise(2, seed=4).float() * (1.0 if math.isinf(sigmas[0]) else sigmas[0])
    sig = torch.tensor(sigmas, dtype=torch.float64)
    noise = BrownianNoise(x, [3, 4], sigma_min=0.03, sigma_max=14.6)
    runs = [samplers.sample(name, GM.denoiser, x, sig, noise_sampler=noise, disable=True, **options) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    fresh = samplers.sample(name, GM.denoiser, x, sig, noise_sampler=BrownianNoise(x, [3, 4], sigma_min=0.03,
                                                                                   sigma_max=14.6),
                            disable=True, **options)
    torch.testing.assert_close(runs[0], fresh, rtol=0, atol=0)


@pytest.mark.parametrize("lo, hi", [(1.0, 1.0000009), (1.0, 1.0 + 1e-9), (14.6 - 1e-7, 14.6), (0.5, 0.7)])
def test_a_step_shorter_than_the_paths_resolution_still_draws_unit_noise(lo, hi):
    """A piece the tree cannot split (below its resolution, 1e-6) is drawn independently, with its own variance: the
    unit noise of a tiny step stays N(0, 1) (it was zero, or torchsde recursed)."""
    x = torch.zeros(1024, 1)
    noise = BrownianNoise(x, list(range(1024)), sigma_min=0.03, sigma_max=14.6)
    unit = noise(hi, lo)
    assert 0.9 < float(unit.std()) < 1.1


def test_a_piece_of_an_interval_shorter_than_the_paths_resolution_is_not_queried():
    """Churn from σ = 14.599999999999993 on a path that ends at 14.6 asked torchsde for a 7e-15 piece: it recursed
    until Python's limit."""
    x = GM.noise(2, seed=4).float() * 14.6
    sig = samplers.get_sigmas("karras", 5, sigma_min=0.03, sigma_max=14.6)
    noise = BrownianNoise(x, [3, 4], sigma_min=0.03, sigma_max=14.6)
    out = samplers.sample("euler", GM.denoiser, x, sig, noise_sampler=noise, s_churn=1.0, disable=True)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, options", [
    ("euler_ancestral", {"noise_sampler": "brownian_tree"}), ("DPM++ 2M SDE", {}), ("comfyui:dpmpp_3m_sde", {}),
    # noise switched on in a deterministic kind (churn, η), or kept drawing at s_noise = 0
    ("euler", {"noise_sampler": "brownian_tree", "s_churn": 1.0}), ("heun", {"noise_sampler": "brownian_tree", "s_churn": 1.0}),
    ("ddim", {"noise_sampler": "brownian_tree", "eta": 1.0}), ("dpm_fast", {"noise_sampler": "brownian_tree", "eta": 1.0}),
    ("euler_ancestral", {"noise_sampler": "brownian_tree", "s_noise": 0.0}),
    ("restart", {"noise_sampler": "brownian_tree", "s_noise": 0.0})])
def test_a_brownian_tree_from_infinity_is_refused_before_any_model_call(name, options):
    calls = []

    def model(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)
    sig = torch.tensor([math.inf, 10.0, 3.0, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(samplers.InvalidInput, match="Brownian tree lives on the schedule's finite range"):
        samplers.sample(name, model, GM.noise(2, seed=4).float(), sig, seed=0, disable=True, **options)
    assert calls == []
    # a run that draws nothing (η = 0) still runs with the kind named
    samplers.sample("euler_ancestral", model, GM.noise(2, seed=4).float(), sig, seed=0, eta=0.0,
                    noise_sampler="brownian_tree", disable=True)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_predrawn_noise_that_is_no_real_float_is_refused_when_made(dtype):
    """Integer "noise" (all ones) was cast to the latents' dtype and ran to the end; a callable returning it is refused
    at its first draw. PredrawnNoise refuses it when made, naming the dtype and the fix."""
    with pytest.raises(samplers.InvalidType, match=r"real floating-point draws.*torch\.randn"):
        PredrawnNoise(torch.ones(5, 2, 8, dtype=dtype))


def test_a_nan_from_the_callers_noise_sampler_is_named_as_a_suspect():
    """The caller's draws are not read for NaN (no device read per draw): a run they make NaN names them among the
    causes; a run on the library's own seeded noise does not."""
    sig = karras(4)
    x = samplers.initial_latent(GM.noise(2, seed=0), sig)
    with pytest.raises(samplers.NonFiniteError, match="noise_sampler given"):
        samplers.sample("euler_ancestral", GM.denoiser, x, sig, disable=True,
                        noise_sampler=lambda s, t: torch.full_like(x, math.nan))
    with pytest.raises(samplers.NonFiniteError) as caught:
        samplers.sample("euler_ancestral", lambda x, s: x * math.inf, x, sig, disable=True, seed=1)
    assert "noise_sampler given" not in str(caught.value)


_WIDE = GaussianMixture(torch.zeros(1, 4000, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
                        torch.tensor([1.0], dtype=torch.float64))  # N(0, 0.25) in 4000 dimensions


@pytest.mark.parametrize("kind", ["brownian", "brownian_tree", "brownian_tree_device"])
def test_churn_with_a_brownian_path_draws_fresh_noise_at_every_step(kind):
    """EDM churn draws over [σ, σ(1 + γ)]; consecutive steps' intervals overlap at many steps, and a path answered
    them with correlated draws (0.81 between steps 20 and 21): euler at s_churn = 100, 100 steps gave sample variance
    0.546 ("brownian") / 0.542 ("brownian_tree") against 0.199 for seeded noise. Churn is now drawn from the path's
    independent generator, as k-diffusion draws it (torch.randn_like): the same distribution as seeded noise."""
    den = lambda x, s: _WIDE.denoiser(x, torch.as_tensor(s, dtype=x.dtype))  # noqa: E731
    sig = samplers.get_sigmas("karras", 100, sigma_min=0.002, sigma_max=80.0)
    x = _WIDE.noise(1, seed=2) * 80
    def run(kind, seed=1):
        return samplers.sample("euler", den, x, sig, s_churn=100.0, noise_sampler=kind, seed=seed, disable=True)
    seeded, out = float(run("seeded").var()), run(kind)
    assert abs(float(out.var()) - seeded) < 0.02, (float(out.var()), seeded)
    torch.testing.assert_close(run(kind), out, rtol=0, atol=0)  # seeded: the same seed, the same image
    assert float((run(kind, seed=2) - out).abs().max()) > 0.1


@pytest.mark.parametrize("make", [
    lambda x, seeds: BrownianNoise(x, seeds, sigma_min=0.02, sigma_max=20.0),
    lambda x, seeds: samplers.core.brownian.BrownianTreeNoiseSampler(x, 0.02, 20.0, seed=seeds)])
def test_churn_from_a_brownian_object_is_batch_invariant_and_rewound(make):
    """The churn draws of a path object come from per-item generators seeded by its seeds: item k's result does not
    depend on the batch, and a second run on the same object repeats the first."""
    x = GM.noise(2, seed=4).float() * 20
    noise = make(x, [3, 4])
    run = lambda n, xs: samplers.sample("heun", GM.denoiser, xs, karras(12), noise_sampler=n, s_churn=5.0,  # noqa: E731
                                        disable=True)
    both = run(noise, x)
    torch.testing.assert_close(run(noise, x), both, rtol=0, atol=0)
    torch.testing.assert_close(run(make(x[1:], [4]), x[1:]), both[1:], rtol=0, atol=0)


def test_churn_from_another_tools_brownian_tree_is_refused_before_any_model_call():
    """A path object that is not this library's has no independent generator for churn: refused, naming the fix."""
    class BrownianTreeNoiseSampler:  # e.g. k-diffusion's own class
        def __call__(self, sigma, sigma_next):
            return torch.zeros(2, 8)
    calls = []
    model = lambda x, s: calls.append(1) or GM.denoiser(x, s)  # noqa: E731
    with pytest.raises(samplers.InvalidInput, match=r"s_churn = 1 .*noise_sampler='brownian'"):
        samplers.sample("euler", model, GM.noise(2, seed=4).float() * 20, karras(8),
                        noise_sampler=BrownianTreeNoiseSampler(), s_churn=1.0, disable=True)
    assert calls == []


@pytest.mark.parametrize("noise", ["brownian_tree", "brownian_tree_device", "object"])
@pytest.mark.parametrize("restart, steps, sigma_min, top", [
    (((4, 1, 0.5, 30.0),), 10, 0.03, r"30\]"),    # up to σ = 30, above the schedule's 14.6
    ("a1111", 20, 0.5, r"\[0, ")])                # A1111's restart from the final 0 (every σ > 0 above 0.2)
def test_a_restart_outside_the_brownian_trees_range_is_refused_before_any_model_call(noise, restart, steps, sigma_min,
                                                                                      top):
    """A Brownian tree lives on the schedule's [smallest positive σ, largest σ] and clamped a draw outside it, silently:
    a restart up to σ = 30 on a tree up to 14.6 drew a "unit" noise of std 0.69 (sample variance 0.195 against 0.400
    seeded); a restart from the final 0 lost the part below the smallest σ. Refused before any model call, naming the
    range and the fix; "brownian" (independent draws outside its path) and "seeded" run it."""
    sig = samplers.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=14.6)
    x = GM.noise(2, seed=2).float() * 14.6
    calls = []
    model = lambda xs, s: calls.append(1) or GM.denoiser(xs, s)  # noqa: E731
    kind = samplers.core.brownian.tree_for_schedule(x, [5, 6], sig, cpu=True) if noise == "object" else noise
    seed = None if noise == "object" else 5
    with pytest.raises(samplers.InvalidInput, match=top + r".*, outside \[0\.\d+, 14\.6\].*noise_sampler='brownian'"):
        samplers.sample("restart", model, x, sig, restart=restart, noise_sampler=kind, seed=seed, disable=True)
    assert calls == []
    for ok in ("brownian", "seeded"):
        samplers.sample("restart", GM.denoiser, x, sig, restart=restart, noise_sampler=ok, seed=5, disable=True)
    # s_noise = 0 (no noise added) is not refused: the draw outside the tree is torchsde's, which warns and clamps
    # (multiplied by 0), and an entry within the range runs
    with pytest.warns(UserWarning, match="Should have"):
        samplers.sample("restart", GM.denoiser, x, sig, restart=restart, noise_sampler=kind, seed=seed, s_noise=0.0,
                        disable=True)
    samplers.sample("restart", GM.denoiser, x, sig, restart=((2, 1, 0.5, 14.0),), noise_sampler=kind, seed=seed,
                    disable=True)


@pytest.mark.parametrize("kind", ["brownian_tree", "brownian_tree_device"])
def test_churn_above_the_trees_range_on_the_first_step_adds_noise(kind):
    """Churn on the first step raises σ above the schedule's σ_max: the tree kinds answered [14.6, 17.5] with zeros
    (the result was the same as at s_noise = 0). Churn is drawn independently of the tree now."""
    sig = samplers.get_sigmas("karras", 10, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(1, seed=2).float() * 14.6
    run = lambda **o: samplers.sample("euler", GM.denoiser, x, sig, s_churn=2.0, s_tmin=14.0,  # noqa: E731
                                      noise_sampler=kind, seed=5, disable=True, **o)
    assert float((run() - run(s_noise=0.0)).abs().max()) > 0.05


# ------------------------------------------------------------------------------------------------------
# Brownian objects against the run they are given to, before any model call


def _counting_model():
    calls = []
    return calls, lambda xs, s: calls.append(1) or GM.denoiser(xs, s)


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "euler_ancestral", "er_sde", "dpmpp_sde", "torchsde.euler"])
def test_a_brownian_tree_narrower_than_the_schedule_is_refused_before_any_model_call(name):
    """A BrownianTreeNoiseSampler on [0.5, 5] for a schedule from 14.6 to 0.03 answered every step outside its range
    with zeros (clamped in brownian._query before torchsde could warn): the run was accepted silently, 0.38 from the
    full-range tree's sample. Refused before any model call, naming the step, the range and the fix."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    sig = karras(6, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(2, seed=2).float() * 14.6
    calls, model = _counting_model()
    narrow = BrownianTreeNoiseSampler(x, 0.5, 5.0, seed=[1, 2])
    with pytest.raises(samplers.InvalidInput, match=r"a step of the schedule draws noise over \[.*14\.6\], outside "
                                                    r"\[0\.5, 5\].*BrownianTreeNoiseSampler\(x, sigmas\[sigmas > 0\]"):
        samplers.sample(name, model, x, sig, noise_sampler=narrow, disable=True)
    assert calls == []
    if "eta" in samplers.info(name).options:  # a run that draws nothing (η = 0) reads no tree
        samplers.sample(name, model, x, sig, noise_sampler=narrow, eta=0.0, disable=True)


def test_a_brownian_tree_object_from_infinity_is_refused_before_any_model_call():
    """The shared first step from σ = inf draws noise_sampler(inf, σ_1): a tree object clamped it to a zero-length
    interval and drew 0, silently (no fresh noise on that step), where the named tree kinds are refused from σ = inf."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    sig = torch.tensor([math.inf, 10.0, 3.0, 0.5, 0.0], dtype=torch.float64)
    x = GM.noise(2, seed=4).float()
    calls, model = _counting_model()
    with pytest.raises(samplers.InvalidInput, match=r"draws noise over \[10, inf\], outside \[0\.5, 10\]") as e:
        samplers.sample("euler_ancestral", model, x, sig, noise_sampler=BrownianTreeNoiseSampler(x, 0.5, 10.0, [1, 2]),
                        disable=True)
    assert calls == []
    # the fix offered works: no tree holds that step (one on the schedule's range, sigma_max=inf, is refused itself)
    assert str(e.value).endswith("use noise_sampler='brownian' (independent draws outside its path) or 'seeded': no "
                                 "tree holds a draw from σ = inf, as a tree lives on a finite range")
    with pytest.raises(samplers.InvalidOption, match="sigma_max must be a finite number"):
        BrownianTreeNoiseSampler(x, sig[sig > 0].min(), sig.max(), [1, 2])
    for kind in ("brownian", "seeded"):
        samplers.sample("euler_ancestral", model, x, sig, noise_sampler=kind, seed=[1, 2], disable=True)


@pytest.mark.parametrize("cpu", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_max, to_zero", [(14.6, True), (14.6, False), (1000.123456789, True)])
def test_a_tree_on_the_schedules_own_range_runs_without_a_warning(cpu, dtype, sigma_max, to_zero):
    """The tree k-diffusion, A1111 and ComfyUI build (sigmas[sigmas > 0].min(), sigmas.max()) holds every draw of a
    run: not refused, and the float32 times that lie past its rounded ends by rounding only are clamped without
    torchsde's warning (at σ_max = 1000.12 by more than the tree's tol: two float32 spacings are allowed too). A time
    farther out reaches torchsde, which warns and clamps, as k-diffusion's own tree does."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    sig = karras(8, sigma_min=0.0291675, sigma_max=sigma_max).to(dtype)
    sig = sig if to_zero else sig[:-1]
    x = GM.noise(2, seed=2).float() * sigma_max
    tree = BrownianTreeNoiseSampler(x, sig[sig > 0].min(), sig.max(), seed=[1, 2], cpu=cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("dpmpp_2m_sde", "euler_ancestral", "dpmpp_sde", "torchsde.euler"):
            samplers.sample(name, GM.denoiser, x, sig, noise_sampler=tree, disable=True)
        for s, s_next in zip(sig[:-2], sig[1:-1]):  # as k-diffusion's samplers call it: the schedule's 0-d tensors
            tree(s, s_next)
    with pytest.warns(UserWarning, match="Should have tb<=t1"):
        tree(sig.max() * 2, sig.max() / 2)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "torchsde.euler"])
@pytest.mark.parametrize("make", [
    lambda x: BrownianNoise(x[:2], [1, 2], 0.03, 14.6),  # another batch
    lambda x: BrownianNoise(torch.zeros(3, 9), [1, 2, 3], 0.03, 14.6),  # another latent size
    lambda x: BrownianNoise(x.double(), [1, 2, 3], 0.03, 14.6),  # wider than the state
    lambda x: samplers.core.brownian.BrownianTreeNoiseSampler(x[:2], 0.03, 14.6, seed=[1, 2]),
    lambda x: samplers.core.brownian.BrownianTreeNoiseSampler(x[:2], 0.03, 14.6, seed=1),  # one tree over x[:2]
    lambda x: samplers.core.brownian.BrownianTreeNoiseSampler(x.double(), 0.03, 14.6, seed=[1, 2, 3])],
    ids=["noise-batch", "noise-shape", "noise-float64", "tree-batch", "tree-int-seed", "tree-float64"])
def test_a_brownian_object_built_for_another_latent_is_refused_before_any_model_call(name, make):
    """This library's noise objects know the draws they make: one built for another batch, latent size or a wider
    dtype was refused only at its first draw, after a model call (torchsde.* reshaped it: a raw RuntimeError for
    another batch, and another size or dtype ran, only its seeds read). Refused before any model call, by every
    sampler alike."""
    sig = karras(5, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(3, seed=2).float() * 14.6
    calls, model = _counting_model()
    with pytest.raises(samplers.InvalidInput, match=r"draws shape .* but the run's latent is \(3, 8\), torch.float32 "
                                                    r"on cpu.*no wider than the run's state.*; build Brownian"):
        samplers.sample(name, model, x, sig, noise_sampler=make(x), disable=True)
    assert calls == []


def test_torchsde_refuses_a_brownian_noise_for_another_latent_when_called_directly():
    """The adapter reads a BrownianNoise's seeds and range only (it builds its own paths in τ): called directly, not
    through samplers.sample, it still refuses an object built for another latent, naming it, where another batch was
    torch's reshape error and another dtype ran."""
    from samplers.interop.torchsde_adapter import sdeint_steps

    sig = [float(s) for s in karras(5, sigma_min=0.03, sigma_max=14.6)]
    x = GM.noise(3, seed=2).float() * 14.6
    for noise in (BrownianNoise(x[:2], [1, 2], 0.03, 14.6), BrownianNoise(x.double(), [1, 2, 3], 0.03, 14.6)):
        with pytest.raises(samplers.InvalidInput, match="the BrownianNoise draws shape"):
            sdeint_steps("euler", GM.denoiser, x, sig, noise, None, True, 1.0, 1.0)
    assert sdeint_steps("euler", GM.denoiser, x, sig, BrownianNoise(x, [1, 2, 3], 0.03, 14.6), None, True, 1.0,
                        1.0).shape == x.shape


def test_brownian_objects_for_the_run_are_taken():
    """What a run takes from a draw, it takes from the object: float16 latents (a float32 state) with an object built
    on the float16 latents or on float32 ones, and a tree with an int seed over the whole batch."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    sig = karras(4, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(3, seed=2).float() * 14.6
    for latents in (x, x.half()):
        for like in (latents, latents.float()):
            for noise in (BrownianNoise(like, [1, 2, 3], 0.03, 14.6), BrownianTreeNoiseSampler(like, 0.03, 14.6, 5)):
                out = samplers.sample("euler_ancestral", GM.denoiser, latents, sig, noise_sampler=noise, disable=True)
                assert out.dtype == latents.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("tol, error", [(0, samplers.InvalidInput), (-1e-6, samplers.InvalidInput),
                                        (math.nan, samplers.InvalidInput), (math.inf, samplers.InvalidInput),
                                        (True, samplers.InvalidType), ("1e-6", samplers.InvalidType)])
def test_brownian_noise_refuses_a_tol_that_is_no_positive_real(tol, error):
    """0 or a negative tol failed with "math domain error", NaN with "cannot convert float NaN to integer", and True ran
    as 1.0: refused naming tol, the rule and the default."""
    with pytest.raises(error, match=r"tol must be .*the path's resolution in σ; the default is tol=1e-6"):
        BrownianNoise(torch.zeros(1, 4), [1], 0.03, 14.6, tol=tol)

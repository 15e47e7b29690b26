"""``samplers.interop.kdiffusion`` against the real k-diffusion package (0.1.1.post1), name by name.

k-diffusion's package ``__init__`` imports optional dependencies (torchvision, wandb, clip, ...); its ``sampling``
module is loaded on its own by :func:`benchmarks.peers.kdiffusion_modules`, as the speed benchmark loads it. Without
k-diffusion installed
(``pip install --no-deps k-diffusion==0.1.1.post1``, which ``make test`` does) the module is skipped.

Every comparison runs both on the same model wrapper, inputs and noise, with torch's global generator seeded the
same way before each, and checks the result, every callback and the generator's state afterwards. Runs are in
float64 (so that a difference beyond rounding is a difference of method) and, for the samplers, in float32 too.
"""
from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path

import pytest
import torch

from samplers.interop import kdiffusion as ours
from samplers.problems import GaussianMixture
from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules

TOL = 1e-6
F32 = 1e-6
# The adaptive solver in float32: k-diffusion's error estimate is a difference of nearly equal float32 tensors, so its
# step sizes carry float32 noise (measured: 5e-5 relative); the steps taken and the result agree, the intermediate
# states (reported to the callback) sit at times up to 2e-5 apart in λ.
ADAPTIVE_F32 = 1e-3
# DPM-Solver-fast / adaptive in float32: k-diffusion computes the times and step coefficients from float32 λ
# (torch.tensor(sigma_max)), e^(−λ) and expm1 of float32 differences: measured 1.2e-6 of the scale.
DPM_F32 = 2e-6


def reference():
    """k-diffusion's own ``sampling`` module (the installed package, loaded without its package ``__init__`` when that
    needs optional dependencies), or None if it is not installed."""
    try:
        return kdiffusion_modules()[0]
    except KDiffusionUnavailable:
        return None


kd = reference()
pytestmark = pytest.mark.skipif(kd is None, reason="k-diffusion is not installed: pip install --no-deps "
                                                    "k-diffusion==0.1.1.post1 (make test does)")


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    """The precision of a run: latents, schedule and torch's default dtype. k-diffusion computes times and step
    coefficients in the schedule's (or the default) dtype, this library in Python floats: in float64 the two agree to
    rounding (a difference is a difference of method); in float32 k-diffusion's own rounding shows (:data:`F32`)."""
    dtype = getattr(torch, request.param)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    yield dtype
    torch.set_default_dtype(default)


def public_names() -> list[str]:
    """What ``dir(k_diffusion.sampling)`` lists that is defined there (not imported into it)."""
    return sorted(n for n, v in vars(kd).items()
                  if not n.startswith("_") and getattr(v, "__module__", None) == kd.__name__)


GM = GaussianMixture.default(shape=(3, 4, 4), components=3, seed=6)


class Model(torch.nn.Module):
    """A k-diffusion model wrapper: ``model(x, sigma[B], **extra_args)`` → the exact denoiser of a Gaussian mixture,
    scaled by an extra argument (so that ``extra_args`` must reach it)."""

    def forward(self, x, sigma, scale):
        assert sigma.shape == (x.shape[0],)
        return (GM.denoiser(x.double(), sigma.double()) * scale).to(x.dtype)


EXTRA = {"scale": 0.97}


def start(dtype, sigma_max, batch=2):
    return (GM.noise(batch, seed=3) * sigma_max).to(dtype)


def schedule(dtype, n=7):
    return kd.get_sigmas_karras(n, 0.03, 14.6).to(dtype)


def run(module, fn_name, seed, *args, **kwargs):
    """(result, callbacks, the generator's next draw): one run with torch's global generator at ``seed``."""
    seen = []
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde's range warnings, the same on both sides
        out = getattr(module, fn_name)(*args, callback=seen.append, disable=True, **kwargs)
    return out, seen, torch.randn(3)


def close(mine: torch.Tensor, theirs: torch.Tensor, what: str, f32: float = F32) -> None:
    """Equal to :data:`TOL` in float64; in float32 to ``f32`` of the largest value (k-diffusion's float32 rounding)."""
    mine = mine.to(theirs.dtype)
    atol = TOL if theirs.dtype == torch.float64 else f32 * max(1.0, float(theirs.abs().max()))
    torch.testing.assert_close(mine, theirs, rtol=0, atol=atol, msg=what)


def assert_same_run(got, want, f32: float = F32, callback_f32: float | None = None):
    (out, seen, after), (k_out, k_seen, k_after) = got, want
    result, info = (out, None) if isinstance(out, torch.Tensor) else out
    k_result, k_info = (k_out, None) if isinstance(k_out, torch.Tensor) else k_out
    assert result.dtype == k_result.dtype and result.shape == k_result.shape
    callback_f32 = f32 if callback_f32 is None else callback_f32
    close(result, k_result, "result", f32)
    assert info == k_info
    assert len(seen) == len(k_seen)
    for mine, theirs in zip(seen, k_seen):
        assert set(mine) == set(theirs)
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                assert isinstance(mine[key], torch.Tensor), key
                close(mine[key], value, f"callback {theirs['i']}: {key}", callback_f32)
            elif isinstance(value, float):  # the adaptive solver's step size
                assert math.isclose(mine[key], value, rel_tol=TOL if result.dtype == torch.float64 else callback_f32), key
            else:
                assert mine[key] == value, key
    torch.testing.assert_close(after, k_after, rtol=0, atol=0, msg="the global generator is left elsewhere")


SCHEDULE_SAMPLERS = {
    # η = 3 in the ancestral ones: σ_up is capped at σ_next where σ_down reaches 0, a step that dpm_2_ancestral
    # takes without noise (k-diffusion adds it only after its DPM-Solver-2 branch) and the other two with it
    # churn off, a window k-diffusion callers pass from settings: s_tmin > s_tmax is inert there (was refused)
    "sample_euler": [{}, {"s_churn": 1.0}, {"s_churn": 4.0, "s_tmin": 0.3, "s_tmax": 5.0, "s_noise": 1.003},
                     {"s_tmin": 10.0, "s_tmax": 1.0}],
    "sample_heun": [{}, {"s_churn": 1.0}, {"s_churn": 4.0, "s_tmin": 0.3, "s_tmax": 5.0}],
    "sample_dpm_2": [{}, {"s_churn": 1.0}, {"s_churn": 4.0, "s_tmin": 0.3, "s_tmax": 5.0}],
    "sample_euler_ancestral": [{}, {"eta": 3.0}, {"eta": 0.5, "s_noise": 0.9}, {"eta": 0.0}, {"noise": "tree"}],
    "sample_dpm_2_ancestral": [{}, {"eta": 3.0}, {"eta": 0.5}, {"eta": 0.0}, {"noise": "tree"}],
    "sample_dpmpp_2s_ancestral": [{}, {"eta": 3.0}, {"eta": 0.5}, {"eta": 0.0}, {"noise": "tree"}],
    "sample_lms": [{}, {"order": 2}, {"order": 6}],  # any order, as k-diffusion (was refused above 4)
    "sample_dpmpp_2m": [{}],
    "sample_dpmpp_sde": [{}, {"eta": 0.5, "s_noise": 0.9}, {"r": 0.3}, {"eta": 0.0}, {"noise": "tree"},
                         {"r": 1.0, "eta": 0.0}, {"r": 1.5, "noise": "tree"},  # r >= 1: ComfyUI's node takes 0-100
                         # r = 1: the stage point is the step's end, where k-diffusion's float32 asks an ulp apart
                         {"r": 1.0}, {"r": 1.0, "noise": "tree"}],
    "sample_dpmpp_2m_sde": [{}, {"solver_type": "heun"}, {"eta": 0.5}, {"eta": 0.0}, {"noise": "tree"}],
    "sample_dpmpp_3m_sde": [{}, {"eta": 0.5}, {"eta": 0.0}, {"noise": "tree"}],
}
CASES = [(name, options) for name, variants in SCHEDULE_SAMPLERS.items() for options in variants]


def _with_noise(options, x, module):
    options = dict(options)
    if options.pop("noise", None) == "tree":  # a noise sampler of the caller's: each side gets its own, same seed
        options["noise_sampler"] = module.BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[11, 12])
    return options


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_every_sampler_matches_k_diffusion(name, options, dtype):
    sigmas = schedule(dtype)
    x = start(dtype, float(sigmas[0]))
    got = run(ours, name, 5, Model(), x, sigmas, extra_args=EXTRA, **_with_noise(options, x, ours))
    want = run(kd, name, 5, Model(), x, sigmas, extra_args=EXTRA, **_with_noise(options, x, kd))
    assert_same_run(got, want)


@pytest.mark.parametrize("options", [{}, {"eta": 0.5}, {"n": 9}, {"n": 10}, {"noise": "tree", "eta": 0.3, "n": 9}])
def test_dpm_fast_matches_k_diffusion_on_its_range_signature(options, dtype):
    options = dict(options)
    n = options.pop("n", 7)
    x = start(dtype, 14.6)
    results = [run(module, "sample_dpm_fast", 2, Model(), x, 0.03, 14.6, n, extra_args=EXTRA,
                   **_with_noise(options, x, module)) for module in (ours, kd)]
    assert_same_run(*results, f32=DPM_F32)


@pytest.mark.parametrize("options", [{}, {"order": 2}, {"eta": 0.5}, {"rtol": 0.01, "atol": 0.001, "pcoeff": 0.1,
                                                                      "dcoeff": 0.05, "h_init": 0.1}])
def test_dpm_adaptive_matches_k_diffusion_on_its_range_signature(options, dtype):
    x = start(dtype, 14.6)
    results = [run(module, "sample_dpm_adaptive", 2, Model(), x, 0.03, 14.6, extra_args=EXTRA, return_info=True,
                   **options) for module in (ours, kd)]
    assert_same_run(*results, f32=DPM_F32, callback_f32=ADAPTIVE_F32)
    assert results[0][0][1]["n_accept"] > 3


def test_range_samplers_refuse_a_zero_sigma_as_k_diffusion_does():
    for module in (ours, kd):
        with pytest.raises(ValueError):
            module.sample_dpm_fast(Model(), start(torch.float64, 14.6), 0.0, 14.6, 5, extra_args=EXTRA, disable=True)


# ----------------------------------------------------------------------------------------------------
# The helpers


@pytest.mark.parametrize("name", ["get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential"])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 20, 40, 50, 1000])
@pytest.mark.parametrize("default", ["float32", "float64", "float16", "bfloat16"])
def test_schedules_match_bitwise(name, n, default):
    """k-diffusion's bits in every default dtype (float32 is what A1111 runs): the drop-in evaluates the formulas as
    k-diffusion does; the registry's float64 schedule cast to float32 was up to 113 float32 ulp off (8.3e-6
    relative, ρ = 3)."""
    rhos = [{}] if name == "get_sigmas_exponential" else [{}, {"rho": 3.0}, {"rho": 7}, {"rho": 2.5}]
    ranges = [(0.0291675, 14.614642), (0.0292, 14.6146), (0.002, 80.0), (0.03, 14.6), (0.1, 80.0)]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, default))
    try:
        cases = [((n, lo, hi), rho) for lo, hi in ranges for rho in rhos]
        cases += [((n, torch.tensor(0.1), 80.0), {}), ((n, 0.03, torch.tensor(14.6)), rhos[-1])]
        for args, kwargs in cases:
            got, want = getattr(ours, name)(*args, **kwargs), getattr(kd, name)(*args, **kwargs)
            assert got.dtype == want.dtype == getattr(torch, default) and got.device == want.device
            assert torch.equal(got, want), (name, default, args, kwargs, (got != want).sum())
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_vp_schedule_matches(n, dtype):
    """In float32 k-diffusion computes exp(·) − 1 and loses up to 2e-4 relative at the smallest σ; this library uses
    expm1 (as ComfyUI's copy of the function does): compared to the largest σ's scale there."""
    # beta_d = 0 (constant-β VP) and beta_min = 0: strictly decreasing schedules in k-diffusion (were refused)
    for kwargs in ({}, {"beta_d": 10.0, "beta_min": 0.5, "eps_s": 1e-2}, {"beta_d": 0.0}, {"beta_min": 0.0},
                   {"beta_d": 0.0, "beta_min": 1.0, "eps_s": 0.1}):
        close(ours.get_sigmas_vp(n, **kwargs), kd.get_sigmas_vp(n, **kwargs), f"get_sigmas_vp {kwargs}")


@pytest.mark.parametrize("rho", [-7.0, -0.5, -20.0, -1000.0])
@pytest.mark.parametrize("default", ["float32", "float64"])
def test_karras_with_a_negative_rho_matches_bitwise(rho, default):
    """A negative ρ also runs from σ_max down to σ_min in k-diffusion (was refused: "rho must be > 0")."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, default))
    try:
        for n in (1, 7, 50):
            mine, theirs = ours.get_sigmas_karras(n, 0.03, 14.6, rho=rho), kd.get_sigmas_karras(n, 0.03, 14.6, rho=rho)
            assert torch.equal(mine, theirs), (n, rho)
            assert bool((mine[1:] < mine[:-1]).all())
    finally:
        torch.set_default_dtype(previous)


def test_append_zero_to_d_and_ancestral_step_match():
    sigmas = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(ours.append_zero(sigmas), kd.append_zero(sigmas), rtol=0, atol=0)
    x, denoised = GM.noise(2, seed=1), GM.noise(2, seed=2)
    for sigma in (torch.tensor([2.0, 0.5], dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)):
        torch.testing.assert_close(ours.to_d(x, sigma, denoised), kd.to_d(x, sigma, denoised), rtol=0, atol=1e-12)
    for sigma, sigma_next in [(3.0, 1.0), (1.0, 0.0), (torch.tensor(3.0), torch.tensor(1.0)), (14.6, 14.0)]:
        for eta in (0.0, 0.5, 1.0, 1.7):
            got, want = ours.get_ancestral_step(sigma, sigma_next, eta), kd.get_ancestral_step(sigma, sigma_next, eta)
            assert [type(g) for g in got] == [type(w) for w in want]
            for g, w in zip(got, want):
                assert math.isclose(float(g), float(w), rel_tol=TOL, abs_tol=1e-12)


def test_default_noise_sampler_draws_from_the_global_generator():
    x = torch.zeros(2, 3, dtype=torch.float64)
    draws = []
    for module in (ours, kd):
        torch.manual_seed(4)
        noise = module.default_noise_sampler(x)
        draws.append(torch.stack([noise(1.0, 0.5), noise(0.5, 0.1)]))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [5, [7, 8, 9], None])
def test_brownian_tree_noise_sampler_and_batched_tree_match(seed, dtype):
    x = torch.zeros(3, 2, 4, dtype=dtype)
    sigma_min, sigma_max = torch.tensor(0.03, dtype=dtype), torch.tensor(14.6, dtype=dtype)
    queries = [(14.6, 10.0), (3.0, 0.5), (0.2, 0.03), (1.0, 2.0), (0.5, 0.4999)]
    for transform in ({}, {"transform": lambda s: s.log()}):
        samplers_ = []
        for module in (ours, kd):
            torch.manual_seed(1)
            samplers_.append(module.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, **transform))
        for a, b in queries:
            a, b = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got, want = samplers_[0](a, b), samplers_[1](a, b)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    trees = []
    for module in (ours, kd):
        torch.manual_seed(2)
        trees.append(module.BatchedBrownianTree(x, torch.tensor(2.0), torch.tensor(0.5), seed=seed))
    torch.testing.assert_close(trees[0](1.0, 0.7), trees[1](1.0, 0.7), rtol=0, atol=0)
    torch.testing.assert_close(trees[0](0.7, 1.0), trees[1](0.7, 1.0), rtol=0, atol=0)
    assert trees[0].sign == trees[1].sign and trees[0].batched == trees[1].batched


def test_linear_multistep_coefficients_match():
    t = kd.get_sigmas_karras(8, 0.03, 14.6).numpy()
    for order in (1, 2, 3, 4):
        for i in range(order - 1, 7):
            for j in range(order):
                want = kd.linear_multistep_coeff(order, t, i, j)
                assert math.isclose(ours.linear_multistep_coeff(order, t, i, j), want, rel_tol=TOL, abs_tol=1e-9)
    for module in (ours, kd):
        with pytest.raises(ValueError):
            module.linear_multistep_coeff(3, t, 1, 0)


def test_linear_multistep_coefficients_match_at_many_steps():
    """At 5000 steps too (steps of 1e-3 of σ), to rounding: the registry's weights are built in the step's own variable,
    as exact as k-diffusion's quadrature. Expanded in σ about 0 they were off by up to 1e-5 of dσ there."""
    t = torch.logspace(1, -1, 5001, dtype=torch.float64).numpy()
    for i in (3, 4, 2500, 4999):
        for j in range(4):
            want = kd.linear_multistep_coeff(4, t, i, j)
            assert abs(ours.linear_multistep_coeff(4, t, i, j) - want) < 1e-12 * abs(t[i + 1] - t[i]), (i, j)

def test_pid_step_size_controller_matches():
    errors = [0.3, 2.0, 0.9, 0.05, torch.tensor(1.5), 0.7, 0.0]
    for args in [(0.05, 0.0, 1.0, 0.0), (0.1, 0.2, 0.8, 0.1, 2), (0.1, 0.2, 0.8, 0.1, 3, 0.5)]:
        a, b = ours.PIDStepSizeController(*args), kd.PIDStepSizeController(*args)
        for error in errors:
            assert a.propose_step(error) == b.propose_step(error)
            assert math.isclose(a.h, b.h, rel_tol=1e-12)
        assert a.limiter(1.7) == b.limiter(1.7)


def test_log_likelihood_matches():
    x = GM.sample(2, seed=1)
    results = []
    for module in (ours, kd):
        torch.manual_seed(8)
        ll, info = module.log_likelihood(Model(), x, 0.05, 20.0, extra_args=EXTRA)
        results.append((ll, info, torch.randn(2)))
    (ll, info, after), (k_ll, k_info, k_after) = results
    torch.testing.assert_close(ll, k_ll, rtol=TOL, atol=TOL)
    assert info == k_info and info["fevals"] > 6
    torch.testing.assert_close(after, k_after, rtol=0, atol=0)


def test_dpm_solver_object_matches_step_by_step(dtype):
    x = start(dtype, 5.0)
    for module_pair in [(ours, kd)]:
        calls = {id(m): [] for m in module_pair}
        solvers = [m.DPMSolver(Model(), EXTRA, eps_callback=lambda m=m: calls[id(m)].append(1)) for m in module_pair]
        t, t_next = solvers[1].t(torch.tensor(5.0)), solvers[1].t(torch.tensor(2.0))
        assert float(solvers[0].t(torch.tensor(5.0))) == float(t)
        assert float(solvers[0].sigma(t)) == float(solvers[1].sigma(t))
        (e0, c0), (e1, c1) = [s.eps({}, "eps", x, t) for s in solvers]
        close(e0, e1, "eps")
        assert set(c0) == set(c1) == {"eps"}
        for step, kwargs in [("dpm_solver_1_step", {}), ("dpm_solver_2_step", {}), ("dpm_solver_2_step", {"r1": 0.3}),
                             ("dpm_solver_3_step", {}), ("dpm_solver_3_step", {"r1": 0.25, "r2": 0.6})]:
            for cache in (None, "shared"):
                outs = []
                for solver in solvers:
                    eps_cache = None if cache is None else solver.dpm_solver_2_step(x, t, t_next, r1=1 / 3)[1]
                    outs.append(getattr(solver, step)(x, t, t_next, eps_cache=eps_cache, **kwargs))
                close(outs[0][0], outs[1][0], step)
                assert set(outs[0][1]) == set(outs[1][1])
        assert len(calls[id(ours)]) == len(calls[id(kd)])
    for module in (ours, kd):  # the reverse direction (towards noise), which k-diffusion allows with eta = 0
        solver = module.DPMSolver(Model(), EXTRA)
        back = solver.dpm_solver_fast(x / 5.0 * 0.5, solver.t(torch.tensor(0.5)), solver.t(torch.tensor(5.0)), 6)
        calls[id(module)] = back
    close(calls[id(ours)], calls[id(kd)], "dpm_solver_fast backwards")


# ----------------------------------------------------------------------------------------------------
# Every name, with k-diffusion's signature


TESTED = {
    "append_zero", "to_d", "get_ancestral_step", "default_noise_sampler", "BatchedBrownianTree",
    "BrownianTreeNoiseSampler", "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential",
    "get_sigmas_vp", "linear_multistep_coeff", "PIDStepSizeController", "log_likelihood", "DPMSolver",
    "sample_dpm_fast", "sample_dpm_adaptive", *SCHEDULE_SAMPLERS,
}


def test_every_public_name_is_tested_here():
    assert set(public_names()) == TESTED == set(ours.K_DIFFUSION_NAMES)


def test_the_names_k_diffusion_imports_into_its_module_are_there_too():
    # sampler code written against k-diffusion reaches them through its module: k_diffusion.sampling.trange(...)
    imported = {n for n, v in vars(kd).items() if not n.startswith("_") and getattr(v, "__module__", None) != kd.__name__}
    other_packages = {"utils", "integrate", "torchsde", "odeint"}  # k-diffusion's utils, scipy, torchsde, torchdiffeq
    assert imported == set(ours.K_DIFFUSION_IMPORTS) | other_packages
    for name in ours.K_DIFFUSION_IMPORTS:
        assert getattr(ours, name) is getattr(kd, name), name


def _compatible(mine: inspect.Signature, theirs: inspect.Signature, where: str) -> None:
    """k-diffusion's parameters, in order, with the same kinds and defaults; ours may add keyword-only ones."""
    def split(sig):
        params = list(sig.parameters.values())
        return [p for p in params if p.kind is not p.VAR_KEYWORD], any(p.kind is p.VAR_KEYWORD for p in params)
    (params, var_kw), (k_params, k_var_kw) = split(mine), split(theirs)
    assert var_kw == k_var_kw, where
    assert [p.name for p in params[:len(k_params)]] == [p.name for p in k_params], where
    for p, k in zip(params, k_params):
        assert p.kind == k.kind, f"{where}: {p.name}"
        if inspect.isfunction(k.default) or k.default is inspect.Parameter.empty:
            assert callable(p.default) == callable(k.default), f"{where}: {p.name}"
        else:
            assert p.default == k.default, f"{where}: {p.name}"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(k_params):]), where


@pytest.mark.parametrize("name", public_names() if kd is not None else [])
def test_every_public_name_exists_with_k_diffusions_signature(name):
    mine, theirs = getattr(ours, name), getattr(kd, name)
    assert callable(mine)
    _compatible(inspect.signature(mine), inspect.signature(theirs), name)
    if inspect.isclass(theirs):
        for attr, member in vars(theirs).items():
            if inspect.isfunction(member) and not attr.startswith("_"):
                _compatible(inspect.signature(getattr(mine, attr)), inspect.signature(member), f"{name}.{attr}")


# ----------------------------------------------------------------------------------------------------
# The one extension: seed=


@pytest.mark.filterwarnings("ignore:Should have")  # torchsde at the ends of the range, the same on both sides
def test_seed_is_the_trees_seed_for_sde_samplers_and_per_item_noise_for_the_others():
    sigmas = schedule(torch.float64)
    x = start(torch.float64, float(sigmas[0]), batch=3)
    for name in ("sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
        tree = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[4, 5, 6])
        want = getattr(kd, name)(Model(), x, sigmas, extra_args=EXTRA, disable=True, noise_sampler=tree)
        got = getattr(ours, name)(Model(), x, sigmas, extra_args=EXTRA, disable=True, seed=[4, 5, 6])
        close(got, want, name)
    for name in ("sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_euler"):
        churn = {"s_churn": 1.0} if name == "sample_euler" else {}
        torch.manual_seed(0)
        batch = getattr(ours, name)(Model(), x, sigmas, extra_args=EXTRA, disable=True, seed=[4, 5, 6], **churn)
        state = torch.randn(2)
        torch.manual_seed(1)
        alone = getattr(ours, name)(Model(), x[1:2], sigmas, extra_args=EXTRA, disable=True, seed=[5], **churn)
        torch.testing.assert_close(batch[1:2], alone)  # per-item seeds: batch invariant, global generator unused
        torch.manual_seed(0)
        torch.testing.assert_close(torch.randn(2), state)
    with pytest.raises(ValueError, match="not both"):
        ours.sample_euler_ancestral(Model(), x, sigmas, extra_args=EXTRA, disable=True, seed=1,
                                    noise_sampler=ours.default_noise_sampler(x))


# ----------------------------------------------------------------------------------------------------
# The figures in docs/kdiffusion.md: python -m tests.test_kdiffusion_parity (from the repository root)


def _largest_difference(got, want) -> float:
    """The largest difference of a run (result and callbacks), relative to max(1, the largest value)."""
    pairs = [(got[0] if isinstance(got[0], torch.Tensor) else got[0][0],
              want[0] if isinstance(want[0], torch.Tensor) else want[0][0])]
    pairs += [(m[k], t[k]) for m, t in zip(got[1], want[1]) for k in t if isinstance(t[k], torch.Tensor)]
    return max(float((a.to(b.dtype) - b).abs().max()) / max(1.0, float(b.abs().max())) for a, b in pairs)


def table() -> str:
    try:
        from conftest import OTHER_ROUNDING
    except ImportError:  # run as python -m tests.test_kdiffusion_parity
        from tests.conftest import OTHER_ROUNDING

    rows = [f"Measured where tests/conftest.py's OTHER_ROUNDING is {OTHER_ROUNDING} (float32 figures are rounding: "
            "another kind of CPU gives others of the same size).", "",
            "| function | options | float64 | float32 |", "|---|---|---|---|"]
    cases = [(name, "sigmas", options) for name, options in CASES]
    cases += [("sample_dpm_fast", (0.03, 14.6, n), {"eta": eta}) for n in (7, 10) for eta in (0.0, 0.5)]
    cases += [("sample_dpm_fast", (0.03, 14.6, 9), {"noise": "tree", "eta": 0.3})]
    cases += [("sample_dpm_adaptive", (0.03, 14.6), options) for options in ({}, {"order": 2}, {"eta": 0.5})]
    default = torch.get_default_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, args, options in cases:
            cells = []
            for dtype in (torch.float64, torch.float32):
                torch.set_default_dtype(dtype)
                sigmas = schedule(dtype)
                x = start(dtype, float(sigmas[0]))
                runs = []
                for module in (ours, kd):
                    call = (x, sigmas) if args == "sigmas" else (x, *args)
                    opts = _with_noise(options, x, module)
                    runs.append(run(module, name, 5, Model(), *call, extra_args=EXTRA, **opts))
                cells.append(f"{_largest_difference(*runs):.1e}")
            shown = ({"n": args[2]} if name == "sample_dpm_fast" else {}) | options
            rows.append(f"| `{name}` | {', '.join(f'{k}={v!r}' for k, v in shown.items())} | {cells[0]} | {cells[1]} |")
    rows += ["", "| label (`samplers.sample`, `seed=[4, 5]`), float32 | steps | difference |", "|---|---|---|"]
    import samplers
    torch.set_default_dtype(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, name, options in LABELS:
            for n in ((7, 10, 20) if name == "sample_dpmpp_sde" else (7,)):
                sigmas = schedule(torch.float32, n)
                x = start(torch.float32, float(sigmas[0]))
                got = samplers.sample(label, Model(), x, sigmas, extra_args=EXTRA, seed=[4, 5], disable=True)
                tree = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[4, 5])
                want = getattr(kd, name)(Model(), x, sigmas, extra_args=EXTRA, noise_sampler=tree, disable=True,
                                         **options)
                difference = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
                rows.append(f"| `{label}` | {n} | {difference:.1e} |")
    torch.set_default_dtype(default)
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------
# The resolver's SDE labels draw k-diffusion's tree (what A1111 and ComfyUI give those samplers)

LABELS = [("DPM++ 2M SDE", "sample_dpmpp_2m_sde", {}), ("DPM++ 2M SDE Heun Karras", "sample_dpmpp_2m_sde",
                                                         {"solver_type": "heun"}),
          ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", {}), ("comfyui:dpmpp_2m_sde_gpu", "sample_dpmpp_2m_sde", {}),
          ("DPM++ SDE", "sample_dpmpp_sde", {})]


# "DPM++ SDE" asks the tree at its intermediate σ_s = e^(−(λ + r·h)): the registry sampler at the exact value,
# k-diffusion at the value recomputed in float32, and the tree resolves times to 1e-6, so an occasional draw differs
# (measured ≤ 3.3e-6 of the scale for 7 to 20 steps; the drop-in's sample_dpmpp_sde asks where k-diffusion asks).
LABEL_SDE_F32 = 1e-5


@pytest.mark.parametrize("label,name,options", LABELS, ids=[label for label, *_ in LABELS])
def test_sde_labels_draw_k_diffusions_brownian_tree(label, name, options):
    """``seed=[4, 5]`` through a label equals k-diffusion's sampler on its tree seeded [4, 5] (A1111's batch seeds),
    in float32, the precision A1111 and ComfyUI sample in. (In float64 the labels' "brownian_tree", ComfyUI's CPU
    tree, asks at float32 times as ComfyUI does, where k-diffusion's own tree asks at float64 times.)"""
    import samplers

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        sigmas = schedule(torch.float32)
        x = start(torch.float32, float(sigmas[0]))
        got = samplers.sample(label, Model(), x, sigmas, extra_args=EXTRA, seed=[4, 5], disable=True)
        tree = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[4, 5])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = getattr(kd, name)(Model(), x, sigmas, extra_args=EXTRA, noise_sampler=tree, disable=True,
                                     **options)
    finally:
        torch.set_default_dtype(default)
    close(got, want, label, LABEL_SDE_F32 if name == "sample_dpmpp_sde" else F32)


def test_brownian_tree_kinds_resolve_to_k_diffusions_sampler():
    from samplers.core.brownian import BrownianTreeNoiseSampler
    from samplers.core.noise import resolve

    x = torch.zeros(2, 3)
    cpu = resolve("brownian_tree", [1, 2], x, sigmas=[10.0, 1.0, 0.0])
    device = resolve("brownian_tree_device", 1, x, sigmas=[10.0, 1.0, 0.0])
    assert isinstance(cpu, BrownianTreeNoiseSampler) and cpu.tree.cpu and not device.tree.cpu
    assert cpu.tree.batched and device.tree.batched  # an int seed s is items s, s + 1 (A1111's batch seeds)
    torch.testing.assert_close(cpu(10.0, 1.0), device(10.0, 1.0), rtol=0, atol=0)  # on a CPU machine
    with pytest.raises(ValueError, match="finite range"):
        resolve("brownian_tree", 1, x, sigmas=[math.inf, 1.0, 0.0])


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(table())


def test_the_registry_samplers_behind_the_range_samplers_are_k_diffusions(dtype):
    """The registry's dpm_fast / dpm_adaptive (a schedule's end points; ``error_norm="batch"``, k-diffusion's norm)
    give k-diffusion's results on one interval without a final denoise: the drop-in's options are theirs."""
    import samplers

    if dtype == torch.float32:
        pytest.skip("k-diffusion's float32 times: compared through the drop-in above")
    x = start(dtype, 14.6, batch=3)
    grid = torch.tensor([14.6, 3.0, 1.0, 0.3, 0.1, 0.05, 0.03], dtype=dtype)  # only the end points and length count
    for eta in (0.0, 0.5):
        torch.manual_seed(3)
        want = kd.sample_dpm_fast(Model(), x, 0.03, 14.6, 6, extra_args=EXTRA, disable=True, eta=eta)
        torch.manual_seed(3)
        got = samplers.sample("dpm_fast", Model(), x, grid, extra_args=EXTRA, disable=True, eta=eta,
                              noise_sampler=ours.default_noise_sampler(x))
        close(got, want, f"dpm_fast eta={eta}")
    interval = torch.tensor([14.6, 0.03], dtype=dtype)
    want = kd.sample_dpm_adaptive(Model(), x, 0.03, 14.6, extra_args=EXTRA, disable=True, return_info=True)
    info = {}
    got = samplers.sample("dpm_adaptive", Model(), x, interval, extra_args=EXTRA, disable=True, error_norm="batch",
                          info=info)
    close(got, want[0], "dpm_adaptive")
    assert info["n_accept"] == want[1]["n_accept"] and info["n_reject"] == want[1]["n_reject"]


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_2s_ancestral", "euler_ancestral"])
def test_the_registry_ancestral_samplers_take_k_diffusions_noise_where_eta_caps_sigma_up(name):
    """η = 3 caps σ_up at σ_next, so σ_down = 0 on most steps: k-diffusion's dpm_2_ancestral then takes an Euler step
    and adds no noise (its draw is inside the DPM-Solver-2 branch), its 2S and Euler ones add σ_up of noise. The
    registry's samplers (the A1111 labels run them) do the same, on the same draws. (ComfyUI's euler_ancestral adds
    none there: its label sets noise_at_zero_down=False, tests/test_comfyui_rules.py.)"""
    import samplers

    x = start(torch.float64, 14.6)
    sigmas = schedule(torch.float64)

    def draws():
        g = torch.Generator().manual_seed(8)
        return lambda sigma, sigma_next: torch.randn(x.shape, generator=g, dtype=x.dtype)

    want = getattr(kd, f"sample_{name}")(Model(), x, sigmas, extra_args=EXTRA, disable=True, eta=3.0,
                                         noise_sampler=draws())
    got = samplers.sample(name, Model(), x, sigmas, extra_args=EXTRA, disable=True, eta=3.0, noise_sampler=draws())
    close(got, want, f"{name} eta=3")


def _same_figures(mine: str, shown: str) -> None:
    """The same rows (samplers, options, steps), each difference within 10× of the one shown, or both at float64's
    rounding floor (≤ 1e-13): what another CPU's float rounding can change in a table of rounding-level differences."""
    def rows(text):
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]

    a, b = rows(mine), rows(shown)
    assert [r[:-2] if len(r) == 4 else r[:-1] for r in a] == [r[:-2] if len(r) == 4 else r[:-1] for r in b], \
        "the rows changed: regenerate the table (python -m tests.test_kdiffusion_parity)"
    for ra, rb in zip(a, b):
        for u, v in zip(ra[-2:] if len(ra) == 4 else ra[-1:], rb[-2:] if len(rb) == 4 else rb[-1:]):
            x, y = float(u), float(v)
            assert max(x, y) <= 1e-13 or (min(x, y) > 0 and max(x, y) / min(x, y) <= 10), (ra, rb)


def test_the_table_in_the_docs_is_this_modules_output():
    """docs/kdiffusion.md's parity tables are `python -m tests.test_kdiffusion_parity`'s output (they had gone stale:
    rows that read 0.0 differed by 2.5e-16, seven rows missing): the same rows, each figure within 10× of the one
    shown (or both at float64's rounding floor). Not character for character: the figures are float rounding, and
    two CPUs (an AMX Xeon, an AVX512F EPYC) gave tables 41 rows apart in the last figures (sample_euler at
    s_churn=1: 1.6e-14 on one, 2.2e-16 on the other)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "kdiffusion.md").read_text()
    shown = page.split("<!-- kdiffusion-parity: python -m tests.test_kdiffusion_parity -->\n", 1)[1]
    shown = shown.split("\n<!-- /kdiffusion-parity -->", 1)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mine = table()
    finally:
        torch.set_num_threads(threads)
    assert "| `" in shown, "no table: regenerate it (python -m tests.test_kdiffusion_parity)"
    _same_figures(mine, shown)


# ----------------------------------------------------------------------------------------------------
# ComfyUI's own Brownian-tree functions (beyond k-diffusion 0.1.1): its tree, seeded by extra_args["seed"]

class ComfyModel(Model):
    """ComfyUI's model_k takes the extra arguments ComfyUI's samplers pass, its seed among them."""

    def forward(self, x, sigma, scale, seed):
        return super().forward(x, sigma, scale)


# (ComfyUI's function, k-diffusion's of the same family, its options, ComfyUI's cpu= for the tree)
COMFYUI_TREES = [("sample_dpmpp_sde_gpu", "sample_dpmpp_sde", {}, False),
                 ("sample_dpmpp_2m_sde_gpu", "sample_dpmpp_2m_sde", {}, False),
                 ("sample_dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}, True),
                 ("sample_dpmpp_2m_sde_heun_gpu", "sample_dpmpp_2m_sde", {"solver_type": "heun"}, False),
                 ("sample_dpmpp_3m_sde_gpu", "sample_dpmpp_3m_sde", {}, False)]


@pytest.mark.filterwarnings("ignore:Should have")  # torchsde at the ends of the range, the same on both sides
@pytest.mark.parametrize("name,family,options,cpu", COMFYUI_TREES, ids=[c[0] for c in COMFYUI_TREES])
def test_comfyuis_tree_functions_seed_their_tree_from_extra_args(name, family, options, cpu, dtype):
    """ComfyUI's sample_dpmpp_2m_sde_gpu & co. build BrownianTreeNoiseSampler(x, σ_min, σ_max,
    seed=extra_args.get("seed"), cpu=...) and run the sampler of their family: called positionally as ComfyUI calls
    them, they equal k-diffusion's function on that tree, whatever torch's global generator holds, and leave it alone
    (they ran the registry label, whose tree was seeded from the global generator: 4.7 of the scale apart)."""
    sigmas = schedule(dtype)
    x = start(dtype, float(sigmas[0]))
    extra = {**EXTRA, "seed": 5}
    tree = (ours.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=5, cpu=True) if cpu
            else kd.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=5))
    want = getattr(kd, family)(ComfyModel(), x, sigmas, extra_args=extra, disable=True, noise_sampler=tree, **options)
    fn = getattr(ours, name)
    assert list(inspect.signature(fn).parameters)[:9] == ["model", "x", "sigmas", "extra_args", "callback", "disable",
                                                          "eta", "s_noise", "noise_sampler"]
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        got = fn(ComfyModel(), x, sigmas, extra, None, True, 1.0, 1.0)  # ComfyUI's positional call
        after = torch.randn(3)
        torch.manual_seed(global_seed)
        torch.testing.assert_close(after, torch.randn(3), rtol=0, atol=0, msg="the global generator was drawn from")
        close(got, want, name)
    # a noise sampler of the caller's replaces the tree, as in ComfyUI (its extra_args["seed"] then unread)
    tree = kd.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=[7, 8])
    want = getattr(kd, family)(ComfyModel(), x, sigmas, extra_args=extra, disable=True, noise_sampler=tree, **options)
    tree = kd.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=[7, 8])
    close(fn(ComfyModel(), x, sigmas, extra_args=extra, disable=True, noise_sampler=tree), want, name)

"""The k-diffusion drop-in where A1111 / Forge and k-diffusion's float32 arithmetic meet it: a TorchHijack in place of
the module's ``torch``, the churn window and the ancestral Euler-to-0 branch decided in the schedule's dtype, churn
options k-diffusion runs, and its helpers' edge cases. Each against the real package."""
from __future__ import annotations

import pytest
import torch

from samplers.core.errors import InvalidInput
from samplers.interop import kdiffusion as ours

from test_kdiffusion_seams import kd, needs_kd  # k-diffusion 0.1.1.post1 (None where not installed), its skip mark

pytestmark = needs_kd


class Counting:
    """A smooth k-diffusion model wrapper, D(x, σ) = x/(1 + σ²) + 0.1·sin x, counting its calls."""

    def __init__(self, wavy=True):
        self.calls, self.wavy = 0, wavy

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        d = x / (1 + sigma**2).view(-1, *[1] * (x.ndim - 1))
        return d + 0.1 * torch.sin(x) if self.wavy else d


def start(sigma, seed=0):
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * float(sigma)


def run(module, name, *args, seed=5, wavy=True, **kwargs):
    """(result, model calls, the global generator's next draw) of ``module.name`` after torch.manual_seed(seed)."""
    model = Counting(wavy)
    torch.manual_seed(seed)
    out = getattr(module, name)(model, *args, disable=True, **kwargs)
    return out, model.calls, torch.randn(3)


def assert_close(a, b, rel=1e-6):
    scale = max(1.0, b.abs().max().item())
    assert (a.double() - b.double()).abs().max().item() <= rel * scale


# ----------------------------------------------------------------------------------------------------
# 1. A1111 / Forge's TorchHijack: ``sampling.torch`` replaced by an object whose randn_like takes x only


class TorchHijack:
    """Shaped like A1111's (modules/sd_samplers_common.py): ``randn_like(x)`` and nothing else of it, every other
    attribute torch's. Its draws come from its own generator, one seed per call, so a draw made elsewhere (or
    not made) shows."""

    def __init__(self):
        self.n = 0

    def __getattr__(self, item):
        if item == "randn_like":
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(item)

    def randn_like(self, x):
        self.n += 1
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + self.n), dtype=x.dtype)


def hijacked(module, call):
    old = module.torch
    module.torch = hijack = TorchHijack()
    try:
        return call(module), hijack.n
    finally:
        module.torch = old


_SIGMAS = torch.tensor([14.6146, 9.0, 5.0, 2.5, 1.0, 0.3, 0.0292, 0.0])
_HIJACKED = [
    ("sample_euler", (_SIGMAS,), {"s_churn": 1.0}),
    ("sample_heun", (_SIGMAS,), {"s_churn": 2.0, "s_tmin": 0.5}),
    ("sample_euler_ancestral", (_SIGMAS,), {}),
    ("sample_dpm_2_ancestral", (_SIGMAS,), {}),
    ("sample_dpmpp_2s_ancestral", (_SIGMAS,), {"eta": 0.7}),
    ("sample_dpm_fast", (0.0292, 14.6146, 10), {"eta": 0.5}),
    ("sample_dpm_adaptive", (0.0292, 14.6146), {"eta": 0.5}),
]


@pytest.mark.parametrize("name, args, options", _HIJACKED, ids=[c[0] for c in _HIJACKED])
def test_a_torch_hijack_makes_k_diffusions_draws(name, args, options):
    x = start(14.6146)
    (out, calls, _), draws = hijacked(ours, lambda m: run(m, name, x, *args, **options))
    (ref, ref_calls, _), ref_draws = hijacked(kd, lambda m: run(m, name, x, *args, **options))
    assert draws == ref_draws > 0
    assert calls == ref_calls
    assert_close(out, ref, rel=2e-6 if name == "sample_dpm_fast" else 1e-6)  # docs/kdiffusion.md's float32 figures


# ----------------------------------------------------------------------------------------------------
# 2. The churn window, decided as k-diffusion decides it: the schedule's 0-d σ compared with the bound


_A1111 = torch.tensor([14.6146, 7.0, 3.0, 1.0, 0.3, 0.0292, 0.0])  # float32 14.6146 is 14.61460018 > 14.6146


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpm_2"])
@pytest.mark.parametrize("window", [
    {"s_tmax": 14.6146},  # k-diffusion churns the first step (float32(14.6146) <= float32(14.6146))
    {"s_tmin": 14.6146},
    {"s_tmin": 14.6146, "s_tmax": 14.6146},
    {"s_tmin": float(torch.tensor(0.3)) + 1e-12},  # rounds to float32 0.3: that step churns
    {"s_tmax": torch.tensor(14.6146, dtype=torch.float64)},  # a float64 0-d bound: compared in float64, no churn
    {"s_tmin": 0.3, "s_tmax": 3.0},
], ids=["tmax=sigma_max", "tmin=sigma_max", "both=sigma_max", "tmin~0.3", "tmax=f64 tensor", "0.3..3"])
def test_the_churn_window_is_compared_in_k_diffusions_dtype(name, window):
    x = start(14.6146)
    out, calls, after = run(ours, name, x, _A1111, s_churn=1.0, **window)
    ref, ref_calls, ref_after = run(kd, name, x, _A1111, s_churn=1.0, **window)
    assert calls == ref_calls and torch.equal(after, ref_after)
    assert_close(out, ref)


# ----------------------------------------------------------------------------------------------------
# 3. The ancestral samplers' Euler-to-0 branch, taken where k-diffusion's σ_down in the schedule's dtype is 0


@pytest.mark.parametrize("name", ["sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"])
@pytest.mark.parametrize("sigmas, eta", [
    (lambda: kd.get_sigmas_karras(2, 0.002, 80.), 1.0),  # (σ_next/σ)² = 6e-10: float32 σ_down = 0 (exact: 5e-8)
    (lambda: torch.tensor([1.0, 1e-4, 0.0]), 1.0),
    (lambda: kd.get_sigmas_karras(7, 0.0292, 14.6146), 1.5),  # η > 1: σ_up reaches σ_next
    (lambda: kd.get_sigmas_karras(7, 0.0292, 14.6146, device="cpu").double(), 1.5),
], ids=["edm-2-steps", "flow-like", "eta=1.5", "eta=1.5-float64"])
def test_the_ancestral_euler_branch_is_k_diffusions(name, sigmas, eta):
    sigmas = sigmas()
    x = start(sigmas[0]).to(sigmas.dtype)
    out, calls, after = run(ours, name, x, sigmas, eta=eta, wavy=False)
    ref, ref_calls, ref_after = run(kd, name, x, sigmas, eta=eta, wavy=False)
    assert calls == ref_calls  # one model call in the Euler branch
    assert torch.equal(after, ref_after)  # dpm_2_ancestral draws no noise there
    assert_close(out, ref)
    from samplers.sde import ancestral
    assert ancestral.SPLIT.get() is None  # the registry samplers run as before afterwards


def test_a_registry_run_inside_the_drop_ins_model_takes_its_own_ancestral_split():
    """The drop-in's split is its run's alone: a model that runs the registry sampler itself (a nested sampler in a
    wrapper) gets the registry's split, as it would outside the drop-in."""
    import samplers

    sigmas = kd.get_sigmas_karras(2, 0.002, 80.)
    x = start(sigmas[0])
    inner = []

    def model(x, sigma, **extra):
        if not inner:
            inner.append(samplers.sample("dpm_2_ancestral", lambda y, s: y / (1 + s**2), x, sigmas, seed=1,
                                         disable=True))
        return x / (1 + sigma**2).view(-1, 1, 1, 1)

    torch.manual_seed(0)
    ours.sample_dpm_2_ancestral(model, x, sigmas, disable=True)
    alone = samplers.sample("dpm_2_ancestral", lambda y, s: y / (1 + s**2), x, sigmas, seed=1, disable=True)
    assert torch.equal(inner[0], alone)


# ----------------------------------------------------------------------------------------------------
# 4. Churn windows k-diffusion runs: empty (s_tmin > s_tmax) and negative bounds, as k-diffusion runs them


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpm_2"])
@pytest.mark.parametrize("window", [
    {"s_tmin": 10.0, "s_tmax": 1.0},  # empty: k-diffusion's γ is 0 at every step
    {"s_tmax": -1.0},  # empty too
    {"s_tmin": -1.0},  # every step, as s_tmin = 0
    {"s_tmin": -1.0, "s_tmax": 3.0},
], ids=["tmin>tmax", "tmax<0", "tmin<0", "tmin<0..3"])
def test_churn_windows_k_diffusion_runs_run_as_there(name, window):
    x = start(14.6146)
    sigmas = kd.get_sigmas_karras(6, 0.0292, 14.6146)
    seen, ref_seen = [], []
    out, calls, after = run(ours, name, x, sigmas, s_churn=1.0, callback=seen.append, **window)
    ref, ref_calls, ref_after = run(kd, name, x, sigmas, s_churn=1.0, callback=ref_seen.append, **window)
    assert calls == ref_calls and torch.equal(after, ref_after)
    assert [float(d["sigma_hat"]) for d in seen] == pytest.approx([float(d["sigma_hat"]) for d in ref_seen], rel=1e-6)
    assert_close(out, ref)


@pytest.mark.parametrize("options", [{"s_tmin": float("nan")}, {"s_tmax": float("nan")}, {"s_noise": -1.0},
                                     {"s_churn": -1.0}])
def test_nan_bounds_and_negative_churn_or_noise_stay_refused_before_any_model_call(options):
    x = start(14.6146)
    model = Counting()
    with pytest.raises(InvalidInput):
        ours.sample_euler(model, x, kd.get_sigmas_karras(6, 0.0292, 14.6146), disable=True,
                          **{"s_churn": 1.0, **options})
    assert model.calls == 0


# ----------------------------------------------------------------------------------------------------
# 5. Helpers: a rising ancestral step, a tensor ρ


@pytest.mark.parametrize("sigma_from, sigma_to", [(1.0, 2.0), (0.0, 2.0), (0.5, 0.5000001), (-0.5, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_a_rising_ancestral_step_is_k_diffusions(sigma_from, sigma_to, dtype, eta):
    args = (torch.tensor(sigma_from, dtype=dtype), torch.tensor(sigma_to, dtype=dtype))
    ours_down, ours_up = ours.get_ancestral_step(*args, eta=eta)
    ref_down, ref_up = kd.get_ancestral_step(*args, eta=eta)  # σ_up = min(σ_to, NaN) = σ_to, σ_down = 0
    for a, b in ((ours_down, ref_down), (ours_up, ref_up)):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert ours.get_ancestral_step(sigma_from, sigma_to, eta) == (0.0, sigma_to)  # k-diffusion: a complex σ_up


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_falling_step_from_a_negative_sigma_is_k_diffusions(dtype):
    """Only σ_to² > σ_from² (or σ_from = 0) makes k-diffusion's root NaN: from σ = −2 to 1 it is an ordinary step."""
    args = (torch.tensor(-2.0, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    for a, b in zip(ours.get_ancestral_step(*args), kd.get_ancestral_step(*args)):
        assert a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-6, atol=0)
    assert ours.get_ancestral_step(-2.0, 1.0) == pytest.approx(kd.get_ancestral_step(-2.0, 1.0), rel=1e-12)


@pytest.mark.parametrize("fn", ["get_sigmas_karras", "get_sigmas_polyexponential"])
@pytest.mark.parametrize("rho", [torch.tensor(7.), torch.tensor(3.0, dtype=torch.float64), torch.tensor(7),
                                 torch.tensor(2.5, dtype=torch.float16)], ids=["f32", "f64", "int", "f16"])
@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_a_0d_tensor_rho_gives_k_diffusions_schedule(fn, rho, n):
    out = getattr(ours, fn)(n, 0.0292, 14.6146, rho=rho)
    ref = getattr(kd, fn)(n, 0.0292, 14.6146, rho=rho)
    assert out.dtype == ref.dtype and torch.equal(out, ref)


@pytest.mark.parametrize("rho", [torch.tensor(0.), torch.tensor([7.]), torch.tensor(True), torch.tensor(float("nan"))])
def test_a_tensor_rho_that_is_not_one_positive_number_is_refused(rho):
    with pytest.raises((InvalidInput, TypeError)):
        ours.get_sigmas_karras(5, 0.0292, 14.6146, rho=rho)


@pytest.mark.parametrize("sigmas", [(80.0, 0.002), (14.6, 0.03), (5.0, 2.0), (1.0, 1e-4), (14.6146, 14.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("eta", [1.0, 0.5, 1.7])
def test_get_ancestral_step_on_tensors_is_k_diffusions_arithmetic(sigmas, dtype, eta):
    # the drop-in computed in Python floats: float32 (80, 0.002) gave σ_down = 5e-8 where k-diffusion's is 0 (so
    # `if sigma_down == 0` took the other branch), (14.6, 0.03) 6.164e-05 where k-diffusion's is 6.198e-05
    cases = [tuple(torch.tensor(s, dtype=dtype) for s in sigmas), (torch.tensor(sigmas[0], dtype=dtype), sigmas[1]),
             (sigmas[0], torch.tensor(sigmas[1], dtype=dtype))]
    for args in cases:
        got, want = ours.get_ancestral_step(*args, eta=eta), kd.get_ancestral_step(*args, eta=eta)
        for a, b in zip(got, want):
            b = torch.as_tensor(b, dtype=a.dtype)  # k-diffusion's min() may hand back σ_to as the Python float
            assert a.dtype == dtype and torch.equal(a, b), (args, got, want)
    assert ours.get_ancestral_step(*sigmas, eta) == kd.get_ancestral_step(*sigmas, eta)  # Python floats: the same


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpm_2"])
@pytest.mark.parametrize("window", [{}, {"s_tmin": 0.3, "s_tmax": 3.0}])
def test_infinite_churn_runs_as_k_diffusion_caps_it(name, window):
    # refused as "must be a finite number" before; k-diffusion's γ = min(s_churn / n, √2 − 1) takes s_churn = inf
    x = start(14.6146)
    sigmas = kd.get_sigmas_karras(6, 0.0292, 14.6146)
    seen, ref_seen = [], []
    out, calls, after = run(ours, name, x, sigmas, s_churn=float("inf"), callback=seen.append, **window)
    ref, ref_calls, ref_after = run(kd, name, x, sigmas, s_churn=float("inf"), callback=ref_seen.append, **window)
    assert calls == ref_calls and torch.equal(after, ref_after)
    hats = [float(d["sigma_hat"]) for d in seen]
    assert hats == pytest.approx([float(d["sigma_hat"]) for d in ref_seen], rel=1e-6)
    assert hats[0] == pytest.approx(float(sigmas[0]) * 2 ** 0.5, rel=1e-6) or window  # γ = √2 − 1, the cap
    assert_close(out, ref)
    tensor_inf, *_ = run(ours, name, x, sigmas, s_churn=torch.tensor(float("inf")), **window)
    assert torch.equal(tensor_inf, out)


@pytest.mark.parametrize("kwargs", [{"beta_d": torch.tensor(19.9)}, {"beta_min": torch.tensor(0.5, dtype=torch.float64)},
                                    {"eps_s": torch.tensor(1e-2)}, {"beta_d": torch.tensor(10)}])
def test_get_sigmas_vp_takes_0d_tensor_arguments_as_k_diffusion_does(kwargs):
    # a 0-d tensor beta_d was refused (InvalidType), where k-diffusion and the other get_sigmas_* take it
    got, want = ours.get_sigmas_vp(7, **kwargs), kd.get_sigmas_vp(7, **kwargs)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, want, rel=2e-4)  # k-diffusion's exp(·) − 1 in float32 (docs/kdiffusion.md)


@pytest.mark.parametrize("beta_d", [torch.tensor([19.9]), torch.tensor(True), torch.tensor(float("nan"))])
def test_get_sigmas_vp_refuses_a_tensor_that_is_not_one_real_number(beta_d):
    with pytest.raises((InvalidInput, TypeError)):
        ours.get_sigmas_vp(5, beta_d=beta_d)

"""Option values that overflowed or divided by zero inside a run or a schedule, refused at the boundary before any
model call, each naming the value, the rule and the fix: s_noise above the σ limit of a float32 state, dpm_adaptive
tolerances below the state's resolution, σ-valued options above the schedule's σ limit (restart's sigma_max, unipc's
final_sigma), dpmpp_sde's r below float32's unit roundoff, and the flow schedules' shift underflowing to 0 (mu, and
flow_dynamic's line through (base_seq_len, base_shift), (max_seq_len, max_shift))."""
import math

import pytest
import torch

import samplers
from samplers.core.errors import InvalidInput, InvalidOption
from samplers.core.validate import largest_sigma

SIG = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
FROM_INF = torch.cat([torch.tensor([math.inf], dtype=SIG.dtype), SIG[1:]])
FLOW = samplers.RectifiedFlow(shift=3.0)
TOP32 = largest_sigma(torch.float32)  # 9.22e18
MIN_R = torch.finfo(torch.float32).eps / 2  # dpmpp_sde's smallest r: float32's unit roundoff, 5.96e-8


class Counter:
    """A denoiser that counts its calls (x0 = x/(1 + σ²): finite everywhere, inf included)."""

    def __init__(self):
        self.n = 0

    def __call__(self, x, sigma, **kw):
        self.n += 1
        return x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)


def x0(dtype=torch.float32):
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype) * 10


def refused(name, *needles, sigmas=SIG, error=InvalidOption, dtype=torch.float32, **options):
    """The run is refused with ``error`` before any model call, its message holding every one of ``needles``."""
    model = Counter()
    with pytest.raises(error) as caught:
        samplers.sample(name, model, x0(dtype), sigmas, disable=True, **options)
    assert model.n == 0, f"{name} called the model {model.n} times before refusing"
    message = str(caught.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def runs(name, sigmas=SIG, dtype=torch.float32, **options):
    model = Counter()
    out = samplers.sample(name, model, x0(dtype), sigmas, disable=True, **options)
    assert model.n > 0 and bool(torch.isfinite(out).all())
    return out


# --- s_noise: the noise's multiplier, at most the σ limit of a float32 state --------------------------------------

@pytest.mark.parametrize("name,extra", [("euler_ancestral", {}), ("ddpm", {}), ("dpmpp_2m_sde", {}),
                                        ("euler", {"s_churn": 1.0})])
def test_s_noise_past_the_float32_sigma_limit_is_refused_before_any_call(name, extra):
    # before: a bare RuntimeError ("value cannot be converted to type float without overflow") after a model call, or
    # (euler with churn) every step run and a NonFiniteError blaming fp16 overflow in the model
    refused(name, "s_noise = 1e+39", "s_noise <= 9.22e+18", "near 1", s_noise=1e39, seed=0, **extra)


def test_s_noise_past_the_limit_is_refused_from_sigma_inf_too():
    refused("euler_ancestral", "s_noise = 1e+20", "s_noise <=", sigmas=FROM_INF, s_noise=1e20, seed=0)


@pytest.mark.parametrize("name,extra", [("euler_ancestral", {}), ("ddpm", {}), ("dpmpp_2m_sde", {}),
                                        ("euler", {"s_churn": 1.0})])
def test_s_noise_at_the_limit_still_runs(name, extra):
    runs(name, s_noise=TOP32, seed=0, **extra)


# --- dpm_adaptive: tolerances the state cannot resolve --------------------------------------------------------------

@pytest.mark.parametrize("rtol,atol", [(1e-30, 1e-30), (1e-300, 0.0)])
def test_dpm_adaptive_tolerances_below_the_state_resolution_are_refused(rtol, atol):
    # before: NonFiniteError blaming the model after 3 calls (the error ratio over such a tolerance overflows float32)
    refused("dpm_adaptive", f"rtol={rtol!r}", f"atol={atol!r}", "torch.float32", "give rtol or atol >= 5.96e-08",
            "float64 latents", rtol=rtol, atol=atol)


def test_dpm_adaptive_tolerance_refused_from_sigma_inf_and_for_half_latents():
    # from σ = inf the sampler's checks run before the first step's model call; fp16 latents keep a float32 state
    refused("dpm_adaptive", "rtol=1e-30", "torch.float32", sigmas=FROM_INF, rtol=1e-30, atol=1e-30)
    refused("dpm_adaptive", "rtol=1e-30", "torch.float32", dtype=torch.float16, rtol=1e-30, atol=1e-30)


def test_dpm_adaptive_tolerance_check_follows_the_state_dtype():
    # 1e-10 is below float32's unit roundoff, above float64's: one refused, the other's checks pass (probed with a
    # budget of one attempt, so the run stops at its step cap, not the tolerance)
    refused("dpm_adaptive", "rtol=1e-10", rtol=1e-10, atol=1e-10)
    with pytest.raises(samplers.core.errors.StepLimitError):
        samplers.sample("dpm_adaptive", Counter(), x0(torch.float64), SIG, disable=True, rtol=1e-10, atol=1e-10,
                        max_steps=1)


def test_dpm_adaptive_one_tolerance_at_the_resolution_still_runs():
    runs("dpm_adaptive", rtol=1e-6, atol=0.0)


# --- σ-valued options: the schedule's σ limit (largest_sigma of the state's dtype) --------------------------------

def test_restart_sigma_max_past_the_limit_is_refused_before_any_call():
    # before: OverflowError (34, 'Numerical result out of range') after 6 model calls
    refused("restart", "(4, 1, 0.1, 1e+300)", "sigma_max = 1e+300", "torch.float32", "9.22e+18",
            "give a sigma_max below it", restart=((4, 1, 0.1, 1e300),), seed=0)
    refused("restart", "sigma_max = 1e+20", sigmas=FROM_INF, restart=((4, 1, 0.1, 1e20),), seed=0)


def test_restart_sigma_max_limit_is_the_state_dtypes():
    runs("restart", restart=((4, 1, 0.1, TOP32),), seed=0)
    runs("restart", dtype=torch.float64, restart=((4, 1, 0.1, 1e100),), seed=0)
    refused("restart", "torch.float64", dtype=torch.float64, restart=((4, 1, 0.1, 1e300),), seed=0)


@pytest.mark.parametrize("name", ["unipc_bh1", "unipc_bh2"])
def test_unipc_final_sigma_past_the_limit_is_refused_before_any_call(name):
    # before: NonFiniteError blaming the model after 4 calls
    refused(name, "final_sigma = 1e+300", "torch.float32", "9.22e+18", "leave final_sigma out", final_sigma=1e300)
    refused(name, "final_sigma = 1e+20", sigmas=FROM_INF, final_sigma=1e20)


def test_unipc_final_sigma_at_the_limit_still_runs():
    runs("unipc_bh1", final_sigma=TOP32)
    runs("unipc_bh1", final_sigma=0.001)


@pytest.mark.parametrize("r", [1e-300, 1e-8])
def test_dpmpp_sde_r_below_float32_unit_roundoff_is_refused_before_any_call(r):
    # before: NonFiniteError blaming the model after 7 calls (1e-300), or a run whose 1/(2r) weighs rounding (1e-8)
    refused("dpmpp_sde", f"r = {r:g}", "r >= 5.96e-08", "pass r >= 5.96e-08", r=r, seed=0)


def test_dpmpp_sde_r_at_the_bound_still_runs():
    from samplers.core.validate import DPMPP_SDE_MIN_R
    assert DPMPP_SDE_MIN_R == MIN_R
    runs("dpmpp_sde", r=MIN_R, seed=0)
    runs("dpmpp_sde", r=2.0, seed=0)  # above 1 (ComfyUI's node allows up to 100): unchanged


# --- flow schedules: a shift that underflows to 0, flow_dynamic's line --------------------------------------------

def _schedule_refused(error, *needles, **kw):
    with pytest.raises(error) as caught:
        samplers.get_sigmas(**kw)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_flow_mu_whose_shift_underflows_is_refused():
    # before: a bare ZeroDivisionError
    _schedule_refused(InvalidInput, "mu = -1000", "underflows to 0", "mu >= -745", "0.5-1.2",
                      name="flow", n=4, native=FLOW, mu=-1000.0)


@pytest.mark.parametrize("base,top", [(256, 256), (4096, 256)])
def test_flow_dynamic_seq_lens_out_of_order_are_refused(base, top):
    # before: a bare ZeroDivisionError (equal)
    _schedule_refused(InvalidOption, f"max_seq_len = {top}", f"base_seq_len = {base}", "pass a max_seq_len above",
                      name="flow_dynamic", n=4, native=FLOW, image_seq_len=300, base_seq_len=base,
                      max_seq_len=top)


@pytest.mark.parametrize("kw,needles", [
    ({"max_shift": -1e5}, ("max_shift = -100000", "underflows to 0", "base_shift=0.5, max_shift=1.15")),
    ({"max_shift": 1e5}, ("max_shift = 100000", "overflows")),
    ({"base_shift": math.inf}, ("base_shift must be a finite number",)),
    ({"max_seq_len": math.nan}, ("max_seq_len must be a finite number",)),
])
def test_flow_dynamic_shift_that_is_not_finite_and_positive_is_refused(kw, needles):
    # before: ZeroDivisionError (max_shift=-1e5), or other errors raised inside the schedule
    _schedule_refused(InvalidOption, *needles, name="flow_dynamic", n=4, native=FLOW, image_seq_len=300, **kw)


def test_flow_schedules_in_range_are_unchanged():
    flux = samplers.get_sigmas("flow_dynamic", 4, native=FLOW, image_seq_len=300)
    mu = 300 * (1.15 - 0.5) / (4096 - 256) + 0.5 - (1.15 - 0.5) / (4096 - 256) * 256
    assert torch.equal(flux, samplers.get_sigmas("flow", 4, native=FLOW, mu=mu))

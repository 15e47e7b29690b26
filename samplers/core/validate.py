"""Validation at the boundary: the rules every sampler option, seed, step count and schedule value must meet.

The rules are data (:data:`OPTION_RULES`, by option name, for whichever samplers have that option) and are checked
once, in :func:`samplers.core.run.run_sampler`, before the first model call. A sampler may still check what only it
knows (its own ``order`` range, say) before its loop. Every failure names the value, the rule and the fix.
"""
from __future__ import annotations

import difflib
import math
import numbers
import operator
import sys

import numpy as np
import torch

from .errors import InvalidOption, InvalidType, LimitExceeded
from .steps import SDE3_VARIANTS, SOLVER_TYPES


def host_scalar(name: str, value, takes, fix: str):
    """``value`` as the Python number it holds where it is a 0-d tensor whose dtype ``takes`` accepts, as
    :func:`integer` reads a 0-d integer tensor; anything else as it is, for the caller's own type check. An option is
    read once, here at the boundary, so the run never reads the tensor; a 0-d tensor on an accelerator (or 'meta') is
    refused, naming ``fix`` (``float(eta)``), rather than read here, which would wait for the device, and one that
    requires grad (in grad mode) is refused, as a schedule that does is (its gradient could not flow)."""
    if not isinstance(value, torch.Tensor) or value.ndim != 0 or not takes(value.dtype):
        return value
    if value.device.type != "cpu":
        raise InvalidType(f"{name} is a tensor on {value.device}; an option is read on the host once, before the run, "
                          f"and reading this one would wait for the device: pass {fix}, a Python number")
    if value.requires_grad and torch.is_grad_enabled():  # read as a number, its gradient would be lost without a word
        raise InvalidType(f"{name} is a tensor that requires grad, but an option is read as a Python number, so no "
                          f"gradient can flow to it; pass {name}.detach() or {fix}")
    return value.item()


def _is_real_dtype(dtype: torch.dtype) -> bool:
    return dtype != torch.bool and not dtype.is_complex


def real(name: str, value, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False, allow_inf: bool = False, what: str = "") -> float:
    """``value`` as a float: a real number (a numpy real, a 0-d real tensor on the CPU: :func:`host_scalar`), never a
    bool, finite unless ``allow_inf``, within [``lo``, ``hi``] (open where asked); ``what``: the rule's words."""
    value = host_scalar(name, value, _is_real_dtype, f"float({name})")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fix = (f"; a tensor is taken only as a 0-d real one: pass float({name})" if isinstance(value, torch.Tensor)
               else "")
        raise InvalidType(f"{name} must be a real number{what}, got {value!r} ({type(value).__name__}){fix}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise InvalidOption(f"{name} must be a finite number{what}, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidOption(f"{name} must be {'>' if lo_open else '>='} {lo:g}{what}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise InvalidOption(f"{name} must be {'<' if hi_open else '<='} {hi:g}{what}, got {v:g}")
    return v


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int (any integral type: int, numpy integer, 0-d integer tensor), never a bool or a float, nor
    a tensor of one or more dimensions (``operator.index`` reads a one-element one, ``tensor([64])``, as 64: as
    :func:`real` refuses it)."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise InvalidType(f"{name} must be an integer, got {value!r}")
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        # the fix names no variable: ``name`` is often a description ("the number of steps"), not one
        raise InvalidType(f"{name} must be an integer, got {value!r} (a tensor of shape {tuple(value.shape)}); a "
                          "tensor is taken only as a 0-d integer one: pass it as an int: int(t) or t.item()")
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() and not value.is_complex():
        value = int(value)
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidType(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if lo is not None and v < lo:
        raise InvalidOption(f"{name} must be an integer >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise LimitExceeded(f"{name} = {v} is more than the limit of {hi}")
    return v


def distinct(name: str, values, why: str) -> list:
    """``values`` as a list, refused where one is listed twice (``why``: what a repeat would do)."""
    values = list(values)
    twice = sorted({repr(v) for v in values if values.count(v) > 1})
    if twice:
        raise InvalidOption(f"{name} lists {', '.join(twice)} more than once ({why}); list each once")
    return values


def nonneg(name, v):
    return real(name, v, lo=0.0)


def nonneg_or_inf(name, v):
    return real(name, v, lo=0.0, allow_inf=True)


def positive(name, v):
    return real(name, v, lo=0.0, lo_open=True)


def unit_open(name, v):
    return real(name, v, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def boolean(name, v):
    """``v`` as True or False: a bool, a numpy bool or a 0-d bool tensor on the CPU (:func:`host_scalar`); never a
    number or a string ("False" is a true string)."""
    v = host_scalar(name, v, lambda dtype: dtype == torch.bool, f"bool({name})")
    if isinstance(v, np.bool_):
        v = bool(v)
    if not isinstance(v, bool):
        raise InvalidType(f"{name} must be True or False, got {v!r}")
    return v


def order_in(lo: int, hi: int):
    def check(name, v):
        v = integer(name, v)
        if not lo <= v <= hi:
            raise InvalidOption(f"{name} must be an integer from {lo} to {hi}, got {v}")
        return v
    return check


def one_of(*choices):
    def check(name, v):
        # by identity or equality with each choice, never by an array's or tensor's own ==, whose truth is ambiguous
        if not isinstance(v, (str, int, float, type(None))) or v not in choices:
            raise InvalidOption(f"{name} must be one of {choices}, got {v!r}")
        return v
    return check


# The narrowest state a run keeps: float32, for float32 latents and for fp16 / bf16 ones (whose state is float32). A
# rule of an option, checked before the run knows its latents' dtype, bounds what must stay finite there.
NARROWEST_STATE = torch.float32


def below_sigma_limit(name: str, value: float, dtype: torch.dtype, fix: str) -> float:
    """A σ-valued option (a restart interval's σ, unipc's final_sigma) that the run steps to, refused where it is above
    the limit :func:`samplers.core.run.read_sigmas` sets the schedule's σ (:func:`largest_sigma` of the state's dtype);
    ``fix``: what to pass instead."""
    top = largest_sigma(dtype)
    if value > top:
        raise InvalidOption(f"{name} = {value:g} is too large for a {dtype} state (σ² must stay finite: σ <= "
                            f"{top:.3g}, the limit of the schedule's σ); {fix}")
    return value


def noise_scale(name, v):
    """``s_noise``: the multiplier of the fresh noise a step draws (σ_up·s_noise·z), >= 0 and at most the limit a σ
    has in the narrowest state (:data:`NARROWEST_STATE`): s_noise·z and s_noise² then stay finite there, as σ·z and
    σ² do (above float32's largest value the product with the noise is not even a float32 number)."""
    v = real(name, v, lo=0.0)
    top = largest_sigma(NARROWEST_STATE)
    if v > top:
        raise InvalidOption(f"{name} = {v:g} is too large: it multiplies the fresh noise each step draws "
                            f"(σ_up·{name}·z), which must stay finite in the run's state, so it has the limit a σ has "
                            f"in a float32 state (the state of float32, fp16 and bf16 latents): {name} <= {top:.3g}; "
                            f"pass an {name} near 1 (1: the sampler's own amount of noise, 0: none)")
    return v


def tolerance_resolution(dtype: torch.dtype) -> float:
    """The finest relative spacing of values in a state of ``dtype``: its unit roundoff, eps/2 (5.96e-8 for
    float32)."""
    return torch.finfo(dtype).eps / 2


def check_tolerances(who: str, rtol: float, atol: float, dtype: torch.dtype, default: str) -> None:
    """An adaptive sampler's ``rtol`` / ``atol``, refused before any model call where both are below the resolution of
    the state's ``dtype`` (:func:`tolerance_resolution`): no value is held that closely, so the step-size control
    measures rounding, not error (and the error ratio over such a tolerance overflows the state). Either one at or
    above it is accepted. ``who``: the sampler, as the message names it; ``default``: its default tolerances. The
    rule of the torchdiffeq adapters' ``check_tolerances``."""
    resolution = tolerance_resolution(dtype)
    if float(rtol) < resolution and float(atol) < resolution:
        raise InvalidOption(f"{who}: rtol={rtol!r} and atol={atol!r} are both below the resolution of the {dtype} "
                            f"state (its unit roundoff, eps/2 = {resolution:.3g}: no value is held closer than that): "
                            "its step-size control cannot measure an error that small and shrinks its steps (or "
                            f"overflows its error estimate) instead; give rtol or atol >= {resolution:.3g} (the "
                            f"default is {default}), or float64 latents for a tighter tolerance")


# dpmpp_sde's smallest r: its combined estimate D + (D(x_r) − D)/(2r) magnifies the rounding of the difference
# D(x_r) − D (about the state's unit roundoff times |D|) by 1/(2r), which outgrows D itself below r = the unit roundoff
# of the narrowest state (5.96e-8 for float32; there the stage at λ + r·h is not resolved by the state either), and
# 1/(2r) overflows float32 from r < 1.5e-39. k-diffusion's usage is r in (0, 1] (its default 1/2).
DPMPP_SDE_MIN_R = torch.finfo(NARROWEST_STATE).eps / 2


def dpmpp_sde_r(name, v):
    v = real(name, v, lo=0.0, lo_open=True, what=" (the stage at λ + r·h)")
    if v < DPMPP_SDE_MIN_R:
        raise InvalidOption(f"{name} = {v:g} is too small: the step weighs the stage's change of the estimate by "
                            f"1/(2·{name}), which magnifies its rounding past the estimate itself below the unit "
                            f"roundoff of a float32 state ({name} >= {DPMPP_SDE_MIN_R:.3g}; 1/(2·{name}) overflows "
                            f"float32 below 1.5e-39); pass {name} >= {DPMPP_SDE_MIN_R:.3g} (the default 0.5, k-diffusion's)")
    return v


# Option rules by name. An option of a sampler that is not listed here is checked by the sampler itself
# (structured options such as ``restart``, ``solver``, ``midpoints``, ``tau_func``, ``options``).
OPTION_RULES = {
    "eta": nonneg,  # the share of fresh noise: 0 is deterministic, 1 the DDPM / ancestral default
    "s_noise": noise_scale,  # the noise's multiplier: at most the limit σ has (largest_sigma of float32)
    "s_churn": nonneg,
    "s_tmin": nonneg,
    "s_tmax": nonneg_or_inf,
    "r": unit_open, "r1": unit_open, "r2": unit_open, "r_1": unit_open, "r_2": unit_open,
    "rtol": nonneg, "atol": nonneg, "h_init": positive, "accept_safety": positive,
    "max_steps": lambda n, v: integer(n, v, lo=1),
    "pcoeff": lambda n, v: real(n, v), "icoeff": lambda n, v: real(n, v), "dcoeff": lambda n, v: real(n, v),
    "ge_gamma": lambda n, v: real(n, v),
    "corrector": boolean, "lower_order_final": boolean, "simple_order_2": boolean,
    "max_order": order_in(1, 4), "max_stage": order_in(1, 3), "predictor_order": order_in(1, 6),
    "corrector_order": order_in(0, 6), "order": order_in(1, 4),  # each sampler narrows its own order range
    "solver_type": one_of(*SOLVER_TYPES), "variant": one_of(*SDE3_VARIANTS),
}
def a_dict(name, v):
    if not isinstance(v, dict):
        raise InvalidType(f"{name} must be a dict (the run writes its statistics into it), got {v!r}")
    return v


def a_callable(name, v):
    if not callable(v):
        raise InvalidType(f"{name} must be a function, got {v!r} ({type(v).__name__})")
    return v


def callable_value(name: str, fn, args: tuple, signature: str, *, lo: float | None = None, lo_open: bool = False,
                   rule: str = "") -> float:
    """``fn(*args)`` as a float, for a user function option (``noise_scaler``, ``tau_func``) evaluated before the first
    model call on the values the run will pass it: a call that raises TypeError (the wrong number of arguments), a
    result that is not a real number, NaN / Inf, or one below ``lo`` (at ``lo`` with ``lo_open``) is refused with
    InvalidOption naming the option, the arguments and the value. ``signature``: how the option is called, e.g.
    ``"tau_func(sigma, sigma_next)"``; ``rule``: the rule's words for the message."""
    at = f"{name}({', '.join(f'{float(a):g}' for a in args)})"
    try:
        value = fn(*args)
    except TypeError as e:
        raise InvalidOption(f"{at} raised TypeError: {e}; {name} must be a function called as {signature} that "
                            "returns a real number") from e
    if isinstance(value, (str, bytes, bool)) or isinstance(value, complex):
        v = None
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = None
    if v is None:
        raise InvalidOption(f"{at} returned {value!r} ({type(value).__name__}); {name} must return a real number "
                            f"(a float){rule and '; ' + rule}")
    if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))):
        raise InvalidOption(f"{at} = {v!r}; {name} must return a finite number"
                            + (f" {'>' if lo_open else '>='} {lo:g}" if lo is not None else "")
                            + f" at every σ of the run{rule and '; ' + rule}")
    return v


def numbers_list(name, v, lo=None, lo_open=False, whole=False):
    """A list or tuple of numbers (integers with ``whole``), each >= ``lo`` (> with ``lo_open``); never a string."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise InvalidType(f"{name} must be a list of numbers, got {v!r}")
    return [integer(f"{name}[{i}]", x, lo=lo) if whole else real(f"{name}[{i}]", x, lo=lo, lo_open=lo_open)
            for i, x in enumerate(v)]


def step_ratios(name, v):
    """One r in (0, 1) per step, or None for a first-order step; never a string."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise InvalidType(f"{name} must be a list with one r in (0, 1) (or None) per step, got {v!r}")
    return [None if r is None else unit_open(f"{name}[{i}]", r) for i, r in enumerate(v)]


def sigma_interval(name, v):
    """(σ_hi, σ_lo): two numbers, σ_hi > σ_lo >= 0 (σ_hi may be inf)."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or len(v) != 2:
        raise InvalidType(f"{name} must be a pair (sigma_hi, sigma_lo), got {v!r}")
    hi, lo = real(f"{name}[0]", v[0], lo=0.0, allow_inf=True), real(f"{name}[1]", v[1], lo=0.0)
    if not hi > lo:
        raise InvalidOption(f"{name} = {v!r}: sigma_hi (first) must be above sigma_lo (second)")
    return v


OPTION_RULES.update({
    "euler_at_final": boolean, "final_denoise": boolean, "variable_steps": boolean, "through_schedule": boolean,
    # euler_ancestral's step where η > 1 caps σ_up at σ_next: k-diffusion's noise (True) or ComfyUI's none (False)
    "noise_at_zero_down": boolean,
    # er_sde's integrals: the registry's Gauss-Legendre, or ComfyUI's 200-point Riemann sum
    "quadrature": one_of("gauss_legendre", "riemann"),
    "accept_safety": lambda n, v: real(n, v, lo=0.0, lo_open=True, hi=1.0),
    "pcoeff": nonneg, "icoeff": nonneg, "dcoeff": nonneg,  # PID step-size gains (k-diffusion: 0, 1, 0)
    "info": a_dict, "tau_func": a_callable, "noise_scaler": a_callable, "sde_interval": sigma_interval,
    "prior_sigmas": lambda n, v: numbers_list(n, v, lo=0.0, lo_open=True),
    # step indices, each once (a repeat disables nothing more); their range: unipc
    "disable_corrector": lambda n, v: distinct(n, numbers_list(n, v, lo=0, whole=True),
                                               "a step's corrector is disabled once"),
    "step_r": lambda n, v: step_ratios(n, v),
    # unipc: the σ a schedule ending in 0 ends at instead (ComfyUI's 0.001); below its last positive σ: unipc
    "final_sigma": positive,
    # ddim / plms: x in and out as the VP state x/√(1 + σ²) (A1111's timestep samplers' "DDIM" / "PLMS")
    "vp_state": boolean,
    "midpoints": lambda n, v: numbers_list(n, v, lo=0.0, lo_open=True),
})
def sa_lower_order_final(name, v):
    """SA-Solver's ``lower_order_final``: False, True (diffusers' rule) or "comfyui" (ComfyUI's)."""
    if not (v is True or v is False or v == "comfyui"):
        raise InvalidOption(f"{name} must be True, False or 'comfyui' (True: diffusers' SASolverScheduler's lower orders "
                            f"at the end; 'comfyui': ComfyUI's sample_sa_solver's), got {v!r}")
    return v


# Where one sampler's option of a shared name takes other values: (sampler, option) -> rule.
SAMPLER_OPTION_RULES = {("seeds_2", "solver_type"): one_of("phi_1", "phi_2"),
                        ("sa_solver", "lower_order_final"): sa_lower_order_final,
                        ("sa_solver_pece", "lower_order_final"): sa_lower_order_final,
                        # k-diffusion's sample_dpmpp_sde takes any r > 0 (ComfyUI's node: 0-100); r >= 1 puts the
                        # stage at or past σ_next; below DPMPP_SDE_MIN_R its 1/(2r) weight magnifies rounding
                        ("dpmpp_sde", "r"): dpmpp_sde_r,
                        # k-diffusion's sample_lms takes any order (its quadrature is exact for each)
                        ("lms", "order"): lambda n, v: integer(n, v, lo=1),
                        # r = 1 is the exponential Heun method (ComfyUI's exp_heun_2_x0): its stage lands on σ_next
                        ("seeds_2", "r"): lambda n, v: real(n, v, lo=0.0, hi=1.0, lo_open=True),
                        # its flow-time split t_down = t_next·(1 + (t_next/t − 1)·η) leaves [0, t_next] above η = 1
                        ("euler_ancestral_rf", "eta"): lambda n, v: real(n, v, lo=0.0, hi=1.0),
                        # TCD's γ: the intermediate point s = (1 − γ)·t lies between 0 and t
                        ("tcd", "eta"): lambda n, v: real(n, v, lo=0.0, hi=1.0),
                        ("deis", "mode"): one_of("rhoab", "tab"),
                        # "diffusers": the weights as DEISMultistepScheduler rounds them (the shim's default)
                        ("deis", "weights"): one_of("exact", "diffusers"),
                        # "diffusers": the weights as SASolverScheduler computes them in float32 (the shim's default)
                        ("sa_solver", "weights"): one_of("exact", "diffusers"),
                        ("sa_solver_pece", "weights"): one_of("exact", "diffusers")}


def _not_read_with_step_r(get):
    if get("step_r") is not None:
        return ("with step_r given", "step_r gives every step its own r (None: a first-order step), so r is never "
                "read; put the r you want into step_r, or leave step_r out to use r on every step")
    return None


def _not_read_without_an_r(get):
    step_r = get("step_r")
    if step_r is not None and all(r is None for r in step_r):
        return ("with every step_r None", "every step is then a first-order step, which has no second node for "
                "solver_type to weigh, so it is never read; leave solver_type out, or give a step an r")
    return None


def _not_read_below_order_2(get):
    if get("predictor_order") == 1 and get("corrector_order") <= 1:
        return ("with predictor_order=1 and corrector_order<=1", "the simplified weights are those of an order-2 "
                "predictor or corrector step, which these orders never take, so it is never read; leave "
                "simple_order_2 out, or raise an order to 2 or more")
    return None


def _not_read_with_tau_func(option):
    def why(get):
        if get("tau_func") is not None:
            what = "eta (τ inside sde_interval)" if option == "eta" else "sde_interval (where τ = eta)"
            return ("with tau_func given", f"τ is tau_func(sigma, sigma_next) wherever tau_func is given, so {what} "
                    "is never read; make tau_func return the τ you want, or leave tau_func out to use eta and "
                    "sde_interval")
        if option == "sde_interval" and get("eta") == 0:
            return ("with eta=0", "τ is eta inside sde_interval and 0 outside it, so with eta=0 τ is 0 on every step "
                    "(the PF-ODE) and the interval is never read; pass eta > 0 for noise inside it, or leave "
                    "sde_interval out")
        return None
    return why


def _not_read_at_order_1(order: str, why: str):
    """An option (``lower_order_final``, ``variable_steps``) that only changes steps of order 2 or more, given
    where ``order`` is 1 (``why``: what it would do)."""
    def rule(get):
        if get(order) == 1:
            return (f"with {order}=1", f"{why}, and every step of order 1 is already first order, so it is never "
                    f"read; leave it out, or pass {order} >= 2")
        return None
    return rule


_LOWERS = "it lowers the order of the last steps"


def _sa_lower_order_final(get):
    # diffusers' rule caps the corrector at n − i + 2 >= 3 and ComfyUI's at n − i >= 1 (its predictor at n − 1 − i,
    # which is 0 only on a last step to σ = 0: the denoise, which has no order): orders 1 are never lowered
    if get("predictor_order") == 1 and get("corrector_order") <= 1:
        return ("with predictor_order=1 and corrector_order<=1", f"{_LOWERS}, which at these orders are already "
                "first order (or no corrector), so it is never read; leave lower_order_final out, or raise an order "
                "to 2 or more")
    return None


# η below 1 by more than the rounding of get_ancestral_step: there σ_up <= η·σ_next·(1 + 3ε) < σ_next·(1 − ε/2), so
# σ_down = √(σ_next² − σ_up²) > 0 on every step to σ_next > 0 (measured: 1 − 2ε is the first η below 1 at which no
# step of 400000 random ones, σ_next/σ from 1e-20 to 1, gets σ_down = 0; at η = 1 every step with σ_next/σ below
# about 2e-8 does)
ANCESTRAL_ETA_MARGIN = 4 * sys.float_info.epsilon


def _not_read_without_a_zero_down(get):
    eta = get("eta")
    if eta < 1 - ANCESTRAL_ETA_MARGIN:
        return (f"with eta={eta!r}", "it decides the noise of a step whose σ_down is 0 while σ_next > 0, which only "
                "η >= 1 gives (at η = 1 a step with σ_next/σ below about 2e-8, by rounding; above 1 where η caps "
                "σ_up at σ_next): below 1 no step has one, so it is never read; leave noise_at_zero_down out, or "
                "pass eta >= 1")
    return None


def _not_read_at_gamma_0(get):
    if get("eta") == 0:
        return ("with eta=0", "TCD's inner point is s = (1 − γ)·t on the timestep table, which at γ = 0 is the "
                "step's own σ_next (DDIM), so the table is never read; leave native out, or pass eta > 0")
    return None


def _not_read_at_stage_1(get):
    if get("max_stage") == 1:
        return ("with max_stage=1", "only stages 2 and 3 take the integrals quadrature computes, so it is never read; "
                "leave quadrature out, or pass max_stage=2 or 3")
    return None


def _not_read_in_tab_mode(get):
    if get("mode") == "tab" and get("weights") != "exact":
        return ("with mode='tab'", "DEIS-tAB has its own weights (ComfyUI's sums); weights picks those of the ρAB "
                "mode, so it is never read; leave weights out, or use mode='rhoab'")
    return None


# Options a sampler never reads where another option is given: (sampler, option) -> rule(get), where ``get(key)`` is
# the run's value of an option (the caller's, else the default) and the rule returns (the other option, why the option
# would do nothing and the fix), or None where it is read. An option the caller passes that the run would not read
# is refused, not dropped (as unipc refuses disable_corrector with corrector=False). Only what the options decide is
# here: what depends on the schedule (restart entries, pndm midpoints) each sampler checks before its loop.
IGNORED_OPTIONS = {("dpmpp_2s", "r"): _not_read_with_step_r,
                   ("dpmpp_2s", "solver_type"): _not_read_without_an_r,
                   ("sa_solver", "simple_order_2"): _not_read_below_order_2,
                   ("sa_solver_pece", "simple_order_2"): _not_read_below_order_2,
                   ("sa_solver", "eta"): _not_read_with_tau_func("eta"),
                   ("sa_solver", "sde_interval"): _not_read_with_tau_func("sde_interval"),
                   ("sa_solver_pece", "eta"): _not_read_with_tau_func("eta"),
                   ("sa_solver_pece", "sde_interval"): _not_read_with_tau_func("sde_interval"),
                   ("er_sde", "quadrature"): _not_read_at_stage_1,
                   ("deis", "weights"): _not_read_in_tab_mode,
                   # mode is read at order 1: tAB's Euler step σ_next − σ and ρAB's exp(log σ_next) − exp(log σ) differ
                   # by rounding (ComfyUI's bits; float64 latents show it)
                   ("deis", "lower_order_final"): _not_read_at_order_1("order", _LOWERS),
                   ("unipc_bh1", "lower_order_final"): _not_read_at_order_1("order", _LOWERS),
                   ("unipc_bh2", "lower_order_final"): _not_read_at_order_1("order", _LOWERS),
                   ("ipndm", "variable_steps"): _not_read_at_order_1("max_order", "it gives the steps of order 2 "
                                                                     "and more step-ratio weights"),
                   ("sa_solver", "lower_order_final"): _sa_lower_order_final,
                   ("sa_solver_pece", "lower_order_final"): _sa_lower_order_final,
                   ("euler_ancestral", "noise_at_zero_down"): _not_read_without_a_zero_down,
                   ("tcd", "native"): _not_read_at_gamma_0}


def unread(sampler: str, key: str, options: dict, defaults: dict) -> tuple[str, str] | None:
    """Why the run of ``sampler`` with ``options`` (the rest at ``defaults``, the sampler's) would not read option
    ``key``: ``(context, why)`` by its :data:`IGNORED_OPTIONS` rule, or None where it is read."""
    rule = IGNORED_OPTIONS.get((sampler, key))
    return rule(lambda k: options.get(k, defaults.get(k))) if rule is not None else None


def drop_unread(sampler: str, options: dict, defaults: dict, keep=()) -> dict:
    """``options`` without those the run of ``sampler`` would not read (:func:`unread`), but for the keys in
    ``keep`` (the caller's own, which :func:`check_options` refuses instead). For the options a label or a tool sets
    whatever the run's other options are (ComfyUI's er_sde quadrature at max_stage=1, a diffusers config's
    lower_order_final at solver_order=1, TCD's table at γ = 0): nobody passed them, so they are left out, not
    refused. ``defaults``: the sampler's options' defaults."""
    return {key: value for key, value in options.items()
            if key in keep or unread(sampler, key, options, defaults) is None}


def closest(key, valid) -> str:
    """``key`` as an error names it, with the closest of ``valid`` where one is close: "'etaa' (did you mean 'eta'?)"."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def _unknown(spec, key, value) -> str:
    """An unknown option ``key`` as the refusal names it: with the option it is a key of where the sampler has one
    (``'step_size' is a key of options=: options={'step_size': 0.01}``), else with the closest of the sampler's
    options, else with the closest key of such an option (``'stepsize' (did you mean options={'step_size': ...}?)``)."""
    for option, keys in spec.option_keys.items():
        if key in keys:
            shown = repr(value) if len(repr(value)) <= 40 else "..."
            return f"{key!r} (a key of {option}=, not an option: pass {option}={{{key!r}: {shown}}})"
    named = closest(key, spec.options)
    if named != repr(key):
        return named
    for option, keys in spec.option_keys.items():
        close = difflib.get_close_matches(str(key), keys, n=1)
        if close:
            return f"{key!r} (did you mean {option}={{{close[0]!r}: ...}}?)"
    return named


def check_options(spec, options: dict) -> dict:
    """Unknown options (with the valid ones and the closest), then each known option's rule, then the combinations:
    the churn window, rtol / atol, and an option the others make unread (:data:`IGNORED_OPTIONS`). Returns the
    options as their rules read them (a numpy or 0-d tensor number as the Python number it was checked as), which is
    what the sampler runs with: a value passes the checks and the run as one thing."""
    valid = spec.options
    unknown = [k for k in options if k not in valid]
    if unknown:
        hint = "; ".join(_unknown(spec, k, options[k]) for k in unknown)
        listed = ", ".join(sorted(valid)) if valid else "none"
        raise InvalidOption(f"{spec.name} has no option {hint}; its options are: {listed}")
    checked = dict(options)
    for key, value in options.items():
        if value is None:  # None stands for "the default" only where the default is None
            if valid[key] is not None:
                raise InvalidOption(f"{spec.name}: {key}=None is not a value of {key} (its default is "
                                    f"{valid[key]!r}); leave {key} out for the default, or give a value")
            continue
        rule = SAMPLER_OPTION_RULES.get((spec.name, key), OPTION_RULES.get(key))
        if rule is not None:
            read = rule(key, value)
            if isinstance(read, (bool, int, float)) and read is not value:  # np.True_ runs as True
                checked[key] = read
    # the churn window only matters where there is churn (k-diffusion callers pass s_tmin / s_tmax from settings
    # whatever s_churn is)
    if ("s_tmin" in options or "s_tmax" in options) and options.get("s_churn", valid.get("s_churn")) != 0:
        lo, hi = options.get("s_tmin", valid.get("s_tmin")), options.get("s_tmax", valid.get("s_tmax"))
        if lo is not None and hi is not None and lo > hi:
            raise InvalidOption(f"s_tmin = {lo:g} is above s_tmax = {hi:g}; churn applies for s_tmin <= σ <= s_tmax")
    if {"rtol", "atol"} & set(valid):
        rtol, atol = options.get("rtol", valid.get("rtol")), options.get("atol", valid.get("atol"))
        if rtol == 0 and atol == 0:
            raise InvalidOption(f"{spec.name}: rtol and atol are both 0, so no step is ever accepted; set at least one "
                                "of them > 0")
    # an option given where the run's other options mean it is never read
    for key, value in options.items():
        found = unread(spec.name, key, options, valid)
        if found is not None:
            context, why = found
            raise InvalidOption(f"{spec.name}: {key}={value!r} {context}: {why}")
    return checked


def largest_sigma(dtype: torch.dtype) -> float:
    """The largest finite σ a run may use in a state of ``dtype``: σ² must be finite there (the conversions and
    the VP coefficients square it)."""
    return math.sqrt(torch.finfo(dtype).max) / 2


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (CUDA: free device memory; CPU: MemAvailable), or None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_allocation(nbytes: int, what: str, device: torch.device | str = "cpu", fix: str = "") -> None:
    """Refuse a request whose estimated memory is more than the device has free (names the size and the fix)."""
    free = available_memory(torch.device(device))
    if free is not None and nbytes > free:
        raise LimitExceeded(f"{what} needs about {nbytes / 2**30:.1f} GiB but {torch.device(device)} has "
                            f"{free / 2**30:.1f} GiB free" + (f"; {fix}" if fix else ""))


def same_value(a, b) -> bool:
    """Whether two option values are the same value (``a is b``, or ``a == b`` as one bool; a comparison that gives no
    single bool — a tensor of several elements, an array — is not known to be the same)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - any value without a truth value for ==
        return False

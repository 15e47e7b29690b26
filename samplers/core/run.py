"""The boundary every sampler call goes through: validate once, then run a loop that never syncs.

`run_sampler` turns the public k-diffusion call into a prepared one:
- ``sigmas`` is read to Python floats once (the only read of the schedule) and validated;
- the state is kept in float32 (or the caller's higher precision) even when the model runs in fp16/bf16;
- ``model`` becomes ``model(x, sigma_float)``, which builds the per-item sigma tensor and checks the
  output shape (metadata only, no device read);
- an infinite first sigma (flow models from t = 1, zero-terminal-SNR schedules) is stepped exactly;
- non-finite results are detected once after the loop (or at every model call in debug mode).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm, trange

from . import noise as noise_mod, wrapped
from .errors import InvalidInput, InvalidOption, InvalidType, NonFiniteError
from .conversion import (check_output_device, model_dtype, model_input, prepare_times, refuse_non_tensor_output,
                         state_dtype as state_dtype_for)
from .validate import check_options, largest_sigma, same_value

_DEBUG = contextvars.ContextVar("samplers_debug", default=False)
# the progress bar of a run from σ = inf, opened before its first step (taken outside the sampler's loop) and
# handed to the sampler's :func:`progress`, so that the bar counts every step of the schedule
_BAR = contextvars.ContextVar("samplers_progress_bar", default=None)


@contextlib.contextmanager
def debug(enabled: bool = True):
    """Check every model output for NaN/Inf as it happens (one device sync per model call).

    Off by default so the sampling loop stays free of host synchronisation; the result is still checked
    once after the loop.
    """
    token = _DEBUG.set(enabled)
    try:
        yield
    finally:
        _DEBUG.reset(token)


def _sigma_value(s) -> float:
    """One σ of a sequence: a real number (a 0-d real tensor too), never a bool or a string parsed as one."""
    if isinstance(s, torch.Tensor) and s.ndim == 0 and not s.is_complex() and s.dtype != torch.bool:
        return float(s)
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real):
        raise InvalidType(f"sigmas must hold real numbers, got {s!r} ({type(s).__name__})")
    return float(s)


def refuse_meta_sigmas(sigmas) -> None:
    """A 'meta' schedule has a shape and no values: refused by name (metadata only), not a NotImplementedError from the
    first read of it (:func:`read_sigmas`, or a Brownian tree's range computed before it)."""
    if (isinstance(sigmas, torch.Tensor) and sigmas.is_meta) or (isinstance(sigmas, (list, tuple)) and any(
            isinstance(s, torch.Tensor) and s.is_meta for s in sigmas)):
        raise InvalidInput("sigmas is on the 'meta' device, which holds no values to sample with; pass a tensor with "
                           "data (e.g. on 'cpu' or 'cuda': samplers.get_sigmas(...) builds one) or a list of floats")


def refuse_grad_sigmas(sigmas) -> None:
    """A schedule that requires grad (a tensor, or a tensor in a sequence), while grad mode is on, is refused: the run
    reads the schedule to Python floats once (design.md, "The boundary and the hot loop"), so no gradient can reach it,
    and a ``backward()`` through the run would leave its ``.grad`` None, silently, with an optimiser skipping it
    (metadata only). Under ``torch.no_grad()`` (the k-diffusion drop-in's functions) nothing is recorded, so nothing is
    lost."""
    if not torch.is_grad_enabled():
        return
    items = [sigmas] if isinstance(sigmas, torch.Tensor) else sigmas if isinstance(sigmas, (list, tuple)) else ()
    if any(isinstance(s, torch.Tensor) and s.requires_grad for s in items):
        raise InvalidInput("sigmas requires grad, but a run reads the schedule to Python floats once, so no gradient "
                           "can flow to it (its .grad would stay None after backward()); pass sigmas.detach() (the "
                           "gradient through x and the model is kept), or learn a schedule with "
                           "samplers.schedules.optimise.optimise_schedule, or fit a solver whose nodes are "
                           "differentiable (samplers.fitted, docs/fitted.md)")


def _half_precision(sigmas) -> str | None:
    """The half-precision dtype a schedule was given in (a float16 / bfloat16 tensor, a float16 numpy array, or such
    a first element of a sequence), where an inf may be an overflow; None otherwise (metadata only)."""
    first = sigmas if isinstance(sigmas, (torch.Tensor, np.ndarray)) else next(iter(sigmas), None)
    dtype = getattr(first, "dtype", None)
    return str(dtype) if dtype in (torch.float16, torch.bfloat16, np.float16) else None


def read_sigmas(sigmas, state_dtype: torch.dtype = torch.float64, least: int = 2) -> list[float]:
    """Validate a schedule and return it as Python floats (the one read of it per call); one that requires grad is
    refused (:func:`refuse_grad_sigmas`), as reading it would drop its gradient. ``least``: the fewest values taken
    (1: :func:`samplers.initial_latent`'s start alone, ``[σ_0]``, checked as a schedule's first value is)."""
    refuse_meta_sigmas(sigmas)
    refuse_grad_sigmas(sigmas)
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1:
            raise InvalidInput(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        if not (sigmas.is_floating_point() or sigmas.dtype in (torch.int32, torch.int64)):
            raise InvalidType(f"sigmas must hold real numbers, got dtype {sigmas.dtype}")
        values = sigmas.detach().to("cpu", torch.float64).tolist()
    else:
        if isinstance(sigmas, (str, bytes, dict, set, frozenset)):
            raise InvalidType(f"sigmas must be a 1-D tensor or a sequence of numbers, got {sigmas!r}")
        try:
            values = [_sigma_value(s) for s in sigmas]
        except InvalidType:
            raise
        except TypeError:
            raise InvalidType(f"sigmas must be a 1-D tensor or a sequence of numbers, got {type(sigmas).__name__}") \
                from None
    if len(values) < least == 1:
        raise InvalidInput("sigmas must hold at least 1 value, got none; pass the schedule the run will take "
                           "(samplers.get_sigmas(name, steps, ...)) or its first σ alone, [sigma_0]")
    if len(values) < least:
        raise InvalidInput(
            f"sigmas must hold at least 2 values (1 step), got {len(values)}; "
            "build one with samplers.get_sigmas(name, steps, ...) and steps >= 1")
    if math.isinf(values[0]) and (half := _half_precision(sigmas)) is not None:
        raise InvalidInput(f"sigmas[0] = inf in a {half} schedule: that is what a value past the dtype's range becomes "
                           f"(a float16 σ above 65504: an overflow), not a start from σ = inf that can be told from one; "
                           "pass the schedule in float32 or float64 (samplers.get_sigmas builds float64; "
                           "sigmas.float()), where an intended σ = inf start stays inf")
    top = largest_sigma(state_dtype)
    for i, s in enumerate(values):
        if math.isnan(s) or s < 0 or (math.isinf(s) and i > 0):
            raise InvalidInput(f"sigmas[{i}] = {s} is invalid: sigmas must be >= 0 and finite "
                               "(only sigmas[0] may be +inf)")
        if math.isfinite(s) and s > top:
            raise InvalidInput(f"sigmas[{i}] = {s:g} is too large for a {state_dtype} state (σ² must stay finite: "
                               f"σ <= {top:.3g}); a start from pure noise is σ = inf, which every sampler steps exactly")
    for i in range(len(values) - 1):
        if not values[i + 1] < values[i]:
            raise InvalidInput(
                f"sigmas must be strictly decreasing, but sigmas[{i}] = {values[i]:g} and "
                f"sigmas[{i + 1}] = {values[i + 1]:g}; flip an ascending schedule with "
                "samplers.schedules.flip and drop repeated values")
    return values


LATENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_latents(x, name: str, what: str) -> None:
    """Latents as a run takes them (``name``: the argument, ``what``: what it holds): a dense floating tensor of a
    latent dtype (not sparse, not nested), a batch dimension first with at least one item, with values (not on the
    meta device)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidType(f"{name} must be a floating-point tensor ({what}), got {got}")
    if x.dtype not in LATENT_DTYPES:  # float8 (no arithmetic of its own) and anything newer: refused, not cast
        raise InvalidType(f"{name} is a {x.dtype} tensor; latents must be float16, bfloat16, float32 or float64 (the "
                          f"state is kept in float32 or float64, and the result returned in the latents' dtype): pass "
                          f"{name}.to(torch.float16) or {name}.float(), and cast the result back yourself if you store "
                          f"{x.dtype}")
    if x.is_nested or x.layout != torch.strided:  # a sparse or nested tensor: torch's own error at the first op on it
        kind = "nested" if x.is_nested else str(x.layout).removeprefix("torch.")
        fix = (f"each item as its own tensor (one run per shape), or {name} padded to one shape "
               f"(torch.nested.to_padded_tensor({name}, 0.0))" if x.is_nested else f"{name}.to_dense()")
        raise InvalidInput(f"{name} is a {kind} tensor; latents must be a dense (strided) tensor, as the samplers "
                           f"compute on every element: pass {fix}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise InvalidInput(f"{name} must have a batch dimension first with at least one item, got shape "
                           f"{tuple(x.shape)}")
    if x.is_meta:  # a shape without values: refused here, not by the first read of it
        raise InvalidInput(f"{name} is on the 'meta' device, which holds no values to sample from; pass a tensor with "
                           "values (on the CPU or an accelerator)")


def check_callback(callback) -> None:
    """A per-step callback: callable, or None."""
    if callback is not None and not callable(callback):
        raise InvalidType(f"callback must be callable (it gets a dict per step) or None, got {type(callback).__name__}")


def check_call(model, x, extra_args, callback, disable) -> None:
    """The arguments every sampler shares (the k-diffusion signature), checked before anything runs."""
    if not callable(model):
        raise InvalidType(f"model must be a callable denoiser model(x, sigma, **extra_args), got {type(model).__name__}")
    check_latents(x, "x", "the starting latent at sigmas[0]")
    if extra_args is not None and not (isinstance(extra_args, Mapping) and all(isinstance(k, str) for k in extra_args)):
        raise InvalidType(f"extra_args must be a mapping (a dict) of the model's keyword arguments by name, or None; "
                          f"got {type(extra_args).__name__}")
    check_callback(callback)
    # k-diffusion's signature: its samplers hand disable to tqdm, which reads its truth (disable=1, a numpy bool)
    if disable is not None and not isinstance(disable, (bool, numbers.Integral, np.bool_)):
        raise InvalidType(f"disable must be True, False or None (or an integer or numpy bool, read as tqdm reads it), "
                          f"got {disable!r}")


def run_sampler(spec, model, x, sigmas, extra_args, callback, disable, options, *, start_checked: bool = False):
    """The public call of ``spec``'s sampler. ``start_checked``: the caller has already run :func:`check_start` on
    this very ``x`` (a replay of one run, as the diffusers shim's ``step`` replays it: its start is read once a run,
    not once a step); every other check still runs."""
    check_call(model, x, extra_args, callback, disable)
    options = check_options(spec, options)  # as checked: np.int64(2) or a 0-d tensor runs as the 2 it was read as
    out_dtype = x.dtype
    with model_dtype(out_dtype):  # fp16 / bf16 latents: the dtype the model is called in
        return _run(spec, model, x, sigmas, extra_args, callback, disable, options, state_dtype_for(out_dtype),
                    out_dtype, start_checked)


def _run(spec, model, x, sigmas, extra_args, callback, disable, options, state_dtype, out_dtype,
         start_checked: bool = False):
    values = read_sigmas(sigmas, state_dtype)
    x = x.to(state_dtype)
    if not start_checked:
        check_start(x)
    denoise = Denoise(model, x, extra_args or {})

    params = spec.options
    # the caller's own draws (a callable or PredrawnNoise), which no check reads for NaN/Inf: a suspect if the run ends so
    callers_noise = callable(options.get("noise_sampler"))
    if "noise_sampler" in params:
        options = dict(options)
        # a run that draws noise (η > 0 where the sampler has η, else a stochastic kind; churn) is refused a noise kind
        # it cannot build before the model runs (s_noise = 0 still draws: the draw is multiplied by 0)
        options["noise_sampler"] = noise_mod.for_run(options.get("noise_sampler"), options.pop("seed", None), x,
                                                     values, draws=draws_noise(spec, options))
        noise_mod.refuse_foreign_path_churn(options["noise_sampler"], _churn(spec, options)[0])
        if draws_on_steps(spec, options):  # a caller's Brownian tree must hold the steps' draws
            noise_mod.check_schedule_draws(options["noise_sampler"], values)

    offset, bar = 0, None
    from_inf = math.isinf(values[0])
    if spec.before_run is not None:
        # the sampler's own checks first (a fitted solver's nodes at σ = inf or outside a timestep table: its file
        # is the cause, not the schedule)
        spec.before_run(model, values, options)
    if from_inf and spec.from_infinity:
        check_infinite_sigma(model)
    # the run's time inputs, before the loop (a denoiser on a timestep table refuses a grid outside it here)
    prepare_times(model, values, x.shape[0], x.dtype, x.device)
    if from_inf and not spec.from_infinity:
        if len(values) > 2:
            check_the_rest(spec, x, values[1:], options)
        bar = tqdm(total=len(values) - 1, disable=disable, leave=False)  # every step, the first one too
        try:
            x = step_from_infinity(spec, model, denoise, x, values, params, options, callback)
        except BaseException:
            bar.close()
            raise
        bar.update(1)
        values, offset = values[1:], 1
    token = _BAR.set(bar)
    try:
        if len(values) > 1:
            cb = _shift_callback(callback, offset)
            x = spec_implementation(spec)(denoise, x, values, None, cb, disable, **options)
    finally:
        _BAR.reset(token)
        if bar is not None:
            bar.close()
    if offset and isinstance(options.get("info"), dict):  # info["nfe"]: every model call, the step from σ = inf too
        options["info"]["nfe"] = options["info"].get("nfe", 0) + 1

    def produced_nonfinite() -> NonFiniteError:
        # a number set away from its default (by the caller or a label) may be a gain that drives the steps out of
        # range where no single value is invalid (ge_gamma = 1e30)
        tuned = any(isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(params.get(k), (int, float))
                    and not isinstance(params.get(k), bool) and v != params[k] for k, v in options.items())
        return NonFiniteError(
            f"{spec.name} produced NaN/Inf. Run inside `with samplers.debug():` to stop at the first model "
            "call that returns non-finite values; common causes are fp16 overflow in the model (try bfloat16 "
            "or float32) or a model that cannot be evaluated at the first sigma"
            + (" (here sigma = inf, where an eps or score model gives no x0: start at a finite sigma, or wrap it "
               "with samplers.to_denoiser, which refuses it before any call)" if from_inf else "")
            + ("; or an option set away from its default that drives the steps out of range where no single value "
               "is invalid (a large gain such as ge_gamma: try values nearer the defaults)" if tuned else "")
            + ("; or the noise_sampler given, whose draws are not read for NaN/Inf (a pre-drawn or callable one: "
               "check torch.isfinite on what it returns)" if callers_noise else "") + ".")

    return to_result_dtype(x, out_dtype, spec.name, values[-1], produced_nonfinite)


def to_result_dtype(x: torch.Tensor, out_dtype: torch.dtype, name: str, sigma_end: float,
                    nonfinite: Callable[[], Exception] | None = None) -> torch.Tensor:
    """The state ``x`` in the caller's dtype, checked with one read after the cast (a NaN / Inf of the state stays one
    in it). ``nonfinite``: the error for a state that is itself not finite, raised where it is not (None: the state is
    known finite, and only a cast to a narrower dtype — float16 / bfloat16 latents, the state float32 — is checked,
    where the cast itself may overflow to inf)."""
    out = x.to(out_dtype)
    narrows = out_dtype != x.dtype and torch.finfo(out_dtype).max < torch.finfo(x.dtype).max
    if (nonfinite is not None or narrows) and not bool(torch.isfinite(out).all()):
        if nonfinite is not None and (not narrows or not bool(torch.isfinite(x).all())):
            raise nonfinite()
        top = float(x.abs().max())
        raise NonFiniteError(
            f"{name}'s result is finite in its {x.dtype} state (|x| up to {top:.4g}) but overflows {out_dtype} (largest "
            f"{torch.finfo(out_dtype).max:.4g}) when cast to the latents' dtype: the run ends at sigma = {sigma_end:g}, "
            "where the latent is still mostly noise of that scale; end the schedule at a lower sigma (a schedule to 0 "
            "gives a data-scale result), or pass the latents in float32 (x.float()) for a float32 result")
    return out


def spec_implementation(spec):
    return spec.fn.implementation


class Denoise:
    """``model(x, sigma_float)`` for the implementations, output shape checked (metadata only).

    A denoiser with a host-float entry point ``denoise_at(x, sigma: float, **extra_args)`` (``to_denoiser``'s,
    the guidance wrappers) gets σ as the Python float, so its conversion coefficients cost no tensor ops;
    any other callable gets the k-diffusion call with a per-item σ tensor.
    """

    def __init__(self, model, like: torch.Tensor, extra_args: dict):
        self.model = model
        self.extra_args = extra_args
        self.shape = like.shape
        self.nfe = 0
        self.at = getattr(model, "denoise_at", None)
        # the diffusers shim's replay writes a latent the pipeline replaced into the state on purpose
        self.writes_state = bool(getattr(model, "writes_state", False))

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        # a model that writes into its input changes the run's state (the sampler reads x after the call) and, at the
        # first call, the caller's own latents: refused by its _version (host metadata; an inference tensor has none)
        version = None if x.is_inference() or self.writes_state else x._version
        if self.at is not None:
            out = self.at(x, sigma, **self.extra_args)
        else:
            out = self.model(model_input(x), x.new_full((x.shape[0],), sigma), **self.extra_args)
        if version is not None and x._version != version:
            raise InvalidInput(f"the model wrote into its input x in place (at sigma = {sigma:g}); x is the sampler's "
                               "state, which it reads again after the call (and at the first call the latents you "
                               "passed): do not write into x (x = x * c, not x *= c), or clone it first "
                               "(x = x.clone())")
        self.nfe += 1
        refuse_non_tensor_output(out)
        if out.shape != x.shape:
            raise InvalidInput(
                f"the model returned {tuple(out.shape)} for an input of shape {tuple(x.shape)}; a denoiser must return "
                "the denoised x0 estimate with the same shape as x (wrap eps/v/flow models with "
                "samplers.to_denoiser)")
        if not out.is_floating_point():
            raise InvalidType(f"the model returned a {out.dtype} tensor; a denoiser returns floating-point x0 "
                              "estimates")
        check_output_device(out, x)
        if out.dtype != x.dtype:  # an fp16 / bf16 model: its estimate joins the float32 state
            out = out.to(x.dtype)
        if _DEBUG.get() and not bool(torch.isfinite(out).all()):
            raise NonFiniteError(f"the model returned NaN/Inf at sigma = {sigma:g}")
        return out


def _shift_callback(callback, offset: int):
    if callback is None or offset == 0:
        return callback

    def shifted(info):
        callback({**info, "i": info["i"] + offset})

    return shifted


# why a model that says it cannot be evaluated at σ = inf cannot, where neither it nor a denoiser it wraps says why
UNSAID_INFINITE_SIGMA = ("an eps- or score-prediction model carries no signal information at zero SNR, and a model "
                         "whose schedule ends at a finite sigma_max was never trained there")


def check_infinite_sigma(model) -> None:
    """Refuse a run from σ = inf on a model that says it cannot be evaluated there, naming why (its prediction, or
    its schedule's finite σ_max: :func:`samplers.core.conversion.infinite_sigma_refusal`), else both reasons."""
    if wrapped.supports_infinite_sigma(model) is False:  # the model's, or a denoiser's it wraps
        why = wrapped.infinite_sigma_refusal(model) or UNSAID_INFINITE_SIGMA
        raise InvalidInput(f"this model cannot be evaluated at sigma = inf: {why}; start the schedule at a finite "
                           "sigma, e.g. samplers.schedules.set_first(sigmas, sigma_max)")


class _Probed(BaseException):
    """The probe's model or noise was called: the sampler's checks before its loop have passed. A BaseException, so
    that no ``except Exception`` in a sampler or adapter takes it for the model's error."""


def _probe(*_args, **_kwargs):
    raise _Probed


def check_start(x: torch.Tensor) -> None:
    """One read of the starting latent, before any model call: a NaN/Inf start is the caller's, not the model's."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError("the starting latent x holds NaN/Inf; check how it was built (noise · sigmas[0], or "
                             "the unit noise itself when sigmas[0] is inf)")


def draws_noise(spec, options: dict) -> bool:
    """Whether a run of ``spec`` with ``options`` draws noise: η > 0 where the sampler has η, else a stochastic kind;
    churn (s_noise = 0 still draws: the draw is multiplied by 0)."""
    params = spec.options
    churn = options.get("s_churn", params.get("s_churn")) if "s_churn" in params else 0
    return _eta_draws(spec, options) or bool(churn)


def draws_on_steps(spec, options: dict) -> bool:
    """Whether the steps of a run of ``spec`` with ``options`` draw noise over their intervals [σ_next, σ] (η > 0 where
    the sampler has η, else a stochastic kind). Not churn, whose draws a Brownian path answers apart from it
    (:func:`samplers.core.noise.churn_noise`), nor restart's, whose main steps are Heun's: it draws over its restart
    intervals only, and checks them itself (``samplers.sde.solvers._check_restart_noise``)."""
    return "restart" not in spec.options and _eta_draws(spec, options)


def _eta_draws(spec, options: dict) -> bool:
    params = spec.options
    eta = options.get("eta", params.get("eta")) if "eta" in params else None
    return spec.kind != "ode" if eta is None else eta != 0


# what a noise-option refusal offers besides the option that would make the sampler draw
_DRAWING = ", or use an ancestral / SDE sampler (e.g. euler_ancestral, dpmpp_2m_sde)"
# the options that only shape the noise a run draws, and what each does there
_NOISE_ONLY = {"noise_sampler": "chooses how the noise is drawn", "s_noise": "scales the noise drawn",
               "s_tmin": "bounds the σ window where churn adds noise", "s_tmax": "bounds the σ window where churn adds noise"}


def unread_noise(spec, options: dict, given: set, label: str) -> dict:
    """The noise-only options (``noise_sampler``, ``s_noise``; the churn window ``s_tmin`` / ``s_tmax``) the caller
    passed (``given``), each at a value other than its default, that a run with ``options`` never reads — where it
    draws no noise (``draws_noise``: ``eta = 0``, or an ODE sampler without churn), or has no churn for the window —
    each with why and what would make it read: {key: message}. An option at its default changes nothing either way
    (A1111 sends ``s_noise = 1``, ``s_tmin = 0``, ``s_tmax = inf`` with every sampler), and one a label implies (the
    SDE labels' ``noise_sampler``) is the label's."""
    valid = spec.options
    churn = options.get("s_churn", valid.get("s_churn")) if "s_churn" in valid else None
    draws = draws_noise(spec, options)
    found = {}
    # (a key given may be gone from options: a ComfyUI / A1111 name drops one at the value its tool runs)
    for key in (k for k in _NOISE_ONLY if k in given and k in options and k in valid
                and not same_value(options[k], valid[k])):
        window = key in ("s_tmin", "s_tmax")
        if draws and not (window and churn == 0):
            continue
        tail = ""
        if churn is not None and churn == 0:
            why, fix = "s_churn = 0: no churn", "s_churn > 0 for churn"
            tail = _DRAWING
        elif "eta" in valid:
            eta = options.get("eta", valid["eta"])
            if "eta" in given:
                why, fix = f"eta = {eta:g}: no noise is added", "eta > 0"
            elif same_value(eta, valid["eta"]):
                why, fix = f"eta = {eta:g} (its default): no noise is added", "eta > 0"
            else:  # the label fixes it: a larger eta there is refused as a contradiction of the label
                why, fix = (f"eta = {eta:g}, which {label!r} sets: no noise is added",
                            f"sampler={spec.name!r} with eta > 0 in place of {label!r}")
        else:
            why, fix = f"{spec.name} is an ODE sampler", "a sampler that draws noise"
            tail = _DRAWING
        found[key] = (f"{spec.name}: {key}={options[key]!r} is not read: this run draws no noise ({why}), and {key} "
                      f"only {_NOISE_ONLY[key]}, so the image would be the one made without it; leave {key} out, or "
                      f"give {fix}{tail}")
    return found


def refuse_unread_noise(spec, options: dict, given: set, label: str) -> None:
    """Raise the first of :func:`unread_noise`'s refusals (one error, the cause), where there is one."""
    for message in unread_noise(spec, options, given, label).values():
        raise InvalidOption(message)


def _churn(spec, options: dict) -> tuple[float, float, float]:
    """A run's ``(s_churn, s_tmin, s_tmax)`` (0 for s_churn where the sampler has no churn)."""
    params = spec.options
    churn = options.get("s_churn", params.get("s_churn")) if "s_churn" in params else 0
    lo, hi = (options.get(k, params.get(k)) for k in ("s_tmin", "s_tmax"))
    return churn, lo, hi


def empty_churn_window(spec, options: dict, sigmas, unit: str = "σ") -> str | None:
    """Why a run of ``spec`` with ``options`` on ``sigmas`` adds no churn although ``s_churn > 0`` (None: it adds some
    or asks none): no step of the schedule starts at a σ within [s_tmin, s_tmax], where EDM's churn applies
    (:func:`samplers.core.steps.churn`; the σ = inf start, stepped exactly, never churns). The image would be the one
    made without ``s_churn`` — a window given in other units (timesteps, t) than σ, or below a cut img2img schedule.
    ``unit``: what ``sigmas`` are (ComfyUI's rules on a flow model step its flow time t)."""
    churn, lo, hi = _churn(spec, options)
    if not churn:
        return None
    starts = [s for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas))[:-1]
              if math.isfinite(s)]
    if not starts or any(lo <= s <= hi for s in starts):
        return None
    return (f"{spec.name}: s_churn={churn:g} adds no noise on this run: no step of its schedule starts within the "
            f"churn window [s_tmin, s_tmax] = [{lo:g}, {hi:g}] (its steps start at {unit} from {max(starts):.4g} down "
            f"to {min(starts):.4g}), so the image would be the one made without it; widen the window to hold some of "
            f"those {unit} (it is in {unit}, not timesteps), or leave s_churn out")


def churn_beyond(spec, options: dict, sigmas, top: float, unit: str) -> str | None:
    """Why a run of ``spec`` with ``options`` on ``sigmas`` cannot churn as asked (None: it can): a step whose churn
    (:func:`samplers.core.steps.churn`: σ̂ = σ·(1 + γ), γ = min(s_churn / steps, √2 − 1) within [s_tmin, s_tmax])
    raises ``unit`` above ``top``, where the model is not defined — ComfyUI's rules on a flow model churn the flow
    time t, and t̂ > 1 lies beyond the pure noise (ComfyUI evaluates its network there anyway)."""
    churn, lo, hi = _churn(spec, options)
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    if not churn or len(values) < 2:
        return None
    gamma = min(churn / (len(values) - 1), math.sqrt(2) - 1)
    for i, s in enumerate(values[:-1]):
        if lo <= s <= hi and s * (1 + gamma) > top:
            return (f"{spec.name}: s_churn={churn:g} raises step {i}'s {unit} = {s:.4g} to {s * (1 + gamma):.4g}, "
                    f"above {top:g}, where the model is not defined (ComfyUI extrapolates its network there, which "
                    f"this library does not reproduce); keep the churn window [s_tmin, s_tmax] (in {unit}) below "
                    f"{top / (1 + gamma):.4g}, or use the registry name, which churns in σ")
    return None


class _NoiseProbe:
    """The probe run's noise sampler: stops the run at its first draw. ``stands_for`` is the run's own, whose kind a
    sampler's check may read (:func:`samplers.core.noise.path_kind`: restart refuses a Brownian path), never drawn."""

    def __init__(self, stands_for):
        self.stands_for = stands_for

    def __call__(self, *_args, **_kwargs):
        raise _Probed


def check_the_rest(spec, x, rest: list[float], options: dict) -> None:
    """A run from σ = inf takes its first step (:func:`step_from_infinity`, a model call) before the sampler sees the
    rest of the schedule, so the sampler's own checks of that schedule (a restart entry, pndm midpoints, unipc's
    disable_corrector, step_r's length) would come after a model call. They come before its first model call or
    noise draw, so they are run here first, on a model and a noise sampler that stop the run at their first call."""
    probed = {**options, "noise_sampler": _NoiseProbe(options["noise_sampler"])} if "noise_sampler" in options else options
    try:
        spec_implementation(spec)(_probe, x, rest, None, None, True, **probed)
    except _Probed:
        pass


def check_step_from_infinity(spec, options: dict) -> None:
    """What :func:`step_from_infinity` refuses in ``options`` (checked before its model call)."""
    if options.get("noise_scaler") is not None:
        raise InvalidInput(
            f"{spec.name} with your noise_scaler cannot start at sigma = inf: how much fresh noise its first step "
            "draws depends on how the noise scale grows at infinity, which a function cannot tell us; start the "
            "schedule at a finite sigma (samplers.schedules.set_first(sigmas, sigma_max)) or use the default "
            "noise_scaler")


def step_from_infinity(spec, model, denoise, x, values, params, options, callback):
    """The exact first step from sigma = inf, where ``x`` is the unit noise itself.

    From sigma = inf the only well-defined step in sigma is the first-order one (the t = 1 flow-Euler /
    zero-SNR DDIM step): x_1 = D(x, inf) + sigma_1 * n. Every sampler takes it, then runs its own rule on
    the remaining, finite schedule. Stochastic samplers split sigma_1 into a kept part and fresh noise by
    their eta, as ancestral sampling does in the limit: sigma_up = eta * sigma_1 (a sampler without an eta option
    by ``spec.eta_from_infinity``, its own step's limit as sigma_0 → ∞: 1 for ddpm's posterior and er_sde; a sampler
    whose eta is the SDE's η by a function of its options: all of sigma_1 fresh for η > 0, as its own step keeps
    (sigma_1/sigma_0)^η → 0 of the start, ``steps.sde_eta_from_infinity``).
    """
    check_infinite_sigma(model)
    check_step_from_infinity(spec, options)
    denoised = denoise(x, math.inf)
    sigma_next = values[1]
    if callable(spec.eta_from_infinity):  # its own step's limit, read off its options (steps.sde_eta_from_infinity)
        eta = spec.eta_from_infinity({**params, **options}, sigma_next)
    else:
        eta = float(options.get("eta", params["eta"])) if "eta" in params else spec.eta_from_infinity
    eta = min(eta, 1.0)  # the ancestral split caps σ_up at σ_next, which is η = 1 here
    x_next = denoised
    if sigma_next > 0:
        keep = math.sqrt(1.0 - eta * eta)
        x_next = denoised + sigma_next * keep * x
        if eta > 0:
            s_noise = float(options.get("s_noise", params.get("s_noise", 1.0)))
            x_next = x_next + options["noise_sampler"](math.inf, sigma_next) * (s_noise * eta * sigma_next)
    if callback is not None:
        callback({"x": x_next, "i": 0, "sigma": math.inf, "sigma_hat": math.inf, "denoised": denoised})
    return x_next


def progress(sigmas: list[float], disable):
    """The step indices of a run, with a progress bar unless ``disable``. In a run from σ = inf the bar opened
    before its first step (taken before the sampler's loop) goes on counting here, so it shows every step."""
    bar = _BAR.get()
    if bar is None:
        return trange(len(sigmas) - 1, disable=disable, leave=False)
    _BAR.set(None)  # this loop's only: a run nested in its steps opens its own
    return _counted(bar, len(sigmas) - 1)


def _counted(bar, steps: int):
    for i in range(steps):
        yield i
        bar.update(1)


def report(callback: Callable | None, x, i, sigma, sigma_hat, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})

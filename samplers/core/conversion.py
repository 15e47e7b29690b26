"""Prediction types and the one conversion from a native model to the canonical denoiser D(x, σ).

Native coordinates: ``x_t = a·x0 + b·n`` with (a, b) from the model's :class:`~samplers.core.native.NoiseSchedule`.
Canonical coordinates: ``x = x_t / a``, ``σ = b / a``, and D(x, σ) ≈ E[x0 | x]. Each prediction type is one
pair of pure functions, ``to_x0`` and ``from_x0`` (2n conversions, not n² pairwise ones):

| prediction | network output | x0 from it |
|---|---|---|
| ``eps``   | ε                                   | (x_t − b·ε) / a |
| ``x0``    | x0 (diffusers "sample")             | the output |
| ``v``     | v = â·ε − b̂·x0, â = a/r, b̂ = b/r, r = √(a²+b²) | â·x_t/r − b̂·v |
| ``flow``  | u = n − x0 in rectified-flow coordinates with the same SNR | x_t/(a+b) − t·u, t = b/(a+b) |
| ``score`` | ∇ log p(x_t)                         | (x_t + b²·score) / a |
| ``edm``   | F of EDM's preconditioning (σ_data) | c_skip·x + c_out·F, input c_in·x, VE only |
| ``edm_v`` | diffusers' EDM ``v_prediction``     | c_skip·x − c_out·F, as ``edm`` otherwise |

At σ = inf the sampler state is the unit noise itself (x_t = n); ``eps`` and ``score`` carry no
information about x0 there, and a model whose schedule ends at a finite σ_max (an ordinary VP table, VE) was never
trained there: both say so (``supports_infinite_sigma = False``), and ``infinite_sigma_refusal`` says which
(:func:`infinite_sigma_refusal`).

Every row is affine in x at a fixed σ: D(x, σ) = c_skip·x + c_out·model(c_in·x, t). Inside the registry loop
σ is a Python float, so :meth:`Denoiser.denoise_at` computes t, c_in, c_skip and c_out on the host
(:func:`scalings_at` and the schedule's ``time_at``) and a model call costs, besides the model, one fill
(the time input; none on the run's σ grid, whose time inputs the registry builds in one tensor before its loop:
:meth:`Denoiser.prepare_times`), one scale (the model input; none when c_in = 1, where the model gets the state itself and
must not write into it) and x0 = c_skip·x + c_out·output: one fused add when c_skip is 0, 1 or c_in (eps,
x0, score, flow on a rectified-flow schedule, where a + b = 1 to rounding: :data:`FLOW_UNIT_SUM`), two otherwise
(v, EDM, flow on a VP schedule: no single aten op forms α·x + β·y). The k-diffusion call ``D(x, sigma_tensor)``
stays for external callers (per-item σ) and gives the same result to float rounding.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from typing import Callable

import numpy as np
import torch

from . import wrapped
from .transfer import to_device
from .native import VE, NoiseSchedule, VPDiscrete
from .errors import InvalidInput, InvalidOption, InvalidType

PREDICTIONS = ("eps", "x0", "v", "flow", "score", "edm", "edm_v")
EDM_PREDICTIONS = ("edm", "edm_v")  # the predictions that take EDM's σ_data
# The dtype a registry run calls the model in: the caller's latents' fp16 / bf16 (as k-diffusion calls a model, in
# the latents' dtype) while the state and these conversions stay float32; None (the state's dtype) otherwise.
MODEL_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar("samplers_model_dtype",
                                                                                default=None)


def state_dtype(latents: torch.dtype) -> torch.dtype:
    """The dtype a run's state is kept in: float32 for fp16 / bf16 latents, the latents' own otherwise."""
    return torch.float32 if latents in (torch.float16, torch.bfloat16) else latents


@contextlib.contextmanager
def model_dtype(latents: torch.dtype):
    """A run's :data:`MODEL_DTYPE` for latents of ``latents``' dtype: that dtype where the state is kept in
    another (fp16 / bf16), none otherwise; reset when the run ends, however it ends."""
    token = MODEL_DTYPE.set(latents if state_dtype(latents) != latents else None)
    try:
        yield
    finally:
        MODEL_DTYPE.reset(token)


def model_input(x: torch.Tensor, own: torch.dtype | None = None) -> torch.Tensor:
    """``x`` in the dtype the run calls its model in: ``own``, the model's parameters' where they are known (a
    ``torch.nn.Module`` given to :func:`to_denoiser`), else the run's :data:`MODEL_DTYPE`; x itself otherwise."""
    dtype = own if own is not None else MODEL_DTYPE.get()
    return x if dtype is None or x.dtype == dtype else x.to(dtype)


def parameter_dtype(model) -> torch.dtype | None:
    """The floating dtype of a module's first floating parameter (None for anything else, or none)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None
MAX_PREPARED_TIMES = 4096  # per (batch, dtype, device) of a denoiser: beyond it calls fill their own time input
ALIASES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow", "velocity": "flow",
           "const": "flow"}


def canonical_prediction(prediction: str) -> str:
    if not isinstance(prediction, str):
        raise InvalidType(f"prediction must be a string, one of {PREDICTIONS} (or diffusers' names {tuple(ALIASES)}), "
                          f"got {prediction!r} ({type(prediction).__name__})")
    p = ALIASES.get(prediction, prediction)
    if p not in PREDICTIONS:
        raise InvalidInput(f"unknown prediction type {prediction!r}; use one of {PREDICTIONS} "
                         f"(or diffusers' names {tuple(ALIASES)})")
    return p


def check_sigma_data(prediction: str, sigma_data) -> float:
    """``sigma_data`` for a model of the (canonical) ``prediction``: a finite number > 0 for ``edm`` / ``edm_v``
    (0 would make D ≡ 0, a negative one flip its sign); the other predictions do not use it, so there anything but
    the default 1 is refused rather than ignored (an EDM-v model given as ``v`` would run as a plain v model)."""
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, numbers.Real):
        raise InvalidType(f"sigma_data must be a real number (EDM's σ_data, e.g. 0.5), got {sigma_data!r} "
                          f"({type(sigma_data).__name__})")
    value = float(sigma_data)
    if prediction in EDM_PREDICTIONS:
        if not (math.isfinite(value) and value > 0):
            raise InvalidOption(f"sigma_data = {value} for an {prediction!r} model: EDM's σ_data (the data's standard "
                                "deviation in its preconditioning) must be a finite number > 0; pass the model's own "
                                "(EDM and diffusers' EDM schedulers use 0.5)")
        return value
    if value != 1.0:
        raise InvalidOption(f"sigma_data = {value:g} with prediction {prediction!r}: only the EDM-preconditioned "
                            f"predictions {EDM_PREDICTIONS} take sigma_data, and a {prediction!r} model would ignore "
                            "it; for an EDM model use prediction='edm' (diffusers' EDM 'epsilon') or 'edm_v' "
                            "(diffusers' EDM 'v_prediction'), otherwise leave sigma_data out")
    return value


def check_schedule(schedule) -> NoiseSchedule:
    """A model's native noise schedule, refused (InvalidType) where it is not a :class:`NoiseSchedule` object."""
    if not isinstance(schedule, NoiseSchedule):
        raise InvalidType(f"schedule must be the model's native noise schedule, a samplers.core.native schedule "
                          f"(VPDiscrete.from_betas(...), RectifiedFlow(shift=...), VE(...)), got {schedule!r} "
                          f"({type(schedule).__name__})")
    return schedule


def infinite_sigma_refusal(prediction: str, schedule: NoiseSchedule) -> str | None:
    """Why a model of the (canonical) ``prediction`` on ``schedule`` has no value at σ = inf (zero SNR), with what
    would give it one, for the refusals to name; None where it has one (a v / x0 / flow model on a schedule that
    reaches σ = inf: a zero-terminal-SNR table, a rectified flow)."""
    if prediction in ("eps", "score"):
        return (f"an {prediction!r} model carries no information about x0 at zero SNR (a v / x0 / flow model on a "
                "zero-terminal-SNR or flow schedule does)")
    sigma_max = getattr(schedule, "sigma_max", math.inf)
    if math.isinf(sigma_max):
        return None
    table = (" (a model trained to zero terminal SNR: build its table with VPDiscrete.from_betas(..., "
             "rescale_betas_zero_snr=True))" if isinstance(schedule, VPDiscrete) else "")
    return (f"its schedule {schedule!r} ends at sigma_max = {sigma_max:.6g}, not at zero SNR, so the model was never "
            f"trained at sigma = inf{table}")


def to_x0(prediction: str, out, x_t, a, b):
    """x0 from a network output in native coordinates."""
    if prediction == "eps":
        return (x_t - b * out) / a
    if prediction == "x0":
        return out
    if prediction == "v":
        r = (a * a + b * b).sqrt()
        return (a * x_t / r - b * out) / r
    if prediction == "flow":
        r = a + b
        return x_t / r - (b / r) * out
    if prediction == "score":
        return (x_t + b * b * out) / a
    raise InvalidInput(f"to_x0 does not handle {prediction!r}")


def from_x0(prediction: str, x0, x_t, a, b):
    """The network output a perfect model of each type gives, from x0 and x_t (inverse of :func:`to_x0`)."""
    if prediction == "eps":
        return (x_t - a * x0) / b
    if prediction == "x0":
        return x0
    if prediction == "v":
        r = (a * a + b * b).sqrt()
        return (a * x_t / r - r * x0) / b
    if prediction == "flow":
        r = a + b  # x_t / r = (1 − t)·x0 + t·n with t = b / r, and u = n − x0
        return (x_t / r - x0) * (r / b)
    if prediction == "score":
        return -(x_t - a * x0) / (b * b)
    raise InvalidInput(f"from_x0 does not handle {prediction!r}")


def edm_scalings(sigma, sigma_data: float):
    """(c_skip, c_out, c_in) of Karras et al. (2022), Table 1, written to stay finite at σ = inf."""
    inf = torch.isinf(sigma)
    s = torch.where(inf, torch.zeros_like(sigma), sigma)
    norm = torch.rsqrt(s * s + sigma_data**2)
    c_skip = sigma_data**2 * norm * norm
    c_out = torch.where(inf, torch.full_like(sigma, sigma_data), s * sigma_data * norm)
    c_in = torch.where(inf, torch.ones_like(sigma), norm)  # at inf the state is already unit noise
    return c_skip, c_out, c_in


def edm_scalings_at(sigma: float, sigma_data: float) -> tuple[float, float, float]:
    """:func:`edm_scalings` for one Python float."""
    if math.isinf(sigma):
        return 0.0, sigma_data, 1.0
    norm = 1 / math.sqrt(sigma * sigma + sigma_data**2)
    return sigma_data**2 * norm * norm, sigma * sigma_data * norm, norm


# |a + b − 1| up to which a flow model's r = a + b counts as 1: 1/(1+σ) + σ/(1+σ) on a rectified-flow schedule is 1
# only to rounding (at most 1 ulp, 2.2e-16, over 2e5 σ log-uniform in [1e-8, 1e12]; not exactly 1 at a quarter of
# them, where c_skip = c_in/r missed affine's one-op form and cost a multiply more). Taking r = 1 there moves D by
# that rounding; on a VP schedule r = (1 + σ)/√(1 + σ²) is within it only below σ ≈ 5e-16.
FLOW_UNIT_SUM = 2 * 2.0**-52


def scalings_at(prediction: str, a: float, b: float, sigma: float, sigma_data: float = 1.0) -> tuple[float, float, float]:
    """(c_skip, c_out, c_in) as Python floats with D(x, σ) = c_skip·x + c_out·model(c_in·x, t).

    ``a``, ``b``: the native coefficients at σ (``schedule.coefficients_at``). The model input is x_t = a·x,
    or the state itself at σ = inf (c_in = 1); the rest is :func:`to_x0` with x_t written as c_in·x.
    """
    if prediction in ("edm", "edm_v"):  # edm_v: diffusers' EDM v_prediction, c_out negated
        c_skip, c_out, c_in = edm_scalings_at(sigma, sigma_data)
        return c_skip, c_out if prediction == "edm" else -c_out, c_in
    if math.isinf(sigma) and prediction in ("eps", "score"):
        raise InvalidInput(f"an {prediction!r} model carries no information about x0 at sigma = inf (zero SNR); "
                           "start the schedule at a finite sigma or use a v / x0 / flow model")
    c_in = 1.0 if math.isinf(sigma) else a
    if prediction == "eps":
        return 1.0, -b / a, c_in
    if prediction == "x0":
        return 0.0, 1.0, c_in
    if prediction == "v":
        r = math.hypot(a, b)
        return c_in * a / (r * r), -b / r, c_in
    if prediction == "flow":
        r = a + b
        if abs(r - 1.0) <= FLOW_UNIT_SUM:  # a rectified-flow schedule: c_skip = c_in, one fused add (affine)
            return c_in, -b, c_in
        return c_in / r, -b / r, c_in
    if prediction == "score":
        return 1.0, b * b / a, c_in
    raise InvalidInput(f"scalings_at does not handle {prediction!r}")


def affine(x: torch.Tensor, x_in: torch.Tensor, c_skip: float, c_in: float, out: torch.Tensor,
           c_out: float) -> torch.Tensor:
    """c_skip·x + c_out·out in one op where it can be (x_in = c_in·x is already computed), two otherwise."""
    if c_skip == 0:
        out = out.to(x.dtype)
        return out if c_out == 1 else out * c_out
    if c_skip == 1:
        return torch.add(x, out, alpha=c_out)
    if c_skip == c_in:
        return torch.add(x_in, out, alpha=c_out)
    return torch.add(x * c_skip, out, alpha=c_out)


def call_at(denoiser: Callable, x: torch.Tensor, sigma: float, **extra_args) -> torch.Tensor:
    """``D(x, σ)`` for a Python-float σ: the denoiser's host-float entry point ``denoise_at`` when it has one,
    else its k-diffusion call on a per-item σ tensor."""
    at = getattr(denoiser, "denoise_at", None)
    if at is not None:
        return at(x, sigma, **extra_args)
    out = denoiser(model_input(x), x.new_full((x.shape[0],), sigma), **extra_args)
    return out.to(x.dtype) if isinstance(out, torch.Tensor) else out  # a wrong answer is the caller's check's


def prepare_times(denoiser: Callable, sigmas: list[float], batch: int, dtype: torch.dtype,
                  device: torch.device) -> None:
    """Let ``denoiser`` (and the denoisers it wraps, through their own ``prepare_times``) build the time inputs
    of a run's σ grid before the loop, and a denoiser on a timestep table refuse a grid that leaves it. A wrapper
    without the method is looked through (:func:`samplers.core.wrapped.read`: a k-diffusion-style guidance wrapper's
    ``inner_model``, …), so that it does not switch the table's check off; a model with none is left alone."""
    prepare = wrapped.read(denoiser, "prepare_times", callable)
    if prepare is not None:
        prepare(sigmas, batch, dtype, device)


def check_call(x, sigma) -> None:
    """Refuse a k-diffusion call ``D(x, sigma)`` a converted denoiser cannot take, by its shapes: x not a floating
    tensor, σ not a tensor of one σ or one per item ([], [1] or [B]). A wrapper that changes the batch before its
    inner call (guidance's [cond; uncond]) checks the caller's x and σ with it first, so the error names them."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidType(f"the denoiser's x must be a floating-point tensor (the latents), got "
                          f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}: an integer x would "
                          "turn σ into an integer too; cast it (x.float())")
    if not isinstance(sigma, torch.Tensor) or sigma.ndim > 1 or sigma.numel() not in (1, x.shape[0]):
        got = (f"shape {tuple(sigma.shape)}" if isinstance(sigma, torch.Tensor) else type(sigma).__name__)
        raise InvalidInput(f"the denoiser's sigma must be a tensor of one σ or one per item ([] , [1] or "
                           f"[{x.shape[0]}], k-diffusion's call), got {got}; for a Python float σ call "
                           "denoise_at(x, sigma)")


def refuse_non_tensor_output(out) -> None:
    """A model output that is not a tensor (a diffusers output object, a tuple, None), refused as the wrong type (one
    mistake, one error, whether the model is wrapped by :func:`to_denoiser` or called by a run as a denoiser)."""
    if not isinstance(out, torch.Tensor):
        raise InvalidType(f"the model returned {type(out).__name__}, not a tensor; return the prediction itself (a "
                          "diffusers model: call it with return_dict=False and take [0])")


def _checked_output(out, x: torch.Tensor) -> torch.Tensor:
    """The model's output, refused unless it is a floating tensor of the latent's shape (metadata only: no host read).
    A batch-1 or 1-channel output would broadcast to a finite, wrong x0; an integer one would be cast."""
    refuse_non_tensor_output(out)
    if out.shape != x.shape:
        raise InvalidInput(f"the model returned shape {tuple(out.shape)} for latents of shape {tuple(x.shape)}; it must "
                           "predict every latent element (a model that also predicts its variance returns 2× the "
                           "channels: pass a model that returns the first half, e.g. lambda x, t: unet(x, t)[:, :C])")
    if not out.is_floating_point():
        raise InvalidType(f"the model returned a {out.dtype} tensor; its prediction must be floating point: return it "
                          "as a float tensor (e.g. out.float())")
    check_output_device(out, x)
    return out


def check_output_device(out: torch.Tensor, x: torch.Tensor) -> None:
    """The model's output on the latent's device (metadata only), refused otherwise: the sampler's next op on it
    would fail with torch's own device error, or copy it silently back each call."""
    if out.device != x.device:
        raise InvalidInput(f"the model returned its output on {out.device} for latents on {x.device}; it is never "
                           f"moved: return it on the latents' device (the device its input x is on, e.g. "
                           f"out.to(x.device)), or keep the model and the latents on one device")


class Denoiser:
    """A native model seen as the canonical denoiser ``D(x, σ, **extra_args) -> x0``. Build with :func:`to_denoiser`."""

    def __init__(self, model: Callable, prediction: str, schedule: NoiseSchedule, sigma_data: float = 1.0):
        if not callable(model):
            raise InvalidType(f"model must be callable as model(x_t, time, **extra_args), got {type(model).__name__}")
        check_schedule(schedule)
        self.model = model
        self.prediction = canonical_prediction(prediction)
        if self.prediction in EDM_PREDICTIONS and not isinstance(schedule, VE):
            raise InvalidOption(f"prediction {prediction!r} is EDM's preconditioning, whose model takes the input c_in·x "
                                f"in variance-exploding coordinates and its σ as time (VE(sigma_min, sigma_max, 'edm')"
                                f": c_noise = ¼·ln σ); on {type(schedule).__name__} it would be fed that schedule's "
                                "time instead: pass a VE schedule, or the prediction the model was trained with")
        self.schedule = schedule
        self.sigma_data = check_sigma_data(self.prediction, sigma_data)
        # σ = inf (zero SNR) is a point of the model only where its schedule reaches it (zero-terminal-SNR VP, flow),
        # and only a prediction that carries the signal there (not eps / score) gives x0 from it; the refusals
        # (here and run.check_infinite_sigma, through wrappers) name which of the two is missing
        self.infinite_sigma_refusal = infinite_sigma_refusal(self.prediction, schedule)
        self.supports_infinite_sigma = self.infinite_sigma_refusal is None
        self._times: dict = {}  # (batch, dtype, device) -> {σ: time input}, entries never replaced or dropped
        # A model that runs each item more than once per call (DiffusersModel guiding [uncond; cond]) takes its time
        # input already repeated: built here with the rest of the grid rather than concatenated per call.
        self._time_copies = int(getattr(model, "time_copies", 1))
        # a network module is called in its own parameters' dtype (a float32 U-Net with bf16 latents, a bf16 one with
        # float32 latents); any other callable in the latents' dtype (MODEL_DTYPE), as k-diffusion calls a model
        self._module = model if isinstance(model, torch.nn.Module) else None  # read per call: it may be moved later

    def samplers_fingerprint(self) -> str | None:
        """Which model this denoiser is (:func:`samplers.fitted.identity.denoiser_fingerprint`): its native model's
        fingerprint with the prediction type, the noise schedule and σ_data it is read through."""
        from ..fitted.identity import denoiser_fingerprint

        return denoiser_fingerprint(self)

    def _own_dtype(self) -> torch.dtype | None:
        return None if self._module is None else parameter_dtype(self._module)

    def prepare_times(self, sigmas: list[float], batch: int, dtype: torch.dtype, device: torch.device) -> None:
        """Build the time inputs of a run's σ grid before its loop, in one tensor (one op and one asynchronous
        host-to-device copy per run instead of a fill per model call); a call at one of these σ then costs no fill.
        Calls at other σ (a midpoint stage) fill their own, so results never depend on this. An entry, once made,
        is kept for the denoiser's life and never replaced (a captured CUDA graph may point at it); at most
        ``MAX_PREPARED_TIMES`` per batch shape. The model must not write into its time input: a call that does is
        refused (:meth:`_call_model`), and that batch shape's grid dropped.

        On a timestep table (:class:`VPDiscrete`) a grid that evaluates the model outside the table is refused here,
        before the loop (:meth:`VPDiscrete.check_in_table`): its time input would be clamped to the table's end."""
        if isinstance(self.schedule, VPDiscrete):
            self.schedule.check_in_table(sigmas)
        table = self._times.setdefault((batch, dtype, device), {})
        new = [s for s in dict.fromkeys(sigmas)
               if s > 0 and s not in table and (math.isfinite(s) or self.supports_infinite_sigma)]
        new = new[:max(0, MAX_PREPARED_TIMES - len(table))]
        if new:
            with torch.inference_mode(False):  # ordinary tensors: a later run may record autograd through them
                rows = torch.tensor([[self.schedule.time_at(s)] * (batch * self._time_copies) for s in new],
                                    dtype=dtype)
                rows = to_device(rows, device)  # to CUDA from pinned memory, not waiting for the work queued before
            for sigma, row in zip(new, rows.unbind(0)):
                table.setdefault(sigma, row)

    def _time(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        table = self._times.get((x.shape[0], x.dtype, x.device))
        time = table.get(sigma) if table is not None else None
        if time is None:
            time = x.new_full((x.shape[0] * self._time_copies,), self.schedule.time_at(sigma))
        return time

    def _call_model(self, x_in: torch.Tensor, time: torch.Tensor, sigma: float, key, **extra_args):
        """The model on a time input, refused if it wrote into a prepared one (its ``_version``, host metadata, moved):
        that tensor is reused by every later call at this σ, of this run and the next ones, which would all see the
        changed time. The poisoned grid is dropped, so a fixed model on this denoiser gets the right times again."""
        version = time._version
        out = self.model(x_in, time, **extra_args)
        if time._version != version:
            self._times.pop(key, None)
            raise InvalidInput(f"the model wrote into its time input in place (at sigma = {sigma:g}, time "
                               f"{self.schedule.time_at(sigma):g}); the denoiser reuses that tensor for every call at "
                               "this sigma, so later calls would get the changed value: do not write into the time "
                               "input (t = t / 1000, not t /= 1000), or clone it first (t = t.clone())")
        return out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        """D(x, σ) for a per-item σ tensor (k-diffusion's call). fp16 / bf16 latents are converted in float32, as
        k-diffusion's wrappers do (σ² overflows float16 above 256), the model called in the latents' dtype, and
        D returned in float32. A σ on the CPU at which D has no value (NaN, −inf, inf where the model has no value
        there) is refused before the model call (:meth:`_check_host_sigma`); one on the GPU is not read."""
        check_call(x, sigma)
        if not sigma.is_floating_point():
            # the schedule computes the time input in σ's dtype: an int64 σ = 2 reached a VPContinuous network as
            # t = 0 (0.397 for the float 2.0), a VPDiscrete one as timestep 562 (562.29), with no error
            shown = sigma.reshape(-1)[:4].tolist()
            raise InvalidType(f"the denoiser's sigma must be a floating-point tensor, got a {sigma.dtype} tensor "
                              f"{shown}{' …' if sigma.numel() > 4 else ''}: the time input is computed in σ's dtype, "
                              "so an integer σ would reach the model truncated; pass a float tensor (e.g. "
                              "torch.full((B,), 2.0), or sigma.float())")
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        self._check_host_sigma(sigma)
        view = (-1,) + (1,) * (x.ndim - 1)
        half = state_dtype(x.dtype) != x.dtype
        own = self._own_dtype() or (x.dtype if half else None)
        x = x.to(state_dtype(x.dtype))
        s = sigma.reshape(view).to(x.dtype)
        inf = torch.isinf(s)
        time = self.schedule.time(sigma)
        if self.prediction in ("edm", "edm_v"):
            c_skip, c_out, c_in = edm_scalings(s, self.sigma_data)
            out = _checked_output(self.model(model_input(x * c_in, own), time, **extra_args), x).to(x.dtype)
            skip = torch.where(inf, torch.zeros_like(x), c_skip * x)
            return skip + (c_out if self.prediction == "edm" else -c_out) * out
        a, b = self.schedule.coefficients(s)
        x_t = torch.where(inf, x, a * x)  # at σ = inf the state is the noise itself: x_t = n
        out = _checked_output(self.model(model_input(x_t, own), time, **extra_args), x)
        return to_x0(self.prediction, out.to(x.dtype), x_t, a, b)

    def _check_host_sigma(self, sigma: torch.Tensor) -> None:
        """Refuse, before the model call, a σ of a tensor on the CPU at which D has no value (:meth:`_refuse_sigma`:
        NaN, −inf, and σ = inf where the model cannot be evaluated there), as :meth:`denoise_at` refuses it. Read only
        where it costs no device synchronisation: a σ on another device is not read (a registry run checks its σ on
        the host before its loop)."""
        if sigma.device.type != "cpu":
            return
        # read through numpy: a CPU tensor's own memory, which graph.count_host_reads (whose reads would be device
        # synchronisations on a GPU, where this σ is not read) does not count
        values = sigma.detach().to(torch.float64).numpy()
        bad = np.isnan(values) | (values == -math.inf)
        if not self.supports_infinite_sigma:
            bad |= values == math.inf
        if bad.any():
            self._refuse_sigma(float(values[bad][0]))

    def _refuse_sigma(self, value: float) -> None:
        """The refusal of a σ at which D has no value, named with why: NaN (no noise level); −inf; inf on a model
        that cannot be evaluated there (:attr:`infinite_sigma_refusal`: its prediction, or a schedule that ends below
        it), where D was ±inf or NaN, or the network was called at time inf or at the table's last timestep with x as
        if it were unit noise. A negative σ is not refused, on either path: an ODE solver's stage just past σ = 0
        evaluates there (the reference solve of :mod:`samplers.problems`), and the schedule reads it as σ = 0
        (timestep 0 on a VP table)."""
        if value == math.inf:
            raise InvalidInput(f"the denoiser's sigma holds inf, at which it has no value (this model cannot be "
                               f"evaluated at sigma = inf): {self.infinite_sigma_refusal}; start at a finite sigma")
        why = "sigma is a noise level, a number" if math.isnan(value) else "sigma is a noise level, not −inf"
        raise InvalidInput(f"the denoiser's sigma holds {value}, at which it has no value: {why}")

    def denoise_at(self, x: torch.Tensor, sigma: float, **extra_args) -> torch.Tensor:
        """D(x, σ) for one Python-float σ (the registry loop's call): time and scalings on the host.

        The same result as ``self(x, σ-tensor)`` to float rounding; the time input is a tensor of x's dtype,
        as the registry's per-item σ tensor made it. The σ the tensor call refuses on the CPU (NaN, −inf, inf
        where the model has no value there: :meth:`_refuse_sigma`) is refused here too, before the model call.
        """
        if sigma != sigma or sigma == -math.inf or (sigma == math.inf and not self.supports_infinite_sigma):
            self._refuse_sigma(sigma)
        a, b = self.schedule.coefficients_at(sigma)
        c_skip, c_out, c_in = scalings_at(self.prediction, a, b, sigma, self.sigma_data)
        time = self._time(x, sigma)
        x_in = x if c_in == 1 else x * c_in
        out = _checked_output(self._call_model(model_input(x_in, self._own_dtype()), time, sigma,
                                               (x.shape[0], x.dtype, x.device), **extra_args), x)
        return affine(x, x_in, c_skip, c_in, out.to(x.dtype), c_out)


def to_denoiser(model: Callable, prediction: str, schedule: NoiseSchedule, sigma_data: float = 1.0) -> Denoiser:
    """Turn a native model into the denoiser every sampler takes.

    Args:
        model: ``model(x_t, time, **extra_args) -> output`` in the model's native coordinates, where
            ``time`` is what the network was trained on (``schedule.time(σ)``: a fractional timestep index for
            :class:`~samplers.core.native.VPDiscrete`, t·multiplier for :class:`~samplers.core.native.RectifiedFlow`, ...).
        prediction: ``"eps"``, ``"x0"``, ``"v"``, ``"flow"``, ``"score"``, ``"edm"`` (Karras et al.'s F,
            D = c_skip·x + c_out·F: diffusers' EDM ``epsilon``) or ``"edm_v"`` (diffusers' EDM ``v_prediction``:
            c_out negated) (diffusers' names ``epsilon``, ``sample``, ``v_prediction``, ``flow_prediction`` are
            accepted for the others).
        schedule: the model's native noise schedule.
        sigma_data: EDM's σ_data (``edm`` / ``edm_v`` only: a finite number > 0). The other predictions do not
            use it and refuse any value but the default 1.

    Returns:
        ``D(x, sigma, **extra_args)`` with x in VE coordinates (x = x0 + σ·n) and sigma of shape [B].
    """
    return Denoiser(model, prediction, schedule, sigma_data)

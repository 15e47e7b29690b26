"""Schedules in flow time t = σ/(1 + σ) for rectified-flow models (SD3, Flux, Mochi): linear in t with a
shift, Flux's resolution-dependent shift, and linear-then-quadratic. They may start at σ = inf (t = 1)."""
from __future__ import annotations

import math

import torch

from ..core.native import flow_t, flux_mu
from .base import check_steps, register, strictly_decreasing, append_zero
from ..core.errors import InvalidInput, InvalidOption
from ..core.validate import boolean, integer, positive, real


FLOW_ENDS = ("model", "diffusers")


@register("flow", aliases=("flow_linear", "linear"))
def flow(n: int, sigma_min: float, sigma_max: float = math.inf, shift: float | None = None, mu: float | None = None,
         end: str = "model", *, model_shift: float | None = None) -> torch.Tensor:
    """Linear in flow time t, then shifted (SD3 / Flux): σ = s·σ_lin with s = ``shift`` (default 1) or e^``mu``
    (pass one of the two, not both), ending at the model's σ_min; ``end="diffusers"``: diffusers'
    FlowMatchEulerDiscreteScheduler grid, which with a fixed shift ≠ 1 ends at shift·σ_min instead.

    ``end="model"`` (the default): ``sigma_min``/``sigma_max`` are the (shifted) end points, which are kept exactly:
    the run ends at the model's own smallest trained level, as ComfyUI's table schedules do; σ_max = inf starts at
    t = 1.

    ``end="diffusers"``: diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` with a fixed ``shift``: its
    unshifted linear grid runs from t = 1 to the model's *shifted* t_min (``sigma_min``), and the shift is then
    applied to the whole grid, so the last σ > 0 is shift·``sigma_min`` (shifted twice: SD3, shift 3, N = 1000: flow
    time 0.00893 where the model's own smallest level is 0.002994); ``sigma_max`` is kept as with ``"model"``
    (diffusers always starts at t = 1, σ = inf). With shift 1 the two ends agree. diffusers'
    dynamic shifting (Flux, ``mu``) builds its grid to the *unshifted* t_min, which ``end="model"`` gives, so
    ``end="diffusers"`` takes no ``mu``.

    ``mu`` on a model (``get_sigmas(..., native=RectifiedFlow(...))``, ``sigma_min`` left out): e^mu replaces the
    model's shift, as diffusers' ``use_dynamic_shifting`` does not read its config's ``shift``: the grid runs to the
    model's unshifted t_min and is shifted once, ending at e^mu·t_min/(1 − t_min) (``model_shift``, filled in by
    get_sigmas, is the shift the model's ``sigma_min`` carries). An explicit ``sigma_min`` is kept exactly.
    """
    check_steps(n, sigma_min, sigma_max)
    if end not in FLOW_ENDS:
        raise InvalidOption(f"schedule 'flow' has no end={end!r}; use end='model' (end at the model's sigma_min) or "
                            "end='diffusers' (diffusers' FlowMatchEulerDiscreteScheduler grid, shifted twice at the end)")
    if mu is not None and shift is not None:
        raise InvalidOption(f"schedule 'flow' takes shift= or mu= (shift = e^mu), not both: got shift={shift!r} and "
                            f"mu={mu!r}, and one would be ignored; pass only one (with native=RectifiedFlow(...), mu= "
                            "replaces the model's shift)")
    if mu is not None and end == "diffusers":
        raise InvalidOption(f"schedule 'flow' with end='diffusers' takes no mu (got mu={mu!r}): diffusers' dynamic "
                            "shifting ends its grid at the unshifted t_min, which end='model' gives on the model's "
                            "native (RectifiedFlow.dynamic(mu)); drop end='diffusers', or pass shift= for diffusers' "
                            "fixed-shift grid")
    if mu is not None:
        mu = real("mu", mu, what=" (the log of the shift, e^mu)")
        s = math.exp(min(mu, 700.0))  # beyond, e^mu overflows: refused below as the shift it would be
        if not math.isfinite(s) or mu > 700:
            raise InvalidInput(f"mu = {mu:g} gives a shift e^mu too large to represent; Flux's mu lies near 0.5-1.2")
        if s == 0:  # e^mu underflows (mu below about -745): the schedule divides by the shift
            raise InvalidInput(f"mu = {mu:g} gives a shift e^mu that underflows to 0 (the schedule divides by it; "
                               "e^mu > 0 needs mu >= -745); Flux's mu lies near 0.5-1.2: pass a mu near that, or "
                               "shift= (> 0) directly")
    else:
        s = 1.0 if shift is None else real("shift", shift, lo=0.0, lo_open=True,
                                           what=" (σ = shift · the linear schedule's σ)")
    t_hi = 1.0 if math.isinf(sigma_max) else float(flow_t(torch.tensor(sigma_max / s, dtype=torch.float64)))
    # the unshifted end: a model's own sigma_min carries the model's shift (replaced by s); an explicit one is the
    # end itself; diffusers' fixed-shift grid reads the model's shifted sigma_min as a point of the unshifted grid,
    # and shifts it once more
    if end == "diffusers":
        low = sigma_min
    elif model_shift is not None:
        low = sigma_min / positive("model_shift", model_shift)
    else:
        low = sigma_min / s
    t_lo = float(flow_t(torch.tensor(low, dtype=torch.float64)))
    t = torch.linspace(t_hi, t_lo, n, dtype=torch.float64)
    sigmas = append_zero(s * t / (1 - t))  # t = 1 gives inf exactly
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise InvalidInput(f"schedule 'flow' with shift {s:g}{'' if mu is None else f' (mu = {mu:g})'} collapses its "
                           f"steps ({sigmas.tolist()}); SD3 / Flux use shifts of about 1-3 (mu 0.5-1.2), or use "
                           "fewer steps")
    return sigmas

@register("flow_dynamic", aliases=("flux_dynamic",))
def flow_dynamic(n: int, sigma_min: float, sigma_max: float = math.inf, *, image_seq_len: int,
                 base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                 max_shift: float = 1.15, model_shift: float | None = None) -> torch.Tensor:
    """``flow`` with Flux's resolution-dependent shift: μ = :func:`samplers.core.native.flux_mu` of the latent's token
    count ``image_seq_len`` (a 1024² Flux image: (1024/16)² = 4096 tokens), shift = e^μ (diffusers'
    ``use_dynamic_shifting``). On a model (``native=RectifiedFlow(...)``) this is diffusers' grid: t from 1 to the
    model's unshifted t_min, shifted once by e^μ, which replaces the model's own shift (diffusers does not read its
    config's ``shift`` under dynamic shifting); an explicit ``sigma_min`` is the (shifted) end, kept exactly."""
    image_seq_len = integer("image_seq_len", image_seq_len, lo=1)  # latent tokens
    # μ is the line through (base_seq_len, base_shift) and (max_seq_len, max_shift): two distinct token counts, in
    # order, and finite shifts (diffusers' Flux config: 256 → 0.5, 4096 → 1.15)
    line = " (μ is the line through (base_seq_len, base_shift) and (max_seq_len, max_shift))"
    base_seq_len = real("base_seq_len", base_seq_len, lo=0.0, what=line)
    max_seq_len = real("max_seq_len", max_seq_len, lo=0.0, what=line)
    if not max_seq_len > base_seq_len:
        raise InvalidOption(f"max_seq_len = {max_seq_len:g} must be above base_seq_len = {base_seq_len:g}{line}: the "
                            "slope divides by their difference; pass a max_seq_len above base_seq_len (Flux's: 256 and "
                            "4096)")
    base_shift = real("base_shift", base_shift, what=line)
    max_shift = real("max_shift", max_shift, what=line)
    mu = flux_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    # the shift e^μ must be a finite number > 0 (flow divides by it)
    if not math.isfinite(mu) or not -745 <= mu <= 700:
        raise InvalidOption(f"image_seq_len = {image_seq_len}, base_seq_len = {base_seq_len:g}, max_seq_len = "
                            f"{max_seq_len:g}, base_shift = {base_shift:g}, max_shift = {max_shift:g} give μ = {mu:g}, "
                            f"whose shift e^μ {'underflows to 0' if mu < 0 else 'overflows'} (it must be finite and "
                            "> 0: -745 <= μ <= 700); Flux's shifts are base_shift=0.5, max_shift=1.15 (μ near 0.5-1.2)")
    return flow(n, sigma_min, sigma_max, mu=mu, model_shift=model_shift)

@register("linear_quadratic", aliases=("linear-quadratic",), fixed_ends=("sigma_min",))
def linear_quadratic(n: int, sigma_min=None, sigma_max: float = math.inf, threshold_noise: float = 0.025,
                     linear_steps: int | None = None, sigma_fraction: bool = False) -> torch.Tensor:
    """Linear-then-quadratic in flow time (Mochi; ComfyUI ``linear_quadratic``): the first ``linear_steps``
    (default n/2) steps lower the noise level t linearly to ``threshold_noise``, the rest quadratically to 0.

    The levels are flow times t ∈ [0, 1] scaled by t(σ_max) (1 when σ_max = inf, a flow model from pure noise)
    and mapped to σ = t/(1 − t). ``sigma_fraction=True`` is ComfyUI's rule on a model with a finite σ_max (its
    ``linear_quadratic`` scheduler; the ComfyUI name passes it): a level ℓ is σ = (1 − ℓ)·σ_max in the model's own
    VE σ, linear in σ. On a flow model (σ_max = inf, ComfyUI's σ the flow time) the two are the same.
    """
    n = check_steps(n, None, None, need_range=False)
    sigma_fraction = boolean("sigma_fraction", sigma_fraction)
    threshold_noise = real("threshold_noise", threshold_noise, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                           what=" (the noise level, a fraction of the whole, where the linear steps end; ComfyUI's "
                                "default 0.025)")
    if linear_steps is not None:
        linear_steps = integer("linear_steps", linear_steps)
    finite = sigma_max is not None and not math.isinf(sigma_max)
    t_max = float(flow_t(torch.tensor(sigma_max, dtype=torch.float64))) if finite else 1.0
    fix = "use fewer steps or a wider sigma range"
    if n == 1:
        levels = [0.0, 1.0]
    else:
        linear_steps = n // 2 if linear_steps is None else linear_steps
        if not 0 < linear_steps < n:
            raise InvalidInput(f"linear_steps must be in (0, {n}), got {linear_steps}")
        quadratic_steps = n - linear_steps
        # the quadratic part's slope at level n is ≥ 0 only for threshold_noise ≤ 2·linear_steps/(n + linear_steps)
        fix = (f"threshold_noise={threshold_noise:g} with linear_steps={linear_steps} of n={n}: past about "
               f"{2 * linear_steps / (n + linear_steps):.3g} (2·linear_steps/(n + linear_steps)) the quadratic part "
               "turns back; use a smaller threshold_noise or more linear_steps")
        step_diff = linear_steps - threshold_noise * n
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / quadratic_steps**2
        const = quadratic_coef * linear_steps**2
        levels = ([i * threshold_noise / linear_steps for i in range(linear_steps)]
                  + [quadratic_coef * i**2 + linear_coef * i + const for i in range(linear_steps, n)] + [1.0])
    if finite and sigma_fraction:
        return strictly_decreasing(torch.tensor([(1.0 - v) * sigma_max for v in levels], dtype=torch.float64),
                                   "linear_quadratic", fix=fix)
    t = torch.tensor([(1.0 - v) * t_max for v in levels], dtype=torch.float64)
    sigmas = torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))
    return strictly_decreasing(sigmas, "linear_quadratic", fix=fix)

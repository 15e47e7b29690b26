"""Sampling schedules: pure functions ``(n, sigma_min, sigma_max, **kw) -> Tensor[n+1]`` ending in 0.

Every schedule returns canonical (VE) sigmas in float64 on the CPU, strictly decreasing, with a trailing
0. They are registered by name like the samplers; :func:`get_sigmas` fills the range (and the training
table for timestep spacings) from a model's native schedule. Operations on schedules (split, flip,
truncate, set_first) are plain functions too.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .native import NoiseSchedule, RectifiedFlow, flow_t
from .registry import Registry

SCHEDULES: Registry[Callable] = Registry("schedule")


# Schedules defined over a discrete model's training table: get_sigmas passes ``training_sigmas`` to them.
TABLE_SCHEDULES: set[str] = set()


def register(name: str, aliases: tuple[str, ...] = (), needs_table: bool = False):
    """Register a schedule function; ``needs_table`` ones get the native model's ``training_sigmas``."""
    def decorate(fn):
        SCHEDULES.add(name, fn, aliases)
        if needs_table:
            TABLE_SCHEDULES.add(name)
        return fn
    return decorate


def get(name: str) -> Callable:
    """The schedule function registered as ``name``."""
    return SCHEDULES.get(name)


def available() -> list[str]:
    return SCHEDULES.names()


def _check(n: int, sigma_min, sigma_max, need_range: bool = True):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of steps must be an integer >= 1, got {n!r}")
    if need_range:
        if sigma_min is None or sigma_max is None:
            raise ValueError("sigma_min and sigma_max are required (or pass native= to samplers.get_sigmas)")
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _finite_max(name: str, sigma_max: float) -> float:
    if math.isinf(sigma_max):
        raise ValueError(f"schedule {name!r} needs a finite sigma_max, but it is inf (a flow or zero-terminal-SNR "
                         "model); pass sigma_max=<finite value>, or use the 'flow' schedule / a timestep spacing")
    return sigma_max


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)])


@register("karras")
def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ."""
    _check(n, sigma_min, sigma_max)
    sigma_max = _finite_max("karras", sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


@register("exponential")
def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log σ from σ_max to σ_min."""
    _check(n, sigma_min, sigma_max)
    sigma_max = _finite_max("exponential", sigma_max)
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


@register("polyexponential")
def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Polynomial in log σ (k-diffusion): ρ = 1 is ``exponential``."""
    _check(n, sigma_min, sigma_max)
    sigma_max = _finite_max("polyexponential", sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    return append_zero((ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp())


@register("vp")
def vp(n: int, sigma_min: float | None = None, sigma_max: float | None = None, beta_d: float = 19.9,
       beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """Continuous VP (Song et al. 2021): uniform in t, σ(t) = sqrt(exp(β_d t²/2 + β_min t) − 1).

    The t range is [t(σ_min), t(σ_max)]; with no range given it is [eps_s, 1] (k-diffusion's ``get_sigmas_vp``).
    """
    def t_of(sigma):
        return (-beta_min + math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma**2))) / beta_d
    _check(n, None, None, need_range=False)
    t_hi = 1.0 if sigma_max is None else t_of(_finite_max("vp", sigma_max))
    t_lo = eps_s if sigma_min is None else t_of(sigma_min)
    t = torch.linspace(t_hi, t_lo, n, dtype=torch.float64)
    return append_zero(torch.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt())


def _from_timesteps(timesteps: torch.Tensor, training_sigmas) -> torch.Tensor:
    if training_sigmas is None:
        raise ValueError("timestep spacings need the model's training table: pass training_sigmas= "
                         "(or native=<VPDiscrete> to samplers.get_sigmas)")
    table = torch.as_tensor(training_sigmas, dtype=torch.float64)
    log_table = table.log()
    low = timesteps.floor().long().clamp(0, table.numel() - 2)
    w = (timesteps - low).clamp(0, 1)
    lo, hi = log_table[low], log_table[low + 1]
    # Exact table values at integer timesteps (also where the table is inf), log-σ interpolation between.
    log_sigma = torch.where(w == 0, lo, torch.where(w == 1, hi, lo + w * (hi - lo)))
    return append_zero(log_sigma.exp())


def _num_train(n: int, training_sigmas) -> int:
    if training_sigmas is None:
        _from_timesteps(torch.zeros(1), None)
    total = len(training_sigmas)
    if n > total:
        raise ValueError(f"{n} steps is more than the model's {total} training timesteps")
    return total


@register("linspace", needs_table=True)
def linspace(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """diffusers' ``timestep_spacing="linspace"``: n timesteps evenly from the last to the first (fractional)."""
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    return _from_timesteps(torch.linspace(total - 1, 0, n, dtype=torch.float64), training_sigmas)


@register("leading", needs_table=True)
def leading(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, steps_offset: int = 0) -> torch.Tensor:
    """diffusers' ``"leading"`` spacing (DDIM, SD 1.x default): i·(N // n) + steps_offset, descending."""
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    ratio = total // n
    t = torch.arange(n - 1, -1, -1, dtype=torch.float64) * ratio + steps_offset
    return _from_timesteps(t, training_sigmas)


@register("trailing", needs_table=True)
def trailing(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """diffusers' ``"trailing"`` spacing (Lin et al. 2023): starts at the last training timestep."""
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    t = torch.round(torch.arange(total, 0, -total / n, dtype=torch.float64)) - 1
    return _from_timesteps(t, training_sigmas)


@register("flow", aliases=("flow_linear", "linear"))
def flow(n: int, sigma_min: float, sigma_max: float = math.inf, shift: float = 1.0, mu: float | None = None) -> torch.Tensor:
    """Linear in flow time t, then shifted (SD3 / Flux): σ = s·σ_lin with s = ``shift`` or e^``mu``.

    ``sigma_min``/``sigma_max`` are the (shifted) end points, which are kept exactly; σ_max = inf starts at t = 1.
    """
    _check(n, sigma_min, sigma_max)
    s = math.exp(mu) if mu is not None else shift
    if not s > 0:
        raise ValueError(f"shift must be positive, got {s}")
    t_hi = 1.0 if math.isinf(sigma_max) else float(flow_t(torch.tensor(sigma_max / s, dtype=torch.float64)))
    t_lo = float(flow_t(torch.tensor(sigma_min / s, dtype=torch.float64)))
    t = torch.linspace(t_hi, t_lo, n, dtype=torch.float64)
    sigmas = s * t / (1 - t)  # t = 1 gives inf exactly
    return append_zero(sigmas)


# ----------------------------------------------------------------------------------------------------


def get_sigmas(name: str, n: int, native: NoiseSchedule | None = None, sigma_min: float | None = None,
               sigma_max: float | None = None, **kw) -> torch.Tensor:
    """Build the schedule ``name`` with n steps, taking the sigma range from ``native`` unless given.

    ``get_sigmas("karras", 20, native=VPDiscrete.from_betas())``; timestep spacings use the native
    training table, and ``flow`` uses a :class:`~samplers.native.RectifiedFlow`'s shift unless one is passed.
    """
    canonical = SCHEDULES.canonical(name)
    fn = SCHEDULES.get(canonical)
    if native is not None:
        sigma_min = native.sigma_min if sigma_min is None else sigma_min
        sigma_max = native.sigma_max if sigma_max is None else sigma_max
        if canonical in TABLE_SCHEDULES:
            if not hasattr(native, "sigmas"):
                raise ValueError(f"schedule {canonical!r} spaces a discrete model's training timesteps; "
                                 f"{type(native).__name__} has no training table")
            kw.setdefault("training_sigmas", native.sigmas)
        if canonical == "flow" and isinstance(native, RectifiedFlow) and "mu" not in kw:
            kw.setdefault("shift", native.shift)
    return fn(n, sigma_min, sigma_max, **kw)


# ----------------------------------------------------------------------------------------------------
# Operations on schedules


def split(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split at a step: the two parts share the boundary sigma (high part ends where the low part starts)."""
    if not 0 <= step < len(sigmas):
        raise ValueError(f"step must be in [0, {len(sigmas) - 1}], got {step}")
    return sigmas[: step + 1], sigmas[step:]


def flip(sigmas: torch.Tensor) -> torch.Tensor:
    """Reverse the order (e.g. to invert a sampler: noise an image back up the schedule)."""
    return sigmas.flip(0)


def truncate(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """img2img: keep the last ``round(strength · steps)`` steps (at least one) of a schedule.

    ``strength`` in (0, 1] is how much of the schedule is run: 1 starts from pure noise.
    """
    if not (isinstance(strength, (int, float)) and 0 < strength <= 1):
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    steps = len(sigmas) - 1
    keep = max(1, min(steps, round(strength * steps)))
    return sigmas[steps - keep:]


def set_first(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """Replace the first sigma (e.g. start a flow schedule at a finite sigma); must stay decreasing."""
    out = sigmas.clone().to(torch.float64)
    out[0] = sigma
    if len(out) > 1 and not float(out[0]) > float(out[1]):
        raise ValueError(f"set_first({sigma}) would not be above the next sigma {float(out[1])}")
    return out

"""Schedules written as formulas in σ: Karras, exponential, polyexponential, continuous VP, KL-optimal,
Laplace and Beta. Each fills ``[sigma_min, sigma_max]`` and appends 0."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.native import COSINE_T_MAX, flow_sigma, flow_t
from ..core.validate import boolean, positive, real
from .base import (append_zero, check_rho, check_steps, finite_max, register, steps_and_range,
                   strictly_decreasing)
from ..core.errors import InvalidInput, InvalidOption


def _flow_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """The range in flow time t = σ/(1 + σ): σ = inf is t = 1."""
    return flow_t(float(sigma_min)), flow_t(float(sigma_max))

# what collapses Karras steps beside the step count: σ_max^(1/ρ) so far above σ_min^(1/ρ) that the ramp rounds σ_min
# away (σ_max/σ_min beyond about 1e110 at ρ = 7), or a range too narrow for float64 to split
_KARRAS_FIX = ("use fewer steps, or a sigma range float64 can split into them: sigma_max / sigma_min neither so near 1 "
               "that levels round together nor so large that sigma_min^(1/rho) rounds away beside sigma_max^(1/rho) "
               "(a smaller rho, or a narrower range)")

@register("karras")
def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, in_flow_time: bool = False) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ.

    ``in_flow_time=True``: the formula in flow time t = σ/(1 + σ) from t(σ_max) (σ_max = inf: t = 1) to t(σ_min),
    then σ = t/(1 − t) — ComfyUI's ``karras`` on a flow model (SD3, Flux), whose σ is t (``comfyui:karras`` there).
    """
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    rho = check_rho(rho)
    if boolean("in_flow_time", in_flow_time):
        t_min, t_max = _flow_range(sigma_min, sigma_max)
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        lo, hi = t_min ** (1 / rho), t_max ** (1 / rho)
        return strictly_decreasing(append_zero(flow_sigma((hi + ramp * (lo - hi)) ** rho)), "karras")
    sigma_max = finite_max("karras", sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    try:
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    except OverflowError:
        raise InvalidOption(f"schedule 'karras' with rho={rho:g} raises sigma_max={sigma_max:g} to the power 1/rho = "
                            f"{1 / rho:g}, past float64's range; use a larger rho (Karras et al. use 7)") from None
    return strictly_decreasing(append_zero((hi + ramp * (lo - hi)) ** rho), "karras", fix=_KARRAS_FIX)

@register("exponential")
def exponential(n: int, sigma_min: float, sigma_max: float, in_flow_time: bool = False) -> torch.Tensor:
    """Uniform in log σ from σ_max to σ_min.

    ``in_flow_time=True``: uniform in log t, t = σ/(1 + σ), from t(σ_max) (σ_max = inf: t = 1) to t(σ_min), then
    σ = t/(1 − t) — ComfyUI's ``exponential`` on a flow model (``comfyui:exponential`` there)."""
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    if boolean("in_flow_time", in_flow_time):
        t_min, t_max = _flow_range(sigma_min, sigma_max)
        t = torch.linspace(math.log(t_max), math.log(t_min), n, dtype=torch.float64).exp()
        return strictly_decreasing(append_zero(flow_sigma(t)), "exponential")
    sigma_max = finite_max("exponential", sigma_max)
    return strictly_decreasing(append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n,
                                                          dtype=torch.float64).exp()), "exponential")

@register("polyexponential")
def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Polynomial in log σ (k-diffusion): ρ = 1 is ``exponential``."""
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    rho = check_rho(rho)
    sigma_max = finite_max("polyexponential", sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    return strictly_decreasing(append_zero((ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp()),
                               "polyexponential", fix="use fewer steps, a wider sigma range, or a rho nearer 1 (a rho "
                               "far below 1 packs the levels at sigma_max, far above 1 at sigma_min)")

# the VP noise rate β(t) = β_min + β_d·t of the linear kind: never negative, and not 0 throughout (every σ would be 0)
_VP_BETA_RULE = "the VP noise rate β(t) = beta_min + beta_d·t is >= 0 on t in [0, 1] and not 0 throughout"


def _vp_betas(beta_d, beta_min) -> tuple[float, float]:
    """β_d and β_min of the linear VP schedule: each >= 0 (β_d = 0 is the constant-β VP, β_min = 0 a rate from 0,
    both strictly decreasing schedules, as k-diffusion's ``get_sigmas_vp`` builds them) and not both 0."""
    what = f" ({_VP_BETA_RULE}; Song et al. use beta_d=19.9, beta_min=0.1)"
    beta_d, beta_min = real("beta_d", beta_d, lo=0.0, what=what), real("beta_min", beta_min, lo=0.0, what=what)
    if beta_d == 0 and beta_min == 0:
        raise InvalidOption(f"schedule 'vp' with beta_d=0 and beta_min=0 has every σ 0{what}; pass a rate above 0, "
                            "e.g. the defaults")
    return beta_d, beta_min


@register("vp")
def vp(n: int, sigma_min: float | None = None, sigma_max: float | None = None, beta_d: float = 19.9,
       beta_min: float = 0.1, eps_s: float | None = None, kind: str = "linear",
       cosine_s: float | None = None) -> torch.Tensor:
    """Continuous VP (Song et al. 2021): uniform in t, σ(t) = sqrt(exp(β_d t²/2 + β_min t) − 1).

    The t range is [t(σ_min), t(σ_max)]; with no σ_min it ends at t = eps_s (default 1e-3; k-diffusion's
    ``get_sigmas_vp`` runs over [eps_s, 1]). Both ends given is a contradiction, refused: with ``native=`` σ_min is
    the model's. ``kind="cosine"``: uniform in the time of the cosine ᾱ (Nichol & Dhariwal 2021, offset ``cosine_s``,
    default 0.008), with no σ_max from t = 0.9946, DPM-Solver's end (``VPContinuous("cosine")``'s: at t = 1 the
    cosine ᾱ is 0, which float64 makes σ = 1.6e16). With ``native=VPContinuous(...)`` the kind and its β's or offset
    are the model's, and σ_max its end's. ``beta_d`` and ``beta_min`` may each be 0 (``beta_d=0``: the constant-β
    VP; both are strictly decreasing schedules, which k-diffusion's ``get_sigmas_vp`` builds too), not both.
    """
    if kind not in ("linear", "cosine"):
        raise InvalidOption(f"schedule 'vp': kind must be 'linear' (the β of Song et al.) or 'cosine' (Nichol & "
                            f"Dhariwal's ᾱ), got {kind!r}")
    if kind == "cosine" and (beta_d, beta_min) != (19.9, 0.1):
        raise InvalidOption(f"schedule 'vp' with kind='cosine' does not read beta_d / beta_min (the linear kind's), "
                            f"so beta_d={beta_d!r}, beta_min={beta_min!r} would be ignored; leave them out, or pass "
                            "kind='linear'")
    if kind == "linear" and cosine_s is not None:
        raise InvalidOption(f"schedule 'vp': cosine_s={cosine_s!r} is the cosine kind's offset, which the linear kind "
                            "does not read; leave it out, or pass kind='cosine'")
    if kind == "linear":
        beta_d, beta_min = _vp_betas(beta_d, beta_min)

        def t_of(sigma):
            if beta_d == 0:  # constant β: β_min t = log(1 + σ²)
                return math.log1p(sigma**2) / beta_min
            return (-beta_min + math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma**2))) / beta_d

        def sigma_of(t):
            return torch.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt()
    else:
        s = 0.008 if cosine_s is None else real("cosine_s", cosine_s, lo=0.0)
        f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2

        def t_of(sigma):
            return math.acos(math.sqrt(f0 / (1 + sigma**2))) * (2 / math.pi) * (1 + s) - s

        def sigma_of(t):
            ab = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / f0
            return ((1 - ab) / ab).sqrt()
    check_steps(n, None, None, need_range=False)
    if eps_s is not None and sigma_min is not None:
        raise InvalidInput(f"schedule 'vp': eps_s={eps_s!r} (the lowest VP time) and sigma_min={sigma_min!r} (given, "
                           "or the model's own with native=) both set the lower end, and eps_s would be ignored; "
                           "leave eps_s out, or leave out sigma_min and native")
    eps_s = positive("eps_s", 1e-3 if eps_s is None else eps_s)
    if eps_s >= 1:
        raise InvalidInput(f"eps_s (the smallest VP time) must be below 1, got {eps_s:g}")
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if value is not None:
            real(name, value, lo=0.0, lo_open=True, allow_inf=name == "sigma_max")
    end = 1.0 if kind == "linear" else COSINE_T_MAX
    t_hi = end if sigma_max is None else t_of(finite_max("vp", sigma_max))
    t_lo = eps_s if sigma_min is None else t_of(sigma_min)
    if not t_lo < t_hi:
        raise InvalidInput(f"schedule 'vp' needs its lower end below its upper one, got sigma_min={sigma_min}, "
                           f"sigma_max={sigma_max} (VP times {t_lo:g} and {t_hi:g})")
    t = torch.linspace(t_hi, t_lo, n, dtype=torch.float64)
    return strictly_decreasing(append_zero(sigma_of(t)), "vp")

@register("kl_optimal", aliases=("kl-optimal",))
def kl_optimal(n: int, sigma_min: float, sigma_max: float, end: str = "zero", in_flow_time: bool = False) -> torch.Tensor:
    """The KL-optimal schedule (Sabour et al. 2024, arXiv:2404.14507, §3.4; ComfyUI):
    σ_i = tan((1 − i/(n−1))·atan σ_max + i/(n−1)·atan σ_min) — uniform in the VP angle. σ_max may be inf.

    ``end="sigma_min"`` is A1111's "KL Optimal": n + 1 levels uniform in the angle from σ_max to σ_min (i/n for
    i = 0…n) and no 0 appended, so a run stops at σ_min with that much noise left, as A1111's does.

    ``in_flow_time=True``: uniform in the angle of the flow time t = σ/(1 + σ) (atan t) from t(σ_max) (σ_max = inf:
    t = 1) to t(σ_min), the ends exact, then σ = t/(1 − t) — ComfyUI's ``kl_optimal`` on a flow model, whose σ is t
    (``comfyui:kl_optimal`` there; at n = 1 ComfyUI divides by n − 1 = 0 and gets NaN, here the one level is σ_max).
    """
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    if end not in ("zero", "sigma_min"):
        raise InvalidOption(f"kl_optimal: end must be 'zero' (ComfyUI's: n levels, then 0) or 'sigma_min' (A1111's: "
                            f"n + 1 levels down to sigma_min), got {end!r}")
    count = n + 1 if end == "sigma_min" else n
    w = torch.linspace(0, 1, count, dtype=torch.float64) if count > 1 else torch.zeros(1, dtype=torch.float64)
    if boolean("in_flow_time", in_flow_time):
        t_min, t_max = _flow_range(sigma_min, sigma_max)
        t = ((1 - w) * math.atan(t_max) + w * math.atan(t_min)).tan()
        t = torch.where(w == 0, torch.full_like(t, t_max), torch.where(w == 1, torch.full_like(t, t_min), t))
        sigmas = flow_sigma(t)
        return strictly_decreasing(sigmas if end == "sigma_min" else append_zero(sigmas), "kl_optimal")
    angle = (1 - w) * math.atan(sigma_max) + w * math.atan(sigma_min)
    sigmas = torch.where(angle >= math.pi / 2, torch.full_like(angle, math.inf), angle.tan())
    return strictly_decreasing(sigmas if end == "sigma_min" else append_zero(sigmas), "kl_optimal")

@register("laplace")
def laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Laplace schedule (Hang et al. 2024, "Improved noise schedule for diffusion training"; ComfyUI):
    log σ = μ − β·sgn(½ − x)·log(1 − 2|½ − x| + 1e-5) for x evenly in [0, 1], clamped to [σ_min, σ_max], then a
    final 0 as every schedule here (ComfyUI's ``get_sigmas_laplace`` returns the n levels without it)."""
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    sigma_max = finite_max("laplace", sigma_max)
    mu = real("mu", mu, what=" (the log σ the Laplace density is centred on)")
    beta = real("beta", beta, lo=0.0, lo_open=True, what=" (the Laplace density's scale in log σ)")
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * (0.5 - x).abs() + 1e-5)
    return strictly_decreasing(append_zero(lmb.exp().clamp(sigma_min, sigma_max)), "laplace",
                               fix=f"use fewer steps, a wider sigma range, a mu whose e^mu lies inside it (here "
                               f"{sigma_min:g}..{sigma_max:g}; levels outside it are clamped to its ends), or a smaller "
                               "beta")

@register("beta_sigmas", aliases=("use_beta_sigmas",))
def beta_sigmas(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta sampling (Lee et al. 2024, arXiv:2407.12173), diffusers' ``use_beta_sigmas`` formula:
    σ_i = σ_min + (σ_max − σ_min)·F⁻¹_Beta(α,β)(1 − i/(n−1)): dense at both ends for α, β < 1. diffusers takes σ_min,
    σ_max at the ends of its timestep grid (its ``timestep_spacing``), a model's ``native=`` range is its whole
    table: pass the grid's ends as sigma_min / sigma_max for diffusers' values, or run its class through the shim."""
    n, sigma_min, sigma_max = steps_and_range(n, sigma_min, sigma_max)
    sigma_max = finite_max("beta_sigmas", sigma_max)
    alpha = real("alpha", alpha, what=" (the Beta distribution's first shape)")
    beta = real("beta", beta, what=" (the Beta distribution's second shape)")
    if not (alpha > 0 and beta > 0):
        raise InvalidInput(f"beta_sigmas needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    from scipy import stats  # scipy loads only when a beta schedule is built

    q = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return strictly_decreasing(append_zero(torch.as_tensor(sigma_min + q * (sigma_max - sigma_min), dtype=torch.float64)), "beta_sigmas")

"""The DPM-Solver++ SDE samplers (Lu et al. 2022, §5): the reverse SDE solved exactly for a frozen D.

With h = λ_next − λ and η the share of noise,

    x_next = (σ_next/σ)·e^(−ηh)·x + (1 − e^(−(1+η)h))·D̂ + σ_next·√(1 − e^(−2ηh))·z,

and the higher orders replace D̂ by a two-stage (``dpmpp_sde``) or multistep (``dpmpp_2m_sde``,
``dpmpp_3m_sde``) estimate. Every coefficient is a Python float; noise comes from ``noise_sampler``.
"""
from __future__ import annotations

import math

from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import (SDE3_VARIANTS, add_noise, check_solver_type, get_ancestral_step, lam, multistep_order,
                          sde_eta_from_infinity,
                          sigma_of, to_d)
from ..core.validate import one_of
from ..core.errors import InvalidInput

_DPMPP = "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095)"


@register("dpmpp_sde", kind="sde", order=2, nfe_per_step=2,
          aliases=("sample_dpmpp_sde",),
          ref=_DPMPP + ", SDE-DPM-Solver++(2S) with r = 1/2 (k-diffusion's sample_dpmpp_sde)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0, r=0.5,
              noise_sampler=None, seed=None):
    """Two-stage stochastic DPM-Solver++: an ancestral half step to λ + r·h, then the full ancestral step with
    D̂ = (1 − 1/(2r))·D + 1/(2r)·D(x_r). Noise is drawn for (σ, σ_r) and (σ, σ_next): with
    ``noise_sampler="brownian"`` these are increments of one Brownian path, as in k-diffusion.
    """
    if not r > 0:
        raise InvalidInput(f"r must be > 0, got {r}")
    fac = 1 / (2 * r)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
        else:
            lambda_ = lam(sigma)
            h = lam(sigma_next) - lambda_
            sigma_s = sigma_of(lambda_ + h * r)
            # stage 1: ancestral step σ → σ_s
            sd, su = get_ancestral_step(sigma, sigma_s, eta)
            x_2 = x * (sd / sigma) - denoised * math.expm1(lambda_ - lam(sd))
            x_2 = add_noise(x_2, noise_sampler, sigma, sigma_s, s_noise * su)
            denoised_2 = model(x_2, sigma_s)
            # stage 2: ancestral step σ → σ_next with the combined estimate
            sd, su = get_ancestral_step(sigma, sigma_next, eta)
            denoised_d = denoised * (1 - fac) + denoised_2 * fac
            x = x * (sd / sigma) - denoised_d * math.expm1(lambda_ - lam(sd))
            x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * su)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_2m_sde", kind="sde", order=2, nfe_per_step=1, eta_from_infinity=sde_eta_from_infinity,
          aliases=("sample_dpmpp_2m_sde", "sde-dpmsolver++2m"),
          ref=_DPMPP + ", SDE-DPM-Solver++(2M) (diffusers' sde-dpmsolver++, k-diffusion)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                 solver_type="midpoint", euler_at_final=False, noise_sampler=None, seed=None):
    """SDE-DPM-Solver++(2M): the exact SDE step for a frozen D plus the 2M correction (r = h_last/h)

        midpoint: + ½·(1 − e^(−(1+η)h))·(D0 − D1)/r        heun: + φ2((1+η)h)·(D0 − D1)/r

    η = 0 is ``dpmpp_2m`` exactly (same solver_type); η = 1 is diffusers' ``sde-dpmsolver++``.
    ``euler_at_final`` makes the last step first order also when the schedule stops at σ > 0 (diffusers'
    ``euler_at_final``, and its ``lower_order_final`` with fewer than 15 steps).
    """
    check_solver_type(solver_type)
    n = len(sigmas) - 1
    old_denoised, h_last = None, None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = lam(sigma_next) - lam(sigma)
            eta_h = eta * h
            phi1 = -math.expm1(-h - eta_h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * phi1
            if old_denoised is not None and not (euler_at_final and i == n - 1):
                r = h_last / h
                weight = 0.5 * phi1 if solver_type == "midpoint" else phi1 / (-h - eta_h) + 1
                x = x + (denoised - old_denoised) * (weight / r)
            x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        old_denoised = denoised
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_3m_sde", kind="sde", order=2, nfe_per_step=1, eta_from_infinity=sde_eta_from_infinity,
          aliases=("sample_dpmpp_3m_sde",),
          ref=_DPMPP + ", 3rd-order multistep SDE variant (k-diffusion's sample_dpmpp_3m_sde; diffusers' "
                       "sde-dpmsolver++ of order 3 with variant='diffusers')",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                 solver_type="heun", lower_order_final=False, euler_at_final=False, variant="k-diffusion",
                 noise_sampler=None, seed=None):
    """SDE-DPM-Solver++(3M) as k-diffusion runs it, with h_η = (1 + η)·h:

        x_next = e^(−h_η)·x + (1 − e^(−h_η))·D0 + φ2·d1 + w·d2 + σ_next·√(1 − e^(−2ηh))·z

    (d1, d2 the divided differences of ``dpmpp_3m``, φ2 = (e^(−h_η) − 1)/h_η + 1). The D2 weight w:

    - ``variant="k-diffusion"`` (default): w = −(φ2/h_η − ½), the published one, half the Taylor weight (see
      ``samplers.ode.multistep._third_order_d2_weight``), so the deterministic limit is second order; it is
      kept so images match k-diffusion / ComfyUI.
    - ``variant="diffusers"``: w = (1 − e^(−h_η) − h_η)/h_η² − ½, the weight of diffusers'
      DPMSolverMultistepScheduler with ``algorithm_type="sde-dpmsolver++"``, ``solver_order=3`` — the
      k-diffusion weight with the sign of its ½ flipped (it tends to −1, not 0, as h → 0). It reproduces
      that scheduler's images; it is not a better method.

    Warm-up: first order, then the 2M update of ``solver_type`` (``"heun"``: + φ2·(D0 − D1)/r, k-diffusion's;
    ``"midpoint"``: + ½·(1 − e^(−h_η))·(D0 − D1)/r). ``lower_order_final``: with fewer than 15 steps the step
    before the final one is second order; ``euler_at_final``: the last step is first order also when the
    schedule stops at σ > 0 (diffusers' rules, as in ``dpmpp_3m``).
    """
    check_solver_type(solver_type)
    one_of(*SDE3_VARIANTS)("variant", variant)
    n = len(sigmas) - 1
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = lam(sigma_next) - lam(sigma)
            h_eta = h * (eta + 1)
            order = multistep_order(1 if h_1 is None else 2 if h_2 is None else 3, i, n, lower_order_final,
                                    euler_at_final)
            x = x * math.exp(-h_eta) - denoised * math.expm1(-h_eta)
            phi2 = math.expm1(-h_eta) / h_eta + 1
            if order == 3:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                if variant == "k-diffusion":
                    x = x + d1 * phi2 - d2 * (phi2 / h_eta - 0.5)
                else:
                    x = x + d1 * phi2 + d2 * ((-math.expm1(-h_eta) - h_eta) / h_eta**2 - 0.5)
            elif order == 2:
                weight = phi2 if solver_type == "heun" else -0.5 * math.expm1(-h_eta)
                x = x + (denoised - d_1) * (weight * h / h_1)
            x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(-math.expm1(-2 * h * eta)))
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
        report(callback, x, i, sigma, sigma, denoised)
    return x

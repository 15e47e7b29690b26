"""Ancestral and SDE samplers of the DPM-Solver family, DDPM and LCM, in the canonical (VE) space.

An ancestral step splits σ → σ_next into a deterministic step to σ_down and fresh noise of size σ_up
(``get_ancestral_step``); the DPM-Solver++ SDE samplers instead solve the reverse SDE exactly for a
frozen D (Lu et al. 2022, §5): with h = λ_next − λ and η the share of noise,

    x_next = (σ_next/σ)·e^(−ηh)·x + (1 − e^(−(1+η)h))·D̂ + σ_next·√(1 − e^(−2ηh))·z.

Every coefficient is a Python float; noise comes only from ``noise_sampler(sigma, sigma_next)`` (per-item
seeded by default, ``"brownian"`` for a Brownian path, or your own). Because all of them run on the
canonical denoiser they are correct on eps, v, x0 and flow models alike.
"""
from __future__ import annotations

import math

from .registry import register
from .run import progress, report
from .steps import get_ancestral_step, to_d

_DPMPP = "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095)"


def _lam(sigma: float) -> float:
    return -math.log(sigma)


def _sigma(lam: float) -> float:
    return math.exp(-lam)


def _add_noise(x, noise_sampler, sigma, sigma_next, scale: float):
    return x + noise_sampler(sigma, sigma_next) * scale if scale > 0 else x


@register("dpm_2_ancestral", kind="ancestral", order=2, nfe_per_step=2,
          aliases=("DPM2 a", "DPM2 Ancestral", "k_dpm_2_ancestral", "k_dpm_2_a", "sample_dpm_2_ancestral"),
          ref="Lu et al. 2022 (arXiv:2206.00927) DPM-Solver-2 in σ with ancestral noise (k-diffusion)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                    noise_sampler=None, seed=None):
    """DPM-Solver-2 (log-σ midpoint) to σ_down, then fresh noise of size σ_up (k-diffusion's sample_dpm_2_ancestral)."""
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigma)
        x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_2s_ancestral", kind="ancestral", order=2, nfe_per_step=2,
          aliases=("DPM++ 2S a", "DPM++ 2S Ancestral", "k_dpmpp_2s_a", "k_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral"),
          ref=_DPMPP + ", Alg. 1 (2S) with ancestral noise (k-diffusion)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                       noise_sampler=None, seed=None):
    """DPM-Solver++(2S) with r = 1/2 to σ_down, then fresh noise σ_up. η = 0 is ``dpmpp_2s``."""
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            lam, lam_down = _lam(sigma), _lam(sigma_down)
            h = lam_down - lam
            sigma_s = _sigma(lam + h / 2)
            x_2 = x * (sigma_s / sigma) - denoised * math.expm1(-h / 2)
            denoised_2 = model(x_2, sigma_s)
            x = x * (sigma_down / sigma) - denoised_2 * math.expm1(-h)
        x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_sde", kind="sde", order=2, nfe_per_step=2,
          aliases=("DPM++ SDE", "k_dpmpp_sde", "sample_dpmpp_sde"),
          ref=_DPMPP + ", SDE-DPM-Solver++(2S) with r = 1/2 (k-diffusion's sample_dpmpp_sde)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0, r=0.5,
              noise_sampler=None, seed=None):
    """Two-stage stochastic DPM-Solver++: an ancestral half step to λ + r·h, then the full ancestral step with
    D̂ = (1 − 1/(2r))·D + 1/(2r)·D(x_r). Noise is drawn for (σ, σ_r) and (σ, σ_next): with
    ``noise_sampler="brownian"`` these are increments of one Brownian path, as in k-diffusion.
    """
    if not 0 < r < 1:
        raise ValueError(f"r must be in (0, 1), got {r}")
    fac = 1 / (2 * r)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
        else:
            lam = _lam(sigma)
            h = _lam(sigma_next) - lam
            sigma_s = _sigma(lam + h * r)
            # stage 1: ancestral step σ → σ_s
            sd, su = get_ancestral_step(sigma, sigma_s, eta)
            x_2 = x * (sd / sigma) - denoised * math.expm1(lam - _lam(sd))
            x_2 = _add_noise(x_2, noise_sampler, sigma, sigma_s, s_noise * su)
            denoised_2 = model(x_2, sigma_s)
            # stage 2: ancestral step σ → σ_next with the combined estimate
            sd, su = get_ancestral_step(sigma, sigma_next, eta)
            denoised_d = denoised * (1 - fac) + denoised_2 * fac
            x = x * (sd / sigma) - denoised_d * math.expm1(lam - _lam(sd))
            x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * su)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_2m_sde", kind="sde", order=2, nfe_per_step=1, multistep=True,
          aliases=("DPM++ 2M SDE", "k_dpmpp_2m_sde", "sample_dpmpp_2m_sde", "sde-dpmsolver++2m"),
          ref=_DPMPP + ", SDE-DPM-Solver++(2M) (diffusers' sde-dpmsolver++, k-diffusion)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                 solver_type="midpoint", noise_sampler=None, seed=None):
    """SDE-DPM-Solver++(2M): the exact SDE step for a frozen D plus the 2M correction (r = h_last/h)

        midpoint: + ½·(1 − e^(−(1+η)h))·(D0 − D1)/r        heun: + φ2((1+η)h)·(D0 − D1)/r

    η = 0 is ``dpmpp_2m`` exactly (same solver_type); η = 1 is diffusers' ``sde-dpmsolver++``.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    old_denoised, h_last = None, None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = _lam(sigma_next) - _lam(sigma)
            eta_h = eta * h
            phi1 = -math.expm1(-h - eta_h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * phi1
            if old_denoised is not None:
                r = h_last / h
                weight = 0.5 * phi1 if solver_type == "midpoint" else phi1 / (-h - eta_h) + 1
                x = x + (denoised - old_denoised) * (weight / r)
            x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        old_denoised = denoised
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_3m_sde", kind="sde", order=2, nfe_per_step=1, multistep=True,
          aliases=("DPM++ 3M SDE", "k_dpmpp_3m_sde", "sample_dpmpp_3m_sde"),
          ref=_DPMPP + ", 3rd-order multistep SDE variant (k-diffusion's sample_dpmpp_3m_sde)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                 noise_sampler=None, seed=None):
    """SDE-DPM-Solver++(3M) as k-diffusion runs it, with h_η = (1 + η)·h:

        x_next = e^(−h_η)·x + (1 − e^(−h_η))·D0 + φ2·d1 − φ3·d2 + σ_next·√(1 − e^(−2ηh))·z

    (d1, d2 the divided differences of ``dpmpp_3m``, φ2 = (e^(−h_η) − 1)/h_η + 1, φ3 = φ2/h_η − ½). The φ3
    weight is the published one, half the Taylor weight (see ``samplers.multistep._third_order_d2_weight``),
    so the deterministic limit is second order; it is kept so images match k-diffusion / ComfyUI.
    """
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = _lam(sigma_next) - _lam(sigma)
            h_eta = h * (eta + 1)
            x = x * math.exp(-h_eta) - denoised * math.expm1(-h_eta)
            phi2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + d1 * phi2 - d2 * (phi2 / h_eta - 0.5)
            elif h_1 is not None:
                x = x + (denoised - d_1) * (phi2 * h / h_1)
            x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(-math.expm1(-2 * h * eta)))
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("ddpm", kind="ancestral", order=1, nfe_per_step=1, aliases=("DDPM", "sample_ddpm"),
          ref="Ho et al. 2020 (arXiv:2006.11239), eq. 6-7: the posterior q(x_{t−1} | x_t, x̂0)",
          final_step="denoise (the posterior at σ_next = 0 is x̂0), no noise")
def ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_noise=1.0, noise_sampler=None,
         seed=None):
    """Ancestral DDPM: a draw from the posterior q(x_next | x, x̂0) (fixed-small variance β̃), in VE coordinates.

    With ᾱ = 1/(1 + σ²) the posterior mean (√ᾱ_prev·β_t·x̂0 + √α_t·(1 − ᾱ_prev)·x_t)/(1 − ᾱ_t) and variance
    β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t become, for x = x_t/√ᾱ:

        x_next = (σ_next²/σ²)·x + (1 − σ_next²/σ²)·x̂0 + σ_next·√(1 − σ_next²/σ²)·z

    which is the ancestral step with η = 1 (``euler_ancestral``, ``ddim(eta=1)``), written from the paper.
    """
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        keep = (sigma_next / sigma) ** 2
        x = x * keep + denoised * (1 - keep)
        x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(1 - keep))
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("lcm", kind="ancestral", order=1, nfe_per_step=1, aliases=("LCM", "sample_lcm"),
          ref="Luo et al. 2023, Latent Consistency Models (arXiv:2310.04378), Alg. 3 multistep sampling; "
              "η as TCD's γ (Zheng et al. 2024, arXiv:2402.19159)",
          final_step="denoise (x = D(x, σ)), no noise")
def lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
        noise_sampler=None, seed=None):
    """Multistep consistency sampling: jump to x̂0 = D(x, σ), then re-noise to σ_next.

        x_next = x̂0 + σ_next·(√(1 − η²)·ε̂ + η·z),  ε̂ = (x − x̂0)/σ

    η = 1 (default) is LCM and equals diffusers' FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    on a flow model; η = 0 re-uses the predicted noise and is DDIM.
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"lcm's eta must be in [0, 1], got {eta}")
    keep = math.sqrt(1 - eta * eta)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if keep > 0:
            x = denoised + (x - denoised) * (keep * sigma_next / sigma)
        else:
            x = denoised
        x = _add_noise(x, noise_sampler, sigma, sigma_next, s_noise * eta * sigma_next)
        report(callback, x, i, sigma, sigma, denoised)
    return x

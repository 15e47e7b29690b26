"""The samplers the project is named for: Euler, Heun and DDIM (and the Runge-Kutta family in rk.py).

Each function is one paper algorithm, written against a prepared run (see :mod:`samplers.core.run`):
``model(x, sigma)`` takes a Python float and ``sigmas`` is a list of floats, so nothing in a loop reads
the device.
"""
from __future__ import annotations

import math

import torch

from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import churn, get_ancestral_step, to_d

_CHURN_REF = "Karras et al. 2022 (arXiv:2206.00364), Alg. 2"


@register("euler", kind="ode", order=1, nfe_per_step=1, aliases=("sample_euler",),
          ref=_CHURN_REF, final_step="euler (x = D(x, σ) when σ_next = 0)")
def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_churn=0.0, s_tmin=0.0,
          s_tmax=math.inf, s_noise=1.0, noise_sampler=None, seed=None):
    """Euler steps on the PF-ODE, with optional EDM churn (Karras et al. 2022, Alg. 2 without the 2nd-order part)."""
    n = len(sigmas) - 1
    for i in progress(sigmas, disable):
        x, sigma_hat = churn(x, sigmas[i], n, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        # Euler step
        x = torch.add(x, d, alpha=sigmas[i + 1] - sigma_hat)  # x + d·(σ_next − σ̂), one fused op
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
    return x


@register("heun", kind="ode", order=2, nfe_per_step=2, aliases=("sample_heun",),
          ref=_CHURN_REF, final_step="euler (Heun's correction needs D at σ = 0)")
def heun(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_churn=0.0, s_tmin=0.0,
         s_tmax=math.inf, s_noise=1.0, noise_sampler=None, seed=None):
    """Heun's 2nd-order method with churn (Karras et al. 2022, Alg. 2); Euler on the final step to σ = 0."""
    n = len(sigmas) - 1
    for i in progress(sigmas, disable):
        x, sigma_hat = churn(x, sigmas[i], n, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        sigma_next = sigmas[i + 1]
        denoised = model(x, sigma_hat)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = denoised  # the Euler step x + d·dt to σ = 0 is the denoised estimate itself
        else:
            # Euler predictor x_2 = x + d·dt, d = (x − D)/σ̂: the same point as D + (σ_next/σ̂)·(x − D)
            x_2 = torch.lerp(denoised, x, sigma_next / sigma_hat)
            # Heun's trapezoid x + (d + d_2)·dt/2, written as (x + x_2)/2 + (x_2 − D_2)·dt/(2σ_next)
            # (d·dt = x_2 − x, d_2 = (x_2 − D_2)/σ_next). Its first half x + d·dt/2 = (x + x_2)/2 is taken before
            # x_2 is evaluated: a caller that moves the evaluated point (a diffusers pipeline's edit, see
            # interop.diffusers_scheduler) changes d_2 only, as diffusers' HeunDiscreteScheduler steps
            half = torch.lerp(x, x_2, 0.5)
            denoised_2 = model(x_2, sigma_next)
            x = torch.add(half, x_2 - denoised_2, alpha=dt / (2 * sigma_next))
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
    return x


@register("heun_flow", kind="ode", order=2, nfe_per_step=2, from_infinity=True,
          aliases=("flow_match_heun",), ref="Heun's method in flow time t = σ/(1 + σ) (diffusers' FlowMatchHeun)",
          final_step="euler in t (x = D(x, σ) when σ_next = 0)")
def heun_flow(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Heun's trapezoid on the rectified-flow ODE dy/dt = v in flow time t = σ/(1 + σ), y = x/(1 + σ) (the
    model's own x_t, v = (y − D)/t), as diffusers' FlowMatchHeunDiscreteScheduler steps; Euler on the last step.

    In σ this is not ``heun``: the trapezoid weighs the slopes at σ and σ' by (1 + 2σ − σ')/(1 + σ) and
    (1 + σ')/(1 + σ) rather than ½ and ½ — and in t it is defined from t = 1 (σ = inf, where ``x`` is the
    unit noise and y = x), so it takes its first step itself."""
    def flow(sigma):  # (t, 1/(1 + σ)) with t = 1, scale 0 at σ = inf
        return (1.0, 0.0) if math.isinf(sigma) else (sigma / (1.0 + sigma), 1.0 / (1.0 + sigma))

    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        (t, scale), (t_next, scale_next) = flow(sigma), flow(sigma_next)
        denoised = model(x, sigma)
        y = x if math.isinf(sigma) else x * scale  # from the point the model was evaluated at
        v = (y - denoised) / t
        if sigma_next == 0:
            x = denoised  # y + v·(0 − t) = D: the Euler step to t = 0
        else:
            y_2 = torch.add(y, v, alpha=t_next - t)
            x_2 = y_2 / scale_next
            denoised_2 = model(x_2, sigma_next)
            # the slope at the evaluated point, y_2 = x_2·scale': a caller that moves it (a diffusers pipeline's
            # edit, see interop.diffusers_scheduler) changes v_2 only, as diffusers' FlowMatchHeun steps
            v_2 = (x_2 * scale_next - denoised_2) / t_next
            x = torch.add(y, v + v_2, alpha=(t_next - t) / 2) / scale_next
        report(callback, x, i, sigma, sigma, denoised)
    return x


def vp_scale(sigma: float) -> float:
    """√ᾱ = 1/√(1 + σ²) of a VE σ (0 at σ = inf): the VP state is x·vp_scale(σ)."""
    return 0.0 if math.isinf(sigma) else 1.0 / math.sqrt(1.0 + sigma * sigma)


def from_vp_state(x, sigma: float):
    """The VE x of a VP state at σ (``vp_state=True``): x·√(1 + σ²); at σ = inf the unit noise itself, as
    :func:`samplers.initial_latent` gives it there."""
    return x if math.isinf(sigma) else x * math.sqrt(1.0 + sigma * sigma)


def to_vp_state(x, sigma: float):
    """The VP state x/√(1 + σ²) of a VE x at σ (``vp_state=True``); x itself at σ = 0."""
    return x if sigma == 0 or math.isinf(sigma) else x * vp_scale(sigma)


VP_STATE_DOC = ("``vp_state=True`` (default False) takes ``x`` and returns the result in the VP state of the "
                "model, x_vp = x/√(1 + σ²) at the first and at the last σ: a run from pure noise starts from the unit "
                "noise itself (x_ve = z·√(1 + σ_0²), not z·σ_0) and, on a schedule that ends at σ > 0, returns "
                "x/√(1 + σ_end²), the latent a VP sampler holds there. That is A1111's timestep samplers' "
                "convention (x_T = randn; DDIM / PLMS return the VP latent at timestep 1, which A1111 decodes), "
                "which their labels \"DDIM\" / \"PLMS\" set; on a schedule ending at 0 only the start differs.")


@register("ddim", kind="ode", order=1, nfe_per_step=1, aliases=("sample_ddim",),
          ref="Song et al. 2021 (arXiv:2010.02502), eq. 12")
def ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=0.0, s_noise=1.0,
         noise_sampler=None, seed=None, vp_state=False):
    """DDIM, eq. 12 of Song et al. (2021), in VE coordinates: x_next = x0 + √(σ_next² − σ_η²)·ε̂ + σ_η·z.

    With x = x_t/√ᾱ and σ = √((1−ᾱ)/ᾱ), the paper's σ_t(η)/√ᾱ_prev is η·√(σ_next²(σ² − σ_next²)/σ²), the
    ancestral σ_up. η = 0 is deterministic (and equals ``euler``); η = 1 is DDPM (and equals
    ``euler_ancestral``).

    ``vp_state``: see :data:`VP_STATE_DOC` (A1111's "DDIM": on its timesteps, ``a1111:Timesteps``).
    """
    if vp_state:
        x = from_vp_state(x, sigmas[0])
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        eps = (x - denoised) / sigma  # predicted noise ε̂
        _, sigma_eta = get_ancestral_step(sigma, sigma_next, eta)
        x = denoised + eps * math.sqrt(sigma_next**2 - sigma_eta**2)
        if sigma_eta > 0:
            x = x + noise_sampler(sigma, sigma_next) * (s_noise * sigma_eta)
        report(callback, x, i, sigma, sigma, denoised)
    return to_vp_state(x, sigmas[-1]) if vp_state else x

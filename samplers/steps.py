"""Pieces of a step shared by several samplers, written once.

All take and return Python floats for sigmas (never tensors), so using them costs no host sync.
"""
from __future__ import annotations

import math


def to_d(x, sigma: float, denoised):
    """The probability-flow ODE derivative dx/dσ = (x − D(x, σ)) / σ (Karras et al. 2022, eq. 4 in VE form)."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step σ → σ_next into a deterministic step to σ_down plus fresh noise of size σ_up.

    σ_up = min(σ_next, η·sqrt(σ_next²(σ² − σ_next²)/σ²)), σ_down = sqrt(σ_next² − σ_up²): for η = 1 this is
    the DDPM posterior step (Ho et al. 2020), for η = 0 the deterministic one.
    """
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def churn(x, sigma: float, n_steps: int, noise_sampler, s_churn: float, s_tmin: float, s_tmax: float,
          s_noise: float):
    """EDM stochastic churn (Karras et al. 2022, Alg. 2, lines 4-6): raise σ to σ̂ = σ(1 + γ) with fresh noise.

    Returns (x̂, σ̂). With γ = 0 (the default s_churn = 0) it returns (x, σ) and draws no noise.
    """
    gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    eps = noise_sampler(sigma, sigma_hat) * s_noise
    return x + eps * math.sqrt(sigma_hat**2 - sigma**2), sigma_hat

"""Pieces of a step shared by several samplers, written once.

All take and return Python floats for sigmas (never tensors), so using them costs no host sync.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


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


def sde_eta_from_infinity(options: dict, sigma_next: float) -> float:
    """The part of σ_1 drawn fresh on the shared first step from σ = inf (:func:`samplers.core.run.step_from_infinity`)
    for a sampler whose ``eta`` is the SDE's η (dpmpp_2m_sde, dpmpp_3m_sde, seeds_2, seeds_3): its own step keeps
    (σ_1/σ_0)·e^(−ηh) = (σ_1/σ_0)^(1+η) of a state of size σ_0, a fraction (σ_1/σ_0)^η → 0 as σ_0 → ∞, and draws
    σ_1·√(1 − e^(−2ηh)) → σ_1 fresh: all of σ_1 is fresh for any η > 0 (1), none for η = 0 (the ODE). The ancestral
    split by η itself (√(1 − η²) of the noise kept) is the limit of an ancestral step, not of theirs."""
    return 1.0 if options["eta"] > 0 else 0.0


def churn(x, sigma: float, n_steps: int, noise_sampler, s_churn: float, s_tmin: float, s_tmax: float,
          s_noise: float):
    """EDM stochastic churn (Karras et al. 2022, Alg. 2, lines 4-6): raise σ to σ̂ = σ(1 + γ) with fresh noise.

    ε is fresh at every step, as EDM's and k-diffusion's (``torch.randn_like``): a Brownian path's churn comes from its
    independent generator (:func:`samplers.core.noise.churn_noise`). Returns (x̂, σ̂). With γ = 0 (the default
    s_churn = 0) it returns (x, σ) and draws no noise — but for A1111's draws with churn on, whose stream counts the
    draw k-diffusion makes at every step, a step outside the churn window included
    (:func:`samplers.core.noise.counts_unused_draws`): that draw is taken and left unused.
    """
    gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        if s_churn > 0:
            from .noise import counts_unused_draws  # noise imports validate, which imports this module

            if counts_unused_draws(noise_sampler):
                noise_sampler(sigma, sigma)
        return x, sigma
    from .noise import churn_noise  # noise imports validate, which imports this module

    sigma_hat = sigma * (gamma + 1)
    # a Brownian path's churn is drawn independently of it: consecutive steps' churn intervals overlap (churn_noise)
    eps = churn_noise(noise_sampler, sigma, sigma_hat) * s_noise
    return x + eps * math.sqrt(sigma_hat**2 - sigma**2), sigma_hat


# ----------------------------------------------------------------------------------------------------
# Exponential integrators (DPM-Solver, DPM-Solver++, UniPC, RES, SA-Solver): written in λ = −log σ with
# h = λ_next − λ; the first-order data-prediction step x_next = (σ_next/σ)·x + φ1(h)·D is exact for D constant.

SOLVER_TYPES = ("midpoint", "heun")
SDE3_VARIANTS = ("k-diffusion", "diffusers")  # dpmpp_3m_sde's second-divided-difference weight, by whose images


def multistep_order(available: int, i: int, n: int, lower_order_final: bool, euler_at_final: bool) -> int:
    """The order of step ``i`` of ``n`` of a 3M multistep method under diffusers' rules: ``available`` (the
    earlier outputs allow it, at most 3), 2 at the step before the last with ``lower_order_final`` and fewer than
    15 steps, 1 at the last step with ``euler_at_final``."""
    order = available
    if lower_order_final and n < 15 and i == n - 2:
        order = min(order, 2)
    if euler_at_final and i == n - 1:
        order = 1
    return order


def lam(sigma: float) -> float:
    """λ = −log σ (half the log-SNR); σ = 0 gives +inf."""
    return -math.log(sigma) if sigma > 0 else math.inf


def sigma_of(lambda_: float) -> float:
    """σ = e^(−λ), the inverse of :func:`lam`."""
    return math.exp(-lambda_)


def phi1(h: float) -> float:
    """1 − e^(−h): the weight of D in the first-order data-prediction step."""
    return -math.expm1(-h)


def phi2(h: float) -> float:
    """(e^(−h) − 1)/h + 1: the weight of the first divided difference (second order)."""
    return math.expm1(-h) / h + 1.0


def res_weights(h: float, c: float) -> tuple[float, float]:
    """RES multistep's weights (b1, b2) of the newest and the previous D for a step of length h in λ whose previous
    node is c·h away (Zhang et al. 2023, 2-step form): b1 = φ1(−h) − φ2(−h)/c, b2 = φ2(−h)/c with φ1(z) = (e^z − 1)/z,
    φ2(z) = (φ1(z) − 1)/z; the step is x·e^(−h) + h·(b1·D0 + b2·D1)."""
    phi1_ = math.expm1(-h) / -h
    phi2_ = (phi1_ - 1) / -h
    b2 = phi2_ / c
    return phi1_ - b2, b2


def check_solver_type(solver_type: str) -> str:
    """DPM-Solver++'s second-order variants: ``"midpoint"`` (the paper) or ``"heun"`` (diffusers' alternative)."""
    if solver_type not in SOLVER_TYPES:
        from .errors import InvalidOption

        raise InvalidOption(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
    return solver_type


def second_order_weight(h: float, r: float, solver_type: str) -> float:
    """The weight of D0 − D1 in the 2nd-order multistep update (r = h_last/h, Lu et al. 2022, Alg. 2)."""
    return phi1(h) / (2 * r) if solver_type == "midpoint" else phi2(h) / r


def add_noise(x, noise_sampler, sigma: float, sigma_next: float, scale: float):
    """x + scale·z with z = noise_sampler(σ, σ_next); no draw at all when ``scale`` is 0 (deterministic limit)."""
    return torch.add(x, noise_sampler(sigma, sigma_next), alpha=scale) if scale > 0 else x


# ----------------------------------------------------------------------------------------------------
# Polynomials as coefficient lists (constant term first), in Python floats: the Lagrange weights of the
# multistep methods (LMS, DEIS, SA-Solver) are computed on the host before each step's tensor work.
#
# Each method integrates the Lagrange basis over one step in a local variable measured in step lengths, so the
# polynomials' coefficients stay O(1) whatever the step size (SA-Solver: s = (λ_t − λ)/h). LMS and DEIS use τ over
# [0, 1], with the step's own node at τ = 0 and the earlier nodes at τ < 0: every factor (τ − τ_m) of a basis
# polynomial then has coefficients of one sign, so all its monomial coefficients share a sign, and so does every
# term of Σ_p c_p·m_p against positive moments m_p: the weight is a sum without cancellation, correct to a few ulps
# at any step size. Expanded about σ = 0 instead, the antiderivative is evaluated at σ_i and σ_{i+1} and the two
# values cancel: lms (order 4, σ 10 → 0.1 uniform in log σ) lost up to 1e-9 of dσ in a weight at 256 steps and
# 3e-7 at 1000, and at 10000 its weights summed to dσ only within 6e-3 (tests/test_multistep.py).


def lagrange_basis(nodes: Sequence[float], j: int) -> list[float]:
    """Monomial coefficients of the Lagrange basis polynomial ℓ_j over ``nodes`` (ℓ_j(nodes[m]) = [m == j])."""
    poly = [1.0]
    for m, node in enumerate(nodes):
        if m == j:
            continue
        denom = nodes[j] - node
        nxt = [0.0] * (len(poly) + 1)  # poly · (t − node) / denom
        for k, c in enumerate(poly):
            nxt[k + 1] += c / denom
            nxt[k] -= c * node / denom
        poly = nxt
    return poly


def basis_integrals(nodes: Sequence[float], moments: Sequence[float]) -> list[float]:
    """∫_0^1 ℓ_j(τ)·w(τ) dτ for each Lagrange basis polynomial ℓ_j over ``nodes``, from the weight's moments
    ``moments[p]`` = ∫_0^1 τ^p·w(τ) dτ (at least ``len(nodes)`` of them). With every node ≤ 0 and the moments
    positive, as lms and deis have them, each sum is free of cancellation (the comment above)."""
    return [sum(c * m for c, m in zip(lagrange_basis(nodes, j), moments)) for j in range(len(nodes))]


def exp_moments(z: float, kmax: int) -> list[float]:
    """g_k(z) = ∫_0^1 s^k e^{−z s} ds for k = 0..kmax, stable for every z ≥ 0."""
    if z < 2.0:  # alternating series, no cancellation for small z
        out = []
        for k in range(kmax + 1):
            term, total, m = 1.0, 0.0, 0
            while True:
                add = term / (k + m + 1)
                total += add
                m += 1
                term *= -z / m
                if abs(add) < 1e-18 * abs(total) or m > 60:
                    break
            out.append(total)
        return out
    g = [-math.expm1(-z) / z]  # upward recursion is stable for z ≥ 2 and small k
    for k in range(1, kmax + 1):
        g.append((k * g[-1] - math.exp(-z)) / z)
    return g

"""Stochastic solvers of the reverse-time SDE family: ER-SDE, SA-Solver, SEEDS and Restart sampling.

All four are written in the canonical VE space (x = x0 + σ·n, denoiser D, λ = −log σ), where the signal
coefficient α of the papers' VP formulas is 1: a VP formula becomes the VE one by dividing x_t by α_t,
and σ_VE = σ_VP/α = e^{−λ}. Every coefficient is a Python float computed from the schedule (no host read
inside a loop); noise comes only from ``noise_sampler(sigma, sigma_next)``.

Final step to σ = 0: ER-SDE, SA-Solver and SEEDS take the data-prediction limit of their own update,
which is x = D(x, σ) (each formula's coefficient of x and of the noise vanishes as λ_next → ∞); Restart
takes an Euler step, which is the same x = D(x, σ).
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np
import torch

from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import basis_integrals, exp_moments, sde_eta_from_infinity, to_d
from ..core.errors import InvalidInput, InvalidOption, InvalidType, LimitExceeded
from ..core.noise import check_tree_draws, path_kind
from ..core.validate import callable_value

# ----------------------------------------------------------------------------------------------------
# helpers (Python floats only)


def _sa_weights(lambdas: Sequence[float], lambda_s: float, lambda_t: float, tau: float) -> list[float]:
    """Weights w_j with Σ_j w_j·D_j = (1+τ²)∫_{λ_s}^{λ_t} e^{(1+τ²)(λ−λ_t)} P(λ) dλ (SA-Solver, eq. 15/18).

    P interpolates the data predictions D_j at ``lambdas`` (Lagrange). The integral is taken in the scaled
    variable s = (λ_t − λ)/h, so the coefficients stay O(1) for any absolute λ.
    """
    a = 1.0 + tau * tau
    h = lambda_t - lambda_s
    z = a * h
    nodes = [(lambda_t - lam) / h for lam in lambdas]
    return [z * w for w in basis_integrals(nodes, exp_moments(z, len(nodes) - 1))]


def _sa_simple_order_2(lambda_prev: float, lambda_s: float, lambda_t: float, tau: float,
                       corrector: bool) -> list[float]:
    """The simplified 2-node weights of SA-Solver's Appendix D (what diffusers always uses at order 2).

    Predictor (nodes λ_s, λ_prev): the slope term gets (1+τ²)h²/(2h_prev). Corrector (nodes λ_t, λ_s): D_t
    gets (1+τ²)h/2. Both differ from the exact Lagrange integral by O(h³).
    """
    a = 1.0 + tau * tau
    h = lambda_t - lambda_s
    total = -math.expm1(-a * h)
    if corrector:
        w_new = 0.5 * a * h
        return [w_new, total - w_new]  # [D_t, D_s]
    w_old = -0.5 * a * h * h / (lambda_s - lambda_prev)
    return [total - w_old, w_old]  # [D_s, D_prev]


# SA-Solver's coefficients as diffusers' SASolverScheduler computes them (algorithm_type="data_prediction", diffusers
# 0.42.1 scheduling_sasolver.py): float32 CPU scalar tensors from its float32 σ table, term by term in its order of
# operations, so each value has its bits (tests/test_shim_configs.py). Its closed-form integrals ∫ e^{(1+τ²)λ}·λ^k dλ
# grow as e^{(1+τ²)λ_t} and its expanded Lagrange coefficients as λ^k, and their sums cancel in float32 at small steps:
# its image is up to 1.6e-4 of the latents' scale from the exact weights' with a fourth-order corrector, 1.3e-3 with a
# fourth-order predictor and no lower_order_final (0.28 on a model of larger gain; docs/diffusers.md).
SA_WEIGHTS = ("exact", "diffusers")
SA_DIFFUSERS_MAX_ORDER = 4  # its get_coefficients_fn takes orders 1-4


def _diffusers_vp(sigma: float):
    """σ_VP = σ·α and λ = log α − log σ_VP of one float32 σ table entry, as diffusers' SASolverScheduler has them
    (``_sigma_to_alpha_sigma_t``, α = 1/√(σ² + 1), and its step's λ), as float32 scalar tensors."""
    s = torch.tensor(sigma, dtype=torch.float32)
    alpha = 1 / ((s**2 + 1) ** 0.5)
    sigma_vp = s * alpha
    return sigma_vp, torch.log(alpha) - torch.log(sigma_vp)


def _diffusers_lagrange(lambdas: list) -> list[list]:
    """diffusers' ``lagrange_polynomial_coefficient``: each Lagrange basis polynomial through ``lambdas`` (1-4 nodes)
    expanded in powers of λ, highest first: 1/d, −Σ(others)/d, Σ(pair products)/d, −Π(others)/d, d the product of
    the node's differences to the others, written as diffusers writes each term."""
    rows = []
    for i, node in enumerate(lambdas):
        o = lambdas[:i] + lambdas[i + 1:]
        if not o:
            rows.append([1])
            continue
        d = node - o[0]
        for other in o[1:]:
            d = d * (node - other)
        if len(o) == 1:
            terms = [-o[0]]
        elif len(o) == 2:
            terms = [-o[0] - o[1], o[0] * o[1]]
        else:
            terms = [-o[0] - o[1] - o[2], o[0] * o[1] + o[0] * o[2] + o[1] * o[2], -o[0] * o[1] * o[2]]
        rows.append([1 / d] + [term / d for term in terms])
    return rows


def _diffusers_exp_integral(k: int, start, end, tau: float):
    """diffusers' ``get_coefficients_exponential_positive``: ∫_start^end e^{(1+τ²)λ}·λ^k dλ (k = 0-3) in closed
    form, in the variable (1+τ²)λ."""
    a = 1 + tau**2
    end_cov, start_cov = a * end, a * start
    decay = torch.exp(-(end_cov - start_cov))
    if k == 0:
        return torch.exp(end_cov) * (1 - decay) / a
    if k == 1:
        return torch.exp(end_cov) * ((end_cov - 1) - (start_cov - 1) * decay) / (a**2)
    if k == 2:
        return (torch.exp(end_cov) * ((end_cov**2 - 2 * end_cov + 2) - (start_cov**2 - 2 * start_cov + 2) * decay)
                / (a**3))
    return (torch.exp(end_cov) * ((end_cov**3 - 3 * end_cov**2 + 6 * end_cov - 6)
                                  - (start_cov**3 - 3 * start_cov**2 + 6 * start_cov - 6) * decay) / (a**4))


def _ve_alpha(sigma: float) -> float:
    """α = 1/√(1 + σ²) of a VE σ: the VP latent is α·x (the diffusers shim's own conversion, in float64)."""
    return 1 / math.sqrt(1 + sigma * sigma)


def sa_diffusers_step_coefficients(sigmas: Sequence[float], i: int, order: int, tau: float, corrector: bool):
    """The VP coefficients of SA-Solver's step as diffusers' SASolverScheduler computes them, float32 scalar tensors
    (c_x, [c_j], c_n) of its x_t = c_x·x_s + Σ_j c_j·D_j + c_n·z (``stochastic_adams_bashforth_update`` /
    ``stochastic_adams_moulton_update``, the VP latents x_s and x_t, D_j newest first): c_x = e^{−τ²h}·σ_t/σ_s,
    c_j = (1+τ²)·σ_t·e^{−τ²λ_t}·g_j with g_j its ``get_coefficients_fn`` (the Lagrange basis in λ expanded in powers
    times the closed-form exponential integrals, plus the O(h³) term of its simplified order-2 weights), and
    c_n = σ_t·√(1 − e^{−2τ²h}); σ here σ_VP = σ·α. The predictor of step ``i`` is σ_i → σ_{i+1} through the nodes
    σ_i, σ_{i−1}, …; the corrector of step ``i`` redoes σ_{i−1} → σ_i through σ_i, σ_{i−1}, …. τ is the value its
    ``tau_func`` returns (a Python number, as diffusers takes it)."""
    s, t = (i - 1, i) if corrector else (i, i + 1)
    sigma_t, lambda_t = _diffusers_vp(sigmas[t])
    sigma_s0, lambda_s0 = _diffusers_vp(sigmas[s])
    h = lambda_t - lambda_s0
    newest = t if corrector else s
    lagrange = _diffusers_lagrange([_diffusers_vp(sigmas[newest - k])[1] for k in range(order)])
    g = []
    for row in lagrange:
        coefficient = 0
        for j in range(order):
            coefficient = coefficient + row[j] * _diffusers_exp_integral(order - 1 - j, lambda_s0, lambda_t, tau)
        g.append(coefficient)
    a = 1 + tau**2
    if order == 2:  # its simplified order-2 weights: the O(h³) term it adds to the Lagrange ones
        tail = h * a - 1 + torch.exp(a * (-h))
        if corrector:
            term = 1.0 * torch.exp(a * lambda_t) * (h / 2 - tail / (a**2 * h))
        else:
            lambda_prev = _diffusers_vp(sigmas[s - 1])[1]
            term = 1.0 * torch.exp(a * lambda_t) * (h**2 / 2 - tail / (a**2)) / (lambda_s0 - lambda_prev)
        g = [g[0] + term, g[1] - term]
    scale = a * sigma_t * torch.exp(-(tau**2) * lambda_t)
    return (torch.exp(-(tau**2) * h) * (sigma_t / sigma_s0), [scale * gj for gj in g],
            sigma_t * torch.sqrt(1 - torch.exp(-2 * tau**2 * h)))


def sa_diffusers_coefficients(sigmas: Sequence[float], i: int, order: int, tau: float,
                              corrector: bool) -> tuple[float, list[float], float]:
    """:func:`sa_diffusers_step_coefficients` for the VE state, as floats (c_x, [w_j], c_n): a VE latent is the VP
    one over α, so c_j and c_n are divided by α_t and c_x is multiplied by α_s/α_t (in float64: what remains of
    diffusers' float32 is its coefficients' own values). Read back with ``numpy()`` (CPU tensors: no device is
    waited for)."""
    s, t = (i - 1, i) if corrector else (i, i + 1)
    c_x, c, c_n = sa_diffusers_step_coefficients(sigmas, i, order, tau, corrector)
    alpha_s, alpha_t = _ve_alpha(sigmas[s]), _ve_alpha(sigmas[t])
    return (float(c_x.numpy()) * alpha_s / alpha_t, [float(cj.numpy()) / alpha_t for cj in c],
            float(c_n.numpy()) / alpha_t)


# Gauss-Legendre nodes on [0, 1] for the ER-SDE integrals (in log σ, where the integrands are smooth).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_GL_X = [(float(v) + 1.0) / 2.0 for v in _GL_X]
_GL_W = [float(v) / 2.0 for v in _GL_W]
# ER-SDE's quadratures: "gauss_legendre" (the registry's), "riemann" (ComfyUI's sample_er_sde: a left Riemann sum
# with 200 points, uniform in σ from σ_t).
ER_SDE_QUADRATURES = ("gauss_legendre", "riemann")
RIEMANN_POINTS = 200


def er_sde_default_noise_scaler(sigma: float) -> float:
    """ComfyUI's default ER-SDE noise-scale function φ(σ) = σ·(e^{σ^0.3} + 10) (Cui et al. 2023, sec. 4)."""
    return sigma * (math.exp(sigma**0.3) + 10.0)


def _default_log_scaler(sigma: float) -> float:
    # log φ(σ) without overflow for huge σ: log σ + σ^0.3 + log(1 + 10·e^{−σ^0.3})
    p = sigma**0.3
    return math.log(sigma) + p + math.log1p(10.0 * math.exp(-p))


# ----------------------------------------------------------------------------------------------------
# ER-SDE


def _er_sde_points(sigmas, max_stage: int, quadrature: str):
    """Every σ at which er_sde's loop evaluates φ, computed by the loop's own expressions (so that the values checked
    before the run are the very floats the loop reads)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            continue
        yield sigma_next
        yield sigma
        if min(max_stage, i + 1) >= 2:
            if quadrature == "riemann":
                step = (sigma - sigma_next) / RIEMANN_POINTS
                for k in range(RIEMANN_POINTS):
                    yield sigma_next + k * step
            else:
                u0, u1 = math.log(sigma_next), math.log(sigma)
                for xg in _GL_X:
                    yield math.exp(u0 + xg * (u1 - u0))


@register("er_sde", kind="sde", order=2, nfe_per_step=1, eta_from_infinity=1.0,
          aliases=("ER SDE", "ER-SDE-Solver", "sample_er_sde"),
          ref="Cui et al. 2023 (arXiv:2309.06169), ER-SDE-Solver-3; ComfyUI sample_er_sde",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_noise=1.0, noise_scaler=None,
           max_stage=3, quadrature="gauss_legendre", noise_sampler=None, seed=None):
    """ER-SDE-Solver (Cui et al. 2023, arXiv:2309.06169, Alg. 1-3 with α = 1), stages 1-3 by ``max_stage``.

    The extended reverse-time SDE family is indexed by a noise-scale function φ (``noise_scaler``, a Python
    float function of σ; default ComfyUI's φ(σ) = σ(e^{σ^0.3} + 10)). One step from σ_s to σ_t with
    r = φ(σ_t)/φ(σ_s):

        x ← r·x + (1 − r)·D + (σ_t − σ_s + φ(σ_t)∫_{σ_t}^{σ_s} dσ/φ)·D′ + (Δσ²/2 + φ(σ_t)∫(σ − σ_s)/φ dσ)·D″
            + s_noise·√(σ_t² − r²σ_s²)·z

    with D′, D″ finite differences of past denoised values in σ (stage 2, 3; lower stages while the
    history fills). φ(σ) = σ gives r = σ_t/σ_s, zero noise: the deterministic limit (stage 1 is Euler).
    The integrals are done by 12-point Gauss-Legendre in log σ (``quadrature="gauss_legendre"``, exact to rounding
    for smooth φ); ``quadrature="riemann"`` is ComfyUI's rule, a left Riemann sum of 200 points uniform in σ from
    σ_t (its ``er_sde`` label sets it; its error is O(step/200): 1.5e-3 on a 10-step Karras run). Stage 1 takes no
    integral: ``quadrature`` given with ``max_stage=1`` is refused, as it would not be read.
    Order in the deterministic limit: 1 for stage 1, 2 for stages 2 and 3 (measured slopes 2.04 and 2.12):
    D′ is a backward difference, first-order accurate at σ_s, and stage 3 does not correct it, so the
    third stage lowers the error constant but not the order. Final step: x = D(x, σ) when σ_next = 0.
    """
    if max_stage not in (1, 2, 3):
        raise InvalidInput(f"max_stage must be 1, 2 or 3, got {max_stage!r}")
    if quadrature not in ER_SDE_QUADRATURES:
        raise InvalidInput(f"quadrature must be one of {ER_SDE_QUADRATURES}, got {quadrature!r}")
    if noise_scaler is None:
        log_phi = _default_log_scaler
    else:
        phi_logs: dict = {}

        def log_phi(s):  # φ is a pure function of σ: each σ the run reads is evaluated (and checked) once
            if s not in phi_logs:
                phi_logs[s] = math.log(callable_value("noise_scaler", noise_scaler, (s,), "noise_scaler(sigma)",
                                                      lo=0.0, lo_open=True, rule="it is the ER-SDE noise scale φ(σ), positive and increasing "
                                                      "in σ (ComfyUI's default: σ·(e^{σ^0.3} + 10))"))
            return phi_logs[s]
        for s in _er_sde_points(sigmas, max_stage, quadrature):  # before the first model call
            log_phi(s)
    old_denoised = old_denoised_d = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            stage = min(max_stage, i + 1)
            log_phi_t = log_phi(sigma_next)
            r = math.exp(log_phi_t - log_phi(sigma))
            x = r * x + (1 - r) * denoised  # stage 1
            if stage >= 2:
                # ∫_{σ_t}^{σ_s} φ(σ_t)/φ(σ)·(σ − σ_s)^k dσ for k = 0, 1
                s0 = s1 = 0.0
                if quadrature == "riemann":  # ComfyUI: Σ_k f(σ_t + k·δ)·δ, δ = (σ_s − σ_t)/200, k = 0 … 199
                    step = (sigma - sigma_next) / RIEMANN_POINTS
                    for k in range(RIEMANN_POINTS):
                        lam = sigma_next + k * step
                        f = math.exp(log_phi_t - log_phi(lam)) * step
                        s0 += f
                        s1 += f * (lam - sigma)
                else:  # in u = log σ
                    u0, u1 = math.log(sigma_next), math.log(sigma)
                    for xg, wg in zip(_GL_X, _GL_W):
                        lam = math.exp(u0 + xg * (u1 - u0))
                        f = math.exp(log_phi_t - log_phi(lam)) * lam * wg * (u1 - u0)
                        s0 += f
                        s1 += f * (lam - sigma)
                dt = sigma_next - sigma
                denoised_d = (denoised - old_denoised) / (sigma - sigmas[i - 1])
                x = x + (dt + s0) * denoised_d
                if stage >= 3:
                    denoised_u = (denoised_d - old_denoised_d) / ((sigma - sigmas[i - 2]) / 2)
                    x = x + (dt**2 / 2 + s1) * denoised_u
                old_denoised_d = denoised_d
            # variance σ_t²(1 − (rσ_s/σ_t)²); a fraction below 1e-12 is rounding of r (φ(σ) = σ gives exactly 0)
            frac = 1.0 - (r * sigma / sigma_next) ** 2
            noise_std = sigma_next * math.sqrt(frac) * s_noise if frac > 1e-12 else 0.0
            if noise_std > 0:
                x = x + noise_sampler(sigma, sigma_next) * noise_std
        old_denoised = denoised
        report(callback, x, i, sigma, sigma, denoised)
    return x


# ----------------------------------------------------------------------------------------------------
# SA-Solver

# ComfyUI's default SDE interval is 20 %-80 % of the model's time range: percent_to_sigma(0.2) and (0.8), for SD 1.x's
# discrete schedule σ ∈ [0.57118887, 5.09240818] (timesteps 799.2 and 199.8 of the scaled-linear table, ComfyUI's
# float32 log-σ interpolation; the ComfyUI adapter takes the model's own).
SA_SDE_INTERVAL = (5.092408180236816, 0.5711888670921326)


def _check_sa_weights(weights, predictor_order: int, corrector_order: int, simple_order_2: bool) -> None:
    """``weights``: "exact" (the registry's, to rounding at any step) or "diffusers" (:func:`sa_diffusers_coefficients`:
    SASolverScheduler's float32 ones, whose orders run to 4 and whose order-2 steps are the simplified ones)."""
    if weights not in SA_WEIGHTS:
        raise InvalidInput(f"SA-Solver weights must be 'exact' or 'diffusers' (diffusers' SASolverScheduler's float32 "
                           f"computation of them), got {weights!r}")
    if weights != "diffusers":
        return
    if max(predictor_order, corrector_order) > SA_DIFFUSERS_MAX_ORDER:
        raise InvalidOption(f"weights='diffusers' with predictor_order={predictor_order} and corrector_order="
                            f"{corrector_order}: diffusers' SASolverScheduler computes its weights for orders 1-"
                            f"{SA_DIFFUSERS_MAX_ORDER} only; use orders up to {SA_DIFFUSERS_MAX_ORDER}, or "
                            "weights='exact'")
    if not simple_order_2 and max(predictor_order, corrector_order) >= 2:
        raise InvalidOption("weights='diffusers' with simple_order_2=False: diffusers' SASolverScheduler always takes "
                            "the simplified order-2 weights, so its order-2 steps are not the Lagrange ones asked for; "
                            "pass simple_order_2=True, or weights='exact'")


def _sa_orders(n: int, predictor_order: int, corrector_order: int, lower_order_final, comfy_orders: bool):
    """Each step's (predictor, corrector) order: capped by the points the history holds, and by the steps left under
    ComfyUI's rule (``comfy_orders``) or diffusers' (``lower_order_final=True``). A pure function of the schedule's
    length, so the run knows every step's before its first model call."""
    orders = []
    for i in range(n):
        p, c = min(predictor_order, i + 1), min(corrector_order, i + 1)
        if comfy_orders:
            p, c = min(p, n - 1 - i), min(c, n - i)
        elif lower_order_final is True:
            p, c = min(p, n - i), min(c, n - i + 2)
        orders.append((p, c))
    return orders


def _sa_diffusers_plan(sigmas, taus: list, orders: list, pece: bool) -> tuple[dict, dict]:
    """``weights="diffusers"``: every step's coefficients (:func:`sa_diffusers_coefficients`), the predictor's and the
    corrector's by step, for the steps that take them. They depend on σ and τ only, so they are computed (and each
    checked to be finite) before the first model call, and the loop reads Python floats. The corrector of step ``i``
    redoes step ``i − 1`` with that step's τ."""
    predictor, corrector = {}, {}
    for i, (p, c) in enumerate(orders):
        if i > 0 and c > 0 and (sigmas[i + 1] > 0 or pece):
            corrector[i] = _sa_diffusers_finite(sigmas, i, c, taus[i - 1], corrector=True)
        if sigmas[i + 1] != 0:
            predictor[i] = _sa_diffusers_finite(sigmas, i, p, taus[i], corrector=False)
    return predictor, corrector


def _sa_diffusers_finite(sigmas, i: int, order: int, tau: float, corrector: bool) -> tuple[float, list[float], float]:
    """:func:`sa_diffusers_coefficients`, refused where one is not finite. SASolverScheduler's float32 arithmetic
    fails two ways on a schedule the exact weights run: its closed-form integrals e^{(1+τ²)λ_t}·λ_t^k (and the
    e^{−τ²λ_t} they are scaled by) overflow float32 once (1+τ²)·|λ_t| nears 88.7 (τ = 3.5 or 4 at EDM's σ_min
    0.002, λ = −log σ), and two σ that are one value in float32 give a zero λ difference it divides by (h = 0, or a
    Lagrange node's 1/0). Either way diffusers' own run is NaN; the run is refused before any model call, not failed
    with NaN after them all."""
    decay, w, spread = coefficients = sa_diffusers_coefficients(sigmas, i, order, tau, corrector)
    if all(math.isfinite(v) for v in (decay, *w, spread)):
        return coefficients
    s, t = (i - 1, i) if corrector else (i, i + 1)
    newest = t if corrector else s
    span = range(min(s, newest - order + 1), t + 1)  # every σ the step reads: its ends and its Lagrange nodes
    lam = {j: _diffusers_vp(sigmas[j])[1].numpy() for j in span}  # CPU tensors: read without a device sync
    same = next(((j, j + 1) for j in span[:-1] if lam[j] == lam[j + 1]), None)
    step = (f"sa_solver weights='diffusers': the {'corrector' if corrector else 'predictor'} of step {i} (σ "
            f"{float(sigmas[s])!r} → {float(sigmas[t])!r}, order {order}, τ = {tau:g}) has coefficients that are not "
            "finite in float32, as diffusers' SASolverScheduler computes them")
    if same is not None:
        a, b = same
        raise InvalidOption(f"{step}: σ {sigmas[a]!r} and {sigmas[b]!r} are one λ in float32 (its σ table is "
                            "float32), and it divides by their difference; give σ that are distinct in float32")
    reach = (1 + tau * tau) * abs(math.log(sigmas[t]))
    raise InvalidOption(f"{step}: its closed-form integrals e^((1+τ²)λ)·λ^k overflow float32 (3.4e38 = e^88.7) at "
                        f"(1+τ²)·|λ_t| = {reach:.3g}, λ_t = −log σ_t; use weights='exact' (the same weights computed "
                        "in float64 in a scaled variable, finite at any τ; the diffusers shim's sampler_options="
                        "{'weights': 'exact'}), or a smaller τ (eta or tau_func)")


def _sa_solver(model, x, sigmas, callback, disable, *, eta, s_noise, tau_func, sde_interval, predictor_order,
               corrector_order, simple_order_2, lower_order_final, pece, noise_sampler, weights):
    if not 1 <= predictor_order <= 6 or not 0 <= corrector_order <= 6:
        raise InvalidInput(f"predictor_order must be in 1..6 and corrector_order in 0..6 (0: no corrector), "
                         f"got {predictor_order!r} and {corrector_order!r}")
    _check_sa_weights(weights, predictor_order, corrector_order, simple_order_2)
    diffusers = weights == "diffusers"
    if tau_func is None:
        hi, lo = sde_interval

        def tau_func(sigma, sigma_next):
            return eta if hi >= sigma_next >= lo else 0.0
        given = False
    else:
        given = True
    n = len(sigmas) - 1
    comfy_orders = lower_order_final == "comfyui" and sigmas[-1] == 0  # ComfyUI lowers them only on a run to 0
    # τ is a pure function of (σ, σ_next): evaluated and checked on every step that reads it, before the first model
    # call (τ enters squared: any finite real whose square is finite)
    taus: list = [None] * n
    for i in range(n):
        if sigmas[i + 1] != 0:
            if given:
                tau = callable_value("tau_func", tau_func, (sigmas[i], sigmas[i + 1]), "tau_func(sigma, sigma_next)")
            else:
                tau = float(tau_func(sigmas[i], sigmas[i + 1]))
            if not math.isfinite(tau * tau):
                what = (f"tau_func({sigmas[i]:g}, {sigmas[i + 1]:g}) = {tau:g}" if given else f"eta = {tau:g}")
                raise InvalidOption(f"{what}: τ² overflows a float; τ must be below {math.sqrt(sys.float_info.max):.3g} "
                                    "(τ = 1 is the reverse SDE; large τ only replaces the state by fresh noise)")
            taus[i] = tau
    orders = _sa_orders(n, predictor_order, corrector_order, lower_order_final, comfy_orders)
    if diffusers:  # every step's float32 coefficients, checked before the first model call; the loop only reads them
        predictor_weights, corrector_weights = _sa_diffusers_plan(sigmas, taus, orders, pece)
    lambdas = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    history: list = []  # data predictions D at sigmas[i - k], newest last
    keep = max(predictor_order, corrector_order)
    x_prev = noise_prev = None
    tau_prev = 0.0
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        history = (history + [denoised])[-keep:]
        p, c = orders[i]
        # Corrector (Adams-Moulton through the new point), with the previous predictor's τ and noise.
        if i > 0 and c > 0 and (sigma_next > 0 or pece):
            lam_s, lam_t = lambdas[i - 1], lambdas[i]
            nodes = lambdas[i - c + 1:i + 1][::-1]  # λ_t, λ_s, ...
            if diffusers:  # computed before the loop (_sa_diffusers_plan)
                decay, w, _ = corrector_weights[i]
            else:
                decay = math.exp(-(1 + tau_prev**2) * (lam_t - lam_s))
                w = (_sa_simple_order_2(lam_s, lam_s, lam_t, tau_prev, corrector=True) if simple_order_2 and c == 2
                     else _sa_weights(nodes, lam_s, lam_t, tau_prev))
            x = decay * x_prev
            for k, wk in enumerate(w):
                x = x + history[-1 - k] * wk
            if noise_prev is not None:
                x = x + noise_prev
            if pece:
                denoised = model(x, sigma)
                history[-1] = denoised
        # Predictor (Adams-Bashforth through the past points).
        if sigma_next == 0:
            x_new = denoised
        else:
            tau = taus[i]
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            h = lam_t - lam_s
            if diffusers:  # computed before the loop (_sa_diffusers_plan)
                decay, w, spread = predictor_weights[i]
            else:
                decay, spread = math.exp(-(1 + tau**2) * h), sigma_next * math.sqrt(-math.expm1(-2 * tau**2 * h))
                w = (_sa_simple_order_2(lambdas[i - 1], lam_s, lam_t, tau, corrector=False)
                     if simple_order_2 and p == 2 else _sa_weights(lambdas[i - p + 1:i + 1][::-1], lam_s, lam_t, tau))
            x_new = decay * x
            for k, wk in enumerate(w):
                x_new = x_new + history[-1 - k] * wk
            noise_prev = None
            noise_std = spread * s_noise
            if noise_std > 0:
                noise_prev = noise_sampler(sigma, sigma_next) * noise_std
                x_new = x_new + noise_prev
            x_prev, tau_prev = x, tau
        x = x_new
        report(callback, x, i, sigma, sigma, denoised)
    return x


def _sa_eta_from_infinity(options: dict, sigma_next: float) -> float:
    """SA-Solver's first step from σ = inf (:func:`samplers.core.run.step_from_infinity`): its step keeps
    e^(−(1+τ²)h) of x, a fraction (σ_1/σ_0)^(τ²) → 0 of a state of size σ_0, and draws σ_1·√(1 − e^(−2τ²h)) → σ_1
    fresh, so all of σ_1 is fresh where τ ≠ 0 and none where τ = 0. τ is ``eta`` where ``sde_interval`` holds σ_1
    (ComfyUI's rule reads σ_next only) and 0 outside it; with a ``tau_func`` (not evaluated at σ = inf) all fresh."""
    if options["tau_func"] is not None:
        return 1.0
    hi, lo = options["sde_interval"]
    return 1.0 if options["eta"] != 0 and hi >= sigma_next >= lo else 0.0


_SA_REF = "Xue et al. 2023, SA-Solver (arXiv:2309.05019), eqs. 15 and 18; ComfyUI sample_sa_solver"
_SA_DOC = """

    Options: ``predictor_order`` (1-6) nodes of the stochastic Adams-Bashforth predictor;
    ``corrector_order`` (0-6) nodes of the Adams-Moulton corrector, the new point included (0: predictor
    only). τ, the SDE's stochasticity (τ = 0 is the PF-ODE, τ = 1 the reverse SDE), is
    ``tau_func(sigma, sigma_next)`` if given, else ``eta`` inside ``sde_interval = (σ_hi, σ_lo)`` (τ = eta
    when σ_hi ≥ σ_next ≥ σ_lo, ComfyUI's rule; the default interval is ComfyUI's 20 %-80 % on SD 1.x) and 0
    outside; ``eta`` or ``sde_interval`` given with ``tau_func``, and ``sde_interval`` with ``eta=0``, are refused, as
    they would not be read. τ enters squared, so the sign of a ``tau_func`` value is not read (diffusers'
    ``SASolverScheduler`` squares its ``tau_func`` too): −1 runs as 1.
    ``simple_order_2`` uses the paper's simplified 2-node weights (Appendix D; diffusers'
    ``SASolverScheduler`` always does). ``lower_order_final=True`` caps the predictor order by the steps
    left (diffusers' rule; its uncorrected order-1 last step makes the run second order), off by default;
    ``lower_order_final="comfyui"`` is ComfyUI's rule (``comfyui:sa_solver`` sets it): on a schedule that
    ends at 0, at step i of n the predictor order is at most n − 1 − i and the corrector's at most n − i.
    ``weights="diffusers"`` takes every coefficient of a step as diffusers' ``SASolverScheduler`` computes it, in
    float32 from the float32 σ (:func:`sa_diffusers_coefficients`; orders 1-4, with ``simple_order_2=True``, as it
    runs): the diffusers shim's default, to make that class's image; ``"exact"`` (the default) computes them exactly
    to rounding. ``"diffusers"`` computes every step's coefficients before the first model call and refuses a run
    where one is not finite in float32, where the class's own image is NaN: its e^{(1+τ²)λ}·λ^k overflows once
    (1+τ²)·|λ| nears 88.7 (λ = −log σ; τ = 3.5 at σ = 0.002), and two σ equal in float32 divide by 0.
    One step σ_s → σ_t, h = λ_t − λ_s:

        x_t = e^{−(1+τ²)h}·x_s + Σ_j w_j·D_j + s_noise·σ_t·√(1 − e^{−2τ²h})·z

    with w_j the integrals of the Lagrange basis against (1+τ²)e^{(1+τ²)(λ−λ_t)} (α = 1 in VE). With τ = 0
    the defaults (3, 4) are a fourth-order ODE method. Final step: x = D(x, σ) when σ_next = 0 (the limit of
    the order-1 update).
    """


@register("sa_solver", kind="sde", order=4, nfe_per_step=1, eta_from_infinity=_sa_eta_from_infinity,
          aliases=("SA-Solver", "sample_sa_solver"), ref=_SA_REF,
          final_step="denoise (x = D(x, σ) when σ_next = 0; no corrector before it)")
def sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
              tau_func=None, sde_interval=SA_SDE_INTERVAL, predictor_order=3, corrector_order=4,
              simple_order_2=False, lower_order_final=False, noise_sampler=None, seed=None, weights="exact"):
    """SA-Solver (Xue et al. 2023, arXiv:2309.05019), predictor-corrector in PEC mode (1 NFE per step).

    The corrector re-uses D at the predicted point (UniPC-style), so each step costs one model call."""
    return _sa_solver(model, x, sigmas, callback, disable, eta=eta, s_noise=s_noise, tau_func=tau_func,
                      sde_interval=sde_interval, predictor_order=predictor_order,
                      corrector_order=corrector_order, simple_order_2=simple_order_2,
                      lower_order_final=lower_order_final, pece=False, noise_sampler=noise_sampler, weights=weights)


@register("sa_solver_pece", kind="sde", order=4, nfe_per_step=2, eta_from_infinity=_sa_eta_from_infinity,
          aliases=("SA-Solver PECE", "sample_sa_solver_pece"), ref=_SA_REF,
          final_step="denoise (corrector + re-evaluation, then x = D(x, σ) when σ_next = 0)")
def sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                   tau_func=None, sde_interval=SA_SDE_INTERVAL, predictor_order=3, corrector_order=4,
                   simple_order_2=False, lower_order_final=False, noise_sampler=None, seed=None, weights="exact"):
    """SA-Solver (Xue et al. 2023, arXiv:2309.05019) in PECE mode: D is re-evaluated at the corrected point.

    Two model calls per step except the first (2N − 1 for N steps)."""
    return _sa_solver(model, x, sigmas, callback, disable, eta=eta, s_noise=s_noise, tau_func=tau_func,
                      sde_interval=sde_interval, predictor_order=predictor_order,
                      corrector_order=corrector_order, simple_order_2=simple_order_2,
                      lower_order_final=lower_order_final, pece=True, noise_sampler=noise_sampler, weights=weights)


sa_solver.__doc__ += _SA_DOC
sa_solver_pece.__doc__ += _SA_DOC


# ----------------------------------------------------------------------------------------------------
# SEEDS


@register("seeds_2", kind="sde", order=2, nfe_per_step=2, aliases=("SEEDS-2", "sample_seeds_2"),
          eta_from_infinity=sde_eta_from_infinity,
          ref="Gonzalez et al. 2023, SEEDS (arXiv:2305.14267), SEEDS-2; ComfyUI sample_seeds_2",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0, r=0.5,
            solver_type="phi_1", noise_sampler=None, seed=None):
    """SEEDS-2 (Gonzalez et al. 2023, arXiv:2305.14267), data prediction, in λ = −log σ with α = 1.

    With h = λ_t − λ_s and the intermediate point λ_s + r·h, each stage is an exact exponential step of
    dx = −(1+η)(x − D) dλ + noise: x ← e^{−(1+η)δ}x + (1 − e^{−(1+η)δ})·D̂ + σ·√(1 − e^{−2ηδ})·z, where the
    two noises are the same Brownian path (the second stage re-uses the first stage's noise, scaled). D̂ at
    the end is D + (D₂ − D)/(2r) (``solver_type="phi_1"``) or the φ₂ weights (``"phi_2"``). η = 0 is the
    deterministic DPM-Solver-2 (with r = ½ and "phi_1": DPM-Solver++(2S)). Final step: x = D(x, σ).

    ``r`` is in (0, 1]. r = 1 puts the intermediate point at σ_next: the exponential Heun method in data prediction
    (ComfyUI's ``exp_heun_2_x0``: η = 0, "phi_2"; ``exp_heun_2_x0_sde``: η and s_noise, "phi_2"), whose second
    stage adds no fresh noise (the second draw is still taken, with weight 0, as ComfyUI takes it).
    """
    if solver_type not in ("phi_1", "phi_2"):
        raise InvalidInput("solver_type must be 'phi_1' or 'phi_2'")
    inject = eta > 0 and s_noise > 0
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
            report(callback, x, i, sigma, sigma, denoised)
            continue
        lambda_s, lambda_t = -math.log(sigma), -math.log(sigma_next)
        h = lambda_t - lambda_s
        sigma_1 = math.exp(-(lambda_s + r * h))
        # stage 1: exponential step to λ_s + r·h
        decay = math.exp(-r * h * (1 + eta))
        x_2 = decay * x + (1 - decay) * denoised
        if inject:
            sde_noise = noise_sampler(sigma, sigma_1) * math.sqrt(-math.expm1(-2 * r * h * eta))
            x_2 = x_2 + sde_noise * (sigma_1 * s_noise)
        denoised_2 = model(x_2, sigma_1)
        # stage 2: the full step with the combined data prediction
        h_eta = h * (1 + eta)
        decay = math.exp(-h_eta)
        if solver_type == "phi_1":
            fac = 1 / (2 * r)
            x = decay * x + (1 - decay) * (denoised + fac * (denoised_2 - denoised))
        else:
            # weights of D and D₂ from the φ₂ (linear-in-λ) expansion: (1 − e^{−h_η}) in total, the
            # slope part (e^{−h_η} − 1 + h_η)/(h_η·r) on D₂ − D
            b2 = (math.expm1(-h_eta) + h_eta) / h_eta / r
            b1 = -math.expm1(-h_eta) - b2
            x = decay * x + b1 * denoised + b2 * denoised_2
        if inject:
            seg = (r - 1) * h * eta
            fresh = noise_sampler(sigma_1, sigma_next)  # drawn at r = 1 too, as ComfyUI draws it
            top_up = math.sqrt(-math.expm1(2 * seg))
            sde_noise = sde_noise * math.exp(seg) + fresh * top_up if top_up else sde_noise
            x = x + sde_noise * (sigma_next * s_noise)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("seeds_3", kind="sde", order=3, nfe_per_step=3, aliases=("SEEDS-3", "sample_seeds_3"),
          eta_from_infinity=sde_eta_from_infinity,
          ref="Gonzalez et al. 2023, SEEDS (arXiv:2305.14267), SEEDS-3; ComfyUI sample_seeds_3",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0, r_1=1 / 3,
            r_2=2 / 3, noise_sampler=None, seed=None):
    """SEEDS-3 (Gonzalez et al. 2023, arXiv:2305.14267), data prediction, in λ = −log σ with α = 1.

    Three exponential stages at λ_s + r₁h, λ_s + r₂h and λ_t with φ₁/φ₂ weights of h_η = (1+η)h; the noise
    of each stage continues one Brownian path (the previous stage's noise decays by e^{(r_k − r_{k+1})hη}
    and fresh noise tops it up). η = 0 is the deterministic DPM-Solver-3 (data prediction, Lu et al. 2022).
    Final step: x = D(x, σ) when σ_next = 0.
    """
    if not r_1 < r_2:  # the stages are in order along the step (the noise of stage 3 continues stage 2's path)
        raise InvalidOption(f"seeds_3 needs 0 < r_1 < r_2 < 1 (the second stage at λ_s + r_1·h, the third at "
                            f"λ_s + r_2·h), got r_1={r_1}, r_2={r_2}; swap them, or leave both out (1/3, 2/3)")
    inject = eta > 0 and s_noise > 0

    def hphi1(t):
        return math.expm1(t)

    def hphi2(t):
        return (math.expm1(t) - t) / t

    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
            report(callback, x, i, sigma, sigma, denoised)
            continue
        lambda_s, lambda_t = -math.log(sigma), -math.log(sigma_next)
        h = lambda_t - lambda_s
        h_eta = h * (1 + eta)
        sigma_1, sigma_2 = math.exp(-(lambda_s + r_1 * h)), math.exp(-(lambda_s + r_2 * h))
        # stage 1
        x_2 = math.exp(-r_1 * h_eta) * x - hphi1(-r_1 * h_eta) * denoised
        if inject:
            sde_noise = noise_sampler(sigma, sigma_1) * math.sqrt(-math.expm1(-2 * r_1 * h * eta))
            x_2 = x_2 + sde_noise * (sigma_1 * s_noise)
        denoised_2 = model(x_2, sigma_1)
        # stage 2
        a3_2 = r_2 / r_1 * hphi2(-r_2 * h_eta)
        a3_1 = hphi1(-r_2 * h_eta) - a3_2
        x_3 = math.exp(-r_2 * h_eta) * x - (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            seg = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * math.exp(seg) + noise_sampler(sigma_1, sigma_2) * math.sqrt(-math.expm1(2 * seg))
            x_3 = x_3 + sde_noise * (sigma_2 * s_noise)
        denoised_3 = model(x_3, sigma_2)
        # stage 3
        b3 = hphi2(-h_eta) / r_2
        b1 = hphi1(-h_eta) - b3
        x = math.exp(-h_eta) * x - (b1 * denoised + b3 * denoised_3)
        if inject:
            seg = (r_2 - 1) * h * eta
            sde_noise = sde_noise * math.exp(seg) + noise_sampler(sigma_2, sigma_next) * math.sqrt(-math.expm1(2 * seg))
            x = x + sde_noise * (sigma_next * s_noise)
        report(callback, x, i, sigma, sigma, denoised)
    return x


# ----------------------------------------------------------------------------------------------------
# Restart sampling

# (n_steps, k_times, sigma_min, sigma_max): the paper's Stable Diffusion interval [0.1, 2] (Xu et al. 2023,
# sec. 5.3), restarted once with 4 Heun steps back down (8 extra model calls per run).
RESTART_DEFAULT = ((4, 1, 0.1, 2.0),)


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    out = [(hi + k / n * (lo - hi)) ** rho for k in range(n + 1)]
    out[0], out[-1] = sigma_max, sigma_min
    return out


RESTART_LIMIT = 10_000  # model calls the restart intervals may add to one run


def restart_plan(sigmas: Sequence[float], restart, *, drop: bool = False, whole_list: bool = False,
                 state_dtype: torch.dtype = torch.float64) -> dict[int, list[tuple[int, int, list[float]]]]:
    """Where the restarts go: {main index j: [(n_steps, k_times, restart sigmas from σ_max down to σ_j)]}.

    Each (n_steps, k_times, sigma_min, sigma_max) is attached to the schedule point σ_j nearest to
    sigma_min (j ≥ 1, σ_j > 0), as the paper's code does. An entry with sigma_max ≤ σ_j there (or on a schedule
    without such a point), or with k_times = 0, would never restart: it is refused, naming the entry (and σ_j),
    unless ``drop``, which leaves it out (A1111's rule for its automatic list: ``restart="a1111"``, and the
    default's).

    ``whole_list`` is A1111's choice of the point instead (``torch.argmin(abs(sigmas - sigma_min))``): the nearest
    of all points, σ_0 and the final 0 included. At σ_0 nothing restarts (no step ends there); at the final 0 the
    restart follows the last step: from σ = 0 up to sigma_max and back down to 0 (its last step an Euler step).

    An entry's sigma_max (the σ the state is noised up to) is held to the limit the schedule's σ has in a state of
    ``state_dtype`` (:func:`samplers.core.validate.largest_sigma`).
    """
    from ..core.validate import below_sigma_limit, integer, real

    if isinstance(restart, (str, bytes)) or not isinstance(restart, (list, tuple)):
        raise InvalidType(f"restart must be a list of (n_steps, k_times, sigma_min, sigma_max) entries, got {restart!r}")
    plan: dict[int, list] = {}
    added = 0
    for entry in restart:
        if isinstance(entry, (str, bytes)) or not isinstance(entry, (list, tuple)) or len(entry) != 4:
            raise InvalidType(f"restart entry {entry!r}: need (n_steps, k_times, sigma_min, sigma_max)")
        n_steps = integer("restart n_steps", entry[0], lo=1, hi=RESTART_LIMIT)
        k_times = integer("restart k_times", entry[1], lo=0, hi=RESTART_LIMIT)
        t_min, t_max = real("restart sigma_min", entry[2]), real("restart sigma_max", entry[3])
        if not 0 < t_min < t_max:
            raise InvalidInput(f"restart entry {entry!r}: need n_steps >= 1, k_times >= 0, 0 < sigma_min < sigma_max")
        # the state is noised up to sigma_max (and sigma_min is below it): the schedule's σ limit, before any call
        below_sigma_limit(f"restart entry {tuple(entry)!r}: sigma_max", t_max, state_dtype,
                          "give a sigma_max below it (the paper's is 2), or leave the entry out")
        if k_times == 0 and not drop:
            raise InvalidOption(f"restart entry {tuple(entry)!r}: k_times = 0 restarts nothing, so the entry would "
                                "never run; give k_times >= 1, or leave the entry out (restart=() for none)")
        added += 2 * n_steps * k_times
        if added > RESTART_LIMIT:
            raise LimitExceeded(f"restart {restart!r} adds {added} model calls, more than the limit of {RESTART_LIMIT}; "
                                "the paper's settings add a few dozen")
        if whole_list:
            candidates = list(range(len(sigmas)))
        else:
            candidates = [j for j in range(1, len(sigmas)) if sigmas[j] > 0]
        if not candidates:
            if drop or k_times == 0:
                continue
            raise InvalidOption(f"restart entry {tuple(entry)!r}: the schedule has no σ > 0 after its first "
                                f"({', '.join(f'{s:g}' for s in sigmas)}), so there is no point to restart from and "
                                "the entry would never run; leave it out (restart=()) on this schedule")
        j = min(candidates, key=lambda k: abs(sigmas[k] - t_min))
        if k_times == 0:
            continue
        if t_max <= sigmas[j]:
            if drop:
                continue
            raise InvalidOption(f"restart entry {tuple(entry)!r}: sigma_min = {t_min:g} restarts at the schedule point "
                                f"nearest to it, σ_{j} = {sigmas[j]:g}, which is not below sigma_max = {t_max:g}, so the "
                                f"entry would never run; give a sigma_max above {sigmas[j]:g}, or a sigma_min nearer a "
                                "lower schedule point, or leave the entry out")
        plan.setdefault(j, []).append((n_steps, k_times, _karras(n_steps, sigmas[j], t_max)))
    return plan


def a1111_restart(sigmas: Sequence[float]) -> tuple[list[float], tuple]:
    """A1111's "Restart" (modules/sd_samplers_extra.py ``restart_sampler`` with its automatic ``restart_list``):
    ``(main schedule, restart entries)``. Below 20 steps it is Heun on the schedule, no restart; from 20 steps the
    schedule is rebuilt as Karras (ρ = 7) from σ_0 to σ_{n−1} with steps − m·k steps, and one interval restarts k
    times with m Heun steps from the point nearest 2 down to the point nearest 0.1 ((m, k) = (9, 1) below 36
    steps, (steps // 4, 2) from 36), so a run costs what Heun on the given schedule costs. The point nearest 0.1 is
    A1111's, over the whole rebuilt list (``restart_plan(..., whole_list=True)``): where every σ > 0 is above 0.2
    (Simple or SGM Uniform at 20-24 steps on SD 1.5) it is the final 0, and the restart follows the last step, from
    0 up to the point nearest 2 and back down to 0: k calls fewer than Heun, its last step to 0 being Euler's."""
    steps = len(sigmas) - 1
    if steps < 20:
        return list(sigmas), ()
    m, k = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = _karras(steps - m * k - 1, sigmas[-2], sigmas[0]) + [0.0]
    top = min(main, key=lambda s: abs(s - 2.0))
    if top == 0:
        # every σ > 0 is above 4: the points nearest 2 and nearest 0.1 are both the final 0, and A1111 restarts nothing
        # (max_idx == min_idx); an entry up to σ_max = 0 would be no entry at all
        return main, ()
    return main, ((m, k, 0.1, top),)


def _restart_config(sigmas: Sequence[float], restart) -> tuple[list[float], tuple]:
    """The schedule a run steps and its restart entries: ``restart="a1111"`` is :func:`a1111_restart`'s."""
    if isinstance(restart, str):
        if restart != "a1111":
            raise InvalidInput(f"restart must be a list of (n_steps, k_times, sigma_min, sigma_max) entries or "
                               f"'a1111' (A1111's automatic restart_list), got {restart!r}")
        if sigmas[-1] != 0:
            raise InvalidInput(f"restart='a1111' (A1111's Restart) rebuilds a schedule that ends in σ = 0 from 20 steps "
                               f"on, but this one stops at σ = {sigmas[-1]:g}; pass a schedule that ends in 0 (A1111 "
                               "always does), or the registry's restart list for a partial run")
        return a1111_restart(sigmas)
    return list(sigmas), restart


def _restart_run(sigmas: Sequence[float], restart,
                 state_dtype: torch.dtype = torch.float64) -> tuple[list[float], dict]:
    """The schedule a run steps and its restarts (:func:`restart_plan`'s): ``restart="a1111"`` is A1111's schedule,
    list and choice of point; a caller's entry that would never run, or that goes above the σ limit of a
    ``state_dtype`` state, is refused here, before any model call."""
    drop, a1111 = _drops(restart), isinstance(restart, str)
    main, restart = _restart_config(sigmas, restart)
    return main, restart_plan(main, restart, drop=drop, whole_list=a1111, state_dtype=state_dtype)


def _drops(restart) -> bool:
    """Whether the entries of ``restart`` that cannot restart on the schedule are left out rather than refused: A1111's
    automatic list (``"a1111"``: A1111 skips it where its sigma_max is not above its restart point) and the default
    (not the caller's); the caller's own entries are refused."""
    return isinstance(restart, str) or restart is RESTART_DEFAULT


def restart_extra_nfe(sigmas, restart=RESTART_DEFAULT) -> int:
    """Model calls a run on ``sigmas`` makes beyond Heun's on them: 2·n_steps·k_times per restart interval (0 for
    ``"a1111"``, which rebuilds a shorter schedule to pay for its restarts; −k_times where its restart point is the
    final 0, whose restarts end with an Euler step to 0)."""
    from ..core.run import read_sigmas

    given = read_sigmas(sigmas)
    main, plan = _restart_run(given, restart)
    heun = lambda s: sum(1 if b == 0 else 2 for b in s[1:])  # noqa: E731  (Heun: 1 call on a step to 0)
    extra = sum(k * heun(grid) for entries in plan.values() for _, k, grid in entries)
    return heun(main) + extra - heun(given)


def _heun_step(model, x, sigma, sigma_next):
    denoised = model(x, sigma)
    d = to_d(x, sigma, denoised)
    dt = sigma_next - sigma
    if sigma_next == 0:
        return x + d * dt, denoised
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next))
    return x + (d + d_2) / 2 * dt, denoised


def _check_restart_noise(plan: dict, noise_sampler, s_noise: float, sigmas) -> None:
    """Refuse, before any model call, a Brownian path as the noise of an interval restarted more than once (or of two
    entries whose intervals overlap, whose common part it answers with the same increments): each
    restart draws noise_sampler(σ_max, σ_min) on the same interval, which a path answers with the same draw, so
    the second restart would add a copy of the first's noise (fresh noise each time is what Restart is). And a
    Brownian tree whose range (``sigmas``': the run's schedule) the restart intervals leave (a sigma_max above the
    schedule's first σ, a restart from the final 0): it clamped the draw to its range, silently (a "unit" draw over
    [0.5, 30] on a tree up to 14.6 had std 0.69, and the sample variance came out 0.195 against 0.400 seeded)."""
    if s_noise != 0:
        intervals = [(grid[0], grid[-1]) for entries in plan.values() for _, _, grid in entries]
        check_tree_draws(noise_sampler, sigmas, intervals, "a restart entry")
    kind = path_kind(noise_sampler) if s_noise != 0 else None
    if kind is None:
        return
    repeated = [(n, k) for entries in plan.values() for n, k, _ in entries if k > 1]
    if repeated:
        raise InvalidOption(
            f"restart repeats an interval {repeated[0][1]} times (k_times = {repeated[0][1]}; restart='a1111' does so "
            f"from 36 steps), and each repeat draws the noise of that same interval: {kind} is a Brownian path, "
            "which gives the same draw for the same interval, so every repeat would add the first one's noise again. "
            "Use the default seeded noise (noise_sampler=None or 'seeded'), or restart entries with k_times = 1")
    # two entries whose intervals overlap draw the path's increments over their common part twice: their noises are
    # correlated (over [0.1, 2] and [0.5, 3], 0.70 measured on a "brownian" path), where Restart adds fresh noise at
    # every restart
    spans = sorted((grid[-1], grid[0]) for entries in plan.values() for _, _, grid in entries)
    for (lo, hi), (lo2, hi2) in zip(spans, spans[1:]):
        if lo2 < hi:
            raise InvalidOption(
                f"restart entries draw noise over [{lo:g}, {hi:g}] and [{lo2:g}, {hi2:g}], which overlap, and {kind} "
                "is a Brownian path: it answers their common part with the same increments, so the two restarts' "
                "noises would be correlated, not fresh. Use the default seeded noise (noise_sampler=None or "
                "'seeded'), or restart entries whose intervals do not overlap")


def check_restart_draws(sigmas: Sequence[float], noise_sampler, *, s_noise=1.0, restart=RESTART_DEFAULT,
                        state_dtype: torch.dtype = torch.float32) -> None:
    """What :func:`restart` checks of its entries and their noise before its first model call (an entry that would
    never run, an interval drawn outside a Brownian tree's range or twice from a path), for a caller that checks a
    run before it calls any model of its own: the pipeline's runs call their encoders before the sampler.
    ``sigmas``: the schedule :func:`restart` is handed (from σ = inf the rest after the shared first step, as
    :func:`samplers.core.run.check_the_rest` hands it); ``noise_sampler``: the run's (``noise.for_run``'s)."""
    _, plan = _restart_run(sigmas, restart, state_dtype)
    _check_restart_noise(plan, noise_sampler, s_noise, sigmas)


def _restart_check_draws(sigmas: Sequence[float], noise_sampler, options: dict) -> None:
    """:func:`check_restart_draws` as the registry's ``check_draws`` hook (``options`` with restart's defaults)."""
    check_restart_draws(sigmas, noise_sampler, s_noise=options["s_noise"], restart=options["restart"])


@register("restart", kind="sde", order=2, nfe_per_step=2, aliases=("sample_restart",),
          ref="Xu et al. 2023, Restart Sampling (arXiv:2306.14878), Alg. 1",
          final_step="euler (x = D(x, σ) when σ_next = 0)", check_draws=_restart_check_draws)
def restart(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_noise=1.0,
            restart=RESTART_DEFAULT, noise_sampler=None, seed=None):
    """Restart sampling (Xu et al. 2023, arXiv:2306.14878, Alg. 1): Heun ODE steps on ``sigmas``, plus restarts.

    ``restart`` is a list of (n_steps, k_times, sigma_min, sigma_max) like the paper's configuration: after
    the main step that reaches the schedule point nearest sigma_min, the state is forward-noised up to
    sigma_max (x += s_noise·√(σ_max² − σ_min²)·z) and solved back down with n_steps Heun steps on a Karras
    (ρ = 7) grid, k_times times. NFE: 2 per main step (1 for a final step to 0) plus 2·n_steps·k_times per
    restart interval (``restart_extra_nfe``); ``restart=()`` is exactly ``heun``. An entry whose sigma_max is not
    above the schedule point it lands on would never run: a caller's entry is refused (naming it and the point), the
    default's is left out (on a schedule whose points near 0.1 are all ≥ 2). ``restart="a1111"`` is A1111's
    "Restart" (:func:`a1111_restart`: from 20 steps a Karras schedule of its own, shorter by the restarts' steps). Each restart draws
    ``noise_sampler(sigma_max, sigma_min)``: a Brownian noise sampler returns the same increment for the same
    interval, so with k_times > 1, or entries whose intervals overlap, one is refused (use the default, fresh noise).
    Final step: Euler, x = D(x, σ).
    """
    # a caller's entry that would never run, or above the σ limit of the state x: refused, before any call
    given = sigmas  # the run's schedule: a "brownian_tree" kind is built on its range
    sigmas, plan = _restart_run(sigmas, restart, x.dtype)
    _check_restart_noise(plan, noise_sampler, s_noise, given)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x, denoised = _heun_step(model, x, sigma, sigma_next)
        for n_steps, k_times, grid in plan.get(i + 1, ()):
            for _ in range(k_times):
                x = x + noise_sampler(grid[0], grid[-1]) * (s_noise * math.sqrt(grid[0] ** 2 - grid[-1] ** 2))
                for k in range(n_steps):
                    x, _ = _heun_step(model, x, grid[k], grid[k + 1])
        report(callback, x, i, sigma, sigma, denoised)
    return x

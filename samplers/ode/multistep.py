"""Linear multistep samplers: DPM-Solver++ 2M / 3M, LMS, RES multistep and gradient estimation.

Each step costs one model evaluation and re-uses the denoised estimates of earlier steps. Everything a step
needs from the schedule (log-σ step sizes, step ratios, LMS coefficients) is a Python float, so nothing in
the loop reads the device. In the canonical space the data-prediction exponential integrators are written
with λ = −log σ and h = λ_next − λ:

    x_next = (σ_next/σ)·x + (1 − e^(−h))·D̂      (DPM-Solver++ 1st order = DDIM = the exact step for D constant)

and the higher orders replace D̂ by an extrapolation from the previous D's.
"""
from __future__ import annotations

import math


from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import (basis_integrals, check_solver_type, lam, multistep_order, phi1, phi2, res_weights,
                          second_order_weight, to_d)
from ..core.errors import InvalidInput, InvalidOption

_DPMPP = "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095)"


@register("dpmpp_2m", kind="ode", order=2, nfe_per_step=1,
          aliases=("sample_dpmpp_2m", "dpmsolver++2m"),
          ref=_DPMPP + ", Alg. 2", final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, *, solver_type="midpoint",
             euler_at_final=False):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), multistep in λ = −log σ.

    With r = h_last/h and D0, D1 the current and previous denoised estimates:

    - ``solver_type="midpoint"`` (the paper, k-diffusion, diffusers' default):
      x_next = (σ_next/σ)·x + (1 − e^(−h))·(D0 + (D0 − D1)/(2r))
    - ``solver_type="heun"`` (diffusers' alternative):
      x_next = (σ_next/σ)·x + (1 − e^(−h))·D0 + φ2(h)·(D0 − D1)/r

    The first step is first order (DDIM); the last step to σ = 0 returns D(x, σ), which is what the update
    gives in the limit h → ∞. ``euler_at_final`` makes the last step first order also when the schedule stops
    at σ > 0 (diffusers' ``euler_at_final``, and its ``lower_order_final`` with fewer than 15 steps).
    """
    check_solver_type(solver_type)
    n = len(sigmas) - 1
    old_denoised = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = lam(sigma_next) - lam(sigma)
            x = x * (sigma_next / sigma) + denoised * phi1(h)
            if old_denoised is not None and not (euler_at_final and i == n - 1):
                r = (lam(sigma) - lam(sigmas[i - 1])) / h
                x = x + (denoised - old_denoised) * second_order_weight(h, r, solver_type)
        old_denoised = denoised
        report(callback, x, i, sigma, sigma, denoised)
    return x


def _third_order_d2_weight(h: float, exact: bool) -> float:
    """The weight of D2 ≈ h²·D''/2 in the 3rd-order update.

    The exact weight is ∫_0^h e^(−(h−τ)) τ² dτ / h² = 1 − 2/h + 2(1 − e^(−h))/h² (= h/3 + O(h²)). DPM-Solver++
    (3M) as published, and as diffusers and k-diffusion implement it, uses −φ3 = 1/2 − φ2/h, which is half of
    it: the D'' term is off by O(h³) per step, so the published method converges with order 2.
    """
    if exact:
        return 1 - 2 / h - 2 * math.expm1(-h) / h**2
    return 0.5 - phi2(h) / h


def _dpmpp_3m(model, x, sigmas, callback, disable, lower_order_final, solver_type, exact, euler_at_final=False):
    check_solver_type(solver_type)
    n = len(sigmas) - 1
    d_hist: list = []  # most recent first
    h_hist: list[float] = []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = lam(sigma_next) - lam(sigma)
            order = multistep_order(min(3, len(d_hist) + 1), i, n, lower_order_final, euler_at_final)
            x = x * (sigma_next / sigma) + denoised * phi1(h)
            if order == 2:
                x = x + (denoised - d_hist[0]) * second_order_weight(h, h_hist[0] / h, solver_type)
            elif order == 3:
                r0, r1 = h_hist[0] / h, h_hist[1] / h
                d0 = (denoised - d_hist[0]) / r0
                d1 = (d_hist[0] - d_hist[1]) / r1
                x = (x + (d0 + (d0 - d1) * (r0 / (r0 + r1))) * phi2(h)
                     + (d0 - d1) * (_third_order_d2_weight(h, exact) / (r0 + r1)))
            h_hist = [h] + h_hist[:1]
        d_hist = [denoised] + d_hist[:1]
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_3m", kind="ode", order=2, nfe_per_step=1,
          aliases=("DPM++ 3M", "sample_dpmpp_3m", "dpmsolver++3m"),
          ref=_DPMPP + ", 3rd-order multistep as published (diffusers / k-diffusion)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_3m(model, x, sigmas, extra_args=None, callback=None, disable=None, *, lower_order_final=True,
             solver_type="midpoint", euler_at_final=False):
    """DPM-Solver++(3M) exactly as published and as diffusers / k-diffusion run it (Lu et al. 2022).

    With D0, D1, D2 the last three denoised estimates, h, h_1, h_2 the last three log-σ steps,
    r0 = h_1/h, r1 = h_2/h, d0 = (D0 − D1)/r0, d1 = (D1 − D2)/r1:

        x_next = (σ_next/σ)·x + (1 − e^(−h))·D0 + φ2·(d0 + (d0 − d1)·r0/(r0 + r1)) − φ3·(d0 − d1)/(r0 + r1)

    with φ2 = (e^(−h) − 1)/h + 1 and φ3 = φ2/h − 1/2. The φ3 weight is half the Taylor-exact one (see
    ``_third_order_d2_weight``), so this method is second order — measured in tests/test_multistep.py; it is
    kept because it is what users' images are made with. ``dpmpp_3m_exact`` is the third-order method.
    Warm-up: first order, then the 2M update of ``solver_type``. ``lower_order_final`` (diffusers' rule for
    stability at few steps): with fewer than 15 steps the step before the final one is second order. The
    last step to σ = 0 returns D(x, σ); ``euler_at_final`` makes the last step first order also when the
    schedule stops at σ > 0 (diffusers' ``euler_at_final``).
    """
    return _dpmpp_3m(model, x, sigmas, callback, disable, lower_order_final, solver_type, exact=False,
                     euler_at_final=euler_at_final)


@register("dpmpp_3m_exact", kind="ode", order=3, nfe_per_step=1,
          aliases=("DPM++ 3M exact",),
          ref=_DPMPP + ", 3rd-order multistep with the Taylor-exact D'' weight (this project)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_3m_exact(model, x, sigmas, extra_args=None, callback=None, disable=None, *, lower_order_final=True,
                   solver_type="midpoint"):
    """DPM-Solver++(3M) with the D2 weight 1 − 2/h + 2(1 − e^(−h))/h² that makes it third order.

    Same structure, warm-up and final step as ``dpmpp_3m``; only the weight of the second divided difference
    differs (the published −φ3 = 1/2 − φ2/h is half of it).
    """
    return _dpmpp_3m(model, x, sigmas, callback, disable, lower_order_final, solver_type, exact=True)


# ----------------------------------------------------------------------------------------------------
# LMS: Adams-Bashforth in σ with exact, precomputed coefficients


def lms_coefficients(sigmas: list[float], order: int, prior: int = 0) -> list[list[float]]:
    """Per step i, the weights of d_i, d_{i−1}, … : ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ for the Lagrange basis ℓ_j.

    The basis polynomials through the last ``min(order, i + 1)`` sigmas are integrated exactly (polynomial
    arithmetic on Python floats), once before the loop — not by quadrature inside it. They are built in the step's
    own variable τ = (σ − σ_i)/(σ_{i+1} − σ_i), where the step is τ ∈ [0, 1] and ∫ τ^p dτ = 1/(p + 1): the
    weights are then exact to rounding at any step size (see :func:`samplers.core.steps.basis_integrals`), as
    k-diffusion's quadrature of the product form is. The first ``prior`` sigmas are nodes only (no step starts
    there): the rows of the steps after them are returned.
    """
    out = []
    for i in range(prior, len(sigmas) - 1):
        k = min(order, i + 1)
        step = sigmas[i + 1] - sigmas[i]
        if step == 0:  # an empty step (k-diffusion's linear_multistep_coeff takes one): every integral is 0
            out.append([0.0] * k)
            continue
        nodes = [(sigmas[i - j] - sigmas[i]) / step for j in range(k)]
        out.append([step * w for w in basis_integrals(nodes, [1 / (p + 1) for p in range(k)])])
    return out


def check_prior_sigmas(prior_sigmas, sigma_first: float, order: int) -> list[float]:
    """``prior_sigmas`` as floats, refused (before any model call) unless they are the sigmas of steps before
    ``sigma_first``, most recent first: strictly above ``sigma_first`` and strictly increasing along the list, at most
    ``order − 1`` of them (the weights' nodes are the last ``order`` sigmas: one more would never be read)."""
    prior = [float(s) for s in prior_sigmas]
    if len(prior) > order - 1:
        raise InvalidOption(f"lms prior_sigmas = {list(prior_sigmas)!r} lists {len(prior)} sigmas but order = {order} "
                            f"reads at most order − 1 = {order - 1} earlier nodes; pass at most {order - 1} (the most "
                            "recent, listed first), or raise order")
    previous, what = sigma_first, f"sigmas[0] = {sigma_first:g}"
    for k, s in enumerate(prior):
        if not s > previous:  # also catches NaN
            raise InvalidOption(
                f"lms prior_sigmas[{k}] = {s:g} is not above {what}; prior_sigmas are the sigmas of the steps "
                "before sigmas[0], most recent first, so each must be strictly larger than the one before it in the "
                f"list and the first strictly larger than sigmas[0] (got {list(prior_sigmas)!r})")
        previous, what = s, f"prior_sigmas[{k}] = {s:g}"
    return prior


@register("lms", kind="ode", order=4, nfe_per_step=1,
          aliases=("sample_lms",),
          ref="Adams-Bashforth in σ, as in k-diffusion's sample_lms (Karras et al. 2022 setting)",
          final_step="the same Adams-Bashforth step (it needs d only at σ > 0); final_denoise=True: x = D(x, σ) "
                     "(ComfyUI's sample_lms)")
def lms(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=4, prior_sigmas=(),
        final_denoise=False):
    """Linear multistep (Adams-Bashforth) on the PF-ODE in σ: x_next = x + Σ_j c_ij·d_{i−j}.

    The coefficients c_ij integrate the Lagrange polynomial through the last ``order`` derivatives over
    [σ_i, σ_{i+1}] (``lms_coefficients``); warm-up uses the orders available. ``order`` ≥ 1 (1 is Euler;
    k-diffusion takes any order too).
    This is the variable-step Adams–Bashforth method. ComfyUI's ``ipndm_v`` is not it: that name runs ``ipndm``
    with ``variable_steps=True, final_denoise=True``, whose step-ratio corrected weights equal these only up to
    second order (:func:`samplers.ode.adams.ipndm_v_coefficients`).

    ``prior_sigmas`` (most recent first): sigmas of steps before ``sigmas[0]`` that were never taken but whose
    nodes the weights are built on, with only the derivatives of this run applied — what diffusers'
    LMSDiscreteScheduler does when started at a later step (img2img: its order counts from step 0).

    ``final_denoise=True`` ends a step to σ = 0 at the denoised x = D(x, σ), as ComfyUI's ``sample_lms`` does (its
    ``lms`` label sets it); k-diffusion's and diffusers' take the Adams–Bashforth step there.
    """
    if order < 1:
        raise InvalidInput(f"lms order must be an integer >= 1, got {order!r}")
    prior = check_prior_sigmas(prior_sigmas, float(sigmas[0]), order)
    coefficients = lms_coefficients(prior[::-1] + list(sigmas), order, len(prior))
    ds: list = []  # most recent first
    for i in progress(sigmas, disable):
        denoised = model(x, sigmas[i])
        ds = [to_d(x, sigmas[i], denoised)] + ds[: order - 1]
        if final_denoise and sigmas[i + 1] == 0:
            x = denoised
        else:
            for c, d in zip(coefficients[i], ds):
                x = x + d * c
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
    return x


# ----------------------------------------------------------------------------------------------------
# RES multistep and gradient estimation


@register("res_multistep", kind="ode", order=2, nfe_per_step=1,
          aliases=("sample_res_multistep", "RES multistep"),
          ref="Zhang et al. 2023, refined exponential solver (arXiv:2308.02157), 2-step form as in ComfyUI",
          final_step="euler (x = D(x, σ) when σ_next = 0)")
def res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Two-step exponential integrator satisfying the RES order conditions (Zhang et al. 2023).

    In λ = −log σ with h = λ_next − λ and c = −h_last/h (the previous node, relative to the step):

        x_next = e^(−h)·x + h·(b1·D0 + b2·D1),  b1 = φ1(−h) − φ2(−h)/c,  b2 = φ2(−h)/c

    with φ1(z) = (e^z − 1)/z, φ2(z) = (φ1(z) − 1)/z. First step and the step to σ = 0 are Euler.
    """
    old_denoised = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0 or old_denoised is None:
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
        else:
            h = lam(sigma_next) - lam(sigma)
            b1, b2 = res_weights(h, (lam(sigmas[i - 1]) - lam(sigma)) / h)
            x = x * math.exp(-h) + (denoised * b1 + old_denoised * b2) * h
        old_denoised = denoised
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("gradient_estimation", kind="ode", order=1, nfe_per_step=1,
          aliases=("sample_gradient_estimation", "Gradient Estimation"),
          ref="Permenter & Yuan 2024 (arXiv:2306.04848), Alg. 2",
          final_step="the same extrapolated step (x moves to σ = 0 along d̄); final_denoise=True: x = D(x, σ) "
                     "(ComfyUI's sample_gradient_estimation)")
def gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, *, ge_gamma=2.0,
                        final_denoise=False):
    """Gradient-estimation sampler (Permenter & Yuan 2024): Euler with the slope d̄ = γ·d + (1 − γ)·d_prev.

    γ = 2 extrapolates the slope half a step ahead on equal steps; on the usual uneven schedules it stays a
    first-order method with a smaller error constant (measured in tests/test_multistep.py). First step Euler.

    ``final_denoise=True`` ends a step to σ = 0 at the denoised x = D(x, σ), as ComfyUI's
    ``sample_gradient_estimation`` does (its ``gradient_estimation`` label sets it); the default takes the
    extrapolated step there too.
    """
    old_d = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        d = to_d(x, sigma, denoised)
        if final_denoise and sigma_next == 0:
            x = denoised
        else:
            d_bar = d if old_d is None else d * ge_gamma + old_d * (1 - ge_gamma)
            x = x + d_bar * (sigma_next - sigma)
        old_d = d
        report(callback, x, i, sigma, sigma, denoised)
    return x

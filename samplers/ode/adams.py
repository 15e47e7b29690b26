"""DEIS, iPNDM and PLMS: exponential-integrator and pseudo-numerical multistep samplers on the noise prediction.

In the canonical space the PF-ODE is dx/dσ = ε̂(x, σ) with ε̂ = (x − D)/σ, the model's noise prediction. All
three methods extrapolate ε̂ from earlier steps and integrate it over the step:

- DEIS (Zhang & Chen 2022, arXiv:2204.13902), "ρAB" with log-ρ interpolation (diffusers' ``deis``): ε̂ is a
  Lagrange polynomial in log σ through the last ``order`` nodes, integrated exactly over σ (against the moments
  ∫_0^1 v^p e^(−zv) dv in the step's own log-σ variable v), before the step's tensor work.
- iPNDM (Zhang & Chen 2022, §4; ComfyUI's ``ipndm``): Adams–Bashforth with the constant-step coefficients
  (3, −1)/2, (23, −16, 5)/12, (55, −59, 37, −9)/24, lower orders while warming up; ``variable_steps=True`` gives
  the step-ratio corrected weights of ComfyUI's ``ipndm_v``.
- PLMS (Liu et al. 2022, arXiv:2202.09778, "pseudo linear multistep"): the same 4th-order combination after a
  first step that averages ε̂ at both ends (diffusers' PNDMScheduler with ``skip_prk_steps=True``).

On the smoothly uneven steps of diffusion schedules the constant-step coefficients (iPNDM, PLMS) converge
with order 2, not 4 (measured in tests/test_unipc_deis.py); ``lms`` and ``deis`` use the exact variable-step
weights.
"""
from __future__ import annotations

import math


from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import basis_integrals, exp_moments, to_d
from ..core.errors import InvalidInput, InvalidOption
from .basic import from_vp_state, to_vp_state

ADAMS_BASHFORTH = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def deis_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """Weights of ε̂_i, ε̂_{i−1}, … for the step σ_i → σ_{i+1}: ∫ ℓ_k(log σ) dσ over the step, exactly.

    In the step's own variable v = log(σ/σ_i)/log(σ_{i+1}/σ_i) (v ∈ [0, 1] over the step, the earlier nodes at
    v < 0) with z = log(σ_i/σ_{i+1}) > 0, σ = σ_i·e^(−zv) and the integral is −σ_i·z·∫_0^1 ℓ_k(v)·e^(−zv) dv, whose
    moments are :func:`samplers.core.steps.exp_moments`: exact to rounding at any step size
    (:func:`samplers.core.steps.basis_integrals`). The logs are taken as log1p of the relative differences of the
    sigmas, so close sigmas lose nothing to rounding either.
    """
    z = math.log1p((sigmas[i] - sigmas[i + 1]) / sigmas[i + 1])
    nodes = [-math.log1p((sigmas[i - k] - sigmas[i]) / sigmas[i]) / z for k in range(order)]
    return [-sigmas[i] * z * w for w in basis_integrals(nodes, exp_moments(z, order - 1))]


def _np_log(t):
    """numpy's float32 log of a float32 scalar tensor, as diffusers' ``np.log(tensor)`` takes it."""
    import numpy as np
    import torch

    return torch.as_tensor(np.log(t.numpy()))


def deis_diffusers_coefficients(sigmas: list[float], i: int, order: int) -> list:
    """Weights of ε̂_i, ε̂_{i−1}, … for the step σ_i → σ_{i+1} as diffusers' DEISMultistepScheduler computes them:
    float32 scalar tensors on the CPU, α = 1/√(σ² + 1) and ρ = σα/α from its float32 σ table, numpy's log, and
    the differences of its log-ρ antiderivatives (``ind_fn``), which cancel in float32 at small steps (order 3 at
    50 steps: up to 2.2e-3 of the latents' scale from :func:`deis_coefficients`; tests/test_shim_configs.py).
    Order 1 is its first-order update, −σ_t(e^h − 1)/α_t. Each weight stays a float32 CPU scalar tensor: the step
    combines it with the state as a torch scalar (the same value in the state's dtype), so nothing is read on the
    host."""
    import torch

    def alpha_sigma(sigma):  # diffusers' _sigma_to_alpha_sigma_t on its float32 table entry
        s = torch.tensor(sigma, dtype=torch.float32)
        alpha = 1 / ((s**2 + 1) ** 0.5)
        return alpha, s * alpha

    alpha_t, sigma_t = alpha_sigma(sigmas[i + 1])
    alpha_s, sigma_s = alpha_sigma(sigmas[i])
    if order == 1:
        h = (torch.log(alpha_t) - torch.log(sigma_t)) - (torch.log(alpha_s) - torch.log(sigma_s))
        return [-(sigma_t * (torch.exp(h) - 1.0)) / alpha_t]
    rho_t, rho_s0 = sigma_t / alpha_t, sigma_s / alpha_s
    rhos = [rho_s0] + [s / a for a, s in (alpha_sigma(sigmas[i - k]) for k in range(1, order))]
    log = _np_log
    if order == 2:
        def ind_fn(t, b, c):  # ∫ (log t − log c)/(log b − log c) dt
            return t * (-log(c) + log(t) - 1) / (log(b) - log(c))

        (r0, r1) = rhos
        return [ind_fn(rho_t, r0, r1) - ind_fn(r0, r0, r1), ind_fn(rho_t, r1, r0) - ind_fn(r0, r1, r0)]

    def ind_fn(t, b, c, d):  # ∫ (log t − log c)(log t − log d)/((log b − log c)(log b − log d)) dt
        numerator = t * (log(c) * (log(d) - log(t) + 1) - log(d) * log(t) + log(d) + log(t) ** 2 - 2 * log(t) + 2)
        return numerator / ((log(b) - log(c)) * (log(b) - log(d)))

    (r0, r1, r2) = rhos
    return [ind_fn(rho_t, r0, r1, r2) - ind_fn(r0, r0, r1, r2), ind_fn(rho_t, r1, r2, r0) - ind_fn(r0, r1, r2, r0),
            ind_fn(rho_t, r2, r0, r1) - ind_fn(r0, r2, r0, r1)]


# DEIS-tAB as ComfyUI's sample_deis (deis_mode="tab") computes it: the VP time of EDM's default VP fit
# (σ_min = 0.002, σ_max = 80, ε_s = 1e-3), and the step integrals by a Riemann sum over 10000 points.
_TAB_SIGMA_MIN, _TAB_SIGMA_MAX, _TAB_EPS, _TAB_POINTS = 0.002, 80.0, 1e-3, 10000


def _tab_vp():
    beta_d = 2 * (math.log(_TAB_SIGMA_MIN**2 + 1) / _TAB_EPS - math.log(_TAB_SIGMA_MAX**2 + 1)) / (_TAB_EPS - 1)
    beta_min = math.log(_TAB_SIGMA_MAX**2 + 1) - 0.5 * beta_d
    return beta_min, beta_d


def _torch_linspace(start: float, end: float, steps: int):
    """torch.linspace's float64 points in numpy: the first half from ``start``, the second back from ``end``."""
    import numpy as np

    step = (end - start) / (steps - 1)
    idx = np.arange(steps, dtype=np.float64)
    return np.where(idx < steps // 2, start + step * idx, end - step * (steps - 1 - idx))


def deis_tab_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """Weights of ε̂_i, ε̂_{i−1}, … for the step σ_i → σ_{i+1} of DEIS-tAB, as ComfyUI's ``sample_deis``: ε̂ a
    Lagrange polynomial in the VP time t(σ), integrated against −½·(d log ᾱ/dt)/√(ᾱ(1 − ᾱ)) over the step by
    ComfyUI's sum over 10000 evenly spaced points (both ends included) times (t_next − t)/10000.

    Host arithmetic in float64 numpy (no torch tensor, so no tensor read inside the sampling loop). The weights
    agree with a torch float64 computation of the same sum to ~1e-12 relative, not to the last bit: 1 − ᾱ
    cancels near σ_min = 0.002 (1 − ᾱ ≈ 4e-6), where the two libraries' exp differ by an ulp."""
    import numpy as np

    beta_min, beta_d = _tab_vp()

    def vp_time(sigma):
        return (math.sqrt(beta_min**2 + 2 * beta_d * math.log(sigma**2 + 1)) - beta_min) / beta_d

    nodes = [vp_time(sigmas[i - k]) for k in range(order)]
    t_cur, t_next = nodes[0], vp_time(sigmas[i + 1])
    taus = _torch_linspace(t_cur, t_next, _TAB_POINTS)
    alpha = np.exp(-0.5 * taus**2 * beta_d - taus * beta_min)
    integrand = 0.5 * (taus * beta_d + beta_min) / np.sqrt(alpha * (1 - alpha))
    dtau = (t_next - t_cur) / _TAB_POINTS
    out = []
    for j in range(order):
        poly = np.ones_like(taus)
        for k in range(order):
            if k != j:
                poly = poly * (taus - nodes[k]) / (nodes[j] - nodes[k])
        out.append(float(np.sum(integrand * poly)) * dtau)
    return out


@register("deis", kind="ode", order=3, nfe_per_step=1,
          ref="Zhang & Chen 2022, DEIS (arXiv:2204.13902), ρAB with log-ρ Lagrange interpolation; mode='tab': "
              "tAB as ComfyUI's sample_deis",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def deis(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=3, lower_order_final=True,
         mode="rhoab", weights="exact"):
    """DEIS-ρAB of ``order`` 1–3: x_next = x + Σ_k c_k·ε̂_{i−k}, c_k = ∫ ℓ_k(log σ) dσ (exact).

    Warm-up uses the orders available; ``lower_order_final`` (diffusers' rule, for stability at few steps)
    makes the last two steps at most second and first order when there are fewer than 15 steps. Order 1 is DDIM.
    ``mode="tab"`` is DEIS-tAB as ComfyUI's ``sample_deis`` computes it (:func:`deis_tab_coefficients`; its first
    step is Euler); the ComfyUI / Forge names ``comfyui:deis`` / ``DEIS`` run it with ``lower_order_final=False``.
    ``weights="diffusers"`` (ρAB only) takes the weights as diffusers' DEISMultistepScheduler rounds them
    (:func:`deis_diffusers_coefficients`): the diffusers shim's default, to make that class's image.
    """
    if order not in (1, 2, 3):
        raise InvalidInput(f"DEIS order must be 1, 2 or 3, got {order!r}")
    if mode not in ("rhoab", "tab"):
        raise InvalidInput(f"DEIS mode must be 'rhoab' or 'tab', got {mode!r}")
    if weights not in ("exact", "diffusers"):
        raise InvalidInput(f"DEIS weights must be 'exact' or 'diffusers' (diffusers' float32 rounding of them), "
                           f"got {weights!r}")
    n = len(sigmas) - 1
    eps_hist: list = []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        eps_hist = [(x - denoised) / sigma] + eps_hist[: order - 1]
        if sigma_next == 0:
            x = denoised
        else:
            k = min(order, len(eps_hist))
            if lower_order_final and n < 15 and i >= n - 2:
                k = min(k, n - i)  # the last two steps at orders ≤ 2 and 1 (diffusers' rule)
            if mode == "tab" and k == 1:
                coefficients = [sigma_next - sigma]  # ComfyUI's first-order tAB step is Euler in σ
            elif mode == "tab":
                coefficients = deis_tab_coefficients(sigmas, i, k)
            elif weights == "diffusers":
                coefficients = deis_diffusers_coefficients(sigmas, i, k)
            else:
                coefficients = deis_coefficients(sigmas, i, k)
            for c, eps in zip(coefficients, eps_hist):
                x = x + eps * c
        report(callback, x, i, sigma, sigma, denoised)
    return x


def _ab_step(x, eps_hist, dt: float, order: int):
    """x + dt·Σ_j a_j·ε̂_{i−j} with the constant-step Adams–Bashforth coefficients of ``order``."""
    for a, eps in zip(ADAMS_BASHFORTH[order], eps_hist):
        x = x + eps * (a * dt)
    return x


def ipndm_v_coefficients(sigmas, i: int, order: int) -> list[float]:
    """ComfyUI's ``sample_ipndm_v`` weights of ε̂_i, ε̂_{i−1}, … (times the step σ_{i+1} − σ_i) for ``order`` 1–4.

    The variable-step iPNDM of Zhou et al. 2023 (arXiv:2312.00094, as ComfyUI runs it): with h = σ_{i+1} − σ_i and
    the earlier steps h1 = σ_i − σ_{i−1}, h2, h3, the constant-step Adams–Bashforth weights corrected by the ratios
    of the steps. These are not the exact variable-step Adams–Bashforth weights of ``lms`` beyond second order.
    """
    if order == 1:
        return [1.0]
    h, h1 = sigmas[i + 1] - sigmas[i], sigmas[i] - sigmas[i - 1]
    r = h / h1
    base = [(2 + r) / 2, -r / 2]
    if order == 2:
        return base
    h2 = sigmas[i - 1] - sigmas[i - 2]
    a = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [base[0] + a, base[1] - (1 + h1 / h2) * a, a * h1 / h2]
    h3 = sigmas[i - 2] - sigmas[i - 3]
    b = (((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
         * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [base[0] + a + b,
            base[1] - (1 + h1 / h2) * a - (1 + h1 / h2 + q) * b,
            a * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * b,
            -b * q * h1 / h2]


@register("ipndm", kind="ode", order=2, nfe_per_step=1,
          ref="Zhang & Chen 2022 (arXiv:2204.13902), §4 iPNDM; variable_steps: Zhou et al. 2023 "
              "(arXiv:2312.00094), ComfyUI's sample_ipndm_v",
          final_step="the same Adams–Bashforth step (ε̂ is only needed at σ > 0); final_denoise=True: "
                     "x = D(x, σ) (ComfyUI's sample_ipndm / sample_ipndm_v)")
def ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, max_order=4, variable_steps=False,
          final_denoise=False):
    """iPNDM: Adams–Bashforth in σ on ε̂ with constant-step coefficients, orders 1→``max_order`` while warming up.

    Fourth order on uniform steps; on the smoothly uneven steps of diffusion schedules second order (measured).
    ``variable_steps=True`` uses the step-ratio corrected weights of ComfyUI's ``sample_ipndm_v``
    (:func:`ipndm_v_coefficients`); ``lms`` has the exact variable-step weights. ``final_denoise=True`` ends a
    step to σ = 0 at the denoised x = D(x, σ) as ComfyUI's ``sample_ipndm`` / ``sample_ipndm_v`` do (the labels
    ``comfyui:ipndm`` / ``comfyui:ipndm_v`` and Forge's ``iPNDM`` / ``iPNDM_v`` set both options as ComfyUI does).
    """
    if max_order not in (1, 2, 3, 4):
        raise InvalidInput(f"max_order must be 1-4, got {max_order!r}")
    eps_hist: list = []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        eps_hist = [(x - denoised) / sigma] + eps_hist[: max_order - 1]
        if final_denoise and sigma_next == 0:
            x = denoised
        elif variable_steps:
            for c, eps in zip(ipndm_v_coefficients(sigmas, i, len(eps_hist)), eps_hist):
                x = x + eps * (c * (sigma_next - sigma))
        else:
            x = _ab_step(x, eps_hist, sigma_next - sigma, len(eps_hist))
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("plms", kind="ode", order=2, nfe_per_step=1, aliases=("pndm_plms",),
          ref="Liu et al. 2022, PNDM (arXiv:2202.09778): PLMS (diffusers' PNDMScheduler, skip_prk_steps=True)",
          final_step="the same multistep step (ε̂ is only needed at σ > 0)")
def plms(model, x, sigmas, extra_args=None, callback=None, disable=None, *, vp_state=False):
    """Pseudo linear multistep: the first step averages ε̂ at σ_0 and at the DDIM-predicted σ_1 (2 model calls);
    then ε̂' = (3ε̂_i − ε̂_{i−1})/2, (23, −16, 5)/12, (55, −59, 37, −9)/24 and the DDIM transfer x + (σ_next − σ)·ε̂'.

    Each step is the DDIM step of eq. 9 of the paper, which in VE coordinates is x + (σ_next − σ)·ε̂'.

    ``vp_state``: as ``ddim``'s (samplers.ode.basic.VP_STATE_DOC; A1111's "PLMS" on ``a1111:Timesteps``).
    """
    if vp_state:
        x = from_vp_state(x, sigmas[0])
    eps_hist: list = []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        eps = (x - denoised) / sigma
        if i == 0 and sigma_next > 0:
            x_pred = x + eps * (sigma_next - sigma)
            eps_next = (x_pred - model(x_pred, sigma_next)) / sigma_next
            eps_hist = [eps]
            x = x + (eps + eps_next) * ((sigma_next - sigma) / 2)
        else:
            eps_hist = [eps] + eps_hist[:3]
            x = _ab_step(x, eps_hist, sigma_next - sigma, len(eps_hist))
        report(callback, x, i, sigma, sigma, denoised)
    return to_vp_state(x, sigmas[-1]) if vp_state else x


def _transfer(x, eps, sigma: float, sigma_to: float):
    """The DDIM transfer of PNDM's eq. 9 from σ to σ_to with noise estimate ε̂: x + (σ_to − σ)·ε̂ in VE."""
    return x + eps * (sigma_to - sigma)


@register("pndm", kind="ode", order=2, nfe_per_step=1, aliases=("PNDM", "sample_pndm"),
          ref="Liu et al. 2022, PNDM (arXiv:2202.09778), Alg. 1: pseudo Runge–Kutta warm-up, then PLMS "
              "(diffusers' PNDMScheduler)",
          final_step="a pseudo Runge–Kutta step to σ = 0 is the denoise x = D(x, σ) (ε̂ cannot be evaluated at "
                     "σ = 0); a PLMS step to σ = 0 is its own multistep step")
def pndm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, midpoints=None):
    """PNDM: the first three steps are pseudo Runge–Kutta (4 model calls each), the rest PLMS (1 call each).

    A pseudo RK step from σ to σ' with midpoint σ_m (Liu et al. 2022, eq. 13):
    e1 = ε̂(x, σ); e2 = ε̂(φ(x, e1, σ→σ_m), σ_m); e3 = ε̂(φ(x, e2, σ→σ_m), σ_m); e4 = ε̂(φ(x, e3, σ→σ'), σ');
    x' = φ(x, (e1 + 2e2 + 2e3 + e4)/6, σ→σ'), with φ the DDIM transfer. Only e1 enters the PLMS history, so
    the fourth step already uses the 4th-order Adams–Bashforth combination. ``midpoints``: σ_m of the warm-up
    steps (default the log-σ midpoint √(σσ'); diffusers uses the table's timestep t − Δt/2), exactly one strictly
    inside each warm-up step that ends above 0 (a warm-up step to σ = 0 is the denoise and takes none; a midpoint
    for no such step, or outside its step, is refused: it would not be read). Runs of n steps cost
    4·min(n, 3) + max(n − 3, 0) model calls (less one for each warm-up step that ends at σ = 0).
    """
    n = len(sigmas) - 1
    warm = min(3, n)
    # the warm-up steps that take a midpoint (the first `inner`): a pseudo RK step to σ = 0 is the denoise, which takes
    # none; a midpoint given for no such step, or outside its step, would not be read: refused
    inner = sum(1 for i in range(warm) if sigmas[i + 1] > 0)
    if midpoints is None:
        midpoints = [math.sqrt(sigmas[i] * sigmas[i + 1]) for i in range(inner)]
    midpoints = [float(m) for m in midpoints]
    steps = ", ".join(f"{sigmas[i]:g} → {sigmas[i + 1]:g}" for i in range(inner)) or "none"
    if len(midpoints) != inner:
        after = (f"; the warm-up step {sigmas[inner]:g} → 0 is the denoise x = D(x, σ), which takes none" if inner < warm
                 else "; the steps after them are PLMS steps, which take none")
        raise InvalidOption(f"midpoints = {midpoints}: {len(midpoints)} given, but this run of {n} step"
                            f"{'s' if n != 1 else ''} has {inner} pseudo Runge–Kutta step{'s' if inner != 1 else ''} "
                            f"that take{'s' if inner == 1 else ''} one ({steps}){after}; give exactly {inner}, one "
                            "strictly inside each of those steps, in order (or leave midpoints out for √(σσ'))")
    outside = [i for i in range(inner) if not sigmas[i + 1] < midpoints[i] < sigmas[i]]
    if outside:
        i = outside[0]
        raise InvalidOption(f"midpoints must give one σ strictly inside each of the first {inner} steps ({steps}), got "
                            f"{midpoints}: midpoints[{i}] = {midpoints[i]:g} is not inside {sigmas[i]:g} → "
                            f"{sigmas[i + 1]:g}")
    eps_hist: list = []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        e1 = to_d(x, sigma, denoised)
        if i < warm and sigma_next > 0:
            mid = midpoints[i]
            y = _transfer(x, e1, sigma, mid)
            e2 = to_d(y, mid, model(y, mid))
            y = _transfer(x, e2, sigma, mid)
            e3 = to_d(y, mid, model(y, mid))
            y = _transfer(x, e3, sigma, sigma_next)
            e4 = to_d(y, sigma_next, model(y, sigma_next))
            eps_hist = [e1] + eps_hist
            x = _transfer(x, (e1 + 2 * e2 + 2 * e3 + e4) / 6, sigma, sigma_next)
        elif i < warm:
            x = denoised
        else:
            eps_hist = [e1] + eps_hist[:3]
            x = _ab_step(x, eps_hist, sigma_next - sigma, len(eps_hist))
        report(callback, x, i, sigma, sigma, denoised)
    return x

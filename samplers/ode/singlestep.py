"""Single-step higher-order samplers: DPM-Solver-2 (k-diffusion ``dpm_2``), DPM-Solver++ 2S / 3S, Heun++,
and DPM-Solver fast / adaptive (Lu et al. 2022).

Each step evaluates the model at intermediate noise levels placed in λ = −log σ and never re-uses earlier
steps. All coefficients are Python floats. ``dpm_adaptive`` is the one sampler here that chooses its steps
on the host (error control) and says so in its metadata.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import sys

import torch
from tqdm.auto import tqdm

from ..core.errors import InvalidInput, InvalidOption, NonFiniteError, StepLimitError
from ..core.registry import register
from ..core.run import progress, report
from ..core.validate import check_tolerances
from ..core.steps import (add_noise, check_solver_type, churn, get_ancestral_step, lam, phi2, second_order_weight,
                          sigma_of, to_d)

_DPM = "Lu et al. 2022, DPM-Solver (arXiv:2206.00927)"
_DPMPP = "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095)"
_CHURN = "Karras et al. 2022 (arXiv:2206.00364), Alg. 2 churn"


@register("dpm_2", kind="ode", order=2, nfe_per_step=2, aliases=("sample_dpm_2",),
          ref=_DPM + " (DPM-Solver-2 in σ, as k-diffusion's sample_dpm_2); " + _CHURN,
          final_step="euler (x = D(x, σ) when σ_next = 0)")
def dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_churn=0.0, s_tmin=0.0,
          s_tmax=math.inf, s_noise=1.0, noise_sampler=None, seed=None):
    """DPM-Solver-2 written in σ (k-diffusion): an Euler half step to the log-σ midpoint, then the full step
    with the midpoint's slope, x_next = x + d(x_mid, σ_mid)·(σ_next − σ̂). EDM churn (s_churn …) optional.
    """
    n = len(sigmas) - 1
    for i in progress(sigmas, disable):
        x, sigma_hat = churn(x, sigmas[i], n, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        sigma_next = sigmas[i + 1]
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma_hat)
        else:
            sigma_mid = math.sqrt(sigma_hat * sigma_next)  # midpoint in log σ
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_next - sigma_hat)
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
    return x


def _first_order(x, sigma: float, sigma_to: float, denoised):
    """The DPM-Solver++ 1st-order (DDIM) step σ → σ_to with D held constant."""
    return x * (sigma_to / sigma) + denoised * -math.expm1(lam(sigma) - lam(sigma_to))


@register("dpmpp_2s", kind="ode", order=2, nfe_per_step=2, aliases=("DPM++ 2S", "dpmsolver++2s"),
          ref=_DPMPP + ", Alg. 1 (DPM-Solver++(2S))", final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_2s(model, x, sigmas, extra_args=None, callback=None, disable=None, *, r=0.5, solver_type="midpoint",
             step_r=None):
    """DPM-Solver++(2S), Lu et al. 2022 Alg. 1: a first-order step to λ + r·h, then

    - midpoint: x_next = (σ_next/σ)·x + (1 − e^(−h))·(D0 + (D_r − D0)/(2r))   (the paper; r = 1/2 uses D_r only)
    - heun:     x_next = (σ_next/σ)·x + (1 − e^(−h))·D0 + φ2(h)·(D_r − D0)/r

    ``step_r``: one r per step instead of ``r``, None for a first-order step (one model call); ``r`` given with it
    is refused, as it would not be read. diffusers' DPMSolverSinglestepScheduler (order 2) is this method on every
    other timestep of its grid, with the timestep between as the inner node (its own r per step), and first-order
    steps where its order list says 1.
    """
    n = len(sigmas) - 1
    if not 0 < r < 1:
        raise InvalidInput(f"r must be in (0, 1), got {r}")
    rs = [r] * n if step_r is None else list(step_r)
    if len(rs) != n or not all(ri is None or 0 < ri < 1 for ri in rs):
        raise InvalidInput(f"step_r must hold one value in (0, 1) or None per step ({n}), got {step_r}")
    check_solver_type(solver_type)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        elif rs[i] is None:
            x = _first_order(x, sigma, sigma_next, denoised)
        else:
            h = lam(sigma_next) - lam(sigma)
            sigma_r = sigma_of(lam(sigma) + rs[i] * h)
            denoised_r = model(_first_order(x, sigma, sigma_r, denoised), sigma_r)
            x = _first_order(x, sigma, sigma_next, denoised)
            # the weights of the 2M update, with D_r − D0 in place of D0 − D1
            x = x + (denoised_r - denoised) * second_order_weight(h, rs[i], solver_type)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_3s", kind="ode", order=3, nfe_per_step=3, aliases=("DPM++ 3S", "dpmsolver++3s"),
          ref=_DPMPP + ", DPM-Solver++(3S) (3rd-order singlestep, r1 = 1/3, r2 = 2/3)",
          final_step="denoise (x = D(x, σ) when σ_next = 0)")
def dpmpp_3s(model, x, sigmas, extra_args=None, callback=None, disable=None, *, r1=1 / 3, r2=2 / 3):
    """DPM-Solver++(3S): first-order step to λ + r1·h, second-order (midpoint) step to λ + r2·h, then

        x_next = (σ_next/σ)·x + (1 − e^(−h))·D0 + φ2(h)·(D_r2 − D0)/r2

    (diffusers' DPMSolverSinglestepScheduler, order 3, midpoint, when its inner timesteps sit at r1, r2 in λ).
    """
    if not 0 < r1 < r2 < 1:
        raise InvalidInput(f"need 0 < r1 < r2 < 1, got r1={r1}, r2={r2}")
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            lambda_, h = lam(sigma), lam(sigma_next) - lam(sigma)
            s1, s2 = sigma_of(lambda_ + r1 * h), sigma_of(lambda_ + r2 * h)
            d1 = model(_first_order(x, sigma, s1, denoised), s1)
            # 2nd-order (midpoint) step σ → s2 from D0 and D(s1): r = r1/r2 of that sub-step
            x2 = _first_order(x, sigma, s2, denoised) + (d1 - denoised) * (-math.expm1(-r2 * h) / (2 * r1 / r2))
            d2 = model(x2, s2)
            x = _first_order(x, sigma, sigma_next, denoised) + (d2 - denoised) * (phi2(h) / r2)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("heunpp2", kind="ode", order=1, nfe_per_step=3, aliases=("sample_heunpp2", "Heun++ 2"),
          ref="ComfyUI sample_heunpp2 (Heun with a third slope, weights from σ/σ_max)",
          final_step="euler on the last step, Heun on the one before")
def heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_churn=0.0, s_tmin=0.0,
            s_tmax=math.inf, s_noise=1.0, noise_sampler=None, seed=None):
    """Heun++ (ComfyUI): slopes at σ, σ_next and σ_next-next, weighted w_k = σ_k/(3σ_max) (w_1 the rest).

    The weights do not tend to a consistent quadrature rule as steps shrink, so despite its three model
    calls the method is first order (measured in tests/test_multistep.py); it is here because users ask for
    it by name. Uses the slope at the next node along the *current* step: the last step is Euler, the one
    before it Heun with weights σ_next/(2σ_max).
    """
    n = len(sigmas) - 1
    s_end = sigmas[-1]
    for i in progress(sigmas, disable):
        x, sigma_hat = churn(x, sigmas[i], n, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + (d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3) * dt
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
    return x


# ----------------------------------------------------------------------------------------------------
# DPM-Solver (noise prediction, Lu et al. 2022): fast (fixed NFE) and adaptive
#
# The loops run in t = λ = −log σ between any two times (either direction), so that the registry samplers below
# and the k-diffusion interface (samplers.interop.kdiffusion.DPMSolver, which integrates a range rather than a
# schedule) are the same code. η > 0 is k-diffusion's ancestral extension: each step stops at σ_down of the
# ancestral split and adds fresh noise of size σ_up.


class EpsSolver:
    """DPM-Solver-1/2/3 steps in t = λ = −log σ on the noise prediction ε = (x − D)/σ (Lu et al. 2022, Alg. 1-2).

    ``model(x, sigma)`` is the denoiser with a float sigma; ``on_call(x, sigma, denoised)`` runs after every
    evaluation. A step re-uses an intermediate prediction that is passed in (``eps_r1``, ``eps_r2``) and returns
    the ones it evaluated, so that an embedded pair of steps costs one set of evaluations.
    """

    def __init__(self, model, on_call=None):
        self.model = model
        self.on_call = on_call
        self.nfe = 0
        self.denoised = None  # the latest model output

    def denoise(self, x, sigma: float):
        self.denoised = self.model(x, sigma)
        if self.on_call is not None:
            self.on_call(x, sigma, self.denoised)
        self.nfe += 1
        return self.denoised

    def eps(self, x, t: float):
        sigma = sigma_of(t)
        denoised = self.denoise(x, sigma)
        return (x - denoised) / sigma, denoised

    def step1(self, x, t, t_next, eps):
        """DPM-Solver-1 (DDIM): x_next = x − σ_next·(e^h − 1)·ε."""
        return x - eps * (sigma_of(t_next) * math.expm1(t_next - t))

    def step2(self, x, t, t_next, eps, r1=0.5, eps_r1=None):
        """DPM-Solver-2 (Alg. 1) with the intermediate point at λ + r1·h; returns (x_next, ε(u1))."""
        h = t_next - t
        s1 = t + r1 * h
        if eps_r1 is None:
            eps_r1, _ = self.eps(x - eps * (sigma_of(s1) * math.expm1(r1 * h)), s1)
        x_next = x - eps * (sigma_of(t_next) * math.expm1(h)) - (eps_r1 - eps) * (sigma_of(t_next) / (2 * r1) * math.expm1(h))
        return x_next, eps_r1

    def step3(self, x, t, t_next, eps, r1=1 / 3, r2=2 / 3, eps_r1=None, eps_r2=None):
        """DPM-Solver-3 (Alg. 2) with intermediate points at λ + r1·h, λ + r2·h; returns (x_next, ε(u1), ε(u2))."""
        h = t_next - t
        s1, s2 = t + r1 * h, t + r2 * h
        if eps_r1 is None:
            eps_r1, _ = self.eps(x - eps * (sigma_of(s1) * math.expm1(r1 * h)), s1)
        if eps_r2 is None:
            u2 = (x - eps * (sigma_of(s2) * math.expm1(r2 * h))
                  - (eps_r1 - eps) * (sigma_of(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1)))
            eps_r2, _ = self.eps(u2, s2)
        x_next = x - eps * (sigma_of(t_next) * math.expm1(h)) - (eps_r2 - eps) * (sigma_of(t_next) / r2 * (math.expm1(h) / h - 1))
        return x_next, eps_r1, eps_r2

    def step(self, order: int, x, t, t_next, eps):
        """One step of ``order`` (1, 2 or 3) with the paper's default intermediate points."""
        if order == 1:
            return self.step1(x, t, t_next, eps)
        return self.step2(x, t, t_next, eps)[0] if order == 2 else self.step3(x, t, t_next, eps)[0]


def _range(sigmas: list[float]) -> tuple[float, float, bool]:
    """(σ_start, smallest non-zero σ, whether the schedule ends in 0)."""
    ends_in_zero = sigmas[-1] == 0
    sigma_min = sigmas[-2] if ends_in_zero else sigmas[-1]
    return sigmas[0], sigma_min, ends_in_zero


def fast_orders(nfe: int) -> list[int]:
    """DPM-Solver-fast's order plan for ``nfe`` evaluations (Lu et al. 2022, §3.4): mostly 3rd order."""
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


def ancestral_target(t: float, t_next: float, t_end: float, eta: float) -> tuple[float, float]:
    """Where an ancestral DPM-Solver step goes: (λ of σ_down, never past ``t_end``; σ_up with σ_down² + σ_up² = σ_next²).
    η = 0 is the deterministic step (t_next, 0)."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = get_ancestral_step(sigma_of(t), sigma_of(t_next), eta)
    t_down = min(t_end, lam(sigma_down))
    return t_down, math.sqrt(max(sigma_of(t_next) ** 2 - sigma_of(t_down) ** 2, 0.0))


def _check_direction(t_start: float, t_end: float, eta: float) -> bool:
    forward = t_end > t_start
    if not forward and eta:
        raise InvalidOption(f"eta must be 0 when integrating towards higher noise (λ from {t_start:g} to {t_end:g}): "
                            "ancestral noise only exists in the denoising direction")
    return forward


def solve_fast(solver: EpsSolver, x, t_start: float, t_end: float, nfe: int, *, eta: float = 0.0,
               s_noise: float = 1.0, noise_sampler=None, times=None, on_step=None):
    """DPM-Solver-fast from λ = ``t_start`` to ``t_end`` with ``nfe`` model calls: the steps of
    :func:`fast_orders`, uniform in λ (or at ``times``, a caller's rounding of that grid).
    ``on_step(i, x, t, denoised)`` runs before step i (after its first call)."""
    _check_direction(t_start, t_end, eta)
    orders = fast_orders(nfe)
    ts = times or [t_start + (t_end - t_start) * k / len(orders) for k in range(len(orders) + 1)]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, sigma_up = ancestral_target(t, t_next, t_end, eta)
        eps, denoised = solver.eps(x, t)
        if on_step is not None:
            on_step(i, x, t, denoised)
        x = solver.step(order, x, t, t_down, eps)
        x = add_noise(x, noise_sampler, sigma_of(t), sigma_of(t_next), s_noise * sigma_up)
    return x


# Whether dpm_fast reports once per model call where its run with final_denoise=False reports once per DPM-Solver step:
# set only by per_call_report(), for a caller that must know where each step of the schedule starts (below).
_PER_CALL_REPORT: contextvars.ContextVar[bool] = contextvars.ContextVar("dpm_fast_per_call_report", default=False)


@contextlib.contextmanager
def per_call_report():
    """Within it, ``dpm_fast`` calls back once per model call, whatever ``final_denoise``: the registry's report, one
    callback per step of ``sigmas``, after that step's call, as every registry sampler calls back. The diffusers shim's
    planning run (:func:`samplers.interop.diffusers_scheduler._plan`) reads from that report where each step of the
    schedule starts; k-diffusion's per-DPM-Solver-step report (``final_denoise=False``) says where the solver's own
    steps start, which are not the schedule's (calls 0, 3 and 5 of 6). Not an option of the sampler: a callback a
    caller passes gets the report of the run it asked for. Context-local (a ``ContextVar``): other threads' runs keep
    theirs."""
    token = _PER_CALL_REPORT.set(True)
    try:
        yield
    finally:
        _PER_CALL_REPORT.reset(token)


@register("dpm_fast", kind="ode", order=3, nfe_per_step=1, aliases=("sample_dpm_fast",),
          ref=_DPM + ", DPM-Solver-fast (§3.4)",
          final_step="denoise at the smallest non-zero σ when the schedule ends in 0 (1 of the budget); "
                     "final_denoise=False: none, x at that σ (ComfyUI's and A1111's DPM fast, which call back "
                     "once per DPM-Solver step, as k-diffusion does)")
def dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=0.0, s_noise=1.0,
             final_denoise=True, noise_sampler=None, seed=None):
    """DPM-Solver-fast: the budget is the number of steps in ``sigmas`` (one model call each).

    It integrates from ``sigmas[0]`` to the smallest non-zero σ with steps uniform in λ and orders from
    :func:`fast_orders`, then spends the last call on the denoise to σ = 0 if the schedule ends in 0. Only
    the end points of ``sigmas`` are used; the callback fires once per model call (so once per step of ``sigmas``,
    as every registry sampler's; with ``final_denoise=False`` once per DPM-Solver step, below), with ``x`` the
    state that call was made at, before the step, not after it as other samplers do: the last callback's ``x`` is
    not the returned result. (k-diffusion's ``DPMSolver.dpm_solver_fast`` calls its info_callback once per step of
    its own, after the step's first call; the k-diffusion drop-in's ``sample_dpm_fast`` does that.) ``eta`` > 0
    makes each step ancestral (k-diffusion's option): a step to σ_down, then fresh noise σ_up.

    ``final_denoise=False`` spends all ``len(sigmas) − 1`` calls on the integration to the smallest non-zero σ
    and returns x there, not denoised: what ComfyUI's and A1111's "DPM fast" compute (k-diffusion's
    ``sample_dpm_fast(sigma_min=sigmas[-2], sigma_max=sigmas[0], n=len(sigmas) - 1)``; their labels set it).
    That run is k-diffusion's, its callback too: once per DPM-Solver step (``len(fast_orders(n))`` of them, 3 on a
    6-step schedule), after the step's first call, with ``i`` the step and ``x`` the state the step starts from, as
    the tools that call ``sample_dpm_fast`` (ComfyUI's preview and step counter, A1111's ``sampling_step``) see it.
    """
    sigma_max, sigma_min, ends_in_zero = _range(sigmas)
    denoise = ends_in_zero and final_denoise
    budget = len(sigmas) - 1 - (1 if denoise else 0)
    # the registry's report; the tools' run (final_denoise=False) reports per DPM-Solver step, but per call when
    # planned (per_call_report)
    per_call = final_denoise or _PER_CALL_REPORT.get()
    start = x

    def handed(x_in):
        # the first call is made at the input itself (the caller's own tensor where its dtype is the state's): a
        # callback gets a copy of it, as it gets a state of the run's own from every other sampler and call
        return x_in.clone() if x_in is start else x_in

    with tqdm(total=len(sigmas) - 1, disable=disable, leave=False) as bar:
        def on_call(x_in, sigma, denoised):
            if per_call and callback is not None:
                report(callback, handed(x_in), solver.nfe, sigma, sigma, denoised)
            bar.update()

        def on_step(i, x_in, t, denoised):  # k-diffusion's info_callback: once per step, after its first call
            report(callback, handed(x_in), i, sigma_of(t), sigma_of(t), denoised)

        solver = EpsSolver(model, on_call)
        if budget > 0:
            x = solve_fast(solver, x, lam(sigma_max), lam(sigma_min), budget, eta=eta, s_noise=s_noise,
                           noise_sampler=noise_sampler, on_step=None if per_call or callback is None else on_step)
        if denoise:
            x = solver.denoise(x, sigma_min)
    return x


_LOG_FLOAT_MAX = math.log(sys.float_info.max)


class PIDStepSizeController:
    """PID control of the step size on the host (Söderlind 2003), with k-diffusion's interface and limiter:
    ``propose_step(error)`` scales ``h`` by 1 + atan(f − 1), f = ε₀^b1·ε₁^b2·ε₂^b3 of the last inverse errors,
    and accepts the step when that factor is at least ``accept_safety``."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def limiter(self, x):
        return 1 + math.atan(x - 1)

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        try:
            f = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        except OverflowError:  # a large gain (pcoeff = 200, say): one power is past a float, the product may not be
            log_f = self.b1 * math.log(self.errs[0]) + self.b2 * math.log(self.errs[1]) + self.b3 * math.log(self.errs[2])
            f = math.exp(log_f) if log_f < _LOG_FLOAT_MAX else math.inf  # the limiter saturates: 1 + π/2
        factor = self.limiter(f)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


ERROR_NORMS = ("item", "batch")


def error_norm(x_low, x_high, x_prev, rtol: float, atol: float, norm: str = "item"):
    """‖(x_low − x_high)/δ‖_RMS with δ = max(atol, rtol·max(|x_low|, |x_prev|)) (Lu et al. 2022, §3.4).

    ``"item"`` takes the RMS per batch item and the worst item (the paper's code: a batch's steps are those of
    its worst item); ``"batch"`` the RMS over the whole batch (k-diffusion)."""
    delta = (torch.maximum(x_low.abs(), x_prev.abs()) * rtol).clamp(min=atol)
    ratio = (x_low - x_high) / delta
    if norm == "batch":
        return ratio.pow(2).mean().sqrt()
    return ratio.reshape(ratio.shape[0], -1).pow(2).mean(1).sqrt().max()


def solve_adaptive(solver: EpsSolver, x, x_prev, t_start: float, t_end: float, pid: PIDStepSizeController, *,
                   order: int = 3, rtol: float = 0.05, atol: float = 0.0078, eta: float = 0.0, s_noise: float = 1.0,
                   noise_sampler=None, norm: str = "item", t_tol: float = 1e-9, round_time=float,
                   max_attempts: int | None = None, on_attempt=None):
    """DPM-Solver-12 / 23 from λ = ``t_start`` to ``t_end``: embedded steps of orders (1, 2) or (2, 3), the
    higher one kept, the difference as the error (:func:`error_norm`), the step size from ``pid``.

    Returns ``(x, x_prev)`` (the last lower-order solution feeds the next relative tolerance).
    ``round_time`` rounds each proposed time (a caller that keeps its times in float32 passes that rounding);
    ``on_attempt(x, s, denoised, error, accepted)`` runs after every attempt, accepted or not. A non-finite error
    estimate raises :class:`NonFiniteError`, an attempt beyond ``max_attempts`` :class:`StepLimitError`.
    """
    forward = _check_direction(t_start, t_end, eta)
    s, attempts = t_start, 0
    while (s < t_end - t_tol) if forward else (s > t_end + t_tol):
        t = round_time(min(t_end, s + pid.h) if forward else max(t_end, s + pid.h))
        t_down, sigma_up = ancestral_target(s, t, t_end, eta)
        # h below the resolution of λ = s, or (η > 0) of σ there: σ(t) rounds to σ(s), so the ancestral target
        # σ_down is σ itself (every step's formulas divide by h = t_down − s)
        if t == s or t_down == s:
            ancestral = "" if t == s else (
                f" (its ancestral target with eta = {eta:g} is σ_down = {sigma_of(t_down):.4g}, σ itself: a large eta "
                "sends every step's σ_down far below σ_next, which the error control answers by shrinking h; lower "
                "eta, e.g. to 1 at most)")
            raise StepLimitError(
                f"DPM-Solver adaptive: the step size h = {pid.h:.3g} fell below what λ = {s:.6g} (σ = "
                f"{sigma_of(s):.4g}) resolves after {attempts} attempts{ancestral}; the PID gains (b1, b2, b3 = "
                f"{pid.b1:g}, {pid.b2:g}, {pid.b3:g}: pcoeff, icoeff, dcoeff over the order) shrink it on every "
                "rejection: use gains near k-diffusion's pcoeff=0, icoeff=1, dcoeff=0, or loosen rtol/atol "
                f"(now {rtol:g}/{atol:g})")
        eps, denoised = solver.eps(x, s)
        if order == 2:
            x_low = solver.step1(x, s, t_down, eps)
            x_high, _ = solver.step2(x, s, t_down, eps)
        else:
            x_low, eps_r1 = solver.step2(x, s, t_down, eps, r1=1 / 3)
            x_high, _, _ = solver.step3(x, s, t_down, eps, eps_r1=eps_r1)
        error = error_norm(x_low, x_high, x_prev, rtol, atol, norm)
        value = float(error.detach())  # host decision (no autograd warning when x requires grad)
        if not math.isfinite(value):
            raise NonFiniteError(f"DPM-Solver adaptive: the error estimate at σ = {sigma_of(s):.4g} is {value} (the "
                                 "model returned NaN/Inf, e.g. fp16 overflow: try bfloat16 or float32)")
        if max_attempts is not None and attempts >= max_attempts:
            raise StepLimitError(f"DPM-Solver adaptive took its max_steps attempts without reaching σ = "
                                 f"{sigma_of(t_end):.4g}; loosen rtol/atol (now {rtol:g}/{atol:g}) or raise max_steps")
        attempts += 1
        accepted = pid.propose_step(value)
        if accepted:
            x_prev = x_low
            x = add_noise(x_high, noise_sampler, sigma_of(s), sigma_of(t), s_noise * sigma_up)
            s = t
        if on_attempt is not None:
            on_attempt(x, s, denoised, error, accepted)
    return x, x_prev


def check_adaptive(order: int, norm: str) -> None:
    if order not in (2, 3):
        raise InvalidInput(f"dpm_adaptive order must be 2 or 3, got {order!r}")
    if norm not in ERROR_NORMS:
        raise InvalidOption(f"error_norm must be one of {ERROR_NORMS}, got {norm!r}")


@register("dpm_adaptive", kind="ode", order=3, nfe_per_step=3, host_sync=True,
          aliases=("sample_dpm_adaptive",),
          ref=_DPM + ", DPM-Solver-12/23 adaptive step size (§3.4, Alg. 4-5)",
          final_step="denoise at the smallest non-zero σ when the schedule ends in 0; final_denoise=False: none, "
                     "x at that σ (ComfyUI's and A1111's DPM adaptive)")
def dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=3, rtol=0.05,
                 atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0,
                 s_noise=1.0, error_norm="item", through_schedule=True, final_denoise=True, max_steps=10_000,
                 info=None, noise_sampler=None, seed=None):
    """DPM-Solver-23 (or -12 with ``order=2``) with embedded error estimates and PID step control.

    Integrates through every σ of the schedule in turn (each is an output point: the callback fires there,
    so the schedule sets where you see progress, not the step sizes), with the error norm
    ‖(x_low − x_high)/max(atol, rtol·max(|x_low|, |x_prev|))‖_RMS taken per batch item and maximised (the worst
    item sets the step; ``error_norm="batch"`` takes it over the whole batch, as k-diffusion does). ``eta`` > 0
    makes the steps ancestral (k-diffusion's option). The step decisions read the device: ``host_sync=True``.
    Pass ``info={}`` to receive ``nfe``, ``n_accept`` and ``n_reject``. The run stops with an error when the error
    estimate is not finite (a model returning NaN/Inf: the step would shrink forever) or after ``max_steps``
    attempted steps.

    ``through_schedule=False`` runs one adaptive solve from ``sigmas[0]`` to the smallest non-zero σ, the σ in
    between ignored (the callback fires after every attempted step), ending as k-diffusion's loop does (within
    1e-5 of that σ's λ); ``final_denoise=False`` returns x at the smallest non-zero σ instead of the denoise to
    σ = 0. Both, with ``error_norm="batch"``, are what ComfyUI's and A1111's "DPM adaptive" compute (k-diffusion's
    ``sample_dpm_adaptive(sigma_min=sigmas[-2], sigma_max=sigmas[0])``; their labels set the three).
    """
    check_adaptive(order, error_norm)
    # x is the run's state (float32 for half-precision latents): tolerances it cannot resolve, before any model call
    check_tolerances("dpm_adaptive", rtol, atol, x.dtype, "rtol=0.05, atol=0.0078")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise InvalidInput(f"max_steps must be an integer >= 1 (the cap on attempted steps), got {max_steps!r}")
    solver = EpsSolver(model)
    stats = {"n_accept": 0, "n_reject": 0}

    def count(x_, s, denoised, error, accepted):
        stats["n_accept" if accepted else "n_reject"] += 1

    pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    x_prev = x
    if not through_schedule:
        sigma_max, sigma_min, ends_in_zero = _range(sigmas)
        bar = tqdm(disable=disable, leave=False)

        def on_attempt(x_, s, denoised, error, accepted):
            # i counts the attempts so far, as k-diffusion's info['steps'] - 1 does: not the bar's counter, which a
            # disabled bar (disable=True, the pipeline's progress=False) never advances
            i = stats["n_accept"] + stats["n_reject"]
            count(x_, s, denoised, error, accepted)
            report(callback, x_, i, sigma_of(s), sigma_of(s), denoised)
            bar.update()

        with bar:
            x, _ = solve_adaptive(solver, x, x_prev, lam(sigma_max), lam(sigma_min), pid, order=order, rtol=rtol,
                                  atol=atol, eta=eta, s_noise=s_noise, noise_sampler=noise_sampler,
                                  norm=error_norm, t_tol=1e-5, max_attempts=max_steps, on_attempt=on_attempt)
        if ends_in_zero and final_denoise:
            x = solver.denoise(x, sigma_min)
            report(callback, x, stats["n_accept"] + stats["n_reject"], sigma_min, sigma_min, x)
    else:
        for i in progress(sigmas, disable):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if sigma_next == 0:
                if final_denoise:
                    x = solver.denoise(x, sigma)
                report(callback, x, i, sigma, sigma, x)
                continue
            x, x_prev = solve_adaptive(solver, x, x_prev, lam(sigma), lam(sigma_next), pid, order=order,
                                       rtol=rtol, atol=atol, eta=eta, s_noise=s_noise, noise_sampler=noise_sampler,
                                       norm=error_norm, max_attempts=max_steps - stats["n_accept"] - stats["n_reject"],
                                       on_attempt=count)
            report(callback, x, i, sigma, sigma, solver.denoised if solver.denoised is not None else x)
    if info is not None:
        info.update(stats, nfe=solver.nfe)
    return x

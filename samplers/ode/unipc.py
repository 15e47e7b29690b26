"""UniPC: the unified predictor-corrector of Zhao et al. 2023 (arXiv:2302.04867), data prediction, B(h) = bh1 | bh2.

In λ = −log σ, with h = λ_next − λ, D0 the current denoised estimate and D_k those of earlier steps at
relative positions r_k = (λ_k − λ)/h, the predictor UniP-p is

    x_next = (σ_next/σ)·x + (1 − e^(−h))·D0 − B(h)·Σ_k ρ_k·(D_k − D0)/r_k

and the corrector UniC re-uses the model call at the predicted point (no extra evaluation) to refine it with
one more node (r = 1). The weights ρ solve R·ρ = b with R_ik = r_k^(i−1) and b_i = i!·h·φ_(i+1)(h)/B(h)
(Theorem 3.1 of the paper); B(h) = h (bh1) or e^h − 1 (bh2). These are Python floats, solved with numpy before
each step's tensor work, so the loop never reads the device.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.registry import register
from ..core.run import progress, report
from ..core.errors import InvalidInput, InvalidOption
from ..core.validate import below_sigma_limit

_REF = "Zhao et al. 2023, UniPC (arXiv:2302.04867)"


def _weights(h: float, rks: list[float], order: int, variant: str, corrector: bool) -> tuple[float, list[float]]:
    """(B(h), ρ) for the predictor (``corrector=False``) or the corrector of the given order.

    rks are the relative positions of the earlier nodes (the corrector's new node r = 1 is appended here).
    """
    hh = -h  # data prediction
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    nodes = list(rks) + [1.0]
    R, b = [], []
    for i in range(1, order + 1):
        R.append([r ** (i - 1) for r in nodes])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if corrector:
        rhos = [0.5] if order == 1 else list(np.linalg.solve(np.array(R), np.array(b)))
    elif order == 1:
        rhos = []
    elif order == 2:
        rhos = [0.5]  # the paper's simplified choice for UniP-2 (as the reference code)
    else:
        rhos = list(np.linalg.solve(np.array(R)[:-1, :-1], np.array(b)[:-1]))
    return b_h, [float(r) for r in rhos]


def _unipc(model, x, sigmas, callback, disable, variant, order, corrector, lower_order_final, disable_corrector=(),
           final_sigma=None):
    if order not in (1, 2, 3):
        raise InvalidInput(f"UniPC order must be 1, 2 or 3, got {order!r}")
    n = len(sigmas) - 1
    if final_sigma is not None:
        # the run steps to it (up from a last positive σ below it): the limit of the schedule's σ, before any call
        below_sigma_limit("final_sigma", float(final_sigma), x.dtype, "pass a final_sigma below it (ComfyUI's is "
                          "0.001), or leave final_sigma out to end with the denoise at the last positive σ")
    if final_sigma is not None and n >= 1 and float(sigmas[-1]) == 0:
        last = float(sigmas[-2])
        if final_sigma == last and not lower_order_final and order > 1 and n > 1:
            raise InvalidOption(f"final_sigma = {final_sigma:g} is the schedule's last positive σ: the last step would "
                                "have zero length, which a higher-order step divides by (lower_order_final=False); "
                                "pass lower_order_final=True (the last step first order: the state stays where it "
                                "is, as in ComfyUI), end the schedule at another σ, or leave final_sigma out")
        # ComfyUI's sample_unipc: a schedule ending in 0 ends at final_sigma instead (timesteps[-1] = 0.001), the
        # last step is the predictor like any other (up to it, as there, where the schedule already went below), and
        # the result is the state there, not denoised
        sigmas = list(sigmas[:-1]) + [float(final_sigma)]
    if disable_corrector:
        if not corrector:
            raise InvalidOption(f"disable_corrector = {list(disable_corrector)} with corrector=False: no step is "
                                "corrected, so it would do nothing; leave one of them out")
        outside = [i for i in disable_corrector if not 0 <= i <= n - 2]
        if outside:
            corrected = (f"corrects the results of steps 0 … {n - 2}, each at the step after" if n >= 2
                         else "corrects nothing")
            raise InvalidOption(f"disable_corrector names step {outside[0]}, which is not a corrected step: a run "
                                f"of {n} step{'s' if n != 1 else ''} {corrected}; list only those steps")
    lams = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    hist: list = []  # denoised estimates, most recent first
    x_last, order_last, warm = None, 0, 0
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if corrector and x_last is not None and i - 1 not in disable_corrector:
            # UniC: correct the point just predicted with the model output already taken there
            h = lams[i] - lams[i - 1]
            rks = [(lams[i - 1 - k] - lams[i - 1]) / h for k in range(1, order_last)]
            b_h, rhos = _weights(h, rks, order_last, variant, corrector=True)
            m0 = hist[0]
            x = x_last * (sigma / sigmas[i - 1]) - m0 * math.expm1(-h)
            correction = (denoised - m0) * rhos[-1]
            for k, rk in enumerate(rks, start=1):
                correction = correction + (hist[k] - m0) * (rhos[k - 1] / rk)
            x = x - correction * b_h
        hist = [denoised] + hist[: order - 1]
        this_order = min(order, n - i) if lower_order_final else order
        this_order = min(this_order, warm + 1)
        x_last, order_last = x, this_order
        if sigma_next == 0:
            x = denoised
        elif lams[i + 1] == lams[i]:
            pass  # a zero-length first-order last step (final_sigma at the last σ): the state stays, as in ComfyUI
        else:
            # UniP: the predictor of order this_order
            h = lams[i + 1] - lams[i]
            rks = [(lams[i - k] - lams[i]) / h for k in range(1, this_order)]
            b_h, rhos = _weights(h, rks, this_order, variant, corrector=False)
            x = x * (sigma_next / sigma) - denoised * math.expm1(-h)
            for k, (rk, rho) in enumerate(zip(rks, rhos), start=1):
                x = x - (hist[k] - denoised) * (b_h * rho / rk)
        warm = min(warm + 1, order)
        report(callback, x, i, sigma, sigma, denoised)
    return x


_FINAL = ("denoise (x = D(x, σ) when σ_next = 0; no corrector after it); final_sigma=s: a predictor step to σ = s "
          "instead, x there (ComfyUI's uni_pc: s = 0.001)")
_DOC = """UniPC-{v} (Zhao et al. 2023): predictor UniP of ``order`` (1–3) with the UniC corrector (``corrector``)
    at no extra model call. Warm-up uses the orders available; ``lower_order_final`` lowers the order of the
    last steps to the number left (diffusers' rule). Equals diffusers' UniPCMultistepScheduler (predict_x0,
    solver_type "{v}") step for step; ``order=2`` is diffusers' default, 3 is ComfyUI's.

    Convergence: UniP-p is of order p and UniC raises it to p + 1, so the default (p = 3 with corrector) is
    registered as order 4. ``lower_order_final`` (on by default, as in diffusers and ComfyUI, for stability at
    few steps) spends the last steps at lower order: on a schedule that stops at σ > 0 this caps the
    measured order at about 2; on the usual schedules ending in 0 the last step is the denoise anyway.
    ``disable_corrector``: the steps i whose result is not corrected at step i + 1 (diffusers' option of that
    name), each in 0 … n − 2 (n the steps of the run): an index outside names no corrected step and is refused, as
    is the option with ``corrector=False``. (diffusers ignores such indices; its shim passes the sampler only those
    of its config that name a corrected step of the run, shifted by the start step in img2img.)
    ``final_sigma`` (default None: the denoise above): on a schedule ending in 0, the last step goes to σ =
    ``final_sigma`` instead, with the predictor rule of any other step (no corrector, no model call after it), and
    the state there is returned, not denoised: ComfyUI's ``sample_unipc`` (``timesteps[-1] = 0.001``), which its
    ``uni_pc`` / ``uni_pc_bh2`` labels set. It must be finite and > 0; where the last positive σ is final_sigma
    itself the last step has zero length (first order, the state stays: ComfyUI's result; refused with
    ``lower_order_final=False``, whose higher-order step would divide by it); a schedule whose last positive σ is
    already below it steps up to it, as ComfyUI's does, and one ending
    above 0 ends where it ends (as in ComfyUI)."""


@register("unipc_bh1", kind="ode", order=4, nfe_per_step=1, aliases=("UniPC bh1", "sample_uni_pc"),
          ref=_REF + ", B(h) = h", final_step=_FINAL)
def unipc_bh1(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=3, corrector=True,
              lower_order_final=True, disable_corrector=(), final_sigma=None):
    return _unipc(model, x, sigmas, callback, disable, "bh1", order, corrector, lower_order_final,
                  tuple(disable_corrector), final_sigma)


@register("unipc_bh2", kind="ode", order=4, nfe_per_step=1, aliases=("UniPC bh2", "sample_uni_pc_bh2"),
          ref=_REF + ", B(h) = e^h − 1", final_step=_FINAL)
def unipc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=3, corrector=True,
              lower_order_final=True, disable_corrector=(), final_sigma=None):
    return _unipc(model, x, sigmas, callback, disable, "bh2", order, corrector, lower_order_final,
                  tuple(disable_corrector), final_sigma)


unipc_bh1.__doc__ = _DOC.format(v="bh1")
unipc_bh2.__doc__ = _DOC.format(v="bh2")

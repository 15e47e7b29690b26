"""Every torchdiffeq ODE solver as a registry sampler, through one adapter: ``torchdiffeq.<method>``.

The PF-ODE dx/dσ = (x − D(x, σ))/σ is handed to ``torchdiffeq.odeint`` with the schedule as its output
times (σ itself is the integration variable, so ``torchdiffeq.euler`` is ``euler`` and ``torchdiffeq.rk4``
is the 3/8-rule ``rk38``, step for step):

- fixed-grid methods take exactly one step per interval of the schedule;
- adaptive methods (``rtol``, ``atol``) choose their own steps between the schedule's points; every point of
  the schedule is also a step end (torchdiffeq's ``step_t``), so no step crosses the last non-zero σ towards
  the singularity and the callback fires on solution points, not on interpolated ones.

The callback's ``denoised`` at a schedule point is the model call made there (for adaptive methods without a
call exactly there, the call nearest in log σ).

The ODE is singular at σ = 0, so every method integrates to the last non-zero σ and a schedule ending in 0
finishes with the denoise x = D(x, σ_last) (one more model call). torchdiffeq compares time tensors on the
host inside its loops (even on a fixed grid), so these samplers declare ``host_sync=True``. Pass ``info={}``
to receive the number of model calls (``nfe``).
"""
from __future__ import annotations

import bisect
import math

import torch

from ..core.errors import NonFiniteError, StepLimitError
from ..core.registry import register
from ..core.run import progress, report

_REF = "Chen et al. 2018, torchdiffeq (github.com/rtqichen/torchdiffeq)"

# method: (order, model calls per step). torchdiffeq's Adams methods use constant-step coefficients: on the
# uneven grids of diffusion schedules they converge with order 2 (measured, tests/test_torchdiffeq_adapter.py),
# and above max_order 4 the explicit one is unstable there; they default to max_order=4 and warm up with two
# rk4 steps (4 calls each). The implicit ones make one call plus up to ``max_iters`` (4) corrector calls a step:
# 5 is their declared (worst-case) count, reached on diffusion ODEs at the default tolerance.
FIXED = {"euler": (1, 1), "midpoint": (2, 2), "heun2": (2, 2), "heun3": (3, 3), "rk4": (4, 4),
         "explicit_adams": (2, 1), "implicit_adams": (2, 5), "fixed_adams": (2, 5)}
DEFAULT_OPTIONS = {"explicit_adams": {"max_order": 4}, "implicit_adams": {"max_order": 4}, "fixed_adams": {"max_order": 4}}
MAX_STEPS = 10_000  # adaptive methods: the default cap on steps per output interval (options={"max_num_steps": n})
# method: (order, model calls per accepted step without rejections)
ADAPTIVE = {"dopri5": (5, 6), "dopri8": (8, 13), "bosh3": (3, 3), "fehlberg2": (2, 3), "adaptive_heun": (2, 2)}


def _integrate(method, model, x, sigmas, callback, disable, odeint_kw, info):
    import torchdiffeq  # loaded when such a sampler runs, not by ``import samplers``

    ends_in_zero = sigmas[-1] == 0
    grid = sigmas[:-1] if ends_in_zero else sigmas
    log_grid = [math.log(s) for s in grid]
    # for each schedule point, the denoised of the model call nearest to it in log σ (exact on a fixed grid,
    # where every step starts with a call at its σ): the callback's ``denoised``; at most len(grid) are kept
    # (ties go to the later call: a step's own call at its start comes after the previous step's stage there)
    nearest: dict[int, tuple[float, torch.Tensor]] = {}
    neg_log_grid = [-v for v in log_grid]
    calls = [0]

    def f(t, y):
        sigma = float(t)  # a host read: torchdiffeq's own loop reads the host too (host_sync=True)
        denoised = model(y, sigma)
        calls[0] += 1
        j = bisect.bisect_left(neg_log_grid, -math.log(sigma)) if sigma > 0 else len(grid)
        for k in (j - 1, j):
            if 0 <= k < len(grid):
                dist = abs(math.log(sigma) - log_grid[k])
                if k not in nearest or dist <= nearest[k][0]:
                    nearest[k] = (dist, denoised)
        return (y - denoised) / sigma

    if len(grid) > 1:
        t = torch.tensor(grid, dtype=torch.float64)
        if "rtol" in odeint_kw:  # adaptive: accepted steps end on every schedule point, never beyond the last
            odeint_kw["options"].setdefault("step_t", t)
            odeint_kw["options"].setdefault("max_num_steps", MAX_STEPS)  # a run that cannot finish stops
        try:
            path = torchdiffeq.odeint(f, x, t, method=method, **odeint_kw)
        except AssertionError as err:  # torchdiffeq's way of saying the step size collapsed or the cap was hit
            if "underflow in dt" in str(err):
                raise NonFiniteError(f"torchdiffeq.{method}: the step size fell to 0 (the model returned NaN/Inf, or "
                                     "the ODE is too stiff at these tolerances); check the model's outputs "
                                     "(samplers.debug()) or loosen rtol/atol") from None
            if "max_num_steps" in str(err):
                raise StepLimitError(f"torchdiffeq.{method} took {odeint_kw['options']['max_num_steps']} steps "
                                     "(options={'max_num_steps': ...}) without finishing; loosen rtol/atol") from None
            raise
    else:
        path = x[None]
    for i in progress(sigmas, disable):
        if i < len(grid) - 1:
            x = path[i + 1]
            report(callback, x, i, grid[i], grid[i], nearest[i][1] if i in nearest else path[i])
        else:  # the last step, to σ = 0
            x = model(path[-1], grid[-1])
            calls[0] += 1
            report(callback, x, i, grid[-1], grid[-1], x)
    if info is not None:
        info["nfe"] = calls[0]
    return x


def _register_fixed(method: str, order: int, nfe: int):
    @register(f"torchdiffeq.{method}", kind="ode", order=order, nfe_per_step=nfe, host_sync=True,
              ref=_REF + f", method '{method}' on the schedule's grid",
              final_step="denoise (x = D(x, σ) from the last non-zero σ)")
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, options=None, info=None):
        merged = {**DEFAULT_OPTIONS.get(method, {}), **(options or {})}
        return _integrate(method, model, x, sigmas, callback, disable, {"options": merged}, info)

    sampler.__doc__ = (f"torchdiffeq's fixed-grid '{method}' (order {order}) stepping exactly on the given sigmas; "
                       "``options`` go to torchdiffeq.odeint, ``info={}`` receives the NFE.")
    return sampler


def _register_adaptive(method: str, order: int, nfe: int):
    @register(f"torchdiffeq.{method}", kind="ode", order=order, nfe_per_step=nfe, host_sync=True,
              ref=_REF + f", adaptive method '{method}'",
              final_step="denoise (x = D(x, σ) from the last non-zero σ)")
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, rtol=1e-5, atol=1e-5,
                options=None, info=None):
        return _integrate(method, model, x, sigmas, callback, disable,
                          {"rtol": rtol, "atol": atol, "options": dict(options or {})}, info)

    sampler.__doc__ = (f"torchdiffeq's adaptive '{method}' (order {order}) from the first to the last non-zero σ "
                       "with ``rtol``/``atol``; the schedule's points are output points. ``info={}`` gets the NFE.")
    return sampler


# Every method of torchdiffeq's SOLVERS table but 'scipy_solver' (it hands the state to scipy on the host, a
# float64 numpy round trip per call); tests/test_torchdiffeq_adapter.py checks this list against torchdiffeq's.
for _method, (_order, _nfe) in ADAPTIVE.items():
    _register_adaptive(_method, _order, _nfe)
for _method, (_order, _nfe) in FIXED.items():
    _register_fixed(_method, _order, _nfe)

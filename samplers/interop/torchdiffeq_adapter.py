"""Every torchdiffeq ODE solver as a registry sampler, through one adapter: ``torchdiffeq.<method>``.

The PF-ODE dx/dσ = (x − D(x, σ))/σ is handed to ``torchdiffeq.odeint`` with the schedule as its output
times (σ itself is the integration variable, so ``torchdiffeq.euler`` is ``euler`` and ``torchdiffeq.rk4``
is the 3/8-rule ``rk38``, step for step):

- fixed-grid methods take exactly one step per interval of the schedule;
- adaptive methods (``rtol``, ``atol``) choose their own steps between the schedule's points; every point of
  the schedule is also a step end (torchdiffeq's ``step_t``), so no step crosses the last non-zero σ towards
  the singularity and the callback fires on solution points, not on interpolated ones.

The callback's ``denoised`` at a schedule point is the model call made there (where no call is exactly there:
adaptive methods, or a fixed grid of ``step_size`` / ``grid_constructor`` that skips schedule points, the
integration's call nearest in log σ; never the state). The whole schedule is one ``odeint`` call: callbacks and
the progress bar are replayed once it has finished, so they cannot preview or interrupt the integration.

``step_t`` / ``jump_t`` options must lie in the integrated range, from the first to the last non-zero σ (refused
otherwise); points that repeat, among themselves or with the schedule's, in torchdiffeq's time dtype
(``options['dtype']`` promoted with the state's) are merged there, a point in both lists staying a jump point.

The ODE is singular at σ = 0, so every method integrates to the last non-zero σ and a schedule ending in 0
finishes with the denoise x = D(x, σ_last) (one more model call). torchdiffeq compares time tensors on the
host inside its loops (even on a fixed grid), so these samplers declare ``host_sync=True``. Pass ``info={}``
to receive the number of model calls (``nfe``).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from numbers import Complex, Integral, Real

import torch

from ..core.errors import InvalidOption, InvalidType, NonFiniteError, StepLimitError
from ..core.registry import register
from ..core.run import progress, report
from ..core import validate
from ..core.validate import closest

_REF = "Chen et al. 2018, torchdiffeq (github.com/rtqichen/torchdiffeq)"

# method: (order, model calls per step). torchdiffeq's Adams methods use constant-step coefficients: on the
# uneven grids of diffusion schedules they converge with order 2 (measured, tests/test_torchdiffeq_adapter.py),
# and above max_order 4 the explicit one is unstable there; they default to max_order=4 and warm up with two
# rk4 steps (4 calls each). The implicit ones make one call plus up to ``max_iters`` (4) corrector calls a step:
# 5 is their declared (worst-case) count, reached on diffusion ODEs at the default tolerance.
FIXED = {"euler": (1, 1), "midpoint": (2, 2), "heun2": (2, 2), "heun3": (3, 3), "rk4": (4, 4),
         "explicit_adams": (2, 1), "implicit_adams": (2, 5), "fixed_adams": (2, 5)}
DEFAULT_OPTIONS = {"explicit_adams": {"max_order": 4}, "implicit_adams": {"max_order": 4}, "fixed_adams": {"max_order": 4}}
DFACTOR = 0.2  # torchdiffeq's default dfactor (RKAdaptiveStepsizeODESolver): the least a rejected step is shortened to
MAX_STEPS = 10_000  # adaptive methods: the default cap on steps per output interval (options={"max_num_steps": n})
# method: (order, model calls per accepted step without rejections)
ADAPTIVE = {"dopri5": (5, 6), "dopri8": (8, 13), "bosh3": (3, 3), "fehlberg2": (2, 3), "adaptive_heun": (2, 2)}


def chooses_own_steps(name: str) -> bool:
    """Whether the registry sampler ``name`` chooses its steps from the model's outputs (``dpm_adaptive``,
    torchdiffeq's adaptive methods): a schedule's interior points, or a pipeline's fixed timesteps, mean nothing
    to it."""
    return name == "dpm_adaptive" or (name.startswith("torchdiffeq.") and name.split(".", 1)[1] in ADAPTIVE)


# The ``options`` each method family reads, from torchdiffeq's solver signatures (tested against torchdiffeq 0.2.x):
# RKAdaptiveStepsizeODESolver (+ ``norm`` of AdaptiveStepsizeODESolver), FixedGridODESolver, AdamsBashforthMoulton.
# torchdiffeq warns and drops any other key; here it is refused before the first model call.
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t",
                    "jump_t", "norm", "dtype")
FIXED_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb")
ADAMS_OPTIONS = {"explicit_adams": ("max_order",), "implicit_adams": ("max_order", "max_iters"),
                 "fixed_adams": ("max_order", "max_iters")}
MAX_ITERS = 100  # implicit Adams: the most corrector iterations (model calls) a step may be given
# the methods whose corrector reads rtol / atol (torchdiffeq's AdamsBashforthMoulton, implicit=True: its
# _compute_error_ratio stops the iterations); odeint hands them its own rtol / atol (1e-7 / 1e-9 by default)
CORRECTOR = ("implicit_adams", "fixed_adams")


def _real(method, key, value, ok, rule):
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise InvalidType(f"torchdiffeq.{method}: options[{key!r}]={value!r} must be a real number {rule}")
    if not ok(float(value)):
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}]={value!r} is out of range; it must be {rule}")
    return float(value)


def _integer(method, key, value, lo, hi, why=""):
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= int(value) <= hi:
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}]={value!r} must be an integer in [{lo}, {hi}]{why}")
    return int(value)


def _not_real(value):
    """A bool or complex element of ``value`` (a tensor, array or sequence), or None. torch.as_tensor(..., float64)
    turns True into σ = 1.0 and drops an imaginary part with only a warning."""
    def bad_dtype(v):  # a tensor, an array or a numpy scalar: its dtype says it
        kind = str(getattr(v, "dtype", ""))
        return kind.endswith("bool") or "complex" in kind

    if hasattr(value, "dtype"):
        return f"elements of dtype {value.dtype}" if bad_dtype(value) else None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None  # not a sequence: the 1-D check refuses it
    for v in value:
        if isinstance(v, bool) or bad_dtype(v) or (isinstance(v, Complex) and not isinstance(v, Real)):
            return f"the element {v!r}"
    return None


def _times(method, key, value, grid):
    bad = _not_real(value)
    if bad is not None:
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}]={value!r} holds {bad}; it must be a 1-D sequence "
                            "of real σ values (a bool or a complex number is not a σ: it would be read as 1.0, or lose "
                            "its imaginary part); give floats")
    try:
        t = torch.as_tensor(value, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.ndim != 1 or not bool(torch.isfinite(t).all()):
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}] must be a 1-D sequence of finite σ values, got "
                            f"{value!r}")
    if grid is None:  # no schedule yet: its range is checked when the run has one
        return t
    # the adapter integrates from the first to the last non-zero σ: a point outside that range (a negative σ, one
    # above σ_max or below the last non-zero σ) is never reached, and torchdiffeq would drop it without a word
    lo, hi = min(grid[0], grid[-1]), max(grid[0], grid[-1])
    outside = [float(v) for v in t if not lo <= float(v) <= hi]
    if outside and lo == hi:  # one non-zero σ: the run is the denoise alone, nothing is integrated
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}] holds σ = {outside[0]!r}, but this schedule "
                            f"integrates nothing (its only non-zero σ is {lo!r}, and its one step is the denoise), "
                            f"so {key} would do nothing; leave {key} out, or give a schedule of more steps")
    if outside:
        raise InvalidOption(f"torchdiffeq.{method}: options[{key!r}] holds σ = {outside[0]!r}, outside the integrated "
                            f"range [{lo!r}, {hi!r}] (from the schedule's first to its last non-zero σ), where the "
                            "solver never steps, so it would do nothing; give σ values within that range, or leave "
                            "the point out")
    return t


def _steps(length: float, step: float) -> float:
    """ceil(length / step): the steps of at most ``step`` that cover ``length``; inf where the quotient overflows
    (a step of 5e-324), which math.ceil cannot take. Shown with :g (1e+300, not its 300 digits)."""
    n = length / step
    return float(math.ceil(n)) if math.isfinite(n) else n


def _keys(method: str) -> tuple[str, ...]:
    """The keys torchdiffeq's ``method`` reads from ``options``."""
    valid = ADAPTIVE_OPTIONS if method in ADAPTIVE else FIXED_OPTIONS + ADAMS_OPTIONS.get(method, ())
    return valid + ("rtol", "atol") if method in CORRECTOR else valid


def check_options(method: str, options, grid: list[float]) -> dict:
    """``options`` for torchdiffeq's ``method``, checked before any model call: a dict of the method's own keys, each
    value in its range. ``grid`` is the schedule's non-zero σ (it bounds the number of steps a fixed grid may take,
    and where step_t / jump_t points may lie); None where no schedule is known yet (a ComfyUI node building its
    SAMPLER): every check but those two."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidType(f"torchdiffeq.{method}: options must be a dict of torchdiffeq solver options, got "
                          f"{type(options).__name__} {options!r}")
    adaptive = method in ADAPTIVE
    valid = _keys(method)
    for key in options:
        if key in ("rtol", "atol") and method not in CORRECTOR:
            where = (f"pass it as the sampler's own argument: samplers.sample('torchdiffeq.{method}', ..., {key}=...)"
                     if adaptive else f"torchdiffeq's {method} steps on a fixed grid: such steps take no tolerance "
                     "(only the implicit Adams corrector does: torchdiffeq.implicit_adams / torchdiffeq.fixed_adams with "
                     f"options={{'{key}': ...}}; or an adaptive method, e.g. torchdiffeq.dopri5, with rtol=/atol=)")
            raise InvalidOption(f"torchdiffeq.{method}: options has no key {key!r}; {where}")
        if key not in valid:
            # worded as a key of ``options=``, not an option of the sampler: the sampler's own options (rtol, atol,
            # options, info) are another list, and naming the other list sends a caller to the wrong place
            named = closest(key, valid)
            if key == "implicit" and method in ADAMS_OPTIONS:
                named = (f"{key!r} (choose the method instead: torchdiffeq.explicit_adams or "
                         "torchdiffeq.implicit_adams)")
            raise InvalidOption(f"torchdiffeq.{method}: options has no key {named}; the keys torchdiffeq.{method}'s "
                                f"options= takes are: {', '.join(valid)}")
    out = dict(options)
    span, intervals = (abs(grid[0] - grid[-1]), max(len(grid) - 1, 1)) if grid is not None else (None, None)
    for key, v in options.items():
        if key == "max_num_steps":
            out[key] = _integer(method, key, v, 1, MAX_STEPS, " (steps per schedule interval; the adapter's cap is "
                                "samplers.interop.torchdiffeq_adapter.MAX_STEPS)")
        elif key == "safety":
            out[key] = _real(method, key, v, lambda a: 0 < a <= 1, "in (0, 1]")
        elif key == "ifactor":
            out[key] = _real(method, key, v, lambda a: 1 <= a < math.inf, "≥ 1 and finite")
        elif key == "dfactor":
            # a rejected step is shortened by max(safety / error^(1/order), dfactor) (torchdiffeq's
            # _optimal_step_size): at dfactor 1 it is never shortened, and the solver retries the same step until
            # its step cap (dopri5: 60,002 model calls, then a StepLimitError)
            out[key] = _real(method, key, v, lambda a: 0 < a < 1, "in (0, 1): a rejected step is shortened to at "
                             "least dfactor times its length, so at 1 or above it is never shortened and the solver "
                             f"retries it until its step cap; pass a value below 1 (torchdiffeq's default is {DFACTOR})")
        elif key == "first_step":
            out[key] = _real(method, key, v, lambda a: 0 < a < math.inf, "> 0 and finite")
        elif key == "min_step":
            out[key] = _real(method, key, v, lambda a: 0 <= a < math.inf, "≥ 0 and finite")
        elif key == "max_step":
            out[key] = _real(method, key, v, lambda a: a > 0, "> 0 (inf for no bound)")
        elif key in ("step_t", "jump_t"):
            out[key] = _times(method, key, v, grid)
        elif key == "norm" or key == "grid_constructor":
            if not callable(v):
                raise InvalidType(f"torchdiffeq.{method}: options[{key!r}] must be callable, got {type(v).__name__}")
        elif key == "dtype":
            if v not in (torch.float32, torch.float64):
                raise InvalidOption(f"torchdiffeq.{method}: options['dtype']={v!r} must be torch.float32 or "
                                    "torch.float64 (the dtype of torchdiffeq's time values)")
        elif key == "step_size":
            step = _real(method, key, v, lambda a: 0 < a < math.inf, "> 0 and finite (a step in σ)")
            if span is not None and _steps(span, step) > MAX_STEPS * intervals:
                raise InvalidOption(f"torchdiffeq.{method}: options['step_size']={v!r} makes {_steps(span, step):g} "
                                    f"steps over σ in [{grid[-1]:g}, {grid[0]:g}], more than the cap of {MAX_STEPS} per "
                                    "schedule interval; use a larger step_size (or leave it out: one step per interval)")
            out[key] = step
        elif key == "interp":
            if v not in ("linear", "cubic"):
                raise InvalidOption(f"torchdiffeq.{method}: options['interp']={v!r} must be 'linear' or 'cubic'")
        elif key == "perturb":
            if not isinstance(v, bool):
                raise InvalidType(f"torchdiffeq.{method}: options['perturb']={v!r} must be True or False")
        elif key == "max_order":
            from torchdiffeq._impl.fixed_adams import _MAX_ORDER, _MIN_ORDER
            out[key] = _integer(method, key, v, _MIN_ORDER, _MAX_ORDER, f" (below {_MIN_ORDER} the method is rk4: "
                                "use torchdiffeq.rk4)")
        elif key == "max_iters":
            out[key] = _integer(method, key, v, 1, MAX_ITERS, " (corrector model calls per step)")
        elif key in ("rtol", "atol"):  # the implicit Adams corrector's tolerance (handed to odeint, not options)
            out[key] = _real(method, key, v, lambda a: 0 <= a < math.inf, "≥ 0 and finite (the corrector stops "
                             "iterating once its change is within atol + rtol·|x|)")
    if "step_size" in out and "grid_constructor" in out:
        raise InvalidOption(f"torchdiffeq.{method}: options 'step_size' and 'grid_constructor' exclude each other; "
                            "give one")
    if "interp" in out and "step_size" not in out and "grid_constructor" not in out:
        # without them the schedule's points are the grid: every output is a solution point, read exactly, and
        # torchdiffeq's cubic interpolation only adds a model call per step (euler, 8 steps: 15 calls for 8)
        raise InvalidOption(f"torchdiffeq.{method}: options['interp']={out['interp']!r} without 'step_size' or "
                            "'grid_constructor' does nothing: the schedule's points are then the solver's grid, so no "
                            "output is interpolated" + (" ('cubic' only adds a model call per step)"
                                                        if out["interp"] == "cubic" else "")
                            + "; give step_size (or grid_constructor) for interp to matter (it then sets the x the "
                            "callback gets at schedule points between grid points; the result is not interpolated), "
                            "or leave interp out")
    if "min_step" in out and "max_step" in out and out["min_step"] > out["max_step"]:
        raise InvalidOption(f"torchdiffeq.{method}: options min_step={out['min_step']:g} > max_step="
                            f"{out['max_step']:g}; min_step must be at most max_step")
    if "max_step" in out:
        # every step is at most max_step long and ends on each schedule point, so a schedule interval of length L
        # takes at least ceil(L / max_step) steps, against max_num_steps per interval (as step_size is checked above)
        cap = out.get("max_num_steps", MAX_STEPS)
        widest = max((abs(a - b) for a, b in zip(grid, grid[1:]) if math.isfinite(a) and math.isfinite(b)),
                     default=0.0)
        need = _steps(widest, out["max_step"]) if widest > 0 else 0
        if need > cap:
            raise InvalidOption(f"torchdiffeq.{method}: options['max_step']={options['max_step']!r} needs at least "
                                f"{need:g} steps over the schedule interval of length {widest:g}, more than the cap of "
                                f"{cap} steps per schedule interval (options['max_num_steps'], at most {MAX_STEPS}); "
                                f"use a max_step of at least {widest / cap * 1.01:.3g} (or leave it out: no bound)")
    if "grid_constructor" in out:
        out["grid_constructor"] = _checked_grid(method, out["grid_constructor"], MAX_STEPS * intervals)
    return out


def check_step_resolution(method: str, options: dict, grid: list[float], dtype: torch.dtype) -> None:
    """An adaptive method's first step, refused before any model call where torchdiffeq could not take it. The
    adapter integrates in σ: torchdiffeq reverses the decreasing schedule, so time runs from t0 = −σ_0 (the first
    non-zero σ) in its time dtype, ``promote(options['dtype'] (default float64), state dtype)``, and asserts
    ``t0 + dt > t0`` before each step. A first step ``clamp(first_step, min_step, max_step)`` at or below the
    spacing of that dtype at σ_0 leaves t0 where it was (σ = 10 in float64: 1e-16; in float32: 1e-7), and torchdiffeq
    stops after its first model call with 'underflow in dt'; so does any max_step there, which bounds every step.
    Later steps start nearer σ = 0, where the spacing is finer. ``options``: :func:`check_options`' result."""
    first, low, high = options.get("first_step"), options.get("min_step", 0.0), options.get("max_step", math.inf)
    if (first is None and not math.isfinite(high)) or len(grid) < 2 or not math.isfinite(grid[0]) or grid[0] <= 0:
        return  # torchdiffeq picks the first step itself (unbounded); one non-zero σ calls no odeint (the run is the
        # final denoise); σ_0 = inf is the exact first step's
    work = torch.promote_types(options.get("dtype", torch.float64), dtype)
    t0 = torch.tensor(-grid[0], dtype=work)
    key = "max_step" if first is None or high < max(first, low) else "first_step"
    dt = high if key == "max_step" else max(first, low)
    if bool(t0 + torch.tensor(dt, dtype=work) > t0):
        return
    spacing = float(torch.nextafter(t0, torch.tensor(math.inf, dtype=work)) - t0)
    name = str(work).replace("torch.", "")
    if key == "first_step":
        what = f"options['first_step']={options['first_step']!r}" + (f" (raised to min_step={low:g})" if low > first
                                                                     else "")
        leave = "leave it out (torchdiffeq then picks the first step)"
    else:
        what = f"options['max_step']={options['max_step']!r} (a bound on every step)"
        leave = "leave it out (no bound)"
    raise InvalidOption(f"torchdiffeq.{method}: {what} is below the resolution of torchdiffeq's time at the start: "
                        f"time is −σ in {name} (options['dtype'] promoted with the state's dtype), and there "
                        f"t0 + {dt:g} == t0 at the schedule's first σ = {grid[0]:g}, so the first step would not move "
                        f"and torchdiffeq would stop with 'underflow in dt' after one model call; pass {key} >= "
                        f"{spacing:.3g} (the spacing of {name} at {grid[0]:g}), or {leave}"
                        + (", or drop options['dtype'] (time in float64)" if work != torch.float64 else ""))


def check_tolerances(method: str, rtol: float, atol: float, dtype: torch.dtype) -> None:
    """An adaptive method's ``rtol`` / ``atol``, refused before any model call where the state's dtype cannot resolve
    them (:func:`samplers.core.validate.check_tolerances`, the rule ``dpm_adaptive`` keeps too): with both below the
    state's unit roundoff the step-size control measures rounding and shrinks its steps towards the step cap (dopri5
    on float32 at 1e-12: 108,849 model calls). Either one at or above it is accepted (rtol=0 with atol=1e-5)."""
    validate.check_tolerances(f"torchdiffeq.{method}", rtol, atol, dtype, "1e-5")


def check_norm(method: str, norm, like: torch.Tensor) -> None:
    """options['norm'], called once before any model call on a probe shaped like the state (torchdiffeq calls it on
    error ratios of that shape and takes ``.abs()`` of the result): it must return a one-element real tensor, finite
    and >= 0."""
    probe = torch.ones_like(like)
    rule = ("options['norm'] must be a function norm(t) of a tensor shaped like the state that returns a one-element "
            "real floating-point tensor, finite and >= 0 (torchdiffeq's default is the RMS norm)")
    try:
        value = norm(probe)
    except Exception as e:
        raise InvalidOption(f"torchdiffeq.{method}: options['norm'] raised {type(e).__name__} on a tensor of ones "
                            f"shaped {tuple(like.shape)} ({e}); {rule}") from e
    ok = (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
          and not value.is_complex())
    if not ok:
        got = (f"a {value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
               else f"{value!r} ({type(value).__name__})")
        fix = "; wrap a number in torch.as_tensor" if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else ""
        raise InvalidOption(f"torchdiffeq.{method}: options['norm'] returned {got} for a tensor of ones shaped "
                            f"{tuple(like.shape)}; {rule}{fix}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise InvalidOption(f"torchdiffeq.{method}: options['norm'] returned {v!r} for a tensor of ones shaped "
                            f"{tuple(like.shape)}; {rule}")


def _checked_grid(method, make, most):
    """A caller's grid_constructor whose grid is checked when torchdiffeq builds it (before its first step)."""
    def grid_constructor(func, y0, t):
        g = make(func, y0, t)
        ok = (isinstance(g, torch.Tensor) and g.ndim == 1 and g.is_floating_point() and 2 <= len(g) <= most + 1
              and bool(torch.isfinite(g).all()) and float(g[0]) == float(t[0]) and float(g[-1]) == float(t[-1])
              and bool(((g[1:] - g[:-1]) * (t[-1] - t[0]) > 0).all()))
        if not ok:
            got = f"shape {tuple(g.shape)}" if isinstance(g, torch.Tensor) else type(g).__name__
            raise InvalidOption(f"torchdiffeq.{method}: options['grid_constructor'] returned {got}; it must return a "
                                f"1-D float tensor of at most {most + 1} finite σ, strictly monotone from t[0] = "
                                f"{float(t[0]):g} to t[-1] = {float(t[-1]):g}")
        return g
    return grid_constructor


def _in_layout(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` in the memory layout of ``like`` (the strides an elementwise op on ``like`` gives, as the other samplers'
    results keep the caller's: channels_last stays channels_last); ``y`` itself where it has them."""
    if y.stride() == like.stride():
        return y
    return torch.empty_like(like).copy_(y)


def _integrate(method, model, x, sigmas, callback, disable, odeint_kw, info):
    import torchdiffeq  # loaded when such a sampler runs, not by ``import samplers``

    # odeint runs on a contiguous state: the adaptive methods' RMS error norm sums the state in memory order, so
    # a channels_last or strided start of the same values chose other steps (fehlberg2 1.2e-5, adaptive_heun 9.3e-6
    # apart from the contiguous run); the result is handed back in the caller's layout
    caller = x
    x = x.contiguous()
    ends_in_zero = sigmas[-1] == 0
    grid = sigmas[:-1] if ends_in_zero else sigmas
    log_grid = [math.log(s) for s in grid]
    neg_log_grid = [-v for v in log_grid]
    # The callback's ``denoised`` at a schedule point is the model call nearest to it in log σ over all the calls
    # (exact on the schedule's own grid, where every step starts with a call at its σ). Calls are binned by the
    # schedule interval they fall in: bin j holds σ in [grid[j], grid[j-1]) (bin 0 σ ≥ grid[0], the last one σ below
    # grid[-1]); each bin keeps its lowest and its highest call, which are the only ones that can be nearest to a
    # schedule point (2 per bin at most are held). Ties go to the later call: a step's own call at its start comes
    # after the previous step's stage there.
    lowest: dict[int, tuple[float, int, torch.Tensor]] = {}
    highest: dict[int, tuple[float, int, torch.Tensor]] = {}
    calls = [0]

    def f(t, y):
        sigma = float(t)  # a host read: torchdiffeq's own loop reads the host too (host_sync=True)
        denoised = model(y, sigma)
        calls[0] += 1
        j = bisect.bisect_left(neg_log_grid, -math.log(sigma)) if sigma > 0 else len(grid)
        if j not in lowest or sigma <= lowest[j][0]:
            lowest[j] = (sigma, calls[0], denoised)
        if j not in highest or sigma >= highest[j][0]:
            highest[j] = (sigma, calls[0], denoised)
        return (y - denoised) / sigma

    def nearest(k):
        """The denoised of the call nearest to grid[k] in log σ: the lowest call at or above it, or the highest below."""
        best = None
        above = next((lowest[j] for j in range(k, -1, -1) if j in lowest), None)
        below = next((highest[j] for j in range(k + 1, len(grid) + 1) if j in highest), None)
        for sigma, n, denoised in (c for c in (above, below) if c is not None):
            dist = (0.0 if sigma == grid[k] else
                    abs(math.log(sigma) - log_grid[k]) if sigma > 0 and math.isfinite(sigma) else math.inf)
            if best is None or dist < best[0] or (dist == best[0] and n > best[1]):
                best = (dist, n, denoised)
        return best[2]

    if len(grid) > 1:
        # on the state's device: torchdiffeq warns and copies a time tensor that is elsewhere (misc._check_inputs)
        t = torch.tensor(grid, dtype=torch.float64, device=x.device)
        if method in ADAPTIVE:  # adaptive: accepted steps end on every schedule point, never beyond the last
            options = odeint_kw["options"]
            # torchdiffeq compares step_t / jump_t in its time dtype, promote(options['dtype'], state dtype), and
            # refuses a time repeated there; points are merged in that dtype, so values that are equal there (2.0
            # and 2.0 + 1e-9 in float32) are one point, as exact repeats are
            work = torch.promote_types(options.get("dtype", torch.float64), x.dtype)
            user_t = options.get("step_t")
            step_t = t.to(work) if user_t is None else torch.unique(torch.cat([t.to(work), user_t.to(t.device, work)]))
            jump_t = options.get("jump_t")
            if jump_t is not None:
                # a jump point is a step end too (torchdiffeq steps exactly to it, then evaluates afresh past it),
                # and torchdiffeq refuses a time in both lists: a schedule point that is also a jump point stays a
                # jump point only
                jump_t = torch.unique(jump_t.to(t.device, work))
                step_t = step_t[~torch.isin(step_t, jump_t)]
                options["jump_t"] = jump_t
            options["step_t"] = step_t
            options.setdefault("max_num_steps", MAX_STEPS)  # a run that cannot finish stops
        try:
            path = torchdiffeq.odeint(f, x, t, method=method, **odeint_kw)
        except AssertionError as err:  # torchdiffeq's way of saying the step size collapsed or the cap was hit
            if "underflow in dt" in str(err):
                raise NonFiniteError(f"torchdiffeq.{method}: the step size fell to 0 (the model returned NaN/Inf, or "
                                     "the ODE is too stiff at these tolerances); check the model's outputs "
                                     "(samplers.debug()) or loosen rtol/atol") from None
            if "max_num_steps" in str(err):
                options = odeint_kw["options"]
                fix = (f"options['max_step']={options['max_step']!r} bounds every step: raise it (or leave it out), "
                       "or loosen rtol/atol" if math.isfinite(options.get("max_step", math.inf)) else
                       "loosen rtol/atol")
                if options.get("dfactor", DFACTOR) > DFACTOR:  # each rejection shortens the step only to dfactor×
                    fix += (f"; options['dfactor']={options['dfactor']!r} shortens a rejected step only to that "
                            f"fraction of its length, so a step far too long takes many tries: lower it (default "
                            f"{DFACTOR}) or leave it out")
                raise StepLimitError(f"torchdiffeq.{method} took {options['max_num_steps']} steps in one schedule "
                                     f"interval (options={{'max_num_steps': ...}}) without finishing; {fix}") from None
            if "non-finite values in state" in str(err):  # min_step keeps dt from collapsing: the state itself is
                raise NonFiniteError(f"torchdiffeq.{method}: the state became NaN/Inf (the model returned NaN/Inf, "
                                     "or the ODE is too stiff for the step size options allow); check the model's "
                                     "outputs (samplers.debug()), or loosen min_step / rtol / atol") from None
            raise
    else:
        path = x[None]
    for i in progress(sigmas, disable):
        if i < len(grid) - 1:
            x = path[i + 1]
            report(callback, x, i, grid[i], grid[i], nearest(i))
        else:  # the last step, to σ = 0
            x = model(path[-1], grid[-1])
            calls[0] += 1
            report(callback, x, i, grid[-1], grid[-1], x)
    if info is not None:
        info["nfe"] = calls[0]
    return _in_layout(x, caller)


def _nonzero(sigmas) -> list[float]:
    grid = [float(s) for s in sigmas]
    return (grid[:-1] if len(grid) > 1 and grid[-1] == 0 else grid) or [0.0]


def _register_fixed(method: str, order: int, nfe: int):
    @register(f"torchdiffeq.{method}", kind="ode", order=order, nfe_per_step=nfe, host_sync=True,
              ref=_REF + f", method '{method}' on the schedule's grid",
              final_step="denoise (x = D(x, σ) from the last non-zero σ)", option_keys={"options": _keys(method)})
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, options=None, info=None):
        merged = {**DEFAULT_OPTIONS.get(method, {}), **check_options(method, options, _nonzero(sigmas))}
        tolerances = {k: merged.pop(k) for k in ("rtol", "atol") if k in merged}  # odeint's own arguments
        return _integrate(method, model, x, sigmas, callback, disable, {"options": merged, **tolerances}, info)

    sampler.__doc__ = (f"torchdiffeq's fixed-grid '{method}' (order {order}) stepping exactly on the given sigmas; "
                       "``options`` go to torchdiffeq.odeint, ``info={}`` receives the NFE.")
    return sampler


def _register_adaptive(method: str, order: int, nfe: int):
    @register(f"torchdiffeq.{method}", kind="ode", order=order, nfe_per_step=nfe, host_sync=True,
              ref=_REF + f", adaptive method '{method}'",
              final_step="denoise (x = D(x, σ) from the last non-zero σ)", option_keys={"options": _keys(method)})
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, rtol=1e-5, atol=1e-5,
                options=None, info=None):
        checked = check_options(method, options, _nonzero(sigmas))
        check_tolerances(method, rtol, atol, x.dtype)  # x: the run's state (float32 for half-precision latents)
        check_step_resolution(method, checked, _nonzero(sigmas), x.dtype)
        if "norm" in checked:
            check_norm(method, checked["norm"], x)
        return _integrate(method, model, x, sigmas, callback, disable,
                          {"rtol": rtol, "atol": atol, "options": checked}, info)

    sampler.__doc__ = (f"torchdiffeq's adaptive '{method}' (order {order}) from the first to the last non-zero σ "
                       "with ``rtol``/``atol``; the schedule's points are output points. ``info={}`` gets the NFE.")
    return sampler


# Every method of torchdiffeq's SOLVERS table but 'scipy_solver' (it hands the state to scipy on the host, a
# float64 numpy round trip per call); tests/test_torchdiffeq_adapter.py checks this list against torchdiffeq's.
for _method, (_order, _nfe) in ADAPTIVE.items():
    _register_adaptive(_method, _order, _nfe)
for _method, (_order, _nfe) in FIXED.items():
    _register_fixed(_method, _order, _nfe)

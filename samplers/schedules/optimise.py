"""Optimise a σ schedule for one sampler, model and NFE budget (in the spirit of Align Your Steps / GITS).

    import samplers.schedules.optimise as so
    result = so.optimise_schedule(denoiser, "dpmpp_2m", nfe=8, calibration=noise, sigma_min=0.002, sigma_max=80)
    x0 = samplers.sample("dpmpp_2m", denoiser, noise * 80, result.tensor())
    result.save("dpmpp_2m_8.json"); result.register("my_schedule")       # then get_sigmas("my_schedule", n)

The error of a schedule is the RMS distance, on a calibration batch of noise, between the sampler's result
and the reference solution of the same PF-ODE from the same noise (torchdiffeq's dopri5 at tight tolerance).
The interior log σ points are parameterised as a softmax of gap sizes between log σ_max and log σ_min
(monotone by construction) and optimised with Nelder-Mead from the Karras schedule. The optimiser runs on the
host; the schedule it returns is plain data (JSON) that any sampler call uses like a named schedule.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import schedules
from ..core.budget import count_nfe, steps_for_nfe
from ..core.conversion import state_dtype
from ..core.registry import SAMPLERS, info, sample
from ..core.files import atomic_write_bytes
from .base import TABLE_SCHEDULES, check_steps
from .presets import loglinear_interp
from ..core.errors import InvalidInput, InvalidType, NonFiniteError, SamplersError
from ..core.run import LATENT_DTYPES
from ..core.validate import distinct, integer, real

FIXED_BASELINES = ("karras", "exponential", "polyexponential", "kl_optimal", "vp")
FORMAT = "samplers.optimised_schedule/1"
# What ``meta`` may hold (all written by optimise_schedule): the step count, the objective's evaluations, the range
# optimised on, the calibration batch size and, for one or two steps, why nothing was optimised (``fixed``).
META_KEYS = ("steps", "evaluations", "sigma_min", "sigma_max", "calibration_batch", "fixed")
# steps below this have no interior point to place: σ_max, σ_min (two steps) and 0 are all fixed
FREE_STEPS = 3
# the objective's value for a probe whose run is not finite: worse than any finite error Nelder-Mead compares it with
PENALTY = 1e6
RANGE_RTOL = 1e-6  # an asked range end within this of the schedule's own is the same range


def check_sampler(sampler: str, *, exact: bool = False):
    """The spec of a sampler whose schedule can be optimised: deterministic, stepping the schedule it is given, and
    named by the registry (an A1111 / ComfyUI label that implies a schedule or options would have them dropped).
    ``exact``: the registry's own name (what a schedule file stores), not an alias."""
    from ..core import names

    if not isinstance(sampler, str):
        raise InvalidType(f"sampler must be a registry sampler name, got {sampler!r} ({type(sampler).__name__})")
    found = names.resolve(sampler)
    if found.schedule is not None or found.sigmas is not None:
        raise InvalidInput(f"{sampler!r} is {found.sampler} with the {found.schedule or 'fixed'!r} schedule, but the "
                           "optimiser chooses the schedule, so that one would be dropped; pass the registry sampler "
                           f"name {found.sampler!r}")
    if found.options:
        raise InvalidInput(f"{sampler!r} is {found.sampler} with {found.options}, which a schedule file does not "
                           f"record; pass the registry sampler name {found.sampler!r} (options in sampler_options=)")
    spec = info(found.sampler)
    if exact and SAMPLERS.exact(sampler) != sampler:
        raise InvalidInput(f"sampler must be the registry name of a sampler, got {sampler!r}; its registry name is "
                           f"{spec.name!r}")
    if spec.stochastic:
        raise InvalidInput(f"{sampler!r} is stochastic; optimise schedules for deterministic (ode) samplers (its "
                           "error to the ODE's solution is its noise's, not its schedule's)")
    from ..interop.torchdiffeq_adapter import chooses_own_steps

    if chooses_own_steps(spec.name):
        raise InvalidInput(f"{sampler!r} is adaptive: it chooses its own steps from the model's outputs, so a "
                           "schedule's interior points mean nothing to it; optimise a schedule for a fixed-step "
                           "sampler (euler, heun, dpmpp_2m, ...)")
    return spec


def _real(name: str, value, **rule) -> float:
    """:func:`samplers.core.validate.real`, with an integer too large for a float refused the same way."""
    try:
        return real(name, value, **rule)
    except OverflowError:
        raise InvalidInput(f"{name} must be a finite number, got an integer of {len(hex(value)) - 2} hex digits "
                           "(beyond any float)") from None


# options that say how a run draws noise: the optimiser's runs draw none (see check_sampler_options)
NOISE_OPTIONS = ("seed", "noise_sampler")


def check_sampler_options(spec, options) -> dict:
    """The ``sampler_options`` of an optimised schedule, checked before any model call: the sampler's own options
    (:func:`samplers.core.validate.check_options`), none that makes the run draw noise (churn, η > 0: the objective
    must give the same error for the same schedule, and a stochastic run's error to the ODE is its noise's) or
    that sets noise (``seed``, ``noise_sampler``: nothing is drawn), no ``info`` (each run writes into it), and each
    value JSON data that reads back equal, since a schedule file records them (every option changes the result)."""
    from ..core.run import draws_noise
    from ..core.validate import check_options

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidType(f"sampler_options must be a dict of the sampler's options by name, got {options!r}")
    check_options(spec, options)
    for key in options:
        if key in NOISE_OPTIONS:
            raise InvalidInput(f"sampler_options[{key!r}] sets the noise of a run, but the optimiser runs "
                               f"{spec.name} deterministically (no noise drawn), so {key} would do nothing; leave "
                               f"{key} out")
        if key == "info":
            raise InvalidInput("sampler_options['info'] is filled by each run (its model calls), not an option that "
                               "sets the run; leave it out (the schedule records nfe and meta['evaluations'])")
    if draws_noise(spec, options):
        noisy = {k: options[k] for k in ("s_churn", "eta") if k in options}
        raise InvalidInput(f"sampler_options={noisy or options} make {spec.name} draw noise at every run, so the "
                           "same schedule would score differently each time and its error to the ODE's solution is "
                           "the noise's; optimise the deterministic run: leave "
                           f"{' / '.join(noisy) or 'them'} out (or 0)")
    for key, value in options.items():
        try:
            same = json.loads(json.dumps(value)) == value  # ±inf reads back (s_tmax=inf, k-diffusion's default); NaN not
        except (TypeError, ValueError):
            same = False
        if not same:
            raise InvalidInput(f"sampler_options[{key!r}] = {value!r} is not JSON data (numbers, strings, booleans, "
                               "lists and dicts of them) that a schedule file can record, and a schedule is only "
                               "what it was optimised with; pass it as such (a list, not a tuple or tensor), or "
                               "leave it out")
    return dict(options)


@dataclass
class OptimisedSchedule:
    """A schedule found by :func:`optimise_schedule`: ``sigmas`` (n + 1 values, ending in 0) plus how it was made."""

    sigmas: list[float]
    sampler: str
    nfe: int
    error: float  # calibration RMSE of the optimised schedule
    baselines: dict[str, float] = field(default_factory=dict)  # calibration RMSE of each fixed schedule
    meta: dict = field(default_factory=dict)
    # the sampler's options every run was made with (JSON data; {} in a file written before they were recorded)
    sampler_options: dict = field(default_factory=dict)

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=torch.float64)

    # usable wherever a schedule is: samplers.sample(name, model, x, result), torch.as_tensor(result), result[-2]
    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.sigmas, dtype=dtype or np.float64)

    def __len__(self) -> int:
        return len(self.sigmas)

    def __iter__(self):
        return iter(self.sigmas)

    def __getitem__(self, i):
        return self.tensor()[i]

    def __post_init__(self):
        self._checked()

    @property
    def sigma_range(self) -> tuple[float | None, float]:
        """(σ_min, σ_max) it was optimised on: its lowest and top levels (one step: σ_min from ``meta``, if there)."""
        levels = self.sigmas[:-1]
        low = levels[-1] if len(levels) >= 2 else self.meta.get("sigma_min")
        return (None if low is None else float(low)), float(levels[0])

    def schedule(self, n: int, sigma_min=None, sigma_max=None) -> torch.Tensor:
        """The schedule at ``n`` steps: the optimised levels, log-linearly resampled when n differs (as AYS); one
        step runs from the top level to 0. A range (``sigma_min`` / ``sigma_max``, or the ``native=`` of
        ``get_sigmas``) must be the one it was optimised on: its levels belong to that range."""
        n = check_steps(n, None, None, need_range=False)
        own_min, own_max = self.sigma_range
        asked = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        for end, own in (("sigma_min", own_min), ("sigma_max", own_max)):
            value = asked[end]
            if value is None or own is None:
                continue
            v = _real(end, value, allow_inf=True)
            if not math.isclose(v, own, rel_tol=RANGE_RTOL):
                mine = f"σ {own_max:g} → {own_min:g}" if own_min is not None else f"σ_max {own_max:g}"
                theirs = (f"σ {asked['sigma_max'] if asked['sigma_max'] is not None else own_max:g} → "
                          f"{asked['sigma_min'] if asked['sigma_min'] is not None else own_min or 0:g}")
                raise InvalidInput(f"this schedule was optimised for {self.sampler} on {mine}, but {theirs} was asked "
                                   f"({end}={value!r}); its levels hold only for its own range: use it on the model it "
                                   "was optimised for (leave sigma_min / sigma_max out, or a native= with that "
                                   "range), or optimise a schedule for this range")
        levels = self.sigmas[:-1]
        if n == len(levels):
            return self.tensor()
        if len(levels) == 1 and n > 1:
            raise InvalidInput(f"this schedule was optimised for 1 step (one level, {levels[0]:g}); it holds no range "
                               f"to resample to {n} steps: optimise one for {n} steps, or use it at n = 1")
        top = torch.tensor(levels[:1], dtype=torch.float64) if n == 1 else loglinear_interp(levels, n)
        return torch.cat([top, torch.zeros(1, dtype=torch.float64)])

    def register(self, name: str, replace: bool = False) -> None:
        """Make it a named schedule: ``samplers.get_sigmas(name, n)``; a taken name is an error unless
        ``replace=True``."""
        self._checked()
        schedules.register(name, replace=replace)(self.schedule)

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a temporary file in the same folder, then a rename); checked as :meth:`load`
        checks it, so what is saved loads."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidType(f"path must be a str or a Path, got {type(path).__name__}")
        self._checked()
        # Infinity only where a sampler option is infinite (every other number is checked finite above)
        text = json.dumps({"format": FORMAT, **asdict(self)}, indent=2)
        return atomic_write_bytes(path, (text + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> "OptimisedSchedule":
        """Read a file written by :meth:`save`; its tag, fields and values are checked before use (as a schedule
        built directly is), naming the file on any error."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidType(f"path must be a str or a Path, got {type(path).__name__}")
        from ..core.files import read_json

        data = read_json(path, "a readable schedule file", "pass the path of a JSON file written by "
                         "OptimisedSchedule.save")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidInput(f"{path} is not a schedule written by OptimisedSchedule.save (no format tag "
                               f"{FORMAT!r})")
        data = dict(data)
        data.pop("format")
        fields = {"sigmas", "sampler", "nfe", "error", "baselines", "meta", "sampler_options"}
        missing, extra = fields - {"baselines", "meta", "sampler_options"} - set(data), set(data) - fields
        if missing or extra:
            raise InvalidInput(f"{path}: a schedule file holds the fields {sorted(fields)}; "
                               + (f"missing {sorted(missing)}" if missing else f"unknown {sorted(extra)}"))
        try:
            return cls(**data)
        except (SamplersError, OverflowError) as e:
            raise InvalidInput(f"{path}: {e}") from None

    def _checked(self) -> "OptimisedSchedule":
        """The rules a schedule file meets (:meth:`load`), for one built directly too."""
        s = self.sigmas
        if not isinstance(s, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in s):
            raise InvalidInput(f"sigmas must be a list of numbers, got {s!r}")
        try:
            values = [float(v) for v in s]
        except OverflowError:
            raise InvalidInput("sigmas must be finite, strictly decreasing and end in 0, got an integer beyond any "
                               "float") from None
        if (len(s) < 2 or s[-1] != 0 or any(not b < a for a, b in zip(values, values[1:]))
                or not all(map(math.isfinite, values))):
            raise InvalidInput(f"sigmas must be finite, strictly decreasing and end in 0, got {s}")
        steps = len(s) - 1
        try:
            spec = check_sampler(self.sampler, exact=True)
        except SamplersError as e:
            raise InvalidInput(f"sampler: {e}") from None
        check_sampler_options(spec, self.sampler_options)
        integer("nfe", self.nfe, lo=steps)  # the budget: at least one model call per step
        _real("error", self.error, lo=0)
        if not isinstance(self.baselines, dict) or not all(isinstance(k, str) for k in self.baselines):
            raise InvalidInput(f"baselines must map schedule names to errors, got {self.baselines!r}")
        for name, value in self.baselines.items():
            if value is not None:  # None: that schedule's run was not finite
                _real(f"baselines[{name!r}]", value, lo=0)
        self._check_meta(values)
        self._check_budget(values)
        return self

    def _check_meta(self, values: list[float]) -> None:
        meta = self.meta
        if not isinstance(meta, dict):
            raise InvalidInput(f"meta must be a dict, got {meta!r}")
        unknown = [k for k in meta if k not in META_KEYS]
        if unknown:
            raise InvalidInput(f"meta holds {', '.join(map(repr, unknown))}, which is not one of {list(META_KEYS)}")
        steps = len(values) - 1
        if "steps" in meta and integer("meta['steps']", meta["steps"], lo=1) != steps:
            raise InvalidInput(f"meta['steps'] is {meta['steps']}, but sigmas hold {steps} steps ({values})")
        for key in ("evaluations", "calibration_batch"):
            if key in meta:
                integer(f"meta[{key!r}]", meta[key], lo=1)
        if "fixed" in meta and (not isinstance(meta["fixed"], str) or steps >= FREE_STEPS):
            raise InvalidInput(f"meta['fixed'] is {meta['fixed']!r}, but it says (as a string) why a schedule of one or "
                               f"two steps was not optimised, and sigmas hold {steps} steps")
        top = values[0]
        low = values[-2] if steps >= 2 else None
        if "sigma_max" in meta and not math.isclose(_real("meta['sigma_max']", meta["sigma_max"], lo=0, lo_open=True),
                                                    top, rel_tol=RANGE_RTOL):
            raise InvalidInput(f"meta['sigma_max'] is {meta['sigma_max']}, but sigmas start at {top}")
        if "sigma_min" in meta:
            given = _real("meta['sigma_min']", meta["sigma_min"], lo=0, lo_open=True, hi=top, hi_open=True)
            if low is not None and not math.isclose(given, low, rel_tol=RANGE_RTOL):
                raise InvalidInput(f"meta['sigma_min'] is {meta['sigma_min']}, but the lowest level of sigmas is {low}")

    def _check_budget(self, values: list[float]) -> None:
        """nfe is the budget the step count was the most for (as optimise_schedule chose it: counted on Karras
        schedules, :func:`samplers.core.budget.steps_for_nfe`, with ``sampler_options``): the sampler's calls on
        these steps fit it, and one step more would not."""
        steps = len(values) - 1
        low, top = self.sigma_range
        try:
            longer = schedules.get_sigmas("karras", steps + 1, sigma_min=low or top / 2, sigma_max=top)
        except InvalidInput:  # a range too narrow for a float grid: a fixed-step sampler's count is the same on any
            longer = schedules.get_sigmas("karras", steps + 1, sigma_min=0.002, sigma_max=80.0)
        calls = count_nfe(self.sampler, self.tensor(), **self.sampler_options)
        more = count_nfe(self.sampler, longer, **self.sampler_options)
        run = f"{self.sampler} with {self.sampler_options}" if self.sampler_options else self.sampler
        if calls > self.nfe:
            raise InvalidInput(f"nfe is {self.nfe}, but {run} makes {calls} model calls on these {steps} "
                               "steps: the budget must cover them")
        if more <= self.nfe:
            raise InvalidInput(f"nfe is {self.nfe}, but {run} would fit {steps + 1} steps in it ({more} "
                               f"calls), and the optimiser takes the most steps a budget fits; nfe is at most "
                               f"{more - 1} for {steps} steps")


def reference_solution(denoiser, x: torch.Tensor, sigma_max: float, sigma_min: float, rtol: float = 1e-7) -> torch.Tensor:
    """The target of a schedule from σ_max to σ_min: the exact PF-ODE state at σ_min
    (:func:`samplers.problems.pf_ode_solution`, which refuses a model returning NaN / Inf and caps its work), then the
    final denoise that every schedule ends with, checked finite."""
    from ..problems import pf_ode_solution

    x_min = pf_ode_solution(denoiser, x, sigma_max, sigma_min, rtol=rtol, atol=rtol)
    out = denoiser(x_min, x_min.new_full((x_min.shape[0],), sigma_min))
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError(f"the model returned NaN/Inf at σ = {sigma_min:g} (sigma_min, the final denoise of the "
                             "reference), so there is no reference to score schedules against: check the model at that "
                             "σ, or optimise on a range whose sigma_min it is finite at")
    return out


def _sigmas_from(theta: np.ndarray, log_max: float, log_min: float) -> torch.Tensor:
    w = np.exp(theta - theta.max())
    gaps = w / w.sum() * (log_max - log_min)
    logs = log_max - np.concatenate([[0.0], np.cumsum(gaps)])
    logs[-1] = log_min
    return torch.cat([torch.as_tensor(np.exp(logs), dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


def schedule_error(denoiser, sampler: str, sigmas: torch.Tensor, x: torch.Tensor, reference: torch.Tensor,
                   **options) -> float:
    """The RMS distance between ``sampler``'s run on ``sigmas`` from ``x`` and ``reference``; inf where the run is not
    finite (its :class:`NonFiniteError`): such a schedule is the worst, not the end of the optimisation."""
    try:
        out = sample(sampler, denoiser, x, sigmas, disable=True, **options)
    except NonFiniteError:
        return math.inf
    return float((out.double() - reference.double()).pow(2).mean().sqrt())


def _check_calibration(calibration) -> torch.Tensor:
    if not isinstance(calibration, torch.Tensor):
        raise InvalidType(f"calibration must be a tensor of unit noise [B, ...], got {type(calibration).__name__}")
    if not calibration.is_floating_point():
        raise InvalidType(f"calibration must be floating-point unit noise, got dtype {calibration.dtype}; pass "
                          "torch.randn(...) (or .float() of what you have)")
    if calibration.dtype not in LATENT_DTYPES:  # float8: no arithmetic of its own, as a sampler's latents refuse it
        raise InvalidType(f"calibration is a {calibration.dtype} tensor; it must be float16, bfloat16, float32 or "
                          "float64 unit noise (the latents every sampler takes): pass calibration.float()")
    if calibration.ndim < 2 or calibration.numel() == 0:
        raise InvalidInput(f"calibration must be a non-empty batch of unit noise [B, ...], got shape "
                           f"{tuple(calibration.shape)}")
    if not bool(torch.isfinite(calibration).all()):
        raise InvalidInput("calibration holds NaN or Inf; pass finite unit noise")
    return calibration


def _check_baselines(baselines, steps: int, sigma_min: float, sigma_max: float) -> dict[str, torch.Tensor]:
    """Each fixed schedule to compare with, built at ``steps`` on the range (a name that does not resolve, or takes
    no range, fails here, before any model call)."""
    from ..core.names import resolve_schedule

    if isinstance(baselines, (str, bytes)) or not isinstance(baselines, (list, tuple)):
        raise InvalidType(f"baselines must be a list or tuple of schedule names, got {baselines!r}"
                          + (f"; for one schedule pass baselines=({baselines!r},)" if isinstance(baselines, str) else ""))
    names = distinct("baselines", baselines, "it would be run and reported once")
    out = {}
    for name in names:
        if not isinstance(name, str):
            raise InvalidType(f"baselines must be schedule names, got {name!r} ({type(name).__name__})")
        canonical, _ = resolve_schedule(name)
        if canonical in TABLE_SCHEDULES:
            raise InvalidInput(f"baseline {name!r} spaces a model's training timesteps, which a denoiser alone does "
                               "not have; compare with σ schedules (e.g. karras, exponential, kl_optimal), or leave it "
                               "out")
        out[name] = schedules.get_sigmas(name, steps, sigma_min=sigma_min, sigma_max=sigma_max)
    return out


def _sigma_range(sigma_min, sigma_max) -> tuple[float, float]:
    sigma_min = _real("sigma_min", sigma_min, lo=0, lo_open=True)
    sigma_max = _real("sigma_max", sigma_max, allow_inf=True)
    if not (0 < sigma_min < sigma_max < math.inf):
        raise InvalidInput(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}"
                           " (a flow model's σ_max = inf: optimise from a finite σ)")
    return sigma_min, sigma_max


def _check_range_on_model(denoiser, x: torch.Tensor, sigma_min: float, sigma_max: float) -> None:
    """The registry run's checks before its loop, on the range the reference solve and every run evaluate the model
    across (no model call): a denoiser on a timestep table (through its wrappers) refuses a range that leaves it
    (:func:`samplers.core.conversion.prepare_times`). σ_max is finite (:func:`_sigma_range`), so the σ = inf rule has
    nothing to refuse."""
    from ..core.conversion import prepare_times

    try:
        prepare_times(denoiser, [sigma_max, sigma_min], x.shape[0], x.dtype, x.device)
    except InvalidInput as e:
        raise InvalidInput(f"sigma_max={sigma_max:g} → sigma_min={sigma_min:g}: the reference solve and every run "
                           f"evaluate the model across this range, but {e} (for the optimiser: pass sigma_min and "
                           "sigma_max within the model's table)") from None


def optimise_schedule(denoiser, sampler: str, nfe: int, calibration: torch.Tensor, sigma_min: float,
                      sigma_max: float, *, maxiter: int | None = None, sampler_options: dict | None = None,
                      baselines: tuple[str, ...] = FIXED_BASELINES) -> OptimisedSchedule:
    """Find the σ schedule (σ_max … σ_min, 0) minimising ``sampler``'s error at ``nfe`` model calls.

    Every argument is checked before the first model call.

    Args:
        denoiser: the canonical denoiser D(x, σ) (e.g. from ``samplers.to_denoiser``).
        sampler: registry name; stochastic and adaptive samplers are rejected (their error to the ODE is not a
            schedule's), and so are labels that imply a schedule ("DPM++ 2M Karras": pass "dpmpp_2m").
        nfe: model-call budget; the step count is the most whose run fits it (counted on a Karras schedule,
            :func:`samplers.core.budget.steps_for_nfe`), so the calls may fall short of it (heun, 6: 3 steps, 5).
        calibration: unit noise [B, ...], floating point and finite (the starting latents are
            ``calibration · σ_max``; float16 / bfloat16 noise is run, and its reference solved, in float32, the
            state every sampler keeps for half-precision latents).
        sigma_min, sigma_max: the range; σ_max must be finite.
        maxiter: Nelder-Mead iterations, an integer >= 1 (default None: 150 × the number of free points).
        sampler_options: passed to every sampler call and recorded in the result (``sampler_options``; its file
            holds them and its budget is counted with them): the sampler's own options as JSON data, none that
            makes the run draw noise (``s_churn`` > 0, ``eta`` > 0) and no ``seed`` / ``noise_sampler`` / ``info``.
        baselines: the σ schedules to compare with (names; not a training-timestep spacing, which needs a model's
            table).

    One or two steps have nothing to place: the schedule is [σ_max, 0] (σ_min sets only the reference it is scored
    against) or [σ_max, σ_min, 0], scored once and returned (``meta['fixed']`` says why). A baseline whose run is
    not finite is recorded as None; a probe's, scored worse than any finite one. A model returning NaN / Inf in the
    reference solve, or on every schedule tried, raises :class:`NonFiniteError`.
    """
    spec = check_sampler(sampler)
    nfe = integer("nfe", nfe, lo=1)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    calibration = _check_calibration(calibration)
    if maxiter is not None:
        maxiter = integer("maxiter", maxiter, lo=1)
    if sampler_options is not None and not isinstance(sampler_options, dict):
        raise InvalidType(f"sampler_options must be a dict of the sampler's options, got {sampler_options!r}")
    options = check_sampler_options(spec, dict(sampler_options or {}))
    fit = steps_for_nfe(spec.name, nfe, lambda n: schedules.get_sigmas("karras", n, sigma_min=sigma_min,
                                                                        sigma_max=sigma_max), **options)
    if fit is None:
        raise InvalidInput(f"an NFE budget of {nfe} is less than one step of {sampler!r}")
    steps = fit[0]
    fixed = _check_baselines(baselines, steps, sigma_min, sigma_max)
    # the result as a file holds it, checked now on the Karras start (the budget counted with the options, the
    # options recordable): what it would refuse at the end is refused before the first model call
    OptimisedSchedule(schedules.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max).tolist(),
                      spec.name, nfe, 0.0, {}, {"steps": steps, "sigma_min": sigma_min, "sigma_max": sigma_max},
                      options)
    # half-precision noise runs in the float32 state every sampler keeps for fp16 / bf16 latents (samplers.core
    # .conversion.state_dtype): the reference solve (dopri5 at 1e-7) cannot resolve its steps in float16
    x = calibration.to(state_dtype(calibration.dtype)) * sigma_max
    _check_range_on_model(denoiser, x, sigma_min, sigma_max)
    reference = reference_solution(denoiser, x, sigma_max, sigma_min)
    base = {}
    for name, sig in fixed.items():
        err = schedule_error(denoiser, spec.name, sig, x, reference, **options)
        base[name] = err if math.isfinite(err) else None  # None: that schedule's run was not finite
    def meta(evaluations: int, **more) -> dict:
        return {"steps": steps, "evaluations": evaluations, "sigma_min": sigma_min, "sigma_max": sigma_max,
                "calibration_batch": int(calibration.shape[0]), **more}

    def not_finite(what: str) -> NonFiniteError:
        return NonFiniteError(f"{spec.name}'s run from the calibration batch produced NaN/Inf on {what}, so there is "
                              "no finite error to optimise: check the model across the range (run "
                              f"samplers.sample({spec.name!r}, ...) inside `with samplers.debug():` to stop at the "
                              "first non-finite model call), or optimise on a range where the runs are finite")

    if steps < FREE_STEPS:  # nothing to place: σ_max (σ_min) and 0 are fixed, so the one schedule is scored once
        sig = schedules.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max)
        err = schedule_error(denoiser, spec.name, sig, x, reference, **options)
        if not math.isfinite(err):
            raise not_finite(f"its only schedule {sig.tolist()}")
        why = ("1 step: its schedule is [σ_max, 0], with no point to place" if steps == 1 else
               "2 steps: its schedule is [σ_max, σ_min, 0], all fixed, with no interior point to place")
        return OptimisedSchedule(sig.tolist(), spec.name, nfe, err, base, meta(1, fixed=why), options)
    log_max, log_min = math.log(sigma_max), math.log(sigma_min)
    karras = schedules.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max)[:-1].log().numpy()
    theta0 = np.log(-np.diff(karras))
    finite = 0  # probes whose run was finite

    def objective(theta):
        nonlocal finite
        err = schedule_error(denoiser, spec.name, _sigmas_from(theta, log_max, log_min), x, reference, **options)
        if not math.isfinite(err):
            return PENALTY
        finite += 1
        return err

    from scipy import optimize

    res = optimize.minimize(objective, theta0, method="Nelder-Mead",
                            options={"maxiter": maxiter or 150 * len(theta0), "xatol": 1e-4, "fatol": 1e-10})
    if not finite:
        raise not_finite(f"every one of the {int(res.nfev)} schedules tried (from Karras)")
    best = _sigmas_from(res.x, log_max, log_min)
    return OptimisedSchedule(best.tolist(), spec.name, nfe, float(res.fun), base, meta(int(res.nfev)), options)


def main(argv=None) -> int:
    """``python -m samplers.schedules.optimise --sampler dpmpp_2m --nfe 6``: optimise on the analytic Gaussian mixture and
    print held-out errors of the result beside every fixed schedule. Every argument is checked before any work."""
    import argparse
    import time

    from ..core.argtypes import int_at_least, out_folder, real as real_arg
    from ..problems import GaussianMixture

    p = argparse.ArgumentParser(prog="python -m samplers.schedules.optimise", description=main.__doc__,
                                allow_abbrev=False)
    p.add_argument("--sampler", nargs="+", default=["euler", "dpmpp_2m", "heun"],
                   help="deterministic, fixed-step registry samplers, each once")
    p.add_argument("--nfe", type=int_at_least(1), default=6)
    p.add_argument("--calibration", type=int_at_least(1), default=64, help="calibration batch")
    p.add_argument("--held-out", type=int_at_least(1), default=256, help="held-out batch")
    p.add_argument("--sigma-min", type=real_arg(positive=True), default=0.002)
    p.add_argument("--sigma-max", type=real_arg(positive=True), default=80.0)
    p.add_argument("--out", type=out_folder, default=None, help="folder for <sampler>_<nfe>.json (created if missing)")
    args = p.parse_args(argv)
    if not args.sigma_min < args.sigma_max:
        p.error(f"--sigma-min {args.sigma_min:g} must be below --sigma-max {args.sigma_max:g}")
    canonical = []
    for sampler in args.sampler:
        try:
            spec = check_sampler(sampler)
            canonical.append(spec.name)
            fits = steps_for_nfe(spec.name, args.nfe, lambda n: schedules.get_sigmas(
                "karras", n, sigma_min=args.sigma_min, sigma_max=args.sigma_max))
            if fits is not None:  # the fixed schedules it is compared with, on this range (vp has its own bounds)
                _check_baselines(FIXED_BASELINES, fits[0], args.sigma_min, args.sigma_max)
        except SamplersError as e:
            p.error(f"--sampler {sampler}: {e}")
        if fits is None:
            p.error(f"--nfe {args.nfe} is less than one step of {sampler!r}")
    try:  # an alias is the sampler it names: sample_euler is euler
        distinct("--sampler", canonical, "it would be optimised twice")
    except SamplersError as e:
        p.error(str(e))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    gm = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
    held = gm.noise(args.held_out, seed=1) * args.sigma_max
    ref = reference_solution(gm.denoiser, held, args.sigma_max, args.sigma_min)
    print(f"Gaussian mixture (32-dim), σ {args.sigma_max:g} → {args.sigma_min:g} → 0, NFE {args.nfe}, RMSE to the "
          f"dopri5 endpoint on {args.held_out} held-out starts (calibration: {args.calibration} others)")
    for sampler in args.sampler:
        t0 = time.perf_counter()
        r = optimise_schedule(gm.denoiser, sampler, args.nfe, gm.noise(args.calibration, seed=0), args.sigma_min,
                              args.sigma_max)
        fixed = {n: schedule_error(gm.denoiser, sampler, schedules.get_sigmas(n, r.meta["steps"], sigma_min=args.sigma_min,
                                                                            sigma_max=args.sigma_max), held, ref)
                 for n in r.baselines}
        best = min(fixed, key=fixed.get)
        mine = schedule_error(gm.denoiser, sampler, r.tensor(), held, ref)
        print(f"{sampler:<12} optimised {mine:.4f}   best fixed {best} {fixed[best]:.4f}   ratio {mine / fixed[best]:.2f}   "
              f"({r.meta['evaluations']} evaluations, {time.perf_counter() - t0:.0f} s)")
        if args.out:
            r.save(args.out / f"{sampler}_{args.nfe}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

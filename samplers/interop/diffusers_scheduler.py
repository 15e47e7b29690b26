"""Any registry sampler as a diffusers scheduler: the one-line swap in an existing pipeline.

    from samplers.interop.diffusers_scheduler import SamplerScheduler
    pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config)                  # the same image
    pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config, sampler="heun")  # another sampler

Fidelity. Without ``sampler``, the shim runs the algorithm of the scheduler class the config names
(``_class_name``, refined from the config: :mod:`samplers.interop.diffusers_sources`), on that class's own
timesteps, sigmas and final sigma, from its initial noise, converting the model output as it does and drawing
noise from the pipeline's generator as it does: the pipeline makes the image it made with that scheduler.
Options no registry sampler reproduces are refused by name. ``exact=True`` evaluates the model at the
fractional timestep of every sigma (where the class rounds) and steps to σ = 0 (where the class stops at
σ_min): a more exact run, and a different image.

How any sampler fits a pipeline's loop. A diffusers pipeline owns the loop: it evaluates the model once per
entry of ``scheduler.timesteps`` and hands each output to ``scheduler.step``. A registry sampler owns its loop
too and calls ``model(x, sigma)`` as often as its method needs. The scheduler reconciles the two by
*model-call interception with replay*:

1. ``set_timesteps`` builds the sampling schedule (σ in the canonical VE space) and runs the sampler once on a
   recording dummy model. The sigmas it asks for, in order, are the evaluation points; their model times are
   ``timesteps`` (a sampler's evaluation sigmas are Python floats computed from the schedule, never from
   tensor values, so this plan is exact).
2. ``step(model_output, t, sample)`` converts the output to the denoised x0, appends it to this run's list, and
   re-runs the sampler from the first latent with a model that answers from the list. The sampler stops (an
   exception unwinds it) at its next model call; the latent it was about to evaluate, in the pipeline's
   coordinates, is ``prev_sample``. After the last output the sampler runs to the end. A latent the pipeline
   changed between steps (the inpainting blend, a step-end callback; a new tensor, or ``prev_sample`` changed in
   place, told by its version counter) replaces the sampler's own at that call.

So every sampler runs its own code, unchanged: multistep history, Heun's corrector, ancestral noise (drawn
once per run and replayed), the exact step from σ = inf. No thread, no state outside the instance;
``set_timesteps`` starts a fresh run. The replay costs O(n²) elementwise sampler arithmetic over n model
calls (the model itself is called n times, by the pipeline), and keeps the n denoised latents of the run.

Coordinates. The pipeline's latents are where the source class keeps them: the model's own x_t (DDIM, DPM-Solver,
UniPC, flow matching, ...; ``scale_model_input`` is the identity) or the VE latent x = x_t/α (Euler, Heun, LMS,
KDPM2, EDM, ...; ``scale_model_input`` divides by √(σ² + 1), or applies EDM's c_in). Without a source class
(a ``SamplerScheduler`` built from betas) they are the model's own.
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import functools
import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

try:
    from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised only without the optional extra
    from ..core.errors import MissingDependency

    raise MissingDependency("samplers.interop.diffusers_scheduler needs diffusers: "
                            "pip install 'diffusion-samplers[diffusers]'") from exc

from .. import schedules
from ..schedules.base import schedule_options as schedule_option_names
from ..core import names
from ..core import seeds as seeds_mod
from ..core.conversion import infinite_sigma_refusal, to_x0
from ..core.errors import (InvalidInput, InvalidOption, InvalidType, LimitExceeded, MissingFile, SamplersError,
                          Unavailable)
from ..core.native import VE, RectifiedFlow, VPDiscrete, flow_t
from ..core import noise as noise_mod
from ..core.registry import SAMPLERS
from ..core.run import check_start, draws_noise, run_sampler
from ..core.files import read_json
from ..core.validate import check_options, closest, drop_unread, integer, nonneg
from ..ode.singlestep import per_call_report
from ..sde import ancestral
from . import diffusers_sources as sources
from .diffusers_models import (check_flags, check_scheduler_flags, config_dict, is_flow_config, native_from_config,
                               FORMAT_KEYS, scheduler_parameters, unknown_config_keys,
                               prediction_from_config)

MAX_TRAIN_TIMESTEPS = 100_000  # a table larger than this is a typo (1e9 would allocate gigabytes)
MAX_INFERENCE_STEPS = 100_000  # the replay is O(n²): far beyond any pipeline's step count


@dataclass
class SamplerSchedulerOutput(BaseOutput):
    """``prev_sample``: the latent the pipeline evaluates next (or the final one); ``pred_original_sample``:
    the denoised x0 of this model call."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass
class SamplerSchedulerLCMOutput(BaseOutput):
    """``step``'s output in an LCMScheduler's place, with its fields: ``prev_sample``, and ``denoised``, the x0 of
    this model call after LCM's boundary condition (LCMSchedulerOutput's)."""

    prev_sample: torch.Tensor
    denoised: torch.Tensor | None = None


@dataclass
class SamplerSchedulerTCDOutput(BaseOutput):
    """``step``'s output in a TCDScheduler's place, with its fields: ``prev_sample``, and ``pred_noised_sample``, the
    latent at TCD's inner point s = ⌊(1 − γ)·t_next⌋ on the predicted trajectory before the step's noise (equal to
    ``prev_sample`` at γ = 0 and at the last step; TCDSchedulerOutput's). Where another sampler runs in the class's
    place, s is the next model call's point (no noise: γ = 0)."""

    prev_sample: torch.Tensor
    pred_noised_sample: torch.Tensor | None = None


def _version(t: torch.Tensor) -> int | None:
    """A tensor's version counter (torch bumps it at every in-place change); None for an inference tensor (made
    under torch.inference_mode), which keeps none."""
    return None if t.is_inference() else t._version


class _Pause(BaseException):
    """Unwinds a replayed sampler at its next model call (BaseException: no sampler code may swallow it)."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = x


class _Replay:
    """The model a replayed sampler sees: answers from this run's denoised list, pauses after it. A latent the
    pipeline replaced at call j is copied into the sampler's own before it is used (``writes_state``: the run's
    check that a model leaves its input alone, samplers.core.run.Denoise, lets this one write it)."""

    writes_state = True

    def __init__(self, denoised: list, injected: dict, supports_infinite_sigma: bool):
        self.denoised = denoised
        self.injected = injected
        self.calls = 0
        self.supports_infinite_sigma = supports_infinite_sigma

    def __call__(self, x, sigma, **extra_args):
        j = self.calls
        if j in self.injected:
            x.copy_(self.injected[j])
        if j == len(self.denoised):
            raise _Pause(x)
        self.calls += 1
        return self.denoised[j]


class _Recorder:
    """The dummy model of the planning run: records each evaluation sigma (and returns D = 0)."""

    def __init__(self, supports_infinite_sigma: bool):
        self.sigmas: list[float] = []
        self.supports_infinite_sigma = supports_infinite_sigma

    def __call__(self, x, sigma, **extra_args):
        self.sigmas.append(float(sigma[0]))
        return torch.zeros_like(x)


@dataclass(frozen=True)
class _Plan:
    schedule: list[float]        # the sampling schedule (VE σ), what the sampler gets
    evals: list[float]           # σ of every model call of the sampler, in order
    step_starts: list[int]       # index into evals of each step's first model call
    idle: int = 0                # model calls after the sampler's last (a source's zero-length last steps)

    @property
    def calls(self) -> list[float]:
        """σ of every model call of the run: the sampler's, then the idle ones at the final sigma."""
        return self.evals + [self.schedule[-1]] * self.idle


def _plan(fn, schedule: list[float], options: dict, supports_inf: bool, noisy: bool, idle: int = 0) -> _Plan:
    """The run of ``fn`` on ``schedule``: the σ of its model calls, and the call each step of the schedule starts at.

    A step's start is read from the callback: a registry sampler calls back once per step of the schedule, after the
    step's last model call, so step k + 1 starts at the number of calls made by callback k. ``dpm_fast`` with
    ``final_denoise=False`` (A1111's "DPM fast", ``comfyui:dpm_fast``) calls back as k-diffusion does instead, once per
    DPM-Solver step after its first call: on 6 steps 3 callbacks after calls 1, 4 and 6, which would plan steps
    starting at [0, 1, 4] (neither the schedule's steps, one call each, nor the solver's, at calls 0, 3 and 5). The
    planning run asks it for its per-call report (:func:`~samplers.ode.singlestep.per_call_report`), so every step of
    the schedule is planned: [0, 1, ..., 5], the steps ``set_begin_index`` can name (``schedule[step:]``)."""
    if len(schedule) == 1 and idle:
        # a source grid that is all repeat (one karras step [σ_max, σ_max]): no sampler step, only idle calls
        return _Plan(schedule, [], [], idle)
    recorder = _Recorder(supports_inf)
    counts: list[int] = []
    kwargs = dict(options)
    if noisy:
        kwargs["noise_sampler"] = lambda sigma, sigma_next: torch.zeros(1, 1, dtype=torch.float64)
        kwargs.pop("seed", None)
    with per_call_report():
        fn(recorder, torch.zeros(1, 1, dtype=torch.float64), schedule,
           callback=lambda info: counts.append(len(recorder.sigmas)), disable=True, **kwargs)
    return _Plan(schedule, recorder.sigmas, [0] + counts[:-1], idle)


class _GeneratorNoise:
    """The pipeline's generator consumed as diffusers' schedulers consume it: one ``randn_tensor(shape,
    generator=...)`` per draw. The draws are kept, so every replay of the run sees the same noise.

    ``steps`` (σ at the start of each step -> its index): the source class draws once per step, also where the
    sampler needs no noise (τ = 0), so the draw a step gets is the one with its index (earlier ones are drawn first,
    in order); without it, draws are handed out in the order the sampler asks for them."""

    def __init__(self, shape, device, dtype, steps: dict[float, int] | None = None):
        self.shape, self.device, self.dtype = tuple(shape), device, dtype
        self.steps = steps
        self.generator = None
        self.draws: list[torch.Tensor] = []
        self.calls = 0

    def for_step(self, generator) -> "_GeneratorNoise":
        """This noise for one ``step``'s replay: a copy (its draws so far, counted from the first), reading
        ``generator``. The scheduler rebinds its noise to it rather than changing this one, so a copy of the
        scheduler's ``__dict__`` taken before the step (StableDiffusionPanoramaPipeline's per-view state) keeps the
        noise as it was."""
        fresh = copy.copy(self)
        fresh.generator, fresh.draws, fresh.calls = generator, list(self.draws), 0
        return fresh

    def __call__(self, sigma, sigma_next):
        index = self.calls if self.steps is None else self.steps[float(sigma)]
        while len(self.draws) <= index:
            self.draws.append(self._draw())
        self.calls += 1
        return self.draws[index]

    def _draw(self) -> torch.Tensor:
        return randn_tensor(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def top_up(self, total: int) -> None:
        """Draw (and drop) what the source class draws beyond the sampler's draws (noise it multiplies by 0)."""
        for _ in range(total - len(self.draws)):
            self._draw()


class _RunPath(noise_mod._Lazy):
    """A label's Brownian path (``noise_sampler="brownian_tree"`` / ``"brownian_tree_device"``, any ``"brownian*"``
    kind) for one run: built once, at its first draw, as the run itself builds the kind (``noise_mod.resolve`` with
    the run's seeds, start latent and schedule), and each answer kept by its interval. Every ``step`` replays the
    sampler from the start; passing the kind's name made each replay build the tree again and query it again for every
    earlier step (the tree reads its 0-d CPU times on the host at each query): 1274 tree queries for the 49 draws of
    "DPM++ 2M SDE Karras" at 50 steps. A path answers an interval with the same draw, so a replay gets the tensor it
    got before, bit for bit, and a step costs one new query.

    It is the kind's own lazy sampler (``noise_mod._Lazy``, its ``kind`` the name), so the run reads it as the named
    kind: ``path_kind`` / ``tree_range`` (restart's range check) and ``churn_noise``, whose draws come from the path's
    ``fresh()`` generator, sequential, not from its intervals: :meth:`for_step` rewinds that generator before each
    replay (as a rebuilt path started it). The kept answers depend only on their interval, so a copy of the
    scheduler's ``__dict__`` that shares this object (StableDiffusionPanoramaPipeline's per-view state) gets the same
    noise."""

    def __init__(self, kind: str, seeds: list[int], x: torch.Tensor, schedule: list[float]):
        super().__init__(lambda: noise_mod.resolve(kind, seeds, x, sigmas=schedule), kind)
        self.draws: dict[tuple[float, float], torch.Tensor] = {}

    def for_step(self) -> "_RunPath":
        """This path for one ``step``'s replay: its ``fresh()`` draws (churn) start again from their seeds."""
        if self.sampler is not None:
            self.sampler.rewind()
        return self

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        key = (float(sigma), float(sigma_next))
        if key not in self.draws:
            self.draws[key] = super().__call__(sigma, sigma_next)
        return self.draws[key]


class _DiffusersBrownian:
    """DPMSolverSDEScheduler's noise: diffusers' own ``BrownianTreeNoiseSampler`` (one tree over the schedule's
    range, seeded by ``noise_sampler_seed`` or one draw of torch's global generator), queried at the float32
    sigmas the scheduler computes for each step (σ, its log-midpoint, σ_next). Each answer is kept by its key: every
    ``step`` replays the sampler from the start, and the tree, queried again for every earlier step, made the run's
    tree queries and host reads grow as the square of its steps (4 949 queries, 14 982 host reads, 8.2 s against
    diffusers' 0.25 s at 50 steps); the tree answers a query with the same tensor, so a replay gets it from here."""

    def __init__(self, x: torch.Tensor, scheduler_sigmas: torch.Tensor, schedule: list[float], seed):
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        sig = scheduler_sigmas.to("cpu", torch.float32)
        self.tree = BrownianTreeNoiseSampler(x, sig[sig > 0].min().item(), sig.max().item(), seed)
        self.queries: dict[tuple[float, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        for sigma, sigma_next in zip(schedule, schedule[1:]):
            if not (0 < sigma_next < sigma < math.inf):
                continue
            s, s_next = torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
            t, t_next = s.log().neg(), s_next.log().neg()  # as DPMSolverSDEScheduler.step computes them
            t_mid = t + (t_next - t) * 0.5
            start = t.neg().exp()
            self.queries[(sigma, True)] = (start, t_mid.neg().exp())
            self.queries[(sigma, False)] = (start, t_next.neg().exp())
        self.ends = dict(zip(schedule, schedule[1:]))
        self.answers: dict[tuple[float, bool], torch.Tensor] = {}

    def __call__(self, sigma, sigma_next):
        key = (float(sigma), float(sigma_next) != self.ends.get(float(sigma)))
        if key not in self.queries:
            raise Unavailable(f"DPMSolverSDE noise queried at ({sigma:g}, {sigma_next:g}), which is not a step "
                              "of its schedule")
        if key not in self.answers:
            self.answers[key] = self.tree(*self.queries[key])
        return self.answers[key]


# every class the shim stands in for (diffusers' KarrasDiffusionSchedulers first, as its classes list them)
_COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers] + [
    name for name in sources.SOURCES if name not in KarrasDiffusionSchedulers.__members__]


@dataclass(frozen=True)
class _StepDtypes:
    """The dtypes a diffusers scheduler class's ``step`` returns, from those of its ``sample`` and ``model_output``
    (diffusers 0.42.1; tests/test_shim_dtypes.py runs every class on every pair of float32 / float16 / bfloat16).

    upcast: the class casts the sample to float32 before it computes x0 (so x0 is float32 from half inputs).
    prev: the dtype of ``prev_sample``: "output" (the class casts its result to the model output's dtype), "x0"
    (to its x0's: DPMSolverMultistep), "sample" (to the sample's: UniPC, SA-Solver's updates), or "promote"
    (torch's promotion of the sample's and the model output's: plain arithmetic, float16 with bfloat16 is float32).
    x0 (``pred_original_sample``, LCM's ``denoised``) is the model output itself where the model predicts x0 and no
    boundary condition mixes in the sample (LCM's does), else the promotion of the (upcast) sample and the output.
    """

    upcast: bool
    prev: str  # "output" | "x0" | "sample" | "promote"


_STEP_DTYPES: dict[str, _StepDtypes] = {
    **dict.fromkeys(["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "EDMEulerScheduler",
                     "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"], _StepDtypes(True, "output")),
    "DPMSolverMultistepScheduler": _StepDtypes(False, "x0"),
    **dict.fromkeys(["UniPCMultistepScheduler", "SASolverScheduler"], _StepDtypes(False, "sample")),
    **dict.fromkeys(["DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
                     "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
                     "DPMSolverSinglestepScheduler", "DEISMultistepScheduler", "LCMScheduler",
                     "TCDScheduler", "EDMDPMSolverMultistepScheduler"], _StepDtypes(False, "promote")),
}


# the classes whose ``step`` computes its step from the ``timestep`` it is given (DDIM, PNDM: ᾱ at it and at
# ``timestep − num_train_timesteps // n``; DDPM: its previous timestep; LCM, TCD: ᾱ and the boundary condition at it;
# SASolver: its τ, ``tau_func(timestep)``); the others read their step index and ignore the value past the first step
_STEP_READS_TIMESTEP = frozenset({"DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler",
                                  "SASolverScheduler"})


# the classes whose tables before their first set_timesteps do not match: timesteps descending (999 … 0), sigmas
# ascending, so their add_noise reads the σ of the mirrored timestep (add_noise(x0, noise, 999) adds σ(0)'s noise)
_NOISE_TABLES_MIRRORED = frozenset({"DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
                                    "UniPCMultistepScheduler", "DEISMultistepScheduler"})


def _class_index(times: list[float], value: float) -> int:
    """The index diffusers' ``index_for_timestep`` finds for a timestep among ``times`` (one of them): the second
    match where it repeats (Heun's, KDPM2's), as the class starts a run there."""
    found = [i for i, c in enumerate(times) if c == value]
    return found[1] if len(found) > 1 else found[0]


def _host_value(timestep) -> float | None:
    """A timestep's value where reading it costs no host sync (a Python number, a numpy array, a CPU tensor); None
    for a tensor on an accelerator, whose value a sampling loop must not wait for. A CPU tensor is read through
    numpy, which samplers.core.graph.count_host_reads (the CPU stand-in for a device's reads) does not count: on an
    accelerator this read is not made, so it must not count as one there."""
    if isinstance(timestep, torch.Tensor):
        if timestep.device.type != "cpu":
            return None
        return float(timestep.detach().reshape(-1)[:1].to(torch.float64).numpy()[0])
    if isinstance(timestep, np.ndarray):
        return float(timestep.reshape(-1)[0])
    return float(timestep)


def _overridden(config: Mapping, overrides: Mapping) -> dict:
    """``config`` with ``overrides`` set, and taken out of its ``_use_default_values`` (the keys diffusers filled in
    with the class's defaults, which its ``from_config`` replaces by the defaults again): a value the caller passed
    is the caller's, not a default to drop."""
    out = {**config, **overrides}
    if "_use_default_values" in out:
        out["_use_default_values"] = [k for k in out["_use_default_values"] if k not in overrides]
    return out


def _edited_keys(config: Mapping, inner: Mapping, class_name: str) -> dict:
    """The top-level keys of a saved SamplerScheduler's ``config`` whose value is not what its ``source_config``
    (``inner``) resolves to in ``class_name``: edits. The shim's config shows the class's resolved value for every key
    of the class's config (_show_source_config), and diffusers' class reads those top-level keys
    (``Class.from_config(shim.config)``), so a key that differs there was changed after the shim wrote it, and runs, as
    _follow_config runs a key a pipeline rewrote. A key diffusers' from_config drops (``_use_default_values``) is no
    edit; an unchanged config has none (the same run)."""
    resolved = _prototype(class_name, _freeze(inner)).config
    dropped = set(config.get("_use_default_values") or ())
    return {k: config[k] for k in resolved
            if not k.startswith("_") and k in config and k not in _SHIM_OPTIONS and k not in dropped
            and _freeze(config[k]) != _freeze(resolved[k])}


def _kept_edits(config: dict) -> dict:
    """A saved SamplerScheduler's ``config`` with its ``_use_default_values`` (the keys diffusers filled in with
    their defaults, which its from_config drops for the defaults again) down to the keys that still hold
    SamplerScheduler's default: one that holds another value was set afterwards (``{**shim.config, "sampler":
    "heun"}``), and is the caller's, not a default to drop."""
    listed = config.get("_use_default_values")
    if not listed:
        return config
    defaults = _defaults("SamplerScheduler")
    missing = object()
    kept = [k for k in listed if k not in config or _freeze(config[k]) == _freeze(defaults.get(k, missing))]
    return {**config, "_use_default_values": kept}


def _freeze(value):
    """A hashable copy of a config (its items sorted; list values become tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if hasattr(value, "tolist"):
        return _freeze(value.tolist())
    return value


_PROTOTYPES: dict[tuple, Any] = {}  # (class name, frozen config) -> an instance built from that config, to copy
# the scheduler object SamplerScheduler.from_config was given, for the shim it is building in this thread alone: it
# may hold state its config does not (FlowMatchEulerDiscreteScheduler.set_shift), which must neither reach another
# shim of the same config nor be replaced by an object cached for it
_GIVEN: contextvars.ContextVar = contextvars.ContextVar("diffusers_scheduler_given", default=None)


def _prototype(class_name: str, frozen_config: tuple):
    """The instance of a diffusers scheduler class the shim copies (some constructors plan 1000 steps): the scheduler
    ``from_config`` was given, for the shim built from it; else one built from the config, kept per config."""
    key = (class_name, frozen_config)
    given = _GIVEN.get()
    if given is not None and given[0] == key:
        return given[1]
    if key not in _PROTOTYPES:
        from diffusers import schedulers as diffusers_schedulers

        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in frozen_config}
        try:
            instance = getattr(diffusers_schedulers, class_name).from_config(config)
        except Exception as exc:  # noqa: BLE001 - diffusers' own refusal of a config, in our vocabulary
            raise InvalidInput(f"diffusers' {class_name} refuses this config ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}); fix the config") from None
        if len(_PROTOTYPES) >= 32:
            _PROTOTYPES.pop(next(iter(_PROTOTYPES)), None)
        _PROTOTYPES[key] = instance
    return _PROTOTYPES[key]


@functools.lru_cache(maxsize=1)
def _parameters() -> dict[str, dict]:
    """The constructor parameters of every diffusers scheduler class (and of SamplerScheduler), each with its default
    (``inspect.Parameter.empty`` where it has none)."""
    import inspect

    out = dict(scheduler_parameters())
    out["SamplerScheduler"] = {p: v.default for p, v in inspect.signature(SamplerScheduler).parameters.items()}
    return out


@functools.lru_cache(maxsize=None)
def _step_parameters(class_name: str) -> frozenset:
    """The keywords of a diffusers class's ``step`` that :data:`_STEP_KEYWORDS` describes."""
    import inspect

    import diffusers

    return frozenset(inspect.signature(getattr(diffusers, class_name).step).parameters) & frozenset(_STEP_KEYWORDS)


@functools.lru_cache(maxsize=1)
def _signatures() -> dict[str, frozenset]:
    """The constructor parameter names of every diffusers scheduler class (and of SamplerScheduler)."""
    return {name: frozenset(params) for name, params in _parameters().items()}


def _defaults(class_name: str) -> dict:
    """The constructor defaults of a diffusers scheduler class (what its config holds for a key a config omits)."""
    import inspect

    return {k: v for k, v in _parameters().get(class_name, {}).items() if v is not inspect.Parameter.empty}


def _class_of(config: dict, sampler=None) -> str | None:
    """The scheduler class a config without ``_class_name`` belongs to: the one class whose parameters are exactly
    its keys (a scheduler built directly, ``EulerDiscreteScheduler(...).config``), else None. Classes that take the
    same parameters are told apart only where they run the same steps (``sources.SAME_RUN``: DDIM / DDPM and their
    parallel variants) or where ``sampler`` names one of them; otherwise the config is refused as ambiguous
    (TCDScheduler and LCMScheduler take the same parameters and run different steps)."""
    keys = frozenset(k for k in config if not k.startswith("_"))
    inner = config.get("source_config")
    if "source_config" in keys and keys - _signatures()["SamplerScheduler"] <= (
            set(inner) | _signatures().get(_given_class(inner), frozenset()) if isinstance(inner, Mapping) else set()):
        # its own config: its parameters (less the keys its source class lacks) and its source class's config keys
        # (see __init__)
        return "SamplerScheduler"
    found = sorted(name for name, params in _signatures().items() if params == keys)
    distinct = sorted({sources.SAME_RUN.get(name, name) for name in found})
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    if isinstance(sampler, str):
        try:
            label = names.resolve(sampler)
        except SamplersError:
            label = None
        if label is not None and label.source == "diffusers" and label.label in distinct:
            return label.label
    raise InvalidOption(f"SamplerScheduler.from_config got a config without _class_name whose keys are exactly the "
                        f"parameters of {', '.join(distinct)}: it cannot tell which of them it is for, and they run "
                        "different steps (the shim would silently run another method). Add \"_class_name\": "
                        f"\"<one of {', '.join(distinct)}>\" to the config, pass the scheduler itself "
                        "(SamplerScheduler.from_config(pipe.scheduler)), or name its class: sampler=\"<class name>\"")


# the forms of a set_timesteps argument diffusers' classes each take or fail on (UniPC's flow sigmas: a numpy array,
# not a list or tensor; EDMEuler's ramp: a tensor, not a list or array), with the conversion to each
_VALUE_FORMS = {"a numpy array": np.asarray, "a torch tensor": torch.as_tensor,
                "a list": lambda v: np.asarray(v).tolist()}


def _form_of(value) -> str | None:
    """Which of :data:`_VALUE_FORMS` a set_timesteps argument is (None: a number, None, anything else)."""
    if isinstance(value, np.ndarray):
        return "a numpy array"
    if isinstance(value, torch.Tensor):
        return "a torch tensor"
    return "a list" if isinstance(value, (list, tuple)) else None


def _call(n, passed: Mapping) -> str:
    """The arguments of a set_timesteps call as the caller wrote them (values of sigmas / timesteps listed)."""
    shown = {k: torch.as_tensor(v, dtype=torch.float64).flatten().tolist()
             if k in ("sigmas", "timesteps") else v for k, v in passed.items()}
    return ", ".join(([f"num_inference_steps={n}"] if n is not None else []) + [f"{k}={v!r}" for k, v in shown.items()])


# keyword arguments of the replaced classes' ``step`` beyond (generator, return_dict, eta) that pipelines pass, with
# the values that leave diffusers' run as it is: the shim takes exactly those and refuses the rest by name (it would
# otherwise drop them). Each: (the values that change nothing, given the other keywords and the source config; what
# the keyword does in diffusers; the fix).
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_STEP_KEYWORDS: dict[str, tuple] = {
    **{k: (lambda v, kw, cfg: _real(kw.get("s_churn", 0.0)) == 0,
           "EulerDiscrete / EDMEuler / FlowMatch's churn: noise added before each step (s_churn > 0), its σ̂ read "
           "where the model was evaluated at σ",
           "pass s_churn=0 (or leave it out), or keep diffusers' own scheduler for churn") for k in _CHURN},
    "variance_noise": (lambda v, kw, cfg: v is None or kw.get("_draws_nothing", False),
                       "the noise a pipeline supplies for a step in place of the generator's (LEdits++, "
                       "CycleDiffusion)",
                       "leave it out, or keep diffusers' own scheduler for a pipeline that supplies its noise"),
    "use_clipped_model_output": (lambda v, kw, cfg: not v or not (cfg.get("clip_sample") or cfg.get("thresholding")),
                                 "DDIM's ε recomputed from the clipped / thresholded x0",
                                 "pass use_clipped_model_output=False (or None), or keep diffusers' DDIMScheduler"),
    "per_token_timesteps": (lambda v, kw, cfg: v is None,
                            "FlowMatchEuler stepping each token from its own σ (LTX conditioning, SanaWM)",
                            "keep diffusers' FlowMatchEulerDiscreteScheduler for such a pipeline"),
    "pred_original_sample": (lambda v, kw, cfg: v is None,
                             "EDMEuler's x0 given by the caller in place of the model output's",
                             "leave it out, or keep diffusers' EDMEulerScheduler"),
    "order": (lambda v, kw, cfg: _real(v) == 4,
              "LMSDiscrete's multistep order",
              "leave it out (4), or pass sampler='lms', sampler_options={'order': <n>} to the scheduler"),
}
# a class whose keyword means something else there: (class, keyword) -> its rule, before _STEP_KEYWORDS
_CLASS_STEP_KEYWORDS: dict[tuple[str, str], tuple] = {
    # s_noise is DPMSolverSDE's noise scale itself (no churn there)
    ("DPMSolverSDEScheduler", "s_noise"): (lambda v, kw, cfg: _real(v) == 1,
                                           "DPMSolverSDE's noise scale",
                                           "leave it out (1.0), or pass sampler_options={'s_noise': <value>} to the "
                                           "scheduler"),
}


def _real(value) -> float:
    """A keyword's number, read without the device (a tensor would be a host read each step)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(f"expected a Python number, got {value!r}")
    return float(value)


# SamplerScheduler's own options; the rest of its parameters are diffusers' config vocabulary, which only matters
# without a source class (with one, the source class's config is read)
_SHIM_OPTIONS = frozenset({"sampler", "schedule", "sampler_options", "schedule_options", "initial_noise", "seed",
                           "exact", "noise_schedule", "source_config"})


def _given_class(source_config) -> str | None:
    return source_config.get("_class_name") if isinstance(source_config, Mapping) else None


def _label_of(sampler):
    """``sampler`` resolved, or None where it is no name (refused, with its closest names, by the constructor)."""
    try:
        return names.resolve(sampler) if isinstance(sampler, str) else None
    except SamplersError:
        return None


def _swapped_class(label, class_name: str | None) -> str | None:
    """The diffusers class a ``sampler=`` label names where the config is another class's (``class_name``): the shim
    then stands in for ``Class.from_config(config)``, as diffusers' own swap ``pipe.scheduler =
    DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`` builds it (:func:`_as_class`). None where the
    label names no diffusers class, or the config's own (or one that runs its steps: ``sources.SAME_RUN``). A class
    the shim does not stand in for is refused: its from_config would run that class, which the shim cannot."""
    if label is None or label.source != "diffusers" or label.label == class_name:
        return None
    target = sources.source_name(label.label)
    if target is not None and target == sources.source_name(class_name):
        return None
    if target is None:
        raise InvalidOption(f"sampler={label.label!r} names a diffusers class the shim does not stand in for, on a "
                            f"config of {class_name or 'another class'}: diffusers' swap {label.label}.from_config("
                            "config) runs that class, which this scheduler does not reproduce. Pass "
                            f"sampler={label.sampler!r} to run its algorithm on this config's grid (another image "
                            f"than the class's), or keep diffusers' {label.label}")
    return target


def _as_class(class_name: str, config: Mapping) -> dict:
    """``config`` as diffusers' ``Class.from_config(config)`` makes it ``class_name``'s — the keys the class takes
    kept, the others' dropped, the class's defaults for the keys it lacks — by diffusers' own from_config, with the
    model it describes checked against the given config's (:func:`_check_same_model`)."""
    given = {k: v for k, v in config.items() if not k.startswith("_diffusers")}
    made = _prototype(class_name, _freeze(given)).config
    swapped = {k: v for k, v in made.items() if not k.startswith("_diffusers")}
    _check_same_model(given, swapped, class_name)
    return swapped


def _check_same_model(given: Mapping, swapped: Mapping, class_name: str) -> None:
    """The model (prediction and noise schedule, as :func:`native_from_config` reads them) of a config swapped to
    another class must be the given config's: diffusers' swap drops a key the class lacks (LMSDiscrete has no
    ``rescale_betas_zero_snr``; a VP class no flow shift) and takes its default, which silently describes another
    model. Each config is read for the keys its class takes (diffusers' from_config keeps the others as unread
    "hidden" keys). A given config the library does not read (a class outside its READ_CLASSES) is not compared."""
    try:
        before = native_from_config(_taken(given), mu_later=True)
    except SamplersError:
        return
    after = native_from_config(_taken(swapped), mu_later=True)
    if not _same_native(before, after):
        raise InvalidOption(
            f"sampler={class_name!r} on a {_given_class(given) or 'scheduler'} config: diffusers' swap "
            f"{class_name}.from_config(config) reads another model from it ({before[1]} on "
            f"{type(before[0]).__name__} becomes {after[1]} on {type(after[0]).__name__}, or another noise table), "
            f"because {class_name} lacks or defaults a key that describes the model, so its image would be another "
            f"model's. Pass sampler={names.resolve(class_name).sampler!r} to run its algorithm on this config's model "
            f"and grid, or build the shim from a {class_name} config that describes the model")


def _taken(config: Mapping) -> dict:
    """The keys of a config that its class (``_class_name``) takes, with ``_class_name``: what the class reads of it
    (the whole config where the class is not a diffusers scheduler class)."""
    params = _signatures().get(_given_class(config))
    if params is None:
        return dict(config)
    return {k: v for k, v in config.items() if k in params or k == "_class_name"}


def _same_native(a: tuple, b: tuple) -> bool:
    """Whether two (native schedule, prediction) pairs are the same model: the same prediction, schedule type and
    fields (a tensor field compared exactly)."""
    (na, pa), (nb, pb) = a, b
    if pa != pb or type(na) is not type(nb):
        return False
    for field in dataclasses.fields(na):
        x, y = getattr(na, field.name), getattr(nb, field.name)
        same = torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        if not same:
            return False
    return True


def _check_kwargs(kwargs: Mapping, class_name: str | None) -> None:
    """Keyword arguments of ``from_config`` that nothing reads: refused (diffusers' from_config drops them)."""
    if sources.source_name(class_name) is not None:
        accepted = _SHIM_OPTIONS | _signatures().get(class_name, frozenset())
        takers = f"SamplerScheduler's own options nor {class_name} (whose config the shim reads)"
    else:
        accepted = _signatures()["SamplerScheduler"]
        takers = "SamplerScheduler"
    unknown = [k for k in kwargs if k not in accepted and k != "pretrained_model_name_or_path"]
    if unknown:
        raise InvalidOption(f"SamplerScheduler.from_config got {', '.join(closest(k, accepted) for k in unknown)}, "
                            f"which neither {takers} takes: it would be dropped silently. Fix the name, or leave it "
                            f"out; SamplerScheduler's own options are {', '.join(sorted(_SHIM_OPTIONS))}")


@functools.lru_cache(maxsize=1)
def _known_config_keys() -> frozenset:
    """Every key some installed diffusers scheduler class (or SamplerScheduler) takes: a shipped config carries other
    classes' keys (SDXL's EulerDiscrete config has DDIM's clip_sample), which the class it names ignores."""
    return frozenset().union(*_signatures().values(), FORMAT_KEYS)


def check_config_keys(config: Mapping, where: str) -> None:
    """A config key that no diffusers scheduler class takes is a misspelling (``use_karas_sigmas``): diffusers'
    from_config drops it with a logged warning and runs the default; refused here, with the closest known key.
    Keys starting with "_" are diffusers' metadata (``_class_name``, ``_diffusers_version``, ...)."""
    bad = unknown_config_keys(config, _known_config_keys())
    if bad:
        raise InvalidOption(f"{where} has {bad}, which no diffusers "
                            "scheduler class takes: diffusers would drop it (and run that option's default) "
                            "silently. Fix the key's spelling, or remove it from the config")


def _solver_option(label, options: dict):
    """(label, options) with ``sampler="learned_multistep", sampler_options={"solver": PATH or LearnedSolver}`` read
    as ``sampler="fitted:PATH"``, as the pipeline and the CLI map it (models/pipeline.py): the solver loaded once,
    here, and run on its own σ nodes, checked at construction as the name is (its recorded model, its prediction,
    img2img's later start). ``allow_other_model`` without a solver does nothing and is refused here, before the
    pipeline's first model call."""
    if label is None or label.sampler != "learned_multistep" or label.sigmas is not None:
        return label, options
    from ..fitted.solver import LearnedSolver, check_allow_without_solver

    solver = options.get("solver")
    if solver is None:
        check_allow_without_solver(options.get("allow_other_model", False))
        return label, options
    solver = LearnedSolver.of(solver, "sampler_options['solver']")
    label = dataclasses.replace(label, options={**label.options, "solver": solver}, sigmas=tuple(solver.sigmas),
                                source="fitted")
    return label, {**options, "solver": solver}


def _solver_record(given):
    """``sampler_options["solver"]`` as the config records it (JSON, which ``from_config`` reads back to the same
    solver from any folder): a path made absolute (a relative one read the file of another folder there, silently);
    a ``LearnedSolver`` as its content, :meth:`~samplers.fitted.solver.LearnedSolver.record` (not the path it was
    loaded from: that may be relative, or changed since); a record (a saved config read back) as it is."""
    from ..fitted.solver import LearnedSolver

    if isinstance(given, (str, os.PathLike)):
        return os.path.abspath(os.path.expanduser(os.fspath(given)))
    return given.record() if isinstance(given, LearnedSolver) else dict(given)


def _host_sync_refusal(name: str) -> str:
    """Why a sampler that reads the device on the host inside its loop (``host_sync``) is not a scheduler here."""
    from .torchdiffeq_adapter import chooses_own_steps

    if chooses_own_steps(name):
        why = ("it chooses its steps from the model's outputs, but a diffusers pipeline fixes scheduler.timesteps "
               "before its loop")
    else:
        why = "torchdiffeq / torchsde drive its steps and read them on the host, which this scheduler does not run"
    return (f"sampler {name!r} is not available as a scheduler: {why}. Use a sampler without host_sync (`samplers "
            "list`), or call it directly on the pipeline's model with samplers.interop.diffusers_models.")


def _hub_id(path) -> bool:
    """Whether ``path`` could be a Hugging Face Hub repository id ("org/name" or "name") rather than a local folder: a
    str, not an existing path, relative, of at most two parts of letters, digits, '-', '_', '.'."""
    return (isinstance(path, str) and not os.path.exists(path)
            and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?", path) is not None
            and ".." not in path)


def _check_int(name: str, value, low: int, high: int, fix: str) -> int:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool:
        value = int(value)  # a 0-d integer tensor, which diffusers' set_timesteps takes (a pipeline's own count)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{name} must be an integer, got {value!r}; {fix}")
    value = int(value)
    if value > high:
        raise LimitExceeded(f"{name} = {value} is larger than the {high} this scheduler accepts; {fix}")
    if value < low:
        raise InvalidInput(f"{name} must be at least {low}, got {value}; {fix}")
    return value


def _local_config_file(path: str, subfolder: str | None, config_name: str) -> str:
    """The file diffusers' ``load_config`` reads for a local ``path``: the path itself where it is no folder, else
    the subfolder's config, else the folder's own (a subfolder's that is no regular file is taken, to be refused,
    where diffusers would pass over it to the folder's own)."""
    if not os.path.isdir(path):
        return path
    if subfolder is not None and os.path.lexists(os.path.join(path, subfolder, config_name)):
        return os.path.join(path, subfolder, config_name)
    return os.path.join(path, config_name)


def _check_config_file(config_file: str) -> dict:
    """A scheduler_config.json read by the library's JSON reader: a FIFO or device (which would block or never end),
    an empty or truncated file, text that is not JSON, a key written twice (diffusers' json.loads keeps the last
    silently) or anything but an object is refused naming the file, and so is a boolean key (thresholding,
    lower_order_final, ...) that holds anything but true or false. Returns the config (what json.loads gives for a
    file it accepts)."""
    fix = ("write it as SamplerScheduler.save_pretrained(folder) / a diffusers scheduler's save_config(folder) does "
           "(one JSON object, each key once)")
    config = read_json(config_file, "a scheduler config (one JSON object)", fix)
    if not isinstance(config, dict):
        raise InvalidInput(f"{config_file} holds a JSON {type(config).__name__}, not the object a scheduler config "
                           f"is; {fix}")
    where = f"scheduler config {config_file}"
    check_flags(config, where)
    if isinstance(config.get("source_config"), Mapping):  # a saved SamplerScheduler: the class it stands in for
        check_flags(config["source_config"], f"{where} (its source_config)")
    return config


class SamplerScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs a registry sampler; by default the algorithm of the scheduler it replaces.

    Args:
        sampler: None (the algorithm of the config's scheduler class, ``_class_name``: the pipeline keeps its
            image), a registry name or alias, or any label :mod:`samplers.core.names` resolves ("DPM++ 2M",
            "dpmpp_2m_sde_gpu", "fitted:PATH", ...). Adaptive samplers, which choose their steps from the
            model's outputs, cannot run in a pipeline that fixes the timesteps first.
        schedule: None (the source class's own timesteps and sigmas), or a registry schedule (``karras``,
            ``exponential``, ``flow``, ...) on the model's noise schedule, evaluated at fractional timesteps.
        sampler_options: keyword options of the sampler (``{"eta": 0.5}``); they override the source's.
        schedule_options: keyword options of the schedule (``{"rho": 5.0}``).
        initial_noise: None (the source class's ``init_noise_sigma``; "unit" without a source), ``"unit"``
            (x_t = noise) or ``"sigma"`` (x = σ₀·noise in VE coordinates, as k-diffusion starts).
        seed: noise seed of stochastic samplers (item k uses seed + k, batch-invariant). None: the pipeline's
            ``generator``, consumed as the source class consumes it.
        exact: evaluate the model at the fractional timestep of every sigma and step to σ = 0, where the source
            class rounds timesteps or stops at σ_min (see the module docstring). Changes the image.
        noise_schedule: ``"vp"`` or ``"flow"``; None infers it from the config.
        source_config: the config of the scheduler this one replaces (set by ``from_config``).
        Everything else is diffusers' own config vocabulary, used without a source class (with one, the config
        shows every key of the class's config with the class's value, and leaves out the keys the class's config
        lacks). Without a source class the timesteps are spaced as EulerDiscreteScheduler spaces them and karras /
        exponential sigmas span the whole table, so ``sampler`` may not name a diffusers class there (its own grid
        may differ): use ``from_config``.
    """

    _compatibles = _COMPATIBLES
    order = 1

    @register_to_config
    def __init__(self, sampler: str | None = None, schedule: str | None = None, sampler_options: dict | None = None,
                 schedule_options: dict | None = None, initial_noise: str | None = None, seed: int | None = None,
                 exact: bool = False, noise_schedule: str | None = None, source_config: dict | None = None,
                 num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str | None = None,
                 timestep_spacing: str = "linspace", steps_offset: int = 0, rescale_betas_zero_snr: bool = False,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False,
                 use_beta_sigmas: bool = False, final_sigmas_type: str = "zero", clip_sample: bool = False,
                 thresholding: bool = False, shift: float | None = None, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, time_shift_type: str = "exponential", use_flow_sigmas: bool = False,
                 flow_shift: float = 1.0, shift_terminal: float | None = None, invert_sigmas: bool = False,
                 stochastic_sampling: bool = False):
        _check_int("num_train_timesteps", num_train_timesteps, 2, MAX_TRAIN_TIMESTEPS,
                   "diffusers models use 1000")
        if initial_noise not in (None, "unit", "sigma"):
            raise InvalidOption(f"initial_noise must be None, 'unit' or 'sigma', got {initial_noise!r}")
        if not isinstance(exact, bool):
            raise InvalidType(f"exact must be True or False, got {exact!r}")
        # every key that is a boolean in diffusers (thresholding, lower_order_final, euler_at_final, ...), in the
        # source class's config and in this scheduler's own: a string "false" would be read by its truthiness (the
        # class runs with thresholding on), so anything but true / false / null is refused
        check_flags(self.config, "scheduler config")
        if isinstance(source_config, Mapping):
            check_flags(source_config, "scheduler config")
        if schedule is not None:
            names.resolve_schedule(schedule)  # a registry or tool name; unknown names raise with the closest ones
        if sampler_options is not None and not isinstance(sampler_options, Mapping):
            raise InvalidType(f"sampler_options must be a dict of the sampler's options, got {sampler_options!r}")
        options = dict(sampler_options or {})
        if "noise_sampler" in options or "seed" in options:
            raise InvalidOption("sampler_options cannot hold noise_sampler or seed: the scheduler replays the "
                                "sampler and draws its noise itself; pass seed=<int> to the scheduler instead")
        self.sampler_options = options
        if seed is not None:
            try:  # one integer in [0, 2**64) (item k of a batch uses seed + k): never rounded, wrapped or parsed
                seeds_mod.resolve_seeds(integer("seed", seed), 1)
            except (InvalidType, InvalidInput) as exc:
                raise type(exc)(f"{exc}; pass seed=<int> for the registry's seeded noise, or leave it out (None) "
                                "for the pipeline's generator") from None

        # the scheduler this one replaces
        self._source_name, self._source, self._ref = None, None, None
        label = names.resolve(sampler) if sampler is not None else None
        swapped = _swapped_class(label, _given_class(source_config)) if isinstance(source_config, Mapping) else None
        if swapped is not None:
            # sampler="<diffusers class>" on another class's config: that class as diffusers' from_config builds it
            # from the config (the swap a diffusers user writes), not its algorithm on the given class's grid
            source_config = _as_class(swapped, source_config)
            self.register_to_config(source_config=source_config)
        found = sources.source_for(source_config) if source_config else None
        if label is not None and label.source == "diffusers" and not source_config:
            # without a source class the grid comes from the registry (the spacings are EulerDiscreteScheduler's rules,
            # use_karras_sigmas spans the whole table): another class's own grid would be changed silently
            raise InvalidOption(
                f"sampler={sampler!r} names a diffusers class, but no config of that class was given: without one "
                "the scheduler steps on the registry's grid for this config (timestep_spacing as "
                "EulerDiscreteScheduler spaces it, σ interpolated in log σ, karras / exponential sigmas over the "
                f"whole table), which is {label.label}'s own only in some configs (DPMSolverMultistep / UniPC / DEIS "
                "space linspace and leading otherwise; Euler takes karras' range from its spaced timesteps). To run "
                f"{label.label} as diffusers does, build the shim from its "
                f"config: SamplerScheduler.from_config({label.label}(...).config), or from_config(pipe.scheduler) "
                f"when the pipeline has it; to run its algorithm on the registry's grid, name it "
                f"sampler={label.sampler!r}")
        label, options = _solver_option(label, options)
        if "solver" in options:
            # diffusers writes the config as JSON (save_pretrained, to_json_string, repr): a Path nested in
            # sampler_options or a LearnedSolver failed there raw (TypeError: not JSON serializable), after the run;
            # and a relative path, read back in another folder, ran another file's solver
            self.register_to_config(sampler_options={**self.config.sampler_options,
                                                     "solver": _solver_record(self.config.sampler_options["solver"])})
        self.sampler_options = options
        own = None  # the label that names the config's own class, where it was given as the sampler
        if label is not None and label.source == "diffusers" and label.label == _given_class(source_config):
            own = label
            # the config's own class by name: what that class runs on this config (its algorithm_type, solver_order,
            # ... decide), not the one fixed sampler the name stands for elsewhere
            label = None
        if found is not None:
            self._source_name, self._source = found
            # a config may leave keys out (an older scheduler_config.json, a dict): the class's defaults fill them
            merged = {**_defaults(self._source_name), **source_config}
            _check_int("num_train_timesteps", merged.get("num_train_timesteps", 1000), 2,
                       MAX_TRAIN_TIMESTEPS, "diffusers models use 1000")
            # the model it describes (betas, prediction), checked by our rules; mu comes at set_timesteps
            native_from_config(merged, mu_later=True)
            self._ref = self._reference()
            # the class's config as built, before any set_timesteps of the reference (DPMSolverSinglestep's sets
            # lower_order_final=True in its config there): what the config shows (_show_source_config)
            self._class_config = copy.deepcopy({k: v for k, v in self._ref.config.items() if not k.startswith("_")})
            own = label is None or label.sampler == self._nominal_algorithm()
            refused = sources.refusals(self._source_name, self._source_config, algorithm=own,
                                       given=source_config)
            if refused:
                raise InvalidOption("; ".join(refused))
            # the config shows the source class's resolved value for every key of the class's config (a pipeline
            # reads them: LatentConsistencyModelImg2ImgPipeline's original_inference_steps, Cosmos' sigma_max /
            # sigma_data, LEdits++' algorithm_type; and rewrites them: StableDiffusionPipeline's clip_sample /
            # steps_offset fixes, followed by _follow_config; Class.from_config(shim.config) is the class again), and
            # none of diffusers' keys that the class's config lacks: a pipeline's config.get(key, default) falls back
            # as with the class (StableDiffusion3Pipeline's max_shift, 1.16), and StableDiffusionPipeline finds no
            # steps_offset to "fix" on a class without one
            self._show_source_config()
            lacking = _signatures()["SamplerScheduler"] - _SHIM_OPTIONS - set(self._class_config)
            own_defaults = _parameters()["SamplerScheduler"]
            given_lacking = sorted(k for k in lacking if k in self._internal_dict
                                   and _freeze(self._internal_dict[k]) != _freeze(own_defaults.get(k)))
            if given_lacking:  # a value passed to the constructor that the class has no setting for: not dropped
                raise InvalidOption(
                    f"{', '.join(f'{k}={self._internal_dict[k]!r}' for k in given_lacking)}: {self._source_name}, "
                    "which this scheduler stands in for, has no such setting, so it would be dropped (diffusers' "
                    f"{self._source_name} ignores it, and a pipeline reading it falls back to its own default); "
                    "leave it out, or choose a source class that takes it")
            self._internal_dict = FrozenDict({k: v for k, v in self._internal_dict.items() if k not in lacking})
        else:
            class_name = (source_config or {}).get("_class_name")
            if class_name is not None and label is None:
                why = "it is not a scheduler class the shim stands in for"
                fix = (f"sampler={own.label!r} names that class itself; pass sampler={own.sampler!r} (what its name "
                       f"stands for elsewhere) with a config that names its class (\"_class_name\": {class_name!r}, "
                       "or the scheduler object itself)" if own is not None else "Pass sampler=<name>")
                raise InvalidOption(f"SamplerScheduler cannot reproduce {class_name}: {why}. {fix} to run a "
                                    "registry sampler on this config's model instead (a different image)")
            check_scheduler_flags(self.config)  # flags the samplers do not reproduce, without a source class

        # the sampler the user asked for; a label's schedule applies where it names it ("DPM++ 2M Karras"), or
        # without a source class whose own timesteps would otherwise be used
        self.label = label
        if label is not None and label.sigmas is not None and schedule is not None:
            # a fitted solver runs on its own nodes (as the pipeline refuses it: models/pipeline.py)
            raise InvalidOption(f"{label.label!r} runs on its own fitted σ nodes, but schedule={schedule!r} is set (by "
                                "the caller, or carried in the config of a SamplerScheduler built with it); pass "
                                "schedule=None")
        if label is not None and schedule is not None and label.schedule_is_explicit:
            # a label that names its schedule ("DPM++ 2M Karras") with another one is a conflict, and with the same
            # rule by a name of no other tool the label's own runs: as resolve_call decides for the pipeline and CLI
            schedule = names.resolve_call(sampler, schedule)[1]
        if label is not None:
            # a label's default schedule (A1111's Automatic) gives way to the grid a config has: a source class's, or
            # a flow config's (FlowMatchEulerDiscreteScheduler's); a schedule the label names does not
            own_grid = found is not None or is_flow_config(self.config)
            implied = self.label.schedule is not None and (self.label.schedule_is_explicit or not own_grid)
            if implied and schedule is None:
                schedule = self.label.schedule
        self._schedule_name = schedule
        # a schedule the user chose (schedule=, or a label that names it): sigmas a pipeline passes must not
        # silently replace it (set_timesteps); a label's default schedule yields to them
        self._schedule_chosen = self.config.schedule is not None or (label is not None and schedule is not None
                                                                      and label.schedule_is_explicit)
        nominal = self.label.sampler if self.label is not None else (
            self._nominal_algorithm() if self._source is not None else "euler")
        self.spec = SAMPLERS.get(nominal or "euler")
        if self.spec.host_sync:
            raise InvalidOption(_host_sync_refusal(self.spec.name))
        self._check_options(self.spec, options)
        self.native, self.prediction, self.space = self._model()
        if label is not None and label.discard_penultimate_sigma and schedule is None \
                and (self._source is not None or self.space == "flow"):
            grid = f"{self._source_name}'s own timesteps" if self._source is not None else "this flow config's grid"
            raise InvalidOption(f"{label.label!r} drops the next-to-last σ of a schedule it builds one step longer (as "
                                f"its tool does), but this scheduler would run {grid}, which it does not build; pass "
                                f"schedule=<name> (e.g. 'karras'), or sampler={label.sampler!r} to run the sampler "
                                "alone on that grid")
        solver = label.options.get("solver") if label is not None else None
        if callable(getattr(solver, "check_model", None)):  # a fitted solver: what the config says of its model
            # the shim sees the model's outputs, never the model: a recorded fingerprint cannot be compared, so it is
            # refused here, at construction (the run would refuse at its first step, after the U-Net ran)
            solver.check_model(prediction=self.prediction, fingerprint=None,
                               supports_infinite_sigma=self.prediction not in ("eps", "score", "edm"),
                               allow_other_model=options.get("allow_other_model", False), source=label.label,
                               unseen="the diffusers scheduler sees the model's outputs, never the model, so it "
                                      "cannot compare it", fix='sampler_options={"allow_other_model": True}')
        if callable(getattr(solver, "check_table_range", None)) and self.space != "flow":
            # a discrete model's timesteps come from its σ table: a node outside it would be clamped to its ends
            solver.check_table_range(float(self.native.sigma_min), float(self.native.sigma_max), "this config",
                                     label.label)
        self._check_schedule_options(schedule_options)
        self.latents = self._source.latents if self._source is not None else "native"
        self.order = self._order(self.spec)
        self._reset()
        self._init_noise_sigma = self._first_init_noise_sigma()
        self.num_inference_steps = None
        self.timesteps = None
        self.sigmas = None
        # the config this instance was built from (register_to_config ran before __init__): _follow_config
        # rebuilds it when a pipeline rewrites the config afterwards
        self._built = self._config_snapshot()

    def _show_source_config(self) -> None:
        """Register the source class's resolved value for every key of its config (its defaults filled in as
        diffusers fills them, a from_config keyword override included), and take those keys out of
        ``_use_default_values``: they are the class's values, which ``Class.from_config(shim.config)`` must keep,
        not this class's defaults (diffusers' from_config drops a listed key and uses the class's default)."""
        shown = {k: v for k, v in self._class_config.items() if k not in _SHIM_OPTIONS}
        self.register_to_config(**copy.deepcopy(shown))
        defaults = self._internal_dict.get("_use_default_values")
        if defaults is not None:
            self.register_to_config(_use_default_values=[k for k in defaults if k not in shown])

    def _config_snapshot(self) -> dict:
        """Every key of the config (diffusers' own ``_…`` keys aside): a key registered later is a change too."""
        return {k: _freeze(v) for k, v in self._internal_dict.items() if not k.startswith("_")}

    def _follow_config(self) -> None:
        """Rebuild this scheduler from its live config where that changed after construction, as the replaced class
        reads its config at every call: diffusers' pipelines rewrite a scheduler's config in place
        (StableDiffusion{,Img2Img,Inpaint}Pipeline set ``steps_offset=1`` and ``clip_sample=False`` through
        ``scheduler._internal_dict``). A changed key the source class takes goes into ``source_config``; the
        rebuilt scheduler is checked (and refused) as a new one would be."""
        live = dict(self._internal_dict)
        missing = object()
        changed = {k: live[k] for k in live if not k.startswith("_") and _freeze(live[k]) != self._built.get(k, missing)}
        if not changed:
            return
        params = _signatures()["SamplerScheduler"]
        kwargs = {k: live[k] for k in params if k in live}
        # a key this scheduler has no parameter for (Cosmos2's pipelines register sigma_min / sigma_max, which the
        # classes' karras / exponential / beta sigmas read where the config has them): the source class's to read
        foreign = {k: v for k, v in changed.items() if k not in params}
        if self._source_name is not None and "source_config" not in changed:
            accepted = _signatures()[self._source_name]
            moved = {k: v for k, v in changed.items() if (k in accepted and k not in _SHIM_OPTIONS) or k in foreign}
            if moved:
                kwargs["source_config"] = _overridden(kwargs["source_config"], moved)
        elif foreign:
            # no source class to read it (or source_config itself replaced): nothing here would read the key
            raise InvalidOption(f"the scheduler's config changed after it was built ({foreign}), and nothing this "
                                "scheduler runs reads such a setting, so it would be dropped; build the scheduler "
                                "from a diffusers scheduler's config that has it (SamplerScheduler.from_config(...)), "
                                "or leave it out")
        try:
            fresh = type(self)(**kwargs)
        except (InvalidOption, InvalidInput, InvalidType) as exc:
            raise type(exc)(f"the scheduler's config changed after it was built ({changed}), and the changed "
                            f"config is refused: {exc}") from None
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_internal_dict"})
        live["source_config"] = kwargs.get("source_config")
        self._internal_dict = FrozenDict(live)
        self._built = self._config_snapshot()

    # ------------------------------------------------------------------------------------------------
    # diffusers plumbing

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``, keeping the replaced scheduler's whole config as ``source_config``; ``config``
        may also be the scheduler itself (``SamplerScheduler.from_config(pipe.scheduler)``)."""
        if config is None and "pretrained_model_name_or_path" in kwargs:  # diffusers' deprecated spelling of config
            config = kwargs.pop("pretrained_model_name_or_path")
        instance = config if hasattr(config, "config") and not isinstance(config, Mapping) else None
        given = dict(kwargs)  # the caller's keyword arguments, before the source_config / noise_schedule we add
        copied = None  # (prototype key, the scheduler given), where the shim copies that object: _prototype
        if isinstance(kwargs.get("source_config"), Mapping):
            check_config_keys(kwargs["source_config"], "source_config")
        checked = _given_class(kwargs.get("source_config"))
        class_name = None
        if config is None:
            raise InvalidInput("SamplerScheduler.from_config got no config (None), which diffusers refuses; pass the scheduler it replaces, "
                               "SamplerScheduler.from_config(pipe.scheduler), or its config (pipe.scheduler.config); "
                               "to load a saved one use SamplerScheduler.from_pretrained(folder)")
        if config is not None and "source_config" not in kwargs:
            try:
                source = config_dict(config)
            except TypeError:
                source = {}
            if instance is None:
                check_config_keys(source, "the config passed to SamplerScheduler.from_config")
                if isinstance(source.get("source_config"), Mapping):
                    check_config_keys(source["source_config"], "the source_config of the config passed to "
                                                                "SamplerScheduler.from_config")
            class_name = type(instance).__name__ if instance is not None else (
                source.get("_class_name") or _class_of(source, kwargs.get("sampler")))
            if class_name is None and kwargs.get("sampler") is None:
                raise InvalidOption("SamplerScheduler.from_config cannot tell which scheduler class this config is "
                                    "for (it has no _class_name and its keys match no diffusers scheduler), so it "
                                    "cannot reproduce it: pass the scheduler itself, "
                                    "SamplerScheduler.from_config(pipe.scheduler), or choose sampler=<name>")
            swapped = _swapped_class(_label_of(kwargs.get("sampler")), class_name) \
                if class_name not in (None, cls.__name__) else None
            checked = swapped or class_name
            if class_name == cls.__name__:  # a saved SamplerScheduler: its source class takes its options
                inner = source.get("source_config")
                checked = _given_class(inner)
                if sources.source_name(checked) is not None:
                    # an edited top-level key ({**shim.config, key: v}, an edited scheduler_config.json), then the
                    # keyword arguments on top of it
                    overrides = {**_edited_keys(source, inner, checked),
                                 **{k: v for k, v in kwargs.items()
                                    if k in _signatures()[checked] and k not in _SHIM_OPTIONS}}
                    if overrides:
                        kwargs["source_config"] = _overridden(inner, overrides)
            if class_name not in (None, cls.__name__):
                source = {**source, "_class_name": class_name}
                # (with sampler="<another diffusers class>", that class's from_config takes them: __init__ swaps)
                accepted = _signatures().get(checked, frozenset())
                overrides = {k: v for k, v in kwargs.items() if k in accepted}
                kwargs["source_config"] = _overridden({k: v for k, v in source.items() if not k.startswith("_diffusers")},
                                                      overrides)
                if instance is not None and not overrides and class_name in sources.SOURCES and swapped is None:
                    # copy the scheduler itself rather than build another from its config
                    copied = ((class_name, _freeze(kwargs["source_config"])), instance)
            if source.get("noise_schedule") is None and "noise_schedule" not in kwargs and is_flow_config(source):
                kwargs["noise_schedule"] = "flow"
        if not return_unused_kwargs:  # (with it, diffusers hands the unused ones back: nothing is dropped)
            _check_kwargs(given, checked)
        if instance is not None:
            config = config_dict(instance)
        if class_name == cls.__name__:  # a saved SamplerScheduler: its own options edited too
            config = _kept_edits(config_dict(config))
        token = _GIVEN.set(copied)
        try:
            made = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        finally:
            _GIVEN.reset(token)
        # diffusers registers the config's keys that are no parameter of this class after __init__ (its "hidden"
        # keys: set_alpha_to_one, interpolation_type, ... from the replaced class's config, with the config's
        # values): part of the config as built, not a change a pipeline made later (_follow_config)
        scheduler = made[0] if isinstance(made, tuple) else made  # (with return_unused_kwargs: (it, unused))
        if scheduler._source is not None:
            # those hidden keys carry the given config's values, not the class's resolved ones where a keyword
            # overrode one (from_config(config, algorithm_type=...)): the class's values again
            scheduler._show_source_config()
        scheduler._built = scheduler._config_snapshot()
        return made

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, subfolder=None, return_unused_kwargs=False,
                        **kwargs):
        """diffusers' ``from_pretrained``; a local folder (a path, not a Hub id "org/name") that does not exist or
        holds no scheduler_config.json is refused by name before diffusers turns to the Hub. A Hub id is passed on,
        and diffusers fetches its config as it does (a drop-in: the caller asked for that id); that file is read
        by the library's JSON reader too (:meth:`_dict_from_json_file`). The local config file is read first by
        that reader (:func:`_check_config_file`): a FIFO, an empty or truncated file, a key written twice or a
        boolean key that is not true / false is refused naming the file."""
        path = pretrained_model_name_or_path
        local = isinstance(path, (str, os.PathLike)) and os.path.lexists(path)
        if isinstance(path, (str, os.PathLike)) and not _hub_id(path) and (not local or os.path.isdir(path)):
            folder = os.path.join(os.fspath(path), subfolder) if subfolder else os.fspath(path)
            config_file = os.path.join(folder, cls.config_name)
            # diffusers' load_config reads a file path as the config (subfolder or not), and without the subfolder's
            # config falls back to the folder's own: refused only where neither is there
            # (lexists: a FIFO or a broken link there is the file diffusers would read, refused by name below)
            if not os.path.lexists(config_file) and not os.path.lexists(os.path.join(os.fspath(path), cls.config_name)):
                what = "does not exist" if not os.path.exists(folder) else f"holds no {cls.config_name}"
                raise MissingFile(f"SamplerScheduler.from_pretrained({os.fspath(path)!r}"
                                  f"{f', subfolder={subfolder!r}' if subfolder else ''}): the folder {folder!r} "
                                  f"{what}. Pass the folder that scheduler.save_pretrained(folder) / save_config(folder) "
                                  "wrote, or a pipeline's folder with subfolder=\"scheduler\"")
        if local:
            _check_config_file(_local_config_file(os.fspath(path), subfolder, cls.config_name))
        return super().from_pretrained(path, subfolder=subfolder, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        """diffusers' ``load_config`` reads every config file through this hook, the one it fetched from the Hub
        for an id too (whose file no check before the fetch could see): the library's JSON reader reads it
        (:func:`_check_config_file`) in place of diffusers' bare ``json.loads``, which kept the last of a key
        written twice and waited on a FIFO."""
        return _check_config_file(os.fspath(json_file))

    def __len__(self) -> int:
        return self._setting("num_train_timesteps")

    def _setting(self, key: str):
        """A key of diffusers' vocabulary as this scheduler reads it: the config's value, else SamplerScheduler's
        default (the config leaves out a key its source class lacks)."""
        return self.config.get(key, _defaults("SamplerScheduler")[key])

    @property
    def init_noise_sigma(self):
        value = self._init_noise_sigma  # a fresh tensor per read, as diffusers' property builds one
        if value is None:
            raise Unavailable(f"init_noise_sigma with initial_noise={self.config.initial_noise!r} is the start scale "
                              "of the schedule's first σ: call set_timesteps before reading it")
        return value.clone() if isinstance(value, torch.Tensor) else value

    def _first_init_noise_sigma(self):
        """init_noise_sigma before any set_timesteps: the source class's own then (Euler's from its whole table — a
        pipeline may scale its noise before set_timesteps, as diffusers' LDMPipeline does), 1 without a source; None
        where ``initial_noise`` makes it the scale of a schedule's first σ, not known yet."""
        init = self.config.initial_noise
        if init is None:
            if self._source_name is None:
                return 1.0
            fresh = _prototype(self._source_name, _freeze(self.config.source_config))  # no set_timesteps on it
            own = getattr(fresh, "init_noise_sigma", 1.0)
            return own.detach().clone() if isinstance(own, torch.Tensor) else float(own)
        return 1.0 if init == "unit" and self.latents != "ve" else None

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def _source_table(self, name: str) -> torch.Tensor:
        """The source class's own float32 ``name`` (a copy, so the shim's reference instance is never changed):
        pipelines read it (StableDiffusionSAGPipeline indexes ``alphas_cumprod`` with the timestep). Without a
        source class, or where the class has none (EDM, flow classes), an AttributeError, as the class gives."""
        value = getattr(self._ref, name, None) if self._source is not None else None
        if not isinstance(value, torch.Tensor):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}"
                                 + (f" ({self._source_name} has none)" if self._source is not None else
                                    " (no source scheduler class: build it with from_config(<its config>))"))
        return value.clone()

    def _refuse_table(self, name: str, value) -> None:
        keys = "set_alpha_to_one" if name == "final_alpha_cumprod" else "beta_start, beta_end, beta_schedule, trained_betas, ..."
        raise AttributeError(f"{name} of a SamplerScheduler is the source class's table, read-only: the run is planned "
                             f"from its config, so a table set here would not be run; change the config ({keys}) and "
                             "build it with from_config")

    # read-only: the source class's tables, as its instance has them
    alphas_cumprod = property(lambda self: self._source_table("alphas_cumprod"),
                              lambda self, v: self._refuse_table("alphas_cumprod", v))
    alphas = property(lambda self: self._source_table("alphas"), lambda self, v: self._refuse_table("alphas", v))
    betas = property(lambda self: self._source_table("betas"), lambda self, v: self._refuse_table("betas", v))
    final_alpha_cumprod = property(lambda self: self._source_table("final_alpha_cumprod"),
                                   lambda self, v: self._refuse_table("final_alpha_cumprod", v))

    def _asked_options(self) -> dict:
        """The options asked for: the label's with ``sampler_options`` (a contradiction refused; a label's option
        the run would not read left out: :func:`names.merge_options`, as everywhere)."""
        if self.label is None:
            return dict(self.sampler_options)
        return names.merge_options(self.label, self.sampler_options)

    def _reference(self):
        """A private instance of the source class, built from its config (it computes the timesteps)."""
        return copy.deepcopy(_prototype(self._source_name, _freeze(self.config.source_config)))

    @property
    def _source_config(self) -> dict:
        """The source class's config as the class resolved it: every key it takes, the class's defaults where the
        given config leaves one out (and its own corrections, e.g. a deprecated ``solver_type``). Read this, never
        the raw ``source_config``, for any option of the class."""
        resolved = {k: v for k, v in self._ref.config.items() if not k.startswith("_")}
        return {**resolved, "_class_name": self._source_name}

    def _nominal_algorithm(self) -> str | None:
        """The sampler the source class runs (at 20 steps; a few classes change it with the step count)."""
        try:
            return self._source.algorithm(self._nominal_ref())[0]
        except SamplersError:
            return None

    def _nominal_ref(self):
        ref = self._ref
        if getattr(ref, "num_inference_steps", None) is None:
            ref = self._ref = copy.deepcopy(ref)  # rebound, never changed in place (see _from_source)
            try:
                ref.set_timesteps(20)
            except Exception:  # noqa: BLE001 - only to name the sampler before the first set_timesteps
                pass
        return ref

    def _model(self):
        """(native schedule, prediction, space) of the model the config describes."""
        if self._source is None:
            native, prediction = native_from_config(self.config, mu_later=True)
            return native, prediction, "flow" if isinstance(native, RectifiedFlow) else "vp"
        config = self._source_config
        space = self._source.model_space(config)
        if space == "edm":
            c = self._ref.config
            prediction = {"epsilon": "edm", "v_prediction": "edm_v"}.get(c.prediction_type)  # as native_from_config
            if prediction is None:
                raise InvalidOption(f"{self._source_name} with prediction_type={c.prediction_type!r}: EDM "
                                    "preconditioning is defined for 'epsilon' and 'v_prediction'")
            return VE(float(c.sigma_min), float(c.sigma_max), "edm"), prediction, space
        if space == "vp":
            # the class's own float32 table (any beta schedule it knows, its zero-SNR rescaling)
            return VPDiscrete(self._ref.alphas_cumprod.to(torch.float64)), prediction_from_config(config), space
        native, prediction = native_from_config(config, mu_later=True)
        return native, prediction, space

    def _check_schedule_options(self, options) -> None:
        """schedule_options name options of the schedule this scheduler builds; refused where none is built (the
        source class's own grid, a fitted label's sigmas, a flow config's default grid) and for names the schedule
        does not take."""
        if options is None:
            return
        if not isinstance(options, Mapping):
            raise InvalidType(f"schedule_options must be a dict of the schedule's options, got {options!r}")
        if not options:
            return
        keys = ", ".join(map(repr, options))
        label, name, cfg = self.label, self._schedule_name, self.config
        if label is not None and label.sigmas is not None:
            raise InvalidOption(f"schedule_options ({keys}) cannot apply: {label.label!r} runs on its own fitted "
                                "sigmas; leave schedule_options out")
        if name is None:
            if self._source is not None:
                raise InvalidOption(f"schedule_options ({keys}) apply to a registry schedule, but schedule=None runs "
                                    f"{self._source_name}'s own timesteps and sigmas, which they do not change; pass "
                                    "schedule=<name> (e.g. 'karras') with them, or leave schedule_options out")
            if self.space == "flow":
                raise InvalidOption(f"schedule_options ({keys}) apply to a registry schedule, but a flow config with "
                                    "schedule=None runs FlowMatchEulerDiscreteScheduler's grid; pass schedule='flow' "
                                    "(or another schedule) with them, or leave schedule_options out")
            name = ("karras" if cfg.use_karras_sigmas else "exponential" if cfg.use_exponential_sigmas
                    else cfg.timestep_spacing)
        canonical = names.resolve_schedule(name, native=self.native)[0]  # a tool's name too ("Beta", "comfyui:...")
        valid = set(schedule_option_names(schedules.SCHEDULES.get(canonical))) | {"sigma_min", "sigma_max"}
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise InvalidOption(f"schedule {canonical!r} has no option {', '.join(closest(k, valid) for k in unknown)}"
                                f"; its options are: {', '.join(sorted(valid))}")

    @staticmethod
    def _order(spec) -> int:
        return int(spec.nfe_per_step) if float(spec.nfe_per_step).is_integer() else 1

    def _check_options(self, spec, options: dict) -> None:
        check_options(spec, options)  # names and values, before the pipeline's first model call

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at model call ``begin_index`` (img2img: ``t_start · order``); it must start a step."""
        self._set_begin(begin_index)
        self._begin_given = True  # add_noise then uses it, as the source classes do

    def _set_begin(self, begin_index: int) -> None:
        if self._plan is None:
            raise Unavailable("call set_timesteps before set_begin_index")
        calls = len(self._plan.calls)
        integral = isinstance(begin_index, numbers.Integral) and not isinstance(begin_index, bool)
        if integral and begin_index == calls:
            # an empty run, as diffusers' classes take it: SDXL's refiner (denoising_start) where no timestep lies
            # below its cutoff returns the latents unchanged; SD's img2img (strength × steps < 1) next calls
            # add_noise with no timestep, refused there (_no_step_left)
            self._begin_index = calls
            self._run_plan = _Plan(self._plan.schedule[-1:], [], [], 0)
            self._run_options = self._options
            return
        if integral and begin_index > calls:
            raise InvalidInput(self._no_step_left(f"set_begin_index({int(begin_index)}) starts after the last of this "
                                                  f"run's {calls} timesteps"))
        begin_index = _check_int("begin_index", begin_index, 0, len(self._plan.calls) - 1,
                                 "pass the index of a timestep of this run")
        if begin_index > 0 and self.label is not None and self.label.source == "fitted":
            from ..fitted.solver import late_start_refusal

            raise InvalidInput(late_start_refusal(repr(self.label.label), f"set_begin_index({begin_index}) (img2img "
                                                  "/ inpaint with strength < 1)"))
        if begin_index == 0:
            if self._noise_refusal is not None:
                raise self._noise_refusal
            self._begin_index = 0
            self._run_plan = self._plan
            self._run_options = self._options
            return
        if self._same and self._source.restart:
            raise InvalidOption(self._source.restart)
        if begin_index >= len(self._plan.evals):
            # a start at the source's idle calls (its zero-length last steps): the latent stays as it is
            self._begin_index = begin_index
            self._run_plan = _Plan(self._plan.schedule[-1:], [], [], len(self._plan.calls) - begin_index)
            self._run_options = self._options
            return
        regrouped = self._regrouped()
        if not regrouped and begin_index not in self._plan.step_starts:
            raise InvalidInput(f"begin_index {begin_index} is not the first model call of a step of "
                               f"{self.spec.name!r} (steps start at {self._plan.step_starts})")
        if self._same:
            # the source's own run from that step (its warm-up restarts there, as the class's does)
            step = begin_index if regrouped else self._plan.step_starts.index(begin_index)
            _, options, schedule = self._source_run(step)
            options = drop_unread(self.spec.name, {**options, **self._overrides}, self.spec.options,
                                  keep=self._asked_options())
        else:
            step = self._plan.step_starts.index(begin_index)
            options, schedule = self._options, self._plan.schedule[step:]
        refusal = self._named_noise_refusal(self.spec, options, list(schedule))
        if refusal is not None:
            raise refusal
        tail = _plan(self.spec.fn, schedule, options, self._supports_inf, self._noisy, self._plan.idle)
        full = self._plan.calls[begin_index:]
        if len(tail.calls) != len(full) or any(not math.isclose(a, b, rel_tol=1e-9) for a, b in zip(tail.calls, full)):
            raise InvalidInput(f"{self.spec.name!r} evaluates different sigmas when started at step {step} "
                               "(its steps depend on the step count); it cannot start at a later timestep")
        self._begin_index = begin_index
        self._run_plan = tail
        self._run_options = options

    def _no_step_left(self, lead: str) -> str:
        """Why a run with no denoising step left is refused where it would return an empty batch (img2img)."""
        n = self.num_inference_steps
        return (f"{lead}: no denoising step is left. An img2img / inpaint pipeline passes that when "
                f"int(num_inference_steps × strength) = 0, i.e. strength × num_inference_steps < 1 (here "
                f"num_inference_steps = {n}; diffusers' StableDiffusionImg2ImgPipeline then returns an empty batch). "
                f"Raise strength to at least 1/num_inference_steps (≥ {math.ceil(1000 / n) / 1000:g} here), or "
                "num_inference_steps to at least 1/strength")

    def _empty_run(self) -> bool:
        """set_begin_index(<the run's number of model calls>): a run with no step (its latents stay as they are)."""
        return self._plan is not None and self._begin_index is not None and self._begin_index >= len(self._plan.calls)

    def _refuse_in_empty_run(self, where: str) -> None:
        if self._empty_run():
            raise Unavailable(f"{where} after set_begin_index({self._begin_index}), which starts after the last of "
                              f"this run's {len(self._plan.calls)} timesteps: there is no step left (a pipeline "
                              "then makes no model call and returns the latents as they are); call set_timesteps, "
                              "and set_begin_index with the index of a timestep of the run, for a run with steps")

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The model's input: the latent itself (native coordinates), or x/√(σ² + 1) (EDM: c_in·x) where the
        source class keeps VE latents."""
        if self._plan is None:
            if self.latents == "native":
                return sample
            raise Unavailable("call set_timesteps before scale_model_input")
        if timestep is not None:
            self._check_timestep("scale_model_input()", timestep)
        self._refuse_in_empty_run("scale_model_input()")
        if self._begin_index is None and timestep is not None and (
                self.latents != "native" or self._source_name in sources.STEP_INDEX_IN_SCALE_MODEL_INPUT
                or self._noise_refusal is not None):  # where the run starts, before its model call
            self._start_from(timestep)
        if self._step_index is None and self._source_name in sources.STEP_INDEX_IN_SCALE_MODEL_INPUT:
            self._step_index = self._begin_index  # the class sets its step index here (step_index == begin)
        if not self._denoised and self._noisy and self.config.seed is not None:
            # the scheduler's seed against the batch (seed + k for item k), before the run's first model call: step()
            # would refuse a seed without room for the batch after it
            seeds_mod.resolve_seeds(self.config.seed, sample.shape[0])
        if self.latents == "native":
            return sample
        sigma = self._current_sigma()
        # in the source class's own float arithmetic (a float32 sigma), so the model sees the same input
        s = torch.tensor(sigma, dtype=torch.float64 if sample.dtype == torch.float64 else torch.float32)
        if self.space == "edm":
            return sample * (1 / ((s**2 + self._sigma_data**2) ** 0.5))
        return sample / ((s**2 + 1) ** 0.5)

    def _current_sigma(self) -> float:
        plan = self._run_plan
        k = len(self._denoised)
        if self._begin_index is None:
            plan = self._plan
        return plan.calls[min(k, len(plan.calls) - 1)]

    # ------------------------------------------------------------------------------------------------
    # schedule

    def _reset(self):
        # the run's state is rebound, never changed in place (lists, dicts, the noise object, the source class's
        # instance: copy-on-write), as diffusers' classes rebind theirs: code that saves and restores the scheduler's
        # __dict__ (StableDiffusionPanoramaPipeline keeps one per view) gets the run it saved
        self._plan = None
        self._noise_refusal = None
        self._run_plan = None
        self._begin_index = None
        self._begin_given = False
        self._step_index = None
        self._denoised = []
        self._injected = {}
        self._x_start = None
        self._last_prev = self._last_exact = None
        self._noise = None
        self._seeds = None
        self._eta = None
        self._done = False
        self._init_noise_sigma = 1.0
        self._supports_inf = True
        self._same = False
        self._options = {}
        self._overrides = {}
        self._run_options = {}
        self._noisy = False
        self._grid = None
        self._call_times: list[float] = []
        self._noise_table: list[float] | None = None  # the source class's σ table, where its own run is replayed
        self._draw_counts: dict[tuple[int, float], int] = {}  # _source_draws, for this run's source timesteps

    @property
    def _sigma_data(self) -> float:
        return float(self._ref.config.sigma_data)

    def _uses_source_grid(self) -> bool:
        return (self._source is not None and self._schedule_name is None
                and (self.label is None or self.label.sigmas is None))

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas=None, timesteps=None, mu: float | None = None, **kwargs):
        """Plan a fresh run: the sampling schedule, every model-call sigma, and their model times.

        With a source class, its own ``set_timesteps`` builds the schedule (``sigmas``, ``timesteps``, ``mu`` and
        any other argument it takes are passed to it). Otherwise ``sigmas`` are VE sigmas including the final one
        for VP configs (diffusers' Euler convention), unshifted flow times t for flow configs (0 is appended);
        ``timesteps`` are model times (0 is appended); ``mu`` is the dynamic flow shift.
        """
        if num_inference_steps is not None:
            num_inference_steps = _check_int("num_inference_steps", num_inference_steps, 1, MAX_INFERENCE_STEPS,
                                             "pass the number of denoising steps, e.g. 20")
        elif sigmas is None and timesteps is None:
            raise InvalidInput("set_timesteps needs num_inference_steps (e.g. 20), sigmas or timesteps")
        self._follow_config()
        self._reset()
        if self._uses_source_grid():
            schedule, times, per_call = self._from_source(num_inference_steps, sigmas, timesteps, mu, kwargs)
        else:
            if kwargs:
                raise InvalidOption(f"set_timesteps got unexpected argument(s) {sorted(kwargs)}")
            schedule, times, per_call = self._from_registry(num_inference_steps, sigmas, timesteps, mu)
        self.num_inference_steps = (self._ref.num_inference_steps if self._same and self._ref is not None
                                    else len(schedule) - 1)
        self.timesteps = times.to(device)
        self._call_times = times.detach().to("cpu", torch.float64).tolist()
        if len(self._call_times) != len(self._plan.calls):
            raise Unavailable(f"{len(self._call_times)} timesteps for {len(self._plan.calls)} model calls; this is a "
                              "bug in samplers.interop.diffusers_scheduler, please report it")
        self.sigmas = per_call.to(device) if self._source_name in sources.SIGMAS_ON_DEVICE else per_call
        self.schedule_sigmas = torch.tensor(schedule, dtype=torch.float64)  # what the sampler steps on (VE σ)
        self._begin_index = None
        self._run_plan = self._plan
        self._run_options = self._options

    def _plan_run(self, spec, schedule: list[float], options: dict, idle: int = 0) -> None:
        if options.get("noise_sampler") in {*noise_mod.A1111_KINDS, "comfyui"}:
            # an A1111 / ComfyUI label's draws continue the generators of that tool's starting noise, which a diffusers
            # pipeline does not draw: its generator draws the noise, as for the registry's name ("Euler a",
            # "comfyui:euler_ancestral" run EulerAncestralDiscreteScheduler's image)
            options = {k: v for k, v in options.items() if k != "noise_sampler"}
        if spec.name == "tcd":  # on this model's timestep table (the class's own run has it: algorithm_tcd)
            options = ancestral.with_model_table(
                options, self.native, self.space, " (a flow or EDM config); pass sampler_options={'native': "
                "samplers.VPDiscrete(...)} to run it on one anyway, or use lcm (or euler_ancestral) for a "
                "consistency-style stochastic run")
        self._check_options(spec, options)
        self.spec = spec
        self.order = self._order(spec)
        self._supports_inf = self.prediction not in ("eps", "score", "edm")  # as before for EDM epsilon
        self._noisy = "noise_sampler" in spec.options
        self._options = options
        # a named noise (a label's Brownian tree) that cannot be drawn on the whole schedule: refused where a run starts
        # at its first step (set_begin_index(0), or the first timestep given to scale_model_input / step), before the
        # model call there where the pipeline says where it starts; an img2img / inpaint run starts later, on a tail
        # the noise is checked on then (_set_begin)
        self._noise_refusal = self._named_noise_refusal(spec, options, schedule)
        self._plan = _plan(spec.fn, schedule, options, self._supports_inf, self._noisy, idle)

    def _named_noise_refusal(self, spec, options: dict, schedule: list[float]) -> InvalidInput | None:
        """The refusal of a run of ``spec`` on ``schedule`` whose named ``noise_sampler`` cannot be drawn there (a
        Brownian tree from σ = inf), naming this scheduler's fix; None where it can (or no name is given)."""
        kind = options.get("noise_sampler")
        if not (self._noisy and isinstance(kind, str)):
            return None
        try:
            noise_mod.for_run(kind, None, torch.empty((1,), device="meta"), schedule, draws=draws_noise(spec, options))
        except InvalidInput as exc:
            who = repr(self.label.label) if self.label is not None else spec.name
            reason = str(exc).split(";")[0]  # its fixes are noise_sampler=, which this scheduler does not take
            return InvalidInput(f"{who} draws noise_sampler={kind!r} on this schedule, which it cannot: {reason}; in "
                                f"this scheduler pass sampler={spec.name!r} (its seeded noise), or a schedule that "
                                "starts at a finite σ (img2img / inpaint, which start below σ = inf, run)")
        return None

    def _from_source(self, n, sigmas, timesteps, mu, kwargs):
        # a copy of the source class's instance plans this run (its set_timesteps changes its tables, some in place):
        # the instance a copy of this scheduler's __dict__ holds keeps the run it planned
        ref, name = copy.deepcopy(self._ref), self._source_name
        self._ref = ref
        passed = {k: v for k, v in dict(sigmas=sigmas, timesteps=timesteps, mu=mu, **kwargs).items() if v is not None}
        total = ref.config.num_train_timesteps
        # a discrete VP class: its timesteps index the training table (not when they are ¼·ln σ: an EDM class, or
        # Euler's timestep_type="continuous" with v_prediction, Stable Video Diffusion's, as diffusers switches)
        continuous = (ref.config.get("timestep_type", "discrete") == "continuous"
                      and ref.config.get("prediction_type") == "v_prediction")
        indexed = hasattr(ref, "alphas_cumprod") and self.space != "edm" and not continuous
        self._check_taken(name, passed)
        self._check_passed(name, sigmas, timesteps, total, indexed)
        given = _call(n, passed)
        if mu is not None:
            sources.check_mu(ref, name, given)
        sources.check_step_counts(ref, name, passed, given)
        try:
            ref.set_timesteps(n, device="cpu", **passed)
        except (TypeError, AttributeError) as exc:
            raise self._set_timesteps_failure(name, n, passed, exc) from None
        except (ValueError, AssertionError, IndexError, RuntimeError, ArithmeticError) as exc:
            reason = str(exc) or f"a bare {type(exc).__name__}, without a message"
            raise InvalidInput(f"{name}.set_timesteps({given}) refused: {reason}") from None
        sources.check_shift_terminal(ref, name, given)
        if isinstance(getattr(ref, "sigmas", None), torch.Tensor):  # the σ every run on the class's grid steps on
            sources.check_finite(ref, name, given, "sigmas", ref.sigmas, math.isnan,
                                 "Use another step count, or another scheduler class's config")
        sources.check_sigma_order(ref, name)
        if indexed and ((ref.timesteps < 0).any() or (ref.timesteps > total - 1).any()):
            low, high = float(ref.timesteps.min()), float(ref.timesteps.max())
            if n is None:  # the sigmas passed (the timesteps passed are checked above)
                raise InvalidInput(f"{name}'s timesteps for the sigmas passed run outside the {total} training "
                                   f"timesteps ({low:g} … {high:g}); pass sigmas within the model's range")
            raise InvalidInput(f"{name}'s timesteps for {n} steps run outside the {total} training timesteps "
                               f"({low:g} … {high:g}: steps_offset = {ref.config.get('steps_offset', 0)}?); use "
                               "fewer steps or a smaller steps_offset")
        grid = self._grid = self._source.grid(ref, self.space)
        if self.space == "flow" and mu is not None:
            self.native = native_from_config(self._source_config, mu=mu, mu_later=True)[0]
        exact = self.config.exact
        if grid.jumps is not None and not exact:
            raise InvalidOption(f"{grid.jumps}: no sampler run reproduces that. Use "
                                f"{sources.consistent_spacing(ref.config.num_train_timesteps)}, or exact=True for a "
                                "run whose steps end where its next model call is (a new image)")
        label = self.label
        try:
            base, base_options, schedule = self._source_run(0)
        except sources.SourceRunRefused as refused:
            if label is None or label.sampler == refused.algorithm:
                raise  # the class's own run was asked for
            base, base_options, schedule = refused.algorithm, {}, None  # another sampler, on the class's grid
        self._same = label is None or label.sampler == base
        run = base if label is None else label.sampler
        options = dict(base_options) if self._same else {}
        overrides = self._asked_options()
        if self._same:
            overrides = {k: v for k, v in overrides.items() if options.get(k, object()) != v}
        else:
            schedule = self._grid_schedule(exact)  # another sampler steps on the class's own grid
        self._overrides = overrides
        options.update(overrides)
        spec = SAMPLERS.get(run)
        # the config's options that the run does not read are left out, not refused (the class takes them whatever
        # its other settings): DEIS-tAB asked on a DEIS config (comfyui:deis) has its own weights, not the class's
        # float32 ρAB ones; a solver_order=1 config's lower_order_final lowers nothing
        options = drop_unread(run, options, spec.options, keep=self._asked_options())
        if spec.host_sync:
            raise InvalidOption(_host_sync_refusal(spec.name))
        if self.latents == "ve" and math.isinf(schedule[0]):
            raise InvalidOption(f"{name} keeps VE latents (x = x0 + σ·n), which cannot start at σ = inf")
        why = infinite_sigma_refusal(self.prediction, self.native) if math.isinf(schedule[0]) else None
        if why is not None:  # worded by the config: the run's own refusal names a fix no config can set
            raise InvalidOption(sources.zero_snr_refusal(ref, name, why))
        self._plan_run(spec, schedule, options, 0 if exact else grid.idle)
        if self._same:
            self.order = int(type(ref).order)  # pipelines index timesteps by t_start · order (img2img)
        evals = self._plan.calls
        if exact:
            times = self.native.time(torch.tensor(evals, dtype=torch.float64)).to(torch.float32)
        elif self._same and not overrides:
            if len(evals) != len(grid.times):
                raise Unavailable(f"{spec.name!r} plans {len(evals)} model calls on {name}'s {len(grid.times)} "
                                  "timesteps; this is a bug in samplers.interop.diffusers_sources, please report it")
            times = grid.times.detach().clone()
        else:
            at = dict(zip(grid.sigmas, grid.step_times))
            fallback = self.native.time(torch.tensor(evals, dtype=torch.float64)).tolist()
            times = torch.tensor([at.get(s, f) for s, f in zip(evals, fallback)], dtype=torch.float32)
        if not exact:  # the class's own timesteps, which the pipeline hands the model
            sources.check_finite(ref, name, given, "timesteps", times, lambda v: not math.isfinite(v),
                                 "Pass exact=True (the same method, each model call at the timestep of its σ computed "
                                 "in float64: another image than diffusers' NaN one), another step count, or another "
                                 "scheduler class's config")
        if self._same and not exact and not overrides and getattr(ref, "sigmas", None) is not None:
            per_call = ref.sigmas.detach().clone()
            # add_noise reads σ from this table by step index (KDPM2's odd entries hold σ_{i+1}, not the
            # interpolated σ it evaluates at): keep the class's values, as VE sigmas
            table = per_call.to(torch.float64)
            self._noise_table = (table / (1 - table) if self.space == "flow" else table).tolist()
        else:
            per_call = self._per_call_sigmas(schedule)
        init = self.config.initial_noise
        # the source class's own value, of its own type (a 0-d tensor for the Euler family, a float for others)
        own = getattr(ref, "init_noise_sigma", 1.0)
        self._init_noise_sigma = (self._start_scale(schedule[0], init) if init is not None
                                  else own.detach().clone() if isinstance(own, torch.Tensor) else float(own))
        return schedule, times, per_call

    def _check_taken(self, name: str, passed: dict) -> None:
        """Every argument passed is a parameter of the source class's ``set_timesteps`` (EDMDPMSolverMultistep's takes
        no sigmas), refused by name before the values are checked by rules the class would never apply."""
        import inspect

        params = inspect.signature(type(self._ref).set_timesteps).parameters
        unknown = sorted(k for k in passed if k not in params)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            taken = [k for k in params if k not in ("self", "device")]
            raise InvalidOption(f"{name}.set_timesteps does not take {unknown}, as diffusers' class does not (a "
                                f"TypeError there): it takes {', '.join(taken)} (num_inference_steps alone for the "
                                "class's own grid)")

    def _set_timesteps_failure(self, name: str, n, passed: dict, exc: Exception) -> SamplersError:
        """The error for a TypeError / AttributeError raised inside the source class's ``set_timesteps``, whose
        parameters the arguments are (:meth:`_check_taken`): diffusers' class itself fails on the input (a list where
        it does array arithmetic, an argument its branch for this config never reads), with the form of the values
        it takes where one does (checked on a fresh instance), else the step count."""
        values = {k: v for k, v in passed.items() if _form_of(v) is not None}
        given = ", ".join(f"{k} ({_form_of(v)})" if k in values else f"{k}={v!r}" for k, v in passed.items())
        message = f"diffusers' {name}.set_timesteps itself fails on {given}: {type(exc).__name__}: {exc}"
        unread = [why for why in (sources.unread(name, k, self._source_config) for k in passed) if why]
        if unread:
            message += f" ({'; '.join(unread)})"
        for form, convert in _VALUE_FORMS.items():
            others = {k: convert(v) for k, v in values.items() if _form_of(v) != form}
            if others and self._source_takes(n, {**passed, **others}):
                return InvalidInput(f"{message}; pass {', '.join(others)} as {form}, which it takes")
        steps = next((torch.as_tensor(values[k]).numel() for k in ("sigmas", "timesteps") if k in values), None)
        rest = {k: v for k, v in passed.items() if k not in ("sigmas", "timesteps")}
        if steps is not None and n is None and self._source_takes(steps, rest):
            return InvalidInput(f"{message}. There is no diffusers run of them to reproduce; pass "
                                f"num_inference_steps={steps} instead (the class's own grid)")
        return InvalidInput(f"{message}. There is no diffusers run of this input to reproduce")

    def _source_takes(self, n, passed: dict) -> bool:
        """Whether a fresh instance of the source class runs ``set_timesteps(n, **passed)`` to finite sigmas."""
        ref = self._reference()
        try:
            ref.set_timesteps(n, device="cpu", **passed)
        except Exception:  # noqa: BLE001 - any failure inside diffusers' class: it does not take this input
            return False
        sigmas = getattr(ref, "sigmas", None)  # (DDPM, DDIM, LCM, TCD, PNDM have none: their timesteps)
        return bool(torch.isfinite(torch.as_tensor(sigmas if sigmas is not None else ref.timesteps)).all())

    def _grid_schedule(self, exact: bool) -> list[float]:
        """The step boundaries of the source class's grid (its consistent run when ``exact``), ending at σ = 0
        when ``exact``."""
        grid = self._grid
        schedule = list(grid.exact_sigmas if grid.jumps is not None else grid.sigmas)
        if exact and schedule[-1] > 0:
            schedule.append(0.0)  # the final step to the data that the source class skips
        return schedule

    def _source_run(self, begin: int) -> tuple[str, dict, list[float]]:
        """(sampler, options, schedule) of the source class's run from grid step ``begin``."""
        exact = self.config.exact
        sig = self._grid_schedule(False)
        name, options = self._source.algorithm(self._ref, begin)
        schedule = (self._source.schedule(self._ref, sig, begin) if self._source.schedule is not None
                    else sig[begin:])
        if exact and options.get("weights") == "diffusers":
            options = {k: v for k, v in options.items() if k != "weights"}  # the method's weights, not its rounding
        if exact and schedule[-1] > 0:
            schedule = schedule + [0.0]
            if isinstance(options.get("step_r"), tuple):
                options = {**options, "step_r": options["step_r"] + (None,)}
        return name, options, schedule

    def _from_registry(self, n, sigmas, timesteps, mu):
        if self._source is None:
            self.native = self._native_for(mu)
        elif self.space == "flow" and mu is not None:
            self.native = native_from_config(self._source_config, mu=mu, mu_later=True)[0]
        schedule = self._registry_schedule(n, sigmas, timesteps)
        label = self.label
        run = label.sampler if label is not None else (
            self._source.algorithm(self._nominal_ref())[0] if self._source is not None else "euler")
        options = self._asked_options()
        self._same = False
        spec = SAMPLERS.get(run)
        if self.latents == "ve" and math.isinf(schedule[0]):
            raise InvalidOption(f"{self._source_name} keeps VE latents (x = x0 + σ·n), which cannot start at "
                                "σ = inf; start the schedule at a finite sigma")
        self._plan_run(spec, schedule, options)
        evals = torch.tensor(self._plan.evals, dtype=torch.float64)
        times = self.native.time(evals).to(torch.float32)
        self._init_noise_sigma = self._start_scale(schedule[0], self.config.initial_noise or "unit")
        return schedule, times, self._per_call_sigmas(schedule)

    def _check_passed(self, name: str, sigmas, timesteps, total: int, indexed: bool) -> None:
        """The ``sigmas`` / ``timesteps`` a pipeline passed to the replaced class's set_timesteps (``retrieve_timesteps``),
        in the caller's own terms before the class converts them: each within its range and strictly decreasing, the
        refusal naming the value passed (diffusers' classes clamp a timestep outside the table, or step an ascending
        or repeated list, where no sampler run reproduces the image)."""
        if timesteps is not None and indexed:
            self._check_given_range("timesteps", self._given_values("timesteps", timesteps), 0.0, float(total - 1),
                                    f"{name}'s training timesteps, 0 … {total - 1}")
        elif timesteps is not None:
            self._check_given_range("timesteps", self._given_values("timesteps", timesteps), -math.inf, math.inf,
                                    "finite model times")
        if sigmas is not None and name in sources.SIGMAS_AS_RAMP:
            self._check_ramp(name, sigmas)
        elif sigmas is not None and self.space == "flow":
            self._check_given_range("sigmas", self._given_values("sigmas", sigmas), 0.0, 1.0,
                                    f"{name}'s flow times t (1 is pure noise; the class appends the final 0)")
        elif sigmas is not None:
            self._check_given_range("sigmas", self._given_values("sigmas", sigmas), 0.0, math.inf,
                                    "noise levels σ ≥ 0")

    def _check_ramp(self, name: str, sigmas) -> None:
        """``sigmas`` passed to a class that reads them as a ramp (``sources.SIGMAS_AS_RAMP``: EDMEuler): each within
        [0, 1], and strictly increasing where its sigma_schedule reads the values ('karras'; 'exponential' reads the
        ramp's length only); the refusal names the value passed (diffusers maps noise levels such as [80, 20, 5]
        through its Karras formula to σ = −2.6e14 … and runs that)."""
        values = self._given_values("sigmas", sigmas).tolist()
        schedule = self._ref.config.get("sigma_schedule")
        what = (f"{name}'s sigmas= is a ramp in [0, 1] that its sigma_schedule={schedule!r} maps to noise levels "
                "(0 is sigma_max, 1 is sigma_min), not the noise levels themselves")
        fix = "pass a ramp, e.g. torch.linspace(0, 1, n) (what num_inference_steps=n runs), or num_inference_steps"
        for i, v in enumerate(values):
            if not 0 <= v <= 1:  # nan included
                raise InvalidInput(f"sigmas[{i}] = {v:g} is outside [0, 1]: {what}; {fix}")
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(values, values[1:])) if not b > a]
        if bad and schedule == "karras":
            i, a, b = bad[0]
            raise InvalidInput(f"sigmas must be strictly increasing (from 0, sigma_max; each value once), but "
                               f"sigmas[{i}] = {a:g} and sigmas[{i + 1}] = {b:g}: {what}; {fix}")

    @staticmethod
    def _given_values(name: str, values) -> torch.Tensor:
        """``sigmas`` / ``timesteps`` passed to set_timesteps, as a float64 vector (at least one value)."""
        try:
            out = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise InvalidType(f"set_timesteps({name}=...) takes a list, array or tensor of numbers, got "
                              f"{values!r}") from None
        if out.numel() == 0:
            raise InvalidInput(f"set_timesteps got an empty {name}; pass at least one value")
        return out

    def _check_given_count(self, n, name: str, steps: int) -> None:
        """num_inference_steps with sigmas / timesteps: diffusers' rules, never one of them dropped silently."""
        if n is None:
            return
        if self.space != "flow":  # EulerDiscreteScheduler: "Can only pass one of num_inference_steps or ..."
            raise InvalidInput(f"set_timesteps got num_inference_steps={n} and {name} (which fix {steps} steps); "
                               f"pass one of them, as diffusers' schedulers require")
        if n != steps:  # FlowMatchEulerDiscreteScheduler: they must agree
            raise InvalidInput(f"set_timesteps got num_inference_steps={n} but {steps} {name}; they must agree "
                               f"(as in FlowMatchEulerDiscreteScheduler): pass num_inference_steps={steps} or leave "
                               "it out")

    @staticmethod
    def _check_given_range(name: str, values: torch.Tensor, low: float, high: float, what: str,
                           low_open: bool = False) -> None:
        """Each value finite and within [low, high] ((low, high] with ``low_open``), strictly decreasing."""
        bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        for i, v in enumerate(values.tolist()):
            if math.isnan(v):
                raise InvalidInput(f"{name}[{i}] = nan is not a number; {name} are {what}")
            if v > high or v < low or (low_open and v == low):
                raise InvalidInput(f"{name}[{i}] = {v:g} is outside {bound}, the range of {what} (refused: diffusers' "
                                   "Euler clamps such a value and others extrapolate it, another noise level than the "
                                   "one passed); pass values within that range")
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(values.tolist(), values.tolist()[1:])) if not b < a]
        if bad:
            i, a, b = bad[0]
            raise InvalidInput(f"{name} must be strictly decreasing (the noisiest first), but {name}[{i}] = {a:g} and "
                               f"{name}[{i + 1}] = {b:g}; list each once, from the noisiest")

    def _per_call_sigmas(self, schedule) -> torch.Tensor:
        family = torch.tensor(self._plan.evals + schedule[-1:], dtype=torch.float64)
        if self.space == "flow":
            family = flow_t(family)  # FlowMatch schedulers expose t, not the VE sigma
        return family.to(torch.float32)

    def _start_scale(self, sigma_0: float, kind: str) -> float:
        """init_noise_sigma in the pipeline's coordinates: 'unit' starts at x_t = n, 'sigma' at x = σ₀·n (VE), at the
        schedule's first σ.

        Native latents are the latent the model is evaluated at, x_t = a(σ_call)·x with σ_call the σ of the run's
        first model call: σ₀ itself, but for a fitted solver that tells the model another σ than its node
        (``model_sigmas``), whose start is that of ``samplers.sample`` (x = σ₀·n, or x_t(σ₀) = n) as the model sees
        it, scaled by a(σ_call)/a(σ₀)."""
        if math.isinf(sigma_0):
            return 1.0
        if self.latents == "ve":
            return sigma_0 if kind == "sigma" else math.sqrt(sigma_0 * sigma_0 + 1)
        call = self._plan.calls[0] if self._plan is not None and self._plan.calls else sigma_0
        a_call = float(self.native.coefficients(torch.tensor(call, dtype=torch.float64))[0])
        a_0, b_0 = (float(v) for v in self.native.coefficients(torch.tensor(sigma_0, dtype=torch.float64)))
        if call == sigma_0:
            return 1.0 if kind == "unit" else b_0
        return a_call / a_0 if kind == "unit" else a_call * sigma_0

    def _native_for(self, mu):
        cfg = self.config
        native, _ = native_from_config(cfg, mu=mu, mu_later=True)
        if isinstance(native, RectifiedFlow) and cfg.use_dynamic_shifting and mu is None:
            raise InvalidInput("this flow config uses dynamic shifting: pass mu= to set_timesteps "
                               "(diffusers' Flux/SD3 pipelines do)")
        return native

    def _flux_default(self, sigmas) -> int | None:
        """n where ``sigmas`` on a flow config are FluxPipeline's own when it is given none, np.linspace(1, 1/n, n)
        (to 1e-6): a step count, not a schedule; else None."""
        if sigmas is None or self.space != "flow":
            return None
        given = self._given_values("sigmas", sigmas)
        m = len(given)
        default = torch.linspace(1.0, 1.0 / m, m, dtype=torch.float64)
        return m if torch.allclose(given, default, rtol=0, atol=1e-6) else None

    def _registry_schedule(self, n, sigmas, timesteps) -> list[float]:
        """The schedule without a source class's grid: a fitted label's own sigmas, the caller's, or a registry
        schedule on the model's noise schedule."""
        native, flow = self.native, self.space == "flow"
        label = self.label
        if label is not None and label.sigmas is not None:
            fixed = [float(s) for s in label.sigmas]
            m = self._flux_default(sigmas) if timesteps is None else None
            if m is not None:  # FluxPipeline passes np.linspace(1, 1/n, n) whatever the scheduler: the step count
                self._check_given_count(n, "sigmas", m)
                n, sigmas = m, None
            if sigmas is not None or timesteps is not None:
                raise InvalidOption(f"{label.label!r} fixes its own sigmas; set_timesteps cannot take others")
            if n is not None and n != len(fixed) - 1:
                raise InvalidInput(f"{label.label!r} runs exactly {len(fixed) - 1} steps on its fitted sigmas, but "
                                   f"num_inference_steps={n} was asked for; pass num_inference_steps="
                                   f"{len(fixed) - 1}")
            return fixed
        if sigmas is not None and timesteps is not None:
            raise InvalidInput("pass sigmas or timesteps, not both")
        if (sigmas is not None or timesteps is not None) and self._schedule_chosen:
            m = self._flux_default(sigmas) if timesteps is None else None
            if m is not None:
                # FluxPipeline's own sigmas when it is given none, np.linspace(1, 1/n, n): only the step count, as
                # diffusers' FlowMatchEulerDiscreteScheduler with use_karras_sigmas reshapes them
                self._check_given_count(n, "sigmas", m)
                n, sigmas = m, None
            else:
                raise InvalidOption(f"this scheduler runs the {self._schedule_name!r} schedule (chosen when it was "
                                    f"made), and set_timesteps got {'sigmas' if sigmas is not None else 'timesteps'} "
                                    f"of its own: one of them would be dropped. Leave schedule out to run the given "
                                    f"ones, or stop passing them to the pipeline to run {self._schedule_name!r}")
        if sigmas is not None:
            values = self._given_values("sigmas", sigmas)
            self._check_given_count(n, "sigmas", len(values) if flow else len(values) - 1)
            if flow:
                # diffusers' flow convention: unshifted t for each step, shifted here, then t = 0 appended.
                self._check_given_range("sigmas", values, 0.0, 1.0, "flow times t (1 is pure noise)",
                                        low_open=True)
                return self._flow_sigmas(values, native.shift).tolist() + [0.0]
            return values.tolist()  # VE sigmas, the last one the final sigma (diffusers' Euler convention)
        if timesteps is not None:
            t = self._given_values("timesteps", timesteps)
            self._check_given_count(n, "timesteps", len(t))
            if isinstance(native, VPDiscrete):
                self._check_given_range("timesteps", t, 0.0, float(len(native.alphas_cumprod) - 1),
                                        "the model's training timesteps")
            elif isinstance(native, RectifiedFlow):
                self._check_given_range("timesteps", t, 0.0, float(native.multiplier),
                                        "the flow model's times t·num_train_timesteps", low_open=True)
            else:
                self._check_given_range("timesteps", t, -math.inf, math.inf, "finite model times")
            return native.sigma_of_time(t).tolist() + [0.0]
        cfg = self.config
        options = dict(cfg.schedule_options or {})
        name = self._schedule_name
        if name is None:
            if flow:
                if cfg.use_karras_sigmas or cfg.use_exponential_sigmas:
                    raise InvalidOption("flow config with use_karras/exponential_sigmas: pass schedule='karras' "
                                        "(with schedule_options sigma_max) explicitly")
                # FlowMatchEulerDiscreteScheduler's grid: t from 1 to its (shifted) t_min, then shifted.
                t_min = 1.0 / cfg.num_train_timesteps
                if not cfg.use_dynamic_shifting:
                    t_min = native.shift * t_min / (1 + (native.shift - 1) * t_min)
                t = torch.linspace(1.0, t_min, n, dtype=torch.float64)
                return self._flow_sigmas(t, native.shift).tolist() + [0.0]
            if cfg.use_beta_sigmas:
                raise InvalidOption("use_beta_sigmas=True without a source scheduler class: pass schedule=<name>")
            name = ("karras" if cfg.use_karras_sigmas else "exponential" if cfg.use_exponential_sigmas
                    else cfg.timestep_spacing)
            if name == "leading":
                options.setdefault("steps_offset", cfg.steps_offset)
        # a tool's schedule name ("Beta", "comfyui:simple") brings its tool's options; the caller's come on top
        asked = name
        name, implied = names.resolve_schedule(name, native=native)
        discard = label is not None and label.discard_penultimate_sigma  # A1111 / KSampler: one step more, dropped
        try:
            values = schedules.get_sigmas(name, n + discard, native=native, **{**implied, **options})
        except InvalidInput as exc:
            if label is None or self._schedule_name is not label.schedule or self.config.schedule is not None:
                raise
            # the label's own schedule (it names it, or its tool's automatic one) on a model it cannot be built for:
            # the fixes in this scheduler's arguments (get_sigmas' sigma_max= is its schedule_options)
            reason = str(exc).split(";")[0]
            raise InvalidInput(f"{label.label!r} runs on the {asked!r} schedule, which this config's model cannot "
                               f"build ({reason}); pass sampler={label.sampler!r} to run that sampler on this config's "
                               "own grid, schedule=<a schedule this model has>, or schedule_options={'sigma_max': "
                               "<a finite σ>} to start this one there") from None
        if discard:
            values = schedules.drop_penultimate(values)
        values = values.tolist()
        final = self._setting("final_sigmas_type")
        if final == "sigma_min" and values[-1] == 0.0 and not flow:
            values[-1] = float(native.sigma_min)
            if not values[-1] < values[-2]:
                values = values[:-1]
        elif final not in ("zero", "sigma_min"):
            raise InvalidOption(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final!r}")
        return values

    @staticmethod
    def _flow_sigmas(t: torch.Tensor, shift: float) -> torch.Tensor:
        # t -> s·t/(1 + (s−1)·t) is σ -> s·σ in VE coordinates; t = 1 is σ = inf exactly.
        return torch.where(t >= 1, torch.full_like(t, math.inf), shift * t / (1 - t))

    # ------------------------------------------------------------------------------------------------
    # coordinates

    def _coefficients(self, sigma: float) -> tuple[float, float]:
        # host floats (no read of a tensor per step); the native schedules' twins give the same bits
        return self.native.coefficients_at(sigma)

    def _to_state(self, sample: torch.Tensor, sigma: float) -> torch.Tensor:
        """The sampler's VE latent from the pipeline's latent at σ."""
        if self.latents == "ve" or math.isinf(sigma):
            return sample  # VE latents already, or the noise itself at σ = inf
        return sample / self._coefficients(sigma)[0]

    def _from_state(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.latents == "ve" or math.isinf(sigma):
            return x.clone()
        return x * self._coefficients(sigma)[0]

    def _x0(self, out: torch.Tensor, sample: torch.Tensor, sigma: float, call: int) -> torch.Tensor:
        """The denoised x0 of one model output, as the source class computes it (then its clip / threshold /
        consistency boundary)."""
        prediction = self.prediction
        s = torch.tensor(sigma, dtype=sample.dtype)  # the source classes' float arithmetic
        if self.space == "edm":
            # EDM's preconditioning (Karras et al. 2022, Table 1): D = c_skip·x + c_out·F, c_out < 0 for v
            sd2 = self._sigma_data**2
            c_out = s * self._sigma_data / (s**2 + sd2) ** 0.5
            x0 = sd2 / (s**2 + sd2) * sample + (c_out if prediction == "edm" else -c_out) * out
        elif self.latents == "ve":
            # x = x0 + σ·n: the k-diffusion forms of the conversions (Euler, Heun, LMS, KDPM2, ...)
            if prediction == "eps":
                x0 = sample - s * out
            elif prediction == "v":
                x0 = out * (-s / (s**2 + 1) ** 0.5) + sample / (s**2 + 1)
            elif prediction == "x0":
                x0 = out
            else:
                raise InvalidOption(f"{self._source_name} keeps VE latents; prediction {prediction!r} is not "
                                    "defined there")
        else:
            a, b = self.native.coefficients(torch.tensor(sigma, dtype=torch.float64))
            x0 = to_x0(prediction, out, sample, a, b)
        extras = self._source.x0 if self._source is not None else ()
        cfg = self._source_config if self._source is not None else {}
        if "threshold" in extras and cfg.get("thresholding"):
            x0 = sources.dynamic_threshold(x0, cfg.get("dynamic_thresholding_ratio", 0.995),
                                           cfg.get("sample_max_value", 1.0))
        elif "clip" in extras and cfg.get("clip_sample"):
            r = cfg.get("clip_sample_range", 1.0)
            x0 = x0.clamp(-r, r)
        if "lcm" in extras:
            c_skip, c_out = sources.lcm_boundary(self._call_times[call], cfg.get("timestep_scaling", 10.0))
            x0 = x0 * c_out + sample * c_skip
        return x0

    def _noise_sigma(self, t: torch.Tensor) -> list[float]:
        """σ of each item of ``timesteps`` as the source class's ``add_noise`` finds it: by value among this run's
        timesteps (else the native time map); or, once a pipeline called ``set_begin_index`` (or, for a class that
        reads its step index, once a run started), the current call (or the begin index) for every item; DDIM,
        DDPM, LCM, PNDM and SASolver always read the timesteps (``sources.ADD_NOISE_BY_TIMESTEPS``). Where the shim
        replays the class's own run, the σ at that index is the class's ``sigmas`` table entry (for KDPM2 and
        DPMSolverSDE, σ_{i+1} at the odd index of a step, not the σ the model is evaluated at there). ``t``: the
        timesteps as :meth:`_noise_timesteps` checked them."""
        name = self._source_name if self._source is not None else None
        by_step = (self._begin_index is not None if name in sources.ADD_NOISE_BY_STEP
                   else name not in sources.ADD_NOISE_BY_TIMESTEPS and self._begin_given)
        table = self._noise_table
        if self._plan is not None and by_step:  # the class ignores the values: not read (no device sync)
            index = self._step_index if self._step_index is not None else self._begin_index
            if self._empty_run() and (table is None or index >= len(table)):
                raise InvalidInput(f"add_noise() after set_begin_index({self._begin_index}), which starts after the "
                                   f"last of this run's {len(self._plan.calls)} timesteps: {name} then reads σ at that "
                                   "step index, which this run does not have; call set_begin_index with the index of "
                                   "a timestep of the run")
            values = table if table is not None else self._plan.calls
            return [values[min(index, len(values) - 1)]] * t.numel()
        values = t.to("cpu", torch.float64).tolist()  # one read of the values, which the class reads too
        initial = self._initial_tables() if self._plan is None else None
        self._check_noise_timesteps(values, name, initial)
        if initial is not None and name in sources.ADD_NOISE_BY_STEP:
            return [initial[1][self._initial_step_index(values, name, initial[0])]] * len(values)
        out = []
        for v in values:
            if initial is not None:  # before set_timesteps: the class's own tables
                out.append(initial[1][_class_index(initial[0], v)])
            elif self._plan is not None and v in self._call_times:
                if table is not None:
                    out.append(table[_class_index(self._call_times, v)])
                else:
                    out.append(self._plan.calls[self._call_times.index(v)])
            else:
                out.append(float(self.native.sigma_of_time(torch.tensor([v], dtype=torch.float64))[0]))
        return out

    @staticmethod
    def _noise_timesteps(timesteps) -> torch.Tensor:
        """add_noise's ``timesteps`` as a flat float64 vector: a tensor (as pipelines pass ``timesteps[:1]``), a
        number or a list of numbers; anything else (a string, None, booleans, complex numbers) refused by name."""
        if isinstance(timesteps, torch.Tensor):
            t = timesteps
        elif isinstance(timesteps, numbers.Real) and not isinstance(timesteps, bool):
            t = torch.tensor([float(timesteps)], dtype=torch.float64)
        elif isinstance(timesteps, (list, tuple)) and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool)
                or isinstance(v, torch.Tensor) and v.numel() == 1 for v in timesteps):
            t = torch.tensor([float(v) for v in timesteps], dtype=torch.float64)
        else:
            raise InvalidType(f"add_noise() takes timesteps as a tensor of the run's timesteps (a pipeline passes "
                              f"scheduler.timesteps[:1]), got {timesteps!r} ({type(timesteps).__name__}); pass a "
                              "tensor, a number or a list of numbers")
        if t.dtype == torch.bool or t.is_complex():
            raise InvalidType(f"add_noise() got timesteps of dtype {t.dtype}; pass real timesteps, e.g. "
                              "scheduler.timesteps[:1]")
        if t.numel() == 0:
            raise InvalidInput("add_noise() got no timesteps; pass one per item of the batch (or one for all)")
        return t.detach().reshape(-1)  # on its device: checked by metadata here, its values read where needed

    def _initial_tables(self) -> tuple[list[float], list[float]] | None:
        """Before any ``set_timesteps``, the tables the source class's ``add_noise`` looks each timestep up in: the
        ``timesteps`` and ``sigmas`` (as VE σ) its constructor builds — Euler's N training timesteps; KDPM2's and
        DPMSolverSDE's with their interleaved midpoints, whose σ there is the next step's entry, not σ at that time (as
        after set_timesteps). None where the class does not look them up (no source class; DDIM's kind, which index
        ``alphas_cumprod``). Refused for :data:`_NOISE_TABLES_MIRRORED`, whose tables give a σ no run means."""
        name = self._source_name
        if name is None or name in sources.ADD_NOISE_BY_TIMESTEPS:
            return None
        if name in _NOISE_TABLES_MIRRORED:
            raise InvalidInput(f"add_noise() before set_timesteps on {name}: until its first set_timesteps the class "
                               "holds its timesteps descending (999 … 0) but its sigmas ascending, so diffusers' "
                               "add_noise reads the σ of the mirrored timestep (timestep 999 gets σ(0), almost no "
                               "noise), which no run means. Call set_timesteps(num_inference_steps) first, then pass "
                               "one of scheduler.timesteps")
        fresh = _prototype(name, _freeze(self.config.source_config))  # no set_timesteps on it
        sigmas = fresh.sigmas.to("cpu", torch.float64)
        if self.space == "flow":
            sigmas = sigmas / (1 - sigmas)  # flow time t as VE σ (t = 1: inf)
        return fresh.timesteps.to("cpu", torch.float64).tolist(), sigmas.tolist()

    def _initial_step_index(self, values: list[float], name: str, times: list[float]) -> int:
        """The step index FlowMatchHeun's ``scale_noise`` reads before any ``set_timesteps``: found from the first
        call's one timestep and kept until ``set_timesteps`` (a later call's timestep is not read), as the class keeps
        it; several timesteps in that first call are refused (diffusers fails comparing them with its table)."""
        if self._step_index is None:
            if len(values) > 1:
                raise InvalidInput(f"scale_noise() got {len(values)} timesteps before set_timesteps: {name} finds its "
                                   "step index from one timestep there (diffusers fails on several); pass one, or call "
                                   "set_timesteps first")
            self._step_index = _class_index(times, values[0])
        return self._step_index

    def _check_noise_timesteps(self, values: list[float], name: str | None,
                               initial: tuple[list[float], list[float]] | None = None) -> None:
        """Timesteps add_noise cannot read as the source class reads them, refused by name rather than clamped or
        extrapolated (the σ table ends at the training range: 5000 or 10⁹ would be σ_max, −5 an extrapolation):
        every value finite; outside this run's own timesteps, within the training range (DDIM, DDPM, LCM, PNDM,
        SASolver index ``alphas_cumprod`` with it: an IndexError beyond it, a silent wrap below 0, and they take
        integers only); and after ``set_timesteps``, for a class that looks its timesteps up among the run's (Euler,
        Heun, LMS, KDPM2, DPM-Solver, UniPC, DEIS, EDM, FlowMatch), one of them (Euler's kind fails on another,
        DPM-Solver's silently takes the last step's σ); before it, for such a class, one of ``initial``, its own
        initial timesteps (Euler's fails on 500.5). A class that reads its step index (after set_begin_index)
        ignores the values, which are then not read nor checked. Without a source class the native time map is the
        shim's own (any timestep within the training range)."""
        run = set(self._call_times) if self._plan is not None else set(initial[0]) if initial is not None else set()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise InvalidInput(f"add_noise() got timesteps[{i}] = {v}; pass one of this run's timesteps "
                                   "(scheduler.timesteps)")
        native = self.native
        index = name in sources.ADD_NOISE_BY_TIMESTEPS
        lookup = initial is not None or (name is not None and not index and self._plan is not None)
        for i, v in enumerate(values):
            if v in run:
                continue
            fix = ("pass one of this run's timesteps (scheduler.timesteps; an img2img pipeline passes "
                   "timesteps[t_start * order])")
            if lookup and initial is not None:
                first, last = initial[0][0], initial[0][-1]
                raise InvalidInput(f"add_noise() got timestep {v:g} before set_timesteps, which is not one of "
                                   f"{name}'s {len(initial[0])} timesteps then ({first:g} … {last:g}, the table its "
                                   "constructor builds): the class looks each timestep up among them and fails on "
                                   "another; pass one of them, or call set_timesteps first and pass one of "
                                   "scheduler.timesteps")
            if lookup:
                shown = [round(c, 3) for c in self._call_times]
                raise InvalidInput(f"add_noise() got timestep {v:g}, which is not one of this run's timesteps "
                                   f"({shown}): {name} looks each timestep up among them (an unknown one fails "
                                   f"there, or silently takes another step's σ); {fix}")
            if isinstance(native, VPDiscrete):
                last = len(native.alphas_cumprod) - 1
                if not 0 <= v <= last:
                    raise InvalidInput(f"add_noise() got timestep {v:g}, outside the model's training timesteps "
                                       f"[0, {last}] (not clamped to σ_max nor extrapolated); {fix}")
                if index and v != int(v):
                    raise InvalidInput(f"add_noise() got timestep {v:g}, which is not an integer: {name} indexes "
                                       f"its alphas_cumprod with the timesteps (diffusers refuses a fractional one); "
                                       f"{fix}")
            elif isinstance(native, RectifiedFlow) and not 0 < v <= float(native.multiplier):
                raise InvalidInput(f"add_noise() got timestep {v:g}, outside (0, {float(native.multiplier):g}], the "
                                   f"flow model's times t·num_train_timesteps (not clamped); {fix}")

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The forward process in the pipeline's coordinates: x0 + σ·noise (VE latents) or a·x0 + b·noise."""
        if not isinstance(original_samples, torch.Tensor) or not isinstance(noise, torch.Tensor):
            raise InvalidType(f"add_noise() takes tensors original_samples and noise, got "
                              f"{type(original_samples).__name__} and {type(noise).__name__}; convert numpy arrays "
                              "with torch.from_numpy(array)")
        if self._empty_run() and (timesteps.numel() == 0 if isinstance(timesteps, torch.Tensor)
                                  else isinstance(timesteps, (list, tuple)) and len(timesteps) == 0):
            # the img2img pipeline's timesteps[:1] of a run with no step (strength × num_inference_steps < 1)
            raise InvalidInput(self._no_step_left(
                f"add_noise() got no timesteps after set_begin_index({self._begin_index}), which starts after the "
                f"last of this run's {len(self._plan.calls)} timesteps"))
        t = self._noise_timesteps(timesteps)
        count = t.numel()
        try:
            torch.broadcast_shapes(tuple(original_samples.shape), tuple(noise.shape),
                                   (count,) + (1,) * max(original_samples.ndim - 1, 0))
        except RuntimeError:
            raise InvalidInput(f"add_noise() got original_samples of shape {tuple(original_samples.shape)}, noise of "
                               f"shape {tuple(noise.shape)} and {count} timestep(s), which do not broadcast together; "
                               "pass noise shaped like the latents, and one timestep per item of the batch (or one "
                               "for all)") from None
        sig = torch.tensor(self._noise_sigma(t), dtype=torch.float64)
        view = (-1,) + (1,) * (original_samples.ndim - 1)
        like = dict(device=original_samples.device, dtype=original_samples.dtype)
        if self.latents == "ve":
            return original_samples + noise * sig.to(**like).reshape(view)
        a, b = self.native.coefficients(sig)
        return a.to(**like).reshape(view) * original_samples + b.to(**like).reshape(view) * noise

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor | None = None) -> torch.Tensor:
        """FlowMatch's name for :meth:`add_noise` (t·noise + (1 − t)·x0 on a flow config)."""
        return self.add_noise(sample, noise, timestep)

    # ------------------------------------------------------------------------------------------------
    # the step

    @staticmethod
    def _check_generator(generator, batch: int) -> None:
        """The pipeline's ``generator`` where the run draws from it: None, a torch.Generator, or a list of them (one
        per item of the ``batch``; a list of one is that one generator), as diffusers' ``randn_tensor`` takes it;
        anything else refused by name, before anything is drawn (diffusers fails on a non-generator or a tuple of
        generators with "object has no attribute 'device'", ignores the generators past the batch, and raises an IndexError for too
        few)."""
        if isinstance(generator, tuple):  # diffusers' randn_tensor reads a list only (a tuple: 'no attribute device')
            raise InvalidType(f"step() got a tuple of {len(generator)} generators: diffusers' pipelines take one "
                              "torch.Generator or a list of them (one per item); pass list(generator)")
        gens = generator if isinstance(generator, list) else [generator]
        if generator is None or (gens and all(isinstance(g, torch.Generator) for g in gens)):
            if len(gens) not in (1, batch):
                raise InvalidInput(f"step() got a list of {len(gens)} generators for a batch of {batch}: item k's noise "
                                   f"is drawn from generator k (diffusers' randn_tensor), so the list must hold one per "
                                   f"item, {batch} (or be one generator for the whole batch); pass "
                                   f"[torch.Generator().manual_seed(s) for s in seeds] with {batch} seeds")
            return
        bad = next((g for g in gens if not isinstance(g, torch.Generator)), generator)
        seed = bad if isinstance(bad, int) and not isinstance(bad, bool) else 42
        raise InvalidType(f"step() got generator={generator!r}: a stochastic run draws its noise from a "
                          f"torch.Generator (or a list of them, one per item), not {type(bad).__name__}; for a fixed "
                          f"seed pass seed={seed} to SamplerScheduler, or generator=torch.Generator().manual_seed({seed})")

    def _draws_nothing(self, eta) -> bool:
        """Whether this run is the source class's own and that class draws nothing from the generator in it (DDIM
        with eta = 0, DPM-Solver's ODE variants): the class never reads its ``generator`` there, nor does the shim."""
        source, plan = self._source, self._run_plan
        if not (self._same and source is not None and source.draws is not None and not self._draws_changed()):
            return False
        e = float(eta) if isinstance(eta, numbers.Real) and not isinstance(eta, bool) else self._run_eta()
        return self._source_draws(len(plan.step_starts) + plan.idle, e) == 0

    def _run_eta(self) -> float:
        """The η of this run: the one a step passed (``_take_eta``), else the sampler's own (DDIM's 0, TCD's 0.3)."""
        if self._eta is not None:
            return self._eta
        return float(self._options.get("eta", self.spec.options.get("eta", 0.0)) or 0.0)

    def _source_draws(self, steps: int, eta: float) -> int:
        """How many draws the source class makes in ``steps`` steps at ``eta``: worked out once a run (DDPM's reads
        its last timestep, a CPU tensor), not at every step."""
        key = (steps, eta)
        if key not in self._draw_counts:
            self._draw_counts = {**self._draw_counts, key: self._source.draws(self._ref, steps, eta)}
        return self._draw_counts[key]

    def _resolve_seeds(self, generator, batch: int) -> list[int]:
        """One seed per item: the scheduler's ``seed`` (+ k), else drawn once per run from the pipeline's generator
        (one per item from a list of generators) or torch's global one."""
        if self.config.seed is not None:
            return seeds_mod.resolve_seeds(self.config.seed, batch)
        if generator is None:
            return seeds_mod.resolve_seeds(None, batch)
        self._check_generator(generator, batch)
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if len(gens) == 1:
            g = gens[0]
            return torch.randint(0, 2**62, (batch,), generator=g, device=g.device).tolist()
        return [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in gens]

    @staticmethod
    def _check_timestep(where: str, timestep) -> None:
        """A timestep as ``step`` / ``scale_model_input`` take it: a real number, or a tensor or numpy array holding
        one (0-d or one element: a pipeline passes an entry of ``scheduler.timesteps``); anything else (None, a
        string, a boolean, several values) refused by name, where diffusers' classes fail on it or (past their step
        index) ignore it. Checked by metadata only: a device tensor's value is not read (each step would sync)."""
        array = isinstance(timestep, np.ndarray) and timestep.size == 1 and timestep.dtype.kind in "iuf"
        ok = (isinstance(timestep, numbers.Real) and not isinstance(timestep, bool)) or array or (
            isinstance(timestep, torch.Tensor) and timestep.numel() == 1 and timestep.dtype != torch.bool
            and not timestep.is_complex())
        if not ok:
            shown = (f"a {timestep.dtype} tensor of shape {tuple(timestep.shape)}" if isinstance(timestep, torch.Tensor)
                     else f"{timestep!r} ({type(timestep).__name__})")
            raise InvalidType(f"{where} takes the timestep as a number or a one-element tensor, got {shown}; pass "
                              "the entry of scheduler.timesteps the model is evaluated at (for t in "
                              "scheduler.timesteps: a pipeline passes t)")

    def _start_from(self, timestep) -> None:
        """A first ``step`` without ``set_begin_index``: start at the call whose timestep this is (as diffusers'
        schedulers find their step index: one read of its value, once a run; its type checked by the caller)."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        # DPMSolverSinglestep's own run starts at any of its timesteps (img2img at 0.3 of 10 steps starts inside a
        # group: diffusers finds index 7 from the timestep and lowers that step's order), as set_begin_index does
        candidates = range(len(self._call_times)) if self._regrouped() else (self._plan.step_starts or [0])
        starts = [i for i in candidates if self._call_times[i] == t]
        if not starts:
            shown = [round(v, 3) for v in self._call_times]
            at = [i for i, v in enumerate(self._call_times) if v == t]
            where = (f"it is model call {at[0]}, inside a step of {self.spec.name!r} (its steps start at the model "
                     f"calls {self._plan.step_starts})" if at else "it is none of this run's timesteps")
            raise InvalidInput(f"step() got timestep {t:g} as the first of this run, but {where}; the run's timesteps "
                               f"are {shown}. Start the loop at the timestep of a step's first model call (an img2img "
                               "pipeline passes timesteps[t_start * scheduler.order:]), or call set_begin_index(<the "
                               "index of that call>) first")
        self._set_begin(starts[0])

    def _regrouped(self) -> bool:
        """Whether this run is a source class's own run that the shim regroups into the sampler's steps
        (DPMSolverSinglestep: ``Source.schedule``), which starts at any of its model calls as the class does."""
        return self._same and self._source is not None and self._source.schedule is not None

    def _check_planned_timestep(self, timestep, call: int) -> None:
        """The timestep a ``step`` got, against the one this run planned for its model call ``call``, where the source
        class computes its step from the timestep it is given (:data:`_STEP_READS_TIMESTEP`): the shim steps its
        planned run in order, so a loop that repeats a timestep, skips one, or passes another after
        ``set_begin_index`` would silently get another image than the class's. Read only where that costs no host
        sync (:func:`_host_value`; the class reads it there too): a timestep on an accelerator is not checked."""
        given = _host_value(timestep)
        planned = self._call_times[call]
        if given is None or given == planned:
            return
        shown = [round(v, 3) for v in self._call_times]
        raise InvalidInput(f"step() got timestep {given:g} for model call {call} of this run, whose timestep is "
                           f"{planned:g} (the run's timesteps: {shown}): {self._source_name} computes its step from "
                           "the timestep it is given, while this scheduler steps its planned run in order, so a "
                           "repeated, skipped or other timestep would silently give another image. Pass the run's "
                           "timesteps in order, one step() each (for t in scheduler.timesteps; after "
                           f"set_begin_index(i), from timesteps[i]), or keep diffusers' {self._source_name} for a "
                           "loop that repeats or skips timesteps")

    def _draws_changed(self) -> bool:
        """Whether the caller's options change which noise the source class's run draws (``eta``, another noise):
        ``s_noise`` only scales the same draws and ``weights`` only sets the step's coefficients (SASolver's exact
        ones for its float32 ones), so the class's own noise (its generator's, its Brownian tree) stays."""
        return bool(set(self._overrides) - {"s_noise", "weights"})

    def _make_noise(self, x: torch.Tensor, model_output: torch.Tensor, generator):
        kind = self._run_options.get("noise_sampler")
        if isinstance(kind, str) and kind.startswith("brownian"):
            # the path a label names, built once for the run (its seeds: the scheduler's seed, else the generator's)
            return _RunPath(kind, self._resolve_seeds(generator, x.shape[0]), x, list(self._run_plan.schedule))
        if self.config.seed is not None or isinstance(kind, str):
            return None  # the sampler's own seeded noise (batch-invariant), or the generator kind a label names
        if self._same and self._source is not None and self._source.noise == "brownian" and not self._draws_changed():
            seed = self._ref.config.noise_sampler_seed
            return _DiffusersBrownian(x, self._ref.sigmas, self._plan.schedule, seed)
        dtype = model_output.dtype
        if self._source is not None and self._source.noise_dtype == "float32":
            dtype = torch.float32
        steps = None
        if self._same and self._source is not None and self._source.draws is not None and not self._draws_changed():
            steps = {sigma: i for i, sigma in enumerate(self._run_plan.schedule[:-1])}
        return _GeneratorNoise(x.shape, model_output.device, dtype, steps)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True, eta: float | None = None, **kwargs):
        """Feed one model output to the sampler; return the latent to evaluate next (or the final one).

        ``sample`` is the latent the model was evaluated at; if the pipeline changed it since the last step
        (inpainting, a step-end callback: another tensor, or the returned one changed in place), the sampler
        continues from it. ``eta`` is DDIM's noise share (a DDIM source passes the
        pipeline's ``eta``); ``generator`` drives the noise of stochastic samplers. The replaced class's other
        keywords (``s_churn``, ``variance_noise``, ``use_clipped_model_output``, …) are taken at the values that leave
        its run as it is, and refused otherwise (:data:`_STEP_KEYWORDS`).
        """
        if self._plan is None:
            raise Unavailable("call set_timesteps before step")
        if kwargs:
            self._check_step_keywords(kwargs, eta)
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor):
            raise InvalidType(f"step() takes tensors model_output and sample, got {type(model_output).__name__} and "
                              f"{type(sample).__name__}; convert numpy arrays with torch.from_numpy(array) (and keep "
                              "the latents a tensor between steps)")
        self._check_timestep("step()", timestep)
        if self._noisy and self.config.seed is None and not self._draws_nothing(eta):
            self._check_generator(generator, sample.shape[0] if sample.ndim else 1)
        if model_output.shape != sample.shape:
            raise InvalidInput(f"model_output has shape {tuple(model_output.shape)} but sample has "
                               f"{tuple(sample.shape)}; pass the model's prediction for this latent (a model "
                               "that also predicts its variance is not supported)")
        self._refuse_in_empty_run("step()")
        if self._done:
            raise Unavailable(f"the {self.spec.name!r} run has finished ({len(self._run_plan.calls)} model calls); "
                              "call set_timesteps to start a new one")
        if self._begin_index is None:
            self._start_from(timestep)
        plan = self._run_plan
        k = len(self._denoised)
        if self._source_name in _STEP_READS_TIMESTEP:
            self._check_planned_timestep(timestep, (self._begin_index or 0) + k)
        if k > 0 and sample.shape != self._x_start.shape:
            i = (self._begin_index or 0) + k
            fix = (f"set_timesteps(...) again, then set_begin_index({i})" if i in self._plan.step_starts else
                   f"change it where a step starts (the model calls {self._plan.step_starts} of this run), then "
                   "set_timesteps(...) again and set_begin_index(<that call>)")
            raise InvalidInput(
                f"step() got latents of shape {tuple(sample.shape)} in a run that started from "
                f"{tuple(self._x_start.shape)}: the sampler replays its run item by item from that start, so the "
                "batch cannot change within a run (diffusers' TextToVideoZero pipelines add frames after the first "
                f"steps). Start a new run from these latents: {fix}; or keep the batch as it started")
        sigma = plan.calls[k]
        state_dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x_in = sample.to(state_dtype)
        self._take_eta(eta)
        if k == 0:
            self._x_start = self._to_state(x_in, sigma).clone()
            # the run's start, read once here: every step replays the sampler from it (start_checked below)
            check_start(self._x_start)
            if self._noisy:
                self._noise = self._make_noise(self._x_start, model_output, generator)
                if self._noise is None:
                    self._seeds = self._resolve_seeds(generator, sample.shape[0])
        elif not self._unchanged(sample):
            # the pipeline changed the latent: the inpainting blend, a step-end callback (a new tensor or in place)
            state = self._to_state(x_in, sigma)
            # a copy where that is the pipeline's own tensor (VE latents): a pipeline that overwrites one buffer in
            # place each step (x.copy_(prev_sample)) would otherwise rewrite the replay's history
            self._injected = {**self._injected, k: state.clone() if state is sample else state}
        if isinstance(self._noise, _GeneratorNoise):
            self._noise = self._noise.for_step(generator)
        elif isinstance(self._noise, _RunPath):
            self._noise = self._noise.for_step()
        seen = x_in
        if k > 0 and sample.dtype != state_dtype and self._last_exact is not None and self._unchanged(sample):
            # an fp16 / bf16 latent the last step returned: x0 from the state it was rounded from, as to_denoiser
            # converts (the rounding would enter the slope (x − x0)/σ, which a corrector multiplies near σ = 0)
            seen = self._last_exact
        # a half-precision output enters the float32 state exactly; diffusers rounds σ·ε̂ to the output's dtype first,
        # which the shim does not repeat (docs/diffusers.md: measured, held by tests/test_shim_dtypes.py)
        denoised = self._x0(model_output.to(state_dtype), seen, sigma, (self._begin_index or 0) + k)
        self._denoised = [*self._denoised, denoised]
        if k >= len(plan.evals):
            # an idle call (the source's zero-length last step): the latent stays as it is
            self._step_index = (self._begin_index or 0) + k + 1
            self._done = k + 1 == len(plan.calls)
            if self._done and not plan.evals:
                self._top_up_draws(plan.idle)  # no sampler step ran (a grid that is all repeat): the class's draws
            prev_dtype, x0_dtype = self._step_dtypes(sample, model_output)
            prev = sample.to(prev_dtype, copy=True)
            self._returned(prev)
            return self._output(prev, denoised.to(x0_dtype), return_dict, noised=prev)

        replay = _Replay(self._denoised, self._injected, self._supports_inf)
        options = dict(self._run_options)
        if self._eta is not None:
            options["eta"] = self._eta
        if self._noisy:
            if self._noise is not None:
                options["noise_sampler"] = self._noise
            else:
                options["seed"] = self._seeds
        try:
            # the pipeline's eta comes with its step, after the class's options were checked: what it leaves unread
            # (TCD's table at γ = 0, diffusers' default eta) is left out, as TCDScheduler reads no table there
            x = run_sampler(self.spec, replay, self._x_start, plan.schedule, None, None, True,
                            drop_unread(self.spec.name, options, self.spec.options), start_checked=True)
            sigma_next = plan.schedule[-1]
            self._done = plan.idle == 0
            self._top_up_draws(len(plan.step_starts) + plan.idle)
            if len(self._denoised) != len(plan.evals):
                raise Unavailable(f"{self.spec.name!r} finished after {len(self._denoised)} model calls but "
                                  f"planned {len(plan.evals)}; its evaluation points are not fixed by the schedule")
        except _Pause as pause:
            x = pause.x
            if k + 1 >= len(plan.evals):
                raise Unavailable(f"{self.spec.name!r} asked for more model calls than the {len(plan.evals)} "
                                  "it planned; its evaluation points are not fixed by the schedule") from None
            sigma_next = plan.evals[k + 1]
        self._step_index = (self._begin_index or 0) + k + 1
        prev_dtype, x0_dtype = self._step_dtypes(sample, model_output)
        exact = self._from_state(x, sigma_next)
        prev = exact.to(prev_dtype)
        self._returned(prev, exact)
        noised = None
        if self._source_name == "TCDScheduler":
            noised = self._tcd_noised(seen, denoised, sigma, sigma_next, options, prev, x0_dtype)
        return self._output(prev, denoised.to(x0_dtype), return_dict, noised)

    def _tcd_noised(self, seen: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float,
                    options: dict, prev: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """TCDScheduler's ``pred_noised_sample`` for this step: the latent at TCD's inner point σ_s on the line
        through the model's x0 (x_s = x0 + σ_s·ε̂, before the step's noise) — ``prev`` itself where no noise is added
        (γ = 0, the last step; another sampler in the class's place: σ_s = the next call's σ)."""
        sigma_s = sigma_next
        if self.spec.name == "tcd":
            sigma_s = ancestral.tcd_point(options.get("native"), options.get("eta", self.spec.options["eta"]), sigma_next)
        if sigma_s == sigma_next and self.spec.name == "tcd":
            return prev  # the class's own: prev_sample is pred_noised_sample
        x_s = ancestral.trajectory_point(self._to_state(seen, sigma), denoised, sigma, sigma_s)
        return self._from_state(x_s, sigma_s).to(dtype)

    def _returned(self, prev: torch.Tensor, exact: torch.Tensor | None = None) -> None:
        """Remember the latent ``step`` returns, its version counter then, and (``exact``) the state's latent it
        was rounded from."""
        self._last_prev = (prev, _version(prev))
        self._last_exact = exact

    def _unchanged(self, sample: torch.Tensor) -> bool:
        """Whether ``sample`` is the latent the last ``step`` returned, unchanged since: the same tensor, not changed
        in place (``latents.mul_(0.9)``, ``latents[:, 0] = 0``: torch bumps its version counter), read without a
        host sync or a comparison of values. A tensor without a version counter (made under torch.inference_mode)
        counts as changed: the sampler continues from it as the pipeline passes it."""
        last, version = self._last_prev or (None, None)
        return sample is last and version is not None and _version(sample) == version

    def _step_dtypes(self, sample: torch.Tensor, model_output: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        """The dtypes of (prev_sample, pred_original_sample) that the source class's ``step`` returns for these
        inputs (``_STEP_DTYPES``; the sampler's state stays float32 / float64 whatever they are). Where the class
        returns no x0 (``sources.STEP_RETURNS_PREV_ONLY``) the shim's has prev_sample's dtype; without a source
        class both have the sample's."""
        rule = _STEP_DTYPES.get(self._source_name)
        if rule is None:
            return sample.dtype, sample.dtype
        out = model_output.dtype
        if self.prediction == "x0" and "lcm" not in self._source.x0:
            x0 = out  # the model's own prediction, passed through
        else:
            x0 = torch.promote_types(torch.float32 if rule.upcast else sample.dtype, out)
        prev = {"output": out, "x0": x0, "sample": sample.dtype,
                "promote": torch.promote_types(sample.dtype, out)}[rule.prev]
        return prev, (prev if self._source_name in sources.STEP_RETURNS_PREV_ONLY else x0)

    def _output(self, prev: torch.Tensor, pred: torch.Tensor, return_dict: bool, noised: torch.Tensor | None = None):
        """step's result, with the source class's fields: (prev_sample, x0) — LCM's x0 named ``denoised``, TCD's
        second field its ``pred_noised_sample`` (``noised``); with ``return_dict=False`` the tuple the source class
        returns: (prev_sample,) for the multistep classes (DPM-Solver, UniPC, DEIS, SA-Solver, PNDM, FlowMatch)."""
        if self._source_name == "TCDScheduler":
            pred = noised
        if return_dict:
            if self._source_name == "TCDScheduler":
                return SamplerSchedulerTCDOutput(prev_sample=prev, pred_noised_sample=pred)
            if self._source_name == "LCMScheduler":
                return SamplerSchedulerLCMOutput(prev_sample=prev, denoised=pred)
            return SamplerSchedulerOutput(prev_sample=prev, pred_original_sample=pred)
        if self._source_name in sources.STEP_RETURNS_PREV_ONLY:
            return (prev,)
        return prev, pred

    def _top_up_draws(self, steps: int) -> None:
        """At the end of a run of the source's own algorithm, leave the generator where the source class leaves it."""
        source = self._source
        if (isinstance(self._noise, _GeneratorNoise) and self._same and source is not None
                and source.draws is not None):
            self._noise.top_up(self._source_draws(steps, self._run_eta()))

    def _check_step_keywords(self, kwargs: dict, eta) -> None:
        """Refuse a keyword of the replaced class's ``step`` at a value that would change its run (the shim does not
        reproduce it), and one the class does not take (as Python refuses it there)."""
        source = self._source_name
        if source is not None:
            taken = _step_parameters(source)
            where = f"{source}.step(), which this scheduler stands in for, takes no such argument"
        else:
            taken = frozenset(_STEP_KEYWORDS)
            where = "no diffusers scheduler's step() that this scheduler could stand in for takes it"
        for key in kwargs:
            if key not in taken:
                raise InvalidType(f"step() got an unexpected keyword argument {key!r}: {where}")
        context = {**kwargs, "_draws_nothing": "variance_noise" in kwargs and self._draws_nothing(eta)}
        config = self._source_config if source is not None else dict(self.config)
        for key, value in kwargs.items():
            neutral, what, fix = _CLASS_STEP_KEYWORDS.get((source, key), _STEP_KEYWORDS[key])
            try:
                ok = neutral(value, context, config)
            except InvalidType as exc:
                raise InvalidType(f"step({key}={value!r}): {exc}") from None
            if not ok:
                shown = f"a {type(value).__name__}" if isinstance(value, torch.Tensor) else repr(value)
                raise InvalidOption(f"step({key}={shown}) changes the run ({what}), which SamplerScheduler "
                                    f"does not reproduce; {fix}")

    def _take_eta(self, eta) -> None:
        """DDIM's ``eta`` (its noise share) and TCD's (its γ) come with every step: diffusers' pipelines pass their
        ``eta`` argument, 0 by default; a step without one runs the class's default (DDIM 0, TCD 0.3)."""
        if eta is None:
            return
        eta = nonneg("eta", eta)  # a number (never a string converted, a 0-d CPU tensor read), finite, >= 0
        # the source class's own run reads the step's eta (DDIM's noise share, TCD's γ); another sampler does not
        own_run = self._source is not None and self._source.eta_in_step == self.spec.name
        if eta == 0 and self._eta is None and not (own_run and self._run_eta() != 0):
            return
        if not own_run or "eta" in self.sampler_options:
            # the class ignores a pipeline's eta: one equal to the run's own η (EulerAncestral's 1) changes nothing
            own = "eta" in self.spec.options and float(eta) == float(self._options.get("eta", self.spec.options["eta"]))
            if eta != 0 and not own:
                raise InvalidOption(self._eta_refusal(eta))
            return
        if len(self._denoised) == 0:
            if self.spec.name == "tcd" and eta > 1:
                raise InvalidOption(f"step() got eta={eta}: TCDScheduler's γ (its step's eta) must be in [0, 1] "
                                    "(diffusers asserts it); 0.3 is TCD's default, 0 its deterministic run")
            sched = self._run_plan.schedule if self.spec.name == "ddim" else []
            for sigma, sigma_next in zip(sched, sched[1:]):
                # DDIMScheduler's σ_t² exceeds 1 − ᾱ_prev there: it returns NaN, the ddim sampler caps σ_up at σ_next
                if 0 < sigma_next < sigma < math.inf and float(eta) ** 2 * (1 - (sigma_next / sigma) ** 2) > 1:
                    raise InvalidOption(f"step() got eta={eta}: DDIMScheduler's step from σ = {sigma:.4g} to "
                                        f"{sigma_next:.4g} then asks for more fresh noise than the step has (diffusers "
                                        "returns NaN there, the ddim sampler would cap it: another image); use eta <= 1")
            self._eta = float(eta)
        elif float(eta) != (self._eta or 0.0):
            raise InvalidOption(f"eta changed from {self._eta} to {eta} within one run")

    def _eta_refusal(self, eta) -> str:
        """Why a step's ``eta`` is refused (it reaches the scheduler with the first step, after the first model
        call) and a fix that runs."""
        head = f"step() got eta={eta}, but eta is a step argument of DDIMScheduler's and TCDScheduler's own runs only"
        if "eta" in self.sampler_options:
            return (f"{head}, and sampler_options already sets eta={self.sampler_options['eta']}: pass it in one "
                    "place (leave the pipeline's eta out)")
        if "eta" in self.spec.options:
            keep = (f"for diffusers' image ({self._source_name} ignores a pipeline's eta and runs its own)"
                    if self._source is not None and self._same else
                    f"to run {self.spec.name!r} as this scheduler is configured")
            return (f"{head}. Leave the pipeline's eta out {keep}. To run {self.spec.name!r} with eta={eta} "
                    f"(another image), pass sampler_options={{'eta': {eta}}} to the scheduler instead (and leave the pipeline's eta out)")
        ancestral = "euler_ancestral_rf" if self.space == "flow" else "euler_ancestral"
        return (f"{head}; {self.spec.name!r} has no eta. Leave the pipeline's eta out; for an ancestral run with "
                "it (another image), also swap in SamplerScheduler.from_config(config, "
                f"sampler={ancestral!r}, sampler_options={{'eta': {eta}}})")

    def __repr__(self) -> str:
        source = f", source={self._source_name!r}" if self._source_name else ""
        return (f"SamplerScheduler(sampler={self.spec.name!r}, schedule={self._schedule_name!r}, "
                f"prediction={self.prediction!r}, native={type(self.native).__name__}{source})")


__all__ = ["SamplerScheduler", "SamplerSchedulerLCMOutput", "SamplerSchedulerOutput", "SamplerSchedulerTCDOutput"]

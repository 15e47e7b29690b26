"""Any registry sampler as a diffusers scheduler: the one-line swap in an existing pipeline.

    from samplers.interop.diffusers_scheduler import SamplerScheduler
    pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config, sampler="dpmpp_2m", schedule="karras")

How it works. A diffusers pipeline owns the loop: it evaluates the model once per entry of
``scheduler.timesteps`` and hands each output to ``scheduler.step``. A registry sampler owns its loop too
and calls ``model(x, sigma)`` as often as its method needs (2 per step for Heun, 4 for RK4, with history
for multistep methods). The scheduler reconciles the two by *model-call interception with replay*:

1. ``set_timesteps`` builds the sampling schedule (σ in the canonical VE space) and runs the sampler once
   on a recording dummy model. The sigmas it asks for, in order, are the evaluation points; their model
   times are ``timesteps`` (a sampler's evaluation sigmas are Python floats computed from the schedule,
   never from tensor values, so this plan is exact).
2. ``step(model_output, t, sample)`` converts the output to the denoised x0 (from the config's prediction
   type), appends it to this run's list, and re-runs the sampler from the first latent with a model that
   answers from the list. The sampler stops (an exception unwinds it) at its next model call; the latent
   it was about to evaluate, converted to the pipeline's coordinates, is ``prev_sample``. After the last
   output the sampler runs to the end and returns the final latent.

So every sampler runs its own code, unchanged: multistep history, Heun's corrector, ancestral noise (seeded
once per run, so every replay draws the same noise), the exact step from σ = inf. No thread, no state
outside the instance; ``set_timesteps`` starts a fresh run. The replay costs O(n²) elementwise sampler
arithmetic over n model calls (the model itself is called n times, by the pipeline), and keeps the n
denoised latents of the run.

Coordinates. The pipeline's latents are the model's native ones (x_t = a·x0 + b·n: VP for SD-style
configs, rectified flow for SD3/Flux), so ``scale_model_input`` is the identity and pipelines that skip it
(SD3, Flux) work too. ``init_noise_sigma`` is 1 (``initial_noise="unit"``: x_t = n, as DDPM/DDIM/
DPM-Solver/flow-matching start) or b(σ₀) (``initial_noise="sigma"``: x = σ₀·n in VE coordinates, the
k-diffusion/A1111 start and diffusers' Euler with linspace/trailing spacing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
except ImportError as exc:  # pragma: no cover - exercised only without the optional extra
    raise ImportError("samplers.interop.diffusers_scheduler needs diffusers: "
                      "pip install 'diffusion-samplers[diffusers]'") from exc

from ..core import seeds as seeds_mod
from .. import schedules
from ..core import registry
from .diffusers_models import check_scheduler_flags, config_dict, is_flow_config, native_from_config
from ..core.native import RectifiedFlow, flow_t
from ..core.conversion import to_x0


@dataclass
class SamplerSchedulerOutput(BaseOutput):
    """``prev_sample``: the latent the pipeline evaluates next (or the final one); ``pred_original_sample``:
    the denoised x0 of this model call."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _Pause(BaseException):
    """Unwinds a replayed sampler at its next model call (BaseException: no sampler code may swallow it)."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = x


class _Replay:
    """The model a replayed sampler sees: answers from this run's denoised list, pauses after it."""

    def __init__(self, denoised: list, supports_infinite_sigma: bool):
        self.denoised = denoised
        self.calls = 0
        self.supports_infinite_sigma = supports_infinite_sigma

    def __call__(self, x, sigma, **extra_args):
        if self.calls == len(self.denoised):
            raise _Pause(x)
        out = self.denoised[self.calls]
        self.calls += 1
        return out


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
    evals: list[float]           # σ of every model call, in order
    step_starts: list[int]       # index into evals of each step's first model call


def _plan(fn, schedule: list[float], options: dict, supports_inf: bool, seeded: bool) -> _Plan:
    recorder = _Recorder(supports_inf)
    starts: list[int] = []
    counts: list[int] = []

    def callback(info):
        counts.append(len(recorder.sigmas))

    kwargs = dict(options)
    if seeded:
        kwargs["seed"] = 0
    fn(recorder, torch.zeros(1, 1, dtype=torch.float64), schedule, callback=callback, disable=True, **kwargs)
    prev = 0
    for c in counts:
        starts.append(prev)
        prev = c
    return _Plan(schedule, recorder.sigmas, starts)


_COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers] + [
    "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]


class SamplerScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs the registry sampler ``sampler`` on the schedule ``schedule``.

    Args:
        sampler: a registry name or alias (``samplers.available()``); adaptive samplers, which choose their
            steps from the model's outputs, cannot run in a pipeline that fixes the timesteps first.
        schedule: a registry schedule (``karras``, ``exponential``, ``flow``, ``trailing``, ...), or None
            for the timesteps the source config itself gives (its ``timestep_spacing`` / ``use_karras_sigmas``
            for VP configs, FlowMatchEuler's grid with its shift for flow configs).
        sampler_options: keyword options of the sampler (``{"eta": 0.5}``, ``{"s_churn": 1.0}``).
        schedule_options: keyword options of the schedule (``{"rho": 5.0}``, ``{"sigma_max": 80.0}``).
        initial_noise: ``"unit"`` (init_noise_sigma = 1: x_t = n in the model's coordinates) or ``"sigma"``
            (x = σ₀·n in VE coordinates, as k-diffusion and diffusers' Euler with linspace/trailing spacing).
        seed: noise seed of stochastic samplers (item k uses seed + k). None: drawn once per run from the
            pipeline's ``generator`` (one seed per item from a list of generators) or torch's global RNG.
        noise_schedule: ``"vp"`` or ``"flow"``; None infers it from the config (FlowMatch* source class,
            ``use_flow_sigmas`` or a ``shift`` without betas mean flow).
        Everything else is diffusers' own config vocabulary, read from the source config.
    """

    _compatibles = _COMPATIBLES
    order = 1

    @register_to_config
    def __init__(self, sampler: str = "euler", schedule: str | None = None, sampler_options: dict | None = None,
                 schedule_options: dict | None = None, initial_noise: str = "unit", seed: int | None = None,
                 noise_schedule: str | None = None, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear", trained_betas: Any = None,
                 prediction_type: str | None = None, timestep_spacing: str = "linspace", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, use_karras_sigmas: bool = False,
                 use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 final_sigmas_type: str = "zero", clip_sample: bool = False, thresholding: bool = False,
                 shift: float | None = None, use_dynamic_shifting: bool = False, base_shift: float = 0.5,
                 max_shift: float = 1.15, base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                 time_shift_type: str = "exponential", use_flow_sigmas: bool = False, flow_shift: float = 1.0,
                 shift_terminal: float | None = None, invert_sigmas: bool = False,
                 stochastic_sampling: bool = False):
        self.spec = registry.info(sampler)
        if self.spec.host_sync:
            raise ValueError(f"sampler {self.spec.name!r} is adaptive: it chooses its steps from the model's "
                             "outputs, but a diffusers pipeline fixes scheduler.timesteps before its loop. Use a "
                             "fixed-step sampler, or call it directly with samplers.interop.diffusers_models.")
        if schedule is not None:
            schedules.SCHEDULES.canonical(schedule)  # unknown names raise with the closest ones
        if initial_noise not in ("unit", "sigma"):
            raise ValueError(f"initial_noise must be 'unit' or 'sigma', got {initial_noise!r}")
        options = dict(sampler_options or {})
        if "noise_sampler" in options or "seed" in options:
            raise ValueError("sampler_options cannot hold noise_sampler or seed: the scheduler replays the "
                             "sampler and needs seeded noise; pass seed=<int> to the scheduler instead")
        unknown = set(options) - set(self.spec.options)
        if unknown:
            raise TypeError(f"sampler {self.spec.name!r} has no option(s) {sorted(unknown)}; its options are "
                            f"{sorted(self.spec.options)}")
        if use_beta_sigmas:
            raise ValueError("use_beta_sigmas=True is not supported; pass schedule=<name> explicitly")
        if final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final_sigmas_type!r}")
        # Validate the model description now (unknown prediction type, flow config on a VP model, ...).
        check_scheduler_flags(self.config)
        self.native, self.prediction = native_from_config(self.config)
        self.sampler_options = options
        self._seeded = "seed" in self.spec.options  # draws noise (ancestral/SDE, or Euler/Heun with churn)
        self.order = int(self.spec.nfe_per_step) if float(self.spec.nfe_per_step).is_integer() else 1
        self._reset()
        self.num_inference_steps = None
        self.timesteps = None
        self.sigmas = None

    # ------------------------------------------------------------------------------------------------
    # diffusers plumbing

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``, noting a flow-matching source class (whose config has no betas)."""
        if config is not None and "noise_schedule" not in kwargs:
            try:
                source = config_dict(config)
            except TypeError:
                source = {}
            if source.get("noise_schedule") is None and is_flow_config(source):
                kwargs["noise_schedule"] = "flow"
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def init_noise_sigma(self) -> float:
        return self._init_noise_sigma

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at model call ``begin_index`` (img2img: ``t_start · order``); it must start a step."""
        if self._plan is None:
            raise RuntimeError("call set_timesteps before set_begin_index")
        if begin_index == 0:
            self._begin_index = 0
            self._run_plan = self._plan
            return
        if begin_index not in self._plan.step_starts:
            raise ValueError(f"begin_index {begin_index} is not the first model call of a step of "
                             f"{self.spec.name!r} (steps start at {self._plan.step_starts})")
        step = self._plan.step_starts.index(begin_index)
        tail = _plan(self.spec.fn, self._plan.schedule[step:], self.sampler_options, self._supports_inf,
                     self._seeded)
        if tail.evals != self._plan.evals[begin_index:]:
            raise ValueError(f"{self.spec.name!r} evaluates different sigmas when started at step {step} "
                             "(its steps depend on the step count); it cannot start at a later timestep")
        self._begin_index = begin_index
        self._run_plan = tail

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The identity: the pipeline's latents are already the model's native input."""
        return sample

    # ------------------------------------------------------------------------------------------------
    # schedule

    def _reset(self):
        self._plan = None
        self._run_plan = None
        self._begin_index = None
        self._step_index = None
        self._denoised = []
        self._x_start = None
        self._seeds = None
        self._done = False
        self._init_noise_sigma = 1.0
        self._supports_inf = True

    def _native_for(self, mu):
        cfg = self.config
        native, _ = native_from_config(cfg, mu=mu)
        if isinstance(native, RectifiedFlow) and cfg.use_dynamic_shifting and mu is None:
            raise ValueError("this flow config uses dynamic shifting: pass mu= to set_timesteps "
                             "(diffusers' Flux/SD3 pipelines do)")
        return native

    def _schedule(self, n, native, sigmas, timesteps) -> list[float]:
        cfg = self.config
        flow = isinstance(native, RectifiedFlow)
        if sigmas is not None and timesteps is not None:
            raise ValueError("pass sigmas or timesteps, not both")
        if sigmas is not None:
            values = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
            if flow:
                # diffusers' flow convention: unshifted t for each step, shifted here, then t = 0 appended.
                return self._flow_sigmas(values, native.shift).tolist() + [0.0]
            return values.tolist()  # VE sigmas, the last one the final sigma (diffusers' Euler convention)
        if timesteps is not None:
            t = torch.as_tensor(timesteps, dtype=torch.float64).flatten().cpu()
            return native.sigma_of_time(t).tolist() + [0.0]
        if n is None:
            raise ValueError("set_timesteps needs num_inference_steps, sigmas or timesteps")
        options = dict(cfg.schedule_options or {})
        name = cfg.schedule
        if name is None:
            if flow:
                if cfg.use_karras_sigmas or cfg.use_exponential_sigmas:
                    raise ValueError("flow config with use_karras/exponential_sigmas: pass schedule='karras' "
                                     "(with schedule_options sigma_max) explicitly")
                # FlowMatchEulerDiscreteScheduler's grid: t from 1 to its (shifted) t_min, then shifted.
                n_train = cfg.num_train_timesteps
                t_min = 1.0 / n_train
                if not cfg.use_dynamic_shifting:
                    t_min = native.shift * t_min / (1 + (native.shift - 1) * t_min)
                t = torch.linspace(1.0, t_min, n, dtype=torch.float64)
                return self._flow_sigmas(t, native.shift).tolist() + [0.0]
            name = ("karras" if cfg.use_karras_sigmas else "exponential" if cfg.use_exponential_sigmas
                    else cfg.timestep_spacing)
            if name == "leading":
                options.setdefault("steps_offset", cfg.steps_offset)
        values = schedules.get_sigmas(name, n, native=native, **options).tolist()
        if cfg.final_sigmas_type == "sigma_min" and values[-1] == 0.0 and not flow:
            values[-1] = float(native.sigma_min)
            if not values[-1] < values[-2]:
                values = values[:-1]
        return values

    @staticmethod
    def _flow_sigmas(t: torch.Tensor, shift: float) -> torch.Tensor:
        # t -> s·t/(1 + (s−1)·t) is σ -> s·σ in VE coordinates; t = 1 is σ = inf exactly.
        return torch.where(t >= 1, torch.full_like(t, math.inf), shift * t / (1 - t))

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas=None, timesteps=None, mu: float | None = None):
        """Plan a fresh run: the sampling schedule, every model-call sigma, and their model times.

        ``sigmas``: VE sigmas including the final one for VP configs (diffusers' Euler convention); unshifted
        flow times t for flow configs (FlowMatch convention; 0 is appended). ``timesteps``: model times;
        their sigmas follow from the native schedule and 0 is appended. ``mu``: dynamic flow shift.
        """
        self._reset()
        native = self._native_for(mu)
        self.native = native
        schedule = self._schedule(num_inference_steps, native, sigmas, timesteps)
        schedule_t = torch.tensor(schedule, dtype=torch.float64)
        self._supports_inf = self.prediction not in ("eps", "score")
        plan = _plan(self.spec.fn, schedule, self.sampler_options, self._supports_inf, self._seeded)
        self._plan = self._run_plan = plan
        self._begin_index = 0
        evals = torch.tensor(plan.evals, dtype=torch.float64)
        self.num_inference_steps = len(plan.evals)
        self.timesteps = native.time(evals).to(device=device, dtype=torch.float32)
        final = torch.tensor(schedule[-1:], dtype=torch.float64)
        family = torch.cat([evals, final])
        if isinstance(native, RectifiedFlow):
            family = flow_t(family)  # FlowMatch schedulers expose t, not the VE sigma
        self.sigmas = family.to(torch.float32)
        self.schedule_sigmas = schedule_t
        sigma_0 = schedule[0]
        if self.config.initial_noise == "sigma" and math.isfinite(sigma_0):
            _, b = native.coefficients(torch.tensor(sigma_0, dtype=torch.float64))
            self._init_noise_sigma = float(b)
        else:
            self._init_noise_sigma = 1.0

    # ------------------------------------------------------------------------------------------------
    # coordinates

    def _coefficients(self, sigma: float) -> tuple[float, float]:
        a, b = self.native.coefficients(torch.tensor(sigma, dtype=torch.float64))
        return float(a), float(b)

    def _to_native(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if math.isinf(sigma):
            return x  # at σ = inf the state is the noise itself
        return x * self._coefficients(sigma)[0]

    def _to_ve(self, x_t: torch.Tensor, sigma: float) -> torch.Tensor:
        if math.isinf(sigma):
            return x_t
        return x_t / self._coefficients(sigma)[0]

    def _noise_coefficients(self, timesteps: torch.Tensor, like: torch.Tensor):
        sigma = self.native.sigma_of_time(torch.as_tensor(timesteps).to(torch.float64).reshape(-1).cpu())
        a, b = self.native.coefficients(sigma)
        view = (-1,) + (1,) * (like.ndim - 1)
        return (a.to(like.device, like.dtype).reshape(view), b.to(like.device, like.dtype).reshape(view))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The forward process in the pipeline's (native) coordinates: a(t)·x0 + b(t)·noise."""
        a, b = self._noise_coefficients(timesteps, original_samples)
        return a * original_samples + b * noise

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor | None = None) -> torch.Tensor:
        """FlowMatch's name for :meth:`add_noise` (t·noise + (1 − t)·x0 on a flow config)."""
        return self.add_noise(sample, noise, timestep)

    # ------------------------------------------------------------------------------------------------
    # the step

    def _resolve_seeds(self, generator, batch: int) -> list[int]:
        if self.config.seed is not None:
            return seeds_mod.resolve_seeds(int(self.config.seed), batch)
        if generator is None:
            return seeds_mod.resolve_seeds(None, batch)
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if len(gens) == 1:
            g = gens[0]
            return torch.randint(0, 2**62, (batch,), generator=g, device=g.device).tolist()
        if len(gens) != batch:
            raise ValueError(f"got {len(gens)} generators for a batch of {batch}")
        return [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in gens]

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        """Feed one model output to the sampler; return the latent to evaluate next (or the final one).

        ``timestep`` is not read (the pipeline walks ``self.timesteps`` in order; reading it would be a
        device sync). ``sample`` is the latent the model was evaluated at.
        """
        if self._plan is None:
            raise RuntimeError("call set_timesteps before step")
        if self._done:
            raise RuntimeError(f"the {self.spec.name!r} run has finished ({len(self._run_plan.evals)} model calls); "
                               "call set_timesteps to start a new one")
        plan = self._run_plan
        k = len(self._denoised)
        sigma = plan.evals[k]
        state_dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x_t = sample.to(state_dtype)
        if k == 0:
            self._x_start = self._to_ve(x_t, sigma)
            if self._seeded:
                self._seeds = self._resolve_seeds(generator, sample.shape[0])
        a, b = self._coefficients(sigma)
        a_t = torch.tensor(a, dtype=torch.float64)
        b_t = torch.tensor(b, dtype=torch.float64)
        denoised = to_x0(self.prediction, model_output.to(state_dtype), x_t, a_t, b_t)
        self._denoised.append(denoised)

        replay = _Replay(self._denoised, self._supports_inf)
        options = dict(self.sampler_options)
        if self._seeded:
            options["seed"] = self._seeds
        try:
            x = self.spec.fn(replay, self._x_start, plan.schedule, disable=True, **options)
            sigma_next = plan.schedule[-1]
            self._done = True
            if len(self._denoised) != len(plan.evals):
                raise RuntimeError(f"{self.spec.name!r} finished after {len(self._denoised)} model calls but "
                                   f"planned {len(plan.evals)}; its evaluation points are not fixed by the schedule")
        except _Pause as pause:
            x = pause.x
            if k + 1 >= len(plan.evals):
                raise RuntimeError(f"{self.spec.name!r} asked for more model calls than the {len(plan.evals)} "
                                   "it planned; its evaluation points are not fixed by the schedule") from None
            sigma_next = plan.evals[k + 1]
        self._step_index = (self._begin_index or 0) + k + 1
        prev = self._to_native(x, sigma_next).to(sample.dtype)
        pred = denoised.to(sample.dtype)
        if not return_dict:
            return prev, pred
        return SamplerSchedulerOutput(prev_sample=prev, pred_original_sample=pred)

    def __repr__(self) -> str:
        return (f"SamplerScheduler(sampler={self.spec.name!r}, schedule={self.config.schedule!r}, "
                f"prediction={self.prediction!r}, native={type(self.native).__name__})")


__all__ = ["SamplerScheduler", "SamplerSchedulerOutput"]

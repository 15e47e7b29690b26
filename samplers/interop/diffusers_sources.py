"""The diffusers scheduler classes ``SamplerScheduler`` stands in for, as data.

For each class (:data:`SOURCES`, keyed by the ``_class_name`` of its config):

- ``algorithm``: the registry sampler that runs the class's algorithm, refined from its config
  (``solver_order``, ``algorithm_type``, ``solver_type``, ``skip_prk_steps``, ``lower_order_final``,
  ``euler_at_final``, ``final_sigmas_type``, ...);
- ``grid``: how to read the schedule that the class's own ``set_timesteps`` builds. The shim runs
  ``set_timesteps`` on a private instance of the class itself, so spacing, rounding, ``steps_offset``,
  karras / exponential / beta / lu sigmas, shifts, final sigmas and the float32 tables are diffusers' own;
  the reader turns them into the step boundaries the sampler steps with (VE σ) and the model time of every
  call (the class's ``timesteps``: rounded where it rounds);
- ``latents``: where the class keeps its latents between steps: ``"ve"`` (x = x0 + σ·n, k-diffusion style:
  ``scale_model_input`` divides by √(σ² + 1)) or ``"native"`` (the model's own x_t);
- ``x0``: what it does to the model's x0 before stepping (``clip_sample``, dynamic ``thresholding``, LCM's
  consistency boundary condition);
- ``noise``: how it draws noise (one ``randn_tensor`` from the pipeline's generator per draw, or
  DPMSolverSDE's Brownian tree), so that the same generator gives the same image;
- ``refusals``: config values no registry sampler reproduces, refused by name with what to do instead;
- ``restart``: whether an img2img / inpaint run that starts at a later step (``set_begin_index``) is the
  sampler started there, or something else that cannot be reproduced.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Mapping

import torch

from ..core.errors import InvalidInput, InvalidOption, Unavailable
from ..core.native import VPDiscrete

# ----------------------------------------------------------------------------------------------------
# What a diffusers scheduler's set_timesteps produced


@dataclasses.dataclass
class Grid:
    """A source scheduler's run in the canonical space.

    sigmas: the step boundaries σ_0 > … > σ_n the scheduler steps with (VE; its float32 values);
    times: the model time of every model call (the scheduler's ``timesteps``);
    step_times: the model time at σ_0 … σ_{n−1};
    jumps: a message when the scheduler evaluates the model at a timestep other than the one its latent is at
    (DDIM / PNDM whose ``t − num_train_timesteps // n`` is not the next listed timestep), else None;
    exact_sigmas: the boundaries of the consistent run (each step ends where the next model call is).
    """

    sigmas: list[float]
    times: torch.Tensor
    step_times: list[float]
    jumps: str | None = None
    exact_sigmas: list[float] | None = None
    idle: int = 0  # zero-length last steps (σ_min repeated): model calls after which the latent stays as it is


# The sigma schedules the DPM-Solver / UniPC / DEIS / SA-Solver classes build from their VP training table ahead of
# their use_flow_sigmas branch: with both set, their sigmas are the table's noise levels (up to σ of its last
# timestep, 157.4 on the default betas), which their flow step reads as flow times t (α_t = 1 − t, below 0 above 1)
_VP_TABLE_SIGMAS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def _above_one(top: float, config: Mapping | None) -> str:
    """Why a flow config's sigmas run above 1 (up to ``top``), and what to do."""
    option = next((k for k in _VP_TABLE_SIGMAS if config and config.get("use_flow_sigmas") and config.get(k)), None)
    if option is not None:
        return (f"this config sets {option}=True with use_flow_sigmas=True, and diffusers' class then builds its "
                f"sigmas from the training betas' noise levels (up to {top:g}), not flow times, and steps them as flow "
                "times t (α = 1 − t, negative above 1), a run no flow model is trained for; set "
                f"{option}=False for use_flow_sigmas' own grid (flow times shifted by flow_shift)")
    # Cosmos2's pipelines register sigma_max=80 on FlowMatchEuler and hand it VE ε (x − x0)/σ: a VE Euler step on σ
    # up to 80, not a flow model's time t ∈ [0, 1], which the shim reads and cannot map above 1
    return (f"this flow config's sigmas run above 1 (up to {top:g}: from a sigma_max in its config, e.g. Cosmos2's "
            "pipelines register sigma_max=80), but a flow scheduler's sigmas are the flow times t ∈ [0, 1] the shim "
            "reads its model at; such a run is a VE one the config does not describe. Keep diffusers' own scheduler "
            "for it, or set sigma_max ≤ 1")


def _ve(values: torch.Tensor, space: str, config: Mapping | None = None) -> list[float]:
    """A scheduler's sigmas as VE sigmas: flow time t -> t / (1 − t) (t = 1 is σ = inf); ``config``, the class's,
    tells why flow times run above 1."""
    v = values.detach().to("cpu", torch.float64)
    if space == "flow":
        above = v[v > 1 + 1e-6]
        if above.numel():
            raise InvalidInput(_above_one(float(above.max()), config))
        v = torch.where(v >= 1, torch.full_like(v, math.inf), v / (1 - v))
    return v.tolist()


def check_shift_terminal(ref, name: str, given: str) -> None:
    """``shift_terminal`` stretches the shifted flow times so that the last one is shift_terminal, dividing by 1 − the
    last one: a single step from flow time 1 (one step, or one σ / timestep passed at 1) divides 0 by 0, and diffusers'
    σ is NaN (FlowMatchEuler; UniPC with use_flow_sigmas). Refused by name, ``given`` the call, before any model call
    (it was "sigmas[0] = nan is invalid" from the sampler)."""
    terminal = ref.config.get("shift_terminal")
    if terminal and torch.isnan(ref.sigmas).any():
        raise InvalidInput(
            f"{name} with shift_terminal={terminal!r} cannot run set_timesteps({given}): a single step from flow time "
            "1, and shift_terminal stretches the schedule to end at shift_terminal by dividing by 1 minus its last "
            "flow time, 0 here (diffusers' own σ is NaN). Use 2 or more steps, or leave shift_terminal out (null)")


def _table_of(ref) -> str:
    """`` with beta_schedule=...`` for a class whose config has a training table (not the EDM / flow classes)."""
    schedule = ref.config.get("beta_schedule")
    return f" with beta_schedule={schedule!r}" if schedule is not None else ""


def check_finite(ref, name: str, given: str, what: str, values, bad: Callable[[float], bool], fix: str) -> None:
    """Refuse a run whose ``what`` (``values``, as diffusers' own ``set_timesteps({given})`` left them) holds an entry
    that ``bad`` finds (NaN; a non-finite model time), before any model call: diffusers' own run is NaN from there,
    so there is no image to reproduce. KDPM2AncestralDiscrete on a squaredcos_cap_v2 table at 2-10 steps: its float32
    σ_down = √(σ_next² − σ_up²) cancels to the root of a negative number, its interpolated timestep is NaN, and the
    shim ran to a NonFiniteError after the last model call. Checked for every class, on what its run reads."""
    entries = values.detach().to("cpu", torch.float64).tolist() if isinstance(values, torch.Tensor) else list(values)
    found = next(((i, v) for i, v in enumerate(entries) if bad(v)), None)
    if found is None:
        return
    i, v = found
    raise InvalidInput(f"{name}{_table_of(ref)}: diffusers' own set_timesteps({given}) gives {what}[{i}] = {v:g} "
                       "(its float32 arithmetic fails on this table at this step count), so its own run is NaN from "
                       f"there: there is no image to reproduce. {fix}")


# Classes whose set_timesteps, passed mu, asserts use_dynamic_shifting=True and time_shift_type='exponential' (a bare
# assert: the shim forwarded its empty message, "set_timesteps(6) refused: "); Flux-style code passes mu routinely
MU_NEEDS_EXPONENTIAL_SHIFTING = frozenset({"DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
                                           "DEISMultistepScheduler"})


def check_mu(ref, name: str, given: str) -> None:
    """diffusers' condition on ``mu`` for :data:`MU_NEEDS_EXPONENTIAL_SHIFTING`, checked before its bare assert, the
    refusal naming the keys it needs and the call (``given``)."""
    dynamic = ref.config.get("use_dynamic_shifting", False)
    kind = ref.config.get("time_shift_type", "exponential")
    if name not in MU_NEEDS_EXPONENTIAL_SHIFTING or (dynamic and kind == "exponential"):
        return
    raise InvalidInput(f"{name}.set_timesteps({given}): mu is read only with use_dynamic_shifting=True and "
                       f"time_shift_type='exponential' (diffusers' class asserts both, then sets flow_shift = e^mu), "
                       f"and this config has use_dynamic_shifting={dynamic!r}, time_shift_type={kind!r}. Set both in "
                       "the config for a shift that follows mu, or do not pass mu (the config's own flow_shift)")


def zero_snr_refusal(ref, name: str, why: str) -> str:
    """Why a class whose grid starts at ᾱ = 0 (σ = inf: DDIM / DDPM / LCM / TCD with rescale_betas_zero_snr=True and
    'trailing' spacing) cannot run this model (``why``, the core's reason: an ε model has no x0 there), worded by the
    config: the keys and the fixes a pipeline user can set (the sampler's own fix, a schedule that starts at a finite
    σ, is out of a config's reach). diffusers' own latents are NaN there (x0 = (x − √(1 − ᾱ)·ε)/√ᾱ divides by 0);
    Euler, EulerAncestral, DPMSolverMultistep and UniPC clamp ᾱ_T to 2⁻²⁴ (σ_max 4096) and run (the fix offered
    named the Euler family alone)."""
    c = ref.config
    zero_snr = bool(c.get("rescale_betas_zero_snr"))
    cause = "rescale_betas_zero_snr=True" if zero_snr else "a training table whose last ᾱ is 0"
    plain = "rescale_betas_zero_snr=False for a model trained on the plain table, " if zero_snr else ""
    return (f"{name} with {cause} and prediction_type={c.get('prediction_type')!r} evaluates the model first at "
            f"timestep {int(ref.timesteps[0])}, where ᾱ = 0 (σ = inf, zero SNR): {why}; diffusers' own latents are "
            "NaN there (x0 = (x − √(1 − ᾱ)·ε)/√ᾱ divides by 0). Use prediction_type='v_prediction' for a "
            f"zero-terminal-SNR v-model (what rescale_betas_zero_snr is for), {plain}or an Euler-family config "
            "or a multistep one (EulerDiscreteScheduler / EulerAncestralDiscreteScheduler / "
            "DPMSolverMultistepScheduler / UniPCMultistepScheduler clamp ᾱ_T to 2⁻²⁴, a finite σ_max of 4096)")


def check_sigma_order(ref, name: str) -> None:
    """``sigma_min`` / ``sigma_max`` in a config (EulerDiscrete's keys; keys a pipeline registers that the classes'
    karras / exponential / beta sigmas read) with sigma_min above sigma_max (or above the table's end where sigma_max
    is left out) make the class build ascending sigmas, which diffusers runs from the least noise to the most,
    silently. Refused naming both keys (the sampler refused the ascending list, naming samplers.schedules.flip)."""
    low, high = ref.config.get("sigma_min"), ref.config.get("sigma_max")
    sigmas = getattr(ref, "sigmas", None)
    if (low is None and high is None) or not isinstance(sigmas, torch.Tensor):
        return
    inner = [v for v in sigmas.detach().to("cpu", torch.float64).tolist() if v > 0]
    if len(inner) < 2 or inner[0] >= inner[-1]:
        return
    raise InvalidOption(f"{name} with sigma_min={low!r} and sigma_max={high!r} (None: the training table's end) builds "
                        f"its sigmas from {inner[0]:.6g} up to {inner[-1]:.6g}, ascending: diffusers runs them from "
                        "the least noise to the most, silently, which no sampler's run is. Set sigma_min below sigma_max "
                        "(swapped?), or leave them out for the training table's range")


# set_timesteps arguments that count steps, each defaulting to the config key of its name, which the class divides by
# (LCM / TCD space their timesteps num_train_timesteps // original_inference_steps apart): 0 was a raw
# ZeroDivisionError, a negative count diffusers' "reduce num_inference_steps to a value smaller than -5"
STEP_COUNTS: dict[str, tuple[str, ...]] = {"LCMScheduler": ("original_inference_steps",),
                                           "TCDScheduler": ("original_inference_steps",)}


def check_step_counts(ref, name: str, passed: Mapping, given: str) -> None:
    """Each of :data:`STEP_COUNTS` of class ``name`` (passed to set_timesteps, else its config's) at least 1."""
    for key in STEP_COUNTS.get(name, ()):
        value = passed[key] if key in passed else ref.config.get(key)
        if not _real_in(value, 1, math.inf):
            where = "passed to set_timesteps" if key in passed else "from the config"
            raise InvalidInput(f"{name}.set_timesteps({given}): {key}={value!r} ({where}) is the step count of the "
                               f"schedule the model was distilled on, at least 1 (the class spaces its timesteps "
                               f"num_train_timesteps // {key} apart); use the model's own, 50 (diffusers' default) "
                               "for the LCM / TCD models")


def _alpha_sigma(alphas_cumprod: torch.Tensor, alpha: torch.Tensor | float) -> float:
    """σ = √((1 − ᾱ)/ᾱ) of one ᾱ (a float32 table entry, read in float64); ᾱ = 0 gives inf."""
    a = float(alpha)
    return math.inf if a == 0 else math.sqrt((1 - a) / a)


def grid_per_step(ref, space: str) -> Grid:
    """One model call per step: ``sigmas`` holds the n + 1 boundaries, ``timesteps`` the n calls (Euler's
    ``interpolation_type="log_linear"`` lists one sigma more, which it never reaches). A last step from σ_min to
    σ_min (Euler with ``final_sigmas_type="sigma_min"`` on a grid that ends at timestep 0, the karras / exponential /
    beta sigmas of the multistep classes, EDMDPMSolverMultistep's σ_min computed two ways a few float32 ulps apart,
    a one-step karras grid [σ_max, σ_max]) leaves the latent as it is: it is an idle call, not a step."""
    times = ref.timesteps
    sig = _ve(ref.sigmas[: len(times) + 1], space, ref.config)
    idle = repeats(ref)
    if idle:
        sig = sig[:-idle]
    return Grid(sig, times, times.detach().to("cpu", torch.float64).tolist(), idle=idle)


def grid_two_calls(ref, space: str) -> Grid:
    """Heun-type classes (Heun, KDPM2, KDPM2Ancestral, DPMSolverSDE, FlowMatchHeun): every inner boundary is
    repeated in ``sigmas`` (first and second stage), and ``timesteps`` interleaves the second-stage calls."""
    n = ref.num_inference_steps
    boundaries = torch.cat([ref.sigmas[:1], ref.sigmas[1::2]])[: n + 1]
    times = ref.timesteps
    return Grid(_ve(boundaries, space, ref.config), times, times[0::2].detach().to("cpu", torch.float64).tolist()[:n])


def _grid_from_timesteps(ref, steps: list[int], final: float, prev: list[int] | None, name: str) -> Grid:
    """Classes that step on the ᾱ table (DDIM, DDPM, PNDM, LCM): boundaries σ(ᾱ[t]) and the final σ.

    ``prev``: where each step really ends (DDIM / PNDM: t − num_train_timesteps // n); where that is not the
    next step's timestep, the next model call sees a latent that is not at its timestep (``Grid.jumps``).
    """
    ac = ref.alphas_cumprod
    sig = [_alpha_sigma(ac, ac[t]) for t in steps]
    exact = sig + [final]
    jumps = None
    if prev is not None:
        ends = [_alpha_sigma(ac, ac[p]) if p >= 0 else final for p in prev]
        bad = [(t, p, t_next) for t, p, t_next in zip(steps, prev, steps[1:]) if p != t_next]
        if bad:
            t, p, t_next = bad[0]
            jumps = (f"{name} steps from timestep {t} to {p} (t − num_train_timesteps // num_inference_steps) but "
                     f"evaluates the model next at timestep {t_next}, on a latent that is not at that timestep "
                     f"(timestep_spacing={ref.config.timestep_spacing!r} with {len(steps)} steps)")
        sig_run = sig + [ends[-1]]
    else:
        sig_run = exact
    if len(sig_run) > 1 and sig_run[-2] == sig_run[-1]:
        spacing = ref.config.get("timestep_spacing", "leading")
        also = ", or set_alpha_to_one=True" if spacing == "leading" else ""  # 'linspace' then jumps, see above
        raise Unavailable(
            f"{name} ends with a step of zero length, from timestep {steps[-1]} to a final ᾱ equal to ᾱ[{steps[-1]}] "
            f"(set_alpha_to_one={ref.config.get('set_alpha_to_one')!r}, steps_offset="
            f"{ref.config.get('steps_offset', 0)!r}, timestep_spacing={spacing!r}): diffusers calls the model once "
            f"more there and leaves the latent as it is, which a sampler's σ schedule cannot express. Use "
            f"{consistent_spacing(ref.config.num_train_timesteps)}{also}")
    times = ref.timesteps
    return Grid(sig_run, times, [float(t) for t in steps], jumps, exact)


def consistent_spacing(train_steps: int) -> str:
    """The DDIM / PNDM timestep spacings whose steps end at the next model call and not on ᾱ[0] (checked for every
    spacing, steps_offset and set_alpha_to_one: tests/test_diffusers_shim_seams.py): 'leading' spaces by
    num_train_timesteps // n, as the classes step, at any n; 'trailing' where n divides num_train_timesteps."""
    divisors = [d for d in (1, 2, 4, 5, 8, 10, 20, 25, 40, 50) if train_steps % d == 0]
    return ("timestep_spacing='leading' with steps_offset=1 (as Stable Diffusion's configs do; any step count) or "
            f"timestep_spacing='trailing' with a step count that divides num_train_timesteps (e.g. {divisors[-4:]})")


def grid_ddim(ref, space: str) -> Grid:
    steps = [int(t) for t in ref.timesteps.tolist()]
    ratio = ref.config.num_train_timesteps // ref.num_inference_steps
    final = _alpha_sigma(ref.alphas_cumprod, ref.final_alpha_cumprod)
    return _grid_from_timesteps(ref, steps, final, [t - ratio for t in steps], "DDIMScheduler")


def grid_ddpm(ref, space: str) -> Grid:
    # DDPM steps to the next listed timestep, and from the last one to ᾱ = 1 (σ = 0).
    return _grid_from_timesteps(ref, [int(t) for t in ref.timesteps.tolist()], 0.0, None, "DDPMScheduler")


def grid_lcm(ref, space: str) -> Grid:
    # LCM's last step returns its denoised estimate: the final σ is 0.
    return _grid_from_timesteps(ref, [int(t) for t in ref.timesteps.tolist()], 0.0, None, "LCMScheduler")


def grid_tcd(ref, space: str) -> Grid:
    """TCD's last step goes to timestep 0 (ᾱ[0], whatever set_alpha_to_one says) and returns its x_s there, the
    predicted trajectory's point at σ(ᾱ[0]): the final σ is that, not 0. Custom timesteps that end at 0 make the
    last call one from timestep 0 to 0, which returns the latent as it is (x_s = x at s = t): an idle call."""
    ac = ref.alphas_cumprod
    steps = [int(t) for t in ref.timesteps.tolist()]
    idle = 1 if steps and steps[-1] == 0 else 0
    grid = _grid_from_timesteps(ref, steps[: len(steps) - idle], _alpha_sigma(ac, ac[0]), None, "TCDScheduler")
    return dataclasses.replace(grid, step_times=[float(t) for t in steps], idle=idle) if idle else grid


def grid_pndm(ref, space: str) -> Grid:
    """PNDM: the steps are the distinct timesteps in order (PLMS repeats its second, PRK its midpoints)."""
    calls = [int(t) for t in ref.timesteps.tolist()]
    if ref.config.skip_prk_steps:
        steps = [t for i, t in enumerate(calls) if i == 0 or t != calls[i - 1]]
    else:
        # the pseudo Runge-Kutta warm-up: 4 calls per step (t, t − Δt/2 twice, t − Δt), then PLMS
        prk = calls[: len(ref.prk_timesteps)]
        steps = prk[0::4] + calls[len(prk):]
        steps = [t for i, t in enumerate(steps) if i == 0 or t != steps[i - 1]]
    ratio = ref.config.num_train_timesteps // ref.num_inference_steps
    final = _alpha_sigma(ref.alphas_cumprod, ref.final_alpha_cumprod)
    return _grid_from_timesteps(ref, steps, final, [t - ratio for t in steps], "PNDMScheduler")


# ----------------------------------------------------------------------------------------------------
# The algorithm each class runs: (its instance after set_timesteps, steps skipped by img2img) -> sampler


class SourceRunRefused(InvalidOption):
    """The source class's own run cannot be reproduced on this config; ``algorithm`` is the registry sampler it
    would have been. Another sampler named by the caller still runs on the class's grid."""

    def __init__(self, message: str, algorithm: str):
        super().__init__(message)
        self.algorithm = algorithm


# Two entries of a scheduler's float32 σ table this close (relative) are one σ: EDMDPMSolverMultistep's σ_min
# computed two ways differs in the last float32 ulps (0.0019999996, 0.0020000001); a float32 ulp is 6e-8-1.2e-7.
REPEAT_RTOL = 1e-6


def same_sigma(a: float, b: float) -> bool:
    """Whether two entries of a scheduler's σ table are the same σ (within a few float32 ulps, ``REPEAT_RTOL``)."""
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= REPEAT_RTOL * max(abs(a), abs(b)))


def repeats(ref) -> int:
    """How often the last sigma a scheduler steps to is repeated (σ_min twice: a zero-length last step; with one step,
    a karras grid [σ_max, σ_max] is all repeat). Read on the class's own table (flow times t or σ: a repeat either
    way), within a few float32 ulps (:func:`same_sigma`)."""
    sig = ref.sigmas[: len(ref.timesteps) + 1].detach().to("cpu", torch.float64).tolist()
    count = 0
    while len(sig) > 1 and same_sigma(sig[-1], sig[-2]):
        sig, count = sig[:-1], count + 1
    return count


def ve_sigmas(ref) -> list[float]:
    """A class's ``sigmas`` as VE σ, the values the sampler steps on: flow times t -> t/(1 − t) where the class runs
    ``use_flow_sigmas`` (the DPM-Solver / UniPC / DEIS / SA-Solver classes keep t in ``sigmas`` there)."""
    return _ve(ref.sigmas, "flow" if ref.config.get("use_flow_sigmas") else "vp", ref.config)


def _refuse_idle_third_order(ref, name: str, capped: bool, algorithm: str,
                             fix: str = "use solver_order=2, or lower_order_final=False") -> None:
    """With a zero-length last step the sampler's last step is the class's second to last, whose order the class
    caps at 2; the registry samplers cap the order of their own last steps only."""
    if repeats(ref) and capped:
        raise SourceRunRefused(f"{name} with solver_order=3 repeats its final sigma (use_karras/exponential/"
                               "beta_sigmas or final_sigmas_type='sigma_min' with a sigma_min end): its last model "
                               "call takes a zero-length step and the step before it is capped at second order, "
                               f"which no registry sampler's rule reproduces; {fix}", algorithm)


def _refuse_third_order_zero_step(ref, name: str, algorithm: str) -> None:
    """DPM-Solver++(3M) over a zero-length (or a few float32 ulps long) last step: diffusers' own run divides by the
    step's length and returns NaN, which no sampler reproduces."""
    raise SourceRunRefused(f"{name} with solver_order=3 and final_sigmas_type={ref.config.final_sigmas_type!r} "
                           f"repeats its final sigma ({float(ref.sigmas[-2]):.9g}, {float(ref.sigmas[-1]):.9g}) and "
                           "takes a third-order last step over it ({} steps, lower_order_final={}): diffusers' own "
                           "run divides by that step's zero length and returns NaN. Use solver_order=2, or "
                           "final_sigmas_type='zero'".format(len(ref.timesteps), ref.config.lower_order_final),
                           algorithm)


_DPM_IDLE_FIX = "use solver_order=2, or final_sigmas_type='zero'"  # (lower_order_final=False: diffusers' NaN)


def algorithm_dpm_multistep(ref, begin: int = 0) -> tuple[str, dict]:
    c = ref.config
    n = len(ref.timesteps)
    capped = bool(c.lower_order_final and n < 15)  # its few-step rule: lower orders for the last two steps
    # DPMSolverMultistep's rule for a first-order last step (a repeated final sigma makes that step idle)
    final = bool(c.euler_at_final or capped or c.final_sigmas_type == "zero") and not repeats(ref)
    if c.algorithm_type == "sde-dpmsolver++":
        if c.solver_order == 1:
            return "ddpm", {}  # the first-order SDE-DPM-Solver++ step is the DDPM posterior draw
        if c.solver_order == 2:
            return "dpmpp_2m_sde", {"eta": 1.0, "solver_type": c.solver_type, "euler_at_final": final}
        _refuse_idle_third_order(ref, type(ref).__name__, capped, "dpmpp_3m_sde", _DPM_IDLE_FIX)
        if repeats(ref):
            _refuse_third_order_zero_step(ref, type(ref).__name__, "dpmpp_3m_sde")
        return "dpmpp_3m_sde", {"eta": 1.0, "variant": "diffusers", "solver_type": c.solver_type,
                                "lower_order_final": capped, "euler_at_final": final}
    if c.solver_order == 1:
        return "ddim", {}  # DPM-Solver++(1) is DDIM
    if c.solver_order == 2:
        return "dpmpp_2m", {"solver_type": c.solver_type, "euler_at_final": final}
    _refuse_idle_third_order(ref, type(ref).__name__, capped, "dpmpp_3m", _DPM_IDLE_FIX)
    if repeats(ref):
        _refuse_third_order_zero_step(ref, type(ref).__name__, "dpmpp_3m")
    return "dpmpp_3m", {"solver_type": c.solver_type, "lower_order_final": capped, "euler_at_final": final}


def algorithm_unipc(ref, begin: int = 0) -> tuple[str, dict]:
    c = ref.config
    if repeats(ref):
        # worded by the option this config sets (its flow grid ends at t_min by itself; the karras / exponential /
        # beta sigmas at σ_min), as algorithm_sa_solver words its own
        flow = "use_flow_sigmas" if c.get("use_flow_sigmas") else None
        option = next((k for k in _VP_TABLE_SIGMAS if c.get(k)), flow)
        grid = f"{option}=True and " if option is not None else ""
        raise SourceRunRefused(f"UniPCMultistepScheduler with {grid}final_sigmas_type={c.final_sigmas_type!r} repeats "
                               "its final σ (its grid ends at σ_min, and that final sigma is σ_min again): its last "
                               "model call only applies the corrector to the step before (a zero-length predictor "
                               "step), which the unipc samplers do not do; use final_sigmas_type='zero'",
                               f"unipc_{c.solver_type}")
    # diffusers reads disable_corrector by its own step index and ignores the rest: pass the run's (shifted by the
    # start step, img2img) that name a corrected step, 0 … n − 2, which is all the sampler takes
    n = len(ref.timesteps) - begin
    off = tuple(j for j in (int(i) - begin for i in c.disable_corrector) if 0 <= j <= n - 2)
    return f"unipc_{c.solver_type}", {"order": c.solver_order, "lower_order_final": bool(c.lower_order_final),
                                      "disable_corrector": off}


def algorithm_deis(ref, begin: int = 0) -> tuple[str, dict]:
    c = ref.config
    n = len(ref.timesteps)
    capped = bool(c.lower_order_final and n < 15)
    if repeats(ref):
        # the zero-length last step is the class's first-order one; the sampler's last step is the class's second
        # to last, capped at second order (nothing for order 2)
        _refuse_idle_third_order(ref, "DEISMultistepScheduler", capped and c.solver_order == 3, "deis")
        capped = False
    options = {"order": c.solver_order, "lower_order_final": capped}
    if not c.get("use_flow_sigmas", False):
        # its weights as it rounds them (float32 log-ρ antiderivatives, which cancel at small steps: at order 3 and
        # 50 steps up to 2.2e-3 of the latents' scale from the exact ones); exact=True runs the exact weights
        options["weights"] = "diffusers"
    return "deis", options


def algorithm_lms(ref, begin: int = 0) -> tuple[str, dict]:
    # started at step `begin` (img2img), diffusers' LMS builds its weights on the nodes of the steps before it
    earlier = ref.sigmas[:begin].tolist()[::-1][:3]
    return "lms", {"order": 4, "prior_sigmas": tuple(earlier)}


def algorithm_sa_solver(ref, begin: int = 0) -> tuple[str, dict]:
    """SASolverScheduler: the stochastic Adams predictor-corrector with its simplified order-2 weights, τ from its
    ``tau_func`` of the step's timestep (default 1 for timesteps 200-800, else 0)."""
    c = ref.config
    if repeats(ref):
        if c.get("use_flow_sigmas") and not any(c.get(k) for k in ("use_karras_sigmas", "use_exponential_sigmas",
                                                                     "use_beta_sigmas")):
            raise SourceRunRefused(
                "SASolverScheduler with use_flow_sigmas=True repeats its last flow time (its σ table ends t_min, t_min: "
                "a zero-length last step, whatever the spacing): its last model call only applies the corrector to "
                "the step before, which sa_solver does not do, and no SASolverScheduler config avoids it. Use a flow "
                "config of DPMSolverMultistepScheduler or UniPCMultistepScheduler, or pass sampler=<another registry "
                "sampler> to run it on this grid (a different image)", "sa_solver")
        raise SourceRunRefused("SASolverScheduler with use_karras/exponential/beta_sigmas repeats its final σ_min: "
                               "its last model call only applies the corrector to the step before, which sa_solver "
                               "does not do; use the default spacing", "sa_solver")
    tau_of = {sigma: float(ref.tau_func(int(t))) for sigma, t in zip(ve_sigmas(ref), ref.timesteps.tolist())}

    def tau_func(sigma, sigma_next):
        return tau_of[float(sigma)]

    # its weights as it rounds them (float32 closed-form integrals that cancel at small steps: up to 1e-3 of the
    # latents' scale from the exact ones at order 3-4 without lower_order_final); exact=True runs the exact weights
    options = {"predictor_order": c.predictor_order, "corrector_order": c.corrector_order,
               "lower_order_final": bool(c.lower_order_final), "tau_func": tau_func, "weights": "diffusers"}
    if c.predictor_order >= 2 or c.corrector_order >= 2:  # its order-2 steps use the simplified weights
        options["simple_order_2"] = True
    return "sa_solver", options


def algorithm_tcd(ref, begin: int = 0) -> tuple[str, dict]:
    """TCDScheduler: the tcd sampler on the class's own float32 ᾱ table, where it places s = ⌊(1 − γ)·t⌋; γ is the
    ``eta`` a pipeline passes to ``step`` (0 by default in diffusers' pipelines, 0.3 where step is called without it)."""
    return "tcd", {"native": VPDiscrete.from_alphas_cumprod(ref.alphas_cumprod)}


def _singlestep_groups(ref, begin: int) -> list[int]:
    """Where DPMSolverSinglestep's groups start (fine-grid indices from ``begin``), and their end: a group is one
    singlestep update whose inner nodes are the timesteps between (its order list, with the order lowered where
    its history is short, as its ``step`` does)."""
    orders = list(ref.order_list)
    n = len(ref.timesteps)
    starts = []
    for i in range(begin, n):
        if min(orders[i], i - begin + 1) == 1:
            starts.append(i)
    return starts + [n]


def algorithm_dpm_singlestep(ref, begin: int = 0) -> tuple[str, dict]:
    c = ref.config
    if c.solver_order == 1:
        return "ddim", {}
    if repeats(ref):
        raise SourceRunRefused("DPMSolverSinglestepScheduler with a repeated final σ_min (karras / exponential / "
                               "beta sigmas and final_sigmas_type='sigma_min') groups a zero-length step; use "
                               "final_sigmas_type='zero'", "dpmpp_2s")
    bounds = _singlestep_groups(ref, begin)
    # λ = −log σ of the VE σ (on a flow config the class's sigmas are flow times t: σ = t/(1 − t))
    lam = [-math.log(v) if v > 0 else math.inf for v in ve_sigmas(ref)]
    rs = []
    for a, b in zip(bounds, bounds[1:]):
        if b - a == 1:
            rs.append(None)
        elif b - a == 2:
            rs.append((lam[a + 1] - lam[a]) / (lam[b] - lam[a]) if math.isfinite(lam[b]) else None)
        else:
            raise SourceRunRefused("DPMSolverSinglestepScheduler with solver_order=3 is not reproduced (its mixed "
                                   "first/second/third-order groups are not a registry sampler); use solver_order=2",
                                   "dpmpp_2s")
    if all(r is None for r in rs):  # first-order steps only (a short run, a late img2img start): no solver_type
        return "dpmpp_2s", {"step_r": tuple(rs)}
    return "dpmpp_2s", {"step_r": tuple(rs), "solver_type": c.solver_type}


def schedule_dpm_singlestep(ref, sigmas: list[float], begin: int = 0) -> list[float]:
    """DPMSolverSinglestep's sampler schedule: the grid at the start of each group, and its end."""
    if ref.config.solver_order == 1:
        return sigmas[begin:]
    return [sigmas[i] for i in _singlestep_groups(ref, begin)]


def algorithm_pndm(ref, begin: int = 0) -> tuple[str, dict]:
    c = ref.config
    if c.skip_prk_steps:
        # one step: PLMS's first step is the plain transfer (its averaged warm-up needs a second timestep)
        return ("plms", {}) if ref.num_inference_steps > 1 else ("ddim", {})
    ratio = c.num_train_timesteps // ref.num_inference_steps
    if ratio % 2:
        # its half step lands on t − ratio//2, but its midpoint timesteps are the next timestep + ratio//2, one lower:
        # the model is called there on a latent at t − ratio//2, which no sampler's step reproduces
        n, even = ref.num_inference_steps, [k for k in range(1, 101) if (c.num_train_timesteps // k) % 2 == 0]
        near = sorted(even, key=lambda k: (abs(k - n), k))[:2]
        raise SourceRunRefused(
            f"PNDMScheduler's pseudo-Runge-Kutta warm-up (skip_prk_steps=False) at {n} steps: "
            f"num_train_timesteps // {n} = {ratio} is odd, so its half steps land on t − {ratio // 2} while the model "
            f"is then called at timestep t − {ratio - ratio // 2}, on a latent not at its timestep, which no sampler "
            f"reproduces; use skip_prk_steps=True (Stable Diffusion's config), a step count whose ratio is even "
            f"(e.g. {near[0]} or {near[1]}), or another sampler (sampler=...)", "pndm")
    ac = ref.alphas_cumprod
    steps = [int(t) for t in ref.timesteps.tolist()[0:12:4]]
    return "pndm", {"midpoints": [_alpha_sigma(ac, ac[t - ratio // 2]) for t in steps]}


def algorithm_flow_match_euler(ref, begin: int = 0) -> tuple[str, dict]:
    # stochastic_sampling: x_next = (1 − t')·x̂0 + t'·z, the consistency (LCM) step on the flow model
    return ("lcm", {"eta": 1.0}) if ref.config.stochastic_sampling else ("euler", {})


def fixed(name: str, **options) -> Callable:
    def algorithm(ref, begin: int = 0) -> tuple[str, dict]:
        return name, dict(options)

    algorithm.__name__ = f"algorithm_{name}"
    return algorithm


# ----------------------------------------------------------------------------------------------------
# Options no registry sampler reproduces


@dataclasses.dataclass(frozen=True)
class Refusal:
    """``option`` with a value that ``applies(config)`` is refused: ``why`` says what the class does and what
    to do instead. An ``algorithm`` refusal concerns the class's own algorithm only (another sampler on its config
    is fine); the others concern the model output or the grid, whichever sampler runs."""

    option: str
    applies: Callable[[Mapping], bool]
    why: str
    algorithm: bool = True


def _set(option: str, why: str, algorithm: bool = True) -> Refusal:
    return Refusal(option, lambda c: bool(c.get(option)), why, algorithm)


def _not(option: str, allowed: tuple, why: str) -> Refusal:
    return Refusal(option, lambda c: c.get(option) not in allowed, why)


_THRESHOLD_DDIM = ("DDIM steps with the clipped x0 but the unclipped noise prediction, which a sampler driven by "
                   "one denoised estimate cannot express; latent diffusion models do not need it: set it to False")
_DPM_ALGORITHMS = _not("algorithm_type", ("dpmsolver++", "sde-dpmsolver++"),
                       "the noise-prediction DPM-Solver variants (dpmsolver, sde-dpmsolver, deprecated in "
                       "diffusers) are not registry samplers; use algorithm_type='dpmsolver++' or "
                       "'sde-dpmsolver++'")
_LEARNED_VARIANCE = _not("variance_type", (None,),
                         "a model that predicts its variance (6 output channels) is not a denoiser the samplers "
                         "take; use a model with variance_type=None")


# ----------------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass(frozen=True)
class Source:
    """What one diffusers scheduler class computes (see the module docstring)."""

    algorithm: Callable[..., tuple[str, dict]]
    grid: Callable[[Any, str], Grid]
    latents: str = "native"  # "ve" | "native"
    x0: tuple[str, ...] = ()  # "clip", "threshold", "lcm"
    noise: str = "randn"  # "randn" | "brownian"
    noise_dtype: str = "output"  # "output" (the model output's dtype) | "float32"
    refusals: tuple[Refusal, ...] = ()
    restart: str | None = None  # why an img2img start at a later step is not the sampler started there
    schedule: Callable | None = None  # (instance, grid sigmas, begin) -> the sampler's schedule; None: the grid
    # how many times a run of `steps` steps draws from the pipeline's generator (the sampler skips the draws whose
    # noise is multiplied by 0 at the last step; the shim draws those too, so the generator ends where it would)
    draws: Callable[[Any, int, float], int] = None
    eta_in_step: str | None = None  # the sampler whose η a pipeline's step `eta` sets (DDIM's noise share, TCD's γ)
    space: Callable[[Mapping], str] = None  # the model's space ("vp" | "flow" | "edm"); None: vp, or flow with
    # use_flow_sigmas

    def model_space(self, config: Mapping) -> str:
        if self.space is not None:
            return self.space(config)
        return "flow" if config.get("use_flow_sigmas") else "vp"


_PNDM_RESTART = ("PNDMScheduler has no set_begin_index: started at a later step (img2img, inpaint) it runs its "
                 "two-call warm-up there and then steps each latent as if it were at the timestep after it, which "
                 "is no sampler's run (and a fresh PLMS run needs one model call more than the pipeline makes). "
                 "Use another scheduler's config for img2img and inpaint (DDIM, DPMSolverMultistep, Euler), or "
                 "sampler='ipndm' (PLMS's Adams-Bashforth steps, warmed up without the extra call)")



def _flow(config: Mapping) -> str:
    return "flow"


def _edm(config: Mapping) -> str:
    return "edm"


_VP_K = dict(grid=grid_per_step, latents="ve")


def _no_sample_prediction(cls: str) -> Refusal:
    """diffusers' ``cls`` refuses a model that predicts the sample itself at its first step (NotImplementedError, or
    PNDM's ValueError): refused here before any model call, not run as a sampler it does not have."""
    return Refusal("prediction_type", lambda c: c.get("prediction_type") == "sample",
                   f"{cls} does not step a model that predicts the sample (diffusers raises at its first step); use "
                   "EulerDiscreteScheduler's, DDIMScheduler's or DPMSolverMultistepScheduler's config for it")

SOURCES: dict[str, Source] = {
    "DDIMScheduler": Source(fixed("ddim"), grid_ddim, eta_in_step="ddim",
                            refusals=(_set("clip_sample", _THRESHOLD_DDIM, algorithm=False),
                                      _set("thresholding", _THRESHOLD_DDIM, algorithm=False))),
    "DDPMScheduler": Source(fixed("ddpm"), grid_ddpm, x0=("clip", "threshold"),
                            refusals=(_not("variance_type", ("fixed_small", "fixed_small_log"),
                                           "only the fixed-small posterior variance (DDPM's default) is the "
                                           "ddpm sampler; use variance_type='fixed_small'"),)),
    "PNDMScheduler": Source(algorithm_pndm, grid_pndm, restart=_PNDM_RESTART, refusals=(
        Refusal("prediction_type", lambda c: c.get("prediction_type") == "v_prediction",
                "PNDMScheduler combines the raw v-predictions of earlier steps and converts the combination to a "
                "noise prediction with the current step's coefficients and latent, which is not PLMS on the model; "
                "use DDIMScheduler or DPMSolverMultistepScheduler's config for v-prediction models"),
        _no_sample_prediction("PNDMScheduler"))),
    "LMSDiscreteScheduler": Source(algorithm_lms, **_VP_K),
    "EulerDiscreteScheduler": Source(fixed("euler"), **_VP_K),
    "EulerAncestralDiscreteScheduler": Source(fixed("euler_ancestral", eta=1.0), **_VP_K,
                                              refusals=(_no_sample_prediction("EulerAncestralDiscreteScheduler"),)),
    "HeunDiscreteScheduler": Source(fixed("heun"), grid_two_calls, latents="ve", x0=("clip",)),
    "KDPM2DiscreteScheduler": Source(fixed("dpm_2"), grid_two_calls, latents="ve",
                                     refusals=(_no_sample_prediction("KDPM2DiscreteScheduler"),)),
    "KDPM2AncestralDiscreteScheduler": Source(fixed("dpm_2_ancestral", eta=1.0), grid_two_calls, latents="ve",
                                              refusals=(_no_sample_prediction("KDPM2AncestralDiscreteScheduler"),)),
    "DPMSolverSDEScheduler": Source(fixed("dpmpp_sde", eta=1.0, r=0.5), grid_two_calls, latents="ve",
                                    noise="brownian", refusals=(_no_sample_prediction("DPMSolverSDEScheduler"),)),
    "DPMSolverSinglestepScheduler": Source(algorithm_dpm_singlestep, grid_per_step, x0=("threshold",),
                                           schedule=schedule_dpm_singlestep, refusals=(
        _not("algorithm_type", ("dpmsolver++",),
             "only the data-prediction DPM-Solver++ singlestep method is reproduced (sde-dpmsolver++ adds noise in "
             "its inner steps, dpmsolver is deprecated); use algorithm_type='dpmsolver++'"),
        _not("solver_order", (1, 2), "only orders 1 and 2 are reproduced; use solver_order=2"),
        _LEARNED_VARIANCE)),
    "DPMSolverMultistepScheduler": Source(algorithm_dpm_multistep, grid_per_step, x0=("threshold",),
                                          noise_dtype="float32",
                                          refusals=(_DPM_ALGORITHMS, _LEARNED_VARIANCE)),
    "UniPCMultistepScheduler": Source(algorithm_unipc, grid_per_step, x0=("threshold",), refusals=(
        Refusal("predict_x0", lambda c: not c.get("predict_x0", True),
                "UniPC on the noise prediction (predict_x0=False) is not a registry sampler; use predict_x0=True"),
        _set("solver_p", "a separate predictor scheduler (solver_p) is not supported; use UniPC's own "
                         "predictor (solver_p=None)"))),
    "DEISMultistepScheduler": Source(algorithm_deis, grid_per_step, x0=("threshold",)),
    "SASolverScheduler": Source(algorithm_sa_solver, grid_per_step, x0=("threshold",), refusals=(
        _not("algorithm_type", ("data_prediction",),
             "SA-Solver on the noise prediction is not the sa_solver sampler; use algorithm_type='data_prediction'"),
        _LEARNED_VARIANCE)),
    "LCMScheduler": Source(fixed("lcm", eta=1.0), grid_lcm, x0=("clip", "threshold", "lcm")),
    # TCD's step reads neither clip_sample nor thresholding (nor LCM's boundary condition): x0 as the model gives it
    "TCDScheduler": Source(algorithm_tcd, grid_tcd, eta_in_step="tcd"),
    "EDMEulerScheduler": Source(fixed("euler"), grid_per_step, latents="ve", space=_edm),
    "EDMDPMSolverMultistepScheduler": Source(algorithm_dpm_multistep, grid_per_step, latents="ve",
                                             x0=("threshold",), space=_edm, refusals=(
        Refusal("solver_order", lambda c: c.get("algorithm_type") == "sde-dpmsolver++" and c.get("solver_order") == 3,
                "EDMDPMSolverMultistepScheduler's sde-dpmsolver++ of order 3 adds no noise in its third-order "
                "steps; use solver_order=2"),)),
    "FlowMatchEulerDiscreteScheduler": Source(algorithm_flow_match_euler, grid_per_step, space=_flow, refusals=(
        _set("invert_sigmas", "inverted (Mochi-style) sigma schedules run from data to noise (the model reads 1 − t), "
                              "which no sampler here runs; keep diffusers' FlowMatchEulerDiscreteScheduler for such a "
                              "model, or set invert_sigmas=False for a model trained on the usual flow times",
             algorithm=False),)),
    "FlowMatchHeunDiscreteScheduler": Source(fixed("heun_flow"), grid_two_calls, space=_flow),
}



def _real_in(value, low: float, high: float, open_at: float | None = None) -> bool:
    """Whether a config value is a real number (not a bool) in [low, high], other than ``open_at``."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value <= high
            and value != open_at)


# The dynamic thresholding values diffusers itself fails on, with thresholding=True (every class that thresholds x0:
# Source.x0 holds "threshold"): a ratio outside [0, 1] (NaN included) fails in torch.quantile at the class's first
# step, after its first model call (the shim failed there the same way, with torch's raw RuntimeError); a
# sample_max_value of 0 or NaN clamps the threshold s to it and x0 / s is NaN, diffusers' whole image. A negative one
# runs there (its s clamps every x0 to the constant 1), and is reproduced as it runs.
_THRESHOLD_VALUES = (
    Refusal("dynamic_thresholding_ratio",
            lambda c: bool(c.get("thresholding")) and not _real_in(c.get("dynamic_thresholding_ratio"), 0, 1),
            "with thresholding=True it is the quantile of |x0| each item is thresholded at, a number in [0, 1] "
            "(diffusers' torch.quantile fails on another at its first step, after the first model call); use "
            "diffusers' default 0.995", algorithm=False),
    Refusal("sample_max_value",
            lambda c: bool(c.get("thresholding")) and not _real_in(c.get("sample_max_value"), -math.inf, math.inf, 0),
            "with thresholding=True it is the largest threshold s (the ratio's quantile of |x0| clamped to [1, "
            "sample_max_value]); at 0 or NaN diffusers divides x0 by s = 0 / NaN and its whole image is NaN; use "
            "diffusers' default 1.0 (or the value the model was trained with)", algorithm=False),
)
for _name, _source in SOURCES.items():
    if "threshold" in _source.x0:
        SOURCES[_name] = dataclasses.replace(_source, refusals=_source.refusals + _THRESHOLD_VALUES)

# How each class's add_noise / scale_noise finds the noise level of its ``timesteps`` argument (its source code, checked
# by tests/test_diffusers_scheduler_seams.py): always from the timesteps themselves (these index alphas_cumprod), or
# from the current step (FlowMatchHeun: its step index, found from the first timestep before a run). The rest look
# the timesteps up until a pipeline calls set_begin_index, then use the begin (or current) step for every item.
ADD_NOISE_BY_TIMESTEPS = frozenset({"DDIMScheduler", "DDPMScheduler", "LCMScheduler", "PNDMScheduler",
                                    "SASolverScheduler", "TCDScheduler"})
ADD_NOISE_BY_STEP = frozenset({"FlowMatchHeunDiscreteScheduler"})

# Classes whose scale_model_input sets their step index (to the begin index, else the index of its timestep), so a
# pipeline reads step_index == begin before the first step; the others set it in step.
STEP_INDEX_IN_SCALE_MODEL_INPUT = frozenset({
    "LMSDiscreteScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler", "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler"})
# Classes whose step(..., return_dict=False) returns (prev_sample,) alone; the others return (prev_sample, x0).
STEP_RETURNS_PREV_ONLY = frozenset({
    "PNDMScheduler", "DPMSolverSinglestepScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
    "DEISMultistepScheduler", "SASolverScheduler", "EDMDPMSolverMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"})
# Classes whose set_timesteps(n, device) leaves ``sigmas`` on that device (the others move theirs to the CPU, "to avoid
# too much CPU/GPU communication"; DDIM, DDPM, LCM, PNDM and TCD have none): a pipeline may index them with the
# latents' device.
SIGMAS_ON_DEVICE = frozenset({"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"})

# Classes whose set_timesteps(sigmas=...) reads them as a ramp in [0, 1] (0 is sigma_max, 1 is sigma_min) that its
# sigma_schedule maps to noise levels, not as the noise levels themselves (EDMEuler; EDMDPMSolverMultistep's
# set_timesteps takes no sigmas)
SIGMAS_AS_RAMP = frozenset({"EDMEulerScheduler"})

# set_timesteps arguments a class takes but never reads on some configs, where diffusers then fails inside with an
# error that names neither (DPMSolverMultistep with use_flow_sigmas: "unsupported operand type(s) for +: 'NoneType'
# and 'int'"): (class, argument) -> (whether the config is one of those, why)
UNREAD_ARGUMENTS: dict[tuple[str, str], tuple[Callable[[Mapping], bool], str]] = {
    ("DPMSolverMultistepScheduler", "timesteps"): (
        lambda c: bool(c.get("use_flow_sigmas")),
        "with use_flow_sigmas=True it builds its flow grid from num_inference_steps alone (None when timesteps "
        "are passed) and never reads timesteps"),
}


def unread(name: str, argument: str, config: Mapping) -> str | None:
    """Why class ``name`` never reads a set_timesteps ``argument`` it takes on this config (:data:`UNREAD_ARGUMENTS`),
    else None."""
    applies, why = UNREAD_ARGUMENTS.get((name, argument), (None, None))
    return why if applies is not None and applies(config) else None


# Classes that take exactly the parameters of a class above and run its steps (checked against diffusers by
# tests/test_diffusers_shim_seams.py): a config without _class_name with those parameters is that class's.
SAME_RUN: dict[str, str] = {"DDIMParallelScheduler": "DDIMScheduler", "DDPMParallelScheduler": "DDPMScheduler"}


def _every_step(ref, steps: int, eta: float) -> int:
    return steps


def _all_but_last(ref, steps: int, eta: float) -> int:
    return steps - 1


def _ddim_draws(ref, steps: int, eta: float) -> int:
    return steps if eta > 0 else 0


def _ddpm_draws(ref, steps: int, eta: float) -> int:
    return steps - (1 if int(ref.timesteps[-1]) == 0 else 0)  # it draws while t > 0


def _sde_draws(ref, steps: int, eta: float) -> int:
    return steps if ref.config.algorithm_type == "sde-dpmsolver++" else 0


def _tcd_draws(ref, steps: int, eta: float) -> int:
    # none at γ = 0; else one a step but at its step index num_inference_steps − 1, which custom timesteps cut by
    # strength never reach (set_timesteps keeps num_inference_steps at the uncut count): every step draws there
    if eta == 0:
        return 0
    return steps - (1 if len(ref.timesteps) == ref.num_inference_steps else 0)


def _flow_draws(ref, steps: int, eta: float) -> int:
    return steps if ref.config.stochastic_sampling else 0


for _name, _draws in {"DDIMScheduler": _ddim_draws, "DDPMScheduler": _ddpm_draws,
                      "EulerAncestralDiscreteScheduler": _every_step, "KDPM2AncestralDiscreteScheduler": _all_but_last,
                      "DPMSolverMultistepScheduler": _sde_draws, "EDMDPMSolverMultistepScheduler": _sde_draws,
                      "LCMScheduler": _all_but_last, "FlowMatchEulerDiscreteScheduler": _flow_draws,
                      "SASolverScheduler": _every_step, "TCDScheduler": _tcd_draws}.items():
    SOURCES[_name] = dataclasses.replace(SOURCES[_name], draws=_draws)


def source_for(config: Mapping) -> tuple[str, Source] | None:
    """The source class named by a config's ``_class_name`` (None for unknown classes and SamplerScheduler)."""
    name = source_name(config.get("_class_name"))
    return None if name is None else (name, SOURCES[name])


def source_name(class_name) -> str | None:
    """The :data:`SOURCES` entry for a diffusers class name: itself, or for a class of :data:`SAME_RUN` the class
    whose steps it runs (a config that names it is read as that class's, as one without _class_name is); else None."""
    name = SAME_RUN.get(class_name, class_name) if isinstance(class_name, str) else None
    return name if name in SOURCES else None


def refusals(name: str, config: Mapping, algorithm: bool = True, given: Mapping | None = None) -> list[str]:
    """Messages for every option of ``config`` that the shim cannot reproduce for class ``name`` (``algorithm``:
    the class's own algorithm runs, not another sampler). ``config`` is the class's resolved config (its defaults
    filled in); ``given``, the config as passed, marks a refused value that is the class's default."""

    def value(option: str) -> str:
        default = given is not None and option not in given
        return f"{config.get(option)!r}" + (f" (the {name} default; the config leaves {option} out)" if default else "")

    return [f"{name} with {r.option}={value(r.option)}: {r.why}" for r in SOURCES[name].refusals
            if (algorithm or not r.algorithm) and r.applies(config)]


# ----------------------------------------------------------------------------------------------------
# What the classes do to x0 before stepping


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, arXiv:2205.11487, §2.3): s = the ``ratio`` quantile of |x0| per
    item, clamped to [1, max_value]; x0 is clamped to [−s, s] and divided by s."""
    flat = x0.reshape(x0.shape[0], -1)
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    s = torch.quantile(work.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(work, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def lcm_boundary(timestep: float, scaling: float, sigma_data: float = 0.5) -> tuple[float, float]:
    """LCM's boundary condition (Luo et al. 2023, eq. 9 with timestep scaling): (c_skip, c_out) at a timestep."""
    t = timestep * scaling
    return sigma_data**2 / (t * t + sigma_data**2), t / math.sqrt(t * t + sigma_data**2)


__all__ = ["Grid", "Source", "SOURCES", "Refusal", "source_for", "source_name", "refusals", "dynamic_threshold",
           "lcm_boundary"]

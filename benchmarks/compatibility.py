"""The compatibility table: every diffusers scheduler × shipped config, run by diffusers and by SamplerScheduler.

    python -m benchmarks.compatibility                       # print the table
    python -m benchmarks.compatibility --out docs/compatibility.md
    python -m benchmarks.compatibility --exact --out docs/benchmarks/compat_exact   # what exact=True buys

Each cell runs the source scheduler and ``SamplerScheduler.from_config(scheduler.config)`` (the sampler chosen
from the config's class) in the loops diffusers' Stable Diffusion pipelines run (txt2img; img2img with
strength 0.6: ``set_begin_index`` + ``add_noise``; inpaint: the 4-channel blend with ``add_noise`` after every
step), with the same model, initial noise and generator, in float32, and reports the largest absolute
difference of the final latents, or the shim's refusal. The model is a tiny random network (no weights are
downloaded); tests/test_diffusers_pipelines.py runs the real pipelines with a tiny UNet on some of the cells.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from . import common

# The scheduler configs the model repositories ship (scheduler/scheduler_config.json), written out.
SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False}
SD21 = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
SDXL = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}
SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
# A zero-terminal-SNR v-model (Lin et al. 2023, arXiv:2305.08891), as SD-2.1-v fine-tunes ship it: σ_max = ∞ (the
# Euler-family classes clamp ᾱ_T to 2⁻²⁴, σ_max = 4096), timesteps from T ("trailing")
ZSNR = {**SD21, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
CONFIGS = {"SD-1.5": SD15, "SD-2.1-v": SD21, "SDXL": SDXL, "SD3": SD3, "zero-SNR-v": ZSNR}
VP_CONFIGS = ("SD-1.5", "SD-2.1-v", "SDXL", "zero-SNR-v")

VP_CLASSES = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
              "DPMSolverSDEScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler", "LCMScheduler",
              "SASolverScheduler", "TCDScheduler")
EDM_CLASSES = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")

# Variants users select on top of a shipped config (a row each, on SD-1.5's config).
VARIANTS: dict[str, list[dict]] = {
    "DPMSolverMultistepScheduler": [
        dict(use_karras_sigmas=True), dict(use_exponential_sigmas=True), dict(use_beta_sigmas=True),
        dict(use_lu_lambdas=True), dict(timestep_spacing="leading"), dict(timestep_spacing="trailing"),
        dict(solver_order=1), dict(solver_order=3), dict(solver_type="heun"),
        dict(algorithm_type="sde-dpmsolver++"), dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True),
        dict(algorithm_type="sde-dpmsolver++", solver_order=1), dict(algorithm_type="sde-dpmsolver++", solver_type="heun"),
        dict(algorithm_type="sde-dpmsolver++", solver_order=3), dict(final_sigmas_type="sigma_min"),
        dict(euler_at_final=True, final_sigmas_type="sigma_min"), dict(thresholding=True, sample_max_value=1.5),
    ],
    "EulerDiscreteScheduler": [dict(use_karras_sigmas=True), dict(timestep_spacing="trailing"),
                               dict(final_sigmas_type="sigma_min"), dict(interpolation_type="log_linear")],
    "UniPCMultistepScheduler": [dict(solver_order=3), dict(solver_type="bh1"), dict(use_karras_sigmas=True),
                                dict(disable_corrector=[0, 2]), dict(final_sigmas_type="sigma_min")],
    "DDIMScheduler": [dict(timestep_spacing="trailing"), dict(set_alpha_to_one=True), dict(clip_sample=True)],
    "DDPMScheduler": [dict(clip_sample=True), dict(thresholding=True)],
    "PNDMScheduler": [dict(skip_prk_steps=False)],
    "HeunDiscreteScheduler": [dict(use_karras_sigmas=True), dict(clip_sample=True)],
    "KDPM2DiscreteScheduler": [dict(use_karras_sigmas=True)],
    "EulerAncestralDiscreteScheduler": [dict(timestep_spacing="trailing")],
    "DEISMultistepScheduler": [dict(solver_order=3), dict(use_karras_sigmas=True)],
    "DPMSolverSDEScheduler": [dict(use_karras_sigmas=True)],
    "FlowMatchEulerDiscreteScheduler": [dict(stochastic_sampling=True), dict(use_karras_sigmas=True)],
    "SASolverScheduler": [dict(predictor_order=3, corrector_order=4), dict(use_karras_sigmas=True)],
    "DPMSolverSinglestepScheduler": [dict(solver_order=3), dict(use_karras_sigmas=True), dict(solver_type="heun")],
    "LCMScheduler": [dict(timestep_spacing="trailing")],
}
STEPS = 6
STRENGTH = 0.6
TOLERANCE = 1e-5
MODES = ("txt2img", "img2img", "inpaint")


class TinyModel:
    """A small random network standing in for a UNet: nonlinear in x, smooth in its time input, deterministic.

    It mixes each pixel with its 3×3 neighbours (as a UNet's convolutions do), so in the inpaint loop an error in
    the unmasked region (``add_noise``'s σ) reaches the masked one and the final latents."""

    def __init__(self, channels: int = 4, hidden: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(hidden, channels, generator=g) / math.sqrt(channels)
        self.w2 = torch.randn(channels, hidden, generator=g) / math.sqrt(hidden)
        self.freq = torch.randn(hidden, generator=g)
        self.w3 = torch.randn(hidden, channels, generator=g) / math.sqrt(channels)  # drawn last: w1, w2 as before

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        h = torch.einsum("oc,bchw->bohw", self.w1, x)
        # the mean of each pixel's 3×3 neighbourhood (zero-padded), mixed across channels
        near = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
        h = h + 0.5 * torch.einsum("oc,bchw->bohw", self.w3, near)
        h = h + torch.sin(t[:, None] * (3e-3 * self.freq))[..., None, None]
        # mostly the input (what a denoiser predicts at high noise), plus a nonlinear, time-dependent part
        return 0.8 * x + 0.4 * torch.einsum("co,bohw->bchw", self.w2, torch.tanh(h))


def _step_kwargs(scheduler, generator, eta: float = 0.0) -> dict:
    import inspect

    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _noised(scheduler, x0, noise, t):
    # SD3's img2img and inpaint pipelines call the flow-matching schedulers' scale_noise(x0, t, noise)
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(x0, noise, t)
    return scheduler.scale_noise(x0, t, noise)


def run(scheduler, model: Callable, mode: str, noise: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
        steps: int = STEPS, seed: int = 3, strength: float = STRENGTH) -> torch.Tensor:
    """The scheduler loop of diffusers' StableDiffusion{,Img2Img,Inpaint}Pipeline (4-channel inpainting)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the global generator, for schedulers that draw from it (DPMSolverSDE's tree seed)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if mode == "txt2img":
        latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow pipelines start from the noise
    else:
        init_timestep = min(int(steps * strength), steps)
        t_start = max(steps - init_timestep, 0)
        timesteps = scheduler.timesteps[t_start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        latents = _noised(scheduler, image, noise, timesteps[:1].repeat(noise.shape[0]))
    extra = _step_kwargs(scheduler, generator)
    for i, t in enumerate(timesteps):
        # flow-matching schedulers (and SD3's pipeline) have no scale_model_input
        inp = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
        out = model(inp, t)
        latents = scheduler.step(out, t, latents, **extra, return_dict=False)[0]
        if mode == "inpaint":
            proper = image
            if i < len(timesteps) - 1:
                proper = _noised(scheduler, proper, noise, torch.tensor([timesteps[i + 1]]))
            latents = (1 - mask) * proper + mask * latents
    return latents


@dataclasses.dataclass
class Cell:
    verdict: str  # "≤ 1e-5", "2e-03" (the rounded max difference), or "refused: why"
    diff: float | None = None


def _verdict(diff: float) -> str:
    if not math.isfinite(diff):
        return "differs: non-finite"
    if diff <= TOLERANCE:
        return "≤ 1e-5"
    return f"{diff:.0e}"


def source_scheduler(name: str, config: dict, variant: dict):
    import diffusers

    cls = getattr(diffusers, name)
    return cls.from_config({**config, **variant})


def compare(name: str, config: dict, variant: dict, modes=MODES, model=None, noise=None, image=None,
            mask=None) -> tuple[str, dict[str, Cell]]:
    """One row: the sampler the shim runs, and a cell per mode (diffusers' scheduler vs the shim in its place)."""
    from samplers.core.errors import SamplersError
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    model = model or TinyModel()
    noise = noise if noise is not None else torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    image = image if image is not None else torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    if mask is None:
        mask = torch.zeros(1, 1, 8, 8)
        mask[..., 2:6, 1:5] = 1.0
    theirs = source_scheduler(name, config, variant)
    ours = None
    cells, sampler = {}, "—"
    for mode in modes:
        try:
            ours = ours or SamplerScheduler.from_config(theirs)  # as from_config(theirs.config), without a rebuild
            out = run(ours, model, mode, noise, image, mask)
            if mode == "txt2img":
                sampler = describe(ours)
        except SamplersError as exc:
            cells[mode] = Cell(f"refused: {exc}")
            continue
        try:
            ref = run(theirs, model, mode, noise, image, mask)
        except Exception as exc:  # noqa: BLE001 - diffusers itself fails on this cell
            cells[mode] = Cell(f"diffusers fails: {type(exc).__name__}")
            continue
        if not bool(torch.isfinite(ref).all()) and bool(torch.isfinite(out).all()):
            cells[mode] = Cell("diffusers returns NaN")  # its bug; the shim's image is the method's
            continue
        diff = float((out.double() - ref.double()).abs().max())
        cells[mode] = Cell(_verdict(diff), diff)
    return sampler, cells


def rows() -> list[tuple[str, str, dict]]:
    """(class, config name, variant) for every cell of the table."""
    out = []
    for name in VP_CLASSES:
        out += [(name, c, {}) for c in VP_CONFIGS]
        out += [(name, "SD-1.5", v) for v in VARIANTS.get(name, [])]
    for name in EDM_CLASSES:
        out += [(name, "SD-1.5", {}), (name, "SD-2.1-v", {})]  # EDM's own sigmas; the configs set the prediction
    for name in FLOW_CLASSES:
        out += [(name, "SD3", {})] + [(name, "SD3", v) for v in VARIANTS.get(name, [])]
    return out


def describe(scheduler) -> str:
    """The registry sampler (with the options it gets from the config) a SamplerScheduler ran."""
    if scheduler is None or scheduler._plan is None:
        return "—"
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scheduler._options.items()
             if v not in (False, (), None)}
    if isinstance(shown.get("step_r"), tuple):
        shown["step_r"] = tuple(None if r is None else round(r, 3) for r in shown["step_r"])
    if "midpoints" in shown:
        shown["midpoints"] = "its t − Δt/2"
    if "tau_func" in shown:
        shown["tau_func"] = "its tau_func"
    if "native" in shown:
        shown["native"] = "its ᾱ table"
    shown.pop("prior_sigmas", None)
    return scheduler.spec.name + (f" ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else "")


def table() -> list[dict]:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    model = TinyModel()
    result = []
    for name, config_name, variant in rows():
        sampler, cells = compare(name, CONFIGS[config_name], variant, MODES, model)
        result.append(dict(scheduler=name, config=config_name, variant=variant, sampler=sampler, cells=cells))
    return result


def _variant(variant: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in variant.items()) or "—"


def environment(dtype: str = "float32") -> str:
    import diffusers

    return (f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"{platform.machine()} CPU, {dtype}, {torch.get_num_threads()} thread(s)")


HEADER = """# diffusers compatibility

Generated by `python -m benchmarks.compatibility --out docs/compatibility.md`; checked by
`tests/test_diffusers_compat_table.py` (a changed cell fails it). Do not edit by hand.

Each row is a diffusers scheduler class built with `Class.from_config(config)` from a shipped config (plus the
variant shown), and `SamplerScheduler.from_config(scheduler.config)` in its place: the shim picks the sampler
from the class (the "sampler" column). Both run the scheduler loop of diffusers' Stable Diffusion pipelines with
the same model, initial noise and generator, for {steps} steps in float32: txt2img, img2img (strength {strength}:
`set_begin_index` and `add_noise`) and inpaint (the 4-channel blend, `add_noise` after each step). A cell is
the largest absolute difference of the final latents: `≤ 1e-5` is a match; a number (rounded to one digit) is
a mismatch; `refused: …` is the shim's error for an option or a run it cannot reproduce (never a silently
different image). The model is a tiny random network; `tests/test_diffusers_pipelines.py` runs the real
pipelines (tiny UNet, no downloads) on the most used cells.

Configs: SD-1.5 = runwayml/stable-diffusion-v1-5's PNDMScheduler config, SD-2.1-v = stabilityai/stable-diffusion-2-1's
DDIMScheduler (v-prediction), SDXL = stabilityai/stable-diffusion-xl-base-1.0's EulerDiscreteScheduler, SD3 =
stabilityai/stable-diffusion-3-medium's FlowMatchEulerDiscreteScheduler (shift 3), zero-SNR-v = SD-2.1-v's config
with `rescale_betas_zero_snr=True`, `timestep_spacing="trailing"` (a zero-terminal-SNR v-model); written out in
`benchmarks/compatibility.py`. EDM classes run with their own defaults (σ 0.002–80, σ_data 0.5) on SD-1.5's betas.
On zero-SNR-v, Euler and EulerAncestral start at σ_max = 4096 (they clamp ᾱ_T to 2⁻²⁴), where diffusers computes
the first step's dt (and σ_up, σ_down) in float32, whose spacing there is 4.9e-4, and the samplers in float64: their
txt2img cells are that rounding carried to the final latents, which depends on the model (with this table's model at
most 1.2e-4 for Euler and 4.7e-4 for EulerAncestral over 1–25 steps; up to 1.1e-3 with models of larger output or
gain: [diffusers.md](diffusers.md#zero-terminal-snr-configs), which also gives what an AMX-capable CPU's float32
rounding makes of them); img2img and inpaint below strength 1 start below σ_max and match (at strength 1,
diffusers' inpaint default, they start at σ_max too and carry the same rounding: 1.8e-5 and 2.6e-5 at 5 steps on
tests/test_diffusers_pipelines.py's pipeline).
DEISMultistepScheduler with `use_flow_sigmas=True`, which no row here covers, differs by diffusers' own float32
rounding, up to 2.5e-4 of the latents' scale ([diffusers.md](diffusers.md#deis-with-use_flow_sigmas)).

"""


def markdown(result: list[dict], env: str) -> str:
    lines = [HEADER.format(steps=STEPS, strength=STRENGTH), f"Ran on: {env}.", "",
             "| scheduler | config | variant | sampler | txt2img | img2img | inpaint |",
             "|---|---|---|---|---|---|---|"]
    notes: dict[str, int] = {}
    for row in result:
        cells = []
        for mode in MODES:
            verdict = row["cells"][mode].verdict
            if verdict.startswith("refused: "):
                why = verdict[len("refused: "):]
                notes.setdefault(why, len(notes) + 1)
                verdict = f"refused [{notes[why]}]"
            cells.append(verdict)
        lines.append(f"| {row['scheduler']} | {row['config']} | {_variant(row['variant'])} | {row['sampler']} | "
                     + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Refusals:", ""]
        lines += [f"{i}. {why}" for why, i in notes.items()]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, str, str], tuple[str, ...]]:
    """The cells of a generated table: (scheduler, config, variant) -> verdicts (refusals by their text)."""
    notes = {}
    for line in text.splitlines():
        head = line.split(". ", 1)
        if len(head) == 2 and head[0].isdigit():
            notes[head[0]] = head[1]
    cells = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| scheduler") or line.startswith("|---"):
            continue
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        verdicts = tuple("refused: " + notes.get(v[len("refused ["):-1], v) if v.startswith("refused [") else v
                         for v in parts[4:])
        cells[(parts[0], parts[1], parts[2])] = verdicts
    return cells


# ----------------------------------------------------------------------------------------------------
# what exact=True buys on the analytic problem


EXACT_CASES = [
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {}),
    ("DDIMScheduler", {}),
    ("PNDMScheduler", {}),
    ("EulerDiscreteScheduler", {}),
    ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    ("DEISMultistepScheduler", {}),
    ("LMSDiscreteScheduler", {}),
]


def exact_start(shim, x_t: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(σ₀, x): the VE state the shim's run starts from, given the pipeline's first latents ``x_t`` (after
    ``set_timesteps``), where the exact ODE endpoint is solved from.

    Classes that keep VE latents (Euler, LMS, KDPM2, ...) hold the state itself: on SD-1.5's linspace config they
    start from noise·init_noise_sigma = noise·σ_max, not noise·√(1 + σ₀²). The others hold x_t = a·x, with a the
    signal scale at the σ of the run's first model call (σ₀ but for a solver that tells the model another σ)."""
    sigma_0 = float(shim._plan.schedule[0])
    if shim.latents == "ve":
        return sigma_0, x_t
    a_call = shim.native.coefficients_at(float(shim._plan.calls[0]))[0]
    return sigma_0, x_t / a_call


def exact_gain(steps_list=(10, 20, 50), batch: int = 256, cases=EXACT_CASES) -> list[dict]:
    """RMS error to the exact ODE endpoint of a Gaussian mixture eps model on SD-1.5's schedule, default vs
    exact=True, for each deterministic scheduler of :data:`EXACT_CASES` (float64)."""
    from samplers.core.native import VPDiscrete
    from samplers.interop.diffusers_scheduler import SamplerScheduler
    from samplers.problems import GaussianMixture

    gm = GaussianMixture.default(shape=(4, 4, 4), components=4, seed=7)
    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    eps = gm.as_model("eps", vp)
    noise = gm.noise(batch, seed=11, dtype=torch.float64)
    out = []
    for name, variant in cases:
        theirs = source_scheduler(name, SD15, variant)
        for steps in steps_list:
            errors = {}
            for exact in (False, True):
                shim = SamplerScheduler.from_config(theirs.config, exact=exact)
                shim.set_timesteps(steps)
                x_t = noise * shim.init_noise_sigma
                sigma_0, start = exact_start(shim, x_t)
                target = gm.ode_endpoint(start, sigma_0)
                latents = x_t
                for t in shim.timesteps:
                    tt = torch.as_tensor(t, dtype=torch.float64).expand(batch)
                    latents = shim.step(eps(shim.scale_model_input(latents, t), tt), t, latents).prev_sample
                final = float(shim._plan.schedule[-1])
                x0 = latents if shim.latents == "ve" else latents * math.sqrt(1 + final**2)
                errors[exact] = float(((x0 - target) ** 2).mean().sqrt())
            out.append(dict(scheduler=name, variant=variant, steps=steps, default=errors[False], exact=errors[True]))
    return out


EXACT_HEADER = "| scheduler | variant | steps | RMS error, default | RMS error, exact=True |"
EXACT_MODULE = "benchmarks.compatibility"


def exact_results(rows: list[dict], seconds: float, command: str) -> dict:
    """A ``--exact`` run as its results.json holds it: the rows of :func:`exact_gain`, the run's device, versions,
    date and commit (``common.run_info``), its dtype, wall time and command."""
    return dict(info=common.run_info("cpu"), dtype="float64", seconds=seconds, command=command, rows=rows)


def exact_markdown(results: dict) -> str:
    """The ``--exact`` table of a run, from its results.json alone; its last line says where and how it ran."""
    lines = [EXACT_HEADER, "|---|---|---|---|---|"]
    lines += [f"| {r['scheduler']} | {_variant(r['variant'])} | {r['steps']} | {r['default']:.2e} | "
              f"{r['exact']:.2e} |" for r in results["rows"]]
    info = results["info"]
    lines += ["", f"Ran on: {common.device_label(info)}, python {info['python']}, torch {info['versions']['torch']}, "
                  f"diffusers {info['versions']['diffusers']}, {results['dtype']}; {info['date_utc']}, in "
                  f"{results['seconds']:.0f} s (`{results['command']}`)."]
    return "\n".join(lines) + "\n"


def report(results, write: bool = True) -> str:
    """The table.md of an ``--exact`` run, generated from its results.json (written beside it with ``write``)."""
    return common.report(results, exact_markdown, EXACT_MODULE, write=write)


# the first line of the table this command writes to an --out file: an existing one that starts otherwise is not
# replaced (--exact writes into a folder, as the benchmarks under docs/benchmarks do)
FIRST_LINES = (HEADER.splitlines()[0],)


def refuse_foreign_out(parser: argparse.ArgumentParser, path) -> None:
    """Refuse (``parser.error``) an existing ``--out`` file that is not a table this command wrote (its first line one
    of :data:`FIRST_LINES`): a README.md or a source file named by mistake would be overwritten."""
    from samplers.core.errors import InvalidInput
    from samplers.core.files import open_regular

    if path is None or not path.exists():
        return
    fix = "name a new file, or a table this command wrote (e.g. --out docs/compatibility.md)"
    try:
        with open_regular(path, "a table this command wrote", fix) as f:
            first = f.read(4096).split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    except InvalidInput as err:
        parser.error(f"--out {err}")
    if first not in FIRST_LINES:
        parser.error(f"--out {str(path)!r} exists and is not a compatibility table (its first line is not "
                     f"{FIRST_LINES[0]!r}), so it would be overwritten: {fix}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compatibility", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--out", type=Path,
                        help="write the markdown table to this file; nothing is written without it (the table is "
                             "printed). An existing file is replaced only when it is such a table (first line "
                             "'# diffusers compatibility'): any other is refused. With --exact, a folder for the "
                             "run's results.json and table.md (docs/benchmarks/compat_exact for the committed run)")
    parser.add_argument("--exact", action="store_true", help="measure what exact=True buys instead")
    parser.add_argument("--report", type=Path, default=None, metavar="RESULTS_JSON",
                        help="run nothing: rewrite the --exact table.md beside RESULTS_JSON, generated from it")
    args = parser.parse_args(argv)
    if args.report is not None:
        if args.out is not None or args.exact:
            parser.error("--report runs nothing, so --out and --exact would have no effect: give --report alone")
        from samplers.core.errors import InvalidInput
        try:
            report(args.report)
        except (InvalidInput, KeyError, TypeError) as err:
            parser.error(f"--report {str(args.report)!r}: {err}")
        print(f"wrote {args.report.with_name('table.md')}", file=sys.stderr)
        return 0
    try:  # a folder with --exact (results.json and table.md, as every benchmark under docs/benchmarks), else a file
        out = None if args.out is None else (common.out_folder if args.exact else common.out_file)(args.out)
    except argparse.ArgumentTypeError as err:
        parser.error(f"argument --out: {err}")
    if not args.exact:
        refuse_foreign_out(parser, out)
    torch.set_num_threads(1)
    env = environment("float64" if args.exact else "float32")  # exact_gain runs its problem in float64
    print(f"# {env}", file=sys.stderr)
    if args.exact:
        started = time.perf_counter()
        rows = exact_gain()
        results = exact_results(rows, time.perf_counter() - started,
                                common.run_command(EXACT_MODULE, sys.argv[1:] if argv is None else argv))
        if out is not None:
            common.write_results(results, out)
            text = report(out / "results.json")
            print(f"wrote {out / 'results.json'} and {out / 'table.md'}", file=sys.stderr)
        else:
            print(exact_markdown(results), end="")
        return 0
    text = markdown(table(), env)
    if out is not None:
        common.atomic_write_bytes(out, text.encode())
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text, end="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``samplers fit``: fit a few-step solver to a model, and say what it buys on starts it never saw.

    samplers fit --model eps --nfe 5 8 10 --out out/fit                    # a shipped U-Net, captions drawn
    samplers fit --model flow --prompts "a red circle" "a blue ring" --nfe 8 --out out/fit-flow
    samplers fit --model mypkg.bench:problem --nfe 8 --out out/fit-mine     # a benchmarks.common.Problem
    samplers fit --model path/to/unet --prompt-embeds embeds.safetensors --nfe 8 --out out/fit-unet

For each NFE it writes ``nfe<N>.json`` (a :class:`samplers.fitted.solver.LearnedSolver` recording the model's
fingerprint; run it as ``sampler="fitted:<OUT>/nfe<N>.json"``) and ``report.json``, and prints the held-out RMSE
(other noise, and other prompts where they are drawn) of the fit beside the best fixed (sampler, schedule)
pair and the model's default sampler (a diffusers folder: its own scheduler), and fitted ÷ best fixed with its 95 %
interval over those starts. A second run with the same ``--out`` resumes: finished NFEs are kept,
references are cached and an interrupted optimisation continues from its last check (both in ``<OUT>/.work``);
one with another model or other fitting options is refused (``report.json`` records them: :func:`setting`) unless
``--restart`` replaces them; ``--rescore`` fits nothing and scores the solvers in ``--out`` again (on ``--heldout``
starts).

A diffusers folder (``UNet2DConditionModel.save_pretrained``) needs its scheduler config (``--scheduler-config``,
default ``<folder>/scheduler_config.json`` or ``<folder>/../scheduler/scheduler_config.json``) and prompt
embeddings: a safetensors file with ``prompt_embeds`` [N, T, C] (item k of a batch uses row k mod N, rows
shifted by the seed) and, for guidance, ``negative_prompt_embeds`` [1, T, C]; both floating point and finite, C the
width the UNet's config takes, checked with the scheduler config before the UNet is built.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import shlex
import time
from pathlib import Path
from typing import Callable

import torch

from samplers.core.argtypes import SEED_MAX, Given, cfg_problem, cfg_scale, path_to, seed, threads, was_given
from samplers.core.errors import InvalidInput
from samplers.core.files import unwritable_folder
from samplers.core.validate import distinct

CALIBRATION_SEED, HELDOUT_SEED = 0, 1  # noise streams; drawn prompts use streams 30_000 + seed
# the dtype the shipped U-Nets' and a diffusers folder's starts, and so their exact endpoints' solve, are in (the
# networks run in float32); a module:function Problem or a mixture names its own
NETWORK_DTYPE = torch.float32
WORK = ".work"  # under --out: cached references and the optimisation's resumable state


@dataclasses.dataclass(eq=False)
class Target:
    """A model to fit to: its denoiser ``D(x, σ, **item_args)`` and what the fit needs to know about it."""

    name: str
    denoiser: Callable
    shape: tuple
    sigma_min: float
    sigma_max: float
    native: object = None
    prediction: str | None = None
    dtype: torch.dtype = torch.float64
    conditioning: Callable[[int, int], dict] | None = None  # (n, seed) -> per-item keyword tensors
    reference_tol: float = 1e-7
    default: tuple[str, str] | None = None  # the model's own (sampler, schedule)
    description: str = ""
    # a diffusers model's own scheduler: (class name, config, (n, seed) -> native model(x_t, t) for those items)
    scheduler: tuple[str, dict, Callable] | None = None
    identity: str = ""  # what the exact endpoints cached under <out>/.work depend on (run_fit sets it: IDENTITY)
    # the model's own default run at a step count: (sampler, sigmas, options) as its pipeline plans it (Pipeline.plan:
    # the flow U-Net's from σ = inf, not from the finite stand-in sigma_max the fit is given); None: none
    default_plan: Callable[[int], tuple[str, torch.Tensor, dict]] | None = None

    def item_args(self, n: int, seed: int) -> dict:
        return {} if self.conditioning is None else self.conditioning(n, seed)

    def noise(self, n: int, seed: int) -> torch.Tensor:
        from samplers.core.seeds import seeded_randn

        return seeded_randn((n, *self.shape), [seed * 1_000_003 + k for k in range(n)]).to(self.dtype)


class ItemCFG:
    """Classifier-free guidance whose conditioning comes with each call (one row per item): the fit slices
    its starts and their prompts together. ``inner`` is the unguided registry denoiser."""

    def __init__(self, inner: Callable, uncond: dict, scale: float):
        self.inner, self.uncond, self.scale = inner, uncond, float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        from models.guidance import CFGDenoiser

        return CFGDenoiser(self.inner, cond, self.uncond, self.scale)(x, sigma)


def shipped_target(kind: str, prompts: list[str] | None, cfg: float | None) -> Target:
    from models import data
    from models.pipeline import Pipeline

    pipe = Pipeline.load(model=kind)
    pipe.model.requires_grad_(False)  # the fit differentiates through the network, not into its weights
    scale = pipe.guidance(cfg)
    native = pipe.native

    def conditioning(n: int, seed: int) -> dict:
        texts = ([prompts[k % len(prompts)] for k in range(n)] if prompts else
                 list(data.make_batch(30_000 + seed, n)[1]))
        return pipe.encode_prompts(texts)

    def default_plan(steps: int) -> tuple[str, torch.Tensor, dict]:  # what `samplers generate --steps N` runs
        return pipe.plan(None, None, steps, {})

    side = pipe.vae.config.image_size // pipe.vae.downsample
    finite_max = native.sigma_max if math.isfinite(native.sigma_max) else 80.0
    return Target(f"shipped {kind} U-Net (cfg {scale:g})", ItemCFG(pipe._denoiser, pipe.encode_prompts([""]), scale),
                  (pipe.vae.latent_channels, side, side), native.sigma_min, finite_max, native,
                  pipe.model.config.prediction, NETWORK_DTYPE, conditioning, 1e-5,
                  (pipe.defaults["sampler"], pipe.defaults["schedule"]),
                  "prompts " + ("given" if prompts else "drawn from the caption grammar (other prompts held out)"),
                  default_plan=default_plan)


def entry_point_target(spec: str) -> Target:
    from benchmarks.common import get_problem

    try:
        p = get_problem(spec)
    except InvalidInput as err:  # a module that does not import, a missing function, an unknown mixture
        raise InvalidInput(f"--model: {err}") from None
    if not spec.startswith("gm-"):
        _check_entry_problem(spec, p)
    from samplers.fitted.identity import prediction

    sigma_max = p.sigma_max if math.isfinite(p.sigma_max) else (p.finite_sigma_max or 80.0)
    return Target(p.name, p.denoiser, tuple(p.shape), p.sigma_min, sigma_max, p.native, prediction(p.denoiser),
                  p.dtype, None, p.reference_tol, None, p.description)


# the Problem fields samplers fit cannot honour: benchmarks.quality reads them, so a fit that ignored them would fit
# (or be scored against) another model than the benchmark runs
_ENTRY_UNUSED = {
    "denoiser_for": "a denoiser per batch (e.g. conditioned on that batch's prompts), where samplers fit runs one "
                    "denoiser on every start",
    "native_model_for": "a native model per batch, where samplers fit's default row runs none for a module:function "
                        "Problem",
}
# (a Problem's reference_fn — exact endpoints of the same denoiser — is not read either: samplers fit solves that
# denoiser's PF-ODE adaptively, --reference-tol, which is the same model's endpoint, so it is no other model)


def _check_entry_problem(spec: str, p) -> None:
    """A module:function Problem whose fields samplers fit would ignore is refused, naming them, before any work."""
    unused = [name for name in _ENTRY_UNUSED if getattr(p, name, None) is not None]
    if unused:
        raise InvalidInput(f"--model {spec}: the Problem {p.name!r} sets " + "; ".join(
            f"{name} ({_ENTRY_UNUSED[name]})" for name in unused) + " — samplers fit would ignore "
            + ("it" if len(unused) == 1 else "them") + " and fit another model than benchmarks run. Return a Problem "
            "without " + (" or ".join(unused)) + " for samplers fit (one denoiser, the same on every start: "
            "dataclasses.replace(problem, " + ", ".join(f"{n}=None" for n in unused) + ") where that is the model), "
            "or fit a shipped model (--model eps, flow) or a diffusers UNet folder, whose prompts samplers fit draws")


def _json_object(path: Path, what: str, fix: str, missing: Exception | None = None) -> dict:
    """The JSON object in ``path`` (``what``: "the scheduler config"), or InvalidInput naming the file and ``fix``:
    whatever :func:`samplers.core.files.read_json` refuses (not a regular file — a FIFO would wait forever —,
    unreadable, not UTF-8, not JSON, nested deeper than Python reads, an integer longer than Python converts, a key
    named twice in one object), or a JSON value other than an object; ``missing``: raised for a path that does not
    exist."""
    from samplers.core.files import read_json

    value = read_json(path, f"readable JSON ({what})", fix, missing=missing)
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} {path} holds a JSON {type(value).__name__}, not an object of settings; {fix}")
    return value


def _scheduler_config(folder: Path, scheduler_config: str | None) -> tuple[dict, Path]:
    """The diffusers scheduler config of ``folder`` (or ``--scheduler-config``), a JSON object, and its file. The
    file given, or the first default path where something is, is read as it is (:func:`_json_object`: a FIFO or a
    device there is named so, not passed over as "no scheduler config")."""
    fix = "pass --scheduler-config with the pipeline's scheduler/scheduler_config.json"
    if scheduler_config:
        given = Path(scheduler_config)
        if given.is_dir():
            raise InvalidInput(f"--scheduler-config {scheduler_config} is a folder: give its scheduler_config.json "
                               "(the pipeline's scheduler/scheduler_config.json)")
        fix = "give --scheduler-config the pipeline's scheduler/scheduler_config.json"
        missing = InvalidInput(f"--scheduler-config {scheduler_config}: no such file; {fix}")
        return _json_object(given, "the scheduler config", fix, missing), given
    candidates = [folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise InvalidInput(f"no scheduler config for {folder}: looked at {', '.join(map(str, candidates))}; pass "
                           "--scheduler-config (the pipeline's scheduler/scheduler_config.json)")
    return _json_object(found, "the scheduler config", fix), found


def _check_scheduler(config: dict, path: Path, nfe) -> str | None:
    """The diffusers scheduler class ``config`` names (``_class_name``; None where it names none), checked before
    anything is fitted: a scheduler class of the installed diffusers, built from the config, whose ``set_timesteps``
    takes a step count within each NFE of ``nfe`` (the report's default row runs it, after every fit). Anything else
    is refused naming ``path`` and diffusers' own reason."""
    name = config.get("_class_name")
    if name is None:
        return None
    fix = "correct it, or pass --scheduler-config with the pipeline's own scheduler/scheduler_config.json"
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise InvalidInput(f"the scheduler config {path} names _class_name {name!r}, which is not a scheduler class of "
                           f"the installed diffusers {diffusers.__version__} (e.g. DPMSolverMultistepScheduler, "
                           f"EulerDiscreteScheduler); {fix}")
    from benchmarks.peers import PeerRefused, peer_steps
    from samplers.interop.diffusers_scheduler import check_config_keys

    # a key no scheduler class takes is a misspelling (diffusers would drop it and run its default); one another
    # class takes is left aside, as diffusers' from_config leaves it (SD-1.5's PNDM config holds clip_sample)
    check_config_keys(config, f"the scheduler config {path}")
    settings = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        for budget in sorted(set(nfe)):
            peer_steps(name, settings, budget, strict=True)
    except PeerRefused as err:
        raise InvalidInput(f"the scheduler config {path}: {err}; {fix}") from None
    return name


def _check_default_start(name: str | None, config: dict, path: Path, nfe, native, prediction: str) -> None:
    """The report's default row (diffusers' own loop of the scheduler ``name``, at the most steps each NFE of
    ``nfe`` takes: :func:`benchmarks.peers.peer_steps`) starts where the model has a value: checked before anything
    is fitted. A class that starts at its first timestep's ᾱ = 0 (σ = inf: DDIM / DDPM / LCM / TCD with
    rescale_betas_zero_snr=True and 'trailing' spacing) cannot run an ε model there (diffusers' latents are NaN),
    and the row's refusal came after the whole fit, which it threw away. Refused as the diffusers shim refuses it,
    worded by the config (:func:`samplers.interop.diffusers_sources.zero_snr_refusal`: the fields and their fixes).
    The start is the class's own (:func:`benchmarks.peers.peer_start`, from its ``alphas_cumprod``), not the
    model's: DPMSolverMultistep / UniPC (ᾱ_T clamped to 2⁻²⁴, σ 4096) and DEIS / DPMSolverSinglestep / SASolver (no
    rescale_betas_zero_snr: the plain table) start at a finite σ on the same config, and run."""
    from samplers.core.conversion import infinite_sigma_refusal

    why = infinite_sigma_refusal(prediction, native)
    if name is None or why is None:
        return
    from benchmarks.peers import make_scheduler, peer_start, peer_steps
    from samplers.interop.diffusers_sources import zero_snr_refusal

    settings = {k: v for k, v in config.items() if not k.startswith("_")}
    for budget in sorted(set(nfe)):
        found = peer_steps(name, settings, budget)
        if found is None:
            continue
        scheduler = make_scheduler(name, settings)
        scheduler.set_timesteps(found[0])
        if math.isinf(peer_start(scheduler, native)):
            raise InvalidInput(f"the scheduler config {path}: {zero_snr_refusal(scheduler, name, why)}")


def _prompt_embeddings(embeds: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``prompt_embeds`` [N, T, C] and ``negative_prompt_embeds`` [1, T, C] (or None) of a safetensors file, float32,
    checked: floating point (an integer tensor is not embeddings), finite, of those shapes."""
    from safetensors.torch import load

    from samplers.core.files import open_regular

    path = Path(embeds)
    how = ("write it with safetensors.torch.save_file({'prompt_embeds': [N, T, C], 'negative_prompt_embeds': "
           "[1, T, C]}, FILE) from the pipeline's encode_prompt")
    if path.is_dir():
        raise InvalidInput(f"--prompt-embeds {path} is a folder; give the safetensors file of the embeddings ({how})")
    # opened as a regular file only: a FIFO or a device is named so (it was "no such file"), never waited on
    with open_regular(path, "the --prompt-embeds safetensors file", how,
                      missing=FileNotFoundError(f"--prompt-embeds {path}: no such file; {how}")) as f:
        blob = f.read()
    try:
        tensors = load(blob)  # safetensors: reading it runs no code
    except Exception as err:  # noqa: BLE001 - SafetensorError and the like: named, with the fix
        raise InvalidInput(f"--prompt-embeds {path} is not a safetensors file ({type(err).__name__}: {err}); "
                           f"{how}") from None
    rows = tensors.get("prompt_embeds")
    if rows is None or rows.ndim != 3 or 0 in rows.shape:
        found = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(tensors.items())) or "nothing"
        raise InvalidInput(f"{path} must hold prompt_embeds [N, T, C] (N ≥ 1 prompts of T tokens of width C); it "
                           f"holds {found}")
    negative = tensors.get("negative_prompt_embeds")
    checked = []
    for name, t in (("prompt_embeds", rows), ("negative_prompt_embeds", negative)):
        if t is None:
            checked.append(None)
            continue
        if not t.is_floating_point():
            raise InvalidInput(f"{name} in {path} is {t.dtype}: embeddings are floating point (float32, float16 or "
                               "bfloat16), as the text encoder returns them; save them before any rounding to integers")
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise InvalidInput(f"{name} in {path} holds {bad} NaN or infinite value(s) (as float32); re-encode the "
                               "prompts (a NaN from the text encoder, or float64 values beyond float32's range)")
        checked.append(t)
    rows, negative = checked
    if negative is not None and tuple(negative.shape) != (1, *rows.shape[1:]):
        raise InvalidInput(f"negative_prompt_embeds in {path} is {list(negative.shape)}, must be [1, T, C] = "
                           f"[1, {rows.shape[1]}, {rows.shape[2]}] (one row, the tokens and width of prompt_embeds "
                           f"{list(rows.shape)}); save one row encoded as the prompts were")
    return rows, negative


def _embedding_width(config: dict) -> int | None:
    """The width of ``encoder_hidden_states`` a UNet config takes (None: not known from the config)."""
    kind, hid = config.get("encoder_hid_dim_type"), config.get("encoder_hid_dim")
    if kind == "text_proj" or (kind is None and hid is not None):
        return hid if isinstance(hid, int) else None
    if kind is not None:
        return None
    width = config.get("cross_attention_dim")
    if isinstance(width, (list, tuple)) and width and len(set(width)) == 1:
        width = width[0]
    return width if isinstance(width, int) and not isinstance(width, bool) else None


UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"  # what UNet2DConditionModel.save_pretrained writes
UNET_FIX = ("give the folder UNet2DConditionModel.save_pretrained(FOLDER, safe_serialization=True) wrote (a "
            "pipeline's unet/), its config.json and weights saved together")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _sample_side(unet_config: dict, path: Path) -> tuple[int, int]:
    """The latent (height, width) of a UNet config's ``sample_size`` (an integer, or [height, width]), each >= 1,
    and its ``in_channels`` = ``out_channels`` >= 1 (the fit's denoiser returns a latent of the input's shape):
    checked before the UNet is built, which would first fail in its first call."""
    side = unet_config.get("sample_size")
    sides = side if isinstance(side, list) and len(side) == 2 else [side, side]
    if not all(map(_positive_int, sides)):
        raise InvalidInput(f"the UNet config {path} has sample_size {side!r}: it must be a whole number >= 1 (or "
                           "[height, width] of two), the latent side the fit draws its starts at (the image side ÷ "
                           f"the VAE's downsampling: 64 for SD 1.5, 128 for SDXL); correct it, or {UNET_FIX}")
    for field in ("in_channels", "out_channels"):
        if not _positive_int(unet_config.get(field, 4)):
            raise InvalidInput(f"the UNet config {path} has {field} {unet_config.get(field)!r}: it must be a whole "
                               f"number >= 1 (the latent's channels, 4 for SD 1.5); correct it, or {UNET_FIX}")
    if unet_config.get("in_channels", 4) != unet_config.get("out_channels", 4):
        raise InvalidInput(f"the UNet config {path} has in_channels {unet_config.get('in_channels', 4)} and "
                           f"out_channels {unet_config.get('out_channels', 4)}: samplers fit takes a UNet whose output "
                           "has the latent's channels (an ε, v or x0 prediction; not a learned variance, nor an "
                           "inpainting UNet's extra input channels)")
    for field in ("addition_embed_type", "class_embed_type", "num_class_embeds"):
        if unet_config.get(field) is not None:
            raise InvalidInput(f"the UNet config {path} sets {field} {unet_config[field]!r}: that UNet takes "
                               "conditioning besides the prompt embeddings (SDXL's added_cond_kwargs, class labels), "
                               "which samplers fit does not pass; fit a UNet conditioned on encoder_hidden_states "
                               "alone")
    return int(sides[0]), int(sides[1])


def _unet_shards(folder: Path, index: Path) -> list[Path]:
    """The shards ``index`` (``diffusion_pytorch_model.safetensors.index.json``) lists, as diffusers' loader reads
    them (``_get_checkpoint_shard_files``: a ``metadata`` object, a ``weight_map`` of tensor → file name in
    ``folder``), each a safetensors file: diffusers reads a listed shard by its extension, and one not ending in
    ``.safetensors`` (``.bin``, ``.ckpt``) with ``torch.load``: a pickle, which samplers fit never loads."""
    fix = f"save the UNet again with save_pretrained(FOLDER, safe_serialization=True), or {UNET_FIX}"
    saved = _json_object(index, "the UNet's weights index", fix)
    weight_map = saved.get("weight_map")
    if not (isinstance(weight_map, dict) and weight_map and all(
            isinstance(v, str) and v and Path(v).name == v for v in weight_map.values())):
        raise InvalidInput(f"the UNet's weights index {index} has no weight_map of tensor → shard file in "
                           f"{folder}; {fix}")
    if not isinstance(saved.get("metadata"), dict):  # diffusers indexes it (a raw KeyError / TypeError)
        raise InvalidInput(f"the UNet's weights index {index} has no metadata object "
                           f"(save_pretrained writes one beside its weight_map); {fix}")
    names = sorted(set(weight_map.values()))
    pickles = [n for n in names if not n.endswith(".safetensors")]
    if pickles:
        raise InvalidInput(f"the UNet's weights index {index} lists shard(s) {', '.join(pickles)}, not safetensors: "
                           "diffusers would load them with torch.load (a pickle; unpickling runs code), and samplers "
                           f"fit reads UNet weights from safetensors only; {fix}")
    files = [folder / name for name in names]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise InvalidInput(f"the UNet's weights index {index} lists shard(s) {', '.join(absent)} that are not "
                           f"files in {folder}; {fix}")
    return files


def _unet_weights(folder: Path) -> dict[str, tuple[list[int], str, Path]]:
    """Each tensor's (shape, dtype, file) in the UNet's safetensors weights in ``folder``, read from their headers
    alone: the files ``UNet2DConditionModel.from_pretrained(folder, use_safetensors=True)`` loads, which are the
    shards ``diffusion_pytorch_model.safetensors.index.json`` lists where that index is a file (diffusers looks for
    it first, and then never reads the single file), else ``diffusion_pytorch_model.safetensors``. A folder holding
    both is refused naming both (which one was meant is unknown: checking the single file fitted the index's
    shards, a pickle among them); nothing else is read: a pickle (``.bin``, ``.ckpt``) is never loaded (unpickling
    runs code). A missing, truncated or unreadable file is refused, named."""
    from safetensors import safe_open

    single, index = folder / UNET_WEIGHTS, folder / f"{UNET_WEIGHTS}.index.json"
    if index.is_file() and single.is_file():
        raise InvalidInput(f"--model {folder} holds both {single.name} and {index.name}: diffusers loads the shards "
                           f"the index lists and never reads {single.name}, so which weights were meant is unknown; "
                           "keep one (remove the index for the single file, or the single file for the shards), "
                           f"or {UNET_FIX}")
    if index.is_file():
        files = _unet_shards(folder, index)
    elif single.is_file():
        files = [single]
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl"))
        found = (f"only {', '.join(pickles)}, a pickle checkpoint, which is never loaded (unpickling runs code); "
                 "convert it once in an environment you trust with UNet2DConditionModel.from_pretrained(FOLDER)"
                 ".save_pretrained(FOLDER, safe_serialization=True)" if pickles else "no weights")
        raise InvalidInput(f"--model {folder}: no {UNET_WEIGHTS} there ({found}); samplers fit reads UNet weights "
                           f"from safetensors only; {UNET_FIX}")
    tensors: dict[str, tuple[list[int], str, Path]] = {}
    for path in files:
        try:
            with safe_open(path, "pt") as f:
                for key in f.keys():
                    piece = f.get_slice(key)
                    tensors[key] = (list(piece.get_shape()), piece.get_dtype(), path)
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: named, with the fix
            raise InvalidInput(f"the UNet weights {path} are not a readable safetensors file ({type(err).__name__}: "
                               f"{err}; truncated or damaged?); {UNET_FIX}") from None
    return tensors


def _check_unet_files(folder: Path, unet_config: dict, config_path: Path) -> dict[str, Path]:
    """The UNet in ``folder``, checked without reading its weights: its config builds a UNet (on the meta device:
    no memory, no weights), asks for no quantization, and its safetensors weights hold exactly that UNet's tensors,
    of its shapes, floating point. Anything else is refused naming the files, before the UNet is built or called
    (loading would fail in load_state_dict, or run a UNet other than the weights'). Returns each tensor's file, for
    :func:`_check_finite_weights` to name."""
    from diffusers import UNet2DConditionModel

    name = unet_config.get("_class_name", "UNet2DConditionModel")
    if name != "UNet2DConditionModel":
        raise InvalidInput(f"the config {config_path} describes a {name!r}, not a UNet2DConditionModel: "
                           f"{UNET_FIX}")
    # the one key from_pretrained acts on and from_config (the meta build below) leaves aside: diffusers builds a
    # quantizer from it (bitsandbytes, torchao, GGUF ...), which fails raw here ("No GPU found", "requires torchao
    # >= ...") or, where it runs, fits a quantized UNet other than the one the weights' headers describe
    if unet_config.get("quantization_config") is not None:
        method = unet_config["quantization_config"]
        method = method.get("quant_method", method) if isinstance(method, dict) else method
        raise InvalidInput(f"the UNet config {config_path} sets quantization_config (quant_method {method!r}): "
                           "samplers fit runs the UNet in float32 and loads no quantized model; save the UNet "
                           f"unquantized (its float weights, without quantization_config), or {UNET_FIX}")
    try:
        with torch.device("meta"):
            skeleton = UNet2DConditionModel.from_config(unet_config)
    except Exception as err:  # noqa: BLE001 - diffusers' own checks of the config: named, with the fix
        raise InvalidInput(f"the UNet config {config_path} does not describe a UNet diffusers builds "
                           f"({type(err).__name__}: {err}); correct it, or {UNET_FIX}") from None
    want = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    have = _unet_weights(folder)
    shapes = {k: shape for k, (shape, _, _) in have.items()}
    if hasattr(skeleton, "_fix_state_dict_keys_on_load"):  # the old attention names diffusers renames on load
        skeleton._fix_state_dict_keys_on_load(shapes)
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    differ = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])
    if missing or extra or differ:
        def some(keys, show):
            return ", ".join(map(show, keys[:3])) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        what = "; ".join(part for part in (
            differ and f"{len(differ)} of another shape (" + some(
                differ, lambda k: f"{k} {shapes[k]} in the weights, {want[k]} by the config") + ")",
            missing and f"{len(missing)} the config's UNet has and the weights lack (" + some(missing, str) + ")",
            extra and f"{len(extra)} in the weights the config's UNet lacks (" + some(extra, str) + ")") if part)
        raise InvalidInput(f"the weights in {folder} are not the UNet its config {config_path} describes: tensors "
                           f"{what}; {UNET_FIX}")
    ints = sorted(k for k, (_, dtype, _) in have.items() if dtype not in ("F16", "BF16", "F32", "F64"))
    if ints:
        raise InvalidInput(f"the weights in {folder} hold tensors that are not floating point ("
                           + ", ".join(f"{k} {have[k][1]}" for k in ints[:3]) + f"); {UNET_FIX}")
    return {k: path for k, (_, _, path) in have.items()}


def _check_finite_weights(unet: torch.nn.Module, folder: Path, files: dict[str, Path]) -> None:
    """Every parameter and buffer of the loaded ``unet`` finite, checked once after loading and before any model
    call (one pass over the weights, in the dtype each was loaded in, which the UNet runs in); else InvalidInput
    naming the first tensor that is not, how many of its values, and its file (``files``: :func:`_check_unet_files`'s).
    A NaN or infinity in the weights surfaced only in the first solve, as a NaN blamed on float16 or the
    tolerance."""
    for name, t in (*unet.named_parameters(), *unet.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nan, total = int(torch.isnan(t).sum()), int((~torch.isfinite(t)).sum())
            where = files.get(name)
            raise InvalidInput(f"the UNet weights {where if where else 'in ' + str(folder)} hold {total} value(s) "
                               f"that are not finite in {name} ({nan} NaN, {total - nan} infinite): the "
                               "model gives NaN wherever it reads them; use the weights it was trained to (a "
                               f"damaged download or a diverged training run?), or {UNET_FIX}")


def diffusers_target(folder: Path, scheduler_config: str | None, embeds: str | None, cfg: float | None,
                     nfe=()) -> Target:
    """A diffusers UNet folder as a Target. Its files are read and checked (scheduler config, and its scheduler at
    each NFE of ``nfe``; prompt embeddings against the UNet's config; the UNet's config and the headers of its
    safetensors weights) before the UNet is built or called."""
    from samplers.interop.diffusers_models import (DiffusersModel, check_model_flags, check_x0_flags, model_config,
                                                   native_from_config, sigma_data_from_config)
    from samplers import to_denoiser

    try:
        from diffusers import UNet2DConditionModel
    except ImportError as err:
        raise InvalidInput(f"a diffusers folder needs the diffusers package ({err}); pip install diffusers") from None
    config, config_file = _scheduler_config(folder, scheduler_config)
    source = _check_scheduler(config, config_file, nfe)  # the default row's scheduler: before anything is fitted
    # read as denoiser_from_diffusers reads it: its class's defaults filled in, misspelt keys refused; a scheduler
    # that clips or thresholds x0, or that the denoiser would read wrongly (Mochi's invert_sigmas, dynamic shifting
    # without the image's mu), is not the model the fit sees
    model_cfg = model_config(config)
    check_x0_flags(model_cfg)
    check_model_flags(model_cfg, None)
    native, prediction = native_from_config(model_cfg)
    _check_default_start(source, config, config_file, nfe, native, prediction)
    if embeds is None:
        raise InvalidInput("a diffusers UNet needs --prompt-embeds FILE (safetensors with prompt_embeds [N, T, C] "
                           "and, for guidance, negative_prompt_embeds [1, T, C])")
    rows, negative = _prompt_embeddings(embeds)
    scale = 1.0 if cfg is None else float(cfg)
    if scale < 1.0:  # diffusers' pipelines guide only above 1: below it they run the conditional model alone
        raise InvalidInput(f"--cfg {scale:g} is below 1, where diffusers' pipelines do not guide (they run the "
                           "conditional model alone, as at 1): pass --cfg 1 for that model, or a scale above 1")
    if scale != 1.0 and negative is None:
        raise InvalidInput(f"--cfg {scale:g} needs negative_prompt_embeds [1, T, C] in {embeds} (the empty or "
                           "negative prompt, encoded as the prompts were); or leave --cfg out for no guidance")
    unet_path = folder / "config.json"
    if not unet_path.is_file():
        raise InvalidInput(f"--model {folder}: no readable diffusers UNet config.json there ({unet_path} is "
                           f"{'a folder' if unet_path.is_dir() else 'missing'}); {UNET_FIX}")
    unet_config = _json_object(unet_path, "the UNet config", UNET_FIX)
    width = _embedding_width(unet_config)
    if width is not None and rows.shape[2] != width:
        raise InvalidInput(f"prompt_embeds in {embeds} are {rows.shape[2]} wide and the UNet in {folder} takes "
                           f"encoder_hidden_states {width} wide (its config's "
                           f"{'encoder_hid_dim' if unet_config.get('encoder_hid_dim') else 'cross_attention_dim'}): "
                           "encode the prompts with this model's own text encoder")
    height, breadth = _sample_side(unet_config, unet_path)
    files = _check_unet_files(folder, unet_config, unet_path)
    # in the dtype the fit runs it in (NETWORK_DTYPE): diffusers loads float16 / bfloat16 tensors as float32 but
    # keeps a float64 one float64, so one float64 bias among float32 weights failed the first model call raw ("Input
    # type (float) and bias type (double) should be the same"), and an all-float64 file ran in float64
    unet = UNet2DConditionModel.from_pretrained(folder, use_safetensors=True).to(NETWORK_DTYPE).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    _check_finite_weights(unet, folder, files)
    uncond = {"encoder_hidden_states": (negative if negative is not None else rows)[:1]}
    inner = to_denoiser(DiffusersModel(unet), prediction, native, sigma_data_from_config(model_cfg))

    def conditioning(n: int, seed: int) -> dict:
        idx = torch.tensor([(seed * 7_919 + k) % rows.shape[0] for k in range(n)])
        return {"encoder_hidden_states": rows[idx]}

    def native_for(n: int, seed: int):
        return DiffusersModel(unet, conditioning(n, seed)["encoder_hidden_states"],
                              uncond["encoder_hidden_states"].expand(n, -1, -1) if scale != 1.0 else None, scale)

    finite_max = native.sigma_max if math.isfinite(native.sigma_max) else 80.0
    scheduler = ((source, {k: v for k, v in config.items() if not k.startswith("_")}, native_for)
                 if source else None)
    return Target(f"diffusers UNet {folder.name}", ItemCFG(inner, uncond, scale),
                  (int(unet.config.in_channels), height, breadth), native.sigma_min, finite_max, native, prediction,
                  NETWORK_DTYPE, conditioning, 1e-5, None, f"{rows.shape[0]} prompt embeddings from {embeds}",
                  scheduler)


def model_kind(spec: str) -> str:
    """What ``--model`` names: ``shipped`` (eps, flow), ``diffusers`` (a folder), ``entry`` (module:function or a
    gm- mixture); anything else is refused."""
    if spec in ("eps", "flow"):
        return "shipped"
    if spec == "":  # Path('') is the current folder
        raise InvalidInput("--model '' is an empty path: name a model (eps, flow), a module:function entry point, a "
                           "mixture (gm-ve, gm-vp-eps, gm-flow) or a diffusers UNet folder (. for the current one)")
    if Path(spec).is_dir():
        return "diffusers"
    if ":" in spec or spec.startswith("gm-"):
        return "entry"
    raise InvalidInput(f"--model {spec!r} is not a shipped model (eps, flow), a module:function entry point, a "
                       "mixture (gm-ve, gm-vp-eps, gm-flow) or a diffusers UNet folder")


# the options each kind of model reads; any other given is refused (it would be silently ignored), with the reason
_READS = {"shipped": ("--cfg", "--prompts"), "diffusers": ("--cfg", "--prompt-embeds", "--scheduler-config"),
          "entry": ()}
_WHY = {"--cfg": "guidance needs a text-conditioned model (eps, flow or a diffusers folder)",
        "--prompts": "prompts are encoded only by the shipped models' text encoder (a diffusers folder takes "
                     "--prompt-embeds)",
        "--prompt-embeds": "prompt embeddings feed only a diffusers UNet folder",
        "--scheduler-config": "a scheduler config describes only a diffusers UNet folder"}


def check_model_options(args) -> str:
    """The kind of ``--model`` (:func:`model_kind`), after refusing the options it would not read."""
    kind = model_kind(args.model)
    given = {"--cfg": args.cfg, "--prompts": args.prompts, "--prompt-embeds": args.prompt_embeds,
             "--scheduler-config": args.scheduler_config}
    for option, value in given.items():
        if value is not None and option not in _READS[kind]:
            raise InvalidInput(f"{option} has no effect with --model {args.model!r}: {_WHY[option]}; leave it out")
    if kind == "shipped" and args.prompts is not None:  # by txt2img's rule, from config.json: before the weights
        from models.pipeline import PipelineSpec

        spec = PipelineSpec.read(model=args.model)  # its own errors are the model's, not --prompts'
        try:
            spec._prompts(args.prompts)
        except InvalidInput as err:
            raise type(err)(f"--prompts: {err}") from None
    return kind


def _at_least(value: float) -> float:
    """``value`` rounded up to three significant digits: a figure to print that is itself not below ``value``."""
    from decimal import ROUND_CEILING, Decimal

    d = Decimal(value)
    return float(d.quantize(Decimal(1).scaleb(d.adjusted() - 2), rounding=ROUND_CEILING))


def check_reference_tol(tol: float, dtype: torch.dtype, model: str) -> None:
    """Refuse a ``--reference-tol`` below the machine epsilon of ``dtype``, the one the exact endpoints are solved
    in (:func:`samplers.problems.pf_ode_solution` runs in the starts' dtype): no step of that arithmetic is more
    exact, so the adaptive solve shrinks its steps until the evaluation limit or a step-size underflow, and fails
    late, after the model is built (gm-ve at 1e-17: "the model returned NaN/Inf at σ = nan")."""
    eps = torch.finfo(dtype).eps
    if tol < eps:
        name = str(dtype).removeprefix("torch.")
        floor = _at_least(eps)
        raise InvalidInput(f"--reference-tol {tol:g} is below what the exact endpoints' solve can resolve: --model "
                           f"{model} is solved in {name}, whose machine epsilon (its relative precision) is {eps:.3g}, "
                           f"and an adaptive solve cannot meet a tolerance finer than its arithmetic; pass "
                           f"--reference-tol {floor:g} or above")


def make_target(args) -> Target:
    spec = args.model
    if spec in ("eps", "flow"):
        return shipped_target(spec, args.prompts, args.cfg)
    if Path(spec).is_dir():
        return diffusers_target(Path(spec), args.scheduler_config, args.prompt_embeds, args.cfg, args.nfe)
    if ":" in spec or spec.startswith("gm-"):
        return entry_point_target(spec)
    raise InvalidInput(f"--model {spec!r} is not a shipped model (eps, flow), a module:function entry point or a "
                       "diffusers UNet folder")


# ------------------------------------------------------------------------------------------------------


CACHE_FIX = "delete it (it is solved again on the next run)"


def read_cache(path: Path) -> dict:
    """A cached file under ``<out>/.work`` (exact endpoints): read as data only, a dict, or an error naming it."""
    from samplers.fitted.fitting import read_saved

    return read_saved(path, "the cached exact endpoints", CACHE_FIX)


def _unchanged(path: Path, saved: dict) -> None:
    """``saved`` (a cache file's content) is what this code wrote there: its ``digest`` (recorded when it was
    written: :func:`samplers.fitted.fitting.content_digest`) is that of the rest. A file without one (another
    program's, or an earlier version's) or edited since is refused, naming it and the fix."""
    from samplers.fitted.fitting import digest_matches

    if not digest_matches(saved):
        raise InvalidInput(f"the cached exact endpoints {path} " + (
            "record no digest (an earlier samplers fit, or another program, wrote them)" if "digest" not in saved else
            "do not match the digest recorded in them (they were changed after samplers fit wrote them)")
            + f"; {CACHE_FIX}")


def _finite_endpoints(ref: torch.Tensor, what: str) -> torch.Tensor:
    """Exact endpoints just solved, checked before they are cached or used: a model that returns NaN or infinite
    values has no endpoint to fit to."""
    from samplers.core.errors import NonFiniteError

    if not bool(torch.isfinite(ref).all()):
        raise NonFiniteError(f"the exact endpoints of {what} hold {int((~torch.isfinite(ref)).sum())} NaN or infinite "
                             "value(s): the model returns NaN or infinite values on these starts (check it on them, "
                             "or loosen --reference-tol if the adaptive solve diverged)")
    return ref


def _solved(denoiser, x: torch.Tensor, sigma: float, tol: float, what: str) -> torch.Tensor:
    """The exact endpoints of ``x`` at ``sigma`` (:func:`samplers.fitted.fitting.reference_endpoints`), finite, or the
    solve's own non-finite error (the σ where the model returned NaN / Inf, or its step size's underflow), naming
    the starts."""
    from samplers.core.errors import NonFiniteError
    from samplers.fitted.fitting import reference_endpoints

    try:
        ref = reference_endpoints(denoiser, x, sigma, tol)
    except NonFiniteError as e:
        raise NonFiniteError(f"the exact endpoints of {what} cannot be solved: {e} (or loosen --reference-tol if the "
                             "adaptive solve diverged)") from None
    return _finite_endpoints(ref, what)


def _cached_reference(out: Path, target: Target, tag: str, x: torch.Tensor, extra: dict,
                      sigma: float | None = None) -> torch.Tensor:
    from samplers.core.files import write_torch

    path = out / WORK / f"reference-{tag}-tol{target.reference_tol:g}.pt"
    if path.exists():
        saved = read_cache(path)
        kept = saved.get("x")
        if (saved.get("identity") == target.identity and isinstance(kept, torch.Tensor) and kept.shape == x.shape
                and torch.equal(kept, x)):
            ref = saved.get("reference")
            if not (isinstance(ref, torch.Tensor) and ref.shape == x.shape and ref.dtype == x.dtype):
                raise InvalidInput(f"the cached exact endpoints {path} hold no reference of the starts' shape "
                                   f"{list(x.shape)} and dtype {x.dtype}; {CACHE_FIX}")
            if not bool(torch.isfinite(ref).all()):
                raise InvalidInput(f"the cached exact endpoints {path} hold {int((~torch.isfinite(ref)).sum())} NaN "
                                   f"or infinite value(s); {CACHE_FIX}")
            other = sorted(map(str, set(saved) - {"x", "reference", "identity", "digest"}))
            if other:
                raise InvalidInput(f"the cached exact endpoints {path} hold fields other than those samplers fit "
                                   f"writes (x, reference, identity, digest): {', '.join(other)}; {CACHE_FIX}")
            _unchanged(path, saved)
            return ref
    ref = _solved(functools.partial(target.denoiser, **extra), x, target.sigma_max if sigma is None else sigma,
                  target.reference_tol, f"the {tag} starts")
    from samplers.fitted.fitting import with_digest

    write_torch(path, with_digest({"x": x, "reference": ref, "identity": target.identity}))
    return ref


class PoolReferences:
    """The exact endpoints of the fit's other starts (``reference_fn`` of :func:`samplers.fitted.fitting.fit`: the
    pool's, and the calibration's from a σ above σ_max), each start solved once across NFEs and runs: kept by the
    bytes of its start, its σ and its conditioning in ``path`` (``{"endpoints": {key: endpoint}, "digest": …}``;
    every endpoint finite, the digest that of the endpoints: checked when the file is read)."""

    def __init__(self, path: Path, target: Target):
        self.path, self.target = path, target
        saved = read_cache(path) if path.exists() else {"endpoints": {}}
        self.saved = saved.get("endpoints")
        if not (isinstance(self.saved, dict) and set(saved) <= {"endpoints", "digest"} and all(
                isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point()
                for k, v in self.saved.items())):
            raise InvalidInput(f"the cached exact endpoints {path} hold other than one tensor per start; {CACHE_FIX}")
        bad = [k for k, v in self.saved.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise InvalidInput(f"the cached exact endpoints {path} hold NaN or infinite values ({len(bad)} of "
                               f"{len(self.saved)} endpoints); {CACHE_FIX}")
        if path.exists():
            _unchanged(path, saved)

    def key(self, x: torch.Tensor, extra: dict, i: int, sigma: float) -> str:
        h = hashlib.sha256(x[i].detach().cpu().contiguous().numpy().tobytes() + repr(float(sigma)).encode()
                           + self.target.identity.encode())
        for name in sorted(extra):
            h.update(name.encode() + extra[name][i].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def __call__(self, x: torch.Tensor, extra: dict, sigma: float) -> torch.Tensor:
        from samplers.core.files import write_torch

        keys = [self.key(x, extra, i, sigma) for i in range(x.shape[0])]
        missing = [i for i, k in enumerate(keys) if k not in self.saved]
        if missing:
            rows = torch.tensor(missing)
            ref = _solved(functools.partial(self.target.denoiser, **{k: v[rows] for k, v in extra.items()}),
                          x[rows], sigma, self.target.reference_tol,
                          f"{len(missing)} of the fit's other starts from σ = {sigma:g}")
            from samplers.fitted.fitting import with_digest

            self.saved.update({keys[i]: r.clone() for i, r in zip(missing, ref)})
            write_torch(self.path, with_digest({"endpoints": self.saved}))
        found = [self.saved[k] for k in keys]
        if any(r.shape != x.shape[1:] or r.dtype != x.dtype for r in found):
            raise InvalidInput(f"the cached exact endpoints {self.path} hold an endpoint of another shape or dtype "
                               f"than the starts' {list(x.shape[1:])} {x.dtype}; {CACHE_FIX}")
        return torch.stack(found).to(x.device)


def default_run(target: Target, nfe: int, out: Path, noise: torch.Tensor, seed: int,
                reference_from: Callable[[float], torch.Tensor]) -> dict | str:
    """The held-out RMSE of the model's default at ``nfe`` calls: for a shipped model its default run as its pipeline
    plans it (:attr:`Target.default_plan`: ``Pipeline.plan``'s sampler, σ grid and options, what ``samplers generate
    --steps N`` runs — the flow U-Net's from σ = inf), for a diffusers folder its own scheduler (diffusers' loop, from
    that scheduler's start, σ = inf too); each scored against the exact endpoints from its own first σ
    (``reference_from(σ)``, the same starts ``noise`` from there), as the fit and its pair are. Where there is none,
    why (a string: the report's ``default_none``, printed as "default: none (why)")."""
    import samplers
    from benchmarks.common import rmse
    from samplers.fitted.fitting import pair_label

    extra = target.item_args(noise.shape[0], seed)
    if target.default_plan is not None:
        sampler, schedule = target.default
        steps = max(1, round(nfe / samplers.info(sampler).nfe_per_step))
        name, sig, options = target.default_plan(steps)
        if math.isclose(float(sig[0]), target.sigma_max, rel_tol=1e-12):
            # σ_max to rounding (the eps U-Net's Karras grid starts 4e-15 above its table's top): the same start as
            # the fit's and its pair's, whose endpoints are solved once for all three
            sig = sig.clone()
            sig[0] = target.sigma_max
        with torch.no_grad():
            x0 = samplers.sample(name, target.denoiser, samplers.initial_latent(noise, sig), sig, extra_args=extra,
                                 disable=True, **options)
        top = float(sig[0])
        return {"label": f"{pair_label(sampler, {}, schedule, top)} ({steps} steps)",
                "rmse": rmse(x0, reference_from(top))}
    if target.scheduler is None:
        return "a mixture or module:function Problem names no default sampler nor diffusers scheduler"
    from benchmarks.common import Problem
    from benchmarks.peers import peer_steps, run_peer

    label, config, native_for = target.scheduler
    found = peer_steps(label, config, nfe)
    if found is None:
        return f"diffusers {label} takes no step count that makes {nfe} model calls"
    problem = Problem(target.name, target.denoiser, target.native, target.shape, target.sigma_min,
                      target.sigma_max, native_model_for=native_for)
    x0, x_start, sigma_start, calls = run_peer(problem, label, config, found[0], noise, seed)
    # from σ = inf its start is the unit noise itself (init_noise_sigma 1), the held-out starts from there; from a
    # finite σ the scheduler's own start (its init_noise_sigma, or x_t / a at its first timestep), solved as it is
    own = (reference_from(math.inf) if math.isinf(sigma_start) else
           _cached_reference(out, target, f"heldout-{label}-{found[0]}-{seed}", x_start, extra, sigma_start))
    return {"label": f"diffusers {label} ({found[0]} steps, {calls} calls)"
                     + (" from σ = inf" if math.isinf(sigma_start) else ""), "rmse": rmse(x0, own)}


def fit_one(target: Target, nfe: int, args, out: Path, deadline: float | None, log) -> dict:
    from samplers.fitted.fitting import FitConfig, fit
    from samplers.fitted.identity import fingerprint

    from benchmarks.common import progress

    n_cal = args.calibration
    t0 = time.monotonic()
    x_cal = target.noise(n_cal, CALIBRATION_SEED + args.seed)
    extra_cal = target.item_args(n_cal, CALIBRATION_SEED + args.seed)
    ref_cal = _cached_reference(out, target, f"calibration-{args.seed}", x_cal * target.sigma_max, extra_cal)
    budget = None if deadline is None else max(deadline - time.monotonic(), 1.0)
    config = FitConfig(nfe, validation=args.validation, iters=args.iters, lr=args.lr, batch=args.batch,
                       screen=args.screen, pool=args.pool, time_budget=budget, seed=args.seed,
                       starts=args.starts, check=args.check)
    # the pool's exact endpoints, solved as the calibration's and kept for the other NFEs and later runs
    reference_fn = PoolReferences(out / WORK / f"pool-references-{args.seed}-tol{target.reference_tol:g}.pt", target)

    model = {"fingerprint": fingerprint(target.denoiser), "name": target.name, "prediction": target.prediction}
    with progress(total=config.iters * config.starts, desc=f"fit NFE {nfe}") as bar:
        solver = fit(target.denoiser, config, x_cal, target.sigma_min, target.sigma_max, reference=ref_cal,
                     reference_fn=reference_fn, native=target.native, model=model, extra_args=extra_cal,
                     state_path=out / WORK / f"state-nfe{nfe}.pt", log=log, progress=bar.update)
    path = solver.save(out / f"nfe{nfe}.json")
    capped = capped_line(nfe, solver.meta, args)
    if capped:
        print(capped)
    seconds = time.monotonic() - t0  # the fit, its reference included (cached after the first NFE)
    from benchmarks.common import run_info

    # device: what the seconds were measured on (CPU, versions, commit)
    row = {"nfe": nfe, "file": str(path), "solver_sha256": _file_digest(path), "kept": solver.meta["kept"],
           "check": solver.meta.get("check"), "validation_rmse": solver.meta["validation_rmse"], "seconds": seconds,
           "threads": torch.get_num_threads(), "device": run_info(str(x_cal.device))}
    if budget is not None:
        row["time_budget"] = budget  # this NFE's fit's share, from its start (after the calibration's endpoints)
    if "stopped_at_budget" in solver.meta:
        row["stopped_at_budget"] = solver.meta["stopped_at_budget"]
    return {**row, **heldout_scores(target, solver, nfe, args, out)}


def capped_line(nfe: int, meta: dict, args) -> str | None:
    """What a fit ran where --starts, --screen or a given --batch asked more than there was (the fit takes what
    there is: fewer pairs to optimise from, every training start): one line, or None where each ran as asked."""
    train = meta["calibration"] - meta["validation_starts"]  # the calibration's training starts (stage 1 ranks on)
    trained = train + ((meta.get("pool") or {}).get("trained_on") or 0)  # and the pool's hard ones (stage 3)
    parts = []
    if meta["fitted_from_pairs"] < args.starts:
        parts.append(f"--starts {args.starts}: optimised from {meta['fitted_from_pairs']} pair(s), all the starting "
                     f"pairs there were at {nfe} NFE with a finite training error")
    if args.screen is not None and args.screen >= train:
        parts.append(f"--screen {args.screen}: every pair was ranked on all {train} training starts (as --screen "
                     "all), there being no more")
    if args.batch > trained and was_given(args, "batch"):  # the default (12) on fewer starts: all of them
        parts.append(f"--batch {args.batch}: each step trained on all {trained} training starts, there being no more")
    return f"NFE {nfe}: ran with less than asked — " + "; ".join(parts) if parts else None


def heldout_scores(target: Target, solver, nfe: int, args, out: Path) -> dict:
    """The report's held-out figures of a fitted ``solver``: its RMSE, its best fixed pair's and the model's
    default's on ``args.heldout`` starts of other noise (and other prompts, where they are drawn), each solver from
    the σ it starts at, and fitted ÷ best fixed with its 95 % interval (the same starts paired:
    :func:`benchmarks.common.ratio_interval`; on 32 starts it is wide — ask ``--heldout`` for more)."""
    import samplers
    from samplers.fitted.fitting import pair_label, per_start_mse

    from benchmarks.common import ratio_interval

    noise_test = target.noise(args.heldout, HELDOUT_SEED + args.seed)
    extra_test = target.item_args(args.heldout, HELDOUT_SEED + args.seed)
    refs: dict[float, torch.Tensor] = {}  # per start σ: read (or solved) once for the fit, its pair and the default

    def reference_from(top: float) -> torch.Tensor:
        if top not in refs:
            tag = f"heldout-{args.seed}" + ("" if top == target.sigma_max else f"-from{top:g}")
            refs[top] = _cached_reference(out, target, tag, samplers.initial_latent(noise_test, [top]), extra_test,
                                          top)
        return refs[top]

    def per_start(s) -> torch.Tensor:
        return per_start_mse(target.denoiser, s, samplers.initial_latent(noise_test, s.sigmas),
                             reference_from(s.sigmas[0]), extra_test)

    start = solver.meta["start"]
    start_solver = samplers.fitted.solver.LearnedSolver(**start["solver"]).validate()
    fitted = per_start(solver)
    pair = fitted if solver.same_steps(start_solver) else per_start(start_solver)  # a handed-back pair: scored once
    row = {"fit": float(fitted.mean().sqrt()),
           "best_fixed": {"label": pair_label(start["sampler"], start["options"], start["schedule"],
                                              start_solver.sigmas[0]), "rmse": float(pair.mean().sqrt())},
           "heldout": args.heldout}
    row["fit_over_best_fixed"] = {"ratio": row["fit"] / row["best_fixed"]["rmse"],
                                  "interval": ratio_interval(fitted, pair) if args.heldout > 1 else None}
    if solver.sigmas[0] != target.sigma_max:
        row["sigma_start"] = solver.sigmas[0]
    # the pair's own start where either starts above σ_max (σ = inf: its label says so, pair_label)
    if (solver.sigmas[0] != target.sigma_max or start_solver.sigmas[0] != target.sigma_max) and math.isfinite(
            start_solver.sigmas[0]):
        row["best_fixed"]["sigma_start"] = start_solver.sigmas[0]
    default = default_run(target, nfe, out, noise_test, HELDOUT_SEED + args.seed, reference_from)
    if isinstance(default, dict):
        row["default"] = default
    else:
        row["default_none"] = default
    return row


def kept_solver(path: Path, nfe: int, target: Target, mine: str, fix: str):
    """The solver ``samplers fit`` kept in ``path`` for ``nfe``, read (:meth:`LearnedSolver.load`: plain JSON) and
    checked to be this run's: ``nfe`` model calls, fitted to this model (fingerprint ``mine``), with the fit's record
    that its report and ``--rescore`` read. Anything else is refused with ``fix``: it is never scored, nor reported
    as fitted, nor overwritten."""
    from samplers.fitted.solver import LearnedSolver

    try:
        solver = LearnedSolver.load(path)
    except (InvalidInput, OSError) as err:
        raise InvalidInput(f"NFE {nfe}: {err}; {fix}") from None
    if solver.nfe != nfe:
        raise InvalidInput(f"{path} holds a solver of {solver.nfe} model calls, not {nfe}; {fix}")
    if solver.model.get("fingerprint") != mine:
        raise InvalidInput(f"{path} was fitted to model {solver.model.get('name')!r} (fingerprint "
                           f"{str(solver.model.get('fingerprint'))[:12]}…), not to {target.name} ({mine[:12]}…); "
                           f"{fix}")
    meta, start = solver.meta, solver.meta.get("start")
    try:
        ok = (isinstance(meta.get("kept"), str) and _number(meta.get("validation_rmse"))
              and isinstance(start, dict) and isinstance(start.get("sampler"), str)
              and isinstance(start.get("schedule"), str) and isinstance(start.get("options"), dict)
              and isinstance(start.get("solver"), dict) and LearnedSolver(**start["solver"]).validate() is not None)
    except (InvalidInput, TypeError):
        ok = False
    if not ok:
        raise InvalidInput(f"{path} lacks the record samplers fit keeps of a fit (meta: kept, validation_rmse and the "
                           f"starting pair in start); {fix}")
    if "stopped_at_budget" in meta and not _budget_stops(meta["stopped_at_budget"]):
        raise InvalidInput(f"{path} records stopped_at_budget {meta['stopped_at_budget']!r}, not the list samplers fit "
                           "writes of the optimisations its time budget stopped (start, starts, iteration, iters: "
                           f"whole numbers); {fix}")
    return solver


def _file_digest(path: Path) -> str:
    """The SHA-256 of a solver file's bytes, recorded in its report row (``solver_sha256``) when it is written or
    scored: a rerun that keeps the file checks it is still the one the row's figures are of."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _budget_stops(value) -> bool:
    """Whether ``value`` is a fit's record of the optimisations its time budget stopped, as
    :func:`samplers.fitted.fitting.fit` writes it: a non-empty list of {start, starts, iteration, iters}."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    return isinstance(value, list) and bool(value) and all(
        isinstance(d, dict) and set(d) == {"start", "starts", "iteration", "iters"} and all(map(whole, d.values()))
        and 1 <= d["start"] <= d["starts"] and d["iteration"] <= d["iters"] for d in value)


def _stops_text(stops: list) -> str:
    """Where the time budget stopped each optimisation: "start 1 of 3 at step 8 of 30; ..."."""
    return "; ".join(f"start {d['start']} of {d['starts']} at step {d['iteration']} of {d['iters']}" for d in stops)


def never_stepped(row: dict) -> bool:
    """Whether the time budget stopped every start of the row's fit before its first step: nothing was optimised,
    so its solver is the starting pair as it was handed in, not a fit the validation starts rejected."""
    stops = row.get("stopped_at_budget") or []
    return bool(stops) and len(stops) == stops[0]["starts"] and all(d["iteration"] == 0 for d in stops)


def budget_stop_line(nfe: int, row: dict, resumable: bool = True) -> str | None:
    """What the output says of a fit the time budget cut short (None for one that ran to its end); ``resumable``:
    whether a rerun into --out may continue it (not for a model without a fingerprint)."""
    stops = row.get("stopped_at_budget")
    if not stops:
        return None
    runs = _stops_text(stops)
    share = f" ({row['time_budget']:.3g} s for this NFE)" if _number(row.get("time_budget")) else ""
    return (f"NFE {nfe}: stopped at the time budget{share}: the optimisation of {runs}"
            + (", before any step (the held-out figures are the starting pair's)" if never_stepped(row) else "")
            + ("; the model has no fingerprint, so no rerun continues it: fit again with a larger --time-budget "
               "(or none) into a new --out, or with --restart" if not resumable else
               "; run again into this --out (without --restart) to continue it from its saved state"
               if any(d["iteration"] > 0 for d in stops) else
               "; run again into this --out (without --restart) to run it (nothing was saved before its first step)"))


def rescore_one(target: Target, nfe: int, args, out: Path, row: dict | None, solver) -> dict:
    """``--rescore``: the held-out figures of ``solver`` (``<out>/nfe<N>.json``, checked by :func:`kept_solver`)
    measured again (on ``--heldout`` starts), the fit's own record (its time, what it kept) as the report had it."""
    path = out / f"nfe{nfe}.json"
    timing = {k: v for k, v in (row or {}).items() if k in ("seconds", "threads", "device", "time_budget")}
    base = {"nfe": nfe, "file": str(path), "solver_sha256": _file_digest(path),
            "kept": solver.meta["kept"], "check": solver.meta.get("check"),  # the fit's record, as reported
            "validation_rmse": solver.meta["validation_rmse"], **timing,
            **({"stopped_at_budget": solver.meta["stopped_at_budget"]} if "stopped_at_budget" in solver.meta else {})}
    return {**base, **heldout_scores(target, solver, nfe, args, out)}


# what a fit in --out depends on: the model (IDENTITY: also what its cached exact endpoints depend on) and the
# fitting options (FIT); the held-out count only its report rows (--rescore changes it)
IDENTITY = ("model", "fingerprint", "description", "prediction", "sigma_max", "sigma_min", "prompts",
            "prompt_embeds", "reference_tol")
FIT = ("calibration", "validation", "iters", "lr", "batch", "screen", "pool", "starts", "check", "seed")
DEFAULT_ROW = ("scheduler",)  # what the report's default row ran (a diffusers model's own scheduler config)
# what a setting recorded before an option existed was made with: fits of before stage 5 were never checked
BEFORE = {"check": 0}


def setting(target: Target, args) -> dict:
    """What the fits in ``--out`` were made of, recorded in report.json: a later run with another is refused."""
    from samplers.fitted.identity import fingerprint

    embeds = (hashlib.sha256(Path(args.prompt_embeds).read_bytes()).hexdigest()
              if getattr(args, "prompt_embeds", None) else None)
    return {"model": target.name, "fingerprint": fingerprint(target.denoiser), "description": target.description,
            "prediction": target.prediction, "sigma_max": target.sigma_max, "sigma_min": target.sigma_min,
            "prompts": getattr(args, "prompts", None), "prompt_embeds": embeds, "reference_tol": target.reference_tol,
            # a diffusers model's own scheduler, which its report's default row runs
            "scheduler": (None if target.scheduler is None else hashlib.sha256(json.dumps(
                [target.scheduler[0], target.scheduler[1]], sort_keys=True, default=repr).encode()).hexdigest()),
            **{k: getattr(args, k) for k in FIT},
            # the last run's --time-budget (no refusal: a later run may give another, or none, and continues the
            # fits it cut short; each row records its own share and where it stopped)
            "time_budget": getattr(args, "time_budget", None)}


def _number(v) -> bool:
    """A finite number (JSON's NaN and Infinity are not a figure samplers fit reports)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _start(v) -> bool:
    """A start σ: a number > 0, or inf (a flow model's fits and pairs may start at σ = inf, written as Infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and not math.isnan(v)


REPORT_FIX = ("delete it (the NFEs it lists are then fitted again there, from the cached endpoints) or choose another "
              "--out")


def read_report(out: Path) -> dict:
    """``<out>/report.json`` as this command wrote it ({} where there is none), checked before the model is built:
    a JSON object whose ``rows`` map each NFE to the figures the command prints and ``--rescore`` keeps, whose
    ``setting`` (if any) is an object. Anything else is refused, naming the file, what is wrong and the fix."""
    path = out / "report.json"
    if not path.exists():
        return {}
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, where samplers fit keeps its report; remove it or choose another "
                           "--out")
    from samplers.core.files import read_json

    report = read_json(path, "readable JSON (a report samplers fit wrote)", REPORT_FIX)

    def bad(what: str):
        return InvalidInput(f"{path} is not a report samplers fit wrote: {what}; {REPORT_FIX}")

    if not isinstance(report, dict):
        raise bad(f"it holds a JSON {type(report).__name__}, not an object")
    if not isinstance(report.get("setting", {}), dict):
        raise bad(f"its setting is {report['setting']!r}, not an object")
    if "calibration" in report and not (isinstance(report["calibration"], int)
                                        and not isinstance(report["calibration"], bool)):
        raise bad(f"its calibration is {report['calibration']!r}, not a count of starts")
    rows = report.get("rows", {})
    if not isinstance(rows, dict):
        raise bad(f"its rows are a {type(rows).__name__}, not an object of NFE → row")

    def pair(v) -> bool:  # {"label": ..., "rmse": ...}, the best fixed pair's with its start where not σ_max
        return (isinstance(v, dict) and isinstance(v.get("label"), str) and _number(v.get("rmse"))
                and ("sigma_start" not in v or _start(v["sigma_start"])))

    for k, row in rows.items():
        if not (k.isascii() and k.isdigit() and 1 <= int(k) <= 100 and str(int(k)) == k):
            raise bad(f"row {k!r} is not an NFE (a whole number from 1 to 100)")
        ratio = row.get("fit_over_best_fixed") if isinstance(row, dict) else None
        checks = isinstance(row, dict) and [
            ("fit", _number(row.get("fit"))), ("best_fixed", pair(row.get("best_fixed"))),
            # the solver's path as written (the folder may have moved since: run_fit prints <out>/nfe<N>.json)
            ("file", isinstance(row.get("file"), str) and Path(row["file"]).name == f"nfe{k}.json"),
            ("solver_sha256", "solver_sha256" not in row or (isinstance(row["solver_sha256"], str) and re.fullmatch(
                "[0-9a-f]{64}", row["solver_sha256"]) is not None)),  # reports before it have none
            ("heldout", "heldout" not in row or (isinstance(row["heldout"], int) and row["heldout"] >= 1
                                                 and not isinstance(row["heldout"], bool))),
            ("sigma_start", "sigma_start" not in row or _start(row["sigma_start"])),
            ("default", "default" not in row or pair(row["default"])),
            ("default_none", "default_none" not in row or (isinstance(row["default_none"], str)
                                                           and "default" not in row)),
            ("seconds", "seconds" not in row or _number(row["seconds"])),
            ("time_budget", "time_budget" not in row or _number(row["time_budget"])),
            ("stopped_at_budget", "stopped_at_budget" not in row or _budget_stops(row["stopped_at_budget"])),
            ("threads", "threads" not in row or _number(row["threads"])),
            ("device", "device" not in row or isinstance(row["device"], dict)),  # reports before it have none
            ("fit_over_best_fixed", ratio is None or (
                isinstance(ratio, dict) and _number(ratio.get("ratio")) and (
                    ratio.get("interval") is None or (isinstance(ratio["interval"], list)
                                                      and len(ratio["interval"]) == 2
                                                      and all(map(_number, ratio["interval"]))))))]
        if not checks:
            raise bad(f"row {k} is a {type(row).__name__}, not an object")
        wrong = [name for name, ok in checks if not ok]
        if wrong:
            raise bad(f"row {k} has no valid {', '.join(wrong)}" + (
                f" (its file is {row.get('file')!r}; the solver samplers fit writes for NFE {k} is nfe{k}.json "
                "beside the report)" if "file" in wrong else ""))
    return report


# --rescore fits nothing: what each option does then. RESCORED: read to score the fits (the model and what builds it,
# which NFEs, where, on how many held-out starts, with how many threads; --reference-tol and the model's options must
# be the fits' own: checked against report.json's setting). FIT and TIME_BUDGET, VERBOSE: the fitting options, the
# fits' own — with --rescore each is taken from report.json, and one given otherwise than the fits were made is
# refused (--seed too: the held-out starts are stream seed + 1 of the fit's seed, never its calibration starts);
# --time-budget and --verbose (the fit's progress lines) act only while fitting and are refused with it, as --restart.
RESCORED = ("--model", "--nfe", "--out", "--prompts", "--cfg", "--prompt-embeds", "--scheduler-config", "--heldout",
            "--threads", "--reference-tol")
ONLY_FITTING = ("--time-budget", "--verbose", "--restart")


def _shown(name: str, value) -> str:
    """A fitting option's value as the command line spells it (``--screen all`` is None inside)."""
    return "all" if name == "screen" and value is None else repr(value)


def check_rescore_options(args, report: dict, out: Path) -> None:
    """``--rescore``: refuse the fitting options given otherwise than the fits in ``out`` were made with (they would
    be silently ignored), and take the fits' own (report.json) for those not given: what the run prints and writes
    back is then the fits' record. Checked before the model is built."""
    recorded = dict(report.get("setting") or {})
    for key in ("calibration", "seed"):  # a report of before the setting was recorded kept these two
        if key not in recorded and key in report:
            recorded[key] = report[key]
    if report.get("setting"):
        recorded = {**BEFORE, **recorded}
    wrong = []
    for name in FIT:
        flag = "--" + name.replace("_", "-")
        if not was_given(args, name):
            if name in recorded:
                setattr(args, name, recorded[name])
        elif name not in recorded:
            wrong.append(f"{flag} {_shown(name, getattr(args, name))} ({out / 'report.json'} records no {name} to "
                         "check it against)")
        elif getattr(args, name) != recorded[name]:
            shown = (repr(recorded[name]) if recorded[name] is not None else "all" if name == "screen" else
                     "its default, 0.02 / NFE" if name == "lr" else "its default")
            if recorded[name] is None:
                shown += f": leave {flag} out"
            wrong.append(f"{flag} {_shown(name, getattr(args, name))} (the fits were made with {shown}"
                         + ("; their held-out starts are that seed's" if name == "seed" else "") + ")")
    if args.time_budget is not None:
        wrong.append(f"--time-budget {args.time_budget:g} (it bounds a fit)")
    if args.verbose:
        wrong.append("--verbose (it prints the fit's progress lines)")
    if wrong:
        raise InvalidInput("--rescore fits nothing: it scores the solvers in --out with the options they were fitted "
                           "with, so " + "; ".join(wrong) + " would not be what it does. Leave the fitting options "
                           "out (--"
                           + ", --".join(n.replace("_", "-") for n in FIT) + ", " + ", ".join(ONLY_FITTING)
                           + "), or give them as the fits were made; --rescore reads only "
                           + ", ".join(RESCORED) + ". To fit with other options, choose another --out or pass "
                           "--restart instead of --rescore")


def _check_setting(out: Path, report: dict, now: dict, args) -> dict:
    """The report to continue from: ``report`` where its fits were made as this run makes them; refused where they
    were not (a finished NFE would be kept, a cached endpoint reused, for another model or other options), unless
    ``--restart``, which clears them. A report of before the setting was recorded is taken as it is."""
    before = report.get("setting")
    if not report.get("rows") or before is None:
        return report
    keys = IDENTITY + DEFAULT_ROW if args.rescore else IDENTITY + DEFAULT_ROW + FIT
    # a report of before a key was recorded is taken as made with this run's value of it
    changed = [k for k in keys if before.get(k, now[k] if k in DEFAULT_ROW else BEFORE.get(k)) != now[k]]
    if not changed:
        return report
    def shown(v):
        return repr(v) if len(repr(v)) <= 40 else repr(v)[:12] + "…"

    what = ", ".join(f"{k} {shown(before.get(k, BEFORE.get(k)))} → {shown(now[k])}" for k in changed)
    if changed == ["scheduler"] and not args.restart:
        raise InvalidInput(f"{out} holds fits whose report rows ran another scheduler config as the model's default "
                           f"({what}); choose another --out, or pass --restart to fit again there")
    if not args.restart:
        fix = ("point --out at that model's fits or fit this one into another --out" if args.rescore else
               "choose another --out, or pass --restart to fit again there (replacing them)")
        other = any(before.get(k) != now[k] for k in IDENTITY)
        raise InvalidInput(f"{out} holds fits made otherwise than this run asks ({what}): "
                           + ("they and the exact endpoints cached there are another model's" if other else
                              "its finished NFEs were fitted with other options") + f"; {fix}")
    import shutil

    listed = sorted(report["rows"], key=int)
    print(f"--restart: replacing the fits in {out} ({what}): deleting the solver of every NFE its report lists, asked "
          f"or not (" + ", ".join(f"nfe{k}.json" for k in listed) + "; their rows were made with the old setting)")
    for k in report["rows"]:
        (out / f"nfe{k}.json").unlink(missing_ok=True)
    if any(before.get(k) != now[k] for k in IDENTITY):  # the cached exact endpoints are another model's
        shutil.rmtree(out / WORK, ignore_errors=True)
    return {}


# how a module:function model gets an identity samplers.fitted.identity.fingerprint reads
NO_FINGERPRINT_FIX = ("give the model an identity: make the Problem's denoiser a torch.nn.Module holding its weights "
                      "as parameters or buffers (they are fingerprinted; a module with none has no fingerprint), or set a samplers_fingerprint attribute on the denoiser function naming the "
                      "model and its version (denoiser.samplers_fingerprint = \"mymodel v2\"; change it whenever "
                      "the model changes)")


def _solver_files(out: Path) -> list[Path]:
    """The solver files samplers fit writes in ``out`` (``nfe<N>.json``)."""
    import re

    return sorted(p for p in out.iterdir() if re.fullmatch(r"nfe[0-9]+\.json", p.name)) if out.is_dir() else []


def _held(out: Path, report: dict) -> list[str]:
    """What ``out`` holds of an earlier run: report rows, solver files, cached endpoints or saved states."""
    held = [f"report rows for NFE {', '.join(sorted(report['rows'], key=int))}"] if report.get("rows") else []
    held += [p.name for p in _solver_files(out)]
    work = out / WORK
    if work.is_dir() and any(work.iterdir()):
        held.append(f"{len(list(work.iterdir()))} cached file(s) under {WORK}")
    return held


def _check_unidentified(out: Path, report: dict, target: Target, args) -> dict:
    """A model without a fingerprint (a plain function) cannot be told apart from the one that wrote ``out``: an
    ``out`` holding anything of an earlier run (fits, cached endpoints, saved states) is refused — its fits would be
    kept and its endpoints reused for whatever model now has that name — unless ``--restart``, which deletes them.
    Returns the report to continue from."""
    held = _held(out, report)
    if not held:
        return report
    why = (f"{target.name} has no fingerprint (its denoiser is a plain function or a torch module without "
           "parameters or buffers, and has no samplers_fingerprint), so samplers fit cannot tell whether what " + str(out) + " holds ("
           + "; ".join(held) + ") was made with this model or with another under the same name")
    if args.rescore:
        raise InvalidInput(f"--rescore: {why}, nor check that its solvers were fitted to this model; {NO_FINGERPRINT_FIX}"
                           ", then fit it again into a new --out")
    if not args.restart:
        raise InvalidInput(f"{why}: it neither keeps those fits nor reuses the cached endpoints; choose a new --out, "
                           f"or pass --restart to fit again there (deleting them); to resume fits, {NO_FINGERPRINT_FIX}")
    import shutil

    print(f"--restart: {target.name} has no fingerprint; deleting what {out} holds ({'; '.join(held)})")
    for path in _solver_files(out):
        path.unlink()
    shutil.rmtree(out / WORK, ignore_errors=True)
    return {}


# the most starts a fit holds (the calibration's with its pool's, or the held-out ones): far beyond any fit's need,
# and a typo's millions are refused at once rather than after minutes of allocation (memory: check_starts_memory)
MAX_STARTS = 1_000_000


def check_starts_memory(target: Target, args) -> None:
    """Refuse --calibration, --pool and --heldout whose starts would clearly not fit in memory (checked once the
    latent shape is known, before any model call): each start is held a few times over (its noise, its start
    latent, its exact endpoint), about 4 copies of the latent."""
    from samplers.core.validate import check_allocation

    per_start = math.prod(target.shape) * torch.empty((), dtype=target.dtype).element_size() * 4
    starts = max(args.calibration * (1 + max(args.pool, args.check)), args.heldout)
    check_allocation(per_start * starts, f"--calibration {args.calibration} with --pool {args.pool}, --check "
                     f"{args.check} and --heldout {args.heldout} ({starts} starts of {list(target.shape)} "
                     f"{target.dtype}, each held about 4 times)",
                     fix="ask for fewer starts (--calibration, --pool, --check, --heldout)")


def run_fit(args) -> int:
    for name, lo in (("calibration", 8), ("heldout", 1), ("iters", 0), ("pool", 0), ("check", 0), ("starts", 1),
                     ("batch", 1)):
        if getattr(args, name) < lo:
            raise InvalidInput(f"--{name} must be at least {lo}, got {getattr(args, name)}")
    from samplers.core.errors import LimitExceeded

    for what, count in (("--calibration", args.calibration), ("--heldout", args.heldout),
                        ("--calibration × (1 + --pool)", args.calibration * (1 + args.pool)),
                        ("--calibration × --check", args.calibration * args.check)):
        if count > MAX_STARTS:
            raise LimitExceeded(f"{what} asks {count} starts, more than the limit of {MAX_STARTS:,} samplers fit "
                                "holds (far beyond what a fit needs: the defaults are 48 calibration starts, a pool "
                                "of 4 × them, a check of 4 × them, 32 held out); ask for fewer")
    if not 0 < args.validation < 1:
        raise InvalidInput(f"--validation (the share of calibration starts never trained on) must be in (0, 1), "
                           f"got {args.validation}")
    from samplers.fitted.fitting import validation_starts

    validation_starts(args.calibration, args.validation, ("--validation", "--calibration"))  # as the fit splits them
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise InvalidInput(f"--lr must be a positive number, got {args.lr}")
    if args.cfg is not None and cfg_problem(args.cfg) is not None:
        raise InvalidInput(f"--cfg {cfg_problem(args.cfg)}")
    if not 0 <= args.seed < SEED_MAX:
        raise InvalidInput(f"--seed {args.seed} is outside [0, 2**32): pass a seed in that range")
    distinct("--nfe", args.nfe, "one solver file per NFE")
    kind = check_model_options(args)
    if args.screen != "all" and not (args.screen.isascii() and args.screen.isdigit() and int(args.screen) >= 1):
        raise InvalidInput(f"--screen must be 'all' or a number of training starts >= 1, got {args.screen!r}")
    args.screen = None if args.screen == "all" else int(args.screen)  # as FitConfig.screen takes it
    from samplers.fitted.fitting import MAX_FIT_NFE

    if any(n < 2 or n > MAX_FIT_NFE for n in args.nfe):
        raise InvalidInput(f"--nfe values must be between 2 and {MAX_FIT_NFE}, got {args.nfe}: a fitted solver weighs the "
                           "model calls before each step, so it needs at least 2 (one call is one Euler step: run "
                           "sampler='euler' with steps=1)")
    if args.rescore and args.restart:
        raise InvalidInput("--rescore scores the solvers in --out and --restart fits them again: pick one")
    if args.time_budget is not None and not (args.time_budget > 0 and math.isfinite(args.time_budget)):
        raise InvalidInput(f"--time-budget must be a finite number of seconds > 0, got {args.time_budget:g} (leave it "
                           "out for no budget)")
    out = Path(args.out)
    if not out.parent.is_dir():
        # a file in the way (the folder above --out, or one above that) is the cause, not a missing folder
        why = unwritable_folder(out.parent)
        if why is not None and "is a file" in why:
            raise InvalidInput(f"--out {str(out)!r}: {why}, so --out cannot be made there; choose another --out")
        raise FileNotFoundError(f"the folder above --out ({out.parent}) does not exist; create it or choose another")
    for folder in (out, out / WORK):
        if folder.exists() and not folder.is_dir():
            raise InvalidInput(f"{folder} is a file, where samplers fit keeps "
                               + ("its fits (--out is a folder)" if folder == out else "its cached endpoints")
                               + "; choose another --out" + ("" if folder == out else f" or remove {folder}"))
    why = unwritable_folder(out)  # found now, not when the first fit is saved, after the model is built
    if why is not None:
        raise InvalidInput(f"--out {str(out)!r}: {why}; name a folder you can write to")
    report = read_report(out)  # before the model is built: a bad one is refused at once
    if args.rescore:
        check_rescore_options(args, report, out)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.reference_tol is not None and not 0 < args.reference_tol < 1:
        raise InvalidInput(f"--reference-tol must be in (0, 1), got {args.reference_tol}")
    if args.reference_tol is not None and kind in ("shipped", "diffusers"):  # their dtype: before the weights load
        check_reference_tol(args.reference_tol, NETWORK_DTYPE, args.model)
    t0 = time.monotonic()
    deadline = None if args.time_budget is None else t0 + args.time_budget
    target = make_target(args)
    if args.reference_tol is not None:  # a Problem names its dtype once built; before anything is solved
        check_reference_tol(args.reference_tol, target.dtype, args.model)
    check_starts_memory(target, args)  # the latent shape is known now; nothing is solved yet
    if args.reference_tol is not None:
        target.reference_tol = args.reference_tol
    now = setting(target, args)
    target.identity = hashlib.sha256(json.dumps({k: now[k] for k in IDENTITY}, sort_keys=True,
                                                default=str).encode()).hexdigest()
    report_path = out / "report.json"
    if now["fingerprint"] is None:
        report = _check_unidentified(out, report, target, args)
    report = _check_setting(out, report, now, args)
    # each row's solver is <out>/nfe<N>.json, wherever the report's folder was when it was written (a moved or
    # copied --out holds its solvers beside its report, and a report's own path is never trusted)
    rows = {int(k): {**v, "file": str(out / f"nfe{k}.json")} for k, v in report.get("rows", {}).items()}
    # the solvers this run keeps or scores, each checked before any solve: read as samplers.fitted reads them, of
    # this model and NFE, with their fit's record (a broken or foreign file is refused, never reported as fitted)
    checked, cut = {}, {}
    for nfe in args.nfe:
        path = out / f"nfe{nfe}.json"
        if args.rescore and not path.exists():
            raise FileNotFoundError(f"--rescore: no fitted solver {path} to score; fit it first (without --rescore)")
        if not args.rescore and not args.restart and nfe not in rows and path.exists():
            # a solver the report does not list: fitted over only where it is this command's own fit of this model and
            # NFE whose run stopped before its report row (an error while scoring it); anything else (a solver copied
            # in, another model's) is someone's, refused unless --restart
            kept_solver(path, nfe, target, now["fingerprint"], (
                f"{out / 'report.json'} lists no fit of NFE {nfe}, so it is not this command's to fit over: move it "
                f"away or delete it to fit NFE {nfe} here, or pass --restart to fit every NFE asked again (replacing "
                "it)"))
        if args.rescore or (nfe in rows and path.exists() and not args.restart):
            solver = kept_solver(path, nfe, target, now["fingerprint"], (
                "--rescore scores only this model's fits: point --out at that model's fits, or fit this one "
                "(without --rescore)") if args.rescore else (
                f"the report lists NFE {nfe} as fitted here: delete {path} to fit NFE {nfe} again, or pass "
                "--restart to fit every NFE asked again (both replace it)"))
            if not args.rescore and "stopped_at_budget" in solver.meta:
                cut[nfe] = solver.meta["stopped_at_budget"]  # fitted again: its optimisation continues
                continue
            checked[nfe] = solver
            recorded = rows.get(nfe, {}).get("solver_sha256")
            if not args.rescore and recorded is not None and recorded != _file_digest(path):
                raise InvalidInput(f"{path} is not the solver file whose figures {out / 'report.json'} reports for "
                                   f"NFE {nfe} (its SHA-256 differs from the one recorded when it was written: it was "
                                   "edited or replaced since); pass --rescore to score this file and report it, or "
                                   "--restart to fit it again (replacing it)")
            if not args.rescore and rows[nfe].get("heldout", args.heldout) != args.heldout:
                raise InvalidInput(f"NFE {nfe} in {out} was scored on {rows[nfe]['heldout']} held-out starts, this "
                                   f"run asks {args.heldout}: add --rescore to score the fits again on "
                                   f"{args.heldout}, or leave --heldout at {rows[nfe]['heldout']}")
    out.mkdir(exist_ok=True)
    (out / WORK).mkdir(exist_ok=True)
    log = (lambda line: print(line, flush=True)) if args.verbose else None
    print(("scoring the fits in " + str(out) + " of " if args.rescore else "fitting to ")
          + f"{target.name}: {target.description}; "
          # a benchmark problem's description already gives its σ range (the analytic mixtures': "σ 80 → 0.002")
          + ("" if "σ" in target.description and "→" in target.description
             else f"σ {target.sigma_max:g} → {target.sigma_min:g}, ")
          + (f"{args.calibration} calibration starts" if not args.rescore else
             f"fitted on {report['calibration']} calibration starts" if "calibration" in report else
             "calibration starts as fitted") + f", {args.heldout} held-out")
    if now["fingerprint"] is None:
        print(f"note: {target.name} has no fingerprint (a plain-function denoiser, or a torch module "
              "without parameters or buffers): the solver files written here "
              "record fingerprint null and cannot check the model they run on — they run on any model, unchecked "
              f"and without a warning — and {out} cannot be resumed (a rerun there is refused; --restart fits "
              f"again); {NO_FINGERPRINT_FIX}")
    for index, nfe in enumerate(args.nfe):
        if args.rescore:
            rows[nfe] = rescore_one(target, nfe, args, out, rows.get(nfe), checked[nfe])
        elif nfe in checked:
            print(f"NFE {nfe}: already fitted ({out / f'nfe{nfe}.json'}; --restart to fit again)")
        else:
            if nfe in cut:
                print(f"NFE {nfe}: continuing the fit the time budget stopped (" + _stops_text(cut[nfe]) + ")"
                      + (" from its saved state" if any(d["iteration"] > 0 for d in cut[nfe]) else ""))
            if args.restart:  # every start's saved optimisation of this NFE (state-nfe<N>.pt, .start2.pt, …)
                from samplers.fitted.fitting import state_paths

                for path in state_paths(out / WORK / f"state-nfe{nfe}.pt"):
                    path.unlink(missing_ok=True)
            # the budget in equal shares: this NFE's ends where its share of the whole ends
            share = None if deadline is None else t0 + (deadline - t0) * (index + 1) / len(args.nfe)
            rows[nfe] = fit_one(target, nfe, args, out, share, log)
        r = rows[nfe]
        _refuse_non_finite(r, nfe)
        stopped = budget_stop_line(nfe, r, now["fingerprint"] is not None)
        if stopped:
            print(stopped)
        default = (f" | default {r['default']['label']}: {r['default']['rmse']:.4g}" if "default" in r else
                   f" | default: none ({r['default_none']})" if "default_none" in r else "")
        above = _starts_shown(r, target.sigma_max)
        ratio = r.get("fit_over_best_fixed") or {}
        gain = (f" (fitted ÷ best fixed {ratio['ratio']:.3f}, 95 % interval {ratio['interval'][0]:.3f}-"
                f"{ratio['interval'][1]:.3f} on {r.get('heldout', args.heldout)} starts)"
                if ratio.get("interval") else "")
        # a fit that did not beat its starting pair on the validation starts hands the pair back (kept: "start")
        handed = ("" if r.get("kept") != "start" else
                  " (--iters 0: the solver is the starting pair itself)" if args.iters == 0 else
                  " (stopped by --time-budget before any step: the solver is the starting pair itself)"
                  if never_stepped(r) else
                  f" (the fit, better on the validation starts, was worse on {r['check']['starts']} other starts "
                  "(--check): the solver is the starting pair itself)" if (r.get("check") or {}).get("kept") is False
                  else " (the fit was rejected on the validation starts: the solver is the starting pair itself)")
        print(f"NFE {nfe}: held-out RMSE fitted {r['fit']:.4g}{handed} | best fixed pair {r['best_fixed']['label']}: "
              f"{r['best_fixed']['rmse']:.4g}{above}{gain}{default} → {r['file']}")
        from samplers.core.files import write_json

        calibration = report.get("calibration", args.calibration) if args.rescore else args.calibration
        # --rescore fits nothing: the fits keep the options they were made with (unknown in a report of before
        # the setting was recorded, which stays without one)
        kept = now if not args.rescore else report.get("setting") and {**report["setting"],
                                                                        **{k: now[k] for k in IDENTITY}}
        # no report-wide held-out count: a resumed run scores only its own NFEs, and each row records the count it
        # was scored on ("heldout"), which another row's may differ from
        write_json(report_path, {"model": target.name, "description": target.description,
                                 "calibration": calibration, "seed": args.seed,
                                 **({"setting": kept} if kept else {}),
                                 "rows": {str(k): v for k, v in sorted(rows.items())}})
    first = f"{out}/nfe{args.nfe[0]}.json"
    how = (f"`{shlex.join(generate_command(args.model, first, args.cfg))}` (in Python: sampler=\"fitted:{first}\")"
           if kind == "shipped" else f"sampler=\"fitted:{first}\"")
    print(f"done in {time.monotonic() - t0:.0f} s; run one with {how}")
    return 0


def _starts_shown(row: dict, sigma_max: float) -> str:
    """Where the fit and the best fixed pair of a report row start, where either starts above the model's σ_max:
    " (both from σ = 700)", or each its own (" (fitted from σ = 700, best fixed pair from σ = inf)"). A row of before
    the pair's start was recorded (no ``best_fixed.sigma_start``) names the fit's alone."""
    fit = row.get("sigma_start", sigma_max)
    pair_row = row["best_fixed"]
    if "sigma_start" in pair_row:
        pair = pair_row["sigma_start"]
    elif pair_row["label"].endswith(" from σ = inf"):  # pair_label's mark of a start at σ = inf
        pair = math.inf
    elif "sigma_start" in row:
        return f" (fitted from σ = {fit:g})"  # an older row: the pair's start is not recorded
    else:
        pair = sigma_max
    if fit == pair:
        return "" if fit == sigma_max else f" (both from σ = {fit:g})"
    return f" (fitted from σ = {fit:g}, best fixed pair from σ = {pair:g})"


def _refuse_non_finite(row: dict, nfe: int) -> None:
    """The held-out figures of ``row``, finite before they are written to report.json (which refuses others)."""
    from samplers.core.errors import NonFiniteError

    figures = [("the fitted solver", row["fit"]), (row["best_fixed"]["label"], row["best_fixed"]["rmse"])]
    figures += [(row["default"]["label"], row["default"]["rmse"])] if "default" in row else []
    bad = [f"{label} {value}" for label, value in figures if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"NFE {nfe}: the held-out RMSE of {', '.join(bad)} is not finite (a solver diverges on a "
                             "held-out start): nothing was written to report.json; try another --seed or more "
                             "--calibration starts")


def generate_command(model: str, solver: str, cfg: float | None) -> list[str]:
    """The ``samplers generate`` command line that runs a solver fitted to a shipped model (at the guidance it was
    fitted with: the solver records it)."""
    return (["samplers", "generate", "a large red circle at the top left", "--model", model, "--sampler",
             f"fitted:{solver}"] + ([] if cfg is None else ["--cfg", repr(float(cfg))]))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit a few-step solver to a model (shipped, module:function, or a "
                                          "diffusers UNet folder) and compare it on held-out starts",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="eps | flow | module:function (a benchmarks.common.Problem) | "
                                                   "a diffusers UNet folder | gm-ve, gm-vp-eps, gm-flow")
    p.add_argument("--nfe", type=int, nargs="+", required=True, help="model calls of each solver (e.g. 5 8 10)")
    p.add_argument("--out", type=path_to("folder"), required=True,
                   help="folder for nfe<N>.json, report.json and resumable state (in an existing folder; one no "
                        "file can be written in is refused before the model is built)")
    p.add_argument("--prompts", nargs="+", default=None,
                   help="shipped models: prompts (default: drawn from the caption grammar)")
    p.add_argument("--cfg", type=cfg_scale, default=None,
                   help="guidance scale, |cfg| <= 100; shipped models and diffusers folders (default: the shipped "
                        "model's own; for a diffusers folder 1, no guidance, as its config names no scale)")
    p.add_argument("--prompt-embeds", type=path_to("file"), default=None,
                   help="diffusers folder: safetensors of prompt embeddings")
    p.add_argument("--scheduler-config", type=path_to("file"), default=None,
                   help="diffusers folder: the scheduler config JSON")
    p.add_argument("--calibration", action=Given, type=int, default=48, help="calibration starts (default 48)")
    p.add_argument("--validation", action=Given, type=float, default=1 / 3,
                   help="share of them never trained on, which decides between the fit and the best fixed pair "
                        "(default 1/3)")
    p.add_argument("--heldout", type=int, default=32, help="held-out starts for the report (default 32)")
    p.add_argument("--iters", action=Given, type=int, default=100, help="optimisation steps per NFE (default 100)")
    p.add_argument("--lr", action=Given, type=float, default=None, help="Adam learning rate (default 0.02 / NFE)")
    p.add_argument("--batch", action=Given, type=int, default=12, help="training minibatch (default 12)")
    p.add_argument("--screen", action=Given, default="all", metavar="all|N",
                   help="rank the candidate starting (sampler, schedule) pairs on every training start (default "
                        "'all': the fit starts from the best of them), or first on N starts and only the best 10 on "
                        "all (faster on an expensive model, but the best pair can be screened out)")
    p.add_argument("--pool", action=Given, type=int, default=4,
                   help="the choice of the starting pair and the final choice between fit and pair are also made on "
                        "this many times the calibration starts more, exact endpoints solved for the sixteenth where "
                        "the solvers compared disagree most (default 4; 0: none)")
    p.add_argument("--check", action=Given, type=int, default=4,
                   help="the fit kept is held against the best pair once more on this many times the calibration "
                        "starts more, which neither trained it nor picked it, and the pair handed back where the fit "
                        "is the worse there; exact endpoints solved for a sixty-fourth of them in full and the "
                        "sixty-fourth where the two disagree most (default 4; 0: none)")
    p.add_argument("--starts", action=Given, type=int, default=3,
                   help="optimise from this many of the best pairs and keep the fit better on the validation "
                        "starts and the pool (default 3; each costs --iters steps)")
    p.add_argument("--seed", action=Given, type=seed, default=0,
                   help="noise and prompt streams, in [0, 2**32) (held out: seed + 1)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds, split equally between the NFEs asked: each NFE's optimisation (its --iters steps, "
                        "from every start) begins no step after its share ends, saves its state and says where it "
                        "stopped; a rerun into --out continues it. Only the optimisation is cut: loading the model, "
                        "the exact-endpoint solves, ranking the starting pairs, the final choice and the held-out "
                        "scoring run to their end, so the command takes longer than the budget by their cost "
                        "(docs/fitted.md)")
    p.add_argument("--reference-tol", type=float, default=None,
                   help="rtol = atol of the adaptive PF-ODE solve that gives the exact endpoints (default: 1e-5 for "
                        "a float32 network, 1e-7 otherwise); at least the machine epsilon of the dtype it is solved "
                        "in: 1.2e-7 for the shipped models and diffusers folders (float32), 2.23e-16 for a float64 "
                        "Problem such as gm-ve")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch threads, at most the cores this process may run on (default: torch's)")
    p.add_argument("--restart", action="store_true", help="fit again instead of resuming")
    p.add_argument("--rescore", action="store_true",
                   help="fit nothing: score the solvers already in --out again on --heldout held-out starts (e.g. "
                        "more of them, for a tighter interval) and rewrite their report rows")
    p.add_argument("--verbose", action="store_true", help="print the fit's progress lines")
    p.set_defaults(fn=run_fit)

"""What the benchmarks share: problems (model + noise + reference), the sampling grid, metrics, run info.

A :class:`Problem` is everything a benchmark needs to run a sampler on a model and score the result:

- ``denoiser``: the canonical ``D(x, sigma[B], **extra_args)`` every sampler takes;
- ``native`` (a :class:`samplers.core.native.NoiseSchedule`) and the sigma range the schedules are built on;
- ``noise(n, seed)``: unit Gaussian noise, item k drawn from (seed, k) only;
- ``reference(x, sigma_start)``: the PF-ODE endpoint from the same start (exact dopri5 for the analytic
  problems, :func:`samplers.problems.pf_ode_solution` at tight tolerance for any other denoiser), cached on
  disk as safetensors (:class:`ReferenceCache`: a file in the cache is data, never code);
- optionally exact data samples (distribution distances), a decoder and captions (the models stack), and
  the native model + diffusers config that let diffusers' own schedulers run on the same model and noise.

Problems by name (``--problem``): ``gm-ve``, ``gm-vp-eps``, ``gm-flow`` (the analytic Gaussian mixture of
:mod:`samplers.problems` behind a VE denoiser, a VP-discrete eps model and a rectified-flow model),
``models-eps`` / ``models-flow`` (the default models of ``models/``, when they are installed with their
weights), or ``module:function`` — a Python entry point returning a :class:`Problem` or a denoiser. The entry point
is for names typed on the command line only: a name read from a file (a solver file's ``meta.problem``, a
results.json row) must be a built-in one (:func:`builtin_problem_refusal`), since building an entry point imports
its module and calls its function.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib
import inspect
import json
import math
import re
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

import samplers
from samplers.core import argtypes
from samplers.core.argtypes import int_at_least, out_file, out_folder  # noqa: F401 - the CLIs' types
from samplers.core.errors import InvalidInput, LimitExceeded
from samplers.core.files import atomic_write_bytes, open_regular, read_json
from samplers.core.native import NoiseSchedule, RectifiedFlow, VE, VPDiscrete
from samplers.problems import GaussianMixture, pf_ode_solution

from models._checks import MAX_STEPS  # the pipeline's step limit (models.pipeline.MAX_STEPS)

# The repository root: folders shipped with it are found from here, so a run works from any current folder. What a
# run writes (--out, --cache) stays relative to the current folder: a run must not write into the repo unasked.
REPO = Path(__file__).resolve().parents[1]


def shipped(relative: str) -> Path:
    """A folder committed with the repo, ``relative`` to its root (e.g. the deterministic benchmark's fits)."""
    return REPO / relative


def recorded_path(path) -> str:
    """``path`` as a results.json records it: relative to the repo root where it lies inside the repo (a shipped
    folder reads the same from every checkout, and no machine's path lands in a committed file), else as given."""
    path = Path(path)
    if path.is_absolute():
        try:
            return str(path.resolve().relative_to(REPO))
        except ValueError:
            pass
    return str(path)


class ProblemUnavailable(RuntimeError):
    """A problem cannot be built here (a missing package or weights); the message says what is missing."""


def item_seeds(n: int, seed: int, stream: int = 0) -> list[int]:
    """Per-item seeds of a batch: item k of run ``seed`` depends on (seed, k) only, not on the batch size.
    ``stream`` 0 draws the starting noise; a stochastic sampler's own noise uses stream :data:`SAMPLER_NOISE`."""
    return [seed * 100_003 + k + stream for k in range(n)]


SAMPLER_NOISE = 7_919


def describe(err: Exception) -> str:
    """``Type: first line of the message``: how a cell records the error that stopped it."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


@dataclasses.dataclass(eq=False)
class Problem:
    name: str
    denoiser: Callable
    native: NoiseSchedule
    shape: tuple
    sigma_min: float
    sigma_max: float
    # Used for schedules that need a finite sigma_max when the model's own is infinite (flow models).
    finite_sigma_max: float | None = None
    dtype: torch.dtype = torch.float64
    device: str = "cpu"
    reference_fn: Callable | None = None  # (x, sigma_start[, seed]) -> endpoint; default: adaptive solve
    # rtol = atol of the adaptive solve (pf_ode_solution) that gives the reference when reference_fn is None
    reference_tol: float = 1e-7
    exact_samples: Callable | None = None  # (n, seed) -> data samples in latent space
    # (n, seed) -> the denoiser for that batch (e.g. one conditioned on n prompts); default: ``denoiser``
    denoiser_for: Callable | None = None
    decode: Callable | None = None  # latent -> images in [-1, 1]
    captions: Callable | None = None  # (n, seed) -> the prompts denoiser_for(n, seed) is conditioned on
    # For diffusers' schedulers: the native model model(x_t, timestep) (or one per batch) and its config.
    native_model: Callable | None = None
    native_model_for: Callable | None = None
    diffusers_config: dict | None = None
    description: str = ""
    cache_key: str = ""  # identifies the model and its weights in the reference cache
    family: str = ""  # gm-ve / gm-vp-eps / gm-flow for the mixture problems (whichever mixture): their peers
    mixture: GaussianMixture | None = None  # the data of a mixture problem

    def noise(self, n: int, seed: int) -> torch.Tensor:
        """Unit noise [n, *shape] where item k depends only on (seed, k) (``samplers.core.seeds.seeded_randn``)."""
        seeds = item_seeds(n, seed)
        # drawn on the CPU so that a CPU and a GPU run start from the same noise
        return samplers.core.seeds.seeded_randn((n, *self.shape), seeds).to(self.device, self.dtype)

    def sigmas(self, schedule: str, steps: int) -> torch.Tensor:
        """The schedule on this problem's range; a finite sigma_max is used where the schedule needs one. A preset
        (Align Your Steps: published levels) takes no range: it is built without one."""
        from samplers.core.names import resolve_schedule
        from samplers.schedules.base import PRESETS

        if resolve_schedule(schedule, native=self.native)[0] in PRESETS:  # tool names too ("Align Your Steps")
            return samplers.get_sigmas(schedule, steps, native=self.native)
        try:
            return samplers.get_sigmas(schedule, steps, native=self.native, sigma_min=self.sigma_min,
                                       sigma_max=self.sigma_max)
        except ValueError as err:
            if self.finite_sigma_max is None or "finite" not in str(err):
                raise
            return samplers.get_sigmas(schedule, steps, native=self.native, sigma_min=self.sigma_min,
                                       sigma_max=self.finite_sigma_max)

    def batch_native_model(self, n: int, seed: int) -> Callable | None:
        return self.native_model_for(n, seed) if self.native_model_for is not None else self.native_model

    def batch_denoiser(self, n: int, seed: int) -> Callable:
        return self.denoiser_for(n, seed) if self.denoiser_for is not None else self.denoiser

    def reference(self, x: torch.Tensor, sigma_start: float, seed: int = 0) -> torch.Tensor:
        if self.reference_fn is not None:
            # reference_fn(x, sigma_start), or reference_fn(x, sigma_start, seed) when it depends on the
            # batch (prompts drawn from the seed)
            if len(inspect.signature(self.reference_fn).parameters) >= 3:
                return self.reference_fn(x, sigma_start, seed)
            return self.reference_fn(x, sigma_start)
        return pf_ode_solution(self.batch_denoiser(x.shape[0], seed), x, sigma_start, rtol=self.reference_tol,
                               atol=self.reference_tol)

    @property
    def reference_method(self) -> str:
        """How the reference is computed (recorded with the results; part of the cache key)."""
        return "exact" if self.reference_fn is not None else f"dopri5 at rtol = atol = {self.reference_tol:g}"


# ------------------------------------------------------------------------------------------------------
# reference solutions


class ReferenceCache:
    """Reference endpoints kept in memory and on disk, keyed by problem, seed, batch size and start.

    Almost every start a benchmark scores is its seed's unit noise times a scalar (``noise · σ_0``, a diffusers
    scheduler's ``noise · √(σ_0² + 1)``, ...), and schedules that all start at the top of the range compute
    σ_0 with different rounding (80.0 and 80.00000000000037). Such a start is keyed, and solved, as
    ``noise · c`` at ``σ`` with ``c`` and ``σ`` rounded to :data:`SIGNIFICANT` digits: starts that differ by a
    few ulps share one solve, and the reference depends only on the key, so a sharded sweep reproduces a
    single-process one. The rounding moves the start by 1e-12 of itself, below the solve's own tolerance. Any
    other start is keyed by its exact bytes and solved as given.

    Files are safetensors (``<key>.safetensors``, one tensor ``endpoint``): reading one never runs code, and a
    file that is not valid safetensors is refused with an error naming it, not loaded. ``folder=None``: memory only.
    """

    SIGNIFICANT = 12

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, torch.Tensor] = {}
        self._noise: dict[tuple, torch.Tensor] = {}

    def _unit_noise(self, problem: Problem, n: int, seed: int) -> torch.Tensor:
        if (problem.name, n, seed) not in self._noise:
            self._noise[(problem.name, n, seed)] = problem.noise(n, seed).cpu().double()
        return self._noise[(problem.name, n, seed)]

    def start(self, problem: Problem, seed: int, x: torch.Tensor, sigma_start: float):
        """(key, the start to solve from, its σ)."""
        safe = problem.name.replace(":", "_").replace("/", "_")
        tol = "" if problem.reference_fn is not None else f"-tol{problem.reference_tol:g}"
        head = f"{safe}-{problem.cache_key or 'default'}{tol}-seed{seed}-n{x.shape[0]}"
        noise = self._unit_noise(problem, x.shape[0], seed)
        x64 = x.detach().cpu().double()
        c = float((x64 * noise).sum() / (noise * noise).sum()) if noise.shape == x64.shape else math.nan
        # a scalar multiple of the noise up to the rounding of the dtype the start was computed in
        if math.isfinite(c) and float((x64 - c * noise).abs().max()) <= (
                8 * torch.finfo(x.dtype).eps * abs(c) * float(noise.abs().max())):
            c, sigma = float(f"{c:.{self.SIGNIFICANT}g}"), float(f"{sigma_start:.{self.SIGNIFICANT}g}")
            digest = hashlib.sha1(noise.numpy().tobytes()).hexdigest()[:12]
            return (f"{head}-s{sigma:.{self.SIGNIFICANT}g}-c{c:.{self.SIGNIFICANT}g}-{digest}",
                    (noise * c).to(x.device, x.dtype), sigma)
        digest = hashlib.sha1(x64.numpy().tobytes()).hexdigest()[:12]
        return f"{head}-s{sigma_start:.6g}-x{digest}", x, sigma_start

    def key(self, problem: Problem, seed: int, x: torch.Tensor, sigma_start: float) -> str:
        return self.start(problem, seed, x, sigma_start)[0]

    def path(self, key: str) -> Path | None:
        return self.folder / f"{key}.safetensors" if self.folder is not None else None

    def get(self, problem: Problem, seed: int, x: torch.Tensor, sigma_start: float) -> torch.Tensor:
        key, x_solve, sigma_solve = self.start(problem, seed, x, sigma_start)
        if key in self._memory:
            return self._memory[key]
        path = self.path(key)
        if path is not None and path.exists():
            # a reference has the starts' shape: 8 bytes a value at most (float64), and a small header
            limit = x_solve.numel() * 8 + HEADER_BYTES
            ref = _checked_reference(load_tensor(path, limit), x_solve, path).to(x.device)
        else:
            ref = problem.reference(x_solve, sigma_solve, seed)
            if path is not None:
                save_tensor(path, ref)
        self._memory[key] = ref
        return ref


def _checked_reference(ref: torch.Tensor, x: torch.Tensor, path: Path) -> torch.Tensor:
    """A cached reference read back: the starts' shape (what :meth:`Problem.reference` returns for them), floating
    point, every value finite — as ``samplers fit``'s caches are checked. Anything else is refused, naming the file:
    a (1, ...) tensor would broadcast against the batch, an integer one score as a reference."""
    problem = None
    if tuple(ref.shape) != tuple(x.shape) or not ref.is_floating_point():
        problem = (f"holds a tensor of shape {list(ref.shape)} and dtype {ref.dtype}, not a floating-point one of "
                   f"the starts' shape {list(x.shape)}")
    elif not bool(torch.isfinite(ref).all()):
        problem = f"holds {int((~torch.isfinite(ref)).sum())} NaN or infinite value(s)"
    if problem:
        raise InvalidInput(f"reference cache file {str(path)!r} {problem}; it was not used. Delete it to recompute "
                           "the reference, or pass --no-cache")
    return ref


def save_tensor(path: Path, tensor: torch.Tensor) -> None:
    """One tensor to ``path`` as safetensors, atomically (ranks of a sharded sweep may write the same key)."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"endpoint": tensor.detach().cpu().contiguous()}))


HEADER_BYTES = 64 << 10  # a safetensors header of one tensor is some 100 bytes: room, far below a wrong file


def load_tensor(path: Path, limit: int | None = None) -> torch.Tensor:
    """The tensor :func:`save_tensor` wrote. Anything else (a pickle, a truncated file) is refused, not run. Read
    through :func:`samplers.core.files.open_regular`: a FIFO (which would wait for a writer forever) or a device
    (/dev/zero behind a link, which never ends) is refused by name, and so is a file of more than ``limit`` bytes
    (the caller's bound: what the reference it expects can take)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    fix = "delete it to recompute the reference, or pass --no-cache"
    with open_regular(path, "a reference cache file (safetensors)", fix) as f:
        try:
            blob = f.read() if limit is None else f.read(limit + 1)
        except OSError as err:
            raise InvalidInput(f"reference cache file {str(path)!r} cannot be read ({err.strerror or err}); "
                               f"{fix}") from None
    if limit is not None and len(blob) > limit:
        raise InvalidInput(f"reference cache file {str(path)!r} is larger than {limit:,} bytes, more than the "
                           f"reference it should hold takes; it was not loaded: {fix}")
    try:
        return load(blob)["endpoint"]
    except (SafetensorError, KeyError, OSError) as err:
        raise InvalidInput(f"reference cache file {str(path)!r} is not a safetensors file holding 'endpoint' "
                           f"({type(err).__name__}: {err}); it was not loaded: {fix}") from None


# ------------------------------------------------------------------------------------------------------
# problems


GM_SHAPE = (4, 4, 4)
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


# dims × modes: the mixture's float64 means, 8 bytes each (2**27: 1 GiB), before any batch of latents
MAX_MIXTURE_SIZE = 2**27


def mixture_spec(spec: str) -> tuple[int, int, int]:
    """``d<dims>-k<modes>-s<seed>`` → (dims, modes, seed), read without building anything; anything else is an
    :class:`InvalidInput` naming the form, and a mixture whose means alone exceed :data:`MAX_MIXTURE_SIZE` numbers a
    :class:`LimitExceeded` (``gm-ve/d999999999-k999-s1`` allocated until the memory ran out)."""
    m = re.fullmatch(r"d(\d+)-k(\d+)-s(\d+)", spec)
    if m is None or int(m[1]) < 1 or int(m[2]) < 1:
        raise InvalidInput(f"a mixture is named d<dims>-k<modes>-s<seed> (e.g. gm-vp-eps/d48-k5-s101), got {spec!r}")
    dims, modes, seed = int(m[1]), int(m[2]), int(m[3])
    if dims * modes > MAX_MIXTURE_SIZE:
        raise LimitExceeded(f"the mixture {spec!r} has {dims} dimensions × {modes} modes = {dims * modes} numbers in "
                            f"its means, more than the limit of {MAX_MIXTURE_SIZE} (1 GiB of float64); name a smaller "
                            "one (the benchmark's are at most d128-k9)")
    return dims, modes, seed


def gaussian_mixture(spec: str = "") -> GaussianMixture:
    """The benchmark's mixture (6 modes in 4×4×4), or the one ``spec`` names: ``d<dims>-k<modes>-s<seed>``, e.g.
    ``d48-k5-s101`` (48 dimensions as [3, 4, 4] when divisible by 16, else flat; 5 modes; seed 101)."""
    if not spec:
        return GaussianMixture.default(shape=GM_SHAPE, components=6, seed=0)
    dims, modes, seed = mixture_spec(spec)
    shape = (dims // 16, 4, 4) if dims % 16 == 0 else (dims,)
    return GaussianMixture.default(shape=shape, components=modes, seed=seed)


GM_KINDS = ("ve", "vp-eps", "flow")


def _gm_problem(kind: str, device: str = "cpu") -> Problem:
    kind, _, spec = kind.partition("/")
    if kind not in GM_KINDS:  # before the mixture is built
        raise InvalidInput(f"unknown mixture problem 'gm-{kind}': the mixtures are "
                           f"{', '.join('gm-' + k for k in GM_KINDS)} (optionally /d<dims>-k<modes>-s<seed>)")
    cpu = gaussian_mixture(spec)
    shape = tuple(cpu.shape)
    suffix = f"/{spec}" if spec else ""
    # the denoiser runs where the sampler runs; exact samples and the reference are computed on the CPU
    gm = cpu if device == "cpu" else GaussianMixture(cpu.means.to(device), cpu.stds.to(device),
                                                     cpu.weights.to(device), cpu.shape)
    what = (f"Gaussian mixture ({cpu.means.shape[0]} clusters, {cpu.dim}-dim, seed {spec.rsplit('s', 1)[-1]})"
            if spec else "Gaussian mixture (6 clusters, 64-dim)")
    common = dict(shape=shape, exact_samples=lambda n, seed: cpu.sample(n, seed=10_000 + seed),
                  reference_fn=lambda x, s: cpu.ode_endpoint(x.cpu(), s, rtol=1e-10, atol=1e-10).to(x.device),
                  cache_key="gm6x64" + suffix.replace("/", "_"), family=f"gm-{kind}", mixture=cpu)
    if kind == "ve":
        native = VE(sigma_min=0.002, sigma_max=80.0)
        return Problem("gm-ve" + suffix, gm.denoiser, native, sigma_min=0.002, sigma_max=80.0,
                       description=f"{what}, exact VE denoiser, σ 80 → 0.002",
                       **common)
    if kind == "vp-eps":
        native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
        model = gm.as_model("eps", native)
        return Problem("gm-vp-eps" + suffix, samplers.to_denoiser(model, "eps", native), native,
                       sigma_min=native.sigma_min, sigma_max=native.sigma_max, native_model=model,
                       diffusers_config=dict(SD_BETAS, prediction_type="epsilon"),
                       description=f"{what} as an SD-1.x-style discrete VP eps model "
                                   f"(scaled_linear betas, σ {native.sigma_max:.3g} → {native.sigma_min:.3g})",
                       **common)
    if kind == "flow":
        native = RectifiedFlow(shift=3.0, multiplier=1000.0)
        model = gm.as_model("flow", native)
        return Problem("gm-flow" + suffix, samplers.to_denoiser(model, "flow", native), native,
                       sigma_min=native.sigma_min, sigma_max=native.sigma_max, finite_sigma_max=80.0,
                       native_model=model, diffusers_config=dict(flow_shift=3.0, num_train_timesteps=1000),
                       description=f"{what} as an SD3-style rectified-flow model (shift 3, from t = 1; "
                                   "schedules that need a finite start use σ_max = 80)",
                       **common)
    raise InvalidInput(kind)  # unreachable: checked above


def _models_problem(model: str, cfg: float | None = None, device: str = "cpu") -> Problem:
    """The default models of ``models/`` (text encoder + U-Net + VAE) through ``models.pipeline.Pipeline``.

    Prompts are captions of ``models.data`` scenes (stream 20000 + seed); the denoiser carries
    classifier-free guidance at the model's default scale. diffusers' schedulers get the same guided model
    in native form (guidance on the eps / velocity output equals guidance on x0: the conversion is affine).
    """
    try:
        from models import data
        from models.pipeline import Pipeline
    except ImportError as err:
        raise ProblemUnavailable(f"the models problem needs models.pipeline, which is not importable here ({err})")
    try:
        pipe = Pipeline.load(model=model)
    except (FileNotFoundError, OSError, RuntimeError, ValueError) as err:
        raise ProblemUnavailable(f"models.pipeline.Pipeline.load(model={model!r}) failed: {err}")
    pipe.model.to(device)
    pipe.vae.to(device)
    cfg = float(pipe.defaults["cfg"] if cfg is None else cfg)
    native = pipe.native
    side = 64 // pipe.vae.downsample
    shape = (pipe.vae.latent_channels, side, side)
    cache: dict = {}

    def captions(n, seed):
        if ("captions", n, seed) not in cache:
            cache[("captions", n, seed)] = list(data.make_batch(20_000 + seed, n)[1])
        return cache[("captions", n, seed)]

    def denoiser_for(n, seed):
        if ("D", n, seed) not in cache:
            cache[("D", n, seed)] = pipe.denoiser(captions(n, seed), cfg)
        return cache[("D", n, seed)]

    def native_model_for(n, seed):
        cond = pipe.encode_prompts(captions(n, seed))
        null = pipe.encode_prompts([""])

        @torch.no_grad()
        def guided(x_t, time):
            both = {k: torch.cat([cond[k], null[k].expand(n, *null[k].shape[1:])]) for k in cond}
            out = pipe._model_fn(torch.cat([x_t, x_t]).float(), torch.cat([time, time]).float(), **both)
            c, u = out.chunk(2)
            return (u + cfg * (c - u)).to(x_t.dtype)
        return guided

    def decode(latent):
        return pipe.decode(latent.to(torch.float32), output="tensor")

    cfg_model = pipe.model.config
    diffusers_config = (dict(beta_schedule=cfg_model.beta_schedule, beta_start=cfg_model.beta_start,
                             beta_end=cfg_model.beta_end, num_train_timesteps=cfg_model.num_train_timesteps,
                             prediction_type="epsilon") if model == "eps" else
                        dict(flow_shift=cfg_model.flow_shift, num_train_timesteps=int(cfg_model.flow_multiplier)))
    sha = pipe.model.weights_sha256 if hasattr(pipe.model, "weights_sha256") else None
    sha = sha() if callable(sha) else sha
    return Problem(f"models-{model}", denoiser_for(1, 0), native, shape, sigma_min=native.sigma_min,
                   sigma_max=native.sigma_max, finite_sigma_max=80.0 if math.isinf(native.sigma_max) else None,
                   dtype=torch.float32, device=device, denoiser_for=denoiser_for, decode=decode, captions=captions,
                   # float32 network: a tolerance of 1e-5 is far below the errors measured at <= 50 NFE and costs a
                   # fraction of the model calls of 1e-7
                   native_model_for=native_model_for, diffusers_config=diffusers_config, reference_tol=1e-5,
                   description=f"models/ default {model} model (64×64 scenes, latents {shape}), prompts from "
                               f"models.data, classifier-free guidance {cfg:g}; error after decoding too",
                   cache_key=str(sha or "weights")[:12])


ENTRY_POINT_RULE = ("an entry point is 'module:function': an importable module and a function in it that takes no "
                    "arguments and returns a benchmarks.common.Problem (or a Problem itself)")


def _entry_point(spec: str) -> Problem:
    """``module:function``: the function (called without arguments) returns a Problem. Anything else — a module
    that does not import, a missing name, a function that needs arguments, another return value — is an
    :class:`InvalidInput` naming the rule."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise InvalidInput(f"{spec!r} is not 'module:function'; {ENTRY_POINT_RULE}")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise InvalidInput(f"{spec!r}: module {module!r} cannot be imported ({err}); {ENTRY_POINT_RULE}") from None
    if not hasattr(mod, attr):
        raise InvalidInput(f"{spec!r}: module {module!r} has no {attr!r}; {ENTRY_POINT_RULE}")
    fn = getattr(mod, attr)
    if isinstance(fn, Problem):
        return fn
    if not callable(fn):
        raise InvalidInput(f"{spec!r} is a {type(fn).__name__}, not a function; {ENTRY_POINT_RULE}")
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise InvalidInput(f"{spec!r} takes arguments ({attr}{inspect.signature(fn)}); {ENTRY_POINT_RULE}") from None
    except ValueError:  # no signature to read (a builtin): called as it is
        pass
    made = fn()
    if isinstance(made, Problem):
        return made
    if callable(made):
        raise InvalidInput(
            f"{spec} returned a bare callable; return benchmarks.common.Problem(name, denoiser, native, shape, "
            "sigma_min, sigma_max) so the benchmark knows the latent shape and the sigma range")
    raise InvalidInput(f"{spec} returned a {type(made).__name__}; {ENTRY_POINT_RULE}")


PROBLEMS = ("gm-ve", "gm-vp-eps", "gm-flow", "models-eps", "models-flow")

BUILTIN_RULE = ("a built-in problem's name: gm-ve, gm-vp-eps or gm-flow (optionally /d<dims>-k<modes>-s<seed>), "
                "models-eps or models-flow (a name read from a file is data: it is never imported as a "
                "'module:function' entry point, which only --problem / --model on the command line may name)")


def builtin_problem_refusal(name) -> str | None:
    """Why ``name`` is not a built-in problem's name (None: it is one), read without building or importing anything.

    A problem name read from a file (a solver file's ``meta.problem``, a results.json row's ``problem``) must pass
    this before it reaches :func:`get_problem`: that function imports the module of a ``module:function`` name and
    calls the function, so a file holding ``"tempfile:mkdtemp"`` (or ``os:abort``, or any module on ``sys.path``)
    ran code when it was read. The entry point stays for the names a user types (``--problem``, ``--model``)."""
    if not isinstance(name, str):
        return f"it is a JSON {type(name).__name__}, not {BUILTIN_RULE}"
    if name in PROBLEMS:
        return None
    kind, slash, spec = name.removeprefix("gm-").partition("/")
    if name.startswith("gm-") and kind in GM_KINDS and slash:
        try:
            mixture_spec(spec)
            return None
        except LimitExceeded as err:  # a built-in name, of a mixture too large to build
            return str(err)
        except InvalidInput as err:
            return f"{err}: it is not {BUILTIN_RULE}"
    return f"it is not {BUILTIN_RULE}"


def get_problem(name: str, device: str = "cpu", dtype: torch.dtype | None = None, *,
                entry_point: bool = True) -> Problem:
    """A problem by name (see the module docstring). Raises :class:`ProblemUnavailable` with the reason.
    ``entry_point=False`` (a name read from a file): only a built-in name (:func:`builtin_problem_refusal`) is
    accepted, anything else refused before any module is imported."""
    if not entry_point and (why := builtin_problem_refusal(name)) is not None:
        raise InvalidInput(f"problem {name!r}: {why}")
    if name.startswith("gm-"):
        problem = _gm_problem(name[3:], device)
    elif name in ("models-eps", "models-flow"):
        problem = _models_problem(name.split("-", 1)[1], device=device)
    elif ":" in name:
        problem = _entry_point(name)
    else:
        raise InvalidInput(f"unknown problem {name!r}; use one of {', '.join(PROBLEMS)} or a 'module:function' entry "
                           "point")
    problem.device = device
    if dtype is not None:
        problem.dtype = dtype
    return problem


def get_problems(names, device: str = "cpu", dtype: torch.dtype | None = None,
                 reference_tol: float | None = None, *, entry_point: bool = True
                 ) -> tuple[dict[str, Problem], dict[str, str]]:
    """The problems that can be built here by name, and why each other one cannot (``ProblemUnavailable``).
    ``reference_tol`` replaces the tolerance of the problems whose reference is an adaptive solve;
    ``entry_point=False`` for names read from a file (:func:`get_problem`)."""
    problems, unavailable = {}, {}
    for name in names:
        try:
            problems[name] = get_problem(name, device=device, dtype=dtype, entry_point=entry_point)
        except ProblemUnavailable as err:
            unavailable[name] = str(err)
            continue
        if reference_tol is not None and problems[name].reference_fn is None:
            problems[name].reference_tol = reference_tol
    return problems, unavailable


# ------------------------------------------------------------------------------------------------------
# metrics


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square difference over every item and element (float64)."""
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def item_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean square difference of each item [B] (float64)."""
    return (a.double() - b.double()).pow(2).flatten(1).mean(1).sqrt()


# how sure a held-out ratio is: a 95 % interval from this many paired bootstrap resamples of the starts
RATIO_LEVEL, RATIO_RESAMPLES = 0.95, 2000


def ratio_interval(a: torch.Tensor, b: torch.Tensor, level: float = RATIO_LEVEL, resamples: int = RATIO_RESAMPLES,
                   seed: int = 0) -> list[float]:
    """The ``level`` interval of the RMSE ratio sqrt(mean a / mean b), where ``a`` and ``b`` [N] are two solvers'
    per-start squared errors on the same N starts: percentile bootstrap with the starts resampled in pairs
    (:func:`scipy.stats.bootstrap`), from a fixed seed so a report is reproducible. On a mixture the ratio is
    set by the few starts a solver sends to another mode; the interval says how far a count of a few dozen of
    them carries (with fewer than about ten it is too narrow, as any interval from so few events)."""
    import numpy as np
    from scipy import stats

    a, b = (t.detach().double().flatten().cpu().numpy() for t in (a, b))
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"ratio_interval needs two equal batches of at least 2 per-start errors, got {a.shape} "
                         f"and {b.shape}")

    def ratio(x, y, axis=-1):
        return np.sqrt(x.mean(axis) / y.mean(axis))

    ci = stats.bootstrap((a, b), ratio, paired=True, vectorized=True, n_resamples=resamples, batch=50,
                         method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    return [float(ci.confidence_interval.low), float(ci.confidence_interval.high)]


def interval_text(lo_hi: list | None) -> str:
    """`` (lo–hi)``, a ratio's :func:`ratio_interval` as the tables print it beside the ratio ("" where none)."""
    return "" if not lo_hi else f" ({lo_hi[0]:.2f}–{lo_hi[1]:.2f})"


def spread(x: torch.Tensor) -> float:
    """The RMS of a batch about its mean item: the scale an error that changes mode is measured against."""
    x = x.double()
    return float((x - x.mean(0)).pow(2).mean().sqrt())


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size sample sets (flattened), fixed projections."""
    a = a.reshape(a.shape[0], -1).double().cpu()
    b = b.reshape(b.shape[0], -1).double().cpu()
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = (a @ theta).sort(dim=0)
    pb, _ = (b @ theta).sort(dim=0)
    return float((pa - pb).pow(2).mean().sqrt())


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula)."""
    import numpy as np
    from scipy import linalg

    a, b = f1.double().cpu().numpy(), f2.double().cpu().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2)
    covmean = covmean[0].real if isinstance(covmean, tuple) else covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


# ------------------------------------------------------------------------------------------------------
# run info


def _version(mod: str) -> str | None:
    try:
        return importlib.import_module(mod).__version__
    except Exception:  # noqa: BLE001 - optional packages
        return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo "model name", macOS's machdep.cpu.brand_string), else what
    :mod:`platform` says (often only the architecture, "x86_64")."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def run_info(device: str = "cpu") -> dict:
    """Device, versions, date and commit: written next to every result."""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),  # recorded whatever ``device`` is: a GPU run may time CPU sections too
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "versions": {m: _version(m) for m in ("torch", "numpy", "scipy", "torchdiffeq", "torchsde", "diffusers")},
        "commit": _git_commit(),
        "samplers": len(samplers.available()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _git_commit(root: Path | None = None) -> str | None:
    """The checkout's HEAD (short hash), with ``-dirty`` when a tracked file differs from it (what ran is then not
    that commit; untracked files are left out: scratch files do not change the code); None where git, the repository
    or a commit is missing. ``root``: the repository (default: this one, wherever the run's current folder is)."""
    root = REPO if root is None else root
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5)
        commit = head.stdout.strip() if head.returncode == 0 else ""
        if not commit:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=5)
        return commit + ("-dirty" if status.returncode != 0 or status.stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return None


def device_label(info: dict) -> str:
    if "gpu" in info:
        return f"{info['gpu']} (CUDA {info.get('cuda')})"
    return cpu_label(info)


def cpu_label(info: dict) -> str:
    """The CPU of a run's ``info``: its model where recorded (results written before it was render as they did)."""
    model = f" {info['cpu_model']}" if info.get("cpu_model") else ""
    return f"CPU{model} ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"


def device_line(device: str = "cpu") -> str:
    """What a benchmark prints before its figures: the device it runs on and the torch it runs with."""
    return f"device: {device_label(run_info(device))}, torch {torch.__version__}"


def progress(iterable=None, *, total: int | None = None, desc: str = "", disable: bool = False):
    """A progress bar on stderr (shown in logs too, not only on a terminal); ``disable`` for --no-progress."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr, mininterval=0.5,
                dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------------
# results.json and the markdown generated from it


def write_results(result: dict, out: Path, one_line: tuple[str, ...] = ()) -> Path:
    """``result`` as ``out/results.json`` (atomically), indented except the lists named in ``one_line``, whose
    items (thousands of cells) get one compact line each."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in result.items() if k not in one_line}, indent=1, default=str)
    for key in one_line:
        items = ",\n".join("  " + json.dumps(item, separators=(",", ":"), default=str) for item in result[key])
        text = text[:-2] + f',\n "{key}": [\n{items}\n ]\n}}'
    text += "\n"
    return atomic_write_bytes(out / "results.json", text.encode())


GENERATED = ("<!-- Generated from results.json beside this file by `python -m {module} --report "
             "<this folder>/results.json`; do not edit: change the generator or re-run the benchmark. -->\n\n")


def report(results: str | Path, markdown: Callable[[dict], str], module: str, write: bool = True) -> str:
    """The markdown of a run, generated from its ``results.json`` alone (and, with ``write``, written beside it
    as ``table.md``). The committed tables under docs/benchmarks are these files; a test regenerates them."""
    results = Path(results)
    text = GENERATED.format(module=module) + markdown(read_json(results, "a results.json", "name the results.json a "
                                                                 "run of the benchmark wrote"))
    if write:
        atomic_write_bytes(results.with_name("table.md"), text.encode())
    return text


# ------------------------------------------------------------------------------------------------------
# command-line values: a bad one is refused while the arguments are parsed (argparse's one-line error, exit
# status 2), before any work


positive_int = int_at_least(1)
positive_float = argtypes.real(positive=True)
# a run's steps (or NFE): 1 to the pipeline's limit (generate refuses more: never a useful image, and hours of work);
# a schedule of 10**9 steps needs ~60 GiB and fails mid-run, one of 10**8 runs for days
step_count = argtypes.int_in(1, MAX_STEPS, "the pipeline's step limit (models.pipeline.MAX_STEPS)")
# an NFE budget: its runs take at most that many steps, so the same limit (10**9 hung in diffusers' Karras sigmas)
nfe_budget = argtypes.int_in(1, MAX_STEPS, "the pipeline's step limit (models.pipeline.MAX_STEPS), which bounds a "
                                           "budget's model calls")
cfg_scale = argtypes.cfg_scale  # every --cfg: finite, |cfg| <= 100 (ComfyUI's widget maximum), as Pipeline.guidance
seed_value = argtypes.seed  # every seed option: 0 <= seed < 2**32, so item_seeds' derived seeds stay valid


# A cell holds its items a few times over: the starting noise, the state, a multistep sampler's history, the
# reference endpoint and the errors; and a Python seed per item (common.item_seeds)
CELL_COPIES, ITEM_OVERHEAD = 8, 64


def refuse_batch_memory(parser, flag: str, problem: Problem, n: int) -> None:
    """Refuse (``parser.error``) ``n`` items of ``problem`` per cell when they would clearly not fit in the memory
    of its device (:func:`samplers.core.validate.check_allocation`): checked before any cell runs, where a
    ``--batch 1000000000`` grew a list of 10**9 seeds without a word. The model calls' own memory (a U-Net's
    activations) comes on top."""
    from samplers.core.errors import LimitExceeded
    from samplers.core.validate import check_allocation

    per_item = math.prod(problem.shape) * torch.empty((), dtype=problem.dtype).element_size() * CELL_COPIES
    try:
        check_allocation((per_item + ITEM_OVERHEAD) * n,
                         f"{flag} {n} on {problem.name} ({n} items of {list(problem.shape)} {problem.dtype}, each "
                         f"held about {CELL_COPIES} times by a cell)", problem.device,
                         fix=f"pass a smaller {flag}")
    except LimitExceeded as err:
        parser.error(str(err))


def add_threads_option(parser, default: int | None = 1, help: str = "torch CPU threads (default 1)") -> None:
    """``--threads`` (an integer from 1 to the cores this process may run on, :func:`argtypes.threads`; ``None`` as
    the default leaves torch's own)."""
    parser.add_argument("--threads", type=argtypes.threads, default=default,
                        help=f"{help}; at most the cores this process may run on")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads, as ``--threads`` says (None: torch's own)."""
    if threads is not None:
        torch.set_num_threads(threads)


def check_names(parser, option: str, given, valid) -> None:
    """Refuse (``parser.error``) the names in ``given`` that are not in ``valid``, listing the valid ones."""
    valid = list(valid)
    unknown = [n for n in (given or []) if n not in valid]
    if unknown:
        parser.error(f"{option}: unknown {', '.join(map(repr, unknown))}; valid: "
                     f"{', '.join(valid) if valid else '(none here)'}")


def sampler_or_refuse(parser, option: str, name: str, kinds: tuple[str, ...] | None = None,
                      fitted: str | None = None) -> str:
    """The canonical name of the registry sampler ``name`` (any alias), or ``parser.error``. A name no table has is
    refused with the name resolver's own message (:func:`samplers.core.names.resolve`: the closest names, as
    ``samplers generate --sampler`` says it); a sampler not of ``kinds`` (``samplers.info(...).kind``) with the
    valid ones. A sampler that runs a fitted solver file (:func:`fitted_refusal`; a ``fitted:PATH`` label too) is
    refused too, pointing to ``fitted``, the benchmark's own flag for solver files (``"--fitted FILE"``), where it has
    one — before a label's options are, so that the first refusal gives the fix that runs."""
    from samplers.core import names
    from samplers.core.errors import SamplersError

    valid = [n for n in samplers.available() if kinds is None or samplers.info(n).kind in kinds]
    what = "sampler" if kinds is None else f"{'/'.join(kinds)} sampler"
    try:
        label = names.resolve(name)
    except (SamplersError, OSError) as err:  # unknown ("Closest: ..."), ambiguous, a fitted file that is not there
        parser.error(f"{option}: {' '.join(str(err).split()).rstrip('.')}; valid here: {', '.join(valid)}")
    canonical = samplers.info(name).name
    if canonical not in valid:
        runs = "" if canonical == name else f" (it runs the registry's {canonical})"
        parser.error(f"{option}: {name!r} is not a{'n' if what[0] in 'aeiou' else ''} {what}{runs}; valid: "
                     f"{', '.join(valid)}")
    # before the label's refusal, which told a fitted:PATH label to pass 'learned_multistep', refused here next: the
    # first message is the fix that runs, the benchmark's own flag for solver files
    why = fitted_refusal(canonical)
    if why is not None:
        own_file = label.sigmas is not None  # a fitted:PATH label: it carries its file, it does not lack one
        if own_file:
            why = "is a fitted solver file, which the benchmarks run under their own flag, not among the samplers"
        how = f"pass {'it' if own_file else 'its solver files'} with {fitted}" if fitted else \
            "this benchmark runs no solver files: leave it out"
        parser.error(f"{option}: {name!r} {why}; {how}")
    if label.options or label.schedule is not None or label.sigmas is not None or label.discard_penultimate_sigma:
        # a label ("DPM++ 2M SDE Heun", "comfyui:deis") stands for a sampler with options or a schedule, which the
        # benchmarks' sampler lists do not carry: running the bare sampler would drop them
        bound = ", ".join(f"{k}={v!r}" for k, v in label.options.items())
        parser.error(f"{option}: {name!r} is {canonical}" + (f" with {bound}" if bound else "")
                     + (f" on the {label.schedule!r} schedule" if label.schedule is not None else "")
                     + (", dropping the next-to-last σ" if label.discard_penultimate_sigma else "")
                     + f"; the benchmarks run registry samplers at their defaults (and --schedules for the schedule): "
                     f"pass {canonical!r}")
    return canonical


# Why a sampler that runs the weights of a fitted solver file (a ``solver`` option: learned_multistep) has no row of
# its own: without a file every weight is 0 and it is Euler, so its row would be Euler's under another name (the
# committed quality table had six such rows, each equal to euler's). A benchmark runs solver files under their own
# flag (benchmarks.quality --fitted, benchmarks.deterministic --learned); app.demo's table leaves them out alike.
NEEDS_SOLVER = ("runs a fitted solver file's weights (its solver option) and without one is Euler (every weight 0), "
                "so its row would be euler's under another name")


def fitted_refusal(name: str) -> str | None:
    """Why the registry sampler ``name`` has no row without a solver file (:data:`NEEDS_SOLVER`), None where it
    has."""
    return NEEDS_SOLVER if "solver" in samplers.info(name).options else None


# Why an error-controlled adaptive sampler (``host_sync`` with an ``rtol`` option: dpm_adaptive, torchdiffeq.dopri5)
# has no place in a benchmark that gives each sampler the most steps fitting an NFE budget: no step count moves it
# (it picks its own steps), and steps_for_nfe would settle on the one-step schedule [σ_max, 0] it never integrates.
UNBUDGETED = ("adaptive (host_sync, error-controlled): it chooses its own steps, so it cannot be held to an NFE "
              "budget")


def budget_refusal(name: str) -> str | None:
    """Why the registry sampler ``name`` cannot run at an NFE budget (:data:`UNBUDGETED`), None where it can."""
    spec = samplers.info(name)
    return UNBUDGETED if spec.host_sync and "rtol" in spec.options else None


def refuse_unbudgeted(parser, option: str, names) -> None:
    """Refuse (``parser.error``) a sampler named in ``option`` that cannot be held to an NFE budget
    (:func:`budget_refusal`): its cells would report a one-step denoise under its name. A default list leaves such
    samplers out by itself."""
    for name in names or ():
        why = budget_refusal(name)
        if why is not None:
            parser.error(f"{option}: {name!r} is {why}; leave it out (this benchmark runs each sampler at the most "
                         "steps whose run fits each --nfe budget)")


def schedule_or_refuse(parser, option: str, name: str) -> str:
    """``name`` when it is a registered schedule (an alias too) or a tool's name for one without options of its own
    (A1111's "Beta" is ``beta_sigmas``), as the name tables resolve it; else ``parser.error`` listing
    ``samplers.schedules.available()``. A tool's name that brings options (A1111's "KL Optimal", ComfyUI's
    ``ddim_uniform``) is refused: the benchmarks run registry schedules at their defaults."""
    from samplers.core import names

    try:
        canonical, options = names.resolve_schedule(name)
    except Exception:  # noqa: BLE001
        parser.error(f"{option}: {name!r} is not a schedule; valid (samplers.schedules.available()): "
                     f"{', '.join(samplers.schedules.available())}")
    if options:
        bound = ", ".join(f"{k}={v!r}" for k, v in options.items())
        parser.error(f"{option}: {name!r} is the {canonical!r} schedule with {bound}, which the benchmarks' schedule "
                     f"lists do not carry; pass {canonical!r} for its registry default")
    # a registry spelling (an alias too) is kept as written; a tool's name becomes the registry schedule it is
    return name if samplers.schedules.SCHEDULES.exact(name) is not None else canonical


def add_output_options(parser, default_out: Path, what: str = "results.json and table.md") -> None:
    """``--out`` (default under out/: a run writes tracked files only where its --out names them; a file there, or
    a folder no file can be written in, is refused at once, see :func:`out_folder`) and ``--report``."""
    parser.add_argument("--out", type=out_folder, default=str(default_out),
                        help=f"folder for {what} (default %(default)s; the committed tables are written with an "
                             "explicit --out docs/benchmarks/..., see docs/benchmarks/README.md)")
    parser.add_argument("--report", type=Path, default=None, metavar="RESULTS_JSON",
                        help="run nothing: rewrite table.md beside RESULTS_JSON, generated from it")


def run_args(args) -> dict:
    """The parsed arguments of a run as JSON data (paths as strings, tuples as lists, the set of options given on
    the command line — :func:`samplers.core.argtypes.was_given`'s ``given`` — as a sorted list): a results.json's
    ``args``."""
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (set, frozenset)):
            return sorted(map(plain, v), key=str)
        return v
    return {k: plain(v) for k, v in vars(args).items()}


def run_command(module: str, argv=None) -> str:
    """This run's command line, ``python -m <module> <arguments>`` (``argv``, else ``sys.argv[1:]``): a
    results.json's ``command``."""
    import shlex

    return " ".join(["python -m " + module, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def measured_line(results: dict, command: str | None = None) -> str:
    """The last line of a table: where, with which torch, when, how long and by which command it was measured.
    The command is the one the run recorded (``command``), else ``command`` (rebuilt from its ``args`` by
    :func:`command_from_args`); the wall time is the run's ``seconds`` (or its info's), left out when not recorded."""
    info = results["info"]
    seconds = results.get("seconds", info.get("seconds"))
    command = results.get("command") or command
    return (f"Measured on {device_label(info)}, torch {info['versions']['torch']}, {info['date_utc']}"
            + (f", in {seconds:.0f} s" if seconds is not None else "")
            + (f" (`{command}`)" if command else "") + ".")


def _plain(value):
    """``value`` as JSON data reads it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def command_from_args(module: str, parser: argparse.ArgumentParser, args: dict, resolved: dict | None = None) -> str:
    """The command line that gives a run's recorded ``args`` (a results.json's, from ``vars(args)``): ``python -m
    <module>`` and each option whose recorded value is neither the parser's default nor ``resolved``'s (what the run
    made of an option left unset: ``{dest: value}``), in the parser's order, ``--out`` last. Keys the parser does not
    know (values the run derived) and options the record lacks (added since) are left out."""
    import shlex

    resolved = resolved or {}
    words, out = [], []
    by_dest: dict[str, list] = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "report", argparse.SUPPRESS):
            by_dest.setdefault(action.dest, []).append(action)
    for dest, actions in by_dest.items():
        if dest not in args:
            continue
        value = _plain(args[dest])
        first = actions[0]
        default = first.default
        if isinstance(default, str) and first.type is not None:
            default = first.type(default)
        if value == _plain(default) or (dest in resolved and value == _plain(resolved[dest])):
            continue
        flag = next((a for a in actions if a.nargs == 0 and _plain(a.const) == value), None)
        if flag is not None:  # store_true / store_false / store_const
            option = [flag.option_strings[-1] if flag.option_strings[-1].startswith("--") else flag.option_strings[0]]
        else:
            valued = next((a for a in actions if a.nargs != 0), None)
            if valued is None:
                continue
            name = next((o for o in valued.option_strings if o.startswith("--")), valued.option_strings[0])
            values = value if isinstance(value, list) else [value]
            option = [name, *(shlex.quote(str(v)) for v in values)]
        (out if dest == "out" else words).extend(option)
    return " ".join(["python -m " + module, *words, *out])


def add_mixture_run_options(parser, default_out: Path) -> None:
    """What a benchmark over the mixtures' cached references takes: ``--cache``, ``--out``/``--report`` and
    ``--threads``."""
    parser.add_argument("--cache", type=out_folder, default=Path("out/cache"), help="reference solutions on disk")
    add_output_options(parser, default_out)
    add_threads_option(parser, help="torch threads (default 1: the mixtures are tiny)")


def _changed_options(parser: argparse.ArgumentParser, args) -> list[str]:
    """The options of ``args`` given other values than their defaults (as argparse converts a default)."""
    changed, by_dest = [], {}
    for action in parser._actions:  # the first action of a dest sets its default (--learned / --no-learned)
        if action.dest not in ("help", "report", argparse.SUPPRESS) and action.option_strings:
            by_dest.setdefault(action.dest, []).append(action)
    for dest, actions in by_dest.items():
        first = actions[0]
        default = first.default
        if isinstance(default, str) and first.type is not None:
            default = first.type(default)
        if getattr(args, dest, default) != default:
            changed.append("/".join(next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0])
                                    for a in actions))
    return changed


def report_only(args, report: Callable, parser: argparse.ArgumentParser) -> bool:
    """With ``--report RESULTS_JSON``: write its table.md and say so (True: nothing else to do). Refused
    (``parser.error``) where another option is given too (it would have no effect: the table comes from the file
    alone) or the file is not a results.json of this benchmark (missing, a folder, not JSON, other fields)."""
    if args.report is None:
        return False
    changed = _changed_options(parser, args)
    if changed:
        parser.error(f"--report runs nothing and writes table.md beside {str(args.report)!r} from that file alone: "
                     f"{', '.join(changed)} would have no effect; leave {'it' if len(changed) == 1 else 'them'} out "
                     "(or drop --report to run the benchmark)")
    path = Path(args.report)
    try:
        results = read_json(path, "a results.json", "name the results.json a run of this benchmark wrote")
    except InvalidInput as err:
        parser.error(f"--report {err}")
    if not isinstance(results, dict):
        parser.error(f"--report {str(path)!r} holds a JSON {type(results).__name__}, not the object a results.json "
                     "of this benchmark is")
    table = path.with_name("table.md")
    if table.is_dir():
        parser.error(f"--report writes {str(table)!r}, which is a folder: move it away")
    try:
        report(path)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError, ArithmeticError) as err:
        parser.error(f"--report {str(path)!r} is not a results.json of this benchmark ({describe(err)}): name the "
                     "one a run of it wrote")
    print(f"wrote {path.with_name('table.md')}")
    return True


def refuse_bad_problems(parser: argparse.ArgumentParser, names) -> None:
    """Refuse (``parser.error``) a ``--problem`` that does not resolve: an unknown name, a ``gm-`` spec it cannot
    read, a ``module:function`` that does not import or return a problem. The shipped models' problems
    (``models-*``) and problems unavailable here are left to the run, which builds or reports them."""
    for name in names or ():
        if name in PROBLEMS and name.startswith("models-"):
            continue
        try:
            get_problem(name)
        except ProblemUnavailable:
            continue
        except (ValueError, ImportError, AttributeError) as err:
            parser.error(f"--problem {name!r}: {err}")


def refuse_unused(parser: argparse.ArgumentParser, *rules) -> None:
    """Refuse (``parser.error``) an option that would have no effect: ``rules`` are (whether it was given, its
    flag, why it does nothing in this run, the fix) quadruples."""
    for was_given, flag, why, fix in rules:
        if was_given:
            parser.error(f"{flag} {why}, so it would have no effect: {fix}")


def solver_refusal(err: Exception) -> str:
    """Why a fitted solver file was refused (``LearnedSolver.load`` / ``check_model``), its first line without the
    library's fixes (``allow_other_model=True``, ``samplers fit``): the command that refuses it names its own."""
    return re.split(r"\. The solver file is the cause|\. Fit one|[;,] pass allow_other_model|; re-create it with",
                    str(err).splitlines()[0])[0]


def cache_folder(text) -> str:
    """``--cache``: the folder of cached references (made when the first one is saved), refused at once where it, or
    a folder above it, is a file (every save would fail there); kept as the string given. Its writability is not
    checked here: the default is parsed even where --no-cache leaves it unused."""
    return str(argtypes.folder_path(text))


def canonical_schedules(names) -> list[str] | None:
    """``--schedules`` as registry schedules (an alias or another spelling as the schedule it names), for the check
    that none is listed twice."""
    from samplers.core import names as names_mod

    return None if names is None else [names_mod.resolve_schedule(n)[0] for n in names]


def refuse_repeats(parser: argparse.ArgumentParser, *lists) -> None:
    """Refuse (``parser.error``) a value listed twice in an option: ``lists`` are (option, values, what a repeat
    would do) triples; values None or empty are skipped."""
    from samplers.core.validate import distinct

    for option, values, why in lists:
        if values:
            try:
                distinct(option, values, why)
            except InvalidInput as err:
                parser.error(str(err))


def sampler_names(requested: list[str] | None, include_adaptive: bool = False) -> list[str]:
    """Canonical sampler names: the requested ones, or every registered non-adaptive sampler but those that run a
    fitted solver file (:func:`fitted_refusal`: without one they are Euler)."""
    if requested and requested != ["all"]:
        return [samplers.info(n).name for n in requested]
    return [n for n in samplers.available() if (include_adaptive or not samplers.info(n).host_sync)
            and fitted_refusal(n) is None]


__all__ = ["Problem", "ProblemUnavailable", "ReferenceCache", "describe", "frechet_distance", "get_problem",
           "cpu_label", "cpu_model", "get_problems", "item_rmse", "item_seeds", "progress", "report", "rmse", "run_info", "sampler_names",
           "sliced_wasserstein", "spread", "write_results"]


def library_main(name: str, what: str, argv=None) -> int:
    """``python -m`` on a benchmarks module that is a library (``what`` it holds): it runs nothing, refuses any
    argument (argparse's exit 2), and says which command to run instead."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=f"python -m {name}", description=f"{name}: {what}")
    parser.parse_args(argv)
    print(f"{name} is a library module ({what}); it runs nothing. Run a benchmark, e.g. "
          "python -m benchmarks.quality --quick (docs/benchmarks/README.md)")
    return 0

"""What the benchmarks share: problems (model + noise + reference), the sampling grid, metrics, run info.

A :class:`Problem` is everything a benchmark needs to run a sampler on a model and score the result:

- ``denoiser``: the canonical ``D(x, sigma[B], **extra_args)`` every sampler takes;
- ``native`` (a :class:`samplers.core.native.NoiseSchedule`) and the sigma range the schedules are built on;
- ``noise(n, seed)``: unit Gaussian noise, item k drawn from (seed, k) only;
- ``reference(x, sigma_start)``: the PF-ODE endpoint from the same start (exact dopri5 for the analytic
  problems, an adaptive torchdiffeq solve at tight tolerance for any other denoiser), cached on disk;
- optionally exact data samples (distribution distances), a decoder and captions (the models stack), and
  the native model + diffusers config that let diffusers' own schedulers run on the same model and noise.

Problems by name (``--problem``): ``gm-ve``, ``gm-vp-eps``, ``gm-flow`` (the analytic Gaussian mixture of
:mod:`samplers.problems` behind a VE denoiser, a VP-discrete eps model and a rectified-flow model),
``models-eps`` / ``models-flow`` (the default models of ``models/``, when they are installed with their
weights), or ``module:function`` — a Python entry point returning a :class:`Problem` or a denoiser.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import inspect
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable

import torch
import torchdiffeq

import samplers
from samplers.core.native import NoiseSchedule, RectifiedFlow, VE, VPDiscrete
from samplers.problems import GaussianMixture


class ProblemUnavailable(RuntimeError):
    """A problem cannot be built here (a missing package or weights); the message says what is missing."""


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

    def noise(self, n: int, seed: int) -> torch.Tensor:
        """Unit noise [n, *shape] where item k depends only on (seed, k) (``samplers.core.seeds.seeded_randn``)."""
        seeds = [seed * 100_003 + k for k in range(n)]
        # drawn on the CPU so that a CPU and a GPU run start from the same noise
        return samplers.core.seeds.seeded_randn((n, *self.shape), seeds).to(self.device, self.dtype)

    def sigmas(self, schedule: str, steps: int) -> torch.Tensor:
        """The schedule on this problem's range; a finite sigma_max is used where the schedule needs one."""
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
        return ode_reference(self.batch_denoiser(x.shape[0], seed), x, sigma_start)


# ------------------------------------------------------------------------------------------------------
# reference solutions


def ode_reference(denoiser: Callable, x: torch.Tensor, sigma_start: float, rtol: float = 1e-7, atol: float = 1e-7, method: str = "dopri5", sigma_end: float = 0.0) -> torch.Tensor:
    """The PF-ODE state at ``sigma_end`` (default: the endpoint, σ = 0) from ``x`` at ``sigma_start`` by an
    adaptive torchdiffeq solve.

    Solved in the VP angle φ = arctan σ (as :meth:`samplers.problems.GaussianMixture.ode_endpoint`), where
    the ODE is regular from φ = π/2 (σ = inf, ``x`` the unit noise) to φ = 0:
    dy/dφ = (y·cos φ − D(y / cos φ, tan φ)) / sin φ with y = x·cos φ.
    """
    b = x.shape[0]
    phi0 = math.pi / 2 if math.isinf(sigma_start) else math.atan(sigma_start)
    phi1 = math.atan(sigma_end)
    y0 = x if math.isinf(sigma_start) else x * math.cos(phi0)

    def f(phi, y):
        c, s = math.cos(float(phi)), math.sin(float(phi))
        if s == 0.0:
            return torch.zeros_like(y)
        sigma = math.inf if c == 0.0 else s / c
        x_ve = y if c == 0.0 else y / c
        d = denoiser(x_ve, x_ve.new_full((b,), sigma))
        return (y * c - d.to(y.dtype)) / s

    t = torch.tensor([phi0, phi1], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        return torchdiffeq.odeint(f, y0, t, rtol=rtol, atol=atol, method=method)[-1] / math.cos(phi1)


class ReferenceCache:
    """Reference endpoints on disk, keyed by problem, seed, batch size, start sigma and start state."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None

    def key(self, problem: Problem, seed: int, x: torch.Tensor, sigma_start: float) -> str:
        digest = hashlib.sha1(x.detach().cpu().to(torch.float64).numpy().tobytes()).hexdigest()[:12]
        safe = problem.name.replace(":", "_").replace("/", "_")
        return f"{safe}-{problem.cache_key or 'default'}-seed{seed}-n{x.shape[0]}-s{sigma_start:.6g}-{digest}"

    def get(self, problem: Problem, seed: int, x: torch.Tensor, sigma_start: float) -> torch.Tensor:
        key = self.key(problem, seed, x, sigma_start)
        path = self.folder / f"{key}.pt" if self.folder is not None else None
        if path is not None and path.exists():
            return torch.load(path, map_location=x.device)
        ref = problem.reference(x, sigma_start, seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(ref.cpu(), tmp)
            os.replace(tmp, path)  # atomic: ranks of a sharded sweep may write the same key
        return ref


# ------------------------------------------------------------------------------------------------------
# problems


GM_SHAPE = (4, 4, 4)
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def gaussian_mixture() -> GaussianMixture:
    return GaussianMixture.default(shape=GM_SHAPE, components=6, seed=0)


def _gm_problem(kind: str, device: str = "cpu") -> Problem:
    cpu = gaussian_mixture()
    # the denoiser runs where the sampler runs; exact samples and the reference are computed on the CPU
    gm = cpu if device == "cpu" else GaussianMixture(cpu.means.to(device), cpu.stds.to(device),
                                                     cpu.weights.to(device), cpu.shape)
    common = dict(shape=GM_SHAPE, exact_samples=lambda n, seed: cpu.sample(n, seed=10_000 + seed),
                  reference_fn=lambda x, s: cpu.ode_endpoint(x.cpu(), s, rtol=1e-10, atol=1e-10).to(x.device),
                  cache_key="gm6x64")
    if kind == "ve":
        native = VE(sigma_min=0.002, sigma_max=80.0)
        return Problem("gm-ve", gm.denoiser, native, sigma_min=0.002, sigma_max=80.0,
                       description="Gaussian mixture (6 clusters, 64-dim), exact VE denoiser, σ 80 → 0.002",
                       **common)
    if kind == "vp-eps":
        native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
        model = gm.as_model("eps", native)
        return Problem("gm-vp-eps", samplers.to_denoiser(model, "eps", native), native,
                       sigma_min=native.sigma_min, sigma_max=native.sigma_max, native_model=model,
                       diffusers_config=dict(SD_BETAS, prediction_type="epsilon"),
                       description="Gaussian mixture as an SD-1.x-style discrete VP eps model "
                                   f"(scaled_linear betas, σ {native.sigma_max:.3g} → {native.sigma_min:.3g})",
                       **common)
    if kind == "flow":
        native = RectifiedFlow(shift=3.0, multiplier=1000.0)
        model = gm.as_model("flow", native)
        return Problem("gm-flow", samplers.to_denoiser(model, "flow", native), native,
                       sigma_min=native.sigma_min, sigma_max=native.sigma_max, finite_sigma_max=80.0,
                       native_model=model, diffusers_config=dict(flow_shift=3.0, num_train_timesteps=1000),
                       description="Gaussian mixture as an SD3-style rectified-flow model (shift 3, from t = 1; "
                                   "schedules that need a finite start use σ_max = 80)",
                       **common)
    raise ValueError(kind)


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
    def reference(x, sigma_start, seed=0):
        # float32 network: a tolerance of 1e-5 is far below the errors measured at ≤ 50 NFE and costs a
        # fraction of the model calls of 1e-7
        return ode_reference(denoiser_for(x.shape[0], seed), x, sigma_start, rtol=1e-5, atol=1e-5)

    return Problem(f"models-{model}", denoiser_for(1, 0), native, shape, sigma_min=native.sigma_min,
                   sigma_max=native.sigma_max, finite_sigma_max=80.0 if math.isinf(native.sigma_max) else None,
                   dtype=torch.float32, device=device, denoiser_for=denoiser_for, decode=decode, captions=captions,
                   native_model_for=native_model_for, diffusers_config=diffusers_config, reference_fn=reference,
                   description=f"models/ default {model} model (64×64 scenes, latents {shape}), prompts from "
                               f"models.data, classifier-free guidance {cfg:g}; error after decoding too",
                   cache_key=str(sha or "weights")[:12])


def _entry_point(spec: str) -> Problem:
    """``module:function``: the function returns a Problem, or a denoiser (then shape/sigmas are asked for)."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"an entry point is 'module:function', got {spec!r}")
    fn = getattr(importlib.import_module(module), attr)
    made = fn() if not isinstance(fn, Problem) else fn
    if isinstance(made, Problem):
        return made
    if callable(made):
        raise ValueError(
            f"{spec} returned a bare callable; return benchmarks.common.Problem(name, denoiser, native, shape, "
            "sigma_min, sigma_max) so the benchmark knows the latent shape and the sigma range")
    raise TypeError(f"{spec} must return a benchmarks.common.Problem, got {type(made).__name__}")


PROBLEMS = ("gm-ve", "gm-vp-eps", "gm-flow", "models-eps", "models-flow")


def get_problem(name: str, device: str = "cpu", dtype: torch.dtype | None = None) -> Problem:
    """A problem by name (see the module docstring). Raises :class:`ProblemUnavailable` with the reason."""
    if name.startswith("gm-"):
        problem = _gm_problem(name[3:], device)
    elif name in ("models-eps", "models-flow"):
        problem = _models_problem(name.split("-", 1)[1], device=device)
    elif ":" in name:
        problem = _entry_point(name)
    else:
        raise ValueError(f"unknown problem {name!r}; use one of {PROBLEMS} or a 'module:function' entry point")
    problem.device = device
    if dtype is not None:
        problem.dtype = dtype
    return problem


# ------------------------------------------------------------------------------------------------------
# steps for an NFE budget


class CountingDenoiser:
    """Counts model evaluations (a Python int: no device read)."""

    def __init__(self, denoiser: Callable):
        self.denoiser = denoiser
        self.calls = 0
        self.supports_infinite_sigma = getattr(denoiser, "supports_infinite_sigma", True)

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.denoiser(x, sigma, **extra_args)


def _cheap(x, sigma, **extra_args):
    # The exact denoiser of N(0, I) data: a stand-in to count a sampler's model calls at no cost.
    s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.where(torch.isinf(s), torch.zeros_like(x), x / (1 + s * s))


def count_nfe(sampler: str, sigmas: torch.Tensor, shape=(1, 2)) -> int:
    """Model evaluations ``sampler`` spends on ``sigmas`` (run once on a free stand-in model)."""
    model = CountingDenoiser(_cheap)
    x = samplers.initial_latent(torch.zeros(shape, dtype=torch.float64), sigmas)
    kw = {"seed": 0} if "seed" in samplers.info(sampler).options else {}
    samplers.sample(sampler, model, x, sigmas, disable=True, **kw)
    return model.calls


def steps_for_nfe(sampler: str, budget: int, make_sigmas: Callable[[int], torch.Tensor]) -> tuple[int, int] | None:
    """The most steps whose run costs at most ``budget`` model evaluations: (steps, nfe), or None."""
    spec = samplers.info(sampler)
    guess = max(1, int(budget // spec.nfe_per_step))
    best = None
    steps = guess
    # NFE grows with steps; walk down from the estimate, then up while it still fits.
    while steps >= 1:
        nfe = count_nfe(sampler, make_sigmas(steps))
        if nfe <= budget:
            best = (steps, nfe)
            break
        steps -= 1
    if best is None:
        return None
    while True:
        try:
            nfe = count_nfe(sampler, make_sigmas(best[0] + 1))
        except ValueError:
            break
        if nfe > budget:
            break
        best = (best[0] + 1, nfe)
    return best


# ------------------------------------------------------------------------------------------------------
# metrics


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square difference over every item and element (float64)."""
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def item_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean square difference of each item [B] (float64)."""
    return (a.double() - b.double()).pow(2).flatten(1).mean(1).sqrt()


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


def run_info(device: str = "cpu") -> dict:
    """Device, versions, date and commit: written next to every result."""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
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


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def device_label(info: dict) -> str:
    if "gpu" in info:
        return f"{info['gpu']} (CUDA {info.get('cuda')})"
    return f"CPU ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"


def sampler_names(requested: list[str] | None, include_adaptive: bool = False) -> list[str]:
    """Canonical sampler names: the requested ones, or every registered non-adaptive sampler."""
    if requested and requested != ["all"]:
        return [samplers.info(n).name for n in requested]
    return [n for n in samplers.available() if include_adaptive or not samplers.info(n).host_sync]


__all__ = ["Problem", "ProblemUnavailable", "get_problem", "ReferenceCache", "ode_reference", "steps_for_nfe",
           "count_nfe", "rmse", "item_rmse", "spread", "sliced_wasserstein", "frechet_distance", "run_info", "sampler_names"]

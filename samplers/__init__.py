"""diffusion-samplers: latent-diffusion sampling as ODE/SDE solving in one canonical (VE) space.

    import samplers
    sigmas = samplers.get_sigmas("karras", 20, native=samplers.VPDiscrete.from_betas())
    x0 = samplers.sample("dpmpp_2m", denoiser, samplers.initial_latent(noise, sigmas), sigmas)

The package, by role (each subpackage's docstring says what lives there and how to add to it):

- ``samplers.core``: registry, the run loop, step helpers, prediction conversions (``to_denoiser``), native
  schedules of trained models, seeds and noise, errors, CUDA graphs;
- ``samplers.ode`` / ``samplers.sde``: the samplers, one function per method;
- ``samplers.schedules``: sampling schedules by name and the schedule optimiser;
- ``samplers.interop``: diffusers scheduler and model adapters, the k-diffusion module, torchdiffeq / torchsde;
- ``samplers.fitted``: solvers fitted to a model;
- ``samplers.problems``: analytic problems with known answers (Gaussian mixtures) and the reference solver.

``import samplers`` is light: the samplers register themselves on the first registry lookup, and scipy,
torchdiffeq, torchsde and diffusers load only when something that needs them runs.
"""
import math as _math

import torch as _torch

from . import schedules  # noqa: F401
from .core.conversion import to_denoiser  # noqa: F401
from .core.errors import (InvalidInput, InvalidOption, InvalidType, LimitExceeded, MissingDependency,  # noqa: F401
                          NonFiniteError, SamplersError, StepLimitError, Unavailable, UnknownNameError)
from .core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete  # noqa: F401
from .core.registry import SamplerSpec, available, get, info, register, sample  # noqa: F401
from .core.run import debug  # noqa: F401
from .schedules import get_sigmas  # noqa: F401


def initial_latent(noise: _torch.Tensor, sigmas) -> _torch.Tensor:
    """The starting latent at ``sigmas[0]``: ``noise · σ_0``, or the unit noise itself when σ_0 is inf. ``sigmas`` is
    checked as a run checks it (:func:`samplers.core.run.read_sigmas`), with the same errors; a one-value sequence
    ``[σ_0]`` is the start alone, its σ_0 checked as a schedule's first value (and > 0: a run starts above its end)."""
    from collections.abc import Mapping

    from .core.run import check_latents, read_sigmas, state_dtype_for

    check_latents(noise, "noise", "unit noise, e.g. torch.randn: an integer or bool tensor would be cast by the "
                  "multiplication, or from σ = inf kept as is")
    if isinstance(sigmas, Mapping):
        raise InvalidType(f"sigmas must be a sequence of noise levels (a 1-D tensor, list or array), got a "
                          f"{type(sigmas).__name__}")
    # read as a run of these latents reads it (type, shape, values; σ beyond the state's range refused), one value too
    values = read_sigmas(sigmas, state_dtype_for(noise.dtype), least=1)
    first = values[0]
    if len(values) == 1 and first == 0:
        raise InvalidInput("sigmas = [0] starts no run: a schedule is strictly decreasing to an end >= 0, so its "
                           "first σ is > 0; pass the first σ of the schedule the run will take (or that schedule)")
    if _math.isinf(first):
        return noise
    out = noise * first
    if noise.dtype in (_torch.float16, _torch.bfloat16) and not bool(_torch.isfinite(out).all()):  # (one host read)
        raise NonFiniteError(f"noise · σ_0 = noise · {first:g} overflows {noise.dtype} (largest "
                             f"{_torch.finfo(noise.dtype).max:g}); start the run in float32 latents (noise.float()) "
                             "and cast the result back")
    return out


# ``from samplers import kdiffusion as sampling``: the k-diffusion drop-in under the name its users look for.
_ALIASES = {"kdiffusion": "samplers.interop.kdiffusion"}


def __getattr__(name: str):
    # Subpackages and modules load on first use (``samplers.problems``, ``samplers.interop``, ...).
    import importlib

    if name in _ALIASES:
        return importlib.import_module(_ALIASES[name])
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

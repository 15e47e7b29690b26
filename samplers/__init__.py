"""diffusion-samplers: latent-diffusion sampling as ODE/SDE solving in one canonical (VE) space.

    import samplers
    sigmas = samplers.get_sigmas("karras", 20, native=samplers.native.VPDiscrete.from_betas())
    x0 = samplers.sample("dpmpp_2m", denoiser, noise * sigmas[0], sigmas)

See README.md for the conversion layer (eps / x0 / v / flow / score / EDM models), schedules and noise.
"""
import math as _math

import torch as _torch

from . import native, noise, param, problems, schedules  # noqa: F401
from .native import RectifiedFlow, VE, VPContinuous, VPDiscrete  # noqa: F401
from .param import to_denoiser  # noqa: F401
from .registry import SamplerSpec, UnknownNameError, available, get, info, register, sample  # noqa: F401
from .run import NonFiniteError, debug  # noqa: F401
from .schedules import get_sigmas  # noqa: F401

# Importing the sampler modules registers them (one line per area, so areas never edit the same line).
from . import ode, rk  # noqa: F401,E402  core samplers
# deterministic samplers (issue 3):
from . import multistep, singlestep, unipc, deis, schedules_extra, torchdiffeq_adapter, learned  # noqa: F401,E402
# stochastic samplers (issue 4):
from . import ancestral, sde_solvers, brownian, torchsde_adapter  # noqa: F401,E402
# interop (issue 6): samplers.kdiffusion / .diffusers_scheduler / .diffusers_models: import explicitly (optional deps)


def initial_latent(noise: _torch.Tensor, sigmas) -> _torch.Tensor:
    """The starting latent at ``sigmas[0]``: ``noise · σ_0``, or the unit noise itself when σ_0 is inf."""
    first = float(sigmas[0])
    return noise if _math.isinf(first) else noise * first

"""k-diffusion compatibility: every registered sampler as ``sample_<name>``, and A1111 / ComfyUI names.

Tools built on k-diffusion (A1111, Forge, ComfyUI, custom scripts) look samplers up as attributes of
``k_diffusion.sampling`` and call them with their own model wrapper::

    from samplers import kdiffusion as sampling          # instead of: from k_diffusion import sampling
    x0 = sampling.sample_dpmpp_2m(model_wrap, x, sigmas, extra_args={"cond": c, "uncond": uc, "cond_scale": 7},
                                  callback=cb, disable=False)

``model_wrap(x, sigma, **extra_args)`` returns the denoised image (k-diffusion's ``CompVisDenoiser`` /
``DiscreteEpsDDPMDenoiser`` / A1111's ``CFGDenoiser``); ``sigma`` is a tensor of shape [B]; ``extra_args``
are passed through untouched; ``callback`` gets ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once per
step (``sigma`` and ``sigma_hat`` are Python floats). The attributes are computed from the registry when
they are looked up, so samplers registered after this module was imported appear too. Nothing here adds
names to the registry: display names only resolve through :func:`get_sampler`.
"""
from __future__ import annotations

from typing import Callable

from ..core import names, registry


def get_sampler(name: str) -> Callable:
    """The sampler for a registry name or alias, an A1111 / Forge label, or a ComfyUI KSampler name
    (:mod:`samplers.core.names`): a label that stands for a sampler with options (``"DPM++ 2M SDE Heun"`` is
    ``dpmpp_2m_sde`` with ``solver_type="heun"``) returns that sampler with those options bound."""
    return names.get(name)


def default_schedule(name: str) -> str | None:
    """The schedule a label implies (``"karras"`` for A1111's "DPM++ 2M"), or None for the caller's / model's own."""
    return names.resolve(name).schedule


def sampler_names() -> list[str]:
    """``sample_<name>`` for every registered sampler, as k-diffusion callers look them up."""
    return ["sample_" + name for name in registry.available()]


def __getattr__(attr: str):
    # Module-level __getattr__ (PEP 562): evaluated at lookup, so later registrations appear too.
    if attr.startswith("sample_"):
        name = attr[len("sample_"):]
        try:
            return names.get(name)
        except (KeyError, ValueError):
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + sampler_names())

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

import functools
from typing import Callable

from ..core import registry

# A1111 / Forge display names (``modules/sd_samplers_kdiffusion.py``) and ComfyUI's KSampler names
# (``comfy/samplers.py``) that are not registry names: name -> (registry sampler, options, A1111's default
# schedule). Names the registry already resolves (its sampler names and aliases, e.g. "Euler a") are
# looked up there first, so an alias added to a sampler later wins over this table (names that are
# already registry aliases, such as "Euler a", "k_euler" or "DDIM", are not repeated here).
DISPLAY_NAMES: dict[str, tuple[str, dict, str | None]] = {
    # A1111 labels and their k_* aliases
    "DPM++ 2M": ("dpmpp_2m", {}, "karras"),
    "k_dpmpp_2m": ("dpmpp_2m", {}, "karras"),
    "DPM++ 2M Karras": ("dpmpp_2m", {}, "karras"),
    "DPM++ SDE": ("dpmpp_sde", {}, "karras"),
    "k_dpmpp_sde": ("dpmpp_sde", {}, "karras"),
    "DPM++ SDE Karras": ("dpmpp_sde", {}, "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", {}, "exponential"),
    "k_dpmpp_2m_sde": ("dpmpp_2m_sde", {}, "exponential"),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", {}, "karras"),
    "DPM++ 2M SDE Exponential": ("dpmpp_2m_sde", {}, "exponential"),
    "DPM++ 2M SDE Heun": ("dpmpp_2m_sde", {"solver_type": "heun"}, "exponential"),
    "k_dpmpp_2m_sde_heun": ("dpmpp_2m_sde", {"solver_type": "heun"}, "exponential"),
    "DPM++ 2M SDE Heun Karras": ("dpmpp_2m_sde", {"solver_type": "heun"}, "karras"),
    "DPM++ 2M SDE Heun Exponential": ("dpmpp_2m_sde", {"solver_type": "heun"}, "exponential"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", {}, "karras"),
    "k_dpmpp_2s_a": ("dpmpp_2s_ancestral", {}, "karras"),
    "DPM++ 2S a Karras": ("dpmpp_2s_ancestral", {}, "karras"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", {}, "exponential"),
    "k_dpmpp_3m_sde": ("dpmpp_3m_sde", {}, "exponential"),
    "DPM++ 3M SDE Karras": ("dpmpp_3m_sde", {}, "karras"),
    "DPM++ 3M SDE Exponential": ("dpmpp_3m_sde", {}, "exponential"),
    "LMS": ("lms", {}, None),
    "k_lms": ("lms", {}, None),
    "LMS Karras": ("lms", {}, "karras"),
    "DPM2": ("dpm_2", {}, "karras"),
    "k_dpm_2": ("dpm_2", {}, "karras"),
    "DPM2 Karras": ("dpm_2", {}, "karras"),
    "DPM2 a": ("dpm_2_ancestral", {}, "karras"),
    "k_dpm_2_a": ("dpm_2_ancestral", {}, "karras"),
    "DPM2 a Karras": ("dpm_2_ancestral", {}, "karras"),
    "DPM fast": ("dpm_fast", {}, None),
    "k_dpm_fast": ("dpm_fast", {}, None),
    "DPM adaptive": ("dpm_adaptive", {}, None),
    "k_dpm_ad": ("dpm_adaptive", {}, None),
    "Restart": ("restart", {}, "karras"),
    "DDPM": ("ddpm", {}, None),
    "LCM": ("lcm", {}, None),
    "UniPC": ("unipc_bh1", {}, None),
    "PLMS": ("plms", {}, None),
    "iPNDM": ("ipndm", {}, None),
    "iPNDM_v": ("lms", {}, None),  # the variable-step Adams-Bashforth
    "DEIS": ("deis", {}, None),
    # ComfyUI KSampler names that are variants of one sampler
    "dpmpp_sde_gpu": ("dpmpp_sde", {}, None),
    "dpmpp_2m_sde_gpu": ("dpmpp_2m_sde", {}, None),
    "dpmpp_2m_sde_heun": ("dpmpp_2m_sde", {"solver_type": "heun"}, None),
    "dpmpp_2m_sde_heun_gpu": ("dpmpp_2m_sde", {"solver_type": "heun"}, None),
    "dpmpp_3m_sde_gpu": ("dpmpp_3m_sde", {}, None),
}


def _table_entry(name: str):
    norm = registry._normalise(name)
    for key, entry in DISPLAY_NAMES.items():
        if registry._normalise(key) == norm:
            return entry
    return None


def get_sampler(name: str) -> Callable:
    """The sampler for a registry name or alias, an A1111 / Forge label, or a ComfyUI KSampler name.

    Registry names win; a label that stands for a sampler with options (``"DPM++ 2M SDE Heun"`` is
    ``dpmpp_2m_sde`` with ``solver_type="heun"``) returns that sampler with those options set. Unknown names
    raise :class:`samplers.UnknownNameError` listing the closest names.
    """
    if name in registry.SAMPLERS:
        return registry.get(name)
    entry = _table_entry(name)
    if entry is None:
        registry.get(name)  # raises with the closest names
    target, options, _ = entry
    fn = registry.get(target)
    if not options:
        return fn
    missing = set(options) - set(registry.info(target).options)
    if missing:
        raise registry.UnknownNameError(f"{name!r} is {target} with {options}, but {target} has no option(s) "
                                        f"{sorted(missing)}")
    return _with_options(fn, options, name)


def default_schedule(name: str) -> str | None:
    """A1111's default schedule for a label (``"karras"`` for "DPM++ 2M"), or None for the model's own."""
    entry = _table_entry(name)
    return entry[2] if entry else None


def _with_options(fn: Callable, options: dict, label: str) -> Callable:
    @functools.wraps(fn)
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, **kwargs):
        return fn(model, x, sigmas, extra_args, callback, disable, **{**options, **kwargs})

    sampler.__name__ = "sample_" + "".join(ch if ch.isalnum() else "_" for ch in label.lower())
    return sampler


def sampler_names() -> list[str]:
    """``sample_<name>`` for every registered sampler, as k-diffusion callers look them up."""
    return ["sample_" + name for name in registry.available()]


def __getattr__(attr: str):
    # Module-level __getattr__ (PEP 562): evaluated at lookup, so later registrations appear too.
    if attr.startswith("sample_"):
        name = attr[len("sample_"):]
        if name in registry.SAMPLERS:
            return registry.get(name)
        if _table_entry(name) is not None:
            return get_sampler(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + sampler_names())

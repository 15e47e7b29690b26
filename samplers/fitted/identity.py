"""Which model a denoiser is: a fingerprint that a fitted solver records, so that running it on another model is
an error (:func:`fingerprint`).

The fingerprint of a torch module is the SHA-256 of its class name and its state dict (names, dtypes, shapes,
bytes); a module with an empty state dict (no parameters, no buffers) has none of its own — its class name does not
tell one such model from another (a plain attribute may set what it computes) —, so it is read as any other object
is (what it wraps, else None); wrappers are seen through (``to_denoiser``'s, classifier-free guidance, a bound method's object, the
pipeline); guidance adds its scale (unless 1: no guidance), since the guided denoiser is another function of x — a
wrapper's ``scale`` or ``guidance_scale`` (:data:`GUIDANCE`), any real number however held (a float, a numpy scalar, a
one-element tensor), also on a wrapper that is a module holding its network (k-diffusion's ``CFGDenoiser`` shape,
whose state dict is the network's: its weights alone would not tell one scale from another). A wrapper whose scale
is not a number has no fingerprint (what it computes cannot be told). A ``functools.partial``'s bound values are
part of what it computes (:func:`with_bound`: ``partial(cfg_denoiser, cond_scale=7)`` is the model at guidance 7):
numbers and strings are hashed in, tensors — per-item conditioning, an input like the prompt — are not, and a
value it cannot read (an arbitrary object) leaves no fingerprint. A scale passed per call (``extra_args={"cond_scale":
7}``, k-diffusion / A1111's CFGDenoiser shape) never reaches the fingerprint: a solver's check cannot see it, so
another scale given that way runs unrefused (bind it with ``functools.partial``, or hold it on the wrapper, to have
it checked). A ``to_denoiser`` denoiser adds its prediction type, noise schedule and σ_data to a native model known
by its weights (:func:`denoiser_fingerprint`: the same network under another beta table is another model). An
object can name itself with a ``samplers_fingerprint()`` method or attribute (the analytic problems and the
pipeline do; such a name is taken at its word). A callable with none of these has no fingerprint: ``None``.

A fingerprint is a SHA-256 hex digest, optionally followed by ``|``-separated qualifiers (the analytic problems'
``as_model`` adds its prediction and schedule): :func:`is_fingerprint`, the rule a solver file's
``model.fingerprint`` is held to. An object's own name of another form is hashed into one (the same name, the same
fingerprint).

:func:`prediction` and :func:`table_range` read the model's prediction type and the σ range of its timestep table
through the same wrappers (:mod:`samplers.core.wrapped`), where the model says (``to_denoiser``'s denoiser does);
None where it does not.
"""
from __future__ import annotations

import functools
import hashlib
import numbers
import re

import numpy as np
import torch

from ..core.wrapped import DEPTH as _DEPTH, INNER as _INNER, read as _read

_FINGERPRINT = re.compile(r"[0-9a-f]{64}(\|[^\x00-\x1f\x7f]*)?")
MAX_FINGERPRINT = 4096  # characters: a digest and a few qualifiers (a schedule's repr) fit many times over


def is_fingerprint(value) -> bool:
    """Whether ``value`` has a fingerprint's form: 64 lower-case hex digits, then optionally ``|`` and printable
    qualifiers, at most :data:`MAX_FINGERPRINT` characters."""
    return isinstance(value, str) and len(value) <= MAX_FINGERPRINT and _FINGERPRINT.fullmatch(value) is not None


# where a guidance wrapper keeps its scale (ours, k-diffusion-style CFGDenoisers that hold it, diffusers')
GUIDANCE = ("scale", "guidance_scale")
_UNREADABLE = object()  # a guidance attribute that is not a real number: what the wrapper computes cannot be told


def guidance_scale(value):
    """A guidance scale as a float: a real number however it is held (int, float, a numpy scalar or 0-d array, a
    one-element tensor); None for none (the attribute absent or None); :data:`_UNREADABLE` for anything else."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):  # a guidance wrapper's tensor scale: real, one element
        real = value.numel() == 1 and value.dtype != torch.bool and not value.is_complex()
        return float(value.reshape(())) if real else _UNREADABLE
    if isinstance(value, np.ndarray):
        return float(value.reshape(())) if value.size == 1 and value.dtype.kind in "iuf" else _UNREADABLE
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    return _UNREADABLE


def with_guidance(found: str | None, scale) -> str | None:
    """The fingerprint of ``found``'s denoiser under classifier-free guidance at ``scale`` (any real scalar,
    :func:`guidance_scale`; 1 or None: itself); None where the scale is not a number (it cannot be told what the
    guided denoiser is)."""
    value = guidance_scale(scale)
    if found is None or value is _UNREADABLE:
        return None
    if value is not None and value != 1.0:
        return hashlib.sha256(f"{found}|guidance {value!r}".encode()).hexdigest()
    return found


# the keywords a guidance scale is passed by per call (k-diffusion / A1111's CFGDenoiser: cond_scale; ComfyUI: cfg)
SCALE_KEYWORDS = ("cond_scale", "cfg", "cfg_scale", "guidance_scale", "scale", "guidance")


def _bound_value(key, value):
    """What a value bound with ``functools.partial`` adds to the identity: a number (under a scale keyword of
    :data:`SCALE_KEYWORDS` however held, :func:`guidance_scale`), a string, a bool or None as its repr; a tensor
    is per-item conditioning (prompt embeddings, a mask), an input like the prompt, so nothing (``""``); a list,
    tuple or dict of these, each (nothing where it holds tensors alone). :data:`_UNREADABLE` for anything else (an
    object whose effect cannot be told)."""
    if key in SCALE_KEYWORDS:
        scale = guidance_scale(value)
        return scale if scale is _UNREADABLE else repr(scale)
    if isinstance(value, torch.Tensor):
        return ""
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return repr(value)
    if isinstance(value, numbers.Real) or (isinstance(value, np.ndarray) and value.size == 1):
        number = guidance_scale(value)
        return number if number is _UNREADABLE else repr(number)
    items = (value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple))
             else None)
    if items is None:
        return _UNREADABLE
    parts = [(repr(k), _bound_value(k, v)) for k, v in items]
    if any(v is _UNREADABLE for _, v in parts):
        return _UNREADABLE
    if all(v == "" for _, v in parts):
        return ""  # conditioning tensors in a container (ComfyUI's cond lists, A1111's {"c_crossattn": [...]})
    return repr(sorted(parts) if isinstance(value, dict) else parts)


def with_bound(found: str | None, args: tuple, keywords: dict) -> str | None:
    """The fingerprint of ``functools.partial(model, *args, **keywords)`` where ``model``'s is ``found``: the bound
    values are part of what it computes (``partial(cfg_denoiser, cond_scale=7)`` is the model at guidance 7), so
    they are hashed into it (:func:`_bound_value`: numbers, strings and the like; tensors — per-item conditioning —
    leave it as it is); None where one cannot be read. A partial binding nothing is its function."""
    if found is None or not (args or keywords):
        return found
    parts = [(repr(i), _bound_value(None, v)) for i, v in enumerate(args)]
    parts += [(repr(k), _bound_value(k, v)) for k, v in sorted(keywords.items())]
    if any(v is _UNREADABLE for _, v in parts):
        return None
    parts = [(k, v) for k, v in parts if v != ""]  # tensors: conditioning, not the model
    return hashlib.sha256(f"{found}|bound {parts!r}".encode()).hexdigest() if parts else found


def _own(value) -> str:
    """An object's own fingerprint as it is recorded: itself where it has a fingerprint's form, else its hash."""
    text = value if isinstance(value, str) else repr(value)
    return text if is_fingerprint(text) else hashlib.sha256(f"samplers_fingerprint|{text}".encode()).hexdigest()


def schedule_key(schedule) -> str:
    """What tells one native noise schedule from another in a fingerprint: the SHA-256 of a table schedule's
    ``alphas_cumprod`` (float64 bytes), else its repr (RectifiedFlow's shift and multiplier, ...)."""
    table = getattr(schedule, "alphas_cumprod", None)
    return (hashlib.sha256(table.detach().cpu().double().numpy().tobytes()).hexdigest()
            if isinstance(table, torch.Tensor) else repr(schedule))


def module_fingerprint(module: torch.nn.Module) -> str | None:
    """The SHA-256 of the module's class name and state dict; None where the state dict is empty (no parameters,
    no buffers: nothing but the class name, which many models share, would be hashed). A ``torch.compile``'d module
    (``OptimizedModule``, its state under ``_orig_mod.``, at the top or inside) is the module it compiles."""
    while isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
        module = module._orig_mod
    state = module.state_dict()
    if not state:
        return None
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted((_uncompiled(k), v) for k, v in state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return h.hexdigest()


def _uncompiled(key: str) -> str:
    """A state-dict key without the ``_orig_mod.`` segments a torch.compile'd submodule adds."""
    return ".".join(part for part in key.split(".") if part != "_orig_mod")


def fingerprint(model, _depth: int = 0) -> str | None:
    """The model's fingerprint (a hex string), or None when it cannot be told (see the module docstring)."""
    return _identify(model, _depth)[0]


def _identify(model, depth: int) -> tuple[str | None, bool]:
    """(:func:`fingerprint` of ``model``, whether it is a name: an object's own ``samplers_fingerprint``, found on
    ``model`` or on what it wraps, rather than weights)."""
    if model is None or depth > _DEPTH:
        return None, False
    own = getattr(model, "samplers_fingerprint", None)
    if own is not None:
        named = own() if callable(own) else own
        return (None if named is None else _own(named)), True  # None: it knows it has none (a U-Net without weights)
    if isinstance(model, torch.nn.Module):
        found = module_fingerprint(model)
        if found is not None:
            # its weights hold a wrapped network's too (a k-diffusion-style CFGDenoiser module), not its scale
            return (with_guidance(found, _scale(model)) if _wrapped(model) is not None else found), False
        # no parameters or buffers: no identity of its own; what it wraps (as a wrapper's) where it wraps a model
    if isinstance(model, functools.partial):
        found, named = _identify(model.func, depth + 1)
        return with_bound(found, model.args, model.keywords), named
    bound = getattr(model, "__self__", None)
    if bound is not None and not isinstance(bound, type):
        return _identify(bound, depth + 1)
    for attr in _INNER:
        inner = getattr(model, attr, None)
        if inner is not None and inner is not model:
            found, named = _identify(inner, depth + 1)
            if found is not None:
                return with_guidance(found, _scale(model)), named  # guidance: another denoiser at another scale
    return None, False


def denoiser_fingerprint(denoiser) -> str | None:
    """The fingerprint of a ``to_denoiser`` denoiser (:class:`samplers.core.conversion.Denoiser`, whose
    ``samplers_fingerprint`` this is): what D(x, σ) computes is its native model read through its prediction type,
    its noise schedule (the σ each time input means) and EDM's σ_data, so the same network under another schedule
    (an SD-1.x U-Net given another beta table) is another model. A native model known by its weights alone has
    those three added to its fingerprint. One known by a name — a ``samplers_fingerprint`` on it or on what it
    wraps: the pipeline's U-Net and a mixture's ``as_model``, whose names hold their schedule and prediction, or a
    denoiser inside (ComfyUI's flow model around one), already whole — is taken at its word (a name of your own
    should hold the schedule too). None where the native model has no fingerprint."""
    import json

    found, named = _identify(denoiser.model, 1)
    if found is None or named:
        return found
    schedule = denoiser.schedule
    reads = json.dumps({"prediction": denoiser.prediction, "schedule": schedule_key(schedule),
                        "schedule_repr": repr(schedule), "sigma_data": denoiser.sigma_data}, sort_keys=True)
    return hashlib.sha256(f"{found}|denoiser {reads}".encode()).hexdigest()


def _wrapped(model):
    """The first model ``model`` holds where a wrapper keeps one (:data:`samplers.core.wrapped.INNER`), or None."""
    return next((v for v in (getattr(model, a, None) for a in _INNER) if callable(v) and v is not model), None)


def _scale(model):
    """A wrapper's guidance scale as it holds it: the first of :data:`GUIDANCE` it has (None: none)."""
    return next((v for v in (getattr(model, a, None) for a in GUIDANCE) if v is not None), None)


def prediction(model) -> str | None:
    """The model's prediction type (``"eps"``, ``"flow"``, …: :data:`samplers.core.conversion.PREDICTIONS`) where
    it or a denoiser it wraps says (``to_denoiser``'s does), else None."""
    from ..core.conversion import PREDICTIONS

    return _read(model, "prediction", lambda v: isinstance(v, str) and v in PREDICTIONS)


def table_range(model) -> tuple[float, float] | None:
    """``(σ_min, σ_max)`` of a model whose time input comes from a σ table (a discrete VP schedule,
    :class:`samplers.core.native.VPDiscrete`, which clamps a σ outside it to its ends), where it or a denoiser it wraps
    says (``to_denoiser``'s holds its ``schedule``); None otherwise."""
    from ..core.native import VPDiscrete

    found = _read(model, "schedule", lambda v: isinstance(v, VPDiscrete))
    return None if found is None else (float(found.sigma_min), float(found.sigma_max))

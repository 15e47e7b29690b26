"""Which model a denoiser is: a fingerprint that a fitted solver records, so that running it on another model is
an error (:func:`fingerprint`).

The fingerprint of a torch module is the SHA-256 of its class name and its state dict (names, dtypes, shapes,
bytes); a module with an empty state dict (no parameters, no buffers) has none of its own — its class name does not
tell one such model from another (a plain attribute may set what it computes) —, so it is read as any other object
is (what it wraps, else None); wrappers are seen through (``to_denoiser``'s, classifier-free guidance, a bound method's object, the
pipeline); guidance adds its scale (unless 1: no guidance), since the guided denoiser is another function of x. An object can name
itself with a ``samplers_fingerprint()`` method or attribute (the analytic problems do). A callable with none of
these has no fingerprint: ``None``.

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
import re

import torch

from ..core.wrapped import DEPTH as _DEPTH, INNER as _INNER, read as _read

_FINGERPRINT = re.compile(r"[0-9a-f]{64}(\|[^\x00-\x1f\x7f]*)?")
MAX_FINGERPRINT = 4096  # characters: a digest and a few qualifiers (a schedule's repr) fit many times over


def is_fingerprint(value) -> bool:
    """Whether ``value`` has a fingerprint's form: 64 lower-case hex digits, then optionally ``|`` and printable
    qualifiers, at most :data:`MAX_FINGERPRINT` characters."""
    return isinstance(value, str) and len(value) <= MAX_FINGERPRINT and _FINGERPRINT.fullmatch(value) is not None


def with_guidance(found: str | None, scale) -> str | None:
    """The fingerprint of ``found``'s denoiser under classifier-free guidance at ``scale`` (1 or none: itself)."""
    if found is not None and isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale != 1.0:
        return hashlib.sha256(f"{found}|guidance {float(scale)!r}".encode()).hexdigest()
    return found


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
    if model is None or _depth > _DEPTH:
        return None
    own = getattr(model, "samplers_fingerprint", None)
    if own is not None:
        return _own(own() if callable(own) else own)
    if isinstance(model, torch.nn.Module):
        found = module_fingerprint(model)
        if found is not None:
            return found
        # no parameters or buffers: no identity of its own; what it wraps (as a wrapper's) where it wraps a model
    if isinstance(model, functools.partial):
        return fingerprint(model.func, _depth + 1)
    bound = getattr(model, "__self__", None)
    if bound is not None and not isinstance(bound, type):
        return fingerprint(bound, _depth + 1)
    for attr in _INNER:
        inner = getattr(model, attr, None)
        if inner is not None and inner is not model:
            found = fingerprint(inner, _depth + 1)
            if found is not None:
                # guidance: another denoiser at another scale
                return with_guidance(found, getattr(model, "scale", getattr(model, "guidance_scale", None)))
    return None


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

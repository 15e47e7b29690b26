"""Which model a denoiser is: a fingerprint that a fitted solver records, so that running it on another model is
an error (:func:`fingerprint`).

The fingerprint of a torch module is the SHA-256 of its class name and its state dict (names, dtypes, shapes,
bytes); wrappers are seen through (``to_denoiser``'s, classifier-free guidance, a bound method's object, the
pipeline); guidance adds its scale (unless 1: no guidance), since the guided denoiser is another function of x. An object can name
itself with a ``samplers_fingerprint()`` method or attribute (the analytic problems do). A callable with none of
these has no fingerprint: ``None``.
"""
from __future__ import annotations

import functools
import hashlib

import torch

# where wrappers keep what they wrap, looked through in this order
_INNER = ("inner", "inner_model", "model", "denoiser", "_denoiser", "unet")
_DEPTH = 8


def module_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint(model, _depth: int = 0) -> str | None:
    """The model's fingerprint (a hex string), or None when it cannot be told (see the module docstring)."""
    if model is None or _depth > _DEPTH:
        return None
    own = getattr(model, "samplers_fingerprint", None)
    if own is not None:
        return own() if callable(own) else str(own)
    if isinstance(model, torch.nn.Module):
        return module_fingerprint(model)
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
                scale = getattr(model, "scale", getattr(model, "guidance_scale", None))
                if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale != 1.0:
                    found = hashlib.sha256(f"{found}|guidance {float(scale)!r}".encode()).hexdigest()
                return found
    return None

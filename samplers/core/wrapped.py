"""What a wrapper wraps: a denoiser seen through the objects users and tools put around it.

A k-diffusion-style classifier-free guidance wrapper keeps its model in ``inner_model``, ours in ``inner``; a
bound method's object, a ``functools.partial``'s function and the attributes of :data:`INNER` are looked through, in
that order, at most :data:`DEPTH` deep. :func:`read` finds the first value of an attribute there — what a run
checks before its loop (whether the model can be evaluated at σ = ∞, the time inputs of its grid on a timestep
table) and what a fitted solver records (samplers/fitted/identity.py) — so that a wrapper which does not pass them
on does not switch the checks off.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

# where wrappers keep what they wrap, looked through in this order
INNER = ("inner", "inner_model", "model", "denoiser", "_denoiser", "unet")
DEPTH = 8


def read(model, attr: str, accept: Callable[[Any], bool], _depth: int = 0):
    """The first value of ``attr`` that ``accept`` takes, on ``model`` or what it wraps; None when none says."""
    if model is None or _depth > DEPTH:
        return None
    try:
        value = getattr(model, attr, None)
    except Exception:  # a property that cannot answer here says nothing
        value = None
    if accept(value):
        return value
    if isinstance(model, functools.partial):
        return read(model.func, attr, accept, _depth + 1)
    bound = getattr(model, "__self__", None)
    if bound is not None and not isinstance(bound, type):
        return read(bound, attr, accept, _depth + 1)
    for name in INNER:
        inner = getattr(model, name, None)
        if inner is not None and inner is not model:
            found = read(inner, attr, accept, _depth + 1)
            if found is not None:
                return found
    return None


def supports_infinite_sigma(model) -> bool | None:
    """Whether the model can be evaluated at σ = ∞, where it or a denoiser it wraps says; None where none does."""
    return read(model, "supports_infinite_sigma", lambda v: isinstance(v, bool))


def infinite_sigma_refusal(model) -> str | None:
    """Why the model cannot be evaluated at σ = ∞, where it or a denoiser it wraps says (a ``to_denoiser`` denoiser's
    ``infinite_sigma_refusal``: its prediction, or its schedule's finite σ_max); None where none does."""
    return read(model, "infinite_sigma_refusal", lambda v: isinstance(v, str))

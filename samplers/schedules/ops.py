"""Operations on schedules: split at a step, flip, truncate for img2img strength, replace the first sigma, drop the
next-to-last. Each takes a 1-D tensor, numpy array or list of real numbers (checked once, :func:`_schedule`) and
returns a tensor."""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import InvalidInput, InvalidType
from ..core.validate import integer, real
from .base import range_end


def split(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split at a step: the two parts share the boundary sigma (high part ends where the low part starts)."""
    sigmas = _schedule(sigmas, "split")
    step = integer("step", step)
    if not 0 <= step < len(sigmas):
        raise InvalidInput(f"step must be in [0, {len(sigmas) - 1}], got {step}")
    return sigmas[: step + 1], sigmas[step:]

def _as_tensor(sigmas) -> torch.Tensor:
    """A schedule as a tensor: a tensor as it is, a numpy array of numbers as the tensor it holds, a list or tuple
    (or numpy array of objects) of real numbers (0-d tensors too) as float64, each value read as a run reads it
    (:func:`samplers.core.run._sigma_value`); not its order, which is what flip is for."""
    from ..core.run import _sigma_value

    if isinstance(sigmas, np.ndarray) and sigmas.dtype.kind in "iuf":
        # a copy in native byte order and contiguous (a reversed view, a big-endian array: from_numpy takes neither)
        return torch.from_numpy(np.ascontiguousarray(sigmas, dtype=sigmas.dtype.newbyteorder("=")))
    if isinstance(sigmas, torch.Tensor):
        return sigmas
    if isinstance(sigmas, (str, bytes, dict, set, frozenset)) or not isinstance(sigmas, (list, tuple, np.ndarray)):
        raise InvalidType(f"sigmas must be a 1-D tensor, numpy array or list of numbers, got {type(sigmas).__name__}")
    return torch.tensor([_sigma_value(s) for s in sigmas], dtype=torch.float64)


def _schedule(sigmas, op: str, least: int = 1) -> torch.Tensor:
    """The one input check of every operation here: ``sigmas`` as :func:`_as_tensor` reads it, 1-D, real numbers (no
    bool, no complex), at least ``least`` of them; refused by name, never sliced or indexed as something else."""
    out = _as_tensor(sigmas)
    if out.dtype == torch.bool or out.is_complex():
        raise InvalidType(f"{op}: sigmas must hold real numbers, got a tensor of {out.dtype}; pass the schedule's σ "
                          "as a float tensor (samplers.get_sigmas(...) builds one)")
    if out.ndim != 1:
        raise InvalidInput(f"{op}: sigmas must be 1-D (one σ per step, then the last), got shape {tuple(out.shape)}; "
                           "pass one schedule (a batch of schedules: one at a time, e.g. sigmas[0])")
    if out.numel() < least:
        raise InvalidInput(f"{op}: sigmas is empty; pass a schedule (samplers.get_sigmas(...) builds one)"
                           if out.numel() == 0 else
                           f"{op} needs at least {least} σ (at least one step), got {out.numel()}; pass a schedule "
                           "of at least one step (samplers.get_sigmas(...) builds one)")
    return out


def flip(sigmas) -> torch.Tensor:
    """Reverse the order (e.g. to invert a sampler: noise an image back up the schedule, or to run an ascending
    schedule). ``sigmas``: a 1-D tensor, numpy array or list of numbers; returns a tensor."""
    return _schedule(sigmas, "flip").flip(0)

def rounded_steps(strength: float, steps: int) -> int:
    """The steps of a ``steps``-step schedule that ``strength`` asks :func:`truncate` to keep, before its floor of one
    step: ``round(strength · steps)`` (Python's rounding, halves to even), at most ``steps``. 0 where the strength is
    less than half a step (truncate then keeps one step anyway); a caller that must not run more than was asked
    (the pipeline's img2img / inpaint) refuses that case with it."""
    return min(steps, round(strength * steps))


def truncate(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """img2img: keep the last ``round(strength · steps)`` steps (at least one) of a schedule.

    ``strength`` in (0, 1] is how much of the schedule is run: 1 starts from pure noise.
    """
    sigmas = _schedule(sigmas, "truncate", least=2)
    strength = real("strength", strength, what=" in (0, 1] (the share of the schedule run; 1 starts from pure noise)")
    if not 0 < strength <= 1:
        raise InvalidInput(f"strength must be in (0, 1], got {strength!r}")
    steps = len(sigmas) - 1
    keep = max(1, rounded_steps(strength, steps))
    return sigmas[steps - keep:]

def set_first(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """Replace the first sigma (e.g. start a flow schedule at a finite sigma); must stay decreasing. ``sigma``: a
    number >= 0 (inf too; a numpy or 0-d tensor scalar counts as the number it holds)."""
    sigmas = _schedule(sigmas, "set_first")
    sigma = real("sigma", range_end("sigma", sigma), lo=0.0, allow_inf=True, what=" (set_first's new first sigma)")
    out = sigmas.clone().to(torch.float64)
    out[0] = sigma
    if len(out) > 1 and not float(out[0]) > float(out[1]):
        raise InvalidInput(f"set_first({sigma}) would not be above the next sigma {float(out[1])}")
    return out


def drop_penultimate(sigmas: torch.Tensor) -> torch.Tensor:
    """Drop the next-to-last sigma (A1111's ``discard_next_to_last_sigma``, which its DPM2 labels use): the last
    step then goes from σ_{n−2} straight to the final σ; one step fewer."""
    sigmas = _schedule(sigmas, "drop_penultimate")
    if len(sigmas) < 3:
        raise InvalidInput(f"dropping the next-to-last sigma needs at least 2 steps, got {len(sigmas) - 1}")
    return torch.cat([sigmas[:-2], sigmas[-1:]])

"""Seeds: one per batch item, and noise drawn from one generator per item (so item k's numbers depend only
on its own seed, never on the batch size or the other items)."""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
import torch

from .errors import InvalidInput, InvalidType


SEED_LIMIT = 2**63  # torch generators take seeds below this; a larger one would silently wrap to another seed


def _one_seed(value, what: str) -> int:
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise InvalidType(f"{what} must be an integer, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_floating_point() or value.is_complex():
            raise InvalidType(f"{what} must be an integer or a 0-d integer tensor, got a tensor of shape "
                              f"{tuple(value.shape)} and dtype {value.dtype}")
        value = int(value)
    try:
        seed = operator.index(value)
    except TypeError:
        raise InvalidType(f"{what} must be an integer, got {value!r} ({type(value).__name__}); round it yourself if "
                          "that is what you mean") from None
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidInput(f"{what} = {seed} is outside 0 <= seed < 2**63 (a generator would wrap it to another seed)")
    return seed


def is_seed_list(seed) -> bool:
    """Whether ``seed`` lists one seed per item (a list, tuple, or 1-D integer tensor or numpy array) rather than
    being one base seed."""
    return isinstance(seed, (list, tuple)) or (isinstance(seed, (torch.Tensor, np.ndarray)) and seed.ndim == 1)


def resolve_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per batch item: ``seed + k`` for an int, the list itself for a list (or tuple, or 1-D integer tensor
    or numpy array).

    ``None`` draws one base seed from torch's global generator, so ``torch.manual_seed`` still makes a
    run reproducible. Seeds are integers in [0, 2**63); nothing is rounded or wrapped.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
    if isinstance(seed, (str, bytes, dict, set)) or (isinstance(seed, float) and not isinstance(seed, bool)):
        raise InvalidType(f"seed must be an integer or one integer per batch item, got {seed!r}")
    if not is_seed_list(seed):
        base = _one_seed(seed, "seed")
        if base + batch > SEED_LIMIT:
            raise InvalidInput(f"seed = {base} leaves no room for {batch} items (item k uses seed + k < 2**63)")
        return [base + k for k in range(batch)]
    items = seed.tolist() if isinstance(seed, (torch.Tensor, np.ndarray)) else list(seed)
    seeds = [_one_seed(s, f"seed[{k}]") for k, s in enumerate(items)]
    if len(seeds) != batch:
        raise InvalidInput(f"got {len(seeds)} seeds for a batch of {batch}; pass one seed per item or one int")
    return seeds


def generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) % SEED_LIMIT)  # derived streams (seed ^ mix) may exceed it: wrap those, not users' seeds
        gens.append(g)
    return gens


def seeded_randn(shape: Sequence[int], seeds: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (batch first) where item k is drawn from a generator seeded ``seeds[k]``."""
    if shape[0] != len(seeds):
        raise InvalidInput(f"shape {tuple(shape)} has batch {shape[0]} but {len(seeds)} seeds were given")
    device = torch.device(device or "cpu")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                        for g in generators(seeds, device)])

"""Seeds: one per batch item, and noise drawn from one generator per item (so item k's numbers depend only
on its own seed, never on the batch size or the other items)."""
from __future__ import annotations

from typing import Sequence

import torch


def resolve_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per batch item: ``seed + k`` for an int, the list itself for a list.

    ``None`` draws one base seed from torch's global generator, so ``torch.manual_seed`` still makes a
    run reproducible.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
    if isinstance(seed, int):
        return [seed + k for k in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}; pass one seed per item or one int")
    return seeds


def generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) % 2**63)
        gens.append(g)
    return gens


def seeded_randn(shape: Sequence[int], seeds: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (batch first) where item k is drawn from a generator seeded ``seeds[k]``."""
    if shape[0] != len(seeds):
        raise ValueError(f"shape {tuple(shape)} has batch {shape[0]} but {len(seeds)} seeds were given")
    device = torch.device(device or "cpu")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                        for g in generators(seeds, device)])

"""Seeded, batch-invariant noise.

A noise sampler is any callable ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like the latent
(k-diffusion convention). The default draws from one ``torch.Generator`` per batch item, so item k's
noise depends only on its own seed: its result does not change with the batch size or with the other
items in the batch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

NoiseSampler = Callable[[float, float], torch.Tensor]

# In-loop noise uses a stream derived from the user's seed, so that it is not the same stream as the
# initial latent noise drawn with `seeded_randn(..., seeds)` (the two would otherwise be correlated).
_STREAM_MIX = 0x9E3779B97F4A7C15


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


def _generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
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
                        for g in _generators(seeds, device)])


class SeededNoise:
    """Default in-loop noise: one generator per batch item, each advanced once per draw."""

    def __init__(self, like: torch.Tensor, seeds: Sequence[int]):
        self.shape = tuple(like.shape[1:])
        self.dtype = like.dtype
        self.device = like.device
        self.generators = _generators([(s ^ _STREAM_MIX) for s in seeds], like.device)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device, dtype=self.dtype)
                            for g in self.generators])


def resolve(noise_sampler: NoiseSampler | None, seed, x: torch.Tensor) -> NoiseSampler:
    """The noise sampler a run uses: the caller's own, or the seeded per-item default."""
    if noise_sampler is not None:
        if seed is not None:
            raise ValueError("pass either noise_sampler or seed, not both (the noise sampler owns its seeding)")
        return noise_sampler
    return SeededNoise(x, resolve_seeds(seed, x.shape[0]))

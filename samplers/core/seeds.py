"""Seeds: one per batch item, and noise drawn from one generator per item (so item k's numbers depend only
on its own seed, never on the batch size or the other items)."""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
import torch

from .errors import InvalidInput, InvalidType


# torch's generators take seeds 0 to 2**64 - 1 (manual_seed refuses a larger one). CUDA's reads all 64 bits; the
# CPU's (mt19937) reads only the low 32, so on the CPU seeds that differ by a multiple of 2**32 draw the same numbers
# (as they do in every tool that seeds torch's CPU generator: diffusers, ComfyUI, A1111)
SEED_LIMIT = 2**64


def _one_seed(value, what: str, limit: int | None = SEED_LIMIT) -> int:
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise InvalidType(f"{what} must be an integer, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise InvalidType(f"{what} must be an integer or a 0-d integer tensor, got a tensor of shape "
                              f"{tuple(value.shape)} and dtype {value.dtype}")
        value = int(value)
    try:
        seed = operator.index(value)
    except TypeError:
        raise InvalidType(f"{what} must be an integer, got {value!r} ({type(value).__name__}); round it yourself if "
                          "that is what you mean") from None
    if seed < 0 or (limit is not None and seed >= limit):
        if limit is None:
            raise InvalidInput(f"{what} = {seed} is negative; a seed is an integer >= 0")
        raise InvalidInput(f"{what} = {seed} is outside 0 <= seed < 2**64, the seeds torch's generators take; pass a seed "
                           "in that range")
    return seed


def is_seed_list(seed) -> bool:
    """Whether ``seed`` lists one seed per item (a list, tuple, or 1-D integer tensor or numpy array) rather than
    being one base seed."""
    return isinstance(seed, (list, tuple)) or (isinstance(seed, (torch.Tensor, np.ndarray)) and seed.ndim == 1)


def resolve_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per batch item: ``seed + k`` for an int, the list itself for a list (or tuple, or 1-D integer tensor
    or numpy array).

    ``None`` draws one base seed from torch's global generator, so ``torch.manual_seed`` still makes a
    run reproducible. Seeds are integers in [0, 2**64), what torch's generators take; nothing is rounded or wrapped
    (torch's CPU generator itself reads only a seed's low 32 bits: :data:`SEED_LIMIT`).
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
    if isinstance(seed, (str, bytes, dict, set)) or (isinstance(seed, float) and not isinstance(seed, bool)):
        raise InvalidType(f"seed must be an integer or one integer per batch item, got {seed!r}")
    if not is_seed_list(seed):
        base = _one_seed(seed, "seed")
        if base + batch > SEED_LIMIT:
            raise InvalidInput(f"seed = {base} leaves no room for {batch} items (item k uses seed + k < 2**64); pass a "
                               f"seed <= {SEED_LIMIT - batch}, or one seed per item")
        return [base + k for k in range(batch)]
    items = seed.tolist() if isinstance(seed, (torch.Tensor, np.ndarray)) else list(seed)
    if not items:  # where the batch is counted from the seeds (a pipeline's), no seed would be a batch of none
        raise InvalidInput(f"seed is an empty {type(seed).__name__}: pass at least one seed (one per item), or one int "
                           "s (item k uses s + k)")
    seeds = [_one_seed(s, f"seed[{k}]") for k, s in enumerate(items)]
    if len(seeds) != batch:
        raise InvalidInput(f"got {len(seeds)} seeds for a batch of {batch}; pass one seed per item or one int")
    return seeds


def tree_seeds(seed, batch: int) -> list[int] | int:
    """The seed of k-diffusion's Brownian tree (:class:`samplers.core.brownian.BatchedBrownianTree`) as k-diffusion
    takes it: one integer >= 0 of any size (numpy's SeedSequence behind torchsde's tree takes any), one tree for the
    whole batch; or one per item — a list, tuple or 1-D integer numpy array (k-diffusion takes anything whose length
    is the batch so) —, one tree each. Integer tensors (0-d, 1-D) are taken as the integers they hold, where
    k-diffusion's tree raises (numpy's SeedSequence takes no tensor). A float, string or bool is refused, not rounded
    or parsed, as is an array of more dimensions (k-diffusion would seed each item's tree with a row)."""
    if isinstance(seed, (torch.Tensor, np.ndarray)) and seed.ndim > 1:
        raise InvalidType(f"seed is a {type(seed).__name__} of shape {tuple(seed.shape)}: k-diffusion's Brownian tree "
                          "takes one int (one tree for the batch) or one int per item (one tree each); pass a list "
                          "of ints")
    if is_seed_list(seed):
        items = seed.tolist() if isinstance(seed, (torch.Tensor, np.ndarray)) else list(seed)
        if len(items) != batch:
            raise InvalidInput(f"got {len(items)} seeds for a batch of {batch}: pass one seed per batch item (one tree "
                               "each) or one int (one tree for the whole batch)")
        return [_one_seed(s, f"seed[{k}]", limit=None) for k, s in enumerate(items)]
    return _one_seed(seed, "seed", limit=None)


def generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))  # a seed, or a stream derived from one by a bijection of [0, 2**64)
        gens.append(g)
    return gens


def seeded_randn(shape: Sequence[int], seeds: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (batch first) where item k is drawn from a generator seeded ``seeds[k]``."""
    if shape[0] != len(seeds):
        raise InvalidInput(f"shape {tuple(shape)} has batch {shape[0]} but {len(seeds)} seeds were given")
    device = torch.device(device or "cpu")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                        for g in generators(seeds, device)])

"""A1111's noise: what its k-diffusion samplers draw in the loop, and its three random number sources.

A1111 (modules/rng.py, ``ImageRNG``) keeps one generator per image of a batch, seeded with that image's seed. Its
first draw is the image's starting noise (``ImageRNG.first``: one draw of the latent's shape per image); every
``torch.randn_like`` of a k-diffusion sampler is then answered by ``ImageRNG.next`` (A1111 replaces
``k_diffusion.sampling.torch`` with its ``TorchHijack``), one further draw per image from the same generator. With
its "Eta noise seed delta" setting d ≠ 0 the in-loop draws come instead from fresh generators seeded seed + d.

Its "Random number generator source" picks the generator:

- ``"gpu"`` (A1111's default): a torch generator on the latents' device (the CPU where they are on the CPU, and on
  Apple's MPS, where A1111 draws on the CPU too);
- ``"cpu"``: a torch generator on the CPU, the draws copied to the latents' device (the same numbers everywhere);
- ``"nv"``: the numbers ``torch.randn`` gives on an NVIDIA GPU, computed on the CPU with numpy (Philox 4×32-10 and
  the first value of a Box–Muller pair, as A1111's modules/rng_philox.py computes them), so the same everywhere.

A1111 draws float32; here too, cast afterwards to the run's state dtype.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import InvalidOption
from .seeds import SEED_LIMIT, generators
from .transfer import to_device
from .validate import integer

SOURCES = ("gpu", "cpu", "nv")

# Philox 4×32-10 (Salmon et al. 2011): the round multipliers and the Weyl increments of the key
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
# Box–Muller's scalings of a 32-bit integer to (0, 1) and (0, 2π), float32 constants as curand's (and A1111's)
_TO_UNIT = np.float32(2.3283064e-10)
_TO_ANGLE = np.float32(2.3283064e-10 * 6.2831855)


def _hi_lo(a: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32-bit words of the 64-bit products ``a · m``."""
    p = a.astype(np.uint64) * np.uint64(m)
    return (p >> np.uint64(32)).astype(np.uint32), (p & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def philox_4x32(c0, c1, c2, c3, k0: int, k1: int) -> tuple:
    """Philox 4×32-10 of the counter words ``c0..c3`` (uint32 arrays) under the key (k0, k1): its four output words."""
    k0, k1 = np.uint32(k0), np.uint32(k1)
    for r in range(10):
        hi0, lo0 = _hi_lo(c0, _PHILOX_M[0])
        hi2, lo2 = _hi_lo(c2, _PHILOX_M[1])
        c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
        if r < 9:  # the key's Weyl sequence, mod 2**32
            k0 = np.uint32((int(k0) + _PHILOX_W[0]) & 0xFFFFFFFF)
            k1 = np.uint32((int(k1) + _PHILOX_W[1]) & 0xFFFFFFFF)
    return c0, c1, c2, c3


def philox_randn(seed: int, offset: int, n: int) -> np.ndarray:
    """``n`` standard normal float32 numbers: the ``offset``-th call of A1111's NV generator seeded ``seed`` (counter
    (offset, 0, k, 0) for number k, the key the seed's low and high 32-bit words; the first output of Box–Muller on
    the first two words, computed in float64 from the float32 constants and rounded to float32, as A1111's numpy code
    computes it). Within a few float32 roundings of CUDA's ``torch.randn`` for a generator of that seed, whose
    Box–Muller runs in float32."""
    zeros = np.zeros(n, dtype=np.uint32)
    w0, w1, _, _ = philox_4x32(np.full(n, offset & 0xFFFFFFFF, dtype=np.uint32), zeros, np.arange(n, dtype=np.uint32),
                               zeros, seed & 0xFFFFFFFF, seed >> 32)
    u = w0.astype(np.float64) * np.float64(_TO_UNIT) + np.float64(_TO_UNIT / 2)
    v = w1.astype(np.float64) * np.float64(_TO_ANGLE) + np.float64(_TO_ANGLE / 2)
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A1111's NV generator: each call draws the next ``offset``'s numbers."""

    def __init__(self, seed: int):
        self.seed, self.offset = seed, 0

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        n = int(np.prod(shape, dtype=np.int64))
        out = philox_randn(self.seed, self.offset, n)
        self.offset += 1
        return torch.from_numpy(out).reshape(tuple(shape))


def _generators(streams: Sequence[int], source: str, device: torch.device) -> list:
    """One generator per stream in A1111's ``source``, for latents on ``device``."""
    if source == "nv":
        return [PhiloxGenerator(s) for s in streams]
    return generators(streams, device if source == "gpu" and device.type != "mps" else torch.device("cpu"))


def _draw(gens: list, shape: tuple) -> torch.Tensor:
    """The next draw of ``shape`` of every generator, float32, stacked (on the generators' device)."""
    return torch.stack([g.randn(shape) if isinstance(g, PhiloxGenerator) else
                        torch.randn(shape, generator=g, device=g.device) for g in gens])


def _source(source) -> str:
    if not isinstance(source, str) or source.strip().lower() not in SOURCES:
        raise InvalidOption(f"source={source!r} is not one of A1111's random number generator sources {SOURCES} "
                            "(its setting 'Random number generator source': GPU, CPU, NV)")
    return source.strip().lower()


class A1111Noise:
    """A1111's in-loop noise for the images of ``seeds``: each image's generator after its starting noise
    (``ImageRNG.next``), or with ``eta_noise_seed_delta`` d ≠ 0 a fresh one seeded seed + d. Batch-invariant: an
    image's draws depend on its own seed only, as in A1111.

    Every run starts it from its seeds: A1111 builds a new ``ImageRNG`` for every batch (processing.py
    ``p.rng = rng.ImageRNG(...)``), so the same seeds and delta always give the same draws, and a run here
    (``samplers.sample``, the pipeline, the k-diffusion drop-ins, every call of a ``graph.capture`` run) calls
    :meth:`rewind` before its first draw. One object serves any number of runs, each the image A1111 makes for those
    seeds (before, a second run continued the first one's streams: another image, 0.6 away on a small test problem).
    """

    def __init__(self, like: torch.Tensor, seeds: Sequence[int], source: str = "gpu", eta_noise_seed_delta: int = 0):
        self.source = _source(source)
        delta = integer("eta_noise_seed_delta", eta_noise_seed_delta)
        seeds = [integer("seed", s, lo=0, hi=SEED_LIMIT - 1) for s in seeds]
        if len(seeds) != like.shape[0]:
            raise InvalidOption(f"{len(seeds)} seeds for a batch of {like.shape[0]}: A1111 seeds each image of a "
                                "batch, so pass one seed per image (A1111's batch seeds are seed, seed + 1, ...)")
        streams = [s + delta for s in seeds]
        bad = [s for s in streams if not 0 <= s < SEED_LIMIT]
        if bad:
            raise InvalidOption(f"eta_noise_seed_delta={delta} takes seed {bad[0] - delta} to {bad[0]}, outside a "
                                "generator's seeds 0 to 2**64 - 1: use a delta that keeps seed + delta in that range")
        self.shape = tuple(like.shape[1:])
        self.dtype, self.device = like.dtype, like.device
        self.delta = delta
        self.seeds = seeds
        self.generators = _generators(streams, self.source, like.device)
        if delta == 0:  # the images' starting noise was each generator's first draw (ImageRNG.first)
            _draw(self.generators, self.shape)

    def reseed(self, seeds: Sequence[int]) -> None:
        """Restart every image's stream as a new ``A1111Noise`` of ``seeds`` would, in place (the generators stay the
        same objects, as :meth:`samplers.core.noise.SeededNoise.reseed`: a captured CUDA graph draws from them); the
        object's seeds are then ``seeds``."""
        seeds = [int(s) for s in seeds]
        for g, s in zip(self.generators, seeds, strict=True):
            if self.source == "nv":
                g.seed, g.offset = s + self.delta, 0
            else:
                g.manual_seed(s + self.delta)
        self.seeds = seeds
        if self.delta == 0:
            _draw(self.generators, self.shape)

    def rewind(self) -> None:
        """Start every image's stream again from the object's seeds, as A1111's fresh ``ImageRNG`` of each batch does
        (what a run calls before its first draw)."""
        self.reseed(self.seeds)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        return to_device(_draw(self.generators, self.shape), self.device, self.dtype)


def a1111_randn(shape: Sequence[int], seeds: Sequence[int], source: str = "gpu", device=None) -> torch.Tensor:
    """A1111's starting noise (``ImageRNG.first`` without variation seeds or a seed resize): image k of ``shape``
    (batch first) drawn first from the generator of ``seeds[k]`` in ``source``, float32 on ``device``. With it as the
    start and ``noise_sampler="a1111"`` (or ``"a1111_cpu"`` / ``"a1111_nv"``, the same source) a run's draws are the
    ones A1111 makes for those seeds. (``"cpu"``: :func:`samplers.core.seeds.seeded_randn`, the pipeline's noise.)"""
    source = _source(source)
    if shape[0] != len(seeds):
        raise InvalidOption(f"shape {tuple(shape)} has batch {shape[0]} but {len(seeds)} seeds were given")
    device = torch.device(device or "cpu")
    seeds = [integer("seed", s, lo=0, hi=SEED_LIMIT - 1) for s in seeds]
    return to_device(_draw(_generators(seeds, source, device), tuple(shape[1:])), device)

"""Guidance as denoiser wrappers: the samplers never see it (DESIGN.md, "The hot loop").

Classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598, eq. 6) in the canonical space:

    D_cfg(x, σ) = D(x, σ | ∅) + w · (D(x, σ | c) − D(x, σ | ∅))

For eps, v and flow models this is the same combination of their native outputs, because at a fixed
(x, σ) each of them is an affine function of x0 with the same coefficients for both branches; so
guiding the denoised x0 is guiding ε (SD's formula) or the velocity (SD3's). Both branches run as ONE
batched model call ([cond; uncond] stacked along the batch).

``InpaintDenoiser`` re-imposes a known latent at the current noise level before every call and
returns the known x0 there (the "replace" method of SD's legacy inpainting / RePaint's known-region
step, Lugmayr et al. 2022, arXiv:2201.09865, eq. 8 with one resampling).
"""

from __future__ import annotations

from typing import Callable

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale · (cond − uncond): scale 1 is the conditional model, 0 the unconditional one."""
    return uncond + scale * (cond - uncond)


def _batch(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n != 1 else t


class CFGDenoiser:
    """``D_cfg(x, sigma)`` from a denoiser ``D(x, sigma, **cond)`` and two sets of conditioning tensors.

    ``cond`` / ``uncond``: dicts of batch-first tensors passed to the inner denoiser as keyword arguments
    (batch 1 is broadcast to x's batch). ``scale == 1`` skips the unconditional branch.
    """

    def __init__(self, inner: Callable, cond: dict, uncond: dict, scale: float):
        if set(cond) != set(uncond):
            raise ValueError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
        self.inner = inner
        self.cond = cond
        self.uncond = uncond
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        n = x.shape[0]
        if sigma.ndim == 0:
            sigma = sigma.expand(n)
        if self.scale == 1.0:
            return self.inner(x, sigma, **{k: _batch(v, n) for k, v in self.cond.items()}, **extra_args)
        both = {k: torch.cat([_batch(self.cond[k], n), _batch(self.uncond[k], n)]) for k in self.cond}
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **both, **extra_args)
        cond, uncond = out.chunk(2)
        return cfg_combine(cond, uncond, self.scale)


class InpaintDenoiser:
    """Keep ``known`` (a clean latent) where ``mask`` is 0; generate where it is 1.

    Before each call the known region of x is replaced by ``known + σ·noise`` (the known latent at the
    current noise level, with a fixed per-item noise; at σ = inf the state is the noise itself), and the
    returned x0 is ``known`` there, so every sampler's update keeps the known region on the path
    x = known + σ·n and ends on ``known`` exactly at σ = 0.
    """

    def __init__(self, inner: Callable, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        self.inner = inner
        self.known = known
        self.mask = mask
        self.noise = noise

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        known_noisy = torch.where(torch.isinf(s), self.noise, self.known + torch.where(torch.isinf(s), 0.0, s) * self.noise)
        x_in = self.mask * x + (1 - self.mask) * known_noisy
        denoised = self.inner(x_in, sigma, **extra_args)
        return self.mask * denoised + (1 - self.mask) * self.known

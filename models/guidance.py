"""Guidance as denoiser wrappers: the samplers never see it (DESIGN.md, "The hot loop").

Classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598, eq. 6) in the canonical space:

    D_cfg(x, σ) = D(x, σ | ∅) + w · (D(x, σ | c) − D(x, σ | ∅))

For eps, v and flow models this is the same combination of their native outputs, because at a fixed
(x, σ) each of them is an affine function of x0 with the same coefficients for both branches; so
guiding the denoised x0 is guiding ε (SD's formula) or the velocity (SD3's). Both branches run as ONE
batched model call ([cond; uncond] stacked along the batch).

Both wrappers offer the registry's host-float call ``denoise_at(x, sigma: float)`` next to the k-diffusion
call ``D(x, sigma_tensor)`` (the same result to float rounding): inside the sampling loop guidance costs
three tensor ops besides the inner denoiser (CFG: stack x twice, split, combine; inpainting: noise the known
latent, paste it in, paste the known x0 back), and passes σ on as a Python float so that the inner
denoiser's conversion stays on the host too.

``InpaintDenoiser`` re-imposes a known latent at the current noise level before every call and
returns the known x0 there (the "replace" method of SD's legacy inpainting / RePaint's known-region
step, Lugmayr et al. 2022, arXiv:2201.09865, eq. 8 with one resampling).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch

from samplers.core.errors import InvalidInput, InvalidType

from samplers.core.conversion import call_at, check_call, prepare_times


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale · (cond − uncond) (one fused op): scale 1 is the conditional model, 0 the unconditional one."""
    return torch.lerp(uncond, cond, scale)


def _batch(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n != 1 else t


class CFGDenoiser:
    """``D_cfg(x, sigma)`` from a denoiser ``D(x, sigma, **cond)`` and two sets of conditioning tensors.

    ``cond`` / ``uncond``: dicts of batch-first tensors passed to the inner denoiser as keyword arguments
    (batch 1 is broadcast to x's batch). ``scale == 1`` skips the unconditional branch. The stacked
    [cond; uncond] conditioning is built once per batch size and kept (replace ``cond`` / ``uncond`` by
    building a new wrapper, not by writing into their tensors).

    The call takes what the inner denoiser takes (k-diffusion's: x [B, ...], σ of shape [], [1] or [B]) at any scale,
    and refuses the rest before the inner call doubles the batch, so the error names the caller's shapes: x and σ
    by the converted denoiser's rule (``samplers.core.conversion.check_call``), and where ``channels`` is given (the
    latent channels the inner model takes) x as [B, channels, h, w].
    """

    def __init__(self, inner: Callable, cond: dict, uncond: dict, scale: float, channels: int | None = None):
        for name, c in (("cond", cond), ("uncond", uncond)):
            if not isinstance(c, dict):
                raise InvalidType(f"{name} must be a dict of conditioning tensors, got {type(c).__name__}")
        if set(cond) != set(uncond):
            raise InvalidInput(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
        if isinstance(scale, torch.Tensor) and scale.ndim == 0 and scale.is_floating_point():
            scale = float(scale)  # a 0-d tensor scale (read once, here)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise InvalidType(f"guidance scale must be a real number (e.g. 7.5; 1 = no guidance), got {scale!r} of type "
                              f"{type(scale).__name__}; pass a float")
        if not math.isfinite(scale):
            raise InvalidInput(f"guidance scale {scale!r} is not finite; pass a finite number (e.g. 7.5; 1 = no guidance)")
        self.inner = inner
        self.cond = cond
        self.uncond = uncond
        self.scale = float(scale)
        self.channels = channels
        self._stacked: dict[int, dict] = {}

    @property
    def supports_infinite_sigma(self) -> bool:
        return getattr(self.inner, "supports_infinite_sigma", True)

    def conditioning(self, n: int) -> dict:
        """The keyword arguments of the inner call for a batch of ``n``: [cond; uncond] (cond alone at scale 1)."""
        if n not in self._stacked:
            for name, c in (("cond", self.cond), ("uncond", self.uncond)):
                for k, v in c.items():
                    if v.shape[0] not in (1, n):
                        raise InvalidInput(f"{name}[{k!r}] has batch {v.shape[0]} but the latents have {n}; pass "
                                           f"batch 1 (one prompt for all) or {n} (one per item)")
            if self.scale == 1.0:
                self._stacked[n] = {k: _batch(v, n) for k, v in self.cond.items()}
            else:
                self._stacked[n] = {k: torch.cat([_batch(self.cond[k], n), _batch(self.uncond[k], n)])
                                    for k in self.cond}
        return self._stacked[n]

    def _check_x(self, x: torch.Tensor) -> None:
        """x as the inner model takes it, where ``channels`` says how: [B, channels, h, w] (the caller's shape named,
        not the doubled batch the inner call would see)."""
        if self.channels is not None and (x.ndim != 4 or x.shape[1] != self.channels):
            raise InvalidInput(f"the denoiser's x must be latents [B, {self.channels}, h, w], got shape "
                               f"{tuple(x.shape)}; pass the model's {self.channels}-channel latents (e.g. "
                               "pipe.vae.to_latent(images))")

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        check_call(x, sigma)
        self._check_x(x)
        n = x.shape[0]
        if sigma.numel() == 1:  # [] or [1]: one σ for every item, [n] before it is doubled with the batch
            sigma = sigma.reshape(1).expand(n)
        if self.scale == 1.0:
            return self.inner(x, sigma, **self.conditioning(n), **extra_args)
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **self.conditioning(n), **extra_args)
        cond, uncond = out.chunk(2)
        return cfg_combine(cond, uncond, self.scale)

    def prepare_times(self, sigmas: list[float], batch: int, dtype: torch.dtype, device: torch.device) -> None:
        """The inner denoiser's run preparation, for the batch it is called with ([cond; uncond] when guided)."""
        prepare_times(self.inner, sigmas, batch if self.scale == 1.0 else 2 * batch, dtype, device)

    def denoise_at(self, x: torch.Tensor, sigma: float, **extra_args) -> torch.Tensor:
        """The same for a Python-float σ (the registry's call), passed on as a float to the inner denoiser."""
        self._check_x(x)
        n = x.shape[0]
        if self.scale == 1.0:
            return call_at(self.inner, x, sigma, **self.conditioning(n), **extra_args)
        out = call_at(self.inner, torch.cat([x, x]), sigma, **self.conditioning(n), **extra_args)
        cond, uncond = out.chunk(2)
        return cfg_combine(cond, uncond, self.scale)


def _as_mask(mask, known):
    """``mask`` as a floating tensor of known's dtype: a bool or integer 0/1 mask is taken (its values are checked
    against [0, 1] like a float one's)."""
    if isinstance(mask, torch.Tensor) and not mask.is_complex() and not mask.is_floating_point() \
            and isinstance(known, torch.Tensor) and known.is_floating_point():
        return mask.to(known.dtype)
    return mask


def _check_inpaint(known, mask, noise) -> None:
    for name, t in (("known", known), ("mask", mask), ("noise", noise)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            what = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else repr(t) if isinstance(t, (int, float)) \
                else type(t).__name__
            raise InvalidType(f"InpaintDenoiser: {name} must be a floating-point tensor, got {what}; convert it with "
                              f".float()")
    if known.ndim < 2:
        raise InvalidInput(f"InpaintDenoiser: known has shape {list(known.shape)}; it must be batch-first [B, ...] "
                           "(e.g. a [B, C, H, W] latent)")
    if noise.shape != known.shape:
        raise InvalidInput(f"InpaintDenoiser: noise has shape {list(noise.shape)} but known has {list(known.shape)}; "
                           "they must be the same shape")
    try:
        fits = mask.ndim <= known.ndim and torch.broadcast_shapes(mask.shape, known.shape) == known.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise InvalidInput(f"InpaintDenoiser: mask of shape {list(mask.shape)} does not broadcast to known "
                           f"{list(known.shape)} (e.g. [B or 1, 1, H, W] or [H, W] for a [B, C, H, W] latent)")
    devices = {t.device for t in (known, mask, noise)}
    if len(devices) > 1:
        raise InvalidInput(f"InpaintDenoiser: known, mask and noise are on different devices {sorted(map(str, devices))}; "
                           "move them to one device")
    for name, t in (("known", known), ("noise", noise)):
        if not bool(torch.isfinite(t).all()):
            raise InvalidInput(f"InpaintDenoiser: {name} holds NaN or Inf; pass finite values")
    if not bool(((mask >= 0) & (mask <= 1)).all()):  # False for NaN too
        bad = mask[~((mask >= 0) & (mask <= 1))].flatten()[0].item()
        raise InvalidInput(f"InpaintDenoiser: mask holds {bad!r}; its values must be finite and in [0, 1] "
                           "(1 = generate, 0 = keep known); clamp or rescale it")


class InpaintDenoiser:
    """Keep ``known`` (a clean latent) where ``mask`` is 0; generate where it is 1.

    Before each call the known region of x is replaced by ``known + σ·noise`` (the known latent at the
    current noise level, with a fixed per-item noise; at σ = inf the state is the noise itself), and the
    returned x0 is ``known`` there, so every sampler's update keeps the known region on the path
    x = known + σ·n and ends on ``known`` exactly at σ = 0. A run that stops above σ = 0 (A1111's "DDIM" / "PLMS"
    end at timestep 1) ends with the known region still noisy: :meth:`models.pipeline.Pipeline.inpaint` puts
    ``known`` back there before decoding, as A1111 does.

    ``known`` and ``noise``: finite floating tensors of the same shape [B, ...] (B = 1 serves any batch of x);
    ``mask``: a tensor (floating, bool or integer 0/1) with values in [0, 1], broadcasting to known's shape (e.g.
    [B or 1, 1, H, W] or [H, W] for a [B, C, H, W] latent). Anything else is refused here, before any model call;
    x must then be [B, ...] with known's trailing shape.
    """

    def __init__(self, inner: Callable, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        mask = _as_mask(mask, known)
        _check_inpaint(known, mask, noise)
        self.inner = inner
        self.known = known
        self.mask = mask
        self.noise = noise

    @property
    def supports_infinite_sigma(self) -> bool:
        return getattr(self.inner, "supports_infinite_sigma", True)

    def prepare_times(self, sigmas: list[float], batch: int, dtype: torch.dtype, device: torch.device) -> None:
        prepare_times(self.inner, sigmas, batch, dtype, device)

    def _check_x(self, x: torch.Tensor) -> None:
        k = self.known.shape
        if x.shape[1:] != k[1:] or k[0] not in (1, x.shape[0]):
            raise InvalidInput(f"x of shape {list(x.shape)} does not fit the known latent {list(k)}: x must be "
                               f"[B, {', '.join(map(str, k[1:]))}] with B = {k[0]}" + (" or any B" if k[0] == 1 else ""))

    def denoise_at(self, x: torch.Tensor, sigma: float, **extra_args) -> torch.Tensor:
        """The same for a Python-float σ (the registry's call): x_in = mask·x + (1 − mask)·(known + σ·noise)."""
        self._check_x(x)
        known, mask, noise = (t.to(x.dtype) for t in (self.known, self.mask, self.noise))  # no-ops when they match
        known_noisy = noise if math.isinf(sigma) else torch.add(known, noise, alpha=sigma)
        denoised = call_at(self.inner, torch.lerp(known_noisy, x, mask), sigma, **extra_args)
        return torch.lerp(known, denoised.to(x.dtype), mask)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        self._check_x(x)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        known_noisy = torch.where(torch.isinf(s), self.noise, self.known + torch.where(torch.isinf(s), 0.0, s) * self.noise)
        x_in = self.mask * x + (1 - self.mask) * known_noisy
        denoised = self.inner(x_in, sigma, **extra_args)
        return self.mask * denoised + (1 - self.mask) * self.known

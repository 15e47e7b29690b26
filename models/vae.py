"""KL autoencoder (the "VAE" of latent diffusion, Rombach et al. 2022, arXiv:2112.10752, §3 and App. G).

64×64×3 images in [-1, 1] ⇄ 8×8×C latents (8× spatial down-sampling, C = ``latent_channels``, 4 by
default, 16 as an option). The encoder outputs a diagonal Gaussian q(z|x); the decoder maps z back.

Latent scaling lives in ONE place. Diffusion models see the scaled latent

    latent = (z − shift_factor) · scaling_factor          (``to_latent``)
    z      = latent / scaling_factor + shift_factor       (``from_latent``)

with ``scaling_factor`` and ``shift_factor`` estimated from encoded training data by
``models.train_vae`` so that latents have zero mean and unit variance (SD 1.x's 0.18215 is the same
kind of number; SD3 / Flux added the shift).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from samplers.core.errors import InvalidInput, InvalidType

from . import _checks
from . import io as mio

DEFAULT_FOLDER = Path(__file__).resolve().parent / "weights" / "vae"
# The command that made the shipped weights (docs/models.md); about 40 min on 2 CPU cores.
TRAIN_COMMAND = "python -m models.train_vae --out models/weights/vae --steps 1600 --seed 0 --threads 1"


# The pixels a VAE encodes (and the pipeline's images): [-1, 1], 0..255 read as p / 127.5 - 1 (models.data.from_pil)
PIXEL_RANGE = (-1.0, 1.0)


def check_range(t: torch.Tensor, what: str, lo: float, hi: float, fix: str) -> None:
    """One read of ``t``, before any model call: every value finite and in [lo, hi]; else ``InvalidInput`` naming the
    values found, the range and ``fix``."""
    if not bool(torch.isfinite(t).all()):
        raise InvalidInput(f"{what} hold NaN or infinite values; {fix}")
    if t.numel() and (float(t.min()) < lo or float(t.max()) > hi):
        raise InvalidInput(f"{what} must lie in [{lo:g}, {hi:g}], got values from {float(t.min()):g} to "
                           f"{float(t.max()):g}; {fix}")


# What VAE.encode / to_latent take: a resize's overshoot beyond [-1, 1] (bicubic: to about ±1.35) is pixels still, as
# diffusers' AutoencoderKL encodes any value; beyond ±2 they are not (0..255 pixels, say), and are refused
ENCODE_BOUND = 2.0


def check_pixels(images: torch.Tensor, what: str, fix: str) -> None:
    """The pipeline's img2img / inpaint images: finite, in :data:`PIXEL_RANGE`, checked before any model call."""
    check_range(images, what, *PIXEL_RANGE, fix)


@dataclass
class VAEConfig:
    """Everything needed to rebuild the module; stored as ``config.json`` beside the weights."""

    name: str = "vae-f8c4"
    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 128)  # one level per 2× down-sampling: 3 levels = 8×
    latent_channels: int = 4
    enc_res_blocks: int = 1  # ResBlocks per encoder level
    dec_res_blocks: int = 2  # ResBlocks per decoder level
    groups: int = 8  # GroupNorm groups
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    image_size: int = 64  # size it was trained at (any multiple of the down-sampling factor works)
    extra: dict = field(default_factory=dict)  # training provenance, measured PSNR, …

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["type"] = "VAE"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"type", "weights_sha256"})
        if unknown:
            raise mio.ConfigMismatchError(f"VAE config has unknown fields {unknown}")
        check_fields(d)
        kw = {k: v for k, v in d.items() if k in names}
        if "channels" in kw:
            kw["channels"] = tuple(kw["channels"])
        return cls(**kw)


def check_fields(d: dict, what: str = "VAE config") -> None:
    """Every field of a VAE config dict of the right type and range (``ConfigMismatchError`` naming the field)."""
    C = _checks
    C.check_str(d, "name", what)
    for f in ("in_channels", "latent_channels", "enc_res_blocks", "dec_res_blocks", "groups", "image_size"):
        C.check_int(d, f, what, minimum=1)
    C.check_channels(d, what)
    C.check_real(d, "scaling_factor", what, positive=True)
    C.check_real(d, "shift_factor", what)
    C.check_dict(d, "extra", what)


class DiagonalGaussian:
    """q(z|x) = N(mean, exp(logvar)), per latent element."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) summed over latent elements, one value per batch item."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_checks.norm_groups(c, groups), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        blocks: list[nn.Module] = []
        c = ch[0]
        for i, c_out in enumerate(ch):
            for _ in range(cfg.enc_res_blocks):
                blocks.append(ResBlock(c, c_out, cfg.groups))
                c = c_out
            nxt = ch[min(i + 1, len(ch) - 1)]
            blocks.append(nn.Conv2d(c, nxt, 3, stride=2, padding=1))  # 2× down
            c = nxt
        blocks.append(ResBlock(c, c, cfg.groups))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = list(reversed(cfg.channels))
        c = ch[0]
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        blocks: list[nn.Module] = [ResBlock(c, c, cfg.groups)]
        for i, c_out in enumerate(ch):
            blocks.append(Upsample(c, c_out))  # 2× up
            c = c_out
            for _ in range(cfg.dec_res_blocks):
                blocks.append(ResBlock(c, c, cfg.groups))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


def _nearest_multiples(n: int, m: int) -> str:
    lo = (n // m) * m
    hi = lo + m
    return f"{lo} or {hi}" if lo > 0 else f"{m}"  # only positive sizes exist


def check_size(height, width, downsample: int) -> tuple[int, int]:
    """``(height, width)`` as ints: positive multiples of ``downsample`` (the message names the nearest valid sizes).
    Any integer type is taken (int, numpy integer, 0-d integer tensor), never a bool or a float. Needs no weights: the
    CLI checks ``--width`` / ``--height`` with the VAE config's factor before the weights are read."""
    from samplers.core.validate import integer

    sizes = []
    for name, n in (("height", height), ("width", width)):
        try:
            sizes.append(integer(name, n))
        except InvalidType:
            fix = f"; a tensor is taken only as a 0-d integer one: pass int({name})" if isinstance(
                n, torch.Tensor) else ""
            raise InvalidType(f"{name} must be an integer number of pixels, got {n!r} ({type(n).__name__})"
                              f"{fix}") from None
    height, width = sizes
    f = downsample
    bad = [(name, n) for name, n in (("height", height), ("width", width)) if n % f != 0 or n <= 0]
    if bad:
        msg = "; ".join(f"{name} {n} is not a positive multiple of {f} (nearest valid: {_nearest_multiples(n, f)})"
                        for name, n in bad)
        raise InvalidInput(f"image size {height}×{width} does not fit the VAE's {f}× down-sampling: {msg}")
    return height, width


class VAE(nn.Module):
    """KL autoencoder with 8× down-sampling. ``VAE.load()`` gives the shipped default weights."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self._weights_sha256: str | None = None

    # -- properties
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.config.shift_factor

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the safetensors file this VAE was loaded from or last saved to (None if neither)."""
        return self._weights_sha256

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        self.check_size(height, width)
        f = self.downsample
        return (self.latent_channels, height // f, width // f)

    # -- checks
    def check_size(self, height: int, width: int) -> tuple[int, int]:
        """Image sizes must be positive integers, multiples of the down-sampling factor (the message names the
        nearest valid sizes); returns them as ints (see :func:`check_size`)."""
        return check_size(height, width, self.downsample)

    def estimate_bytes(self, batch: int, height: int, width: int) -> int:
        """Peak activation memory of decoding ``batch`` images of height × width (float32, no gradients): a few
        full-resolution feature maps of the widest level that runs at full resolution, with headroom."""
        return estimate_bytes(self.config, batch, height, width)

    def _check_tensor(self, value, what: str) -> None:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidType(f"{what} must be a floating-point torch tensor, got {got}; convert a numpy array with "
                              "torch.from_numpy(array).float()")
        weights = next(self.parameters()).dtype
        # else torch's "Input type (c10::Half) and bias type (float) should be the same" (autocast casts both itself)
        if value.dtype != weights and not torch.is_autocast_enabled(value.device.type):
            raise InvalidType(f"{what}: {value.dtype}, but this VAE's weights are {weights}; pass "
                              f"{what.split()[-1]}.to({weights}), or move the VAE to that dtype (vae.to({value.dtype}))")

    def _check_images(self, images: torch.Tensor) -> None:
        self._check_tensor(images, "images")
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise InvalidInput(
                f"expected images [B, {self.config.in_channels}, H, W] in [-1, 1], got shape {tuple(images.shape)}"
            )
        self.check_size(images.shape[-2], images.shape[-1])
        # finite, and pixels: [-1, 1] with a resize's overshoot (ENCODE_BOUND), not another scale
        check_range(images, "images", -ENCODE_BOUND, ENCODE_BOUND,
                    "pixels are [-1, 1] (a resize's overshoot to ±2 is taken): scale 0..255 pixels as t / 127.5 - 1 "
                    "(models.data.from_pil reads a PIL image so)")

    def _check_latent(self, z: torch.Tensor, what: str) -> None:
        self._check_tensor(z, what)
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            got = z.shape[1] if z.ndim == 4 else f"shape {tuple(z.shape)}"
            raise InvalidInput(
                f"{what} has {got} channels but this VAE ({self.config.name}) has {self.latent_channels} latent "
                f"channels; expected [B, {self.latent_channels}, H/{self.downsample}, W/{self.downsample}] "
                "(was it made with another VAE?)"
            )
        if not bool(torch.isfinite(z).all()):  # one read: NaN would decode to NaN pixels, saved as black
            raise InvalidInput(f"{what} holds NaN or infinite values, which decode to NaN pixels (saved as black); "
                               "check what made it (a sampler that diverged, a float16 overflow)")

    # -- the autoencoder
    def encode(self, images: torch.Tensor) -> DiagonalGaussian:
        self._check_images(images)
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent z -> images (not clamped; clamp to [-1, 1] for display)."""
        self._check_latent(z, "latent")
        return self.decoder(z)

    def forward(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode(images)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    # -- the one place where latent scaling happens
    def to_latent(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> scaled latents ((z − shift) · scale), about unit variance."""
        posterior = self.encode(images)
        z = posterior.sample(generator) if sample else posterior.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (clamped)."""
        self._check_latent(latent, "scaled latent")
        return self.decoder(latent / self.scaling_factor + self.shift_factor).clamp(-1.0, 1.0)

    # -- persistence
    def save(self, folder: str | Path, dtype: torch.dtype | None = torch.float16) -> dict:
        """Write weights (fp16 by default: half the size, no measurable PSNR change) and config."""
        return mio.save_module(self, folder, dtype or torch.float32)

    @classmethod
    def load(cls, folder: str | Path | None = None, map_location: str | torch.device = "cpu") -> "VAE":
        """Load a VAE; with no folder, the shipped default in ``models/weights/vae/``."""
        hint = None if folder is not None else f"reproduce the shipped weights with `{TRAIN_COMMAND}`"
        return mio.load_module(cls, VAEConfig.from_dict, DEFAULT_FOLDER if folder is None else folder, "VAE",
                               default_type="VAE", reproduce_hint=hint, map_location=map_location)


def read_config(folder: str | Path | None = None) -> tuple[VAEConfig, str | None]:
    """``(config, weights_sha256)`` from the config.json of a VAE folder (default: the shipped one) without reading
    the weights: what a caller checks before :meth:`VAE.load` reads and hashes them (which checks them against this
    sha256)."""
    hint = None if folder is not None else f"reproduce the shipped weights with `{TRAIN_COMMAND}`"
    folder = Path(DEFAULT_FOLDER if folder is None else folder)
    cfg = mio.load_config(folder, hint)
    if cfg.get("type", "VAE") != "VAE":
        raise mio.ConfigMismatchError(f"{folder / mio.CONFIG_FILE} describes a {cfg.get('type')!r}, not a VAE")
    try:
        config = VAEConfig.from_dict({k: v for k, v in cfg.items() if k != "weights_dtype"})
    except mio.ModelLoadError as e:
        raise type(e)(f"{folder / mio.CONFIG_FILE}: {e}") from None
    return config, cfg.get("weights_sha256")


def estimate_bytes(config: VAEConfig, batch: int, height: int, width: int) -> int:
    """:meth:`VAE.estimate_bytes` from the config alone."""
    return int(batch * height * width * config.channels[0] * 4 * 6)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1], measured on the [0, 1] scale (peak 1)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) * 0.5).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def describe(config: VAEConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)

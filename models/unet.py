"""Text-conditioned U-Net on VAE latents (the denoising network of latent diffusion, Rombach et al. 2022,
arXiv:2112.10752, §3.3), sized for 8×8×C latents on a CPU.

- time: sinusoidal embedding of the network's time input (DDPM, Ho et al. 2020, arXiv:2006.11239,
  §4 / "Attention is all you need" §3.5) followed by an MLP; each ResBlock gets a per-channel
  scale and shift from it (AdaGN, Dhariwal & Nichol 2021, arXiv:2105.05233, §3).
- text: ``models.text.TextEncoder`` token embeddings; every ResBlock at the two resolutions (8×8 and
  4×4) is followed by a transformer block: self-attention, cross-attention to the tokens (padding
  masked), feed-forward — SD's ``BasicTransformerBlock``.
- classifier-free guidance: the null prompt is ``""`` (only the ``<bos>`` token), learned by caption
  dropout during training (``UNetConfig.caption_dropout``).

``UNetConfig`` is the whole description of a model: architecture, the text encoder, the VAE it was
trained with (name, weights sha256, latent channels, scaling / shift) and the diffusion
parameterisation (``"eps"``: VP, 1000-step scaled-linear discrete schedule, integer timestep input;
``"flow"``: rectified-flow velocity u = n − x0, time input t·1000, with its shift). It is stored as
JSON beside the weights; ``DiffusionModel.load`` rebuilds the module from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from . import io as mio
from .text import TextEncoder, TextEncoderConfig

# how to make a U-Net folder, said where one cannot be loaded (the pipeline and `samplers generate --weights` too)
TRAIN_HINT = "train one with `python -m models.train eps|flow --out FOLDER`"


@dataclass
class UNetConfig:
    name: str = "unet-eps"
    latent_channels: int = 4
    channels: tuple[int, ...] = (64, 128)  # one level per resolution: 8×8, 4×4
    res_blocks: int = 2
    heads: int = 4
    groups: int = 16
    time_dim: int = 256
    ff_mult: int = 2
    text: dict = field(default_factory=lambda: dataclasses.asdict(TextEncoderConfig()))
    # The diffusion parameterisation: see the module docstring and ``native_schedule``.
    prediction: str = "eps"  # "eps" (VP discrete) or "flow" (rectified flow velocity n − x0)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    flow_shift: float = 1.0
    flow_multiplier: float = 1000.0
    caption_dropout: float = 0.1
    # The VAE whose scaled latents this model was trained on.
    vae: dict = field(default_factory=dict)  # name, weights_sha256, latent_channels, scaling_factor, shift_factor
    # Inference defaults measured for this model (sampler, schedule, steps, cfg) and provenance.
    defaults: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["text"]["vocab"] = list(d["text"]["vocab"])
        d["type"] = "TextUNet"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"type", "weights_sha256", "weights_dtype"})
        if unknown:
            raise mio.ConfigMismatchError(f"U-Net config has unknown fields {unknown}")
        # the fields that say what the network's output means: a default here would silently misread a model
        needed = ["prediction", "latent_channels", "channels"]
        needed += {"eps": ["num_train_timesteps", "beta_schedule", "beta_start", "beta_end"],
                   "flow": ["flow_shift", "flow_multiplier"]}.get(d.get("prediction"), [])
        missing = [k for k in needed if k not in d]
        if missing:
            raise mio.ConfigMismatchError(f"U-Net config has no {', '.join(map(repr, missing))}: it cannot say what the "
                                          "network predicts or on which noise schedule; re-save it with "
                                          "DiffusionModel.save, which writes the whole config")
        if d["prediction"] not in ("eps", "flow"):
            raise mio.ConfigMismatchError(f"U-Net config has prediction {d['prediction']!r}; expected 'eps' or 'flow'")
        check_fields(d)
        kw = {k: v for k, v in d.items() if k in names}
        if "channels" in kw:
            kw["channels"] = tuple(kw["channels"])
        config = cls(**kw)
        from .pipeline import check_default_run  # the pipeline's own plan (it imports this module)

        check_default_run(config)  # the defaults as a pair, on this model's schedule: refused here, naming the field
        return config

    def text_config(self) -> TextEncoderConfig:
        return TextEncoderConfig.from_dict(dict(self.text))


def check_fields(d: dict, what: str = "U-Net config") -> None:
    """Every field of a U-Net config dict of the right type and range (``ConfigMismatchError`` naming the field)."""
    C = _checks
    C.check_str(d, "name", what)
    for f in ("latent_channels", "res_blocks", "heads", "groups", "time_dim", "ff_mult"):
        C.check_int(d, f, what, minimum=1)
    # as the native schedule reads it (samplers.core.native.check_table_size: >= 2), here so the error names the file
    C.check_int(d, "num_train_timesteps", what, minimum=2, maximum=C.MAX_TRAIN_TIMESTEPS,
                why=" (the training table's length: SD's is 1000)")
    C.check_channels(d, what)
    if _checks._is_int(d.get("heads")) and d["heads"] >= 1 and isinstance(d.get("channels"), (list, tuple)):
        bad = [c for c in d["channels"] if c % d["heads"]]
        if bad:
            raise C._bad(what, "channels", d["channels"], f"multiples of heads ({d['heads']})")
    if "time_dim" in d and d["time_dim"] % 2:
        raise C._bad(what, "time_dim", d["time_dim"], "an even integer (sin/cos pairs)")
    C.check_str(d, "beta_schedule", what, ("linear", "scaled_linear", "squaredcos_cap_v2"))
    # as the native schedule reads them (samplers.core.native.betas_for): a flow model or a squaredcos table never does
    reads_betas = d.get("prediction") != "flow" and d.get("beta_schedule", "scaled_linear") != "squaredcos_cap_v2"
    for f in ("beta_start", "beta_end") if reads_betas else ():
        v = d.get(f)
        if f in d and not (C._is_real(v) and 0 < v < 1):
            raise C._bad(what, f, v, "a number in (0, 1) (a noise variance per step; SD's are beta_start=0.00085, "
                                     "beta_end=0.012)")
    if reads_betas and "beta_start" in d and "beta_end" in d and not d["beta_start"] < d["beta_end"]:
        # swapped, the σ table runs backwards and the model loads, to fail only at sampling with a σ message
        raise C._bad(what, "beta_start", d["beta_start"], f"less than beta_end ({d['beta_end']!r}): the betas rise "
                                                          "from beta_start to beta_end over the training steps")
    for f in ("flow_shift", "flow_multiplier"):
        C.check_real(d, f, what, positive=True)
    C.check_real(d, "caption_dropout", what, low=0.0, high=1.0)
    for f in ("text", "vae", "defaults", "extra"):
        C.check_dict(d, f, what)
    C.check_defaults(d, what)
    C.check_vae_record(d, what)
    if "text" in d:
        TextEncoderConfig.from_dict(d["text"])


def native_schedule(config: UNetConfig):
    """The ``samplers.core.native`` schedule of a model: VPDiscrete for "eps", RectifiedFlow for "flow"."""
    from samplers.core.native import RectifiedFlow, VPDiscrete

    if config.prediction == "eps":
        return VPDiscrete.from_betas(config.beta_schedule, config.num_train_timesteps, config.beta_start, config.beta_end)
    if config.prediction == "flow":
        return RectifiedFlow(shift=config.flow_shift, multiplier=config.flow_multiplier)
    raise ValueError(f"unknown prediction {config.prediction!r}; expected 'eps' or 'flow'")


# ---------------------------------------------------------------------------------------------- layers


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) time inputs t [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_checks.norm_groups(c, groups), c, eps=1e-6)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out, groups), _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time(temb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Attention(nn.Module):
    """Multi-head attention of queries x [B, N, C] to a context [B, M, Cc] (itself when None)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = _zero(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        B, N, C = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # True = attend
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(h.transpose(1, 2).reshape(B, N, C))


class TransformerBlock(nn.Module):
    """GroupNorm → proj → [self-attn, cross-attn, feed-forward] (pre-LN, residual) → proj, residual."""

    def __init__(self, c: int, heads: int, context_dim: int, groups: int, ff_mult: int = 2):
        super().__init__()
        self.norm = _norm(c, groups)
        self.proj_in = nn.Linear(c, c)
        self.ln1, self.self_attn = nn.LayerNorm(c), Attention(c, heads)
        self.ln2, self.cross_attn = nn.LayerNorm(c), Attention(c, heads, context_dim)
        self.ln3 = nn.LayerNorm(c)
        self.ff = nn.Sequential(nn.Linear(c, ff_mult * c), nn.GELU(), _zero(nn.Linear(ff_mult * c, c)))
        self.proj_out = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        h = h + self.self_attn(self.ln1(h))
        h = h + self.cross_attn(self.ln2(h), context, mask)
        h = h + self.ff(self.ln3(h))
        return x + self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)


class Level(nn.Module):
    """ResBlock followed by a transformer block."""

    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig, context_dim: int):
        super().__init__()
        self.res = ResBlock(c_in, c_out, cfg.time_dim, cfg.groups)
        self.attn = TransformerBlock(c_out, cfg.heads, context_dim, cfg.groups, cfg.ff_mult)

    def forward(self, x, temb, context, mask):
        return self.attn(self.res(x, temb), context, mask)


class UNet(nn.Module):
    """eps / velocity prediction from (x_t [B, C, H, W], time [B], text embeddings [B, T, D], mask [B, T])."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        ch, nb = cfg.channels, cfg.res_blocks
        context_dim = cfg.text["dim"]
        base = ch[0]
        self.time_embed = nn.Sequential(nn.Linear(base, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim))
        self.conv_in = nn.Conv2d(cfg.latent_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [base]
        c = base
        for i, c_out in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(nb):
                blocks.append(Level(c, c_out, cfg, context_dim))
                c = c_out
                skip_channels.append(c)
            self.down.append(blocks)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_channels.append(c)
        self.mid_res1 = ResBlock(c, c, cfg.time_dim, cfg.groups)
        self.mid_attn = TransformerBlock(c, cfg.heads, context_dim, cfg.groups, cfg.ff_mult)
        self.mid_res2 = ResBlock(c, c, cfg.time_dim, cfg.groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c_out in reversed(list(enumerate(ch))):
            blocks = nn.ModuleList()
            for _ in range(nb + 1):
                blocks.append(Level(c + skip_channels.pop(), c_out, cfg, context_dim))
                c = c_out
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = _norm(c, cfg.groups)
        self.conv_out = _zero(nn.Conv2d(c, cfg.latent_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, time: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents [B, {self.config.latent_channels}, h, w], got shape {tuple(x.shape)}")
        # Any latent size works: pad (replicate) up to a multiple of the total down-sampling, crop at the end.
        f = 2 ** (len(self.config.channels) - 1)
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % f, (-W) % f
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if time.ndim == 0:
            time = time.expand(x.shape[0])
        temb = self.time_embed(timestep_embedding(time, self.config.channels[0]))
        h = self.conv_in(x)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, temb, context, mask)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, temb), context, mask), temb)
        for i, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), temb, context, mask)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))[..., :H, :W]


def estimate_bytes(cfg: UNetConfig, batch: int, height: int, width: int) -> int:
    """Peak memory of one U-Net call on ``batch`` latents of height × width (float32, no gradients), with headroom.

    Two terms per level: the feature maps (channels × pixels, a handful alive at once) and self-attention over the
    level's pixels, whose score matrix (heads × tokens²) the CPU kernel materialises.
    """
    total, h, w = 0, height, width
    for c in cfg.channels:
        tokens = h * w
        total += batch * (8 * c * tokens + cfg.heads * tokens * tokens) * 4
        h, w = (h + 1) // 2, (w + 1) // 2
    return total


class DiffusionModel(nn.Module):
    """Text encoder + U-Net, one set of weights: ``model(x_t, time, prompts=... | context=..., mask=...)``."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        self.text_encoder = TextEncoder(self.config.text_config())
        self.unet = UNet(self.config)
        self._weights_sha256: str | None = None

    @property
    def weights_sha256(self) -> str | None:
        return self._weights_sha256

    def encode_text(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(prompts)

    def forward(self, x_t: torch.Tensor, time: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, prompts=None) -> torch.Tensor:
        if context is None:
            context, mask = self.encode_text(prompts if prompts is not None else [""] * x_t.shape[0])
        return self.unet(x_t, time, context, mask)

    # -- persistence
    def save(self, folder: str | Path, dtype: torch.dtype | None = torch.float16) -> dict:
        return mio.save_module(self, folder, dtype or torch.float32)

    @classmethod
    def load(cls, folder: str | Path, map_location="cpu", reproduce_hint: str | None = None) -> "DiffusionModel":
        """The U-Net in ``folder``; an error loading it ends with ``reproduce_hint`` (default :data:`TRAIN_HINT`:
        without one, :mod:`models.io`'s own default named the VAE's trainer, ``models.train_vae``)."""
        return mio.load_module(cls, UNetConfig.from_dict, folder, "TextUNet",
                               reproduce_hint=reproduce_hint or TRAIN_HINT, map_location=map_location)


def vae_record(vae) -> dict:
    """What a U-Net config stores about the VAE it is trained with."""
    c = vae.config
    return {
        "name": c.name,
        "weights_sha256": vae.weights_sha256,
        "latent_channels": c.latent_channels,
        "scaling_factor": c.scaling_factor,
        "shift_factor": c.shift_factor,
    }

"""txt2img / img2img / inpaint with any registry sampler: text encoder + U-Net + VAE → one denoiser.

    from models.pipeline import Pipeline
    pipe = Pipeline.load(model="eps")                       # or "flow"; the shipped weights by default
    images = pipe.txt2img("a large red circle at the top left", sampler="dpmpp_2m", steps=20, seed=0)

The U-Net's native model (eps on a VP discrete schedule, or flow velocity) becomes the canonical
denoiser with ``samplers.to_denoiser``; classifier-free guidance and inpainting are denoiser wrappers
(``models.guidance``); the sampler is looked up by name in the registry. Item k of a batch uses seed
``seeds[k]`` for its initial noise and its in-loop noise, so its noise does not depend on the batch
size or on the other items, exactly; its image equals the one made alone up to the network's batched arithmetic
(the U-Net's CPU kernels sum in another order for another batch: about 1e-4, which can move a PNG's channel value
by one level). A sampler whose steps depend on the batch (it decides on the host: :func:`runs_items_alone`) runs
each item on its own, so the same holds for it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

import samplers
from samplers.core import labels, names
from samplers.core.registry import _normalise
from samplers.core import noise as noise_mod
from samplers.core.run import (check_callback, churn_beyond, draws_noise, empty_churn_window, refuse_unread_noise,
                               unread_noise)
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType, LimitExceeded, SamplersError, Unavailable
from samplers.core.validate import check_allocation, check_options, integer, real, same_value
from samplers.core.seeds import is_seed_list, resolve_seeds, seeded_randn
from samplers.schedules.ops import rounded_steps
from samplers.ode.basic import to_vp_state
from samplers.sde.ancestral import with_model_table

from . import data
from ._checks import MAX_STEPS  # the step limit (config.json's defaults.steps is checked against it there)
from . import io as mio
from .guidance import CFGDenoiser, InpaintDenoiser
from .text import Tokenizer
from .unet import TRAIN_HINT, DiffusionModel, UNetConfig, estimate_bytes, native_schedule, vae_record
from .vae import VAE, VAEConfig, check_size
from . import vae as vae_mod

WEIGHTS = Path(__file__).resolve().parent / "weights"
MAX_BATCH = 4096
MODELS = ("eps", "flow")
TRAIN_COMMANDS = {
    # the commands the shipped weights were trained with (also recorded in their config.json)
    "eps": "python -m models.train eps --out models/weights/eps --n-scenes 24000 --steps 4000 --seed 0 --threads 1 --max-minutes 27",
    "flow": "python -m models.train flow --out models/weights/flow --n-scenes 24000 --steps 4000 --seed 0 --threads 1 --max-minutes 27",
}
# Used where a model's config.json has no measured "defaults" (field by field: model_defaults).
FALLBACK_DEFAULTS = {
    "eps": {"sampler": "dpmpp_2m", "schedule": "karras", "steps": 20, "cfg": 4.0},
    "flow": {"sampler": "dpmpp_2m", "schedule": "flow", "steps": 20, "cfg": 4.0},
}


# The pipeline draws its starting noise on the CPU, with torch's CPU generator, which reads only a seed's low 32 bits
# (samplers.core.seeds; a CUDA generator, Philox, would read all 64), and so does a sampler's in-loop noise of a
# generator kind (the default, "seeded", "comfyui"); a Brownian path is seeded with the whole seed. So where every draw
# is a generator's, seeds that differ by a multiple of 2**32 draw the same noise.
CPU_SEEDS = 2**32
_WHY_CPU_SEEDS = ("the run draws all its noise with torch's CPU generator, which reads only a seed's low 32 bits")


def draws_low_bits_only(sampler: str, options: dict) -> bool:
    """Whether every draw of the pipeline's run of the registry sampler ``sampler`` with ``options`` reads only a
    seed's low 32 bits: the start always does; the in-loop noise where the run draws any by a generator kind (None,
    ``"seeded"``, ``"comfyui"``, A1111's ``"a1111"`` / ``"a1111_cpu"``), not a Brownian path or A1111's NV numbers
    (seeded with the whole seed) nor a caller's noise object."""
    spec = samplers.core.registry.SAMPLERS.get(sampler)
    if "noise_sampler" not in spec.options or not draws_noise(spec, options):
        return True
    value = options.get("noise_sampler")
    if not (value is None or isinstance(value, str)):
        return False  # the caller's own noise: not seeded by the seeds
    # the name as the run reads it ("Default"); A1111's draws are torch generators' too, on the pipeline's CPU
    # latents ("a1111", "a1111_cpu"), but NV's Philox key holds both words of the seed
    return noise_mod.check(value, None, None) in {*noise_mod.GENERATOR_KINDS, "a1111_cpu"}


class VAEMismatchError(InvalidInput):
    """The VAE given to a pipeline is not the one its U-Net was trained with (a ValueError, as before: an
    :class:`~samplers.core.errors.InvalidInput`, so the CLI reports a wrong ``--vae`` as a usage error)."""


class ModelKindError(InvalidInput):
    """``model=`` names another prediction type than the U-Net folder given holds. Its parts are kept (``model``,
    ``folder``, ``prediction``) for the command line, which spells the fix with its flags (``--model``, ``--weights``:
    ``app.cli``)."""

    def __init__(self, message: str, *, model: str, folder: Path, prediction: str):
        super().__init__(message)
        self.model, self.folder, self.prediction = model, folder, prediction


def _describe_vae(rec: dict) -> str:
    sha = rec.get("weights_sha256") or "none"
    return (f"{rec.get('name')!r} (sha256 {sha[:12]}, {rec.get('latent_channels')} latent channels, "
            f"scaling {rec.get('scaling_factor'):.5g}, shift {rec.get('shift_factor'):.5g})")


def check_vae(model: DiffusionModel, vae: VAE) -> None:
    """Raise unless ``vae`` is the VAE (weights, latent channels, scaling, shift) the U-Net was trained with."""
    _check_vae_record(model.config, vae_record(vae))


def _check_vae_record(config: UNetConfig, got: dict) -> None:
    """:func:`check_vae` on the U-Net's config and the VAE's record (:func:`models.unet.vae_record`): both can be
    read from the folders' config.json before the weights are (the weights' sha256 is checked against it on load)."""
    want = config.vae
    if not want:
        raise VAEMismatchError(f"U-Net {config.name!r} records no VAE; it cannot be checked against {_describe_vae(got)}")
    if want.get("latent_channels") != got["latent_channels"] or config.latent_channels != got["latent_channels"]:
        raise VAEMismatchError(
            f"latent channels mismatch: U-Net {config.name!r} takes {config.latent_channels}-channel latents "
            f"but VAE {got['name']!r} makes {got['latent_channels']}; expected VAE {_describe_vae(want)}")
    bad = [k for k in ("name", "weights_sha256") if want.get(k) != got[k]]
    bad += [k for k in ("scaling_factor", "shift_factor") if not math.isclose(want[k], got[k], rel_tol=1e-6, abs_tol=1e-9)]
    if bad:
        raise VAEMismatchError(
            f"VAE mismatch ({', '.join(bad)} differ): U-Net {config.name!r} was trained with VAE {_describe_vae(want)}, "
            f"got {_describe_vae(got)}. Load the matching VAE (Pipeline.load(vae=...)) or retrain the U-Net.")


IMAGE_FORMS = ("a PIL image of 8-bit channels (mode " + "/".join(data.PIL_MODES) + ", …), a list of them, or a floating-point tensor "
               "[3, H, W] / [B, 3, H, W] in [-1, 1] (in [0, 1] with image_range=(0, 1)); to read a file, pass "
               "PIL.Image.open(path)")
MASK_FORMS = ("a PIL image of 8-bit channels (mode " + "/".join(data.PIL_MODES) + ", …; white = generate), a list of them (one per item), "
              "or a floating-point or bool tensor [H, W] / [1, H, W] / [B, 1, H, W] in [0, 1] (1 = generate); to "
              "read a file, pass PIL.Image.open(path)")


def _tensor(value, what: str, forms: str) -> torch.Tensor:
    """``torch.as_tensor(value)``, with a value it cannot read (None, a path, an object) refused naming ``forms``."""
    if value is None or isinstance(value, (str, bytes, Path)) or hasattr(value, "convert"):
        raise InvalidType(f"{what} must be {forms}; got {value!r}")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidType(f"{what} must be {forms}; got {type(value).__name__} ({e})") from None


IMAGE_RANGES = ((-1, 1), (0, 1))  # image_range: what a float tensor image's values mean


def _image_range(value) -> tuple[int, int] | None:
    """img2img / inpaint ``image_range``: None (the default: [-1, 1], a tensor of no negative value refused as
    ambiguous), ``(-1, 1)`` (any values in [-1, 1], said explicitly) or ``(0, 1)`` (torchvision's ``ToTensor`` /
    diffusers' ``VaeImageProcessor`` range, read as t * 2 - 1)."""
    if value is None:
        return None
    try:
        pair = tuple(value)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair) and pair in IMAGE_RANGES:
            return pair
    except TypeError:
        pass
    raise InvalidInput(f"image_range must be (-1, 1) or (0, 1) — what a float tensor image's values mean — or None "
                       f"(the default: [-1, 1]), got {value!r}")


def _ambiguous_range(t: torch.Tensor, what: str) -> None:
    """Refuse a float image tensor read as [-1, 1] by default of which an item's values all lie in [0, 1]:
    torchvision's ToTensor and diffusers' image processor make [0, 1] images, which read as [-1, 1] are a washed-out
    picture. Each item is judged on its own (a [B, 3, H, W] tensor item by item, as a list's items are): one [0, 1]
    item stacked with [-1, 1] ones is the same mistake, and whether it is refused must not depend on how the items
    were packed."""
    if not t.numel():
        return
    items = t.flatten(1) if t.ndim == 4 else t.reshape(1, -1)
    lows, highs = items.amin(1).tolist(), items.amax(1).tolist()
    bad = [k for k, low in enumerate(lows) if low >= 0]
    if not bad:
        return
    k = bad[0]
    which = "" if items.shape[0] == 1 else f" (item{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))})"
    raise InvalidInput(
        f"{what}{which}: a float tensor whose values all lie in [0, 1] (from {lows[k]:g} to {highs[k]:g}), and the "
        "pipeline reads tensors in [-1, 1] (PIL pixels / 127.5 - 1), where it would be a washed-out picture; "
        "torchvision's ToTensor and diffusers' VaeImageProcessor make [0, 1] images: pass t * 2 - 1, or "
        "image_range=(0, 1). If they are [-1, 1] pixels that hold no negative value (a bright picture), pass "
        "image_range=(-1, 1)")


def _tensor_pixels(value, what: str, image_range) -> torch.Tensor:
    """A tensor image (``value``, any shape) → float32 in [-1, 1] by ``image_range`` (:func:`_image_range`): finite and
    within the range, [0, 1] values mapped by t * 2 - 1, and under the default a tensor with no negative value refused
    (:func:`_ambiguous_range`)."""
    t = _float_pixels(_tensor(value, what, IMAGE_FORMS), what)
    if image_range == (0, 1):
        _check_range(t, what, 0.0, 1.0, "image_range=(0, 1) reads values in [0, 1] (torchvision's ToTensor); pass "
                                        "image_range=(-1, 1) for [-1, 1] pixels")
        return t * 2 - 1
    vae_mod.check_pixels(t, what, "pass PIL images, or tensors scaled as pixels / 127.5 - 1 (or t * 2 - 1 from "
                                  "[0, 1], or image_range=(0, 1))")
    if image_range is None:
        _ambiguous_range(t, what)
    return t


def _as_image_batch(images, image_range=None, check_size=None) -> torch.Tensor:
    """PIL image, list of PIL images (and tensors), [3,H,W] or [B,3,H,W] tensor in [-1, 1] (or [0, 1] with
    ``image_range=(0, 1)``: :func:`_image_range`) → [B, 3, H, W] in [-1, 1]. Integer pixels (0..255), values outside
    the range, a tensor of no negative value under the default range, NaN, an empty batch, a list of different sizes
    and a PIL image of a mode that is not 8-bit (``data.check_pil_mode``) are refused; ``image_range`` with PIL images
    only too (they are 0..255 pixels). ``check_size(images, height, width)``, where given, checks every PIL image's
    size (:func:`data.shown_size`) before any is decoded."""
    image_range = _image_range(image_range)
    if hasattr(images, "convert"):
        images = [images]
    _refuse_meta(images, "images are", "in [-1, 1] as [B, 3, H, W], or PIL images")
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidInput("no images given: pass a PIL image, a list of them, or a [B, 3, H, W] tensor")
        pil = [im for im in images if hasattr(im, "convert")]
        if image_range is not None and len(pil) == len(images):
            raise InvalidInput(f"image_range={image_range} says what a float tensor image's values mean, and only PIL "
                               "images were given, which are read as 0..255 pixels; leave image_range out")
        if check_size is not None:
            for im in pil:  # before any is decoded: an 8000×8000 image is refused by its header
                check_size(len(images), *data.shown_size(im))
        items = [data.from_pil(im) if hasattr(im, "convert") else _tensor_pixels(im, f"images[{k}]", image_range)
                 for k, im in enumerate(images)]
        sizes = sorted({tuple(im.shape) for im in items})
        if len(sizes) > 1:
            raise InvalidInput(f"the images of a batch must share one size, got {sizes}; resize them first")
        images = torch.stack(items)
    else:
        images = _tensor_pixels(images, "images", image_range)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise InvalidInput(f"expected images [B, 3, H, W] (B >= 1) in [-1, 1] or PIL images, got shape "
                           f"{tuple(images.shape)}")
    return images


def _refuse_meta(value, what: str, forms: str) -> None:
    """A 'meta' tensor (or a list holding one) has a shape and no pixels: refused, naming ``what`` ("images are"),
    not a NotImplementedError or a RuntimeError of ``.item()`` from the range check."""
    if (isinstance(value, torch.Tensor) and value.is_meta) or (isinstance(value, (list, tuple)) and any(
            isinstance(v, torch.Tensor) and v.is_meta for v in value)):
        raise InvalidInput(f"{what} on the 'meta' device, which holds no pixels; pass a tensor with data (e.g. on "
                           f"'cpu' or 'cuda'), {forms}")


def _float_pixels(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` as float32 pixels; integer pixels (0..255, as PIL or numpy hold them) are refused, not guessed."""
    if t.is_complex() or not t.is_floating_point():
        raise InvalidType(f"{what} must be floating-point tensors in [-1, 1], got dtype {t.dtype}; for 0..255 "
                          "pixels pass PIL images, or t.float() / 127.5 - 1")
    return t.to(torch.float32)


_check_range = vae_mod.check_range  # one read of a tensor: finite, in [lo, hi] (the VAE's rule for its pixels)


def _pil_mask(mask) -> torch.Tensor:
    """An 8-bit PIL mask (``data.PIL_MODES``, read as luminance 0..255 / 255, its EXIF orientation applied as the
    image's is: :func:`data.decoded`) → [H, W] float in [0, 1]. A mask with transparent pixels is refused: its
    luminance drops the alpha, and what a transparent pixel means depends on the tool that made the mask."""
    import numpy as np

    mask = data.decoded(mask, "mask", to="L", values="[0, 1] (1 = generate)")
    if data.is_transparent(mask):
        raise InvalidInput(
            f"mask is a PIL image of mode {mask.mode!r} with transparent pixels, and a mask is read as its luminance "
            "(convert('L')), which drops the alpha; what transparency means differs between tools: A1111 uses the "
            "alpha itself as the mask (opaque = repaint), OpenAI's image edits mark the hole transparent. Pass the "
            "mask as an 'L' image, white = repaint: m = mask.convert('RGBA').getchannel('A') for A1111's "
            "convention, PIL.ImageOps.invert(m) for OpenAI's")
    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)


def _mask_dtype(mask: torch.Tensor) -> torch.Tensor:
    if mask.is_complex() or not (mask.is_floating_point() or mask.dtype == torch.bool):
        raise InvalidType(f"mask must be a floating-point or bool tensor in [0, 1] (1 = generate), got dtype "
                          f"{mask.dtype}; for a 0..255 mask pass a PIL 'L' image, or m.float() / 255")
    return mask


def _as_mask(mask, batch: int, height: int, width: int) -> torch.Tensor:
    """PIL mask / list of them (one per item) / [H,W] / [1,H,W] / [B,1,H,W] in [0, 1] (1 = generate) →
    [B, 1, H, W] float. A PIL mask's size is checked from its header (:func:`data.shown_size`), before it is decoded,
    as an image's is: a 12000×12000 mask for a 64×64 image is refused at once, not after seconds and gigabytes."""
    _refuse_meta(mask, "mask is", "in [0, 1] as [H, W] or [B, 1, H, W], or a PIL 'L' image")
    pil = {"mask": mask} if hasattr(mask, "convert") else {f"mask[{k}]": m for k, m in enumerate(mask) if hasattr(
        m, "convert")} if isinstance(mask, (list, tuple)) else {}
    for what, m in pil.items():
        if data.shown_size(m) != (height, width):
            h, w = data.shown_size(m)
            raise InvalidInput(f"{what} is a PIL image of {h}×{w} pixels (height×width) but the image is "
                               f"{height}×{width}; pass a mask of the image's size (white = generate)")
    if hasattr(mask, "convert"):
        mask = _pil_mask(mask)
    elif isinstance(mask, (list, tuple)) and mask and any(hasattr(m, "convert") or isinstance(m, torch.Tensor)
                                                          for m in mask):
        items = [_pil_mask(m) if hasattr(m, "convert") else _tensor(m, f"mask[{k}]", MASK_FORMS)
                 for k, m in enumerate(mask)]
        items = [m[None] if m.ndim == 2 else m for m in items]  # each item [1, H, W]
        shapes = sorted({tuple(m.shape) for m in items})
        if len(shapes) > 1 or items[0].ndim != 3 or items[0].shape[0] != 1:
            raise InvalidInput(f"a list of masks holds one [H, W] (or [1, H, W]) mask per item, all of one size; got "
                               f"shapes {shapes}")
        mask = torch.stack([_mask_dtype(m).to(torch.float32) for m in items])
    mask = _mask_dtype(_tensor(mask, "mask", MASK_FORMS)).to(torch.float32)
    given = tuple(mask.shape)
    while mask.ndim < 4:
        mask = mask[None]
    if (mask.ndim == 4 and mask.shape[1] == 1 and tuple(mask.shape[-2:]) == (height, width)
            and mask.shape[0] not in (1, batch)):
        m = mask.shape[0]
        fix = (f"to inpaint the image with {m} masks, make {m} items: pass one seed per mask (seed=[s0, s1, ...]) or "
               f"one prompt per mask; or pass one mask" if batch == 1 else
               f"pass one mask for every item, or {batch} masks (one per item)")
        raise InvalidInput(f"got {m} masks for a batch of {batch} item(s) (the batch is one item per image, per prompt "
                           f"or per seed of a seed list: one image, one prompt and one seed make one item); {fix}")
    if (mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (height, width)
            or mask.shape[0] not in (1, batch)):
        raise InvalidInput(
            f"mask has shape {given} but the image is {height}×{width} (batch {batch}); "
            f"expected [{height}, {width}] or [B, 1, {height}, {width}] with 1 = generate, 0 = keep")
    _check_range(mask, "mask values", 0.0, 1.0, "1 = generate, 0 = keep (a PIL 'L' mask is read as 0..255 / 255)")
    return mask.expand(batch, 1, height, width)


def _strength(value, meaning: str) -> float:
    """img2img / inpaint ``strength``: any real number (a numpy float too) in (0, 1]."""
    v = real("strength", value, what=f" in (0, 1] ({meaning})")
    if not 0 < v <= 1:
        raise InvalidInput(f"strength must be in (0, 1] ({meaning}), got {v:g}")
    return v


def _check_regenerates(mask: torch.Tensor) -> None:
    """Refuse a mask [B, 1, H, W] of an item that keeps every pixel (no value above 0.5, the threshold inpaint reads
    the mask at): the sampler would run every step and return the input."""
    keeps = [k for k in range(mask.shape[0]) if not bool((mask[k] > 0.5).any())]
    if not keeps:
        return
    which = "the mask keeps" if len(keeps) == mask.shape[0] else f"the masks of items {keeps} keep"
    raise InvalidInput(f"{which} every pixel: nothing to inpaint (values > 0.5 are regenerated, values <= 0.5 are "
                       "kept, and no value is above 0.5); mark the region to regenerate with values above 0.5 (1, "
                       "white in a PIL mask), or use img2img to change the whole image")


def _check_progress(progress) -> None:
    if not isinstance(progress, bool):
        raise InvalidType(f"progress must be True (show a progress bar) or False, got {progress!r}")


def _check_output(output) -> None:
    if output not in ("pil", "tensor"):
        raise InvalidInput(f"output must be 'pil' or 'tensor', got {output!r}")


def _refuse_size_options(options: dict, task: str) -> None:
    """img2img / inpaint take their size from the image: a ``width`` / ``height`` keyword (txt2img's) is refused
    saying so, not as a sampler option the sampler lacks."""
    given = [k for k in ("width", "height") if k in options]
    if given:
        raise InvalidInput(f"{task} takes its size from the image, so it has no {' or '.join(given)} argument (as "
                           "txt2img has); leave it out, and resize the image (PIL's image.resize((width, height))) for "
                           "another size")


def _sampler_options(options) -> dict:
    """A call's ``options=`` (the sampler options a run takes as keywords: ``txt2img(..., eta=0.5)``) as a new dict:
    a mapping of option names, or None for none. Anything else is refused, not read by ``dict()``, which took a list
    of (name, value) pairs as if it were one, and failed raw on any other list or string (TypeError, ValueError)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidType(f"options must be a dict of sampler options by name (what the run takes as keywords), or "
                          f"None; got {options!r} ({type(options).__name__}): pass them as a dict, e.g. "
                          "options={'eta': 0.5}")
    bad = [k for k in options if not isinstance(k, str)]
    if bad:
        raise InvalidType(f"options' keys are sampler option names (strings), as the run's keywords are; got "
                          f"{bad[0]!r} ({type(bad[0]).__name__}) in {options!r}: name each option by its string, "
                          "e.g. 'eta'")
    return dict(options)


def _refuse_negative_prompt(options: dict) -> None:
    if "negative_prompt" in options:
        raise InvalidOption("the pipeline takes no negative_prompt: its classifier-free guidance steers away from the "
                            "empty prompt (the null caption the U-Net learned by caption dropout), not from a prompt "
                            "you give; leave negative_prompt out, and set how strongly the prompt is followed with cfg=")


# The keywords Pipeline.request records besides its own arguments: the infotext's field for each. Any other is
# refused (the JSON chunk would hold it and the infotext, which A1111 and image sites read, drop it without a word)
RECORDED_EXTRAS = {"strength": "Denoising strength"}
# the fields the request writes itself, from the run (not the caller's to say)
_OWN_FIELDS = ("rng", "model", "model_sha256", "version")


def _check_extras(extra: dict) -> None:
    """Refuse a keyword of :meth:`Pipeline.request` it does not record (:data:`RECORDED_EXTRAS`): ``negative_prompt``
    as the run refuses it, a field the request writes itself, and any other, naming it and its value."""
    _refuse_negative_prompt(extra)
    own = [k for k in extra if k in _OWN_FIELDS]
    if own:
        raise InvalidOption(f"request writes {', '.join(own)} itself, from the run (rng: \"CPU\", the source of "
                            "every image's starting noise; model, model_sha256: the loaded U-Net's; version: the "
                            f"library's), so it takes no {', '.join(f'{k}={extra[k]!r}' for k in own)}; leave it out")
    other = [k for k in extra if k not in RECORDED_EXTRAS]
    if other:
        given = ", ".join(f"{k}={extra[k]!r}" for k in other)
        raise InvalidOption(f"request records no {given}: besides its own arguments it records only "
                            f"{', '.join(f'{k}= ({v!r} in the infotext)' for k, v in RECORDED_EXTRAS.items())}, and "
                            "the infotext has no field for it (the JSON chunk would hold it and the infotext drop it); "
                            "pass a sampler option in options={...}, and leave anything else out")


def _shown(text: str) -> str:
    """``text`` as UTF-8 can hold it: a byte Python read from a file name or an argument that is not UTF-8 (a lone
    surrogate, '\\udcff') shown as its escape (\\xff)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no byte was read as
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_utf8(text, what: str) -> None:
    """Refuse a ``text`` (a sampler name, a fitted solver's path) that does not encode as UTF-8, before any model
    call: each image's PNG records it (:func:`png_info`), and a record that cannot hold it was found only after
    sampling, losing the image."""
    if not isinstance(text, str):
        return  # the name's own check says what it must be
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"the {what} '{_shown(text)}' holds bytes that are not UTF-8 text (a file name in another "
                           "encoding), and each image records it in its PNG, which holds UTF-8 text; rename the file "
                           "to a UTF-8 name (e.g. with only ASCII letters, digits, '-', '_' and '.') and pass that"
                           ) from None


def _a1111_cpu(merged: dict, given) -> bool:
    """Whether a run takes an A1111 label's own draws (``merged``: the label's options with the caller's, ``given``:
    the caller's option names, None not counted): the pipeline takes them from A1111's "CPU" source. They continue
    each image's generator after its starting noise, which the pipeline draws on the CPU (seeded_randn: that source's
    first draw), so from the same CPU generators they are A1111's CPU-source image on any device (its device
    generators would follow a start they did not draw, on a GPU)."""
    return merged.get("noise_sampler") == "a1111" and "noise_sampler" not in given


def _resolve(sampler: str, schedule: str | None, steps, options: dict):
    """What :meth:`Pipeline.plan` checks without the model: ``(label, schedule, steps asked or None, options,
    fitted solver or None)``: the name resolved (a fitted file read and checked), a fitted solver's fixed steps and
    schedule, the options by the sampler's rules — before the prompts are encoded or an image is, not in its loop."""
    _refuse_negative_prompt(options)
    _check_utf8(sampler, "sampler name")
    if isinstance(options.get("solver"), (str, Path)):
        _check_utf8(str(options["solver"]), "solver path")
    asked = None if steps is None else integer("steps", steps, lo=1, hi=MAX_STEPS)
    given = {k for k, v in options.items() if v is not None}  # the caller's own (a label's are not refused here)
    found, schedule, options = names.resolve_call(sampler, schedule, options)
    given &= set(options)  # less A1111's default settings its label drops (names.merge_options)
    if _a1111_cpu(options, given):
        options = {**options, "noise_sampler": "a1111_cpu"}
    _check_fixed(found, asked, schedule)
    spec = samplers.core.registry.SAMPLERS.get(found.sampler)
    check_options(spec, options)
    refuse_unread_noise(spec, options, given, found.label)
    noise_mod.check_option(spec, options)
    options = _bound_own_steps(spec, options)
    on_nodes, options, solver = _on_solver_nodes(found, options)
    if on_nodes is not found:  # now on the solver's nodes: its steps, no schedule
        _check_fixed(on_nodes, asked, schedule)
    return on_nodes, schedule, asked, options, solver


def _on_solver_nodes(found, options: dict):
    """``(label, options, fitted solver or None)``: learned_multistep with ``solver=`` runs on the solver's own nodes,
    as fitted:PATH runs (``found.sigmas`` set), a solver given as a path read once, here. The run (:func:`_resolve`)
    and its record (:meth:`Pipeline.request`) both resolve through this, so the record says the steps it took."""
    solver = options.get("solver") if found.sampler == "learned_multistep" else None
    if solver is None:
        return found, options, None
    from samplers.fitted.solver import LearnedSolver

    solver = LearnedSolver.of(solver)  # a path given as the option: read once, here
    options = {**options, "solver": solver}
    if found.sigmas is None:
        found = dataclasses.replace(found, sigmas=tuple(solver.sigmas))
    return found, options, solver


def _check_fixed(found, asked: int | None, schedule: str | None) -> None:
    """A fitted solver runs on its own nodes: another step count or a schedule is refused."""
    if found.sigmas is None:
        return
    fixed = len(found.sigmas) - 1
    if asked is not None and asked != fixed:
        raise InvalidInput(f"{found.label!r} runs exactly {fixed} steps on the σ nodes it was fitted on, but "
                           f"steps={asked} was asked; leave steps out or pass steps={fixed}")
    if schedule is not None:
        raise InvalidOption(f"{found.label!r} runs on its own fitted σ nodes; leave schedule out")


def _callers(found, options: dict) -> dict:
    """``options`` without those the label ``found`` sets itself at the same value (the adapter merges them again)."""
    return {k: v for k, v in options.items() if not (k in found.options and same_value(found.options[k], v))}


def unread_noise_options(sampler: str, options: dict) -> dict:
    """:func:`samplers.core.run.unread_noise` of a run of ``sampler`` (a name or label) with the caller's
    ``options``: {key: why}."""
    _refuse_negative_prompt(options)
    given = {k for k, v in options.items() if v is not None}
    found, _, merged = names.resolve_call(sampler, None, dict(options))
    spec = samplers.core.registry.SAMPLERS.get(found.sampler)
    check_options(spec, merged)
    return unread_noise(spec, merged, given, found.label)


def shared_options(sampler_names: Sequence[str], options: dict | None) -> dict:
    """Each row's options where the same ``options`` go to every row (``samplers compare``): a noise-only option a row
    never reads (:func:`samplers.core.run.unread_noise`) is left out of that row's run where another row reads it (the
    row's image is the one made without it either way; an ODE baseline beside an ancestral row); one that no row
    reads is refused, as it is for one run. {name: options}."""
    options = _sampler_options(options)
    unread = {name: unread_noise_options(name, options) for name in sampler_names}
    for key in dict.fromkeys(k for u in unread.values() for k in u):
        if all(key in u for u in unread.values()):
            first = next(iter(unread.values()))[key]
            raise InvalidOption(first + ("" if len(unread) == 1 else " (no row of the grid reads it)"))
    return {name: {k: v for k, v in options.items() if k not in unread[name]} for name in sampler_names}


def _check_noise(sampler: str, options: dict, sigmas, shape: tuple | None = None, seeds=None,
                 flow_time: bool = False) -> None:
    """A churn window that holds no step of the run (:func:`samplers.core.run.empty_churn_window`), and the noise the
    registry sampler ``sampler`` will build for a run on ``sigmas`` (latent ``shape``, ``seeds`` as
    the pipeline passes them), checked by the sampler's own function (``noise.for_run``: the kind, the seed it is given, a pre-drawn
    noise's shape, a Brownian tree's range where the run draws; the sampler's own check of its draws,
    :attr:`~samplers.core.registry.SamplerSpec.check_draws`, which it makes itself after the encoders in a task:
    ``restart``'s entries with their noise) before any prompt or image is encoded; nothing is
    drawn. Without a ``shape`` only a named kind is checked (an object is checked against the latent later)."""
    spec = samplers.core.registry.SAMPLERS.get(sampler)
    unit = "flow time t" if flow_time else "σ"  # ComfyUI's rules on a flow model: sigmas are its flow times
    empty = empty_churn_window(spec, options, sigmas, unit)
    if empty is not None:
        raise InvalidOption(empty)
    beyond = churn_beyond(spec, options, sigmas, 1.0, unit) if flow_time else None
    if beyond is not None:
        raise InvalidOption(beyond)
    if "noise_sampler" not in spec.options:
        return
    value = options.get("noise_sampler")
    named = isinstance(value, (str, type(None)))
    if shape is None and not named:
        return
    seed = seeds if named and "seed" in spec.options else None  # as _sample passes them
    like = torch.empty(shape or (1,), device="meta")  # its shape only: no memory, no values
    noise = noise_mod.for_run(value, seed, like, sigmas, draws=draws_noise(spec, options))
    if spec.check_draws is not None:  # the sampler's own check (restart's entries), made before its first model call,
        values = [float(s) for s in sigmas]  # which in a task comes after the encoders
        spec.check_draws(values[1:] if math.isinf(values[0]) else values, noise, {**spec.options,
                                                                                 **check_options(spec, options)})


# torchdiffeq's Adams correctors iterate each step until the whole batch's state converges (one norm over the batch)
_BATCH_NORM_CORRECTORS = frozenset({"torchdiffeq.implicit_adams", "torchdiffeq.fixed_adams"})


def runs_items_alone(sampler: str) -> bool:
    """Whether the pipeline runs each item of a batch of the registry sampler ``sampler`` on its own: those whose
    steps are decided for the whole batch on the host, which would make an item's image depend on the others — the
    adaptive ones (``dpm_adaptive``: the worst item's error, or with its A1111 / ComfyUI labels k-diffusion's norm over
    the batch; torchdiffeq's adaptive methods: one norm over the batch) and torchdiffeq's Adams correctors (iterated
    to one norm over the batch). The other ``host_sync`` samplers (torchdiffeq's fixed grids, torchsde's solvers) give
    each item what it gets alone, and keep their batch."""
    from samplers.interop.torchdiffeq_adapter import chooses_own_steps

    return chooses_own_steps(sampler) or sampler in _BATCH_NORM_CORRECTORS


def _check_own_items(found, options: dict, shape: tuple | None) -> None:
    """A sampler of :func:`runs_items_alone` runs each item of a batch on its own (:meth:`Pipeline._sample`),
    so a noise object the caller built for the whole batch (``noise_sampler=`` not a kind's name) cannot be split
    between the runs: refused for a batch of more than one, before any prompt is encoded."""
    value = options.get("noise_sampler")
    if shape is None or shape[0] == 1 or isinstance(value, (str, type(None))):
        return
    if runs_items_alone(found.sampler):
        raise InvalidOption(f"{found.label!r} decides on the host (its steps may depend on the batch), so the "
                            f"pipeline runs each of the {shape[0]} items on its own (an item is the image made "
                            "alone), and noise_sampler="
                            f"{type(value).__name__} draws for the whole batch; pass noise_sampler by name (e.g. "
                            "'brownian_tree', seeded per item by the seeds), or make one image per call")


def _bound_own_steps(spec, options: dict) -> dict:
    """A sampler that chooses its own steps (``dpm_adaptive``) counts them against :data:`MAX_STEPS` as a schedule's
    steps do: an explicit ``max_steps`` above it is refused (not lowered); where the caller leaves ``max_steps`` out
    and the sampler's own default is above it, the pipeline passes ``max_steps=MAX_STEPS`` (a default, its choice)."""
    if "max_steps" not in spec.options:
        return options
    if "max_steps" in options:
        n = integer("max_steps", options["max_steps"], lo=1)
        if n > MAX_STEPS:
            raise LimitExceeded(f"{spec.name}: max_steps = {n} is more than the pipeline's limit of {MAX_STEPS} steps "
                                "(a sampler's own steps count against it as a schedule's do; more would run for "
                                f"hours); pass max_steps <= {MAX_STEPS}, or leave it out, and loosen rtol / atol if "
                                "the run stops at the cap")
        return options
    default = spec.options["max_steps"]
    if default is None or default > MAX_STEPS:
        return {**options, "max_steps": MAX_STEPS}
    return options


def _as_state(x: torch.Tensor, sigmas, options: dict) -> torch.Tensor:
    """The start ``x`` (VE, at ``sigmas[0]``) as the sampler takes it: with ``vp_state`` (A1111's "DDIM" / "PLMS"
    labels) the VP state x/√(1 + σ_0²) (A1111's q_sample of the encoded image); else ``x`` itself."""
    return to_vp_state(x, float(sigmas[0])) if options.get("vp_state") else x  # (x itself at σ = inf)


def _check_solver(solver, options: dict, prediction: str) -> None:
    """What a fitted solver's record says of a model of type ``prediction``, without the model (its fingerprint is
    checked by :meth:`Pipeline.check_fitted`)."""
    from samplers.core.conversion import canonical_prediction

    prediction = canonical_prediction(prediction)
    solver.check_model(allow_other_model=options.get("allow_other_model", False), prediction=prediction,
                       supports_infinite_sigma=False if prediction in ("eps", "score") else None)


def check_sampler(sampler: str, schedule: str | None = None, steps: int | None = None, options: dict | None = None,
                  prediction: str | None = None) -> None:
    """The checks of :meth:`Pipeline.plan` that need no loaded model, for a caller that has not loaded it yet (the
    CLI, before reading the weights): the name (a fitted solver's file read and checked), its options, a fitted
    solver's steps and schedule and — where ``prediction`` (the model's type, e.g. ``"eps"``) is known — its
    recorded prediction and whether its start suits such a model. Its fingerprint is checked by ``plan``."""
    _, _, _, options, solver = _resolve(sampler, schedule, steps, _sampler_options(options))
    if solver is not None and prediction is not None:
        _check_solver(solver, options, prediction)


def _named_folder(folder, what: str, holds: str) -> Path:
    """``folder`` (a weights folder the caller names) as a Path, refused at once when it is not a path (a number: not
    ``Path``'s TypeError), an empty path (which ``Path`` reads as the current folder) or a file, naming it: reading it
    would say the folder "does not exist"."""
    if not isinstance(folder, (str, os.PathLike)):
        raise InvalidType(f"the {what} folder must be a path (a str or os.PathLike) to the folder that holds {holds}, "
                          f"got {folder!r} ({type(folder).__name__})")
    if isinstance(folder, str) and folder == "":
        raise InvalidInput(f"the {what} folder is an empty path (''), which names no folder: give the folder that "
                           f"holds {holds}")
    path = Path(folder)
    if path.is_file():
        raise InvalidInput(f"{str(path)!r} is a file, not a {what} folder: give the folder that holds {holds} "
                           f"(the folder {str(path.parent)!r}, if this is one of its files)")
    return path


def _unet_folder(folder, model: str | None) -> tuple[Path, str | None, str]:
    """``(folder, model, reproduce hint)`` of :meth:`Pipeline.load`'s arguments."""
    if model is not None and model not in MODELS:
        raise InvalidInput(f"model must be one of {MODELS}, got {model!r}")
    if folder is None:
        model = model or "eps"
        return WEIGHTS / model, model, f"reproduce the shipped weights with `{TRAIN_COMMANDS[model]}`"
    hint = TRAIN_HINT
    if isinstance(folder, str) and folder in MODELS and not Path(folder).exists():  # Pipeline.load("eps")
        hint = f"for the shipped {folder} model pass model={folder!r} (Pipeline.load(model={folder!r})), or {hint}"
    return _named_folder(folder, "U-Net", f"{mio.CONFIG_FILE} and {mio.WEIGHTS_FILE}"), model, hint


def _vae_folder(vae):
    """``vae`` of :meth:`Pipeline.load` (None: the shipped one; a VAE as it is), a folder checked as the U-Net's."""
    if vae is None or isinstance(vae, VAE):
        return vae
    return _named_folder(vae, "VAE", f"{mio.CONFIG_FILE} and {mio.WEIGHTS_FILE}")


def _check_kind(model: str | None, folder: Path, prediction: str) -> None:
    if model is not None and prediction != model:
        raise ModelKindError(f"model={model!r} asks for a U-Net with prediction {model!r}, but {folder} holds one "
                             f"with prediction {prediction!r}; give that folder without model (or with "
                             f"model={prediction!r}), or a folder of a {model!r} U-Net", model=model, folder=folder,
                             prediction=prediction)


def _batch_size(n, given: str = "batch") -> int:
    """The number of items of one call, at most :data:`MAX_BATCH`: ``batch`` as given, or counted from the ``seeds``
    or ``prompts`` listed (the error names what the caller gave, and the fix: fewer per call)."""
    if given == "batch":
        n = integer("batch", n, lo=1)
    if n > MAX_BATCH:
        what = f"batch = {n} is" if given == "batch" else f"{n} {given} (one item each) are"
        raise LimitExceeded(f"{what} more than the limit of {MAX_BATCH} items per call; make the images in calls of "
                            f"at most {MAX_BATCH} items")
    return n


def model_defaults(config: UNetConfig) -> dict:
    """The defaults of a model's runs: config.json's ``defaults`` over :data:`FALLBACK_DEFAULTS` of its prediction
    type, field by field. ``defaults["schedule"]`` is the schedule of a call that names a sampler without a schedule
    of its own and no schedule; the default sampler's run itself may take its own (:func:`default_pair_schedule`)."""
    return {**FALLBACK_DEFAULTS[config.prediction], **config.defaults}


def default_pair_schedule(config: UNetConfig, defaults: dict) -> str | None:
    """The schedule of a call that names neither sampler nor schedule: the default sampler on ``defaults["schedule"]``,
    but where config.json names a sampler with a schedule of its own (a label: ``"DDIM"`` runs on A1111's timesteps)
    and no schedule, None: its own, as a call naming that sampler alone runs, not the fallback chosen for another
    sampler, which may contradict the label or not suit the model."""
    given = config.defaults
    if "sampler" in given and "schedule" not in given and names.resolve(given["sampler"]).schedule is not None:
        return None
    return defaults["schedule"]


def check_default_run(config: UNetConfig) -> None:
    """Refuse a U-Net config whose ``defaults`` make no run on its model: the run of a call that names no sampler,
    schedule or steps, planned once as the pipeline plans every run (:meth:`PipelineSpec.plan_run`): a label with
    another schedule than its own, a schedule this type of model cannot build (karras on a flow model, whose σ_max is
    inf). Its names and values are checked field by field first (``_checks.check_defaults``); this is the pair.
    ``UNetConfig.from_dict`` calls it, so a config.json that holds such defaults is refused when it is read, the error
    naming the file (``models.io.load_module`` and :meth:`PipelineSpec.read` add its path) and the field, not every
    later call with advice for arguments its caller never gave."""
    PipelineSpec(config, None)


def _checked_seeds(seed, n: int) -> list[int]:
    """``resolve_seeds(seed, n)`` for the checks before a run, without its draw: ``seed=None`` draws a base seed from
    torch's global generator, which a refused call must leave as it was (a script that catches the refusal and
    retries would get another image than without it), so the seeds 0 … n - 1 stand in for it until every check has
    passed and the run draws its own (:func:`_run_seeds`). No check reads a value a stand-in changes: the drawn base
    + k are n distinct seeds that differ by less than 2**32 (the twin check) and lie below 2**64 (the base is drawn
    below 2**62), as the stand-ins are and do."""
    return list(range(n)) if seed is None else resolve_seeds(seed, n)


def _run_seeds(seed, checked: list[int]) -> list[int]:
    """The seeds a run draws its noise with, once every check has passed: ``checked`` (:func:`_checked_seeds`), or for
    ``seed=None`` a base drawn now from torch's global generator (``resolve_seeds``: ``torch.manual_seed`` makes the
    run reproducible)."""
    return resolve_seeds(None, len(checked)) if seed is None else checked


class PipelineSpec:
    """What a pipeline checks without its weights — the U-Net's and the VAE's configs: the sampler, schedule and
    steps of a run (:meth:`plan_run`), image sizes, seeds, batch and memory (:meth:`check_request`). A
    :class:`Pipeline` is one; :meth:`read` builds one from the folders' config.json alone, so that a caller (the CLI)
    can check a request by the pipeline's own rules before the weights are read and hashed."""

    def __init__(self, config: UNetConfig, vae_config: VAEConfig | None):
        """``vae_config`` None: the U-Net's config alone, which plans runs and checks no image size
        (:func:`check_default_run`)."""
        self.config = config
        self.vae_config = vae_config
        self.native = native_schedule(config)
        try:  # the default run planned once: defaults that cannot run are the config's error, not a caller's
            self.defaults = model_defaults(config)
            self.default_pair_schedule = default_pair_schedule(config, self.defaults)
            self.plan_run(None, None, None, {})
        except SamplersError as e:
            fallback = FALLBACK_DEFAULTS[config.prediction]
            raise mio.ConfigMismatchError(
                f"U-Net config field 'defaults' is {config.defaults!r}, and the run it makes where a call names no "
                f"sampler, schedule or steps cannot run on this {config.prediction} model ({e}); correct 'defaults' in "
                f"config.json to a sampler and schedule this model runs, or leave out the fields that do not suit it "
                f"(the {config.prediction} model's fallback is {fallback})") from None

    @property
    def default_schedule(self) -> str:
        """The schedule a run takes where neither the call nor its sampler names one: ``defaults["schedule"]`` (a call
        naming no sampler either runs the default pair: :func:`default_pair_schedule`)."""
        return self.defaults["schedule"]

    @classmethod
    def read(cls, folder: str | Path | None = None, model: str | None = None,
             vae: str | Path | VAE | None = None) -> "PipelineSpec":
        """:meth:`Pipeline.load`'s arguments, checked from the config.json files only: the folders exist, the U-Net
        is of the kind ``model`` names, the VAE is the one it was trained with (by the sha256 its config records,
        which loading checks the weights against)."""
        folder, model, hint = _unet_folder(folder, model)
        vae = _vae_folder(vae)
        raw = mio.load_config(folder, hint)
        if raw.get("type") != "TextUNet":
            raise mio.ConfigMismatchError(f"{folder / mio.CONFIG_FILE} describes a {raw.get('type')!r}, not a TextUNet")
        try:
            config = UNetConfig.from_dict({k: v for k, v in raw.items() if k != "weights_dtype"})
        except mio.ModelLoadError as e:
            raise type(e)(f"{folder / mio.CONFIG_FILE}: {e}") from None
        _check_kind(model, folder, config.prediction)
        if isinstance(vae, VAE):
            vae_config, record = vae.config, vae_record(vae)
        else:
            vae_config, sha = vae_mod.read_config(vae)
            record = {"name": vae_config.name, "weights_sha256": sha, "latent_channels": vae_config.latent_channels,
                      "scaling_factor": vae_config.scaling_factor, "shift_factor": vae_config.shift_factor}
        _check_vae_record(config, record)
        return cls(config, vae_config)

    def sigmas(self, schedule: str | None = None, steps: int | None = None, **kw) -> torch.Tensor:
        """The sampling schedule (VE sigmas ending in 0) for this model's native schedule. ``schedule`` is a registry
        schedule or a ComfyUI / A1111 scheduler name (default: the model's); ``steps`` default: the model's."""
        name, options = names.resolve_schedule(self.default_schedule if schedule is None else schedule,
                                               native=self.native)
        return samplers.get_sigmas(name, self.defaults["steps"] if steps is None else steps, native=self.native,
                                   **{**options, **kw})

    def _check_run_noise(self, found, options: dict, sigmas, shape: tuple | None = None, seeds=None) -> None:
        """:func:`_check_noise` of a run of the label ``found`` on ``sigmas``: where it is ComfyUI's flow rule on this
        model, on the flow times that rule steps (its churn window and Brownian tree live on t, a finite range from
        t = 1: :func:`samplers.interop.comfyui.flow_times`)."""
        _check_own_items(found, options, shape)
        flow = self.runs_comfyui_flow_rule(found)
        if flow:
            from samplers.interop.comfyui import flow_times

            sigmas = torch.tensor(flow_times(sigmas), dtype=torch.float64)
        _check_noise(found.sampler, options, sigmas, shape, seeds, flow)

    def runs_comfyui_flow_rule(self, found) -> bool:
        """Whether a run of the label ``found`` (``names.resolve``'s) runs ComfyUI's own rule for it on this flow
        model (:func:`samplers.interop.comfyui.run_on_flow_model`), as ComfyUI runs its names on flow models (SD3,
        Flux): k-diffusion's plain rule on the raw (x_t, σ = t) for most, half-log-SNR ones after ComfyUI's
        first-σ offset, ``euler_ancestral``'s RF rule; registry names run the registry's rule in σ = t/(1 − t)."""
        return found.source == "comfyui" and isinstance(self.native, samplers.RectifiedFlow)

    def plan_run(self, sampler: str | None, schedule: str | None, steps: int | None, options: dict,
                 txt2img: bool = True):
        """``(label found, sigmas, options, fitted solver or None)``: :meth:`Pipeline.plan` without the fitted
        solver's fingerprint check (the one part that needs the weights). ``sampler=None`` is the model's default;
        any other value (``""`` too) is a name to resolve."""
        found, _, sigmas, options, solver = self._plan_run(sampler, schedule, steps, options, txt2img)
        return found, sigmas, options, solver

    def _plan_run(self, sampler: str | None, schedule: str | None, steps: int | None, options: dict,
                  txt2img: bool = True):
        """:meth:`plan_run` with the schedule's name it resolved (None: the model's default; a fitted solver's
        nodes are ``found.sigmas``): ``(label found, schedule, sigmas, options, fitted solver or None)``."""
        if sampler is None and schedule is None:  # the model's defaults are a pair: its sampler on its schedule
            schedule = self.default_pair_schedule
        implied = schedule is None  # a label's own schedule, where it has one: A1111's "Automatic"
        found, schedule, asked, options, solver = _resolve(self.defaults["sampler"] if sampler is None else sampler,
                                                          schedule, steps, options)
        if self.runs_comfyui_flow_rule(found):  # ComfyUI's rule for the name on flow models: refused where the
            from samplers.interop.comfyui import ksampler_function  # library lacks it, its options checked there

            ksampler_function(f"comfyui:{found.label}", coordinates="flow", **_callers(found, options))
        if found.sampler == "tcd":  # on this model's timestep table, not tcd's default (SD-1.x's)
            options = with_model_table(options, self.native, self.config.prediction,
                                       ": use lcm (or euler_ancestral) for a consistency-style stochastic run, or, in "
                                       "Python, pass native=samplers.VPDiscrete(...) in the sampler options to run it "
                                       "on one anyway")
        if found.sigmas is not None:  # a fitted solver runs on its own nodes
            sigmas = torch.tensor(found.sigmas, dtype=torch.float64)
        else:
            n = self.defaults["steps"] if asked is None else asked
            # A1111 / ComfyUI's KSampler build a schedule one step longer for the samplers that drop its
            # next-to-last σ, so the run still takes n steps
            try:
                sigmas = self.sigmas(schedule, n + 1 if found.discard_penultimate_sigma else n)
            except InvalidInput as e:
                if not (implied and schedule is not None and found.schedule == schedule):
                    raise
                own = self.default_schedule
                if found.schedule_is_explicit:
                    fix = f"a label that names its schedule takes no other: use {found.sampler!r} with one this model has"
                    how = "names"
                else:
                    fix = "pass a schedule this model has"
                    how = "runs by default (its tool's automatic choice) on"
                raise InvalidInput(f"{found.label!r} {how} the {schedule!r} schedule, which this "
                                   f"{self.config.prediction} model cannot build ({e}); {fix}, e.g. its own "
                                   f"{own!r}") from None
            # A1111's img2img runs on the chosen schedule's ends; its txt2img on the model's, whether the schedule
            # type is chosen apart or in the name ("DPM fast Simple")
            if found.model_range and (not implied or found.schedule_is_explicit) and txt2img:
                sigmas = self._check_model_range(found, schedule, sigmas, n)
        if found.discard_penultimate_sigma:
            sigmas = samplers.schedules.drop_penultimate(sigmas)
        if solver is not None:  # learned_multistep with solver=: its own nodes only, checked before any prompt is
            solver.check_nodes(sigmas.tolist())  # encoded (fitted:PATH plans on them)
            _check_solver(solver, options, self.config.prediction)  # its start (σ = inf on an eps model) first
            if isinstance(self.native, samplers.VPDiscrete):  # and within the σ table the U-Net's time comes from
                solver.check_table_range(self.native.sigma_min, self.native.sigma_max, "this model",
                                         found.label if found.source == "fitted" else None)
        if txt2img:  # a named noise on this schedule (img2img / inpaint run on a part of it: checked once cut)
            self._check_run_noise(found, options, sigmas)
            if isinstance(self.native, samplers.VPDiscrete):  # a preset for another model (ays_svd from σ = 700)
                # img2img's part is checked by its run, before the U-Net
                self.native.check_in_table(sigmas.tolist(), fix=f"Use a schedule built on this model's range: its own "
                                           f"{self.default_schedule!r}, or any but a preset made for another "
                                           "model's table")
        return found, schedule, sigmas, options, solver

    def _check_model_range(self, found, schedule: str, sigmas: torch.Tensor, n: int) -> torch.Tensor:
        """The schedule the label runs. A1111's txt2img runs DPM fast / DPM adaptive on the model's whole σ range
        (``model_wrap.sigmas[0]`` to ``[-1]``, fast with n = steps calls) whatever Schedule type is chosen, and these
        samplers use only the ends of their schedule (and fast its length): a caller's schedule with those ends (and,
        for fast, n steps) runs what A1111 computes, on A1111's ends (its float32 table's; a registry schedule on the
        model's exact table ends 1.3e-5 from them on SD 1.x, within the 1e-4 taken as the same ends); one with other
        ends would run what A1111 does not, and is refused rather than ignored."""
        try:  # the model's whole range: the ends of its training σ table as A1111 reads it, its Uniform type
            own = self.sigmas("a1111:Uniform", n)
        except InvalidInput:  # a model A1111's rule has no schedule for (a flow model): the caller's schedule runs
            return sigmas

        def ends(s: torch.Tensor) -> tuple[float, float]:
            positive = s[s > 0]
            return float(s[0]), float(positive[-1])

        (hi, lo), (own_hi, own_lo) = ends(sigmas), ends(own)
        same = math.isclose(hi, own_hi, rel_tol=1e-4) and math.isclose(lo, own_lo, rel_tol=1e-4)
        calls = len(sigmas) - 1
        if same and (found.sampler != "dpm_fast" or calls == n):
            return own
        options = ", ".join(f"{k}={v!r}" for k, v in found.options.items())
        got = f"σ {lo:.4g} … {hi:.4g}" + ("" if found.sampler != "dpm_fast" else f" in {calls} calls")
        want = f"σ {own_lo:.4g} … {own_hi:.4g}" + ("" if found.sampler != "dpm_fast" else f" in {n} calls")
        raise InvalidOption(f"{found.label!r} with schedule={schedule!r}: A1111's txt2img ignores the Schedule type for "
                            f"this sampler and runs on the model's whole range, {want}; {schedule!r} spans {got}, "
                            "which A1111 would not run. Leave the schedule out (of the call and of the name) for A1111's "
                            "result, or pass the registry "
                            f"sampler {found.sampler!r} to run on this schedule's range (its own defaults; in Python, "
                            f"sampler_options {options} give the label's settings)")

    def check_size(self, height, width) -> tuple[int, int]:
        """``(height, width)`` as ints, positive multiples of the VAE's down-sampling (any integer type is taken)."""
        return check_size(height, width, self.vae_config.downsample)

    def _latent_size(self, height: int, width: int) -> tuple[int, int]:
        height, width = self.check_size(height, width)  # names the nearest valid sizes
        return height // self.vae_config.downsample, width // self.vae_config.downsample

    def check_cost(self, batch: int, height: int, width: int, steps: int) -> None:
        """Refuse a request the machine cannot run: memory of one U-Net call (×2 with CFG's batched call) and of the
        VAE decode, against free memory; steps above :data:`MAX_STEPS`. Checked before any model call."""
        integer("steps", steps, lo=1, hi=MAX_STEPS)
        self.check_memory(batch, height, width)

    def check_memory(self, batch: int, height: int, width: int) -> None:
        """:meth:`check_cost`'s memory part: the size rule, then one U-Net call's and the VAE decode's memory."""
        h, w = self._latent_size(height, width)
        need = max(estimate_bytes(self.config, 2 * batch, h, w),
                   vae_mod.estimate_bytes(self.vae_config, batch, height, width))
        check_allocation(need, f"{batch} image(s) of {width}×{height}", "cpu",
                         fix=f"the shipped models were trained at {self.vae_config.image_size}×"
                             f"{self.vae_config.image_size}; use a smaller size or batch")

    @property
    def tokenizer(self) -> Tokenizer:
        """The text encoder's tokenizer, built from the U-Net's config (its vocabulary and ``max_length``): the rule
        the loaded encoder reads prompts by, with no weights."""
        text = self.config.text_config()
        return Tokenizer(text.vocab, text.max_length)

    def _check_prompt_lengths(self, prompts: Sequence[str]) -> None:
        tok = self.tokenizer
        for k, p in enumerate(prompts):
            words = len(tok.words(p))
            if words > tok.max_length - 1:
                raise InvalidInput(f"prompt {k} has {words} words but the text encoder reads at most "
                                   f"{tok.max_length - 1} (it would drop the rest); shorten it: {p!r}")

    def _prompts(self, prompt) -> list[str]:
        """``prompt`` (a string, or a non-empty list or tuple of strings) as a list, each within the encoder's length."""
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, (list, tuple)):
            bad = next(((k, p) for k, p in enumerate(prompt) if not isinstance(p, str)), None)
            if bad is not None:
                k, p = bad
                raise InvalidType(f"prompt must be a string or a list of strings, and prompt[{k}] is {p!r} "
                                  f"({type(p).__name__}); pass each prompt as a string")
            prompts = list(prompt)
        else:
            raise InvalidType(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        if not prompts:
            raise InvalidInput("no prompt given: pass a string, or a list of at least one string")
        self._check_prompt_lengths(prompts)
        return prompts

    def _refuse_twins(self, prompts: list[str], seeds: list[int], *inputs: torch.Tensor,
                      low_bits: bool = False) -> None:
        """Two items of one prompt and one seed (and the same input image and mask, where given) are one image made
        twice: refused, as a seed listed twice is by the CLI. One seed for different prompts (or images) is fine.
        Prompts are compared as the text encoder reads them (its tokenizer's ids: lower case, punctuation dropped,
        an unknown word its ``<unk>``), so "a red circle" and "A Red Circle!" are one prompt. With ``low_bits`` (a
        run whose every draw reads only a seed's low 32 bits: :func:`draws_low_bits_only`) seeds that differ by a
        multiple of 2**32 are one seed too."""
        tok = self.tokenizer
        seen: dict = {}
        for k, (prompt, seed) in enumerate(zip(prompts, seeds)):
            key = (tuple(tok.encode(prompt)), seed % CPU_SEEDS if low_bits else seed)
            for j in seen.setdefault(key, []):
                if all(t.shape[0] == 1 or torch.equal(t[j], t[k]) for t in inputs):
                    same = " and the same input" if inputs else ""
                    what = ("the same prompt" if prompts[j] == prompt else
                            f"prompts the text encoder reads as one ({prompts[j]!r} and {prompt!r}: it reads the "
                            "words in lower case, without punctuation, and an unknown word as <unk>)")
                    if seeds[j] == seed:
                        both = "the same prompt and seed" if prompts[j] == prompt else f"{what} and the same seed"
                        raise InvalidInput(f"items {j} and {k} have {both} ({seed}){same}: they "
                                           "would be the same image; give each item its own seed (an int seed s "
                                           "gives s, s + 1, …)")
                    raise InvalidInput(f"items {j} and {k} have {what}{same} and seeds {seeds[j]} and {seed}, "
                                       f"which differ by a multiple of 2**32: {_WHY_CPU_SEEDS}, so they would be "
                                       "the same image; give each item a seed that differs from the others' below "
                                       "2**32")
            seen[key].append(k)

    def _batch(self, prompt, batch: int | None, seed) -> tuple[list[str], list[int]]:
        prompts = self._prompts(prompt)
        if batch is not None:
            n = _batch_size(batch)
        else:
            n = len(seed) if is_seed_list(seed) and len(prompts) == 1 else len(prompts)
            _batch_size(n, "seeds" if is_seed_list(seed) and len(prompts) == 1 else "prompts")
        if len(prompts) == 1:
            prompts = prompts * n
        elif len(prompts) != n:
            raise InvalidInput(f"got {len(prompts)} prompts for a batch of {n}; pass one prompt, or one per item")
        return prompts, _checked_seeds(seed, n)

    def check_request(self, sampler: str | None = None, schedule: str | None = None, steps: int | None = None,
                      options: dict | None = None, seed=0, batch: int | None = None, height=64, width=64,
                      prompt=None) -> None:
        """The checks of a :meth:`Pipeline.txt2img` call that need no weights, in its order: the size, the prompt
        (where given: a string or one per item, each within the text encoder's length, by its tokenizer's rule), the
        batch and its seeds (two items of one prompt and one seed refused; ``batch=None`` is txt2img's: one item per
        prompt or seed, and 1 without a prompt), the sampler, schedule and steps (a fitted solver's record against
        this kind of model), the noise the sampler will build (its kind on this schedule: ``noise.for_run``), the
        memory."""
        h, w = self._latent_size(height, width)
        if prompt is not None:
            prompts, seeds = self._batch(prompt, batch, seed)
            batch = len(seeds)
        batch = _batch_size(1 if batch is None else batch)
        seeds = _checked_seeds(seed, batch)
        # plan_run checks a fitted solver's record against this kind of model too
        found, sigmas, options, _ = self.plan_run(sampler, schedule, steps, _sampler_options(options))
        if prompt is not None:  # two items of one prompt and seed (or seeds the run reads as one): one image twice
            self._refuse_twins(prompts, seeds, low_bits=draws_low_bits_only(found.sampler, options))
        self._check_run_noise(found, options, sigmas, (batch, self.vae_config.latent_channels, h, w), seeds)
        self.check_cost(batch, height, width, len(sigmas) - 1)


# U-Net config keys a model's identity leaves out (Pipeline.samplers_fingerprint): names, training and provenance
# records, the VAE's (the latents' decoding, not the denoiser), the defaults (cfg is folded in by the run's own), and
# the schedule's fields (folded in as the native schedule they make, whichever the prediction reads)
NOT_FUNCTION = frozenset({"name", "type", "caption_dropout", "vae", "defaults", "extra", "weights_sha256",
                          "weights_dtype", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                          "flow_shift", "flow_multiplier"})


class _Network(torch.nn.Module):
    """The U-Net as the native model ``samplers.to_denoiser`` converts: a module, so the conversion calls it in its
    parameters' dtype, as it calls any module model (fp16 / bf16 latents reach the float32 U-Net as float32; a bound
    method was called in the latents' dtype and failed on the first convolution). It counts its calls (the
    pipeline's ``nfe``) and names the model it is by the pipeline's ``samplers_fingerprint`` (which reads the weights
    with the config that makes them a function), not by its own state dict."""

    def __init__(self, unet: torch.nn.Module, fingerprint):
        super().__init__()
        self.unet = unet
        self.calls = 0
        self._fingerprint = fingerprint

    def samplers_fingerprint(self) -> str | None:
        return self._fingerprint()

    def forward(self, x_t: torch.Tensor, time: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.unet(x_t, time, context, mask)


class Pipeline(PipelineSpec):
    """A text-conditioned latent diffusion model ready for sampling. Build with :meth:`load`."""

    def __init__(self, model: DiffusionModel, vae: VAE):
        check_vae(model, vae)
        self.model = model.eval()
        self.vae = vae.eval()
        super().__init__(model.config, vae.config)
        self._network = _Network(model.unet, self.samplers_fingerprint)
        self._denoiser = samplers.to_denoiser(self._network, model.config.prediction, self.native)

    @property
    def nfe(self) -> int:
        """Network evaluations made so far (one per denoiser call; CFG's batched call counts once): counted, not
        estimated, so what a run cost is ``pipe.nfe`` after it minus before."""
        return self._network.calls

    @nfe.setter
    def nfe(self, value: int) -> None:
        self._network.calls = value

    @classmethod
    def load(cls, folder: str | Path | None = None, model: str | None = None,
             vae: str | Path | VAE | None = None) -> "Pipeline":
        """The U-Net in ``folder`` (default: the shipped ``models/weights/<model>``, ``model`` eps by default) with
        its VAE (``vae``: a folder or a VAE; default the shipped one). With a folder, ``model`` (if given) is what
        the folder must hold: a U-Net of that prediction type."""
        folder, model, hint = _unet_folder(folder, model)
        vae = _vae_folder(vae)
        unet = DiffusionModel.load(folder, reproduce_hint=hint)
        _check_kind(model, folder, unet.config.prediction)
        if not isinstance(vae, VAE):
            vae = VAE.load(vae)
        unet.requires_grad_(False)  # for sampling: a call outside no_grad (a fit through the network) builds no
        vae.requires_grad_(False)   # graph into the weights
        return cls(unet, vae)

    # ------------------------------------------------------------------------------------ building blocks

    @property
    def tokenizer(self) -> Tokenizer:
        """The loaded text encoder's own tokenizer (the one :meth:`PipelineSpec.tokenizer` builds from the config)."""
        return self.model.text_encoder.tokenizer

    def _model_fn(self, x_t: torch.Tensor, time: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The U-Net's native call, counted in :attr:`nfe`."""
        return self._network(x_t, time, context, mask)

    @torch.no_grad()
    def encode_prompts(self, prompts: str | Sequence[str]) -> dict:
        """The text encoder's ``{"context", "mask"}`` for ``prompts``, checked as :meth:`txt2img` checks them (a
        string or a non-empty list of strings, each within the encoder's word limit: a longer one is refused, not
        cut) before any is encoded."""
        context, mask = self.model.encode_text(self._prompts(prompts))
        return {"context": context, "mask": mask}

    def denoiser(self, prompt: str | Sequence[str], cfg: float | None = None):
        """The registry denoiser ``D(x, sigma)`` for ``prompt`` (one, broadcast to x's batch, or one per item)
        with classifier-free guidance ``cfg`` (1 = none; default: the model's measured default). The prompts are
        checked as :meth:`txt2img` checks them (a string or a non-empty list of strings) before any is encoded."""
        prompts = self._prompts(prompt)
        cfg = self.guidance(cfg)
        return CFGDenoiser(self._denoiser, self.encode_prompts(prompts), self.encode_prompts([""]), cfg,
                           channels=self.config.latent_channels)

    def guidance(self, cfg) -> float:
        """The classifier-free guidance scale: a finite number with |cfg| <= 100 (ComfyUI's CFG widget maximum;
        1 = none), or None for the model's default."""
        if cfg is None:
            return float(self.defaults["cfg"])
        from samplers.core.argtypes import cfg_problem

        value = real("cfg", cfg, allow_inf=True)  # NaN refused here, ±inf by the rule below
        problem = cfg_problem(value)
        if problem is not None:
            raise InvalidOption(f"cfg = {problem}")
        return value

    def samplers_fingerprint(self) -> str | None:
        """Which model this pipeline's denoiser is (:mod:`samplers.fitted.identity` reads it through the denoiser):
        the U-Net's weights (:func:`~samplers.fitted.identity.module_fingerprint`, a ``torch.compile``'d one as the
        module it compiles) with what its config makes of them — its native noise schedule (the σ each time input
        means: a copy with another ``beta_end`` is another model) and every other setting but those that do not
        change its function (:data:`NOT_FUNCTION`). None for a U-Net without weights."""
        import hashlib
        import json

        from samplers.fitted import identity

        weights = identity.module_fingerprint(self.model)
        if weights is None:
            return None
        function = {k: v for k, v in self.config.to_dict().items() if k not in NOT_FUNCTION}
        text = json.dumps({**function, "schedule": identity.schedule_key(self.native)}, sort_keys=True, default=str)
        return hashlib.sha256(f"{weights}|{text}".encode()).hexdigest()

    def identity(self, cfg=None) -> str | None:
        """The fingerprint of this pipeline's denoiser at guidance ``cfg`` (default: the model's), as
        :func:`samplers.fitted.identity.fingerprint` reads it off :meth:`denoiser`'s result: without encoding a
        prompt."""
        from samplers.fitted import identity

        return identity.with_guidance(identity.fingerprint(self._denoiser), self.guidance(cfg))

    def check_fitted(self, solver, cfg=None, allow_other_model: bool = False, source: str | None = None) -> str | None:
        """Refuse a fitted solver (:class:`samplers.fitted.solver.LearnedSolver`) that does not suit this model at
        guidance ``cfg``: another model's (unless ``allow_other_model``), or one that starts at σ = ∞ on a model
        that cannot be evaluated there. Cheap (one hash of the weights, where the solver records a fingerprint to
        compare and ``allow_other_model`` is off); :meth:`plan` runs it before any prompt is encoded. Returns the
        fingerprint it compared (None where it hashed nothing)."""
        compared = solver.model.get("fingerprint") is not None and not allow_other_model
        known = {"fingerprint": self.identity(cfg)} if compared else {}
        solver.check_model(allow_other_model=allow_other_model, prediction=self._denoiser.prediction,
                           supports_infinite_sigma=self._denoiser.supports_infinite_sigma, source=source, **known)
        return known.get("fingerprint")

    def plan(self, sampler: str | None, schedule: str | None, steps: int | None, options: dict, cfg=None,
             txt2img: bool = True):
        """``(sampler name, sigmas, options)`` of a run: the name resolved (A1111 / ComfyUI labels included), the
        schedule it implies unless ``schedule`` is given (a contradiction is an error), the options merged. A
        fitted solver is checked against this model at guidance ``cfg`` (default: the model's) here, before any
        prompt is encoded (:meth:`check_fitted`)."""
        found, sigmas, options, _ = self._planned(sampler, schedule, steps, options, cfg, txt2img)
        return found.sampler, sigmas, options

    def _planned(self, sampler, schedule, steps, options: dict, cfg=None, txt2img: bool = True):
        """:meth:`plan` with the label found in place of its sampler's name (a task runs a ComfyUI name's own rule on
        a flow model: :meth:`runs_comfyui_flow_rule`), and the fingerprint a fitted solver was compared with (or
        None): ``(found, sigmas, options, fingerprint)``."""
        found, sigmas, options, solver = self.plan_run(sampler, schedule, steps, options, txt2img)
        known = None
        if solver is not None:
            known = self.check_fitted(solver, cfg, options.get("allow_other_model", False),
                                      found.label if found.source == "fitted" else None)
        return found, sigmas, options, known

    def _guided(self, prompts: list[str], cfg: float, known: str | None):
        """:meth:`denoiser` of a task's run. ``known``: the fingerprint :meth:`check_fitted` computed for this model
        at this ``cfg`` before the run, which the denoiser then names itself by (``samplers_fingerprint``, read first
        by :func:`samplers.fitted.identity.fingerprint`), so that the run's own check of the solver compares it
        without hashing the weights again."""
        denoiser = self.denoiser(prompts, cfg)
        if known is not None:
            denoiser.samplers_fingerprint = known
        return denoiser

    @staticmethod
    def _check_strength(sampler: str, options: dict, strength: float) -> None:
        """A fitted solver runs on all of its own σ nodes: img2img / inpaint with ``strength < 1`` would cut them."""
        if strength < 1 and sampler == "learned_multistep" and options.get("solver") is not None:
            from samplers.fitted.solver import late_start_refusal

            raise InvalidInput(late_start_refusal("a fitted solver", f"strength={strength:g}"))

    @staticmethod
    def _cut(sigmas: torch.Tensor, strength: float, start: str) -> torch.Tensor:
        """The part of the run's schedule img2img / inpaint run at ``strength`` (``schedules.truncate``, unchanged),
        refused where it is not what ``strength`` asks: a strength under half a step (truncate would run a whole step
        anyway), or one below 1 whose cut still starts at σ = inf (``start`` from pure noise: the image would not
        shape the result).

        Counted in the schedule's own steps, ``len(sigmas) - 1``, which the messages name as such: not always the
        ``steps=`` asked for (A1111's "DDIM" / "PLMS" at a step count that divides 1000 have one fewer: steps=10 is
        9), so a fix of more steps is worded as the schedule's count, which a larger ``steps=`` reaches."""
        steps = len(sigmas) - 1
        from_inf = math.isinf(float(sigmas[0]))  # all n steps from σ = inf is pure noise: refused below but at 1
        if rounded_steps(strength, steps) < 1:
            more = next((n for n in range(steps + 1, MAX_STEPS + 1)
                         if 1 <= rounded_steps(strength, n) < (n if from_inf else n + 1)), None)
            if not from_inf:
                fix = f"a strength above {0.5 / steps:g} (strength={1 / steps:g} runs one step)"
            elif steps > 1:  # a strength that runs some steps but not all of them, or all from pure noise
                fix = (f"a strength above {0.5 / steps:g} and below {(steps - 0.5) / steps:g} (strength={1 / steps:g} "
                       "runs one step; this schedule starts at σ = inf, where all of its steps start from pure noise), "
                       "or strength=1 for a run from pure noise")
            else:
                fix = "strength=1 for a run from pure noise (this schedule's one step starts at σ = inf)"
            raise InvalidInput(
                f"strength={strength:g} on the run's schedule of {steps} steps is {strength * steps:.3g} of a step, "
                f"which rounds to no step (img2img and inpaint run round(strength · n) of the schedule's n steps), and "
                f"a whole step would be more than was asked; pass {fix}"
                + ("" if more is None else f", or a steps= whose schedule has at least {more} steps"))
        cut = samplers.schedules.truncate(sigmas, strength)
        if strength < 1 and math.isinf(float(cut[0])):
            fixes = []
            more = next((n for n in range(steps + 1, MAX_STEPS + 1) if rounded_steps(strength, n) < n), None)
            if more is not None:
                fixes.append(f"more steps (a steps= whose schedule has at least {more})")
            if steps > 1:
                fixes.append(f"a lower strength (at most {(steps - 1) / steps:g}, which runs {steps - 1} of the "
                             f"{steps} steps)")
            fixes.append("strength=1 for a run from pure noise")
            raise InvalidInput(
                f"strength={strength:g} on the run's schedule of {steps} steps rounds to all {steps} (round(strength · "
                f"n)), and "
                f"this schedule starts at σ = inf: {start} would be pure noise, so the image would not shape the "
                f"result; pass {', or '.join(fixes)}")
        return cut

    def _sample(self, denoiser_for, x, sigmas, sampler, seeds, progress, options, found=None, callback=None):
        """The run of ``sampler`` from ``x``, item k with seed ``seeds[k]``; ``denoiser_for(items)`` builds the
        denoiser of the batch's ``items`` (a slice: their prompts, and an inpainting's known latent and mask).
        ``callback`` gets the sampler's dict per step: the whole batch's tensors where the batch runs in one call.

        Where the sampler's steps depend on the batch (:func:`runs_items_alone`) each item runs on its own, as it
        would be made alone. ``info=`` then holds each item's dict under ``"items"`` and their numbers added up; a
        ``callback`` is called for each item's run in turn, with ``"item": k`` in its dict."""
        spec = samplers.core.registry.SAMPLERS.get(sampler)
        if not runs_items_alone(sampler) or x.shape[0] == 1:
            return self._run(denoiser_for(slice(None)), x, sigmas, spec, seeds, progress, options, found, callback)
        info = options.get("info")
        runs, latents = [], []
        for k in range(x.shape[0]):
            own = dict(options)
            if isinstance(info, dict):
                runs.append({})
                own["info"] = runs[-1]
            item_callback = None if callback is None else (lambda d, k=k: callback({**d, "item": k}))
            latents.append(self._run(denoiser_for(slice(k, k + 1)), x[k:k + 1], sigmas, spec, seeds[k:k + 1],
                                     progress, own, found, item_callback))
        if isinstance(info, dict):
            numbers = {key for run in runs for key, v in run.items() if isinstance(v, (int, float))}
            info.update({key: sum(run.get(key, 0) for run in runs) for key in numbers}, items=runs)
        return torch.cat(latents)

    def _encode(self, images: torch.Tensor, sampler: str) -> torch.Tensor:
        """The latents of ``images``, in one batch; for a sampler that runs each item on its own
        (:func:`runs_items_alone`) each image on its own, as it is encoded alone: the encoder's batched arithmetic
        (some 1e-6) can turn an adaptive step's accept-or-reject decision, and with it the image."""
        if images.shape[0] > 1 and runs_items_alone(sampler):
            return torch.cat([self.vae.to_latent(image[None]) for image in images])
        return self.vae.to_latent(images)

    def _run(self, denoiser, x, sigmas, spec, seeds, progress, options, found=None, callback=None):
        # the items' seeds seed whatever noise the sampler draws: its own, or a kind named by the caller or the
        # label (the A1111 / ComfyUI SDE labels imply "brownian_tree"); only noise the caller draws goes without
        if "seed" in spec.options and isinstance(options.get("noise_sampler"), (str, type(None))):
            options = {**options, "seed": seeds}
        if found is not None and self.runs_comfyui_flow_rule(found):
            from samplers.interop.comfyui import run_on_flow_model

            return run_on_flow_model(f"comfyui:{found.label}", denoiser, x, sigmas, self.native.shift,
                                     disable=not progress, callback=callback, **_callers(found, options))
        return samplers.sample(spec.name, denoiser, x, sigmas, disable=not progress, callback=callback, **options)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output: str = "pil"):
        images = self.vae.from_latent(latents)
        if output == "tensor":
            return images
        if output == "pil":
            return [data.to_pil(im) for im in images]
        raise InvalidInput(f"output must be 'pil' or 'tensor', got {output!r}")

    def request(self, prompt: str, sampler: str | None = None, schedule: str | None = None, steps: int | None = None,
                cfg: float | None = None, seed: int = 0, width: int = 64, height: int = 64, options: dict | None = None,
                **extra) -> dict:
        """One image's request as :func:`save_images` records it in its PNG: the prompt, the sampler (the name given,
        or the model's default), the schedule it runs on (its label's, the model's default, or ``"fitted"``: a
        fitted solver's own nodes), steps, cfg, seed, size, the sampler options, ``rng="CPU"`` (every image's starting
        noise is A1111's "CPU" source's first draw, and A1111 reads an infotext without RNG as its "GPU" one), the
        model (its name and weights' sha256) and the library version; ``extra``: img2img / inpaint's ``strength=``
        (A1111's "Denoising strength"), the one keyword of a run besides these that the infotext holds.

        The prompt, seed, size and strength are checked by the run's own rules (:meth:`_prompts`, ``resolve_seeds``,
        :meth:`check_size`, :func:`_strength` and the schedule's cut, :meth:`_cut`), and so are the sampler and its
        options (a dict, or None), with the noise the run draws on its schedule (:meth:`plan_run`, txt2img's) or on
        the strength's cut (img2img / inpaint's), so a PNG never records one the run would refuse, nor another (a
        seed of 1.9 recorded as 1). The seed is the image's own: ``seed=None``, which
        the run reads as "draw one", is refused here, where there is nothing to draw. Any other keyword is refused
        (:func:`_check_extras`): ``negative_prompt``, which the run refuses, and any the infotext has no field for,
        which the JSON chunk would have recorded and the infotext dropped."""
        _check_extras(extra)
        options = _sampler_options(options)
        height, width = self.check_size(height, width)
        if not isinstance(prompt, str):
            raise InvalidType(f"request records one image's prompt: a string, got {type(prompt).__name__}; make one "
                              "request per image")
        self._prompts(prompt)  # within the text encoder's length, as the run checks it
        if seed is None:
            raise InvalidInput("request records the seed an image was made with, and seed=None means a seed drawn by "
                               "the run; pass the image's seed (draw it yourself and pass it to the run as well)")
        seed = resolve_seeds(seed, 1)[0]  # an int >= 0 (or a list of one), as the run reads it
        txt2img = "strength" not in extra
        if not txt2img:  # a real number in (0, 1], read as img2img / inpaint read it, before the run is planned
            strength = _strength(extra["strength"], "1 = the whole schedule, as img2img and inpaint read it")
        # planned and checked as the run plans and checks it (txt2img's: the noise on the whole schedule, a Brownian
        # tree from σ = inf, a restart entry outside the tree's range, A1111's model range, the σ table): an option
        # the run would refuse is refused here, not written into a PNG as if it had run
        found, schedule, sigmas, merged, _ = self._plan_run(sampler, schedule, steps, dict(options), txt2img)
        # the caller's options the run runs with: not A1111's default settings that its label drops (names.md); a
        # number given as a 0-d tensor or a numpy scalar, which the run reads as its value, recorded as that value
        options = {k: _recorded_value(v) for k, v in options.items() if k in merged}
        if not txt2img:
            extra = {**extra, "strength": self._recorded_strength(found, sigmas, merged, strength)}
        if found.sigmas is not None:
            schedule, steps = "fitted", len(found.sigmas) - 1
        # every image starts from seeded_randn, A1111's "CPU" source's first draw (ImageRNG.first), which the A1111
        # labels' own draws continue ("a1111_cpu"): recorded as A1111 records that source, whatever the sampler.
        # A1111 writes RNG for every source but its "GPU" one, and reads an infotext without it as GPU noise
        extra = {"rng": "CPU", **extra}
        return {"prompt": prompt, "sampler": self.defaults["sampler"] if sampler is None else sampler,
                "schedule": self.default_schedule if schedule is None else schedule,
                "steps": self.defaults["steps"] if steps is None else int(steps), "cfg": self.guidance(cfg),
                "seed": seed, "width": width, "height": height, "options": options, **extra,
                "model": self.config.name, "model_sha256": self.model.weights_sha256, "version": library_version()}

    def _recorded_strength(self, found, sigmas, options: dict, strength: float) -> float:
        """The ``strength`` (already :func:`_strength`'s real number in (0, 1]) a request records for a run planned as
        img2img / inpaint plan it (``found``, ``sigmas``, ``options``), as they check it: one a fitted solver runs
        (:meth:`_check_strength`: only 1), one the run's schedule can be cut at (:meth:`_cut`: at least half a step,
        and not all of a schedule that starts at σ = inf), and one whose cut the run's noise can be drawn on
        (:meth:`_check_run_noise`: a ``restart`` entry drawing outside the Brownian tree of the cut, a tree kind on a
        cut from σ = inf)."""
        self._check_strength(found.sampler, options, strength)
        self._check_run_noise(found, options, self._cut(sigmas, strength, "the start"))
        return strength

    # ----------------------------------------------------------------------------------------- tasks

    @torch.no_grad()
    def txt2img(self, prompt: str | Sequence[str], sampler: str | None = None, schedule: str | None = None,
                steps: int | None = None, cfg: float | None = None, seed: int | Sequence[int] | None = None,
                width: int = 64, height: int = 64, batch: int | None = None, progress: bool = True,
                output: str = "pil", callback=None, **sampler_options):
        """Images for ``prompt`` (one string for the whole batch, or one per item); one seed per item
        (an int ``s`` means seeds s, s+1, …)."""
        height, width = self.check_size(height, width)
        h, w = self._latent_size(height, width)
        prompts, seeds = self._batch(prompt, batch, seed)
        _check_output(output)
        _check_progress(progress)
        check_callback(callback)  # before any model call: the run's own check comes after the encoding
        cfg = self.guidance(cfg)
        found, sigmas, options, fingerprint = self._planned(sampler, schedule, steps, sampler_options, cfg)
        sampler = found.sampler
        self._refuse_twins(prompts, seeds, low_bits=draws_low_bits_only(sampler, options))
        self._check_run_noise(found, options, sigmas, (len(seeds), self.vae.latent_channels, h, w), seeds)
        self.check_cost(len(seeds), height, width, len(sigmas) - 1)
        seeds = _run_seeds(seed, seeds)  # seed=None's draw: after every check
        noise = seeded_randn((len(seeds), self.vae.latent_channels, h, w), seeds)
        # vp_state (A1111's "DDIM" / "PLMS"): the sampler takes the VP state, x_T = the unit noise itself
        x = noise if options.get("vp_state") else samplers.initial_latent(noise, sigmas)
        latents = self._sample(lambda items: self._guided(prompts[items], cfg, fingerprint), x, sigmas, sampler, seeds,
                               progress, options, found, callback)
        return self.decode(latents, output)

    @torch.no_grad()
    def img2img(self, images, prompt: str | Sequence[str], strength: float = 0.6, sampler: str | None = None,
                schedule: str | None = None, steps: int | None = None, cfg: float | None = None,
                seed: int | Sequence[int] | None = None, progress: bool = True, output: str = "pil",
                image_range: tuple[int, int] | None = None, callback=None, **sampler_options):
        """Re-noise the encoded images to where ``strength`` ∈ (0, 1] of the schedule remains, then sample.
        ``steps`` counts the whole schedule; about ``strength · steps`` of them run. ``images``: PIL images, or float
        tensors in [-1, 1] — a tensor with no negative value is refused as ambiguous unless ``image_range`` says what
        its values mean: ``(0, 1)`` (torchvision's ToTensor, diffusers' image processor; read as t * 2 - 1) or
        ``(-1, 1)``."""
        strength = _strength(strength, "1 = the whole schedule: the image noised to its top σ, as diffusers' img2img")
        _refuse_size_options(sampler_options, "img2img")
        images = _as_image_batch(images, image_range, self.check_memory)
        self._latent_size(images.shape[-2], images.shape[-1])
        prompts, seeds = self._batch(prompt, images.shape[0] if images.shape[0] > 1 else None, seed)
        _check_output(output)
        _check_progress(progress)
        check_callback(callback)  # before any model call: the run's own check comes after the encoding
        cfg = self.guidance(cfg)
        found, sigmas, options, fingerprint = self._planned(sampler, schedule, steps, sampler_options, cfg,
                                                            txt2img=False)
        sampler = found.sampler
        self._refuse_twins(prompts, seeds, images, low_bits=draws_low_bits_only(sampler, options))
        self._check_strength(sampler, options, strength)
        h, w = self._latent_size(images.shape[-2], images.shape[-1])
        cut = self._cut(sigmas, strength, "the start")
        self._check_run_noise(found, options, cut, (len(seeds), self.vae.latent_channels, h, w), seeds)
        self.check_cost(len(seeds), images.shape[-2], images.shape[-1], len(sigmas) - 1)
        latent = self._encode(images, sampler)  # encoded once, after every check
        if latent.shape[0] == 1 and len(seeds) > 1:
            latent = latent.expand(len(seeds), *latent.shape[1:])
        sigmas = cut
        seeds = _run_seeds(seed, seeds)  # seed=None's draw: after every check
        noise = seeded_randn(tuple(latent.shape), seeds)
        x = noise if math.isinf(float(sigmas[0])) else latent + float(sigmas[0]) * noise
        x = _as_state(x, sigmas, options)
        latents = self._sample(lambda items: self._guided(prompts[items], cfg, fingerprint), x, sigmas, sampler, seeds,
                               progress, options, found, callback)
        return self.decode(latents, output)

    @torch.no_grad()
    def inpaint(self, image, mask, prompt: str | Sequence[str], strength: float = 1.0, sampler: str | None = None,
                schedule: str | None = None, steps: int | None = None, cfg: float | None = None,
                seed: int | Sequence[int] | None = None, progress: bool = True, output: str = "pil",
                image_range: tuple[int, int] | None = None, callback=None, **sampler_options):
        """Regenerate where ``mask`` is 1 (white), keep the rest. The mask is max-pooled to latent
        resolution (a latent pixel touching the hole is regenerated); the known latent is re-imposed at
        every step (``InpaintDenoiser``) and put back into the final latent before it is decoded (as A1111 does:
        its "DDIM" / "PLMS" end above σ = 0, still noisy there); the decoded result is pasted outside the mask in
        pixel space, so the known region is returned exactly. ``image`` and ``image_range`` as :meth:`img2img` takes
        them."""
        strength = _strength(strength, "1 = regenerate the masked region from pure noise")
        _refuse_size_options(sampler_options, "inpaint")
        images = _as_image_batch(image, image_range, self.check_memory)
        H, W = images.shape[-2:]
        self._latent_size(H, W)
        prompts, seeds = self._batch(prompt, images.shape[0] if images.shape[0] > 1 else None, seed)
        n = len(seeds)
        images = images.expand(n, *images.shape[1:]) if images.shape[0] == 1 else images
        pixel_mask = _as_mask(mask, n, H, W)
        latent_mask = (F.max_pool2d(pixel_mask, self.vae.downsample) > 0.5).float()
        _check_output(output)
        _check_progress(progress)
        check_callback(callback)  # before any model call: the run's own check comes after the encoding
        cfg = self.guidance(cfg)
        found, sigmas, options, fingerprint = self._planned(sampler, schedule, steps, sampler_options, cfg,
                                                            txt2img=False)
        sampler = found.sampler
        self._refuse_twins(prompts, seeds, images, pixel_mask, low_bits=draws_low_bits_only(sampler, options))
        self._check_strength(sampler, options, strength)
        cut = self._cut(sigmas, strength, "the masked region's start")
        self._check_run_noise(found, options, cut, (n, self.vae.latent_channels, *self._latent_size(H, W)), seeds)
        self.check_cost(n, H, W, len(sigmas) - 1)
        _check_regenerates(pixel_mask)
        known = self._encode(images, sampler)  # encoded after every check
        sigmas = cut
        seeds = _run_seeds(seed, seeds)  # seed=None's draw: after every check
        noise = seeded_randn(tuple(known.shape), seeds)
        # strength 1 starts from pure noise, as diffusers' inpaint does (not the known latent noised to σ_max)
        top = strength == 1 or math.isinf(float(sigmas[0]))
        if top and options.get("vp_state"):
            x = noise  # A1111's x_T: the unit noise is the VP state at the top
        else:
            x = _as_state(samplers.initial_latent(noise, sigmas) if top else known + float(sigmas[0]) * noise, sigmas,
                          options)
        def denoiser(items):
            return InpaintDenoiser(self._guided(prompts[items], cfg, fingerprint), known[items], latent_mask[items],
                                   noise[items])

        latents = self._sample(denoiser, x, sigmas, sampler, seeds, progress, options, found, callback)
        # the kept region's latent put back before decoding, as A1111 does after every sampler
        # (StableDiffusionProcessingImg2Img.sample: samples * nmask + init_latent * mask): a run that ends at σ = 0
        # already holds it exactly there (InpaintDenoiser), but A1111's "DDIM" / "PLMS" stop at timestep 1 (σ ≈ 0.03)
        # and return a state whose kept region is still noisy, which the decoder reads at the seam (0.139 in the
        # latent on the shipped eps model at 20 steps, up to 3/255 in the regenerated pixels beside it)
        latents = torch.where(latent_mask.bool(), latents, known.to(latents.dtype))
        hard = (pixel_mask > 0.5).float()
        out = hard * self.vae.from_latent(latents) + (1 - hard) * images
        if output == "tensor":
            return out
        if output == "pil":
            return [data.to_pil(im) for im in out]
        raise InvalidInput(f"output must be 'pil' or 'tensor', got {output!r}")


# PNG text chunks save_images writes: A1111's infotext (what A1111, its forks and image sites read), and the request
PARAMETERS_CHUNK = "parameters"
REQUEST_CHUNK = "request"
_INFOTEXT_KEYS = {"steps": "Steps", "sampler": "Sampler", "schedule": "Schedule type", "cfg": "CFG scale",
                  "seed": "Seed", "size": "Size", "model_hash": "Model hash", "model": "Model",
                  "strength": "Denoising strength", "rng": "RNG"}


def library_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("diffusion-samplers")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _quote(value) -> str:
    """A value of an infotext as A1111's ``infotext_utils.quote`` writes it: as it is, or JSON-quoted where it holds a
    comma, a colon or a line break (which would end its field); a list or dict as JSON first."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def infotext(request: dict) -> str:
    """A1111's infotext of one image's ``request`` (:meth:`Pipeline.request`), as its ``create_infotext`` writes it:
    the prompt, then a line ``Steps: 20, Sampler: dpmpp_2m, Schedule type: karras, CFG scale: 4.0, Seed: 0, Size:
    64x64, Model hash: …, Model: unet-eps, RNG: CPU``, then the sampler options and ``Version``."""
    fields = {"size": f"{request['width']}x{request['height']}" if "width" in request and "height" in request else None,
              "model_hash": (request.get("model_sha256") or "")[:10] or None}  # A1111's short hash: 10 hex digits
    params = {label: fields.get(key, request.get(key)) for key, label in _INFOTEXT_KEYS.items()}
    params["Schedule type"] = _a1111_schedule_type(params["Schedule type"])
    a1111 = _is_a1111_label(request.get("sampler"))
    if a1111:  # A1111's own spelling of the label, the one its reader runs
        params["Sampler"] = _a1111_sampler_label(request["sampler"])
    for k, v in (request.get("options") or {}).items():
        params[_a1111_option_key(k, request.get("sampler")) if a1111 else k] = v
    params["Version"] = f"diffusion-samplers {request['version']}" if request.get("version") else None
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    return f"{request.get('prompt', '')}\n{line}".strip()


# A1111's infotext names of its sampler settings (modules/shared_options.py OptionInfo(..., infotext=...)), which its
# PNG-info reads back into the settings; eta is "Eta" for the k-diffusion samplers, "Eta DDIM" for its DDIM
_A1111_OPTION_KEYS = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax",
                      "s_noise": "Sigma noise", "eta": "Eta"}


def _is_a1111_label(sampler) -> bool:
    """Whether ``sampler`` names an A1111 label (a fitted file or another prefix is not read: not A1111's)."""
    if not isinstance(sampler, str) or names.name_prefix(sampler) not in (None, "a1111"):
        return False
    try:
        return names.resolve(sampler).source == "a1111"
    except (InvalidInput, Unavailable):  # a name the run would refuse (unknown, or refused by name): not A1111's
        return False


def _a1111_sampler_label(sampler: str) -> str:
    """An A1111 label as A1111 spells it (``names.resolve``'s label: no ``a1111:`` prefix, its case and spaces), its
    old ``k_`` alias as the name it stands for: A1111 1.9+ reads the infotext's Sampler in its map of names only, and
    runs its first sampler, DPM++ 2M, for any other spelling (``k_lms``, ``a1111:LMS``, ``dpm2 a`` were written as
    typed, and read back as DPM++ 2M)."""
    label = names.resolve(sampler).label
    if label.startswith("k_"):
        label = next(k for k, v in labels.A1111.items() if v == labels.A1111[label] and not k.startswith("k_"))
    return label


def _a1111_option_key(key: str, sampler: str) -> str:
    """The infotext key A1111 writes (and reads) for a sampler option under an A1111 label; a library-only option
    keeps its own name."""
    if key == "eta" and names.resolve(sampler).sampler == "ddim":
        return "Eta DDIM"
    return _A1111_OPTION_KEYS.get(key, key)


def _a1111_schedule_type(schedule):
    """The Schedule type as A1111's infotext writes it (create_infotext: ``p.scheduler``, the type's label): an
    ``a1111:<type>`` schedule as the label ("Karras"), which A1111's PNG-info reads back; the schedules A1111's
    labels run of their own (DDIM / PLMS's timesteps, LCM's) as "Automatic" (the type A1111 records for them). Any
    other name as this library names it (A1111 reads a name its sd_schedulers.schedulers_map holds, "karras", as that
    type, and falls back to Automatic for the others, "linspace": docs/models.md), but a name A1111 holds for another
    rule than the one that ran (:func:`_not_misread`: "beta", "kl_optimal")."""
    if not isinstance(schedule, str):
        return schedule
    if names.name_prefix(schedule) != "a1111":
        return _not_misread(schedule)
    rest = _normalise(schedule.split(":", 1)[1])
    if rest in {_normalise(k) for k in labels.A1111_LABEL_SCHEDULES}:
        return "Automatic"
    return next((k for k in labels.A1111_SCHEDULE_TYPES if _normalise(k) == rest), schedule)


def _a1111_held(name: str) -> str | None:
    """The A1111 Schedule type whose label, name or alias ``name`` is, spelt exactly so (its schedulers_map's keys,
    which its PNG-info and API look ``p.scheduler`` up in); None for a name A1111 does not hold."""
    return next((k for k, spellings in labels.A1111_SCHEDULE_TYPES.items() if name in (k, *spellings)), None)


def _not_misread(schedule: str) -> str:
    """``schedule`` as the infotext writes it where A1111 would read it as its own type of that name and that type is
    another rule than the one this library ran: ``beta`` (ComfyUI's Beta over the training timesteps here, A1111's
    Beta quantiles in σ: 13.516 against 14.415 as the second σ of SD 1.x at 20 steps) and ``kl_optimal`` (the
    registry's, ending at 0, where A1111's KL Optimal ends at σ_min). Those are written in a spelling of the schedule
    that ran which A1111 does not hold (``beta_timesteps``, ``kl-optimal``) and this library reads as that schedule:
    A1111 falls back to Automatic on it, as on every name it does not know, rather than run another schedule. The
    rules are compared by name and options, not on a model: the names that agree (``karras``, ``exponential``,
    ``sgm_uniform``, ``simple``, ``normal``, ...) agree within 1e-5 on a discrete model's float32 table, which A1111
    reads."""
    kind = _a1111_held(schedule)
    if kind in (None, "Automatic"):
        return schedule
    ran = names.resolve_schedule(schedule)
    if ran == names.resolve_schedule(f"a1111:{kind}"):
        return schedule
    name, options = ran
    spelling = next((s for s in (name, name.replace("_", "-")) if not options and _a1111_held(s) is None
                     and names.resolve_schedule(s) == ran), None)
    return spelling if spelling is not None else f"{schedule} (not A1111's {kind})"


def png_info(request: dict, record=None):
    """PIL's ``PngInfo`` for an image made by ``request``: A1111's infotext in a ``parameters`` text chunk, and
    ``record`` (default: the request) as JSON in a ``request`` one (a fitted solver given as an object,
    ``options={"solver": LearnedSolver}``, as its content, :meth:`~samplers.fitted.solver.LearnedSolver.record`,
    which every entry point reads back as the solver; any other value JSON cannot hold, a noise sampler object say,
    as its repr)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # UTF-8 text, whatever the request holds: a name Python read from bytes that are not UTF-8 is written escaped
    # (\xff), never an error after the run that loses its image
    info.add_text(PARAMETERS_CHUNK, _shown(infotext(request)))
    info.add_text(REQUEST_CHUNK, json.dumps(request if record is None else record, default=_json_value))  # \udcff
    return info


def _recorded_value(value):
    """An option's value as a request records it: a 0-d tensor or numpy scalar as the Python number the run reads
    (``torch.tensor(0.1235)`` was written ``tensor(0.1235)``: four decimals, and no number A1111 reads); anything
    else as it is."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    return value.item() if isinstance(value, np.generic) else value


def _json_value(value):
    """A value of a request as its JSON chunk records it (:func:`png_info`): a ``LearnedSolver`` as its record (its
    repr, for messages, names neither its weights nor its σ: the image could not be made again), anything else that
    JSON cannot hold as its repr."""
    from samplers.fitted.solver import LearnedSolver

    return value.record() if isinstance(value, LearnedSolver) else repr(value)


def _check_pil_images(images: list) -> None:
    """Refuse, before any file is written, an item that is not a PIL image: a tensor (``output="tensor"``'s
    [B, 3, H, W] in [-1, 1] iterates as [3, H, W] tensors), an array or anything else, which PNG writing would fail
    on after the first files were written."""
    from PIL import Image

    bad = next(((k, im) for k, im in enumerate(images) if not isinstance(im, Image.Image)), None)
    if bad is not None:
        k, im = bad
        what = f"a {tuple(im.shape)} {type(im).__name__}" if hasattr(im, "shape") else type(im).__name__
        raise InvalidType(f"save_images writes PIL images, and image {k} is {what}; make the images with "
                          "output=\"pil\" (the default), or convert a [3, H, W] tensor in [-1, 1] with "
                          "models.data.to_pil(t)")


def save_images(images, path: str | Path, requests: Sequence[dict] | None = None) -> list[Path]:
    """Write PIL images atomically as PNG: one to ``path``, several to ``<stem>-<k>.png`` beside it (anything but a
    PIL image refused first: make tensors PIL images with ``models.data.to_pil``). ``path`` is
    checked before the first image is written, by the rule of the CLI's ``--out`` (:func:`models.io.check_png_path`):
    at least one image, a ``.png`` name that is not a folder, in an existing folder this process can write in.
    ``requests``, one per image (:meth:`Pipeline.request`), are written into each PNG (:func:`png_info`)."""
    images = list(images)
    _check_pil_images(images)
    path = mio.check_png_path(path, len(images), "path")
    if requests is not None and (isinstance(requests, dict) or len(requests) != len(images)):
        got = "a dict" if isinstance(requests, dict) else f"{len(requests)}"
        raise InvalidInput(f"requests holds one request per image: got {got} for {len(images)} image(s); pass a list "
                           "of len(images) dicts (Pipeline.request), or leave requests out")
    infos = [None] * len(images) if requests is None else [png_info(r) for r in requests]
    if len(images) == 1:
        return [mio.atomic_save_image(path, images[0], infos[0])]
    return [mio.atomic_save_image(mio.numbered(path, k), im, info) for k, (im, info) in enumerate(zip(images, infos))]

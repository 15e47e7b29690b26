"""Procedural captioned scenes: coloured shapes on a dark textured background, any number, on the fly.

Every scene is deterministic from a seed, and every caption follows one small grammar, so that a
checker (``models.checker``) can read an image back and say whether it matches its caption.

Images are 64×64 RGB, float32 in [-1, 1], channels first ([3, H, W], batches [B, 3, H, W]).

Caption grammar (``caption``; ``parse_caption`` is its inverse)::

    caption  := object | object " and " object
    object   := "a " [size " "] colour " " shape [" " where]
    size     := "small" | "large"
    colour   := "red" | "green" | "blue" | "yellow" | "cyan" | "magenta" | "orange" | "white"
    shape    := "circle" | "square" | "triangle" | "cross" | "ring"
    where    := "in the centre" | "at the " position
    position := "top left" | "top" | "top right" | "left" | "right"
              | "bottom left" | "bottom" | "bottom right"

One-object captions always name size and position. In two-object captions each object names its
size and its position independently with probability 1/2 (``ObjectSpec.say_size`` /
``say_position``); an attribute that is not named is free (the image still has one, drawn at random,
but the caption does not constrain it, and the checker does not score it). The two objects of a
scene always have different colours, sit in different grid cells, and do not overlap.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

IMAGE_SIZE = 64

SHAPES = ("circle", "square", "triangle", "cross", "ring")
SIZES = ("small", "large")
# Saturated or bright, far from each other after normalising by the brightest channel (see the
# checker) and far from the background, whose channels all stay below 0.35.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.10, 0.10),
    "green": (0.10, 0.82, 0.15),
    "blue": (0.18, 0.32, 1.00),
    "yellow": (0.96, 0.92, 0.10),
    "cyan": (0.10, 0.90, 0.92),
    "magenta": (0.92, 0.12, 0.90),
    "orange": (1.00, 0.52, 0.02),
    "white": (0.97, 0.97, 0.97),
}
COLOUR_NAMES = tuple(COLOURS)
# The 3×3 grid, row-major; (column, row) in 0..2.
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
POSITION_CELL = {p: (i % 3, i // 3) for i, p in enumerate(POSITIONS)}
CELL_POSITION = {cell: p for p, cell in POSITION_CELL.items()}

# Geometry at 64 px (scaled for other sizes): grid-cell centres, radius per size, jitter.
_CELL_CENTRES = (14.0, 32.0, 50.0)
_RADIUS = {"small": 6.5, "large": 11.0}
_RADIUS_JITTER = 0.5
_POS_JITTER = 2.0
# Radius of the circle that bounds each shape, in units of its radius r (for the overlap test).
_BOUND = {"circle": 1.0, "square": 0.85 * 2**0.5, "triangle": 1.2, "cross": (1 + 0.33**2) ** 0.5, "ring": 1.0}

VOCAB: list[str] = sorted(
    set(
        ["a", "and", "at", "the", "in"]
        + list(SIZES)
        + list(COLOUR_NAMES)
        + list(SHAPES)
        + [w for p in POSITIONS for w in p.split()]
    )
)
"""Every word the caption grammar can produce (sorted, lower case, no punctuation)."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object. ``cx, cy, radius`` are in pixels of a 64×64 image (scaled when rendering other sizes).

    In parsed captions ``size`` / ``position`` are ``None`` where the caption does not name them, and
    the geometry is 0.
    """

    shape: str
    colour: str
    size: str | None
    position: str | None
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 0.0
    say_size: bool = True
    say_position: bool = True

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Scene:
    """A background (vertical-ish gradient between two dark colours, smooth texture, faint noise) and
    one or two objects. ``bg_seed`` fixes the texture and noise."""

    objects: tuple[ObjectSpec, ...]
    bg_top: tuple[float, float, float] = (0.1, 0.1, 0.15)
    bg_bottom: tuple[float, float, float] = (0.05, 0.05, 0.1)
    bg_angle: float = 0.0
    bg_seed: int = 0
    metadata: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {
            "objects": [o.as_dict() for o in self.objects],
            "bg_top": list(self.bg_top),
            "bg_bottom": list(self.bg_bottom),
            "bg_angle": self.bg_angle,
            "bg_seed": self.bg_seed,
        }


# --------------------------------------------------------------------------------------------- sampling


def _place(rng: np.random.Generator, position: str, size: str) -> tuple[float, float, float]:
    col, row = POSITION_CELL[position]
    cx = _CELL_CENTRES[col] + rng.uniform(-_POS_JITTER, _POS_JITTER)
    cy = _CELL_CENTRES[row] + rng.uniform(-_POS_JITTER, _POS_JITTER)
    r = _RADIUS[size] + rng.uniform(-_RADIUS_JITTER, _RADIUS_JITTER)
    return float(cx), float(cy), float(r)


def random_scene(rng: np.random.Generator | int, n_objects: int | None = None) -> Scene:
    """A random scene with ``n_objects`` (1 or 2; random with equal odds when None)."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if n_objects is None:
        n_objects = int(rng.integers(1, 3))
    if n_objects not in (1, 2):
        raise ValueError(f"n_objects must be 1 or 2, got {n_objects}")
    colours = rng.choice(len(COLOUR_NAMES), size=n_objects, replace=False)
    objects: list[ObjectSpec] = []
    for k in range(n_objects):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        say_size = say_position = True
        if n_objects == 2:
            say_size, say_position = bool(rng.integers(2)), bool(rng.integers(2))
        for attempt in range(400):  # rejection: a different cell and no overlap with earlier objects
            if attempt == 200:  # a large object in the centre leaves room only for a small one
                size = "small"
            position = POSITIONS[int(rng.integers(len(POSITIONS)))]
            cx, cy, r = _place(rng, position, size)
            ok = all(
                o.position != position
                and np.hypot(o.cx - cx, o.cy - cy) > _BOUND[o.shape] * o.radius + _BOUND[shape] * r + 2.0
                for o in objects
            )
            if ok:
                break
        else:  # pragma: no cover - opposite cells always fit
            raise RuntimeError("could not place object")
        objects.append(
            ObjectSpec(shape, COLOUR_NAMES[int(colours[k])], size, position, cx, cy, r, say_size, say_position)
        )
    hue_top, hue_bottom = rng.uniform(0.0, 0.30, size=3), rng.uniform(0.0, 0.22, size=3)
    return Scene(
        objects=tuple(objects),
        bg_top=tuple(float(v) for v in hue_top),
        bg_bottom=tuple(float(v) for v in hue_bottom),
        bg_angle=float(rng.uniform(-0.6, 0.6)),
        bg_seed=int(rng.integers(2**31)),
    )


# -------------------------------------------------------------------------------------------- rendering

_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRID_CACHE:
        c = (np.arange(size, dtype=np.float32) + 0.5) * (IMAGE_SIZE / size)  # pixel centres, in 64-px units
        _GRID_CACHE[size] = (c[None, :].repeat(size, 0), c[:, None].repeat(size, 1))
    return _GRID_CACHE[size]


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Signed distance (negative inside, in 64-px units; exact near edges) of a shape centred at
    (cx, cy) with radius r. Shared by the renderer and the checker's template matching."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if shape == "triangle":  # equilateral, pointing up, circumradius 1.2 r, centroid at (cx, cy)
        inradius = 0.6 * r
        s3 = np.float32(0.8660254)
        return np.maximum(np.maximum(dy, -0.5 * dy + s3 * dx), -0.5 * dy - s3 * dx) - inradius
    if shape == "cross":
        adx, ady = np.abs(dx), np.abs(dy)
        arm = 0.33 * r
        return np.minimum(np.maximum(adx - r, ady - arm), np.maximum(adx - arm, ady - r))
    if shape == "ring":  # outer radius r, hole radius r / 2
        return np.abs(np.sqrt(dx * dx + dy * dy) - 0.75 * r) - 0.25 * r
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    w = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1 - w
    m[np.arange(n_out), lo + 1] = w
    return m


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as float32 [3, size, size] in [-1, 1] (edges anti-aliased over one pixel)."""
    x, y = _grid(size)
    scale = size / IMAGE_SIZE
    rng = np.random.default_rng(scene.bg_seed)
    # Gradient along a slightly tilted vertical axis, a smooth 5×5 texture, faint pixel noise.
    t = np.clip(((y - 32.0) * np.cos(scene.bg_angle) + (x - 32.0) * np.sin(scene.bg_angle)) / 64.0 + 0.5, 0, 1)
    top, bottom = np.asarray(scene.bg_top, np.float32), np.asarray(scene.bg_bottom, np.float32)
    img = top[:, None, None] * (1 - t) + bottom[:, None, None] * t
    m = _interp_matrix(size, 5)
    coarse = rng.standard_normal((3, 5, 5)).astype(np.float32)
    texture = 0.025 * (m @ coarse @ m.T)
    img = img + texture + 0.004 * rng.standard_normal((3, size, size)).astype(np.float32)
    for o in scene.objects:
        d = shape_sdf(o.shape, x, y, o.cx, o.cy, o.radius) * scale  # in output pixels
        alpha = np.clip(0.5 - d, 0.0, 1.0)
        colour = np.asarray(COLOURS[o.colour], np.float32)[:, None, None]
        img = img * (1 - alpha) + colour * alpha
    return (np.clip(img, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------- captions


def _where(position: str) -> str:
    return "in the centre" if position == "centre" else f"at the {position}"


def caption(scene: Scene | Sequence[ObjectSpec]) -> str:
    """The scene's caption in the grammar of this module's docstring."""
    objects = scene.objects if isinstance(scene, Scene) else scene
    parts = []
    for o in objects:
        words = ["a"]
        if o.say_size and o.size is not None:
            words.append(o.size)
        words += [o.colour, o.shape]
        if o.say_position and o.position is not None:
            words.append(_where(o.position))
        parts.append(" ".join(words))
    return " and ".join(parts)


_OBJECT_RE = re.compile(
    r"a (?:(?P<size>small|large) )?(?P<colour>{c}) (?P<shape>{s})"
    r"(?: (?:in the (?P<centre>centre)|at the (?P<pos>top left|top right|bottom left|bottom right|top|bottom|left|right)))?$".format(
        c="|".join(COLOUR_NAMES), s="|".join(SHAPES)
    )
)


def parse_caption(text: str) -> list[ObjectSpec]:
    """Inverse of ``caption``: the objects a caption names, attributes it leaves out as ``None``.

    Raises ValueError (naming the part it could not read) for text outside the grammar.
    """
    norm = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    if not norm:
        raise ValueError("empty caption")
    objects = []
    for part in norm.split(" and "):
        m = _OBJECT_RE.match(part)
        if m is None:
            raise ValueError(f"cannot parse {part!r} in caption {text!r}; expected e.g. 'a large red circle at the top left'")
        position = m["centre"] or m["pos"]
        objects.append(
            ObjectSpec(
                shape=m["shape"],
                colour=m["colour"],
                size=m["size"],
                position=position,
                say_size=m["size"] is not None,
                say_position=position is not None,
            )
        )
    if len(objects) > 2:
        raise ValueError(f"caption {text!r} names {len(objects)} objects; at most 2 are supported")
    return objects


# ---------------------------------------------------------------------------------------------- batches


def scene_for(seed: int, index: int, n_objects: int | None = None) -> Scene:
    """Scene ``index`` of the stream ``seed``: independent of batch size and of the other items."""
    return random_scene(np.random.default_rng([int(seed), int(index)]), n_objects)


# The data stream of held-out captions (training uses streams 0, 1, ...): prompts no model was trained on.
EVAL_CAPTION_SEED = 2_000_003


def eval_captions(n: int, n_objects: int, seed: int = EVAL_CAPTION_SEED) -> list[str]:
    """``n`` held-out captions with ``n_objects`` objects each (deterministic)."""
    return [caption(scene_for(seed, i, n_objects)) for i in range(n)]


def make_batch(
    seed: int, n: int, n_objects: int | None = None, start: int = 0, size: int = IMAGE_SIZE
) -> tuple["torch.Tensor", list[str], list[Scene]]:  # noqa: F821
    """Scenes ``start .. start+n-1`` of stream ``seed``: (images [n, 3, size, size] float32 in [-1, 1],
    captions, scenes). Item i depends only on (seed, start + i)."""
    import torch

    scenes = [scene_for(seed, start + i, n_objects) for i in range(n)]
    images = np.stack([render(s, size) for s in scenes]) if n else np.zeros((0, 3, size, size), np.float32)
    return torch.from_numpy(images), [caption(s) for s in scenes], scenes


def iter_batches(
    seed: int, batch_size: int, n_objects: int | None = None, start: int = 0, size: int = IMAGE_SIZE
) -> Iterator[tuple["torch.Tensor", list[str], list[Scene]]]:  # noqa: F821
    """Endless consecutive batches of stream ``seed`` (batch k holds scenes start + k·batch_size …)."""
    index = start
    while True:
        yield make_batch(seed, batch_size, n_objects, start=index, size=size)
        index += batch_size


# ------------------------------------------------------------------------------------------- PIL helpers


def to_pil(image) -> "PIL.Image.Image":  # noqa: F821
    """[3, H, W] or [1, 3, H, W] tensor / array in [-1, 1] -> RGB PIL image."""
    from PIL import Image

    a = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, np.float32)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"to_pil takes one image; got a batch of {a.shape[0]}")
        a = a[0]
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected [3, H, W], got shape {tuple(a.shape)}")
    a = np.clip((a.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


# PIL modes are read as 0..255 pixels where their channels are 8-bit (1, L, LA, P, RGB, RGBA, CMYK, YCbCr, …, as
# diffusers' load_image reads them: convert("RGB")); a mode of wider channels ("I;16", "I", "F") holds another range,
# which convert() would clip or truncate to another picture. PIL_MODES: the usual ones, named in messages.
PIL_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK")


def check_pil_mode(img, what: str = "image", to: str = "RGB", values: str = "[-1, 1]") -> None:
    """Refuse a PIL image whose channels are not 8-bit, or whose mode PIL cannot convert to ``to`` (naming the mode
    and the fix)."""
    from PIL import Image, ImageMode

    from samplers.core.errors import InvalidType

    mode = getattr(img, "mode", None)
    try:
        eight_bit = ImageMode.getmode(mode).typestr in ("|u1", "|b1")
    except (KeyError, TypeError, ValueError):
        eight_bit = False
    fix = (f"convert it to {to!r} yourself with the scaling you mean, or pass its values as a float tensor in {values} "
           "(torch.from_numpy(np.asarray(im, dtype=np.float32)), scaled so)")
    if not eight_bit:
        raise InvalidType(f"{what} is a PIL image of mode {mode!r}, whose values are not 8-bit 0..255 pixels "
                          f"(converting it would clip or truncate it to another picture): {fix}")
    try:
        Image.new(mode, (1, 1)).convert(to)
    except ValueError:
        raise InvalidType(f"{what} is a PIL image of mode {mode!r}, which PIL cannot convert to {to!r}: {fix}") from None


_ORIENTATION = 0x0112  # the EXIF tag


def shown_size(img) -> tuple[int, int]:
    """``(height, width)`` of a PIL image as it will be read (:func:`decoded`: its EXIF orientation applied), from its
    header, without decoding a pixel: a size can be checked before a large image is decoded. Where the orientation is
    only known once the pixels are read (a PNG whose eXIf chunk follows its data) the stored size is given, which
    names the same sides' lengths, swapped."""
    width, height = img.size
    if "exif" in getattr(img, "info", {}):  # JPEG, WebP: read at open; a PNG's eXIf may need the pixels read
        try:
            if img.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # a quarter turn: the sides swap
                width, height = height, width
        except (OSError, ValueError, SyntaxError):  # unreadable EXIF: decoded() names the image's problem
            pass
    return height, width


def _named(img, what: str) -> str:
    name = getattr(img, "filename", "") or ""
    return f"{what} {name!r}" if name else what


def decoded(img, what: str = "image", to: str = "RGB", values: str = "[-1, 1]"):
    """A PIL image's pixels as diffusers' ``load_image`` reads them: its mode checked (:func:`check_pil_mode`), the
    file decoded — a truncated or closed file refused naming the image and the fix, not a raw ``OSError`` — and its EXIF
    orientation applied (``PIL.ImageOps.exif_transpose``, as ``load_image`` and A1111 do: a phone photo stored
    sideways with Orientation 6 is read upright). Returns the image to ``convert``."""
    from PIL import ImageOps

    from samplers.core.errors import InvalidInput

    check_pil_mode(img, what, to, values)
    try:
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidInput(f"{_named(img, what)} cannot be read ({e}): a truncated or corrupt file, or an image "
                           "already closed; pass an image opened with PIL.Image.open(path) from a complete file, and "
                           "do not close it before the call") from None


def is_transparent(img) -> bool:
    """Whether a PIL image has a pixel that is not opaque: an alpha band (RGBA, LA, PA, …) below 255, or palette /
    colour-key transparency (``info["transparency"]``). Decodes the pixels: call it after any size check."""
    bands = img.getbands()
    if "A" in bands or "a" in bands:
        alpha = img.getchannel("A" if "A" in bands else "a")
    elif "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
    else:
        return False
    return alpha.getextrema()[0] < 255


def from_pil(img) -> "torch.Tensor":  # noqa: F821
    """PIL image of an 8-bit mode (as RGB, like diffusers' load_image: EXIF orientation applied, alpha dropped) ->
    float32 tensor [3, H, W] in [-1, 1]. Other modes (16-bit, 32-bit int or float) are refused: their values are not
    0..255 pixels; a file that cannot be read is refused naming it (:func:`decoded`)."""
    import torch

    a = np.asarray(decoded(img).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def image_to_unit_hwc(image) -> np.ndarray:
    """Tensor / array ([3,H,W], [1,3,H,W], in [-1, 1]) or PIL image -> float32 [H, W, 3] in [0, 1]."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(decoded(image).convert("RGB"), dtype=np.float32) / 255.0
    a = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected one image [3, H, W] in [-1, 1], got shape {tuple(a.shape)}")
    return np.clip((a.transpose(1, 2, 0) + 1.0) * 0.5, 0.0, 1.0)

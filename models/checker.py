"""Analytic checker: read an image of ``models.data`` back into objects and score it against a caption.

No learned parts, so it can score samples from any model:

1. foreground = pixels whose brightest channel is well above the background's (the background stays
   below 0.35, every named colour has a channel ≥ 0.9);
2. colour per pixel = nearest named colour after dividing by the brightest channel (so a half-covered
   edge pixel of a yellow object is still yellow, not orange);
3. objects = connected regions of one colour (small specks dropped); colour = that colour;
4. shape = the best-fitting template: each shape's signed-distance mask (``models.data.shape_sdf``)
   placed at the region's centroid, with the radius that gives the region's area, scored by IoU
   (ring's hole, triangle's flat base, square's corners and cross's arms all show up in the IoU);
5. size = radius from area for that shape, against the small/large midpoint;
   position = centroid on the 3×3 grid.

Blurry images (decoded diffusion samples) lose crisp edges first; the area-based size, centroid
position and IoU shape all degrade smoothly with blur rather than flipping at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import data

_FG_THRESHOLD = 0.55  # on the brightest channel, [0, 1] scale
_MIN_AREA = 16  # in 64-px units²; the smallest object has ~80
_PALETTE = np.array([data.COLOURS[c] for c in data.COLOUR_NAMES], dtype=np.float32)
_PALETTE_NORM = _PALETTE / _PALETTE.max(axis=1, keepdims=True)
# area = coef · r², per shape (from the geometry in data.shape_sdf)
_AREA_COEF = {
    "circle": np.pi,
    "square": (2 * 0.85) ** 2,
    "triangle": 3 * 3**0.5 / 4 * 1.2**2,
    "cross": 2 * (2 * 0.66) - 0.66**2,
    "ring": np.pi * (1 - 0.25),
}
_SIZE_SPLIT = (data._RADIUS["small"] + data._RADIUS["large"]) / 2


@dataclass
class DetectedObject:
    shape: str
    colour: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    area: float
    shape_iou: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _template_iou(mask: np.ndarray, x: np.ndarray, y: np.ndarray, shape: str, cx: float, cy: float, area: float) -> tuple[float, float]:
    r = float(np.sqrt(area / _AREA_COEF[shape]))
    tmpl = data.shape_sdf(shape, x, y, cx, cy, r) < 0
    inter = np.logical_and(tmpl, mask).sum()
    union = np.logical_or(tmpl, mask).sum()
    return (inter / union if union else 0.0), r


def detect(image) -> list[DetectedObject]:
    """Objects in an image (tensor / array [3,H,W] in [-1, 1], or PIL), largest first."""
    img = data.image_to_unit_hwc(image)
    h, w, _ = img.shape
    s = data.IMAGE_SIZE / w, data.IMAGE_SIZE / h  # to 64-px units
    brightest = img.max(axis=2)
    fg = brightest > _FG_THRESHOLD
    if not fg.any():
        return []
    norm = img[fg] / brightest[fg][:, None]
    d = ((norm[:, None, :] - _PALETTE_NORM[None, :, :]) ** 2).sum(-1)
    labels = np.full((h, w), -1, dtype=np.int64)
    labels[fg] = d.argmin(1)
    x = (np.arange(w, dtype=np.float32) + 0.5) * s[0]
    y = (np.arange(h, dtype=np.float32) + 0.5) * s[1]
    xx, yy = np.meshgrid(x, y)
    pixel_area = s[0] * s[1]
    found: list[DetectedObject] = []
    for ci in np.unique(labels[fg]):
        comp, n = ndimage.label(labels == ci)
        for k in range(1, n + 1):
            mask = comp == k
            area = float(mask.sum()) * pixel_area
            if area < _MIN_AREA:
                continue
            # Holes (a ring's) count towards the shape's footprint only through the template IoU.
            cy, cx = float(yy[mask].mean()), float(xx[mask].mean())
            best = max(
                ((_template_iou(mask, xx, yy, sh, cx, cy, area), sh) for sh in data.SHAPES),
                key=lambda t: t[0][0],
            )
            (iou, r), shape = best
            col = min(2, max(0, int(cx // (data.IMAGE_SIZE / 3))))
            row = min(2, max(0, int(cy // (data.IMAGE_SIZE / 3))))
            found.append(
                DetectedObject(
                    shape=shape,
                    colour=data.COLOUR_NAMES[ci],
                    size="large" if r > _SIZE_SPLIT else "small",
                    position=data.CELL_POSITION[(col, row)],
                    cx=cx,
                    cy=cy,
                    radius=r,
                    area=area,
                    shape_iou=float(iou),
                )
            )
    found.sort(key=lambda o: -o.area)
    return found


_ATTRS = ("colour", "shape", "size", "position")


def _agreement(spec: data.ObjectSpec, obj: DetectedObject) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for a in _ATTRS:
        want = getattr(spec, a)
        out[a] = None if want is None else (want == getattr(obj, a))
    return out


def attribute_scores(image, caption: str) -> dict:
    """How well an image matches a caption, attribute by attribute.

    Caption objects are paired with detected objects to maximise the number of correct attributes.
    Returns ``colour`` / ``shape`` / ``size`` / ``position``: the fraction of the caption's mentions of
    that attribute that are correct (None where the caption never names it), ``count``: the image has
    exactly as many objects as the caption, ``all``: everything correct (the same as ``matches``), and
    ``objects``: the detected objects.
    """
    specs = data.parse_caption(caption)
    objs = detect(image)
    best: list[dict] | None = None
    best_score = -1
    n = len(specs)
    # Pad with None so that missing objects count as wrong.
    candidates = list(objs) + [None] * n
    for perm in itertools.permutations(range(len(candidates)), n):
        rows = []
        for spec, j in zip(specs, perm):
            obj = candidates[j]
            rows.append({a: (None if getattr(spec, a) is None else False) for a in _ATTRS} if obj is None else _agreement(spec, obj))
        score = sum(bool(v) for r in rows for v in r.values())
        if score > best_score:
            best, best_score = rows, score
    assert best is not None
    scores: dict = {}
    for a in _ATTRS:
        vals = [r[a] for r in best if r[a] is not None]
        scores[a] = (sum(vals) / len(vals)) if vals else None
    scores["count"] = len(objs) == n
    scores["all"] = scores["count"] and all(v in (None, 1.0) for v in (scores[a] for a in _ATTRS))
    scores["objects"] = [o.as_dict() for o in objs]
    return scores


def matches(image, caption: str) -> bool:
    """True when the image shows exactly the caption's objects with every attribute the caption names."""
    return bool(attribute_scores(image, caption)["all"])


def accuracy(images, captions) -> dict:
    """Mean of each attribute score over a batch, plus ``match`` (fraction that fully match)."""
    totals: dict[str, list[float]] = {a: [] for a in (*_ATTRS, "count", "match")}
    for img, cap in zip(images, captions):
        s = attribute_scores(img, cap)
        for a in _ATTRS:
            if s[a] is not None:
                totals[a].append(s[a])
        totals["count"].append(float(s["count"]))
        totals["match"].append(float(s["all"]))
    return {k: (float(np.mean(v)) if v else None) for k, v in totals.items()}

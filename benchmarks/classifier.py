"""A small CNN trained on ``models.data`` scenes: its features give a Fréchet distance for generated images.

    python -m benchmarks.classifier train --out models/weights/classifier     # the shipped weights, ~5 min on 1 thread
    python -m benchmarks.classifier eval                                      # held-out accuracy

Trained on one-object scenes to predict the object's shape, colour, size and 3×3 position (four heads over
one 32-dimensional feature vector). ``frechet_to_data(images)`` is the Fréchet distance between the
features of ``images`` and those of held-out data images — an FID whose feature extractor knows exactly
the attributes this data set varies. With small batches it is biased upwards (like FID), so compare
numbers at equal batch sizes only.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "classifier"
MODULE = "benchmarks.classifier"
KIND = MODULE  # the config's "kind", as train() writes it
TRAIN_COMMAND = "python -m benchmarks.classifier train --out models/weights/classifier"
BATCH = 128  # scenes per training step
HEADS = ("shape", "colour", "size", "position")
FEATURES = 32
TRAIN_SEED, EVAL_SEED, REFERENCE_SEED = 101, 202, 303


def _labels():
    from models import data

    return {"shape": data.SHAPES, "colour": data.COLOUR_NAMES, "size": data.SIZES, "position": data.POSITIONS}


class Classifier(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.SiLU(),          # 32
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),      # 16
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),  # 8
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, FEATURES), nn.SiLU())
        sizes = {k: len(v) for k, v in _labels().items()}
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURES, n) for k, n in sizes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 32] features of images in [-1, 1], [B, 3, 64, 64]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: head(f) for k, head in self.heads.items()}


def _targets(scenes) -> dict[str, torch.Tensor]:
    labels = _labels()
    objs = [s.objects[0] for s in scenes]
    return {k: torch.tensor([labels[k].index(getattr(o, k)) for o in objs]) for k in HEADS}


def _data(seed: int, n: int, chunk: int = 256):
    from models import data

    xs, ts = [], []
    for start in range(0, n, chunk):
        x, _, scenes = data.make_batch(seed, min(chunk, n - start), n_objects=1, start=start)
        xs.append(x)
        ts.append(_targets(scenes))
    return torch.cat(xs), {k: torch.cat([t[k] for t in ts]) for k in HEADS}


def accuracy(model: Classifier, x: torch.Tensor, targets: dict) -> dict[str, float]:
    with torch.no_grad():
        out = model(x)
    return {k: float((out[k].argmax(1) == targets[k]).float().mean()) for k in HEADS}


def train(out: Path, n_train: int = 12_800, epochs: int = 8, batch: int = BATCH, seed: int = 0, threads: int = 1,
          command: str = TRAIN_COMMAND):
    """Train the classifier on ``n_train`` scenes (whole batches of ``batch``) and save it with ``command``, the
    command line that made it."""
    if n_train < batch or n_train % batch:
        raise ValueError(f"n_train = {n_train} is not a whole number of batches of {batch} scenes (the rest would "
                         f"not be trained on); pass a multiple of {batch}, e.g. {max(batch, n_train // batch * batch)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    x, y = _data(TRAIN_SEED, n_train)
    xe, ye = _data(EVAL_SEED, 1024)
    print(f"rendered {n_train} + 1024 scenes in {time.perf_counter() - t0:.0f} s", flush=True)
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(n_train, generator=g)
        model.train()
        for i in range(n_train // batch):
            idx = perm[i * batch:(i + 1) * batch]
            # a little noise and blur so decoded (slightly soft) samples stay in distribution
            xb = x[idx] + 0.05 * torch.randn(len(idx), *x.shape[1:], generator=g)
            if i % 2:
                xb = F.avg_pool2d(xb, 3, stride=1, padding=1)
            out_ = model(xb)
            loss = sum(F.cross_entropy(out_[k], y[k][idx]) for k in HEADS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        print(f"epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}, held-out accuracy "
              f"{accuracy(model, xe, ye)}, {time.perf_counter() - t0:.0f} s", flush=True)
    acc = accuracy(model, xe, ye)
    from models import io as mio

    config = {"kind": KIND, "features": FEATURES, "width": 16, "heads": list(HEADS),
              "trained_on": f"models.data stream {TRAIN_SEED}, {n_train} one-object scenes, {epochs} epochs",
              "held_out_accuracy": acc, "command": command}
    mio.save_model(out, {k: v.to(torch.float16) for k, v in model.state_dict().items()}, config)
    print(f"wrote {out} (held-out accuracy {acc})")
    return acc


@dataclasses.dataclass
class ClassifierConfig:
    """What a classifier's config.json says of its module: the width. ``features`` and ``heads`` are fixed by this
    code and must read as it has them; the rest (``trained_on``, ``held_out_accuracy``, ``command``) is provenance."""

    width: int = 16

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        """The config of ``d``, every field this code reads checked (``ConfigMismatchError`` naming the field, as
        the models' configs are: ``width: "16"`` was a TypeError from inside torch)."""
        from models import _checks

        what = "classifier config"
        _checks.check_str(d, "kind", what, choices=(KIND,))
        _checks.check_int(d, "width", what, minimum=1)
        for field, value in (("features", FEATURES), ("heads", list(HEADS))):
            if field in d and d[field] != value:
                raise _checks._bad(what, field, d[field], f"{value!r} (this code's classifier)")
        return cls(width=d.get("width", cls.width))


def _build(config: ClassifierConfig) -> Classifier:
    return Classifier(config.width)


@functools.lru_cache(maxsize=2)
def load(folder: str | None = None) -> Classifier:
    """The shipped classifier, or the one in ``folder`` (float32, eval mode), loaded as the models are
    (:func:`models.io.load_module`): the config's fields checked, and the weights' names and shapes compared on a
    shape-only (meta-device) build before the module is built, so a wrong ``width`` is a ``ConfigMismatchError``
    naming the field (it built the module at the config's size, then failed in ``load_state_dict``). A missing
    folder or file is a ``MissingModelError`` (a ``FileNotFoundError``) naming the command to train it."""
    from models import io as mio

    return mio.load_module(_build, ClassifierConfig.from_dict, Path(folder) if folder else WEIGHTS, "classifier",
                           default_type="classifier", reproduce_hint=f"train them with `{TRAIN_COMMAND}`")


def features(images: torch.Tensor, folder: str | None = None) -> torch.Tensor:
    model = load(folder)
    with torch.no_grad():
        return model.features(images.float().cpu().clamp(-1, 1))


@functools.lru_cache(maxsize=2)
def _reference_features(n: int) -> torch.Tensor:
    from models import data

    x, _, _ = data.make_batch(REFERENCE_SEED, n)
    return features(x)


def frechet_to_data(images: torch.Tensor, n_reference: int = 512) -> float:
    """Fréchet distance between classifier features of ``images`` and of ``n_reference`` data scenes."""
    from .common import frechet_distance

    return frechet_distance(features(images), _reference_features(n_reference))


def main(argv=None) -> int:
    from . import common

    p = argparse.ArgumentParser(prog="python -m benchmarks.classifier", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", allow_abbrev=False,
                       description="train the classifier on rendered scenes of seed TRAIN_SEED "
                                   f"({TRAIN_SEED}) and write its weights to --out")
    t.add_argument("--out", type=common.out_folder, default="out/classifier",
                   help="folder for the weights (default %(default)s; the shipped ones are written with "
                        f"--out {WEIGHTS.relative_to(WEIGHTS.parents[2])})")
    t.add_argument("--n", type=common.positive_int, default=12_800,
                   help=f"training scenes, a multiple of the batch of {BATCH} (default 12800)")
    t.add_argument("--epochs", type=common.positive_int, default=8, help="passes over the scenes (default 8)")
    common.add_threads_option(t)
    sub.add_parser("eval", allow_abbrev=False,
                   description="print the shipped classifier's accuracy per head on 1024 scenes of seed "
                               f"EVAL_SEED ({EVAL_SEED}), as JSON")
    args = p.parse_args(argv)
    if args.command == "train":
        if args.n % BATCH:
            p.error(f"--n {args.n} is not a whole number of batches of {BATCH} scenes (the last {args.n % BATCH} "
                    f"would not be trained on): pass a multiple of {BATCH}, e.g. "
                    f"{max(BATCH, args.n // BATCH * BATCH)}")
        print(common.device_line(), flush=True)
        train(args.out, args.n, args.epochs, threads=args.threads, command=common.run_command(MODULE, argv))
    else:
        print(common.device_line(), flush=True)
        model = load()
        x, y = _data(EVAL_SEED, 1024)
        print(json.dumps(accuracy(model, x, y)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

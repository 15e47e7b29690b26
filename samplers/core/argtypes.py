"""argparse ``type=`` functions shared by every command line of the project (``samplers``, the benchmarks, the
training commands): a bad value is argparse's one-line error (exit status 2) naming the value and the rule, before
any work starts."""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def int_at_least(low: int):
    """An integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer: pass an integer >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}: pass an integer >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def real(*, positive: bool = False, low: float | None = None, high: float | None = None):
    """A finite number (> 0 with ``positive``; within [low, high] where given)."""
    rule = ("a finite number" + (" > 0" if positive else "") + (f" >= {low}" if low is not None and high is None else "")
            + (f" in [{low}, {high}]" if low is not None and high is not None else ""))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number: pass {rule}") from None
        if not math.isfinite(value) or (positive and value <= 0) or (low is not None and value < low) \
                or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {rule}: pass {rule}")
        return value

    parse.__name__ = rule
    return parse


def _blocked_by_a_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path`` itself) when it is not a folder."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def out_folder(text: str | Path) -> Path:
    """``--out`` naming a folder (created if missing): refused at once when it, or a folder above it, is a file."""
    path = Path(text)
    blocker = _blocked_by_a_file(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"is under {str(blocker)!r}, a file"
        raise argparse.ArgumentTypeError(f"{str(path)!r} {what}, not a folder: name a folder (new or existing) to "
                                         "write into")
    return path


def out_file(text: str | Path) -> Path:
    """``--out`` naming a file: refused at once when it is a folder or sits under a file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{str(path)!r} is a folder: name the file to write")
    blocker = _blocked_by_a_file(path.parent)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{str(path)!r} is under {str(blocker)!r}, a file: name a file in a folder")
    return path

"""Checks shared by the model configs (read from ``config.json``) and the training CLIs.

Config checks raise ``ConfigMismatchError`` naming the field, its value and the rule; ``models.io.load_module``
prefixes the message with the config file's path. CLI checks are argparse ``type=`` functions: a bad value is
argparse's one-line error (exit 2) before anything is built.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from samplers.core.argtypes import int_at_least, out_folder, real  # noqa: F401 - the CLIs' types

from .io import ConfigMismatchError

FIX = "correct the field in config.json, or re-save the model with its save method, which writes a complete config"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad(what: str, field: str, value, rule: str):
    return ConfigMismatchError(f"{what} field {field!r} is {value!r}; it must be {rule}; {FIX}")


def check_int(d: dict, field: str, what: str, minimum: int = 1) -> None:
    if field in d and not (_is_int(d[field]) and d[field] >= minimum):
        raise _bad(what, field, d[field], f"an integer ≥ {minimum}")


def check_real(d: dict, field: str, what: str, *, positive: bool = False, low: float | None = None,
               high: float | None = None) -> None:
    if field not in d:
        return
    v = d[field]
    rule = ("a finite number" + (" > 0" if positive else "")
            + (f" in [{low}, {high}]" if low is not None and high is not None else ""))
    if not _is_real(v) or not math.isfinite(v) or (positive and v <= 0) \
            or (low is not None and v < low) or (high is not None and v > high):
        raise _bad(what, field, v, rule)


def check_str(d: dict, field: str, what: str, choices: tuple[str, ...] | None = None) -> None:
    if field not in d:
        return
    v = d[field]
    if not isinstance(v, str) or not v or (choices is not None and v not in choices):
        raise _bad(what, field, v, "one of " + ", ".join(map(repr, choices)) if choices else "a non-empty string")


def check_dict(d: dict, field: str, what: str) -> None:
    if field in d and not isinstance(d[field], dict):
        raise _bad(what, field, d[field], "a JSON object")


def check_channels(d: dict, what: str, groups_field: str = "groups") -> None:
    """``channels``: a non-empty list of integers ≥ 1, each divisible by its GroupNorm group count
    (``min(groups, c)``)."""
    if "channels" not in d:
        return
    ch = d["channels"]
    if not isinstance(ch, (list, tuple)) or not ch or not all(_is_int(c) and c >= 1 for c in ch):
        raise _bad(what, "channels", ch, "a non-empty list of integers ≥ 1")
    groups = d.get(groups_field)
    if _is_int(groups) and groups >= 1:
        bad = [c for c in ch if c % min(groups, c)]
        if bad:
            raise _bad(what, "channels", ch, f"multiples of {groups_field} ({groups}) (GroupNorm splits each level's "
                                             f"channels into that many groups; {bad} do not divide)")


# ------------------------------------------------------------------------------------------- CLI types


def channel_list(s: str) -> tuple[int, ...]:
    try:
        ch = tuple(int(c) for c in s.split(","))
    except ValueError:
        ch = ()
    if not ch or any(c < 1 for c in ch):
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integers ≥ 1 (e.g. 32,64,128)")
    return ch


def non_empty(s: str) -> str:
    if not s.strip():
        raise argparse.ArgumentTypeError("an empty name; give a non-empty name or leave the option out")
    return s


def existing_folder(s: str) -> Path:
    p = Path(s)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{s} is not a folder; name a folder holding model.safetensors and config.json")
    return p

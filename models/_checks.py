"""Checks shared by the model configs (read from ``config.json``) and the training CLIs.

Config checks raise ``ConfigMismatchError`` naming the field, its value and the rule; ``models.io.load_module``
prefixes the message with the config file's path. CLI checks are argparse ``type=`` functions: a bad value is
argparse's one-line error (exit 2) before anything is built.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from samplers.core.argtypes import int_at_least, out_folder, real  # noqa: F401 - the CLIs' types

from samplers.core.errors import InvalidInput

from .io import ConfigMismatchError

FIX = "correct the field in config.json, or re-save the model with its save method, which writes a complete config"


def norm_groups(c: int, groups: int) -> int:
    """The groups of a GroupNorm over ``c`` channels: ``groups``, or ``c`` when fewer. Refused (``InvalidInput``,
    before the module is built further) when they do not divide ``c``, which torch reports without naming the
    config's fields."""
    g = min(groups, c)
    if c % g:
        raise InvalidInput(f"the channels and groups ({groups}) make a layer of {c} channels (a level's width, or a "
                           f"level's input joined with its skip), which {g} GroupNorm groups do not divide; give "
                           f"channel counts that are multiples of groups ({groups})")
    return g


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad(what: str, field: str, value, rule: str):
    return ConfigMismatchError(f"{what} field {field!r} is {value!r}; it must be {rule}; {FIX}")


def check_int(d: dict, field: str, what: str, minimum: int = 1, maximum: int | None = None, why: str = "") -> None:
    if field in d and not (_is_int(d[field]) and d[field] >= minimum and (maximum is None or d[field] <= maximum)):
        rule = f"an integer ≥ {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise _bad(what, field, d[field], rule + why)


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


DEFAULT_FIELDS = ("sampler", "schedule", "steps", "cfg")

MAX_TRAIN_TIMESTEPS = 100_000
"""The most training timesteps a config's ``num_train_timesteps`` may give: ten times the most any model in use has
(Flux's 10 000; SD's 1000); more is no model's table, and 10**9 would ask for gigabytes of schedule tables."""

MAX_STEPS = 10_000  # more is never a useful image, and would run for hours: refused, not started
"""The pipeline's limit on a run's steps (``models.pipeline.MAX_STEPS`` re-exports it), here so that a config's
``defaults.steps`` is checked against it at load without importing the pipeline (which imports this module)."""


def check_defaults(d: dict, what: str) -> None:
    """``defaults``: the model's inference defaults, each a value the pipeline can use as it stands — a sampler name
    or label and a schedule the name tables resolve, steps an integer in [1, :data:`MAX_STEPS`], cfg a guidance scale by
    the rule every cfg is checked by (``samplers.core.argtypes.cfg_problem``: finite, |cfg| <= 100)."""
    defaults = d.get("defaults")
    if not isinstance(defaults, dict):
        return  # check_dict's to refuse
    unknown = sorted(set(defaults) - set(DEFAULT_FIELDS))
    if unknown:
        raise _bad(what, "defaults", defaults, f"an object with the fields {', '.join(DEFAULT_FIELDS)} only "
                                               f"(unknown: {', '.join(map(repr, unknown))})")
    from samplers.core import names
    from samplers.core.errors import SamplersError

    sampler, schedule = defaults.get("sampler"), defaults.get("schedule")
    if sampler is not None:
        # the prefix as names.resolve reads it ("fitted :x.json", " FITTED:x.json" are fitted solvers too)
        if not isinstance(sampler, str) or names.name_prefix(sampler) == "fitted":
            raise _bad(what, "defaults.sampler", sampler, "a sampler name or label (a fitted solver is chosen per call)")
        try:
            names.resolve_call(sampler, schedule if isinstance(schedule, str) else None)
        except SamplersError as e:
            raise _bad(what, "defaults.sampler", sampler, f"a name the sampler tables resolve ({e})") from None
    if schedule is not None:
        try:
            names.resolve_schedule(schedule)
        except SamplersError as e:
            raise _bad(what, "defaults.schedule", schedule, f"a schedule name ({e})") from None
    steps = defaults.get("steps")
    if "steps" in defaults and not (_is_int(steps) and 1 <= steps <= MAX_STEPS):
        # above the limit every call without steps= would fail, naming neither the file nor the field
        raise _bad(what, "defaults.steps", steps, f"an integer in [1, {MAX_STEPS}] (the pipeline's step limit)")
    if "cfg" in defaults:  # the rule every cfg is checked by (--cfg, Pipeline.guidance): one rule, not a copy
        from samplers.core.argtypes import cfg_problem

        cfg = defaults["cfg"]
        problem = cfg_problem(float(cfg)) if _is_real(cfg) else f"{cfg!r} is not a number"
        if problem is not None:
            raise ConfigMismatchError(f"{what} field 'defaults.cfg' (the guidance scale used where no cfg is given) "
                                      f"is {cfg!r}, which is not a guidance scale: {problem}; {FIX}")


def check_vae_record(d: dict, what: str) -> None:
    """``vae``: the VAE a U-Net was trained with (empty: none recorded) — every field a pipeline compares."""
    rec = d.get("vae")
    if not isinstance(rec, dict) or not rec:
        return
    fields = {"name", "latent_channels", "scaling_factor", "shift_factor", "weights_sha256"}
    if set(rec) != fields:
        raise _bad(what, "vae", rec, f"an object with the fields {', '.join(sorted(fields))} (as the model's save "
                                     "method writes it)")
    sub = what + " vae"
    check_str(rec, "name", sub)
    check_int(rec, "latent_channels", sub)
    check_real(rec, "scaling_factor", sub, positive=True)
    check_real(rec, "shift_factor", sub)
    sha = rec["weights_sha256"]
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise _bad(sub, "weights_sha256", sha, "the VAE weights' sha256 (64 lowercase hex digits) or null")


# ------------------------------------------------------------------------------------------- CLI types


def cli(prog: str, run, argv) -> int:
    """``run(argv)`` for a training CLI: an error the project raises on purpose, or a file error, ends it with one
    line naming the problem and its fix (``prog: error: ...``, exit 2 for a value or path given, 1 otherwise, as
    ``samplers``' commands end); anything else is a bug and keeps its traceback."""
    from samplers.cli import exit_status
    from samplers.core.errors import SamplersError

    try:
        return run(argv)
    except (SamplersError, OSError) as err:
        print(f"{prog}: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return exit_status(err)


# Caps on the model sizes the training CLIs take (docs/models.md). Each CLI builds its model at parse time on the meta
# device (shapes only) to check it, which took 16 s for --res-blocks 1000 and grew with the count; a width of 10**6 or
# --latent-channels 10**9 ended in the allocator's traceback when the model was built. Within the caps the build takes
# about a second, and check_training_memory refuses a model whose training state would not fit free memory.
MAX_WIDTH = 2048  # channels of one level (SD's widest U-Net level has 1280)
MAX_LEVELS = 8  # widths in --channels (SD's U-Net has 4 levels; the VAE's 64 px images take at most 6)
MAX_BLOCKS = 16  # residual blocks per level (SD's U-Net has 2, its VAE 2 and 3)
MAX_LATENT_CHANNELS = 64  # the VAE's latent channels (SD's has 4, SD3's and Flux's 16)


def channel_list(s: str) -> tuple[int, ...]:
    """``--channels``: comma-separated widths, one level each, at most :data:`MAX_LEVELS` of at most
    :data:`MAX_WIDTH`."""
    try:
        ch = tuple(int(c) for c in s.split(","))
    except ValueError:
        ch = ()
    if not ch or any(c < 1 for c in ch):
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integers ≥ 1 (e.g. 32,64,128)")
    if len(ch) > MAX_LEVELS:
        raise argparse.ArgumentTypeError(f"{len(ch)} levels are above the cap {MAX_LEVELS} (build time and memory); "
                                         f"give at most {MAX_LEVELS} widths (e.g. 32,64,128)")
    wide = sorted({c for c in ch if c > MAX_WIDTH})
    if wide:
        raise argparse.ArgumentTypeError(f"{'widths' if len(wide) > 1 else 'width'} {', '.join(map(str, wide))} "
                                         f"above the cap {MAX_WIDTH} channels per level (memory); give widths of at "
                                         f"most {MAX_WIDTH} (e.g. 64,128)")
    return ch


def check_training_memory(parser, model, bytes_per_parameter: int, state: str, options: str, fix: str) -> None:
    """Refuse (``parser.error``, naming the size ``options``) training ``model`` (built on the meta device: shapes
    only) where its training state, ``bytes_per_parameter`` for each parameter (``state`` says of what), is more than
    the memory free: torch would fail allocating it with a traceback, after the data set was encoded. Activations
    come on top: a model that passes may still need a smaller --batch-size."""
    from samplers.core.errors import LimitExceeded
    from samplers.core.validate import check_allocation

    n = sum(p.numel() for p in model.parameters())
    try:
        check_allocation(n * bytes_per_parameter, f"training a model of {n / 1e6:,.1f} M parameters ({state}: "
                         f"{bytes_per_parameter} bytes each)", "cpu", fix)
    except LimitExceeded as err:
        parser.error(f"the model's size ({options}): {err}")


def non_empty(s: str) -> str:
    if not s.strip():
        raise argparse.ArgumentTypeError("an empty name; give a non-empty name or leave the option out")
    return s


def existing_folder(s: str) -> Path:
    p = Path(s)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{s} is not a folder; name a folder holding model.safetensors and config.json")
    return p

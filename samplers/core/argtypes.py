"""argparse ``type=`` functions shared by every command line of the project (``samplers``, the benchmarks, the
training commands): a bad value is argparse's one-line error (exit status 2) naming the value and the rule, before
any work starts."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .files import unwritable_folder


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


def int_in(low: int, high: int, limit: str):
    """An integer in [low, high]; ``limit`` says what ``high`` is (``"the pipeline's step limit"``), for the error
    that names it."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer: pass an integer from {low} to {high}") \
                from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}: pass an integer from {low} to {high}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}, {limit}: pass an integer from {low} to "
                                             f"{high}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
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


# The largest guidance scale a command takes: ComfyUI's CFG widget maximum (its KSampler takes 0 to 100). Far beyond
# it the guided output overflows float16 (1e30) or float32 (1e308) mid-sampling, long after the arguments were read.
CFG_LIMIT = 100.0


def cfg_problem(value: float) -> str | None:
    """Why ``value`` is not a guidance scale (None: it is one): a finite number with ``|cfg| <= CFG_LIMIT``."""
    if not math.isfinite(value):
        return f"{value} is not a finite number: pass a guidance scale with |cfg| <= {CFG_LIMIT:g} (1 = none)"
    if abs(value) > CFG_LIMIT:
        shown = f"{value:g}"
        if abs(float(shown)) <= CFG_LIMIT:
            shown = repr(float(value))  # :g rounds 100.0001 to 100, the limit itself: show the value as given
        return (f"{shown} is beyond |cfg| <= {CFG_LIMIT:g}, ComfyUI's CFG widget maximum (its guided output "
                f"overflows long before such a scale means anything): pass a scale in [-{CFG_LIMIT:g}, "
                f"{CFG_LIMIT:g}] (1 = none)")
    return None


def cfg_scale(text: str) -> float:
    """A classifier-free guidance scale: a finite number with ``|cfg| <= CFG_LIMIT`` (ComfyUI's widget maximum)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: pass a guidance scale with |cfg| <= "
                                         f"{CFG_LIMIT:g} (1 = none)") from None
    problem = cfg_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


cfg_scale.__name__ = "guidance scale"

# Seeds a command line takes: 0 <= seed < SEED_MAX. The seeds derived from one (benchmarks.common.item_seeds:
# seed * 100 003 + item + stream; samplers fit: seed * 1 000 003 + item; data streams seed + 50 000) then stay far
# below samplers.core.seeds.SEED_LIMIT (2**64), which every generator seed must (tests/test_bench_cli_seams.py
# checks the margin): a negative or huge seed is refused here, never wrapped to another or failed in a cell.
SEED_MAX = 2**32


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer: pass a seed in [0, 2**32)") from None
    if not 0 <= value < SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32): pass a seed in that range (the seeds "
                                         "derived from it per item must stay valid generator seeds)")
    return value


seed.__name__ = "seed"


def cores() -> int:
    """The CPU cores this process may run on: its affinity set where the platform has one
    (``os.sched_getaffinity``: a container or ``taskset`` limits it), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads(text: str) -> int:
    """``--threads``: an integer from 1 to the cores this process may run on (:func:`cores`). More threads than
    cores only compete for them, and a huge count aborts the process in the OpenMP runtime (libgomp: "Out of memory
    allocating ..." for its per-thread stacks) before any error can name it."""
    return int_in(1, cores(), "the cores this process may run on (os.sched_getaffinity / os.cpu_count)")(text)


threads.__name__ = "thread count"


def _blocked_by_a_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path`` itself) when it is not a folder."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def _named(text: str | Path, what: str) -> Path:
    """``text`` as a path, refused when empty: ``Path('')`` is ``Path('.')``, so an empty value (an unset shell
    variable, ``--out ""``) would otherwise write into, or read, the current folder without anyone naming it. A
    leading ``~`` is expanded (``os.path.expanduser``), as the shell expands it after a space but not after ``=``
    (``--out=~/x.png``)."""
    if isinstance(text, str) and text == "":
        here = " (. for the current folder)" if what == "folder" else ""
        raise argparse.ArgumentTypeError(f"'' is an empty path, which names no {what}: name the {what}{here}")
    return Path(os.path.expanduser(text))


def path_to(what: str):
    """A path naming ``what`` (a folder or file), as text: refused when empty, ``~`` expanded (:func:`_named`); the
    command checks the rest (that it exists, is of the right kind) and names it."""
    def parse(text: str) -> str:
        _named(text, what)
        return os.path.expanduser(text)

    parse.__name__ = what
    return parse


def folder_path(text: str | Path) -> Path:
    """A folder to write into later (a cache, made at its first save): refused at once when it is empty, or when
    it, or a folder above it, is a file. Whether it can be written is left to the command (:func:`out_folder`
    checks it), since a default such as ``--cache out/cache`` is parsed even where ``--no-cache`` leaves it
    unused."""
    path = _named(text, "folder")
    blocker = _blocked_by_a_file(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"is under {str(blocker)!r}, a file"
        raise argparse.ArgumentTypeError(f"{str(path)!r} {what}, not a folder: name a folder (new or existing) to "
                                         "write into")
    return path


def out_folder(text: str | Path) -> Path:
    """``--out`` naming a folder (created if missing): refused at once when it is empty, when it, or a folder above
    it, is a file (:func:`folder_path`), or when it cannot be written — a file cannot be created in it or, where it
    is missing, in the folder above it where it would be made (permissions, a read-only file system, /sys:
    :func:`samplers.core.files.unwritable_folder`, which creates nothing) — rather than after the run, whose work
    would be lost when its results could not be saved."""
    path = folder_path(text)
    why = unwritable_folder(path)
    if why is not None:
        raise argparse.ArgumentTypeError(f"{str(path)!r}: {why}; name a folder you can write to")
    return path


def out_file(text: str | Path) -> Path:
    """``--out`` naming a file: refused at once when it is empty, a folder or sits under a file."""
    path = _named(text, "file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{str(path)!r} is a folder: name the file to write")
    blocker = _blocked_by_a_file(path.parent)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{str(path)!r} is under {str(blocker)!r}, a file: name a file in a folder")
    if not path.parent.is_dir():  # found now, not when the file is written after the run
        raise argparse.ArgumentTypeError(f"{str(path)!r} is in {str(path.parent)!r}, which does not exist: create "
                                         "it, or name a file in an existing folder")
    return path


_SEEN = "_options_seen"  # StoreOnce's record of one parse, dropped by ArgumentParser when the parse ends


def _shown(values) -> str:
    return " ".join(map(str, values)) if isinstance(values, list) else str(values)


def _given_twice(parser, action: argparse.Action, option_string: str, before, values) -> None:
    name = " / ".join(action.option_strings)  # its spellings: the first time may have used another one
    parser.error(f"{name} was given twice (first {_shown(before)}, then {option_string} {_shown(values)}): it takes "
                 "its value(s) once, and the first would be dropped; give it once"
                 + (f", with every value: {option_string} {_shown(before)} {_shown(values)}"
                    if action.nargs in ("+", "*") else ""))


class StoreOnce(argparse._StoreAction):
    """argparse's ``store``, refusing an option given twice: argparse would keep the last value and drop the first
    without a word (``--seed 0 --seed 1`` made one image, of seed 1). Options that collect (``append``) are not
    stores and may repeat. Used by :class:`ArgumentParser`, which drops its record when the parse ends."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None:
            seen = namespace.__dict__.setdefault(_SEEN, set())
            if self.dest in seen:
                _given_twice(parser, self, option_string, getattr(namespace, self.dest), values)
            seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose plain options (the ``store`` action, argparse's default) refuse to be
    given twice (:class:`StoreOnce`), and which takes no abbreviation of an option (``allow_abbrev=False``: argparse
    would read ``samplers compare --sampler heun`` as ``--samplers heun``, and ``--step`` as ``--steps``, a guess
    that a later option of that prefix would change); its sub-command parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)

    def _print_message(self, message, file=None):
        # argparse swallows an OSError of this write, so `samplers --help` whose reader had left ended with 0 as if
        # read; a BrokenPipeError goes through (the command ends with 141, samplers.__main__), only where the write
        # itself failed (a reader that left after reading it all is no failure: 0, as `git --help | head -1`)
        if message:
            try:
                (file or sys.stderr).write(message)
            except BrokenPipeError:
                raise
            except (AttributeError, OSError):
                pass

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.__dict__.pop(_SEEN, None)
        return namespace, extras


class Given(argparse.Action):
    """``action=Given``: stores an option's value as argparse's default action does, and records that it was given
    on the command line (:func:`was_given`), which its default alone cannot tell (the same value may be typed); given
    twice, it is refused as :class:`StoreOnce` refuses (with any parser: the record is ``given`` itself)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest in getattr(namespace, "given", ()):
            _given_twice(parser, self, option_string, getattr(namespace, self.dest), values)
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _record(namespace: argparse.Namespace, name: str) -> None:
    namespace.given = {*getattr(namespace, "given", ()), name}


def _flag_name(option_string: str) -> str:
    """``--no-learned`` → ``no_learned``: the name :func:`was_given` knows a flag by."""
    return option_string.lstrip("-").replace("-", "_")


class GivenConst(argparse.Action):
    """``action=GivenConst``: argparse's ``store_const`` (a flag storing ``const`` into ``dest``) that records it was
    given under its own name (``--no-learned``: ``no_learned``, for :func:`was_given`). A flag that shares its dest
    with an option (``--learned DIR`` / ``--no-learned``) stores over it, the later one silently winning; recorded,
    the two given together can be refused by name."""

    def __init__(self, option_strings, dest, const=None, default=None, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, const=const, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const)
        _record(namespace, _flag_name(option_string))


class GivenBoolean(argparse.BooleanOptionalAction):
    """``action=GivenBoolean``: argparse's ``BooleanOptionalAction`` (``--x`` / ``--no-x``) that records which spelling
    was given (``x`` or ``no_x``, for :func:`was_given`): argparse keeps the later of the two without a word."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _record(namespace, _flag_name(option_string))


def was_given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the option stored in ``dest`` (declared with ``action=Given``; a flag of :class:`GivenConst` or
    :class:`GivenBoolean`: its own name, ``no_learned``) was given on the command line."""
    return dest in getattr(args, "given", ())

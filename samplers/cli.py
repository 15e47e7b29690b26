"""The ``samplers`` command: ``samplers list`` and ``samplers names`` here; the commands that also need the
model stack (``demo``, ``generate``, ``compare``, ``fit``) are added by the app layer (``app.cli``), found
through the ``samplers.commands`` entry point so that this package never imports it."""
from __future__ import annotations

import argparse
import os
import select
import sys

# The status of a command whose reader left early (``samplers names | head``): 128 + SIGPIPE, what a shell reports for
# ``git log | head`` or ``seq 1 1000000 | head``, which SIGPIPE ends without a word. Not 1, a failure while running
# (the command did all it was asked until nobody read it), and not 0, which would say every line was written.
READER_LEFT = 128 + 13


def _list(args) -> int:
    from . import available, info

    rows = [info(n) for n in available()]
    print(f"{'name':<22} {'kind':<10} {'order':>5} {'NFE/step':>8}  aliases")
    for s in rows:
        print(f"{s.name:<22} {s.kind:<10} {s.order:>5} {s.nfe_per_step:>8g}  {', '.join(s.aliases)}")
    print(f"\n{len(rows)} samplers")
    return 0


def _names(args) -> int:
    """Every name the resolver knows: label → (sampler, options, schedule)."""
    from .core import names

    rows = names.table()
    if args.source:
        rows = [r for r in rows if r.source == args.source]
    print(f"{'name':<32} {'source':<9} {'sampler':<20} {'schedule':<22} options")
    for r in rows:
        schedule = "" if r.schedule is None else r.schedule + (" (named)" if r.schedule_is_explicit else " (default)")
        if r.discard_penultimate_sigma:
            schedule += ", drop σ_{n-1}"
        options = ", ".join(f"{k}={v!r}" for k, v in r.options.items())
        print(f"{r.label:<32} {r.source:<9} {r.sampler:<20} {schedule:<22} {options}")
    print(f"\n{len(rows)} names; prefixes a1111:, comfyui:, diffusers:, registry: pick one table")
    return 0


def _plugins(subparsers) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="samplers.commands"):
        ep.load()(subparsers)


def build_parser() -> argparse.ArgumentParser:
    from .core.argtypes import ArgumentParser  # an option given twice is refused, not overwritten

    parser = ArgumentParser(prog="samplers", description=__doc__,
                            epilog="Errors are one line; exit status 2 for a usage error (a bad value, name or path, "
                                   "an option given twice), 1 for a failure while running, 141 without a word "
                                   "where stdout's reader leaves early (samplers names | head). --debug shows the "
                                   "traceback.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered sampler with its kind, order and NFE per step").set_defaults(fn=_list)
    names = sub.add_parser("names", help="every sampler name the library resolves (registry, A1111, ComfyUI, "
                                         "diffusers) with the sampler, options and schedule it stands for")
    names.add_argument("--source", choices=("registry", "a1111", "comfyui", "diffusers"), default=None)
    names.set_defaults(fn=_names)
    _plugins(sub)
    for command in sub.choices.values():  # `samplers generate ... --debug` as well as `samplers --debug generate ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def exit_status(err: BaseException) -> int:
    """2 for a usage error (a value, name, type or path the user gave), 1 for a failure while running."""
    from .core.errors import InvalidInput, InvalidType

    return 2 if isinstance(err, (InvalidInput, InvalidType, FileNotFoundError, IsADirectoryError, FileExistsError,
                                 NotADirectoryError, PermissionError)) else 1


def stdout_closed() -> bool:
    """Whether stdout's reader has gone (the read end of its pipe closed: poll reports an error on the write end), so
    that a BrokenPipeError is the reader's leaving, not a failure of the command's own pipes. Where poll is missing
    (Windows) a BrokenPipeError is taken to be stdout's, as the Python docs' recipe takes it; a stdout with no file
    descriptor (a caller's StringIO) has no reader to leave."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def reader_left() -> int:
    """End quietly after stdout's reader left (Python's recipe, docs "Note on SIGPIPE"): stdout now writes to devnull,
    so that the interpreter's own flush at exit raises nothing more; :data:`READER_LEFT`."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return READER_LEFT


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.fn(args)
        sys.stdout.flush()  # the last lines, here rather than at the interpreter's exit, so a reader that left shows
        return status
    except Exception as err:  # noqa: BLE001 - every error becomes one line unless --debug
        if isinstance(err, BrokenPipeError) and stdout_closed():  # not a pipe of the command's own: its reader left
            return reader_left()
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"samplers {args.command}: error: {message}" + ("" if exit_status(err) == 2 else
                                                              f" ({type(err).__name__}; --debug for the traceback)"),
              file=sys.stderr)
        return exit_status(err)


if __name__ == "__main__":
    sys.exit(main())

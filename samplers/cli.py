"""The ``samplers`` command: ``samplers list`` and ``samplers names`` here; the commands that also need the
model stack (``demo``, ``generate``, ``compare``, ``fit``) are added by the app layer (``app.cli``), found
through the ``samplers.commands`` entry point so that this package never imports it."""
from __future__ import annotations

import argparse
import sys


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
                                   "an option given twice), 1 for a failure while running. --debug shows the "
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except Exception as err:  # noqa: BLE001 - every error becomes one line unless --debug
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"samplers {args.command}: error: {message}" + ("" if exit_status(err) == 2 else
                                                              f" ({type(err).__name__}; --debug for the traceback)"),
              file=sys.stderr)
        return exit_status(err)


if __name__ == "__main__":
    sys.exit(main())

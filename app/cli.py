"""The app's commands, added to the ``samplers`` command (entry point ``samplers.commands``): ``demo``,
``generate``, ``compare`` and ``fit`` (:mod:`app.fit`).

    samplers generate "a large red circle at the top left" --sampler dpmpp_2m --steps 20 --seed 0 1 2 --out out/red.png
    samplers compare "a small blue ring in the centre" --samplers euler heun dpmpp_2m --steps 5 10 20 --out out/grid.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from models._checks import MAX_STEPS
from samplers.core.argtypes import cfg_scale, int_in, out_folder, path_to, threads
from samplers.core.errors import InvalidInput, LimitExceeded
from samplers.core.seeds import SEED_LIMIT
from samplers.core.validate import distinct

# txt2img's own arguments, which a sampler option must not shadow, and the options a command line cannot use
_NOT_OPTIONS = {"sampler": "set it with --sampler", "schedule": "set it with --schedule", "steps": "set it with --steps",
                "cfg": "set it with --cfg", "width": "set it with --width", "height": "set it with --height",
                "seed": "set it with --seed: each image's seed seeds the noise its sampler draws too",
                "batch": "give one --seed per image", "prompt": "the prompt is the command's first argument",
                "allow_other_model": "set it with --allow-other-model", "output": "set the PNG path with --out",
                "progress": "the command always shows its progress",
                "info": "it is a dict the sampler fills for a Python caller, which the command would not show"}
# where compare differs: it has no --sampler, --width / --height, --allow-other-model, and makes --n images per cell
_NOT_OPTIONS_COMPARE = {
    **_NOT_OPTIONS, "sampler": "name the rows with --samplers", "batch": "set the images per cell with --n",
    "width": "compare draws every cell at the model's default size; use `samplers generate --width` for another",
    "height": "compare draws every cell at the model's default size; use `samplers generate --height` for another",
    "allow_other_model": "compare runs a fitted solver on its own model only (it has no --allow-other-model); use "
                         "`samplers generate --allow-other-model` to run one on another model",
    "output": "set the grid's PNG path with --out"}


# The constants JSON spells otherwise, as Python writes them (str(math.inf), str(True), str(None)) and A1111's
# infotext carries them (s_tmax=inf, A1111's default, which docs/models.md says is taken): read as those values. Kept
# as text, they reached the option's rule as strings, whose refusal read "euler_at_final must be True or False, got
# 'False'". No option takes one of these words as text of its own (its strings are names: noise samplers, variants).
PYTHON_CONSTANTS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "True": True, "False": False, "None": None}
# other spellings of those constants (INF, Infinity with a sign JSON lacks, TRUE, none): refused, naming both
CONSTANT_WORDS = {"true", "false", "null", "none", "nan", *(s + w for s in ("", "+", "-") for w in ("inf", "infinity"))}
OPTION_SPELLINGS = ("JSON's true, false, null, Infinity, -Infinity, NaN, or Python's True, False, None, inf, -inf, "
                    "nan")


def sampler_option(text: str) -> tuple[str, object]:
    """``--option KEY=VALUE``: VALUE read as JSON (``0.5``, ``true``, ``Infinity``, ``[[2, 1, 0.1, 2]]``,
    ``"karras"``), else as Python writes a constant (:data:`PYTHON_CONSTANTS`: ``inf``, ``True``, ``None``), else
    kept as the string given (``noise_sampler=brownian``); the sampler's own rules check it, as they check the
    library's keyword arguments. Another spelling of a constant (``INF``, ``TRUE``) is refused, naming those two."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"an option is KEY=VALUE with KEY a sampler option's name, e.g. eta=0.5 or "
                                         f"noise_sampler=brownian (docs/samplers.md lists each sampler's options); got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        pass
    if raw in PYTHON_CONSTANTS:
        return key, PYTHON_CONSTANTS[raw]
    if raw.strip().lower() in CONSTANT_WORDS:
        raise argparse.ArgumentTypeError(f"{text!r}: {raw!r} spells a constant as neither JSON nor Python does; "
                                         f"write {OPTION_SPELLINGS}")
    return key, raw


def _sampler_options(pairs: list[tuple[str, object]], command: str = "generate") -> dict:
    """The ``--option`` pairs as keyword arguments: each key once, none of them txt2img's own arguments (refused with
    how ``command`` sets it, where it does)."""
    refused = _NOT_OPTIONS_COMPARE if command == "compare" else _NOT_OPTIONS
    options: dict = {}
    for key, value in pairs:
        if key in refused:
            raise InvalidInput(f"--option {key}=... is not a sampler option on the command line: {refused[key]}")
        if key in options:
            raise InvalidInput(f"--option {key} is given twice ({options[key]!r} and {value!r}); give it once")
        options[key] = value
    return options


# The --out of generate / compare when none is given: under out/, which .gitignore ignores, as demo's out/demo and the
# benchmarks' and training's work folders are. In the current folder (the defaults were generated.png, compare.png) a
# plain run from a checkout left an untracked file there, replaced by the next run.
# the pipeline's own rules, applied as the command line is read so that a refusal names the flag
STEPS = int_in(1, MAX_STEPS, "the pipeline's step limit")
SEED = int_in(0, SEED_LIMIT - 1, "the largest seed torch's generators take")
DEFAULT_OUT = {"generate": Path("out") / "generated.png", "compare": Path("out") / "compare.png"}


def _check_out(path: str | Path | None, images: int = 1, command: str = "generate") -> Path:
    """``--out``, a PNG file to write (``images`` > 1: ``<stem>-<k>.png`` beside it), checked before the model is
    loaded by the rule ``save_images`` applies (:func:`models.io.check_png_path`). Not given (None): the command's
    :data:`DEFAULT_OUT`, checked without making anything (an ``--out`` given must be in an existing folder): its
    folder, where missing, is made by :func:`_make_out_folder` just before the image is written. It was made here,
    before the sampler, steps and options were checked, so a refused command left an empty out/ behind."""
    from models.io import check_png_path

    from samplers.core.files import unwritable_folder

    if path is None:
        path = DEFAULT_OUT[command]
        folder = path.parent
        if os.path.lexists(folder) and not folder.is_dir():  # a file, or a link to nothing (exists() is False)
            raise _default_out_refused(path, "a file of that name is here" if folder.exists() or not folder.is_symlink()
                                       else "a symbolic link to nothing is here")
        if not folder.exists():  # made just before the write; here only whether it can be (a temporary file, removed)
            why = unwritable_folder(folder)
            if why is not None:
                raise _default_out_refused(path, why)
            return path
    return check_png_path(path, images, "--out")


def _default_out_refused(path: Path, why: str) -> InvalidInput:
    return InvalidInput(f"the default --out {str(path)!r} needs the folder {str(path.parent)!r}, which cannot be made "
                        f"here ({why}); give --out a PNG path")


def _make_out_folder(out: Path, given: str | Path | None) -> None:
    """The default ``--out``'s folder (out/), made once every check has passed, just before the image is written
    (:func:`_check_out` checked that it can be); an ``--out`` given (``given``) is in a folder that exists."""
    if given is not None:
        return
    try:
        out.parent.mkdir(exist_ok=True)
    except OSError as err:  # made a file, or unwritable, since the check
        why = "a file of that name is here" if isinstance(err, FileExistsError) else err.strerror or str(err)
        raise _default_out_refused(out, why) from None


def _same_runs(given, schedule: str | None) -> None:
    """Refuse two ``--samplers`` names that resolve to one run (sampler, schedule, options): ``dpmpp_2m`` and
    ``sample_dpmpp_2m``, or two labels of one schedule. Each name is keyed on the schedule it runs with
    ``schedule`` (:func:`samplers.core.names.resolve_call`: "DPM++ 2M Karras" with ``karras`` runs its own
    ``a1111:Karras``). Names whose schedule is the model's default are compared again on the model's own schedule,
    before any image is made (:func:`app.images.compare_grid`)."""
    from samplers.core import names

    seen: dict = {}
    for name in given:
        lab = names.resolve(name)
        if lab.sigmas is not None:  # a fitted solver: its own nodes, compared by compare_grid
            continue
        runs_on = names.resolve_call(name, schedule)[1]
        own = runs_on is not None and runs_on == lab.schedule  # the label's own, with its options
        on = (runs_on, tuple(sorted(lab.schedule_options.items())) if own else ())
        key = (lab.sampler, repr(sorted(lab.options.items())), on, lab.discard_penultimate_sigma)
        twin = seen.setdefault(key, name)
        if twin != name:
            where = (f"the {on[0]!r} schedule" if on[0] is not None else "the model's default schedule")
            raise InvalidInput(f"--samplers {twin!r} and {name!r} both run {lab.sampler} on {where} with the same "
                               "options: the grid would show one run twice under two names; list one of them")


@contextlib.contextmanager
def _cli_fixes(command: str):
    """A fitted solver refused for another model names the library's ``allow_other_model=True`` as the fix (and the
    option ``allow_other_model`` where it does not help): on the command line it is ``--allow-other-model``
    (generate), which compare does not take. A VAE that is not the
    U-Net's names ``Pipeline.load(vae=...)``: on the command line it is ``--vae`` (a usage error, exit 2). A
    ``--weights`` folder of another kind than ``--model`` names is told with those two flags, not as ``model='flow'``."""
    from models.pipeline import ModelKindError, VAEMismatchError
    from samplers.fitted.solver import OtherModelError

    flag = ("--allow-other-model" if command == "generate" else
            "`samplers generate --allow-other-model` (compare runs a fitted solver on its own model only)")
    try:
        yield
    except OtherModelError as err:
        # "pass allow_other_model=True" is the fix; a bare "allow_other_model" (the σ = inf refusal: "does not change
        # them") names the option, spelt on the command line as the flag
        text = str(err).replace("allow_other_model=True", flag).replace("allow_other_model", "--allow-other-model")
        raise OtherModelError(text) from None
    except VAEMismatchError as err:
        raise VAEMismatchError(str(err).replace("Pipeline.load(vae=...)", "--vae FOLDER, or leave --vae out for the "
                                                "shipped VAE")) from None
    except ModelKindError as err:
        raise ModelKindError(f"--model {err.model} asks for a U-Net with prediction {err.model!r}, but --weights "
                             f"{err.folder} holds one with prediction {err.prediction!r}; leave out --model (or pass "
                             f"--model {err.prediction}), or give --weights a folder of a {err.model!r} U-Net",
                             model=err.model, folder=err.folder, prediction=err.prediction) from None


def _kind(args) -> str | None:
    """The prediction type of the model the command will load, where the arguments tell it without loading it."""
    return args.model or ("eps" if args.weights is None else None)


def _add_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--option", type=sampler_option, action="append", default=[], metavar="KEY=VALUE",
                   help=f"{what}, e.g. --option eta=0.5 --option noise_sampler=brownian (VALUE read as JSON, else as "
                        "Python writes a constant: true or True, Infinity or inf, null or None; else as text; "
                        "docs/samplers.md lists each sampler's options and defaults)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="e.g. 'a large red circle at the top left' (the caption grammar: docs/models.md)")
    p.add_argument("--model", choices=("eps", "flow"), default=None,
                   help="which shipped model (default eps); with --weights, the kind that folder must hold")
    p.add_argument("--weights", type=path_to("U-Net folder"), default=None,
                   help="a U-Net folder instead of the shipped weights")
    p.add_argument("--vae", type=path_to("VAE folder"), default=None, help="the VAE folder that U-Net was trained with (default: the shipped VAE)")
    p.add_argument("--schedule", default=None, help="sigma schedule (default: the one the sampler's label implies, as A1111's 'DPM++ 2M' "
                        "Karras, else the model's; e.g. karras, flow)")
    p.add_argument("--cfg", type=cfg_scale, default=None,
                   help="classifier-free guidance scale (1 = none; |cfg| <= 100, ComfyUI's widget maximum)")


def _generate(args) -> int:
    with _cli_fixes("generate"):
        return _run_generate(args)


def _run_generate(args) -> int:
    from models.pipeline import MAX_BATCH, Pipeline, PipelineSpec, check_sampler, save_images

    from samplers.core import names

    distinct("--seed", args.seed, "one image per seed: a seed listed twice would make one image twice")
    options = _sampler_options(args.option)
    if args.allow_other_model:
        # the name as resolved (case-insensitively: FITTED:path), or learned_multistep with --option solver=PATH
        found = names.resolve(args.sampler) if args.sampler is not None else None
        if found is None or not (found.source == "fitted" or (found.sampler == "learned_multistep"
                                                              and options.get("solver") is not None)):
            raise InvalidInput("--allow-other-model applies to a fitted solver (--sampler fitted:PATH), which refuses "
                               f"another model; {args.sampler or 'the default sampler'!r} runs on any model without "
                               "it")
    if len(args.seed) > MAX_BATCH:  # the pipeline's limit, named as the command's seeds
        raise LimitExceeded(f"got {len(args.seed)} --seed values, more than the limit of {MAX_BATCH} images per run "
                            f"(one per seed); give at most {MAX_BATCH} seeds and make the rest in another run")
    out = _check_out(args.out, len(args.seed))
    if args.allow_other_model:
        options["allow_other_model"] = True
    if args.sampler is not None:  # the name, a fitted file, its steps: before the weights are read and hashed
        check_sampler(args.sampler, args.schedule, args.steps, options, _kind(args))
    seeds = args.seed if len(args.seed) > 1 else args.seed[0]
    # everything txt2img checks that needs no weights, by the pipeline's own rules, from the folders' config.json:
    # the VAE, size, prompt length (the text encoder's tokenizer), seeds, schedule, steps, memory
    PipelineSpec.read(args.weights, model=args.model, vae=args.vae).check_request(
        args.sampler, args.schedule, args.steps, options, seed=seeds, batch=len(args.seed), height=args.height,
        width=args.width, prompt=args.prompt)
    pipe = Pipeline.load(args.weights, model=args.model, vae=args.vae)
    t0 = time.perf_counter()
    images = pipe.txt2img(args.prompt, sampler=args.sampler, schedule=args.schedule, steps=args.steps, cfg=args.cfg,
                          seed=seeds, batch=len(args.seed), width=args.width, height=args.height, progress=True,
                          **options)
    requests = [pipe.request(args.prompt, args.sampler, args.schedule, args.steps, args.cfg, seed=s, width=args.width,
                             height=args.height, options=options) for s in args.seed]
    _make_out_folder(out, args.out)
    paths = save_images(images, out, requests)  # each PNG records its request (A1111's infotext, and as JSON)
    print(f"wrote {', '.join(f'{p} (seed {s})' for p, s in zip(paths, args.seed))} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _compare(args) -> int:
    with _cli_fixes("compare"):
        return _run_compare(args)


def _run_compare(args) -> int:
    from models import io as mio
    from models.pipeline import MAX_BATCH, Pipeline, PipelineSpec, check_sampler, png_info, shared_options
    from samplers.core import names

    from .images import compare_grid, format_table, refuse_fitted_schedule, unscorable

    if args.n < 1:
        raise InvalidInput(f"--n (images per cell, for the match rate) must be at least 1, got {args.n}")
    if args.n > MAX_BATCH:  # the pipeline's batch limit, named as the command's --n
        raise LimitExceeded(f"--n {args.n} is more than the limit of {MAX_BATCH} images per cell (the pipeline's "
                            f"images per run); pass --n {MAX_BATCH} or fewer")
    if args.seed > SEED_LIMIT - args.n:  # item k uses --seed + k, a generator seed below 2**64 (one --seed: no list)
        raise InvalidInput(f"--seed {args.seed} with --n {args.n}: image k of a cell uses seed --seed + k, which must "
                           f"be in [0, 2**64); pass --seed from 0 to {SEED_LIMIT - args.n}")
    distinct("--samplers", args.samplers, "the grid has one row per sampler")
    distinct("--steps", args.steps, "the grid has one column per step count")
    out = _check_out(args.out, command="compare")
    options = _sampler_options(args.option, "compare")
    per_row = shared_options(args.samplers, options)  # each row's: a noise-only option it never reads left out there
    for name in args.samplers:  # the names, options and fitted files before the weights are read; compare_grid checks the rest
        check_sampler(name, options=per_row[name], prediction=_kind(args))
    refuse_fitted_schedule(args.samplers, args.schedule, "--schedule")  # as generate refuses the pair
    _same_runs(args.samplers, args.schedule)
    spec = PipelineSpec.read(args.weights, model=args.model, vae=args.vae)  # config.json only: before the weights
    for name in args.samplers:  # every cell as compare_grid runs it: item k of n uses seed + k
        fitted = names.resolve(name).sigmas is not None  # a fitted solver: its own steps and nodes only
        for steps in [None] if fitted else args.steps:
            spec.check_request(name, args.schedule, steps, per_row[name], seed=args.seed, batch=args.n,
                               prompt=args.prompt)
    why = unscorable(args.prompt)
    if why is not None:  # sampled as generate samples it; only its match rate cannot be had
        print(f"samplers compare: note: the checker cannot score {args.prompt!r}, which is outside the caption "
              f"grammar ({why}; docs/models.md, 'The caption grammar'): the images are made, the match column "
              "shows –", file=sys.stderr, flush=True)
    pipe = Pipeline.load(args.weights, model=args.model, vae=args.vae)
    prompts = [args.prompt] * args.n
    grid, rows = compare_grid(pipe, prompts, args.samplers, args.steps, seed=args.seed, cfg=args.cfg,
                              schedule=args.schedule, title=f"{pipe.model.config.prediction}: {args.prompt!r}, seed {args.seed}",
                              options=options)
    # the grid records every pictured cell's request (item 0: --seed), and the first one's as A1111's infotext, as
    # A1111's grids carry their first image's
    cells = [pipe.request(args.prompt, r["sampler"], args.schedule, r["steps"], args.cfg, seed=args.seed,
                          options=per_row[r["sampler"]]) for r in rows]
    _make_out_folder(out, args.out)
    mio.atomic_save_image(out, grid, png_info(cells[0], {"cells": cells}), what="--out")
    print(format_table(rows, args.n))
    print(f"wrote {out}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, threads=args.threads)
    return 0


def add_commands(subparsers) -> None:
    """Add ``demo``, ``generate``, ``compare`` and ``fit`` to the ``samplers`` command's subparsers."""
    demo = subparsers.add_parser("demo", help="the main demo: analytic steps-vs-error table, then images on the "
                                              "shipped models")
    demo.add_argument("--out", type=out_folder, default="out/demo",
                      help="folder for the demo's images (created; a file there, or a folder no file can be "
                           "written in, is refused at once)")
    demo.add_argument("--threads", type=threads, default=None,
                      help="torch threads, at most the cores this process may run on (default: 1 for the analytic "
                           "table; for the images the faster of 1 and torch's default, measured once)")
    demo.set_defaults(fn=_demo)
    g = subparsers.add_parser("generate", help="text → image with a shipped model and any registry sampler")
    _add_common(g)
    g.add_argument("--sampler", default=None, help="a sampler name (`samplers names`) or fitted:PATH (a solver from "
                                                   "`samplers fit`); default: the model's")
    g.add_argument("--steps", type=STEPS, default=None, help="sampling steps (default 20)")
    g.add_argument("--seed", type=SEED, nargs="+", default=[0], help="one image per seed (default 0)")
    g.add_argument("--width", type=int, default=64)
    g.add_argument("--height", type=int, default=64)
    g.add_argument("--out", type=path_to("PNG file"), default=None,
                   help=f"PNG path, replaced if it exists; several seeds write <stem>-<k>.png (default: "
                        f"{DEFAULT_OUT['generate']}, its folder made if missing)")
    g.add_argument("--allow-other-model", action="store_true",
                   help="run a fitted solver (--sampler fitted:PATH) on a model other than the one it was fitted to")
    _add_option(g, "a sampler option")
    g.set_defaults(fn=_generate)

    c = subparsers.add_parser("compare", help="labelled PNG grid of samplers × step counts (same prompt and seed) + table")
    _add_common(c)
    c.add_argument("--samplers", nargs="+", default=["euler", "heun", "dpmpp_2m"])
    c.add_argument("--steps", type=STEPS, nargs="+", default=[5, 10, 20])
    c.add_argument("--seed", type=SEED, default=0, help="seed of the pictured image (item k uses seed + k)")
    c.add_argument("--n", type=int, default=4, help="images per cell for the match rate")
    c.add_argument("--out", type=path_to("PNG file"), default=None,
                   help=f"PNG path of the grid, replaced if it exists (default: {DEFAULT_OUT['compare']}, its folder "
                        "made if missing)")
    _add_option(c, "a sampler option for every row (each sampler must take it)")
    c.set_defaults(fn=_compare)

    from .fit import add_parser as add_fit

    add_fit(subparsers)

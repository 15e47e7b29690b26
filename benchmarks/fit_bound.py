"""Fits calibrated on the very starts they are scored on: would more calibration data close a missed target?

    python -m benchmarks.fit_bound --results docs/benchmarks/fitted/mixtures-5/results.json --out out/fit_bound
    python -m benchmarks.fit_bound --results A/results.json B/results.json --cells gm-ve/d56-k9-s1313:5

The deterministic benchmark scores each fit on held-out starts (``--results``: its results.json, which names the
held-out seeds and starts per seed, diffusers' best scheduler there and the fit calibrated elsewhere). Where a fit
misses a target — (b) of docs/fitted.md: at most 0.5 × diffusers' best — this asks whether more calibration data
would have closed the gap: each cell is fitted with the benchmark's options (``FitConfig`` defaults: minibatches of
512) but calibrated on the held-out starts themselves, every one with its exact PF-ODE endpoint (so no pool), and
scored on them. Not a held-out figure, and not a bound either: the optimiser ends in one of many local minima, and a
fit that saw other starts can score better. A cell this fit misses too is not short of data of that kind. Writes
results.json and a table.md generated from it.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from samplers.core.errors import InvalidInput
from samplers.core.files import read_json
from samplers.fitted.fitting import FitConfig, fit, pair_label

from . import common
from .deterministic import full_start
from .fit_heldout import run_solver

MODULE = "benchmarks.fit_bound"


def cell(text: str) -> tuple[str, int]:
    """``problem:nfe`` → (problem, nfe)."""
    problem, sep, nfe = text.rpartition(":")
    if not sep or not problem or not nfe.isdigit() or int(nfe) < 1:
        raise argparse.ArgumentTypeError(f"a cell is PROBLEM:NFE with NFE >= 1, e.g. gm-ve/d56-k9-s1313:5; "
                                         f"got {text!r}")
    return problem, int(nfe)


def fit_on(problem: common.Problem, nfe: int, seeds, batch: int, iters: int = FitConfig.iters, log=None):
    """The cell fitted on ``seeds`` × ``batch`` starts (the benchmark's options, no pool: every start solved)."""
    sigma_max = full_start(problem)
    noise = torch.cat([problem.noise(batch, seed).double() for seed in seeds])
    return fit(problem.denoiser, FitConfig(nfe, iters=iters, pool=0), noise, problem.sigma_min, sigma_max,
               reference_fn=lambda x, extra, sigma: problem.reference(x, sigma), native=problem.native, log=log)


def pools(rows: list[dict]) -> str:
    """The held-out pools of ``rows``, in words."""
    seen = sorted({(len(r["seeds"]), r["batch"], r["seeds"][0], r["seeds"][-1]) for r in rows})
    return ", ".join(f"{n} seeds × {b} starts, seeds {a}-{z}" for n, b, a, z in seen)


def out_of_reach(results: dict) -> list[dict]:
    """The rows of ``results`` whose fit on the scored starts still misses the target."""
    return [r for r in results["rows"] if r["bound"]["rmse"] > results["target_ratio"] * r["diffusers"]["rmse"]]


def markdown(results: dict) -> str:
    ratio = results["target_ratio"]
    rows = ["| problem | NFE | diffusers' best | target | fit, held out | ÷ diffusers | fit on these starts | "
            "÷ diffusers | wrong mode: held out / on these | kept |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["rows"]:
        d = r["diffusers"]["rmse"]
        rows.append(f"| {r['problem']} | {r['nfe']} | {d:.3e} | {ratio * d:.3e} | {r['heldout_fit']['rmse']:.3e} | "
                    f"{r['heldout_fit']['rmse'] / d:.2f} | {r['bound']['rmse']:.3e} | {r['bound']['rmse'] / d:.2f} | "
                    f"{r['heldout_fit']['wrong_mode']} / {r['bound']['wrong_mode']} | {r['kept']} |")
    missed = out_of_reach(results)
    return "\n".join([
        "# Fits calibrated on the starts they are scored on", "",
        f"Each cell fitted as the benchmark fits it but calibrated on the held-out starts it is scored on "
        f"({pools(results['rows'])}, every start with its exact endpoint) — not a held-out figure, and not a bound: "
        f"the optimiser ends in one of many local minima. Where this fit misses the target too, more calibration "
        f"data of this kind would not have closed the gap. *fit, held out*: the committed fit (calibrated on other starts) on "
        f"the same starts. *target*: {ratio} × diffusers' best. *wrong mode*: starts whose RMSE exceeds 0.3 × the "
        f"data's spread. *kept*: what the fit on these starts returned (\"fit\" or the best pair, \"start\").", "",
        *rows, "",
        f"Cells the fit misses even on the starts it is scored on: {len(missed)} of {len(results['rows'])}"
        + (" (" + ", ".join(f"{r['problem']} at {r['nfe']} NFE" for r in missed) + ")." if missed
           else "."), "",
        common.measured_line(results), ""])


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


_FIX = "name the results.json that benchmarks.deterministic --learned wrote"


def read_bench(path: Path, p: argparse.ArgumentParser) -> tuple[dict, list[dict]]:
    """A ``--results`` file and its rows with a fitted solver, every field this command reads checked: read with the
    library's JSON reader (a regular file of bounded size, valid JSON, no key named twice), else ``p.error`` (exit
    2) naming the file and the field. A row without a fit has ``fitted`` absent or null."""
    try:
        bench = read_json(path, "a results.json of benchmarks.deterministic", _FIX, missing=InvalidInput(
            f"{path} does not exist: not a results.json of benchmarks.deterministic; {_FIX}"))
    except InvalidInput as e:
        p.error(f"--results {e}")

    def bad(field: str, value, rule: str):
        p.error(f"--results {path}: field {field} is {value!r}; it must be {rule}; {_FIX}")

    def number(field: str, value, positive: bool = True):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (positive and value == 0):
            bad(field, value, "a finite number " + ("> 0" if positive else ">= 0"))

    def integer(field: str, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            bad(field, value, "an integer >= 1")

    if not isinstance(bench, dict):
        p.error(f"--results {path} holds a JSON {type(bench).__name__}, not the object a results.json is; {_FIX}")
    for key in ("target_ratio", "args", "heldout"):
        if key not in bench:
            p.error(f"--results {path} has no field {key}: not a results.json of benchmarks.deterministic; {_FIX}")
    number("target_ratio", bench["target_ratio"])
    run = bench["args"]
    if not isinstance(run, dict) or "heldout_seeds" not in run or "heldout_batch" not in run:
        bad("args", run, "an object with heldout_seeds and heldout_batch")
    seeds = run["heldout_seeds"]
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                       for s in seeds):
        bad("args.heldout_seeds", seeds, "a non-empty list of integers >= 0")
    integer("args.heldout_batch", run["heldout_batch"])
    if not isinstance(bench["heldout"], list):
        bad("heldout", bench["heldout"], "a list of rows")
    rows = []
    for i, r in enumerate(bench["heldout"]):
        where = f"heldout[{i}]"
        if not isinstance(r, dict):
            bad(where, r, "an object (a row)")
        if r.get("fitted") is None:
            continue
        for key in ("problem", "nfe"):
            if key not in r:
                p.error(f"--results {path}: {where} has a fitted solver but no field {key}; {_FIX}")
        # data, never code: a 'module:function' here would be imported and called when the problem is built
        if (why := common.builtin_problem_refusal(r["problem"])) is not None:  # the reason: a name, or a size
            p.error(f"--results {path}: field {where}.problem is {r['problem']!r}; {why}; {_FIX}")
        integer(f"{where}.nfe", r["nfe"])
        # diffusers' rmse divides (a fit's may be 0); a row without it (run without peers) has no target to bound
        for key, positive in (("fitted", False), ("diffusers", True)):
            if key == "diffusers" and r.get(key) is None:
                continue
            if not isinstance(r[key], dict) or "rmse" not in r[key]:
                bad(f"{where}.{key}", r[key], "an object with the score's rmse")
            number(f"{where}.{key}.rmse", r[key]["rmse"], positive)
        rows.append(r)
    return bench, rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, nargs="+",
                   help="results.json files of benchmarks.deterministic run with --learned")
    p.add_argument("--cells", type=cell, nargs="+", metavar="PROBLEM:NFE",
                   help="the cells to fit (default: those of --results whose fit misses the target)")
    p.add_argument("--iters", type=common.int_at_least(0), default=FitConfig.iters,
                   help=f"optimisation steps per start (default {FitConfig.iters}, as the benchmark's fits)")
    common.add_mixture_run_options(p, Path("out/fit_bound"))
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one step per fit) on stderr")
    return p


def main(argv=None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return 0
    if not args.results:
        p.error("--results is required (a results.json of benchmarks.deterministic run with --learned)")
    common.refuse_repeats(p, ("--results", [str(r) for r in args.results], "its cells would be read twice"),
                          ("--cells", [f"{pr}:{n}" for pr, n in args.cells or ()],
                           "the cell would be fitted and written twice"))
    fitted, target, pool_of = {}, None, {}  # pool_of: results.json → its held-out (seeds, starts per seed)
    for path in args.results:
        bench, rows_in = read_bench(path, p)
        target = bench["target_ratio"] if target is None else target
        pool_of[str(path)] = (bench["args"]["heldout_seeds"], bench["args"]["heldout_batch"])
        if bench["target_ratio"] != target:
            p.error(f"--results disagree on the target: {target} and {bench['target_ratio']} in {path}")
        if not rows_in:
            p.error(f"--results {path} holds no fitted solver: run benchmarks.deterministic with --learned")
        for r in rows_in:
            if (r["problem"], r["nfe"]) in fitted:
                p.error(f"{r['problem']} NFE {r['nfe']} is in two --results: pass one of them")
            fitted[(r["problem"], r["nfe"])] = dict(r, results=str(path))
    cells = args.cells or [k for k, r in fitted.items() if r.get("diffusers") is not None
                            and r["fitted"]["rmse"] > target * r["diffusers"]["rmse"]]
    missing = [f"{pr}:{n}" for pr, n in cells if (pr, n) not in fitted]
    if missing:
        p.error(f"--results hold no fitted solver for {', '.join(missing)}; they have "
                f"{', '.join(f'{pr}:{n}' for pr, n in fitted)}")
    bare = [f"{pr}:{n}" for pr, n in cells if fitted[(pr, n)].get("diffusers") is None]
    if bare:
        p.error(f"--results hold no diffusers baseline for {', '.join(bare)} (run without peers), so there is no "
                "target to bound the fit against: run benchmarks.deterministic with its peers, or leave those cells "
                "out of --cells")
    if not cells:
        print(f"every fit in --results meets the target ({target} × diffusers' best): nothing to bound")
        return 0
    problems, unavailable = common.get_problems(sorted({pr for pr, _ in cells}), entry_point=False)
    if unavailable:
        p.error(f"problems not available here: {unavailable}")
    torch.set_num_threads(args.threads)
    print(common.device_line(), flush=True)
    refs = common.ReferenceCache(args.cache)
    log = (lambda line: print(line, flush=True)) if args.verbose else None
    t0 = time.perf_counter()
    rows = []
    bar = common.progress(total=len(cells), desc="fits", disable=args.no_progress)
    for name, nfe in cells:
        bar.set_postfix_str(f"{name} NFE {nfe}", refresh=False)
        problem, r = problems[name], fitted[(name, nfe)]
        t1 = time.perf_counter()
        seeds, batch = pool_of[r["results"]]
        solver = fit_on(problem, nfe, seeds, batch, iters=args.iters, log=log)
        start = solver.meta["start"]
        rows.append({"problem": name, "nfe": nfe, "results": r["results"], "seeds": seeds, "batch": batch,
                     "diffusers": r["diffusers"], "heldout_fit": r["fitted"],
                     "kept": solver.meta["kept"],
                     "pair_label": pair_label(start["sampler"], start["options"], start["schedule"],
                                             start["solver"]["sigmas"][0]),
                     "bound": run_solver(problem, solver, seeds, batch, refs)[0],
                     "seconds": time.perf_counter() - t1})
        row = rows[-1]
        print(f"{name} NFE {nfe}: fitted on the scored starts {row['bound']['rmse']:.4g} "
              f"({row['bound']['rmse'] / r['diffusers']['rmse']:.2f} × diffusers' best; held out "
              f"{r['fitted']['rmse'] / r['diffusers']['rmse']:.2f} ×), kept {row['kept']}, "
              f"{row['seconds']:.0f} s", flush=True)
        bar.update()
    bar.close()
    command = " ".join(["python -m " + MODULE, *argv])
    result = {"info": common.run_info("cpu"), "command": command, "seconds": time.perf_counter() - t0,
              "target_ratio": target,
              "args": {"results": [str(r) for r in args.results], "cells": [f"{pr}:{n}" for pr, n in cells],
                       "iters": args.iters, "threads": args.threads}, "rows": rows}
    results = common.write_results(result, args.out)
    report(results)
    print(f"wrote {results}, {results.with_name('table.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

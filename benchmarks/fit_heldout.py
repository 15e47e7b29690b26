"""Fitted solvers against the best pair their fit was held against, on many starts neither was chosen on.

    python -m benchmarks.fit_heldout --out docs/benchmarks/fit_heldout     # the deterministic benchmark's fits
    python -m benchmarks.fit_heldout --learned docs/benchmarks/fitted/mixtures/learned --heldout-seeds 101 102
    python -m benchmarks.fit_heldout --learned out/other-fits --against docs/benchmarks/fitted/mixtures/learned ...

A fit keeps its optimised weights only where they beat the best (sampler, schedule) pair of stage 1 on the
calibration set's validation starts (:func:`samplers.fitted.fitting.validate`); this measures whether that holds on
a far larger pool: each solver file of ``--learned`` and that pair (recorded in the file: its ``start``; the fit may
have run from another of the best pairs, its ``fitted_from``) run from the
same held-out starts, scored against the exact PF-ODE endpoints (cached under ``--cache``). On a mixture the pooled
RMSE is set by the rare starts a solver sends to another mode, rarer than a validation set of a few hundred shows,
which is why the pool is large. ``--against``: also each solver beside the file of the same name in another folder
(fits of the same cells with other options), paired on the same starts. Writes results.json and a table.md
generated from it.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import torch

import samplers
from samplers.core.errors import InvalidInput
from samplers.fitted.fitting import pair_label
from samplers.fitted.solver import LearnedSolver

from . import common
from .deterministic import HELDOUT_SEEDS, ITEMS, LEARNED, pool, score
from .deterministic.running import SHIPPED_LEARNED, SHIPPED_LEARNED_NAME  # the default --learned

MODULE = "benchmarks.fit_heldout"


SOLVER_FILE = re.compile(r"(?:^|_)nfe\d+\.json$")  # <problem>_nfe<N>.json (learned_solvers), nfe<N>.json (fit)


def solvers_in(folder: Path) -> list[tuple[Path, LearnedSolver]]:
    """The fitted solver files of a folder (``benchmarks.learned_solvers`` writes them), by problem and NFE.

    Solver files are the ``*nfe<N>.json`` (``<problem>_nfe<N>.json`` as ``benchmarks.learned_solvers`` names them,
    ``nfe<N>.json`` as ``samplers fit`` does): each must load, or InvalidInput names it. Other JSON files there (a
    ``report.json``, ``results.json``, notes) are not solvers and are passed over; so are solver files without a
    recorded problem (``samplers fit``'s: their model is not a benchmark problem). One with a problem must record its
    starting pair and what it kept as a benchmark's fit does (:func:`_check_start`).

    A recorded problem must be a built-in problem's name (:func:`common.builtin_problem_refusal`), or InvalidInput
    names the file and the field: the name is data read from a file, and a ``module:function`` there would import a
    module and call a function when the problem is built."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder of fitted solver files (benchmarks.learned_solvers --out)")
    found = [(path, LearnedSolver.load(path)) for path in sorted(folder.glob("*.json"))
             if SOLVER_FILE.search(path.name)]
    found = [(path, s) for path, s in found if s.meta.get("problem") is not None]  # a benchmark's fit
    for path, s in found:
        if (why := common.builtin_problem_refusal(s.meta["problem"])) is not None:
            raise InvalidInput(f"{path}: field meta.problem is {s.meta['problem']!r}; {why}")
        _check_start(path, s.meta.get("start"), s.meta.get("kept"))
    return sorted(found, key=lambda item: (item[1].meta["problem"], item[1].nfe))


def _check_start(path: Path, start, kept) -> None:
    """A benchmark fit's record of its starting pair (``meta.start``, as :func:`samplers.fitted.fitting.fit` writes
    it) and of what it kept, as the held-out run reads them: the pair's sampler, schedule and options, and its solver's
    fields, which it runs. An edited one is refused naming the file and the field (a non-object start was an
    AttributeError traceback, a solver with another field a TypeError)."""
    def bad(field: str, value, rule: str):
        return InvalidInput(f"{path}: field meta.{field} is {value!r}; it must be {rule}, as `benchmarks."
                            "learned_solvers` writes it (fit it again)")
    if not isinstance(start, dict):
        raise bad("start", start, "an object recording the starting pair (sampler, schedule, options, solver)")
    for field in ("sampler", "schedule"):
        if not isinstance(start.get(field), str):
            raise bad(f"start.{field}", start.get(field), "a name")
    if not isinstance(start.get("options", {}), dict):
        raise bad("start.options", start.get("options"), "an object of the pair's options")
    if kept not in ("fit", "start"):
        raise bad("kept", kept, "'fit' or 'start'")
    try:
        LearnedSolver(**start["solver"]).validate()
    except (TypeError, KeyError, InvalidInput) as err:
        raise bad("start.solver", "…", f"the pair's steps as LearnedSolver fields ({err})") from None


def run_solver(problem, solver: LearnedSolver, seeds, batch: int, refs: common.ReferenceCache
               ) -> tuple[dict, torch.Tensor]:
    """``solver`` from ``batch`` starts of each seed (noise · its σ_max): the scores pooled over the seeds, and
    every start's squared error (in seed order)."""
    cells = []
    for seed in seeds:
        x = samplers.initial_latent(problem.noise(batch, seed).to(torch.float64), solver.sigmas)
        with torch.no_grad():
            x0 = samplers.sample(LEARNED, problem.batch_denoiser(batch, seed), x, solver.sigmas, solver=solver,
                                 disable=True)
        cells.append(score(problem, x0, refs.get(problem, seed, x, solver.sigmas[0]), solver.sigmas[0], items=True))
    return pool(cells), torch.cat([c.pop(ITEMS) for c in cells])


def run_solvers(problem, solvers: list[LearnedSolver], seeds, batch: int, refs: common.ReferenceCache
                ) -> list[tuple[dict, torch.Tensor]]:
    """:func:`run_solver` for each of ``solvers``, a solver that runs the same steps as one before it not run again
    (a fit that handed back its pair, a fit the same as the one it is held against)."""
    done: list[tuple[LearnedSolver, tuple[dict, torch.Tensor]]] = []
    for solver in solvers:
        if not any(other.same_steps(solver) for other, _ in done):
            done.append((solver, run_solver(problem, solver, seeds, batch, refs)))
    return [next(result for other, result in done if other.same_steps(solver)) for solver in solvers]


def _from(other: dict | None) -> str | None:
    """The label of the pair a fit ran from where that is not the best pair (None: it is)."""
    return None if not other else pair_label(other["sampler"], other.get("options", {}), other["schedule"],
                                             other["from_sigma"])


def markdown(results: dict) -> str:
    rows = ["| problem | NFE | kept | fitted: RMSE | wrong mode | best pair | its RMSE | wrong mode | "
            "fitted ÷ pair |", "|---|---:|---|---:|---:|---|---:|---:|---:|"]
    for r in results["rows"]:
        fit, pair = r["fitted"], r["pair"]
        kept = r["kept"] + (f" (from {r['fitted_from']})" if r.get("fitted_from") else
                            " (stage 5 handed back the fit)" if handed_back(r) else "")
        rows.append(f"| {r['problem']} | {r['nfe']} | {kept} | {fit['rmse']:.3e} | {fit['wrong_mode']} | "
                    f"{r['pair_label']} | {pair['rmse']:.3e} | {pair['wrong_mode']} | "
                    f"{fit['rmse'] / pair['rmse']:.3f}{common.interval_text(r.get('ratio_interval'))} |")
    fits = [r for r in results["rows"] if r["kept"] == "fit"]
    handed = [r for r in results["rows"] if handed_back(r)]
    worse = [r for r in fits if r["fitted"]["rmse"] > r["pair"]["rmse"]]
    surely = [r for r in worse if r.get("ratio_interval") and r["ratio_interval"][0] > 1]
    args = results["args"]
    against = _against(results) if args.get("against") else []
    return "\n".join([
        f"# Fitted solvers against the best pair, held out ({args['learned']})", "",
        f"Each solver and the best (sampler, schedule) pair of its fit's stage 1 — the pair its fit was held "
        f"against, and started from unless *kept* names another —, run from the same "
        f"{len(args['heldout_seeds'])} seeds × {args['heldout_batch']} starts (seeds "
        f"{args['heldout_seeds'][0]}-{args['heldout_seeds'][-1]}: neither the calibration of the fits nor the "
        f"choice of their pairs saw them), RMSE against the exact PF-ODE endpoints. *kept*: whether the fit's "
        f"validation starts kept the optimised weights (\"fit\") or returned the pair (\"start\"; where stage 5, "
        f"on other starts, handed back a fit that stage 4 kept, it says so). *wrong mode*: "
        f"starts whose RMSE exceeds 0.3 × the data's spread. In brackets: the 95 % interval of fitted ÷ pair "
        f"(the held-out starts resampled in pairs), how far the few dozen starts in another mode carry the ratio.",
        "", *rows, "",
        f"Kept fits worse than their pair on these starts: {len(worse)} of {len(fits)}"
        + (" (" + ", ".join(f"{r['problem']} at {r['nfe']} NFE" for r in worse) + ")" if worse else "")
        + (f"; worse beyond the 95 % interval (its low end above 1): {len(surely)}."
           if all(r.get("ratio_interval") for r in fits) else ".")
        + (f" Fits stage 5 handed back for their pair: {len(handed)} ("
           + ", ".join(f"{r['problem']} at {r['nfe']} NFE" for r in handed) + ")." if handed else ""),
        "", *against,
        common.measured_line(results), ""])


def handed_back(row: dict) -> bool:
    """Whether stage 5 of the fit handed back the fit stage 4 kept (the row's solver is then its pair)."""
    return row["kept"] == "start" and (row.get("check") or {}).get("kept") is False


def _against(results: dict) -> list[str]:
    """The ``--against`` section: each solver beside the one of the same name in the other folder."""
    rows = results["rows"]
    lines = [f"## Against {results['args']['against']}", "",
             "Each solver beside the solver file of the same name in that folder (another fit of the same cell), "
             "from the same starts; in brackets the 95 % interval of the ratio.", "",
             "| problem | NFE | fitted: RMSE | wrong mode | against: RMSE | wrong mode | fitted ÷ against |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = r["against"]
        lines.append(f"| {r['problem']} | {r['nfe']} | {r['fitted']['rmse']:.3e} | {r['fitted']['wrong_mode']} | "
                     f"{a['rmse']:.3e} | {a['wrong_mode']} | {a['ratio']:.3f}{common.interval_text(a['interval'])} |")
    closer = [r for r in rows if r["against"]["ratio"] < 1]
    further = [r for r in rows if r["against"]["ratio"] > 1]
    geo = math.exp(sum(math.log(r["against"]["ratio"]) for r in rows) / len(rows))
    return lines + ["", f"Closer than the other folder's in {len(closer)} of {len(rows)} (beyond the interval: "
                        f"{sum(r['against']['interval'][1] < 1 for r in closer)}), further in {len(further)} (beyond "
                        f"the interval: {sum(r['against']['interval'][0] > 1 for r in further)}); geometric mean of "
                        f"fitted ÷ against {geo:.3f}.", ""]


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    p.add_argument("--learned", type=Path, default=SHIPPED_LEARNED,
                   help="folder of fitted solver files (default: the deterministic benchmark's, "
                        f"{SHIPPED_LEARNED_NAME}, "
                        "found from any current folder)")
    p.add_argument("--against", type=Path, default=None,
                   help="another folder of fits of the same cells (same file names): each solver is also scored "
                        "beside that one, paired on the same starts (e.g. a fit with other options)")
    p.add_argument("--heldout-seeds", type=common.seed_value, nargs="+", default=list(HELDOUT_SEEDS),
                   help="seeds of the held-out starts (default 101-132, as the deterministic benchmark)")
    p.add_argument("--heldout-batch", type=common.positive_int, default=4096,
                   help="starts per seed (default 4096; more than the memory holds is refused)")
    common.add_mixture_run_options(p, Path("out/fit_heldout"))
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return 0
    common.refuse_repeats(p, ("--heldout-seeds", args.heldout_seeds, "a seed's starts would be pooled twice"))
    if len(args.heldout_seeds) * args.heldout_batch < 2:
        p.error(f"--heldout-seeds × --heldout-batch is {len(args.heldout_seeds) * args.heldout_batch} held-out "
                "start: a ratio's interval resamples at least 2; pass more seeds or a larger --heldout-batch")
    torch.set_num_threads(args.threads)
    try:
        found = solvers_in(args.learned)
    except (InvalidInput, OSError) as err:
        p.error(f"--learned: {err}")
    if not found:
        p.error(f"no fitted solver files with a recorded problem and starting pair in {args.learned}")
    others = {}
    if args.against is not None:
        for path, fit in found:
            other = args.against / path.name
            if not other.exists():
                p.error(f"--against {args.against}: no {path.name} there to compare {path} with")
            try:
                others[path] = LearnedSolver.load(other)
            except (InvalidInput, OSError) as err:
                p.error(f"--against: {err}")
            if (others[path].meta.get("problem"), others[path].nfe) != (fit.meta["problem"], fit.nfe):
                p.error(f"--against: {other} is {others[path].meta.get('problem')} at {others[path].nfe} NFE, "
                        f"{path} {fit.meta['problem']} at {fit.nfe}: not the same cell")
    seen = [s for _, s in found + list(others.items()) if s.meta.get("calibration_seed") in args.heldout_seeds]
    if seen:
        p.error(f"{seen[0].meta['problem']} NFE {seen[0].nfe} was calibrated on seed "
                f"{seen[0].meta['calibration_seed']}, one of --heldout-seeds: pick seeds no fit saw")
    problems, unavailable = common.get_problems(sorted({s.meta["problem"] for _, s in found}), entry_point=False)
    if unavailable:
        p.error(f"problems not available here: {unavailable}")
    for problem in problems.values():  # before the first start is drawn: a batch the memory cannot hold
        common.refuse_batch_memory(p, "--heldout-batch", problem, args.heldout_batch)
    # every solver run here, --against's included, is checked against its problem's model before any run (a
    # namesake that runs the same steps as the fit is not run at all, so its run would never check it)
    for path, fit in found:
        model = problems[fit.meta["problem"]].batch_denoiser(args.heldout_batch, args.heldout_seeds[0])
        for solver, where in ((fit, path), *(((others[path], args.against / path.name),) if path in others else ())):
            try:
                solver.check_model(model)
            except InvalidInput as err:
                p.error(f"{err}" if str(where) in str(err) else f"{where}: {err}")
    refs = common.ReferenceCache(args.cache)
    print(common.device_line(), flush=True)
    t0 = time.perf_counter()
    rows = []
    for path, fit in common.progress(found, desc="solvers", disable=args.no_progress):
        start = fit.meta["start"]
        pair = LearnedSolver(**start["solver"]).validate()
        problem = problems[fit.meta["problem"]]
        solvers = [fit, pair] + ([others[path]] if path in others else [])
        (fitted, fitted_items), (paired, pair_items), *against = run_solvers(problem, solvers, args.heldout_seeds,
                                                                             args.heldout_batch, refs)
        rows.append({"problem": fit.meta["problem"], "nfe": fit.nfe, "file": path.name, "kept": fit.meta["kept"],
                     "check": fit.meta.get("check"),
                     "calibration_seed": fit.meta.get("calibration_seed"),
                     "pair_label": pair_label(start["sampler"], start.get("options", {}), start["schedule"],
                                             start["solver"]["sigmas"][0]),
                     "fitted_from": _from(fit.meta.get("fitted_from")), "fitted": fitted, "pair": paired,
                     "ratio": fitted["rmse"] / paired["rmse"],
                     "ratio_interval": common.ratio_interval(fitted_items, pair_items)})
        for theirs, their_items in against:  # with --against: the namesake's scores
            rows[-1]["against"] = {"file": str(args.against / path.name), "rmse": theirs["rmse"],
                                   "wrong_mode": theirs["wrong_mode"], "ratio": fitted["rmse"] / theirs["rmse"],
                                   "interval": common.ratio_interval(fitted_items, their_items)}
        r = rows[-1]
        print(f"{r['problem']} NFE {r['nfe']}: fitted {r['fitted']['rmse']:.4g} ({r['fitted']['wrong_mode']} wrong "
              f"mode) | {r['pair_label']} {r['pair']['rmse']:.4g} ({r['pair']['wrong_mode']}) | ratio "
              f"{r['ratio']:.3f} ({r['ratio_interval'][0]:.3f}-{r['ratio_interval'][1]:.3f}) | kept {r['kept']}",
              flush=True)
    command = " ".join(["python -m " + MODULE, *argv])
    result = {"info": common.run_info("cpu"), "command": command, "seconds": time.perf_counter() - t0,
              "args": {"learned": common.recorded_path(args.learned),
                       "against": None if args.against is None else str(args.against),
                       "heldout_seeds": args.heldout_seeds,
                       "heldout_batch": args.heldout_batch, "threads": args.threads}, "rows": rows}
    results = common.write_results(result, args.out)
    report(results)
    print(f"wrote {results}, {results.with_name('table.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

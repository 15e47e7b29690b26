"""Fit the solvers the deterministic benchmark ranks beside every fixed sampler × schedule, with
:func:`samplers.fitted.fitting.fit` at its default options.

    python -m benchmarks.learned_solvers --out docs/benchmarks/deterministic/learned   # gm-ve, gm-vp-eps, gm-flow × 5, 10, 20
    python -m benchmarks.learned_solvers --problem gm-vp-eps/d48-k5-s101 --nfe 5 10 --out out/learned
    python -m benchmarks.learned_solvers --recheck docs/benchmarks/deterministic/learned --out out/rechecked

Each (problem, NFE) is fitted on calibration noise of its own seed (``--calibration-seed``, 7; the benchmark
picks winners on seed 0 and re-runs them on seeds 101-132, so a fit never sees the noise it is scored on),
against the exact PF-ODE endpoints. Writes ``<problem>_nfe<N>.json`` (``/`` in a problem name becomes ``_``)
and prints the fit's validation RMSE beside its starting pair's. ``--recheck FOLDER``: the solver files there, made
before stage 5 of the fit existed, as :func:`~samplers.fitted.fitting.fit` makes them now
(:func:`~samplers.fitted.fitting.recheck`: stage 5 on the same starts; a fit it hands back becomes its pair),
written to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from samplers.core.argtypes import int_in, path_to
from samplers.core.errors import InvalidInput, InvalidOption
from samplers.fitted.fitting import MAX_FIT_NFE, FitConfig, fit, pair_label, recheck, validation_starts
from samplers.fitted.identity import fingerprint

from . import common, deterministic


def file_name(problem: str, nfe: int) -> str:
    return f"{problem.replace('/', '_')}_nfe{nfe}.json"


def fit_one(problem: common.Problem, nfe: int, *, calibration: int, seed: int, config: dict, log=None):
    sigma_max = deterministic.full_start(problem)
    noise = problem.noise(calibration, seed).double()
    reference = problem.reference(noise * sigma_max, sigma_max)
    model = {"fingerprint": fingerprint(problem.denoiser), "name": problem.name}
    solver = fit(problem.denoiser, FitConfig(nfe, **config), noise, problem.sigma_min, sigma_max,
                 reference=reference, reference_fn=lambda x, extra, sigma: problem.reference(x, sigma),
                 native=problem.native, model=model, log=log)
    solver.meta["calibration_seed"] = seed
    solver.meta["problem"] = problem.name
    return solver


def recheck_folder(p: argparse.ArgumentParser, args) -> int:
    """``--recheck``: every solver file of the folder, stage 5 run on it (its problem, calibration seed and size,
    and fitting options as it records them), written to ``--out`` under its name."""
    from .fit_heldout import solvers_in

    given = [name for name, default in (("problems", list(deterministic.PROBLEMS)), ("nfe", list(deterministic.NFES)),
                                        ("iters", FitConfig.iters), ("batch", FitConfig.batch),
                                        ("fit_seed", FitConfig.seed), ("starts", FitConfig.starts),
                                        ("pool", FitConfig.pool), ("history", FitConfig.history),
                                        ("lr", FitConfig.lr), ("calibration", 2048), ("calibration_seed", 7))
             if getattr(args, name) != default]
    if given:
        p.error("--recheck fits nothing: each file's own problem, NFE, calibration and options are used; leave out "
                + ", ".join("--" + n.replace("_", "-").replace("problems", "problem") for n in given))
    if args.check < 1:
        p.error(f"--recheck runs stage 5: --check must be at least 1, got {args.check}")
    try:
        found = solvers_in(args.recheck)
    except InvalidInput as err:
        p.error(f"--recheck: {err}")
    if not found:
        p.error(f"--recheck: no fitted solver files with a recorded problem in {args.recheck}")
    torch.set_num_threads(args.threads)
    problems, unavailable = common.get_problems(sorted({s.meta["problem"] for _, s in found}), entry_point=False)
    if unavailable:
        p.error(f"--recheck: problems not available here: {unavailable}")
    print(f"{common.device_line()}; writing to {args.out}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, solver in common.progress(found, desc="solvers", disable=args.no_progress):
        problem = problems[solver.meta["problem"]]
        t0 = time.perf_counter()
        noise = problem.noise(solver.meta["calibration"], solver.meta["calibration_seed"]).double()
        try:
            with torch.no_grad():
                again = recheck(problem.denoiser, solver, noise, lambda x, extra, sigma: problem.reference(x, sigma),
                                check=args.check)
        except InvalidInput as err:  # a fit from another σ that stage 5 hands back: its file cannot be made here
            p.error(f"--recheck {path}: {err}")
        record = again.meta.get("check")
        said = ("nothing to check (kept its pair)" if solver.meta["kept"] != "fit" else
                "checked already" if again is solver else
                f"{'kept the fit' if record['kept'] else 'handed back the pair'}: mean squared error on "
                f"{record['starts']} other starts {-record['mean_mse']:+.3g} against the pair's")
        print(f"{solver.meta['problem']} NFE {solver.nfe}: {said} in {time.perf_counter() - t0:.0f} s → "
              f"{again.save(args.out / path.name)}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learned_solvers", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--problem", dest="problems", nargs="+", default=list(deterministic.PROBLEMS),
                   help="gm-ve, gm-vp-eps, gm-flow, or another mixture as gm-<kind>/d<dims>-k<modes>-s<seed>")
    p.add_argument("--nfe", nargs="+", type=int_in(2, MAX_FIT_NFE, "the largest NFE the fit commands take"),
                   default=list(deterministic.NFES),
                   help=f"model calls of each solver, 2 to {MAX_FIT_NFE} (a fitted solver weighs the calls before "
                        f"each step; default {' '.join(map(str, deterministic.NFES))})")
    p.add_argument("--calibration", type=common.positive_int, default=2048,
                   help="calibration starts (default 2048, a quarter validates: at least 3)")
    p.add_argument("--calibration-seed", type=common.seed_value, default=7,
                   help="noise seed of the calibration starts, in [0, 2**32) (default 7)")
    p.add_argument("--iters", type=common.int_at_least(0), default=FitConfig.iters,
                   help=f"FitConfig.iters: Adam steps per fit (default {FitConfig.iters}; 0: the best pair as it is)")
    p.add_argument("--batch", type=common.positive_int, default=FitConfig.batch,
                   help=f"FitConfig.batch: training minibatch (default {FitConfig.batch}; a number above the training "
                        f"starts trains on all of them each step)")
    p.add_argument("--fit-seed", type=common.seed_value, default=FitConfig.seed,
                   help="FitConfig.seed: the pool's draw and the minibatch order (default 0); the calibration "
                        "starts are --calibration-seed's")
    p.add_argument("--starts", type=common.positive_int, default=FitConfig.starts,
                   help=f"FitConfig.starts: fit from this many of the best pairs, keep the better fit (default "
                        f"{FitConfig.starts})")
    p.add_argument("--pool", type=common.int_at_least(0), default=FitConfig.pool,
                   help=f"FitConfig.pool: the pool of further starts that ranks, trains and checks, as a multiple of "
                        f"the calibration starts (default {FitConfig.pool})")
    p.add_argument("--history", type=common.int_at_least(0), default=FitConfig.history,
                   help=f"FitConfig.history: earlier steps a step may weigh beyond those of its starting sampler "
                        f"(default {FitConfig.history}; 0: only those its starting sampler weighs, the nodes and "
                        "those weights still fitted)")
    p.add_argument("--lr", type=common.positive_float, default=FitConfig.lr,
                   help="FitConfig.lr: Adam's learning rate, cosine-decayed to 5 %% (default 0.02 / NFE)")
    p.add_argument("--check", type=common.int_at_least(0), default=FitConfig.check,
                   help=f"FitConfig.check: stage 5's other starts, as a multiple of the calibration starts (default "
                        f"{FitConfig.check}; 0: none)")
    p.add_argument("--recheck", type=lambda text: Path(path_to("folder")(text)), default=None, metavar="FOLDER",
                   help="fit nothing: write the solver files of FOLDER (made before stage 5) to --out as fit() makes "
                        "them now, stage 5 run on the same starts")
    p.add_argument("--out", type=common.out_folder, required=True, help="folder for the solver files")
    common.add_threads_option(p, help="torch threads (default 1: the mixtures are tiny)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one step per fit) on stderr")
    args = p.parse_args(argv)
    config = dict(iters=args.iters, batch=args.batch, seed=args.fit_seed, starts=args.starts, pool=args.pool,
                  history=args.history, lr=args.lr, check=args.check)
    if args.recheck is not None:
        return recheck_folder(p, args)
    for nfe in args.nfe:  # every option refused here, before a reference is solved
        try:
            FitConfig(nfe, **config).validate()
        except InvalidOption as e:
            p.error(str(e))
    try:  # as fit() splits it
        validation_starts(args.calibration, FitConfig.validation, ("FitConfig.validation", "--calibration"))
    except InvalidInput as e:
        p.error(str(e))
    common.refuse_repeats(p, ("--problem", args.problems, "each problem is fitted once"),
                          ("--nfe", args.nfe, "each NFE writes one solver file"))
    torch.set_num_threads(args.threads)
    try:  # before --out is created: an unknown problem is refused with nothing written
        problems, unavailable = common.get_problems(args.problems)
    except (ValueError, ImportError, AttributeError) as err:
        p.error(f"--problem: {err}")
    print(f"{common.device_line()}; writing to {args.out}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, why in unavailable.items():
        print(f"{name}: unavailable ({why})", file=sys.stderr)
    log = (lambda line: print(line, flush=True)) if args.verbose else None
    bar = common.progress(total=len(problems) * len(args.nfe), desc="fits", disable=args.no_progress)
    for pname, problem in problems.items():
        for nfe in args.nfe:
            bar.set_postfix_str(f"{pname} NFE {nfe}", refresh=False)
            t0 = time.perf_counter()
            solver = fit_one(problem, nfe, calibration=args.calibration, seed=args.calibration_seed,
                             config=config, log=log)
            path = solver.save(args.out / file_name(pname, nfe))
            start = solver.meta["start"]
            print(f"{pname} NFE {nfe}: validation RMSE {solver.meta['validation_rmse']:.4g} (start "
                  f"{pair_label(start['sampler'], start['options'], start['schedule'], start['solver']['sigmas'][0])}: "
                  f"{start['validation_rmse']:.4g}; kept the "
                  f"{solver.meta['kept']}) in {time.perf_counter() - t0:.0f} s → {path}", flush=True)
            bar.update()
    bar.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

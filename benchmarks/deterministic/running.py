"""Running the deterministic benchmark: the grid of our samplers × schedules × NFE budgets, the fitted
solvers, diffusers' peers, and the held-out re-runs of the winners; the command line.

Each cell is one run on one seed's batch, scored against the exact endpoint from its own start
(:mod:`.scoring`); ``run`` returns the whole result (every cell, the summary, the held-out pool, the run's
device and versions), which :mod:`.reporting` turns into ``table.md`` after it is written to ``results.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
from pathlib import Path

import torch

import samplers
from samplers.core.argtypes import Given, GivenConst, was_given
from samplers.core.budget import CountingDenoiser, steps_for_nfe

from .. import common, peers as diffusers_loop
from ..common import Problem, ReferenceCache
from . import reporting
from .peers import VE_TABLE_PREFIX, peer_configs, peer_problem
from .scoring import (ITEMS, LEARNED, LEARNED_SCHEDULE, TARGET, WRONG_MODE, heldout_entry, judge, like_for_like,
                      score, summarise)

NFES = (5, 10, 20)
PROBLEMS = ("gm-ve", "gm-vp-eps", "gm-flow")
HELDOUT_SEEDS = tuple(range(101, 133))  # 32 × 4096 starts; fitted solvers must calibrate on other seeds
BENCHMARK_SEEDS = (0,) + HELDOUT_SEEDS  # the selection seed (--seed default) and the held-out ones
# --quick: the plumbing of every part (ours, fitted, peers on every problem, held-out re-runs) on a small grid
QUICK_SAMPLERS = ("euler", "heun", "dpmpp_2m")
QUICK_SCHEDULES = ("karras", "linspace", "flow")
QUICK_PEERS = ("EulerDiscreteScheduler+karras", "DPMSolverMultistepScheduler+karras", "EDMEulerScheduler",
               "FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler+flow")
QUICK_HELDOUT_SEEDS = (101,)
DEFAULT_OUT = Path("out/deterministic")
SHIPPED_LEARNED_NAME = "docs/benchmarks/deterministic/learned"  # as results.json records it (repo-relative)
SHIPPED_LEARNED = common.shipped(SHIPPED_LEARNED_NAME)  # found from any current folder


class Run:
    """Problems, their peers' native forms, the reference cache, the step counts found so far."""

    def __init__(self, args):
        self.args = args
        self.refs = ReferenceCache(None if args.no_cache else Path(args.cache))
        self.problems, self.unavailable = common.get_problems(args.problems)
        self._configs: dict[str, dict[str, dict]] = {}
        self._peer_problems: dict[tuple[str, bool], Problem] = {}
        self.batch, self.heldout = args.batch, False
        self.sampler_seconds: dict[tuple, float] = {}
        self._steps: dict[tuple, tuple[int, int] | None] = {}

    @contextlib.contextmanager
    def heldout_batch(self):
        """Cells run inside this block use ``--heldout-batch`` and are not bounded by the time budget."""
        self.batch, self.heldout = self.args.heldout_batch, True
        try:
            yield
        finally:
            self.batch, self.heldout = self.args.batch, False

    def steps(self, key: tuple, find) -> tuple[int, int] | None:
        """The step count that fits a budget, counted once per (who, schedule, NFE) and reused for every seed."""
        if key not in self._steps:
            self._steps[key] = find()
        return self._steps[key]

    # ---- what runs

    def samplers(self) -> tuple[list[str], dict[str, str]]:
        names, skipped = [], {}
        for name in self.args.samplers or samplers.available("ode"):
            spec = samplers.info(name)
            if spec.kind != "ode":
                skipped[spec.name] = f"kind {spec.kind!r}: not deterministic"
            elif common.budget_refusal(spec.name) is not None:  # the default list only: a named one is refused
                skipped[spec.name] = common.budget_refusal(spec.name)
            elif common.fitted_refusal(spec.name) is not None:  # its files run as the fitted cells (--learned)
                skipped[spec.name] = common.fitted_refusal(spec.name)
            else:
                names.append(spec.name)
        return names, skipped

    def schedules(self, problem: Problem) -> tuple[list[str], dict[str, str]]:
        names, skipped = [], {}
        for name in self.args.schedules or samplers.schedules.available():
            try:
                for n in (1, 2, 5, max(self.args.nfe)):
                    grid = samplers.core.run.read_sigmas(problem.sigmas(name, n))
                    if isinstance(problem.native, samplers.VPDiscrete):  # ays_svd on an SD-1.x table: the run
                        problem.native.check_in_table(grid)  # would refuse it (clamped timesteps)
            except Exception as err:  # noqa: BLE001 - a schedule that cannot be built here is a result
                skipped[name] = common.describe(err)
                continue
            names.append(name)
        return names, skipped

    def configs(self, pname: str) -> dict[str, dict]:
        """Every diffusers peer of the problem (label → config); none without diffusers."""
        if pname not in self._configs:
            self._configs[pname] = peer_configs(self.problems[pname])
        return self._configs[pname]

    def peers(self, pname: str) -> dict[str, dict]:
        """The peers this run asks for (--no-peers, --peer-names)."""
        configs = self.configs(pname) if self.args.peers else {}
        if self.args.peer_names:
            configs = {k: v for k, v in configs.items() if k in self.args.peer_names}
        return configs

    def peer_problem(self, pname: str, label: str) -> Problem:
        key = (pname, label.startswith(VE_TABLE_PREFIX))
        if key not in self._peer_problems:
            self._peer_problems[key] = peer_problem(self.problems[pname], label)
        return self._peer_problems[key]

    # ---- one cell each

    def ours(self, pname: str, sampler: str, schedule: str, nfe: int, seed: int) -> dict:
        problem = self.problems[pname]
        out = {"problem": pname, "sampler": sampler, "schedule": schedule, "nfe": nfe, "seed": seed,
               "batch": self.batch}
        key = (pname, sampler)
        # the time budget bounds the sweep; the held-out re-runs of the winners always run
        if not self.heldout and self.sampler_seconds.get(key, 0.0) > self.args.max_sampler_seconds:
            return {**out, "skipped": f"over the time budget of {self.args.max_sampler_seconds:g} s per sampler "
                                      "and problem"}
        t0, seconds = time.perf_counter(), None
        try:
            # a count that depends on the model (implicit Adams) is the stand-in's estimate, recounted below
            found = self.steps((pname, sampler, schedule, nfe),
                               lambda: steps_for_nfe(sampler, nfe, lambda n: problem.sigmas(schedule, n),
                                                     estimate_model_dependent=True))
            if found is None:
                return {**out, "skipped": f"not even one step fits {nfe} model evaluations"}
            steps = found[0]
            while True:
                sigmas = problem.sigmas(schedule, steps)
                x_start = samplers.initial_latent(problem.noise(self.batch, seed), sigmas)
                model = CountingDenoiser(problem.batch_denoiser(self.batch, seed))
                with torch.no_grad():
                    x0 = samplers.sample(sampler, model, x_start, sigmas, disable=True)
                # a solver that iterates to convergence (torchdiffeq's implicit Adams) may call this model
                # more often than the stand-in it was counted on: fewer steps until the real count fits
                if model.calls <= nfe or steps == 1:
                    break
                steps -= 1
            seconds = time.perf_counter() - t0
            ref = self.refs.get(problem, seed, x_start, float(sigmas[0]))
        except Exception as err:  # noqa: BLE001 - a sampler failing is a result, not a crash of the run
            result = {**out, "skipped": f"raised {common.describe(err)}"}
            seconds = time.perf_counter() - t0 if seconds is None else seconds
        else:
            result = {**out, "steps": steps, "nfe_used": model.calls, "kind": "ode",
                      **score(problem, x0, ref, float(sigmas[0]), items=self.heldout), "seconds": seconds}
            if model.calls > nfe:
                result["skipped"] = f"even 1 step used {model.calls} model evaluations on this model"
        # the sampler's own time: the reference solve (cached, shared by every sampler of this seed) and the
        # scoring are not charged to whichever sampler first asked for them
        self.sampler_seconds[key] = self.sampler_seconds.get(key, 0.0) + seconds
        return result

    def learned(self, pname: str, path: Path, nfe: int, seed: int) -> dict:
        """``learned_multistep`` with the solver in ``path`` (fitted on a calibration seed of its own)."""
        problem = self.problems[pname]
        out = {"problem": pname, "sampler": LEARNED, "schedule": f"{LEARNED_SCHEDULE}:{path.name}", "nfe": nfe,
               "seed": seed, "batch": self.batch}
        t0 = time.perf_counter()
        try:
            from samplers.fitted.solver import LearnedSolver

            solver = LearnedSolver.load(path)
            if solver.meta.get("calibration_seed") in (seed, None):
                return {**out, "skipped": f"fitted on seed {solver.meta.get('calibration_seed')}, the seed it would "
                                          "be scored on"}
            x_start = samplers.initial_latent(problem.noise(self.batch, seed).to(torch.float64), solver.sigmas)
            model = CountingDenoiser(problem.batch_denoiser(self.batch, seed))
            with torch.no_grad():
                x0 = samplers.sample(LEARNED, model, x_start, solver.sigmas, solver=solver, disable=True)
            seconds = time.perf_counter() - t0  # sampling only: the reference solve is shared
            ref = self.refs.get(problem, seed, x_start, solver.sigmas[0])
        except Exception as err:  # noqa: BLE001
            return {**out, "skipped": f"raised {common.describe(err)}"}
        result = {**out, "steps": solver.steps, "nfe_used": model.calls, "kind": "ode",
                  "calibration_seed": solver.meta.get("calibration_seed"),
                  **score(problem, x0, ref, solver.sigmas[0], items=self.heldout), "seconds": seconds}
        if model.calls > nfe:
            result["skipped"] = f"uses {model.calls} model evaluations, more than {nfe}"
        return result

    def peer(self, pname: str, label: str, config: dict, nfe: int, seed: int) -> dict:
        sched_label = label[len(VE_TABLE_PREFIX):] if label.startswith(VE_TABLE_PREFIX) else label
        out = {"problem": pname, "sampler": f"diffusers:{label}", "schedule": "native", "nfe": nfe, "seed": seed,
               "batch": self.batch}
        t0 = time.perf_counter()
        try:
            problem = self.peer_problem(pname, label)
            found = self.steps((pname, label, "native", nfe),
                               lambda: diffusers_loop.peer_steps(sched_label, config, nfe))
            if found is None:
                return {**out, "skipped": f"no step count fits {nfe} model calls"}
            noise = problem.noise(self.batch, seed)
            x0, x_start, sigma_start, calls = diffusers_loop.run_peer(problem, sched_label, config, found[0], noise,
                                                                      seed)
            seconds = time.perf_counter() - t0  # sampling only: the reference solve is shared
            ref = self.refs.get(problem, seed, x_start, sigma_start)
        except Exception as err:  # noqa: BLE001
            return {**out, "skipped": f"diffusers raised {common.describe(err)}"}
        return {**out, "steps": found[0], "nfe_used": calls, "kind": "ode",
                **score(problem, x0, ref, sigma_start, items=self.heldout), "seconds": seconds}

    def rerun(self, cell: dict, seed: int) -> dict:
        """The same (sampler, schedule) as ``cell`` on another seed."""
        if cell["sampler"].startswith("diffusers:"):
            label = cell["sampler"].split(":", 1)[1]
            return self.peer(cell["problem"], label, self.configs(cell["problem"])[label], cell["nfe"], seed)
        if cell["sampler"] == LEARNED and cell["schedule"].startswith(LEARNED_SCHEDULE + ":"):
            path = Path(self.args.learned) / cell["schedule"].split(":", 1)[1]
            return self.learned(cell["problem"], path, cell["nfe"], seed)
        return self.ours(cell["problem"], cell["sampler"], cell["schedule"], cell["nfe"], seed)


def learned_files(folder: Path | None, problem: str, nfe: int) -> list[Path]:
    """The fitted solvers for (problem, NFE) in ``folder`` (``<problem>_nfe<N>*.json``)."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder, stem = Path(folder), problem.replace("/", "_")
    return sorted(folder.glob(f"{stem}_nfe{nfe}.json")) + sorted(folder.glob(f"{stem}_nfe{nfe}_*.json"))


def heldout_runs(r: Run, summary: list[dict], args) -> tuple[list[dict], list[dict]]:
    """Re-run each (problem, NFE)'s winners — ours, ours on fixed schedules only, diffusers', the best fitted
    solver — on
    ``--heldout-seeds`` × ``--heldout-batch`` starts none of them was picked on, pooled into one RMSE.
    Returns (held-out rows, the cells run).

    On a mixture the RMSE of a good solver is a count of the rare starts it sends to the wrong cluster
    (one such start among 2048 adds ≈ 0.02; at 20 NFE about 1 in 4000 starts): the pooled held-out starts
    (131072 by default) count a few dozen of them, where the selection run sees none or one, and carry no
    selection bias."""
    rows = [row for row in summary if row.get("ratio") is not None]
    # the fitted solver is re-run even where a fixed pair won on the selection seed: the docs compare it too
    winners = [{who: row[who] for who in ("ours", "ours_fixed", "diffusers", "fitted") if row.get(who)}
               for row in rows]
    total = sum(len({(w["sampler"], w["schedule"]) for w in ws.values()}) for ws in winners) * len(args.heldout_seeds)
    entries, cells = [], []
    with r.heldout_batch(), common.progress(total=total, desc="held-out re-runs", disable=args.no_progress) as bar:
        for row, ws in zip(rows, winners):
            runs: dict[str, list[dict]] = {}
            items: dict[str, list] = {}  # who -> each seed's per-start squared errors (None where a run failed)
            for who, w in ws.items():
                same = next((k for k in runs if (ws[k]["sampler"], ws[k]["schedule"]) ==
                             (w["sampler"], w["schedule"])), None)
                if same is not None:  # the same winner twice (ours on a fixed schedule): its runs are already in
                    runs[who], items[who] = runs[same], items[same]
                    continue
                runs[who], items[who] = [], []
                for seed in args.heldout_seeds:
                    cell = r.rerun({**w, "problem": row["problem"], "nfe": row["nfe"]}, seed)
                    items[who].append(cell.pop(ITEMS, None))
                    runs[who].append(cell)
                    bar.update()
                cells += runs[who]
            entries.append(heldout_entry(row, runs, args.heldout_seeds, args.heldout_batch, items))
    return entries, cells


def run(args) -> dict:
    """The whole benchmark for ``args`` (see :func:`parser`): every cell, the summary, the held-out pool."""
    t_start = time.perf_counter()
    r = Run(args)
    names, skipped_samplers = r.samplers()
    plan, skipped_schedules, used_schedules, peers_of = [], {}, {}, {}
    for pname, problem in r.problems.items():
        scheds, skipped_schedules[pname] = r.schedules(problem)
        used_schedules[pname] = scheds
        plan += [(r.ours, (pname, name, schedule, nfe)) for schedule in scheds for name in names for nfe in args.nfe]
        plan += [(r.learned, (pname, path, nfe))
                 for nfe in args.nfe for path in learned_files(args.learned, pname, nfe)]
        configs = r.peers(pname)
        peers_of[pname] = list(configs)
        plan += [(r.peer, (pname, label, config, nfe)) for label, config in configs.items() for nfe in args.nfe]
    cells = []
    with common.progress(total=len(plan), desc="cells", disable=args.no_progress) as bar:
        for fn, cell_args in plan:
            bar.set_postfix_str(f"{cell_args[0]} {getattr(cell_args[1], 'name', cell_args[1])}", refresh=False)
            cells.append(fn(*cell_args, args.seed))
            bar.update()
    problems = list(r.problems)
    summary = summarise(cells, problems, args.nfe, args.seed)
    heldout, reruns = heldout_runs(r, summary, args) if args.heldout_seeds else ([], [])
    for row in summary:
        judge(row, heldout, bool(args.heldout_seeds))
    return {
        "info": {**common.run_info("cpu"), "seconds": time.perf_counter() - t_start},
        "args": recorded_args(args),
        "target_ratio": TARGET,
        "wrong_mode_share": WRONG_MODE,
        "problems": {n: p.description for n, p in r.problems.items()},
        "references": {n: p.reference_method for n, p in r.problems.items()},  # what "the endpoint" is
        "unavailable": r.unavailable,
        "samplers": names,
        "skipped_samplers": skipped_samplers,
        "schedules": used_schedules,
        "skipped_schedules": skipped_schedules,
        "peers": peers_of,
        "summary": summary,
        "heldout": heldout,
        "like_for_like": like_for_like(cells, problems, args.nfe, args.seed),
        "cells": cells + reruns,
    }


# ------------------------------------------------------------------------------------------------------
# command line


def parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m benchmarks.deterministic", description=doc.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: samplers {', '.join(QUICK_SAMPLERS)}, a few schedules and peers, batch 8, "
                        f"held-out seeds {', '.join(map(str, QUICK_HELDOUT_SEEDS))}")
    common.add_output_options(p, DEFAULT_OUT)
    p.add_argument("--problem", dest="problems", nargs="+", default=list(PROBLEMS),
                   help=f"problems (default {' '.join(PROBLEMS)}; any benchmarks.common problem runs without peers)")
    p.add_argument("--nfe", nargs="+", type=common.nfe_budget, default=list(NFES),
                   help=f"NFE budgets, each from 1 to {common.MAX_STEPS} (the pipeline's step limit; default 5 10 20)")
    p.add_argument("--samplers", nargs="+", default=None,
                   help="registry 'ode' samplers (default: every one that can be held to an NFE budget, the adaptive "
                        "ones listed as not run, and learned_multistep, Euler without a solver file, listed as run "
                        "by --learned); an adaptive one or learned_multistep named here is refused")
    p.add_argument("--schedules", nargs="+", default=None,
                   help="schedule names (default: every registered one, samplers.schedules.available())")
    p.add_argument("--peer-names", nargs="+", default=None,
                   help="only these diffusers peers (labels as in the table; an unknown one is refused)")
    p.add_argument("--no-peers", dest="peers", action="store_false",
                   help="run none of diffusers' schedulers (without --peer-names)")
    p.add_argument("--learned", action=Given, type=Path, default=SHIPPED_LEARNED,
                   help="folder of fitted solvers <problem>_nfe<N>.json (benchmarks.learned_solvers); they are "
                        "ranked with ours unless fitted on the seed being scored (default: the shipped "
                        f"{SHIPPED_LEARNED_NAME}, found from any current folder; a folder "
                        "that is missing or holds no such file is refused: pass --no-learned to run without)")
    p.add_argument("--no-learned", dest="learned", action=GivenConst, const=None,
                   help="rank no fitted solvers (without --learned)")
    p.add_argument("--batch", type=common.positive_int, default=None,
                   help="items per cell (default 2048; 8 with --quick; more than the memory holds is refused)")
    p.add_argument("--seed", type=common.seed_value, default=0,
                   help="noise seed the winners are picked on, in [0, 2**32) (default 0)")
    p.add_argument("--heldout-seeds", type=common.seed_value, nargs="*", default=None,
                   help=f"seeds the winners are re-run on, pooled (default 101-132, "
                        f"{' '.join(map(str, QUICK_HELDOUT_SEEDS))} with --quick; none: no re-run)")
    p.add_argument("--heldout-batch", type=common.positive_int, default=None,
                   help="starts per held-out seed (default 4096: with 32 seeds, 131072 starts, where a 20-NFE solver "
                        "sends a few dozen to the wrong mode; 8 with --quick; more than the memory holds is refused)")
    p.add_argument("--cache", action=Given, type=common.cache_folder, default="out/cache",
                   help="reference solutions on disk (default %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="solve every reference afresh (without --cache)")
    common.add_threads_option(p, help="torch CPU threads (default 1: the mixture cells are tiny, extra threads "
                                      "only contend)")
    p.add_argument("--max-sampler-seconds", type=common.positive_float, default=120.0,
                   help="stop running a sampler on a problem after this many seconds (slow adapters)")
    p.add_argument("--no-progress", action="store_true")
    return p


def recorded_args(args) -> dict:
    """A run's ``args`` as its results.json records them: the --learned folder repo-relative where it lies in the
    repo (the shipped default reads the same from every checkout and every current folder)."""
    recorded = common.run_args(args)
    if args.learned is not None:
        recorded["learned"] = common.recorded_path(args.learned)
    return recorded


def resolved_defaults(result: dict) -> dict:
    """What :func:`resolve_args` made of the options left unset in the run ``result`` records (from its args): the
    values a rebuilt command leaves out."""
    quick = bool(result["args"].get("quick"))
    values = {"batch": 8 if quick else 2048, "heldout_seeds": list(QUICK_HELDOUT_SEEDS if quick else HELDOUT_SEEDS),
              "heldout_batch": 8 if quick else 4096, "learned": SHIPPED_LEARNED_NAME}
    if quick:
        values.update(samplers=[n for n in QUICK_SAMPLERS if n in samplers.available()],
                      schedules=[s for s in QUICK_SCHEDULES if s in samplers.schedules.available()],
                      peer_names=list(QUICK_PEERS))
    return values


def resolve_args(args) -> argparse.Namespace:
    if args.quick:
        args.batch = 8 if args.batch is None else args.batch
        if args.samplers is None:
            args.samplers = [n for n in QUICK_SAMPLERS if n in samplers.available()]
        if args.schedules is None:
            args.schedules = [s for s in QUICK_SCHEDULES if s in samplers.schedules.available()]
        if args.peer_names is None:
            args.peer_names = list(QUICK_PEERS)
    # at 512 items one start near a cluster boundary sent the wrong way moves the RMSE by ~0.06
    args.batch = 2048 if args.batch is None else args.batch
    if args.heldout_seeds is None:
        args.heldout_seeds = list(QUICK_HELDOUT_SEEDS if args.quick else HELDOUT_SEEDS)
    if args.heldout_batch is None:
        args.heldout_batch = 8 if args.quick else 4096
    if args.seed in args.heldout_seeds:
        raise SystemExit(f"--heldout-seeds must not contain the selection seed {args.seed}")
    return args


def check_args(p: argparse.ArgumentParser, args) -> None:
    """Refuse (``p.error``, exit status 2) what the run could not do as asked, before any cell runs: an unknown
    sampler, schedule or problem, a sampler named that cannot be held to an NFE budget (adaptive), a peer name none of the problems has, a --learned folder without fitted
    solvers or with a solver file the run would use that does not load or suits another model than its
    problem's, a selection seed among the held-out ones, an option another one makes do nothing (--peer-names with
    --no-peers, --cache with --no-cache, --learned with --no-learned)."""
    common.refuse_unused(
        p, (not args.peers and args.peer_names is not None, "--peer-names",
            "picks diffusers peers to run and --no-peers runs none", "leave out one of them"),
        (args.no_cache and was_given(args, "cache"), "--cache",
         "names the folder of cached references and --no-cache reads and writes none", "leave out one of them"),
        (was_given(args, "learned") and was_given(args, "no_learned"), "--learned",
         "names the folder of fitted solvers to rank and --no-learned ranks none", "leave out one of them"),
        (args.heldout_seeds == [] and args.heldout_batch is not None, "--heldout-batch",
         "sizes the held-out re-run and --heldout-seeds with no seed runs none", "leave out one of them"))
    # the deterministic grid runs ODE samplers: a stochastic one would only be listed as not run
    args.samplers = (None if args.samplers is None else
                     [common.sampler_or_refuse(p, "--samplers", n, kinds=("ode",), fitted="--learned FOLDER")
                      for n in args.samplers])
    # nor can an adaptive one be held to a budget: named, it is refused here (the default list skips it, saying why)
    common.refuse_unbudgeted(p, "--samplers", args.samplers)
    for name in args.schedules or ():
        common.schedule_or_refuse(p, "--schedules", name)
    problems = {}
    for name in args.problems:
        try:
            problems[name] = common.get_problem(name)
        except common.ProblemUnavailable:
            continue  # recorded as unavailable by the run
        except (ValueError, ImportError, AttributeError) as err:
            p.error(f"--problem {name!r}: {err}")
    if args.peer_names:
        valid = list(dict.fromkeys(label for problem in problems.values() for label in peer_configs(problem)))
        common.check_names(p, "--peer-names (peers of " + ", ".join(problems) + ")", args.peer_names, valid)
    if args.learned is not None:
        folder = Path(args.learned)
        if not folder.is_dir():
            p.error(f"--learned {str(folder)!r} is not a folder: name a folder of fitted solvers "
                    "(benchmarks.learned_solvers), or pass --no-learned")
        if not any(folder.glob("*_nfe*.json")):
            p.error(f"--learned {str(folder)!r} holds no fitted solver file <problem>_nfe<N>.json: name a folder "
                    "benchmarks.learned_solvers wrote, or pass --no-learned")
        check_learned(p, folder, problems, args.nfe)
    if args.heldout_seeds and args.seed in args.heldout_seeds:
        p.error(f"--heldout-seeds must not contain the selection seed --seed {args.seed}: pick other seeds")
    default_heldout = QUICK_HELDOUT_SEEDS if args.quick else HELDOUT_SEEDS
    if args.heldout_seeds is None and args.seed in default_heldout:
        seeds = (f"{min(default_heldout)}-{max(default_heldout)}" if len(default_heldout) > 1
                 else str(default_heldout[0]))
        p.error(f"--seed {args.seed} is one of the default held-out seeds ({seeds}"
                f"{', with --quick' if args.quick else ''}), which the winners are re-run on: "
                "pick another --seed, or pass --heldout-seeds without it")
    if args.heldout_seeds and args.heldout_batch is not None and len(args.heldout_seeds) * args.heldout_batch < 2:
        p.error(f"--heldout-seeds × --heldout-batch is {len(args.heldout_seeds) * args.heldout_batch} held-out "
                "start: a ratio's interval resamples at least 2; pass more seeds or a larger --heldout-batch")
    common.refuse_repeats(p, ("--problem", [problems[n].name if n in problems else n for n in args.problems],
                              "each problem runs once"),
                          ("--nfe", args.nfe, "each budget is one column"),
                          ("--samplers", args.samplers, "each sampler is ranked once"),
                          ("--schedules", common.canonical_schedules(args.schedules), "each schedule runs once"),
                          ("--peer-names", args.peer_names, "each peer runs once"),
                          ("--heldout-seeds", args.heldout_seeds, "a seed's starts would be pooled twice"))
    sized = resolve_args(copy.copy(args))  # the sizes the run will use, defaults included: before any cell runs
    for problem in problems.values():
        common.refuse_batch_memory(p, "--batch", problem, sized.batch)
        if sized.heldout_seeds:
            common.refuse_batch_memory(p, "--heldout-batch", problem, sized.heldout_batch)


def check_learned(p: argparse.ArgumentParser, folder: Path, problems: dict[str, Problem], nfes) -> None:
    """Refuse (``p.error``) a solver file in ``folder`` that this run would rank (:func:`learned_files` of each
    problem and NFE) where it does not load, or where it suits another model than the problem it is named for
    (:meth:`LearnedSolver.check_model`): its cells could not run."""
    from samplers.fitted.solver import LearnedSolver

    fix = ("re-fit it (python -m benchmarks.learned_solvers --problem {pname} --nfe {nfe}), remove it from the "
           "folder, or pass --no-learned")
    for pname, problem in problems.items():
        for nfe in nfes:
            for path in learned_files(folder, pname, nfe):
                try:
                    LearnedSolver.load(path).check_model(problem.denoiser, source=str(path))
                except samplers.InvalidInput as err:
                    p.error(f"--learned {str(folder)!r}: {common.solver_refusal(err)} — the run ranks it on {pname} "
                            f"at {nfe} NFE: " + fix.format(pname=pname, nfe=nfe))


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if common.report_only(args, reporting.report, p):
        return 0
    check_args(p, args)
    args = resolve_args(args)
    torch.set_num_threads(args.threads)
    result = run(args)
    result["command"] = common.run_command(reporting.MODULE, argv)
    written = reporting.write(result, args.out)
    print(reporting.headline(written[0]))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0

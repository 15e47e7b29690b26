"""Fit the learned multistep solvers the deterministic benchmark ranks beside every fixed sampler × schedule.

    python -m benchmarks.learned_solvers                       # gm-ve, gm-vp-eps, gm-flow × NFE 5, 10, 20
    python -m benchmarks.learned_solvers --problem gm-ve --nfe 10 --iters 300   # one, quickly

For each problem and NFE budget, :func:`samplers.fitted.solver.fit` fits the σ nodes, the multistep weights and the
σ the model is told on a calibration batch drawn from its own seed (``--calibration-seed``, 7 by default;
the benchmark picks winners on seed 0 and re-runs them on seeds 101-132, so the fit never sees the noise it is
scored on). The starting points are every known sampler the family contains (Euler, gradient estimation,
iPNDM, DPM-Solver++ 2M) on every schedule of the problem that starts at the top of its σ range. With
``--hard-pool`` the training half is drawn from a pool of 65536 other starts (seed + 1000) favouring the hard
ones, with importance weights (:func:`hard_starts`); the validation half stays a uniform sample. Writes
``<problem>_nfe<N>.json`` (a :class:`samplers.fitted.solver.LearnedSolver`) to ``--out`` and prints its RMSE and
wrong-mode starts on ``--report-seeds`` × ``--heldout`` starts (seeds neither the fits nor the benchmark use);
``--evaluate FILE…`` only prints that for solvers already fitted. ``--checkpoint-sigma`` adds a
:class:`samplers.fitted.solver.Checkpoint` on starts near a boundary between modes (:func:`boundary_starts`).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import samplers
from samplers.fitted import solver as learned
from samplers.problems import pf_ode_solution

from . import common, deterministic

DEFAULT_OUT = Path("docs/benchmarks/deterministic/learned")
HARD_POOL = 65536  # --hard-pool without a size
CHUNK = 4096  # starts per solve when mining a pool


def start_schedules(problem: common.Problem, nfe: int) -> dict[str, torch.Tensor]:
    """Every registered schedule with ``nfe`` steps that starts at the top of the problem's σ range (finite)."""
    out = {}
    for name in samplers.schedules.available():
        try:
            sig = problem.sigmas(name, nfe)
        except Exception:  # noqa: BLE001 - schedules that cannot be built for this problem are not starts
            continue
        first = float(sig[0])
        if len(sig) == nfe + 1 and math.isfinite(first) and deterministic.in_range(problem, first) \
                and abs(first - deterministic.full_start(problem)) <= 1e-6 * first:
            out[name] = sig
    return out


def hard_starts(problem: common.Problem, nfe: int, n: int, pool: int, seed: int, sigma_max: float):
    """``n`` training starts drawn from ``pool`` with probability ∝ how badly iPNDM on Karras σ at ``nfe`` steps
    solves them (floored at the median, so the easy majority stays represented), and their importance weights.

    A good solver's RMSE on a mixture is its rate of starts sent into the wrong cluster; those starts are rare
    (1 in thousands at 20 NFE), so a uniform calibration batch holds a handful. Drawing the starts near a
    boundary more often — and weighting them by 1/probability, so the loss is still the uniform one in
    expectation — puts many of them in the fit."""
    noise = problem.noise(pool, seed)
    x = noise.double() * sigma_max
    reference = problem.reference(x, sigma_max)
    with torch.no_grad():
        probe = samplers.sample("ipndm", problem.denoiser, x, problem.sigmas("karras", nfe), disable=True)
    err = common.item_rmse(probe, reference)
    score = err.clamp_min(err.median())
    prob = score / score.sum()
    idx = torch.multinomial(prob, n, replacement=False, generator=torch.Generator().manual_seed(seed))
    weights = 1.0 / (pool * prob[idx])
    return noise[idx], reference[idx], weights


def boundary_starts(problem: common.Problem, nfe: int, n: int, pool: int, seed: int, sigma_max: float,
                    sigma_c: float, by: str = "probe") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` starts of a ``pool`` (noise seed ``seed``) that lie near a boundary between modes, and their
    exact PF-ODE states at ``sigma_c``.

    ``by="probe"``: those that cheaper solvers (Euler at ``nfe`` steps, iPNDM at half of them, Karras σ) send
    to the wrong mode — near enough to a boundary for a small error to flip them; where there are fewer, the
    starts these probes solve worst fill the set. ``by="margin"``: those whose exact state at ``sigma_c`` is
    least certain of its mixture component (smallest largest posterior P(k | x), the mixture problems only)."""
    noise = problem.noise(pool, seed)
    x = noise.double() * sigma_max
    g = torch.Generator().manual_seed(seed)
    if by == "margin":
        states = torch.cat([pf_ode_solution(problem.denoiser, c, sigma_max, rtol=1e-9, atol=1e-9,
                                                 sigma_end=sigma_c) for c in x.split(CHUNK)])
        margin = common.gaussian_mixture().component_posterior(states, sigma_c).max(1).values
        idx = margin.argsort()[:n]
        idx = idx[torch.randperm(n, generator=g)]  # the validation part (the tail) is not the easiest ones
        return noise[idx], states[idx]
    if by != "probe":
        raise ValueError(f"by must be 'probe' or 'margin', got {by!r}")
    # in chunks: one solve over a very large batch spends its time allocating (measured: 100 % system time)
    reference = torch.cat([problem.reference(c, sigma_max) for c in x.split(CHUNK)])
    spread = common.spread(reference)
    worst = torch.zeros(pool, dtype=torch.float64)
    for sampler, steps in (("euler", nfe), ("ipndm", max(nfe // 2, 2))):
        with torch.no_grad():
            probe = torch.cat([samplers.sample(sampler, problem.denoiser, c, problem.sigmas("karras", steps),
                                               disable=True) for c in x.split(CHUNK)])
        worst = torch.maximum(worst, common.item_rmse(probe, reference) / spread)
    flipped = (worst > deterministic.WRONG_MODE).nonzero().flatten()
    if len(flipped) >= n:
        idx = flipped[torch.randperm(len(flipped), generator=g)[:n]]
    else:
        idx = worst.argsort(descending=True)[:n]
        idx = idx[torch.randperm(n, generator=g)]  # the validation part (the tail) is not the easiest ones
    states = pf_ode_solution(problem.denoiser, x[idx], sigma_max, rtol=1e-9, atol=1e-9, sigma_end=sigma_c)
    return noise[idx], states


def checkpoint_step(nfe: int, share: float = 0.75) -> int:
    """The node pinned at the checkpoint σ: the one that leaves ``share`` of the ``nfe`` steps above it, kept
    inside 1..nfe−1. Measured on gm-vp-eps (README): 15 of 20 and 7 or 8 of 10 steps above σ_c = 1.3 sent a
    third to a fifth as many starts to the wrong mode as the Karras node nearest σ_c (9 of 20, 4 of 10)."""
    return min(max(int(round(share * nfe)), 1), nfe - 1)


def fit_one(problem: common.Problem, nfe: int, *, calibration: int, seed: int, iters: int, batch: int | None,
            lr: float | None = None, validation: float = 0.5, hard_pool: int = 0, checkpoint_sigma: float | None = None,
            boundary: int = 2048, boundary_pool: int = 65536, boundary_by: str = "probe",
            pinned_step: int | None = None, checkpoint_weight: float = learned.Checkpoint.weight, history: int | None = 3, log=None):
    sigma_max = deterministic.full_start(problem)
    noise = problem.noise(calibration, seed)
    reference = problem.reference(noise.double() * sigma_max, sigma_max)
    weights = checkpoint = None
    if checkpoint_sigma:
        bnoise, bstates = boundary_starts(problem, nfe, boundary, boundary_pool, seed + 2000, sigma_max, checkpoint_sigma,
                                          by=boundary_by)
        step = pinned_step or checkpoint_step(nfe)
        checkpoint = learned.Checkpoint(checkpoint_sigma, step, bnoise, bstates, weight=checkpoint_weight)
    if hard_pool:  # training part drawn from a larger pool (another seed), validation part kept uniform
        n_val = int(round(calibration * validation))
        tn, tr, tw = hard_starts(problem, nfe, calibration - n_val, hard_pool, seed + 1000, sigma_max)
        noise = torch.cat([tn, noise[-n_val:]])
        reference = torch.cat([tr, reference[-n_val:]])
        weights = torch.cat([tw, torch.ones(n_val, dtype=tw.dtype)])
    if lr is None:  # fewer steps tolerate a larger learning rate; at 20 steps 3e-3 overshoots (measured)
        lr = 3e-3 * min(1.0, 10 / nfe) * (2.0 if nfe <= 5 else 1.0)
    solver = learned.fit(problem.denoiser, nfe, noise, problem.sigma_min, sigma_max, reference=reference,
                         init_schedules=start_schedules(problem, nfe), iters=iters, lr=lr, batch=batch,
                         validation=validation, weights=weights, checkpoint=checkpoint, history=history, log=log)
    solver.meta["hard_pool"] = {"size": hard_pool, "seed": seed + 1000} if hard_pool else None
    if checkpoint is not None:
        solver.meta["checkpoint"].update(pool=boundary_pool, pool_seed=seed + 2000, by=boundary_by)
    return solver


def report(problem: common.Problem, solver: learned.LearnedSolver, seeds, n: int,
           cache: common.ReferenceCache | None = None) -> dict:
    """The solver on ``n`` starts of each seed, pooled: RMSE, median per-start RMSE and wrong-mode starts
    (scored and pooled as the benchmark's held-out runs are: :func:`benchmarks.deterministic.pool`)."""
    cells = []
    for seed in seeds:
        x = problem.noise(n, seed).double() * solver.sigmas[0]
        ref = cache.get(problem, seed, x, solver.sigmas[0]) if cache else problem.reference(x, solver.sigmas[0])
        with torch.no_grad():
            out = samplers.sample("learned_multistep", problem.denoiser, x, solver.sigmas, solver=solver, disable=True)
        cells.append(deterministic.score(problem, out, ref, solver.sigmas[0]))
    return {**deterministic.pool(cells), "starts": n * len(cells)}


def _report_line(r: dict, seeds) -> str:
    return (f"seeds {min(seeds)}-{max(seeds)}: RMSE {r['rmse']:.3g}, wrong mode {r['wrong_mode']} of {r['starts']}, "
            f"median item {r['item_median']:.2g}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learned_solvers", description=__doc__.split("\n\n")[0])
    p.add_argument("--problem", dest="problems", nargs="+", default=list(deterministic.PROBLEMS))
    p.add_argument("--nfe", nargs="+", type=int, default=list(deterministic.NFES))
    p.add_argument("--calibration", type=int, default=16384, help="calibration starts (default 16384)")
    p.add_argument("--validation", type=float, default=0.5,
                   help="share of them never fitted on, that picks the iterate (default 0.5: a solver's rare "
                        "wrong-cluster starts need many starts to be seen)")
    p.add_argument("--calibration-seed", type=int, default=7)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch", type=int, default=None, help="minibatch of the training part (default: all of it)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 3e-3 at 10 NFE, scaled)")
    p.add_argument("--heldout", type=int, default=4096, help="starts per report seed in the printout (default 4096)")
    p.add_argument("--report-seeds", type=int, nargs="+", default=list(range(11, 19)),
                   help="seeds the printout scores each solver on (default 11-18; none the fits or the benchmark use)")
    p.add_argument("--evaluate", type=Path, nargs="+", default=None,
                   help="fit nothing: score these solver files on --report-seeds")
    p.add_argument("--cache", default="out/benchmarks/cache", help="reference solutions on disk (as the benchmark)")
    p.add_argument("--hard-pool", type=int, nargs="?", const=HARD_POOL, default=0,
                   help=f"draw the training half from a pool this large (default when given: {HARD_POOL}), favouring "
                        "the starts iPNDM gets wrong, with importance weights (default: a uniform training half)")
    p.add_argument("--checkpoint-sigma", type=float, default=None,
                   help="also fit the state at this σ (a pinned node) on starts near a boundary between modes "
                        "(samplers.fitted.solver.Checkpoint; the shipped gm-vp-eps fits use 1.3: the mixture's modes are decided near it)")
    p.add_argument("--checkpoint-step", type=int, default=None,
                   help="the node pinned at --checkpoint-sigma (default: round(0.75 × NFE), three quarters of the steps above it)")
    p.add_argument("--checkpoint-weight", type=float, default=learned.Checkpoint.weight,
                   help="weight of the endpoint loss beside the checkpoint's, each divided by its start value "
                        f"(default {learned.Checkpoint.weight}; the shipped gm-vp-eps 20-NFE fit uses 0.03)")
    p.add_argument("--history", type=int, default=3,
                   help="earlier steps each step may weigh (samplers.fitted.solver.fit; default 3)")
    p.add_argument("--boundary", type=int, default=2048, help="near-boundary starts for --checkpoint-sigma (default 2048)")
    p.add_argument("--boundary-pool", type=int, default=65536,
                   help="starts they are mined from (seed: calibration seed + 2000; default 65536)")
    p.add_argument("--boundary-by", choices=("probe", "margin"), default="probe",
                   help="how they are picked: flipped by cheaper solvers, or least certain of their component at "
                        "the checkpoint σ (boundary_starts; default probe)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.calibration_seed in deterministic.BENCHMARK_SEEDS:
        p.error("seeds 0 and 101-132 are the deterministic benchmark's selection and held-out seeds; calibrate on "
                "another")
    used = set(deterministic.BENCHMARK_SEEDS) | {args.calibration_seed, args.calibration_seed + 1000,
                                                  args.calibration_seed + 2000}
    if used & set(args.report_seeds):
        p.error(f"--report-seeds must not be a seed the fits or the benchmark use ({sorted(used & set(args.report_seeds))})")
    cache = common.ReferenceCache(args.cache)
    if args.evaluate:
        for path in args.evaluate:
            solver = learned.LearnedSolver.load(path)
            problem = common.get_problem(solver.meta["problem"])
            print(f"{path}: {_report_line(report(problem, solver, args.report_seeds, args.heldout, cache), args.report_seeds)}",
                  flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for pname in args.problems:
        problem = common.get_problem(pname)
        for nfe in args.nfe:
            t0 = time.perf_counter()
            solver = fit_one(problem, nfe, calibration=args.calibration, seed=args.calibration_seed,
                             iters=args.iters, batch=args.batch, lr=args.lr, validation=args.validation,
                             hard_pool=args.hard_pool, checkpoint_sigma=args.checkpoint_sigma,
                             boundary=args.boundary, boundary_pool=args.boundary_pool, boundary_by=args.boundary_by,
                             pinned_step=args.checkpoint_step, checkpoint_weight=args.checkpoint_weight,
                             history=args.history,
                             log=print if args.verbose else None)
            solver.meta.update(problem=pname, calibration_seed=args.calibration_seed,
                               seconds=round(time.perf_counter() - t0, 1), device=common.device_label(common.run_info()))
            path = solver.save(args.out / f"{pname}_nfe{nfe}.json")
            scored = report(problem, solver, args.report_seeds, args.heldout, cache)
            start = solver.meta["start"]
            print(f"{pname} NFE {nfe}: start {start['init']} + {start['schedule']} (validation RMSE "
                  f"{start['validation_rmse']:.3g}) → fitted {solver.meta['validation_rmse']:.3g} (iteration "
                  f"{solver.meta['iteration_kept']}); {_report_line(scored, args.report_seeds)}; "
                  f"{solver.meta['seconds']:.0f} s → {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

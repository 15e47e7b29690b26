"""Deterministic samplers versus diffusers at 5, 10 and 20 model evaluations.

    python -m benchmarks.deterministic --quick      # smoke run: every part on a small grid (≈ 25 s) → out/deterministic
    python -m benchmarks.deterministic --out docs/benchmarks/deterministic --threads 2   # the committed table
    python -m benchmarks.deterministic --samplers dpmpp_2m lms --schedules karras       # a subset
    python -m benchmarks.deterministic --report docs/benchmarks/deterministic/results.json   # table.md only

On the analytic Gaussian mixture of :mod:`samplers.problems` in three native forms (``gm-ve``: the exact
VE denoiser, σ 80 → 0.002; ``gm-vp-eps``: an SD-1.x-style discrete VP eps model, scaled_linear betas, 1000
steps; ``gm-flow``: an SD3-style rectified-flow model), every deterministic registry sampler
(``samplers.available("ode")``, found at run time; error-controlled adaptive ones — ``host_sync`` with an
``rtol`` option — are skipped because they cannot be held to a budget, and refused when ``--samplers`` names
one, as is ``learned_multistep``, Euler without a solver file: its files run as the fitted cells, ``--learned``;
fixed-grid ``host_sync`` ones run, their model calls counted on the real model) is run on every schedule that can be built for the problem
(``samplers.schedules.available()``; the ones that raise are recorded with the reason). Beside them,
diffusers' deterministic schedulers (:mod:`.peers`) run their own loop on the same data behind a native
model, from the same noise.

The budget is model evaluations: each sampler (and each scheduler) gets the most steps whose run calls the
model at most NFE times, counted by running it (:func:`samplers.core.budget.steps_for_nfe`). The error is
the RMSE (float64, all items and elements) to the exact PF-ODE endpoint from the same starting state
(``GaussianMixture.ode_endpoint``, dopri5 at 1e-10, cached on disk).

For each problem and NFE the report gives our best (sampler, schedule), diffusers' best scheduler, and the
ratio ours / diffusers (target ≤ 0.5). Both winners are picked on ``--seed``; they are then re-run on
held-out seeds, and that ratio is the one judged (selection over hundreds of our combinations against tens
of diffusers' could otherwise flatter us).

Modules, by role: :mod:`.running` (the cells and the command line), :mod:`.peers` (diffusers' configurations
and the native models they run on), :mod:`.scoring` (a run's score, the winners, the held-out pool),
:mod:`.reporting` (``table.md`` generated from ``results.json``). Writes both to ``--out`` (default
``out/deterministic``).
"""
from .peers import VE_TABLE_PREFIX, counterpart, edm_model, peer_configs, peer_problem, ve_table_betas, ve_table_problem
from .reporting import markdown, report
from .running import (BENCHMARK_SEEDS, HELDOUT_SEEDS, NFES, PROBLEMS, QUICK_HELDOUT_SEEDS, Run, heldout_runs,
                  learned_files, main, parser, resolve_args, resolved_defaults, run)
from .scoring import (FULL_RANGE_TOL, ITEMS, LEARNED, LEARNED_SCHEDULE, TARGET, WRONG_MODE, best_of, full_start,
                    in_range, judge, like_for_like, pool, score, summarise)

__all__ = ["BENCHMARK_SEEDS", "FULL_RANGE_TOL", "HELDOUT_SEEDS", "ITEMS", "LEARNED", "LEARNED_SCHEDULE", "NFES", "PROBLEMS",
           "QUICK_HELDOUT_SEEDS", "Run", "TARGET", "VE_TABLE_PREFIX", "WRONG_MODE", "best_of", "counterpart",
           "edm_model", "full_start", "heldout_runs", "in_range", "judge", "learned_files", "like_for_like", "main",
           "markdown", "parser", "peer_configs", "peer_problem", "pool", "report", "resolve_args", "resolved_defaults",
           "run", "score",
           "summarise",
           "ve_table_betas", "ve_table_problem"]

"""Deterministic samplers versus diffusers at 5, 10 and 20 model evaluations (the quality bar of issue 3).

    python -m benchmarks.deterministic                 # full run: every ODE sampler × every schedule
    python -m benchmarks.deterministic --quick         # smoke run (a few samplers, schedules and peers)
    python -m benchmarks.deterministic --out DIR --batch 256 --threads 1

On the analytic Gaussian mixture of :mod:`samplers.problems` in three native forms (``gm-ve``: the exact
VE denoiser, σ 80 → 0.002; ``gm-vp-eps``: an SD-1.x-style discrete VP eps model, scaled_linear betas, 1000
steps; ``gm-flow``: an SD3-style rectified-flow model), every deterministic registry sampler
(``samplers.available("ode")``, found at run time; error-controlled adaptive ones — ``host_sync`` with an
``rtol`` option — are skipped because they cannot be held to a budget; fixed-grid ``host_sync`` ones run,
their model calls counted on the real model) is run on every schedule that can be built for the problem
(``samplers.schedules.available()``; the ones that raise are recorded with the reason). Beside them,
diffusers' deterministic schedulers run their own loop on the same data behind a native model, from the
same noise:

- ``gm-vp-eps``: DPMSolverMultistep 2M and 3M, UniPC (order 2 and 3), DEIS (2 and 3), LMS, Euler and Heun,
  each with its default spacing and with Karras, exponential, beta sigmas and "trailing" spacing;
- ``gm-flow``: FlowMatchEuler (default, Karras, exponential, beta), FlowMatchHeun, and UniPC / DPM-Solver
  2M, 3M / DEIS with ``use_flow_sigmas``;
- ``gm-ve``: EDMEuler and EDMDPMSolverMultistep 2M / 3M (Karras and exponential σ) on the EDM-preconditioned
  model of the data, and the discrete VP schedulers of ``gm-vp-eps`` on an eps model of the same data whose
  1000-step training table is log-uniform in σ from 0.002 to 80 (so their Karras sigmas are the same 80 →
  0.002 Karras schedule ours use).

The budget is model evaluations: each sampler (and each scheduler) gets the most steps whose run calls the
model at most NFE times, counted by running it (:func:`benchmarks.common.steps_for_nfe`, as in
:mod:`benchmarks.quality`). The error is the RMSE (float64, all items and elements) to the exact PF-ODE
endpoint from the same starting state (``GaussianMixture.ode_endpoint``, dopri5 at 1e-10, cached on disk).

For each problem and NFE the report gives our best (sampler, schedule), diffusers' best scheduler, and the
ratio ours / diffusers (the target of issue 3 is ≤ 0.5). Both winners are picked on ``--seed``; they are
then re-run on a held-out seed, and that ratio is reported too (selection over hundreds of our
combinations against tens of diffusers' could otherwise flatter us). Writes ``results.json`` (every cell,
the device, versions, date, seeds) and ``table.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

import samplers

from . import common, quality
from .common import CountingDenoiser, Problem

NFES = (5, 10, 20)
PROBLEMS = ("gm-ve", "gm-vp-eps", "gm-flow")
TARGET = 0.5
# A run counts as "from the top of the σ range" when it starts within 2 % of it (diffusers' multistep
# schedulers with exponential / beta sigmas round the first timestep down to 998: σ 79.2 instead of 80).
FULL_RANGE_TOL = 0.02
# A start "ends in the wrong mode" when its RMSE exceeds this share of the data's spread: on the mixture such a
# start is ~1 off (the distance between clusters) while every other is below 0.05 from 10 NFE up (measured).
WRONG_MODE = 0.3
HELDOUT_SEEDS = tuple(range(101, 133))  # 32 × 4096 starts; fitted solvers must calibrate on other seeds
BENCHMARK_SEEDS = (0,) + HELDOUT_SEEDS  # the selection seed (--seed default) and the held-out ones
QUICK_SAMPLERS = ("euler", "heun", "dpmpp_2m")
QUICK_SCHEDULES = ("karras", "exponential", "linspace", "flow")
QUICK_PEERS = ("EulerDiscreteScheduler+karras", "DPMSolverMultistepScheduler+karras", "EDMEulerScheduler",
               "FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler+flow")
VE_TABLE_PREFIX = "vetable/"  # peers of gm-ve that run on the log-uniform discrete VP table
LEARNED, LEARNED_SCHEDULE = "learned_multistep", "fitted"  # cells of the solvers in --learned


# ------------------------------------------------------------------------------------------------------
# native models diffusers can run for the VE problem


def edm_model(gm, sigma_data: float = 0.5):
    """The data as an EDM-preconditioned network F(c_in·x, c_noise) (Karras et al. 2022, arXiv:2206.00364).

    diffusers' EDM schedulers feed ``c_in·x`` and ``c_noise = ¼·ln σ`` and form D = c_skip·x + c_out·F with
    the "epsilon" c_out = σ·σ_d/√(σ² + σ_d²); this F gives back the exact denoiser D of ``gm``.
    """
    sd2 = sigma_data * sigma_data

    def model(x_in: torch.Tensor, time: torch.Tensor, **extra_args) -> torch.Tensor:
        view = (-1,) + (1,) * (x_in.ndim - 1)
        sigma = (4.0 * time.to(torch.float64)).exp().reshape(view)
        scale = (sigma * sigma + sd2).sqrt()
        x = x_in.to(torch.float64) * scale
        d = gm.denoise(x, sigma.flatten())
        c_skip = sd2 / (scale * scale)
        c_out = sigma * sigma_data / scale
        return ((d - c_skip * x) / c_out).to(x_in.dtype)

    return model


def ve_table_betas(sigma_min: float = 0.002, sigma_max: float = 80.0, n: int = 1000) -> list[float]:
    """Betas of a discrete VP table with σ_i = √((1 − ᾱ_i)/ᾱ_i) log-uniform from sigma_min to sigma_max."""
    log_lo, log_hi = math.log(sigma_min), math.log(sigma_max)
    sig = [math.exp(log_lo + (log_hi - log_lo) * i / (n - 1)) for i in range(n)]
    ac = [1.0 / (1.0 + s * s) for s in sig]
    return [1.0 - ac[0]] + [1.0 - ac[i] / ac[i - 1] for i in range(1, n)]


def _ve_table_problem(problem: Problem, gm) -> Problem:
    """The VE problem's data behind an eps model on the log-uniform table, using diffusers' own float32 ᾱ
    (so the scheduler's timestep ↔ σ map and the model's are the same table)."""
    import diffusers

    betas = ve_table_betas(problem.sigma_min, problem.sigma_max)
    ac = diffusers.EulerDiscreteScheduler(trained_betas=betas, num_train_timesteps=len(betas)).alphas_cumprod
    native = samplers.core.native.VPDiscrete(ac.to(torch.float64))
    return dataclasses.replace(problem, native=native, native_model=gm.as_model("eps", native),
                               native_model_for=None)


# ------------------------------------------------------------------------------------------------------
# diffusers peers


def _discrete_peers(base: dict) -> dict[str, dict]:
    classes = {
        "DPMSolverMultistepScheduler": {},  # 2M (solver_order=2, dpmsolver++)
        "DPMSolverMultistepScheduler+3M": dict(solver_order=3),
        "UniPCMultistepScheduler": {},
        "UniPCMultistepScheduler+order3": dict(solver_order=3),
        "DEISMultistepScheduler": {},
        "DEISMultistepScheduler+order3": dict(solver_order=3),
        "LMSDiscreteScheduler": {},
        "EulerDiscreteScheduler": {},
        "HeunDiscreteScheduler": {},
    }
    spacings = {"": {}, "+karras": dict(use_karras_sigmas=True), "+exponential": dict(use_exponential_sigmas=True),
                "+beta": dict(use_beta_sigmas=True), "+trailing": dict(timestep_spacing="trailing")}
    return {label + sp: dict(base, **cfg, **extra) for label, cfg in classes.items() for sp, extra in spacings.items()}


def peer_configs(problem: Problem) -> dict[str, dict]:
    """diffusers' deterministic schedulers (label → config) for one of this benchmark's problems."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return {}
    if problem.name == "gm-vp-eps":
        return _discrete_peers(dict(common.SD_BETAS, prediction_type="epsilon"))
    if problem.name == "gm-flow":
        cfg = problem.diffusers_config or {}
        shift, n_train = cfg.get("flow_shift", 3.0), cfg.get("num_train_timesteps", 1000)
        fm = dict(shift=shift, num_train_timesteps=n_train)
        flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
                    num_train_timesteps=n_train)
        return {
            "FlowMatchEulerDiscreteScheduler": fm,
            "FlowMatchEulerDiscreteScheduler+karras": dict(fm, use_karras_sigmas=True),
            "FlowMatchEulerDiscreteScheduler+exponential": dict(fm, use_exponential_sigmas=True),
            "FlowMatchEulerDiscreteScheduler+beta": dict(fm, use_beta_sigmas=True),
            "FlowMatchHeunDiscreteScheduler": fm,
            "DPMSolverMultistepScheduler+flow": flow,
            "DPMSolverMultistepScheduler+3M+flow": dict(flow, solver_order=3),
            "UniPCMultistepScheduler+flow": flow,
            "UniPCMultistepScheduler+order3+flow": dict(flow, solver_order=3),
            "DEISMultistepScheduler+flow": flow,
        }
    if problem.name == "gm-ve":
        edm = dict(sigma_min=problem.sigma_min, sigma_max=problem.sigma_max, sigma_data=0.5)
        peers = {
            "EDMEulerScheduler": edm,  # Karras σ (its default)
            "EDMEulerScheduler+exponential": dict(edm, sigma_schedule="exponential"),
            "EDMDPMSolverMultistepScheduler": edm,  # 2M, Karras σ
            "EDMDPMSolverMultistepScheduler+exponential": dict(edm, sigma_schedule="exponential"),
            "EDMDPMSolverMultistepScheduler+3M": dict(edm, solver_order=3),
            "EDMDPMSolverMultistepScheduler+3M+exponential": dict(edm, solver_order=3, sigma_schedule="exponential"),
        }
        betas = ve_table_betas(problem.sigma_min, problem.sigma_max)
        table = _discrete_peers(dict(trained_betas=betas, num_train_timesteps=len(betas),
                                     prediction_type="epsilon"))
        peers.update({VE_TABLE_PREFIX + k: v for k, v in table.items()})
        return peers
    return {}


# ------------------------------------------------------------------------------------------------------
# the run


class Run:
    """Problems, their peers' native forms, the reference cache and the cells done so far."""

    def __init__(self, args):
        self.args = args
        ns = argparse.Namespace(no_cache=args.no_cache, cache=args.cache, problems=list(args.problems),
                                device="cpu", dtype=None, batch=args.batch, grid_dir=None)
        self.ctx = quality.Context(ns)  # problems, reference cache, exact samples (benchmarks.quality)
        self.peer_problem: dict[str, Problem] = {}
        self.peer_table_problem: dict[str, Problem] = {}
        for name, problem in self.ctx.problems.items():
            if name == "gm-ve":
                gm = common.gaussian_mixture()
                self.peer_problem[name] = dataclasses.replace(problem, native_model=edm_model(gm))
                try:
                    self.peer_table_problem[name] = _ve_table_problem(problem, gm)
                except ImportError:
                    pass
            else:
                self.peer_problem[name] = problem
        self.cells: list[dict] = []
        self.batch_override: int | None = None  # the held-out re-runs use their own batch
        self.sampler_seconds: dict[tuple, float] = {}
        self._refs: dict[str, torch.Tensor] = {}

    def batch(self, problem: Problem) -> int:
        return self.batch_override or self.ctx.batch(problem)

    def reference(self, problem: Problem, seed: int, x_start: torch.Tensor, sigma_start: float) -> torch.Tensor:
        """The exact endpoint from (x_start, sigma_start): kept in memory, on disk in the reference cache."""
        key = self.ctx.refs.key(problem, seed, x_start, sigma_start)
        if key not in self._refs:
            self._refs[key] = self.ctx.refs.get(problem, seed, x_start, sigma_start)
        return self._refs[key]

    # ---- our samplers

    def samplers(self) -> tuple[list[str], dict[str, str]]:
        names, skipped = [], {}
        wanted = self.args.samplers or samplers.available("ode")
        for name in wanted:
            spec = samplers.info(name)
            if spec.kind != "ode":
                skipped[spec.name] = f"kind {spec.kind!r}: not deterministic"
            elif spec.host_sync and "rtol" in spec.options:
                skipped[spec.name] = ("adaptive (host_sync, error-controlled): it chooses its own steps, so it "
                                      "cannot be held to an NFE budget")
            else:
                names.append(spec.name)
        return names, skipped

    def schedules(self, problem: Problem) -> tuple[list[str], dict[str, str]]:
        names, skipped = [], {}
        for name in self.args.schedules or samplers.schedules.available():
            try:
                for n in (1, 2, 5, max(self.args.nfe)):
                    samplers.core.run.read_sigmas(problem.sigmas(name, n))
            except Exception as err:  # noqa: BLE001 - a schedule that cannot be built here is a result
                skipped[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                continue
            names.append(name)
        return names, skipped

    def ours(self, pname: str, sampler: str, schedule: str, nfe: int, seed: int) -> dict:
        problem = self.ctx.problems[pname]
        batch = self.batch(problem)
        out = {"problem": pname, "sampler": sampler, "schedule": schedule, "nfe": nfe, "seed": seed, "batch": batch}
        key = (pname, sampler)
        # the time budget bounds the sweep; the held-out re-runs of the winners (batch_override) always run
        if self.batch_override is None and self.sampler_seconds.get(key, 0.0) > self.args.max_sampler_seconds:
            return {**out, "skipped": f"over the time budget of {self.args.max_sampler_seconds:g} s per sampler "
                                      "and problem"}
        t0 = time.perf_counter()
        try:
            found = common.steps_for_nfe(sampler, nfe, lambda n: problem.sigmas(schedule, n))
            if found is None:
                return {**out, "skipped": f"not even one step fits {nfe} model evaluations"}
            steps = found[0]
            while True:
                sigmas = problem.sigmas(schedule, steps)
                x_start = samplers.initial_latent(problem.noise(batch, seed), sigmas)
                model = CountingDenoiser(problem.batch_denoiser(batch, seed))
                with torch.no_grad():
                    x0 = samplers.sample(sampler, model, x_start, sigmas, disable=True)
                # a solver that iterates to convergence (torchdiffeq's implicit Adams) may call this model
                # more often than the stand-in it was counted on: fewer steps until the real count fits
                if model.calls <= nfe or steps == 1:
                    break
                steps -= 1
            ref = self.reference(problem, seed, x_start, float(sigmas[0]))
        except Exception as err:  # noqa: BLE001 - a sampler failing is a result, not a crash of the run
            result = {**out, "skipped": f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        else:
            result = {**out, "steps": steps, "nfe_used": model.calls, "kind": "ode",
                      **score(problem, x0, ref, float(sigmas[0])), "seconds": time.perf_counter() - t0}
            if model.calls > nfe:
                result["skipped"] = f"even 1 step used {model.calls} model evaluations on this model"
        self.sampler_seconds[key] = self.sampler_seconds.get(key, 0.0) + time.perf_counter() - t0
        return result

    # ---- learned solvers (fitted by benchmarks.learned_solvers on another seed)

    def learned(self, pname: str, path: Path, nfe: int, seed: int) -> dict:
        """``learned_multistep`` with the solver in ``path`` (fitted on a calibration seed of its own)."""
        problem = self.ctx.problems[pname]
        batch = self.batch(problem)
        out = {"problem": pname, "sampler": LEARNED, "schedule": f"{LEARNED_SCHEDULE}:{path.name}", "nfe": nfe,
               "seed": seed, "batch": batch}
        t0 = time.perf_counter()
        try:
            from samplers.fitted.solver import LearnedSolver

            solver = LearnedSolver.load(path)
            if solver.meta.get("calibration_seed") in (seed, None):
                return {**out, "skipped": f"fitted on seed {solver.meta.get('calibration_seed')}, the seed it would "
                                          "be scored on"}
            x_start = problem.noise(batch, seed).to(torch.float64) * solver.sigmas[0]
            model = CountingDenoiser(problem.batch_denoiser(batch, seed))
            with torch.no_grad():
                x0 = samplers.sample(LEARNED, model, x_start, solver.sigmas, solver=solver, disable=True)
            ref = self.reference(problem, seed, x_start, solver.sigmas[0])
        except Exception as err:  # noqa: BLE001
            return {**out, "skipped": f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        result = {**out, "steps": solver.steps, "nfe_used": model.calls, "kind": "ode",
                  "calibration_seed": solver.meta.get("calibration_seed"),
                  **score(problem, x0, ref, solver.sigmas[0]), "seconds": time.perf_counter() - t0}
        if model.calls > nfe:
            result["skipped"] = f"uses {model.calls} model evaluations, more than {nfe}"
        return result

    def rerun(self, cell: dict, seed: int) -> dict:
        """The same (sampler, schedule) as ``cell`` on another seed."""
        if cell["sampler"] == LEARNED and cell["schedule"].startswith(LEARNED_SCHEDULE + ":"):
            path = self.args.learned / cell["schedule"].split(":", 1)[1]
            return self.learned(cell["problem"], path, cell["nfe"], seed)
        return self.ours(cell["problem"], cell["sampler"], cell["schedule"], cell["nfe"], seed)

    # ---- diffusers

    def peer(self, pname: str, label: str, config: dict, nfe: int, seed: int) -> dict:
        table = label.startswith(VE_TABLE_PREFIX)
        problem = (self.peer_table_problem if table else self.peer_problem)[pname]
        sched_label = label[len(VE_TABLE_PREFIX):] if table else label
        batch = self.batch(problem)
        out = {"problem": pname, "sampler": f"diffusers:{label}", "schedule": "native", "nfe": nfe, "seed": seed,
               "batch": batch}
        t0 = time.perf_counter()
        try:
            found = quality._peer_steps(sched_label, config, nfe)
            if found is None:
                return {**out, "skipped": f"no step count fits {nfe} model calls"}
            noise = problem.noise(batch, seed)
            x0, x_start, sigma_start, calls = quality.run_peer(problem, sched_label, config, found[0], noise, seed)
            ref = self.reference(problem, seed, x_start, sigma_start)
        except Exception as err:  # noqa: BLE001
            return {**out, "skipped": f"diffusers raised {type(err).__name__}: {err}"}
        return {**out, "steps": found[0], "nfe_used": calls, "kind": "ode", **score(problem, x0, ref, sigma_start),
                "seconds": time.perf_counter() - t0}


def learned_files(folder: Path | None, problem: str, nfe: int) -> list[Path]:
    """The fitted solvers for (problem, NFE) in ``folder`` (``<problem>_nfe<N>*.json``)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(Path(folder).glob(f"{problem}_nfe{nfe}.json")) + sorted(Path(folder).glob(f"{problem}_nfe{nfe}_*.json"))


def heldout_runs(r: Run, summary: list[dict], args) -> list[dict]:
    """Re-run each (problem, NFE)'s winners — ours, ours on fixed schedules only, diffusers' — on
    ``--heldout-seeds`` × ``--heldout-batch`` starts none of them was picked on, pooled into one RMSE.

    On a mixture the RMSE of a good solver is a count of the rare starts it sends to the wrong cluster
    (one such start among 2048 adds ≈ 0.02; at 20 NFE about 1 in 4000 starts): the pooled held-out starts
    (131072 by default) count a few dozen of them, where the selection run sees none or one, and carry no
    selection bias."""
    configs = {p: peer_configs(r.ctx.problems[p]) for p in {row["problem"] for row in summary}}
    r.batch_override = args.heldout_batch
    out = []
    try:
        for row in summary:
            if row.get("ratio") is None:
                continue
            entry = {"problem": row["problem"], "nfe": row["nfe"], "seeds": list(args.heldout_seeds),
                     "batch": args.heldout_batch}
            for who in ("ours", "ours_fixed", "diffusers"):
                w = row.get(who)
                if w is None:
                    continue
                if who == "ours_fixed" and "ours" in entry and (w["sampler"], w["schedule"]) == (
                        entry["ours"]["sampler"], entry["ours"]["schedule"]):
                    entry[who] = entry["ours"]  # the same winner: its runs are already in
                    continue
                runs = []
                for seed in args.heldout_seeds:
                    if who == "diffusers":
                        label = w["sampler"].split(":", 1)[1]
                        c = r.peer(row["problem"], label, configs[row["problem"]][label], row["nfe"], seed)
                    else:
                        c = r.rerun({**w, "problem": row["problem"], "nfe": row["nfe"]}, seed)
                    r.cells.append(c)
                    runs.append(c)
                if all(_ok(c) for c in runs):
                    entry[who] = {"sampler": w["sampler"], "schedule": w["schedule"], **pool(runs),
                                  "rmse_per_seed": [c["rmse"] for c in runs]}
            if entry.get("ours") and entry.get("diffusers"):
                entry["ratio"] = entry["ours"]["rmse"] / entry["diffusers"]["rmse"]
                entry["ratio_item_median"] = entry["ours"]["item_median"] / entry["diffusers"]["item_median"]
            if entry.get("ours_fixed") and entry.get("diffusers"):
                entry["ratio_fixed"] = entry["ours_fixed"]["rmse"] / entry["diffusers"]["rmse"]
            out.append(entry)
    finally:
        r.batch_override = None
    return out


def pool(cells: list[dict]) -> dict:
    """Scores (:func:`score`) of equal batches pooled into one: the RMSE over all their starts, the median of
    their per-start medians and the wrong-mode starts of all of them."""
    return {"rmse": math.sqrt(sum(c["rmse"] ** 2 for c in cells) / len(cells)),
            "wrong_mode": sum(c["wrong_mode"] for c in cells),
            "item_median": sorted(c["item_median"] for c in cells)[len(cells) // 2]}


def judge(row: dict, heldout: list[dict], heldout_requested: bool) -> None:
    """The target is judged on the held-out starts; where they were asked for but a winner's re-run did not
    complete, the pair does not count as met (the selection seed alone is a lottery at 20 NFE)."""
    h = next((h for h in heldout if (h["problem"], h["nfe"]) == (row["problem"], row["nfe"])), None)
    if h is not None and "ratio" in h:
        row["meets_target"] = h["ratio"] <= TARGET
    elif heldout_requested:
        row["meets_target"] = False


def full_start(problem: Problem) -> float:
    """The σ a run from pure noise starts at: the model's σ_max (or the finite one schedules use for flow)."""
    if math.isinf(problem.sigma_max) and problem.finite_sigma_max is not None:
        return problem.finite_sigma_max
    return problem.sigma_max


def in_range(problem: Problem, sigma_start: float) -> bool:
    """Whether a run starts at the top of the problem's σ range (within FULL_RANGE_TOL).

    Lower starts solve a shorter ODE from a wrongly distributed start; higher ones leave the problem's range
    (an SD-style VP model cannot be evaluated above its σ_max — its time input clamps there — and gm-ve is
    the 80 → 0.002 problem). A flow model is defined up to σ = inf, so any start from σ = 80 up counts.
    """
    return full_start(problem) * (1 - FULL_RANGE_TOL) <= sigma_start <= problem.sigma_max * (1 + FULL_RANGE_TOL)


def score(problem: Problem, x0: torch.Tensor, ref: torch.Tensor, sigma_start: float) -> dict:
    """RMSE to the reference, the median and largest per-item RMSE, how many starts ended in another mode
    (per-item RMSE above WRONG_MODE × the spread of the references about their mean), and whether the run
    started at the top of the problem's σ range (:func:`in_range`; runs that do not are reported but not ranked)."""
    per_item = common.item_rmse(x0, ref)
    return {"sigma_start": sigma_start, "rmse": common.rmse(x0, ref), "item_median": float(per_item.median()),
            "item_max": float(per_item.max()), "wrong_mode": int((per_item > WRONG_MODE * common.spread(ref)).sum()),
            "full_range": in_range(problem, sigma_start)}


_SAME_ALGORITHM = {
    "DPMSolverMultistepScheduler": "dpmpp_2m", "EDMDPMSolverMultistepScheduler": "dpmpp_2m",
    "LMSDiscreteScheduler": "lms", "EulerDiscreteScheduler": "euler", "EDMEulerScheduler": "euler",
    "FlowMatchEulerDiscreteScheduler": "euler", "HeunDiscreteScheduler": "heun",
    "FlowMatchHeunDiscreteScheduler": "heun",
}
# ours default to order 3 (diffusers to 2): only diffusers' order-3 configurations are the same algorithm
_SAME_AT_ORDER3 = {"UniPCMultistepScheduler": "unipc_bh2", "DEISMultistepScheduler": "deis"}


def counterpart(label: str) -> tuple[str, str] | None:
    """Our (sampler, schedule) doing what the diffusers peer ``label`` does, at our default options.

    Schedules match exactly for Karras / exponential / beta σ and "trailing"; diffusers' default "linspace"
    rounds its timesteps and flow-sigma multistep schedulers start at t = 0.999, so those pairs are close,
    not identical. None where we have no counterpart at default options.
    """
    base = label[len(VE_TABLE_PREFIX):] if label.startswith(VE_TABLE_PREFIX) else label
    cls, *mods = base.split("+")
    if cls in _SAME_AT_ORDER3:
        if "order3" not in mods:
            return None
        sampler = _SAME_AT_ORDER3[cls]
    elif cls in _SAME_ALGORITHM:
        sampler = "dpmpp_3m" if "3M" in mods else _SAME_ALGORITHM[cls]
    else:
        return None
    if cls.startswith("EDM"):
        return sampler, "exponential" if "exponential" in mods else "karras"
    if cls.startswith("FlowMatch") or "flow" in mods:
        return (sampler, "flow") if not (set(mods) - {"flow", "3M", "order3"}) else None
    for mod, schedule in (("karras", "karras"), ("exponential", "exponential"), ("beta", "beta_sigmas"),
                          ("trailing", "trailing")):
        if mod in mods:
            return sampler, schedule
    return sampler, "linspace"


def like_for_like(cells: list[dict], problems: list[str], nfes: list[int], seed: int) -> list[dict]:
    """Each diffusers peer beside our sampler of the same algorithm on the same schedule (ratio per NFE)."""
    ok = {(c["problem"], c["sampler"], c["schedule"], c["nfe"]): c for c in cells if c["seed"] == seed and _ok(c)}
    rows = []
    for p in problems:
        labels = sorted({c["sampler"] for c in cells if c["problem"] == p and c["sampler"].startswith("diffusers:")})
        for peer in labels:
            match = counterpart(peer.split(":", 1)[1])
            if match is None:
                continue
            row = {"problem": p, "diffusers": peer.split(":", 1)[1], "ours": f"{match[0]} + {match[1]}", "ratio": {}}
            for n in nfes:
                mine, theirs = ok.get((p, *match, n)), ok.get((p, peer, "native", n))
                if mine and theirs:
                    row["ratio"][n] = mine["rmse"] / theirs["rmse"]
            if row["ratio"]:
                rows.append(row)
    return rows


def _ok(cell: dict) -> bool:
    return "skipped" not in cell and math.isfinite(cell.get("rmse", math.nan))


def _ranked(cell: dict) -> bool:
    return _ok(cell) and cell.get("full_range", True)


def best_of(cells: list[dict], problem: str, nfe: int, peer: bool, seed: int, fixed_only: bool = False) -> dict | None:
    """The cell with the smallest RMSE among ours (peer=False) or diffusers' (peer=True); ``fixed_only``: ours
    without the fitted solvers."""
    pool = [c for c in cells if c["problem"] == problem and c["nfe"] == nfe and c["seed"] == seed and _ranked(c)
            and c["sampler"].startswith("diffusers:") == peer and not (fixed_only and c["sampler"] == LEARNED)]
    return min(pool, key=lambda c: c["rmse"]) if pool else None


def summarise(cells: list[dict], problems: list[str], nfes: list[int], seed: int) -> list[dict]:
    rows = []
    for p in problems:
        for n in nfes:
            ours, theirs = best_of(cells, p, n, False, seed), best_of(cells, p, n, True, seed)
            fixed = best_of(cells, p, n, False, seed, fixed_only=True)
            row = {"problem": p, "nfe": n, "ours": _brief(ours), "diffusers": _brief(theirs), "ours_fixed": _brief(fixed)}
            if fixed and theirs:
                row["ratio_fixed"] = fixed["rmse"] / theirs["rmse"]
            if ours and theirs:
                row["ratio"] = ours["rmse"] / theirs["rmse"]
                row["meets_target"] = row["ratio"] <= TARGET
                row["ratio_item_median"] = ours["item_median"] / theirs["item_median"]
            rows.append(row)
    return rows


def _brief(cell: dict | None) -> dict | None:
    if cell is None:
        return None
    return {k: cell[k] for k in ("sampler", "schedule", "rmse", "item_median", "item_max", "steps", "nfe_used",
                                 "sigma_start")}


def run(args) -> dict:
    t_start = time.perf_counter()
    r = Run(args)
    names, skipped_samplers = r.samplers()
    skipped_schedules, used_schedules, peers_of = {}, {}, {}
    progress = not args.no_progress
    for pname, problem in r.ctx.problems.items():
        scheds, skipped_schedules[pname] = r.schedules(problem)
        used_schedules[pname] = scheds
        t0 = time.perf_counter()
        for schedule in scheds:
            for name in names:
                for nfe in args.nfe:
                    r.cells.append(r.ours(pname, name, schedule, nfe, args.seed))
            if progress:
                print(f"[{pname}] {schedule}: {len(names)} samplers done ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        for nfe in args.nfe:
            for path in learned_files(args.learned, pname, nfe):
                r.cells.append(r.learned(pname, path, nfe, args.seed))
        peers = {} if not args.peers else peer_configs(problem)
        if args.peer_names:
            peers = {k: v for k, v in peers.items() if k in args.peer_names}
        if pname == "gm-ve" and pname not in r.peer_table_problem:
            peers = {k: v for k, v in peers.items() if not k.startswith(VE_TABLE_PREFIX)}
        peers_of[pname] = list(peers)
        for label, config in peers.items():
            for nfe in args.nfe:
                r.cells.append(r.peer(pname, label, config, nfe, args.seed))
        if progress:
            print(f"[{pname}] {len(peers)} diffusers peers done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)
    problems = list(r.ctx.problems)
    summary = summarise(r.cells, problems, args.nfe, args.seed)
    heldout = heldout_runs(r, summary, args) if args.heldout_seeds else []
    for row in summary:
        judge(row, heldout, bool(args.heldout_seeds))
    info = common.run_info("cpu")
    return {
        "info": {**info, "seconds": time.perf_counter() - t_start},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "target_ratio": TARGET,
        "problems": {n: p.description for n, p in r.ctx.problems.items()},
        "unavailable": r.ctx.unavailable,
        "samplers": names,
        "skipped_samplers": skipped_samplers,
        "schedules": used_schedules,
        "skipped_schedules": skipped_schedules,
        "peers": peers_of,
        "summary": summary,
        "heldout": heldout,
        "like_for_like": like_for_like(r.cells, problems, args.nfe, args.seed),
        "cells": r.cells,
    }


# ------------------------------------------------------------------------------------------------------
# report


def _name(cell: dict | None) -> str:
    if cell is None:
        return "–"
    if cell["sampler"].startswith("diffusers:"):
        return cell["sampler"].split(":", 1)[1]
    return f"{cell['sampler']} + {cell['schedule']}"


def _who(cell: dict | None) -> str:
    return "–" if cell is None else f"{_name(cell)} ({cell['nfe_used']} NFE)"


def _err(cell: dict | None) -> str:
    return "–" if cell is None else f"{cell['rmse']:.2e}"


def markdown(result: dict) -> str:
    info, args = result["info"], result["args"]
    v = info["versions"]
    seeds = args.get("heldout_seeds") or []
    held_desc = (f"seeds {', '.join(map(str, seeds))} × {args.get('heldout_batch')} starts" if seeds else "none")
    lines = ["# Deterministic samplers versus diffusers", "",
             f"{common.device_label(info)}, {info['date_utc']}, torch {v['torch']}, diffusers {v['diffusers']}, "
             f"commit {info['commit']}, selection seed {args['seed']} × {args['batch']} starts, held-out {held_desc}, "
             f"run time {info['seconds']:.0f} s.", "",
             "RMSE to the exact PF-ODE endpoint from the same start (lower is better). NFE is the budget of model "
             "evaluations; every sampler gets the most steps that fit it. Ratio = ours / diffusers "
             f"(target ≤ {result['target_ratio']}).", "",
             "The winners — our best (sampler, schedule) of every combination including the fitted "
             f"`{LEARNED}` solvers, our best on fixed schedules only, and diffusers' best configuration — are "
             "picked on the selection seed, then re-run on the held-out starts, none of which any of them was "
             "picked or fitted on; the held-out ratio (bold where it meets the target) is the one the target is "
             "judged on. On a mixture a good solver's RMSE counts the rare starts near a boundary between "
             "components that it sends to the wrong one (*wrong mode*: per-start RMSE above "
             f"{WRONG_MODE} × the data's spread), so the held-out pool has many times the starts of the selection "
             "run. *median item*: the ratio of the winners' median per-start RMSE. Only runs that "
             "start within 2 % of the top of the problem's σ range (80, 14.6, and ≥ 80 for flow) are ranked.", "",
             "| problem | NFE | ours: best sampler + schedule | RMSE | diffusers: best scheduler | RMSE | ratio | "
             "held-out RMSE ours / diffusers | wrong mode (held-out) ours / diffusers | held-out ratio | "
             "median item (held-out) | fixed schedules only: best | held-out ratio |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    held = {(h["problem"], h["nfe"]): h for h in result["heldout"]}
    for row in result["summary"]:
        o, d = row["ours"], row["diffusers"]
        ratio = f"{row['ratio']:.3f}" if "ratio" in row else "–"
        h = held.get((row["problem"], row["nfe"]), {})
        if "ratio" in h:
            hr = f"**{h['ratio']:.3f}**" if h["ratio"] <= result["target_ratio"] else f"{h['ratio']:.3f}"
            he = f"{h['ours']['rmse']:.2e} / {h['diffusers']['rmse']:.2e}"
            mr = f"{h['ratio_item_median']:.3f}"
            wm = f"{h['ours'].get('wrong_mode', '–')} / {h['diffusers'].get('wrong_mode', '–')}"
        else:
            hr = he = mr = wm = "–"
        fx = row.get("ours_fixed")
        fr = f"{h['ratio_fixed']:.3f}" if "ratio_fixed" in h else (
            f"({row['ratio_fixed']:.3f})" if "ratio_fixed" in row else "–")
        lines.append(f"| {row['problem']} | {row['nfe']} | {_who(o)} | {_err(o)} | {_who(d)} | {_err(d)} | {ratio} | "
                     f"{he} | {wm} | {hr} | {mr} | {_name(fx)} ({_err(fx)}) | {fr} |")
    met = [r for r in result["summary"] if r.get("meets_target")]
    basis = "on the held-out starts" if result["heldout"] else "on the selection seed"
    lines += ["", f"Target met in {len(met)} of {len(result['summary'])} (problem, NFE) pairs ({basis}).", ""]
    nfes = args["nfe"]
    for pname, desc in result["problems"].items():
        cells = [c for c in result["cells"] if c["problem"] == pname and c["seed"] == args["seed"] and _ranked(c)]
        lines += [f"## {pname}", "", desc, "",
                  "Each of our samplers on its best schedule per budget (RMSE, schedule; ranked runs only):", "",
                  "| sampler | " + " | ".join(f"NFE ≤ {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
        by = {}
        for c in cells:
            key = c["sampler"]
            cur = by.setdefault(key, {}).get(c["nfe"])
            if cur is None or c["rmse"] < cur["rmse"]:
                by[key][c["nfe"]] = c
        def score(item):
            vals = [item[1][n]["rmse"] for n in reversed(nfes) if n in item[1]]
            return vals[0] if vals else math.inf
        ours = [(k, v) for k, v in by.items() if not k.startswith("diffusers:")]
        peers = [(k, v) for k, v in by.items() if k.startswith("diffusers:")]
        for k, v in sorted(ours, key=score):
            lines.append(f"| {k} | " + " | ".join(f"{v[n]['rmse']:.2e} ({v[n]['schedule']})" if n in v else "–"
                                                    for n in nfes) + " |")
        if peers:
            lines += ["", "diffusers' schedulers on the same data and noise (RMSE):", "",
                      "| scheduler | " + " | ".join(f"NFE ≤ {n}" for n in nfes) + " |", "|---|" + "---:|" * len(nfes)]
            for k, v in sorted(peers, key=score):
                lines.append(f"| {k.split(':', 1)[1]} | " + " | ".join(f"{v[n]['rmse']:.2e}" if n in v else "–"
                                                                     for n in nfes) + " |")
        short = sorted({c["schedule"] if c["schedule"] != "native" else c["sampler"] for c in result["cells"]
                        if c["problem"] == pname and _ok(c) and not c["full_range"]})
        if short:
            lines += ["", "Not ranked (start not at the top of the problem's σ range: a shorter ODE from a "
                      "wrongly distributed start, or above the range the model is defined on): "
                      + ", ".join(f"`{x}`" for x in short) + " — in results.json."]
        sk = result["skipped_schedules"].get(pname, {})
        if sk:
            lines += ["", "Schedules not run on this problem: " + "; ".join(f"`{k}` ({w})" for k, w in sk.items())]
        failed = sorted({(c["sampler"], c["schedule"], c["skipped"]) for c in result["cells"]
                         if c["problem"] == pname and "skipped" in c})
        if failed:
            lines += ["", "Cells not run:", ""] + [f"- {s} / {sch}: {why}" for s, sch, why in failed[:30]]
            if len(failed) > 30:
                lines.append(f"- … and {len(failed) - 30} more (see results.json)")
        lines.append("")
    if result["skipped_samplers"]:
        lines += ["Samplers not run: " + "; ".join(f"`{k}` ({w})" for k, w in result["skipped_samplers"].items()), ""]
    like = result.get("like_for_like") or []
    if like:
        lines += ["## Same algorithm, same schedule", "",
                  "Each diffusers scheduler beside our sampler of the same name on the same schedule (ratio of RMSE, "
                  "ours / diffusers; ≈ 1 where the two compute the same thing — diffusers starts from "
                  "noise·√(σ²+1) and keeps σ in float32 — and where they differ the ratio shows whose variant "
                  "is better here).", "",
                  "| problem | diffusers | ours | " + " | ".join(f"NFE ≤ {n}" for n in nfes) + " |",
                  "|---|---|---|" + "---:|" * len(nfes)]
        for row in like:
            ratio = {int(k): v for k, v in row["ratio"].items()}
            lines.append(f"| {row['problem']} | {row['diffusers']} | {row['ours']} | "
                         + " | ".join(f"{ratio[n]:.3f}" if n in ratio else "–" for n in nfes) + " |")
        lines.append("")
    for name, why in result["unavailable"].items():
        lines += [f"## {name}: not run", "", why, ""]
    return "\n".join(lines)


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    # indented, except one compact line per cell (thousands of them)
    head = json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=1, default=str)
    cells = ",\n".join(json.dumps(c, separators=(",", ":"), default=str) for c in result["cells"])
    (out / "results.json").write_text(head[:-2] + ',\n "cells": [\n' + cells + "\n ]\n}\n")
    (out / "table.md").write_text(markdown(result))
    return [out / "results.json", out / "table.md"]


# ------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.deterministic", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: samplers {', '.join(QUICK_SAMPLERS)}, a few schedules and peers, batch 8")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/deterministic"),
                   help="folder for results.json and table.md (default docs/benchmarks/deterministic)")
    p.add_argument("--problem", dest="problems", nargs="+", default=list(PROBLEMS),
                   help=f"problems (default {' '.join(PROBLEMS)}; any benchmarks.common problem runs without peers)")
    p.add_argument("--nfe", nargs="+", type=int, default=list(NFES), help="NFE budgets (default 5 10 20)")
    p.add_argument("--samplers", nargs="+", default=None, help="registry names (default: every 'ode' sampler)")
    p.add_argument("--schedules", nargs="+", default=None, help="schedule names (default: every registered one)")
    p.add_argument("--peer-names", nargs="+", default=None, help="only these diffusers peers (labels as in the table)")
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--learned", type=Path, default=Path("docs/benchmarks/deterministic/learned"),
                   help="folder of fitted solvers <problem>_nfe<N>.json (benchmarks.learned_solvers); they are "
                        "ranked with ours unless fitted on the seed being scored (default %(default)s)")
    p.add_argument("--no-learned", dest="learned", action="store_const", const=None)
    p.add_argument("--batch", type=int, default=None, help="items per cell (default 2048; 8 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="noise seed the winners are picked on (default 0)")
    p.add_argument("--heldout-seeds", type=int, nargs="*", default=list(HELDOUT_SEEDS),
                   help="seeds the winners are re-run on, pooled (default 101-132; none: no re-run)")
    p.add_argument("--heldout-batch", type=int, default=None, help="starts per held-out seed (default 4096: with 32 "
                   "seeds, 131072 starts, where a 20-NFE solver sends a few dozen to the wrong mode; 8 with --quick)")
    p.add_argument("--cache", default="out/benchmarks/cache", help="reference solutions on disk")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--max-sampler-seconds", type=float, default=120.0,
                   help="stop running a sampler on a problem after this many seconds (slow adapters)")
    p.add_argument("--no-progress", action="store_true")
    return p


def resolve_args(args) -> argparse.Namespace:
    if args.quick:
        args.batch = args.batch or 8
        if args.samplers is None:
            args.samplers = [n for n in QUICK_SAMPLERS if n in samplers.available()]
        if args.schedules is None:
            args.schedules = [s for s in QUICK_SCHEDULES if s in samplers.schedules.available()]
        if args.peer_names is None:
            args.peer_names = list(QUICK_PEERS)
    # at 512 items one start near a cluster boundary sent the wrong way moves the RMSE by ~0.06
    args.batch = args.batch or 2048
    args.heldout_batch = args.heldout_batch or (8 if args.quick else 4096)
    if args.seed in args.heldout_seeds:
        raise SystemExit(f"--heldout-seeds must not contain the selection seed {args.seed}")
    return args


def main(argv=None) -> int:
    args = resolve_args(parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    written = write(result, args.out)
    print(markdown(result).split("\n## ")[0])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())

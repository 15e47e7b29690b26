"""Scoring: one run against its exact endpoint, the winners per (problem, NFE), pooled held-out ratios.

Everything here is a function of cells (plain dicts as they appear in ``results.json``), so the summary of a
run can be recomputed from its file.
"""
from __future__ import annotations

import math

import torch

from .. import common
from ..common import Problem
from .peers import counterpart

TARGET = 0.5
# A run counts as "from the top of the σ range" when it starts within 2 % of it (diffusers' multistep
# schedulers with exponential / beta sigmas round the first timestep down to 998: σ 79.2 instead of 80).
FULL_RANGE_TOL = 0.02
# A start "ends in the wrong mode" when its RMSE exceeds this share of the data's spread: on the mixture such a
# start is ~1 off (the distance between clusters) while every other is below 0.05 from 10 NFE up (measured).
WRONG_MODE = 0.3
LEARNED, LEARNED_SCHEDULE = "learned_multistep", "fitted"  # cells of the fitted solvers
ITEMS = "_item_mse"  # a scored cell's per-start squared errors, where asked for (never written out)


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


def score(problem: Problem, x0: torch.Tensor, ref: torch.Tensor, sigma_start: float, items: bool = False) -> dict:
    """RMSE to the reference, the median and largest per-item RMSE, how many starts ended in another mode
    (per-item RMSE above WRONG_MODE × the spread of the references about their mean), and whether the run
    started at the top of the problem's σ range (:func:`in_range`; runs that do not are reported but not ranked).
    ``items``: also each start's squared error under :data:`ITEMS` (a tensor, for :func:`ratio_intervals`; take it
    out before the cell is written)."""
    per_item = common.item_rmse(x0, ref)
    out = {"sigma_start": sigma_start, "rmse": common.rmse(x0, ref), "item_median": float(per_item.median()),
           "item_max": float(per_item.max()), "wrong_mode": int((per_item > WRONG_MODE * common.spread(ref)).sum()),
           "full_range": in_range(problem, sigma_start)}
    if items:
        out[ITEMS] = per_item.pow(2)
    return out


def pool(cells: list[dict]) -> dict:
    """Scores (:func:`score`) of equal batches pooled into one: the RMSE over all their starts, the median of
    their per-start medians and the wrong-mode starts of all of them."""
    return {"rmse": math.sqrt(sum(c["rmse"] ** 2 for c in cells) / len(cells)),
            "wrong_mode": sum(c["wrong_mode"] for c in cells),
            "item_median": sorted(c["item_median"] for c in cells)[len(cells) // 2]}


def ok(cell: dict) -> bool:
    """The cell ran and has a finite error."""
    return "skipped" not in cell and math.isfinite(cell.get("rmse", math.nan))


def ranked(cell: dict) -> bool:
    """The cell ran from the top of its problem's σ range (only those compete)."""
    return ok(cell) and cell.get("full_range", True)


def is_peer(cell: dict) -> bool:
    return cell["sampler"].startswith("diffusers:")


def best_of(cells: list[dict], problem: str, nfe: int, peer: bool, seed: int, fixed_only: bool = False) -> dict | None:
    """The cell with the smallest RMSE among ours (peer=False) or diffusers' (peer=True); ``fixed_only``: ours
    without the fitted solvers."""
    pool_ = [c for c in cells if c["problem"] == problem and c["nfe"] == nfe and c["seed"] == seed and ranked(c)
             and is_peer(c) == peer and not (fixed_only and c["sampler"] == LEARNED)]
    return min(pool_, key=lambda c: c["rmse"]) if pool_ else None


def _brief(cell: dict | None) -> dict | None:
    if cell is None:
        return None
    return {k: cell[k] for k in ("sampler", "schedule", "rmse", "item_median", "item_max", "steps", "nfe_used",
                                 "sigma_start")}


def summarise(cells: list[dict], problems: list[str], nfes: list[int], seed: int) -> list[dict]:
    """Per (problem, NFE): our best, our best on fixed schedules, diffusers' best, and their ratios on ``seed``."""
    rows = []
    for p in problems:
        for n in nfes:
            ours, theirs = best_of(cells, p, n, False, seed), best_of(cells, p, n, True, seed)
            fixed = best_of(cells, p, n, False, seed, fixed_only=True)
            fitted = min((c for c in cells if c["problem"] == p and c["nfe"] == n and c["seed"] == seed and ranked(c)
                          and c["sampler"] == LEARNED), key=lambda c: c["rmse"], default=None)
            row = {"problem": p, "nfe": n, "ours": _brief(ours), "diffusers": _brief(theirs),
                   "ours_fixed": _brief(fixed), "fitted": _brief(fitted)}
            if fixed and theirs:
                row["ratio_fixed"] = fixed["rmse"] / theirs["rmse"]
            if ours and theirs:
                row["ratio"] = ours["rmse"] / theirs["rmse"]
                row["meets_target"] = row["ratio"] <= TARGET
                row["ratio_item_median"] = ours["item_median"] / theirs["item_median"]
            rows.append(row)
    return rows


# a held-out row's ratios: (key, winner, the winner it is divided by)
RATIOS = (("ratio", "ours", "diffusers"), ("ratio_fixed", "ours_fixed", "diffusers"),
          ("ratio_fitted", "fitted", "diffusers"), ("ratio_fitted_fixed", "fitted", "ours_fixed"))


def heldout_entry(row: dict, runs: dict[str, list[dict]], seeds: list[int], batch: int,
                  items: dict[str, list] | None = None) -> dict:
    """One held-out row: each winner's re-runs (``runs[who]``, one cell per held-out seed) pooled, and the ratios.
    ``items[who]``: each re-run's per-start squared errors (:data:`ITEMS`), in the order of ``runs[who]``; where
    both sides of a ratio have them, the row also gets its 95 % interval (``<ratio>_interval``:
    :func:`benchmarks.common.ratio_interval`, the same starts paired).

    A winner whose re-runs did not all complete gets no pooled score (and so the row no ratio)."""
    entry = {"problem": row["problem"], "nfe": row["nfe"], "seeds": list(seeds), "batch": batch}
    for who, cells in runs.items():
        if cells and all(ok(c) for c in cells):
            w = row[who]
            entry[who] = {"sampler": w["sampler"], "schedule": w["schedule"], **pool(cells),
                          "rmse_per_seed": [c["rmse"] for c in cells]}
    every = {who: torch.cat(per_seed) for who, per_seed in (items or {}).items()
             if entry.get(who) and per_seed and all(t is not None for t in per_seed)}
    for key, who, against in RATIOS:
        if entry.get(who) and entry.get(against):
            entry[key] = entry[who]["rmse"] / entry[against]["rmse"]
            if who in every and against in every:
                entry[key + "_interval"] = common.ratio_interval(every[who], every[against])
    if "ratio" in entry:
        entry["ratio_item_median"] = entry["ours"]["item_median"] / entry["diffusers"]["item_median"]
    return entry


def judge(row: dict, heldout: list[dict], heldout_requested: bool) -> None:
    """The target is judged on the held-out starts; where they were asked for but a winner's re-run did not
    complete, the pair does not count as met (the selection seed alone is a lottery at 20 NFE)."""
    h = next((h for h in heldout if (h["problem"], h["nfe"]) == (row["problem"], row["nfe"])), None)
    if h is not None and "ratio" in h:
        row["meets_target"] = h["ratio"] <= TARGET
    elif heldout_requested:
        row["meets_target"] = False


def like_for_like(cells: list[dict], problems: list[str], nfes: list[int], seed: int) -> list[dict]:
    """Each diffusers peer beside our sampler of the same algorithm on the same schedule (ratio per NFE)."""
    done = {(c["problem"], c["sampler"], c["schedule"], c["nfe"]): c for c in cells if c["seed"] == seed and ok(c)}
    rows = []
    for p in problems:
        labels = sorted({c["sampler"] for c in cells if c["problem"] == p and is_peer(c)})
        for peer in labels:
            match = counterpart(peer.split(":", 1)[1])
            if match is None:
                continue
            row = {"problem": p, "diffusers": peer.split(":", 1)[1], "ours": f"{match[0]} + {match[1]}", "ratio": {}}
            for n in nfes:
                mine, theirs = done.get((p, *match, n)), done.get((p, peer, "native", n))
                if mine and theirs:
                    row["ratio"][n] = mine["rmse"] / theirs["rmse"]
            if row["ratio"]:
                rows.append(row)
    return rows

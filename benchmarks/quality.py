"""Steps versus quality: every sampler × schedule × NFE budget on a problem, peers in the same run.

    python -m benchmarks.quality                                  # analytic problems, every sampler, Karras
    python -m benchmarks.quality --problem gm-vp-eps --schedules karras trailing --nfe 6 10 20
    python -m benchmarks.quality --problem mypkg.bench:problem    # your own model (see README)
    torchrun --nproc_per_node 4 -m benchmarks.quality ...         # the same sweep sharded over 4 ranks

The budget is model evaluations (NFE), not steps: each sampler gets the most steps whose run costs at most
the budget (Heun spends 2 per step, 1 on its last step to σ = 0), counted by running it. Metrics per cell:

- ``rmse``: error to the reference PF-ODE solution from the same start (latent space; also ``rmse_decoded``
  after the VAE for the models problem). For ODE samplers this is the discretisation error.
- ``sw``: sliced Wasserstein distance of the batch to as many exact data samples (the analytic problems);
  the number that means something for stochastic samplers, whose output does not follow the ODE.
- ``adherence`` / ``fd``: the analytic checker's caption-match rate and a Fréchet distance in the features
  of the small classifier (``benchmarks.classifier``) for the models problem.

Peers: diffusers' schedulers run their own loop on the same native model and the same noise, scored the
same way against the exact solution from their own starting state. Writes ``results.json`` (every number,
the device, versions and seeds), ``table.md``, and PNG plots to ``--out``.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import samplers

from samplers.core import names
from samplers.core.files import atomic_save
from samplers.core.argtypes import Given, was_given
from samplers.core.budget import CountingDenoiser, steps_for_nfe
from samplers.fitted.solver import LearnedSolver

from . import common, distributed
from .common import Problem, ReferenceCache
from .peers import peer_steps, run_peer

DEFAULT_NFE = (5, 8, 10, 15, 20, 30, 50)
QUICK_NFE = (6, 12)
QUICK_SAMPLERS = ("euler", "heun", "euler_ancestral")
# two per model kind: each peer starts from a state of its own, whose reference solve costs hundreds of calls
DTYPES = ("float64", "float32", "float16", "bfloat16")  # --dtype
QUICK_PEERS = ("EulerDiscreteScheduler+karras", "DPMSolverMultistepScheduler+karras",
               "FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler+flow")
# a smoke run's reference: ~130 model calls per start on the models (1e-5 takes ~430), errors there are ~1e-2
QUICK_REFERENCE_TOL = 1e-4
MODULE = "benchmarks.quality"
DEFAULT_PROBLEMS = ("gm-ve", "gm-vp-eps", "gm-flow")


@dataclass(frozen=True)
class Cell:
    problem: str
    sampler: str  # a registry name, "diffusers:<SchedulerClass>" or "fitted:<solver file>"
    schedule: str  # a schedule name ("native" for the peers' own spacing, "fitted" for a fitted solver's nodes)
    nfe: int  # the budget
    seed: int

    @property
    def peer(self) -> bool:
        return self.sampler.startswith("diffusers:")


# ------------------------------------------------------------------------------------------------------
# diffusers peers


def diffusers_peers(problem: Problem) -> dict[str, dict]:
    """diffusers scheduler classes (and config) that can run ``problem``'s native model, if installed."""
    if (problem.native_model is None and problem.native_model_for is None) or problem.diffusers_config is None:
        return {}
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return {}
    cfg = dict(problem.diffusers_config)
    if "beta_schedule" in cfg:  # a discrete VP eps model, configured like SD 1.x
        base = dict(cfg, steps_offset=1)
        return {
            "DDIMScheduler": dict(base, set_alpha_to_one=True, clip_sample=False),
            "EulerDiscreteScheduler": base,
            "EulerDiscreteScheduler+karras": dict(base, use_karras_sigmas=True),
            "EulerAncestralDiscreteScheduler": base,
            "HeunDiscreteScheduler": base,
            "LMSDiscreteScheduler": base,
            "DPMSolverMultistepScheduler": base,
            "DPMSolverMultistepScheduler+karras": dict(base, use_karras_sigmas=True),
            "UniPCMultistepScheduler": base,
            "DEISMultistepScheduler": base,
        }
    shift = cfg.get("flow_shift", 1.0)
    n_train = cfg.get("num_train_timesteps", 1000)
    return {
        "FlowMatchEulerDiscreteScheduler": dict(shift=shift, num_train_timesteps=n_train),
        "FlowMatchHeunDiscreteScheduler": dict(shift=shift, num_train_timesteps=n_train),
        "UniPCMultistepScheduler+flow": dict(use_flow_sigmas=True, prediction_type="flow_prediction",
                                             flow_shift=shift, num_train_timesteps=n_train),
        "DPMSolverMultistepScheduler+flow": dict(use_flow_sigmas=True, prediction_type="flow_prediction",
                                                 flow_shift=shift, num_train_timesteps=n_train),
    }


# ------------------------------------------------------------------------------------------------------
# one cell


class Context:
    """What the cells of one run share: problems, the reference cache, options; built on every rank."""

    def __init__(self, args):
        self.args = args
        self.refs = ReferenceCache(None if args.no_cache else Path(args.cache))
        self._exact: dict = {}
        dtype = getattr(torch, args.dtype) if args.dtype else None
        self.problems, self.unavailable = common.get_problems(args.problems, args.device, dtype,
                                                              getattr(args, "reference_tol", None))

    def batch(self, problem: Problem) -> int:
        """Items per cell: --batch, else 256 for the analytic problems and 16 for the models (CPU cost);
        with --quick 32 and 4."""
        if self.args.batch is not None:
            return self.args.batch
        if getattr(self.args, "quick", False):
            return 4 if problem.decode is not None else 32
        return 16 if problem.decode is not None else 256

    def exact(self, problem: Problem, n: int, seed: int):
        key = (problem.name, n, seed)
        if key not in self._exact:
            self._exact[key] = problem.exact_samples(n, seed) if problem.exact_samples else None
        return self._exact[key]


def run_cell(ctx: Context, cell: Cell) -> dict:
    problem = ctx.problems[cell.problem]
    batch = ctx.batch(problem)
    out = {**asdict(cell), "batch": batch}
    t0 = time.perf_counter()
    noise = problem.noise(batch, cell.seed)
    if cell.peer:
        label = cell.sampler.split(":", 1)[1]
        config = diffusers_peers(problem)[label]
        found = peer_steps(label, config, cell.nfe)
        if found is None:
            return {**out, "skipped": f"no step count fits {cell.nfe} model calls"}
        steps = found[0]
        try:
            x0, x_start, sigma_start, nfe = run_peer(problem, label, config, steps, noise, cell.seed)
        except Exception as err:  # noqa: BLE001 - a peer failing is a result, not a crash of the sweep
            return {**out, "skipped": f"diffusers raised {type(err).__name__}: {err}"}
        kind = "ancestral" if "Ancestral" in label else "ode"
    elif cell.sampler.startswith("fitted:"):  # a fitted solver runs on its own nodes, on the model it was fitted to
        sigmas = torch.tensor(names.resolve(cell.sampler).sigmas, dtype=torch.float64)
        steps = len(sigmas) - 1
        x_start, sigma_start = samplers.initial_latent(noise, sigmas), float(sigmas[0])
        model = CountingDenoiser(problem.batch_denoiser(batch, cell.seed))
        try:
            with torch.no_grad():
                x0 = samplers.sample(cell.sampler, model, x_start, sigmas, disable=True)
        except samplers.InvalidInput as err:
            return {**out, "skipped": str(err).split("\n")[0]}
        nfe, kind = model.calls, "ode"
    else:
        spec = samplers.info(cell.sampler)
        try:
            found = steps_for_nfe(cell.sampler, cell.nfe, lambda n: problem.sigmas(cell.schedule, n))
        except ValueError as err:
            return {**out, "skipped": str(err).split("\n")[0]}
        if found is None:
            return {**out, "skipped": f"not even one step fits {cell.nfe} model evaluations"}
        steps = found[0]
        sigmas = problem.sigmas(cell.schedule, steps)
        x_start = samplers.initial_latent(noise, sigmas)
        sigma_start = float(sigmas[0])
        model = CountingDenoiser(problem.batch_denoiser(batch, cell.seed))
        kw = {}
        if "seed" in spec.options:
            kw["seed"] = common.item_seeds(batch, cell.seed, common.SAMPLER_NOISE)
        if isinstance(problem.native, samplers.VPDiscrete):
            try:  # the run would refuse it before any model call (ays_svd on an SD-1.x table)
                problem.native.check_in_table(sigmas.tolist())
            except samplers.InvalidInput as err:
                return {**out, "skipped": str(err).split("\n")[0]}
        with torch.no_grad():
            x0 = samplers.sample(cell.sampler, model, x_start, sigmas, disable=True, **kw)
        nfe, kind = model.calls, spec.kind
    ref = ctx.refs.get(problem, cell.seed, x_start, sigma_start)
    result = {**out, "steps": steps, "nfe_used": nfe, "kind": kind, "sigma_start": sigma_start,
              "rmse": common.rmse(x0, ref)}
    exact = ctx.exact(problem, batch, cell.seed)
    if exact is not None:
        result["sw"] = common.sliced_wasserstein(x0, exact)
    if problem.decode is not None:
        result.update(_image_metrics(ctx, problem, cell, x0, ref))
    result["seconds"] = time.perf_counter() - t0
    return result


def _image_metrics(ctx: Context, problem: Problem, cell: Cell, x0, ref) -> dict:
    if not bool(torch.isfinite(x0).all()):  # a run that diverged (a diffusers peer): no images to score, and the
        return {"rmse_decoded": math.nan}  # VAE refuses NaN latents
    images, ref_images = problem.decode(x0), problem.decode(ref)
    metrics = {"rmse_decoded": common.rmse(images, ref_images)}
    try:
        from models import checker
    except ImportError:
        return metrics
    captions = problem.captions(x0.shape[0], cell.seed)
    metrics["adherence"] = sum(checker.matches(img, cap) for img, cap in zip(images, captions)) / len(captions)
    try:
        from . import classifier
        metrics["fd"] = classifier.frechet_to_data(images)
    except (ImportError, FileNotFoundError):
        pass
    if ctx.args.grid_dir:
        from models import data
        folder = Path(ctx.args.grid_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save(folder / f"{_safe(cell.problem)}_{_safe(cell.sampler)}_{cell.schedule}_{cell.nfe}_"
                    f"{cell.seed}.png", data.to_pil(images[0]).save, format="PNG")
    return metrics


# ------------------------------------------------------------------------------------------------------
# the sweep


def cells_for(ctx: Context) -> list[Cell]:
    args = ctx.args
    names = common.sampler_names(args.samplers)
    cells = []
    for pname, problem in ctx.problems.items():
        for schedule in args.schedules:
            for name in names:
                for nfe in args.nfe:
                    for seed in args.seeds:
                        cells.append(Cell(pname, name, schedule, nfe, seed))
        for path in args.fitted or ():
            solver = LearnedSolver.load(path)
            for seed in args.seeds:
                cells.append(Cell(pname, f"fitted:{path}", "fitted", solver.steps, seed))
        if args.peers:
            for label in diffusers_peers(problem):
                if args.peer_names and label not in args.peer_names:
                    continue
                for nfe in args.nfe:
                    for seed in args.seeds:
                        cells.append(Cell(pname, f"diffusers:{label}", "native", nfe, seed))
    return cells


def sweep(args, world: distributed.World | None = None, ctx: Context | None = None) -> dict | None:
    """Run every cell (this rank's share of them); rank 0 returns the gathered results, others None. ``ctx``: the
    run's problems and cache, when already built (by ``main``, which checks the --fitted solvers against them)."""
    world = world or distributed.World()
    ctx = ctx or Context(args)
    cells = cells_for(ctx)
    mine = distributed.shard(cells, world)
    done = []
    with common.progress(total=len(mine), desc=f"quality (rank {world.rank})", disable=args.no_progress) as bar:
        for index, cell in mine:
            bar.set_postfix_str(f"{cell.problem} {cell.sampler} {cell.schedule} NFE {cell.nfe} seed {cell.seed}",
                                refresh=False)
            done.append((index, run_cell(ctx, cell)))
            bar.update()
    gathered = distributed.gather(done, world)
    if gathered is None:
        return None
    floors, fd_floors = {}, {}
    for name, problem in ctx.problems.items():
        n = ctx.batch(problem)
        if problem.exact_samples is not None:
            # two independent exact sample sets of the cell's size: the distance no sampler can go below
            floors[name] = {seed: common.sliced_wasserstein(problem.exact_samples(n, seed),
                                                            problem.exact_samples(n, 50_000 + seed))
                            for seed in args.seeds}
        if problem.decode is not None:
            fd_floors[name] = _fd_floor(n)
    return {
        "info": {**common.run_info(args.device), "world_size": world.size},
        "args": common.run_args(args),
        "problems": {n: p.description for n, p in ctx.problems.items()},
        "reference": {n: p.reference_method for n, p in ctx.problems.items()},
        "unavailable": ctx.unavailable,
        "sw_floor": floors,
        "fd_floor": fd_floors,
        "cells": gathered,
    }


def _fd_floor(n: int) -> float | None:
    """Fréchet distance of n real data images to the reference set: the value of a perfect sampler."""
    try:
        from models import data

        from . import classifier
        return classifier.frechet_to_data(data.make_batch(20_000, n)[0])
    except (ImportError, FileNotFoundError):
        return None


# ------------------------------------------------------------------------------------------------------
# reports


def aggregate(cells: list[dict]) -> dict:
    """Mean over seeds: {(problem, schedule, sampler): {nfe_used_mean, metric means}} keyed by budget."""
    groups: dict = {}
    for c in cells:
        if "skipped" in c:
            continue
        key = (c["problem"], c["schedule"], c["sampler"])
        groups.setdefault(key, {}).setdefault(c["nfe"], []).append(c)
    table = {}
    for key, by_nfe in groups.items():
        table[key] = {}
        for nfe, rows in sorted(by_nfe.items()):
            agg = {"kind": rows[0]["kind"], "steps": rows[0]["steps"], "nfe_used": rows[0]["nfe_used"]}
            for m in ("rmse", "sw", "rmse_decoded", "adherence", "fd"):
                vals = [r[m] for r in rows if m in r]
                if vals:
                    agg[m] = sum(vals) / len(vals)
            table[key][nfe] = agg
    return table


def markdown(result: dict) -> str:
    info = result["info"]
    lines = ["# Steps versus quality", "",
             f"{common.device_label(info)}, {info['date_utc']}, torch {info['versions']['torch']}, "
             f"diffusers {info['versions']['diffusers']}, commit {info['commit']}, seeds {result['args']['seeds']}, "
             f"batch {result['args']['batch'] or _batches(result)}.", ""]
    table = aggregate(result["cells"])
    nfes = result["args"]["nfe"]
    for pname, desc in result["problems"].items():
        how = result.get("reference", {}).get(pname)
        lines += [f"## {pname}", "", desc + (f"; reference endpoint: {how}" if how else ""), ""]
        for metric, title in (("rmse", "RMSE to the exact PF-ODE solution from the same noise (deterministic "
                                       "samplers; lower is better)"),
                              ("sw", "Sliced Wasserstein distance to exact data samples (stochastic samplers; "
                                     f"noise floor {_floor(result, pname)})"),
                              ("rmse_decoded", "RMSE after decoding, to the decoded reference (deterministic "
                                               "samplers; pixels in [-1, 1])"),
                              ("adherence", "Caption match rate by the analytic checker (higher is better)"),
                              ("fd", "Fréchet distance in the classifier's features to data images (lower is "
                                     f"better; real images of the same batch size score {_fd_text(result, pname)})")):
            want_kind = {"rmse": ("ode",), "rmse_decoded": ("ode",), "sw": ("ancestral", "sde")}.get(metric)
            rows = [(k, v) for k, v in table.items() if k[0] == pname
                    and (want_kind is None or next(iter(v.values()))["kind"] in want_kind)
                    and any(metric in a for a in v.values())]
            if not rows:
                continue
            lines += [f"**{title}** at a budget of NFE model evaluations:", "",
                      "| sampler | schedule | " + " | ".join(f"NFE ≤ {n}" for n in nfes) + " |",
                      "|---|---|" + "---:|" * len(nfes)]
            best = {}
            for n in nfes:
                vals = [v[n][metric] for _, v in rows if n in v and metric in v[n]]
                if vals:
                    best[n] = max(vals) if metric == "adherence" else min(vals)
            for (p, schedule, sampler), v in sorted(rows, key=lambda kv: _sort_key(kv, nfes, metric)):
                cells = []
                for n in nfes:
                    if n not in v or metric not in v[n]:
                        cells.append("–")
                        continue
                    text = {"adherence": f"{v[n][metric]:.2f}", "fd": f"{v[n][metric]:.0f}"}.get(
                        metric, f"{v[n][metric]:.2e}")
                    cells.append(f"**{text}**" if v[n][metric] == best.get(n) else text)
                name = f"*{sampler}*" if sampler.startswith("diffusers:") else sampler
                lines.append(f"| {name} | {schedule} | " + " | ".join(cells) + " |")
            lines.append("")
    for name, why in result["unavailable"].items():
        lines += [f"## {name}: not run", "", _not_run_text(name, why), ""]
    skipped = sorted({(c["sampler"], c["schedule"], c["skipped"]) for c in result["cells"] if "skipped" in c})
    if skipped:
        lines += ["Cells not run:", ""] + [f"- {s} / {sch}: {why}" for s, sch, why in skipped[:40]]
        lines += ([f"- … and {len(skipped) - 40} more (results.json lists every one)"] if len(skipped) > 40 else [])
        lines += [""]
    lines += [common.measured_line(result, common.command_from_args(MODULE, parser(), result["args"],
                                                                    resolved_defaults(result))), ""]
    return "\n".join(lines)


def resolved_defaults(result: dict) -> dict:
    """What :func:`resolve_args` made of the options left unset in the run ``result`` records (from its args and the
    device it ran on, not from this machine): the values a rebuilt command leaves out. Without --problem a full run
    takes the models too where they are installed, as in this repository."""
    args = result["args"]
    quick = bool(args.get("quick"))
    values = {"nfe": list(QUICK_NFE if quick else DEFAULT_NFE),
              "problems": list(DEFAULT_PROBLEMS) + ([] if quick else ["models-eps", "models-flow"]),
              "device": "cuda" if "gpu" in result["info"] else "cpu"}
    if quick:
        values.update(samplers=[n for n in QUICK_SAMPLERS if n in samplers.available()], peer_names=list(QUICK_PEERS),
                      reference_tol=QUICK_REFERENCE_TOL)
    return values


# where the committed runs of the shipped models are, for a table whose run could not build them
SHIPPED_MODEL_RUNS = {"models-eps": "docs/benchmarks/fitted/eps-quality/table.md",
                      "models-flow": "docs/benchmarks/fitted/flow-quality/table.md"}


def _not_run_text(name: str, why: str) -> str:
    """Why a problem did not run, as its table says it: the error up to its first ';' (a remedy the run printed
    then, such as a training command, need not hold now: the shipped weights' commands are in docs/models.md), an
    absolute path inside the checkout shown from its top folder (where the checkout was is no part of the result),
    and, for the shipped models, where their committed runs are. The whole message stays in results.json."""
    first = why.split(";", 1)[0].strip()
    first = re.sub(r"(['\"`])/[^'\"`]*?/((?:models|docs|out|benchmarks|samplers)/[^'\"`]*)\1", r"\1\2\1", first)
    text = f"The problem could not be built where this ran, so none of its cells ran: {first}."
    if name in SHIPPED_MODEL_RUNS:
        text += (f" The shipped {name.split('-', 1)[1]} model's committed run (`--problem {name}`, with its fitted "
                 f"solvers): {SHIPPED_MODEL_RUNS[name]}.")
    return text


def _batches(result) -> str:
    """The per-problem batch sizes the cells used (--batch unset)."""
    sizes = {}
    for c in result["cells"]:
        sizes.setdefault(c["problem"], c["batch"])
    return "per problem (" + ", ".join(f"{p} {n}" for p, n in sizes.items()) + ")"


def _fd_text(result, pname):
    value = result.get("fd_floor", {}).get(pname)
    return "n/a" if value is None else f"{value:.3g}"


def _floor(result, pname):
    floors = result["sw_floor"].get(pname)
    if not floors:
        return "n/a"
    return f"{sum(floors.values()) / len(floors):.2e}"


def _sort_key(kv, nfes, metric):
    (_, schedule, sampler), v = kv
    last = [v[n][metric] for n in reversed(nfes) if n in v and metric in v[n]]
    score = last[0] if last else math.inf
    return (schedule, -score if metric == "adherence" else score, sampler)


def plots(result: dict, out: Path) -> list[Path]:
    """Log-log error versus NFE, one line per sampler; one figure per problem, schedule and metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    table = aggregate(result["cells"])
    written = []
    combos = sorted({(k[0], k[1]) for k in table})
    for pname, schedule in combos:
        for metric, ylabel, kinds, logy in (
                ("rmse", "RMSE to the exact ODE solution", ("ode",), True),
                ("sw", "sliced Wasserstein to data", ("ancestral", "sde"), True),
                ("adherence", "caption match rate", None, False)):
            series = {k[2]: v for k, v in table.items() if k[0] == pname and (k[1] == schedule or k[1] == "native")
                      and (kinds is None or next(iter(v.values()))["kind"] in kinds)
                      and any(metric in a for a in v.values())}
            if not series or (schedule == "native"):
                continue
            fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=80)
            markers = "osD^v<>ph*"
            for i, (sampler, v) in enumerate(sorted(series.items())):
                pts = sorted((a["nfe_used"], a[metric]) for a in v.values() if metric in a and a[metric] > 0)
                if not pts:
                    continue
                peer = sampler.startswith("diffusers:")
                ax.plot(*zip(*pts), marker="x" if peer else markers[(i // 10) % len(markers)], ms=3.5, lw=1.1,
                        ls="--" if peer else "-", label=sampler.replace("diffusers:", "diffusers "),
                        color=plt.cm.tab10(i % 10))
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            lo, hi = min(result["args"]["nfe"]), max(result["args"]["nfe"])
            ticks = [n for n in (2, 3, 5, 8, 10, 15, 20, 30, 50, 80, 100, 200, 500) if lo - 1 <= n <= hi]
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("model evaluations (NFE)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{pname}, schedule {schedule}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6.5, ncol=2, loc="best")
            fig.tight_layout()
            path = out / f"{metric}_{_safe(pname)}_{schedule}.png"
            atomic_save(path, fig.savefig, format="png")
            plt.close(fig)
            written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def image_grid(result: dict, grid_dir: Path, out: Path) -> list[Path]:
    """samplers × NFE grid of the first decoded image of each cell (models problems only)."""
    from PIL import Image

    written = []
    for pname in result["problems"]:
        files = sorted(grid_dir.glob(f"{pname}_*.png")) if grid_dir.exists() else []
        if not files:
            continue
        rows: dict = {}
        for f in files:
            parts = f.stem[len(pname) + 1:].rsplit("_", 3)
            sampler, schedule, nfe, seed = parts
            if seed != str(result["args"]["seeds"][0]):
                continue
            rows.setdefault(f"{sampler} {schedule}", {})[int(nfe)] = f
        nfes = sorted({n for r in rows.values() for n in r})
        size = 64
        grid = Image.new("RGB", (size * len(nfes), size * len(rows)), (0, 0, 0))
        for i, (_, r) in enumerate(sorted(rows.items())):
            for j, n in enumerate(nfes):
                if n in r:
                    grid.paste(Image.open(r[n]).convert("RGB").resize((size, size)), (j * size, i * size))
        path = out / f"grid_{pname}.png"
        atomic_save(path, grid.save, format="PNG")
        common.atomic_write_bytes(out / f"grid_{pname}.txt", ("rows: " + ", ".join(sorted(rows)) + "\ncolumns (NFE): "
                                                              + ", ".join(map(str, nfes)) + "\n").encode())
        written.append(path)
    return written


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


def write(result: dict, out: Path) -> list[Path]:
    """results.json, table.md generated from it, and the plots (and image grids) to ``out``."""
    results = common.write_results(result, out, one_line=("cells",))
    report(results)
    written = [results, results.with_name("table.md")]
    written += plots(result, out)
    if result["args"].get("grid_dir"):
        written += image_grid(result, Path(result["args"]["grid_dir"]), out)
    return written


# ------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--problem", dest="problems", nargs="+", default=None,
                   help=f"problems: {', '.join(common.PROBLEMS)} or module:function (default: the gm-* ones, "
                        "plus models-eps/models-flow when they are installed)")
    p.add_argument("--samplers", nargs="+", default=None, help="registry names (default: every non-adaptive one; an "
                   "adaptive one, dpm_adaptive or torchdiffeq.dopri5, is refused: it cannot be held to an NFE budget; "
                   "so is learned_multistep, Euler without a solver file: pass those with --fitted)")
    p.add_argument("--schedules", nargs="+", default=["karras"],
                   help=f"schedules ({', '.join(samplers.schedules.available())}, or 'all')")
    p.add_argument("--nfe", nargs="+", type=common.nfe_budget, default=None,
                   help=f"NFE budgets, each from 1 to {common.MAX_STEPS} (the pipeline's step limit; default "
                        f"{DEFAULT_NFE})")
    p.add_argument("--seeds", nargs="+", type=common.seed_value, default=[0],
                   help="noise seeds, each in [0, 2**32) (default 0)")
    p.add_argument("--batch", type=common.positive_int, default=None,
                   help="items per cell (default 256, 16 for models; with --quick 32 and 4; more than the memory "
                        "holds is refused)")
    p.add_argument("--fitted", nargs="+", default=None,
                   help="solver files from `samplers fit`, each run at its own NFE on the problem it was fitted to")
    p.add_argument("--no-peers", dest="peers", action="store_false",
                   help="skip diffusers' schedulers (without --peer-names)")
    p.add_argument("--peer-names", nargs="+", default=None,
                   help="only these diffusers peers (e.g. DDIMScheduler 'EulerDiscreteScheduler+karras'; an unknown "
                        "one is refused)")
    p.add_argument("--device", default=None, help="cpu or cuda[:k] (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="state dtype (default: the problem's, float64 for the analytic ones, float32 for the models)")
    common.add_output_options(p, Path("out/quality"), "results.json, table.md and the plots")
    p.add_argument("--cache", action=Given, type=common.cache_folder, default="out/cache",
                   help="reference solutions on disk (default %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="solve every reference afresh (without --cache)")
    p.add_argument("--reference-tol", type=common.positive_float, default=None,
                   help="rtol = atol of the adaptive reference solve for problems without an exact endpoint "
                        f"(default: the problem's, 1e-5 for the models; {QUICK_REFERENCE_TOL:g} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: samplers {', '.join(QUICK_SAMPLERS)}, {len(QUICK_PEERS) // 2} diffusers peers "
                        f"per model kind, NFE {' '.join(map(str, QUICK_NFE))}, small batches; the gm-* problems "
                        "unless --problem says otherwise")
    p.add_argument("--no-progress", action="store_true")
    common.add_threads_option(p, help="torch CPU threads (default 1: the mixture cells are tiny, and the models' small "
                                      "U-Net at these batch sizes measured no faster with 2 threads on a shared "
                                      "2-core machine)")
    return p


def resolve_args(args) -> argparse.Namespace:
    models_ok = _models_available()
    if args.problems is None:
        args.problems = list(DEFAULT_PROBLEMS) + (["models-eps", "models-flow"] if models_ok and not args.quick
                                                  else [])
    if args.quick:
        args.nfe = args.nfe or list(QUICK_NFE)
        if args.samplers is None:
            args.samplers = [n for n in QUICK_SAMPLERS if n in samplers.available()]
        if args.peer_names is None:
            args.peer_names = list(QUICK_PEERS)
        if args.reference_tol is None:
            args.reference_tol = QUICK_REFERENCE_TOL
    if args.schedules == ["all"]:
        args.schedules = samplers.schedules.available()
    args.nfe = list(args.nfe or DEFAULT_NFE)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.grid_dir = str(args.out / "images") if any(p.startswith("models") for p in args.problems) else None
    return args


def _models_available() -> bool:
    try:
        import models.pipeline  # noqa: F401
    except ImportError:
        return False
    return True


def check_args(p: argparse.ArgumentParser, args) -> None:
    """Refuse (``p.error``, exit status 2) before any cell runs: an unknown sampler, schedule, problem or diffusers
    peer name, an adaptive sampler (it cannot be held to an NFE budget), a --fitted file that is not a solver, a value listed twice, a device torch does not have here, an
    option another one makes do nothing (--peer-names with --no-peers, --cache with --no-cache). A --fitted solver
    that suits none of the problems' models is refused by :func:`check_fitted`, once they are built."""
    common.refuse_unused(
        p, (not args.peers and args.peer_names is not None, "--peer-names",
            "picks diffusers peers to run and --no-peers runs none", "leave out one of them"),
        (args.no_cache and was_given(args, "cache"), "--cache",
         "names the folder of cached references and --no-cache reads and writes none", "leave out one of them"))
    common.refuse_bad_problems(p, args.problems)
    if args.reference_tol is not None and args.problems and all(
            not name.startswith("models-") and common.get_problem(name).reference_fn is not None
            for name in args.problems):
        p.error(f"--reference-tol {args.reference_tol:g} sets the tolerance of the adaptive reference solve, but "
                f"{', '.join(args.problems)} {'has' if len(args.problems) == 1 else 'have'} an exact endpoint (no "
                "solve): leave it out")
    for path in args.fitted or ():
        try:
            LearnedSolver.load(path)
        except (OSError, ValueError) as err:
            p.error(f"--fitted {path}: {err}")
    if args.samplers and args.samplers != ["all"]:
        args.samplers = [common.sampler_or_refuse(p, "--samplers", n, fitted="--fitted FILE") for n in args.samplers]
        common.refuse_unbudgeted(p, "--samplers", args.samplers)  # adaptive: its cells would be a one-step denoise
    if args.schedules != ["all"]:
        for name in args.schedules:
            common.schedule_or_refuse(p, "--schedules", name)
    if args.peer_names:
        # the labels depend only on the kind of model (discrete VP or flow): the two mixtures name them all
        valid = list(dict.fromkeys(label for kind in ("gm-vp-eps", "gm-flow")
                                   for label in diffusers_peers(common.get_problem(kind))))
        common.check_names(p, "--peer-names", args.peer_names, valid)
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            p.error(f"--device {args.device!r} is not a device: pass cpu, cuda or cuda:<index>")
        if device.type == "cuda" and not torch.cuda.is_available():
            p.error(f"--device {args.device!r}: no CUDA device is available here: pass cpu")
    common.refuse_repeats(p, ("--problem", args.problems, "each problem runs once"),
                          ("--samplers", args.samplers, "each sampler is one row"),
                          ("--schedules", None if args.schedules == ["all"] else
                           common.canonical_schedules(args.schedules), "each schedule runs once"),
                          ("--nfe", args.nfe, "each budget is one column"),
                          ("--seeds", args.seeds, "a seed's cells would be averaged in twice"),
                          ("--fitted", args.fitted, "each solver is one row"),
                          ("--peer-names", args.peer_names, "each peer runs once"))


def check_fitted(p: argparse.ArgumentParser, ctx: Context) -> None:
    """Refuse (``p.error``) before any cell runs a --fitted solver that suits none of the run's problems (another
    model, or one that cannot be evaluated where it starts: :meth:`LearnedSolver.check_model` on each problem's
    model, as its cells would call it). Each solver runs on every problem; where it suits some of them, its cells on
    the others are reported as not run."""
    seed = ctx.args.seeds[0]
    for path in ctx.args.fitted or ():
        solver = LearnedSolver.load(path)
        why = {}
        for pname, problem in ctx.problems.items():
            try:
                solver.check_model(problem.batch_denoiser(ctx.batch(problem), seed), source="it")
            except samplers.InvalidInput as err:  # its reason, without the library's fixes (not this command's)
                why[pname] = common.solver_refusal(err)
                continue
            break
        else:
            if not why:  # none of the problems could be built here: the run reports them as unavailable
                continue
            own, model = solver.meta.get("problem"), solver.model.get("name")
            fitted_to = (f"--problem {own} (the problem it was fitted to)" if own else
                         f"the --problem of the model it was fitted to ({model})" if model else
                         "the --problem it was fitted to")
            unavailable = (f" ({', '.join(ctx.unavailable)} cannot be built here)" if ctx.unavailable else "")
            p.error(f"--fitted {path} suits none of the --problem models {', '.join(why)}{unavailable}, so none of "
                    f"its cells would run: " + "; ".join(f"on {pname}, {err}" for pname, err in why.items())
                    + f". Fix: pass {fitted_to}, or fit a solver to "
                    + (next(iter(why)) if len(why) == 1 else "one of them")
                    + " (python -m benchmarks.learned_solvers, samplers fit)")


def check_peers(p: argparse.ArgumentParser, ctx: Context) -> None:
    """Refuse (``p.error``) a --peer-names label that none of the run's problems has (a VP peer on gm-ve and gm-flow
    alone, say): its cells would be left out of the sweep without a word. A peer some problem has runs there."""
    have = {pname: diffusers_peers(problem) for pname, problem in ctx.problems.items()}
    missing = [label for label in ctx.args.peer_names if not any(label in peers for peers in have.values())]
    if missing and not ctx.unavailable:  # a problem that cannot be built here is reported as such, peers and all
        listed = "; ".join(f"{pname}: {', '.join(peers) if peers else 'none'}" for pname, peers in have.items())
        p.error(f"--peer-names {', '.join(map(repr, missing))}: none of the --problem models has such a diffusers "
                f"peer, so it would not run (the problems' peers: {listed}). Pass a --problem that has it, or leave "
                "it out")


def main(argv=None) -> int:
    t0 = time.perf_counter()
    p = parser()
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return 0
    check_args(p, args)
    peers_asked = args.peer_names is not None  # by the caller (--quick's defaults name peers of every model kind)
    args = resolve_args(args)
    torch.set_num_threads(args.threads)
    world = distributed.init()
    if world.size > 1 and args.device.startswith("cuda"):
        args.device = world.device
    ctx = Context(args)
    for problem in ctx.problems.values():  # before any cell: a batch the memory cannot hold is refused
        common.refuse_batch_memory(p, "--batch", problem, ctx.batch(problem))
    check_fitted(p, ctx)
    if peers_asked and args.peers:
        check_peers(p, ctx)
    result = sweep(args, world, ctx)
    if result is not None:
        result.update(command=common.run_command(MODULE, argv), seconds=time.perf_counter() - t0)
        written = write(result, args.out)
        print(written[1].read_text())
        for name, why in result["unavailable"].items():
            print(f"[skipped {name}] {why}", file=sys.stderr)
        print("wrote " + ", ".join(str(p) for p in written))
    distributed.finish(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())

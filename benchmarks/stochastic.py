"""Stochastic samplers on the analytic Gaussian mixture: distance to the data at a budget of model calls.

    python -m benchmarks.stochastic --quick         # NFE 10 only, 128 samples → out/stochastic
    python -m benchmarks.stochastic --threads 2 --out docs/benchmarks/stochastic   # the committed table (1-6 min, with the machine's load)
    python -m benchmarks.stochastic --report docs/benchmarks/stochastic/results.json   # table.md only

Problem: ``gm-vp-eps`` of :mod:`benchmarks.common`, the 6-cluster, 64-dim Gaussian mixture behind an
SD-1.x-style discrete VP eps model (``GaussianMixture.as_model("eps", VPDiscrete scaled_linear)``); our
samplers run on its canonical denoiser (``samplers.to_denoiser``) with a Karras schedule on the model's σ
range, diffusers' schedulers run their own loop on the same native eps model.

Every sampler registered as ``ancestral`` or ``sde`` (discovered at run time) runs at NFE 10 / 20 / 50 with
the most steps whose run makes at most NFE model calls, counted by running it
(:func:`samplers.core.budget.steps_for_nfe`: warm-ups such as restart's, and a last step that skips a stage,
count); the model calls it really made are counted and reported. The metric is the
sliced Wasserstein distance of its samples to as many exact data samples, next to the floor (the distance
between two independent exact sample sets of the same size: what a perfect sampler scores) and the ratio.
diffusers peers get the most ``set_timesteps`` steps whose loop makes at most NFE model calls.

Also measured: the cost of one noise draw (µs per ``noise_sampler(σ, σ_next)`` call, on the CPU) for the
default :class:`samplers.core.noise.SeededNoise` and :class:`samplers.core.brownian.BrownianNoise`, and how much the
sample of a fixed seed moves when the step count doubles (seeded vs Brownian noise).

Writes ``results.json`` (every number, device, versions, seeds) and ``table.md``, generated from it, to ``--out``
(default ``out/stochastic``).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch

import samplers
from samplers.core.brownian import BrownianNoise
from samplers.core.noise import SeededNoise

from samplers.core.budget import CountingDenoiser, steps_for_nfe

from . import common
from .peers import peer_steps, run_peer as run_diffusers

MODULE = "benchmarks.stochastic"
DEFAULT_OUT = Path("out/stochastic")
PROBLEM = "gm-vp-eps"
SCHEDULE = "karras"
NFE = (10, 20, 50)
QUICK_NFE = (10,)
FLOOR_PAIRS = 5
STABILITY_STEPS = (20, 40)

# diffusers' stochastic schedulers, configured on top of the problem's SD-1.x config
PEERS = {
    "EulerAncestralDiscreteScheduler": {},
    "KDPM2AncestralDiscreteScheduler": {},
    "DPMSolverSDEScheduler": {},
    "DPMSolverMultistepScheduler+sde-dpmsolver++": {"algorithm_type": "sde-dpmsolver++"},
    "DDPMScheduler": {"clip_sample": False},
    "LCMScheduler": {"clip_sample": False, "set_alpha_to_one": True},
    "SASolverScheduler": {},
}


def stochastic_samplers() -> list[str]:
    """Every registered stochastic sampler, at run time (ancestral first, then SDE solvers)."""
    return samplers.available("ancestral") + samplers.available("sde")


def run_ours(problem, name: str, nfe: int, n: int, seed: int) -> dict:
    found = steps_for_nfe(name, nfe, lambda steps: problem.sigmas(SCHEDULE, steps))
    if found is None:
        raise ValueError(f"no step count of {name} fits {nfe} model calls")
    steps = found[0]
    sigmas = problem.sigmas(SCHEDULE, steps)
    model = CountingDenoiser(problem.batch_denoiser(n, seed))
    x = samplers.initial_latent(problem.noise(n, seed), sigmas)
    t0 = time.perf_counter()
    with torch.no_grad():
        x0 = samplers.sample(name, model, x, sigmas, seed=common.item_seeds(n, seed, common.SAMPLER_NOISE),
                             disable=True)
    return {"steps": steps, "nfe_used": model.calls, "seconds": time.perf_counter() - t0, "samples": x0}


def run_peer(problem, label: str, nfe: int, n: int, seed: int) -> dict:
    config = dict(problem.diffusers_config, steps_offset=1, **PEERS[label])
    found = peer_steps(label, config, nfe)
    if found is None:
        raise ValueError(f"no step count of {label} fits {nfe} model calls")
    t0 = time.perf_counter()
    x0, _, _, calls = run_diffusers(problem, label, config, found[0], problem.noise(n, seed), seed)
    return {"steps": found[0], "nfe_used": calls, "seconds": time.perf_counter() - t0, "samples": x0}


def noise_cost(shape: tuple, draws: int, repeats: int = 3) -> dict:
    """µs per ``noise_sampler(σ, σ_next)`` call on the CPU along a Karras schedule (best of ``repeats``)."""
    sig = samplers.get_sigmas("karras", draws, sigma_min=0.03, sigma_max=14.6).tolist()
    x = torch.zeros(shape)
    seeds = list(range(shape[0]))
    out = {}
    for label, make in (("seeded", lambda: SeededNoise(x, seeds)),
                        ("brownian", lambda: BrownianNoise(x, seeds, sig[-2], sig[0]))):
        best = math.inf
        for _ in range(repeats):
            noise = make()
            t0 = time.perf_counter()
            for i in range(draws - 1):
                noise(sig[i], sig[i + 1])
            best = min(best, (time.perf_counter() - t0) / (draws - 1))
        out[label] = best * 1e6
    return out


def stability(problem, name: str, steps: tuple[int, int], n: int, seed: int) -> dict:
    """RMS change of the samples of fixed seeds when the step count goes from steps[0] to steps[1]."""
    out = {}
    for kind in ("seeded", "brownian"):
        runs = []
        for s in steps:
            sigmas = problem.sigmas(SCHEDULE, s)
            x = samplers.initial_latent(problem.noise(n, seed), sigmas)
            with torch.no_grad():
                runs.append(samplers.sample(name, problem.denoiser, x, sigmas,
                                            seed=common.item_seeds(n, seed, common.SAMPLER_NOISE),
                                            noise_sampler=kind, disable=True))
        out[kind] = common.rmse(runs[0], runs[1])
    return out


def min_samples() -> int:
    """The fewest samples per cell that compare distributions: one per cluster of :data:`PROBLEM`'s mixture (6).
    With fewer, no set can hold every cluster, and the sliced Wasserstein distance compares a few points: the floor
    (two exact sets) is then as large as any sampler's distance (1.4 at one sample, 0.04 at 2000), and the table's
    ratios say nothing."""
    return int(common.get_problem(PROBLEM).mixture.means.shape[0])


def benchmark(quick: bool = False, samples: int | None = None, seed: int = 0, peers: bool = True,
              names: list[str] | None = None, log=print, progress: bool = False) -> dict:
    problem = common.get_problem(PROBLEM)
    n = (128 if quick else 2000) if samples is None else samples
    if n < 1:
        raise ValueError(f"samples must be >= 1, got {n}")
    nfes = QUICK_NFE if quick else NFE
    exact = problem.exact_samples(n, seed)
    # the floor: two independent exact sets of n samples; its spread over a few pairs is the noise level of
    # every number in the table (differences smaller than ~2 standard deviations are not resolved)
    floors = [common.sliced_wasserstein(exact, problem.exact_samples(n, 50_000 + seed + 1_000 * k))
              for k in range(FLOOR_PAIRS)]
    floor = sum(floors) / len(floors)
    floor_std = (sum((f - floor) ** 2 for f in floors) / (len(floors) - 1)) ** 0.5
    names = names or stochastic_samplers()
    rows = []
    entries = [("ours", name) for name in names] + ([("diffusers", label) for label in PEERS] if peers else [])
    bar = common.progress(total=len(entries) * len(nfes), desc="cells", disable=not progress)
    for source, name in entries:
        for nfe in nfes:
            bar.update()
            row = {"sampler": name if source == "ours" else f"diffusers:{name}", "source": source, "nfe": nfe}
            if source == "ours":
                spec = samplers.info(name)
                row.update(kind=spec.kind, nfe_per_step=spec.nfe_per_step)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    got = run_ours(problem, name, nfe, n, seed) if source == "ours" else \
                        run_peer(problem, name, nfe, n, seed)
                # torchsde warns when a Brownian tree is queried outside its range (k-diffusion's and
                # diffusers' BrownianTreeNoiseSampler on float32 Karras schedules); counted, not shown
                row["brownian_range_warnings"] = sum("Should have" in str(w.message) for w in caught)
            except Exception as err:  # noqa: BLE001 - one sampler failing is a result, not a crash of the sweep
                row["error"] = common.describe(err)
                rows.append(row)
                log(f"{row['sampler']:<48} NFE {nfe:>3}: {row['error']}")
                continue
            sw = common.sliced_wasserstein(got.pop("samples"), exact)
            row.update(got, sw=sw, ratio=sw / floor)
            rows.append(row)
            log(f"{row['sampler']:<48} NFE {nfe:>3}: steps {row['steps']:>3}, calls {row['nfe_used']:>3}, "
                f"SW {sw:.4f} ({sw / floor:.2f}× floor)")
    bar.close()
    shapes = [(1, 64), (1, 4, 64, 64)] if not quick else [(1, 64)]
    cost = {"x".join(map(str, s)): noise_cost(s, draws=6 if quick else 21) for s in shapes}
    stable = {}
    if not quick:
        for name in ("euler_ancestral", "torchsde.euler"):
            if name in samplers.available():
                stable[name] = stability(problem, name, STABILITY_STEPS, n=64, seed=seed)
    return {
        "info": common.run_info("cpu"),
        "args": {"quick": quick, "samples": n, "seed": seed, "nfe": list(nfes), "schedule": SCHEDULE,
                 "problem": PROBLEM, "samplers": names, "no_peers": not peers},
        "problem": problem.description,
        "sw_floor": floor,
        "sw_floor_std": floor_std,
        "sw_floor_pairs": floors,
        "rows": rows,
        "noise_cost_us": cost,
        "stability": stable,
        "stability_steps": list(STABILITY_STEPS),
    }


def markdown(result: dict) -> str:
    info, args = result["info"], result["args"]
    nfes = args["nfe"]
    floor = result["sw_floor"]
    lines = ["# Stochastic samplers", "",
             f"{common.device_label(info)}, {info['date_utc']}, torch {info['versions']['torch']}, "
             f"torchsde {info['versions']['torchsde']}, diffusers {info['versions']['diffusers']}, commit "
             f"{info['commit']}. Problem `{args['problem']}`: {result['problem']}. {args['samples']} samples, "
             f"seed {args['seed']}, {args['schedule']} schedule for ours (the most steps within the budget, counted), "
             "diffusers' own spacing for the peers (the most steps within the budget).", "",
             f"Sliced Wasserstein distance to {args['samples']} exact samples (lower is better); the floor, two "
             f"independent exact sample sets of that size, is **{floor:.4f} ± {result['sw_floor_std']:.4f}** "
             f"(mean ± standard deviation over {len(result['sw_floor_pairs'])} pairs: the noise level of every "
             "cell). Cells: distance (ratio to the floor), model calls used.", "",
             "| sampler | kind | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---:|" * len(nfes)]
    by_sampler: dict = {}
    for row in result["rows"]:
        by_sampler.setdefault(row["sampler"], {})[row["nfe"]] = row
    for sampler, cells in by_sampler.items():
        first = next(iter(cells.values()))
        kind = first.get("kind", "peer")
        texts = []
        for n in nfes:
            row = cells.get(n)
            if row is None:
                texts.append("–")
            elif "error" in row:
                texts.append("error")
            else:
                texts.append(f"{row['sw']:.3f} ({row['ratio']:.2f}×), {row['nfe_used']}")
        name = f"*{sampler}*" if sampler.startswith("diffusers:") else sampler
        lines.append(f"| {name} | {kind} | " + " | ".join(texts) + " |")
    errors = [(r["sampler"], r["nfe"], r["error"]) for r in result["rows"] if "error" in r]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {s} at NFE {n}: {e}" for s, n, e in errors]
    warned = sorted({(r["sampler"], r["brownian_range_warnings"]) for r in result["rows"]
                     if r.get("brownian_range_warnings")})
    if warned:
        lines += ["", "torchsde warnings 'Should have ta>=t0' (a Brownian tree queried outside its range) during a "
                      "run: " + "; ".join(f"{s}: {n}" for s, n in warned) + ". Every other run: none."]
    lines += ["", "Noise cost, µs per `noise_sampler(σ, σ_next)` call on the CPU (batch of 1, "
                  f"{common.device_label(info)}):", "", "| latent | SeededNoise | BrownianNoise | ratio |",
              "|---|---:|---:|---:|"]
    for shape, cost in result["noise_cost_us"].items():
        lines.append(f"| {shape} | {cost['seeded']:.1f} | {cost['brownian']:.1f} | "
                     f"{cost['brownian'] / cost['seeded']:.0f}× |")
    if result["stability"]:
        a, b = result["stability_steps"]
        lines += ["", f"Same seeds at {a} and {b} steps: RMS change of the 64 samples (the mixture's clusters are "
                      "~1 apart per coordinate):", "", "| sampler | seeded noise | Brownian noise |", "|---|---:|---:|"]
        for name, s in result["stability"].items():
            lines.append(f"| {name} | {s['seeded']:.3f} | {s['brownian']:.3f} |")
    defaults = {"samples": 128 if result["args"]["quick"] else 2000}
    lines += ["", common.measured_line(result, common.command_from_args(MODULE, parser(), result["args"], defaults))]
    return "\n".join(lines) + "\n"


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="NFE 10 only, 128 samples, no stability section")
    common.add_output_options(p, DEFAULT_OUT)
    p.add_argument("--samples", type=common.positive_int, default=None,
                   help="samples per cell, at least one per cluster of the mixture (6: fewer compare points, not "
                        "distributions; default 2000, quick 128)")
    p.add_argument("--seed", type=common.seed_value, default=0, help="noise seed, in [0, 2**32) (default 0)")
    p.add_argument("--samplers", nargs="+", default=None,
                   help="only these samplers, ancestral or SDE ones (default: all stochastic)")
    p.add_argument("--no-peers", action="store_true", help="skip diffusers' schedulers")
    common.add_threads_option(p, help="torch CPU threads (default 1: the mixture is tiny, extra threads only "
                                      "contend)")
    p.add_argument("--quiet", action="store_true", help="print neither the cells as they run nor the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv=None) -> dict | None:
    t0 = time.perf_counter()
    p = parser()
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return None
    names = ([common.sampler_or_refuse(p, "--samplers", n, kinds=("ancestral", "sde")) for n in args.samplers]
             if args.samplers else None)
    common.refuse_repeats(p, ("--samplers", names, "each sampler is one row"))
    if args.samples is not None and args.samples < min_samples():
        p.error(f"--samples {args.samples} is fewer than the {min_samples()} clusters of {PROBLEM}'s mixture: no set "
                "can hold every cluster, and the sliced Wasserstein distance would compare a few points, not the "
                "distributions (the floor, two exact sets, is then as large as any sampler's distance); pass "
                f"--samples {min_samples()} or more (default 2000)")
    torch.set_num_threads(args.threads)
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    result = benchmark(quick=args.quick, samples=args.samples, seed=args.seed, peers=not args.no_peers,
                       names=names, log=log, progress=not args.no_progress)
    result.update(command=common.run_command(MODULE, argv), seconds=time.perf_counter() - t0)
    results = common.write_results(result, args.out)
    text = report(results)
    if not args.quiet:
        print(text)
        print(f"wrote {results} and {results.with_name('table.md')}")
    return result


if __name__ == "__main__":
    main()

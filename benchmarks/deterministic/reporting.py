"""The deterministic benchmark's report: ``table.md`` generated from ``results.json`` alone.

    python -m benchmarks.deterministic --report docs/benchmarks/deterministic/results.json   # rewrite table.md
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .. import common
from .scoring import LEARNED, WRONG_MODE, ok, ranked

MODULE = "benchmarks.deterministic"


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


def _reference_line(result: dict) -> str:
    """What the RMSE is measured against: the exact endpoint, or the solve a problem without one gets (a run's
    ``references``; a results.json of before they were recorded ran the mixtures, whose endpoints are exact)."""
    solved = {n: how for n, how in result.get("references", {}).items() if how != "exact"}
    if not solved:
        return "RMSE to the exact PF-ODE endpoint from the same start"
    return ("RMSE to the PF-ODE endpoint from the same start — exact, but for " + "; ".join(
        f"{n}: a {how} solve" for n, how in solved.items()) + " —")


def markdown(result: dict) -> str:
    info, args = result["info"], result["args"]
    v = info["versions"]
    seeds = args.get("heldout_seeds") or []
    held_desc = (f"seeds {', '.join(map(str, seeds))} × {args.get('heldout_batch')} starts" if seeds else "none")
    lines = ["# Deterministic samplers versus diffusers", "",
             f"{common.device_label(info)}, {info['date_utc']}, torch {v['torch']}, diffusers {v['diffusers']}, "
             f"commit {info['commit']}, selection seed {args['seed']} × {args['batch']} starts, held-out {held_desc}, "
             f"run time {info['seconds']:.0f} s.", "",
             _reference_line(result) + " (lower is better). NFE is the budget of model "
             "evaluations; every sampler gets the most steps that fit it. Ratio = ours / diffusers "
             f"(target ≤ {result['target_ratio']}).", "",
             "The winners — our best (sampler, schedule) of every combination "
             + (f"including the fitted `{LEARNED}` solvers" if args.get("learned") else
                "(no fitted solvers: this run had none)")
             + ", our best on fixed schedules only, and diffusers' best configuration — are "
             "picked on the selection seed, then re-run on the held-out starts, none of which any of them was "
             "picked or fitted on; the held-out ratio (bold where it meets the target) is the one the target is "
             "judged on, and beside it, where measured, its 95 % interval (the held-out starts resampled in pairs: "
             "how far the count of rare starts below carries). On a mixture a good solver's RMSE counts the rare starts near a boundary between "
             "components that it sends to the wrong one (*wrong mode*: per-start RMSE above "
             f"{result.get('wrong_mode_share', WRONG_MODE)} × the data's spread), so the held-out pool has many "
             "times the starts of the selection run. *median item*: the ratio of the winners' median per-start "
             "RMSE. Only runs that "
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
            hr = (f"**{h['ratio']:.3f}**" if h["ratio"] <= result["target_ratio"] else f"{h['ratio']:.3f}")
            hr += common.interval_text(h.get("ratio_interval"))
            he = f"{h['ours']['rmse']:.2e} / {h['diffusers']['rmse']:.2e}"
            mr = f"{h['ratio_item_median']:.3f}"
            wm = f"{h['ours'].get('wrong_mode', '–')} / {h['diffusers'].get('wrong_mode', '–')}"
        else:
            hr = he = mr = wm = "–"
        fx = row.get("ours_fixed")
        fr = (f"{h['ratio_fixed']:.3f}{common.interval_text(h.get('ratio_fixed_interval'))}" if "ratio_fixed" in h
              else f"({row['ratio_fixed']:.3f})" if "ratio_fixed" in row else "–")
        lines.append(f"| {row['problem']} | {row['nfe']} | {_who(o)} | {_err(o)} | {_who(d)} | {_err(d)} | {ratio} | "
                     f"{he} | {wm} | {hr} | {mr} | {_name(fx)} ({_err(fx)}) | {fr} |")
    met = [r for r in result["summary"] if r.get("meets_target")]
    basis = "on the held-out starts" if result["heldout"] else "on the selection seed"
    lines += ["", f"Target met in {len(met)} of {len(result['summary'])} (problem, NFE) pairs ({basis}).", ""]
    nfes = args["nfe"]
    for pname, desc in result["problems"].items():
        cells = [c for c in result["cells"] if c["problem"] == pname and c["seed"] == args["seed"] and ranked(c)]
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
                        if c["problem"] == pname and ok(c) and not c["full_range"]})
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
    lines += [measured(result), ""]
    return "\n".join(lines)


def measured(result: dict) -> str:
    """The table's last line: device, torch, date, run time and the command (recorded, else rebuilt from args)."""
    from .running import parser, resolved_defaults

    return common.measured_line(result, common.command_from_args(MODULE, parser(), result["args"],
                                                                 resolved_defaults(result)))


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


def write(result: dict, out: Path) -> list[Path]:
    """results.json to ``out``, then table.md generated from that file."""
    results = common.write_results(result, out, one_line=("cells",))
    report(results)
    return [results, results.with_name("table.md")]


def headline(results: str | Path) -> str:
    """The summary table of a run (the part of its table.md before the per-problem sections)."""
    return markdown(json.loads(Path(results).read_text())).split("\n## ")[0]

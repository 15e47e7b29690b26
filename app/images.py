"""Labelled PNG grids of samplers × step counts on a pipeline, with the checker's match rate per cell."""
from __future__ import annotations

import time
from typing import Sequence


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def unscorable(prompt: str) -> str | None:
    """Why the checker cannot score images of ``prompt`` (None: it can): a prompt outside the caption grammar
    (docs/models.md) is still encoded and sampled (unknown words → ``<unk>``), but has no objects to check."""
    from models import data

    try:
        data.parse_caption(prompt)
    except ValueError as e:
        return str(e)
    return None


def _wrap(draw, text: str, font, width: float) -> list[str]:
    """``text`` in lines of at most ``width`` pixels: broken at spaces, and a word wider than a line (a fitted
    solver's path) at any character, so every character of the label is shown."""
    lines: list[str] = []
    for word in text.split(" "):
        line = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(line, font=font) <= width:
            lines[-1] = line
            continue
        while word:  # a new line, the word split where it is wider than one
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
    return lines


def refuse_fitted_schedule(sampler_names: Sequence[str], schedule: str | None, flag: str) -> None:
    """A schedule is every row's: a fitted solver (``"fitted:PATH"``) runs on its own fitted σ nodes and takes none,
    as ``txt2img`` refuses it, so the pair is refused rather than the schedule dropped for that row."""
    if schedule is None:
        return
    from samplers.core import names
    from samplers.core.errors import InvalidOption

    for name in sampler_names:
        if names.resolve(name).sigmas is not None:
            raise InvalidOption(f"{name!r} runs on its own fitted σ nodes, and {flag} {schedule!r} applies to every "
                                f"row; leave {flag} out (the other rows then run on the model's schedule), or "
                                f"compare the fitted solver in a run of its own without {flag}")


def _options_key(options: dict) -> str:
    """A run's options as text, a fitted solver as the steps it runs (not where it was read from: fitted:F and
    fitted:./F are one run)."""
    from samplers.fitted.solver import LearnedSolver

    return repr(sorted(((k, v.steps_key() if isinstance(v, LearnedSolver) else v) for k, v in options.items()),
                       key=str))


def compare_grid(pipe, prompts: Sequence[str], sampler_names: Sequence[str], steps_list: Sequence[int],
                 seed: int = 0, cfg: float | None = None, schedule: str | None = None, scale: int = 2, title: str = "",
                 options: dict | None = None):
    """Samplers × step counts on the same prompts and seeds (item k: prompt k, seed seed + k); ``options`` (a
    sampler's keyword arguments, e.g. ``{"eta": 0.5}``) go to every row, each checked by its sampler's rules (a
    noise-only option a row never reads is left out of that row where another row reads it, and refused where none
    does: :func:`models.pipeline.shared_options`).

    A fitted solver (``"fitted:PATH"``) runs at its own NFE only (its other cells are "-") and on its own σ nodes: a
    ``schedule`` with one in the rows is refused, as ``txt2img`` refuses the pair. Every cell's sampler,
    schedule and steps — and a fitted solver against the pipeline's model at ``cfg`` — are checked before the first
    image is made (:meth:`Pipeline.plan`), so a bad last row fails before the others run.

    Returns (grid PIL image showing item 0 of every cell, rows of dicts sampler / steps / nfe / match /
    seconds), where ``match`` is the fraction of items the checker passes — None (shown "-" in the grid, "–" in the
    table) where a prompt is outside the caption grammar, which the checker cannot score (:func:`unscorable`; the
    images are made as ``txt2img`` makes them) — and ``nfe`` the model calls the cell's run made, counted (``pipe.nfe``), not estimated
    from the sampler's calls per step: a 2-call sampler's last step to σ = 0 takes one, as does a first step from
    σ = inf. Each row is labelled with its whole name (wrapped), and the grid is at least as wide as the title."""
    from PIL import Image, ImageDraw

    from models import checker, data
    from models.pipeline import shared_options
    from samplers.core import names
    from samplers.core.errors import InvalidInput
    from samplers.core.validate import distinct

    prompts = list(prompts)
    sampler_names = distinct("sampler_names", sampler_names, "the grid has one row per sampler")
    steps_list = distinct("steps_list", steps_list, "the grid has one column per step count")
    refuse_fitted_schedule(sampler_names, schedule, "schedule")
    per_row = shared_options(sampler_names, options)
    seeds = [seed + k for k in range(len(prompts))]
    # a fitted solver runs only at its own NFE: its row fills that column alone; the column is added to steps_list
    # when missing, and every other sampler runs there too (the grid compares them at the fitted NFE)
    fixed = {name: len(lab.sigmas) - 1 for name in sampler_names if (lab := names.resolve(name)).sigmas is not None}
    steps_list = sorted(set(steps_list) | set(fixed.values()))
    cfg = pipe.guidance(cfg)
    runs: dict = {}  # what each name runs (sampler, σ grid, options at every step count): two names, one run, refused
    for name in sampler_names:  # cheap: names, schedules, a fitted solver's model (one hash), no model call
        plans = []
        comfy = pipe.runs_comfyui_flow_rule(names.resolve(name))  # ComfyUI's rule: another run than the registry's
        for steps in ([fixed[name]] if name in fixed else steps_list):
            sampler, sigmas, merged = pipe.plan(name, schedule, steps, dict(per_row[name]), cfg)
            plans.append((sampler, comfy, tuple(float(s) for s in sigmas), _options_key(merged)))
        twin = runs.setdefault(tuple(plans), name)
        if twin != name:
            raise InvalidInput(f"{twin!r} and {name!r} run the same sampler ({plans[0][0]}) on the same schedule with "
                               "the same options here: the grid would show one run twice under two names; list "
                               "one of them")
    scored = all(unscorable(p) is None for p in set(prompts))  # checked before any image is made
    rows, tiles = [], {}
    for name in sampler_names:  # rows and tiles are shown and looked up by the name given
        shown = name
        for steps in steps_list:
            if name in fixed and steps != fixed[name]:
                continue
            t0, calls = time.perf_counter(), pipe.nfe
            images = pipe.txt2img(prompts, sampler=name, schedule=schedule, steps=steps, cfg=cfg, seed=seeds, output="tensor", progress=False,
                                  **per_row[name])
            dt = time.perf_counter() - t0
            match = (sum(checker.matches(im, p) for im, p in zip(images, prompts)) / len(prompts) if scored
                     else None)
            rows.append({"sampler": shown, "steps": steps, "nfe": pipe.nfe - calls, "match": match,
                         "seconds": dt})
            tiles[(name, steps)] = data.to_pil(images[0]).resize((64 * scale, 64 * scale), Image.NEAREST)
    tile = 64 * scale
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h, pad = 14, 4
    # the label column: 106 px, wider for a long word (up to 2 tiles; a longer one is broken), every label wrapped
    longest = max((measure.textlength(w, font=font) for name in sampler_names for w in name.split(" ")), default=0)
    label_w = min(max(106, int(longest) + 2), 2 * tile)
    labels = [_wrap(measure, name, font, label_w) for name in sampler_names]
    left, top = label_w + 4 + 4, 36 + (16 if title else 0)
    heights = [max(tile, len(lines) * line_h) + pad + line_h for lines in labels]
    W = max(left + len(steps_list) * (tile + pad), int(measure.textlength(title, font=font)) + 8 if title else 0)
    H = top + sum(heights)
    grid = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    for j, steps in enumerate(steps_list):
        draw.text((left + j * (tile + pad) + 4, top - 16), f"{steps} steps", fill=(0, 0, 0), font=font)
    y = top
    for name, lines, height in zip(sampler_names, labels, heights):
        shown = name
        y0 = y + max(0, tile // 2 - len(lines) * line_h // 2)
        for k, line in enumerate(lines):
            draw.text((4, y0 + k * line_h), line, fill=(0, 0, 0), font=font)
        for j, steps in enumerate(steps_list):
            x = left + j * (tile + pad)
            r = next((r for r in rows if r["sampler"] == shown and r["steps"] == steps), None)
            if r is None:
                draw.text((x + tile // 2 - 4, y + tile // 2 - 6), "-", fill=(120, 120, 120), font=font)
                continue
            grid.paste(tiles[(name, steps)], (x, y))
            match = "-" if r["match"] is None else f"{r['match']:.2f}"  # "-": the PIL font has no "–"
            draw.text((x + 2, y + tile + 1), f"match {match}  {r['seconds']:.1f}s", fill=(60, 60, 60), font=font)
        y += height
    return grid, rows


def format_table(rows: Sequence[dict], n: int) -> str:
    lines = [f"{'sampler':<18} {'steps':>5} {'NFE':>5} {'match':>7} {'time':>7}"]
    for r in rows:
        match = "–" if r["match"] is None else f"{r['match']:.2f}"
        lines.append(f"{r['sampler']:<18} {r['steps']:>5} {r['nfe']:>5} {match:>7} {r['seconds']:>6.2f}s")
    unscored = any(r["match"] is None for r in rows)
    lines.append(f"(match: fraction of {n} images the checker passes"
                 + ("; –: the checker cannot score a prompt outside the caption grammar" if unscored else "")
                 + "; NFE: model calls the run made, counted, with CFG's batched call counted once)")
    return "\n".join(lines)

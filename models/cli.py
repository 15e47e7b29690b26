"""``samplers generate`` and ``samplers compare``: the image commands (wired into the ``samplers`` script).

    samplers generate "a large red circle at the top left" --sampler dpmpp_2m --steps 20 --seed 0 1 2 --out out/red.png
    samplers compare "a small blue ring in the centre" --samplers euler heun dpmpp_2m --steps 5 10 20 --out out/grid.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence



def _check_out(path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise SystemExit(f"error: output folder {str(path.parent)!r} does not exist; create it or choose another --out")
    return path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="e.g. 'a large red circle at the top left' (grammar: README, 'Data and VAE')")
    p.add_argument("--model", choices=("eps", "flow"), default="eps", help="which shipped model (default eps)")
    p.add_argument("--weights", default=None, help="a U-Net folder instead of the shipped weights")
    p.add_argument("--vae", default=None, help="the VAE folder that U-Net was trained with (default: the shipped VAE)")
    p.add_argument("--schedule", default=None, help="sigma schedule (default: the model's; e.g. karras, flow)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = none)")


def _generate(args) -> int:
    from .pipeline import Pipeline, save_images

    out = _check_out(args.out)
    pipe = Pipeline.load(args.weights, model=args.model, vae=args.vae)
    seeds = args.seed if len(args.seed) > 1 else args.seed[0]
    t0 = time.perf_counter()
    images = pipe.txt2img(args.prompt, sampler=args.sampler, schedule=args.schedule, steps=args.steps, cfg=args.cfg,
                          seed=seeds, batch=len(args.seed), width=args.width, height=args.height, progress=True)
    paths = save_images(images, out)
    print(f"wrote {', '.join(map(str, paths))} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def compare_grid(pipe, prompts: Sequence[str], sampler_names: Sequence[str], steps_list: Sequence[int],
                 seed: int = 0, cfg: float | None = None, schedule: str | None = None, scale: int = 2, title: str = ""):
    """Samplers × step counts on the same prompts and seeds (item k: prompt k, seed seed + k).

    Returns (grid PIL image showing item 0 of every cell, rows of dicts sampler / steps / nfe / match /
    seconds), where ``match`` is the fraction of items the checker passes."""
    from PIL import Image, ImageDraw

    import samplers

    from . import checker

    prompts = list(prompts)
    seeds = [seed + k for k in range(len(prompts))]
    rows, tiles = [], {}
    for name in sampler_names:
        spec = samplers.info(name)
        for steps in steps_list:
            t0 = time.perf_counter()
            images = pipe.txt2img(prompts, sampler=name, schedule=schedule, steps=steps, cfg=cfg, seed=seeds,
                                  output="tensor", progress=False)
            dt = time.perf_counter() - t0
            match = sum(checker.matches(im, p) for im, p in zip(images, prompts)) / len(prompts)
            rows.append({"sampler": spec.name, "steps": steps, "nfe": round(spec.nfe_per_step * steps), "match": match, "seconds": dt})
            from . import data

            tiles[(name, steps)] = data.to_pil(images[0]).resize((64 * scale, 64 * scale), Image.NEAREST)
    tile = 64 * scale
    left, top, pad = 110, 36 + (16 if title else 0), 4
    W = left + len(steps_list) * (tile + pad)
    H = top + len(sampler_names) * (tile + pad + 14)
    grid = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font()
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    for j, steps in enumerate(steps_list):
        draw.text((left + j * (tile + pad) + 4, top - 16), f"{steps} steps", fill=(0, 0, 0), font=font)
    by_key = {(r["sampler"], r["steps"]): r for r in rows}
    for i, name in enumerate(sampler_names):
        y = top + i * (tile + pad + 14)
        draw.text((4, y + tile // 2 - 6), samplers.info(name).name, fill=(0, 0, 0), font=font)
        for j, steps in enumerate(steps_list):
            x = left + j * (tile + pad)
            grid.paste(tiles[(name, steps)], (x, y))
            r = by_key[(samplers.info(name).name, steps)]
            draw.text((x + 2, y + tile + 1), f"match {r['match']:.2f}  {r['seconds']:.1f}s", fill=(60, 60, 60), font=font)
    return grid, rows


def format_table(rows: Sequence[dict], n: int) -> str:
    lines = [f"{'sampler':<18} {'steps':>5} {'NFE':>5} {'match':>7} {'time':>7}"]
    for r in rows:
        lines.append(f"{r['sampler']:<18} {r['steps']:>5} {r['nfe']:>5} {r['match']:>7.2f} {r['seconds']:>6.2f}s")
    lines.append(f"(match: fraction of {n} images the checker passes; NFE without the 2× of CFG's batched call)")
    return "\n".join(lines)


def _compare(args) -> int:
    from . import io as mio
    from .pipeline import Pipeline

    out = _check_out(args.out)
    pipe = Pipeline.load(args.weights, model=args.model, vae=args.vae)
    prompts = [args.prompt] * args.n
    grid, rows = compare_grid(pipe, prompts, args.samplers, args.steps, seed=args.seed, cfg=args.cfg,
                              schedule=args.schedule, title=f"{args.model}: {args.prompt!r}, seed {args.seed}")
    mio.atomic_save_image(out, grid)
    print(format_table(rows, args.n))
    print(f"wrote {out}")
    return 0


def register_subcommands(subparsers) -> None:
    """Add ``generate`` and ``compare`` to the ``samplers`` command's subparsers."""
    g = subparsers.add_parser("generate", help="text → image with a shipped model and any registry sampler")
    _add_common(g)
    g.add_argument("--sampler", default=None, help="registry name (default: the model's default, see `samplers list`)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default 20)")
    g.add_argument("--seed", type=int, nargs="+", default=[0], help="one image per seed (default 0)")
    g.add_argument("--width", type=int, default=64)
    g.add_argument("--height", type=int, default=64)
    g.add_argument("--out", default="generated.png", help="PNG path; several seeds write <stem>-<k>.png")
    g.set_defaults(fn=_generate)

    c = subparsers.add_parser("compare", help="labelled PNG grid of samplers × step counts (same prompt and seed) + table")
    _add_common(c)
    c.add_argument("--samplers", nargs="+", default=["euler", "heun", "dpmpp_2m"])
    c.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    c.add_argument("--seed", type=int, default=0, help="seed of the pictured image (item k uses seed + k)")
    c.add_argument("--n", type=int, default=4, help="images per cell for the match rate")
    c.add_argument("--out", default="compare.png")
    c.set_defaults(fn=_compare)

"""The image half of ``make demo``: samplers × step counts on both shipped models (eps and flow).

For each model: a labelled grid PNG (``<out_dir>/grid_<model>.png``; rows = samplers, columns = step
counts, each tile the same prompt and seed) and a table of the checker's match rate over 8 held-out
one-object captions (seeds 0..7) and the wall time per cell. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

SAMPLERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral")
STEPS = (5, 10, 20)
N_PROMPTS = 8


def run_demo(out_dir: str | Path = "out/demo") -> None:
    import samplers

    from . import io as mio
    from .cli import compare_grid, format_table
    from .pipeline import Pipeline

    from benchmarks.adherence import eval_captions

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [s for s in SAMPLERS if s in samplers.available()] or samplers.available()[:3]
    prompts = eval_captions(N_PROMPTS, 1)
    for model in ("eps", "flow"):
        try:
            pipe = Pipeline.load(model=model)
        except mio.ModelLoadError as e:
            print(f"\n[{model}] skipped: {e}")
            continue
        t0 = time.perf_counter()
        grid, rows = compare_grid(pipe, prompts, names, STEPS, seed=0,
                                  title=f"{model} model, '{prompts[0]}', seed 0 (cfg {pipe.defaults['cfg']:g})")
        path = mio.atomic_save_image(out_dir / f"grid_{model}.png", grid)
        print(f"\n{model} model ({pipe.model.config.name}, schedule {pipe.defaults['schedule']}, cfg {pipe.defaults['cfg']:g}), "
              f"{N_PROMPTS} held-out one-object captions:")
        print(format_table(rows, N_PROMPTS))
        print(f"wrote {path} ({time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    run_demo()

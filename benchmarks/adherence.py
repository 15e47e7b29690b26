"""Prompt adherence of the text-conditioned models, scored by the analytic checker (``models.checker``).

    python -m benchmarks.adherence --model eps --n 200 --steps 20
    python -m benchmarks.adherence --model flow --n 200 --steps 20 --sampler euler --cfg 3

Captions are held out from training: scenes of data stream ``models.data.EVAL_CAPTION_SEED`` (training uses streams 0..),
one-object captions (every attribute named: colour, shape, size, position) and two-object captions
(size / position named with probability 1/2 each). A sample *adheres* when the checker finds exactly
the caption's objects with every named attribute right (``checker.matches``). Rows: one / two objects,
with the model's default CFG scale and without guidance (cfg = 1). Item k uses seed k.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from models import checker, data
from models.pipeline import MAX_BATCH

from samplers.core.argtypes import int_in, path_to
from samplers.core.errors import SamplersError

from . import common


BATCH = 50  # images per txt2img call of :func:`adherence`


@torch.no_grad()
def adherence(pipe, captions: list[str], seeds: list[int] | None = None, batch_size: int = BATCH,
              progress: bool = True, **kw) -> dict:
    """Checker accuracy of ``pipe.txt2img`` samples: ``match`` (all attributes right) and per attribute."""
    seeds = list(range(len(captions))) if seeds is None else list(seeds)
    images = []
    for i in common.progress(range(0, len(captions), batch_size), desc="batches", disable=not progress):
        images.append(pipe.txt2img(captions[i:i + batch_size], seed=seeds[i:i + batch_size], output="tensor",
                                   progress=False, **kw))
    return checker.accuracy(torch.cat(images), captions)


def load_pipeline(folder=None, model: str | None = None):
    """The pipeline of the U-Net in ``folder`` (default: the shipped one of ``model``)."""
    from models.pipeline import Pipeline

    return Pipeline.load(folder, model=model)


def check_request(spec, n: int, steps: int, sampler: str | None, schedule: str | None) -> None:
    """What :func:`run` asks of the pipeline, checked from the config.json files before the weights are loaded,
    by the pipeline's own rules (``PipelineSpec.check_request``, as ``samplers generate`` checks its request): the
    sampler, schedule and steps as :func:`run` resolves them (the model's defaults where not given), one batch of
    :data:`BATCH` images, and the ``n`` images of a row kept for the checker. Raises the pipeline's
    ``SamplersError``."""
    from samplers.core.validate import check_allocation

    sampler = sampler or spec.defaults["sampler"]
    schedule = schedule or spec.defaults["schedule"]
    batch = min(n, BATCH)
    spec.check_request(sampler, schedule, steps, seed=list(range(batch)), batch=batch)
    size = spec.vae_config.image_size
    check_allocation(2 * n * 3 * size * size * 4, f"--n {n} ({n} images of {size}×{size} per row, kept for the "
                     "checker)", fix="pass a smaller --n")


def run(model: str | None = None, n: int = 200, steps: int = 20, sampler: str | None = None, schedule: str | None = None,
        cfg: float | None = None, folder=None, out=sys.stdout, progress: bool = True, pipe=None) -> dict:
    """The table of checker accuracies; ``pipe``: the pipeline already loaded (else loaded from ``folder``)."""
    pipe = load_pipeline(folder, model) if pipe is None else pipe
    model = model or pipe.model.config.prediction
    cfg = pipe.defaults["cfg"] if cfg is None else cfg
    sampler = sampler or pipe.defaults["sampler"]
    schedule = schedule or pipe.defaults["schedule"]
    print(f"model {model} ({pipe.model.config.name}, sha256 {(pipe.model.weights_sha256 or '')[:12]}), sampler {sampler}, "
          f"schedule {schedule}, {steps} steps, n = {n} per row, on {common.device_label(common.run_info('cpu'))}, torch {torch.__version__}",
          file=out)
    print(f"{'captions':<12} {'cfg':>5} {'match':>7} {'colour':>7} {'shape':>7} {'size':>7} {'position':>8} {'count':>7} {'time':>7}",
          file=out)
    results = {}
    for n_objects in (1, 2):
        captions = data.eval_captions(n, n_objects)
        for scale in (cfg, 1.0):
            t0 = time.perf_counter()
            acc = adherence(pipe, captions, sampler=sampler, schedule=schedule, steps=steps, cfg=scale,
                            progress=progress)
            dt = time.perf_counter() - t0
            results[(n_objects, scale)] = acc
            f = lambda v: f"{v:7.3f}" if v is not None else f"{'-':>7}"  # noqa: E731
            print(f"{f'{n_objects} object' + ('s' if n_objects > 1 else ''):<12} {scale:>5g} {f(acc['match'])} {f(acc['colour'])} "
                  f"{f(acc['shape'])} {f(acc['size'])} {f(acc['position']):>8} {f(acc['count'])} {dt:6.1f}s", file=out, flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adherence", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", choices=("eps", "flow"), default=None,
                   help="the shipped model (default eps); with --weights, the kind that folder must hold")
    p.add_argument("--weights", type=path_to("U-Net folder"), default=None,
                   help="U-Net folder (default: the shipped weights of --model)")
    p.add_argument("--n", type=int_in(1, MAX_BATCH, "the pipeline's images per run (models.pipeline.MAX_BATCH)"),
                   default=200, help=f"captions per row, at most {MAX_BATCH} (the pipeline's images per run; their "
                                     "images must fit in memory; default 200)")
    p.add_argument("--steps", type=common.step_count, default=20,
                   help=f"sampling steps, at most {common.MAX_STEPS} (the pipeline's step limit; default 20)")
    p.add_argument("--sampler", default=None, help="default: the model's default sampler")
    p.add_argument("--schedule", default=None,
                   help="schedule name, samplers.schedules.available() (default: the model's default schedule)")
    p.add_argument("--cfg", type=common.cfg_scale, default=None,
                   help="guidance scale of the CFG rows, |cfg| <= 100 (default: the model's)")
    common.add_threads_option(p, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = p.parse_args(argv)
    if args.sampler is not None:
        common.sampler_or_refuse(p, "--sampler", args.sampler)
    if args.schedule is not None:
        common.schedule_or_refuse(p, "--schedule", args.schedule)
    from models.pipeline import PipelineSpec

    where = f"--weights {str(args.weights)!r}: " if args.weights is not None else ""
    try:  # a missing folder, a file, another kind of model's weights: the user's path, said in one line
        spec = PipelineSpec.read(args.weights, model=args.model)  # config.json only: before the weights
    except (SamplersError, OSError) as err:
        p.error(f"{where}{err}")
    try:  # the sampler, schedule, steps and --n by the pipeline's rules, as `samplers generate` checks its request
        check_request(spec, args.n, args.steps, args.sampler, args.schedule)
    except SamplersError as err:
        p.error(str(err))
    common.set_threads(args.threads)
    try:
        pipe = load_pipeline(args.weights, args.model)
    except (SamplersError, OSError) as err:
        p.error(f"{where}{err}")
    run(args.model, args.n, args.steps, args.sampler, args.schedule, args.cfg, args.weights,
        progress=not args.no_progress, pipe=pipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

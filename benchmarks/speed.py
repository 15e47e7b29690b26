"""Speed: per-step sampler overhead over bare model calls, diffusers side by side, CUDA graphs, full stack.

    python -m benchmarks.speed                         # CPU (and CUDA fp32/fp16/bf16 when available)
    python -m benchmarks.speed --device cuda --graph --sd15   # + CUDA-graph replay and the SD-1.5-shaped U-Net

Overhead: a tiny native eps model (two elementwise kernels on a [2, 4, 16, 16] latent, so that overhead is
what is measured) is run by each sampler through ``samplers.to_denoiser`` at two step counts; the cost per
step is the slope, and the model's own cost (the same calls in a bare loop) is subtracted:

    overhead per step = (T(n2) − T(n1)) / (n2 − n1) − (model calls per step) · (one bare model call)

which leaves the sampler's arithmetic, the eps → x0 conversion and Python. The per-call part (validation,
the one read of the schedule and of the result) is the intercept, reported separately. diffusers'
schedulers run their own ``scale_model_input`` / ``step`` loop on the same model and are measured the same
way; the ratio is printed. ``sampler only`` repeats the measurement on a canonical denoiser (no conversion).

Times are the minimum over ``--repeats`` runs (wall clock with a device synchronisation at the end; CUDA
events for GPU time). No numbers are asserted anywhere: they are written to ``--out`` (JSON + Markdown).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import samplers
from samplers.core.budget import CountingDenoiser
from samplers.core.native import VPDiscrete

from . import common

# our sampler -> (diffusers class, extra config): the same algorithm, for the side-by-side ratio
PEERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {"set_alpha_to_one": True, "clip_sample": False}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
}
BETAS = common.SD_BETAS


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float | None]:
    """(min wall seconds, min CUDA-event seconds or None) over ``repeats`` calls of ``fn``."""
    walls, gpus = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync(device)
            t0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            sync(device)
            walls.append(time.perf_counter() - t0)
            gpus.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
    return min(walls), (min(gpus) if gpus else None)


# ------------------------------------------------------------------------------------------------------
# the tiny model


def tiny_eps_model(dtype: torch.dtype = torch.float32, scale: float = 0.1):
    """A native eps model costing a few elementwise kernels, computing in ``dtype`` as a real half-precision
    model would: eps(x_t, t) = 0.1·x_t + 0·t."""
    def eps(x_t, t):
        return x_t.to(dtype) * scale + t.reshape((-1,) + (1,) * (x_t.ndim - 1)).to(dtype) * 0.0
    return eps


def tiny_denoiser_for(dtype: torch.dtype = torch.float32):
    """A canonical denoiser of the same cost: D(x, σ) = 0.1·x + 0·σ, in ``dtype``."""
    def denoiser(x, sigma):
        return x.to(dtype) * 0.1 + sigma.reshape((-1,) + (1,) * (x.ndim - 1)).to(dtype) * 0.0
    return denoiser


def _options(name: str, batch: int) -> dict:
    return {"seed": list(range(batch))} if "seed" in samplers.info(name).options else {}


def slope(run_for: Callable[[int], Callable[[], object]], steps: tuple[int, int], device: str,
          repeats: int) -> tuple[float, float, list[float]]:
    """(seconds per step, fixed seconds per call, [T(n1), T(n2)]): runs at the two step counts are
    interleaved and each keeps its minimum, so a load spike on a shared machine hits both alike."""
    runs = [run_for(n) for n in steps]
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            best[k] = min(best[k], best_time(run, device, 1)[0])
    per_step = (best[1] - best[0]) / (steps[1] - steps[0])
    return per_step, best[0] - per_step * steps[0], best


def measure_sampler(name: str, model: Callable, x_unit: torch.Tensor, native, steps: tuple[int, int], device: str,
                    repeats: int) -> dict:
    """Per-step and per-call seconds of one sampler on ``model`` (the model's cost included)."""
    calls = []
    for n in steps:
        sig = samplers.get_sigmas("karras", n, native=native)
        counter = CountingDenoiser(model)
        samplers.sample(name, counter, x_unit * float(sig[0]), sig, disable=True, **_options(name, x_unit.shape[0]))
        calls.append(counter.calls)

    def run_for(n):
        sig = samplers.get_sigmas("karras", n, native=native)
        x = x_unit * float(sig[0])
        opts = _options(name, x.shape[0])
        return lambda: samplers.sample(name, model, x, sig, disable=True, **opts)

    per_step, per_call, times = slope(run_for, steps, device, repeats)
    return {"per_step_s": per_step, "per_call_s": per_call,
            "calls_per_step": (calls[1] - calls[0]) / (steps[1] - steps[0]), "calls": calls, "times_s": times}


def measure_peer(label: str, extra: dict, eps_model, x_unit: torch.Tensor, steps: tuple[int, int], device: str,
                 repeats: int) -> dict:
    """The same for diffusers' own scheduler loop (scale_model_input, model, step)."""
    import diffusers

    cls = getattr(diffusers, label)
    b = x_unit.shape[0]

    def run_for(n):
        def loop():
            sch = cls(**BETAS, steps_offset=1, **extra)
            sch.set_timesteps(n, device=x_unit.device)
            latents = x_unit * sch.init_noise_sigma
            g = torch.Generator(device=x_unit.device).manual_seed(0)
            kw = {"generator": g} if "generator" in _step_params(sch) else {}
            for t in sch.timesteps:
                inp = sch.scale_model_input(latents, t)
                latents = sch.step(eps_model(inp, t.reshape(1).expand(b)), t, latents, **kw).prev_sample
            return latents, len(sch.timesteps)
        return loop

    calls = [run_for(n)()[1] for n in steps]
    per_step, per_call, times = slope(run_for, steps, device, repeats)
    return {"per_step_s": per_step, "per_call_s": per_call,
            "calls_per_step": (calls[1] - calls[0]) / (steps[1] - steps[0]), "calls": calls, "times_s": times}


def _step_params(sch):
    import inspect

    return inspect.signature(sch.step).parameters


def model_call_seconds(model: Callable, x: torch.Tensor, time_input: torch.Tensor, device: str, repeats: int,
                       calls: int = 200) -> float:
    """One bare model call (slope of a loop of calls, so the loop's own fixed cost drops out)."""
    def run_for(k):
        def run():
            y = x
            for _ in range(k):
                y = model(x, time_input)
            return y
        return run
    return slope(run_for, (calls // 4, calls), device, repeats)[0]


def overhead_table(names: list[str], device: str, dtype: torch.dtype, steps: tuple[int, int], repeats: int,
                   peers: bool, progress: bool) -> list[dict]:
    native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    shape = (2, 4, 16, 16)
    x_unit = samplers.core.seeds.seeded_randn(shape, [0, 1], device=device).to(dtype)
    eps = tiny_eps_model(dtype)
    tiny_denoiser = tiny_denoiser_for(dtype)
    D = samplers.to_denoiser(eps, "eps", native)
    t_eps = model_call_seconds(eps, x_unit, torch.full((2,), 500.0, device=device, dtype=torch.float64), device,
                               repeats)
    t_den = model_call_seconds(tiny_denoiser, x_unit, torch.full((2,), 1.0, device=device, dtype=dtype), device,
                               repeats)
    # what samplers.to_denoiser adds to each call of an eps model (schedule lookup, eps -> x0)
    t_conv = model_call_seconds(D, x_unit, torch.full((2,), 1.0, device=device, dtype=dtype), device,
                                repeats) - t_eps
    rows = []
    from tqdm.auto import tqdm

    for name in tqdm(names, desc=f"overhead {device} {str(dtype)[6:]}", disable=not progress, leave=False):
        spec = samplers.info(name)
        with_conv = measure_sampler(name, D, x_unit, native, steps, device, repeats)
        bare = measure_sampler(name, tiny_denoiser, x_unit, native, steps, device, repeats)
        row = {"sampler": name, "kind": spec.kind, "nfe_per_step": spec.nfe_per_step, "device": device,
               "dtype": str(dtype)[6:],
               "overhead_per_step_s": with_conv["per_step_s"] - with_conv["calls_per_step"] * t_eps,
               "sampler_only_per_step_s": bare["per_step_s"] - bare["calls_per_step"] * t_den,
               "per_call_s": with_conv["per_call_s"], "calls_per_step": with_conv["calls_per_step"],
               "model_call_s": t_eps, "conversion_per_call_s": t_conv, "raw": {"eps": with_conv, "denoiser": bare}}
        if peers and name in PEERS:
            label, extra = PEERS[name]
            try:
                peer = measure_peer(label, extra, eps, x_unit, steps, device, repeats)
            except Exception as err:  # noqa: BLE001 - a missing optional dependency of one peer
                row["peer"] = {"name": label, "error": f"{type(err).__name__}: {err}"}
            else:
                over = peer["per_step_s"] - peer["calls_per_step"] * t_eps
                row["peer"] = {"name": label + "".join(f" {k}={v}" for k, v in extra.items()
                                                       if k not in ("set_alpha_to_one", "clip_sample")),
                               "overhead_per_step_s": over, "calls_per_step": peer["calls_per_step"], "raw": peer}
                row["ratio_peer_over_ours"] = over / row["overhead_per_step_s"] if row["overhead_per_step_s"] > 0 \
                    else math.inf
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------
# CUDA graphs


def graph_table(names: list[str], device: str, dtype: torch.dtype, steps: int, repeats: int) -> list[dict]:
    """Eager versus CUDA-graph replay of a whole run on the tiny model (launch-bound by construction)."""
    from samplers.core import graph as sgraph

    native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    D = samplers.to_denoiser(tiny_eps_model(dtype), "eps", native)
    x = samplers.core.seeds.seeded_randn((2, 4, 16, 16), [0, 1], device=device).to(dtype)
    sig = samplers.get_sigmas("karras", steps, native=native)
    x = x * float(sig[0])
    rows = []
    for name in names:
        opts = _options(name, x.shape[0])
        eager = best_time(lambda: samplers.sample(name, D, x, sig, disable=True, **opts), device, repeats)
        try:
            run = sgraph.capture(name, D, x, sig, **opts)
        except sgraph.GraphUnavailable as err:
            rows.append({"sampler": name, "error": str(err)})
            continue
        replay = best_time(lambda: run(x, check=False), device, repeats)
        same = bool(torch.allclose(run(x).float(), samplers.sample(name, D, x, sig, disable=True, **opts).float(),
                                   rtol=1e-4, atol=1e-4))
        rows.append({"sampler": name, "dtype": str(dtype)[6:], "steps": steps, "eager_s": eager[0],
                     "graph_s": replay[0], "speedup": eager[0] / replay[0], "matches_eager": same})
    return rows


# ------------------------------------------------------------------------------------------------------
# an SD-1.5-shaped U-Net (random weights from its config): diffusers' loop versus ours + CUDA graph


SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=768, attention_head_dim=8)
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                 norm_num_groups=8)


def unet_run(config: dict, device: str, dtype: torch.dtype, batch: int = 2, steps: int = 20, repeats: int = 3,
             sampler: str = "euler", use_graph: bool = True, text_len: int = 77) -> dict:
    """20 steps of ``sampler`` on a diffusers UNet2DConditionModel built from ``config`` (random weights):
    diffusers' EulerDiscreteScheduler loop versus ours (eagerly, and replayed from a CUDA graph)."""
    import diffusers

    from samplers.core import graph as sgraph

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**config).to(device, dtype).eval()
    side = config["sample_size"]
    ctx = torch.randn(batch, text_len, config["cross_attention_dim"], device=device, dtype=dtype)
    native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)

    @torch.no_grad()
    def eps(x_t, t):
        # the timestep stays float32: fp16 cannot hold fractional timesteps near 1000
        return unet(x_t.to(dtype), t.float(), encoder_hidden_states=ctx, return_dict=False)[0]

    D = samplers.to_denoiser(eps, "eps", native)
    noise = samplers.core.seeds.seeded_randn((batch, 4, side, side), list(range(batch)), device=device)
    sch = diffusers.EulerDiscreteScheduler(**BETAS, steps_offset=1, timestep_spacing="linspace")
    sch.set_timesteps(steps, device=device)
    sig = torch.cat([sch.sigmas[:-1].double().cpu(), torch.zeros(1, dtype=torch.float64)])
    x = noise * float(sig[0])

    @torch.no_grad()
    def theirs():
        s = diffusers.EulerDiscreteScheduler(**BETAS, steps_offset=1, timestep_spacing="linspace")
        s.set_timesteps(steps, device=device)
        latents = noise * s.init_noise_sigma
        for t in s.timesteps:
            latents = s.step(eps(s.scale_model_input(latents, t), t.reshape(1).expand(batch)), t, latents).prev_sample
        return latents

    def ours():
        with torch.no_grad():
            return samplers.sample(sampler, D, x, sig, disable=True)

    out = {"config": "sd15" if config is SD15_UNET else "custom", "device": device, "dtype": str(dtype)[6:],
           "batch": batch, "steps": steps, "sampler": sampler}
    out["diffusers_s"] = best_time(theirs, device, repeats)[0]
    out["ours_eager_s"] = best_time(ours, device, repeats)[0]
    out["max_abs_diff_vs_diffusers"] = float((ours().float() - theirs().float()).abs().max())
    if use_graph:
        try:
            run = sgraph.capture(sampler, D, x, sig)
        except sgraph.GraphUnavailable as err:
            out["graph_error"] = str(err)
        else:
            out["ours_graph_s"] = best_time(lambda: run(x, check=False), device, repeats)[0]
            out["graph_over_diffusers"] = out["ours_graph_s"] / out["diffusers_s"]
    out["ours_eager_over_diffusers"] = out["ours_eager_s"] / out["diffusers_s"]
    if device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------------------------------------------------
# any problem (your own model): wall time per run, and overhead over the same number of bare model calls


def problem_table(problem_name: str, names: list[str], device: str, steps: int, batch: int, repeats: int,
                  progress: bool) -> list[dict]:
    """Each sampler at ``steps`` on a :class:`benchmarks.common.Problem` (e.g. ``--problem mypkg.bench:problem``).

    overhead per step = (run time − NFE × one bare call of the problem's denoiser) / steps.
    """
    problem = common.get_problem(problem_name, device=device)
    denoiser = problem.batch_denoiser(batch, 0)
    noise = problem.noise(batch, 0)
    sigma = torch.full((batch,), float(problem.sigmas("karras", steps)[1]), device=device, dtype=noise.dtype)
    x_mid = noise * float(sigma[0])
    with torch.no_grad():
        call = model_call_seconds(lambda x, s: denoiser(x, s), x_mid, sigma, device, max(3, repeats // 4), calls=8)
    rows = []
    from tqdm.auto import tqdm

    for name in tqdm(names, desc=f"{problem_name} {device}", disable=not progress, leave=False):
        sig = problem.sigmas("karras", steps)
        x = samplers.initial_latent(noise, sig)
        opts = _options(name, batch)
        counter = CountingDenoiser(denoiser)
        with torch.no_grad():
            samplers.sample(name, counter, x, sig, disable=True, **opts)

            def run():
                return samplers.sample(name, denoiser, x, sig, disable=True, **opts)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            wall, gpu = best_time(run, device, repeats)
        row = {"problem": problem_name, "sampler": name, "device": device, "steps": steps, "batch": batch,
               "nfe": counter.calls, "wall_s": wall, "items_per_s": batch / wall, "model_call_s": call,
               "overhead_per_step_s": (wall - counter.calls * call) / steps}
        if gpu is not None:
            row["gpu_s"] = gpu
            row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------
# the full models stack


def full_stack(device: str, samplers_: list[str], steps: int, batch: int, repeats: int) -> list[dict]:
    """Wall time and images/s of txt2img (text encode, sampling, decode) on the default models, if present."""
    try:
        from models import data
        from models.pipeline import Pipeline
    except ImportError as err:
        return [{"skipped": f"models.pipeline is not importable ({err})"}]
    rows = []
    for kind in ("eps", "flow"):
        try:
            pipe = Pipeline.load(model=kind)
        except (FileNotFoundError, OSError, RuntimeError, ValueError) as err:
            rows.append({"model": kind, "skipped": str(err)})
            continue
        pipe.model.to(device)
        pipe.vae.to(device)
        prompts = data.make_batch(30_000, batch)[1]
        for name in samplers_:
            parts = {}

            def stack():
                t0 = time.perf_counter()
                D = pipe.denoiser(prompts)
                sync(device)
                t1 = time.perf_counter()
                sig = pipe.sigmas(steps=steps)
                noise = samplers.core.seeds.seeded_randn((batch, pipe.vae.latent_channels, 64 // pipe.vae.downsample,
                                                     64 // pipe.vae.downsample), list(range(batch)), device=device)
                with torch.no_grad():
                    lat = samplers.sample(name, D, samplers.initial_latent(noise, sig), sig, disable=True,
                                          **_options(name, batch))
                sync(device)
                t2 = time.perf_counter()
                pipe.decode(lat, output="tensor")
                sync(device)
                t3 = time.perf_counter()
                parts.setdefault("encode", []).append(t1 - t0)
                parts.setdefault("sample", []).append(t2 - t1)
                parts.setdefault("decode", []).append(t3 - t2)

            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            total, _ = best_time(stack, device, repeats)
            row = {"model": kind, "sampler": name, "steps": steps, "batch": batch, "device": device,
                   "wall_s": total, "images_per_s": batch / total, **{f"{k}_s": min(v) for k, v in parts.items()}}
            if device.startswith("cuda"):
                row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------
# report


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def markdown(result: dict) -> str:
    info = result["info"]
    lines = ["# Speed", "", f"{common.device_label(info)}, {info['date_utc']}, torch {info['versions']['torch']}, "
             f"diffusers {info['versions']['diffusers']}, commit {info['commit']}. Minimum of {result['args']['repeats']} "
             f"runs; per-step numbers are slopes between {result['args']['steps'][0]} and "
             f"{result['args']['steps'][1]} steps with the model's own cost subtracted ('ours, eps model': "
             "the sampler on samplers.to_denoiser(eps model), comparable with diffusers' loop on the same eps "
             "model; 'sampler only': the sampler on a canonical denoiser of the same cost). The fixed per-call "
             "cost (intercept) is in results.json.", ""]
    for key, rows in result["overhead"].items():
        lines += [f"## Overhead per step, {key} (µs; tiny eps model, latent [2, 4, 16, 16])", "",
                  "| sampler | kind | model calls / step | ours, eps model | ours, sampler only "
                  "| diffusers | diffusers, same model | diffusers / ours |",
                  "|---|---|---:|---:|---:|---|---:|---:|"]
        for r in rows:
            peer = r.get("peer", {})
            ratio = r.get("ratio_peer_over_ours")
            lines.append(f"| {r['sampler']} | {r['kind']} | {r['calls_per_step']:g} | {us(r['overhead_per_step_s'])} | "
                         f"{us(r['sampler_only_per_step_s'])} | {peer.get('name', '–')} | "
                         f"{us(peer['overhead_per_step_s']) if 'overhead_per_step_s' in peer else peer.get('error', '–')} | "
                         f"{f'{ratio:.1f}×' if ratio is not None else '–'} |")
        if rows:
            lines += ["", f"One bare call of the tiny eps model: {rows[0]['model_call_s'] * 1e6:.1f} µs; the eps → x0 "
                      f"conversion of samplers.to_denoiser (VP-discrete schedule lookup) adds "
                      f"{rows[0]['conversion_per_call_s'] * 1e6:.1f} µs per model call, included in 'ours, eps model'.",
                      ""]
    if result.get("graph"):
        lines += ["## CUDA-graph replay of a whole run (tiny model)", "",
                  "| sampler | dtype | steps | eager (ms) | graph replay (ms) | speed-up | same result |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for r in result["graph"]:
            if "error" in r:
                lines.append(f"| {r['sampler']} | | | | | {r['error']} | |")
            else:
                lines.append(f"| {r['sampler']} | {r['dtype']} | {r['steps']} | {r['eager_s'] * 1e3:.2f} | "
                             f"{r['graph_s'] * 1e3:.2f} | {r['speedup']:.1f}× | {r['matches_eager']} |")
        lines.append("")
    else:
        lines += [f"CUDA graphs: {result.get('graph_note', 'not run')}", ""]
    for r in result.get("unet", []):
        lines += ["## diffusers U-Net, 20 steps: diffusers' Euler loop versus ours", "",
                  "```", json.dumps(r, indent=1), "```", ""]
    timed = [r for r in result.get("problems", []) if "skipped" not in r]
    if timed:
        lines += ["## Your problems: one run per sampler (model cost included), and overhead over bare calls", "",
                  "| problem | device | sampler | steps | batch | NFE | wall (ms) | items/s | overhead / step (µs) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in timed:
            lines.append(f"| {r['problem']} | {r['device']} | {r['sampler']} | {r['steps']} | {r['batch']} | {r['nfe']} | "
                         f"{r['wall_s'] * 1e3:.2f} | {r['items_per_s']:.1f} | {us(r['overhead_per_step_s'])} |")
        lines += ["", f"One bare call of each problem's denoiser is in results.json (`model_call_s`).", ""]
    for r in result.get("problems", []):
        if "skipped" in r:
            lines += [f"Problem {r['problem']}: skipped — {r['skipped']}", ""]
    stack = result.get("full_stack", [])
    ran = [r for r in stack if "skipped" not in r]
    if ran:
        lines += ["## Full stack: txt2img on the default models (text encode + sampling + decode)", "",
                  "| model | sampler | steps | batch | encode (ms) | sample (ms) | decode (ms) | wall (ms) | images/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ran:
            lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['batch']} | {r['encode_s'] * 1e3:.1f} | "
                         f"{r['sample_s'] * 1e3:.1f} | {r['decode_s'] * 1e3:.1f} | {r['wall_s'] * 1e3:.1f} | "
                         f"{r['images_per_s']:.2f} |")
        lines.append("")
    for r in stack:
        if "skipped" in r:
            lines += [f"Full stack{' (' + r['model'] + ')' if 'model' in r else ''}: skipped — {r['skipped']}", ""]
    lines += [f"Peak resident memory of the benchmark process: {result['max_rss_mb']:.0f} MB.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="CUDA dtypes (default float32 float16 bfloat16; the CPU runs float32)")
    p.add_argument("--samplers", nargs="+", default=None, help="registry names (default: every non-adaptive one)")
    p.add_argument("--steps", nargs=2, type=int, default=[10, 50], help="the two step counts of the slope")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--graph", action="store_true", help="CUDA-graph replay versus eager (CUDA only)")
    p.add_argument("--sd15", action="store_true",
                   help="20 steps of an SD-1.5-shaped diffusers U-Net (random weights, fp16, batch 2; CUDA only)")
    p.add_argument("--full-stack", action="store_true", help="txt2img on the default models (when installed)")
    p.add_argument("--problem", dest="problems", nargs="+", default=[],
                   help="also time every sampler on these problems (gm-vp-eps, models-eps, module:function, ...)")
    p.add_argument("--problem-steps", type=int, default=20)
    p.add_argument("--problem-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 samplers, few repeats")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks/speed"))
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.samplers = args.samplers or [n for n in ("euler", "heun", "euler_ancestral") if n in samplers.available()]
        args.repeats = min(args.repeats, 3)
        args.steps = [4, 8]
    names = common.sampler_names(args.samplers)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    result = {"info": common.run_info(devices[-1]), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(args).items()},
              "overhead": {}}
    for device in devices:
        dtypes = ["float32"] if device == "cpu" else (args.dtypes or ["float32", "float16", "bfloat16"])
        for dt in dtypes:
            result["overhead"][f"{device} {dt}"] = overhead_table(names, device, getattr(torch, dt),
                                                                  tuple(args.steps), args.repeats, args.peers,
                                                                  not args.no_progress)
    result["problems"] = []
    for pname in args.problems:
        for device in devices:
            try:
                result["problems"] += problem_table(pname, names, device, args.problem_steps, args.problem_batch,
                                                    args.repeats, not args.no_progress)
            except common.ProblemUnavailable as err:
                result["problems"].append({"problem": pname, "skipped": str(err)})
    cuda = [d for d in devices if d.startswith("cuda")]
    if args.graph and cuda:
        result["graph"] = [r for dt in (args.dtypes or ["float32", "float16"])
                           for r in graph_table(names, cuda[0], getattr(torch, dt), 20, args.repeats)]
    else:
        result["graph_note"] = ("not run: CUDA graphs need a CUDA device" if not cuda
                                else "not run (pass --graph)")
    if args.sd15:
        if cuda:
            result["unet"] = [unet_run(SD15_UNET, cuda[0], torch.float16)]
        else:
            result["unet_note"] = "--sd15 needs a CUDA device"
    if args.full_stack or not args.quick:
        result["full_stack"] = full_stack(devices[-1], [n for n in ("euler", "dpmpp_2m", "euler_ancestral")
                                                        if n in samplers.available()], 20, 4,
                                          max(1, args.repeats // 5))
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    (args.out / "table.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

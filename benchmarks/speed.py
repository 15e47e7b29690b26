"""Speed: what a sampling step costs beyond the model, in aten ops and in µs, next to diffusers and k-diffusion.

    python -m benchmarks.speed                                  # CPU (and CUDA fp32/fp16/bf16 when available)
    python -m benchmarks.speed --out docs/benchmarks/speed_cpu  # the committed CPU tables
    python -m benchmarks.speed --devices cuda --graph --sd15    # + CUDA-graph replay and the SD-1.5-shaped U-Net

The model is an SD-1.x discrete VP eps model whose network costs a couple of elementwise ops on a
[2, 4, 16, 16] latent, so that what is measured is everything around it. Each algorithm runs four ways:
ours on that eps model through ``samplers.to_denoiser`` (what a user runs), ours on a canonical denoiser of
the same cost (the sampler alone), diffusers' scheduler loop (``scale_model_input``, model, ``step``, as its
pipelines run it) and k-diffusion's sampler on its CompVis-style eps wrapper ``DiscreteEpsDDPMDenoiser``
(the real package, when installed).

Ops per step: a ``TorchDispatchMode`` counts every aten op dispatched (views and fills included) except
inside the model, at two step counts; the slope is the cost of a step. On a GPU nearly every op is a kernel
launch of 5-10 µs, so this is the figure that sets eager GPU overhead; it is exact and machine-independent.

µs per step: the slope of wall time between two step counts (minimum over interleaved repeats), less the
model calls' own cost (the same model in a bare loop):

    overhead per step = (T(n2) − T(n1)) / (n2 − n1) − (model calls per step) · (one bare model call)

Targets, checked in the same run and printed (a miss is stated, never hidden): ours on the eps model at
most half the best peer's ops per step for every algorithm a peer has, and at most half diffusers' CPU µs
per step for :data:`US_TARGETS`. Nothing is written into tracked files unless ``--out`` points there
(default ``out/speed``); ``--report RESULTS_JSON`` regenerates a table.md from its results.json.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import importlib.util
import importlib.metadata
import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import samplers
from samplers.core.argtypes import GivenBoolean, was_given
from samplers.core.budget import CountingDenoiser
from samplers.core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete

from . import common
from .peers import KDiffusionUnavailable, kdiffusion_modules

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
    "unipc_bh2": ("UniPCMultistepScheduler", {}),
    "unipc_bh1": ("UniPCMultistepScheduler", {"solver_type": "bh1"}),
    "deis": ("DEISMultistepScheduler", {}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
}
# the algorithms whose CPU µs per step must be at most half diffusers' (on the eps model)
US_TARGETS = ("euler", "heun", "ddim", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "lms", "unipc_bh2")
TARGET_RATIO = 0.5
# the default set: every algorithm a peer has (k-diffusion's sample_<name> or a diffusers scheduler)
DEFAULT_SAMPLERS = ("euler", "euler_ancestral", "heun", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "lms", "unipc_bh2",
                    "unipc_bh1", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_3m_sde", "deis")
QUICK_SAMPLERS = ("euler", "heun", "euler_ancestral")
OPS_STEPS = (10, 30)
MODULE = "benchmarks.speed"
DEFAULT_OUT = Path("out/speed")
STEPS, QUICK_STEPS = (10, 50), (4, 8)  # the two step counts of the µs slope (--steps)
REPEATS, QUICK_REPEATS = 20, 3  # interleaved repeats (--repeats)
SHAPE = (2, 4, 16, 16)
BETAS = common.SD_BETAS


def sd_native() -> VPDiscrete:
    return VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> Callable[[], float]:
    """The clock of a CPU measurement: this thread's CPU time when torch runs on one thread (time the machine
    gives other processes does not count, so a shared machine measures what a quiet one would), else wall time."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def best_time(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float | None]:
    """(min seconds, min CUDA-event seconds or None) over ``repeats`` calls of ``fn``; on the CPU the seconds
    are those of :func:`clock`."""
    walls, gpus = [], []
    now = clock(device)
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
            t0 = now()
            fn()
            walls.append(now() - t0)
    return min(walls), (min(gpus) if gpus else None)


# ------------------------------------------------------------------------------------------------------
# the tiny model


def tiny_eps_model(dtype: torch.dtype = torch.float32, scale: float = 0.1):
    """A native eps model costing a few elementwise kernels, computing in ``dtype`` as a real half-precision
    model would: eps(x_t, t) = 0.1·x_t + 0·t (``t`` of shape [B], or 0-d as diffusers' loops pass it)."""
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


# ------------------------------------------------------------------------------------------------------
# the peers' loops: one function per tool, ``loop(n) -> run()`` at n steps on the eps model


def diffusers_loop(label: str, extra: dict, eps_model, x_unit: torch.Tensor) -> Callable[[int], Callable[[], tuple]]:
    """diffusers' own scheduler loop, as its pipelines run it: scale_model_input, the model on (x, t), step."""
    import diffusers

    cls = getattr(diffusers, label)

    def loop(n):
        @_quiet
        def run():
            sch = cls(**BETAS, steps_offset=1, **extra)
            sch.set_timesteps(n, device=x_unit.device)
            latents = x_unit * sch.init_noise_sigma
            g = torch.Generator(device=x_unit.device).manual_seed(0)
            kw = {"generator": g} if "generator" in _step_params(sch) else {}
            for t in sch.timesteps:
                inp = sch.scale_model_input(latents, t)
                latents = sch.step(eps_model(inp, t), t, latents, **kw).prev_sample
            return latents, len(sch.timesteps)
        return run
    return loop


def _quiet(fn: Callable) -> Callable:
    """``fn`` with warnings silenced: torchsde's Brownian tree (diffusers' DPMSolverSDE, k-diffusion's SDE
    samplers) warns when float32 sigmas fall a rounding error outside its interval."""
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


def _step_params(sch):
    import inspect

    return inspect.signature(sch.step).parameters


def kdiffusion_loop(name: str, eps_model, x_unit: torch.Tensor, native: VPDiscrete):
    """k-diffusion's ``sample_<name>`` on ``DiscreteEpsDDPMDenoiser(eps_model)`` (A1111 / ComfyUI's wrapper kind),
    on the same Karras sigmas; None when k-diffusion has no such sampler."""
    sampling, external = kdiffusion_modules()
    fn = getattr(sampling, f"sample_{name}", None)
    if fn is None:
        return None
    model = external.DiscreteEpsDDPMDenoiser(eps_model, native.alphas_cumprod.float(), quantize=False)
    model.to(x_unit.device)

    def loop(n):
        sig = samplers.get_sigmas("karras", n, native=native).to(x_unit.device, torch.float32)
        x = x_unit * sig[0]

        @_quiet
        def run():
            return fn(model, x, sig, disable=True), n
        return run
    return loop


def ours_loop(name: str, model, x_unit: torch.Tensor, native: VPDiscrete):
    def loop(n):
        sig = samplers.get_sigmas("karras", n, native=native)
        x = x_unit * float(sig[0])
        opts = _options(name, x.shape[0])

        def run():
            return samplers.sample(name, model, x, sig, disable=True, **opts), n
        return run
    return loop


# ------------------------------------------------------------------------------------------------------
# aten ops per step


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside ``with counter:``, except inside calls wrapped by :meth:`exclude`.

    Every dispatched op counts (views, fills and copies too): each costs a dispatch on the host, and nearly
    every non-view op is a kernel launch on a GPU.
    """

    def __init__(self):
        super().__init__()
        self.count = 0
        self.ops = collections.Counter()
        self._paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self._paused:
            self.count += 1
            self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    def exclude(self, fn: Callable) -> Callable:
        """``fn`` whose own ops are not counted (the model's)."""
        def call(*args, **kwargs):
            self._paused += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._paused -= 1
        return call

    def run(self, fn: Callable[[], object]) -> tuple[int, collections.Counter]:
        """(ops, ops by name) dispatched by ``fn()``."""
        self.count, self.ops = 0, collections.Counter()
        with torch.no_grad(), self:
            fn()
        return self.count, self.ops


def ops_slope(counter: OpCounter, loop: Callable[[int], Callable[[], object]], steps=OPS_STEPS) -> float:
    """Aten ops per step: the slope of the count between two step counts (the per-call constant drops out)."""
    first, second = (counter.run(loop(n))[0] for n in steps)
    return (second - first) / (steps[1] - steps[0])


def ops_per_step(name: str, kind: str = "eps", steps=OPS_STEPS) -> float:
    """Aten ops per step of our ``name`` beyond the model's own: ``kind`` "eps" runs it on the tiny eps model
    through ``samplers.to_denoiser`` (SD-1.x discrete schedule), "denoiser" on a canonical denoiser."""
    counter = OpCounter()
    native = sd_native()
    x_unit = samplers.core.seeds.seeded_randn(SHAPE, list(range(SHAPE[0])))
    if kind == "eps":
        model = samplers.to_denoiser(counter.exclude(tiny_eps_model()), "eps", native)
    else:
        model = counter.exclude(tiny_denoiser_for())
    return ops_slope(counter, ours_loop(name, model, x_unit, native), steps)


def ops_table(names: list[str], peers: bool, progress: bool) -> list[dict]:
    """Aten ops per step for every sampler: ours (eps model, canonical denoiser), diffusers, k-diffusion."""
    from tqdm.auto import tqdm

    native = sd_native()
    x_unit = samplers.core.seeds.seeded_randn(SHAPE, list(range(SHAPE[0])))
    counter = OpCounter()
    eps = counter.exclude(tiny_eps_model())
    rows = []
    for name in tqdm(names, desc="ops per step", disable=not progress, leave=False):
        row = {"sampler": name, "ours_eps": ops_per_step(name, "eps"), "ours_denoiser": ops_per_step(name, "denoiser")}
        if peers and name in PEERS:
            label, extra = PEERS[name]
            try:
                row["diffusers"] = ops_slope(counter, diffusers_loop(label, extra, eps, x_unit))
            except Exception as err:  # noqa: BLE001 - a missing optional dependency of one peer
                row["diffusers_error"] = f"{type(err).__name__}: {err}"
        if peers:
            try:
                loop = kdiffusion_loop(name, eps, x_unit, native)
            except KDiffusionUnavailable as err:
                row["kdiffusion_error"] = str(err)
            else:
                if loop is not None:
                    row["kdiffusion"] = ops_slope(counter, loop)
        peer_ops = [row[k] for k in ("diffusers", "kdiffusion") if k in row]
        if peer_ops:
            row["best_peer"] = min(peer_ops)
            row["ours_over_best_peer"] = row["ours_eps"] / row["best_peer"]
            row["target_met"] = row["ours_over_best_peer"] <= TARGET_RATIO
        rows.append(row)
    return rows


SCHEDULE_KINDS = {
    "VP-discrete": sd_native,
    "VP-discrete, zero SNR": lambda: VPDiscrete.from_betas(rescale_betas_zero_snr=True),
    "VP-continuous": lambda: VPContinuous("linear", time_scale=1000.0),
    "VE": lambda: VE(time_input="edm"),
    "rectified flow": lambda: RectifiedFlow(shift=3.0),
}


def conversion_ops(sigma: float = 2.0) -> dict:
    """Aten ops of one model call beyond the model, per prediction × schedule kind (the registry's host-float
    call), and for classifier-free guidance on the eps model (one batched call on [cond; uncond]): {key: (on the
    run's σ grid, off it)}. On the grid the run built the time inputs before its loop (``prepare_times``); off it
    (a midpoint stage's σ) the call fills its own."""
    from models.guidance import CFGDenoiser
    from samplers.interop.diffusers_models import denoiser_from_diffusers

    counter = OpCounter()
    x = samplers.core.seeds.seeded_randn(SHAPE, list(range(SHAPE[0])))

    def both(D) -> tuple[int, int]:
        D.denoise_at(x, sigma / 2)  # per-batch conditioning (the guidance wrappers) is built before the loop
        off = counter.run(lambda: D.denoise_at(x, sigma / 2))[0]
        samplers.core.conversion.prepare_times(D, [sigma], x.shape[0], x.dtype, x.device)
        return counter.run(lambda: D.denoise_at(x, sigma))[0], off

    table = {}
    for label, make in SCHEDULE_KINDS.items():
        native = make()
        for prediction in samplers.core.conversion.PREDICTIONS:
            if prediction in ("edm", "edm_v") and not isinstance(native, VE):
                continue
            model = counter.exclude(lambda x_t, t, **kw: x_t * 0.1)
            table[f"{prediction} / {label}"] = both(samplers.to_denoiser(model, prediction, native))
    D = samplers.to_denoiser(counter.exclude(lambda x_t, t, **kw: x_t * 0.1), "eps", sd_native())
    table["eps / VP-discrete, CFG"] = both(CFGDenoiser(D, {"context": torch.zeros(1, 3, 8)},
                                                       {"context": torch.ones(1, 3, 8)}, 4.0))
    # a diffusers UNet's wrapper, which does its own CFG inside the native model
    net = counter.exclude(lambda x_t, t, encoder_hidden_states: x_t * 0.1)
    table["eps / VP-discrete, CFG in DiffusersModel"] = both(denoiser_from_diffusers(
        net, dict(BETAS, prediction_type="epsilon"), torch.zeros(1, 3, 8), torch.ones(1, 3, 8), guidance_scale=4.0))
    return table


# ------------------------------------------------------------------------------------------------------
# µs per step


def slopes(loops: dict[str, Callable[[int], Callable[[], object]]], steps: tuple[int, int], device: str,
           repeats: int) -> dict[str, tuple[float, float, list[float]]]:
    """{name: (seconds per step, fixed seconds per call, [T(n1), T(n2)])} for each ``loops[name](n)``.

    Every repeat runs every loop at both step counts, one after another, and each keeps its minimum: the
    runs being compared (ours, diffusers', k-diffusion's, the bare model's) see the same machine, so a load
    spike on a shared machine hits them alike.
    """
    runs = {k: [loop(n) for n in steps] for k, loop in loops.items()}
    best = {k: [math.inf, math.inf] for k in loops}
    with torch.no_grad():
        for _ in range(repeats):
            for k, pair in runs.items():
                for i, run in enumerate(pair):
                    best[k][i] = min(best[k][i], best_time(run, device, 1)[0])
    out = {}
    for k, (first, second) in best.items():
        per_step = (second - first) / (steps[1] - steps[0])
        out[k] = (per_step, first - per_step * steps[0], [first, second])
    return out


def slope(run_for: Callable[[int], Callable[[], object]], steps: tuple[int, int], device: str,
          repeats: int) -> tuple[float, float, list[float]]:
    """:func:`slopes` of one loop."""
    return slopes({"": run_for}, steps, device, repeats)[""]


def calls_per_step(loop_for: Callable[[Callable], Callable[[int], Callable[[], object]]], model, steps) -> float:
    """Model calls per step of ``loop_for(model)``, counted on a wrapper in one run at each step count."""
    calls = []
    for n in steps:
        count = [0]

        def counting(*args, **kwargs):
            count[0] += 1
            return model(*args, **kwargs)
        with torch.no_grad():
            loop_for(counting)(n)()
        calls.append(count[0])
    return (calls[1] - calls[0]) / (steps[1] - steps[0])


def bare_calls(model: Callable, x: torch.Tensor, time_input) -> Callable[[int], Callable[[], object]]:
    """``n`` bare calls of ``model``: its slope is the cost of one call."""
    def loop(n):
        def run():
            for _ in range(n):
                model(x, time_input)
        return run
    return loop


def model_call_seconds(model: Callable, x: torch.Tensor, time_input, device: str, repeats: int,
                       calls: int = 200) -> float:
    """One bare model call (slope of a loop of calls, so the loop's own fixed cost drops out)."""
    return slope(bare_calls(model, x, time_input), (calls // 4, calls), device, repeats)[0]


def overhead_table(names: list[str], device: str, dtype: torch.dtype, steps: tuple[int, int], repeats: int,
                   peers: bool, progress: bool) -> list[dict]:
    """µs per step beyond the model for each sampler: ours on the eps model and on a canonical denoiser,
    diffusers' loop and k-diffusion's, all measured interleaved with the bare model calls they subtract."""
    native = sd_native()
    x_unit = samplers.core.seeds.seeded_randn(SHAPE, list(range(SHAPE[0])), device=device).to(dtype)
    eps = tiny_eps_model(dtype)
    tiny_denoiser = tiny_denoiser_for(dtype)
    D = samplers.to_denoiser(eps, "eps", native)
    time_in = torch.full((SHAPE[0],), 500.0, device=device, dtype=dtype)
    # what samplers.to_denoiser adds to each call of an eps model: the registry's host-float call, and the
    # k-diffusion call on a σ tensor that external callers make
    conv = slopes({"eps": bare_calls(eps, x_unit, time_in), "host": bare_calls(D.denoise_at, x_unit, 1.0),
                   "tensor": bare_calls(D, x_unit, torch.full((SHAPE[0],), 1.0, device=device, dtype=dtype))},
                  (50, 200), device, repeats)
    t_conv = conv["host"][0] - conv["eps"][0]
    t_conv_tensor = conv["tensor"][0] - conv["eps"][0]
    rows = []
    from tqdm.auto import tqdm

    for name in tqdm(names, desc=f"µs per step {device} {str(dtype)[6:]}", disable=not progress, leave=False):
        spec = samplers.info(name)
        loops = {"ours": lambda m: ours_loop(name, samplers.to_denoiser(m, "eps", native), x_unit, native),
                 "canonical": lambda m: ours_loop(name, m, x_unit, native)}
        row = {"sampler": name, "kind": spec.kind, "nfe_per_step": spec.nfe_per_step, "device": device,
               "dtype": str(dtype)[6:]}
        if peers and name in PEERS:
            label, extra = PEERS[name]
            row["peer"] = {"name": label + "".join(f" {k}={v}" for k, v in extra.items()
                                                   if k not in ("set_alpha_to_one", "clip_sample"))}
            try:
                diffusers_loop(label, extra, eps, x_unit)
            except Exception as err:  # noqa: BLE001 - a missing optional dependency of one peer
                row["peer"]["error"] = f"{type(err).__name__}: {err}"
            else:
                loops["diffusers"] = lambda m: diffusers_loop(label, extra, m, x_unit)
        if peers:
            try:
                if kdiffusion_loop(name, eps, x_unit, native) is not None:
                    loops["kdiffusion"] = lambda m: kdiffusion_loop(name, m, x_unit, native)
            except KDiffusionUnavailable as err:
                row["kdiffusion"] = {"error": str(err)}
        calls = {k: calls_per_step(loop_for, tiny_denoiser if k == "canonical" else eps, steps)
                 for k, loop_for in loops.items()}
        timed = slopes({**{k: loop_for(tiny_denoiser if k == "canonical" else eps) for k, loop_for in loops.items()},
                        "model": bare_calls(eps, x_unit, time_in),
                        "denoiser": bare_calls(tiny_denoiser, x_unit, time_in)}, steps, device, repeats)
        t_eps, t_den = timed["model"][0], timed["denoiser"][0]

        def over(k):
            return timed[k][0] - calls[k] * (t_den if k == "canonical" else t_eps)
        row.update({"overhead_per_step_s": over("ours"), "sampler_only_per_step_s": over("canonical"),
                    "per_call_s": timed["ours"][1], "calls_per_step": calls["ours"], "model_call_s": t_eps,
                    "conversion_per_call_s": t_conv, "tensor_conversion_per_call_s": t_conv_tensor,
                    "raw": {k: {"per_step_s": v[0], "per_call_s": v[1], "times_s": v[2], "calls_per_step": calls.get(k)}
                            for k, v in timed.items()}})
        if "diffusers" in loops:
            row["peer"].update({"overhead_per_step_s": over("diffusers"), "calls_per_step": calls["diffusers"]})
            row.update(overhead_verdict(over("ours"), over("diffusers"), name in US_TARGETS and device == "cpu"))
        if "kdiffusion" in loops:
            row["kdiffusion"] = {"overhead_per_step_s": over("kdiffusion"), "calls_per_step": calls["kdiffusion"]}
        rows.append(row)
    return rows


def overhead_verdict(ours: float, peer: float, target: bool) -> dict:
    """``ours_over_peer`` and, with ``target``, whether it meets TARGET_RATIO; or ``unresolved`` where either
    overhead is at or under zero: a slope under the timing's noise floor (-0.04x 'met' the target) is no ratio."""
    if ours <= 0 or peer <= 0:
        return {"unresolved": f"{'ours' if ours <= 0 else 'diffusers'} {us(min(ours, peer))} µs per step, under "
                              "the timing's noise floor: raise --repeats or widen --steps"}
    ratio = ours / peer
    return {"ours_over_peer": ratio, **({"target_met": ratio <= TARGET_RATIO} if target else {})}


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
            now = clock(device)  # the clock best_time uses, so the parts add up to the total

            def stack():
                t0 = now()
                D = pipe.denoiser(prompts)
                sync(device)
                t1 = now()
                sig = pipe.sigmas(steps=steps)
                noise = samplers.core.seeds.seeded_randn((batch, pipe.vae.latent_channels, 64 // pipe.vae.downsample,
                                                     64 // pipe.vae.downsample), list(range(batch)), device=device)
                with torch.no_grad():
                    lat = samplers.sample(name, D, samplers.initial_latent(noise, sig), sig, disable=True,
                                          **_options(name, batch))
                sync(device)
                t2 = now()
                pipe.decode(lat, output="tensor")
                sync(device)
                t3 = now()
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


# ------------------------------------------------------------------------------------------------------
# targets and report


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def targets(result: dict) -> list[str]:
    """One line per target: met, or missed with the numbers (a miss is never left out)."""
    lines = []
    ops = [r for r in result.get("ops", []) if "target_met" in r]
    if ops:
        missed = [r for r in ops if not r["target_met"]]
        worst = max(ops, key=lambda r: r["ours_over_best_peer"])
        head = (f"ops per step, ours on the eps model ≤ {TARGET_RATIO}× the best peer's, for the {len(ops)} "
                "algorithms a peer has: ")
        if missed:
            lines.append(head + "MISSED for " + ", ".join(
                f"{r['sampler']} ({r['ours_eps']:g} versus {r['best_peer']:g}, {r['ours_over_best_peer']:.2f}×)"
                for r in missed))
        else:
            lines.append(head + f"met (worst: {worst['sampler']}, {worst['ours_eps']:g} versus {worst['best_peer']:g}, "
                         f"{worst['ours_over_best_peer']:.2f}×)")
    cpu = result.get("overhead", {}).get("cpu float32", [])
    timed = [r for r in cpu if "target_met" in r]
    unresolved = [r for r in cpu if "unresolved" in r and r["sampler"] in US_TARGETS]
    if unresolved:
        lines.append(f"CPU µs per step, ours on the eps model ≤ {TARGET_RATIO}× diffusers': not resolved for "
                     + ", ".join(f"{r['sampler']} ({r['unresolved']})" for r in unresolved))
    if timed:
        missed = [r for r in timed if not r["target_met"]]
        head = (f"CPU µs per step, ours on the eps model ≤ {TARGET_RATIO}× diffusers' "
                f"({', '.join(r['sampler'] for r in timed)}): ")
        if missed:
            lines.append(head + "MISSED for " + ", ".join(
                f"{r['sampler']} ({us(r['overhead_per_step_s'])} versus {us(r['peer']['overhead_per_step_s'])} µs, "
                f"{r['ours_over_peer']:.2f}×)" for r in missed))
        else:
            worst = max(timed, key=lambda r: r["ours_over_peer"])
            lines.append(head + f"met (worst: {worst['sampler']}, {worst['ours_over_peer']:.2f}×)")
        absent = [n for n in US_TARGETS if n not in {r["sampler"] for r in timed + unresolved}]
        if absent and not result["args"]["quick"]:
            lines.append(f"CPU µs target not measured for {', '.join(absent)} (not in --samplers, or no diffusers)")
    return lines


def _verdict(row: dict, key: str) -> str:
    """The target column of a timed row: the verdict, 'not resolved' where the target applies but a slope was at
    or under zero, else '–'."""
    if "target_met" in row:
        return "yes" if row["target_met"] else "**no**"
    return "not resolved" if "unresolved" in row and row["sampler"] in US_TARGETS and key == "cpu float32" else "–"


def _num(v) -> str:
    return "–" if v is None else f"{v:g}"


def markdown(result: dict) -> str:
    info = result["info"]
    a = result["args"]
    kd = info["versions"].get("k-diffusion")
    # a run that times a GPU and the CPU: the CPU sections' device is the CPU, named apart
    cpu = (f" (CPU sections: {common.cpu_label(info)})" if "gpu" in info and any(k.startswith("cpu")
                                                                                for k in result["overhead"]) else "")
    lines = ["# Speed", "", f"**Device: {common.device_label(info)}**{cpu}, {info['platform']}; {info['date_utc']}, "
             f"torch {info['versions']['torch']}, diffusers {info['versions']['diffusers']}, k-diffusion "
             f"{kd or 'not installed'}, commit {info['commit']}.", ""]
    if not any(k.startswith("cuda") for k in result["overhead"]):
        lines += ["No CUDA device was available to this run: every figure below is a CPU measurement (aten op "
                  "counts are the same on a GPU, where nearly each op is a kernel launch); there are no GPU "
                  "timings here.", ""]
    ops = result.get("ops", [])
    if ops:
        lines += [f"## Aten ops per step beyond the model (SD-1.x discrete eps model, latent {list(SHAPE)})", "",
                  "Counted with a `TorchDispatchMode` (every aten op dispatched, views included, the model's own "
                  f"excluded), slope between {OPS_STEPS[0]} and {OPS_STEPS[1]} steps. 'ours, eps model': the "
                  "sampler on `samplers.to_denoiser(eps model)`; 'canonical': the sampler on a canonical denoiser; "
                  "diffusers: its scheduler loop (`scale_model_input`, model, `step`); k-diffusion: "
                  "`sample_<name>` on its `DiscreteEpsDDPMDenoiser`.", "",
                  "| sampler | ours, eps model | ours, canonical | diffusers | k-diffusion | ours / best peer | "
                  f"≤ {TARGET_RATIO}× |", "|---|---:|---:|---:|---:|---:|---|"]
        for r in ops:
            ratio = r.get("ours_over_best_peer")
            lines.append(f"| {r['sampler']} | {r['ours_eps']:g} | {r['ours_denoiser']:g} | {_num(r.get('diffusers'))} | "
                         f"{_num(r.get('kdiffusion'))} | {'–' if ratio is None else f'{ratio:.2f}×'} | "
                         f"{'–' if 'target_met' not in r else 'yes' if r['target_met'] else '**no**'} |")
        errors = sorted({r[k] for r in ops for k in ("diffusers_error", "kdiffusion_error") if k in r})
        lines += [""] + [f"Peer not measured: {e}" for e in errors] + ([""] if errors else [])
    conv = result.get("conversion_ops")
    if conv:
        lines += ["## Aten ops of one model call beyond the model, by prediction and schedule", "",
                  "The registry's call (σ a Python float, `Denoiser.denoise_at`): the model input c_in·x and "
                  "x0 = c_skip·x + c_out·output, with t, c_in, c_skip and c_out computed on the host. On the run's σ "
                  "grid the time input was built before the loop (one tensor per run); a call off the grid (a "
                  "midpoint stage) fills its own. Guidance adds stacking [x; x], the split and one lerp.",
                  "", "| prediction / schedule | ops on the σ grid | off the grid |", "|---|---:|---:|"]
        lines += [f"| {k} | {v[0]} | {v[1]} |" if isinstance(v, (list, tuple)) else f"| {k} | {v} | – |"
                  for k, v in conv.items()] + [""]
    for key, rows in result["overhead"].items():
        lines += [f"## Overhead per step in µs beyond the model, {key} (tiny eps model, latent {list(SHAPE)})", "",
                  f"Minimum of {a['repeats']} runs, ours and the peers' interleaved; slopes between {a['steps'][0]} "
                  f"and {a['steps'][1]} steps, the model calls' own cost subtracted. "
                  + ("Seconds are the CPU time of the benchmark's thread (torch runs on one), so time the machine "
                     "gives other processes does not count. " if key.startswith("cpu") and a["threads"] == 1
                     else "Seconds are wall time. ")
                  + "The fixed per-call cost (intercept) is in results.json.", "",
                  "| sampler | model calls / step | ours, eps model | ours, canonical | diffusers | diffusers, "
                  f"same model | k-diffusion, same model | ours / diffusers | ≤ {TARGET_RATIO}× diffusers |",
                  "|---|---:|---:|---:|---|---:|---:|---:|---|"]
        for r in rows:
            peer = r.get("peer", {})
            kdr = r.get("kdiffusion", {})
            ratio = r.get("ours_over_peer")
            lines.append(
                f"| {r['sampler']} | {r['calls_per_step']:g} | {us(r['overhead_per_step_s'])} | "
                f"{us(r['sampler_only_per_step_s'])} | {peer.get('name', '–')} | "
                f"{us(peer['overhead_per_step_s']) if 'overhead_per_step_s' in peer else peer.get('error', '–')} | "
                f"{us(kdr['overhead_per_step_s']) if 'overhead_per_step_s' in kdr else '–'} | "
                f"{f'{ratio:.2f}×' if ratio is not None else 'not resolved' if 'unresolved' in r else '–'} | "
                f"{_verdict(r, key)} |")
        if rows:
            lines += ["", f"One bare call of the tiny eps model: {rows[0]['model_call_s'] * 1e6:.1f} µs. The eps → x0 "
                      f"conversion of samplers.to_denoiser adds {rows[0]['conversion_per_call_s'] * 1e6:.1f} µs per "
                      "model call in the registry's host-float call (included in 'ours, eps model') and "
                      f"{rows[0]['tensor_conversion_per_call_s'] * 1e6:.1f} µs in the k-diffusion call on a σ tensor "
                      "that external callers make.", ""]
    done = targets(result)
    if done:
        lines += ["## Targets", ""] + [f"- {t}" for t in done] + [""]
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
    if result.get("unet_note"):
        lines += [f"SD-1.5-shaped U-Net: {result['unet_note']}", ""]
    timed = [r for r in result.get("problems", []) if "skipped" not in r]
    if timed:
        lines += ["## Your problems: one run per sampler (model cost included), and overhead over bare calls", "",
                  "| problem | device | sampler | steps | batch | NFE | wall (ms) | items/s | overhead / step (µs) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in timed:
            lines.append(f"| {r['problem']} | {r['device']} | {r['sampler']} | {r['steps']} | {r['batch']} | {r['nfe']} | "
                         f"{r['wall_s'] * 1e3:.2f} | {r['items_per_s']:.1f} | {us(r['overhead_per_step_s'])} |")
        lines += ["", "One bare call of each problem's denoiser is in results.json (`model_call_s`).", ""]
    for r in result.get("problems", []):
        if "skipped" in r:
            lines += [f"Problem {r['problem']}: skipped — {r['skipped']}", ""]
    stack = result.get("full_stack", [])
    ran = [r for r in stack if "skipped" not in r]
    if ran:
        lines += ["## Full stack: txt2img on the default models (text encode + sampling + decode)", "",
                  "Minimum over runs, on the clock of the µs tables (the thread's CPU time when torch runs on one "
                  "thread).", "",
                  "| model | sampler | steps | batch | encode (ms) | sample (ms) | decode (ms) | total (ms) | images/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ran:
            lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['batch']} | {r['encode_s'] * 1e3:.1f} | "
                         f"{r['sample_s'] * 1e3:.1f} | {r['decode_s'] * 1e3:.1f} | {r['wall_s'] * 1e3:.1f} | "
                         f"{r['images_per_s']:.2f} |")
        lines.append("")
    for r in stack:
        if "skipped" in r:
            lines += [f"Full stack{' (' + r['model'] + ')' if 'model' in r else ''}: skipped — {r['skipped']}", ""]
    lines += [f"Peak resident memory of the benchmark process: {result['max_rss_mb']:.0f} MB. Command: "
              f"`{result['command']}` ({result['wall_s']:.0f} s).", ""]
    return "\n".join(lines)


def report(results: str | Path, write: bool = True) -> str:
    """table.md generated from a run's results.json (written beside it with ``write``)."""
    return common.report(results, markdown, MODULE, write=write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="CUDA dtypes (default float32 float16 bfloat16; the CPU runs float32, so this needs a CUDA "
                        "device)")
    p.add_argument("--samplers", nargs="+", default=None,
                   help="registry names, or 'all' (default: every algorithm diffusers or k-diffusion also has; 'all': "
                        "every non-adaptive one but learned_multistep, Euler without a solver file)")
    p.add_argument("--steps", nargs=2, type=common.step_count, default=None, metavar=("N1", "N2"),
                   help=f"the two step counts of the µs slope, N1 < N2 <= {common.MAX_STEPS} (the pipeline's step "
                        f"limit; default {' '.join(map(str, STEPS))}; {' '.join(map(str, QUICK_STEPS))} with --quick)")
    p.add_argument("--repeats", type=common.positive_int, default=None,
                   help=f"interleaved repeats, the minimum is kept (default {REPEATS}; {QUICK_REPEATS} with --quick)")
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--graph", action="store_true", help="CUDA-graph replay versus eager (CUDA only)")
    p.add_argument("--sd15", action="store_true",
                   help="20 steps of an SD-1.5-shaped diffusers U-Net (random weights, fp16, batch 2; CUDA only)")
    p.add_argument("--full-stack", action=GivenBoolean, default=None,
                   help="time txt2img on the default models (when installed): on by default, off with --quick; "
                        "--full-stack runs it with --quick too, --no-full-stack skips it (not both)")
    p.add_argument("--problem", dest="problems", nargs="+", default=[],
                   help="also time every sampler on these problems (gm-vp-eps, models-eps, module:function, ...)")
    p.add_argument("--problem-steps", type=common.step_count, default=None,
                   help=f"steps of each --problem run, at most {common.MAX_STEPS} (the pipeline's step limit; default "
                        f"{PROBLEM_STEPS}; needs --problem)")
    p.add_argument("--problem-batch", type=common.positive_int, default=None,
                   help=f"items of each --problem run (default {PROBLEM_BATCH}; needs --problem)")
    common.add_threads_option(p)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {', '.join(QUICK_SAMPLERS)}, --steps {' '.join(map(str, QUICK_STEPS))} and "
                        f"--repeats {QUICK_REPEATS} unless given, no full-stack section unless --full-stack")
    p.add_argument("--no-progress", action="store_true")
    common.add_output_options(p, DEFAULT_OUT)
    return p


CUDA_DTYPES = ("float32", "float16", "bfloat16")
PROBLEM_STEPS, PROBLEM_BATCH = 20, 4  # --problem-steps, --problem-batch


def check_args(p: argparse.ArgumentParser, args) -> None:
    """Refuse (``p.error``, exit status 2) before anything is timed: an unknown sampler, a device torch does not
    have here, a dtype that is not one of :data:`CUDA_DTYPES` (or --dtypes, --graph or --sd15 with no CUDA device
    to run them), an unknown problem, --problem-steps / --problem-batch without --problem, --full-stack with
    --no-full-stack, a value listed twice."""
    if args.steps is not None and args.steps[0] >= args.steps[1]:
        p.error(f"--steps {args.steps[0]} {args.steps[1]}: the µs slope needs two step counts N1 < N2, "
                "e.g. --steps 10 50")
    if args.samplers and args.samplers != ["all"]:
        args.samplers = [common.sampler_or_refuse(p, "--samplers", n) for n in args.samplers]
    for name in args.devices or ():
        try:
            device = torch.device(name)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
            p.error(f"--devices {name!r} is not a device this benchmark times: pass cpu, cuda or cuda:<index>")
        if device.type == "cuda":
            if not torch.cuda.is_available():
                p.error(f"--devices {name!r}: no CUDA device is available here: pass cpu")
            if device.index is not None and device.index >= torch.cuda.device_count():
                p.error(f"--devices {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    # the CPU is one device whatever it is called ("cpu:0"): timed and compared as "cpu" (float32 only)
    args.devices = None if args.devices is None else ["cpu" if torch.device(n).type == "cpu" else n
                                                      for n in args.devices]
    for name in args.dtypes or ():
        if name not in CUDA_DTYPES:
            p.error(f"--dtypes {name!r} is not a dtype this benchmark times: pass some of {', '.join(CUDA_DTYPES)}")
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if args.dtypes and not any(d.startswith("cuda") for d in devices):
        p.error("--dtypes applies to CUDA devices (the CPU runs float32) and none will run here: leave it out, or "
                "pass --devices cuda on a machine with one")
    for flag, what in (("--graph", "CUDA-graph replay"), ("--sd15", "the SD-1.5-shaped U-Net")):
        if getattr(args, flag[2:]) and not any(d.startswith("cuda") for d in devices):
            p.error(f"{flag} times {what} on a CUDA device and none will run here (devices: {', '.join(devices)}"
                    + ("" if torch.cuda.is_available() else "; torch sees no CUDA device on this machine")
                    + "): leave it out, or pass --devices cuda on a machine with one")
    common.refuse_unused(
        p, *((value is not None and not args.problems, flag, "sets the runs of --problem and no --problem is given",
              "leave it out, or name the problems to time with --problem")
             for flag, value in (("--problem-steps", args.problem_steps), ("--problem-batch", args.problem_batch))),
        (was_given(args, "full_stack") and was_given(args, "no_full_stack"), "--full-stack",
         "runs the full-stack section and --no-full-stack skips it", "leave out one of them"))
    common.refuse_bad_problems(p, args.problems)
    common.refuse_repeats(p, ("--devices", args.devices, "each device is timed once"),
                          ("--dtypes", args.dtypes, "each dtype is timed once"),
                          ("--samplers", args.samplers, "each sampler is one row"),
                          ("--problem", args.problems, "each problem is timed once"))


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return 0
    check_args(p, args)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    # what the run measures is recorded in results.json's args: an explicit value is used as given
    if args.steps is None:
        args.steps = list(QUICK_STEPS if args.quick else STEPS)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else REPEATS
    if args.full_stack is None:
        args.full_stack = not args.quick
    if args.problem_steps is None:
        args.problem_steps = PROBLEM_STEPS
    if args.problem_batch is None:
        args.problem_batch = PROBLEM_BATCH
    if args.quick:
        args.samplers = args.samplers or [n for n in QUICK_SAMPLERS if n in samplers.available()]
    if args.samplers:
        names = common.sampler_names(args.samplers)
    else:
        names = [n for n in DEFAULT_SAMPLERS if n in samplers.available()]
    out = args.out
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    info = common.run_info(devices[-1])
    try:
        info["versions"]["k-diffusion"] = importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        info["versions"]["k-diffusion"] = None
    cpu = f", {common.cpu_label(info)}" if "gpu" in info and "cpu" in devices else ""
    print(f"device: {common.device_label(info)}{cpu} ({', '.join(devices)}); writing to {out}", flush=True)
    result = {"info": info, "args": common.run_args(args),
              "command": "python -m benchmarks.speed" + "".join(f" {a}" for a in (argv if argv is not None
                                                                                 else sys.argv[1:])),
              "overhead": {}}
    result["ops"] = ops_table(names, args.peers, not args.no_progress)
    result["conversion_ops"] = conversion_ops()
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
            result["unet_note"] = "not run: --sd15 needs a CUDA device"
    if args.full_stack:
        result["full_stack"] = full_stack(devices[-1], [n for n in ("euler", "dpmpp_2m", "euler_ancestral")
                                                        if n in samplers.available()], 20, 4,
                                          max(1, args.repeats // 5))
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["wall_s"] = time.perf_counter() - started
    results = common.write_results(result, out)
    print(report(results))
    print(f"wrote {results}, {results.with_name('table.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SamplerScheduler.step returns the dtypes the diffusers class it stands in for returns (prev_sample and its x0),
for every pair of sample / model output dtypes among float32, float16 and bfloat16, with the class's values.

The reference is diffusers itself, run here on the same loop: the rule the shim follows (``_STEP_DTYPES``) is read
off the classes' sources (Euler and the flow / EDM Euler classes upcast the sample to float32 and cast the result to
the model output's dtype; DPMSolverMultistep casts to its x0's; UniPC and SA-Solver to the sample's; the rest promote).
The shim keeps its sampler state in float32, so in half precision the values differ by the class's own rounding.
"""
from __future__ import annotations

import copy
import inspect
import itertools

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import SD3, SD15, TinyModel, source_scheduler  # noqa: E402
from samplers.interop import diffusers_sources as sources  # noqa: E402
from samplers.interop.diffusers_scheduler import _STEP_DTYPES, SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()
# torchsde's complaint about DPMSolverSDEScheduler's own float32 sigmas (diffusers warns the same without the shim)
pytestmark = pytest.mark.filterwarnings("ignore:Should have ta>=t0:UserWarning")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PAIRS = list(itertools.product(DTYPES, DTYPES))  # (sample, model output)
STEPS = 3
MODEL = TinyModel()
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
# the largest difference, relative to the latents' scale: a few roundings of the least precise dtype involved per
# model call so far (diffusers computes in it, the shim in float32 and rounds once; measured: at most 4 per call),
# and never below the 1e-5 the float32 parity tests allow
ULPS = 8
FLOOR = 1e-5


def config_for(name: str) -> dict:
    if name.startswith("FlowMatch"):
        return SD3
    if name.startswith("EDM"):
        return {}
    return SD15


def loop(scheduler, sample_dtype, output_dtype, steps: int = STEPS):
    """A pipeline's loop that keeps its latents in ``sample_dtype`` and its model's output in ``output_dtype``:
    (prev_sample, the output's second field or None) of every call."""
    torch.manual_seed(0)  # DPMSolverSDE's Brownian tree seed
    generator = torch.Generator().manual_seed(7)
    scheduler.set_timesteps(steps)
    kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    latents = (NOISE * getattr(scheduler, "init_noise_sigma", 1.0)).to(sample_dtype)
    results = []
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
        out = scheduler.step(MODEL(inp.float(), t).to(output_dtype), t, latents, **kw)
        # the output's second field: x0 (pred_original_sample; LCM's denoised) or TCD's pred_noised_sample
        results.append((out.prev_sample, out[1] if len(out) > 1 else None))
        latents = out.prev_sample.to(sample_dtype)  # the next call gets the pair's dtypes again
    return results


def tolerance(calls: int, *dtypes: torch.dtype) -> float:
    return max(FLOOR, calls * ULPS * max(torch.finfo(d).eps for d in dtypes))


def compare(name: str, config: dict, pairs=PAIRS) -> list[str]:
    """Every disagreement between the class and the shim in its place, over the pairs: dtypes, then values."""
    bad = []
    built = source_scheduler(name, config, {})  # once: KDPM2's constructor plans 1000 steps
    for sample_dtype, output_dtype in pairs:
        theirs = copy.deepcopy(built)
        ours = SamplerScheduler.from_config(theirs)
        expected, got = loop(theirs, sample_dtype, output_dtype), loop(ours, sample_dtype, output_dtype)
        pair = f"sample={sample_dtype} model_output={output_dtype}"
        for call, ((prev, x0), (our_prev, our_x0)) in enumerate(zip(expected, got)):
            if our_prev.dtype != prev.dtype:
                bad.append(f"{pair} call {call}: prev_sample {our_prev.dtype}, diffusers {prev.dtype}")
            if x0 is not None and our_x0.dtype != x0.dtype:
                bad.append(f"{pair} call {call}: second field {our_x0.dtype}, diffusers {x0.dtype}")
            for what, a, b in (("prev_sample", prev, our_prev), ("second field", x0, our_x0)):
                if a is None:
                    continue
                scale = max(1.0, a.double().abs().max().item())
                err = (a.double() - b.double()).abs().max().item() / scale
                tol = tolerance(call + 1, sample_dtype, output_dtype, a.dtype)
                if not err <= tol:
                    bad.append(f"{pair} call {call}: {what} differs by {err:.2e} of its scale (> {tol:.1e})")
    return bad


def test_every_source_class_has_a_rule():
    assert set(_STEP_DTYPES) == set(sources.SOURCES)


@pytest.mark.parametrize("name", sorted(sources.SOURCES))
def test_step_returns_the_dtypes_and_values_of_the_class(name):
    bad = compare(name, config_for(name))
    assert not bad, f"{name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "LCMScheduler"])
def test_an_x0_model_output_is_the_x0_the_class_returns(name):
    # prediction_type="sample": the class's x0 is the model output itself (its dtype), except LCM's, which mixes in
    # the sample; DPMSolverMultistep's prev_sample follows its x0
    pairs = [(torch.float32, torch.float16), (torch.float16, torch.float32), (torch.bfloat16, torch.float16)]
    bad = compare(name, {**SD15, "prediction_type": "sample"}, pairs)
    assert not bad, f"{name}:\n" + "\n".join(bad)


# What docs/diffusers.md states of half precision: the final latents against diffusers' own half-precision run, a
# toy eps / flow model, 10 steps, eight classes (the shim keeps a float32 state where diffusers rounds every step).
HALF = {torch.float16: 2.2e-3, torch.bfloat16: 1.7e-2}  # the largest (Heun, UniPC); diffusers' own fp16: 2.5e-3
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
HALF_CLASSES = [("EulerDiscreteScheduler", SD_BETAS), ("HeunDiscreteScheduler", SD_BETAS),
                ("UniPCMultistepScheduler", SD_BETAS), ("DEISMultistepScheduler", SD_BETAS),
                ("DPMSolverMultistepScheduler", SD_BETAS), ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
                ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}), ("EDMDPMSolverMultistepScheduler", {})]


def _half_run(scheduler, x, steps=10):
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(7)
    lat = x * getattr(scheduler, "init_noise_sigma", 1.0)  # FlowMatch classes have none: unit noise
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(lat, t) if hasattr(scheduler, "scale_model_input") else lat
        out = (torch.tanh(inp.float() * 0.3) * (0.8 + torch.as_tensor(t, dtype=torch.float32) / 2000.0)).to(inp.dtype)
        kw = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
        lat = scheduler.step(out, t, lat, **kw).prev_sample
    return lat.double()


@pytest.mark.parametrize("dtype", list(HALF))
def test_half_precision_stays_within_what_the_docs_say(dtype):
    import diffusers

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    gaps, own = {}, {}
    for name, config in HALF_CLASSES:
        def make():
            return getattr(diffusers, name)(**config)
        theirs = _half_run(make(), x.to(dtype))
        ours = _half_run(SamplerScheduler.from_config({**make().config, "_class_name": name}), x.to(dtype))
        full = _half_run(make(), x)
        scale = max(1.0, float(full.abs().max()))  # the float32 run's scale
        gaps[name] = float((ours - theirs).abs().max()) / scale
        own[name] = float((theirs - full).abs().max()) / scale
        # the float32 state keeps the shim's run nearer the float32 one than diffusers' own half run: the latent a
        # step returned is rounded for the pipeline, not for the next x0 (FlowMatchHeun in fp16 was 3.9e-3 from it,
        # 4× diffusers' own 9.5e-4, when x0 was taken from the rounded latent)
        assert float((ours - full).abs().max()) / scale <= own[name], (name, float((ours - full).abs().max()), own)
    assert max(gaps.values()) <= 1.2 * HALF[dtype], gaps
    if dtype == torch.float16:
        assert max(own.values()) <= 1.2 * 2.5e-3, own


# docs/diffusers.md, half precision with thresholding=True (dynamic thresholding of x0; sample_max_value 1.5, ratio
# 0.9), measured apart: the same toy model and loop, seven classes that threshold, eps and v models. Diffusers'
# own half-precision run is as far from its float32 run (fp16: 4.8e-3), and the shim stays within 1.5× of that.
THRESHOLD = {torch.float16: 4.9e-3, torch.bfloat16: 3.2e-2}
THRESHOLD_CONFIG = dict(thresholding=True, sample_max_value=1.5, dynamic_thresholding_ratio=0.9)
THRESHOLD_CLASSES = ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
                     "DPMSolverSinglestepScheduler", "SASolverScheduler", "DDPMScheduler", "LCMScheduler"]


@pytest.mark.parametrize("dtype", list(THRESHOLD))
def test_half_precision_with_thresholding_stays_within_what_the_docs_say(dtype):
    import diffusers

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    gaps, own = {}, {}
    for name in THRESHOLD_CLASSES:
        for prediction in ("epsilon", "v_prediction"):
            config = {**SD_BETAS, **THRESHOLD_CONFIG, "prediction_type": prediction}

            def make():
                return getattr(diffusers, name)(**config)
            theirs = _half_run(make(), x.to(dtype))
            ours = _half_run(SamplerScheduler.from_config({**make().config, "_class_name": name}), x.to(dtype))
            full = _half_run(make(), x)
            scale = max(1.0, float(full.abs().max()))
            gaps[name, prediction] = float((ours - theirs).abs().max()) / scale
            own[name, prediction] = float((theirs - full).abs().max()) / scale
    assert max(gaps.values()) <= THRESHOLD[dtype], gaps
    assert max(gaps.values()) <= 1.5 * max(own.values()), (gaps, own)


# docs/diffusers.md, float32 latents with a half-precision model output (video pipelines: float32 latents, a bf16
# transformer): diffusers multiplies its float32 0-d coefficients by the half output in half precision (σ·ε̂ rounded
# to the output's dtype) before it meets the float32 latent; the shim converts the output to float32 (exactly) first
# and steps in float32. Every source class, eps and v, the toy model of _half_run, 10 steps, latents kept in float32.
HALF_OUTPUT = {torch.float16: 1.2e-3, torch.bfloat16: 9.1e-3}  # the largest: EulerAncestral, v
HALF_OUTPUT_OWN = {torch.float16: 1.2e-3, torch.bfloat16: 1.6e-2}  # diffusers' own, from its float32-output run
# the classes' spacings that run without a refusal on these betas (DDIM's default clip_sample is refused)
_TRAILING = {"timestep_spacing": "trailing", "clip_sample": False}
HALF_OUTPUT_CONFIGS = {"DDIMScheduler": _TRAILING, "DDPMScheduler": _TRAILING, "LCMScheduler": _TRAILING,
                       "TCDScheduler": _TRAILING, "PNDMScheduler": {"timestep_spacing": "trailing", "skip_prk_steps": True}}


def _half_output_run(scheduler, x, dtype, steps=10):
    torch.manual_seed(0)  # DPMSolverSDE's Brownian tree seed
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(7)
    lat = x * getattr(scheduler, "init_noise_sigma", 1.0)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(lat, t) if hasattr(scheduler, "scale_model_input") else lat
        out = (torch.tanh(inp.float() * 0.3) * (0.8 + torch.as_tensor(t, dtype=torch.float32) / 2000.0)).to(dtype)
        kw = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
        lat = scheduler.step(out, t, lat, **kw).prev_sample.float()  # the pipeline keeps float32 latents
    return lat.double()


@pytest.mark.parametrize("dtype", list(HALF_OUTPUT))
def test_a_half_model_output_on_float32_latents_stays_within_what_the_docs_say(dtype):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    gaps, own = {}, {}
    for name in sorted(sources.SOURCES):
        for prediction in ("epsilon",) if name.startswith("FlowMatch") else ("epsilon", "v_prediction"):
            if name == "PNDMScheduler" and prediction == "v_prediction":
                continue  # refused by the shim (PNDM combines raw v-predictions)
            if name.startswith("FlowMatch"):
                config = {"shift": 3.0}
            elif name.startswith("EDM"):
                config = {"prediction_type": prediction}
            else:
                config = {**SD_BETAS, "prediction_type": prediction, **HALF_OUTPUT_CONFIGS.get(name, {})}

            def make():
                return getattr(diffusers, name)(**config)
            theirs = _half_output_run(make(), x, dtype)
            ours = _half_output_run(SamplerScheduler.from_config({**make().config, "_class_name": name}), x, dtype)
            full = _half_output_run(make(), x, torch.float32)
            scale = max(1.0, float(full.abs().max()))
            gaps[name, prediction] = float((ours - theirs).abs().max()) / scale
            own[name, prediction] = float((theirs - full).abs().max()) / scale
    assert max(gaps.values()) <= HALF_OUTPUT[dtype], gaps
    assert max(own.values()) <= HALF_OUTPUT_OWN[dtype], own
    # a difference of diffusers' rounding, not of the run: it is not far above what that rounding itself moves
    assert max(gaps.values()) <= 1.2 * max(own.values()), (gaps, own)

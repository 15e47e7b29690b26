"""SamplerScheduler at its seams: configs that leave keys out, and inputs refused at the boundary, never coerced
or dropped (seed, from_config keyword arguments, schedule_options, set_timesteps' sigmas / timesteps, DDIM's eta)."""
from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType, Unavailable

diffusers = pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,  # noqa: E402
                       EulerDiscreteScheduler)

from samplers.interop import diffusers_sources as sources  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

BETAS = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000}
SDXL = {"_class_name": "EulerDiscreteScheduler", **BETAS, "prediction_type": "epsilon", "steps_offset": 1,
        "timestep_spacing": "leading", "use_karras_sigmas": False}


def loop(scheduler, steps=5):
    """The pipelines' loop on an eps model whose x0 leaves [-1, 1] (so clip_sample / thresholding change it)."""
    torch.manual_seed(2)  # DPMSolverSDE seeds its Brownian tree from torch's global generator
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    extra = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}  # as pipelines do
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)) * getattr(scheduler, "init_noise_sigma", 1)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)  # FlowMatch classes have none
    for t in scheduler.timesteps:
        out = 0.3 * scale(x, t)
        x = scheduler.step(out, t, x, **extra).prev_sample
    return x


# ----------------------------------------------------------------------------------------------------
# A partial config: the class's defaults, as diffusers fills them in


# PNDM's default run (PRK warm-up, steps_offset=0, set_alpha_to_one=False) ends with a zero-length step; DDIM's default
# clip_sample=True is refused (below)
PARTIAL = sorted(set(sources.SOURCES) - {"DDIMScheduler", "PNDMScheduler"})


@pytest.mark.parametrize("name", PARTIAL)
def test_a_config_holding_only_the_beta_keys_runs_as_diffusers_built_from_it(name):
    # an older scheduler_config.json (or a dict) that leaves keys out: diffusers fills in the class's defaults
    # (DDPM: clip_sample=True, variance_type='fixed_small'; DPM-Solver: algorithm_type='dpmsolver++'; ...)
    config = {"_class_name": name} if name.startswith(("EDM", "FlowMatch")) else {"_class_name": name, **BETAS}
    theirs = loop(getattr(diffusers, name).from_config(config))
    ours = loop(SamplerScheduler.from_config(config))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


def test_a_partial_ddpm_config_clips_as_diffusers_does():
    config = {"_class_name": "DDPMScheduler", **BETAS}
    theirs = loop(diffusers.DDPMScheduler.from_config(config))
    assert theirs.abs().max() <= 1.0 + 1e-6  # diffusers' default clip_sample=True bites on this model
    torch.testing.assert_close(loop(SamplerScheduler.from_config(config)), theirs, rtol=0, atol=2e-5)
    unclipped = {**config, "clip_sample": False}
    torch.testing.assert_close(loop(SamplerScheduler.from_config(unclipped)),
                               loop(diffusers.DDPMScheduler.from_config(unclipped)), rtol=0, atol=2e-5)


def test_a_partial_ddim_config_is_refused_for_its_default_clip_sample():
    config = {"_class_name": "DDIMScheduler", **BETAS}
    with pytest.raises(InvalidOption, match=r"clip_sample=True \(the DDIMScheduler default"):
        SamplerScheduler.from_config(config)
    ok = {**config, "clip_sample": False}
    torch.testing.assert_close(loop(SamplerScheduler.from_config(ok)), loop(diffusers.DDIMScheduler.from_config(ok)),
                               rtol=0, atol=2e-5)


# ----------------------------------------------------------------------------------------------------
# seed


@pytest.mark.parametrize("seed, error", [(1.5, InvalidType), (1.0, InvalidType), ("1", InvalidType),
                                         (True, InvalidType), ([1, 2], InvalidType), (-1, InvalidInput),
                                         (2**64, InvalidInput)])
def test_a_seed_that_is_not_an_integer_in_range_is_refused_in_the_constructor(seed, error):
    config = EulerAncestralDiscreteScheduler.from_config(SDXL).config
    with pytest.raises(error, match="seed"):
        SamplerScheduler.from_config(config, seed=seed)
    with pytest.raises(error, match="seed"):
        SamplerScheduler(sampler="euler_ancestral", seed=seed)


def test_an_integer_seed_runs():
    config = EulerAncestralDiscreteScheduler.from_config(SDXL).config
    a, b = (loop(SamplerScheduler.from_config(config, seed=seed)) for seed in (7, 7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# set_timesteps without a source class: sigmas / timesteps as diffusers takes them, or refused by name


def registry(**kw):
    return SamplerScheduler(sampler="euler", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **kw)


def test_num_inference_steps_with_sigmas_or_timesteps_follows_diffusers_rules():
    with pytest.raises(ValueError, match="one of"):  # diffusers' Euler refuses both
        EulerDiscreteScheduler.from_config(SDXL).set_timesteps(10, sigmas=[14.6, 5.0, 1.0, 0.0])
    for kw in (dict(sigmas=[14.6, 5.0, 1.0, 0.0]), dict(timesteps=[999, 500, 100])):
        with pytest.raises(InvalidInput, match="num_inference_steps=10"):
            registry().set_timesteps(10, **kw)
        s = registry()
        s.set_timesteps(**kw)
        assert s.num_inference_steps == 3
    flow = SamplerScheduler(sampler="euler", noise_schedule="flow", shift=3.0)  # FlowMatchEuler: they must agree
    flow.set_timesteps(2, sigmas=[1.0, 0.5])
    with pytest.raises(InvalidInput, match="num_inference_steps=3 but 2 sigmas"):
        flow.set_timesteps(3, sigmas=[1.0, 0.5])


@pytest.mark.parametrize("timesteps, match", [([5000, 10], r"timesteps\[0\] = 5000 is outside \[0, 999\]"),
                                              ([-5, 10], r"timesteps\[0\] = -5"),
                                              ([999, 500, float("nan")], r"timesteps\[2\] = nan"),
                                              ([10, 500, 999], "timesteps must be strictly decreasing")])
def test_timesteps_outside_the_training_range_are_refused_not_clamped(timesteps, match):
    with pytest.raises(InvalidInput, match=match):
        registry().set_timesteps(timesteps=timesteps)


def test_flow_sigmas_outside_zero_one_are_refused():
    for bad, match in (([1.5, 0.5], r"sigmas\[0\] = 1.5"), ([1.0, 0.0], r"sigmas\[1\] = 0"),
                       ([1.0, 1500.0], r"sigmas\[1\]")):
        with pytest.raises(InvalidInput, match=match):
            SamplerScheduler(sampler="euler", noise_schedule="flow", shift=3.0).set_timesteps(sigmas=bad)
    with pytest.raises(InvalidInput, match=r"timesteps\[0\] = 1500 is outside \(0, 1000\]"):
        SamplerScheduler(sampler="euler", noise_schedule="flow", shift=3.0).set_timesteps(timesteps=[1500, 500])


# ----------------------------------------------------------------------------------------------------
# from_config keyword arguments and schedule_options: nothing dropped


def test_from_config_refuses_a_keyword_argument_nothing_reads():
    config = EulerDiscreteScheduler.from_config(SDXL).config
    with pytest.raises(InvalidOption, match=r"'use_karas_sigmas' \(did you mean 'use_karras_sigmas'\?\)"):
        SamplerScheduler.from_config(config, use_karas_sigmas=True)
    with pytest.raises(InvalidOption, match="'foo'"):
        SamplerScheduler.from_config(config, foo=3)
    with pytest.raises(InvalidOption, match="'clip_sample'"):  # SamplerScheduler's key, but Euler's run ignores it
        SamplerScheduler.from_config(config, sampler="heun", clip_sample=True)
    with pytest.raises(InvalidOption, match="'foo'"):  # without a source class
        SamplerScheduler.from_config(config, sampler="euler", source_config={}, foo=3)
    shim = SamplerScheduler.from_config(config, use_karras_sigmas=True)  # Euler's own option: its run uses it
    shim.set_timesteps(5)
    theirs = EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True)
    theirs.set_timesteps(5)
    assert torch.equal(shim.timesteps, theirs.timesteps)
    _, unused = SamplerScheduler.from_config(config, return_unused_kwargs=True, foo=3)  # handed back: not dropped
    assert unused["foo"] == 3


def test_a_saved_scheduler_passes_its_source_class_options_on(tmp_path):
    config = EulerDiscreteScheduler.from_config(SDXL).config
    SamplerScheduler.from_config(config).save_pretrained(tmp_path)
    back = SamplerScheduler.from_pretrained(tmp_path, use_karras_sigmas=True)
    back.set_timesteps(5)
    theirs = EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True)
    theirs.set_timesteps(5)
    assert torch.equal(back.timesteps, theirs.timesteps)
    with pytest.raises(InvalidOption, match="use_karas_sigmas"):
        SamplerScheduler.from_pretrained(tmp_path, use_karas_sigmas=True)


def test_schedule_options_are_refused_where_no_schedule_reads_them():
    config = EulerDiscreteScheduler.from_config(SDXL).config
    with pytest.raises(InvalidOption, match="schedule=None runs EulerDiscreteScheduler's own"):
        SamplerScheduler.from_config(config, schedule_options={"rho": 3.0})
    with pytest.raises(InvalidOption, match=r"'roh' \(did you mean 'rho'\?\)"):
        SamplerScheduler.from_config(config, schedule="karras", schedule_options={"roh": 3.0})
    with pytest.raises(InvalidOption, match="no option 'rho'"):  # linspace spacing without a source class
        registry(schedule_options={"rho": 3.0})
    with pytest.raises(InvalidOption, match="FlowMatchEulerDiscreteScheduler's grid"):
        SamplerScheduler(sampler="euler", noise_schedule="flow", shift=3.0, schedule_options={"rho": 3.0})
    a = SamplerScheduler.from_config(config, schedule="karras", schedule_options={"rho": 3.0})
    b = SamplerScheduler.from_config(config, schedule="karras")
    a.set_timesteps(5)
    b.set_timesteps(5)
    assert not torch.equal(a.schedule_sigmas, b.schedule_sigmas)
    karras = registry(use_karras_sigmas=True, schedule_options={"rho": 3.0})  # karras from the config's flag
    karras.set_timesteps(5)
    torch.testing.assert_close(karras.schedule_sigmas, a.schedule_sigmas, rtol=1e-4, atol=0)  # (float32 table)


# ----------------------------------------------------------------------------------------------------
# DDIM's eta


DDIM_SD = {"_class_name": "DDIMScheduler", **BETAS, "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False}


def ddim_run(scheduler, eta):
    scheduler.set_timesteps(4)
    x, g = torch.ones(1, 4, 2, 2), torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        x = scheduler.step(0.1 * x, t, x, eta=eta, generator=g).prev_sample
    return x


@pytest.mark.parametrize("eta, error", [("0.5", InvalidType), (True, InvalidType), (float("nan"), InvalidOption),
                                        (-1.0, InvalidOption), (1.2, InvalidOption)])
def test_ddim_eta_that_is_not_a_number_in_range_is_refused(eta, error):
    with pytest.raises(error, match="eta"):
        ddim_run(SamplerScheduler.from_config(DDIMScheduler.from_config(DDIM_SD).config), eta)


def test_ddim_eta_up_to_one_matches_diffusers_and_above_is_nan_there():
    for eta in (0.5, 1.0):
        ours = ddim_run(SamplerScheduler.from_config(DDIMScheduler.from_config(DDIM_SD).config), eta)
        torch.testing.assert_close(ours, ddim_run(DDIMScheduler.from_config(DDIM_SD), eta), rtol=0, atol=1e-5)
    assert torch.isnan(ddim_run(DDIMScheduler.from_config(DDIM_SD), 1.2)).all()  # what the refusal spares


# ----------------------------------------------------------------------------------------------------
# a schedule chosen for the scheduler against sigmas a pipeline passes


def test_a_chosen_schedule_is_not_replaced_by_sigmas_the_pipeline_passes():
    import numpy as np

    flux = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    mine = SamplerScheduler.from_config(flux, sampler="dpmpp_2m", schedule="karras",
                                        schedule_options={"sigma_max": 80.0})
    mine.set_timesteps(8)
    chosen = mine.sigmas.clone()
    # FluxPipeline passes np.linspace(1, 1/n, n) when it is given no sigmas: that is only the step count
    mine.set_timesteps(sigmas=np.linspace(1.0, 1 / 8, 8))
    assert torch.equal(mine.sigmas, chosen)
    with pytest.raises(InvalidOption, match="runs the 'karras' schedule .* set_timesteps got sigmas of its own"):
        mine.set_timesteps(sigmas=np.linspace(1.0, 0.2, 8))  # a user's own sigmas: which one runs is not guessed
    with pytest.raises(InvalidInput, match="must agree"):
        mine.set_timesteps(7, sigmas=np.linspace(1.0, 1 / 8, 8))
    plain = SamplerScheduler.from_config(flux, sampler="dpmpp_2m")  # no schedule chosen: the given sigmas run
    plain.set_timesteps(sigmas=np.linspace(1.0, 0.2, 8))
    assert len(plain.sigmas) == 9 and float(plain.sigmas[0]) == 1.0
    vp = {k: v for k, v in SDXL.items() if k != "_class_name"}
    with pytest.raises(InvalidOption, match="set_timesteps got timesteps of its own"):
        SamplerScheduler.from_config(vp, sampler="dpmpp_2m", schedule="karras").set_timesteps(
            timesteps=[999, 500, 100])
    # a label's default schedule (A1111's "DPM++ 2M" on Karras) yields to the caller's, as everywhere
    SamplerScheduler.from_config(vp, sampler="DPM++ 2M").set_timesteps(timesteps=[999, 500, 100])


@pytest.mark.parametrize("name", ["PNDMScheduler", "DDIMScheduler"])
def test_a_last_step_of_zero_length_is_refused_by_name(name):
    """steps_offset=0 with set_alpha_to_one=False (the classes' defaults but for DDIM's alpha): the last step goes
    from timestep 0 to ᾱ[0] itself. It was refused as 'sigmas must be strictly decreasing', naming no config key."""
    config = {"_class_name": name, **BETAS, "set_alpha_to_one": False, "clip_sample": False}
    with pytest.raises(Unavailable, match="ends with a step of zero length.*steps_offset=1"):
        SamplerScheduler.from_config(config).set_timesteps(10)
    SamplerScheduler.from_config({**config, "steps_offset": 1}).set_timesteps(10)


# ----------------------------------------------------------------------------------------------------
# a config rewritten after construction (StableDiffusionPipeline's steps_offset / clip_sample fixes)

def test_a_rewritten_config_is_followed_as_the_class_follows_it():
    from diffusers import DDPMScheduler
    from diffusers.configuration_utils import FrozenDict

    theirs, ours = DDPMScheduler(**BETAS), SamplerScheduler.from_config(DDPMScheduler(**BETAS).config)
    assert ours.config.clip_sample is True  # the source class's value (the key was left to its default)
    for s in (theirs, ours):
        s._internal_dict = FrozenDict({**s.config, "clip_sample": False, "steps_offset": 1})  # as the pipeline does
    torch.testing.assert_close(loop(ours), loop(theirs), rtol=0, atol=1e-5)
    assert ours.config.source_config["clip_sample"] is False and ours.config.source_config["steps_offset"] == 1
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    theirs.register_to_config(clip_sample=True)
    ours.register_to_config(clip_sample=True)
    torch.testing.assert_close(loop(ours), loop(theirs), rtol=0, atol=1e-5)


def test_a_rewritten_config_is_checked_again_before_any_model_call():
    ours = SamplerScheduler.from_config(DDIMScheduler(**BETAS, steps_offset=1, clip_sample=False).config)
    ours.set_timesteps(5)
    ours.register_to_config(prediction_type="x0")
    with pytest.raises(InvalidOption, match="changed after it was built.*prediction_type.*'x0'"):
        ours.set_timesteps(5)


# ----------------------------------------------------------------------------------------------------
# add_noise reads its timesteps as the replaced class does

@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler", "LCMScheduler", "EulerDiscreteScheduler",
                                  "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("begin", [None, 2])
def test_add_noise_reads_the_timesteps_as_the_class_does(name, begin):
    cls = getattr(diffusers, name)
    theirs = cls(**BETAS, steps_offset=1, **({"clip_sample": False} if name == "DDIMScheduler" else {}))
    ours = SamplerScheduler.from_config(theirs)  # LCM's .config alone is also TCD's
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    out = []
    for s in (theirs, ours):
        s.set_timesteps(10)
        ts = s.timesteps
        if begin is not None and hasattr(s, "set_begin_index"):  # img2img / inpaint pipelines call it
            s.set_begin_index(begin)
        picked = torch.stack([ts[3], ts[6]])
        first = s.add_noise(x0, noise, picked)
        t0 = ts[begin or 0]
        s.step(torch.zeros_like(x0), t0, s.scale_model_input(x0 * s.init_noise_sigma, t0))
        out.append((first, s.add_noise(x0, noise, picked)))  # inpaint: after a step, per-item timesteps
    for mine, ref in zip(out[1], out[0]):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)


def _noise_config(name):
    if name.startswith("FlowMatch"):
        return {"_class_name": name, "shift": 3.0}
    if name.startswith("EDM"):
        return {"_class_name": name}
    return {"_class_name": name, **BETAS, "steps_offset": 1, "clip_sample": False}


# PNDM has no set_begin_index (refused for img2img / inpaint)
INPAINT = sorted(set(sources.SOURCES) - {"PNDMScheduler"})


@pytest.mark.parametrize("name", INPAINT)
def test_add_noise_in_the_inpaint_loop_is_the_classes_after_every_step(name):
    # StableDiffusionInpaintPipeline (4-channel UNet) blends add_noise(x0, noise, t_next) into the unmasked region
    # after every step; after set_begin_index the classes read sigmas[step_index] from their own table (KDPM2's odd
    # entries hold σ_{i+1}, not the interpolated σ its model call is at: it was 0.79 off in the final latents)
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    theirs = getattr(diffusers, name).from_config(_noise_config(name))
    seen = []
    for s in (theirs, SamplerScheduler.from_config(theirs.config)):
        torch.manual_seed(2)
        g = torch.Generator().manual_seed(3)
        extra = {"generator": g} if "generator" in inspect.signature(s.step).parameters else {}
        noised = getattr(s, "add_noise", None) or (lambda a, n, t, s=s: s.scale_noise(a, t, n))
        s.set_timesteps(6)
        begin = 2 * s.order
        ts = s.timesteps[begin:]
        if hasattr(s, "set_begin_index"):  # the pipelines call it where the class has it (DDIM, DDPM, LCM: none)
            s.set_begin_index(begin)
        x = noised(x0, noise, ts[:1])
        got = [x]
        for i, t in enumerate(ts):
            inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            x = s.step(0.3 * inp, t, x, **extra, return_dict=False)[0]
            if i < len(ts) - 1:
                got.append(noised(x0, noise, ts[i + 1:i + 2]))
        seen.append(got)
    assert len(seen[0]) == len(seen[1])
    for k, (mine, ref) in enumerate(zip(seen[1], seen[0])):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5, msg=f"{name}: add_noise after step {k}")


@pytest.mark.parametrize("name", INPAINT)
def test_add_noise_without_set_begin_index_finds_each_timestep_as_the_class_does(name):
    # a pipeline that never calls set_begin_index (or training code): each timestep is looked up by value
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    theirs = getattr(diffusers, name).from_config(_noise_config(name))
    ours = SamplerScheduler.from_config(theirs.config)
    for s in (theirs, ours):
        s.set_timesteps(6)
    for t in theirs.timesteps:
        if name in sources.ADD_NOISE_BY_STEP:
            continue  # FlowMatchHeun reads its step index, not the timestep
        add = [getattr(s, "add_noise", None) or (lambda a, n, t, s=s: s.scale_noise(a, t, n)) for s in (theirs, ours)]
        ref, mine = (f(x0, noise, t.reshape(1)) for f in add)
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5, msg=f"{name} at t = {float(t)}")


@pytest.mark.parametrize("name", sorted(sources.SOURCES))
@pytest.mark.parametrize("begin", [None, 1])
def test_step_index_and_the_step_tuple_are_the_classes(name, begin):
    # Euler, Heun, KDPM2, LMS, ... set their step index in scale_model_input (a pipeline reads step_index == 0 before
    # the first step); with return_dict=False the multistep classes return (prev_sample,), the others (prev, x0)
    theirs = getattr(diffusers, name).from_config(_noise_config(name))
    seen = []
    for s in (theirs, SamplerScheduler.from_config(theirs.config)):
        s.set_timesteps(4)
        start = 0
        if begin is not None and hasattr(theirs, "set_begin_index"):
            start = begin * s.order
            s.set_begin_index(start)
        g = torch.Generator().manual_seed(3)
        extra = {"generator": g} if "generator" in inspect.signature(s.step).parameters else {}
        x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
        got = []
        for t in s.timesteps[start:]:
            inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            index = getattr(theirs, "step_index", "none") if s is theirs else s.step_index
            if not hasattr(theirs, "step_index"):
                index = "none"  # DDIM, DDPM, PNDM keep no step index
            out = s.step(0.3 * inp, t, x, **extra, return_dict=False)
            got.append((index, len(out)))
            x = out[0]
        seen.append(got)
    assert seen[1] == seen[0]


@pytest.mark.parametrize("name", sorted(sources.SOURCES))
def test_the_step_output_has_the_classes_fields(name):
    # user code reads the fields by name: LCM's x0 is `denoised`, TCD's second field its `pred_noised_sample`; the
    # class's fields come first, in its order (a pipeline may index the output); the prev-only classes' outputs
    # carry the x0 as well (pred_original_sample)
    theirs = getattr(diffusers, name).from_config(_noise_config(name))
    fields = []
    for s in (theirs, SamplerScheduler.from_config(theirs.config)):
        s.set_timesteps(4)  # PNDM's own set_timesteps fails at 3 with skip_prk_steps=False
        x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
        t = s.timesteps[0]
        extra = {"generator": torch.Generator().manual_seed(3)} if "generator" in inspect.signature(s.step).parameters else {}
        inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        fields.append([f.name for f in dataclasses.fields(s.step(0.3 * inp, t, x, **extra))])
    assert fields[1][:len(fields[0])] == fields[0]
    assert fields[1] == fields[0] or (name in sources.STEP_RETURNS_PREV_ONLY
                                      and fields[1] == ["prev_sample", "pred_original_sample"])


def test_the_add_noise_tables_match_diffusers_sources():
    import inspect as inspect_

    from diffusers import schedulers as ds

    for name in sources.SOURCES:
        cls = getattr(ds, name)
        code = inspect_.getsource(getattr(cls, "add_noise", None) or cls.scale_noise)
        reads_begin, reads_step = "begin_index" in code, "step_index" in code
        assert (name in sources.ADD_NOISE_BY_TIMESTEPS) == (not reads_begin and not reads_step), name
        assert (name in sources.ADD_NOISE_BY_STEP) == (reads_step and not reads_begin), name


@pytest.mark.parametrize("config", [SDXL, {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}],
                         ids=["vp", "flow"])
def test_a_step_eta_without_a_use_is_refused_with_a_fix_that_runs(config):
    import re

    ours = SamplerScheduler.from_config(config)
    ours.set_timesteps(4)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * ours.init_noise_sigma
    with pytest.raises(InvalidOption, match="has no eta. Leave the pipeline's eta out") as refused:
        ours.step(torch.zeros_like(x), ours.timesteps[0], x, eta=0.5)
    fix = re.search(r"SamplerScheduler\.from_config\(config, (.*)\)$", str(refused.value)).group(1)
    fixed = eval(f"SamplerScheduler.from_config(config, {fix})")  # the fix as the message writes it
    fixed.set_timesteps(4)
    x = x / ours.init_noise_sigma * fixed.init_noise_sigma
    for t in fixed.timesteps:  # the pipeline's eta left out, as the message says
        x = fixed.step(0.1 * fixed.scale_model_input(x, t), t, x).prev_sample
    assert torch.isfinite(x).all() and fixed.spec.name.startswith("euler_ancestral")
    # a sampler that takes eta: sampler_options, in one place
    named = SamplerScheduler.from_config(config, sampler=fixed.spec.name)
    named.set_timesteps(4)
    with pytest.raises(InvalidOption, match=r"pass sampler_options=\{'eta': 0.5\} to the scheduler instead"):
        named.step(torch.zeros_like(x), named.timesteps[0], x, eta=0.5)
    with pytest.raises(InvalidOption, match="already sets eta=0.5: pass it in one place"):
        fixed.set_timesteps(4)
        fixed.step(torch.zeros_like(x), fixed.timesteps[0], x, eta=0.7)
    fixed.set_timesteps(4)  # the same η in both places changes nothing: it runs
    fixed.step(torch.zeros_like(x), fixed.timesteps[0], x, eta=0.5)


# ---- a tool's names in the shim: its schedule names and a label's dropped σ

def _plain_sd15():
    """An SD-1.5 config with no scheduler class: the shim builds a registry schedule."""
    config = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    return {k: v for k, v in config.items() if k != "_class_name"}


@pytest.mark.parametrize("schedule", ["Beta", "a1111:KL Optimal", "comfyui:ddim_uniform", "KL Optimal"])
def test_a_tools_schedule_name_runs_that_tools_schedule(schedule):
    import samplers
    from samplers.core import names

    shim = SamplerScheduler.from_config(_plain_sd15(), sampler="euler", schedule=schedule)
    shim.set_timesteps(7)
    name, options = names.resolve_schedule(schedule)
    want = samplers.get_sigmas(name, 7, native=shim.native, **options)
    torch.testing.assert_close(torch.as_tensor(shim.sigmas, dtype=torch.float64), want, rtol=1e-6, atol=0)


def test_a_label_that_drops_the_next_to_last_sigma_does_so_in_the_shim_or_is_refused():
    import samplers

    shim = SamplerScheduler.from_config(_plain_sd15(), sampler="comfyui:uni_pc", schedule="karras")
    shim.set_timesteps(5)
    full = samplers.get_sigmas("karras", 6, native=shim.native)
    torch.testing.assert_close(torch.as_tensor(shim.sigmas, dtype=torch.float64), torch.cat([full[:-2], full[-1:]]),
                               rtol=1e-6, atol=0)
    with pytest.raises(InvalidOption, match="drops the next-to-last σ .* EulerDiscreteScheduler's own timesteps"):
        SamplerScheduler.from_config(EulerDiscreteScheduler().config, sampler="DPM2")


def test_a_labels_default_schedule_gives_way_to_a_flow_configs_grid_and_discards_on_a_grid_the_shim_builds():
    flow = {"num_train_timesteps": 1000, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
            "flow_shift": 3.0}
    plain = SamplerScheduler.from_config(flow, sampler="euler_ancestral")
    plain.set_timesteps(10)
    for label in ("Euler a", "LCM"):  # A1111's Automatic (Uniform) has no meaning on a flow model: the config's grid
        shim = SamplerScheduler.from_config(flow, sampler=label)
        shim.set_timesteps(10)
        assert torch.equal(torch.as_tensor(shim.sigmas), torch.as_tensor(plain.sigmas)), label
    with pytest.raises(InvalidOption, match="this flow config's grid"):
        SamplerScheduler.from_config(flow, sampler="comfyui:dpm_2")
    vp = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              prediction_type="epsilon")
    shim = SamplerScheduler.from_config(vp, sampler="uni_pc")  # the shim builds this grid: it drops σ_{n-1} there
    shim.set_timesteps(10)
    assert len(shim.timesteps) == 10


# ----------------------------------------------------------------------------------------------------
# inputs refused by name where diffusers' classes fail with a plain error, or silently do something else


def _euler_pair(cls=EulerDiscreteScheduler):
    theirs = cls(**{k: v for k, v in BETAS.items()})
    ours = SamplerScheduler.from_config(theirs.config)
    for s in (theirs, ours):
        s.set_timesteps(5)
    return theirs, ours


X0 = torch.ones(1, 4, 4, 4)
NOISE1 = torch.ones(1, 4, 4, 4)


@pytest.mark.parametrize("t", [[5000], [1000], [10**9], [-5], [123]])
def test_add_noise_refuses_a_timestep_euler_cannot_find_rather_than_clamping_it(t):
    theirs, ours = _euler_pair()
    with pytest.raises(IndexError):  # Euler looks the timestep up among its run's: not there
        theirs.add_noise(X0, NOISE1, torch.tensor(t))
    with pytest.raises(InvalidInput, match=r"add_noise\(\) got timestep " + re.escape(f"{t[0]:g}") + r".*not one of this run's timesteps"):
        ours.add_noise(X0, NOISE1, torch.tensor(t))
    ours.add_noise(X0, NOISE1, ours.timesteps[:1])  # the run's own timestep still runs


@pytest.mark.parametrize("t, match", [([5000], r"outside the model's training timesteps \[0, 999\]"),
                                      ([1000], r"outside the model's training timesteps"),
                                      ([-5], r"outside the model's training timesteps"),
                                      ([0.5], r"not an integer")])
def test_add_noise_refuses_a_timestep_ddim_cannot_index_rather_than_clamping_it(t, match):
    config = {**BETAS, "clip_sample": False}
    theirs, ours = DDIMScheduler(**config), SamplerScheduler.from_config(DDIMScheduler(**config))
    tt = torch.tensor(t)
    if t == [-5]:  # DDIM indexes alphas_cumprod[-5]: timestep 995's, silently
        torch.testing.assert_close(theirs.add_noise(X0, NOISE1, tt), theirs.add_noise(X0, NOISE1, torch.tensor([995])))
    else:
        with pytest.raises(IndexError):
            theirs.add_noise(X0, NOISE1, tt)
    with pytest.raises(InvalidInput, match=match):
        ours.add_noise(X0, NOISE1, tt)
    # integers within the training range (training code, before set_timesteps) still match DDIM's
    t = torch.tensor([999, 0])
    torch.testing.assert_close(ours.add_noise(X0.expand(2, -1, -1, -1), NOISE1, t),
                               theirs.add_noise(X0.expand(2, -1, -1, -1), NOISE1, t), rtol=1e-5, atol=1e-5)


def test_add_noise_refuses_mismatched_shapes_and_numpy_by_name():

    theirs, ours = _euler_pair()
    t = ours.timesteps[:1]
    with pytest.raises(RuntimeError):
        theirs.add_noise(X0, torch.ones(1, 4, 2, 2), t)
    with pytest.raises(InvalidInput, match=r"shape \(1, 4, 4, 4\), noise of shape \(1, 4, 2, 2\)"):
        ours.add_noise(X0, torch.ones(1, 4, 2, 2), t)
    three = ours.timesteps[:3]
    with pytest.raises(RuntimeError):
        theirs.add_noise(torch.ones(2, 4, 4, 4), torch.ones(2, 4, 4, 4), theirs.timesteps[:3])
    with pytest.raises(InvalidInput, match="3 timestep"):
        ours.add_noise(torch.ones(2, 4, 4, 4), torch.ones(2, 4, 4, 4), three)
    with pytest.raises((TypeError, AttributeError)):
        theirs.add_noise(X0.numpy(), NOISE1.numpy(), t)
    with pytest.raises(InvalidType, match=r"ndarray and ndarray.*torch\.from_numpy"):
        ours.add_noise(X0.numpy(), NOISE1.numpy(), t)
    with pytest.raises(InvalidType, match="timesteps"):
        ours.add_noise(X0, NOISE1, "999")
    # what diffusers broadcasts still runs: one timestep per item, one latent noised at two levels
    torch.testing.assert_close(ours.add_noise(X0, NOISE1, ours.timesteps[:2]),
                               theirs.add_noise(X0, NOISE1, theirs.timesteps[:2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("timestep", [None, "999", True, torch.tensor([999.0, 888.0])])
def test_a_step_timestep_that_is_not_a_number_is_refused_before_the_output_is_used(timestep):
    theirs, ours = _euler_pair()
    lat = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(Exception) as raised:  # Euler fails on each: it finds no such timestep among its run's
        theirs.step(torch.zeros_like(lat), timestep, lat)
    assert not isinstance(raised.value, InvalidType)
    with pytest.raises(InvalidType, match=r"step\(\) takes the timestep as a number or a one-element tensor"):
        ours.step(torch.zeros_like(lat), timestep, lat)
    assert ours._denoised == [] and ours.step_index is None  # no model output consumed
    with pytest.raises(InvalidType, match=r"scale_model_input\(\) takes the timestep"):
        ours.scale_model_input(lat, "x") if timestep is None else ours.scale_model_input(lat, timestep)
    t = ours.timesteps[0]
    ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t))  # a pipeline's timestep still runs
    assert len(ours._denoised) == 1


def test_a_string_timestep_after_set_begin_index_is_refused_where_ddim_fails_on_it():
    config = {**BETAS, "clip_sample": False}
    theirs = DDIMScheduler(**config)
    ours = SamplerScheduler.from_config(theirs)
    lat = torch.zeros(1, 4, 4, 4)
    for s in (theirs, ours):
        s.set_timesteps(5)
    with pytest.raises(TypeError):  # DDIM subtracts from the timestep
        theirs.step(lat, "801", lat)
    ours.set_begin_index(0)
    with pytest.raises(InvalidType, match="'801'"):
        ours.step(lat, "801", lat)
    assert ours._denoised == []


@pytest.mark.parametrize("generator", [42, "g", [torch.Generator(), 3]])
def test_a_generator_that_is_not_a_torch_generator_is_refused_with_the_seed_fix(generator):
    theirs, ours = _euler_pair(EulerAncestralDiscreteScheduler)
    batch = len(generator) if isinstance(generator, list) else 1  # one generator per item
    lat = torch.randn(batch, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    t = theirs.timesteps[0]
    with pytest.raises((AttributeError, TypeError)):  # randn_tensor: "'int' object has no attribute 'device'"
        theirs.step(torch.zeros_like(lat), t, theirs.scale_model_input(lat, t), generator=generator)
    with pytest.raises(InvalidType, match=r"pass seed=\d+ to SamplerScheduler, or "
                                          r"generator=torch\.Generator\(\)\.manual_seed\(\d+\)"):
        ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t), generator=generator)
    assert ours._denoised == []
    ours.step(torch.zeros_like(lat), t, lat, generator=[torch.Generator().manual_seed(1)] * batch)


@pytest.mark.parametrize("cls, config", [(EulerAncestralDiscreteScheduler, {}),
                                         (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"})])
@pytest.mark.parametrize("count, batch", [(3, 2), (2, 3)])
def test_a_list_of_generators_must_hold_one_per_item(cls, config, count, batch):
    """diffusers' randn_tensor draws item k from generator k: 3 generators for a batch of 2 ran with the third
    ignored, 2 for a batch of 3 raised an IndexError inside the replay. Refused at the first step, before any draw;
    one generator (alone or in a list) and one per item run."""
    ours = SamplerScheduler.from_config(cls.from_config({**BETAS, **config}).config)
    ours.set_timesteps(4)
    lat = torch.randn(batch, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * ours.init_noise_sigma
    t = ours.timesteps[0]
    gens = [torch.Generator().manual_seed(i) for i in range(count)]
    with pytest.raises(InvalidInput, match=rf"list of {count} generators for a batch of {batch}.*one per item"):
        ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t), generator=gens)
    assert ours._denoised == []
    for good in ([torch.Generator().manual_seed(0)], [torch.Generator().manual_seed(i) for i in range(batch)]):
        ours.set_timesteps(4)
        ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t), generator=good)


def test_a_tuple_of_generators_is_refused_by_name_as_diffusers_fails_on_it():
    """diffusers' randn_tensor reads a list of generators, not a tuple ('tuple' object has no attribute 'device'): the
    shim took a tuple as a list in its check, then failed with diffusers' AttributeError inside the draw. Refused by
    name at the step, before anything is drawn, with the fix."""
    theirs = EulerAncestralDiscreteScheduler.from_config(BETAS)
    ours = SamplerScheduler.from_config(theirs.config)
    for s in (theirs, ours):
        s.set_timesteps(4)
    lat = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * ours.init_noise_sigma
    t = ours.timesteps[0]
    gens = tuple(torch.Generator().manual_seed(k) for k in range(3))
    with pytest.raises(AttributeError):
        theirs.step(torch.zeros_like(lat), t, theirs.scale_model_input(lat, t), generator=gens)
    with pytest.raises(InvalidType, match=r"tuple of 3 generators.*pass list\(generator\)"):
        ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t), generator=gens)
    assert ours._denoised == []
    ours.step(torch.zeros_like(lat), t, lat, generator=list(gens))


def test_a_seed_without_room_for_the_batch_is_refused_before_the_first_model_call():
    """SamplerScheduler(seed=s) seeds item k with s + k: a seed without room for the batch was refused at the first
    step(), after the pipeline's first model call; scale_model_input (called before it) refuses it now."""
    ours = SamplerScheduler.from_config(EulerAncestralDiscreteScheduler.from_config(BETAS).config, seed=2**64 - 1)
    ours.set_timesteps(4)
    lat = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * ours.init_noise_sigma
    with pytest.raises(InvalidInput, match="leaves no room for 3 items"):
        ours.scale_model_input(lat, ours.timesteps[0])
    ours = SamplerScheduler.from_config(EulerAncestralDiscreteScheduler.from_config(BETAS).config, seed=2**64 - 3)
    ours.set_timesteps(4)
    t = ours.timesteps[0]
    ours.step(torch.zeros_like(lat), t, ours.scale_model_input(lat, t))


def test_a_generator_the_run_never_reads_is_not_refused():
    # DDIM with eta = 0 draws nothing: diffusers ignores any generator there, and so does the shim
    config = {**BETAS, "clip_sample": False}
    theirs = DDIMScheduler(**config)
    ours = SamplerScheduler.from_config(theirs)
    lat = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    out = []
    for s in (theirs, ours):
        s.set_timesteps(5)
        out.append(s.step(0.3 * lat, s.timesteps[0], lat, generator=42, eta=0.0).prev_sample)
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)


def test_step_names_what_it_got_instead_of_tensors():
    _, ours = _euler_pair()
    lat = torch.zeros(1, 4, 4, 4)
    with pytest.raises(InvalidType, match=r"got ndarray and Tensor; convert numpy arrays with torch\.from_numpy"):
        ours.step(lat.numpy(), ours.timesteps[0], lat)


def test_from_config_none_and_a_missing_folder_are_refused_by_name(tmp_path):
    from samplers.core.errors import MissingFile

    with pytest.raises(ValueError):
        EulerDiscreteScheduler.from_config(None)
    with pytest.raises(InvalidInput, match=r"from_config got no config \(None\)"):
        SamplerScheduler.from_config(None)
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError, match="huggingface.co"):  # diffusers turns to the Hub
        EulerDiscreteScheduler.from_pretrained(missing)
    with pytest.raises(MissingFile, match=r"missing'.*does not exist"):
        SamplerScheduler.from_pretrained(missing)
    with pytest.raises(MissingFile, match="holds no scheduler_config.json"):
        SamplerScheduler.from_pretrained(str(tmp_path))
    # a saved folder still loads, from the folder, its config file, and a pipeline-style subfolder
    shim = SamplerScheduler.from_config(EulerDiscreteScheduler(**BETAS).config, sampler="heun")
    shim.save_config(tmp_path / "scheduler")
    for args in ((tmp_path / "scheduler",), (str(tmp_path),), (str(tmp_path / "scheduler" / "scheduler_config.json"),)):
        kwargs = {"subfolder": "scheduler"} if args == (str(tmp_path),) else {}
        loaded = SamplerScheduler.from_pretrained(*args, **kwargs)
        assert loaded.spec.name == "heun"


@pytest.mark.parametrize("name", sorted(sources.SOURCES))
def test_init_noise_sigma_before_set_timesteps_is_the_classes(name):
    # a loop may scale its noise before set_timesteps (diffusers' LDMPipeline does): Euler's is from its whole
    # table then (14.65 on SDXL's config), not 1 and not the value after some other set_timesteps
    from benchmarks.compatibility import CONFIGS, source_scheduler

    for key in ("SD-1.5", "SDXL"):
        config = {} if name.startswith("EDM") else CONFIGS["SD3" if name.startswith("FlowMatch") else key]
        theirs = source_scheduler(name, config, {})
        if not hasattr(theirs, "init_noise_sigma"):
            continue  # the FlowMatch classes have none
        ours = SamplerScheduler.from_config(theirs.config)
        assert type(ours.init_noise_sigma) is type(theirs.init_noise_sigma), name
        assert float(ours.init_noise_sigma) == float(theirs.init_noise_sigma), (name, key)


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler"])
def test_a_loop_that_scales_its_noise_before_set_timesteps_keeps_the_image(name):
    from benchmarks.compatibility import CONFIGS, TinyModel, source_scheduler

    model, outs = TinyModel(), []
    theirs = source_scheduler(name, CONFIGS["SDXL"], {})
    for s in (theirs, SamplerScheduler.from_config(theirs.config)):
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * s.init_noise_sigma
        s.set_timesteps(6)
        for t in s.timesteps:
            x = s.step(model(s.scale_model_input(x, t), t), t, x).prev_sample
        outs.append(x)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5 * float(outs[0].abs().max()))


def test_init_noise_sigma_that_depends_on_the_schedule_is_refused_before_set_timesteps():
    from diffusers import EulerDiscreteScheduler

    ours = SamplerScheduler.from_config(EulerDiscreteScheduler().config, initial_noise="sigma")
    with pytest.raises(Unavailable, match="initial_noise='sigma'.*call set_timesteps before reading it"):
        ours.init_noise_sigma
    ours.set_timesteps(4)
    assert float(ours.init_noise_sigma) == pytest.approx(float(ours.sigmas[0]), rel=1e-6)


def test_the_sigmas_device_table_matches_diffusers_sources():
    import inspect as inspect_

    from diffusers import schedulers as ds

    for name in sources.SOURCES:
        code = inspect_.getsource(getattr(ds, name).set_timesteps)
        sets = "self.sigmas =" in code or "self.sigmas=" in code
        assert (name in sources.SIGMAS_ON_DEVICE) == (sets and '.to("cpu")' not in code), name


@pytest.mark.parametrize("name", sorted(sources.SIGMAS_ON_DEVICE))
def test_sigmas_are_on_the_device_set_timesteps_names_where_the_class_leaves_them_there(name):
    # FlowMatchEuler / Heun keep sigmas on the pipeline's device (LTX-2's pipelines index them beside the latents)
    from benchmarks.compatibility import SD3

    theirs = getattr(diffusers, name).from_config(SD3)
    ours = SamplerScheduler.from_config(theirs.config)
    for s in (theirs, ours):
        s.set_timesteps(4, device="meta")
        assert s.sigmas.device.type == "meta" and s.timesteps.device.type == "meta", name

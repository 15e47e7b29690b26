"""SamplerScheduler: the mechanics of a registry sampler inside diffusers' loop, and its refusals.

Parity with every diffusers scheduler class is the compatibility table (tests/test_diffusers_compat_table.py) and the
real pipelines (tests/test_diffusers_pipelines.py); here the loop is the pipelines' own (benchmarks.compatibility.run)
on a cheap random model, so every registry sampler can be checked against its direct run.
"""
from __future__ import annotations

import math
import pathlib
import re

import pytest
import torch

import samplers
from samplers.core import names
from samplers.core.conversion import to_denoiser
from samplers.core.errors import InvalidInput, InvalidOption, LimitExceeded, UnknownNameError, Unavailable
from samplers.core.native import VPDiscrete

diffusers = pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler)

from benchmarks.compatibility import CONFIGS, SD15, SDXL, TinyModel, run, source_scheduler  # noqa: E402
from conftest import shim_latents  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

MODEL = TinyModel()
NOISE, IMAGE, MASK = shim_latents()
TOL = dict(rtol=0, atol=1e-5)



def txt2img(scheduler, steps=5, noise=NOISE, seed=3):
    return run(scheduler, MODEL, "txt2img", noise, IMAGE, MASK, steps=steps, seed=seed)


# ----------------------------------------------------------------------------------------------------
# Any registry sampler in the pipeline's loop equals its direct run on the same model


FIXED_STEP = [n for n in samplers.available() if not samplers.info(n).host_sync]


def direct(shim, name, native, prediction, noise, **options):
    """The registry sampler on the model as a denoiser, from the shim's own schedule and first latent (``options``:
    the sampler's, as the shim got them)."""
    D = to_denoiser(MODEL, prediction, native)
    schedule = shim.schedule_sigmas
    sigma_0 = float(schedule[0])
    start = noise * shim.init_noise_sigma  # the pipeline's first latent, in the shim's coordinates
    x = start if (math.isinf(sigma_0) or shim.latents == "ve") else start * math.sqrt(1 + sigma_0**2)
    opts = {"seed": 123} if "seed" in samplers.info(name).options else {}
    if samplers.info(name).name == "tcd":  # the table the shim placed its point on
        opts["native"] = shim._options["native"]
    out = samplers.sample(name, D, x, schedule, disable=True, **opts, **options)
    final = float(schedule[-1])
    return out if shim.latents == "ve" or final == 0 else out / math.sqrt(1 + final**2)


@pytest.mark.parametrize("config", ["SDXL", "SD3"])
@pytest.mark.parametrize("name", FIXED_STEP)
def test_every_sampler_in_the_loop_equals_its_direct_run(name, config):
    # SDXL's Euler config keeps VE latents (x/√(σ²+1) reaches the model); SD3's flow config native ones from σ = inf
    schedule = "karras" if config == "SDXL" else None
    # tcd needs a discrete timestep table, which a flow model has not: given one here (refused without, test_tcd.py)
    table = {"native": VPDiscrete.from_betas()} if name == "tcd" and config == "SD3" else None
    shim = SamplerScheduler.from_config(source_scheduler(SDXL["_class_name"] if config == "SDXL" else
                                                         CONFIGS[config]["_class_name"], CONFIGS[config], {}).config,
                                        sampler=name, schedule=schedule, seed=123, sampler_options=table)
    out = txt2img(shim, steps=3)
    assert shim.config.sampler == name and shim.spec.name == samplers.info(name).name
    ref = direct(shim, name, shim.native, shim.prediction, NOISE)
    # the same sampler on the same model; only the float32 conversions differ (x/√(σ²+1) vs a·x, ...)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# Without `sampler`, the algorithm of the config's class


@pytest.mark.parametrize("name, variant, sampler, options", [
    ("DPMSolverMultistepScheduler", {}, "dpmpp_2m", {"solver_type": "midpoint", "euler_at_final": True}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "solver_type": "heun"}, "dpmpp_3m",
     {"solver_type": "heun", "lower_order_final": True}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "dpmpp_2m_sde", {"eta": 1.0}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "dpmpp_3m_sde",
     {"eta": 1.0, "variant": "diffusers", "solver_type": "midpoint", "lower_order_final": True}),
    ("DPMSolverMultistepScheduler", {"solver_order": 1}, "ddim", {}),
    ("UniPCMultistepScheduler", {}, "unipc_bh2", {"order": 2, "lower_order_final": True}),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}, "unipc_bh1", {"order": 3}),
    ("DEISMultistepScheduler", {}, "deis", {"order": 2}),
    ("PNDMScheduler", {}, "plms", {}),
    ("PNDMScheduler", {"skip_prk_steps": False}, "pndm", {}),
    ("DPMSolverSinglestepScheduler", {}, "dpmpp_2s", {"solver_type": "midpoint"}),
    ("LCMScheduler", {}, "lcm", {}),
    ("EDMEulerScheduler", {}, "euler", {}),
])
def test_the_sampler_is_the_config_class_algorithm(name, variant, sampler, options):
    shim = SamplerScheduler.from_config(source_scheduler(name, SD15, variant).config)
    shim.set_timesteps(6)
    assert shim.spec.name == sampler
    assert {k: shim._options[k] for k in options} == options


def test_a_label_naming_the_source_algorithm_keeps_the_image_and_others_change_it():
    theirs = DPMSolverMultistepScheduler.from_config(SD15)
    ref = txt2img(theirs)
    for label in ("dpmpp_2m", "DPMSolverMultistepScheduler", "DPM++ 2M"):
        torch.testing.assert_close(txt2img(SamplerScheduler.from_config(theirs.config, sampler=label)), ref, **TOL)
    euler = SamplerScheduler.from_config(theirs.config, sampler="euler")
    other = txt2img(euler)
    assert not torch.allclose(other, ref, atol=1e-3)
    assert torch.equal(euler.timesteps, theirs.timesteps)  # on the class's own grid
    karras = SamplerScheduler.from_config(theirs.config, sampler="DPM++ 2M Karras")  # a label naming its schedule
    karras.set_timesteps(5)
    assert karras.timesteps.dtype == torch.float32 and karras.timesteps[0] == 999.0


# ----------------------------------------------------------------------------------------------------
# State: per run, per instance


def test_set_timesteps_twice_starts_a_fresh_run():
    shim = SamplerScheduler.from_config(DPMSolverMultistepScheduler.from_config(SD15).config)
    fresh = txt2img(shim, steps=6)
    shim.set_timesteps(6)
    latents = NOISE.clone()
    for t in shim.timesteps[:3]:
        latents = shim.step(MODEL(latents, t), t, latents).prev_sample
    torch.testing.assert_close(txt2img(shim, steps=6), fresh, rtol=0, atol=0)


def test_two_instances_never_share_state():
    config = DPMSolverMultistepScheduler.from_config(SD15).config
    alone = txt2img(SamplerScheduler.from_config(config))
    a, b = SamplerScheduler.from_config(config), SamplerScheduler.from_config(config)
    a.set_timesteps(5)
    b.set_timesteps(5)
    xa, xb = NOISE.clone(), (NOISE * 0.5).clone()
    for t in a.timesteps:  # interleaved, as two pipelines on two threads would
        xb = b.step(MODEL(xb, t), t, xb).prev_sample
        xa = a.step(MODEL(xa, t), t, xa).prev_sample
    torch.testing.assert_close(xa, alone, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_latents_keep_their_dtype_and_a_float32_state(dtype):
    config = DPMSolverMultistepScheduler.from_config(SD15).config
    full = txt2img(SamplerScheduler.from_config(config))
    shim = SamplerScheduler.from_config(config)
    shim.set_timesteps(5)
    latents = NOISE.to(dtype)
    for t in shim.timesteps:
        out = shim.step(MODEL(latents.float(), t).to(dtype), t, latents)
        assert out.prev_sample.dtype == dtype and out.pred_original_sample.dtype == dtype
        latents = out.prev_sample
    assert shim._x_start.dtype == torch.float32
    torch.testing.assert_close(latents.float(), full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name, variant", [
    ("EulerAncestralDiscreteScheduler", {}), ("DDPMScheduler", {}), ("KDPM2AncestralDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}), ("LCMScheduler", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
])
def test_the_generator_is_consumed_as_the_source_class_consumes_it(name, variant):
    theirs = source_scheduler(name, SD15, variant)
    states = []
    for scheduler in (theirs, SamplerScheduler.from_config(theirs)):
        g = torch.Generator().manual_seed(5)
        scheduler.set_timesteps(5)
        latents = NOISE * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            out = MODEL(scheduler.scale_model_input(latents, t), t)
            latents = scheduler.step(out, t, latents, generator=g).prev_sample
        states.append((latents, torch.randn(3, generator=g)))  # the next image's noise
    torch.testing.assert_close(states[1][0], states[0][0], **TOL)
    torch.testing.assert_close(states[1][1], states[0][1], rtol=0, atol=0)


@pytest.mark.parametrize("config", ["SD-1.5", "SD-2.1-v", "SDXL"])
@pytest.mark.parametrize("variant", [{}, {"solver_type": "heun"}, {"use_karras_sigmas": True},
                                     {"lower_order_final": False}, {"final_sigmas_type": "sigma_min"}])
def test_third_order_sde_dpmsolver_keeps_the_image_at_every_step_count(config, variant):
    # few steps: first, second, third order, then diffusers' lower_order_final caps (< 15 steps); 16: the
    # third-order rule all the way to the last step's own rule
    theirs = source_scheduler("DPMSolverMultistepScheduler", CONFIGS[config],
                              dict(algorithm_type="sde-dpmsolver++", solver_order=3, **variant))
    for steps in (3, 5, 9, 16):
        for mode in ("txt2img", "img2img", "inpaint"):
            ref = run(theirs, MODEL, mode, NOISE, IMAGE, MASK, steps=steps, seed=3)
            shim = SamplerScheduler.from_config(theirs.config)
            ours = run(shim, MODEL, mode, NOISE, IMAGE, MASK, steps=steps, seed=3)
            # a third-order step to a σ_min end amplifies float32 rounding: both runs are ~6e-6 from a float64 one
            tol = 2e-5 if variant.get("final_sigmas_type") == "sigma_min" and steps >= 15 else 1e-5
            torch.testing.assert_close(ours, ref, rtol=0, atol=tol, msg=f"{steps} steps, {mode}")


@pytest.mark.parametrize("name, variant, own", [
    ("UniPCMultistepScheduler", {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, "unipc_bh2"),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3}, "dpmpp_2s"),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
     "dpmpp_3m"),
    ("SASolverScheduler", {"use_karras_sigmas": True}, "sa_solver"),
])
def test_a_config_whose_own_run_is_refused_still_runs_another_sampler_on_its_grid(name, variant, own):
    config = source_scheduler(name, SD15, variant).config
    for sampler in (None, own):  # the class's own run: refused, with the rule
        with pytest.raises(InvalidOption, match=name.removesuffix("Scheduler")):
            SamplerScheduler.from_config(config, sampler=sampler).set_timesteps(6)
    shim = SamplerScheduler.from_config(config, sampler="euler")  # the user's choice: runs on the class's grid
    out = txt2img(shim, steps=6)
    theirs = source_scheduler(name, SD15, variant)
    theirs.set_timesteps(6)
    assert shim.spec.name == "euler" and torch.equal(shim.timesteps, theirs.timesteps.to(shim.timesteps.dtype))
    assert bool(torch.isfinite(out).all())


def test_third_order_sde_dpmsolver_takes_k_diffusions_weight_only_when_asked():
    config = DPMSolverMultistepScheduler.from_config(SD15, algorithm_type="sde-dpmsolver++", solver_order=3).config
    ref = txt2img(DPMSolverMultistepScheduler.from_config(config), steps=8)
    kd = SamplerScheduler.from_config(config, sampler_options={"variant": "k-diffusion"})
    kd.set_timesteps(8)
    assert kd._options["variant"] == "k-diffusion" and kd._options["solver_type"] == "midpoint"
    other = txt2img(kd, steps=8)
    assert (other - ref).abs().max() > 1e-3  # another D2 weight: another image, chosen explicitly
    with pytest.raises(InvalidOption, match="variant must be one of"):  # refused before any model call
        SamplerScheduler.from_config(config, sampler_options={"variant": "comfy"}).set_timesteps(8)


def test_img2img_starts_the_sampler_at_the_begin_step():
    theirs = EulerDiscreteScheduler.from_config(SDXL)
    shim = SamplerScheduler.from_config(theirs.config, sampler="heun", schedule="karras")
    shim.set_timesteps(6)
    begin = 2 * shim.order
    shim.set_begin_index(begin)
    t0 = shim.timesteps[begin:begin + 1]
    latents = shim.add_noise(IMAGE, NOISE, t0)
    for t in shim.timesteps[begin:]:
        latents = shim.step(MODEL(shim.scale_model_input(latents, t), t), t, latents).prev_sample
    tail = shim.schedule_sigmas[2:]
    D = to_denoiser(MODEL, "eps", shim.native)
    ref = samplers.sample("heun", D, IMAGE + float(tail[0]) * NOISE, tail, disable=True)
    torch.testing.assert_close(latents, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInput, match="first model call of a step"):
        shim.set_begin_index(begin + 1)


@pytest.mark.parametrize("label", ["DPM fast", "comfyui:dpm_fast"])
def test_dpm_fast_under_the_tools_labels_plans_one_step_per_model_call(label):
    """The labels run dpm_fast with final_denoise=False, which calls back as k-diffusion does, once per DPM-Solver
    step after its first call (tests/test_callback_seams.py). The plan read its step starts from those callbacks:
    [0, 1, 4] on 6 steps, and img2img got "begin_index 3 is not the first model call of a step" (or "started at step
    1" for index 4). Planned as before (d0431e2): every model call starts a step of the schedule, and a late start is
    refused for what it is, at the step it names; the run and the caller's own report are unchanged."""
    config = EulerDiscreteScheduler.from_config(SD15).config
    shim = SamplerScheduler.from_config(config, sampler=label)
    shim.set_timesteps(6)
    assert shim._plan.step_starts == list(range(6))  # the registry's dpm_fast's plan, one call per step
    for begin in range(1, 5):  # (at 5, the last call, A1111's eta = 1 is refused first: a one-call tail has no range)
        with pytest.raises(InvalidInput) as e:
            shim.set_begin_index(begin)
        assert str(e.value) == (f"'dpm_fast' evaluates different sigmas when started at step {begin} (its steps "
                                "depend on the step count); it cannot start at a later timestep")
    shim.set_timesteps(6)  # an older img2img loop (no set_begin_index) finds the same step from the timestep
    with pytest.raises(InvalidInput, match=r"^'dpm_fast' evaluates different sigmas when started at step 3 "):
        shim.step(MODEL(IMAGE, shim.timesteps[3]), shim.timesteps[3], IMAGE)
    exact = SamplerScheduler.from_config(config, sampler=label, sampler_options={"eta": 0.0})  # (A1111's eta is 1)
    out = txt2img(exact, steps=6)
    torch.testing.assert_close(out, direct(exact, label, exact.native, exact.prediction, NOISE, eta=0.0), **TOL)
    seen = []  # the plan's per-call report stays the plan's: the label's run still calls back per DPM-Solver step
    samplers.sample(label, to_denoiser(MODEL, "eps", shim.native), NOISE, shim.schedule_sigmas, callback=seen.append,
                    disable=True)
    assert [d["i"] for d in seen] == [0, 1, 2]


def test_a_run_that_starts_without_set_begin_index_finds_its_step_from_the_timestep():
    theirs = DPMSolverMultistepScheduler.from_config(SD15)
    shim = SamplerScheduler.from_config(theirs.config)
    out = []
    for scheduler in (theirs, shim):
        scheduler.set_timesteps(6)
        latents = scheduler.add_noise(IMAGE, NOISE, scheduler.timesteps[2:3])
        for t in scheduler.timesteps[2:]:  # an older img2img loop: no set_begin_index
            latents = scheduler.step(MODEL(latents, t), t, latents).prev_sample
        out.append(latents)
    torch.testing.assert_close(out[1], out[0], **TOL)


def test_add_noise_and_scale_noise_match_diffusers():
    t = torch.tensor([999, 500])
    config = DDPMScheduler.from_config(SD15).config
    torch.testing.assert_close(SamplerScheduler.from_config(config).add_noise(IMAGE, NOISE, t),
                               DDPMScheduler.from_config(SD15).add_noise(IMAGE, NOISE, t), **TOL)
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow.set_timesteps(4)
    ours = SamplerScheduler.from_config(flow.config)
    ours.set_timesteps(4)
    t = flow.timesteps[1:2]
    torch.testing.assert_close(ours.scale_noise(IMAGE, t, NOISE), flow.scale_noise(IMAGE, t, NOISE), **TOL)


def test_dynamic_shift_with_flux_style_sigmas_matches_flow_match_euler():
    import numpy as np
    theirs = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    ours = SamplerScheduler.from_config(theirs.config)
    sigmas, mu = np.linspace(1.0, 1 / 5, 5), 0.8
    out = []
    for sch in (theirs, ours):
        sch.set_timesteps(sigmas=sigmas, mu=mu)
        latents = NOISE.clone()
        for t in sch.timesteps:
            latents = sch.step(MODEL(latents, t), t, latents).prev_sample
        out.append(latents)
    torch.testing.assert_close(out[1], out[0], **TOL)
    with pytest.raises(InvalidInput, match="mu"):
        ours.set_timesteps(5)


def test_plan_counts_every_model_call():
    shim = SamplerScheduler.from_config(EulerDiscreteScheduler.from_config(SDXL).config, sampler="rk4")
    shim.set_timesteps(4)
    assert len(shim.timesteps) == 3 * 4 + 1 and shim.order == 4  # Euler on the last step to σ = 0
    assert len(shim.sigmas) == len(shim.timesteps) + 1 and float(shim.sigmas[-1]) == 0.0


def test_save_and_load_round_trip_keeps_the_source(tmp_path):
    theirs = DPMSolverMultistepScheduler.from_config(SD15, use_karras_sigmas=True)
    shim = SamplerScheduler.from_config(theirs.config)
    shim.save_pretrained(tmp_path)
    back = SamplerScheduler.from_pretrained(tmp_path)
    assert back.config.source_config["_class_name"] == "DPMSolverMultistepScheduler"
    torch.testing.assert_close(txt2img(back), txt2img(theirs), **TOL)
    tuned = SamplerScheduler(sampler="euler_ancestral", schedule="karras", sampler_options={"eta": 0.5}, seed=3,
                             beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    tuned.save_pretrained(tmp_path)
    again = SamplerScheduler.from_pretrained(tmp_path)
    assert again.config.sampler_options == {"eta": 0.5}
    torch.testing.assert_close(txt2img(again), txt2img(tuned), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# exact=True: fractional timesteps and the final step to σ = 0


def test_exact_evaluates_fractional_timesteps_and_steps_to_zero():
    def three(**variant):
        theirs = DPMSolverMultistepScheduler.from_config(SD15, **variant)
        out = (theirs, SamplerScheduler.from_config(theirs.config), SamplerScheduler.from_config(theirs.config,
                                                                                                  exact=True))
        for s in out:
            s.set_timesteps(8)
        return out

    theirs, default, exact = three(use_karras_sigmas=True)
    assert torch.equal(default.timesteps, theirs.timesteps)  # rounded, as diffusers
    assert exact.timesteps.dtype == torch.float32 and len(exact.timesteps) == 8
    assert not torch.equal(exact.timesteps, theirs.timesteps.float())
    assert (exact.timesteps - theirs.timesteps).abs().max() <= 0.5
    theirs, default, exact = three(final_sigmas_type="sigma_min")  # diffusers stops at σ_min
    assert float(default.schedule_sigmas[-1]) > 0 and len(default.timesteps) == 8
    assert float(exact.schedule_sigmas[-1]) == 0.0 and len(exact.timesteps) == 9  # the step it skips
    # DDIM's trailing grid with 12 steps evaluates off its latents: refused, and exact=True runs it consistently
    ddim = DDIMScheduler.from_config(SD15, timestep_spacing="trailing")
    with pytest.raises(InvalidOption, match="exact=True"):
        SamplerScheduler.from_config(ddim.config).set_timesteps(12)
    SamplerScheduler.from_config(ddim.config, exact=True).set_timesteps(12)


def test_exact_changes_the_error_to_the_ode_solution_on_the_analytic_problem():
    # DEIS stops at σ_min (0.029) on SD-1.5's schedule; exact=True takes the last step to 0 (docs/diffusers.md has
    # the whole measurement: python -m benchmarks.compatibility --exact)
    from benchmarks.compatibility import exact_gain
    row, = exact_gain(steps_list=(10,), batch=16, cases=[("DEISMultistepScheduler", {})])
    assert row["exact"] < 0.5 * row["default"]


# ----------------------------------------------------------------------------------------------------
# A label with its own sigmas (a fitted solver) runs on exactly those


def _fixed_label(rest: str) -> names.Label:
    sig = tuple(VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012).sigma_max * f for f in (1, .3, .05))
    return names.Label(f"testfixed:{rest}", "dpmpp_2m", {}, sigmas=sig + (0.0,), source="testfixed")


def test_a_label_that_fixes_its_sigmas_runs_on_them():
    if "testfixed" not in names._PREFIXES:
        names.register_prefix("testfixed", _fixed_label)
    shim = SamplerScheduler.from_config(DPMSolverMultistepScheduler.from_config(SD15).config, sampler="testfixed:a")
    shim.set_timesteps(3)
    torch.testing.assert_close(shim.schedule_sigmas, torch.tensor(_fixed_label("a").sigmas, dtype=torch.float64))
    with pytest.raises(InvalidInput, match="num_inference_steps=3"):
        shim.set_timesteps(20)


# ----------------------------------------------------------------------------------------------------
# Bad input: a clear error, before any model call


def test_bad_input_is_refused_with_the_rule():
    config = DPMSolverMultistepScheduler.from_config(SD15).config
    shim = SamplerScheduler.from_config(config)
    for bad in (0, -3, 2.7, True, "20"):
        with pytest.raises((InvalidInput, TypeError), match="num_inference_steps"):
            shim.set_timesteps(bad)
    with pytest.raises(LimitExceeded, match="num_train_timesteps"):
        SamplerScheduler.from_config({**SD15, "num_train_timesteps": 10**9})
    with pytest.raises(LimitExceeded, match="num_train_timesteps"):
        SamplerScheduler(num_train_timesteps=int(1e9))
    with pytest.raises(InvalidInput, match="cannot be larger"):  # diffusers' DDIM refuses more steps than trained
        SamplerScheduler.from_config(DDIMScheduler.from_config(SD15).config).set_timesteps(1001)
    shim.set_timesteps(4)
    with pytest.raises(InvalidInput, match="shape"):
        shim.step(torch.zeros(2, 4, 8, 1), shim.timesteps[0], NOISE)  # would broadcast
    with pytest.raises(UnknownNameError, match="eule"):
        SamplerScheduler.from_config(config, sampler="eulr")
    with pytest.raises(UnknownNameError):
        SamplerScheduler.from_config(config, schedule="karas")
    with pytest.raises(InvalidOption, match="no option"):
        SamplerScheduler.from_config(config, sampler="euler", sampler_options={"eta": 1.0})
    with pytest.raises(InvalidOption, match="chooses its steps from the model's outputs"):
        SamplerScheduler.from_config(config, sampler="dpm_adaptive")
    with pytest.raises(InvalidOption, match="chooses its steps"):
        SamplerScheduler.from_config(config, sampler="torchdiffeq.dopri5")
    with pytest.raises(InvalidOption, match="torchdiffeq / torchsde drive its steps"):  # fixed steps: not adaptive
        SamplerScheduler.from_config(config, sampler="torchsde.euler")
    with pytest.raises(InvalidOption, match="unknown prediction_type"):
        SamplerScheduler.from_config(config, prediction_type="noise")


def test_options_it_cannot_honour_are_refused_never_dropped():
    # DDIMScheduler's default clip_sample=True
    with pytest.raises(InvalidOption, match="clip_sample=True"):
        SamplerScheduler.from_config(DDIMScheduler().config)
    with pytest.raises(InvalidOption, match="algorithm_type"):
        SamplerScheduler.from_config(DPMSolverMultistepScheduler.from_config(SD15, algorithm_type="dpmsolver",
                                                                             final_sigmas_type="sigma_min").config)
    with pytest.raises(InvalidOption, match="variance_type"):
        SamplerScheduler.from_config(DDPMScheduler.from_config(SD15, variance_type="learned_range").config)
    sde3_idle = DPMSolverMultistepScheduler.from_config(SD15, algorithm_type="sde-dpmsolver++", solver_order=3,
                                                        use_karras_sigmas=True, final_sigmas_type="sigma_min").config
    with pytest.raises(InvalidOption, match="zero-length step"):
        SamplerScheduler.from_config(sde3_idle).set_timesteps(6)  # its capped zero-length last step
    with pytest.raises(InvalidOption, match="clip_sample"):  # x0 clipping would be dropped whichever sampler runs
        SamplerScheduler.from_config(DDIMScheduler().config, sampler="euler")
    with pytest.raises(InvalidOption, match="cannot reproduce CMStochasticIterativeScheduler"):
        SamplerScheduler.from_config(diffusers.CMStochasticIterativeScheduler().config)
    pndm = SamplerScheduler.from_config(source_scheduler("PNDMScheduler", SD15, {}).config)
    pndm.set_timesteps(5)
    with pytest.raises(InvalidOption, match="ipndm"):
        pndm.set_begin_index(2)  # PNDM's img2img is not a PLMS run
    ipndm = SamplerScheduler.from_config(source_scheduler("PNDMScheduler", SD15, {}), sampler="ipndm")
    assert torch.isfinite(run(ipndm, MODEL, "img2img", NOISE, IMAGE, MASK)).all()
    ancestral = SamplerScheduler.from_config(EulerAncestralDiscreteScheduler.from_config(SD15).config)
    ancestral.set_timesteps(3)
    t = ancestral.timesteps[0]
    with pytest.raises(InvalidOption, match="eta"):
        ancestral.step(MODEL(NOISE, t), t, NOISE * ancestral.init_noise_sigma, eta=0.5)  # DDIM's argument


def test_zero_terminal_snr_eps_model_is_refused_and_v_model_runs_from_sigma_inf():
    zero = DDIMScheduler.from_config(SD15, timestep_spacing="trailing", rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr=True and prediction_type='epsilon'.*σ = inf"):
        txt2img(SamplerScheduler.from_config(zero.config))
    v = DDIMScheduler.from_config(SD15, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                                  prediction_type="v_prediction", set_alpha_to_one=True)
    shim = SamplerScheduler.from_config(v.config)
    torch.testing.assert_close(txt2img(shim), txt2img(v), **TOL)
    assert math.isinf(float(shim.schedule_sigmas[0]))


def test_step_outside_a_run_is_an_error():
    shim = SamplerScheduler.from_config(EulerDiscreteScheduler.from_config(SDXL).config)
    with pytest.raises(Unavailable, match="set_timesteps"):
        shim.step(NOISE, 999, NOISE)
    txt2img(shim, steps=2)
    with pytest.raises(Unavailable, match="finished"):
        shim.step(NOISE, 1, NOISE)


def test_import_samplers_does_not_import_diffusers_modules():
    import subprocess
    import sys
    code = ("import sys, samplers; "
            "print(any(m.startswith(('diffusers', 'samplers.interop.diffusers')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------------
# README: the "Use it in your pipeline" examples run as written (with a tiny pipeline standing in)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_pipeline_examples_run():
    pytest.importorskip("transformers")
    from test_diffusers_pipelines import EMB, NEG, SIZE, UNET, VAE  # tests/ is on sys.path under pytest
    from diffusers import StableDiffusionPipeline
    text = README.read_text()
    section = re.search(r"<!-- section:pipelines -->(.*?)<!-- /section:pipelines -->", text, flags=re.S)
    assert section, "README has no pipelines section"
    blocks = re.findall(r"```py\n(.*?)```", section.group(1), flags=re.S)
    assert len(blocks) >= 2
    pipe = StableDiffusionPipeline(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET,
                                   scheduler=EulerDiscreteScheduler.from_config(SDXL), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    env = {"pipe": pipe, "prompt_embeds": EMB, "negative_prompt_embeds": NEG, "height": SIZE, "width": SIZE,
           "__name__": "readme_pipelines"}
    with torch.no_grad():
        for block in blocks:
            exec(compile(block, str(README), "exec"), env)
    assert isinstance(pipe.scheduler, SamplerScheduler)
    assert env["image"].shape[-2:] == (SIZE, SIZE) and len(env["steps"]) == 20


def test_diffusers_page_registry_denoiser_example_runs():
    """docs/diffusers.md's "A diffusers model as a registry denoiser" block, with the page's pipeline objects (a tiny
    pipeline): it used a `noise` it never defined (NameError)."""
    pytest.importorskip("transformers")
    from test_diffusers_pipelines import EMB, NEG, SIZE, UNET, VAE
    from diffusers import StableDiffusionPipeline
    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "diffusers.md").read_text()
    section = page.split("## A diffusers model as a registry denoiser", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    pipe = StableDiffusionPipeline(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET,
                                   scheduler=EulerDiscreteScheduler.from_config(SDXL), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    env = {"pipe": pipe, "prompt_embeds": EMB, "negative_prompt_embeds": NEG, "height": SIZE, "width": SIZE,
           "__name__": "diffusers_page"}
    with torch.no_grad():
        exec(compile(blocks[0], "docs/diffusers.md", "exec"), env)
    latents = env["latents"]
    assert latents.shape == (1, 4, SIZE // 8, SIZE // 8) and bool(torch.isfinite(latents).all())


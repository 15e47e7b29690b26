"""SamplerScheduler: any registry sampler inside an unchanged diffusers pipeline.

Tiny randomly initialised pipelines are built here (no downloads; embeddings are passed directly, so no text
encoder runs): a StableDiffusion pipeline with a UNet2DConditionModel (eps and v) and an SD3 pipeline with
a flow transformer. The shim must reproduce diffusers' own Euler / DDIM / Heun / DPM++ 2M / FlowMatchEuler
schedulers, and run every registered sampler exactly as the registry does on the same model.
"""
from __future__ import annotations

import math
import pathlib
import re

import pytest
import torch

import samplers

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' SD/SD3 pipeline classes need it importable (no encoder runs)

from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler,
                       SD3Transformer2DModel, StableDiffusion3Pipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)

from samplers.interop.diffusers_models import denoiser_from_diffusers  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402
from samplers.core.native import RectifiedFlow, VPDiscrete  # noqa: E402
from samplers.problems import GaussianMixture  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
             steps_offset=1)
SIZE = 64  # pixels; latents are 8×8
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two cores shared by many processes: one intra-op thread is several times faster for these tiny models.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8).eval()


def tiny_transformer(seed=0):
    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                 caption_projection_dim=16, pooled_projection_dim=16).eval()


UNET = tiny_unet()
TRANSFORMER = tiny_transformer()
_g = torch.Generator().manual_seed(1)
EMB, NEG = torch.randn(1, 7, 32, generator=_g), torch.randn(1, 7, 32, generator=_g)
POOL, NEG_POOL = torch.randn(1, 16, generator=_g), torch.randn(1, 16, generator=_g)
NOISE = torch.randn(2, 4, 8, 8, generator=_g)


def sd_pipe(scheduler):
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=UNET, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_run(scheduler, steps, noise=NOISE, **kw):
    """Latents of a StableDiffusionPipeline run (CFG 3, output_type='latent': the VAE is not needed)."""
    return sd_pipe(scheduler)(prompt_embeds=EMB.expand(noise.shape[0], -1, -1),
                              negative_prompt_embeds=NEG.expand(noise.shape[0], -1, -1),
                              num_inference_steps=steps, height=SIZE, width=SIZE, latents=noise.clone(),
                              output_type="latent", guidance_scale=3.0, **kw).images


def sd3_run(scheduler, steps, noise=NOISE, **kw):
    pipe = StableDiffusion3Pipeline(transformer=TRANSFORMER, scheduler=scheduler, vae=None, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    b = noise.shape[0]
    return pipe(prompt_embeds=EMB.expand(b, -1, -1), negative_prompt_embeds=NEG.expand(b, -1, -1),
                pooled_prompt_embeds=POOL.expand(b, -1), negative_pooled_prompt_embeds=NEG_POOL.expand(b, -1),
                num_inference_steps=steps, height=SIZE, width=SIZE, latents=noise.clone(), output_type="latent",
                guidance_scale=3.0, **kw).images


def registered(name):
    if name not in samplers.available():
        pytest.skip(f"{name} is not registered yet")


# ----------------------------------------------------------------------------------------------------
# Parity with diffusers' own schedulers, through the unchanged pipeline


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("cls, sampler, kw, init", [
    (EulerDiscreteScheduler, "euler", dict(timestep_spacing="leading"), "unit"),
    (EulerDiscreteScheduler, "euler", dict(timestep_spacing="trailing"), "sigma"),  # Euler starts at σ_max·n
    (DDIMScheduler, "ddim", dict(timestep_spacing="leading", set_alpha_to_one=True, clip_sample=False), "unit"),
    (DDIMScheduler, "ddim", dict(timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False), "unit"),
    (HeunDiscreteScheduler, "heun", dict(timestep_spacing="leading"), "unit"),
    (DPMSolverMultistepScheduler, "dpmpp_2m", dict(timestep_spacing="trailing", algorithm_type="dpmsolver++",
                                                   solver_order=2, final_sigmas_type="zero"), "unit"),
], ids=["euler-leading", "euler-trailing", "ddim-leading", "ddim-trailing", "heun", "dpmpp_2m"])
def test_matches_diffusers_scheduler_in_sd_pipeline(cls, sampler, kw, init, prediction):
    registered(sampler)
    theirs = cls(**BETAS, **kw, prediction_type=prediction)
    steps = 5  # divides 1000, so DDIM's t − 1000//n is the next listed timestep
    ref = sd_run(theirs, steps)
    ours = SamplerScheduler.from_config(theirs.config, sampler=sampler, initial_noise=init)
    out = sd_run(ours, steps)
    assert len(ours.timesteps) == len(theirs.timesteps)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps.float(), rtol=0, atol=1e-3)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("cls, sampler", [(DDIMScheduler, "ddim"), (HeunDiscreteScheduler, "heun")])
def test_sample_prediction_matches_diffusers(cls, sampler):
    kw = dict(set_alpha_to_one=True, clip_sample=False) if cls is DDIMScheduler else {}
    theirs = cls(**BETAS, timestep_spacing="leading", prediction_type="sample", **kw)
    ref = sd_run(theirs, 5)
    torch.testing.assert_close(sd_run(SamplerScheduler.from_config(theirs.config, sampler=sampler), 5), ref, **TOL)


def test_zero_terminal_snr_v_model_matches_diffusers_ddim_from_sigma_inf():
    theirs = DDIMScheduler(**BETAS, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                           prediction_type="v_prediction", set_alpha_to_one=True, clip_sample=False)
    ref = sd_run(theirs, 5)
    ours = SamplerScheduler.from_config(theirs.config, sampler="ddim")
    out = sd_run(ours, 5)
    assert math.isinf(float(ours.schedule_sigmas[0]))  # ᾱ = 0 at t = 999: the exact step from σ = inf
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_matches_flow_match_euler_in_sd3_pipeline(shift):
    theirs = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref = sd3_run(theirs, 4)
    ours = SamplerScheduler.from_config(theirs.config, sampler="euler")
    assert ours.prediction == "flow" and isinstance(ours.native, RectifiedFlow)
    out = sd3_run(ours, 4)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=1e-3)
    torch.testing.assert_close(out, ref, **TOL)


def test_one_line_swap_keeps_the_pipeline_call():
    pipe = sd_pipe(EulerDiscreteScheduler(**BETAS))
    pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config, sampler="heun", schedule="karras")
    out = pipe(prompt_embeds=EMB, negative_prompt_embeds=NEG, num_inference_steps=3, height=SIZE, width=SIZE,
               output_type="latent", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    assert len(pipe.scheduler.timesteps) == 2 * 3 - 1 and pipe.scheduler.order == 2


# ----------------------------------------------------------------------------------------------------
# Every sampler: the shim's images equal the same sampler run directly on the wrapped UNet


def direct(name, scheduler, config, noise, seed, sigmas=None):
    """The registry sampler on denoiser_from_diffusers(UNET), from the shim's own schedule and start."""
    D = denoiser_from_diffusers(UNET, config, EMB, NEG, guidance_scale=3.0)
    schedule = scheduler.schedule_sigmas
    x_t = noise * scheduler.init_noise_sigma
    sigma_0 = float(schedule[0])
    x = x_t if math.isinf(sigma_0) else x_t * math.sqrt(1 + sigma_0**2)
    opts = {"seed": seed} if "seed" in samplers.info(name).options else {}
    return samplers.sample(name, D, x, schedule, disable=True, **opts)


FIXED_STEP = [n for n in samplers.available() if not samplers.info(n).host_sync]


@pytest.mark.parametrize("name", FIXED_STEP)
def test_every_sampler_in_pipeline_equals_direct_run(name):
    config = DDIMScheduler(**BETAS, clip_sample=False).config
    shim = SamplerScheduler.from_config(config, sampler=name, schedule="karras", seed=123)
    out = sd_run(shim, 3)
    ref = direct(name, shim, config, NOISE, 123)
    assert shim.num_inference_steps == len(shim.timesteps)
    torch.testing.assert_close(out, ref, **TOL)


# ----------------------------------------------------------------------------------------------------
# State: per run, per instance


GM = GaussianMixture.default(shape=(4, 4, 4), components=3, seed=2)
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
EPS = GM.as_model("eps", VP)


def eps_model(x_t, t):
    return EPS(x_t.double(), torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x_t.shape[0])).float()


def manual_loop(scheduler, noise, steps=None, **kw):
    if steps is not None:
        scheduler.set_timesteps(steps, **kw)
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        latents = scheduler.step(eps_model(scheduler.scale_model_input(latents, t), t), t, latents).prev_sample
    return latents


def gm_noise(batch=2):
    return GM.noise(batch, seed=4, dtype=torch.float32)


def make(sampler="dpmpp_2m", **kw):
    name = sampler if sampler in samplers.available() else "heun"
    return SamplerScheduler(sampler=name, **BETAS, **kw)


def test_set_timesteps_resets_a_half_finished_run():
    n = gm_noise()
    fresh = manual_loop(make(), n, 6)
    sch = make()
    sch.set_timesteps(6)
    latents = n.clone()
    for t in sch.timesteps[:3]:
        latents = sch.step(eps_model(latents, t), t, latents).prev_sample
    again = manual_loop(sch, n, 6)
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)


def test_two_instances_never_share_state():
    n = gm_noise()
    alone = manual_loop(make(), n, 5)
    a, b = make(), SamplerScheduler.from_config(make().config)
    a.set_timesteps(5)
    b.set_timesteps(5)
    xa, xb = n.clone(), (n * 0.5).clone()
    for t in a.timesteps:  # interleaved, as two pipelines on two threads would
        xb = b.step(eps_model(xb, t), t, xb).prev_sample
        xa = a.step(eps_model(xa, t), t, xa).prev_sample
    torch.testing.assert_close(xa, alone, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_latents_keep_their_dtype_and_a_float32_state(dtype):
    n = gm_noise()
    full = manual_loop(make("heun"), n, 5)
    sch = make("heun")
    sch.set_timesteps(5)
    latents = n.to(dtype)
    for t in sch.timesteps:
        out = sch.step(eps_model(latents.float(), t).to(dtype), t, latents)
        assert out.prev_sample.dtype == dtype and out.pred_original_sample.dtype == dtype
        latents = out.prev_sample
    assert sch._x_start.dtype == torch.float32
    torch.testing.assert_close(latents.float(), full, rtol=0.05, atol=0.05)


def test_step_outside_a_run_is_an_error():
    sch = make("euler")
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sch.step(torch.zeros(1, 4, 4, 4), 999, torch.zeros(1, 4, 4, 4))
    manual_loop(sch, gm_noise(1), 2)
    with pytest.raises(RuntimeError, match="finished"):
        sch.step(torch.zeros(1, 4, 4, 4), 1, torch.zeros(1, 4, 4, 4))


def test_stochastic_noise_comes_from_the_pipeline_generator():
    n = gm_noise()

    def run(gen):
        sch = make("euler_ancestral")
        sch.set_timesteps(4)
        latents = n.clone()
        for t in sch.timesteps:
            latents = sch.step(eps_model(latents, t), t, latents, generator=gen).prev_sample
        return latents

    a = run(torch.Generator().manual_seed(1))
    torch.testing.assert_close(run(torch.Generator().manual_seed(1)), a, rtol=0, atol=0)
    assert not torch.allclose(run(torch.Generator().manual_seed(2)), a)


def test_begin_index_for_img2img_equals_the_truncated_schedule():
    sch = make("heun", schedule="karras")
    sch.set_timesteps(6)
    start_step = 2
    begin = start_step * sch.order
    sch.set_begin_index(begin)
    x0, n = GM.sample(2, seed=9).float(), gm_noise()
    t0 = sch.timesteps[begin:begin + 1]
    latents = sch.add_noise(x0, n, t0)
    for t in sch.timesteps[begin:]:
        latents = sch.step(eps_model(latents, t), t, latents).prev_sample
    tail = sch.schedule_sigmas[start_step:]
    D = samplers.to_denoiser(eps_model, "eps", VP)
    ref = samplers.sample("heun", D, x0 + float(tail[0]) * n, tail, disable=True)
    torch.testing.assert_close(latents, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="first model call of a step"):
        sch.set_begin_index(begin + 1)


def tiny_vae():
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                         latent_channels=4, norm_num_groups=8, layers_per_block=1).eval()  # 8× down, like SD's


def test_img2img_pipeline_matches_diffusers_euler_and_runs_heun():
    from diffusers import StableDiffusionImg2ImgPipeline
    vae, image = tiny_vae(), torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))

    def run(scheduler):
        pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=UNET,
                                              scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe(prompt_embeds=EMB, negative_prompt_embeds=NEG, image=image, strength=0.6,
                    num_inference_steps=5, output_type="latent", generator=torch.Generator().manual_seed(0),
                    guidance_scale=3.0).images

    theirs = EulerDiscreteScheduler(**BETAS, timestep_spacing="trailing")
    ref = run(theirs)
    ours = SamplerScheduler.from_config(theirs.config, sampler="euler")
    torch.testing.assert_close(run(ours), ref, **TOL)  # add_noise + set_begin_index(2) in the real pipeline
    heun = SamplerScheduler.from_config(theirs.config, sampler="heun")
    assert torch.isfinite(run(heun)).all() and heun.begin_index == 2 * 2 and heun._done


def test_add_noise_and_scale_noise_match_diffusers():
    x0, n = GM.sample(2, seed=1).float(), gm_noise()
    t = torch.tensor([999, 500])
    ours = make("euler")
    torch.testing.assert_close(ours.add_noise(x0, n, t), DDPMScheduler(**BETAS).add_noise(x0, n, t), **TOL)
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow.set_timesteps(4)
    ours = SamplerScheduler.from_config(flow.config)
    ours.set_timesteps(4)
    t = flow.timesteps[1:2]
    torch.testing.assert_close(ours.scale_noise(x0, t, n), flow.scale_noise(x0, t, n), **TOL)


def test_dynamic_shift_with_flux_style_sigmas_matches_flow_match_euler():
    import numpy as np
    flow = RectifiedFlow(multiplier=1000.0)
    fmodel = GM.as_model("flow", flow)
    theirs = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    ours = SamplerScheduler.from_config(theirs.config, sampler="euler")
    sigmas, mu = np.linspace(1.0, 1 / 5, 5), 0.8
    out = []
    for sch in (theirs, ours):
        sch.set_timesteps(sigmas=sigmas, mu=mu)
        latents = gm_noise()
        for t in sch.timesteps:
            u = fmodel(latents.double(), t.double().expand(latents.shape[0])).float()
            latents = sch.step(u, t, latents).prev_sample
        out.append(latents)
    torch.testing.assert_close(out[1], out[0], **TOL)
    with pytest.raises(ValueError, match="mu"):
        ours.set_timesteps(5)


def test_plan_counts_every_model_call():
    sch = make("rk4")
    sch.set_timesteps(4)
    assert len(sch.timesteps) == 3 * 4 + 1 and sch.order == 4  # Euler on the last step to σ = 0
    assert len(sch.sigmas) == len(sch.timesteps) + 1 and float(sch.sigmas[-1]) == 0.0


def test_save_and_load_round_trip(tmp_path):
    sch = make("euler_ancestral", schedule="karras", sampler_options={"eta": 0.5}, seed=3)
    sch.save_pretrained(tmp_path)
    back = SamplerScheduler.from_pretrained(tmp_path)
    assert back.config.sampler == "euler_ancestral" and back.config.sampler_options == {"eta": 0.5}
    sch.set_timesteps(5)
    back.set_timesteps(5)
    torch.testing.assert_close(back.timesteps, sch.timesteps, rtol=0, atol=0)
    torch.testing.assert_close(manual_loop(back, gm_noise()), manual_loop(sch, gm_noise()), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# Configs that cannot work are errors


def test_config_errors():
    sd = EulerDiscreteScheduler(**BETAS).config
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    with pytest.raises(ValueError, match="unknown prediction_type"):
        SamplerScheduler.from_config(sd, prediction_type="noise")
    with pytest.raises(ValueError, match="VP"):
        SamplerScheduler.from_config(sd, prediction_type="flow_prediction")
    with pytest.raises(ValueError, match="flow-matching"):
        SamplerScheduler.from_config(flow, prediction_type="epsilon")
    with pytest.raises(ValueError, match="thresholding"):
        SamplerScheduler.from_config(DDPMScheduler(**BETAS, thresholding=True).config)
    with pytest.raises(ValueError, match="clip_sample"):
        SamplerScheduler.from_config(DDIMScheduler(**BETAS, clip_sample=True).config)
    with pytest.raises(samplers.UnknownNameError, match="eule"):
        SamplerScheduler.from_config(sd, sampler="eulr")
    with pytest.raises(samplers.UnknownNameError):
        SamplerScheduler.from_config(sd, schedule="karas")
    with pytest.raises(TypeError, match="no option"):
        SamplerScheduler.from_config(sd, sampler="euler", sampler_options={"eta": 1.0})
    zero_snr = SamplerScheduler.from_config(sd, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    with pytest.raises(ValueError, match="sigma = inf"):
        zero_snr.set_timesteps(4)  # an eps model carries no signal at zero SNR
    SamplerScheduler.from_config(sd, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                 timestep_spacing="trailing").set_timesteps(4)


def test_adaptive_samplers_are_refused():
    adaptive = [n for n in samplers.available() if samplers.info(n).host_sync]
    if not adaptive:
        pytest.skip("no adaptive sampler registered")
    with pytest.raises(ValueError, match="adaptive"):
        SamplerScheduler(sampler=adaptive[0])


def test_import_samplers_does_not_import_diffusers_modules():
    import subprocess
    import sys
    code = ("import sys, samplers; "
            "print(any(m.startswith(('diffusers', 'samplers.diffusers')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------------
# README: the "Use it in your pipeline" examples run as written (with a tiny pipeline standing in)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_pipeline_blocks():
    text = README.read_text()
    section = re.search(r"<!-- section:pipelines -->(.*?)<!-- /section:pipelines -->", text, flags=re.S)
    assert section, "README has no pipelines section"
    return re.findall(r"```py\n(.*?)```", section.group(1), flags=re.S)


def test_readme_pipeline_examples_run():
    blocks = readme_pipeline_blocks()
    assert len(blocks) >= 2
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=None, tokenizer=None, unet=UNET,
                                   scheduler=EulerDiscreteScheduler(**BETAS), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    env = {"pipe": pipe, "prompt_embeds": EMB, "negative_prompt_embeds": NEG, "height": SIZE, "width": SIZE,
           "__name__": "readme_pipelines"}
    with torch.no_grad():
        for block in blocks:
            exec(compile(block, str(README), "exec"), env)
    assert isinstance(pipe.scheduler, SamplerScheduler)
    assert env["image"].shape[-2:] == (SIZE, SIZE) and len(env["steps"]) == 20

"""The one-line swap in diffusers' real pipelines keeps the image: txt2img, img2img, inpaint, SD3.

``pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config)`` must give the latents the pipeline made with
its own scheduler (≤ 1e-5 in float32, the same generator consumed the same way). Tiny randomly initialised UNet /
transformer, prompt embeddings passed directly (no text encoder, no downloads); the schedulers are built from the
configs the model repositories ship (benchmarks.compatibility, which checks every class on a cheaper model).
"""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' SD/SD3 pipeline classes need it importable (no encoder runs)

from diffusers import (AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline,  # noqa: E402
                       StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)

from benchmarks.compatibility import CONFIGS, source_scheduler  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402
from samplers.core.errors import InvalidInput  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

SIZE = 64  # pixels; latents are 8×8


def assert_same(out, ref):
    """≤ 1e-5 of the latents' scale: the tiny random UNet's latents reach |x| ≈ 20-50 (real SD latents are O(1)),
    where 1e-5 absolute is a few float32 ulps (benchmarks.compatibility checks 1e-5 absolute on O(1) latents)."""
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * max(1.0, float(ref.abs().max())))



def _unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8).eval()


def _vae():
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                         latent_channels=4, norm_num_groups=8, layers_per_block=1).eval()  # 8× down, like SD's


UNET, VAE = _unet(), _vae()
_g = torch.Generator().manual_seed(1)
EMB, NEG = torch.randn(1, 7, 32, generator=_g), torch.randn(1, 7, 32, generator=_g)
NOISE = torch.randn(2, 4, 8, 8, generator=_g)
IMAGE = torch.rand(2, 3, SIZE, SIZE, generator=_g)
MASK = torch.zeros(2, 1, SIZE, SIZE)
MASK[..., 16:48, 8:40] = 1.0
COMMON = dict(prompt_embeds=EMB.expand(2, -1, -1), negative_prompt_embeds=NEG.expand(2, -1, -1), guidance_scale=3.0,
              output_type="latent")


def sd(pipeline_class, scheduler, **kw):
    pipe = pipeline_class(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET, scheduler=scheduler,
                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(3)  # DPMSolverSDE seeds its Brownian tree from torch's global generator
    with torch.no_grad():
        return pipe(**COMMON, **kw, generator=torch.Generator().manual_seed(7)).images


def both(name, config, run, **variant):
    """The pipeline's latents with diffusers' scheduler, and with the shim swapped in from its config."""
    theirs = source_scheduler(name, CONFIGS[config], variant)
    ref = run(theirs)
    ours = SamplerScheduler.from_config(theirs.config)
    return run(ours), ref, ours


TXT2IMG = [("EulerDiscreteScheduler", "SDXL"), ("DPMSolverMultistepScheduler", "SD-1.5"), ("DDIMScheduler", "SD-2.1-v"),
           ("PNDMScheduler", "SD-1.5"), ("EulerAncestralDiscreteScheduler", "SD-1.5"), ("UniPCMultistepScheduler", "SDXL"),
           ("HeunDiscreteScheduler", "SD-1.5"), ("DPMSolverSDEScheduler", "SD-1.5"), ("LMSDiscreteScheduler", "SD-2.1-v")]


@pytest.mark.parametrize("name, config", TXT2IMG, ids=[f"{n}-{c}" for n, c in TXT2IMG])
def test_txt2img_keeps_the_image(name, config):
    out, ref, ours = both(name, config, lambda s: sd(StableDiffusionPipeline, s, num_inference_steps=5, height=SIZE,
                                                     width=SIZE, latents=NOISE.clone()))
    assert ours.config.sampler is None  # the algorithm came from the config's class
    assert_same(out, ref)


@pytest.mark.parametrize("eta", [0.3, 0.0])
def test_tcd_in_the_pipeline_keeps_the_image(eta):
    # the TCD LoRAs' documented call: eta=0.3 reaches TCDScheduler.step as its γ (the pipeline's default eta is 0)
    out, ref, ours = both("TCDScheduler", "SD-1.5", lambda s: sd(StableDiffusionPipeline, s, num_inference_steps=4,
                                                              height=SIZE, width=SIZE, latents=NOISE.clone(), eta=eta))
    assert ours.spec.name == "tcd" and ours._eta == eta
    assert_same(out, ref)


def test_dpm_karras_rounds_its_timesteps_as_diffusers():
    # the shim evaluates the UNet at diffusers' rounded timesteps while stepping with the unrounded sigmas
    out, ref, ours = both("DPMSolverMultistepScheduler", "SD-1.5",
                          lambda s: sd(StableDiffusionPipeline, s, num_inference_steps=5, height=SIZE, width=SIZE,
                                       latents=NOISE.clone()), use_karras_sigmas=True)
    assert ours.timesteps.dtype == torch.int64
    assert_same(out, ref)


@pytest.mark.parametrize("name, config", [("DDIMScheduler", "SD-1.5"), ("EulerDiscreteScheduler", "SDXL"),
                                          ("DPMSolverMultistepScheduler", "SD-2.1-v")])
def test_img2img_keeps_the_image(name, config):
    out, ref, _ = both(name, config, lambda s: sd(StableDiffusionImg2ImgPipeline, s, image=IMAGE, strength=0.6,
                                                  num_inference_steps=5))
    assert_same(out, ref)


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DDIMScheduler", "HeunDiscreteScheduler"])
def test_img2img_with_no_step_left_names_strength_and_the_fix(name):
    # int(num_inference_steps × strength) = 0: the pipeline starts after the last timestep (diffusers returns an
    # empty batch); the shim refuses before any model call, naming the cause, not an index limit
    ours = SamplerScheduler.from_config(source_scheduler(name, CONFIGS["SD-1.5"], {}).config)
    with pytest.raises(InvalidInput, match=r"strength × num_inference_steps < 1 .*Raise strength to at least "
                                           r"1/num_inference_steps \(≥ 0\.5 here\), or num_inference_steps"):
        sd(StableDiffusionImg2ImgPipeline, ours, image=IMAGE, strength=0.3, num_inference_steps=2)


@pytest.mark.parametrize("name, config", [("DPMSolverMultistepScheduler", "SD-1.5"), ("EulerDiscreteScheduler", "SDXL"),
                                          ("HeunDiscreteScheduler", "SD-1.5"), ("KDPM2DiscreteScheduler", "SD-1.5"),
                                          ("DPMSolverSDEScheduler", "SDXL")])
def test_inpaint_keeps_the_image(name, config):
    # KDPM2 / DPMSolverSDE: add_noise reads σ from the class's own table (σ_{i+1} after a half step)
    # the 4-channel inpainting blend changes the latent between steps: the sampler continues from the blended one
    out, ref, _ = both(name, config, lambda s: sd(StableDiffusionInpaintPipeline, s, image=IMAGE, mask_image=MASK,
                                                  strength=0.8, num_inference_steps=5, height=SIZE, width=SIZE))
    assert_same(out, ref)


@pytest.mark.parametrize("pipeline_class, extra, bound", [
    (StableDiffusionImg2ImgPipeline, {}, 3e-5),
    (StableDiffusionInpaintPipeline, {"mask_image": MASK, "height": SIZE, "width": SIZE}, 4e-5)])
def test_zero_snr_img2img_and_inpaint_match_below_strength_one_and_carry_the_first_step_rounding_at_one(
        pipeline_class, extra, bound):
    """docs/diffusers.md: on a zero-SNR config Euler's img2img / inpaint below strength 1 start below σ_max and match;
    at strength 1 (diffusers' inpaint default) they start at σ_max = 4096 and carry diffusers' float32 first step,
    as txt2img does: 1.76e-5 and 2.60e-5 of the latents' scale here at 5 steps on the reference CPU (held to 1.7x
    that: another CPU's float32 rounding differs, docs/diffusers.md)."""
    def run(strength):
        return both("EulerDiscreteScheduler", "zero-SNR-v", lambda s: sd(pipeline_class, s, image=IMAGE,
                                                                        strength=strength, num_inference_steps=5,
                                                                        **extra))
    out, ref, _ = run(0.999)
    assert_same(out, ref)
    out, ref, _ = run(1.0)
    gap = float((out - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    assert gap <= bound, gap


@pytest.mark.parametrize("name, config", [("DDIMScheduler", "SD-1.5"), ("DPMSolverMultistepScheduler", "SD-1.5")])
def test_sag_keeps_the_image(name, config):
    # StableDiffusionSAGPipeline reads scheduler.alphas_cumprod[t] (its x0 / ε estimates) and add_noise mid-run
    from diffusers import StableDiffusionSAGPipeline

    out, ref, _ = both(name, config, lambda s: sd(StableDiffusionSAGPipeline, s, sag_scale=0.75, num_inference_steps=5,
                                                  height=SIZE, width=SIZE, latents=NOISE.clone()))
    assert_same(out, ref)


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"])
def test_sd3_flow_match_keeps_the_image(name):
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=16).eval()
    pool, neg_pool = torch.randn(2, 16, generator=_g), torch.randn(2, 16, generator=_g)

    def run(scheduler):
        pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=None, text_encoder=None,
                                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                        tokenizer_3=None)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            return pipe(**COMMON, pooled_prompt_embeds=pool, negative_pooled_prompt_embeds=neg_pool,
                        num_inference_steps=4, height=SIZE, width=SIZE, latents=NOISE.clone()).images

    out, ref, _ = both(name, "SD3", run)
    assert_same(out, ref)


BUILT_IN_CODE = [("DDPMScheduler", {}),  # clip_sample defaults to True: the pipeline sets it to False
                 ("DDIMScheduler", dict(clip_sample=False)),  # steps_offset defaults to 0: the pipeline sets 1
                 ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=False)),
                 ("EulerDiscreteScheduler", dict(timestep_spacing="leading"))]


@pytest.mark.parametrize("name, kw", BUILT_IN_CODE, ids=[f"{n}-{'-'.join(k)}" for n, k in BUILT_IN_CODE])
@pytest.mark.parametrize("pipeline_class", [StableDiffusionPipeline, StableDiffusionImg2ImgPipeline])
def test_pipeline_config_fixes_reach_the_shim(name, kw, pipeline_class):
    # StableDiffusion{,Img2Img,Inpaint}Pipeline rewrite an outdated scheduler config at construction
    # (scheduler._internal_dict = FrozenDict({..., steps_offset: 1, clip_sample: False})); the shim follows its live
    # config as the replaced class does
    base = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **kw)
    cls = getattr(diffusers, name)
    if pipeline_class is StableDiffusionPipeline:
        args = dict(num_inference_steps=5, height=SIZE, width=SIZE, latents=NOISE.clone())
    else:
        args = dict(image=IMAGE, strength=0.6, num_inference_steps=5)
    ours = SamplerScheduler.from_config(cls(**base).config)
    ref, out = sd(pipeline_class, cls(**base), **args), sd(pipeline_class, ours, **args)
    assert ours.config.steps_offset == 1 and ours.config.source_config["steps_offset"] == 1
    assert not ours.config.get("clip_sample", False) and not ours.config.source_config.get("clip_sample", False)
    assert_same(out, ref)

"""The one-line swap keeps the image in more of the diffusers pipelines users ship: ControlNet, SDXL inpaint,
InstructPix2Pix, AnimateDiff, PixArt, Kandinsky 2.2, SD3 / Flux img2img.

``pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config)`` must give the latents the pipeline made with
its own scheduler (≤ 1e-5 of the latents' scale, float32, the same model and generator). An audit ran the shim in
these pipelines with tiny random models (no downloads, prompt / image embeddings passed directly) and found every one
within that bound; this file locks those results in on the pipelines and scheduler classes users ship most, with the
scheduler configs the model repositories ship (benchmarks.compatibility's CONFIGS, or the repository's own written
out below). tests/test_diffusers_pipelines.py covers plain SD txt2img / img2img / inpaint and SD3 txt2img.
"""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' pipeline classes need it importable (no encoder runs)

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from benchmarks.compatibility import CONFIGS, source_scheduler  # noqa: E402
from conftest import tiny_sdxl_unet  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

SIZE = 64  # pixels; the SD-family latents are 8×8

# scheduler/scheduler_config.json as the model repositories ship it, where benchmarks.compatibility has none
ANIMATEDIFF = dict(_class_name="DDIMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                   clip_sample=False, timestep_spacing="linspace", steps_offset=1)
PIXART = dict(_class_name="DPMSolverMultistepScheduler", beta_end=0.02, beta_schedule="linear", beta_start=0.0001,
              num_train_timesteps=1000, prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++",
              solver_type="midpoint", lower_order_final=True, use_karras_sigmas=False, thresholding=False,
              sample_max_value=1.0, dynamic_thresholding_ratio=0.995, timestep_spacing="linspace", steps_offset=0,
              trained_betas=None, variance_type=None, euler_at_final=False)
KANDINSKY22 = dict(_class_name="DDPMScheduler", beta_end=0.012, beta_schedule="linear", beta_start=0.00085,
                   clip_sample=False, clip_sample_range=1.0, dynamic_thresholding_ratio=0.995, num_train_timesteps=1000,
                   prediction_type="epsilon", sample_max_value=1.0, steps_offset=1, thresholding=False,
                   timestep_spacing="leading", trained_betas=None, variance_type="fixed_small")
FLUX = dict(_class_name="FlowMatchEulerDiscreteScheduler", base_image_seq_len=256, base_shift=0.5,
            max_image_seq_len=4096, max_shift=1.15, num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)


def assert_same(out, ref):
    """≤ 1e-5 of the latents' scale (as tests/test_diffusers_pipelines.py: the tiny random models' latents are
    large)."""
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * max(1.0, float(ref.abs().max())))


def both(name, config, run, **variant):
    """The pipeline's latents with diffusers' scheduler, and with the shim swapped in from its config (torch's global
    generator seeded the same before each run, the pipeline's generator made afresh inside ``run``)."""
    theirs = source_scheduler(name, CONFIGS[config] if isinstance(config, str) else config, variant)
    torch.manual_seed(3)
    with torch.no_grad():
        ref = run(theirs)
    ours = SamplerScheduler.from_config(theirs.config)
    torch.manual_seed(3)
    with torch.no_grad():
        out = run(ours)
    assert ours.config.sampler is None  # the algorithm came from the config's class
    return out, ref


def pipeline_class(name):
    cls = getattr(diffusers, name, None)
    if cls is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {name}")
    return cls


def generator():
    return torch.Generator().manual_seed(7)


def _unet(**kw):
    torch.manual_seed(0)
    args = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=32,
                attention_head_dim=8)
    return UNet2DConditionModel(**{**args, **kw}).eval()


def _vae(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
                norm_num_groups=8, layers_per_block=1)  # 8× down, like SD's
    return AutoencoderKL(**{**args, **kw}).eval()


_g = torch.Generator().manual_seed(1)
EMB, NEG = torch.randn(1, 7, 32, generator=_g), torch.randn(1, 7, 32, generator=_g)
NOISE = torch.randn(1, 4, 8, 8, generator=_g)
IMAGE = torch.rand(1, 3, SIZE, SIZE, generator=_g)
COND = torch.rand(1, 3, SIZE, SIZE, generator=_g)
MASK = torch.zeros(1, 1, SIZE, SIZE)
MASK[..., 16:48, 8:40] = 1.0
SD_EMBEDS = dict(prompt_embeds=EMB, negative_prompt_embeds=NEG)


@pytest.fixture(scope="module")
def sd_models():
    return _unet(), _vae()


# ---- ControlNet (SD 1.5)

@pytest.fixture(scope="module")
def controlnet(sd_models):
    cls = pipeline_class("ControlNetModel")
    torch.manual_seed(0)
    return cls.from_unet(sd_models[0], conditioning_embedding_out_channels=(16, 16, 16, 16)).eval()


def _controlnet_pipe(name, scheduler, sd_models, controlnet):
    unet, vae = sd_models
    pipe = pipeline_class(name)(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=controlnet,
                                scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


SD15_CLASSES = ["UniPCMultistepScheduler", "EulerAncestralDiscreteScheduler"]


@pytest.mark.parametrize("name", SD15_CLASSES)
def test_controlnet_txt2img_keeps_the_image(name, sd_models, controlnet):
    def run(s):
        return _controlnet_pipe("StableDiffusionControlNetPipeline", s, sd_models, controlnet)(
            **SD_EMBEDS, image=COND, guidance_scale=3.0, num_inference_steps=4, height=SIZE, width=SIZE,
            latents=NOISE.clone(), output_type="latent", generator=generator()).images

    assert_same(*both(name, "SD-1.5", run))


@pytest.mark.parametrize("name", SD15_CLASSES)
def test_controlnet_inpaint_keeps_the_image(name, sd_models, controlnet):
    # 4-channel UNet: the pipeline blends the known region back (add_noise at the next timestep) after every step
    def run(s):
        return _controlnet_pipe("StableDiffusionControlNetInpaintPipeline", s, sd_models, controlnet)(
            **SD_EMBEDS, image=IMAGE, mask_image=MASK, control_image=COND, strength=0.8, guidance_scale=3.0,
            num_inference_steps=4, height=SIZE, width=SIZE, output_type="latent", generator=generator()).images

    assert_same(*both(name, "SD-1.5", run))


# ---- SDXL inpaint (4-channel UNet)

def _sdxl_unet():
    return tiny_sdxl_unet()


@pytest.fixture(scope="module")
def sdxl_inpaint():
    cls = pipeline_class("StableDiffusionXLInpaintPipeline")
    g = torch.Generator().manual_seed(11)
    embeds = dict(prompt_embeds=torch.randn(1, 7, 64, generator=g),
                  negative_prompt_embeds=torch.randn(1, 7, 64, generator=g),
                  pooled_prompt_embeds=torch.randn(1, 32, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(1, 32, generator=g))
    return cls, _sdxl_unet(), _vae(), embeds


@pytest.mark.parametrize("strength", [0.6, 1.0])
@pytest.mark.parametrize("name, variant", [("EulerDiscreteScheduler", {}),
                                           ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})],
                         ids=["Euler", "DPMSolverMultistep-karras"])
def test_sdxl_inpaint_keeps_the_image(name, variant, strength, sdxl_inpaint):
    # strength 1.0 starts from pure noise (σ_max-scaled); 0.6 from the noised image at the strength's timestep
    cls, unet, vae, embeds = sdxl_inpaint

    def run(s):
        pipe = cls(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
                   scheduler=s, force_zeros_for_empty_prompt=False, requires_aesthetics_score=False)
        pipe.set_progress_bar_config(disable=True)
        # 5 steps at 0.6: three run (a second-order DPM step among them); 4 at 1.0
        return pipe(**embeds, image=IMAGE, mask_image=MASK, strength=strength, guidance_scale=3.0,
                    num_inference_steps=5 if strength < 1 else 4, height=SIZE, width=SIZE, output_type="latent",
                    generator=generator()).images

    assert_same(*both(name, "SDXL", run, **variant))


# ---- InstructPix2Pix (8-channel UNet, three-way guidance)

@pytest.fixture(scope="module")
def ip2p(sd_models):
    return pipeline_class("StableDiffusionInstructPix2PixPipeline"), _unet(in_channels=8), sd_models[1]


def test_instruct_pix2pix_keeps_the_image(ip2p):
    cls, unet, vae = ip2p

    def run(s):
        pipe = cls(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=s, safety_checker=None,
                   feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe(**SD_EMBEDS, image=IMAGE, num_inference_steps=4, guidance_scale=3.0, image_guidance_scale=1.5,
                    output_type="latent", generator=generator()).images

    assert_same(*both("EulerAncestralDiscreteScheduler", "SD-1.5", run))


# ---- AnimateDiff (tiny MotionAdapter, 5-D latents)

@pytest.fixture(scope="module")
def animatediff(sd_models):
    cls = pipeline_class("AnimateDiffPipeline")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 8), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=2).eval()
    torch.manual_seed(0)
    adapter = diffusers.MotionAdapter(block_out_channels=(8, 8), motion_layers_per_block=1, motion_norm_num_groups=2,
                                      motion_num_attention_heads=4).eval()
    g = torch.Generator().manual_seed(1)
    embeds = dict(prompt_embeds=torch.randn(1, 7, 8, generator=g),
                  negative_prompt_embeds=torch.randn(1, 7, 8, generator=g))
    return cls, unet, adapter, sd_models[1], embeds


@pytest.mark.parametrize("name, variant", [("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
                                           ("LCMScheduler", {})], ids=["DPMSolverMultistep-karras", "LCM"])
def test_animatediff_keeps_the_video(name, variant, animatediff):
    cls, unet, adapter, vae, embeds = animatediff

    def run(s):
        pipe = cls(vae=vae, text_encoder=None, tokenizer=None, unet=unet, motion_adapter=adapter, scheduler=s)
        pipe.set_progress_bar_config(disable=True)
        frames = pipe(**embeds, guidance_scale=3.0, num_frames=2, height=SIZE, width=SIZE, num_inference_steps=4,
                      output_type="latent", generator=generator()).frames
        assert frames.dim() == 5
        return frames

    assert_same(*both(name, ANIMATEDIFF, run, **variant))


# ---- PixArt-Σ (DiT, learned-sigma output the pipeline splits off)

@pytest.fixture(scope="module")
def pixart():
    cls = pipeline_class("PixArtSigmaPipeline")
    torch.manual_seed(0)
    transformer = diffusers.PixArtTransformer2DModel(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6).eval()
    return cls, transformer, _vae()


def test_pixart_sigma_keeps_the_image(pixart):
    cls, transformer, vae = pixart
    mask = torch.ones(1, 7)

    def run(s):
        pipe = cls(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=s)
        pipe.set_progress_bar_config(disable=True)
        return pipe(**SD_EMBEDS, prompt_attention_mask=mask, negative_prompt_attention_mask=mask, negative_prompt=None,
                    guidance_scale=3.0, num_inference_steps=4, height=SIZE, width=SIZE, use_resolution_binning=False,
                    latents=NOISE.clone(), output_type="latent", generator=generator()).images

    assert_same(*both("DPMSolverMultistepScheduler", PIXART, run))


# ---- Kandinsky 2.2 decoder (image embeddings, learned-variance UNet output)

@pytest.fixture(scope="module")
def kandinsky22():
    cls = pipeline_class("KandinskyV22Pipeline")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=32, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None, sample_size=8).eval()
    torch.manual_seed(0)
    movq = diffusers.VQModel(block_out_channels=[32, 32],
                             down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], in_channels=3,
                             latent_channels=4, layers_per_block=1, norm_num_groups=32, norm_type="spatial",
                             num_vq_embeddings=12, out_channels=3,
                             up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"], vq_embed_dim=4).eval()
    g = torch.Generator().manual_seed(1)
    return cls, unet, movq, torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g)


def test_kandinsky22_ddpm_fixed_small_keeps_the_image(kandinsky22):
    # DDPM draws its step noise from the pipeline's generator: the shim must draw the same, in the same order
    cls, unet, movq, image_embeds, negative = kandinsky22

    def run(s):
        pipe = cls(unet=unet, scheduler=s, movq=movq)
        pipe.set_progress_bar_config(disable=True)
        return pipe(image_embeds=image_embeds, negative_image_embeds=negative, height=16, width=16,
                    num_inference_steps=4, guidance_scale=3.0, output_type="latent", generator=generator()).images

    assert_same(*both("DDPMScheduler", KANDINSKY22, run))


# ---- flow matching img2img: SD3, Flux

@pytest.fixture(scope="module")
def sd3_img2img():
    cls = pipeline_class("StableDiffusion3Img2ImgPipeline")
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4,
                                                  num_layers=1, attention_head_dim=8, num_attention_heads=2,
                                                  joint_attention_dim=32, caption_projection_dim=16,
                                                  pooled_projection_dim=16).eval()
    g = torch.Generator().manual_seed(1)
    embeds = dict(prompt_embeds=torch.randn(1, 7, 32, generator=g),
                  negative_prompt_embeds=torch.randn(1, 7, 32, generator=g),
                  pooled_prompt_embeds=torch.randn(1, 16, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(1, 16, generator=g))
    return cls, transformer, _vae(shift_factor=0.0609, scaling_factor=1.5305), embeds


def test_sd3_img2img_keeps_the_image(sd3_img2img):
    # img2img on a flow-matching schedule: set_begin_index + scale_noise at the strength's sigma
    cls, transformer, vae, embeds = sd3_img2img

    def run(s):
        pipe = cls(transformer=transformer, scheduler=s, vae=vae, text_encoder=None, tokenizer=None,
                   text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe(**embeds, image=IMAGE, strength=0.6, num_inference_steps=5, guidance_scale=3.0,
                    output_type="latent", generator=generator()).images

    assert_same(*both("FlowMatchEulerDiscreteScheduler", "SD3", run))


@pytest.fixture(scope="module")
def flux_img2img():
    cls = pipeline_class("FluxImg2ImgPipeline")
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                                   attention_head_dim=16, num_attention_heads=2,
                                                   joint_attention_dim=32, pooled_projection_dim=32,
                                                   axes_dims_rope=[4, 4, 8]).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035).eval()
    g = torch.Generator().manual_seed(1)
    embeds = dict(prompt_embeds=torch.randn(1, 7, 32, generator=g),
                  pooled_prompt_embeds=torch.randn(1, 32, generator=g))
    return cls, transformer, vae, embeds, torch.rand(1, 3, 16, 16, generator=g)


def test_flux_img2img_keeps_the_image(flux_img2img):
    # Flux's config shifts the schedule by the image's sequence length (use_dynamic_shifting: the pipeline passes mu)
    cls, transformer, vae, embeds, image = flux_img2img

    def run(s):
        pipe = cls(transformer=transformer, scheduler=s, vae=vae, text_encoder=None, tokenizer=None,
                   text_encoder_2=None, tokenizer_2=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe(**embeds, image=image, strength=0.6, num_inference_steps=5, height=16, width=16,
                    output_type="latent", generator=generator()).images

    assert_same(*both("FlowMatchEulerDiscreteScheduler", FLUX, run))

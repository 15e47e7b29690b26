"""Code that saves and restores a scheduler's ``__dict__`` gets the replaced class's behaviour from the shim.

StableDiffusionPanoramaPipeline (MultiDiffusion) keeps one scheduler state per view: it deep-copies
``scheduler.__dict__`` once into a list shared by every view (``[copy.deepcopy(d)] * len(views)``), and per view
restores it with ``scheduler.__dict__.update(...)``, steps, and stores a fresh deep copy. diffusers' classes only rebind
their attributes, so the first view's step leaves the shared dict as it was; a shim that changed its run state in place
(its list of denoised latents, its noise object) leaked the first view's step into every other view's start (the
second view then failed on a missing starting latent). The shim rebinds that state instead (copy-on-write).
"""
from __future__ import annotations

import copy

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' SD pipeline classes need it importable (no encoder runs)

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from benchmarks.compatibility import CONFIGS, source_scheduler  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()
StableDiffusionPanoramaPipeline = getattr(diffusers, "StableDiffusionPanoramaPipeline", None)


def assert_same(out, ref):
    """≤ 1e-5 of the latents' scale (as tests/test_diffusers_pipelines.py: the tiny random UNet's latents are large)."""
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * max(1.0, float(ref.abs().max())))


def _models():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        latent_channels=4, norm_num_groups=8, layers_per_block=1).eval()
    return unet, vae


UNET, VAE = _models()
_g = torch.Generator().manual_seed(1)
EMB = torch.randn(1, 7, 32, generator=_g)


def panorama(scheduler):
    """The pipeline's latents: 512 × 576 pixels is a 64 × 72 latent, two views of its 64-wide window (stride 8)."""
    pipe = StableDiffusionPanoramaPipeline(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe.get_views(512, 576)) == 2
    with torch.no_grad():
        # guidance_scale=1: no classifier-free guidance, one UNet batch item per view (the test's time)
        return pipe(prompt_embeds=EMB, height=512, width=576, num_inference_steps=3, guidance_scale=1.0,
                    output_type="latent", generator=torch.Generator().manual_seed(7)).images


PANORAMA = [("DDIMScheduler", "SD-1.5"), ("EulerDiscreteScheduler", "SDXL"), ("EulerAncestralDiscreteScheduler", "SDXL"),
            ("DPMSolverMultistepScheduler", "SD-1.5")]


@pytest.mark.skipif(StableDiffusionPanoramaPipeline is None, reason="this diffusers has no StableDiffusionPanoramaPipeline")
@pytest.mark.parametrize("name, config", PANORAMA, ids=[f"{n}-{c}" for n, c in PANORAMA])
def test_panorama_keeps_the_image(name, config):
    # each view restores the state the pipeline saved for it; EulerAncestral draws each view's noise from the
    # pipeline's generator in the order diffusers' class does (view by view, step by step)
    theirs = source_scheduler(name, CONFIGS[config], {})
    ref = panorama(theirs)
    assert_same(panorama(SamplerScheduler.from_config(theirs.config)), ref)


def _shallow(d):
    return dict(d)


SNAPSHOTS = {"shallow": _shallow, "deep": copy.deepcopy}
UNIT = [("DDIMScheduler", "SD-1.5"), ("EulerAncestralDiscreteScheduler", "SDXL"), ("DPMSolverMultistepScheduler", "SD-1.5")]


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
@pytest.mark.parametrize("name, config", UNIT, ids=[f"{n}-{c}" for n, c in UNIT])
def test_restored_dict_steps_as_before(name, config, snapshot):
    # a snapshot of __dict__ (a shallow copy or a deep one) taken before a step, restored after it: the next step is
    # that step again, with the output a fresh scheduler's run gives; a stochastic step draws its noise anew from the
    # generator it is given then (not the draw the undone step took from another)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=g)
    outs = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(3)]
    cfg = source_scheduler(name, CONFIGS[config], {}).config

    def step(s, k, sample, seed):
        t = s.timesteps[k]
        s.scale_model_input(sample, t)
        return s.step(outs[k], t, sample, generator=torch.Generator().manual_seed(seed)).prev_sample

    fresh = SamplerScheduler.from_config(cfg)
    fresh.set_timesteps(4)
    start = x * fresh.init_noise_sigma
    expected = [step(fresh, 0, start, 10)]
    expected.append(step(fresh, 1, expected[0], 21))
    expected.append(step(fresh, 2, expected[1], 22))

    s = SamplerScheduler.from_config(cfg)
    s.set_timesteps(4)
    before_first = SNAPSHOTS[snapshot](s.__dict__)
    step(s, 0, start, 30)
    s.__dict__.update(before_first)  # back to the start of the run: the first step again
    assert s.step_index is None
    first = step(s, 0, start, 10)
    torch.testing.assert_close(first, expected[0], rtol=0, atol=0)

    before_second = SNAPSHOTS[snapshot](s.__dict__)
    second = step(s, 1, first * 1.5, 11)  # a latent the caller changed (the shim continues from it)
    step(s, 2, second, 12)  # a later step, then back to before the second
    s.__dict__.update(before_second)
    assert s.step_index == 1
    tol = dict(rtol=0, atol=1e-6 * float(expected[2].abs().max()))
    torch.testing.assert_close(step(s, 1, first, 21), expected[1], **tol)
    torch.testing.assert_close(step(s, 2, expected[1], 22), expected[2], **tol)


@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_restored_dict_keeps_its_planned_run(snapshot):
    # a snapshot taken after set_timesteps(4), restored after set_timesteps(20): the 4-step run, started later
    # (img2img's set_begin_index), as a fresh scheduler runs it (LMS started at step 2 weights its first steps on
    # the sigmas of the steps before, which the source class's own tables give)
    cfg = source_scheduler("LMSDiscreteScheduler", CONFIGS["SD-1.5"], {}).config
    g = torch.Generator().manual_seed(3)
    x, outs = torch.randn(1, 4, 8, 8, generator=g), [torch.randn(1, 4, 8, 8, generator=g) for _ in range(2)]

    def tail(s):
        s.set_begin_index(2)
        sample = x
        for k, out in zip((2, 3), outs):
            s.scale_model_input(sample, s.timesteps[k])
            sample = s.step(out, s.timesteps[k], sample).prev_sample
        return sample

    fresh = SamplerScheduler.from_config(cfg)
    fresh.set_timesteps(4)
    s = SamplerScheduler.from_config(cfg)
    s.set_timesteps(4)
    saved = SNAPSHOTS[snapshot](s.__dict__)
    s.set_timesteps(20)
    s.__dict__.update(saved)
    torch.testing.assert_close(tail(s), tail(fresh), rtol=0, atol=0)


def test_views_sharing_one_saved_state_each_start_the_run():
    # the panorama pipeline's own pattern, on the scheduler alone: one saved dict shared by every view
    cfg = source_scheduler("EulerAncestralDiscreteScheduler", CONFIGS["SDXL"], {}).config
    s = SamplerScheduler.from_config(cfg)
    s.set_timesteps(3)
    g = torch.Generator().manual_seed(4)
    views = [torch.randn(1, 4, 8, 8, generator=g) * s.init_noise_sigma for _ in range(2)]
    saved = [copy.deepcopy(s.__dict__)] * len(views)
    t = s.timesteps[0]
    results = []
    for j, latent in enumerate(views):
        s.__dict__.update(saved[j])
        s.scale_model_input(latent, t)
        results.append(s.step(-latent, t, latent, generator=torch.Generator().manual_seed(5)).prev_sample)
        saved[j] = copy.deepcopy(s.__dict__)
    for latent, got in zip(views, results):
        alone = SamplerScheduler.from_config(cfg)
        alone.set_timesteps(3)
        alone.scale_model_input(latent, t)
        want = alone.step(-latent, t, latent, generator=torch.Generator().manual_seed(5)).prev_sample
        torch.testing.assert_close(got, want, rtol=0, atol=0)

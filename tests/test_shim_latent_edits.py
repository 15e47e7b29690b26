"""A latent the pipeline changes between steps reaches the sampler as it reaches diffusers' scheduler; the shim's
config holds the keys the replaced class's config holds.

- A ``callback_on_step_end`` that edits ``latents`` in place (``mul_``, ``latents[:, 0] = 0``) is an edit, as one
  that returns a new tensor is: the shim tells them apart from the latent it returned by the tensor's version
  counter (no host sync, no comparison of values).
- Heun-type classes: an edit before a second-stage call enters only the slope there, as diffusers'
  HeunDiscreteScheduler / FlowMatchHeunDiscreteScheduler step from their stored first-stage sample.
- ``scheduler.config.get(key, default)`` falls back for a key the source class does not take, as with the real class
  (StableDiffusion3Pipeline reads ``max_shift`` with a default of 1.16).

Tiny random UNet / transformer, prompt embeddings passed directly, float32: the latents must match diffusers' to
1e-5 of their scale (an edit the shim missed moves them by 7e-3 to 5e-1).
"""
from __future__ import annotations

import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' SD/SD3 pipeline classes need it importable (no encoder runs)

from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline, StableDiffusionPipeline  # noqa: E402

from benchmarks.compatibility import CONFIGS  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402
from test_diffusers_pipelines import EMB, NEG, SIZE, UNET, VAE, assert_same  # noqa: E402  (the same tiny SD models)

diffusers.utils.logging.set_verbosity_error()


def _transformer():
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                 caption_projection_dim=16, pooled_projection_dim=16).eval()


TRANSFORMER = _transformer()
_g = torch.Generator().manual_seed(2)
POOL, NEG_POOL = torch.randn(2, 16, generator=_g), torch.randn(2, 16, generator=_g)
NOISE = torch.randn(2, 4, 8, 8, generator=_g)
COMMON = dict(prompt_embeds=EMB.expand(2, -1, -1), negative_prompt_embeds=NEG.expand(2, -1, -1), guidance_scale=3.0,
              output_type="latent", height=SIZE, width=SIZE)


def sd(scheduler, steps=4, callback=None, mode=torch.no_grad):
    pipe = StableDiffusionPipeline(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"]) if callback else {}
    with mode():
        return pipe(**COMMON, **kw, num_inference_steps=steps, latents=NOISE.clone(),
                    generator=torch.Generator().manual_seed(7)).images


def sd3(scheduler, steps=4, callback=None):
    pipe = StableDiffusion3Pipeline(transformer=TRANSFORMER, scheduler=scheduler, vae=None, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"]) if callback else {}
    with torch.no_grad():
        return pipe(**COMMON, **kw, pooled_prompt_embeds=POOL, negative_pooled_prompt_embeds=NEG_POOL,
                    num_inference_steps=steps, latents=NOISE.clone()).images


def real(name, config="SD-1.5", **variant):
    """A fresh diffusers scheduler of a shipped config."""
    return getattr(diffusers, name).from_config({**CONFIGS[config], **variant})


def edit_at(step, how):
    """A step-end callback that edits the latents after pipeline step ``step``."""
    def callback(pipe, i, t, kw):
        if i == step:
            latents = kw["latents"]
            if how == "new tensor":
                kw["latents"] = latents * 0.9 + 0.05
            elif how == "in place":
                latents.mul_(0.9).add_(0.05)
            elif how == "slice assign":
                latents[:, 0] = 0.0
            else:
                raise ValueError(how)
        return kw
    return callback


# ---- Heun-type classes: an edit before a second-stage call (F2)

@pytest.mark.parametrize("step", [1, 2], ids=["before-first-stage", "before-second-stage"])
def test_heun_discrete_takes_an_edit_as_diffusers_does(step):
    # HeunDiscreteScheduler, 4 steps = 7 model calls: the edit after call 1 lands at a first stage, after call 2 at a
    # second stage, where diffusers steps from its stored first-stage sample and the edit enters d_2 only
    ref = sd(real("HeunDiscreteScheduler"), callback=edit_at(step, "new tensor"))
    out = sd(SamplerScheduler.from_config(real("HeunDiscreteScheduler")), callback=edit_at(step, "new tensor"))
    assert_same(out, ref)


@pytest.mark.parametrize("step", [1, 2], ids=["before-first-stage", "before-second-stage"])
def test_flow_match_heun_takes_an_edit_as_diffusers_does(step):
    # FlowMatchHeunDiscreteScheduler: the slope v_2 at the edited point, v at the edited first-stage point
    config = CONFIGS["SD3"]
    ref = sd3(diffusers.FlowMatchHeunDiscreteScheduler.from_config(config), callback=edit_at(step, "new tensor"))
    out = sd3(SamplerScheduler.from_config(diffusers.FlowMatchHeunDiscreteScheduler.from_config(config)),
              callback=edit_at(step, "new tensor"))
    assert_same(out, ref)


# ---- a latent changed in place between steps (F1)

IN_PLACE = [("EulerDiscreteScheduler", "SDXL", 1), ("DPMSolverMultistepScheduler", "SD-1.5", 1),
            ("HeunDiscreteScheduler", "SD-1.5", 1), ("HeunDiscreteScheduler", "SD-1.5", 2)]


@pytest.mark.parametrize("how", ["in place", "slice assign"])
@pytest.mark.parametrize("name, config, step", IN_PLACE, ids=[f"{n}-{c}-after-{s}" for n, c, s in IN_PLACE])
def test_an_in_place_edit_reaches_the_sampler(name, config, step, how):
    # kw["latents"].mul_(0.9).add_(0.05) / latents[:, 0] = 0 in a step-end callback: the pipeline passes the very
    # tensor the shim returned, changed; identity alone missed it (7e-3 to 1.1e-1 relative)
    ref = sd(real(name, config), callback=edit_at(step, how))
    out = sd(SamplerScheduler.from_config(real(name, config)), callback=edit_at(step, how))
    assert_same(out, ref)


@pytest.mark.parametrize("how", ["in place", "slice assign"])
def test_an_in_place_edit_reaches_the_flow_sampler(how):
    config = CONFIGS["SD3"]
    ref = sd3(diffusers.FlowMatchEulerDiscreteScheduler.from_config(config), callback=edit_at(1, how))
    out = sd3(SamplerScheduler.from_config(diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)),
              callback=edit_at(1, how))
    assert_same(out, ref)


def test_an_in_place_edit_under_inference_mode_reaches_the_sampler():
    # inference tensors keep no version counter: every sample is taken as passed, and the image is still diffusers'
    ref = sd(real("EulerDiscreteScheduler", "SDXL"), callback=edit_at(1, "in place"), mode=torch.inference_mode)
    ours = SamplerScheduler.from_config(real("EulerDiscreteScheduler", "SDXL"))
    assert_same(sd(ours, callback=edit_at(1, "in place"), mode=torch.inference_mode), ref)
    assert_same(sd(ours, mode=torch.inference_mode), sd(real("EulerDiscreteScheduler", "SDXL"),
                                                        mode=torch.inference_mode))


def test_a_run_without_edits_takes_every_latent_as_its_own():
    # the pipeline's own handling between steps (no callback) changes nothing in place: nothing is injected, so the
    # sampler's state is never replaced by the (cast, rescaled) latent it handed out
    ours = SamplerScheduler.from_config(real("DPMSolverMultistepScheduler"))
    assert_same(sd(ours), sd(real("DPMSolverMultistepScheduler")))
    assert ours._injected == {}


# ---- the config holds the keys the replaced class's config holds (F3)

FLOW_DPM = dict(use_flow_sigmas=True, prediction_type="flow_prediction", use_dynamic_shifting=True)


def test_sd3_reads_its_own_max_shift_default_for_a_class_without_one():
    # DPMSolverMultistepScheduler takes no max_shift: StableDiffusion3Pipeline's config.get("max_shift", 1.16) must
    # fall back to 1.16 with the shim as with the class (the shim's own 1.15 moved mu, and the image)
    theirs = diffusers.DPMSolverMultistepScheduler(**FLOW_DPM)
    ours = SamplerScheduler.from_config(theirs)
    for key in ("max_shift", "base_shift", "base_image_seq_len", "max_image_seq_len"):
        assert key not in ours.config and ours.config.get(key, "fallback") == "fallback"
    assert ours.config.use_dynamic_shifting is True and ours.config.flow_shift == theirs.config.flow_shift
    assert_same(sd3(ours, steps=5), sd3(diffusers.DPMSolverMultistepScheduler(**FLOW_DPM), steps=5))


@pytest.mark.parametrize("name", ["EDMEulerScheduler", "DPMSolverSinglestepScheduler",
                                  "FlowMatchEulerDiscreteScheduler"])
def test_no_key_the_class_lacks_and_no_steps_offset_warning(name):
    theirs = getattr(diffusers, name)()
    ours = SamplerScheduler.from_config(theirs)
    shim_options = {"sampler", "schedule", "sampler_options", "schedule_options", "initial_noise", "seed", "exact",
                    "noise_schedule", "source_config"}
    assert sorted(k for k in ours.config if k not in theirs.config and k not in shim_options) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # StableDiffusionPipeline's FutureWarning on steps_offset != 1
        StableDiffusionPipeline(vae=VAE, text_encoder=None, tokenizer=None, unet=UNET, scheduler=ours,
                                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    assert "steps_offset" not in ours.config


@pytest.mark.parametrize("how", ["save_config", "config", "direct"])
def test_the_config_without_those_keys_round_trips(how, tmp_path):
    theirs = diffusers.DPMSolverMultistepScheduler(**FLOW_DPM)
    if how == "direct":
        ours = SamplerScheduler(source_config={**theirs.config, "_class_name": "DPMSolverMultistepScheduler"},
                                noise_schedule="flow")
    else:
        ours = SamplerScheduler.from_config(theirs)
    if how == "save_config":
        ours.save_config(tmp_path)
        again = SamplerScheduler.from_pretrained(tmp_path)
    else:
        again = SamplerScheduler.from_config(ours.config)
    assert {k for k in again.config if not k.startswith("_")} == {k for k in ours.config if not k.startswith("_")}
    assert "max_shift" not in again.config and again.config.source_config["use_dynamic_shifting"] is True
    for s in (ours, again):
        s.set_timesteps(6, mu=0.8)
    torch.testing.assert_close(again.sigmas, ours.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(again.timesteps, ours.timesteps, rtol=0, atol=0)

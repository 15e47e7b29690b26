"""SamplerScheduler where a diffusers pipeline drives it past the plain scheduler loop: a pipeline's ``eta`` on a
class that ignores it (the refusal's advice, and what each choice gives), the source class's tables a pipeline reads
(StableDiffusionSAGPipeline), and an SDXL refiner split that leaves the refiner no timestep."""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import SD15, TinyModel  # noqa: E402
from samplers.core.errors import InvalidOption  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

MODEL = TinyModel()
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def _loop(scheduler, steps=4, **step_kwargs):
    """StableDiffusionPipeline's scheduler loop (eta passed only where the class's step takes it, as the pipeline's
    prepare_extra_step_kwargs does)."""
    import inspect

    scheduler.set_timesteps(steps)
    x = NOISE * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(7)
    params = inspect.signature(scheduler.step).parameters
    kw = {k: v for k, v in step_kwargs.items() if k in params}
    if "generator" in params:
        kw["generator"] = generator
    for t in scheduler.timesteps:
        out = MODEL(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, return_dict=False, **kw)[0]
    return x


def _rel(a, b):
    return float((a.double() - b.double()).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("name", ["EulerAncestralDiscreteScheduler", "LCMScheduler"])
def test_a_pipeline_eta_on_a_class_that_ignores_it_names_which_choice_keeps_diffusers_image(name):
    config = getattr(diffusers, name).from_config(SD15).config
    theirs = _loop(getattr(diffusers, name).from_config(config), eta=0.5)  # diffusers drops the eta
    shim = SamplerScheduler.from_config(config)
    with pytest.raises(InvalidOption) as refused:
        _loop(shim, eta=0.5)
    message = str(refused.value)
    assert "Leave the pipeline's eta out for diffusers' image" in message
    assert "sampler_options={'eta': 0.5}" in message and "(another image)" in message
    # leaving eta out: diffusers' image
    assert _rel(_loop(SamplerScheduler.from_config(config)), theirs) < 1e-5
    # sampler_options: another image, as the message says
    other = _loop(SamplerScheduler.from_config(config, sampler_options={"eta": 0.5}))
    assert _rel(other, theirs) > 1e-3


# ---- the source class's tables, as pipelines read them (StableDiffusionSAGPipeline: alphas_cumprod[t])

TABLES = ("alphas_cumprod", "alphas", "betas", "final_alpha_cumprod")


@pytest.mark.parametrize("name, variant", [("DDIMScheduler", {}), ("PNDMScheduler", {}),
                                           ("DPMSolverMultistepScheduler", {}), ("LCMScheduler", {}),
                                           ("EulerDiscreteScheduler", {"rescale_betas_zero_snr": True}),
                                           ("DDIMScheduler", {"rescale_betas_zero_snr": True})])
def test_the_source_classes_tables_are_exposed_read_only(name, variant):
    theirs = getattr(diffusers, name).from_config({**SD15, **variant})
    ours = SamplerScheduler.from_config(theirs.config)
    ours.set_timesteps(5)
    for key in TABLES:
        if not hasattr(theirs, key):
            with pytest.raises(AttributeError):
                getattr(ours, key)
            continue
        value = getattr(ours, key)
        assert value.dtype == torch.float32 and torch.equal(value, getattr(theirs, key)), key
        value.mul_(0)  # a copy: the shim's own reference is not changed
        assert torch.equal(getattr(ours, key), getattr(theirs, key))
        with pytest.raises(AttributeError):
            setattr(ours, key, torch.zeros(3))


@pytest.mark.parametrize("config", [{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0},
                                    {"_class_name": "EDMEulerScheduler"},
                                    None], ids=["flow", "edm", "no-source"])
def test_no_table_where_the_class_has_none(config):
    ours = (SamplerScheduler.from_config(config) if config is not None else
            SamplerScheduler(sampler="euler", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    for key in TABLES:
        assert not hasattr(ours, key)


# ---- SDXL's base + refiner split that leaves the refiner no timestep: set_begin_index(len(timesteps)), no step

def _sdxl_pair():
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from conftest import tiny_sdxl_unet

    unet = tiny_sdxl_unet()
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        latent_channels=4, norm_num_groups=8, layers_per_block=1).eval()
    g = torch.Generator().manual_seed(11)
    embeds = dict(prompt_embeds=torch.randn(2, 7, 64, generator=g), negative_prompt_embeds=torch.randn(2, 7, 64, generator=g),
                  pooled_prompt_embeds=torch.randn(2, 32, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(2, 32, generator=g))
    noise = torch.randn(2, 4, 8, 8, generator=g)

    def run(cls, scheduler, seed, **kw):
        extra = {} if cls is StableDiffusionXLPipeline else dict(requires_aesthetics_score=False)
        pipe = cls(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
                   scheduler=scheduler, force_zeros_for_empty_prompt=False, **extra)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            return pipe(**embeds, guidance_scale=3.0, output_type="latent",
                        generator=torch.Generator().manual_seed(seed), **kw).images

    def pair(scheduler, steps, split):
        base = run(StableDiffusionXLPipeline, scheduler(), 7, num_inference_steps=steps, height=64, width=64,
                   latents=noise.clone(), denoising_end=split)
        refined = run(StableDiffusionXLImg2ImgPipeline, scheduler(), 9, num_inference_steps=steps,
                      image=base.clone(), denoising_start=split)
        return base, refined

    return pair


SDXL_EMPTY_REFINER = [("DPMSolverSinglestepScheduler", {}, 5, 0.8), ("UniPCMultistepScheduler", {}, 7, 0.95),
                      ("DEISMultistepScheduler", {"solver_order": 3}, 8, 0.95)]


@pytest.mark.parametrize("name, variant, steps, split", SDXL_EMPTY_REFINER,
                         ids=[f"{n}-{s}-{d}" for n, _, s, d in SDXL_EMPTY_REFINER])
def test_an_sdxl_refiner_left_no_timestep_returns_the_base_latents_as_diffusers(name, variant, steps, split):
    from benchmarks.compatibility import SDXL

    config = getattr(diffusers, name).from_config({**SDXL, **variant}).config
    pair = _sdxl_pair()
    base, theirs = pair(lambda: getattr(diffusers, name).from_config(config), steps, split)
    assert torch.equal(theirs, base)  # diffusers' refiner makes no step
    shim = []
    ours_base, ours = pair(lambda: shim.append(SamplerScheduler.from_config(config)) or shim[-1], steps, split)
    torch.testing.assert_close(ours_base, base, rtol=0, atol=1e-5 * float(base.abs().max()))
    assert torch.equal(ours, ours_base)
    assert shim[-1].begin_index == len(shim[-1].timesteps)


def test_no_step_is_left_after_an_empty_begin():
    from benchmarks.compatibility import SDXL
    from samplers.core.errors import InvalidInput, Unavailable

    ours = SamplerScheduler.from_config(diffusers.DPMSolverSinglestepScheduler.from_config(SDXL).config)
    ours.set_timesteps(5)
    ours.set_begin_index(5)
    x = NOISE.clone()
    with pytest.raises(Unavailable, match=r"set_begin_index\(5\).*there is no step left"):
        ours.scale_model_input(x, ours.timesteps[-1])
    with pytest.raises(Unavailable, match=r"set_begin_index\(5\).*there is no step left"):
        ours.step(x, ours.timesteps[-1], x)
    # img2img's strength × num_inference_steps < 1: add_noise then gets timesteps[5:][:1], no timestep
    with pytest.raises(InvalidInput, match=r"add_noise\(\) got no timesteps.*strength × num_inference_steps < 1"):
        ours.add_noise(x, x, ours.timesteps[5:][:1])
    with pytest.raises(InvalidInput, match=r"starts after the last of this run's 5 timesteps.*Raise strength"):
        ours.set_begin_index(6)


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
                                  "DPMSolverMultistepScheduler"])
def test_add_noise_after_an_empty_begin_is_the_class_own(name):
    """After set_begin_index(len(timesteps)) a class that reads its step index adds the noise of its table's entry
    there (σ = 0: the latents unchanged), as diffusers does."""
    theirs = getattr(diffusers, name).from_config(SD15)
    ours = SamplerScheduler.from_config(theirs.config)
    x, n = NOISE.clone(), torch.randn(NOISE.shape, generator=torch.Generator().manual_seed(2))
    for s in (theirs, ours):
        s.set_timesteps(4)
        s.set_begin_index(len(s.timesteps))
    ref = theirs.add_noise(x, n, theirs.timesteps[-1:])
    assert _rel(ours.add_noise(x, n, ours.timesteps[-1:]), ref) < 1e-6


def test_a_pipeline_eta_equal_to_the_runs_own_is_taken():
    """EulerAncestral ignores a pipeline's eta and runs η = 1: eta=1.0 changes nothing, so it runs, as in diffusers."""
    config = diffusers.EulerAncestralDiscreteScheduler.from_config(SD15).config
    theirs = _loop(diffusers.EulerAncestralDiscreteScheduler.from_config(config), eta=1.0)
    assert _rel(_loop(SamplerScheduler.from_config(config), eta=1.0), theirs) < 1e-5


def test_tables_cannot_be_set_and_say_what_to_change():
    ours = SamplerScheduler.from_config(diffusers.DDIMScheduler.from_config(SD15).config)
    with pytest.raises(AttributeError, match="read-only.*change the config"):
        ours.alphas_cumprod = torch.ones(1000)


def test_an_explicit_weights_with_deis_tab_is_refused_as_everywhere():
    config = diffusers.DEISMultistepScheduler.from_config(SD15).config
    # ComfyUI's sample_deis takes no weights (it computes its own tAB ones): refused before the mode conflict
    with pytest.raises(InvalidOption, match="'deis' \\(ComfyUI's\\) takes no weights"):
        SamplerScheduler.from_config(config, sampler="comfyui:deis",
                                     sampler_options={"weights": "diffusers"}).set_timesteps(5)


@pytest.mark.parametrize("steps, start, variant", [(10, 7, {}), (10, 8, {}), (10, 7, {"use_karras_sigmas": True}),
                                                   (5, 3, {}), (10, 2, {})])
def test_dpm_singlestep_img2img_without_set_begin_index_starts_at_the_timestep_it_is_given(steps, start, variant):
    """A loop over timesteps[start:] that never calls set_begin_index, starting inside one of DPMSolverSinglestep's
    groups (img2img at strength 0.3 of 10 steps starts at index 7): diffusers finds the index from the timestep and
    lowers that step's order; the shim refused it after the first model call ("does not start a step of this run").
    Now it starts there, as with set_begin_index(start), to diffusers' image."""
    config = diffusers.DPMSolverSinglestepScheduler.from_config({**SD15, **variant}).config

    def run(scheduler, begin):
        scheduler.set_timesteps(steps)
        if begin:
            scheduler.set_begin_index(start)
        x = NOISE.clone()
        for t in scheduler.timesteps[start:]:
            x = scheduler.step(MODEL(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        return x

    theirs = run(diffusers.DPMSolverSinglestepScheduler.from_config(config), False)
    ours = run(SamplerScheduler.from_config(config), False)
    assert _rel(ours, theirs) < 2e-6
    assert torch.equal(ours, run(SamplerScheduler.from_config(config), True))


def test_a_loop_started_inside_a_kdpm2_step_is_refused_naming_where_steps_start():
    """KDPM2's timesteps[1] is its first step's midpoint call: a loop that starts there is refused (a start inside a
    step is no sampler's run), naming where the steps start and the fix; the message gave none."""
    from samplers.core.errors import InvalidInput

    ours = SamplerScheduler.from_config(diffusers.KDPM2DiscreteScheduler.from_config(SD15).config)
    ours.set_timesteps(4)
    t = ours.timesteps[1]
    x = NOISE * ours.init_noise_sigma
    with pytest.raises(InvalidInput, match=r"model call 1, inside a step of 'dpm_2' \(its steps start at the model "
                                           r"calls \[0, 2, 4, 6\]\).*timesteps\[t_start \* scheduler.order:\]"):
        ours.step(MODEL(ours.scale_model_input(x, t), t), t, x)

"""The shim's config holds every key of the replaced class's config, with the class's resolved value.

A pipeline reads keys of its scheduler's config that SamplerScheduler has no parameter for
(LatentConsistencyModelImg2ImgPipeline: ``original_inference_steps``; Cosmos: EDMEuler's ``sigma_max`` /
``sigma_data``; LEdits++: ``algorithm_type`` / ``solver_order``), and swapping back
(``Class.from_config(pipe.scheduler.config)``) must give the class it replaced, a ``from_config`` keyword override
included: the shim's config left those keys out (or kept the given config's value over the override), so the
pipeline raised AttributeError and the swap back ran the class's default algorithm. Still none of diffusers' keys
that the class's config lacks (``config.get(key, default)`` falls back as with the class: tests/test_shim_latent_edits.py).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import CONFIGS  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402
from samplers.interop.diffusers_sources import SOURCES  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

SHIM_OPTIONS = {"sampler", "schedule", "sampler_options", "schedule_options", "initial_noise", "seed", "exact",
                "noise_schedule", "source_config"}
FLOW = {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}
# each class on a shipped config: built in code from SDXL's (an EulerDiscrete config with other classes' keys), and
# loaded from a saved scheduler_config.json of SD-1.5's (PNDM's); the flow classes on SD3's, both ways
CASES = [(name, how, "SD3" if name in FLOW else {"code": "SDXL", "json": "SD-1.5"}[how])
         for name in sorted(SOURCES) for how in ("code", "json")]


def _norm(value):
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def class_keys(config) -> dict:
    return {k: _norm(v) for k, v in config.items() if not k.startswith("_")}


def assert_shows_the_class(ours, theirs):
    """Every key of the class's config with its value; no other key of diffusers' vocabulary."""
    want = class_keys(theirs.config)
    shown = {k: _norm(ours.config[k]) for k in want if k in ours.config}
    assert shown == want, sorted(set(want) - set(shown))
    extra = sorted(k for k in ours.config if not k.startswith("_") and k not in SHIM_OPTIONS and k not in want)
    assert extra == []


def assert_swaps_back(ours, theirs):
    cls = type(theirs)
    back = cls.from_config(ours.config)
    assert {k: v for k, v in class_keys(back.config).items() if k in theirs.config} == class_keys(theirs.config)


def _build(name, config, how, tmp_path, **override):
    cls = getattr(diffusers, name)
    if how == "code":
        base = cls.from_config(CONFIGS[config])
        return cls.from_config(base.config, **override), SamplerScheduler.from_config(base.config, **override)
    folder = tmp_path / "scheduler"  # a model repository's scheduler_config.json, loaded by both
    folder.mkdir()
    (folder / "scheduler_config.json").write_text(json.dumps({**CONFIGS[config], "_class_name": name}))
    return cls.from_pretrained(folder, **override), SamplerScheduler.from_pretrained(folder, **override)


@pytest.mark.parametrize("name,how,config", CASES)
def test_the_config_holds_every_key_of_the_class(name, how, config, tmp_path):
    theirs, ours = _build(name, config, how, tmp_path)
    assert_shows_the_class(ours, theirs)
    assert_swaps_back(ours, theirs)
    # and it round-trips: save_config / from_pretrained (the JSON has no _use_default_values), from_config(shim.config)
    ours.save_config(tmp_path / "shim")
    for again in (SamplerScheduler.from_pretrained(tmp_path / "shim"), SamplerScheduler.from_config(ours.config)):
        assert again._source_name == name
        assert class_keys(again.config) == class_keys(ours.config)
    assert_swaps_back(again, theirs)


OVERRIDES = [
    ("DPMSolverMultistepScheduler", "SDXL", dict(algorithm_type="sde-dpmsolver++"), "dpmpp_2m_sde"),
    ("LCMScheduler", "SD-1.5", dict(original_inference_steps=25), None),
    ("EDMEulerScheduler", "SD-1.5", dict(sigma_max=120.0), None),
    ("EulerDiscreteScheduler", "SDXL", dict(timestep_spacing="trailing"), None),
]


@pytest.mark.parametrize("how", ["code", "json"])
@pytest.mark.parametrize("name,config,override,sampler", OVERRIDES)
def test_a_from_config_override_is_the_config_value(name, config, override, sampler, how, tmp_path):
    theirs, ours = _build(name, config, how, tmp_path, **override)
    (key, value), = override.items()
    assert theirs.config[key] == value and ours.config[key] == value
    if sampler is not None:
        assert ours.spec.name == sampler
    assert_shows_the_class(ours, theirs)
    assert_swaps_back(ours, theirs)  # DPMSolverMultistepScheduler.from_config(shim.config) ran dpmsolver++
    ours.save_config(tmp_path / "shim")
    for again in (SamplerScheduler.from_pretrained(tmp_path / "shim"), SamplerScheduler.from_config(ours.config)):
        assert again.config[key] == value
        assert_swaps_back(again, theirs)


def test_an_override_of_a_key_the_given_config_sets_wins_over_it():
    # the config names algorithm_type itself: diffusers registers the given config's value after __init__ (a
    # "hidden" key of SamplerScheduler), over the override that the source class runs
    base = diffusers.DPMSolverMultistepScheduler.from_config({**CONFIGS["SDXL"], "algorithm_type": "dpmsolver++"})
    assert "algorithm_type" not in base.config.get("_use_default_values", [])
    ours = SamplerScheduler.from_config(base.config, algorithm_type="sde-dpmsolver++")
    assert ours.spec.name == "dpmpp_2m_sde" and ours.config.algorithm_type == "sde-dpmsolver++"
    assert diffusers.DPMSolverMultistepScheduler.from_config(ours.config).config.algorithm_type == "sde-dpmsolver++"
    # a saved shim's config with an override: the override again
    again = SamplerScheduler.from_config(ours.config, algorithm_type="dpmsolver++")
    assert again.spec.name == "dpmpp_2m" and again.config.algorithm_type == "dpmsolver++"
    assert again.config.source_config["algorithm_type"] == "dpmsolver++"


def test_a_shim_built_directly_swaps_back_to_its_source_config():
    # SamplerScheduler(source_config=...) lists the parameters it was not given in _use_default_values, which
    # Class.from_config replaces by the class's defaults: the source's timestep_spacing='trailing' came back 'leading'
    source = {k: v for k, v in diffusers.UniPCMultistepScheduler.from_config(CONFIGS["SDXL"]).config.items()
              if k != "_use_default_values"}
    source.update(timestep_spacing="trailing", solver_order=3)
    ours = SamplerScheduler(source_config=source)
    back = diffusers.UniPCMultistepScheduler.from_config(ours.config)
    assert back.config.timestep_spacing == "trailing" and back.config.solver_order == 3
    assert ours.config.solver_order == 3


def test_a_saved_shim_config_without_class_name_is_still_the_shims():
    ours = SamplerScheduler.from_config(diffusers.LCMScheduler.from_config(CONFIGS["SD-1.5"]).config)
    bare = {k: v for k, v in ours.config.items() if not k.startswith("_")}
    again = SamplerScheduler.from_config(bare)
    assert again._source_name == "LCMScheduler" and again.config.original_inference_steps == 50


def test_lcm_img2img_reads_original_inference_steps_from_the_shim():
    """LatentConsistencyModelImg2ImgPipeline reads scheduler.config.original_inference_steps when the caller passes
    none: AttributeError with the shim; with it, diffusers' latents (≤ 1e-5 of their scale)."""
    pytest.importorskip("transformers")
    from diffusers import AutoencoderKL, LatentConsistencyModelImg2ImgPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8, time_cond_proj_dim=32).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        latent_channels=4, norm_num_groups=8, layers_per_block=1).eval()
    g = torch.Generator().manual_seed(1)
    emb, image = torch.randn(1, 7, 32, generator=g), torch.rand(1, 3, 64, 64, generator=g)

    def run(scheduler):
        pipe = LatentConsistencyModelImg2ImgPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                                     scheduler=scheduler, safety_checker=None,
                                                     feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            return pipe(prompt_embeds=emb, image=image, num_inference_steps=4, strength=0.8, output_type="latent",
                        generator=torch.Generator().manual_seed(7)).images

    theirs = diffusers.LCMScheduler.from_config(CONFIGS["SD-1.5"])
    ref = run(theirs)
    out = run(SamplerScheduler.from_config(theirs.config))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * max(1.0, float(ref.abs().max())))

"""SamplerScheduler at its seams: configs that leave keys out, and inputs refused at the boundary, never coerced
or dropped (seed, from_config keyword arguments, schedule_options, set_timesteps' sigmas / timesteps, DDIM's eta)."""
from __future__ import annotations

import inspect

import pytest
import torch

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType

diffusers = pytest.importorskip("diffusers")

from diffusers import EulerAncestralDiscreteScheduler  # noqa: E402

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
                                         (2**63, InvalidInput)])
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

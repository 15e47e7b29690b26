"""SamplerScheduler where a diffusers pipeline drives it past the plain scheduler loop: a pipeline's ``eta`` on a
class that ignores it (the refusal's advice, and what each choice gives)."""
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

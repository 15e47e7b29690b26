"""``sampler="<diffusers class>"`` on another class's config: SamplerScheduler stands in for ``Class.from_config(config)``,
diffusers' own swap (``pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``), or refuses
where that swap reads another model from the config or names a class the shim does not stand in for."""
from __future__ import annotations

import inspect

import pytest
import torch

from samplers.core.errors import InvalidOption

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import CONFIGS  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

EULER = diffusers.EulerDiscreteScheduler.from_config(CONFIGS["SDXL"])  # SDXL's config


def model(x, t):
    return 0.8 * x + 0.1 * torch.sin(x + float(t) / 300)


def run(scheduler, steps=6, strength=1.0):
    """StableDiffusion(Img2Img)Pipeline's scheduler calls (img2img where strength < 1), one generator for the run."""
    scheduler.set_timesteps(steps)
    start = steps - int(steps * strength)
    timesteps = scheduler.timesteps[start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):  # as the pipelines call it (DDIM has none)
        scheduler.set_begin_index(start * scheduler.order)
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    if strength < 1:
        x = scheduler.add_noise(torch.full((1, 4, 4, 4), 0.5), noise, timesteps[:1])
    else:
        x = noise * scheduler.init_noise_sigma
    extra = {"generator": torch.Generator().manual_seed(2)} if "generator" in \
        inspect.signature(scheduler.step).parameters else {}  # as the pipelines pass it
    for t in timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, **extra).prev_sample
    return scheduler.timesteps.tolist(), x


@pytest.mark.parametrize("name, strength", [
    ("DPMSolverMultistepScheduler", 1.0),  # its own spacing: [853, 711, …] where the shim ran Euler's [831, 665, …]
    ("LMSDiscreteScheduler", 0.5),  # its img2img weights on the skipped steps' sigmas: 0.171 apart before
    ("KDPM2DiscreteScheduler", 0.5),
    ("EulerAncestralDiscreteScheduler", 1.0),
    ("DDIMScheduler", 0.5),
])
def test_a_class_named_on_another_class_config_is_that_class_from_the_config(name, strength):
    cls = getattr(diffusers, name)
    theirs_t, theirs = run(cls.from_config(EULER.config), strength=strength)
    for given in (EULER.config, EULER):  # the config, or the scheduler itself
        ours_t, ours = run(SamplerScheduler.from_config(given, sampler=name), strength=strength)
        assert ours_t == theirs_t
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))


def test_the_named_class_takes_the_keyword_arguments_as_its_from_config_does():
    # DPMSolverMultistepScheduler.from_config(euler.config, algorithm_type=...): refused before (Euler takes no
    # algorithm_type), now that class's run, generator draws included
    kw = dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True)
    theirs_t, theirs = run(diffusers.DPMSolverMultistepScheduler.from_config(EULER.config, **kw))
    ours = SamplerScheduler.from_config(EULER.config, sampler="DPMSolverMultistepScheduler", **kw)
    ours_t, latents = run(ours)
    assert ours_t == theirs_t and ours.config.algorithm_type == "sde-dpmsolver++"
    torch.testing.assert_close(latents, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))
    # and it round-trips: the saved config runs the same
    again_t, again = run(SamplerScheduler.from_config(ours.config))
    assert again_t == theirs_t
    torch.testing.assert_close(again, latents, rtol=0, atol=0)


def test_a_swap_that_reads_another_model_from_the_config_is_refused():
    # LMSDiscrete has no rescale_betas_zero_snr: LMSDiscreteScheduler.from_config(zero-SNR config) is another ᾱ table;
    # a VP class on SD3's flow config another model altogether
    zero_snr = diffusers.DDIMScheduler.from_config(CONFIGS["zero-SNR-v"]).config
    with pytest.raises(InvalidOption, match="reads another model from it.*sampler='lms'"):
        SamplerScheduler.from_config(zero_snr, sampler="LMSDiscreteScheduler")
    with pytest.raises(InvalidOption, match="reads another model from it.*sampler='euler'"):
        SamplerScheduler.from_config(CONFIGS["SD3"], sampler="EulerDiscreteScheduler")
    # the algorithm on that config's own model and grid runs
    SamplerScheduler.from_config(zero_snr, sampler="lms").set_timesteps(4)
    # a class that takes the key keeps the model: Euler has rescale_betas_zero_snr (and clamps ᾱ_T to 2⁻²⁴: σ_max 4096)
    euler = SamplerScheduler.from_config(zero_snr, sampler="EulerDiscreteScheduler")
    assert euler.config.rescale_betas_zero_snr and float(euler.native.sigma_max) == pytest.approx(4096, rel=1e-3)


def test_a_class_the_shim_does_not_stand_in_for_is_refused_on_another_class_config():
    with pytest.raises(InvalidOption, match="does not stand in for.*sampler='ipndm'"):
        SamplerScheduler.from_config(EULER.config, sampler="IPNDMScheduler")


def test_compatibles_list_every_class_the_shim_stands_in_for():
    from samplers.interop import diffusers_sources as sources

    assert set(sources.SOURCES) <= set(SamplerScheduler._compatibles)
    assert {"TCDScheduler", "SASolverScheduler"} <= {type(c).__name__ if not isinstance(c, type) else c.__name__
                                                     for c in SamplerScheduler().compatibles}

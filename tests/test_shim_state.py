"""A shim built from a scheduler object copies that object for itself: its state outside the config (set_shift)
reaches neither another shim of the same config nor is replaced by one built for it, in either order."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from samplers.interop import diffusers_scheduler
from samplers.interop.diffusers_scheduler import SamplerScheduler


def _shifted():
    mine = FlowMatchEulerDiscreteScheduler(shift=1.0)
    mine.set_shift(3.0)  # diffusers' public call: a shift its config does not record
    return mine


def _timesteps(scheduler, steps=8):
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone()


@pytest.mark.parametrize("instance_first", [True, False])
def test_a_given_schedulers_state_stays_with_the_shim_built_from_it(monkeypatch, instance_first):
    monkeypatch.setattr(diffusers_scheduler, "_PROTOTYPES", {})
    plain_config = FlowMatchEulerDiscreteScheduler(shift=1.0).config
    build = [lambda: SamplerScheduler.from_config(_shifted()), lambda: SamplerScheduler.from_config(plain_config)]
    shims = [make() for make in (build if instance_first else build[::-1])]
    from_instance, plain = shims if instance_first else shims[::-1]
    torch.testing.assert_close(_timesteps(from_instance), _timesteps(_shifted()), rtol=0, atol=1e-4)
    torch.testing.assert_close(_timesteps(plain), _timesteps(FlowMatchEulerDiscreteScheduler(shift=1.0)), rtol=0,
                               atol=1e-4)
    assert not torch.allclose(_timesteps(from_instance), _timesteps(plain))


def _toy_model(x, t):
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x) * 0.3 + float(t) / 1000)


def _run(scheduler, buffer: bool, steps: int = 8):
    with torch.no_grad():
        scheduler.set_timesteps(steps)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            out = scheduler.step(_toy_model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
            if buffer:
                x.copy_(out)  # one latent buffer, updated in place each step
            else:
                x = out
        return x


@pytest.mark.parametrize("name", ["LMSDiscreteScheduler", "EulerDiscreteScheduler"])
def test_a_pipeline_that_keeps_one_latent_buffer_gets_what_diffusers_gives(name):
    """The shim stored the pipeline's own tensor as an injected latent (VE latents need no conversion), so a loop
    that overwrites one buffer each step rewrote the replay's history: LMS ended 1.3e-2 from diffusers."""
    import diffusers

    from benchmarks.compatibility import CONFIGS

    def real():
        return getattr(diffusers, name).from_config(CONFIGS["SD-1.5"])

    ref = _run(real(), buffer=True)
    ours = _run(SamplerScheduler.from_config(real()), buffer=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_a_labels_options_meet_the_callers_as_everywhere():
    """The shim merged a label's options with sampler_options by dict update: a contradiction went to the caller
    silently, and a label's own option the run does not read (ComfyUI er_sde's quadrature at max_stage=1) was
    refused as if the caller had passed it."""
    import diffusers

    from benchmarks.compatibility import CONFIGS
    from samplers.core.errors import InvalidOption

    config = diffusers.EulerDiscreteScheduler.from_config(CONFIGS["SD-1.5"])
    ok = SamplerScheduler.from_config(config, sampler="comfyui:er_sde", sampler_options={"max_stage": 1}, seed=0)
    ok.set_timesteps(4)
    heun = SamplerScheduler.from_config(config, sampler="DPM++ 2M SDE Heun", sampler_options={"solver_type": "midpoint"},
                                        seed=0)
    with pytest.raises(InvalidOption, match="solver_type='heun', but solver_type='midpoint' was passed"):
        heun.set_timesteps(4)


def test_a_constructor_value_the_source_class_has_no_setting_for_is_refused_not_dropped():
    """SamplerScheduler(source_config=<DPMSolverMultistep flow config>, max_shift=1.2) was accepted and max_shift
    left out of its config (a pipeline then read its own default, 1.16), as from_config refuses it."""
    import diffusers

    from samplers.core.errors import InvalidOption

    dpm = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    source = {**dpm.config, "_class_name": "DPMSolverMultistepScheduler"}
    with pytest.raises(InvalidOption, match="max_shift=1.2: DPMSolverMultistepScheduler.*has no such setting"):
        SamplerScheduler(source_config=source, noise_schedule="flow", max_shift=1.2)
    assert "max_shift" not in SamplerScheduler(source_config=source, noise_schedule="flow").config

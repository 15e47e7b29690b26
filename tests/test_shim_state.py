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

"""The timesteps a loop hands SamplerScheduler, where the replaced class reads them: ``step``'s timestep for the
classes that compute their step from it (DDIM, DDPM, PNDM, LCM, TCD, SASolver), and ``add_noise`` / ``scale_noise``
before ``set_timesteps`` (the class's initial tables). Each is the class's value or a refusal naming the value, never
another image silently."""
from __future__ import annotations

import inspect

import pytest
import torch

from samplers.core.errors import InvalidInput

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import CONFIGS  # noqa: E402
from samplers.interop import diffusers_scheduler as shim_module  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

SD15 = CONFIGS["SD-1.5"]
READS_TIMESTEP = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler",
                  "SASolverScheduler")


def model(x, t):
    return 0.5 * x + 0.01 * float(t)


def generator(scheduler) -> dict:
    """The pipeline's generator, where the class's ``step`` takes one (PNDM's does not)."""
    return {"generator": torch.Generator().manual_seed(0)} if "generator" in \
        inspect.signature(scheduler.step).parameters else {}


def run(scheduler, order, steps=5, convert=lambda t: t):
    """A loop that hands ``step`` the timesteps at the indices ``order`` (a pipeline's loop: 0, 1, 2, ...)."""
    scheduler.set_timesteps(steps)
    x, extra = torch.ones(1, 4, 2, 2), generator(scheduler)
    for i in order:
        t = scheduler.timesteps[i]
        x = scheduler.step(model(x, t), convert(t), x, **extra).prev_sample
    return x


def shim_of(name, **variant):
    return SamplerScheduler.from_config(getattr(diffusers, name).from_config({**SD15, **variant}))


# ----------------------------------------------------------------------------------------------------
# step()'s timestep


@pytest.mark.parametrize("name", READS_TIMESTEP)
@pytest.mark.parametrize("order", [[0, 0, 1], [0, 2, 4]], ids=["repeated", "skipped"])
def test_a_class_that_steps_from_its_timestep_refuses_another_one(name, order):
    # DDIM computes ᾱ at the timestep given and steps to timestep − 1000 // n: repeating or skipping one gave diffusers
    # −30.42 / −10.16 where the shim's planned run gave −19.68 / −13.44 (audit shimflow, item 1)
    shim = shim_of(name)
    with pytest.raises(InvalidInput, match=rf"step\(\) got timestep .* for model call .*{name} computes its step "
                                           "from the timestep it is given"):
        run(shim, order)


@pytest.mark.parametrize("name", ["DDIMScheduler", "LCMScheduler"])
def test_a_timestep_other_than_the_begin_index_one_is_refused(name):
    shim = shim_of(name)
    with pytest.raises(InvalidInput, match="for model call 2 of this run"):
        shim.set_timesteps(5)
        shim.set_begin_index(2)
        t = shim.timesteps[3]
        shim.step(model(torch.ones(1, 4, 2, 2), t), t, torch.ones(1, 4, 2, 2))


@pytest.mark.parametrize("name", READS_TIMESTEP)
def test_the_planned_timesteps_in_any_form_still_run_as_the_class(name):
    # the pipeline's own loop, with the timestep as a tensor, a Python int or a numpy value: diffusers' image
    theirs = run(getattr(diffusers, name).from_config(SD15), range(5))
    for convert in (lambda t: t, int, lambda t: t.numpy()):
        ours = run(shim_of(name), range(5), convert=convert)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_a_class_that_reads_its_step_index_ignores_the_timestep_as_diffusers_does(name):
    # Euler-type and multistep classes step by their step index: the value passed changes nothing there
    for order in ([0, 2, 4], [0, 0, 1]):
        theirs = run(getattr(diffusers, name).from_config(SD15), order)
        ours = run(shim_of(name), order)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))


def test_a_timestep_on_an_accelerator_is_not_read():
    # reading it would wait for the device at every step: a tensor that cannot be read (meta) passes unread
    shim = shim_of("DDIMScheduler")
    shim.set_timesteps(5)
    shim.set_begin_index(0)
    x = torch.ones(1, 4, 2, 2)
    t = torch.empty((), dtype=torch.int64, device="meta")
    assert shim_module._host_value(t) is None
    x = shim.step(model(x, shim.timesteps[0]), t, x).prev_sample
    assert torch.isfinite(x).all()

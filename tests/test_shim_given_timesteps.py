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


# ----------------------------------------------------------------------------------------------------
# add_noise / scale_noise before set_timesteps: the class's initial tables


def fresh(name):
    """The class as its constructor leaves it (no set_timesteps), and the shim built from it."""
    cls = getattr(diffusers, name)
    theirs = cls() if name.startswith(("EDM", "FlowMatch")) else cls.from_config(SD15)
    return theirs, SamplerScheduler.from_config(theirs)


def noised(scheduler, timesteps):
    x0, noise = torch.zeros(len(timesteps), 1), torch.ones(len(timesteps), 1)
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(x0, noise, timesteps).flatten()
    return scheduler.scale_noise(x0, timesteps, noise).flatten()  # FlowMatch's name


MIRRORED = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
            "DEISMultistepScheduler")
LOOKUP = sorted(set(shim_module.sources.SOURCES) - shim_module.sources.ADD_NOISE_BY_TIMESTEPS
                - shim_module.sources.ADD_NOISE_BY_STEP - set(MIRRORED))


@pytest.mark.parametrize("name", LOOKUP)
def test_add_noise_before_set_timesteps_reads_the_class_initial_tables(name):
    # every timestep of the class's initial table, one per item: KDPM2's and DPMSolverSDE's interleaved midpoints read
    # the next step's σ entry there (the shim took σ at the midpoint's time: 19 % off, at half of their 1999 timesteps)
    theirs, ours = fresh(name)
    table = theirs.timesteps.clone()
    torch.testing.assert_close(noised(ours, table), noised(theirs, table), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "EDMEulerScheduler",
                                  "FlowMatchEulerDiscreteScheduler"])
def test_add_noise_before_set_timesteps_refuses_a_timestep_outside_the_class_table(name):
    # Euler looks 500.5 up among its 1000 integer timesteps and fails (IndexError); the shim interpolated (1.621)
    theirs, ours = fresh(name)
    value = float(theirs.timesteps[len(theirs.timesteps) // 2]) + 0.25
    with pytest.raises(Exception):
        noised(theirs, torch.tensor([value]))
    with pytest.raises(InvalidInput, match=f"before set_timesteps, which is not one of {name}'s"):
        noised(ours, torch.tensor([value]))


@pytest.mark.parametrize("name", MIRRORED)
def test_add_noise_before_set_timesteps_is_refused_where_the_class_tables_are_mirrored(name):
    # DPMSolverMultistep holds timesteps 999 … 0 and sigmas ascending until set_timesteps: add_noise(…, 999) gives
    # 0.0292 (σ(0)'s noise), where the shim gave 0.9977 (σ(999)'s)
    theirs, ours = fresh(name)
    assert float(noised(theirs, torch.tensor([999]))[0]) < 0.03
    with pytest.raises(InvalidInput, match="before set_timesteps.*mirrored timestep.*Call set_timesteps"):
        noised(ours, torch.tensor([999]))
    ours.set_timesteps(5)  # then it runs, as the class's
    theirs.set_timesteps(5)
    t = theirs.timesteps[:1]
    torch.testing.assert_close(noised(ours, t), noised(theirs, t), rtol=1e-6, atol=0)


def test_flow_match_heun_keeps_the_step_index_of_its_first_scale_noise_until_set_timesteps():
    # its scale_noise finds a step index from the first timestep and reads it for every later call's
    theirs, ours = fresh("FlowMatchHeunDiscreteScheduler")
    for t in (500.0, 700.0, 1.0):
        torch.testing.assert_close(noised(ours, torch.tensor([t])), noised(theirs, torch.tensor([t])), rtol=1e-6,
                                   atol=0)
    assert ours.step_index == theirs.step_index == 500
    with pytest.raises(InvalidInput, match="2 timesteps before set_timesteps"):
        noised(fresh("FlowMatchHeunDiscreteScheduler")[1], torch.tensor([1000.0, 500.0]))

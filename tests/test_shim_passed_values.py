"""Custom ``timesteps=`` / ``sigmas=`` a pipeline passes (``retrieve_timesteps`` → ``scheduler.set_timesteps``) that no
sampler run reproduces — outside the table, ascending, repeated — are refused naming the value the caller passed, its
index and the rule (an audit of 2026-12-07: the messages named "None steps" and steps_offset, or the VE σ the class
had converted them to: sigmas[3] = inf for an ascending flow list, -0.27 for a passed -0.1)."""
from __future__ import annotations

import pytest

pytest.importorskip("diffusers")
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

import samplers  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def shim(cls, **config):
    return SamplerScheduler.from_config(cls(**config).config)


@pytest.mark.parametrize("cls, given, message", [
    (EulerDiscreteScheduler, dict(timesteps=[1200, 500, 1]), r"timesteps\[0\] = 1200 is outside \[0, 999\]"),
    (EulerDiscreteScheduler, dict(timesteps=[999.5, 700.25, 300.75, 10.5]), r"timesteps\[0\] = 999.5 is outside"),
    (EulerDiscreteScheduler, dict(timesteps=[999, 500, 1, 1]),
     r"timesteps must be strictly decreasing .* timesteps\[2\] = 1 and timesteps\[3\] = 1"),
    (DPMSolverMultistepScheduler, dict(timesteps=[100, 500, 999]),
     r"timesteps must be strictly decreasing .* timesteps\[0\] = 100 and timesteps\[1\] = 500"),
    (EulerDiscreteScheduler, dict(sigmas=[14.6, 2.0, 0.0, 0.0]), r"sigmas\[2\] = 0 and sigmas\[3\] = 0"),
    (EulerDiscreteScheduler, dict(sigmas=[14.6, -2.0, 0.0]), r"sigmas\[1\] = -2 is outside \[0, inf\]"),
])
def test_a_vp_classs_passed_values_are_named_as_passed(cls, given, message):
    with pytest.raises(samplers.InvalidInput, match=message):
        shim(cls, **SD).set_timesteps(**given)


@pytest.mark.parametrize("given, message", [
    ([0.25, 0.5, 0.75, 1.0], r"sigmas must be strictly decreasing .* sigmas\[0\] = 0.25 and sigmas\[1\] = 0.5"),
    ([1.0, 0.5, -0.1], r"sigmas\[2\] = -0.1 is outside \[0, 1\], the range of FlowMatchEulerDiscreteScheduler's flow"),
    ([1.0, 0.5, 0.5, 0.25], r"sigmas\[1\] = 0.5 and sigmas\[2\] = 0.5"),
])
def test_a_flow_classs_passed_sigmas_are_named_as_passed(given, message):
    with pytest.raises(samplers.InvalidInput, match=message):
        shim(FlowMatchEulerDiscreteScheduler, shift=3.0).set_timesteps(sigmas=given)


def test_values_diffusers_and_the_shim_both_run_still_run():
    s = shim(EulerDiscreteScheduler, **SD)
    s.set_timesteps(timesteps=[999, 700.25, 300.5, 10])
    assert len(s.timesteps) == 4
    f = shim(FlowMatchEulerDiscreteScheduler, shift=3.0)
    f.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    assert len(f.timesteps) == 4

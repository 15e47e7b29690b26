"""``python -m benchmarks.compatibility --exact`` scores each run against the exact ODE endpoint from that run's own
start: the VE state the shim starts its sampler from, for classes that keep VE latents (Euler, LMS, KDPM2: noise·σ_max
on SD-1.5's linspace config) and for those that keep the model's x_t (DDIM, DPM-Solver, ...)."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.compatibility import EXACT_CASES, SD15, exact_start, source_scheduler  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("name,variant", EXACT_CASES, ids=[f"{n}-{v}" for n, v in EXACT_CASES])
def test_exact_start_is_the_runs_own_start(name, variant, exact):
    shim = SamplerScheduler.from_config(source_scheduler(name, SD15, variant).config, exact=exact)
    shim.set_timesteps(10)
    noise = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_t = noise * shim.init_noise_sigma
    sigma_0, start = exact_start(shim, x_t)
    assert sigma_0 == float(shim._plan.schedule[0])
    t = shim.timesteps[0]
    shim.step(torch.zeros_like(x_t), t, x_t)  # the first step records the state the sampler's run starts from
    torch.testing.assert_close(start, shim._x_start, rtol=1e-12, atol=0)


def test_ve_latents_start_from_sigma_max_not_the_vp_scale():
    # the defect this guards: every run was scored from noise·√(1 + σ₀²), another trajectory for Euler / LMS / KDPM2
    shim = SamplerScheduler.from_config(source_scheduler("EulerDiscreteScheduler", SD15, {}).config)
    shim.set_timesteps(20)
    noise = torch.ones(1, 4, 4, 4, dtype=torch.float64)
    sigma_0, start = exact_start(shim, noise * shim.init_noise_sigma)
    assert shim.latents == "ve"
    assert float(start.flatten()[0]) == pytest.approx(sigma_0, rel=1e-6)  # linspace: init_noise_sigma = σ_max
    assert float(start.flatten()[0]) != pytest.approx(math.sqrt(1 + sigma_0**2), rel=1e-4)

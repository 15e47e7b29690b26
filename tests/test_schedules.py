"""Core schedules: right length, strictly decreasing, trailing 0, and their published formulas."""
import math

import pytest
import torch

import samplers
from samplers import schedules
from samplers.core.native import RectifiedFlow, VPDiscrete

VP = VPDiscrete.from_betas()


@pytest.mark.parametrize("name", ["karras", "exponential", "polyexponential", "vp", "linspace", "leading",
                                  "trailing", "flow"])
@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_shape_monotone_trailing_zero(name, n):
    native = RectifiedFlow(shift=3.0) if name == "flow" else VP
    sig = samplers.get_sigmas(name, n, native=native) if name != "vp" else schedules.get("vp")(n)
    assert sig.shape == (n + 1,) and sig.dtype == torch.float64
    assert float(sig[-1]) == 0.0
    assert bool((sig[1:] < sig[:-1]).all())


def test_karras_formula_and_end_points():
    sig = schedules.karras(10, 0.002, 80.0, rho=7.0)
    assert abs(float(sig[0]) - 80) < 1e-12 and abs(float(sig[-2]) - 0.002) < 1e-15
    i = 4
    expected = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert abs(float(sig[i]) - expected) < 1e-12


def test_exponential_and_polyexponential():
    sig = schedules.exponential(5, 0.1, 10.0)
    ratios = (sig[1:-1] / sig[:-2])
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios[0])))
    torch.testing.assert_close(schedules.polyexponential(5, 0.1, 10.0, rho=1.0), sig)


def test_vp_matches_k_diffusion_defaults():
    sig = schedules.vp(10)
    assert abs(float(sig[0]) - math.sqrt(math.exp(19.9 / 2 + 0.1) - 1)) < 1e-9
    assert abs(float(sig[-2]) - math.sqrt(math.exp(19.9 * 1e-6 / 2 + 0.1e-3) - 1)) < 1e-12


def test_timestep_spacings_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for spacing, offset in (("leading", 1), ("trailing", 0), ("linspace", 0)):
        sch = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                               timestep_spacing=spacing, steps_offset=offset)
        sch.set_timesteps(12)
        kw = {"steps_offset": offset} if spacing == "leading" else {}
        ours = samplers.get_sigmas(spacing, 12, native=VP, **kw)
        if spacing == "linspace":  # diffusers interpolates linearly in σ, we in log σ (k-diffusion); ends agree
            torch.testing.assert_close(ours[[0, -2, -1]], sch.sigmas.double()[[0, -2, -1]], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(ours, sch.sigmas.double(), rtol=1e-5, atol=1e-6)


def test_flow_schedule_starts_at_infinity_and_shift_scales_sigma():
    base = samplers.get_sigmas("flow", 8, native=RectifiedFlow(shift=1.0))
    shifted = samplers.get_sigmas("flow", 8, native=RectifiedFlow(shift=3.0))
    assert math.isinf(float(base[0])) and math.isinf(float(shifted[0]))
    torch.testing.assert_close(shifted[1:], 3.0 * base[1:])
    t = base[1:-1] / (1 + base[1:-1])  # linear in flow time
    torch.testing.assert_close(t[1:] - t[:-1], torch.full_like(t[1:], float(t[1] - t[0])))
    dyn = schedules.flow(8, 0.001, math.inf, mu=math.log(3.0))
    torch.testing.assert_close(dyn[1:], 3.0 * schedules.flow(8, 0.001 / 3, math.inf)[1:])


def test_operations():
    sig = schedules.karras(10, 0.01, 10.0)
    hi, lo = schedules.split(sig, 4)
    assert float(hi[-1]) == float(lo[0]) and len(hi) + len(lo) == len(sig) + 1
    torch.testing.assert_close(schedules.flip(schedules.flip(sig)), sig)
    assert len(schedules.truncate(sig, 0.5)) == 6 and torch.equal(schedules.truncate(sig, 1.0), sig)
    assert len(schedules.truncate(sig, 0.01)) == 2  # at least one step
    assert float(schedules.set_first(sig, 20.0)[0]) == 20.0
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        schedules.truncate(sig, 0.0)
    with pytest.raises(ValueError, match="strength"):
        schedules.truncate(sig, 1.5)
    with pytest.raises(ValueError, match="would not be above"):
        schedules.set_first(sig, 1e-4)


def test_bad_schedule_input():
    with pytest.raises(ValueError, match="integer >= 1"):
        schedules.karras(0, 0.1, 10.0)
    with pytest.raises(KeyError, match="karras"):
        samplers.get_sigmas("karas", 10, native=VP)
    with pytest.raises(ValueError, match="finite sigma_max"):
        samplers.get_sigmas("karras", 10, native=RectifiedFlow())
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        schedules.exponential(5, 10.0, 1.0)
    with pytest.raises(ValueError, match="training table"):
        schedules.get("leading")(5)

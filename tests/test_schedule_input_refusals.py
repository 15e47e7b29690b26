"""Schedule inputs the audit found taken silently or refused for the wrong reason: each is refused at the schedule,
naming the value, the rule and the fix."""
import math

import numpy as np

import pytest
import torch

import samplers
from samplers import schedules as S

SD = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
Z = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)
LAST_FINITE = float(Z.sigmas[-2])  # 2254.24, timestep 998; timestep 999 is σ = inf


# ---- a zero-terminal-SNR table has no timestep between its last finite σ and inf

@pytest.mark.parametrize("name", ["normal", "sgm_uniform"])
@pytest.mark.parametrize("ends", [{"sigma_max": 4096.0}, {"sigma_max": 2300.0}, {"sigma_min": 3000.0}])
def test_a_zsnr_range_end_past_the_last_finite_sigma_is_refused(name, ends):
    with pytest.raises(samplers.InvalidInput, match=rf"{LAST_FINITE:g}.*timestep 998.*inf.*comfyui:"):
        samplers.get_sigmas(name, 4, native=Z, **ends)


@pytest.mark.parametrize("name", ["normal", "sgm_uniform"])
def test_a_zsnr_range_up_to_the_last_finite_sigma_or_inf_still_builds(name):
    top = samplers.get_sigmas(name, 4, native=Z, sigma_max=LAST_FINITE)
    assert float(top[0]) == pytest.approx(LAST_FINITE, rel=1e-9)
    assert math.isinf(float(samplers.get_sigmas(name, 4, native=Z, sigma_max=math.inf)[0]))
    # the tool's name reads ComfyUI's finite table (last σ 4518.76), which reaches 4096
    assert float(samplers.get_sigmas(f"comfyui:{name}", 4, native=Z, sigma_max=4096.0)[0]) == pytest.approx(4096.0)


# ---- lcm_uniform past its original_steps on a zero-SNR table: steps between LCM's top timesteps read as inf

@pytest.mark.parametrize("n", [51, 100])
def test_lcm_uniform_refuses_collapsed_steps_on_a_zsnr_table_at_the_schedule(n):
    with pytest.raises(samplers.InvalidInput, match=rf"'lcm_uniform'.*n={n} > original_steps=50.*inf.*n <= 50"):
        samplers.get_sigmas("lcm_uniform", n, native=Z)


def test_lcm_uniform_still_builds_where_its_steps_are_distinct():
    assert len(samplers.get_sigmas("lcm_uniform", 50, native=Z)) == 51
    s = samplers.get_sigmas("lcm_uniform", 100, native=SD)  # a finite table: interpolated between LCM's timesteps
    assert len(s) == 101 and bool((s[1:] < s[:-1]).all())


# ---- schedule operations: one input check (1-D, non-empty, real numbers), as flip has

KARRAS = S.karras(4, 0.03, 14.6)


@pytest.mark.parametrize("op", [lambda x: S.truncate(x, 0.5), lambda x: S.set_first(x, 20.0),
                                lambda x: S.drop_penultimate(x), lambda x: S.split(x, 1), S.flip],
                         ids=["truncate", "set_first", "drop_penultimate", "split", "flip"])
@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(3, 3), samplers.InvalidInput, r"1-D.*shape \(3, 3\)"),
    (torch.tensor([]), samplers.InvalidInput, "empty"),
    (torch.tensor([True, False]), samplers.InvalidType, "real numbers.*torch.bool"),
    (torch.tensor([2.0 + 0j, 0j]), samplers.InvalidType, "real numbers.*complex"),
    ("karras", samplers.InvalidType, "got str"),
    ([1.0, "0.5", 0.0], samplers.InvalidType, "must hold real numbers, got '0.5'"),
], ids=["2-D", "empty", "bool", "complex", "str", "str-element"])
def test_every_schedule_op_checks_its_input_by_name(op, bad, error, match):
    with pytest.raises(error, match=match):
        op(bad)


def test_schedule_ops_take_a_list_or_numpy_array_as_flip_does():
    ref = KARRAS.tolist()
    for given in (ref, np.array(ref)):
        assert torch.equal(S.truncate(given, 0.5), S.truncate(KARRAS, 0.5))
        assert torch.equal(S.set_first(given, 20.0), S.set_first(KARRAS, 20.0))
        assert torch.equal(S.drop_penultimate(given), S.drop_penultimate(KARRAS))
        assert all(torch.equal(a, b) for a, b in zip(S.split(given, 2), S.split(KARRAS, 2)))


def test_truncate_needs_a_step_to_keep():
    with pytest.raises(samplers.InvalidInput, match="at least one step"):
        S.truncate(torch.tensor([0.0]), 1.0)


@pytest.mark.parametrize("value, error, match", [
    ("abc", samplers.InvalidType, "sigma_min must be a number, got 'abc'"),
    ("0.0291671582", samplers.InvalidType, "sigma_min must be a number, got '0.0291671582'"),
    (float("nan"), samplers.InvalidInput, "sigma_min must be a number, got nan"),
])
def test_a_fixed_end_that_is_no_number_is_named_so(value, error, match):
    with pytest.raises(error, match=match):
        samplers.get_sigmas("simple", 4, native=SD, sigma_min=value)


# ---- the reason given is the reason

@pytest.mark.parametrize("name", ["normal", "sgm_uniform"])
def test_a_swapped_or_empty_table_range_is_named_so(name):
    with pytest.raises(samplers.InvalidInput, match="pass them the other way round"):
        samplers.get_sigmas(name, 4, native=SD, sigma_min=10.0, sigma_max=0.1)
    with pytest.raises(samplers.InvalidInput, match="two different values"):
        samplers.get_sigmas(name, 4, native=SD, sigma_min=1.0, sigma_max=1.0)
    with pytest.raises(samplers.InvalidInput, match="two different values"):  # the model's own top, given as sigma_min
        samplers.get_sigmas(name, 4, native=SD, sigma_min=float(SD.sigmas[-1]))


@pytest.mark.parametrize("value, error", [(float("nan"), samplers.InvalidInput), ("x", samplers.InvalidType)])
def test_a_preset_end_that_is_no_number_is_named_so(value, error):
    with pytest.raises(error, match=r"sigma_min must be a number, got (nan|'x')"):
        samplers.get_sigmas("ays_sd15", 4, sigma_min=value)

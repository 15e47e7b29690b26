"""Schedule inputs the audit found taken silently or refused for the wrong reason: each is refused at the schedule,
naming the value, the rule and the fix."""
import math

import pytest

import samplers

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

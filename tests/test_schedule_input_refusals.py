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

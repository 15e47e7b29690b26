"""The ComfyUI / diffusers schedules: the contract of every schedule, and equalities with known references."""
import math

import pytest
import torch

import samplers
from samplers import schedules
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.schedules.presets import AYS_PRESETS, loglinear_interp

VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)


@pytest.mark.parametrize("name", schedules.available())
@pytest.mark.parametrize("n", [1, 2, 7, 10, 25])
def test_every_schedule_keeps_the_contract(name, n):
    native = RectifiedFlow(shift=3.0) if name in ("flow", "linear_quadratic", "flow_dynamic") else VP
    kw = {"image_seq_len": 4096} if name == "flow_dynamic" else {}
    if name == "a1111_timesteps":  # A1111's DDIM / PLMS: one σ per timestep 1 + k·⌊1000/n⌋, ending at timestep 1
        if n == 1:  # one timestep: no step to take
            with pytest.raises(samplers.InvalidInput, match="hold one timestep"):
                samplers.get_sigmas(name, n, native=native)
            return
        s = samplers.get_sigmas(name, n, native=native)
        assert s.shape == (len(range(0, 1000, 1000 // n)),) and float(s[-1]) == pytest.approx(float(VP.sigmas[1]), rel=1e-12)
    else:
        s = samplers.get_sigmas(name, n, native=native, **kw)
        assert s.shape == (n + 1,) and float(s[-1]) == 0.0
    assert s.dtype == torch.float64
    assert bool((s[1:] < s[:-1]).all()), f"{name} is not strictly decreasing: {s.tolist()}"
    assert bool(torch.isfinite(s[1:]).all())


def test_table_schedules_match_the_diffusers_spacings_they_coincide_with():
    for n in (4, 10, 20):  # divisors of 1000
        torch.testing.assert_close(samplers.get_sigmas("simple", n, native=VP), samplers.get_sigmas("trailing", n, native=VP))
        torch.testing.assert_close(samplers.get_sigmas("normal", n, native=VP), samplers.get_sigmas("linspace", n, native=VP))
        torch.testing.assert_close(samplers.get_sigmas("ddim_uniform", n, native=VP),
                                   samplers.get_sigmas("leading", n, native=VP, steps_offset=1))
    sgm = samplers.get_sigmas("sgm_uniform", 10, native=VP)
    assert float(sgm[0]) == pytest.approx(float(VP.sigmas[-1])) and float(sgm[-2]) > float(VP.sigmas[0])
    for n in (3, 10, 17):  # sgm_uniform: n + 1 evenly spaced timesteps without the last = linspace(n + 1) minus σ_min
        torch.testing.assert_close(samplers.get_sigmas("sgm_uniform", n, native=VP)[:-1],
                                   samplers.get_sigmas("linspace", n + 1, native=VP)[:-2])


def test_table_schedules_need_the_table():
    with pytest.raises(ValueError, match="training table"):
        samplers.get_sigmas("simple", 10, sigma_min=0.03, sigma_max=14.6)


def test_kl_optimal_is_uniform_in_the_vp_angle_and_takes_infinity():
    s = samplers.get_sigmas("kl_optimal", 8, sigma_min=0.02, sigma_max=80.0)
    angles = s[:-1].atan()
    torch.testing.assert_close(angles[1:] - angles[:-1], torch.full((7,), float(angles[1] - angles[0]), dtype=torch.float64))
    inf = samplers.get_sigmas("kl_optimal", 8, sigma_min=0.02, sigma_max=math.inf)
    assert math.isinf(float(inf[0])) and bool(torch.isfinite(inf[1:]).all())


def test_align_your_steps_presets():
    diffusers = pytest.importorskip("diffusers")
    ays = diffusers.schedulers.scheduling_utils.AysSchedules
    torch.testing.assert_close(samplers.get_sigmas("ays_sd15", 10), torch.tensor(ays["StableDiffusionSigmas"], dtype=torch.float64))
    torch.testing.assert_close(samplers.get_sigmas("AYS SDXL", 10), torch.tensor(ays["StableDiffusionXLSigmas"], dtype=torch.float64))
    # 20 steps: log-linear interpolation passes through every published level
    twenty = samplers.get_sigmas("ays_sd15", 20)
    torch.testing.assert_close(twenty[:-1:2], torch.tensor(AYS_PRESETS["sd15"][:-1], dtype=torch.float64))
    mid = loglinear_interp([10.0, 1.0], 3)
    assert float(mid[1]) == pytest.approx(math.sqrt(10.0))


def test_beta_matches_diffusers_use_beta_sigmas():
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                           use_beta_sigmas=True)
    sch.set_timesteps(12)
    ours = samplers.get_sigmas("beta_sigmas", 12, native=VP)
    torch.testing.assert_close(ours.float(), sch.sigmas.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [2, 10, 20])
def test_beta_sigmas_is_diffusers_on_its_grid_ends(spacing, n):
    """diffusers' use_beta_sigmas lays the formula over its timestep grid's ends (SDXL ships leading spacing with
    steps_offset=1: σ(951)…σ(1) at 20 steps, not the table's 14.6…0.029): given those ends, the same values."""
    diffusers = pytest.importorskip("diffusers")
    config = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing=spacing,
                  steps_offset=1)
    plain, beta = (diffusers.EulerDiscreteScheduler(**config, use_beta_sigmas=b) for b in (False, True))
    for s in (plain, beta):
        s.set_timesteps(n)
    ours = samplers.get_sigmas("beta_sigmas", n, sigma_min=float(plain.sigmas[-2]), sigma_max=float(plain.sigmas[0]))
    torch.testing.assert_close(ours.float(), beta.sigmas.float(), rtol=1e-6, atol=0)


def test_laplace_and_linear_quadratic_shapes():
    lap = samplers.get_sigmas("laplace", 10, sigma_min=0.03, sigma_max=14.6)
    assert float(lap[0]) == pytest.approx(14.6) and float(lap[-2]) == pytest.approx(0.03)
    lq = samplers.get_sigmas("linear_quadratic", 10, native=RectifiedFlow())
    assert math.isinf(float(lq[0]))
    levels = 1 - lq[1:6] / (1 + lq[1:6])  # 1 − flow time: linear up to the threshold 0.025 over the first half
    torch.testing.assert_close(levels, torch.tensor([0.005, 0.01, 0.015, 0.02, 0.025], dtype=torch.float64))
    with pytest.raises(ValueError, match="linear_steps"):
        samplers.get_sigmas("linear_quadratic", 10, native=RectifiedFlow(), linear_steps=10)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="alpha > 0"):
        samplers.get_sigmas("beta", 10, native=VP, alpha=0.0)
    with pytest.raises(ValueError, match="repeats a sigma"):
        samplers.get_sigmas("laplace", 40, sigma_min=1.0, sigma_max=1.5)


def test_beta_timesteps_is_comfyui_beta_over_the_table():
    s = samplers.get_sigmas("comfy_beta", 4, native=VP)
    table = VP.sigmas.double()
    t = [int((table - float(v)).abs().argmin()) for v in s[:-1]]
    assert all(float(table[k]) == pytest.approx(float(v), rel=1e-12) for k, v in zip(t, s[:-1]))
    # quantiles 1, 3/4, 1/2, 1/4 of the symmetric Beta(0.6, 0.6) over 999 timesteps
    assert t[0] == 999 and t[2] == 500 and abs(t[1] + t[3] - 999) <= 1 and t[1] > 750
    wide = samplers.get_sigmas("beta_timesteps", 10, native=VP, alpha=0.3, beta=0.3)
    assert bool((wide[1:] < wide[:-1]).all())
    with pytest.raises(ValueError, match="repeats a sigma"):
        samplers.get_sigmas("beta_timesteps", 600, native=VP)


def test_flow_dynamic_matches_diffusers_dynamic_shifting():
    diffusers = pytest.importorskip("diffusers")
    from samplers.core.native import flow_t, flux_mu
    for seq in (256, 1024, 4096):
        sch = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        sch.set_timesteps(8, mu=flux_mu(seq))
        lo = math.exp(flux_mu(seq)) * (1e-3 / (1 - 1e-3))  # diffusers' unshifted t_min = 1/1000, shifted
        ours = samplers.get_sigmas("flow_dynamic", 8, sigma_min=lo, sigma_max=math.inf, image_seq_len=seq)
        torch.testing.assert_close(flow_t(ours).float(), sch.sigmas.float(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="image_seq_len"):
        samplers.get_sigmas("flow_dynamic", 8, native=RectifiedFlow(), image_seq_len=0)


def test_exponential_matches_diffusers_use_exponential_sigmas():
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                           use_exponential_sigmas=True)
    sch.set_timesteps(12)
    torch.testing.assert_close(samplers.get_sigmas("exponential", 12, native=VP).float(), sch.sigmas.float(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: samplers.get_sigmas("vp", 4, sigma_min=5.0, sigma_max=1.0), "lower end below its upper one"),
    (lambda: samplers.get_sigmas("vp", 4, sigma_min=math.nan, sigma_max=10.0), "sigma_min must be a number, got nan"),
    (lambda: samplers.get_sigmas("vp", 4, beta_d=-1.0), r"beta_d must be >= 0 \(the VP noise rate"),
    (lambda: samplers.get_sigmas("vp", 4, beta_d=0.0, beta_min=0.0), "has every σ 0"),
    (lambda: samplers.get_sigmas("leading", 1000, native=VP, steps_offset=1), "past the model's last training timestep"),
    (lambda: samplers.get_sigmas("leading", 10, native=VP, steps_offset=200), "use steps_offset <= 99"),
    (lambda: samplers.get_sigmas("flow", 4, native=RectifiedFlow(), shift=math.inf), "shift must be a finite number"),
    (lambda: samplers.get_sigmas("flow", 4, native=RectifiedFlow(), mu=math.nan), "mu must be a finite number"),
    (lambda: samplers.get_sigmas("flow", 4, native=RectifiedFlow(), mu=-740.0), "collapses its steps"),
    (lambda: samplers.get_sigmas("flow", 4, native=RectifiedFlow(), mu=1000.0), "too large to represent"),
    (lambda: samplers.get_sigmas("linspace", 4, native=VP, sigma_min=1.0), "takes no sigma_min"),
    (lambda: samplers.get_sigmas("trailing", 4, native=VP, sigma_max=5.0), "takes no sigma_max"),
    (lambda: samplers.get_sigmas("linear_quadratic", 4, sigma_min=1.0), "takes no sigma_min"),
    (lambda: samplers.get_sigmas("linear_quadratic", 4, training_sigmas=VP.sigmas), "takes no training_sigmas"),
    (lambda: samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0, training_sigmas=VP.sigmas),
     "takes no training_sigmas"),
    # a table passed by hand (the library's own message offers training_sigmas=): a diffusers scheduler's .sigmas
    # (descending) gave an ascending schedule, a NaN / 0 / inside-inf entry passed through, a 2-D one an IndexError
    (lambda: samplers.get_sigmas("linspace", 4, training_sigmas=VP.sigmas.flip(0)), "must increase with the timestep"),
    (lambda: samplers.get_sigmas("trailing", 4, training_sigmas=[1.0, 2.0, float("nan"), 4.0]),
     r"training_sigmas\[2\] = nan"),
    (lambda: samplers.get_sigmas("leading", 3, training_sigmas=[1.0, 0.0, 3.0]), r"training_sigmas\[1\] = 0.0"),
    (lambda: samplers.get_sigmas("leading", 3, training_sigmas=[1.0, float("inf"), 3.0]), r"training_sigmas\[1\] = inf"),
    (lambda: samplers.get_sigmas("linspace", 3, training_sigmas=VP.sigmas[None]), "must be 1-D"),
])
def test_a_schedule_refuses_values_it_would_ignore_or_turn_into_nan(build, message):
    """Each of these returned a schedule (ascending, NaN, inf, a repeated or clamped timestep) or ignored the value."""
    with pytest.raises(ValueError, match=message):
        build()


def test_a_training_table_that_is_no_sequence_of_numbers_is_refused_by_type():
    with pytest.raises(samplers.InvalidType, match="a 1-D sequence of numbers"):
        samplers.get_sigmas("linspace", 3, training_sigmas="abc")


def test_range_ends_equal_to_the_models_own_are_taken_by_every_table_schedule():
    # generic callers (the benchmarks, the fit's candidates) pass the model's own range to every schedule
    for name in ("linspace", "leading", "trailing", "simple", "ddim_uniform", "beta_timesteps"):
        torch.testing.assert_close(samplers.get_sigmas(name, 8, native=VP, sigma_min=VP.sigma_min,
                                                       sigma_max=VP.sigma_max), samplers.get_sigmas(name, 8, native=VP))


def test_an_optimised_schedule_at_one_step_starts_at_its_top():
    from samplers.schedules.optimise import OptimisedSchedule

    opt = OptimisedSchedule(sigmas=[14.6, 3.0, 0.8, 0.03, 0.0], sampler="dpmpp_2m", nfe=4, error=0.0)
    assert opt.schedule(1).tolist() == [14.6, 0.0]
    assert opt.schedule(4).tolist() == [14.6, 3.0, 0.8, 0.03, 0.0]
    with pytest.raises(ValueError, match="integer >= 1"):
        opt.schedule(0)

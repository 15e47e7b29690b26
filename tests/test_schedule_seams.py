"""Schedules at their seams with the tools they reproduce: diffusers' spacings and flow grid, ComfyUI's Align Your
Steps node, and the ranges a schedule does not take (refused, never clamped or ignored)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import samplers
from samplers import schedules
from samplers.core import names
from samplers.schedules.base import from_timesteps
from samplers.schedules.presets import AYS_PRESETS, loglinear_interp

VP = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
SD15 = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _diffusers():
    diffusers = pytest.importorskip("diffusers")
    warnings.filterwarnings("ignore")
    return diffusers


# ---- diffusers' timestep spacings, every step count of a 1000-step table

@pytest.mark.parametrize("cls", ["DDIMScheduler", "EulerDiscreteScheduler"])
def test_trailing_picks_diffusers_timesteps_at_every_step_count(cls):
    """n = 48, 96, ...: numpy's arange lands just below a half where torch's lands on it (937.4999… vs 937.5)."""
    sched = getattr(_diffusers(), cls)(**SD15, timestep_spacing="trailing")
    wrong = []
    for n in range(1, 1001):
        sched.set_timesteps(n)
        want = from_timesteps(torch.as_tensor(np.asarray(sched.timesteps), dtype=torch.float64), VP.sigmas)
        if not torch.equal(samplers.get_sigmas("trailing", n, native=VP), want):
            wrong.append(n)
    assert not wrong, f"trailing differs from diffusers at n = {wrong[:10]} ({len(wrong)} step counts)"


@pytest.mark.parametrize("offset", [0, 1])
def test_leading_picks_diffusers_timesteps_at_every_step_count(offset):
    sched = _diffusers().DDIMScheduler(**SD15, timestep_spacing="leading", steps_offset=offset)
    wrong = []
    for n in range(1, 1001):
        if (n - 1) * (1000 // n) + offset > 999:  # past the table: refused here (tested elsewhere)
            continue
        sched.set_timesteps(n)
        want = from_timesteps(torch.as_tensor(np.asarray(sched.timesteps), dtype=torch.float64), VP.sigmas)
        if not torch.equal(samplers.get_sigmas("leading", n, native=VP, steps_offset=offset), want):
            wrong.append(n)
    assert not wrong, f"leading differs from diffusers at n = {wrong[:10]}"


# ---- flow: the model's end (default) and diffusers' grid (end="diffusers")

def _flow_sigmas(t: torch.Tensor) -> torch.Tensor:
    t = t.double()
    return torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [1, 2, 3, 28, 50])
def test_flow_end_diffusers_is_flow_match_eulers_grid(shift, n):
    sched = _diffusers().FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(n)
    want = _flow_sigmas(sched.sigmas)  # VE σ = t/(1 − t)
    native = samplers.RectifiedFlow(shift=shift)
    got = samplers.get_sigmas("flow", n, native=native, end="diffusers")
    assert got.shape == want.shape and math.isinf(got[0]) and got[-1] == 0
    # compared in flow time t (diffusers' float32), where σ = t/(1 − t) does not magnify its rounding near t = 1
    torch.testing.assert_close(got[1:] / (1 + got[1:]), sched.sigmas.double()[1:], rtol=1e-6, atol=1e-7)
    model = samplers.get_sigmas("flow", n, native=native)
    if n > 1:  # the default ends at the model's own smallest level; diffusers' grid shifts it once more
        assert model[-2] == pytest.approx(native.sigma_min, rel=1e-12)
        assert got[-2] == pytest.approx(shift * native.sigma_min, rel=1e-12)
        assert torch.equal(model, got) == (shift == 1.0)


def test_flow_default_is_diffusers_dynamic_shifting_grid():
    """diffusers' dynamic shifting (Flux, mu) runs its grid to the unshifted t_min: the default end on the native."""
    sched = _diffusers().FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    for n in (2, 28):
        sched.set_timesteps(n, mu=0.8)
        got = samplers.get_sigmas("flow", n, native=samplers.RectifiedFlow.dynamic(0.8))
        torch.testing.assert_close(got[1:] / (1 + got[1:]), sched.sigmas.double()[1:], rtol=1e-6, atol=1e-7)
    with pytest.raises(samplers.InvalidOption, match="end='diffusers' takes no mu"):
        samplers.get_sigmas("flow", 4, native=samplers.RectifiedFlow(), mu=0.8, end="diffusers")
    with pytest.raises(samplers.InvalidOption, match="no end='comfyui'.*end='model'"):
        samplers.get_sigmas("flow", 4, native=samplers.RectifiedFlow(), end="comfyui")


def test_flow_refuses_shift_and_mu_together():
    with pytest.raises(samplers.InvalidOption, match="shift= or mu=.*shift=2.0 and mu=1.0"):
        schedules.flow(4, 0.003, math.inf, shift=2.0, mu=1.0)
    with pytest.raises(samplers.InvalidOption, match="not both"):
        samplers.get_sigmas("flow", 4, native=samplers.RectifiedFlow(shift=3.0), shift=2.0, mu=1.0)
    # the native's shift with the caller's mu is Flux's usage: mu replaces the model's shift, its sigma_min too (the
    # model's unshifted t_min shifted by e^mu, as diffusers' use_dynamic_shifting ignores its config's shift)
    native = samplers.RectifiedFlow(shift=3.0)
    torch.testing.assert_close(samplers.get_sigmas("flow", 4, native=native, mu=1.0),
                               samplers.get_sigmas("flow", 4, native=samplers.RectifiedFlow(), mu=1.0), rtol=0, atol=0)
    assert torch.equal(schedules.flow(4, 0.003, math.inf), schedules.flow(4, 0.003, math.inf, shift=1.0))


# ---- table schedules that take a range: refused outside the table, never clamped to it

@pytest.mark.parametrize("name", ["normal", "sgm_uniform"])
def test_a_range_outside_the_training_table_is_refused(name):
    low, high = float(VP.sigmas[0]), float(VP.sigmas[-1])
    for kw in ({"sigma_min": 0.001}, {"sigma_max": 100.0}, {"sigma_min": 0.001, "sigma_max": 100.0},
               {"sigma_max": math.inf}):
        with pytest.raises(samplers.InvalidInput, match=f"cover σ from {low:g} to {high:g}.*outside"):
            samplers.get_sigmas(name, 10, native=VP, **kw)
    # the model's own ends, given explicitly, and a range inside the table still build
    assert torch.equal(samplers.get_sigmas(name, 10, native=VP, sigma_min=VP.sigma_min, sigma_max=VP.sigma_max),
                       samplers.get_sigmas(name, 10, native=VP))
    inside = samplers.get_sigmas(name, 10, native=VP, sigma_min=0.1, sigma_max=10.0)
    assert inside[0] == pytest.approx(10.0) and inside[-1] == 0


# ---- Align Your Steps: a preset takes no range, with or without native=; ComfyUI's node's own levels

def test_ays_refuses_a_range_with_native_too():
    for kw in ({"sigma_min": 5.0, "sigma_max": 100.0}, {"sigma_min": 0.1}, {"sigma_max": 20.0}):
        with pytest.raises(samplers.InvalidOption, match="takes no sigma_m.*native= does not change"):
            samplers.get_sigmas("ays_sd15", 10, native=VP, **kw)
    own = samplers.get_sigmas("ays_sd15", 10)
    assert torch.equal(samplers.get_sigmas("ays_sd15", 10, native=VP), own)
    # the levels' own ends are what the preset uses: accepted
    assert torch.equal(samplers.get_sigmas("ays_sd15", 10, native=VP, sigma_min=0.029, sigma_max=14.615), own)


def _comfyui_node(levels: list[float], steps: int) -> torch.Tensor:
    """ComfyUI's AlignYourStepsScheduler.get_sigmas at denoise = 1."""
    sigmas = levels[:]
    if steps + 1 != len(sigmas):
        sigmas = loglinear_interp(sigmas, steps + 1).tolist()
    sigmas = list(sigmas[-(steps + 1):])
    sigmas[-1] = 0.0
    return torch.tensor(sigmas, dtype=torch.float64)


COMFYUI_LEVELS = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


@pytest.mark.parametrize("model_type", ["SD1", "SDXL", "SVD"])
@pytest.mark.parametrize("steps", [1, 3, 10, 20])
def test_comfyui_align_your_steps_name_gives_the_nodes_levels(model_type, steps):
    name = f"comfyui:AlignYourStepsScheduler {model_type}"
    want = _comfyui_node(COMFYUI_LEVELS[model_type], steps)
    assert torch.equal(samplers.get_sigmas(name, steps), want)
    assert torch.equal(samplers.get_sigmas(name, steps, native=VP), want)


def test_registry_and_a1111_align_your_steps_keep_the_rounded_levels():
    assert torch.equal(samplers.get_sigmas("ays_sd15", 10), torch.tensor(AYS_PRESETS["sd15"][:-1] + [0.0],
                                                                         dtype=torch.float64))
    assert names.resolve_schedule("Align Your Steps") == ("ays_sd15", {"append_zero": True})
    assert not torch.equal(samplers.get_sigmas("ays_sd15", 10),
                           samplers.get_sigmas("ays_sd15", 10, levels="comfyui"))
    with pytest.raises(samplers.InvalidOption, match="levels='rounded'.*levels='comfyui'"):
        samplers.get_sigmas("ays_sdxl", 10, levels="a1111")


def test_a_preset_takes_the_model_s_own_range_as_when_it_is_left_out():
    """Generic code passes the model's own range with native= (what get_sigmas fills in anyway): a preset accepts
    it and gives the same σ; any other end is still refused."""
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    for name in ("ays_sd15", "Align Your Steps"):
        torch.testing.assert_close(
            samplers.get_sigmas(name, 10, native=vp, sigma_min=vp.sigma_min, sigma_max=vp.sigma_max),
            samplers.get_sigmas(name, 10, native=vp), rtol=0, atol=0)
    with pytest.raises(samplers.InvalidOption, match="takes no sigma_min"):
        samplers.get_sigmas("ays_sd15", 10, native=vp, sigma_min=0.1)



# ---- input validation: a named error naming the value, the rule and the fix; never a raw Python / torch error,
# never a bool taken as a number, never a collapsed schedule

@pytest.mark.parametrize("build, match", [
    # σ_max^(1/ρ) so far above σ_min^(1/ρ) that the ramp rounds σ_min away: it ended [..., 0.0, 0.0]
    (lambda: schedules.karras(5, 0.03, 1e300), "'karras' repeats a sigma.*sigma_min\\^\\(1/rho\\) rounds away"),
    (lambda: schedules.exponential(10, 1.0, 1.0 + 1e-15), "'exponential' repeats a sigma"),
    (lambda: schedules.polyexponential(4, 1.0, 2.0, rho=1e-17), "'polyexponential' repeats a sigma.*rho nearer 1"),
])
def test_formula_schedules_refuse_a_collapsed_result(build, match):
    with pytest.raises(samplers.InvalidInput, match=match):
        build()


@pytest.mark.parametrize("build, error, match", [
    (lambda: schedules.karras(5, 0.03, 14.6, rho=1e-9), samplers.InvalidOption, "rho=1e-09 .*past float64's range"),
    (lambda: schedules.beta_sigmas(5, 0.03, 14.6, alpha="0.6"), samplers.InvalidType, "alpha must be a real number"),
    (lambda: samplers.get_sigmas("beta_timesteps", 5, native=VP, beta="0.6"), samplers.InvalidType,
     "beta must be a real number"),
    (lambda: schedules.laplace(5, 0.03, 14.6, mu=True), samplers.InvalidType, "mu must be a real number"),
    (lambda: schedules.linear_quadratic(5, None, 14.6, linear_steps=2.0), samplers.InvalidType,
     "linear_steps must be an integer, got 2.0"),
    (lambda: schedules.split(schedules.karras(5, 0.03, 14.6), 2.0), samplers.InvalidType,
     "step must be an integer, got 2.0"),
])
def test_a_bad_value_is_a_named_error_not_a_raw_one(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("build, match", [
    (lambda: schedules.beta_sigmas(5, 0.03, 14.6, alpha=True), "alpha must be a real number.*True"),
    (lambda: samplers.get_sigmas("beta_timesteps", 5, native=VP, alpha=True), "alpha must be a real number.*True"),
    (lambda: schedules.linear_quadratic(5, None, 14.6, linear_steps=True), "linear_steps must be an integer, got True"),
    (lambda: schedules.split(schedules.karras(5, 0.03, 14.6), True), "step must be an integer, got True"),
    (lambda: schedules.truncate(schedules.karras(5, 0.03, 14.6), True), "strength must be a real number.*True"),
    (lambda: schedules.set_first(schedules.karras(5, 0.03, 14.6), True), "sigma must be a number, got True"),
])
def test_a_bool_is_not_taken_as_a_number(build, match):
    with pytest.raises(samplers.InvalidType, match=match):
        build()


@pytest.mark.parametrize("build, match", [
    (lambda: schedules.laplace(5, 0.03, 14.6, beta=-0.5), "beta must be > 0"),
    (lambda: schedules.laplace(5, 0.03, 14.6, beta=0.0), "beta must be > 0"),
    (lambda: schedules.laplace(5, 0.03, 14.6, mu=math.nan), "mu must be a finite number"),
    (lambda: schedules.laplace(5, 0.03, 14.6, mu=math.inf), "mu must be a finite number"),
    (lambda: schedules.beta_sigmas(5, 0.03, 14.6, alpha=math.inf), "alpha must be a finite number"),
    (lambda: schedules.linear_quadratic(5, None, 14.6, threshold_noise=math.nan), "threshold_noise must be a finite"),
    (lambda: schedules.linear_quadratic(5, None, 14.6, threshold_noise=0.0), "threshold_noise must be > 0"),
    (lambda: schedules.linear_quadratic(5, None, 14.6, threshold_noise=1.5), "threshold_noise must be < 1"),
    # inside (0, 1) but past where the quadratic part turns back: the message says so, not "fewer steps"
    (lambda: schedules.linear_quadratic(10, None, 14.6, threshold_noise=0.9), "threshold_noise=0.9 .*turns back"),
    (lambda: schedules.set_first(torch.tensor([0.0]), -1.0), "sigma must be >= 0"),
])
def test_a_bad_option_is_named_not_reported_as_a_repeated_sigma(build, match):
    with pytest.raises(samplers.InvalidInput, match=match):
        build()


def test_numpy_and_0d_tensor_scalars_are_numbers_as_the_step_count_is():
    want = schedules.karras(5, float(np.float32(0.03)), 14.6)
    for lo in (np.float32(0.03), torch.tensor(0.03)):
        assert torch.equal(schedules.karras(5, lo, 14.6), want)
    assert torch.equal(schedules.karras(np.int64(5), 0.03, np.float64(14.6)), schedules.karras(5, 0.03, 14.6))
    assert torch.equal(schedules.exponential(5, 0.03, torch.tensor(14.6, dtype=torch.float64)),
                       schedules.exponential(5, 0.03, 14.6))
    sig = schedules.karras(5, 0.03, 14.6)
    assert torch.equal(schedules.set_first(sig, sig[0]), sig)  # a schedule's own 0-d element
    for bad in (torch.tensor(True), torch.tensor([0.03]), np.bool_(True)):
        with pytest.raises(samplers.InvalidType, match="sigma_min must be a number"):
            schedules.karras(5, bad, 14.6)


# ---- diffusers' spacings: which classes' timesteps linspace / leading are (the docstrings say so)

def _timesteps(cls, spacing, n, offset=0):
    sched = getattr(_diffusers(), cls)(**SD15, timestep_spacing=spacing, steps_offset=offset)
    sched.set_timesteps(n)
    return np.asarray(sched.timesteps, dtype=np.float64)


def _ours(spacing, n, offset=0):
    if spacing == "linspace":
        return torch.linspace(999, 0, n, dtype=torch.float64).numpy()
    return np.arange(n - 1, -1, -1) * (1000 // n) + offset


@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_linspace_and_leading_are_euler_discretes_spacing(spacing):
    same = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler"]
    same += ["DDIMScheduler", "DDPMScheduler"] if spacing == "leading" else []
    for cls in same:
        for n in range(2, 60):
            want = _ours(spacing, n, 1 if spacing == "leading" else 0)
            got = _timesteps(cls, spacing, n, 1 if spacing == "leading" else 0)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 if spacing == "linspace" else 0, err_msg=cls)
    # the multistep solvers take n + 1 rounded points and drop the last
    for cls in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler"):
        for n in (5, 10, 20):
            got = _timesteps(cls, spacing, n)
            want = (np.linspace(0, 999, n + 1).round() if spacing == "linspace"
                    else np.arange(n + 1) * (1000 // (n + 1)))[::-1][:-1]
            np.testing.assert_array_equal(got, want, err_msg=cls)
            assert not np.allclose(got, _ours(spacing, n)), cls
    if spacing == "linspace":  # DDIM rounds Euler's points to integers
        assert np.array_equal(_timesteps("DDIMScheduler", spacing, 7), _ours(spacing, 7).round())
        assert not np.array_equal(_ours(spacing, 7), _ours(spacing, 7).round())


# ---- the quick-start's initial_latent reads its schedule as a run does

@pytest.mark.parametrize("sigmas, error, message", [
    (None, samplers.InvalidType, "sigmas must be a 1-D tensor or a sequence of numbers, got NoneType"),
    ([], samplers.InvalidInput, "at least 1 value, got none"),  # its first σ alone is a start
    (torch.tensor([]), samplers.InvalidInput, "at least 1 value, got none"),
    ("karras", samplers.InvalidType, "sequence of numbers"),
    (torch.ones(2, 3), samplers.InvalidInput, "must be 1-D"),
    ([float("nan"), 0.0], samplers.InvalidInput, r"sigmas\[0\] = nan is invalid"),
    (["10", 0.0], samplers.InvalidType, "must hold real numbers"),
])
def test_initial_latent_refuses_a_schedule_a_run_would_refuse(sigmas, error, message):
    # a bare TypeError ('NoneType' object is not subscriptable) / IndexError before
    with pytest.raises(error, match=message):
        samplers.initial_latent(torch.randn(2, 3), sigmas)


def test_initial_latent_takes_a_schedule_or_its_first_sigma_alone():
    noise = torch.randn(2, 3)
    for sigmas in ([5.0, 1.0, 0.0], np.array([5.0, 0.0]), torch.tensor([5.0, 0.0]), [5.0], torch.tensor([5.0])):
        assert torch.equal(samplers.initial_latent(noise, sigmas), noise * 5.0)
    assert samplers.initial_latent(noise, [math.inf, 1.0, 0.0]) is noise


# ---- flip, the fix a run's "strictly decreasing" refusal names, takes what a run takes

@pytest.mark.parametrize("ascending", [[0.0, 1.0, 10.0], (0, 1, 10), np.array([0.0, 1.0, 10.0]),
                                       np.array([0.0, 1.0, 10.0], dtype=np.float32), torch.tensor([0.0, 1.0, 10.0]),
                                       [torch.tensor(0.0), np.float64(1.0), 10]],
                         ids=["list", "tuple", "numpy", "numpy32", "tensor", "mixed"])
def test_flip_takes_a_list_or_numpy_array_as_a_run_does(ascending):
    # AttributeError: 'list' / 'numpy.ndarray' object has no attribute 'flip' before
    flipped = schedules.flip(ascending)
    assert isinstance(flipped, torch.Tensor) and flipped.tolist() == [10.0, 1.0, 0.0]
    out = samplers.sample("euler", lambda x, s: x / (1 + s.view(-1, 1) ** 2), torch.ones(1, 2) * 10, flipped,
                          disable=True)
    assert out.shape == (1, 2)


@pytest.mark.parametrize("bad, error, message", [
    (None, samplers.InvalidType, "got NoneType"), ("karras", samplers.InvalidType, "got str"),
    ([0.0, "1"], samplers.InvalidType, "must hold real numbers, got '1'"),
    ([True, 0.0], samplers.InvalidType, "must hold real numbers, got True"),
    (np.array(["a", "b"]), samplers.InvalidType, "must hold real numbers"),
])
def test_flip_refuses_what_is_not_a_schedule_by_name(bad, error, message):
    with pytest.raises(error, match=message):
        schedules.flip(bad)


def test_numpy_forms_a_caller_passes_are_read_as_their_numbers():
    import numpy as np

    from samplers.schedules import ops

    ref = samplers.get_sigmas("karras", 4, sigma_min=0.03, sigma_max=14.6)
    # a 0-d numpy array as a range end (k-diffusion's sample_dpm_fast runs with np.array(0.03)), as 0-d tensors are
    assert torch.equal(samplers.get_sigmas("karras", 4, sigma_min=np.array(0.03), sigma_max=np.array(14.6)), ref)
    # a reversed view and a big-endian array flip as the array they hold (torch.from_numpy takes neither)
    a = np.array([0.0, 0.5, 1.0, 2.0])
    assert ops.flip(a[::-1]).tolist() == [0.0, 0.5, 1.0, 2.0]
    assert ops.flip(a.astype(">f8")).tolist() == [2.0, 1.0, 0.5, 0.0]

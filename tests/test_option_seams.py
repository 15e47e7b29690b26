"""Options checked at the boundary, before any model call: lms prior_sigmas, user callables (er_sde noise_scaler,
sa_solver tau_func), torchsde η ranges written in log form, dpm_adaptive's PID gains, and library errors for a
missing solver file and exhausted pre-drawn noise."""
import math

import pytest
import torch

import samplers
from samplers.core import errors
from samplers.core.noise import NoiseExhaustedError, PredrawnNoise
from samplers.ode.singlestep import PIDStepSizeController
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=5)
SIG = samplers.get_sigmas("karras", 3, sigma_min=0.05, sigma_max=10.0)


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, x, s, **kw):
        self.n += 1
        return GM.denoiser(x, s, **kw)


def x0():
    return GM.noise(2, seed=5).float() * 10


def refused(name, error, match, sigmas=SIG, **kw):
    model = Counter()
    with pytest.raises(error, match=match):
        samplers.sample(name, model, x0(), sigmas, disable=True, **kw)
    assert model.n == 0, f"{name} called the model {model.n} times before refusing"


# --- torchsde: η too large for the dtype, message in log form (math.exp overflowed above ln τ ≈ 709) -------------

@pytest.mark.parametrize("eta", [20.0, 1e10, 1e200])
def test_torchsde_large_eta_is_refused_in_log_form(eta):
    refused("torchsde.euler", samplers.InvalidInput, r"reaches 10\^.* at σ=0\.05: more than torch\.float32 holds.*"
            r"use eta <= 5\.\d+", seed=0, eta=eta)


def test_torchsde_eta_too_large_for_the_largest_sigma_is_refused():
    # τ = σ^−(1+η²) underflows at σ = 80 (u = x·τ became 0, then NaN after the model calls)
    refused("torchsde.euler", samplers.InvalidInput, r"of size σ\^−η² = 10\^-.* at σ=80: less than torch\.float32 holds.*"
            r"use eta <= 4\.\d+", sigmas=[80.0, 10.0, 2.0, 0.0], seed=0, eta=5.0)
    out = samplers.sample("torchsde.euler", GM.denoiser, x0() * 8, [80.0, 10.0, 2.0, 0.0], disable=True, seed=0,
                          eta=4.0)
    assert torch.isfinite(out).all()


# --- lms prior_sigmas -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prior,match", [
    ([float(SIG[0])], r"prior_sigmas\[0\] = 10 is not above sigmas\[0\] = 10"),
    ([5.0], r"prior_sigmas\[0\] = 5 is not above sigmas\[0\]"),
    ([30.0, 12.0], r"prior_sigmas\[1\] = 12 is not above prior_sigmas\[0\] = 30.*most recent first"),
    ([12.0, 12.0], r"prior_sigmas\[1\] = 12 is not above prior_sigmas\[0\] = 12"),
    ([12.0, 20.0, 30.0, 40.0], r"lists 4 sigmas but order = 4 reads at most order − 1 = 3"),
])
def test_lms_prior_sigmas_must_be_earlier_steps_most_recent_first(prior, match):
    refused("lms", samplers.InvalidOption, match, prior_sigmas=prior)


def test_lms_prior_sigmas_length_follows_order():
    refused("lms", samplers.InvalidOption, r"order = 2 reads at most order − 1 = 1", order=2,
            prior_sigmas=[12.0, 20.0])
    out = samplers.sample("lms", GM.denoiser, x0(), SIG, disable=True, prior_sigmas=[12.0, 20.0, 30.0])
    assert torch.isfinite(out).all()


# --- user callables: evaluated on the run's σ before the first model call -----------------------------------------

@pytest.mark.parametrize("fn,match", [
    (lambda s: -s, r"noise_scaler\(1\.15395\) = -1\.15.*must return a finite number > 0"),
    (lambda s: "x", r"noise_scaler\(1\.15395\) returned 'x' \(str\); noise_scaler must return a real number"),
    (lambda s, t: s, r"noise_scaler\(1\.15395\) raised TypeError.*called as noise_scaler\(sigma\)"),
    (lambda s: math.inf, r"noise_scaler\(1\.15395\) = inf"),
    (lambda s: s if s > 0.06 else float("nan"), r"noise_scaler\(0\.05\) = nan"),
])
def test_er_sde_noise_scaler_checked_before_the_run(fn, match):
    refused("er_sde", samplers.InvalidOption, match, seed=0, noise_scaler=fn)


def test_er_sde_noise_scaler_quadrature_points_are_checked_too():
    # positive at the schedule's σ, negative between them: only the stage-2 quadrature reads it there
    sig = [float(s) for s in SIG]

    def phi(s):
        return s if any(abs(s - t) < 1e-12 for t in sig) else -1.0
    refused("er_sde", samplers.InvalidOption, r"noise_scaler\(.*\) = -1\.0", seed=0, noise_scaler=phi)
    refused("er_sde", samplers.InvalidOption, r"noise_scaler\(.*\) = -1\.0", seed=0, noise_scaler=phi,
            quadrature="riemann")


@pytest.mark.parametrize("quadrature", ["gauss_legendre", "riemann"])
def test_er_sde_valid_noise_scaler_output_unchanged(quadrature):
    def phi(s):
        return s * (math.exp(s ** 0.3) + 10.0)
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    given = samplers.sample("er_sde", GM.denoiser, x0(), sig, disable=True, seed=0, noise_scaler=phi,
                            quadrature=quadrature)
    default = samplers.sample("er_sde", GM.denoiser, x0(), sig, disable=True, seed=0, quadrature=quadrature)
    torch.testing.assert_close(given, default, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn,match", [
    (lambda s, t: "a", r"tau_func\(10, 1\.15395\) returned 'a' \(str\)"),
    (lambda s: 1.0, r"tau_func\(10, 1\.15395\) raised TypeError.*called as tau_func\(sigma, sigma_next\)"),
    (lambda s, t: float("nan"), r"tau_func\(10, 1\.15395\) = nan; tau_func must return a finite number"),
    (lambda s, t: 1.0 if t > 1 else math.inf, r"tau_func\(1\.15395, 0\.05\) = inf"),
    (lambda s, t: 1e300, r"tau_func\(10, 1\.15395\) = 1e\+300: τ² overflows"),
    (lambda s, t: 1j, r"returned 1j \(complex\)"),
])
@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_solver_tau_func_checked_before_the_run(name, fn, match):
    refused(name, samplers.InvalidOption, match, seed=0, tau_func=fn)


def test_sa_solver_eta_whose_square_overflows_is_refused():
    refused("sa_solver", samplers.InvalidOption, r"eta = 1e\+200: τ² overflows", seed=0, eta=1e200,
            sde_interval=(100.0, 0.0))


def test_sa_solver_valid_tau_func_output_unchanged():
    calls = []

    def tau(s, t):
        calls.append((s, t))
        return 1.0 if 5.0924 >= t > 0.5712 else 0.0
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    given = samplers.sample("sa_solver", GM.denoiser, x0(), sig, disable=True, seed=0, tau_func=tau)
    default = samplers.sample("sa_solver", GM.denoiser, x0(), sig, disable=True, seed=0)
    assert torch.equal(given, default)
    assert len(calls) == 5  # once per step, none for the step to 0


# --- dpm_adaptive's PID gains --------------------------------------------------------------------------------------

def test_pid_large_gains_saturate_the_limiter_instead_of_overflowing():
    pid = PIDStepSizeController(0.05, 200.0, 1.0, 0.0, order=3)
    pid.propose_step(1e-6)
    assert pid.propose_step(1e-7) and pid.h > 0 and math.isfinite(pid.h)
    # the product is representable though a factor is not: computed in logs
    pid = PIDStepSizeController(0.05, 0.0, 0.0, 0.0, order=1)
    pid.b1, pid.b2, pid.b3 = 50.0, -49.0, 0.0
    pid.errs = [1e8, 1e8, 1e8]
    before = pid.h
    pid.propose_step(1 / 1e8 - 1e-8)
    assert pid.h == pytest.approx(before * (1 + math.atan(1e8 - 1)))


@pytest.mark.parametrize("gains", [dict(pcoeff=200.0), dict(icoeff=200.0)])
def test_dpm_adaptive_large_gains_run(gains):
    out = samplers.sample("dpm_adaptive", GM.denoiser, x0(), SIG, disable=True, max_steps=20_000, **gains)
    assert torch.isfinite(out).all()


def test_dpm_adaptive_step_size_below_resolution_is_a_step_limit_error():
    with pytest.raises(samplers.StepLimitError, match=r"step size h = .* fell below .*PID gains"):
        samplers.sample("dpm_adaptive", GM.denoiser, x0(), SIG, disable=True, dcoeff=200.0)


# --- errors in the library's hierarchy ----------------------------------------------------------------------------

def test_missing_solver_file_is_a_library_error(tmp_path):
    path = tmp_path / "no" / "such.json"
    for error in (errors.MissingFile, samplers.InvalidInput, samplers.SamplersError, FileNotFoundError):
        refused("learned_multistep", error, r"no fitted solver at .*such\.json.*samplers fit", solver=str(path))


def test_noise_exhausted_is_a_library_error():
    model = Counter()
    with pytest.raises(NoiseExhaustedError) as info:
        samplers.sample("euler_ancestral", model, x0(), SIG, disable=True,
                        noise_sampler=PredrawnNoise(torch.randn(1, 2, 2, 2, 2)))
    assert isinstance(info.value, samplers.SamplersError) and isinstance(info.value, samplers.InvalidInput)
    assert isinstance(info.value, IndexError)


# --- docs ---------------------------------------------------------------------------------------------------------

def test_docs_header_states_how_orders_are_measured_and_the_dpm_fast_callback():
    from app.docs import samplers_md
    text = samplers_md()
    assert "measured convergence order" not in text
    assert "refined_sigmas" in text and "warm-up" in text
    assert "`dpm_fast` calls back once per model call" in text
    assert "before the step" in samplers.info("dpm_fast").fn.implementation.__doc__


def test_dpm_fast_callback_is_the_state_before_each_call():
    x, cbs = x0(), []
    out = samplers.sample("dpm_fast", GM.denoiser, x, [10.0, 1.0, 0.0], disable=True, callback=cbs.append)
    assert torch.equal(cbs[0]["x"], x) and not torch.equal(cbs[-1]["x"], out)

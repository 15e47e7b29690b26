"""`samplers fit` and fitted solvers at the seams the fitting audit found open: the report's default row is the
model's own default run (the flow U-Net's from σ = inf; a diffusers flow scheduler's too), a FitConfig whose
samplers / schedules leave no pair is refused before any model call, a ``to_denoiser`` model's identity holds its
schedule, a guidance scale bound with functools.partial is part of the identity, a saved optimisation resumes only
for the start it was made from, and --out under a file says so."""
import math

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(4,), components=3, seed=1)


# ---------------------------------------------------------------------- 1: the default row is the model's own run


def test_the_flow_models_default_row_is_its_pipelines_default_run_from_sigma_inf():
    """The row ran the flow schedule over the stand-in σ range [σ_min, 80] with its first σ forced to 80 (RMSE 0.382
    at 8 steps where the real default, from σ = inf, is 0.447): now Pipeline.plan's grid, scored from its own start."""
    from app.fit import default_run, shipped_target
    from models.pipeline import Pipeline

    target = shipped_target("flow", ["a red circle"], None)
    assert target.sigma_max == 80.0  # the fit's finite stand-in: not where the default starts
    noise = target.noise(1, 1)
    asked = []

    def reference_from(top):
        asked.append(top)
        return torch.zeros_like(noise)

    row = default_run(target, 2, None, noise, 1, reference_from)
    _, own, options = Pipeline.load(model="flow").plan(None, None, 2, {})
    assert math.isinf(float(own[0])) and asked == [math.inf]
    assert row["label"] == "dpmpp_2m + flow from σ = inf (2 steps)"
    with torch.no_grad():
        want = samplers.sample("dpmpp_2m", target.denoiser, samplers.initial_latent(noise, own), own,
                               extra_args=target.item_args(1, 1), disable=True, **options)
    assert row["rmse"] == pytest.approx(float(want.double().pow(2).mean().sqrt()), rel=1e-12)


def test_a_diffusers_scheduler_from_sigma_inf_gets_a_default_row():
    """A diffusers flow scheduler (FlowMatchEulerDiscreteScheduler, t = 1 first) was "default: none (… no exact
    endpoint is solved …)": it is scored against the endpoints from σ = inf of the same held-out starts."""
    from app.fit import Target, default_run
    from samplers.fitted.fitting import reference_endpoints
    from samplers.interop.diffusers_models import model_config, native_from_config

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}
    native, prediction = native_from_config(model_config(config))
    model = GM.as_model(prediction, native)
    den = samplers.to_denoiser(model, prediction, native)
    target = Target("gm flow", den, (4,), 0.002, 80.0, native, prediction, torch.float64,
                    scheduler=("FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": 1.0},
                               lambda n, seed: model))
    noise, asked = target.noise(4, 1), []

    def reference_from(top):
        asked.append(top)
        return reference_endpoints(den, samplers.initial_latent(noise, [top]), top)

    row = default_run(target, 4, None, noise, 1, reference_from)
    assert isinstance(row, dict), row
    assert asked == [math.inf] and row["label"].endswith("from σ = inf") and 0 < row["rmse"] < 1


def test_the_eps_models_default_row_starts_where_the_fit_does():
    """The eps U-Net's default (dpmpp_2m + karras) starts at its table's top to rounding (4e-15 above it): the row
    runs it from σ_max, scored on the endpoints solved once for the fit and its pair (its figures unchanged)."""
    from app.fit import default_run, shipped_target

    target = shipped_target("eps", ["a red circle"], None)
    noise, asked = target.noise(1, 1), []
    row = default_run(target, 2, None, noise, 1, lambda top: asked.append(top) or torch.zeros_like(noise))
    assert asked == [target.sigma_max] and row["label"] == "dpmpp_2m + karras (2 steps)"


# ------------------------------------------- 2: a FitConfig that leaves no starting pair, refused before any call


@pytest.mark.parametrize("asked, named", [
    ({"samplers": ("euler_ancestral",)}, "sampler 'euler_ancestral' draws noise"),
    ({"samplers": ("dpm_adaptive",)}, "sampler 'dpm_adaptive' picks its steps as it runs"),
    ({"schedules": ("ays_svd",)}, "schedule 'ays_svd' gives no grid from σ_max = 80 down to 0"),
    ({"samplers": ("euler_ancestral", "euler"), "schedules": ("ays_svd",)}, "sampler 'euler_ancestral' draws noise"),
])
def test_a_config_that_leaves_no_starting_pair_is_refused_before_any_model_call(asked, named):
    """It was refused after the calibration's exact endpoints were solved (128 model calls on gm-ve; hundreds per
    start on a U-Net), saying "check the σ range": now before any call, naming each sampler / schedule and why."""
    from benchmarks.common import get_problem
    from samplers import InvalidInput
    from samplers.fitted.fitting import FitConfig, fit

    p = get_problem("gm-ve")
    calls = []

    def den(x, sigma, **kw):
        calls.append(1)
        return p.denoiser(x, sigma, **kw)

    den.samplers_fingerprint = "gm-ve counted"
    cal = torch.randn(8, *p.shape, generator=torch.Generator().manual_seed(0), dtype=p.dtype)
    with pytest.raises(InvalidInput, match="leaves no \\(sampler, schedule\\) pair") as err:
        fit(den, FitConfig(3, pool=0, iters=2, **asked), cal, p.sigma_min, p.sigma_max, native=p.native)
    assert named in str(err.value) and "check the σ range" not in str(err.value) and calls == []


# ------------------------------------------- 5: a saved optimisation resumes only from the start it was made from


def test_a_saved_state_is_not_resumed_by_another_start_on_the_same_nodes(tmp_path):
    """The resume compared the start's σ nodes alone: a state saved from euler + karras was resumed by a run from
    dpmpp_2m + karras (same nodes, other weights), which returned euler's optimisation."""
    from benchmarks.common import get_problem
    from samplers.fitted.fitting import Calibration, FitConfig, optimise, reference_endpoints
    from samplers.fitted.solver import LearnedSolver

    p = get_problem("gm-ve")
    cal = torch.randn(12, *p.shape, generator=torch.Generator().manual_seed(0), dtype=p.dtype)
    x = cal * 80.0
    ref = reference_endpoints(p.denoiser, x, 80.0)
    data = Calibration(x[:8], ref[:8], x[8:], ref[8:], p.sigma_min, 80.0)
    sig = samplers.get_sigmas("karras", 3, sigma_min=p.sigma_min, sigma_max=80.0)
    a, b = LearnedSolver.from_sampler("euler", sig), LearnedSolver.from_sampler("dpmpp_2m", sig)
    assert a.sigmas == b.sigmas and not a.same_steps(b)
    cfg, path = FitConfig(3, iters=4, check_every=2, batch=4, pool=0), tmp_path / "state.pt"
    optimise(p.denoiser, a, data, cfg, state_path=path)
    logs = []
    got = optimise(p.denoiser, b, data, cfg, state_path=path, log=logs.append)
    assert not [line for line in logs if "resumed" in line]
    assert got[0].same_steps(optimise(p.denoiser, b, data, cfg)[0])
    logs.clear()
    optimise(p.denoiser, b, data, cfg, state_path=path, log=logs.append)  # its own state: resumed
    assert [line for line in logs if "resumed at iteration 4" in line]

"""`samplers fit` and fitted solvers at the seams the fitting audit found open: the report's default row is the
model's own default run (the flow U-Net's from σ = inf; a diffusers flow scheduler's too), a FitConfig whose
samplers / schedules leave no pair is refused before any model call, a ``to_denoiser`` model's identity holds its
schedule, a guidance scale bound with functools.partial is part of the identity, a saved optimisation resumes only
for the start it was made from, and --out under a file says so."""
import functools
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


# ------------------------------------------------------- 3: a to_denoiser model's identity holds its schedule


class _Net(torch.nn.Module):  # an eps network
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1, dtype=torch.float64))

    def forward(self, x, t):
        return self.w * x + 1e-3 * t.reshape(-1, 1)


def _sd(kind="scaled_linear", start=0.00085, end=0.012, **kw):
    return samplers.VPDiscrete.from_betas(kind, 1000, start, end, **kw)


def test_a_solver_fitted_under_one_schedule_is_refused_on_the_same_network_under_another(tmp_path):
    """A to_denoiser denoiser was fingerprinted by its network's weights alone: a solver fitted on SD-1.x's table
    ran, unrefused, on the same network read through another beta table (D differs by 0.096 at σ = 1)."""
    from samplers.fitted.identity import fingerprint
    from samplers.fitted.solver import LearnedSolver, OtherModelError

    net = _Net()
    a = samplers.to_denoiser(net, "eps", _sd())
    b = samplers.to_denoiser(net, "eps", _sd("linear", 0.0001, 0.02))
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(samplers.to_denoiser(net, "eps", _sd()))  # the same model: the same
    assert fingerprint(a) != fingerprint(samplers.to_denoiser(net, "v", _sd()))  # read as another prediction
    assert fingerprint(a) != fingerprint(samplers.to_denoiser(net, "eps", samplers.VPDiscrete(_sd().alphas_cumprod,
                                                                                               quantize=True)))
    solver = LearnedSolver.from_sampler("dpmpp_2m", samplers.get_sigmas("karras", 4, sigma_min=0.03, sigma_max=14.0))
    solver.model = {"fingerprint": fingerprint(a), "name": "A", "prediction": "eps"}
    path = solver.save(tmp_path / "a.json")
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * solver.sigmas[0]
    samplers.sample(f"fitted:{path}", a, x, solver.sigmas, disable=True)
    with pytest.raises(OtherModelError, match="not to this model"):
        samplers.sample(f"fitted:{path}", b, x, solver.sigmas, disable=True)
    samplers.sample(f"fitted:{path}", b, x, solver.sigmas, disable=True, allow_other_model=True)


def test_a_native_model_that_names_itself_keeps_its_name():
    """The pipeline's U-Net and a mixture's as_model name themselves with their schedule: the shipped fits of both
    keep the fingerprints they record; a named model that says it has none has none (not a hash of None)."""
    from samplers.fitted.identity import fingerprint

    native = _sd()
    model = GM.as_model("eps", native)
    assert fingerprint(samplers.to_denoiser(model, "eps", native)) == fingerprint(model)

    def unnamed(x, t):
        return x

    unnamed.samplers_fingerprint = lambda: None
    assert fingerprint(unnamed) is None and fingerprint(samplers.to_denoiser(unnamed, "eps", native)) is None


# ------------------------------------------------------- 4: a guidance scale bound with functools.partial


class _A1111CFG(torch.nn.Module):  # holds the network, takes cond_scale per call (k-diffusion / A1111's shape)
    def __init__(self, inner):
        super().__init__()
        self.inner_model = inner

    def forward(self, x, sigma, cond_scale=1.0, cond=None):
        c = self.inner_model(x, sigma)
        u = self.inner_model(x * 0.9, sigma)
        return u + (c - u) * cond_scale


class _Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8).double()

    def forward(self, x, sigma):
        return self.lin(x / (1 + sigma.reshape(-1, 1)))


def test_a_guidance_scale_bound_with_partial_is_part_of_the_identity():
    """functools.partial was looked through to its function: a solver recorded at cond_scale 3 ran at 7 unrefused.
    Bound numbers are now hashed in; bound tensors (conditioning) leave the identity alone; an object whose effect
    cannot be read makes it unknown (None: refused unless allowed)."""
    import numpy as np

    from samplers.fitted.identity import fingerprint
    from samplers.fitted.solver import LearnedSolver, OtherModelError

    torch.manual_seed(0)
    cfg = _A1111CFG(_Lin())
    at3, at7 = functools.partial(cfg, cond_scale=3.0), functools.partial(cfg, cond_scale=7.0)
    assert fingerprint(at3) != fingerprint(at7) and None not in (fingerprint(at3), fingerprint(at7))
    assert fingerprint(at3) == fingerprint(functools.partial(cfg, cond_scale=np.float32(3)))  # the same number
    assert fingerprint(at3) == fingerprint(functools.partial(cfg, cond_scale=torch.tensor(3.0)))
    cond = torch.randn(2, 8, dtype=torch.float64)
    assert fingerprint(functools.partial(cfg, cond={"c_crossattn": [cond]})) == fingerprint(cfg)  # conditioning
    assert fingerprint(functools.partial(cfg, cond_scale=3.0, cond=cond)) == fingerprint(at3)
    assert fingerprint(functools.partial(cfg, cond=object())) is None
    assert fingerprint(functools.partial(cfg)) == fingerprint(cfg)
    s = LearnedSolver.from_sampler("dpmpp_2m", samplers.get_sigmas("karras", 4, sigma_min=0.002, sigma_max=80.0))
    s.model = {"fingerprint": fingerprint(at3), "name": "net at cfg 3"}
    x = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    samplers.sample("learned_multistep", at3, x, s.sigmas, solver=s, disable=True)
    with pytest.raises(OtherModelError, match="not to this model"):
        samplers.sample("learned_multistep", at7, x, s.sigmas, solver=s, disable=True)
    with pytest.raises(OtherModelError, match="no fingerprint to compare"):
        samplers.sample("learned_multistep", functools.partial(at3, cond=object()), x, s.sigmas, solver=s)


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


# ------------------------------------------------------------------- 6: --out under a file says it is a file


@pytest.mark.parametrize("under", ["afile/sub", "afile/sub/deeper"])
def test_out_under_a_file_is_refused_naming_the_file(tmp_path, capsys, under):
    """It said "the folder above --out (…/afile) does not exist": it exists, as a file."""
    from samplers.cli import main

    (tmp_path / "afile").write_text("")
    out = tmp_path / under
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--calibration", "8", "--heldout", "2",
                 "--iters", "1", "--pool", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{str(tmp_path / 'afile')!r} is a file, not a folder" in err and "does not exist" not in err

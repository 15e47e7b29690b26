"""A fitted solver's inputs from Python, checked before any model call as its file's are: a solver object made or
edited in code, ``allow_other_model`` without a solver, ``fit``'s ``model`` record and ``reference``; σ nodes outside
a discrete model's table refused in the pipeline and ``samplers.sample`` as in the diffusers shim; FluxPipeline's
step-count sigmas with a fitted solver."""
import math

import numpy as np
import pytest
import torch

import samplers
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.fitted.fitting import FitConfig, fit
from samplers.fitted.identity import fingerprint
from samplers.fitted.solver import LearnedSolver
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=3, seed=2)
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
FLOW = RectifiedFlow(shift=3.0, multiplier=1000.0)
SIG = [14.6, 5.0, 1.5, 0.4, 0.0]


from test_sde_solvers import Counting  # noqa: E402 (a denoiser that counts its calls)


def _euler(sigmas=SIG) -> LearnedSolver:
    return LearnedSolver.from_sampler("euler", sigmas)


# ---------------------------------------------------------------- a solver object is checked as its file is


@pytest.mark.parametrize("edit, match", [
    (lambda s: setattr(s, "eps_weights", [[], [0.1]]), "eps_weights must have 4 rows"),
    (lambda s: setattr(s, "denoised_weights", [[], ["1"], [0, 0], [0, 0, 0]]), "must be a list of numbers"),
    (lambda s: setattr(s, "eps_weights", [[], [math.nan], [0, 0], [0, 0, 0]]), "non-finite"),
    (lambda s: setattr(s, "model_sigmas", [14.6]), "model_sigmas must hold 4 positive values"),
    (lambda s: setattr(s, "model_sigmas", [14.6, -1.0, 1.5, 0.4]), "model_sigmas must hold 4 positive values"),
    (lambda s: setattr(s, "model", {"prediciton": "eps"}), "'prediciton' is not one of them"),
])
def test_a_solver_object_with_bad_fields_is_refused_before_any_model_call(edit, match):
    solver = _euler()
    edit(solver)
    model = Counting(GM.denoiser)
    with pytest.raises(samplers.InvalidInput, match=match):
        samplers.sample("learned_multistep", model, GM.noise(2, seed=0) * 14.6, SIG, solver=solver, disable=True)
    assert model.calls == 0


def test_allow_other_model_without_a_solver_is_refused_not_ignored():
    model = Counting(GM.denoiser)
    with pytest.raises(samplers.InvalidOption, match="allow_other_model=True without solver= does nothing"):
        samplers.sample("learned_multistep", model, GM.noise(2, seed=0) * 14.6, SIG, allow_other_model=True)
    assert model.calls == 0
    # without it, no solver is Euler (the documented default), as before
    x = GM.noise(2, seed=0) * 14.6
    torch.testing.assert_close(samplers.sample("learned_multistep", GM.denoiser, x, SIG, disable=True),
                               samplers.sample("euler", GM.denoiser, x, SIG, disable=True))


# ---------------------------------------------------------------- fit(): model record and reference, up front

SIGMA_MIN, SIGMA_MAX = 0.01, 10.0
CAL = GM.noise(16, seed=4)
QUICK = FitConfig(2, iters=0, pool=0, starts=1)


@pytest.mark.parametrize("model, error, match", [
    ({"prediciton": "eps"}, samplers.InvalidInput, "'prediciton' is not one of them"),
    ({"prediction": "epsilon"}, samplers.InvalidInput, "model.prediction must be one of"),
    ("gm-ve", samplers.InvalidInput, "model must be a dict"),
    ({"fingerprint": "mine"}, samplers.InvalidInput, "model.fingerprint must be the hex digest"),
])
def test_a_bad_model_record_is_refused_before_any_model_call(model, error, match):
    counted = Counting(GM.denoiser)
    with pytest.raises(error, match=match):
        fit(counted, QUICK, CAL, SIGMA_MIN, SIGMA_MAX, model=model)
    assert counted.calls == 0


def test_what_the_model_record_leaves_out_the_denoiser_supplies():
    eps = samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP)
    solver = fit(eps, QUICK, CAL, 0.03, 14.6, model={"name": "mine"})
    assert solver.model == {"name": "mine", "fingerprint": fingerprint(eps), "prediction": "eps"}
    # and it is then refused on another model, as a solver fitted with model=None is
    other = samplers.to_denoiser(GaussianMixture.default(shape=(2, 4, 4), components=3, seed=5).as_model("eps", VP),
                                 "eps", VP)
    with pytest.raises(samplers.InvalidInput, match="was fitted to mine"):
        samplers.sample("learned_multistep", other, CAL[:2] * 14.6, solver.sigmas, solver=solver, disable=True)
    # what the caller says stands: None is a model without a fingerprint
    assert fit(eps, QUICK, CAL, 0.03, 14.6, model={"fingerprint": None}).model == {"fingerprint": None,
                                                                                   "prediction": "eps"}


@pytest.mark.parametrize("reference, match", [
    (torch.full((16, 2, 4, 4), math.nan), "reference holds NaN or infinite values"),
    (torch.zeros(16, 2, 4, 4).tolist(), "reference must be a floating-point tensor"),
    (torch.zeros(8, 2, 4, 4), r"reference must be shaped like the calibration batch \(16, 2, 4, 4\)"),
])
def test_a_bad_reference_is_refused_before_any_model_call(reference, match):
    counted = Counting(GM.denoiser)
    with pytest.raises(samplers.InvalidInput, match=match):
        fit(counted, QUICK, CAL, SIGMA_MIN, SIGMA_MAX, reference=reference)
    assert counted.calls == 0


# ------------------------------------------------- nodes outside a discrete model's σ table: refused everywhere

WIDE = [80.0, 5.0, 1.5, 0.002, 0.0]  # a VE model's nodes: above and below SD's table [0.0292, 14.6]


def test_samplers_sample_refuses_nodes_a_discrete_model_would_clamp():
    eps = Counting(samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP))
    with pytest.raises(samplers.InvalidOption, match=r"this fitted solver runs on σ nodes 80, 0.002 outside this "
                                                     r"model's σ range \[0.029167\d, 14.6146\]"):
        samplers.sample("learned_multistep", eps, GM.noise(2, seed=0) * 80.0, WIDE, solver=_euler(WIDE),
                        allow_other_model=True, disable=True)
    assert eps.calls == 0
    # within 0.1 % of the table's ends is those ends; a flow model has no table: the same nodes run there
    inside = [14.6146 * 1.0005, 5.0, 1.5, 0.0291675 * 0.9995, 0.0]
    samplers.sample("learned_multistep", eps, GM.noise(2, seed=0) * inside[0], inside, solver=_euler(inside),
                    disable=True)
    flow = samplers.to_denoiser(GM.as_model("flow", FLOW), "flow", FLOW)
    samplers.sample("learned_multistep", flow, GM.noise(2, seed=0) * 80.0, WIDE, solver=_euler(WIDE), disable=True)


@pytest.fixture(scope="module")
def eps_pipe():
    from models.pipeline import Pipeline

    return Pipeline.load(model="eps")


def test_the_pipeline_refuses_nodes_outside_its_table_before_any_prompt_is_encoded(eps_pipe, tmp_path, monkeypatch):
    solver = _euler(WIDE)
    encoded = []
    monkeypatch.setattr(type(eps_pipe), "encode_prompts", lambda self, *a, **k: encoded.append(a))
    for model in ({"fingerprint": "ab" * 32, "name": "a VE model", "prediction": "x0"}, {}):  # another's, none
        solver.model = model
        path = solver.save(tmp_path / "wide.json")
        with pytest.raises(samplers.InvalidOption, match=r"'fitted:.*wide.json' runs on σ nodes 80, 0.002 outside "
                                                         r"this model's σ range \[0.029167\d, 14.6146\]"):
            eps_pipe.txt2img("a red circle", sampler=f"fitted:{path}", allow_other_model=True, seed=0)
    assert not encoded


def test_samplers_generate_refuses_them_and_writes_nothing(tmp_path, capsys):
    from samplers.cli import main

    path = _euler(WIDE).save(tmp_path / "wide.json")
    assert main(["generate", "a red circle", "--sampler", f"fitted:{path}", "--seed", "0",
                 "--out", str(tmp_path / "x.png")]) != 0
    assert "outside this model's σ range" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ FluxPipeline's sigmas are a step count

FLUX = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def test_fluxpipelines_linspace_sigmas_are_a_step_count_for_a_fitted_solver(tmp_path):
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    nodes = [80.0, 5.0, 1.5, 0.4, 0.0]
    path = _euler(nodes).save(tmp_path / "flow.json")
    shim = SamplerScheduler.from_config(FLUX, sampler=f"fitted:{path}")
    shim.set_timesteps(4, sigmas=np.linspace(1.0, 1 / 4, 4))  # what FluxPipeline passes, whatever the scheduler
    reference = SamplerScheduler.from_config(FLUX, sampler=f"fitted:{path}")
    reference.set_timesteps(4)  # the solver's own nodes, as flow times t = σ / (1 + σ)
    assert [float(t) for t in reference.sigmas] == pytest.approx([s / (1 + s) for s in nodes])
    assert torch.equal(shim.sigmas, reference.sigmas) and torch.equal(shim.timesteps, reference.timesteps)
    with pytest.raises(samplers.InvalidInput, match="runs exactly 4 steps"):  # another count is still refused
        shim.set_timesteps(5, sigmas=np.linspace(1.0, 1 / 5, 5))
    with pytest.raises(samplers.InvalidOption, match="fixes its own sigmas"):  # and sigmas of another shape
        shim.set_timesteps(4, sigmas=[1.0, 0.6, 0.3, 0.1])


# ------------------------------------------------------------------ from_sampler's σ, and how a solver is shown


@pytest.mark.parametrize("bad", [[], [14.6], [14.6, math.nan, 0.0], [14.6, 1.0, 0.5], "abc", torch.zeros(2, 2)])
def test_from_sampler_names_sigmas_it_cannot_read(bad):
    with pytest.raises(samplers.InvalidInput, match="express needs σ values from a positive σ"):
        LearnedSolver.from_sampler("euler", bad)


def test_a_solver_is_shown_by_its_steps_range_and_file_not_its_weights(tmp_path):
    solver = LearnedSolver.from_sampler("dpmpp_2m", samplers.get_sigmas("karras", 40, sigma_min=0.03, sigma_max=14.6))
    solver.model = {"name": "mine"}
    path = solver.save(tmp_path / "s.json")
    shown = repr(LearnedSolver.load(path))
    assert shown == f"LearnedSolver(40 steps on σ 14.6 … 0.03, fitted:{path}, from dpmpp_2m, fitted to 'mine')"
    with pytest.raises(samplers.InvalidOption, match=r"but solver=LearnedSolver\(4 steps on σ 14.6 … 0.4, from "
                                                     r"euler\) was passed") as err:
        samplers.sample(f"fitted:{path}", GM.denoiser, GM.noise(1, seed=0) * 14.6, LearnedSolver.load(path).sigmas,
                        solver=_euler())
    assert "eps_weights" not in str(err.value) and len(str(err.value)) < 600  # nor its 1560 weights


def test_a_graphed_run_checks_a_fitted_solver_as_samplers_sample_does():
    # samplers.core.graph.capture resolves a run as samplers.sample does: the solver's own checks (its nodes, its
    # timestep table) come first there too, before the run is prepared or the model called
    from samplers.core.graph import capture

    eps = Counting(samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP))
    other = [14.6, 4.0, 1.5, 0.4, 0.0]
    with pytest.raises(samplers.InvalidInput, match="its own"):
        capture("learned_multistep", eps, GM.noise(2, seed=0) * 14.6, other, solver=_euler(), fallback="eager")
    WIDE = [80.0, 5.0, 1.5, 0.002, 0.0]
    with pytest.raises(samplers.InvalidOption, match=r"this fitted solver runs on σ nodes 80, 0.002 outside"):
        capture("learned_multistep", eps, GM.noise(2, seed=0) * 80.0, WIDE, solver=_euler(WIDE),
                allow_other_model=True, fallback="eager")
    assert eps.calls == 0
    run = capture("learned_multistep", eps, GM.noise(2, seed=0) * 14.6, SIG, solver=_euler(), fallback="eager")
    torch.testing.assert_close(run(GM.noise(2, seed=0) * 14.6),
                               samplers.sample("euler", eps, GM.noise(2, seed=0) * 14.6, SIG, disable=True))

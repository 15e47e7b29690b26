"""A fitted solver's file and name are checked once, on load, and the solver against the model before any model
call: derived fields that disagree with the σ nodes, a model record of the wrong kind or missing, JSON Python
cannot read, a blank name; a start at σ = inf on a model that cannot be evaluated there (even when another model
is allowed); a recorded prediction type other than the model's."""
import json
import math

import pytest
import torch

import samplers
from samplers.core import wrapped
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.fitted import identity
from samplers.fitted.identity import fingerprint
from samplers.fitted.solver import LearnedSolver, OtherModelError, register_solver
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=3, seed=2)
SIG = [14.6, 5.0, 1.5, 0.4, 0.0]
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
FLOW = RectifiedFlow(shift=3.0, multiplier=1000.0)
EPS_DENOISER = samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP)
FLOW_DENOISER = samplers.to_denoiser(GM.as_model("flow", FLOW), "flow", FLOW)


def _save(tmp_path, sigmas=SIG, model=None, name="s.json"):
    solver = LearnedSolver.from_sampler("euler", sigmas)
    solver.model = model if model is not None else {"fingerprint": "ab" * 32, "name": "x", "prediction": "eps"}
    return solver.save(tmp_path / name)


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("change, match", [
    ({"nfe": 99}, r"nfe is 99, but its sigmas \(5 values from 14.6 to 0\) make it 4"),
    ({"nfe": "four"}, "nfe is 'four'"),
    ({"nfe": 4.0}, "nfe is 4.0"),
    ({"sigma_max": -5}, "sigma_max is -5, but .* make it 14.6"),
    ({"sigma_max": math.nan}, "sigma_max is nan"),
    ({"sigma_min": "x"}, "sigma_min is 'x'"),
    ({"sigma_min": 1.5}, "sigma_min is 1.5, but .* make it 0.4"),
    ({"model": {"fingerprint": 123, "name": "x", "prediction": "eps"}}, "model.fingerprint must be the hex digest"),
    ({"model": {"fingerprint": "AB" * 32}}, "model.fingerprint must be the hex digest"),
    ({"model": {"fingerprint": "abc"}}, "model.fingerprint must be the hex digest"),
    ({"model": {"name": 5}}, "model.name must be a string or null"),
    ({"model": {"prediction": "banana"}}, r"model.prediction must be one of \('eps'"),
    ({"model": {"prediction": "epsilon"}}, "model.prediction must be one of"),  # diffusers' name: not coerced
])
def test_a_file_whose_fields_disagree_with_its_sigmas_or_its_format_is_refused_naming_it(tmp_path, change, match):
    data = json.loads(_save(tmp_path).read_text())
    path = _write(tmp_path, json.dumps({**data, **change}))
    with pytest.raises(samplers.InvalidInput, match=f"bad.json: {match}") as err:
        LearnedSolver.load(path)
    assert "re-create it with `samplers fit`" in str(err.value)


def test_a_current_file_must_record_its_model_and_derived_fields(tmp_path):
    data = json.loads(_save(tmp_path).read_text())
    for key in ("model", "nfe", "sigma_max", "sigma_min"):
        with pytest.raises(samplers.InvalidInput, match=f"records {key}, and this one does not"):
            LearnedSolver.load(_write(tmp_path, {k: v for k, v in data.items() if k != key}))
    # an empty record is what save writes for a solver not fitted to a model: it loads, and checks nothing
    assert LearnedSolver.load(_write(tmp_path, {**data, "model": {}})).model == {}
    # the first format recorded neither: such a file still loads, with no check
    old = {k: v for k, v in data.items() if k not in ("model", "nfe", "sigma_max", "sigma_min")}
    assert LearnedSolver.load(_write(tmp_path, {**old, "format": "samplers.learned_solver/1"})).model == {}
    # an inf first σ is written and read as Infinity, and sigma_max agrees with it
    inf = _save(tmp_path, [math.inf, 5.0, 1.0, 0.0], name="inf.json")
    assert json.loads(inf.read_text())["sigma_max"] == math.inf and LearnedSolver.load(inf).sigmas[0] == math.inf


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper than Python reads"),
    ('{"nfe": 1' + "0" * 5000 + "}", "holds a value Python will not read"),
])
def test_json_python_will_not_read_is_refused_naming_the_file(tmp_path, text, match):
    with pytest.raises(samplers.InvalidInput, match=f"bad.json is not a valid learned-solver file: .*{match}"):
        LearnedSolver.load(_write(tmp_path, text))


def test_a_blank_name_or_white_space_around_it_is_refused(tmp_path):
    path = _save(tmp_path)
    for name in ("fitted:", "fitted:   "):
        with pytest.raises(samplers.UnknownNameError, match="names no solver: give the path of a solver file"):
            samplers.get(name)
    for name in (f"fitted: {path}", f"fitted:{path}\n", f"fitted:{path} "):
        with pytest.raises(samplers.UnknownNameError, match=f"white space around .*remove it: fitted:{path}"):
            samplers.get(name)
    with pytest.raises(samplers.InvalidInput, match="no fitted solver file given"):
        LearnedSolver.load("")
    with pytest.raises(samplers.InvalidInput, match="no white space around it"):
        register_solver(" eps8", path)
    assert samplers.info(f"fitted:{path}").name == "learned_multistep"


def test_every_fingerprint_has_the_form_a_file_records(tmp_path):
    assert identity.is_fingerprint(fingerprint(GM.denoiser)) and identity.is_fingerprint(fingerprint(EPS_DENOISER))
    assert "|eps|VPDiscrete|" in fingerprint(EPS_DENOISER)  # the analytic problems' qualified form
    # an object that names itself otherwise gets the hash of its name: the same name, the same fingerprint
    named = type("Named", (), {"samplers_fingerprint": "my model v1", "__call__": lambda self, x, s: x})()
    assert identity.is_fingerprint(fingerprint(named)) and fingerprint(named) != "my model v1"
    assert fingerprint(named) == fingerprint(type(named)())
    # and what fit records loads
    path = _save(tmp_path, model={"fingerprint": fingerprint(EPS_DENOISER), "name": "gm", "prediction": "eps"})
    assert LearnedSolver.load(path).model["fingerprint"] == fingerprint(EPS_DENOISER)
    assert identity.prediction(EPS_DENOISER) == "eps" and wrapped.supports_infinite_sigma(EPS_DENOISER) is False
    assert identity.prediction(GM.denoiser) is None and wrapped.supports_infinite_sigma(FLOW_DENOISER) is True


def test_a_solver_from_sigma_inf_is_refused_on_a_model_that_cannot_be_evaluated_there_even_when_allowed(tmp_path):
    sig = samplers.get_sigmas("flow", 4, native=FLOW)
    assert math.isinf(float(sig[0]))
    path = _save(tmp_path, [float(v) for v in sig],
                 {"fingerprint": fingerprint(FLOW_DENOISER), "name": "gm flow", "prediction": "flow"})
    solver = LearnedSolver.load(path)
    for allow in (False, True):
        with pytest.raises(OtherModelError, match=f"fitted:{path} starts at σ = inf .*fitted to gm flow "
                                                  r"\(prediction 'flow'\).*this model \(prediction 'eps'\) cannot be "
                                                  "evaluated at σ = inf.*The solver file is the cause"):
            solver.check_model(EPS_DENOISER, allow)
    # the shim's case: what it knows of the model, given
    with pytest.raises(OtherModelError, match="starts at σ = inf"):
        solver.check_model(prediction="eps", supports_infinite_sigma=False, allow_other_model=True)
    solver.check_model(FLOW_DENOISER)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(samplers.sample(f"fitted:{path}", FLOW_DENOISER, x, sig, disable=True)).all()
    # samplers.sample names the file too, not the schedule (set_first cannot move a fitted solver's nodes)
    for allow in (False, True):
        with pytest.raises(OtherModelError, match="The solver file is the cause"):
            samplers.sample(f"fitted:{path}", EPS_DENOISER, x, sig, disable=True, allow_other_model=allow)


def test_the_recorded_prediction_is_compared_where_the_model_says(tmp_path):
    path = _save(tmp_path, model={"fingerprint": fingerprint(EPS_DENOISER), "name": "gm eps", "prediction": "eps"})
    x = GM.noise(2, seed=1) * SIG[0]
    samplers.sample(f"fitted:{path}", EPS_DENOISER, x, SIG, disable=True)
    with pytest.raises(OtherModelError, match=r"fitted to gm eps \(prediction 'eps'\), and this model's prediction "
                                              "is 'flow'.*allow_other_model=True"):
        samplers.sample(f"fitted:{path}", FLOW_DENOISER, x, SIG)
    # with it allowed, the nodes are noise levels of the canonical space, the same on a flow model
    out = samplers.sample(f"fitted:{path}", FLOW_DENOISER, x, SIG, allow_other_model=True, disable=True)
    assert torch.isfinite(out).all()
    # a model whose fingerprint is not known (the diffusers shim): the prediction alone
    solver = LearnedSolver.load(path)
    with pytest.raises(OtherModelError, match="prediction is 'flow'"):
        solver.check_model(prediction="flow", supports_infinite_sigma=True)
    solver.check_model(prediction="eps", supports_infinite_sigma=False)
    solver.check_model(prediction="flow", supports_infinite_sigma=True, allow_other_model=True)
    with pytest.raises(samplers.InvalidType, match="allow_other_model must be True or False"):
        solver.check_model(prediction="eps", allow_other_model="yes")


def test_every_committed_solver_file_loads_and_is_its_problems():
    """The solver files the docs' tables were made with still load and still match the problem they were fitted to
    (a model's identity string changing, as a new schedule field's repr would, refuses them all)."""
    from pathlib import Path

    from benchmarks import common

    root = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    files = sorted(root.glob("**/*nfe*.json"))
    assert len(files) >= 40
    problems = {}
    for path in files:
        solver = LearnedSolver.load(path)
        name = solver.meta.get("problem") or (solver.model or {}).get("name")
        if not (isinstance(name, str) and name.startswith("gm-")):
            continue
        if name not in problems:
            problems[name] = common.get_problems([name])[0][name]
        solver.check_model(problems[name].denoiser)


@pytest.mark.parametrize("where, match", [
    ("eps_weights", "eps_weights rows holds an integer of 401 digits, beyond any float"),
    ("sigmas", "sigmas holds an integer of 401 digits"),
    ("model_sigmas", "model_sigmas holds an integer of 401 digits"),
])
def test_an_integer_beyond_any_float_is_refused_naming_the_file(tmp_path, where, match):
    """A 401-digit integer (JSON reads it exactly) raised a bare OverflowError on load, or — in model_sigmas — while
    sampling; now the file's error."""
    data = json.loads(_save(tmp_path).read_text())
    huge = 10 ** 400
    if where == "eps_weights":
        data["eps_weights"][2][0] = huge
    elif where == "sigmas":
        data["sigmas"][0] = data["sigma_max"] = huge
    else:
        data["model_sigmas"] = [huge, *SIG[1:-1]]
    with pytest.raises(samplers.InvalidInput, match=f"bad.json: a learned solver's {match}"):
        LearnedSolver.load(_write(tmp_path, data))


@pytest.mark.parametrize("field", ["sigmas", "eps_weights", "denoised_weights"])
def test_a_file_without_its_nodes_or_weights_is_refused_as_missing_them(tmp_path, field):
    """It was refused as "unexpected fields (... missing 1 required positional argument ...)"."""
    data = json.loads(_save(tmp_path).read_text())
    del data[field]
    with pytest.raises(samplers.InvalidInput, match=f"bad.json: no {field}: a learned-solver file holds"):
        LearnedSolver.load(_write(tmp_path, data))


def test_learned_multistep_with_a_solver_option_is_checked_against_the_planned_schedule_before_encoding(tmp_path):
    """sampler="learned_multistep", solver=PATH on another schedule than the solver's nodes was refused inside the
    loop, after the prompts were encoded; now when the run is planned, which runs it on its own nodes as fitted:PATH
    does (a schedule or another step count refused as there)."""
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(None, model="eps")
    path = _save(tmp_path, sigmas=[14.614642, 4.0, 1.0, 0.3, 0.0])
    with pytest.raises(samplers.InvalidOption, match="runs on its own fitted σ nodes; leave schedule out"):
        spec.plan_run("learned_multistep", "karras", 4, {"solver": str(path)})
    with pytest.raises(samplers.InvalidInput, match="runs exactly 4 steps on the σ nodes it was fitted on"):
        spec.plan_run("learned_multistep", None, 8, {"solver": str(path)})
    _, sigmas, _, _ = spec.plan_run("learned_multistep", None, None, {"solver": str(path)})
    assert sigmas.tolist() == [14.614642, 4.0, 1.0, 0.3, 0.0]
    spec.check_request("learned_multistep", None, None, {"solver": str(path)})

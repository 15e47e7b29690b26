"""`samplers fit` and fitted solvers at the seams an audit found open: a model's identity, the Problem fields a fit
cannot honour, the solver files a rerun keeps, the NFE range, a model returning NaN, and what the printed report
says."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli_last_wins as main  # a base command line's options overridden by repeating them
from samplers.fitted.solver import LearnedSolver

from test_fit_cli_seams import QUICK, argv  # the CLI seams' quick fit and its command line

PROBLEM = '''
import os
import torch
from benchmarks.common import get_problem, Problem

_base = get_problem("gm-ve")


def _like_gm_ve(denoiser, **kw):
    return Problem(name="mine", denoiser=denoiser, native=_base.native, shape=_base.shape,
                   sigma_min=_base.sigma_min, sigma_max=_base.sigma_max, dtype=_base.dtype, description="a test model",
                   **kw)


def _named():
    def denoiser(x, sigma, **kw):
        return _base.denoiser(x, sigma, **kw)
    denoiser.samplers_fingerprint = "mine v1"
    return denoiser


def conditional():
    def shifted(n, seed):
        def d(x, sigma, **kw):
            return _base.denoiser(x, sigma, **kw) + 5.0
        d.samplers_fingerprint = "mine v1"
        return d
    return _like_gm_ve(_named(), denoiser_for=shifted)


def own_native():
    return _like_gm_ve(_named(), native_model_for=lambda n, seed: None)


def own_reference():
    return _like_gm_ve(_named(), reference_fn=lambda x, s: x * 0)


def nan():
    def denoiser(x, sigma, **kw):
        return torch.full_like(x, float("nan"))
    denoiser.samplers_fingerprint = "nan model v1"
    return _like_gm_ve(denoiser)
'''


@pytest.fixture
def problem_module(tmp_path, monkeypatch):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "fit_audit_problem.py").write_text(PROBLEM)
    monkeypatch.syspath_prepend(str(folder))
    return "fit_audit_problem"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A finished two-iteration fit of gm-ve at 3 NFE."""
    out = tmp_path_factory.mktemp("audit") / "fit"
    assert main(argv(out)) == 0
    return out


@pytest.fixture
def out(fitted, tmp_path):
    copy = tmp_path / "fit"
    shutil.copytree(fitted, copy)
    return copy


# ---------------------------------------------------------------------------------------- 1: a module's identity


class Scaled(torch.nn.Module):
    """A model set by a plain attribute: no parameters, no buffers."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, sigma):
        return x * self.scale


class Weighted(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x, sigma):
        return x * self.scale


def test_a_module_without_parameters_or_buffers_has_no_fingerprint():
    from samplers.fitted.identity import fingerprint

    # two models a class name cannot tell apart: no identity (as a plain function), never the same one
    assert fingerprint(Scaled(1.0)) is None and fingerprint(Scaled(0.5)) is None
    assert fingerprint(Weighted(1.0)) != fingerprint(Weighted(0.5)) and fingerprint(Weighted(1.0)) is not None

    class Wrapper(torch.nn.Module):  # a parameter-free wrapper is seen through to what it wraps
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    def named(x, sigma):
        return x

    named.samplers_fingerprint = "named v1"
    assert fingerprint(Wrapper(named)) == fingerprint(named) is not None
    assert fingerprint(Wrapper(Scaled(1.0))) is None


# ------------------------------------------------------------------ 2, 13: what a module:function Problem gives


@pytest.mark.parametrize("function, words", [
    ("conditional", ["sets denoiser_for", "a denoiser per batch", "dataclasses.replace(problem, denoiser_for=None)"]),
    ("own_native", ["sets native_model_for", "a native model per batch", "native_model_for=None"]),
])
def test_a_problem_whose_fields_the_fit_would_ignore_is_refused_before_any_work(tmp_path, capsys, problem_module,
                                                                               function, words):
    out = tmp_path / "fit"
    assert main(argv(out, model=f"{problem_module}:{function}")) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "'mine'" in err, err
    assert not out.exists()


def test_a_problem_with_its_own_reference_fn_is_fitted(tmp_path, problem_module):
    """reference_fn gives the same denoiser's exact endpoints, which the fit solves itself: no other model (as
    docs/fitted.md's slow gm-ve, dataclasses.replace(get_problem("gm-ve"), denoiser=slow), which carries one)."""
    assert main(argv(tmp_path / "fit", model=f"{problem_module}:own_reference")) == 0


def test_a_mixture_fit_records_the_prediction_its_denoiser_knows():
    from app.fit import entry_point_target

    assert entry_point_target("gm-vp-eps").prediction == "eps"
    assert entry_point_target("gm-flow").prediction == "flow"
    assert entry_point_target("gm-ve").prediction is None  # the exact VE denoiser says none


# ------------------------------------------------------------------------------------------------- 4: NFE >= 2


def test_fewer_than_two_model_calls_are_refused_up_front(tmp_path, capsys):
    from samplers import InvalidOption
    from samplers.fitted.fitting import FitConfig

    out = tmp_path / "fit"
    assert main(argv(out, nfe="1")) == 2
    err = capsys.readouterr().err
    assert "--nfe values must be between 2 and 100, got [1]" in err and "at least 2" in err, err
    assert not out.exists()
    with pytest.raises(InvalidOption, match="FitConfig.nfe must be at least 2 model calls, got 1"):
        FitConfig(1).validate()


# ------------------------------------------------------------------------------- 3: the solver file a rerun keeps


def test_a_solver_file_edited_after_its_fit_is_refused_on_a_rerun(out, capsys):
    report = json.loads((out / "report.json").read_text())
    path = out / "nfe3.json"
    assert report["rows"]["3"]["solver_sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    solver = LearnedSolver.load(path)
    solver.eps_weights[1][0] += 0.25  # still a valid solver of this model and NFE: another one
    solver.save(path)
    assert main(argv(out)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "edited or replaced" in err and "--rescore" in err and "--restart" in err, err
    assert main(argv(out, "--rescore")) == 0  # scored and reported: its row is of this file now
    capsys.readouterr()
    assert main(argv(out)) == 0 and "already fitted" in capsys.readouterr().out


def test_a_report_of_before_the_digest_still_resumes(out, capsys):
    report = json.loads((out / "report.json").read_text())
    del report["rows"]["3"]["solver_sha256"]
    (out / "report.json").write_text(json.dumps(report))
    assert main(argv(out)) == 0 and "already fitted" in capsys.readouterr().out


# --------------------------------------------------------------------------- 7: a model returning NaN


def test_a_model_returning_nan_is_named_not_a_solver_assertion(tmp_path, capsys, problem_module):
    from samplers.core.errors import NonFiniteError
    from samplers.fitted.fitting import reference_endpoints

    # the reference solve refuses the NaN itself, naming the σ (it was torchdiffeq's "underflow in dt", mapped here)
    with pytest.raises(NonFiniteError, match="the model returned NaN/Inf at σ = 80 "):
        reference_endpoints(lambda x, s: torch.full_like(x, float("nan")), torch.randn(2, 4, dtype=torch.float64),
                            80.0)
    assert main(argv(tmp_path / "fit", model=f"{problem_module}:nan")) != 0
    err = capsys.readouterr().err
    assert "NonFiniteError" in err and "the model returned NaN/Inf at σ = " in err, err
    assert "AssertionError" not in err


# ------------------------------------------------------------------- 5: the diffusers shim and a fitted solver

SD_EULER = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon"}


def foreign_solver(folder: Path, sigmas: list[float]) -> Path:
    """An euler solver on ``sigmas`` recorded as fitted to another eps model, saved in ``folder``."""
    solver = LearnedSolver.from_sampler("euler", sigmas)
    solver.model = {"fingerprint": "ab" * 32, "name": "x", "prediction": "eps"}
    return solver.save(folder / "s.json")


def test_the_shim_refuses_a_schedule_with_a_fitted_solver(tmp_path):
    from samplers import InvalidOption
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    path, config = foreign_solver(tmp_path, [14.6, 5.0, 1.5, 0.4, 0.0]), SD_EULER
    with pytest.raises(InvalidOption, match="runs on its own fitted σ nodes, but schedule='karras' is set.*pass "
                                            "schedule=None"):
        SamplerScheduler.from_config(config, sampler=f"fitted:{path}", schedule="karras",
                                     sampler_options={"allow_other_model": True})
    SamplerScheduler.from_config(config, sampler=f"fitted:{path}", sampler_options={"allow_other_model": True})
    # a shim built with karras carries it in its config: the message names the fix, schedule=None, which runs
    karras = SamplerScheduler.from_config(config, sampler="euler", schedule="karras")
    with pytest.raises(InvalidOption, match="carried in the config of a SamplerScheduler.*pass schedule=None"):
        SamplerScheduler.from_config(karras, sampler=f"fitted:{path}", sampler_options={"allow_other_model": True})
    SamplerScheduler.from_config(karras, sampler=f"fitted:{path}", schedule=None,
                                 sampler_options={"allow_other_model": True})


# ------------------------------------------------------------------------------ 11, 10: what the printed lines say


def test_a_rejected_fit_says_it_handed_back_its_pair(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(argv(out, "--iters", "2", "--lr", "1e9")) == 0  # steps that throw the fit far off its pair
    printed = capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["rows"]["3"]["kept"] == "start"
    assert "held-out RMSE fitted" in printed and "(the fit was rejected on the validation starts: the solver is the " \
                                                "starting pair itself)" in printed, printed


def test_options_larger_than_what_there_is_say_what_ran(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(argv(out, "--iters", "0", "--starts", "100000", "--screen", "50", "--batch", "1000")) == 0
    printed = capsys.readouterr().out
    pairs = LearnedSolver.load(out / "nfe3.json").meta["fitted_from_pairs"]
    assert (f"NFE 3: ran with less than asked — --starts 100000: optimised from {pairs} pair(s)" in printed
            and "--screen 50: every pair was ranked on all 5 training starts" in printed
            and "--batch 1000: each step trained on all 5 training starts" in printed), printed
    capsys.readouterr()
    assert main(argv(tmp_path / "asked")) == 0 and "ran with less than asked" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------- 8: sizes refused up front


def test_start_counts_beyond_the_limit_or_the_memory_are_refused_before_any_solve(tmp_path, capsys, monkeypatch):
    from samplers.core import validate

    out = tmp_path / "fit"
    for extra, words in ((["--calibration", "2000000"], "--calibration asks 2000000 starts, more than the limit of "
                                                         "1,000,000"),
                         (["--pool", "100000", "--calibration", "16"], "--calibration × (1 + --pool) asks 1600016"),
                         (["--check", "100000", "--calibration", "16"], "--calibration × --check asks 1600000"),
                         (["--heldout", "1000001"], "--heldout asks 1000001")):
        assert main(argv(out, *extra)) == 2
        err = capsys.readouterr().err
        assert words in err and "ask for fewer" in err, err
    monkeypatch.setattr(validate, "available_memory", lambda device: 1 << 10)
    assert main(argv(out)) == 2
    err = capsys.readouterr().err
    assert "--calibration 8 with --pool 0, --check 4 and --heldout 2 (40 starts" in err and "GiB free" in err, err
    assert not out.exists()


# ----------------------------------------------------------------------------------- 15: parsing and wording


def test_a_screen_of_non_ascii_digits_is_refused_by_the_rule(tmp_path, capsys):
    assert main(argv(tmp_path / "fit", "--screen", "²")) == 2
    assert "--screen must be 'all' or a number of training starts >= 1, got '²'" in capsys.readouterr().err


def test_another_fingerprint_is_not_said_to_be_a_guidance_scale():
    from samplers.fitted.solver import OtherModelError

    solver = LearnedSolver.from_sampler("euler", [14.6, 5.0, 1.5, 0.4, 0.0])
    solver.model = {"fingerprint": "ab" * 32, "name": "x", "prediction": "eps"}
    with pytest.raises(OtherModelError, match="a fingerprint covers the weights and the guidance scale"):
        solver.check_model(fingerprint="cd" * 32)


# ------------------------------------------------------------------------------ 9: a solver's nodes in float32


def test_a_float32_tensor_of_the_nodes_is_the_nodes():
    from samplers import InvalidInput

    solver = LearnedSolver.from_sampler("euler", [80.0, 5.3989520437828595, 1.01195743995481, 0.002002057690047021,
                                                  0.0])
    solver.check_nodes(torch.tensor(solver.sigmas, dtype=torch.float32))
    solver.check_nodes(torch.tensor(solver.sigmas, dtype=torch.float32).double())  # converted back on its way
    solver.check_nodes(solver.tensor())
    off = torch.tensor(solver.sigmas, dtype=torch.float64) * (1 + 1e-7)
    with pytest.raises(InvalidInput, match=r"got sigmas \[80\.00000800000001, 5\.398952583") as err:
        solver.check_nodes(off)
    assert "rounded to float32" in str(err.value)


# ------------------------------------------------------------------------------------- 6: the default column


def test_a_model_without_a_default_says_so_in_the_printed_line(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(argv(out)) == 0
    printed = capsys.readouterr().out
    why = "a mixture or module:function Problem names no default sampler nor diffusers scheduler"
    assert f" | default: none ({why}) → " in printed, printed
    row = json.loads((out / "report.json").read_text())["rows"]["3"]
    assert row["default_none"] == why and "default" not in row
    assert main(argv(out)) == 0 and f"default: none ({why})" in capsys.readouterr().out  # read back, kept


# ---------------------------------------------------------------- 14: the shim and nodes outside its σ table


def test_the_shim_refuses_fitted_nodes_outside_the_configs_sigma_range_even_for_another_model(tmp_path):
    from samplers import InvalidOption
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    path, config = foreign_solver(tmp_path, [80.0, 5.0, 1.5, 0.002, 0.0]), SD_EULER
    with pytest.raises(InvalidOption, match=r"runs on σ nodes 80, 0.002 outside this config's σ range "
                                            r"\[0.0291675, 14.6146\]"):
        SamplerScheduler.from_config(config, sampler=f"fitted:{path}", sampler_options={"allow_other_model": True})


# ----------------------------------------------------------- 12: what --restart with other options deletes


def test_restart_with_other_options_says_it_deletes_every_listed_solver(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", "--model", "gm-ve", "--nfe", "2", "3", "--out", str(out), *QUICK]) == 0
    capsys.readouterr()
    assert main(argv(out, "--iters", "1", "--restart")) == 0
    printed = capsys.readouterr().out
    assert "deleting the solver of every NFE its report lists, asked or not (nfe2.json, nfe3.json" in printed, printed
    assert not (out / "nfe2.json").exists() and set(json.loads((out / "report.json").read_text())["rows"]) == {"3"}


def test_iters_0_says_the_solver_is_the_starting_pair_not_a_rejected_fit(tmp_path, capsys):
    """With --iters 0 nothing is optimised: the printed line says so, not that a fit was rejected."""
    from samplers.cli import main

    out = tmp_path / "fit"
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--calibration", "16", "--heldout", "4",
                 "--iters", "0", "--pool", "0", "--starts", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "--iters 0: the solver is the starting pair itself" in printed and "rejected" not in printed

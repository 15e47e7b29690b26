"""`samplers fit` at its seams: what it checks before the first expensive solve (the calibration split, the options
--rescore would not use), what it reads back from --out (cached endpoints, the optimisation's saved state,
report.json, solver files: checked, never trusted) and what its report records (the device)."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli_last_wins as main  # a base command line's options overridden by repeating them
from samplers.fitted.solver import LearnedSolver

QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "2", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A finished two-iteration fit of gm-ve at 3 NFE (its report, solver, cached endpoints and saved state)."""
    out = tmp_path_factory.mktemp("seams") / "fit"
    assert main(argv(out)) == 0
    return out


@pytest.fixture
def out(fitted, tmp_path):
    copy = tmp_path / "fit"
    shutil.copytree(fitted, copy)
    return copy


def argv(out: Path, *extra: str, model: str = "gm-ve", nfe: str = "3") -> list[str]:
    return ["fit", "--model", model, "--nfe", nfe, "--out", str(out), *QUICK, *extra]


@pytest.fixture
def no_model(monkeypatch):
    from app import fit as fit_cli

    monkeypatch.setattr(fit_cli, "make_target", lambda args: pytest.fail("the model was built"))


def test_a_calibration_split_without_a_training_or_validation_start_is_refused_before_the_model_is_built(
        tmp_path, capsys, no_model):
    for extra, words in ((["--validation", "0.01"], ["--validation 0.01 of --calibration 8 starts makes 0 validation",
                                                     "--calibration 51 or more", "--validation at least 0.125"]),
                         (["--validation", "0.97"], ["makes 8 validation and 0 training", "at most 0.875"])):
        code = main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(tmp_path / "fit"), *QUICK, *extra])
        err = capsys.readouterr().err
        assert code == 2 and all(w in err for w in words), err
    assert not (tmp_path / "fit").exists()


def test_the_library_fit_splits_by_the_same_rule():
    from samplers.fitted.fitting import FitConfig, fit, validation_starts

    assert validation_starts(48, 1 / 3) == 16 and validation_starts(51, 0.01) == 1
    calls = []

    def model(x, sigma):
        calls.append(1)
        return x * 0

    with pytest.raises(ValueError, match=r"validation 0.01 of a calibration batch of 8 starts makes 0 validation"):
        fit(model, FitConfig(3, validation=0.01), torch.randn(8, 4), 0.01, 10.0)
    assert not calls


def test_rescore_refuses_fitting_options_it_would_not_use_before_the_model_is_built(out, capsys, monkeypatch):
    from app import fit as fit_cli

    before = (out / "report.json").read_bytes()
    monkeypatch.setattr(fit_cli, "make_target", lambda args: pytest.fail("the model was built"))
    base = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--rescore", "--heldout", "2"]
    for extra, words in (
            (["--iters", "500", "--calibration", "999", "--starts", "7", "--lr", "5", "--batch", "3", "--validation",
              "0.9", "--time-budget", "0.001"],
             ["--iters 500 (the fits were made with 2)", "--calibration 999 (the fits were made with 8)",
              "--starts 7", "--lr 5.0 (the fits were made with its default, 0.02 / NFE: leave --lr out)", "--batch 3", "--validation 0.9",
              "--time-budget 0.001 (it bounds a fit)", "--rescore reads only --model"]),
            (["--seed", "4"], ["--seed 4 (the fits were made with 0; their held-out starts are that seed's"]),
            (["--screen", "all"], ["--screen all (the fits were made with 4)"]),
            (["--pool", "1"], ["--pool 1 (the fits were made with 0)"]),
            (["--verbose"], ["--verbose (it prints the fit's progress lines)"])):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
    # a report of before the setting was recorded: a fitting option given cannot be checked, and is refused
    report = json.loads(before)
    del report["setting"]
    (out / "report.json").write_text(json.dumps(report))
    assert main([*base, "--iters", "2"]) == 2
    assert "records no iters to check it against" in capsys.readouterr().err
    (out / "report.json").write_bytes(before)


def test_rescore_takes_the_fits_own_options_and_prints_their_calibration(out, capsys):
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--rescore", "--heldout", "3"]) == 0
    printed = capsys.readouterr().out
    assert "fitted on 8 calibration starts, 3 held-out" in printed and "48 calibration" not in printed
    report = json.loads((out / "report.json").read_text())
    assert report["setting"]["iters"] == 2 and report["seed"] == 0 and report["calibration"] == 8
    assert main([*argv(out), "--heldout", "2", "--rescore"]) == 0  # the fits' own options may be repeated


def _resolve(out: Path) -> None:
    """Make NFE 3 be fitted again from the cache: its solver and report go, the cached files stay."""
    (out / "report.json").unlink()
    (out / "nfe3.json").unlink()


def refused_after_edit(out, capsys, path, edit, names, message):
    """The run refuses ``path`` once ``edit`` has changed what it holds: exit 2, naming it, the fault and the fix."""
    torch.save(edit(torch.load(path, weights_only=True)), path)
    _resolve(out)
    assert main(argv(out)) == 2
    err = capsys.readouterr().err
    assert names in err and message in err and "delete it" in err, err


@pytest.mark.parametrize("edit, message", [
    (lambda s: {**s, "reference": torch.full_like(s["reference"], math.nan)}, "hold 128 NaN or infinite value(s)"),
    (lambda s: {**s, "reference": torch.full_like(s["reference"], 1e30)},
     "do not match the digest recorded in them (they were changed after samplers fit wrote them)"),
    (lambda s: {k: v for k, v in s.items() if k != "digest"}, "record no digest"),
    (lambda s: {**s, "reference": s["reference"].float()}, "of the starts' shape [2, 4, 4, 4] and dtype torch.float64"),
    (lambda s: {**s, "note": 1}, "hold fields other than those samplers fit writes"),
])
def test_cached_endpoints_read_back_are_checked(out, capsys, edit, message):
    cached = out / ".work" / "reference-heldout-0-tol1e-07.pt"
    refused_after_edit(out, capsys, cached, edit, f"the cached exact endpoints {cached}", message)
    assert not (out / "report.json").exists()
    cached.unlink()  # the fix: solved again
    assert main(argv(out)) == 0
    assert math.isfinite(json.loads((out / "report.json").read_text())["rows"]["3"]["fit"])


def test_the_pools_cached_endpoints_are_checked(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from app import fit as fit_cli
    from samplers import InvalidInput
    from samplers.fitted import fitting

    monkeypatch.setattr(fitting, "reference_endpoints", lambda denoiser, x, sigma, tol: x * 0.5)
    target = SimpleNamespace(denoiser=lambda x, s: x, sigma_max=10.0, reference_tol=1e-3, identity="model a")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "pool.pt"
    fit_cli.PoolReferences(path, target)(x, {}, 10.0)
    assert torch.equal(fit_cli.PoolReferences(path, target)(x, {}, 10.0), x * 0.5)  # read back as written
    good = torch.load(path, weights_only=True)
    key = next(iter(good["endpoints"]))
    for saved, message in (
            ({**good, "endpoints": {**good["endpoints"], key: torch.full((3,), math.nan)}}, "NaN or infinite"),
            ({**good, "endpoints": {**good["endpoints"], key: good["endpoints"][key] + 1e30}}, "digest recorded"),
            (good["endpoints"], "other than one tensor per start"),  # the flat file of before the digest
            ({"endpoints": good["endpoints"]}, "record no digest")):
        torch.save(saved, path)
        with pytest.raises(InvalidInput, match="delete it") as err:
            fit_cli.PoolReferences(path, target)
        assert str(path) in str(err.value) and message in str(err.value), err.value
    torch.save({**good, "endpoints": {k: v.double() for k, v in good["endpoints"].items()}}, path)
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "digest": fitting.content_digest({"endpoints": saved["endpoints"]})}, path)
    with pytest.raises(InvalidInput, match="another shape or dtype"):
        fit_cli.PoolReferences(path, target)(x, {}, 10.0)


def _digested(state: dict) -> dict:
    from samplers.fitted.fitting import content_digest

    state = {k: v for k, v in state.items() if k != "digest"}
    return {**state, "digest": content_digest(state)}


@pytest.mark.parametrize("edit, message", [
    (lambda s: {k: v for k, v in s.items() if k != "best"}, "lacks best"),
    (lambda s: _digested({**s, "iteration": -5}), "records iteration -5, outside [0, 2]"),
    (lambda s: _digested({**s, "params": [torch.zeros(1), *s["params"][1:]]}),
     "holds theta as torch.float32 [1], where this fit's is torch.float64 [3]"),
    (lambda s: _digested({**s, "params": [s["params"][0] * math.nan, *s["params"][1:]]}), "NaN or infinite"),
    (lambda s: _digested({**s, "best": {**s["best"], "rmse": math.nan, "iteration": 2}}), "holds no best iterate"),
    (lambda s: {**s, "params": [s["params"][0] + 1, *s["params"][1:]]}, "does not match the digest"),
    (lambda s: {k: v for k, v in s.items() if k != "digest"}, "lacks digest"),
])
def test_the_optimisations_saved_state_is_checked_before_it_is_resumed(out, capsys, edit, message):
    state = out / ".work" / "state-nfe3.pt"
    refused_after_edit(out, capsys, state, edit, f"the fit's saved state {state}", message)


def test_a_saved_state_resumes_to_the_same_solver(out, fitted, capsys):
    _resolve(out)
    assert main([*argv(out), "--verbose"]) == 0
    assert "resumed at iteration 2" in capsys.readouterr().out
    assert (out / "nfe3.json").read_bytes() == (fitted / "nfe3.json").read_bytes()


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.replace('"fit": ', '"fit": NaN, "x": ', 1), "row 3 has no valid fit"),
    (lambda r: json.dumps({**json.loads(r), "rows": {"3": {**json.loads(r)["rows"]["3"], "best_fixed": {
        "label": "euler", "rmse": math.inf}}}}), "no valid best_fixed"),
    (lambda r: r.replace('"heldout": 2,', '"heldout": 2, "heldout": 3,', 1),
     "the key 'heldout' appears more than once in one object"),
    (lambda r: r.replace('"iters": 2,', '"iters": 2, "iters": 9,', 1),
     "the key 'iters' appears more than once"),
])
def test_the_report_read_back_is_refused_where_a_figure_is_not_finite_or_a_key_repeats(out, capsys, edit, message,
                                                                                         no_model):
    path = out / "report.json"
    path.write_text(edit(path.read_text()))
    assert main(argv(out)) == 2
    err = capsys.readouterr().err
    assert f"{path}" in err and message in err and "delete it" in err, err


def test_a_new_report_records_the_device_and_old_reports_without_it_still_read(fitted, out, capsys):
    from app.fit import read_report

    row = json.loads((fitted / "report.json").read_text())["rows"]["3"]
    device = row["device"]
    assert device["device"] == "cpu" and device["versions"]["torch"] == torch.__version__
    assert device["cpu_count"] >= 1 and "python" in device
    assert main([*argv(out), "--heldout", "3", "--rescore"]) == 0  # rescoring keeps the fit's timing and device
    again = json.loads((out / "report.json").read_text())["rows"]["3"]
    assert again["device"] == device and again["seconds"] == row["seconds"]
    committed = sorted(Path("docs/benchmarks/fitted").glob("*/report.json"))
    assert committed
    for path in committed:
        assert read_report(path.parent)["rows"]


def test_a_solver_file_with_a_repeated_key_is_refused_naming_it(fitted, tmp_path):
    from samplers import InvalidInput

    text = (fitted / "nfe3.json").read_text()
    for edited, key in ((text.rstrip().rstrip("}") + ', "sigmas": [80.0, 1.0, 0.003, 0.0]}', "sigmas"),
                        (text.replace('"kept": ', '"kept": "start", "kept": ', 1), "kept")):  # nested in meta
        path = tmp_path / "edited.json"
        path.write_text(edited)
        with pytest.raises(InvalidInput, match=f"the key '{key}' appears more than once") as err:
            LearnedSolver.load(path)
        assert str(path) in str(err.value)


def test_a_report_whose_fit_or_pair_starts_at_sigma_inf_reads_back(fitted, tmp_path):
    """A flow model's fit (or its best pair) may start at σ = inf (the learned family's candidates do), which the
    report records as Infinity; it was read back as 'no valid sigma_start' and the command refused its own report."""
    from app.fit import read_report
    from samplers import InvalidInput

    report = json.loads((fitted / "report.json").read_text())
    row = report["rows"]["3"]
    row["sigma_start"] = math.inf
    row["best_fixed"]["sigma_start"] = math.inf
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert read_report(tmp_path)["rows"]["3"]["sigma_start"] == math.inf
    for bad in (math.nan, -1.0, 0.0):
        row["sigma_start"] = bad
        (tmp_path / "report.json").write_text(json.dumps(report))
        with pytest.raises(InvalidInput, match="sigma_start"):
            read_report(tmp_path)


def test_check_is_a_fitting_option_and_fits_of_before_it_were_made_without_one(out, capsys):
    """--check (stage 5) is recorded in the setting; a report of before it existed was made with none (0): a
    default run into it is refused naming that, --rescore takes 0, and a negative --check is refused."""
    base = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out)]
    report = json.loads((out / "report.json").read_text())
    assert report["setting"]["check"] == 4  # QUICK leaves it at its default
    del report["setting"]["check"]
    (out / "report.json").write_text(json.dumps(report))
    assert main(argv(out, nfe="4")) == 2
    assert "(check 0 → 4): its finished NFEs were fitted with other options" in capsys.readouterr().err
    assert main([*base, "--rescore", "--heldout", "2", "--check", "4"]) == 2
    assert "--check 4 (the fits were made with 0)" in capsys.readouterr().err
    assert main([*argv(out), "--check", "-1"]) == 2
    assert "--check must be at least 0, got -1" in capsys.readouterr().err


# ---- --reference-tol below what the solve's dtype resolves; report.json's held-out counts


@pytest.mark.parametrize("model, tol, dtype, floor", [("gm-ve", "1e-17", "float64", "2.23e-16"),
                                                     ("gm-ve", "2e-16", "float64", "2.23e-16"),
                                                     ("eps", "1e-8", "float32", "1.2e-07")])
def test_a_reference_tol_below_the_solves_precision_is_refused_before_any_solve(tmp_path, capsys, monkeypatch, model,
                                                                                tol, dtype, floor):
    """A tolerance below the machine epsilon of the dtype the exact endpoints are solved in cannot be met: gm-ve at
    1e-17 built the model, started the solve and failed late (rc 1) blaming the model ("returned NaN/Inf at σ = nan
    ... a float16 model may overflow"). Now a usage error naming the dtype and the smallest accepted value; the
    shipped U-Nets' float32 is known before their weights are read."""
    from app import fit as fit_cli

    monkeypatch.setattr(fit_cli, "_solved", lambda *a, **k: pytest.fail("the reference solve started"))
    if model == "eps":
        monkeypatch.setattr(fit_cli, "make_target", lambda args: pytest.fail("the model was built"))
    code = main(["fit", "--model", model, "--nfe", "3", "--out", str(tmp_path / "fit"), *QUICK, "--reference-tol", tol])
    err = capsys.readouterr().err
    assert code == 2 and f"--reference-tol {float(tol):g} " in err and dtype in err and floor in err, err
    assert not (tmp_path / "fit").exists()


def test_the_smallest_reference_tol_named_is_accepted():
    from app.fit import check_reference_tol

    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        eps = torch.finfo(dtype).eps
        check_reference_tol(eps, dtype, "m")
        with pytest.raises(Exception, match="--reference-tol") as err:
            check_reference_tol(eps * 0.99, dtype, "m")
        floor = float(str(err.value).split("pass --reference-tol ")[1].split(" ")[0])
        assert eps <= floor < eps * 1.05
        check_reference_tol(floor, dtype, "m")


def test_the_report_keeps_each_rows_held_out_count_and_no_single_one(out, capsys):
    """A resumed run that fits a new NFE on another --heldout wrote its count as the report's top-level "heldout",
    over a row scored on another count; each row says its own, and the report no single one."""
    assert main([*argv(out, nfe="2"), "--heldout", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "heldout" not in report
    assert {k: row["heldout"] for k, row in report["rows"].items()} == {"2": 3, "3": 2}


def test_the_help_says_a_diffusers_folder_runs_unguided_by_default(capsys):
    """--cfg's help said the default was "the model's" for diffusers folders too; diffusers_target runs scale 1 (no
    guidance) there, a scheduler config naming no scale."""
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    cfg = text.split("--cfg CFG ", 1)[1].split("--prompt-embeds", 1)[0]
    assert "for a diffusers folder 1, no guidance" in cfg, cfg

"""benchmarks.fit_heldout: a fitted solver and the best pair its fit was held against, on the same held-out starts."""
from __future__ import annotations

import json

import pytest
import torch

import samplers
from benchmarks import common, deterministic, fit_heldout, learned_solvers


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    learned_solvers.main(["--problem", "gm-ve", "--nfe", "5", "--calibration", "64", "--iters", "10",
                          "--batch", "32", "--out", str(folder)])
    return folder


def test_the_pair_column_is_the_registry_pair_and_the_table_is_generated(fitted, tmp_path):
    out = tmp_path / "run"
    assert fit_heldout.main(["--learned", str(fitted), "--heldout-seeds", "101", "102", "--heldout-batch", "16",
                             "--cache", str(tmp_path / "cache"), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    (row,) = results["rows"]
    assert (row["problem"], row["nfe"], row["file"]) == ("gm-ve", 5, "gm-ve_nfe5.json")
    solver = samplers.fitted.solver.LearnedSolver.load(fitted / "gm-ve_nfe5.json")
    start = solver.meta["start"]
    assert row["kept"] == solver.meta["kept"]
    other = solver.meta.get("fitted_from")  # a fit from another of the best pairs says which
    assert row["fitted_from"] == (None if not other else fit_heldout.pair_label(
        other["sampler"], other["options"], other["schedule"], other["from_sigma"]))
    # the pair, run through the registry on its own schedule from the same starts, scores the same
    problem = common.get_problem("gm-ve")
    refs = common.ReferenceCache(tmp_path / "cache")
    sigma_max = deterministic.full_start(problem)
    cells = []
    for seed in (101, 102):
        steps = len(start["solver"]["sigmas"]) - 1
        sigmas = samplers.get_sigmas(start["schedule"], steps, sigma_min=problem.sigma_min, sigma_max=sigma_max,
                                     native=problem.native).double()
        sigmas[0] = sigma_max
        x = problem.noise(16, seed).to(torch.float64) * sigma_max
        x0 = samplers.sample(start["sampler"], problem.batch_denoiser(16, seed), x, sigmas, disable=True,
                             **start["options"])
        cells.append(deterministic.score(problem, x0, refs.get(problem, seed, x, sigma_max), sigma_max))
    assert row["pair"]["rmse"] == pytest.approx(deterministic.pool(cells)["rmse"], rel=1e-6)
    if row["kept"] == "start":
        assert row["fitted"] == row["pair"]
    assert (out / "table.md").read_text() == fit_heldout.report(out / "results.json", write=False)
    assert "fitted ÷ pair" in (out / "table.md").read_text()
    results["rows"] = [{**row, "kept": "fit", "fitted_from": "ipndm + karras"}]
    assert "| fit (from ipndm + karras) |" in fit_heldout.markdown(results)
    # fitted ÷ pair with its interval from the same starts paired; a fit worse beyond it is counted apart
    assert row["ratio"] == pytest.approx(row["fitted"]["rmse"] / row["pair"]["rmse"], rel=1e-12)
    lo, hi = row["ratio_interval"]
    assert 0 < lo <= hi and f"{row['ratio']:.3f} ({lo:.2f}–{hi:.2f}) |" in (out / "table.md").read_text()
    worse = {**row, "kept": "fit", "fitted": {**row["pair"], "rmse": 1.2 * row["pair"]["rmse"]}}
    results["rows"] = [{**worse, "ratio_interval": [0.9, 1.5]}, {**worse, "ratio_interval": [1.1, 1.3]}]
    assert "worse than their pair on these starts: 2 of 2" in fit_heldout.markdown(results)
    assert "beyond the 95 % interval (its low end above 1): 1." in fit_heldout.markdown(results)
    # the row records stage 5 as the solver file does; one it handed back is marked and counted
    assert row["check"] == solver.meta.get("check")
    handed = {**row, "kept": "start", "fitted_from": None,
              "check": {"starts": 8192, "solved": 256, "mean_mse": -1e-5, "kept": False}}
    results["rows"] = [handed, {**handed, "check": None}]
    table = fit_heldout.markdown(results)
    assert table.count("| start (stage 5 handed back the fit) |") == 1 and table.count("| start |") == 1
    assert "Fits stage 5 handed back for their pair: 1 (gm-ve at 5 NFE)." in table


def test_against_another_folder_pairs_each_fit_with_its_namesake(fitted, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    learned_solvers.main(["--problem", "gm-ve", "--nfe", "5", "--calibration", "64", "--iters", "3",
                          "--batch", "32", "--out", str(other)])
    out = tmp_path / "run"
    argv = ["--learned", str(fitted), "--heldout-seeds", "101", "102", "--heldout-batch", "16",
            "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert fit_heldout.main([*argv, "--against", str(other), "--out", str(out)]) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert fit_heldout.main(["--learned", str(other), *argv[2:], "--out", str(tmp_path / "alone")]) == 0
    theirs = json.loads((tmp_path / "alone" / "results.json").read_text())["rows"][0]["fitted"]
    a = row["against"]
    assert (a["rmse"], a["wrong_mode"]) == (theirs["rmse"], theirs["wrong_mode"])
    assert a["ratio"] == pytest.approx(row["fitted"]["rmse"] / theirs["rmse"], rel=1e-12)
    assert a["interval"][0] <= a["interval"][1]
    table = (out / "table.md").read_text()
    assert f"## Against {other}" in table and table == fit_heldout.report(out / "results.json", write=False)
    # against itself: the ratio is 1 on every resample, and the namesake (the same steps) is not run again
    runs, real = [], fit_heldout.run_solver
    monkeypatch.setattr(fit_heldout, "run_solver", lambda *a, **k: runs.append(a[1]) or real(*a, **k))
    assert fit_heldout.main([*argv, "--against", str(fitted), "--out", str(tmp_path / "self")]) == 0
    assert len(runs) == 2 and not runs[0].same_steps(runs[1])  # the fit and its pair
    (row,) = json.loads((tmp_path / "self" / "results.json").read_text())["rows"]
    assert row["against"]["ratio"] == 1.0 and row["against"]["interval"] == pytest.approx([1.0, 1.0])
    # a fit that handed back its pair is that pair: run once, fitted ÷ pair exactly 1
    handed = tmp_path / "handed"
    learned_solvers.main(["--problem", "gm-ve", "--nfe", "3", "--calibration", "64", "--iters", "0", "--batch", "32",
                          "--out", str(handed)])
    runs.clear()
    assert fit_heldout.main(["--learned", str(handed), *argv[2:], "--out", str(tmp_path / "handed-run")]) == 0
    (row,) = json.loads((tmp_path / "handed-run" / "results.json").read_text())["rows"]
    assert len(runs) == 1 and row["kept"] == "start" and row["fitted"] == row["pair"] and row["ratio"] == 1.0
    # a folder without the namesake, or with another cell under that name, is refused before any run
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        fit_heldout.main([*argv, "--against", str(empty), "--out", str(tmp_path / "x")])
    assert "no gm-ve_nfe5.json there" in capsys.readouterr().err
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (handed / "gm-ve_nfe3.json").rename(wrong / "gm-ve_nfe5.json")
    with pytest.raises(SystemExit):
        fit_heldout.main([*argv, "--against", str(wrong), "--out", str(tmp_path / "x")])
    assert "not the same cell" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_refuses_seeds_a_fit_was_calibrated_on_and_folders_without_fits(fitted, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        fit_heldout.main(["--learned", str(fitted), "--heldout-seeds", "7", "--out", str(tmp_path / "x")])
    assert err.value.code == 2 and "calibrated on seed 7" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        fit_heldout.main(["--learned", str(tmp_path), "--out", str(tmp_path / "x")])
    assert err.value.code == 2 and "no fitted solver files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit_heldout.main(["--learned", str(fitted), "--heldout-batch", "0", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_learned_solvers_refuses_a_bad_option_before_any_solve(capsys, monkeypatch):
    solved = []
    monkeypatch.setattr(learned_solvers, "fit_one", lambda *a, **k: solved.append(1))
    # each refused at parse time, naming the flag (they were refused by FitConfig, naming its field)
    for bad, said in ((["--fit-seed", "-1"], "outside [0, 2**32)"), (["--iters", "-3"], "argument --iters: -3"),
                      (["--batch", "0"], "argument --batch: 0"), (["--starts", "0"], "argument --starts: 0"),
                      (["--pool", "-1"], "argument --pool: -1"), (["--history", "-1"], "argument --history: -1")):
        with pytest.raises(SystemExit):
            learned_solvers.main(["--problem", "gm-ve", "--nfe", "5", "--out", "unused", *bad])
        assert said in capsys.readouterr().err
    assert solved == []


def test_a_folder_is_read_for_its_solver_files_and_against_is_checked_before_any_run(fitted, tmp_path, capsys,
                                                                                      monkeypatch):
    import shutil

    from samplers.fitted.solver import LearnedSolver

    runs, real = [], fit_heldout.run_solver
    monkeypatch.setattr(fit_heldout, "run_solver", lambda *a, **k: runs.append(a[1]) or real(*a, **k))
    learned = tmp_path / "learned"
    learned.mkdir()
    shutil.copy(fitted / "gm-ve_nfe5.json", learned)
    (learned / "report.json").write_text('{"rows": {}}')  # a folder's other JSON files are not solvers: passed over
    (learned / "notes.json").write_text("[1, 2]")
    argv = ["--learned", str(learned), "--heldout-seeds", "101", "--heldout-batch", "4", "--cache",
            str(tmp_path / "cache"), "--no-progress"]
    assert fit_heldout.main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(runs) == 2  # the fit and its pair
    # a solver file (*nfe<N>.json) that does not load is refused, named
    (learned / "gm-flow_nfe5.json").write_text("garbage")
    with pytest.raises(SystemExit) as err:
        fit_heldout.main([*argv, "--out", str(tmp_path / "x")])
    assert err.value.code == 2 and "gm-flow_nfe5.json is not a valid learned-solver file" in capsys.readouterr().err
    (learned / "gm-flow_nfe5.json").unlink()
    # --against: a namesake fitted to another model is refused before any run (it runs the fit's very steps, so it
    # was never run, and its scores were the fit's)
    other = tmp_path / "other"
    other.mkdir()
    foreign = LearnedSolver.load(learned / "gm-ve_nfe5.json")
    foreign.model = {**foreign.model, "fingerprint": "0" * 64}
    foreign.save(other / "gm-ve_nfe5.json")
    runs.clear()
    with pytest.raises(SystemExit) as err:
        fit_heldout.main([*argv, "--against", str(other), "--out", str(tmp_path / "x")])
    message = capsys.readouterr().err
    assert err.value.code == 2 and "gm-ve_nfe5.json" in message and "fingerprint 000000000000" in message
    assert runs == [] and not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as err:
        fit_heldout.main([*argv[:1], str(learned / "gm-ve_nfe5.json"), *argv[2:], "--out", str(tmp_path / "x")])
    assert err.value.code == 2 and "is not a folder" in capsys.readouterr().err


PLANTED = "planted_problem_module"


def plant(tmp_path, monkeypatch):
    """A module on sys.path whose function, if called, leaves a file behind: the proof that a string read from a
    file ran code (an audit used ``tempfile:mkdtemp``, which made a folder before the refusal)."""
    marker = tmp_path / "ran"
    (tmp_path / f"{PLANTED}.py").write_text(
        f"from pathlib import Path\ndef build():\n    Path({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("problem, says", [
    (f"{PLANTED}:build", "never imported as a 'module:function' entry point"),
    ("no-such-problem", "it is not a built-in problem's name"),  # was InvalidInput out of main: a traceback, exit 1
    ("gm-ve/d0-k0-s1", "a mixture is named d<dims>-k<modes>-s<seed>"),
    (["gm-ve"], "it is a JSON list"),
])
def test_a_solver_files_problem_is_data_never_an_entry_point_and_a_bad_one_is_named(problem, says, fitted, tmp_path,
                                                                                    monkeypatch, capsys):
    """A solver file's meta.problem went to common.get_problem, which imports a 'module:function' and calls it:
    reading a JSON file ran code. A name read from a file is matched against the built-in names only, and a bad
    one refused as the folder is read (exit 2, the file and the field named), before anything is built or run."""
    import sys

    from samplers.fitted.solver import LearnedSolver

    marker = plant(tmp_path, monkeypatch)
    learned = tmp_path / "learned"
    learned.mkdir()
    solver = LearnedSolver.load(fitted / "gm-ve_nfe5.json")
    solver.meta["problem"] = problem
    path = solver.save(learned / "x_nfe5.json")
    monkeypatch.setattr(fit_heldout, "run_solver", lambda *a, **k: pytest.fail("ran a solver of a refused file"))
    for main, argv in ((fit_heldout.main, ["--learned", str(learned), "--heldout-seeds", "101", "--heldout-batch",
                                           "4", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "x")]),
                       (learned_solvers.main, ["--recheck", str(learned), "--out", str(tmp_path / "x")])):
        with pytest.raises(SystemExit) as err:
            main(argv)
        text = capsys.readouterr().err
        assert err.value.code == 2 and f"{path}: field meta.problem is {problem!r}" in text and says in text, text
        assert not marker.exists() and PLANTED not in sys.modules
    assert not (tmp_path / "x").exists()


def test_a_problem_name_from_a_file_is_built_only_if_it_is_a_built_in_one(tmp_path, monkeypatch):
    """get_problem(entry_point=False), for names read from files: every built-in name passes (the grammar is
    get_problem's own), a 'module:function' is refused before its module is imported; typed names keep it."""
    import sys

    marker = plant(tmp_path, monkeypatch)
    for name in ("gm-ve", "gm-vp-eps", "gm-flow", "gm-flow/d48-k5-s101", "gm-ve/d7-k2-s0", "models-eps",
                 "models-flow"):
        assert common.builtin_problem_refusal(name) is None, name
    assert common.get_problem("gm-ve/d7-k2-s0", entry_point=False).name == "gm-ve/d7-k2-s0"
    for name in (f"{PLANTED}:build", "gm-ve/", "gm-vp/d8-k2-s1", "models-x", "", 3, None):
        assert common.builtin_problem_refusal(name) is not None, name
    with pytest.raises(samplers.InvalidInput, match="never imported"):
        common.get_problems([f"{PLANTED}:build"], entry_point=False)
    assert not marker.exists() and PLANTED not in sys.modules
    with pytest.raises(samplers.InvalidInput, match="returned a NoneType"):  # the command line's entry point stays
        common.get_problem(f"{PLANTED}:build")
    assert marker.exists()


def test_a_mixture_too_large_to_build_is_refused_before_it_is_built():
    # a name that matches the grammar, from a file or a command line, allocated its means (dims × modes float64)
    # until the memory ran out
    huge = "gm-ve/d999999999-k999-s1"
    assert "more than the limit of 134217728" in common.builtin_problem_refusal(huge)
    with pytest.raises(samplers.LimitExceeded, match="999999999 dimensions × 999 modes"):
        common.get_problem(huge)
    assert common.builtin_problem_refusal("gm-ve/d16384-k8192-s1") is None  # 2**27: at the limit


@pytest.mark.parametrize("field, value, says", [
    ("start", "dpmpp_2m", "field meta.start is 'dpmpp_2m'; it must be an object"),  # was an AttributeError traceback
    ("start.sampler", 3, "field meta.start.sampler is 3; it must be a name"),
    ("start.options", [1], "field meta.start.options is [1]"),
    ("start.solver", {"sigmas": [1.0, 0.0], "oops": 1}, "field meta.start.solver"),  # was a TypeError traceback
    ("kept", "both", "field meta.kept is 'both'; it must be 'fit' or 'start'"),
])
def test_a_solver_files_start_record_is_checked_as_the_folder_is_read(field, value, says, fitted, tmp_path, capsys):
    from samplers.fitted.solver import LearnedSolver

    learned = tmp_path / "learned"
    learned.mkdir()
    solver = LearnedSolver.load(fitted / "gm-ve_nfe5.json")
    where, _, key = field.rpartition(".")
    (solver.meta[where] if where else solver.meta)[key] = value
    path = solver.save(learned / "x_nfe5.json")
    with pytest.raises(SystemExit) as err:
        fit_heldout.main(["--learned", str(learned), "--heldout-seeds", "101", "--heldout-batch", "4", "--cache",
                          str(tmp_path / "c"), "--out", str(tmp_path / "x")])
    text = capsys.readouterr().err
    assert err.value.code == 2 and f"{path}: {says}" in text and "Traceback" not in text, text

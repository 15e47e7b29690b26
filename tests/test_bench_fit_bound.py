"""benchmarks.fit_bound: a cell fitted on the very held-out starts it is scored on, beside its held-out fit."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import common, fit_bound
from benchmarks.fit_heldout import run_solver


def bench(tmp_path, name, rows, target=0.5, seeds=(101, 102), batch=16):
    """A results.json as benchmarks.deterministic writes it, with only what fit_bound reads."""
    path = tmp_path / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "target_ratio": target, "args": {"heldout_seeds": list(seeds), "heldout_batch": batch},
        "heldout": [{"problem": p, "nfe": n, "diffusers": {"rmse": d, "wrong_mode": 0},
                     "fitted": None if f is None else {"rmse": f, "wrong_mode": 1}} for p, n, d, f in rows]}))
    return path


def test_the_cells_that_miss_are_fitted_on_the_scored_starts_and_the_table_is_generated(tmp_path, monkeypatch,
                                                                                         capsys):
    # gm-ve at 3 NFE misses 0.5 x diffusers' (0.3 > 0.25), at 4 it meets it, at 5 it has no fit
    path = bench(tmp_path, "a", [("gm-ve", 3, 0.5, 0.3), ("gm-ve", 4, 0.5, 0.2), ("gm-ve", 5, 0.5, None)])
    calls = []
    real = fit_bound.fit

    def spy(denoiser, config, noise, *args, **kwargs):
        solver = real(denoiser, config, noise, *args, **kwargs)
        calls.append((config, noise, solver))
        return solver

    monkeypatch.setattr(fit_bound, "fit", spy)
    out = tmp_path / "run"
    assert fit_bound.main(["--results", str(path), "--iters", "5", "--cache", str(tmp_path / "cache"),
                           "--out", str(out)]) == 0
    assert "fits: 100%" in capsys.readouterr().err  # a bar over the cells (--no-progress: none)
    results = json.loads((out / "results.json").read_text())
    (row,) = results["rows"]
    assert (row["problem"], row["nfe"], row["seeds"], row["batch"]) == ("gm-ve", 3, [101, 102], 16)
    ((config, noise, solver),) = calls
    problem = common.get_problem("gm-ve")
    # calibrated on exactly the starts it is scored on, every one solved (no pool), as the benchmark fits
    assert torch.equal(noise, torch.cat([problem.noise(16, s).double() for s in (101, 102)]))
    assert (config.nfe, config.pool, config.batch, config.iters) == (3, 0, 512, 5)
    assert row["bound"] == run_solver(problem, solver, [101, 102], 16, common.ReferenceCache(tmp_path / "cache"))[0]
    assert row["heldout_fit"] == {"rmse": 0.3, "wrong_mode": 1} and row["diffusers"]["rmse"] == 0.5
    table = (out / "table.md").read_text()
    assert table == fit_bound.report(out / "results.json", write=False)
    reached = row["bound"]["rmse"] <= 0.25
    assert (f"Cells the fit misses even on the starts it is scored on: {0 if reached else 1} of 1") in table
    # --cells picks any cell with a fit, met or not
    calls.clear()
    assert fit_bound.main(["--results", str(path), "--cells", "gm-ve:4", "--iters", "0", "--no-progress",
                           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run4")]) == 0
    assert [c[0].nfe for c in calls] == [4]
    assert "fits:" not in capsys.readouterr().err


def test_refuses_what_it_cannot_bound_before_any_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit_bound, "fit", lambda *a, **k: pytest.fail("fitted despite a bad argument"))
    a = bench(tmp_path, "a", [("gm-ve", 3, 0.5, 0.3)])
    again = bench(tmp_path, "b", [("gm-ve", 3, 0.5, 0.3)])
    other = bench(tmp_path, "c", [("gm-flow", 3, 0.5, 0.3)], target=0.4)
    none = bench(tmp_path, "d", [("gm-ve", 3, 0.5, None)])
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    out = ["--out", str(tmp_path / "x")]
    for argv, says in ((out, "--results is required"),
                       (["--results", str(a), "--cells", "gm-ve", *out], "PROBLEM:NFE"),
                       (["--results", str(a), "--cells", "gm-ve:0", *out], "PROBLEM:NFE"),
                       (["--results", str(a), "--cells", "gm-ve:4", *out], "no fitted solver for gm-ve:4"),
                       (["--results", str(a), str(again), *out], "in two --results"),
                       (["--results", str(a), str(other), *out], "disagree on the target"),
                       (["--results", str(none), *out], "holds no fitted solver"),
                       (["--results", str(broken), *out], "not a results.json"),
                       (["--results", str(tmp_path / "missing.json"), *out], "not a results.json"),
                       (["--results", str(a), "--iters", "-1", *out], "--iters: -1 is below 0")):
        with pytest.raises(SystemExit) as err:
            fit_bound.main(argv)
        assert err.value.code == 2 and says in capsys.readouterr().err, argv
    assert not (tmp_path / "x").exists()


def test_nothing_to_bound_where_every_fit_meets_the_target(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit_bound, "fit", lambda *a, **k: pytest.fail("nothing misses"))
    path = bench(tmp_path, "a", [("gm-ve", 3, 0.5, 0.25)])
    assert fit_bound.main(["--results", str(path), "--out", str(tmp_path / "x")]) == 0
    assert "nothing to bound" in capsys.readouterr().out and not (tmp_path / "x").exists()


ROW = {"problem": "gm-ve", "nfe": 3, "diffusers": {"rmse": 0.5}, "fitted": {"rmse": 0.3}}


@pytest.mark.parametrize("edit, says", [
    (lambda b: b["heldout"][0].pop("problem"), "heldout[0] has a fitted solver but no field problem"),
    (lambda b: b["heldout"][0].update(fitted=True), "field heldout[0].fitted is True"),
    (lambda b: b["heldout"][0].update(nfe="3"), "field heldout[0].nfe is '3'"),
    (lambda b: b["heldout"][0].update(diffusers={"rmse": 0}), "field heldout[0].diffusers.rmse is 0"),
    (lambda b: b["heldout"][0]["fitted"].update(rmse=float("nan")), "field heldout[0].fitted.rmse is nan"),
    (lambda b: b["heldout"].append(5), "field heldout[1] is 5"),
    (lambda b: b.update(target_ratio="0.5"), "field target_ratio is '0.5'"),
    (lambda b: b["args"].update(heldout_seeds=[]), "field args.heldout_seeds is []"),
    (lambda b: b["args"].update(heldout_batch=True), "field args.heldout_batch is True"),
    (lambda b: b.pop("heldout"), "has no field heldout"),
    # a row's problem is data: it went to get_problem, which imports a 'module:function' and calls it (the audit's
    # "tempfile:mkdtemp" made a folder), and an unknown name was a traceback, exit 1
    (lambda b: b["heldout"][0].update(problem="tempfile:mkdtemp"), "field heldout[0].problem is 'tempfile:mkdtemp'"),
    (lambda b: b["heldout"][0].update(problem="no-such-problem"), "it is not a built-in problem's name"),
    (lambda b: b["heldout"][0].update(problem="gm-ve/d999999999-k999-s1"), "more than the limit of 134217728"),
    (lambda b: b["heldout"][0].update(problem="gm-ve/d0-k0-s1"), "field heldout[0].problem is 'gm-ve/d0-k0-s1'"),
])
def test_a_results_json_whose_fields_are_wrong_is_refused_naming_file_and_field(edit, says, tmp_path, monkeypatch,
                                                                                 capsys):
    """A row without problem, or with "fitted": true, crashed with a raw traceback (KeyError, TypeError)."""
    monkeypatch.setattr(fit_bound, "fit", lambda *a, **k: pytest.fail("fitted despite a bad results.json"))
    monkeypatch.setattr(common, "_entry_point", lambda *a, **k: pytest.fail("imported a file's problem name"))
    data = {"target_ratio": 0.5, "args": {"heldout_seeds": [101], "heldout_batch": 16},
            "heldout": [json.loads(json.dumps(ROW))]}
    edit(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as err:
        fit_bound.main(["--results", str(path), "--out", str(tmp_path / "x")])
    text = capsys.readouterr().err
    assert err.value.code == 2 and f"--results {path}" in text and says in text, text


def test_a_results_json_that_names_a_key_twice_is_refused(tmp_path, monkeypatch, capsys):
    """JSON keeps the last of two keys: the target 2.0 was used, the 0.5 written first dropped silently."""
    monkeypatch.setattr(fit_bound, "fit", lambda *a, **k: pytest.fail("fitted despite a bad results.json"))
    path = tmp_path / "results.json"
    path.write_text('{"target_ratio": 0.5, "target_ratio": 2.0, "args": {"heldout_seeds": [101], "heldout_batch": 16}, '
                    f'"heldout": [{json.dumps(ROW)}]}}')
    with pytest.raises(SystemExit) as err:
        fit_bound.main(["--results", str(path), "--out", str(tmp_path / "x")])
    text = capsys.readouterr().err
    assert err.value.code == 2 and str(path) in text and "'target_ratio' appears more than once" in text, text


def test_a_fit_without_a_diffusers_baseline_is_skipped_by_default_and_refused_by_name(tmp_path, monkeypatch, capsys):
    """A row of a run without peers has no diffusers field: the whole file was refused for it (the review of
    2026-12-07), though only the cells it names need a baseline."""
    monkeypatch.setattr(fit_bound, "fit", lambda *a, **k: pytest.fail("fitted a cell without a target"))
    data = {"target_ratio": 0.5, "args": {"heldout_seeds": [101], "heldout_batch": 16},
            "heldout": [{"problem": "gm-ve", "nfe": 3, "fitted": {"rmse": 0.3}}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    assert fit_bound.main(["--results", str(path), "--out", str(tmp_path / "x")]) == 0
    assert "nothing to bound" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        fit_bound.main(["--results", str(path), "--cells", "gm-ve:3", "--out", str(tmp_path / "y")])
    assert err.value.code == 2 and "no diffusers baseline for gm-ve:3" in capsys.readouterr().err

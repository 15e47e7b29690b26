"""The benchmark CLIs at their boundary: a bad value is refused before any work, in one line naming it (exit
status 2, as argparse's ``parser.error``), never a traceback, never coerced or ignored. Every test here runs
in-process on tiny sizes, the expensive parts replaced by stand-ins that fail the test if they are reached."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from benchmarks import (adherence, classifier, common, compatibility, deterministic, distributed, fit_bound,
                        fit_heldout, learned_solvers, peers, quality, speed, stochastic, tiny_unet, vae_roundtrip)
from benchmarks.deterministic import running

LEARNED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "deterministic" / "learned"


def _reached(*_a, **_k):
    raise AssertionError("the expensive part ran: the value should have been refused before it")


def refused(capsys, main, argv, *words):
    """``main(argv)`` exits with status 2 and a one-line error holding ``words``, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2, exc.value.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "error:" in line and all(w in line for w in words), line
    return line


@pytest.fixture
def no_work(monkeypatch):
    """Every benchmark's expensive entry point, replaced by one that fails the test when reached."""
    monkeypatch.setattr(vae_roundtrip.VAE, "load", _reached)
    monkeypatch.setattr(running, "run", _reached)
    monkeypatch.setattr(quality, "sweep", _reached)
    monkeypatch.setattr(stochastic, "benchmark", _reached)
    monkeypatch.setattr(learned_solvers, "fit_one", _reached)
    monkeypatch.setattr(adherence, "run", _reached)
    monkeypatch.setattr(adherence, "load_pipeline", _reached)
    monkeypatch.setattr(tiny_unet, "make", _reached)
    monkeypatch.setattr(classifier, "train", _reached)
    monkeypatch.setattr(fit_heldout, "run_solvers", _reached)
    for name in ("ops_table", "conversion_ops", "overhead_table", "full_stack"):
        monkeypatch.setattr(speed, name, _reached)


# ---- numbers below their minimum


@pytest.mark.parametrize("main, argv, words", [
    (vae_roundtrip.main, ["--batch-size", "-1"], ["--batch-size", "-1", ">= 1"]),
    (vae_roundtrip.main, ["--batch-size", "0"], ["--batch-size", "0"]),
    (vae_roundtrip.main, ["--k", "0"], ["--k", "0"]),
    (vae_roundtrip.main, ["--n", "0"], ["--n", "0"]),
    (deterministic.main, ["--nfe", "0"], ["--nfe", "0"]),
    (deterministic.main, ["--nfe", "5", "-3"], ["--nfe", "-3"]),
    (deterministic.main, ["--batch", "0"], ["--batch", "0"]),
    (deterministic.main, ["--batch", "-4"], ["--batch", "-4"]),
    (deterministic.main, ["--heldout-batch", "0"], ["--heldout-batch", "0"]),
    (deterministic.main, ["--max-sampler-seconds", "-1"], ["--max-sampler-seconds", "> 0"]),
    (deterministic.main, ["--max-sampler-seconds", "0"], ["--max-sampler-seconds"]),
    (speed.main, ["--repeats", "0"], ["--repeats", "0"]),
    (speed.main, ["--steps", "0", "4"], ["--steps", "0"]),
    (quality.main, ["--batch", "0"], ["--batch", "0"]),
    (quality.main, ["--nfe", "0"], ["--nfe", "0"]),
    (stochastic.main, ["--samples", "-5"], ["--samples", "-5"]),
    (stochastic.main, ["--samples", "0"], ["--samples", "0"]),
    (learned_solvers.main, ["--out", "unused", "--calibration", "0"], ["--calibration", "0"]),
    (learned_solvers.main, ["--out", "unused", "--calibration", "2"], ["--calibration 2", "--calibration 3 or more"]),
    (learned_solvers.main, ["--out", "unused", "--lr", "0"], ["--lr", "0 is not a finite number > 0"]),
    (learned_solvers.main, ["--out", "unused", "--lr", "nan"], ["--lr", "nan is not a finite number > 0"]),
    (adherence.main, ["--n", "0"], ["--n", "0"]),
    (adherence.main, ["--steps", "0"], ["--steps", "0"]),
    # each names the option and its value (a shared message listed several values, not which one was wrong)
    (fit_heldout.main, ["--heldout-batch", "0"], ["--heldout-batch: 0 is below 1"]),
    (fit_heldout.main, ["--heldout-batch", "-2", "--threads", "1"], ["--heldout-batch: -2 is below 1"]),
    (fit_bound.main, ["--iters", "-1"], ["--iters: -1 is below 0"]),
])
def test_a_number_below_its_minimum_is_refused(capsys, no_work, main, argv, words):
    refused(capsys, main, argv, *words)


@pytest.mark.parametrize("main, argv", [
    (vae_roundtrip.main, []), (adherence.main, []), (deterministic.main, []), (speed.main, []),
    (quality.main, []), (stochastic.main, []), (learned_solvers.main, ["--out", "unused"]),
    (fit_heldout.main, []), (fit_bound.main, []), (classifier.main, ["train"]),
])
@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_below_one_are_refused_everywhere(capsys, no_work, monkeypatch, main, argv, threads):
    monkeypatch.setattr("torch.set_num_threads", _reached)
    refused(capsys, main, [*argv, "--threads", threads], "--threads", threads)


# ---- names


@pytest.mark.parametrize("main, argv, words", [
    (deterministic.main, ["--schedules", "bogus"], ["--schedules", "'bogus'", "karras"]),
    (deterministic.main, ["--samplers", "bogus"], ["--samplers", "'bogus'", "euler"]),
    (deterministic.main, ["--peer-names", "BogusScheduler"], ["--peer-names", "BogusScheduler", "EDMEulerScheduler"]),
    (quality.main, ["--peer-names", "Bogus"], ["--peer-names", "'Bogus'", "DDIMScheduler"]),
    (quality.main, ["--schedules", "bogus"], ["--schedules", "'bogus'"]),
    (quality.main, ["--dtype", "bogus"], ["--dtype", "bogus", "float32"]),
    (quality.main, ["--device", "bogus"], ["--device", "'bogus'", "cpu"]),
    (stochastic.main, ["--samplers", "euler"], ["--samplers", "'euler'", "euler_ancestral"]),
    (adherence.main, ["--sampler", "bogus"], ["--sampler", "'bogus'", "euler"]),
    (adherence.main, ["--schedule", "bogus"], ["--schedule", "'bogus'", "samplers.schedules.available()"]),
    # a label stands for a sampler with options or a schedule, which a sampler list would drop
    (quality.main, ["--samplers", "comfyui:deis"], ["'comfyui:deis' is deis with mode='tab'", "pass 'deis'"]),
    (deterministic.main, ["--samplers", "DPM++ 2M SDE Heun"], ["'DPM++ 2M SDE Heun' is not an ode sampler"]),
    (stochastic.main, ["--samplers", "DPM++ 2M SDE Heun"], ["solver_type='heun'", "pass 'dpmpp_2m_sde'"]),
    (deterministic.main, ["--samplers", "comfyui:dpm_2"], ["dropping the next-to-last σ", "pass 'dpm_2'"]),
    # a tool's schedule name with options of its own: the schedule lists run registry defaults
    (quality.main, ["--schedules", "KL Optimal"], ["'KL Optimal' is the 'kl_optimal' schedule with end='sigma_min'",
                                                   "pass 'kl_optimal'"]),
])
def test_an_unknown_name_is_refused_with_the_valid_ones(capsys, no_work, main, argv, words):
    refused(capsys, main, argv, *words)


def test_peer_names_are_checked_against_the_problems_asked_for(capsys, no_work):
    # a flow peer is not a peer of gm-ve: it would have been dropped without a word
    refused(capsys, deterministic.main, ["--problem", "gm-ve", "--peer-names", "FlowMatchEulerDiscreteScheduler"],
            "FlowMatchEulerDiscreteScheduler", "EDMEulerScheduler")


def test_quality_peer_names_are_checked_against_the_problems_asked_for(capsys, no_work, tmp_path):
    # a VP peer asked for on gm-ve alone: the sweep left its cells out, exit 0, no row, no word
    refused(capsys, quality.main, ["--quick", "--problem", "gm-ve", "--peer-names", "EulerDiscreteScheduler+karras",
                                   "--out", str(tmp_path)],
            "'EulerDiscreteScheduler+karras'", "gm-ve: none", "Pass a --problem that has it")


def test_a_learned_folder_without_solvers_is_refused(capsys, no_work, tmp_path):
    refused(capsys, deterministic.main, ["--learned", str(tmp_path / "nonexistent")], "--learned", "nonexistent",
            "--no-learned")
    refused(capsys, deterministic.main, ["--learned", str(tmp_path)], "--learned", "no fitted solver")


def test_valid_deterministic_arguments_reach_the_run(monkeypatch):
    seen = {}
    monkeypatch.setattr(running, "run", lambda args: seen.setdefault("args", args) and None or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        deterministic.main(["--quick", "--learned", str(LEARNED), "--peer-names", "EDMEulerScheduler",
                            "--schedules", "karras", "--samplers", "sample_euler"])
    args = seen["args"]
    assert args.samplers == ["euler"] and args.peer_names == ["EDMEulerScheduler"] and args.batch == 8


def test_heldout_seeds_help_says_the_quick_default():
    text = deterministic.parser().format_help().replace("\n", " ")
    quick = " ".join(map(str, deterministic.QUICK_HELDOUT_SEEDS))
    assert f"{quick} with --quick" in " ".join(text.split())


def test_the_selection_seed_among_the_heldout_ones_is_a_usage_error(capsys, no_work):
    refused(capsys, deterministic.main, ["--seed", "101", "--heldout-seeds", "101"], "--heldout-seeds", "101")


# ---- --out


@pytest.mark.parametrize("main, argv", [
    (deterministic.main, []), (speed.main, []), (fit_heldout.main, []), (fit_bound.main, []),
    (learned_solvers.main, []), (tiny_unet.main, []), (quality.main, []), (stochastic.main, []),
    (vae_roundtrip.main, []), (classifier.main, ["train"]),
])
def test_an_out_that_is_a_file_is_refused_before_the_work(capsys, no_work, tmp_path, main, argv):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    refused(capsys, main, [*argv, "--out", str(file)], "--out", "a-file", "is a file")
    refused(capsys, main, [*argv, "--out", str(file / "below")], "--out", "a-file")
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize("main, argv", [
    (deterministic.main, []), (speed.main, []), (fit_heldout.main, []), (fit_bound.main, []),
    (learned_solvers.main, []), (tiny_unet.main, []), (quality.main, []), (stochastic.main, []),
    (vae_roundtrip.main, []), (classifier.main, ["train"]),
])
def test_an_out_the_run_cannot_write_is_refused_before_the_work(capsys, no_work, unwritable, main, argv):
    """An --out no file can be written in was found when the results were saved, after the whole run (a
    PermissionError traceback from write_results' mkdir): refused while the arguments are parsed, creating nothing."""
    before = sorted(p.name for p in unwritable.iterdir())
    for out in (unwritable, unwritable / "new", unwritable / "new" / "deeper"):
        refused(capsys, main, [*argv, "--out", str(out)], "--out", "cannot write in folder", str(unwritable),
                "name a folder you can write to")
    assert sorted(p.name for p in unwritable.iterdir()) == before


def test_out_folder_accepts_new_and_existing_folders(tmp_path):
    assert common.out_folder(str(tmp_path)) == tmp_path
    assert common.out_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_compatibility_exact_writes_to_out(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(compatibility, "environment", lambda dtype="float32": "env")
    monkeypatch.setattr(compatibility, "exact_gain", lambda: [
        dict(scheduler="DDIMScheduler", variant={}, steps=10, default=1e-3, exact=1e-6)])
    out = tmp_path / "exact"
    assert compatibility.main(["--exact", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["rows"][0]["steps"] == 10 and results["command"] == f"python -m benchmarks.compatibility --exact " \
                                                                       f"--out {out}"
    text = (out / "table.md").read_text()
    assert text == compatibility.report(out / "results.json", write=False)
    assert "| DDIMScheduler | — | 10 | 1.00e-03 | 1.00e-06 |" in text
    # the table says where it ran (the environment went to stderr only, and the written file lacked it)
    ran_on = text.strip().splitlines()[-1]
    assert ran_on.startswith("Ran on: CPU ") and f"torch {torch.__version__}" in ran_on and "float64" in ran_on
    assert "DDIMScheduler" not in capsys.readouterr().out  # written to --out, not printed
    assert compatibility.main(["--exact"]) == 0
    printed = capsys.readouterr().out
    assert "| DDIMScheduler | — | 10 |" in printed and "Ran on: CPU " in printed
    refused(capsys, compatibility.main, ["--out", str(tmp_path)], "--out", "is a folder")
    refused(capsys, compatibility.main, ["--exact", "--out", str(out / "table.md")], "--out", "is a file")
    (out / "table.md").write_text("stale\n")
    assert compatibility.main(["--report", str(out / "results.json")]) == 0
    assert (out / "table.md").read_text() == text
    refused(capsys, compatibility.main, ["--report", str(out / "results.json"), "--exact"], "--report", "alone")


# ---- speed: an explicit value is used as given


def _speed_stand_ins(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr(speed, "ops_table", lambda *a, **k: [])
    monkeypatch.setattr(speed, "conversion_ops", lambda *a, **k: {})
    monkeypatch.setattr(speed, "overhead_table", lambda names, device, dtype, steps, repeats, *a:
                        calls.setdefault("overhead", []).append((steps, repeats)) or [])
    monkeypatch.setattr(speed, "full_stack", lambda *a: calls.setdefault("full_stack", []).append(a) or [])
    monkeypatch.setattr(speed, "report", lambda results: "")
    return calls


def test_speed_uses_explicit_steps_and_repeats_under_quick(monkeypatch, tmp_path):
    calls = _speed_stand_ins(monkeypatch, tmp_path)
    out = tmp_path / "speed"
    assert speed.main(["--quick", "--devices", "cpu", "--steps", "2", "3", "--repeats", "5", "--no-progress",
                       "--out", str(out)]) == 0
    assert calls["overhead"] == [((2, 3), 5)] and "full_stack" not in calls
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["steps"] == [2, 3] and saved["args"]["repeats"] == 5 and saved["args"]["full_stack"] is False
    assert saved["command"].endswith("--steps 2 3 --repeats 5 --no-progress --out " + str(out))


def test_speed_quick_defaults_and_the_full_stack_flag(monkeypatch, tmp_path):
    calls = _speed_stand_ins(monkeypatch, tmp_path)
    assert speed.main(["--quick", "--devices", "cpu", "--full-stack", "--out", str(tmp_path / "a")]) == 0
    assert calls["overhead"] == [(speed.QUICK_STEPS, speed.QUICK_REPEATS)] and len(calls["full_stack"]) == 1
    calls.clear()
    assert speed.main(["--devices", "cpu", "--no-full-stack", "--out", str(tmp_path / "b")]) == 0
    assert calls["overhead"] == [(speed.STEPS, speed.REPEATS)] and "full_stack" not in calls
    calls.clear()
    assert speed.main(["--devices", "cpu", "--repeats", "1", "--out", str(tmp_path / "c")]) == 0
    assert len(calls["full_stack"]) == 1  # a full run times the full stack unless told not to


@pytest.mark.parametrize("steps", [["5", "5"], ["8", "4"]])
def test_speed_refuses_steps_that_give_no_slope(capsys, no_work, steps):
    refused(capsys, speed.main, ["--steps", *steps], "--steps", "N1 < N2")


def test_speed_default_out_is_the_readmes_out_name():
    assert speed.parser().parse_args([]).out == Path("out/speed")


# ---- library modules


@pytest.mark.parametrize("module", [peers, distributed])
def test_library_modules_refuse_arguments(capsys, module):
    refused(capsys, module.main, ["--bogus"], "--bogus")
    assert module.main([]) == 0
    assert "library module" in capsys.readouterr().out


# ---- --no-progress, which docs/benchmarks/README.md says every benchmark with a progress bar takes


class _Reached(Exception):
    pass


def test_no_progress_is_taken_and_passed_on(monkeypatch, tmp_path):
    def stop(*_a, **kw):
        raise _Reached(kw.get("progress"))

    monkeypatch.setattr(stochastic, "benchmark", stop)
    monkeypatch.setattr(adherence, "run", stop)
    monkeypatch.setattr(adherence, "load_pipeline", lambda *a: None)  # the shipped weights need not be installed
    for main in (stochastic.main, adherence.main):
        with pytest.raises(_Reached) as exc:
            main(["--no-progress"])
        assert exc.value.args == (False,)
    bars = []
    monkeypatch.setattr(common, "progress", lambda *a, **k: bars.append(k["disable"]) or _reached())
    with pytest.raises(AssertionError):
        learned_solvers.main(["--problem", "gm-ve", "--nfe", "5", "--out", str(tmp_path), "--no-progress"])
    assert bars == [True]


def test_a_tools_schedule_name_without_options_is_the_registry_schedule_it_names():
    import argparse

    parser = argparse.ArgumentParser()
    assert common.schedule_or_refuse(parser, "--schedules", "Beta") == "beta_sigmas"  # A1111's Beta
    assert common.schedule_or_refuse(parser, "--schedules", "beta") == "beta"  # the registry alias, as written
    assert common.schedule_or_refuse(parser, "--schedules", "Karras") == "karras"


# ---- seeds: one type for every seed option, so the seeds derived per item stay valid generator seeds


SEED_OPTIONS = [
    (deterministic.main, ["--seed"]), (deterministic.main, ["--heldout-seeds"]), (quality.main, ["--seeds"]),
    (stochastic.main, ["--seed"]), (learned_solvers.main, ["--out", "unused", "--calibration-seed"]),
    (learned_solvers.main, ["--out", "unused", "--fit-seed"]), (tiny_unet.main, ["--out", "unused", "--seed"]),
    (vae_roundtrip.main, ["--seed"]), (fit_heldout.main, ["--heldout-seeds"]),
]


@pytest.mark.parametrize("main, argv", SEED_OPTIONS)
@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999", "1.5"])
def test_a_seed_outside_its_range_is_refused_everywhere(capsys, no_work, main, argv, seed):
    refused(capsys, main, [*argv, seed], argv[-1], seed, "2**32")


def test_the_seeds_derived_from_the_largest_seed_stay_generator_seeds():
    from samplers.core.argtypes import SEED_MAX, seed
    from samplers.core.seeds import SEED_LIMIT

    largest = seed(str(SEED_MAX - 1))
    assert max(common.item_seeds(1_000_000, largest, common.SAMPLER_NOISE)) < SEED_LIMIT
    assert (largest + 1) * 1_000_003 + 1_000_000 < SEED_LIMIT  # samplers fit's noise streams (app.fit.Target.noise)


# ---- a value listed twice would be run, and counted, twice


@pytest.mark.parametrize("main, argv, option", [
    (quality.main, ["--nfe", "6", "6"], "--nfe"),
    (quality.main, ["--seeds", "0", "0"], "--seeds"),
    (quality.main, ["--schedules", "karras", "karras"], "--schedules"),
    (quality.main, ["--samplers", "euler", "sample_euler"], "--samplers"),
    (deterministic.main, ["--heldout-seeds", "7", "7"], "--heldout-seeds"),
    (deterministic.main, ["--nfe", "5", "5"], "--nfe"),
    (fit_heldout.main, ["--heldout-seeds", "101", "101"], "--heldout-seeds"),
    (stochastic.main, ["--samplers", "euler_ancestral", "euler_ancestral"], "--samplers"),
    (learned_solvers.main, ["--out", "unused", "--nfe", "3", "3"], "--nfe"),
    (speed.main, ["--devices", "cpu", "cpu"], "--devices"),
    (speed.main, ["--samplers", "euler", "euler"], "--samplers"),
])
def test_a_value_listed_twice_is_refused(capsys, no_work, main, argv, option):
    refused(capsys, main, argv, option, "more than once")


# ---- problems and files named on the command line are checked before any cell runs


@pytest.mark.parametrize("main, argv, words", [
    (quality.main, ["--problem", "nosuch"], ["--problem", "'nosuch'", "module:function"]),
    (quality.main, ["--problem", "nosuch_mod:fn"], ["--problem", "cannot be imported"]),
    (quality.main, ["--problem", "gm-nope"], ["--problem", "gm-ve, gm-vp-eps, gm-flow"]),
    (quality.main, ["--problem", "benchmarks.common:rmse"], ["--problem", "takes arguments"]),
    (quality.main, ["--fitted", "/nonexistent.json"], ["--fitted", "/nonexistent.json", "samplers fit"]),
    (deterministic.main, ["--problem", "benchmarks.common:nosuch"], ["--problem", "has no 'nosuch'"]),
    (speed.main, ["--problem", "nosuch"], ["--problem", "'nosuch'"]),
    (speed.main, ["--devices", "tpu"], ["--devices", "'tpu'", "cpu, cuda"]),
    (speed.main, ["--dtypes", "float33"], ["--dtypes", "'float33'", "float16"]),
    (speed.main, ["--devices", "cpu", "--dtypes", "float16"], ["--dtypes", "CUDA"]),
    (adherence.main, ["--cfg", "1e300"], ["--cfg", "100"]),
])
def test_a_problem_file_or_device_that_cannot_run_is_refused_before_the_work(capsys, no_work, main, argv, words):
    refused(capsys, main, argv, *words)


def test_speed_refuses_cuda_without_a_cuda_device(capsys, no_work, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(capsys, speed.main, ["--devices", "cuda"], "--devices", "no CUDA device")


def test_quality_refuses_a_fitted_file_that_is_not_a_solver(capsys, no_work, tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    refused(capsys, quality.main, ["--fitted", str(tmp_path / "bad.json")], "--fitted", "not a valid learned-solver")


def test_learned_solvers_refuses_an_unknown_problem_before_creating_out(capsys, no_work, tmp_path):
    refused(capsys, learned_solvers.main, ["--problem", "nosuch", "--out", str(tmp_path / "out")], "--problem",
            "'nosuch'")
    assert not (tmp_path / "out").exists()


def test_learned_solvers_prints_the_device_it_runs_on(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(learned_solvers, "fit_one", _reached)
    with pytest.raises(AssertionError):
        learned_solvers.main(["--problem", "gm-ve", "--nfe", "3", "--out", str(tmp_path), "--no-progress"])
    assert re.search(r"device: CPU [^\n]*\(\d+ cores, \d+ torch threads\)", capsys.readouterr().out)


# ---- --report RESULTS_JSON: the table from that file alone


REPORTING = [deterministic.main, quality.main, stochastic.main, speed.main, fit_heldout.main, fit_bound.main,
             vae_roundtrip.main]


@pytest.mark.parametrize("main", REPORTING)
def test_report_refuses_the_options_it_would_ignore(capsys, no_work, tmp_path, main):
    results = tmp_path / "results.json"
    results.write_text("{}")
    refused(capsys, main, ["--report", str(results), "--out", str(tmp_path / "zzz")], "--report", "--out",
            "no effect")
    refused(capsys, main, ["--report", str(results), "--threads", "2"], "--threads", "no effect")
    assert not (tmp_path / "zzz").exists() and not (tmp_path / "table.md").exists()


@pytest.mark.parametrize("main", REPORTING)
def test_report_refuses_a_file_it_cannot_read_as_this_benchmarks_results(capsys, no_work, tmp_path, main):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text('{"something": "else"}')
    for path, words in ((tmp_path / "none.json", ["cannot be read"]), (tmp_path, ["is a folder"]),
                        (tmp_path / "bad.json", ["not valid JSON"]), (tmp_path / "list.json", ["JSON list"]),
                        (tmp_path / "other.json", ["not a results.json of this benchmark"])):
        refused(capsys, main, ["--report", str(path)], "--report", str(path), *words)
    assert not (tmp_path / "table.md").exists()


def test_report_still_writes_the_table_of_its_own_results(capsys, tmp_path):
    source = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "vae" / "results.json"
    results = tmp_path / "results.json"
    results.write_text(source.read_text())
    assert vae_roundtrip.main(["--report", str(results)]) == 0
    assert (tmp_path / "table.md").read_text() == (source.parent / "table.md").read_text()


# ---- session 21's benchmark audit


@pytest.mark.parametrize("main, argv", [
    (fit_heldout.main, ["--heldout-seeds", "101", "--heldout-batch", "1"]),
    (deterministic.main, ["--heldout-seeds", "101", "--heldout-batch", "1"]),
])
def test_a_held_out_pool_of_one_start_is_refused_up_front(capsys, no_work, monkeypatch, main, argv):
    # fit_heldout ran every solver, then raised ValueError from ratio_interval (which resamples at least 2 starts)
    monkeypatch.setattr(fit_heldout, "run_solvers", _reached)
    refused(capsys, main, argv, "--heldout-batch", "is 1 held-out start", "at least 2")


@pytest.mark.parametrize("n, words", [("64", ["--n 64", "multiple of 128", "e.g. 128"]),
                                      ("200", ["--n 200", "last 72", "e.g. 128"])])
def test_classifier_training_on_a_partial_batch_is_refused(capsys, no_work, n, words):
    # --n 64 crashed in OneCycleLR (0 steps); --n 200 trained on 128 scenes and recorded 200
    refused(capsys, classifier.main, ["train", "--n", n], *words)


def test_classifier_records_the_command_that_trained_it(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(classifier, "train", lambda out, n, epochs, threads, command: seen.update(command=command))
    classifier.main(["train", "--n", "256", "--epochs", "1", "--out", str(tmp_path / "w")])
    assert seen["command"] == f"python -m benchmarks.classifier train --n 256 --epochs 1 --out {tmp_path / 'w'}"


@pytest.mark.parametrize("main, argv", [
    (vae_roundtrip.main, ["--n", "1"]), (classifier.main, ["train", "--n", "128"]), (classifier.main, ["eval"]),
])
def test_benchmarks_print_the_device_and_torch_they_run_on(capsys, monkeypatch, main, argv):
    monkeypatch.setattr(vae_roundtrip.VAE, "load", _reached)
    monkeypatch.setattr(classifier, "train", _reached)
    monkeypatch.setattr(classifier, "load", _reached)
    with pytest.raises(AssertionError):
        main(argv)
    out = capsys.readouterr().out
    # the CPU's model where the machine names it (the benchmarks/common.cpu_model), its cores and threads
    assert re.search(r"device: CPU [^\n]*\(\d+ cores, \d+ torch threads\)", out) and f"torch {torch.__version__}" in out


def test_compatibility_replaces_only_a_table_it_wrote(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(compatibility, "environment", _reached)  # refused before any work
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n\nnot a table\n")
    refused(capsys, compatibility.main, ["--out", str(readme)], "--out", "README.md", "exists and is not a "
            "compatibility table", "'# diffusers compatibility'", "name a new file")
    refused(capsys, compatibility.main, ["--exact", "--out", str(readme)], "--out", "README.md", "is a file")
    assert readme.read_text() == "# my project\n\nnot a table\n"
    monkeypatch.setattr(compatibility, "environment", lambda dtype="float32": "env")
    monkeypatch.setattr(compatibility, "exact_gain", lambda: [
        dict(scheduler="DDIMScheduler", variant={}, steps=10, default=1e-3, exact=1e-6)])
    monkeypatch.setattr(compatibility, "table", lambda: [])
    monkeypatch.setattr(compatibility, "markdown", lambda rows, env: compatibility.HEADER.splitlines()[0] + "\nnew\n")
    old = tmp_path / "compat.md"
    old.write_text("# diffusers compatibility\n\nold\n")  # a previous table is replaced
    assert compatibility.main(["--out", str(old)]) == 0 and old.read_text().endswith("new\n")
    exact = tmp_path / "exact"
    for _ in range(2):  # the --exact folder, written and then replaced
        assert compatibility.main(["--exact", "--out", str(exact)]) == 0
    assert (exact / "table.md").read_text().startswith(common.GENERATED.split("`")[0])


def test_compatibility_names_its_command_in_errors(capsys):
    with pytest.raises(SystemExit):
        compatibility.main(["--bogus"])
    assert "python -m benchmarks.compatibility: error" in capsys.readouterr().err


def test_learned_solvers_passes_lr_to_the_fit(monkeypatch, tmp_path):
    seen = []

    def stop(problem, nfe, *, calibration, seed, config, log=None):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(learned_solvers, "fit_one", stop)
    for argv, lr in ((["--lr", "0.003"], 0.003), ([], None)):
        with pytest.raises(KeyboardInterrupt):
            learned_solvers.main(["--problem", "gm-ve", "--nfe", "3", "--out", str(tmp_path), "--no-progress", *argv])
        assert seen[-1]["lr"] == lr


def test_the_tiny_unet_is_its_seeds_and_leaves_the_global_generator_alone(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = tiny_unet.make(tmp_path / "a", seed=4)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's next draws are as they were
    b = tiny_unet.make(tmp_path / "b", seed=4)
    for name in ("diffusion_pytorch_model.safetensors", "embeds.safetensors", "scheduler_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_the_tiny_unet_refuses_an_out_that_holds_anything_but_a_previous_runs_files(capsys, no_work, tmp_path):
    """--out over an existing folder replaced its config.json with the tiny U-Net's (--out models/weights/eps: the
    shipped one), exit status 0, and left its other files beside the new ones: refused before anything is written,
    unless the folder holds only a previous run's files."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"keep": 1}')
    refused(capsys, tiny_unet.main, ["--out", str(theirs)], "--out", "config.json is not a tiny U-Net's",
            "name a new or empty folder, or one a previous run of benchmarks.tiny_unet wrote")
    (theirs / "notes.txt").write_text("mine")
    refused(capsys, tiny_unet.main, ["--out", str(theirs)], "--out", "does not write (notes.txt)")
    (theirs / "config.json").unlink()
    refused(capsys, tiny_unet.main, ["--out", str(theirs)], "--out", "does not write (notes.txt)")
    (theirs / "notes.txt").unlink()
    (theirs / "embeds.safetensors").write_bytes(b"")
    refused(capsys, tiny_unet.main, ["--out", str(theirs)], "--out", "no config.json")
    assert sorted(p.name for p in theirs.iterdir()) == ["embeds.safetensors"]


def test_the_tiny_unet_writes_over_a_previous_runs_folder(tmp_path):
    folder = tiny_unet.make(tmp_path / "unet", seed=1)
    assert tiny_unet.refusal(folder) is None and sorted(p.name for p in folder.iterdir()) == sorted(tiny_unet.FILES)
    before = (folder / "embeds.safetensors").read_bytes()
    tiny_unet.make(folder, seed=2)  # a re-run with another seed replaces its files
    assert (folder / "embeds.safetensors").read_bytes() != before
    (tmp_path / "empty").mkdir()
    assert tiny_unet.refusal(tmp_path / "empty") is None and tiny_unet.refusal(tmp_path / "missing") is None
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(common.InvalidInput, match=r"does not write \(notes.txt\)"):  # the library function's too
        tiny_unet.make(folder)


def test_vae_roundtrip_times_its_calls_after_one_untimed_warm_up(monkeypatch, tmp_path):
    """The first batch's encode and decode paid the one-off costs of a first call: one round trip runs untimed
    before the timed ones, as in the other benchmarks."""
    calls = {"to_latent": 0, "from_latent": 0}
    for name in calls:
        real = getattr(vae_roundtrip.VAE, name)

        def counted(self, x, real=real, name=name):
            calls[name] += 1
            return real(self, x)
        monkeypatch.setattr(vae_roundtrip.VAE, name, counted)
    assert vae_roundtrip.main(["--n", "4", "--k", "1", "--batch-size", "2", "--out", str(tmp_path),
                               "--no-progress"]) == 0
    assert calls == {"to_latent": 3, "from_latent": 3}  # two timed batches and the warm-up

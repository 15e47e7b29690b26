"""The benchmark CLIs at their boundary: a bad value is refused before any work, in one line naming it (exit
status 2, as argparse's ``parser.error``), never a traceback, never coerced or ignored. Every test here runs
in-process on tiny sizes, the expensive parts replaced by stand-ins that fail the test if they are reached."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    monkeypatch.setattr(tiny_unet, "make", _reached)
    monkeypatch.setattr(classifier, "train", _reached)
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
    (learned_solvers.main, ["--out", "unused", "--calibration", "2"], ["--calibration", "2", "at least 3"]),
    (adherence.main, ["--n", "0"], ["--n", "0"]),
    (adherence.main, ["--steps", "0"], ["--steps", "0"]),
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
    (deterministic.main, ["--samplers", "DPM++ 2M SDE Heun"], ["solver_type='heun'", "pass 'dpmpp_2m_sde'"]),
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


def test_out_folder_accepts_new_and_existing_folders(tmp_path):
    assert common.out_folder(str(tmp_path)) == tmp_path
    assert common.out_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_compatibility_exact_writes_to_out(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(compatibility, "environment", lambda: "env")
    monkeypatch.setattr(compatibility, "exact_gain", lambda: [
        dict(scheduler="DDIMScheduler", variant={}, steps=10, default=1e-3, exact=1e-6)])
    monkeypatch.setattr(compatibility, "_variant", lambda v: "default")
    out = tmp_path / "exact.md"
    assert compatibility.main(["--exact", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| DDIMScheduler | default | 10 | 1.00e-03 | 1.00e-06 |" in text
    assert "DDIMScheduler" not in capsys.readouterr().out  # written to --out, not printed
    assert compatibility.main(["--exact"]) == 0
    assert capsys.readouterr().out == text
    refused(capsys, compatibility.main, ["--out", str(tmp_path)], "--out", "is a folder")


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

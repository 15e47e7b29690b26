"""The benchmark CLIs refuse, before any work, a flag that would be silently ignored or run twice: a fitted solver
that suits none of the run's models or does not load, a value listed twice, a flag another flag makes do nothing,
a CUDA-only section with no CUDA device to run it. Every test runs in-process on tiny sizes, the expensive parts
replaced by stand-ins that fail the test if they are reached."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import fit_bound, quality, speed
from benchmarks.deterministic import running
from test_bench_cli_seams import _reached, refused  # the same stand-in and refusal check as the CLI seams

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
LEARNED = DOCS / "deterministic" / "learned"


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(quality, "sweep", _reached)
    monkeypatch.setattr(running, "run", _reached)
    monkeypatch.setattr(fit_bound, "fit_on", _reached)
    for name in ("ops_table", "conversion_ops", "overhead_table", "full_stack", "problem_table"):
        monkeypatch.setattr(speed, name, _reached)


# ---- quality --fitted: a solver that suits none of the run's models


def test_quality_refuses_a_fitted_solver_of_another_model_before_any_cell(capsys, no_work, tmp_path):
    line = refused(capsys, quality.main, ["--problem", "gm-vp-eps", "--fitted", str(LEARNED / "gm-ve_nfe5.json"),
                                          "--no-peers", "--out", str(tmp_path / "q")],
                   "--fitted", "gm-ve_nfe5.json", "gm-vp-eps", "fitted to gm-ve", "--problem gm-ve")
    assert "allow_other_model" not in line  # the library's fix is no option of this command
    assert not (tmp_path / "q").exists()


def test_quality_runs_a_fitted_solver_that_suits_one_of_the_problems(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(quality, "sweep", lambda args, world=None, ctx=None: seen.append(ctx) and None)
    assert quality.main(["--problem", "gm-vp-eps", "gm-ve", "--fitted", str(LEARNED / "gm-ve_nfe5.json"),
                         "--no-peers", "--no-progress", "--out", str(tmp_path / "q")]) == 0
    assert list(seen[0].problems) == ["gm-vp-eps", "gm-ve"]  # the problems checked are those the sweep runs


# ---- deterministic --learned: every solver file the run ranks loads and suits its problem


@pytest.mark.parametrize("content, words", [
    ("{oops", ["not a valid learned-solver file"]),
    (None, ["fitted to gm-flow"]),  # gm-flow's solver under gm-ve's name
])
def test_deterministic_refuses_a_solver_file_it_would_rank_that_cannot_run(capsys, no_work, tmp_path, content,
                                                                           words):
    folder = tmp_path / "learned"
    folder.mkdir()
    target = folder / "gm-ve_nfe5.json"
    if content is None:
        shutil.copy(LEARNED / "gm-flow_nfe5.json", target)
    else:
        target.write_text(content)
    refused(capsys, running.main, ["--problem", "gm-ve", "--nfe", "5", "--learned", str(folder), "--out",
                                   str(tmp_path / "d")],
            "--learned", "gm-ve_nfe5.json", "gm-ve at 5 NFE", "--no-learned", *words)


def test_deterministic_accepts_the_shipped_solvers_and_the_documented_folders():
    for argv in ([], ["--quick"], ["--problem", "gm-ve/d48-k5-s101", "gm-vp-eps/d128-k9-s202", "gm-flow/d24-k3-s303",
                                   "--nfe", "5", "10", "--learned", str(DOCS / "fitted" / "mixtures" / "learned")]):
        p = running.parser()
        running.check_args(p, p.parse_args(argv))


# ---- fit_bound: a cell or a results file listed twice


@pytest.mark.parametrize("argv, option", [
    (["--cells", "gm-ve/d56-k9-s1313:5", "gm-ve/d56-k9-s1313:5"], "--cells"),
    (["--cells", "gm-ve/d56-k9-s1313:5", "gm-ve/d56-k9-s1313:05"], "--cells"),
])
def test_fit_bound_refuses_a_cell_listed_twice(capsys, no_work, tmp_path, argv, option):
    results = str(DOCS / "fitted" / "mixtures-5" / "results.json")
    refused(capsys, fit_bound.main, ["--results", results, *argv, "--out", str(tmp_path / "f")], option,
            "more than once")
    refused(capsys, fit_bound.main, ["--results", results, results, "--out", str(tmp_path / "f")], "--results",
            "more than once")
    assert not (tmp_path / "f").exists()


# ---- flags another flag makes do nothing


@pytest.mark.parametrize("main", [quality.main, running.main])
@pytest.mark.parametrize("argv, flag", [
    (["--no-peers", "--peer-names", "DDIMScheduler"], "--peer-names"),
    (["--no-cache", "--cache", "/tmp/elsewhere"], "--cache"),
    (["--no-cache", "--cache", "out/cache"], "--cache"),  # the default's value, given
])
def test_contradictory_flags_are_refused(capsys, no_work, tmp_path, main, argv, flag):
    refused(capsys, main, [*argv, "--out", str(tmp_path / "o")], flag, "no effect", "leave out one of them")


@pytest.mark.parametrize("main, argv, flags", [
    (running.main, ["--learned", str(LEARNED), "--no-learned"], ["--learned", "--no-learned"]),
    (running.main, ["--no-learned", "--learned", str(LEARNED)], ["--learned", "--no-learned"]),
    (speed.main, ["--full-stack", "--no-full-stack"], ["--full-stack", "--no-full-stack"]),
    (speed.main, ["--no-full-stack", "--full-stack"], ["--full-stack", "--no-full-stack"]),
])
def test_a_flag_and_its_negation_together_are_refused_not_the_later_kept(capsys, no_work, tmp_path, main, argv,
                                                                          flags):
    refused(capsys, main, ["--quick", *argv, "--out", str(tmp_path / "o")], *flags, "leave out one of them")
    assert not (tmp_path / "o").exists()


def test_each_of_learned_and_no_learned_alone_is_taken(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(running, "run", lambda args: seen.append(args.learned) or _reached())
    for argv in (["--no-learned"], ["--learned", str(LEARNED)]):
        with pytest.raises(AssertionError):
            running.main(["--quick", "--no-peers", *argv, "--out", str(tmp_path / "d")])
    assert seen == [None, LEARNED]


def test_the_cache_default_is_the_string_it_was():
    for p in (quality.parser(), running.parser()):
        args = p.parse_args([])
        assert args.cache == "out/cache" and json.loads(json.dumps(args.cache)) == "out/cache"
        assert p.parse_args(["--no-cache"]).no_cache


@pytest.mark.parametrize("argv", [["--no-cache"], ["--cache", "/tmp/x"], ["--no-peers"]])
def test_quality_accepts_each_of_the_flags_alone(monkeypatch, tmp_path, argv):
    seen = []
    monkeypatch.setattr(quality, "sweep", lambda args, world=None, ctx=None: seen.append(args) and None)
    assert quality.main(["--problem", "gm-ve", *argv, "--out", str(tmp_path / "q")]) == 0 and seen


# ---- speed: flags that need another flag, CUDA-only sections without CUDA


@pytest.mark.parametrize("argv, flag", [
    (["--problem-steps", "7"], "--problem-steps"),
    (["--problem-batch", "3"], "--problem-batch"),
])
def test_speed_refuses_problem_options_without_a_problem(capsys, no_work, argv, flag):
    refused(capsys, speed.main, argv, flag, "no --problem", "no effect")


@pytest.mark.parametrize("flag", ["--graph", "--sd15"])
def test_speed_refuses_a_cuda_section_without_cuda_as_dtypes_is(capsys, no_work, monkeypatch, flag):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(capsys, speed.main, [flag], flag, "CUDA", "devices: cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused(capsys, speed.main, [flag, "--devices", "cpu"], flag, "CUDA", "devices: cpu", "--devices cuda")


def test_speed_problem_options_with_a_problem_and_their_defaults(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(speed, "ops_table", lambda *a, **k: [])
    monkeypatch.setattr(speed, "conversion_ops", lambda *a, **k: {})
    monkeypatch.setattr(speed, "overhead_table", lambda *a: [])
    monkeypatch.setattr(speed, "problem_table", lambda pname, names, device, steps, batch, *a:
                        calls.append((steps, batch)) or [])
    monkeypatch.setattr(speed, "report", lambda results: "")
    for argv, want in ((["--problem-steps", "7", "--problem-batch", "3"], (7, 3)), ([], (20, 4))):
        out = tmp_path / str(len(calls))
        assert speed.main(["--quick", "--devices", "cpu", "--problem", "gm-ve", *argv, "--out", str(out)]) == 0
        assert calls[-1] == want
        saved = json.loads((out / "results.json").read_text())["args"]
        assert (saved["problem_steps"], saved["problem_batch"]) == want


# ---- an audit of 2026-12-06: values refused late, run twice under two spellings, or accepted and unused

DET = ["--quick", "--samplers", "euler", "--schedules", "karras", "--no-peers", "--no-learned", "--nfe", "5"]


@pytest.mark.parametrize("extra, words", [
    (["--problem", "gm-ve", "gm-ve/"], ["--problem lists 'gm-ve' more than once"]),
    (["--schedules", "karras", "Karras"], ["--schedules lists 'karras' more than once"]),
    (["--samplers", "euler_ancestral"], ["'euler_ancestral' is not an ode sampler"]),
    (["--seed", "101"], ["--seed 101 is one of the default held-out seeds (101, with --quick)"]),
    (["--heldout-seeds", "--heldout-batch", "16"], ["--heldout-batch", "would have no effect"]),
])
def test_deterministic_refuses_before_any_cell(capsys, no_work, tmp_path, extra, words):
    refused(capsys, running.main, [*DET, *extra, "--out", str(tmp_path / "d")],
            *words)


# ---- an adaptive sampler named in a benchmark of NFE budgets: no step count moves it, so its cells were a one-step
# denoise [σ_max, 0] under its name (quality), or it was listed as not run with exit status 0 (deterministic)


@pytest.mark.parametrize("name", ["dpm_adaptive", "torchdiffeq.bosh3", "torchdiffeq.dopri5"])
def test_an_adaptive_sampler_named_is_refused_before_any_cell(capsys, no_work, tmp_path, name):
    refused(capsys, quality.main, ["--quick", "--no-peers", "--problem", "gm-ve", "--samplers", "euler", name,
                                   "--out", str(tmp_path / "q")],
            f"--samplers: {name!r} is adaptive", "cannot be held to an NFE budget", "leave it out")
    refused(capsys, running.main, [*DET, "--samplers", name, "euler", "--out", str(tmp_path / "d")],
            f"--samplers: {name!r} is adaptive", "cannot be held to an NFE budget", "leave it out")
    assert not (tmp_path / "q").exists() and not (tmp_path / "d").exists()


def test_the_default_sampler_lists_leave_the_adaptive_ones_out_saying_why():
    from types import SimpleNamespace

    from benchmarks import common

    names, skipped = running.Run.samplers(SimpleNamespace(args=SimpleNamespace(samplers=None)))
    assert "torchdiffeq.dopri5" not in names and "euler" in names and "torchdiffeq.rk4" in names
    assert "cannot be held to an NFE budget" in skipped["torchdiffeq.dopri5"] and "dpm_adaptive" in skipped
    assert not any(common.budget_refusal(n) for n in common.sampler_names(None))  # quality's default


# ---- learned_multistep without a solver file is Euler (every weight 0): quality ran it as a row of its own, equal
# to euler's, and bold where the two tied (six such rows in the committed quality_cpu_all table)


def test_a_sampler_that_runs_solver_files_is_refused_by_name_pointing_to_the_files_flag(capsys, no_work, tmp_path):
    refused(capsys, quality.main, ["--quick", "--no-peers", "--problem", "gm-ve", "--samplers", "euler",
                                   "learned_multistep", "--out", str(tmp_path / "q")],
            "--samplers: 'learned_multistep'", "without one is Euler", "--fitted FILE")
    refused(capsys, quality.main, ["--quick", "--no-peers", "--problem", "gm-ve", "--samplers", "bespoke_multistep",
                                   "--out", str(tmp_path / "q")], "'bespoke_multistep'", "--fitted FILE")  # an alias
    refused(capsys, running.main, [*DET, "--samplers", "learned_multistep", "--out", str(tmp_path / "d")],
            "--samplers: 'learned_multistep'", "without one is Euler", "--learned FOLDER")
    refused(capsys, speed.main, ["--samplers", "learned_multistep", "--out", str(tmp_path / "s")],
            "'learned_multistep'", "without one is Euler", "runs no solver files: leave it out")
    assert not any((tmp_path / d).exists() for d in ("q", "d", "s"))


def test_a_fitted_label_is_told_its_files_flag_first_not_a_sampler_name_refused_next(capsys, no_work, tmp_path):
    """A fitted:PATH label was refused as a label ("pass 'learned_multistep'"), and that name was then refused in
    turn ("pass its solver files with --fitted FILE"): the first refusal now gives the flag that runs the file."""
    fitted = "fitted:docs/benchmarks/fitted/eps/nfe4.json"
    for main, argv, flag in ((quality.main, ["--quick", "--no-peers", "--problem", "gm-ve"], "--fitted FILE"),
                             (running.main, DET, "--learned FOLDER"),
                             (speed.main, [], "this benchmark runs no solver files: leave it out")):
        line = refused(capsys, main, [*argv, "--samplers", fitted, "--out", str(tmp_path / "o")],
                       f"--samplers: {fitted!r} is a fitted solver file", flag)
        assert "pass 'learned_multistep'" not in line, line
    assert not (tmp_path / "o").exists()


def test_the_default_sampler_lists_leave_the_samplers_of_solver_files_out():
    from types import SimpleNamespace

    from benchmarks import common

    assert "learned_multistep" not in common.sampler_names(None)  # quality's default
    assert "learned_multistep" not in common.sampler_names(["all"], include_adaptive=True)
    names, skipped = running.Run.samplers(SimpleNamespace(args=SimpleNamespace(samplers=None)))
    assert "learned_multistep" not in names and "without one is Euler" in skipped["learned_multistep"]


def test_no_committed_quality_table_has_a_row_of_learned_multistep_without_its_solver():
    """quality_cpu_all's learned_multistep rows (each equal to euler's) were removed from its results.json and the
    table regenerated; a quality run's fitted solvers are rows named fitted:PATH."""
    for results in [*DOCS.glob("*/results.json"), *DOCS.glob("fitted/*/results.json")]:
        result = json.loads(results.read_text())
        if result.get("cells") and "sw_floor" in result:  # benchmarks.quality's results
            assert not [c for c in result["cells"] if c["sampler"] == "learned_multistep"], results


def test_a_cache_that_is_a_file_is_refused_while_the_arguments_are_read(capsys, no_work, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused(capsys, running.main, [*DET, "--cache", str(tmp_path / "afile"), "--out", str(tmp_path / "d")],
            "--cache", "is a file, not a folder")
    refused(capsys, quality.main, ["--quick", "--problem", "gm-ve", "--cache", str(tmp_path / "afile"),
                                   "--out", str(tmp_path / "q")], "--cache", "is a file, not a folder")


def test_quality_refuses_a_reference_tolerance_no_problem_reads(capsys, no_work, tmp_path):
    refused(capsys, quality.main, ["--quick", "--problem", "gm-ve", "--reference-tol", "0.5", "--out",
                                   str(tmp_path / "q")], "--reference-tol 0.5", "exact endpoint (no solve)")


def test_speed_times_the_cpu_once_whatever_it_is_called(capsys, no_work, tmp_path):
    refused(capsys, speed.main, ["--quick", "--devices", "cpu", "cpu:0", "--samplers", "euler", "--no-peers",
                                 "--out", str(tmp_path / "s")], "--devices lists 'cpu' more than once")


def test_an_out_file_in_a_missing_folder_is_refused_at_once(capsys, tmp_path):
    from benchmarks import compatibility

    # the plain table's --out is a file (with --exact a folder: benchmarks' folders are made as they are written)
    refused(capsys, compatibility.main, ["--out", str(tmp_path / "nodir" / "x.md")], "does not exist: create it")


def test_the_optimiser_checks_its_baselines_and_aliases_before_any_work(capsys, tmp_path):
    from samplers.schedules import optimise

    refused(capsys, optimise.main, ["--sampler", "euler", "sample_euler", "--nfe", "2", "--calibration", "2",
                                    "--held-out", "2"], "--sampler lists 'euler' more than once")
    refused(capsys, optimise.main, ["--sampler", "euler", "--nfe", "2", "--calibration", "1", "--held-out", "1",
                                    "--sigma-min", "1e-12"], "--sampler euler: schedule 'vp'")


def test_a_report_of_a_malformed_results_file_is_refused_not_a_traceback(capsys, tmp_path):
    from benchmarks import fit_heldout

    good = json.loads((DOCS / "fit_heldout" / "results.json").read_text())
    bad = tmp_path / "results.json"
    for row in good["rows"]:
        row["pair"]["rmse"] = 0.0
    bad.write_text(json.dumps(good))
    refused(capsys, fit_heldout.main, ["--report", str(bad)], "is not a results.json of this benchmark")


def test_vae_roundtrip_names_a_vae_folder_it_cannot_load(capsys, tmp_path):
    from benchmarks import vae_roundtrip

    (tmp_path / "afile").write_text("x")
    refused(capsys, vae_roundtrip.main, ["--vae", str(tmp_path / "afile"), "--n", "1", "--k", "1", "--out",
                                         str(tmp_path / "v")], "is a file, not a VAE folder")
    refused(capsys, vae_roundtrip.main, ["--vae", str(tmp_path / "none"), "--n", "1", "--k", "1", "--out",
                                         str(tmp_path / "v")], "--vae", "does not exist")


def test_adherence_names_a_weights_folder_it_cannot_load_as_vae_roundtrip_does(capsys, monkeypatch, tmp_path):
    from benchmarks import adherence

    monkeypatch.setattr(adherence, "run", _reached)  # refused while the pipeline loads, before any sample
    (tmp_path / "afile").write_text("x")
    refused(capsys, adherence.main, ["--weights", str(tmp_path / "afile"), "--n", "1"],
            "--weights", "afile", "is a file, not a U-Net folder")
    refused(capsys, adherence.main, ["--weights", str(tmp_path / "none"), "--n", "1"],
            "--weights", "none", "does not exist")


def test_the_deterministic_table_says_what_each_endpoint_is():
    from benchmarks.deterministic import reporting

    assert reporting._reference_line({}) == "RMSE to the exact PF-ODE endpoint from the same start"
    assert reporting._reference_line({"references": {"gm-ve": "exact"}}).startswith("RMSE to the exact")
    line = reporting._reference_line({"references": {"gm-ve": "exact", "mine": "dopri5 at rtol = atol = 1e-07"}})
    assert "exact, but for mine: a dopri5 at rtol = atol = 1e-07 solve" in line and "the exact" not in line


@pytest.mark.parametrize("module, given", [("quality", "--quic"), ("speed", "--devic"), ("stochastic", "--quic"),
                                           ("fit_heldout", "--nf"), ("deterministic.running", "--quic")])
def test_a_benchmark_refuses_an_abbreviated_option(capsys, module, given):
    # argparse reads a prefix of one option as that option (--quic as --quick): refused, as `samplers`' commands do
    import importlib

    parser = importlib.import_module(f"benchmarks.{module}").parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([given])
    assert exit_.value.code == 2 and f"unrecognized arguments: {given}" in capsys.readouterr().err


# ---- a misspelt --samplers name: refused as `samplers generate --sampler` refuses it, with the closest names (it
# was "'euler_ancestrl' is not an ancestral/sde sampler; valid: ..." in stochastic, "is not a sampler" in speed)


def test_a_misspelt_sampler_name_gets_the_closest_names(capsys, no_work, tmp_path, monkeypatch):
    from benchmarks import stochastic

    monkeypatch.setattr(stochastic, "benchmark", _reached)
    for main, argv in ((stochastic.main, []), (speed.main, []), (quality.main, ["--quick", "--problem", "gm-ve"])):
        line = refused(capsys, main, [*argv, "--samplers", "euler_ancestrl", "--out", str(tmp_path / "o")],
                       "--samplers: unknown sampler name 'euler_ancestrl'", "Closest: euler_ancestral")
        assert "is not a" not in line
    refused(capsys, speed.main, ["--samplers", "euler,heun", "--out", str(tmp_path / "o")], "One name per value")
    # a real sampler of another kind is still told so, by its registry name where another was typed
    refused(capsys, stochastic.main, ["--samplers", "k_euler", "--out", str(tmp_path / "o")],
            "'k_euler' is not an ancestral/sde sampler (it runs the registry's euler); valid: euler_ancestral")
    refused(capsys, stochastic.main, ["--samplers", "euler", "--out", str(tmp_path / "o")],
            "'euler' is not an ancestral/sde sampler")
    assert not (tmp_path / "o").exists()

"""Every command line's limits at its boundary: a value beyond what the machine or the pipeline can run (threads,
steps, NFE, batch sizes, counts) is refused while the arguments are parsed, in one line naming the value, the limit
and the fix (exit status 2), before any model is loaded or any cell runs. In-process, on tiny sizes only."""
from __future__ import annotations

import pytest

from benchmarks import (adherence, classifier, fit_bound, fit_heldout, learned_solvers, quality, speed, stochastic,
                        vae_roundtrip)
from benchmarks.deterministic import running
from models import train, train_vae
from samplers import cli
from samplers.core.argtypes import cores
from test_bench_cli_seams import no_work, refused  # noqa: F401 - no_work is a fixture

_THREADED = {"samplers demo": lambda a: cli.main(["demo", *a]), "samplers fit": lambda a: cli.main(["fit", *a]),
             "models.train": train.main, "models.train_vae": train_vae.main,
             "benchmarks.deterministic": running.main, "benchmarks.quality": quality.main,
             "benchmarks.speed": speed.main, "benchmarks.stochastic": stochastic.main,
             "benchmarks.adherence": adherence.main, "benchmarks.vae_roundtrip": vae_roundtrip.main,
             "benchmarks.learned_solvers": learned_solvers.main,
             "benchmarks.classifier": lambda a: classifier.main(["train", *a]),
             "benchmarks.fit_heldout": fit_heldout.main, "benchmarks.fit_bound": fit_bound.main}


@pytest.mark.parametrize("command", sorted(_THREADED))
@pytest.mark.parametrize("value", ["1000000000", "more"])
@pytest.mark.usefixtures("no_work")
def test_threads_above_the_cores_are_refused_at_parse_time(capsys, command, value):
    """`--threads 1000000000` aborted the process in libgomp ("Out of memory allocating 216000001344 bytes"), with
    no line naming the option: every --threads is now at most the cores this process may run on."""
    value = str(cores() + 1) if value == "more" else value
    refused(capsys, _THREADED[command], ["--threads", value], "--threads", value, f"from 1 to {cores()}")


@pytest.mark.parametrize("flag", ["--threads", "--encode-threads"])
def test_train_encode_threads_is_bounded_too(capsys, flag):
    refused(capsys, train.main, [flag, str(cores() + 1)], flag, f"from 1 to {cores()}")


# ---- steps beyond the pipeline's step limit (models.pipeline.MAX_STEPS)


@pytest.mark.parametrize("argv, flag", [(["--steps", "1", "1000000000"], "--steps"),
                                        (["--steps", "10", "100000000"], "--steps"),
                                        (["--problem", "gm-vp-eps", "--problem-steps", "1000000000"],
                                         "--problem-steps")])
@pytest.mark.usefixtures("no_work")
def test_speed_steps_beyond_the_step_limit_are_refused(capsys, monkeypatch, argv, flag):
    """`benchmarks.speed --steps 1 1000000000` failed mid-run with a LimitExceeded traceback (a 60 GiB schedule),
    and 10**8 ran for days: both step options now stop at the pipeline's step limit, at parse time."""
    from models.pipeline import MAX_STEPS

    monkeypatch.setattr(speed, "problem_table", lambda *a, **k: pytest.fail("reached the problem runs"))
    refused(capsys, speed.main, argv, flag, argv[-1], f"more than {MAX_STEPS}", "step limit")


# ---- the benchmarks' NFE budgets and batch sizes


@pytest.mark.parametrize("main, extra", [(running.main, ["--no-peers", "--no-learned"]), (running.main, []),
                                         (quality.main, ["--no-peers"])])
@pytest.mark.usefixtures("no_work")
def test_nfe_beyond_the_step_limit_is_refused(capsys, main, extra):
    """`benchmarks.deterministic --nfe 1000000000` hung in diffusers' Karras sigmas (with --no-peers it exited 0, every
    cell '–'); `benchmarks.quality --nfe 1000000000` exited 0 listing cells not run: a budget is now at most the
    pipeline's step limit, refused at parse time."""
    from models.pipeline import MAX_STEPS

    refused(capsys, main, ["--problem", "gm-vp-eps", "--nfe", "5", "1000000000", *extra], "--nfe", "1000000000",
            f"more than {MAX_STEPS}", "step limit")


@pytest.mark.parametrize("main, flag", [(running.main, "--batch"), (running.main, "--heldout-batch"),
                                        (quality.main, "--batch")])
@pytest.mark.usefixtures("no_work")
def test_batch_beyond_the_memory_is_refused_before_any_cell(capsys, main, flag):
    """`--batch 1000000000` / `--heldout-batch 1000000000` grew memory without an error (common.item_seeds built a
    list of 10**9 seeds): the items a cell holds are checked against free memory before any cell runs."""
    extra = ["--no-learned", "--no-cache", "--heldout-seeds", "1"] if main is running.main else ["--no-cache"]
    refused(capsys, main, ["--problem", "gm-vp-eps", "--no-peers", "--nfe", "5", flag, "1000000000", *extra],
            f"{flag} 1000000000", "gm-vp-eps", "GiB", f"pass a smaller {flag}")


@pytest.mark.usefixtures("no_work")
def test_fit_heldout_batch_beyond_the_memory_is_refused(capsys, tmp_path):
    refused(capsys, fit_heldout.main, ["--heldout-batch", "1000000000", "--heldout-seeds", "101",
                                       "--out", str(tmp_path / "o")],
            "--heldout-batch 1000000000", "GiB", "pass a smaller --heldout-batch")


# ---- benchmarks.adherence: the request checked as `samplers generate` checks it, before the weights are loaded


@pytest.mark.parametrize("argv, words", [
    (["--steps", "100000"], ["--steps", "100000", "step limit"]),
    (["--model", "flow", "--schedule", "karras"], ["karras", "finite sigma_max", "flow"]),
    (["--n", "1000000000"], ["--n", "1000000000", "more than 4096"]),
    (["--model", "eps", "--sampler", "euler", "--steps", "20000"], ["--steps", "20000"])])
@pytest.mark.usefixtures("no_work")
def test_adherence_checks_the_request_before_loading_the_model(capsys, argv, words):
    """`benchmarks.adherence --steps 100000` loaded the model, then failed with a LimitExceeded traceback; `--model
    flow --schedule karras` with an InvalidInput traceback after loading; `--n 1000000000` hung drawing captions:
    each is a one-line usage error now, before any weight is read (load_pipeline fails the test if reached)."""
    refused(capsys, adherence.main, argv, *words)


# ---- benchmarks.vae_roundtrip: sizes and --vae checked before the weights are loaded


@pytest.mark.parametrize("argv, words", [
    (["--n", "1000000000"], ["--n 1000000000", "GiB", "pass a smaller --n"]),
    (["--k", "1000000000", "--n", "2"], ["--k", "1000000000", "more than 10000"]),
    (["--vae", ""], ["--vae", "empty path"])])
@pytest.mark.usefixtures("no_work")
def test_vae_roundtrip_sizes_and_vae_are_checked_first(capsys, argv, words):
    """`--n 1000000000` was an allocation RuntimeError traceback, `--k 1000000000 --n 2` ran forever, `--vae ''`
    silently read the current folder: each is refused before VAE.load (which fails the test if reached)."""
    refused(capsys, vae_roundtrip.main, argv, *words)


@pytest.mark.parametrize("n", ["1", "5"])
@pytest.mark.usefixtures("no_work")
def test_stochastic_refuses_fewer_samples_than_clusters(capsys, n):
    """`benchmarks.stochastic --samples 1` reported distances between single points as if they compared the
    samplers' distributions (its floor, two exact sets, 1.4: as large as any sampler's): a cell needs at least one
    sample per cluster of the mixture."""
    assert stochastic.min_samples() == 6
    refused(capsys, stochastic.main, ["--samples", n], "--samples", n, "6 clusters", "--samples 6 or more")


# ---- benchmarks.learned_solvers: errors name the flag, not FitConfig's field


@pytest.mark.parametrize("argv, words", [
    (["--iters", "-1"], ["--iters", "-1", ">= 0"]),
    (["--lr", "nan"], ["--lr", "nan", "finite number > 0"]),
    (["--lr", "0"], ["--lr", "0"]),
    (["--batch", "0"], ["--batch", "0"]),
    (["--starts", "0"], ["--starts", "0"]),
    (["--pool", "-1"], ["--pool", "-1"]),
    (["--history", "-1"], ["--history", "-1"]),
    (["--check", "-2"], ["--check", "-2"]),
    (["--nfe", "1"], ["--nfe", "from 2 to 100"]),
    (["--nfe", "5", "1000"], ["--nfe", "1000", "more than 100"]),
    (["--recheck", ""], ["--recheck", "empty path"])])
@pytest.mark.usefixtures("no_work")
def test_learned_solvers_errors_name_the_flag(capsys, tmp_path, argv, words):
    """Plain int / float options left the checks to FitConfig, whose errors read `FitConfig.iters must be ...`, or
    `FitConfig.lr must be a number, got nan`, naming no flag of the command: each is now refused by the flag."""
    line = refused(capsys, learned_solvers.main, [*argv, "--out", str(tmp_path / "o")], *words)
    assert "FitConfig." not in line


def test_learned_solvers_history_0_is_documented(capsys):
    """--history 0 is a fit of the nodes and of the weights its starting sampler uses only (Params.of's mask):
    accepted, and --help says so."""
    with pytest.raises(SystemExit):
        learned_solvers.main(["--help"])
    assert "0: only those its starting sampler weighs" in " ".join(capsys.readouterr().out.split())

"""`samplers fit` resuming into an --out: what --restart clears, what a model without a fingerprint may reuse, and
a fit the time budget cut short."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import cli_last_wins as main  # a base command line's options overridden by repeating them
from samplers.fitted.solver import LearnedSolver


QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "2", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


def argv(out: Path, *extra: str, model: str = "gm-ve") -> list[str]:
    return ["fit", "--model", model, "--nfe", "3", "--out", str(out), *QUICK, *extra]


def test_restart_clears_the_saved_state_of_every_start(tmp_path, capsys):
    out = tmp_path / "fit"
    two = ["--starts", "2"]  # after QUICK's --starts 1: the last one given counts (last_wins)
    assert main([*argv(out), *two]) == 0
    second = out / ".work" / "state-nfe3.start2.pt"
    assert second.exists()
    second.write_bytes(second.read_bytes()[:100])  # cut short: refused, and its fix is --restart
    (out / "nfe3.json").unlink()
    assert main([*argv(out), *two]) == 2
    assert f"the fit's saved state {second}" in capsys.readouterr().err
    assert main([*argv(out), *two, "--restart"]) == 0
    assert LearnedSolver.load(out / "nfe3.json").meta["fitted_from_pairs"] == 2


PROBLEM = '''
from benchmarks.common import get_problem, Problem

_base = get_problem("gm-ve")


def _like_gm_ve(denoiser):
    return Problem(name="plain-model", denoiser=denoiser, native=_base.native, shape=_base.shape,
                   sigma_min=_base.sigma_min, sigma_max=_base.sigma_max, dtype=_base.dtype, description="a test model")


def plain():
    def denoiser(x, sigma, **kw):
        return _base.denoiser(x, sigma, **kw)
    return _like_gm_ve(denoiser)


def named():
    def denoiser(x, sigma, **kw):
        return _base.denoiser(x, sigma, **kw)
    denoiser.samplers_fingerprint = "plain-model v1"
    return _like_gm_ve(denoiser)
'''


@pytest.fixture
def problem_module(tmp_path, monkeypatch):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "fit_resume_problem.py").write_text(PROBLEM)
    monkeypatch.syspath_prepend(str(folder))
    return "fit_resume_problem"


def test_a_model_without_a_fingerprint_never_resumes_into_an_existing_out(tmp_path, capsys, problem_module):
    out = tmp_path / "fit"
    plain = argv(out, model=f"{problem_module}:plain")
    assert main(plain) == 0
    printed = capsys.readouterr().out
    assert "plain-model has no fingerprint" in printed and "cannot check the model they run on" in printed
    assert LearnedSolver.load(out / "nfe3.json").model["fingerprint"] is None
    # the same name may be another model now: its fits are not kept, its cached endpoints not reused
    for extra, words in (((), "choose a new --out, or pass --restart"), (("--nfe", "3", "4"), "nfe3.json"),
                         (("--rescore",), "--rescore: plain-model has no fingerprint")):
        assert main([*plain, *extra]) == 2
        err = capsys.readouterr().err
        assert "has no fingerprint" in err and words in err and "samplers_fingerprint" in err
    interrupted = tmp_path / "interrupted"  # cached endpoints alone (a first run cut short) are not reused either
    (interrupted / ".work").mkdir(parents=True)
    shutil.copy(next((out / ".work").glob("reference-calibration-*.pt")), interrupted / ".work")
    assert main(argv(interrupted, model=f"{problem_module}:plain")) == 2
    assert "1 cached file(s) under .work" in capsys.readouterr().err
    cached = {p.name: p.stat().st_mtime_ns for p in (out / ".work").iterdir()}
    assert main([*plain, "--restart"]) == 0
    assert "--restart: plain-model has no fingerprint; deleting" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != cached.get(p.name) for p in (out / ".work").iterdir())  # solved again
    # a denoiser that names itself (samplers_fingerprint) has an identity: it resumes
    named = argv(tmp_path / "named", model=f"{problem_module}:named")
    assert main(named) == 0 and "no fingerprint" not in capsys.readouterr().out
    assert main(named) == 0 and "already fitted" in capsys.readouterr().out


class StepClock:
    """A clock for app.fit and the fitting code that reads one second per optimisation step taken: the time budget
    stops a fit at a step known in advance, however fast the machine."""

    def __init__(self, monkeypatch):
        import time as real

        from app import fit as fit_cli
        from samplers.fitted import fitting

        self.steps, self.real = 0, real
        objective = fitting.objective

        def counted(*a, **k):
            self.steps += 1
            return objective(*a, **k)

        monkeypatch.setattr(fitting, "objective", counted)
        monkeypatch.setattr(fitting, "time", self)
        monkeypatch.setattr(fit_cli, "time", self)

    def monotonic(self) -> float:
        return float(self.steps)


def test_a_fit_the_budget_stopped_says_so_and_a_rerun_continues_it(tmp_path, capsys, monkeypatch):
    out, whole = tmp_path / "cut", tmp_path / "whole"
    longer = ["--iters", "30", "--starts", "2"]
    with monkeypatch.context() as m:
        StepClock(m)
        assert main([*argv(out), *longer, "--time-budget", "7"]) == 0
    printed = capsys.readouterr().out
    stops = [{"start": 1, "starts": 2, "iteration": 8, "iters": 30}, {"start": 2, "starts": 2, "iteration": 0,
                                                                      "iters": 30}]
    assert LearnedSolver.load(out / "nfe3.json").meta["stopped_at_budget"] == stops
    report = json.loads((out / "report.json").read_text())
    assert report["setting"]["time_budget"] == 7 and report["rows"]["3"]["stopped_at_budget"] == stops
    assert ("NFE 3: stopped at the time budget (7 s for this NFE): the optimisation of start 1 of 2 at step 8 of 30; "
            "start 2 of 2 at step 0 of 30; run again into this --out (without --restart) to continue it") in printed
    # run again (no budget): not "already fitted" — it continues from step 8 and ends where an uncut fit does
    assert main([*argv(out), *longer, "--verbose"]) == 0
    printed = capsys.readouterr().out
    assert "NFE 3: continuing the fit the time budget stopped" in printed and "resumed at iteration 8" in printed
    assert "already fitted" not in printed and "stopped at the time budget" not in printed
    assert main([*argv(whole), *longer]) == 0
    mine, uncut = LearnedSolver.load(out / "nfe3.json"), LearnedSolver.load(whole / "nfe3.json")
    assert "stopped_at_budget" not in mine.meta and "stopped_at_budget" not in json.loads(
        (out / "report.json").read_text())["rows"]["3"]
    assert (mine.sigmas, mine.eps_weights, mine.denoised_weights, mine.model_sigmas) == (
        uncut.sigmas, uncut.eps_weights, uncut.denoised_weights, uncut.model_sigmas)
    capsys.readouterr()
    assert main([*argv(out), *longer]) == 0 and "already fitted" in capsys.readouterr().out


class JumpingClock:
    """A clock for app.fit and the fitting code on which 1000 s pass between any two readings: a time budget runs out
    before the first optimisation step."""

    def __init__(self, monkeypatch):
        from app import fit as fit_cli
        from samplers.fitted import fitting

        self.readings = 0
        monkeypatch.setattr(fitting, "time", self)
        monkeypatch.setattr(fit_cli, "time", self)

    def monotonic(self) -> float:
        self.readings += 1
        return 1000.0 * self.readings


def test_a_fit_the_budget_stopped_before_any_step_is_not_called_rejected(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        JumpingClock(m)
        assert main([*argv(out), "--iters", "30", "--starts", "2", "--time-budget", "1"]) == 0
    printed = capsys.readouterr().out
    stops = json.loads((out / "report.json").read_text())["rows"]["3"]["stopped_at_budget"]
    assert [d["iteration"] for d in stops] == [0, 0], stops
    assert "before any step (the held-out figures are the starting pair's)" in printed
    assert "(stopped by --time-budget before any step: the solver is the starting pair itself)" in printed
    assert "rejected on the validation starts" not in printed, printed

"""`samplers fit` resuming into an --out: what --restart clears, what a model without a fingerprint may reuse, and
a fit the time budget cut short."""
import json
import shutil
from pathlib import Path

import pytest

from samplers.cli import main
from samplers.fitted.solver import LearnedSolver

QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "2", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


def argv(out: Path, *extra: str, model: str = "gm-ve") -> list[str]:
    return ["fit", "--model", model, "--nfe", "3", "--out", str(out), *QUICK, *extra]


def test_restart_clears_the_saved_state_of_every_start(tmp_path, capsys):
    out = tmp_path / "fit"
    two = ["--starts", "2"]  # after QUICK's --starts 1: the last one given counts
    assert main([*argv(out), *two]) == 0
    second = out / ".work" / "state-nfe3.start2.pt"
    assert second.exists()
    second.write_bytes(second.read_bytes()[:100])  # cut short: refused, and its fix is --restart
    (out / "nfe3.json").unlink()
    assert main([*argv(out), *two]) == 2
    assert f"the fit's saved state {second}" in capsys.readouterr().err
    assert main([*argv(out), *two, "--restart"]) == 0
    assert LearnedSolver.load(out / "nfe3.json").meta["fitted_from_pairs"] == 2

"""Benchmarks run from any current folder, record a modified working tree as such, and say their defaults:
the shipped folders a default names are found from the repo, not the current folder; ``info.commit`` ends in
``-dirty`` when tracked files differ from HEAD; the --help of adherence, vae_roundtrip and classifier names each
default."""
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import adherence, classifier, common, fit_heldout, vae_roundtrip
from benchmarks.deterministic import reporting, running as deterministic

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "docs" / "benchmarks" / "deterministic" / "learned"


def test_deterministic_finds_its_shipped_fits_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = deterministic.parser()
    args = p.parse_args(["--quick"])
    deterministic.check_args(p, args)  # refused with "is not a folder" (exit 2) when the default was cwd-relative
    args = deterministic.resolve_args(args)
    assert Path(args.learned).resolve() == SHIPPED
    assert deterministic.learned_files(args.learned, "gm-ve", 5)


def test_deterministic_records_the_shipped_folder_as_in_the_repo(tmp_path, monkeypatch):
    """A results.json names the shipped folder repo-relative (no machine's path), and a command rebuilt from such a
    record leaves it out: it is the default."""
    monkeypatch.chdir(tmp_path)
    args = deterministic.resolve_args(deterministic.parser().parse_args(["--quick", "--no-peers"]))
    recorded = deterministic.recorded_args(args)
    assert recorded["learned"] == "docs/benchmarks/deterministic/learned"
    result = {"args": recorded}
    command = common.command_from_args(reporting.MODULE, deterministic.parser(), recorded,
                                       deterministic.resolved_defaults(result))
    assert "--learned" not in command and "--no-peers" in command


def test_fit_heldout_finds_its_shipped_fits_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = fit_heldout.parser().parse_args([])
    assert Path(args.learned).resolve() == SHIPPED
    assert fit_heldout.solvers_in(args.learned)
    assert common.recorded_path(args.learned) == "docs/benchmarks/deterministic/learned"


def test_recorded_path_leaves_other_paths_as_given(tmp_path):
    assert common.recorded_path(tmp_path / "fits") == str(tmp_path / "fits")
    assert common.recorded_path(Path("out/fits")) == "out/fits"


def _git(folder, *words):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *words], cwd=folder, check=True,
                   capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_says_when_the_tree_is_modified(tmp_path):
    assert common._git_commit(tmp_path) is None  # not a repository: no commit to record
    _git(tmp_path, "init", "-q")
    assert common._git_commit(tmp_path) is None  # a repository without a commit
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "a")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert common._git_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files do not change what ran\n")
    assert common._git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert common._git_commit(tmp_path) == head + "-dirty"


def test_git_commit_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the path
    assert common._git_commit(tmp_path) is None


def _help(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_names_the_defaults(capsys):
    text = _help(adherence.main, [], capsys)
    assert "default 200" in text
    assert "--schedule SCHEDULE" in text and "default: the model's default schedule" in text
    text = " ".join(vae_roundtrip.parser().format_help().split())
    assert "default 1000" in text and "default 100" in text
    text = _help(classifier.main, ["train"], capsys)
    assert "default 12800" in text and f"a multiple of the batch of {classifier.BATCH}" in text and "default 8" in text
    text = _help(classifier.main, ["eval"], capsys)
    assert "1024" in text and str(classifier.EVAL_SEED) in text

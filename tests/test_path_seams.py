"""Paths at the seams of the command lines and `samplers fit`: an empty path is refused (never read as the current
folder), a file given for a folder is named as a file, a diffusers folder's scheduler config and UNet files are
checked before the UNet is built or called (safetensors only: a pickle is never loaded), a scheduler config diffusers
rejects is refused before anything is fitted, and report.json's solver paths are the report's own folder's."""
import json
import shutil

import pytest

from samplers.cli import main

QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "0", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


# ------------------------------------------------------------------------------------------------ empty paths


def test_an_empty_path_is_refused_naming_the_flag_and_nothing_is_written_in_the_current_folder(
        tmp_path, monkeypatch, capsys):
    import argparse

    from samplers.core.argtypes import out_file, out_folder

    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    for parse in (out_folder, out_file):
        with pytest.raises(argparse.ArgumentTypeError, match="empty path"):
            parse("")
    for argv, flag in ((["demo", "--out", ""], "--out"),
                       (["generate", "a red circle", "--weights", "", "--out", "x.png"], "--weights"),
                       (["generate", "a red circle", "--vae", "", "--out", "x.png"], "--vae"),
                       (["generate", "a red circle", "--out", ""], "--out"),
                       (["compare", "a red circle", "--out", ""], "--out"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "", *QUICK], "--out"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "o", "--prompt-embeds", "", *QUICK],
                        "--prompt-embeds"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "o", "--scheduler-config", "", *QUICK],
                        "--scheduler-config")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"argument {flag}: '' is an empty path" in err, (argv, err)
    assert main(["fit", "--model", "", "--nfe", "2", "--out", "o", *QUICK]) == 2
    assert "--model '' is an empty path" in capsys.readouterr().err
    assert list(here.iterdir()) == []


# ------------------------------------------------------------------------------------- a file for a folder


def test_a_file_given_for_a_weights_or_vae_folder_is_named_a_file(tmp_path, capsys):
    from models.pipeline import Pipeline, PipelineSpec
    from samplers.core.errors import InvalidInput

    afile = tmp_path / "weights.txt"
    afile.write_text("x")
    for flag in ("--weights", "--vae"):
        code = main(["generate", "a red circle", flag, str(afile), "--out", str(tmp_path / "o.png")])
        err = capsys.readouterr().err
        kind = "U-Net" if flag == "--weights" else "VAE"
        assert code == 2 and f"{str(afile)!r} is a file, not a {kind} folder" in err and "does not exist" not in err
    for call in (lambda: Pipeline.load(afile), lambda: PipelineSpec.read(vae=afile), lambda: Pipeline.load("")):
        with pytest.raises(InvalidInput, match="is a file, not a|empty path"):
            call()
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------------- report.json


def test_the_reported_solver_path_is_the_reports_own_folders(tmp_path, capsys):
    first = tmp_path / "first"
    argv = ["fit", "--model", "gm-ve", "--nfe", "2", "--out", str(first), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    argv[6] = str(moved)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"→ {moved / 'nfe2.json'}" in printed and str(first) not in printed, printed
    report = json.loads((moved / "report.json").read_text())
    assert report["rows"]["2"]["file"] == str(moved / "nfe2.json")
    report["rows"]["2"]["file"] = "/etc/passwd"
    (moved / "report.json").write_text(json.dumps(report))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "row 2 has no valid file (its file is '/etc/passwd'" in err and "nfe2.json" in err, err

"""Files the project reads: a bad one (not a regular file, too large, JSON Python will not read, the wrong content)
is refused with the project's error naming the path and the fix, before any model is built or called."""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

import samplers
from samplers.core.files import read_json

DEEP = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
BIGINT = '{"a": ' + "9" * 5000 + "}"


def _fifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)
    return path


def _refused_at_once(fifo: Path, call, error=samplers.InvalidInput) -> str:
    """The message ``call()`` raises, which must come at once: were ``fifo`` opened for reading, it would wait for a
    writer forever (a writer is opened here after 10 s, so a failing test ends)."""
    result = {}

    def run():
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(10)
        pytest.fail(f"reading {fifo} waited for a writer")
    assert isinstance(result.get("error"), error), result
    return str(result["error"])


# ----------------------------------------------------------------------------------------- read_json


def test_read_json_refuses_every_bad_file_naming_it(tmp_path):
    cases = {"deep.json": (DEEP, "nests deeper than Python reads"),
             "bigint.json": (BIGINT, "holds a value Python will not read"),
             "latin.json": (b'{"a": "\xff"}', "not UTF-8 text"),
             "trunc.json": ('{"a": [1', "not valid JSON"),
             "twice.json": ('{"a": 1, "a": 2}', "'a' appears more than once")}
    for name, (body, words) in cases.items():
        path = tmp_path / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        with pytest.raises(samplers.InvalidInput, match=f"{name} is not a thing: .*{words}.*make another"):
            read_json(path, "a thing", "make another")
    with pytest.raises(samplers.InvalidInput, match="is a folder, not a thing; make another"):
        read_json(tmp_path, "a thing", "make another")
    with pytest.raises(samplers.InvalidInput, match="none.json cannot be read .*make another"):
        read_json(tmp_path / "none.json", "a thing", "make another")
    (tmp_path / "big.json").write_text("[" + "0," * 100 + "0]")
    with pytest.raises(samplers.InvalidInput, match="big.json is larger than 100 bytes, .* \\(a reason\\)"):
        read_json(tmp_path / "big.json", "a thing", "make another", limit=100, why="a reason")
    assert read_json(tmp_path / "big.json", "a thing", "make another") == [0] * 101


def test_read_json_refuses_a_fifo_and_a_device_without_waiting(tmp_path):
    fifo = _fifo(tmp_path / "fifo.json")  # no writer: opening it to read would wait forever
    assert re.search("fifo.json is not a regular file .*make another",
                     _refused_at_once(fifo, lambda: read_json(fifo, "a thing", "make another")))
    if Path("/dev/zero").exists():  # a read that never ends
        with pytest.raises(samplers.InvalidInput, match="/dev/zero is not a regular file .*make another"):
            read_json("/dev/zero", "a thing", "make another")


# ------------------------------------------------------------------------------------- fitted solvers


def _solver_file(tmp_path: Path, **extra) -> Path:
    from samplers.fitted.solver import LearnedSolver

    path = LearnedSolver([3.0, 1.0, 0.0], [[], [0.0]], [[], [0.0]]).save(tmp_path / "s.json")
    if extra:
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    return path


def test_a_solver_path_that_is_no_regular_file_is_refused_not_read(tmp_path):
    from samplers.fitted.solver import LearnedSolver

    fifo = _fifo(tmp_path / "fifo.json")
    assert re.search("fifo.json is not a regular file .*samplers fit", _refused_at_once(fifo, lambda: LearnedSolver.load(fifo)))
    assert "fifo.json is not a regular file" in _refused_at_once(fifo, lambda: samplers.get(f"fitted:{fifo}"))
    with pytest.raises(samplers.InvalidInput, match="/dev/zero is not a regular file"):
        LearnedSolver.load("/dev/zero")


def test_a_solver_file_is_read_up_to_its_bound(tmp_path, monkeypatch):
    from samplers.fitted import solver as so

    path = _solver_file(tmp_path)
    assert so.LearnedSolver.load(path).steps == 2
    monkeypatch.setattr(so, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(samplers.InvalidInput, match=r"s.json is larger than .* bytes, .*23·n² bytes"):
        so.LearnedSolver.load(path)


def test_a_solver_file_with_an_extra_field_names_it_and_the_fix(tmp_path):
    from samplers.fitted.solver import LearnedSolver

    with pytest.raises(samplers.InvalidInput, match=r"unexpected fields \['colour'\].*remove them, or re-create it"):
        LearnedSolver.load(_solver_file(tmp_path, colour="red"))


# ------------------------------------------------------------------------------------ optimised schedules


def test_an_optimised_schedule_path_that_is_no_regular_file_is_refused_not_read(tmp_path):
    from samplers.schedules.optimise import OptimisedSchedule

    fifo = _fifo(tmp_path / "fifo.json")
    assert re.search("fifo.json is not a regular file .*OptimisedSchedule.save",
                     _refused_at_once(fifo, lambda: OptimisedSchedule.load(fifo)))
    (tmp_path / "deep.json").write_text(DEEP)
    with pytest.raises(samplers.InvalidInput, match="deep.json is not a readable schedule file: its JSON nests deeper"):
        OptimisedSchedule.load(tmp_path / "deep.json")


# --------------------------------------------------------------------------------- model folders (models.io)

ROOT = Path(__file__).resolve().parents[1]


def _weights(tmp_path: Path, kind: str = "vae", **fields) -> Path:
    """A copy of a shipped model's folder, with ``fields`` set in its config (the weights' hash still matches)."""
    folder = tmp_path / kind
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((ROOT / "models" / "weights" / kind / name).read_bytes())
    if fields:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **fields}))
    return folder


@pytest.mark.parametrize("text, words", [(DEEP, "nests deeper than Python reads"),
                                         ('{"type": "VAE", "groups": ' + "9" * 5000 + "}",
                                          "holds a value Python will not read")])
def test_a_config_python_will_not_read_is_a_corrupt_model_error_naming_it(tmp_path, text, words):
    from models import io as mio

    folder = _weights(tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(mio.CorruptModelError, match=f"config.json is not a model config .*{words}.*python -m models"):
        mio.load_config(folder)


def test_a_config_or_weights_path_that_is_no_regular_file_is_named_as_such(tmp_path):
    from models import io as mio

    folder = _weights(tmp_path)
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(mio.CorruptModelError, match="config.json is a folder, not a model config"):
        mio.load_config(folder)
    (folder / "config.json").rmdir()
    fifo = _fifo(folder / "config.json")
    assert "config.json is not a regular file" in _refused_at_once(fifo, lambda: mio.load_config(folder),
                                                                     mio.CorruptModelError)


def test_the_cli_refuses_a_config_python_will_not_read_with_exit_2(tmp_path, capsys):
    from samplers.cli import main

    folder = _weights(tmp_path, "eps")
    (folder / "config.json").write_text('{"type": "TextUNet", "groups": ' + "9" * 5000 + "}")
    assert main(["generate", "a red circle", "--weights", str(folder), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "config.json is not a model config" in err and "--debug" not in err, err


@pytest.mark.parametrize("kind, field, value, words", [
    ("eps", "time_dim", 2**40, r"field 'time_dim' \(1099511627776\) exceeds every tensor in .*model.safetensors"),
    ("eps", "time_dim", 2**12,
     r"shape mismatches unet.time_embed.*the sizes come from its field 'time_dim' \(4096; the weights fit 256\)"),
    ("eps", "res_blocks", 10**6, r"more than .* parameter tensors, .*: check its field 'res_blocks' \(1000000\)"),
    ("vae", "channels", [32] * 20_000, r"more than .* parameter tensors, .*: check its field 'channels'"),
])
def test_config_sizes_are_checked_against_the_weights_before_the_module_is_built(tmp_path, kind, field, value, words):
    from models import io as mio
    from models.unet import DiffusionModel
    from models.vae import VAE

    folder = _weights(tmp_path, kind, **{field: value})
    with pytest.raises(mio.ConfigMismatchError, match=f"{re.escape(str(folder))}.*{words}.*re-save the model"):
        (DiffusionModel if kind == "eps" else VAE).load(folder)


# --------------------------------------------------------------------------------------- benchmark reports


@pytest.mark.parametrize("name, text, words", [("deep.json", DEEP, "nests deeper than Python reads"),
                                               ("bigint.json", BIGINT, "holds a value Python will not read")])
def test_a_report_python_will_not_read_is_a_usage_error_naming_it(tmp_path, capsys, name, text, words):
    from benchmarks import vae_roundtrip

    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exit:
        vae_roundtrip.main(["--report", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"--report {tmp_path / name} is not a results.json: it" in err and words in err
    assert not (tmp_path / "table.md").exists()


# ------------------------------------------------------------------------------------ checkpoints, --resume


def test_load_checkpoint_refuses_a_folder_and_what_is_not_a_dict(tmp_path):
    import torch

    from models import io as mio

    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(mio.CorruptModelError, match="dir.pt is a folder, not the checkpoint.*delete it"):
        mio.load_checkpoint(tmp_path / "dir.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(mio.CorruptModelError, match="list.pt holds a list, not the dict .*delete it"):
        mio.load_checkpoint(tmp_path / "list.pt")


def _bad_checkpoints(path: Path):
    """(plant a bad checkpoint at ``path``, what the refusal says) pairs."""
    import torch

    def folder():
        path.mkdir(parents=True)

    return [(lambda: torch.save({"step": 3}, path), "has no 'config'"),
            (lambda: torch.save([1, 2], path), "holds a list"),
            (lambda: torch.save({"config": {}, "seed": 0, "args": {}, "model": [], "ema": {}, "optimizer": {},
                                 "step": "3"}, path), "'model' is a list"),
            (folder, "is a folder")]


def _planted(path: Path, plant):
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    plant()


def _refuses_each_bad_checkpoint(module, prog: str, argv: list, path, capsys) -> None:
    """Each of _bad_checkpoints planted at ``path``: ``module._main`` raises the file's error, and the command
    (``module.main``) ends with one line naming it, exit 2, no traceback."""
    from models import io as mio

    for plant, words in _bad_checkpoints(path):
        _planted(path, plant)
        with pytest.raises(mio.CorruptModelError, match=f"checkpoint.pt .*{words}.*start afresh without --resume, "
                                                        "or delete"):
            module._main(argv)
        assert module.main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(f"^python -m {prog}: error: .*checkpoint.pt .*{words}", err, re.M), err
        assert "Traceback" not in err


def test_train_resume_refuses_a_checkpoint_it_did_not_write(tmp_path, capsys):
    from models import train

    work = tmp_path / "work"
    path = work / "train_eps" / "checkpoint.pt"
    argv = ["eps", "--out", str(tmp_path / "out"), "--work", str(work), "--n-scenes", "2", "--channels", "16",
            "--steps", "1", "--batch-size", "2", "--threads", "1", "--resume"]
    _refuses_each_bad_checkpoint(train, "models.train", argv, path, capsys)
    assert not (tmp_path / "out").exists()
    assert not (work / "latents").exists()  # refused before the data set is encoded


def test_train_vae_resume_refuses_a_checkpoint_it_did_not_write(tmp_path, capsys):
    from models import train_vae

    out = tmp_path / "vae"
    argv = ["--out", str(out), "--steps", "1", "--batch-size", "2", "--channels", "8,8,8", "--threads", "1",
            "--scale-samples", "8", "--eval-samples", "4", "--resume"]
    _refuses_each_bad_checkpoint(train_vae, "models.train_vae", argv, out / "checkpoint.pt", capsys)
    assert not (out / "model.safetensors").exists()


# ---------------------------------------------------------------------------------- benchmark reference cache


def test_a_cached_reference_that_does_not_fit_the_starts_is_refused(tmp_path):
    import torch

    from benchmarks.common import ReferenceCache, get_problem, save_tensor

    problem = get_problem("gm-ve")
    x = problem.noise(4, 0) * 80.0
    cache = ReferenceCache(tmp_path)
    path = cache.path(cache.key(problem, 0, x, 80.0))
    for planted, words in ((torch.zeros(1, *x.shape[1:], dtype=x.dtype), r"shape \[1, 4, 4, 4\]"),
                           (torch.zeros(x.shape, dtype=torch.int64), "dtype torch.int64"),
                           (torch.full(x.shape, float("nan"), dtype=x.dtype), "256 NaN or infinite")):
        save_tensor(path, planted)
        with pytest.raises(samplers.InvalidInput, match=f"{re.escape(path.name)}.* {words}.*Delete it to recompute"):
            ReferenceCache(tmp_path).get(problem, 0, x, 80.0)


def _cache_path(tmp_path):
    from benchmarks.common import ReferenceCache, get_problem

    problem = get_problem("gm-ve")
    x = problem.noise(4, 0) * 80.0
    cache = ReferenceCache(tmp_path)
    return problem, x, cache.path(cache.key(problem, 0, x, 80.0))


def test_a_cached_reference_that_is_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path):
    """load_tensor read the file with Path.read_bytes(): a FIFO blocked forever, a link to /dev/zero never ended."""
    from benchmarks.common import ReferenceCache

    problem, x, path = _cache_path(tmp_path)
    _fifo(path)
    said = _refused_at_once(path, lambda: ReferenceCache(tmp_path).get(problem, 0, x, 80.0))
    assert re.search(f"{re.escape(path.name)} is not a regular file.*delete it to recompute", said), said
    path.unlink()
    if os.path.exists("/dev/zero"):
        path.symlink_to("/dev/zero")
        with pytest.raises(samplers.InvalidInput, match="is not a regular file"):
            ReferenceCache(tmp_path).get(problem, 0, x, 80.0)


def test_a_cached_reference_far_larger_than_its_reference_is_refused_unread(tmp_path):
    import torch

    from benchmarks.common import HEADER_BYTES, ReferenceCache, save_tensor

    problem, x, path = _cache_path(tmp_path)
    save_tensor(path, torch.zeros(x.numel() + HEADER_BYTES // 8 + 1, dtype=torch.float64))
    with pytest.raises(samplers.InvalidInput, match=f"{re.escape(path.name)}.* is larger than .* bytes"):
        ReferenceCache(tmp_path).get(problem, 0, x, 80.0)
    # the reference itself, in float64, is within the bound
    save_tensor(path, torch.ones(x.shape, dtype=torch.float64))
    assert torch.equal(ReferenceCache(tmp_path).get(problem, 0, x, 80.0), torch.ones(x.shape, dtype=torch.float64))


# ------------------------------------------------------------------------- files the benchmarks write: atomic


@pytest.fixture
def atomic_writes(monkeypatch):
    """The names of the files written through samplers.core.files.atomic_write_bytes (directly, through
    files.atomic_save, or via benchmarks.common's import of it)."""
    from benchmarks import common
    from samplers.core import files

    written, real = [], files.atomic_write_bytes

    def spy(path, data):
        written.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(common, "atomic_write_bytes", spy)
    monkeypatch.setattr(files, "atomic_write_bytes", spy)
    return written


def test_tiny_unet_writes_its_files_atomically(tmp_path, atomic_writes):
    pytest.importorskip("diffusers")
    from benchmarks import tiny_unet

    folder = tiny_unet.make(tmp_path / "unet")
    assert sorted(atomic_writes) == sorted(p.name for p in folder.iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "embeds.safetensors", "scheduler_config.json"]


def test_compatibility_writes_its_table_atomically(tmp_path, monkeypatch, atomic_writes):
    from benchmarks import compatibility

    monkeypatch.setattr(compatibility, "table", lambda: [])
    monkeypatch.setattr(compatibility, "markdown", lambda rows, env: "| table |\n")
    assert compatibility.main(["--out", str(tmp_path / "compat.md")]) == 0
    assert atomic_writes == ["compat.md"] and (tmp_path / "compat.md").read_text() == "| table |\n"


def test_quality_writes_its_image_grid_atomically(tmp_path, atomic_writes):
    from PIL import Image

    from benchmarks import quality

    grid_dir = tmp_path / "cells"
    grid_dir.mkdir()
    for nfe in (4, 8):
        Image.new("RGB", (8, 8)).save(grid_dir / f"models-eps_euler_karras_{nfe}_0.png")
    result = {"problems": ["models-eps"], "args": {"seeds": [0]}}
    assert [p.name for p in quality.image_grid(result, grid_dir, tmp_path)] == ["grid_models-eps.png"]
    assert atomic_writes == ["grid_models-eps.png", "grid_models-eps.txt"]


def test_a_written_file_takes_the_umask_of_the_moment_it_is_written(tmp_path):
    """The umask was read once at import: a process that set os.umask(0o077) later still got 0644 files."""
    import os
    import stat as stat_mod

    from samplers.core.files import atomic_write_bytes

    old = os.umask(0o077)
    try:
        tight = atomic_write_bytes(tmp_path / "tight.json", b"{}")
        os.umask(0o022)
        usual = atomic_write_bytes(tmp_path / "usual.json", b"{}")
    finally:
        os.umask(old)
    assert stat_mod.S_IMODE(tight.stat().st_mode) == 0o600
    assert stat_mod.S_IMODE(usual.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tight.json", "usual.json"]  # no temporary file left


def test_weights_holding_nan_are_refused_at_load_naming_the_tensor(tmp_path):
    """The hash only says the file is the one saved: NaN weights saved with it went through the load and made
    every sample NaN ("dpmpp_2m produced NaN/Inf", exit 1)."""
    import torch

    from models import io as mio

    good = {"a.weight": torch.ones(2, 2), "b.bias": torch.zeros(3), "steps": torch.arange(3)}
    mio.save_model(tmp_path / "ok", good, {"type": "toy"})
    assert set(mio.load_model(tmp_path / "ok")[0]) == set(good)
    for bad in (float("nan"), float("inf")):
        weights = {**good, "b.bias": torch.tensor([0.0, bad, 0.0])}
        mio.save_model(tmp_path / "bad", weights, {"type": "toy"})
        with pytest.raises(mio.CorruptModelError, match=r"NaN or infinite weights \(b\.bias\)"):
            mio.load_model(tmp_path / "bad")


def test_a_fits_saved_state_on_a_fifo_is_refused_not_waited_on(tmp_path):
    """read_saved (the fit's state and cached endpoints) and models.io.load_checkpoint were one rule written twice, and
    only the checkpoint's opened the path as a regular file: the fit's waited on a FIFO forever."""
    from samplers.fitted.fitting import read_saved

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "state.pt")
    got = []

    def attempt():
        try:
            read_saved(tmp_path / "state.pt", "the fit's saved state", "delete it")
            got.append("read")
        except samplers.InvalidInput as err:
            got.append(str(err))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive() and len(got) == 1 and "not a regular file" in got[0], got

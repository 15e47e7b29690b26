"""Weights and outputs on disk (models.io): atomic writes and load errors that say what is wrong."""

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from models import io as mio


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.zeros(4)}


def test_save_load_round_trip(tmp_path):
    cfg = mio.save_model(tmp_path / "m", _sd(), {"type": "toy", "width": 4})
    assert len(cfg["weights_sha256"]) == 64
    sd, cfg2 = mio.load_model(tmp_path / "m")
    assert cfg2 == cfg and cfg2["width"] == 4
    for k, v in _sd().items():
        assert torch.equal(sd[k], v)
    # nothing temporary left behind
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(mio.ModelLoadError, match="does not exist.*python -m models.train_vae"):
        mio.load_model(tmp_path / "nope")
    mio.save_model(tmp_path / "m", _sd(), {})
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(mio.ModelLoadError, match="missing .*model.safetensors.*python -m models.train_vae"):
        mio.load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(mio.ModelLoadError, match="missing .*config.json"):
        mio.load_model(tmp_path / "m")


def test_truncated_file(tmp_path):
    mio.save_model(tmp_path, _sd(), {})
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(mio.ModelLoadError, match="corrupted: hash mismatch"):
        mio.load_model(tmp_path)
    # without a hash to compare against, safetensors' own error is turned into ours
    with pytest.raises(mio.ModelLoadError, match="truncated or not a safetensors file"):
        mio.load_model(tmp_path, verify_hash=False)


def test_hash_mismatch(tmp_path):
    mio.save_model(tmp_path, _sd(), {})
    w = tmp_path / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-1] ^= 0xFF  # same length, one weight byte flipped: still parses
    w.write_bytes(bytes(blob))
    with pytest.raises(mio.CorruptModelError, match="corrupted: hash mismatch"):
        mio.load_model(tmp_path)
    assert isinstance(mio.CorruptModelError("x"), ValueError)


def test_bad_config_json(tmp_path):
    mio.save_model(tmp_path, _sd(), {})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(mio.ModelLoadError, match="not valid JSON"):
        mio.load_model(tmp_path)


def test_wrong_keys_and_shapes_are_named(tmp_path):
    module = torch.nn.Sequential()
    module.add_module("conv", torch.nn.Conv2d(3, 4, 3))
    sd = _sd()
    mio.load_into(module, sd)  # fits
    bad = dict(sd)
    bad["extra.weight"] = bad.pop("conv.bias")
    with pytest.raises(mio.ConfigMismatchError, match=r"missing keys conv\.bias.*unexpected keys extra\.weight"):
        mio.load_into(module, bad)
    wrong_shape = dict(sd, **{"conv.weight": torch.zeros(4, 3, 5, 5)})
    with pytest.raises(mio.ModelLoadError, match=r"conv\.weight: file \(4, 3, 5, 5\) vs model \(4, 3, 3, 3\)"):
        mio.load_into(module, wrong_shape)


def test_atomic_write_and_image(tmp_path):
    p = mio.atomic_write_bytes(tmp_path / "a.bin", b"hello")
    assert p.read_bytes() == b"hello"
    mio.atomic_write_bytes(tmp_path / "a.bin", b"again")
    assert p.read_bytes() == b"again"
    img = Image.new("RGB", (8, 8), (255, 0, 0))
    out = mio.atomic_save_image(tmp_path / "img.png", img)
    assert Image.open(out).getpixel((0, 0)) == (255, 0, 0)
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "img.png"]


def test_missing_parent_folder(tmp_path):
    target = tmp_path / "no" / "such" / "img.png"
    with pytest.raises(FileNotFoundError, match=r"folder .*no/such.* does not exist; create it or choose another path"):
        mio.atomic_save_image(target, Image.new("RGB", (4, 4)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mio.atomic_write_bytes(target, b"x")


def test_a_missing_model_path_named_like_a_file_says_a_model_is_a_folder(tmp_path):
    from models import io as mio

    with pytest.raises(mio.MissingModelError, match="its name is a file's: a model is a folder holding config.json"):
        mio.load_config(tmp_path / "model.safetensors")
    with pytest.raises(mio.MissingModelError, match="does not exist; train it"):
        mio.load_config(tmp_path / "eps")


@pytest.mark.parametrize("load", ["pipeline", "unet", "vae"])
def test_loading_a_model_leaves_torchs_global_rng_alone(load):
    """Building a module draws its initial weights (nn initialisers, the text encoder's torch.randn) from torch's
    global generator before the saved weights replace them, so torch.manual_seed(0) before Pipeline.load gave another
    seed=None image than after it; the load now leaves the generator where it was."""
    from models.pipeline import Pipeline
    from models.unet import DiffusionModel
    from models.vae import DEFAULT_FOLDER, VAE

    root = Path(__file__).resolve().parent.parent / "models" / "weights"
    run = {"pipeline": lambda: Pipeline.load(model="eps"), "unet": lambda: DiffusionModel.load(root / "eps"),
           "vae": lambda: VAE.load(DEFAULT_FOLDER)}[load]
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    run()
    assert torch.equal(torch.get_rng_state(), before)


def test_a_unet_that_does_not_load_says_how_to_train_a_unet_not_the_vae(tmp_path):
    """DiffusionModel.load passed no hint on, so models.io's default told a user whose U-Net file is corrupt to run
    `python -m models.train_vae` (the VAE's trainer); it says the U-Net's, as `samplers generate --weights` does."""
    import json
    import shutil

    from models.pipeline import WEIGHTS
    from models.unet import DiffusionModel

    if not (WEIGHTS / "eps" / mio.WEIGHTS_FILE).is_file():
        pytest.skip("the shipped eps weights are not installed")
    folder = tmp_path / "x"
    shutil.copytree(WEIGHTS / "eps", folder)
    config = json.loads((folder / mio.CONFIG_FILE).read_text())
    (folder / mio.CONFIG_FILE).write_text(json.dumps({**config, "weights_sha256": "0" * 64}))
    for where in (folder, tmp_path / "missing"):
        with pytest.raises(mio.ModelLoadError) as err:
            DiffusionModel.load(where)
        assert "python -m models.train eps|flow --out FOLDER" in str(err.value) and "train_vae" not in str(err.value)
    with pytest.raises(mio.CorruptModelError, match="hash mismatch.*restore the file or mine$"):  # a caller's own hint is kept
        DiffusionModel.load(folder, reproduce_hint="mine")

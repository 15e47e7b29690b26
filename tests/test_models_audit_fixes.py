"""The pipeline's boundary as the "models" audit found it wanting: a [0, 1] item stacked into a batch, the request a PNG
records, torch's global RNG after a refused call, config.json's defaults planned as a run, the config field a size
mismatch names, a PIL mask's size before it is decoded, a mask on the meta device, num_train_timesteps named with its
file, and img2img's size keywords and a folder that is not a path."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import io as mio
from models.pipeline import WEIGHTS, Pipeline, PipelineSpec
from models.unet import DiffusionModel, UNetConfig, vae_record
from samplers.core.errors import InvalidInput, InvalidType

from test_pipeline import model_calls, parts  # noqa: F401  (a fixture)
from test_pipeline_images import _png_header
from test_text_unet import randomize, tiny_config

PROMPT = "a red circle"
UNIT = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))  # [0, 1], as torchvision's ToTensor gives
SIGNED = UNIT * 2 - 1  # a proper [-1, 1] image
HALF = torch.zeros(64, 64)
HALF[:, :32] = 1


def _run(pipe, task: str, images, **kw):
    kw = {"sampler": "euler", "steps": 2, "seed": 0, "progress": False, "output": "tensor", **kw}
    if task == "img2img":
        return pipe.img2img(images, PROMPT, **{"strength": 0.5, **kw})
    return pipe.inpaint(images, kw.pop("mask", HALF), PROMPT, **kw)


def _config_folder(tmp_path: Path, kind: str, **fields) -> Path:
    """A folder holding a copy of a shipped U-Net's config.json (all PipelineSpec.read reads) with ``fields`` set."""
    folder = tmp_path / f"{kind}-config"
    folder.mkdir()
    config = json.loads((WEIGHTS / kind / mio.CONFIG_FILE).read_text())
    (folder / mio.CONFIG_FILE).write_text(json.dumps({**config, **fields}))
    return folder


# ------------------------------------------------------------- 1. a [0, 1] item of a stacked batch, judged on its own


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
@pytest.mark.parametrize("images, which", [(torch.stack([UNIT, SIGNED]), r"images \(item 0\)"),
                                           (torch.stack([SIGNED, UNIT]), r"images \(item 1\)"),
                                           ([UNIT, SIGNED], r"images\[0\]"), ([SIGNED, UNIT], r"images\[1\]")])
def test_a_zero_one_item_is_refused_however_the_batch_is_packed(parts, monkeypatch, task, images, which):  # noqa: F811
    """One min() over the whole [B, 3, H, W] tensor let a [0, 1] item beside a [-1, 1] one through, read as a
    washed-out picture, where the same items as a list were refused."""
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=which + r": a float tensor whose values all lie in \[0, 1\]"):
        _run(parts["eps"], task, images, seed=[0, 1])
    assert not calls


def test_a_batch_whose_items_all_hold_negative_values_runs(parts):  # noqa: F811
    assert _run(parts["eps"], "img2img", torch.stack([SIGNED, -UNIT]), seed=[0, 1]).shape == (2, 3, 64, 64)


# ------------------------------------------------------------------ 5. the config field a size mismatch names


def _saved(tmp_path: Path, parts, **text) -> Path:  # noqa: F811
    folder = tmp_path / "unet"
    model = DiffusionModel(tiny_config(prediction="eps", vae=vae_record(parts["vae"])))
    model.save(folder)
    if text:
        config = json.loads((folder / mio.CONFIG_FILE).read_text())
        config["text"].update(text)
        (folder / mio.CONFIG_FILE).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("field, value, right", [("dim", 64, 32), ("max_length", 2, 24)])
def test_a_size_mismatch_names_the_field_that_makes_it(tmp_path, parts, field, value, right):  # noqa: F811
    """Only top-level fields were read, by value: editing text.dim named 'channels', text.max_length 'ff_mult'."""
    folder = _saved(tmp_path, parts, **{field: value})
    with pytest.raises(mio.ConfigMismatchError) as refused:
        DiffusionModel.load(folder)
    assert f"the sizes come from its field 'text.{field}' ({value}; the weights fit {right})" in str(refused.value)


def test_a_size_mismatch_no_one_field_explains_names_none(tmp_path, parts):  # noqa: F811
    folder = _saved(tmp_path, parts, dim=64, max_length=2)  # two fields edited: no one change makes the weights fit
    with pytest.raises(mio.ConfigMismatchError, match="shape mismatches") as refused:
        DiffusionModel.load(folder)
    assert "the sizes come from" not in str(refused.value)


# ------------------------------------------------------------------ 6, 7. a PIL mask's size; a mask on 'meta'


@pytest.mark.parametrize("as_list", [False, True])
def test_a_pil_mask_of_another_size_is_refused_by_its_header(parts, monkeypatch, tmp_path, as_list):  # noqa: F811
    """The mask was decoded (9.7 s and 1.7 GB for 12000×12000) before its size was compared with the image's. This
    one's pixels are cut off: only a check of its header refuses it for its size."""
    calls = model_calls(parts["eps"], monkeypatch)
    mask = _png_header(tmp_path, 8000, 8000)
    what = r"mask\[0\]" if as_list else "mask"
    with pytest.raises(InvalidInput, match=f"{what} is a PIL image of 8000×8000 pixels .* but the image is 64×64"):
        _run(parts["eps"], "inpaint", SIGNED, mask=[mask] if as_list else mask)
    assert not calls


@pytest.mark.parametrize("mask", [torch.ones(64, 64, device="meta"), [torch.ones(64, 64, device="meta")]])
def test_a_mask_on_the_meta_device_is_refused(parts, mask):  # noqa: F811
    """It raised torch's RuntimeError (Tensor.item() cannot be called on meta tensors)."""
    with pytest.raises(InvalidInput, match="mask is on the 'meta' device, which holds no pixels"):
        _run(parts["eps"], "inpaint", SIGNED, mask=mask)


# ------------------------------------------------------------------ 8. num_train_timesteps, with its file


@pytest.mark.parametrize("value", [1, 10**9, 2.5])
def test_num_train_timesteps_is_a_config_field_checked_with_its_file(tmp_path, value):
    """It was checked only when the schedule was built: an InvalidOption (1) or a LimitExceeded of 59.6 GiB (10**9)
    that named neither config.json nor the field's file."""
    folder = _config_folder(tmp_path, "eps", num_train_timesteps=value)
    with pytest.raises(mio.ConfigMismatchError, match=rf"{folder / mio.CONFIG_FILE}: U-Net config field "
                                                      r"'num_train_timesteps' is .*an integer in \[2, 100000\]"):
        PipelineSpec.read(folder)


# ------------------------------------------------------------------ minor: img2img's size, a folder not a path


@pytest.mark.parametrize("task, key", [("img2img", "width"), ("inpaint", "height")])
def test_img2img_and_inpaint_say_they_take_the_image_size(parts, monkeypatch, task, key):  # noqa: F811
    """It was refused as a sampler option ("euler has no option 'width'")."""
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=f"{task} takes its size from the image, so it has no {key} argument"):
        _run(parts["eps"], task, SIGNED, **{key: 128})
    assert not calls


@pytest.mark.parametrize("kw", [{"folder": 5}, {"vae": 5}, {"folder": b"models/weights/eps"}])
def test_a_folder_that_is_not_a_path_is_refused(kw):
    """Path(5) raised a raw TypeError."""
    for load in (Pipeline.load, PipelineSpec.read):
        with pytest.raises(InvalidType, match=r"folder must be a path \(a str or os.PathLike\)"):
            load(**kw)

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


# --------------------------------------------------------------------- 2. the request a PNG records: the run's rules


@pytest.mark.parametrize("kw, error, words", [
    ({"seed": 1.9}, InvalidType, "seed must be an integer"),
    ({"seed": -1}, InvalidInput, "seed = -1 is outside 0 <= seed < 2..64"),
    ({"seed": None}, InvalidInput, "seed=None means a seed drawn by the run"),
    ({"seed": "7"}, InvalidType, "seed must be an integer"),
    ({"width": 64.9}, InvalidType, "width must be an integer number of pixels"),
    ({"height": 60}, InvalidInput, "height 60 is not a positive multiple of 8"),
    ({"prompt": None}, InvalidType, "one image's prompt: a string, got NoneType"),
    ({"prompt": [PROMPT, PROMPT]}, InvalidType, "one image's prompt: a string, got list"),
    ({"prompt": " ".join(["red"] * 40)}, InvalidInput, "prompt 0 has 40 words but the text encoder reads at most 23"),
])
def test_request_refuses_what_the_run_would_refuse(parts, kw, error, words):  # noqa: F811
    """It recorded seed 1.9 as 1, width 64.9 as 64, seed -1 (A1111's "random"), any prompt, and raised a raw
    TypeError for seed=None."""
    kw = {"prompt": PROMPT, **kw}
    with pytest.raises(error, match=words):
        parts["eps"].request(kw.pop("prompt"), **kw)


def test_request_records_the_values_the_run_reads(parts):  # noqa: F811
    r = parts["eps"].request(PROMPT, seed=np.int64(3), width=np.int64(128), height=torch.tensor(64))
    assert (r["seed"], r["width"], r["height"]) == (3, 128, 64)
    assert all(type(r[k]) is int for k in ("seed", "width", "height"))
    assert json.dumps(r)  # what png_info writes


# ------------------------------------------------------------------- 3. torch's global RNG after a refused seed=None


@pytest.mark.parametrize("task, kw", [("txt2img", {"sampler": "eulerr"}), ("img2img", {"sampler": "eulerr"}),
                                      ("inpaint", {"mask": torch.zeros(64, 64)}),
                                      ("txt2img", {"steps": 0}), ("img2img", {"strength": 0.01})])
def test_a_refused_call_with_seed_none_leaves_the_global_rng_alone(parts, task, kw):  # noqa: F811
    """seed=None drew its base seed at the start, before the checks: a refused call moved the global RNG, so a script
    that caught the refusal and retried got another image than without it."""
    pipe = parts["eps"]
    state = torch.get_rng_state()
    with pytest.raises(Exception):
        if task == "txt2img":
            pipe.txt2img(PROMPT, **{"steps": 2, "seed": None, "progress": False, **kw})
        else:
            _run(pipe, task, kw.pop("images", SIGNED), **{**kw, "seed": None})
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_seed_none_still_draws_its_base_from_the_global_rng(parts, task):  # noqa: F811
    pipe = parts["eps"]

    def run(seed):
        if task == "txt2img":
            return pipe.txt2img([PROMPT, "a blue square"], steps=2, seed=seed, progress=False, output="tensor")
        return _run(pipe, task, SIGNED, seed=seed)

    torch.manual_seed(7)
    base = int(torch.randint(0, 2**62, ()))
    torch.manual_seed(7)
    drawn = run(None)
    torch.testing.assert_close(drawn, run(base), rtol=0, atol=0)


# ------------------------------------------------------------------- 4. config.json's defaults, planned as one run


@pytest.mark.parametrize("kind, defaults, words", [
    ("flow", {"schedule": "karras"}, "schedule 'karras' needs a finite sigma_max"),
    ("flow", {"sampler": "DDIM"}, "DDIM"),
])
def test_defaults_the_model_cannot_run_are_refused_when_config_json_is_read(tmp_path, kind, defaults, words):
    """They loaded (or failed blaming a schedule the caller never passed), and every call without sampler= or
    schedule= then failed with advice for arguments its caller never gave."""
    folder = _config_folder(tmp_path, kind, defaults=defaults)
    with pytest.raises(mio.ConfigMismatchError, match=rf"{folder / mio.CONFIG_FILE}: U-Net config field 'defaults' "
                                                      rf"is .*{words}.*correct 'defaults' in config.json"):
        PipelineSpec.read(folder)
    raw = json.loads((folder / mio.CONFIG_FILE).read_text())
    with pytest.raises(mio.ConfigMismatchError, match="field 'defaults'"):
        UNetConfig.from_dict({k: v for k, v in raw.items() if k != "weights_dtype"})


def test_a_default_label_runs_on_its_own_schedule_not_the_fallback(tmp_path):
    """{"sampler": "DDIM"} was merged with the fallback schedule karras, which the label contradicts: the model
    failed to load, blaming a schedule='karras' nobody passed."""
    spec = PipelineSpec.read(_config_folder(tmp_path, "eps", defaults={"sampler": "DDIM"}))
    assert spec.default_pair_schedule is None and spec.default_schedule == "karras"
    found, sigmas, _, _ = spec.plan_run(None, None, None, {})
    own, own_sigmas, _, _ = spec.plan_run("DDIM", None, None, {})
    assert found == own
    torch.testing.assert_close(sigmas, own_sigmas, rtol=0, atol=0)
    # a call naming another sampler and no schedule runs on the model's default schedule, not DDIM's timesteps
    _, other, _, _ = spec.plan_run("euler", None, None, {})
    torch.testing.assert_close(other, spec.sigmas("karras"), rtol=0, atol=0)


def test_a_default_label_runs_as_the_call_naming_it(parts):  # noqa: F811
    vae = parts["vae"]
    torch.manual_seed(1)
    model = randomize(DiffusionModel(tiny_config(prediction="eps", vae=vae_record(vae), defaults={"sampler": "DDIM"})),
                      seed=2)
    pipe = Pipeline(model, vae)
    kw = {"steps": 3, "seed": 0, "progress": False, "output": "tensor"}
    torch.testing.assert_close(pipe.txt2img(PROMPT, **kw), pipe.txt2img(PROMPT, sampler="DDIM", **kw), rtol=0, atol=0)
    assert pipe.request(PROMPT)["schedule"] == "a1111:Timesteps"


@pytest.mark.parametrize("kind, schedule", [("eps", "karras"), ("flow", "flow")])
def test_the_shipped_configs_plan_their_defaults(tmp_path, kind, schedule):
    spec = PipelineSpec.read(_config_folder(tmp_path, kind))
    assert spec.defaults["schedule"] == spec.default_schedule == schedule


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

"""Bad values at the models' seams are refused before anything is built or any model is called:
the training CLIs' arguments, config.json fields, the guidance wrappers' arguments."""

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from models import io as mio
from models import pipeline, train, train_vae
from models.guidance import CFGDenoiser, InpaintDenoiser
from models.unet import DiffusionModel, UNetConfig
from models.vae import VAE
from samplers.core.errors import InvalidInput, InvalidType

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------------- CLIs

VAE_BAD = [["--steps", "-5"], ["--steps", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--lr", "nan"], ["--lr", "-1"],
           ["--warmup", "-1"], ["--kl-weight", "-1"], ["--edge-weight", "inf"], ["--latent-channels", "0"],
           ["--channels", "32,0"], ["--channels", "a,b"], ["--channels", "12,24"], ["--enc-res-blocks", "0"],
           ["--dec-res-blocks", "-1"], ["--name", ""], ["--threads", "0"], ["--checkpoint-minutes", "0"],
           ["--stop-after", "0"], ["--scale-samples", "0"], ["--eval-samples", "0"], ["--eval-seed", "-1"],
           ["--seed", "-1"], ["--steps", "1.5"]]
UNET_BAD = [["--ema", "5"], ["--ema", "-0.1"], ["--caption-dropout", "2"], ["--caption-dropout", "nan"],
            ["--n-scenes", "0"], ["--steps", "-5"], ["--batch-size", "0"], ["--lr", "0"], ["--warmup", "-1"],
            ["--weight-decay", "-1"], ["--shift", "0"], ["--channels", "64,0"], ["--channels", "24,48"], ["--channels", "8,16"],
            ["--res-blocks", "0"], ["--seed", "-1"], ["--threads", "0"], ["--encode-threads", "0"],
            ["--checkpoint-minutes", "-1"], ["--stop-after", "0"], ["--max-minutes", "0"], ["--max-minutes", "inf"]]


@pytest.mark.parametrize("bad", VAE_BAD, ids=lambda b: " ".join(b))
def test_train_vae_refuses_bad_arguments_before_building(bad, tmp_path, capsys):
    out = tmp_path / "v"
    with pytest.raises(SystemExit) as e:
        train_vae.main(["--out", str(out), *bad])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m models.train_vae: error: argument " + bad[0])
    assert not out.exists()


@pytest.mark.parametrize("bad", UNET_BAD, ids=lambda b: " ".join(b))
def test_train_refuses_bad_arguments_before_building(bad, tmp_path, capsys):
    out, work = tmp_path / "u", tmp_path / "w"
    with pytest.raises(SystemExit) as e:
        train.main(["eps", "--out", str(out), "--work", str(work), *bad])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m models.train: error: argument " + bad[0])
    assert not out.exists() and not work.exists()


def test_train_cli_refuses_a_file_as_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["eps", "--out", str(f)], ["eps", "--out", str(tmp_path / "u"), "--work", str(f)],
                 ["eps", "--out", str(tmp_path / "u"), "--vae", str(tmp_path / "absent")]):
        with pytest.raises(SystemExit) as e:
            train.parse_args(argv)
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        train_vae.parse_args(["--out", str(f)])
    assert e.value.code == 2


def test_good_arguments_still_parse(tmp_path):
    a = train_vae.parse_args(["--out", str(tmp_path), "--channels", "8,16", "--kl-weight", "0"])
    assert a.channels == (8, 16) and a.kl_weight == 0.0 and a.steps == 2000
    a = train.parse_args(["flow", "--out", str(tmp_path), "--ema", "1", "--caption-dropout", "0", "--max-minutes", "2"])
    assert a.ema == 1.0 and a.caption_dropout == 0.0 and a.channels == (64, 128)


# -------------------------------------------------------------------------------------- config.json


def _copy(kind: str, tmp_path: Path, **patch) -> Path:
    d = tmp_path / kind
    shutil.copytree(ROOT / "models" / "weights" / kind, d)
    cfg = json.loads((d / "config.json").read_text())
    for k, v in patch.items():
        if v is ...:
            del cfg[k]
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_every_shipped_config_records_its_weights_hash():
    for cpath in sorted((ROOT / "models" / "weights").glob("*/config.json")):
        sha = json.loads(cpath.read_text()).get("weights_sha256")
        assert isinstance(sha, str) and len(sha) == 64, cpath
        assert mio.sha256_file(cpath.parent / "model.safetensors") == sha, cpath


def test_a_config_without_weights_sha256_is_refused(tmp_path):
    d = _copy("vae", tmp_path, weights_sha256=...)
    w = d / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-3] ^= 0x40  # a flipped weight byte that only the hash would catch
    w.write_bytes(bytes(blob))
    with pytest.raises(mio.CorruptModelError, match=r"config\.json has no weights_sha256.*save"):
        VAE.load(d)
    d2 = _copy("vae", tmp_path / "b", weights_sha256="abc")
    with pytest.raises(mio.CorruptModelError, match="not a SHA-256"):
        VAE.load(d2)


@pytest.mark.parametrize("field,value", [("scaling_factor", float("nan")), ("scaling_factor", "0.5"),
                                         ("scaling_factor", 0.0), ("shift_factor", None), ("groups", 0),
                                         ("groups", 3), ("latent_channels", 2.5), ("channels", []),
                                         ("channels", [32, "64"]), ("enc_res_blocks", True), ("name", 5),
                                         ("image_size", -64), ("extra", [])])
def test_vae_config_fields_of_the_wrong_type_or_range_are_refused(field, value, tmp_path):
    d = _copy("vae", tmp_path, **{field: value})
    with pytest.raises(mio.ConfigMismatchError, match=rf"{d / 'config.json'}: VAE config field '{field if field != 'groups' or value == 0 else 'channels'}'"):
        VAE.load(d)


@pytest.mark.parametrize("field,value", [("heads", 0), ("heads", 3), ("groups", "16"), ("time_dim", 255),
                                         ("num_train_timesteps", 0), ("beta_schedule", "cosine"),
                                         ("beta_start", float("nan")), ("beta_end", -0.1), ("flow_shift", 0),
                                         ("caption_dropout", 1.5), ("res_blocks", 0), ("vae", "x"),
                                         ("text", {"dim": 0}), ("text", {"dim": 130}), ("text", {"vocab": []}),
                                         ("text", {"depth": 2})])
def test_unet_config_fields_of_the_wrong_type_or_range_are_refused(field, value, tmp_path):
    if field == "text":
        base = json.loads((ROOT / "models" / "weights" / "eps" / "config.json").read_text())["text"]
        value = {**base, **value}
    d = _copy("eps", tmp_path, **{field: value})
    with pytest.raises(mio.ConfigMismatchError, match=rf"{d / 'config.json'}: .*field"):
        DiffusionModel.load(d)


_EPS = json.loads((ROOT / "models" / "weights" / "eps" / "config.json").read_text())


@pytest.mark.parametrize("field,value", [
    ("defaults", {"steps": "3"}), ("defaults", {"steps": 3.7}), ("defaults", {"cfg": "7"}), ("defaults", {"cfg": True}),
    ("defaults", {"cfg": 1000.0}), ("defaults", {"cfg": -101.0}), ("defaults", {"sampler": 5}), ("defaults", {"sampler": "no_such_sampler"}),
    ("defaults", {"sampler": "fitted:x.json"}), ("defaults", {"schedule": "nope"}), ("defaults", {"stepz": 3}),
    ("defaults", {"sampler": "DPM++ 2M Karras", "schedule": "exponential"}),
    ("vae", {k: v for k, v in _EPS["vae"].items() if k != "scaling_factor"}),
    ("vae", {**_EPS["vae"], "scaling_factor": "0.945"}), ("vae", {**_EPS["vae"], "latent_channels": 4.0}),
    ("vae", {**_EPS["vae"], "weights_sha256": "abc"}), ("weights_dtype", "banana"),
])
def test_unet_defaults_vae_record_and_weights_dtype_are_checked_on_load(field, value, tmp_path):
    d = _copy("eps", tmp_path, **{field: value})
    with pytest.raises(mio.ConfigMismatchError, match=rf"{d / 'config.json'}: .*field"):
        DiffusionModel.load(d)


@pytest.mark.parametrize("steps", [pipeline.MAX_STEPS + 1, 20000, 10**9, 0])
def test_unet_defaults_steps_above_the_pipelines_limit_is_refused_at_load_naming_file_and_field(steps, tmp_path):
    """It loaded, and every call without steps= failed with "steps = 20000 is more than the limit of 10000", naming
    neither config.json nor defaults.steps."""
    d = _copy("eps", tmp_path, defaults={"steps": steps})
    with pytest.raises(mio.ConfigMismatchError,
                       match=rf"{d / 'config.json'}: U-Net config field 'defaults.steps' is {steps}; it must be an "
                             rf"integer in \[1, {pipeline.MAX_STEPS}\]"):
        DiffusionModel.load(d)


def test_unet_defaults_steps_at_the_pipelines_limit_loads(tmp_path):
    d = _copy("eps", tmp_path, defaults={"steps": pipeline.MAX_STEPS})
    assert DiffusionModel.load(d).config.defaults["steps"] == pipeline.MAX_STEPS


@pytest.mark.parametrize("patch, field, rule", [
    ({"beta_end": 2.0}, "beta_end", r"a number in \(0, 1\)"),
    ({"beta_end": 1.0}, "beta_end", r"a number in \(0, 1\)"),
    ({"beta_start": 1.5, "beta_end": 0.012}, "beta_start", r"a number in \(0, 1\)"),
    ({"beta_start": 0.5, "beta_end": 0.0001}, "beta_start", r"less than beta_end \(0.0001\)"),
    ({"beta_start": 0.012, "beta_end": 0.012}, "beta_start", r"less than beta_end \(0.012\)"),
])
def test_unet_beta_fields_the_native_schedule_cannot_use_are_refused_naming_file_and_field(patch, field, rule,
                                                                                          tmp_path):
    """beta_end=2.0 was refused by the native schedule without the file's name, and swapped betas loaded, to fail
    only at sampling with a σ message."""
    d = _copy("eps", tmp_path, **patch)
    with pytest.raises(mio.ConfigMismatchError, match=rf"{d / 'config.json'}: U-Net config field '{field}' is .*; "
                                                      rf"it must be {rule}"):
        DiffusionModel.load(d)


def test_unet_defaults_that_the_tables_resolve_load(tmp_path):
    d = _copy("eps", tmp_path, defaults={"sampler": "DPM++ 2M Karras", "schedule": "karras", "steps": 12, "cfg": 5})
    assert DiffusionModel.load(d).config.defaults["sampler"] == "DPM++ 2M Karras"


def test_integer_or_bool_tensors_are_not_cast_into_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy("vae", tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = torch.ones_like(sd[key], dtype=torch.int32)
    save_file(sd, str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["weights_sha256"] = mio.sha256_file(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mio.ConfigMismatchError, match="non-floating tensors"):
        VAE.load(d)


def test_a_truncated_checkpoint_is_a_corrupt_model_error(tmp_path):
    path = mio.atomic_torch_save(tmp_path / "c.pt", {"mean": torch.zeros(64, 4)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(mio.CorruptModelError, match="truncated"):
        mio.load_checkpoint(path)


# ---------------------------------------------------------------------------------------- guidance


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return x * 0.5


@pytest.mark.parametrize("scale,err", [(float("nan"), InvalidInput), (float("inf"), InvalidInput),
                                       ("7.5", InvalidType), (True, InvalidType), (None, InvalidType),
                                       (torch.tensor([1.0, 2.0]), InvalidType)])
def test_cfg_scale_is_a_finite_real(scale, err):
    inner = _Counting()
    with pytest.raises(err, match="guidance scale"):
        CFGDenoiser(inner, {"ctx": torch.zeros(1, 3)}, {"ctx": torch.ones(1, 3)}, scale)
    assert inner.calls == 0
    assert CFGDenoiser(inner, {}, {}, 7).scale == 7.0


def test_cfg_conditioning_must_be_dicts_with_the_same_keys():
    with pytest.raises(InvalidType, match="cond must be a dict"):
        CFGDenoiser(_Counting(), [torch.zeros(1)], {}, 2.0)
    with pytest.raises(InvalidInput, match="same keys"):
        CFGDenoiser(_Counting(), {"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 2.0)


Z = torch.zeros(2, 4, 8, 8)


@pytest.mark.parametrize("known,mask,noise,err,msg", [
    (Z, torch.full((2, 4, 8, 8), 2.0), Z, InvalidInput, r"mask holds 2\.0"),
    (Z, torch.full((2, 1, 8, 8), -0.5), Z, InvalidInput, r"mask holds -0\.5"),
    (Z, torch.full((2, 4, 8, 8), float("nan")), Z, InvalidInput, "mask holds nan"),
    (Z, torch.full((2, 1, 8, 8), 255, dtype=torch.uint8), Z, InvalidInput, r"mask holds 255\.0"),
    (Z, 1.0, Z, InvalidType, "mask must be a floating-point tensor"),
    (torch.zeros(4, 1, 1), torch.ones(1, 1, 8, 8), torch.zeros(4, 1, 1), InvalidInput, "does not broadcast to known"),
    (torch.zeros(4, 1, 1), torch.ones(4, 1, 1), Z, InvalidInput, "noise has shape"),
    (Z, torch.ones(3, 1, 8, 8), Z, InvalidInput, "does not broadcast to known"),
    (Z, torch.ones(2, 8, 8, 8), Z, InvalidInput, "does not broadcast to known"),
    (Z, torch.ones(1, 1, 8, 8), torch.zeros(1, 4, 8, 8), InvalidInput, "noise has shape"),
    (torch.full((2, 4, 8, 8), float("inf")), torch.ones(1, 1, 8, 8), Z, InvalidInput, "known holds NaN or Inf"),
    (Z.long(), torch.ones(1, 1, 8, 8), Z, InvalidType, "known must be a floating-point tensor"),
    (torch.zeros(4), torch.ones(1), torch.zeros(4), InvalidInput, "batch-first"),
])
def test_inpaint_arguments_are_checked_before_any_model_call(known, mask, noise, err, msg):
    inner = _Counting()
    with pytest.raises(err, match=msg):
        InpaintDenoiser(inner, known, mask, noise)
    assert inner.calls == 0


def test_inpaint_refuses_an_x_that_does_not_fit_known():
    inner = _Counting()
    D = InpaintDenoiser(inner, torch.zeros(2, 4, 8, 8), torch.ones(2, 1, 8, 8), torch.zeros(2, 4, 8, 8))
    for x in (torch.zeros(3, 4, 8, 8), torch.zeros(2, 4, 4, 4)):
        with pytest.raises(InvalidInput, match="does not fit the known latent"):
            D(x, torch.tensor(1.0))
        with pytest.raises(InvalidInput, match="does not fit the known latent"):
            D.denoise_at(x, 1.0)
    assert inner.calls == 0
    one = InpaintDenoiser(inner, torch.zeros(1, 4, 8, 8), torch.ones(1, 1, 8, 8), torch.zeros(1, 4, 8, 8))
    assert one(torch.zeros(3, 4, 8, 8), torch.tensor(1.0)).shape == (3, 4, 8, 8)  # batch 1 serves any batch


def test_inpaint_takes_bool_integer_and_lower_rank_masks_as_before(known=Z):
    """Masks that ran before the checks were added still run, and as their float 0/1 equivalent."""
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def inner(x, sigma):
        return x * 0.5

    want = InpaintDenoiser(inner, known, mask, torch.ones_like(known))(x, torch.tensor(3.0))
    for other in (mask.bool(), mask.to(torch.uint8), mask[0, 0], mask[0]):
        got = InpaintDenoiser(inner, known, other, torch.ones_like(known))(x, torch.tensor(3.0))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert CFGDenoiser(_Counting(), {}, {}, torch.tensor(7.5)).scale == 7.5  # a 0-d tensor scale, read once


def test_a_unet_config_whose_levels_and_skips_groupnorm_cannot_split_is_refused_by_name(tmp_path):
    """channels [8, 16] pass the per-level rule (8 in 8 groups, 16 in 16), but a level's input joined with its skip
    is 24 wide, which 16 groups do not divide: torch's bare ValueError before; now the project's error with the
    file, the width and the rule, before the module is built (and the same rule at `models.train --channels`)."""
    d = _copy("eps", tmp_path, channels=[8, 16])
    with pytest.raises(mio.ConfigMismatchError, match=rf"{d / 'config.json'}.*a layer of 24 channels.*multiples of "
                                                       r"groups \(16\)"):
        DiffusionModel.load(d)
    with pytest.raises(InvalidInput, match="a layer of 24 channels"):
        DiffusionModel(UNetConfig(prediction="eps", channels=(8, 16)))


# ------------------------------------------------------------------------------------------- the VAE's inputs

def _tiny_vae() -> VAE:
    from models.vae import VAEConfig

    return VAE(VAEConfig(channels=(8, 8, 16), groups=4, latent_channels=4)).eval()


def test_a_latent_or_images_of_the_wrong_channel_count_are_the_librarys_error():
    # a plain ValueError before (the text was already right)
    vae = _tiny_vae()
    with pytest.raises(InvalidInput, match=r"scaled latent has 3 channels but this VAE .* has 4 latent channels"):
        vae.from_latent(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InvalidInput, match=r"latent has 3 channels"):
        vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InvalidInput, match=r"expected images \[B, 3, H, W\]"):
        vae.encode(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("value", [np.zeros((1, 4, 8, 8), np.float32), torch.zeros(1, 4, 8, 8, dtype=torch.int64),
                                   [[0.0]]], ids=["numpy", "int64", "list"])
def test_a_latent_that_is_not_a_float_tensor_is_refused_by_type_naming_the_fix(value):
    # numpy: torch's conv2d "received an invalid combination of arguments" before
    from models.pipeline import Pipeline

    vae = _tiny_vae()
    with pytest.raises(InvalidType, match=r"scaled latent must be a floating-point torch tensor.*torch\.from_numpy"):
        Pipeline.decode(types.SimpleNamespace(vae=vae), value, output="tensor")
    with pytest.raises(InvalidType, match=r"latent must be a floating-point torch tensor"):
        vae.decode(value)
    images = np.zeros((1, 3, 8, 8), np.float32) if isinstance(value, np.ndarray) else value
    with pytest.raises(InvalidType, match=r"images must be a floating-point torch tensor.*torch\.from_numpy"):
        vae.encode(images)

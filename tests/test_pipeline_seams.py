"""Pipeline and CLI seams: PIL modes, image / mask forms, the adaptive solver's step cap, the CLI's checks before
the weights are read, a wrong --vae, an empty sampler name, numpy sizes, tensor seeds, negative_prompt and a seed
listed twice. Runs are 2 steps, 1 image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import pipeline
from models.pipeline import Pipeline, VAEMismatchError
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType, LimitExceeded, StepLimitError

P = "a large red circle at the top left"
KW = dict(steps=2, progress=False, output="tensor")


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load(model="eps")


# ---- 1. PIL modes that are not 0..255 pixels are refused, not mis-scaled


@pytest.mark.parametrize("im", [Image.fromarray(np.full((64, 64), 32768, np.uint16)),
                                Image.fromarray(np.full((64, 64), 0.5, np.float32)),
                                Image.fromarray(np.full((64, 64), 7, np.int32))])
def test_image_of_other_modes_refused(im):
    with pytest.raises(InvalidType, match=f"mode '{im.mode}'.*'RGB'"):
        pipeline._as_image_batch(im)


@pytest.mark.parametrize("m", [Image.fromarray(np.ones((64, 64), np.float32)),
                               Image.fromarray(np.full((64, 64), 65535, np.uint16))])
def test_mask_of_other_modes_refused(pipe, m):
    img = torch.full((1, 3, 64, 64), -0.5)
    with pytest.raises(InvalidType, match=f"mode '{m.mode}'.*'L'"):
        pipe.inpaint(img, m, P, seed=0, **KW)


def test_eight_bit_modes_read_as_before():
    grey = Image.new("L", (64, 64), 255)
    assert float(pipeline._as_image_batch(grey).mean()) == 1.0
    assert float(pipeline._as_mask(Image.new("1", (64, 64), 1), 1, 64, 64).mean()) == 1.0
    assert float(pipeline._as_mask(Image.new("RGBA", (64, 64), (255, 255, 255, 255)), 1, 64, 64).mean()) == 1.0
    with pytest.raises(InvalidInput, match="transparent pixels"):  # its alpha was dropped: test_pipeline_images.py
        pipeline._as_mask(Image.new("RGBA", (64, 64), (255, 255, 255, 0)), 1, 64, 64)


# ---- 5. image / mask forms


def test_list_of_pil_masks_one_per_item():
    ones, zeros = Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 0)
    m = pipeline._as_mask([ones, zeros], 2, 64, 64)
    assert m.shape == (2, 1, 64, 64) and float(m[0].mean()) == 1.0 and float(m[1].mean()) == 0.0
    with pytest.raises(InvalidInput, match=r"mask\[1\] is a PIL image of 32×32 pixels .* but the image is 64×64"):
        pipeline._as_mask([ones, Image.new("L", (32, 32), 0)], 2, 64, 64)  # by its header, before it is decoded
    with pytest.raises(InvalidInput, match="mask per item, all of one size"):
        pipeline._as_mask([ones, torch.zeros(32, 32)], 2, 64, 64)
    with pytest.raises(InvalidType, match="dtype torch.int64"):
        pipeline._as_mask([torch.ones(64, 64, dtype=torch.int64)], 1, 64, 64)


@pytest.mark.parametrize("mask", [None, "mask.png", {"a": 1}])
def test_mask_of_other_forms_refused(mask):
    with pytest.raises(InvalidType, match="mask must be a PIL image .*PIL.Image.open"):
        pipeline._as_mask(mask, 1, 64, 64)


@pytest.mark.parametrize("image", [None, "img.png", [None]])
def test_image_of_other_forms_refused(image):
    with pytest.raises(InvalidType, match="must be a PIL image .*PIL.Image.open"):
        pipeline._as_image_batch(image)


# ---- 2. an adaptive solver's own steps are bounded by the pipeline's limit


def test_explicit_max_steps_above_the_limit_refused(pipe):
    with pytest.raises(LimitExceeded, match="max_steps = 1000000000 is more than the pipeline's limit of 10000"):
        pipe.plan("dpm_adaptive", None, 2, {"max_steps": 10**9})
    assert pipe.plan("dpm_adaptive", None, 2, {"max_steps": 50})[2]["max_steps"] == 50


def test_default_max_steps_bounded_by_the_pipeline(pipe, monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_STEPS", 3)
    assert pipe.plan("dpm_adaptive", None, 2, {})[2]["max_steps"] == 3
    calls = []
    orig = pipe._denoiser

    def counting(x, sigma, **kw):
        calls.append(1)
        return orig(x, sigma, **kw)

    monkeypatch.setattr(pipe, "_denoiser", counting)
    with pytest.raises(StepLimitError):
        pipe.txt2img(P, sampler="dpm_adaptive", rtol=1e-7, atol=1e-7, seed=0, **KW)
    assert len(calls) <= 5 * 3  # a few calls per attempted step, 3 attempts (unbounded: ~30 000)


# ---- 6, 7. sampler "", numpy sizes, tensor seeds, negative_prompt, a seed twice


def test_empty_sampler_name_refused(pipe):
    with pytest.raises(InvalidInput, match="unknown sampler name ''"):
        pipe.plan("", None, 2, {})


def test_numpy_sizes_taken_bools_not(pipe):
    out = pipe.txt2img(P, height=np.int64(64), width=np.int32(64), seed=0, **KW)
    assert out.shape == (1, 3, 64, 64)
    with pytest.raises(InvalidType, match="height must be an integer number of pixels"):
        pipe.txt2img(P, height=True, seed=0, **KW)
    with pytest.raises(InvalidType, match="width"):
        pipe.txt2img(P, width=64.0, seed=0, **KW)


def test_tensor_seeds_are_a_list(pipe):
    a = pipe.txt2img(P, seed=torch.tensor([3, 4]), **KW)
    b = pipe.txt2img(P, seed=[3, 4], **KW)
    assert a.shape[0] == 2 and torch.equal(a, b)


def test_negative_prompt_named_as_the_pipeline_s(pipe):
    with pytest.raises(InvalidOption, match="the pipeline takes no negative_prompt"):
        pipe.txt2img(P, negative_prompt="blue", seed=0, **KW)


def test_seed_twice_for_one_prompt_refused(pipe):
    with pytest.raises(InvalidInput, match="items 0 and 1 have the same prompt and seed"):
        pipe.txt2img(P, seed=[1, 1], **KW)
    with pytest.raises(InvalidInput, match="same input"):
        pipe.img2img(torch.full((1, 3, 64, 64), -0.5), P, seed=[1, 1], **KW)
    # one seed for two prompts, or for two different images, is two images
    assert pipe.txt2img([P, "a small blue square"], seed=[1, 1], **KW).shape[0] == 2
    imgs = torch.stack([torch.full((3, 64, 64), -0.5), torch.full((3, 64, 64), 0.5)])  # a bright one: said so
    assert pipe.img2img(imgs, P, seed=[1, 1], image_range=(-1, 1), **KW).shape[0] == 2


# ---- 3, 4. the CLI: every value refused before the weights are read; a wrong --vae is a usage error


@pytest.mark.parametrize("argv, words", [
    (["generate", P, "--steps", "0"], "argument --steps: 0 is below 1"),
    (["generate", P, "--steps", "100000"], "100000 is more than 10000, the pipeline's step limit"),
    (["generate", P, "--width", "60"], "width 60 is not a positive multiple of 8"),
    (["generate", P, "--schedule", "karas"], "karras"),
    (["generate", P, "--seed", "-1"], "argument --seed: -1 is below 0"),
    (["generate", P, "--vae", "/nonexistent/vae"], "/nonexistent/vae"),
    (["generate", P, "--model", "flow", "--schedule", "karras"], "sigma_max"),
    (["generate", P, "--sampler", "euler", "--schedule", ""], "schedule"),
    (["compare", P, "--steps", "0", "--samplers", "euler", "--n", "1"], "argument --steps: 0 is below 1"),
    (["compare", P, "--seed", "-1", "--samplers", "euler", "--n", "1"], "argument --seed: -1 is below 0"),
    (["compare", P, "--seed", str(2**64 - 1), "--samplers", "euler", "--n", "2"], f"--seed {2**64 - 1} with --n 2"),
    (["compare", P, "--n", "100000", "--samplers", "euler"], "--n 100000 is more than the limit"),
    (["compare", P, "--samplers", "DPM++ 2M Karras", "--schedule", "exponential", "--n", "1"], "a1111:Karras"),
])
def test_cli_refuses_before_loading(no_load, capsys, tmp_path, argv, words):
    from samplers.cli import main

    try:
        status = main(argv + ["--out", str(tmp_path / "x.png")])
    except SystemExit as exit_:  # a value refused as the command line is read (argparse's usage error)
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err


def test_cli_wrong_vae_is_a_usage_error(no_load, capsys, tmp_path):
    from models.vae import VAE
    from samplers.cli import main

    VAE(VAE.load().config).save(tmp_path / "vae2")  # same config, other weights
    assert main(["generate", P, "--vae", str(tmp_path / "vae2"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "VAE mismatch" in err and "--vae" in err and "Pipeline.load" not in err
    with pytest.raises(VAEMismatchError):
        pipeline.PipelineSpec.read(model="eps", vae=tmp_path / "vae2")


def test_a1111_dpm_fast_with_a_schedule_type_in_its_name_keeps_a1111s_whole_range_rule():
    """"DPM fast Simple" (A1111 1.9+'s sampler name with a Schedule type): A1111's txt2img ignores the type for DPM
    fast / adaptive and runs the model's whole σ range, so a type with other ends is refused as schedule="simple"
    is, and one with those ends (Karras) runs."""
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(None, model="eps")
    for name in ("DPM fast Simple", "DPM adaptive sgm_uniform"):
        with pytest.raises(InvalidOption, match="ignores the Schedule type .*Leave the schedule out"):
            spec.plan_run(name, None, 10, {})
    found, sigmas, options, _ = spec.plan_run("DPM fast Karras", None, 10, {})
    assert found.schedule == "a1111:Karras" and len(sigmas) == 11 and options["eta"] == 1.0

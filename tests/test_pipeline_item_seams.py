"""The pipeline at its seams with the samplers and the files it writes: an adaptive sampler's item equals the item made
alone, save_images refuses tensors before writing, the pipeline's denoiser takes fp16 / bf16 latents as any module
model does and refuses σ it cannot evaluate, a sampler name a PNG cannot record is refused before any model call (and
an infotext never loses an image), a fitted run hashes the weights once, and the fitted file / config messages say
what is wrong. Runs are 32×32, a few steps."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import samplers
from models import io as mio
from models import pipeline
from models.pipeline import Pipeline, png_info, save_images
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType, SamplersError
from samplers.fitted.solver import LearnedSolver, OtherModelError

from test_cli import _refused  # noqa: E402 (the CLI boundary's check; no_load is conftest's)

ROOT = Path(__file__).resolve().parent.parent
FITTED_EPS = ROOT / "docs" / "benchmarks" / "fitted" / "eps" / "nfe4.json"
FITTED_FLOW = ROOT / "docs" / "benchmarks" / "fitted" / "flow" / "nfe4.json"
P, P2 = "a large red circle at the top left", "a small blue square at the bottom"
SMALL = dict(progress=False, output="tensor", width=32, height=32)
ALONE = 2e-4  # an item against the one made alone: the U-Net's batched arithmetic (docs/models.md: about 1e-4)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load(model="eps")


# ---- an item of a batch equals the item made alone, for a sampler whose steps depend on the batch too


@pytest.mark.parametrize("sampler", ["dpm_adaptive", "DPM adaptive"])
def test_an_adaptive_samplers_item_equals_the_item_made_alone(pipe, sampler):
    kw = dict(sampler=sampler, steps=3, **SMALL)
    batch = pipe.txt2img([P, P2], seed=[0, 1], **kw)
    for k, (prompt, seed) in enumerate([(P, 0), (P2, 1)]):
        alone = pipe.txt2img(prompt, seed=seed, **kw)[0]
        assert float((batch[k] - alone).abs().max()) < ALONE, (sampler, k)


def test_an_adaptive_samplers_inpainted_item_equals_the_item_made_alone(pipe):
    image = pipe.txt2img(P, seed=5, steps=2, **SMALL)
    mask = torch.zeros(32, 32)
    mask[:, 16:] = 1
    kw = dict(sampler="DPM adaptive", steps=3, progress=False, output="tensor")
    batch = pipe.inpaint(image, mask, P, seed=[3, 4], **kw)
    for k, seed in enumerate([3, 4]):
        alone = pipe.inpaint(image, mask, P, seed=seed, **kw)[0]
        assert float((batch[k] - alone).abs().max()) < ALONE, k


def test_an_adaptive_samplers_info_adds_up_the_items_runs(pipe):
    kw = dict(sampler="dpm_adaptive", steps=3, **SMALL)
    both, one, other = {}, {}, {}
    pipe.txt2img([P, P2], seed=[0, 1], info=both, **kw)
    pipe.txt2img(P, seed=0, info=one, **kw)
    pipe.txt2img(P2, seed=1, info=other, **kw)
    assert both["items"] == [one, other]
    assert both["nfe"] == one["nfe"] + other["nfe"] and both["n_accept"] == one["n_accept"] + other["n_accept"]


def test_a_fixed_step_sampler_still_runs_the_batch_in_one_call(pipe):
    before = pipe.nfe
    pipe.txt2img([P, P2], seed=[0, 1], sampler="euler", steps=3, **SMALL)
    assert pipe.nfe - before == 3  # one (CFG-batched) call per step for both items


def _steps_seen(calls: list) -> list:
    """The (item, i, batch size) of each callback dict, in the order they came."""
    return [(d.get("item"), d["i"], d["x"].shape[0]) for d in calls]


def test_a_callback_gets_each_items_steps_where_items_run_alone(pipe):
    """docs/models.md: where the items run alone (dpm_adaptive) the callback gets each item's run in turn, with
    "item": k, each dict the one the item made alone gives (it was refused as an unknown option)."""
    kw = dict(sampler="dpm_adaptive", steps=3, rtol=0.5, atol=0.5, **SMALL)
    both, one, other = [], [], []
    pipe.txt2img([P, P2], seed=[0, 1], callback=both.append, **kw)
    pipe.txt2img(P, seed=0, callback=one.append, **kw)
    pipe.txt2img(P2, seed=1, callback=other.append, **kw)
    assert one and other
    assert _steps_seen(both) == [(0, i, 1) for _, i, _ in _steps_seen(one)] + [(1, i, 1) for _, i, _ in
                                                                                 _steps_seen(other)]
    for d, alone in zip(both, one + other):
        assert float((d["x"] - alone["x"]).abs().max()) < ALONE


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_a_callback_gets_the_whole_batch_per_step_where_the_batch_runs_in_one_call(pipe, task):
    """A sampler that runs the batch in one call (euler) calls back once per step with the batch's tensors, the
    sampler's own dict (k-diffusion's), with no "item"."""
    seen = []
    kw = dict(sampler="euler", steps=4, seed=[0, 1], callback=seen.append, progress=False, output="tensor")
    image = torch.full((1, 3, 32, 32), -0.5)
    if task == "txt2img":
        pipe.txt2img([P, P2], width=32, height=32, **kw)
    elif task == "img2img":
        pipe.img2img(image, [P, P2], strength=0.5, **kw)
    else:
        mask = torch.zeros(32, 32)
        mask[:, 16:] = 1
        pipe.inpaint(image, mask, [P, P2], **kw)
    steps = 2 if task == "img2img" else 4  # img2img at strength 0.5 runs round(0.5 · 4) of the steps
    assert _steps_seen(seen) == [(None, i, 2) for i in range(steps)]
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_a_callback_that_is_not_callable_is_refused_before_any_model_call(pipe, monkeypatch, task):
    from test_pipeline import model_calls

    calls = model_calls(pipe, monkeypatch)
    image, mask = torch.full((1, 3, 32, 32), -0.5), torch.ones(32, 32)
    run = {"txt2img": lambda **k: pipe.txt2img(P, width=32, height=32, **k), "img2img": lambda **k: pipe.img2img(image, P, **k),
           "inpaint": lambda **k: pipe.inpaint(image, mask, P, **k)}[task]
    with pytest.raises(InvalidType, match="callback must be callable .*got str"):
        run(steps=2, callback="print", progress=False, output="tensor")
    assert calls == []


# ---- save_images takes PIL images only, and says how to make them


@pytest.mark.parametrize("images", [torch.zeros(2, 3, 8, 8), [torch.zeros(3, 8, 8)],
                                   [Image.new("RGB", (8, 8)), torch.zeros(3, 8, 8).numpy()]])
def test_save_images_refuses_what_is_not_a_pil_image_before_writing(tmp_path, images):
    with pytest.raises(InvalidType, match=r"output=\"pil\".*models\.data\.to_pil"):
        save_images(images, tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


# ---- the pipeline's denoiser is a module model: fp16 / bf16 latents run, the U-Net in its own float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_pipelines_denoiser_takes_half_precision_latents(pipe, dtype):
    d = pipe.denoiser(P, 3.0)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    before = pipe.nfe
    half = d(x.to(dtype), torch.tensor(2.0))
    full = d(x.to(dtype).float(), torch.tensor(2.0))
    assert pipe.nfe - before == 2  # counted as before: one per (CFG-batched) call
    assert half.dtype == torch.float32 and torch.allclose(half, full, atol=1e-5)
    sigmas = pipe.sigmas(None, 3)
    run = samplers.sample("euler", d, x.to(dtype) * float(sigmas[0]), sigmas, disable=True)
    ref = samplers.sample("euler", d, (x.to(dtype).float() * float(sigmas[0])).to(dtype).float(), sigmas, disable=True)
    assert run.dtype == dtype and torch.allclose(run.float(), ref, rtol=1e-2, atol=1e-2)  # the result's rounding


def test_the_pipelines_identity_is_unchanged_by_its_module(pipe):
    from samplers.fitted import identity

    assert identity.fingerprint(pipe._denoiser) == pipe.samplers_fingerprint()
    pipe.check_fitted(LearnedSolver.load(FITTED_EPS))  # the shipped solver still is its own


@pytest.mark.parametrize("sigma", [math.inf, math.nan, -math.inf])
def test_a_sigma_the_eps_model_cannot_take_is_refused_before_the_model_call(pipe, sigma):
    d = pipe.denoiser(P, 3.0)
    before = pipe.nfe
    with pytest.raises(InvalidInput, match="sigma"):
        d(torch.zeros(1, 4, 8, 8), torch.tensor(sigma))
    assert pipe.nfe == before


# ---- a sampler name that is not UTF-8 (a file name in another encoding) is refused before any model call


BAD = "fitted:/tmp/bad\udcffname.json"  # how Python reads the byte 0xff of a file name or an argument


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad\udcffname.json"
    shutil.copy(FITTED_EPS, path)
    return "fitted:" + str(path)


def test_a_sampler_name_that_is_not_utf8_is_refused_by_the_pipeline(pipe, bad_file):
    before = pipe.nfe
    with pytest.raises(InvalidInput, match=r"bad\\xffname.json.*UTF-8.*rename"):
        pipe.txt2img(P, sampler=bad_file, seed=0, **SMALL)
    with pytest.raises(InvalidInput, match="UTF-8"):
        pipeline.check_sampler(bad_file)
    assert pipe.nfe == before


@pytest.mark.parametrize("command", ["generate", "compare"])
def test_a_sampler_name_that_is_not_utf8_is_refused_by_the_cli_before_the_weights(capsys, no_load, tmp_path,
                                                                                    bad_file, command):
    flag = "--sampler" if command == "generate" else "--samplers"
    _refused(capsys, [command, P, flag, bad_file, "--out", str(tmp_path / "g.png")], "UTF-8", "\\xff")


def test_an_infotext_that_is_not_utf8_still_writes_the_image(tmp_path):
    request = {"prompt": P, "sampler": BAD, "seed": 0, "options": {"solver": "/a/\udcff.json"}}
    path = mio.atomic_save_image(tmp_path / "a.png", Image.new("RGB", (8, 8)), png_info(request))
    text = Image.open(path).text
    assert "bad\\xffname.json" in text["parameters"] and json.loads(text["request"])["sampler"] == BAD


# ---- a fitted run hashes the weights once


def test_a_fitted_txt2img_hashes_the_weights_once(pipe, monkeypatch):
    from samplers.fitted import identity

    calls = []
    real = identity.module_fingerprint
    monkeypatch.setattr(identity, "module_fingerprint", lambda m: calls.append(m) or real(m))
    pipe.txt2img(P, sampler=f"fitted:{FITTED_EPS}", seed=0, **SMALL)
    assert len(calls) == 1


def test_a_fitted_run_on_changed_weights_is_still_refused(pipe):
    p = next(pipe.model.unet.parameters())
    keep = p.detach().clone()
    try:
        with torch.no_grad():
            p.add_(1e-3)
        with pytest.raises(OtherModelError, match="not to this model"):
            pipe.txt2img(P, sampler=f"fitted:{FITTED_EPS}", seed=0, **SMALL)
    finally:
        with torch.no_grad():
            p.copy_(keep)


# ---- a fitted file's messages name what is missing


@pytest.mark.parametrize("field", ["nfe", "sigma_max", "sigma_min", "model"])
def test_a_fitted_file_without_a_field_is_refused_for_that_field(tmp_path, field):
    data = json.loads(FITTED_EPS.read_text())
    del data[field]
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match=field) as err:
        LearnedSolver.load(path)
    assert ("model record" in str(err.value)) == (field == "model"), str(err.value)


@pytest.mark.parametrize("name", ["fitted :x.json", " FITTED: x.json", "Fitted\t:x.json"])
def test_a_config_default_sampler_with_the_fitted_prefix_is_refused_as_resolve_reads_it(name):
    from models._checks import check_defaults

    with pytest.raises(SamplersError, match="a fitted solver is chosen per call"):
        check_defaults({"defaults": {"sampler": name}}, "config.json")


def test_the_cli_names_its_own_flag_where_a_solver_from_inf_cannot_run(capsys, no_load, tmp_path):
    line = _refused(capsys, ["generate", P, "--sampler", f"fitted:{FITTED_FLOW}", "--allow-other-model",
                             "--out", str(tmp_path / "g.png")], "σ = inf")
    assert "--allow-other-model does not change them" in line and "allow_other_model " not in line, line


def test_a_batch_wide_noise_object_is_refused_where_items_run_alone(pipe):
    before = pipe.nfe
    with pytest.raises(InvalidOption, match="runs each of the 2 items on its own.*by name"):
        pipe.txt2img([P, P2], seed=[0, 1], sampler="dpm_adaptive", eta=1.0, steps=3,
                     noise_sampler=lambda sigma, sigma_next: torch.zeros(2, 4, 4, 4), **SMALL)
    assert pipe.nfe == before


def test_only_samplers_whose_steps_depend_on_the_batch_run_items_alone():
    from models.pipeline import runs_items_alone
    alone = {n for n in samplers.available() if runs_items_alone(n)}
    assert alone == {"dpm_adaptive", "torchdiffeq.dopri5", "torchdiffeq.dopri8", "torchdiffeq.bosh3",
                     "torchdiffeq.fehlberg2", "torchdiffeq.adaptive_heun", "torchdiffeq.implicit_adams",
                     "torchdiffeq.fixed_adams"}
    # torchsde's solvers and torchdiffeq's fixed grids are batch-invariant: they keep their batch (one run, half the
    # model calls of two)
    assert not runs_items_alone("torchsde.euler") and not runs_items_alone("torchdiffeq.rk4")

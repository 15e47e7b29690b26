"""The pipeline's inputs refused at its boundary, before any model call: the noise a sampler will build, empty seed
lists, an img2img / inpaint strength the schedule cannot honour, prompts of ``denoiser``, ``progress``, masks."""

import math
import re

import numpy as np
import pytest
import torch

import samplers
from models.pipeline import Pipeline, PipelineSpec, check_sampler
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.core.noise import PredrawnNoise
from samplers.core.seeds import resolve_seeds

from test_cli import _refused  # the CLI boundary's check (no_load is conftest's)
from test_pipeline import IMG, model_calls, parts  # noqa: F401  (a fixture)

PROMPT = "a red circle"
HALF = torch.zeros(64, 64)
HALF[:, :32] = 1  # regenerate the left half


def _run(pipe, task: str, **kw):
    kw = {"sampler": "euler", "steps": 2, "seed": 0, "progress": False, "output": "tensor", **kw}
    if task == "txt2img":
        return pipe.txt2img(PROMPT, **kw)
    if task == "img2img":
        return pipe.img2img(IMG, PROMPT, **{"strength": 0.5, **kw})
    return pipe.inpaint(IMG, kw.pop("mask", HALF), PROMPT, **kw)


TASKS = ["txt2img", "img2img", "inpaint"]


# ------------------------------------------------------------------- 1. the noise, checked as the sampler checks it


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("value, error, rule", [("foo", InvalidOption, "unknown noise_sampler 'foo'"),
                                                (42, InvalidType, "noise_sampler must be callable")])
def test_a_bad_noise_sampler_is_refused_before_any_model_call(parts, monkeypatch, task, value, error, rule):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(error, match=rule):
        _run(parts["eps"], task, sampler="euler_ancestral", noise_sampler=value)
    assert not calls


@pytest.mark.parametrize("task, kw", [("txt2img", {}), ("img2img", {"strength": 1.0}), ("inpaint", {}),
                                      ("txt2img", {"sampler": "DPM++ 2M SDE", "schedule": "flow"})])
def test_a_brownian_tree_from_sigma_inf_is_refused_before_any_model_call(parts, monkeypatch, task, kw):  # noqa: F811
    """The flow schedule starts at σ = inf, where k-diffusion's tree cannot be built (the label implies the tree)."""
    calls = model_calls(parts["flow"], monkeypatch)
    kw = {"sampler": "dpmpp_2m_sde", **({"noise_sampler": "brownian_tree"} if "sampler" not in kw else {}), **kw}
    with pytest.raises(InvalidInput, match="Brownian tree lives on the schedule's finite range"):
        _run(parts["flow"], task, **kw)
    assert not calls


def test_a_brownian_tree_is_checked_on_the_part_of_the_schedule_img2img_runs(parts):  # noqa: F811
    """img2img below strength 1 runs a finite part of the flow schedule: the tree is built there, and runs."""
    out = _run(parts["flow"], "img2img", sampler="dpmpp_2m_sde", noise_sampler="brownian_tree", steps=4, strength=0.5)
    assert out.shape == (1, 3, 64, 64) and bool(torch.isfinite(out).all())


def test_predrawn_noise_of_another_shape_is_refused_before_any_model_call(parts, monkeypatch):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="pre-drawn noise has shape"):
        _run(parts["eps"], "txt2img", sampler="euler_ancestral", noise_sampler=PredrawnNoise(torch.zeros(2, 1, 4, 4, 4)))
    assert not calls


def test_the_planning_checks_the_noise_without_the_weights():
    with pytest.raises(InvalidOption, match="unknown noise_sampler 'foo'"):
        check_sampler("euler_ancestral", options={"noise_sampler": "foo"})
    flow = PipelineSpec.read(model="flow")
    with pytest.raises(InvalidInput, match="Brownian tree"):
        flow.check_request("DPM++ 2M SDE", "flow", 2)
    with pytest.raises(InvalidInput, match="Brownian tree"):
        flow.plan_run("dpmpp_2m_sde", None, 2, {"noise_sampler": "brownian_tree"})
    flow.check_request("dpmpp_2m_sde", "flow", 2, {"noise_sampler": "brownian"})  # exact from σ = inf
    PipelineSpec.read(model="eps").check_request("DPM++ 2M SDE", None, 2)  # a finite schedule: the tree is built


@pytest.mark.parametrize("argv, words", [
    (["--model", "flow", "--sampler", "DPM++ 2M SDE", "--schedule", "flow"], ["Brownian tree"]),
    (["--model", "flow", "--sampler", "dpmpp_2m_sde", "--option", "noise_sampler=brownian_tree"], ["Brownian tree"]),
    (["--sampler", "euler_ancestral", "--option", "noise_sampler=foo"], ["unknown noise_sampler", "'foo'"]),
])
def test_the_cli_refuses_the_noise_before_the_weights_are_read(capsys, no_load, tmp_path, argv, words):
    _refused(capsys, ["generate", PROMPT, *argv, "--steps", "2", "--out", str(tmp_path / "a.png")], *words)


# ------------------------------------------------------------------------------------------- 2. an empty seed list


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", [[], (), np.array([], dtype=np.int64), torch.tensor([], dtype=torch.long)],
                         ids=["list", "tuple", "numpy", "torch"])
def test_an_empty_seed_list_is_refused_before_any_model_call(parts, monkeypatch, task, seed):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="at least one seed"):
        _run(parts["eps"], task, seed=seed)
    assert not calls


def test_resolve_seeds_refuses_an_empty_list_for_every_caller():
    for batch in (0, 1, 3):
        with pytest.raises(InvalidInput, match="seed is an empty list: pass at least one seed"):
            resolve_seeds([], batch)
    assert resolve_seeds([4], 1) == [4] and resolve_seeds(2, 2) == [2, 3]


# ------------------------------------------------------------------ 3 / 4. a strength the schedule cannot honour


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
@pytest.mark.parametrize("steps, strength, fixes", [(2, 0.75, ["at least 3", "at most 0.5"]),
                                                    (4, 0.9, ["at least 5", "at most 0.75"]),
                                                    (1, 0.6, ["at least 2"])])
def test_a_strength_that_keeps_the_start_at_sigma_inf_is_refused(parts, monkeypatch, task, steps, strength, fixes):  # noqa: F811
    """round(strength · steps) keeps the whole flow schedule: its start, σ = inf, is pure noise and the image would
    not shape the result. The rounding is kept (it makes the images of every valid call); the case is refused."""
    calls = model_calls(parts["flow"], monkeypatch)
    with pytest.raises(InvalidInput) as err:
        _run(parts["flow"], task, steps=steps, strength=strength)
    assert not calls
    text = str(err.value)
    for word in [f"strength={strength:g}", f"schedule of {steps} steps", "σ = inf", "would not shape the result",
                 "strength=1", *fixes]:
        assert word in text, (word, text)
    if steps == 1:
        assert "lower strength" not in text  # one step: no lower strength runs part of it


def test_the_fixes_named_for_a_start_at_sigma_inf_run(parts):  # noqa: F811
    flow = parts["flow"]
    for steps, strength in ((2, 0.75), (4, 0.9), (1, 0.6), (10, 0.97)):
        sig = flow.sigmas(None, steps)
        with pytest.raises(InvalidInput) as err:
            Pipeline._cut(sig, strength, "the start")
        more = int(str(err.value).split("at least ")[1].split(")")[0])
        assert math.isfinite(float(Pipeline._cut(flow.sigmas(None, more), strength, "x")[0]))
        assert math.isinf(float(samplers.schedules.truncate(flow.sigmas(None, more - 1), strength)[0]))
        if steps > 1:
            assert math.isfinite(float(Pipeline._cut(sig, (steps - 1) / steps, "x")[0]))
    # strength 1 is a run from pure noise, as asked; below 1 with enough steps the image shapes the start
    assert math.isinf(float(Pipeline._cut(flow.sigmas(None, 2), 1.0, "x")[0]))
    assert math.isfinite(float(Pipeline._cut(flow.sigmas(None, 2), 0.5, "x")[0]))


def test_flow_img2img_below_strength_one_runs_where_the_start_is_finite(parts):  # noqa: F811
    a = _run(parts["flow"], "img2img", steps=2, strength=0.5)
    b = parts["flow"].img2img(IMG - 0.25, PROMPT, strength=0.5, sampler="euler", steps=2, seed=0, progress=False,
                              output="tensor")
    assert not torch.equal(a, b)  # the image shapes the result


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_strength_below_half_a_step_is_refused_not_raised_to_a_step(parts, monkeypatch, task):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    for strength, steps, words in ((1e-6, 4, ["strength=1e-06", "schedule of 4 steps", "above 0.125",
                                              "strength=0.25 runs one"]),
                                   (0.1, 4, ["strength=0.1", "above 0.125", "at least 6 steps"]),
                                   (0.125, 4, ["above 0.125"])):
        with pytest.raises(InvalidInput, match="rounds to no step") as err:
            _run(parts["eps"], task, steps=steps, strength=strength)
        assert all(w in str(err.value) for w in words), str(err.value)
        assert "at least" not in str(err.value) or strength >= 1e-4  # no step count past the limit is named
    assert not calls
    _run(parts["eps"], task, steps=4, strength=0.126)  # one step: runs, as before
    _run(parts["eps"], task, steps=6, strength=0.1)


def test_a_strength_refusal_counts_the_schedules_own_steps(parts):  # noqa: F811
    """A1111's "DDIM" at steps=10 has a schedule of 9 steps: the refusal said "at steps=9 ... or steps >= 10", a fix
    that gave the same refusal. It names the schedule's count, and its fix is a schedule of that many steps."""
    with pytest.raises(InvalidInput, match="rounds to no step") as err:
        _run(parts["eps"], "img2img", steps=10, strength=0.052, sampler="DDIM")
    text = str(err.value)
    assert "schedule of 9 steps" in text and "steps=9" not in text and "schedule has at least 10 steps" in text, text
    _run(parts["eps"], "img2img", steps=11, strength=0.052, sampler="DDIM")  # 11 steps: a schedule of 11


def test_a_strength_under_half_a_step_from_sigma_inf_names_only_strengths_that_run(parts):  # noqa: F811
    """On the flow model's schedule (from σ = inf) the refusal said "pass a strength above 0.5" at 1 step, and the
    strengths it named up to 1 were refused next for keeping the whole schedule from pure noise."""
    flow = parts["flow"]
    for steps, strength in ((1, 0.4), (2, 0.2), (4, 0.1)):
        sig = flow.sigmas(None, steps)
        with pytest.raises(InvalidInput, match="rounds to no step") as err:
            Pipeline._cut(sig, strength, "the start")
        text = str(err.value)
        assert "strength=1 for a run from pure noise" in text, text
        if steps == 1:
            assert "above" not in text, text
            continue
        lo, hi = (float(v) for v in re.search(r"above ([\d.]+) and below ([\d.]+)", text).groups())
        for ok in (lo + 1e-9, (lo + hi) / 2, hi - 1e-9):
            assert math.isfinite(float(Pipeline._cut(sig, ok, "x")[0]))  # runs, from a finite σ


def test_truncate_itself_is_unchanged():
    sig = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0])
    assert torch.equal(samplers.schedules.truncate(sig, 1e-6), sig[-2:])  # its floor of one step stays
    assert torch.equal(samplers.schedules.truncate(sig, 0.5), sig[-3:])
    assert torch.equal(samplers.schedules.truncate(sig, 1.0), sig)


# ------------------------------------------------------------------------------- 6. the prompts of denoiser()


@pytest.mark.parametrize("prompt, error, rule", [(None, InvalidType, "prompt must be a string or a list of strings"),
                                                 (5, InvalidType, "prompt must be a string or a list of strings"),
                                                 ([], InvalidInput, "no prompt given"),
                                                 (["a", 3], InvalidType, "prompt must be")])
def test_denoiser_checks_its_prompts_as_txt2img_does(parts, monkeypatch, prompt, error, rule):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(error, match=rule):
        parts["eps"].denoiser(prompt, 3.0)
    with pytest.raises(error, match=rule):
        parts["eps"].txt2img(prompt, steps=2, seed=0, progress=False)
    assert not calls
    parts["eps"].denoiser(("a red circle", "a blue square"), 3.0)


# -------------------------------------------------------------------------------------------------- 7. progress


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("progress", ["no", None, 0, 1])
def test_progress_must_be_a_bool(parts, monkeypatch, task, progress):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidType, match=f"progress must be True .* or False, got {progress!r}"):
        _run(parts["eps"], task, progress=progress)
    assert not calls


# ----------------------------------------------------------------------------------------------------- 8. masks


def test_more_masks_than_items_says_how_to_make_the_items(parts, monkeypatch):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="got 3 masks for a batch of 1 .*one seed per mask .*one prompt per mask"):
        _run(parts["eps"], "inpaint", mask=HALF.expand(3, 1, 64, 64))
    with pytest.raises(InvalidInput, match="got 2 masks for a batch of 3 .*one mask for every item, or 3 masks"):
        parts["eps"].inpaint(IMG.expand(3, 3, 64, 64), HALF.expand(2, 1, 64, 64), PROMPT, steps=2, seed=0,
                             progress=False)
    assert not calls
    out = _run(parts["eps"], "inpaint", mask=HALF.expand(3, 1, 64, 64), seed=[0, 1, 2])  # one seed per mask
    assert out.shape == (3, 3, 64, 64)


@pytest.mark.parametrize("mask", [torch.zeros(64, 64), torch.full((64, 64), 0.5), torch.full((64, 64), 0.3)])
def test_a_mask_that_keeps_every_pixel_is_refused_before_any_model_call(parts, monkeypatch, mask):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="the mask keeps every pixel: nothing to inpaint"):
        _run(parts["eps"], "inpaint", mask=mask)
    two = torch.stack([HALF[None], mask[None]])
    with pytest.raises(InvalidInput, match=r"the masks of items \[1\] keep every pixel"):
        _run(parts["eps"], "inpaint", mask=two, seed=[0, 1])
    assert not calls
    _run(parts["eps"], "inpaint", mask=torch.full((64, 64), 0.51))  # above 0.5: regenerated


def test_the_docs_say_where_the_mask_threshold_differs_from_diffusers():
    """0.5 is kept here (the test above) and regenerated by diffusers' binarize; docs/models.md said "as diffusers'"
    without the exception. Only a float mask can hold 0.5: an 8-bit one's nearest values are 127/255 and 128/255."""
    from pathlib import Path

    pytest.importorskip("diffusers")
    from diffusers.image_processor import VaeImageProcessor

    half = torch.full((1, 1, 8, 8), 0.5)
    got = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True).preprocess(half)
    assert float(got.max()) == 1.0  # diffusers regenerates exactly 0.5
    assert 127 / 255 < 0.5 < 128 / 255
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text().split())
    assert "`VaeImageProcessor.binarize` regenerates a value of exactly 0.5, which this pipeline keeps" in text


# ------------------------------------------------------------------- seeds the CPU generator reads as one


def test_seeds_that_differ_by_a_multiple_of_2_32_are_refused_as_one_image_twice(parts, monkeypatch):  # noqa: F811
    """torch's CPU generator reads a seed's low 32 bits: 0 and 2**32 drew the same noise, the same image twice."""
    from samplers.core.seeds import seeded_randn

    assert torch.equal(*seeded_randn((2, 4), [0, 2**32]))  # the reason: the noise is one
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=r"items 0 and 1 have the same prompt and seeds 0 and 4294967296, which "
                                           r"differ by a multiple of 2\*\*32: .*CPU generator.*low 32 bits"):
        _run(parts["eps"], "txt2img", seed=[0, 2**32])
    with pytest.raises(InvalidInput, match="seeds 5 and 8589934597"):
        _run(parts["eps"], "img2img", seed=[5, 2**33 + 5])
    assert not calls
    _run(parts["eps"], "txt2img", seed=[0, 2**32 + 1])  # another seed below 2**32: another image


def test_the_cli_refuses_seeds_2_32_apart_before_the_weights_are_read(capsys, no_load, tmp_path):
    _refused(capsys, ["generate", "a red circle", "--seed", "0", "4294967296", "--out", str(tmp_path / "d.png")],
             "seeds 0 and 4294967296", "multiple of 2**32", "low 32 bits")


@pytest.mark.parametrize("noise", ["brownian", "brownian_tree"])
def test_seeds_2_32_apart_run_where_a_brownian_path_reads_the_whole_seed(parts, noise):  # noqa: F811
    # the start is the same noise, but a Brownian path is seeded with the whole seed: two images, not one twice
    out = _run(parts["eps"], "txt2img", sampler="euler_ancestral", seed=[0, 2**32], noise_sampler=noise, steps=3)
    assert not torch.equal(out[0], out[1])
    parts["eps"].check_request("euler_ancestral", None, 3, {"noise_sampler": noise}, seed=[0, 2**32], batch=2,
                               prompt=PROMPT)
    for same in ({}, {"noise_sampler": "default"}, {"noise_sampler": " Seeded"}, {"noise_sampler": "comfyui"},
                 {"noise_sampler": "a1111"}, {"noise_sampler": "a1111_cpu"}):
        with pytest.raises(InvalidInput, match="multiple of 2"):  # the same sampler with generator noise: one image
            parts["eps"].check_request("euler_ancestral", None, 3, same, seed=[0, 2**32], batch=2, prompt=PROMPT)
    # an A1111 label's draws (the pipeline's "a1111_cpu") too; A1111's NV numbers are keyed by the whole seed
    with pytest.raises(InvalidInput, match="multiple of 2"):
        parts["eps"].check_request("Euler a", None, 3, {}, seed=[0, 2**32], batch=2, prompt=PROMPT)
    parts["eps"].check_request("euler_ancestral", None, 3, {"noise_sampler": "a1111_nv"}, seed=[0, 2**32], batch=2,
                               prompt=PROMPT)


# ------------------------------------------------------------------- a prompt longer than the encoder reads


LONG = ("a large red circle at the top left and a small blue square at the bottom right and a red ring in the "
        "centre and more words here")  # 28 words; the shipped encoder reads 23 (max_length 24 with <bos>)


@pytest.mark.parametrize("command", [["generate"], ["compare", "--samplers", "euler", "--steps", "2", "--n", "1"]])
def test_the_cli_refuses_a_prompt_too_long_before_the_weights_are_read(capsys, no_load, tmp_path, command):
    _refused(capsys, [command[0], LONG, *command[1:], "--out", str(tmp_path / "p.png")],
             "prompt 0 has 28 words", "reads at most 23", "shorten it")


def test_check_request_reads_the_prompt_by_the_encoders_rule_without_weights(parts):  # noqa: F811
    spec = PipelineSpec.read(model="eps")
    assert spec.tokenizer.max_length == 24 and spec.tokenizer.vocab == parts["eps"].tokenizer.vocab
    with pytest.raises(InvalidInput, match="prompt 0 has 28 words"):
        spec.check_request(prompt=LONG)
    with pytest.raises(InvalidType, match="prompt must be a string"):
        spec.check_request(prompt=3)
    with pytest.raises(InvalidInput, match="items 0 and 1 have the same prompt and seed"):
        spec.check_request(prompt=PROMPT, seed=[4, 4], batch=2)
    spec.check_request(prompt=PROMPT, seed=[4, 5], batch=2)


# ------------------------------------------------------------------- the progress bar counts every step


@pytest.mark.parametrize("kind", ["eps", "flow"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_the_progress_bar_counts_every_step(parts, monkeypatch, kind, sampler):  # noqa: F811
    """The flow schedule starts at σ = inf, whose step runs before the sampler's loop: the bar counted 4 of 5."""
    from tqdm.auto import tqdm

    from samplers.core import run

    bars = []

    class Recorded(tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append((self, k.get("disable")))  # tqdm's close sets its own disable

    monkeypatch.setattr(run, "tqdm", Recorded, raising=False)
    monkeypatch.setattr(run, "trange", lambda *a, **k: Recorded(range(*a), **k))
    _run(parts[kind], "txt2img", sampler=sampler, steps=5, progress=True)
    assert [(b.n, b.total) for b, off in bars if not off] == [(5, 5)]  # (a probe of the schedule: disabled)


def test_the_docs_give_img2img_step_counts_of_diffusers_and_a1111_as_they_are():
    """round(strength · steps) here; diffusers 0.42's get_timesteps int(steps · strength); A1111's
    setup_img2img_steps t_enc = int(min(strength, 0.999) · steps), then sigmas[steps - t_enc - 1:]: t_enc + 1."""
    from pathlib import Path
    from types import SimpleNamespace

    pytest.importorskip("diffusers")
    from diffusers import StableDiffusionImg2ImgPipeline

    def a1111(strength, steps):
        t_enc = int(min(strength, 0.999) * steps)
        return len(list(range(steps + 1))[steps - t_enc - 1:]) - 1  # σ values of sigma_sched, less one

    spec = PipelineSpec.read(model="eps")
    for strength, steps, ours, theirs, a11 in ((0.68, 10, 7, 6, 7), (0.25, 10, 2, 2, 3)):
        fake = SimpleNamespace(scheduler=SimpleNamespace(timesteps=torch.arange(steps - 1, -1, -1), order=1))
        _, run = StableDiffusionImg2ImgPipeline.get_timesteps(fake, steps, strength, "cpu")
        assert (len(Pipeline._cut(spec.sigmas("karras", steps), strength, "")) - 1, run, a1111(strength, steps)) \
            == (ours, theirs, a11)
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text().split())
    assert ("matches neither diffusers' `int(steps · strength)` (`StableDiffusionImg2ImgPipeline.get_timesteps`) nor "
            "A1111's default `int(min(strength, 0.999) · steps) + 1`") in text
    assert "strength 0.68 at 10 steps runs 7 here, 6 in diffusers, 7 in A1111; 0.25 at 10 runs 2, 2 and 3" in text


def test_check_request_counts_the_batch_as_txt2img_does(parts):  # noqa: F811
    # batch=None is txt2img's: one item per prompt (or per seed); check_request defaulted to 1 and refused two prompts
    spec = parts["eps"]
    spec.check_request("euler", None, 2, prompt=["a red circle", "a blue square"])
    spec.check_request("euler", None, 2, seed=[3, 4], prompt="a red circle")
    with pytest.raises(InvalidInput, match="2 prompts for a batch of 3"):
        spec.check_request("euler", None, 2, prompt=["a red circle", "a blue square"], batch=3)

"""Pipeline: VAE checks, errors, per-item seeds, img2img / inpaint, CLI; and the shipped weights."""

import math
from pathlib import Path

import pytest
import torch

import samplers
from models import checker, data
from models.pipeline import WEIGHTS, Pipeline, VAEMismatchError, save_images
from models.unet import DiffusionModel, vae_record
from models.vae import VAE, VAEConfig

from test_text_unet import randomize, tiny_config




def tiny_vae(tmp_path: Path, name: str = "vae-tiny", latent_channels: int = 4, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    vae = VAE(VAEConfig(name=name, channels=(8, 8, 16), latent_channels=latent_channels, groups=4,
                        scaling_factor=0.5, shift_factor=0.1))
    folder = tmp_path / f"{name}-{latent_channels}-{seed}"
    vae.save(folder)
    return VAE.load(folder)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    vae = tiny_vae(tmp)
    out = {}
    for kind in ("eps", "flow"):
        torch.manual_seed(1)
        model = randomize(DiffusionModel(tiny_config(prediction=kind, vae=vae_record(vae))), seed=2)
        out[kind] = Pipeline(model, vae)
    out["vae"], out["tmp"] = vae, tmp
    return out


# --------------------------------------------------------------------------------------------- errors


def test_vae_mismatch_names_expected_vae(parts):
    other = tiny_vae(parts["tmp"], name="vae-other", seed=5)
    with pytest.raises(VAEMismatchError, match="vae-tiny"):
        Pipeline(parts["eps"].model, other)
    same_name = tiny_vae(parts["tmp"], seed=6)  # same name, other weights
    with pytest.raises(VAEMismatchError, match="weights_sha256"):
        Pipeline(parts["eps"].model, same_name)


def test_latent_channel_mismatch(parts):
    vae16 = tiny_vae(parts["tmp"], latent_channels=16)
    with pytest.raises(VAEMismatchError, match="latent channels"):
        Pipeline(parts["eps"].model, vae16)


def test_size_errors_name_nearest_valid(parts):
    with pytest.raises(ValueError, match="56 or 64"):
        parts["eps"].txt2img("a red circle", width=60, steps=2, seed=0, progress=False)
    with pytest.raises(ValueError, match="height"):
        parts["eps"].txt2img("a red circle", height=30, steps=2, seed=0, progress=False)


def test_strength_and_mask_errors(parts):
    pipe = parts["eps"]
    img = torch.full((1, 3, 64, 64), -0.5)
    for bad in (0, 0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="strength"):
            pipe.img2img(img, "a red circle", strength=bad, steps=4, progress=False)
    with pytest.raises(ValueError, match="mask"):
        pipe.inpaint(img, torch.ones(32, 32), "a red circle", steps=4, progress=False)


@pytest.mark.parametrize("sampler, options", [("DPM++ 2M SDE Karras", {}), ("comfyui:dpmpp_2m_sde_gpu", {}),
                                              ("dpmpp_2m_sde", {"noise_sampler": "brownian"})])
def test_a_seed_seeds_the_noise_kind_a_label_or_the_caller_names(parts, sampler, options):
    """The SDE labels of A1111 / ComfyUI imply noise_sampler="brownian_tree"; the pipeline's seeds reach that
    kind too (they were dropped: the global generator drew the tree's seed, and the same seed gave another image)."""
    pipe = parts["eps"]
    run = lambda seed, prompt="a red circle", **kw: pipe.txt2img(  # noqa: E731
        prompt, sampler=sampler, steps=4, seed=seed, progress=False, output="tensor", **options, **kw)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = run(0)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(999)
    assert torch.equal(a, run(0))
    pair = run([0, 5], ["a red circle", "a blue square"])
    torch.testing.assert_close(pair[:1], a, atol=1e-4, rtol=0)
    assert not torch.allclose(pair[1:], a, atol=1e-3)


def model_calls(pipe, monkeypatch) -> list:
    """Every call of the text encoder, the VAE and the U-Net of ``pipe`` from now on, by name."""
    calls = []
    for owner, name, label in ((pipe.model, "encode_text", "encode_text"), (pipe.vae, "to_latent", "to_latent"),
                               (pipe.vae, "from_latent", "from_latent"), (pipe.model.unet, "forward", "unet")):
        fn = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _fn=fn, _label=label, **k: calls.append(_label) or _fn(*a, **k))
    return calls


IMG = torch.full((1, 3, 64, 64), -0.5)  # mid-dark grey: a tensor of no negative value is refused as ambiguous ([0, 1]?)
MASK = torch.zeros(64, 64)
MASK[:, :32] = 1  # the left half regenerated (a mask that keeps every pixel is refused: nothing to inpaint)


@pytest.mark.parametrize("task, kw, error, rule", [
    ("img2img", {"etaa": 0.5}, samplers.InvalidOption, "euler has no option 'etaa'"),
    ("img2img", {"sampler": "euler_ancestral", "eta": -1}, samplers.InvalidOption, "eta must be >= 0"),
    ("img2img", {"sampler": "euler_ancestral", "eta": None}, samplers.InvalidOption, "eta=None is not a value"),
    ("inpaint", {"s_churn": "x"}, samplers.InvalidType, "s_churn must be a real number"),
    ("img2img", {"images": torch.full((1, 3, 64, 64), float("nan"))}, samplers.InvalidInput, "images hold NaN"),
    ("img2img", {"images": torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)}, samplers.InvalidType,
     "floating-point tensors in \\[-1, 1\\], got dtype torch.uint8"),
    ("img2img", {"images": torch.full((1, 3, 64, 64), 3.0)}, samplers.InvalidInput, "must lie in \\[-1, 1\\]"),
    ("img2img", {"images": torch.zeros(0, 3, 64, 64)}, samplers.InvalidInput, "B >= 1"),
    ("img2img", {"images": []}, samplers.InvalidInput, "no images given"),
    ("img2img", {"images": [torch.full((3, 64, 64), -0.5), torch.full((3, 32, 32), -0.5)]}, samplers.InvalidInput,
     "share one size"),
    ("inpaint", {"mask": torch.full((64, 64), float("nan"))}, samplers.InvalidInput, "mask values hold NaN"),
    ("inpaint", {"mask": torch.full((64, 64), 255.0)}, samplers.InvalidInput, "mask values must lie in \\[0, 1\\]"),
    ("inpaint", {"mask": torch.zeros(1, 1, 1, 64, 64)}, samplers.InvalidInput, "mask has shape"),
    ("inpaint", {"mask": torch.zeros(64, 64, dtype=torch.uint8)}, samplers.InvalidType, "mask must be"),
])
def test_img2img_and_inpaint_refuse_before_any_model_call(parts, monkeypatch, task, kw, error, rule):
    pipe = parts["eps"]
    calls = model_calls(pipe, monkeypatch)
    kw = {"sampler": "euler", "steps": 2, "seed": 0, "progress": False, **kw}
    images = kw.pop("images", IMG)
    with pytest.raises(error, match=rule):
        if task == "img2img":
            pipe.img2img(images, "a red circle", strength=0.5, **kw)
        else:
            pipe.inpaint(images, kw.pop("mask", MASK), "a red circle", **kw)
    assert not calls


def test_a_bool_mask_and_a_numpy_strength_are_taken(parts):
    pipe = parts["eps"]
    kw = dict(sampler="euler", steps=2, seed=0, output="tensor", progress=False)
    mask = torch.zeros(64, 64)
    mask[8:30, 20:50] = 1
    torch.testing.assert_close(pipe.inpaint(IMG, mask.bool(), "a red circle", **kw),
                               pipe.inpaint(IMG, mask, "a red circle", **kw))
    import numpy as np

    torch.testing.assert_close(pipe.img2img(IMG, "a red circle", strength=np.float32(0.5), **kw),
                               pipe.img2img(IMG, "a red circle", strength=0.5, **kw))


def test_load_refuses_a_folder_of_another_kind_than_the_model_asked():
    if not (WEIGHTS / "eps" / "model.safetensors").is_file():
        pytest.skip("no shipped eps weights")
    with pytest.raises(samplers.InvalidInput, match="holds one with prediction 'eps'"):
        Pipeline.load(WEIGHTS / "eps", model="flow")
    with pytest.raises(samplers.InvalidInput, match="model must be one of"):
        Pipeline.load(WEIGHTS / "eps", model="bogus")
    assert Pipeline.load(WEIGHTS / "flow").model.config.prediction == "flow"


def test_missing_output_folder(parts, tmp_path):
    img = data.to_pil(torch.zeros(3, 64, 64))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_images([img], tmp_path / "nope" / "x.png")
    from samplers.cli import main

    assert main(["generate", "a red circle", "--out", str(tmp_path / "nope" / "x.png")]) == 2  # a usage error


# ----------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("kind,sampler", [("eps", "euler"), ("flow", "heun"), ("eps", "euler_ancestral")])
def test_item_independent_of_batch(parts, kind, sampler):
    pipe = parts[kind]
    kw = dict(sampler=sampler, steps=4, output="tensor", progress=False)
    both = pipe.txt2img(["a red circle", "a blue ring at the top"], seed=[11, 12], **kw)
    alone = pipe.txt2img("a blue ring at the top", seed=12, **kw)
    torch.testing.assert_close(both[1:], alone, atol=1e-4, rtol=1e-4)
    again = pipe.txt2img("a blue ring at the top", seed=[12, 13], **kw)
    torch.testing.assert_close(again[:1], alone, atol=1e-4, rtol=1e-4)


def test_denoiser_is_a_registry_denoiser(parts):
    pipe = parts["flow"]
    D = pipe.denoiser("a red circle", cfg=3.0)
    sigmas = pipe.sigmas("flow", 3)
    assert math.isinf(float(sigmas[0]))
    x = samplers.initial_latent(torch.randn(2, 4, 8, 8), sigmas)
    out = samplers.sample("euler", D, x, sigmas, disable=True)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_img2img_low_strength_stays_near_input(parts):
    pipe = parts["eps"]
    img, _, _ = data.make_batch(3, 2)
    recon = pipe.vae.from_latent(pipe.vae.to_latent(img))
    kw = dict(sampler="euler", steps=20, seed=[0, 1], output="tensor", progress=False)
    low = pipe.img2img(img, "a red circle", strength=0.05, **kw)
    full = pipe.img2img(img, "a red circle", strength=1.0, **kw)
    assert (low - recon).abs().mean() < 0.5 * (full - recon).abs().mean()


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_inpaint_keeps_known_region(parts, kind):
    pipe = parts[kind]
    img, _, _ = data.make_batch(4, 1)
    mask = torch.zeros(64, 64)
    mask[8:30, 20:50] = 1.0
    out = pipe.inpaint(img, mask, "a red circle", sampler="euler", steps=4, seed=0, output="tensor", progress=False)
    keep = mask == 0
    assert torch.equal(out[0][:, keep], img[0][:, keep])
    assert (out[0][:, ~keep] - img[0][:, ~keep]).abs().max() > 0  # the hole was regenerated


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_inpaint_at_strength_1_starts_from_pure_noise_as_txt2img(parts, kind):
    """A mask over the whole image at strength 1 is txt2img from the same seed (diffusers' inpaint starts from
    pure noise at full strength; the source image noised to σ_max left ~7 % of it in the hole on the eps model)."""
    pipe = parts[kind]
    img, _, _ = data.make_batch(4, 1)
    kw = dict(sampler="euler", steps=4, seed=3, output="tensor", progress=False)
    full = pipe.inpaint(img[:1], torch.ones(64, 64), "a red circle", **kw)
    torch.testing.assert_close(full, pipe.txt2img("a red circle", **kw), atol=1e-5, rtol=0)


def test_a_prompt_longer_than_the_text_encoder_reads_is_refused(parts, monkeypatch):
    pipe = parts["eps"]
    limit = pipe.model.text_encoder.tokenizer.max_length - 1
    calls = model_calls(pipe, monkeypatch)
    long = " ".join(["red"] * (limit + 1))
    with pytest.raises(samplers.InvalidInput, match=rf"prompt 1 has {limit + 1} words but .* at most {limit}"):
        pipe.txt2img(["a red circle", long], steps=2, seed=0, progress=False)
    assert calls == []
    pipe.txt2img(" ".join(["red"] * limit), steps=1, seed=0, progress=False, output="tensor")  # the limit itself runs
    with pytest.raises(samplers.InvalidInput, match="words but"):
        pipe.denoiser(long, 2.0)  # the denoiser of the pipeline too (it cut the prompt)


def test_guidance_refuses_conditioning_of_another_batch_before_the_model_runs(parts):
    pipe = parts["eps"]
    calls = []
    den = pipe.denoiser(["a red circle", "a blue square", "a green ring"], cfg=4.0)
    inner = den.inner
    den.inner = lambda *a, **k: calls.append(1) or inner(*a, **k)
    with pytest.raises(samplers.InvalidInput, match="batch 3 but the latents have 2"):
        den(torch.zeros(2, 4, 8, 8), torch.full((2,), 1.0))
    assert calls == []


def test_a_bad_mask_is_reported_in_the_shape_it_was_given(parts):
    img = torch.full((1, 3, 64, 64), -0.5)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 64, 64\)"):
        parts["eps"].inpaint(img, torch.ones(3, 64, 64), "a red circle", steps=4, progress=False)


# ------------------------------------------------------------------------------------ shipped weights

EASY = ["a large red circle in the centre", "a large blue square at the top left", "a large yellow circle at the bottom right",
        "a large green square at the left", "a large white circle at the top", "a large cyan square at the bottom"]


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_shipped_weights_follow_easy_prompts(kind):
    if not (WEIGHTS / kind / "model.safetensors").is_file():
        pytest.skip(f"no shipped {kind} weights")
    pipe = Pipeline.load(model=kind)
    images = pipe.txt2img(EASY, seed=list(range(len(EASY))), output="tensor", progress=False)
    passed = sum(checker.matches(im, p) for im, p in zip(images, EASY))
    assert passed >= len(EASY) - 2, f"{passed}/{len(EASY)} easy prompts pass the checker"


def test_cli_generate_writes_png(tmp_path):
    if not (WEIGHTS / "eps" / "model.safetensors").is_file():
        pytest.skip("no shipped eps weights")
    from samplers.cli import main

    assert main(["generate", "a large red circle in the centre", "--steps", "8", "--seed", "0", "1",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g-0.png").is_file() and (tmp_path / "g-1.png").is_file()


# ------------------------------------------------------------------------------------- fitted solvers


def _fitted(pipe, path: Path, sigmas, cfg: float) -> Path:
    """euler on ``sigmas`` as a solver file recording ``pipe``'s model at guidance ``cfg``."""
    from samplers.fitted.identity import fingerprint
    from samplers.fitted.solver import LearnedSolver

    solver = LearnedSolver.from_sampler("euler", [float(v) for v in sigmas])
    solver.model = {"fingerprint": fingerprint(pipe.denoiser("x", cfg)), "name": f"tiny {pipe.model.config.prediction}",
                    "prediction": pipe.model.config.prediction}
    return solver.save(path)


def test_the_pipelines_identity_is_its_guided_denoisers_fingerprint(parts):
    from samplers.fitted.identity import fingerprint

    for kind in ("eps", "flow"):
        for cfg in (1.0, 2.5, None):
            assert parts[kind].identity(cfg) == fingerprint(parts[kind].denoiser("a red circle", cfg)) is not None
    assert parts["eps"].identity(2.5) != parts["eps"].identity(3.0)


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_a_fitted_solver_that_does_not_suit_the_model_is_refused_before_any_prompt_is_encoded(parts, monkeypatch,
                                                                                               tmp_path, task):
    from samplers.fitted.solver import OtherModelError

    eps, flow = parts["eps"], parts["flow"]
    at_cfg_2 = _fitted(eps, tmp_path / "eps.json", eps.sigmas("karras", 3), 2.0)
    sig = flow.sigmas("flow", 3)
    assert math.isinf(float(sig[0]))
    from_inf = _fitted(flow, tmp_path / "flow.json", sig, 2.0)
    calls = model_calls(eps, monkeypatch)

    def run(**kw):
        kw = {"seed": 0, "progress": False, **kw}
        if task == "txt2img":
            return eps.txt2img("a red circle", **kw)
        if task == "img2img":
            return eps.img2img(IMG, "a red circle", strength=1.0, **kw)
        return eps.inpaint(IMG, MASK, "a red circle", **kw)

    with pytest.raises(OtherModelError, match="fitted to tiny eps .*not to this model") as err:
        run(sampler=f"fitted:{at_cfg_2}", cfg=3.0)
    assert not calls  # no prompt encoded, no image encoded, no U-Net call
    assert f"fitted:{at_cfg_2}" in str(err.value) and "another guidance scale" in str(err.value)
    for allow in ({}, {"allow_other_model": True}):  # a flow model's start, σ = inf: no override helps
        with pytest.raises(OtherModelError, match=f"fitted:{from_inf} starts at σ = inf .*this model "
                                                  r"\(prediction 'eps'\) cannot be evaluated .*solver file is the cause"):
            run(sampler=f"fitted:{from_inf}", cfg=2.0, **allow)
    assert not calls
    run(sampler=f"fitted:{at_cfg_2}", cfg=2.0)
    run(sampler=f"fitted:{at_cfg_2}", cfg=3.0, allow_other_model=True)


def test_compare_grid_checks_every_row_before_the_first_image(parts, monkeypatch, tmp_path):
    from app.images import compare_grid
    from samplers.fitted.solver import OtherModelError

    eps = parts["eps"]
    path = _fitted(eps, tmp_path / "s.json", eps.sigmas("karras", 3), 2.0)
    calls = model_calls(eps, monkeypatch)
    with pytest.raises(OtherModelError, match="was fitted to tiny eps"):
        compare_grid(eps, ["a red circle"], ["euler", "heun", f"fitted:{path}"], [2, 3], cfg=3.0)
    assert not calls  # the euler and heun rows did not run first
    with pytest.raises(samplers.InvalidOption, match="own fitted σ nodes"):
        eps.plan(f"fitted:{path}", "karras", None, {}, 2.0)
    with pytest.raises(samplers.UnknownNameError, match="unknown schedule 'karass'"):
        compare_grid(eps, ["a red circle"], ["euler", "heun"], [2], schedule="karass")
    assert not calls


@pytest.mark.parametrize("label, schedule", [("a1111:DPM2", "a1111:Karras"), ("a1111:DPM++ 3M SDE", "a1111:Exponential"),
                                             ("comfyui:dpm_2", None)])
def test_a_label_that_drops_the_next_to_last_sigma_still_runs_the_steps_asked(parts, label, schedule):
    """A1111's get_sigmas and ComfyUI's KSampler build steps + 1 and drop the next-to-last σ: n steps, as asked."""
    pipe = parts["eps"]
    for n in (1, 2, 5):
        _, sigmas, _ = pipe.plan(label, None, n, {})
        full = pipe.sigmas(schedule, n + 1)
        assert len(sigmas) == n + 1
        torch.testing.assert_close(sigmas, torch.cat([full[:-2], full[-1:]]), rtol=0, atol=0)


def test_an_a1111_label_without_its_own_scheduler_runs_on_uniform(parts):
    pipe = parts["eps"]
    _, sigmas, _ = pipe.plan("Euler a", None, 10, {})
    torch.testing.assert_close(sigmas, pipe.sigmas("a1111:Uniform", 10), rtol=0, atol=0)
    _, sigmas, _ = pipe.plan("Euler a", "karras", 10, {})  # the caller's schedule replaces A1111's Automatic
    torch.testing.assert_close(sigmas, pipe.sigmas("karras", 10), rtol=0, atol=0)


def test_a_default_sampler_label_is_kept_and_an_unknown_one_refused(parts):
    import dataclasses

    from models.io import ConfigMismatchError

    model = parts["eps"].model
    label = dataclasses.replace(model.config, defaults={"sampler": "DPM++ 2M Karras", "schedule": "karras"})
    pipe = Pipeline(DiffusionModel(label), parts["vae"])
    assert pipe.plan(None, None, 4, {})[0] == "dpmpp_2m"
    with pytest.raises(ConfigMismatchError, match="field 'defaults'.*unknown sampler name 'no_such'"):
        Pipeline(DiffusionModel(dataclasses.replace(model.config, defaults={"sampler": "no_such"})), parts["vae"])


def test_a_labels_schedule_a_flow_model_cannot_build_says_what_to_pass(parts):
    pipe = parts["flow"]
    with pytest.raises(samplers.InvalidInput, match="'Euler a' runs by default .* on the 'a1111:Uniform' schedule.*pass a schedule "
                                           "this model has, e.g. its own 'flow'"):
        pipe.plan("Euler a", None, 4, {})
    with pytest.raises(samplers.InvalidInput, match="names the 'a1111:Karras' schedule.*use 'dpmpp_2m' with one this model has"):
        pipe.plan("DPM++ 2M Karras", None, 4, {})
    assert pipe.plan("Euler a", "flow", 4, {})[0] == "euler_ancestral"


def test_the_models_default_sampler_runs_on_the_models_default_schedule(parts):
    import dataclasses

    for kind, defaults in (("eps", {"sampler": "Euler a", "schedule": "karras"}),
                           ("flow", {"sampler": "Euler a", "schedule": "flow"})):
        model = parts[kind].model
        pipe = Pipeline(DiffusionModel(dataclasses.replace(model.config, defaults=defaults)), parts["vae"])
        name, sigmas, _ = pipe.plan(None, None, 6, {})
        assert name == "euler_ancestral"
        torch.testing.assert_close(sigmas, pipe.sigmas(defaults["schedule"], 6), rtol=0, atol=0)
        # a sampler the caller names brings its own schedule (A1111's Automatic for "Euler a" on the eps model)
        if kind == "eps":
            torch.testing.assert_close(pipe.plan("Euler a", None, 6, {})[1], pipe.sigmas("a1111:Uniform", 6), rtol=0,
                                       atol=0)


def test_an_items_noise_is_batch_independent_exactly_and_the_docs_claim_no_more(parts, capsys, monkeypatch, tmp_path):
    """The noise of item k is its seed's alone, bit for bit; the image only up to the U-Net's batched CPU arithmetic
    (test_item_independent_of_batch allows 1e-4), which the docs, the module docstring and the CLI's --seed message
    said was none ("item k's image does not depend on the batch", "a seed always gives the same image")."""
    import models.pipeline as mp
    from samplers.core.seeds import seeded_randn

    assert torch.equal(seeded_randn((3, 4, 8, 8), [11, 12, 13])[1:2], seeded_randn((1, 4, 8, 8), [12]))
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text().split())
    assert "image does not depend on the batch" not in text
    assert ("item k's noise does not depend on the batch, exactly; its image equals the one made alone up to the "
            "U-Net's batched arithmetic, about 1e-4") in text
    doc = " ".join(mp.__doc__.split())
    assert "its image does not depend" not in doc and "its noise does not depend on the batch size" in doc
    monkeypatch.setattr(mp.Pipeline, "load", classmethod(lambda *a, **k: pytest.fail("loaded")))
    from samplers.cli import main

    assert main(["generate", "a red circle", "--seed", "3", "3", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "a seed always gives the same image" not in err and "would make one image twice" in err

"""The pipeline as the second "models" audit found it wanting: inpainting's kept latent after a run that ends above
σ = 0 (A1111's "DDIM" / "PLMS"), the request a PNG records (a strength the run refuses, extras the infotext cannot
hold), the guided denoiser's σ of shape [1] and its errors in the caller's shapes, and a one-element 1-D tensor read
as an integer."""

import pytest
import torch

import samplers
from models import data
from models.pipeline import infotext
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.interop.comfyui import comfy_seed

from test_pipeline import model_calls, parts  # noqa: F401  (a fixture)

PROMPT = "a red circle"
TOP = torch.zeros(64, 64)
TOP[:32] = 1  # the top half regenerated: latent rows 0-3; rows 4-7 kept


def _decoded_latents(pipe, monkeypatch) -> list:
    """The latents ``pipe.vae.from_latent`` decodes, recorded."""
    seen, decode = [], pipe.vae.from_latent
    monkeypatch.setattr(pipe.vae, "from_latent", lambda latents: (seen.append(latents.clone()), decode(latents))[1])
    return seen


# ------------------------------------------------ 1. inpaint: the kept latent put back after a run ending above σ = 0


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS", "dpmpp_2m", "euler"])
def test_inpaint_decodes_the_known_latent_in_the_kept_region(parts, monkeypatch, sampler):  # noqa: F811
    """A1111's "DDIM" / "PLMS" stop at timestep 1 (σ ≈ 0.03), so the state they return still carried noise in the
    kept region, which the decoder read beside the regenerated one; A1111 puts the encoded image back there after
    every sampler (samples * nmask + init_latent * mask). Runs that end at σ = 0 already held it exactly."""
    pipe = parts["eps"]
    image, _, _ = data.make_batch(4, 1)
    known = pipe.vae.to_latent(image)
    seen = _decoded_latents(pipe, monkeypatch)
    out = pipe.inpaint(image, TOP, PROMPT, sampler=sampler, steps=6, seed=1, progress=False, output="tensor")
    assert torch.equal(seen[-1][..., 4:, :], known[..., 4:, :])
    assert (seen[-1][..., :4, :] - known[..., :4, :]).abs().max() > 0  # the hole was regenerated
    assert torch.equal(out[..., 32:, :], image[..., 32:, :])  # the kept pixels, exactly


def test_inpaint_of_the_whole_image_is_still_txt2img_under_ddim(parts):  # noqa: F811
    """A mask over everything keeps nothing: the put-back changes no value of the run's latent."""
    pipe = parts["eps"]
    image, _, _ = data.make_batch(4, 1)
    kw = dict(sampler="DDIM", steps=4, seed=3, output="tensor", progress=False)
    torch.testing.assert_close(pipe.inpaint(image, torch.ones(64, 64), PROMPT, **kw), pipe.txt2img(PROMPT, **kw),
                               atol=1e-5, rtol=0)


# ------------------------------------------------------------- 2. the request a PNG records: what the run refuses


@pytest.mark.parametrize("strength", [1.5, 0.0, -0.2, float("nan"), float("inf"), "abc", True, None,
                                      torch.tensor([0.5]), 0.01])
def test_request_refuses_a_strength_the_run_refuses(parts, strength):  # noqa: F811
    """It wrote strength=1.5 (or NaN, or "abc") into the PNG as "Denoising strength", a value img2img refuses; 0.01
    at 10 steps rounds to no step of the schedule, which the run refuses too."""
    pipe = parts["eps"]
    image, _, _ = data.make_batch(4, 1)
    with pytest.raises((InvalidInput, InvalidOption, InvalidType)) as run:
        pipe.img2img(image, PROMPT, strength=strength, sampler="euler", steps=10, seed=0, progress=False)
    with pytest.raises(type(run.value), match="strength"):
        pipe.request(PROMPT, "euler", steps=10, seed=0, strength=strength)


def test_request_records_the_strength_the_run_reads(parts):  # noqa: F811
    pipe = parts["eps"]
    for given in (0.5, torch.tensor(0.5), __import__("numpy").float32(0.5)):
        r = pipe.request(PROMPT, "euler", steps=10, seed=0, strength=given)
        assert type(r["strength"]) is float and r["strength"] == 0.5
        assert ", Denoising strength: 0.5, RNG: CPU," in infotext(r)
    assert "strength" not in pipe.request(PROMPT, "euler", steps=10, seed=0)  # txt2img's: none


@pytest.mark.parametrize("extra, words", [
    ({"negative_prompt": "blue"}, "the pipeline takes no negative_prompt"),
    ({"negative_prompt": None}, "the pipeline takes no negative_prompt"),
    ({"denoise": 0.3}, r"request records no denoise=0.3: .*only strength= \('Denoising strength' in the infotext\)"),
    ({"mask_blur": 4}, "request records no mask_blur=4"),
    ({"eta": 0.5}, r"request records no eta=0.5: .*pass a sampler option in options="),
    ({"rng": "GPU"}, "request writes rng itself"),
    ({"model": "other"}, "request writes model itself"),
])
def test_request_refuses_a_keyword_the_infotext_cannot_hold(parts, extra, words):  # noqa: F811
    """A negative_prompt (which the run refuses) went into the JSON chunk and was dropped from the infotext; any
    other keyword likewise, without a word; rng= overrode the source the run drew from, model= was overwritten."""
    with pytest.raises(InvalidOption, match=words):
        parts["eps"].request(PROMPT, "euler", steps=10, seed=0, **extra)


def test_request_refuses_a_strength_whose_cut_starts_from_pure_noise(parts):  # noqa: F811
    """The flow model's schedule starts at σ = inf: 0.75 at 2 steps keeps all of it, which img2img refuses."""
    with pytest.raises(InvalidInput, match="this schedule starts at σ = inf"):
        parts["flow"].request(PROMPT, "euler", steps=2, seed=0, strength=0.75)
    assert parts["flow"].request(PROMPT, "euler", steps=2, seed=0, strength=0.5)["strength"] == 0.5


@pytest.mark.parametrize("kind, sampler, strength", [
    ("eps", "restart", 0.3),  # its restart entry draws above the cut's tree (built on the cut's range)
    ("flow", "restart", 0.5),
    ("flow", "dpmpp_2m_sde", 1.0),  # a tree kind on a cut from σ = inf
    ("flow", "dpmpp_2m_sde", None),  # txt2img's: the same, on the whole schedule
])
def test_request_refuses_the_noise_the_run_refuses(parts, monkeypatch, kind, sampler, strength):  # noqa: F811
    """request checked the strength's cut but not the run's noise on it (nor, without a strength, on txt2img's
    schedule), so it recorded runs img2img / txt2img refuse. The runs refuse them before any model call: restart's
    entries were checked by restart itself, after the VAE and the text encoder had run."""
    pipe = parts[kind]
    image, _, _ = data.make_batch(4, 1)
    kw = dict(seed=1, steps=10, progress=False, noise_sampler="brownian_tree")
    calls = model_calls(pipe, monkeypatch)
    with pytest.raises(InvalidInput) as run:
        if strength is None:
            pipe.txt2img(PROMPT, sampler=sampler, **kw)
        else:
            pipe.img2img(image, PROMPT, sampler=sampler, strength=strength, **kw)
    assert not calls
    extra = {} if strength is None else {"strength": strength}
    with pytest.raises(type(run.value)) as recorded:
        pipe.request(PROMPT, sampler, steps=10, seed=1, options={"noise_sampler": "brownian_tree"}, **extra)
    assert str(recorded.value) == str(run.value)
    # the same request with the seeded default runs, and is recorded
    assert pipe.request(PROMPT, sampler, steps=10, seed=1, **extra)["sampler"] == sampler


@pytest.mark.parametrize("options, words", [
    ([1, 2], r"options must be a dict of sampler options by name .*got \[1, 2\] \(list\)"),
    ("abc", r"options must be a dict .*got 'abc' \(str\)"),
    ([("eta", 0.5)], r"options must be a dict .*got \[\('eta', 0.5\)\] \(list\): pass them as a dict"),
    ({1: 2}, r"options' keys are sampler option names \(strings\).*got 1 \(int\)"),
])
def test_request_refuses_options_that_are_not_a_dict(parts, options, words):  # noqa: F811
    """dict(options) raised a raw TypeError for [1, 2] and ValueError for "abc", and read a list of pairs as a dict,
    which the run never takes (txt2img takes its options as keywords: options=[...] is an option it has not)."""
    pipe = parts["eps"]
    with pytest.raises(InvalidType, match=words):
        pipe.request(PROMPT, "euler_ancestral", steps=10, seed=0, options=options)
    with pytest.raises(InvalidType, match=words):
        pipe.check_request("euler_ancestral", steps=10, options=options)
    with pytest.raises(InvalidOption, match="has no option 'options'"):
        pipe.txt2img(PROMPT, sampler="euler_ancestral", steps=2, seed=0, progress=False, options=options)
    assert pipe.request(PROMPT, "euler_ancestral", steps=10, seed=0, options={"eta": 0.5})["options"] == {"eta": 0.5}


# ------------------------------------------ 3. the guided denoiser: σ of shape [1], errors in the caller's shapes


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_the_guided_denoiser_takes_one_sigma_of_shape_1_for_the_batch(parts, cfg):  # noqa: F811
    """At cfg 4 a σ of shape [1] with a batch of 3 was refused, its message quoting shapes (2,) and [6] the caller
    never passed; the unguided call took it. Guidance must not change which inputs are valid."""
    d = parts["eps"].denoiser(PROMPT, cfg=cfg)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want = d(x, torch.full((3,), 2.0))
    torch.testing.assert_close(d(x, torch.tensor([2.0])), want, rtol=0, atol=0)
    torch.testing.assert_close(d(x, torch.tensor(2.0)), want, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_the_guided_denoiser_refuses_in_the_callers_shapes(parts, monkeypatch, cfg):  # noqa: F811
    """3-channel latents gave a bare ValueError from the U-Net quoting batch 4 (the doubled 2); a σ of another
    length one quoting the doubled batch. Both are refused before the U-Net is called, naming what was passed."""
    pipe = parts["eps"]
    d = pipe.denoiser(PROMPT, cfg=cfg)
    calls = model_calls(pipe, monkeypatch)
    with pytest.raises(InvalidInput, match=r"latents \[B, 4, h, w\], got shape \(2, 3, 8, 8\)"):
        d(torch.randn(2, 3, 8, 8), torch.tensor(2.0))
    with pytest.raises(InvalidInput, match=r"latents \[B, 4, h, w\], got shape \(2, 3, 8, 8\)"):
        d.denoise_at(torch.randn(2, 3, 8, 8), 2.0)
    with pytest.raises(InvalidInput, match=r"\[\] , \[1\] or \[3\], k-diffusion's call\), got shape \(2,\)"):
        d(torch.randn(3, 4, 8, 8), torch.tensor([2.0, 2.0]))
    assert not calls


# ------------------------------------------------------ 4. integers: a 1-D tensor is not one; a prompt list's item


ONE_D = r"got tensor\(\[64\]\) \(Tensor\); a tensor is taken only as a 0-d integer one: pass int"
TENSOR_1 = r"got tensor\(\[{}\]\) \(a tensor of shape \(1,\)\)"


@pytest.mark.parametrize("kw, words", [({"height": torch.tensor([64])}, "height must be an integer number of pixels, "
                                        + ONE_D + r"\(height\)"),
                                       ({"width": torch.tensor([64])}, "width must be an integer number of pixels, "
                                        + ONE_D + r"\(width\)"),
                                       ({"steps": torch.tensor([2])}, TENSOR_1.format(2)),
                                       ({"batch": torch.tensor([1])}, TENSOR_1.format(1))])
def test_a_one_element_1d_tensor_is_not_an_integer(parts, monkeypatch, kw, words):  # noqa: F811
    """integer() read tensor([64]) as 64 through operator.index, where the docs say a 0-d tensor only (and real()
    refuses cfg=tensor([4.0]))."""
    pipe = parts["eps"]
    calls = model_calls(pipe, monkeypatch)
    with pytest.raises(InvalidType, match=words):
        pipe.txt2img(PROMPT, **{"steps": 2, "seed": 0, "progress": False, **kw})
    assert not calls
    assert pipe.txt2img(PROMPT, height=torch.tensor(64), steps=torch.tensor(2), seed=0, progress=False,
                        output="tensor").shape == (1, 3, 64, 64)  # a 0-d tensor is one


def test_integer_refuses_tensors_of_any_dimension():
    from samplers.core.validate import integer
    for value in (torch.tensor([3]), torch.tensor([[3]]), torch.tensor([3, 4])):
        with pytest.raises(InvalidType, match=r"a tensor is taken only as a 0-d integer one: pass it as an int: "
                                              r"int\(t\) or t\.item\(\)"):
            integer("n", value)
    assert integer("n", torch.tensor(3)) == 3


@pytest.mark.parametrize("call, words", [
    (lambda: samplers.get_sigmas("karras", torch.tensor([10]), sigma_min=0.03, sigma_max=14.6),
     "the number of steps must be an integer, got tensor([10]) (a tensor of shape (1,)); "),
    (lambda: comfy_seed(torch.tensor([5]), 1),
     "ComfyUI's seed (seed) must be an integer, got tensor([5]) (a tensor of shape (1,)); "),
])
def test_integers_tensor_refusal_names_the_value_and_a_fix_that_reads(call, words):
    """The fix was built from the name, which most callers give as a description: "pass int(the number of steps) or
    the number of steps.item()", "int(ComfyUI's seed (seed))"; and the value itself was not named."""
    with pytest.raises(InvalidType) as e:
        call()
    assert str(e.value).startswith(words + "a tensor is taken only as a 0-d integer one: pass it as an int: int(t) "
                                   "or t.item()")
    assert "int(the" not in str(e.value) and "int(ComfyUI" not in str(e.value)


@pytest.mark.parametrize("prompt, words", [(["a red circle", 3], r"prompt\[1\] is 3 \(int\)"),
                                           ((None, "a red circle"), r"prompt\[0\] is None \(NoneType\)")])
def test_a_prompt_list_names_the_item_that_is_not_a_string(parts, prompt, words):  # noqa: F811
    with pytest.raises(InvalidType, match=words):
        parts["eps"].txt2img(prompt, steps=2, progress=False)

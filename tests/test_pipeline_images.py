"""The pipeline's image inputs and outputs as other tools read and write them: EXIF orientation, transparent masks,
unreadable files, [0, 1] tensors, sizes checked before decoding, the PNG path and the generation parameters."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from models import data
from models.pipeline import _pil_mask
from samplers.core.errors import InvalidInput

from test_pipeline import model_calls, parts  # noqa: F401  (a fixture)

PROMPT = "a red circle"


def _sideways_jpeg(tmp_path, mode: str = "RGB") -> Image.Image:
    """A JPEG whose pixels are stored sideways with EXIF Orientation 6, as phones write them: a white band along the
    stored top, which a viewer shows along the right."""
    im = Image.new(mode, (64, 48), 0)
    im.paste(255 if mode == "L" else (255, 255, 255), (0, 0, 64, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"sideways-{mode}.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    return Image.open(path)


# ----------------------------------------------------------------------------------- EXIF orientation, as load_image


def test_an_image_is_read_upright_as_diffusers_load_image_reads_it(tmp_path):
    im = _sideways_jpeg(tmp_path)
    x = data.from_pil(im)
    assert tuple(x.shape) == (3, 64, 48)  # shown 48 wide, 64 high
    want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 127.5 - 1
    np.testing.assert_array_equal(x.numpy().transpose(1, 2, 0), want)
    assert x[:, :, -8:].mean() > 0.9 and x[:, :, :8].mean() < -0.9  # the band on the right, as shown
    assert data.shown_size(im) == (64, 48)  # from the header, before decoding
    assert tuple(data.image_to_unit_hwc(im).shape) == (64, 48, 3)


def test_a_mask_is_read_upright_as_its_image_is(tmp_path):
    m = _pil_mask(_sideways_jpeg(tmp_path, "L"))
    assert tuple(m.shape) == (64, 48) and m[:, -8:].mean() > 0.9 and m[:, :8].mean() < 0.1


# ------------------------------------------------------------------------------------- transparent masks and images


def _rgba_mask(hole_alpha: int, rest_alpha: int) -> Image.Image:
    a = np.full((64, 64, 4), 255, np.uint8)
    a[..., 3] = rest_alpha
    a[16:48, 16:48, 3] = hole_alpha
    return Image.fromarray(a, "RGBA")


@pytest.mark.parametrize("mask", [_rgba_mask(0, 255), _rgba_mask(255, 0), _rgba_mask(255, 0).convert("LA"),
                                  _rgba_mask(0, 255).convert("PA")])
def test_a_mask_with_transparent_pixels_is_refused_before_any_model_call(parts, monkeypatch, mask):  # noqa: F811
    """convert("L") dropped the alpha: a hole marked transparent (OpenAI's edits) repainted the whole image."""
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=r"transparent pixels.*A1111 uses the alpha itself.*OpenAI.*getchannel\('A'\)"):
        parts["eps"].inpaint(torch.zeros(1, 3, 64, 64) - 0.5, mask, PROMPT, steps=2, seed=0, progress=False)
    assert not calls


def test_a_palette_mask_with_a_transparent_index_is_refused():
    p = Image.new("P", (64, 64), 1)
    p.putpalette([0, 0, 0, 255, 255, 255])
    p.info["transparency"] = 1
    with pytest.raises(InvalidInput, match="transparent pixels"):
        _pil_mask(p)


def test_an_opaque_rgba_mask_is_its_luminance():
    hole = np.zeros((64, 64, 4), np.uint8)
    hole[..., 3] = 255
    hole[16:48, 16:48, :3] = 255
    m = _pil_mask(Image.fromarray(hole, "RGBA"))
    assert m[16:48, 16:48].min() == 1 and m.sum() == 32 * 32


def test_a_transparent_init_image_drops_its_alpha_as_load_image_does():
    a = np.full((64, 64, 4), 200, np.uint8)
    a[:32, :, 3] = 0
    im = Image.fromarray(a, "RGBA")
    torch.testing.assert_close(data.from_pil(im), data.from_pil(im.convert("RGB")))


# --------------------------------------------------------------------------------------------- unreadable images


def test_a_truncated_or_closed_image_is_refused_naming_it(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InvalidInput, match=r"image '.*cut\.png' cannot be read \(image file is truncated\).*complete file"):
        data.from_pil(Image.open(tmp_path / "cut.png"))
    (tmp_path / "whole.png").write_bytes(buf.getvalue())
    closed = Image.open(tmp_path / "whole.png")
    closed.close()
    with pytest.raises(InvalidInput, match="cannot be read .*closed"):
        data.from_pil(closed)
    with pytest.raises(InvalidInput, match="mask .*cannot be read"):
        _pil_mask(closed)


# ------------------------------------------------------------------------- tensors in [0, 1]: refused, or said so


def _run(pipe, task: str, image, **kw):
    kw = {"sampler": "euler", "steps": 2, "seed": 0, "progress": False, "output": "tensor", **kw}
    if task == "img2img":
        return pipe.img2img(image, PROMPT, strength=0.5, **kw)
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    return pipe.inpaint(image, mask, PROMPT, **kw)


UNIT = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # as torchvision's ToTensor gives


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
@pytest.mark.parametrize("image", [UNIT, UNIT[0], [UNIT[0]], torch.zeros(1, 3, 64, 64)])
def test_a_tensor_of_no_negative_value_is_refused_as_ambiguous(parts, monkeypatch, task, image):  # noqa: F811
    """Read as [-1, 1] a [0, 1] image (ToTensor, diffusers' VaeImageProcessor) is a washed-out picture."""
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=r"all lie in \[0, 1\].*t \* 2 - 1.*image_range=\(0, 1\).*image_range=\(-1, 1\)"):
        _run(parts["eps"], task, image)
    assert not calls


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_image_range_says_what_a_tensor_holds(parts, task):  # noqa: F811
    pipe = parts["eps"]
    torch.testing.assert_close(_run(pipe, task, UNIT, image_range=(0, 1)), _run(pipe, task, UNIT * 2 - 1), rtol=0,
                               atol=0)
    torch.testing.assert_close(_run(pipe, task, [UNIT[0]], image_range=[0, 1]), _run(pipe, task, UNIT * 2 - 1),
                               rtol=0, atol=0)
    bright = UNIT * 0.5 + 0.5  # [-1, 1] pixels of a bright picture: no negative value
    assert _run(pipe, task, bright, image_range=(-1, 1)).shape == (1, 3, 64, 64)
    with pytest.raises(InvalidInput, match=r"values in \[0, 1\]"):
        _run(pipe, task, UNIT * 2 - 1, image_range=(0, 1))


def test_a_pil_image_is_never_ambiguous(parts):  # noqa: F811
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    assert _run(parts["eps"], "img2img", white).shape == (1, 3, 64, 64)
    assert _run(parts["eps"], "img2img", [white, UNIT[0] * 2 - 1], seed=[0, 1]).shape == (2, 3, 64, 64)
    with pytest.raises(InvalidInput, match="only PIL images were given.*leave image_range out"):
        _run(parts["eps"], "img2img", white, image_range=(0, 1))


@pytest.mark.parametrize("value", ["0..1", "[0, 1]", (0, 2), (-1, 1, 0), (False, True), 1])
def test_a_bad_image_range_is_refused(parts, monkeypatch, value):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match=r"image_range must be \(-1, 1\) or \(0, 1\)"):
        _run(parts["eps"], "img2img", UNIT * 2 - 1, image_range=value)
    assert not calls


# ---------------------------------------------------------------------- a large image's size, before it is decoded


def _png_header(tmp_path, width: int, height: int):
    """A PNG whose header says width × height and whose pixels are cut off: PIL opens it (its size is known) and
    cannot decode it, so a refusal of its size shows that nothing was decoded first."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path = tmp_path / f"{width}x{height}.png"
    path.write_bytes(bytes(raw[:60]))
    return Image.open(path)


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_large_image_is_refused_by_its_header_before_it_is_decoded(parts, tmp_path, task):  # noqa: F811
    from samplers.core.errors import LimitExceeded

    with pytest.raises(InvalidInput, match="width 8001 is not a positive multiple of 8"):
        _run(parts["eps"], task, _png_header(tmp_path, 8001, 8000))
    with pytest.raises(LimitExceeded, match="1 image.s. of 8000×8000 needs about"):
        _run(parts["eps"], task, _png_header(tmp_path, 8000, 8000))
    with pytest.raises(InvalidInput, match="cannot be read"):  # a size that fits: decoded, and refused as cut off
        _run(parts["eps"], task, _png_header(tmp_path, 64, 64))


# --------------------------------------------------------------------- the PNG path: one rule for Python and the CLI


def _some(n: int):
    return [Image.new("RGB", (8, 8), (k, 0, 0)) for k in range(n)]


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("name, rule", [("o.gif", "does not end in .png"), ("o.jpg", "does not end in .png"),
                                        ("o.webp", "does not end in .png"), ("o", r"name it '.*o\.png'"),
                                        ("o.txt", "does not end in .png"), (".", "is a folder")])
def test_save_images_takes_the_clis_rule_for_its_path(tmp_path, n, name, rule):
    """.gif / .tif / .txt names got PNG bytes, .jpg / .webp lossy ones; a folder with several images wrote beside
    it, with one a raw IsADirectoryError after the images were made."""
    from models.pipeline import save_images

    with pytest.raises(InvalidInput, match=f"path .*{rule}"):
        save_images(_some(n), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_save_images_refuses_no_images_and_writes_png(tmp_path):
    from models import io as mio
    from models.pipeline import save_images

    with pytest.raises(InvalidInput, match="no images to write"):
        save_images([], tmp_path / "none.png")
    (tmp_path / "o-1.png").mkdir()
    with pytest.raises(InvalidInput, match="with 2 images writes .*o-1.png.*which is a folder"):
        save_images(_some(2), tmp_path / "o.png")
    with pytest.raises(InvalidInput, match="does not end in .png"):
        mio.atomic_save_image(tmp_path / "grid.jpg", _some(1)[0])
    paths = save_images(_some(2), tmp_path / "p.png")
    assert [p.name for p in paths] == ["p-0.png", "p-1.png"]
    assert all(Image.open(p).format == "PNG" for p in paths)


def test_a_tilde_in_a_path_option_is_expanded(tmp_path, monkeypatch, capsys, no_load):
    """bash expands ~ after a space, not after = (--out=~/x.png); path options expand it themselves."""
    from samplers.core.argtypes import out_folder, path_to

    from test_cli import _refused

    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_to("PNG file")("~/x.png") == str(tmp_path / "x.png")
    assert out_folder("~/d") == tmp_path / "d"
    _refused(capsys, ["generate", "a red circle", "--out=~/missing/x.png"], str(tmp_path / "missing"),
             "does not exist")
    _refused(capsys, ["compare", "a red circle", "--out=~"], f"--out '{tmp_path}' is a folder")


# ------------------------------------------------------------------------------ the generation parameters in a PNG


REQUEST = {"prompt": "a red circle, big", "sampler": "DPM++ 2M Karras", "schedule": "a1111:Karras", "steps": 20,
           "cfg": 4.0, "seed": 5, "width": 64, "height": 48, "options": {"eta": 0.5, "s_tmax": [1, 2]},
           "model": "unet-eps", "model_sha256": "0123456789abcdef", "version": "0.1.0"}


def test_the_infotext_is_a1111s():
    """A1111's create_infotext: the prompt, then "Key: value" pairs joined by ", ", a value quoted as JSON where it
    holds a comma, a colon or a line break (infotext_utils.quote); "Model hash" is its 10-digit short hash."""
    from models.pipeline import infotext

    assert infotext(REQUEST) == (
        "a red circle, big\n"
        'Steps: 20, Sampler: DPM++ 2M Karras, Schedule type: Karras, CFG scale: 4.0, Seed: 5, Size: 64x48, '
        'Model hash: 0123456789, Model: unet-eps, Eta: 0.5, Sigma tmax: "[1, 2]", Version: diffusion-samplers 0.1.0')
    assert infotext({**REQUEST, "strength": 0.6}).count("Denoising strength: 0.6") == 1


def test_save_images_writes_each_images_request(tmp_path, parts):  # noqa: F811
    import json

    from models.pipeline import save_images

    pipe = parts["eps"]
    requests = [pipe.request(PROMPT, seed=s, options={"solver_type": "heun"}) for s in (5, 7)]
    assert requests[0]["sampler"] == pipe.defaults["sampler"] and requests[0]["schedule"] == pipe.defaults["schedule"]
    assert pipe.request(PROMPT, "DPM++ 2M Karras")["schedule"] == "a1111:Karras"  # the label's own
    paths = save_images(_some(2), tmp_path / "s.png", requests)
    for path, seed, request in zip(paths, (5, 7), requests):
        info = Image.open(path).info
        assert f"Seed: {seed}," in info["parameters"] and info["parameters"].startswith(PROMPT + "\nSteps: ")
        assert json.loads(info["request"]) == request
    with pytest.raises(InvalidInput, match=r"one request per image: got 1 for 2"):
        save_images(_some(2), tmp_path / "t.png", requests[:1])
    assert not list(tmp_path.glob("t*"))


def test_learned_multistep_with_a_solver_records_the_solvers_steps_and_nodes(tmp_path, parts):  # noqa: F811
    """learned_multistep with solver= runs the solver's own steps on its own nodes (as fitted:PATH runs them), so the
    record says so: the steps and schedule of the run, not the model's defaults (it said "Steps: 20, Schedule type:
    karras" for a 3-step run)."""
    from models.pipeline import infotext
    from samplers.fitted.solver import LearnedSolver

    pipe = parts["eps"]
    solver = LearnedSolver.from_sampler("euler", pipe.sigmas(None, 3).tolist())
    path = solver.save(tmp_path / "s.json")
    fitted = pipe.request(PROMPT, f"fitted:{path}")
    assert (fitted["steps"], fitted["schedule"]) == (3, "fitted")
    for given in (solver, str(path)):
        request = pipe.request(PROMPT, "learned_multistep", options={"solver": given})
        assert (request["steps"], request["schedule"]) == (3, "fitted")
        assert "Steps: 3, Sampler: learned_multistep, Schedule type: fitted," in infotext(request)
    assert pipe.request(PROMPT, "learned_multistep")["steps"] == pipe.defaults["steps"]  # no solver: the schedule's


def test_generate_and_compare_write_their_requests(tmp_path, capsys):
    import json

    from samplers.cli import main

    assert main(["generate", "a large red circle at the top left", "--seed", "5", "7", "--steps", "2",
                 "--sampler", "euler_ancestral", "--option", "eta=0.5", "--out", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 's-0.png'} (seed 5), {tmp_path / 's-1.png'} (seed 7)" in out
    for k, seed in enumerate((5, 7)):
        info = Image.open(tmp_path / f"s-{k}.png").info
        assert (f"Steps: 2, Sampler: euler_ancestral, Schedule type: karras, CFG scale: 4.0, Seed: {seed}, "
                "Size: 64x64, Model hash: ") in info["parameters"] and "eta: 0.5" in info["parameters"]
        request = json.loads(info["request"])
        assert request["seed"] == seed and request["options"] == {"eta": 0.5} and request["model"] == "unet-eps"
    assert main(["compare", "a small blue ring in the centre", "--samplers", "euler", "heun", "--steps", "2", "3",
                 "--n", "1", "--out", str(tmp_path / "g.png")]) == 0
    info = Image.open(tmp_path / "g.png").info
    cells = json.loads(info["request"])["cells"]
    assert [(c["sampler"], c["steps"], c["seed"]) for c in cells] == [("euler", 2, 0), ("euler", 3, 0),
                                                                      ("heun", 2, 0), ("heun", 3, 0)]
    assert "Sampler: euler" in info["parameters"] and "Steps: 2" in info["parameters"]

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

"""The pipeline as the second "models" audit found it wanting: inpainting's kept latent after a run that ends above
σ = 0 (A1111's "DDIM" / "PLMS"), the request a PNG records (a strength the run refuses, extras the infotext cannot
hold), the guided denoiser's σ of shape [1] and its errors in the caller's shapes, and a one-element 1-D tensor read
as an integer."""

import pytest
import torch

from models import data
from models.pipeline import Pipeline, infotext
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType

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

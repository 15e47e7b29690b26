"""Seams found by audit: numpy seed vectors, a Brownian path too short for a torchsde run."""
import numpy as np
import pytest
import torch

import samplers
from samplers.core.brownian import BrownianNoise
from samplers.core.errors import InvalidInput, InvalidType
from samplers.core.seeds import resolve_seeds


def test_a_numpy_seed_vector_is_one_seed_per_item_like_a_tensor_or_list():
    assert resolve_seeds(np.array([7, 3]), 2) == resolve_seeds(torch.tensor([7, 3]), 2) == [7, 3]
    with pytest.raises(InvalidType, match=r"seed\[0\]"):
        resolve_seeds(np.array([1.5, 2.0]), 2)
    with pytest.raises(InvalidInput, match="seeds for a batch of 3"):
        resolve_seeds(np.array([1, 2]), 3)


def test_a_brownian_path_that_does_not_hold_the_schedule_is_refused_before_any_model_call():
    calls = []

    def model(x, sigma, **kw):
        calls.append(1)
        return x * 0.5

    sigmas = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(0)) * 10
    short = BrownianNoise(x, 0, 0.5, 5.0)
    with pytest.raises(InvalidInput, match="does not hold the schedule"):
        samplers.sample("torchsde.euler", model, x, sigmas, noise_sampler=short, disable=True)
    assert not calls


def test_learned_solvers_refuses_a_calibration_too_small_to_split_naming_the_flag_it_takes(capsys):
    from benchmarks import learned_solvers

    with pytest.raises(SystemExit):
        learned_solvers.main(["--calibration", "2", "--out", "/tmp/never-written-ls"])
    err = capsys.readouterr().err
    assert "--calibration 3 or more" in err and "FitConfig.validation at least" not in err


def test_pil_images_of_8_bit_modes_read_as_diffusers_reads_them_wider_ones_refused():
    from PIL import Image

    from models import data

    rgb = Image.new("RGB", (8, 8), (200, 30, 90))
    torch.testing.assert_close(data.from_pil(rgb.convert("CMYK")), data.from_pil(rgb), atol=2 / 255, rtol=0)
    data.from_pil(rgb.convert("YCbCr"))
    for mode in ("I;16", "I", "F"):
        with pytest.raises(InvalidType, match=f"mode '{mode}'.*not 8-bit"):
            data.from_pil(Image.new(mode, (8, 8)))
    with pytest.raises(InvalidType, match="cannot convert to 'RGB'"):
        data.from_pil(Image.new("La", (8, 8)))


def test_a_numpy_seed_array_sizes_the_pipeline_batch_like_a_list():
    from models.pipeline import Pipeline

    pipe = Pipeline.load(model="eps")
    prompts, seeds = pipe._batch("a large red circle at the top left", None, np.array([4, 9]))
    assert seeds == [4, 9] and len(prompts) == 2


def test_a_comfyui_seed_is_an_integer_never_parsed_or_truncated():
    import numpy as np

    from samplers.interop import comfyui

    assert comfyui.comfy_seed(np.int64(5), 2) == 5 and comfyui.comfy_seed(torch.tensor(7), 1) == 7
    assert comfyui.comfy_seed(2**64 - 1, 1) == (2**64 - 1) % (2**64 - 4096)
    for above in (2**64, 2**70):  # ComfyUI's widget stops at 2**64 - 1: not wrapped to another seed
        with pytest.raises(InvalidInput, match="outside 0 to 2\\*\\*64 - 1"):
            comfyui.comfy_seed(above, 1)
    for bad in ("5", 7.5, 7.0, True):
        with pytest.raises(InvalidType, match="ComfyUI's seed .*must be an integer.*noise_seed"):
            comfyui.comfy_seed(bad, 1, where="extra_args['seed']")

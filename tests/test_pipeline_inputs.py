"""The pipeline's inputs refused at its boundary, before any model call: the noise a sampler will build, empty seed
lists, an img2img / inpaint strength the schedule cannot honour, prompts of ``denoiser``, ``progress``, masks."""

import math

import numpy as np
import pytest
import torch

import samplers
from models.pipeline import Pipeline, PipelineSpec, check_sampler
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.core.noise import PredrawnNoise
from samplers.core.seeds import resolve_seeds

from test_cli import _refused, no_load  # noqa: F401  (a fixture)
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


# ------------------------------------------------------------------------------------------- 2. an empty seed list


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", [[], (), np.array([], dtype=np.int64), torch.tensor([], dtype=torch.long)],
                         ids=["list", "tuple", "numpy", "torch"])
def test_an_empty_seed_list_is_refused_before_any_model_call(parts, monkeypatch, task, seed):
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="at least one seed"):
        _run(parts["eps"], task, seed=seed)
    assert not calls


def test_resolve_seeds_refuses_an_empty_list_for_every_caller():
    for batch in (0, 1, 3):
        with pytest.raises(InvalidInput, match="seed is an empty list: pass at least one seed"):
            resolve_seeds([], batch)
    assert resolve_seeds([4], 1) == [4] and resolve_seeds(2, 2) == [2, 3]



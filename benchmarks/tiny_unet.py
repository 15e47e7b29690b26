"""A tiny random diffusers UNet folder, made here (nothing downloaded): the third kind of model ``samplers fit``
takes, for its tests and for the held-out evidence in docs/fitted.md.

    python -m benchmarks.tiny_unet --out out/tiny-unet
    samplers fit --model out/tiny-unet --prompt-embeds out/tiny-unet/embeds.safetensors --nfe 5 10 --out out/fit-tiny

Writes ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``UNet2DConditionModel.save_pretrained``), the
SD-1.5 scheduler config (``scheduler_config.json``: DPMSolverMultistep, scaled_linear betas, ``steps_offset=1``)
and ``embeds.safetensors`` (8 random prompt embeddings and one negative), all from ``--seed``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import common

SD15_SCHEDULER = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1,
                  "prediction_type": "epsilon"}


def make(folder: str | Path, seed: int = 0, prompts: int = 8) -> Path:
    """Create the folder (see the module docstring); returns it."""
    import tempfile

    from diffusers import UNet2DConditionModel
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(seed)  # diffusers initialises its weights from torch's global generator
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64),
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=8, norm_num_groups=32)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unet.") as staged:  # diffusers writes in place: stage it
        unet.save_pretrained(staged, safe_serialization=True)
        for file in sorted(Path(staged).iterdir()):
            common.atomic_write_bytes(folder / file.name, file.read_bytes())
    common.atomic_write_bytes(folder / "scheduler_config.json", json.dumps(SD15_SCHEDULER, indent=1).encode())
    g = torch.Generator().manual_seed(seed + 1)
    common.atomic_write_bytes(folder / "embeds.safetensors", save({
        "prompt_embeds": torch.randn(prompts, 7, 32, generator=g),
        "negative_prompt_embeds": torch.randn(1, 7, 32, generator=g)}))
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tiny_unet", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=common.out_folder, required=True, help="the folder to create")
    p.add_argument("--seed", type=common.seed_value, default=0,
                   help="seed of the weights and embeddings, in [0, 2**32) (default 0)")
    args = p.parse_args(argv)
    print(f"wrote {make(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny random diffusers UNet folder, made here (nothing downloaded): the third kind of model ``samplers fit``
takes, for its tests and for the held-out evidence in docs/fitted.md.

    python -m benchmarks.tiny_unet --out out/tiny-unet
    samplers fit --model out/tiny-unet --prompt-embeds out/tiny-unet/embeds.safetensors --nfe 5 10 --out out/fit-tiny

Writes ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``UNet2DConditionModel.save_pretrained``), the
SD-1.5 scheduler config (``scheduler_config.json``: DPMSolverMultistep, scaled_linear betas, ``steps_offset=1``)
and ``embeds.safetensors`` (8 random prompt embeddings and one negative), all from ``--seed``. An ``--out`` that
holds anything else — another model's config.json, any other file — is refused before anything is written: only
a folder a previous run wrote (those files, its config.json this architecture's) is written over.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from samplers.core.errors import InvalidInput

from . import common

SD15_SCHEDULER = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1,
                  "prediction_type": "epsilon"}
# the U-Net, as UNet2DConditionModel takes it and its config.json records it (read back to know a previous run's)
ARCHITECTURE = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
                "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
                "attention_head_dim": 8, "norm_num_groups": 32}
# every file make writes (save_pretrained's two, then its own two), and nothing else
FILES = ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json", "embeds.safetensors")
FIX = "name a new or empty folder, or one a previous run of benchmarks.tiny_unet wrote"


def refusal(folder: str | Path) -> str | None:
    """Why :func:`make` must not write into ``folder``, or None where it may: missing or empty, or holding only
    :data:`FILES` with a config.json of this module's U-Net (a previous run's, written over). Anything else is
    someone's folder — a model's whose config.json would be replaced, one with files of its own that would end up
    beside a tiny U-Net's (``--out models/weights/eps`` replaced the shipped config.json, exit status 0)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir())
    others = [n for n in names if n not in FILES]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return f"{str(folder)!r} holds what benchmarks.tiny_unet does not write ({shown})"
    if names and not _tiny_config(folder / "config.json"):
        return (f"{str(folder)!r} holds {', '.join(names)}, but " + ("no config.json" if "config.json" not in names
                else "its config.json is not a tiny U-Net's") + ": not a folder a previous run wrote")
    return None


def _tiny_config(path: Path) -> bool:
    """``path`` is the config.json a previous run wrote: a UNet2DConditionModel of :data:`ARCHITECTURE`."""
    from samplers.core.files import read_json

    try:
        config = read_json(path, "a U-Net config", "")
    except (InvalidInput, OSError):  # missing, a folder, not JSON
        return False
    return (isinstance(config, dict) and config.get("_class_name") == "UNet2DConditionModel"
            and all(config.get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in ARCHITECTURE.items()))


def make(folder: str | Path, seed: int = 0, prompts: int = 8) -> Path:
    """Create the folder (see the module docstring); returns it. A folder :func:`refusal` refuses is
    :class:`InvalidInput`, before anything is written."""
    import tempfile

    from diffusers import UNet2DConditionModel
    from safetensors.torch import save

    folder = Path(folder)
    why = refusal(folder)
    if why is not None:
        raise InvalidInput(f"{why}; {FIX}")
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(seed)  # diffusers initialises its weights from torch's global generator
        unet = UNet2DConditionModel(**ARCHITECTURE)
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.tiny_unet", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--out", type=common.out_folder, required=True,
                   help="the folder to create (new or empty, or one a previous run wrote: its files are replaced; "
                        "a folder holding anything else is refused)")
    p.add_argument("--seed", type=common.seed_value, default=0,
                   help="seed of the weights and embeddings, in [0, 2**32) (default 0)")
    args = p.parse_args(argv)
    why = refusal(args.out)
    if why is not None:
        p.error(f"--out {why}; {FIX}")
    print(f"wrote {make(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

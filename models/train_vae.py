"""Train the KL autoencoder on procedural scenes generated on the fly (``models.data``).

    python -m models.train_vae --out models/weights/vae --steps 2000 --seed 0

Loss (per batch): L1 + MSE reconstruction, an edge term (L1 between the images' finite differences,
which keeps shape boundaries sharp), and ``kl_weight`` · KL(q(z|x) ‖ N(0, I)) summed over latent
elements. AdamW with warm-up and cosine decay. The decoder sees posterior samples, so it tolerates
latents that are slightly off, as diffusion samples are.

Reproducible from ``--seed``: the model init comes from the seed, batch k is scenes
``k·B … k·B+B−1`` of data stream ``seed`` and the posterior noise of step k is seeded by (seed, k), so
``--resume`` from ``<out>/checkpoint.pt`` (written atomically every ``--checkpoint-minutes``)
continues exactly where it stopped. At the end, the latent shift and scale are estimated from
encoded training data (unit variance, zero mean), PSNR is measured on held-out scenes (data stream
``--eval-seed``), and the final fp16 weights + config are written with ``models.io.save_model``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import _checks, data
from samplers.core.errors import InvalidInput

from . import io as mio
from samplers.core.argtypes import ArgumentParser, seed, threads

from ._checks import (MAX_BLOCKS, MAX_LATENT_CHANNELS, channel_list, check_training_memory, int_at_least, non_empty,
                      out_folder, real)
from .vae import VAE, VAEConfig, psnr

EVAL_SEED = 1_000_003  # held-out data stream for PSNR; training uses --seed (0 by default)

# Caps on the sizes a run takes: above them a run would not fit a machine's memory or would run for days, and hung
# (make_batch of 10**9 scenes) instead of failing; refused at parse time (docs/models.md).
MAX_BATCH = 4096  # images of one step (64 px, float32: ~200 MB of images and far more of activations at 4096)
MAX_SAMPLES = 1_000_000  # --scale-samples / --eval-samples (encoded in batches; 10**6 is hours of CPU)
# Options that make a run (its batches, its schedule, its model): a --resume must give the same (stored with the
# checkpoint as "args"). The others (--out, --threads, --checkpoint-minutes, --stop-after, --keep-checkpoint, the
# evaluation after training) do not change the weights trained.
RUN_OPTIONS = ("steps", "seed", "batch_size", "lr", "warmup", "kl_weight", "edge_weight", "latent_channels",
               "channels", "enc_res_blocks", "dec_res_blocks", "name")


def int_in(low: int, high: int, why: str):
    """argparse type: an integer in [low, high] (``why``: what the upper cap is for)."""
    at_least = int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is above the cap {high} ({why}); give at most {high}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def check_warmup(p: argparse.ArgumentParser, args, default: int) -> None:
    """lr_at ramps the rate over --warmup steps: more warm-up steps than --steps never reach --lr (the whole run at a
    fraction of it). Not given, --warmup is ``default`` or --steps when fewer (the documented default)."""
    if args.warmup is None:
        args.warmup = min(default, args.steps)
    if args.warmup > args.steps:
        p.error(f"argument --warmup: {args.warmup} is more than --steps {args.steps}: the learning rate would still be "
                f"ramping up when the run ends; give --warmup at most --steps (e.g. --warmup {args.steps // 10})")


def run_args(args) -> dict:
    """The options of ``RUN_OPTIONS`` (plain values, stored with a checkpoint)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k in RUN_OPTIONS}


def refuse_other_run(ckpt_path: Path, stored: dict, now: dict) -> None:
    """``--resume`` continues one run: the checkpoint's stored run options must equal this command's."""
    differ = [f"--{k.replace('_', '-')} {_shown(stored.get(k, '(not recorded)'))} there, {_shown(now[k])} here"
              for k in now if stored.get(k, "(not recorded)") != now[k]]
    if differ:
        raise InvalidInput(f"--resume: {ckpt_path} was written by a run with other options ({'; '.join(differ)}); give "
                           "the options it was written with, or start afresh in another folder, or delete it")


def _shown(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def refuse_non_finite(loss: torch.Tensor, step: int, lr: float, module: torch.nn.Module | None = None) -> None:
    """Stop at the first non-finite loss, and (``module``: before anything is saved) non-finite weights: a diverged
    run is not a model. Each step checks its loss only (one read, which the loss shown reads anyway); weights that
    turn non-finite give a non-finite loss at the next step, and are scanned before every save."""
    bad = "loss" if not torch.isfinite(loss).all() else None
    if bad is None and module is not None and not all(torch.isfinite(p).all() for p in module.parameters()):
        bad = "weights"
    if bad:
        raise InvalidInput(f"training diverged at step {step} (the {bad} became non-finite, learning rate "
                           f"{lr:.3g}); nothing was saved; give a lower --lr (e.g. {lr / 10:.3g}) or a longer --warmup")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m models.train_vae", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=out_folder, required=True, help="output folder (required: training never writes over the "
                   "shipped VAE unless you name its folder, models/weights/vae)")
    p.add_argument("--steps", type=int_at_least(1), default=2000)
    p.add_argument("--seed", type=seed, default=0, help="0 <= seed < 2**32")
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH, "memory"), default=16)
    p.add_argument("--lr", type=real(positive=True), default=1e-3)
    p.add_argument("--warmup", type=int_at_least(0), default=None,
                   help="linear warm-up steps, at most --steps (default: 100, or --steps when fewer)")
    p.add_argument("--kl-weight", type=real(low=0.0), default=1e-6)
    p.add_argument("--edge-weight", type=real(low=0.0), default=0.5)
    p.add_argument("--latent-channels", type=int_in(1, MAX_LATENT_CHANNELS, "memory; SD's VAE has 4"), default=4)
    p.add_argument("--channels", type=channel_list, default=(32, 64, 128),
                   help="comma-separated, e.g. 32,64,128 (at most 6 levels, each at most 2048 wide)")
    p.add_argument("--enc-res-blocks", type=int_in(1, MAX_BLOCKS, "build time and memory"), default=1)
    p.add_argument("--dec-res-blocks", type=int_in(1, MAX_BLOCKS, "build time and memory"), default=2)
    p.add_argument("--name", type=non_empty, default=None)
    p.add_argument("--threads", type=threads, default=None,
                   help="torch threads, at most the cores this process may run on (default: all cores, at most 8)")
    p.add_argument("--checkpoint-minutes", type=real(positive=True), default=3.0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument(
        "--stop-after", type=int_at_least(1), default=None,
        help="stop after this many steps of this run, leaving a checkpoint (split a run over sessions; then --resume)",
    )
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.pt after the final save")
    p.add_argument("--scale-samples", type=int_in(1, MAX_SAMPLES, "time"), default=2048,
                   help="images encoded to estimate scale/shift")
    p.add_argument("--eval-samples", type=int_in(1, MAX_SAMPLES, "time"), default=256)
    p.add_argument("--eval-seed", type=seed, default=EVAL_SEED, help="0 <= seed < 2**32")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    groups = VAEConfig.groups
    bad = [c for c in args.channels if c % min(groups, c)]
    if bad:
        p.error(f"argument --channels: {bad} are not multiples of the VAE's GroupNorm groups ({groups}); "
                "use multiples of 8 (e.g. 32,64,128)")
    down = 2 ** len(args.channels)  # VAEConfig.downsample: one 2x down-sampling per level
    if data.IMAGE_SIZE % down:
        p.error(f"argument --channels: {len(args.channels)} levels down-sample {down}x, which the {data.IMAGE_SIZE} px "
                f"training images do not fit ({data.IMAGE_SIZE} must be a multiple of it); give at most "
                f"{int(math.log2(data.IMAGE_SIZE))} levels (e.g. 32,64,128)")
    with torch.device("meta"):  # shapes only: the parameters the run will train
        vae = VAE(VAEConfig(channels=args.channels, latent_channels=args.latent_channels,
                            enc_res_blocks=args.enc_res_blocks, dec_res_blocks=args.dec_res_blocks))
    check_training_memory(p, vae, 16, "float32 weights, gradients and AdamW's two moments",
                          "--channels, --latent-channels, --enc-res-blocks, --dec-res-blocks",
                          "give fewer or narrower --channels, or fewer --enc-res-blocks / --dec-res-blocks")
    check_warmup(p, args, 100)
    return args


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def vae_loss(vae: VAE, x: torch.Tensor, generator: torch.Generator, kl_weight: float, edge_weight: float):
    posterior = vae.encode(x)
    recon = vae.decode(posterior.sample(generator))
    l1 = (recon - x).abs().mean()
    mse = (recon - x).pow(2).mean()
    edge = (
        (torch.diff(recon, dim=-1) - torch.diff(x, dim=-1)).abs().mean()
        + (torch.diff(recon, dim=-2) - torch.diff(x, dim=-2)).abs().mean()
    )
    kl = posterior.kl().mean()
    loss = l1 + mse + edge_weight * edge + kl_weight * kl
    return loss, {"l1": l1.item(), "mse": mse.item(), "edge": edge.item(), "kl": kl.item()}


@torch.no_grad()
def estimate_latent_stats(vae: VAE, seed: int, n: int, batch_size: int = 128) -> tuple[float, float]:
    """(shift, scale) so that (mode(z) − shift) · scale has zero mean and unit variance over training data."""
    total, total_sq, count = 0.0, 0.0, 0
    start = 10**9  # far past the indices the training loop reads, same stream
    for i in range(0, n, batch_size):
        x, _, _ = data.make_batch(seed, min(batch_size, n - i), start=start + i)
        z = vae.encode(x).mode().double()
        total += z.sum().item()
        total_sq += z.pow(2).sum().item()
        count += z.numel()
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 1e-12))
    return mean, 1.0 / std


@torch.no_grad()
def evaluate_psnr(vae: VAE, seed: int, n: int, batch_size: int = 128) -> float:
    vals = []
    for i in range(0, n, batch_size):
        x, _, _ = data.make_batch(seed, min(batch_size, n - i), start=i)
        vals.append(psnr(vae.from_latent(vae.to_latent(x)), x))
    return torch.cat(vals).mean().item()


def main(argv=None) -> int:
    return _checks.cli("python -m models.train_vae", _main, argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or min(8, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    out: Path = args.out
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not args.resume:  # another run's: never overwritten nor deleted by a fresh run
        raise InvalidInput(f"{ckpt_path} holds the checkpoint of an unfinished run; continue it with --resume, or give "
                           "another --out, or delete it")
    if args.resume and not ckpt_path.exists():
        raise InvalidInput(f"--resume: there is no checkpoint at {ckpt_path} to continue; start afresh without "
                           "--resume, or give the --out of the run to continue")

    channels = args.channels
    cfg = VAEConfig(
        name=args.name or f"vae-f{2 ** len(channels)}c{args.latent_channels}",
        channels=channels,
        latent_channels=args.latent_channels,
        enc_res_blocks=args.enc_res_blocks,
        dec_res_blocks=args.dec_res_blocks,
    )
    torch.manual_seed(args.seed)
    vae = VAE(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    ema_loss = None  # the loss shown: its EMA over the steps, continued by --resume
    if args.resume:
        ckpt = mio.load_resume(ckpt_path, {"config": dict, "args": dict, "model": dict, "optimizer": dict,
                                           "step": int}, optional={"ema_loss": (float, type(None))})
        if ckpt["config"] != cfg.to_dict():
            raise InvalidInput(f"{ckpt_path} was written with another config; remove it, or give the "
                               "arguments it was written with")
        refuse_other_run(ckpt_path, ckpt["args"], run_args(args))
        for part, target in (("model", vae), ("optimizer", opt)):
            mio.resume_into(ckpt_path, lambda: target.load_state_dict(ckpt[part]), f"{part!r} state")
        step = ckpt["step"]
        ema_loss = ckpt.get("ema_loss")  # (a checkpoint written before it was stored: restarts, as it did)
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    def checkpoint():
        out.mkdir(parents=True, exist_ok=True)
        mio.atomic_torch_save(ckpt_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                          "config": cfg.to_dict(), "args": run_args(args) | {"out": str(out)},
                                          "ema_loss": ema_loss})

    n_params = sum(p.numel() for p in vae.parameters())
    print(f"VAE {cfg.name}: {n_params / 1e6:.2f} M parameters, {threads} threads, batch {args.batch_size}", file=sys.stderr)
    vae.train()
    last_ckpt = time.monotonic()
    t_start = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="train_vae", mininterval=10.0, dynamic_ncols=True)
    loss, lr = torch.zeros(()), args.lr  # (a resume at its last step runs no step)
    stop_at = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    while step < stop_at:
        x, _, _ = data.make_batch(args.seed, args.batch_size, start=step * args.batch_size)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, parts = vae_loss(vae, x, gen, args.kl_weight, args.edge_weight)
        refuse_non_finite(loss, step + 1, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        train_psnr = 10 * math.log10(4.0 / max(parts["mse"], 1e-12))  # [-1,1] range -> peak 2
        bar.set_postfix(loss=f"{ema_loss:.4f}", psnr=f"{train_psnr:.1f}", kl=f"{parts['kl']:.0f}", refresh=False)
        bar.update(1)
        if step % 100 == 0 or step == args.steps:
            print(
                f"step {step}/{args.steps} loss {ema_loss:.4f} l1 {parts['l1']:.4f} mse {parts['mse']:.5f} "
                f"edge {parts['edge']:.4f} kl {parts['kl']:.1f} batch-psnr {train_psnr:.2f} dB "
                f"lr {lr_at(step - 1, args):.2e} elapsed {time.monotonic() - t_start:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        if time.monotonic() - last_ckpt > args.checkpoint_minutes * 60 and step < args.steps:
            refuse_non_finite(loss, step, lr, vae)
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    refuse_non_finite(loss, step, lr, vae)  # the last step's update, before any save
    if step < args.steps:
        checkpoint()
        print(f"stopped at step {step}/{args.steps}; continue with --resume (checkpoint {ckpt_path})", file=sys.stderr)
        return 0

    vae.eval()
    shift, scale = estimate_latent_stats(vae, args.seed, args.scale_samples)
    vae.config.shift_factor, vae.config.scaling_factor = shift, scale
    vae.config.extra = {
        "train": {
            "command": "python -m models.train_vae " + " ".join(sys.argv[1:] if argv is None else argv),
            "steps": args.steps,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "kl_weight": args.kl_weight,
            "edge_weight": args.edge_weight,
            "data": "models.data stream --seed, scenes 0 .. steps*batch_size-1",
        }
    }
    out.mkdir(parents=True, exist_ok=True)
    vae.save(out)
    # Measure what was shipped (fp16 weights, loaded back), on a held-out stream.
    shipped = VAE.load(out)
    val = evaluate_psnr(shipped, args.eval_seed, args.eval_samples)
    shipped.config.extra["eval"] = {"psnr_db": round(val, 3), "eval_seed": args.eval_seed, "n": args.eval_samples}
    shipped.save(out)
    print(
        f"done: shift {shift:.4f} scale {scale:.4f}; held-out PSNR {val:.2f} dB on {args.eval_samples} images "
        f"(stream {args.eval_seed}); wrote {out}/model.safetensors ({(out / mio.WEIGHTS_FILE).stat().st_size / 1e6:.2f} MB)",
        file=sys.stderr,
    )
    if ckpt_path.exists() and not args.keep_checkpoint:
        ckpt_path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
from ._checks import channel_list, int_at_least, non_empty, out_folder, real
from .vae import VAE, VAEConfig, psnr

EVAL_SEED = 1_000_003  # held-out data stream for PSNR; training uses --seed (0 by default)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train_vae", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=out_folder, required=True, help="output folder (required: training never writes over the "
                   "shipped VAE unless you name its folder, models/weights/vae)")
    p.add_argument("--steps", type=int_at_least(1), default=2000)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--batch-size", type=int_at_least(1), default=16)
    p.add_argument("--lr", type=real(positive=True), default=1e-3)
    p.add_argument("--warmup", type=int_at_least(0), default=100)
    p.add_argument("--kl-weight", type=real(low=0.0), default=1e-6)
    p.add_argument("--edge-weight", type=real(low=0.0), default=0.5)
    p.add_argument("--latent-channels", type=int_at_least(1), default=4)
    p.add_argument("--channels", type=channel_list, default=(32, 64, 128), help="comma-separated, e.g. 32,64,128")
    p.add_argument("--enc-res-blocks", type=int_at_least(1), default=1)
    p.add_argument("--dec-res-blocks", type=int_at_least(1), default=2)
    p.add_argument("--name", type=non_empty, default=None)
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch threads (default: all cores, at most 8)")
    p.add_argument("--checkpoint-minutes", type=real(positive=True), default=3.0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument(
        "--stop-after", type=int_at_least(1), default=None,
        help="stop after this many steps of this run, leaving a checkpoint (split a run over sessions; then --resume)",
    )
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.pt after the final save")
    p.add_argument("--scale-samples", type=int_at_least(1), default=2048, help="images encoded to estimate scale/shift")
    p.add_argument("--eval-samples", type=int_at_least(1), default=256)
    p.add_argument("--eval-seed", type=int_at_least(0), default=EVAL_SEED)
    args = p.parse_args(argv)
    groups = VAEConfig.groups
    bad = [c for c in args.channels if c % min(groups, c)]
    if bad:
        p.error(f"argument --channels: {bad} are not multiples of the VAE's GroupNorm groups ({groups}); "
                "use multiples of 8 (e.g. 32,64,128)")
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
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

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
    if args.resume:
        if not ckpt_path.exists():
            print(f"--resume: no checkpoint at {ckpt_path}; starting from scratch", file=sys.stderr)
        else:
            ckpt = mio.load_resume(ckpt_path, {"config": dict, "args": dict, "model": dict, "optimizer": dict,
                                               "step": int})
            if ckpt["config"] != cfg.to_dict() or ckpt["args"].get("seed") != args.seed:
                raise InvalidInput(f"{ckpt_path} was written with another config or seed; remove it, or give the "
                                   "arguments it was written with")
            for part, target in (("model", vae), ("optimizer", opt)):
                mio.resume_into(ckpt_path, lambda: target.load_state_dict(ckpt[part]), f"{part!r} state")
            step = ckpt["step"]
            print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    n_params = sum(p.numel() for p in vae.parameters())
    print(f"VAE {cfg.name}: {n_params / 1e6:.2f} M parameters, {threads} threads, batch {args.batch_size}", file=sys.stderr)
    vae.train()
    last_ckpt = time.monotonic()
    t_start = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="train_vae", mininterval=10.0, dynamic_ncols=True)
    ema_loss = None
    stop_at = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    while step < stop_at:
        x, _, _ = data.make_batch(args.seed, args.batch_size, start=step * args.batch_size)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss, parts = vae_loss(vae, x, gen, args.kl_weight, args.edge_weight)
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
            mio.atomic_torch_save(
                ckpt_path,
                {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg.to_dict(), "args": vars(args) | {"out": str(out)}},
            )
            last_ckpt = time.monotonic()
    bar.close()
    if step < args.steps:
        mio.atomic_torch_save(
            ckpt_path,
            {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg.to_dict(), "args": vars(args) | {"out": str(out)}},
        )
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

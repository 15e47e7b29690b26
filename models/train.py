"""Train the text-conditioned U-Net (with its text encoder) on VAE latents of procedural scenes.

    python -m models.train eps  --out out/eps  --steps 3200 --seed 0 --threads 1   # VP eps-prediction (SD 1.x style)
    python -m models.train flow --out out/flow --steps 3200 --seed 0 --threads 1   # rectified-flow velocity (SD3 style)
    python -m models.train vae  --out out/vae ...                                  # = python -m models.train_vae ...

1. A fixed latent data set is encoded once: scenes ``0 .. n-1`` of data stream ``--seed``
   (``models.data.make_batch``) through the VAE (``--vae``, the shipped one by default); the posterior
   mean and std, already scaled (``vae.to_latent``'s scaling), and the tokenised captions are cached
   in ``out/latents/…pt`` (named by VAE hash, seed and size; not committed) and reused by later runs.
2. Training: each step draws a batch, a posterior sample of its latents, times and noise, all from a
   generator seeded by (seed, step), so ``--resume`` continues exactly. Captions are replaced by the
   null prompt ``""`` with probability ``--caption-dropout`` (classifier-free guidance).
   - eps: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·n, t uniform on the 1000 training steps of the scaled-linear
     schedule (β 0.00085 → 0.012), loss ‖ε̂ − n‖² with min-SNR-5 weighting (Hang et al. 2023,
     arXiv:2303.09556), integer timestep input.
   - flow: x_t = (1−t)·x0 + t·n, t logit-normal (SD3, Esser et al. 2024, arXiv:2403.03206, §3.1)
     mixed with 10% uniform draws, shifted by ``--shift``; loss ‖û − (n − x0)‖²; time input t·1000.
   AdamW, warm-up then cosine decay, gradient clipping, EMA of the weights (the EMA is what ships).
3. Atomic checkpoints every ``--checkpoint-minutes`` in ``out/train_<kind>/checkpoint.pt``; the final
   fp16 EMA weights + config (``models.io.save_model``) go to ``--out`` (required; the shipped weights are
   ``models/weights/<kind>``).
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

from . import _checks, data, train_vae
from samplers.core.errors import InvalidInput

from . import io as mio
from ._checks import MAX_BLOCKS, channel_list, check_training_memory, existing_folder, int_at_least, out_folder, real
from .train_vae import MAX_BATCH, check_warmup, int_in, refuse_non_finite, refuse_other_run
from .unet import DiffusionModel, UNetConfig, native_schedule, vae_record
from samplers.core.argtypes import ArgumentParser, Given, seed, threads, was_given

KINDS = ("eps", "flow")
MAX_SCENES = 1_000_000  # --n-scenes cap: the encode is hours of CPU at 10**6 and its cache ~0.6 GB (docs/models.md)
# Options that make a run (its data, batches, schedule, model): a --resume must give the same (stored with the
# checkpoint as "args"); --out, --work, --threads, --encode-threads, --checkpoint-minutes and --stop-after do not
# change what is trained.
RUN_OPTIONS = ("kind", "vae", "n_scenes", "steps", "batch_size", "lr", "warmup", "weight_decay", "ema",
               "caption_dropout", "shift", "channels", "res_blocks", "seed", "max_minutes")


def run_args(args) -> dict:
    """The options of ``RUN_OPTIONS`` as plain values (stored with a checkpoint, read with weights_only)."""
    plain = {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
             for k, v in vars(args).items()}
    return {k: plain[k] for k in RUN_OPTIONS}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=(*KINDS, "vae"),
                   help="eps: VP eps-prediction; flow: rectified-flow velocity; vae: the autoencoder, with the options "
                        "of python -m models.train_vae (python -m models.train vae --help lists them)")
    p.add_argument("--out", type=out_folder, required=True, help="output folder (required: training never writes over the "
                   "shipped weights unless you name their folder, models/weights/<kind>)")
    p.add_argument("--vae", type=existing_folder, default=None, help="VAE folder (default: the shipped VAE)")
    p.add_argument("--work", type=out_folder, default=Path("out"), help="cache + checkpoint folder (not committed)")
    p.add_argument("--n-scenes", type=int_in(1, MAX_SCENES, "time and memory"), default=40000,
                   help="size of the fixed latent data set")
    p.add_argument("--steps", type=int_at_least(1), default=3200)
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH, "memory"), default=64)
    p.add_argument("--lr", type=real(positive=True), default=1e-3)
    p.add_argument("--warmup", type=int_at_least(0), default=None,
                   help="linear warm-up steps, at most --steps (default: 200, or --steps when fewer)")
    p.add_argument("--weight-decay", type=real(low=0.0), default=0.01)
    p.add_argument("--ema", type=real(low=0.0, high=1.0), default=0.999)
    p.add_argument("--caption-dropout", type=real(low=0.0, high=1.0), default=0.1)
    p.add_argument("--shift", type=real(positive=True), default=1.0, action=Given,
                   help="flow only: time shift of training and sampling, recorded in the config (default 1: none)")
    p.add_argument("--channels", type=channel_list, default=(64, 128),
                   help="comma-separated, e.g. 64,128 (at most 8 levels, each at most 2048 wide)")
    p.add_argument("--res-blocks", type=int_in(1, MAX_BLOCKS, "build time and memory"), default=1)
    p.add_argument("--seed", type=seed, default=0, help="0 <= seed < 2**32")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch threads, at most the cores this process may run on (default: all cores, at most 8)")
    p.add_argument("--encode-threads", type=threads, default=None,
                   help="threads while encoding the data set, at most the cores this process may run on")
    p.add_argument("--encode-only", action="store_true", help="build the latent cache and stop")
    p.add_argument("--checkpoint-minutes", type=real(positive=True), default=3.0)
    p.add_argument("--resume", action="store_true", help="continue from <work>/train_<kind>/checkpoint.pt")
    p.add_argument("--stop-after", type=int_at_least(1), default=None, help="stop after this many steps, leaving a checkpoint")
    p.add_argument("--max-minutes", type=real(positive=True), default=None,
                   help="time budget: finish (save the weights) after this long even if --steps is not reached; the "
                        "lr decay then follows wall time too (not bit-reproducible; the config records steps done)")
    return p


def kind_at(argv: list[str]) -> int | None:
    """Where the kind is in ``argv``: its first token that is neither an option nor an option's value (argparse reads
    options before the positional too: ``--out DIR vae``), None where there is none. The options of both trainers
    are known, as a VAE run's may come before ``vae``; every one takes one value but the flags (``--resume``)."""
    flags = {s for parser in (build_parser(), train_vae.build_parser()) for a in parser._actions if a.nargs == 0
             for s in a.option_strings}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":  # the rest are positionals
            return i + 1 if i + 1 < len(argv) else None
        if not token.startswith("-") or token == "-":
            return i
        i += 1 if "=" in token or token in flags else 2
    return None


def vae_argv(argv: list[str], at: int) -> list[str]:
    """``argv`` without the kind ``vae`` at ``at``, for :mod:`models.train_vae`. A ``--`` just before the kind marked
    it a positional here; with nothing after the kind it marks nothing there, and train_vae (no positionals) refused
    it: ``--out DIR -- vae`` was "unrecognized arguments: --". Dropped with the kind then; kept before anything that
    follows, which stays a positional there, refused as argparse refuses it here."""
    rest = argv[at + 1:]
    before = argv[:at - 1] if at > 0 and argv[at - 1] == "--" and not rest else argv[:at]
    return before + rest


def parse_args(argv=None) -> argparse.Namespace:
    """The U-Net trainer's options (``vae`` is :mod:`models.train_vae`'s: :func:`main` hands it over before this)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.kind == "vae":
        p.error("argument kind: vae takes the options of python -m models.train_vae; run python -m models.train vae "
                "... (or python -m models.train_vae ...), not models.train.parse_args")
    if args.kind != "flow" and was_given(args, "shift"):  # eps reads no time shift: it would be recorded, not used
        p.error(f"argument --shift: applies to flow models only; an {args.kind} model trains and samples on its own "
                f"noise schedule and would drop --shift {args.shift:g}; leave --shift out, or train flow")
    groups, heads = UNetConfig.groups, UNetConfig.heads
    bad = [c for c in args.channels if c % min(groups, c) or c % heads]
    if bad:
        p.error(f"argument --channels: {bad} are not multiples of the U-Net's GroupNorm groups ({groups}) and attention "
                f"heads ({heads}); use multiples of {groups} (e.g. 64,128)")
    try:  # the levels joined with their skips: built on the meta device (shapes only), as training will build it
        with torch.device("meta"):
            model = DiffusionModel(UNetConfig(prediction=args.kind, channels=args.channels, res_blocks=args.res_blocks))
    except InvalidInput as err:
        p.error(f"argument --channels: {err}")
    check_training_memory(p, model, 20, "float32 weights, gradients, AdamW's two moments and the EMA copy",
                          "--channels, --res-blocks", "give fewer or narrower --channels, or fewer --res-blocks")
    check_warmup(p, args, 200)
    return args


# --------------------------------------------------------------------------------------------- data set


def cache_path(work: Path, vae, seed: int, n: int) -> Path:
    return work / "latents" / f"latents_{(vae.weights_sha256 or 'random')[:12]}_s{seed}_n{n}.pt"


@torch.no_grad()
def encode_dataset(vae, seed: int, n: int, tokenizer, path: Path, batch_size: int = 250) -> dict:
    """Scenes 0..n-1 of stream ``seed`` → scaled posterior mean / std [n, C, h, w] + caption tokens."""
    if path.is_file():
        try:
            cached = mio.load_checkpoint(path)
        except mio.CorruptModelError as e:  # a cache, not an input: an unreadable one is made again
            print(f"{e} (rebuilding the latent cache)", file=sys.stderr)
            cached = None
        if isinstance(cached, dict) and cached.get("vae_sha256") == vae.weights_sha256 \
                and isinstance(cached.get("mean"), torch.Tensor) and cached["mean"].shape[0] == n:
            return cached
    means, stds, captions = [], [], []
    for i in tqdm(range(0, n, batch_size), desc="encode latents", mininterval=10.0, dynamic_ncols=True):
        x, caps, _ = data.make_batch(seed, min(batch_size, n - i), start=i)
        post = vae.encode(x)
        means.append(((post.mean - vae.shift_factor) * vae.scaling_factor).float())
        stds.append((post.std * vae.scaling_factor).float())
        captions += caps
    ids, mask = tokenizer(captions)
    out = {
        "mean": torch.cat(means), "std": torch.cat(stds), "captions": captions, "ids": ids, "mask": mask,
        "vae_sha256": vae.weights_sha256, "seed": seed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    mio.atomic_torch_save(path, out)
    return out


# ------------------------------------------------------------------------------------------------ loss


def lr_at(step: int, args, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% over the run. With ``--max-minutes`` the decay follows
    whichever is further along, steps or wall time, so a time-limited run still ends at the low rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = max((step - args.warmup) / max(1, args.steps - args.warmup), time_fraction)
    return args.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def diffusion_loss(model: DiffusionModel, x0, ids, mask, gen: torch.Generator, alphas_cumprod=None) -> torch.Tensor:
    """One batch of the model's training objective (see the module docstring)."""
    cfg = model.config
    B = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen)
    context, cmask = model.text_encoder(ids=ids, mask=mask)
    if cfg.prediction == "eps":
        t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=gen)
        ac = alphas_cumprod[t].view(B, 1, 1, 1)
        x_t = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
        pred = model.unet(x_t, t.float(), context, cmask)
        snr = (ac / (1 - ac)).view(B)
        weight = snr.clamp(max=5.0) / snr  # min-SNR-5 for eps targets
        return (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    # logit-normal(0, 1), with 10% uniform draws so that the ends (t near 1: sampling starts there) are seen too
    t = torch.where(torch.rand(B, generator=gen) < 0.1, torch.rand(B, generator=gen), torch.sigmoid(torch.randn(B, generator=gen)))
    s = cfg.flow_shift
    t = s * t / (1 + (s - 1) * t)
    tv = t.view(B, 1, 1, 1)
    x_t = (1 - tv) * x0 + tv * noise
    pred = model.unet(x_t, t * cfg.flow_multiplier, context, cmask)
    return (pred - (noise - x0)).pow(2).mean()


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    return _checks.cli("python -m models.train", _main, argv)


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    at = kind_at(argv)
    if at is not None and argv[at] == "vae":  # one entry point for all three models, the kind anywhere among them
        return train_vae.main(vae_argv(argv, at))
    args = parse_args(argv)
    from .vae import VAE

    threads = args.threads or min(8, os.cpu_count() or 1)
    out: Path = args.out
    work_dir = args.work / f"train_{args.kind}"
    ckpt_path = work_dir / "checkpoint.pt"

    vae = VAE.load(args.vae)
    channels = args.channels
    cfg = UNetConfig(
        name=f"unet-{args.kind}", prediction=args.kind, latent_channels=vae.latent_channels, channels=channels,
        res_blocks=args.res_blocks, flow_shift=args.shift, caption_dropout=args.caption_dropout, vae=vae_record(vae),
    )
    torch.manual_seed(args.seed)
    model = DiffusionModel(cfg)
    ckpt = None  # --resume's checkpoint, read and checked before the data set is encoded
    if ckpt_path.exists() and not args.resume:  # another run's: a fresh run never overwrites nor deletes it
        raise InvalidInput(f"{ckpt_path} holds the checkpoint of an unfinished run; continue it with --resume, or give "
                           "another --work, or delete it")
    if args.resume:
        if not ckpt_path.exists():
            raise InvalidInput(f"--resume: there is no checkpoint at {ckpt_path} to continue; start afresh without "
                               "--resume, or give the --work of the run to continue")
        ckpt = mio.load_resume(ckpt_path, {"config": dict, "seed": int, "args": dict, "model": dict, "ema": dict,
                                           "optimizer": dict, "step": int},
                               optional={"elapsed": (int, float), "ema_loss": (float, type(None))})
        if ckpt["config"] != cfg.to_dict() or ckpt["seed"] != args.seed:
            raise InvalidInput(f"{ckpt_path} was written with another config, VAE or seed; remove it, or give the "
                               "arguments it was written with")
        refuse_other_run(ckpt_path, ckpt["args"], run_args(args))

    torch.set_num_threads(args.encode_threads or threads)
    t0 = time.monotonic()
    ds = encode_dataset(vae, args.seed, args.n_scenes, model.text_encoder.tokenizer,
                        cache_path(args.work, vae, args.seed, args.n_scenes))
    print(f"latent data set: {ds['mean'].shape[0]} scenes, {tuple(ds['mean'].shape[1:])} latents "
          f"(mean std {ds['std'].mean():.3f}), {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    if args.encode_only:
        return 0
    del vae
    torch.set_num_threads(threads)

    ema = DiffusionModel(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    decay_params = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other_params = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": args.weight_decay}, {"params": other_params, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99),
    )
    step = 0
    prior_elapsed = 0.0
    ema_loss = None  # the loss shown and recorded (final_loss_ema): its EMA over the steps, continued by --resume
    if ckpt is not None:
        for part, target in (("model", model), ("ema", ema), ("optimizer", opt)):
            mio.resume_into(ckpt_path, lambda: target.load_state_dict(ckpt[part]), f"{part!r} state")
        step = ckpt["step"]
        prior_elapsed = ckpt.get("elapsed", 0.0)
        ema_loss = ckpt.get("ema_loss")  # (a checkpoint written before it was stored: restarts, as it did)
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    def checkpoint():
        work_dir.mkdir(parents=True, exist_ok=True)
        mio.atomic_torch_save(ckpt_path, {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                                          "step": step, "config": cfg.to_dict(), "seed": args.seed, "args": run_args(args),
                                          "elapsed": time.monotonic() - t_start, "ema_loss": ema_loss})

    alphas_cumprod = native_schedule(cfg).alphas_cumprod.float() if args.kind == "eps" else None
    n_data = ds["mean"].shape[0]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.name}: {n_params / 1e6:.2f} M parameters ({n_params * 2 / 1e6:.1f} MB fp16), {threads} threads, "
          f"batch {args.batch_size}, {args.steps} steps", file=sys.stderr, flush=True)
    model.train()
    last_ckpt = time.monotonic()
    t_start = last_ckpt - prior_elapsed  # wall time counts across --resume
    stop_at = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.kind}", mininterval=10.0, dynamic_ncols=True)
    loss, lr = torch.zeros(()), args.lr  # (a resume at its last step runs no step)
    timed_out = False
    while step < stop_at:
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, n_data, (args.batch_size,), generator=gen)
        x0 = ds["mean"][idx] + ds["std"][idx] * torch.randn(ds["mean"][idx].shape, generator=gen)
        ids, mask = ds["ids"][idx].clone(), ds["mask"][idx].clone()
        drop = torch.rand(args.batch_size, generator=gen) < args.caption_dropout
        ids[drop, 1:] = model.text_encoder.tokenizer.pad_id  # keep <bos>: the null prompt ""
        mask[drop, 1:] = False
        time_fraction = 0.0 if args.max_minutes is None else (time.monotonic() - t_start) / (args.max_minutes * 60)
        lr = lr_at(step, args, time_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = diffusion_loss(model, x0, ids, mask, gen, alphas_cumprod)
        refuse_non_finite(loss, step + 1, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        bar.update(1)
        elapsed = time.monotonic() - t_start
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {ema_loss:.4f} lr {lr:.2e} elapsed {elapsed:.0f}s",
                  file=sys.stderr, flush=True)
        if time.monotonic() - last_ckpt > args.checkpoint_minutes * 60 and step < args.steps:
            refuse_non_finite(loss, step, lr, model)
            checkpoint()
            last_ckpt = time.monotonic()
        if args.max_minutes is not None and elapsed > args.max_minutes * 60 and step < stop_at:
            timed_out = True
            print(f"--max-minutes {args.max_minutes} reached at step {step}; saving", file=sys.stderr)
            break
    bar.close()
    refuse_non_finite(loss, step, lr, model)  # the last step's update, before any save
    refuse_non_finite(loss, step, lr, ema)
    if step < args.steps and not timed_out:  # --stop-after: leave a checkpoint to --resume from
        checkpoint()
        print(f"stopped at step {step}/{args.steps}; continue with --resume (checkpoint {ckpt_path})", file=sys.stderr)
        return 0

    cfg.extra = {"train": {
        "command": "python -m models.train " + " ".join(argv), "steps_done": step, "steps": args.steps,
        "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
        "n_scenes": args.n_scenes, "final_loss_ema": round(ema_loss or float("nan"), 5),
        "minutes": round((time.monotonic() - t_start) / 60, 1), "threads": threads,
        "data": "models.data stream --seed, scenes 0 .. n_scenes-1, VAE posterior samples",
    }}
    ema.config = cfg
    written = ema.save(out)
    size = (out / mio.WEIGHTS_FILE).stat().st_size / 1e6
    print(f"done: {step} steps, loss {ema_loss:.4f}; wrote {out}/{mio.WEIGHTS_FILE} ({size:.2f} MB, "
          f"sha256 {written['weights_sha256'][:12]})", file=sys.stderr)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

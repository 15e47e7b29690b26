"""How faithful is the VAE? PSNR on held-out scenes, and drift over repeated encode/decode round trips.

    python -m benchmarks.vae_roundtrip --n 1000            # → out/vae_roundtrip/{results.json,table.md,vae_roundtrip.png}
    python -m benchmarks.vae_roundtrip --n 1000 --k 10 --threads 1 --out docs/benchmarks/vae   # the committed one
    python -m benchmarks.vae_roundtrip --report docs/benchmarks/vae/results.json              # table.md only

Round trip k: x_k = from_latent(to_latent(x_{k−1})) (posterior mode, clamped to [−1, 1]); PSNR(x_k, x_0)
on the [0, 1] scale. Also reports the analytic checker's caption-match rate on the originals and on
x_1, i.e. how much of what a caption says survives the autoencoder. ``table.md`` is generated from
``results.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models import checker, data
from models import io as mio
from models.train_vae import EVAL_SEED
from models.vae import VAE, estimate_bytes, psnr, read_config
from samplers.core.argtypes import int_in, path_to
from samplers.core.errors import LimitExceeded, SamplersError

from . import common

MODULE = "benchmarks.vae_roundtrip"


def markdown(result: dict) -> str:
    """The round-trip table of one run (``results.json``)."""
    lines = ["# VAE round trip", "",
             f"VAE `{result['vae']}` (weights sha256 {result['weights_sha256'][:12]}), {result['n']} held-out scenes "
             f"(data stream {result['data_seed']}), "
             # a run that recorded its info names the device in the last line, with the command
             + (f"commit {result['info']['commit']}" if "info" in result else f"{result['threads']} torch thread(s)")
             + ".", "",
             f"PSNR after one encode/decode round trip: **{result['psnr_db']:.2f} dB** (5th percentile "
             f"{result['psnr_db_p05']:.2f}, min {result['psnr_db_min']:.2f}). Analytic checker's caption match: "
             f"originals {result['checker_match_original']:.3f}, reconstructions "
             f"{result['checker_match_reconstruction']:.3f}. Encode {result['encode_ms_per_image']:.2f} ms / image, "
             f"decode {result['decode_ms_per_image']:.2f} ms / image.", "",
             "| round trips k | PSNR(x_k, x_0) dB |", "|---:|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["psnr_db_after_k_round_trips"].items()]
    lines += ["", "![PSNR after k round trips](vae_roundtrip.png)"]
    if "info" in result:  # the device, date, wall time and the command (recorded, else rebuilt from the args)
        lines += ["", common.measured_line(result, common.command_from_args(MODULE, parser(), result.get("args", {})))]
    return "\n".join(lines) + "\n"


def report(results: str | Path, write: bool = True) -> str:
    """table.md beside ``results`` (a results.json of this benchmark), generated from it; returns the text."""
    return common.report(results, markdown, MODULE, write=write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vae_roundtrip", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--n", type=common.positive_int, default=1000,
                   help="held-out images (their PSNRs over --k round trips must fit in memory; default 1000)")
    round_trips = int_in(1, common.MAX_STEPS, "the pipeline's step limit (models.pipeline.MAX_STEPS): each round trip "
                                              "encodes and decodes every image once more")
    p.add_argument("--k", type=round_trips,
                   default=10, help=f"round trips, at most {common.MAX_STEPS} (the pipeline's step limit; default 10)")
    p.add_argument("--seed", type=common.seed_value, default=EVAL_SEED,
                   help="data stream, in [0, 2**32) (training used 0)")
    p.add_argument("--vae", type=path_to("VAE folder"), default=None, help="VAE folder (default: shipped weights)")
    common.add_output_options(p, Path("out/vae_roundtrip"), "results.json, table.md and vae_roundtrip.png")
    p.add_argument("--batch-size", type=common.positive_int, default=100,
                   help="images encoded and decoded at once (default 100)")
    common.add_threads_option(p, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--no-progress", action="store_true")
    return p


def check_sizes(config, n: int, k: int, batch_size: int) -> None:
    """Refuse (``LimitExceeded``) a run whose memory is more than is free, before the weights are loaded: the
    k × n PSNRs it keeps (float64), the checker's results per image and, per batch, the originals, the round trip's
    images and latents and the VAE's activations (:func:`models.vae.estimate_bytes`)."""
    from samplers.core.validate import check_allocation

    size, b = config.image_size, min(batch_size, n)
    need = 8 * k * n + 2 * 64 * n + 4 * 3 * size * size * 3 * b + 2 * estimate_bytes(config, b, size, size)
    check_allocation(need, f"--n {n} with --k {k} and --batch-size {batch_size} ({k} × {n} PSNRs, batches of {b} "
                     f"images of {size}×{size})", fix="pass a smaller --n, --k or --batch-size")


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if common.report_only(args, report, p):
        return 0
    common.set_threads(args.threads)
    print(common.device_line(), flush=True)
    if args.vae is not None and Path(args.vae).is_file():
        p.error(f"--vae {str(args.vae)!r} is a file, not a VAE folder: name the folder that holds its config.json "
                "and weights")
    try:  # a missing folder, another model's weights: the user's path, said as such (config.json first)
        config, _ = read_config(args.vae)
    except (SamplersError, OSError) as err:
        p.error(f"--vae {str(args.vae)!r}: {err}")
    try:  # before the weights are read: --n 10**9 failed on allocating its PSNRs with a traceback
        check_sizes(config, args.n, args.k, args.batch_size)
    except LimitExceeded as err:
        p.error(str(err))
    try:
        vae = VAE.load(args.vae)
    except (SamplersError, OSError) as err:
        p.error(f"--vae {str(args.vae)!r}: {err}")
    t0 = time.perf_counter()

    psnr_k = torch.zeros(args.k, args.n, dtype=torch.float64)
    match_orig, match_rec = [], []
    t_enc = t_dec = 0.0
    with torch.no_grad():
        # one untimed round trip first, as the other benchmarks warm up: the first call pays one-off costs
        # (allocator, kernel selection) that would otherwise be charged to the first batch's images
        vae.from_latent(vae.to_latent(data.make_batch(args.seed, min(args.batch_size, args.n))[0]))
        for i in common.progress(range(0, args.n, args.batch_size), desc="batches", disable=args.no_progress):
            b = min(args.batch_size, args.n - i)
            x0, captions, _ = data.make_batch(args.seed, b, start=i)
            x = x0
            for k in range(args.k):
                t = time.perf_counter()
                lat = vae.to_latent(x)
                t_enc += time.perf_counter() - t if k == 0 else 0.0
                t = time.perf_counter()
                x = vae.from_latent(lat)
                t_dec += time.perf_counter() - t if k == 0 else 0.0
                psnr_k[k, i : i + b] = psnr(x, x0).double()
                if k == 0:
                    match_orig += [checker.matches(img, c) for img, c in zip(x0, captions)]
                    match_rec += [checker.matches(img, c) for img, c in zip(x, captions)]
    mean = psnr_k.mean(1)
    result = {
        "vae": vae.config.name,
        "weights_sha256": vae.weights_sha256,
        "n": args.n,
        "data_seed": args.seed,
        "psnr_db": round(mean[0].item(), 3),
        "psnr_db_p05": round(psnr_k[0].quantile(0.05).item(), 3),
        "psnr_db_min": round(psnr_k[0].min().item(), 3),
        "psnr_db_after_k_round_trips": {str(k + 1): round(v, 3) for k, v in enumerate(mean.tolist())},
        "checker_match_original": sum(match_orig) / args.n,
        "checker_match_reconstruction": sum(match_rec) / args.n,
        "encode_ms_per_image": round(1000 * t_enc / args.n, 3),
        "decode_ms_per_image": round(1000 * t_dec / args.n, 3),
        "threads": torch.get_num_threads(),
        "info": common.run_info("cpu"),
        "args": common.run_args(args),
        "command": common.run_command(MODULE, argv),
        "seconds": time.perf_counter() - t0,
    }
    print(f"VAE {vae.config.name} ({vae.weights_sha256[:12]}), {args.n} held-out images (stream {args.seed})")
    print(f"PSNR after 1 round trip: {result['psnr_db']:.2f} dB (5th percentile {result['psnr_db_p05']:.2f}, min {result['psnr_db_min']:.2f})")
    print("round trips k | PSNR(x_k, x_0) dB")
    for k, v in result["psnr_db_after_k_round_trips"].items():
        print(f"{k:>13} | {v:.2f}")
    print(f"checker caption match: originals {result['checker_match_original']:.3f}, reconstructions {result['checker_match_reconstruction']:.3f}")
    print(f"encode {result['encode_ms_per_image']:.2f} ms/image, decode {result['decode_ms_per_image']:.2f} ms/image ({result['threads']} threads)")

    results = common.write_results(result, args.out)
    report(results)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(range(1, args.k + 1), mean.numpy(), marker="o")
    ax.axhline(30.0, color="grey", ls="--", lw=0.8, label="30 dB bar")
    ax.set_xlabel("encode/decode round trips k")
    ax.set_ylabel("PSNR(x_k, x_0) [dB]")
    ax.set_title(f"{vae.config.name}: {args.n} held-out scenes")
    ax.legend()
    fig.tight_layout()
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    mio.atomic_write_bytes(args.out / "vae_roundtrip.png", buf.getvalue())
    print(f"wrote {results}, {results.with_name('table.md')} and {args.out / 'vae_roundtrip.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

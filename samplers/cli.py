"""The ``samplers`` command: ``samplers list``, ``samplers demo`` (and the image commands of models/)."""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch


def _list(args) -> int:
    from . import available, info
    rows = [info(n) for n in available()]
    print(f"{'name':<22} {'kind':<10} {'order':>5} {'NFE/step':>8}  aliases")
    for s in rows:
        print(f"{s.name:<22} {s.kind:<10} {s.order:>5} {s.nfe_per_step:>8g}  {', '.join(s.aliases)}")
    print(f"\n{len(rows)} samplers")
    return 0


def analytic_table(nfes=(5, 10, 20, 40), problem=None, batch: int = 64, seed: int = 0):
    """Error to the exact PF-ODE endpoint of every deterministic sampler at fixed NFE budgets.

    Each sampler gets the most steps on a Karras schedule (σ 80 → 0.002 → 0) whose run calls the model at most
    NFE times (counted), for Gaussian-mixture data; returns {sampler: {nfe: RMSE}}.
    """
    from . import available, get_sigmas, info, sample
    from .problems import GaussianMixture
    gm = problem or GaussianMixture.default()
    sigma_max = 80.0
    x = gm.noise(batch, seed=seed) * sigma_max
    ref = gm.ode_endpoint(x, sigma_max)
    table = {}
    for name in available("ode"):
        spec = info(name)
        if spec.host_sync or "solver" in spec.options:  # adaptive, or weights fitted to a model (samplers.learned)
            continue
        row = {}
        for nfe in nfes:
            # heun-like samplers spend one NFE less on the final Euler step to 0; warm-ups (plms, pndm) more:
            # start from the metadata's estimate and take steps off until the counted calls fit the budget
            steps = int((nfe + (spec.nfe_per_step - 1)) // spec.nfe_per_step) if spec.final_step.startswith("euler") \
                else int(nfe // spec.nfe_per_step)
            row[nfe] = math.nan
            while steps >= 1:
                calls = [0]

                def counted(x_, sigma, **kw):
                    calls[0] += 1
                    return gm.denoiser(x_, sigma, **kw)

                out = sample(name, counted, x, get_sigmas("karras", steps, sigma_min=0.002, sigma_max=sigma_max),
                             disable=True)
                if calls[0] <= nfe:
                    row[nfe] = float(((out - ref) ** 2).mean().sqrt())
                    break
                steps -= 1
        table[name] = row
    return table


def _demo(args) -> int:
    t0 = time.perf_counter()
    nfes = (5, 10, 20, 40)
    print("Analytic demo: Gaussian-mixture data (6 clusters, 64-dim latents), exact PF-ODE endpoint by dopri5 "
          "(float64, rtol 1e-10).\nRMSE to the exact endpoint at equal model evaluations (NFE), Karras schedule "
          "σ 80 → 0.002 → 0:\n")
    table = analytic_table(nfes)
    width = max(map(len, table), default=7) + 2
    print(f"{'sampler':<{width}}" + "".join(f"{'NFE ' + str(n):>12}" for n in nfes))
    for name, row in table.items():
        print(f"{name:<{width}}" + "".join(f"{row[n]:>12.3e}" if not math.isnan(row[n]) else f"{'-':>12}" for n in nfes))
    print(f"\n({time.perf_counter() - t0:.1f} s on {torch.get_num_threads()} CPU threads)")
    try:
        from models.demo import run_demo  # the image demo on the embedded default weights
    except ImportError:
        return 0
    run_demo(out_dir=args.out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="samplers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered sampler with its kind, order and NFE per step").set_defaults(fn=_list)
    demo = sub.add_parser("demo", help="the main demo: analytic steps-vs-error table, then images on the default models")
    demo.add_argument("--out", default="out/demo", help="folder for the demo's images")
    demo.set_defaults(fn=_demo)
    try:
        from models.cli import register_subcommands
    except ImportError:
        pass
    else:
        register_subcommands(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

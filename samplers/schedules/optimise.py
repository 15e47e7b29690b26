"""Optimise a σ schedule for one sampler, model and NFE budget (in the spirit of Align Your Steps / GITS).

    import samplers.schedules.optimise as so
    result = so.optimise_schedule(denoiser, "dpmpp_2m", nfe=8, calibration=noise, sigma_min=0.002, sigma_max=80)
    x0 = samplers.sample("dpmpp_2m", denoiser, noise * 80, result.tensor())
    result.save("dpmpp_2m_8.json"); result.register("my_schedule")       # then get_sigmas("my_schedule", n)

The error of a schedule is the RMS distance, on a calibration batch of noise, between the sampler's result
and the reference solution of the same PF-ODE from the same noise (torchdiffeq's dopri5 at tight tolerance).
The interior log σ points are parameterised as a softmax of gap sizes between log σ_max and log σ_min
(monotone by construction) and optimised with Nelder-Mead from the Karras schedule. The optimiser runs on the
host; the schedule it returns is plain data (JSON) that any sampler call uses like a named schedule.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import schedules
from ..core.budget import steps_for_nfe
from ..core.registry import info, sample
from ..core.files import write_json
from .base import check_steps
from .presets import loglinear_interp
from ..core.errors import InvalidInput, SamplersError
from ..core.validate import integer, real

FIXED_BASELINES = ("karras", "exponential", "polyexponential", "kl_optimal", "vp")


@dataclass
class OptimisedSchedule:
    """A schedule found by :func:`optimise_schedule`: ``sigmas`` (n + 1 values, ending in 0) plus how it was made."""

    sigmas: list[float]
    sampler: str
    nfe: int
    error: float  # calibration RMSE of the optimised schedule
    baselines: dict[str, float] = field(default_factory=dict)  # calibration RMSE of each fixed schedule
    meta: dict = field(default_factory=dict)

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=torch.float64)

    # usable wherever a schedule is: samplers.sample(name, model, x, result), torch.as_tensor(result), result[-2]
    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.sigmas, dtype=dtype or np.float64)

    def __len__(self) -> int:
        return len(self.sigmas)

    def __iter__(self):
        return iter(self.sigmas)

    def __getitem__(self, i):
        return self.tensor()[i]

    def schedule(self, n: int, sigma_min=None, sigma_max=None) -> torch.Tensor:
        """The schedule at ``n`` steps: the optimised levels, log-linearly resampled when n differs (as AYS); one
        step runs from the top level to 0."""
        n = check_steps(n, None, None, need_range=False)
        levels = self.sigmas[:-1]
        if n == len(levels):
            return self.tensor()
        if len(levels) == 1 and n > 1:
            raise InvalidInput(f"this schedule was optimised for 1 step (one level, {levels[0]:g}); it holds no range "
                               f"to resample to {n} steps: optimise one for {n} steps, or use it at n = 1")
        top = torch.tensor(levels[:1], dtype=torch.float64) if n == 1 else loglinear_interp(levels, n)
        return torch.cat([top, torch.zeros(1, dtype=torch.float64)])

    def register(self, name: str) -> None:
        """Make it a named schedule: ``samplers.get_sigmas(name, n)``."""
        schedules.register(name)(self.schedule)

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a temporary file in the same folder, then a rename)."""
        return write_json(path, {"format": "samplers.optimised_schedule/1", **asdict(self)}, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "OptimisedSchedule":
        """Read a file written by :meth:`save`; its tag, fields and values are checked before use."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise InvalidInput(f"{path} is not a readable schedule file ({type(e).__name__}: {e}); pass the path of "
                               "a JSON file written by OptimisedSchedule.save") from None
        if not isinstance(data, dict) or data.get("format") != "samplers.optimised_schedule/1":
            raise InvalidInput(f"{path} is not a schedule written by OptimisedSchedule.save (no format tag "
                               "'samplers.optimised_schedule/1')")
        data = dict(data)
        data.pop("format")
        fields = {"sigmas", "sampler", "nfe", "error", "baselines", "meta"}
        missing, extra = fields - {"baselines", "meta"} - set(data), set(data) - fields
        if missing or extra:
            raise InvalidInput(f"{path}: a schedule file holds the fields {sorted(fields)}; "
                               + (f"missing {sorted(missing)}" if missing else f"unknown {sorted(extra)}"))
        try:
            return cls(**data)._checked()
        except SamplersError as e:
            raise InvalidInput(f"{path}: {e}") from None

    def _checked(self) -> "OptimisedSchedule":
        s = self.sigmas
        if not isinstance(s, list) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in s):
            raise InvalidInput(f"sigmas must be a list of numbers, got {s!r}")
        if len(s) < 2 or s[-1] != 0 or any(not b < a for a, b in zip(s, s[1:])) or not all(map(math.isfinite, s)):
            raise InvalidInput(f"sigmas must be finite, strictly decreasing and end in 0, got {s}")
        if not isinstance(self.sampler, str) or not self.sampler:
            raise InvalidInput(f"sampler must be the sampler's name, got {self.sampler!r}")
        integer("nfe", self.nfe, lo=len(s) - 1)  # the budget: at least one model call per step
        real("error", self.error, lo=0)
        if not isinstance(self.baselines, dict) or not all(isinstance(k, str) for k in self.baselines):
            raise InvalidInput(f"baselines must map schedule names to errors, got {self.baselines!r}")
        for name, value in self.baselines.items():
            real(f"baselines[{name!r}]", value, lo=0)
        if not isinstance(self.meta, dict):
            raise InvalidInput(f"meta must be a dict, got {self.meta!r}")
        return self


def reference_solution(denoiser, x: torch.Tensor, sigma_max: float, sigma_min: float, rtol: float = 1e-7) -> torch.Tensor:
    """The target of a schedule from σ_max to σ_min: the exact PF-ODE state at σ_min
    (:func:`samplers.problems.pf_ode_solution`), then the final denoise that every schedule ends with."""
    from ..problems import pf_ode_solution

    x_min = pf_ode_solution(denoiser, x, sigma_max, sigma_min, rtol=rtol, atol=rtol)
    return denoiser(x_min, x_min.new_full((x_min.shape[0],), sigma_min))


def _sigmas_from(theta: np.ndarray, log_max: float, log_min: float) -> torch.Tensor:
    w = np.exp(theta - theta.max())
    gaps = w / w.sum() * (log_max - log_min)
    logs = log_max - np.concatenate([[0.0], np.cumsum(gaps)])
    logs[-1] = log_min
    return torch.cat([torch.as_tensor(np.exp(logs), dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


def schedule_error(denoiser, sampler: str, sigmas: torch.Tensor, x: torch.Tensor, reference: torch.Tensor,
                   **options) -> float:
    out = sample(sampler, denoiser, x, sigmas, disable=True, **options)
    return float((out.double() - reference.double()).pow(2).mean().sqrt())


def optimise_schedule(denoiser, sampler: str, nfe: int, calibration: torch.Tensor, sigma_min: float,
                      sigma_max: float, *, maxiter: int | None = None, sampler_options: dict | None = None,
                      baselines: tuple[str, ...] = FIXED_BASELINES) -> OptimisedSchedule:
    """Find the σ schedule (σ_max … σ_min, 0) minimising ``sampler``'s error at ``nfe`` model calls.

    Args:
        denoiser: the canonical denoiser D(x, σ) (e.g. from ``samplers.to_denoiser``).
        sampler: registry name; stochastic samplers are rejected (their error to the ODE is not a schedule's).
        nfe: model-call budget; the step count is the most whose run fits it (counted on a Karras schedule,
            :func:`samplers.core.budget.steps_for_nfe`).
        calibration: unit noise [B, ...] (the starting latents are ``calibration · σ_max``).
        sigma_min, sigma_max: the range; σ_max must be finite.
        maxiter: Nelder-Mead iterations (default 150 × the number of free points).
        sampler_options: passed to every sampler call.
    """
    spec = info(sampler)
    if spec.stochastic:
        raise InvalidInput(f"{sampler!r} is stochastic; optimise schedules for deterministic (ode) samplers")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise InvalidInput(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not isinstance(calibration, torch.Tensor) or calibration.ndim < 2:
        raise InvalidInput("calibration must be a batch of unit noise [B, ...]")
    fit = steps_for_nfe(sampler, nfe, lambda n: schedules.get_sigmas("karras", n, sigma_min=sigma_min,
                                                                      sigma_max=sigma_max), **dict(sampler_options or {}))
    if fit is None:
        raise InvalidInput(f"an NFE budget of {nfe} is less than one step of {sampler!r}")
    steps = fit[0]
    options = dict(sampler_options or {})
    x = calibration * sigma_max
    reference = reference_solution(denoiser, x, sigma_max, sigma_min)
    base = {}
    for name in baselines:
        try:
            base[name] = schedule_error(denoiser, sampler, schedules.get_sigmas(name, steps, sigma_min=sigma_min,
                                                                                  sigma_max=sigma_max), x, reference, **options)
        except ValueError:
            continue
    if steps < 2:  # nothing to place between σ_max and σ_min … 0
        sig = schedules.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max)
        err = schedule_error(denoiser, sampler, sig, x, reference, **options)
        return OptimisedSchedule(sig.tolist(), spec.name, nfe, err, base, {"steps": steps})
    log_max, log_min = math.log(sigma_max), math.log(sigma_min)
    karras = schedules.get_sigmas("karras", steps, sigma_min=sigma_min, sigma_max=sigma_max)[:-1].log().numpy()
    theta0 = np.log(-np.diff(karras))

    def objective(theta):
        err = schedule_error(denoiser, sampler, _sigmas_from(theta, log_max, log_min), x, reference, **options)
        return err if math.isfinite(err) else 1e6

    from scipy import optimize

    res = optimize.minimize(objective, theta0, method="Nelder-Mead",
                            options={"maxiter": maxiter or 150 * len(theta0), "xatol": 1e-4, "fatol": 1e-10})
    best = _sigmas_from(res.x, log_max, log_min)
    return OptimisedSchedule(best.tolist(), spec.name, nfe, float(res.fun), base,
                             {"steps": steps, "evaluations": int(res.nfev), "sigma_min": sigma_min,
                              "sigma_max": sigma_max, "calibration_batch": int(calibration.shape[0])})


def main(argv=None) -> int:
    """``python -m samplers.schedules.optimise --sampler dpmpp_2m --nfe 6``: optimise on the analytic Gaussian mixture and
    print held-out errors of the result beside every fixed schedule."""
    import argparse
    import time

    from ..problems import GaussianMixture

    p = argparse.ArgumentParser(prog="python -m samplers.schedules.optimise", description=main.__doc__)
    p.add_argument("--sampler", nargs="+", default=["euler", "dpmpp_2m", "heun"])
    p.add_argument("--nfe", type=int, default=6)
    p.add_argument("--calibration", type=int, default=64, help="calibration batch")
    p.add_argument("--held-out", type=int, default=256, help="held-out batch")
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--out", default=None, help="folder for <sampler>_<nfe>.json")
    args = p.parse_args(argv)
    gm = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
    held = gm.noise(args.held_out, seed=1) * args.sigma_max
    ref = reference_solution(gm.denoiser, held, args.sigma_max, args.sigma_min)
    print(f"Gaussian mixture (32-dim), σ {args.sigma_max:g} → {args.sigma_min:g} → 0, NFE {args.nfe}, RMSE to the "
          f"dopri5 endpoint on {args.held_out} held-out starts (calibration: {args.calibration} others)")
    for sampler in args.sampler:
        t0 = time.perf_counter()
        r = optimise_schedule(gm.denoiser, sampler, args.nfe, gm.noise(args.calibration, seed=0), args.sigma_min,
                              args.sigma_max)
        fixed = {n: schedule_error(gm.denoiser, sampler, schedules.get_sigmas(n, r.meta["steps"], sigma_min=args.sigma_min,
                                                                            sigma_max=args.sigma_max), held, ref)
                 for n in r.baselines}
        best = min(fixed, key=fixed.get)
        mine = schedule_error(gm.denoiser, sampler, r.tensor(), held, ref)
        print(f"{sampler:<12} optimised {mine:.4f}   best fixed {best} {fixed[best]:.4f}   ratio {mine / fixed[best]:.2f}   "
              f"({r.meta['evaluations']} evaluations, {time.perf_counter() - t0:.0f} s)")
        if args.out:
            r.save(Path(args.out) / f"{sampler}_{args.nfe}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

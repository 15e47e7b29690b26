"""Model calls counted, not estimated: how many a sampler spends on a schedule, and how many steps fit a budget.

A sampler's metadata (``nfe_per_step``) is a rule of thumb; warm-ups (PNDM's pseudo Runge–Kutta steps, PLMS's
first step), a final Euler step to σ = 0 and singlestep methods that skip a stage there all move the real
count. Everything that compares samplers at equal cost (the demo, the benchmarks, schedule optimisation)
counts here, by running the sampler once on a free stand-in model.
"""
from __future__ import annotations

from typing import Callable

import torch

from .conversion import call_at, prepare_times
from .errors import InvalidInput, InvalidType
from .registry import info, sample
from .validate import integer


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (a Python int: no device read)."""

    def __init__(self, denoiser: Callable):
        self.denoiser = denoiser
        self.calls = 0
        self.supports_infinite_sigma = getattr(denoiser, "supports_infinite_sigma", True)

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.denoiser(x, sigma, **extra_args)

    def prepare_times(self, sigmas, batch, dtype, device) -> None:
        prepare_times(self.denoiser, sigmas, batch, dtype, device)

    def denoise_at(self, x, sigma: float, **extra_args):
        """The host-float call (see :func:`samplers.core.conversion.call_at`): counted, and the same path the
        wrapped denoiser takes in a run without the counter."""
        self.calls += 1
        return call_at(self.denoiser, x, sigma, **extra_args)


def _free_model(x, sigma, **extra_args):
    # The exact denoiser of N(0, I) data: a stand-in that costs nothing, to count a sampler's model calls.
    s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.where(torch.isinf(s), torch.zeros_like(x), x / (1 + s * s))


def count_nfe(sampler: str, sigmas, **options) -> int:
    """The model calls ``sampler`` (with ``options``) makes on the schedule ``sigmas``."""
    model = CountingDenoiser(_free_model)
    x = torch.zeros((1, 2), dtype=torch.float64)  # the free model's D is 0 here, at every σ (also σ = inf)
    if "seed" in info(sampler).options and isinstance(options.get("noise_sampler"), (str, type(None))):
        options = {**options, "seed": 0}
    sample(sampler, model, x, sigmas, disable=True, **options)
    return model.calls


def steps_for_nfe(sampler: str, budget: int, make_sigmas: Callable[[int], torch.Tensor],
                  **options) -> tuple[int, int] | None:
    """The most steps whose run of ``sampler`` on ``make_sigmas(steps)`` costs at most ``budget`` model calls:
    ``(steps, calls)``, or None when not even one step fits. Starts from the metadata's estimate and walks."""
    try:  # any integral type (a numpy integer too), never a bool or a float
        budget = integer("an NFE budget", budget, lo=1)
    except (InvalidInput, InvalidType):
        raise InvalidInput(f"an NFE budget must be an integer >= 1, got {budget!r}") from None
    spec = info(sampler)
    steps = max(1, int(budget // spec.nfe_per_step))
    best = None
    while steps >= 1:  # the count grows with the steps: walk down from the estimate ...
        calls = count_nfe(sampler, make_sigmas(steps), **options)
        if calls <= budget:
            best = (steps, calls)
            break
        steps -= 1
    if best is None:
        return None
    while True:  # ... then up while it still fits
        try:
            calls = count_nfe(sampler, make_sigmas(best[0] + 1), **options)
        except ValueError:  # the schedule cannot have that many steps
            break
        if calls > budget:
            break
        best = (best[0] + 1, calls)
    return best

"""Model calls counted, not estimated: how many a sampler spends on a schedule, and how many steps fit a budget.

A sampler's metadata (``nfe_per_step``) is the per-step part only; warm-ups (PNDM's pseudo Runge–Kutta steps,
PLMS's first step, restart's restart intervals), a final Euler step to σ = 0 and singlestep methods that skip a
stage there all move the real count. Everything that compares samplers at equal cost (the demo, the
benchmarks, schedule optimisation) counts here, by running the sampler once on a free stand-in model;
:func:`nfe_rule` counts a sampler's whole rule (``per·n + extra``), which docs/samplers.md shows.
"""
from __future__ import annotations

import dataclasses
import threading
import warnings
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
    return _count(sampler, sigmas, 0.0, options)


def _count(sampler: str, sigmas, start: float, options: dict) -> int:
    model = CountingDenoiser(_free_model)
    # start = 0: the free model's D is 0 here, at every σ (also σ = inf), and the state stays 0
    x = torch.full((1, 2), start, dtype=torch.float64)
    if "seed" in info(sampler).options and isinstance(options.get("noise_sampler"), (str, type(None))):
        options = {**options, "seed": 0}
    sample(sampler, model, x, sigmas, disable=True, **options)
    return model.calls


_FILTERS_LOCK = threading.Lock()
_NOT_CONVERGED = "Functional iteration did not converge"  # torchdiffeq's implicit Adams at its iteration limit


def _model_sets_count(sampler: str, ends_in_zero: bool, options: dict, counts: dict | None = None) -> bool:
    """Whether the model calls of ``sampler`` depend on the model (an implicit corrector iterated to a tolerance,
    adaptive step control): its counts on :func:`rule_sigmas` at 6 and 12 steps from the stand-in's state 0 and from
    state 1 differ. ``counts``: the state-0 counts at those steps where already made."""
    counts = counts or {}
    fixed = [counts[n] if n in counts else _count(sampler, rule_sigmas(n, ends_in_zero), 0.0, options) for n in (6, 12)]
    # an implicit corrector may say it stopped at its iteration limit: that one message is silenced. catch_warnings
    # saves and restores the process's filter list, so two threads inside at once restored each other's: one at a
    # time, or the "ignore" was left behind for every later warning of the process
    with _FILTERS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_CONVERGED)
        moved = [_count(sampler, rule_sigmas(n, ends_in_zero), 1.0, options) for n in (6, 12)]
    return moved != fixed


def steps_for_nfe(sampler: str, budget: int, make_sigmas: Callable[[int], torch.Tensor], *,
                  estimate_model_dependent: bool = False, **options) -> tuple[int, int] | None:
    """The most steps whose run of ``sampler`` on ``make_sigmas(steps)`` costs at most ``budget`` model calls:
    ``(steps, calls)``, or None when not even one step fits. Starts from the metadata's estimate and walks.

    Refused (InvalidInput): a sampler that chooses its own steps (``dpm_adaptive``, torchdiffeq's adaptive methods:
    no step count holds it to a budget), and one whose calls depend on the model (torchdiffeq's implicit Adams: the
    stand-in counted here converges its corrector at once, a real model iterates it, 49 calls become 109) unless
    ``estimate_model_dependent=True``, where the stand-in's count is returned as an estimate for the caller to
    recount on its own model. Where a step more adds no calls the walk stops there."""
    from ..interop.torchdiffeq_adapter import chooses_own_steps

    try:  # any integral type (a numpy integer too), never a bool or a float
        budget = integer("an NFE budget", budget, lo=1)
    except (InvalidInput, InvalidType):
        raise InvalidInput(f"an NFE budget must be an integer >= 1, got {budget!r}") from None
    spec = info(sampler)
    if chooses_own_steps(spec.name):
        raise InvalidInput(f"{sampler!r} chooses its own steps from the model's outputs, so no step count holds it to "
                           "an NFE budget (its calls do not follow a schedule's steps); give it rtol/atol instead, or "
                           "budget a fixed-step sampler (euler, heun, dpmpp_2m, ...)")
    if not estimate_model_dependent:
        ends_in_zero = float(make_sigmas(1)[-1]) == 0
        if _model_sets_count(spec.name, ends_in_zero, options):
            raise InvalidInput(f"the model calls of {sampler!r} depend on the model (its implicit corrector iterates "
                               "until it converges), so a count here, on a stand-in model, is no bound on a real run's; "
                               "budget a sampler with a fixed count (torchdiffeq.explicit_adams, dpmpp_2m, ...), or pass "
                               "estimate_model_dependent=True and recount the steps on your model")
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
        if calls == best[1]:  # a step more adds no calls: the count does not follow the steps, the walk would not end
            break
        best = (best[0] + 1, calls)
    return best


# The step counts nfe_rule counts at: the rule is fitted on the last two and must hold from at most 6 steps on
RULE_STEPS = (1, 2, 3, 4, 5, 6, 8, 12, 20)


@dataclasses.dataclass(frozen=True)
class NfeRule:
    """An n-step run makes ``per_step·n + extra`` model calls, for every n ≥ ``from_steps``."""

    per_step: int
    extra: int
    from_steps: int = 1

    def calls(self, steps: int) -> int:
        return self.per_step * steps + self.extra

    def __str__(self) -> str:
        text = "n" if self.per_step == 1 else f"{self.per_step}n"
        if self.extra:
            text += f" {'+' if self.extra > 0 else '−'} {abs(self.extra)}"
        return text + (f" (n ≥ {self.from_steps})" if self.from_steps > 1 else "")


def rule_sigmas(steps: int, ends_in_zero: bool) -> torch.Tensor:
    """The schedules :func:`nfe_rule` counts on: σ uniform in log from 10 to 0.1 in ``steps`` steps, or in
    ``steps − 1`` steps and then a last step to σ = 0."""
    if not ends_in_zero:
        return torch.logspace(1, -1, steps + 1, dtype=torch.float64)
    return torch.cat([torch.logspace(1, -1, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


def nfe_rule(sampler: str, ends_in_zero: bool = False, **options) -> NfeRule | None:
    """The model calls of an n-step run of ``sampler`` as ``per·n + extra``, counted (not declared): on
    :func:`rule_sigmas` at :data:`RULE_STEPS`. None where the count is no such rule: where it depends on the model
    (adaptive step control, an implicit corrector iterated to a tolerance; counted from two starting states)
    or holds only from more than 6 steps on."""
    counts = {n: _count(sampler, rule_sigmas(n, ends_in_zero), 0.0, options) for n in RULE_STEPS}
    if _model_sets_count(sampler, ends_in_zero, options, counts):
        return None  # another state, another count: the model sets it
    a, b = RULE_STEPS[-2:]
    per, rest = divmod(counts[b] - counts[a], b - a)
    if rest or per < 1:
        return None
    rule = NfeRule(per, counts[b] - per * b)
    holds = [n for n in RULE_STEPS if counts[n] != rule.calls(n)]
    from_steps = RULE_STEPS[RULE_STEPS.index(holds[-1]) + 1] if holds else 1
    return dataclasses.replace(rule, from_steps=from_steps) if from_steps <= 6 else None

"""steps_for_nfe refuses what it cannot count (nothing hangs, no meaningless answer): samplers that choose their own
steps (their calls do not grow with a schedule's steps), samplers whose calls depend on the model (counted on the free
stand-in, an implicit corrector converges at once); and a walk whose count stops growing ends."""
from __future__ import annotations

import warnings

import pytest

import samplers
from samplers.core import budget


def karras(n):
    return samplers.get_sigmas("karras", n, sigma_min=0.01, sigma_max=10.0)


@pytest.mark.parametrize("name, options", [("dpm_adaptive", {"through_schedule": False}),
                                           ("dpm_adaptive", {}), ("torchdiffeq.dopri5", {})])
def test_a_sampler_that_chooses_its_own_steps_is_refused(name, options):
    # dpm_adaptive without its schedule made 19 calls for every step count, so the walk up never ended; dopri5 at 40
    # returned (1, 1), the one-step schedule it never integrates
    with pytest.raises(samplers.InvalidInput, match=f"{name!r} chooses its own steps.*fixed-step sampler"):
        budget.steps_for_nfe(name, 100, karras, **options)


@pytest.mark.parametrize("name", ["torchdiffeq.implicit_adams", "torchdiffeq.fixed_adams"])
def test_a_sampler_whose_calls_depend_on_the_model_is_refused_unless_asked_for_an_estimate(name):
    # implicit Adams at 50 calls: 23 steps "49 calls" on the stand-in, 109 calls on a real model
    with pytest.raises(samplers.InvalidInput, match=f"{name!r}.*depend on the model.*estimate_model_dependent=True"):
        budget.steps_for_nfe(name, 50, karras)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrector may say it stopped at its iteration limit
        steps, calls = budget.steps_for_nfe(name, 50, karras, estimate_model_dependent=True)
    assert 1 <= steps and calls <= 50  # the stand-in's count: an estimate the caller recounts on its model


def test_an_estimate_is_asked_for_only_where_needed():
    # a fixed-step sampler's count is exact: the flag changes nothing
    assert budget.steps_for_nfe("heun", 10, karras, estimate_model_dependent=True) == (5, 9)
    assert budget.steps_for_nfe("torchdiffeq.rk4", 17, karras) == budget.steps_for_nfe("rk38", 17, karras)


def test_the_walk_up_stops_where_a_step_more_adds_no_calls(monkeypatch):
    counted = []

    def flat(sampler, sigmas, **options):  # a count that never grows: the walk up would never end
        counted.append(len(sigmas))
        if len(counted) > 50:
            raise AssertionError("the walk did not stop")
        return 3

    monkeypatch.setattr(budget, "count_nfe", flat)
    assert budget.steps_for_nfe("euler", 10, karras) == (10, 3)
    assert len(counted) == 2  # the estimate, then one step more that adds nothing


def test_the_deterministic_benchmark_still_recounts_implicit_adams_on_its_model():
    # benchmarks/deterministic asks for the stand-in's estimate and recounts on the real model until it fits
    from benchmarks import deterministic
    from benchmarks.deterministic.running import Run

    args = deterministic.running.resolve_args(deterministic.running.parser().parse_args(
        ["--problem", "gm-ve", "--samplers", "torchdiffeq.implicit_adams", "--schedules", "karras", "--nfe", "20",
         "--batch", "2", "--no-peers", "--no-learned", "--no-cache", "--no-progress"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = Run(args).ours("gm-ve", "torchdiffeq.implicit_adams", "karras", 20, 0)
    assert "skipped" not in cell, cell
    assert 1 <= cell["steps"] and cell["nfe_used"] <= 20


def test_the_stand_ins_count_of_implicit_adams_is_no_bound_on_a_real_model():
    """The figure guide.md gives: at 50 calls the stand-in's count buys 23 steps, which make 109 calls on a non-linear
    denoiser (Karras 80 -> 0.002): why steps_for_nfe refuses it without estimate_model_dependent=True."""
    import torch

    def grid(n):
        return samplers.get_sigmas("karras", n, sigma_min=0.002, sigma_max=80.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps, calls = budget.steps_for_nfe("torchdiffeq.implicit_adams", 50, grid, estimate_model_dependent=True)
        made = [0]

        def model(x, s):
            made[0] += 1
            s = s.view(-1, 1)
            return x / (1 + s * s) + 0.3 * torch.tanh(x) / (1 + s)

        x = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
        samplers.sample("torchdiffeq.implicit_adams", model, x, grid(steps), disable=True)
    assert (steps, calls) == (23, 49) and made[0] == 109


def test_budgets_counted_in_threads_leave_the_processs_warning_filters_as_they_were():
    # each count silenced the corrector's warning with catch_warnings, which saves and restores the process's whole
    # filter list: three threads inside at once restored each other's, and an "ignore" was left behind (4 runs in 5)
    import sys
    import threading

    before = list(warnings.filters)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda: [budget.steps_for_nfe("dpmpp_2m", 10, karras) for _ in range(4)])
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:  # and a count silences the corrector's message only
        warnings.simplefilter("always")
        budget._model_sets_count("euler", True, {})
        warnings.warn("another thread's warning")
    assert [str(w.message) for w in caught] == ["another thread's warning"]

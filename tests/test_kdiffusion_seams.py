"""The k-diffusion drop-in at its seams: what a callback's tensors are, refusals before any model call (empty DPM-Solver
ranges, option types, schedule inputs k-diffusion computes on), and the float32 gaps docs/kdiffusion.md reports.

``python -m tests.test_kdiffusion_seams`` prints the float32 measurements quoted in docs/kdiffusion.md.
"""
from __future__ import annotations

import math
import re
import types
import warnings
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.interop import kdiffusion as ours

try:
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
except ImportError:  # pragma: no cover
    kdiffusion_modules = None

    class KDiffusionUnavailable(Exception):
        pass


def _reference():
    try:
        return kdiffusion_modules()[0] if kdiffusion_modules else None
    except KDiffusionUnavailable:
        return None


kd = _reference()
needs_kd = pytest.mark.skipif(kd is None, reason="k-diffusion is not installed: pip install --no-deps "
                                                 "k-diffusion==0.1.1.post1 (make test does)")


def model(x, sigma, scale=1.0):
    """A smooth k-diffusion model wrapper: D(x, σ) = (x/(1 + σ²) + 0.1·sin x)·scale."""
    return (x / (1 + sigma**2).view(-1, *[1] * (x.ndim - 1)) + 0.1 * torch.sin(x)) * scale


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return model(x, sigma, **extra_args)


def start(dtype=torch.float32, sigma=14.6, batch=1):
    return (torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            * sigma).to(dtype)


def karras(n, dtype=torch.float32):
    return ours.get_sigmas_karras(n, 0.03, 14.6).to(dtype)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


# ----------------------------------------------------------------------------------------------------
# Callbacks: the result is never a tensor handed to a callback; the dict's tensors are read-only

SCHEDULE_SAMPLERS = ["sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral",
                     "sample_lms", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m",
                     "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"]


@pytest.mark.parametrize("fn", SCHEDULE_SAMPLERS)
def test_the_result_shares_no_storage_with_a_callback_tensor(fn):
    # A1111 keeps d["denoised"] as its last_latent: an in-place edit of the result must not change it (heun and
    # dpmpp_2m returned the last step's D itself, the tensor the last callback got)
    kept = []
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(ours, fn)(model, start(), karras(4), disable=True, callback=kept.append)
    shared = [(d["i"], key) for d in kept for key in ("x", "denoised") if _storage(d[key]) == _storage(out)]
    assert shared == []
    last = kept[-1]["denoised"].clone()
    out.mul_(2)
    assert torch.equal(kept[-1]["denoised"], last)


@pytest.mark.parametrize("fn", ["sample_heun", "sample_dpmpp_2m", "sample_dpmpp_2m_sde"])
def test_the_last_denoised_handed_over_is_a_copy_with_the_results_values(fn):
    kept = []
    torch.manual_seed(0)
    out = getattr(ours, fn)(model, start(), karras(4), disable=True, callback=kept.append)
    assert torch.equal(kept[-1]["denoised"], out)  # the same values (the step to σ = 0 returns D) ...
    assert _storage(kept[-1]["denoised"]) != _storage(out)  # ... in a tensor of its own


@pytest.mark.parametrize("fn", ["sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_dpmpp_2m_sde"])
def test_in_place_edits_of_the_callbacks_x_change_nothing(fn):
    # documented: the callback runs after the step; d["x"] is the state the step's model call saw, and editing it
    # in place does not steer the run (in k-diffusion, whose callback runs before the update, it does)
    def edit(d):
        d["x"].mul_(0.9)

    assert_callback_changes_nothing(fn, edit)


def assert_callback_changes_nothing(fn, callback):
    """The drop-in's ``fn`` gives the same result with ``callback`` (which edits what it is handed) as without."""
    torch.manual_seed(0)
    plain = getattr(ours, fn)(model, start(), karras(4), disable=True)
    torch.manual_seed(0)
    edited = getattr(ours, fn)(model, start(), karras(4), disable=True, callback=callback)
    assert torch.equal(plain, edited)


@pytest.mark.parametrize("fn", ["sample_heun", "sample_dpmpp_2m", "sample_euler"])
def test_an_in_place_edit_of_the_last_denoised_does_not_reach_the_result(fn):
    def edit_last(d):
        if d["i"] == 3:
            d["denoised"].mul_(0.5)

    assert_callback_changes_nothing(fn, edit_last)


@pytest.mark.parametrize("fn", ["sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2",
                                "sample_dpm_2_ancestral", "sample_lms", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde"])
def test_in_place_edits_of_denoised_change_nothing_where_d_is_no_history(fn):
    # documented: only the samplers keeping D as their history (dpmpp_2m, _2m_sde, _3m_sde) see such an edit
    def edit(d):
        d["denoised"].mul_(0.5)

    results = []
    for callback in (None, edit):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(getattr(ours, fn)(model, start(), karras(4), disable=True, callback=callback))
    assert torch.equal(*results)


# ----------------------------------------------------------------------------------------------------
# DPM-Solver ranges: an empty range is refused before the model runs; reverse (η = 0) runs as k-diffusion's


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_dpm_fast_refuses_an_empty_range_before_any_model_call(n):
    counting = Counting()
    with pytest.raises(InvalidInput, match=r"sigma_min and sigma_max must differ.*got both 1\.9.*sigma_min=sigmas\[-2\]"):
        ours.sample_dpm_fast(counting, start(sigma=1.9), 1.9, 1.9, n, disable=True)
    with pytest.raises(InvalidInput, match="must differ"):
        ours.sample_dpm_fast(counting, start(sigma=1.9), torch.tensor(1.9), torch.tensor(1.9), n, disable=True,
                             eta=0.5)
    assert counting.calls == 0


def test_dpm_adaptive_refuses_an_empty_range_before_any_model_call():
    counting = Counting()
    with pytest.raises(InvalidInput, match="sigma_min and sigma_max must differ"):
        ours.sample_dpm_adaptive(counting, start(sigma=1.9), 1.9, 1.9, disable=True)
    assert counting.calls == 0


def test_dpm_solver_fast_method_refuses_an_empty_time_range():
    counting = Counting()
    t = torch.tensor(1.0)
    with pytest.raises(InvalidInput, match="t_start and t_end must differ"):
        ours.DPMSolver(counting).dpm_solver_fast(start(sigma=1.0), t, t, 5)
    assert counting.calls == 0


@needs_kd
@pytest.mark.parametrize("fn, args", [("sample_dpm_fast", (0.5, 0.2, 5)), ("sample_dpm_adaptive", (0.5, 0.2))])
def test_reverse_dpm_solver_ranges_still_run_as_k_diffusions(fn, args):
    x = start(torch.float64, sigma=0.2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got, want = (getattr(m, fn)(model, x, *args, disable=True) for m in (ours, kd))
    finally:
        torch.set_default_dtype(default)
    assert float((got - want).abs().max()) < 1e-12


# ----------------------------------------------------------------------------------------------------
# Option types: 0-d real tensors are read once as numbers; bools and other tensors are refused with the fix

TENSOR_OPTIONS = [
    ("sample_euler", {"s_churn": 1.0, "s_tmin": 0.1, "s_tmax": 10.0, "s_noise": 0.9}),
    ("sample_heun", {"s_churn": 1.0}),
    ("sample_dpm_2", {"s_churn": 1.0}),
    ("sample_euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("sample_dpm_2_ancestral", {"eta": 0.5}),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.5}),
    ("sample_dpmpp_sde", {"eta": 0.5, "s_noise": 0.9, "r": 0.3}),
    ("sample_dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.9}),
    ("sample_dpmpp_3m_sde", {"eta": 0.5}),
]


@pytest.mark.parametrize("fn, options", TENSOR_OPTIONS)
def test_zero_dim_tensor_options_run_as_the_numbers_they_hold(fn, options):
    def once(opts):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(ours, fn)(model, start(), karras(3), disable=True, **opts)

    as_tensors = {k: torch.tensor(v) for k, v in options.items()}
    assert torch.equal(once(as_tensors), once({k: v.item() for k, v in as_tensors.items()}))


def test_range_sampler_tensor_options_run_as_the_numbers_they_hold():
    for fn, args, options in [
            ("sample_dpm_fast", (0.03, 14.6, 5), {"eta": 0.5, "s_noise": 0.9}),
            ("sample_dpm_adaptive", (0.03, 14.6), {"rtol": 0.05, "atol": 0.01, "h_init": 0.1, "pcoeff": 0.1,
                                                   "icoeff": 0.8, "dcoeff": 0.05, "accept_safety": 0.8, "eta": 0.5,
                                                   "s_noise": 0.9})]:
        results = []
        as_tensors = {k: torch.tensor(v) for k, v in options.items()}
        for opts in ({k: v.item() for k, v in as_tensors.items()}, as_tensors):
            torch.manual_seed(0)
            results.append(getattr(ours, fn)(model, start(), *args, disable=True, **opts))
        assert torch.equal(*results), fn


@pytest.mark.parametrize("fn, name, args", [
    ("sample_euler_ancestral", "eta", None), ("sample_euler", "s_churn", None), ("sample_dpmpp_sde", "r", None),
    ("sample_dpmpp_2m_sde", "s_noise", None), ("sample_dpm_fast", "eta", (0.03, 14.6, 4)),
    ("sample_dpm_adaptive", "rtol", (0.03, 14.6))])
def test_bool_options_are_refused_with_the_fix_before_any_model_call(fn, name, args):
    counting = Counting()
    args = (karras(3),) if args is None else args
    for value in (True, torch.tensor(True)):
        with pytest.raises(InvalidType, match=rf"{name} must be a real number, got .*bool.*pass the number, "
                                              rf"e\.g\. {name}=1\.0"):
            getattr(ours, fn)(counting, start(), *args, disable=True, **{name: value})
    with pytest.raises(InvalidType, match=rf"{name} must be one real number, got .* shape \(2,\).*float\({name}"):
        getattr(ours, fn)(counting, start(), *args, disable=True, **{name: torch.tensor([0.5, 0.5])})
    assert counting.calls == 0


# ----------------------------------------------------------------------------------------------------
# Schedules: inputs k-diffusion computes on, refused naming the rule, what k-diffusion returns and the fix


@pytest.mark.parametrize("call, pattern", [
    (lambda: ours.get_sigmas_karras(5, 0.0, 14.6),
     r"sigma_min must be > 0, got 0.*\[\.\.\., 0, 0\].*pass the model's smallest non-zero σ"),
    (lambda: ours.get_sigmas_exponential(5, 0.0, 14.6), r"sigma_min must be > 0.*pass the model's smallest"),
    (lambda: ours.get_sigmas_karras(0, 0.03, 14.6), r"n .* must be >= 1, got 0.*returns \[0\.\].*pass n >= 1"),
    (lambda: ours.get_sigmas_polyexponential(0, 0.03, 14.6), r"must be >= 1, got 0.*pass n >= 1"),
    (lambda: ours.get_sigmas_vp(0), r"get_sigmas_vp: n .* must be >= 1.*pass n >= 1"),
    (lambda: ours.get_sigmas_vp(5, eps_s=1), r"eps_s .* must be below 1, got 1.*constant schedule.*pass a small "
                                             r"eps_s, e\.g\. the default 1e-3"),
    (lambda: ours.get_sigmas_karras(5, 0.03, 0.03), r"need sigma_min < sigma_max.*equal.*pass a smaller sigma_min"),
    (lambda: ours.get_sigmas_exponential(5, 14.6, 0.03), r"need sigma_min < sigma_max.*swapped.*other way round"),
])
def test_schedule_inputs_k_diffusion_computes_on_are_refused_with_the_fix(call, pattern):
    with pytest.raises(InvalidInput, match=pattern):
        call()


# ----------------------------------------------------------------------------------------------------
# float32: the gaps docs/kdiffusion.md quotes, and which side is nearer the float64 run


def _fixed_noise(x):
    bank = torch.randn((40,) + tuple(x.shape), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    drawn = iter(bank)
    return lambda sigma, sigma_next: next(drawn).to(x.dtype)


def _rel(a, b, scale) -> float:
    return float((a.double() - b.double()).abs().max()) / max(1.0, scale)


def ancestral_float32_gaps() -> dict:
    """{(sampler, steps): (ours − k-diffusion's float32, ours − float64, k-diffusion's float32 − float64)}, relative
    to the scale, on Karras schedules from 14.6 to 0.03 with the same fixed noise on every side."""
    gaps = {}
    x64 = start(torch.float64, batch=2)
    default = torch.get_default_dtype()
    try:
        for fn in ("sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"):
            for n in (2, 3, 7):
                torch.set_default_dtype(torch.float64)
                truth = getattr(kd, fn)(model, x64, kd.get_sigmas_karras(n, 0.03, 14.6), disable=True,
                                        noise_sampler=_fixed_noise(x64))
                torch.set_default_dtype(torch.float32)
                x32, s32 = x64.float(), kd.get_sigmas_karras(n, 0.03, 14.6)
                mine, theirs = (getattr(m, fn)(model, x32, s32, disable=True, noise_sampler=_fixed_noise(x32))
                                for m in (ours, kd))
                scale = float(truth.abs().max())
                gaps[fn, n] = (_rel(mine, theirs, scale), _rel(mine, truth, scale), _rel(theirs, truth, scale))
    finally:
        torch.set_default_dtype(default)
    return gaps


def range_float32_gaps() -> dict:
    """The largest float32 differences from k-diffusion of ``sample_dpm_fast`` (η = 1, n = 1 to 12, its default
    global-generator noise) and ``sample_dpm_adaptive`` (η = 1 on a BrownianTreeNoiseSampler), relative to the
    scale."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    x = start(torch.float32, batch=2)
    gaps = {}
    try:
        worst = 0.0
        for n in range(1, 13):
            outs = []
            for m in (ours, kd):
                torch.manual_seed(5)
                outs.append(m.sample_dpm_fast(model, x, 0.0292, 14.6146, n, disable=True, eta=1.0,
                                              extra_args={"scale": 0.9}))
            worst = max(worst, _rel(*outs, float(outs[1].abs().max())))
        gaps["sample_dpm_fast", "eta=1"] = worst
        for options in ({}, {"order": 2}, {"rtol": 0.01, "atol": 0.001}):
            outs = []
            for m in (ours, kd):
                tree = m.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=[7, 8])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    outs.append(m.sample_dpm_adaptive(model, x, 0.03, 14.6, disable=True, eta=1.0,
                                                      noise_sampler=tree, **options))
            gaps["sample_dpm_adaptive", "eta=1, tree " + repr(options)] = _rel(*outs, float(outs[1].abs().max()))
    finally:
        torch.set_default_dtype(default)
    return gaps


@needs_kd
def test_k_diffusions_float32_ancestral_step_cancels():
    # σ_down = σ_next²/σ·… for 14.6 → 0.03 is a difference of nearly equal float32 squares in k-diffusion; the drop-in's
    # samplers split their steps in Python floats (the registry's steps.get_ancestral_step), its public
    # get_ancestral_step is k-diffusion's arithmetic
    from samplers.core import steps

    sigmas = kd.get_sigmas_karras(2, 0.03, 14.6)
    theirs = float(kd.get_ancestral_step(sigmas[0], sigmas[1])[0])
    exact = float(kd.get_ancestral_step(sigmas[0].double(), sigmas[1].double())[0])
    samplers_split = steps.get_ancestral_step(float(sigmas[0]), float(sigmas[1]))[0]
    assert abs(theirs - exact) / exact > 5e-3  # 6.1035e-5 against 6.1644e-5
    assert abs(samplers_split - exact) / exact < 1e-6
    assert float(ours.get_ancestral_step(sigmas[0], sigmas[1])[0]) == theirs


@needs_kd
def test_conftests_rounding_probe_is_k_diffusions_float32_sigma_down():
    """tests/conftest.py's OTHER_ROUNDING is False exactly where the CPU has no AMX and k-diffusion's own float32
    σ_down of this step is the 2⁻¹⁴ of the CPU that measured the figures. It was decided by numpy's float64 exp, and
    an AMD EPYC whose numpy exp is not the C library's, but which gives that σ_down and every figure, skipped them."""
    try:
        from conftest import OTHER_ROUNDING, _cpu_flags
    except ImportError:
        from tests.conftest import OTHER_ROUNDING, _cpu_flags
    sigmas = kd.get_sigmas_karras(2, 0.03, 14.6)
    reference = float(kd.get_ancestral_step(sigmas[0], sigmas[1])[0]) == 2.0 ** -14
    assert OTHER_ROUNDING == ("amx_tile" in _cpu_flags() or not reference)


@needs_kd
def test_float32_ancestral_gaps_are_k_diffusions_rounding():
    for (fn, n), (apart, mine, theirs) in ancestral_float32_gaps().items():
        assert mine < 5e-6, (fn, n)  # ours stays at float32 rounding of the float64 run
        assert apart <= theirs + mine  # the gap is k-diffusion's distance from the float64 run
        assert apart < (2e-3 if n == 2 else 1e-4 if n == 3 else 1e-5), (fn, n, apart)


@needs_kd
def test_float32_range_sampler_gaps_stay_within_the_documented_figures():
    gaps = range_float32_gaps()
    assert gaps["sample_dpm_fast", "eta=1"] < 3e-5
    assert max(v for k, v in gaps.items() if k[0] == "sample_dpm_adaptive") < 2e-2


@needs_kd
def test_the_float32_figures_in_the_docs_are_this_modules_output():
    """docs/kdiffusion.md's float32 figures of the ancestral steps and the range samplers are `python -m
    tests.test_kdiffusion_seams`'s output: to the digits shown where this CPU rounds as the one that measured them
    (tests/conftest.py's OTHER_ROUNDING False), each within 10× elsewhere (float32 rounding; another CPU printed 5.7e-4
    for 1.0e-3). The page said a CPU of OTHER_ROUNDING's kind printed other figures; one that prints these was one."""
    try:
        from conftest import OTHER_ROUNDING
    except ImportError:
        from tests.conftest import OTHER_ROUNDING
    from pathlib import Path

    page = " ".join((Path(__file__).resolve().parents[1] / "docs" / "kdiffusion.md").read_text().split())
    shown = {}
    for fn, n, *cells in re.findall(r"\| `(sample_\w+)` \| (\d) \| ([\d.e+-]+) \| ([\d.e+-]+) \| ([\d.e+-]+) \|", page):
        shown[fn, int(n)] = tuple(cells)
    fast = re.search(r"`sample_dpm_fast` with η = 1\*\*: up to ([\d.e-]+) of the scale over n = 1 to 12", page)
    tree = re.search(r"\(([\d.e-]+) with the defaults, ([\d.e-]+) with `order=2`, ([\d.e-]+) with "
                     r"`rtol=0.01, atol=0.001`;", page)
    assert fast and tree, "the page no longer states the range samplers' figures where this test reads them"
    shown["sample_dpm_fast", "eta=1"] = (fast.group(1),)
    for options, figure in zip(({}, {"order": 2}, {"rtol": 0.01, "atol": 0.001}), tree.groups()):
        shown["sample_dpm_adaptive", "eta=1, tree " + repr(options)] = (figure,)
    mine = {key: tuple(f"{g:.1e}" for g in gaps) for key, gaps in ancestral_float32_gaps().items()}
    mine.update({key: (f"{gap:.1e}",) for key, gap in range_float32_gaps().items()})
    assert shown.keys() == mine.keys(), "the rows changed: rerun python -m tests.test_kdiffusion_seams"
    for key in mine:
        for got, doc in zip(mine[key], shown[key]):
            x, y = float(got), float(doc)
            if OTHER_ROUNDING:
                assert min(x, y) > 0 and max(x, y) / min(x, y) <= 10, (key, got, doc)
            else:
                assert x == y, (key, got, doc)


if __name__ == "__main__":
    if kd is None:
        raise SystemExit("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1")
    print("| sampler | steps | ours − k-diffusion float32 | ours − float64 | k-diffusion float32 − float64 |")
    print("|---|---|---|---|---|")
    for (fn, n), gap in ancestral_float32_gaps().items():
        print(f"| `{fn}` | {n} | " + " | ".join(f"{g:.1e}" for g in gap) + " |")
    for (fn, what), gap in range_float32_gaps().items():
        print(f"{fn} ({what}): {gap:.1e}")


# ---- values k-diffusion takes as it hands them on: disable to tqdm, extra_args to **


class _Args(Mapping):
    """A caller's own read-only mapping of keyword arguments."""

    def __init__(self, **kw):
        self._kw = kw

    def __getitem__(self, key):
        return self._kw[key]

    def __iter__(self):
        return iter(self._kw)

    def __len__(self):
        return len(self._kw)


@needs_kd
@pytest.mark.parametrize("name", ["sample_euler", "sample_euler_ancestral", "sample_dpmpp_2m", "sample_ipndm"])
@pytest.mark.parametrize("disable", [0, 1, np.True_, np.False_])
def test_disable_is_read_as_tqdm_reads_it(name, disable):
    """k-diffusion hands disable to tqdm, so disable=1 (or 0, or a numpy bool) runs there; the drop-in refused it
    (InvalidType: True, False or None)."""
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 14.6
    torch.manual_seed(3)
    got = getattr(ours, name)(model, x, sigmas, disable=disable)
    torch.manual_seed(3)
    want = getattr(ours, name)(model, x, sigmas, disable=bool(disable))
    assert torch.equal(got, want)
    with pytest.raises(InvalidType, match="disable must be True, False or None"):
        getattr(ours, name)(model, x, sigmas, disable="yes")


@pytest.mark.parametrize("extra_args", [types.MappingProxyType({"scale": 2.0}), _Args(scale=2.0)])
def test_extra_args_may_be_any_mapping_of_keyword_arguments(extra_args):
    """k-diffusion calls model(x, σ, **extra_args): any mapping with string keys runs there (a MappingProxyType, a
    Mapping of the caller's) and was refused here."""
    import samplers

    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 14.6
    want = ours.sample_euler(model, x, sigmas, extra_args={"scale": 2.0}, disable=True)
    assert torch.equal(ours.sample_euler(model, x, sigmas, extra_args=extra_args, disable=True), want)
    assert torch.equal(samplers.sample("euler", model, x, sigmas, extra_args=extra_args, disable=True), want)
    with pytest.raises(InvalidType, match="extra_args must be a mapping"):
        samplers.sample("euler", model, x, sigmas, extra_args={1: 2.0}, disable=True)
    with pytest.raises(InvalidType, match="extra_args must be a mapping"):
        samplers.sample("euler", model, x, sigmas, extra_args=[("scale", 2.0)], disable=True)


@needs_kd
@pytest.mark.parametrize("shape", [(), (1,)])
def test_get_ancestral_step_keeps_its_inputs_shape(shape):
    """k-diffusion's arithmetic on shape-[1] σ tensors gives shape-[1] results; the drop-in gave 0-d ones."""
    a, b = torch.full(shape, 5.0), torch.full(shape, 2.0)
    for got, want in zip(ours.get_ancestral_step(a, b, 0.7), kd.get_ancestral_step(a, b, 0.7)):
        assert got.shape == want.shape and torch.allclose(got, want)


@needs_kd
def test_dpm_fast_on_float64_range_tensors_reports_and_asks_in_k_diffusions_grid_dtype():
    """k-diffusion builds DPM-Solver-fast's times with torch.linspace (torch's default dtype, float32, whatever the
    range's dtype): its callback's times and the σ it asks a noise sampler for are float32 (14.60000229); the drop-in
    took the range's float64 (14.60000236), which a Brownian tree resolves into other draws."""
    sigma_min, sigma_max = torch.tensor(0.03, dtype=torch.float64), torch.tensor(14.6, dtype=torch.float64)
    x = start(torch.float32, 14.6)
    runs = []
    for module in (ours, kd):
        asked, seen = [], []

        def noise(sigma, sigma_next, asked=asked):
            asked.append((sigma.dtype, float(sigma), float(sigma_next)))
            return torch.zeros_like(x)

        module.sample_dpm_fast(model, x, sigma_min, sigma_max, 6, eta=0.5, noise_sampler=noise,
                               callback=lambda d, seen=seen: seen.append((d["sigma"].dtype, float(d["sigma"]))),
                               disable=True)
        runs.append((asked, seen))
    (ours_asked, ours_seen), (kd_asked, kd_seen) = runs
    assert ours_seen == kd_seen
    # k-diffusion also asks at its last step, whose σ_up is 0 (the drop-in does not: docs/kdiffusion.md)
    assert ours_asked and ours_asked == kd_asked[:len(ours_asked)]


# ----------------------------------------------------------------------------------------------------
# Refused before any model call with the library's errors, as samplers.sample refuses them

ALL_SAMPLERS = SCHEDULE_SAMPLERS + ["sample_dpm_fast", "sample_dpm_adaptive"]
NOISE_SAMPLERS = ["sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde",
                  "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_dpm_fast", "sample_dpm_adaptive"]


def _call(fn, counting, x, **kwargs):
    """``fn`` on k-diffusion's call: a schedule, or for the DPM-Solver samplers its range (and n)."""
    if fn == "sample_dpm_fast":
        return ours.sample_dpm_fast(counting, x, 0.03, 14.6, 4, disable=True, **kwargs)
    if fn == "sample_dpm_adaptive":
        return ours.sample_dpm_adaptive(counting, x, 0.03, 14.6, disable=True, **kwargs)
    return getattr(ours, fn)(counting, x, karras(4), disable=True, **kwargs)


@pytest.mark.parametrize("fn", ["sample_dpm_fast", "sample_dpm_adaptive"])
@pytest.mark.parametrize("sigma_min", [0.0, torch.tensor(0.0), np.float32(0.0)])
def test_a_dpm_solver_range_ending_at_zero_is_the_librarys_error(fn, sigma_min):
    # k-diffusion callers pass sigmas[-1], the trailing 0; a plain ValueError before
    counting = Counting()
    args = (sigma_min, 14.6, 4) if fn == "sample_dpm_fast" else (sigma_min, 14.6)
    with pytest.raises(InvalidInput, match=r"must be > 0, got 0 and 14\.6 .*sigma_min=sigmas\[-2\]"):
        getattr(ours, fn)(counting, start(), *args, disable=True)
    assert counting.calls == 0


@pytest.mark.parametrize("fn", ["sample_dpm_fast", "sample_dpm_adaptive"])
@pytest.mark.parametrize("end", ["sigma_min", "sigma_max"])
@pytest.mark.parametrize("bad", ["0.1", None, [0.1], True])
def test_a_dpm_solver_range_end_that_is_not_a_number_is_refused_by_type(fn, end, bad):
    # "'<=' not supported between instances of 'str' and 'int'" before
    counting = Counting()
    ends = {"sigma_min": 0.03, "sigma_max": 14.6, end: bad}
    args = (ends["sigma_min"], ends["sigma_max"]) + ((4,) if fn == "sample_dpm_fast" else ())
    with pytest.raises(InvalidType, match=rf"{end} must be a number .*got {re.escape(repr(bad))} .*"
                                          r"sigma_min=sigmas\[-2\]"):
        getattr(ours, fn)(counting, start(), *args, disable=True)
    assert counting.calls == 0


def test_a_dpm_solver_range_of_0d_tensors_runs():
    sigmas = karras(4)
    out = ours.sample_dpm_fast(model, start(), sigmas[-2], sigmas[0], 4, disable=True)
    assert out.shape == start().shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("fn", NOISE_SAMPLERS)
@pytest.mark.parametrize("name", ["gaussian", "brownian"])
def test_a_noise_sampler_given_by_name_is_refused_before_any_model_call(fn, name):
    # "'str' object is not callable" after one model call before
    counting = Counting()
    with pytest.raises(InvalidType, match=rf"noise_sampler='{name}': k-diffusion's noise_sampler is a callable.*"
                                          r"samplers\.sample\(.*noise_sampler='brownian'\)"):
        _call(fn, counting, start(), noise_sampler=name)
    assert counting.calls == 0


@pytest.mark.parametrize("fn", NOISE_SAMPLERS)
def test_a_noise_sampler_that_is_not_callable_or_comes_with_a_seed_is_refused_before_any_model_call(fn):
    counting = Counting()
    # k-diffusion's kinds first: the registry's message listed its noise kinds' names ('seeded', 'brownian', ...),
    # which this module then refuses
    with pytest.raises(InvalidType, match=r"noise_sampler must be callable, got int 3: k-diffusion's noise_sampler is "
                                          r"a callable noise_sampler\(sigma, sigma_next\)") as refused:
        _call(fn, counting, start(), noise_sampler=3)
    assert "'seeded'" not in str(refused.value) and "'brownian'" not in str(refused.value)
    with pytest.raises(InvalidOption, match="either noise_sampler or seed, not both"):
        _call(fn, counting, start(), noise_sampler=ours.default_noise_sampler(start()), seed=1)
    assert counting.calls == 0


def test_dpm_solvers_methods_refuse_a_noise_sampler_that_is_not_callable_before_any_model_call():
    """(k-diffusion and the drop-in raised "'int' object is not callable" at the first draw, after model calls.)"""
    counting = Counting()
    solver = ours.DPMSolver(counting)
    t_start, t_end = torch.tensor(-math.log(14.6)), torch.tensor(-math.log(0.03))
    with pytest.raises(InvalidType, match="noise_sampler must be callable, got int 3"):
        solver.dpm_solver_fast(start(), t_start, t_end, 6, eta=1.0, noise_sampler=3)
    with pytest.raises(InvalidType, match="noise_sampler must be callable, got int 3"):
        solver.dpm_solver_adaptive(start(), t_start, t_end, eta=1.0, noise_sampler=3)
    assert counting.calls == 0


@pytest.mark.parametrize("fn", ALL_SAMPLERS)
def test_a_callback_that_is_not_callable_is_refused_before_any_model_call(fn):
    # "'int' object is not callable" after the first step before
    counting = Counting()
    with pytest.raises(InvalidType, match="callback must be callable .*got int"):
        _call(fn, counting, start(), callback=3)
    assert counting.calls == 0


@pytest.mark.parametrize("fn", ALL_SAMPLERS)
@pytest.mark.parametrize("latent", [lambda: start().numpy(), lambda: start().tolist(), lambda: start().long()],
                         ids=["numpy", "list", "int64"])
def test_a_latent_that_is_not_a_float_tensor_is_refused_before_any_model_call(fn, latent):
    # numpy: promote_types' TypeError (sample_euler), "'numpy.ndarray' object has no attribute 'new_full'"
    # (sample_dpm_fast) before
    counting = Counting()
    with pytest.raises(InvalidType, match="x must be a floating-point tensor"):
        _call(fn, counting, latent())
    assert counting.calls == 0


def test_the_step_helpers_refusals_are_the_librarys_errors():
    x = start()
    with pytest.raises(InvalidInput, match=r"sigma has 5 dims but x has 4: pass one sigma per batch item"):
        ours.to_d(x, torch.ones(1, 1, 1, 1, 1), x)
    with pytest.raises(InvalidInput, match=r"order 4 is too high for step 0"):
        ours.linear_multistep_coeff(4, karras(4), 0, 0)


# ---- an audit of 2026-12-06: the DPM-Solver entry points and log_likelihood call their solvers directly; the
# registry's rules for their options, and a finite start, come first


class _Calls:
    def __init__(self):
        self.n = 0

    def __call__(self, x, s, **k):
        self.n += 1
        return x * 0.5 / (1 + s.view(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("call, match", [
    (lambda m, x: ours.sample_dpm_adaptive(m, x, 0.0292, 14.6, accept_safety=1.5), "accept_safety"),  # never accepts
    (lambda m, x: ours.sample_dpm_adaptive(m, x, 0.0292, 14.6, rtol=0.0, atol=0.0), "rtol and atol are both 0"),
    (lambda m, x: ours.sample_dpm_adaptive(m, x, 0.0292, 14.6, rtol=-0.1), "rtol"),
    (lambda m, x: ours.sample_dpm_fast(m, x, 0.0292, 14.6, 6, eta=1.0, s_noise=-1.0), "s_noise"),
    (lambda m, x: ours.sample_dpm_fast(m, x, 0.0292, 14.6, 6, eta=float("nan")), "eta"),
    (lambda m, x: ours.sample_dpm_fast(m, x * float("nan"), 0.0292, 14.6, 6), "NaN"),
    (lambda m, x: ours.log_likelihood(m, x, 0.03, float("inf")), "must be finite"),
    (lambda m, x: ours.log_likelihood(m, x, 0.03, 14.6, atol=0.0), "atol"),
])
def test_the_dpm_solver_entry_points_and_log_likelihood_refuse_before_any_model_call(call, match):
    model = _Calls()
    from samplers.core.errors import NonFiniteError

    with pytest.raises((InvalidInput, InvalidOption, InvalidType, NonFiniteError), match=match):
        call(model, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14.6)
    assert model.n == 0


def test_diffusers_classes_no_registry_sampler_runs_by_name_are_refused():
    import samplers

    for name, match in (("SASolverScheduler", "its default τ"),):
        with pytest.raises(samplers.Unavailable, match=match):
            samplers.info(name)
    assert samplers.info("LCMScheduler").name == "lcm"


def test_the_dpm_solver_entry_points_run_without_building_a_graph():
    """As k-diffusion's are (@torch.no_grad()): a model with trainable weights gives a result that needs no grad."""
    weight = torch.nn.Parameter(torch.tensor(0.5))

    def model(x, s, **k):
        return x * weight / (1 + s.view(-1, 1, 1, 1) ** 2)

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14.6
    assert not ours.sample_dpm_fast(model, x, 0.0292, 14.6, 4).requires_grad
    assert not ours.sample_dpm_adaptive(model, x, 0.0292, 14.6).requires_grad


def test_dpm_fast_and_adaptive_refuse_a_range_off_the_models_timestep_table_before_any_call():
    # these two call their solver directly (not through the registry's run): the same rule as samplers.sample's
    import samplers
    from samplers.core.native import VPDiscrete
    from samplers.interop import kdiffusion as K

    native = VPDiscrete.from_betas()
    inner, calls = samplers.problems.GaussianMixture.default(shape=(4,), components=3, seed=0).as_model("eps", native), []

    def unet(x, t, **kw):
        calls.append(float(t.flatten()[0]))
        return inner(x, t, **kw)

    D = samplers.to_denoiser(unet, "eps", native)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    for run in (lambda: K.sample_dpm_fast(D, x * 80, 0.002, 80.0, 4, disable=True),
                lambda: K.sample_dpm_adaptive(D, x * 80, 0.002, 80.0, disable=True)):
        with pytest.raises(samplers.InvalidInput, match="80 lies outside this model's timestep table"):
            run()
    assert calls == []
    assert torch.isfinite(K.sample_dpm_fast(D, x * native.sigma_max, native.sigma_min, native.sigma_max, 4,
                                            disable=True)).all() and len(calls) == 4


# ----------------------------------------------------------------------------------------------------
# DPM-Solver-fast: a NaN / Inf result raises as the registry's runs do; an infinite range end is refused by name


def _nan_below_one(x, sigma, **extra_args):
    """A model that returns NaN below σ = 1 (as an fp16 overflow does at some σ), the smooth stand-in above."""
    sigma = sigma.view(-1, *[1] * (x.ndim - 1))
    return torch.where(sigma < 1, x * float("nan"), model(x, sigma.flatten()))


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_dpm_fast_raises_on_a_nan_result_as_the_other_samplers_do(eta):
    # it returned a tensor of NaN after its 6 model calls, where sample_euler / _dpmpp_2m / _dpm_adaptive and the
    # registry's dpm_fast raise NonFiniteError
    from samplers.core.errors import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"DPM-Solver-fast produced NaN/Inf"):
        ours.sample_dpm_fast(_nan_below_one, start(), 0.03, 14.6, 6, eta=eta, disable=True)
    solver = ours.DPMSolver(_nan_below_one)
    with pytest.raises(NonFiniteError, match=r"DPM-Solver-fast produced NaN/Inf"):
        solver.dpm_solver_fast(start(), solver.t(torch.tensor(14.6)), solver.t(torch.tensor(0.03)), 6)
    with pytest.raises(NonFiniteError):
        ours.sample_dpm_adaptive(_nan_below_one, start(), 0.03, 14.6, disable=True)


@pytest.mark.parametrize("fn", ["sample_dpm_fast", "sample_dpm_adaptive"])
@pytest.mark.parametrize("ends", [(0.03, float("inf")), (0.03, torch.tensor(float("inf"))), (float("inf"), 14.6),
                                  (0.03, -float("inf"))], ids=["max=inf", "max=inf-tensor", "min=inf", "max=-inf"])
def test_an_infinite_dpm_solver_range_end_is_refused_by_name_before_any_model_call(fn, ends):
    # sample_dpm_fast called the model at σ = nan (its t grid was linspace(-inf, ...)) and returned NaN;
    # sample_dpm_adaptive raised a StepLimitError about its step size
    counting = Counting()
    name = "sigma_min" if ends[0] != 0.03 else "sigma_max"
    args = ends + ((4,) if fn == "sample_dpm_fast" else ())
    with pytest.raises(InvalidInput, match=rf"{name} must be finite, got -?inf.*sigma_max=sigmas\[0\]"):
        getattr(ours, fn)(counting, start(), *args, disable=True)
    assert counting.calls == 0


@pytest.mark.parametrize("method", ["dpm_solver_fast", "dpm_solver_adaptive"])
def test_dpm_solver_methods_refuse_an_infinite_time_before_any_model_call(method):
    counting = Counting()
    solver = ours.DPMSolver(counting)
    t_start, t_end = solver.t(torch.tensor(float("inf"))), solver.t(torch.tensor(0.03))
    args = (6,) if method == "dpm_solver_fast" else ()
    with pytest.raises(InvalidInput, match=r"t_start must be finite, got -inf"):
        getattr(solver, method)(start(), t_start, t_end, *args)
    assert counting.calls == 0


def test_a_sampler_k_diffusion_lacks_is_not_an_attribute_for_hasattr():
    # A1111 probes k_diffusion.sampling with hasattr: the module __getattr__ raised Unavailable (a RuntimeError) for a
    # refused ComfyUI name, which hasattr and getattr(..., default) do not catch
    from samplers.core.errors import Unavailable

    assert not hasattr(ours, "sample_euler_cfg_pp")
    assert getattr(ours, "sample_euler_cfg_pp", None) is None
    with pytest.raises(AttributeError, match="euler_cfg_pp.*not available") as caught:
        ours.sample_euler_cfg_pp  # noqa: B018
    assert isinstance(caught.value, Unavailable)  # the library's error still, for callers that catch it


@pytest.mark.parametrize("args, pattern", [
    ((2, [5., 3., 2., 1., 0.], 3, 2), r"j = 2 .*0 <= j < order = 2"),
    ((2, [5., 3., 2., 1., 0.], 3, -1), r"j = -1 .*0 <= j < order = 2"),
    ((0, [5., 3., 2., 1., 0.], 3, 0), r"order must be an integer >= 1, got 0"),
    ((2, [5., 3., 2., 1., 0.], 4, 0), r"i = 4 .*0 <= i < len\(t\) - 1 = 4"),
    ((1, [5., 3., 2., 1., 0.], -1, 0), r"i = -1 .*0 <= i < len\(t\) - 1 = 4"),
])
def test_linear_multistep_coeff_refuses_indices_outside_the_method_by_name(args, pattern):
    # a bare IndexError before (k-diffusion integrates a polynomial that is no Lagrange weight for j >= order, and the
    # step length t[i+1] - t[i] for order 0)
    with pytest.raises(InvalidInput, match=pattern):
        ours.linear_multistep_coeff(*args)

"""The callback seam where a run's reports reach another tool's (found by an audit of the callback seam).

- ``dpm_adaptive`` with ``through_schedule=False`` counts its attempts itself (k-diffusion's ``info['steps'] - 1``),
  not by its progress bar, which a disabled bar never advances (every callback got i = 0 with ``disable=True``);
- the ComfyUI adapter on a flow model hands the per-attempt state of that run at the σ it reports (it scaled it as
  the state after schedule step i: 3.8 times too large early in the run);
- the ComfyUI adapter refuses a callback that is not callable before any model call (it wrapped it first, and the
  run failed after one model call with a bare TypeError);
- ``dpm_fast`` under the tools' labels (``comfyui:dpm_fast``, A1111's ``DPM fast``: ``final_denoise=False``) calls
  back once per DPM-Solver step, as k-diffusion's ``sample_dpm_fast``, which those tools call (it reported once per
  model call: 6 callbacks where ComfyUI and A1111 show 3); the registry's ``dpm_fast`` keeps its per-call report.
"""
from __future__ import annotations

import math
import pathlib

import pytest
import torch

import samplers
from samplers.core.errors import InvalidType
from samplers.core.native import RectifiedFlow
from samplers.interop import comfyui
from samplers.interop import kdiffusion as kd_dropin
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
FLOW_X0 = GM.as_model("x0", RectifiedFlow(multiplier=1.0))  # x0 from (x_t, t): a ComfyUI flow model
SIGMAS = samplers.get_sigmas("karras", 6, sigma_min=0.03, sigma_max=14.6)


def start(batch=1):
    return GM.noise(batch, seed=1).double() * 14.6


def installed_kdiffusion():
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
    try:
        return kdiffusion_modules()[0]
    except KDiffusionUnavailable:
        pytest.skip("k-diffusion is not installed")


# ----------------------------------------------------------------------------------------------------
# dpm_adaptive's attempt count


@pytest.mark.parametrize("name, options", [("dpm_adaptive", {"through_schedule": False}),
                                           ("DPM adaptive", {"seed": 4}), ("comfyui:dpm_adaptive", {})])
def test_dpm_adaptive_counts_its_attempts_whether_or_not_the_bar_is_shown(name, options):
    """i = 0, 1, 2, ... over the attempts with the progress bar off too (the pipeline's progress=False, the
    drop-in's get_sampler): every callback got i = 0 there, the bar's counter, which a disabled bar never moves."""
    seen = {}
    for disable in (True, False):
        info, got = {}, []
        samplers.sample(name, GM.denoiser, start(), SIGMAS, callback=got.append, disable=disable, info=info,
                        **options)
        attempts = info["n_accept"] + info["n_reject"]
        assert attempts > 3
        final = 1 if samplers.info("dpm_adaptive").options["final_denoise"] and name == "dpm_adaptive" else 0
        assert [d["i"] for d in got] == list(range(attempts + final))  # a final denoise reports after the attempts
        seen[disable] = [(d["i"], d["sigma"]) for d in got]
    assert seen[True] == seen[False]


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # k-diffusion's torch.tensor(sigma)
def test_comfyui_dpm_adaptive_reports_k_diffusions_i_with_the_bar_off():
    """ComfyUI's dpm_adaptive is k-diffusion's sample_dpm_adaptive, whose callback's i is info['steps'] - 1 (the
    installed k-diffusion, in float32 as ComfyUI runs it, bar off): the same i and σ at every attempt."""
    kd = installed_kdiffusion()
    x, sigmas = start().float(), SIGMAS.float()
    theirs, ours = [], []
    kd.sample_dpm_adaptive(lambda v, s: GM.denoiser(v.double(), s.double()).float(), x.clone(), sigmas[-2], sigmas[0],
                           callback=theirs.append, disable=True)
    comfyui.ksampler_function("comfyui:dpm_adaptive", coordinates="ve")(
        lambda v, s, **kw: GM.denoiser(v.double(), s.double()).float(), x.clone(), sigmas, extra_args={"seed": 1},
        callback=ours.append, disable=True)
    assert [d["i"] for d in ours] == [d["i"] for d in theirs] == list(range(len(theirs)))
    for a, b in zip(ours, theirs):  # (k-diffusion's float32 times: docs/kdiffusion.md, up to 5.3e-5 apart)
        assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-3)


# ----------------------------------------------------------------------------------------------------
# the ComfyUI adapter on a flow model: the per-attempt state at the σ it reports


@pytest.mark.parametrize("t0, steps", [(0.95, 6), (1.0, 6), (0.95, 80)])
def test_comfyui_flow_adaptive_per_attempt_state_is_at_the_t_it_reports(t0, steps):
    """Each attempt's state sits at the σ its report names: x_t = x / (1 + σ) = x·(1 − t), the same run's state in
    the sampler's coordinates taken to ComfyUI's. It was scaled by 1 − t_{i+1}, as if i were a schedule step (i is
    an attempt): 3.8 times too large at the first attempts. The final denoise's report is the result (on a schedule
    of more steps than attempts too); from t = 1 the exact first step's report is its state at t_1."""
    t = torch.cat([torch.linspace(t0, 0.05, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    x_t = GM.noise(1, seed=2).double() * t0
    got, ve = [], []
    out = comfyui.ksampler_function("dpm_adaptive", coordinates="flow", through_schedule=False)(
        lambda v, s, **kw: FLOW_X0(v, s), x_t, t, extra_args={"seed": 1}, callback=got.append, disable=True)
    # the same run in the sampler's own coordinates σ = t/(1 − t), x = x_t/(1 − t) (what the adapter runs inside)
    sigmas_ve = torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))
    x_ve = x_t if t0 >= 1 else x_t / (1 - t0)
    samplers.sample("dpm_adaptive", samplers.to_denoiser(FLOW_X0, "x0", RectifiedFlow(multiplier=1.0)), x_ve,
                    sigmas_ve, through_schedule=False, callback=ve.append, disable=True)
    assert len(got) == len(ve) > 4
    attempts = ve[1:-1] if t0 >= 1 else ve[:-1]
    for g, v in zip(got[len(ve) - 1 - len(attempts):-1], attempts):
        assert float(g["sigma"]) == pytest.approx(v["sigma"] / (1 + v["sigma"]), rel=1e-12)
        torch.testing.assert_close(g["x"], v["x"] / (1 + v["sigma"]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[-1]["x"], out, rtol=0, atol=0)
    if t0 >= 1:
        torch.testing.assert_close(got[0]["x"], ve[0]["x"] * (1 - float(t[1])), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# the ComfyUI adapter's callback check


@pytest.mark.parametrize("coordinates, name", [("ve", "euler"), ("ve", "comfyui:dpmpp_2m"), ("ve", "dpm_fast"),
                                               ("flow", "euler"), ("flow", "comfyui:dpmpp_2m"),
                                               ("flow", "dpmpp_2m"), ("flow", "dpm_adaptive")])
@pytest.mark.parametrize("callback", ["print", 42])
def test_comfyui_adapter_refuses_a_callback_that_is_not_callable_before_any_model_call(coordinates, name, callback):
    """The adapter wraps the callback for ComfyUI's report, and a wrapper is callable: the registry's check passed it
    and the run failed after its first model call with a bare TypeError ('str' object is not callable)."""
    calls = []

    def model(x, sigma, **extra_args):
        calls.append(sigma)
        return (FLOW_X0 if coordinates == "flow" else GM.denoiser)(x, sigma)

    if coordinates == "flow":
        sigmas, x = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64), GM.noise(1, seed=1).double()
    else:
        sigmas, x = SIGMAS, start()
    fn = comfyui.ksampler_function(name, coordinates=coordinates)
    with pytest.raises(InvalidType, match="callback must be callable"):
        fn(model, x, sigmas, extra_args={"seed": 1}, callback=callback, disable=True)
    assert calls == []


def test_run_on_flow_model_refuses_a_callback_that_is_not_callable_before_any_model_call():
    calls = []

    def denoiser(x, sigma):
        calls.append(sigma)
        return GM.denoiser(x, sigma)

    with pytest.raises(InvalidType, match="callback must be callable"):
        comfyui.run_on_flow_model("comfyui:dpmpp_2m", denoiser, GM.noise(1, seed=1).double(),
                                  [math.inf, 3.0, 1.0, 0.3, 0.0], callback="print", disable=True)
    assert calls == []


# ----------------------------------------------------------------------------------------------------
# dpm_fast under the tools' labels: k-diffusion's per-step report


def dropin_dpm_fast_reports(x, sigmas):
    """The k-diffusion drop-in's sample_dpm_fast on the tools' range (sigma_min = sigmas[-2]): k-diffusion's report,
    as tests/test_kdiffusion_parity.py holds it."""
    seen = []
    kd_dropin.sample_dpm_fast(GM.denoiser, x.clone(), sigmas[-2], sigmas[0], len(sigmas) - 1, callback=seen.append,
                              disable=True)
    return seen


@pytest.mark.parametrize("run", ["comfyui", "a1111", "registry"])
def test_dpm_fast_under_the_tools_labels_reports_once_per_dpm_solver_step(run):
    """comfyui:dpm_fast (through the adapter), A1111's DPM fast and dpm_fast with final_denoise=False (what both
    run) call back as k-diffusion's sample_dpm_fast does: 3 times on a 6-step schedule, i the DPM-Solver step, x
    the state it starts from, denoised its first call's. They reported once per model call (6 times: ComfyUI's
    step counter stalled at 3/6 where ours reached 6/6)."""
    x, got = start(), []
    if run == "comfyui":
        comfyui.ksampler_function("comfyui:dpm_fast", coordinates="ve")(
            lambda v, s, **kw: GM.denoiser(v, s), x.clone(), SIGMAS, extra_args={"seed": 1}, callback=got.append,
            disable=True)
    elif run == "a1111":
        samplers.sample("DPM fast", GM.denoiser, x.clone(), SIGMAS, eta=0.0, callback=got.append, disable=True)
    else:
        samplers.sample("dpm_fast", GM.denoiser, x.clone(), SIGMAS, final_denoise=False, callback=got.append,
                        disable=True)
    want = dropin_dpm_fast_reports(x, SIGMAS)
    assert len(want) == len(samplers.ode.singlestep.fast_orders(len(SIGMAS) - 1)) == 3
    assert [d["i"] for d in got] == [d["i"] for d in want] == [0, 1, 2]
    for a, b in zip(got, want):  # (the drop-in's λ grid is k-diffusion's, in torch's default float32)
        assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-6)
        torch.testing.assert_close(a["x"], b["x"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a["denoised"], b["denoised"], rtol=1e-5, atol=1e-5)
    assert got[0]["x"] is not x  # the caller's start is handed as a copy, as before


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # k-diffusion's torch.tensor(sigma)
def test_comfyui_dpm_fast_reports_the_installed_k_diffusions_steps():
    """ComfyUI's KSAMPLER runs sample_dpm_fast(model, noise, sigmas[-2], sigmas[0], len(sigmas) - 1): the installed
    k-diffusion's callbacks (float32, as ComfyUI runs it), i and σ, are the adapter's."""
    kd = installed_kdiffusion()
    x, sigmas = start().float(), SIGMAS.float()
    theirs, ours = [], []
    kd.sample_dpm_fast(lambda v, s: GM.denoiser(v.double(), s.double()).float(), x.clone(), sigmas[-2], sigmas[0],
                       len(sigmas) - 1, callback=theirs.append, disable=True)
    comfyui.ksampler_function("comfyui:dpm_fast", coordinates="ve")(
        lambda v, s, **kw: GM.denoiser(v.double(), s.double()).float(), x.clone(), sigmas, extra_args={"seed": 1},
        callback=ours.append, disable=True)
    assert [d["i"] for d in ours] == [d["i"] for d in theirs] == [0, 1, 2]
    for a, b in zip(ours, theirs):
        assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-5)
        torch.testing.assert_close(a["denoised"], b["denoised"], rtol=1e-5, atol=1e-5)


def test_the_registrys_dpm_fast_keeps_its_per_call_report():
    """The registry's own dpm_fast (final_denoise=True) calls back once per model call, one per schedule step, as
    docs/samplers.md says."""
    got = []
    samplers.sample("dpm_fast", GM.denoiser, start(), SIGMAS, callback=got.append, disable=True)
    assert [d["i"] for d in got] == list(range(len(SIGMAS) - 1))


# ----------------------------------------------------------------------------------------------------
# the drop-in, interrupted by its callback (documented: docs/kdiffusion.md)


class Stop(Exception):
    pass


def interrupted(module, fn, at=2, **options):
    """Run ``module.fn`` on a 7-step Karras schedule from manual_seed(0), a callback raising at step ``at``: (model
    calls, the generator's next draw)."""
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return GM.denoiser(x.double(), sigma.double()).float()

    def stop(d):
        if d["i"] == at:
            raise Stop

    sigmas = samplers.get_sigmas("karras", 7, sigma_min=0.03, sigma_max=14.6).float()
    torch.manual_seed(0)
    with pytest.raises(Stop):
        getattr(module, fn)(model, start().float(), sigmas, callback=stop, disable=True, **options)
    return len(calls), float(torch.randn(1))


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")
def test_the_drop_in_interrupted_by_its_callback_is_as_docs_kdiffusion_md_says():
    """A callback that raises (A1111's Interrupt, ComfyUI's) stops the drop-in after the step, k-diffusion in it: one
    model call more on the samplers of two calls a step; the global generator one draw further on the ancestral
    samplers and behind k-diffusion where it draws to discard (churn off). docs/kdiffusion.md says so."""
    kd = installed_kdiffusion()
    two_calls = {"sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                 "sample_dpmpp_sde"}
    ancestral = {"sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"}
    churn = {"sample_euler", "sample_heun", "sample_dpm_2"}
    for fn in sorted(two_calls | ancestral | churn | {"sample_lms", "sample_dpmpp_2m", "sample_dpmpp_2m_sde"}):
        (ours, our_draw), (theirs, their_draw) = interrupted(kd_dropin, fn), interrupted(kd, fn)
        assert ours == theirs + (fn in two_calls), fn
        assert (our_draw == their_draw) == (fn not in ancestral | churn), fn
        if fn in churn:  # with churn on, the draws are used, and made where k-diffusion makes them
            assert interrupted(kd_dropin, fn, s_churn=1.0)[1] == interrupted(kd, fn, s_churn=1.0)[1], fn
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "kdiffusion.md").read_text()
    assert "a completed run leaves the global generator where k-diffusion leaves it" in text
    assert "A callback that raises to stop the run" in text

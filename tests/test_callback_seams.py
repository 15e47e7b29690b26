"""The callback seam where a run's reports reach another tool's (found by an audit of the callback seam).

- ``dpm_adaptive`` with ``through_schedule=False`` counts its attempts itself (k-diffusion's ``info['steps'] - 1``),
  not by its progress bar, which a disabled bar never advances (every callback got i = 0 with ``disable=True``);
"""
from __future__ import annotations


import pytest

import samplers
from samplers.core.native import RectifiedFlow
from samplers.interop import comfyui
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

"""ComfyUI names on the pipeline's flow model run ComfyUI's own flow-model rules, as the ComfyUI adapter runs them
on a ComfyUI flow model (SD3, Flux): k-diffusion's plain rule on the raw (x_t, σ = t), half-log-SNR samplers after
ComfyUI's first-σ offset, euler_ancestral's RF rule — not the registry's rule in σ = t/(1 − t), which the pipeline
ran under those names (an audit of 2026-12-07: comfyui:dpmpp_2m 1.87 apart in pixels in [-1, 1])."""
from __future__ import annotations

import math

import pytest
import torch

from models.pipeline import Pipeline
from samplers.core import labels
from samplers.core.seeds import seeded_randn
from samplers.interop import comfyui

PROMPT = "a large red circle at the top left"
STEPS, SEED, CFG = 6, 5, 4.0


@pytest.fixture(scope="module")
def flow():
    return Pipeline.load(model="flow")


class _Sampling:  # ComfyUI's ModelSamplingDiscreteFlow at shift 1 (the shipped flow model's): a CONST
    noise_scale = 1.0

    def percent_to_sigma(self, percent):
        return 1.0 - percent


class CONST(_Sampling):
    pass


class ComfyFlowModel:
    """ComfyUI's model_k on a CONST model, written here from ComfyUI's conventions (not the library's FlowModel):
    x0 from (x_t, t), one t per item."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.inner_model = self
        self.model_patcher = self

    def get_model_object(self, name):
        assert name == "model_sampling"
        return CONST()

    def __call__(self, x_t, t, seed=None, **extra_args):  # ComfyUI's model_k takes the seed; the model does not
        t = float(t.flatten()[0])
        sigma = math.inf if t >= 1 else t / (1 - t)
        return self.denoiser(x_t if t >= 1 else x_t / (1 - t), torch.full((x_t.shape[0],), sigma), **extra_args)


def comfy_latents(pipe, name, sigmas, x_t, seed, **options):
    """The adapter's run of ``name`` on ComfyUI's flow model of the pipeline's denoiser (ComfyUI's SIGMAS: t)."""
    t = torch.where(torch.isinf(sigmas), torch.ones_like(sigmas), sigmas / (1 + sigmas))
    fn = comfyui.ksampler_function(name, **options)
    with torch.no_grad():
        return fn(ComfyFlowModel(pipe.denoiser(PROMPT, CFG)), x_t, t, extra_args={"seed": seed}, disable=True)


@pytest.mark.parametrize("name", ["comfyui:dpmpp_2m", "comfyui:heun", "comfyui:euler_ancestral",
                                  "comfyui:dpmpp_2m_sde", "comfyui:euler", "ipndm_v",
                                  # its rule writes over the final 0: the latent came back float64 and the VAE
                                  # refused it after every model call
                                  "comfyui:uni_pc", "comfyui:uni_pc_bh2"])
def test_txt2img_runs_comfyuis_own_flow_rule(flow, name):
    sigmas = flow.sigmas(None, STEPS)  # the flow model's own schedule, from σ = inf (t = 1)
    if name.removeprefix("comfyui:") in labels.COMFYUI_DISCARD_PENULTIMATE:  # KSampler's: steps + 1, less the last σ
        sigmas = torch.cat([flow.sigmas(None, STEPS + 1)[:-2], sigmas[-1:]])
    ours = flow.txt2img(PROMPT, sampler=name, steps=STEPS, cfg=CFG, seed=SEED, progress=False, output="tensor")
    noise = seeded_randn((1, 4, 8, 8), [SEED])
    theirs = comfy_latents(flow, name, sigmas, noise, SEED)  # float64 SIGMAS: a rule writing over the final 0
    theirs = flow.decode(theirs.to(noise.dtype), "tensor")    # promotes, as ComfyUI's own would on them
    assert float((ours - theirs).abs().max()) < 1e-4


def test_the_registry_name_keeps_the_registry_rule_and_differs_there(flow):
    # the test above would pass if both ran the same rule: the two rules give other images at 6 steps
    comfy = flow.txt2img(PROMPT, sampler="comfyui:dpmpp_2m", steps=STEPS, cfg=CFG, seed=SEED, progress=False,
                         output="tensor")
    registry = flow.txt2img(PROMPT, sampler="dpmpp_2m", steps=STEPS, cfg=CFG, seed=SEED, progress=False,
                            output="tensor")
    assert float((comfy - registry).abs().max()) > 0.1


def test_img2img_and_inpaint_start_from_comfyuis_noised_latent(flow):
    image = flow.txt2img("a small blue ring", steps=4, seed=1, progress=False, output="tensor")
    ours = flow.img2img(image, PROMPT, strength=0.5, sampler="comfyui:dpmpp_2m", steps=8, cfg=CFG, seed=SEED,
                        progress=False, output="tensor")
    sigmas = flow.sigmas(None, 8)[4:]  # round(0.5 · 8) = 4 steps, the schedule's last four
    t0 = float(sigmas[0] / (1 + sigmas[0]))
    latent = flow.vae.to_latent(image)
    x_t = (1 - t0) * latent + t0 * seeded_randn(tuple(latent.shape), [SEED])  # ComfyUI's CONST noise_scaling
    theirs = flow.decode(comfy_latents(flow, "comfyui:dpmpp_2m", sigmas, x_t, SEED), "tensor")
    assert float((ours - theirs).abs().max()) < 1e-4
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1
    out = flow.inpaint(image, mask, PROMPT, sampler="comfyui:dpmpp_2m", steps=4, seed=SEED, progress=False,
                       output="tensor")
    assert torch.equal(out[..., 32:, :], image[..., 32:, :])  # the kept half comes back as it was


def test_a_name_comfyui_cannot_run_on_flow_models_is_refused_before_any_model_call(flow):
    before = flow.nfe
    for name in ("comfyui:dpm_2_ancestral", "comfyui:dpmpp_2s_ancestral"):
        with pytest.raises(Exception, match="not available on flow models"):
            flow.txt2img(PROMPT, sampler=name, steps=STEPS, seed=SEED, progress=False)
    assert flow.nfe == before


def test_on_the_eps_model_comfyui_names_run_as_before():
    eps = Pipeline.load(model="eps")
    a = eps.txt2img(PROMPT, sampler="comfyui:dpmpp_2m", steps=4, seed=SEED, progress=False, output="tensor")
    b = eps.txt2img(PROMPT, sampler="dpmpp_2m", steps=4, seed=SEED, progress=False, output="tensor")
    assert torch.equal(a, b)
    assert not eps.runs_comfyui_flow_rule(eps._planned("comfyui:dpmpp_2m", None, 4, {})[0])


def test_compare_grid_shows_comfyuis_rule_beside_the_registrys_on_a_flow_model(flow, monkeypatch):
    # the two names plan the same sampler, σ and options: the grid's check took them for one run under two names
    from app.images import compare_grid

    made = []
    real = flow.txt2img

    def txt2img(prompts, sampler, **k):
        made.append(sampler)
        return real(prompts, sampler=sampler, **k)

    monkeypatch.setattr(flow, "txt2img", txt2img)
    compare_grid(flow, ["a red circle"], ["dpmpp_2m", "comfyui:dpmpp_2m"], [2])
    assert made == ["dpmpp_2m", "comfyui:dpmpp_2m"]


def test_churn_that_would_raise_the_flow_time_above_1_is_refused_before_any_model_call(flow):
    # ComfyUI's plain rule churns the raw flow time: from t = 1 the default window [0, inf] raises it past the pure
    # noise, where the model is not defined (the review of 2026-12-07: the run took t̂ > 1 for σ = inf, silently)
    before = flow.nfe
    with pytest.raises(Exception, match=r"raises step 0's flow time t = 1 to .* above 1"):
        flow.txt2img(PROMPT, sampler="comfyui:euler", steps=STEPS, seed=SEED, progress=False, s_churn=1.0)
    with pytest.raises(Exception, match=r"its steps start at flow time t from 1 down to"):  # the window is in t
        flow.txt2img(PROMPT, sampler="comfyui:euler", steps=STEPS, seed=SEED, progress=False, s_churn=1.0,
                     s_tmin=2.0, s_tmax=10.0)
    assert flow.nfe == before
    fn = comfyui.ksampler_function("comfyui:heun", coordinates="flow", s_churn=1.0)
    with pytest.raises(Exception, match="above 1"):
        fn(comfyui.FlowModel(flow.denoiser(PROMPT, CFG)), torch.zeros(1, 4, 8, 8),
           torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), disable=True)
    assert flow.nfe == before
    # a window below 1 / (1 + γ) churns, in t, as ComfyUI does
    out = flow.txt2img(PROMPT, sampler="comfyui:euler", steps=STEPS, seed=SEED, progress=False, output="tensor",
                       s_churn=1.0, s_tmin=0.05, s_tmax=0.5)
    plain = flow.txt2img(PROMPT, sampler="comfyui:euler", steps=STEPS, seed=SEED, progress=False, output="tensor")
    assert float((out - plain).abs().max()) > 1e-3


def test_a_callback_gets_comfyuis_flow_times_under_its_rule(flow):
    """The pipeline's callback reaches ComfyUI's rule too, which calls it in its own coordinates: the flow times t of
    the schedule (σ / (1 + σ), 1 at σ = inf), the whole batch per step."""
    seen = []
    flow.txt2img([PROMPT, PROMPT], sampler="comfyui:dpmpp_2m", steps=3, cfg=CFG, seed=SEED, callback=seen.append,
                 progress=False, output="tensor", width=32, height=32)
    sigmas = flow.sigmas(None, 3)
    t = torch.where(torch.isinf(sigmas), torch.ones_like(sigmas), sigmas / (1 + sigmas))
    assert [(d["i"], d["x"].shape[0]) for d in seen] == [(0, 2), (1, 2), (2, 2)]
    assert [float(d["sigma"]) for d in seen] == pytest.approx(t[:-1].tolist())

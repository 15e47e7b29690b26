"""The ComfyUI custom sampler (samplers/interop/comfyui.py, docs/comfyui.md) on ComfyUI's calling convention.

ComfyUI is not installed here: this does **not** test ComfyUI. It tests the convention our function relies on,
with a stand-in for the code path ComfyUI runs a ``SAMPLER`` through, written from ComfyUI's source
(comfy/samplers.py ``KSAMPLER.sample``, ``KSamplerX0Inpaint.__call__``, ``CFGGuider.inner_sample``;
comfy/model_sampling.py ``EPS`` / ``CONST`` noise scaling):

- ``KSAMPLER(sampler_function, extra_options={}, inpaint_options={})``;
- ``sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)`` sets
  ``extra_args["denoise_mask"]``, wraps the guider in ``KSamplerX0Inpaint(model_wrap, sigmas)``, scales the noise by
  ``model_sampling.noise_scaling(sigmas[0], noise, latent_image, max_denoise)``, calls
  ``sampler_function(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback, disable=disable_pbar,
  **extra_options)`` with ``k_callback(d) = callback(d["i"], d["denoised"], d["x"], total_steps)``, and returns
  ``model_sampling.inverse_noise_scaling(sigmas[-1], samples)``;
- ``model_k(x, sigma, denoise_mask, model_options={}, seed=None)`` calls the guider with ``model_options`` and
  ``seed``; ``extra_args`` is ``{"model_options": ..., "seed": ...}`` from ``CFGGuider.inner_sample``.
"""
from __future__ import annotations

import math
import pathlib
import re
import sys
import types

import pytest
import torch

import samplers
from samplers.core import run as run_module
from samplers.core.native import RectifiedFlow
from samplers.interop import comfyui
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(3, 4, 4), components=3, seed=6)
FLOW_X0 = GM.as_model("x0", RectifiedFlow(multiplier=1.0))  # x0 from (x_t, t), flow coordinates
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "comfyui.md"


# ----------------------------------------------------------------------------------------------------
# A stand-in for ComfyUI's code path (see the module docstring for where each piece comes from)


class EPS:
    """k-diffusion coordinates x = x0 + σ·n; a run from σ_max starts at noise·sqrt(1 + σ²) (ComfyUI's choice)."""
    sigma_max = 14.6

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return noise * (torch.sqrt(1.0 + sigma**2) if max_denoise else sigma) + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class CONST:
    """Flow coordinates x = (1 − σ)·x0 + σ·n, σ ∈ [0, 1]."""
    sigma_max = 1.0

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class ModelFlux(CONST):  # ComfyUI's flow samplings derive from CONST
    pass


class Guider:
    """ComfyUI's CFGGuider as the sampler sees it: called with model_options and seed; records every call."""

    def __init__(self, sampling, denoise):
        self.inner_model = types.SimpleNamespace(model_sampling=sampling)
        self.model_patcher = types.SimpleNamespace(get_model_object=lambda name: {"model_sampling": sampling}[name])
        self.denoise = denoise
        self.calls = []

    def __call__(self, x, timestep, model_options={}, seed=None):
        self.calls.append((x, timestep, model_options, seed))
        return self.denoise(x, timestep)


class KSamplerX0Inpaint:
    def __init__(self, model, sigmas):
        self.inner_model, self.sigmas = model, sigmas

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):
        assert denoise_mask is None  # txt2img here: no inpainting blend
        return self.inner_model(x, sigma, model_options=model_options, seed=seed)


class KSAMPLER:
    def __init__(self, sampler_function, extra_options={}, inpaint_options={}):
        self.sampler_function, self.extra_options, self.inpaint_options = sampler_function, extra_options, inpaint_options

    def max_denoise(self, model_wrap, sigmas):
        sigma_max, sigma = float(model_wrap.inner_model.model_sampling.sigma_max), float(sigmas[0])
        return math.isclose(sigma_max, sigma, rel_tol=1e-05) or sigma > sigma_max

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image, model_k.noise = latent_image, noise
        sampling = model_wrap.inner_model.model_sampling
        noise = sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        total_steps = len(sigmas) - 1

        def k_callback(d):
            if callback is not None:
                callback(d["i"], d["denoised"], d["x"], total_steps)

        samples = self.sampler_function(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return sampling.inverse_noise_scaling(sigmas[-1], samples)


@pytest.fixture
def fake_comfy(monkeypatch):
    """``comfy.samplers`` with the stand-in KSAMPLER, for the node code that imports it."""
    comfy = types.ModuleType("comfy")
    comfy.samplers = types.ModuleType("comfy.samplers")
    comfy.samplers.KSAMPLER = KSAMPLER
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.samplers", comfy.samplers)
    return comfy


def comfy_run(sampler, sampling, denoise, sigmas, seed=7, batch=2, disable_pbar=True):
    """SamplerCustomAdvanced's txt2img path: empty latent, noise from the seed, the sampler through KSAMPLER."""
    guider = Guider(sampling, denoise)
    noise = GM.noise(batch, seed=3)
    latent = torch.zeros_like(noise)
    model_options = {"transformer_options": {"sample_sigmas": sigmas}}
    extra_args = {"model_options": model_options, "seed": seed}
    steps = []
    out = sampler.sample(guider, sigmas, extra_args, lambda *a: steps.append(a), noise, latent, None, disable_pbar)
    return out, guider, steps, model_options, noise


EPS_SIGMAS = samplers.get_sigmas("karras", 6, sigma_min=0.03, sigma_max=14.6)
FLOW_SIGMAS = torch.tensor([1.0, 0.9, 0.75, 0.55, 0.3, 0.1, 0.0], dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# The convention


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "heun"])
def test_a_registry_sampler_through_ksampler_equals_the_registry_run(name):
    out, guider, steps, model_options, noise = comfy_run(KSAMPLER(comfyui.ksampler_function(name)), EPS(),
                                                         GM.denoiser, EPS_SIGMAS, seed=7)
    x = noise * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)  # ComfyUI's max-denoise start
    opts = {"seed": 7} if "seed" in samplers.info(name).options else {}
    torch.testing.assert_close(out, samplers.sample(name, GM.denoiser, x, EPS_SIGMAS, disable=True, **opts))
    # every model call: k-diffusion's (x, sigma[B]) and extra_args untouched, through KSamplerX0Inpaint
    assert guider.calls and all(m is model_options and s == 7 and t.shape == (2,) for _, t, m, s in guider.calls)
    # ComfyUI's callback: (i, denoised, x, total_steps) once per step
    assert [s[0] for s in steps] == list(range(6)) and all(s[3] == 6 for s in steps)
    assert all(s[1].shape == s[2].shape == x.shape for s in steps)


def test_the_callback_keys_and_disable_reach_comfyui(monkeypatch):
    seen, bars = [], []
    real = run_module.trange
    monkeypatch.setattr(run_module, "trange", lambda *a, **k: bars.append(k["disable"]) or real(*a, **k))
    fn = comfyui.ksampler_function("dpmpp_2m")
    guider = Guider(EPS(), GM.denoiser)
    model_k = KSamplerX0Inpaint(guider, EPS_SIGMAS)
    x = GM.noise(2, seed=1) * 14.6
    # positional (model, x, sigmas); keyword extra_args, callback, disable; as KSAMPLER calls it
    fn(model_k, x, EPS_SIGMAS, extra_args={"model_options": {}, "seed": 1, "denoise_mask": None},
       callback=seen.append, disable=False)
    assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen) and len(seen) == 6
    assert bars == [False]


def test_the_seed_comes_from_extra_args():
    sampler = KSAMPLER(comfyui.ksampler_function("euler_ancestral"))
    a, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=7)
    b, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=7)
    c, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_comfyuis_whole_seed_range_is_taken():
    """ComfyUI's seeds run to 2**64 − 1, this library's too; the top 4096 leave no room for ComfyUI's largest batch
    (item k: seed + k) and are taken modulo 2**64 − 4096."""
    sampler = KSAMPLER(comfyui.ksampler_function("euler_ancestral"))
    top, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=2**64 - 1)
    wrapped, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=(2**64 - 1) % (2**64 - 4096))
    torch.testing.assert_close(top, wrapped, rtol=0, atol=0)
    assert comfyui.comfy_seed(5, 2) == 5 and comfyui.comfy_seed(None, 2) is None


@pytest.mark.parametrize("seed", [2**63 - 2, 2**63 + 5, 2**64 - 4097, 2**64 - 1, 0xDEADBEEFCAFEBABE])
def test_a_large_comfyui_seed_gives_image_0_whatever_the_batch(seed):
    """The map of ComfyUI's seed does not depend on the batch (it was modulo 2**63 − batch: image 0 of a batch of 2
    was 2.7-3.2 from the same image alone for seeds ComfyUI draws half the time)."""
    sampler = KSAMPLER(comfyui.ksampler_function("euler_ancestral"))
    pair, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=seed, batch=2)
    alone, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=seed, batch=1)
    torch.testing.assert_close(pair[:1], alone, rtol=1e-6, atol=1e-6)


def test_comfyui_labels_bring_their_noise():
    """ComfyUI's own dpmpp_2m_sde draws k-diffusion's Brownian tree seeded by the seed, on the CPU; the resolver's
    "brownian_tree" seeds item k with seed + k (one tree for the batch in ComfyUI: the same numbers for one image)."""
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:dpmpp_2m_sde")), EPS(), GM.denoiser, EPS_SIGMAS,
                        seed=7)
    x = GM.noise(2, seed=3) * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)
    tree = samplers.core.brownian.BrownianTreeNoiseSampler(x, float(EPS_SIGMAS[-2]), float(EPS_SIGMAS[0]),
                                                          seed=[7, 8], cpu=True)
    torch.testing.assert_close(out, samplers.sample("dpmpp_2m_sde", GM.denoiser, x, EPS_SIGMAS, noise_sampler=tree,
                                                    disable=True))


@pytest.mark.parametrize("seed", [2**63 - 4089, 2**63 + 5, 0xDEADBEEFCAFEBABE, 2**64 - 4097])
def test_comfyuis_tree_is_drawn_from_its_whole_seed_for_one_image(seed):
    """ComfyUI's dpmpp_2m_sde seeds its CPU Brownian tree with the whole seed, up to 2**64 − 1 (torchsde takes any):
    one image gets the same numbers here (seeds from 2**63 − 4096 up were taken modulo 2**63 − 4096, so 2**63 − 4089
    ran seed 7's tree)."""
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:dpmpp_2m_sde")), EPS(), GM.denoiser, EPS_SIGMAS,
                        seed=seed, batch=1)
    x = GM.noise(1, seed=3) * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)
    tree = samplers.core.brownian.BrownianTreeNoiseSampler(x, float(EPS_SIGMAS[-2]), float(EPS_SIGMAS[0]), seed=seed,
                                                          cpu=True)  # ComfyUI's: one tree, its seed, on the CPU
    torch.testing.assert_close(out, samplers.sample("dpmpp_2m_sde", GM.denoiser, x, EPS_SIGMAS, noise_sampler=tree,
                                                    disable=True))


def test_extra_options_are_sampler_options_and_are_checked():
    sampler = KSAMPLER(comfyui.ksampler_function("euler_ancestral"), extra_options={"eta": 0.5})
    out, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=7)
    x = GM.noise(2, seed=3) * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)
    torch.testing.assert_close(out, samplers.sample("euler_ancestral", GM.denoiser, x, EPS_SIGMAS, eta=0.5, seed=7,
                                                    disable=True))
    with pytest.raises(samplers.InvalidOption, match="no option"):
        comfyui.ksampler_function("dpmpp_2m", eta=0.5)
    with pytest.raises(samplers.InvalidOption, match="SIGMAS input: use 'dpmpp_2m' with the 'karras' scheduler$"):
        comfyui.ksampler_function("DPM++ 2M Karras")  # ComfyUI's name for the rule, not the label's a1111:Karras
    with pytest.raises(samplers.InvalidOption, match=r"get_sigmas\('a1111:Beta'.*ComfyUI has no scheduler of that"):
        comfyui.ksampler_function("Euler a Beta")  # A1111's Beta (beta_sigmas) is not ComfyUI's beta


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "dpmpp_sde", "euler_ancestral"])
def test_a_flow_model_runs_in_the_samplers_coordinates(name):
    out, guider, steps, _, noise = comfy_run(KSAMPLER(comfyui.ksampler_function(name)), ModelFlux(), FLOW_X0,
                                             FLOW_SIGMAS, seed=7)
    # the same sampler on the same data in k-diffusion's coordinates: σ = t/(1 − t), from σ = inf
    sigmas_ve = torch.tensor([math.inf] + [t / (1 - t) for t in FLOW_SIGMAS[1:].tolist()], dtype=torch.float64)
    opts = {"seed": 7} if "seed" in samplers.info(name).options else {}
    torch.testing.assert_close(out, samplers.sample(name, GM.denoiser, noise, sigmas_ve, disable=True, **opts))
    assert all(0 <= float(t[0]) <= 1 for _, t, _, _ in guider.calls)  # the model saw ComfyUI's own σ = t
    assert len(steps) == len(FLOW_SIGMAS) - 1


def test_flow_euler_through_comfyui_is_euler_in_flow_coordinates():
    """An independent check of the conversion: Euler in σ = t/(1 − t) equals Euler written in ComfyUI's own flow
    coordinates, x ← x + (x − D)/t·(t_next − t)."""
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("euler")), ModelFlux(), FLOW_X0, FLOW_SIGMAS)
    x = GM.noise(2, seed=3)
    t = FLOW_SIGMAS.tolist()
    for i in range(len(t) - 1):
        denoised = FLOW_X0(x, torch.full((2,), t[i], dtype=torch.float64))
        x = x + (x - denoised) / t[i] * (t[i + 1] - t[i])
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)


def test_flow_callback_reports_comfyuis_coordinates():
    seen = []
    fn = comfyui.ksampler_function("euler", coordinates="flow")
    x = GM.noise(2, seed=3)
    fn(KSamplerX0Inpaint(Guider(ModelFlux(), FLOW_X0), FLOW_SIGMAS), x, FLOW_SIGMAS,
       extra_args={"model_options": {}, "seed": 0, "denoise_mask": None}, callback=seen.append, disable=True)
    assert all(isinstance(d["sigma"], torch.Tensor) for d in seen)
    assert [float(d["sigma"]) for d in seen] == pytest.approx(FLOW_SIGMAS[:-1].tolist())
    # k-diffusion's contract, which ComfyUI's k_callback reads: x is the state step i's model call saw, at t_i (the
    # input itself at t = 1), so ComfyUI's Euler step in t links one report to the next (it reported the state
    # after the step, at t_{i+1})
    torch.testing.assert_close(seen[0]["x"], x, rtol=0, atol=0)
    t = FLOW_SIGMAS.tolist()
    for i in range(len(seen) - 1):
        step = seen[i]["x"] + (t[i + 1] - t[i]) * (seen[i]["x"] - seen[i]["denoised"]) / t[i]
        torch.testing.assert_close(seen[i + 1]["x"], step, rtol=1e-12, atol=1e-12)


def test_the_callback_reports_the_state_each_step_started_from_as_comfyui_does():
    """ComfyUI's samplers (k-diffusion's) call back with the x the step's model call saw and σ as a tensor; the
    adapter reported the state after the step (18.7 apart on this mixture) and σ as a float."""
    seen = []
    fn = comfyui.ksampler_function("euler")
    x = GM.noise(2, seed=1) * 14.6
    fn(KSamplerX0Inpaint(Guider(EPS(), GM.denoiser), EPS_SIGMAS), x, EPS_SIGMAS,
       extra_args={"model_options": {}, "seed": 1, "denoise_mask": None}, callback=seen.append, disable=True)
    torch.testing.assert_close(seen[0]["x"], x, rtol=0, atol=0)
    s = EPS_SIGMAS.tolist()
    for i in range(len(seen) - 1):
        assert isinstance(seen[i]["sigma"], torch.Tensor) and float(seen[i]["sigma"]) == s[i]
        step = seen[i]["x"] + (s[i + 1] - s[i]) * (seen[i]["x"] - seen[i]["denoised"]) / s[i]
        torch.testing.assert_close(seen[i + 1]["x"], step, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# The recipe in docs/comfyui.md, as users drop it into ComfyUI/custom_nodes


def recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    nodes = [b for b in blocks if "NODE_CLASS_MAPPINGS" in b]
    assert len(nodes) == 1, "docs/comfyui.md has one custom-node file"
    return nodes[0]


def test_the_documented_custom_node_builds_a_working_sampler(fake_comfy):
    env = {"__name__": "diffusion_samplers_nodes"}
    exec(compile(recipe(), str(DOCS), "exec"), env)
    (key, node), = env["NODE_CLASS_MAPPINGS"].items()
    assert key in env["NODE_DISPLAY_NAME_MAPPINGS"]
    inputs = node.INPUT_TYPES()["required"]
    assert inputs["sampler_name"][0] == samplers.available() and node.RETURN_TYPES == ("SAMPLER",)
    (sampler,) = getattr(node(), node.FUNCTION)("dpmpp_2m_sde", '{"eta": 0.5, "noise_sampler": "brownian_tree"}')
    assert isinstance(sampler, KSAMPLER)
    out, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=9)
    x = GM.noise(2, seed=3) * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)
    torch.testing.assert_close(out, samplers.sample("dpmpp_2m_sde", GM.denoiser, x, EPS_SIGMAS, eta=0.5, seed=9,
                                                    noise_sampler="brownian_tree", disable=True))
    with pytest.raises(samplers.InvalidOption, match="JSON object"):
        node().get_sampler("euler", "eta=0.5")


# ----------------------------------------------------------------------------------------------------
# ComfyUI's own update rules where its sampler differs from the registry sampler of that name: references written
# from ComfyUI's comfy/k_diffusion/sampling.py, run on ComfyUI's side of KSAMPLER (k-diffusion's model_k(x, σ[B]))


def comfy_ipndm(model, x, sigmas, variable=False, max_order=4):
    """ComfyUI's sample_ipndm (``variable=False``) and sample_ipndm_v: Adams–Bashforth in σ on d = (x − D)/σ, the
    step to σ = 0 returning D; ipndm_v's weights corrected by the ratios of the last steps."""
    s_in = x.new_ones([x.shape[0]])
    t = sigmas
    buf = []  # oldest first
    for i in range(len(t) - 1):
        denoised = model(x, t[i] * s_in)
        d = (x - denoised) / t[i]
        order = min(max_order, i + 1)
        h = t[i + 1] - t[i]
        if t[i + 1] == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + h * d
        elif not variable:
            ab = {2: (3, -1, 2), 3: (23, -16, 5, 12), 4: (55, -59, 37, -9, 24)}[order]
            x_next = x + h * sum(c * e for c, e in zip(ab[:-1], [d, *buf[::-1]])) / ab[-1]
        else:
            h1 = t[i] - t[i - 1]
            c1, c2 = (2 + h / h1) / 2, -(h / h1) / 2
            if order == 2:
                x_next = x + h * (c1 * d + c2 * buf[-1])
            else:
                h2 = t[i - 1] - t[i - 2]
                t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
                if order == 3:
                    x_next = x + h * ((c1 + t1) * d + (c2 - (1 + h1 / h2) * t1) * buf[-1] + t1 * h1 / h2 * buf[-2])
                else:
                    h3 = t[i - 2] - t[i - 3]
                    t2 = ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2))) \
                        * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
                    r = h1 * (h1 + h2) / (h2 * (h2 + h3))
                    x_next = x + h * ((c1 + t1 + t2) * d + (c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + r) * t2) * buf[-1]
                                      + (t1 * h1 / h2 + (h1 / h2 + r * (1 + h2 / h3)) * t2) * buf[-2]
                                      - t2 * r * h1 / h2 * buf[-3])
        buf = (buf + [d])[-(max_order - 1):]
        x = x_next
    return x


def comfy_euler_ancestral_rf(model, x, t, noises, eta=1.0, s_noise=1.0):
    """ComfyUI's sample_euler_ancestral_RF, what its euler_ancestral runs on a CONST (flow) model, in flow time t."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(t) - 1):
        denoised = model(x, t[i] * s_in)
        if t[i + 1] == 0:
            x = denoised
            continue
        t_down = t[i + 1] * (1 + (t[i + 1] / t[i] - 1) * eta)
        a_next, a_down = 1 - t[i + 1], 1 - t_down
        renoise = (t[i + 1] ** 2 - t_down ** 2 * a_next ** 2 / a_down ** 2) ** 0.5
        x = (t_down / t[i]) * x + (1 - t_down / t[i]) * denoised
        if eta > 0:
            x = (a_next / a_down) * x + noises[i] * s_noise * renoise
    return x


def nonlinear_denoiser(x, sigma):
    """A denoiser whose multistep errors do not cancel (the mixture's, mixed with a pointwise nonlinearity)."""
    return GM.denoiser(x, sigma) + 0.1 * torch.tanh(x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) ** 0.5)


@pytest.mark.parametrize("steps", [10, 30])
@pytest.mark.parametrize("name, variable", [("ipndm", False), ("ipndm_v", True)])
def test_comfyui_ipndm_names_reproduce_comfyuis_update_rule(name, variable, steps):
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.03, sigma_max=14.6).double()
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(f"comfyui:{name}")), EPS(), nonlinear_denoiser, sigmas)
    x = GM.noise(2, seed=3).double() * math.sqrt(1 + float(sigmas[0]) ** 2)
    ref = comfy_ipndm(nonlinear_denoiser, x, sigmas, variable=variable)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # Forge's labels run ComfyUI's functions too; and on a schedule that never reaches 0 (the weights alone)
    forge = {"ipndm": "iPNDM", "ipndm_v": "iPNDM_v"}[name]
    torch.testing.assert_close(samplers.sample(forge, nonlinear_denoiser, x, sigmas, disable=True), ref,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(samplers.sample(f"comfyui:{name}", nonlinear_denoiser, x, sigmas[:-1], disable=True),
                               comfy_ipndm(nonlinear_denoiser, x, sigmas[:-1], variable=variable),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [10, 30])
def test_comfyui_lms_ends_with_the_denoised_x_as_comfyuis_sample_lms(steps):
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.03, sigma_max=14.6).double()
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:lms")), EPS(), nonlinear_denoiser, sigmas)
    x = GM.noise(2, seed=3).double() * math.sqrt(1 + float(sigmas[0]) ** 2)
    ref = comfy_lms(nonlinear_denoiser, x, sigmas.tolist())
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # the registry's lms is k-diffusion's: its last step is the Adams–Bashforth step, another image
    assert not torch.allclose(samplers.sample("lms", nonlinear_denoiser, x, sigmas, disable=True), ref, atol=1e-6)


def test_the_registry_ipndm_and_lms_keep_their_own_rules():
    """The registry names keep what they computed: ipndm's last step is its Adams–Bashforth step, lms has the exact
    variable-step weights — neither is ComfyUI's (the comfyui: names are)."""
    sigmas = samplers.get_sigmas("karras", 10, sigma_min=0.03, sigma_max=14.6).double()
    x = GM.noise(2, seed=3).double() * 14.6
    plain = samplers.sample("ipndm", nonlinear_denoiser, x, sigmas, disable=True)
    assert samplers.info("ipndm").options["final_denoise"] is False
    assert not torch.allclose(plain, comfy_ipndm(nonlinear_denoiser, x, sigmas), atol=1e-6)
    lms = samplers.sample("lms", nonlinear_denoiser, x, sigmas[:-1], disable=True)
    assert not torch.allclose(lms, comfy_ipndm(nonlinear_denoiser, x, sigmas[:-1], variable=True), atol=1e-6)


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("start", [1.0, 0.95])
def test_comfyui_euler_ancestral_on_a_flow_model_is_comfyuis_rf_rule(eta, start):
    t = torch.tensor([start, 0.9, 0.75, 0.55, 0.3, 0.1, 0.0], dtype=torch.float64)
    noises = [GM.noise(2, seed=20 + k).double() for k in range(len(t))]
    drawn = []

    def noise_sampler(sigma, sigma_next):
        drawn.append((sigma, sigma_next))
        return noises[len(drawn) - 1]

    if eta == 0:  # a noise_sampler the run never reads is refused, as the pipeline refuses it
        with pytest.raises(samplers.InvalidOption, match="noise_sampler=.* is not read: this run draws no noise"):
            comfyui.ksampler_function("comfyui:euler_ancestral", eta=eta, noise_sampler=noise_sampler)
    fn = comfyui.ksampler_function("comfyui:euler_ancestral", eta=eta,
                                   **({"noise_sampler": noise_sampler} if eta > 0 else {}))
    out, *_ = comfy_run(KSAMPLER(fn), ModelFlux(), FLOW_X0, t)
    noise = GM.noise(2, seed=3).double()
    x = t[0] * noise  # CONST noise scaling of an empty latent
    ref = comfy_euler_ancestral_rf(FLOW_X0, x, t.tolist(), noises, eta=eta)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert len(drawn) == (len(t) - 2 if eta > 0 else 0)  # ComfyUI draws no noise for the last step nor at eta = 0
    # the registry name keeps the VE ancestral rule on flow models (it differs from ComfyUI's there)
    if eta > 0:
        drawn.clear()
        plain, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("euler_ancestral", eta=eta,
                                                                 noise_sampler=noise_sampler)), ModelFlux(), FLOW_X0, t)
        assert not torch.allclose(plain, ref, atol=1e-4)


def test_comfyui_euler_ancestral_on_a_ve_model_stays_k_diffusions():
    sampler = KSAMPLER(comfyui.ksampler_function("comfyui:euler_ancestral"))
    out, *_ = comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS, seed=7)
    x = GM.noise(2, seed=3) * math.sqrt(1 + float(EPS_SIGMAS[0]) ** 2)
    torch.testing.assert_close(out, samplers.sample("euler_ancestral", GM.denoiser, x, EPS_SIGMAS, seed=7,
                                                    noise_sampler="comfyui", disable=True))


def _comfy_default_noise(x, seed):
    """ComfyUI's default_noise_sampler(x, seed) (comfy/k_diffusion/sampling.py, Comfy-Org/ComfyUI 311c0140): a
    generator on x's device seeded seed (+ 1 on the CPU), one randn of x's size per call."""
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed + 1 if x.device == torch.device("cpu") else seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device,
                                                 generator=generator)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm", "lcm", "er_sde",
                                  "seeds_2", "seeds_3", "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece"])
def test_comfyuis_stochastic_samplers_draw_comfyuis_default_noise_for_one_image(name):
    """ComfyUI's ancestral and other stochastic samplers (all but the Brownian-tree SDE ones) draw
    default_noise_sampler(x, seed): a comfyui: name ran this library's per-item seeded noise instead, another image
    for every seed (4.2-5.6 apart on this mixture). Now ComfyUI's stream for one image: the registry sampler on
    exactly ComfyUI's draws; with several images each draws from its own seed + k (not ComfyUI's one batch stream)."""
    one = EPS_SIGMAS
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(f"comfyui:{name}")), EPS(), GM.denoiser, one, seed=7,
                        batch=1)
    x = GM.noise(1, seed=3) * math.sqrt(1 + float(one[0]) ** 2)
    label = samplers.core.names.resolve(f"comfyui:{name}")
    options = {k: v for k, v in label.options.items() if k != "noise_sampler"}
    want = samplers.sample(label.sampler, GM.denoiser, x, one, noise_sampler=_comfy_default_noise(x, 7),
                           disable=True, **options)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert label.options["noise_sampler"] == "comfyui"


def test_a_comfyui_name_without_its_flow_rule_is_refused_on_flow_models():
    sampler = KSAMPLER(comfyui.ksampler_function("comfyui:dpmpp_2s_ancestral"))
    with pytest.raises(samplers.Unavailable, match="sample_dpmpp_2s_ancestral_RF"):
        comfy_run(sampler, ModelFlux(), FLOW_X0, FLOW_SIGMAS)
    with pytest.raises(samplers.Unavailable, match="flow models"):
        comfyui.ksampler_function("comfyui:dpmpp_2s_ancestral", coordinates="flow")
    comfy_run(sampler, EPS(), GM.denoiser, EPS_SIGMAS)  # its k-diffusion rule on other models
    comfy_run(KSAMPLER(comfyui.ksampler_function("dpmpp_2s_ancestral")), ModelFlux(), FLOW_X0, FLOW_SIGMAS)


def comfy_deis_tab(model, x, sigmas, max_order=3):
    """ComfyUI's sample_deis (deis_mode="tab", comfy/k_diffusion/deis.py) in float64: the step weights integrate
    the Lagrange basis in EDM's VP time against -½·(d log ᾱ/dt)/√(ᾱ(1 − ᾱ)) by a sum over 10000 points."""
    s_min, s_max, eps_s = 0.002, 80.0, 1e-3
    beta_d = 2 * (math.log(s_min**2 + 1) / eps_s - math.log(s_max**2 + 1)) / (eps_s - 1)
    beta_0 = math.log(s_max**2 + 1) - 0.5 * beta_d
    beta_1 = beta_d + beta_0
    ts = ((beta_0**2 + 2 * beta_d * torch.log(sigmas.double()**2 + 1)).sqrt() - beta_0) / beta_d
    s_in = x.new_ones([x.shape[0]])
    buf = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            taus = torch.linspace(float(ts[i]), float(ts[i + 1]), 10000, dtype=torch.float64).requires_grad_(True)
            with torch.enable_grad():
                alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
                alpha.log().sum().backward()
            integrand = (-0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))).detach()
            prev = [float(ts[i - k]) for k in range(order)]
            x_next = x
            for j, e in enumerate([d, *buf[::-1]][:order]):
                poly = 1.0
                for k in range(order):
                    if k != j:
                        poly = poly * (taus.detach() - prev[k]) / (prev[j] - prev[k])
                x_next = x_next + float(torch.sum(integrand * poly)) * (float(ts[i + 1]) - float(ts[i])) / 10000 * e
        buf = (buf + [d])[-(max_order - 1):]
        x = x_next
    return x


@pytest.mark.parametrize("steps", [10, 30])
def test_comfyui_deis_is_comfyuis_tab_deis(steps):
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.03, sigma_max=14.6).double()
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:deis")), EPS(), nonlinear_denoiser, sigmas)
    x = GM.noise(2, seed=3).double() * math.sqrt(1 + float(sigmas[0]) ** 2)
    ref = comfy_deis_tab(nonlinear_denoiser, x, sigmas)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(samplers.sample("DEIS", nonlinear_denoiser, x, sigmas, disable=True), ref,
                               rtol=1e-10, atol=1e-10)  # Forge's label
    plain = samplers.sample("deis", nonlinear_denoiser, x, sigmas, disable=True)  # the registry's ρAB stays
    assert not torch.allclose(plain, ref, atol=1e-6)


@pytest.mark.parametrize("order", [1, 2])
def test_comfyui_deis_order_is_sample_deis_max_order(order):
    """ComfyUI's sample_deis takes max_order, which the name takes as the registry's ``order`` (not refused as an
    option ComfyUI lacks: labels.COMFYUI_NOT_TAKEN)."""
    sigmas = samplers.get_sigmas("karras", 10, sigma_min=0.03, sigma_max=14.6).double()
    sampler = KSAMPLER(comfyui.ksampler_function("comfyui:deis", order=order))
    out, *_ = comfy_run(sampler, EPS(), nonlinear_denoiser, sigmas)
    x = GM.noise(2, seed=3).double() * math.sqrt(1 + float(sigmas[0]) ** 2)
    torch.testing.assert_close(out, comfy_deis_tab(nonlinear_denoiser, x, sigmas, max_order=order), rtol=1e-10,
                               atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# Flow models (model_sampling a CONST): ComfyUI's own functions on ComfyUI's raw coordinates (x_t, σ = t), written
# from comfy/k_diffusion/sampling.py (comfyanonymous/ComfyUI 02159d81); most apply the plain k-diffusion rule there.


def comfy_dpmpp_2m(model, x, sigmas):
    """ComfyUI's sample_dpmpp_2m: t_fn = −log σ on whatever sigmas it is given (t itself on a flow model)."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = -math.log(sigmas[i]), -math.log(sigmas[i + 1]) if sigmas[i + 1] > 0 else math.inf
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * denoised
        else:
            r = (t + math.log(sigmas[i - 1])) / h
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * ((1 + 1 / (2 * r)) * denoised
                                                                    - (1 / (2 * r)) * old_denoised)
        old_denoised = denoised
    return x


def comfy_heun(model, x, sigmas):
    """ComfyUI's sample_heun (s_churn = 0)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1] * s_in)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def comfy_lms(model, x, sigmas, order=4):
    """ComfyUI's sample_lms: Lagrange weights integrated by scipy's quad over σ."""
    from scipy import integrate

    def coeff(cur, i, j):
        def fn(tau):
            prod = 1.0
            for k in range(cur):
                if j != k:
                    prod *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
            return prod
        return integrate.quad(fn, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]

    s_in = x.new_ones([x.shape[0]])
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        ds = (ds + [(x - denoised) / sigmas[i]])[-order:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur = min(i + 1, order)
            x = x + sum(coeff(cur, i, j) * d for j, d in enumerate(reversed(ds)))
    return x


def comfy_dpmpp_2m_sde_const(model, x, sigmas, percent_to_sigma, eta=1.0, noises=None, heun=False):
    """ComfyUI's sample_dpmpp_2m_sde on a CONST model: λ = log((1 − t)/t), α_t = 1 − t, the first t ≥ 1 moved to
    percent_to_sigma(1e-4) (offset_first_sigma_for_snr)."""
    sigmas = list(sigmas)
    if sigmas[0] >= 1:
        sigmas[0] = percent_to_sigma(1e-4)
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = math.log((1 - sigmas[i]) / sigmas[i]), math.log((1 - sigmas[i + 1]) / sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * math.exp(lam_t)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x - alpha_t * math.expm1(-h_eta) * denoised
            if old_denoised is not None:
                r = h_last / h
                if heun:
                    x = x + alpha_t * (-math.expm1(-h_eta) / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * -math.expm1(-h_eta) * (1 / r) * (denoised - old_denoised)
            if eta > 0:
                x = x + noises[i] * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta))
        old_denoised, h_last = denoised, h
    return x


def flux_nonlinear(x, t):
    """A flow model (x0 from (x_t, t)) whose multistep errors do not cancel."""
    return FLOW_X0(x, t) + 0.1 * torch.tanh(x)


FLOW_RAW_REFERENCES = {
    "dpmpp_2m": comfy_dpmpp_2m, "heun": comfy_heun, "lms": comfy_lms,
    "ipndm": comfy_ipndm, "ipndm_v": lambda m, x, t: comfy_ipndm(m, x, t, variable=True),
    "sample_ipndm": comfy_ipndm, "sample_ipndm_v": lambda m, x, t: comfy_ipndm(m, x, t, variable=True),
    "deis": comfy_deis_tab, "sample_deis": comfy_deis_tab,
}


@pytest.mark.parametrize("start", [1.0, 0.95])
@pytest.mark.parametrize("name", sorted(FLOW_RAW_REFERENCES))
def test_comfyui_names_on_a_flow_model_run_comfyuis_rule_on_its_raw_coordinates(name, start):
    t = torch.tensor([start, 0.93, 0.85, 0.75, 0.6, 0.45, 0.3, 0.18, 0.08, 0.0], dtype=torch.float64)
    label = name if name.startswith("sample_") else f"comfyui:{name}"
    out, guider, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(label)), ModelFlux(), flux_nonlinear, t)
    x = t[0] * GM.noise(2, seed=3).double()  # CONST noise scaling of an empty latent
    ref = FLOW_RAW_REFERENCES[name](flux_nonlinear, x, t if name.endswith("deis") else t.tolist())
    ref = ref / (1 - t[-1])  # KSAMPLER's CONST inverse_noise_scaling
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert float(guider.calls[0][1][0]) == start  # the model is called at ComfyUI's own first t
    # the registry name keeps the registry's rule in σ = t/(1 − t), which differs from ComfyUI's here
    registry = {"ipndm_v": "ipndm", "sample_ipndm": "ipndm", "sample_ipndm_v": "ipndm", "sample_deis": "deis"}
    plain, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(registry.get(name, name))), ModelFlux(),
                          flux_nonlinear, t)
    assert not torch.allclose(plain, ref, atol=1e-6)


@pytest.mark.parametrize("name", sorted(samplers.core.labels.COMFYUI_FLOW_RAW))
def test_every_raw_comfyui_name_is_the_registry_sampler_on_comfyuis_coordinates(name):
    """Each name in COMFYUI_FLOW_RAW runs its registry sampler on (x_t, σ = t) unchanged, from t = 1 (and where
    ComfyUI's sampler writes over the SIGMAS' final 0, uni_pc's 0.001, KSAMPLER's division by 1 − that σ after it)."""
    label = name if name.startswith("sample_") else f"comfyui:{name}"
    opts = {"seed": 7} if "seed" in samplers.info(label).options else {}  # comfy_run's extra_args['seed']
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(label)), ModelFlux(), flux_nonlinear, FLOW_SIGMAS, seed=7)
    x = GM.noise(2, seed=3).double()
    ref = samplers.sample(label, flux_nonlinear, x, FLOW_SIGMAS, disable=True, **opts)
    ref = ref / (1 - samplers.core.labels.COMFYUI_FLOW_FINAL_WRITE.get(name, 0.0))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(out).all()


class Flux(ModelFlux):
    """ComfyUI's ModelSamplingFlux: percent_to_sigma is time-shifted (flux_time_shift(shift, 1, 1 − percent))."""
    shift = 1.15

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return math.exp(self.shift) / (math.exp(self.shift) + (1 / (1.0 - percent) - 1))


@pytest.mark.parametrize("sampling", [ModelFlux(), Flux()], ids=["const", "flux"])
@pytest.mark.parametrize("name, heun", [("dpmpp_2m_sde", False), ("dpmpp_2m_sde_heun", True)])
def test_comfyui_half_log_snr_samplers_on_a_flow_model_match_comfyui(name, heun, sampling):
    """ComfyUI's SDE samplers step in λ = log((1 − t)/t), which σ = t/(1 − t) reproduces, after its
    offset_first_sigma_for_snr: from t = 1 they start at percent_to_sigma(1e-4). (The deterministic part, eta = 0;
    with noise: test_comfyui_sde_samplers_on_a_flow_model_draw_comfyuis_tree_over_t.)"""
    t = torch.tensor([1.0, 0.93, 0.85, 0.75, 0.6, 0.45, 0.3, 0.18, 0.08, 0.0], dtype=torch.float64)
    fn = comfyui.ksampler_function(f"comfyui:{name}", eta=0.0)
    out, guider, *_ = comfy_run(KSAMPLER(fn), sampling, flux_nonlinear, t)
    x = GM.noise(2, seed=3).double()
    pts = getattr(sampling, "percent_to_sigma", lambda p: 1.0 - p)
    ref = comfy_dpmpp_2m_sde_const(flux_nonlinear, x, t.tolist(), pts, eta=0.0, heun=heun)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert float(guider.calls[0][1][0]) == pytest.approx(pts(1e-4), abs=1e-12)


@pytest.mark.parametrize("sampling", [ModelFlux(), Flux()], ids=["const", "flux"])
@pytest.mark.parametrize("name, heun", [("dpmpp_2m_sde", False), ("dpmpp_2m_sde_heun", True)])
def test_comfyui_sde_samplers_on_a_flow_model_draw_comfyuis_tree_over_t(name, heun, sampling):
    """With noise (eta = 1), one image: ComfyUI draws k-diffusion's Brownian tree over its σ, the flow time t (the
    given sigmas' range, before the first is offset), asked at the t it steps to; the adapter drew a tree over
    σ = t/(1 − t), another image (3.3 apart on this mixture). Now ComfyUI's draws exactly."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    t = torch.tensor([1.0, 0.93, 0.85, 0.75, 0.6, 0.45, 0.3, 0.18, 0.08, 0.0], dtype=torch.float64)
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(f"comfyui:{name}")), sampling, flux_nonlinear, t, seed=7,
                        batch=1)
    x = GM.noise(1, seed=3).double()
    pts = getattr(sampling, "percent_to_sigma", lambda p: 1.0 - p)
    stepped = t.clone()
    stepped[0] = pts(1e-4)  # asked at its sigmas' elements (tensors of their dtype), the first offset
    tree = BrownianTreeNoiseSampler(x, t[t > 0].min(), t.max(), seed=7, cpu=True)
    # none on the step to t = 0, which ComfyUI draws none on (below the tree's range: torchsde would warn and clamp)
    noises = [tree(stepped[i], stepped[i + 1]) for i in range(len(t) - 2)]
    ref = comfy_dpmpp_2m_sde_const(flux_nonlinear, x, t.tolist(), pts, eta=1.0, noises=noises, heun=heun)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


# ComfyUI's sample_lcm, sample_dpmpp_sde, sample_dpmpp_3m_sde and sample_seeds_3 on a CONST model, transcribed from
# comfy/k_diffusion/sampling.py (comfyanonymous/ComfyUI 02159d81) at their defaults (η = 1, s_noise = 1, noise_scale
# 1), in float64: λ = log((1 − t)/t) (sigma_to_half_log_snr), t = 1/(1 + e^λ) (half_log_snr_to_sigma), α = t·e^λ =
# 1 − t, the first t ≥ 1 moved to percent_to_sigma(1e-4) (offset_first_sigma_for_snr; not in sample_lcm).
# ``noise(t_from, t_to)`` is the sampler's noise_sampler, asked with ComfyUI's arguments.


def _lam(t):
    return math.log((1 - t) / t)


def _t_of(lam):
    return 1 / (1 + math.exp(lam))


def _offset(t, percent_to_sigma):
    return [percent_to_sigma(1e-4), *t[1:]] if t[0] >= 1 else list(t)


def _ancestral_step(sigma_from, sigma_to, eta=1.0):  # get_ancestral_step
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def comfy_lcm_const(model, x, t, noise, percent_to_sigma):
    for i in range(len(t) - 1):
        x = model(x, t[i] * x.new_ones([x.shape[0]]))
        if t[i + 1] > 0:  # CONST.noise_scaling(t_next, noise, x)
            x = t[i + 1] * noise(t[i], t[i + 1]) + (1 - t[i + 1]) * x
    return x


def comfy_dpmpp_sde_const(model, x, t, noise, percent_to_sigma, eta=1.0, r=0.5):
    t = _offset(t, percent_to_sigma)
    for i in range(len(t) - 1):
        denoised = model(x, t[i] * x.new_ones([x.shape[0]]))
        if t[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(t[i]), _lam(t[i + 1])
        h = lam_t - lam_s
        lam_s1 = lam_s + r * h
        t_s1 = _t_of(lam_s1)
        alpha_s, alpha_s1, alpha_t = t[i] * math.exp(lam_s), t_s1 * math.exp(lam_s1), t[i + 1] * math.exp(lam_t)
        sd, su = _ancestral_step(math.exp(-lam_s), math.exp(-lam_s1), eta)
        h_ = -math.log(sd) - lam_s
        x_2 = (alpha_s1 / alpha_s) * math.exp(-h_) * x - alpha_s1 * math.expm1(-h_) * denoised
        x_2 = x_2 + alpha_s1 * noise(t[i], t_s1) * su
        denoised_2 = model(x_2, t_s1 * x.new_ones([x.shape[0]]))
        sd, su = _ancestral_step(math.exp(-lam_s), math.exp(-lam_t), eta)
        h_ = -math.log(sd) - lam_s
        denoised_d = (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * denoised_2
        x = (alpha_t / alpha_s) * math.exp(-h_) * x - alpha_t * math.expm1(-h_) * denoised_d
        x = x + alpha_t * noise(t[i], t[i + 1]) * su
    return x


def comfy_dpmpp_3m_sde_const(model, x, t, noise, percent_to_sigma, eta=1.0):
    t = _offset(t, percent_to_sigma)
    denoised_1 = denoised_2 = h_1 = h_2 = None
    for i in range(len(t) - 1):
        denoised = model(x, t[i] * x.new_ones([x.shape[0]]))
        h = None
        if t[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _lam(t[i]), _lam(t[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = t[i + 1] * math.exp(lam_t)
            x = t[i + 1] / t[i] * math.exp(-h * eta) * x - alpha_t * math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1, d2 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1), (d1_0 - d1_1) / (r0 + r1)
                x = x + alpha_t * phi_2 * d1 - alpha_t * (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + alpha_t * phi_2 * (denoised - denoised_1) / (h_1 / h)
            x = x + noise(t[i], t[i + 1]) * t[i + 1] * math.sqrt(-math.expm1(-2 * h * eta))
        denoised_1, denoised_2, h_1, h_2 = denoised, denoised_1, h, h_1
    return x


def comfy_seeds_3_const(model, x, t, noise, percent_to_sigma, eta=1.0, r_1=1 / 3, r_2=2 / 3):
    t = _offset(t, percent_to_sigma)
    phi_1, phi_2 = math.expm1, lambda h: (math.expm1(h) - h) / h  # ei_h_phi_1, ei_h_phi_2
    for i in range(len(t) - 1):
        denoised = model(x, t[i] * x.new_ones([x.shape[0]]))
        if t[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(t[i]), _lam(t[i + 1])
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_s1, lam_s2 = lam_s + r_1 * h, lam_s + r_2 * h
        t_s1, t_s2 = _t_of(lam_s1), _t_of(lam_s2)
        alpha_s1, alpha_s2, alpha_t = t_s1 * math.exp(lam_s1), t_s2 * math.exp(lam_s2), t[i + 1] * math.exp(lam_t)
        x_2 = t_s1 / t[i] * math.exp(-r_1 * h * eta) * x - alpha_s1 * phi_1(-r_1 * h_eta) * denoised
        sde_noise = math.sqrt(-math.expm1(-2 * r_1 * h * eta)) * noise(t[i], t_s1)
        x_2 = x_2 + sde_noise * t_s1
        denoised_2 = model(x_2, t_s1 * x.new_ones([x.shape[0]]))
        a3_2 = r_2 / r_1 * phi_2(-r_2 * h_eta)
        a3_1 = phi_1(-r_2 * h_eta) - a3_2
        x_3 = t_s2 / t[i] * math.exp(-r_2 * h * eta) * x - alpha_s2 * (a3_1 * denoised + a3_2 * denoised_2)
        segment = (r_1 - r_2) * h * eta
        sde_noise = sde_noise * math.exp(segment) + math.sqrt(-math.expm1(2 * segment)) * noise(t_s1, t_s2)
        x_3 = x_3 + sde_noise * t_s2
        denoised_3 = model(x_3, t_s2 * x.new_ones([x.shape[0]]))
        b3 = phi_2(-h_eta) / r_2
        b1 = phi_1(-h_eta) - b3
        x = t[i + 1] / t[i] * math.exp(-h * eta) * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        segment = (r_2 - 1) * h * eta
        sde_noise = sde_noise * math.exp(segment) + math.sqrt(-math.expm1(2 * segment)) * noise(t_s2, t[i + 1])
        x = x + sde_noise * t[i + 1]
    return x


FLOW_NOISY_REFERENCES = {"lcm": (comfy_lcm_const, "default"), "seeds_3": (comfy_seeds_3_const, "default"),
                         "dpmpp_sde": (comfy_dpmpp_sde_const, "tree"),
                         "dpmpp_3m_sde": (comfy_dpmpp_3m_sde_const, "tree")}


@pytest.mark.parametrize("sampling, start", [(ModelFlux(), 1.0), (ModelFlux(), 0.95), (Flux(), 1.0)],
                         ids=["const-from-1", "const-from-0.95", "flux-from-1"])
@pytest.mark.parametrize("name", sorted(FLOW_NOISY_REFERENCES))
def test_comfyui_noisy_names_on_a_flow_model_match_comfyuis_functions(name, sampling, start):
    """comfyui:lcm, seeds_3, dpmpp_sde, dpmpp_3m_sde on a flow model, one image, with ComfyUI's noise (its
    default_noise_sampler; its Brownian tree over the given t, asked at the t it steps to), against ComfyUI's
    functions transcribed above: the same image to float64 rounding (they were documented as not compared)."""
    from samplers.core.brownian import BrownianTreeNoiseSampler

    t = torch.tensor([start, 0.93, 0.85, 0.75, 0.6, 0.45, 0.3, 0.18, 0.08, 0.0], dtype=torch.float64)
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(f"comfyui:{name}")), sampling, flux_nonlinear, t, seed=7,
                        batch=1)
    x = start * GM.noise(1, seed=3).double()  # CONST noise scaling of an empty latent
    ref_fn, kind = FLOW_NOISY_REFERENCES[name]
    if kind == "default":
        noise = _comfy_default_noise(x, 7)
    else:  # asked with tensors, as ComfyUI asks it (its sigmas' elements)
        tree = BrownianTreeNoiseSampler(x, t[t > 0].min(), t.max(), seed=7, cpu=True)

        def noise(a, b):
            return tree(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
    pts = getattr(sampling, "percent_to_sigma", lambda p: 1.0 - p)
    ref = ref_fn(flux_nonlinear, x, t.tolist(), noise, pts)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_comfyui_sa_solver_on_a_flow_model_takes_comfyuis_sde_interval():
    """ComfyUI's sa_solver noises where percent_to_sigma(0.2) ≥ t ≥ percent_to_sigma(0.8): t in [0.2, 0.8] on
    CONST, σ = t/(1 − t) in [0.25, 4] where the adapter runs it."""
    seen = {}
    real = comfyui._in_flow_coordinates

    def spy(fn, model, x, sigmas, extra_args, callback, disable, options):
        seen.update(options)
        return real(fn, model, x, sigmas, extra_args, callback, disable, options)

    import unittest.mock
    with unittest.mock.patch.object(comfyui, "_in_flow_coordinates", spy):
        comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:sa_solver")), ModelFlux(), FLOW_X0, FLOW_SIGMAS)
    assert seen["sde_interval"] == pytest.approx((0.8 / 0.2, 0.2 / 0.8))


class EDM(EPS):
    """ComfyUI's ModelSamplingContinuousEDM (Playground v2.5's range): percent_to_sigma log-linear in σ."""
    sigma_max, sigma_min = 80.0, 0.002

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return math.exp(lo + (1 - percent) * (hi - lo))


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_comfyui_sa_solver_takes_the_models_own_sde_interval_on_every_model(name):
    """On an EDM model ComfyUI's window is percent_to_sigma(0.2) ≥ σ ≥ percent_to_sigma(0.8) = (10.9, 0.0147), not SD
    1.x's (5.0924, 0.5712), which the registry name keeps."""
    sampling = EDM()
    sigmas = samplers.get_sigmas("karras", 8, sigma_min=0.002, sigma_max=80.0)
    out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(f"comfyui:{name}")), sampling, GM.denoiser, sigmas)
    x = GM.noise(2, seed=3) * math.sqrt(1 + 80.0 ** 2)
    window = (sampling.percent_to_sigma(0.2), sampling.percent_to_sigma(0.8))
    ref = samplers.sample(name, GM.denoiser, x, sigmas, disable=True, seed=7, sde_interval=window,
                          noise_sampler="comfyui", lower_order_final="comfyui")
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    registry, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(name)), sampling, GM.denoiser, sigmas)
    assert not torch.allclose(registry, ref, atol=1e-3)


def test_a_model_that_scales_its_sampler_noise_is_refused_for_samplers_that_draw_noise():
    """ComfyUI multiplies s_noise by model_sampling.noise_scale (video models); not reproduced, so refused before any
    model call. A deterministic sampler runs."""
    sampling = ModelFlux()
    sampling.noise_scale = 0.7
    with pytest.raises(samplers.Unavailable, match="noise_scale is 0.7"):
        comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:dpmpp_2m_sde")), sampling, flux_nonlinear, FLOW_SIGMAS)
    for name, options in (("comfyui:euler", {}), ("comfyui:exp_heun_2_x0", {}), ("comfyui:dpmpp_2m_sde", {"eta": 0.0})):
        out, guider, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(name, **options)), sampling, flux_nonlinear,
                                    FLOW_SIGMAS)  # no fresh noise to scale: runs
        assert torch.isfinite(out).all() and guider.calls


def scaled(sampling, noise_scale=0.5):
    """A model sampling whose sampling_settings carry a noise_scale (ComfyUI's video models)."""
    sampling.noise_scale = noise_scale
    return sampling


@pytest.mark.parametrize("name, options, sampling", [
    # on every model: the functions that set s_noise *= noise_scale
    *[(f"comfyui:{key}", {}, cls) for key in ("dpmpp_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "res_multistep_ancestral",
                                              "er_sde", "seeds_2", "seeds_3", "sa_solver", "exp_heun_2_x0_sde")
      for cls in (EPS, ModelFlux)],
    # on flow models: the *_RF ancestral rule, and lcm's CONST.noise_scaling
    ("comfyui:euler_ancestral", {}, ModelFlux), ("comfyui:lcm", {}, ModelFlux),
    # registry names (no ComfyUI function): an ancestral / SDE draw
    ("euler_ancestral", {}, ModelFlux), ("ddpm", {}, EPS)])
def test_a_model_that_scales_its_noise_refuses_the_comfyui_functions_that_scale_it(name, options, sampling):
    sampling = scaled(sampling())
    denoise, sigmas = (FLOW_X0, FLOW_SIGMAS) if isinstance(sampling, CONST) else (GM.denoiser, EPS_SIGMAS)
    what = f"ComfyUI's {name.split(':')[1]} multiplies its fresh noise" if ":" in name else f"{name!r} (this library"
    with pytest.raises(samplers.Unavailable, match=rf"noise_scale is 0.5 \(ComfyUI's video models\): .*"
                                                   rf"{re.escape(what)}.*not reproduce"):
        comfy_run(KSAMPLER(comfyui.ksampler_function(name, **options)), sampling, denoise, sigmas)


@pytest.mark.parametrize("name, options, sampling", [
    ("comfyui:ddpm", {}, ModelFlux), ("comfyui:ddpm", {}, EPS),  # generic_step_sampler never reads it
    ("comfyui:dpm_adaptive", {"eta": 0.5}, ModelFlux), ("comfyui:dpm_adaptive", {"eta": 0.5}, EPS),  # DPMSolver
    ("comfyui:euler_ancestral", {}, EPS), ("comfyui:dpm_2_ancestral", {}, EPS),  # not their *_RF rule
    ("comfyui:dpmpp_2s_ancestral", {}, EPS), ("comfyui:lcm", {}, EPS),
    ("comfyui:res_multistep", {}, ModelFlux),  # η = 0: nothing drawn to scale
    ("comfyui:dpmpp_2m_sde", {"eta": 0.0}, ModelFlux), ("comfyui:er_sde", {"s_noise": 0.0}, ModelFlux)])
def test_a_model_that_scales_its_noise_runs_comfyuis_functions_that_never_read_it(name, options, sampling):
    """ComfyUI runs these unscaled on such a model: their image is the one on the same model without noise_scale
    (comfyui:ddpm was refused, saying ComfyUI scales its noise, which its ddpm does not)."""
    denoise, sigmas = (FLOW_X0, FLOW_SIGMAS) if sampling is ModelFlux else (GM.denoiser, EPS_SIGMAS)
    fn = comfyui.ksampler_function(name, **options)
    out, guider, *_ = comfy_run(KSAMPLER(fn), scaled(sampling()), denoise, sigmas)
    plain, *_ = comfy_run(KSAMPLER(fn), sampling(), denoise, sigmas)
    assert guider.calls and torch.equal(out, plain)


def test_the_noise_scale_tables_name_comfyui_samplers():
    tables = samplers.core.labels.COMFYUI_NOISE_SCALED | samplers.core.labels.COMFYUI_NOISE_SCALED_ON_FLOW
    assert tables <= set(samplers.core.labels.COMFYUI)
    assert not samplers.core.labels.COMFYUI_NOISE_SCALED & samplers.core.labels.COMFYUI_NOISE_SCALED_ON_FLOW


def test_comfyui_ancestral_names_without_their_rf_rule_are_refused_on_flow_models():
    for name in ("comfyui:dpm_2_ancestral", "comfyui:dpmpp_2s_ancestral"):
        with pytest.raises(samplers.Unavailable, match="_RF"):
            comfy_run(KSAMPLER(comfyui.ksampler_function(name)), ModelFlux(), FLOW_X0, FLOW_SIGMAS)
        comfy_run(KSAMPLER(comfyui.ksampler_function(name)), EPS(), GM.denoiser, EPS_SIGMAS)


def test_every_comfyui_name_has_a_flow_model_rule():
    """Each ComfyUI label is classified: raw rule, half-log-SNR, switched rule, refused, or (lcm) σ = t/(1 − t)."""
    tables = (samplers.core.labels.COMFYUI_FLOW_RAW, samplers.core.labels.COMFYUI_FLOW_SNR,
              set(samplers.core.labels.COMFYUI_FLOW), set(samplers.core.labels.COMFYUI_FLOW_REFUSED))
    for name in samplers.core.labels.COMFYUI:
        assert sum(name in table for table in tables) == (0 if name == "lcm" else 1), name


@pytest.mark.parametrize("sampling, denoise, sigmas", [(EPS(), GM.denoiser, EPS_SIGMAS), (ModelFlux(), FLOW_X0, FLOW_SIGMAS)],
                         ids=["eps", "flow"])
@pytest.mark.parametrize("name, options", [("comfyui:dpm_adaptive", {}), ("dpm_adaptive", {}), ("comfyui:dpm_fast", {}),
                                           ("dpm_fast", {}), ("torchdiffeq.rk4", {}), ("torchdiffeq.dopri5", {}),
                                           ("euler", {"s_churn": 1.0}), ("heun", {"s_churn": 1.0})])
def test_every_callback_reaches_comfyui_with_the_state_its_report_stands_for(name, options, sampling, denoise, sigmas):
    """The per-step report (k-diffusion's: the state the step's model call saw, at σ̂ after churn) for the samplers
    that report per step; their own report for dpm_fast / dpm_adaptive (per call, per attempt) and the torchdiffeq /
    torchsde adapters. With ComfyUI's progress bar on, dpm_adaptive's attempt count ran past the schedule (an
    IndexError), torchdiffeq on a flow model got x = None (a TypeError), and churn on a flow model reported x
    scaled at σ_i instead of σ̂."""
    seen = []
    guider = Guider(sampling, denoise)
    x = GM.noise(1, seed=3).double() * (1.0 if isinstance(sampling, ModelFlux) else math.sqrt(1 + 14.6 ** 2))
    fn = comfyui.ksampler_function(name, **options)
    fn(KSamplerX0Inpaint(guider, sigmas), x, sigmas, extra_args={"model_options": {}, "seed": 7, "denoise_mask": None},
       callback=seen.append, disable=False)
    assert seen and all(isinstance(d["x"], torch.Tensor) and d["x"].shape == x.shape for d in seen)
    if name in ("euler", "heun", "dpm_fast"):  # the state the (first) model call saw, in ComfyUI's coordinates
        for d in seen:
            call = next(c for c in guider.calls if float(c[1][0]) == pytest.approx(float(d["sigma_hat"]), rel=1e-12))
            torch.testing.assert_close(d["x"], call[0], rtol=1e-12, atol=1e-12)


def test_a_labels_noise_stays_when_the_caller_passes_noise_sampler_none():
    """None means "the default noise" in k-diffusion, A1111 and ComfyUI: for a label, its tool's (the Brownian tree,
    ComfyUI's generator), not this library's seeded noise, which None gave since a caller's noise_sampler replaces
    the label's."""
    x = GM.noise(2, seed=3).double() * 14.6
    for name in ("DPM++ 2M SDE", "comfyui:euler_ancestral"):
        own = samplers.sample(name, GM.denoiser, x, EPS_SIGMAS, seed=5, disable=True)
        given = samplers.sample(name, GM.denoiser, x, EPS_SIGMAS, seed=5, disable=True, noise_sampler=None)
        assert torch.equal(own, given)
        seeded = samplers.sample(name, GM.denoiser, x, EPS_SIGMAS, seed=5, disable=True, noise_sampler="seeded")
        assert not torch.equal(own, seeded)


# ----------------------------------------------------------------------------------------------------
# session 21's audit: what ComfyUI runs that the adapter refused, and a name it cannot reproduce with a mask


@pytest.mark.parametrize("name", ["euler", "comfyui:dpmpp_2m_sde", "comfyui:euler_ancestral", "dpmpp_2m"])
@pytest.mark.parametrize("sampling, one", [(EPS(), EPS_SIGMAS[:1]), (EPS(), EPS_SIGMAS[-1:]),
                                           (CONST(), FLOW_SIGMAS[:1]), (CONST(), FLOW_SIGMAS[-1:])])
def test_a_one_value_sigmas_returns_the_input_as_comfyuis_samplers_do(name, sampling, one):
    # SplitSigmas at step 0 or at the last step gives one σ: ComfyUI's samplers run no step and return their input
    # (KSAMPLER's scaled noise); the adapter refused it with a fix (get_sigmas) no ComfyUI user can apply
    guider = Guider(sampling, GM.denoiser)
    x = GM.noise(2, seed=3)
    fn = comfyui.ksampler_function(name)
    out = fn(KSamplerX0Inpaint(guider, one), x, one, extra_args={"model_options": {}, "seed": 7, "denoise_mask": None})
    assert out is x and not guider.calls


def test_a_one_value_sigmas_still_checks_the_call_time_options():
    # ComfyUI's sample_euler(..., bogus=1) is a TypeError with one σ too: KSAMPLER's extra_options are not skipped
    fn = comfyui.ksampler_function("euler")
    x = GM.noise(1, seed=3)
    guider = Guider(EPS(), GM.denoiser)
    with pytest.raises(samplers.InvalidOption, match="bogus"):
        fn(KSamplerX0Inpaint(guider, EPS_SIGMAS[:1]), x, EPS_SIGMAS[:1], extra_args={"seed": 7}, bogus=1)
    with pytest.raises(samplers.InvalidOption, match="s_noise"):
        fn(KSamplerX0Inpaint(guider, EPS_SIGMAS[:1]), x, EPS_SIGMAS[:1], extra_args={"seed": 7},
           s_noise=float("nan"))


# ----------------------------------------------------------------------------------------------------
# An audit of 2026-12-06: flow times outside [0, 1], A1111's schedule-rebuilding Restart, torchdiffeq's nested
# options at build time, the step from t = 1 in info["nfe"]


@pytest.mark.parametrize("given, bad", [([1.5, 0.5, 0.2, 0.0], "sigmas[0] = 1.5"),
                                        ([14.6, 9.3, 0.5, 0.0], "sigmas[0] = 14.6"),
                                        ([1.0, 0.5, -0.1], "sigmas[2] = -0.1")])
def test_flow_sigmas_outside_0_1_are_refused_naming_the_t_given(given, bad):
    sampler = KSAMPLER(comfyui.ksampler_function("euler"))
    guider = Guider(CONST(), FLOW_X0)
    with pytest.raises(samplers.InvalidInput, match=rf"{re.escape(bad)}.*flow times t in \[0, 1\]"):
        sampler.sample(guider, torch.tensor(given, dtype=torch.float64), {"model_options": {}, "seed": 1}, None,
                       GM.noise(2, seed=3), torch.zeros(2, *GM.shape), None, True)
    assert not guider.calls


# ComfyUI names on a flow model, every path: the raw rule (euler, lms, ddpm), the half-log-SNR one after ComfyUI's
# first-t offset (dpmpp_2m_sde, seeds_2), the switched one (euler_ancestral → its RF rule). The raw names ran the
# network at t = 14.6; the half-log-SNR ones turned a first 14.6 into 0.9999 silently, or blamed sigmas[1] = inf
# (the offset's σ of the caller's 1.0) for a sigmas[0] = 14.6.
FLOW_NAMES_EVERY_PATH = ["comfyui:euler", "comfyui:lms", "comfyui:ddpm", "comfyui:dpmpp_2m_sde", "comfyui:seeds_2",
                         "comfyui:euler_ancestral"]


@pytest.mark.parametrize("name", FLOW_NAMES_EVERY_PATH)
@pytest.mark.parametrize("given, bad", [([14.6, 9.3, 0.5, 0.0], "sigmas[0] = 14.6"),
                                        ([1.5, 0.5, 0.2, 0.0], "sigmas[0] = 1.5"),
                                        ([14.6, 0.5, 0.2, 0.0], "sigmas[0] = 14.6"),
                                        ([14.6, 1.0, 0.2, 0.0], "sigmas[0] = 14.6"),
                                        ([1.0, 0.5, -0.1], "sigmas[2] = -0.1"),
                                        ([1.0, math.nan, 0.0], "sigmas[1] = nan")])
def test_comfyui_names_refuse_flow_sigmas_outside_0_1_naming_the_t_given(name, given, bad):
    sampler = KSAMPLER(comfyui.ksampler_function(name))
    guider = Guider(CONST(), FLOW_X0)
    with pytest.raises(samplers.InvalidInput, match=rf"{re.escape(bad)}.*flow times t in \[0, 1\]"):
        sampler.sample(guider, torch.tensor(given, dtype=torch.float64), {"model_options": {}, "seed": 1}, None,
                       GM.noise(1, seed=3), torch.zeros(1, *GM.shape), None, True)
    assert not guider.calls


@pytest.mark.parametrize("name", ["euler", *FLOW_NAMES_EVERY_PATH])
def test_a_first_sigma_of_inf_on_a_flow_model_is_refused_before_any_model_call(name):
    # called directly (KSAMPLER's CONST noise scaling has no x_t at t = inf): comfyui:euler ran two model calls and
    # then raised NonFiniteError
    guider = Guider(CONST(), FLOW_X0)
    fn = comfyui.ksampler_function(name)
    sigmas = torch.tensor([math.inf, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(samplers.InvalidInput, match=r"sigmas\[0\] = inf.*flow times t in \[0, 1\]"):
        fn(KSamplerX0Inpaint(guider, sigmas), GM.noise(1, seed=3), sigmas, extra_args={"seed": 1}, disable=True)
    assert not guider.calls


@pytest.mark.parametrize("name", FLOW_NAMES_EVERY_PATH)
def test_comfyuis_own_first_t_of_1_still_runs_on_every_path(name):
    # t = 1 is in range: the raw names step from σ = 1, the half-log-SNR ones from ComfyUI's offset of it
    out, guider, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function(name)), CONST(), FLOW_X0, FLOW_SIGMAS, batch=1)
    assert torch.isfinite(out).all() and guider.calls
    first = float(guider.calls[0][1][0])
    assert first == (1.0 if name in ("comfyui:euler", "comfyui:lms", "comfyui:ddpm", "comfyui:euler_ancestral")
                     else pytest.approx(1 - 1e-4))


def test_a1111_restart_which_rebuilds_its_schedule_is_refused_in_comfyui():
    with pytest.raises(samplers.InvalidOption, match="'Restart' runs restart='a1111'.*use 'restart'"):
        comfyui.ksampler_function("Restart")
    comfyui.ksampler_function("restart")  # the registry's, on the SIGMAS as given


def test_torchdiffeqs_nested_options_are_checked_when_the_sampler_is_built():
    pytest.importorskip("torchdiffeq")
    for method, options, match in (("dopri5", {"bogus": 1}, "options has no key 'bogus'"),
                                   ("dopri5", {"safety": 5}, r"safety.*\(0, 1\]"),
                                   ("explicit_adams", {"max_order": 2}, r"max_order'\]=2 must be an integer in")):
        with pytest.raises(samplers.InvalidOption, match=match):
            comfyui.ksampler_function(f"torchdiffeq.{method}", options=options)
    comfyui.ksampler_function("torchdiffeq.dopri5", options={"safety": 0.8, "step_t": [0.5]})  # its range: at run


def test_info_nfe_counts_the_step_from_t_1():
    pytest.importorskip("torchdiffeq")
    flow = RectifiedFlow(shift=3.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    calls = []

    def counted(x, sigma, **kw):
        calls.append(sigma)
        return model(x, sigma, **kw)

    for method, sigmas in (("torchdiffeq.euler", samplers.get_sigmas("flow", 6, native=flow)),
                           ("torchdiffeq.rk4", samplers.get_sigmas("flow", 3, native=flow)),
                           ("dpm_adaptive", samplers.get_sigmas("flow", 4, native=flow)),
                           ("torchdiffeq.euler", torch.tensor([math.inf, 0.0]))):
        calls.clear()
        info = {}
        samplers.sample(method, counted, samplers.initial_latent(GM.noise(2, seed=0), sigmas), sigmas, info=info,
                        disable=True)
        assert info["nfe"] == len(calls), (method, len(sigmas), info, len(calls))


# ----------------------------------------------------------------------------------------------------
# An audit of 2026-12-07: a 2-D SIGMAS, a noise_sampler that is no noise sampler, options the run never reads,
# ComfyUI's ddim


def test_a_two_dimensional_sigmas_is_refused_not_taken_for_one_sigma():
    # a [1, N] SIGMAS has len() 1: it was returned unchanged as if it were one σ (no step, no model call)
    guider = Guider(EPS(), GM.denoiser)
    x = GM.noise(2, seed=3)
    fn = comfyui.ksampler_function("euler")
    for bad in (EPS_SIGMAS[None], EPS_SIGMAS[:, None], EPS_SIGMAS[0]):
        with pytest.raises(samplers.InvalidInput, match=r"sigmas must be 1-D .*got shape"):
            fn(KSamplerX0Inpaint(guider, EPS_SIGMAS), x, bad, extra_args={"seed": 7})
    assert not guider.calls


def test_a_noise_sampler_that_is_not_one_is_named_at_build_and_at_call_time():
    # it was refused only at the run, as a clash with the seed ComfyUI passes ("pass either noise_sampler or seed")
    with pytest.raises(samplers.InvalidType, match="noise_sampler must be callable"):
        comfyui.ksampler_function("euler_ancestral", noise_sampler=42)
    with pytest.raises(samplers.InvalidOption, match="unknown noise_sampler 'brownain'"):
        comfyui.ksampler_function("euler_ancestral", noise_sampler="brownain")
    guider = Guider(EPS(), GM.denoiser)
    fn = comfyui.ksampler_function("euler_ancestral")
    with pytest.raises(samplers.InvalidType, match="noise_sampler must be callable"):
        fn(KSamplerX0Inpaint(guider, EPS_SIGMAS), GM.noise(2, seed=3), EPS_SIGMAS, extra_args={"seed": 7},
           noise_sampler=42)
    assert not guider.calls


@pytest.mark.parametrize("name, options", [("euler", {"s_noise": 1.7}), ("euler", {"noise_sampler": "brownian"}),
                                           ("euler_ancestral", {"eta": 0.0, "s_noise": 1.7}),
                                           ("dpmpp_2m_sde", {"eta": 0.0, "noise_sampler": "brownian_tree"})])
def test_noise_options_the_run_never_reads_are_refused_as_the_pipeline_refuses_them(name, options):
    # the node's JSON ({"s_noise": 1.7} on euler) gave the image made without it, where the CLI refuses the option
    with pytest.raises(samplers.InvalidOption, match="is not read: this run draws no noise"):
        comfyui.ksampler_function(name, **options)
    fn = comfyui.ksampler_function(name, **{k: v for k, v in options.items() if k == "eta"})
    guider = Guider(EPS(), GM.denoiser)
    with pytest.raises(samplers.InvalidOption, match="is not read: this run draws no noise"):
        fn(KSamplerX0Inpaint(guider, EPS_SIGMAS), GM.noise(2, seed=3), EPS_SIGMAS, extra_args={"seed": 7},
           **{k: v for k, v in options.items() if k != "eta"})
    assert not guider.calls
    # at its default, or where the run draws, it is taken (A1111 and ComfyUI's nodes send s_noise = 1 everywhere)
    comfyui.ksampler_function(name, s_noise=1.0)
    comfyui.ksampler_function("euler", s_churn=1.0, s_noise=1.003)


def test_comfyuis_ddim_is_its_euler_with_euler_options():
    # ComfyUI builds ddim as KSAMPLER(sample_euler, ...): no eta (a TypeError there), churn taken
    with pytest.raises(samplers.InvalidOption, match="no option 'eta'"):
        comfyui.ksampler_function("comfyui:ddim", eta=0.7)
    for options in ({}, {"s_churn": 1.0, "s_tmin": 0.1, "s_tmax": 10.0}):
        out, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:ddim", **options)), EPS(), GM.denoiser,
                            EPS_SIGMAS)
        ref, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("euler", **options)), EPS(), GM.denoiser, EPS_SIGMAS)
        assert torch.equal(out, ref)


def test_float16_latents_near_t_1_on_a_flow_model_are_not_overflowed_by_the_adapter():
    """The adapter's x/(1 − t₀) (t₀ = 0.99999: × 1e5) was computed in float16, so the start overflowed to inf and the
    error blamed the caller's latent; it is computed in the float32 state, the model still called in float16."""
    seen = []

    sampling = ModelFlux()

    def model(x_t, t, **extra_args):  # ComfyUI's model_k on a flow model; its own arithmetic stays in range
        seen.append(x_t.dtype)
        return (x_t.float() * 0.5).to(x_t.dtype)
    model.inner_model = types.SimpleNamespace(
        model_patcher=types.SimpleNamespace(get_model_object=lambda name: {"model_sampling": sampling}[name]))
    x = GM.noise(2, seed=3).half() * 3
    out = comfyui.ksampler_function("euler")(model, x, torch.tensor([0.99999, 0.5, 0.0]), extra_args={"seed": 1},
                                             disable=True)
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
    assert seen and set(seen) == {torch.float16}


def test_euler_ancestral_takes_eta_above_1_on_an_eps_model_and_refuses_it_on_a_flow_model_before_any_call():
    """ComfyUI's sample_euler_ancestral takes any η ≥ 0 on an eps model (k-diffusion's split caps σ_up at σ_next); on a
    flow model it runs sample_euler_ancestral_RF, whose split in flow time needs η ≤ 1. The flow rule's bound was
    checked when the function was built, so an eps model's η = 1.5 was refused too: now it is checked where the model
    is known to be a flow model (when built with coordinates="flow", else at the call), before any model call."""
    def eps_model(x, sigma):
        return GM.denoiser(x, sigma)

    out, guider, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:euler_ancestral", eta=1.5)), EPS(),
                                eps_model, EPS_SIGMAS)
    # (its rule at η = 3 is k-diffusion's: tests/test_kdiffusion_parity.py)
    one, *_ = comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:euler_ancestral")), EPS(), eps_model, EPS_SIGMAS)
    assert torch.isfinite(out).all() and not torch.allclose(out, one) and len(guider.calls) == len(EPS_SIGMAS) - 1
    with pytest.raises(samplers.InvalidOption, match="eta must be <= 1"):
        comfy_run(KSAMPLER(comfyui.ksampler_function("comfyui:euler_ancestral", eta=1.5)), ModelFlux(),
                  flux_nonlinear, FLOW_SIGMAS)
    with pytest.raises(samplers.InvalidOption, match="eta must be <= 1"):
        comfyui.ksampler_function("comfyui:euler_ancestral", coordinates="flow", eta=1.5)

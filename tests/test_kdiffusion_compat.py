"""k-diffusion-style callers: `sample_<name>` lookup, A1111 / ComfyUI names, and their model wrappers.

The wrapper below is written the way k-diffusion's ``DiscreteEpsDDPMDenoiser`` and A1111's ``CFGDenoiser``
are: ``model(x, sigma, **extra_args)`` returns the denoised image; the network sees ``x·c_in`` and a
fractional timestep found by interpolating log σ in the training table.
"""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.core import registry
from samplers.interop import kdiffusion
from samplers.core.native import VPDiscrete
from samplers.problems import GaussianMixture

VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
GM = GaussianMixture.default(shape=(4, 4, 4), components=3, seed=6)
EPS = GM.as_model("eps", VP)


class DiscreteEpsDDPMDenoiser(torch.nn.Module):
    """k-diffusion's discrete eps wrapper: D(x, σ) = x − σ·eps(x·c_in, t(σ)), c_in = 1/√(σ² + 1)."""

    def __init__(self, model, alphas_cumprod):
        super().__init__()
        self.inner_model = model
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def forward(self, input, sigma, **kwargs):
        view = (-1,) + (1,) * (input.ndim - 1)
        c_out, c_in = -sigma.reshape(view), (1 / (sigma**2 + 1) ** 0.5).reshape(view)
        eps = self.inner_model(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return input + eps * c_out


class CFGDenoiser(torch.nn.Module):
    """A1111-style guidance wrapper: extra_args = {cond, uncond, cond_scale}, one batched call."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        self.seen = []

    def forward(self, x, sigma, uncond, cond, cond_scale):
        self.seen.append((uncond, cond, cond_scale))
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        out = self.inner_model(x_in, sigma_in, cond=torch.cat([uncond, cond]))
        uncond_out, cond_out = out.chunk(2)
        return uncond_out + (cond_out - uncond_out) * cond_scale


def gm_eps(x_t, t, cond):
    # a conditioned eps model: the mixture's eps plus a conditioning-dependent nudge
    t64 = t.to(torch.float64)
    return (EPS(x_t.double(), t64) + 0.1 * cond.double().reshape(-1, 1, 1, 1) * x_t.double()).float()


COMFYUI_FUNCTIONS = ("sample_ipndm", "sample_ipndm_v", "sample_deis")


def test_every_registered_sampler_is_a_k_diffusion_attribute():
    names = kdiffusion.sampler_names()
    assert names == ["sample_" + n for n in samplers.available()]
    for attr in names:
        assert hasattr(kdiffusion, attr) and attr in dir(kdiffusion)
        if attr in kdiffusion.K_DIFFUSION_NAMES:  # k-diffusion's own: its signature and noise convention
            assert getattr(kdiffusion, attr).__module__ == kdiffusion.__name__
        elif attr in COMFYUI_FUNCTIONS:  # ComfyUI's own functions (k-diffusion has none): its rules, tested below
            continue
        else:  # every other registry sampler, as the registry has it
            assert getattr(kdiffusion, attr) is samplers.get(attr[len("sample_"):])
    assert all(hasattr(kdiffusion, name) for name in kdiffusion.K_DIFFUSION_NAMES)
    assert not hasattr(kdiffusion, "sample_no_such_sampler")


def test_samplers_registered_later_appear():
    @registry.register("zz_test_late_sampler", kind="ode", order=1, nfe_per_step=1)
    def late(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    try:
        assert kdiffusion.sample_zz_test_late_sampler is samplers.get("zz_test_late_sampler")
        assert "sample_zz_test_late_sampler" in kdiffusion.sampler_names()
    finally:  # leave the global registry as it was
        registry.SAMPLERS.remove("zz_test_late_sampler")
    assert not hasattr(kdiffusion, "sample_zz_test_late_sampler")


def test_labels_resolve_through_the_one_resolver():
    for spec_name in samplers.available():
        for alias in samplers.info(spec_name).aliases:
            assert kdiffusion.get_sampler(alias) is samplers.get(spec_name)
    assert kdiffusion.get_sampler("Euler a").__wrapped__ is samplers.get("euler_ancestral")  # with A1111's noise
    assert kdiffusion.get_sampler("DPM++ 2M SDE Heun").__wrapped__ is samplers.get("dpmpp_2m_sde")
    assert kdiffusion.default_schedule("DPM++ 2M") == "a1111:Karras"
    with pytest.raises(samplers.UnknownNameError, match="Closest"):
        kdiffusion.get_sampler("Eulr a")


# (the attribute sample_dpmpp_2m_sde_heun is ComfyUI's function, with its own signature: test_kdiffusion_parity.py)
@pytest.mark.parametrize("label", ["DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun", "comfyui:euler_ancestral"])
def test_a_label_bound_samplers_signature_shows_the_labels_values(label):
    """Code that reads a sampler's signature (UIs listing options and their defaults) sees what the label runs: the
    bound sampler's signature followed __wrapped__ to the plain sampler's (solver_type='midpoint' for a sampler that
    runs Heun and refuses 'midpoint')."""
    import inspect

    fn = getattr(kdiffusion, label) if label.startswith("sample_") else kdiffusion.get_sampler(label)
    params = inspect.signature(fn).parameters
    for key, value in fn.label.options.items():
        assert params[key].default == value
    assert list(params) == list(inspect.signature(fn.__wrapped__).parameters)  # the sampler's own parameters


def wrapper():
    return CFGDenoiser(DiscreteEpsDDPMDenoiser(gm_eps, VP.alphas_cumprod.float()))


@pytest.mark.parametrize("name", [n for n in samplers.available() if not samplers.info(n).host_sync])
def test_k_diffusion_wrapper_call_equals_registry_denoiser(name):
    """The A1111 call shape (sigmas as keyword, extra_args, callback) on every registry sampler == our own wrapping.
    (k-diffusion's own ``sample_*`` names, with its noise convention, are compared with k-diffusion itself in
    test_kdiffusion_parity.py.)"""
    sigmas = samplers.get_sigmas("karras", 4, native=VP).float()
    cond, uncond = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])
    x = GM.noise(2, seed=3, dtype=torch.float32) * sigmas[0]
    model = wrapper()
    seen = []
    opts = {"seed": 7} if "seed" in samplers.info(name).options else {}
    out = kdiffusion.get_sampler(name)(model, x, sigmas=sigmas,
                                                 extra_args={"cond": cond, "uncond": uncond, "cond_scale": 2.5},
                                                 disable=True, callback=seen.append, **opts)
    assert all(u is uncond and c is cond and s == 2.5 for u, c, s in model.seen), "extra_args must pass untouched"
    assert [d["i"] for d in seen] == list(range(4))
    assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen)

    def ours(x_t, t, cond):
        return gm_eps(x_t, t, cond)

    guided = samplers.to_denoiser(lambda x_t, t: _cfg(ours, x_t, t, cond, uncond, 2.5), "eps", VP)
    ref = samplers.sample(name, guided, x, sigmas, disable=True, **opts)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def _cfg(model, x_t, t, cond, uncond, scale):
    e_u, e_c = model(x_t, t, uncond), model(x_t, t, cond)
    return e_u + (e_c - e_u) * scale


# ----------------------------------------------------------------------------------------------------
# The same model through the diffusers path (a real tiny UNet in a StableDiffusionPipeline)


diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def unet_setup():
    pytest.importorskip("transformers")
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    diffusers.utils.logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8).eval()
    config = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    steps_offset=1).config
    g = torch.Generator().manual_seed(1)
    yield unet, config, StableDiffusionPipeline, torch.randn(1, 7, 32, generator=g), torch.randn(1, 7, 32, generator=g)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_k_diffusion_caller_equals_diffusers_pipeline(unet_setup, name):
    if name not in samplers.available():
        pytest.skip(f"{name} is not registered yet")
    from samplers.interop.diffusers_scheduler import SamplerScheduler
    unet, config, Pipeline, emb, neg = unet_setup
    ac = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012).alphas_cumprod.float()

    def unet_eps(x_t, t, cond):
        return unet(x_t, t, encoder_hidden_states=cond, return_dict=False)[0]

    model = CFGDenoiser(DiscreteEpsDDPMDenoiser(unet_eps, ac))
    sigmas = samplers.get_sigmas("karras", 4, native=VP).float()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    opts = {"seed": 11} if "seed" in samplers.info(name).options else {}
    with torch.no_grad():
        k_out = kdiffusion.get_sampler(name)(model, noise * sigmas[0], sigmas, disable=True,
                                                       extra_args={"cond": emb, "uncond": neg, "cond_scale": 3.0},
                                                       **opts)
        pipe = Pipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                        scheduler=SamplerScheduler.from_config(config, sampler=name, initial_noise="sigma",
                                                               seed=opts.get("seed")),
                        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        d_out = pipe(prompt_embeds=emb, negative_prompt_embeds=neg, sigmas=sigmas.tolist(), height=64, width=64,
                     latents=noise.clone(), output_type="latent", guidance_scale=3.0).images
    # x = σ0·noise in VE coordinates: the Euler config keeps VE latents (native ones would be scaled by √(1 + σ0²))
    scale = 1.0 if pipe.scheduler.latents == "ve" else math.sqrt(1 + float(sigmas[0]) ** 2)
    assert math.isclose(pipe.scheduler.init_noise_sigma * scale, float(sigmas[0]), rel_tol=1e-6)
    torch.testing.assert_close(d_out, k_out, rtol=1e-4, atol=1e-4)


def test_a_callback_keeps_the_models_checks_and_entry_points():
    """With a callback the drop-in wraps the model to record what each step saw; the wrapper must still be the model
    for the run's checks (an eps model refused at σ = inf before any call) and fast paths (denoise_at,
    prepare_times: the time inputs built before the loop)."""
    from samplers.core.native import RectifiedFlow

    calls, prepared = [], []

    def eps_net(x_t, t):
        calls.append(1)
        return torch.zeros_like(x_t)

    D = samplers.to_denoiser(eps_net, "eps", RectifiedFlow())
    sigmas = samplers.get_sigmas("flow", 4, native=RectifiedFlow())
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for callback in (None, lambda info: None):
        with pytest.raises(samplers.InvalidInput, match="cannot be evaluated at sigma = inf"):
            kdiffusion.sample_euler(D, x, sigmas, callback=callback, disable=True)
        assert not calls
    gm = GaussianMixture.default(shape=(2, 2, 2), components=3)
    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    D = samplers.to_denoiser(gm.as_model("eps", vp), "eps", vp)
    inner = D.prepare_times
    D.prepare_times = lambda *a: prepared.append(1) or inner(*a)
    sig = samplers.get_sigmas("karras", 4, native=vp)
    seen = []
    out = kdiffusion.sample_euler(D, gm.noise(2, seed=1) * float(sig[0]), sig, disable=True,
                                  callback=lambda info: seen.append(info["i"]))
    assert prepared == [1] and seen == [0, 1, 2, 3] and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", COMFYUI_FUNCTIONS)
def test_comfyuis_own_function_names_are_comfyuis_rules_here_too(name):
    """k-diffusion has no sample_ipndm / sample_ipndm_v / sample_deis: they are ComfyUI's functions, and the name
    means ComfyUI's rule wherever it is given (samplers.sample, this module's attribute)."""
    gm = GaussianMixture.default(shape=(2, 2, 2), components=3)
    sig = samplers.get_sigmas("karras", 8, sigma_min=0.03, sigma_max=14.6)
    x = gm.noise(2, seed=1) * float(sig[0])
    mine = getattr(kdiffusion, name)(gm.denoiser, x, sig, disable=True)
    torch.testing.assert_close(mine, samplers.sample(name, gm.denoiser, x, sig, disable=True), rtol=0, atol=0)
    comfy = {"sample_ipndm": "comfyui:ipndm", "sample_ipndm_v": "comfyui:ipndm_v", "sample_deis": "comfyui:deis"}
    torch.testing.assert_close(mine, samplers.sample(comfy[name], gm.denoiser, x, sig, disable=True), rtol=0, atol=0)


def _counting():
    calls = []

    def model(x, sigma, **extra_args):
        calls.append(1)
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
    return model, calls


@pytest.mark.parametrize("n", [0, -1, -3])
def test_dpm_fast_refuses_a_budget_below_one_call_before_any_model_call(n):
    """k-diffusion raises IndexError; the drop-in computed a sample from 2-3 calls (fast_orders made n <= 0 orders)."""
    model, calls = _counting()
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(samplers.InvalidOption, match=rf"n \(the model calls of DPM-Solver-fast\) must be an integer >= 1, got {n}"):
        kdiffusion.sample_dpm_fast(model, x, 0.03, 14.6, n, disable=True)
    with pytest.raises(samplers.InvalidOption, match="must be an integer >= 1"):
        kdiffusion.DPMSolver(model).dpm_solver_fast(x, torch.tensor(-math.log(14.6)), torch.tensor(-math.log(0.03)), n)
    assert calls == []


@pytest.mark.parametrize("name", ["sample_euler", "sample_lms", "sample_dpmpp_2m", "sample_euler_ancestral",
                                  "sample_dpm_2", "sample_heun"])
def test_a_two_dimensional_schedule_is_refused_not_a_silent_no_op(name):
    model, calls = _counting()
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigmas = kdiffusion.get_sigmas_karras(4, 0.03, 14.6)
    with pytest.raises(samplers.InvalidInput, match=r"sigmas must be 1-D, got shape \(1, 5\)"):
        getattr(kdiffusion, name)(model, x, sigmas[None], disable=True)
    assert calls == []


@pytest.mark.parametrize("name", ["sample_exp_heun_2_x0", "sample_exp_heun_2_x0_sde"])
def test_comfyui_names_without_comfyuis_function_here_are_no_attribute(name):
    """A ComfyUI-only name whose function this module does not have (its positional signature, its noise seeded by
    extra_args["seed"]) is refused as sample_euler_cfg_pp is, naming samplers.interop.comfyui (it returned the label,
    whose noise ignored extra_args["seed"])."""
    assert not hasattr(kdiffusion, name) and getattr(kdiffusion, name, None) is None
    with pytest.raises(samplers.Unavailable, match=r"samplers\.interop\.comfyui\.ksampler_function\('comfyui:exp_heun"):
        getattr(kdiffusion, name)


def test_comfyuis_tree_seed_is_checked_naming_extra_args():
    model, calls = _counting()
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigmas = kdiffusion.get_sigmas_karras(4, 0.03, 14.6)
    with pytest.raises(samplers.InvalidType, match=r"sample_dpmpp_2m_sde_gpu: extra_args\['seed'\] seeds its Brownian "
                                                   r"tree, as ComfyUI's does: seed must be"):
        kdiffusion.sample_dpmpp_2m_sde_gpu(model, x, sigmas, {"seed": 1.5}, disable=True)
    assert calls == []


NAN = float("nan")


@pytest.mark.parametrize("call", [
    lambda m, x: kdiffusion.sample_dpm_fast(m, x, NAN, 14.6, 6, disable=True),
    lambda m, x: kdiffusion.sample_dpm_adaptive(m, x, 0.03, torch.tensor(NAN), disable=True),
    lambda m, x: kdiffusion.log_likelihood(m, x, NAN, 14.6),
    lambda m, x: kdiffusion.get_sigmas_karras(6, NAN, 14.6),
    lambda m, x: kdiffusion.get_sigmas_exponential(6, 0.03, NAN),
    lambda m, x: kdiffusion.get_sigmas_polyexponential(6, torch.tensor(NAN), 14.6),
], ids=["dpm_fast", "dpm_adaptive", "log_likelihood", "karras", "exponential", "polyexponential"])
def test_a_nan_range_end_is_refused_with_the_drop_ins_fix(call):
    """sigma_min / sigma_max are required here: the registry's "leave sigma_min out for the model's own" was the fix."""
    model, calls = _counting()
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(samplers.InvalidInput, match=r"got nan \(NaN is no σ; sigma_m(in|ax) is a required argument "
                                                    r"here\): pass the (smallest non-zero sigma|model's σ range)") as e:
        call(model, x)
    assert "leave" not in str(e.value) and calls == []


@pytest.mark.parametrize("value", ["0.03", None])
def test_a_schedules_range_end_that_is_no_number_is_refused_by_name(value):
    """float(sigma_min) raised Python's bare ValueError / TypeError (no name, no fix)."""
    with pytest.raises(samplers.InvalidType, match=r"get_sigmas_karras: sigma_min must be a number \(a float, or a "
                                                   r"0-d tensor\), got .*: pass the model's σ range"):
        kdiffusion.get_sigmas_karras(6, value, 14.6)


@pytest.mark.parametrize("call, message", [
    (lambda: kdiffusion.get_sigmas_vp(5, beta_d=0.0, beta_min=0.0), r"has every σ 0 \(the VP noise rate"),
    (lambda: kdiffusion.get_sigmas_vp(5, beta_d=-1.0), r"beta_d must be >= 0 \(the VP noise rate"),
    (lambda: kdiffusion.get_sigmas_karras(5, 0.03, 14.6, rho=0.0), r"rho must be a finite number other than 0 "
                                                                  r"\(the Karras schedule .* divides by ρ"),
    (lambda: kdiffusion.get_sigmas_karras(5, 0.03, 14.6, rho=1e-3), r"rho=0.001 raises the σ range to the power "
                                                                   r"1/rho = 1000, past float64's range"),
    (lambda: kdiffusion.get_sigmas_karras(5, 0.03, 14.6, rho=-1e-3), "past float64's range; use a rho further"),
], ids=["vp-no-rate", "vp-negative", "karras-rho-0", "karras-rho-near-0", "karras-negative-rho-near-0"])
def test_schedule_options_without_a_finite_decreasing_schedule_stay_refused(call, message):
    """k-diffusion returns zeros (both β 0) or raises ZeroDivisionError / OverflowError (ρ at or near 0)."""
    with pytest.raises(samplers.InvalidOption, match=message):
        call()


@pytest.mark.parametrize("value", ["False", "True", 0.0, [False]])
def test_dpm_adaptive_refuses_a_return_info_that_is_no_bool_before_any_model_call(value):
    """return_info="False" returned the (x, info) tuple (a true string), where disable="False" is refused."""
    model, calls = _counting()
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(samplers.InvalidType, match=r"return_info must be True or False .*got "):
        kdiffusion.sample_dpm_adaptive(model, x, 0.03, 14.6, return_info=value, disable=True)
    assert calls == []
    for flag, tuple_back in ((True, True), (1, True), (False, False), (None, False)):  # k-diffusion's truth
        out = kdiffusion.sample_dpm_adaptive(model, x, 0.03, 14.6, return_info=flag, disable=True)
        assert isinstance(out, tuple) == tuple_back

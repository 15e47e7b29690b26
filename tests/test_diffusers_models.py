"""diffusers models as registry denoisers: config reading, CFG and direct sampling (the shim on every sampler is
tests/test_diffusers_scheduler.py)."""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.core.conversion import to_x0

diffusers = pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,  # noqa: E402
                       SD3Transformer2DModel, UNet2DConditionModel)

from samplers.core.errors import InvalidInput  # noqa: E402
from samplers.interop.diffusers_models import denoiser_from_diffusers, native_from_config  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
             steps_offset=1)
TOL = dict(rtol=1e-4, atol=1e-4)



torch.manual_seed(0)
UNET = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                            norm_num_groups=32, attention_head_dim=8).eval()
torch.manual_seed(0)
TRANSFORMER = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                    attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                    caption_projection_dim=16, pooled_projection_dim=16).eval()
_g = torch.Generator().manual_seed(2)
EMB, NEG = torch.randn(1, 7, 32, generator=_g), torch.randn(1, 7, 32, generator=_g)
POOL, NEG_POOL = torch.randn(1, 16, generator=_g), torch.randn(1, 16, generator=_g)
NOISE = torch.randn(2, 4, 8, 8, generator=_g)


def test_vp_config_gives_diffusers_alphas_cumprod():
    theirs = DDIMScheduler(**BETAS)
    native, prediction = native_from_config(theirs.config)
    assert isinstance(native, VPDiscrete) and prediction == "eps"
    torch.testing.assert_close(native.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-5, atol=1e-6)
    native, prediction = native_from_config({**theirs.config, "prediction_type": "v_prediction",
                                             "rescale_betas_zero_snr": True})
    assert prediction == "v" and math.isinf(native.sigma_max)
    trained = native_from_config({"trained_betas": theirs.betas.tolist()})[0]
    torch.testing.assert_close(trained.alphas_cumprod, native_from_config(theirs.config)[0].alphas_cumprod)


@pytest.mark.parametrize("cls, partial", [
    ("LCMScheduler", {"num_train_timesteps": 1000}),  # LCM's defaults: scaled_linear 0.00085-0.012, not DDPM's
    ("PNDMScheduler", {"beta_end": 0.012}),
    ("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}),
])
def test_a_partial_config_reads_its_classs_defaults_as_diffusers_from_config_does(cls, partial):
    """Keys a config leaves out are its class's defaults (diffusers' from_config): a partial LCM config was read
    with DDPM's linear 0.0001-0.02 table (last alpha-bar 4.0e-5 where LCM's is 4.7e-3, sigma_max 157 for 14.6)."""
    config = {"_class_name": cls, **partial}
    theirs = getattr(diffusers, cls).from_config(config)
    native, _ = native_from_config(config)
    torch.testing.assert_close(native.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-5, atol=1e-6)


def test_a_partial_flow_config_reads_its_classs_prediction_type():
    """UniPC's use_flow_sigmas config without prediction_type is the class's default 'epsilon', which no flow
    schedule runs: refused by name, where it was read as a flow prediction."""
    with pytest.raises(samplers.InvalidOption, match="prediction_type 'epsilon' with a flow-matching schedule"):
        native_from_config({"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": True, "flow_shift": 3.0})


def test_trained_betas_of_another_length_than_num_train_timesteps_are_refused():
    # diffusers spaces its timesteps over num_train_timesteps and indexes the table with them: 500 betas under the
    # default 1000 fail past the table's end there, and were read here as a 500-step model (other σ at every timestep)
    betas = DDIMScheduler(**BETAS).betas[::2].tolist()
    with pytest.raises(InvalidInput, match=r"500 betas but num_train_timesteps is 1000 \(the default.*"
                                           r"num_train_timesteps=500"):
        native_from_config({"trained_betas": betas})
    with pytest.raises(InvalidInput, match="500 betas but num_train_timesteps is 2000: .*num_train_timesteps=500"):
        native_from_config({"trained_betas": betas, "num_train_timesteps": 2000})
    assert native_from_config({"trained_betas": betas, "num_train_timesteps": 500})[0].num_train_timesteps == 500
    with pytest.raises(InvalidInput, match="500 betas"):
        SamplerScheduler.from_config({**DDIMScheduler(**BETAS).config, "trained_betas": betas})


def test_flow_config_gives_rectified_flow():
    native, prediction = native_from_config(FlowMatchEulerDiscreteScheduler(shift=3.0))
    assert isinstance(native, RectifiedFlow) and prediction == "flow"
    assert native.shift == 3.0 and native.multiplier == 1000.0
    dyn = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config
    assert math.isclose(native_from_config(dyn, mu=0.7)[0].shift, math.exp(0.7))
    dpm_flow = {"use_flow_sigmas": True, "flow_shift": 2.0, "prediction_type": "flow_prediction"}
    assert native_from_config(dpm_flow)[0].shift == 2.0


def test_config_errors():
    sd = EulerDiscreteScheduler(**BETAS).config
    with pytest.raises(ValueError, match="unknown prediction_type"):
        native_from_config({**sd, "prediction_type": "noise"})
    with pytest.raises(ValueError, match="VP"):
        native_from_config({**sd, "prediction_type": "flow_prediction"})
    with pytest.raises(ValueError, match="flow-matching"):
        native_from_config({**FlowMatchEulerDiscreteScheduler().config, "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="beta schedule"):
        native_from_config({**sd, "beta_schedule": "sigmoid"})
    assert native_from_config({**sd, "clip_sample": True})[1] == "eps"  # a scheduler flag, not the model's
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        denoiser_from_diffusers(UNET, sd, EMB, None, guidance_scale=5.0)


@pytest.mark.parametrize("flags, named", [(dict(clip_sample=True), r"clip_sample=True: .*\(here 1.0\)"),
                                          (dict(clip_sample=True, clip_sample_range=0.5), r"clip_sample=True: .*\(here 0.5\)"),
                                          (dict(thresholding=True), "thresholding=True: .*dynamic thresholding")])
def test_a_config_whose_scheduler_changes_x0_is_refused_naming_the_flag_and_the_fix(flags, named):
    # the scheduler clips / thresholds x0 in its step; a sampler on the denoiser would not (it was dropped silently)
    calls = []
    counted = lambda *a, **k: calls.append(1) or UNET(*a, **k)  # noqa: E731
    base = {**DDIMScheduler(**BETAS).config, "clip_sample": False}
    config = {**base, **flags}
    flag = next(iter(flags))
    with pytest.raises(ValueError, match=named + rf".*with {flag}=False"):
        denoiser_from_diffusers(counted, config, EMB, NEG, guidance_scale=3.0)
    assert not calls
    # without them (or with them False) it builds, and clip_sample_range alone clips nothing
    denoiser_from_diffusers(UNET, {**config, flag: False}, EMB, NEG, guidance_scale=3.0)
    denoiser_from_diffusers(UNET, {**base, "clip_sample_range": 0.5}, EMB, NEG, guidance_scale=3.0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_unet_denoiser_is_cfg_then_conversion(prediction):
    config = {**EulerDiscreteScheduler(**BETAS).config, "prediction_type": prediction}
    D = denoiser_from_diffusers(UNET, config, EMB, NEG, guidance_scale=4.0)
    x, sigma = NOISE * 3.0, torch.full((2,), 3.0)
    with torch.no_grad():
        got = D(x, sigma)
        a, b = torch.tensor(1 / math.sqrt(10.0)), torch.tensor(3.0 / math.sqrt(10.0))
        t = D.schedule.time(sigma)
        out_u = UNET(x * a, t, encoder_hidden_states=NEG.expand(2, -1, -1)).sample
        out_c = UNET(x * a, t, encoder_hidden_states=EMB.expand(2, -1, -1)).sample
        want = to_x0(samplers.core.conversion.canonical_prediction(prediction), out_u + 4.0 * (out_c - out_u), x * a, a, b)
    torch.testing.assert_close(got, want, **TOL)


def test_direct_unet_sampling_equals_diffusers_euler():
    """The denoiser path alone (no pipeline, no shim) against diffusers' Euler loop on the same UNet."""
    theirs = EulerDiscreteScheduler(**BETAS, timestep_spacing="trailing")
    theirs.set_timesteps(4)
    latents = NOISE * theirs.init_noise_sigma
    with torch.no_grad():
        for t in theirs.timesteps:
            x_in = theirs.scale_model_input(torch.cat([latents] * 2), t)
            emb = torch.cat([NEG, EMB]).repeat_interleave(2, 0)
            e_u, e_c = UNET(x_in, t, encoder_hidden_states=emb).sample.chunk(2)
            latents = theirs.step(e_u + 3.0 * (e_c - e_u), t, latents).prev_sample
        D = denoiser_from_diffusers(UNET, theirs.config, EMB, NEG, guidance_scale=3.0)
        sigmas = theirs.sigmas.double()
        ours = samplers.sample("euler", D, NOISE * float(sigmas[0]), sigmas, disable=True)
    torch.testing.assert_close(ours, latents, **TOL)


def test_direct_flow_transformer_sampling_equals_flow_match_euler():
    """An SD3-style transformer (hidden_states, pooled projections) as a denoiser: registry Euler from σ = inf on
    FlowMatchEuler's own sigmas equals its loop."""
    theirs = FlowMatchEulerDiscreteScheduler(shift=3.0)
    theirs.set_timesteps(3)
    cond = dict(encoder_hidden_states=torch.cat([NEG, EMB]).repeat_interleave(2, 0),
                pooled_projections=torch.cat([NEG_POOL, POOL]).repeat_interleave(2, 0))
    latents = NOISE.clone()
    with torch.no_grad():
        for t in theirs.timesteps:
            u_u, u_c = TRANSFORMER(hidden_states=torch.cat([latents] * 2), timestep=t.expand(4), **cond,
                                   return_dict=False)[0].chunk(2)
            latents = theirs.step(u_u + 3.0 * (u_c - u_u), t, latents).prev_sample
        D = denoiser_from_diffusers(TRANSFORMER, theirs.config, EMB, NEG, guidance_scale=3.0,
                                    model_kwargs={"pooled_projections": POOL},
                                    negative_model_kwargs={"pooled_projections": NEG_POOL})
        t_flow = theirs.sigmas.double()
        sigmas = torch.where(t_flow >= 1, torch.full_like(t_flow, math.inf), t_flow / (1 - t_flow))
        ours = samplers.sample("euler", D, samplers.initial_latent(NOISE, sigmas), sigmas, disable=True)
    torch.testing.assert_close(ours, latents, **TOL)


def test_guided_conditioning_needs_every_negative_before_any_model_call():
    from samplers.core.errors import InvalidInput

    calls = []
    counted = lambda *a, **k: calls.append(1) or TRANSFORMER(*a, **k)  # noqa: E731
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    cases = [  # (prompt_embeds, negative_prompt_embeds, model_kwargs, negative_model_kwargs, what the message names)
        (EMB, NEG, {"pooled_projections": POOL}, None, "unconditional value of pooled_projections"),
        (None, None, {"encoder_hidden_states": EMB, "pooled_projections": POOL}, None,
         "encoder_hidden_states, pooled_projections"),
        (EMB, NEG, {"added": {"a": POOL, "b": POOL}}, {"added": {"a": NEG_POOL}}, "unconditional value of added.b"),
        (EMB, NEG, {}, {"pooled_projections": NEG_POOL}, "holds pooled_projections"),
        (None, NEG, {"pooled_projections": POOL}, {"pooled_projections": NEG_POOL}, "holds encoder_hidden_states"),
        (EMB, NEG, {"joint_attention_kwargs": {"scale": 1.0}}, {"joint_attention_kwargs": {"scale": 0.5}},
         "joint_attention_kwargs.scale a value other"),
        (None, None, {}, None, "no conditioning"),
    ]
    for emb, neg, kw, negkw, match in cases:
        with pytest.raises(InvalidInput, match=match):
            denoiser_from_diffusers(counted, flow, emb, neg, guidance_scale=3.0, model_kwargs=kw,
                                    negative_model_kwargs=negkw)
    assert calls == []
    # shared on purpose: the same tensor in both; guidance off needs no negative
    x, s = NOISE * 2.0, torch.full((2,), 2.0, dtype=torch.float64)
    with torch.no_grad():
        shared = denoiser_from_diffusers(TRANSFORMER, flow, EMB, NEG, guidance_scale=3.0,
                                         model_kwargs={"pooled_projections": POOL},
                                         negative_model_kwargs={"pooled_projections": POOL})(x, s)
        assert torch.isfinite(shared).all()
        denoiser_from_diffusers(TRANSFORMER, flow, EMB, None, guidance_scale=1.0,
                                model_kwargs={"pooled_projections": POOL})(x, s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "7.5", True, None, torch.tensor([7.5]),
                                 torch.tensor(7.5, device="meta")])
def test_guidance_scale_is_a_finite_real_number(bad):
    from samplers.core.errors import InvalidOption, InvalidType

    with pytest.raises((InvalidType, InvalidOption),
                       match="guidance_scale (must be a (real|finite) number|is a tensor on meta.*float)"):
        denoiser_from_diffusers(UNET, EulerDiscreteScheduler(**BETAS).config, EMB, NEG, guidance_scale=bad)


def test_a_guidance_scale_given_as_a_0d_cpu_tensor_is_that_number():
    # validate.real reads a 0-d real CPU tensor as its float, as every option does (not one on a device: no sync)
    config = EulerDiscreteScheduler(**BETAS).config
    x, s = torch.randn(1, 4, 8, 8), torch.tensor([3.0])
    got = denoiser_from_diffusers(UNET, config, EMB, NEG, guidance_scale=torch.tensor(7.5))(x, s)
    want = denoiser_from_diffusers(UNET, config, EMB, NEG, guidance_scale=7.5)(x, s)
    assert torch.equal(got, want)


@pytest.mark.parametrize("field, value", [("rescale_betas_zero_snr", "false"), ("use_flow_sigmas", "false"),
                                          ("use_dynamic_shifting", "false"), ("use_flow_sigmas", 1),
                                          ("clip_sample", "no"), ("thresholding", 0)])
def test_a_config_flag_must_be_a_boolean_not_a_truthy_value(field, value):
    """A hand-edited config's "false" would turn the flag on by its truthiness: zero-SNR rescaling, flow sigmas."""
    sd = {**DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config, "shift": None,
          "clip_sample": False}
    if field == "use_dynamic_shifting":
        sd = {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}
    with pytest.raises(samplers.InvalidType, match=f"{field} must be true or false"):
        if field in ("clip_sample", "thresholding"):
            denoiser_from_diffusers(lambda x, t, **k: x, {**sd, field: value})
        else:
            native_from_config({**sd, field: value})


def test_a_zero_flow_shift_is_refused_not_read_as_one():
    with pytest.raises(samplers.InvalidOption, match="flow_shift"):
        native_from_config({"use_flow_sigmas": True, "flow_shift": 0, "prediction_type": "flow_prediction"})
    assert native_from_config({"use_flow_sigmas": True, "prediction_type": "flow_prediction"})[0].shift == 1.0


def test_zero_snr_times_are_diffusers_timesteps_up_to_its_first_sigma():
    """diffusers' Euler-type schedulers stand ᾱ = 2⁻²⁴ (σ ≈ 4096) in for the zero-SNR end: its first σ is timestep 999,
    not the last finite one's (998)."""
    theirs = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                    prediction_type="v_prediction")
    theirs.set_timesteps(10)
    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)
    sigmas = theirs.sigmas[:-1].double()
    torch.testing.assert_close(vp.time(sigmas), theirs.timesteps.double(), rtol=0, atol=2e-3)
    assert [vp.time_at(float(s)) for s in sigmas] == vp.time(sigmas).tolist()
    assert vp.time_at(float("inf")) == 999 and math.isinf(float(vp.sigma_of_time(torch.tensor([999.0]))[0]))
    # sigma_of_time inverts time up there too (it read the table with inf in it: σ of 998.7 was inf)
    between = torch.tensor([2000.0, 3381.357, 4000.0], dtype=torch.float64)
    torch.testing.assert_close(vp.sigma_of_time(vp.time(between)), between, rtol=1e-9, atol=0)


def _net(x_t, timestep, **kwargs):  # an analytic stand-in whose output depends on its time input
    t = torch.as_tensor(timestep, dtype=x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    return torch.sin(0.7 * x_t + 0.31 * t) + 0.1 * x_t * torch.cos(0.11 * t)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_an_edm_config_is_read_as_edm_preconditioning(prediction, sigma_data):
    """EDMEulerScheduler's config (Playground v2.5, CosXL) was read as a VP model on default betas: the model got
    a timestep index and VP scalings. Now D is diffusers' precondition_inputs / _noise / _outputs, v included."""
    from diffusers import EDMEulerScheduler

    ref = EDMEulerScheduler(sigma_data=sigma_data, prediction_type=prediction, sigma_max=80.0, sigma_min=0.002)
    D = denoiser_from_diffusers(_net, ref.config)
    x = NOISE.double() * 5.0
    for s in (0.01, 1.0, 5.0, 79.0):
        sigma = torch.tensor(s, dtype=torch.float64)
        out = _net(ref.precondition_inputs(x, sigma), ref.precondition_noise(sigma))
        want = ref.precondition_outputs(x, out, sigma)
        torch.testing.assert_close(D(x, torch.full((2,), s, dtype=torch.float64)), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(D.denoise_at(x, s), want, rtol=1e-12, atol=1e-12)


def test_an_euler_config_with_continuous_timesteps_and_v_prediction_is_stable_video_diffusions_model():
    """timestep_type="continuous" with v_prediction (SVD): diffusers gives the model ¼·ln σ, which the config's
    discrete reading replaced by a timestep index (D 2.5-10.8 relatively off)."""
    cfg = dict(**BETAS, prediction_type="v_prediction", timestep_type="continuous", use_karras_sigmas=True,
               sigma_min=0.002, sigma_max=700.0)
    ref = EulerDiscreteScheduler(**cfg)
    ref.set_timesteps(6)
    D = denoiser_from_diffusers(_net, ref.config)
    x = NOISE.double() * 3.0
    for sigma, t in zip(ref.sigmas[:-1].tolist(), ref.timesteps.tolist()):
        assert math.isclose(D.schedule.time_at(sigma), t, rel_tol=1e-6, abs_tol=1e-6)
        x_in = x / math.sqrt(sigma ** 2 + 1)  # scale_model_input
        want = _net(x_in, t) * (-sigma / math.sqrt(sigma ** 2 + 1)) + x / (sigma ** 2 + 1)  # Euler's v → x0
        torch.testing.assert_close(D.denoise_at(x, sigma), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", ["CMStochasticIterativeScheduler", "CosineDPMSolverMultistepScheduler", "SCMScheduler"])
def test_schedulers_with_sigma_data_that_are_not_edm_are_refused_by_name(cls):
    """Their configs carry sigma_data too: they were read as VP models on default betas, and a sigma_data test would
    have read them as EDM (Stable Audio's cosine model 0.11 off). Refused, naming the class."""
    scheduler = getattr(diffusers, cls, None)
    if scheduler is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {cls}")
    with pytest.raises(samplers.InvalidOption, match=cls):
        native_from_config(scheduler().config)
    edm = {k: v for k, v in diffusers.EDMEulerScheduler().config.items() if not k.startswith("_")}
    assert native_from_config(edm)[1] == "edm"  # a config without its class: EDM by its sigma_data


def test_a_mochi_config_is_refused_not_read_as_an_ordinary_flow_model():
    """invert_sigmas (Mochi): the model takes 1 − t and predicts x0 − noise; read as an ordinary flow model the
    denoiser fed 667 where diffusers feeds 333 and took the velocity's sign the other way (x0 off by 3× its scale)."""
    calls = []
    config = {**FlowMatchEulerDiscreteScheduler(invert_sigmas=True).config}
    with pytest.raises(samplers.InvalidOption, match="invert_sigmas=True .*Mochi"):
        denoiser_from_diffusers(lambda x, t, **k: calls.append(t) or x, config)
    assert not calls
    denoiser_from_diffusers(lambda x, t, **k: x, {**config, "invert_sigmas": False})


def test_dynamic_shifting_needs_mu_and_a_fixed_shift_reads_none():
    """Flux-style use_dynamic_shifting: without mu, D.schedule carried shift 1 and get_sigmas("flow", n,
    native=D.schedule) another grid than the pipeline's (flow times 1, .667, .334 where diffusers with mu=1.15 gives
    1, .864, .613); diffusers' set_timesteps refuses it too. A mu on a config that reads none was dropped."""
    flux = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15).config
    with pytest.raises(samplers.InvalidInput, match="use_dynamic_shifting=True.*pass mu="):
        denoiser_from_diffusers(lambda x, t, **k: x, flux)
    D = denoiser_from_diffusers(lambda x, t, **k: x, flux, mu=1.15)
    theirs = FlowMatchEulerDiscreteScheduler.from_config(flux)
    theirs.set_timesteps(4, mu=1.15)
    ours = samplers.get_sigmas("flow", 4, native=D.schedule)
    torch.testing.assert_close((ours / (1 + ours))[1:-1].float(), theirs.sigmas[1:-1], rtol=1e-5, atol=1e-6)
    for config in (FlowMatchEulerDiscreteScheduler(shift=3.0).config, EulerDiscreteScheduler(**BETAS).config):
        with pytest.raises(samplers.InvalidOption, match="mu=0.8 is read only .*use_dynamic_shifting=True"):
            denoiser_from_diffusers(lambda x, t, **k: x, config, mu=0.8)


# ----------------------------------------------------------------------------------------------------
# An audit of 2026-12-06: the config read as diffusers reads it, the conditioning checked before the network runs


class _Calls(torch.nn.Module):
    """UNET, counting its calls."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = UNET, 0
        self.config = UNET.config

    @property
    def dtype(self):
        return UNET.dtype

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **kw):
        self.calls += 1
        return self.inner(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict, **kw)


def _run(unet, config, *args, **kw):
    d = denoiser_from_diffusers(unet, config, *args, **kw)
    return d(NOISE * 5.0, torch.full((2,), 5.0))


@pytest.mark.parametrize("config, error, match", [
    ({**BETAS, "prediction_typ": "v_prediction"}, samplers.InvalidOption, r"'prediction_typ' \(did you mean "
                                                                          r"'prediction_type'\?\)"),
    ({**BETAS, "rescale_betas_zero_snir": True}, samplers.InvalidOption, "rescale_betas_zero_snir"),
    # a partial DDIM config is DDIM's defaults: it clips x0, which the denoiser would not
    ({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear"}, samplers.InvalidOption,
     "clip_sample=True"),
])
def test_a_config_is_read_as_diffusers_reads_it(config, error, match):
    unet = _Calls()
    with pytest.raises(error, match=match):
        _run(unet, config, EMB, NEG, 7.5)
    assert unet.calls == 0


def test_a_full_config_and_the_shims_own_still_run():
    ddim = DDIMScheduler(**BETAS, clip_sample=False)
    _run(UNET, ddim.config, EMB, NEG, 7.5)
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    _run(UNET, SamplerScheduler.from_config(ddim.config).config, EMB, NEG, 7.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prompt_embeds=torch.randn(1, 7, 16), negative_prompt_embeds=torch.randn(1, 7, 16)), samplers.InvalidInput,
     "prompt_embeds are 16 wide, but the network takes encoder_hidden_states 32 wide"),
    (dict(prompt_embeds=EMB, negative_prompt_embeds=torch.randn(1, 5, 32)), samplers.InvalidInput,
     r"negative_prompt_embeds has shape \(1, 5, 32\) and prompt_embeds \(1, 7, 32\)"),
    (dict(prompt_embeds=EMB.double(), negative_prompt_embeds=NEG.double()), samplers.InvalidInput,
     "prompt_embeds is torch.float64 but the network's weights are torch.float32"),
    (dict(prompt_embeds=EMB.numpy(), negative_prompt_embeds=NEG.numpy()), samplers.InvalidType,
     "prompt_embeds must be a torch tensor"),
    (dict(prompt_embeds=EMB * float("nan"), negative_prompt_embeds=NEG), samplers.InvalidInput, "NaN"),
    (dict(prompt_embeds=torch.randn(3, 7, 32), negative_prompt_embeds=NEG), samplers.InvalidInput,
     "has batch 3 .* but the latents have batch 2"),
    (dict(prompt_embeds=EMB, negative_prompt_embeds=NEG, model_kwargs={"encoder_hidden_states": NEG}),
     samplers.InvalidInput, "model_kwargs holds encoder_hidden_states and prompt_embeds is given too"),
    (dict(prompt_embeds=EMB, negative_prompt_embeds=NEG, timestep_scale="0.001"), samplers.InvalidType,
     "timestep_scale must be a real number"),
    (dict(prompt_embeds=EMB, negative_prompt_embeds=NEG, timestep_scale=0.0), samplers.InvalidOption,
     "timestep_scale must be > 0"),
])
def test_the_conditioning_is_checked_before_the_network_runs(kwargs, error, match):
    unet = _Calls()
    with pytest.raises(error, match=match):
        _run(unet, DDIMScheduler(**BETAS, clip_sample=False).config, guidance_scale=7.5, **kwargs)
    assert unet.calls == 0


def test_an_sdxl_style_network_without_added_cond_kwargs_is_refused_up_front():
    torch.manual_seed(0)
    sdxl = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=32, attention_head_dim=8, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=80).eval()
    with pytest.raises(samplers.InvalidInput, match="addition_embed_type='text_time' .* needs added_cond_kwargs"):
        denoiser_from_diffusers(sdxl, DDIMScheduler(**BETAS, clip_sample=False).config, EMB, NEG, 7.5)


@pytest.mark.parametrize("mu, kind, match", [(1000.0, "exponential", "the shift e\\^mu would be inf"),
                                             (-1000.0, "exponential", "would be 0"),
                                             (-0.5, "linear", "the shift is mu itself, which must be > 0")])
def test_a_mu_that_gives_no_shift_is_named(mu, kind, match):
    config = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type=kind).config
    with pytest.raises(samplers.InvalidOption, match=match):
        native_from_config(config, mu=mu)


# ----------------------------------------------------------------------------------------------------
# An audit of the adapter's seams with diffusers' networks and scheduler classes


def _flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                  guidance_embeds=False, axes_dims_rope=(4, 6, 6)).eval()


_SEQ, _TOKENS = 16, 5
FLUX_IDS = dict(txt_ids=torch.zeros(_TOKENS, 3),
                img_ids=torch.stack([torch.zeros(_SEQ), torch.arange(_SEQ) // 4, torch.arange(_SEQ) % 4], 1).float())
FLUX_FLOW = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15).config


def _flux_reference(flux, x_t, t, enc, pooled, ids):
    """FluxPipeline's x0 with FlowMatchEuler (no guidance): the transformer called on t / 1000 of timestep t·1000."""
    b = x_t.shape[0]
    v = flux(hidden_states=x_t, timestep=torch.full((b,), t), pooled_projections=pooled.expand(b, -1),
             encoder_hidden_states=enc.expand(b, -1, -1), return_dict=False, **ids)[0]
    return x_t - t * v


def test_a_flux_transformer_takes_its_time_in_thousandths_by_default():
    """Flux's forward multiplies the timestep by 1000: wrapped without timestep_scale=1e-3 it got t·10⁶ (x0 0.047 off
    FluxPipeline's, silently). The default now follows the class; a value passed is the caller's."""
    flux, g = _flux(), torch.Generator().manual_seed(3)
    enc, pooled, x_t = torch.randn(1, _TOKENS, 32, generator=g), torch.randn(1, 32, generator=g), torch.randn(
        2, _SEQ, 4, generator=g)
    ids = {k: v[None] for k, v in FLUX_IDS.items()}  # the (deprecated) 3-D ids, batch 1
    t = 0.75
    with torch.no_grad():
        want = _flux_reference(flux, x_t, t, enc, pooled, ids)
        kw = dict(model_kwargs={"pooled_projections": pooled, **ids}, mu=0.8)
        got = denoiser_from_diffusers(flux, FLUX_FLOW, enc, **kw).denoise_at(x_t / (1 - t), t / (1 - t))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        own = denoiser_from_diffusers(flux, FLUX_FLOW, enc, timestep_scale=1.0, **kw)
        assert own.model.timestep_scale == 1.0  # the caller's value is used as it is
    from samplers.interop.diffusers_models import default_timestep_scale

    assert default_timestep_scale(flux) == 1e-3
    assert default_timestep_scale(TRANSFORMER) == default_timestep_scale(UNET) == 1.0  # SD3 takes t·1000


def test_flux_position_ids_are_unbatched_and_shared_by_both_halves_of_a_guided_batch():
    """diffusers' current 2-D txt_ids / img_ids ([tokens, 3]) were refused as a batch mismatch (or, with as many
    tokens as latents, concatenated for CFG as if they were rows). They are positions: passed as they are, shared."""
    flux, g = _flux(), torch.Generator().manual_seed(4)
    enc, neg = torch.randn(1, _TOKENS, 32, generator=g), torch.randn(1, _TOKENS, 32, generator=g)
    pooled, neg_pooled = torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g)
    t, x_t = 0.6, torch.randn(2, _SEQ, 4, generator=g)
    with torch.no_grad():
        cond = _flux_reference(flux, x_t, t, enc, pooled, FLUX_IDS)
        uncond = _flux_reference(flux, x_t, t, neg, neg_pooled, FLUX_IDS)
        want = uncond + 4.0 * (cond - uncond)  # FluxPipeline's true CFG, on x0 (linear in the velocity)
        D = denoiser_from_diffusers(flux, FLUX_FLOW, enc, neg, 4.0, mu=0.8,
                                    model_kwargs={"pooled_projections": pooled, **FLUX_IDS},
                                    negative_model_kwargs={"pooled_projections": neg_pooled})
        torch.testing.assert_close(D.denoise_at(x_t / (1 - t), t / (1 - t)), want, rtol=1e-5, atol=1e-5)
    other = {"pooled_projections": neg_pooled, "txt_ids": FLUX_IDS["txt_ids"] + 1}
    with pytest.raises(InvalidInput, match="txt_ids a value other than model_kwargs'.*position ids"):
        denoiser_from_diffusers(flux, FLUX_FLOW, enc, neg, 4.0, mu=0.8, negative_model_kwargs=other,
                                model_kwargs={"pooled_projections": pooled, **FLUX_IDS})


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("cls", ["CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"])
def test_cogvideox_snr_shift_scale_is_read_as_its_schedulers_apply_it(cls, zero_snr):
    """CogVideoX's schedulers divide every SNR by snr_shift_scale (default 3) before the zero-SNR rescale; the key was
    ignored (the model got timestep 638 for the scheduler's 500, x0 0.13 off)."""
    theirs = getattr(diffusers, cls)(**BETAS, prediction_type="v_prediction", rescale_betas_zero_snr=zero_snr,
                                     clip_sample=False, timestep_spacing="trailing")
    native, _ = native_from_config(theirs.config)
    torch.testing.assert_close(native.alphas_cumprod, theirs.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    # a named partial config gets the class's default shift (3), as from_config fills it
    partial = native_from_config({"_class_name": cls, **BETAS, "prediction_type": "v_prediction"})[0]
    torch.testing.assert_close(partial.alphas_cumprod, native_from_config({**BETAS, "snr_shift_scale": 3.0})[0]
                               .alphas_cumprod)
    # the denoiser's x0 is the scheduler's pred_original_sample at its own timesteps (DDIM's step, eta 0)
    ddim = diffusers.CogVideoXDDIMScheduler.from_config(theirs.config)
    ddim.set_timesteps(4)
    D = denoiser_from_diffusers(_net, theirs.config)
    x_t = NOISE.double()
    for t in ddim.timesteps.tolist()[1:]:
        ab = float(ddim.alphas_cumprod[t])
        want = ddim.step(_net(x_t, t).float(), t, x_t.float()).pred_original_sample.double()
        torch.testing.assert_close(D.denoise_at(x_t / ab ** 0.5, ((1 - ab) / ab) ** 0.5), want, rtol=1e-4,
                                   atol=1e-4)
        assert math.isclose(D.schedule.time_at(((1 - ab) / ab) ** 0.5), t, abs_tol=1e-3)


@pytest.mark.parametrize("cls, kwargs", [("ScoreSdeVeScheduler", {}), ("KarrasVeScheduler", {}),
                                         ("DDPMWuerstchenScheduler", {}), ("IPNDMScheduler", {}),
                                         ("HeliosScheduler", {}), ("UnCLIPScheduler", dict(clip_sample=False)),
                                         ("RePaintScheduler", dict(clip_sample=False))])
def test_a_scheduler_class_whose_model_is_not_read_here_is_refused_by_name(cls, kwargs):
    """These configs were read as a VP eps model on default betas (ScoreSdeVe's, KarrasVe's, Würstchen's, IPNDM's)
    or as a flow model (Helios'): another time and noise level than their schedulers', silently."""
    scheduler = getattr(diffusers, cls, None)
    if scheduler is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {cls}")
    theirs = scheduler(**kwargs)
    calls = []
    # a scheduler's own .config names no class: told by its keys, where no class read here takes them all (IPNDM's
    # and UnCLIP's are a partial DDPM config too: told by its name, or the scheduler object)
    by_keys = [] if cls in ("IPNDMScheduler", "UnCLIPScheduler") else [theirs.config]
    configs = [theirs, {**theirs.config, "_class_name": cls}, *by_keys]
    for given in configs:
        with pytest.raises(samplers.InvalidOption, match=f"{cls}'s config is not read here.*DDPMScheduler's"):
            denoiser_from_diffusers(lambda x, t, **k: calls.append(t) or x, given)
        with pytest.raises(samplers.InvalidOption, match=cls):
            native_from_config(given)
    assert not calls


def test_every_class_the_shim_stands_in_for_is_read_and_the_inverse_classes_as_their_models():
    from samplers.interop import diffusers_sources
    from samplers.interop.diffusers_models import READ_CLASSES

    assert set(diffusers_sources.SOURCES) | set(diffusers_sources.SAME_RUN) <= READ_CLASSES
    for cls in ("DDIMInverseScheduler", "DPMSolverMultistepInverseScheduler"):
        theirs = getattr(diffusers, cls)(**BETAS, **({"rescale_betas_zero_snr": True} if "DDIM" in cls else {}))
        native, prediction = native_from_config(theirs.config)
        assert prediction == "eps"
        torch.testing.assert_close(native.alphas_cumprod, theirs.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    # a parameter set two classes share (FlowMatchHeun's, FlowMapEuler's) is read as the one read here
    assert native_from_config(diffusers.FlowMatchHeunDiscreteScheduler(shift=2.0).config)[0].shift == 2.0


def _unet(**kw):
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**dict(UNET.config), **kw}).eval()


def test_an_lcm_unet_without_timestep_cond_is_refused_up_front():
    """time_cond_proj_dim set (a guidance-distilled LCM UNet): run without timestep_cond, the network skipped that
    conditioning silently (x0 0.1 off)."""
    lcm = _unet(time_cond_proj_dim=8)
    calls = []
    counted = lambda *a, **k: calls.append(1) or lcm(*a, **k)  # noqa: E731
    counted.config = lcm.config
    config = DDIMScheduler(**BETAS, clip_sample=False).config
    with pytest.raises(InvalidInput, match="time_cond_proj_dim=8 .*pass model_kwargs=\\{'timestep_cond'"):
        denoiser_from_diffusers(counted, config, EMB)
    assert not calls
    with torch.no_grad():
        D = denoiser_from_diffusers(lcm, config, EMB, model_kwargs={"timestep_cond": torch.randn(1, 8)})
        assert torch.isfinite(D(NOISE * 2.0, torch.full((2,), 2.0))).all()


@pytest.mark.parametrize("scheduler_variance", ["learned_range", "learned", None])
def test_a_network_that_predicts_its_variance_gives_the_first_half_as_diffusers_splits_it(scheduler_variance):
    """out_channels = 2 × in_channels with a learned variance_type (DeepFloyd IF, DDPM) or by the network's config alone
    (DiT's pipeline): accepted, then refused after a network call for its 2× channels. Now the prediction is the first
    half, as DDPMScheduler's step and IF's / DiT's pipelines split it (guided on that half)."""
    net = _unet(out_channels=8)
    config = {**DDIMScheduler(**BETAS, clip_sample=False).config}
    ddpm = diffusers.DDPMScheduler(**BETAS, clip_sample=False, variance_type=scheduler_variance or "fixed_small")
    if scheduler_variance is not None:
        config = {**ddpm.config, "_class_name": "DDPMScheduler"}
    t, x_t = 500, NOISE
    ab = float(ddpm.alphas_cumprod[t])
    with torch.no_grad():
        out = net(torch.cat([x_t, x_t]), t, encoder_hidden_states=torch.cat([NEG, EMB]).repeat_interleave(2, 0)).sample
        (e_u, *_), (e_c, *var) = (half.split(4, dim=1) for half in out.chunk(2))
        # the scheduler's step splits the variance off where its variance_type is learned; DiT's pipeline before it
        given = torch.cat([e_u + 3.0 * (e_c - e_u), *var], 1) if scheduler_variance else e_u + 3.0 * (e_c - e_u)
        want = ddpm.step(given, t, x_t).pred_original_sample
        D = denoiser_from_diffusers(net, config, EMB, NEG, 3.0)
        torch.testing.assert_close(D.denoise_at(x_t / ab ** 0.5, ((1 - ab) / ab) ** 0.5).float(), want, rtol=1e-4,
                                   atol=1e-4)


def test_native_from_config_refuses_a_dynamic_shifting_config_without_mu_as_the_denoiser_does():
    """Called directly it returned shift 1 for Flux's config (another grid than the pipeline's), where
    denoiser_from_diffusers refused it; one check now serves both (a scheduler, which gets mu at set_timesteps, reads
    it with mu_later=True)."""
    with pytest.raises(InvalidInput, match="use_dynamic_shifting=True.*pass mu="):
        native_from_config(FLUX_FLOW)
    with pytest.raises(samplers.InvalidOption, match="mu=0.8 is read only"):
        native_from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config, mu=0.8)
    assert math.isclose(native_from_config(FLUX_FLOW, mu=0.8)[0].shift, math.exp(0.8))
    assert native_from_config(FLUX_FLOW, mu_later=True)[0].shift == 1.0


# ----------------------------------------------------------------------------------------------------
# An audit of diffusers_models: a compiled network, conditioning changed after the build, per-call conditioning under
# guidance, and what the build let through


@pytest.mark.parametrize("which", ["unet", "sd3"])
def test_a_compiled_network_gives_what_the_plain_one_gives(which):
    """torch.compile wraps forward as (*args, **kwargs): the argument names were read from that, the time went in
    second positionally, and an SD3 transformer (encoder_hidden_states second) failed with a TypeError."""
    from samplers.interop.diffusers_models import DiffusersModel

    net, kw = (UNET, {}) if which == "unet" else (TRANSFORMER, {"pooled_projections": POOL})
    compiled = torch.compile(net, backend="eager")
    x, t = NOISE * 2.0, torch.full((2,), 500.0)
    with torch.no_grad():
        plain = DiffusersModel(net, EMB, model_kwargs=kw)(x, t)
        ours = DiffusersModel(compiled, EMB, model_kwargs=kw)(x, t)
    torch.testing.assert_close(ours, plain)


@pytest.mark.parametrize("guidance_scale", [1.0, 5.0])
def test_the_denoiser_reads_the_conditioning_as_it_was_built(guidance_scale):
    """Guided, the joined [uncond; cond] was a copy made at the first call, so a prompt_embeds changed in place
    afterwards was ignored, while unguided (a view) the change took effect: both now read a copy made at build."""
    config = EulerDiscreteScheduler(**BETAS).config
    x, s = NOISE * 3.0, torch.full((2,), 3.0)
    emb, pool = EMB.clone(), POOL.clone()
    with torch.no_grad():
        built = denoiser_from_diffusers(UNET, config, emb, NEG, guidance_scale=guidance_scale)
        before = built(x, s)
        emb.add_(1.0)
        assert torch.equal(built(x, s), before)
        late = denoiser_from_diffusers(UNET, config, emb, NEG, guidance_scale=guidance_scale)
        emb.copy_(EMB)  # changed between the build and the first call
        assert not torch.equal(late(x, s), before)
        flow = FlowMatchEulerDiscreteScheduler(shift=3.0).config
        sd3 = denoiser_from_diffusers(TRANSFORMER, flow, EMB, NEG, guidance_scale=guidance_scale,
                                      model_kwargs={"pooled_projections": pool},
                                      negative_model_kwargs={"pooled_projections": NEG_POOL})
        first = sd3(x, s)
        pool.mul_(3.0)
        assert torch.equal(sd3(x, s), first)


def test_a_per_call_conditioning_tensor_without_its_negative_is_refused_under_guidance():
    """extra_args skipped the pairing check: a per-call class_labels was copied into the uncond half silently."""
    D = denoiser_from_diffusers(UNET, EulerDiscreteScheduler(**BETAS).config, EMB, NEG, guidance_scale=4.0)
    x, s = NOISE * 3.0, torch.full((2,), 3.0)
    with pytest.raises(InvalidInput, match="class_labels.*negative_model_kwargs=\\{'class_labels'"):
        D(x, s, class_labels=torch.zeros(2))
    with pytest.raises(InvalidInput, match="added_cond_kwargs.text_embeds"):
        D(x, s, added_cond_kwargs={"text_embeds": torch.zeros(2, 4)})
    with torch.no_grad():  # a per-call value whose key has its negative at build replaces the conditional half only
        assert torch.isfinite(D(x, s, encoder_hidden_states=EMB * 2.0)).all()
        unguided = denoiser_from_diffusers(UNET, EulerDiscreteScheduler(**BETAS).config, EMB)
        assert torch.isfinite(unguided(x, s, encoder_hidden_states=EMB * 2.0)).all()


def test_negative_prompt_embeds_without_prompt_embeds_is_refused_unguided_too():
    unet = _Calls()
    with pytest.raises(InvalidInput, match="negative_prompt_embeds without prompt_embeds"):
        _run(unet, EulerDiscreteScheduler(**BETAS).config, None, NEG, 1.0)
    assert unet.calls == 0


def test_a_transformers_embeddings_are_checked_against_its_joint_attention_width():
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    with pytest.raises(InvalidInput, match="prompt_embeds are 16 wide, but the network takes encoder_hidden_states "
                                           "32 wide"):
        denoiser_from_diffusers(TRANSFORMER, flow, torch.randn(1, 7, 16), torch.randn(1, 7, 16), 3.0,
                                model_kwargs={"pooled_projections": POOL},
                                negative_model_kwargs={"pooled_projections": NEG_POOL})


@pytest.mark.parametrize("added, missing", [({"time_ids": torch.zeros(1, 6)}, "text_embeds"),
                                            ({"text_embeds": torch.zeros(1, 32)}, "time_ids"),
                                            ({}, "text_embeds, time_ids")])
def test_an_sdxl_style_network_needs_the_keys_its_addition_embedding_reads(added, missing):
    sdxl = _unet(addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80)
    with pytest.raises(InvalidInput, match=f"added_cond_kwargs without {missing}"):
        denoiser_from_diffusers(sdxl, DDIMScheduler(**BETAS, clip_sample=False).config, EMB,
                                model_kwargs={"added_cond_kwargs": added})

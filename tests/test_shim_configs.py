"""The diffusers shim on scheduler configs real pipelines ship beyond the common ones: Stable Video Diffusion's
continuous-time Euler, and the configs diffusers itself refuses (the shim refuses them too rather than guess)."""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture

diffusers = pytest.importorskip("diffusers")
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SHAPE = (2, 4, 6, 6)


def model(x, t):
    """A smooth toy model of (x, t): its outputs change with the state and the timestep."""
    s = float(torch.as_tensor(t).reshape(-1)[0]) / 1000.0
    return 0.6 * torch.tanh(x) + 0.2 * math.sin(3 * s + 0.3) * x + 0.1 * math.cos(5 * s)


def loop(scheduler, n):
    """A diffusers pipeline's denoising loop: scale_model_input, the model, step."""
    scheduler.set_timesteps(n)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return x


# Stable Video Diffusion's scheduler config (stabilityai/stable-video-diffusion-img2vid-xt, scheduler_config.json)
SVD = dict(SD, interpolation_type="linear", prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
           steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)


@pytest.mark.parametrize("n", [1, 2, 5, 14, 25])
def test_stable_video_diffusions_continuous_euler_runs_as_diffusers_does(n):
    """Its timesteps are ¼·ln σ (−1.55 … 1.64), not indices of the training table: the shim refused every step
    count above 1 ("run outside the 1000 training timesteps ... steps_offset = 1?"). Now diffusers' result: to 1e-5
    of the scale from 5 steps, and within diffusers' float32 rounding of a step from σ = 700 at 1 and 2 steps
    (2⁻²³·σ_max·max|noise| of the first step, the bound docs/diffusers.md states for zero-SNR Euler)."""
    ref = diffusers.EulerDiscreteScheduler(**SVD)
    want = loop(ref, n)
    got = loop(SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler(**SVD)), n)
    scale = max(1.0, float(want.abs().max()))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    bound = 1e-5 if n >= 5 else 2.0 ** -23 * 700.0 * float(noise.abs().max()) / scale
    assert float((got - want).abs().max()) / scale <= bound


@pytest.mark.parametrize("cls, extra", [("KDPM2DiscreteScheduler", {}), ("KDPM2AncestralDiscreteScheduler", {}),
                                        ("EulerAncestralDiscreteScheduler", {}), ("DPMSolverSDEScheduler", {}),
                                        ("PNDMScheduler", {"skip_prk_steps": True, "steps_offset": 1})])
def test_a_sample_predicting_config_the_class_cannot_step_is_refused_as_diffusers_refuses_it(cls, extra):
    """diffusers raises at the first step (NotImplementedError; PNDM a ValueError); the shim ran latents."""
    config = dict(SD, prediction_type="sample", **extra)
    with pytest.raises((NotImplementedError, ValueError)):
        loop(getattr(diffusers, cls)(**config), 4)
    with pytest.raises(samplers.InvalidOption, match=f"{cls} does not step a model that predicts the sample"):
        loop(SamplerScheduler.from_config(getattr(diffusers, cls)(**config)), 4)


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_set_timesteps_takes_a_0d_integer_tensor_as_diffusers_does(cls):
    shim = SamplerScheduler.from_config(getattr(diffusers, cls)(**SD))
    shim.set_timesteps(torch.tensor(8))
    ref = getattr(diffusers, cls)(**SD)
    ref.set_timesteps(8)
    assert torch.equal(shim.timesteps, ref.timesteps)
    for bad in (torch.tensor(8.0), torch.tensor([8]), torch.tensor(True)):
        with pytest.raises(samplers.InvalidInput, match="num_inference_steps must be an integer"):
            shim.set_timesteps(bad)


def test_heuns_exp_beta_schedule_is_diffusers_own():
    """HeunDiscreteScheduler(beta_schedule="exp") (diffusers' betas_for_alpha_bar with ᾱ(t) = e^(−12t)) was refused
    as an unknown beta schedule."""
    config = dict(SD, beta_schedule="exp")
    want = loop(diffusers.HeunDiscreteScheduler(**config), 10)
    got = loop(SamplerScheduler.from_config(diffusers.HeunDiscreteScheduler(**config)), 10)
    assert float((got - want).abs().max()) / max(1.0, float(want.abs().max())) <= 1e-5


@pytest.mark.parametrize("n", [6, 8, 10, 12, 30])
def test_pndms_runge_kutta_warm_up_runs_where_it_is_a_sampler_and_is_refused_where_not(n):
    """skip_prk_steps=False: where 1000 // n is odd its half steps land on t − ratio//2 but the model is then
    called at t − ⌈ratio/2⌉ (on a latent not at its timestep); the shim ran its midpoints at t − ratio//2, another
    image (1.8e-4 of the scale at 8 steps), silently. Now refused there, naming step counts that work."""
    config = dict(SD, skip_prk_steps=False, steps_offset=1)
    want = loop(diffusers.PNDMScheduler(**config), n)
    if (1000 // n) % 2:
        with pytest.raises(samplers.InvalidOption, match=f"num_train_timesteps // {n} = {1000 // n} is odd"):
            loop(SamplerScheduler.from_config(diffusers.PNDMScheduler(**config)), n)
        return
    got = loop(SamplerScheduler.from_config(diffusers.PNDMScheduler(**config)), n)
    assert float((got - want).abs().max()) / max(1.0, float(want.abs().max())) <= 1e-5


@pytest.mark.parametrize("n, extra", [(2, {}), (2, {"use_karras_sigmas": True}), (3, {"use_beta_sigmas": True}),
                                      (4, {"use_beta_sigmas": True}), (8, {})])
def test_kdpm2_ancestral_at_few_steps_is_within_diffusers_float32_step_down(n, extra, request):
    """diffusers computes σ_down = √(σ_next² − σ_up²) in float32, which cancels where σ_up ≈ σ_next; the shim in
    float64: the figures docs/diffusers.md states (1.6e-4 of the scale at 2 to 4 steps, 1e-5
    from there on)."""
    if n == 2:  # 1.9e-4 on the AMX CPU of 2026-12-06 (docs/diffusers.md); 3 to 8 steps hold there too
        request.getfixturevalue("measured_rounding")
    config = dict(SD, **extra)

    def run(scheduler):
        scheduler.set_timesteps(n)
        g = torch.Generator().manual_seed(11)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, generator=g).prev_sample
        return x

    want = run(diffusers.KDPM2AncestralDiscreteScheduler(**config))
    got = run(SamplerScheduler.from_config(diffusers.KDPM2AncestralDiscreteScheduler(**config)))
    bound = 1.6e-4 if n <= 4 else 1e-5
    assert float((got - want).abs().max()) / max(1.0, float(want.abs().max())) <= bound


@pytest.mark.parametrize("n", [2, 4, 10])
def test_a_nan_timestep_of_diffusers_own_set_timesteps_is_refused_before_any_model_call(n):
    """KDPM2Ancestral on a squaredcos_cap_v2 table: diffusers' float32 σ_down cancels, its interpolated timestep is
    NaN (and its image NaN); the shim handed that timestep to the model and ran to a NonFiniteError after the last
    model call. Now refused at set_timesteps, naming the class, the table, the step count and exact=True, which runs."""
    config = dict(SD, beta_schedule="squaredcos_cap_v2")
    ref = diffusers.KDPM2AncestralDiscreteScheduler(**config)
    ref.set_timesteps(n)
    assert torch.isnan(ref.timesteps).any()
    for kw in ({}, {"sampler": "dpm_2_ancestral"}):  # the class's own run, also when named
        shim = SamplerScheduler.from_config(diffusers.KDPM2AncestralDiscreteScheduler(**config), **kw)
        with pytest.raises(samplers.InvalidInput, match=r"KDPM2AncestralDiscreteScheduler with beta_schedule="
                           rf"'squaredcos_cap_v2': diffusers' own set_timesteps\(num_inference_steps={n}\) gives "
                           r"timesteps\[1\] = nan.*Pass exact=True"):
            shim.set_timesteps(n)
    exact = SamplerScheduler.from_config(diffusers.KDPM2AncestralDiscreteScheduler(**config), exact=True)
    exact.set_timesteps(n)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * exact.init_noise_sigma
    for t in exact.timesteps:
        x = exact.step(model(exact.scale_model_input(x, t), t), t, x, generator=g).prev_sample
    assert bool(torch.isfinite(x).all())


FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
MU_CLASSES = ["DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DEISMultistepScheduler"]


@pytest.mark.parametrize("cls", MU_CLASSES)
@pytest.mark.parametrize("extra, shown", [(FLOW, "use_dynamic_shifting=False, time_shift_type='exponential'"),
                                          (dict(FLOW, use_dynamic_shifting=True, time_shift_type="linear"),
                                           "use_dynamic_shifting=True, time_shift_type='linear'"),
                                          (SD, "use_dynamic_shifting=False, time_shift_type='exponential'")])
def test_mu_on_a_config_without_exponential_dynamic_shifting_names_the_keys_it_needs(cls, extra, shown):
    """diffusers' set_timesteps asserts use_dynamic_shifting and time_shift_type='exponential' when passed mu: a bare
    assert, whose empty message the shim forwarded ("DPMSolverMultistepScheduler.set_timesteps(6) refused: ")."""
    with pytest.raises(AssertionError):
        getattr(diffusers, cls)(**extra).set_timesteps(6, mu=0.9)
    shim = SamplerScheduler.from_config(getattr(diffusers, cls)(**extra))
    with pytest.raises(samplers.InvalidInput, match=rf"{cls}.set_timesteps\(num_inference_steps=6, mu=0.9\): mu is "
                       rf"read only with use_dynamic_shifting=True and time_shift_type='exponential'.*{shown}.*do not "
                       "pass mu"):
        shim.set_timesteps(6, mu=0.9)
    dynamic = SamplerScheduler.from_config(getattr(diffusers, cls)(**dict(FLOW, use_dynamic_shifting=True)))
    dynamic.set_timesteps(6, mu=0.9)  # the condition met: it runs


def test_a_bare_assert_of_the_class_is_shown_with_the_call(monkeypatch):
    """Any other bare assert inside a class's set_timesteps: its type and the whole call, not an empty message."""
    from samplers.interop import diffusers_sources

    monkeypatch.setattr(diffusers_sources, "check_mu", lambda *args: None)
    shim = SamplerScheduler.from_config(diffusers.DPMSolverMultistepScheduler(**FLOW))
    with pytest.raises(samplers.InvalidInput, match=r"DPMSolverMultistepScheduler.set_timesteps\(num_inference_steps"
                                                    r"=6, mu=0.9\) refused: a bare AssertionError, without a message"):
        shim.set_timesteps(6, mu=0.9)


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDPMScheduler", "LCMScheduler", "TCDScheduler"])
def test_a_zero_snr_epsilon_config_is_refused_in_the_configs_terms(cls):
    """rescale_betas_zero_snr=True with 'trailing' spacing starts at ᾱ = 0, where an ε model has no x0 (diffusers'
    latents are NaN). Refused as before, but the message named samplers.schedules.set_first, which no scheduler
    config can apply; now it names the keys and the config fixes."""
    config = dict(SD, rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False)
    ref = getattr(diffusers, cls)(**config)
    ref.set_timesteps(5)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    for t in ref.timesteps:
        x = ref.step(model(x, t), t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert bool(torch.isnan(x).any())
    shim = SamplerScheduler.from_config(getattr(diffusers, cls)(**config))
    with pytest.raises(samplers.InvalidOption, match=rf"{cls} with rescale_betas_zero_snr=True and prediction_type="
                       r"'epsilon' evaluates the model first at timestep 999, where ᾱ = 0.*prediction_type="
                       r"'v_prediction'.*rescale_betas_zero_snr=False.*Euler-family config") as refused:
        shim.set_timesteps(5)
    assert "set_first" not in str(refused.value)


@pytest.mark.parametrize("extra, shown", [(dict(sigma_min=20.0, sigma_max=1.0), "sigma_min=20.0 and sigma_max=1.0"),
                                          (dict(sigma_min=20.0), "sigma_min=20.0 and sigma_max=None")])
@pytest.mark.parametrize("grid", ["use_karras_sigmas", "use_exponential_sigmas"])
def test_euler_sigma_min_above_sigma_max_is_refused_naming_the_keys(extra, shown, grid):
    """diffusers builds ascending sigmas there and runs them silently; the shim refused them as an ascending sigmas
    list, naming samplers.schedules.flip rather than the config's keys. Left unread (no karras / exponential
    sigmas), the keys change nothing and the config runs, as in diffusers."""
    config = dict(SD, **extra, **{grid: True})
    ref = diffusers.EulerDiscreteScheduler(**config)
    ref.set_timesteps(5)
    assert float(ref.sigmas[0]) < float(ref.sigmas[-2])
    shim = SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler(**config))
    with pytest.raises(samplers.InvalidOption, match=rf"EulerDiscreteScheduler with {shown} .*ascending.*Set "
                                                     "sigma_min below sigma_max") as refused:
        shim.set_timesteps(5)
    assert "flip" not in str(refused.value)
    SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler(**dict(SD, **extra))).set_timesteps(5)


def test_unipcs_repeated_final_sigma_on_a_flow_grid_names_the_option_it_sets():
    """use_flow_sigmas with final_sigmas_type='sigma_min' repeats t_min by itself; the message blamed
    use_karras/exponential/beta_sigmas, which the config does not set."""
    config = dict(FLOW, final_sigmas_type="sigma_min")
    shim = SamplerScheduler.from_config(diffusers.UniPCMultistepScheduler(**config))
    with pytest.raises(samplers.InvalidOption, match=r"UniPCMultistepScheduler with use_flow_sigmas=True and "
                                                     r"final_sigmas_type='sigma_min' repeats its final σ") as refused:
        shim.set_timesteps(5)
    assert "karras" not in str(refused.value)
    karras = SamplerScheduler.from_config(diffusers.UniPCMultistepScheduler(**SD, use_karras_sigmas=True,
                                                                             final_sigmas_type="sigma_min"))
    with pytest.raises(samplers.InvalidOption, match=r"with use_karras_sigmas=True and final_sigmas_type='sigma_min'"):
        karras.set_timesteps(5)


@pytest.mark.parametrize("cls", ["LCMScheduler", "TCDScheduler"])
@pytest.mark.parametrize("where", ["config", "argument"])
def test_original_inference_steps_of_0_is_refused_naming_the_key(cls, where):
    """LCM's num_train_timesteps // original_inference_steps: 0 was a raw ZeroDivisionError (from the config, or
    LCM's set_timesteps argument)."""
    zero = {"original_inference_steps": 0}
    config, passed = (zero, {}) if where == "config" else ({}, zero)
    shim = SamplerScheduler.from_config(getattr(diffusers, cls)(**SD, **config))
    with pytest.raises(samplers.InvalidInput, match=rf"{cls}.set_timesteps\(num_inference_steps=4.*\): "
                                                    r"original_inference_steps=0 \((passed to set_timesteps|from the "
                                                    r"config)\) is the step count .* at least 1"):
        shim.set_timesteps(4, **passed)


def test_invert_sigmas_refusal_names_a_fix():
    with pytest.raises(samplers.InvalidOption, match="keep diffusers' FlowMatchEulerDiscreteScheduler for such a "
                                                     "model, or set invert_sigmas=False"):
        SamplerScheduler.from_config(diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=True))


def test_a_continuous_epsilon_euler_config_still_has_index_timesteps_and_their_range_is_checked():
    """diffusers' Euler feeds ¼·ln σ only for timestep_type="continuous" with v_prediction; with epsilon its
    timesteps stay indices of the training table, so steps_offset=150 at 10 steps (150 … 1050) is refused as with
    timestep_type="discrete"."""
    for kind in ("continuous", "discrete"):
        config = dict(SD, timestep_type=kind, prediction_type="epsilon", timestep_spacing="leading", steps_offset=150)
        with pytest.raises(samplers.InvalidInput, match="run outside the 1000 training timesteps"):
            SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler(**config)).set_timesteps(10)


@pytest.mark.parametrize("cls", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_beta_sigmas_whose_first_timesteps_repeat_match_diffusers_in_a_pipelines_loop(cls):
    """use_beta_sigmas on SD's table at 50 steps starts 998, 998, …: diffusers runs it where the pipeline sets its
    begin index (SDXL, Flux and most pipelines call set_begin_index(0)), and so does the shim, to its result."""
    config = dict(SD, use_beta_sigmas=True)

    def run(scheduler):
        scheduler.set_timesteps(50)
        scheduler.set_begin_index(0)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        return x

    ref = getattr(diffusers, cls)(**config)
    ref.set_timesteps(50)
    assert ref.timesteps.tolist().count(ref.timesteps[0].item()) > 1
    want = run(getattr(diffusers, cls)(**config))
    got = run(SamplerScheduler.from_config(getattr(diffusers, cls)(**config)))
    assert float((got - want).abs().max()) / max(1.0, float(want.abs().max())) <= 1e-5


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                                 "KDPM2DiscreteScheduler", "LMSDiscreteScheduler", "DDIMScheduler",
                                 "DPMSolverMultistepScheduler"])
def test_init_noise_sigma_is_the_source_class_own_value_and_type(cls):
    """The Euler family's init_noise_sigma is a 0-d tensor in diffusers (code calls .item() or .to() on it); the
    shim gave a float."""
    config = dict(SD, clip_sample=False) if cls == "DDIMScheduler" else SD
    ref = getattr(diffusers, cls)(**config)
    ref.set_timesteps(10)
    shim = SamplerScheduler.from_config(getattr(diffusers, cls)(**config))
    shim.set_timesteps(10)
    assert type(shim.init_noise_sigma) is type(ref.init_noise_sigma)
    assert float(shim.init_noise_sigma) == float(ref.init_noise_sigma)
    read = shim.init_noise_sigma
    if isinstance(read, torch.Tensor):  # a fresh value per read: editing it leaves the scheduler's alone
        read *= 2
        assert float(shim.init_noise_sigma) == float(ref.init_noise_sigma)


def _bigger(x, t):
    """A model with larger outputs and gain than ``model`` (|output| up to ~6), where float32 weights show most."""
    s = float(torch.as_tensor(t).reshape(-1)[0])
    return 3.0 * (0.5 * x * math.cos(s / 300.0) + 0.4 * torch.sin(2 * x + s / 200.0))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside diffusers' DEIS
@pytest.mark.parametrize("order,n", [(3, 20), (3, 50), (2, 50)])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_deis_steps_with_diffusers_float32_weights_at_many_steps(order, n, prediction):
    """DEISMultistepScheduler's weights are differences of log-ρ antiderivatives taken in float32, which cancel at
    small steps: at order 3 and 50 steps its image is up to 2.2e-3 of the latents' scale from the exact weights'.
    The shim takes its weights as it rounds them (``weights="diffusers"``); exact weights are an explicit option."""
    config = dict(SD, _class_name="DEISMultistepScheduler", solver_order=order, prediction_type=prediction)

    def run(scheduler):
        scheduler.set_timesteps(n)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(_bigger(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        return x.double()

    ref = run(diffusers.DEISMultistepScheduler.from_config(config))
    scale = max(1.0, float(ref.abs().max()))
    ours = SamplerScheduler.from_config(config)
    gap = float((run(ours) - ref).abs().max()) / scale
    assert gap <= 1e-5, gap
    assert ours._options["weights"] == "diffusers"
    exact = SamplerScheduler.from_config(config, sampler_options={"weights": "exact"})
    assert float((run(exact) - ref).abs().max()) / scale > 10 * max(gap, 1e-6)  # the rounding is real here


def test_deis_weights_option_is_checked_before_any_model_call():
    x, sig = torch.zeros(1, 2), torch.tensor([2.0, 1.0, 0.5])

    def never(x, s):
        raise AssertionError("the model was called")

    with pytest.raises(samplers.InvalidOption, match="weights must be one of"):
        samplers.sample("deis", never, x, sig, weights="float32")
    with pytest.raises(samplers.InvalidOption, match="weights='diffusers' with mode='tab'"):
        samplers.sample("deis", never, x, sig, mode="tab", weights="diffusers")


@pytest.mark.parametrize("kw", [dict(sampler="comfyui:deis"), dict(sampler="DEIS"), dict(sampler_options={"mode": "tab"})])
def test_deis_tab_runs_on_a_deis_config_without_the_class_float32_weights(kw):
    """DEIS-tAB (ComfyUI's DEIS) has its own weights: the class's float32 ρAB weights are left out, not refused."""
    config = dict(SD, _class_name="DEISMultistepScheduler", solver_order=3)
    scheduler = SamplerScheduler.from_config(config, **kw)
    out = loop(scheduler, 10)
    assert scheduler._options["mode"] == "tab" and "weights" not in scheduler._options
    assert bool(torch.isfinite(out).all())
    with pytest.raises(samplers.InvalidOption, match="weights='diffusers' with mode='tab'"):
        SamplerScheduler.from_config(config, sampler_options={"mode": "tab", "weights": "diffusers"}).set_timesteps(10)


def _sasolver_coefficients(ref, i: int, order: int, tau, corrector: bool):
    """SASolverScheduler's own coefficients (c_x, [c_j], c_n) of the predictor (corrector) of step ``i``, read off its
    update functions with unit inputs: one of the sample, a model output and the noise is ones and the rest zeros,
    so the step returns that coefficient exactly (its other terms are exact zeros)."""
    zero, one = torch.zeros(1), torch.ones(1)
    ref._step_index = i

    def step(x, outputs, noise):  # outputs newest first
        if corrector:
            ref.model_outputs = [zero] * 4 + list(outputs[1:][::-1])
            return ref.stochastic_adams_moulton_update(this_model_output=outputs[0], last_sample=x, last_noise=noise,
                                                       this_sample=zero, order=order, tau=tau)
        ref.model_outputs = [zero] * 4 + list(outputs[::-1])
        return ref.stochastic_adams_bashforth_update(model_output=zero, sample=x, noise=noise, order=order, tau=tau)

    zeros = [zero] * order
    return (step(one, zeros, zero), [step(zero, [one if k == j else zero for k in range(order)], zero)
                                     for j in range(order)], step(zero, zeros, one))


def test_sa_solver_diffusers_weights_are_sasolverschedulers_float32_coefficients_bit_for_bit():
    """SASolverScheduler computes its coefficients in float32 (closed-form exponential integrals times its expanded
    Lagrange polynomials in λ, which cancel at small steps); the shim ran the exact ones (up to 1.3e-3 of the latents'
    scale from its image, tests/test_shim_bounds.py). ``sa_solver(weights="diffusers")`` computes them as it does:
    the same bits for predictor and corrector, orders 1-4, its default τ (0 and 1) and a τ of another tau_func."""
    from samplers.sde.solvers import sa_diffusers_step_coefficients

    differ = []
    for n in (5, 10, 50):
        ref = diffusers.SASolverScheduler(**SD)
        ref.set_timesteps(n)
        sigmas = ref.sigmas.tolist()
        for order in (1, 2, 3, 4):
            for corrector in (False, True):
                # the first step whose nodes exist (an order-2 predictor reads σ_{i−1} too)
                for i in range(max(order - 1, 1 if corrector or order == 2 else 0), n):
                    for tau in (0, 1, 0.7):
                        theirs = _sasolver_coefficients(ref, i, order, tau, corrector)
                        c_x, c, c_n = sa_diffusers_step_coefficients(sigmas, i, order, tau, corrector)
                        ours = (c_x.reshape(1), [cj.reshape(1) for cj in c], c_n.reshape(1))
                        same = (torch.equal(ours[0], theirs[0]) and torch.equal(ours[2], theirs[2])
                                and all(torch.equal(a, b) for a, b in zip(ours[1], theirs[1])))
                        if not same:
                            differ.append((n, order, corrector, i, tau))
    assert not differ, differ[:5]


def test_sa_solver_weights_option_is_checked_before_any_model_call():
    """``weights="diffusers"`` is SASolverScheduler's computation: orders 1-4 (its get_coefficients_fn) and its
    simplified order-2 weights; anything else is refused by name, with the fix, before the model is called."""
    x, sig = torch.zeros(1, 2), torch.tensor([2.0, 1.0, 0.5, 0.2])

    def never(x, s):
        raise AssertionError("the model was called")

    with pytest.raises(samplers.InvalidOption, match="weights must be one of"):
        samplers.sample("sa_solver", never, x, sig, weights="float32")
    with pytest.raises(samplers.InvalidOption, match="with simple_order_2=False.*pass simple_order_2=True"):
        samplers.sample("sa_solver", never, x, sig, weights="diffusers")
    with pytest.raises(samplers.InvalidOption, match="predictor_order=5 .* orders 1-4 only"):
        samplers.sample("sa_solver_pece", never, x, sig, weights="diffusers", simple_order_2=True, predictor_order=5)
    with pytest.raises(samplers.InvalidOption, match="takes no weights"):
        samplers.sample("comfyui:sa_solver", never, x, sig, weights="diffusers")


def test_sa_solver_diffusers_weights_that_are_not_finite_are_refused_before_any_model_call():
    """SASolverScheduler's float32 coefficients depend on σ and τ only, so they are all computed and checked before
    the first model call. They were computed step by step in the loop and never checked: at EDM's σ range with τ = 4
    (its e^((1+τ²)λ)·λ^k overflows float32) and on two σ equal in float32 (a zero λ difference it divides by) the run
    failed with NonFiniteError after every model call (10 and 5), blaming the model's fp16."""
    from samplers.sde.solvers import sa_diffusers_step_coefficients

    gm = GaussianMixture.default()
    calls = [0]

    def counted(x, s):
        calls[0] += 1
        return gm.denoise(x, s)

    x = torch.randn(2, *gm.shape, generator=torch.Generator().manual_seed(0))
    edm = samplers.get_sigmas("karras", 10, sigma_min=0.002, sigma_max=80.0).tolist()
    close = [10.0, 2.0, 1.0 + 1e-12, 1.0, 0.5, 0.0]  # strictly decreasing; 1 + 1e-12 is 1 in float32
    cases = [(edm, dict(tau_func=lambda s, n: 4.0), r"predictor of step 8 \(σ 0\.0204.* τ = 4\).*overflow float32 .*"
              r"\(1\+τ²\)·\|λ_t\| = 106.*use weights='exact'.*or a smaller τ"),
             (close, dict(eta=0.0), r"corrector of step 3 \(σ 1\.000000000001 → 1\.0, order 4, τ = 0\).*σ "
              r"1\.000000000001 and 1\.0 are one λ in float32.*give σ that are distinct in float32")]
    for sig, kw, match in cases:
        calls[0] = 0
        with pytest.raises(samplers.InvalidOption, match=match):
            samplers.sample("sa_solver", counted, x, sig, disable=True, seed=0, simple_order_2=True,
                            weights="diffusers", **kw)
        assert calls[0] == 0, f"refused after {calls[0]} model calls"
    # the coefficient refused is the class's own (bit for bit, the test above): its run would be NaN
    assert not torch.isfinite(sa_diffusers_step_coefficients(edm, 8, 3, 4.0, corrector=False)[1][0])
    assert not torch.isfinite(sa_diffusers_step_coefficients(close, 3, 4, 0.0, corrector=True)[1][0])
    # the fix the message names runs: the exact weights are finite at that τ
    out = samplers.sample("sa_solver", gm.denoise, x * 80, edm, disable=True, seed=0, simple_order_2=True,
                          weights="exact", tau_func=lambda s, n: 4.0)
    assert bool(torch.isfinite(out).all())


def test_sasolver_config_whose_float32_coefficients_overflow_is_refused_before_any_model_call():
    """SASolverScheduler with τ = 5 on SD's betas: (1+τ²)·λ at its last σ (0.029) overflows its float32 integrals and
    its own image is NaN after every model call; the shim refuses it before the first, and runs the exact weights."""
    calls = [0]

    def counted(x, t):
        calls[0] += 1
        return model(x, t)

    ref = diffusers.SASolverScheduler(**SD, tau_func=lambda t: 5.0)
    assert not bool(torch.isfinite(loop(ref, 10)).all())
    config = dict(SD, _class_name="SASolverScheduler")
    shim = SamplerScheduler.from_config(config, tau_func=lambda t: 5.0)
    with pytest.raises(samplers.InvalidOption, match=r"overflow float32.*use weights='exact'"):
        shim.set_timesteps(10)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)) * shim.init_noise_sigma
        for t in shim.timesteps:
            x = shim.step(counted(shim.scale_model_input(x, t), t), t, x).prev_sample
    assert calls[0] == 0, f"refused after {calls[0]} model calls"
    exact = SamplerScheduler.from_config(config, tau_func=lambda t: 5.0, sampler_options={"weights": "exact"})
    assert bool(torch.isfinite(loop(exact, 10)).all())

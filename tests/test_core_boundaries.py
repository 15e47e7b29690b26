"""The core API's inputs, refused at the boundary or read as one thing (an audit of 2026-12-06): values a check
took but the run read otherwise (a bool tensor as 1, a 0-d tensor order, a numpy number refused where the Python one
passes), parameters a schedule or noise schedule silently ignored (vp's eps_s beside σ_min, a second training table,
VPContinuous's other kind's parameters, a flag given as a string), and bare errors from deep inside a run."""
import numpy as np
import pytest
import torch

import samplers
from samplers.core.native import RectifiedFlow, VPContinuous, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=3, seed=2)
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
EPS = samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP)
SIG = samplers.get_sigmas("karras", 4, native=VP)


from test_sde_solvers import Counting  # noqa: E402 (a denoiser that counts its calls)


def _x(n=2, sigmas=SIG, seed=0):
    return samplers.initial_latent(torch.randn(n, *GM.shape, generator=torch.Generator().manual_seed(seed)), sigmas)


def test_seeds_3_refuses_stages_out_of_order_before_any_model_call():
    model = Counting(EPS)
    with pytest.raises(samplers.InvalidOption, match=r"seeds_3 needs 0 < r_1 < r_2 < 1.*got r_1=0.9, r_2=0.1"):
        samplers.sample("seeds_3", model, _x(), SIG, seed=0, r_1=0.9, r_2=0.1, disable=True)
    assert model.calls == 0


@pytest.mark.parametrize("call, match", [
    (lambda: samplers.sample("euler_ancestral", EPS, _x(), SIG, seed=torch.tensor(True), disable=True),
     "seed must be an integer or a 0-d integer tensor"),
    (lambda: samplers.get_sigmas("karras", torch.tensor(True), native=VP), "must be an integer, got tensor"),
    (lambda: samplers.sample("lms", EPS, _x(), SIG, order=torch.tensor(True), disable=True),
     "order must be an integer, got tensor"),
])
def test_a_bool_tensor_is_not_an_integer(call, match):
    with pytest.raises(samplers.InvalidType, match=match):
        call()


def test_an_option_runs_as_the_number_it_was_checked_as():
    sig = samplers.get_sigmas("karras", 8, native=VP)
    x = _x(sigmas=sig, seed=1)
    plain = samplers.sample("dpm_adaptive", EPS, x, sig, order=2, max_steps=500, disable=True)
    for order, max_steps in ((torch.tensor(2), np.int64(500)), (np.int32(2), torch.tensor(500))):
        # a 0-d tensor order made the step-size controller's coefficients float32 tensors (4.8e-7 off)
        assert torch.equal(samplers.sample("dpm_adaptive", EPS, x, sig, order=order, max_steps=max_steps,
                                           disable=True), plain)
    assert torch.equal(samplers.sample("dpmpp_2m_sde", EPS, _x(), SIG, eta=np.float32(0.5), seed=3, disable=True),
                       samplers.sample("dpmpp_2m_sde", EPS, _x(), SIG, eta=0.5, seed=3, disable=True))


@pytest.mark.parametrize("call", [
    lambda: VPDiscrete.from_betas("scaled_linear", 1000, np.float32(0.00085), np.float64(0.012)),
    lambda: samplers.get_sigmas("ays_sd15", 5, sigma_max=np.float32(14.615)),
    lambda: samplers.get_sigmas("ays_sd15", 5, sigma_max=torch.tensor(14.615, dtype=torch.float64)),
    lambda: samplers.get_sigmas("flow_dynamic", 3, native=RectifiedFlow(), image_seq_len=np.int64(4096)),
])
def test_numpy_and_0d_numbers_pass_where_the_python_number_does(call):
    call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: samplers.get_sigmas("vp", 4, sigma_min=0.1, sigma_max=10.0, eps_s=0.5), samplers.InvalidInput,
     "eps_s=0.5 .* and sigma_min=0.1 .* both set the lower end"),
    (lambda: samplers.get_sigmas("vp", 4, native=VP, eps_s=0.5), samplers.InvalidInput, "both set the lower end"),
    (lambda: samplers.get_sigmas("trailing", 3, native=VP, training_sigmas=torch.linspace(0.1, 5, 10)),
     samplers.InvalidInput, "got training_sigmas and native=, which has a training table of its own"),
    (lambda: VPDiscrete.from_betas(rescale_betas_zero_snr="False"), samplers.InvalidType,
     "rescale_betas_zero_snr must be True or False, got 'False'"),
    (lambda: VPDiscrete.from_betas(quantize="no"), samplers.InvalidType, "quantize must be True or False"),
    (lambda: VPDiscrete(VP.alphas_cumprod.reshape(10, 100)), samplers.InvalidInput,
     r"alphas_cumprod must be a 1-D table .* got shape \(10, 100\)"),
    (lambda: VPContinuous("cosine", beta_min=5.0, beta_max=6.0), samplers.InvalidOption,
     r"VPContinuous\('cosine'\) does not read beta_min, beta_max .* pass kind='linear'"),
    (lambda: VPContinuous("linear", cosine_s=0.01), samplers.InvalidOption, "does not read cosine_s"),
])
def test_a_parameter_that_would_be_ignored_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("model", [VPContinuous("linear", beta_max=10.0), VPContinuous("linear", beta_min=0.5),
                                   VPContinuous("cosine"), VPContinuous("cosine", cosine_s=0.02, t_min=0.01)],
                         ids=["beta_max=10", "beta_min=0.5", "cosine", "cosine_s=0.02"])
def test_vp_on_a_continuous_vp_model_is_uniform_in_that_models_time(model):
    # the model's β's (or its cosine ᾱ) set the interior too, not only the ends: uniform in the model's own t
    sigmas = samplers.get_sigmas("vp", 6, native=model)
    assert sigmas[0] == pytest.approx(model.sigma_max, rel=1e-12) and sigmas[-2] == pytest.approx(model.sigma_min)
    t = model.time(sigmas[:-1]) / model.time_scale
    assert torch.allclose(t, torch.linspace(model.end_time, model.t_min, 6, dtype=torch.float64), rtol=0, atol=1e-9)


def test_the_cosine_vp_model_ends_at_dpm_solvers_time_not_at_float64s_sigma_of_t_1():
    # ᾱ(1) = 0 came out as σ_max = 1.6e16 (float64's cos(π/2) = 6e-17), where the time input has no resolution left:
    # a default karras grid put 19 of its 20 steps above σ = 100 and Heun ended at |x| 3.8e7 (exact endpoint 4.7).
    # DPM-Solver's NoiseScheduleVP('cosine') ends at T = 0.9946 for this reason; so does the model here.
    from samplers.problems import GaussianMixture

    vc = VPContinuous("cosine")
    assert vc.sigma_max == pytest.approx(118.8237, rel=1e-6) and vc.time_at(vc.sigma_max) == pytest.approx(0.9946)
    assert repr(vc) == ("VPContinuous(kind='cosine', beta_min=0.1, beta_max=20.0, cosine_s=0.008, t_min=0.001, "
                        "time_scale=1.0)")  # a model's identity string (fitted solver files) as before
    assert VPContinuous("cosine", t_max=0.99).time_at(VPContinuous("cosine", t_max=0.99).sigma_max) == (
        pytest.approx(0.99))
    assert VPContinuous().sigma_max == VPContinuous(t_max=1.0).sigma_max  # the linear kind ends at t = 1
    assert float(samplers.get_sigmas("vp", 6, kind="cosine")[0]) == vc.sigma_max  # the vp schedule's own default
    gm = GaussianMixture.default(shape=(4, 4, 4))
    D = samplers.to_denoiser(gm.as_model("v", vc), "v", vc)
    noise = gm.noise(4, seed=0)
    sigmas = samplers.get_sigmas("karras", 20, native=vc)
    x = samplers.sample("heun", D, samplers.initial_latent(noise, sigmas), sigmas, disable=True)
    exact = gm.ode_endpoint(noise * float(sigmas[0]), float(sigmas[0]), rtol=1e-8, atol=1e-8)
    assert (x - exact).abs().max().item() < 0.1  # 0.072 (3.8e7 before)


@pytest.mark.parametrize("kw, match", [
    (dict(kind="cosine", t_max=1.0), r"t_max must be < 1 .*cosine ᾱ is 0, σ = inf, .* DPM-Solver ends at 0.9946"),
    (dict(t_max=1.5), "t_max must be <= 1"),
    (dict(t_min=0.5, t_max=0.4), r"t_max must be > 0.5 \(the end of the time range, above t_min"),
])
def test_a_continuous_vp_models_end_time_is_checked(kw, match):
    with pytest.raises(samplers.InvalidOption, match=match):
        VPContinuous(**kw)


def test_vp_with_the_default_model_is_the_default_vp_bit_for_bit():
    assert torch.equal(samplers.get_sigmas("vp", 7, native=VPContinuous()),
                       samplers.get_sigmas("vp", 7, sigma_max=VPContinuous().sigma_max, eps_s=1e-3))


@pytest.mark.parametrize("kw, match", [
    (dict(native=VPContinuous("linear", beta_max=10.0), beta_d=19.9), r"beta_d=19.9 and native=.*beta_d=9.9"),
    (dict(native=VPContinuous("cosine"), beta_min=0.2), r"beta_min=0.2 and native=.*kind='cosine'"),
    (dict(native=VPContinuous("linear"), kind="cosine"), r"kind='cosine' and native="),
    (dict(kind="cosine", beta_d=10.0), "kind='cosine' does not read beta_d / beta_min"),
    (dict(cosine_s=0.01), "cosine_s=0.01 is the cosine kind's offset"),
    (dict(kind="sigmoid"), "kind must be 'linear' .* or 'cosine'"),
])
def test_vp_parameters_another_model_or_kind_would_ignore_are_refused(kw, match):
    with pytest.raises(samplers.InvalidOption, match=match):
        samplers.get_sigmas("vp", 4, **kw)


def test_what_those_parameters_mean_alone_still_runs():
    assert samplers.get_sigmas("vp", 4, eps_s=0.5)[-2] == pytest.approx(
        float(torch.expm1(torch.tensor(19.9 * 0.25 / 2 + 0.1 * 0.5, dtype=torch.float64)).sqrt()))
    assert torch.equal(samplers.get_sigmas("trailing", 3, native=VP, training_sigmas=VP.sigmas),
                       samplers.get_sigmas("trailing", 3, native=VP))  # the same table twice: no contradiction
    assert VPContinuous("cosine", cosine_s=0.01).sigma_max > 0 and VPContinuous("linear", beta_max=10.0).sigma_max > 0


@pytest.mark.parametrize("call, error, match", [
    (lambda: samplers.sample("dpmpp_2m", EPS, _x(), SIG, solver_type=np.array([1, 2]), disable=True),
     samplers.InvalidOption, r"solver_type must be one of \('midpoint', 'heun'\)"),
    (lambda: samplers.sample("euler", EPS, _x().to("meta"), SIG, disable=True), samplers.InvalidInput,
     "x is on the 'meta' device"),
    (lambda: samplers.initial_latent(torch.ones(2, 3, dtype=torch.long), [10.0, 0.0]), samplers.InvalidType,
     "noise must be a floating-point tensor"),
    (lambda: samplers.initial_latent(torch.ones(2, 3, dtype=torch.bool), [float("inf"), 0.0]), samplers.InvalidType,
     "noise must be a floating-point tensor"),
    (lambda: samplers.initial_latent([1.0, 2.0], [10.0, 0.0]), samplers.InvalidType, "got list"),
])
def test_bad_inputs_get_the_librarys_error_not_a_bare_one(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_discrete_table_keeps_a_copy_of_the_callers_alphas_cumprod():
    # the caller's float64 table was kept by reference: an edit of it in place changed the σ A1111's table and the
    # schedules made from it later gave (σ_min, σ_max, read at construction, stayed), and the result depended on
    # whether a table had been made from it before the edit
    table = VP.alphas_cumprod.double().clone()
    vp = VPDiscrete(table)
    before = samplers.get_sigmas("a1111:Karras", 4, native=vp)
    table.mul_(0.5)
    assert torch.equal(vp.alphas_cumprod, VP.alphas_cumprod.double())
    assert torch.equal(samplers.get_sigmas("a1111:Karras", 4, native=vp), before)


def test_a_zero_snr_table_keeps_a_copy_of_the_callers_table_before_its_rescale():
    # from_alphas_cumprod(rescale_betas_zero_snr=True) kept the caller's own tensor as the table A1111's float32
    # rescale is redone from: an edit of it in place changed A1111's schedules (704.7 for 485.6 at karras 4 steps)
    table = VP.alphas_cumprod.double().clone()
    vp = VPDiscrete.from_alphas_cumprod(table, rescale_betas_zero_snr=True)
    kw = dict(native=vp, float32_alphas_cumprod=True, terminal_alpha_bar=4.897e-08)
    before = samplers.get_sigmas("karras", 4, **kw)
    table.mul_(0.5)
    assert torch.equal(samplers.get_sigmas("karras", 4, **kw), before)

"""The calls between a sampler and the model at the library's boundary: a model that writes into its input, the
k-diffusion call of a ``to_denoiser`` denoiser with other than floating latents and a σ tensor, and an adaptive run
on latents that require grad."""
import math
import warnings

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2), components=3, seed=1)
SIGMAS = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "heun", "euler_ancestral"])
def test_a_model_that_writes_into_its_input_is_refused_and_the_callers_latents_say_so(name, dtype):
    # x is the sampler's state (read again after the call) and, at the first call, the caller's own tensor: a model
    # that scales it in place changed the caller's latents by up to 10.9 and the run silently
    def model(x, sigma):
        out = GM.denoiser(x, sigma)
        x.mul_(0.5)
        return out

    x = (GM.noise(2, seed=0) * 10).to(dtype)
    with pytest.raises(samplers.InvalidInput, match="the model wrote into its input x in place"):
        samplers.sample(name, model, x, SIGMAS, disable=True, **({"seed": 0} if name == "euler_ancestral" else {}))


def test_a_model_that_reads_its_input_runs_as_before_also_on_inference_tensors():
    with torch.inference_mode():
        x = GM.noise(2, seed=0).float() * 10
        out = samplers.sample("euler", GM.denoiser, x, SIGMAS, disable=True)
    assert torch.isfinite(out).all()


def test_a_denoisers_k_diffusion_call_refuses_integer_latents_and_a_sigma_of_another_batch():
    vp = samplers.VPDiscrete.from_betas()
    D = samplers.to_denoiser(GM.as_model("eps", vp), "eps", vp)
    x = GM.noise(2, seed=0).float() * 5
    with pytest.raises(samplers.InvalidType, match="floating-point tensor .* got torch.int32"):
        D(x.int(), torch.tensor([5.5, 5.5]))  # σ would have been cast to the integer 5
    with pytest.raises(samplers.InvalidInput, match=r"one σ or one per item .* got shape \(3,\)"):
        D(x, torch.tensor([5.5, 5.5, 5.5]))
    with pytest.raises(samplers.InvalidInput, match="got float; for a Python float σ call denoise_at"):
        D(x, 5.5)
    # one σ for the batch, [] or [1], is k-diffusion's broadcast
    assert torch.equal(D(x, torch.tensor(5.5)), D(x, torch.tensor([5.5, 5.5])))
    assert torch.equal(D(x, torch.tensor([5.5])), D(x, torch.tensor([5.5, 5.5])))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_a_denoisers_k_diffusion_call_refuses_a_sigma_that_is_not_floating_point(dtype):
    # the time input was computed in σ's dtype: torch.full((2,), 2) reached a VPContinuous network as t = 0 (0.397
    # for the float 2.0), D about 1 off, with no error; refused before the model call, as an integer x is
    calls = []

    def net(x_t, t):
        calls.append(t)
        return x_t * t.reshape(-1, 1, 1)

    D = samplers.to_denoiser(net, "eps", samplers.core.native.VPContinuous())
    x = GM.noise(2, seed=0).float()
    with pytest.raises(samplers.InvalidType, match=rf"sigma must be a floating-point tensor, got a {dtype} tensor "
                                                   r"\[.*pass a float tensor"):
        D(x, torch.full((2,), 2).to(dtype))
    assert calls == []
    D(x, torch.full((2,), 2.0))
    assert calls[0].tolist() == pytest.approx([0.3972] * 2, abs=1e-4)


def test_dpm_adaptive_on_latents_that_require_grad_reads_its_error_without_a_warning():
    x = (GM.noise(2, seed=0).double() * 10).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Converting a tensor with requires_grad=True to a scalar" on every step
        samplers.sample("dpm_adaptive", GM.denoiser, x, torch.tensor([10.0, 0.1], dtype=torch.float64), disable=True)


def test_initial_latent_checks_the_noise_and_sigmas_as_a_run_checks_them():
    noise = GM.noise(2, seed=0).float()
    with pytest.raises(samplers.NonFiniteError, match="overflows torch.float16"):
        samplers.initial_latent(noise.half(), [1e5, 0.0])  # was inf returned, blamed later on how x was built
    with pytest.raises(samplers.InvalidInput):
        samplers.initial_latent(noise, [1e30, 0.0])  # beyond float32's state, as samplers.sample refuses it
    with pytest.raises(samplers.InvalidType, match="float8"):
        samplers.initial_latent(noise.to(torch.float8_e4m3fn), [10.0, 0.0])
    with pytest.raises(samplers.InvalidType, match="a sequence of noise levels .* got a dict"):
        samplers.initial_latent(noise, {10.0: 0})
    for bad, said in ((noise[:0], "batch dimension first"), (torch.empty(2, 2, 2, device="meta"), "'meta' device")):
        with pytest.raises(samplers.InvalidInput, match=said):
            samplers.initial_latent(bad, [10.0, 0.0])
    assert torch.equal(samplers.initial_latent(noise.half(), [10.0, 0.0]), noise.half() * 10.0)


def test_a_noise_sampler_that_cannot_take_sigma_and_sigma_next_is_refused_before_any_model_call():
    calls = []

    def model(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)

    x = (GM.noise(2, seed=0) * 10).float()
    for bad in (lambda: torch.randn(2, 2, 2), lambda sigma: torch.randn(2, 2, 2)):
        with pytest.raises(samplers.InvalidType, match=r"cannot take the call noise_sampler\(sigma, sigma_next\)"):
            samplers.sample("euler_ancestral", model, x, SIGMAS, disable=True, noise_sampler=bad)
    assert calls == []
    g = torch.Generator().manual_seed(0)
    out = samplers.sample("euler_ancestral", model, x, SIGMAS, disable=True,
                          noise_sampler=lambda *args: torch.randn(x.shape, generator=g))  # any two positionals
    assert torch.isfinite(out).all()


def test_the_tensor_calls_sigma_check_is_no_counted_host_read():
    # a CPU σ is checked (NaN, -inf; inf on an eps model) through numpy: count_host_reads, which stands for the
    # device synchronisations of a GPU run (where this σ is not read), counted one read per model call
    from samplers.core.graph import count_host_reads

    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    D = samplers.to_denoiser(lambda x_t, t: 0.1 * x_t, "eps", vp)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    with count_host_reads() as reads:
        D(x, torch.tensor([1.0, 2.0]))
    assert reads["n"] == 0
    for bad in (float("inf"), float("nan"), -float("inf")):
        with pytest.raises(samplers.InvalidInput, match="has no value"):
            D(x, torch.tensor([1.0, bad]).bfloat16())


FINITE_END = {"v / VPContinuous": ("v", samplers.core.native.VPContinuous()),
              "x0 / SD table": ("x0", samplers.VPDiscrete.from_betas()),
              "v / SD table": ("v", samplers.VPDiscrete.from_betas()),
              "edm / VE": ("edm", samplers.core.native.VE())}


@pytest.mark.parametrize("key", list(FINITE_END))
def test_sigma_inf_is_refused_on_both_calls_where_the_models_schedule_ends_below_it(key):
    # only an eps / score model was refused at σ = inf: a v model on VPContinuous was called at time inf (NaN in a
    # sinusoidal embedding), one on SD's table at timestep 999 with x as if it were unit noise (a finite, wrong D)
    prediction, native = FINITE_END[key]
    calls = []

    def net(x_t, t):
        calls.append(t)
        return x_t * 0.5

    D = samplers.to_denoiser(net, prediction, native)
    assert D.supports_infinite_sigma is False
    x = GM.noise(2, seed=0).float()
    said = rf"cannot be evaluated at sigma = inf\): its schedule .* ends at sigma_max = {native.sigma_max:.6g}, not"
    with pytest.raises(samplers.InvalidInput, match=said):
        D(x, torch.tensor([1.0, math.inf]))
    with pytest.raises(samplers.InvalidInput, match=said):
        D.denoise_at(x, math.inf)
    assert calls == []


@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_denoise_at_refuses_the_sigma_the_tensor_call_refuses_and_takes_a_negative_one_as_it(value):
    # denoise_at(x, nan) called the model at timestep 0 and returned all NaN, where D(x, tensor(nan)) refused
    vp = samplers.VPDiscrete.from_betas()
    calls = []

    def net(x_t, t):
        calls.append(t)
        return x_t * 0.5

    D = samplers.to_denoiser(net, "eps", vp)
    x = GM.noise(2, seed=0).float()
    for call in (lambda: D(x, torch.tensor([value, value])), lambda: D.denoise_at(x, value)):
        with pytest.raises(samplers.InvalidInput, match=f"sigma holds {value}, at which it has no value"):
            call()
    assert calls == []
    # a σ just past 0 (an ODE stage evaluates there, design.md) runs on both paths alike, at timestep 0
    torch.testing.assert_close(D.denoise_at(x.double(), -1e-3), D(x.double(), torch.tensor([-1e-3, -1e-3]).double()))
    assert [t.tolist() for t in calls] == [[0.0, 0.0], [0.0, 0.0]]


def test_a_run_from_sigma_inf_names_the_real_reason_it_is_refused():
    # a v model on a finite table was told "an eps- or score-prediction model carries no signal information at
    # zero SNR ... or use a v/x0/flow model"
    from models.guidance import CFGDenoiser

    sigmas = torch.tensor([math.inf, 5.0, 1.0, 0.0], dtype=torch.float64)
    x = GM.noise(2, seed=0).double()
    v_on_sd = samplers.to_denoiser(lambda x_t, t: x_t * 0.5, "v", samplers.VPDiscrete.from_betas())
    eps_on_zsnr = samplers.to_denoiser(lambda x_t, t: x_t * 0.5, "eps",
                                       samplers.VPDiscrete.from_betas(rescale_betas_zero_snr=True))
    for model, said in ((v_on_sd, r"its schedule .* ends at sigma_max = 14.6146, not at zero SNR.*rescale_betas_zero"),
                        (eps_on_zsnr, "an 'eps' model carries no information about x0 at zero SNR")):
        for wrapped in (model, CFGDenoiser(model, {}, {}, 2.0)):  # said through a guidance wrapper too
            with pytest.raises(samplers.InvalidInput, match="cannot be evaluated at sigma = inf: " + said) as caught:
                samplers.sample("euler", wrapped, x, sigmas, disable=True)
            assert ("a v / x0 / flow model" in str(caught.value)) == (model is eps_on_zsnr)

"""The conversion layer: every native parameterization gives the same canonical denoiser D(x, σ)."""
import math

import pytest
import torch

import samplers
from samplers.core import conversion as param
from samplers.core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete, flux_mu
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(3, 2, 2), components=5, seed=1)
SCHEDULES = {
    "vp_discrete": VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012),
    "vp_linear_betas": VPDiscrete.from_betas("linear", 1000, 0.0001, 0.02),
    "vp_cosine_betas": VPDiscrete.from_betas("squaredcos_cap_v2", 1000),
    "vp_continuous_linear": VPContinuous("linear", time_scale=1000.0),
    "vp_continuous_cosine": VPContinuous("cosine"),
    "ve": VE(time_input="sigma"),
    "edm": VE(time_input="edm"),
    "flow": RectifiedFlow(shift=3.0),
}
PREDICTIONS = ["eps", "x0", "v", "flow", "score"]


def x_at(sigma, batch=4, seed=0):
    x0 = GM.sample(batch, seed=seed)
    return x0 + GM.noise(batch, seed=seed + 1) * sigma


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_prediction_on_every_schedule_gives_the_exact_denoiser(schedule, prediction):
    native = SCHEDULES[schedule]
    D = samplers.to_denoiser(GM.as_model(prediction, native), prediction, native)
    for sigma in (0.05, 0.7, 3.0, 14.0):
        x = x_at(sigma)
        s = torch.full((4,), sigma, dtype=torch.float64)
        torch.testing.assert_close(D(x, s), GM.denoise(x, s), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["x0", "v", "flow"])
@pytest.mark.parametrize("native", [RectifiedFlow(), VPDiscrete.from_betas(rescale_betas_zero_snr=True)],
                         ids=["flow", "vp_zero_snr"])
def test_infinite_sigma_is_exact(prediction, native):
    """At σ = inf the state is the unit noise and D is the data mean (no clamping anywhere)."""
    assert math.isinf(native.sigma_max)
    D = samplers.to_denoiser(GM.as_model(prediction, native), prediction, native)
    n = GM.noise(4, seed=3)
    s = torch.full((4,), math.inf, dtype=torch.float64)
    out = D(n, s)
    assert bool(torch.isfinite(out).all())
    mean = (GM.weights[:, None] * GM.means).sum(0).reshape(GM.shape)
    torch.testing.assert_close(out, mean.expand_as(out), rtol=1e-9, atol=1e-9)


def test_conversions_match_the_definition_not_just_each_other():
    """Build x_t = a·x0 + b·n from known x0 and n, and check each prediction type's target by its definition."""
    x0, n = GM.sample(4, seed=2), GM.noise(4, seed=9)
    for native in SCHEDULES.values():
        sigma = torch.tensor(1.7, dtype=torch.float64)
        a, b = native.coefficients(sigma)
        x_t = a * x0 + b * n
        torch.testing.assert_close(param.from_x0("eps", x0, x_t, a, b), n)
        torch.testing.assert_close(param.from_x0("score", x0, x_t, a, b), -n / b)
        r = (a * a + b * b).sqrt()
        torch.testing.assert_close(param.from_x0("v", x0, x_t, a, b), (a * n - b * x0) / r)
        torch.testing.assert_close(param.from_x0("flow", x0, x_t, a, b), n - x0)
        for p in PREDICTIONS:
            torch.testing.assert_close(param.to_x0(p, param.from_x0(p, x0, x_t, a, b), x_t, a, b), x0)
    # VP: a² + b² = 1 and σ = b / a; flow: a + b = 1
    vp = SCHEDULES["vp_discrete"]
    a, b = vp.coefficients(torch.tensor(2.0, dtype=torch.float64))
    assert abs(float(a * a + b * b) - 1) < 1e-12 and abs(float(b / a) - 2) < 1e-12
    a, b = RectifiedFlow().coefficients(torch.tensor(2.0, dtype=torch.float64))
    assert abs(float(a + b) - 1) < 1e-12 and abs(float(b / a) - 2) < 1e-12


def test_edm_preconditioning():
    native = VE(time_input="edm")
    sigma_data = 0.5

    def model(x_in, c_noise):  # F such that c_skip·x + c_out·F is exact
        sigma = native.sigma_of_time(c_noise).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in = param.edm_scalings(sigma, sigma_data)
        x = x_in / c_in
        return (GM.denoise(x, sigma.flatten()) - c_skip * x) / c_out

    D = samplers.to_denoiser(model, "edm", native, sigma_data=sigma_data)
    x = x_at(2.5)
    s = torch.full((4,), 2.5, dtype=torch.float64)
    torch.testing.assert_close(D(x, s), GM.denoise(x, s))
    assert torch.allclose(native.time(s), s.log() / 4)


def test_vp_discrete_time_is_the_inverse_of_sigma_and_exact_on_the_table():
    vp = VPDiscrete.from_betas()
    t = torch.tensor([0.0, 1.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(vp.time(vp.sigma_of_time(t)), t)
    frac = torch.tensor([0.25, 10.5, 998.9], dtype=torch.float64)
    torch.testing.assert_close(vp.time(vp.sigma_of_time(frac)), frac)
    # log-σ interpolation between entries, and quantize rounds
    mid = (vp.sigmas[10].log() + vp.sigmas[11].log()).div(2).exp().reshape(1)
    assert abs(float(vp.time(mid)) - 10.5) < 1e-9
    q = VPDiscrete(vp.alphas_cumprod, quantize=True)
    assert float(q.time(vp.sigma_of_time(torch.tensor([10.4], dtype=torch.float64)))) == 10.0
    # sigma = sqrt((1 - ᾱ)/ᾱ)
    ab = vp.alphas_cumprod
    torch.testing.assert_close(vp.sigmas, ((1 - ab) / ab).sqrt())


def test_zero_terminal_snr_rescale():
    zs = VPDiscrete.from_betas(rescale_betas_zero_snr=True)
    assert float(zs.alphas_cumprod[-1]) == 0.0 and math.isinf(zs.sigma_max)
    base = VPDiscrete.from_betas()
    assert abs(float(zs.alphas_cumprod[0] - base.alphas_cumprod[0])) < 1e-12
    assert float(zs.time(torch.tensor([math.inf]))) == 999.0


def test_vp_continuous_time_inverse():
    for native in (VPContinuous("linear"), VPContinuous("cosine"), VPContinuous("linear", time_scale=1000.0)):
        t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64) * native.time_scale
        torch.testing.assert_close(native.time(native.sigma_of_time(t)), t)


def test_flow_shift_is_a_sigma_rescale_and_flux_mu():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    s = 3.0
    shifted_t = s * t / (1 + (s - 1) * t)  # SD3's time shift
    torch.testing.assert_close(shifted_t / (1 - shifted_t), s * t / (1 - t))
    assert abs(flux_mu(256) - 0.5) < 1e-12 and abs(flux_mu(4096) - 1.15) < 1e-12
    assert abs(RectifiedFlow.dynamic(flux_mu(4096)).shift - math.exp(1.15)) < 1e-12
    rf = RectifiedFlow(multiplier=1000)
    torch.testing.assert_close(rf.time(torch.tensor([1.0, math.inf, 0.0])), torch.tensor([500.0, 1000.0, 0.0]))


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction type 'epsilonn'"):
        samplers.to_denoiser(lambda x, t: x, "epsilonn", VE())
    assert samplers.to_denoiser(lambda x, t: x, "v_prediction", VE()).prediction == "v"


def test_sigma_inf_is_refused_where_the_models_schedule_does_not_reach_it():
    """A v / x0 / flow prediction gives x0 at σ = inf only on a schedule defined there (zero-terminal-SNR VP, flow);
    on VE (σ_max 80) or an ordinary VP table the conversion's coefficients are NaN there: refused before any call."""
    calls = []

    def net(x, t):
        calls.append(1)
        return torch.zeros_like(x)

    sigmas = torch.tensor([math.inf, 2.0, 0.5, 0.0], dtype=torch.float64)
    noise = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for native in (VE(), VPDiscrete.from_betas()):
        with pytest.raises(ValueError, match="cannot be evaluated at sigma = inf"):
            samplers.sample("euler", samplers.to_denoiser(net, "v", native), noise, sigmas, disable=True)
    assert not calls
    for native, prediction in ((VPDiscrete.from_betas(rescale_betas_zero_snr=True), "v"), (RectifiedFlow(), "flow")):
        out = samplers.sample("euler", samplers.to_denoiser(net, prediction, native), noise, sigmas, disable=True)
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("latents, weights", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
                                              (torch.float16, torch.float16)])
def test_a_network_module_is_called_in_its_own_dtype(latents, weights):
    """to_denoiser knows a module's parameters: it is called in their dtype whatever the latents' (a float32 U-Net
    with bf16 latents, a bf16 one with float32 latents); the state stays float32."""
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)

    class Eps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4).to(weights)
            self.seen = set()

        def forward(self, x_t, t):
            self.seen.add(x_t.dtype)
            return self.lin(x_t.movedim(1, -1)).movedim(-1, 1)

    net = Eps()
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)).to(latents) * 14.0
    out = samplers.sample("dpmpp_2m", samplers.to_denoiser(net, "eps", vp), x,
                          samplers.get_sigmas("karras", 4, native=vp), disable=True)
    assert net.seen == {weights} and out.dtype == latents and bool(torch.isfinite(out).all())


def test_a_module_moved_to_another_dtype_after_wrapping_is_called_in_that_one():
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    lin = torch.nn.Linear(3, 3)
    den = samplers.to_denoiser(lambda x, t: x, "eps", vp)  # a plain callable: no module to read
    assert den._own_dtype() is None
    den = samplers.to_denoiser(lin, "eps", vp)
    lin.to(torch.bfloat16)
    assert den._own_dtype() == torch.bfloat16


@pytest.mark.parametrize("prediction, native", [
    ("v", VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)),
    ("eps", VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)),
    ("edm_v", VE(0.002, 700.0, "edm"))])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_a_k_diffusion_style_call_with_half_latents_converts_in_float32(prediction, native, half):
    """D(x, σ-tensor) with fp16 latents computed σ² in fp16: NaN from σ ≈ 256 (zero-SNR v) and 7e-3 off for SD's
    eps at σ = 14.6. Now the conversion is float32 (k-diffusion's wrappers promote too), the model still gets the
    latents' dtype, and D is float32."""
    seen = []

    def model(x_t, t):
        seen.append(x_t.dtype)
        return torch.tanh(x_t.float() * 0.5 + t.float().reshape(-1, 1, 1, 1) * 1e-3).to(x_t.dtype)
    D = samplers.to_denoiser(model, prediction, native)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for s in (1.0, 14.6, 300.0, 2254.0):
        if s > native.sigma_max:
            continue
        xs, sigma = (x * s).to(half), torch.full((2,), s)
        got = D(xs, sigma)
        want = samplers.to_denoiser(lambda x_t, t: model(x_t.to(half), t).float(), prediction, native)(xs.float(), sigma)
        assert got.dtype == torch.float32 and bool(torch.isfinite(got).all()), (s, got.dtype)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * max(1.0, s))
    assert set(seen) == {half}

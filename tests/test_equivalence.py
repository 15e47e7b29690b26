"""Samplers that are mathematically the same are numerically the same (float64, tight tolerance).

The native algorithms (DDIM in VP coordinates, flow-matching Euler in t, the DDPM posterior) are written
here from their papers, independently of the library, and compared with the registry samplers run
through the conversion layer.
"""
import math

import torch

import samplers
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 3, 3), components=4, seed=2)
VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
EPS_MODEL = GM.as_model("eps", VP)
D_EPS = samplers.to_denoiser(EPS_MODEL, "eps", VP)


def ddim_native(x_t, timesteps, eta=0.0, noises=None):
    """Song et al. (2021) eq. 12 on x_t with ᾱ from the table; timesteps descending, last step to ᾱ = 1."""
    ab = VP.alphas_cumprod
    for k, t in enumerate(timesteps):
        a_t = ab[t]
        a_prev = ab[timesteps[k + 1]] if k + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        eps = EPS_MODEL(x_t, torch.full((x_t.shape[0],), float(t), dtype=torch.float64))
        x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma_t = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        x_t = a_prev.sqrt() * x0 + (1 - a_prev - sigma_t**2).sqrt() * eps
        if eta > 0:
            x_t = x_t + sigma_t * noises[k]
    return x_t


def sigmas_of(timesteps):
    return torch.cat([VP.sigmas[timesteps], torch.zeros(1, dtype=torch.float64)])


TIMESTEPS = [999, 899, 749, 599, 399, 199, 59, 9]


def test_ddim_eta0_on_vp_eps_model_is_euler_on_the_converted_denoiser():
    noise = GM.noise(5, seed=1)
    native = ddim_native(noise, TIMESTEPS)
    sig = sigmas_of(TIMESTEPS)
    x = noise * math.sqrt(1 + float(sig[0]) ** 2)  # x_T / sqrt(ᾱ_T) in VE coordinates
    for name in ("euler", "ddim"):
        ours = samplers.sample(name, D_EPS, x, sig, disable=True)
        torch.testing.assert_close(ours, native, rtol=1e-10, atol=1e-10)


def test_ddpm_posterior_and_ddim_eta1_are_euler_ancestral_with_the_same_noise():
    noise = GM.noise(5, seed=1)
    noises = [GM.noise(5, seed=100 + k) for k in range(len(TIMESTEPS))]
    native = ddim_native(noise, TIMESTEPS, eta=1.0, noises=noises)
    sig = sigmas_of(TIMESTEPS)
    x = noise * math.sqrt(1 + float(sig[0]) ** 2)

    def replay():
        it = iter(noises)
        return lambda s, s_next: next(it)

    # DDPM ancestral step in VP coordinates: posterior N(μ̃(x_t, x0), β̃) with β̃ = σ_t(η = 1)²
    ab = VP.alphas_cumprod
    x_t = noise
    for k, t in enumerate(TIMESTEPS):
        a_t = ab[t]
        a_prev = ab[TIMESTEPS[k + 1]] if k + 1 < len(TIMESTEPS) else torch.tensor(1.0, dtype=torch.float64)
        beta = 1 - a_t / a_prev
        eps = EPS_MODEL(x_t, torch.full((5,), float(t), dtype=torch.float64))
        x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
        x_t = mean + ((1 - a_prev) / (1 - a_t) * beta).sqrt() * noises[k]
    torch.testing.assert_close(x_t, native, rtol=1e-10, atol=1e-10)

    for name, kw in (("euler_ancestral", {"eta": 1.0}), ("ddim", {"eta": 1.0})):
        ours = samplers.sample(name, D_EPS, x, sig, disable=True, noise_sampler=replay(), **kw)
        torch.testing.assert_close(ours, native, rtol=1e-10, atol=1e-10)


def test_ddim_equals_euler_ancestral_for_every_eta():
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=20.0)
    x = GM.noise(3, seed=2) * 20
    for eta in (0.0, 0.3, 1.0):
        a = samplers.sample("ddim", GM.denoiser, x, sig, disable=True, eta=eta, seed=[4, 5, 6])
        b = samplers.sample("euler_ancestral", GM.denoiser, x, sig, disable=True, eta=eta, seed=[4, 5, 6])
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def flow_euler_native(model, noise, ts):
    """Flow-matching Euler: y ← y + (t_next − t)·u(y, t), from t = ts[0] with y the flow state."""
    y = noise
    for t, t_next in zip(ts[:-1], ts[1:]):
        u = model(y, torch.full((y.shape[0],), t * 1000.0, dtype=torch.float64))
        y = y + (t_next - t) * u
    return y


def test_flow_matching_euler_is_euler_in_sigma():
    for shift in (1.0, 3.0):
        flow = RectifiedFlow(shift=shift, multiplier=1000.0)
        model = GM.as_model("flow", flow)
        D = samplers.to_denoiser(model, "flow", flow)
        sig = samplers.get_sigmas("flow", 9, native=flow)
        ts = [1.0] + (sig[1:] / (1 + sig[1:])).tolist()
        noise = GM.noise(4, seed=3)
        native = flow_euler_native(model, noise, ts)
        ours = samplers.sample("euler", D, samplers.initial_latent(noise, sig), sig, disable=True)
        torch.testing.assert_close(ours, native, rtol=1e-10, atol=1e-10)
        # and from a finite start (t < 1): the VE state is y / (1 − t)
        y0 = GM.sample(4, seed=1) * (1 - ts[2]) + ts[2] * noise
        native = flow_euler_native(model, y0, ts[2:])
        ours = samplers.sample("euler", D, y0 / (1 - ts[2]), sig[2:], disable=True)
        torch.testing.assert_close(ours, native, rtol=1e-10, atol=1e-10)


def test_zero_terminal_snr_v_model_ddim_from_infinity():
    """Trailing spacing on a zero-SNR VP v-model starts at σ = inf, exactly (no clamped ᾱ)."""
    zs = VPDiscrete.from_betas(rescale_betas_zero_snr=True)
    v_model = GM.as_model("v", zs)
    D = samplers.to_denoiser(v_model, "v", zs)
    sig = samplers.get_sigmas("trailing", 10, native=zs)
    assert math.isinf(float(sig[0]))
    noise = GM.noise(4, seed=6)
    # native DDIM on the v-model, starting at x_T = n with ᾱ_T = 0
    steps = torch.round(torch.arange(1000, 0, -100.0)).long() - 1
    ab = zs.alphas_cumprod
    x_t = noise
    for k, t in enumerate(steps.tolist()):
        a_t = ab[t]
        a_prev = ab[steps[k + 1]] if k + 1 < len(steps) else torch.tensor(1.0, dtype=torch.float64)
        v = v_model(x_t, torch.full((4,), float(t), dtype=torch.float64))
        x0 = a_t.sqrt() * x_t - (1 - a_t).sqrt() * v
        eps = a_t.sqrt() * v + (1 - a_t).sqrt() * x_t
        x_t = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    ours = samplers.sample("ddim", D, noise, sig, disable=True)
    torch.testing.assert_close(ours, x_t, rtol=1e-9, atol=1e-9)

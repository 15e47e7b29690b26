"""Ancestral samplers: each step is a deterministic step to σ_down followed by fresh noise of size σ_up
(``get_ancestral_step``), or a draw from the DDPM posterior, or a consistency-model jump and re-noise.

Euler ancestral (k-diffusion; ComfyUI's flow-model variant ``euler_ancestral_rf``), DPM-Solver-2 and DPM-Solver++(2S) ancestral,
RES multistep ancestral (ComfyUI), DDPM, LCM, TCD. Every coefficient is a
Python float; noise comes only from ``noise_sampler(sigma, sigma_next)`` (per-item seeded by default,
``"brownian"`` for a Brownian path, or your own). η = 0 turns each into its deterministic counterpart.
"""
from __future__ import annotations

import contextvars
import functools
import math

import numpy as np
import torch

from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import add_noise, get_ancestral_step, lam, res_weights, sigma_of, to_d
from ..core.errors import InvalidInput, InvalidOption, InvalidType
from ..core.native import VPDiscrete

_DPMPP = "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095)"

# The (σ_down, σ_up) split of a step of dpm_2_ancestral and dpmpp_2s_ancestral, for a caller that needs another one
# than get_ancestral_step's: the k-diffusion drop-in takes the Euler-to-0 branch where k-diffusion's arithmetic in
# the schedule's dtype gives σ_down = 0 (samplers/interop/kdiffusion.py). None, the default: get_ancestral_step.
SPLIT: contextvars.ContextVar = contextvars.ContextVar("samplers_ancestral_split", default=None)


def _take_split():
    """The split this run was given (consumed: a registry run inside the caller's model gets its own), else
    get_ancestral_step's. The caller that set :data:`SPLIT` resets it after its run."""
    split = SPLIT.get()
    if split is None:
        return get_ancestral_step
    SPLIT.set(None)
    return split


@register("euler_ancestral", kind="ancestral", order=1, nfe_per_step=1,
          aliases=("euler_a", "sample_euler_ancestral"),
          ref="Ho et al. 2020 (DDPM) ancestral step; k-diffusion sample_euler_ancestral")
def euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                    noise_at_zero_down=True, noise_sampler=None, seed=None):
    """Ancestral sampling with Euler steps: deterministic step to σ_down, then fresh noise of size σ_up.

    Where η > 1 caps σ_up at σ_next, σ_down is 0 and the step lands on the denoised x. ``noise_at_zero_down=True``
    (k-diffusion's sample_euler_ancestral, A1111's "Euler a") adds σ_up = σ_next of fresh noise there; False
    (ComfyUI's sample_euler_ancestral, which its ``comfyui:euler_ancestral`` label sets) returns the denoised x and
    draws none. With η < 1 σ_down is 0 only at σ_next = 0, where neither adds noise; at η = 1 also, by rounding, on a
    step with σ_next/σ below about 2e-8 (:data:`samplers.core.validate.ANCESTRAL_ETA_MARGIN`).
    """
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        # the Euler step to σ_down, x + d·(σ_down − σ) with d = (x − D)/σ, is the point D + (σ_down/σ)·(x − D)
        x = torch.lerp(denoised, x, sigma_down / sigma)
        if sigma_down > 0 or noise_at_zero_down:
            x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("euler_ancestral_rf", kind="ancestral", order=1, nfe_per_step=1, from_infinity=True,
          aliases=("sample_euler_ancestral_RF",),
          ref="ComfyUI's sample_euler_ancestral_RF (what its euler_ancestral runs on flow models): the ancestral "
              "split made in flow time t = σ/(1 + σ)",
          final_step="denoise (x = D(x, σ) when σ_next = 0), no noise")
def euler_ancestral_rf(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                       noise_sampler=None, seed=None):
    """Euler ancestral with the σ_down / σ_up split ComfyUI uses on rectified-flow models, in any model's σ.

    In flow time t = σ/(1 + σ) the deterministic step goes to t_down = t_next·(1 + (t_next/t − 1)·η); in σ
    that is the Euler step to σ_down = t_down/(1 − t_down), followed by fresh noise of size
    σ_up = √(σ_next² − σ_down²) (ComfyUI's re-noise (1 − t_next)·σ_up in its own coordinates). η = 0 is Euler.
    A schedule may start at σ = inf (t = 1), where x is the unit noise itself.
    """
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            t = 1.0 if math.isinf(sigma) else sigma / (1 + sigma)
            t_next = sigma_next / (1 + sigma_next)
            t_down = t_next * (1 + (t_next / t - 1) * eta)
            sigma_down = t_down / (1 - t_down)
            if math.isinf(sigma):  # x is the unit noise n: x_down = D + σ_down·n
                x = denoised + x * sigma_down
            else:
                x = torch.lerp(denoised, x, sigma_down / sigma)
            if eta > 0:
                sigma_up = math.sqrt(sigma_next**2 - sigma_down**2)
                x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpm_2_ancestral", kind="ancestral", order=2, nfe_per_step=2,
          aliases=("sample_dpm_2_ancestral",),
          ref="Lu et al. 2022 (arXiv:2206.00927) DPM-Solver-2 in σ with ancestral noise (k-diffusion)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                    noise_sampler=None, seed=None):
    """DPM-Solver-2 (log-σ midpoint) to σ_down, then fresh noise of size σ_up (k-diffusion's sample_dpm_2_ancestral)."""
    split = _take_split()
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = split(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigma)
            # noise only after the DPM-Solver-2 step, as k-diffusion's: where η > 1 caps σ_up at σ_next (σ_down = 0)
            # the Euler step to 0 takes none, and draws none
            x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("dpmpp_2s_ancestral", kind="ancestral", order=2, nfe_per_step=2,
          aliases=("sample_dpmpp_2s_ancestral",),
          ref=_DPMPP + ", Alg. 1 (2S) with ancestral noise (k-diffusion)",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                       noise_sampler=None, seed=None):
    """DPM-Solver++(2S) with r = 1/2 to σ_down, then fresh noise σ_up. η = 0 is ``dpmpp_2s``."""
    split = _take_split()
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = split(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            lambda_, lambda_down = lam(sigma), lam(sigma_down)
            h = lambda_down - lambda_
            sigma_s = sigma_of(lambda_ + h / 2)
            x_2 = x * (sigma_s / sigma) - denoised * math.expm1(-h / 2)
            denoised_2 = model(x_2, sigma_s)
            x = x * (sigma_down / sigma) - denoised_2 * math.expm1(-h)
        x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("res_multistep_ancestral", kind="ancestral", order=2, nfe_per_step=1,
          aliases=("sample_res_multistep_ancestral",),
          ref="Zhang et al. 2023, refined exponential solver (arXiv:2308.02157), 2-step form with ancestral noise as "
              "in ComfyUI's sample_res_multistep_ancestral",
          final_step="euler (x = D(x, σ) when σ_next = 0), no noise")
def res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                            noise_sampler=None, seed=None):
    """RES multistep (``res_multistep``) to σ_down, then fresh noise σ_up, as ComfyUI's ``res_multistep`` with η > 0.

    In λ = −log σ with h = λ(σ_down) − λ(σ): x_down = e^(−h)·x + h·(b1·D0 + b2·D1), b1 = φ1(−h) − φ2(−h)/c,
    b2 = φ2(−h)/c, where ComfyUI takes the previous node as c = (λ(σ_prev) − λ(σ_down,prev))/h: the previous
    step's start and its σ_down (so with η > 0 the weights are not the two-step interpolation through the points
    the model was called at; with η = 0 they are, and this is ``res_multistep``). First step and the step to
    σ = 0 are Euler.
    """
    old_denoised, old_sigma_down = None, None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0 or old_denoised is None:
            x = torch.lerp(denoised, x, sigma_down / sigma)  # the Euler step to σ_down
        else:
            h = lam(sigma_down) - lam(sigma)
            b1, b2 = res_weights(h, (lam(sigmas[i - 1]) - lam(old_sigma_down)) / h)
            x = x * math.exp(-h) + (denoised * b1 + old_denoised * b2) * h
        x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_up)
        old_denoised, old_sigma_down = denoised, sigma_down
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("ddpm", kind="ancestral", order=1, nfe_per_step=1, aliases=("sample_ddpm",), eta_from_infinity=1.0,
          ref="Ho et al. 2020 (arXiv:2006.11239), eq. 6-7: the posterior q(x_{t−1} | x_t, x̂0)",
          final_step="denoise (the posterior at σ_next = 0 is x̂0), no noise")
def ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, s_noise=1.0, noise_sampler=None,
         seed=None):
    """Ancestral DDPM: a draw from the posterior q(x_next | x, x̂0) (fixed-small variance β̃), in VE coordinates.

    With ᾱ = 1/(1 + σ²) the posterior mean (√ᾱ_prev·β_t·x̂0 + √α_t·(1 − ᾱ_prev)·x_t)/(1 − ᾱ_t) and variance
    β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t become, for x = x_t/√ᾱ:

        x_next = (σ_next²/σ²)·x + (1 − σ_next²/σ²)·x̂0 + σ_next·√(1 − σ_next²/σ²)·z

    which is the ancestral step with η = 1 (``euler_ancestral``, ``ddim(eta=1)``), written from the paper.
    """
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        keep = (sigma_next / sigma) ** 2
        x = x * keep + denoised * (1 - keep)
        x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * sigma_next * math.sqrt(1 - keep))
        report(callback, x, i, sigma, sigma, denoised)
    return x


@register("lcm", kind="ancestral", order=1, nfe_per_step=1, aliases=("sample_lcm",),
          ref="Luo et al. 2023, Latent Consistency Models (arXiv:2310.04378), Alg. 3 multistep sampling; "
              "η: the share of fresh noise in the re-noise (η = 0: DDIM)",
          final_step="denoise (x = D(x, σ)), no noise")
def lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
        noise_sampler=None, seed=None):
    """Multistep consistency sampling: jump to x̂0 = D(x, σ), then re-noise to σ_next.

        x_next = x̂0 + σ_next·(√(1 − η²)·ε̂ + η·z),  ε̂ = (x − x̂0)/σ

    η = 1 (default) is LCM and equals diffusers' FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    on a flow model; η = 0 re-uses the predicted noise and is DDIM.
    """
    if not 0 <= eta <= 1:
        raise InvalidInput(f"lcm's eta must be in [0, 1], got {eta}")
    keep = math.sqrt(1 - eta * eta)
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if keep > 0:
            x = denoised + (x - denoised) * (keep * sigma_next / sigma)
        else:
            x = denoised
        x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * eta * sigma_next)
        report(callback, x, i, sigma, sigma, denoised)
    return x


@functools.lru_cache(maxsize=1)
def _sd_table():
    """TCDScheduler's default table as it computes it: Stable Diffusion 1.x's scaled_linear betas 0.00085-0.012 over
    1000 timesteps, the ᾱ products in float32 (diffusers' table, whose σ are the ones its timesteps step on)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return VPDiscrete.from_alphas_cumprod(torch.cumprod(1.0 - betas, dim=0))


def tcd_point(native, eta: float, sigma_next: float) -> float:
    """TCD's intermediate σ_s for a step to ``sigma_next`` on the timestep table ``native`` (a :class:`VPDiscrete`).

    On a timestep t of the table (σ_next one of its entries, as in diffusers' TCDScheduler) s = ⌊(1 − γ)·t⌋,
    computed as TCDScheduler computes it (float32 (1 − γ) times a float32 t, so the same s at every t); between
    table entries s = (1 − γ)·t unrounded, σ_s read off the table by log-σ interpolation. σ_s = 0 where σ_next = 0,
    and σ_s ≤ σ_next always (below the table's σ_min, t = 0 and σ_s = σ_next: no noise; within 1e-6 of σ_next, σ_next)."""
    if sigma_next == 0:
        return 0.0
    if eta == 0:
        return sigma_next
    t = native.time_at(sigma_next)
    whole = round(t)
    if abs(t - whole) <= 1e-6 * max(1.0, whole):
        s = int(np.floor(np.float32(1 - eta) * np.float32(whole)))
        point = native.sigma_at_timestep(s)
    else:
        point = native.sigma_of_time_at((1 - eta) * t)
    # within float32 rounding of σ_next (a table read in float64 beside one in float32): the same point, no noise
    return sigma_next if point >= sigma_next * (1 - 1e-6) else point


def trajectory_point(x, denoised, sigma: float, sigma_s: float):
    """x_s = x̂0 + σ_s·ε̂ with ε̂ = (x − x̂0)/σ: the point at σ_s on the line through the model's x0 that TCD moves to
    before re-noising (TCDScheduler's ``pred_noised_sample``, in VE coordinates). From σ = inf x is the unit noise
    n, the limit of ε̂ (a zero-terminal-SNR table's first step); at σ_s = 0 it is x̂0."""
    if math.isinf(sigma):
        return denoised + x * sigma_s
    return denoised + (x - denoised) * (sigma_s / sigma) if sigma_s > 0 else denoised


def with_model_table(options: dict, native, model: str, fix: str) -> dict:
    """A tcd run's ``options`` on a model whose schedule is ``native``: that model's timestep table as ``native``
    where none is given (tcd's own default is SD-1.x's), refused on a model without one (flow, EDM), naming ``fix``;
    none at γ = ``eta`` = 0, where TCD reads no table.
    ``model`` says which model it is in the message."""
    if options.get("native") is not None or options.get("eta", 0.3) == 0:
        return options  # the caller's table; at γ = 0 TCD reads none (s = t: DDIM)
    if not isinstance(native, VPDiscrete):
        raise InvalidOption(f"tcd places its inner point s = ⌊(1 − γ)·t⌋ on a discrete timestep table, and this "
                            f"{model} model has none{fix}")
    return {**options, "native": native}


@register("tcd", kind="ancestral", order=1, nfe_per_step=1, aliases=("sample_tcd",), from_infinity=True,
          ref="Zheng et al. 2024, Trajectory Consistency Distillation (arXiv:2402.19159), §4.4 strategic "
              "stochastic sampling; diffusers' TCDScheduler",
          final_step="denoise (σ_s = σ_next = 0: x = D(x, σ)), no noise")
def tcd(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=0.3, s_noise=1.0, native=None,
        noise_sampler=None, seed=None):
    """Strategic stochastic sampling: move along the predicted trajectory to an earlier point s, re-noise to σ_next.

        ε̂ = (x − x̂0)/σ,   x_s = x̂0 + σ_s·ε̂,   x_next = x_s + √(σ_next² − σ_s²)·z

    with s = ⌊(1 − γ)·t_next⌋ on the model's timestep table (``native``, a :class:`samplers.VPDiscrete`; default
    Stable Diffusion 1.x's, TCDScheduler's default config; :func:`tcd_point`). ``eta`` is the paper's γ (diffusers'
    name, default 0.3 as its ``step``): γ = 0 is DDIM; γ = 1 moves to the table's first timestep (σ(t = 0), next to
    x̂0) and re-noises from there, close to LCM. On the table's own timesteps, ending at its first entry σ(t = 0),
    this is TCDScheduler's run (the diffusers shim runs it so). The shim and ``Pipeline`` pass the model's own table
    (and refuse tcd on a model without one, a flow or EDM model, unless ``native`` is given); ``samplers.sample`` does not
    know the model's table: pass ``native`` for a model other than SD-1.x's.
    A schedule may start at σ = inf (a zero-terminal-SNR table's last timestep), where x is the unit noise itself.
    """
    if native is None:  # eta in [0, 1]: its option rule (samplers.core.validate), checked before the run
        native = _sd_table()
    elif not isinstance(native, VPDiscrete):
        raise InvalidType(f"tcd's native must be a samplers.VPDiscrete (the model's timestep table, on which TCD "
                          f"places s = (1 − γ)·t), got {native!r} ({type(native).__name__}); e.g. "
                          "samplers.VPDiscrete.from_betas('scaled_linear', 1000, 0.00085, 0.012)")
    points = [tcd_point(native, eta, sigmas[i + 1]) for i in range(len(sigmas) - 1)]  # host floats, before any call
    for i in progress(sigmas, disable):
        sigma, sigma_next, sigma_s = sigmas[i], sigmas[i + 1], points[i]
        denoised = model(x, sigma)
        x = trajectory_point(x, denoised, sigma, sigma_s)
        x = add_noise(x, noise_sampler, sigma, sigma_next, s_noise * math.sqrt(max(sigma_next**2 - sigma_s**2, 0.0)))
        report(callback, x, i, sigma, sigma, denoised)
    return x

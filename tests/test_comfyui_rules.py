"""ComfyUI / A1111 labels reproduce the tool's update rule: references written from the tools' source.

The references below are transcribed from comfyanonymous/ComfyUI 02159d81 (comfy/k_diffusion/sampling.py:
``DPMSolver``, ``sample_gradient_estimation``, ``sample_er_sde``, ``sample_seeds_2``, ``sample_exp_heun_2_x0`` /
``_sde``; comfy/samplers.py ``KSAMPLER.sample``: DPM fast / adaptive run ``sample_dpm_fast(model, noise, sigma_min,
sigmas[0], len(sigmas) - 1)`` / ``sample_dpm_adaptive(model, noise, sigma_min, sigmas[0])`` with sigma_min =
sigmas[-2] when the last σ is 0) and AUTOMATIC1111/stable-diffusion-webui modules/sd_samplers_kdiffusion.py
(``sigma_min = sigma_sched[-2]``, ``sigma_max = sigma_sched[0]``, ``n = len(sigma_sched) - 1``; its txt2img path
passes the model's σ range and ``n = steps``, the same numbers on the label's default schedule). ComfyUI's
DPMSolver is k-diffusion 0.1.1's.

Everything runs in float64 so that a difference beyond rounding is a difference of rule. Two float32 details of
the tools' source are written in float64 here, and said where: k-diffusion's DPM-Solver-fast builds its λ grid with
``torch.linspace`` in the default dtype and its adaptive tolerances with ``torch.tensor(atol)`` (float32 whatever
the state's dtype), and ComfyUI's ER-SDE builds its 200 quadrature points from a float32 ``arange`` (so a float64
run gets float32 points). In the tools' ordinary float32 runs those are their dtype anyway; the installed
k-diffusion and the literal ER-SDE grid are checked at float32 rounding.

The registry names keep their rules: their outputs on the same problem are compared with values computed before
these options existed.
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

import samplers
from samplers.core import names
from samplers.core.errors import InvalidOption, InvalidType
from samplers.interop.comfyui import ksampler_function

TOL = 1e-12


# ----------------------------------------------------------------------------------------------------
# The problem: a smooth analytic denoiser, a 10-step Karras schedule, a flow model


def denoise_ve(x, sigma):
    s = torch.as_tensor(sigma, dtype=x.dtype)
    s = s.reshape(-1, *([1] * (x.ndim - 1))) if s.ndim else s
    return (x + 0.3 * s**2 * torch.tanh(x + 0.5)) / (1 + s**2)


def denoise_flow(x, t):  # x0 from ComfyUI's flow coordinates (x_t, t)
    s = torch.as_tensor(t, dtype=x.dtype)
    s = s.reshape(-1, *([1] * (x.ndim - 1))) if s.ndim else s
    return 0.8 * (1 - s) * x + 0.3 * torch.tanh(x + 0.5) * (0.5 + s)


def karras(n, smin=0.0292, smax=14.6146, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def flow_sigmas(n, shift=3.0, start=1.0):
    t = torch.linspace(start, 0, n + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


SIGMAS = karras(10)
X0 = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
X_VE = X0 * SIGMAS[0]
EXTRA = {"seed": 7, "model_options": {}, "denoise_mask": None}


class EPS:  # comfy.model_sampling.EPS as the samplers read it
    pass


class CONST:  # comfy.model_sampling.CONST (SD3 / Flux): σ = t, shift 3
    shift = 3.0

    def percent_to_sigma(self, p):
        if p <= 0:
            return 1.0
        if p >= 1:
            return 0.0
        t = 1 - p
        return self.shift * t / (1 + (self.shift - 1) * t)


class Model:
    """ComfyUI's ``model_k`` as its samplers reach it; counts calls."""

    def __init__(self, sampling, fn):
        self.fn, self.calls = fn, 0
        self.inner_model = types.SimpleNamespace(inner_model=types.SimpleNamespace(model_sampling=sampling),
                                                 model_patcher=types.SimpleNamespace(get_model_object=lambda n: sampling))

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        return self.fn(x, sigma)


class SeqNoise:
    """The k-th draw is the same tensor whatever (σ, σ_next) is asked for."""

    def __init__(self, like, n=64):
        g = torch.Generator().manual_seed(123)
        self.draws = [torch.randn(like.shape, generator=g, dtype=like.dtype) for _ in range(n)]
        self.k = 0

    def __call__(self, sigma, sigma_next):
        self.k += 1
        return self.draws[self.k - 1]


def ms_of(model):
    return model.inner_model.model_patcher.get_model_object("model_sampling")


# ----------------------------------------------------------------------------------------------------
# ComfyUI's source (02159d81), transcribed: helpers


def sigma_to_half_log_snr(sigma, model_sampling):
    return sigma.logit().neg() if isinstance(model_sampling, CONST) else sigma.log().neg()


def half_log_snr_to_sigma(half_log_snr, model_sampling):
    return half_log_snr.neg().sigmoid() if isinstance(model_sampling, CONST) else half_log_snr.neg().exp()


def offset_first_sigma_for_snr(sigmas, model_sampling, percent_offset=1e-4):
    if len(sigmas) <= 1:
        return sigmas
    if isinstance(model_sampling, CONST) and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model_sampling.percent_to_sigma(percent_offset)
    return sigmas


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


# ----------------------------------------------------------------------------------------------------
# k-diffusion's / ComfyUI's DPMSolver (fast and adaptive), and the tools' calls of it


class PIDStepSizeController:
    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps, self.errs = accept_safety, eps, []

    def propose_step(self, error):
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    def __init__(self, model, extra_args):
        self.model, self.extra_args = model, {} if extra_args is None else extra_args

    def t(self, sigma):
        return -sigma.log()

    def sigma(self, t):
        return t.neg().exp()

    def eps(self, eps_cache, key, x, t):
        if key in eps_cache:
            return eps_cache[key], eps_cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        return eps, {key: eps, **eps_cache}

    def dpm_solver_1_step(self, x, t, t_next, eps_cache=None):
        h = t_next - t
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, eps_cache

    def dpm_solver_2_step(self, x, t, t_next, r1=1 / 2, eps_cache=None):
        h = t_next - t
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, eps_cache

    def dpm_solver_3_step(self, x, t, t_next, r1=1 / 3, r2=2 / 3, eps_cache=None):
        h = t_next - t
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2, eps_cache = self.eps(eps_cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, eps_cache

    def dpm_solver_fast(self, x, t_start, t_end, nfe):  # eta = 0
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, dtype=torch.float64)  # the tools: default dtype (float32)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i in range(len(orders)):
            eps_cache = {}
            t, t_next = ts[i], ts[i + 1]
            eps, eps_cache = self.eps(eps_cache, "eps", x, t)
            if orders[i] == 1:
                x, eps_cache = self.dpm_solver_1_step(x, t, t_next, eps_cache=eps_cache)
            elif orders[i] == 2:
                x, eps_cache = self.dpm_solver_2_step(x, t, t_next, eps_cache=eps_cache)
            else:
                x, eps_cache = self.dpm_solver_3_step(x, t, t_next, eps_cache=eps_cache)
        return x

    def dpm_solver_adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.,
                            icoeff=1., dcoeff=0., accept_safety=0.81):  # eta = 0
        forward = t_end > t_start
        h_init = abs(h_init) * (1 if forward else -1)
        atol = torch.tensor(atol, dtype=x.dtype)  # the tools: torch.tensor(atol), float32
        rtol = torch.tensor(rtol, dtype=x.dtype)
        s, x_prev = t_start, x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, order, accept_safety)
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            eps_cache = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            eps, eps_cache = self.eps(eps_cache, "eps", x, s)
            if order == 2:
                x_low, eps_cache = self.dpm_solver_1_step(x, s, t, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_2_step(x, s, t, eps_cache=eps_cache)
            else:
                x_low, eps_cache = self.dpm_solver_2_step(x, s, t, r1=1 / 3, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_3_step(x, s, t, eps_cache=eps_cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev, x, s = x_low, x_high, t
        return x


def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None):
    solver = DPMSolver(model, extra_args)
    return solver.dpm_solver_fast(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)), n)


def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None):
    solver = DPMSolver(model, extra_args)
    return solver.dpm_solver_adaptive(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)))


def comfy_ksampler_range(name, model, noise, sigmas, extra_args):
    """comfy/samplers.py KSAMPLER.sample for dpm_fast / dpm_adaptive."""
    total_steps = len(sigmas) - 1
    sigma_min = sigmas[-1]
    if sigma_min == 0:
        sigma_min = sigmas[-2]
    if name == "dpm_fast":
        return sample_dpm_fast(model, noise, sigma_min, sigmas[0], total_steps, extra_args=extra_args)
    return sample_dpm_adaptive(model, noise, sigma_min, sigmas[0], extra_args=extra_args)


def a1111_range(funcname, model, x, sigma_sched):
    """A1111 KDiffusionSampler: the range samplers' arguments from the schedule."""
    kwargs = {"sigma_min": sigma_sched[-2], "sigma_max": sigma_sched[0]}
    if funcname == "sample_dpm_fast":
        return sample_dpm_fast(model, x, n=len(sigma_sched) - 1, **kwargs)
    return sample_dpm_adaptive(model, x, **kwargs)


# ----------------------------------------------------------------------------------------------------
# ComfyUI's sample_gradient_estimation, sample_er_sde, sample_seeds_2 / exp_heun_2_x0(_sde)


def sample_gradient_estimation(model, x, sigmas, extra_args=None, ge_gamma=2.):
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_er_sde(model, x, sigmas, extra_args=None, s_noise=1.0, noise_sampler=None, max_stage=3,
                  point_dtype=torch.float64):
    """``point_dtype``: ComfyUI's ``torch.arange(0, 200.0, dtype=torch.float32)`` (its points are float32)."""
    s_in = x.new_ones([x.shape[0]])

    def noise_scaler(v):
        return v * ((v**0.3).exp() + 10.0)

    num_integration_points = 200.0
    point_indice = torch.arange(0, num_integration_points, dtype=point_dtype)
    model_sampling = ms_of(model)
    sigmas = offset_first_sigma_for_snr(sigmas, model_sampling)
    er_lambdas = sigma_to_half_log_snr(sigmas, model_sampling).neg().exp()
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        stage_used = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s = sigmas[i] / er_lambda_s
            alpha_t = sigmas[i + 1] / er_lambda_t
            r_alpha = alpha_t / alpha_s
            r = noise_scaler(er_lambda_t) / noise_scaler(er_lambda_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage_used >= 2:
                dt = er_lambda_t - er_lambda_s
                lambda_step_size = -dt / num_integration_points
                lambda_pos = er_lambda_t + point_indice * lambda_step_size
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * lambda_step_size
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(er_lambda_t)) * denoised_d
                if stage_used >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * lambda_step_size
                    denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * noise_scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * (
                    er_lambda_t**2 - er_lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


def sample_seeds_2(model, x, sigmas, extra_args=None, eta=1., s_noise=1., noise_sampler=None, r=0.5,
                   solver_type="phi_1"):
    s_in = x.new_ones([x.shape[0]])
    model_sampling = ms_of(model)
    inject_noise = eta > 0 and s_noise > 0
    sigmas = offset_first_sigma_for_snr(sigmas, model_sampling)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s = sigma_to_half_log_snr(sigmas[i], model_sampling)
        lambda_t = sigma_to_half_log_snr(sigmas[i + 1], model_sampling)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = half_log_snr_to_sigma(lambda_s_1, model_sampling)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * torch.expm1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, fac)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * torch.expm1(-h_eta) * denoised_d
        else:
            b2 = ((torch.expm1(-h_eta) + h_eta) / -h_eta) / r
            b1 = torch.expm1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            segment_factor = (r - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, solver_type="phi_2"):
    return sample_seeds_2(model, x, sigmas, extra_args, eta=0.0, s_noise=0.0, noise_sampler=None, r=1.0,
                          solver_type=solver_type)


def sample_exp_heun_2_x0_sde(model, x, sigmas, extra_args=None, eta=1., s_noise=1., noise_sampler=None,
                             solver_type="phi_2"):
    return sample_seeds_2(model, x, sigmas, extra_args, eta=eta, s_noise=s_noise, noise_sampler=noise_sampler, r=1.0,
                          solver_type=solver_type)


# ----------------------------------------------------------------------------------------------------
# Runs


def comfy_label(name, sampling, fn, x, sigmas, noise=False, **options):
    """comfyui:<name> through the ComfyUI adapter; (result, model calls, noise draws)."""
    model = Model(sampling, fn)
    extra = {"noise_sampler": SeqNoise(x)} if noise else {}
    out = ksampler_function("comfyui:" + name)(model, x.clone(), sigmas.clone(), extra_args=dict(EXTRA),
                                               disable=True, **extra, **options)
    return out, model.calls, extra["noise_sampler"].k if noise else 0


def reference(ref, sampling, fn, x, sigmas, noise=False, **kwargs):
    model = Model(sampling, fn)
    if noise:
        kwargs["noise_sampler"] = SeqNoise(x)
    out = ref(model, x.clone(), sigmas.clone(), extra_args=dict(EXTRA), **kwargs)
    return out, model.calls, kwargs["noise_sampler"].k if noise else 0


def assert_same(ours, theirs, tol=TOL):
    (a, calls_a, draws_a), (b, calls_b, draws_b) = ours, theirs
    assert (calls_a, draws_a) == (calls_b, draws_b)
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"max |ours − tool| = {err:.3e}"


FLOW = [flow_sigmas(10), flow_sigmas(10, start=0.9)]  # from t = 1 (σ = inf) and from t < 1


def start(sampling, sigmas):
    return X0 * sigmas[0] if isinstance(sampling, EPS) else X0 * sigmas[0] + (1 - sigmas[0]) * 0.2


# ----------------------------------------------------------------------------------------------------
# 1, 2: DPM fast / DPM adaptive on the tools' range, no final denoise


@pytest.mark.parametrize("name", ["dpm_fast", "dpm_adaptive"])
@pytest.mark.parametrize("steps", [10, 6])
def test_comfyui_range_samplers_match_comfyui(name, steps):
    sigmas = karras(steps)
    x = X0 * sigmas[0]
    ours = comfy_label(name, EPS(), denoise_ve, x, sigmas)
    theirs = reference(lambda m, x_, s, extra_args: comfy_ksampler_range(name, m, x_, s, extra_args),
                       EPS(), denoise_ve, x, sigmas)
    assert_same(ours, theirs)


@pytest.mark.parametrize("sigmas", FLOW[1:])
def test_comfyui_dpm_fast_on_a_flow_model_matches_comfyui(sigmas):  # the plain rule on ComfyUI's (x_t, t)
    x = X0 * sigmas[0]
    ours = comfy_label("dpm_fast", CONST(), denoise_flow, x, sigmas)
    theirs = reference(lambda m, x_, s, extra_args: comfy_ksampler_range("dpm_fast", m, x_, s, extra_args),
                       CONST(), denoise_flow, x, sigmas)
    assert_same(ours, theirs)


@pytest.mark.parametrize("label, funcname", [("DPM fast", "sample_dpm_fast"), ("k_dpm_fast", "sample_dpm_fast"),
                                             ("DPM adaptive", "sample_dpm_adaptive"),
                                             ("k_dpm_ad", "sample_dpm_adaptive")])
def test_a1111_range_samplers_match_a1111(label, funcname):
    """A1111 passes its "Eta for ancestral samplers" (default 1) to both: the label fixes eta = 1; its rule at
    eta = 0 is the reference's, and with eta = 1 it draws where the installed k-diffusion draws."""
    found = names.resolve("a1111:" + label)
    assert found.options["eta"] == 1.0
    model = Model(EPS(), denoise_ve)
    ours = samplers.sample(found.sampler, model, X_VE.clone(), SIGMAS, disable=True, **{**found.options, "eta": 0.0})
    calls = model.calls
    model = Model(EPS(), denoise_ve)
    theirs = a1111_range(funcname, model, X_VE.clone(), SIGMAS)
    assert_same((ours, calls, 0), (theirs, model.calls, 0))
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
    try:
        kd = kdiffusion_modules()[0]
    except KDiffusionUnavailable:
        pytest.skip("k-diffusion is not installed")
    # in float32, as A1111 samples (k-diffusion's λ grid is float32 whatever the run's dtype)
    x, sigmas = X_VE.float(), SIGMAS.float()
    model, noise = Model(EPS(), denoise_ve), SeqNoise(x)
    ours = samplers.sample("a1111:" + label, model, x.clone(), sigmas, disable=True, noise_sampler=noise)
    ours = (ours, model.calls, 0)
    model, noise = Model(EPS(), denoise_ve), SeqNoise(x)
    kwargs = {"n": len(sigmas) - 1} if funcname == "sample_dpm_fast" else {}
    theirs = getattr(kd, funcname)(model, x.clone(), sigmas[-2], sigmas[0], extra_args={}, disable=True, eta=1.0,
                                   noise_sampler=noise, **kwargs)
    # (k-diffusion also draws at the last step, where σ_up is 0 and the draw is multiplied by 0: kdiffusion.md)
    assert_same(ours, (theirs, model.calls, 0), tol=1e-5)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # k-diffusion's torch.tensor(sigma)
def test_the_range_samplers_match_the_installed_k_diffusion_at_its_float32_rounding():
    """The same calls on the real k-diffusion 0.1.1 (float32 λ grid and tolerances: agreement to 1e-6)."""
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
    try:
        kd = kdiffusion_modules()[0]
    except KDiffusionUnavailable:
        pytest.skip("k-diffusion is not installed")
    for name, fn in (("dpm_fast", lambda m: kd.sample_dpm_fast(m, X_VE.clone(), SIGMAS[-2], SIGMAS[0], 10,
                                                               extra_args=dict(EXTRA), disable=True)),
                     ("dpm_adaptive", lambda m: kd.sample_dpm_adaptive(m, X_VE.clone(), SIGMAS[-2], SIGMAS[0],
                                                                       extra_args=dict(EXTRA), disable=True))):
        model = Model(EPS(), denoise_ve)
        theirs = fn(model)
        assert_same(comfy_label(name, EPS(), denoise_ve, X_VE, SIGMAS), (theirs, model.calls, 0), tol=1e-6)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # k-diffusion's torch.tensor(sigma)
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_comfyui_dpm_adaptive_with_eta_draws_comfyuis_default_noise(eta):
    """ComfyUI's dpm_adaptive_function passes its extra_options (the SamplerDPMAdaptative node's eta) to k-diffusion's
    sample_dpm_adaptive, whose DPMSolver (ComfyUI's) draws default_noise_sampler(x, seed=extra_args["seed"]): the
    installed k-diffusion handed that noise, as ComfyUI calls it, in float32 for one image. The name drew this
    library's seeded noise (0.69 apart at eta = 0.5, where ComfyUI's result is below 3.6)."""
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
    try:
        kd = kdiffusion_modules()[0]
    except KDiffusionUnavailable:
        pytest.skip("k-diffusion is not installed")
    x, sigmas = X_VE[:1].float(), SIGMAS.float()  # one image: ComfyUI's one generator is this library's image 0
    model = Model(EPS(), denoise_ve)
    theirs = kd.sample_dpm_adaptive(model, x.clone(), sigmas[-2], sigmas[0], extra_args=dict(EXTRA), disable=True,
                                    eta=eta, noise_sampler=comfy_default_noise(x, EXTRA["seed"]))
    assert_same(comfy_label("dpm_adaptive", EPS(), denoise_ve, x, sigmas, eta=eta), (theirs, model.calls, 0),
                tol=1e-5)


@pytest.mark.parametrize("option", [{"eta": 0.5}, {"eta": 1}, {"s_noise": 0.5}, {"noise_sampler": "brownian"}])
def test_comfyui_dpm_fast_refuses_the_options_comfyuis_function_does_not_take(option):
    """ComfyUI's dpm_fast_function(model, noise, sigmas, extra_args, callback, disable) takes no options (eta = 0,
    no noise): an option passed to the name, at build or call time (KSAMPLER's extra_options) or to samplers.sample,
    is refused before any model call, where it ran another image than ComfyUI can make."""
    (key, value), = option.items()
    match = rf"'dpm_fast' \(ComfyUI's\) takes no {key}: ComfyUI's dpm_fast_function .* leave {key} out.*, or name the " \
            rf"registry sampler 'dpm_fast'"
    model = Model(EPS(), denoise_ve)
    with pytest.raises(InvalidOption, match=match):
        ksampler_function("comfyui:dpm_fast", **option)
    with pytest.raises(InvalidOption, match=match):
        ksampler_function("comfyui:dpm_fast")(model, X_VE.clone(), SIGMAS, extra_args=dict(EXTRA), disable=True,
                                              **option)
    with pytest.raises(InvalidOption, match=match):
        samplers.sample("comfyui:dpm_fast", model, X_VE.clone(), SIGMAS, disable=True, seed=1, **option)
    assert model.calls == 0
    # noise_sampler=None is the default noise, as everywhere; the registry's dpm_fast and A1111's DPM fast take eta
    ksampler_function("comfyui:dpm_fast", noise_sampler=None)
    for name in ("dpm_fast", "a1111:DPM fast"):
        samplers.sample(name, model, X_VE.clone(), SIGMAS, disable=True, seed=1, eta=0.5, s_noise=1.0)
    assert model.calls > 0


# An option of the registry sampler per ComfyUI name that ComfyUI's function (02159d81) has no parameter for, with
# the function's own parameters (after model, x, sigmas, extra_args, callback, disable) and the registry sampler
NOT_TAKEN = [
    ("euler", {"noise_sampler": "brownian"}, r"sample_euler\(s_churn, s_tmin, s_tmax, s_noise\)", "euler"),
    ("heun", {"noise_sampler": "seeded"}, r"sample_heun\(s_churn, s_tmin, s_tmax, s_noise\)", "heun"),
    ("dpm_2", {"noise_sampler": "seeded"}, r"sample_dpm_2\(s_churn, s_tmin, s_tmax, s_noise\)", "dpm_2"),
    ("heunpp2", {"noise_sampler": "seeded"}, r"sample_heunpp2\(s_churn, s_tmin, s_tmax, s_noise\)", "heunpp2"),
    ("ddim", {"noise_sampler": "seeded"}, r"sample_euler\(s_churn, s_tmin, s_tmax, s_noise\)", "euler"),
    ("lms", {"prior_sigmas": (20.0,)}, r"sample_lms\(order\)", "lms"),
    ("dpmpp_2m", {"solver_type": "heun"}, r"sample_dpmpp_2m\(\) takes no option", "dpmpp_2m"),
    ("dpmpp_2m", {"euler_at_final": True}, r"sample_dpmpp_2m\(\) takes no option", "dpmpp_2m"),
    ("dpmpp_2m_sde", {"euler_at_final": True}, r"sample_dpmpp_2m_sde\(eta, s_noise, noise_sampler, solver_type\)",
     "dpmpp_2m_sde"),
    ("dpmpp_2m_sde_heun_gpu", {"euler_at_final": True}, r"sample_dpmpp_2m_sde_heun_gpu\(eta", "dpmpp_2m_sde"),
    ("dpmpp_3m_sde", {"solver_type": "midpoint"}, r"sample_dpmpp_3m_sde\(eta, s_noise, noise_sampler\)",
     "dpmpp_3m_sde"),
    ("dpmpp_3m_sde_gpu", {"lower_order_final": True}, r"sample_dpmpp_3m_sde_gpu\(eta", "dpmpp_3m_sde"),
    ("dpmpp_3m_sde", {"euler_at_final": True}, r"sample_dpmpp_3m_sde\(eta", "dpmpp_3m_sde"),
    ("dpmpp_3m_sde", {"variant": "diffusers"}, r"sample_dpmpp_3m_sde\(eta", "dpmpp_3m_sde"),
    ("ddpm", {"s_noise": 0.5}, r"sample_ddpm\(noise_sampler\)", "ddpm"),
    ("lcm", {"eta": 0.5}, r"sample_lcm\(noise_sampler, s_noise, s_noise_end, noise_clip_std\)", "lcm"),
    ("ipndm", {"variable_steps": True}, r"sample_ipndm\(max_order\)", "ipndm"),
    ("sample_ipndm", {"variable_steps": True}, r"sample_ipndm\(max_order\)", "ipndm"),
    ("deis", {"weights": "diffusers"}, r"sample_deis\(max_order, deis_mode\)", "deis"),
    ("sample_deis", {"weights": "diffusers"}, r"sample_deis\(max_order, deis_mode\)", "deis"),
    ("sa_solver", {"weights": "diffusers"}, r"sample_sa_solver\(tau_func, s_noise, noise_sampler", "sa_solver"),
    ("sa_solver_pece", {"weights": "diffusers"}, r"sample_sa_solver_pece\(tau_func", "sa_solver_pece"),
    ("exp_heun_2_x0", {"noise_sampler": "seeded"}, r"sample_exp_heun_2_x0\(solver_type\)", "seeds_2"),
    ("uni_pc", {"order": 2}, r"sample_unipc\(variant\)", "unipc_bh1"),
    ("uni_pc", {"lower_order_final": False}, r"sample_unipc\(variant\)", "unipc_bh1"),
    ("uni_pc_bh2", {"corrector": False}, r"sample_unipc_bh2\(\)", "unipc_bh2"),
    ("uni_pc_bh2", {"disable_corrector": (1,)}, r"sample_unipc_bh2\(\)", "unipc_bh2"),
]


@pytest.mark.parametrize("name, option, signature, sampler", NOT_TAKEN)
def test_comfyui_names_refuse_the_options_comfyuis_functions_do_not_take(name, option, signature, sampler):
    """Every ComfyUI name refuses an option of its registry sampler that ComfyUI's function has no parameter for
    (KSAMPLER's extra_options would be a TypeError there), at build and call time and through samplers.sample,
    before any model call, naming the option, ComfyUI's signature and the registry sampler that takes it."""
    (key, value), = option.items()
    match = rf"'{name}' \(ComfyUI's\) takes no {key}: ComfyUI's {signature}.* leave {key} out.*, or name the " \
            rf"registry sampler '{sampler}'"
    model = Model(EPS(), denoise_ve)
    with pytest.raises(InvalidOption, match=match):
        ksampler_function(f"comfyui:{name}", **option)
    with pytest.raises(InvalidOption, match=match):
        ksampler_function(f"comfyui:{name}")(model, X_VE.clone(), SIGMAS, extra_args=dict(EXTRA), disable=True,
                                             **option)
    with pytest.raises(InvalidOption, match=match):
        samplers.sample(f"comfyui:{name}", model, X_VE.clone(), SIGMAS, disable=True, **seeded(name), **option)
    assert model.calls == 0


def seeded(name):
    """``seed=1`` where the ComfyUI name's sampler draws noise (takes a seed), else nothing."""
    return {"seed": 1} if "seed" in samplers.info(names.resolve(f"comfyui:{name}").sampler).options else {}


@pytest.mark.parametrize("name, option", [
    ("euler", {"s_churn": 0.5, "s_noise": 1.0}), ("ddim", {"s_churn": 0.5, "s_tmin": 0.1}),
    ("heunpp2", {"s_churn": 0.5}),
    ("lms", {"order": 2}), ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}), ("dpmpp_3m_sde_gpu", {"eta": 0.5}),
    ("ddpm", {"noise_sampler": "seeded"}), ("lcm", {"s_noise": 0.5}), ("ipndm", {"max_order": 2}),
    ("exp_heun_2_x0", {"solver_type": "phi_2"}),
    # ComfyUI's settings under the registry's names: sample_deis's max_order, SamplerSASolver's eta (its tau_func)
    ("deis", {"order": 2}), ("sample_deis", {"order": 1}), ("sa_solver", {"eta": 0.5}),
    ("sa_solver_pece", {"eta": 0.5, "sde_interval": (10.0, 0.5)}), ("dpm_adaptive", {"info": {}}),
])
def test_comfyui_names_run_the_options_comfyui_takes(name, option):
    model = Model(EPS(), denoise_ve)
    out = ksampler_function(f"comfyui:{name}", **option)(model, X_VE.clone(), SIGMAS, extra_args=dict(EXTRA),
                                                         disable=True)
    assert torch.isfinite(out).all() and model.calls > 0
    assert torch.isfinite(samplers.sample(f"comfyui:{name}", denoise_ve, X_VE.clone(), SIGMAS, disable=True,
                                          **seeded(name), **option)).all()


def test_the_range_options_keep_the_registry_rules_and_say_what_they_do():
    # final_denoise=False on a schedule without the trailing 0 is the registry's run on it
    nozero = SIGMAS[:-1]
    a = samplers.sample("dpm_fast", denoise_ve, X_VE.clone(), nozero, disable=True, final_denoise=False)
    b = samplers.sample("dpm_fast", denoise_ve, X_VE.clone(), nozero, disable=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the adaptive solve over the range: the callback fires per attempt, ending at the smallest non-zero σ
    seen, info = [], {}
    samplers.sample("dpm_adaptive", denoise_ve, X_VE.clone(), SIGMAS, disable=True, through_schedule=False,
                    final_denoise=False, callback=seen.append, info=info)
    assert len(seen) == info["n_accept"] + info["n_reject"] and info["nfe"] == 3 * len(seen)
    assert math.isclose(seen[-1]["sigma"], float(SIGMAS[-2]), rel_tol=1e-12)
    for name, option, bad in (("dpm_fast", "final_denoise", 0), ("dpm_adaptive", "through_schedule", "no"),
                              ("dpm_adaptive", "final_denoise", None)):
        model = Model(EPS(), denoise_ve)
        with pytest.raises((InvalidOption, InvalidType), match=option):
            samplers.sample(name, model, X_VE.clone(), SIGMAS, disable=True, **{option: bad})
        assert model.calls == 0


# ----------------------------------------------------------------------------------------------------
# 3: gradient estimation ends at the denoised x


@pytest.mark.parametrize("sampling, fn, sigmas", [(EPS(), denoise_ve, SIGMAS), (CONST(), denoise_flow, FLOW[0]),
                                                  (CONST(), denoise_flow, FLOW[1])])
def test_comfyui_gradient_estimation_matches_comfyui(sampling, fn, sigmas):
    x = start(sampling, sigmas)
    assert_same(comfy_label("gradient_estimation", sampling, fn, x, sigmas),
                reference(sample_gradient_estimation, sampling, fn, x, sigmas))


# ----------------------------------------------------------------------------------------------------
# 4: ER-SDE with ComfyUI's 200-point Riemann sum


@pytest.mark.parametrize("sampling, fn, sigmas", [(EPS(), denoise_ve, SIGMAS), (CONST(), denoise_flow, FLOW[0]),
                                                  (CONST(), denoise_flow, FLOW[1])])
@pytest.mark.parametrize("noise", [False, True])
def test_comfyui_er_sde_matches_comfyui(sampling, fn, sigmas, noise):
    x = start(sampling, sigmas)
    options = {} if noise else {"s_noise": 0.0}
    ours = comfy_label("er_sde", sampling, fn, x, sigmas, noise=noise, **options)
    assert_same(ours, reference(sample_er_sde, sampling, fn, x, sigmas, noise=noise, **options))
    # ComfyUI's literal float32 points: the same to float32 rounding
    literal = reference(sample_er_sde, sampling, fn, x, sigmas, noise=noise, point_dtype=torch.float32, **options)
    assert_same(ours, literal, tol=1e-6)


def test_er_sde_quadrature_is_validated_before_the_model_runs():
    model = Model(EPS(), denoise_ve)
    with pytest.raises(InvalidOption, match="quadrature must be one of"):
        samplers.sample("er_sde", model, X_VE.clone(), SIGMAS, disable=True, quadrature="simpson")
    assert model.calls == 0


# ----------------------------------------------------------------------------------------------------
# 5: exp_heun_2_x0 / exp_heun_2_x0_sde: seeds_2 with r = 1 and φ₂ weights


@pytest.mark.parametrize("sampling, fn, sigmas", [(EPS(), denoise_ve, SIGMAS), (CONST(), denoise_flow, FLOW[0]),
                                                  (CONST(), denoise_flow, FLOW[1])])
def test_comfyui_exp_heun_2_x0_matches_comfyui(sampling, fn, sigmas):
    x = start(sampling, sigmas)
    assert_same(comfy_label("exp_heun_2_x0", sampling, fn, x, sigmas),
                reference(sample_exp_heun_2_x0, sampling, fn, x, sigmas))
    for options in ({"eta": 0.0}, {"eta": 0.6}, {}):  # s_noise beside eta = 0 is refused: the run draws none
        noise = options.get("eta", 1.0) > 0
        assert_same(comfy_label("exp_heun_2_x0_sde", sampling, fn, x, sigmas, noise=noise, **options),
                    reference(sample_exp_heun_2_x0_sde, sampling, fn, x, sigmas, noise=noise, **options))


@pytest.mark.parametrize("sampling, fn, sigmas", [(EPS(), denoise_ve, SIGMAS), (CONST(), denoise_flow, FLOW[0]),
                                                  (CONST(), denoise_flow, FLOW[1])])
@pytest.mark.parametrize("options", [{}, {"eta": 0.5}, {"eta": 0.0}])
def test_comfyui_seeds_2_matches_comfyui(sampling, fn, sigmas, options):
    """comfyui:seeds_2 at its defaults (r = 1/2, φ₁), on a flow model too (half-log-SNR after the first-t offset),
    with the same noise draws (docs/comfyui.md listed it as not compared there)."""
    x = start(sampling, sigmas)
    noise = options.get("eta", 1.0) > 0
    assert_same(comfy_label("seeds_2", sampling, fn, x, sigmas, noise=noise, **options),
                reference(sample_seeds_2, sampling, fn, x, sigmas, noise=noise, **options))


def test_seeds_2_takes_r_up_to_1():
    model = Model(EPS(), denoise_ve)
    for bad, rule in ((1.5, "r must be <= 1"), (0.0, "r must be > 0")):
        with pytest.raises(InvalidOption, match=rule):
            samplers.sample("seeds_2", model, X_VE.clone(), SIGMAS, disable=True, r=bad)
    assert model.calls == 0
    with pytest.raises(InvalidOption, match="eta"):  # the deterministic label fixes η = 0
        ksampler_function("comfyui:exp_heun_2_x0", eta=0.5)


# ----------------------------------------------------------------------------------------------------
# 6: SA-Solver lowers its orders near the end of a run to 0 (ComfyUI's sample_sa_solver, not diffusers' rule).
# Transcribed from ComfyUI's comfy/k_diffusion/sampling.py sample_sa_solver and comfy/k_diffusion/sa_solver.py (the
# version that moved SA-Solver there, 2025); its b coefficients are the Lagrange basis integrated against
# (1 + τ²)·e^{(1+τ²)(λ − λ_t)}, here by a 40-point Gauss–Legendre rule (exact for these polynomials times the
# exponential to float64 rounding), not by ComfyUI's recursion.


class EPSRange(EPS):
    """An eps model with ComfyUI's percent_to_sigma (log-linear over this test's σ range)."""

    def percent_to_sigma(self, percent):
        lo, hi = math.log(0.0292), math.log(14.6146)
        return math.exp(lo + (1 - percent) * (hi - lo))


def sa_b_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau):
    k = 1 + tau**2
    nodes, weights = (torch.as_tensor(a, dtype=torch.float64) for a in __import__("numpy").polynomial.legendre.leggauss(40))
    lam = lambda_s + (lambda_t - lambda_s) * (nodes + 1) / 2
    kernel = k * torch.exp(k * (lam - lambda_t)) * weights * (lambda_t - lambda_s) / 2
    out = []
    for j, lj in enumerate(lambdas):
        basis = torch.ones_like(lam)
        for m, lm in enumerate(lambdas):
            if m != j:
                basis = basis * (lam - lm) / (lj - lm)
        out.append((kernel * basis).sum())
    alpha_t = sigma_next * torch.exp(lambda_t)
    return [alpha_t * b for b in out]


def sample_sa_solver(model, x, sigmas, extra_args=None, noise_sampler=None, s_noise=1.0, use_pece=False,
                     predictor_order=3, corrector_order=4):
    ms = ms_of(model)
    sigmas = offset_first_sigma_for_snr(sigmas, ms)
    lambdas = sigma_to_half_log_snr(sigmas, ms)
    start_sigma, end_sigma = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8)

    def tau_func(sigma):
        return 1.0 if start_sigma >= float(sigma) >= end_sigma else 0.0

    x_pred, h, tau_t, noise, preds = x, 0.0, 0.0, 0.0, []
    lower_order_to_end = float(sigmas[-1]) == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i])
        preds = (preds + [denoised])[-max(predictor_order, corrector_order):]
        p_used = min(predictor_order, len(preds))
        c_used = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if lower_order_to_end:
            p_used = min(p_used, len(sigmas) - 2 - i)
            c_used = min(c_used, len(sigmas) - 1 - i)
        if c_used == 0:
            x = x_pred
        else:
            b = sa_b_coeffs(sigmas[i], lambdas[i - c_used + 1:i + 1], lambdas[i - 1], lambdas[i], tau_t)
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau_t**2) * float(h)) * x
            x = x + sum(bj * d for bj, d in zip(b, preds[-c_used:]))
            if tau_t > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                preds[-1] = denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau_t = tau_func(sigmas[i + 1])
            b = sa_b_coeffs(sigmas[i + 1], lambdas[i - p_used + 1:i + 1], lambdas[i], lambdas[i + 1], tau_t)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau_t**2) * float(h)) * x
            x_pred = x_pred + sum(bj * d for bj, d in zip(b, preds[-p_used:]))
            if tau_t > 0 and s_noise > 0:
                noise = (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * math.sqrt(-math.expm1(-2 * tau_t**2 * float(h))) * s_noise)
                x_pred = x_pred + noise
    return x_pred


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
@pytest.mark.parametrize("steps", [3, 5, 10])
@pytest.mark.parametrize("sampling, fn, flow", [(EPSRange(), denoise_ve, False), (CONST(), denoise_flow, True)])
@pytest.mark.parametrize("noise", [False, True])
def test_comfyui_sa_solver_matches_comfyui(name, steps, sampling, fn, flow, noise):
    sigmas = flow_sigmas(steps) if flow else karras(steps)
    x = start(sampling, sigmas)
    options = {} if noise else {"s_noise": 0.0}
    pece = name == "sa_solver_pece"
    ours = comfy_label(name, sampling, fn, x, sigmas, noise=noise, **options)
    theirs = reference(lambda *a, **k: sample_sa_solver(*a, use_pece=pece, **k), sampling, fn, x, sigmas, noise=noise,
                       **options)
    assert_same(ours, theirs, tol=1e-10)


def test_the_full_orders_were_another_image():
    """The figures docs/names.md quotes: without ComfyUI's lowering (the label before it), on this problem without
    noise (|x| up to 1.13 at 5 steps, 0.91 at 20), max |Δ| was 0.87 at 5 steps and 9e-4 at 20."""
    window = tuple(EPSRange().percent_to_sigma(p) for p in (0.2, 0.8))
    for steps, lo, hi in ((5, 0.85, 0.89), (20, 8.5e-4, 9.0e-4)):
        sigmas = karras(steps)
        x = X0 * sigmas[0]
        label = comfy_label("sa_solver", EPSRange(), denoise_ve, x, sigmas, s_noise=0.0)[0]
        full = samplers.sample("sa_solver", denoise_ve, x.clone(), sigmas, disable=True, s_noise=0.0,
                               sde_interval=window)
        assert lo < float((label - full).abs().max()) < hi


def test_sa_solver_lower_order_final_takes_three_values():
    model = Model(EPS(), denoise_ve)
    for bad in (1, "ComfyUI", "diffusers", None):
        with pytest.raises((InvalidOption, InvalidType), match="lower_order_final"):
            samplers.sample("sa_solver", model, X_VE.clone(), SIGMAS, disable=True, seed=0, lower_order_final=bad)
    assert model.calls == 0
    runs = {v: samplers.sample("sa_solver", denoise_ve, X_VE.clone(), SIGMAS, disable=True, eta=0.0,
                               lower_order_final=v) for v in (False, True, "comfyui")}
    assert not torch.allclose(runs[False], runs["comfyui"]) and not torch.allclose(runs[True], runs["comfyui"])
    # ComfyUI lowers them only on a run that ends at 0
    to_02 = SIGMAS[:-1]
    assert torch.equal(samplers.sample("sa_solver", denoise_ve, X_VE.clone(), to_02, disable=True, eta=0.0,
                                       lower_order_final="comfyui"),
                       samplers.sample("sa_solver", denoise_ve, X_VE.clone(), to_02, disable=True, eta=0.0))


# ----------------------------------------------------------------------------------------------------
# 7: RES multistep ancestral (ComfyUI's res_multistep with η > 0, sample_res_multistep_ancestral; on flow models the
# same rule on ComfyUI's raw (x_t, t))


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, noise_sampler=None, eta=1.0, s_noise=1.0):
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0 or old_denoised is None:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1_fn(-h) - phi2_fn(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_fn(-h) / c2, nan=0.0)
            x = torch.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


@pytest.mark.parametrize("sampling, fn, sigmas", [(EPS(), denoise_ve, SIGMAS), (CONST(), denoise_flow, FLOW[0]),
                                                  (CONST(), denoise_flow, FLOW[1])])
@pytest.mark.parametrize("options", [{}, {"eta": 0.5, "s_noise": 0.7}, {"eta": 0.0}])
def test_comfyui_res_multistep_ancestral_matches_comfyui(sampling, fn, sigmas, options):
    x = start(sampling, sigmas)
    noise = options.get("eta", 1.0) > 0
    assert_same(comfy_label("res_multistep_ancestral", sampling, fn, x, sigmas, noise=noise, **options),
                reference(sample_res_multistep_ancestral, sampling, fn, x, sigmas, noise=noise, **options))


def test_res_multistep_ancestral_at_eta_0_is_res_multistep():
    ours = samplers.sample("res_multistep_ancestral", denoise_ve, X_VE.clone(), SIGMAS, disable=True, eta=0.0)
    torch.testing.assert_close(ours, samplers.sample("res_multistep", denoise_ve, X_VE.clone(), SIGMAS, disable=True),
                               rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------------------------------
# The registry names keep their rules (values computed before the options above existed)

BEFORE = {  # (sampler, options): (Σx, Σx², x[5], x[-7]) on X0·σ₀ with karras(10), batch 2
    ("dpm_fast", ()): (-1.7755775794321806, 445.14044960209077, -1.599116202207388, -0.8626423662226583),
    ("dpm_adaptive", ()): (-0.9883184984236397, 409.2399733034181, -1.535150392003673, -0.830377142481874),
    ("gradient_estimation", ()): (-0.8998052095349829, 471.9202751941272, -1.6504640397540487, -0.8786323298582501),
    ("er_sde", (("s_noise", 0.0),)): (8.530648968163115, 198.3172231469082, -1.0566896689891943, -0.5538880204664832),
    ("seeds_2", (("eta", 0.0),)): (-0.6093732388541202, 392.20134215189375, -1.5024254024013959, -0.8134444985842898),
    ("seeds_2", (("eta", 0.0), ("r", 0.7), ("solver_type", "phi_2"))):
        (-0.6313062201701314, 394.1700243186478, -1.5062404189931768, -0.8152246272101304),
}


@pytest.mark.parametrize("key", list(BEFORE))
def test_registry_names_are_unchanged(key):
    name, options = key
    x = samplers.sample(name, denoise_ve, X_VE.clone(), SIGMAS, disable=True, **dict(options)).flatten()
    got = (float(x.sum()), float((x * x).sum()), float(x[5]), float(x[-7]))
    assert all(math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-12) for g, w in zip(got, BEFORE[key])), got


# ----------------------------------------------------------------------------------------------------
# 8: Euler ancestral where η > 1 caps σ_up at σ_next (σ_down = 0): ComfyUI's sample_euler_ancestral returns the
# denoised x and draws nothing there; k-diffusion's (the registry's, A1111's "Euler a") adds σ_up of noise


def sample_euler_ancestral(model, x, sigmas, extra_args=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """ComfyUI's sample_euler_ancestral on an eps / v / EDM model (its CONST branch is sample_euler_ancestral_RF)."""
    if noise_sampler is None:
        noise_sampler = comfy_default_noise(x, (extra_args or {}).get("seed"))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i]) \
                + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def comfy_default_noise(x, seed):
    """ComfyUI's default_noise_sampler(x, seed) on the CPU: one generator seeded seed + 1, a draw of x's shape."""
    generator = torch.Generator().manual_seed(seed + 1)
    return lambda sigma, sigma_next: torch.randn(x.shape, dtype=x.dtype, generator=generator)


@pytest.mark.parametrize("eta", [1.5, 3.0])
def test_comfyui_euler_ancestral_denoises_without_noise_where_sigma_down_is_0(eta):
    x = start(EPS(), SIGMAS)
    ours = comfy_label("euler_ancestral", EPS(), denoise_ve, x, SIGMAS, noise=True, eta=eta)
    theirs = reference(sample_euler_ancestral, EPS(), denoise_ve, x, SIGMAS, noise=True, eta=eta)
    assert_same(ours, theirs)
    assert theirs[2] < len(SIGMAS) - 2  # (the case: steps without a draw)


@pytest.mark.parametrize("eta", [1.5, 3.0])
def test_comfyui_euler_ancestral_at_eta_above_1_on_comfyuis_default_noise(eta):
    x = start(EPS(), SIGMAS)[:1]  # one image: ComfyUI's one generator is this library's for image 0
    ours = comfy_label("euler_ancestral", EPS(), denoise_ve, x, SIGMAS, eta=eta)
    theirs = reference(sample_euler_ancestral, EPS(), denoise_ve, x, SIGMAS, eta=eta)
    assert_same(ours, theirs)


def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """ComfyUI's sample_dpmpp_2s_ancestral on an eps / v / EDM model: its step to σ_down = 0 is Euler's, and noise is
    added after every step to σ_next > 0, that one too."""
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_fn(s))
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@pytest.mark.parametrize("eta", [1.5, 3.0])
@pytest.mark.parametrize("name, ref", [("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral),
                                       ("res_multistep_ancestral", sample_res_multistep_ancestral)])
def test_comfyuis_other_ancestral_samplers_add_noise_after_a_step_to_sigma_down_0(name, ref, eta):
    x = start(EPS(), SIGMAS)
    assert_same(comfy_label(name, EPS(), denoise_ve, x, SIGMAS, noise=True, eta=eta),
                reference(ref, EPS(), denoise_ve, x, SIGMAS, noise=True, eta=eta))


def test_registry_euler_ancestral_keeps_k_diffusions_noise_where_sigma_down_is_0():
    """The registry's euler_ancestral (A1111's "Euler a", the k-diffusion drop-in) adds σ_up of noise after the step
    to the denoised x: 9 draws on 10 steps at η = 1.5, as k-diffusion (tests/test_kdiffusion_parity.py, η = 3)."""
    noise = SeqNoise(X_VE)
    out = samplers.sample("euler_ancestral", denoise_ve, X_VE.clone(), SIGMAS, disable=True, eta=1.5,
                          noise_sampler=noise)
    assert noise.k == len(SIGMAS) - 2
    comfy = samplers.sample("comfyui:euler_ancestral", denoise_ve, X_VE.clone(), SIGMAS, disable=True, eta=1.5,
                            noise_sampler=SeqNoise(X_VE))
    assert (out - comfy).abs().max() > 0.1


def test_comfyui_euler_ancestral_on_a_flow_model_runs_the_rf_rule_without_the_options_it_lacks():
    """On a flow model ComfyUI runs sample_euler_ancestral_RF (η ≤ 1, no σ_down = 0 step): the label's
    noise_at_zero_down is not passed to it, and a caller's own is refused, not dropped."""
    sigmas = FLOW[1]
    x = start(CONST(), sigmas)
    out, calls, _ = comfy_label("euler_ancestral", CONST(), denoise_flow, x, sigmas, noise=True, eta=0.5)
    assert calls == len(sigmas) - 1 and torch.isfinite(out).all()
    with pytest.raises(InvalidOption, match="euler_ancestral_rf has no option 'noise_at_zero_down'"):
        comfy_label("euler_ancestral", CONST(), denoise_flow, x, sigmas, noise=True, noise_at_zero_down=False)
    with pytest.raises(InvalidOption, match="eta must be <= 1"):
        comfy_label("euler_ancestral", CONST(), denoise_flow, x, sigmas, noise=True, eta=1.5)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "heunpp2", "ddim"])
def test_comfyui_churn_draws_this_librarys_per_item_noise(name):
    """Not ComfyUI's (docs/comfyui.md): ComfyUI draws the churn with torch.randn_like from torch's global generator,
    seeded by prepare_noise's torch.manual_seed(seed), one draw for the whole batch; the comfyui: names draw the
    per-item seeded noise of seed + k for image k, so an image does not depend on the batch."""
    x = start(EPS(), SIGMAS)
    batch = comfy_label(name, EPS(), denoise_ve, x, SIGMAS, s_churn=1.0)[0]
    sampler = names.resolve(f"comfyui:{name}").sampler
    alone = samplers.sample(sampler, denoise_ve, x[1:].clone(), SIGMAS, disable=True, s_churn=1.0,
                            seed=EXTRA["seed"] + 1)
    assert torch.equal(batch[1:], alone)
    assert not torch.equal(batch, comfy_label(name, EPS(), denoise_ve, x, SIGMAS)[0])  # (the churn draws)


@pytest.mark.parametrize("name, option", [
    ("lcm", {"eta": 1.0}), ("ddpm", {"s_noise": 1}), ("dpm_fast", {"eta": 0.0, "s_noise": 1.0}),
    ("dpmpp_2m_sde", {"euler_at_final": False}), ("dpmpp_2m", {"solver_type": "midpoint"}),
    ("uni_pc_bh2", {"corrector": True}), ("lms", {"prior_sigmas": ()}),
    # read as the option rules read them: a 0-d CPU tensor, a numpy number, a list for a tuple
    ("lcm", {"eta": torch.tensor(1.0)}), ("dpm_fast", {"s_noise": torch.tensor(1.0)}), ("lms", {"prior_sigmas": []}),
    ("lcm", {"eta": np.float32(1.0)}), ("uni_pc", {"order": 3}),
])
def test_an_option_comfyuis_function_lacks_at_the_value_it_runs_is_dropped(name, option):
    """An option ComfyUI's function has no parameter for, at the value that function runs (comfyui:lcm re-noises at
    eta 1, comfyui:dpm_fast runs at eta 0), is dropped as _a1111_received drops A1111's settings at their no-op
    values: the image is ComfyUI's, the same as without it; another value is refused (the tests above)."""
    model = Model(EPS(), denoise_ve)
    given = samplers.sample(f"comfyui:{name}", model, X_VE.clone(), SIGMAS, disable=True, **seeded(name), **option)
    plain = samplers.sample(f"comfyui:{name}", model, X_VE.clone(), SIGMAS, disable=True, **seeded(name))
    assert torch.equal(given, plain)
    ksampler_function(f"comfyui:{name}", **option)


@pytest.mark.parametrize("name, option", [("uni_pc", {"order": 3.0}), ("lcm", {"eta": True})])
def test_a_value_the_options_rule_would_refuse_is_not_dropped_as_comfyuis(name, option):
    """order=3.0 is no integer order (the registry's unipc_bh1 refuses it), eta=True no number: not ComfyUI's own
    value, so refused, not dropped without a word."""
    model = Model(EPS(), denoise_ve)
    with pytest.raises(InvalidOption, match=rf"'{name}' \(ComfyUI's\) takes no"):
        samplers.sample(f"comfyui:{name}", model, X_VE.clone(), SIGMAS, disable=True, **seeded(name), **option)
    assert model.calls == 0

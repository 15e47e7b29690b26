"""A1111's sampler rules where they are its own, against references transcribed from its source
(AUTOMATIC1111/stable-diffusion-webui 255da37d: modules/sd_samplers_extra.py ``restart_sampler`` with its automatic
``restart_list``; modules/sd_samplers_lcm.py ``LCMCompVisDenoiser.get_sigmas``) and Forge's menu spellings
(lllyasviel/stable-diffusion-webui-forge modules_forge/alter_samplers.py: "IPNDM", "IPNDM_V").

float64 throughout, on a smooth analytic denoiser; the noise is keyed by the interval it is drawn for, so both sides
draw the same noise wherever they draw it.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import samplers
from samplers.core import names
from samplers.sde.solvers import restart_extra_nfe

SD15 = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)


class Model:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (x + 0.3 * s ** 2 * torch.tanh(x + 0.5)) / (1 + s ** 2)


def interval_noise(shape):
    def draw(a, b):
        key = int(hashlib.sha256(f"{float(a):.12e}|{float(b):.12e}".encode()).hexdigest()[:15], 16)
        return torch.randn(shape, generator=torch.Generator().manual_seed(key), dtype=torch.float64)
    return draw


def karras(n, sigma_min, sigma_max, rho=7.0):  # k-diffusion's get_sigmas_karras, in float64
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def a1111_restart_sampler(model, x, sigmas, noise, s_noise=1.0):
    """restart_sampler(model, x, sigmas) with restart_list=None, its randn_like draws taken from ``noise``."""
    s_in = x.new_ones([x.shape[0]])

    def heun_step(x, old_sigma, new_sigma):
        denoised = model(x, old_sigma * s_in)
        d = to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            return x + d * dt
        x_2 = x + d * dt
        d_2 = to_d(x_2, new_sigma, model(x_2, new_sigma * s_in))
        return x + (d + d_2) / 2 * dt

    steps = sigmas.shape[0] - 1
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    else:
        restart_list = {}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                for _ in range(restart_times):
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise(old_sigma, last_sigma) * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last_sigma = new_sigma
    return x


@pytest.mark.parametrize("steps", [10, 19, 20, 30, 36, 40])
def test_a1111_restart_is_a1111s_restart_sampler(steps):
    """Below 20 steps Heun; from 20 A1111 rebuilds a Karras schedule shorter by its restart steps (same model calls
    as Heun). The label ran the registry's ((4, 1, 0.1, 2.0),) on the given schedule: 3.5-4.5 apart, 8 calls more."""
    sigmas = karras(steps, float(SD15.sigma_min), float(SD15.sigma_max))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    ours_model, theirs_model = Model(), Model()
    ours = samplers.sample("a1111:Restart", ours_model, x.clone(), sigmas, disable=True,
                           noise_sampler=interval_noise(x.shape))
    theirs = a1111_restart_sampler(theirs_model, x.clone(), sigmas.clone(), interval_noise(x.shape))
    assert ours_model.calls == theirs_model.calls == 2 * steps - 1
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert restart_extra_nfe(sigmas, "a1111") == 0


@pytest.mark.parametrize("schedule,steps", [(name, n) for name in ("simple", "sgm_uniform") for n in range(20, 25)]
                         + [("karras", 20), ("karras", 24)])
def test_a1111_restart_restarts_from_the_final_zero_where_a1111_picks_it(schedule, steps):
    """A1111 picks its restart point as argmin |σ − 0.1| over the whole rebuilt list, the final 0 included. On Simple
    and SGM Uniform at 20-24 steps (SD 1.5) every σ > 0 is above 0.2, so that point is the final 0: after the step to
    0 it re-noises up to the point nearest 2 and steps back down to 0, its last step Euler's (2·steps − 2 calls, one
    fewer than Heun). The label restarted at the last σ > 0 instead: one call more, and another image."""
    sigmas = samplers.get_sigmas(schedule, steps, native=SD15)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sigmas[0]
    ours_model, theirs_model = Model(), Model()
    ours = samplers.sample("a1111:Restart", ours_model, x.clone(), sigmas, disable=True,
                           noise_sampler=interval_noise(x.shape))
    theirs = a1111_restart_sampler(theirs_model, x.clone(), sigmas.clone(), interval_noise(x.shape))
    at_zero = float(sigmas[-2]) > 0.2
    assert at_zero == (schedule != "karras")
    assert ours_model.calls == theirs_model.calls == 2 * steps - 1 - at_zero
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert restart_extra_nfe(sigmas, "a1111") == -at_zero


def test_restart_refuses_another_restart_name_before_any_model_call():
    model = Model()
    sigmas = karras(20, 0.03, 14.6)
    with pytest.raises(samplers.InvalidInput, match="restart must be .* or 'a1111'"):
        samplers.sample("restart", model, torch.zeros(1, 2) + 14.6, sigmas, restart="comfy", disable=True, seed=0)
    # A1111's rule rebuilds a schedule that ends in 0: a partial one would silently come back fully denoised
    for steps in (10, 42):
        with pytest.raises(samplers.InvalidInput, match="stops at σ = 0.3"):
            samplers.sample("a1111:Restart", model, torch.zeros(1, 2) + 14.6, karras(steps, 0.03, 14.6)[:-1].clamp(min=0.3)
                            .unique_consecutive(), disable=True, seed=0)
    assert model.calls == 0


def a1111_lcm_sigmas(n, table, timesteps=1000, original_timesteps=50):
    """LCMCompVisDenoiser.get_sigmas(n): linspace over LCM's 50-timestep table (k-diffusion's log-σ interpolation)."""
    skip = timesteps // original_timesteps
    valid = np.array([table[timesteps - 1 - (original_timesteps - 1 - k) * skip] for k in range(original_timesteps)])
    log_sigmas = np.log(valid)
    t = np.linspace(original_timesteps - 1, 0, n)
    low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
    w = t - low
    return list(np.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high])) + [0.0]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 13, 50, 60])
def test_a1111_lcm_runs_on_a1111s_lcm_schedule(n):
    """A1111's "LCM" takes its Automatic schedule from LCM's own 50-timestep table: its last σ > 0 is timestep 19's
    (0.1345 on SD 1.5), where the label's linspace reached timestep 0's (0.0292). The rule (``lcm_uniform``) on the
    exact table here; the label runs it on A1111's float32 table (``a1111:LCM``: tests/test_a1111_float32_table.py)."""
    assert names.resolve("a1111:LCM").schedule == "a1111:LCM"
    assert names.resolve_schedule("a1111:LCM", native=SD15)[0] == "lcm_uniform"
    ours = samplers.get_sigmas("lcm_uniform", n, native=SD15)
    want = torch.tensor(a1111_lcm_sigmas(n, SD15.sigmas.double().numpy()), dtype=torch.float64)
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)
    if n > 1:
        assert math.isclose(float(ours[-2]), float(SD15.sigmas[19]), rel_tol=1e-12)


def test_lcm_uniform_checks_its_option():
    with pytest.raises(samplers.LimitExceeded, match="original_steps = 2000 is more than the limit of 1000"):
        samplers.get_sigmas("lcm_uniform", 4, native=SD15, original_steps=2000)


@pytest.mark.parametrize("label, variable", [("IPNDM", False), ("IPNDM_V", True)])
def test_forges_spellings_are_forges_labels(label, variable):
    """Forge's menu spells iPNDM "IPNDM": the name as typed is its label (with ComfyUI's final denoise), not the
    registry's ipndm that a case-insensitive match found first."""
    found = names.resolve(label)
    assert (found.source, found.sampler) == ("a1111", "ipndm")
    assert found.options.get("final_denoise") is True
    assert bool(found.options.get("variable_steps")) is variable


@pytest.mark.parametrize("alias, label", [("k_lms_ka", "LMS Karras"), ("k_dpm_2_ka", "DPM2 Karras"),
                                          ("k_dpm_2_a_ka", "DPM2 a Karras"), ("k_dpmpp_2s_a_ka", "DPM++ 2S a Karras"),
                                          ("k_dpmpp_2m_ka", "DPM++ 2M Karras"), ("k_dpmpp_sde_ka", "DPM++ SDE Karras"),
                                          ("k_dpmpp_2m_sde_exp", "DPM++ 2M SDE Exponential"), ("k_lcm", "LCM")])
def test_a1111s_older_aliases_are_its_labels(alias, label):
    """A1111's samplers_k_diffusion lists these aliases beside the labels (k_dpmpp_2m_sde_ka is left out: A1111
    gave it to both "DPM++ 2M SDE" and "DPM++ 2M SDE Karras")."""
    a, b = names.resolve(alias), names.resolve(f"a1111:{label}")
    assert (a.sampler, a.options, a.schedule, a.schedule_is_explicit, a.discard_penultimate_sigma) == \
        (b.sampler, b.options, b.schedule, b.schedule_is_explicit, b.discard_penultimate_sigma)

"""A1111's "Schedule type" menu and ComfyUI's ``scheduler`` values, through the name tables, against each tool's own
rule on Stable Diffusion 1.x's table, step counts 1-50.

The references below are written from the tools' sources (read, not imported: neither tool is installed):
A1111 modules/sd_schedulers.py (AUTOMATIC1111/stable-diffusion-webui 5bbbda47; Forge's is the same) and
sd_samplers_kdiffusion.py ``get_sigmas`` (steps + 1 when the sampler discards the next-to-last σ, "Automatic" →
the sampler's own scheduler or the model's ``get_sigmas``); ComfyUI comfy/samplers.py (Comfy-Org/ComfyUI 311c0140:
``ddim_scheduler``, ``linear_quadratic_schedule``, ``kl_optimal_scheduler``, ``KSampler.calculate_sigmas``). A1111's
"Uniform" is k-diffusion's own ``DiscreteSchedule.get_sigmas`` (the installed package).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import samplers
from samplers.core import names

SD15 = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
SMIN, SMAX = float(SD15.sigma_min), float(SD15.sigma_max)
TABLE = SD15.sigmas.double()
STEPS = [1, 2, 3, 4, 5, 7, 10, 13, 20, 25, 30, 50]


def ours(label: str, n: int) -> torch.Tensor:
    name, options = names.resolve_schedule(label)
    return samplers.get_sigmas(name, n, native=SD15, **options)


def close(a, b, rtol=2e-5):  # the tools compute in float32
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.tolist(), b.tolist())
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-6)


# --------------------------------------------------------------------------------- A1111's formulas

def a1111_kl_optimal(n):
    i = np.arange(n + 1) / n
    return np.tan(i * math.atan(SMIN) + (1 - i) * math.atan(SMAX))


def a1111_ays(n, levels=(14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)):
    if n == len(levels):
        return list(levels) + [0.0]
    xs, ys = np.linspace(0, 1, len(levels)), np.log(np.asarray(levels)[::-1])
    return list(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]) + [0.0]


def a1111_beta(n, alpha=0.6, beta=0.6):
    return [SMIN + stats.beta.ppf(x, alpha, beta) * (SMAX - SMIN) for x in 1 - np.linspace(0, 1, n)] + [0.0]


def ddim_stride(n):  # A1111's ddim_scheduler and ComfyUI's ddim_scheduler (SD's table: no zero entry at index 1)
    ss, x, sigs = max(1000 // n, 1), 1, []
    while x < 1000:
        sigs.append(float(TABLE[x]))
        x += ss
    return sigs[::-1] + [0.0]


@pytest.mark.parametrize("n", STEPS)
def test_a1111_schedule_types_are_a1111s(n):
    close(ours("a1111:KL Optimal", n), a1111_kl_optimal(n))
    close(ours("a1111:Align Your Steps", n), a1111_ays(n))
    close(ours("a1111:Beta", n), a1111_beta(n))
    close(ours("a1111:DDIM", n), ddim_stride(n))


@pytest.mark.parametrize("n", STEPS)
def test_a1111_uniform_is_kdiffusions_get_sigmas(n):
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules

    try:
        external = kdiffusion_modules()[1]
    except KDiffusionUnavailable as e:  # pragma: no cover - installed by make install
        pytest.skip(str(e))
    wrap = external.DiscreteSchedule(SD15.sigmas.float(), quantize=False)
    close(ours("a1111:Uniform", n), wrap.get_sigmas(n))


# ------------------------------------------------------------------------------ ComfyUI's formulas

def comfy_linear_quadratic(n, sigma_max, threshold_noise=0.025):
    if n == 1:
        return [sigma_max, 0.0]
    linear_steps = n // 2
    lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    diff = linear_steps - threshold_noise * n
    q = n - linear_steps
    qc, lc = diff / (linear_steps * q ** 2), threshold_noise / linear_steps - 2 * diff / q ** 2
    const = qc * linear_steps ** 2
    levels = lin + [qc * i ** 2 + lc * i + const for i in range(linear_steps, n)] + [1.0]
    return [(1.0 - v) * sigma_max for v in levels]


def comfy_simple(table, n):  # ComfyUI's simple_scheduler (A1111's "Simple" is the same): N/n rounded first
    ss = len(table) / n
    return [float(table[-(1 + int(x * ss))]) for x in range(n)] + [0.0]


def test_comfyui_simple_is_comfyuis_for_every_step_count():
    """Every n to 50, n = 38 included: 19·(1000/38) is 499.99… in floating point, and the tools take timestep 500."""
    for n in range(1, 51):
        close(ours("comfyui:simple", n), comfy_simple(TABLE, n))
        close(ours("a1111:Simple", n), comfy_simple(TABLE, n))


@pytest.mark.parametrize("n", STEPS)
def test_comfyui_schedulers_are_comfyuis(n):
    close(ours("comfyui:ddim_uniform", n), ddim_stride(n))
    close(ours("comfyui:linear_quadratic", n), comfy_linear_quadratic(n, SMAX))


def test_comfyui_linear_quadratic_on_a_flow_model_is_in_flow_time():
    flow = samplers.RectifiedFlow(shift=3.0)
    for n in STEPS:
        sig = samplers.get_sigmas("linear_quadratic", n, native=flow)
        t = torch.where(torch.isinf(sig), torch.ones_like(sig), sig / (1 + sig))  # ComfyUI's σ on a flow model
        close(t, comfy_linear_quadratic(n, 1.0), rtol=1e-9)


# --------------------------------------------------------------------- labels: what "Automatic" means

@pytest.mark.parametrize("label", ["Euler a", "Euler", "LMS", "Heun", "DPM fast", "DPM adaptive", "LCM", "iPNDM",
                                   "iPNDM_v", "DEIS"])
def test_a1111_labels_without_a_scheduler_run_on_uniform(label):
    """A1111's "Automatic" for a sampler without its own scheduler is the model's get_sigmas: "Uniform"."""
    found, schedule, _ = names.resolve_call(f"a1111:{label}")
    assert (schedule, found.schedule_is_explicit, found.discard_penultimate_sigma) == ("linspace", False, False)
    assert names.resolve_call(f"a1111:{label}", "karras")[1] == "karras"  # a caller's schedule still replaces it


@pytest.mark.parametrize("label, discard", [("a1111:DPM2", True), ("a1111:DPM2 a", True), ("a1111:DPM++ 3M SDE", True),
                                            ("comfyui:dpm_2", True), ("comfyui:dpm_2_ancestral", True),
                                            ("comfyui:uni_pc", True), ("comfyui:uni_pc_bh2", True),
                                            ("comfyui:dpmpp_2m", False), ("dpm_2", False)])
def test_which_names_discard_the_next_to_last_sigma(label, discard):
    """A1111's discard_next_to_last_sigma samplers and ComfyUI's KSampler DISCARD_PENULTIMATE_SIGMA_SAMPLERS (the
    registry's own names never discard)."""
    assert names.resolve_call(label)[0].discard_penultimate_sigma is discard

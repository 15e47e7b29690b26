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
# A1111's table: k-diffusion's CompVisDenoiser σ of the model's float32 alphas_cumprod buffer (ldm's register_schedule),
# and KDiffusionSampler.get_sigmas' ends, model_wrap.sigmas[0] / [-1] (tests/test_a1111_float32_table.py)
A1111_TABLE = ((1 - SD15.alphas_cumprod.float()) / SD15.alphas_cumprod.float()) ** 0.5
A1111_SMIN, A1111_SMAX = A1111_TABLE[0].item(), A1111_TABLE[-1].item()
STEPS = [1, 2, 3, 4, 5, 7, 10, 13, 20, 25, 30, 50]


def ours(label: str, n: int) -> torch.Tensor:
    name, options = names.resolve_schedule(label, native=SD15)  # as the pipeline resolves it: A1111's float32 table
    return samplers.get_sigmas(name, n, native=SD15, **options)


def close(a, b, rtol=2e-5):  # the tools compute in float32
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.tolist(), b.tolist())
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-6)


# --------------------------------------------------------------------------------- A1111's formulas

def a1111_kl_optimal(n):
    i = np.arange(n + 1) / n
    return np.tan(i * math.atan(A1111_SMIN) + (1 - i) * math.atan(A1111_SMAX))


def a1111_ays(n, levels=(14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)):
    if n == len(levels):
        return list(levels) + [0.0]
    xs, ys = np.linspace(0, 1, len(levels)), np.log(np.asarray(levels)[::-1])
    return list(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]) + [0.0]


def a1111_beta(n, alpha=0.6, beta=0.6):
    return [A1111_SMIN + stats.beta.ppf(x, alpha, beta) * (A1111_SMAX - A1111_SMIN)
            for x in 1 - np.linspace(0, 1, n)] + [0.0]


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


@pytest.mark.parametrize("n", [1, 5, 10, 38])
def test_get_sigmas_takes_the_tools_names_as_the_tools_mean_them(n):
    """``samplers.get_sigmas`` resolves a name as the pipeline and the CLI do: A1111's "Beta" and "KL Optimal" are
    A1111's (not the registry's beta_timesteps / kl_optimal that their normalised spelling finds), and "Align Your
    Steps", "DDIM", "Uniform" and ``comfyui:`` names build their tool's list; a tool's fixed option cannot be
    overridden."""
    close(samplers.get_sigmas("Beta", n, native=SD15), a1111_beta(n))
    close(samplers.get_sigmas("KL Optimal", n, native=SD15), a1111_kl_optimal(n))
    close(samplers.get_sigmas("Align Your Steps", n, native=SD15), a1111_ays(n))
    close(samplers.get_sigmas("DDIM", n, native=SD15), ddim_stride(n))
    close(samplers.get_sigmas("Uniform", n, native=SD15), ours("a1111:Uniform", n))
    close(samplers.get_sigmas("comfyui:beta", n, native=SD15), samplers.get_sigmas("beta_timesteps", n, native=SD15))
    native, comfy = FLOW_MODELS["sd3_shift3"]
    close(samplers.get_sigmas("comfyui:karras", n, native=native),
          comfy_flow_as_ve(comfy_calculate_sigmas(comfy, "karras", n)))
    with pytest.raises(samplers.InvalidOption, match="end='sigma_min'.*pass the registry name 'kl_optimal'"):
        samplers.get_sigmas("KL Optimal", n, native=SD15, end="zero")


@pytest.mark.parametrize("n", STEPS)
def test_a1111_uniform_is_kdiffusions_get_sigmas(n):
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules

    try:
        external = kdiffusion_modules()[1]
    except KDiffusionUnavailable as e:  # pragma: no cover - installed by make install
        pytest.skip(str(e))
    wrap = external.DiscreteSchedule(A1111_TABLE, quantize=False)  # A1111's model_wrap: its float32 table
    close(ours("a1111:Uniform", n), wrap.get_sigmas(n), rtol=5e-7)


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

@pytest.mark.parametrize("label", ["Euler a", "Euler", "LMS", "Heun", "DPM fast", "DPM adaptive", "iPNDM",
                                   "iPNDM_v", "DEIS"])
def test_a1111_labels_without_a_scheduler_run_on_uniform(label):
    """A1111's "Automatic" for a sampler without its own scheduler is the model's get_sigmas: "Uniform". (LCM's
    model is LCM's own denoiser, whose get_sigmas is lcm_uniform: tests/test_a1111_rules.py.)"""
    found, schedule, _ = names.resolve_call(f"a1111:{label}")
    assert (schedule, found.schedule_is_explicit, found.discard_penultimate_sigma) == ("a1111:Uniform", False, False)
    assert names.resolve_call(f"a1111:{label}", "karras")[1] == "karras"  # a caller's schedule still replaces it


@pytest.mark.parametrize("label, discard", [("a1111:DPM2", True), ("a1111:DPM2 a", True), ("a1111:DPM++ 3M SDE", True),
                                            ("comfyui:dpm_2", True), ("comfyui:dpm_2_ancestral", True),
                                            ("comfyui:uni_pc", True), ("comfyui:uni_pc_bh2", True),
                                            ("comfyui:dpmpp_2m", False), ("dpm_2", False)])
def test_which_names_discard_the_next_to_last_sigma(label, discard):
    """A1111's discard_next_to_last_sigma samplers and ComfyUI's KSampler DISCARD_PENULTIMATE_SIGMA_SAMPLERS (the
    registry's own names never discard)."""
    assert names.resolve_call(label)[0].discard_penultimate_sigma is discard


# ------------------------------------------------------- ComfyUI's scheduler names on flow models (SD3, Flux)
# Written from comfy/model_sampling.py (Comfy-Org/ComfyUI 2fd20839: time_snr_shift, flux_time_shift,
# ModelSamplingDiscreteFlow, ModelSamplingFlux) and comfy/samplers.py (311c0140: calculate_sigmas and
# SCHEDULER_HANDLERS, simple_scheduler, ddim_scheduler, normal_scheduler, beta_scheduler, kl_optimal_scheduler;
# karras / exponential are k-diffusion's get_sigmas_karras / get_sigmas_exponential), in float64. On a flow model
# ComfyUI's σ is the flow time t; the lists compare as VE σ = t/(1 − t), t = 1 being σ = inf.

def time_snr_shift(alpha, t):
    return t if alpha == 1.0 else alpha * t / (1 + (alpha - 1) * t)


class ComfyDiscreteFlow:  # ModelSamplingDiscreteFlow(shift, multiplier), its 1000-entry table
    def __init__(self, shift, multiplier=1000.0, timesteps=1000):
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = [self.sigma(i / timesteps * multiplier) for i in range(1, timesteps + 1)]
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return time_snr_shift(self.shift, timestep / self.multiplier)


class ComfyFlux(ComfyDiscreteFlow):  # ModelSamplingFlux(shift=mu): 10000 entries, timestep(σ) = σ
    def __init__(self, mu, timesteps=10000):
        self.mu = mu
        self.sigmas = [self.sigma(i / timesteps) for i in range(1, timesteps + 1)]
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return sigma

    def sigma(self, timestep):  # flux_time_shift(mu, 1.0, t)
        return math.exp(self.mu) / (math.exp(self.mu) + (1 / timestep - 1) ** 1.0)


def c_simple(s, steps):
    ss = len(s.sigmas) / steps
    return [s.sigmas[-(1 + int(x * ss))] for x in range(steps)] + [0.0]


def c_ddim(s, steps):
    x = 1
    if math.isclose(s.sigmas[x], 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(s.sigmas) // steps, 1)
    while x < len(s.sigmas):
        sigs += [s.sigmas[x]]
        x += ss
    return sigs[::-1]


def c_normal(s, steps, sgm=False):
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        timesteps = np.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(s.sigma(end), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = np.linspace(start, end, steps)
    return [s.sigma(ts) for ts in timesteps] + ([0.0] if append_zero else [])


def c_beta(s, steps, alpha=0.6, beta=0.6):
    total_timesteps = len(s.sigmas) - 1
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total_timesteps)
    sigs, last_t = [], -1
    for t in ts:
        if t != last_t:
            sigs += [s.sigmas[int(t)]]
        last_t = t
    return sigs + [0.0]


def c_karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = np.linspace(0, 1, n)
    return list((sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho) + [0.0]


def c_exponential(n, sigma_min, sigma_max):
    return list(np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))) + [0.0]


def c_kl_optimal(n, sigma_min, sigma_max):
    adj = np.arange(n) / (n - 1)
    return list(np.tan(adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max))) + [0.0]


COMFY_HANDLERS = {  # calculate_sigmas: (handler, use_ms)
    "simple": (c_simple, True), "sgm_uniform": (lambda s, n: c_normal(s, n, sgm=True), True),
    "karras": (c_karras, False), "exponential": (c_exponential, False), "ddim_uniform": (c_ddim, True),
    "beta": (c_beta, True), "normal": (c_normal, True),
    "linear_quadratic": (lambda s, n: [v * s.sigma_max for v in comfy_linear_quadratic(n, 1.0)], True),
    "kl_optimal": (c_kl_optimal, False),
}


def comfy_calculate_sigmas(s, scheduler, steps):
    handler, use_ms = COMFY_HANDLERS[scheduler]
    return handler(s, steps) if use_ms else handler(n=steps, sigma_min=s.sigma_min, sigma_max=s.sigma_max)


def comfy_flow_as_ve(t):
    """ComfyUI's flow σ list as VE σ. Its top level is t = 1 (kl_optimal computes it as tan(atan(1)), 1 within an ulp):
    σ = inf."""
    return [math.inf if v >= 1 - 1e-12 else v / (1 - v) for v in t]


FLOW_MODELS = {  # ours, ComfyUI's
    "sd3_shift1": (samplers.RectifiedFlow(shift=1.0), ComfyDiscreteFlow(1.0)),
    "sd3_shift3": (samplers.RectifiedFlow(shift=3.0), ComfyDiscreteFlow(3.0)),
    "sd3_shift3_m1": (samplers.RectifiedFlow(shift=3.0, multiplier=1.0), ComfyDiscreteFlow(3.0, multiplier=1.0)),
    "flux_mu1.15": (samplers.RectifiedFlow.dynamic(1.15, num_train_timesteps=10000), ComfyFlux(1.15)),
}
FLOW_STEPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 16, 20, 25, 28, 30, 33, 38, 40, 47, 50]


@pytest.mark.parametrize("model", FLOW_MODELS)
@pytest.mark.parametrize("scheduler", list(COMFY_HANDLERS))
def test_comfyui_schedulers_on_flow_models_are_comfyuis(model, scheduler):
    """``comfyui:<scheduler>`` on SD3 (shift 1 and 3; multiplier 1000 and 1) and Flux (ModelSamplingFlux, μ = 1.15)
    gives ComfyUI's σ list, through the name table and the pipeline's model-aware resolution."""
    native, comfy = FLOW_MODELS[model]
    for n in FLOW_STEPS:
        if scheduler == "kl_optimal" and n == 1:
            continue  # ComfyUI's kl_optimal divides by n − 1: NaN at one step (here: σ_max)
        name, options = names.resolve_schedule(f"comfyui:{scheduler}", native=native)
        close(samplers.get_sigmas(name, n, native=native, **options),
              comfy_flow_as_ve(comfy_calculate_sigmas(comfy, scheduler, n)))


@pytest.mark.parametrize("scheduler", ["simple", "normal", "sgm_uniform", "beta"])
def test_bare_comfyui_table_names_on_a_flow_model_are_comfyuis(scheduler):
    """The bare names resolve to the registry's schedules, which are ComfyUI's rules on the flow table too."""
    native, comfy = FLOW_MODELS["sd3_shift3"]
    for n in (1, 4, 10, 38):
        name, options = names.resolve_schedule(scheduler, native=native)
        close(samplers.get_sigmas(name, n, native=native, **options),
              comfy_flow_as_ve(comfy_calculate_sigmas(comfy, scheduler, n)))


def test_comfyui_normal_on_a_flow_model_shifts_its_last_timestep_again():
    """ComfyUI's timestep(σ_min) is the shifted t_min·1000, and sigma() shifts it again: the last level is
    shift(shift(1/1000)), above σ_min; at a shift that puts that within 1e-5 of 0, ComfyUI takes n + 1 levels and no 0."""
    native = samplers.RectifiedFlow(shift=3.0)
    last_t = float(samplers.get_sigmas("normal", 10, native=native)[-2] / (1 + samplers.get_sigmas("normal", 10, native=native)[-2]))
    assert last_t == pytest.approx(time_snr_shift(3.0, time_snr_shift(3.0, 1e-3)), rel=1e-12)
    assert last_t > float(native.sigma_min) / (1 + float(native.sigma_min))
    tiny, comfy = samplers.RectifiedFlow(shift=0.05), ComfyDiscreteFlow(0.05)
    for n in (1, 5, 20):
        ours_ = samplers.get_sigmas("normal", n, native=tiny)
        assert len(ours_) == n + 1 and float(ours_[-1]) > 0
        close(ours_, comfy_flow_as_ve(c_normal(comfy, n)))


def test_flow_table_is_comfyuis_and_the_time_map_is_not_log_sigma_interpolation():
    native, comfy = FLOW_MODELS["sd3_shift3"]
    close(native.sigmas, comfy_flow_as_ve(comfy.sigmas), rtol=1e-12)
    flux, comfy_flux = FLOW_MODELS["flux_mu1.15"]
    assert len(flux.sigmas) == 10000 and flux.sigma_min == pytest.approx(comfy_flow_as_ve([comfy_flux.sigma_min])[0])
    # Between the entries ComfyUI's sigma(timestep) is the analytic shift; log-σ interpolation of the VE table is not it
    # (the registry's own VP rule is off by 6% between the first two entries, ~2e-6 at the median), so normal /
    # sgm_uniform use the flow's map.
    from samplers.schedules.base import from_timesteps

    index = torch.tensor([0.5, 10.25, 500.5, 997.5], dtype=torch.float64)
    exact = native.table_axis.sigma_of(index)
    interpolated = from_timesteps(index, native.sigmas)[:-1]
    assert float(((interpolated - exact) / exact).abs().max()) > 1e-5


@pytest.mark.parametrize("name", ["karras", "exponential", "kl_optimal"])
def test_registry_sigma_schedules_on_a_flow_model_are_unchanged(name):
    """The ComfyUI names take in_flow_time on a flow model; the registry's names do not: karras / exponential stay
    refused (σ_max = inf), kl_optimal stays uniform in the VE angle from σ = inf."""
    native = samplers.RectifiedFlow(shift=3.0)
    assert names.resolve_schedule(name, native=native) == (name, {})
    if name == "kl_optimal":
        s = samplers.get_sigmas(name, 5, native=native)
        angles = s[:-1].atan()
        torch.testing.assert_close(angles[1:] - angles[:-1], torch.full((4,), float(angles[2] - angles[1]),
                                                                        dtype=torch.float64))
    else:
        with pytest.raises(samplers.InvalidInput, match="finite sigma_max"):
            samplers.get_sigmas(name, 5, native=native)


@pytest.mark.parametrize("name", ["linspace", "leading", "trailing", "a1111:Uniform"])
def test_diffusers_spacings_stay_refused_on_a_flow_model(name):
    native = samplers.RectifiedFlow(shift=3.0)
    schedule, options = names.resolve_schedule(name, native=native)
    with pytest.raises(samplers.InvalidInput, match="a flow model has no rule for; use 'flow'"):
        samplers.get_sigmas(schedule, 5, native=native, **options)


def test_in_flow_time_and_table_inputs_are_checked():
    native = samplers.RectifiedFlow(shift=3.0)
    with pytest.raises(samplers.InvalidType, match="in_flow_time must be True or False"):
        samplers.get_sigmas("karras", 5, native=native, in_flow_time="yes")
    with pytest.raises(samplers.InvalidType, match="table_axis must be"):
        samplers.get_sigmas("normal", 5, native=native, table_axis=(len, len, len))
    with pytest.raises(samplers.InvalidInput, match="num_train_timesteps"):
        samplers.RectifiedFlow(num_train_timesteps=1)
    with pytest.raises(samplers.InvalidType, match="native must be"):
        names.resolve_schedule("comfyui:karras", native="flux")


def test_pipeline_on_a_flow_model_runs_comfyuis_schedulers(tmp_path):
    """ComfyUI's default Flux / SD3 workflow, euler + simple, and karras through the pipeline: the model is known
    there, so the ComfyUI names resolve for it."""
    from models.pipeline import Pipeline
    from models.unet import DiffusionModel, vae_record
    from test_pipeline import tiny_vae
    from test_text_unet import tiny_config

    vae = tiny_vae(tmp_path)
    pipe = Pipeline(DiffusionModel(tiny_config(prediction="flow", vae=vae_record(vae))), vae)
    native = pipe.native
    comfy = ComfyDiscreteFlow(native.shift, multiplier=native.multiplier)
    sampler, sigmas, _ = pipe.plan("comfyui:euler", "comfyui:simple", 20, {})
    assert sampler == "euler"
    close(sigmas, comfy_flow_as_ve(c_simple(comfy, 20)))
    close(pipe.sigmas("comfyui:karras", 12), comfy_flow_as_ve(comfy_calculate_sigmas(comfy, "karras", 12)))
    with pytest.raises(samplers.InvalidInput, match="finite sigma_max"):
        pipe.sigmas("karras", 12)  # the registry's karras: still refused at σ_max = inf


def test_the_registry_linear_quadratic_keeps_its_flow_time_levels_on_a_vp_model():
    """ComfyUI's rule (a fraction of σ_max in σ) is the ComfyUI name's option; the registry schedule, which published
    tables use, keeps its levels in flow time scaled by t(σ_max)."""
    for n in (2, 5, 10):
        registry = samplers.get_sigmas("linear_quadratic", n, native=SD15)
        t_max = SMAX / (1 + SMAX)
        levels = torch.tensor(comfy_linear_quadratic(n, 1.0), dtype=torch.float64)  # 1 − ℓ
        t = levels * t_max
        close(registry, t / (1 - t), rtol=1e-12)
        assert not torch.allclose(registry[1:-1], ours("comfyui:linear_quadratic", n)[1:-1])


@pytest.mark.parametrize("typed, want", [("Beta", ("beta_sigmas", {})), ("KL Optimal", ("kl_optimal", {"end": "sigma_min"})),
                                         ("beta", ("beta_timesteps", {})), ("kl_optimal", ("kl_optimal", {})),
                                         ("Align Your Steps", ("ays_sd15", {"append_zero": True})),
                                         ("kl optimal", ("kl_optimal", {}))])
def test_a_name_spelt_as_a1111_spells_it_is_a1111s(typed, want):
    """A1111's menu spelling reaches A1111's rule before the registry's normalised namesake (beta, kl_optimal)."""
    assert names.resolve_schedule(typed) == want

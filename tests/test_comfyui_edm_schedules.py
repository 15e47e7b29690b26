"""ComfyUI's ``scheduler`` names on a continuous EDM model (:class:`samplers.VE`), against ComfyUI's own functions.

ComfyUI runs every scheduler on the model_sampling of its ``ModelSamplingContinuousEDM`` node (Playground v2.5:
``edm_playground_v2.5``, σ 0.002-80, σ_data 0.5; CosXL / EDM-v SDXL: ``v_prediction``, the node's default σ
0.002-120; EDM models: ``edm``): a 1000-entry float32 table log-uniform from σ_min to σ_max, time ¼·ln σ. The
references below are transcribed from ComfyUI's source (read, not imported: ComfyUI is not installed) and computed
as ComfyUI computes them, in torch's float32:

- comfy/model_sampling.py ``ModelSamplingContinuousEDM`` (``set_parameters``, ``sigma_min`` / ``sigma_max``,
  ``timestep`` / ``sigma``);
- comfy/samplers.py ``simple_scheduler``, ``ddim_scheduler``, ``normal_scheduler``, ``beta_scheduler``,
  ``linear_quadratic_schedule``, ``kl_optimal_scheduler`` and ``calculate_sigmas`` (SCHEDULER_HANDLERS: the
  ``use_ms`` ones take the model_sampling, the others ``sigma_min=float(model_sampling.sigma_min)``,
  ``sigma_max=float(model_sampling.sigma_max)``); k-diffusion's ``get_sigmas_karras`` / ``get_sigmas_exponential``
  (comfy/k_diffusion/sampling.py).
"""
from __future__ import annotations

import math

import numpy
import pytest
import scipy.stats
import torch

import samplers
from samplers.core import names
from test_tool_schedules import c_ddim, c_simple  # noqa: E402 (ComfyUI's, transcribed once)


class ComfyContinuousEDM:  # comfy/model_sampling.py ModelSamplingContinuousEDM (buffers as plain tensors)
    def __init__(self, sigma_min, sigma_max, sigma_data=1.0):
        self.set_parameters(sigma_min, sigma_max, sigma_data)

    def set_parameters(self, sigma_min, sigma_max, sigma_data):
        self.sigma_data = sigma_data
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.sigmas = sigmas  # register_buffer('sigmas', sigmas)
        self.log_sigmas = sigmas.log()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return 0.25 * sigma.log()

    def sigma(self, timestep):
        return (timestep / 0.25).exp()


def simple_scheduler(model_sampling, steps):  # comfy/samplers.py simple_scheduler, on the EDM table's float32 σ
    return torch.FloatTensor([float(v) for v in c_simple(model_sampling, steps)])


def ddim_scheduler(model_sampling, steps):  # comfy/samplers.py ddim_scheduler
    return torch.FloatTensor([float(v) for v in c_ddim(model_sampling, steps)])


def normal_scheduler(model_sampling, steps, sgm=False, floor=False):
    s = model_sampling
    start = s.timestep(s.sigma_max)
    end = s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = []
    for x in range(len(timesteps)):
        ts = timesteps[x]
        sigs.append(float(s.sigma(ts)))
    if append_zero:
        sigs += [0.0]
    return torch.FloatTensor(sigs)


def beta_scheduler(model_sampling, steps, alpha=0.6, beta=0.6):
    total_timesteps = (len(model_sampling.sigmas) - 1)
    ts = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    ts = numpy.rint(scipy.stats.beta.ppf(ts, alpha, beta) * total_timesteps)
    sigs = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs += [float(model_sampling.sigmas[int(t)])]
        last_t = t
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def linear_quadratic_schedule(model_sampling, steps, threshold_noise=0.025, linear_steps=None):
    if steps == 1:
        sigma_schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear_sigma_schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        threshold_noise_step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = threshold_noise_step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * threshold_noise_step_diff / (quadratic_steps ** 2)
        const = quadratic_coef * (linear_steps ** 2)
        quadratic_sigma_schedule = [quadratic_coef * (i ** 2) + linear_coef * i + const
                                    for i in range(linear_steps, steps)]
        sigma_schedule = linear_sigma_schedule + quadratic_sigma_schedule + [1.0]
        sigma_schedule = [1.0 - x for x in sigma_schedule]
    return torch.FloatTensor(sigma_schedule) * model_sampling.sigma_max.cpu()


def kl_optimal_scheduler(n, sigma_min, sigma_max):
    adj_idxs = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = adj_idxs.new_zeros(n + 1)
    sigmas[:-1] = (adj_idxs * math.atan(sigma_min) + (1 - adj_idxs) * math.atan(sigma_max)).tan_()
    return sigmas


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def get_sigmas_exponential(n, sigma_min, sigma_max, device='cpu'):
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp()
    return torch.cat([sigmas, sigmas.new_zeros([1])])


SCHEDULER_HANDLERS = {  # name: (handler, use_ms)
    "simple": (simple_scheduler, True),
    "sgm_uniform": (lambda ms, n: normal_scheduler(ms, n, sgm=True), True),
    "karras": (get_sigmas_karras, False),
    "exponential": (get_sigmas_exponential, False),
    "ddim_uniform": (ddim_scheduler, True),
    "beta": (beta_scheduler, True),
    "normal": (normal_scheduler, True),
    "linear_quadratic": (linear_quadratic_schedule, True),
    "kl_optimal": (kl_optimal_scheduler, False),
}


def calculate_sigmas(model_sampling, scheduler_name, steps):
    handler, use_ms = SCHEDULER_HANDLERS[scheduler_name]
    if use_ms:
        return handler(model_sampling, steps)
    return handler(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


# ours, ComfyUI's model_sampling after ModelSamplingContinuousEDM.set_parameters(sigma_min, sigma_max, sigma_data)
MODELS = {
    "edm_0.002-80": (samplers.VE(0.002, 80.0), ComfyContinuousEDM(0.002, 80.0, 0.5)),
    "cosxl_0.002-120": (samplers.VE(0.002, 120.0), ComfyContinuousEDM(0.002, 120.0, 1.0)),  # the node's default
    "playground_v2.5": (samplers.VE(sigma_min=0.002, sigma_max=80.0, time_input="edm"),
                        ComfyContinuousEDM(0.002, 80.0, 0.5)),
}
STEPS = [1, 2, 3, 10, 25, 1000]


def ours(scheduler, n, native):
    name, options = names.resolve_schedule(f"comfyui:{scheduler}", native=native)  # as the pipeline resolves it
    return samplers.get_sigmas(name, n, native=native, **options)


def close(a, b, rtol=2e-6):  # ComfyUI computes in float32 (its table is a float32 buffer)
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("scheduler", list(SCHEDULER_HANDLERS))
def test_comfyui_schedulers_on_an_edm_model_are_comfyuis(model, scheduler):
    native, comfy = MODELS[model]
    for n in STEPS:
        if scheduler == "kl_optimal" and n == 1:
            continue  # ComfyUI's kl_optimal divides by n − 1: NaN at one step
        theirs = calculate_sigmas(comfy, scheduler, n)
        if scheduler == "beta" and len(theirs) < n + 1:  # ComfyUI dropped repeated timesteps: refused here
            with pytest.raises(samplers.InvalidInput, match="repeated timesteps"):
                ours(scheduler, n, native)
            continue
        # ComfyUI's kl_optimal rounds the angle near π/2 to float32 (an ulp of it moves tan by ~σ·6e-8 relative)
        close(ours(scheduler, n, native), theirs, rtol=2e-5 if scheduler == "kl_optimal" else 2e-6)


@pytest.mark.parametrize("scheduler", ["simple", "normal", "sgm_uniform", "beta"])
def test_bare_table_names_on_an_edm_model_are_comfyuis(scheduler):
    """The registry's names of ComfyUI's table rules run them on the EDM table too, as on a flow model's."""
    native, comfy = MODELS["edm_0.002-80"]
    for n in (1, 4, 10, 38):
        name, options = names.resolve_schedule(scheduler, native=native)
        close(samplers.get_sigmas(name, n, native=native, **options), calculate_sigmas(comfy, scheduler, n))


def test_the_edm_table_is_comfyuis():
    for native, comfy in MODELS.values():
        close(native.sigmas, comfy.sigmas)
        assert native.sigmas.dtype == torch.float64 and len(native.sigmas) == 1000
        assert (float(native.sigmas[0]), float(native.sigmas[-1])) == (native.sigma_min, native.sigma_max)


def test_normal_on_an_edm_model_with_sigma_min_near_zero_ends_as_comfyuis():
    """σ_min within 1e-5 of 0: ComfyUI's normal takes n + 1 levels and appends no 0; so does this."""
    native, comfy = samplers.VE(1e-6, 80.0), ComfyContinuousEDM(1e-6, 80.0)
    for n in (1, 5, 20):
        got = ours("normal", n, native)
        assert len(got) == n + 1 and float(got[-1]) > 0
        close(got, calculate_sigmas(comfy, "normal", n))
    close(ours("sgm_uniform", 7, native), calculate_sigmas(comfy, "sgm_uniform", 7))


def test_comfyui_ddim_uniform_where_the_edm_tables_second_sigma_is_near_zero_is_refused():
    """ComfyUI's ddim_scheduler then takes a step more and no final 0, which this library's ddim_uniform does not."""
    with pytest.raises(samplers.InvalidInput, match="ddim_uniform.*1e-05"):
        ours("ddim_uniform", 10, samplers.VE(1e-6, 80.0))


@pytest.mark.parametrize("name", ["linspace", "leading", "trailing", "lcm_uniform", "forge_turbo", "a1111:Uniform",
                                  "a1111:Turbo"])
def test_diffusers_and_a1111_spacings_stay_refused_on_an_edm_model(name):
    native = samplers.VE(0.002, 80.0)
    try:
        schedule, options = names.resolve_schedule(name, native=native)
    except samplers.UnknownNameError:
        pytest.skip(f"{name!r} is not a schedule name here")
    with pytest.raises(samplers.InvalidInput, match="continuous EDM / VE model has no training timesteps"):
        samplers.get_sigmas(schedule, 5, native=native, **options)


def test_table_names_on_a_sigma_time_ve_model_are_refused():
    """ComfyUI's only continuous VE model sampling is ModelSamplingContinuousEDM (time ¼·ln σ): a VE model fed σ
    itself has no ComfyUI table to reproduce."""
    native = samplers.VE(0.01, 50.0, time_input="sigma")
    with pytest.raises(samplers.InvalidInput, match="ModelSamplingContinuousEDM"):
        ours("normal", 10, native)
    # the σ formulas take any range, as before
    close(ours("karras", 10, native), get_sigmas_karras(10, 0.01, 50.0), rtol=2e-6)


def test_registry_sigma_schedules_on_an_edm_model_are_unchanged():
    native = samplers.VE(0.002, 80.0)
    for name in ("karras", "exponential", "kl_optimal"):
        assert names.resolve_schedule(name, native=native) == (name, {})
    ramp = torch.linspace(0, 1, 12, dtype=torch.float64)
    want = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(samplers.get_sigmas("karras", 12, native=native)[:-1], want, rtol=1e-15, atol=0)


def test_normal_on_an_edm_model_takes_a_finite_range_on_its_axis():
    """The registry's normal takes a range: on the EDM axis (¼·ln σ) one past the table extends it, as ComfyUI's maps
    do; σ = inf has no timestep there and is refused, not turned into NaN."""
    native = samplers.VE(0.002, 80.0)
    got = samplers.get_sigmas("normal", 5, native=native, sigma_min=0.01, sigma_max=100.0)
    torch.testing.assert_close(got[:-1], torch.logspace(2, -2, 5, dtype=torch.float64), rtol=1e-13, atol=0)
    with pytest.raises(samplers.InvalidInput, match="σ = inf has no timestep"):
        samplers.get_sigmas("normal", 5, native=native, sigma_max=math.inf)

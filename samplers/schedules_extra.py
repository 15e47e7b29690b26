"""The schedules users know from ComfyUI, A1111 and diffusers, beside the core's karras / exponential / vp / flow.

Same contract as :mod:`samplers.schedules`: ``(n, sigma_min, sigma_max, **kw) -> float64 Tensor[n+1]``,
strictly decreasing, ending in 0, registered by name. Four of them are defined over a discrete model's
training table (``training_sigmas=``, passed by ``samplers.get_sigmas(..., native=VPDiscrete)``): ``simple``,
``normal``, ``sgm_uniform`` and ``ddim_uniform``. Presets (Align Your Steps) are data, interpolated in log σ.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from .native import flow_t, flux_mu
from .schedules import _check, _finite_max, _from_timesteps, _num_train, append_zero, flow, register

# Align Your Steps (Sabour et al. 2024, arXiv:2404.14507): the published 10-step noise levels. Like ComfyUI and
# diffusers, the last level is replaced by 0 (the final denoise), so 10 steps give exactly diffusers' lists.
AYS_PRESETS: dict[str, list[float]] = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def _strict(sigmas: torch.Tensor, name: str) -> torch.Tensor:
    """Check the result is strictly decreasing (with its trailing 0); say which settings collapse steps."""
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"schedule {name!r} repeats a sigma with these settings ({sigmas.tolist()}); use fewer "
                         "steps or a wider sigma range")
    return sigmas


def _timestep_of(sigma: float, training_sigmas) -> float:
    """The fractional training timestep of ``sigma`` (linear in log σ between table entries)."""
    log_table = torch.as_tensor(training_sigmas, dtype=torch.float64).log().numpy()
    return float(np.interp(math.log(sigma), log_table, np.arange(len(log_table), dtype=np.float64)))


def _table_range(training_sigmas, sigma_min, sigma_max) -> tuple[float, float]:
    """Timesteps of the range ends (the whole table when no range is given)."""
    total = len(training_sigmas)
    hi = total - 1.0 if sigma_max is None or math.isinf(sigma_max) else _timestep_of(sigma_max, training_sigmas)
    lo = 0.0 if sigma_min is None else _timestep_of(sigma_min, training_sigmas)
    return hi, lo


@register("simple", needs_table=True)
def simple(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """ComfyUI's ``simple``: every (N/n)-th training sigma from the top: σ = table[N − 1 − ⌊k·N/n⌋]."""
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    t = torch.tensor([total - 1 - int(k * total / n) for k in range(n)], dtype=torch.float64)
    return _strict(_from_timesteps(t, training_sigmas), "simple")


@register("normal", needs_table=True)
def normal(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """ComfyUI's ``normal``: n timesteps evenly from t(σ_max) to t(σ_min) inclusive (fractional, log-σ interpolated)."""
    _check(n, None, None, need_range=False)
    _num_train(n, training_sigmas)
    hi, lo = _table_range(training_sigmas, sigma_min, sigma_max)
    return _strict(_from_timesteps(torch.linspace(hi, lo, n, dtype=torch.float64), training_sigmas), "normal")


@register("sgm_uniform", needs_table=True)
def sgm_uniform(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """SGM / ComfyUI ``sgm_uniform``: n + 1 timesteps evenly from t(σ_max) to t(σ_min), the last replaced by 0."""
    _check(n, None, None, need_range=False)
    _num_train(n, training_sigmas)
    hi, lo = _table_range(training_sigmas, sigma_min, sigma_max)
    t = torch.linspace(hi, lo, n + 1, dtype=torch.float64)[:-1]
    return _strict(_from_timesteps(t, training_sigmas), "sgm_uniform")


@register("ddim_uniform", needs_table=True)
def ddim_uniform(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """ComfyUI's ``ddim_uniform``: timesteps 1 + k·⌊N/n⌋, k = 0…n−1, descending.

    (ComfyUI keeps stepping while below N, which gives more than n steps when n does not divide N; here the
    step count is always n.)
    """
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    stride = max(total // n, 1)
    t = torch.tensor([min(1 + k * stride, total - 1) for k in range(n - 1, -1, -1)], dtype=torch.float64)
    return _strict(_from_timesteps(t, training_sigmas), "ddim_uniform")


@register("beta")
def beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta sampling (Lee et al. 2024, arXiv:2407.12173), as diffusers' ``use_beta_sigmas``:
    σ_i = σ_min + (σ_max − σ_min)·F⁻¹_Beta(α,β)(1 − i/(n−1)): dense at both ends for α, β < 1."""
    _check(n, sigma_min, sigma_max)
    sigma_max = _finite_max("beta", sigma_max)
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"beta schedule needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    q = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return _strict(append_zero(torch.as_tensor(sigma_min + q * (sigma_max - sigma_min), dtype=torch.float64)), "beta")


@register("beta_timesteps", aliases=("comfy_beta", "beta_comfyui"), needs_table=True)
def beta_timesteps(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, alpha: float = 0.6,
                   beta: float = 0.6) -> torch.Tensor:
    """Beta sampling over the training timesteps, as ComfyUI's ``beta`` scheduler and the paper (Lee et al. 2024,
    arXiv:2407.12173): t_k = rint(F⁻¹_Beta(α,β)(1 − k/n)·(N − 1)), k = 0…n−1, σ = table[t_k].

    (``beta`` is diffusers' ``use_beta_sigmas``, the same quantiles laid over [σ_min, σ_max] in σ itself.)
    ComfyUI drops repeated timesteps and runs fewer steps; here a repeat is an error (only for n in the
    hundreds with the default α, β).
    """
    _check(n, None, None, need_range=False)
    total = _num_train(n, training_sigmas)
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"beta schedule needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    t = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), alpha, beta) * (total - 1))
    return _strict(_from_timesteps(torch.as_tensor(t, dtype=torch.float64), training_sigmas), "beta_timesteps")


@register("kl_optimal", aliases=("kl-optimal",))
def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The KL-optimal schedule (Sabour et al. 2024, arXiv:2404.14507, §3.4; ComfyUI):
    σ_i = tan((1 − i/(n−1))·atan σ_max + i/(n−1)·atan σ_min) — uniform in the VP angle. σ_max may be inf."""
    _check(n, sigma_min, sigma_max)
    w = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    angle = (1 - w) * math.atan(sigma_max) + w * math.atan(sigma_min)
    sigmas = torch.where(angle >= math.pi / 2, torch.full_like(angle, math.inf), angle.tan())
    return _strict(append_zero(sigmas), "kl_optimal")


@register("laplace")
def laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Laplace schedule (Hang et al. 2024, "Improved noise schedule for diffusion training"; ComfyUI):
    log σ = μ − β·sgn(½ − x)·log(1 − 2|½ − x| + 1e-5) for x evenly in [0, 1], clamped to [σ_min, σ_max]."""
    _check(n, sigma_min, sigma_max)
    sigma_max = _finite_max("laplace", sigma_max)
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * (0.5 - x).abs() + 1e-5)
    return _strict(append_zero(lmb.exp().clamp(sigma_min, sigma_max)), "laplace")


@register("linear_quadratic", aliases=("linear-quadratic",))
def linear_quadratic(n: int, sigma_min=None, sigma_max: float = math.inf, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """Linear-then-quadratic in flow time (Mochi; ComfyUI ``linear_quadratic``): the first ``linear_steps``
    (default n/2) steps lower the noise level t linearly to ``threshold_noise``, the rest quadratically to 0.

    The levels are flow times t ∈ [0, 1] scaled by t(σ_max) (1 when σ_max = inf, a flow model from pure noise)
    and mapped to σ = t/(1 − t).
    """
    _check(n, None, None, need_range=False)
    t_max = 1.0 if sigma_max is None or math.isinf(sigma_max) else float(flow_t(torch.tensor(sigma_max, dtype=torch.float64)))
    if n == 1:
        levels = [0.0, 1.0]
    else:
        linear_steps = n // 2 if linear_steps is None else linear_steps
        if not 0 < linear_steps < n:
            raise ValueError(f"linear_steps must be in (0, {n}), got {linear_steps}")
        quadratic_steps = n - linear_steps
        step_diff = linear_steps - threshold_noise * n
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / quadratic_steps**2
        const = quadratic_coef * linear_steps**2
        levels = ([i * threshold_noise / linear_steps for i in range(linear_steps)]
                  + [quadratic_coef * i**2 + linear_coef * i + const for i in range(linear_steps, n)] + [1.0])
    t = torch.tensor([(1.0 - v) * t_max for v in levels], dtype=torch.float64)
    sigmas = torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))
    return _strict(sigmas, "linear_quadratic")


def loglinear_interp(levels: list[float], count: int) -> torch.Tensor:
    """Resample a decreasing list of noise levels to ``count`` values, linearly in log σ (the AYS paper's rule)."""
    xs = np.linspace(0, 1, len(levels))
    ys = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    out = np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1].copy()
    return torch.as_tensor(out, dtype=torch.float64)


def _ays(preset: str):
    def schedule(n: int, sigma_min=None, sigma_max=None) -> torch.Tensor:
        _check(n, None, None, need_range=False)
        levels = AYS_PRESETS[preset]
        sigmas = torch.tensor(levels, dtype=torch.float64) if n + 1 == len(levels) else loglinear_interp(levels, n + 1)
        sigmas[-1] = 0.0
        return _strict(sigmas, f"ays_{preset}")

    schedule.__name__ = f"ays_{preset}"
    schedule.__doc__ = (f"Align Your Steps preset for {preset.upper()} (Sabour et al. 2024): the published 10-step "
                        "levels, log-linearly interpolated to n steps; the model's own σ range is not used.")
    return schedule


for _name, _aliases in (("sd15", ("AYS SD1.5", "ays_sd1.5", "AYS")), ("sdxl", ("AYS SDXL",)), ("svd", ("AYS SVD",))):
    register(f"ays_{_name}", aliases=_aliases)(_ays(_name))


@register("flow_dynamic", aliases=("flux_dynamic",))
def flow_dynamic(n: int, sigma_min: float, sigma_max: float = math.inf, *, image_seq_len: int,
                 base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                 max_shift: float = 1.15) -> torch.Tensor:
    """``flow`` with Flux's resolution-dependent shift: μ = :func:`samplers.native.flux_mu` of the latent's token
    count ``image_seq_len`` (a 1024² Flux image: (1024/16)² = 4096 tokens), shift = e^μ (diffusers'
    ``use_dynamic_shifting``)."""
    if not (isinstance(image_seq_len, int) and image_seq_len > 0):
        raise ValueError(f"image_seq_len must be a positive integer (latent tokens), got {image_seq_len!r}")
    mu = flux_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    return flow(n, sigma_min, sigma_max, mu=mu)

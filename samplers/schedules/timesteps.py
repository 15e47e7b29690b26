"""Timestep spacings over a discrete model's training table (diffusers' ``linspace`` / ``leading`` /
``trailing``; ComfyUI's ``simple``, ``normal``, ``sgm_uniform``, ``ddim_uniform`` and ``beta``). Each
picks (fractional) training timesteps and reads their sigmas from the table, log-σ interpolated between
entries; ``samplers.get_sigmas(..., native=VPDiscrete)`` passes the table as ``training_sigmas``.

ComfyUI runs its five on a flow model's table too (SD3, Flux: comfy/model_sampling.py ModelSamplingDiscreteFlow /
ModelSamplingFlux, entry i the shifted flow time t = (i + 1)/N): ``get_sigmas(..., native=RectifiedFlow(...))`` passes
that table, and to ``normal`` / ``sgm_uniform`` the flow's own timestep ↔ σ map (``table_axis``: ComfyUI's
``model_sampling.timestep`` / ``sigma``, not log-σ interpolation of the table). On a continuous EDM model
(comfy/model_sampling.py ModelSamplingContinuousEDM: Playground v2.5, CosXL) it runs them on the table it builds
there, 1000 σ log-uniform from σ_min to σ_max, and its time ¼·ln σ: ``get_sigmas(..., native=VE(...))`` passes
:attr:`~samplers.core.native.VE.sigmas` and its ``table_axis``; diffusers' spacings stay refused there."""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import append_zero, check_steps, from_timesteps, num_train, register, strictly_decreasing, table_range
from ..core.errors import InvalidInput, InvalidType
from ..core.native import TableAxis
from ..core.validate import boolean, integer, real


@register("linspace", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def linspace(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """diffusers' ``timestep_spacing="linspace"`` as EulerDiscreteScheduler spaces it: n timesteps evenly from the
    last to the first, fractional (``np.linspace(0, N − 1, n)`` descending); EulerAncestralDiscrete and LMSDiscrete
    take the same timesteps, Heun and KDPM2 interleave their second stages into them. Those read σ linearly in σ
    between table entries, this in log σ (k-diffusion), so σ at a fractional timestep differ slightly; at n = 1 they
    take timestep 0, this N − 1. Other classes space differently: DDIM, DDPM and PNDM round the n timesteps to
    integers; DPMSolverMultistep, UniPC, DEIS and SASolver take n + 1 rounded points
    ``np.linspace(0, N − 1, n + 1).round()``, descending, the last (0) dropped."""
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    return from_timesteps(torch.linspace(total - 1, 0, n, dtype=torch.float64), training_sigmas)

@register("lcm_uniform", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def lcm_uniform(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, original_steps: int = 50) -> torch.Tensor:
    """A1111's LCM "Automatic" schedule (modules/sd_samplers_lcm.py ``LCMCompVisDenoiser.get_sigmas``): ``linspace``
    on LCM's table of its ``original_steps`` timesteps N − 1, N − 1 − N//original_steps, … (999, 979, …, 19 on a
    1000-step table), so its last σ > 0 is timestep 19's, not timestep 0's. On a zero-terminal-SNR table (its top
    timestep σ = inf) more than ``original_steps`` steps are refused: those between LCM's top two timesteps would
    all be inf."""
    check_steps(n, None, None, need_range=False)
    if training_sigmas is None:
        from_timesteps(torch.zeros(1), None)  # names the missing table
    total = len(training_sigmas)
    original_steps = integer("original_steps", original_steps, lo=2, hi=total)
    skip = total // original_steps
    table = torch.as_tensor(training_sigmas, dtype=torch.float64)
    sub = table[[total - 1 - k * skip for k in range(original_steps - 1, -1, -1)]]
    # on a zero-terminal-SNR table LCM's top timestep is σ = inf, and log-σ interpolation toward it is inf too: with
    # more steps than LCM's timesteps, those between its top two repeat inf (the run would refuse it, unnamed)
    fix = (f"n={n} > original_steps={original_steps} on this table, whose top LCM timestep is σ = inf, puts steps "
           f"between LCM's top two timesteps, each read as inf; use n <= {original_steps} or a larger original_steps"
           if n > original_steps and math.isinf(float(sub[-1])) else "use fewer steps")
    return strictly_decreasing(from_timesteps(torch.linspace(original_steps - 1, 0, n, dtype=torch.float64), sub),
                               "lcm_uniform", fix=fix)


@register("leading", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def leading(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, steps_offset: int = 0) -> torch.Tensor:
    """diffusers' ``"leading"`` spacing (SD 1.x default): i·(N // n) + steps_offset for i = n − 1 … 0, the timesteps of
    EulerDiscrete, EulerAncestralDiscrete, LMSDiscrete, DDIM and DDPM (Heun, KDPM2 and PNDM interleave or repeat
    steps on the same grid). DPMSolverMultistep, UniPC, DEIS and SASolver space differently: i·(N // (n + 1)) +
    steps_offset for i = n … 1 (n + 1 points, the 0 dropped)."""
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    ratio = total // n
    top = (n - 1) * ratio
    steps_offset = integer("steps_offset", steps_offset, lo=0)
    if top + steps_offset > total - 1:
        raise InvalidInput(f"leading spacing with {n} steps and steps_offset={steps_offset} would start at timestep "
                           f"{top + steps_offset}, past the model's last training timestep {total - 1}; use "
                           f"steps_offset <= {total - 1 - top} (Stable Diffusion's configs use 1) or fewer steps")
    t = torch.arange(n - 1, -1, -1, dtype=torch.float64) * ratio + steps_offset
    return from_timesteps(t, training_sigmas)

@register("trailing", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def trailing(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """diffusers' ``"trailing"`` spacing (Lin et al. 2023): starts at the last training timestep.

    The timesteps are diffusers' own arithmetic, ``np.round(np.arange(N, 0, -N / n)) - 1`` in numpy's float64:
    numpy's ``arange`` accumulates differently from torch's, and where a value lands on a half (N = 1000, n = 48:
    1000 − 3·1000/48 = 937.4999… in numpy, exactly 937.5 in torch) the rounding picks a different timestep.

    At the step counts :func:`trailing_extra_steps` lists (62 of n ≤ 1000 on a 1000-step table: 61, 103, 121, ...)
    numpy's ``arange`` holds n + 1 values, the last timestep −1, which this reads as timestep 0 (diffusers'
    EulerDiscrete ``np.interp`` clamps it the same way): the result has n + 2 σ, n + 1 steps, the last two to
    table[0]'s σ and then to 0. Kept, as diffusers runs it (tests/test_schedule_seams.py)."""
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    t = np.round(np.arange(total, 0, -total / n)).astype(np.int64) - 1
    return from_timesteps(torch.as_tensor(t, dtype=torch.float64), training_sigmas)


def trailing_extra_steps(total: int = 1000) -> list[int]:
    """The step counts n ≤ ``total`` at which :func:`trailing` on a ``total``-step table takes n + 1 steps: numpy's
    ``np.arange(total, 0, -total / n)`` (diffusers' arithmetic) holds n + 1 values, the last at timestep −1."""
    return [n for n in range(1, total + 1) if len(np.arange(total, 0, -total / n)) > n]

@register("forge_turbo", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def forge_turbo(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """Forge's and reForge's "Turbo" Schedule type (modules/sd_schedulers.py ``turbo_scheduler``): timesteps
    round(k·1000/n − 1) for k = n … 1, clipped to [0, 999], each read from the model's σ table, then 0.

    The timesteps are the tool's float32 arithmetic: k·float32(1000/n) − 1 rounded half to even. So it is not
    ``trailing`` (diffusers' float64 ``np.round(np.arange(N, 0, -N/n)) − 1``) at some n — 16, 32, 48 (timesteps on a
    half: 61.5, 124.5, ... round to the even one), 61, 64, 80, 96, 103, ... (122 step counts up to 1000;
    tests/test_forge_schedules.py). The tool counts 1000 timesteps whatever the model and clamps its σ lookup to the
    table's last entry; on a table of fewer entries the clamped timesteps repeat a σ and the schedule is refused."""
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    k = np.arange(n, 0, -1).astype(np.float32)
    t = np.clip(np.round(k * np.float32(1000.0 / n) - np.float32(1.0)), 0, 999).astype(np.int64)
    t = np.minimum(t, total - 1)
    return strictly_decreasing(from_timesteps(torch.as_tensor(t, dtype=torch.float64), training_sigmas),
                               "forge_turbo")

@register("simple", needs_table=True, fixed_ends=("sigma_min", "sigma_max"), on_flow=True, on_edm=True)
def simple(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """ComfyUI's ``simple``: every (N/n)-th training sigma from the top: σ = table[N − 1 − ⌊k·(N/n)⌋].

    N/n is rounded to a float before the product, as ComfyUI and A1111 compute it (``ss = len(sigmas) / steps``,
    ``int(x * ss)``): where k·N/n is a whole number the product can fall just below it (N = 1000, n = 38, k = 19:
    499.99…, so the tools take timestep 500, not 499); so does this.
    """
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    stride = total / n
    t = torch.tensor([total - 1 - int(k * stride) for k in range(n)], dtype=torch.float64)
    return strictly_decreasing(from_timesteps(t, training_sigmas), "simple")

def _on_axis(name: str, n: int, sigma_min, sigma_max, training_sigmas, table_axis, sgm: bool) -> torch.Tensor:
    """ComfyUI's ``normal_scheduler`` (comfy/samplers.py, Comfy-Org/ComfyUI 311c0140) on a model's own time axis:
    timesteps evenly from timestep(σ_max) to timestep(σ_min) (``sgm``: n + 1 of them, the last dropped), each read
    as sigma(timestep), then 0. Without ``sgm``, where the model's own σ at the last timestep is within 1e-5 of 0,
    ComfyUI takes n + 1 timesteps and appends no 0 (the run ends at that σ); so does this."""
    if not isinstance(table_axis, TableAxis):
        raise InvalidType(f"table_axis must be a samplers.core.native.TableAxis (a model's table_axis), got "
                          f"{type(table_axis).__name__}")
    table = torch.as_tensor(training_sigmas, dtype=torch.float64)
    sigma_min = float(table[0]) if sigma_min is None else sigma_min
    sigma_max = float(table[-1]) if sigma_max is None else sigma_max
    check_steps(n, sigma_min, sigma_max)
    hi, lo = table_axis.index_of(sigma_max), table_axis.index_of(sigma_min)
    if sgm:
        return strictly_decreasing(append_zero(table_axis.sigma_of(torch.linspace(hi, lo, n + 1, dtype=torch.float64)[:-1])), name)
    end = float(table_axis.sigma_of(torch.tensor(lo, dtype=torch.float64)))
    if abs(table_axis.own_sigma(end)) <= 1e-5:  # math.isclose(s.sigma(end), 0, abs_tol=0.00001)
        return strictly_decreasing(table_axis.sigma_of(torch.linspace(hi, lo, n + 1, dtype=torch.float64)), name)
    return strictly_decreasing(append_zero(table_axis.sigma_of(torch.linspace(hi, lo, n, dtype=torch.float64))), name)

@register("normal", needs_table=True, on_flow=True, on_edm=True)
def normal(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, table_axis=None) -> torch.Tensor:
    """ComfyUI's ``normal``: n timesteps evenly from t(σ_max) to t(σ_min) inclusive (fractional, log-σ interpolated);
    a σ_min / σ_max outside the training table is refused (the table has no timestep there; on a flow model's axis
    ComfyUI's own timestep ↔ σ maps extend past it), as is, on a zero-terminal-SNR table (last entry inf), a finite
    end above its largest finite σ (log-σ interpolation toward inf would read it as that σ).

    ``table_axis`` (a flow or EDM model's, passed by get_sigmas): the timesteps and their σ on the model's own axis
    instead (on an EDM model log-uniform in σ); on a flow model that ends at σ(timestep(σ_min)), above σ_min when shift ≠ 1 (ComfyUI's rule; see
    :attr:`samplers.core.native.RectifiedFlow.table_axis`)."""
    check_steps(n, None, None, need_range=False)
    num_train(n, training_sigmas)
    if table_axis is not None:
        return _on_axis("normal", n, sigma_min, sigma_max, training_sigmas, table_axis, sgm=False)
    hi, lo = table_range(training_sigmas, sigma_min, sigma_max, name="normal")
    return strictly_decreasing(from_timesteps(torch.linspace(hi, lo, n, dtype=torch.float64), training_sigmas), "normal")

@register("sgm_uniform", needs_table=True, on_flow=True, on_edm=True)
def sgm_uniform(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, table_axis=None) -> torch.Tensor:
    """SGM / ComfyUI ``sgm_uniform``: n + 1 timesteps evenly from t(σ_max) to t(σ_min), the last replaced by 0; a
    σ_min / σ_max outside the training table is refused, as ``normal``.

    ``table_axis``: on the model's own axis, as ``normal``."""
    check_steps(n, None, None, need_range=False)
    num_train(n, training_sigmas)
    if table_axis is not None:
        return _on_axis("sgm_uniform", n, sigma_min, sigma_max, training_sigmas, table_axis, sgm=True)
    hi, lo = table_range(training_sigmas, sigma_min, sigma_max, name="sgm_uniform")
    t = torch.linspace(hi, lo, n + 1, dtype=torch.float64)[:-1]
    return strictly_decreasing(from_timesteps(t, training_sigmas), "sgm_uniform")

@register("ddim_uniform", needs_table=True, fixed_ends=("sigma_min", "sigma_max"), on_flow=True, on_edm=True)
def ddim_uniform(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None,
                 keep_stepping: bool = False) -> torch.Tensor:
    """ComfyUI's ``ddim_uniform``: timesteps 1 + k·⌊N/n⌋, k = 0…n−1, descending.

    ``keep_stepping=True`` is ComfyUI's and A1111's own rule (their ``ddim_uniform`` / "DDIM" names): the stride
    ⌊N/n⌋ runs on while below N, which gives more than n steps when n does not divide N (7 steps of a 1000-step
    model: 8). The default keeps the step count n.
    """
    check_steps(n, None, None, need_range=False)
    keep_stepping = boolean("keep_stepping", keep_stepping)
    total = num_train(n, training_sigmas)
    stride = max(total // n, 1)
    count = len(range(1, total, stride)) if keep_stepping else n
    t = torch.tensor([min(1 + k * stride, total - 1) for k in range(count - 1, -1, -1)], dtype=torch.float64)
    return strictly_decreasing(from_timesteps(t, training_sigmas), "ddim_uniform",
                               f"at most {total - 1} steps on this {total}-timestep table (its stride is at least 1), "
                               "or keep_stepping=True (ComfyUI's and A1111's rule, whose stride runs on)")

@register("a1111_timesteps", needs_table=True, fixed_ends=("sigma_min", "sigma_max"))
def a1111_timesteps(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None) -> torch.Tensor:
    """The timesteps A1111's timestep samplers step (its "DDIM" and "PLMS": modules/sd_samplers_timesteps.py
    ``get_timesteps``): ``clip(range(0, N, ⌊N/n⌋) + 1, 0, N − 1)``, descending, their σ read from the table, and no 0
    appended: those samplers stop at timestep 1 (the last "previous" timestep of their loop is its first entry) and
    return x there, without a final denoise. ``len(range(0, N, ⌊N/n⌋))`` entries, so more than n + 1 σ where n does
    not divide N (31 at n = 30: 30 steps, as in A1111); ``a1111:Timesteps`` is this on A1111's float32 table. At
    n > N/2 (stride 1) A1111 steps timestep N − 1 twice, a zero-length step: refused."""
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    stride = max(total // n, 1)
    t = [min(k + 1, total - 1) for k in range(0, total, stride)][::-1]
    if len(t) < 2 or len(set(t)) != len(t):
        raise InvalidInput(f"schedule 'a1111_timesteps' at n = {n} on this {total}-timestep table gives A1111's "
                           f"timesteps {t[:3]}…, which {'repeat timestep ' + str(total - 1) if len(t) >= 2 else 'hold one timestep'}"
                           f" (a step of zero length, or none); use at most {total // 2} steps")
    return from_timesteps(torch.tensor(t, dtype=torch.float64), training_sigmas)[:-1]


@register("beta_timesteps", aliases=("beta", "comfy_beta", "beta_comfyui"), needs_table=True,
          fixed_ends=("sigma_min", "sigma_max"), on_flow=True, on_edm=True)
def beta_timesteps(n: int, sigma_min=None, sigma_max=None, *, training_sigmas=None, alpha: float = 0.6,
                   beta: float = 0.6) -> torch.Tensor:
    """Beta sampling over the training timesteps, as ComfyUI's ``beta`` scheduler and the paper (Lee et al. 2024,
    arXiv:2407.12173): t_k = rint(F⁻¹_Beta(α,β)(1 − k/n)·(N − 1)), k = 0…n−1, σ = table[t_k].

    (``beta_sigmas`` is diffusers' ``use_beta_sigmas``: the same quantiles laid over [σ_min, σ_max] in σ itself.)
    ComfyUI drops repeated timesteps and runs fewer steps; here a repeat is an error (only for n in the
    hundreds with the default α, β).
    """
    check_steps(n, None, None, need_range=False)
    total = num_train(n, training_sigmas)
    alpha = real("alpha", alpha, what=" (the Beta distribution's first shape)")
    beta = real("beta", beta, what=" (the Beta distribution's second shape)")
    if not (alpha > 0 and beta > 0):
        raise InvalidInput(f"beta schedule needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    from scipy import stats

    t = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), alpha, beta) * (total - 1))
    return strictly_decreasing(from_timesteps(torch.as_tensor(t, dtype=torch.float64), training_sigmas), "beta_timesteps",
                               "use fewer steps: the Beta quantiles round to repeated timesteps here (ComfyUI drops "
                               "the repeats and runs fewer steps, which this schedule does not), or beta_sigmas, the "
                               "same quantiles over σ itself")

"""Native noise schedules of trained models, each reduced to the canonical VE space.

A model's forward process is ``x_t = a·x0 + b·n``. In the canonical (VE, k-diffusion) coordinates
``x = x_t / a`` and ``σ = b / a``; every schedule here answers three questions about a VE sigma:

- ``coefficients(σ) -> (a, b)``: the native signal and noise coefficients (finite at σ = ∞: a = 0);
- ``time(σ)``: the time input the network was trained with (timestep index, t, t·1000, ¼·ln σ, ...);
- ``sigma_of_time(t)``: its inverse.

All three are pure tensor functions (no host reads), so a denoiser built on them can sit in a loop
that is captured in a CUDA graph. The first two also come as host-float methods, ``coefficients_at(σ)``
and ``time_at(σ)`` (a Python float in, Python floats out): inside the registry loop σ is a Python float,
so the conversion's coefficients cost no device work at all (see
:meth:`samplers.core.conversion.Denoiser.denoise_at`). Each host method computes the same formula as its
tensor twin, in float64.
"""
from __future__ import annotations

import bisect
import functools
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Callable, NamedTuple

import torch

from .errors import InvalidInput, InvalidOption
from .validate import boolean, real, check_allocation, integer, nonneg, positive, unit_open


def _set(schedule, **values) -> None:
    """Set attributes of a frozen schedule while it is built (``__post_init__`` and the constructors here): a
    schedule is immutable afterwards, since what is built from it (a denoiser's time inputs, its own caches)
    would not see a change."""
    for name, value in values.items():
        object.__setattr__(schedule, name, value)


def _checked(schedule, name: str, rule: Callable, **rule_kw) -> None:
    """Check field ``name`` of a schedule being built by ``rule`` (:mod:`samplers.core.validate`'s ``real``,
    ``boolean``, ...) and keep the number it read where it was given as a 0-d tensor or a numpy number, which the rule
    takes as the number it holds: the field is then that number, never a tensor that computes as one."""
    value = getattr(schedule, name)
    read = rule(name, value, **rule_kw)
    if type(value) not in (bool, int, float):
        _set(schedule, **{name: read})


class NoiseSchedule:
    """Base class: the VE sigma range and the three maps described in the module docstring."""

    sigma_min: float
    sigma_max: float

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def time(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma_of_time(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # Host-float twins of ``coefficients`` and ``time``. A schedule defined only by its tensor methods gets
    # these through a float64 CPU tensor (correct, just slower); the schedules below compute them in Python.

    def coefficients_at(self, sigma: float) -> tuple[float, float]:
        a, b = self.coefficients(torch.tensor(sigma, dtype=torch.float64))
        return float(a), float(b)

    def time_at(self, sigma: float) -> float:
        return float(self.time(torch.tensor(sigma, dtype=torch.float64)))


def _vp_coefficients(sigma: torch.Tensor):
    # a = 1/sqrt(1+σ²), b = σ/sqrt(1+σ²); written so that σ = inf gives (0, 1) exactly.
    a = torch.rsqrt(1 + sigma * sigma)
    b = torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma * a)
    return a, b


def _vp_coefficients_at(sigma: float) -> tuple[float, float]:
    if math.isinf(sigma):
        return 0.0, 1.0
    a = 1 / math.sqrt(1 + sigma * sigma)
    return a, sigma * a


def _time_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a time input of a σ of ``dtype`` is computed and returned in: float32 for a float16 / bfloat16 σ,
    σ's own dtype otherwise. k-diffusion's samplers pass σ in the latents' dtype and its wrappers compute the time
    from their float32 tables, so their time input is float32; in bfloat16 a timestep near 1000 would round to a
    multiple of 4 (SD's σ_max to 1000, past the table's last index 999)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _log(sigma: float) -> float:
    """ln σ as torch computes it: −inf at σ = 0, inf at σ = inf."""
    return math.log(sigma) if sigma > 0 else -math.inf


# ----------------------------------------------------------------------------------------------------
# VP, discrete (DDPM / Stable Diffusion 1.x-2.x)


def _nearest_index(idx: int, log_sigma: float, low: float, high: float) -> int:
    """The quantized timestep (``quantize=True``) of a ln σ between the table's ``low`` = ln σ_{idx−1} and ``high`` =
    ln σ_idx (or beyond the table's end there): k-diffusion's ``DiscreteSchedule.sigma_to_t(quantize=True)``,
    ``(log_sigma - log_sigmas[:, None]).abs().argmin(dim=0)``, whose argmin takes the lower index on a tie. The two
    distances are its own floats (a subtraction, and its exact negation), so a σ at a log-midpoint gets k-diffusion's
    timestep; rounding the fractional timestep (half to even) gave the upper one at 425 of SD 1.x's 999
    midpoints. :meth:`VPDiscrete.time` computes the same comparison on tensors."""
    return idx - 1 if log_sigma - low <= high - log_sigma else idx


def check_table_size(n, what: str = "num_train_timesteps") -> int:
    """A training table of ``n`` timesteps: an integer >= 2 whose float64 tables (a few copies) fit in memory."""
    n = integer(what, n, lo=2)
    check_allocation(8 * 8 * n, f"a noise schedule table of {what} = {n}", "cpu",
                     fix="trained models use 1000 (some 4000) timesteps")
    return n


def betas_for(kind: str, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
              beta_end: float = 0.012) -> torch.Tensor:
    """Training betas as diffusers names them: ``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` or ``exp``.

    Every β must lie in (0, 1): ``beta_start`` and ``beta_end`` are checked (a β ≥ 1 would make ᾱ negative or 0)."""
    n = check_table_size(num_train_timesteps)
    if kind in ("linear", "scaled_linear"):
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
                raise InvalidInput(f"{name} must be a number in (0, 1) (a noise variance per step), got {value!r}; "
                                   "Stable Diffusion uses beta_start=0.00085, beta_end=0.012")
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":
        # Nichol & Dhariwal (2021), eq. 17, betas capped at 0.999.
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                            dtype=torch.float64)
    if kind == "exp":
        # diffusers' betas_for_alpha_bar(alpha_transform_type="exp") (HeunDiscreteScheduler's "exp"): ᾱ(t) = e^(−12t)
        return torch.tensor([min(1 - math.exp(-12.0 * (i + 1) / n) / math.exp(-12.0 * i / n), 0.999)
                             for i in range(n)], dtype=torch.float64)
    raise InvalidOption(f"unknown beta schedule {kind!r}; use 'linear', 'scaled_linear', 'squaredcos_cap_v2' or "
                        "'exp'")


ZERO_SNR_ALPHA_BAR = 2.0**-24  # diffusers' stand-in for ᾱ = 0 in its σ tables (rescale_betas_zero_snr)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2023, arXiv:2305.08891) Alg. 1: shift and scale sqrt(ᾱ) so the last step has SNR 0."""
    sqrt_ab = alphas_cumprod.to(torch.float64).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return sqrt_ab**2


def _a1111_rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111's ``rescale_zero_terminal_snr_abar`` (modules/sd_models.py) on its float32 ᾱ, in float32 and in its order
    of operations (shift, then scale by s₀/(s₀ − s_T)), the last ᾱ left at the 0 the rescale gives (A1111 then sets it
    to its finite stand-in: :meth:`VPDiscrete.with_terminal_alpha_bar`). Float32 rounding of √ᾱ near 1 moves the first
    entries' 1 − ᾱ by up to ~3e-5 relative against the float64 rescale, so A1111's table is only reproduced this way."""
    sqrt_ab = alphas_cumprod.to(torch.float32).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab -= last
    sqrt_ab *= first / (first - last)
    return sqrt_ab**2


@dataclass(eq=False, frozen=True)
class VPDiscrete(NoiseSchedule):
    """A discrete VP schedule given by its ``alphas_cumprod`` table (index = training timestep).

    VE sigma of timestep i: σ_i = sqrt((1 − ᾱ_i) / ᾱ_i); ᾱ = 0 (zero terminal SNR) gives σ = inf.
    The time input for a sigma between table entries is the fractional timestep found by linear
    interpolation in log σ (k-diffusion's ``DiscreteSchedule``); ``quantize=True`` takes the nearest timestep in
    log σ instead, the lower one on a tie, as k-diffusion's ``sigma_to_t(quantize=True)`` does.

    :meth:`with_terminal_alpha_bar` and :meth:`with_float32_alphas_cumprod` give the model as ComfyUI / A1111 read it
    (their finite zero-SNR end; A1111's float32 table), which their schedule names build on
    (:func:`samplers.core.names.resolve_schedule`).
    """

    alphas_cumprod: torch.Tensor
    quantize: bool = False
    _cache: dict = field(default_factory=dict, repr=False, init=False)

    def __post_init__(self):
        _checked(self, "quantize", boolean)  # "no" would round every time input
        if not isinstance(self.alphas_cumprod, torch.Tensor):
            check_table_size(len(self.alphas_cumprod), "len(alphas_cumprod)")
        # a copy: the caller's float64 table itself would be kept, and an edit of it in place would change what the
        # tables made from it later say while those made already (σ_min, σ_max) stay
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64).detach().clone()
        if ac.ndim != 1:
            raise InvalidInput(f"alphas_cumprod must be a 1-D table (one ᾱ per training timestep), got shape "
                               f"{tuple(ac.shape)}; pass the table itself")
        check_table_size(ac.numel(), "len(alphas_cumprod)")
        # −0.0 (an underflowed product of negative factors) is a sign of bad betas, not a zero-SNR end
        bad = ~torch.isfinite(ac) | (ac < 0) | torch.signbit(ac) | (ac > 1)
        zero_inside = bool((ac[:-1] == 0).any())
        if bool(bad.any()) or bool((ac[1:] > ac[:-1]).any()) or zero_inside or not float(ac[0]) > 0:
            raise InvalidInput("alphas_cumprod must be a non-increasing table of values in [0, 1] that starts above 0 "
                               "(only the last entry may be 0: zero terminal SNR); check the betas (each in (0, 1))")
        _set(self, alphas_cumprod=ac)
        _set(self, sigmas=((1 - ac) / ac).sqrt())  # ascending with the timestep; inf where ᾱ = 0
        finite = self.sigmas[torch.isfinite(self.sigmas)]
        _set(self, sigma_min=float(finite[0]), sigma_max=float(self.sigmas[-1]), log_sigmas=self.sigmas.log())
        # The time of a σ: log-σ interpolation in the table, where a zero-SNR end counts as diffusers' ᾱ = 2⁻²⁴
        # (σ ≈ 4096: its Euler-type schedulers' last entry), so a σ between the last finite entry and that gets
        # the timestep diffusers gives it (not the last finite one); σ = inf is the last timestep.
        time_log = self.log_sigmas.clone()
        _set(self, _zero_snr=math.isinf(float(time_log[-1])))  # read once here: sigma_of_time runs inside model calls
        if self._zero_snr:
            time_log[-1] = 0.5 * math.log((1 - ZERO_SNR_ALPHA_BAR) / ZERO_SNR_ALPHA_BAR)
        _set(self, _time_log_sigmas=time_log,
             _host_log_sigmas=time_log.tolist(),  # for time_at: bisect over Python floats
             _host_sigmas=self.sigmas.tolist())  # for sigma_at_timestep: the table's σ as Python floats
        # set by from_betas / from_alphas_cumprod(rescale_betas_zero_snr=True): the table before the rescale, from which
        # with_float32_alphas_cumprod redoes A1111's rescale on its float32 ᾱ; True on a with_float32_alphas_cumprod
        # model (whose terminal ᾱ, like A1111's, is stored in float32)
        _set(self, _before_zero_snr=None, _float32=False)

    def __repr__(self) -> str:
        """Short, for messages and option listings (the table itself is 1000 numbers)."""
        end = "zero terminal SNR" if self._zero_snr else f"σ_max {self.sigma_max:.6g}"
        return (f"VPDiscrete({self.num_train_timesteps} timesteps, σ_min {self.sigma_min:.6g}, {end}"
                + (", quantize=True" if self.quantize else "") + ")")

    @classmethod
    def from_betas(cls, kind: str = "scaled_linear", num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                   beta_end: float = 0.012, rescale_betas_zero_snr: bool = False, quantize: bool = False):
        """E.g. Stable Diffusion 1.x: ``VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)``."""
        ac = torch.cumprod(1 - betas_for(kind, num_train_timesteps, beta_start, beta_end), 0)
        return cls.from_alphas_cumprod(ac, rescale_betas_zero_snr=rescale_betas_zero_snr, quantize=quantize)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor, rescale_betas_zero_snr: bool = False,
                            quantize: bool = False):
        """The model of this ᾱ table (e.g. from a config's ``trained_betas``), rescaled to zero terminal SNR as
        diffusers' ``rescale_betas_zero_snr`` does where asked; the table before the rescale is kept, from which
        :meth:`with_float32_alphas_cumprod` redoes A1111's rescale on its float32 ᾱ."""
        boolean("rescale_betas_zero_snr", rescale_betas_zero_snr)  # "False" is a true string
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if not rescale_betas_zero_snr:
            return cls(ac, quantize=quantize)
        model = cls(rescale_zero_terminal_snr(ac), quantize=quantize)
        # a copy (as __post_init__ keeps one): A1111 rescales its own (float32) table, with_float32_alphas_cumprod
        _set(model, _before_zero_snr=ac.detach().clone())
        return model

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def zero_terminal_snr(self) -> bool:
        """Whether the table's last ᾱ is 0 (σ_max = inf): a zero-terminal-SNR model (``rescale_betas_zero_snr``)."""
        return self._zero_snr

    def with_terminal_alpha_bar(self, alpha_bar: float) -> "VPDiscrete":
        """This zero-terminal-SNR model as a tool that keeps a finite table reads it: the same table with its last
        ᾱ (0 here) set to ``alpha_bar``, so σ_max = sqrt((1 − ᾱ)/ᾱ) is finite (ComfyUI and A1111 set 4.897e-08:
        :data:`samplers.core.labels.TOOLS_ZERO_SNR_ALPHA_BAR`). Every other entry is this model's. Refused on a model
        whose last ᾱ is not 0 (it has a finite table of its own) and for an ``alpha_bar`` outside (0, ᾱ_{T−1})."""
        if not self.zero_terminal_snr:
            raise InvalidInput(f"with_terminal_alpha_bar reads a zero-terminal-SNR model (last alphas_cumprod 0), but "
                               f"this one ends at {float(self.alphas_cumprod[-1]):g}: its own table is finite")
        before = float(self.alphas_cumprod[-2])
        if isinstance(alpha_bar, bool) or not isinstance(alpha_bar, (int, float)) or not 0 < alpha_bar < before:
            raise InvalidInput(f"terminal_alpha_bar must be a number in (0, {before:g}) (below the model's "
                               f"next-to-last alphas_cumprod), got {alpha_bar!r}")
        key = ("terminal_alpha_bar", float(alpha_bar))
        if key not in self._cache:
            table = self.alphas_cumprod.clone()
            # a float32 table (with_float32_alphas_cumprod) stores it as A1111 does, in its float32 tensor
            value = float(alpha_bar)
            table[-1] = float(torch.tensor(value, dtype=torch.float32)) if self._float32 else value
            model = VPDiscrete(table, quantize=self.quantize)
            _set(model, _float32=self._float32)
            self._cache[key] = model
        return self._cache[key]

    def with_float32_alphas_cumprod(self) -> "VPDiscrete":
        """This model as A1111 reads it: its ``alphas_cumprod`` rounded to float32, as ldm's ``DDPM.register_schedule``
        (``to_torch = partial(torch.tensor, dtype=torch.float32)``) and A1111's SDXL loader
        (``torch.asarray(..., dtype=torch.float32)``) store it, and as k-diffusion's ``CompVisDenoiser`` then reads it:
        σ = ((1 − ᾱ)/ᾱ)^½ of those float32 values (computed here in float64). Near ᾱ ≈ 1 the rounding moves 1 − ᾱ, so
        σ_min (SD 1.x: 0.0291675, against 0.0291672 from the exact table) and the first entries move by up to ~1.3e-5
        relative; A1111's schedule names build on this table (``float32_alphas_cumprod=True``).

        On a zero-terminal-SNR model built by :meth:`from_betas` or :meth:`from_alphas_cumprod`
        (``rescale_betas_zero_snr=True``; a diffusers config too) the rescale is
        A1111's: on the float32 ᾱ before it, in float32 (its ``rescale_zero_terminal_snr_abar``), the last ᾱ 0 until
        :meth:`with_terminal_alpha_bar` sets A1111's finite stand-in (stored in float32, as A1111 stores it). A
        zero-SNR model given its rescaled table directly has no table from before the rescale: its rescaled table is
        rounded (A1111's σ_min; its second to fourth entries may differ from A1111's by ~2e-5 relative). Built once
        per model; a float32 model is its own."""
        if self._float32:
            return self
        key = ("float32_alphas_cumprod",)
        if key not in self._cache:
            if self._before_zero_snr is not None:
                table = _a1111_rescale_zero_terminal_snr(self._before_zero_snr.to(torch.float32))
            else:
                table = self.alphas_cumprod.to(torch.float32)
            model = VPDiscrete(table.to(torch.float64), quantize=self.quantize)
            _set(model, _float32=True)
            self._cache[key] = model
        return self._cache[key]

    def _table(self, device, dtype, time: bool = False):
        key = (str(device), dtype, time)
        if key not in self._cache:
            self._cache[key] = (self._time_log_sigmas if time else self.log_sigmas).to(device=device, dtype=dtype)
        return self._cache[key]

    def coefficients(self, sigma):
        return _vp_coefficients(sigma)

    def time(self, sigma):
        log_sigmas = self._table(sigma.device, torch.float64, time=True)
        n = log_sigmas.numel()
        s64 = sigma.to(torch.float64)
        # ln σ as _log takes it (time_at's): −inf for σ <= 0, so a negative σ (an ODE stage just past 0) or a NaN one
        # is timestep 0, the clamped end, on both paths; log gave NaN there, which searchsorted put past the table's
        # end and nan_to_num then made timestep n − 2 (998 on a 1000-step table)
        log_sigma = torch.where(s64 > 0, s64.log(), torch.full_like(s64, -math.inf))
        idx = torch.searchsorted(log_sigmas, log_sigma).clamp(1, n - 1)
        low, high = log_sigmas[idx - 1], log_sigmas[idx]
        if self.quantize:
            t = (idx - (log_sigma - low <= high - log_sigma).long()).to(torch.float64)  # _nearest_index's rule
        else:
            w = ((log_sigma - low) / (high - low)).nan_to_num(0.0).clamp(0, 1)
            t = (idx - 1).to(torch.float64) + w
        t = torch.where(torch.isposinf(sigma), torch.full_like(t, n - 1), t)
        return t.to(_time_dtype(sigma.dtype))

    def coefficients_at(self, sigma):
        return _vp_coefficients_at(sigma)

    def time_at(self, sigma):
        """:meth:`time` for one Python float: the same log-σ interpolation, by bisection over the cached table."""
        log_sigmas = self._host_log_sigmas
        n = len(log_sigmas)
        if sigma == math.inf:
            t = float(n - 1)
        else:
            log_sigma = _log(sigma)  # −inf for σ <= 0 and NaN: timestep 0
            idx = min(max(bisect.bisect_left(log_sigmas, log_sigma), 1), n - 1)  # torch.searchsorted(..., right=False)
            low, high = log_sigmas[idx - 1], log_sigmas[idx]
            if self.quantize:
                return float(_nearest_index(idx, log_sigma, low, high))
            num, den = log_sigma - low, high - low
            # IEEE division as torch does it (x/0 = ±inf, 0/0 = nan), then nan_to_num(0).clamp(0, 1)
            w = num / den if den != 0 else math.copysign(math.inf, num) if num != 0 else math.nan
            w = 0.0 if math.isnan(w) else min(max(w, 0.0), 1.0)
            t = (idx - 1) + w
        return t

    def check_in_table(self, sigmas, what: str = "this model", fix: str | None = None) -> None:
        """Refuse a run's grid ``sigmas`` (host floats) that leaves this table's σ range at some σ > 0: where the model
        is evaluated there (every step's start; the end too for a sampler with a stage at its step's end, Heun's),
        its time input would be clamped to the table's end (:meth:`time_at`), telling the model another noise level
        than the latent's. Above the table: beyond 0.1 % (the same table in float32 or float64). Below it, where the
        model is told timestep 0 and the latent is all but clean: below half the table's first σ, as far as the
        levels the tools publish for a table go (Align Your Steps' 0.029 and reForge's AYS-32 0.015 on Stable
        Diffusion's, which starts at 0.0292; the tools run them so). σ = inf is left to the infinite-σ rule (a
        zero-terminal-SNR table reaches it). ``fix``: what the caller can do instead (default: build the schedule on
        this table's range)."""
        lo, hi = self.sigma_min, self.sigma_max
        for i, sigma in enumerate(sigmas):
            if sigma == 0 or math.isinf(sigma) or lo / 2 <= sigma <= hi * (1 + 1e-3):
                continue
            end = "last (timestep" if sigma > hi else "first (timestep"
            raise InvalidInput(
                f"sigmas[{i}] = {sigma:g} lies outside {what}'s timestep table, which covers σ from {lo:.6g} to "
                f"{hi:.6g}: evaluated there, the model would be told the table's {end} "
                f"{round(self.time_at(sigma))}), another noise level than the latent's. "
                + (fix or "Build the schedule on the model's range: samplers.get_sigmas(name, n, native=...) without "
                          f"sigma_min / sigma_max (or with both within [{lo:.6g}, {hi:.6g}]), and for a preset one made "
                          "for this model's table"))

    def sigma_at_timestep(self, i: int) -> float:
        """σ of the table's timestep ``i`` (an index), a Python float: no tensor read (a sampler's loop may call it)."""
        return self._host_sigmas[i]

    def sigma_of_time_at(self, t: float) -> float:
        """:meth:`sigma_of_time` for one Python float, by the same log-σ interpolation over the cached table."""
        log_sigmas = self._host_log_sigmas
        n = len(log_sigmas)
        t = min(max(float(t), 0.0), n - 1.0)
        low = min(max(math.floor(t), 0), n - 2)
        w = t - low
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        if self._zero_snr and t >= n - 1:
            return math.inf
        return math.exp(lo if w == 0 else hi if w == 1 else lo + w * (hi - lo))

    def sigma_of_time(self, t):
        """The inverse of :meth:`time`: log-σ interpolation in the same table (a zero-SNR end counted as diffusers'
        σ ≈ 4096 between the last two timesteps), the last timestep itself σ = inf there."""
        log_sigmas = self._table(t.device, torch.float64, time=True)
        n = log_sigmas.numel()
        t = t.to(torch.float64).clamp(0, n - 1)
        low = t.floor().long().clamp(0, n - 2)
        w = t - low
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        log_sigma = torch.where(w == 0, lo, torch.where(w == 1, hi, lo + w * (hi - lo)))
        if self._zero_snr:  # zero terminal SNR: the last timestep is σ = inf
            log_sigma = torch.where(t >= n - 1, torch.full_like(log_sigma, math.inf), log_sigma)
        return log_sigma.exp()


# ----------------------------------------------------------------------------------------------------
# VP, continuous time


# The cosine kind's default end time: DPM-Solver's NoiseScheduleVP('cosine') (LuChengTHU/dpm-solver,
# dpm_solver_pytorch.py), "For the cosine schedule, T = 1 will have numerical issues. So we manually set the ending
# time T." At t = 1 the cosine ᾱ is 0 (σ = inf), but float64's cos(π/2) = 6e-17 made σ_max 1.6e16, where the time
# input has no resolution left (time_at is 1.0 for every σ above ~1e15): a default karras grid put 19 of 20 steps
# above σ = 100 and Heun ended at |x| 3.8e7 for an exact endpoint of 4.7. At 0.9946 σ_max is 118.8.
COSINE_T_MAX = 0.9946


@dataclass(eq=False, frozen=True)
class VPContinuous(NoiseSchedule):
    """Continuous VP schedules over t ∈ [t_min, t_max]: ``linear`` β (Song et al. 2021) or ``cosine`` ᾱ.

    linear: log ᾱ(t) = −(β_min·t + β_d·t²/2) with β_d = β_max − β_min, so σ² = exp(β_d t²/2 + β_min t) − 1.
    cosine: ᾱ(t) = cos²((t+s)/(1+s)·π/2) / cos²(s/(1+s)·π/2) (Nichol & Dhariwal 2021).
    The network's time input is ``t · time_scale`` (e.g. 1000 for models trained on t·1000).

    ``t_max`` (None: the kind's default) is the end of the time range, σ_max = σ(t_max): 1 for ``linear``, and
    DPM-Solver's :data:`COSINE_T_MAX` = 0.9946 for ``cosine``, whose ᾱ(1) = 0 float64 turns into σ = 1.6e16 (a
    cosine t_max of 1 is refused). It sets the default range of the schedules built on this model (``native=``),
    not the conversion: σ above σ_max still gets its time, beyond t_max.
    """

    kind: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008
    t_min: float = 1e-3
    time_scale: float = 1.0
    t_max: float | None = None

    def __post_init__(self):
        if self.kind not in ("linear", "cosine"):
            raise InvalidOption(f"VPContinuous kind must be 'linear' or 'cosine', got {self.kind!r}")
        # each kind reads its own parameters: another kind's, set to other than its default, would do nothing
        unread = {"cosine": ("beta_min", "beta_max"), "linear": ("cosine_s",)}[self.kind]
        changed = [k for k in unread if getattr(self, k) != VPContinuous.__dataclass_fields__[k].default]
        if changed:
            raise InvalidOption(f"VPContinuous({self.kind!r}) does not read {', '.join(changed)} (the "
                                f"{'linear' if self.kind == 'cosine' else 'cosine'} kind's), so "
                                f"{', '.join(f'{k}={getattr(self, k)!r}' for k in changed)} would be ignored; leave "
                                f"{'them' if len(changed) > 1 else 'it'} out, or pass kind="
                                f"{'linear' if self.kind == 'cosine' else 'cosine'!r}")
        _checked(self, "beta_min", positive)
        _checked(self, "beta_max", real, lo=float(self.beta_min), lo_open=True, what=" (above beta_min)")
        _checked(self, "cosine_s", nonneg)
        _checked(self, "t_min", unit_open)
        _checked(self, "time_scale", positive)
        t = torch.tensor([self.t_min, self.end_time], dtype=torch.float64)
        lo, hi = self._sigma(t).tolist()
        _set(self, sigma_min=lo, sigma_max=hi)

    @property
    def end_time(self) -> float:
        """The time range's end, checked: ``t_max``, or the kind's default (1; the cosine kind's
        :data:`COSINE_T_MAX`), above ``t_min`` and at most 1 (below 1 for the cosine kind)."""
        cosine = self.kind == "cosine"
        end = (COSINE_T_MAX if cosine else 1.0) if self.t_max is None else self.t_max
        what = (" (the end of the time range, above t_min"
                + ("; at t = 1 the cosine ᾱ is 0, σ = inf, which float64 makes 1.6e16: DPM-Solver ends at 0.9946, "
                   "the default" if cosine else "") + ")")
        return real("t_max", end, lo=float(self.t_min), lo_open=True, hi=1.0, hi_open=cosine, what=what)

    def __repr__(self) -> str:
        # t_max only where it is given: a model's identity string (fitted solver files record it) stays what it was
        # before the field existed (it moves the default range, not D)
        shown = [f for f in fields(self) if f.name != "t_max" or self.t_max is not None]
        return f"VPContinuous({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    def _sigma(self, t):
        if self.kind == "linear":
            beta_d = self.beta_max - self.beta_min
            return torch.expm1(0.5 * beta_d * t**2 + self.beta_min * t).sqrt()
        s = self.cosine_s
        f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
        ab = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / f0
        return ((1 - ab) / ab).sqrt()

    def coefficients(self, sigma):
        return _vp_coefficients(sigma)

    def time(self, sigma):
        s64 = sigma.to(torch.float64)
        log1p_s2 = torch.log1p(s64 * s64)  # = −log ᾱ
        if self.kind == "linear":
            beta_d = self.beta_max - self.beta_min
            t = (-self.beta_min + (self.beta_min**2 + 2 * beta_d * log1p_s2).sqrt()) / beta_d
        else:
            s = self.cosine_s
            f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
            t = torch.acos((torch.exp(-log1p_s2) * f0).sqrt()) * (2 / math.pi) * (1 + s) - s
        return (t * self.time_scale).to(_time_dtype(sigma.dtype))

    def coefficients_at(self, sigma):
        return _vp_coefficients_at(sigma)

    def time_at(self, sigma):
        log1p_s2 = math.log1p(sigma * sigma)
        if self.kind == "linear":
            beta_d = self.beta_max - self.beta_min
            t = (-self.beta_min + math.sqrt(self.beta_min**2 + 2 * beta_d * log1p_s2)) / beta_d
        else:
            s = self.cosine_s
            f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
            t = math.acos(math.sqrt(math.exp(-log1p_s2) * f0)) * (2 / math.pi) * (1 + s) - s
        return t * self.time_scale

    def sigma_of_time(self, t):
        return self._sigma(t.to(torch.float64) / self.time_scale)


# ----------------------------------------------------------------------------------------------------
# VE and EDM

# The entries of the table ComfyUI builds for a continuous EDM model (ModelSamplingContinuousEDM.set_parameters), which
# its table schedulers (simple, normal, sgm_uniform, ddim_uniform, beta) read: VE.sigmas.
COMFY_EDM_TABLE_SIZE = 1000


@dataclass(eq=False, frozen=True)
class VE(NoiseSchedule):
    """Variance exploding: x = x0 + σ·n natively (a = 1, b = σ).

    ``time="sigma"`` feeds σ itself (score-SDE VE); ``"edm"`` feeds c_noise = ¼·ln σ (Karras et al. 2022);
    ``"log_sigma"`` feeds ln σ.

    Its table (:attr:`sigmas`, for ComfyUI's table schedules) is the one ComfyUI builds for a continuous EDM model
    (``ModelSamplingContinuousEDM``: Playground v2.5, CosXL, EDM-v SDXL): :data:`COMFY_EDM_TABLE_SIZE` entries
    log-uniform from ``sigma_min`` to ``sigma_max``.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    time_input: str = "edm"

    def __post_init__(self):
        if self.time_input not in ("sigma", "edm", "log_sigma"):
            raise InvalidOption(f"VE time_input must be 'sigma', 'edm' or 'log_sigma', got {self.time_input!r}")
        _checked(self, "sigma_min", positive)
        _checked(self, "sigma_max", real, lo=float(self.sigma_min), lo_open=True, what=" (above sigma_min)")

    def coefficients(self, sigma):
        return torch.ones_like(sigma), sigma

    def time(self, sigma):
        sigma = sigma.to(_time_dtype(sigma.dtype))
        if self.time_input == "sigma":
            return sigma
        return sigma.log() * (0.25 if self.time_input == "edm" else 1.0)

    def coefficients_at(self, sigma):
        return 1.0, sigma

    def time_at(self, sigma):
        if self.time_input == "sigma":
            return sigma
        return _log(sigma) * (0.25 if self.time_input == "edm" else 1.0)

    def sigma_of_time(self, t):
        if self.time_input == "sigma":
            return t
        return (t / (0.25 if self.time_input == "edm" else 1.0)).exp()

    @functools.cached_property
    def sigmas(self) -> torch.Tensor:
        """The table ComfyUI builds for a continuous EDM model (comfy/model_sampling.py,
        ``ModelSamplingContinuousEDM.set_parameters``: ``torch.linspace(math.log(sigma_min), math.log(sigma_max),
        1000).exp()``, the σ_min / σ_max its node or the model's config gives), ascending; here in float64 (ComfyUI's
        buffer is float32, within about 1e-6 relative of these), its ends exactly ``sigma_min`` and ``sigma_max``."""
        return self.table_axis.sigma_of(torch.arange(COMFY_EDM_TABLE_SIZE, dtype=torch.float64))

    @property
    def table_axis(self) -> TableAxis:
        """ComfyUI's time axis of a continuous EDM model on the index of :attr:`sigmas`: its ``timestep(σ)`` = ¼·ln σ
        and ``sigma(timestep)`` = exp(4·timestep) are linear in ln σ, as the table is, so the fractional index
        (ln σ − ln σ_min)/(ln σ_max − ln σ_min)·(N − 1) maps to the same σ (exact at the entries; beyond the table it
        extends, as ComfyUI's maps do). ``own_sigma`` is ComfyUI's σ of an EDM model, the VE σ itself."""
        lo, hi, last = math.log(self.sigma_min), math.log(self.sigma_max), COMFY_EDM_TABLE_SIZE - 1
        sigma_min, sigma_max = float(self.sigma_min), float(self.sigma_max)

        def index_of(sigma: float) -> float:
            if not math.isfinite(sigma):  # ComfyUI's timestep(σ) = ¼·ln σ: no timestep at σ = inf
                raise InvalidInput(f"σ = {sigma!r} has no timestep on a continuous EDM model's axis (¼·ln σ); pass a "
                                   f"finite sigma_max, or leave it out for the model's own ({sigma_max:g})")
            return (math.log(sigma) - lo) / (hi - lo) * last

        def sigma_of(index: torch.Tensor) -> torch.Tensor:
            index = index.to(torch.float64)
            sigma = (lo + index / last * (hi - lo)).exp()
            return torch.where(index == 0, torch.full_like(sigma, sigma_min),
                               torch.where(index == last, torch.full_like(sigma, sigma_max), sigma))

        return TableAxis(index_of, sigma_of, float)


# ----------------------------------------------------------------------------------------------------
# Rectified flow (SD3, Flux)


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
            max_shift: float = 1.15) -> float:
    """Flux's resolution-dependent shift exponent μ: linear in the token count (shift = e^μ)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + base_shift - m * base_seq_len


def flow_t(sigma):
    """Flow time t = σ/(1+σ) of a VE sigma, exact at σ = 0 and σ = inf (a tensor or a Python float)."""
    if not isinstance(sigma, torch.Tensor) and sigma == 0:
        return 0.0  # 1/σ is inf for a tensor, an exception for a float
    return 1 / (1 + 1 / sigma)


def flow_a(sigma):
    """The signal coefficient 1 − t = 1/(1+σ) of a VE sigma, computed directly: 1 − :func:`flow_t` cancels (in
    float32 its relative error grows as σ·2⁻²⁴ and it is 0 from σ ≈ 2e7); 1 at σ = 0, 0 exactly at σ = inf."""
    return 1 / (1 + sigma)


def flow_sigma(t: torch.Tensor) -> torch.Tensor:
    """The VE sigma σ = t/(1 − t) of flow times t ∈ [0, 1] (a tensor), inf exactly at t = 1."""
    return torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))


class TableAxis(NamedTuple):
    """A model's own map between its training table's (fractional) index and the VE σ, for the table schedules
    (``normal``, ``sgm_uniform``) where that is not log-σ interpolation between the table's entries; see
    :attr:`RectifiedFlow.table_axis`.

    ``index_of(σ)``: the model's time input at σ as a fractional table index; ``sigma_of(index)``: the σ the model's
    schedule gives a fractional index (exact at the entries); ``own_sigma(σ)``: σ in the model's own coordinates
    (what a tool that works in them compares against a threshold)."""

    index_of: Callable[[float], float]
    sigma_of: Callable[[torch.Tensor], torch.Tensor]
    own_sigma: Callable[[float], float]


@dataclass(eq=False, frozen=True)
class RectifiedFlow(NoiseSchedule):
    """Rectified flow x_t = (1 − t)·x0 + t·n, so σ = t/(1 − t), t = σ/(1 + σ) (σ_max = inf at t = 1).

    A time shift s (SD3: 3.0; Flux: s = e^μ, see :func:`flux_mu`) maps t → s·t/(1 + (s − 1)·t), which is
    exactly σ → s·σ in VE coordinates; it sets which sigmas a schedule visits, and is stored here so
    schedules built from this model use it. The network's time input is ``t · multiplier``.

    Its training table (:attr:`sigmas`, for ComfyUI's table schedules) has ``num_train_timesteps`` entries (default
    1000), entry i the shifted t = (i + 1)/N: ComfyUI's ``ModelSamplingDiscreteFlow`` (SD3: 1000 entries, multiplier
    1000) and ``ModelSamplingFlux`` (Flux: ``RectifiedFlow.dynamic(mu, num_train_timesteps=10000)``, multiplier 1).
    ``t_min`` (the smallest time, so ``sigma_min``) defaults to the table's first entry, 1/N, when
    ``num_train_timesteps`` is given, else to 1/multiplier (1e-3 for a multiplier of at most 1).
    """

    shift: float = 1.0
    multiplier: float = 1000.0
    t_min: float | None = None
    num_train_timesteps: int | None = None

    def __post_init__(self):
        _checked(self, "shift", positive)
        _checked(self, "multiplier", positive)
        if self.t_min is not None:
            _checked(self, "t_min", unit_open)
        if self.num_train_timesteps is not None:
            _set(self, num_train_timesteps=check_table_size(self.num_train_timesteps))
            default_t_min = 1.0 / self.num_train_timesteps
        else:
            default_t_min = 1.0 / self.multiplier if self.multiplier > 1 else 1e-3
        t_min = self.t_min if self.t_min is not None else default_t_min
        _set(self, sigma_min=self.shift * t_min / (1 - t_min), sigma_max=math.inf)

    def __repr__(self) -> str:
        # num_train_timesteps only where it is set: a model's identity string (fitted solver files record it)
        # stays what it was before the field existed
        table = "" if self.num_train_timesteps is None else f", num_train_timesteps={self.num_train_timesteps}"
        return f"RectifiedFlow(shift={self.shift!r}, multiplier={self.multiplier!r}, t_min={self.t_min!r}{table})"

    @property
    def table_size(self) -> int:
        """The number of entries of :attr:`sigmas`: ``num_train_timesteps``, or 1000 (ComfyUI's and diffusers')."""
        return 1000 if self.num_train_timesteps is None else self.num_train_timesteps

    @functools.cached_property
    def sigmas(self) -> torch.Tensor:
        """The training table as ComfyUI builds it for a flow model (comfy/model_sampling.py,
        ``ModelSamplingDiscreteFlow.set_parameters`` / ``ModelSamplingFlux.set_parameters``, Comfy-Org/ComfyUI
        2fd20839): entry i is time_snr_shift(shift, (i + 1)/N), N = :attr:`table_size`, here as the VE σ: shift·u/(1 − u)
        with u = (i + 1)/N (the shift is σ → shift·σ in VE coordinates), ascending, the last entry (u = 1) inf."""
        return self.table_axis.sigma_of(torch.arange(self.table_size, dtype=torch.float64))

    @property
    def table_axis(self) -> TableAxis:
        """ComfyUI's time axis of a flow model (comfy/model_sampling.py, Comfy-Org/ComfyUI 2fd20839) on the table's
        index, entry i at timestep (i + 1)·multiplier/N:

        - ``index_of(σ)``: ``model_sampling.timestep(σ)`` = its σ (the flow time t) × multiplier, the model's time
          input: the index N·t − 1 (t = σ/(1 + σ) of the VE σ);
        - ``sigma_of(index)``: ``model_sampling.sigma(timestep)`` = time_snr_shift(shift, timestep/multiplier): the
          shift applied to u = (index + 1)/N, as the VE σ shift·u/(1 − u).

        The two are not inverses when shift ≠ 1 (the time input is the shifted t, which ``sigma`` shifts again), so
        ComfyUI's ``normal`` ends at σ(timestep(σ_min)), above σ_min; between entries neither is log-σ interpolation of
        the table. ``own_sigma`` is ComfyUI's σ of a flow model, the flow time t."""
        n, shift = self.table_size, self.shift

        def index_of(sigma: float) -> float:
            return n * flow_t(sigma) - 1.0

        def sigma_of(index: torch.Tensor) -> torch.Tensor:
            u = (index.to(torch.float64) + 1) / n
            return torch.where(u >= 1, torch.full_like(u, math.inf), shift * u / (1 - u))

        return TableAxis(index_of, sigma_of, flow_t)

    @classmethod
    def dynamic(cls, mu: float, multiplier: float = 1.0, **kw):
        """Flux-style dynamic shifting: shift = e^μ."""
        return cls(shift=math.exp(mu), multiplier=multiplier, **kw)

    def coefficients(self, sigma):
        return flow_a(sigma), flow_t(sigma)

    def time(self, sigma):
        return flow_t(sigma.to(_time_dtype(sigma.dtype))) * self.multiplier

    def coefficients_at(self, sigma):
        return flow_a(sigma), flow_t(sigma)

    def time_at(self, sigma):
        return flow_t(sigma) * self.multiplier

    def sigma_of_time(self, t):
        t = t / self.multiplier
        return t / (1 - t)

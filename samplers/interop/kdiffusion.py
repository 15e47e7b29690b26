"""A drop-in for ``k_diffusion.sampling`` (k-diffusion 0.1.1), built on this library's samplers.

    from samplers import kdiffusion as sampling          # instead of: from k_diffusion import sampling
    sigmas = sampling.get_sigmas_karras(20, 0.0292, 14.6)
    x0 = sampling.sample_dpmpp_2m(model_wrap, x, sigmas, extra_args={"cond": c, "uncond": uc, "cond_scale": 7},
                                  callback=cb, disable=False)

Every public name of k-diffusion's ``sampling`` module is here with k-diffusion's signature (schedules,
``append_zero``, ``to_d``, ``get_ancestral_step``, ``default_noise_sampler``, ``BatchedBrownianTree``,
``BrownianTreeNoiseSampler``, every ``sample_*``, ``linear_multistep_coeff``, ``log_likelihood``,
``PIDStepSizeController``, ``DPMSolver``) and, on the same inputs and noise, returns k-diffusion's result:
``tests/test_kdiffusion_parity.py`` runs each against the real package (docs/kdiffusion.md lists what is exact and
what is not). The ``sample_*`` functions are the registry samplers (``samplers.get("dpmpp_2m")``, ...) called with
k-diffusion's defaults and its noise convention; nothing of k-diffusion's sampler code is repeated here. The Karras,
exponential and polyexponential schedules are the registry's formulas evaluated operation for operation as
k-diffusion evaluates them, in torch's default dtype on ``device``, so that they are k-diffusion's bits in every dtype.

Noise, as k-diffusion draws it (that is what the same result means for a drop-in):

- the default noise of the ancestral samplers (``default_noise_sampler``) and the EDM churn of ``sample_euler`` /
  ``sample_heun`` / ``sample_dpm_2`` are ``torch.randn_like(x)`` on torch's **global** generator, drawn at the same
  points of the run as k-diffusion draws them, including the draws k-diffusion multiplies by 0 (churn off, η = 0):
  after ``torch.manual_seed(s)`` a run gives k-diffusion's numbers and, once completed, leaves the generator where
  k-diffusion leaves it (a run a raising callback interrupts need not: docs/kdiffusion.md);
- the SDE samplers (``sample_dpmpp_sde`` / ``_2m_sde`` / ``_3m_sde``) default to :class:`BrownianTreeNoiseSampler`
  on the schedule's range, seeded by one draw from the global generator, as k-diffusion does;
- the DPM-Solver samplers draw ``randn_like(x)`` at every (accepted) step, and ``log_likelihood`` its Rademacher
  probe with ``torch.randint_like``, as k-diffusion does;
- a noise sampler you pass is called as k-diffusion calls it: with 0-d tensors of the schedule's dtype and device;
- ``seed=`` (keyword-only, the one addition to k-diffusion's signatures) seeds the Brownian tree of the SDE samplers
  and switches the others to this library's per-item seeded noise.

The registry samplers draw per-item seeded noise; only this module draws the noise itself from the global
generator, where k-diffusion does. Model calls are k-diffusion's too: ``model(x, sigma, **extra_args)`` with
``sigma`` a tensor of shape [B]; ``callback`` gets ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` with ``x`` the
state the step's model call saw and ``sigma`` / ``sigma_hat`` 0-d tensors, once per step, after the step is taken
(k-diffusion calls it before its update): its tensors are read-only, and a ``sigmas=`` sampler's result never shares storage with
one (``sample_dpm_adaptive``'s last ``x`` is its result, as in k-diffusion; docs/kdiffusion.md).

Every other registered sampler is here as ``sample_<name>`` (the registry function itself, with this library's
conventions: seeded per-item noise, ``seed=``), and :func:`get_sampler` resolves A1111 / ComfyUI labels. The
attributes are computed from the registry when they are looked up, so samplers registered later appear too.
ComfyUI's Brownian-tree functions (``sample_dpmpp_2m_sde_gpu`` & co., :data:`COMFYUI_TREE_FUNCTIONS`) are ComfyUI's:
its positional signature and its tree, seeded by ``extra_args["seed"]``; its other names without a registry sampler
of that name are refused, naming :mod:`samplers.interop.comfyui`.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
import torch
from torch import nn  # noqa: F401  (imported into k-diffusion's module too; custom samplers reach it there)
from tqdm.auto import tqdm, trange  # noqa: F401  (as above)

from ..core import names, registry, steps
from ..core import noise as noise_mod
from ..core.a1111_rng import A1111Noise
from ..core.brownian import BatchedBrownianTree, BrownianTreeNoiseSampler  # noqa: F401  (k-diffusion's names)
from ..core.conversion import prepare_times, state_dtype
from ..core.errors import InvalidInput, InvalidOption, InvalidType, NonFiniteError, Unavailable
from ..core.noise import PredrawnNoise, SeededNoise
from ..core.run import check_call, read_sigmas, refuse_meta_sigmas, to_result_dtype
from ..core.seeds import resolve_seeds, tree_seeds
from ..core.validate import check_allocation, integer, real

registry.load_builtins()  # the sampler modules imported below register in the manifest's order, not in this one's

from ..ode.multistep import lms_coefficients  # noqa: E402
from ..ode.singlestep import (EpsSolver, PIDStepSizeController, check_adaptive, fast_orders,  # noqa: E402,F401
                              solve_adaptive, solve_fast)
from ..sde import ancestral  # noqa: E402
from ..schedules.base import SCHEDULES, check_rho, check_steps, finite_max, range_end  # noqa: E402

# The public names of k-diffusion's ``sampling`` module (0.1.1), each defined below with k-diffusion's signature.
K_DIFFUSION_NAMES = (
    "append_zero", "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_vp",
    "to_d", "get_ancestral_step", "default_noise_sampler", "BatchedBrownianTree", "BrownianTreeNoiseSampler",
    "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral",
    "linear_multistep_coeff", "sample_lms", "log_likelihood", "PIDStepSizeController", "DPMSolver", "sample_dpm_fast",
    "sample_dpm_adaptive", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
)
# What k-diffusion's module imports into itself (``from tqdm.auto import trange, tqdm``, ``from torch import nn``, …),
# which sampler code written against it reaches there (``k_diffusion.sampling.trange(len(sigmas) - 1, ...)``). Its
# ``utils``, ``integrate`` (scipy), ``torchsde`` and ``odeint`` (torchdiffeq) are other packages': import them from those.
K_DIFFUSION_IMPORTS = ("math", "torch", "nn", "trange", "tqdm")

# ----------------------------------------------------------------------------------------------------
# Schedules: the registry's formulas, evaluated as k-diffusion evaluates them (torch's default dtype, on ``device``)


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a trailing 0 (a schedule that ends in the data)."""
    return torch.cat([x, x.new_zeros([1])])


def _schedule(name: str, n: int, device, *args, **kwargs) -> torch.Tensor:
    return SCHEDULES.get(name)(n, *args, **kwargs).to(device=device, dtype=torch.get_default_dtype())


# Karras, exponential and polyexponential are the registry's formulas (samplers/schedules/sigma.py), but the registry
# evaluates them in float64 and a float64 schedule cast to float32 is up to 28 float32 ulp (1.9e-6 relative at
# n = 1000; 113 ulp, 8.3e-6, with ρ = 3) from k-diffusion's, which computes in torch's default dtype: so the drop-in
# evaluates each one operation for operation as k-diffusion does (the same linspace, the same Python-number exponents
# and logs of the arguments as passed, the same device placement), which gives k-diffusion's bits in every default
# dtype and on every device. The registry's checks run first, on the range as numbers.


def _check_registry(name: str, n, sigma_min: float, sigma_max: float, rho=None) -> int:
    n = check_steps(n, sigma_min, sigma_max)
    if rho is not None:
        # a 0-d real tensor ρ is checked as the number it holds and computed with as the tensor, as k-diffusion does
        (_check_karras_rho if name == "karras" else check_rho)(_real("rho", rho) if isinstance(rho, torch.Tensor)
                                                               else rho)
    finite_max(name, sigma_max)
    return n


def _check_karras_rho(rho) -> float:
    """Karras's ρ as k-diffusion takes it: any finite ρ but 0. A negative ρ also runs from σ_max down to σ_min
    (σ^(1/ρ) then rises along the ramp and the power ^ρ turns it back), a schedule k-diffusion builds and its samplers
    run; ρ = 0 divides by zero (the registry's ``karras`` keeps ρ > 0, Karras et al.'s)."""
    what = (" other than 0 (the Karras schedule (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ divides by ρ; "
            "Karras et al. use rho=7.)")
    rho = real("rho", rho, what=what)
    if rho == 0:
        raise InvalidOption(f"rho must be a finite number{what}, got 0: pass rho=7. or another ρ ≠ 0")
    return rho


# k-diffusion's schedule functions compute on inputs whose schedules its own samplers cannot use; the drop-in refuses
# them before building anything, naming what k-diffusion would return (docs/kdiffusion.md lists them).


def _check_n(fn: str, n) -> None:
    try:
        few = n < 1
    except TypeError:  # not a number: the registry's own check names it
        return
    if few:
        raise InvalidInput(f"{fn}: n (the number of steps, the σ before the trailing 0) must be >= 1, got {n}: "
                           f"k-diffusion's {fn}(0, ...) returns [0.], a schedule with no step; pass n >= 1")


# The fix of a refused range end: DPM-Solver's range is a schedule's, a schedule's the model's.
DPM_RANGE_FIX = ("pass the smallest non-zero sigma of the schedule as sigma_min, e.g. sigma_min=sigmas[-2], and its "
                 "largest as sigma_max, e.g. sigma_max=sigmas[0]")
SCHEDULE_RANGE_FIX = ("pass the model's σ range: its smallest non-zero σ as sigma_min (model_wrap.sigma_min, 0.0292 "
                      "for SD 1.x) and its largest as sigma_max (model_wrap.sigma_max, 14.6146 for SD 1.x)")


def _check_sigma_range(fn: str, n, sigma_min, sigma_max) -> tuple[float, float]:
    _check_n(fn, n)
    sigma_min, sigma_max = _range_end("sigma_min", sigma_min, fn), _range_end("sigma_max", sigma_max, fn)
    if sigma_min <= 0:
        what = (" (k-diffusion's get_sigmas_karras then ends in [..., 0, 0]: a step from σ = 0 to 0, on which its "
                "samplers divide by zero)" if fn == "get_sigmas_karras" else "")
        raise InvalidInput(f"{fn}: sigma_min must be > 0, got {sigma_min:g}{what}; the trailing 0 is appended for you: "
                           "pass the model's smallest non-zero σ as sigma_min (model_wrap.sigma_min, 0.0292 for SD 1.x)")
    if sigma_min >= sigma_max:
        got = "equal" if sigma_min == sigma_max else "swapped"
        raise InvalidInput(f"{fn}: need sigma_min < sigma_max (the schedule runs from sigma_max down to sigma_min), got "
                           f"sigma_min={sigma_min:g}, sigma_max={sigma_max:g} ({got}; k-diffusion returns a "
                           f"{'constant' if got == 'equal' else 'rising'} schedule); pass "
                           + ("a smaller sigma_min" if got == "equal" else "them the other way round"))
    return sigma_min, sigma_max


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
    """The Karras et al. (2022) schedule, eq. 5 (the registry's ``karras``), with a trailing 0: k-diffusion's bits,
    computed as it computes them (a ramp in torch's default dtype on the CPU, then moved to ``device``)."""
    n = _check_registry("karras", n, *_check_sigma_range("get_sigmas_karras", n, sigma_min, sigma_max), rho=rho)
    ramp = torch.linspace(0, 1, n)
    try:
        min_inv_rho = sigma_min ** (1 / rho)
        max_inv_rho = sigma_max ** (1 / rho)
    except OverflowError:  # a ρ near 0 (k-diffusion raises Python's OverflowError)
        raise InvalidOption(f"get_sigmas_karras: rho={float(rho):g} raises the σ range to the power 1/rho = "
                            f"{1 / float(rho):g}, past float64's range; use a rho further from 0 (Karras et al. use "
                            "7)") from None
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    if not bool(torch.isfinite(sigmas).all()):  # the power overflows the default dtype (k-diffusion returns inf)
        raise InvalidOption(f"get_sigmas_karras: rho={float(rho):g} gives σ beyond {torch.get_default_dtype()}'s "
                            f"range ({sigmas.tolist()[:3]}...); use a rho further from 0 (Karras et al. use 7)")
    return append_zero(sigmas).to(device)


def get_sigmas_exponential(n, sigma_min, sigma_max, device='cpu'):
    """Uniform in log σ (the registry's ``exponential``), with a trailing 0: k-diffusion's bits, computed as it
    computes them (in torch's default dtype on ``device``)."""
    n = _check_registry("exponential", n, *_check_sigma_range("get_sigmas_exponential", n, sigma_min, sigma_max))
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1., device='cpu'):
    """Polynomial in log σ (the registry's ``polyexponential``), with a trailing 0: k-diffusion's bits, computed as
    it computes them (in torch's default dtype on ``device``)."""
    n = _check_registry("polyexponential", n,
                        *_check_sigma_range("get_sigmas_polyexponential", n, sigma_min, sigma_max), rho=rho)
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def get_sigmas_vp(n, beta_d=19.9, beta_min=0.1, eps_s=1e-3, device='cpu'):
    """The continuous VP schedule, uniform in t ∈ [eps_s, 1] (the registry's ``vp``), with a trailing 0: computed in
    float64 with expm1 and cast to torch's default dtype, where k-diffusion computes exp(·) − 1 in that dtype (up to
    2e-4 relative apart at the smallest σ in float32; docs/kdiffusion.md)."""
    _check_n("get_sigmas_vp", n)
    # 0-d real tensors, which k-diffusion computes with, as the numbers they hold (the other schedules take them too)
    beta_d, beta_min, eps_s = _reals(beta_d=beta_d, beta_min=beta_min, eps_s=eps_s).values()
    try:
        late = eps_s >= 1
    except TypeError:
        late = False
    if late:
        raise InvalidInput(f"get_sigmas_vp: eps_s (the last VP time; t runs from 1 down to eps_s) must be below 1, got "
                           f"{eps_s}: k-diffusion returns the constant schedule [σ(1), ..., σ(1), 0] (steps of length "
                           "0, then one jump to 0); pass a small eps_s, e.g. the default 1e-3")
    return _schedule("vp", n, device, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s)


# ----------------------------------------------------------------------------------------------------
# Step helpers on tensors (k-diffusion's take per-item sigma tensors; the registry's take Python floats)


def _append_dims(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    if sigma.ndim > ndim:
        raise InvalidInput(f"sigma has {sigma.ndim} dims but x has {ndim}: pass one sigma per batch item (shape [B])")
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def to_d(x, sigma, denoised):
    """The PF-ODE slope dx/dσ = (x − D)/σ (Karras et al. 2022, eq. 4), ``sigma`` of shape [B] or a scalar."""
    return steps.to_d(x, _append_dims(torch.as_tensor(sigma), x.ndim), denoised)


def get_ancestral_step(sigma_from, sigma_to, eta=1.):
    """(σ_down, σ_up) of an ancestral step, k-diffusion's arithmetic: σ_up = min(σ_to, η·(σ_to²(σ_from² − σ_to²) /
    σ_from²)^½), σ_down = (σ_to² − σ_up²)^½ (:func:`samplers.core.steps.get_ancestral_step`'s formula), evaluated on
    the arguments as given, so on tensors in their dtype: float32 (80, 0.002) gives σ_down = 0 as in k-diffusion
    (5e-8 in Python floats), and k-diffusion's ``if sigma_down == 0`` branches are taken where it takes them."""
    if not eta:
        return sigma_to, 0.
    tensors = any(isinstance(s, torch.Tensor) for s in (sigma_from, sigma_to))
    if not tensors and (sigma_to ** 2 > sigma_from ** 2 or sigma_from == 0):
        # a rising step (or one from σ = 0) on numbers: k-diffusion's root is complex (or divides by 0) and raises; on
        # tensors its σ_up is min(σ_to, NaN) = σ_to, so σ_down = 0, which numbers get too
        return (sigma_to ** 2 - sigma_to ** 2) ** 0.5, sigma_to
    sigma_up = eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
    if not tensors:
        sigma_up = min(sigma_to, sigma_up)
        return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up
    # k-diffusion's min(σ_to, σ_up) is σ_up where σ_up < σ_to, else σ_to itself (also where σ_up is NaN), whose
    # σ_down is (σ_to² − σ_to²)^½ = 0 exactly: per element, so that σ tensors of any shape keep it
    below = sigma_up < sigma_to
    return (torch.where(below, (sigma_to ** 2 - sigma_up ** 2) ** 0.5, (sigma_to ** 2 - sigma_to ** 2) ** 0.5),
            torch.where(below, sigma_up, sigma_to))


def default_noise_sampler(x):
    """k-diffusion's default noise: a fresh ``torch.randn_like(x)`` from torch's global generator at every call."""
    def noise_sampler(sigma, sigma_next):
        return torch.randn_like(x)
    return noise_sampler


def linear_multistep_coeff(order, t, i, j):
    """The weight of the j-th latest derivative in step i of the order-``order`` linear multistep method on the nodes
    ``t``: ∫_{t_i}^{t_{i+1}} ℓ_j(τ) dτ for the Lagrange basis through t_i, …, t_{i−order+1} (the registry's exact
    ``lms`` weights; k-diffusion integrates the same polynomial by quadrature)."""
    # k-diffusion computes on for j >= order (an integral of a polynomial that is no Lagrange weight) and order 0 (the
    # step length): neither is a weight of the method, so each is refused, as an i beyond the steps is
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
        raise InvalidInput(f"order must be an integer >= 1, got {order!r}: the number of derivatives the step "
                           "combines (1 is Euler's step)")
    if not 0 <= i < len(t) - 1:
        raise InvalidInput(f"i = {i} is no step of t: need 0 <= i < len(t) - 1 = {len(t) - 1} (step i runs from t[i] "
                           "to t[i + 1])")
    if order - 1 > i:
        raise InvalidInput(f"order {order} is too high for step {i}: it needs {order} nodes up to t[{i}]")
    if not 0 <= j < order:
        raise InvalidInput(f"j = {j} is no derivative of an order-{order} step: need 0 <= j < order = {order} (j = 0 "
                           "the latest derivative, j = order - 1 the oldest)")
    nodes = [float(t[k]) for k in range(i - order + 1, i + 2)]
    return lms_coefficients(nodes, order)[-1][j]


# ----------------------------------------------------------------------------------------------------
# k-diffusion's noise and callback conventions around a registry run


class _GlobalDraws:
    """k-diffusion's global-generator noise, drawn where k-diffusion draws it and in the dtype it draws in.

    k-diffusion draws ``torch.randn_like(x)`` at fixed points of a run, also where the draw is then multiplied by 0.
    ``slots`` lists those points in order, each by the σ at which the draw happens (``None``: whichever comes next;
    ``slots=None``: as many as requested). A request from the registry sampler draws, and discards, the slots before
    its own; :meth:`finish` draws the rest (up to ``total`` draws when ``slots`` is None). The run then uses
    k-diffusion's numbers and, once completed, leaves torch's generator where k-diffusion leaves it (a run that a
    callback interrupts has not drawn the slots it would discard, and has drawn its step's own).

    Each draw is made in the dtype k-diffusion draws in (a float64 draw is other numbers than a float32 one and
    advances the generator differently): the input ``x``'s for the ancestral and DPM-Solver samplers
    (``default_noise_sampler(x)``); for the EDM churn of ``sample_euler`` / ``_heun`` / ``_dpm_2`` (slot k drawn in
    step k) that of k-diffusion's running x, from the second step on :func:`_running_dtype` of the schedule
    ``running``. A draw in another dtype than ``x``'s reaches the sampler in the run's state dtype.
    """

    def __init__(self, x: torch.Tensor, slots: list | None, running: torch.Tensor | None = None):
        self.x = x
        self.slots = slots
        self.drawn = 0
        self.later = x.dtype if running is None else _running_dtype(x, running)
        self.state = state_dtype(x.dtype)

    def _draw(self) -> torch.Tensor:
        dtype = self.x.dtype if self.drawn == 0 else self.later
        self.drawn += 1
        # randn_like(x) with x alone, as k-diffusion calls it: A1111 and Forge replace this module's ``torch`` (as
        # they replace k-diffusion's) with a TorchHijack whose randn_like takes nothing else
        draw = torch.randn_like(self.x if dtype == self.x.dtype else self.x.to(dtype))
        return draw if dtype == self.x.dtype else draw.to(self.state)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        if self.slots is None:
            return self._draw()
        ahead = self.slots[self.drawn:]
        slot = next((k for k, key in enumerate(ahead) if key is None or key == float(sigma)), None)
        if slot is None:  # a draw k-diffusion does not make: the slots stay as they are
            return torch.randn_like(self.x)
        for _ in range(slot):
            self._draw()
        return self._draw()

    def finish(self, total: int | None = None) -> None:
        """Draw the slots not yet drawn (or up to ``total`` draws in all)."""
        total = len(self.slots) if total is None else total
        while self.drawn < total:
            self._draw()


def _running_dtype(x: torch.Tensor, sigmas: torch.Tensor) -> torch.dtype:
    """The dtype of k-diffusion's running x from its second step on: its ``to_d`` divides by σ with x's dimensions
    appended (a tensor, not a 0-d one), which promotes x with the schedule (float32 latents on float64 σ: float64;
    float16 on float32: float32). For a model that returns its input's dtype, as k-diffusion's wrappers do."""
    return torch.promote_types(x.dtype, sigmas.dtype)


def _as_noise(noise_sampler: Callable, sigmas: torch.Tensor) -> Callable:
    """A k-diffusion noise sampler, called as k-diffusion calls it: with 0-d tensors of the schedule's dtype and device."""
    def call(sigma, sigma_next):
        return noise_sampler(sigmas.new_tensor(sigma), sigmas.new_tensor(sigma_next))
    return call


class _KCallback:
    """k-diffusion's callback on a registry run. The registry reports the state after each step; k-diffusion reports
    the state its first model call of the step saw (after churn), with the sigmas as 0-d tensors of the schedule.
    ``model`` records that state, and the dtype of that call's output: k-diffusion's ``denoised`` is the model's own
    output, so float16 for a model that returns float16, where the registry reports D in its float32 state.

    ``churn``: a sampler with EDM churn (euler, heun, dpm_2), whose ``sigma_hat`` k-diffusion computes as
    ``sigmas[i] * (gamma + 1)``: on an integer schedule that is a float of torch's default dtype (the other samplers
    report ``sigmas[i]`` itself)."""

    def __init__(self, model, callback, sigmas: torch.Tensor, churn: bool = False):
        self.callback, self.sigmas = callback, sigmas
        self.model = _Recording(model, self)
        self.seen = self.seen_dtype = None
        floating = sigmas.is_floating_point() or sigmas.is_complex()
        self.hat_dtype = sigmas.dtype if floating or not churn else torch.get_default_dtype()

    def note(self, x, denoised=None):
        if self.seen is None:
            self.seen = x
            self.seen_dtype = getattr(denoised, "dtype", None)
        return denoised

    def __call__(self, info: dict) -> None:
        i, sigma = info["i"], self.sigmas[info["i"]]
        if info["sigma_hat"] == info["sigma"]:
            sigma_hat = sigma if sigma.dtype == self.hat_dtype else sigma.to(self.hat_dtype)
        else:
            sigma_hat = torch.tensor(info["sigma_hat"], dtype=self.hat_dtype, device=self.sigmas.device)
        denoised = info["denoised"]
        if self.seen_dtype is not None and isinstance(denoised, torch.Tensor) and denoised.dtype != self.seen_dtype:
            denoised = denoised.to(self.seen_dtype)  # the model's own dtype (a new tensor: never the run's state)
        elif _shares_storage(denoised, info["x"]):
            # a step to σ = 0 whose new state is D itself (heun, dpmpp_2m, the SDE samplers): the callback gets a copy,
            # so that the tensor it keeps (A1111's last_latent) is not the run's result; one pointer check a step, a
            # copy only on that last step
            denoised = denoised.clone()
        self.callback({"x": self.seen, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
        self.seen = self.seen_dtype = None


def _shares_storage(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


class _Recording:
    """``model`` noting the state each call sees; everything else it offers — ``denoise_at``, ``prepare_times``,
    ``supports_infinite_sigma``, its fingerprint — is the model's own, so a run with a callback is checked and runs
    as one without."""

    def __init__(self, model, owner: _KCallback):
        self._model, self._owner = model, owner

    def __call__(self, x, sigma, **extra_args):
        return self._owner.note(x, self._model(x, sigma, **extra_args))

    def __getattr__(self, name: str):
        if name.startswith("_"):  # its own (copying, pickling): never the model's
            raise AttributeError(name)
        attr = getattr(self._model, name)
        if name != "denoise_at":
            return attr

        def denoise_at(x, sigma, **extra_args):
            return self._owner.note(x, attr(x, sigma, **extra_args))
        return denoise_at


# The samplers whose callback's sigma_hat k-diffusion computes as sigmas[i] * (gamma + 1) (EDM churn).
_CHURNING = frozenset({"euler", "heun", "dpm_2"})


def _run(name: str, model, x, sigmas: torch.Tensor, extra_args, callback, disable, **options):
    """The registry sampler ``name`` on k-diffusion's call (``sigmas`` a tensor of at least two values)."""
    fn = registry.SAMPLERS.get(name).fn
    if callback is not None:
        callback = _KCallback(model, callback, sigmas, churn=name in _CHURNING)
        model = callback.model
    model, x = _promoted(name, model, x, sigmas)
    return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)


# The samplers whose running x k-diffusion promotes with a wider schedule: ``to_d`` divides by σ with x's dimensions
# appended, so float16 / bfloat16 latents on a float32 schedule become float32 at the first ``to_d`` (every later model
# call sees float32 x, and the result is float32) — or, marked "last", only in the final Euler step to σ = 0, after
# the last model call (the result is float32, every model call sees the latents' dtype).
_PROMOTING = {"euler": "first", "heun": "first", "dpm_2": "first", "lms": "first", "euler_ancestral": "first",
              "dpm_2_ancestral": "first", "dpmpp_2s_ancestral": "last", "dpmpp_sde": "last"}


def _promoted(name: str, model, x: torch.Tensor, sigmas: torch.Tensor):
    """(model, x) for a registry run that calls the model as k-diffusion does on float16 / bfloat16 latents with a
    wider schedule: the registry runs in k-diffusion's promoted dtype (and so returns it), and :class:`_AsKDiffusion`
    gives the model x in the latents' dtype where k-diffusion's x still has it, and σ in the latents' dtype (k-diffusion
    passes ``sigma * s_in``, ``s_in`` made like the input x). Anything else — float32 / float64 latents, a schedule no
    wider than the latents, a denoiser with its own ``denoise_at`` (``samplers.to_denoiser``'s, which chooses its
    dtype itself), the samplers k-diffusion never promotes — runs as the registry runs it."""
    when = _PROMOTING.get(name)
    if when is None or x.dtype not in (torch.float16, torch.bfloat16) or getattr(model, "denoise_at", None):
        return model, x
    running = _running_dtype(x, sigmas)
    if running == x.dtype or (when == "last" and float(sigmas[-1]) != 0):
        return model, x
    return _AsKDiffusion(model, x.dtype, first_only=when == "first"), x.to(running)


class _AsKDiffusion:
    """``model`` called in k-diffusion's dtypes on half-precision latents (:func:`_promoted`): x in the latents' dtype
    at the first call (``first_only``) or at every call, the run's promoted state after; σ always in the latents'
    dtype. Everything else it offers is the model's own, as for :class:`_Recording`."""

    def __init__(self, model, latents: torch.dtype, first_only: bool):
        self._model, self._latents, self._first_only = model, latents, first_only
        self._calls = 0

    def __call__(self, x, sigma, **extra_args):
        if self._calls == 0 or not self._first_only:
            x = x.to(self._latents)
        self._calls += 1
        return self._model(x, sigma.to(self._latents), **extra_args)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)


def _sigmas_1d(sigmas) -> torch.Tensor:
    """k-diffusion's ``sigmas`` as a tensor; 1-D before anything reads its length (a [1, N] schedule would be a
    silent no-op: one row of N values, "fewer than two σ")."""
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1:
        raise InvalidInput(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}; pass one schedule, e.g. sigmas[0] "
                           "or sigmas.flatten()")
    return sigmas


def _real(name: str, value):
    """A k-diffusion option that k-diffusion computes with (``eta``, ``s_noise``, ``s_churn``, ``r``, ...): a 0-d real
    tensor is read once here, before the run (for a CUDA tensor that read is one host sync), as the number it holds;
    a bool, or a tensor of another shape, is refused naming the fix. Anything else goes on to the sampler's own
    checks."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise InvalidType(f"{name} must be a real number, got {value!r} (a bool, which k-diffusion would compute "
                          f"with as {int(value)}): pass the number, e.g. {name}={float(value)}")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex():
            raise InvalidType(f"{name} must be one real number, got a {value.dtype} tensor of shape "
                              f"{tuple(value.shape)}: pass one value, e.g. {name}=float({name}.flatten()[0])")
        return value.item()
    return value


def _reals(**options) -> dict:
    return {name: _real(name, value) for name, value in options.items()}


def _check_call(model, x, extra_args, callback, disable, noise_sampler=None, seed=None) -> None:
    """k-diffusion's shared arguments, checked by the registry's own checks before anything is drawn or called:
    :func:`samplers.core.run.check_call` (the model, a floating-point tensor ``x``, ``extra_args``, ``callback``,
    ``disable``) and :func:`samplers.core.noise.check` (a callable ``noise_sampler``, not with ``seed``). A noise
    kind's name (``"brownian"``) is the registry's API, not k-diffusion's: refused, naming both fixes; anything else
    that is not callable is refused with k-diffusion's own kinds (the registry's message lists its kinds' names,
    which this module refuses)."""
    check_call(model, x, extra_args, callback, disable)
    _check_noise_sampler(noise_sampler)
    noise_mod.check(noise_sampler, seed, x)


def _check_noise_sampler(noise_sampler) -> None:
    """k-diffusion's ``noise_sampler``: None or a callable, else refused with k-diffusion's kinds of noise sampler.
    Checked before a run's first draw, where an :class:`~samplers.core.a1111_rng.A1111Noise` is rewound to its seeds,
    as every run here rewinds it (A1111 builds a fresh ``ImageRNG`` for every batch), and a
    :class:`~samplers.core.noise.PredrawnNoise` is reset to its first draw, as ``samplers.sample`` resets it."""
    if isinstance(noise_sampler, A1111Noise):
        noise_sampler.rewind()
    if isinstance(noise_sampler, PredrawnNoise):
        noise_sampler.reset()
    if noise_sampler is None or (callable(noise_sampler) and not isinstance(noise_sampler, str)):
        return
    got = (f"noise_sampler={noise_sampler!r}" if isinstance(noise_sampler, str) else
           f"noise_sampler must be callable, got {type(noise_sampler).__name__} {noise_sampler!r:.60}")
    registry_kinds = ("; a noise kind by name is the registry's: samplers.sample(name, model, x, sigmas, "
                      "noise_sampler='brownian')" if isinstance(noise_sampler, str) else "")
    raise InvalidType(f"{got}: k-diffusion's noise_sampler is a callable noise_sampler(sigma, sigma_next) -> Tensor "
                      "shaped like x (e.g. sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max) or "
                      f"sampling.default_noise_sampler(x)), or None for its default{registry_kinds}; or pass seed= "
                      "to the sample_* functions for this library's seeded noise")


def _seeded(x, noise_sampler, seed):
    """For ``seed=`` (this module's one extension of k-diffusion's signatures): this library's per-item seeded noise
    (``noise_sampler`` and ``seed`` were checked by :func:`_check_call`)."""
    return noise_sampler if seed is None else SeededNoise(x, resolve_seeds(seed, x.shape[0]))


def _noise(x, sigmas: torch.Tensor, noise_sampler, seed, slots: list | None, running: bool = False):
    """The noise of a drop-in run: k-diffusion's global-generator draws at ``slots`` (on its running x where
    ``running``, else on the input), the caller's noise sampler (called as k-diffusion calls it), or for ``seed=``
    this library's seeded noise."""
    if noise_sampler is None and seed is None:
        return _GlobalDraws(x, slots, sigmas if running else None)
    return _seeded(x, noise_sampler, seed) if seed is not None else _as_noise(noise_sampler, sigmas)


def _finish(noise, total: int | None = None) -> None:
    if isinstance(noise, _GlobalDraws):
        noise.finish(total)


def _churned(name, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise, seed):
    """A registry sampler with EDM churn, its churn noise drawn as k-diffusion's: ``randn_like(x)`` on its running x
    at every step."""
    _check_call(model, x, extra_args, callback, disable, seed=seed)
    churn = _reals(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
    sigmas = _sigmas_1d(sigmas)
    if len(sigmas) < 2:
        return x
    values = read_sigmas(sigmas)
    if churn["s_churn"] == math.inf:
        # k-diffusion's γ = min(s_churn / n, √2 − 1) caps s_churn = inf at √2 − 1; the registry takes finite numbers
        # only, and s_churn = n gives the same γ exactly (n / n = 1 > √2 − 1)
        churn["s_churn"] = float(len(values) - 1)
    churn = _k_window(sigmas, values, churn, s_tmin, s_tmax)
    noise = _noise(x, sigmas, None, seed, values[:-1], running=True)
    x = _run(name, model, x, sigmas, extra_args, callback, disable, noise_sampler=noise, **churn)
    _finish(noise)
    return x


def _k_window(sigmas: torch.Tensor, values: list, churn: dict, s_tmin, s_tmax) -> dict:
    """``churn`` with the window [s_tmin, s_tmax] that churns at k-diffusion's steps.

    k-diffusion churns at step i when ``s_tmin <= sigmas[i] <= s_tmax``, a comparison of the schedule's 0-d tensor
    with the number, so in the schedule's dtype: s_tmax = 14.6146 is float32 14.61460018 there, and the step from
    sigmas[0] = float32(14.6146) churns, where in Python floats 14.61460018 > 14.6146 (36 % of the scale apart). The
    steps it churns at are found so, all at once (a 0-d tensor bound compared in its dtype promoted with the
    schedule's, as k-diffusion's 0-d by 0-d comparison is), and the registry sampler gets the window from the first
    of them to the last (the schedule is strictly decreasing), which in Python floats churns at exactly those steps;
    none: no churn. So every window k-diffusion runs runs here as it runs there: an empty one (s_tmin > s_tmax,
    which the registry refuses with churn on, or one between two σ) and negative bounds, which select the same steps
    as 0 or an empty window. Bounds that are not real numbers, or NaN, go to the registry's checks."""
    lo, hi = churn["s_tmin"], churn["s_tmax"]
    if not all(isinstance(b, (int, float)) and not math.isnan(b) for b in (lo, hi)):
        return churn
    inside = [s for s, churns in zip(values, _in_window(sigmas, s_tmin, s_tmax)) if churns]
    if inside:
        return {**churn, "s_tmin": min(inside), "s_tmax": max(inside)}
    s_churn = churn["s_churn"]
    if not (isinstance(s_churn, (int, float)) and s_churn >= 0):  # the registry's check names it
        return churn
    return {**churn, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf}


def _in_window(sigmas: torch.Tensor, s_tmin, s_tmax) -> list[bool]:
    """k-diffusion's ``s_tmin <= sigmas[i] <= s_tmax`` for every step i, in the dtype it compares in."""
    def above(bound, below: bool) -> torch.Tensor:
        grid = sigmas[:-1]
        if isinstance(bound, torch.Tensor):
            grid = grid.to(torch.promote_types(bound.dtype, sigmas.dtype))
        else:
            bound = float(bound)
        return grid <= bound if below else grid >= bound
    return (above(s_tmin, False) & above(s_tmax, True)).tolist()


def _ancestral(name, model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, seed, drawn_if):
    """A registry ancestral sampler; by default its noise is k-diffusion's ``randn_like(x)``, drawn at the steps
    σ → σ_next for which ``drawn_if(σ, σ_next, η, split)`` (where k-diffusion draws, whether or not η makes it count;
    ``split``: :func:`_k_split`'s)."""
    _check_call(model, x, extra_args, callback, disable, noise_sampler, seed)
    eta, s_noise = _real("eta", eta), _real("s_noise", s_noise)
    sigmas = _sigmas_1d(sigmas)
    if len(sigmas) < 2:
        return x
    values = read_sigmas(sigmas)
    split = _k_split(name, sigmas, values, eta)
    noise = _noise(x, sigmas, noise_sampler, seed,
                   [s for s, s_next in zip(values, values[1:]) if drawn_if(s, s_next, eta, split)])
    token = ancestral.SPLIT.set(split) if split is not None else None
    try:
        x = _run(name, model, x, sigmas, extra_args, callback, disable, eta=eta, s_noise=s_noise, noise_sampler=noise)
    finally:
        if token is not None:
            ancestral.SPLIT.reset(token)
    _finish(noise)
    return x


def _k_split(name: str, sigmas: torch.Tensor, values: list, eta):
    """For ``dpm_2_ancestral`` / ``dpmpp_2s_ancestral``: the split (σ, σ_next, η) -> (σ_down, σ_up) of their steps
    (:data:`samplers.sde.ancestral.SPLIT`) that takes k-diffusion's branch; None for the other samplers.

    Both take an Euler step to 0 where σ_down == 0, and k-diffusion decides that on its ``get_ancestral_step`` in the
    schedule's dtype: in float32 σ_down = √(σ_next² − σ_up²) is 0 when (σ_next/σ)² is below float32's resolution
    (``get_sigmas_karras(2, 0.002, 80.)``: 5e-8 exactly), and then ``sample_dpm_2_ancestral`` calls the model once and
    adds no noise, ``sample_dpmpp_2s_ancestral`` calls it once and adds its σ_up noise. So the branch is k-diffusion's
    (its σ_down computed for every step at once, in its arithmetic), the values this library's Python floats; where
    only k-diffusion's σ_down is non-zero, that σ_down."""
    if name not in ("dpm_2_ancestral", "dpmpp_2s_ancestral") or not eta:
        return None  # η = 0: σ_down = σ_next, in every dtype
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    k_up = eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5
    k_up = torch.where(k_up < sigma_next, k_up, sigma_next)  # k-diffusion's min(sigma_to, ...)
    k_downs = ((sigma_next ** 2 - k_up ** 2) ** 0.5).tolist()
    table = {}
    for s, s_next, k_down in zip(values, values[1:], k_downs):
        down, up = steps.get_ancestral_step(s, s_next, eta)
        if k_down == 0:
            table[s] = (0.0, up)  # (dpm_2_ancestral's Euler branch draws none, as the registry's)
        else:
            table[s] = (down if down != 0 else k_down, up)

    def split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
        return table.get(sigma) or steps.get_ancestral_step(sigma, sigma_next, eta)
    return split


def _tree(x, sigmas: torch.Tensor, noise_sampler, seed, cpu: bool = False):
    """An SDE sampler's noise: the caller's, or k-diffusion's Brownian tree over the schedule's range, seeded by
    ``seed`` (as A1111 and ComfyUI seed it) or, as k-diffusion does by default, from torch's global generator;
    ``cpu=True`` is ComfyUI's tree on the CPU (its ``sample_dpmpp_2m_sde_heun``)."""
    if noise_sampler is not None:
        return noise_sampler
    refuse_meta_sigmas(sigmas)  # its range is read before the run reads the schedule
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed, cpu=cpu)


def _sde(name, model, x, sigmas, extra_args, callback, disable, noise_sampler, seed, cpu=False, **options):
    """A registry SDE sampler on :func:`_tree` noise."""
    _check_call(model, x, extra_args, callback, disable, noise_sampler, seed)
    options = {**options, **_reals(eta=options["eta"], s_noise=options["s_noise"])}
    sigmas = _sigmas_1d(sigmas)
    noise_sampler = _tree(x, sigmas, noise_sampler, seed, cpu)
    if len(sigmas) < 2:
        return x
    return _run(name, model, x, sigmas, extra_args, callback, disable, noise_sampler=_as_noise(noise_sampler, sigmas),
                **options)


def _steps_to_nonzero(sigma: float, sigma_next: float, eta, split) -> bool:
    return sigma_next > 0


# ----------------------------------------------------------------------------------------------------
# The samplers. Each has k-diffusion's signature plus one keyword-only ``seed`` where it draws noise: ``seed=`` draws
# from this library's per-item seeded generators (or seeds the Brownian tree) instead of torch's global generator.


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                 s_tmax=float('inf'), s_noise=1., *, seed=None):
    """Euler steps with optional EDM churn (Karras et al. 2022, Alg. 2): the registry's ``euler``."""
    return _churned("euler", model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise, seed)


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                           noise_sampler=None, *, seed=None):
    """Ancestral sampling with Euler steps: the registry's ``euler_ancestral``."""
    return _ancestral("euler_ancestral", model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler,
                      seed, _steps_to_nonzero)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                s_tmax=float('inf'), s_noise=1., *, seed=None):
    """Heun's method with optional EDM churn (Karras et al. 2022, Alg. 2): the registry's ``heun``."""
    return _churned("heun", model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise, seed)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                 s_tmax=float('inf'), s_noise=1., *, seed=None):
    """DPM-Solver-2 in σ with optional EDM churn: the registry's ``dpm_2``."""
    return _churned("dpm_2", model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise, seed)


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                           noise_sampler=None, *, seed=None):
    """Ancestral DPM-Solver-2: the registry's ``dpm_2_ancestral``."""
    return _ancestral("dpm_2_ancestral", model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler,
                      seed, _draws_at_dpm_2)


def _draws_at_dpm_2(sigma: float, sigma_next: float, eta, split) -> bool:
    """k-diffusion's ``sample_dpm_2_ancestral`` draws in its second-order branch, taken when its σ_down > 0."""
    return (split or steps.get_ancestral_step)(sigma, sigma_next, eta)[0] > 0


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (variable-step Adams–Bashforth in σ): the registry's ``lms``."""
    _check_call(model, x, extra_args, callback, disable)
    sigmas = _sigmas_1d(sigmas)
    return x if len(sigmas) < 2 else _run("lms", model, x, sigmas, extra_args, callback, disable, order=order)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                              noise_sampler=None, *, seed=None):
    """Ancestral DPM-Solver++(2S): the registry's ``dpmpp_2s_ancestral``."""
    return _ancestral("dpmpp_2s_ancestral", model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                      noise_sampler, seed, _steps_to_nonzero)


class _QueriedAsKDiffusion:
    """``dpmpp_sde``'s noise, asked at the σ k-diffusion asks for: σ = e^(−λ) recomputed from λ = −log σ in the
    schedule's dtype (for σ_i, σ_{i+1} and the intermediate e^(−(λ_i + r·h))). The registry sampler passes exact
    floats; in float32 the two differ by an ulp, which a Brownian tree (resolved to 1e-6 in σ) turns into different
    draws."""

    def __init__(self, noise_sampler, sigmas: torch.Tensor, r: float):
        self.noise_sampler = noise_sampler
        lambdas = sigmas.log().neg()
        self.steps = {}
        for i in range(len(sigmas) - 1):
            h = lambdas[i + 1] - lambdas[i]
            self.steps[float(sigmas[i])] = (float(sigmas[i + 1]), *(lam.neg().exp() for lam in
                                                                    (lambdas[i], lambdas[i + 1], lambdas[i] + h * r)))
        # r = 1: the stage point is the step's end, so the registry asks (σ_i, σ_{i+1}) twice a step; k-diffusion's
        # first ask is e^(−(λ_i + r·h)) (an ulp from σ_{i+1} in float32), its second e^(−λ_{i+1})
        self.stage_is_end = r == 1
        self.asked: set = set()

    def __call__(self, sigma, sigma_next):
        key = float(sigma)
        step_end, sigma, at_end, at_r = self.steps[key]
        if float(sigma_next) != step_end:
            return self.noise_sampler(sigma, at_r)
        first = self.stage_is_end and key not in self.asked
        self.asked.add(key)
        return self.noise_sampler(sigma, at_r if first else at_end)


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                     noise_sampler=None, r=1 / 2, *, seed=None):
    """Stochastic DPM-Solver++ (2S-type, r = 1/2): the registry's ``dpmpp_sde``."""
    return _dpmpp_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, seed)


def _dpmpp_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, seed, cpu=False):
    _check_call(model, x, extra_args, callback, disable, noise_sampler, seed)
    eta, s_noise, r = _real("eta", eta), _real("s_noise", s_noise), _real("r", r)
    sigmas = _sigmas_1d(sigmas)
    noise_sampler = _tree(x, sigmas, noise_sampler, seed, cpu)
    if len(sigmas) < 2:
        return x
    return _run("dpmpp_sde", model, x, sigmas, extra_args, callback, disable, eta=eta, s_noise=s_noise, r=r,
                noise_sampler=_QueriedAsKDiffusion(noise_sampler, sigmas, r))


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): the registry's ``dpmpp_2m``."""
    _check_call(model, x, extra_args, callback, disable)
    sigmas = _sigmas_1d(sigmas)
    return x if len(sigmas) < 2 else _run("dpmpp_2m", model, x, sigmas, extra_args, callback, disable)


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                        noise_sampler=None, solver_type='midpoint', *, seed=None):
    """SDE-DPM-Solver++(2M): the registry's ``dpmpp_2m_sde``."""
    steps.check_solver_type(solver_type)
    return _sde("dpmpp_2m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler, seed, eta=eta,
                s_noise=s_noise, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                        noise_sampler=None, *, seed=None):
    """SDE-DPM-Solver++(3M): the registry's ``dpmpp_3m_sde``."""
    return _sde("dpmpp_3m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler, seed, eta=eta,
                s_noise=s_noise)


# ----------------------------------------------------------------------------------------------------
# ComfyUI's own Brownian-tree functions (comfy/k_diffusion/sampling.py; k-diffusion 0.1.1 has none of them), with
# ComfyUI's signatures and its tree: ``BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=extra_args.get("seed",
# None), cpu=...)`` where no noise_sampler is passed (cpu=False for the *_gpu ones, True for sample_dpmpp_2m_sde_heun),
# the rest k-diffusion's function of the same family (ComfyUI's for k-diffusion's models). Before these, the names
# resolved to the registry labels, whose tree took its seed from ``seed=`` or the global generator and ignored
# ComfyUI's ``extra_args["seed"]`` (another image than ComfyUI's), and whose options were keyword-only.

COMFYUI_TREE_FUNCTIONS = ("sample_dpmpp_sde_gpu", "sample_dpmpp_2m_sde_gpu", "sample_dpmpp_2m_sde_heun",
                          "sample_dpmpp_2m_sde_heun_gpu", "sample_dpmpp_3m_sde_gpu")


def _comfyui_seed(fn: str, model, x, extra_args, callback, disable, noise_sampler):
    """The seed ComfyUI's ``fn`` gives its Brownian tree: ``extra_args.get("seed", None)`` (None: one draw from torch's
    global generator, as k-diffusion's tree), read only where no ``noise_sampler`` is passed, as ComfyUI reads it;
    checked as a tree's seed, the refusal naming where it came from."""
    _check_call(model, x, extra_args, callback, disable, noise_sampler)
    if noise_sampler is not None or extra_args is None or extra_args.get("seed") is None:
        return None
    seed = extra_args["seed"]
    try:
        tree_seeds(seed, x.shape[0])
    except (InvalidInput, InvalidType) as error:
        raise type(error)(f"{fn}: extra_args['seed'] seeds its Brownian tree, as ComfyUI's does: {error}") from None
    return seed


@torch.no_grad()
def sample_dpmpp_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                         noise_sampler=None, r=1 / 2):
    """ComfyUI's ``sample_dpmpp_sde_gpu``: :func:`sample_dpmpp_sde` on a tree on ``x``'s device seeded by
    ``extra_args["seed"]``."""
    seed = _comfyui_seed("sample_dpmpp_sde_gpu", model, x, extra_args, callback, disable, noise_sampler)
    return _dpmpp_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, seed)


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                            noise_sampler=None, solver_type='midpoint'):
    """ComfyUI's ``sample_dpmpp_2m_sde_gpu``: :func:`sample_dpmpp_2m_sde` on a tree on ``x``'s device seeded by
    ``extra_args["seed"]``."""
    return _comfyui_2m_sde("sample_dpmpp_2m_sde_gpu", model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                           noise_sampler, solver_type, cpu=False)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                             noise_sampler=None, solver_type='heun'):
    """ComfyUI's ``sample_dpmpp_2m_sde_heun``: :func:`sample_dpmpp_2m_sde` with ``solver_type='heun'`` on a tree on
    the CPU (ComfyUI's ``cpu=True``) seeded by ``extra_args["seed"]``."""
    return _comfyui_2m_sde("sample_dpmpp_2m_sde_heun", model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                           noise_sampler, solver_type, cpu=True)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                                 noise_sampler=None, solver_type='heun'):
    """ComfyUI's ``sample_dpmpp_2m_sde_heun_gpu``: :func:`sample_dpmpp_2m_sde` with ``solver_type='heun'`` on a tree
    on ``x``'s device seeded by ``extra_args["seed"]``."""
    return _comfyui_2m_sde("sample_dpmpp_2m_sde_heun_gpu", model, x, sigmas, extra_args, callback, disable, eta,
                           s_noise, noise_sampler, solver_type, cpu=False)


def _comfyui_2m_sde(fn, model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, solver_type,
                    cpu: bool):
    steps.check_solver_type(solver_type)
    seed = _comfyui_seed(fn, model, x, extra_args, callback, disable, noise_sampler)
    return _sde("dpmpp_2m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler, seed, cpu, eta=eta,
                s_noise=s_noise, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_3m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                            noise_sampler=None):
    """ComfyUI's ``sample_dpmpp_3m_sde_gpu``: :func:`sample_dpmpp_3m_sde` on a tree on ``x``'s device seeded by
    ``extra_args["seed"]``."""
    seed = _comfyui_seed("sample_dpmpp_3m_sde_gpu", model, x, extra_args, callback, disable, noise_sampler)
    return _sde("dpmpp_3m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler, seed, eta=eta,
                s_noise=s_noise)


# ----------------------------------------------------------------------------------------------------
# DPM-Solver fast / adaptive: a σ range instead of a schedule (k-diffusion's own signature)


class DPMSolver(torch.nn.Module):
    """k-diffusion's DPM-Solver object (Lu et al. 2022, arXiv:2206.00927) on a k-diffusion model wrapper.

    The steps and the fast / adaptive loops are :mod:`samplers.ode.singlestep`'s (those of the registry's
    ``dpm_fast`` and ``dpm_adaptive``); this class gives them k-diffusion's interface: times t = −log σ as tensors,
    ``eps_cache`` dicts, ``eps_callback()`` after every model call and ``info_callback(info)`` once per step.
    """

    def __init__(self, model, extra_args=None, eps_callback=None, info_callback=None):
        super().__init__()
        self.model = model
        self.extra_args = {} if extra_args is None else extra_args
        self.eps_callback = eps_callback
        self.info_callback = info_callback

    def t(self, sigma):
        """λ = −log σ."""
        return sigma.log().neg()

    def sigma(self, t):
        """σ = e^(−t)."""
        return t.neg().exp()

    def _denoise(self, x, sigma: float):
        return self.model(x, x.new_full((x.shape[0],), sigma), **self.extra_args)

    def _solver(self) -> EpsSolver:
        return EpsSolver(self._denoise, on_call=lambda *call: self.eps_callback and self.eps_callback())

    def eps(self, eps_cache, key, x, t, *args, **kwargs):
        """(ε(x, t), cache): the noise prediction (x − D)/σ at t, taken from ``eps_cache[key]`` when it is there."""
        if key in eps_cache:
            return eps_cache[key], eps_cache
        sigma = self.sigma(t)
        denoised = self.model(x, sigma * x.new_ones([x.shape[0]]), *args, **self.extra_args, **kwargs)
        if self.eps_callback is not None:
            self.eps_callback()
        eps = steps.to_d(x, sigma, denoised)
        return eps, {key: eps, **eps_cache}

    def dpm_solver_1_step(self, x, t, t_next, eps_cache=None):
        """DPM-Solver-1 (DDIM) from t to t_next; returns (x_next, eps_cache)."""
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, 'eps', x, t)
        return self._solver().step1(x, float(t), float(t_next), eps), eps_cache

    def dpm_solver_2_step(self, x, t, t_next, r1=1 / 2, eps_cache=None):
        """DPM-Solver-2 from t to t_next; returns (x_next, eps_cache)."""
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, 'eps', x, t)
        x, eps_r1 = self._solver().step2(x, float(t), float(t_next), eps, r1, eps_cache.get('eps_r1'))
        return x, {'eps_r1': eps_r1, **eps_cache}

    def dpm_solver_3_step(self, x, t, t_next, r1=1 / 3, r2=2 / 3, eps_cache=None):
        """DPM-Solver-3 from t to t_next; returns (x_next, eps_cache)."""
        eps, eps_cache = self.eps({} if eps_cache is None else eps_cache, 'eps', x, t)
        x, eps_r1, eps_r2 = self._solver().step3(x, float(t), float(t_next), eps, r1, r2, eps_cache.get('eps_r1'),
                                                 eps_cache.get('eps_r2'))
        return x, {'eps_r1': eps_r1, 'eps_r2': eps_r2, **eps_cache}

    def _noise(self, x, noise_sampler, like, slots):
        _check_noise_sampler(noise_sampler)  # before the first model call (k-diffusion: a TypeError at its first draw)
        if noise_sampler is None:
            return _GlobalDraws(x, slots)

        def at_sigma_of_time(sigma, sigma_next):
            # k-diffusion asks for σ = e^(−t) computed from its times t in their dtype: so do we (in float32 the
            # exact σ rounds differently by an ulp, which a Brownian tree resolves)
            return noise_sampler(*(like.new_tensor(-math.log(s)).neg().exp() for s in (sigma, sigma_next)))
        return at_sigma_of_time

    def dpm_solver_fast(self, x, t_start, t_end, nfe, eta=0., s_noise=1., noise_sampler=None):
        """DPM-Solver-fast from t_start to t_end with ``nfe`` model calls (:func:`samplers.ode.singlestep.solve_fast`)."""
        nfe = _check_nfe(nfe)
        _check_times(t_start, t_end)
        if float(t_start) == float(t_end):  # k-diffusion: NaN for nfe >= 4 (a step of length 0 divides by it)
            raise InvalidInput(f"t_start and t_end must differ (DPM-Solver-fast splits [t_start, t_end] into steps), got "
                               f"both {float(t_start):g}: pass t_start = self.t(sigma_max) and t_end = "
                               "self.t(sigma_min) with sigma_min < sigma_max")
        _check_resolvable(t_start, t_end, nfe, torch.get_default_dtype())
        # k-diffusion's grid, whose dtype (torch's default, whatever t_start's) its callback's times and the σ it
        # asks a noise sampler for take
        grid = torch.linspace(t_start, t_end, len(fast_orders(nfe)) + 1, device=x.device)
        like = grid[0]
        noise = self._noise(x, noise_sampler, like, [None] * len(fast_orders(nfe)))

        def on_step(i, x_i, t, denoised):
            if self.info_callback is not None:
                self.info_callback({'x': x_i, 'i': i, 't': like.new_tensor(t), 't_up': like.new_tensor(t),
                                    'denoised': denoised})

        times = grid.tolist()
        _check_grid(times, nfe)
        x = solve_fast(self._solver(), x, float(t_start), float(t_end), nfe, eta=eta, s_noise=s_noise,
                       noise_sampler=noise, times=times, on_step=on_step)
        if isinstance(noise, _GlobalDraws):
            noise.finish()
        return _finite_result(x, "DPM-Solver-fast", t_start, t_end)

    def dpm_solver_adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.,
                            icoeff=1., dcoeff=0., accept_safety=0.81, eta=0., s_noise=1., noise_sampler=None):
        """DPM-Solver-12 / 23 from t_start to t_end (:func:`samplers.ode.singlestep.solve_adaptive`, with k-diffusion's
        error norm over the whole batch); returns (x, info) with info's ``steps``, ``nfe``, ``n_accept``,
        ``n_reject``."""
        check_adaptive(order, "batch")
        _check_times(t_start, t_end)
        like = torch.as_tensor(t_start)
        h_init = abs(h_init) * (1 if t_end > t_start else -1)
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {'steps': 0, 'nfe': 0, 'n_accept': 0, 'n_reject': 0}
        noise = self._noise(x, noise_sampler, like, None)

        def on_attempt(x_i, s, denoised, error, accepted):
            info['n_accept' if accepted else 'n_reject'] += 1
            info['nfe'] += order
            info['steps'] += 1
            if self.info_callback is not None:
                self.info_callback({'x': x_i, 'i': info['steps'] - 1, 't': like.new_tensor(s),
                                    't_up': like.new_tensor(s), 'denoised': denoised, 'error': error, 'h': pid.h,
                                    **info})

        x, _ = solve_adaptive(self._solver(), x, x, float(t_start), float(t_end), pid, order=order, rtol=rtol,
                              atol=atol, eta=eta, s_noise=s_noise, noise_sampler=noise, norm="batch", t_tol=1e-5,
                              round_time=lambda t: float(like.new_tensor(t)), on_attempt=on_attempt)
        if isinstance(noise, _GlobalDraws):
            noise.finish(info['n_accept'])  # k-diffusion draws at every accepted step
        return x, info


# The memory a DPM-Solver-fast grid takes per step, with room: its float32 time and the Python float and order the
# loop reads, measured at 68.5 bytes at its peak (k-diffusion takes any n; n = 10**9 built a grid of 3·10**8 times,
# 22 GB, before its first step).
FAST_GRID_BYTES_PER_STEP = 96


def _check_nfe(nfe) -> int:
    """DPM-Solver-fast's ``n``: an integer >= 1 (any size, as k-diffusion takes it) whose grid fits in memory,
    checked before the grid is built or the model called."""
    nfe = integer("n (the model calls of DPM-Solver-fast)", nfe, lo=1)
    steps = nfe // 3 + 1  # len(fast_orders(nfe)), without building it
    check_allocation(FAST_GRID_BYTES_PER_STEP * (steps + 1), f"DPM-Solver-fast's grid of {steps} steps (n = {nfe})",
                     "cpu", "pass a smaller n: DPM-Solver-fast is accurate with 10 to 50")
    return nfe


def _check_resolvable(t_start, t_end, nfe: int, dtype: torch.dtype) -> None:
    """Before the grid is built: more steps than ``dtype`` holds values between the ends, so that two neighbouring
    times are certainly equal (:func:`_check_grid` then checks the grid itself)."""
    kinds = {torch.float32: (np.float32, np.int32, 2**31), torch.float64: (np.float64, np.int64, 2**63)}
    if dtype not in kinds:
        return
    real, ints, top = kinds[dtype]

    def ordinal(v) -> int:  # the float's rank among the dtype's values (its bits as a sign-magnitude integer)
        i = int(np.array(float(v), real).view(ints))
        return i if i >= 0 else -(i + top)

    steps = nfe // 3 + 1
    if steps > abs(ordinal(t_end) - ordinal(t_start)):
        raise InvalidInput(f"n = {nfe} model calls split [t_start, t_end] = [{float(t_start):.9g}, {float(t_end):.9g}] "
                           f"into {steps} steps, more than {dtype} holds values between them, so neighbouring times "
                           "are equal (a step of length 0); pass a smaller n, or a wider range (sigma_min further "
                           "from sigma_max)")


def _check_times(t_start, t_end) -> None:
    """DPMSolver's times t = −log σ are finite: at σ = inf (t = −inf) k-diffusion's fast grid is linspace(−inf, …),
    whose times are NaN (it calls the model at σ = NaN and returns NaN), and its adaptive step never leaves −inf."""
    for name, t in (("t_start", t_start), ("t_end", t_end)):
        if not math.isfinite(float(t)):
            raise InvalidInput(f"{name} must be finite, got {float(t):g} (t = −log σ, so σ = {math.exp(-float(t)):g}): "
                               "pass self.t(sigma) of a finite σ > 0, e.g. the schedule's first finite σ as the start")


def _finite_result(x: torch.Tensor, name: str, t_start, t_end) -> torch.Tensor:
    """``x`` checked finite with one read at the end of the run, as the registry's runs check theirs
    (:func:`samplers.core.run.to_result_dtype`): k-diffusion returns the NaN."""
    def nonfinite() -> NonFiniteError:
        return NonFiniteError(
            f"{name} produced NaN/Inf on its run from σ = {math.exp(-float(t_start)):.4g} to "
            f"{math.exp(-float(t_end)):.4g}: the model returned NaN/Inf at some step; common causes are fp16 overflow "
            "in the model (try bfloat16 or float32) or a model that cannot be evaluated on that σ range")
    return to_result_dtype(x, x.dtype, name, math.exp(-float(t_end)), nonfinite)


def _check_grid(times: list, nfe: int) -> None:
    """Every step of the grid has a length: a range too narrow for ``nfe`` calls in the grid's dtype rounds
    neighbouring times to the same value, on which the steps divide by zero (after the model calls before it)."""
    for i in range(len(times) - 1):
        if times[i] == times[i + 1]:
            raise InvalidInput(f"n = {nfe} model calls split [t_start, t_end] = [{times[0]:.9g}, {times[-1]:.9g}] into "
                               f"steps shorter than its dtype resolves (times {i} and {i + 1} are both "
                               f"{times[i]:.9g}); pass a smaller n, or a wider range (sigma_min further from "
                               "sigma_max)")


def _dpm_solver(model, extra_args, callback, bar) -> DPMSolver:
    solver = DPMSolver(model, extra_args, eps_callback=bar.update)
    if callback is not None:
        solver.info_callback = lambda info: callback({'sigma': solver.sigma(info['t']),
                                                      'sigma_hat': solver.sigma(info['t_up']), **info})
    return solver


def _range_end(name: str, value, schedule: str | None = None) -> float:
    """A range end of k-diffusion's — DPM-Solver's range, or the schedule function ``schedule``'s —: a real number
    (a numpy scalar or a 0-d tensor such as ``sigmas[-2]`` counts as the number it holds), read by the schedules' own
    check (:func:`samplers.schedules.base.range_end`) and refused with the drop-in's fix: sigma_min and sigma_max are
    required arguments here, so the registry's "leave it out for the model's own" does not apply."""
    where, like, fix = ((f"{schedule}: ", "a float, or a 0-d tensor", SCHEDULE_RANGE_FIX) if schedule else
                        ("", "a float, or a 0-d tensor such as sigmas[-2]", DPM_RANGE_FIX))
    try:
        return range_end(name, value)
    except InvalidType:
        raise InvalidType(f"{where}{name} must be a number ({like}), got {value!r} ({type(value).__name__}): "
                          f"{fix}") from None
    except InvalidInput:  # NaN: the right type, a value that is no σ
        raise InvalidInput(f"{where}{name} must be a number, got nan (NaN is no σ; {name} is a required argument "
                           f"here): {fix}") from None


def _check_range(sigma_min, sigma_max) -> None:
    sigma_min, sigma_max = _range_end("sigma_min", sigma_min), _range_end("sigma_max", sigma_max)
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if not math.isfinite(value):
            # k-diffusion: sample_dpm_fast's grid is linspace(−inf, …), so it calls the model at σ = NaN and returns
            # NaN; sample_dpm_adaptive's steps never leave λ = −inf
            raise InvalidInput(f"{name} must be finite, got {value:g}: the run goes from one end to the other (in "
                               "DPM-Solver's λ = −log σ, which σ = inf puts at −inf); pass the schedule's smallest "
                               "non-zero σ and its first finite σ, e.g. sigma_min=sigmas[-2], sigma_max=sigmas[0] "
                               "(sigmas[1] where sigmas[0] is inf)")
    if sigma_min <= 0 or sigma_max <= 0:
        raise InvalidInput(f"sigma_min and sigma_max must be > 0, got {sigma_min:g} and {sigma_max:g} "
                           "(pass the smallest non-zero sigma of the schedule, not its trailing 0: e.g. "
                           "sigma_min=sigmas[-2])")
    if sigma_min == sigma_max:
        # k-diffusion: sample_dpm_fast returns NaN for n >= 4 (after the model calls), the input for n < 4;
        # sample_dpm_adaptive returns the input with no step. sigma_min > sigma_max integrates towards noise (η = 0),
        # as k-diffusion does.
        raise InvalidInput(f"sigma_min and sigma_max must differ (DPM-Solver integrates from sigma_max down to "
                           f"sigma_min), got both {float(sigma_min):g}: pass the schedule's smallest non-zero sigma as "
                           "sigma_min and its largest as sigma_max, e.g. sigma_min=sigmas[-2], sigma_max=sigmas[0]")


def _check_table(model, x, sigma_min, sigma_max) -> None:
    """A denoiser on a timestep table (``samplers.to_denoiser`` of a ``VPDiscrete``, through its wrappers) refuses a
    range that leaves it, before any model call, as the registry's runs do (``prepare_times``); another model (a
    k-diffusion wrapper, whose own table clamps as k-diffusion does) is left alone."""
    prepare_times(model, [float(sigma_max), float(sigma_min)], x.shape[0], state_dtype(x.dtype), x.device)


def _registry_rules(name: str, x, **options) -> None:
    """The registry sampler ``name``'s rules for ``options`` and its finite start, before any model call: these
    entry points call its solver directly (an accept_safety above 1 never accepts a step; s_noise = −1 would draw no
    noise, where k-diffusion's scales it by −1)."""
    from ..core.registry import SAMPLERS
    from ..core.run import check_start
    from ..core.validate import check_options

    check_options(SAMPLERS.get(name), options)
    check_start(x)


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0.,
                    s_noise=1., noise_sampler=None, *, seed=None):
    """DPM-Solver-fast from σ_max to σ_min with ``n`` model calls (Lu et al. 2022, §3.4); no final denoise."""
    _check_call(model, x, extra_args, callback, disable, noise_sampler, seed)
    _check_range(sigma_min, sigma_max)
    n = _check_nfe(n)
    eta, s_noise = _real("eta", eta), _real("s_noise", s_noise)
    _registry_rules("dpm_fast", x, eta=eta, s_noise=s_noise)
    _check_table(model, x, sigma_min, sigma_max)
    noise_sampler = _seeded(x, noise_sampler, seed)
    with tqdm(total=n, disable=disable) as bar:
        solver = _dpm_solver(model, extra_args, callback, bar)
        return solver.dpm_solver_fast(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)),
                                      n, eta, s_noise, noise_sampler)


def _check_return_info(return_info) -> None:
    """``return_info`` by ``disable``'s rule (:func:`samplers.core.run.check_call`): k-diffusion reads its truth
    (``if return_info``), so a bool, an integer, a numpy bool or None; anything else — ``"False"``, a true string that
    returned the tuple — is refused rather than read as true."""
    if return_info is not None and not isinstance(return_info, (bool, numbers.Integral, np.bool_)):
        raise InvalidType(f"return_info must be True or False (or an integer or numpy bool, read as k-diffusion reads "
                          f"it), got {return_info!r} ({type(return_info).__name__}): pass return_info=True for "
                          "(x, info), False for x")


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, disable=None, order=3,
                        rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0., icoeff=1., dcoeff=0., accept_safety=0.81,
                        eta=0., s_noise=1., noise_sampler=None, return_info=False, *, seed=None):
    """DPM-Solver-12 / 23 with adaptive steps from σ_max to σ_min (Lu et al. 2022, §3.4); no final denoise."""
    _check_call(model, x, extra_args, callback, disable, noise_sampler, seed)
    _check_return_info(return_info)
    _check_range(sigma_min, sigma_max)
    rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise = _reals(
        rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety,
        eta=eta, s_noise=s_noise).values()
    _registry_rules("dpm_adaptive", x, order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff,
                    dcoeff=dcoeff, accept_safety=accept_safety, eta=eta, s_noise=s_noise)
    _check_table(model, x, sigma_min, sigma_max)
    noise_sampler = _seeded(x, noise_sampler, seed)
    with tqdm(disable=disable) as bar:
        solver = _dpm_solver(model, extra_args, callback, bar)
        x, info = solver.dpm_solver_adaptive(x, solver.t(torch.as_tensor(sigma_max)),
                                             solver.t(torch.as_tensor(sigma_min)), order, rtol, atol, h_init, pcoeff,
                                             icoeff, dcoeff, accept_safety, eta, s_noise, noise_sampler)
    return (x, info) if return_info else x


# ----------------------------------------------------------------------------------------------------
# Likelihood


@torch.no_grad()
def log_likelihood(model, x, sigma_min, sigma_max, extra_args=None, atol=1e-4, rtol=1e-4):
    """log p(x) at σ_min by the instantaneous change of variables along the PF-ODE (Chen et al. 2018; Song et al.
    2021, App. D.2), and ``{"fevals": n}``.

    d log p(x_σ)/dσ = −tr(∂f/∂x) for dx/dσ = f = (x − D)/σ, so log p_σmin(x) = log N(x_σmax; 0, σ_max²) +
    ∫ tr(∂f/∂x) dσ over [σ_min, σ_max], integrated with x by torchdiffeq's dopri5. The trace is Hutchinson's
    estimate vᵀ(∂f/∂x)v with one Rademacher probe v, drawn from torch's global generator as k-diffusion draws it.
    """
    from torchdiffeq import odeint

    _check_range(sigma_min, sigma_max)  # finite ends: the integral runs from sigma_min to sigma_max
    atol = real("atol", atol, lo=0.0, lo_open=True)
    rtol = real("rtol", rtol, lo=0.0, lo_open=True)
    extra_args = {} if extra_args is None else extra_args
    probe = torch.randint_like(x, 2) * 2 - 1
    fevals = 0

    def flow(sigma, state):
        nonlocal fevals
        with torch.enable_grad():
            x_sigma = state[0].detach().requires_grad_()
            d = to_d(x_sigma, sigma, model(x_sigma, sigma * x_sigma.new_ones([x_sigma.shape[0]]), **extra_args))
            fevals += 1
            vjp = torch.autograd.grad((d * probe).sum(), x_sigma)[0]
        return d.detach(), (probe * vjp).flatten(1).sum(1)

    path = odeint(flow, (x, x.new_zeros([x.shape[0]])), x.new_tensor([sigma_min, sigma_max]), atol=atol, rtol=rtol,
                  method='dopri5')
    x_max, trace_integral = path[0][-1], path[1][-1]
    prior = torch.distributions.Normal(0, sigma_max).log_prob(x_max).flatten(1).sum(1)
    return prior + trace_integral, {'fevals': fevals}


# ----------------------------------------------------------------------------------------------------
# Every other registered sampler, and the labels of other tools


def get_sampler(name: str) -> Callable:
    """The sampler for a registry name or alias, an A1111 / Forge label, or a ComfyUI KSampler name
    (:mod:`samplers.core.names`): a label that stands for a sampler with options (``"DPM++ 2M SDE Heun"`` is
    ``dpmpp_2m_sde`` with ``solver_type="heun"``) returns that sampler with those options bound."""
    return names.get(name)


def default_schedule(name: str) -> str | None:
    """The schedule a label implies (``"a1111:Karras"`` for A1111's "DPM++ 2M": A1111's Karras type, which
    ``samplers.get_sigmas`` builds on the model's float32 table as A1111 does), or None for the caller's / model's
    own."""
    return names.resolve(name).schedule


def sampler_names() -> list[str]:
    """``sample_<name>`` for every registered sampler, as k-diffusion callers look them up."""
    return ["sample_" + name for name in registry.available()]


class _UnavailableSampler(Unavailable, AttributeError):
    """A ``sample_<name>`` this library knows and refuses (ComfyUI's ``sample_euler_cfg_pp``): an AttributeError, so
    that ``hasattr`` / ``getattr(module, name, default)`` (how A1111 probes ``k_diffusion.sampling``) answer False /
    the default, and still :class:`~samplers.core.errors.Unavailable`, whose message says what to use instead."""


# ComfyUI's functions that the resolver's ComfyUI labels run as ComfyUI's function does, by name and positionally
# (no noise, and ComfyUI's parameters as the label's options): the labels themselves are these attributes.
_COMFYUI_AS_LABELS = frozenset({"sample_ipndm", "sample_ipndm_v", "sample_deis"})


def _comfyui_function(attr: str, found: names.Label) -> Callable:
    """``sample_<ComfyUI name>``: ComfyUI's function where this module has it (:data:`COMFYUI_TREE_FUNCTIONS`, the
    labels of :data:`_COMFYUI_AS_LABELS`); any other ComfyUI name is refused, since its label's noise is seeded by
    ``seed=`` where ComfyUI's function seeds it by ``extra_args["seed"]``, and its options are keyword-only where
    ComfyUI's are positional: samplers.interop.comfyui runs it as ComfyUI's KSampler does."""
    own = globals().get("sample_" + found.label)
    if own is not None and own.__name__ in COMFYUI_TREE_FUNCTIONS:
        return own
    if found.label in _COMFYUI_AS_LABELS:
        return names.get(found.label)
    raise _UnavailableSampler(
        f"module {__name__!r} has no attribute {attr!r}: {found.label!r} is ComfyUI's sampler, which k-diffusion "
        "0.1.1 lacks and this module does not have as ComfyUI's function (its positional signature, its noise seeded "
        f"by extra_args['seed']); run it as ComfyUI does with samplers.interop.comfyui.ksampler_function("
        f"{'comfyui:' + found.label!r})(model, x, sigmas, extra_args=extra_args, callback=callback), or by this "
        f"library's conventions with samplers.sample({'comfyui:' + found.label!r}, model, x, sigmas, seed=...)")


def __getattr__(attr: str):
    # Module-level __getattr__ (PEP 562): evaluated at lookup, so later registrations appear too.
    if attr.startswith("sample_"):
        # the function's own name first (ComfyUI's sample_ipndm / sample_ipndm_v / sample_deis, which k-diffusion
        # lacks, are ComfyUI's rules), else the sampler it names; a ComfyUI name is ComfyUI's function or refused
        refused = None
        for name in (attr, attr[len("sample_"):]):
            try:
                found = names.resolve(name)
                return _comfyui_function(attr, found) if found.source == "comfyui" else names.get(name)
            except Unavailable as error:  # a name the resolver knows and refuses
                refused = refused or error
            except (KeyError, ValueError):
                pass
        if refused is not None:
            if isinstance(refused, _UnavailableSampler):
                raise refused
            raise _UnavailableSampler(f"module {__name__!r} has no attribute {attr!r}: {refused}") from refused
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(sampler_names()))


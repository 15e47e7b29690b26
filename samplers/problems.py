"""Analytic test problems: Gaussian-mixture data with an exact denoiser, exact samples and a reference
PF-ODE endpoint. Public, so users can check their own samplers on a problem whose answer is known.

    gm = GaussianMixture.default(shape=(4, 4, 4))
    x0 = samplers.sample("heun", gm.denoiser, gm.noise(8, seed=0) * 80, sigmas)
    error = (x0 - gm.ode_endpoint(gm.noise(8, seed=0) * 80, 80.0)).abs().max()

Data: x0 ~ Σ_k π_k N(μ_k, s_k² I) on a flattened latent of any shape. With x = x0 + σ·n the posterior is
again a mixture, so D(x, σ) = E[x0 | x] is exact. The reference endpoint integrates the PF-ODE with
torchdiffeq's dopri5 in float64 at tight tolerance in the VP angle φ = arctan σ, where the ODE is regular
from φ = π/2 (σ = inf) down to φ = 0 (σ = 0):

    dy/dφ = (y·cos φ − D(y / cos φ, tan φ)) / sin φ,   y = x·cos φ = x / √(1 + σ²).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .core import conversion
from .core.native import NoiseSchedule
from .core.errors import InvalidInput, InvalidOption, InvalidType, NonFiniteError, StepLimitError
from .core.seeds import _one_seed
from .core.validate import integer, positive, real


# the most model evaluations one reference solve may make: ~20x the tightest solve the project runs (dopri5 at
# rtol = atol = 1e-10 on a Gaussian mixture, ~600), so that a solve which cannot finish (a model discontinuous in σ;
# under ``python -O`` torchdiffeq's step-size underflow check is gone and its loop would never end) stops
MAX_EVALS = 10_000


def pf_ode_solution(denoiser: Callable, x: torch.Tensor, sigma_start: float, sigma_end: float = 0.0, *,
                    rtol: float = 1e-7, atol: float = 1e-7, method: str = "dopri5",
                    max_evals: int = MAX_EVALS) -> torch.Tensor:
    """The PF-ODE state at ``sigma_end`` (default the endpoint, σ = 0) from ``x`` at ``sigma_start``, by an
    adaptive torchdiffeq solve: the one reference solver of the project (tests, benchmarks, fits).

    Solved in the VP angle φ = arctan σ, where the ODE is regular from φ = π/2 (σ = inf, ``x`` the unit
    noise) down to φ = 0 (σ = 0): dy/dφ = (y·cos φ − D(y / cos φ, tan φ)) / sin φ with y = x·cos φ.
    ``denoiser`` is a canonical D(x, σ[B]); the solve runs in ``x``'s dtype (pass float64 for a reference).

    Before any model call: ``x`` must be finite, and a start at σ = inf needs a model that can be evaluated there
    (the registry run's checks). Every evaluation's drift is checked finite (a model returning NaN / Inf raises
    :class:`NonFiniteError` naming the σ, not a solver's step-size assertion), and the solve makes at most
    ``max_evals`` model evaluations (:class:`StepLimitError` beyond), so it always ends.
    """
    import torchdiffeq  # loaded when a reference is solved, not by ``import samplers``
    from .core.run import check_infinite_sigma, check_start

    max_evals = integer("max_evals", max_evals, lo=1)
    check_start(x)
    if math.isinf(sigma_start):
        check_infinite_sigma(denoiser)
    b = x.shape[0]
    phi0 = math.pi / 2 if math.isinf(sigma_start) else math.atan(sigma_start)
    phi1 = math.atan(sigma_end)
    y0 = x if math.isinf(sigma_start) else x * math.cos(phi0)
    evals = 0
    solve = f"the PF-ODE solve from σ = {sigma_start:g} to σ = {sigma_end:g}"

    def f(phi, y):
        nonlocal evals
        c, s = math.cos(float(phi)), math.sin(float(phi))
        if s == 0.0:  # the limit at σ = 0 is 0 (x − D = O(σ²)); host branching is fine in a reference solve
            return torch.zeros_like(y)
        sigma = math.inf if c == 0.0 else s / c
        if evals >= max_evals:
            raise StepLimitError(f"{solve} made max_evals = {max_evals} model evaluations without finishing (now at "
                                 f"σ = {sigma:g}, rtol = {rtol:g}, atol = {atol:g}): a model discontinuous or very "
                                 "stiff in σ keeps the adaptive steps from growing; check the model there, loosen "
                                 "rtol / atol, or raise max_evals")
        evals += 1
        x_ve = y if c == 0.0 else y / c
        d = denoiser(x_ve, x_ve.new_full((b,), sigma))
        drift = (y * c - d.to(y.dtype)) / s
        if not bool(torch.isfinite(drift).all()):  # one host read per evaluation: fine in a reference solve
            what = ("the model returned NaN/Inf" if not bool(torch.isfinite(d).all())
                    else "the drift overflowed (the model's output is finite)")
            raise NonFiniteError(f"{what} at σ = {sigma:g} in {solve}, so there is no reference solution: check the "
                                 "model at that σ (a float16 model may overflow: try bfloat16 or float32), or solve "
                                 "over a range where it is finite")
        return drift

    t = torch.tensor([phi0, phi1], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        y1 = torchdiffeq.odeint(f, y0, t, rtol=rtol, atol=atol, method=method)[-1]
    return y1 if phi1 == 0 else y1 / math.cos(phi1)


def _latent_shape(shape) -> tuple:
    """A latent shape without the batch: a tuple (or list) of integers >= 1, e.g. (4, 4, 4) or (8,)."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)):
        raise InvalidType(f"shape must be a tuple of integers >= 1 (the latent's shape without the batch, e.g. (4, 4, 4) "
                          f"or (8,)), got {shape!r} ({type(shape).__name__})")
    return tuple(integer(f"shape[{i}]", n, lo=1) for i, n in enumerate(shape))


def _mixture_tensor(name: str, value, ndim: int, rule: str) -> torch.Tensor:
    """``value`` as a float64 tensor of ``ndim`` dimensions with finite entries (``rule``: what it holds)."""
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidType(f"{name} must be {rule}, got {value!r} ({type(value).__name__}): {e}") from None
    if t.ndim != ndim:
        raise InvalidInput(f"{name} must be {rule}, got a tensor of shape {tuple(t.shape)}"
                           + ("; for one component pass means[None]" if name == "means" and t.ndim == 1 else ""))
    if not bool(torch.isfinite(t).all()):
        raise InvalidOption(f"{name} must be finite, got {t.tolist() if t.numel() <= 8 else 'a non-finite entry'}")
    return t


@dataclass(eq=False)
class GaussianMixture:
    """The mixture Σ_k π_k N(μ_k, s_k² I): ``means`` [K, d], ``stds`` [K] (each > 0), ``weights`` [K] (each >= 0,
    not all 0; normalised to sum to 1), ``shape`` the latent's shape without the batch (default (d,)). Every argument
    is checked here, and each method's arguments at its call: a bad value is refused, not broadcast or cast."""

    means: torch.Tensor  # [K, d]
    stds: torch.Tensor  # [K]
    weights: torch.Tensor  # [K], sums to 1
    shape: tuple = None  # latent shape (without batch); d = prod(shape)

    def __post_init__(self):
        self.means = _mixture_tensor("means", self.means, 2, "a [K, d] tensor: K >= 1 components of d >= 1 values")
        k, d = self.means.shape
        if k < 1 or d < 1:
            raise InvalidInput(f"means must hold K >= 1 components of d >= 1 values, got shape {(k, d)}")
        rule = f"a [K] tensor, one per component of means (K = {k})"
        self.stds = _mixture_tensor("stds", self.stds, 1, rule)
        self.weights = _mixture_tensor("weights", self.weights, 1, rule)
        for name, t in (("stds", self.stds), ("weights", self.weights)):
            if t.shape[0] != k:
                raise InvalidInput(f"{name} holds {t.shape[0]} values but means holds K = {k} components; give one "
                                   f"{name[:-1]} per component")
            if t.device != self.means.device:
                raise InvalidInput(f"{name} is on {t.device} but means on {self.means.device}; put all three on one "
                                   "device")
        if not bool((self.stds > 0).all()):
            raise InvalidOption(f"stds must be > 0 (each component's standard deviation; 0 makes D(x, 0) NaN), got "
                                f"{self.stds.tolist()}")
        if not bool((self.weights >= 0).all()) or not bool(self.weights.sum() > 0):
            raise InvalidOption(f"weights must be >= 0 and not all 0 (they are normalised to sum to 1), got "
                                f"{self.weights.tolist()}")
        self.weights = self.weights / self.weights.sum()
        self.shape = (d,) if self.shape is None else _latent_shape(self.shape)
        if math.prod(self.shape) != d:
            raise InvalidInput(f"shape {self.shape} does not hold {d} values")

    @classmethod
    def default(cls, shape=(4, 4, 4), components: int = 6, seed: int = 0, spread: float = 1.0, std: float = 0.35):
        """A fixed mixture: ``components`` isotropic clusters of std ``std`` with means of norm ~``spread``·√d."""
        shape = _latent_shape(shape)
        components = integer("components", components, lo=1)
        g = torch.Generator().manual_seed(_one_seed(seed, "seed"))
        spread = real("spread", spread, lo=0.0, what=" (the means' scale)")
        std = positive("std", std)
        d = math.prod(shape)
        means = torch.randn(components, d, generator=g, dtype=torch.float64) * spread
        stds = std * (0.5 + torch.rand(components, generator=g, dtype=torch.float64))
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(means, stds, weights, shape)

    def _check_x(self, x, who: str) -> None:
        """A batch of latents of this mixture: a floating tensor [B, *shape]."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise InvalidType(f"{who}: x must be a floating-point tensor [B, *{self.shape}], got "
                              f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.shape:
            raise InvalidInput(f"{who}: x has shape {tuple(x.shape)}, but this mixture's latents are [B, *{self.shape}]"
                               f"; pass x of shape (B, {', '.join(map(str, self.shape))})")

    @staticmethod
    def _check_sigma(sigma, b: int, who: str, values: bool = True):
        """σ: a number >= 0 (inf: x is the unit noise), or a real tensor of one σ or one per item ([], [1] or [B]).
        With ``values``, a tensor's values are checked too: on the CPU without a host read (``torch._assert_async``,
        so a run stays capturable); on a GPU they are not read, which would synchronise every call."""
        if not isinstance(sigma, torch.Tensor):
            return real(f"{who}: sigma", sigma, lo=0.0, allow_inf=True)
        if sigma.dtype == torch.bool or sigma.is_complex() or sigma.ndim > 1 or sigma.numel() not in (1, b):
            raise InvalidInput(f"{who}: sigma is a {sigma.dtype} tensor of shape {tuple(sigma.shape)}; pass a number "
                               f"or a real tensor of one σ ([] or [1]) or one per item ([{b}])")
        if values and sigma.device.type == "cpu":
            try:
                torch._assert_async((sigma >= 0).all(), "sigma")  # NaN fails >= 0 too
            except RuntimeError:
                raise InvalidOption(f"{who}: sigma must be >= 0 and not NaN (inf: x is the unit noise), got "
                                    f"{sigma.tolist() if sigma.numel() <= 8 else 'a negative or NaN entry'}") from None
        return sigma

    def samplers_fingerprint(self) -> str:
        """Which mixture this is (:mod:`samplers.fitted.identity`): a hash of its means, spreads and weights."""
        h = hashlib.sha256(b"GaussianMixture")
        for t in (self.means, self.stds, self.weights):
            h.update(t.detach().cpu().to(torch.float64).contiguous().numpy().tobytes())
        h.update(repr(tuple(self.shape)).encode())
        return h.hexdigest()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ------------------------------------------------------------------------------------------------
    # exact quantities

    def _components_vp(self, y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """P(k | y) [B, K] and the per-component variances [B, K] for y = cos φ·x0 + sin φ·n."""
        mu, s2 = self.means, self.stds**2  # [K, d], [K]
        var = cos**2 * s2 + sin**2  # [B, K]
        # |y − cos·μ_k|² expanded into matrix products: no [B, K, d] temporary (the benchmarks call this a lot)
        dist2 = (y * y).sum(-1, keepdim=True) - 2 * cos * (y @ mu.T) + cos**2 * (mu * mu).sum(-1)  # [B, K]
        log_w = self.weights.log() - 0.5 * dist2.clamp_min(0) / var - 0.5 * self.dim * var.log()
        return torch.softmax(log_w, dim=1), var

    def _posterior_vp(self, y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """E[x0 | y] for y = cos φ·x0 + sin φ·n (flattened y: [B, d]; cos, sin: [B, 1])."""
        mu, s2 = self.means, self.stds**2
        w, var = self._components_vp(y, cos, sin)
        # E[x0 | y, k] = μ_k + g_k·(y − cos·μ_k) with g_k = cos·s_k²/var_k; sum over k weighted by w
        g = w * (cos * s2 / var)  # [B, K]
        return (w - g * cos) @ mu + g.sum(-1, keepdim=True) * y

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The exact denoiser D(x, σ) in VE coordinates; at σ = inf, ``x`` is the unit noise. ``x``: [B, *shape]
        (floating); ``sigma``: a number >= 0 or a tensor of one σ or one per item."""
        self._check_x(x, "denoise")
        return self._exact(x, self._check_sigma(sigma, x.shape[0], "denoise"))

    def _exact(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x, σ) of checked arguments. It depends on σ through cos φ and sin² φ (φ = arctan σ) only, so at σ < 0 it
        is D(x, |σ|): the even extension an ODE solver's stage just past σ = 0 reads (dopri5 in pf_ode_solution)."""
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(b).reshape(b, 1)
        phi = torch.atan(sigma)  # atan(inf) = π/2
        cos = torch.where(torch.isinf(sigma), torch.zeros_like(sigma), torch.cos(phi))
        sin = torch.where(torch.isinf(sigma), torch.ones_like(sigma), torch.sin(phi))
        xf = x.reshape(b, -1).to(torch.float64)
        y = torch.where(torch.isinf(sigma), xf, xf * cos)
        return self._posterior_vp(y, cos, sin).to(x.dtype).reshape(x.shape)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        """k-diffusion-style denoiser ``D(x, sigma[B])`` (exact), the model of a run. ``x`` and the shape of ``sigma``
        are checked as in :meth:`denoise`; σ's values are not read (a run checks its schedule; a reference solver's
        stage just past σ = 0 reads the even extension D(x, −σ) = D(x, σ): see :meth:`_exact`)."""
        self._check_x(x, "denoiser")
        return self._exact(x, self._check_sigma(sigma, x.shape[0], "denoiser", values=False))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """Exact samples of the data distribution, [n, *shape], float64."""
        n = integer("n", n, lo=0)
        g = torch.Generator().manual_seed(_one_seed(seed, "seed"))
        if n == 0:  # torch.multinomial draws at least one
            return torch.empty(0, *self.shape, dtype=torch.float64, device=self.means.device)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).reshape(n, *self.shape)

    def noise(self, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
        """Unit Gaussian noise [n, *shape] from a fixed seed, in ``dtype`` (a floating-point dtype)."""
        n = integer("n", n, lo=0)
        g = torch.Generator().manual_seed(_one_seed(seed, "seed"))
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InvalidType(f"noise: dtype must be a floating-point torch dtype (torch.float64, torch.float32, ...): "
                              f"unit normal noise in {dtype} would be truncated, got {dtype!r}")
        return torch.randn(n, *self.shape, generator=g, dtype=torch.float64).to(dtype)

    def ode_endpoint(self, x: torch.Tensor, sigma_start: float, sigma_end: float = 0.0, rtol: float = 1e-10,
                     atol: float = 1e-10) -> torch.Tensor:
        """The exact PF-ODE solution at ``sigma_end`` from ``x`` at ``sigma_start`` (float64, dopri5).

        For a single Gaussian the closed form x(σ) = μ + (x − μ)·√(s² + σ²)/√(s² + σ_start²) is used.
        At ``sigma_start = inf``, ``x`` is the unit noise. ``x``: [B, *shape] (floating); ``sigma_start``,
        ``sigma_end``: numbers >= 0 (``sigma_start`` may be inf); ``rtol``, ``atol``: > 0.
        """
        self._check_x(x, "ode_endpoint")
        if isinstance(sigma_start, torch.Tensor) and sigma_start.ndim == 0 and sigma_start.is_floating_point():
            sigma_start = float(sigma_start)  # a 0-d tensor σ, read as the number it holds (a reference solve)
        sigma_start = real("ode_endpoint: sigma_start", sigma_start, lo=0.0, allow_inf=True)
        sigma_end = real("ode_endpoint: sigma_end", sigma_end, lo=0.0)
        rtol, atol = positive("ode_endpoint: rtol", rtol), positive("ode_endpoint: atol", atol)
        b = x.shape[0]
        xf = x.reshape(b, -1).to(torch.float64)
        if self.means.shape[0] == 1:
            mu, s = self.means[0], float(self.stds[0])
            if math.isinf(sigma_start):
                out = mu + xf * math.sqrt(s**2 + sigma_end**2)
            else:
                out = mu + (xf - mu) * math.sqrt(s**2 + sigma_end**2) / math.sqrt(s**2 + sigma_start**2)
            return out.reshape(x.shape)
        return pf_ode_solution(self.denoiser, xf.reshape(x.shape), sigma_start, sigma_end, rtol=rtol, atol=atol)

    # ------------------------------------------------------------------------------------------------
    # the same data behind any native parameterization

    def as_model(self, prediction: str, schedule: NoiseSchedule):
        """A native model ``model(x_t, time) -> output`` of this data for ``prediction`` on ``schedule``.

        ``samplers.to_denoiser(gm.as_model("eps", sched), "eps", sched)`` gives back (up to rounding) the
        exact denoiser: this is how tests check the conversion layer.
        """
        prediction = conversion.canonical_prediction(prediction)
        conversion.check_schedule(schedule)
        if prediction in conversion.EDM_PREDICTIONS:  # input is c_in·x; output F with D = c_skip·x ± c_out·F
            raise InvalidOption(f"as_model({prediction!r}) is not provided (EDM's preconditioned output); build EDM "
                                "models with conversion.edm_scalings, or use another prediction (eps, x0, v, flow, "
                                "score)")

        def model(x_t: torch.Tensor, time: torch.Tensor, **extra_args) -> torch.Tensor:
            self._check_x(x_t, "as_model's model")
            view = (-1,) + (1,) * (x_t.ndim - 1)
            sigma = schedule.sigma_of_time(time).to(torch.float64).reshape(view)
            x64 = x_t.to(torch.float64)
            a, b = schedule.coefficients(sigma)
            x_ve = torch.where(torch.isinf(sigma), x64, x64 / a)
            x0 = self._exact(x_ve, sigma.flatten())  # σ of the schedule's own time
            return conversion.from_x0(prediction, x0, x64, a, b).to(x_t.dtype)

        # which model this is (samplers.fitted.identity): this data, this output, this schedule
        from .fitted.identity import schedule_key

        model.samplers_fingerprint = (f"{self.samplers_fingerprint()}|{prediction}|{type(schedule).__name__}|"
                                      f"{schedule_key(schedule)}")
        return model

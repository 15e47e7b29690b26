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
from .core.errors import InvalidInput, NonFiniteError, StepLimitError


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
    from .core.validate import integer

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


@dataclass(eq=False)
class GaussianMixture:
    means: torch.Tensor  # [K, d]
    stds: torch.Tensor  # [K]
    weights: torch.Tensor  # [K], sums to 1
    shape: tuple = None  # latent shape (without batch); d = prod(shape)

    def __post_init__(self):
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.stds = torch.as_tensor(self.stds, dtype=torch.float64)
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        if self.shape is None:
            self.shape = (self.means.shape[1],)
        if math.prod(self.shape) != self.means.shape[1]:
            raise InvalidInput(f"shape {self.shape} does not hold {self.means.shape[1]} values")

    @classmethod
    def default(cls, shape=(4, 4, 4), components: int = 6, seed: int = 0, spread: float = 1.0, std: float = 0.35):
        """A fixed mixture: ``components`` isotropic clusters of std ``std`` with means of norm ~``spread``·√d."""
        g = torch.Generator().manual_seed(seed)
        d = math.prod(shape)
        means = torch.randn(components, d, generator=g, dtype=torch.float64) * spread
        stds = std * (0.5 + torch.rand(components, generator=g, dtype=torch.float64))
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(means, stds, weights, tuple(shape))

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
        """The exact denoiser D(x, σ) in VE coordinates; at σ = inf, ``x`` is the unit noise."""
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(b).reshape(b, 1)
        phi = torch.atan(sigma)  # atan(inf) = π/2
        cos = torch.where(torch.isinf(sigma), torch.zeros_like(sigma), torch.cos(phi))
        sin = torch.where(torch.isinf(sigma), torch.ones_like(sigma), torch.sin(phi))
        xf = x.reshape(b, -1).to(torch.float64)
        y = torch.where(torch.isinf(sigma), xf, xf * cos)
        return self._posterior_vp(y, cos, sin).to(x.dtype).reshape(x.shape)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        """k-diffusion-style denoiser ``D(x, sigma[B])`` (exact)."""
        return self.denoise(x, sigma)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """Exact samples of the data distribution, [n, *shape], float64."""
        g = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).reshape(n, *self.shape)

    def noise(self, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
        """Unit Gaussian noise [n, *shape] from a fixed seed."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, *self.shape, generator=g, dtype=torch.float64).to(dtype)

    def ode_endpoint(self, x: torch.Tensor, sigma_start: float, sigma_end: float = 0.0, rtol: float = 1e-10,
                     atol: float = 1e-10) -> torch.Tensor:
        """The exact PF-ODE solution at ``sigma_end`` from ``x`` at ``sigma_start`` (float64, dopri5).

        For a single Gaussian the closed form x(σ) = μ + (x − μ)·√(s² + σ²)/√(s² + σ_start²) is used.
        At ``sigma_start = inf``, ``x`` is the unit noise.
        """
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

        def model(x_t: torch.Tensor, time: torch.Tensor, **extra_args) -> torch.Tensor:
            view = (-1,) + (1,) * (x_t.ndim - 1)
            sigma = schedule.sigma_of_time(time).to(torch.float64).reshape(view)
            x64 = x_t.to(torch.float64)
            if prediction in ("edm", "edm_v"):  # input is c_in·x; output F with D = c_skip·x ± c_out·F
                raise InvalidInput(f"as_model({prediction!r}) is not provided; build EDM models with "
                                   "conversion.edm_scalings")
            a, b = schedule.coefficients(sigma)
            x_ve = torch.where(torch.isinf(sigma), x64, x64 / a)
            x0 = self.denoise(x_ve, sigma.flatten())
            return conversion.from_x0(prediction, x0, x64, a, b).to(x_t.dtype)

        # which model this is (samplers.fitted.identity): this data, this output, this schedule
        from .fitted.identity import schedule_key

        model.samplers_fingerprint = (f"{self.samplers_fingerprint()}|{prediction}|{type(schedule).__name__}|"
                                      f"{schedule_key(schedule)}")
        return model

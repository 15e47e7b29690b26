"""torchsde's SDE solvers as registry samplers (``torchsde.euler``, ``torchsde.srk``, …), through one adapter.

The reverse-time SDE of the VE process x = x0 + σ·n (Song et al. 2021, arXiv:2011.13456, eq. 6; Karras et
al. 2022, arXiv:2206.00364, eq. 6 with β(σ) = η²/σ), with ∇log p(x; σ) = (D(x, σ) − x)/σ²:

    dx = (1 + η²)·(x − D(x, σ))/σ dσ + η·√(2σ) dW_σ     (σ decreasing; η = 1: reverse SDE, η = 0: PF-ODE)

Solved as written (in t = −σ) its drift is stiff: 2/σ grows ×4 over a typical Karras step, and Heun-type
methods blow up at 6 steps. With p = 1 + η², the integrating factor u = x/σ^p and the increasing time
τ = σ^(−p) turn it into an SDE with additive noise whose drift is the denoiser itself:

    du = D(u/τ, σ) dτ + g(τ) dW_τ,     g = s_noise·√(2η²/p)·σ^((1 − η²)/2)   (g = s_noise for η = 1)

(Itô's formula: du = σ^(−p)dx − p·x·σ^(−p−1)dσ; the x-terms cancel, dτ = −p·σ^(−p−1)dσ, and the
noise variance 2η²σ^(1−2p)|dσ| is g²|dτ|.) Euler–Maruyama here is exactly the DDPM / Euler-ancestral step (a test
checks ``torchsde.euler`` ≡ ``euler_ancestral`` given the same noise) and is stable at any step size.
The noise does not depend on the state (additive noise), so Itô and Stratonovich coincide and every
torchsde method applies with its strong order for additive noise (1.5 for SRK, 1 for the others).

Latents are flattened to [B, N]; the adapter builds torchsde's solver object once and calls its ``step``
on each interval of the given schedule (exactly on the given sigmas: no fixed-dt grid of its own, no
interpolation). If the schedule ends in σ = 0 (τ = inf) the last step is the denoise x = D(x, σ_last),
which is also the limit of every method's step.

Noise: with ``noise_sampler="brownian"`` (or a :class:`samplers.core.brownian.BrownianNoise`) torchsde reads
one Brownian path per item in τ, space-time Lévy area included (what SRK needs for order 1.5), seeded by
that item's seed on the noise object's σ range; the solution then converges pathwise as the step count
grows. With the default per-item seeded noise (or any ``noise_sampler``) each step's increment is one draw
``noise_sampler(σ, σ_next)·√Δτ`` (and, for SRK, a second draw for the space-time Lévy area H, which must be
independent of the increment: a Brownian tree answers the same interval with the same draw, so SRK refuses tree
kinds, and a sampler that repeats its first step's draw, before any model call). Either way item k's noise comes
from its own seed only. Only SRK reads a Lévy area (log-ODE midpoint's is 0 for additive noise, answered without a draw).

Reversible Heun evaluates D once a step, at σ_next on its auxiliary state; its callback at step i reports the
evaluation at σ_i the step starts from (D(x_0, σ_0) at i = 0), not D(x_i, σ_i), which it never computes.

torchsde reads its time tensors on the host (``float(t)``) in its Brownian motion and the drift needs σ
as a float, so these samplers declare ``host_sync=True``. This module uses torchsde's solver classes
(``torchsde._core.methods``) directly, because ``sdeint`` evaluates the drift once more per call to check
shapes; tested against torchsde 0.2.6.
"""
from __future__ import annotations

import math

import torch

from ..core.brownian import BatchedBrownianTree, BrownianNoise, BrownianTreeNoiseSampler, brownian_paths, round_out
from ..core.errors import InvalidInput
from ..core.noise import _Checked, _Lazy, underlying
from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import sde_eta_from_infinity

_REF = ("Li et al. 2020 (torchsde, arXiv:2001.01328); reverse SDE: Song et al. 2021 (arXiv:2011.13456), "
        "Karras et al. 2022 (arXiv:2206.00364) eq. 6")

# torchsde method -> (registry name, strong order on additive noise, model calls per step, noise type given
# to torchsde, paper of the method). Reversible Heun combines g with dW through ``prod``, which for
# torchsde's "additive" type is a dense [N, N] matrix product: it gets the equivalent "diagonal" type.
METHODS = {
    "euler": ("torchsde.euler", 1, 1, "additive", "Euler-Maruyama (Kloeden & Platen 1992)"),
    "milstein": ("torchsde.milstein", 1, 1, "additive", "Milstein (Kloeden & Platen 1992); = Euler for additive noise"),
    "srk": ("torchsde.srk", 1.5, 2, "additive", "SRA1 stochastic Runge-Kutta, Rößler 2010 (SIAM J. Numer. Anal. 48)"),
    "heun": ("torchsde.heun", 1, 2, "additive", "stochastic Heun (Stratonovich)"),
    "midpoint": ("torchsde.midpoint", 1, 2, "additive", "stochastic midpoint (Stratonovich)"),
    "euler_heun": ("torchsde.euler_heun", 1, 1, "additive", "Euler-Heun (Stratonovich); = Euler for additive noise"),
    "reversible_heun": ("torchsde.reversible_heun", 1, 1, "diagonal",
                        "reversible Heun, Kidger et al. 2021 (arXiv:2105.13493)"),
    "log_ode": ("torchsde.log_ode_midpoint", 1, 2, "additive",
                "log-ODE midpoint (Stratonovich); = midpoint for additive noise (no Lévy-area term)"),
}


class ReverseSDE(torch.nn.Module):
    """The reverse-time VE SDE in torchsde's form du = D dτ + g(τ) dW_τ on flattened states [B, N].

    u = x/σ^p and τ = σ^(−p) with p = 1 + η² (see the module docstring). Drift evaluations are memoised
    within one step, keyed by (τ, state): torchsde's SRK re-evaluates earlier stages (and the first stage
    of every method is the same point), which would otherwise cost model calls.
    """

    def __init__(self, model, shape, eta: float, s_noise: float, noise_type: str, sde_type: str):
        super().__init__()
        self.model, self.shape = model, shape
        self.p = 1.0 + eta * eta
        self.noise_scale = s_noise * math.sqrt(2 * eta * eta / self.p)
        self.noise_power = (1 - eta * eta) / 2  # g(τ) = s_noise·√(2η²/p)·σ^((1 − η²)/2)
        self.noise_type, self.sde_type = noise_type, sde_type
        self.cache: dict = {}
        self.first_denoised = None

    def sigma(self, tau: float) -> float:
        return tau ** (-1.0 / self.p)

    def tau(self, sigma: float) -> float:
        return sigma ** (-self.p)

    def new_step(self) -> None:
        self.cache.clear()
        self.first_denoised = None

    def denoise(self, u, tau: float):
        """D(x, σ) at x = u/τ, flattened like u."""
        return self.model((u / tau).reshape(self.shape), self.sigma(tau)).reshape(u.shape)

    def f(self, t, y):
        tau = float(t)
        key = (tau, id(y))
        hit = self.cache.get(key)
        if hit is not None and hit[0] is y:
            return hit[1]
        drift = self.denoise(y, tau)
        if self.first_denoised is None:
            self.first_denoised = drift
        self.cache[key] = (y, drift)  # holds y so that its id is not reused within the step
        return drift

    def diffusion(self, t) -> float:
        return self.noise_scale * self.sigma(float(t)) ** self.noise_power

    def g(self, t, y):  # diagonal noise: one entry per state element
        return torch.full_like(y, self.diffusion(t))

    def g_prod(self, t, y, v):
        return v * self.diffusion(t)

    def f_and_g(self, t, y):
        return self.f(t, y), self.g(t, y)

    def f_and_g_prod(self, t, y, v):
        return self.f(t, y), self.g_prod(t, y, v)


class _Brownian:
    """torchsde's Brownian-motion interface over per-item noise: shape [B, N], queried in τ.

    With ``paths`` (one torchsde Brownian tree per item, in τ, resolved to ``tol``) it returns their increments and
    space-time Lévy areas, except on an interval shorter than ``tol``, which the trees cannot split (torchsde recursed
    until RecursionError): as :class:`BrownianNoise` does for such a piece, its increment W ~ N(0, h) and Lévy area
    H ~ N(0, h/12) are independent draws from the item's generator outside the path (``noise._normal()``); otherwise it turns one draw of the run's ``noise_sampler(σ, σ_next)`` per queried interval
    into the increment (and a second draw into the Lévy area when the method asks for it).
    """

    def __init__(self, noise_sampler, paths, sigma_of, like: torch.Tensor, levy_area_approximation: str,
                 tol: float = 0.0):
        self.noise, self.paths, self.sigma_of, self.tol = noise_sampler, paths, sigma_of, tol
        self.shape = (like.shape[0], like[0].numel())
        self.dtype, self.device = like.dtype, like.device
        self.levy_area_approximation = levy_area_approximation
        self._last = None
        self.method = ""  # the registry name, for the refusal of a sampler that repeats its draw
        self._checked_h = False

    def size(self):
        return self.shape

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            raise ValueError("the adapter's Brownian motion answers interval queries bm(ta, tb) only")
        ta, tb = float(ta), float(tb)
        key = (ta, tb, return_U)
        if self._last is not None and self._last[0] == key:
            W, U = self._last[1]
        else:
            W, U = self._query(ta, tb, return_U)
            self._last = (key, (W, U))
        out = (W,)
        if return_U:
            out += (U,)
        if return_A:
            # Lévy area enters only through derivatives of the diffusion, which are 0 for additive noise
            out += (torch.zeros((), dtype=self.dtype, device=self.device),)
        return out if len(out) > 1 else W

    def _flat(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.shape).to(device=self.device, dtype=self.dtype)

    def _draw(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """One draw of the run's noise sampler, flattened to [B, N]. A caller's sampler arrives wrapped in
        ``_Checked`` (shape, dtype and device checked as for every sampler: refused, not cast or moved)."""
        return self._flat(self.noise(sigma, sigma_next))

    def _query(self, ta: float, tb: float, with_u: bool):
        h = tb - ta
        if self.paths is not None and h < self.tol:
            # shorter than the trees' resolution: independent draws of the item's own generator (BrownianNoise's rule)
            W = self._flat(self.noise._normal()) * math.sqrt(h)
            H = self._flat(self.noise._normal()) * math.sqrt(h / 12)
            return W, h * (0.5 * W + H) if with_u else None
        if self.paths is not None:
            parts = [p(ta, tb, return_U=True) for p in self.paths]
            W = self._flat(torch.stack([w for w, _ in parts]))
            U = self._flat(torch.stack([u for _, u in parts])) if with_u else None
            return W, U
        if self.noise is None:  # η = 0: the increments are multiplied by 0, so none is drawn
            zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            return zero, zero if with_u else None
        sigma, sigma_next = self.sigma_of(ta), self.sigma_of(tb)
        W = self._draw(sigma, sigma_next) * math.sqrt(h)
        U = None
        if with_u:
            # U = ∫(W_s − W_a) ds = h·(W/2 + H), H ~ N(0, h/12) independent of W (torchsde's convention)
            second = self._draw(sigma, sigma_next)
            if not self._checked_h:
                # a sampler that answers the same interval with the same draw (a Brownian tree) gives H = W/√12·…:
                # not independent of W. Checked at the first step's draws, which come before its model calls.
                self._checked_h = True
                if torch.equal(second * math.sqrt(h), W) and bool(W.any()):
                    raise InvalidInput(_levy_refusal(self.method, "a noise sampler that returns the same draw when "
                                                     "asked for the same interval twice"))
            H = second * math.sqrt(h / 12)
            U = h * (0.5 * W + H)
        return W, U


def _levy_refusal(name: str, kind: str) -> str:
    return (f"{name} draws, besides each step's Brownian increment W, a space-time Lévy area H that must be "
            f"independent of W on the same interval; {kind} cannot give one (a Brownian tree answers the same interval "
            "with the same draw, so H would be a copy of W and the sample's spread too large); use "
            "noise_sampler='brownian' (torchsde's own Lévy area, per-item seeded) or the default seeded noise, or "
            "another torchsde method (e.g. torchsde.euler or torchsde.heun), which draws no Lévy area")


def _tree_kind(noise_sampler) -> str | None:
    """A description of ``noise_sampler`` when it is a Brownian tree (k-diffusion's kind: one draw per interval); a
    stand-in that says which sampler it ``stands_for`` (the probe run before a first step from σ = inf) as that one."""
    fn = underlying(noise_sampler)
    if isinstance(fn, _Lazy):  # a named kind the probe run stands for: read by its name, not built (no draw)
        tree = fn.kind is not None and fn.kind.startswith("brownian_tree")
        return f"noise_sampler={fn.kind!r} (a BrownianTreeNoiseSampler)" if tree else None
    if isinstance(fn, (BrownianTreeNoiseSampler, BatchedBrownianTree)):
        return f"a {type(fn).__name__} (noise_sampler='brownian_tree' / 'brownian_tree_device' or the object)"
    if "BrownianTree" in type(fn).__name__:  # k-diffusion's or a tool's own class of that name
        return f"a {type(fn).__name__}"
    return None


# the schedule may reach past a BrownianNoise's range by this much (relative): a schedule built on the range
# [σ_min, σ_max] rounds its ends (karras 6 steps on 0.05 gives 0.049999999999999996)
RANGE_RTOL = 1e-6


def tau_paths(noise: BrownianNoise, sde: ReverseSDE, like: torch.Tensor, sigmas=None):
    """Per-item Brownian trees in τ on the σ range of ``noise``, seeded by its seeds (widened to ``sigmas``' ends
    where those lie just outside it, within RANGE_RTOL), and their resolution ``tol`` in τ."""
    lo, hi = sde.tau(noise.sigma_max), sde.tau(noise.sigma_min)
    if sigmas is not None:
        lo = min(lo, sde.tau(max(sigmas)))
        hi = max(hi, sde.tau(min(s for s in sigmas if s > 0)))
    # resolved to 1e-6 of the smallest τ, but never finer than double precision holds at the largest
    tol = 10.0 ** math.floor(math.log10(max(lo * 1e-6, hi * 1e-12)))
    return brownian_paths(noise.seeds, (like[0].numel(),), round_out(lo, tol, -1), round_out(hi, tol, +1),
                          dtype=like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32,
                          device=noise.path_device, tol=tol), tol


# u = x·τ must hold |x| up to this much beyond τ itself in the state's dtype
_HEADROOM = 100.0


def check_tau_range(method: str, x: torch.Tensor, sigmas: list[float], eta: float) -> None:
    """Refuse, before any model call, an η whose τ = σ^−(1+η²) the state's dtype cannot hold: at the smallest
    σ < 1, u = x·τ overflows to inf in the last steps (float32 at σ_min = 0.03 and η = 5); at the largest σ > 1,
    u ≈ σ·n·τ = n·σ^−η² underflows to 0 in the first (float32 at σ_max = 80 and η = 5). The sizes are written as
    powers of ten: τ itself overflows a Python float above ln τ ≈ 709 (η ≈ 8.6 at σ = 0.05).

    SRK also reads each step's space-time Lévy term U = Δτ·(W/2 + H) (torchsde's ``I_k0``, in the state's dtype,
    from the seeded draws and from a Brownian path alike), of size Δτ^1.5 ≈ τ^1.5 at the step to the smallest σ:
    it overflows before u does (float32 at σ_min = 0.02 from η ≈ 3.74, where u still fits up to η ≈ 4.5), and
    U·(1/Δτ) is then NaN. Its bound is the one checked for SRK, on the smallest σ > 0 a step reaches."""
    name, info, p = METHODS[method][0], torch.finfo(x.dtype), 1 + eta * eta
    # each size that must fit, as (ln of its size at this η, its largest η, the message's words for it)
    sizes = []
    small = [s for s in sigmas if 0 < s < 1]
    if small:
        room = math.log(info.max / _HEADROOM)
        # the power of τ that must fit below the dtype's largest value at its σ: u = x·τ, SRK's Lévy term U ≈ Δτ^1.5
        powers = [(1.0, min(small), "solves for u = x·σ^−(1+η²), which reaches")]
        reached = [s for s in sigmas[1:] if 0 < s < 1]  # the σ a step ends at: its Δτ ≈ τ(σ)
        if method == "srk" and reached:
            powers.append((1.5, min(reached), "reads each step's space-time Lévy term U = Δτ·(W/2 + H), "
                                              "τ = σ^−(1+η²), of size Δτ^1.5, which reaches"))
        for k, s, what in powers:
            depth = -k * math.log(s)  # ln of the size = p·depth
            sizes.append((p * depth, math.sqrt(max(room / depth - 1, 0.0)),
                          f"{what} 10^{p * depth / math.log(10):.4g} at σ={s:g}: more than {x.dtype} holds (up to "
                          f"10^{math.log10(info.max):.4g})", room, "smallest σ > 0 is larger"))
    large = [s for s in sigmas if s > 1 and math.isfinite(s)]
    if large:
        height = math.log(max(large))  # ln(σ·τ) = −η²·height
        room = -math.log(info.tiny * _HEADROOM)
        sizes.append((eta * eta * height, math.sqrt(room / height),
                      f"solves for u = x·σ^−(1+η²), of size σ^−η² = 10^{-eta * eta * height / math.log(10):.4g} at "
                      f"σ={max(large):g}: less than {x.dtype} holds (down to 10^{math.log10(info.tiny):.4g})", room,
                      "largest σ is smaller"))
    # the largest η every size allows, rounded down (the advice must run): 4.539 is advised as 4.53
    limit = math.floor(min((top for _, top, *_ in sizes), default=math.inf) * 100) / 100 if sizes else math.inf
    for size, _, what, room, schedule in sizes:
        if size > room:
            raise InvalidInput(
                f"{name} with eta={eta:g} {what}; use eta <= {limit:g} on this schedule, float64 latents, or a "
                f"schedule whose {schedule}" + (" (or another torchsde method, e.g. torchsde.heun, which reads no "
                                                "Lévy term)" if method == "srk" else ""))


def sdeint_steps(method: str, model, x: torch.Tensor, sigmas: list[float], noise_sampler, callback, disable,
                 eta: float, s_noise: float) -> torch.Tensor:
    """Run torchsde's ``method`` on the reverse SDE, one solver step per interval of ``sigmas``."""
    check_tau_range(method, x, sigmas, eta)
    from torchsde._core import base_sde, methods

    noise_type = METHODS[method][3]
    solver_cls = methods.select(method, "ito")  # Milstein's Itô form; the other methods have one type
    sde_type = solver_cls.sde_type  # additive noise: Itô = Stratonovich, so either type is this SDE
    sde = ReverseSDE(model, x.shape, eta, s_noise, noise_type, sde_type)
    levy = "space-time" if "space-time" in solver_cls.levy_area_approximations else "foster"
    u = x.reshape(x.shape[0], -1) * sde.tau(sigmas[0])
    paths, tol = None, 0.0
    # the library's own lazy wrapper is opened (a named kind may be a BrownianNoise, read as paths below); a
    # caller's sampler stays checked (shape, floating dtype, device), except a BrownianNoise object, which is ours.
    # At η = 0 (the PF-ODE) nothing is drawn, as for every sampler (run.draws_noise): no generator is touched, torch's
    # global one included, and no Brownian tree is built
    if eta == 0:
        noise_sampler = None
    elif isinstance(noise_sampler, _Lazy):
        noise_sampler = noise_sampler.unwrap()
    elif isinstance(noise_sampler, _Checked) and isinstance(noise_sampler.fn, BrownianNoise):
        noise_sampler = noise_sampler.fn
    elif not isinstance(noise_sampler, (_Checked, BrownianNoise)) and noise_sampler is not None:
        noise_sampler = _Checked(noise_sampler, x)  # called directly, not through samplers.sample
    if method == "srk" and sde.noise_scale != 0:  # SRK reads a Lévy area H: refuse a source that repeats W
        tree = _tree_kind(noise_sampler)
        if tree is not None:
            raise InvalidInput(_levy_refusal(METHODS[method][0], tree))
    if isinstance(noise_sampler, BrownianNoise):
        # read below for its seeds and range only: an object built for another latent (batch, size, dtype, device)
        # is refused as every other sampler refuses its draws, not reshaped (a raw RuntimeError) or reinterpreted
        noise_sampler.check(x)
        s_lo, s_hi = min(s for s in sigmas if s > 0), max(sigmas)
        lo, hi = noise_sampler.sigma_min, noise_sampler.sigma_max
        if not (lo * (1 - RANGE_RTOL) <= s_lo and s_hi <= hi * (1 + RANGE_RTOL)):
            raise InvalidInput(f"the Brownian noise covers σ in [{lo!r}, {hi!r}], which does not hold the schedule's "
                               f"range [{s_lo!r}, {s_hi!r}] (to a relative {RANGE_RTOL:g}); build it on the whole "
                               "schedule (samplers.core.brownian.for_schedule, or noise_sampler='brownian')")
        paths, tol = tau_paths(noise_sampler, sde, u, sigmas)
    bm = _Brownian(noise_sampler, paths, sde.sigma, u, levy, tol)
    bm.method = METHODS[method][0]
    bm._checked_h = sde.noise_scale == 0  # no noise reaches the state: nothing to check
    solver = solver_cls(sde=base_sde.ForwardSDE(sde), bm=bm, dt=1.0, adaptive=False, rtol=0.0, atol=0.0,
                        dt_min=0.0, options={})
    extra = None
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sde.new_step()
        if sigma_next == 0:
            denoised = sde.denoise(u, sde.tau(sigma)).reshape(x.shape)
            x = denoised
        else:
            t0 = torch.tensor(sde.tau(sigma), dtype=torch.float64)
            t1 = torch.tensor(sde.tau(sigma_next), dtype=torch.float64)
            if extra is None:
                extra = solver.init_extra_solver_state(t0, u)
            if method == "reversible_heun":
                # its step evaluates D once, at σ_next on the auxiliary state; the D it starts from, at σ (extra's
                # f0: the previous step's call, or the first call at x_0), is the one that belongs to σ
                denoised = extra[0].reshape(x.shape)
            u, extra = solver.step(t0, t1, u, extra)
            if method != "reversible_heun":
                denoised = sde.first_denoised.reshape(x.shape)  # D at the first point the step evaluated
            x = (u / sde.tau(sigma_next)).reshape(x.shape)
        report(callback, x, i, sigma, sigma, denoised)
    return x


def _make(method: str):
    name, order, nfe, _, paper = METHODS[method]

    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta=1.0, s_noise=1.0,
                noise_sampler=None, seed=None):
        return sdeint_steps(method, model, x, sigmas, noise_sampler, callback, disable, float(eta), float(s_noise))

    sampler.__name__ = sampler.__qualname__ = name.replace(".", "_")
    sampler.__doc__ = (
        f"torchsde's ``{method}`` ({paper}) on the reverse-time VE SDE "
        "dx = (1 + η²)(x − D)/σ dσ + η·s_noise·√(2σ) dW (η = 1: the reverse SDE of Song et al. 2021, "
        "arXiv:2011.13456), solved as du = D dτ + g dW_τ in u = x/σ^(1+η²), τ = σ^-(1+η²). "
        f"Strong order {order} (additive noise), {nfe} model call(s) per step. "
        "Final step: denoise (x = D(x, σ) when σ_next = 0).")
    # its η is the SDE's: exact, a step keeps (σ_1/σ_0)^(η²) of a start of size σ_0 → 0, so from σ = inf all fresh
    register(name, kind="sde", order=order, nfe_per_step=nfe, ref=f"{paper}; {_REF}", host_sync=True,
             final_step="denoise (x = D(x, σ) when σ_next = 0)", eta_from_infinity=sde_eta_from_infinity)(sampler)


for _method in METHODS:
    _make(_method)

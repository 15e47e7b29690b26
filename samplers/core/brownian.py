"""Brownian noise: the in-loop noise of a run as increments of one Brownian path per batch item.

Two kinds live here: :class:`BrownianNoise` (``noise_sampler="brownian"``, this library's own: per-item paths,
batch invariant, exact from σ = inf) and :class:`BrownianTreeNoiseSampler` (``"brownian_tree"`` /
``"brownian_tree_device"``: k-diffusion's noise sampler of that name, the same numbers as A1111 and ComfyUI
for the same seed; see its docstring).

With the default :class:`samplers.core.noise.SeededNoise`, step i draws fresh noise, so the same seed at 20
and at 40 steps gives unrelated samples. :class:`BrownianNoise` (k-diffusion's
``BrownianTreeNoiseSampler``) instead reads the increments ``W(σ_next) − W(σ)`` of one fixed Brownian path
``W`` in σ: a finer schedule samples the same path more finely, so an SDE or ancestral sampler converges
to the *same* sample as the step count grows (pathwise, strong convergence), and a seed keeps its image
when the user changes the number of steps.

    noise = samplers.core.brownian.BrownianNoise(x, seeds=[3, 4], sigma_min=0.03, sigma_max=14.6)
    x0 = samplers.sample("euler_ancestral", model, x, sigmas, noise_sampler=noise)
    x0 = samplers.sample("euler_ancestral", model, x, sigmas, seed=3, noise_sampler="brownian")  # the same

Each call returns the increment divided by ``sqrt(|σ − σ_next|)``: unit variance, what every sampler
expects from a noise sampler (it scales the draw by its own σ_up). The path of item k is a
``torchsde`` Brownian tree (``BrownianInterval(halfway_tree=True)``: its values depend on the seed only,
not on which points are queried or in which order) seeded by ``seeds[k]`` alone, so item k's noise does
not depend on the batch size or the other items.

The path lives on [σ_min, σ_max] (the whole schedule's range, so a query never falls outside it and
torchsde never warns). The parts of an interval outside it (σ > σ_max, e.g. the first step from σ = inf;
σ < σ_min, a step to 0) are independent Gaussian increments drawn from a per-item generator of the same seed:
for the step from σ = inf this is the exact limit (W(T) − W(σ₁))/√(T − σ₁) → N(0, 1), independent of the path
below.

EDM churn is not drawn from a path at all: its intervals [σ_i, σ_i(1 + γ)] overlap from step to step, and a path's
answers to them would be correlated. Both classes' ``fresh()`` draw it from an independent generator
(:func:`samplers.core.noise.churn_noise`), as k-diffusion draws it with ``torch.randn_like``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .seeds import generators, resolve_seeds, tree_seeds
from .conversion import state_dtype
from .transfer import to_device
from .errors import InvalidInput, InvalidOption, InvalidType
from .validate import real

# The path is seeded by a mix of the user's seed so that it is not the stream of the initial latent noise
# (``seeded_randn(..., seeds)``) nor that of SeededNoise.
_PATH_MIX = 0x5851F42D4C957F2D
_OUTSIDE_MIX = 0x2545F4914F6CDD1D


def brownian_paths(seeds: Sequence[int], size: tuple, t0: float, t1: float, *, dtype=torch.float32,
                   device="cpu", tol: float = 1e-6) -> list:
    """One torchsde Brownian tree per seed on [t0, t1], each of shape ``size`` (with space-time Lévy area,
    which torchsde's order-1.5 SRK needs; the increments are the same whether or not it is read)."""
    from torchsde import BrownianInterval

    return [BrownianInterval(t0=t0, t1=t1, size=size, dtype=dtype, device=device,
                             entropy=int(s) ^ _PATH_MIX, tol=tol, halfway_tree=True,
                             levy_area_approximation="space-time")
            for s in seeds]


class BrownianNoise:
    """``noise_sampler(sigma, sigma_next)``: the normalised increment of one Brownian path per item.

    Args:
        x: a latent like the run's (batch first); the draws have its shape, dtype and device.
        seeds: one seed per batch item (an int ``s`` means ``s, s + 1, …``).
        sigma_min, sigma_max: the range of the path; pass the smallest positive and the largest finite
            sigma of the schedule (``samplers.sample(..., noise_sampler="brownian")`` does).
        device: where the path is drawn: ``"cpu"`` (default; the same numbers on every machine, then
            copied to ``x.device``) or ``None`` for ``x.device`` itself (no copy, but the numbers depend on
            the device's generator).
        tol: resolution of the path in σ (torchsde's ``tol``; the tree is refined down to it): a finite real > 0.
    """

    def __init__(self, x: torch.Tensor, seeds, sigma_min: float, sigma_max: float, *, device="cpu",
                 tol: float = 1e-6):
        # checked first: 0 or a negative tol failed in round_out's log10 ("math domain error"), NaN in its int(), and
        # True ran as 1.0
        tol = real("tol", tol, lo=0.0, lo_open=True, what=" (the path's resolution in σ; the default is tol=1e-6)")
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (0 < sigma_min < sigma_max < math.inf):
            raise InvalidInput(f"BrownianNoise needs 0 < sigma_min < sigma_max < inf, got sigma_min = {sigma_min:g}, "
                             f"sigma_max = {sigma_max:g} (pass the smallest positive and the largest finite "
                             "sigma of the schedule)")
        self.seeds = resolve_seeds(seeds, x.shape[0])
        self.shape = tuple(x.shape[1:])
        self.dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        self.out_dtype = x.dtype
        self.out_device = x.device
        self.path_device = x.device if device is None else torch.device(device)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        # The path in t = −σ (increasing as σ decreases), so that the same trees serve torchsde's solvers,
        # which integrate forward in time (samplers.interop.torchsde_adapter).
        # torchsde rounds the ends of the tree to the digits of tol: round them outwards so that the whole
        # of [σ_min, σ_max] is inside (a query outside would warn and be clamped).
        self.t0, self.t1 = round_out(-sigma_max, tol, -1), round_out(-sigma_min, tol, +1)
        self.paths = brownian_paths(self.seeds, self.shape, self.t0, self.t1, dtype=self.dtype,
                                    device=self.path_device, tol=tol)
        self.tol = tol
        self.rewind()

    def check(self, x: torch.Tensor) -> None:
        """Refuse, before any model call, a run on a latent ``x`` this object was not built for
        (:func:`check_draws`)."""
        check_draws(self, (len(self.seeds), *self.shape), self.out_dtype, self.out_device, x,
                    "BrownianNoise(x, seeds, sigma_min, sigma_max) on the run's latent, with one seed per item")

    def rewind(self) -> None:
        """Start the draws outside [σ_min, σ_max] (from σ = inf, churn above σ_max) from their seeds again, as the
        path itself always is: every run that shares this object gets the same noise (the run boundary calls it)."""
        self._outside = generators([s ^ _OUTSIDE_MIX for s in self.seeds], self.path_device)

    def increment(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """W(−σ_next) − W(−σ) of every item (variance |σ − σ_next|), in the path's dtype and device."""
        lo, hi = min(sigma, sigma_next), max(sigma, sigma_next)
        inside, unresolved = self._inside(lo, hi)
        # parts of [lo, hi] outside [σ_min, σ_max], and a part inside shorter than the path's resolution (the tree
        # cannot split it: torchsde recursed): independent increments (infinite length: see unit())
        above = max(hi, self.sigma_max) - max(lo, self.sigma_max)
        below = min(hi, self.sigma_min) - min(lo, self.sigma_min)
        outside = above + below + unresolved
        if outside > 0:
            inside = inside + self._normal() * math.sqrt(outside)
        return inside if sigma_next <= sigma else -inside

    def _inside(self, lo: float, hi: float) -> tuple[torch.Tensor, float]:
        """The path's increment over the part of [lo, hi] inside its range, and the length of that part when it is
        shorter than the path's resolution (then drawn independently by the caller; 0 otherwise)."""
        a, b = -min(hi, self.sigma_max), -max(lo, self.sigma_min)
        zeros = torch.zeros((len(self.paths), *self.shape), dtype=self.dtype, device=self.path_device)
        if b <= a:
            return zeros, 0.0
        if b - a < self.tol:
            return zeros, b - a
        return torch.stack([path(a, b) for path in self.paths]), 0.0

    def _normal(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device=self.path_device, dtype=self.dtype)
                            for g in self._outside])

    def fresh(self) -> torch.Tensor:
        """A unit normal per item independent of the path, from the generator of its draws outside it: EDM churn's
        noise (:func:`samplers.core.noise.churn_noise`), which k-diffusion draws fresh at every step."""
        return to_device(self._normal(), self.out_device, self.out_dtype)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        sigma, sigma_next = float(sigma), float(sigma_next)
        length = abs(sigma - sigma_next)
        if math.isinf(length):
            # (W(T) − W(σ₁)) / √(T − σ₁) as T → inf: a unit normal independent of the path below σ_max
            unit = self._normal()
        elif length == 0:
            unit = torch.zeros((len(self.paths), *self.shape), dtype=self.dtype, device=self.path_device)
        else:
            unit = self.increment(sigma, sigma_next) / math.sqrt(length)
        return to_device(unit, self.out_device, self.out_dtype)  # a path on the host: queued, not waited for


def check_draws(noise, shape: tuple, dtype: torch.dtype, device: torch.device, x: torch.Tensor, build: str) -> None:
    """Refuse a noise object of this library whose every draw has ``shape``, ``dtype`` and ``device`` for a run on the
    latent ``x``: its draws must be shaped like ``x`` (never broadcast: an object built for another batch or latent
    size), on ``x``'s device, and in a dtype no wider than the run's state (float32 for float16 / bfloat16 latents,
    else the latents' own), the rules a run applies to every draw (:class:`samplers.core.noise._Checked`), read here
    from the object's metadata so that it is refused before the first model call, not at its first draw."""
    state = state_dtype(x.dtype)
    if tuple(shape) != tuple(x.shape) or torch.promote_types(dtype, state) != state or torch.device(device) != x.device:
        raise InvalidInput(
            f"the {type(noise).__name__} draws shape {tuple(shape)}, {dtype} on {device}, but the run's latent is "
            f"{tuple(x.shape)}, {x.dtype} on {x.device}: its draws must be shaped like the latent (never broadcast), "
            f"on its device and in a dtype no wider than the run's state ({state}); build {build}")


def round_out(t: float, tol: float, direction: int) -> float:
    digits = -int(math.log10(tol))
    r = round(t, digits)
    if (r - t) * direction < 0:
        r = round(r + direction * 10.0**-digits, digits)
    return r


def for_schedule(x: torch.Tensor, seeds, sigmas, **kwargs) -> BrownianNoise:
    """A :class:`BrownianNoise` on the range of ``sigmas`` (smallest positive to largest finite value)."""
    values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    finite = [s for s in values if 0 < s < math.inf]
    if not finite:
        # e.g. [inf, 0]: one step from σ = inf straight to the data; any draw is the independent unit normal
        # of the part outside the path, so the range is immaterial
        finite = [0.5, 1.0]
    sigma_min, sigma_max = min(finite), max(finite)
    if sigma_min == sigma_max:
        # one finite positive sigma (e.g. [inf, s, 0]): any range around it; draws are whole-path independent
        sigma_min, sigma_max = sigma_max / 2, sigma_max
    return BrownianNoise(x, seeds, sigma_min, sigma_max, **kwargs)


# ----------------------------------------------------------------------------------------------------
# k-diffusion's Brownian tree, seeded and batched exactly as k-diffusion (and A1111 / ComfyUI) do


class BatchedBrownianTree:
    """``torchsde.BrownianTree`` paths as k-diffusion's ``BatchedBrownianTree`` builds them: ``tree(t0, t1)`` is
    the increment W(t1) − W(t0) (signed: the order of the arguments matters, not their size).

    ``seed`` decides the batching, as in k-diffusion: an int is one tree over the whole tensor ``x`` (a batch
    then shares one path of shape ``x.shape``: ComfyUI passes its one ``seed`` so); a list or tuple is one tree
    per batch item, item k seeded ``seed[k]`` (A1111 passes the images' seeds so: batch invariant); ``None``
    draws one int from torch's global generator (``torch.randint(0, 2**63 - 1, [])``, as k-diffusion does). A seed
    is an integer >= 0 of any size, as k-diffusion's tree takes it (:func:`samplers.core.seeds.tree_seeds`).
    ``t0`` and ``t1`` must be finite.

    ``cpu=False`` draws the trees on ``x.device`` (k-diffusion itself, ComfyUI's ``*_gpu`` samplers: the numbers
    depend on that device's generator); ``cpu=True`` draws them on the CPU, with the query times rounded to
    float32, and moves each increment to ``x.device`` (ComfyUI's default SDE samplers: the same numbers on
    every machine). Increments come back in ``x``'s dtype. Other keyword arguments go to ``torchsde.BrownianTree``
    (``tol``, ``pool_size``; ``w0`` is the starting value, zeros by default).
    """

    def __init__(self, x: torch.Tensor, t0, t1, seed=None, *, cpu: bool = False, **kwargs):
        import torchsde

        # checked before torchsde sees them: a NaN end makes its tree bisect forever, an infinite one recurse until
        # RecursionError (at the first query, inside a run); equal ends are a path of length 0 (every increment 0),
        # which BrownianTreeNoiseSampler builds for a schedule with one positive σ, as k-diffusion's does
        for name, t in (("t0", t0), ("t1", t1)):
            _number(name, t, lo=None, fix="pass the finite times of the path's ends (BrownianTreeNoiseSampler: "
                                          "transform(sigma_min), transform(sigma_max))")
        t0, t1, self.sign = self.sort(t0, t1)
        w0 = kwargs.pop("w0", None)
        if w0 is None:  # zeros where the trees are (on the host for cpu=True: no copy from the device)
            w0 = torch.zeros(x.shape, dtype=x.dtype, device="cpu" if cpu else x.device)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, []).item())
        seed = tree_seeds(seed, x.shape[0])
        self.batched = isinstance(seed, list)
        if self.batched:
            w0 = w0[0]
        seeds = seed if self.batched else [seed]
        self.seeds = seeds
        self.cpu = cpu
        self.device, self.dtype = x.device, x.dtype
        if cpu:
            t0, t1, w0 = _on_cpu(t0), _on_cpu(t1), w0.detach().cpu()
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s), **kwargs) for s in seeds]

    @staticmethod
    def sort(a, b):
        """``(low, high, sign)``: the increment from a to b is ``sign`` times the one from low to high."""
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0, t1) -> torch.Tensor:
        t0, t1, sign = self.sort(t0, t1)
        if self.cpu:
            t0, t1 = _on_cpu(t0, torch.float32), _on_cpu(t1, torch.float32)
        w = torch.stack([_query(tree, t0, t1) for tree in self.trees])
        w = to_device(w, self.device, self.dtype)  # trees on the host (cpu=True): queued, not waited for
        w = w * (self.sign * sign)
        return w if self.batched else w[0]


def _number(name: str, value, *, lo: float | None, fix: str) -> float:
    """A range end as the float it holds (a Python or numpy real, or a one-element real tensor: one read), refused
    by :func:`samplers.core.validate.real`'s rule (real, finite, >= ``lo``) with ``fix`` appended."""
    number = value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise InvalidType(f"{name} must be one real number, got a {value.dtype} tensor of shape "
                              f"{tuple(value.shape)}; {fix}")
        if value.is_meta:
            raise InvalidInput(f"{name} is a tensor on the 'meta' device, which holds no value; {fix} (a number, or "
                               "a tensor with data, e.g. on 'cpu' or 'cuda')")
        number = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        number = value.item()
    try:
        return real(name, number, lo=lo)
    except (InvalidOption, InvalidType) as e:
        raise type(e)(f"{e}; {fix}") from None


def _query(tree, t0, t1) -> torch.Tensor:
    """``tree(t0, t1)`` with a time that lies outside the tree by rounding only first clamped to the tree's end, as
    torchsde would clamp it after a warning, as k-diffusion's tree does: the schedule's own end points as float32
    against the tree's ends rounded to its tol, within tol plus two float32 spacings at that end (the float32 times
    :func:`samplers.core.noise.check_tree_draws` lets through). Clamped here it does not warn, so no
    ``warnings.catch_warnings`` is needed, which swaps the process's filters under every thread's feet. A time farther
    out reaches torchsde as it is, which warns and clamps, as k-diffusion's tree does (a run refuses such a draw before
    any model call: :func:`samplers.core.noise.check_schedule_draws`; it was clamped here, silently)."""
    ends = tree._interval  # torchsde's BrownianInterval: its _start / _end are the rounded ends it clamps to
    lo, hi = ends._start, ends._end
    slack = [ends._tol + 2 * _F32_EPS * abs(end) for end in (lo, hi)]

    def near(t: float) -> float:
        return lo if lo - slack[0] <= t < lo else hi if hi < t <= hi + slack[1] else t
    return tree(near(float(t0)), near(float(t1)))


_F32_EPS = torch.finfo(torch.float32).eps


def _on_cpu(t, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(t).detach().cpu()
    return t if dtype is None else t.to(dtype)


def _identity(sigma):
    return sigma


class BrownianTreeNoiseSampler:
    """k-diffusion's ``BrownianTreeNoiseSampler``: ``noise_sampler(sigma, sigma_next)`` is the increment of a
    :class:`BatchedBrownianTree` over [σ_next, σ], divided by sqrt(|σ − σ_next|) (unit variance).

    This is the noise A1111 (``seed=`` the images' seeds) and ComfyUI (``seed=extra_args["seed"]``, ``cpu=True``;
    ``cpu=False`` for the ``*_gpu`` samplers) give their SDE samplers: with the same seed and sigma range it
    returns the same numbers (tested against k-diffusion's class). The path lives on [σ_min, σ_max] of the run's
    schedule (k-diffusion passes the smallest positive and the largest sigma); times are ``torch.as_tensor`` of
    the sigmas, so a Python float is a float32 time (torch's default dtype), as ComfyUI's sigmas are.

    Unlike :class:`BrownianNoise` it has no part outside the range (torchsde warns and clamps there) and no
    increment from σ = inf; an int seed makes one path for the whole batch (k-diffusion's semantics), so the
    batch invariance of this library's own noise holds only with one seed per item.

    Args:
        x: a tensor whose shape, device and dtype the draws take.
        sigma_min, sigma_max: the range of the path.
        seed: an int (one tree for the batch), one int per batch item, or None (one int drawn from torch's
            global generator).
        transform: maps σ to the tree's time (identity by default), as in k-diffusion.
        cpu: draw the path on the CPU (ComfyUI's default) instead of on ``x.device`` (k-diffusion's).
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed=None, transform=_identity, *, cpu: bool = False):
        # The range as k-diffusion's samplers give it: real, finite, >= 0 (checked before torchsde sees it: a NaN
        # end made its tree loop forever, inf recurse until RecursionError in a run). sigma_min is the schedule's
        # smallest positive σ, but 0 builds a valid path and is kept; equal ends are what a schedule with one
        # positive σ ([σ, 0]) gives (k-diffusion's sigmas[sigmas > 0].min() == sigmas.max()): a path of length 0,
        # every draw 0, as k-diffusion's; swapped ends are sorted, as k-diffusion's tree sorts them.
        fix = ("pass the smallest positive and the largest sigma of the schedule, e.g. "
               "sigma_min=sigmas[sigmas > 0].min(), sigma_max=sigmas.max()")
        lo = _number("sigma_min", sigma_min, lo=0.0, fix=fix)
        hi = _number("sigma_max", sigma_max, lo=0.0, fix=fix + " (from sigma = inf use noise_sampler='brownian')")
        self.sigma_min, self.sigma_max = min(lo, hi), max(lo, hi)  # the σ range it answers (clamps outside it)
        self.transform = transform
        t0, t1 = self.transform(torch.as_tensor(sigma_min)), self.transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed, cpu=cpu)
        self.shape = tuple(x.shape[1:]) if self.tree.batched else tuple(x.shape)
        self.rewind()

    def check(self, x: torch.Tensor) -> None:
        """Refuse, before any model call, a run on a latent ``x`` this tree was not built for (:func:`check_draws`): a
        draw has the shape (per item with a seed list), dtype and device of the ``x`` it was built on."""
        shape = (len(self.tree.seeds), *self.shape) if self.tree.batched else self.shape
        check_draws(self, shape, self.tree.dtype, self.tree.device, x,
                    "BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed) on the run's latent (a seed list: one "
                    "seed per item)")

    def rewind(self) -> None:
        """Start the draws of :meth:`fresh` from their seeds again (the run boundary calls it, as for
        :class:`BrownianNoise`): every run that shares this object gets the same noise."""
        device = "cpu" if self.tree.cpu else self.tree.device
        self._fresh = generators([(int(s) ^ _OUTSIDE_MIX) % 2**64 for s in self.tree.seeds], torch.device(device))

    def fresh(self) -> torch.Tensor:
        """A unit normal independent of the tree: EDM churn's noise (:func:`samplers.core.noise.churn_noise`), which
        k-diffusion draws with ``torch.randn_like`` at every step and never from the tree. One generator per tree
        (per item with one seed per item, one for the batch with an int seed), seeded from the tree's seed; on the
        CPU for ``cpu=True``, then moved, as the tree's increments are."""
        device, dtype = self._fresh[0].device, self.tree.dtype
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        draws = [torch.randn(self.shape, generator=g, device=device, dtype=dtype) for g in self._fresh]
        w = torch.stack(draws) if self.tree.batched else draws[0]
        return to_device(w, self.tree.device, self.tree.dtype)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = self.transform(torch.as_tensor(sigma)), self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()


def tree_for_schedule(x: torch.Tensor, seed, sigmas, *, cpu: bool) -> BrownianTreeNoiseSampler:
    """A :class:`BrownianTreeNoiseSampler` on the range k-diffusion's SDE samplers give it: the smallest positive
    and the largest sigma of the schedule (``seed`` as that class takes it)."""
    values = check_tree_range(sigmas)
    return BrownianTreeNoiseSampler(x, min(s for s in values if s > 0), max(values), seed=seed, cpu=cpu)


def check_tree_range(sigmas) -> list[float]:
    """The schedule's σ as floats, refused where k-diffusion's tree cannot be built on it (no finite range)."""
    values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    positive = [s for s in values if s > 0]
    if not positive or math.isinf(max(values)):
        raise InvalidInput(f"k-diffusion's Brownian tree lives on the schedule's finite range, but the schedule runs "
                         f"from {values[0]:g} to {values[-1]:g}; from sigma = inf use noise_sampler='brownian' "
                         "(exact there) or the seeded default")
    return values

"""Seeded, batch-invariant noise.

A noise sampler is any callable ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like the latent
(k-diffusion convention). The default draws from one ``torch.Generator`` per batch item, so item k's
noise depends only on its own seed: its result does not change with the batch size or with the other
items in the batch. Other kinds: ``"comfyui"`` (ComfyUI's default noise, per item), ``"brownian"`` (:mod:`samplers.core.brownian`, stable when the step count
changes), ``"brownian_tree"`` / ``"brownian_tree_device"`` (k-diffusion's ``BrownianTreeNoiseSampler``, the noise
A1111 and ComfyUI give their SDE samplers), ``"a1111"`` / ``"a1111_cpu"`` / ``"a1111_nv"`` (A1111's in-loop draws from
each image's generator, in its three random number sources: :mod:`samplers.core.a1111_rng`) and
:class:`PredrawnNoise` (the caller's own draws, one per call).
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

import inspect

import torch

from .a1111_rng import A1111Noise
from .brownian import BrownianNoise, BrownianTreeNoiseSampler, check_tree_range, for_schedule, tree_for_schedule
from .errors import InvalidInput, InvalidOption, InvalidType
from .seeds import generators, resolve_seeds

NoiseSampler = Callable[[float, float], torch.Tensor]

# In-loop noise uses a stream derived from the user's seed, so that it is not the same stream as the
# initial latent noise drawn with `seeded_randn(..., seeds)` (the two would otherwise be correlated). The stream of
# seed s is s ^ _STREAM_MIX, a bijection of [0, 2**64); for seeds below 2**63 it is the stream they always had,
# (s ^ 0x9E3779B97F4A7C15) mod 2**63, when seeds stopped there.
_STREAM_MIX = 0x1E3779B97F4A7C15


class SeededNoise:
    """Default in-loop noise: one generator per batch item, each advanced once per draw."""

    def __init__(self, like: torch.Tensor, seeds: Sequence[int]):
        self.shape = tuple(like.shape[1:])
        self.dtype = like.dtype
        self.device = like.device
        self.generators = generators([self.stream(s) for s in seeds], like.device)

    def stream(self, seed: int) -> int:
        """The generator seed of an item's stream."""
        return seed ^ _STREAM_MIX

    def reseed(self, seeds: Sequence[int]) -> None:
        """Restart every item's stream as a new ``SeededNoise(like, seeds)`` would (in place: the generators
        stay the same objects, so a captured CUDA graph that draws from them sees the new seeds)."""
        for g, s in zip(self.generators, seeds, strict=True):
            g.manual_seed(self.stream(s))

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device, dtype=self.dtype)
                            for g in self.generators])


class ComfyNoise(SeededNoise):
    """ComfyUI's in-loop noise (``comfy/k_diffusion/sampling.py`` ``default_noise_sampler(x, seed)``, Comfy-Org/ComfyUI
    311c0140, what its ancestral and SDE-without-tree samplers draw): a generator on the latent's device seeded with
    the sampler's seed, plus 1 on the CPU, one normal draw of the latent's shape per call. Here one such generator
    per item, seeded with that item's seed: ComfyUI's numbers for a batch of one, and an item's noise that does not
    depend on the batch (ComfyUI draws the whole batch from the first seed's generator). On the CPU item k's stream
    (seed + k + 1) is then the one a starting latent drawn from seed + k + 1 uses (item k + 1's in the pipeline), as
    ComfyUI's seed s's is seed s + 1's start; :class:`SeededNoise` mixes its streams to keep them apart."""

    def stream(self, seed: int) -> int:
        return (seed + (self.device.type == "cpu")) % 2**64  # the top seed wraps where ComfyUI's torch call refuses


class PredrawnNoise:
    """Noise the caller drew beforehand: ``draws[i]`` is handed out at the i-th call.

    ``draws`` is a tensor ``[calls, B, ...]`` or a list of ``[B, ...]`` tensors (unit variance, like every
    noise sampler's output). A sampler that asks for more draws than were given raises
    :class:`NoiseExhaustedError` saying how many it got; ``calls`` counts the draws used so far. Every run starts
    from ``draws[0]`` (:func:`for_run` calls ``reset()``, as it rewinds the library's other noise objects): runs that
    share one object get the same noise. To continue a split run, pass the rest as a new object
    (``PredrawnNoise(noise.draws[noise.calls:])``).
    """

    def __init__(self, draws):
        if isinstance(draws, torch.Tensor):
            if draws.ndim < 2:
                raise InvalidInput(f"pre-drawn noise must be [calls, batch, ...], got shape {tuple(draws.shape)}")
            draws = list(draws.unbind(0))
        draws = list(draws)
        if not draws or not all(isinstance(d, torch.Tensor) for d in draws):
            raise InvalidInput("pre-drawn noise must be a non-empty tensor [calls, batch, ...] or list of tensors")
        shapes = {tuple(d.shape) for d in draws}
        if len(shapes) != 1:
            raise InvalidInput(f"every pre-drawn noise tensor must have the same shape, got {sorted(shapes)}")
        kinds = sorted({str(d.dtype) for d in draws if not d.is_floating_point()})
        if kinds:  # integer or complex "noise" would be cast to the latents' dtype and run (all ones, a dropped part)
            raise InvalidType(f"pre-drawn noise must be real floating-point draws (unit-variance N(0, 1)), got "
                              f"{', '.join(kinds)}; draw it with torch.randn(..., dtype=torch.float32)")
        self.draws = draws
        self.shape = draws[0].shape
        self.calls = 0
        self.like: tuple | None = None

    def check(self, x: torch.Tensor) -> None:
        """Validate against the run's latent; draws are then handed out in its dtype and on its device."""
        if tuple(self.shape) != tuple(x.shape):
            raise InvalidInput(f"pre-drawn noise has shape {tuple(self.shape)} per call but the latent is "
                             f"{tuple(x.shape)}; pass a tensor [calls, {', '.join(map(str, x.shape))}]")
        self.like = (x.device, x.dtype)

    def reset(self) -> None:
        self.calls = 0

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        if self.calls >= len(self.draws):
            raise NoiseExhaustedError(
                f"the sampler asked for noise draw {self.calls + 1} (sigma {float(sigma):g} -> "
                f"{float(sigma_next):g}) but only {len(self.draws)} were pre-drawn; pass at least one draw per "
                "noise call of the run (ancestral samplers draw once per step, some SDE solvers more), or reset() "
                "the object before reusing it")
        draw = self.draws[self.calls]
        self.calls += 1
        return draw if self.like is None else draw.to(*self.like)


class NoiseExhaustedError(InvalidInput, IndexError):
    """A :class:`PredrawnNoise` was asked for more draws than it holds: the library's :class:`InvalidInput` (too
    few draws for the run), and an IndexError as before. It is raised at the draw that is missing, after the model
    calls before it: how many draws a run takes depends on the sampler and its options (η, s_noise, churn, an
    adaptive sampler's accepted steps), so it is not counted ahead of the run."""


NOISE_NAMES = ("seeded", "comfyui", "brownian", "brownian_device", "brownian_tree", "brownian_tree_device", "a1111",
               "a1111_cpu", "a1111_nv")
# A1111's in-loop draws by its random number source (the latents' device, the CPU, NV's numbers computed on the CPU)
A1111_KINDS = {"a1111": "gpu", "a1111_cpu": "cpu", "a1111_nv": "nv"}
# the kinds drawn from per-item device generators (no host work per draw): the ones a CUDA graph can replay
GENERATOR_KINDS = {"seeded": SeededNoise, "comfyui": ComfyNoise, "a1111": A1111Noise}


def check(noise_sampler, seed, x: torch.Tensor) -> str | None:
    """Validate a run's ``noise_sampler`` / ``seed`` pair; returns the named kind (None for the caller's own or the
    default). A caller's sampler owns its seeding, so passing a seed with it is an error."""
    if isinstance(noise_sampler, str):
        kind = noise_sampler.strip().lower()
        if kind not in NOISE_NAMES + ("default",):
            raise InvalidOption(f"unknown noise_sampler {noise_sampler!r}; use one of {NOISE_NAMES}, a "
                                "samplers.core.noise.PredrawnNoise, or any callable noise_sampler(sigma, sigma_next)")
        return "seeded" if kind == "default" else kind
    if noise_sampler is not None:
        if seed is not None:
            raise InvalidOption("pass either noise_sampler or seed, not both (the noise sampler owns its seeding)")
        if not callable(noise_sampler):
            raise InvalidType(f"noise_sampler must be callable noise_sampler(sigma, sigma_next) -> Tensor or one of "
                              f"{NOISE_NAMES}, got {type(noise_sampler).__name__}")
        torchsde = sys.modules.get("torchsde")  # a torchsde object exists only where torchsde was imported
        if torchsde is not None and isinstance(noise_sampler, torchsde.BaseBrownian):
            raise InvalidType(f"noise_sampler is a torchsde {type(noise_sampler).__name__}, which is queried as "
                              "bm(ta, tb) with ta <= tb and returns the increment W(tb) - W(ta); a noise sampler is "
                              "called as noise_sampler(sigma, sigma_next) with sigma decreasing and returns unit-normal "
                              "draws shaped like the latent: pass noise_sampler='brownian' (one Brownian path per item, "
                              "which the torchsde.* samplers read as torchsde's own), or wrap your interval: "
                              "lambda s, s_next: bm(s_next, s) / abs(s - s_next) ** 0.5")
        # the library's own objects know the draws they make: refused now if they do not fit the latent, not at the
        # first draw, after a model call
        if isinstance(noise_sampler, (PredrawnNoise, BrownianNoise, BrownianTreeNoiseSampler)):
            noise_sampler.check(x)
        return None
    return "seeded"


def check_option(spec, options: dict) -> None:
    """The ``noise_sampler`` option of a run of the registry sampler ``spec``, where it is a name or not callable,
    by :func:`check` (which every run applies when it builds its noise), when a run is planned: no latent or schedule
    needed, and before a seed is added beside it (whose clash would otherwise be the message)."""
    value = options.get("noise_sampler")
    if "noise_sampler" in spec.options and value is not None and not callable(value):
        check(value, None, None)  # the latent is read only for a PredrawnNoise, which is callable


def resolve(noise_sampler: NoiseSampler | str | None, seed, x: torch.Tensor, sigmas=None) -> NoiseSampler:
    """The noise sampler a run uses: the caller's own, a named kind, or the seeded per-item default.

    ``noise_sampler`` may be a callable, ``None``/``"seeded"`` (:class:`SeededNoise`), ``"comfyui"``
    (:class:`ComfyNoise`: ComfyUI's ``default_noise_sampler``, item by item), ``"a1111"`` / ``"a1111_cpu"`` /
    ``"a1111_nv"`` (:class:`samplers.core.a1111_rng.A1111Noise`: A1111's draws after each image's starting noise, by
    its random number source; build the object for an "Eta noise seed delta"), ``"brownian"``
    (:class:`samplers.core.brownian.BrownianNoise` on the range of ``sigmas``, the run's schedule) or
    ``"brownian_tree"`` (:class:`samplers.core.brownian.BrownianTreeNoiseSampler`, k-diffusion's, with the path on
    the CPU as ComfyUI's SDE samplers draw it; ``"brownian_tree_device"`` on x's device, as k-diffusion itself and
    ComfyUI's ``*_gpu`` samplers do). A name is seeded by ``seed``: one seed per item, or an int ``s`` for items
    s, s + 1, … (for ``"brownian_tree"`` one tree per item, as A1111 seeds each image of a batch; None draws
    k-diffusion's seed from torch's global generator, one tree for the batch); an object owns its seeding.
    """
    kind = check(noise_sampler, seed, x)
    if kind is None:
        return noise_sampler
    if kind in GENERATOR_KINDS:
        return GENERATOR_KINDS[kind](x, resolve_seeds(seed, x.shape[0]))
    if kind in A1111_KINDS:  # its CPU and NV sources ("a1111" itself, on the device, is a generator kind above)
        return A1111Noise(x, resolve_seeds(seed, x.shape[0]), A1111_KINDS[kind])
    if sigmas is None:
        raise InvalidInput(f"noise_sampler={noise_sampler!r} needs the schedule's range: pass sigmas to resolve()")
    if kind.startswith("brownian_tree"):
        seeds = None if seed is None else resolve_seeds(seed, x.shape[0])
        return tree_for_schedule(x, seeds, sigmas, cpu=kind == "brownian_tree")
    # "brownian" draws the path on the CPU (the same numbers on every machine); "brownian_device" on x's device
    # (no copy, but the numbers depend on the device's generator)
    return for_schedule(x, resolve_seeds(seed, x.shape[0]), sigmas, device=None if kind == "brownian_device" else "cpu")


class _Checked:
    """A caller's noise sampler, its draws checked against the run's state (metadata, no device read): its shape, its
    device, and a dtype that does not widen it. A float64 draw for a float32 state would promote the state, and every
    later model call would get float64 x: refused, not cast (a draw is never cast or moved). A narrower draw joins the
    state as it is (``torch.randn_like(x)`` of float16 latents, whose state is float32; k-diffusion's and diffusers'
    own draws in the latents' or the model output's dtype, which the drop-in and the shim reproduce)."""

    def __init__(self, fn: NoiseSampler, like: torch.Tensor):
        _check_signature(fn)
        self.fn = fn
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.device = like.device

    def unwrap(self):
        """The caller's noise sampler itself."""
        return self.fn

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        draw = self.fn(sigma, sigma_next)
        if not isinstance(draw, torch.Tensor) or tuple(draw.shape) != self.shape or not draw.is_floating_point():
            got = f"shape {tuple(draw.shape)}, {draw.dtype}" if isinstance(draw, torch.Tensor) else type(draw).__name__
            raise InvalidInput(f"the noise sampler returned {got}; it must return a floating-point tensor shaped like "
                               f"the latent, {self.shape} (a draw is never broadcast)")
        if torch.promote_types(draw.dtype, self.dtype) != self.dtype or draw.device != self.device:
            raise InvalidInput(f"the noise sampler returned a {draw.dtype} tensor on {draw.device} for a run whose state "
                               f"is {self.dtype} on {self.device}; a draw must be on the latent's device and in a dtype "
                               f"no wider than the state's (it is never cast or moved: a wider draw would change the "
                               f"dtype of every later step): return noise like x, torch.randn_like(x), or draw.to(x)")
        return draw


def _check_signature(fn) -> None:
    """A caller's noise sampler takes (sigma, sigma_next): one that cannot is refused before any model call (it
    failed with Python's own TypeError at its first draw, after a model call). A callable whose signature Python
    cannot read (a builtin) is taken as it is."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(0.0, 0.0)
    except TypeError as err:
        raise InvalidType(f"noise_sampler {getattr(fn, '__name__', type(fn).__name__)}{signature} cannot take the "
                          f"call noise_sampler(sigma, sigma_next) ({err}); give it those two parameters (k-diffusion's "
                          "noise sampler: lambda sigma, sigma_next: torch.randn_like(x))") from None


def counts_unused_draws(noise_sampler) -> bool:
    """Whether ``noise_sampler`` is A1111's draws (:class:`A1111Noise`, or a run's kind of it not yet built), whose
    stream counts every ``torch.randn_like`` of k-diffusion's loop, used or not: its Euler / Heun / DPM2 draw their
    churn noise at every step, γ = 0 outside the churn window too, so a step that adds none still takes one."""
    fn = underlying(noise_sampler)
    return isinstance(fn, A1111Noise) or (isinstance(fn, _Lazy) and fn.kind in A1111_KINDS)


def underlying(noise_sampler):
    """The noise sampler a run's wrapper stands for, for reading its kind (never drawn): through a caller's checked
    sampler (``_Checked``) and a stand-in's ``stands_for`` (the probe run before a first step from σ = inf); a named
    kind stays its ``_Lazy`` (not built), anything else is returned as it is."""
    while True:
        if isinstance(noise_sampler, _Checked):
            noise_sampler = noise_sampler.fn
        elif hasattr(noise_sampler, "stands_for"):
            noise_sampler = noise_sampler.stands_for
        else:
            return noise_sampler


def path_kind(noise_sampler) -> str | None:
    """A description of ``noise_sampler`` when it is a Brownian path (``"brownian"``, ``"brownian_tree"``, their
    device forms, or such an object: a tool's own ``*BrownianTree*`` class too), which answers the same interval
    with the same draw; None for anything else. Reads no draw: a named kind is not created. A stand-in that says which
    sampler it ``stands_for`` (the probe run before a first step from σ = inf) is read as that one."""
    fn = underlying(noise_sampler)
    if isinstance(fn, _Lazy):
        kind = fn.kind
        return f"noise_sampler={kind!r}" if kind is not None and kind.startswith("brownian") else None
    if isinstance(fn, (BrownianNoise, BrownianTreeNoiseSampler)) or "BrownianTree" in type(fn).__name__:
        return f"a {type(fn).__name__}"
    return None


def churn_noise(noise_sampler, sigma: float, sigma_hat: float) -> torch.Tensor:
    """EDM churn's unit noise for raising σ to σ̂ (:func:`samplers.core.steps.churn`): ``noise_sampler(σ, σ̂)``, but
    for this library's Brownian paths (:class:`BrownianNoise`, :class:`BrownianTreeNoiseSampler`, named or as
    objects) a normal independent of the path (their ``fresh()``). Churn intervals of consecutive steps overlap
    ([σ_i, σ_i(1 + γ)] reaches above σ_(i−1) wherever σ_(i−1)/σ_i < 1 + γ, the usual case at many steps), so a path
    answered them with correlated draws (0.81 between steps 20 and 21 of 100 at s_churn = 100) and the sample came out
    with 2.7 times the data's variance; EDM's Alg. 2 and k-diffusion's ``sample_euler`` / ``_heun`` / ``_dpm_2`` draw
    every churn fresh (``torch.randn_like``, never from a tree). Another tool's path object cannot be asked for
    independent draws: a run refuses it with churn on (:func:`refuse_foreign_path_churn`)."""
    fn = noise_sampler
    while isinstance(fn, (_Checked, _Lazy)):
        fn = fn.unwrap()
    if isinstance(fn, (BrownianNoise, BrownianTreeNoiseSampler)):
        return fn.fresh()
    return noise_sampler(sigma, sigma_hat)


def refuse_foreign_path_churn(noise_sampler, s_churn: float) -> None:
    """Refuse, before any model call, EDM churn (``s_churn`` > 0) drawn from a Brownian path that is not this
    library's (a tool's own ``*BrownianTree*`` object): it would answer the overlapping churn intervals of consecutive
    steps with correlated draws (:func:`churn_noise`), and it has no independent generator to draw them from."""
    kind = path_kind(noise_sampler)
    fn = underlying(noise_sampler)
    if s_churn and kind is not None and not isinstance(fn, (_Lazy, BrownianNoise, BrownianTreeNoiseSampler)):
        raise InvalidOption(
            f"s_churn = {s_churn:g} draws EDM churn noise over [σ, σ(1 + γ)] at every step, and {kind} is a Brownian "
            "path: it answers the overlapping churn intervals of consecutive steps with correlated draws "
            "(k-diffusion draws each churn fresh with torch.randn_like). Use noise_sampler='brownian' or "
            "'brownian_tree' (their churn is drawn independently of the path), the default seeded noise, or s_churn=0")


def tree_range(noise_sampler, sigmas) -> tuple[float, float] | None:
    """The σ range of a Brownian tree the run draws from (``"brownian_tree"`` / ``"brownian_tree_device"``, built on
    the smallest positive and the largest σ of ``sigmas``, the run's schedule, or a
    :class:`BrownianTreeNoiseSampler`, on its own range): a draw over an interval outside it is clamped to it, and so
    loses noise (torchsde clamps too; this library's ``"brownian"`` draws such parts independently instead). None for
    any other noise sampler. Reads no draw."""
    fn = underlying(noise_sampler)
    if isinstance(fn, _Lazy) and fn.kind is not None and fn.kind.startswith("brownian_tree"):
        values = [float(s) for s in sigmas]
        return min(s for s in values if s > 0), max(values)
    if isinstance(fn, BrownianTreeNoiseSampler):
        return fn.sigma_min, fn.sigma_max
    return None


def check_tree_draws(noise_sampler, sigmas, intervals, what: str, fix: str | None = None) -> None:
    """Refuse, before any model call, a run that will draw over one of ``intervals`` ((σ_hi, σ_lo) pairs) outside the
    range of its Brownian tree (:func:`tree_range`), where the tree would clamp the draw and add less noise than
    asked, silently. Compared in float32, the tree's own times: the schedule's end points as float32 against ends
    rounded to the tree's tolerance are clamped by rounding only (:func:`samplers.core.brownian._query`), never refused.
    ``what``: which option asks for the draw (named in the message); ``fix``: the message's fix besides another noise
    (by default ``what`` within the tree's range). A draw from σ = inf has no such fix: every tree lives on a finite
    range (``BrownianTreeNoiseSampler`` refuses ``sigma_max=inf``, the named tree kinds a schedule from inf), so there
    the message offers only the other noises."""
    found = tree_range(noise_sampler, sigmas)
    if found is None:
        return
    lo, hi = _float32(found)
    built = ("built on the schedule's smallest positive and largest σ" if isinstance(underlying(noise_sampler), _Lazy)
             else "the range it was built on")
    for top, bottom in intervals:
        t, b = _float32((top, bottom))
        if t > hi or b < lo:
            other = (": no tree holds a draw from σ = inf, as a tree lives on a finite range" if math.isinf(top)
                     else f", or {fix or f'{what} within [{found[0]:g}, {found[1]:g}]'}")
            raise InvalidOption(
                f"{what} draws noise over [{bottom:g}, {top:g}], outside [{found[0]:g}, {found[1]:g}], the σ range of "
                f"the Brownian tree ({path_kind(noise_sampler)}, {built}), which would clamp the draw to its range "
                "and add less noise than asked; use noise_sampler='brownian' (independent draws outside its path) or "
                f"'seeded'{other}")


def _float32(values) -> list[float]:
    """``values`` rounded to float32, the tree's times, read through numpy: no host read of a tensor (a run replayed at
    every step by the diffusers shim checks its schedule at every step, at no read per step)."""
    return torch.tensor(values, dtype=torch.float32, device="cpu").numpy().tolist()


def check_schedule_draws(noise_sampler, sigmas) -> None:
    """Refuse, before any model call, a caller's Brownian tree (a :class:`BrownianTreeNoiseSampler`) whose range does
    not hold the steps of the run's schedule ``sigmas``, where it would clamp their draws, silently (the steps outside
    a tree on [0.5, 5] drew zeros on a schedule from 14.6 to 0.03: 0.38 from the full-range tree's sample). A step
    draws over [σ_next, σ] where σ_next > 0 (none of the library's samplers draws from the path on a step to 0, as
    none of k-diffusion's does), so a tree on the schedule's smallest positive and largest σ, as k-diffusion, A1111
    and ComfyUI build it, holds every draw; a named tree kind is built so (not checked). For a run whose steps draw
    noise."""
    if isinstance(underlying(noise_sampler), _Lazy):
        return
    values = [float(s) for s in sigmas]
    steps = [(s, s_next) for s, s_next in zip(values, values[1:]) if s_next > 0]
    check_tree_draws(noise_sampler, values, steps, "a step of the schedule",
                     "a tree on the schedule's range: BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), "
                     "sigmas.max(), seed)")


class _Lazy:
    """Creates the run's noise sampler at its first draw: a run that never draws (a deterministic sampler, churn
    off, η = 0) touches no generator at all, torch's global one included."""

    def __init__(self, make, kind: str | None = None):
        self.make = make
        self.kind = kind  # the named kind it makes ("brownian", "seeded", ...)
        self.sampler = None

    def unwrap(self):
        """The noise sampler itself (created now if it was not yet), for code that needs its type (torchsde)."""
        if self.sampler is None:
            self.sampler = self.make()
        return self.sampler

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        return self.unwrap()(sigma, sigma_next)


def for_run(noise_sampler: NoiseSampler | str | None, seed, x: torch.Tensor, sigmas: list[float],
            draws: bool = False) -> NoiseSampler:
    """The noise sampler of one run, validated now and created at its first draw (see :func:`resolve`).

    ``draws``: the run will draw (a stochastic sampler with noise on), so a named kind that cannot be built on
    ``sigmas`` is refused now, before any model call, not at its first draw. A :class:`BrownianNoise` object of the
    caller's (or a :class:`BrownianTreeNoiseSampler`, whose churn draws come from a generator: ``fresh()``) is rewound,
    so is an :class:`A1111Noise` (to its seeds, as A1111's fresh ``ImageRNG`` of each batch), and a
    :class:`PredrawnNoise` is reset to its first draw: runs that share one get the same noise."""
    seeds = None if seed is None else resolve_seeds(seed, x.shape[0])
    kind = check(noise_sampler, seed, x)
    if kind is None:
        if isinstance(noise_sampler, (BrownianNoise, BrownianTreeNoiseSampler, A1111Noise)):
            noise_sampler.rewind()
        if isinstance(noise_sampler, PredrawnNoise):  # its second run handed out the draws after the first run's
            noise_sampler.reset()
        return _Checked(noise_sampler, x)
    if draws and kind.startswith("brownian_tree"):
        check_tree_range(sigmas)
    return _Lazy(lambda: resolve(noise_sampler, seeds, x, sigmas=sigmas), kind)

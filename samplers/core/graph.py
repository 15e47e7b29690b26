"""CUDA-graph replay of a whole sampling run, model calls included.

Small-batch diffusion models are launch-bound: the GPU waits for the CPU to issue hundreds of small
kernels per step. Because no sampler loop ever reads the device (the schedule is Python floats, every
coefficient is a Python scalar, noise comes from device generators), a complete run — every step, every
model call, every noise draw — can be recorded once as a CUDA graph and replayed with one launch:

    run = samplers.core.graph.capture("dpmpp_2m", denoiser, x, sigmas)     # warm up + capture once
    for noise in batches:
        x0 = run(noise * sigmas[0])                                      # replay: one launch

What is fixed at capture: the sampler and its options, the schedule, the batch shape and dtype, the model
(its weights are read at replay, so updating them in place is seen) and tensors in ``extra_args`` (replace
their contents in place, e.g. ``run.extra_args["context"].copy_(new)``, to change prompts). What changes
per call: the starting latent (of the captured shape, dtype and device; a NaN/Inf one is refused before the
run), and the seeds of stochastic samplers (``run(x, seed=[...])`` reseeds the per-item generators, so a replay
reproduces ``samplers.sample(..., seed=...)``; a run that draws no noise makes no seeds, as ``samplers.sample``).
Names resolve as in ``samplers.sample`` (a label's options are the run's, and the run takes them as checked), and
everything is validated before any model call and before ``seed=None``'s default seeds are drawn from torch's global
generator: a refused capture leaves it alone. A caller's :class:`~samplers.core.noise.PredrawnNoise` is
``reset()`` at every call, so every call gets its draws from the first, and an
:class:`~samplers.core.a1111_rng.A1111Noise` is rewound to its seeds, as ``samplers.sample`` rewinds it; Brownian noise
(named or an object) is refused: its path is built on the host.

On a device without CUDA graphs ``capture`` raises :class:`GraphUnavailable`; pass ``fallback="eager"``
to get the same object running the same prepared loop eagerly (what the CPU tests exercise).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable

import torch

from .conversion import model_dtype, prepare_times, state_dtype as state_dtype_for
from . import noise as noise_mod
from .brownian import BrownianNoise, BrownianTreeNoiseSampler
from .a1111_rng import A1111Noise
from .noise import PredrawnNoise, SeededNoise
from .seeds import resolve_seeds
from .errors import InvalidInput, InvalidOption, InvalidType, Unavailable
from .registry import SAMPLERS, SamplerSpec
from .run import (Denoise, NonFiniteError, check_call, check_infinite_sigma, check_start, check_step_from_infinity,
                  check_the_rest, draws_noise, step_from_infinity, read_sigmas, spec_implementation,
                  to_result_dtype)
from .validate import check_options, integer


class GraphUnavailable(Unavailable):
    """The run cannot be captured in a CUDA graph here; the message says why and what to do instead."""


# every way Python code reads a tensor's value on the host (on a device, a synchronisation): torch.Tensor's methods
# (``__index__``: a 0-d tensor as a list index or range(t); ``__complex__``: complex(t); ``equal`` / ``allclose`` /
# ``is_nonzero``: a Python bool from the values) and torch's functions of the same. ``numpy()`` / ``np.asarray`` is
# not one: it refuses a device tensor (no sync), and it is how this library reads a CPU tensor's own memory on purpose
# (a CPU σ's checks, the shim's timesteps), which a device run does not make
_READ_METHODS = ("item", "__bool__", "__float__", "__int__", "__index__", "__complex__", "tolist", "equal", "allclose",
                 "is_nonzero")
_READ_FUNCTIONS = ("equal", "allclose", "is_nonzero")
_READ_POINTS = tuple((torch.Tensor, n) for n in _READ_METHODS) + tuple((torch, n) for n in _READ_FUNCTIONS)
_READS_LOCK = threading.Lock()
_READS_ORIGINALS: dict = {}  # (owner, name) -> torch's own method / function, while any block is open (in any thread)
_READS_OPEN = [0]  # blocks open, all threads together
_READS_HERE = threading.local()  # .blocks: the count dicts of this thread's open blocks


def _counted(orig):
    def read(*a, **k):
        for counts in getattr(_READS_HERE, "blocks", ()):
            counts["n"] += 1
        return orig(*a, **k)
    return read


@contextlib.contextmanager
def count_host_reads():
    """Count host reads of tensor values in the block: ``item``, ``bool``, ``float``, ``int``, ``complex``, a tensor
    as an index (``__index__``: ``seq[t]``, ``range(t)``), ``tolist``, and ``equal`` / ``allclose`` / ``is_nonzero``
    (``torch.equal(a, b)`` too). Not ``numpy()``, which a device tensor refuses (no sync): reading a CPU tensor's own
    memory through it is how this library checks CPU values without a read that would be a sync on a device.

    On a GPU each of them is a synchronisation that makes a run uncapturable; on the CPU this is the way to
    check that a model and a sampler would capture, before trying on a GPU. Yields a dict with key ``"n"``: the
    reads this thread makes in the block (a nested block's count in the outer one's too; other threads' reads in
    neither). ``torch.Tensor``'s methods are wrapped while any block is open in any thread and are its own again
    when the last one closes, however the blocks of several threads overlap.
    """
    counts = {"n": 0}
    with _READS_LOCK:
        if _READS_OPEN[0] == 0:
            for owner, n in _READ_POINTS:
                _READS_ORIGINALS[owner, n] = getattr(owner, n)
                setattr(owner, n, _counted(_READS_ORIGINALS[owner, n]))
        _READS_OPEN[0] += 1
    blocks = _READS_HERE.__dict__.setdefault("blocks", [])
    blocks.append(counts)
    try:
        yield counts
    finally:
        del blocks[next(i for i in range(len(blocks) - 1, -1, -1) if blocks[i] is counts)]
        with _READS_LOCK:
            _READS_OPEN[0] -= 1
            if _READS_OPEN[0] == 0:
                for (owner, n), orig in _READS_ORIGINALS.items():
                    setattr(owner, n, orig)
                _READS_ORIGINALS.clear()


def _uncapturable(noise_sampler, kind: str | None) -> InvalidOption:
    """The refusal of a noise a replay would not redraw: a named ``kind`` outside the device-generator kinds (A1111's
    host sources, the Brownian ones), or a Brownian object of the caller's (``kind`` None)."""
    why = ("its draws are made on the host (A1111's CPU and NV sources) and copied" if kind in noise_mod.A1111_KINDS
           else "a Brownian path is built on the host (its tree caches values between draws)")
    return InvalidOption(f"noise_sampler={noise_sampler!r} cannot be captured: {why}, so a replay would not redraw it; "
                         "use the default per-item seeded noise (seed=...), a noise_sampler drawing from a device "
                         "generator, or samplers.sample for this noise")


class GraphedSampler:
    """One sampler run prepared once (and captured as a CUDA graph when ``graph`` is not None).

    Call it with a starting latent of the captured shape; it returns a new tensor (a copy of the graph's
    output buffer). Build with :func:`capture`.
    """

    def __init__(self, spec: SamplerSpec, model: Callable, like: torch.Tensor, sigmas: list[float],
                 extra_args: dict, options: dict, seed, noise_sampler):
        self.spec = spec
        self.model = model
        self.sigmas = sigmas
        self.extra_args = extra_args
        self.out_dtype = like.dtype
        state_dtype = state_dtype_for(like.dtype)
        self.static_x = torch.zeros(like.shape, dtype=state_dtype, device=like.device)
        self.options = dict(options)
        self.noise: SeededNoise | None = None
        self.seeds: list[int] | None = None
        self.takes_seed = False  # per-item seeds (made only where the run draws noise): a call's seed= is read
        self.predrawn: PredrawnNoise | None = None
        self.a1111: A1111Noise | None = None  # a caller's A1111 noise: rewound to its seeds at every call
        self._unseeded: tuple | None = None  # (seed, kind) of the seeded noise make_noise() makes
        if "noise_sampler" in spec.options:
            # a Brownian object of the caller's, as the named kinds: rewound per run in samplers.sample, but not in a
            # replay. Refused before noise.check, which checks it against the latent: a tree built for another one
            # was told to be rebuilt on this one, and the rebuilt tree then refused here
            if isinstance(noise_sampler, (BrownianNoise, BrownianTreeNoiseSampler)):
                raise _uncapturable(noise_sampler, None)
            kind = noise_mod.check(noise_sampler, seed, like)
            if kind is not None and kind not in noise_mod.GENERATOR_KINDS:
                raise _uncapturable(noise_sampler, kind)
            if kind is None:
                # the caller's: it must be graph-safe itself; its draws are checked as samplers.sample checks them.
                # A PredrawnNoise serves one run: it is reset() at every call, so every call gets draws 0, 1, …
                if isinstance(noise_sampler, PredrawnNoise):
                    self.predrawn = noise_sampler
                # an A1111Noise starts every run from its seeds (A1111's fresh ImageRNG per batch): every call too
                if isinstance(noise_sampler, A1111Noise):
                    self.a1111 = noise_sampler
                self.options["noise_sampler"] = noise_mod.for_run(noise_sampler, None, self.static_x, sigmas)
            elif seed is None and not draws_noise(spec, self.options):
                # a run that draws no noise draws no seed either (torch's global generator untouched), as in
                # samplers.sample: its noise sampler would only be made at a first draw, which never comes
                self.takes_seed = True
                self.options["noise_sampler"] = noise_mod.for_run(None, None, self.static_x, sigmas)
            else:
                # the run's own seeded noise, made by make_noise() once capture's checks pass: seed=None draws its
                # default seeds from torch's global generator, which a refused capture must leave alone (as
                # samplers.sample does). Until then the kind's lazy sampler, which the checks' probe never draws
                self.takes_seed = True
                self._unseeded = (seed, kind)
                self.options["noise_sampler"] = noise_mod.for_run(kind, seed, self.static_x, sigmas)
        elif seed is not None or noise_sampler is not None:
            raise InvalidInput(f"{spec.name} is deterministic: it takes no seed or noise_sampler")
        self.graph = None
        self.static_out: torch.Tensor | None = None
        # the run's time inputs, made before any capture (outside the graph's memory pool)
        prepare_times(model, sigmas, like.shape[0], state_dtype, like.device)

    def make_noise(self) -> None:
        """Make the run's seeded noise (its default seeds, for seed=None, drawn now from torch's global generator):
        :func:`capture` calls it after every check and refusal, before the first run."""
        if self._unseeded is None:
            return  # no seeded noise (a deterministic sampler, the caller's noise, a run that draws none), or made
        seed, kind = self._unseeded
        self._unseeded = None
        self.seeds = resolve_seeds(seed, self.static_x.shape[0])
        self.noise = noise_mod.GENERATOR_KINDS[kind](self.static_x, self.seeds)
        self.options["noise_sampler"] = self.noise

    # The prepared loop: what `samplers.sample` runs after validation, minus the final finiteness check
    # (a host read) — `__call__(check=True)` does that once, outside the graph.
    def _body(self) -> torch.Tensor:
        with model_dtype(self.out_dtype):
            return self._loop()

    def _loop(self) -> torch.Tensor:
        x = self.static_x
        denoise = Denoise(self.model, x, self.extra_args)
        values = self.sigmas
        if math.isinf(values[0]) and self.spec.from_infinity:
            pass  # the sampler takes its own first step from σ = inf, as in samplers.sample
        elif math.isinf(values[0]):
            x = step_from_infinity(self.spec, self.model, denoise, x, values, self.spec.options, self.options, None)
            values = values[1:]
        if len(values) > 1:
            x = spec_implementation(self.spec)(denoise, x, values, None, None, True, **self.options)
        return x

    def _reseed(self, seed) -> None:
        if self.predrawn is not None:
            self.predrawn.reset()
        if self.a1111 is not None:
            self.a1111.rewind()
        if self.noise is None:
            if self.takes_seed:  # no draw in this run: the seeds are only checked
                if seed is not None:
                    resolve_seeds(seed, self.static_x.shape[0])
                return
            if seed is not None:
                raise InvalidInput(f"seed={seed!r} was given, but this run takes no seed (a deterministic sampler, or "
                                   "the caller's noise_sampler, which owns its seeding); leave seed out")
            return
        # the same stream as SeededNoise(seeds): replay reproduces samplers.sample(..., seed=seeds)
        self.noise.reseed(self.seeds if seed is None else resolve_seeds(seed, self.static_x.shape[0]))

    def __call__(self, x: torch.Tensor, seed=None, check: bool = True) -> torch.Tensor:
        """Run (replay) from the starting latent ``x``; ``seed``: per-item seeds for stochastic samplers.

        ``check`` reads ``x`` once before the run and the result once after it, to raise on NaN/Inf as
        ``samplers.sample`` does (a NaN/Inf ``x`` is refused before any model call); ``check=False`` reads neither.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidType(f"x must be a floating-point tensor (the starting latent at sigmas[0]), got {got}")
        if x.shape != self.static_x.shape or x.device != self.static_x.device or x.dtype != self.out_dtype:
            raise InvalidInput(f"this run was captured for shape {tuple(self.static_x.shape)}, {self.out_dtype} on "
                               f"{self.static_x.device}; got {tuple(x.shape)}, {x.dtype} on {x.device} (pass x in "
                               "the captured shape, dtype and device, or capture another)")
        if check:
            check_start(x)
        self._reseed(seed)
        self.static_x.copy_(x)
        with torch.no_grad():
            if self.graph is not None:
                self.graph.replay()
                out = self.static_out.clone()
            else:
                out = self._body()
        if not check:
            return out.to(self.out_dtype)
        return to_result_dtype(out, self.out_dtype, self.spec.name, self.sigmas[-1], lambda: NonFiniteError(
            f"{self.spec.name} produced NaN/Inf in a graphed run; run it eagerly inside `with samplers.debug():` to "
            "find the first model call that does"))

    @property
    def captured(self) -> bool:
        return self.graph is not None


def capture(sampler: str | Callable, model: Callable, x: torch.Tensor, sigmas, *, extra_args: dict | None = None,
            seed=None, noise_sampler=None, warmup: int = 2, fallback: str | None = None, pool=None,
            **options) -> GraphedSampler:
    """Prepare ``sampler`` on ``model`` for starting latents shaped like ``x``, and capture it as a CUDA graph.

    Args:
        sampler: any name ``samplers.sample`` takes (a label's options are merged with ``options`` as there), or a
            function from ``samplers.get`` (with the options it binds).
        model, x, sigmas, extra_args, options: as for ``samplers.sample`` (``x`` gives shape, dtype, device;
            its values are only used for warm-up).
        seed / noise_sampler: the default per-item seeds of a stochastic sampler (override per call), or
            the caller's own noise sampler (then it must draw from a graph-safe generator).
        warmup: eager runs on a side stream before capture (cuBLAS/cuDNN initialisation, allocator): an integer
            >= 1 (the last one runs with host synchronisation checks on, which is how a run that cannot be
            captured is named before capture).
        fallback: ``"eager"`` returns the same prepared run without a graph when CUDA graphs are not
            available (CPU tensors); ``None`` (default) raises :class:`GraphUnavailable` instead.
        pool: a graph memory pool to share between captures (``torch.cuda.graph_pool_handle()``, or another
            graph's ``.pool()``).
    """
    if not (fallback is None or (isinstance(fallback, str) and fallback == "eager")):
        raise InvalidInput(f"fallback must be None or 'eager', got {fallback!r}")
    warmup = integer("warmup", warmup, lo=1)
    _check_pool(pool)
    given = [k for k in ("callback", "disable") if k in options]
    if given:
        raise InvalidOption(f"a graphed run takes no callback or progress bar (got {', '.join(given)}): nothing runs "
                            "on the host between its steps; use samplers.sample for a run with a callback or progress "
                            "bar")
    spec, options = _resolve(sampler, options, seed, noise_sampler)
    seed, noise_sampler = options.pop("seed", None), options.pop("noise_sampler", None)
    if spec.host_sync:
        raise GraphUnavailable(f"{spec.name} chooses its steps on the host (host_sync=True) and cannot be captured; "
                               "use a fixed-step sampler")
    check_call(model, x, extra_args, None, None)
    # the options as checked (np.float32(0.7) as 0.7, a 0-d tensor order as the int 3), which samplers.sample runs
    # with: the raw values made the graphed loop read a 0-d tensor option at every step (51 host reads for unipc_bh2's
    # order=torch.tensor(3)) and compute an eta's coefficients in numpy float32 (3e-7 from samplers.sample)
    options = check_options(spec, options)
    values = read_sigmas(sigmas, state_dtype_for(x.dtype))
    check_start(x)
    if spec.before_run is not None:  # the sampler's own checks first, as in samplers.sample (a fitted solver's)
        spec.before_run(model, values, options)
    run = GraphedSampler(spec, model, x, values, dict(extra_args or {}), options, seed, noise_sampler)
    # the checks samplers.sample makes before its first model call, made here before capture's (the sampler's own
    # checks of the schedule and options run on a probe whose model and noise stop at their first call)
    from_inf = math.isinf(values[0])
    if from_inf:
        check_infinite_sigma(model)
    rest = values[1:] if from_inf and not spec.from_infinity else values
    if from_inf and not spec.from_infinity:
        check_step_from_infinity(spec, run.options)
    if len(rest) > 1:
        check_the_rest(spec, run.static_x, rest, run.options)
    on_cuda = x.device.type == "cuda" and torch.cuda.is_available()
    if not on_cuda and fallback != "eager":
        raise GraphUnavailable(
            f"CUDA graphs need a CUDA device, but x is on {x.device}"
            + ("" if torch.cuda.is_available() else " and this torch has no CUDA")
            + "; pass fallback='eager' to run the same prepared loop eagerly, or use samplers.sample")
    if on_cuda:
        _check_generator_capture(run)
    # every refusal above leaves torch's global generator as it was (seed=None's default seeds are drawn only now)
    run.make_noise()
    if on_cuda:
        _capture_cuda(run, x, warmup, pool)
    return run


def _check_pool(pool) -> None:
    """``pool`` as torch.cuda.graph(pool=) takes it: None or a pool handle, which torch.cuda.graph_pool_handle() and
    CUDAGraph.pool() return as a pair of ints (torch.cuda._POOL_HANDLE); anything else would reach torch only at
    capture, on CUDA, and never on CPU with fallback='eager'."""
    ok = pool is None or (isinstance(pool, tuple) and len(pool) == 2
                          and all(isinstance(v, int) and not isinstance(v, bool) for v in pool))
    if not ok:
        raise InvalidType(f"pool must be None or a CUDA graph pool handle (torch.cuda.graph_pool_handle(), or a "
                          f"captured graph's .pool(): a pair of ints), got {pool!r} ({type(pool).__name__}); leave it "
                          "out for a pool of the graph's own")


def _resolve(sampler, options: dict, seed, noise_sampler) -> tuple[SamplerSpec, dict]:
    """The sampler and the run's options as ``samplers.sample`` resolves them: a label's options (ComfyUI's uni_pc
    final_sigma, "DPM++ 2M SDE Heun"'s solver and noise) merged with the caller's, a contradiction refused; a
    callable from ``samplers.get(label)`` with the options it was bound to."""
    from .names import merge_options, resolve

    given = dict(options)
    if seed is not None:
        given["seed"] = seed
    if noise_sampler is not None:
        given["noise_sampler"] = noise_sampler
    if isinstance(sampler, str):
        found = resolve(sampler)
    elif callable(sampler) and getattr(sampler, "label", None) is not None:
        found = sampler.label  # samplers.get(label): the sampler with the label's options bound
    elif callable(sampler) and isinstance(getattr(sampler, "spec", None), SamplerSpec):
        return sampler.spec, given
    else:
        raise InvalidType(f"sampler must be a sampler name or a function from samplers.get, got "
                          f"{type(sampler).__name__}")
    return SAMPLERS.get(found.sampler), merge_options(found, given)


def _check_generator_capture(run: GraphedSampler) -> None:
    """Refuse, before the run's seeds are made, a run with seeded noise on a torch that cannot capture its per-item
    generators."""
    if (run.noise is not None or run._unseeded is not None) and not hasattr(torch.cuda.CUDAGraph,
                                                                            "register_generator_state"):
        raise GraphUnavailable(
            "this torch cannot capture per-item generators in a CUDA graph (no "
            "CUDAGraph.register_generator_state, torch >= 2.5); pass a noise_sampler drawing from the "
            "default CUDA generator, or upgrade torch")


def _capture_cuda(run: GraphedSampler, x: torch.Tensor, warmup: int, pool) -> None:
    graph = torch.cuda.CUDAGraph()
    if run.noise is not None:
        _check_generator_capture(run)
        for g in run.noise.generators:
            graph.register_generator_state(g)
    run.static_x.copy_(x)
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side), torch.no_grad():
        for i in range(warmup):  # >= 1, checked by capture
            run._reseed(None)
            if i == warmup - 1:
                # The last warm-up runs with synchronisation checks on: a sync here would break capture
                # with an obscure error, so name the problem instead.
                previous = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    run._body()
                except RuntimeError as err:
                    raise GraphUnavailable(f"the run synchronises with the host, so it cannot be captured "
                                           f"(the model, or a sampler with host_sync): {err}") from err
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
            else:
                run._body()
    torch.cuda.current_stream(x.device).wait_stream(side)
    run._reseed(None)
    with torch.no_grad(), torch.cuda.graph(graph, pool=pool):
        run.static_out = run._body()
    run.graph = graph

"""Registries of samplers and schedules by name, with metadata and close-match errors.

A sampler is registered once with its metadata; callers look it up by its name or by one of the names
users already type in A1111 / ComfyUI (aliases). Nothing is ever appended to a module-level list by hand.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
from typing import Callable, Generic, TypeVar

from .errors import InvalidInput, InvalidType, Unavailable, UnknownNameError

T = TypeVar("T")

KINDS = ("ode", "sde", "ancestral")

# Every module that registers built-in samplers or schedules, in the order they are listed. They are imported
# on the first lookup in a registry, so what is registered never depends on which modules a caller imported
# first, and ``import samplers`` stays light (nothing here imports scipy, torchdiffeq, torchsde or diffusers
# at import time: the adapters import them when they run).
BUILTIN_MODULES = (
    "samplers.ode.basic", "samplers.ode.runge_kutta", "samplers.ode.multistep", "samplers.ode.singlestep",
    "samplers.ode.unipc", "samplers.ode.adams", "samplers.fitted.solver",
    "samplers.sde.ancestral", "samplers.sde.dpm_solver_sde", "samplers.sde.solvers",
    "samplers.interop.torchdiffeq_adapter", "samplers.interop.torchsde_adapter",
    "samplers.schedules.sigma", "samplers.schedules.timesteps", "samplers.schedules.flow",
    "samplers.schedules.presets",
)
_LOADED = False  # set by samplers.core._builtins once every module has imported
_FAILED: str | None = None  # what stopped that import, where it failed or was interrupted


def load_builtins() -> None:
    """Import every module of :data:`BUILTIN_MODULES` once, through one module (:mod:`samplers.core._builtins`):
    Python's import lock then makes a second thread wait for the whole load (two threads' first lookups at once
    found a half-filled registry: "unknown sampler 'euler'"), while a module that looks a name up as it is being
    imported, in the loading thread, sees what is registered so far. A load that raised or was interrupted leaves
    the registries partial, so every later lookup refuses, naming what stopped it, rather than finding some names
    and not others."""
    if _LOADED:
        return
    if _FAILED is not None:
        raise Unavailable(f"the built-in samplers and schedules did not finish loading ({_FAILED}), so the registries "
                          "hold only some of them; fix that error and start a new Python process")
    importlib.import_module("samplers.core._builtins")


def _normalise(name: str) -> str:
    # "Euler a", "euler-a" and "EULER_A" are the same name to a user.
    return "".join(ch for ch in name.lower() if ch.isalnum())


class Registry(Generic[T]):
    """A name → entry map with aliases; lookup ignores case, spaces, '-' and '_'."""

    def __init__(self, what: str, loader: Callable[[], None] | None = None, listed_by: str = "samplers.available()"):
        self.what = what
        self.listed_by = listed_by  # the call that lists every name, for the unknown-name error
        self._entries: dict[str, T] = {}
        self._lookup: dict[str, str] = {}
        self._exact: dict[str, str] = {}  # names and aliases as registered
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            self._loader()

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = (), replace: bool = False) -> None:
        """Register ``entry`` as ``name`` (and its aliases). A name that is taken is refused unless ``replace``
        (then the old entry and its aliases go first)."""
        if not isinstance(name, str) or not _normalise(name):
            raise InvalidInput(f"a {self.what} name must be a non-empty string with letters or digits, got {name!r}")
        if replace and _normalise(name) in self._lookup:
            self.remove(name)
        for key in (name, *aliases):
            owner = self._lookup.get(_normalise(key))
            if owner is not None:
                raise InvalidInput(
                    f"{self.what} name {key!r} is already registered (for {owner!r}); choose another name, or "
                    f"pass replace=True to replace the registered {self.what} on purpose")
        for key in (name, *aliases):
            self._lookup[_normalise(key)] = name
            self._exact[key] = name
        self._entries[name] = entry

    def canonical(self, name: str) -> str:
        if not isinstance(name, str):
            raise InvalidType(f"{self.what} name must be a string, got {type(name).__name__}")
        self._load()
        found = self._lookup.get(_normalise(name))
        if found is None:
            every = list(self._entries) + [k for k in self._lookup if k not in self._entries]
            close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.5)
            close += [self._lookup[k] for k in difflib.get_close_matches(_normalise(name), self._lookup, n=5, cutoff=0.6)]
            close = list(dict.fromkeys(close))[:5]
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise UnknownNameError(
                f"unknown {self.what} {name!r}.{hint} See {self.listed_by} for all {len(self._entries)} "
                f"names" + ("." if every else "")
            )
        return found

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def remove(self, name: str) -> T:
        """Unregister ``name`` (or the entry an alias points to) with all its aliases; returns the entry."""
        canonical = self.canonical(name)
        for table in (self._lookup, self._exact):
            for key in [k for k, owner in table.items() if owner == canonical]:
                del table[key]
        return self._entries.pop(canonical)

    def exact(self, name: str) -> str | None:
        """The entry ``name`` is registered as, spelt exactly as registered (or None)."""
        self._load()
        return self._exact.get(name)

    def names(self) -> list[str]:
        """Every name: the built-ins in the order of :data:`BUILTIN_MODULES` (and of definition in each), whichever
        module was imported first, then the others in the order they were registered."""
        self._load()
        order = {name: i for i, name in enumerate(self._entries)}

        def rank(name: str) -> tuple[int, int]:
            entry = self._entries[name]
            module = getattr(getattr(entry, "fn", entry), "__module__", "")
            where = BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)
            return where, order[name]

        return sorted(self._entries, key=rank)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._load()
        return _normalise(name) in self._lookup


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What a sampler is: its kind, order, cost per step and source."""

    name: str
    fn: Callable
    kind: str  # "ode" (deterministic), "ancestral" or "sde"
    order: int
    nfe_per_step: float
    aliases: tuple[str, ...] = ()
    ref: str = ""
    # Adaptive solvers decide their steps on the host; they say so here and are exempt from the
    # "no host synchronisation inside the loop" contract.
    host_sync: bool = False
    final_step: str = "denoise"  # documented policy for the last step to sigma = 0
    # The sampler's own rule is defined from sigma = inf (it works in a time where the noise end is finite, as
    # flow time t = 1): it gets the infinite first sigma itself instead of the shared exact first step.
    from_infinity: bool = False
    # On the shared first step from sigma = inf: the part η of σ_1 drawn fresh, for a sampler without an ``eta``
    # option (one with it uses its eta, the ancestral split). 1 where the sampler's own step tends to D + σ_1·z as
    # σ_0 → ∞ (ddpm's posterior, er_sde), 0 where its step from there is deterministic; or a function
    # ``(options, sigma_next) -> η`` of the run's options (its defaults filled in) where that limit depends on them:
    # the SDE-η samplers draw all of σ_1 fresh for any η > 0 (``steps.sde_eta_from_infinity``).
    eta_from_infinity: float | Callable[[dict, float], float] = 0.0
    # A check of the sampler's own options against the model and the grid, ``before_run(model, sigmas, options)``
    # with σ as host floats, run before the shared checks of the run (a timestep table's, σ = inf's) and any model
    # call, so that a refusal names the sampler's own cause (a fitted solver's file, not the schedule).
    before_run: Callable | None = None
    # The sampler's own check of the noise its steps draw, ``check_draws(sigmas, noise_sampler, options)``: σ the
    # host floats of the schedule the sampler is handed (from σ = inf the rest after the shared first step),
    # ``noise_sampler`` the run's (``noise.for_run``'s), ``options`` with the sampler's defaults filled in. The sampler
    # makes this check itself before its first model call; a caller that calls models of its own first (the
    # pipeline's encoders) runs it before those (``restart``: its restarts' intervals against a Brownian path).
    check_draws: Callable | None = None
    # The options that are dicts of keys of their own (torchdiffeq's ``options=``): {option: the keys it takes}. A
    # key of one passed as an option (``step_size=0.01`` for ``options={'step_size': 0.01}``) is refused naming the
    # option it belongs in, not only the sampler's own options.
    option_keys: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, hash=False, compare=False)

    @property
    def stochastic(self) -> bool:
        return self.kind != "ode"

    @functools.cached_property
    def options(self) -> dict[str, object]:
        """Keyword-only options and their defaults (read once from the signature)."""
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


SAMPLERS: Registry[SamplerSpec] = Registry("sampler", loader=load_builtins)


def register(name: str, *, kind: str, order: int, nfe_per_step: float, aliases: tuple[str, ...] = (),
             ref: str = "", host_sync: bool = False, final_step: str = "denoise", from_infinity: bool = False,
             eta_from_infinity: float | Callable[[dict, float], float] = 0.0, before_run: Callable | None = None,
             check_draws: Callable | None = None, option_keys: dict[str, tuple[str, ...]] | None = None, replace: bool = False):
    """Register a sampler function under ``name``.

    The decorated function has the k-diffusion signature
    ``fn(model, x, sigmas, extra_args=None, callback=None, disable=None, *, **options)`` and is written
    against a prepared run (see :mod:`samplers.core.run`): ``model(x, sigma)`` takes a Python float sigma and
    ``sigmas`` is a list of finite Python floats (its first may be inf for a ``from_infinity`` sampler). The function registered (and returned) is the public
    wrapper that validates input, handles an infinite first sigma exactly and checks the result.
    A name (or alias) that is already registered is refused unless ``replace=True``. ``before_run(model, sigmas,
    options)``: the sampler's own check of its options against the model and the grid (σ as host floats), run before
    the run's shared checks and any model call (``learned_multistep`` checks its fitted solver there).
    ``check_draws(sigmas, noise_sampler, options)``: the check of the run's noise the sampler makes itself before its
    first model call, for a caller that calls models of its own before the sampler (:attr:`SamplerSpec.check_draws`).
    ``option_keys``: ``{option: keys}`` for an option that is a dict of keys of its own (torchdiffeq's ``options``),
    so that one of those keys passed as an option is refused naming the option it belongs in.
    """
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {KINDS}, got {kind!r}")

    def decorate(fn: Callable) -> Callable:
        _check_signature(name, fn)
        from .run import run_sampler  # late import: run imports the registry

        spec_box: list[SamplerSpec] = []

        @functools.wraps(fn)
        def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            return run_sampler(spec_box[0], model, x, sigmas, extra_args, callback, disable, options)

        spec = SamplerSpec(name, sampler, kind, order, nfe_per_step, tuple(aliases), ref, host_sync, final_step,
                           from_infinity, eta_from_infinity, before_run, check_draws, dict(option_keys or {}))
        spec_box.append(spec)
        sampler.spec = spec  # type: ignore[attr-defined]
        sampler.implementation = fn  # type: ignore[attr-defined]
        SAMPLERS.add(name, spec, tuple(aliases), replace=replace)
        return sampler

    return decorate


def _check_signature(name: str, fn: Callable) -> None:
    params = list(inspect.signature(fn).parameters.values())
    head = [p.name for p in params[:6]]
    if head != ["model", "x", "sigmas", "extra_args", "callback", "disable"]:
        raise InvalidType(f"sampler {name!r} must start with (model, x, sigmas, extra_args, callback, disable), "
                          f"got {head}")
    late = [p.name for p in params[6:] if p.kind is not p.KEYWORD_ONLY]
    if late:
        raise InvalidType(f"sampler {name!r}: options must be keyword-only, got {late}")


def get(name: str) -> Callable:
    """The sampler for ``name``: a registry name or alias, an A1111 / ComfyUI label or a diffusers class name
    (:mod:`samplers.core.names`); a label that implies options returns the sampler with them bound. Unknown names
    raise :class:`~samplers.core.errors.UnknownNameError` with the closest matches."""
    from .names import get as resolve_get

    return resolve_get(name)


def info(name: str) -> SamplerSpec:
    """Metadata of the sampler ``name`` stands for: kind, order, NFE per step, aliases, paper reference, options."""
    from .names import resolve

    return SAMPLERS.get(resolve(name).sampler)


def available(kind: str | None = None) -> list[str]:
    """Names of every registered sampler (optionally only one kind), in registration order."""
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {KINDS} or None, got {kind!r}")
    specs = [SAMPLERS.get(n) for n in SAMPLERS.names()]
    return [s.name for s in specs if kind is None or s.kind == kind]


def sample(name: str, model, x, sigmas, **kwargs):
    """Run the sampler ``name``: ``sample("dpmpp_2m", model, x, sigmas, extra_args=..., seed=...)``.

    ``name`` is anything :mod:`samplers.core.names` resolves; the options a label implies are merged with
    ``kwargs`` (a contradiction is an error). The schedule is ``sigmas``: a schedule the label implies is the
    caller's to build (``samplers.get_sigmas``) or the pipeline's."""
    return get(name)(model, x, sigmas, **kwargs)

"""Registries of samplers and schedules by name, with metadata and close-match errors.

A sampler is registered once with its metadata; callers look it up by its name or by one of the names
users already type in A1111 / ComfyUI (aliases). Nothing is ever appended to a module-level list by hand.
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import difflib
import functools
import importlib
import inspect
import itertools
import reprlib
import sys
import threading
import types
from typing import Callable, Generic, Iterator, TypeVar

from .errors import InvalidInput, InvalidType, LimitExceeded, Unavailable, UnknownNameError

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


def registering_module(depth: int = 1) -> str:
    """The ``__name__`` of the module whose code called the function that calls this (each ``depth`` above 1 one
    caller further out): a registering decorator's call site. An entry is a built-in when a module of
    :data:`BUILTIN_MODULES` registers it (``@register(...)`` at its top level, or a function of it that its import
    runs: ``runge_kutta._register_all``), whether that import is the built-in load's or a caller's ``import
    samplers``, which imports the schedule modules before any load. Not the entry function's ``__module__``: a
    user's entry may well be a library function (a built-in schedule under a new name, a sampler from
    ``make_rk_sampler``, ``samplers.get("heun").implementation``, a ``functools.wraps`` of one), and it is the user's
    all the same: removable, replaceable, checked against the tools' labels, and registered after the built-ins are
    loaded."""
    return sys._getframe(depth + 1).f_globals.get("__name__", "")


MAX_ALIASES = 1000  # the most aliases one entry takes: more is no list of names a user typed


def is_collection(value) -> bool:
    """Whether ``value`` can be read as a collection of names: iterable, but not a lone ``str`` / ``bytes`` (read as
    its characters) nor a mapping (read as its keys alone)."""
    return isinstance(value, collections.abc.Iterable) and not isinstance(
        value, (str, bytes, bytearray, collections.abc.Mapping))


def check_aliases(what: str, aliases) -> tuple[str, ...]:
    """``aliases`` as a tuple, read once (a generator too): any iterable of names (tuple, list, set) but a lone
    ``str`` or ``bytes``, which would register each of its characters as a name, or a mapping, whose keys alone would
    be taken (its values dropped). It is read to at most :data:`MAX_ALIASES` + 1 names: read to its end, an endless
    iterator (``itertools.repeat``) took memory until none was left. The names themselves are checked where they are
    registered (:meth:`Registry.add`)."""
    if not is_collection(aliases):
        text = isinstance(aliases, (str, bytes, bytearray))
        mapping = isinstance(aliases, collections.abc.Mapping)
        raise InvalidType(f"the aliases of a {what} must be a collection of names (a tuple, list or set), got "
                          f"{reprlib.repr(aliases)}" + (", which would register each of its characters" if text else
                                                        ", a mapping, whose values would be dropped" if mapping else "")
                          + "; pass (name,) for one" + (", tuple(mapping) for its keys" if mapping else ""))
    names = tuple(itertools.islice(aliases, MAX_ALIASES + 1))
    if len(names) > MAX_ALIASES:
        raise LimitExceeded(f"the aliases of a {what} are more than {MAX_ALIASES} names (the most one entry takes; "
                            "an endless iterator is never read to its end); pass the names it goes by, as a tuple")
    return names


@dataclasses.dataclass(frozen=True)
class _Tables:
    """One state of a :class:`Registry`: never changed once made. A change builds new tables and swaps them in with
    one assignment, so a lookup in another thread, which reads them once, sees the registry before the change or
    after it, never half-made (a name in the lookup whose entry is gone, a dict changing size as it is read)."""

    entries: dict  # canonical name -> entry, in registration order
    lookup: dict  # normalised name or alias -> canonical name
    exact: dict  # name or alias as registered -> canonical name
    # the canonical names of the built-ins -> the index in BUILTIN_MODULES of the module that registered each
    builtin: dict = dataclasses.field(default_factory=dict)
    # canonical name -> what was registered with the entry beside it (``schedules.register``: the schedule's kind),
    # swapped in and out with it; absent where nothing was
    meta: dict = dataclasses.field(default_factory=dict)

    def without(self, canonical: str | None) -> "_Tables":
        """New tables without the entry ``canonical`` (its names, aliases and meta: never a built-in's, which is
        refused before); ``None``: a copy."""
        return _Tables({k: v for k, v in self.entries.items() if k != canonical},
                       {k: v for k, v in self.lookup.items() if v != canonical},
                       {k: v for k, v in self.exact.items() if v != canonical}, self.builtin,
                       {k: v for k, v in self.meta.items() if k != canonical})


class Registry(Generic[T]):
    """A name → entry map with aliases; lookup ignores case, spaces, '-' and '_'.

    The built-ins (entries registered by a module of :data:`BUILTIN_MODULES`: :func:`registering_module`) are what
    the A1111 / ComfyUI / diffusers labels (:mod:`samplers.core.names`), the diffusers shim and the k-diffusion
    drop-in run, so none of their names or aliases can be replaced or removed: ``replace=True`` is for a user's own
    entries. Changes are serialised by a lock and swapped in whole (:class:`_Tables`), an entry's ``meta`` with it;
    lookups take no lock."""

    def __init__(self, what: str, loader: Callable[[], None] | None = None, listed_by: str = "samplers.available()"):
        self.what = what
        self.listed_by = listed_by  # the call that lists every name, for the unknown-name error
        self._tables = _Tables({}, {}, {})
        self._loader = loader
        self.lock = threading.RLock()  # held while a change is made (:meth:`changing`)

    # The current tables, for code that reads them (app.docs lists the aliases): a snapshot, never to be edited.
    _entries = property(lambda self: self._tables.entries)
    _lookup = property(lambda self: self._tables.lookup)
    _exact = property(lambda self: self._tables.exact)

    def _load(self) -> None:
        if self._loader is not None:
            self._loader()

    @contextlib.contextmanager
    def changing(self, builtin: bool = False) -> Iterator[None]:
        """Hold the lock for a change. A user's (not ``builtin``) loads the built-ins first, so that its names are
        checked against theirs whichever is registered first; that is done outside the lock, as the load takes
        Python's import lock and its modules register here, under this lock, in the loading thread."""
        if not builtin:
            self._load()
        with self.lock:
            yield

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = (), replace: bool = False, *,
            registered_by: str = "", meta=None) -> str | None:
        """Register ``entry`` as ``name`` (and its aliases); returns the canonical name of the entry it replaced (or
        None). A name that is taken is refused unless ``replace``: then the entry registered as ``name`` goes, with
        its aliases, but never a built-in's, nor another entry's through one of its aliases. Every key is checked
        before anything changes, so a refusal leaves the registry as it was. ``registered_by``: the module that
        registers it, as the decorators find it (:func:`registering_module`); one of :data:`BUILTIN_MODULES` makes it
        a built-in, anything else (left out: a direct call) a user's entry. ``meta``: what goes with the entry, read
        with it in one state of the registry (:meth:`find`)."""
        aliases = check_aliases(self.what, aliases)
        for key in (name, *aliases):
            if not isinstance(key, str) or not _normalise(key):
                raise InvalidInput(f"a {self.what} name must be a non-empty string with letters or digits, got "
                                   f"{key!r}")
        builtin = registered_by in BUILTIN_MODULES
        with self.changing(builtin):
            old = self._replaced(self._tables, name, aliases, replace)
            tables = self._tables.without(old)  # new dicts, filled in below before they are swapped in
            for key in (name, *aliases):
                tables.lookup[_normalise(key)] = name
                tables.exact[key] = name
            tables.entries[name] = entry
            if meta is not None:
                tables.meta[name] = meta
            if builtin:
                tables = dataclasses.replace(tables, builtin={**tables.builtin,
                                                              name: BUILTIN_MODULES.index(registered_by)})
            self._tables = tables
        return old

    def _replaced(self, tables: _Tables, name: str, aliases: tuple[str, ...], replace: bool) -> str | None:
        """The canonical name of the entry that registering ``name`` with ``aliases`` replaces (None if it is new),
        or the refusal of a key that is taken."""
        old = tables.lookup.get(_normalise(name)) if replace else None
        if old is not None and _normalise(old) != _normalise(name) and old not in tables.builtin:
            raise InvalidInput(
                f"{self.what} name {name!r} is an alias of {old!r}, not an entry's name: replace=True replaces the "
                f"entry registered under the name given, and this one would take {old!r} and all its names away; "
                f"register yours under another name, or replace {old!r} by its own name")
        for key in (name, *aliases):
            owner = tables.lookup.get(_normalise(key))
            if owner is None or (owner == old and old not in tables.builtin):
                continue
            if owner in tables.builtin:
                raise InvalidInput(
                    f"{self.what} name {key!r} is already registered, for the built-in {self.what} {owner!r}, which "
                    f"cannot be replaced: the A1111 / ComfyUI / diffusers labels and the k-diffusion drop-in run the "
                    f"built-in {owner!r}, and would run yours instead; register yours under another name (and use "
                    f"that name)")
            if replace:
                raise InvalidInput(
                    f"{self.what} name {key!r} is already registered (for {owner!r}), and replace=True replaces only "
                    f"the {self.what} registered as {name!r}; choose another name for {key!r}")
            raise InvalidInput(
                f"{self.what} name {key!r} is already registered (for {owner!r}); choose another name, or "
                f"pass replace=True to replace the registered {self.what} on purpose")
        return old

    def canonical(self, name: str) -> str:
        return self._canonical(self._read(name), name)

    def _read(self, name) -> _Tables:
        """The tables to look ``name`` up in, once the built-ins are loaded."""
        if not isinstance(name, str):
            raise InvalidType(f"{self.what} name must be a string, got {type(name).__name__}")
        self._load()
        return self._tables

    def _canonical(self, tables: _Tables, name: str) -> str:
        found = tables.lookup.get(_normalise(name))
        if found is None:
            every = list(tables.entries) + [k for k in tables.lookup if k not in tables.entries]
            close = difflib.get_close_matches(name, list(tables.entries), n=5, cutoff=0.5)
            close += [tables.lookup[k]
                      for k in difflib.get_close_matches(_normalise(name), tables.lookup, n=5, cutoff=0.6)]
            close = list(dict.fromkeys(close))[:5]
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise UnknownNameError(
                f"unknown {self.what} {name!r}.{hint} See {self.listed_by} for all {len(tables.entries)} "
                f"names" + ("." if every else "")
            )
        return found

    def get(self, name: str) -> T:
        tables = self._read(name)
        return tables.entries[self._canonical(tables, name)]

    def find(self, name: str) -> tuple[str, T, object]:
        """The canonical name, the entry and its ``meta`` (None if none was registered) for ``name``, read from one
        state of the registry: a change in another thread gives the entry with its own meta, never another's."""
        tables = self._read(name)
        canonical = self._canonical(tables, name)
        return canonical, tables.entries[canonical], tables.meta.get(canonical)

    def metas(self) -> collections.abc.Mapping:
        """Every entry's ``meta`` by canonical name (those registered with one), from one state of the registry: a
        read-only view of it (the registry's own dict let a caller change a built-in's kind for every reader, bypassing
        the lock and the swap; a change goes through :meth:`add`)."""
        self._load()
        return types.MappingProxyType(self._tables.meta)

    def remove(self, name: str) -> T:
        """Unregister ``name`` (or the entry an alias points to) with all its aliases; returns the entry. A built-in
        is refused, as replacing it is."""
        self._read(name)
        with self.lock:
            tables = self._tables
            canonical = self._canonical(tables, name)
            if canonical in tables.builtin:
                raise InvalidInput(
                    f"the built-in {self.what} {canonical!r} cannot be removed: the A1111 / ComfyUI / diffusers labels "
                    f"and the k-diffusion drop-in run it; remove only the {self.what}s you registered yourself")
            self._tables = tables.without(canonical)
            return tables.entries[canonical]

    def exact(self, name: str) -> str | None:
        """The entry ``name`` is registered as, spelt exactly as registered (or None)."""
        self._load()
        return self._tables.exact.get(name)

    def names(self) -> list[str]:
        """Every name: the built-ins in the order of :data:`BUILTIN_MODULES` (of the module that registered each, and
        of registration in each), whichever module was imported first, then the others in the order they were
        registered."""
        self._load()
        tables = self._tables
        order = {name: i for i, name in enumerate(tables.entries)}
        return sorted(tables.entries, key=lambda name: (tables.builtin.get(name, len(BUILTIN_MODULES)), order[name]))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._load()
        return _normalise(name) in self._tables.lookup


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


def _refuse_tool_labels(name: str, aliases: tuple[str, ...]) -> None:
    """A user's sampler may not take another tool's name (:func:`samplers.core.names.tool_label`): a name is looked up
    in the registry first, so ``k_euler`` or ``DPM++ 2M Karras`` registered here ran the user's function wherever
    that label was typed without its prefix (the pipeline, the CLI, an infotext's sampler)."""
    from .names import tool_label  # names imports this module

    for key in (name, *aliases):  # a name the registry holds gets its own rule (Registry.add)
        owner = tool_label(key) if isinstance(key, str) and key not in SAMPLERS else None
        if owner is not None:
            raise InvalidInput(f"sampler name {key!r} is {owner}: registered here it would run your sampler wherever "
                               "that name is typed without a prefix, in place of the tool's; register yours under "
                               "another name")


def register(name: str, *, kind: str, order: int, nfe_per_step: float, aliases: tuple[str, ...] = (),
             ref: str = "", host_sync: bool = False, final_step: str = "denoise", from_infinity: bool = False,
             eta_from_infinity: float | Callable[[dict, float], float] = 0.0, before_run: Callable | None = None,
             check_draws: Callable | None = None, option_keys: dict[str, tuple[str, ...]] | None = None,
             replace: bool = False):
    """Register a sampler function under ``name``.

    The decorated function has the k-diffusion signature
    ``fn(model, x, sigmas, extra_args=None, callback=None, disable=None, *, **options)`` and is written
    against a prepared run (see :mod:`samplers.core.run`): ``model(x, sigma)`` takes a Python float sigma and
    ``sigmas`` is a list of finite Python floats (its first may be inf for a ``from_infinity`` sampler). The function registered (and returned) is the public
    wrapper that validates input, handles an infinite first sigma exactly and checks the result.
    A name (or alias) that is already registered is refused unless ``replace=True``, which replaces a sampler you
    registered yourself, never a built-in's name or alias (:meth:`Registry.add`). ``before_run(model, sigmas,
    options)``: the sampler's own check of its options against the model and the grid (σ as host floats), run before
    the run's shared checks and any model call (``learned_multistep`` checks its fitted solver there).
    ``check_draws(sigmas, noise_sampler, options)``: the check of the run's noise the sampler makes itself before its
    first model call, for a caller that calls models of its own before the sampler (:attr:`SamplerSpec.check_draws`).
    ``option_keys``: ``{option: keys}`` for an option that is a dict of keys of its own (torchdiffeq's ``options``),
    so that one of those keys passed as an option is refused naming the option it belongs in.
    """
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {KINDS}, got {kind!r}")
    aliases = check_aliases("sampler", aliases)
    registered_by = registering_module()  # a built-in if a BUILTIN_MODULES module registers it
    builtin = registered_by in BUILTIN_MODULES

    def decorate(fn: Callable) -> Callable:
        _check_signature(name, fn)
        from .run import run_sampler  # late import: run imports the registry

        spec_box: list[SamplerSpec] = []

        @functools.wraps(fn)
        def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            return run_sampler(spec_box[0], model, x, sigmas, extra_args, callback, disable, options)

        spec = SamplerSpec(name, sampler, kind, order, nfe_per_step, aliases, ref, host_sync, final_step,
                           from_infinity, eta_from_infinity, before_run, check_draws, dict(option_keys or {}))
        if not builtin:
            _refuse_tool_labels(name, aliases)
        spec_box.append(spec)
        sampler.spec = spec  # type: ignore[attr-defined]
        sampler.implementation = fn  # type: ignore[attr-defined]
        SAMPLERS.add(name, spec, aliases, replace=replace, registered_by=registered_by)
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

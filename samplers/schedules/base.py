"""The schedule registry, the helpers every schedule shares, and :func:`get_sigmas`.

A schedule is a pure function ``(n, sigma_min, sigma_max, **kw) -> Tensor[n + 1]`` of canonical (VE) sigmas in
float64 on the CPU, strictly decreasing, ending in 0. Schedules defined over a discrete model's training table
are registered with ``needs_table=True`` and get its ``training_sigmas``; those ComfyUI also runs on a flow model's
table (``on_flow=True``) get a :class:`~samplers.core.native.RectifiedFlow`'s table too, and its ``table_axis`` where
they take one; those it runs on a continuous EDM model's table (``on_edm=True``) a :class:`~samplers.core.native.VE`'s
(ComfyUI's ``ModelSamplingContinuousEDM`` table) and its ``table_axis``.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import itertools
import math
import numbers
import reprlib
from typing import Callable

import numpy as np
import torch

from ..core.native import VE, NoiseSchedule, RectifiedFlow, TableAxis, VPContinuous, VPDiscrete
from ..core.errors import InvalidInput, InvalidOption, InvalidType
from ..core.registry import Registry, check_aliases, is_collection, load_builtins, registering_module
from ..core.validate import boolean, check_allocation, distinct, integer, positive

SCHEDULES: Registry[Callable] = Registry("schedule", loader=load_builtins, listed_by="samplers.schedules.available()")


@dataclasses.dataclass(frozen=True)
class ScheduleKind:
    """What kind of schedule an entry is (:func:`register`'s arguments): registered with the function as its
    registry ``meta``, so a lookup (:meth:`Registry.find`) reads the function and its kind from one state of the
    registry. They were sets changed after the new function was swapped in: ``get_sigmas`` in another thread found a
    replaced table schedule's function with the old kind, and called it without its table."""

    # defined over a discrete model's training table: get_sigmas passes ``training_sigmas`` to it
    needs_table: bool = False
    # a table schedule ComfyUI also runs on a flow model's training table (comfy/samplers.py SCHEDULER_HANDLERS on a
    # ModelSamplingDiscreteFlow / ModelSamplingFlux); the others (diffusers' timestep spacings) stay those of a
    # discrete VP model
    on_flow: bool = False
    # a table schedule ComfyUI runs on a continuous EDM model's table (SCHEDULER_HANDLERS on a
    # ModelSamplingContinuousEDM: Playground v2.5, CosXL, EDM-v SDXL); diffusers' spacings, A1111's and Forge's stay
    # those of a discrete model (diffusers' EDM schedulers take no timestep_spacing)
    on_edm: bool = False
    # the ends of the σ range it does not take (the training timesteps fix them): an explicit value there other than
    # the model's own is refused by get_sigmas, never ignored
    fixed_ends: tuple[str, ...] = ()
    # its σ are published data (Align Your Steps): what fixes them, for the error. It takes no range: an explicit end
    # other than the levels' own (the function's ``ends``) is refused, with or without native= (the model's range is
    # not what it uses); native= alone gives the preset as it is
    preset: str = ""


PLAIN = ScheduleKind()  # a formula on σ_min and σ_max: what a schedule registered with no kind is


def kind_of(name: str) -> ScheduleKind:
    """The kind of the schedule registered as ``name`` now (its canonical name)."""
    return SCHEDULES.metas().get(name, PLAIN)


class _KindView:
    """What the kind views share: the name they are published under and the :class:`ScheduleKind` field they read.
    Every read is one snapshot of the registry (:meth:`copy`), so an operation reads one state of it."""

    def __init__(self, name: str, field: str):
        self.name = name
        self.field = field

    def __repr__(self) -> str:
        return repr(self.copy())


def _reading(method: str):
    """The view's ``method`` as a plain set's / dict's, run on one snapshot of the registry (:meth:`_KindView.copy`):
    what the set / dict these views were gave (a plain set, dict or bool of the caller's own; ``NotImplemented`` for
    an operand a set / dict does not take)."""
    def read(self, *args):
        args = [arg.copy() if isinstance(arg, _KindView) else arg for arg in args]  # another view: its snapshot
        return getattr(self.copy(), method)(*args)
    read.__name__ = method
    return read


_CHANGE_SHOWN = {"__setitem__": "[name] = ...", "__delitem__": "del [name]", "__ior__": " |= ...",
                 "__iand__": " &= ...", "__isub__": " -= ...", "__ixor__": " ^= ..."}  # how a change is written


def _refusing(method: str, was: str):
    """The view's ``method`` that would change it: refused, saying how a schedule gets its kind (a change of the view
    would change no schedule's kind, and none should be made but with the schedule: :func:`register`)."""
    tried = _CHANGE_SHOWN.get(method, f".{method}()")

    def refuse(self, *args, **kwargs):
        raise InvalidType(
            f"{self.name}{tried} is refused: {self.name} is a read-only view of the schedule registry (the "
            f"schedules registered with {self.field}=...), not a {was} of its own, and a schedule's kind is registered "
            f"with it: samplers.schedules.register(name, {self.field}=...) (replace=True for one you registered; "
            f"samplers.schedules.SCHEDULES.remove(name) removes one), or change a copy ({self.name}.copy())")
    refuse.__name__ = method
    return refuse


class _KindNames(_KindView, collections.abc.Set):
    """The canonical names of the schedules registered now whose kind has ``field`` set: a read-only view of the
    registry (:func:`kind_of`), not a set kept beside it. It reads as the set it was (``in``, iteration, ``len``,
    comparisons, ``|`` ``&`` ``-`` ``^``, ``union`` ... ``copy``: :data:`_SET_READS`), each read on one state of the
    registry and giving a plain set; a change (``add``, ``|=`` ...: :data:`_SET_CHANGES`) is refused, saying to
    register instead. (``collections.abc.Set``'s own operators built a view whose field was a generator, which failed
    when read.)"""

    def _names(self) -> list[str]:
        """The names, in registration order."""
        return [name for name, kind in SCHEDULES.metas().items() if getattr(kind, self.field)]

    def copy(self) -> set[str]:
        """The names registered now, as a plain set of the caller's own."""
        return set(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(getattr(kind_of(name), self.field))

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self._names()))}}}"


class _KindMap(_KindView, collections.abc.Mapping):
    """Canonical name -> the kind's ``field`` of the schedules registered now where it is set: a read-only view of
    the registry that reads as the dict it was (``[name]``, ``get``, ``in``, ``keys`` / ``values`` / ``items``,
    ``==``, ``|``, ``copy``: :data:`_MAP_READS`), each read on one state of it; a change is refused
    (:data:`_MAP_CHANGES`). ``json.dumps`` takes only a real dict (no ``Mapping``): give it ``copy()``."""

    def copy(self) -> dict:
        """The entries registered now, as a plain dict of the caller's own (in registration order)."""
        values = {name: getattr(kind, self.field) for name, kind in SCHEDULES.metas().items()}
        return {name: value for name, value in values.items() if value}

    def __getitem__(self, name):
        value = getattr(kind_of(name), self.field) if isinstance(name, str) else None
        if not value:
            raise KeyError(name)
        return value

    def __iter__(self):
        return iter(self.copy())

    def __len__(self) -> int:
        return len(self.copy())


# The views' reads that a set / dict has beyond what their classes define: run on a snapshot (_reading). And what a
# set / dict had that would change them: refused (_refusing).
_SET_READS = ("__eq__", "__le__", "__lt__", "__ge__", "__gt__", "__or__", "__ror__", "__and__", "__rand__", "__sub__",
              "__rsub__", "__xor__", "__rxor__", "isdisjoint", "union", "intersection", "difference",
              "symmetric_difference", "issubset", "issuperset")
_SET_CHANGES = ("add", "discard", "remove", "pop", "clear", "update", "intersection_update", "difference_update",
                "symmetric_difference_update", "__ior__", "__iand__", "__isub__", "__ixor__")
_MAP_READS = ("__eq__", "__or__", "__ror__", "__reversed__", "keys", "values", "items")
_MAP_CHANGES = ("__setitem__", "__delitem__", "pop", "popitem", "clear", "update", "setdefault", "__ior__")


def _give(view: type, reads: tuple[str, ...], changes: tuple[str, ...], was: str) -> None:
    for method in reads:
        setattr(view, method, _reading(method))
    for method in changes:
        setattr(view, method, _refusing(method, was))


_give(_KindNames, _SET_READS, _SET_CHANGES, "set")
_give(_KindMap, _MAP_READS, _MAP_CHANGES, "dict")


# The names of each kind, for code that lists them or asks one name's kind outside a lookup (app.docs, errors that
# list the others): views of the registry. Where the function is run, its kind is the one found with it
# (get_sigmas: SCHEDULES.find).
TABLE_SCHEDULES = _KindNames("TABLE_SCHEDULES", "needs_table")
FLOW_TABLE_SCHEDULES = _KindNames("FLOW_TABLE_SCHEDULES", "on_flow")
EDM_TABLE_SCHEDULES = _KindNames("EDM_TABLE_SCHEDULES", "on_edm")
FIXED_ENDS = _KindMap("FIXED_ENDS", "fixed_ends")
PRESETS = _KindMap("PRESETS", "preset")
# What get_sigmas passes a schedule from the native schedule, not options of the schedule.
FROM_NATIVE = ("training_sigmas", "table_axis", "model_shift")


ENDS = ("sigma_min", "sigma_max")  # the range ends a schedule takes, and may have fixed instead (fixed_ends)


def schedule_kind(needs_table, fixed_ends, on_flow, on_edm, preset) -> ScheduleKind:
    """:func:`register`'s kind arguments, checked: the flags True or False (:func:`~samplers.core.validate.boolean`;
    they went through ``bool()``, so ``needs_table="no"`` registered a table schedule), ``on_flow`` / ``on_edm`` only
    with ``needs_table`` (they say which other tables a table schedule runs on, and nothing else reads them),
    ``fixed_ends`` a collection of :data:`ENDS` and ``preset`` a string."""
    needs_table, on_flow, on_edm = (boolean(flag, value) for flag, value in
                                    (("needs_table", needs_table), ("on_flow", on_flow), ("on_edm", on_edm)))
    for flag, value in (("on_flow", on_flow), ("on_edm", on_edm)):
        if value and not needs_table:
            raise InvalidInput(f"{flag}=True says which other models' training tables a table schedule also runs on "
                               f"(needs_table=True); this schedule takes no table, so {flag} would be ignored: pass "
                               f"needs_table=True with it, or leave {flag} out")
    if not isinstance(preset, str):
        raise InvalidType(f"preset must be a string (what fixes the schedule's σ, for the errors that name it; \"\" "
                          f"for none), got {preset!r}")
    return ScheduleKind(needs_table, on_flow, on_edm, _fixed_ends(fixed_ends), preset)


def _fixed_ends(fixed_ends) -> tuple[str, ...]:
    """``fixed_ends`` as a tuple of range ends, each once: a collection (tuple, list, set) of :data:`ENDS`, read at
    most one past both. A lone string (the one end "sigma_min", which was taken as its characters) or an unknown end
    was registered, and then every ``get_sigmas`` of the schedule failed with a bare KeyError."""
    if not is_collection(fixed_ends):
        raise InvalidType(f"fixed_ends must be a collection of the range ends {ENDS} the schedule does not take, got "
                          f"{fixed_ends!r}; pass ('sigma_min',) for one")
    ends = tuple(itertools.islice(fixed_ends, len(ENDS) + 1))  # more than both ends repeats one: refused below
    for end in ends:
        if not isinstance(end, str) or end not in ENDS:
            raise InvalidInput(f"fixed_ends: {end!r} is not a range end; the ends a schedule may not take (its "
                               f"training timesteps or its formula fix them) are {ENDS}")
    return tuple(distinct("fixed_ends", ends, "each end is fixed or not"))


def register(name: str, aliases: tuple[str, ...] = (), needs_table: bool = False, fixed_ends: tuple[str, ...] = (),
             on_flow: bool = False, on_edm: bool = False, preset: str = "", replace: bool = False):
    """Register a schedule function; ``needs_table`` ones get the native model's ``training_sigmas`` (``on_flow``: a
    flow model's too; ``on_edm``: a continuous EDM model's, ComfyUI's table of it); ``fixed_ends``: the range ends
    ("sigma_min", "sigma_max") it does not take; ``preset``: its σ are fixed data (says which), it takes no range at
    all (:class:`ScheduleKind`). ``aliases``: any collection of names but a lone string. A name that is taken is an
    error unless ``replace=True``, which replaces a schedule you registered yourself (never a built-in's name or
    alias: :meth:`Registry.add`); the kind is the new entry's, swapped in with it. Every argument is checked here,
    before anything is registered (:func:`schedule_kind`)."""
    aliases = check_aliases("schedule", aliases)
    registered_by = registering_module()  # a built-in if a BUILTIN_MODULES module registers it
    kind = schedule_kind(needs_table, fixed_ends, on_flow, on_edm, preset)

    def decorate(fn):
        SCHEDULES.add(name, fn, aliases, replace=replace, registered_by=registered_by, meta=kind)
        return fn
    return decorate

def get(name: str) -> Callable:
    """The schedule function registered as ``name``."""
    return SCHEDULES.get(name)

def available() -> list[str]:
    return SCHEDULES.names()

def range_end(name: str, value) -> float:
    """A range end given to a schedule: a real number (not a bool, not NaN), as a float. A numpy real scalar
    (``np.float32(0.03)``), a 0-d real numpy array or a 0-d real tensor counts as the number it holds, as the step
    count's do."""
    number = value
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        number = value.item()
    elif isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":  # np.array(0.03)
        number = value.item()
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise InvalidType(f"{name} must be a number, got {value!r} (a σ: a real number, not a bool or a string); "
                          f"pass it as a float, or leave {name} out for the model's own")
    if math.isnan(number):  # the right type, a value that is no σ
        raise InvalidInput(f"{name} must be a number, got nan (NaN is no σ); pass a real σ, or leave {name} out for "
                           "the model's own")
    return float(number)


def check_steps(n: int, sigma_min, sigma_max, need_range: bool = True) -> int:
    """The step count (an integer >= 1 whose schedule fits in memory) and, with ``need_range``, the σ range."""
    try:
        n = integer("the number of steps", n, lo=1)
    except InvalidInput:
        raise InvalidInput(f"the number of steps must be an integer >= 1, got {n!r}") from None
    check_allocation(64 * (n + 1), f"a schedule of {n} steps", "cpu")
    if need_range:
        if sigma_min is None or sigma_max is None:
            raise InvalidInput("sigma_min and sigma_max are required (or pass native= to samplers.get_sigmas)")
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            range_end(name, value)
        check_order(sigma_min, sigma_max)
    return n


def check_order(sigma_min, sigma_max) -> None:
    """0 < sigma_min < sigma_max, refused saying which of the three is broken."""
    if not (0 < sigma_min < sigma_max):
        raise InvalidInput(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}; "
                           + ("pass them the other way round" if 0 < sigma_max < sigma_min else
                              "sigma_min is the smallest non-zero σ (the schedule appends the final 0 itself)"
                              if sigma_min <= 0 else "give a range of two different values"))


def steps_and_range(n: int, sigma_min, sigma_max) -> tuple[int, float, float]:
    """:func:`check_steps` with its range, and the range ends as floats (a numpy or 0-d tensor end computes as the
    Python float it holds)."""
    n = check_steps(n, sigma_min, sigma_max)
    return n, float(sigma_min), float(sigma_max)


def check_rho(rho) -> float:
    """ρ of the Karras / polyexponential schedules: a finite number > 0 (ρ = 0 would divide by zero)."""
    return positive("rho", rho)

def finite_max(name: str, sigma_max: float) -> float:
    if math.isinf(sigma_max):
        raise InvalidInput(f"schedule {name!r} needs a finite sigma_max, but it is inf (a flow or zero-terminal-SNR "
                         "model); pass sigma_max=<finite value>, or use the 'flow' schedule / a timestep spacing "
                         "(on a zero-terminal-SNR model also a ComfyUI / A1111 name, 'comfyui:karras', "
                         "'a1111:Karras': the tools' own table, which ends at σ ≈ 4518.76)")
    return sigma_max

def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)])

def strictly_decreasing(sigmas: torch.Tensor, name: str, fix: str = "use fewer steps or a wider sigma range"
                        ) -> torch.Tensor:
    """Check the result is strictly decreasing (with its trailing 0); say which settings collapse steps (``fix``: what
    to change, where that is not the step count or the range)."""
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise InvalidInput(f"schedule {name!r} repeats a sigma with these settings ({sigmas.tolist()}); {fix}")
    return sigmas

def from_timesteps(timesteps: torch.Tensor, training_sigmas) -> torch.Tensor:
    if training_sigmas is None:
        raise InvalidInput("timestep spacings need the model's training table: pass training_sigmas= "
                         "(or native=<VPDiscrete> to samplers.get_sigmas)")
    table = torch.as_tensor(training_sigmas, dtype=torch.float64)
    log_table = table.log()
    low = timesteps.floor().long().clamp(0, table.numel() - 2)
    w = (timesteps - low).clamp(0, 1)
    lo, hi = log_table[low], log_table[low + 1]
    # Exact table values at integer timesteps (also where the table is inf), log-σ interpolation between.
    log_sigma = torch.where(w == 0, lo, torch.where(w == 1, hi, lo + w * (hi - lo)))
    return append_zero(log_sigma.exp())

def num_train(n: int, training_sigmas) -> int:
    if training_sigmas is None:
        from_timesteps(torch.zeros(1), None)
    total = len(training_sigmas)
    if n > total:
        raise InvalidInput(f"{n} steps is more than the model's {total} training timesteps")
    return total

def timestep_of(sigma: float, training_sigmas) -> float:
    """The fractional training timestep of ``sigma`` (linear in log σ between table entries)."""
    log_table = torch.as_tensor(training_sigmas, dtype=torch.float64).log().numpy()
    return float(np.interp(math.log(sigma), log_table, np.arange(len(log_table), dtype=np.float64)))

def table_range(training_sigmas, sigma_min, sigma_max, name: str = "this schedule") -> tuple[float, float]:
    """Timesteps of the range ends (the whole table when no range is given). An end outside the table is refused:
    the table has no timestep there, and reading the nearest end instead would drop the caller's value silently."""
    total = len(training_sigmas)
    table = torch.as_tensor(training_sigmas, dtype=torch.float64)
    low, high = float(table[0]), float(table[-1])
    for end, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if value is None:
            continue
        range_end(end, value)
        # the ends themselves (to rounding) are the table's: a model's own sigma_min / sigma_max pass (σ = inf only
        # where the table holds it, a zero-terminal-SNR model; on a finite table it would be read as its top)
        below = value < low and not math.isclose(value, low, rel_tol=1e-6)
        above = value > high and not math.isclose(value, high, rel_tol=1e-6)
        if below or above:
            raise InvalidInput(f"schedule {name!r} spaces the model's training timesteps, which cover σ from "
                               f"{low:g} to {high:g}; {end}={value!r} lies outside them (it would be read as the "
                               f"table's end); pass {end} within [{low:g}, {high:g}] or leave it out for the model's "
                               "own, or use a σ schedule that takes any range (karras, exponential)")
        top = float(table[-2])
        if math.isinf(high) and not math.isinf(value) and value > top and not math.isclose(value, top, rel_tol=1e-6):
            # log-σ interpolation toward an inf entry is flat: every σ between would be read as the last finite one
            raise InvalidInput(f"schedule {name!r} spaces a zero-terminal-SNR table, whose largest finite σ is "
                               f"{top:g} (timestep {total - 2}) and whose last entry (timestep {total - 1}) is inf: "
                               f"{end}={value!r} lies between them, where the table has no timestep (it would be read "
                               f"as {top:g}); pass {end} <= {top:g}, or sigma_max=inf (the table's top), or the "
                               f"tool's name ('comfyui:{name}') to read the table with ComfyUI's "
                               "finite last σ (4518.76)")
    # a swapped or empty range, named so (the schedule would otherwise be refused as repeating a σ); a left-out end
    # is the table's
    check_order(low if sigma_min is None else sigma_min, high if sigma_max is None else sigma_max)
    hi = total - 1.0 if sigma_max is None or math.isinf(sigma_max) else timestep_of(sigma_max, training_sigmas)
    lo = 0.0 if sigma_min is None else timestep_of(sigma_min, training_sigmas)
    return hi, lo

def schedule_options(fn) -> list[str]:
    """The keyword options of a schedule function (beyond n, sigma_min, sigma_max and what the native gives it)."""
    params = inspect.signature(fn).parameters
    return [p for p in params if p not in ("n", "sigma_min", "sigma_max", *FROM_NATIVE)]


def _check_fixed_ends(canonical: str, fn, kind: ScheduleKind, native, training_sigmas, options: dict | None = None,
                      **given) -> None:
    """An explicit range end the schedule does not take must be the model's own (its training table's); a preset
    takes no end other than its levels' own, with or without a model (the model's range is not what it uses)."""
    if kind.preset:
        ends = getattr(fn, "ends", None)
        level_options = {k: v for k, v in (options or {}).items() if k == "levels"}
        own = dict(zip(("sigma_min", "sigma_max"), ends(**level_options))) if ends is not None else {}
        for end, value in given.items():
            if value is None:
                continue
            number = ((isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)))
                      or (isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point()))
            if number and end in own and math.isclose(float(value), own[end], rel_tol=1e-6):
                continue  # the preset's own end: what it uses anyway
            if number and native is not None and math.isclose(float(value), float(getattr(native, end)),
                                                              rel_tol=1e-6):
                continue  # the model's own end, which get_sigmas fills in when it is left out: not a choice dropped
            where = "" if native is None else " (native= does not change them)"
            mine = f" (its own {end} is {own[end]:g})" if end in own else ""
            raise InvalidOption(f"schedule {canonical!r} takes no {end}: its σ are {kind.preset}{where}, so "
                                f"{end}={value!r} would be ignored{mine}; leave sigma_min and sigma_max out, or use a "
                                "σ schedule that takes a range (karras, exponential, normal, sgm_uniform)")
    for end in kind.fixed_ends:
        value = given[end]
        if value is None:
            continue
        own = getattr(native, end, None)
        if own is None and training_sigmas is not None:
            table = torch.as_tensor(training_sigmas, dtype=torch.float64)
            own = float(table[0] if end == "sigma_min" else table[-1])
        if own is None and kind.needs_table:  # no table: the schedule itself says it needs one
            continue
        if own is None:  # a formula that sets this end itself (linear_quadratic's last level)
            raise InvalidOption(f"schedule {canonical!r} takes no {end}: its σ do not depend on it, so {end}="
                                f"{value!r} would be ignored; leave {end} out (with native= the model's own {end} is "
                                "taken as what it is)")
        if not math.isclose(float(value), float(own), rel_tol=1e-6):
            raise InvalidOption(f"schedule {canonical!r} takes no {end}: its σ come from the model's training "
                                f"timesteps (its {end} is {float(own):g}), so {end}="
                                f"{value!r} would be ignored; leave {end} out, or use a σ schedule that takes a range "
                                "(karras, exponential, normal, sgm_uniform)")


def _same_end(value, own) -> bool:
    """``value`` is the model's end ``own`` (within 1e-6 relative, as an end a schedule does not take is checked: a
    float32 copy of it too; both infinite alike): any real number, numpy scalar or one-element tensor; a bool or
    anything else is not."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            return False
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isclose(float(value), float(own), rel_tol=1e-6)


def _same_table(given, table: torch.Tensor) -> bool:
    """Whether ``given`` (training_sigmas as a caller passes it) holds the values of ``table``, in float64."""
    try:
        values = torch.as_tensor(given, dtype=torch.float64).flatten().cpu()
    except (TypeError, ValueError, RuntimeError):
        return False
    return values.shape == table.shape and torch.equal(values, table.to("cpu", torch.float64))


def _training_table(canonical: str, kind: ScheduleKind, table) -> torch.Tensor:
    """A ``training_sigmas=`` passed to a table schedule, checked once: a 1-D sequence of at least 2 σ, finite and
    positive (but a last inf: a zero-terminal-SNR table), strictly increasing with the timestep, as a model's table is
    (``VPDiscrete.sigmas``); a diffusers scheduler's ``.sigmas`` run the other way and end in 0."""
    if not kind.needs_table:
        raise InvalidOption(f"schedule {canonical!r} takes no training_sigmas: it is a formula on σ_min and σ_max "
                            f"(pass sigma_min= / sigma_max=, or native=); the table schedules take it "
                            f"({', '.join(sorted(TABLE_SCHEDULES))})")
    try:
        values = torch.as_tensor(table, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidType(f"training_sigmas must be a 1-D sequence of numbers (a model's σ per training timestep), "
                          f"got {type(table).__name__}") from None
    fix = ("pass the model's table, σ per training timestep in increasing order (native=VPDiscrete(...) gives it; a "
           "diffusers scheduler's .sigmas run the other way: use native= built from its config)")
    if values.ndim != 1 or values.numel() < 2:
        raise InvalidInput(f"training_sigmas must be 1-D with at least 2 entries, got shape {tuple(values.shape)}; {fix}")
    listed = values.tolist()
    for i, v in enumerate(listed):
        if not (v > 0 and (math.isfinite(v) or (math.isinf(v) and i == len(listed) - 1))):
            raise InvalidInput(f"training_sigmas[{i}] = {v!r}: every σ of the table must be finite and > 0 (only the "
                               f"last may be inf, a zero-terminal-SNR table's); {fix}")
    bad = next((i for i in range(len(listed) - 1) if not listed[i] < listed[i + 1]), None)
    if bad is not None:
        raise InvalidInput(f"training_sigmas must increase with the timestep, but training_sigmas[{bad}] = "
                           f"{listed[bad]:g} and training_sigmas[{bad + 1}] = {listed[bad + 1]:g}; {fix}")
    return values


def get_sigmas(name: str, n: int, native: NoiseSchedule | None = None, sigma_min: float | None = None,
               sigma_max: float | None = None, **kw) -> torch.Tensor:
    """Build the schedule ``name`` with n steps, taking the sigma range from ``native`` unless given.

    ``get_sigmas("karras", 20, native=VPDiscrete.from_betas())``; timestep spacings use the native
    training table, and ``flow`` uses a :class:`~samplers.core.native.RectifiedFlow`'s shift unless one is passed.

    ``name`` resolves as everywhere else (:func:`samplers.core.names.resolve_schedule`): a registry name or alias, an
    A1111 "Schedule type" (``"Beta"``, ``"KL Optimal"``, ``"Align Your Steps"``, ``"Uniform"``, ``"DDIM"``) or a
    ComfyUI ``scheduler`` (``"comfyui:beta"``), each giving that tool's σ; options a tool's name fixes cannot be
    passed with another value.
    """
    from ..core.names import resolve_schedule  # the name resolver lives in core; it builds schedules lazily

    canonical, fixed = resolve_schedule(name, native=native if isinstance(native, NoiseSchedule) else None)
    clash = {k: v for k, v in kw.items() if k in fixed and fixed[k] != v}
    if clash:
        key, value = next(iter(clash.items()))
        raise InvalidOption(f"schedule {name!r} is {canonical!r} with {key}={fixed[key]!r}, but {key}={value!r} was "
                            f"passed; pass the registry name {canonical!r} to choose {key} yourself")
    kw = {**fixed, **kw}
    # a tool's name on a zero-terminal-SNR model (names.resolve_schedule): the schedule on the model as the tool reads
    # it, its last ᾱ the tool's finite stand-in for 0 (VPDiscrete.with_terminal_alpha_bar), table and range alike
    terminal = kw.pop("terminal_alpha_bar", None)
    # an A1111 name on a discrete model (names.resolve_schedule): the model's ᾱ as A1111 stores them, in float32
    # (VPDiscrete.with_float32_alphas_cumprod; on a zero-SNR model A1111's float32 rescale), before its terminal ᾱ
    float32_table = kw.pop("float32_alphas_cumprod", False)
    given = native
    if not isinstance(float32_table, bool):
        raise InvalidType(f"float32_alphas_cumprod must be True or False, got {float32_table!r}")
    if float32_table:
        if not isinstance(native, VPDiscrete):
            raise InvalidInput("float32_alphas_cumprod reads a discrete model's alphas_cumprod as A1111 stores them "
                               "(float32): pass native=<VPDiscrete>")
        native = native.with_float32_alphas_cumprod()
    if terminal is not None:
        if not isinstance(native, VPDiscrete):
            raise InvalidInput("terminal_alpha_bar sets the last alphas_cumprod of a zero-terminal-SNR model: pass "
                               "native=<VPDiscrete with rescale_betas_zero_snr>")
        native = native.with_terminal_alpha_bar(terminal)
    if native is not given:  # the model's own ends, passed as generic code does (what is filled in when left out), are
        # its ends as the tool reads it
        if sigma_min is not None and _same_end(sigma_min, given.sigma_min):
            sigma_min = native.sigma_min
        if sigma_max is not None and _same_end(sigma_max, given.sigma_max):
            sigma_max = native.sigma_max
    canonical, fn, kind = SCHEDULES.find(canonical)  # the function and its kind from one state of the registry
    kind = kind or PLAIN
    valid = schedule_options(fn)
    if "model_shift" in kw:  # what the native's sigma_min carries: get_sigmas alone knows where sigma_min came from
        raise InvalidOption(f"schedule {canonical!r} takes no model_shift= from a caller (got "
                            f"{kw['model_shift']!r}): it is the shift of native='s own sigma_min, filled in with "
                            "native=RectifiedFlow(...); pass native=, or the end you want as sigma_min (kept exactly)")
    unknown = [k for k in kw if k not in valid and k not in FROM_NATIVE]
    if unknown:
        raise InvalidOption(f"schedule {canonical!r} has no option {', '.join(map(repr, unknown))}; its options are: "
                            f"{', '.join(valid) or 'none'}")
    params = inspect.signature(fn).parameters
    missing = [k for k in valid if params[k].default is inspect.Parameter.empty and k not in kw]
    if missing:
        raise InvalidOption(f"schedule {canonical!r} needs {', '.join(f'{k}=' for k in missing)} (e.g. "
                            "samplers.get_sigmas(name, n, native=..., " + ", ".join(f"{k}=..." for k in missing) + ")")
    if native is not None and not isinstance(native, NoiseSchedule):
        raise InvalidType(f"native must be a samplers.core.native schedule (VPDiscrete, RectifiedFlow, ...), got "
                          f"{type(native).__name__}")
    if kw.get("training_sigmas") is not None:
        kw["training_sigmas"] = _training_table(canonical, kind, kw["training_sigmas"])
    for end, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if value is not None:  # once, at the boundary: a string or NaN is no σ, whatever the schedule does with it
            range_end(end, value)
    _check_fixed_ends(canonical, fn, kind, native, kw.get("training_sigmas"), kw, sigma_min=sigma_min,
                      sigma_max=sigma_max)
    if native is not None:
        if isinstance(native, RectifiedFlow) and sigma_min is None and (
                canonical == "flow_dynamic" or (canonical == "flow" and kw.get("mu") is not None)):
            # the model's sigma_min carries its shift, which a dynamic shift e^mu replaces (diffusers' grid)
            kw["model_shift"] = native.shift
        sigma_min = native.sigma_min if sigma_min is None else sigma_min
        sigma_max = native.sigma_max if sigma_max is None else sigma_max
        if kind.needs_table:
            if isinstance(native, RectifiedFlow) and not kind.on_flow:
                raise InvalidInput(f"schedule {canonical!r} spaces a discrete (eps / v) model's training timesteps "
                                   "(diffusers' timestep_spacing), which a flow model has no rule for; use 'flow' "
                                   "(linear in flow time with the model's shift; end='diffusers' for diffusers' "
                                   "FlowMatchEulerDiscreteScheduler grid), or ComfyUI's table schedules on its flow "
                                   "table ("
                                   f"{', '.join(sorted(FLOW_TABLE_SCHEDULES))})")
            if isinstance(native, VE):
                _check_edm_table(canonical, kind, native, kw)
            if not hasattr(native, "sigmas"):
                raise InvalidInput(f"schedule {canonical!r} spaces a discrete model's training timesteps; "
                                 f"{type(native).__name__} has no training table")
            if kw.get("training_sigmas") is not None and not _same_table(kw["training_sigmas"], native.sigmas):
                raise InvalidInput(f"schedule {canonical!r} got training_sigmas and native=, which has a training "
                                   "table of its own, another one: one would be ignored; pass native= alone (its "
                                   "table), or training_sigmas without native")
            kw.setdefault("training_sigmas", native.sigmas)
            if "table_axis" in inspect.signature(fn).parameters and isinstance(getattr(native, "table_axis", None),
                                                                                TableAxis):
                kw.setdefault("table_axis", native.table_axis)
        if canonical == "flow" and isinstance(native, RectifiedFlow) and "mu" not in kw:
            kw.setdefault("shift", native.shift)
        if canonical == "vp" and isinstance(native, VPContinuous):
            kw.update(_vp_of_model(native, kw))
    return _returned(canonical, fn(n, sigma_min, sigma_max, **kw))


def _returned(canonical: str, sigmas):
    """What the schedule ``canonical`` returned, checked against the contract of a schedule (this module's
    docstring): a 1-D float64 tensor on the CPU. A user's schedule that returns something else (a list, float32 σ)
    is refused naming it, rather than failing later in whatever reads the σ, or running in another precision."""
    if isinstance(sigmas, torch.Tensor) and sigmas.ndim == 1 and sigmas.dtype == torch.float64 \
            and sigmas.device.type == "cpu":
        return sigmas
    got = (f"a {sigmas.ndim}-D {str(sigmas.dtype).removeprefix('torch.')} tensor on {sigmas.device.type}"
           if isinstance(sigmas, torch.Tensor) else f"a {type(sigmas).__name__} ({reprlib.repr(sigmas)})")
    raise InvalidType(f"schedule {canonical!r} returned {got}; a schedule returns its σ, decreasing to 0, as a 1-D "
                      "torch float64 tensor on the CPU: return torch.tensor(sigmas, dtype=torch.float64)")


def _check_edm_table(canonical: str, kind: ScheduleKind, native: VE, kw: dict) -> None:
    """A table schedule on a continuous VE model: ComfyUI's table rules on ComfyUI's table of it (``VE.sigmas``, its
    ``ModelSamplingContinuousEDM``'s), where that is what ComfyUI runs; the others refused, saying why."""
    if not kind.on_edm:
        raise InvalidInput(f"schedule {canonical!r} spaces a discrete (eps / v) model's training timesteps "
                           "(diffusers' timestep_spacing, A1111's / Forge's timestep schedules), and a continuous "
                           "EDM / VE model has no training timesteps: diffusers' EDM schedulers (EDMEulerScheduler, "
                           "EDMDPMSolverMultistepScheduler) take no timestep_spacing; use 'karras' (EDM's own, rho=7), "
                           "'exponential' or another σ schedule, or ComfyUI's table schedules on the table ComfyUI "
                           f"builds for an EDM model ({', '.join(sorted(EDM_TABLE_SCHEDULES))})")
    if native.time_input == "sigma":
        raise InvalidInput(f"schedule {canonical!r} on a continuous VE model is ComfyUI's rule on the table of its "
                           "ModelSamplingContinuousEDM, whose time is ¼·ln σ; this model's time input is σ itself "
                           "(score-SDE VE), which ComfyUI has no model sampling for, so there is no ComfyUI schedule "
                           "to reproduce; use a σ schedule ('karras', 'exponential', 'kl_optimal'), or VE(..., "
                           "time_input='edm') if the model is an EDM one")
    if canonical == "ddim_uniform" and kw.get("keep_stepping") and float(native.sigmas[1]) <= 1e-5:
        raise InvalidInput(f"ComfyUI's ddim_uniform on this model's table, whose second σ {float(native.sigmas[1]):g} "
                           "is within 1e-05 of 0 (ddim_scheduler: math.isclose(sigmas[1], 0, abs_tol=0.00001)), takes "
                           "one step more and ends at that σ without a final 0, which this library's ddim_uniform does "
                           "not reproduce; use a larger sigma_min (EDM models use 0.002), or 'normal' / 'simple'")


def _vp_of_model(native: VPContinuous, kw: dict) -> dict:
    """The 'vp' schedule's parameters of a continuous VP model: uniform in the model's own time (its kind, and its β's
    or its cosine offset), as 'flow' takes a flow model's shift; one given otherwise is refused, not overridden."""
    if native.kind == "linear":
        model = {"kind": "linear", "beta_d": native.beta_max - native.beta_min, "beta_min": native.beta_min}
    else:
        model = {"kind": "cosine", "cosine_s": native.cosine_s}
    clash = {k: v for k, v in kw.items() if k in model and not (
        v == model[k] if isinstance(model[k], str) or isinstance(v, str)
        else isinstance(v, numbers.Real) and math.isclose(v, model[k], rel_tol=1e-12))}
    if native.kind == "cosine":
        clash.update({k: kw[k] for k in ("beta_d", "beta_min") if k in kw})
    if clash:
        raise InvalidOption(f"schedule 'vp' got {', '.join(f'{k}={v!r}' for k, v in clash.items())} and native="
                            f"{native!r}, whose time is its own ({', '.join(f'{k}={v!r}' for k, v in model.items())}): "
                            "the schedule would be uniform in another model's time; leave them out (the model's), or "
                            "leave out native and pass sigma_min / sigma_max")
    return model

"""The one name resolver: every entry point (``samplers.sample`` / ``get`` / ``info``, the pipeline, the CLI, the
diffusers shim, ``samplers.interop.kdiffusion``) turns what the user typed into a registry sampler here.

A name spelt exactly as one of these has it is looked up in this order:

1. a registry name or alias (``"dpmpp_2m"``, ``"sample_dpmpp_2m"``; A1111's lower-case ``"restart"`` is the registry's
   ``restart`` too: A1111's label is ``"Restart"``);
2. an A1111 / Forge label (``"DPM++ 2M Karras"``, ``"Euler a"``, ``"k_dpmpp_2m"``);
3. a ComfyUI ``sampler_name`` (``"dpmpp_2m_sde_gpu"``, ``"uni_pc_bh2"``);
4. a diffusers scheduler class (``"DPMSolverMultistepScheduler"``).

Any other spelling is matched ignoring case, spaces, ``-`` and ``_`` against all four: where the names it matches run
the same thing it is that; where they run different things (``"dpm fast"``: the registry's ``dpm_fast`` and A1111's
``"DPM fast"``, with A1111's settings) it is refused as ambiguous, naming each exact spelling and what it runs.

A prefix picks the table and skips the others: ``"a1111:DPM++ 2M"``, ``"comfyui:dpmpp_2m_sde"`` (ComfyUI's own
defaults even where the name is also a registry name), ``"diffusers:UniPCMultistepScheduler"``, ``"registry:euler"``;
other prefixes (``"fitted:PATH"``) are handled by the package that registers them (:func:`register_prefix`).

A label may imply sampler options (``"DPM++ 2M SDE Heun"``: ``solver_type="heun"``, Brownian noise) and a schedule.
:func:`resolve_call` merges them with what the caller passed: the label's schedule applies unless the caller sets
one; a label that *names* its schedule ("... Karras") and a caller's different schedule, or a caller's option that
contradicts the label's, is an error that says so. Nothing is ever silently replaced.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
from typing import Callable

import numpy as np

from . import labels
from .errors import InvalidInput, InvalidOption, InvalidType, Unavailable, UnknownNameError
from .registry import SAMPLERS, _normalise, load_builtins


@dataclasses.dataclass(frozen=True)
class Label:
    """What a name stands for: a registry sampler with options, and the schedule it implies (if any)."""

    label: str
    sampler: str
    options: dict = dataclasses.field(default_factory=dict)
    schedule: str | None = None
    schedule_options: dict = dataclasses.field(default_factory=dict)
    schedule_is_explicit: bool = False  # the label names its schedule ("DPM++ 2M Karras")
    discard_penultimate_sigma: bool = False  # A1111's discard_next_to_last_sigma
    source: str = "registry"  # registry | a1111 | comfyui | diffusers | <prefix>
    sigmas: tuple | None = None  # a label that fixes the schedule itself (a fitted solver's nodes)
    # the tool runs it on the model's whole σ range whatever schedule type is chosen (A1111's txt2img DPM fast /
    # adaptive): the pipeline refuses a caller's schedule with other ends (models.pipeline.PipelineSpec.plan_run)
    model_range: bool = False


TABLES = {"a1111": labels.A1111, "comfyui": labels.COMFYUI, "diffusers": labels.DIFFUSERS}
_PREFIXES: dict[str, Callable[[str], Label]] = {}


def register_prefix(prefix: str, handler: Callable[[str], Label]) -> None:
    """``handler(rest)`` resolves names ``"<prefix>:<rest>"`` (e.g. ``fitted:PATH`` → the fitted solver in PATH)."""
    key = prefix.lower()
    if key in TABLES or key == "registry" or key in _PREFIXES:
        raise InvalidOption(f"name prefix {prefix!r} is already taken")
    _PREFIXES[key] = handler


def _index(table: dict) -> dict[str, str]:
    return {_normalise(k): k for k in table}


_INDEX = {source: _index(table) for source, table in TABLES.items()}


def _from_table(source: str, key: str) -> Label:
    sampler, options, schedule, how = TABLES[source][key]
    return Label(key, sampler, dict(options), schedule, {}, how == "explicit",
                 (source == "a1111" and key in labels.A1111_DISCARD_PENULTIMATE)
                 or (source == "comfyui" and key in labels.COMFYUI_DISCARD_PENULTIMATE), source,
                 model_range=source == "a1111" and key in labels.A1111_MODEL_RANGE)


_REFUSED = {"comfyui": ("ComfyUI", labels.COMFYUI_REFUSED), "a1111": ("A1111", labels.A1111_REFUSED),
            "diffusers": ("diffusers", labels.DIFFUSERS_REFUSED)}


def _lookup(source: str, name: str, exact: bool = False) -> Label | None:
    if source == "registry":
        canonical = SAMPLERS.exact(name) if exact else SAMPLERS.canonical(name) if name in SAMPLERS else None
        return None if canonical is None else Label(name, canonical)
    if exact:
        if name in TABLES[source]:
            return _from_table(source, name)
        return _a1111_combined(name, exact=True) if source == "a1111" else None
    if source in _REFUSED:
        tool, refused = _REFUSED[source]
        key = next((k for k in refused if _normalise(k) == _normalise(name)), None)
        if key is not None:
            raise Unavailable(f"{tool} sampler {name!r} is not available: {refused[key]}")
    key = _INDEX[source].get(_normalise(name))
    if key is None:
        return _a1111_combined(name) if source == "a1111" else None
    return _from_table(source, key)


def _a1111_split(name: str) -> tuple[str, str] | None:
    """``(sampler part, Schedule type)`` where ``name`` ends in " <a Schedule type's label, name or alias>"."""
    for kind, spellings in labels.A1111_SCHEDULE_TYPES.items():
        for suffix in (kind, *spellings):
            if name.endswith(" " + suffix):
                return name[:-len(suffix) - 1], kind
    return None


# A1111's sampler names (its all_samplers_map: no k_ aliases, no "<sampler> <type>" entry of versions before 1.9),
# each with every Schedule type: the names A1111 1.9+'s get_sampler_and_scheduler splits, as typed and normalised
_A1111_BASES = [k for k in labels.A1111 if not k.startswith("k_") and _a1111_split(k) is None]
_A1111_COMBINED = {f"{base} {suffix}": (base, kind) for base in _A1111_BASES
                   for kind, spellings in labels.A1111_SCHEDULE_TYPES.items() for suffix in (kind, *spellings)}
_A1111_COMBINED_INDEX = {_normalise(k): v for k, v in _A1111_COMBINED.items()}


def _a1111_combined(name: str, exact: bool = False) -> Label | None:
    """A1111 1.9+'s "<sampler> <Schedule type>" ("Euler a Karras", "DPM++ 2M sgm_uniform"): that sampler's label on
    that type, named (a caller's other schedule conflicts); "Automatic" is the label itself. A1111's timestep
    samplers (DDIM, PLMS, UniPC) step its own timesteps whatever the type, so a type other than Automatic is refused
    with them rather than run as a schedule A1111 would not use."""
    hit = _A1111_COMBINED.get(name) if exact else _A1111_COMBINED_INDEX.get(_normalise(name))
    if hit is None:
        return None
    base, kind = hit
    if kind == "SGM Uniform" and name.endswith((" Uniform", " uniform")):
        # A1111's get_sampler_and_scheduler tries its types in order and strips " Uniform" (type Uniform) before it
        # reaches "SGM Uniform": it reads "<base> SGM" as no sampler and runs its default, DPM++ 2M, on Uniform
        raise InvalidOption(f"A1111 reads {name!r} as {name.rsplit(' ', 1)[0]!r} with the Uniform type (its name "
                            "parser strips ' Uniform' before it tries 'SGM Uniform') and, that being no sampler, runs "
                            f"its default DPM++ 2M: name the type apart — sampler {base!r} with schedule "
                            f"'a1111:SGM Uniform' — or write {base + ' sgm_uniform'!r}")
    found = _from_table("a1111", base)
    if kind == "Automatic":
        return dataclasses.replace(found, label=name)
    if found.schedule is None or base in labels.A1111_TIMESTEP_SAMPLERS:
        raise InvalidOption(f"{name!r} is A1111's {base!r} with the {kind!r} schedule type, which A1111 does not use "
                            f"there: its {base!r} steps its own timesteps whatever the type (names.md); use {base!r}, "
                            f"or the registry's {found.sampler!r} with schedule= the one you want")
    return dataclasses.replace(found, label=name, schedule=f"a1111:{kind}", schedule_is_explicit=True)


def name_prefix(name: str) -> str | None:
    """The prefix of ``name`` as :func:`resolve` reads it: what comes before the first ':', without the white space
    around it, in lower case (``"Fitted :x.json"`` → ``"fitted"``); None without a ':'."""
    return name.split(":", 1)[0].strip().lower() if ":" in name else None


def resolve(name: str) -> Label:
    """What ``name`` stands for (see the module docstring for the order and the prefixes)."""
    if not isinstance(name, str):
        raise InvalidType(f"a sampler name must be a string, got {type(name).__name__}")
    load_builtins()  # the built-in modules register their samplers and name prefixes
    if ":" in name:
        prefix, rest = name.split(":", 1)
        key = name_prefix(name)
        if key in _PREFIXES:
            return _PREFIXES[key](rest)
        if key in TABLES or key == "registry":  # spelt as the table has it first, as without a prefix
            found = _lookup(key, rest.strip(), exact=True) or _lookup(key, rest.strip())
            if found is None:
                _unknown(rest.strip(), key)
            return found
        if key not in ("torchdiffeq", "torchsde"):  # registry names such as "torchdiffeq.dopri5" use a dot
            raise UnknownNameError(f"unknown name prefix {prefix!r} in {name!r}; use one of "
                                   f"{sorted(['registry', *TABLES, *_PREFIXES])}, or no prefix")
    # The name as typed first ("DPM2" is A1111's label, "dpm_2" the registry's), then ignoring case, spaces, - and _
    # in every table at once: one answer, or the same run under several names, or an error naming the candidates.
    for source in _SOURCES:
        found = _lookup(source, name, exact=True)
        if found is not None:
            return found
    matches = []
    for source in _SOURCES:
        try:
            found = _lookup(source, name)
        except Unavailable:  # a refused ComfyUI name, unless an earlier table has the name (as before)
            if matches:
                continue
            raise
        if found is not None:
            matches.append(found)
    if not matches:
        _unknown(name, None)
    # a tool's entry whose exact spelling an earlier table has (ComfyUI's "lms", "er_sde": the registry's when typed)
    # is reached only with its prefix, so a variant spelling stands for the earlier table's name, as that spelling does
    reachable = [f for f in matches if not _shadowed(f)]
    matches = reachable or matches
    runs = {}
    for found in matches:
        runs.setdefault(_runs(found), found)
    if len(runs) > 1:
        listed = "; ".join(f"{_spelling(f)!r} ({_SOURCE_NAMES[f.source]}) runs {_describe(f)}" for f in runs.values())
        raise InvalidInput(f"sampler name {name!r} is not spelt as any table has it, and ignoring case, spaces, - and _ "
                           f"it matches names that run different things: {listed}; type the one you mean exactly as "
                           "shown (or with its prefix, e.g. 'registry:' / 'a1111:')")
    return matches[0]


def tool_label(name: str) -> str | None:
    """The other tool's name ``name`` spells (A1111's label, ComfyUI's name, diffusers' class: as the table has it,
    or ignoring case, spaces, - and _), described, or None: a name a user's sampler may not take, as typed without a
    prefix it would reach the registry first and run that sampler in place of the tool's
    (:func:`samplers.core.registry.register`)."""
    for source in _SOURCES[1:]:
        try:
            found = _lookup(source, name, exact=True) or _lookup(source, name)
        except (Unavailable, InvalidInput):  # a name the library refuses (ComfyUI's, an A1111 pair) is still theirs
            return f"{_SOURCE_NAMES[source]} {name!r}"
        if found is not None:
            return f"{_SOURCE_NAMES[source]} {found.label!r}"
    return None


_SOURCES = ("registry", "a1111", "comfyui", "diffusers")
_SOURCE_NAMES = {"registry": "the registry's", "a1111": "A1111's label", "comfyui": "ComfyUI's name",
                 "diffusers": "diffusers' class"}


def _runs(found: Label) -> tuple:
    """What a resolved name runs wherever it is used: two names that agree here give the same run. A label's
    *default* schedule is left out: it gives way to the caller's, and the sampling functions (``samplers.sample``,
    ``info``, the drop-ins) never read it, so names that differ only there (``EULER``: the registry's ``euler`` and
    A1111's ``Euler`` on Uniform by default) resolve by the table order as before; a *named* schedule, other options
    or the dropped next-to-last σ do count (``dpm fast``: A1111's eta = 1, no final denoise)."""
    named = (found.schedule, repr(sorted(found.schedule_options.items()))) if found.schedule_is_explicit else None
    return (found.sampler, repr(sorted(found.options.items())), named, found.discard_penultimate_sigma,
            found.model_range, found.sigmas)


def _shadowed(found: Label) -> bool:
    """Whether a tool's entry is spelt exactly as an earlier table's name, so that typed alone it is that name."""
    return found.source != "registry" and any(_lookup(source, found.label, exact=True) is not None
                                              for source in _SOURCES[:_SOURCES.index(found.source)])


def _spelling(found: Label) -> str:
    """The exact spelling of the table entry a normalised lookup found (with its table's prefix where that spelling
    typed alone reaches an earlier table: ComfyUI's ``dpm_2`` is ``"comfyui:dpm_2"``)."""
    if found.source != "registry":
        return f"{found.source}:{found.label}" if _shadowed(found) else found.label
    spec = SAMPLERS.get(found.sampler)
    return next(k for k in (spec.name, *spec.aliases) if _normalise(k) == _normalise(found.label))


def _describe(found: Label) -> str:
    what = f"{found.sampler}"
    if found.options:
        what += " with " + ", ".join(f"{k}={v!r}" for k, v in found.options.items())
    if found.schedule is None:
        what += " on the schedule the caller (or the model) gives"
    else:
        what += f" on {found.schedule} ({'named' if found.schedule_is_explicit else 'by default'})"
    if found.discard_penultimate_sigma:
        what += ", next-to-last σ dropped"
    return what


def _unknown(name: str, source: str | None):
    pool = SAMPLERS.names() if source in (None, "registry") else []
    for src in ([source] if source not in (None, "registry") else list(TABLES) if source is None else []):
        pool += list(TABLES[src])
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5)
    norm = {_normalise(p): p for p in pool}
    close += [norm[k] for k in difflib.get_close_matches(_normalise(name), list(norm), n=5, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:5]
    where = "sampler name" if source is None else f"{source} name"
    hint = f" Closest: {', '.join(close)}." if close else ""
    if "," in name:  # "euler,heun": a list written as one name
        hint += " One name per value: a list is several names (on the command line, separated by spaces)."
    raise UnknownNameError(f"unknown {where} {name!r}.{hint} `samplers names` lists every name with what it "
                           "stands for; samplers.available() lists the registry")


def resolve_call(name: str, schedule: str | None = None, options: dict | None = None) -> tuple[Label, str | None, dict]:
    """``(label, schedule, options)`` for a call: the label's implied schedule and options merged with the caller's.

    A caller's schedule replaces a label's default one; it conflicts with a label that names its schedule
    ("DPM++ 2M Karras" with ``schedule="exponential"``), and where it names the same rule without another tool's
    prefix ("karras", "Karras") the label's own runs (A1111's Karras type: on a discrete model its float32 table, where
    the registry's karras reads the model's exact one); another tool's name for it ("comfyui:karras") is the caller's
    choice and runs. A caller's option with a different value than the label's is a conflict too. Conflicts raise
    :class:`~samplers.core.errors.InvalidOption`.
    """
    found = resolve(name)
    merged = merge_options(found, options)
    if schedule is None:
        return found, found.schedule, merged
    if found.schedule is not None and found.schedule_is_explicit:
        # the caller's by the name tables too ("a1111:Karras" is karras); with options of its own it is another one
        if resolve_schedule(schedule) != resolve_schedule(found.schedule):
            raise InvalidOption(f"{name!r} names the {found.schedule!r} schedule, but schedule={schedule!r} was "
                                f"passed; use the label without the schedule ({found.sampler!r}) or drop the "
                                "schedule argument")
        # the same rule: the label's, as its tool runs it; a name of another tool's ("comfyui:karras") is the caller's
        prefix = schedule.split(":", 1)[0].strip().lower() if ":" in schedule else None
        if prefix is None or prefix == found.schedule.split(":", 1)[0].lower():
            return found, found.schedule, merged
    return found, schedule, merged


def merge_options(found: Label, options: dict | None) -> dict:
    """The label's options updated with the caller's; a caller's value that contradicts the label's is an error, but
    for ``noise_sampler`` (the tool's default noise, which a caller's replaces there too) and an A1111 label's option
    that is an A1111 setting (:data:`labels.A1111_SETTINGS`: its DPM fast / adaptive's η). A
    label's option that the run would then not read (:data:`samplers.core.validate.IGNORED_OPTIONS`: ComfyUI's
    er_sde sets quadrature, which its max_stage=1 does not read) is left out: nobody passed it, so it is not
    refused as a caller's unread option is."""
    from .validate import drop_unread

    merged = dict(found.options)
    options = _comfyui_taken(found, _a1111_received(found, options))
    for key, value in (options or {}).items():
        # a label's noise_sampler is its tool's default noise, which the tool's own functions replace by a caller's
        # (noise_sampler=None means "draw mine" in k-diffusion, A1111 and ComfyUI): so does the caller's here
        if key == "noise_sampler" and value is None and key in found.options:
            continue  # None is "the default noise" in the tools too: the label's (its tool's default) stays
        setting = found.source == "a1111" and key in labels.A1111_SETTINGS  # A1111's setting: the caller's value
        if key in found.options and found.options[key] != value and key != "noise_sampler" and not setting:
            raise InvalidOption(f"{found.label!r} means {found.sampler} with {key}={found.options[key]!r}, but "
                                f"{key}={value!r} was passed; pass the plain sampler name {found.sampler!r} to choose "
                                f"{key} yourself")
        merged[key] = value
    if found.source == "a1111" and _a1111_open_window(merged.get("s_tmax")):
        # A1111 reads its sigma tmax 0 — its settings' default, sent as such through its API — as no upper bound
        # (processing.py: ``(self.s_tmax if ... else opts.s_tmax) or float('inf')``): so does its label here
        merged["s_tmax"] = math.inf
    spec = SAMPLERS.get(found.sampler) if found.sampler in SAMPLERS else None
    defaults = spec.options if spec is not None else {}
    return drop_unread(found.sampler, merged, defaults, keep=set(options or {}))  # the caller's own are refused


def _a1111_received(found: Label, options: dict | None) -> dict | None:
    """The caller's options less the A1111 settings that A1111 does not pass to an A1111 label's function: its sampler
    settings (s_churn, s_tmin, s_tmax, s_noise) where its sampler_extra_params does not list them
    (:data:`labels.A1111_SAMPLER_PARAMS`), and its eta where the function has no ``eta`` parameter
    (:data:`labels.A1111_TAKES_ETA`: LCM's, PLMS's, ...). At their no-op values (A1111's defaults, what its payload or
    settings send for every sampler) they are dropped, as A1111 drops them; any other value is refused, since A1111
    would run the label without it."""
    if found.source != "a1111" or not options:
        return options
    function = f"sample_{found.sampler}"
    received = labels.A1111_SAMPLER_PARAMS.get(function, ()) + (("eta",) if function in labels.A1111_TAKES_ETA else ())
    timestep = found.sampler in {labels.A1111[k][0] for k in labels.A1111_TIMESTEP_SAMPLERS}
    defaults = {**labels.A1111_SAMPLER_PARAM_NO_OPS, **(labels.A1111_TIMESTEP_NO_OPS if timestep else {})}
    kept = {}
    for key, value in options.items():
        if key not in defaults or key in received:
            kept[key] = value
            continue
        no_ops = defaults[key]
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and value in no_ops:
            continue  # A1111's default, which its function never sees: the run is the same without it
        raise InvalidOption(_not_passed(found, key, value, no_ops))
    return kept


def _not_passed(found: Label, key: str, value, no_ops: tuple) -> str:
    """The refusal of a caller's A1111 setting ``key`` that A1111 does not pass to ``found``'s function."""
    why = ("its function has no eta parameter" if key == "eta" else "not in its sampler_extra_params")
    spec = SAMPLERS.get(found.sampler)
    fix = (f"name the registry sampler {found.sampler!r} to run it with {key}={value!r}" if key in spec.options else
           f"the registry's {found.sampler!r} takes no {key} either")
    return (f"A1111 does not pass its {key} setting to {found.label!r} ({found.sampler}: {why}), so its image is "
            f"the same whatever the setting: {key}={value!r} would not be A1111's image; leave {key} out (or pass "
            f"A1111's default {' or '.join(repr(v) for v in no_ops)}), or {fix}")


def _comfyui_taken(found: Label, options: dict | None) -> dict | None:
    """The caller's options less those a ComfyUI name's function does not take (:data:`labels.COMFYUI_NOT_TAKEN`:
    ComfyUI's ``dpm_fast`` takes none, its ``euler`` no ``noise_sampler``, its ``uni_pc`` no ``order``), as
    :func:`_a1111_received` reads A1111's settings: one at the value ComfyUI's function runs (the label's, else the
    sampler's default: ``comfyui:lcm`` re-noises at eta 1, ``comfyui:dpm_fast`` runs at eta 0) is dropped, the run
    being the same without it; any other value is refused, naming it, ComfyUI's rule and the fix. A
    ``noise_sampler`` of None is the default noise, as everywhere, and passes (a None for another option is refused
    by the option check)."""
    if found.source != "comfyui" or found.label not in labels.COMFYUI_NOT_TAKEN or not options:
        return options
    keys, why = labels.COMFYUI_NOT_TAKEN[found.label]
    runs = {**(SAMPLERS.get(found.sampler).options if found.sampler in SAMPLERS else {}), **found.options}
    label_options = ", ".join(f"{k}={v!r}" for k, v in found.options.items())
    settings = f" (ComfyUI's name runs it with {label_options})" if label_options else ""
    kept = {}
    for key, value in options.items():
        if key not in keys or value is None:
            kept[key] = value
        elif not (key in runs and _same_setting(value, runs[key])):
            offer = (f" (or pass the value ComfyUI's function runs, {runs[key]!r})" if key in runs and _plain(runs[key])
                     else "")
            raise InvalidOption(f"{found.label!r} (ComfyUI's) takes no {key}: {why}, so {key}={value!r} would not be "
                                f"ComfyUI's image; leave {key} out{offer}, or name the registry sampler "
                                f"{found.sampler!r} to choose {key} yourself{settings}")
    return kept


def _plain(value) -> bool:
    """Whether ``value`` is a setting compared by value: None, a bool, a real number, a string, or a tuple of these."""
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, np.bool_, str)) or (
        isinstance(value, numbers.Real) and not isinstance(value, np.ndarray))


def _same_setting(value, runs) -> bool:
    """Whether a caller's ``value`` is the setting ``runs``, read as the option rules read it (a 0-d CPU tensor or a
    numpy number as the Python number it holds, a list as a tuple; both then plain: :func:`_plain`); a bool is not a
    number, nor a float an integer setting (``order=3.0``, which the option's rule refuses, is not ``order=3``)."""
    from .validate import host_scalar

    value = host_scalar("option", value, lambda dtype: True, "a Python number")
    value = value.item() if isinstance(value, np.generic) else tuple(value) if isinstance(value, list) else value
    if not (_plain(value) and _plain(runs)):
        return False
    if isinstance(runs, numbers.Integral) and not isinstance(runs, (bool, np.bool_)) and not isinstance(
            value, numbers.Integral):
        return False
    if isinstance(value, tuple) or isinstance(runs, tuple):
        return (isinstance(value, tuple) and isinstance(runs, tuple) and len(value) == len(runs)
                and all(_same_setting(a, b) for a, b in zip(value, runs)))
    if isinstance(value, (bool, np.bool_)) or isinstance(runs, (bool, np.bool_)):
        return isinstance(value, (bool, np.bool_)) and isinstance(runs, (bool, np.bool_)) and bool(value) == bool(runs)
    if isinstance(value, str) or isinstance(runs, str):
        return isinstance(value, str) and isinstance(runs, str) and value == runs
    return value == runs


def _a1111_open_window(value) -> bool:
    """Whether ``value`` is an ``s_tmax`` of 0 (a number, not a bool), which A1111 reads as no upper bound."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and value == 0


def resolve_schedule(name: str, native=None) -> tuple[str, dict]:
    """A schedule by its registry name or alias, or by a ComfyUI ``scheduler`` value or an A1111 "Schedule type"
    (prefixes ``comfyui:`` / ``a1111:`` pick the table; ComfyUI's ``beta`` is ``beta_timesteps``). A name spelt
    exactly as one table has it is that table's (registry, then ComfyUI, then A1111: A1111's "Beta" is its Beta);
    otherwise case, spaces, ``-`` and ``_`` are ignored, in the same order.

    ``native``: the model the schedule is for. A ComfyUI name on a flow model
    (:class:`~samplers.core.native.RectifiedFlow`) takes the options ComfyUI's rule needs there (``karras``,
    ``exponential``, ``kl_optimal``: ``in_flow_time=True``, as ComfyUI computes them in the model's σ = t); registry
    and A1111 names, and every name on other models, resolve the same with or without it. A ComfyUI or A1111 name on
    a zero-terminal-SNR :class:`~samplers.core.native.VPDiscrete` (ᾱ_T = 0, σ_max = inf) takes
    ``terminal_alpha_bar`` = :data:`~samplers.core.labels.TOOLS_ZERO_SNR_ALPHA_BAR`: both tools set the last ᾱ to it,
    so their schedules read a finite table (σ_max ≈ 4518.76), which ``get_sigmas`` builds them on; registry names keep
    the model's own table there (σ_max = inf, diffusers' convention). An A1111 name on any
    :class:`~samplers.core.native.VPDiscrete` also takes ``float32_alphas_cumprod=True``: A1111 (ldm / sgm's float32
    ``alphas_cumprod`` buffer, k-diffusion's ``CompVisDenoiser``) reads the model's ᾱ in float32, σ_min of SD 1.x
    0.0291675 for the exact table's 0.0291672, so ``get_sigmas`` builds them on
    :meth:`~samplers.core.native.VPDiscrete.with_float32_alphas_cumprod` (on a zero-SNR model A1111's float32 rescale
    first, then its terminal ᾱ); ComfyUI's names read the exact table (ComfyUI's is float64, rounded to float32 σ),
    and every name on other models (flow, continuous, EDM) resolves as without it."""
    from ..schedules.base import SCHEDULES
    from .native import NoiseSchedule, RectifiedFlow, VPDiscrete

    if not isinstance(name, str):
        raise InvalidType(f"a schedule name must be a string, got {type(name).__name__}")
    if native is not None and not isinstance(native, NoiseSchedule):
        raise InvalidType(f"native must be a samplers.core.native schedule (VPDiscrete, RectifiedFlow, ...), got "
                          f"{type(native).__name__}")
    flow = isinstance(native, RectifiedFlow)
    # the tools' finite stand-in for ᾱ_T = 0 (labels.TOOLS_ZERO_SNR_ALPHA_BAR), for their names only
    tool_table = ({"terminal_alpha_bar": labels.TOOLS_ZERO_SNR_ALPHA_BAR}
                  if isinstance(native, VPDiscrete) and native.zero_terminal_snr else {})
    # A1111 reads a discrete model's ᾱ as ldm / sgm store it, in float32 (VPDiscrete.with_float32_alphas_cumprod)
    a1111_table = {"float32_alphas_cumprod": True} if isinstance(native, VPDiscrete) else {}
    tables = {"comfyui": labels.COMFYUI_SCHEDULERS,
              "a1111": {**labels.A1111_SCHEDULERS, **{k: v[:2] for k, v in labels.A1111_LABEL_SCHEDULES.items()}}}
    if _normalise(name.split(":", 1)[-1] if name.split(":", 1)[0].strip().lower() == "a1111" else name) == "automatic":
        raise UnknownNameError(f"schedule {name!r} is A1111's 'Automatic' Schedule type, the sampler's own choice, "
                               "which is no schedule by itself: leave the schedule out (schedule=None, no --schedule) "
                               "and a label's own applies ('DPM++ 2M': Karras, 'Euler': Uniform), else the model's")

    def entry(table: dict, key: str) -> tuple[str, dict]:
        schedule, options, *on_flow = table[key]
        mine = a1111_table if table is tables["a1111"] else {}
        return SCHEDULES.canonical(schedule), {**options, **(on_flow[0] if on_flow and flow else {}), **tool_table,
                                               **mine}

    if ":" in name and name.split(":", 1)[0].strip().lower() in tables:
        prefix, rest = name.split(":", 1)
        table = tables[prefix.strip().lower()]
        key = {_normalise(k): k for k in table}.get(_normalise(rest))
        if key is None:
            raise UnknownNameError(f"unknown {prefix.strip().lower()} schedule {rest!r}; use one of {sorted(table)}")
        return entry(table, key)
    # spelt exactly as a table has it first (A1111's "Beta" and "KL Optimal" are not the registry's beta /
    # kl_optimal, which the normalised spelling would find), then ignoring case, spaces, - and _
    exact = SCHEDULES.exact(name)
    if exact is not None:
        return SCHEDULES.canonical(exact), {}
    for table in tables.values():
        if name in table:
            return entry(table, name)
    if name in SCHEDULES:
        return SCHEDULES.canonical(name), {}
    for table in tables.values():
        key = {_normalise(k): k for k in table}.get(_normalise(name))
        if key is not None:
            return entry(table, key)
    SCHEDULES.canonical(name)  # raises with the closest registry names
    raise AssertionError("unreachable")


def get(name: str) -> Callable:
    """The sampler function for ``name``; a label with options returns the sampler with those options bound."""
    found = resolve(name)
    spec = SAMPLERS.get(found.sampler)
    fn = spec.fn
    # a label without options is its sampler, but for an A1111 label: A1111 reads its sampler settings its own way
    # (merge_options: s_tmax 0 is no bound; a setting A1111 does not pass to the label's function is dropped at its
    # default and refused otherwise), and for a ComfyUI name whose function takes fewer options than the sampler
    # (labels.COMFYUI_NOT_TAKEN: "comfyui:euler" takes no noise_sampler)
    refuses = found.source == "comfyui" and found.label in labels.COMFYUI_NOT_TAKEN
    if not found.options and found.source != "a1111" and not refuses:
        return fn
    return _bound(fn, found)


def _bound(fn: Callable, found: Label) -> Callable:
    import functools

    @functools.wraps(fn)
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, **kwargs):
        return fn(model, x, sigmas, extra_args, callback, disable, **merge_options(found, kwargs))

    if found.options:  # a label without options of its own is its sampler, by name too
        sampler.__name__ = "sample_" + "".join(ch if ch.isalnum() else "_" for ch in found.label.lower())
        # its signature shows the label's values as the defaults (inspect follows __wrapped__ to the sampler's own
        # otherwise: "DPM++ 2M SDE Heun" showed solver_type='midpoint', which it refuses)
        signature = inspect.signature(fn)
        sampler.__signature__ = signature.replace(parameters=[
            p.replace(default=found.options[p.name]) if p.name in found.options else p
            for p in signature.parameters.values()])
    sampler.label = found  # type: ignore[attr-defined]
    return sampler


def table() -> list[Label]:
    """Every name of every table (the registry's own names and aliases first), for ``samplers names``."""
    rows = []
    for name in SAMPLERS.names():
        spec = SAMPLERS.get(name)
        rows += [Label(key, name) for key in (name, *spec.aliases)]
    for source, tab in TABLES.items():
        rows += [_from_table(source, key) for key in tab]
    return rows

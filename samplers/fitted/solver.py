"""A multistep solver whose σ nodes and per-step weights are fitted to one model and NFE budget, and its file.

In the spirit of Bespoke Non-Stationary solvers (Shaul et al. 2024, arXiv:2403.01329), LD3 (Tong et al. 2024,
arXiv:2405.15506) and S4S (Frankel et al. 2025, arXiv:2502.17423): the sampler is a linear multistep method in
the canonical space whose coefficients are not fixed by a Taylor argument but fitted, together with the
schedule, to minimise the distance to the exact PF-ODE endpoint on calibration noise. With r_i = σ_{i+1}/σ_i,
ε̂_j = (x_j − D_j)/σ_j and D_j the denoised estimate of step j, step i is

    x_{i+1} = r_i·x_i + (1 − r_i)·D_i                               (DDIM / Euler: exact for D constant)
            + (σ_{i+1} − σ_i)·Σ_{j<i} b_ij·(ε̂_j − ε̂_i)               (Adams–Bashforth-type corrections)
            + (1 − r_i)·Σ_{j<i} c_ij·(D_j − D_i)                     (DPM-Solver++-type corrections)

From σ = ∞ (a flow model's t = 1; the first node only, x the unit noise itself) the first step is the exact
limit x_1 = D_0 + σ_1·x_0, and ε̂_0 = x_0 for the later corrections.

Every correction vanishes when D is constant along the path, so the method is exact there whatever the weights;
conversely every sampler that is linear in the model's outputs and exact for a constant D is in the family, with
its nodes where it calls the model (:func:`samplers.fitted.express.express` reads the weights off a registry
sampler: euler, ddim, dpmpp_2m, dpmpp_3m, deis, unipc, ipndm, lms, gradient_estimation, even midpoint and dpm_2).

A solver file (JSON, :meth:`LearnedSolver.save`) records the model it was fitted to (its fingerprint,
:mod:`samplers.fitted.identity`), its prediction type, the NFE and the σ range. ``"fitted:PATH"`` names it
wherever a sampler name goes (``samplers.sample``, ``Pipeline``, ``samplers generate`` / ``compare``, the
diffusers shim); it runs on its own σ nodes, and on a model other than the one it was fitted to only with
``allow_other_model=True`` — never from σ = ∞ on a model that cannot be evaluated there
(:meth:`LearnedSolver.check_model`). ``register_solver(name, solver)`` makes ``"fitted:name"`` name it too.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..core import wrapped
from ..core.conversion import PREDICTIONS
from ..core.errors import InvalidInput, InvalidOption, InvalidType, MissingFile, UnknownNameError
from ..core.files import read_json, write_json
from ..core.names import Label, register_prefix
from ..core.registry import register
from ..core.run import UNSAID_INFINITE_SIGMA, progress, report
from ..core.validate import largest_sigma

FORMAT = "samplers.fitted_solver/2"
FORMATS = (FORMAT, "samplers.learned_solver/1")  # version 1: no record of the model (solvers fitted before it)
DERIVED = ("nfe", "sigma_max", "sigma_min")  # written by save for readers; on load they must agree with sigmas
RECREATE = "re-create it with `samplers fit` or LearnedSolver.save"  # the fix of a solver file refused on load
_UNKNOWN = object()  # check_model: a fact about the model that the caller does not know
# why a current file must record what it leaves out: its model, or the fields derived from its sigmas
MISSING_WHY = {"model": "without its model record a solver would run on any model unchecked",
               "derived": "nfe, sigma_max and sigma_min are written for readers, and checked against its sigmas: a "
                          "file without them was not written by LearnedSolver.save or was edited"}
# a step's correction weights times what they multiply in the update (b·(σ_next − σ), c·(1 − σ_next/σ)): fitted and
# expressed solvers stay under some 20 (a weight itself may be huge where two nodes nearly coincide: 2e15 on a gap of
# 5e-16 in the shipped tiny-unet/nfe5.json); beyond this a step amplifies the float rounding of model outputs past
# any image, and the run would fail after its model calls, blaming the model
MAX_STEP_WEIGHT = 1e6
# how far above a timestep table's top a model σ may lie (LearnedSolver.check_table_range): the model is told the
# table's last timestep there (its time input clamps), its input and output scaled for the σ itself. The fits before
# fitting.Params bounded the model σ to the table ran so too (the time input clamped while fitting as when run), so
# such a file is self-consistent; the shipped fits reach 6.5 % above (mixtures/…/gm-vp-eps_d128-k9-s202_nfe5.json)
# and 2.5 % (tiny-unet/nfe10.json). Below the table's bottom the same rule as a run's grid: down to half its first σ.
MODEL_SIGMA_HEADROOM = 0.10
# how far the σ the model is told (model_sigmas[i]) may lie from its node, as a factor either way: the committed fits
# (docs/benchmarks, 43 files with model_sigmas) tell the model 0.406 to 4.48 times the node; a fit's log-shift is held
# to this bound (fitting.model_sigma), so a fit never writes a file this check refuses. Far beyond it the model is told
# another noise level than the state has (1e-300 at σ 14.6 loaded and gave garbage)
MODEL_SIGMA_RATIO = 100.0
MAX_FILE_BYTES = 64 << 20  # LearnedSolver.load reads no more: see MAX_FILE_WHY
MAX_FILE_WHY = ("a solver of n steps holds n² weights, some 23·n² bytes as LearnedSolver.save writes them: 64 MiB "
                "is about 1,700 steps, far beyond the tens a fit uses")


class OtherModelError(InvalidInput):
    """A fitted solver run on a model other than the one it was fitted to (see ``allow_other_model``)."""


def late_start_refusal(name: str, start: str) -> str:
    """Why a fitted solver (``name``) cannot start below its first node (``start``: what asked for it, img2img /
    inpaint at strength < 1): the same words in the pipeline and the diffusers shim."""
    return (f"{name} runs on all of its own σ nodes, from the top, and {start} would start it lower down; use "
            "strength=1, or a registry sampler for strength < 1")


MODEL_KEYS = ("fingerprint", "name", "prediction")  # what a solver records of the model it was fitted to


def check_model_record(model) -> dict:
    """``model`` if it is a record a solver can hold of its model — a dict of ``fingerprint`` (the form
    :func:`samplers.fitted.identity.is_fingerprint` takes, or None), ``name`` (a string or None) and ``prediction``
    (one of :data:`samplers.core.conversion.PREDICTIONS`, or None), each optional — else an error naming the key."""
    if not isinstance(model, dict) or not set(model) <= set(MODEL_KEYS):
        extra = sorted(map(repr, set(model) - set(MODEL_KEYS))) if isinstance(model, dict) else None
        raise InvalidInput(f"model must be a dict with keys {', '.join(MODEL_KEYS)} (each optional), got {model!r}"
                           + (f": {', '.join(extra)} is not one of them" if extra else ""))
    from .identity import is_fingerprint

    fp, name, prediction = (model.get(k) for k in MODEL_KEYS)
    if fp is not None and not is_fingerprint(fp):
        raise InvalidInput(f"model.fingerprint must be the hex digest samplers.fitted.identity.fingerprint "
                           f"records (64 hex digits, optionally '|' and qualifiers) or null for a model "
                           f"without one, got {fp!r}")
    if name is not None and not isinstance(name, str):
        raise InvalidInput(f"model.name must be a string or null, got {name!r}")
    if prediction is not None and prediction not in PREDICTIONS:
        raise InvalidInput(f"model.prediction must be one of {PREDICTIONS} (the model's native prediction "
                           f"type) or null when unknown, got {prediction!r}")
    return model


@dataclass
class LearnedSolver:
    """σ nodes (n + 1 values, ending in 0) and the lower-triangular weights b, c of the update above.

    ``model``: what it was fitted to — ``fingerprint`` (:func:`samplers.fitted.identity.fingerprint`, None when
    unknown), ``name`` and ``prediction`` (the native prediction type, one of
    :data:`samplers.core.conversion.PREDICTIONS`, None when unknown); empty for a solver not fitted to a model.
    ``model_sigmas``: the σ the model is told at each node (default: the node itself)."""

    # where it was loaded from (``fitted:PATH``'s PATH), for messages; not part of the solver
    source: ClassVar[str | None] = None

    sigmas: list[float]
    eps_weights: list[list[float]]  # b[i][j] for j < i: row i has i entries
    denoised_weights: list[list[float]]  # c[i][j] for j < i
    meta: dict = field(default_factory=dict)
    model_sigmas: list[float] | None = None
    model: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        """Short, for messages (a solver of n steps holds n² weights): its steps, σ range, file and what it ran from."""
        top = self.sigmas[0] if self.sigmas else None
        low = next((v for v in reversed(self.sigmas) if v), None) if isinstance(self.sigmas, list) else None
        parts = [f"{len(self.sigmas) - 1} steps on σ {top:g} … {low:g}" if isinstance(top, (int, float))
                 and isinstance(low, (int, float)) else f"sigmas={self.sigmas!r}"]
        if self.source:
            parts.append(f"fitted:{self.source}")
        if isinstance(self.meta, dict) and isinstance(self.meta.get("sampler"), str):
            parts.append(f"from {self.meta['sampler']}")
        if isinstance(self.model, dict) and self.model.get("name"):
            parts.append(f"fitted to {self.model['name']!r}")
        return f"LearnedSolver({', '.join(parts)})"

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    nfe = steps

    def steps_key(self) -> str:
        """The steps it runs (nodes, weights, the σ the model is told) as text, whatever it records of its fit or
        where it was read from: two solvers with one key make the same run."""
        return repr((self.sigmas, self.eps_weights, self.denoised_weights, self.model_sigmas or self.sigmas[:-1]))

    def same_steps(self, other: "LearnedSolver") -> bool:
        """Whether ``other`` runs the very same steps (nodes, weights, the σ the model is told), whatever either
        records of its fit: a fit that handed back its pair is that pair."""
        return self.steps_key() == other.steps_key()

    def check_nodes(self, sigmas) -> None:
        """Refuse ``sigmas`` other than this solver's own nodes, the only ones it runs on: each equal to its node to
        a relative 1e-9, or to that node rounded to float32 (a float32 tensor of the nodes, even one converted back
        to float64 on its way here, is those nodes at that precision)."""
        given = [float(v) for v in sigmas]

        def same(a: float, b: float) -> bool:
            return abs(a - b) <= 1e-9 * max(abs(b), 1e-12) or a == float(torch.tensor(b, dtype=torch.float32))

        if self.steps != len(given) - 1 or not all(same(a, b) for a, b in zip(given, self.sigmas)):
            ours, theirs = [round(v, 4) for v in self.sigmas], [round(v, 4) for v in given]
            if ours == theirs:  # alike at 4 digits: show them whole, where they differ
                ours, theirs = list(self.sigmas), given
            raise InvalidInput(f"this solver runs on its own {self.steps} σ nodes {ours}, got sigmas {theirs} "
                               "(each must equal its node to a relative 1e-9, or be that node rounded to float32); "
                               "pass solver.sigmas (a name 'fitted:PATH' does this in the pipeline, the CLI and the "
                               "diffusers shim)")

    def check_table_range(self, lo: float, hi: float, what: str = "this model", source: str | None = None) -> None:
        """Refuse nodes outside ``[lo, hi]``, the σ range of a model whose time input comes from a table (a discrete
        VP model's timesteps): there the model would be told the table's end instead, another schedule than the
        solver's — ``allow_other_model`` allows another model, not a σ this one lacks. Within 0.1 % of an end is that
        end (the same model's table in float32 or float64 differs by some 1e-5). The σ the model is told
        (``model_sigmas``) likewise, with the fits' own margins: up to :data:`MODEL_SIGMA_HEADROOM` above the top and
        down to half the bottom, where the time input clamps as it did while the solver was fitted."""
        name = repr(source or f"fitted:{self.source}") if source or self.source else "this fitted solver"
        outside = [float(v) for v in self.sigmas[:-1] if not lo * (1 - 1e-3) <= float(v) <= hi * (1 + 1e-3)]
        if outside:
            raise InvalidOption(f"{name} runs on σ nodes {', '.join(f'{v:g}' for v in outside)} outside {what}'s "
                                f"σ range [{lo:g}, {hi:g}] (its timestep table, to 0.1 %), where they would be clamped "
                                "to the table's ends, another schedule than the solver's; fit a solver to this model "
                                "(`samplers fit`), or use one whose nodes lie in that range")
        top, bottom = hi * (1 + MODEL_SIGMA_HEADROOM), lo / 2
        told = [float(v) for v in self.model_sigmas or () if not bottom <= float(v) <= top]
        if told:
            raise InvalidOption(f"{name} tells the model σ {', '.join(f'{v:g}' for v in told)} (its model_sigmas), "
                                f"outside {what}'s σ range [{lo:g}, {hi:g}] (its timestep table) beyond the margin a fit "
                                f"leaves ([{bottom:g}, {top:g}]): the model would be told the table's end instead, not "
                                "what the solver was fitted with (an edited or another model's file?); fit a solver to "
                                "this model (`samplers fit`)")

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=torch.float64)

    def __array__(self, dtype=None, copy=None):  # numpy reads it as its nodes: np.asarray(solver); torch: .tensor()
        return np.asarray(self.sigmas, dtype=dtype or np.float64)

    def validate(self) -> "LearnedSolver":
        def numbers(name, values):
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in values):
                raise InvalidInput(f"a learned solver's {name} must be a list of numbers, got {values!r}")
            big = next((v for v in values if isinstance(v, int) and abs(v) > sys.float_info.max), None)
            if big is not None:  # a float() of it would raise OverflowError wherever it is first read
                raise InvalidInput(f"a learned solver's {name} holds an integer of {len(str(abs(big)))} digits, "
                                   "beyond any float")
        numbers("sigmas", self.sigmas)
        if self.model_sigmas is not None:
            numbers("model_sigmas", self.model_sigmas)
        for name, w in (("eps_weights", self.eps_weights), ("denoised_weights", self.denoised_weights)):
            if not isinstance(w, list):
                raise InvalidInput(f"a learned solver's {name} must be a list of rows, got {w!r}")
            for row in w:
                numbers(name + " rows", row)
        if not isinstance(self.meta, dict):
            raise InvalidInput(f"a learned solver's meta must be a dict, got {self.meta!r}")
        try:  # its file (save) and a diffusers config holding its record are JSON: refused here, not at the write
            json.dumps(self.meta, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"a learned solver's meta must hold JSON values only (it is written to the solver's "
                               f"file), and {err}; store such a value as a string (str(value))") from None
        s, n = self.sigmas, len(self.sigmas) - 1
        if n < 1 or s[-1] != 0 or any(not b < a for a, b in zip(s, s[1:])) or not all(map(math.isfinite, s[1:])):
            raise InvalidInput(f"a learned solver's sigmas must be strictly decreasing, finite but for a first σ of "
                               f"inf, and end in 0, got {s}")
        for name, w in (("eps_weights", self.eps_weights), ("denoised_weights", self.denoised_weights)):
            if len(w) != n or any(len(row) != i for i, row in enumerate(w)):
                raise InvalidInput(f"{name} must have {n} rows, row i holding i weights (one per earlier step)")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for row in w for v in row):
                raise InvalidInput(f"{name} holds a non-finite or non-numeric weight")
        for i, (row_b, row_c) in enumerate(zip(self.eps_weights, self.denoised_weights)):
            if not row_b:
                continue  # row 0 (the only one a first σ of inf has): no weights
            gap, share = s[i] - s[i + 1], 1 - s[i + 1] / s[i]
            big = [(nm, j, v) for nm, row, f in (("eps_weights", row_b, gap), ("denoised_weights", row_c, share))
                   for j, v in enumerate(row) if abs(v * f) > MAX_STEP_WEIGHT]
            if big:
                nm, j, v = big[0]
                raise InvalidInput(f"{nm}[{i}][{j}] = {v:g} weighs a difference of model outputs by "
                                   f"{abs(v * (gap if nm == 'eps_weights' else share)):.3g} at step {i} (times "
                                   f"{'σ_i − σ_i+1' if nm == 'eps_weights' else '1 − σ_i+1/σ_i'}), beyond "
                                   f"{MAX_STEP_WEIGHT:g}: the step would amplify the outputs' rounding past any image "
                                   "(fitted solvers stay under some 20)")
        m = self.model_sigmas
        top = largest_sigma(torch.float32)
        if m is not None and (len(m) != n or not all(0 < v <= top for v in m[1:])
                              or not (m[0] == math.inf if math.isinf(s[0]) else 0 < m[0] <= top)):
            raise InvalidInput(f"model_sigmas must hold {n} positive values (one per step), finite but for inf where "
                               f"the first σ is inf, and each at most {top:.3g} (σ² finite in float32), got {m}")
        far = next(((i, v, node) for i, (v, node) in enumerate(zip(m or (), s)) if math.isfinite(node)
                    and not node / (MODEL_SIGMA_RATIO * (1 + 1e-9)) <= v <= node * MODEL_SIGMA_RATIO * (1 + 1e-9)),
                   None)
        if far is not None:
            i, v, node = far
            raise InvalidInput(f"model_sigmas[{i}] = {v:g} is {v / node:.3g} times its node σ = {node:g}, beyond the "
                               f"factor {MODEL_SIGMA_RATIO:g} either way that a fit keeps to (fits tell the model 0.4 "
                               "to 4.5 times the node): the model would be told another noise level than the state "
                               "has (an edited file?)")
        check_model_record(self.model)
        return self

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a temporary file in the same folder, then a rename)."""
        return write_json(path, self.record(), indent=1)

    def record(self) -> dict:
        """What :meth:`save` writes, as a JSON object (read back, with every check a file gets, by
        :meth:`from_record`): where a config must hold the solver itself (the diffusers shim's, for a solver made in
        Python that no file holds)."""
        positive = [v for v in self.sigmas if v > 0]
        return {"format": FORMAT, "nfe": self.steps, "sigma_max": self.sigmas[0], "sigma_min": positive[-1],
                "model": self.model, "sigmas": self.sigmas, "eps_weights": self.eps_weights,
                "denoised_weights": self.denoised_weights, "model_sigmas": self.model_sigmas, "meta": self.meta}

    @classmethod
    def of(cls, value, what: str = "solver") -> "LearnedSolver":
        """``value`` as a checked solver: a path (str or path-like) is read with :meth:`load`, a solver made or edited in
        Python gets the checks its file would get on load (:meth:`validate`); anything else is refused, naming
        ``what`` (the option or argument it came in as). The one reading of "a LearnedSolver or the path of its
        file" that every entry point (the sampler, ``register_solver``, the pipeline, the diffusers shim, the ComfyUI
        adapter) shares."""
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value)
        if isinstance(value, cls):
            return value.validate()
        if isinstance(value, Mapping):  # a file's content held in a config (the diffusers shim's): read as the file
            return cls.from_record(dict(value), what)
        raise InvalidType(f"{what} must be a samplers.fitted.solver.LearnedSolver, the path of its file or its "
                          f"record (LearnedSolver.record()), got {value!r} ({type(value).__name__})")

    @classmethod
    def load(cls, path: str | Path) -> "LearnedSolver":
        """Read a file written by :meth:`save` (plain JSON: nothing in it runs). Errors name the file and the fix.

        A file of the current format must record ``model`` (``{}`` for a solver not fitted to a model), and its
        derived fields ``nfe``, ``sigma_max``, ``sigma_min`` must agree with ``sigmas`` (an edited file is refused,
        not corrected); a file of format 1 has no record of the model."""
        fix = RECREATE
        if str(path) == "":
            raise InvalidInput("no fitted solver file given (an empty path); give the path of a solver file, e.g. "
                               "out/fit/nfe8.json")
        if str(path).startswith("~"):  # a home folder, as a shell would expand it (fitted:~/fits/nfe8.json)
            path = Path(path).expanduser()
        data = read_json(path, "a valid learned-solver file", fix, limit=MAX_FILE_BYTES, why=MAX_FILE_WHY,
                         missing=MissingFile(f"no fitted solver at {path} (no such file); check the path, or make one "
                                             "with `samplers fit --out DIR` (it writes DIR/nfe<N>.json)"),
                         folder="give a solver file in it (`samplers fit` writes <out>/nfe<N>.json)")
        solver = cls.from_record(data, path)
        solver.source = str(path)
        return solver

    @classmethod
    def from_record(cls, data, path) -> "LearnedSolver":
        """The solver a file's JSON object ``data`` records (:meth:`record`), with every check :meth:`load` makes;
        ``path``: where it was read (named in errors)."""
        fix = RECREATE
        if not isinstance(data, dict) or data.get("format") not in FORMATS:
            raise InvalidInput(f"{path} is not a learned solver written by LearnedSolver.save (its \"format\" "
                               f"must be one of {list(FORMATS)})")
        data = dict(data)  # the caller's (a config's) left as it was
        fmt = data.pop("format")
        if fmt == FORMAT:
            missing = [k for k in ("model", *DERIVED) if k not in data]
            if missing:
                why = "; ".join(dict.fromkeys(MISSING_WHY["model" if k == "model" else "derived"] for k in missing))
                raise InvalidInput(f"{path}: a {FORMAT} file records {', '.join(missing)}, and this one does not "
                                   f"({why}); {fix}")
        derived = {k: data.pop(k) for k in DERIVED if k in data}
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise InvalidInput(f"{path}: unexpected fields {unknown}: a learned-solver file holds only format, "
                               f"{', '.join(DERIVED)} and {', '.join(sorted(FIELDS))} (another program's file, or a "
                               f"hand edit?); remove them, or {fix}")
        missing = [k for k in ("sigmas", "eps_weights", "denoised_weights") if k not in data]
        if missing:
            raise InvalidInput(f"{path}: no {', '.join(missing)}: a learned-solver file holds its σ nodes (sigmas) and "
                               f"the weights of each step (eps_weights, denoised_weights); {fix}")
        try:
            solver = cls(**data).validate()
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}; {fix}") from None
        except TypeError as e:  # a field the constructor does not take (unknown ones are named above)
            raise InvalidInput(f"{path}: unexpected fields ({e}); {fix}") from None
        s = solver.sigmas
        want = {"nfe": solver.steps, "sigma_max": s[0], "sigma_min": s[-2]}
        for key, value in derived.items():
            number = isinstance(value, int) if key == "nfe" else isinstance(value, (int, float))
            if isinstance(value, bool) or not number or value != want[key]:
                raise InvalidInput(f"{path}: {key} is {value!r}, but its sigmas ({len(s)} values from {s[0]} to "
                                   f"0) make it {want[key]!r}; nfe, sigma_max and sigma_min are derived from "
                                   f"sigmas and must agree with them (an edited file is refused, not corrected); "
                                   f"{fix}")
        return solver

    @classmethod
    def from_sampler(cls, name: str, sigmas, **options) -> "LearnedSolver":
        """The weights that compute what registry sampler ``name`` computes on ``sigmas`` (its nodes where it calls
        the model): :func:`samplers.fitted.express.express`; an error for a sampler outside the family."""
        from .express import express

        solver = express(name, sigmas, **options)
        if solver is None:
            from ..core.registry import info
            from ..core.run import draws_noise

            why = ("it draws noise (η > 0, churn, or an SDE sampler): pass eta=0 where it has η, or use a "
                   "deterministic sampler" if draws_noise(info(name), options) else
                   "not linear in the model's outputs, two calls at one σ, or not exact for a constant denoiser")
            raise InvalidInput(f"{name!r} is not in the learned family ({why})")
        return solver

    def check_model(self, model=_UNKNOWN, allow_other_model: bool = False, *, fingerprint=_UNKNOWN,
                    prediction: str | None = None, supports_infinite_sigma: bool | None = None,
                    source: str | None = None, unseen: str | None = None,
                    fix: str = "allow_other_model=True") -> None:
        """Refuse a model this solver does not suit, before any model call.

        What is known of the model comes from ``model`` (a denoiser: its fingerprint, and its prediction type and
        whether it can be evaluated at σ = ∞ where it or a wrapper says, :mod:`samplers.fitted.identity`) or is
        given: ``fingerprint`` (a string, or None for a model that has none; left out: not compared),
        ``prediction`` and ``supports_infinite_sigma`` (None: unknown). ``source``: the name the solver was given
        (``"fitted:PATH"``), for the messages; ``unseen``: why a caller that passes ``fingerprint=None`` has none (the
        diffusers shim never sees the model), and ``fix``: how its caller spells ``allow_other_model=True``.

        - A solver whose first σ is ∞ on a model that cannot be evaluated there (an eps or score model) is refused
          even with ``allow_other_model``: its nodes are fixed, so no schedule change can help, and its file is
          the cause.
        - Unless ``allow_other_model``: a recorded prediction type other than the model's, then a recorded
          fingerprint other than the model's (or a model with none to compare), are refused
          (:class:`OtherModelError`). With it, a solver runs on another model — of another prediction type too:
          its nodes are σ of the canonical (VE) space, the same noise levels on every model."""
        if not isinstance(allow_other_model, bool):
            raise InvalidType(f"allow_other_model must be True or False, got {allow_other_model!r}")
        if model is not _UNKNOWN:
            from . import identity

            prediction = prediction if prediction is not None else identity.prediction(model)
            if supports_infinite_sigma is None:
                supports_infinite_sigma = wrapped.supports_infinite_sigma(model)
        what = source or (f"fitted:{self.source}" if self.source else "this fitted solver")
        want_prediction = self.model.get("prediction")
        name = self.model.get("name") or "its model"
        fitted_to = f"{name}" + (f" (prediction {want_prediction!r})" if want_prediction else "")
        if math.isinf(self.sigmas[0]) and supports_infinite_sigma is False:
            this = f"this model (prediction {prediction!r})" if prediction else "this model"
            why = ((wrapped.infinite_sigma_refusal(model) if model is not _UNKNOWN else None)
                   or ("an eps or score model gives no x0 at zero SNR" if prediction in ("eps", "score")
                       else UNSAID_INFINITE_SIGMA))
            raise OtherModelError(
                f"{what} starts at σ = inf (t = 1, pure noise; it was fitted to {fitted_to}), and {this} cannot be "
                f"evaluated at σ = inf ({why}). The solver file is the cause: "
                "its σ nodes are fixed, and allow_other_model does not change them. Fit a solver to this model "
                "(`samplers fit`), or use a registry sampler")
        if allow_other_model:
            return
        if want_prediction is not None and prediction is not None and prediction != want_prediction:
            raise OtherModelError(
                f"{what} was fitted to {fitted_to}, and this model's prediction is {prediction!r}: its weights are "
                f"tuned to the other model's errors. Fit one to this model (`samplers fit`), or pass {fix} to run it "
                "anyway (its σ nodes are noise levels, the same on every model)")
        want = self.model.get("fingerprint")
        if want is not None and fingerprint is _UNKNOWN and model is not _UNKNOWN:
            from .identity import fingerprint as fingerprint_of

            fingerprint = fingerprint_of(model)  # only where there is one to compare: it hashes the weights
        if want is None or fingerprint is _UNKNOWN:
            return
        got = fingerprint
        if got is None:
            why = unseen or "the model it is given has no fingerprint to compare (samplers.fitted.identity)"
            raise OtherModelError(f"{what} was fitted to {name} (fingerprint {want[:12]}…), and {why}; pass {fix} "
                                  "if it is that model")
        if got != want:
            raise OtherModelError(
                f"{what} was fitted to {name} (fingerprint {_differs(want, got)}), not to this model "
                f"({_differs(got, want)}; a fingerprint covers the weights and the guidance scale, so the same "
                "network at another guidance scale is another model too — a scale the guidance wrapper holds or "
                "functools.partial binds, not one passed per call in extra_args, which it does not see): its weights "
                "are tuned to the other model's "
                f"errors. Fit one to this model (`samplers fit`), or pass {fix} to run it anyway")


FIELDS = frozenset(f.name for f in fields(LearnedSolver))  # what a solver file holds, but for format and DERIVED


def _differs(this: str, other: str) -> str:
    """``this`` fingerprint shown where it differs from ``other`` (its first 12 characters, and from the first
    character the two do not share when that lies past them: '<hash>|eps|RectifiedFlow(...)' identities share their
    hash part when only the schedule's description differs)."""
    at = next((i for i, (a, b) in enumerate(zip(this, other)) if a != b), min(len(this), len(other)))
    return f"{this[:12]}…" if at < 12 else f"{this[:12]}…{this[at:at + 60]}"


_NAMED: dict[str, LearnedSolver] = {}


def register_solver(name: str, solver: "LearnedSolver | str | Path") -> LearnedSolver:
    """Make ``"fitted:<name>"`` name ``solver`` (a :class:`LearnedSolver` or the path of its file)."""
    if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in "/\\:."):
        raise InvalidInput(f"a fitted solver's name must be a plain word (no / \\ : ., no white space around it), "
                           f"got {name!r}")
    _NAMED[name] = solver = LearnedSolver.of(solver)
    return solver


def _fitted_label(rest: str) -> Label:
    """``fitted:PATH`` (or a name given to :func:`register_solver`): the solver on its own σ nodes."""
    key = rest
    if not key.strip():
        raise UnknownNameError(f"{'fitted:' + rest!r} names no solver: give the path of a solver file after 'fitted:' "
                               f"(fitted:out/fit/nfe8.json) or one of {sorted(_NAMED) or 'the registered names'}")
    if key != key.strip():
        raise UnknownNameError(f"{'fitted:' + rest!r} has white space around the solver's path or name ({key!r}); "
                               f"remove it: fitted:{key.strip()}")
    if key in _NAMED:
        solver = _NAMED[key]
    elif key.endswith(".json") or "/" in key or Path(key).exists():
        solver = LearnedSolver.load(key)
    else:
        raise UnknownNameError(f"no fitted solver named {key!r}: give the path of a solver file "
                               f"(fitted:out/fit/nfe8.json) or one of {sorted(_NAMED) or 'the registered names'}")
    return Label(f"fitted:{key}", "learned_multistep", {"solver": solver}, sigmas=tuple(solver.sigmas),
                 source="fitted")


register_prefix("fitted", _fitted_label)


def check_allow_without_solver(allow_other_model) -> None:
    """learned_multistep without a solver: ``allow_other_model`` has nothing recorded to compare, so anything but its
    default False is refused (it would do nothing)."""
    if allow_other_model is not False:
        raise InvalidOption(f"allow_other_model={allow_other_model!r} without solver= does nothing: it lets a "
                            "fitted solver run on another model than its own; pass solver= (or the name "
                            "'fitted:PATH'), or leave allow_other_model out")


def _checked_solver(model, sigmas: list[float], solver, allow_other_model) -> "LearnedSolver":
    """``solver`` as the run uses it, checked against the run's nodes and ``model`` (its record, its timestep table)
    before any model call."""
    if solver is None:
        check_allow_without_solver(allow_other_model)
        solver = LearnedSolver([float(v) for v in sigmas], [[0.0] * i for i in range(len(sigmas) - 1)],
                               [[0.0] * i for i in range(len(sigmas) - 1)])
    else:
        solver = LearnedSolver.of(solver)
    solver.check_nodes(sigmas)
    solver.check_model(model, allow_other_model)
    from .identity import table_range

    span = table_range(model)
    if span is not None:
        solver.check_table_range(*span)
    return solver


def _before_run(model, sigmas: list[float], options: dict) -> None:
    options["solver"] = _checked_solver(model, sigmas, options.get("solver"), options.get("allow_other_model", False))


@register("learned_multistep", kind="ode", order=1, nfe_per_step=1, from_infinity=True, before_run=_before_run,
          aliases=("learned", "bespoke_multistep"),
          ref="fitted linear multistep in the spirit of BNS (arXiv:2403.01329), LD3 (arXiv:2405.15506), "
              "S4S (arXiv:2502.17423); samplers.fitted.solver",
          final_step="the same update with r = 0: x = D_n + Σ c·(D_j − D_n) − σ_n·Σ b·(ε̂_j − ε̂_n)")
def learned_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, *, solver=None,
                      allow_other_model=False):
    """The fitted multistep update of :mod:`samplers.fitted.solver` with the weights of ``solver``.

    ``solver`` (a :class:`LearnedSolver`, or a path to its JSON) runs on its own nodes: ``sigmas`` must be
    ``solver.sigmas``. Without ``solver`` every weight is 0 and this is Euler. A solver that records its model
    refuses another model unless ``allow_other_model=True``. Order 1 is what the construction guarantees; the
    fitted accuracy is measured, not stated. The solver is checked against the run before any model call
    (``before_run``).
    """
    if not isinstance(solver, LearnedSolver):  # the run's check made it one; the implementation called alone
        solver = _checked_solver(model, sigmas, solver, allow_other_model)
    b, c = solver.eps_weights, solver.denoised_weights
    model_sigmas = solver.model_sigmas or sigmas[:-1]
    eps_hist, den_hist = [], []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, model_sigmas[i])
        # weights are Python floats: leaving out the zero ones reads nothing from the device
        used = [j for j in range(i) if b[i][j] or c[i][j]]
        x = update(x, denoised, sigma, sigma_next, eps_hist, den_hist, used, b[i], c[i])
        report(callback, x, i, sigma, sigma, denoised)
    return x


def update(x, denoised, sigma, sigma_next, eps_hist: list, den_hist: list, used, b_row, c_row):
    """One step of the update in the module docstring, from earlier steps ``used``; appends this step's ε̂ and
    D to the histories. σ and the weights are Python floats (sampling) or tensors (the differentiable fit).

    From σ = inf (the first step only, ``x`` the unit noise itself) the step is the exact limit: ε̂ = x and
    x_next = D + σ_next·x (the zero-SNR DDIM / flow-Euler step from t = 1), with no earlier step to weigh."""
    if isinstance(sigma, float) and sigma == math.inf:
        eps_hist.append(x)
        den_hist.append(denoised)
        return denoised + x * sigma_next
    eps = (x - denoised) / sigma
    r = sigma_next / sigma
    x_next = x * r + denoised * (1 - r)
    for j in used:
        x_next = x_next + (eps_hist[j] - eps) * ((sigma_next - sigma) * b_row[j]) \
            + (den_hist[j] - denoised) * ((1 - r) * c_row[j])
    eps_hist.append(eps)
    den_hist.append(denoised)
    return x_next

"""Fitting a :class:`~samplers.fitted.solver.LearnedSolver` to a model, in five named stages driven by one
:class:`FitConfig`:

1. :func:`starting_point` — every (sampler, schedule) pair of the registry that the learned family can express
   (:func:`samplers.fitted.express.express`) at exactly ``nfe`` model calls, each from the σ its schedule starts at
   (σ_max; on a model defined up to σ = ∞ also a higher σ, or σ = ∞ itself), ranked on the training starts (all
   of them, unless ``FitConfig.screen`` asks for a cheaper screen), the best ``keep`` ranked again with a pool of
   other starts (:func:`compare`): the best is the pair the fit is held against, and the first it runs from.
2. :func:`objective` — the mean squared distance of the solver's endpoints to the exact PF-ODE endpoints,
   differentiable in the σ nodes, the weights and the σ the model is told.
3. :func:`optimise` — Adam on the training starts, the iterate checked every ``check_every`` steps on the
   validation starts (never trained on); resumable and within a time budget. One run from each of the
   ``FitConfig.starts`` best pairs of stage 1: the objective has many local minima, and a run from the second pair
   can end in a better one than the run from the first.
4. :func:`validate` — each run's iterate with the smallest validation error, best first on the validation starts
   and the pool's validation share: the first that beats the best pair there (in total, and start by start beyond
   two standard errors) and on the validation starts and the pool together, else the best pair itself: the result
   is never worse on the validation starts than the best fixed pair.
5. :func:`validate` with a check pool — the fit stage 4 keeps, held against the best pair once more on
   ``FitConfig.check`` × the calibration batch other starts that neither trained it nor picked its iterate (the
   rarest starts that decide a mixture's error at 20 NFE are too few among stage 4's): the fit where it is the
   better there, else the pair.

The pool (``FitConfig.pool`` × the calibration batch) holds the rare starts that decide a mixture's error and that
a few hundred validation starts miss; only the share of it where the compared solvers disagree most has its exact
endpoints solved. Those solved starts join the calibration's (:func:`with_hard_starts`): the first part of the pool
to the training starts, the last (its validation share) to the validation starts, every start weighted so that
the means are the stratified estimate over calibration and pool together; the pool's validation part alone is
what stage 4 compares on.

:func:`fit` runs the five. The denoiser must be differentiable in x (a torch network or an analytic denoiser).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from pathlib import Path
from typing import Callable

import torch

from .. import initial_latent
from ..core.errors import InvalidInput, InvalidOption
from ..core import wrapped
from ..core.files import read_torch_dict, write_torch
from ..core.validate import real
from ..core.registry import SAMPLERS
from .solver import MODEL_SIGMA_RATIO, LearnedSolver, check_model_record, update

# a schedule whose first σ is this close to σ_max (relative) starts there: published tables round the top of the
# range (Align Your Steps: 14.615 for an SD-style model's 14.6146, 2.5e-5 off), and the candidate starts exactly at σ_max
# the most model calls the fit commands (samplers fit, benchmarks.learned_solvers) fit a solver for: far beyond the
# few-step budgets a fitted solver is for (its n steps hold n² weights, and each iteration runs all n calls)
MAX_FIT_NFE = 100
START_TOL = 1e-4

# a fit from σ = inf may move its first finite node σ_1 up to this factor above where its starting pair put it
INF_HEADROOM = 10.0

# option variants of registry samplers tried besides their defaults (orders users pick)
VARIANTS = {"unipc_bh1": ({"order": 2},), "unipc_bh2": ({"order": 2},), "deis": ({"order": 2},),
            "dpmpp_3m": ({"lower_order_final": False},)}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How a solver is fitted (``samplers fit`` passes its own sizes: app/fit.py).

    Attributes:
        nfe: model calls of the solver.
        validation: share of the calibration starts never trained on; they pick the iterate.
        iters, lr, batch: Adam steps, learning rate (cosine-decayed to 5 %; None: 0.02 / nfe, as a longer chain
            of steps amplifies a change of its weights), training minibatch (None: every training start each step;
            on fifteen unseen mixtures at 10 NFE no closer than 512 and 3-5 times as long: docs/fitted-defaults.md).
        check_every: iterations between validation checks.
        history: earlier steps a step may weigh beyond those the starting sampler uses (fewer overfit less).
        fit_model_sigmas: also fit the σ the model is told at each node.
        samplers, schedules: the candidates of the starting point (None: every deterministic registry sampler
            with its :data:`VARIANTS`; every registry schedule that gives a grid on the σ range).
        screen, keep: None (default): every candidate is scored on every training start, so the start is the best
            pair on them exactly; an integer: candidates are scored first on that many training starts and only the
            best ``keep`` on all of them (cheaper on an expensive model, but the best pair may be screened out).
        pool, pool_solved: stages 1 and 4 also decide on ``pool`` × the calibration batch more starts (0: none),
            of which the ``pool_solved`` share where the compared solvers disagree most get exact endpoints
            (:func:`compare`): where rare starts decide the error, a few hundred starts do not show them.
        time_budget: seconds from the start of :func:`fit` (None: no limit) after which the optimisation (stage 3)
            begins no further step — of this start's run, nor of the other starts' (they stop at their step 0).
            Only stage 3 is cut: stage 1's ranking, the exact endpoints it solves and stage 4 run to their end,
            before and after it. A fit so cut records where in ``meta["stopped_at_budget"]`` (each run stopped:
            its start, of how many, the step, of how many) and saves its state (``state_path``) to continue from.
        seed: minibatch order.
        starts: stage 3 runs from each of this many of the best pairs of stage 1 (in its order), and stage 4 holds
            the fits, best first on the validation starts and the pool's validation share, against the best pair:
            the first it keeps is the result. Each costs one optimisation.
        check, check_solved: stage 5 holds the fit stage 4 keeps against the best pair once more, on ``check`` ×
            the calibration batch starts that neither trained nor picked anything (0: no stage 5): the
            ``check_solved`` share of them (at least as many as the validation starts) solved in full, and the
            ``check_solved`` share of the rest where the two disagree most; it keeps the fit only where its mean
            squared error there is the smaller, else hands back the pair. Stage 4's starts also picked
            the iterate (the best of many checks) and hold few of the rarest starts: on the benchmark's VE
            mixture at 20 NFE a fit 0.68× its pair there was 1.38× it on 131072 other starts.
    """

    nfe: int
    validation: float = 0.25
    iters: int = 1000
    lr: float | None = None
    batch: int | None = 512
    check_every: int = 20
    history: int = 3
    fit_model_sigmas: bool = True
    samplers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    screen: int | None = None
    keep: int = 10
    pool: int = 16
    pool_solved: float = 1 / 16
    time_budget: float | None = None
    seed: int = 0
    starts: int = 3
    check: int = 64
    check_solved: float = 1 / 64

    def validate(self) -> "FitConfig":
        def whole(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InvalidOption(f"FitConfig.{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.nfe, bool) or not isinstance(self.nfe, int) or self.nfe >= 2):
            raise InvalidOption(f"FitConfig.nfe must be at least 2 model calls, got {self.nfe!r}: a fitted solver "
                                "weighs the model calls before each step (one call is one Euler step: run "
                                "sampler='euler' with steps=1)")
        for name, lo in (("nfe", 1), ("iters", 0), ("check_every", 1), ("history", 0), ("keep", 1), ("pool", 0),
                         ("seed", 0), ("starts", 1), ("check", 0)):
            whole(name, lo)
        if self.screen is not None:
            whole("screen", 1)
        for name in ("validation", "pool_solved", "check_solved", "lr", "time_budget"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                raise InvalidOption(f"FitConfig.{name} must be a number, got {v!r} ({type(v).__name__})")
        if not 0 < self.validation < 1:
            raise InvalidOption(f"FitConfig.validation must be in (0, 1), got {self.validation!r}")
        for name in ("pool_solved", "check_solved"):
            if not 0 < getattr(self, name) <= 1:
                raise InvalidOption(f"FitConfig.{name} must be a share in (0, 1], got {getattr(self, name)!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InvalidOption(f"FitConfig.lr must be a positive number or None, got {self.lr!r}")
        if self.batch is not None:
            whole("batch", 1)
        if self.time_budget is not None and not (self.time_budget > 0):
            raise InvalidOption(f"FitConfig.time_budget must be positive seconds or None, got {self.time_budget!r}")
        self._check_names("samplers", SAMPLERS)
        from ..schedules import SCHEDULES

        self._check_names("schedules", SCHEDULES)
        return self

    def _check_names(self, field: str, registry) -> None:
        """``samplers`` / ``schedules``: a tuple of names the registry knows (a typo is refused, not dropped)."""
        names = getattr(self, field)
        if names is None:
            return
        if isinstance(names, str) or not isinstance(names, (tuple, list)) or not names:
            raise InvalidOption(f"FitConfig.{field} must be a non-empty tuple of names (or None for all), got "
                                f"{names!r}" + (f"; write ({names!r},) for one" if isinstance(names, str) else ""))
        for name in names:
            registry.canonical(name)  # an unknown name: UnknownNameError with the closest ones


@dataclasses.dataclass(eq=False)
class Calibration:
    """Starts (noise · σ_max, σ_max the σ they start at) and their exact endpoints, split into a training and a
    validation part."""

    x_train: torch.Tensor
    ref_train: torch.Tensor
    x_val: torch.Tensor
    ref_val: torch.Tensor
    sigma_min: float
    sigma_max: float
    extra_train: dict = dataclasses.field(default_factory=dict)  # per-item denoiser arguments (conditioning)
    extra_val: dict = dataclasses.field(default_factory=dict)
    # per-start weights of the mean (None: equal): where the pool's rare starts join (:func:`with_hard_starts`)
    w_train: torch.Tensor | None = None
    w_val: torch.Tensor | None = None


def _take(extra: dict, idx) -> dict:
    return {k: v[idx] for k, v in extra.items()}


@dataclasses.dataclass(eq=False)
class Starts:
    """The calibration batch from every σ a candidate starts at: ``noise · σ`` and its exact endpoints
    (``reference_fn(x, extra, σ)``, solved the first time a σ is asked for; σ_max's may be given), split as a
    :class:`Calibration`. ``higher``: candidates may start above σ_max, at the finite σ a registry schedule starts
    at, or σ = ∞ itself — for a model defined up to σ = ∞ (flow matching), where Align Your Steps' SVD table starts
    at 700 and the flow schedule at t = 1."""

    noise: torch.Tensor | None
    n_val: int
    extra: dict
    sigma_min: float
    sigma_max: float
    reference_fn: Callable[[torch.Tensor, dict, float], torch.Tensor] | None
    higher: bool = False
    made: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, data: Calibration) -> "Starts":
        """The starts of ``data`` only (at its σ_max)."""
        n_val = data.x_val.shape[0]
        return cls(None, n_val, {}, data.sigma_min, data.sigma_max, None, made={data.sigma_max: data})

    def at(self, sigma: float) -> Calibration:
        if sigma not in self.made:
            if self.noise is None or self.reference_fn is None:
                raise InvalidInput(f"no calibration starts from σ = {sigma:g} (only from {sorted(self.made)})")
            x = initial_latent(self.noise, [sigma])
            ref = self.reference_fn(x, self.extra, sigma)
            v = -self.n_val
            self.made[sigma] = Calibration(x[:v], ref[:v], x[v:], ref[v:], self.sigma_min, sigma,
                                           _take(self.extra, slice(0, v)), _take(self.extra, slice(v, None)))
        return self.made[sigma]


def pair_label(sampler: str, options: dict, schedule: str, start: float | None = None) -> str:
    """How a (sampler, options, schedule) pair is named in logs and reports: ``"deis, order=3 + karras"``, and
    ``"euler + flow from σ = inf"`` for a start at σ = inf (a schedule may be a candidate from a finite σ too)."""
    tail = " from σ = inf" if start is not None and math.isinf(start) else ""
    return f"{sampler}{''.join(f', {k}={v}' for k, v in options.items())} + {schedule}{tail}"


@dataclasses.dataclass(eq=False)
class Candidate:
    error: float  # RMSE on the training starts
    sampler: str
    options: dict
    schedule: str
    solver: LearnedSolver
    pooled: float | None = None  # mean squared error minus the training leader's, training starts and pool

    @property
    def label(self) -> str:
        return pair_label(self.sampler, self.options, self.schedule, self.solver.sigmas[0])


# ------------------------------------------------------------------------------------------------------
# the differentiable solver


@dataclasses.dataclass(eq=False)
class Params:
    """What is optimised: node gaps θ (softmax shares of the log-σ range), weights b, c (below the diagonal,
    where ``mask`` allows), the log-shift of the σ the model is told."""

    theta: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    shift: torch.Tensor
    mask: torch.Tensor
    log_max: float
    log_min: float
    top: float | None = None  # the first node exactly (exp(log_max) may round): where the solver starts
    # (σ_min, σ_max) of the model's timestep table, where its time input comes from one (identity.table_range): the
    # σ the model is told stays inside it, where it is told that σ's own timestep (outside, its time input would be
    # clamped to the table's end while its input and output are scaled for the σ itself)
    model_range: tuple[float, float] | None = None

    def nodes(self) -> torch.Tensor:
        gaps = torch.softmax(self.theta, 0) * (self.log_max - self.log_min)
        logs = self.log_max - torch.cat([gaps.new_zeros(1), torch.cumsum(gaps, 0)])[:-1]
        out = torch.cat([logs.exp(), gaps.new_zeros(1)])
        if self.top == math.inf:  # node 0 stands in for σ = inf: log_max is only the cap on σ_1
            out = torch.cat([out.new_full((1,), math.inf), out[1:]])
        return out

    def tensors(self) -> list[torch.Tensor]:
        return [self.theta, self.b, self.c, self.shift]

    def model_sigma(self, sigma, i: int):
        """The σ the model is told at node ``sigma`` (step ``i``): shifted by the fitted log-shift, within
        :attr:`model_range` (a tensor, differentiable, or a Python float)."""
        return model_sigma(sigma, self.shift[i], self.model_range)

    @classmethod
    def of(cls, solver: LearnedSolver, sigma_min: float, history: int) -> "Params":
        n = solver.steps
        finite = [v for v in solver.sigmas[:-1] if math.isfinite(v)]
        lowest = min([sigma_min, *finite[-1:]])
        log_min = math.log(lowest if math.isfinite(lowest) else 1.0)
        logs = [math.log(v) for v in finite]
        if math.isinf(solver.sigmas[0]):  # from σ = inf: a virtual node 0 caps how far σ_1 may move up
            logs = [(logs[0] if logs else log_min) + math.log(INF_HEADROOM), *logs]
        log_max = logs[0]
        gaps = [a - b for a, b in zip(logs, logs[1:])] + [max(logs[-1] - log_min, 0.0)]
        gaps = [max(g, 1e-4 * (log_max - log_min)) for g in gaps]
        total = sum(gaps)
        theta = torch.tensor([math.log(g / total) for g in gaps], dtype=torch.float64)
        b = torch.zeros(n, n, dtype=torch.float64)
        c = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(i):
                b[i, j], c[i, j] = solver.eps_weights[i][j], solver.denoised_weights[i][j]
        mask = torch.tril(torch.ones(n, n, dtype=torch.float64), -1)
        mask = mask - torch.tril(mask, -history - 1)  # j ≥ i − history ...
        mask = torch.maximum(mask, ((b != 0) | (c != 0)).to(torch.float64))  # ... and what the start uses
        ms = solver.model_sigmas or solver.sigmas[:-1]
        shift = torch.tensor([math.log(m / s) if math.isfinite(s) else 0.0 for m, s in zip(ms, solver.sigmas)],
                             dtype=torch.float64)
        return cls(theta, b, c, shift, mask, log_max, log_min, solver.sigmas[0])

    def solver(self) -> LearnedSolver:
        with torch.no_grad():
            sig = self.nodes().tolist()
            b, c = self.b * self.mask, self.c * self.mask
        sig[-1] = 0.0
        if self.top is not None:
            sig[0] = self.top
        n = len(sig) - 1
        shift = self.shift.detach()
        ms = ([float(model_sigma(sig[i], shift[i], self.model_range)) for i in range(n)] if bool(shift.any())
              else None)
        return LearnedSolver(sig, [[float(b[i, j]) for j in range(i)] for i in range(n)],
                             [[float(c[i, j]) for j in range(i)] for i in range(n)], model_sigmas=ms)


def model_sigma(sigma, shift, model_range: tuple[float, float] | None):
    """σ·exp(shift), the shift held to ±log :data:`~samplers.fitted.solver.MODEL_SIGMA_RATIO` (what a solver file
    may hold; the committed fits never reach it) and the result clamped to ``model_range`` where one is given (the
    gradient of a clamped σ is 0); infinite σ as it is."""
    bound = math.log(MODEL_SIGMA_RATIO)
    if isinstance(sigma, float):
        if math.isinf(sigma):
            return sigma
        told = sigma * math.exp(min(max(float(shift), -bound), bound))
        return told if model_range is None else min(max(told, model_range[0]), model_range[1])
    told = sigma * shift.clamp(-bound, bound).exp()
    return told if model_range is None else told.clamp(model_range[0], model_range[1])


def rollout(denoiser, x: torch.Tensor, sigmas: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
            shift: torch.Tensor | None = None, extra: dict | None = None,
            model_range: tuple[float, float] | None = None) -> torch.Tensor:
    """The solver's update with tensor σ and weights (differentiable): what ``learned_multistep`` computes.
    ``extra``: keyword arguments of every denoiser call (per-item conditioning); ``model_range``: the bounds of the
    σ the model is told (:attr:`Params.model_range`; a solver's own file runs as it is, unbounded)."""
    extra = extra or {}
    eps_hist, den_hist = [], []
    first = 0
    if bool(torch.isinf(sigmas[0])):  # the exact step from σ = inf (x the unit noise): nothing to fit in it
        denoised = denoiser(x, x.new_full((x.shape[0],), math.inf), **extra)
        x = update(x, denoised, math.inf, sigmas[1], eps_hist, den_hist, (), None, None)
        first = 1
    for i in range(first, sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_model = sigma if shift is None else model_sigma(sigma, shift[i], model_range)
        denoised = denoiser(x, sigma_model.to(x.dtype).expand(x.shape[0]), **extra)
        x = update(x, denoised, sigma, sigma_next, eps_hist, den_hist, range(i), b[i], c[i])
    return x


def endpoints(denoiser, solver: LearnedSolver, x: torch.Tensor, extra: dict | None = None) -> torch.Tensor:
    """The solver's endpoints from ``x`` (no gradient)."""
    p = Params.of(solver, solver.sigmas[-2], 0)
    with torch.no_grad():
        return rollout(denoiser, x, solver.tensor(), p.b, p.c, p.shift if bool(p.shift.any()) else None, extra)


def endpoints_each(denoiser, solvers: list[LearnedSolver], x: torch.Tensor, extra: dict | None = None,
                   finish: Callable[[int, torch.Tensor], object] | None = None) -> list:
    """:func:`endpoints` of each solver from the same ``x``, bit for bit, calling the model once for solvers that
    agree so far: while solvers share their nodes, the σ the model is told and their weights up to a step, they hold
    the same state there and make the same call (every pair of stage 1 from σ_max makes the same first call, and
    the samplers of one schedule whose first steps are Euler's the same second one). ``finish(k, x)``: called with
    each solver's endpoints as they come, its result kept in place of them (None: the endpoints)."""
    runs = []
    for s in solvers:
        p = Params.of(s, s.sigmas[-2], 0)
        runs.append((s.tensor(), p.b, p.c, p.shift if bool(p.shift.any()) else None))
    out: list = [None] * len(runs)
    with torch.no_grad():
        _walk(denoiser, runs, x, extra or {}, finish, out)
    return out


def _groups(members: list[int], key: Callable[[int], tuple]) -> list[list[int]]:
    found: dict = {}
    for k in members:
        found.setdefault(key(k), []).append(k)
    return list(found.values())


def _walk(denoiser, runs, x, extra, finish, out) -> None:
    """:func:`rollout` of every run of ``runs`` ((σ, b, c, shift)) from ``x``, depth first on a stack (a solver of
    any length, as :func:`endpoints` takes): the runs that share the state and histories at step i make one model
    call per σ told and one update per next σ and weight row; each call and update is made when its branch is taken,
    so the states held are those along one path and its pending branches' inputs."""
    todo = [("state", list(range(len(runs))), 0, x, [], [], None)]
    while todo:
        kind, members, i, x, eps_hist, den_hist, called = todo.pop()
        if kind == "state":  # members share x at step i: the finished ones end here, the rest call the model
            live = []
            for k in members:
                if i == runs[k][0].shape[0] - 1:
                    out[k] = x if finish is None else finish(k, x)
                else:
                    live.append(k)

            def told(k):
                sigmas, _, _, shift = runs[k]
                if i == 0 and bool(torch.isinf(sigmas[0])):
                    return (math.inf, math.inf)
                return (float(sigmas[i]), float(sigmas[i] if shift is None else sigmas[i] * shift[i].exp()))

            todo.extend(("call", group, i, x, eps_hist, den_hist, None) for group in reversed(_groups(live, told)))
        elif kind == "call":  # one model call for members, then one update per next σ and weight row
            sigmas, _, _, shift = runs[members[0]]
            if i == 0 and bool(torch.isinf(sigmas[0])):  # rollout's exact step from σ = inf
                denoised, sigma = denoiser(x, x.new_full((x.shape[0],), math.inf), **extra), math.inf
                key = lambda k: (float(runs[k][0][1]),)  # noqa: E731
            else:
                sigma = sigmas[i]
                sigma_model = sigma if shift is None else sigma * shift[i].exp()
                denoised = denoiser(x, sigma_model.to(x.dtype).expand(x.shape[0]), **extra)
                key = lambda k: (float(runs[k][0][i + 1]), tuple(runs[k][1][i, :i].tolist()),  # noqa: E731
                                 tuple(runs[k][2][i, :i].tolist()))
            todo.extend(("step", same, i, x, eps_hist, den_hist, (denoised, sigma))
                        for same in reversed(_groups(members, key)))
        else:  # "step": the update members share, from their call's denoised
            sigmas, b, c, _ = runs[members[0]]
            denoised, sigma = called
            e, d = list(eps_hist), list(den_hist)
            if isinstance(sigma, float):
                x_next = update(x, denoised, sigma, sigmas[1], e, d, (), None, None)
            else:
                x_next = update(x, denoised, sigma, sigmas[i + 1], e, d, range(i), b[i], c[i])
            todo.append(("state", members, i + 1, x_next, e, d, None))


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


def per_start_mse(denoiser, solver: LearnedSolver, x: torch.Tensor, ref: torch.Tensor,
                  extra: dict | None = None) -> torch.Tensor:
    """Each start's mean squared endpoint error against ``ref`` (no gradient), float64 [B]."""
    return _mse(endpoints(denoiser, solver, x, extra), ref)


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


def solver_rmse(denoiser, solver: LearnedSolver, x: torch.Tensor, ref: torch.Tensor, extra: dict | None = None,
                weights: torch.Tensor | None = None) -> float:
    """RMSE of the solver's endpoints from ``x`` against ``ref`` (no gradient); ``weights``: of each start's
    squared error in the mean (None: equal)."""
    return float(_mean(per_start_mse(denoiser, solver, x, ref, extra), weights).sqrt())


# ------------------------------------------------------------------------------------------------------
# deciding on many starts, with exact endpoints only where they decide


@dataclasses.dataclass(eq=False)
class Pool:
    """Starts without exact endpoints (unit ``noise``), on which solvers are compared (:func:`compare`): a solver
    that starts at σ runs from ``noise · σ``, and an endpoint is solved (``reference_fn(noise · σ, extra, σ)``) the
    first time a comparison needs it, and kept."""

    noise: torch.Tensor
    extra: dict
    reference_fn: Callable[[torch.Tensor, dict, float], torch.Tensor]
    solved_share: float
    refs: dict = dataclasses.field(default_factory=dict)  # σ -> endpoints (valid where solved)
    solved: dict = dataclasses.field(default_factory=dict)  # σ -> bool [len]
    strata: Strata | None = None  # how stage 1's comparison split it (:func:`starting_point`)

    def __len__(self) -> int:
        return self.noise.shape[0]

    def x(self, sigma: float) -> torch.Tensor:
        return initial_latent(self.noise, [sigma])

    def solved_count(self) -> int:
        return sum(int(v.sum()) for v in self.solved.values())

    def references(self, idx: torch.Tensor, sigma: float) -> torch.Tensor:
        if sigma not in self.refs:
            self.refs[sigma] = torch.zeros_like(self.noise)
            self.solved[sigma] = torch.zeros(len(self), dtype=torch.bool)
        ref, solved = self.refs[sigma], self.solved[sigma]
        missing = idx[~solved[idx]]
        if missing.numel():
            ref[missing] = self.reference_fn(self.x(sigma)[missing], _take(self.extra, missing), sigma).to(ref.dtype)
            solved[missing] = True
        return ref[idx]


@dataclasses.dataclass(eq=False)
class Strata:
    """How :func:`compare` split the pool: the starts where ``solvers`` (each from its own first σ) disagree most —
    the largest squared distance of a solver's endpoint from the first's — are ``hard`` (pool indices, ascending),
    every start whose disagreement reaches ``threshold`` is one of them."""

    solvers: list
    hard: torch.Tensor
    threshold: float
    known: torch.Tensor  # their disagreement on the known starts compare had

    def spread(self, denoiser, x_by_sigma: dict, extra: dict) -> torch.Tensor:
        """The disagreement of the solvers on other starts (``x_by_sigma``: {σ: the same starts from σ})."""
        return _disagreement(_endpoints_from(denoiser, self.solvers, {t: (x, extra) for t, x in x_by_sigma.items()}))


def _disagreement(ends: list[torch.Tensor]) -> torch.Tensor:
    """Per start, the largest squared distance of an endpoint from the first solver's (a solver that diverges
    somewhere disagrees most there: NaN counts as infinitely far)."""
    return torch.stack([_mse(e, ends[0]) for e in ends]).amax(0).nan_to_num(math.inf)


def _endpoints_from(denoiser, solvers: list[LearnedSolver], starts: dict) -> list[torch.Tensor]:
    """Each solver's endpoints from the starts at the σ it starts at (``starts``: {σ: (x, extra)}; :func:`endpoints_each`
    on the solvers of each start together)."""
    out: list = [None] * len(solvers)
    tops = [_start_key(s, starts) for s in solvers]
    for same in _groups(list(range(len(solvers))), lambda k: (tops[k],)):
        for k, e in zip(same, endpoints_each(denoiser, [solvers[k] for k in same], *starts[tops[same[0]]])):
            out[k] = e
    return out


def _start_key(solver: LearnedSolver, known: dict) -> float:
    """The key of ``known`` that ``solver`` starts at (up to rounding)."""
    top = solver.sigmas[0]
    for sigma in known:
        if math.isclose(top, sigma, rel_tol=1e-9):
            return sigma
    raise InvalidInput(f"compare: no known starts from σ = {top!r} (known: {sorted(known)})")


def compare(denoiser, solvers: list[LearnedSolver], known: dict, pool: Pool | None, *,
            within: torch.Tensor | None = None, strata: bool = False):
    """Each solver's mean squared endpoint error minus the first one's, over known starts and the pool's,
    float64 [len(solvers)]. ``known``: {σ: (x, ref, extra)} — the same starts from each σ the solvers start at
    (``solver.sigmas[0]``), with their exact endpoints ``ref`` and per-item arguments. ``within``: the pool
    indices to use (None: all). ``strata``: also return the :class:`Strata` of the pool (None without a pool).

    Where the error is set by rare starts (on data with modes, those a solver sends to another mode), a few
    hundred starts may hold none, and solving the exact endpoints of thousands costs hundreds of model calls each.
    So the solvers run from every pool start, and only the ``pool.solved_share`` of them where they disagree most
    (the largest squared distance of a solver's endpoint from the first's) get exact endpoints: their error
    differences are exact. On the other pool starts the solvers nearly agree, and the mean difference there is
    taken from the known starts that disagree as little (stratified sampling: a start's difference is at most
    the distance between the two endpoints times the sum of their errors, so that estimate is close). Without a
    pool: the mean differences on the known starts.
    """
    tops = [_start_key(s, known) for s in solvers]
    ends = _endpoints_from(denoiser, solvers, {t: (x, ex) for t, (x, _, ex) in known.items()})
    errors = [_mse(e, known[t][1]) for e, t in zip(ends, tops)]
    diffs = [e - errors[0] for e in errors]  # per start, exact
    n = ends[0].shape[0]
    if pool is None or len(pool) == 0 or len(solvers) == 1:
        out = torch.stack([d.mean() for d in diffs])
        return (out, None) if strata else out
    idx = torch.arange(len(pool)) if within is None else within
    extra = _take(pool.extra, idx)
    pooled = _endpoints_from(denoiser, solvers, {t: (pool.x(t)[idx], extra) for t in set(tops)})
    spread, spread_known = _disagreement(pooled), _disagreement(ends)
    m = idx.shape[0]
    k = min(m, max(1, math.ceil(pool.solved_share * m)))
    top_k = torch.topk(spread, k).indices
    hard = idx[top_k]
    first_hard = _mse(pooled[0][top_k], pool.references(hard, tops[0]))
    easy_known = spread_known < float(spread[top_k].min())
    out = []
    for d_known, e, t in zip(diffs, pooled, tops):
        d_hard = _mse(e[top_k], pool.references(hard, t)) - first_hard
        easy = float(d_known[easy_known].mean()) if bool(easy_known.any()) else 0.0
        out.append((float(d_known.sum()) + float(d_hard.sum()) + (m - k) * easy) / (n + m))
    out = torch.tensor(out, dtype=torch.float64)
    return (out, Strata(list(solvers), hard.sort().values, float(spread[top_k].min()), spread_known)) if strata else out


def with_hard_starts(denoiser, data: Calibration, starts: "Starts", pool: Pool, strata: Strata,
                     n_val: int, *, spread: dict | None = None) -> Calibration:
    """``data`` (the calibration from the fit's start σ) joined by the pool's hard starts, weighted so that each
    part's mean is the stratified estimate of the mean over the calibration and pool starts together: the pool's
    first ``len(pool) − n_val`` starts join the training part, its last ``n_val`` the validation part (the pool
    holds ``len(pool) / len(calibration)`` starts per calibration start). A hard start weighs 1; the calibration's
    own starts that the strata's solvers disagree on as little as on the pool's unsolved ones stand in for those
    as well (weight (own + unsolved) / own). Where the error is a few rare starts (0.1 % of a mixture's starts can
    hold most of it), training and checking the iterates on the solved rare starts of the pool — an order of
    magnitude more of them than the calibration holds — fits those instead of the few the calibration happens to
    have. ``spread``: the strata's disagreement on ``data``'s parts where known ({"train": …, "val": …}; the
    training starts' is ``strata.known`` where they were the comparison's known starts, as in :func:`fit`); the
    parts it lacks are computed and added to it, so calls on the same starts from another σ share them."""
    sigma = data.sigma_max
    tops = {s.sigmas[0] for s in strata.solvers}
    spread = {} if spread is None else spread
    for part in ("train", "val"):
        if part not in spread:
            xs = {t: getattr(starts.at(t), f"x_{part}") for t in tops}
            spread[part] = strata.spread(denoiser, xs, getattr(data, f"extra_{part}"))
    cut = len(pool) - n_val
    parts = {"train": strata.hard[strata.hard < cut], "val": strata.hard[strata.hard >= cut]}
    sizes = {"train": cut, "val": n_val}
    out = {}
    for part, hard in parts.items():
        x, ref, extra = getattr(data, f"x_{part}"), getattr(data, f"ref_{part}"), getattr(data, f"extra_{part}")
        easy = spread[part] < strata.threshold
        n_easy = int(easy.sum())
        w = torch.ones(x.shape[0], dtype=torch.float64)
        if n_easy:
            w[easy] = (n_easy + sizes[part] - hard.shape[0]) / n_easy
        pool_extra = _take(pool.extra, hard)
        out[part] = (torch.cat([x, pool.x(sigma)[hard].to(x.dtype)]),
                     torch.cat([ref, pool.references(hard, sigma).to(ref.dtype)]),
                     {k: torch.cat([v, pool_extra[k]]) for k, v in extra.items()},
                     torch.cat([w, torch.ones(hard.shape[0], dtype=torch.float64)]))
    (xt, rt, et, wt), (xv, rv, ev, wv) = out["train"], out["val"]
    return Calibration(xt, rt, xv, rv, data.sigma_min, sigma, et, ev, wt, wv)


# ------------------------------------------------------------------------------------------------------
# the stages


def _step_counts(nfe: int, per: int, top: float) -> list[int]:
    """The step counts at which a sampler of ``per`` calls a step makes ``nfe`` calls: p·steps, or one fewer where
    its last step is Euler's; from σ = inf its first step is one call."""
    counts = {-(-nfe // per), -(-(nfe + 1) // per)}
    if math.isinf(top):
        counts.add(1 - (-(nfe - 1) // per))
    return sorted(counts)


def _grid(sched: str, steps: int, native, sigma_min: float, sigma_max: float, asked: float,
          higher: bool) -> torch.Tensor | None:
    """The schedule's σ asked from ``asked``, if it ends at 0 and starts at ``sigma_max`` (within ``START_TOL``, then
    exactly there) or, with ``higher``, above it; else None."""
    import samplers
    from ..schedules.base import PRESETS, SCHEDULES

    # a preset (Align Your Steps) is published levels and takes no range: built without one, with or without native
    ranged = {} if SCHEDULES.canonical(sched) in PRESETS else {"sigma_min": sigma_min, "sigma_max": asked}
    try:
        sig = samplers.get_sigmas(sched, steps, native=native, **ranged)
    except (ValueError, TypeError):
        return None
    top = float(sig[0])
    at_max = math.isclose(top, sigma_max, rel_tol=START_TOL)
    if float(sig[-1]) != 0 or not (at_max or (higher and sigma_max < top)):
        return None
    sig = sig.clone()
    if at_max:
        sig[0] = sigma_max
    return sig


def candidates(nfe: int, sigma_min: float, sigma_max: float, native=None, config: FitConfig | None = None,
               higher: bool = False):
    """Every (sampler, options, schedule, solver) the family expresses at ``nfe`` calls from ``sigma_max``; with
    ``higher`` (a model defined up to σ = ∞, ``native.sigma_max``) also those on schedules that start higher, at a
    σ of their own or at σ = ∞ itself (x the unit noise, the library's exact first step from there), from there.
    Two that are the same solver (ddim = euler; a fixed table asked for from two tops) count once."""
    import samplers
    from .express import express

    names = config.samplers if config and config.samplers else [
        n for n in samplers.available("ode") if not SAMPLERS.get(n).host_sync and n != "learned_multistep"]
    scheds = config.schedules if config and config.schedules else samplers.schedules.available()
    tops = [sigma_max] + ([native.sigma_max] if higher and native is not None and native.sigma_max > sigma_max else [])
    seen, out = set(), []
    offers = ((name, options, sched, asked) for name in names for options in ({}, *VARIANTS.get(name, ()))
              for sched in scheds for asked in tops)
    for name, options, sched, asked in offers:
        per = max(samplers.info(name).nfe_per_step, 1)
        for steps in _step_counts(nfe, per, asked):
            sig = _grid(sched, steps, native, sigma_min, sigma_max, asked, higher)
            solver = None if sig is None else express(name, sig, nfe=nfe, **options)
            if solver is None:
                continue
            key = (tuple(round(v, 10) for v in solver.sigmas),
                   tuple(round(v, 9) for row in solver.eps_weights + solver.denoised_weights for v in row))
            if key not in seen:
                seen.add(key)
                out.append(Candidate(math.inf, name, dict(options), sched, solver))
    return out


def no_pair(nfe: int, sigma_min: float, sigma_max: float, native=None, config: FitConfig | None = None,
            higher: bool = False) -> str:
    """Why :func:`candidates` is empty (no model call: the candidates are read off a probe): each sampler and schedule
    asked by name (``config.samplers`` / ``config.schedules``) that yields no pair, and why: the sampler draws noise,
    picks its steps on the host, or is expressed at exactly ``nfe`` calls on no grid asked; the schedule gives no
    grid from σ_max (or above it, with ``higher``) down to 0. The refusal :func:`fit` raises before it solves any
    endpoint."""
    import samplers
    from ..core.run import draws_noise
    from .express import express

    names = list(config.samplers) if config and config.samplers else [
        n for n in samplers.available("ode") if not SAMPLERS.get(n).host_sync and n != "learned_multistep"]
    scheds = list(config.schedules) if config and config.schedules else samplers.schedules.available()
    tops = [sigma_max] + ([native.sigma_max] if higher and native is not None and native.sigma_max > sigma_max else [])
    grids: dict[str, list] = {}  # schedule -> the grids it gives at the step counts any sampler asked needs
    for sched in scheds:
        counts = sorted({k for name in names for top in tops
                         for k in _step_counts(nfe, max(samplers.info(name).nfe_per_step, 1), top)})
        grids[sched] = [g for k in counts for top in tops
                        if (g := _grid(sched, k, native, sigma_min, sigma_max, top, higher)) is not None]
    reasons = []
    for name in (config.samplers if config and config.samplers else ()):  # what was asked, each by name
        spec = samplers.info(name)
        why = ("draws noise (a stochastic sampler; the learned family is deterministic)" if draws_noise(spec, {}) else
               "picks its steps as it runs, reading the model's output on the host (no fixed grid of calls)"
               if spec.host_sync else None)
        if why is None and any(grids.values()) and not any(
                express(name, g, nfe=nfe, **o) is not None for o in ({}, *VARIANTS.get(name, ()))
                for gs in grids.values() for g in gs):
            why = (f"is expressed at exactly {nfe} model calls on no grid of the schedules asked (not linear in the "
                   "model's outputs, two calls at one σ, or no step count that makes that many calls)")
        if why:
            reasons.append(f"sampler {name!r} {why}")
    where = f"σ_max = {sigma_max:g}" + (f" (or above it, up to {native.sigma_max:g})" if len(tops) > 1 else "")
    for sched in (config.schedules if config and config.schedules else ()):
        if not grids[sched]:
            reasons.append(f"schedule {sched!r} gives no grid from {where} down to 0 (a table for another model's "
                           "range, or one that needs the model's native schedule)")
    if not reasons and not (config and (config.samplers or config.schedules)):
        return (f"no registry sampler reaches exactly {nfe} model calls on a schedule from {where}; check the σ "
                "range")
    if not reasons:  # each asked yields something alone, but no pair of them
        reasons.append(f"no sampler asked is expressed at {nfe} model calls on a grid of a schedule asked")
    return (f"FitConfig(samplers={config.samplers!r}, schedules={config.schedules!r}) leaves no (sampler, schedule) "
            f"pair the learned family expresses at exactly {nfe} model calls from {where}: " + "; ".join(reasons)
            + ". Add a deterministic registry sampler (euler, dpmpp_2m, …) or a schedule built on this σ range "
            "(karras, …), or leave samplers / schedules at None for the registry's")


def starting_point(denoiser, data: Calibration | Starts, config: FitConfig, native=None, log=None,
                   pool: Pool | None = None, found: list[Candidate] | None = None) -> list[Candidate]:
    """Stage 1: the candidates ranked by RMSE on the training starts, the first being the fit's start. Every
    candidate is scored on every training start (from the σ it starts at: ``data`` as :class:`Starts`, with
    ``higher``, also offers the candidates that start above σ_max), or with ``config.screen`` first on that many
    and only the best ``config.keep`` on all of them (the rest keep their screening error and rank behind those).
    With a ``pool``, the best ``config.keep`` are then ranked on the training starts and the pool together
    (:func:`compare`). The candidates from one σ run together (:func:`endpoints_each`), each bit for bit as alone,
    a model call shared while their steps agree. ``found``: :func:`candidates` already built (by :func:`fit`, before
    its endpoints were solved)."""
    t0 = time.monotonic()
    starts = data if isinstance(data, Starts) else Starts.of(data)
    if found is None:
        found = candidates(config.nfe, starts.sigma_min, starts.sigma_max, native, config, higher=starts.higher)
    if not found:
        raise InvalidInput(no_pair(config.nfe, starts.sigma_min, starts.sigma_max, native, config, starts.higher))

    def train(cand: Candidate, k: int | None = None) -> tuple:
        d = starts.at(cand.solver.sigmas[0])
        k = d.x_train.shape[0] if k is None else k
        return d.x_train[:k], d.ref_train[:k], _take(d.extra_train, slice(0, k))

    calls = [0, 0]  # the model calls made, and those the pairs would make alone

    def counted(x, sigma, **extra):
        calls[0] += 1
        return denoiser(x, sigma, **extra)

    def score(cands: list[Candidate], k: int | None = None) -> None:  # each one's RMSE, as solver_rmse gives it
        calls[1] += sum(c.solver.steps for c in cands)
        for same in _groups(list(range(len(cands))), lambda i: (cands[i].solver.sigmas[0],)):
            x, ref, extra = train(cands[same[0]], k)
            errors = endpoints_each(counted, [cands[i].solver for i in same], x, extra,
                                    finish=lambda i, end: float(_mse(end, ref).mean().sqrt()))
            for i, error in zip(same, errors):
                cands[i].error = error

    n = starts.at(starts.sigma_max).x_train.shape[0]
    k = n if config.screen is None else min(config.screen, n)
    score(found, k)
    found.sort(key=lambda cand: cand.error if math.isfinite(cand.error) else math.inf)
    if k < n:
        top = found[:config.keep]
        score(top)
        top.sort(key=lambda cand: cand.error)
        found = top + found[config.keep:]
    if log:
        above = sorted({c.solver.sigmas[0] for c in found} - {starts.sigma_max})
        log(f"{len(found)} expressible (sampler, schedule) pairs"
            + (f" (some from σ = {', '.join(f'{v:g}' for v in above)})" if above else "")
            + (f", screened on {k} training starts" if k < n else "") + "; best on the training starts: "
            + "; ".join(f"{c.label} {c.error:.4g}" for c in found[:3])
            + f" ({calls[0]} model calls for their {calls[1]} steps, {time.monotonic() - t0:.0f} s)")
    if pool is not None and len(pool) and len(found) > 1:
        t0 = time.monotonic()
        top = [c for c in found[:config.keep] if math.isfinite(c.error)]
        known = {c.solver.sigmas[0]: train(c) for c in top}
        pooled, pool.strata = compare(denoiser, [c.solver for c in top], known, pool, strata=True)
        for cand, d in zip(top, pooled.tolist()):
            cand.pooled = d if math.isfinite(d) else math.inf
        top.sort(key=lambda cand: cand.pooled)
        found = top + found[len(top):]
        if log:
            log(f"the best {len(top)} on the training starts and {len(pool)} more: "
                + "; ".join(f"{c.label} {c.pooled:+.3g}" for c in top[:3])
                + f" (mean squared error minus the training leader's; {time.monotonic() - t0:.0f} s)")
    return found


def objective(denoiser, params: Params, x: torch.Tensor, ref: torch.Tensor, extra: dict | None = None,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 2: mean squared endpoint error (differentiable); ``weights``: of each start (None: equal)."""
    out = rollout(denoiser, x, params.nodes(), params.b * params.mask, params.c * params.mask, params.shift, extra,
                  params.model_range)
    return _mean((out - ref).pow(2).flatten(1).mean(1), weights)


def validation_starts(n: int, validation: float, flags: tuple[str, str] | None = None) -> int:
    """How many of ``n`` calibration starts are validation starts at the share ``validation`` (the last
    round(n · validation)): the rule :func:`fit` splits by, for callers to check before any endpoint is solved.
    A split that leaves no validation or no training start raises InvalidInput naming the share, the count and the
    smallest count or share that splits; ``flags``: the options that set them (("--validation", "--calibration")),
    named instead of FitConfig's fields."""
    n_val = int(round(n * validation))
    if 0 < n_val < n:
        return n_val
    share, count = flags or ("validation", "a calibration batch of")
    low = min(validation, 1 - validation)
    enough = max(n, 2, math.ceil(0.5 / low) - 2) if low > 0 else None
    while enough is not None and not 0 < int(round(enough * validation)) < enough:
        enough += 1
    fix = (f"{count} {enough} or more" if enough is not None else "another calibration count")
    if not (flags and flags[0].startswith("FitConfig")):  # a share the caller cannot set is no fix to offer
        fix += (f", or {share} at least {1 / n:.4g}" if n_val == 0 and n > 1 else
                f", or {share} at most {(n - 1) / n:.4g}" if n_val == n and n > 1 else "")
    raise InvalidInput(f"{share} {validation:g} of {count} {n} starts makes {n_val} validation and {n - n_val} "
                       f"training starts (round({n} × {validation:g})): the fit needs at least one of each; use "
                       f"{fix}")


def content_digest(obj) -> str:
    """A SHA-256 of ``obj`` — nested dicts, lists and tuples of tensors (dtype, shape and bytes), numbers, strings,
    None — recorded in the files under ``<out>/.work`` when they are written and checked when they are read back: a
    value not written there by the fit (a hand edit, a file of something else, bit rot) does not match."""
    import hashlib

    h = hashlib.sha256()

    def feed(v) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(v.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            h.update(b"{")
            for k in sorted(v, key=repr):
                feed(k)
                feed(v[k])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for item in v:
                feed(item)
            h.update(b"]")
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(f"{type(v).__name__}:{v!r};".encode())
        else:
            raise TypeError(f"content_digest: a {type(v).__name__} is not data")

    feed(obj)
    return h.hexdigest()


def with_digest(content: dict) -> dict:
    """``content`` with its :func:`content_digest` under ``"digest"``: how a file under ``<out>/.work`` is written."""
    return {**content, "digest": content_digest(content)}


def digest_matches(saved: dict) -> bool:
    """Whether ``saved`` (a file under ``<out>/.work`` read back) holds the digest of the rest of its content."""
    return saved.get("digest") == content_digest({k: v for k, v in saved.items() if k != "digest"})


def read_saved(path: str | Path, what: str, fix: str) -> dict:
    """A dict written with :func:`samplers.core.files.write_torch` (a fit's saved state, cached exact endpoints):
    :func:`samplers.core.files.read_torch_dict`, InvalidInput naming ``what``, the file and ``fix``."""
    return read_torch_dict(path, what, fix)


def optimise(denoiser, start: LearnedSolver, data: Calibration, config: FitConfig, *, deadline: float | None = None,
             state_path: str | Path | None = None, log=None, progress=None,
             stopped: dict | None = None) -> tuple[LearnedSolver, float, int]:
    """Stage 3: Adam from ``start``; returns (best iterate by validation RMSE, that RMSE, its iteration). The
    start itself is iterate 0. With ``state_path`` the run saves its state at every check and resumes from it.
    ``deadline`` (``time.monotonic()``) is checked before each step: past it the run stops, saves its state at that
    step (with ``state_path``; a later run resumes there and ends where an uncut run would) and, where ``stopped``
    is given, records in it the step it stopped at and of how many (``{"iteration": it, "iters": iters}``)."""
    params = Params.of(start, data.sigma_min, config.history)
    from .identity import table_range

    params.model_range = table_range(denoiser)
    for t in params.tensors():
        t.requires_grad_(True)
    params.shift.requires_grad_(config.fit_model_sigmas)
    trained = [params.theta, params.b, params.c] + ([params.shift] if config.fit_model_sigmas else [])
    lr = config.lr if config.lr is not None else 0.02 / config.nfe
    opt = torch.optim.Adam(trained, lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config.iters, 1), eta_min=lr * 0.05)
    def check(solver: LearnedSolver) -> float:
        return solver_rmse(denoiser, solver, data.x_val, data.ref_val, data.extra_val, data.w_val)

    best = (check(start), start, 0)
    first = 0
    key = _data_key(denoiser, data)
    if state_path is not None and Path(state_path).exists():
        state = read_saved(state_path, "the fit's saved state", STATE_FIX)
        if (state.get("config") == _resumable(config) and state.get("start") == start.steps_key()
                and state.get("data") == key):
            _check_state(state, state_path, params, trained, opt, decay, config, start)
            with torch.no_grad():
                for t, v in zip(params.tensors(), state["params"]):
                    t.copy_(v)
            first = state["iteration"]
            if state["best"]["rmse"] < best[0]:
                best = (state["best"]["rmse"], LearnedSolver(**state["best"]["solver"]).validate(),
                        state["best"]["iteration"])
            if log:
                log(f"resumed at iteration {first} (best validation {best[0]:.4g})")
    def save_state(iteration: int) -> None:  # the run after ``iteration`` steps: resumed from there
        state = {"config": _resumable(config), "start": start.steps_key(), "data": key, "iteration": iteration,
                 "params": [t.detach().clone() for t in params.tensors()],
                 "opt": opt.state_dict(), "decay": decay.state_dict(),
                 "best": {"rmse": best[0], "iteration": best[2], "solver": _plain(best[1])}}
        write_torch(state_path, with_digest(state))

    g = torch.Generator().manual_seed(config.seed)
    m = data.x_train.shape[0]
    for it in range(first, config.iters):
        if deadline is not None and time.monotonic() > deadline:
            if log:
                log(f"time budget spent at iteration {it}")
            if stopped is not None:
                stopped.update({"iteration": it, "iters": config.iters})
            if state_path is not None and it > first and it % config.check_every != 0:  # else saved at its check
                save_state(it)
            break
        g.manual_seed(config.seed * 1_000_003 + it)
        idx = torch.randperm(m, generator=g)[:config.batch] if config.batch and config.batch < m else slice(None)
        loss = objective(denoiser, params, data.x_train[idx], data.ref_train[idx], _take(data.extra_train, idx),
                         None if data.w_train is None else data.w_train[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, max_norm=1.0)  # one bad minibatch must not throw the nodes away
        opt.step()
        decay.step()
        if progress:
            progress(1)
        if (it + 1) % config.check_every == 0 or it + 1 == config.iters:
            current = params.solver()
            val = check(current)
            if math.isfinite(val) and val < best[0]:
                best = (val, current, it + 1)
            if log:
                log(f"iteration {it + 1}: training MSE {float(loss.detach()):.4g}, validation RMSE {val:.4g} "
                    f"(best {best[0]:.4g} at {best[2]})")
            if state_path is not None:
                save_state(it + 1)
    return best[1], best[0], best[2]


# what the optimisation trains and checks on; a state saved before the pool's rare starts joined (format 1, no key)
# holds a best iterate measured on other validation starts and is not resumed; format 3 records a content digest;
# format 4 records the whole start (its steps_key: nodes, weights, the σ the model is told), where 3 recorded its σ
# nodes alone, so euler's saved run was resumed by dpmpp_2m on the same schedule (a state of 3 is not resumed)
STATE_FORMAT = 4

STATE_FIX = "delete it (or fit again with --restart) to start this optimisation afresh"


def start_state_path(state_path: str | Path, start: int) -> Path:
    """Where :func:`fit` saves the optimisation from its ``start``-th best pair (``start`` >= 2; the first's is
    ``state_path`` itself): ``state-nfe8.start2.pt`` beside ``state-nfe8.pt``."""
    path = Path(state_path)
    return path.with_name(f"{path.stem}.start{start}{path.suffix}")


def state_paths(state_path: str | Path) -> list[Path]:
    """Every saved state of the fit whose first optimisation saves to ``state_path`` (that of each start) that
    exists: what fitting it afresh must delete."""
    path = Path(state_path)
    pattern = re.compile(re.escape(path.stem) + r"\.start[0-9]+" + re.escape(path.suffix))
    found = [path] if path.exists() else []
    if path.parent.is_dir():
        found += sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    return found


def _check_state(state: dict, path, params: Params, trained: list, opt, decay, config: FitConfig,
                 start: LearnedSolver) -> None:
    """A saved state of this optimisation (its options, start and data match), checked before anything in it is used
    and loaded into ``opt`` and ``decay``: every field this code writes, of the types, shapes and dtypes it writes
    (finite tensors, the iteration within [0, iters], the best iterate a solver of the start's steps), and its
    digest (:func:`content_digest`) that of its content. Anything else raises InvalidInput naming the file and the
    fix; nothing read is guessed around."""
    def bad(what: str) -> InvalidInput:
        return InvalidInput(f"the fit's saved state {path} {what}: it is not what the fit wrote; {STATE_FIX}")

    fields = {"config", "start", "data", "iteration", "params", "opt", "decay", "best", "digest"}
    if set(state) != fields:
        missing, extra = sorted(fields - set(state)), sorted(set(state) - fields, key=repr)
        raise bad("lacks " + ", ".join(missing) if missing else "holds unknown fields " + ", ".join(map(repr, extra)))
    it = state["iteration"]
    if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= config.iters:
        raise bad(f"records iteration {it!r}, outside [0, {config.iters}] (the run's --iters)")
    saved = state["params"]
    if not isinstance(saved, list) or len(saved) != len(params.tensors()):
        raise bad(f"holds params of {type(saved).__name__}, not the {len(params.tensors())} tensors of the solver's "
                  "nodes, weights and model σ shifts")
    for name, t, v in zip(("theta", "b", "c", "shift"), params.tensors(), saved):
        if not isinstance(v, torch.Tensor) or v.shape != t.shape or v.dtype != t.dtype:
            found = (f"{v.dtype} {list(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__)
            raise bad(f"holds {name} as {found}, where this fit's is {t.dtype} {list(t.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise bad(f"holds NaN or infinite values in {name}")
    best = state["best"]
    ok = isinstance(best, dict) and set(best) == {"rmse", "iteration", "solver"}
    rmse, kept = (best.get("rmse"), best.get("iteration")) if ok else (None, None)
    ok = (ok and isinstance(rmse, float) and isinstance(kept, int) and not isinstance(kept, bool)
          and 0 <= kept <= it and (math.isfinite(rmse) and rmse >= 0 or kept == 0))  # the start's may be inf
    try:
        ok = ok and isinstance(best["solver"], dict) and LearnedSolver(**best["solver"]).validate().steps == start.steps
    except (InvalidInput, TypeError):
        ok = False
    if not ok:
        raise bad("holds no best iterate (its validation RMSE, a finite number; its iteration, within [0, "
                  f"{it}]; a solver of {start.steps} steps)")
    moments = state["opt"].get("state") if isinstance(state["opt"], dict) else None
    if not (isinstance(moments, dict) and set(moments) <= set(range(len(trained))) and all(
            isinstance(m, dict) and all(isinstance(v, torch.Tensor) and bool(torch.isfinite(v).all())
                                        and (k == "step" or v.shape == trained[i].shape) for k, v in m.items())
            for i, m in moments.items())):
        raise bad("holds an optimiser state other than Adam's finite moments of this fit's parameters")
    if not (isinstance(state["decay"], dict) and state["decay"].get("last_epoch") == it):
        raise bad(f"holds a learning-rate schedule that is not at iteration {it}")
    if not digest_matches(state):
        raise bad("does not match the digest the fit recorded in it (it was changed after it was written)")
    try:
        opt.load_state_dict(state["opt"])
        decay.load_state_dict(state["decay"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise bad(f"holds an optimiser state this optimisation cannot load ({type(err).__name__}: {err})") from None


def _data_key(denoiser, data: Calibration) -> str:
    """What a saved optimisation state was computed on besides its options: the model (its fingerprint) and the
    training and validation starts with their endpoints and weights. A state of another model or other data is never
    resumed."""
    import hashlib

    from .identity import fingerprint

    h = hashlib.sha256(repr(fingerprint(denoiser)).encode())
    parts = [data.x_train, data.ref_train, data.x_val, data.ref_val, data.w_train, data.w_val,
             *[data.extra_train[k] for k in sorted(data.extra_train)], *[data.extra_val[k] for k in sorted(data.extra_val)]]
    for t in parts:
        if t is not None:
            h.update(repr((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _resumable(config: FitConfig) -> dict:
    """What a saved state must share with a run to be resumed by it (everything but the time budget and stage 5's
    check, which come after the optimisation the state is of)."""
    return {**{k: v for k, v in dataclasses.asdict(config).items()
               if k not in ("time_budget", "check", "check_solved")},
            "state_format": STATE_FORMAT}


def _plain(solver: LearnedSolver) -> dict:
    return {"sigmas": solver.sigmas, "eps_weights": solver.eps_weights, "denoised_weights": solver.denoised_weights,
            "model_sigmas": solver.model_sigmas}


def _steps_of(chosen: LearnedSolver, sigma_max: float) -> LearnedSolver:
    """A new solver running ``chosen``'s steps from ``sigma_max`` to 0, without its record (meta, model)."""
    out = LearnedSolver(list(chosen.sigmas), chosen.eps_weights, chosen.denoised_weights,
                        model_sigmas=chosen.model_sigmas)
    out.sigmas[0], out.sigmas[-1] = sigma_max, 0.0
    return out


def validate(denoiser, start: Candidate, best: LearnedSolver, data: Calibration, pool: Pool | None = None,
             within: torch.Tensor | None = None, own: Calibration | None = None, *,
             fitted: tuple[Calibration, Calibration] | None = None, fitted_from: Candidate | None = None,
             check: Pool | None = None, log=None) -> LearnedSolver:
    """Stage 4: the fitted solver where it beats the starting pair on the validation starts — a smaller mean
    squared error over them, and per-start RMSEs smaller by more than two standard errors of their differences
    (a few lucky starts do not count; both weighted by ``data.w_val`` where the pool's rare starts joined them:
    :func:`with_hard_starts`) — and, with a ``pool``, a smaller mean squared error on the calibration's own
    validation starts (``own``; None: ``data``) and the pool's ``within`` (None: all) together (:func:`compare`,
    which takes the starts where these two solvers disagree most); else the pair itself. Either way the result's
    (weighted) validation error is at most the pair's. ``data``: the validation starts from the pair's σ_max;
    ``fitted``: (``data``, ``own``) from the σ the fit starts at where that is another (a fit from another of the
    best pairs, ``fitted_from``: the same starts, so the per-start differences pair up).

    Stage 5, with a ``check`` pool (:func:`make_pool` with ``check=True``): a fit stage 4 keeps is held against the
    pair once more on those starts, which neither trained it nor picked its iterate (:func:`check_fresh`, at least
    as many of them solved in full as ``own`` has validation starts): kept only
    where its mean squared error there is the smaller, else the pair (``meta["check"]`` records the difference;
    the validation figures stay stage 4's)."""
    best_data, best_own = fitted if fitted is not None else (data, own)
    mine = per_start_mse(denoiser, best, best_data.x_val, best_data.ref_val, best_data.extra_val)
    theirs = per_start_mse(denoiser, start.solver, data.x_val, data.ref_val, data.extra_val)
    # per-start RMSE differences: on data with several modes the squared errors are dominated by the few starts
    # a solver sends to another mode, and their spread would hide a gain on every other start
    gain = theirs.sqrt() - mine.sqrt()
    n = gain.shape[0]
    w = torch.ones_like(gain) if data.w_val is None else data.w_val * (n / float(data.w_val.sum()))  # mean 1
    mean_gain = float((w * gain).mean())
    margin = 2.0 * float((w * (gain - mean_gain)).pow(2).sum().div(n - 1).sqrt()) / math.sqrt(n) if n > 1 else math.inf
    mine_mse, theirs_mse = float(_mean(mine, data.w_val)), float(_mean(theirs, data.w_val))
    improved = best is not start.solver and mine_mse < theirs_mse and mean_gain > margin
    pooled = None
    known = {k.sigma_max: (k.x_val, k.ref_val, k.extra_val)
             for k in (best_data if best_own is None else best_own, data if own is None else own)}
    if improved and pool is not None and len(pool):
        pooled = float(compare(denoiser, [start.solver, best], known, pool, within=within)[1])
        improved = pooled < 0
    out = _steps_of(best, best_data.sigma_max) if improved else _steps_of(start.solver, data.sigma_max)
    checked = None
    if improved and check is not None and len(check):
        # in full at least as many starts as the calibration validates on
        t0 = time.monotonic()
        n_val = (data if own is None else own).x_val.shape[0]
        diff, solved = check_fresh(denoiser, [start.solver, out], check, n_val)
        checked = {"starts": len(check), "solved": solved, "mean_mse": -diff, "kept": diff < 0}
        if log:
            log(f"stage 5: the fit's mean squared error minus the pair's on {len(check)} other starts ({solved} "
                f"solved): {diff:+.3g}; {'kept the fit' if diff < 0 else 'handed back the pair'} "
                f"({time.monotonic() - t0:.0f} s)")
        if not checked["kept"]:
            improved, out = False, _steps_of(start.solver, data.sigma_max)
    out.meta = {"validation_rmse": math.sqrt(mine_mse if improved else theirs_mse),
                "start": {"sampler": start.sampler, "options": start.options, "schedule": start.schedule,
                          "training_rmse": start.error, "validation_rmse": math.sqrt(theirs_mse),
                          "solver": _plain(start.solver), "pooled_vs_training_leader": start.pooled},
                "kept": "fit" if improved else "start",
                "check": checked,
                "fitted_from": None if not improved or fitted_from is None or fitted_from is start else {
                    "sampler": fitted_from.sampler, "options": fitted_from.options, "schedule": fitted_from.schedule,
                    "from_sigma": best_data.sigma_max},
                "validation_gain": {"mean_item_rmse": mean_gain, "two_standard_errors": margin,
                                    "mean_mse": theirs_mse - mine_mse,
                                    "pooled_mean_mse": None if pooled is None else -pooled}}
    return out.validate()


def check_fresh(denoiser, solvers: list[LearnedSolver], check: Pool, at_least: int = 1) -> tuple[float, int]:
    """Stage 5's comparison (:func:`compare`) of ``solvers[1]`` with ``solvers[0]`` on the ``check`` starts alone:
    its first ⌈``check.solved_share`` · n⌉ starts (``at_least`` of them: a mean over a handful is noise), solved in
    full, are the known starts (the mean difference where the two nearly agree is taken from them), the rest the
    pool (solved where the two disagree most); no start that trained a fit or picked its iterate enters the
    estimate. Returns (the mean squared error of ``solvers[1]`` minus ``solvers[0]``'s, the exact endpoints
    solved)."""
    n = len(check)
    k = min(n - 1, max(1, at_least, math.ceil(check.solved_share * n)))
    idx, rest = torch.arange(k), torch.arange(k, n)
    tops: list[float] = []  # the σ the solvers start at, each once (a fit's may be its pair's up to rounding)
    for s in solvers:
        if not any(math.isclose(s.sigmas[0], t, rel_tol=1e-9) for t in tops):
            tops.append(s.sigmas[0])
    known = {t: (check.x(t)[idx], check.references(idx, t), _take(check.extra, idx)) for t in tops}
    others = Pool(check.noise[k:], _take(check.extra, rest), check.reference_fn, check.solved_share)
    diff = float(compare(denoiser, solvers, known, others)[1])
    return diff, check.solved_count() + others.solved_count()


def recheck(denoiser, solver: LearnedSolver, calibration: torch.Tensor, reference_fn, check: int = FitConfig.check,
            check_solved: float = FitConfig.check_solved, extra_args: dict | None = None) -> LearnedSolver:
    """Stage 5 on a fit made before it: ``solver`` as :func:`fit` makes it now from the same ``calibration`` (unit
    noise), ``reference_fn`` and ``extra_args`` — its stages 1-4 are the saved solver's, stage 5 checks it on the
    same starts :func:`fit` would draw. A solver that kept its pair, or was checked already, is returned as it is.
    A fit from another of the best pairs, at another σ than the best pair's, that stage 5 hands back is refused: its
    record of the pool's starts was of that σ, not the best pair's (fit it again)."""
    meta = solver.meta
    if meta.get("kept") != "fit" or meta.get("check") is not None:
        return solver
    config = FitConfig(**{**meta["config"], "check": check, "check_solved": check_solved}).validate()
    start = LearnedSolver(**meta["start"]["solver"]).validate()
    fresh = make_pool(calibration, dict(extra_args or {}), config, reference_fn, check=True)
    diff, solved = check_fresh(denoiser, [start, solver], fresh, meta["validation_starts"])
    record = {"starts": len(fresh), "solved": solved, "mean_mse": -diff, "kept": diff < 0}
    if record["kept"]:
        out = _steps_of(solver, solver.sigmas[0])
        changes = {"check": record}
    else:
        other = meta.get("fitted_from")
        if other is not None and not math.isclose(other["from_sigma"], start.sigmas[0], rel_tol=1e-9):
            raise InvalidInput(f"stage 5 hands back the best pair for this fit from {other}: its record of the pool's "
                               "starts is of that pair's σ; fit it again to record the best pair's")
        out = _steps_of(start, start.sigmas[0])
        changes = {"check": record, "kept": "start", "validation_rmse": meta["start"]["validation_rmse"],
                   "iteration_kept": 0, "fitted_from": None}
    out.model = dict(solver.model)
    out.meta = {}
    for key, value in meta.items():  # fit()'s order, "check" after "kept"
        out.meta[key] = changes.get(key, value)
        if key == "kept":
            out.meta["check"] = record
    out.meta["config"] = dataclasses.asdict(config)
    return out.validate()


def make_pool(calibration: torch.Tensor, extra: dict, config: FitConfig, reference_fn, check: bool = False) -> Pool:
    """``config.pool`` × the calibration batch of starts (unit noise) that are not calibration starts: each drawn
    from a seed derived from the calibration batch's bytes and ``config.seed``, so the pool depends on nothing
    else; start k has the per-item arguments of calibration start k mod B. ``check``: stage 5's starts instead,
    ``config.check`` × the batch from the seeds after the pool's (``config.check_solved`` of them to be solved)."""
    import hashlib

    from ..core.seeds import seeded_randn

    b = calibration.shape[0]
    digest = hashlib.sha256(calibration.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()).digest()
    base = int.from_bytes(digest[:4], "little") * 1_000_003 + config.seed
    n = (config.check if check else config.pool) * b
    if check:
        base += config.pool * b
    noise = seeded_randn((n, *calibration.shape[1:]), [base + k for k in range(n)], dtype=calibration.dtype)
    rows = torch.arange(n) % b
    return Pool(noise.to(calibration.device), _take(extra, rows), reference_fn,
                config.check_solved if check else config.pool_solved)


def _takes_sigma(fn) -> bool:
    """Whether ``fn`` can be called as fn(x, extra, sigma)."""
    import inspect

    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): let the call say
        return True
    return True


def reference_endpoints(denoiser, x: torch.Tensor, sigma_max: float, rtol: float = 1e-7) -> torch.Tensor:
    """The exact PF-ODE endpoints (σ = 0) from ``x`` at ``sigma_max``: :func:`samplers.problems.pf_ode_solution`,
    which refuses a model returning NaN or infinite values (:class:`~samplers.core.errors.NonFiniteError`, naming the
    σ). A solve whose step size underflows on finite values (torchdiffeq's AssertionError "underflow in dt") raises
    :class:`~samplers.core.errors.NonFiniteError` too."""
    from ..core.errors import NonFiniteError
    from ..problems import pf_ode_solution

    try:
        return pf_ode_solution(denoiser, x, sigma_max, 0.0, rtol=rtol, atol=rtol)
    except AssertionError as err:
        if "underflow in dt" not in str(err):
            raise
        raise NonFiniteError(f"the exact endpoints of {x.shape[0]} start(s) from σ = {sigma_max:g} cannot be solved: "
                             "the adaptive solve's step size underflowed (torchdiffeq: underflow in dt), as it does "
                             "where the solve diverges: check the model on these starts, or "
                             f"loosen the solve's tolerance (rtol = atol = {rtol:g}) if it diverged") from None


def _check_reference(reference, x: torch.Tensor, what: str = "reference") -> None:
    """The exact endpoints of the calibration starts ``x``: a finite tensor of their shape."""
    if not isinstance(reference, torch.Tensor) or not reference.is_floating_point():
        got = f"a {reference.dtype} tensor" if isinstance(reference, torch.Tensor) else type(reference).__name__
        raise InvalidInput(f"{what} must be a floating-point tensor of the calibration starts' exact endpoints, "
                           f"got {got}")
    if reference.shape != x.shape:
        raise InvalidInput(f"{what} must be shaped like the calibration batch {tuple(x.shape)}, got "
                           f"{tuple(reference.shape)}")
    if not bool(torch.isfinite(reference).all()):
        raise InvalidInput(f"{what} holds NaN or infinite values: every fit and the starting pair would score NaN "
                           "against it; pass the exact PF-ODE endpoints of calibration · sigma_max (or leave "
                           "reference out: fit solves them)")


def _check_record_prediction(record: dict, denoiser) -> None:
    """Refuse a ``model`` record whose prediction type is not the one the denoiser says it has: the solver would
    record it, and then refuse its own model (found after the whole fit)."""
    from . import identity

    said, given = identity.prediction(denoiser), record.get("prediction")
    if said is not None and given is not None and said != given:
        raise InvalidInput(f"model records prediction {given!r}, and the denoiser says its prediction is {said!r}: "
                           "the fitted solver would refuse the model it was fitted to; leave prediction out of model "
                           f"(it is read off the denoiser) or pass {said!r}")


def fit(denoiser, config: FitConfig | int, calibration: torch.Tensor, sigma_min: float, sigma_max: float, *,
        reference: torch.Tensor | None = None, reference_fn=None, native=None, model: dict | None = None,
        extra_args: dict | None = None, state_path: str | Path | None = None, log=None,
        progress=None) -> LearnedSolver:
    """Fit an ``config.nfe``-call solver to ``denoiser`` from unit noise ``calibration`` [B, ...].

    ``sigma_min`` / ``sigma_max``: real numbers, 0 < sigma_min < sigma_max < inf (a bool or a string is refused).
    The starting latents are ``calibration · sigma_max`` (finite); ``reference``: their exact endpoints (default:
    :func:`reference_endpoints`); ``reference_fn(x, extra, sigma)``: the exact endpoints of other starts ``x`` at
    ``sigma`` with per-item arguments ``extra`` — the pool's, and the calibration's from another σ (default:
    :func:`reference_endpoints` at its rtol = 1e-7; pass the solve that gave ``reference`` where it was another,
    e.g. a looser one for a float32 network). The pool (``config.pool`` × the batch) is unit noise drawn from seeds
    derived from ``calibration`` and ``config.seed``, each start with the per-item arguments of a calibration start
    (in turn). The last ``config.validation`` share of the batch is the validation part.
    ``native``: the model's native schedule (the schedules that need it join the candidates); where it is defined
    up to σ = ∞ (flow matching), candidates on schedules that start higher than ``sigma_max`` — at a finite σ of
    their own (Align Your Steps' SVD table: 700) or at σ = ∞ (the flow schedule; the start is then the unit noise
    itself) — start there, and so may the fit.
    ``extra_args``: per-item keyword arguments of the denoiser ({name: tensor [B, ...]}, e.g. each start's
    conditioning), sliced with the starts. ``model``: what the solver records about the model (``fingerprint``,
    ``name``, ``prediction``, each optional; an unknown key, a bad value or a prediction other than the one the
    denoiser says is refused before any model call); what
    it leaves out, the denoiser supplies where it says: the fingerprint (:func:`samplers.fitted.identity.fingerprint`)
    and the prediction type (:func:`samplers.fitted.identity.prediction`). The result's ``meta`` holds the validation
    RMSE of the fit and of the starting pair; it is never above the starting pair's.
    """
    config = (FitConfig(config) if isinstance(config, int) and not isinstance(config, bool) else config)
    if not isinstance(config, FitConfig):
        raise InvalidOption(f"config must be a FitConfig or an NFE, got {config!r}")
    config.validate()
    # a bool or a string is not read as a σ (True was 1.0, and the fit failed after its model calls)
    what = " (the fit's σ range: 0 < sigma_min < sigma_max < inf)"
    sigma_min = real("sigma_min", sigma_min, lo=0.0, lo_open=True, what=what)
    sigma_max = real("sigma_max", sigma_max, lo=0.0, lo_open=True, what=what)
    if not sigma_min < sigma_max:
        raise InvalidInput(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not isinstance(calibration, torch.Tensor) or calibration.ndim < 2 or not calibration.is_floating_point():
        got = (f"a {calibration.dtype} tensor of shape {tuple(calibration.shape)}" if isinstance(calibration, torch.Tensor)
               else type(calibration).__name__)
        raise InvalidInput(f"calibration must be a floating-point batch of unit noise [B, ...], got {got}; pass "
                           "torch.randn(B, *latent_shape) (or samplers.core.seeds.seeded_randn)")
    if not bool(torch.isfinite(calibration).all()):
        raise InvalidInput("calibration holds NaN or infinite values; it must be unit noise (e.g. "
                           "samplers.core.seeds.seeded_randn)")
    record = check_model_record({} if model is None else model)  # refused before any model call, not at the end
    _check_record_prediction(record, denoiser)
    n_val = validation_starts(calibration.shape[0], config.validation)
    extra = dict(extra_args or {})
    if any(not isinstance(v, torch.Tensor) or v.shape[:1] != calibration.shape[:1] for v in extra.values()):
        bad = next(k for k, v in extra.items() if not isinstance(v, torch.Tensor) or v.shape[:1] != calibration.shape[:1])
        got = (f"shape {tuple(extra[bad].shape)}" if isinstance(extra[bad], torch.Tensor) else type(extra[bad]).__name__)
        raise InvalidInput(f"extra_args must map names to tensors with one row per calibration start "
                           f"({calibration.shape[0]}), got {bad!r}: {got}; repeat or index it to one row per start")
    deadline = None if config.time_budget is None else time.monotonic() + config.time_budget
    if reference_fn is None:
        def reference_fn(xs, ex, sigma):
            return reference_endpoints(functools.partial(denoiser, **ex), xs, sigma)
    elif not _takes_sigma(reference_fn):
        raise InvalidOption("reference_fn must take (x, extra, sigma): the exact endpoints of starts x at sigma "
                            "with per-item arguments extra; a function of (x, extra) alone cannot solve from "
                            "another σ (add the third argument)")
    x = calibration * sigma_max
    if reference is not None:  # the caller's: checked before any model call
        _check_reference(reference, x)
    # read through wrappers (samplers.core.wrapped), as a run's own check reads it: the fit's guidance wrapper around a
    # diffusers ε U-Net on a zero-terminal-SNR table (ItemCFG) said nothing itself, so the fit offered pairs from
    # σ = inf and its first solve from there refused ("cannot be evaluated at sigma = inf"), after the model was built
    higher = (native is not None and math.isinf(getattr(native, "sigma_max", 0.0))
              and wrapped.supports_infinite_sigma(denoiser) is not False)
    # the starting pairs need no model call (each read off a probe): a config that leaves none is refused here, not
    # after the exact endpoints' solve (128 model calls on a mixture, hundreds per start on a U-Net)
    found = candidates(config.nfe, sigma_min, sigma_max, native, config, higher=higher)
    if not found:
        raise InvalidInput(no_pair(config.nfe, sigma_min, sigma_max, native, config, higher))
    if reference is None:
        reference = reference_fn(x, extra, sigma_max)
        _check_reference(reference, x, "reference_fn's endpoints")
    starts = Starts(calibration, n_val, extra, sigma_min, sigma_max, reference_fn, higher)
    starts.made[sigma_max] = Calibration(x[:-n_val], reference[:-n_val], x[-n_val:], reference[-n_val:], sigma_min,
                                         sigma_max, _take(extra, slice(0, -n_val)), _take(extra, slice(-n_val, None)))
    pool = make_pool(calibration, extra, config, reference_fn) if config.pool else None
    ranked = starting_point(denoiser, starts, config, native, log, pool, found)
    start = ranked[0]
    tried = [c for c in ranked[:config.starts] if math.isfinite(c.error)] or [start]
    checked = None
    if pool is not None and pool.strata is not None:
        # the pool's last validation share checks, its first part trains (with the calibration's own two parts)
        n_pool_val = int(round(len(pool) * config.validation))
        checked = torch.arange(len(pool) - n_pool_val, len(pool))
    runs = []  # (candidate, calibration from its σ, joined with the pool's hard starts, best iterate, its iteration)
    spread = {"train": pool.strata.known} if checked is not None else None  # the same starts from every σ
    cut = []  # the optimisations the time budget stopped: {"start", "starts", "iteration", "iters"}
    for i, cand in enumerate(tried):
        data = starts.at(cand.solver.sigmas[0])
        if log:
            log(("start: " if i == 0 else f"start {i + 1} of {len(tried)}: ") + cand.label
                + (f" from σ = {data.sigma_max:g}" if data.sigma_max != sigma_max else "")
                + f", training RMSE {cand.error:.4g}")
        trained = data
        if checked is not None:
            trained = with_hard_starts(denoiser, data, starts, pool, pool.strata, checked.shape[0], spread=spread)
            if log and i == 0:
                log(f"training on {trained.x_train.shape[0]} starts, checking on {trained.x_val.shape[0]}: the "
                    f"calibration's and the pool's {trained.x_train.shape[0] - data.x_train.shape[0]} + "
                    f"{trained.x_val.shape[0] - data.x_val.shape[0]} where the best pairs disagree most (weighted)")
        path = state_path if i == 0 or state_path is None else start_state_path(state_path, i + 1)
        stop: dict = {}
        best, _, kept = optimise(denoiser, cand.solver, trained, config, deadline=deadline, state_path=path,
                                 log=log, progress=progress, stopped=stop)
        if stop:
            cut.append({"start": i + 1, "starts": len(tried), **stop})
        runs.append((cand, data, trained, best, kept))
    pair_data = runs[0][1:3]  # the best pair's validation starts: its own, and joined with the pool's
    runs = runs[:1] + [r for r in runs[1:] if r[4] > 0]  # another pair unchanged is not a fit (stage 1 ranked it)
    if len(runs) > 1:
        # the fits side by side on the calibration's validation starts and the pool's validation share; stage 4
        # holds each, in that order, against the best pair, and the first it keeps is the result
        known = {r[1].sigma_max: (r[1].x_val, r[1].ref_val, r[1].extra_val) for r in runs}
        pooled = [d if math.isfinite(d) else math.inf
                  for d in compare(denoiser, [r[3] for r in runs], known, pool, within=checked).tolist()]
        order = sorted(range(len(runs)), key=lambda i: (pooled[i], i))
        runs = [runs[i] for i in order]
        if log:
            log("fits from the best pairs on the validation starts: " + "; ".join(
                f"{r[0].label} {pooled[i]:+.3g}" for r, i in zip(runs, order))
                + " (mean squared error minus the first pair's fit)")
    fresh = make_pool(calibration, extra, config, reference_fn, check=True) if config.check else None
    for cand, data, trained, best, kept in runs:
        solver = validate(denoiser, start, best, pair_data[1], pool, checked, own=pair_data[0],
                          fitted=(trained, data), fitted_from=cand, check=fresh, log=log)
        if solver.meta["kept"] == "fit" or solver.meta["check"] is not None:
            break  # the first fit stage 4 keeps is the one stage 5 checks: its starts pick no fit among several
    if solver.meta["kept"] != "fit":
        data, trained = pair_data
    from . import identity

    solver.model = dict(record)
    if "fingerprint" not in record:  # what the caller left out and the denoiser says (None: a model without one)
        solver.model["fingerprint"] = identity.fingerprint(denoiser)
    said = identity.prediction(denoiser)
    if "prediction" not in record and said is not None:
        solver.model["prediction"] = said
    solver.meta.update({"nfe": config.nfe, "iteration_kept": kept if solver.meta["kept"] == "fit" else 0,
                        "calibration": int(calibration.shape[0]),
                        "validation_starts": n_val, "config": dataclasses.asdict(config),
                        "pool": None if pool is None else {
                            "starts": len(pool), "solved": pool.solved_count(),
                            "trained_on": trained.x_train.shape[0] - data.x_train.shape[0],
                            "checked_on": trained.x_val.shape[0] - data.x_val.shape[0]},
                        "fitted_from_pairs": len(tried),
                        "runner_up": [{"sampler": c.sampler, "options": c.options, "schedule": c.schedule,
                                       "training_rmse": c.error} for c in ranked[1:4]]})
    if cut:  # a fit the budget cut short (a fit run to its end records none): fit again to continue it
        solver.meta["stopped_at_budget"] = cut
    return solver.validate()

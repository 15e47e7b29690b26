"""A multistep solver whose σ nodes and per-step weights are fitted to one model and NFE budget.

In the spirit of Bespoke Non-Stationary solvers (Shaul et al. 2024, arXiv:2403.01329), LD3 (Tong et al. 2024,
arXiv:2405.15506) and S4S (Frankel et al. 2025, arXiv:2502.17423): the sampler is a linear multistep method in
the canonical space whose coefficients are not fixed by a Taylor argument but fitted, together with the
schedule, to minimise the distance to the exact PF-ODE endpoint on a calibration batch of noise. With
r_i = σ_{i+1}/σ_i, ε̂_j = (x_j − D_j)/σ_j and D_j the denoised estimate of step j, step i is

    x_{i+1} = r_i·x_i + (1 − r_i)·D_i                               (DDIM / Euler: exact for D constant)
            + (σ_{i+1} − σ_i)·Σ_{j<i} b_ij·(ε̂_j − ε̂_i)               (Adams–Bashforth-type corrections)
            + (1 − r_i)·Σ_{j<i} c_ij·(D_j − D_i)                     (DPM-Solver++-type corrections)

Every correction vanishes when D is constant along the path, so the method is exact there (first-order
consistent) whatever the weights. The family contains known samplers exactly, which are the starting points
of a fit (``init``): all weights 0 is ``euler`` (= ``ddim``); b_{i,i−1} = −1 is ``gradient_estimation``; the
constant-step Adams–Bashforth weights on ε̂ are ``ipndm``; c_{i,i−1} = −1/(2·h_{i−1}/h_i) is ``dpmpp_2m``.

    solver = samplers.fitted.solver.fit(denoiser, nfe=10, calibration=noise, sigma_min=0.002, sigma_max=80.0)
    x0 = samplers.sample("learned_multistep", denoiser, noise2 * 80, solver.sigmas, solver=solver)
    solver.save("gm_10.json"); solver = samplers.fitted.solver.LearnedSolver.load("gm_10.json")

The fit runs on the host with autograd through the denoiser (it must be differentiable, as a torch network
is); sampling is the ordinary registry loop with Python-float weights (no host reads inside it).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import schedules
from ..ode.adams import ADAMS_BASHFORTH  # iPNDM's constant-step weights
from ..core.files import write_json
from ..core.registry import register
from ..core.run import progress, report

FORMAT = "samplers.learned_solver/1"
INITS = ("euler", "gradient_estimation", "ipndm", "dpmpp_2m")


@dataclass
class LearnedSolver:
    """σ nodes (n + 1 values, ending in 0) and the lower-triangular weights b, c of the update above."""

    sigmas: list[float]
    eps_weights: list[list[float]]  # b[i][j] for j < i: row i has i entries
    denoised_weights: list[list[float]]  # c[i][j] for j < i
    meta: dict = field(default_factory=dict)
    # the σ the model is told at each node (default: the node itself); fitted, it compensates the drift of
    # the numerical path from the true one, as the time-shift sampler does (Li et al. 2024, arXiv:2305.15583)
    model_sigmas: list[float] | None = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=torch.float64)

    def __array__(self, dtype=None, copy=None):  # usable as a schedule: torch.as_tensor(solver)
        return np.asarray(self.sigmas, dtype=dtype or np.float64)

    def validate(self) -> "LearnedSolver":
        s, n = self.sigmas, len(self.sigmas) - 1
        if n < 1 or s[-1] != 0 or any(not b < a for a, b in zip(s, s[1:])) or not all(map(math.isfinite, s)):
            raise ValueError(f"a learned solver's sigmas must be finite, strictly decreasing and end in 0, got {s}")
        for name, w in (("eps_weights", self.eps_weights), ("denoised_weights", self.denoised_weights)):
            if len(w) != n or any(len(row) != i for i, row in enumerate(w)):
                raise ValueError(f"{name} must have {n} rows, row i holding i weights (one per earlier step)")
            if not all(math.isfinite(v) for row in w for v in row):
                raise ValueError(f"{name} holds a non-finite weight")
        m = self.model_sigmas
        if m is not None and (len(m) != n or not all(0 < v < math.inf for v in m)):
            raise ValueError(f"model_sigmas must hold {n} positive finite values (one per step), got {m}")
        return self

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a temporary file in the same folder, then a rename)."""
        return write_json(path, {"format": FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "LearnedSolver":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a valid learned-solver file ({e}); re-create it with "
                             "samplers.fitted.solver.fit(...).save(path)") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"{path} is not a learned solver written by LearnedSolver.save")
        try:
            return cls(**data).validate()
        except TypeError as e:
            raise ValueError(f"{path}: unexpected fields ({e})") from None

    @classmethod
    def from_sampler(cls, name: str, sigmas) -> "LearnedSolver":
        """The weights of a known sampler on ``sigmas`` (see the module docstring): the fit's starting point."""
        s = [float(v) for v in sigmas]
        n = len(s) - 1
        b = [[0.0] * i for i in range(n)]
        c = [[0.0] * i for i in range(n)]
        if name == "gradient_estimation":
            for i in range(1, n):
                b[i][i - 1] = -1.0  # 2ε̂_i − ε̂_{i−1} = ε̂_i − (ε̂_{i−1} − ε̂_i)
        elif name == "ipndm":
            for i in range(n):
                ab = ADAMS_BASHFORTH[min(i + 1, 4)]
                for k in range(1, len(ab)):
                    b[i][i - k] = ab[k]  # Σ_k a_k ε̂_{i−k} = ε̂_i + Σ_{k≥1} a_k (ε̂_{i−k} − ε̂_i), as Σ a_k = 1
        elif name == "dpmpp_2m":
            for i in range(1, n):
                if s[i + 1] > 0:  # the last step to σ = 0 is the plain denoise
                    h = math.log(s[i] / s[i + 1])
                    h_last = math.log(s[i - 1] / s[i])
                    c[i][i - 1] = -h / (2 * h_last)
        elif name != "euler":
            raise ValueError(f"init must be one of {INITS}, got {name!r}")
        return cls(s, b, c, {"init": name}).validate()


@register("learned_multistep", kind="ode", order=1, nfe_per_step=1,
          aliases=("learned", "bespoke_multistep"),
          ref="fitted linear multistep in the spirit of BNS (arXiv:2403.01329), LD3 (arXiv:2405.15506), "
              "S4S (arXiv:2502.17423); samplers.fitted.solver",
          final_step="the same update with r = 0: x = D_n + Σ c·(D_j − D_n) − σ_n·Σ b·(ε̂_j − ε̂_n)")
def learned_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, *, solver=None):
    """The fitted multistep update of :mod:`samplers.fitted.solver` with the weights of ``solver``.

    ``solver`` (a :class:`LearnedSolver`, or a path to its JSON) must have as many steps as ``sigmas``; the
    weights were fitted on ``solver.sigmas``, which is what to pass. Without ``solver`` every weight is 0 and
    this is Euler. The model is evaluated at ``solver.model_sigmas`` where the fit moved them. Order 1 is what the construction guarantees; the fitted accuracy is measured, not stated.
    """
    if solver is None:
        solver = LearnedSolver.from_sampler("euler", sigmas)
    elif isinstance(solver, (str, Path)):
        solver = LearnedSolver.load(solver)
    elif not isinstance(solver, LearnedSolver):
        raise TypeError(f"solver must be a samplers.fitted.solver.LearnedSolver or a path to one, got {type(solver).__name__}")
    if solver.steps != len(sigmas) - 1:
        raise ValueError(f"the learned solver has {solver.steps} steps but sigmas has {len(sigmas) - 1}; pass "
                         "solver.sigmas as the schedule (a solver is fitted from a finite sigma_max, so a "
                         "schedule from sigma = inf does not fit it)")
    b, c = solver.eps_weights, solver.denoised_weights
    model_sigmas = solver.model_sigmas or sigmas[:-1]
    eps_hist, den_hist = [], []
    for i in progress(sigmas, disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, model_sigmas[i])
        # weights are Python floats: leaving out the zero ones reads nothing from the device
        used = [j for j in range(i) if b[i][j] or c[i][j]]
        x = _update(x, denoised, sigma, sigma_next, eps_hist, den_hist, used, b[i], c[i])
        report(callback, x, i, sigma, sigma, denoised)
    return x


def _update(x, denoised, sigma, sigma_next, eps_hist: list, den_hist: list, used, b_row, c_row):
    """One step of the update in the module docstring, from earlier steps ``used``; appends this step's ε̂ and
    D to the histories. σ and the weights are Python floats (sampling) or tensors (the differentiable fit)."""
    eps = (x - denoised) / sigma
    r = sigma_next / sigma
    x_next = x * r + denoised * (1 - r)
    for j in used:
        x_next = x_next + (eps_hist[j] - eps) * ((sigma_next - sigma) * b_row[j]) \
            + (den_hist[j] - denoised) * ((1 - r) * c_row[j])
    eps_hist.append(eps)
    den_hist.append(denoised)
    return x_next


# ------------------------------------------------------------------------------------------------------
# fitting


def _rollout(denoiser, x: torch.Tensor, sigmas: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
             shift: torch.Tensor | None = None, stop: int | None = None) -> torch.Tensor:
    """The update above with tensor σ and weights (differentiable); b, c are [n, n], used below the diagonal;
    the model sees σ_i·exp(shift_i). ``stop``: return the state at node ``stop`` instead of the end."""
    n = sigmas.shape[0] - 1 if stop is None else stop
    eps_hist, den_hist = [], []
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_model = sigma if shift is None else sigma * shift[i].exp()
        denoised = denoiser(x, sigma_model.expand(x.shape[0]))
        x = _update(x, denoised, sigma, sigma_next, eps_hist, den_hist, range(i), b[i], c[i])
    return x


def _nodes(theta: torch.Tensor, log_max: float, log_min: float, pin: tuple[int, float] | None = None) -> torch.Tensor:
    """n positive σ nodes from σ_max down, then 0: gaps in log σ are a softmax share of the range; the last
    share is slack below the last node, so that node may stop above σ_min (its step to 0 is then longer).
    With ``pin = (k, log σ_c)`` node k is σ_c exactly: the first k gaps share the range above it, the rest below."""
    if pin is None:
        gaps = torch.softmax(theta, 0) * (log_max - log_min)
    else:
        k, log_c = pin
        gaps = torch.cat([torch.softmax(theta[:k], 0) * (log_max - log_c),
                          torch.softmax(theta[k:], 0) * (log_c - log_min)])
    logs = log_max - torch.cat([gaps.new_zeros(1), torch.cumsum(gaps, 0)])[:-1]
    return torch.cat([logs.exp(), gaps.new_zeros(1)])


def _theta_for(sigmas: list[float], log_max: float, log_min: float, pin: tuple[int, float] | None = None) -> torch.Tensor:
    """The θ of ``sigmas`` for :func:`_nodes`; with ``pin`` each segment's gaps keep their proportions, so the
    schedule is warped (piecewise in log σ) until node k lands on σ_c."""
    logs = np.log(np.asarray(sigmas[:-1], dtype=np.float64))
    gaps = np.concatenate([-np.diff(logs), [max(logs[-1] - log_min, 0.0)]])
    gaps = np.maximum(gaps, 1e-4 * (log_max - log_min))
    parts = [gaps] if pin is None else [gaps[:pin[0]], gaps[pin[0]:]]
    return torch.tensor(np.concatenate([np.log(g / g.sum()) for g in parts]), dtype=torch.float64)


@dataclass(eq=False)
class Checkpoint:
    """A state the fit asks the solver to reach on the way: node ``step`` is pinned at ``sigma`` and the state
    there, from ``noise · σ_max``, is compared with ``reference`` (the exact PF-ODE state at ``sigma``).

    On data with several modes the end point of a start near a boundary between them is decided well before
    σ = 0; a solver that is accurate there sends fewer starts to the wrong mode, and this error — unlike the
    endpoint's, which jumps when a start changes mode — is smooth in the weights. ``noise`` is typically the
    starts nearest a boundary (those with the least certain mode at ``sigma``). ``weight``: the share of the
    endpoint loss beside this one (both are divided by their value at the starting point)."""

    sigma: float
    step: int
    noise: torch.Tensor
    reference: torch.Tensor
    weight: float = 0.3


def _weights(solver: LearnedSolver) -> tuple[torch.Tensor, torch.Tensor]:
    n = solver.steps
    b = torch.zeros(n, n, dtype=torch.float64)
    c = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i):
            b[i, j], c[i, j] = solver.eps_weights[i][j], solver.denoised_weights[i][j]
    return b, c


def _rmse(denoiser, x, reference, sigmas, b, c, shift=None, stop=None) -> float:
    with torch.no_grad():
        return float((_rollout(denoiser, x, sigmas, b, c, shift, stop) - reference).pow(2).mean().sqrt())


def _robust(sq: torch.Tensor, tau: float | None) -> torch.Tensor:
    """Cauchy loss of per-start mean squared errors: quadratic below τ², logarithmic above (None: plain)."""
    return tau**2 * torch.log1p(sq / tau**2) if tau else sq


def fit(denoiser, nfe: int, calibration: torch.Tensor, sigma_min: float, sigma_max: float, *,
        reference: torch.Tensor | None = None, init_schedules: dict | None = None, inits: tuple[str, ...] = INITS,
        iters: int = 300, lr: float = 3e-3, batch: int | None = None, check_every: int = 25, validation: float = 0.25,
        history: int | None = 3, fit_model_sigmas: bool = True, robust: float | None = 0.3,
        weights: torch.Tensor | None = None, checkpoint: Checkpoint | None = None, seed: int = 0,
        log=None) -> LearnedSolver:
    """Fit the σ nodes and weights of an ``nfe``-step solver to ``denoiser``.

    Args:
        denoiser: canonical D(x, σ[B]), differentiable in x and σ (a torch network or an analytic denoiser).
        nfe: steps (one model call each).
        calibration: unit noise [B, ...]; the starting latents are ``calibration · σ_max``.
        sigma_min, sigma_max: the range (finite); the last node stays ≥ σ_min.
        reference: the exact endpoints from ``calibration · σ_max`` (default: torchdiffeq dopri5 at 1e-7 to
            σ_min, then the final denoise — :func:`samplers.schedules.optimise.reference_solution`).
        init_schedules: {name: sigmas with ``nfe`` steps} to start from (default: the fixed schedules of
            :data:`samplers.schedules.optimise.FIXED_BASELINES`).
        inits: known samplers to start from (their weights, :meth:`LearnedSolver.from_sampler`).
        iters, lr, batch: Adam on the training part (``batch``: random minibatches of that size instead),
            cosine-decayed learning rate, gradient norm clipped at 1.
        check_every, validation: the last ``validation`` share of the calibration batch (and of the
            checkpoint's starts) is never trained on; its loss is measured every ``check_every`` iterations and
            the iterate with the smallest one is returned — the starting point itself if nothing beats it, so
            the fit is never worse on data it did not see than the best known sampler it started from (a
            solver that steers the calibration starts exactly can be unstable on others: measured at 20 steps
            without this). Without a checkpoint that loss is the plain endpoint RMSE.
        history: how many earlier steps a step may weigh (None: all); fewer weights overfit less.
        fit_model_sigmas: also fit the σ the model is told at each node (``LearnedSolver.model_sigmas``).
        weights: per calibration start, its weight in the training loss (importance weights when the
            training starts were drawn with unequal probabilities); the validation part is always unweighted.
            (``meta["calibration_rmse"]`` is the plain RMSE on the training part as given.)
        robust: above ``robust`` × the spread of the data (the RMS of the reference endpoints about their mean)
            the training loss of a start grows logarithmically (Cauchy) instead of quadratically: a start sent
            to another mode of the data is an outlier, every smaller error counts in full; None: plain MSE.
        checkpoint: a :class:`Checkpoint`: node ``checkpoint.step`` is pinned at ``checkpoint.sigma`` and the
            loss is (checkpoint MSE)/(its start value) + weight·(endpoint loss)/(its start value), on training
            and validation parts alike.

    The starting point is the best (init sampler, schedule) pair on the training part (with a checkpoint,
    each schedule warped piecewise in log σ so that its node ``step`` is ``checkpoint.sigma``).
    """
    from ..schedules.optimise import FIXED_BASELINES, reference_solution

    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not isinstance(calibration, torch.Tensor) or calibration.ndim < 2:
        raise ValueError("calibration must be a batch of unit noise [B, ...]")
    if nfe < 1:
        raise ValueError(f"nfe must be at least 1, got {nfe}")
    n_val = int(round(calibration.shape[0] * validation))
    if not 0 < n_val < calibration.shape[0]:
        raise ValueError(f"validation={validation} of {calibration.shape[0]} starts leaves no training or no "
                         "validation part; use 0 < validation < 1 and a larger calibration batch")
    log_max, log_min = math.log(sigma_max), math.log(sigma_min)
    pin = ck = None
    if checkpoint is not None:
        ck = checkpoint
        if not (sigma_min < ck.sigma < sigma_max) or not 0 < ck.step < nfe:
            raise ValueError(f"checkpoint needs sigma_min < sigma < sigma_max and 0 < step < nfe, got sigma={ck.sigma}, "
                             f"step={ck.step} (nfe={nfe})")
        if ck.noise.shape != ck.reference.shape or ck.noise.shape[1:] != calibration.shape[1:]:
            raise ValueError("checkpoint.noise and checkpoint.reference must be starts and states shaped like "
                             "the calibration batch")
        ck_val = int(round(ck.noise.shape[0] * validation))
        if not 0 < ck_val < ck.noise.shape[0]:
            raise ValueError(f"validation={validation} of {ck.noise.shape[0]} checkpoint starts leaves no training or "
                             "no validation part")
        pin = (ck.step, math.log(ck.sigma))
        xk_all, rk_all = ck.noise.to(torch.float64) * sigma_max, ck.reference.to(torch.float64)
        xk_cal, rk_cal, xk_val, rk_val = xk_all[:-ck_val], rk_all[:-ck_val], xk_all[-ck_val:], rk_all[-ck_val:]
    x_all = calibration.to(torch.float64) * sigma_max
    if reference is None:
        reference = reference_solution(denoiser, x_all, sigma_max, sigma_min)
    reference = reference.to(torch.float64)
    x_cal, ref_cal = x_all[:-n_val], reference[:-n_val]
    if weights is not None:
        if weights.shape != (calibration.shape[0],) or not bool((weights[:-n_val] >= 0).all()):
            raise ValueError("weights must be one non-negative number per calibration start")
        w_cal = weights[:-n_val].to(torch.float64)
        w_cal = w_cal / w_cal.mean()
    else:
        w_cal = None
    x_val, ref_val = x_all[-n_val:], reference[-n_val:]
    if init_schedules is None:
        init_schedules = {}
        for name in FIXED_BASELINES:
            try:
                init_schedules[name] = schedules.get_sigmas(name, nfe, sigma_min=sigma_min, sigma_max=sigma_max)
            except ValueError:
                continue
    mask = torch.tril(torch.ones(nfe, nfe, dtype=torch.float64), -1)
    if history is not None:
        mask = mask - torch.tril(mask, -history - 1)  # keep j ≥ i − history
    tau = robust * float((ref_cal - ref_cal.mean(0)).pow(2).mean().sqrt()) if robust else None

    # the starting point: every (known sampler, schedule) pair, on the whole training part
    starts = []
    for sname, sig in init_schedules.items():
        sig = [float(v) for v in sig]
        if len(sig) != nfe + 1 or sig[-1] != 0:
            raise ValueError(f"init schedule {sname!r} must have {nfe} steps and end in 0")
        if pin is not None:
            sig = _nodes(_theta_for(sig, log_max, log_min, pin), log_max, log_min, pin).tolist()
        for init in inits:
            start = LearnedSolver.from_sampler(init, sig)
            b, c = _weights(start)
            starts.append((_rmse(denoiser, x_cal, ref_cal, start.tensor(), b * mask, c * mask), init, sname, start))
    start_err, init_name, sched_name, start = min(starts, key=lambda t: t[0])
    b0, c0 = (w * mask for w in _weights(start))
    shift0 = torch.zeros(nfe, dtype=torch.float64)
    theta = _theta_for(start.sigmas, log_max, log_min, pin)

    def parts(x, ref, xk, rk, sig, b, c, shift):
        """(endpoint loss, checkpoint MSE) — the loss terms, differentiable."""
        end = _robust((_rollout(denoiser, x, sig, b, c, shift) - ref).pow(2).flatten(1).mean(1), tau)
        if ck is None:
            return end, None
        return end, (_rollout(denoiser, xk, sig, b, c, shift, stop=ck.step) - rk).pow(2).mean()

    with torch.no_grad():  # the checkpoint loss weighs its two terms by their values at the start
        sig0 = _nodes(theta, log_max, log_min, pin)
        if ck is not None:
            end0, ck0 = (float(v.mean()) for v in parts(x_cal, ref_cal, xk_cal, rk_cal, sig0, b0, c0, shift0))
            vend0, vck0 = (float(v.mean()) for v in parts(x_val, ref_val, xk_val, rk_val, sig0, b0, c0, shift0))

    def criterion(sig, b, c, shift) -> float:
        """What picks the iterate, on the validation part."""
        if ck is None:
            return _rmse(denoiser, x_val, ref_val, sig, b, c, shift)
        with torch.no_grad():
            end, err = parts(x_val, ref_val, xk_val, rk_val, sig, b, c, shift)
        return float(err) / vck0 + ck.weight * float(end.mean()) / vend0

    val_start = criterion(sig0, b0, c0, shift0)
    if log:
        log(f"start: {init_name} on {sched_name}, RMSE {start_err:.4g} (validation {val_start:.4g})")

    theta = theta.requires_grad_()
    b = b0.clone().requires_grad_()
    c = c0.clone().requires_grad_()
    shift = shift0.clone().requires_grad_(fit_model_sigmas)
    best = (val_start, start.sigmas, b0, c0, shift0, 0)
    opt = torch.optim.Adam([theta, b, c] + ([shift] if fit_model_sigmas else []), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1), eta_min=lr * 0.05)
    g = torch.Generator().manual_seed(seed)
    m = x_cal.shape[0]
    for it in range(iters):
        idx = torch.randint(0, m, (batch,), generator=g) if batch and batch < m else slice(None)
        kdx = (torch.randint(0, xk_cal.shape[0], (batch,), generator=g)
               if ck is not None and batch and batch < xk_cal.shape[0] else slice(None))
        sig = _nodes(theta, log_max, log_min, pin)
        # the Cauchy loss per start (see robust): a start the solver sends to the wrong cluster cannot be
        # brought back by a small step, and its huge, erratic gradient would otherwise drown the accurate ones
        end, err = parts(x_cal[idx], ref_cal[idx], xk_cal[kdx] if ck else None, rk_cal[kdx] if ck else None,
                         sig, b * mask, c * mask, shift)
        loss = (end * w_cal[idx]).mean() if w_cal is not None else end.mean()
        if ck is not None:
            loss = err / ck0 + ck.weight * loss / end0
        opt.zero_grad()
        loss.backward()
        # one minibatch with a start near a cluster boundary can give a huge gradient: bound the step
        torch.nn.utils.clip_grad_norm_([theta, b, c, shift], max_norm=1.0)
        opt.step()
        decay.step()
        if (it + 1) % check_every == 0 or it == iters - 1:
            with torch.no_grad():
                sig = _nodes(theta, log_max, log_min, pin)
                val = criterion(sig, b * mask, c * mask, shift)
            if math.isfinite(val) and val < best[0]:
                best = (val, sig.tolist(), (b * mask).detach().clone(), (c * mask).detach().clone(),
                        shift.detach().clone(), it + 1)
            if log:
                log(f"iteration {it + 1}: validation {val:.4g} (best {best[0]:.4g}); training loss "
                    f"{float(loss.detach()):.4g}; σ {[round(v, 4) for v in sig.tolist()]}; log-shift "
                    f"{[round(v, 3) for v in shift.tolist()]}")
    val_best, sig, bw, cw, sh, kept = best
    sig = list(sig)
    sig[0], sig[-1] = sigma_max, 0.0  # exactly, not exp(log σ_max)
    if ck is not None:
        sig[ck.step] = ck.sigma
    model_sigmas = [sig[i] * math.exp(float(sh[i])) for i in range(nfe)] if bool(sh.any()) else None
    solver = LearnedSolver(sig, [[float(bw[i, j]) for j in range(i)] for i in range(nfe)],
                           [[float(cw[i, j]) for j in range(i)] for i in range(nfe)], model_sigmas=model_sigmas)
    st = solver.tensor()
    solver.meta = {
        "nfe": nfe, "validation_rmse": _rmse(denoiser, x_val, ref_val, st, bw, cw, sh), "iteration_kept": kept,
        "calibration_rmse": _rmse(denoiser, x_cal, ref_cal, st, bw, cw, sh),
        "start": {"init": init_name, "schedule": sched_name, "rmse": start_err,
                  "validation_rmse": _rmse(denoiser, x_val, ref_val, start.tensor(), b0, c0)},
        "sigma_min": sigma_min, "sigma_max": sigma_max, "calibration_batch": m, "validation_batch": n_val,
        "iters": iters, "lr": lr, "batch": batch, "history": history, "fit_model_sigmas": fit_model_sigmas, "robust": robust,
        "seed": seed}
    if ck is not None:
        solver.meta["checkpoint"] = {
            "sigma": ck.sigma, "step": ck.step, "weight": ck.weight, "starts": int(xk_all.shape[0]),
            "validation_criterion": val_best, "start_criterion": val_start,
            "validation_rmse": _rmse(denoiser, xk_val, rk_val, st, bw, cw, sh, stop=ck.step),
            "start_validation_rmse": _rmse(denoiser, xk_val, rk_val, start.tensor(), b0, c0, stop=ck.step)}
    return solver.validate()

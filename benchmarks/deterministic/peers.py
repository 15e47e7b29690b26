"""diffusers' deterministic schedulers for the three mixture problems, the native models they run on, and
which of our (sampler, schedule) pairs computes the same thing as each.

- ``gm-vp-eps``: DPMSolverMultistep 2M and 3M, UniPC (order 2 and 3), DEIS (2 and 3), LMS, Euler and Heun,
  each with its default spacing and with Karras, exponential, beta sigmas and "trailing" spacing;
- ``gm-flow``: FlowMatchEuler (default, Karras, exponential, beta), FlowMatchHeun, and UniPC / DPM-Solver
  2M, 3M / DEIS with ``use_flow_sigmas``;
- ``gm-ve``: EDMEuler and EDMDPMSolverMultistep 2M / 3M (Karras and exponential σ) on the EDM-preconditioned
  model of the data (:func:`edm_model`), and the discrete VP schedulers of ``gm-vp-eps`` on an eps model of
  the same data whose 1000-step training table is log-uniform in σ from 0.002 to 80 (:func:`ve_table_problem`;
  labels ``vetable/...``), so their Karras sigmas are the same 80 → 0.002 Karras schedule ours use.
"""
from __future__ import annotations

import dataclasses
import math

import torch

import samplers

from .. import common
from ..common import Problem

VE_TABLE_PREFIX = "vetable/"  # peers of gm-ve that run on the log-uniform discrete VP table


def edm_model(gm, sigma_data: float = 0.5):
    """The data as an EDM-preconditioned network F(c_in·x, c_noise) (Karras et al. 2022, arXiv:2206.00364).

    diffusers' EDM schedulers feed ``c_in·x`` and ``c_noise = ¼·ln σ`` and form D = c_skip·x + c_out·F with
    the "epsilon" c_out = σ·σ_d/√(σ² + σ_d²); this F gives back the exact denoiser D of ``gm``.
    """
    sd2 = sigma_data * sigma_data

    def model(x_in: torch.Tensor, time: torch.Tensor, **extra_args) -> torch.Tensor:
        view = (-1,) + (1,) * (x_in.ndim - 1)
        sigma = (4.0 * time.to(torch.float64)).exp().reshape(view)
        scale = (sigma * sigma + sd2).sqrt()
        x = x_in.to(torch.float64) * scale
        d = gm.denoise(x, sigma.flatten())
        c_skip = sd2 / (scale * scale)
        c_out = sigma * sigma_data / scale
        return ((d - c_skip * x) / c_out).to(x_in.dtype)

    return model


def ve_table_betas(sigma_min: float = 0.002, sigma_max: float = 80.0, n: int = 1000) -> list[float]:
    """Betas of a discrete VP table with σ_i = √((1 − ᾱ_i)/ᾱ_i) log-uniform from sigma_min to sigma_max."""
    log_lo, log_hi = math.log(sigma_min), math.log(sigma_max)
    sig = [math.exp(log_lo + (log_hi - log_lo) * i / (n - 1)) for i in range(n)]
    ac = [1.0 / (1.0 + s * s) for s in sig]
    return [1.0 - ac[0]] + [1.0 - ac[i] / ac[i - 1] for i in range(1, n)]


def ve_table_problem(problem: Problem, gm) -> Problem:
    """The VE problem's data behind an eps model on the log-uniform table, using diffusers' own float32 ᾱ
    (so the scheduler's timestep ↔ σ map and the model's are the same table)."""
    import diffusers

    betas = ve_table_betas(problem.sigma_min, problem.sigma_max)
    ac = diffusers.EulerDiscreteScheduler(trained_betas=betas, num_train_timesteps=len(betas)).alphas_cumprod
    native = samplers.core.native.VPDiscrete(ac.to(torch.float64))
    return dataclasses.replace(problem, native=native, native_model=gm.as_model("eps", native),
                               native_model_for=None)


def peer_problem(problem: Problem, label: str) -> Problem:
    """The problem the peer ``label`` runs on: gm-ve's data behind the EDM network, or behind the log-uniform
    table for the ``vetable/`` peers; the problem itself elsewhere."""
    if problem.family != "gm-ve":
        return problem
    gm = problem.mixture
    if label.startswith(VE_TABLE_PREFIX):
        return ve_table_problem(problem, gm)
    return dataclasses.replace(problem, native_model=edm_model(gm))


def _discrete_peers(base: dict) -> dict[str, dict]:
    classes = {
        "DPMSolverMultistepScheduler": {},  # 2M (solver_order=2, dpmsolver++)
        "DPMSolverMultistepScheduler+3M": dict(solver_order=3),
        "UniPCMultistepScheduler": {},
        "UniPCMultistepScheduler+order3": dict(solver_order=3),
        "DEISMultistepScheduler": {},
        "DEISMultistepScheduler+order3": dict(solver_order=3),
        "LMSDiscreteScheduler": {},
        "EulerDiscreteScheduler": {},
        "HeunDiscreteScheduler": {},
    }
    spacings = {"": {}, "+karras": dict(use_karras_sigmas=True), "+exponential": dict(use_exponential_sigmas=True),
                "+beta": dict(use_beta_sigmas=True), "+trailing": dict(timestep_spacing="trailing")}
    return {label + sp: dict(base, **cfg, **extra) for label, cfg in classes.items() for sp, extra in spacings.items()}


def peer_configs(problem: Problem) -> dict[str, dict]:
    """diffusers' deterministic schedulers (label → config) for one of this benchmark's problems."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return {}
    if problem.family == "gm-vp-eps":
        return _discrete_peers(dict(common.SD_BETAS, prediction_type="epsilon"))
    if problem.family == "gm-flow":
        cfg = problem.diffusers_config or {}
        shift, n_train = cfg.get("flow_shift", 3.0), cfg.get("num_train_timesteps", 1000)
        fm = dict(shift=shift, num_train_timesteps=n_train)
        flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
                    num_train_timesteps=n_train)
        return {
            "FlowMatchEulerDiscreteScheduler": fm,
            "FlowMatchEulerDiscreteScheduler+karras": dict(fm, use_karras_sigmas=True),
            "FlowMatchEulerDiscreteScheduler+exponential": dict(fm, use_exponential_sigmas=True),
            "FlowMatchEulerDiscreteScheduler+beta": dict(fm, use_beta_sigmas=True),
            "FlowMatchHeunDiscreteScheduler": fm,
            "DPMSolverMultistepScheduler+flow": flow,
            "DPMSolverMultistepScheduler+3M+flow": dict(flow, solver_order=3),
            "UniPCMultistepScheduler+flow": flow,
            "UniPCMultistepScheduler+order3+flow": dict(flow, solver_order=3),
            "DEISMultistepScheduler+flow": flow,
        }
    if problem.family == "gm-ve":
        edm = dict(sigma_min=problem.sigma_min, sigma_max=problem.sigma_max, sigma_data=0.5)
        peers = {
            "EDMEulerScheduler": edm,  # Karras σ (its default)
            "EDMEulerScheduler+exponential": dict(edm, sigma_schedule="exponential"),
            "EDMDPMSolverMultistepScheduler": edm,  # 2M, Karras σ
            "EDMDPMSolverMultistepScheduler+exponential": dict(edm, sigma_schedule="exponential"),
            "EDMDPMSolverMultistepScheduler+3M": dict(edm, solver_order=3),
            "EDMDPMSolverMultistepScheduler+3M+exponential": dict(edm, solver_order=3, sigma_schedule="exponential"),
        }
        betas = ve_table_betas(problem.sigma_min, problem.sigma_max)
        table = _discrete_peers(dict(trained_betas=betas, num_train_timesteps=len(betas),
                                     prediction_type="epsilon"))
        peers.update({VE_TABLE_PREFIX + k: v for k, v in table.items()})
        return peers
    return {}


_SAME_ALGORITHM = {
    "DPMSolverMultistepScheduler": "dpmpp_2m", "EDMDPMSolverMultistepScheduler": "dpmpp_2m",
    "LMSDiscreteScheduler": "lms", "EulerDiscreteScheduler": "euler", "EDMEulerScheduler": "euler",
    "FlowMatchEulerDiscreteScheduler": "euler", "HeunDiscreteScheduler": "heun",
    "FlowMatchHeunDiscreteScheduler": "heun_flow",
}
# ours default to order 3 (diffusers to 2): only diffusers' order-3 configurations are the same algorithm
_SAME_AT_ORDER3 = {"UniPCMultistepScheduler": "unipc_bh2", "DEISMultistepScheduler": "deis"}


def counterpart(label: str) -> tuple[str, str] | None:
    """Our (sampler, schedule) doing what the diffusers peer ``label`` does, at our default options.

    Schedules match exactly for Karras / exponential / beta σ and "trailing"; diffusers' default "linspace"
    rounds its timesteps and flow-sigma multistep schedulers start at t = 0.999, so those pairs are close,
    not identical. None where we have no counterpart at default options.
    """
    base = label[len(VE_TABLE_PREFIX):] if label.startswith(VE_TABLE_PREFIX) else label
    cls, *mods = base.split("+")
    if cls in _SAME_AT_ORDER3:
        if "order3" not in mods:
            return None
        sampler = _SAME_AT_ORDER3[cls]
    elif cls in _SAME_ALGORITHM:
        sampler = "dpmpp_3m" if "3M" in mods else _SAME_ALGORITHM[cls]
    else:
        return None
    if cls.startswith("EDM"):
        return sampler, "exponential" if "exponential" in mods else "karras"
    if cls.startswith("FlowMatch") or "flow" in mods:
        return (sampler, "flow") if not (set(mods) - {"flow", "3M", "order3"}) else None
    for mod, schedule in (("karras", "karras"), ("exponential", "exponential"), ("beta", "beta_sigmas"),
                          ("trailing", "trailing")):
        if mod in mods:
            return sampler, schedule
    return sampler, "linspace"

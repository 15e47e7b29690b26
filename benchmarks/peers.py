"""The peers the benchmarks (and the parity tests) measure us against: diffusers' schedulers in their own
``set_timesteps`` / ``step`` loop on a problem's native model, and the real k-diffusion package's modules.

A peer is a label ``"<SchedulerClass>[+variant...]"`` and the config its class is built with; the benchmarks
(:mod:`benchmarks.quality`, :mod:`benchmarks.deterministic`, :mod:`benchmarks.stochastic`) each choose their
own set. :func:`peer_steps` finds the most steps whose loop calls the model at most a budget of times (the
loop calls the model once per entry of ``scheduler.timesteps``); :func:`run_peer` runs the loop from the same
unit noise our samplers start from and says where in the canonical (VE) space that run started, so it can
be scored against the exact PF-ODE endpoint from its own start.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types

import torch

from samplers.core.errors import InvalidInput
from samplers.core.native import VPDiscrete

from .common import Problem


class PeerRefused(InvalidInput):
    """diffusers refuses a scheduler configuration (:func:`peer_steps` with ``strict``): the message gives its
    reason."""


def make_scheduler(label: str, config: dict):
    """The diffusers scheduler of ``label``'s class (the part before the first ``+``) built from ``config`` as a
    pipeline builds it, ``from_config`` (a shipped config carries keys some classes do not take: SD-1.5's PNDM
    config holds clip_sample, which diffusers leaves aside and PNDMScheduler(**config) refused)."""
    import diffusers

    name = label.split("+")[0]
    cls = getattr(diffusers, name, None) if name.isidentifier() else None
    if not isinstance(cls, type):
        raise InvalidInput(f"{name!r} is not a class of the installed diffusers {diffusers.__version__}: name a "
                           "scheduler class such as DPMSolverMultistepScheduler")
    return cls.from_config(config)


def peer_steps(label: str, config: dict, budget: int, *, strict: bool = False) -> tuple[int, int] | None:
    """The most ``set_timesteps`` steps whose loop calls the model at most ``budget`` times: (steps, calls); None
    where no step count within the budget runs. A step count whose ``set_timesteps`` raises ValueError or
    ZeroDivisionError is skipped: a configuration the benchmarks compare may legitimately not take some counts
    (a budget below what its spacing or order allows), and a cell without a peer is reported as such.

    ``strict`` (``samplers fit``'s own configured scheduler, checked before it fits): :class:`PeerRefused`, with
    diffusers' reason, where the scheduler cannot be built from ``config`` or refuses every step count within
    the budget, so a configuration diffusers rejects is never silently a missing comparison."""
    name = label.split("+")[0]
    if strict:
        try:
            make_scheduler(label, config)
        except (TypeError, ValueError, NotImplementedError) as err:  # unknown or invalid settings
            raise PeerRefused(f"diffusers' {name} refuses these settings ({type(err).__name__}: {err})") from None
    best, refused = None, []
    for steps in range(1, budget + 1):
        sch = make_scheduler(label, config)
        try:
            sch.set_timesteps(steps)
        except (ValueError, ZeroDivisionError) as err:
            refused.append((steps, err))
            continue
        calls = len(sch.timesteps)
        if calls <= budget:
            best = (steps, calls)
        elif best is not None:
            break
    if strict and best is None and len(refused) == budget:  # every count raised: diffusers rejects the config
        steps, err = refused[0]
        raise PeerRefused(f"diffusers' {name}.set_timesteps refuses every step count from 1 to {budget} "
                          f"({type(err).__name__} at {steps} steps: {err})")
    return best


def _keeps_ve(sch) -> bool:
    """``sch`` (after ``set_timesteps``) keeps the VE state x0 + σ·n itself (an ``init_noise_sigma`` other than 1:
    the k-diffusion-style classes), not native x_t (flow-matching classes have no ``init_noise_sigma``)."""
    return float(getattr(sch, "init_noise_sigma", 1.0)) != 1.0


def peer_start(sch, native) -> float:
    """The σ diffusers' loop of ``sch`` (after ``set_timesteps``) starts from on ``native``, the schedule its model
    was trained on, as diffusers computes it: its first sigma where it keeps the VE state; else, for a class that
    steps on an ᾱ table, σ = √((1 − ᾱ)/ᾱ) of its own ``alphas_cumprod`` at its first timestep — inf only where that
    ᾱ is exactly 0 (DDIM / DDPM / LCM / TCD with rescale_betas_zero_snr=True and 'trailing' spacing). The class's
    table is not always the model's: DPMSolverMultistep and UniPC clamp a zero-SNR table's last ᾱ to 2⁻²⁴ (σ = 4096,
    "so first sigma is not inf"), and DEIS / DPMSolverSinglestep / SASolver take no rescale_betas_zero_snr (the
    plain table, σ 14.6 at timestep 999 on SD's betas), so reading ``native`` there said σ = inf for runs that start
    at a finite σ. Where the class's entry is the model's own to the rounding of diffusers' float32 table (up to 4e-5
    relative near a zero-SNR table's end, measured), the model's exact σ is kept: the start the recorded benchmarks
    measured from. A flow-matching class (no ``alphas_cumprod``, or its ``use_flow_sigmas``), or a model not on an ᾱ
    table, starts at its first timestep's σ on ``native``.
    What :func:`run_peer` starts from, and what ``samplers fit`` checks before fitting (an eps model has no value at
    σ = inf)."""
    if _keeps_ve(sch):
        return float(sch.sigmas[0])
    t0 = float(sch.timesteps[0])
    model = float(native.sigma_of_time(torch.as_tensor([t0], dtype=torch.float64)))
    table = getattr(sch, "alphas_cumprod", None)
    on_table = isinstance(native, VPDiscrete) and not sch.config.get("use_flow_sigmas")  # not its flow sigmas
    if table is None or not on_table or t0 != int(t0) or not 0 <= t0 < len(table):
        return model
    alpha = float(table[int(t0)])
    own = math.inf if alpha == 0 else math.sqrt((1 - alpha) / alpha)
    return model if math.isclose(own, model, rel_tol=_SAME_TABLE) else own


# how far apart σ of the same table entry may be, diffusers' float32 table against the model's float64 one: 4e-5
# relative measured (a zero-SNR table's rescale near its end), far below any two different tables' difference
_SAME_TABLE = 1e-3


def run_peer(problem: Problem, label: str, config: dict, steps: int, noise: torch.Tensor, seed: int):
    """diffusers' own loop on the native model. Returns (x0, x_start in VE, sigma_start, model calls)."""
    sch = make_scheduler(label, config)
    sch.set_timesteps(steps, device=noise.device)
    calls = 0
    native_model, native = problem.batch_native_model(noise.shape[0], seed), problem.native

    def model(x_t, t):
        nonlocal calls
        calls += 1
        time_ = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return native_model(x_t, time_)

    latents = noise * float(getattr(sch, "init_noise_sigma", 1.0))
    sigma_start = peer_start(sch, native)
    if _keeps_ve(sch) or math.isinf(sigma_start):  # the VE state itself (k-diffusion-style), or at σ = inf the noise
        x_start = latents
    else:  # the state is x_t at the σ it starts from (a VP x_t = x/√(1 + σ²) reads σ alone: the class's ᾱ, not the
        # model's, where they differ, as DPMSolverMultistep's clamped 2⁻²⁴ gives x = 4096·x_t)
        a, _ = native.coefficients(torch.tensor([sigma_start], dtype=torch.float64))
        x_start = latents / float(a)
    generator = torch.Generator(device=noise.device).manual_seed(seed)
    takes_generator = "generator" in inspect.signature(sch.step).parameters
    # a class that draws from torch's global generator (DPMSolverSDEScheduler seeds its Brownian tree there when its
    # config has no noise_sampler_seed) draws from one seeded by the run's seed, not from wherever the benchmark's
    # earlier runs left it; the caller's global generator is left as it was
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the CPU generator's state, restored after
        torch.default_generator.manual_seed(seed)  # that one only: torch.manual_seed would reseed CUDA's too
        for t in sch.timesteps:
            inp = sch.scale_model_input(latents, t) if hasattr(sch, "scale_model_input") else latents
            kw = {"generator": generator} if takes_generator else {}
            latents = sch.step(model(inp, t), t, latents, **kw).prev_sample
    return latents, x_start, sigma_start, calls


# ------------------------------------------------------------------------------------------------------
# k-diffusion


class KDiffusionUnavailable(RuntimeError):
    pass


_KD: dict = {}


def kdiffusion_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """k-diffusion's own ``sampling`` and ``external`` modules (the installed package, k-diffusion 0.1.1.post1).

    Its package ``__init__`` imports training-only dependencies (scikit-image, torchvision, ...); when that
    fails, the two modules are loaded from the installed files on their own (torchvision, used only by
    ``utils``' PIL helpers, stubbed while ``utils`` loads). Raises :class:`KDiffusionUnavailable` when the
    package is not installed (``pip install --no-deps k-diffusion==0.1.1.post1``).
    """
    if "modules" in _KD:
        return _KD["modules"]
    try:
        sampling = importlib.import_module("k_diffusion.sampling")
        external = importlib.import_module("k_diffusion.external")
    except ImportError:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or not spec.submodule_search_locations:
            raise KDiffusionUnavailable("k-diffusion is not installed (pip install --no-deps "
                                        "k-diffusion==0.1.1.post1)") from None
        name = "_kdiffusion_benchmark"
        pkg = types.ModuleType(name)
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = pkg
        stubs = {}
        if importlib.util.find_spec("torchvision") is None:
            stubs = {m: types.ModuleType(m) for m in ("torchvision", "torchvision.transforms",
                                                      "torchvision.transforms.functional")}
            stubs["torchvision.transforms"].functional = stubs["torchvision.transforms.functional"]
        sys.modules.update(stubs)
        try:
            sampling = importlib.import_module(f"{name}.sampling")
            external = importlib.import_module(f"{name}.external")
        except ImportError as err:
            raise KDiffusionUnavailable(f"k-diffusion's sampling module does not load: {err}") from None
        finally:
            for m in stubs:
                sys.modules.pop(m, None)
    _KD["modules"] = (sampling, external)
    return _KD["modules"]


def main(argv=None) -> int:
    """This module is a library (the diffusers and k-diffusion peers the benchmarks measure against): it runs nothing, and refuses any argument."""
    from .common import library_main

    return library_main(__spec__.name if __spec__ is not None else __name__,
                        "the diffusers and k-diffusion peers the benchmarks measure against", argv)


if __name__ == "__main__":
    raise SystemExit(main())

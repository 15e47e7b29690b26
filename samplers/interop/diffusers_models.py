"""diffusers models as registry denoisers, and the one reading of a diffusers scheduler config.

A diffusers UNet (or SD3-style transformer) predicts eps / v / x0 / flow velocity in its native
coordinates, on the noise schedule its scheduler config describes. :func:`native_from_config` turns that
config into one of our native schedules (``VPDiscrete.from_betas(...)`` or ``RectifiedFlow``) and a
prediction type; :func:`denoiser_from_diffusers` adds prompt embeddings and classifier-free guidance and
hands the result to :func:`samplers.core.conversion.to_denoiser`, so any registry sampler runs on the model::

    from samplers.interop.diffusers_models import denoiser_from_diffusers
    D = denoiser_from_diffusers(pipe.unet, pipe.scheduler.config, prompt_embeds, negative_prompt_embeds,
                                guidance_scale=7.5)
    sigmas = samplers.get_sigmas("karras", 20, native=D.schedule)
    latents = samplers.sample("dpmpp_2m", D, samplers.initial_latent(noise, sigmas), sigmas)

diffusers is an optional dependency: this module imports nothing from it (it only calls the model), and
``import samplers`` does not import this module.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Mapping

import torch

from ..core.native import VE, NoiseSchedule, RectifiedFlow, VPDiscrete, betas_for
from ..core.conversion import Denoiser, canonical_prediction, to_denoiser
from ..core.errors import InvalidInput, InvalidOption, InvalidType
from ..core.validate import closest, integer, positive, real, same_value

# Config flags that change what a diffusers scheduler computes in ways the registry samplers do not
# reproduce. A config that sets one is refused rather than silently sampled differently.
UNSUPPORTED_FLAGS = {
    "thresholding": "dynamic thresholding of x0 (Imagen) is not a sampler; apply it in a denoiser wrapper",
    "clip_sample": "clipping x0 to [-1, 1] is a pixel-space DDPM option; set clip_sample=False",
    "invert_sigmas": "inverted (Mochi) sigma schedules are not supported",
    "shift_terminal": "stretching the flow schedule to a terminal value is not supported; pass sigmas= instead",
    "stochastic_sampling": "FlowMatch stochastic_sampling is a sampler choice here: use sampler='euler_ancestral'",
}


def check_scheduler_flags(config: Mapping) -> None:
    """Refuse a config whose scheduler-side flags (:data:`UNSUPPORTED_FLAGS`) the samplers do not reproduce."""
    for flag, why in UNSUPPORTED_FLAGS.items():
        if config.get(flag):
            raise InvalidOption(f"scheduler config sets {flag}={config[flag]!r}: {why}")


# Flags of a scheduler config that change x0 inside the scheduler's step. A denoiser built from the config returns the
# model's x0 as it is, and a registry sampler steps on it: a config that sets one is refused there, not dropped.
X0_FLAGS = {
    "clip_sample": "the scheduler would clip x0 to [-clip_sample_range, clip_sample_range] (here {range}) at every "
                   "step; the samplers step on the denoiser's x0 unclipped",
    "thresholding": "the scheduler would apply dynamic thresholding (Imagen) to x0 at every step; the samplers step "
                    "on the denoiser's x0 as it is",
}


def flag(config: Mapping, name: str, where: str = "scheduler config") -> bool:
    """A boolean field of a scheduler config: absent or null is False, true / false are themselves; anything else
    (a string such as "false", a number) is refused rather than read by its truthiness. ``where`` names the config
    in the message (a file: "scheduler config 'folder/scheduler_config.json'")."""
    value = config.get(name)
    if value is None:
        return False
    if type(value).__module__ == "numpy" and type(value).__name__ == "bool":  # numpy.bool_: a boolean (np.True_)
        return bool(value)
    if not isinstance(value, bool):
        raise InvalidType(f"{where} field {name} must be true or false, got {value!r} "
                          f"({type(value).__name__}); write it as a JSON boolean")
    return value


@functools.lru_cache(maxsize=1)
def boolean_keys() -> frozenset:
    """The config keys whose default is a bool in the installed diffusers scheduler classes (thresholding,
    lower_order_final, euler_at_final, use_karras_sigmas, ...; no key is a bool in one class and another type in
    another); empty without diffusers."""
    return frozenset(k for params in scheduler_parameters().values() for k, v in params.items()
                     if isinstance(v, bool))


def check_flags(config: Mapping, where: str = "scheduler config") -> None:
    """Refuse (:func:`flag`) every key of ``config`` that is a boolean in diffusers (:func:`boolean_keys`) and holds
    anything but true, false or null: the classes read such a key by its truthiness, so "false" (or "0", "no")
    would turn ``thresholding`` or ``lower_order_final`` on silently."""
    for name in sorted(k for k in config if k in boolean_keys()):
        flag(config, name, where)


def check_x0_flags(config: Mapping) -> None:
    """Refuse a config whose scheduler changes x0 in its step (:data:`X0_FLAGS`): a denoiser returns x0 as the model
    gives it, so a sampler run on it would be another image than the scheduler's."""
    for name, why in X0_FLAGS.items():
        if flag(config, name):
            why = why.format(range=config.get("clip_sample_range", 1.0))
            raise InvalidOption(f"scheduler config sets {name}={config[name]!r}: {why}. Pass a config without it or "
                                f"with {name}=False (latent models such as SD and SDXL do not use it)")


def check_model_flags(config: Mapping, mu) -> None:
    """Refuse what :func:`denoiser_from_diffusers` would otherwise read wrongly from a config: ``invert_sigmas``
    (Mochi: the model takes 1 − t and predicts the velocity's negative, which the denoiser would feed and read as
    an ordinary flow model's) and what :func:`check_mu` refuses."""
    if flag(config, "invert_sigmas"):
        raise InvalidOption("scheduler config sets invert_sigmas=True (Mochi): that model takes the time 1 − t and "
                            "predicts x0 − noise, which a denoiser built here would feed and read as an ordinary "
                            "flow model's; this is not supported: pass a model and config without it")
    check_mu(config, mu)


def check_mu(config: Mapping, mu) -> None:
    """Refuse a dynamic-shifting flow config without ``mu`` (its schedule would carry shift 1, and schedules built
    from it another grid than the pipeline's) and a ``mu`` where the config reads none."""
    dynamic = flag(config, "use_dynamic_shifting") and is_flow_config(config)
    if dynamic and mu is None:
        raise InvalidInput("scheduler config sets use_dynamic_shifting=True: its shift is e^mu (or mu, by "
                           "time_shift_type) for the image's size, which the config does not hold; pass mu= as the "
                           "pipeline computes it (Flux: calculate_shift of the image's sequence length), as "
                           "diffusers' set_timesteps requires it")
    if mu is not None and not dynamic:
        raise InvalidOption(f"mu={mu!r} is read only with a flow config that sets use_dynamic_shifting=True; this "
                            "config's shift is fixed (its shift / flow_shift field): leave mu out")


@functools.lru_cache(maxsize=1)
def scheduler_parameters() -> dict[str, dict]:
    """The constructor parameters of every installed diffusers scheduler class, each with its default
    (``inspect.Parameter.empty`` where it has none); {} without diffusers."""
    try:
        from diffusers import schedulers as diffusers_schedulers
        from diffusers.configuration_utils import ConfigMixin
    except ImportError:
        return {}
    out = {}
    for name in dir(diffusers_schedulers):
        obj = getattr(diffusers_schedulers, name, None)
        if isinstance(obj, type) and issubclass(obj, ConfigMixin) and name.endswith("Scheduler"):
            out[name] = {p: v.default for p, v in inspect.signature(obj).parameters.items()
                         if p not in ("self", "kwargs")}
    return out


# keys a config may hold that no scheduler class's constructor names: diffusers ≤ 0.3's "tensor_format" ("pt" / "np"),
# which chose the array type only and changes no number
FORMAT_KEYS = ("tensor_format",)


def unknown_config_keys(config: Mapping, known) -> None | str:
    """The keys of ``config`` that are in none of ``known`` (diffusers' "_" metadata aside), named with the closest
    known key each, or None."""
    unknown = [k for k in config if not (isinstance(k, str) and k.startswith("_")) and k not in known]
    return ", ".join(closest(k, known) for k in unknown) if unknown else None


def model_config(cfg: dict) -> dict:
    """A scheduler config as the model reads it, checked: a key no diffusers scheduler class takes (a misspelling,
    which diffusers drops with a logged warning) is refused, and the keys a config omits are its class's defaults,
    as diffusers' ``from_config`` fills them (a partial DDIM config clips x0, its class's default) — where diffusers
    is installed and the config names its class. A SamplerScheduler's own config (this library's shim) is taken as it
    is: the shim checked it."""
    params = scheduler_parameters()
    if not params or cfg.get("_class_name") == "SamplerScheduler" or "source_config" in cfg:
        return cfg
    # "noise_schedule" is this library's own (is_flow_config)
    bad = unknown_config_keys(cfg, frozenset().union(*params.values(), FORMAT_KEYS, ("noise_schedule",)))
    if bad:
        raise InvalidOption(f"the scheduler config has {bad}, which no diffusers scheduler class takes: diffusers "
                            "would drop it (and run that option's default) silently. Fix the key's spelling, or "
                            "remove it from the config")
    own = params.get(cfg.get("_class_name"))
    if own is None:
        return cfg
    return {**{k: v for k, v in own.items() if v is not inspect.Parameter.empty and not isinstance(v, type)}, **cfg}


def config_dict(config: Any) -> dict:
    """A plain dict from a diffusers scheduler, its ``config`` (FrozenDict) or a mapping."""
    if hasattr(config, "config") and not isinstance(config, Mapping):
        config = config.config
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a diffusers scheduler config (a mapping), got {type(config).__name__}")
    return dict(config)


def is_flow_config(config: Mapping) -> bool:
    """True for a rectified-flow (flow-matching) config: SD3 / Flux schedulers, or ``use_flow_sigmas``."""
    explicit = config.get("noise_schedule")
    if explicit is not None:
        if explicit not in ("vp", "flow"):
            raise InvalidOption(f"noise_schedule must be 'vp' or 'flow', got {explicit!r}")
        return explicit == "flow"
    if flag(config, "use_flow_sigmas"):
        return True
    if str(config.get("_class_name", "")).startswith("FlowMatch"):
        return True
    # FlowMatch* configs carry a time `shift`; VP (beta) configs never do.
    return config.get("shift") is not None


def flow_shift(config: Mapping, mu: float | None = None) -> float:
    """The σ multiplier s of a flow config: static ``shift`` (or ``flow_shift``), or e^μ / μ when dynamic."""
    if flag(config, "use_dynamic_shifting"):
        if mu is None:
            return 1.0  # unknown until the pipeline passes mu to set_timesteps (native_from_config(mu_later=True))
        kind = config.get("time_shift_type", "exponential")
        mu = real("mu", mu)
        if kind == "exponential":
            if not -700.0 < mu < 700.0:  # e^mu: 0 or beyond any float, not a shift
                raise InvalidOption(f"mu={mu!r}: the shift e^mu would be {'inf' if mu > 0 else 0} (use_dynamic_shifting "
                                    "with time_shift_type='exponential'); pass mu as the pipeline computes it (Flux: "
                                    "0.5 to 1.15 by image size)")
            return math.exp(mu)
        if kind == "linear":
            if not mu > 0:
                raise InvalidOption(f"mu={mu!r}: with time_shift_type='linear' the shift is mu itself, which must be "
                                    "> 0; pass mu as the pipeline computes it")
            return mu
        raise InvalidOption(f"unknown time_shift_type {kind!r}; use 'exponential' or 'linear'")
    if flag(config, "use_flow_sigmas"):
        shift = config.get("flow_shift")
        return 1.0 if shift is None else positive("flow_shift", shift)
    shift = config.get("shift")
    return 1.0 if shift is None else positive("shift", shift)


def prediction_from_config(config: Any) -> str:
    """The canonical prediction type a diffusers scheduler config describes (``epsilon`` -> ``eps``, ...).

    A config that cannot describe a working model is an error: an unknown prediction type,
    ``flow_prediction`` on a VP (beta) schedule, or a non-flow prediction on a flow schedule.
    """
    cfg = config_dict(config)
    flow = is_flow_config(cfg)
    raw = cfg.get("prediction_type")
    if raw is None:
        raw = "flow_prediction" if flow else "epsilon"
    if raw not in ("epsilon", "v_prediction", "sample", "flow_prediction"):
        raise InvalidOption(f"unknown prediction_type {raw!r}; diffusers configs use 'epsilon', 'v_prediction', "
                            "'sample' or 'flow_prediction'")
    prediction = canonical_prediction(raw)
    if flow and prediction != "flow":
        raise InvalidOption(f"prediction_type {raw!r} with a flow-matching schedule: flow-matching models "
                            "(SD3, Flux) predict the velocity, use prediction_type='flow_prediction'")
    if not flow and prediction == "flow":
        raise InvalidOption("prediction_type 'flow_prediction' with a VP (beta) schedule: a flow-matching model "
                            "needs a flow-matching config (a FlowMatch* scheduler config, or use_flow_sigmas=True "
                            "with flow_shift); an SD-1.x/2.x-style config describes an eps/v model")
    return prediction


EDM_CLASSES = frozenset({"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"})
# schedulers whose models are preconditioned in ways no native schedule here reads (their configs carry sigma_data
# too, but are not EDM's): refused by name rather than read as something else
NOT_READ = {"CMStochasticIterativeScheduler": "a consistency model's boundary scalings and time input",
            "CosineDPMSolverMultistepScheduler": "Stable Audio's cosine-schedule preconditioning",
            "SCMScheduler": "an sCM (TrigFlow) model's preconditioning"}
# the diffusers scheduler classes whose config is read here as the model it describes: the classes the shim stands in
# for (samplers.interop.diffusers_sources.SOURCES) and their parallel variants, the inverse (inversion) classes of
# DDIM and DPM-Solver (the same VP model), and CogVideoX's (snr_shift_scale). Any other class's config describes
# another kind of model (Score-SDE's VE, Karras-VE's, Würstchen's continuous cosine time, IPNDM's own table, Helios'
# stages, ...) or one not known to be read right: refused by name, not read as a VP eps model on default betas
READ_CLASSES = frozenset({
    "DDIMScheduler", "DDIMParallelScheduler", "DDIMInverseScheduler", "DDPMScheduler", "DDPMParallelScheduler",
    "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
    "DPMSolverSinglestepScheduler", "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler",
    "UniPCMultistepScheduler", "DEISMultistepScheduler", "SASolverScheduler", "LCMScheduler", "TCDScheduler",
    "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler", *EDM_CLASSES, "FlowMatchEulerDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler"})


def config_class(cfg: Mapping) -> str | None:
    """The diffusers scheduler class a config is for: its ``_class_name``, else the class whose parameters are exactly
    its keys (a scheduler's own ``.config`` holds no class name) — one of :data:`READ_CLASSES` where classes share
    their parameters (FlowMatchHeun's and FlowMapEuler's) —, else None: a hand-written config, or one whose keys all
    a class of :data:`READ_CLASSES` takes (IPNDM's ``num_train_timesteps`` and ``trained_betas`` are a partial DDPM
    config too; such a class is told by its name only: ``_class_name``, or the scheduler object passed)."""
    cls = cfg.get("_class_name")
    if cls is not None:
        return cls
    keys = {k for k in cfg if not (isinstance(k, str) and k.startswith("_"))}
    params = scheduler_parameters()
    found = sorted(name for name, taken in params.items() if set(taken) == keys)
    read = [name for name in found if name in READ_CLASSES]
    if read or not found:
        return read[0] if read else None
    partial = any(keys <= set(params[name]) for name in READ_CLASSES if name in params)
    return None if partial else found[0]


def named_config(config: Any) -> dict:
    """:func:`config_dict`, with the ``_class_name`` of a diffusers scheduler object passed (its ``.config`` holds
    none), so :func:`config_class` knows it."""
    cfg = config_dict(config)
    if not isinstance(config, Mapping) and type(config).__module__.startswith("diffusers."):
        cfg.setdefault("_class_name", type(config).__name__)
    return cfg


def _model_class(cfg: Mapping) -> str | None:
    """:func:`config_class`, or for a config of none with ``sigma_data`` the class by its parameters; a class of
    :data:`NOT_READ`, or a diffusers scheduler class outside :data:`READ_CLASSES`, is refused by name."""
    cls = config_class(cfg)
    if cls is None and "sigma_data" in cfg:
        edm = "sigma_schedule" in cfg and ("solver_order" not in cfg or "algorithm_type" in cfg)
        cls = "EDMEulerScheduler" if edm else next(
            (c for c, keys in (("CMStochasticIterativeScheduler", {"clip_denoised"}),
                               ("CosineDPMSolverMultistepScheduler", {"sigma_schedule", "solver_order"}))
             if keys <= set(cfg)), "SCMScheduler")
    if cls in NOT_READ:
        raise InvalidOption(f"{cls}'s config describes {NOT_READ[cls]}, which this library does not read into a "
                            "native schedule; run that model with its own scheduler")
    if cls is not None and cls not in READ_CLASSES and cls != "SamplerScheduler":
        raise InvalidOption(
            f"{cls}'s config is not read here: its model is not known to be the VP (beta table), flow-matching or EDM "
            "model this library reads from a config, and reading it as one would feed the network another time "
            "and noise level than its scheduler does. Run it with its own scheduler; or, where the model is such a "
            "model, pass the config of a class that describes it (e.g. DDPMScheduler's with its betas and "
            "prediction_type, FlowMatchEulerDiscreteScheduler's with its shift), or build the denoiser with its "
            "native schedule: to_denoiser(DiffusersModel(model, ...), prediction, native). Classes read: "
            + ", ".join(sorted(READ_CLASSES)))
    return cls


def _edm_kind(cfg: Mapping) -> str | None:
    """"edm" for diffusers' EDM scheduler configs (by class; a config without ``_class_name`` by its ``sigma_data``),
    "continuous_v" for an Euler config whose model takes ¼·ln σ (``timestep_type="continuous"`` with v_prediction:
    Stable Video Diffusion), None otherwise; the classes :func:`_model_class` refuses are refused."""
    if _model_class(cfg) in EDM_CLASSES:
        return "edm"
    if cfg.get("timestep_type", "discrete") == "continuous" and cfg.get("prediction_type") == "v_prediction":
        return "continuous_v"
    return None


def sigma_data_from_config(config: Any) -> float:
    """EDM's σ_data of the model a config describes: the config's (diffusers' EDM schedulers, default 0.5), 1 for an
    Euler config with continuous timesteps and v_prediction (its c_in = 1/√(σ² + 1)), 1 (unused) otherwise."""
    cfg = named_config(config)
    if _edm_kind(cfg) == "edm":
        return positive("sigma_data", cfg.get("sigma_data", 0.5))
    return 1.0


def _edm_native(cfg: Mapping, kind: str) -> tuple[NoiseSchedule, str]:
    raw = cfg.get("prediction_type", "epsilon")
    if kind == "edm":
        prediction = {"epsilon": "edm", "v_prediction": "edm_v"}.get(raw)
        if prediction is None:
            raise InvalidOption(f"prediction_type {raw!r} with an EDM config: diffusers' EDM preconditioning is "
                                "defined for 'epsilon' and 'v_prediction'")
        lo, hi = cfg.get("sigma_min", 0.002), cfg.get("sigma_max", 80.0)
    else:
        prediction = "edm_v"
        lo, hi = cfg.get("sigma_min"), cfg.get("sigma_max")
        if lo is None or hi is None:  # the range of the beta table the scheduler then spaces
            table = VPDiscrete.from_betas(cfg.get("beta_schedule", "linear"), cfg.get("num_train_timesteps", 1000),
                                          real("beta_start", cfg.get("beta_start", 0.0001)),
                                          real("beta_end", cfg.get("beta_end", 0.02)))
            lo, hi = (table.sigma_min if lo is None else lo), (table.sigma_max if hi is None else hi)
    return VE(real("sigma_min", lo), real("sigma_max", hi), "edm"), prediction


def native_from_config(config: Any, *, mu: float | None = None, mu_later: bool = False) -> tuple[NoiseSchedule, str]:
    """The native noise schedule and prediction type a diffusers scheduler config describes.

    VP configs give ``VPDiscrete.from_betas(beta_schedule, num_train_timesteps, beta_start, beta_end,
    rescale_betas_zero_snr)`` (or the table from ``trained_betas``); flow-matching configs give
    ``RectifiedFlow(shift, multiplier=num_train_timesteps)``. A config that cannot describe a working model
    is an error: an unknown prediction type, ``flow_prediction`` on a VP (beta) schedule, or a non-flow
    prediction on a flow schedule. (Scheduler-only flags such as ``clip_sample`` do not describe the model
    and are ignored here; :func:`check_scheduler_flags` refuses them where a scheduler would apply them, and
    :func:`denoiser_from_diffusers` refuses ``clip_sample`` / ``thresholding`` (:func:`check_x0_flags`).)

    A dynamic-shifting flow config (``use_dynamic_shifting``) needs ``mu``, and a ``mu`` is refused where the config
    reads none (:func:`check_mu`). ``mu_later=True`` is a scheduler's reading, to which a pipeline passes ``mu`` at
    ``set_timesteps`` (FluxPipeline on any config): without it the shift is 1 until then, and a ``mu`` the config
    does not read is ignored, as diffusers' schedulers ignore it.

    The keys a config leaves out are its class's defaults, as diffusers' ``from_config`` fills them
    (:func:`model_config`): ``{"_class_name": "LCMScheduler"}`` is LCM's scaled_linear table, not DDPM's linear one.
    """
    cfg = model_config(named_config(config))
    if not mu_later:
        check_mu(cfg, mu)
    kind = _edm_kind(cfg)
    if kind is not None:
        return _edm_native(cfg, kind)
    prediction = prediction_from_config(cfg)
    n_train = integer("num_train_timesteps", cfg.get("num_train_timesteps", 1000), lo=2)
    if prediction == "flow":
        return RectifiedFlow(shift=flow_shift(cfg, mu), multiplier=float(n_train)), prediction
    trained = cfg.get("trained_betas")
    if trained is not None:
        try:
            betas = torch.as_tensor(trained, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise InvalidType(f"trained_betas must be a list of numbers (one beta per training timestep), got "
                              f"{trained!r}") from None
        if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise InvalidInput("trained_betas must hold at least 2 betas, each in (0, 1)")
        if betas.numel() != n_train:
            given = "num_train_timesteps" in cfg
            raise InvalidInput(
                f"trained_betas holds {betas.numel()} betas but num_train_timesteps is {n_train}"
                + ("" if given else " (the default: the config leaves it out)")
                + ": diffusers' schedulers space their timesteps over num_train_timesteps and index the table with "
                "them (past its end where it is shorter, on part of it where it is longer), so the table would not "
                f"be the model's; set num_train_timesteps={betas.numel()} (one beta per training timestep)")
    else:
        betas = betas_for(cfg.get("beta_schedule", "linear"), n_train,
                          real("beta_start", cfg.get("beta_start", 0.0001)), real("beta_end", cfg.get("beta_end", 0.02)))
    alphas_cumprod = _snr_shifted(torch.cumprod(1 - betas, 0), cfg)
    zero_snr = flag(cfg, "rescale_betas_zero_snr")
    return VPDiscrete.from_alphas_cumprod(alphas_cumprod, rescale_betas_zero_snr=zero_snr), prediction


def _snr_shifted(alphas_cumprod: torch.Tensor, cfg: Mapping) -> torch.Tensor:
    """The ᾱ table with CogVideoX's ``snr_shift_scale`` s applied as its schedulers apply it, before any zero-SNR
    rescale: ᾱ / (s + (1 − s)·ᾱ) (every SNR divided by s). A config of a CogVideoX class that leaves the key out
    gets the class's default (3)."""
    shift = cfg.get("snr_shift_scale")
    if shift is None:
        shift = scheduler_parameters().get(config_class(cfg), {}).get("snr_shift_scale")
    if shift is None:
        return alphas_cumprod
    shift = positive("snr_shift_scale", shift)
    return alphas_cumprod / (shift + (1 - shift) * alphas_cumprod)


# keyword arguments that are token positions, not one row per item (Flux's, Flux 2's, Chroma's txt_ids / img_ids:
# [tokens, axes]; the deprecated [1, tokens, axes] is read as its first row): passed as they are, and shared by both
# halves of a guided batch, as FluxPipeline passes them
POSITION_IDS = frozenset({"txt_ids", "img_ids"})


def _same(a, b) -> bool:
    """Whether two keyword values are the same value: tensors by their elements, others as :func:`same_value`."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a is b or (a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b.to(a.device))))
    return same_value(a, b)


def _cat_kwargs(negative: Mapping, positive: Mapping) -> dict:
    """[uncond; cond] along the batch for every tensor (recursively); other values and :data:`POSITION_IDS` are
    shared."""
    out = {}
    for key, pos in positive.items():
        neg = negative.get(key, pos)
        if key in POSITION_IDS:
            out[key] = pos
        elif isinstance(pos, torch.Tensor):
            out[key] = torch.cat([neg, pos])
        elif isinstance(pos, Mapping):
            out[key] = _cat_kwargs(neg, pos)
        else:
            out[key] = pos
    return out


def _unpaired(positive: Mapping, negative: Mapping, prefix: str = "") -> tuple[list, list, list]:
    """(conditioning tensors without a negative counterpart, negatives without a positive, shared values — not
    tensors, or :data:`POSITION_IDS` — that differ between the halves) as key paths, recursively."""
    missing, extra, differ = [], [], []
    for key, pos in positive.items():
        path = f"{prefix}{key}"
        if key in POSITION_IDS:
            if key in negative and not _same(negative[key], pos):
                differ.append(path)
        elif isinstance(pos, Mapping):
            neg = negative.get(key, {})
            if not isinstance(neg, Mapping):
                differ.append(path)
                continue
            m, e, d = _unpaired(pos, neg, f"{path}.")
            missing, extra, differ = missing + m, extra + e, differ + d
        elif isinstance(pos, torch.Tensor):
            if key not in negative:
                missing.append(path)
        elif key in negative and not same_value(negative[key], pos):
            differ.append(path)
    extra += [f"{prefix}{key}" for key in negative if key not in positive]
    return missing, extra, differ


def _without_negative(positive: Mapping, negative: Mapping, prefix: str = "") -> list:
    """The key paths of the conditioning tensors in ``positive`` that ``negative`` has no counterpart for, recursively:
    keys and types only (it reads no tensor, so a per-call check costs no host sync)."""
    out = []
    for key, pos in positive.items():
        if key in POSITION_IDS:
            continue
        if isinstance(pos, Mapping):
            neg = negative.get(key)
            out += _without_negative(pos, neg if isinstance(neg, Mapping) else {}, f"{prefix}{key}.")
        elif isinstance(pos, torch.Tensor) and key not in negative:
            out.append(f"{prefix}{key}")
    return out


def _snapshot(value):
    """``value`` with every tensor cloned, recursively (autograd kept: clone, not detach)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, Mapping):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


def _has_tensor(value) -> bool:
    """Whether ``value`` holds a conditioning tensor (position ids are none)."""
    if isinstance(value, Mapping):
        return any(_has_tensor(v) for k, v in value.items() if k not in POSITION_IDS)
    return isinstance(value, torch.Tensor)


def _expand_batch(value, batch: int, name: str = "model_kwargs"):
    """Batch-1 tensors (one prompt's embeddings) expanded to the latent batch, recursively; a tensor of another
    batch than 1 or the latent batch's is refused by name (before the network is called). :data:`POSITION_IDS` have
    no batch: they are passed as they are."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        if value.shape[0] == 1 and batch > 1:
            return value.expand(batch, *value.shape[1:])
        if value.shape[0] != batch:
            raise InvalidInput(f"{name} has batch {value.shape[0]} (shape {tuple(value.shape)}), but the latents have "
                               f"batch {batch}: conditioning must have one row per latent, or one row for all")
        return value
    if isinstance(value, Mapping):
        return {k: v if k in POSITION_IDS else _expand_batch(v, batch, f"{name}[{k!r}]") for k, v in value.items()}
    return value


# diffusers transformers whose forward multiplies the timestep by 1000 (their pipelines pass t / 1000, flow time in
# [0, 1]): they take timestep_scale=1/1000 by default. SD3's, HiDream's, Sana's and the UNets take t as it is.
THOUSANDTHS_TIME = frozenset({"FluxTransformer2DModel", "Flux2Transformer2DModel", "Flux3Transformer2DModel",
                              "ChromaTransformer2DModel", "QwenImageTransformer2DModel",
                              "QwenImage21Transformer2DModel", "LongCatImageTransformer2DModel",
                              "OvisImageTransformer2DModel", "AuraFlowTransformer2DModel"})


def default_timestep_scale(model) -> float:
    """The time input's scale a network takes: 1/1000 for a class (or subclass) of :data:`THOUSANDTHS_TIME` — its
    forward multiplies the timestep by 1000, so it takes the flow time t where other flow models take t·1000 —,
    else 1.
    A ``torch.compile``-d network is read by the class it wraps."""
    classes = type(getattr(model, "_orig_mod", model)).__mro__
    return 1e-3 if any(c.__name__ in THOUSANDTHS_TIME for c in classes) else 1.0


def _network_config(model, key: str):
    """A field of a diffusers network's config (``model.config``: a FrozenDict, or an object with attributes); None
    where the network has no config or its config no such field."""
    config = getattr(model, "config", None)
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def _check_embeds(model, prompt_embeds, negative_prompt_embeds, dtype) -> None:
    """Prompt embeddings as the network takes them, checked before any call: torch tensors of a floating dtype — the
    network's own, where it has one (a pipeline encodes them in its text encoder's) —, finite, and for a diffusers
    network (its config names its cross-attention width: ``cross_attention_dim``, or ``encoder_hid_dim`` where it
    projects them; a transformer's ``joint_attention_dim``: SD3, Flux, QwenImage, AuraFlow) [B, T, C] of that width;
    a negative of the prompt's shape but batch."""
    # a diffusers network's: the width its cross-attention (a transformer's text embedder) takes
    width = (_network_config(model, "encoder_hid_dim") or _network_config(model, "cross_attention_dim")
             or _network_config(model, "joint_attention_dim"))
    width = width if isinstance(width, int) and not isinstance(width, bool) else None
    for name, e in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
        if e is None:
            continue
        if not isinstance(e, torch.Tensor):
            raise InvalidType(f"{name} must be a torch tensor [batch, tokens, width], got {type(e).__name__}; pass "
                              "torch.as_tensor(...) of it (on the network's device, in its dtype)")
        if not e.is_floating_point() or (width is not None and e.ndim != 3):
            raise InvalidInput(f"{name} must be a floating-point tensor [batch, tokens, width], got a {e.dtype} "
                               f"tensor of shape {tuple(e.shape)}")
        if dtype is not None and e.dtype != dtype:
            raise InvalidInput(f"{name} is {e.dtype} but the network's weights are {dtype} (the network would refuse "
                               f"the mix); pass {name}.to({dtype}), as a pipeline encodes them in its text encoder's "
                               "dtype")
        if not bool(torch.isfinite(e).all()):
            raise InvalidInput(f"{name} holds NaN or infinite values; encode the prompt again")
        if width is not None and e.shape[-1] != width:
            raise InvalidInput(f"{name} are {e.shape[-1]} wide, but the network takes encoder_hidden_states {width} "
                               "wide (its config's cross-attention width): encode the prompts with this model's own "
                               "text encoder")
    if prompt_embeds is not None and negative_prompt_embeds is not None \
            and prompt_embeds.shape[1:] != negative_prompt_embeds.shape[1:]:
        raise InvalidInput(f"negative_prompt_embeds has shape {tuple(negative_prompt_embeds.shape)} and prompt_embeds "
                           f"{tuple(prompt_embeds.shape)}: the two halves of the guided batch need the same tokens and "
                           "width (pad both to the text encoder's max length, as pipelines do)")


# the added_cond_kwargs keys a UNet's addition embedding reads, by its config's addition_embed_type (diffusers'
# UNet2DConditionModel.get_aug_embed raises at the call without them)
ADDED_COND_KEYS = {"text_time": ("text_embeds", "time_ids"), "text_image": ("image_embeds",),
                   "image": ("image_embeds",), "image_hint": ("image_embeds", "hint")}


# a scheduler config's variance_type for a network that predicts its variance too (2× the sample's channels)
LEARNED_VARIANCE = ("learned", "learned_range")


def predicts_variance(model, variance_type=None) -> bool:
    """Whether a network's output may hold a learned variance after its prediction (2× the sample's channels), as
    diffusers reads it: the scheduler config's ``variance_type`` is learned (DDPMScheduler / UnCLIPScheduler split it
    off in their step, DeepFloyd IF's pipeline before guidance), or the network's config has ``out_channels`` twice
    its ``in_channels`` (DiT's pipeline splits it off then)."""
    out, inp = _network_config(model, "out_channels"), _network_config(model, "in_channels")
    doubled = isinstance(out, int) and isinstance(inp, int) and out == 2 * inp
    return variance_type in LEARNED_VARIANCE or doubled


class DiffusersModel:
    """``model(x_t, time) -> output`` in native coordinates: a diffusers network with its conditioning and CFG.

    Classifier-free guidance as diffusers' pipelines do it (one batched call on [uncond, cond], then
    ``uncond + s·(cond − uncond)``) whenever ``guidance_scale > 1``. A network that predicts its variance too
    (:func:`predicts_variance` of it and the scheduler config's ``variance_type``) gives the first half of its
    channels, its prediction, as diffusers' ``torch.split(model_output, sample.shape[1], dim=1)`` does (k-diffusion's
    ``OpenAIDenoiser(has_learned_sigmas=True)`` too); the variance half is dropped, as no sampler here reads it.
    """

    def __init__(self, model, prompt_embeds=None, negative_prompt_embeds=None, guidance_scale: float = 1.0,
                 model_kwargs: Mapping | None = None, negative_model_kwargs: Mapping | None = None,
                 timestep_scale: float | None = None, variance_type: str | None = None):
        self.model = model
        self.learned_variance = predicts_variance(model, variance_type)
        self.guidance_scale = real("guidance_scale", guidance_scale,
                                   what=" (classifier-free guidance: > 1 guides, 1 runs the conditional model "
                                        "alone); pass a float such as 7.5")
        self.cfg = self.guidance_scale > 1.0
        if self.cfg and negative_prompt_embeds is None and prompt_embeds is not None:
            raise InvalidInput("guidance_scale > 1 needs negative_prompt_embeds (the unconditional embeddings, "
                             "e.g. of the empty prompt)")
        if (not self.cfg and negative_prompt_embeds is not None and prompt_embeds is None
                and "encoder_hidden_states" not in (model_kwargs or {})):
            # unguided the negative is not read, and the network would be called without encoder_hidden_states
            raise InvalidInput("negative_prompt_embeds without prompt_embeds: with guidance_scale <= 1 only the "
                               "conditional embeddings are read, and there are none; pass prompt_embeds (and, "
                               "for guidance, guidance_scale > 1)")
        for name, value in (("model_kwargs", model_kwargs), ("negative_model_kwargs", negative_model_kwargs)):
            if value is not None and not isinstance(value, Mapping):
                raise InvalidType(f"{name} must be a dict of the model's keyword arguments, got {value!r}")
        for name, value, embeds in (("model_kwargs", model_kwargs, "prompt_embeds"),
                                    ("negative_model_kwargs", negative_model_kwargs, "negative_prompt_embeds")):
            if value and "encoder_hidden_states" in value and (prompt_embeds if embeds == "prompt_embeds"
                                                               else negative_prompt_embeds) is not None:
                raise InvalidInput(f"{name} holds encoder_hidden_states and {embeds} is given too, which would "
                                   f"replace it: pass the embeddings once, as {embeds}")
        dtype = getattr(model, "dtype", None)
        _check_embeds(model, prompt_embeds, negative_prompt_embeds,
                      dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None)
        added = _network_config(model, "addition_embed_type")
        if added in ("text_time", "text", "text_image", "image", "image_hint") and "added_cond_kwargs" not in (
                model_kwargs or {}):
            raise InvalidInput(f"this network's config sets addition_embed_type={added!r} (SDXL-style): every call "
                               "needs added_cond_kwargs (SDXL: text_embeds and time_ids); pass model_kwargs="
                               "{'added_cond_kwargs': {...}} and, guided, negative_model_kwargs with the "
                               "unconditional ones")
        given = (model_kwargs or {}).get("added_cond_kwargs")
        lacking = [k for k in ADDED_COND_KEYS.get(added, ()) if not (isinstance(given, Mapping) and k in given)]
        if lacking:
            raise InvalidInput(f"this network's config sets addition_embed_type={added!r}, and model_kwargs has "
                               f"added_cond_kwargs without {', '.join(lacking)}, which the network reads at every "
                               f"call; pass model_kwargs={{'added_cond_kwargs': {{'{lacking[0]}': ..., ...}}}} as "
                               "the pipeline computes them")
        cond_dim = _network_config(model, "time_cond_proj_dim")
        if cond_dim is not None and "timestep_cond" not in (model_kwargs or {}):
            raise InvalidInput(f"this network's config sets time_cond_proj_dim={cond_dim!r} (a guidance-distilled LCM "
                               "UNet): without timestep_cond it skips that conditioning and predicts another x0; pass "
                               "model_kwargs={'timestep_cond': <[batch, time_cond_proj_dim] embedding>} as the "
                               "pipeline computes it (LatentConsistencyModelPipeline.get_guidance_scale_embedding of "
                               "guidance_scale - 1) and, guided, the same in negative_model_kwargs")
        self.cond = dict(model_kwargs or {})
        self.uncond = dict(negative_model_kwargs or {})
        if prompt_embeds is not None:
            self.cond["encoder_hidden_states"] = prompt_embeds
        if negative_prompt_embeds is not None:
            self.uncond["encoder_hidden_states"] = negative_prompt_embeds
        if self.cfg:
            self._check_pairs()
        # The conditioning as it is now: guided, the joined [uncond; cond] is a copy (made once per batch size), so
        # an embedding changed in place later would be read unguided (a view) and not guided. One copy here makes
        # both read the build's values, at no cost per call.
        self.cond, self.uncond = _snapshot(self.cond), _snapshot(self.uncond)
        self.timestep_scale = (default_timestep_scale(model) if timestep_scale is None
                               else positive("timestep_scale", timestep_scale))
        # a torch.compile-d network's forward is (*args, **kwargs): its names are the module's it wraps
        network = getattr(model, "_orig_mod", model)
        forward = network.forward if hasattr(network, "forward") else network
        params = inspect.signature(forward).parameters
        self.input_name = "sample" if "sample" in params else "hidden_states" if "hidden_states" in params else None
        dtype = getattr(model, "dtype", None)
        self.dtype = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None
        self._conditioning: dict[int, dict] = {}  # batch size -> the model's keyword arguments (built once)
        # Guided, the network sees every item twice; a caller may pass the time input already repeated ([2·batch],
        # as samplers.core.conversion.Denoiser does from its prepared grid), which saves a concatenation per call.
        self.time_copies = 2 if self.cfg else 1

    def _check_pairs(self) -> None:
        """Guided, every conditioning tensor has its unconditional counterpart (before any model call): one left
        out would be reused for the uncond half, and guidance would not act on it."""
        gs = f"guidance_scale={self.guidance_scale:g} > 1"
        if not _has_tensor(self.cond):
            raise InvalidInput(f"{gs} with no conditioning (no prompt_embeds, no tensor in model_kwargs): both halves "
                               "of the guided batch would be the same, guidance would do nothing at twice the cost. "
                               "Pass prompt_embeds and negative_prompt_embeds, or guidance_scale=1")
        missing, extra, differ = _unpaired(self.cond, self.uncond)
        if missing:
            first = missing[0].split(".")[0]
            raise InvalidInput(f"{gs} needs the unconditional value of {', '.join(missing)} (the uncond half of the "
                               "batch would reuse the conditional one, and guidance would not act on it): pass "
                               f"negative_model_kwargs={{'{first}': <its unconditional value>}} (the same tensor "
                               "to share it on purpose; negative_prompt_embeds for encoder_hidden_states), or "
                               "guidance_scale=1")
        if extra:
            raise InvalidInput(f"negative_model_kwargs (or negative_prompt_embeds) holds {', '.join(extra)}, which "
                               "the conditional half does not have, so it would be dropped: pass the conditional "
                               "value in model_kwargs (prompt_embeds for encoder_hidden_states), or leave it out")
        if differ:
            raise InvalidInput(f"negative_model_kwargs gives {', '.join(differ)} a value other than model_kwargs' "
                               "one, but a value that is not a tensor, or position ids (txt_ids, img_ids), is shared "
                               "by both halves of the one guided call: pass the same value in both, or leave it out "
                               "of negative_model_kwargs")

    def _check_call_pairs(self, extra_args: Mapping) -> None:
        """Guided, a conditioning tensor passed per call (``extra_args``) needs its unconditional counterpart from
        the build (``negative_model_kwargs``), as one passed at build does (:meth:`_check_pairs`): without it the
        uncond half would reuse the conditional value, and guidance would not act on it."""
        missing = _without_negative(extra_args, self.uncond)
        if missing:
            first = missing[0].split(".")[0]
            raise InvalidInput(f"guidance_scale={self.guidance_scale:g} > 1 and this call passes {', '.join(missing)} "
                               "with no unconditional value (the uncond half of the batch would reuse the "
                               "conditional one, and guidance would not act on it): build the denoiser with "
                               f"negative_model_kwargs={{'{first}': <its unconditional value>}} (the same tensor to "
                               "share it on purpose), or pass it in model_kwargs rather than per call")

    def _kwargs(self, batch: int, extra_args: dict) -> dict:
        """The conditioning for a batch: [uncond; cond] when guided. Built once per batch size when the call adds no
        keyword arguments of its own (the usual case), so a model call costs no concatenations."""
        if not extra_args and batch in self._conditioning:
            return self._conditioning[batch]
        if self.cfg and extra_args:
            self._check_call_pairs(extra_args)
        kwargs = _expand_batch({**self.cond, **extra_args}, batch, "the conditioning")
        if self.cfg:
            kwargs = _cat_kwargs(_expand_batch(self.uncond, batch, "the unconditional conditioning"), kwargs)
        if not extra_args:
            self._conditioning[batch] = kwargs
        return kwargs

    def __call__(self, x_t: torch.Tensor, time: torch.Tensor, **extra_args) -> torch.Tensor:
        batch = x_t.shape[0]
        repeated = self.cfg and time.shape == (2 * batch,)
        if not repeated and time.shape != (batch,):
            time = time.reshape(-1).expand(batch)
        if self.timestep_scale != 1.0:
            time = time * self.timestep_scale
        x_in = x_t if self.dtype is None else x_t.to(self.dtype)
        kwargs = self._kwargs(batch, extra_args)
        if self.cfg:
            x_in = torch.cat([x_in, x_in])
            if not repeated:
                time = torch.cat([time, time])
        if self.input_name is None:
            out = self.model(x_in, time, **kwargs)
        else:
            out = self.model(**{self.input_name: x_in}, timestep=time, **kwargs, return_dict=False)
        out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
        if self.learned_variance and out.ndim > 1 and out.shape[1] == 2 * x_t.shape[1]:
            out = out[:, : x_t.shape[1]]  # the prediction; the learned variance after it is not read
        out = out.to(x_t.dtype)
        if self.cfg:
            uncond, cond = out.chunk(2)
            out = torch.lerp(uncond, cond, self.guidance_scale)  # uncond + s·(cond − uncond) in one op
        return out


def denoiser_from_diffusers(model, scheduler_config: Any, prompt_embeds=None, negative_prompt_embeds=None,
                            guidance_scale: float = 1.0, *, model_kwargs: Mapping | None = None,
                            negative_model_kwargs: Mapping | None = None, mu: float | None = None,
                            timestep_scale: float | None = None) -> Denoiser:
    """A diffusers UNet / transformer as the registry denoiser ``D(x, σ, **extra_args) -> x0``.

    Args:
        model: a diffusers ``UNet2DConditionModel`` (called ``model(sample=x_t, timestep=t,
            encoder_hidden_states=..., return_dict=False)``), a transformer taking ``hidden_states`` (SD3), or
            any ``model(x_t, t, **kwargs)``.
        scheduler_config: the pipeline's scheduler config (``pipe.scheduler.config``), read by
            :func:`native_from_config` for the noise schedule and prediction type. One that sets
            ``clip_sample`` or ``thresholding`` (which the scheduler applies to x0 in its step, and a sampler on
            this denoiser would not) is refused, naming the flag: pass it without them or with them False.
        prompt_embeds, negative_prompt_embeds: text embeddings (batch 1 or the latent batch), passed as
            ``encoder_hidden_states``.
        guidance_scale: classifier-free guidance scale; > 1 evaluates [uncond, cond] in one batch.
        model_kwargs, negative_model_kwargs: more conditioning for the cond / uncond halves (e.g. SD3's
            ``pooled_projections``, SDXL's ``added_cond_kwargs``).
        mu: Flux-style dynamic shift (only changes ``D.schedule.shift``, which schedules built from it use).
        timestep_scale: multiplies the time input. Left out, it is the network's own (:func:`default_timestep_scale`):
            1/1000 for the transformers whose forward multiplies the timestep by 1000 (Flux, Flux 2, Chroma,
            QwenImage, LongCat-Image, Ovis-Image, AuraFlow: :data:`THOUSANDTHS_TIME`), 1 for every other network.
            A value passed is used as it is.

    Returns:
        A :class:`samplers.core.conversion.Denoiser`; ``D.schedule`` is the native schedule to build sigmas from.
    """
    cfg = model_config(named_config(scheduler_config))
    check_model_flags(cfg, mu)
    schedule, prediction = native_from_config(cfg, mu=mu)  # first: a class it does not read is refused by name
    check_x0_flags(cfg)
    native = DiffusersModel(model, prompt_embeds, negative_prompt_embeds, guidance_scale, model_kwargs,
                            negative_model_kwargs, timestep_scale, cfg.get("variance_type"))
    return to_denoiser(native, prediction, schedule, sigma_data_from_config(cfg))

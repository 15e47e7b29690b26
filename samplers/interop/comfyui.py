"""Any registry sampler as a ComfyUI custom sampler (a ``SAMPLER`` for SamplerCustom / SamplerCustomAdvanced).

The custom node users drop into ``ComfyUI/custom_nodes/`` (docs/comfyui.md)::

    from samplers.interop.comfyui import node_class_mappings

    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_class_mappings()

ComfyUI runs a sampler through ``comfy.samplers.KSAMPLER(sampler_function, extra_options, inpaint_options)``;
its ``sample()`` scales the noise with the model's ``noise_scaling`` and calls::

    sampler_function(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback, disable=disable_pbar,
                     **extra_options)

where ``model_k(x, sigma[B], denoise_mask, model_options={}, seed=None)`` returns the denoised image,
``extra_args`` is ``{"model_options", "seed", "denoise_mask"}`` and ``k_callback(d)`` hands ``d["i"]``,
``d["denoised"]`` and ``d["x"]`` to ComfyUI's preview. :func:`ksampler_function` builds such a function for any
name :mod:`samplers.core.names` resolves (``"dpmpp_2m"``, ``"comfyui:dpmpp_2m_sde_gpu"``, ``"DPM++ 2M SDE"``):

- ``extra_args`` reach the model untouched; the sampler's noise is seeded by ``extra_args["seed"]`` (ComfyUI's
  seed, :func:`comfy_seed`), as ComfyUI's own samplers seed theirs: this library's per-item seeded noise by default,
  and with a ``noise_sampler`` kind such as ``"brownian_tree"`` (the ComfyUI labels of the SDE samplers imply it)
  that kind;
- ComfyUI's eps / v / x0 / EDM models run in k-diffusion's coordinates x = x0 + σ·n, which every registry sampler
  uses; its flow models (``model_sampling`` a ``CONST``: SD3, Flux, ...) in x = (1 − t)·x0 + t·n with σ = t. For
  those the function runs the sampler in σ = t/(1 − t), x/(1 − t) (:func:`samplers.core.conversion.to_denoiser`
  with ``"x0"`` on :class:`~samplers.core.native.RectifiedFlow`; t = 1 is σ = inf, stepped exactly) and hands
  ComfyUI back x in its own coordinates, in the callback too;
- a ComfyUI name (``"comfyui:dpmpp_2m"``, ``"ipndm_v"``) runs on flow models what ComfyUI's function computes there
  (:mod:`samplers.core.labels`): the plain rule on ComfyUI's raw (x_t, σ = t) (``COMFYUI_FLOW_RAW``: the registry
  sampler on ComfyUI's model and sigmas unchanged), half-log-SNR samplers in σ = t/(1 − t) after ComfyUI's
  first-sigma offset (``COMFYUI_FLOW_SNR``), a switched rule (``COMFYUI_FLOW``: ``euler_ancestral`` →
  ``euler_ancestral_rf``), or a refusal where this library lacks ComfyUI's rule (``COMFYUI_FLOW_REFUSED``);
  registry names run the registry's rule on every model;
- options come from ``KSAMPLER(..., extra_options=...)`` (the node's JSON field) or from this function's keyword
  arguments, and are checked against the sampler before any model call; an option given in both with different
  values is refused (neither silently wins), and so is a ``seed`` option other than ComfyUI's ``extra_args["seed"]``
  (the node refuses ``seed`` in its JSON: the sampling node's noise seed is the seed).

The calling convention is tested with a stand-in for ComfyUI's KSAMPLER written from its source
(tests/test_comfyui.py); ComfyUI itself is not installed in the tests.
"""
from __future__ import annotations

import difflib
import json
import math
from typing import Callable

import torch

from ..core import labels, names
from ..core import noise as noise_mod
from ..core.conversion import state_dtype, to_denoiser
from ..core.errors import InvalidInput, InvalidOption, InvalidType, Unavailable
from ..core.files import DuplicateKey, unique_keys
from ..core.native import RectifiedFlow
from ..core.registry import SAMPLERS, available
from ..core.run import check_callback, churn_beyond, refuse_unread_noise, to_result_dtype
from ..core.brownian import BrownianTreeNoiseSampler, check_tree_range
from ..core.seeds import SEED_LIMIT, resolve_seeds
from ..core.validate import check_options, integer, same_value
from .kdiffusion import _KCallback

COORDINATES = ("auto", "ve", "flow")


def is_flow_model(model) -> bool:
    """Whether ComfyUI's ``model_k`` is a flow model: its ``model_sampling`` (reached as ComfyUI's own samplers reach
    it, ``model.inner_model.model_patcher.get_model_object("model_sampling")``) derives from ComfyUI's ``CONST``.
    A model without that chain is taken to be in k-diffusion's coordinates."""
    sampling = _model_sampling(model)
    return sampling is not None and any(cls.__name__ == "CONST" for cls in type(sampling).__mro__)


def ksampler_function(name: str, coordinates: str = "auto", **options) -> Callable:
    """The ``sampler_function`` ComfyUI's ``KSAMPLER`` calls, running the registry sampler ``name``.

    Args:
        name: anything :mod:`samplers.core.names` resolves (a label's options are merged with ``options``; a label
            that names its schedule is refused: in ComfyUI the SIGMAS input is the schedule).
        coordinates: ``"auto"`` (flow models by :func:`is_flow_model`), ``"ve"`` or ``"flow"``.
        **options: sampler options (``eta``, ``s_noise``, ``noise_sampler="brownian_tree"``, ...); options given
            to ``KSAMPLER(..., extra_options=...)`` are added at call time, and one given there with another value
            than here is refused. ``seed`` seeds the noise only where the call's ``extra_args`` carry no seed (a
            call outside ComfyUI); ComfyUI always passes its sampling node's noise seed as ``extra_args["seed"]``,
            and a different ``seed`` option is refused rather than silently replacing it.
    """
    if coordinates not in COORDINATES:
        raise InvalidOption(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    label = names.resolve(name)
    if label.schedule is not None and label.schedule_is_explicit:
        raise InvalidOption(f"{name!r} names the {label.schedule!r} schedule, but in ComfyUI the schedule is the "
                            f"SIGMAS input: use {label.sampler!r} with {_scheduler_node(label.schedule)}")
    spec = SAMPLERS.get(label.sampler)
    merged = names.merge_options(label, options)
    check_options(spec, merged)
    if spec.name.startswith("torchdiffeq."):  # its nested options too, as the node builds its SAMPLER
        from . import torchdiffeq_adapter

        torchdiffeq_adapter.check_options(spec.name.split(".", 1)[1], merged.get("options"), None)
    if merged.get("restart") == "a1111":
        raise InvalidOption(f"{name!r} runs restart='a1111', A1111's Restart, which rebuilds its own schedule from "
                            "the one it is given (from 20 steps on, a shorter Karras one), but in ComfyUI the schedule "
                            "is the SIGMAS input; use 'restart' (the registry's restart sampler on the SIGMAS, with "
                            "its default restart list or your own)")
    # A ComfyUI name that ComfyUI runs with another rule on flow models: that rule there, or a refusal.
    comfy_key = label.label if label.source == "comfyui" else None
    flow_spec = SAMPLERS.get(labels.COMFYUI_FLOW[comfy_key]) if comfy_key in labels.COMFYUI_FLOW else spec
    flow_refused = labels.COMFYUI_FLOW_REFUSED.get(comfy_key)
    if flow_refused is not None and coordinates == "flow":
        raise Unavailable(f"ComfyUI sampler {name!r} is not available on flow models: {flow_refused}")
    if flow_spec is not spec and coordinates == "flow":  # (on "auto", at the call, once the model says which)
        check_options(flow_spec, _for_flow_rule(flow_spec, names.merge_options(label, options), options))
    noise_mod.check_option(spec, merged)
    own = {k for k, v in options.items() if v is not None}  # the caller's own (a label's are the label's)
    refuse_unread_noise(spec, merged, own, label.label)

    def sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, **extra_options):
        # before it is wrapped (a wrapper is callable, so the registry's own check would pass it): a callback that is
        # not callable is refused here, before any model call, not by a bare TypeError after the first step's call
        check_callback(callback)
        extra_args = {} if extra_args is None else extra_args
        for key, value in extra_options.items():  # KSAMPLER's extra_options would silently replace the built ones
            if key in options and not same_value(options[key], value):
                raise InvalidOption(f"{key}={value!r} is given at call time (KSAMPLER's extra_options), but the "
                                    f"sampler was built with {key}={options[key]!r} (ksampler_function's options, "
                                    f"the node's JSON): one would silently replace the other; give {key} in one "
                                    "place, or the same value in both")
        merged = names.merge_options(label, {**options, **extra_options})  # the registry checks them at the run
        noise_mod.check_option(spec, merged)  # before a seed is added beside it: the message names the noise_sampler
        if extra_options:  # KSAMPLER's extra_options are the caller's too: one the run never reads is refused
            refuse_unread_noise(spec, merged, own | {k for k, v in extra_options.items() if v is not None},
                                label.label)
        if isinstance(sigmas, torch.Tensor) and sigmas.ndim != 1:  # a [1, N] SIGMAS is not one σ (no step)
            raise InvalidInput(f"sigmas must be 1-D (ComfyUI's SIGMAS: one σ per step boundary), got shape "
                               f"{tuple(sigmas.shape)}; pass sigmas.flatten() where it holds one schedule")
        if "seed" in merged and extra_args.get("seed") is not None:
            if not same_value(merged["seed"], extra_args["seed"]):
                raise InvalidOption(f"seed={merged['seed']!r} is given as a sampler option, but ComfyUI passes "
                                    f"extra_args['seed'] = {extra_args['seed']!r} (the sampling node's noise_seed), "
                                    "which the option would silently replace (changing noise_seed would change "
                                    "nothing): set the sampling node's noise_seed instead, and leave seed out of the "
                                    "options")
            del merged["seed"]  # the same seed: ComfyUI's, read as ComfyUI's below
        if "seed" in spec.options and "seed" not in merged and not callable(merged.get("noise_sampler")):
            merged["seed"] = comfy_seed(extra_args.get("seed"), x.shape[0], where="extra_args['seed']")
        flow = is_flow_model(model) if coordinates == "auto" else coordinates == "flow"
        if flow:  # the SIGMAS as given, for every name, before a name's rule rewrites them or the model sees one
            _check_flow_times(sigmas)
        if flow and flow_spec is not spec:
            merged = _for_flow_rule(flow_spec, merged, {**options, **extra_options})
        if len(sigmas) <= 1:
            # one σ (SplitSigmas at step 0 or at the last step) is no step: ComfyUI's samplers return their input,
            # after their options are taken (sample_euler(..., bogus=1) is a TypeError there too)
            check_options(flow_spec if flow else spec, merged)
            return x
        noise_scale = float(getattr(_model_sampling(model), "noise_scale", 1.0))
        if noise_scale != 1.0 and _draws_scaled_noise(comfy_key, flow_spec, merged, flow):
            raise Unavailable(_noise_scale_refusal(name, comfy_key, noise_scale))
        # (at eta = 0 τ is 0 everywhere: the interval would not be read)
        wants_interval = (comfy_key is not None and "sde_interval" in flow_spec.options
                          and "sde_interval" not in merged and "tau_func" not in merged
                          and merged.get("eta", flow_spec.options.get("eta")) != 0)
        if not flow and wants_interval and hasattr(_model_sampling(model), "percent_to_sigma"):
            # ComfyUI's sa_solver noises between the model's percent_to_sigma(0.2) and (0.8) on every model (the
            # registry's default is SD 1.x's: an EDM model's window is elsewhere)
            sampling = _model_sampling(model)
            merged["sde_interval"] = tuple(_percent_to_sigma(sampling, p) for p in (0.2, 0.8))
        if not flow or comfy_key in labels.COMFYUI_FLOW_RAW:  # ComfyUI's plain rule on its own (x, σ)
            beyond = churn_beyond(spec, merged, sigmas, 1.0, "flow time t") if flow else None
            if beyond is not None:  # before any model call: a churned t above 1 has no flow state
                raise InvalidOption(beyond)
            if callback is not None and _reports_each_step(spec):  # k-diffusion's contract, which ComfyUI's keep
                callback = _KCallback(model, callback, torch.as_tensor(sigmas))
                model = callback.model
            out = spec.fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **merged)
            written = labels.COMFYUI_FLOW_FINAL_WRITE.get(comfy_key) if flow else None
            if written is not None and float(sigmas[-1]) == 0:  # (a host read of the schedule, before no model call)
                out = _inverse_noise_scaling(out, written, sigmas)
            return out
        if flow_refused is not None:
            raise Unavailable(f"ComfyUI sampler {name!r} is not available on flow models: {flow_refused}")
        if comfy_key in labels.COMFYUI_FLOW_SNR:
            sampling = _model_sampling(model)
            given, sigmas = sigmas, _offset_first_sigma(sigmas, sampling)
            if wants_interval:
                merged["sde_interval"] = tuple(_ve_sigma(_percent_to_sigma(sampling, p)) for p in (0.2, 0.8))
            kind = merged.get("noise_sampler")
            if isinstance(kind, str) and kind.strip().lower().startswith("brownian_tree"):
                merged = _tree_in_flow_time(merged, x, given, sigmas, kind.strip().lower())
        return _in_flow_coordinates(flow_spec, model, x, sigmas, extra_args, callback, disable, merged)

    sampler_function.__name__ = f"sample_{spec.name}"
    sampler_function.__doc__ = f"{spec.name} ({spec.ref}) for ComfyUI's KSAMPLER."
    return sampler_function


class CONST:
    """ComfyUI's model sampling of flow models, by name (:func:`is_flow_model` reads the class names of a model's
    ``model_sampling``): :class:`FlowModel`'s, with ComfyUI's ``ModelSamplingDiscreteFlow.percent_to_sigma``."""

    def __init__(self, shift: float = 1.0):
        self.shift = float(shift)
        self.noise_scale = 1.0

    def percent_to_sigma(self, percent: float) -> float:
        """The shifted time at 1 − percent (1 at percent ≤ 0, 0 at percent ≥ 1), as ComfyUI's."""
        if percent <= 0:
            return 1.0
        if percent >= 1:
            return 0.0
        t = 1.0 - percent
        return self.shift * t / (1 + (self.shift - 1) * t)


class FlowModel:
    """A denoiser ``D(x, σ)`` in this library's coordinates seen as ComfyUI's ``model_k`` on a flow model (a ``CONST``
    model sampling: x0 from (x_t, t), x_t = (1 − t)·x0 + t·n, t = σ/(1 + σ), t = 1 the unit noise itself), so that
    :func:`ksampler_function` runs ComfyUI's own flow-model rules on a model outside ComfyUI (the pipeline's flow
    model under a ``comfyui:`` name: :func:`run_on_flow_model`). ``shift``: the model's time shift (ComfyUI's
    ``ModelSamplingDiscreteFlow`` shift, this library's ``RectifiedFlow.shift``), which places ComfyUI's
    ``percent_to_sigma`` — where its half-log-SNR samplers start from t = 1 and sa_solver's SDE window lies."""

    def __init__(self, denoiser: Callable, shift: float = 1.0):
        self.denoiser = denoiser
        self.sampling = CONST(shift)
        self.inner_model = self  # ComfyUI's chain: model_k.inner_model.model_patcher.get_model_object(...)
        self.model_patcher = self

    def get_model_object(self, name: str):
        if name != "model_sampling":
            raise AttributeError(name)
        return self.sampling

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **extra_args) -> torch.Tensor:
        # t in [0, 1] (no host read here: a churn above t = 1 is refused before the run, samplers.core.run.churn_beyond)
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        top = t >= 1
        keep = torch.where(top, torch.ones_like(t), 1 - t)  # x_t = (1 − t)·x; the noise itself at t = 1
        sigma = torch.where(top, torch.full_like(t, math.inf), t / keep)
        view = (-1,) + (1,) * (x_t.ndim - 1)
        return self.denoiser(x_t / keep.reshape(view).to(x_t.dtype), sigma, **extra_args)


def _inverse_noise_scaling(x: torch.Tensor, written: float, sigmas) -> torch.Tensor:
    """ComfyUI's KSAMPLER ending on a flow model whose sampler wrote ``written`` over the final 0 of its SIGMAS
    (:data:`samplers.core.labels.COMFYUI_FLOW_FINAL_WRITE`): CONST's ``inverse_noise_scaling(sigmas[-1], x)``, x / (1 −
    sigmas[-1]), with that σ in the SIGMAS' dtype and shaped as ComfyUI's view of it (so the same type promotion)."""
    dtype = sigmas.dtype if isinstance(sigmas, torch.Tensor) else torch.get_default_dtype()
    sigma = torch.tensor(written, dtype=dtype, device=x.device).view((1,) * (x.ndim - 1))
    return x / (1.0 - sigma)


def flow_times(sigmas) -> list[float]:
    """ComfyUI's flow times t = σ/(1 + σ) (1 at σ = inf) of a run's σ, as :func:`run_on_flow_model` hands them to
    ComfyUI's rule (a caller checking that run's grid reads the same values)."""
    return [_flow_t(s) for s in torch.as_tensor(sigmas).tolist()]


def run_on_flow_model(name: str, denoiser: Callable, x: torch.Tensor, sigmas, shift: float = 1.0,
                      disable=None, callback=None, **options) -> torch.Tensor:
    """ComfyUI's own rule for the ComfyUI name ``name`` on a flow model (:func:`ksampler_function` with
    ``coordinates="flow"``), run on ``denoiser`` — this library's ``D(x, σ)`` of a :class:`RectifiedFlow` model —
    from ``x`` at ``sigmas[0]`` over ``sigmas``, both in this library's coordinates (σ, x = x0 + σ·n; the unit noise
    at σ = inf), as every registry run is: the σ become ComfyUI's flow times t = σ/(1 + σ) (1 at σ = inf) and x its
    x_t, and the result comes back in this library's coordinates. ``options`` are the caller's (the seed: a list
    of per-item seeds, or one as ComfyUI's item k from seed + k). ``callback`` gets ComfyUI's dict per step, in its
    coordinates: x_t and the flow times t."""
    check_callback(callback)  # before anything is built (the sampler function checks it again, before any model call)
    t = flow_times(sigmas)
    fn = ksampler_function(name, coordinates="flow", **options)
    x_t = x if t[0] >= 1 else x * (1 - t[0])
    out = fn(FlowModel(denoiser, shift), x_t, torch.tensor(t, dtype=torch.float64), extra_args={}, callback=callback,
             disable=disable)
    # in x's dtype, as every registry run returns it: the float64 flow times promote the ending of the rules that
    # write over the final 0 (uni_pc's x / (1 − t), _inverse_noise_scaling), where ComfyUI's float32 SIGMAS do not
    out = out if t[-1] == 0 else out / (1 - t[-1])
    return out.to(x.dtype) if out.dtype != x.dtype and x.is_floating_point() else out


# ComfyUI's largest batch (EmptyLatentImage's batch_size): seeds keep room for it, whatever the batch
COMFY_MAX_BATCH = 4096


def comfy_seed(seed, batch: int, where: str = "seed"):
    """ComfyUI's seed (0 to 2**64 − 1, its noise seed widget) as this library's: item k of a batch uses seed + k
    below 2**64, so a seed that leaves no room for ComfyUI's largest batch (the top 4096) is taken modulo
    2**64 − 4096; every other seed is used as it is, so image 0 gets ComfyUI's own numbers where the library
    reproduces them (its Brownian tree). The map does not depend on ``batch``, so image k is the same in any batch.
    None (no seed) stays None: the run then draws one from torch's generator. A negative seed, or one above
    2**64 − 1, is refused (ComfyUI has none); ``where`` names where it came from in the message (ComfyUI's
    ``extra_args['seed']``)."""
    if seed is None:
        return None
    try:  # an integer of any integral type; a string, a float or a bool is refused, not rounded or parsed
        seed = integer(f"ComfyUI's seed ({where})", seed)
    except InvalidType as e:
        raise InvalidType(f"{e}; ComfyUI's seeds are integers 0 to 2**64 - 1 (its noise seed widget); pass an int "
                          "in extra_args['seed'] (the sampler node's noise_seed)") from None
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidInput(f"ComfyUI's seed ({where} = {seed}) is outside 0 to 2**64 - 1, the seeds of ComfyUI's "
                           "noise seed widget: pass a seed in that range in extra_args['seed'] (the sampler node's "
                           "noise_seed)")
    limit = SEED_LIMIT - COMFY_MAX_BATCH
    return seed % limit if seed >= limit else seed


def _reports_each_step(spec) -> bool:
    """Whether ``spec``'s sampler calls back once per step of its schedule after a model call at that step's σ, the
    report :class:`~samplers.interop.kdiffusion._KCallback` turns into k-diffusion's (and ComfyUI's): not
    ``dpm_fast``, which calls back with the state its call or step started from (per DPM-Solver step, as k-diffusion
    does, with ``final_denoise=False``: ``comfyui:dpm_fast``; per model call otherwise), ``dpm_adaptive`` (per step or
    attempt of its own), nor the torchdiffeq / torchsde adapters (per interval, from their solver's own calls); those
    keep their own report."""
    return spec.name not in ("dpm_fast", "dpm_adaptive") and not spec.name.startswith(("torchdiffeq.", "torchsde."))


def _reports_at_sigma(spec, options: dict) -> bool:
    """Whether ``spec``'s own report (one :func:`_reports_each_step` leaves alone) hands over a state that sits at the
    σ it reports, not the state after step ``i`` of the schedule: ``dpm_fast``'s (the state its call, or its step,
    started from) and ``dpm_adaptive``'s with ``through_schedule=False`` (the state after each attempt, at the σ the
    attempt reached; its ``i`` counts attempts, not schedule steps). Their final denoise's report, whose ``x`` is the
    result (the very ``denoised`` tensor), sits at the schedule's end, as every sampler's last state does."""
    if spec.name == "dpm_fast":
        return True
    return spec.name == "dpm_adaptive" and not options.get("through_schedule", spec.options["through_schedule"])


def _draws_scaled_noise(comfy_key: str | None, spec, options: dict, flow: bool) -> bool:
    """Whether the run draws fresh noise that ComfyUI would multiply by the model's ``model_sampling.noise_scale``:
    a ComfyUI name where its function reads it (:data:`labels.COMFYUI_NOISE_SCALED`, on a flow model
    :data:`labels.COMFYUI_NOISE_SCALED_ON_FLOW` too), a registry name (no ComfyUI function) where it is an ancestral
    / SDE sampler; in both only where η and s_noise (those ``spec`` takes) are not 0."""
    if comfy_key is not None:
        reads = comfy_key in labels.COMFYUI_NOISE_SCALED or (flow and comfy_key in labels.COMFYUI_NOISE_SCALED_ON_FLOW)
    else:
        reads = spec.kind != "ode"
    return reads and all(options.get(k, spec.options.get(k)) != 0 for k in ("eta", "s_noise") if k in spec.options)


def _noise_scale_refusal(name: str, comfy_key: str | None, noise_scale: float) -> str:
    """Why a run on a model whose ``model_sampling.noise_scale`` is not 1 is refused (:func:`_draws_scaled_noise`)."""
    head = f"the model's model_sampling.noise_scale is {noise_scale:g} (ComfyUI's video models): "
    if comfy_key is not None:
        return (head + f"ComfyUI's {comfy_key} multiplies its fresh noise by it, which this adapter does not "
                f"reproduce; use a sampler that draws no fresh noise there, or {comfy_key!r} in ComfyUI itself")
    return (head + f"ComfyUI's ancestral / SDE samplers multiply their fresh noise by it, and {name!r} (this "
            "library's rule) draws it unscaled, which this adapter does not reproduce; use a sampler that draws no "
            "fresh noise there, or a ComfyUI name (comfyui:...), whose function runs as ComfyUI's does")


def _for_flow_rule(flow_spec, merged: dict, given: dict) -> dict:
    """The options a ComfyUI name's flow-model rule (``labels.COMFYUI_FLOW``, ``flow_spec``) runs with: a label's own
    option that rule does not take is left out, as nobody passed it (``comfyui:euler_ancestral``'s
    ``noise_at_zero_down`` is sample_euler_ancestral's rule at σ_down = 0, a step sample_euler_ancestral_RF at its
    η ≤ 1 never takes); a caller's own (``given``) stays, and the rule's option check refuses it."""
    return {k: v for k, v in merged.items() if k in flow_spec.options or k in given}


def _in_flow_coordinates(spec, model, x, sigmas, extra_args, callback, disable, options):
    """Run ``spec``'s sampler in σ = t/(1 − t), x/(1 − t) on a flow model that returns x0 from (x_t, t); return
    ComfyUI's x_t."""
    given = torch.as_tensor(sigmas)
    t = given.detach().to("cpu", torch.float64)  # in [0, 1]: _check_flow_times, at the call
    sigmas_ve = torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))
    keep = [1.0 - float(s) for s in t]  # x_t = (1 − t)·x in the sampler's coordinates (x itself at t = 1)
    _on_solver_nodes(options, given, sigmas_ve, keep)
    # x / (1 − t) in the state's dtype: float16 latents near t = 1 (1 − t = 1e-5) would overflow to inf there, and the
    # error blame the caller's latent; the model is still called in the latents' dtype, as the registry calls it
    state = state_dtype(x.dtype)
    x_ve = x.to(state) if keep[0] <= 0 else x.to(state) / keep[0]
    inner = model if state == x.dtype else _InLatentsDtype(model, x.dtype)
    # calls model(x_t, t, **extra_args); a flow model, whose x0 it sees (what a fitted solver's record is checked by)
    denoiser = _FlowModelView(to_denoiser(inner, "x0", RectifiedFlow(multiplier=1.0)))
    report = None
    if callback is not None and _reports_each_step(spec):
        def in_flow(info):  # k-diffusion's contract (the state step i's model call saw, at σ_hat), in x_t and t
            i, sigma_hat = info["i"], info["sigma_hat"]
            hat = float(sigma_hat)  # x_t = x/(1 + σ̂): the state sits at σ̂ (σ_i, or above it after churn)
            callback({**info, "x": info["x"] if math.isinf(hat) else info["x"] / (1 + hat), "sigma": given[i],
                      "sigma_hat": given[i] if sigma_hat is info["sigma"] else given.new_tensor(_flow_t(hat))})
        report = _KCallback(denoiser, in_flow, sigmas_ve)
        denoiser = report.model
    elif callback is not None:
        at_sigma = _reports_at_sigma(spec, options)

        def report(info):  # the sampler's own report, its x where the sampler's rule puts it (_reports_at_sigma)
            sigma = float(info["sigma"])
            if spec.name == "dpm_fast" and math.isinf(sigma):  # from σ = inf (t = 1) the call saw the input itself
                x_t = x
            elif at_sigma and info["x"] is info["denoised"]:  # the final denoise's result, at the schedule's end
                x_t = info["x"] * keep[-1]
            elif at_sigma and not math.isinf(sigma):
                x_t = info["x"] / (1 + sigma)
            else:  # the state after step i (or after the exact step from σ = inf), at t_{i+1}
                x_t = info["x"] * keep[min(info["i"] + 1, len(keep) - 1)]
            callback({**info, "x": x_t, "sigma": given.new_tensor(_flow_t(sigma)),
                      "sigma_hat": given.new_tensor(_flow_t(float(info["sigma_hat"])))})
    out = spec.fn(denoiser, x_ve, sigmas_ve, extra_args=extra_args, callback=report, disable=disable, **options)
    return to_result_dtype(out * keep[-1], x.dtype, spec.name, float(t[-1]))


def _check_flow_times(sigmas) -> None:
    """Refuse a flow model's SIGMAS that are not flow times t in [0, 1] (NaN too), naming the first such value as the
    caller gave it. t = 1 is the pure noise; above it there is no flow state. Checked once, at the top of the call,
    for every name: the ``COMFYUI_FLOW_RAW`` names step ComfyUI's (x_t, σ = t) as given, so they would call the
    network at t = 14.6 (ComfyUI does: it extrapolates), and the half-log-SNR names' first-t offset (ComfyUI's
    ``offset_first_sigma_for_snr``) replaces any first t ≥ 1 — 14.6 as well as ComfyUI's own 1.0 — so after it the
    caller's value is gone, and a later check would blame a value the caller never passed."""
    t = torch.as_tensor(sigmas).detach().to("cpu", torch.float64).flatten()
    bad = next((i for i, v in enumerate(t.tolist()) if not 0 <= v <= 1), None)  # NaN too
    if bad is not None:
        raise InvalidInput(f"sigmas[{bad}] = {float(t[bad])!r}, but on a flow model ComfyUI's SIGMAS are flow "
                           "times t in [0, 1] (1 the pure noise), not VE σ; build them with the model's own scheduler "
                           "(BasicScheduler, or a scheduler node whose sigma_max is the model's 1.0), not a "
                           "KarrasScheduler-style node left at σ_max = 14.6")


def _on_solver_nodes(options: dict, given: torch.Tensor, sigmas_ve: torch.Tensor, keep: list[float]) -> None:
    """A fitted solver's nodes where ComfyUI's SIGMAS are its flow times rounded to their dtype (float32, as ComfyUI
    builds them): t/(1 − t) of a rounded t lies some 6e-7 off the node (1/(1 − t) amplifies the rounding near t = 1),
    beyond what the solver's node check takes, so a t equal to its node's t in that dtype is that node (σ and the
    state's scale, in place). A t that is another value stays, and the solver refuses it."""
    solver = options.get("solver")
    if solver is not None:  # learned_multistep(solver=PATH or LearnedSolver): read once, here and for the run
        from ..fitted.solver import LearnedSolver

        solver = options["solver"] = LearnedSolver.of(solver)
    nodes = getattr(solver, "sigmas", None)
    if not isinstance(nodes, list) or given.dtype == torch.float64 or len(nodes) != len(keep):
        return
    rounded = torch.tensor([_flow_t(float(v)) for v in nodes], dtype=torch.float64).to(given.dtype)
    for i, (t, node) in enumerate(zip(given.detach().cpu().flatten().tolist(), nodes)):
        if t == float(rounded[i]):
            sigmas_ve[i] = node
            keep[i] = 0.0 if math.isinf(node) else 1.0 / (1.0 + node)


class _FlowModelView:
    """The adapter's denoiser of a ComfyUI flow model (x0 from x_t, t), saying the model's prediction type: ``flow``
    (a fitted solver records the network's own, and a flow-fitted one would refuse the x0 view of its own model).
    Everything else — ``denoise_at``, ``prepare_times``, ``supports_infinite_sigma``, the fingerprint of what it
    wraps — is the denoiser's."""

    prediction = "flow"

    def __init__(self, denoiser):
        self.inner = denoiser

    def __call__(self, x, sigma, **extra_args):
        return self.inner(x, sigma, **extra_args)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)


class _InLatentsDtype:
    """A flow model run on a float32 state for float16 / bfloat16 latents (:func:`_in_flow_coordinates`), called with
    x_t in the latents' dtype, as the registry calls a model on such latents; everything else it offers is the
    model's own."""

    def __init__(self, model, latents: torch.dtype):
        self._model, self._latents = model, latents

    def __call__(self, x_t, t, **extra_args):
        return self._model(x_t.to(self._latents), t, **extra_args)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)


def _tree_in_flow_time(options: dict, x, given, stepped, kind: str) -> dict:
    """ComfyUI's SDE samplers on a flow model draw k-diffusion's Brownian tree over their σ, the flow time t — on the
    range of the sigmas given (before the first is offset), asked at the t they step to — where this library's
    samplers step in σ = t/(1 − t): a tree over t (seeded as the named kind seeds it: item k from seed + k), asked
    at the t of the σ the sampler asks at (the schedule's own t at its points, exactly)."""
    options = dict(options)
    seed = options.pop("seed", None)
    check_tree_range(given)
    g = torch.as_tensor(given).detach().cpu()  # its range and its asks as ComfyUI's: its sigmas' dtype, as tensors
    tree = BrownianTreeNoiseSampler(x, g[g > 0].min(), g.max(), cpu=kind == "brownian_tree",
                                    seed=None if seed is None else resolve_seeds(seed, x.shape[0]))
    ts = torch.as_tensor(stepped).detach().cpu()
    at = {_ve_sigma(float(t)): t for t in ts}

    def noise(sigma, sigma_next):
        return tree(*(at[float(s)] if float(s) in at else ts.new_tensor(_flow_t(float(s)))
                      for s in (sigma, sigma_next)))

    options["noise_sampler"] = noise
    return options


def _model_sampling(model):
    """ComfyUI's ``model_sampling`` of ``model_k``, reached as its own samplers reach it (None without that chain)."""
    try:
        return model.inner_model.model_patcher.get_model_object("model_sampling")
    except AttributeError:
        return None


def _scheduler_node(schedule: str) -> str:
    """Where a ComfyUI user gets ``schedule``'s σ: the ComfyUI scheduler of that rule, else the σ passed in."""
    wanted = names.resolve_schedule(schedule)
    same = [k for k in labels.COMFYUI_SCHEDULERS if names.resolve_schedule(f"comfyui:{k}") == wanted]
    if same:
        return f"the {same[0]!r} scheduler"
    return (f"the σ of samplers.get_sigmas({schedule!r}, steps, native=...) as its SIGMAS (ComfyUI has no scheduler "
            "of that rule)")


def _percent_to_sigma(sampling, percent: float) -> float:
    """The model's ``percent_to_sigma`` (Flux's is time-shifted); ComfyUI's CONST's, 1 − percent, without one."""
    fn = getattr(sampling, "percent_to_sigma", None)
    return float(fn(percent)) if fn is not None else 1.0 - percent


def _offset_first_sigma(sigmas, sampling):
    """ComfyUI's offset_first_sigma_for_snr on a flow model: a first t ≥ 1 (log-SNR −inf) becomes
    ``percent_to_sigma(1e-4)``, where its half-log-SNR samplers start."""
    if len(sigmas) <= 1 or float(sigmas[0]) < 1:
        return sigmas
    sigmas = torch.as_tensor(sigmas).clone()
    sigmas[0] = _percent_to_sigma(sampling, 1e-4)
    return sigmas


def _ve_sigma(t: float) -> float:
    return math.inf if t >= 1 else t / (1 - t)


def _flow_t(sigma: float) -> float:
    return 1.0 if math.isinf(sigma) else sigma / (1 + sigma)


def _refuse_node_seed(options: dict) -> None:
    """Refuse ``seed`` in the node's options: ComfyUI always passes its sampling node's noise seed
    (``extra_args['seed']``), which a seed here would replace, so the node's seed widget would change nothing."""
    if "seed" in options:
        raise InvalidOption(f"options {{\"seed\": {options['seed']!r}}}: in ComfyUI the sampler's noise is seeded by the "
                            "sampling node's noise_seed (SamplerCustom's noise_seed, RandomNoise's for "
                            "SamplerCustomAdvanced), which a seed here would silently replace; set noise_seed there "
                            "and leave seed out of the options")


def _refuse_unknown_node_keys(name: str, options: dict) -> None:
    """Refuse a key of the node's JSON that the sampler does not take, listing the options the node takes: the
    sampler's, less ``seed`` (the sampling node's noise_seed seeds it; :func:`_refuse_node_seed`)."""
    spec = SAMPLERS.get(names.resolve(name).sampler)
    takes = [k for k in spec.options if k != "seed"]
    for key in options:
        if key not in spec.options:
            close = difflib.get_close_matches(key, takes, n=1)
            raise InvalidOption(f"{spec.name} has no option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                + f"; the node's options for it are: {', '.join(takes) or 'none'} (its noise is "
                                "seeded by the sampling node's noise_seed)")


def _refuse_internal_keys(name: str, options: dict) -> None:
    """Refuse the node's option keys that are ksampler_function's own parameters (``name``, ``coordinates``) and not
    options of the sampler: passed on they would be taken as those parameters (or collide with them)."""
    spec = SAMPLERS.get(names.resolve(name).sampler)
    for key in options:
        if key in ("name", "coordinates") and key not in spec.options:
            raise InvalidOption(f"{spec.name} has no option {key!r} (it is a parameter of the adapter, not an option "
                                f"of the sampler); its options are: {', '.join(spec.options) or 'none'}")


def node_class_mappings() -> tuple[dict, dict]:
    """``(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)`` for a ComfyUI custom node: one SAMPLER node that offers
    every registry sampler by name, with an optional JSON object of options (``{"eta": 0.5}``)."""
    import comfy.samplers  # only inside ComfyUI

    class RegistrySampler:
        """A diffusion-samplers registry sampler as a ComfyUI SAMPLER."""

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"sampler_name": (available(),),
                                 "options": ("STRING", {"default": "{}", "multiline": False})}}

        RETURN_TYPES = ("SAMPLER",)
        FUNCTION = "get_sampler"
        CATEGORY = "sampling/custom_sampling/samplers"

        def get_sampler(self, sampler_name, options="{}"):
            try:
                extra = json.loads(options or "{}", object_pairs_hook=unique_keys)
            except DuplicateKey as e:
                raise InvalidOption(f"options {options!r} name {e.key!r} more than once (JSON would keep the last "
                                    "silently); give each option once") from None
            except json.JSONDecodeError as e:
                raise InvalidOption(f"options must be a JSON object such as {{\"eta\": 0.5}}, got {options!r} "
                                    f"({e})") from None
            if not isinstance(extra, dict):
                raise InvalidOption(f"options must be a JSON object such as {{\"eta\": 0.5}}, got {options!r}")
            _refuse_internal_keys(sampler_name, extra)
            _refuse_node_seed(extra)
            _refuse_unknown_node_keys(sampler_name, extra)
            fn = ksampler_function(sampler_name, **extra)  # checks the options now, before any sampling
            return (comfy.samplers.KSAMPLER(fn),)

    key = "DiffusionSamplersRegistrySampler"
    return {key: RegistrySampler}, {key: "Registry sampler (diffusion-samplers)"}

"""The shim's float32 bounds that are not ≤ 1e-5 (docs/diffusers.md): where the difference to diffusers is diffusers'
own float32 rounding, measured on more than one model, in the form the docs state it.

- Zero-terminal-SNR Euler / EulerAncestral txt2img: diffusers' first step from σ_max = 4096 in float32. The step's
  difference is at most 2⁻²³·σ_max·max|noise| (float32's precision at the latent there), whatever the model; given
  diffusers' latent after it, the shim continues to ≤ 1e-5 of the latents' scale; what reaches the final latents is
  that rounding carried by the rest of the run, so its size depends on the model (a figure per model below).
- DEISMultistepScheduler with use_flow_sigmas: diffusers' (α_t/α_s)·x − σ_t(e^h − 1)·ε at α_s ≈ 3e-4 in float32.
  The difference is of the size of diffusers' own float32 error (its float32 run against the same run in float64);
  in float64 the two agree to 1e-12.
- DEISMultistepScheduler with lower_order_final=False at few steps (and order 3 at 12-20 steps): the shim takes the
  class's float32 weights; its step's own float32 tensor arithmetic remains, of the size of diffusers' own error.
- Zero-terminal-SNR DDIM with η = 1, txt2img: diffusers' first-step root √(1 − ᾱ_prev − σ_t²), exactly 0, in float32
  (2.4e-4 or NaN); the shim's is 0. Carried to the final latents as the model carries it (a figure per model).
- SASolverScheduler: the shim takes its step coefficients as it computes them, in float32 from its float32 σ table
  (cancelling at small steps, most at order 3-4 without lower_order_final); what remains is the latents' float32
  arithmetic that a model of larger gain carries (a figure per orders and model), of the size of diffusers' own.
  weights="exact" is diffusers' run with that arithmetic in float64.
"""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks import compatibility as compat  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

TINY = compat.TinyModel()


def toy(x, t, scale=3.0):
    """A model with larger outputs and a larger gain than the table's (the audit's: |output| up to 6)."""
    t = torch.as_tensor(t, dtype=x.dtype)
    return scale * (0.5 * x * torch.cos(t / 300.0) + 0.4 * torch.sin(2 * x + t / 200.0))


MODELS = {"table": TINY, "table x3": lambda x, t: 3.0 * TINY(x, t), "toy": toy}
NOISE = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
EPS32 = torch.finfo(torch.float32).eps

# docs/diffusers.md, "Zero-terminal-SNR configs": the final latents' largest difference over 1–25 steps, per model
ZSNR_FINAL = {
    ("EulerDiscreteScheduler", "v_prediction"): {"table": 1.2e-4, "table x3": 3.9e-4, "toy": 4.8e-4},
    ("EulerDiscreteScheduler", "sample"): {"table": 1.9e-4, "table x3": 1.1e-3, "toy": 1.1e-3},
    ("EulerAncestralDiscreteScheduler", "v_prediction"): {"table": 4.7e-4, "table x3": 1.1e-3, "toy": 1.1e-3},
}
ZSNR_STEPS = (1, 2, 3, 5, 10, 25)


def _zsnr_run(scheduler, model, steps, feed=None):
    """The txt2img loop (compatibility.run's), keeping every step's latent; ``feed`` replaces the latent after the
    first step (diffusers' own, handed to the shim as a pipeline's edit would be)."""
    generator = torch.Generator().manual_seed(3)
    scheduler.set_timesteps(steps)
    extra = compat._step_kwargs(scheduler, generator)
    latents, out = NOISE * scheduler.init_noise_sigma, []
    for i, t in enumerate(scheduler.timesteps):
        if feed is not None and i == 1:
            latents = feed.clone()
        latents = scheduler.step(model(scheduler.scale_model_input(latents, t), t), t, latents, **extra,
                                 return_dict=False)[0]
        out.append(latents)
    return out


@pytest.mark.parametrize("name,prediction", list(ZSNR_FINAL))
def test_zero_snr_difference_is_diffusers_float32_first_step(name, prediction):
    """The shim continues diffusers' own first step to 1e-5 (on every CPU); the first step's and the final latents'
    differences are diffusers' float32 rounding, the documented figures on the kind of CPU that measured them
    (tests/conftest.py: OTHER_ROUNDING)."""
    from conftest import OTHER_ROUNDING

    config = {**compat.ZSNR, "prediction_type": prediction}
    bad, worst = [], {}
    for label, model in MODELS.items():
        for steps in ZSNR_STEPS:
            theirs = _zsnr_run(compat.source_scheduler(name, config, {}), model, steps)
            ours = _zsnr_run(SamplerScheduler.from_config(compat.source_scheduler(name, config, {})), model, steps)
            sigma_max = float(compat.source_scheduler(name, config, {}).sigmas.max())
            spacing = EPS32 * sigma_max * float(NOISE.abs().max())  # float32's precision at the latent at σ_max
            first = float((ours[0].double() - theirs[0].double()).abs().max())
            if not first <= spacing and not OTHER_ROUNDING:
                bad.append(f"{label} {steps} steps: first step differs by {first:.2e} > {spacing:.2e}")
            final = float((ours[-1].double() - theirs[-1].double()).abs().max())
            worst[label] = max(worst.get(label, 0.0), final)
            if steps > 1:
                fed = _zsnr_run(SamplerScheduler.from_config(compat.source_scheduler(name, config, {})), model, steps,
                                feed=theirs[0])
                rest = float((fed[-1].double() - theirs[-1].double()).abs().max())
                scale = max(1.0, float(theirs[-1].abs().max()))
                if not rest <= 1e-5 * scale:
                    bad.append(f"{label} {steps} steps: from diffusers' first step, {rest:.2e} > 1e-5 × {scale:.3g}")
    for label, bound in ZSNR_FINAL[(name, prediction)].items():
        if not worst[label] <= bound and not OTHER_ROUNDING:
            bad.append(f"{label}: final latents differ by {worst[label]:.2e} > the documented {bound:.1e}")
    assert not bad, "\n".join(bad)


# docs/diffusers.md: DEISMultistepScheduler with use_flow_sigmas, relative to the latents' scale max(1, max|x|)
DEIS_FLOW = 2.5e-4


def _flow_run(scheduler, model, steps, dtype):
    scheduler.set_timesteps(steps)
    if dtype == torch.float64 and not isinstance(scheduler, SamplerScheduler):
        scheduler.sigmas = scheduler.sigmas.double()  # diffusers' arithmetic in float64 (its step follows sigmas)
    x = NOISE.to(dtype)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).to(dtype), t, x).prev_sample
    return x.double()


def test_deis_flow_sigmas_difference_is_diffusers_float32_rounding():
    models = {"table": lambda x, t: TINY(x.float(), t).to(x.dtype),
              "table x3": lambda x, t: 3.0 * TINY(x.float(), t).to(x.dtype), "toy": toy}
    gaps, own, exact = [], [], []
    for shift in (1.0, 3.0):
        for order in (1, 2):
            config = {"_class_name": "DEISMultistepScheduler", "use_flow_sigmas": True, "flow_shift": shift,
                      "prediction_type": "flow_prediction", "solver_order": order}
            for label, model in models.items():
                for steps in (2, 6):
                    r = {(kind, dtype): _flow_run((diffusers.DEISMultistepScheduler if kind == "d" else
                                                   SamplerScheduler).from_config(config), model, steps, dtype)
                         for kind in ("d", "s") for dtype in (torch.float32, torch.float64)}
                    scale = max(1.0, float(r["d", torch.float32].abs().max()))
                    where = (shift, order, label, steps)
                    gaps.append((float((r["s", torch.float32] - r["d", torch.float32]).abs().max()) / scale, where))
                    own.append((float((r["d", torch.float32] - r["d", torch.float64]).abs().max()) / scale, where))
                    exact.append((float((r["s", torch.float64] - r["d", torch.float64]).abs().max()) / scale, where))
    assert max(gaps)[0] <= DEIS_FLOW, max(gaps)
    assert max(gaps)[0] > 1e-5  # a real difference: the docs' ≤ 1e-5 does not cover this config
    assert max(gaps)[0] <= 1.5 * max(own)[0], (max(gaps), max(own))  # diffusers' own float32 error, in size
    assert max(exact)[0] <= 1e-12, max(exact)


# docs/diffusers.md, "DEIS's float32 weights": with the class's own weights, what remains is its step's float32
# tensor arithmetic, relative to the latents' scale max(1, max|x|)
DEIS_STEP = 1.5e-4


def _deis_run(scheduler, model, steps, dtype):
    scheduler.set_timesteps(steps)
    if dtype == torch.float64 and not isinstance(scheduler, SamplerScheduler):
        scheduler.sigmas = scheduler.sigmas.double()  # diffusers' arithmetic in float64 (its weights follow sigmas)
    x = (NOISE * scheduler.init_noise_sigma).to(dtype)
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t).to(dtype), t, x).prev_sample
    return x.double()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside diffusers' DEIS
def test_deis_difference_is_its_steps_float32_arithmetic():
    models = {"table": lambda x, t: TINY(x.float(), t).to(x.dtype), "toy": toy}
    gaps, own = [], []
    for config_name in ("SD-1.5", "SDXL"):
        for order in (2, 3):
            config = {**compat.CONFIGS[config_name], "_class_name": "DEISMultistepScheduler", "solver_order": order,
                      "lower_order_final": False}
            for label, model in models.items():
                for steps in (5, 6, 12, 16):
                    r = {(kind, dtype): _deis_run((diffusers.DEISMultistepScheduler if kind == "d" else
                                                   SamplerScheduler).from_config(config), model, steps, dtype)
                         for kind in ("d", "s") for dtype in (torch.float32, torch.float64)}
                    scale = max(1.0, float(r["d", torch.float32].abs().max()))
                    where = (config_name, order, label, steps)
                    gaps.append((float((r["s", torch.float32] - r["d", torch.float32]).abs().max()) / scale, where))
                    own.append((float((r["d", torch.float32] - r["d", torch.float64]).abs().max()) / scale, where))
    assert max(gaps)[0] <= DEIS_STEP, max(gaps)
    assert max(g for g in gaps if g[1][3] == 16)[0] <= 2e-5  # from 15 steps lower_order_final does not apply
    assert max(gaps)[0] > 1e-5  # a real difference: the docs' ≤ 1e-5 does not cover these runs
    assert max(gaps)[0] <= 1.5 * max(own)[0], (max(gaps), max(own))  # diffusers' own float32 error, in size


# docs/diffusers.md, "Zero-terminal-SNR configs": DDIM with η = 1, the final latents' largest difference over 5-20
# steps relative to their scale max(1, max|x|), per model
ZSNR_DDIM_ETA1 = {"table": 1e-5, "table x3": 1e-5, "toy": 1.2e-3}


def _ddim_run(scheduler, model, steps, eta):
    generator = torch.Generator().manual_seed(3)
    scheduler.set_timesteps(steps)
    x = NOISE * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, eta=eta, generator=generator).prev_sample
    return x.double()


def test_zero_snr_ddim_at_eta_1_is_diffusers_float32_first_step_or_its_nan():
    """From ᾱ = 0 diffusers' DDIM takes √(1 − ᾱ_prev − σ_t²) with η = 1, exactly 0, in float32: ±1 ulp leaves 2.4e-4 or
    NaN (at 25 and 50 steps its whole image is NaN). The shim takes it in float64: 0, the method's finite image, on
    every CPU; which step counts give diffusers NaN is its float32 rounding, the documented ones on the kind of CPU
    that measured them (tests/conftest.py: OTHER_ROUNDING)."""
    from conftest import OTHER_ROUNDING

    bad = []
    for label, model in MODELS.items():
        for steps in (5, 10, 20, 25, 50):
            theirs, ours = (_ddim_run(s, model, steps, 1.0) for s in (
                compat.source_scheduler("DDIMScheduler", compat.ZSNR, {}),
                SamplerScheduler.from_config(compat.source_scheduler("DDIMScheduler", compat.ZSNR, {}))))
            if not bool(torch.isfinite(ours).all()):
                bad.append(f"{label} {steps}: the shim's image is not finite")
            if OTHER_ROUNDING:  # diffusers' own figures: its float32 rounding on the CPU that measured them
                pass
            elif steps in (25, 50):
                if bool(torch.isfinite(theirs).any()):
                    bad.append(f"{label} {steps}: diffusers' image is finite (the docs say NaN)")
            else:
                gap = float((ours - theirs).abs().max()) / max(1.0, float(theirs.abs().max()))
                if not gap <= ZSNR_DDIM_ETA1[label]:
                    bad.append(f"{label} {steps}: {gap:.2e} > the documented {ZSNR_DDIM_ETA1[label]:.1e}")
            if steps == 10:  # η < 1 leaves that root away from 0: a match
                theirs, ours = (_ddim_run(s, model, steps, 0.9) for s in (
                    compat.source_scheduler("DDIMScheduler", compat.ZSNR, {}),
                    SamplerScheduler.from_config(compat.source_scheduler("DDIMScheduler", compat.ZSNR, {}))))
                gap = float((ours - theirs).abs().max()) / max(1.0, float(theirs.abs().max()))
                if not gap <= 1e-5:
                    bad.append(f"{label} η = 0.9: {gap:.2e} > 1e-5")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
@pytest.mark.parametrize("steps", [5, 7, 10])
def test_zero_snr_beta_sigmas_start_img2img_in_the_thousands_where_diffusers_rounds_in_float32(mode, steps):
    """An audit of 2026-12-07: beta sigmas bunch near σ_max = 4096, so on a zero-SNR config img2img / inpaint at
    strength 0.6 start at σ ≈ 1500-2500, where the final latents are up to 2.1e-4 of their scale (img2img, 5 steps)
    from diffusers' — at σ in the thousands, as the txt2img exception's float32 first step (docs/diffusers.md); with
    the default sigmas they start far lower and match to 1e-5."""
    model = compat.TinyModel()
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    image = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1.0
    for variant, bound in (({"use_beta_sigmas": True}, 3e-4), ({}, 1e-5)):
        theirs_s = compat.source_scheduler("EulerDiscreteScheduler", compat.ZSNR, variant)
        theirs = compat.run(theirs_s, model, mode, noise, image, mask, steps=steps)
        ours = compat.run(SamplerScheduler.from_config(theirs_s.config), model, mode, noise, image, mask, steps=steps)
        relative = float((ours - theirs).abs().max() / theirs.abs().max())
        assert relative <= bound, (variant, relative)
        start = float(theirs_s.sigmas[steps - int(steps * compat.STRENGTH)])
        assert (start > 1000) == bool(variant), start


# docs/diffusers.md, "SA-Solver's float32 coefficients": per orders, (the config's orders, the final latents' largest
# difference to diffusers' image (5 to 50 steps) per model, that of sampler_options={"weights": "exact"} to diffusers'
# run with its σ table in float64), with headroom over the figures measured: the shim takes the class's float32
# coefficients, so what remains is the latents' float32 arithmetic, which a model of larger gain carries further
SA_FLOAT32 = {
    "default": ({}, {"table": 1e-6, "toy": 1e-4}, {"table": 2e-6, "toy": 1e-4}),
    "corrector 3": ({"corrector_order": 3}, {"table": 1e-6, "toy": 1e-4}, {"table": 2e-6, "toy": 1e-4}),
    "corrector 4": ({"corrector_order": 4}, {"table": 1e-6, "toy": 1e-4}, {"table": 2e-6, "toy": 1e-4}),
    "order 3 without lower_order_final": ({"predictor_order": 3, "corrector_order": 3, "lower_order_final": False},
                                          {"table": 1e-5, "toy": 1e-4}, {"table": 1e-5, "toy": 2e-4}),
    "order 4": ({"predictor_order": 4, "corrector_order": 4}, {"table": 1.5e-6, "toy": 2e-4},
                {"table": 2e-6, "toy": 2e-4}),
    "order 4 without lower_order_final": ({"predictor_order": 4, "corrector_order": 4, "lower_order_final": False},
                                          {"table": 5e-5, "toy": 3e-3}, {"table": 3e-5, "toy": 1e-3}),
}
# the most the shim's difference may be, in units of diffusers' own: its image's change when each model output is
# scaled by 1 + 2⁻²³ (one float32 rounding of it); measured up to 2.3 (order 4 without lower_order_final)
SA_OWN_ROUNDING = 3.0


def _sa_run(scheduler, model, n, sigma64=False, bump=0.0):
    scheduler.set_timesteps(n)
    if sigma64:  # the class's σ table upcast (the same values): its coefficients' arithmetic in float64
        scheduler.sigmas = scheduler.sigmas.double()
    x, g = NOISE * scheduler.init_noise_sigma, torch.Generator().manual_seed(11)
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out * (1 + bump) if bump else out, t, x, generator=g).prev_sample
    return x.double()


@pytest.mark.parametrize("orders", sorted(SA_FLOAT32))
def test_sa_solver_takes_its_float32_coefficients(orders):
    """SASolver computes its coefficients in float32 from its float32 σ table, which cancel at small steps; the shim
    takes them as it computes them (``weights="diffusers"``), so its image is diffusers' to the latents' float32
    rounding: within SA_OWN_ROUNDING of diffusers' own change under one rounding of each model output. Before, in
    float64, it was up to 1.3e-3 of the scale from it (0.28 on the toy), which ``weights="exact"`` still runs: that
    is diffusers' run with its coefficients' arithmetic in float64."""
    extra, bounds, exact_bounds = SA_FLOAT32[orders]
    config = diffusers.SASolverScheduler.from_config({**compat.SD15, **extra}).config
    for name in ("table", "toy"):
        worst = {"ours": 0.0, "own": 0.0, "exact weights": 0.0, "exact weights, float64 σ": 0.0}
        for n in (5, 10, 28, 50):
            def theirs_run(**kw):
                return _sa_run(diffusers.SASolverScheduler.from_config(config), MODELS[name], n, **kw)

            theirs = theirs_run()
            scale = max(1.0, float(theirs.abs().max()))
            shims = (SamplerScheduler.from_config(config),
                     SamplerScheduler.from_config(config, sampler_options={"weights": "exact"}))
            ours, exact = (_sa_run(shim, MODELS[name], n) for shim in shims)
            assert [shim._options["weights"] for shim in shims] == ["diffusers", "exact"]
            pairs = {"ours": (ours, theirs), "own": (theirs_run(bump=EPS32), theirs),
                     "exact weights": (exact, theirs), "exact weights, float64 σ": (exact, theirs_run(sigma64=True))}
            for key, (a, b) in pairs.items():
                worst[key] = max(worst[key], float((a - b).abs().max()) / scale)
        assert worst["ours"] <= bounds[name], (name, worst)
        assert worst["ours"] <= SA_OWN_ROUNDING * worst["own"], (name, worst)
        assert worst["exact weights, float64 σ"] <= exact_bounds[name], (name, worst)
        if orders != "default":  # a real difference: the exact weights are far from diffusers' image
            assert worst["exact weights"] > 5 * worst["ours"], (name, worst)

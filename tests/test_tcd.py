"""TCD (Zheng et al. 2024): the tcd sampler is diffusers' TCDScheduler step for step, in the shim and by name.

TCDScheduler's γ is its ``step``'s ``eta`` (0.3 where step is called without it; a pipeline passes its own ``eta``,
0 by default), and its inner point s = ⌊(1 − γ)·t⌋ is computed in float32 on its own ᾱ table: both are what the
shim must reproduce, at the γ users ship (0.3, the TCD LoRAs' recommended value) and at 0 (a pipeline's default).
"""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.sde.ancestral import tcd_point

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import CONFIGS, SD15, TinyModel, _noised  # noqa: E402
from conftest import shim_latents  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

MODEL = TinyModel()
NOISE, IMAGE, MASK = shim_latents()


def loop(scheduler, mode="txt2img", steps=4, eta=0.3, seed=3, strength=0.6, noised=None):
    """A diffusers pipeline's loop with the step's ``eta`` (None: step called without it); each step's
    ``pred_noised_sample`` appended to ``noised`` where it is a list."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if mode == "txt2img":
        latents = NOISE * scheduler.init_noise_sigma
    else:
        t_start = max(steps - min(int(steps * strength), steps), 0)
        timesteps = timesteps[t_start:]
        scheduler.set_begin_index(t_start)
        latents = _noised(scheduler, IMAGE, NOISE, timesteps[:1].repeat(NOISE.shape[0]))
    extra = {"generator": generator} if eta is None else {"generator": generator, "eta": eta}
    for i, t in enumerate(timesteps):
        latents, pred_noised = scheduler.step(MODEL(scheduler.scale_model_input(latents, t), t), t, latents,
                                              **extra, return_dict=False)
        if noised is not None:
            noised.append(pred_noised)
        if mode == "inpaint":
            proper = IMAGE if i == len(timesteps) - 1 else _noised(scheduler, IMAGE, NOISE,
                                                                     torch.tensor([timesteps[i + 1]]))
            latents = (1 - MASK) * proper + MASK * latents
    return latents, torch.randn(3, generator=generator)  # and where the generator was left


@pytest.mark.parametrize("config", ["SD-1.5", "SD-2.1-v", "SDXL", "zero-SNR-v"])
@pytest.mark.parametrize("eta", [0.3, 0.0, 1.0, None])
def test_the_shim_is_tcdscheduler_at_every_gamma_and_mode(config, eta):
    theirs = diffusers.TCDScheduler.from_config({**CONFIGS[config], "_class_name": "TCDScheduler"})
    for mode in ("txt2img", "img2img", "inpaint"):
        for steps in ((1, 4, 8) if mode == "txt2img" else (2, 4, 8)):  # strength 0.6 of 1 step: no step
            ref_noised, ours_noised = [], []
            ref, ref_next = loop(theirs, mode, steps, eta, noised=ref_noised)
            shim = SamplerScheduler.from_config(theirs.config)
            ours, ours_next = loop(shim, mode, steps, eta, noised=ours_noised)
            assert shim.spec.name == "tcd"
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5, msg=f"{mode}, {steps} steps")
            # the tuple's second entry is TCD's pred_noised_sample (x_s before the step's noise), not x0
            for i, (a, b) in enumerate(zip(ours_noised, ref_noised, strict=True)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{mode}, {steps} steps, step {i}")
            # the generator is left where TCDScheduler leaves it: a draw per step but the last, none at γ = 0
            torch.testing.assert_close(ours_next, ref_next, rtol=0, atol=0)


def test_a_gamma_changes_the_image_and_the_pipelines_default_is_deterministic():
    theirs = diffusers.TCDScheduler.from_config({**SD15, "_class_name": "TCDScheduler"})
    shim = SamplerScheduler.from_config(theirs.config)
    at_0 = loop(shim, eta=0.0, seed=1)[0]
    assert torch.equal(at_0, loop(SamplerScheduler.from_config(theirs.config), eta=0.0, seed=2)[0])  # no noise
    assert (loop(SamplerScheduler.from_config(theirs.config), eta=0.3)[0] - at_0).abs().max() > 1e-2


def test_the_direct_sampler_is_tcdschedulers_loop_on_its_default_table():
    """samplers.sample("tcd") (and the "TCDScheduler" label) on the model as a denoiser, on TCDScheduler's own
    timesteps ending at σ(t = 0), is its loop: s = ⌊(1 − γ)·t⌋ in float32 (γ = 0.3 at t = 90 gives 63, where
    float64 arithmetic gives 62)."""
    theirs = diffusers.TCDScheduler()  # its defaults: Stable Diffusion 1.x's table
    ac = theirs.alphas_cumprod
    table = samplers.VPDiscrete.from_alphas_cumprod(ac)
    denoiser = samplers.to_denoiser(lambda x, t: MODEL(x, t), "eps", table)
    for eta in (0.3, 0.7):
        for steps in (2, 4, 8):
            theirs.set_timesteps(steps)
            g = torch.Generator().manual_seed(0)
            latents = NOISE.clone()
            for t in theirs.timesteps:
                latents = theirs.step(MODEL(latents, t), t, latents, eta=eta, generator=g).prev_sample
            ts = [int(t) for t in theirs.timesteps] + [0]
            sigmas = [math.sqrt((1 - float(ac[t])) / float(ac[t])) for t in ts]
            draws = torch.Generator().manual_seed(0)

            def noise(sigma, sigma_next):
                return torch.randn(NOISE.shape, generator=draws)

            for name in ("tcd", "TCDScheduler"):
                draws.manual_seed(0)
                x = NOISE * math.sqrt(1 + sigmas[0] ** 2)
                out = samplers.sample(name, denoiser, x, sigmas, eta=eta, noise_sampler=noise, disable=True)
                torch.testing.assert_close(out / math.sqrt(1 + sigmas[-1] ** 2), latents, rtol=0, atol=2e-5)
    # γ = 0 is DDIM on the same nodes
    x = NOISE * math.sqrt(1 + sigmas[0] ** 2)
    torch.testing.assert_close(samplers.sample("tcd", denoiser, x, sigmas, eta=0.0, disable=True),
                               samplers.sample("ddim", denoiser, x, sigmas, disable=True), rtol=1e-6, atol=1e-6)


def test_the_inner_point_is_tcds_on_the_table_and_continuous_between():
    table = samplers.VPDiscrete.from_alphas_cumprod(diffusers.TCDScheduler().alphas_cumprod)
    sig = table.sigmas.tolist()
    assert tcd_point(table, 0.3, sig[90]) == sig[63]  # float32: 0.7 · 90 = 63, not 62.999…
    assert tcd_point(table, 0.3, sig[999]) == sig[699]
    assert tcd_point(table, 0.0, sig[500]) == sig[500] and tcd_point(table, 0.3, 0.0) == 0.0
    assert tcd_point(table, 0.3, sig[0]) == sig[0]  # the last step of TCDScheduler's run: no noise
    assert tcd_point(table, 0.5, 1e-3) == 1e-3  # below the table: σ_s = σ_next
    between = math.sqrt(sig[400] * sig[401])  # t = 400.5
    point = tcd_point(table, 0.5, between)
    assert sig[200] < point < sig[201]  # (1 − γ)·t = 200.25, not floored to 200


def test_bad_values_are_refused_before_any_model_call():
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return x * 0

    x = torch.randn(1, 4)
    sig = samplers.get_sigmas("karras", 4, sigma_min=0.03, sigma_max=14.6)
    with pytest.raises(InvalidOption, match=r"eta.*1\.5"):
        samplers.sample("tcd", model, x * 14.6, sig, eta=1.5, disable=True)
    with pytest.raises(InvalidType, match="VPDiscrete"):
        samplers.sample("tcd", model, x * 14.6, sig, native=samplers.VE(0.03, 14.6), disable=True)
    theirs = diffusers.TCDScheduler.from_config({**SD15, "_class_name": "TCDScheduler"})
    shim = SamplerScheduler.from_config(theirs.config)
    shim.set_timesteps(4)
    with pytest.raises(InvalidOption, match=r"eta=1\.5.*\[0, 1\]"):
        shim.step(MODEL(NOISE, shim.timesteps[0]), shim.timesteps[0], NOISE, eta=1.5)
    assert calls == []
    with pytest.raises(InvalidInput):
        samplers.sample("tcd", model, x * 14.6, sig, eta=float("nan"), disable=True)


@pytest.mark.parametrize("kw", [dict(num_inference_steps=4, original_inference_steps=30),
                                dict(timesteps=[999, 759, 499, 259]), dict(timesteps=[800]),
                                dict(timesteps=[999, 700, 400, 100, 0]),  # ends at 0: an idle last call
                                dict(timesteps=[0]),  # all idle: the latent comes back as it was
                                dict(num_inference_steps=4, strength=0.5),
                                # cut by strength, the last step is not at num_inference_steps − 1: it draws too
                                dict(timesteps=[999, 759, 499, 259], strength=0.5)])
def test_the_set_timesteps_options_of_tcd_pipelines_keep_the_image(kw):
    # Hyper-SD's one-step TCD runs timesteps=[800] with eta=1; a custom grid ending at timestep 0 steps from 0 to 0
    theirs = diffusers.TCDScheduler.from_config({**SD15, "_class_name": "TCDScheduler"})
    runs = []
    for scheduler in (theirs, SamplerScheduler.from_config(theirs.config)):
        g = torch.Generator().manual_seed(3)
        scheduler.set_timesteps(**kw)
        latents = NOISE * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            out = MODEL(scheduler.scale_model_input(latents, t), t)
            latents = scheduler.step(out, t, latents, eta=1.0 if kw.get("timesteps") == [800] else 0.3,
                                     generator=g).prev_sample
        runs.append((latents, torch.randn(3, generator=g)))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=0, atol=0)


def test_a_pipelines_eta_sets_gamma_on_any_tcd_run_and_ddims_eta_still_runs_on_another_grid():
    x = NOISE[:1]
    gens = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    tcd_config = diffusers.TCDScheduler.from_config({**SD15, "_class_name": "TCDScheduler"}).config
    runs = {}
    for eta in (0.0, 0.3):
        shim = SamplerScheduler.from_config(tcd_config, schedule="karras")  # TCD on another grid
        shim.set_timesteps(4)
        latents = x * shim.init_noise_sigma
        for t in shim.timesteps:
            latents = shim.step(MODEL(shim.scale_model_input(latents, t), t), t, latents, eta=eta,
                                generator=gens()).prev_sample
        assert shim.spec.name == "tcd" and shim._eta == eta
        runs[eta] = latents
    assert (runs[0.3] - runs[0.0]).abs().max() > 1e-3  # the pipeline's default eta=0 is γ = 0, not tcd's 0.3
    ddim = SamplerScheduler.from_config(diffusers.DDIMScheduler.from_config(SD15).config, schedule="karras")
    ddim.set_timesteps(4)
    latents = x * ddim.init_noise_sigma
    for t in ddim.timesteps:  # DDIM's own sampler on a karras grid: its eta runs, as before TCD
        latents = ddim.step(MODEL(ddim.scale_model_input(latents, t), t), t, latents, eta=0.5,
                            generator=gens()).prev_sample
    assert ddim._eta == 0.5 and torch.isfinite(latents).all()


def test_pred_noised_sample_is_the_point_before_the_noise_on_any_run_in_tcds_place():
    # tcd on a karras grid at γ = 0.3: x_s differs from prev_sample by the step's noise where it adds any; another
    # sampler in TCDScheduler's place (euler: no noise) gives its next point, prev_sample itself
    tcd_config = diffusers.TCDScheduler.from_config({**SD15, "_class_name": "TCDScheduler"}).config
    for kw, eta in ((dict(schedule="karras"), 0.3), (dict(sampler="euler"), 0.0)):
        shim = SamplerScheduler.from_config(tcd_config, **kw)
        shim.set_timesteps(4)
        latents = NOISE[:1] * shim.init_noise_sigma
        for i, t in enumerate(shim.timesteps):
            out = shim.step(MODEL(shim.scale_model_input(latents, t), t), t, latents, eta=eta,
                            generator=torch.Generator().manual_seed(i))
            gap = float((out.pred_noised_sample - out.prev_sample).abs().max())
            sigma_next = shim._plan.schedule[i + 1]  # karras ends σ(t = 0), 0: its last two steps add no noise
            noisy = eta > 0 and tcd_point(shim.native, eta, sigma_next) < sigma_next
            assert noisy == (eta > 0 and i < 2)
            assert gap > 1e-2 if noisy else gap <= 1e-6, (kw, i, gap)
            assert not hasattr(out, "pred_original_sample")
            latents = out.prev_sample


def test_tcd_on_another_config_places_its_point_on_that_models_table():
    # a zero-SNR v config's ᾱ, not tcd's default SD-1.x table, wherever tcd runs in the shim ("TCDScheduler" on a
    # DDIM config is TCDScheduler.from_config(config), the class's own run on its own table from that config)
    config = diffusers.DDIMScheduler.from_config(CONFIGS["zero-SNR-v"]).config
    for sampler in ("tcd", "TCDScheduler"):
        shim = SamplerScheduler.from_config(config, sampler=sampler)
        shim.set_timesteps(4)
        assert torch.equal(shim._options["native"].alphas_cumprod, shim.native.alphas_cumprod)
        assert shim.native.zero_terminal_snr


def test_tcd_runs_on_the_models_own_table_and_a_model_without_one_is_refused():
    from models.pipeline import Pipeline

    eps = Pipeline.load(model="eps")
    _, _, options = eps.plan("tcd", None, 4, {})
    assert options["native"] is eps.native  # the shipped eps U-Net's table, not tcd's default
    flow = Pipeline.load(model="flow")
    with pytest.raises(InvalidOption, match="discrete timestep table.*flow model"):
        flow.plan("tcd", None, 4, {})
    assert flow.plan("tcd", None, 4, {"native": eps.native})[2]["native"] is eps.native  # asked for: runs
    config = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    with pytest.raises(InvalidOption, match="discrete timestep table.*flow model"):
        SamplerScheduler.from_config(config, sampler="tcd").set_timesteps(4)
    shim = SamplerScheduler.from_config(config, sampler="tcd", sampler_options={"native": eps.native})
    shim.set_timesteps(4)
    assert shim._options["native"] is eps.native
    with pytest.raises(InvalidOption, match="discrete timestep table"):  # None given is no table either
        SamplerScheduler.from_config(config, sampler="tcd", sampler_options={"native": None}).set_timesteps(4)
    edm = diffusers.EDMEulerScheduler().config
    with pytest.raises(InvalidOption, match="discrete timestep table.*edm model"):
        SamplerScheduler.from_config(edm, sampler="tcd").set_timesteps(4)
    zero_snr = diffusers.DDIMScheduler.from_config(CONFIGS["zero-SNR-v"]).config
    shim = SamplerScheduler.from_config(zero_snr, sampler="tcd", sampler_options={"native": None})
    shim.set_timesteps(4)
    assert shim._options["native"] is shim.native  # the model's table, not tcd's default
    assert eps.plan("tcd", None, 4, {"native": None})[2]["native"] is eps.native

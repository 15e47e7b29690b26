"""A1111's timestep samplers "DDIM" and "PLMS" against their loops transcribed in float64 from its source
(AUTOMATIC1111/stable-diffusion-webui: modules/sd_samplers_timesteps.py ``CompVisSampler.get_timesteps`` / ``sample``,
which passes the unit noise x_T itself; modules/sd_samplers_timesteps_impl.py ``ddim`` / ``plms``): timesteps
clip(range(0, 1000, 1000 // n) + 1, 0, 999), the model's float32 ``alphas_cumprod`` read at them, the eps model called
at those integer timesteps, no final denoise; the result is the VP latent at timestep 1, which A1111 decodes.

The labels run the registry's ddim / plms on ``a1111:Timesteps`` with ``vp_state=True`` (samplers/core/labels.py).
"""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.core import names
from samplers.problems import GaussianMixture

SD15 = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
# ldm's buffer: betas linspace(√β) squared and cumprod in float64, stored in float32 (what A1111 reads)
_BETAS = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
AC = torch.cumprod(1 - _BETAS, 0).to(torch.float32).double()
GM = GaussianMixture.default(shape=(4, 8, 8), components=3, seed=6)
STEPS = [10, 20, 30, 50]


def a1111_timesteps(steps):
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


# --- the eps models: A1111 calls them with the VP latent and an integer timestep


def gm_eps(x_vp, t):
    """The Gaussian mixture's exact eps at ᾱ(t): a model that reads its time only through ᾱ."""
    abar = float(AC[int(t)])
    s = math.sqrt((1 - abar) / abar)
    x = x_vp / math.sqrt(abar)
    return (x - GM.denoiser(x, torch.full((x.shape[0],), s, dtype=torch.float64))) / s


def timed_eps(x_vp, t):
    """A model whose output depends on the timestep it is told, not only on the latent's noise level."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * (x_vp.ndim - 1)))
    return torch.tanh(x_vp) * (0.5 + 0.3 * torch.cos(t / 97.0)) + 0.2 * x_vp * (t / 1000.0)


def a1111_ddim(eps, x, timesteps, eta=0.0, randn_like=None):
    """sd_samplers_timesteps_impl.ddim (eta: opts.eta_ddim, 0 by default), in float64; its noise, drawn at every step
    (times σ_t = 0 at eta = 0), from ``randn_like`` (A1111's hijacked k_diffusion.sampling.torch.randn_like)."""
    alphas = AC[timesteps]
    alphas_prev = AC[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    calls = 0
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = eps(x, timesteps[index].item())
        calls += 1
        a_t, a_prev, sigma_t = alphas[index].item(), alphas_prev[index].item(), sigmas[index].item()
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        dir_xt = math.sqrt(1. - a_prev - sigma_t ** 2) * e_t
        noise = sigma_t * randn_like(x) if randn_like is not None else 0.0
        x = math.sqrt(a_prev) * pred_x0 + dir_xt + noise
    return x, calls


def a1111_plms(eps, x, timesteps):
    """sd_samplers_timesteps_impl.plms, in float64."""
    alphas = AC[timesteps]
    alphas_prev = AC[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    old_eps, calls = [], 0

    def step(x, e_t, index):
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        return math.sqrt(a_prev) * pred_x0 + math.sqrt(1. - a_prev) * e_t

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts, t_next = timesteps[index].item(), timesteps[max(index - 1, 0)].item()
        e_t = eps(x, ts)
        calls += 1
        if len(old_eps) == 0:
            x_prev = step(x, e_t, index)
            e_t_next = eps(x_prev, t_next)
            calls += 1
            e_p = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_p = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_p = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_p = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x = step(x, e_p, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
    return x, calls


A1111_LOOPS = {"DDIM": a1111_ddim, "PLMS": a1111_plms}


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def library_model(kind):
    """The same model as the library's denoiser D(x, σ): the eps model on the model's float32 table (A1111's)."""
    if kind == "gm":
        return lambda x, sigma, **kw: GM.denoiser(x, torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
                                                  .expand(x.shape[0]))
    return samplers.to_denoiser(lambda x_t, time: timed_eps(x_t, time), "eps", SD15.with_float32_alphas_cumprod())


def label_sigmas(label, steps):
    found, schedule, _ = names.resolve_call(label)
    name, options = names.resolve_schedule(schedule, native=SD15)
    return samplers.get_sigmas(name, steps, native=SD15, **options)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("label", ["DDIM", "PLMS"])
@pytest.mark.parametrize("kind", ["gm", "timed"])
def test_the_label_is_a1111s_sampler(label, kind, steps):
    """Before: the labels ran on the caller's schedule ending at 0, from z·σ_0: 0.6-0.75 % (DDIM) and 0.6-2.7 %
    (PLMS) of the latent's scale from A1111 on Karras / Uniform (and no schedule of their own)."""
    z = GM.noise(2, seed=3)
    ts = a1111_timesteps(steps)
    ref, ref_calls = A1111_LOOPS[label](gm_eps if kind == "gm" else timed_eps, z.clone(), ts)
    sigmas = label_sigmas(label, steps)
    assert len(sigmas) == len(ts)  # no 0 appended: the run ends at timestep 1
    model = Counted(library_model(kind))
    out = samplers.sample(label, model, z.clone(), sigmas, disable=True)
    assert rel(out, ref) <= 1e-10
    assert model.calls == ref_calls == len(ts) - 1 + (label == "PLMS")
    if 1000 % steps == 0:
        assert model.calls == steps - 1 + (label == "PLMS")


def test_the_schedule_is_a1111s_timesteps_on_its_float32_table():
    """Timesteps 1 + k·⌊1000/n⌋ (31 of them at n = 30, 999 clipped in at n = 27), σ read from the float32 ᾱ."""
    for steps in (10, 27, 30, 50):
        ts = a1111_timesteps(steps).flip(0)
        want = ((1 - AC[ts]) / AC[ts]).sqrt()
        got = samplers.get_sigmas("a1111:Timesteps", steps, native=SD15)
        assert rel(got, want) <= 1e-12, steps
    assert len(samplers.get_sigmas("a1111:Timesteps", 30, native=SD15)) == 31
    assert int(a1111_timesteps(27)[-1]) == 999
    with pytest.raises(samplers.InvalidInput, match="at most 500 steps"):
        samplers.get_sigmas("a1111:Timesteps", 600, native=SD15)
    with pytest.raises(samplers.InvalidInput):  # no training table: nothing to read the timesteps from
        samplers.get_sigmas("a1111:Timesteps", 10, native=samplers.RectifiedFlow(shift=3.0))


def test_a_callers_other_schedule_is_refused():
    """A1111 ignores the Schedule type for its timestep samplers: another schedule would not be its result."""
    for label in ("DDIM", "PLMS"):
        with pytest.raises(samplers.InvalidOption, match="a1111:Timesteps"):
            names.resolve_call(label, "karras")
        with pytest.raises(samplers.InvalidOption, match="steps its own timesteps"):
            names.resolve(f"{label} Karras")
        assert names.resolve_call(label, "a1111:Timesteps")[1] == "a1111:Timesteps"


def test_the_registry_names_are_unchanged():
    """The registry's ddim (η = 0) is Euler in VE: x_next = D + (σ_next/σ)(x − D), on the caller's schedule, from
    the caller's x, its result the VE x; plms too keeps its VE state (vp_state is off unless a label sets it)."""
    D = library_model("gm")
    z = GM.noise(2, seed=3)
    sigmas = samplers.get_sigmas("karras", 10, native=SD15)
    x = z * float(sigmas[0])
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = D(x, s)
        x = d + (x - d) * (s_next / s)
    out = samplers.sample("ddim", D, z * float(sigmas[0]), sigmas, disable=True)
    assert rel(out, x) <= 1e-12
    assert samplers.info("ddim").options["vp_state"] is False and samplers.info("plms").options["vp_state"] is False
    for name in ("ddim", "plms"):  # ending at σ > 0 the registry returns the VE x there
        s = sigmas[:-1]
        assert torch.equal(samplers.sample(name, D, z * float(s[0]), s, disable=True),
                           samplers.sample(name, D, z * float(s[0]), s, disable=True, vp_state=False))


def test_vp_state_converts_at_both_ends():
    D = library_model("gm")
    z = GM.noise(1, seed=4)
    s = label_sigmas("DDIM", 10)
    ve = samplers.sample("ddim", D, z * math.sqrt(1 + float(s[0]) ** 2), s, disable=True)
    vp = samplers.sample("ddim", D, z, s, disable=True, vp_state=True)
    assert rel(vp, ve / math.sqrt(1 + float(s[-1]) ** 2)) <= 1e-14
    with pytest.raises(samplers.InvalidType, match="vp_state must be True or False"):
        samplers.sample("ddim", D, z, s, disable=True, vp_state="yes")


def test_the_pipeline_runs_a1111s_ddim_and_plms(tmp_path):
    """Pipeline.txt2img with the labels: A1111's timesteps, x_T = the unit noise, the VP latent at timestep 1 decoded
    (the U-Net is float32: 1e-5). The reference loops call the pipeline's own denoiser at σ(t)."""
    from models.pipeline import Pipeline, seeded_randn
    from models.unet import DiffusionModel, vae_record
    from test_pipeline import tiny_vae
    from test_text_unet import tiny_config

    vae = tiny_vae(tmp_path)
    pipe = Pipeline(DiffusionModel(tiny_config(vae=vae_record(vae))), vae)
    pipe.decode = lambda latents, output="pil": latents  # the latent A1111 would decode
    prompt, seed, steps = "a cat", 7, 10
    for label in ("DDIM", "PLMS"):
        latent = pipe.txt2img(prompt, sampler=label, steps=steps, seed=seed, width=32, height=32, progress=False)
        D = pipe.denoiser([prompt])
        ac = pipe.native.with_float32_alphas_cumprod().alphas_cumprod

        def eps(x_vp, t):
            a = float(ac[int(t)])
            s = math.sqrt((1 - a) / a)
            x = (x_vp / math.sqrt(a)).float()
            return ((x - D(x, torch.full((x.shape[0],), s))) / s).double()

        noise = seeded_randn(tuple(latent.shape), [seed]).double()
        global AC
        saved, AC = AC, ac.double()
        try:
            with torch.no_grad():
                ref, _ = A1111_LOOPS[label](eps, noise, a1111_timesteps(steps))
        finally:
            AC = saved
        assert rel(latent.double(), ref) <= 1e-5, label


@pytest.mark.parametrize("steps", [10, 30])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_a1111s_ddim_with_eta_draws_a1111s_noise(steps, eta):
    """A1111's DDIM adds σ_t·randn_like(x) at every step, which its hijack answers from each image's generator after
    the image's starting noise (the label's noise_sampler="a1111"): its η > 0 image (it drew this library's noise)."""
    seeds = [11, 12]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    draw = lambda: torch.stack([torch.randn(GM.shape, generator=g) for g in gens]).double()  # noqa: E731
    z = draw()  # ImageRNG.first: the images' starting noise
    ref, _ = a1111_ddim(gm_eps, z.clone(), a1111_timesteps(steps), eta=eta, randn_like=lambda x: draw())
    out = samplers.sample("DDIM", library_model("gm"), z.clone(), label_sigmas("DDIM", steps), disable=True,
                          eta=eta, seed=seeds)
    assert rel(out, ref) < 1e-6

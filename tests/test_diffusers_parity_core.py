"""The registry samplers called directly equal diffusers' own schedulers on the same model, timesteps and noise
(float32, ≤ 1e-5): the equivalences the shim relies on, without the shim.

The model is the Gaussian mixture written as a native eps- (or flow-) model taking diffusers' timesteps (the
``sd15`` fixture). diffusers runs its own loop; we run the registry sampler on the converted denoiser with its
sigmas. Every scheduler class through the shim is tests/test_diffusers_compat_table.py.
"""
import math

import pytest
import torch

import samplers
from samplers.core.native import RectifiedFlow

diffusers = pytest.importorskip("diffusers")

# A step count that divides 1000: diffusers' DDIM steps from t to t − 1000 // steps, which is the next listed
# timestep only then (with "trailing" spacing and 12 steps it is not, a quirk of diffusers, not a sampler).
STEPS = 10


def replay_generator(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return lambda s, s_next: torch.randn(shape, generator=g)


@pytest.mark.parametrize("spacing, eta", [("leading", 0.0), ("trailing", 1.0)])
def test_ddim(sd15, spacing, eta):
    sch = diffusers.DDIMScheduler(**sd15.betas, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
                                  set_alpha_to_one=True, clip_sample=False)
    sch.set_timesteps(STEPS)
    latents, g = sd15.noise.clone(), torch.Generator().manual_seed(5)
    for t in sch.timesteps:
        latents = sch.step(sd15.model32(latents, t), t, latents, eta=eta, generator=g).prev_sample
    kw = {"eta": eta, "noise_sampler": replay_generator(5, sd15.noise.shape)} if eta else {}
    out = sd15.run("ddim", sd15.table_sigmas(sch.timesteps), **kw)  # DDIM starts at x_T = n: x_T/√ᾱ_T in VE
    torch.testing.assert_close(out, latents, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, name, seed", [("EulerDiscreteScheduler", "euler", None),
                                             ("EulerAncestralDiscreteScheduler", "euler_ancestral", 3),
                                             ("HeunDiscreteScheduler", "heun", None)])
def test_k_style_schedulers(sd15, cls, name, seed):
    sch = getattr(diffusers, cls)(**sd15.betas, timestep_spacing="trailing", steps_offset=1)
    ref = sd15.diffusers_loop(sch, STEPS, seed=seed)
    sig = torch.cat([sch.sigmas[:1], sch.sigmas[1::2]]) if name == "heun" else sch.sigmas  # Heun repeats inner σ
    assert float(sig[-1]) == 0.0 and len(sig) == STEPS + 1
    kw = {"noise_sampler": replay_generator(seed, sd15.noise.shape)} if seed is not None else {}
    out = samplers.sample(name, sd15.denoiser, sd15.noise * sch.init_noise_sigma, sig.double(), disable=True, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_flow_match_euler_from_t1(sd15):
    flow = RectifiedFlow(shift=3.0, multiplier=1000.0)
    fmodel = sd15.gm.as_model("flow", flow)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sch.set_timesteps(STEPS)
    assert float(sch.sigmas[0]) == 1.0  # t = 1: pure noise, σ_VE = inf
    latents = sd15.noise.clone()
    for t in sch.timesteps:
        latents = sch.step(fmodel(latents.double(), t.double().expand(latents.shape[0])).float(), t, latents).prev_sample
    t_flow = sch.sigmas.double()
    sig = torch.where(t_flow >= 1, torch.full_like(t_flow, math.inf), t_flow / (1 - t_flow))
    out = samplers.sample("euler", samplers.to_denoiser(fmodel, "flow", flow), samplers.initial_latent(sd15.noise, sig),
                          sig, disable=True)
    torch.testing.assert_close(out, latents, rtol=1e-5, atol=1e-5)

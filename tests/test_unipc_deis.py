"""UniPC (bh1, bh2; orders 1-3; with and without its corrector): parity with diffusers and convergence order."""
import math

import pytest
import torch

import samplers

diffusers = pytest.importorskip("diffusers")

STEPS = 10


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("corrector", [True, False])
def test_unipc_parity_with_diffusers(sd15, variant, order, corrector):
    # bh1's final step to σ = 0 is NaN in diffusers (B(h) = −∞ times a zero sum), so bh1 stops at σ_min there
    final = "zero" if variant == "bh2" else "sigma_min"
    sch = diffusers.UniPCMultistepScheduler(**sd15.betas, solver_order=order, solver_type=variant, final_sigmas_type=final,
                                            disable_corrector=[] if corrector else list(range(STEPS)))
    theirs = sd15.diffusers_loop(sch, STEPS)
    sig = sd15.table_sigmas(sch.timesteps)
    if final == "sigma_min":
        sig[-1] = sd15.vp.sigmas[0]
    out = sd15.run(f"unipc_{variant}", sig, order=order, corrector=corrector)
    out = out / math.sqrt(1 + float(sig[-1]) ** 2)  # diffusers returns sd15.vp x_t at σ_min (= VE x at σ = 0)
    assert float((out - theirs).abs().max()) < 1e-4


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order,corrector,expected", [(1, False, 1), (1, True, 2), (2, False, 2), (2, True, 3),
                                                      (3, False, 3), (3, True, 4)])
def test_unipc_convergence_order(two_clusters, variant, order, corrector, expected):
    """UniP-p has order p, UniC adds one (measured without the lower-order final steps)."""
    # (at order 1 every step is first order: lower_order_final is not read, and refused)
    kw = dict(order=order, corrector=corrector, **({"lower_order_final": False} if order > 1 else {}))
    name = f"unipc_{variant}"
    n = 64 if expected == 3 else 32  # the 3rd-order predictor approaches its slope from above (3.36 at 32)
    slope = math.log2(two_clusters.error(name, two_clusters.refined_sigmas(n, order), **kw) / two_clusters.error(name, two_clusters.refined_sigmas(2 * n, order), **kw))
    assert abs(slope - expected) < 0.3, f"{name} {kw}: observed {slope:.2f}, expected {expected}"
    if order == 3 and corrector:
        assert samplers.info(name).order == expected


def test_unipc_order_1_predictor_is_ddim(two_clusters):
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.1, sigma_max=10.0)
    a = samplers.sample("unipc_bh2", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, order=1, corrector=False)
    torch.testing.assert_close(a, samplers.sample("ddim", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        samplers.sample("unipc_bh1", two_clusters.gm.denoiser, two_clusters.x, sig, order=4)


# ---------------------------------------------------------------------------------------------------
# DEIS, iPNDM, PLMS


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside diffusers' DEIS
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_parity_with_diffusers(sd15, order):
    sch = diffusers.DEISMultistepScheduler(**sd15.betas, solver_order=order)  # stops at σ_min (no final_sigmas_type)
    theirs = sd15.diffusers_loop(sch, STEPS)
    sig = sd15.table_sigmas(sch.timesteps)
    sig[-1] = float(sch.sigmas[-1])
    out = sd15.run("deis", sig, order=order) / math.sqrt(1 + float(sig[-1]) ** 2)
    assert float((out - theirs).abs().max()) < 1e-4


def test_plms_parity_with_diffusers_pndm(sd15):
    sch = diffusers.PNDMScheduler(**sd15.betas, skip_prk_steps=True, set_alpha_to_one=True)
    theirs = sd15.diffusers_loop(sch, STEPS)
    out = sd15.run("plms", sd15.table_sigmas(torch.unique(sch.timesteps).flip(0)))
    assert float((out - theirs).abs().max()) < 1e-4


@pytest.mark.parametrize("steps", [4, 10, 20])
def test_pndm_parity_with_diffusers_pndm(sd15, steps):
    """PNDM with its pseudo Runge–Kutta warm-up (diffusers' default, skip_prk_steps=False): the warm-up
    midpoints are the table's timesteps t − Δt/2, as diffusers takes them."""
    sch = diffusers.PNDMScheduler(**sd15.betas, set_alpha_to_one=True)
    theirs = sd15.diffusers_loop(sch, steps)
    assert len(sch.timesteps) == 4 * min(steps, 3) + max(steps - 3, 0)
    timesteps = sch._timesteps[::-1].copy()  # the step boundaries, highest first
    half = 1000 // steps // 2
    mids = [float(sd15.vp.sigmas[int(t) - half]) for t in timesteps[:3]]
    out = sd15.run("pndm", sd15.table_sigmas(torch.as_tensor(timesteps)), midpoints=mids)
    assert float((out - theirs).abs().max()) < 1e-4


def test_pndm_midpoints_are_checked(sd15):
    sig = samplers.get_sigmas("karras", 5, sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(ValueError, match="strictly inside each of the first 3 steps"):
        sd15.run("pndm", sig, midpoints=[float(sig[0]) * 2, 1.0, 1.0])


@pytest.mark.parametrize("steps", [6, 10, 20])
def test_ipndm_parity_with_diffusers(sd15, steps):
    """diffusers' IPNDMScheduler on a v-prediction model of the same data. Its own trigonometric table starts
    at α = 0 (σ = inf), where it divides by max(α, 1e-8) and loses the data mean; ``trained_betas`` (its
    noise levels b = σ/√(1 + σ²), one per step and a final 0) puts both on the same finite Karras σ."""

    def v_model(x_t, t):  # diffusers' timestep is t = 2φ/π with α = cos φ, b = sin φ
        phi = (t.double() * math.pi / 2).reshape(-1, *[1] * (x_t.ndim - 1))
        c, s = phi.cos(), phi.sin()
        x0 = sd15.gm.denoise(x_t.double() / c, (s / c).flatten())
        return (c * (x_t.double() - c * x0) / s - s * x0).float()

    sig = samplers.get_sigmas("karras", steps, sigma_min=0.02, sigma_max=20.0)
    b = (sig / (1 + sig**2).sqrt()).tolist()
    sch = diffusers.IPNDMScheduler(num_train_timesteps=1000, trained_betas=b)
    sch.set_timesteps(steps)
    latents = sd15.noise * b[0]  # sd15.vp x_t at σ_0 is the VE x / √(1 + σ_0²)
    for t in sch.timesteps:
        latents = sch.step(v_model(sch.scale_model_input(latents, t), t.expand(latents.shape[0])), t, latents).prev_sample
    out = samplers.sample("ipndm", sd15.gm.denoiser, sd15.noise * float(sig[0]), sig, disable=True)
    assert float((out - latents).abs().max()) < 1e-4  # b = 0 at the end: sd15.vp x_t is the VE x


@pytest.mark.parametrize("name,expected", [("deis", 3), ("ipndm", 2), ("plms", 2), ("pndm", 2)])
def test_deis_ipndm_plms_convergence_order(two_clusters, name, expected):
    """DEIS integrates its interpolant exactly (order 3); iPNDM/PLMS's constant-step coefficients give 2
    (PNDM's Runge–Kutta warm-up does not change that)."""
    assert samplers.info(name).order == expected
    slope = math.log2(two_clusters.error(name, two_clusters.refined_sigmas(128, 3)) / two_clusters.error(name, two_clusters.refined_sigmas(256, 3)))
    assert abs(slope - expected) < 0.3, f"{name}: observed {slope:.2f}"


def test_multistep_identities(two_clusters):
    sig = samplers.get_sigmas("karras", 7, sigma_min=0.1, sigma_max=10.0)
    run = lambda name, **kw: samplers.sample(name, two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, **kw)  # noqa: E731
    for a, b in ((run("deis", order=1), run("ddim")), (run("ipndm", max_order=1), run("euler"))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # ComfyUI's ipndm_v (sample_ipndm_v) is iPNDM with step-ratio weights and a final denoise, not lms
    for name in ("ipndm_v", "sample_ipndm_v", "comfyui:ipndm_v"):
        label = samplers.core.names.resolve(name)
        assert (label.sampler, label.options) == ("ipndm", {"final_denoise": True, "variable_steps": True})
    assert samplers.core.names.resolve("sample_deis").options == {"mode": "tab", "lower_order_final": False}

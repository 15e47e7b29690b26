"""ComfyUI's ``scheduler`` values and A1111's "Schedule type" menu on a zero-terminal-SNR discrete model (ᾱ_T = 0:
``rescale_betas_zero_snr``; v-prediction zero-SNR checkpoints such as NoobAI-XL v-pred, on SD 1.x / SDXL's betas),
against each tool's own σ list, at 1, 2, 5 and 20 steps.

Neither tool keeps σ_max = inf there. The references below are written from the tools' sources (read, not imported):

- ComfyUI, comfy/model_sampling.py (Comfy-Org/ComfyUI 2fd20839): ``ModelSamplingDiscrete._register_schedule`` with
  ``zsnr=True`` (the ModelSamplingDiscrete node's zsnr option, or a model config's sampling_settings["zsnr"]) builds
  σ from make_beta_schedule("linear") (float64: linspace(√β₀, √β₁)²), then ``rescale_zero_terminal_snr_sigmas``
  (ᾱ = 1/(σ² + 1), Lin et al.'s shift and scale of √ᾱ, ``alphas_bar[-1] = 4.8973451890853435e-08``);
  ``set_sigmas`` stores σ and log σ as float32. ``timestep(σ)`` is the nearest log-σ index, ``sigma(t)`` log-σ
  interpolation. comfy/samplers.py ``calculate_sigmas`` (311c0140) passes karras / exponential / kl_optimal
  ``float(model_sampling.sigma_min)`` / ``float(model_sampling.sigma_max)`` (the table's ends) and the others the
  model sampling itself (the handlers are tests/test_tool_schedules.py's transcriptions).
- A1111, modules/sd_models.py (AUTOMATIC1111/stable-diffusion-webui): ``apply_alpha_schedule_override`` replaces
  ``sd_model.alphas_cumprod`` (float32: ldm's DDPM.register_schedule stores it so) by
  ``rescale_zero_terminal_snr_abar`` of it (in float32, ``alphas_bar[-1] = 4.8973451890853435e-08``) for the "Zero
  Terminal SNR" noise schedule (and ztsnr models); k-diffusion's CompVisDenoiser / CompVisVDenoiser take σ =
  ((1 − ᾱ)/ᾱ)^½ of it (float32). sd_samplers_kdiffusion.py ``KDiffusionSampler.get_sigmas`` passes
  ``sigma_min, sigma_max = model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item()`` to modules/sd_schedulers.py's
  functions (5bbbda47), written out below; those that call k-diffusion (Karras, Exponential, Polyexponential, Uniform:
  the inner model's get_sigmas, sigma_to_t / t_to_sigma) call the installed k-diffusion. The A1111 names build on
  that float32 table (``VPDiscrete.with_float32_alphas_cumprod``; tests/test_a1111_float32_table.py), ComfyUI's on the
  float64 one.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import samplers
from samplers.core import labels, names
from test_tool_schedules import COMFY_HANDLERS, a1111_ays, close, comfy_calculate_sigmas

# SD 1.x / 2.x / SDXL's training betas (NoobAI-XL v-pred's too), rescaled to zero terminal SNR
ZSNR = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)
SD15 = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
STEPS = [1, 2, 5, 20]
TOOLS_ALPHA_BAR_T = 4.8973451890853435e-08  # both tools' source, written out (labels has it once for the library)
# A1111's table: the model's float32 ᾱ rescaled in float32, its last ᾱ the stand-in in float32
A1111_TABLE = ZSNR.with_float32_alphas_cumprod().with_terminal_alpha_bar(TOOLS_ALPHA_BAR_T)


def rescaled_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The zero-terminal-SNR rescale both tools run (ComfyUI's rescale_zero_terminal_snr_sigmas, A1111's
    rescale_zero_terminal_snr_abar: the same steps, in the dtype of the ᾱ they are given: A1111's float32 buffer),
    the last ᾱ set to their finite 4.8973451890853435e-08."""
    alphas_bar_sqrt = alphas_cumprod.sqrt()
    alphas_bar_sqrt_0 = alphas_bar_sqrt[0].clone()
    alphas_bar_sqrt_T = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= alphas_bar_sqrt_T
    alphas_bar_sqrt *= alphas_bar_sqrt_0 / (alphas_bar_sqrt_0 - alphas_bar_sqrt_T)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas_bar[-1] = 4.8973451890853435e-08
    return alphas_bar


def rescaled_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ of :func:`rescaled_alphas_cumprod`."""
    alphas_bar = rescaled_alphas_cumprod(alphas_cumprod)
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


class ComfyZsnr:
    """ComfyUI's ModelSamplingDiscrete(zsnr=True) on SD's sampling settings (linear_start 0.00085, linear_end 0.012,
    1000 timesteps): its float32 σ / log σ tables, timestep() and sigma(), as Python floats for the handlers."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # make_beta_schedule
        alphas_cumprod = torch.cumprod(1. - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        sigmas = rescaled_sigmas(1 / ((sigmas * sigmas) + 1))  # rescale_zero_terminal_snr_sigmas
        self.table, self.log_sigmas = sigmas.float(), sigmas.log().float()  # set_sigmas
        self.sigmas = self.table.tolist()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]  # float(model_sampling.sigma_min / _max)

    def timestep(self, sigma):
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        return int((log_sigma - self.log_sigmas[:, None]).abs().argmin(dim=0))

    def sigma(self, timestep):
        t = torch.clamp(torch.as_tensor(timestep).float(), min=0, max=len(self.sigmas) - 1)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return float(((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp())


COMFY = ComfyZsnr()


def a1111_zsnr_sigmas() -> torch.Tensor:
    """A1111's model_wrap.sigmas under "Zero Terminal SNR" on SD's config (float32 throughout)."""
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()  # ldm "linear"
    alphas_cumprod = torch.tensor(np.cumprod(1. - betas, axis=0), dtype=torch.float32)  # DDPM.register_schedule
    return rescaled_sigmas(alphas_cumprod)  # rescale_zero_terminal_snr_abar; k-diffusion's DiscreteEpsDDPMDenoiser


def kdiffusion():
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules

    try:
        return kdiffusion_modules()
    except KDiffusionUnavailable as e:  # pragma: no cover - installed by make install
        pytest.skip(str(e))


def a1111_table_schedule(label: str, n: int, sigmas) -> list[float]:
    """A1111's table schedules (modules/sd_schedulers.py simple_scheduler / ddim_scheduler) on its σ table ``sigmas``
    (ascending, one per training timestep)."""
    if label == "Simple":  # simple_scheduler
        ss = len(sigmas) / n
        return [float(sigmas[-(1 + int(x * ss))]) for x in range(n)] + [0.0]
    if label == "DDIM":  # ddim_scheduler
        sigs, ss, x = [], max(len(sigmas) // n, 1), 1
        while x < len(sigmas):
            sigs += [float(sigmas[x])]
            x += ss
        return sigs[::-1] + [0.0]
    raise AssertionError(f"{label!r} is not a table schedule of A1111's")


def a1111_schedule(label: str, n: int) -> list[float]:
    """KDiffusionSampler.get_sigmas with the Schedule type ``label`` (sd_schedulers.py; opts at their defaults:
    rho 0 so each function's own ρ, Beta α = β = 0.6)."""
    sampling, external = kdiffusion()
    inner = external.DiscreteSchedule(a1111_zsnr_sigmas(), quantize=False)  # CompVis(V)Denoiser's schedule part
    sigma_min, sigma_max = inner.sigmas[0].item(), inner.sigmas[-1].item()
    if label == "Uniform":
        return inner.get_sigmas(n).tolist()
    if label == "Karras":
        return sampling.get_sigmas_karras(n=n, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu").tolist()
    if label == "Exponential":
        return sampling.get_sigmas_exponential(n=n, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu").tolist()
    if label == "Polyexponential":
        return sampling.get_sigmas_polyexponential(n=n, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu").tolist()
    if label in ("SGM Uniform", "Normal"):  # sgm_uniform / normal_scheduler
        start, end = inner.sigma_to_t(torch.tensor(sigma_max)), inner.sigma_to_t(torch.tensor(sigma_min))
        ts = torch.linspace(start, end, n + 1)[:-1] if label == "SGM Uniform" else torch.linspace(start, end, n)
        return [float(inner.t_to_sigma(t)) for t in ts] + [0.0]
    if label == "KL Optimal":
        alpha_min, alpha_max = torch.arctan(torch.tensor(sigma_min)), torch.arctan(torch.tensor(sigma_max))
        step_indices = torch.arange(n + 1)
        return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max).tolist()
    if label == "Align Your Steps":
        return a1111_ays(n)  # get_align_your_steps_sigmas: the SD 1.5 levels, whatever the model's table
    if label in ("Simple", "DDIM"):
        return a1111_table_schedule(label, n, inner.sigmas)
    if label == "Beta":  # beta_scheduler
        timesteps = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)]
        return [sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps] + [0.0]
    if label == "Turbo":  # Forge's / reForge's turbo_scheduler: its float32 timesteps, read from the table
        from test_forge_schedules import forge_turbo_timesteps

        return [float(inner.sigmas[t]) for t in forge_turbo_timesteps(n)] + [0.0]
    if label in ("Align Your Steps GITS", "Align Your Steps 11", "Align Your Steps 32"):  # reForge's: SD 1.5 lists
        from test_forge_schedules import REFORGE_LEVELS, reforge_ays

        return reforge_ays(REFORGE_LEVELS[label]["sd15"], n).tolist()
    raise AssertionError(f"no A1111 transcription for {label!r}")


def close_kl_optimal(ours_, tool, sigma_max=None, rtol=2e-5):
    """KL Optimal as both tools compute it: tan of a float32 angle (ComfyUI's kl_optimal_scheduler: a float32 arange
    times math.atan(σ); A1111's kl_optimal: torch.arctan of float32 tensors). Near π/2 tan magnifies the angle's
    rounding (half an ulp, 6e-8) by 1 + σ² ≈ 2e7: at σ_max ≈ 4518.76 both tools' first level is 4518.182, up to
    3e-4 from σ_max itself, which this library's float64 formula gives (``sigma_max``: the table's the name reads,
    ComfyUI's by default); the other levels agree to float32 rounding."""
    ours_, tool = torch.as_tensor(ours_, dtype=torch.float64), torch.as_tensor(tool, dtype=torch.float64)
    close(ours_[1:], tool[1:], rtol=rtol)
    if sigma_max is None:
        sigma_max = ZSNR.with_terminal_alpha_bar(TOOLS_ALPHA_BAR_T).sigma_max
    assert ours_[0] == pytest.approx(sigma_max, rel=1e-12)
    assert float(tool[0]) == pytest.approx(4518.18212890625) and float(ours_[0] / tool[0] - 1) < 3e-4


def comfy_kl_optimal(n, sigma_min, sigma_max):  # comfy/samplers.py kl_optimal_scheduler, as ComfyUI computes it
    adj_idxs = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = adj_idxs.new_zeros(n + 1)
    sigmas[:-1] = (adj_idxs * math.atan(sigma_min) + (1 - adj_idxs) * math.atan(sigma_max)).tan_()
    return sigmas


def ours(label: str, n: int, native=ZSNR) -> torch.Tensor:
    """The schedule by its tool name, both ways callers build it: resolved for the model, then built (the pipeline,
    the diffusers shim), and by name through get_sigmas; the two agree exactly."""
    name, options = names.resolve_schedule(label, native=native)
    resolved = samplers.get_sigmas(name, n, native=native, **options)
    assert torch.equal(resolved, samplers.get_sigmas(label, n, native=native))
    return resolved


def test_the_tools_constant_and_table():
    """One named constant, the tools' own; the library's model as the tools read it is their table."""
    assert labels.TOOLS_ZERO_SNR_ALPHA_BAR == TOOLS_ALPHA_BAR_T
    tool = ZSNR.with_terminal_alpha_bar(labels.TOOLS_ZERO_SNR_ALPHA_BAR)
    assert math.isinf(ZSNR.sigma_max) and tool.sigma_max == pytest.approx(4518.7636986558555, rel=1e-12)
    close(tool.sigmas, COMFY.table, rtol=1e-6)
    close(tool.sigmas, a1111_zsnr_sigmas())
    # A1111's own: its float32 rescale of its float32 ᾱ (with_float32_alphas_cumprod), to a float32 rounding of σ; the
    # float64 rescale above is up to 1.7e-5 off at timesteps 1-3 (float32 √ᾱ near 1)
    close(A1111_TABLE.sigmas, a1111_zsnr_sigmas(), rtol=1.5e-7)
    assert torch.equal(tool.alphas_cumprod[:-1], ZSNR.alphas_cumprod[:-1]) and tool.sigma_min == ZSNR.sigma_min
    assert ZSNR.with_terminal_alpha_bar(labels.TOOLS_ZERO_SNR_ALPHA_BAR) is tool  # built once per model


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("scheduler", list(COMFY_HANDLERS))
def test_comfyui_schedulers_on_a_zero_snr_model_are_comfyuis(scheduler, n):
    """Before: simple / normal / kl_optimal started at σ = inf (kl_optimal off at every level, 2.46488 for 2.46371),
    karras / exponential were refused for want of a finite σ_max."""
    if scheduler == "kl_optimal" and n == 1:
        # ComfyUI's kl_optimal divides by n − 1: NaN at one step; here the one level is its σ_max
        close(ours("comfyui:kl_optimal", 1), [COMFY.sigma_max, 0.0])
        return
    if scheduler == "kl_optimal":
        close_kl_optimal(ours("comfyui:kl_optimal", n), comfy_kl_optimal(n, COMFY.sigma_min, COMFY.sigma_max))
    close(ours(f"comfyui:{scheduler}", n)[1 if scheduler == "kl_optimal" else 0:],
          comfy_calculate_sigmas(COMFY, scheduler, n)[1 if scheduler == "kl_optimal" else 0:])


# against k-diffusion's float32 formulas (Karras 2.5e-6 off at 20 steps: (σ^(1/7) ramp)^7 in float32); before the
# names read A1111's float32 table they were 1.1e-5 to 1.4e-5 off (σ_min, DDIM's second entry)
A1111_RTOL = 5e-6


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("label", list(labels.A1111_SCHEDULERS))
def test_a1111_schedule_types_on_a_zero_snr_model_are_a1111s(label, n):
    if label == "KL Optimal":
        close_kl_optimal(ours(f"a1111:{label}", n), a1111_schedule(label, n), A1111_TABLE.sigma_max, A1111_RTOL)
    else:
        close(ours(f"a1111:{label}", n), a1111_schedule(label, n), rtol=A1111_RTOL)


@pytest.mark.parametrize("name", [k for k in labels.COMFYUI_SCHEDULERS if k.startswith("AlignYourSteps")])
def test_comfyui_align_your_steps_reads_no_table(name):
    """ComfyUI's AlignYourStepsScheduler node interpolates its own levels, whatever the model: unchanged."""
    for n in STEPS:
        assert torch.equal(ours(f"comfyui:{name}", n), ours(f"comfyui:{name}", n, native=SD15))


@pytest.mark.parametrize("name", ["karras", "exponential", "simple", "normal", "kl_optimal", "sgm_uniform",
                                  "ddim_uniform", "beta_timesteps", "linspace", "trailing", "leading"])
def test_registry_names_on_a_zero_snr_model_keep_the_models_table(name):
    """The registry's names keep diffusers' convention there: σ_max = inf (refused by karras / exponential, the
    first level of the table schedules), no tool constant in their options."""
    assert names.resolve_schedule(name, native=ZSNR) == (name, {})
    if name in ("karras", "exponential"):
        with pytest.raises(samplers.InvalidInput, match="finite sigma_max") as refused:
            samplers.get_sigmas(name, 5, native=ZSNR)
        assert "'a1111:Karras'" in str(refused.value)  # the fix it names runs there
        assert float(samplers.get_sigmas("a1111:Karras", 5, native=ZSNR)[0]) == pytest.approx(4518.76, rel=1e-5)
        return
    for n in STEPS:
        sig = samplers.get_sigmas(name, n, native=ZSNR)
        if name not in ("leading", "ddim_uniform"):  # these two do not start at the table's last timestep
            assert math.isinf(float(sig[0]))


@pytest.mark.parametrize("label", ["comfyui:karras", "comfyui:simple", "a1111:Karras", "a1111:Uniform", "KL Optimal"])
def test_tool_names_on_other_models_are_unchanged(label):
    """Only a zero-terminal-SNR model's table changes for the tools: on SD 1.5's own table the options are as they
    were (no terminal_alpha_bar)."""
    assert "terminal_alpha_bar" not in names.resolve_schedule(label, native=SD15)[1]
    assert "terminal_alpha_bar" not in names.resolve_schedule(label)[1]
    assert "terminal_alpha_bar" not in names.resolve_schedule(label, native=samplers.RectifiedFlow(shift=3.0))[1]
    assert names.resolve_schedule(label, native=ZSNR)[1]["terminal_alpha_bar"] == labels.TOOLS_ZERO_SNR_ALPHA_BAR


def test_terminal_alpha_bar_is_checked():
    with pytest.raises(samplers.InvalidInput, match="zero-terminal-SNR"):
        SD15.with_terminal_alpha_bar(TOOLS_ALPHA_BAR_T)
    for bad in (0.0, -1e-8, 0.5, True, "1e-8", math.nan):
        with pytest.raises(samplers.InvalidInput, match="terminal_alpha_bar must be"):
            ZSNR.with_terminal_alpha_bar(bad)
    with pytest.raises(samplers.InvalidInput, match="pass native=<VPDiscrete"):
        samplers.get_sigmas("karras", 5, sigma_min=0.03, sigma_max=14.6, terminal_alpha_bar=TOOLS_ALPHA_BAR_T)
    with pytest.raises(samplers.InvalidInput, match="zero-terminal-SNR"):
        samplers.get_sigmas("karras", 5, native=SD15, terminal_alpha_bar=TOOLS_ALPHA_BAR_T)
    with pytest.raises(samplers.InvalidOption, match="terminal_alpha_bar"):
        samplers.get_sigmas("comfyui:karras", 5, native=ZSNR, terminal_alpha_bar=1e-6)
    # the registry's karras with the tools' stand-in, asked for by name: the ComfyUI / A1111 list
    assert torch.equal(samplers.get_sigmas("karras", 5, native=ZSNR, terminal_alpha_bar=TOOLS_ALPHA_BAR_T),
                       ours("comfyui:karras", 5))


def test_a_run_from_the_tools_sigma_max_is_comfyuis():
    """euler on a v model from ComfyUI's σ_max = 4518.76: the model is evaluated at timestep 999 there (ComfyUI's
    timestep(σ): the nearest log-σ index), and with ComfyUI's integer timesteps (quantize=True, the same nearest
    log-σ index) the run is ComfyUI's: sample_euler on ModelSamplingDiscrete(zsnr=True) + V_PREDICTION
    (calculate_input x/√(σ² + 1); calculate_denoised x/(σ² + 1) − v·σ/√(σ² + 1)). But for a σ on a log-midpoint
    (``normal``'s timestep 499.5 at n = 5), where the nearest index is decided by the last bit: ComfyUI's float32
    argmin takes 500, quantize=True's k-diffusion rule in float64 499 (1e-16 nearer in ln σ); the run is ComfyUI's
    from that timestep."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 4, generator=gen, dtype=torch.float64) * 0.2

    def v_model(x_t, t):  # a toy v prediction that reads the timestep
        return torch.einsum("oc,bchw->bohw", weight, x_t) + (t.to(x_t.dtype) / 1000).view(-1, 1, 1, 1) * x_t

    for label in ("comfyui:karras", "comfyui:exponential", "comfyui:simple", "comfyui:normal", "comfyui:kl_optimal"):
        sigmas = samplers.get_sigmas(label, 5, native=ZSNR)
        x = noise * sigmas[0]
        times = []

        def seen(x_t, t):
            times.append(t.tolist())
            return v_model(x_t, t)

        out = samplers.sample("euler", samplers.to_denoiser(seen, "v", ZSNR), x, sigmas)
        assert times[0] == [999.0, 999.0] and bool(torch.isfinite(out).all()), label
        times.clear()
        quantized = samplers.VPDiscrete(ZSNR.alphas_cumprod, quantize=True)
        out = samplers.sample("euler", samplers.to_denoiser(seen, "v", quantized), x, sigmas)
        ref, comfy_times = x.clone(), []
        for k, (s, s_next) in enumerate(zip(sigmas[:-1].tolist(), sigmas[1:].tolist())):
            t = COMFY.timestep(s)
            near = sorted(range(1000), key=lambda i: abs(math.log(s) - COMFY.log_sigmas[i].item()))[:2]
            if abs(abs(math.log(s) - COMFY.log_sigmas[near[0]].item())
                   - abs(math.log(s) - COMFY.log_sigmas[near[1]].item())) < 1e-6:  # a log-midpoint: a tie
                assert t in near and times[k][0] in near, (label, s, t, times[k])
                t = int(times[k][0])
            comfy_times.append([float(t)] * 2)
            v = v_model(ref / (s * s + 1) ** 0.5, torch.full((2,), float(t), dtype=torch.float64))
            denoised = ref / (s * s + 1) - v * s / (s * s + 1) ** 0.5
            ref = ref + (ref - denoised) / s * (s_next - s)
        assert times == comfy_times, label
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("label, kind", [("DPM++ 2M", "Karras"), ("Euler a", "Uniform"), ("DPM++ 2M SDE", "Exponential"),
                                         ("Euler a Karras", "Karras")])
def test_a1111_sampler_labels_run_on_a1111s_schedule_on_a_zero_snr_model(label, kind):
    """A label's own schedule ("Automatic", or the type in its name) is A1111's type: from σ_max ≈ 4518.76 on a
    zero-terminal-SNR model, where the registry's karras / linspace start at σ = inf."""
    found = names.resolve(f"a1111:{label}")
    for n in (5, 20):
        run = samplers.get_sigmas(found.schedule, n, native=ZSNR)
        torch.testing.assert_close(run, ours(kind, n), rtol=0, atol=0)
        assert math.isclose(float(run[0]), float(a1111_zsnr_sigmas()[-1]), rel_tol=1e-6)

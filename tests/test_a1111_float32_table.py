"""A1111's "Schedule type" names build on the model's ᾱ as A1111 reads it: float32.

A1111 runs k-diffusion's CompVisDenoiser / CompVisVDenoiser (k_diffusion/external.py ``DiscreteEpsDDPMDenoiser``:
σ = ((1 − ᾱ)/ᾱ)^½) on the model's ``alphas_cumprod`` buffer, which is float32: ldm's ``DDPM.register_schedule`` stores
``to_torch(np.cumprod(1 − betas))`` with ``to_torch = partial(torch.tensor, dtype=torch.float32)``, and A1111's SDXL
loader (modules/sd_models_xl.py ``extend_sdxl``) sets ``torch.asarray(LegacyDDPMDiscretization().alphas_cumprod,
dtype=torch.float32)``. Near ᾱ ≈ 0.99915 the rounding moves 1 − ᾱ, so A1111's σ_min on SD 1.x is 0.02916753 where the
exact table's is 0.02916716 (1.3e-5 relative), and every level built from σ_min or the table's first entries moves
with it. The references below are written from modules/sd_schedulers.py (AUTOMATIC1111/stable-diffusion-webui
5bbbda47) and k-diffusion's ``DiscreteSchedule`` / ``get_sigmas_*`` on that float32 σ table, their formulas evaluated in
float64 (as the library evaluates them): the names agree to a float32 rounding of the table (rtol 3e-7), where they
were 1.3e-5 off before. Registry and ComfyUI names keep the exact float64 table, bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import samplers
from samplers.core import labels, names
from samplers.interop.diffusers_models import native_from_config
from samplers.schedules.base import TABLE_SCHEDULES

STEPS = [1, 2, 5, 20]
RTOL = 3e-7  # one float32 rounding of the σ table (≤ 1.2e-7; measured ≤ 1.5e-7 per level), twice
SD15_AYS = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)


def ldm_alphas_cumprod(schedule: str, start: float, end: float, n: int = 1000) -> torch.Tensor:
    """ldm's make_beta_schedule ("linear": linspace of √β, squared; "sqrt_linear": linspace of β) and
    DDPM.register_schedule: np.cumprod in float64, stored float32."""
    if schedule == "linear":
        betas = (torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2).numpy()
    else:
        betas = torch.linspace(start, end, n, dtype=torch.float64).numpy()
    return torch.tensor(np.cumprod(1. - betas, axis=0), dtype=torch.float32)


def sgm_alphas_cumprod() -> torch.Tensor:
    """sgm's LegacyDDPMDiscretization() (linear_start 0.00085, linear_end 0.012, 1000 steps: make_beta_schedule
    "linear", np.cumprod) as A1111's extend_sdxl stores it: torch.asarray(..., dtype=torch.float32)."""
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()
    return torch.asarray(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


# model (as the library builds it), A1111's float32 alphas_cumprod for it
MODELS = {
    "sd15": (samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012),
             ldm_alphas_cumprod("linear", 0.00085, 0.012)),
    "sdxl": (native_from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                 "num_train_timesteps": 1000, "prediction_type": "epsilon"})[0],
             sgm_alphas_cumprod()),
    "linear_1e-4_0.02": (samplers.VPDiscrete.from_betas("linear", 1000, 0.0001, 0.02),
                         ldm_alphas_cumprod("sqrt_linear", 0.0001, 0.02)),
}


def a1111_zero_snr_alphas_cumprod(alphas_cumprod32: torch.Tensor) -> torch.Tensor:
    """A1111's "Zero Terminal SNR" (modules/sd_models.py apply_alpha_schedule_override → rescale_zero_terminal_snr_abar)
    on the float32 buffer, computed in float32 as A1111 does, its last ᾱ set to 4.8973451890853435e-08 (stored in
    float32)."""
    from test_zero_snr_tool_schedules import rescaled_alphas_cumprod

    return rescaled_alphas_cumprod(alphas_cumprod32)


ZSNR = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)
# the models the A1111 names are compared on: the three above and SD 1.x's betas rescaled to zero terminal SNR, which
# A1111 rescales on its float32 buffer (in float32)
ALL_MODELS = {**MODELS,
              "sd15_zero_snr": (ZSNR, a1111_zero_snr_alphas_cumprod(ldm_alphas_cumprod("linear", 0.00085, 0.012)))}


class A1111Table:
    """k-diffusion's DiscreteSchedule on CompVisDenoiser's float32 σ table: sigma_to_t / t_to_sigma / get_sigmas, in
    float64 over that table."""

    def __init__(self, alphas_cumprod32: torch.Tensor):
        assert alphas_cumprod32.dtype == torch.float32
        self.sigmas = ((1 - alphas_cumprod32) / alphas_cumprod32) ** 0.5  # float32, as k-diffusion computes it
        self.log_sigmas = self.sigmas.log().double()  # k-diffusion's float32 log σ, within a rounding
        self.sigma_min, self.sigma_max = self.sigmas[0].item(), self.sigmas[-1].item()  # KDiffusionSampler.get_sigmas

    def sigma_to_t(self, sigma: float) -> float:
        log_sigma = math.log(sigma)
        dists = log_sigma - self.log_sigmas
        low = int(dists.ge(0).cumsum(0).argmax().clamp(max=len(self.log_sigmas) - 2))
        lo, hi = float(self.log_sigmas[low]), float(self.log_sigmas[low + 1])
        w = min(max((lo - log_sigma) / (lo - hi), 0.0), 1.0)
        return (1 - w) * low + w * (low + 1)

    def t_to_sigma(self, t: float) -> float:
        low, high, w = math.floor(t), math.ceil(t), t - math.floor(t)
        return math.exp((1 - w) * float(self.log_sigmas[low]) + w * float(self.log_sigmas[high]))

    def get_sigmas(self, n: int) -> list[float]:  # DiscreteSchedule.get_sigmas(n)
        return [self.t_to_sigma(t) for t in np.linspace(len(self.sigmas) - 1, 0, n)] + [0.0]


def a1111_schedule(label: str, n: int, inner: A1111Table) -> list[float]:
    """modules/sd_schedulers.py's function for ``label`` (opts at their defaults: each function's own ρ, Beta
    α = β = 0.6), given KDiffusionSampler.get_sigmas' sigma_min / sigma_max (the table's ends)."""
    smin, smax = inner.sigma_min, inner.sigma_max
    if label == "Uniform":  # uniform: inner_model.get_sigmas(n)
        return inner.get_sigmas(n)
    if label == "Karras":  # k-diffusion get_sigmas_karras, rho 7
        ramp = np.linspace(0, 1, n)
        return list((smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7) + [0.0]
    if label == "Exponential":  # get_sigmas_exponential
        return list(np.exp(np.linspace(math.log(smax), math.log(smin), n))) + [0.0]
    if label == "Polyexponential":  # get_sigmas_polyexponential, A1111's default_rho 1
        ramp = np.linspace(1, 0, n) ** 1.0
        return list(np.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin))) + [0.0]
    if label in ("SGM Uniform", "Normal"):  # sgm_uniform / normal_scheduler
        start, end = inner.sigma_to_t(smax), inner.sigma_to_t(smin)
        ts = np.linspace(start, end, n + 1)[:-1] if label == "SGM Uniform" else np.linspace(start, end, n)
        return [inner.t_to_sigma(t) for t in ts] + [0.0]
    if label == "KL Optimal":  # kl_optimal: n + 1 levels, no 0
        i = np.arange(n + 1) / n
        return list(np.tan(i * math.atan(smin) + (1.0 - i) * math.atan(smax)))
    if label == "Align Your Steps":  # get_align_your_steps_sigmas (the SD 1.5 levels: the name takes those)
        if n == len(SD15_AYS):
            return list(SD15_AYS) + [0.0]
        xs, ys = np.linspace(0, 1, len(SD15_AYS)), np.log(np.asarray(SD15_AYS)[::-1])
        return list(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]) + [0.0]
    if label in ("Simple", "DDIM"):
        from test_zero_snr_tool_schedules import a1111_table_schedule

        return a1111_table_schedule(label, n, inner.sigmas)
    if label == "Beta":  # beta_scheduler
        timesteps = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)]
        return [smin + x * (smax - smin) for x in timesteps] + [0.0]
    if label == "Turbo":  # Forge's / reForge's turbo_scheduler: its float32 timesteps, read from the table
        from test_forge_schedules import forge_turbo_timesteps

        return [float(inner.sigmas[t]) for t in forge_turbo_timesteps(n)] + [0.0]
    if label in ("Align Your Steps GITS", "Align Your Steps 11", "Align Your Steps 32"):  # reForge's: SD 1.5 lists
        from test_forge_schedules import REFORGE_LEVELS, reforge_ays

        return reforge_ays(REFORGE_LEVELS[label]["sd15"], n).tolist()
    raise AssertionError(f"no A1111 transcription for {label!r}")


def ours(label: str, n: int, native) -> torch.Tensor:
    """By name through get_sigmas, and resolved for the model then built (the pipeline, the diffusers shim): the two
    agree exactly."""
    name, options = names.resolve_schedule(label, native=native)
    built = samplers.get_sigmas(name, n, native=native, **options)
    assert torch.equal(built, samplers.get_sigmas(label, n, native=native))
    return built


def rel_error(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.tolist(), b.tolist())
    nonzero = b != 0
    assert torch.equal(a[~nonzero], b[~nonzero])
    return float(((a[nonzero] - b[nonzero]) / b[nonzero]).abs().max()) if bool(nonzero.any()) else 0.0


def test_the_models_are_a1111s_table_in_float32():
    """The library's float32 model is ldm's / sgm's float32 buffer exactly; σ_min moves 1.3e-5 from the exact table."""
    assert torch.equal(ldm_alphas_cumprod("linear", 0.00085, 0.012), sgm_alphas_cumprod())  # SDXL's betas are SD's
    for key, (native, ac32) in MODELS.items():
        table = native.with_float32_alphas_cumprod()
        assert torch.equal(table.alphas_cumprod, ac32.double()), key
        assert rel_error(table.sigmas, A1111Table(ac32).sigmas) < 1.5e-7, key
        assert native.with_float32_alphas_cumprod() is table and table.with_float32_alphas_cumprod() is table
    sd15 = MODELS["sd15"][0]
    assert sd15.with_float32_alphas_cumprod().sigma_min == pytest.approx(0.02916753, abs=5e-9)
    assert sd15.sigma_min == pytest.approx(0.02916716, abs=5e-9)  # the exact table: unchanged


def test_a_zero_snr_model_is_a1111s_rescale_in_float32_then_its_terminal_alpha_bar():
    """A1111's order: the float32 buffer, its rescale in float32 (whose rounding of √ᾱ near 1 moves the second to
    fourth entries by up to 1.7e-5 against the float64 rescale of the same ᾱ), then the finite last ᾱ in float32."""
    ac32 = ALL_MODELS["sd15_zero_snr"][1]
    table = ZSNR.with_float32_alphas_cumprod()
    assert table.zero_terminal_snr and float(table.alphas_cumprod[-1]) == 0.0  # the rescale's own 0 until the stand-in
    tool = table.with_terminal_alpha_bar(labels.TOOLS_ZERO_SNR_ALPHA_BAR)
    assert torch.equal(tool.alphas_cumprod, ac32.double())  # bit for bit A1111's ᾱ
    assert rel_error(tool.sigmas, A1111Table(ac32).sigmas) < 1.5e-7
    assert ZSNR.with_float32_alphas_cumprod() is table and table.with_terminal_alpha_bar(
        labels.TOOLS_ZERO_SNR_ALPHA_BAR) is tool
    exact = ZSNR.with_terminal_alpha_bar(labels.TOOLS_ZERO_SNR_ALPHA_BAR)  # ComfyUI's table: unchanged
    assert rel_error(exact.sigmas[1:4], A1111Table(ac32).sigmas[1:4]) > 1e-5
    # a zero-SNR model given its rescaled table alone (no table from before the rescale): that table rounded
    direct = samplers.VPDiscrete(ZSNR.alphas_cumprod)
    assert torch.equal(direct.with_float32_alphas_cumprod().alphas_cumprod,
                       ZSNR.alphas_cumprod.to(torch.float32).double())
    assert direct.with_float32_alphas_cumprod().sigma_min == pytest.approx(A1111Table(ac32).sigma_min, rel=2e-7)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("label", list(labels.A1111_SCHEDULERS))
@pytest.mark.parametrize("model", list(ALL_MODELS))
def test_a1111_schedule_types_are_a1111s_on_its_float32_table(model, label, n):
    """Before: 1.3e-5 off wherever σ_min or the first entries enter (Karras, Exponential, Polyexponential, KL
    Optimal's end, Uniform / Normal's last level, DDIM and Beta); 8e-5 on the linear-β table; on the zero-SNR model up
    to 1.4e-5 (DDIM's second entry: A1111's float32 rescale)."""
    native, ac32 = ALL_MODELS[model]
    assert rel_error(ours(f"a1111:{label}", n, native), a1111_schedule(label, n, A1111Table(ac32))) < RTOL


def a1111_lcm(n: int, alphas_cumprod32: torch.Tensor, original_timesteps: int = 50) -> list[float]:
    """A1111's "LCM" Automatic schedule (modules/sd_samplers_lcm.py): ``LCMCompVisDenoiser.__init__`` copies the
    model's float32 alphas_cumprod at timesteps 999 − k·20 (k = 0 … 49) into LCM's 50-entry float32 table, which
    DiscreteEpsDDPMDenoiser reads as σ; its ``get_sigmas(n)`` is linspace(sigma_to_t(σ_max), sigma_to_t(σ_min), n) —
    49 to 0 — through t_to_sigma, a 0 appended."""
    skip = len(alphas_cumprod32) // original_timesteps
    valid = torch.zeros(original_timesteps, dtype=torch.float32)
    for x in range(original_timesteps):
        valid[original_timesteps - 1 - x] = alphas_cumprod32[len(alphas_cumprod32) - 1 - x * skip]
    lcm = A1111Table(valid)
    ts = np.linspace(lcm.sigma_to_t(lcm.sigma_max), lcm.sigma_to_t(lcm.sigma_min), n)
    return [lcm.t_to_sigma(t) for t in ts] + [0.0]


@pytest.mark.parametrize("label", ["LCM", "k_lcm"])
@pytest.mark.parametrize("n", [*STEPS, 50, 60])
@pytest.mark.parametrize("model", list(ALL_MODELS))
def test_a1111_lcm_runs_lcms_schedule_on_a1111s_float32_table(model, n, label):
    """Before: the label ran the registry's lcm_uniform on the model's exact table: 6.8e-7 relative off on SD 1.x
    (2.2e-6 on the linear-β table), and on the zero-SNR model from σ = inf (A1111: 4518.76), 60 steps refused."""
    native, ac32 = ALL_MODELS[model]
    found = names.resolve(label)
    schedule, options = names.resolve_schedule(found.schedule, native=native)
    got = samplers.get_sigmas(schedule, n, native=native, **options)
    assert rel_error(got, a1111_lcm(n, ac32)) < RTOL


@pytest.mark.parametrize("typed", ["Karras", "Uniform", "KL Optimal", "Beta", "SGM Uniform", "DDIM", "Polyexponential"])
def test_a1111_names_without_prefix_are_a1111s_too(typed):
    native, ac32 = MODELS["sd15"]
    name, options = names.resolve_schedule(typed, native=native)
    if options.get("float32_alphas_cumprod"):  # the name reaches A1111's table
        assert rel_error(ours(typed, 5, native), a1111_schedule(typed, 5, A1111Table(ac32))) < RTOL
    else:  # a registry name spelt so: the exact table
        assert torch.equal(ours(typed, 5, native), samplers.get_sigmas(name, 5, native=native, **options))
    assert names.resolve_schedule("Karras", native=native) == ("karras", {"float32_alphas_cumprod": True})


def exact_table(native) -> torch.Tensor:
    """The σ of the exact float64 table, computed here from its ᾱ."""
    ac = native.alphas_cumprod.to(torch.float64)
    return ((1 - ac) / ac).sqrt()


REGISTRY_ON_A_TABLE = ["karras", "exponential", "polyexponential", "kl_optimal", "sgm_uniform", "simple", "normal",
                       "ddim_uniform", "beta_sigmas", "beta_timesteps", "linspace", "leading", "trailing"]


@pytest.mark.parametrize("name", REGISTRY_ON_A_TABLE)
def test_registry_and_comfyui_names_keep_the_exact_table(name):
    """Registry names resolve without the option and give, bit for bit, their σ on the exact float64 table (built with
    that table's range and entries given explicitly, the float32 model already built beside it); ComfyUI's names too."""
    for key, (native, _) in MODELS.items():
        assert names.resolve_schedule(name, native=native) == (name, {})
        native.with_float32_alphas_cumprod()  # a sibling in the model's cache changes nothing for its own names
        table = exact_table(native)
        assert torch.equal(table, native.sigmas)
        for n in STEPS:
            got = samplers.get_sigmas(name, n, native=native)
            given = {"training_sigmas": table} if name in TABLE_SCHEDULES else {}
            explicit = samplers.get_sigmas(name, n, sigma_min=float(table[0]), sigma_max=float(table[-1]), **given)
            assert torch.equal(got, explicit), (key, name, n)
    for scheduler in labels.COMFYUI_SCHEDULERS:
        native = MODELS["sd15"][0]
        assert "float32_alphas_cumprod" not in names.resolve_schedule(f"comfyui:{scheduler}", native=native)[1]
    sd15 = MODELS["sd15"][0]
    karras = samplers.get_sigmas("karras", 5, native=sd15)
    assert torch.equal(samplers.get_sigmas("comfyui:karras", 5, native=sd15), karras)
    assert not torch.equal(samplers.get_sigmas("a1111:Karras", 5, native=sd15), karras)


@pytest.mark.parametrize("native", [samplers.RectifiedFlow(shift=3.0), samplers.core.native.VE(),
                                    samplers.core.native.VPContinuous()], ids=["flow", "ve", "vp_continuous"])
def test_a1111_names_on_other_models_are_unchanged(native):
    """Only a discrete model has an alphas_cumprod buffer: elsewhere the names resolve as without a model."""
    for label in labels.A1111_SCHEDULERS:
        assert names.resolve_schedule(f"a1111:{label}", native=native) == names.resolve_schedule(f"a1111:{label}")
        assert "float32_alphas_cumprod" not in names.resolve_schedule(f"a1111:{label}")[1]


def test_the_option_is_checked():
    sd15 = MODELS["sd15"][0]
    with pytest.raises(samplers.InvalidInput, match="float32_alphas_cumprod.*native=<VPDiscrete>"):
        samplers.get_sigmas("karras", 5, native=samplers.RectifiedFlow(shift=3.0), float32_alphas_cumprod=True)
    with pytest.raises(samplers.InvalidInput, match="float32_alphas_cumprod.*native=<VPDiscrete>"):
        samplers.get_sigmas("karras", 5, sigma_min=0.03, sigma_max=14.6, float32_alphas_cumprod=True)
    with pytest.raises(samplers.InvalidType, match="float32_alphas_cumprod must be True or False"):
        samplers.get_sigmas("karras", 5, native=sd15, float32_alphas_cumprod="yes")
    with pytest.raises(samplers.InvalidOption, match="float32_alphas_cumprod"):
        samplers.get_sigmas("a1111:Karras", 5, native=sd15, float32_alphas_cumprod=False)
    # the registry's karras asked for A1111's table by name is a1111:Karras; False is the registry's own
    assert torch.equal(samplers.get_sigmas("karras", 5, native=sd15, float32_alphas_cumprod=True),
                       samplers.get_sigmas("a1111:Karras", 5, native=sd15))
    assert torch.equal(samplers.get_sigmas("karras", 5, native=sd15, float32_alphas_cumprod=False),
                       samplers.get_sigmas("karras", 5, native=sd15))


def test_the_pipeline_builds_a1111_names_on_a1111s_table(tmp_path):
    """Pipeline.sigmas and plan resolve the name for the model: A1111's table on an eps model, the exact one for the
    registry's and ComfyUI's names."""
    from models.pipeline import Pipeline
    from models.unet import DiffusionModel, vae_record
    from test_pipeline import tiny_vae
    from test_text_unet import tiny_config

    vae = tiny_vae(tmp_path)
    pipe = Pipeline(DiffusionModel(tiny_config(vae=vae_record(vae))), vae)
    native = pipe.native
    assert isinstance(native, samplers.VPDiscrete)
    ac32 = native.alphas_cumprod.to(torch.float32)  # ldm's buffer of the model's table
    for label in ("Karras", "Uniform", "Simple"):
        assert rel_error(pipe.sigmas(f"a1111:{label}", 12), a1111_schedule(label, 12, A1111Table(ac32))) < RTOL
    _, sigmas, _ = pipe.plan("a1111:DPM++ 2M", "a1111:Exponential", 10, {})
    assert torch.equal(torch.as_tensor(sigmas), samplers.get_sigmas("a1111:Exponential", 10, native=native))
    assert torch.equal(pipe.sigmas("comfyui:karras", 12), samplers.get_sigmas("karras", 12, native=native))


def test_the_models_own_range_passed_with_an_a1111_name_is_its_range_as_a1111_reads_it():
    """Generic code passes the model's range (what get_sigmas fills in when it is left out): with an A1111 name that
    is the float32 table's range, for every type, on SD 1.x and on a zero-terminal-SNR model."""
    for native in (samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012),
                   samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)):
        for kind in labels.A1111_SCHEDULERS:
            name = f"a1111:{kind}"
            torch.testing.assert_close(
                samplers.get_sigmas(name, 10, native=native, sigma_min=native.sigma_min, sigma_max=native.sigma_max),
                samplers.get_sigmas(name, 10, native=native), rtol=0, atol=0, msg=name)


def test_a_zero_snr_diffusers_config_with_trained_betas_reads_as_built_from_betas():
    """A config's trained_betas with rescale_betas_zero_snr: A1111's float32 rescale of the table before it."""
    from samplers.interop.diffusers_models import native_from_config

    built = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True)
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).tolist()
    config = native_from_config({"trained_betas": betas, "rescale_betas_zero_snr": True,
                                 "prediction_type": "v_prediction"})[0]
    for kind in ("DDIM", "Simple", "Uniform", "Karras"):
        torch.testing.assert_close(samplers.get_sigmas(f"a1111:{kind}", 20, native=config),
                                   samplers.get_sigmas(f"a1111:{kind}", 20, native=built), rtol=0, atol=0)


def test_the_models_ends_read_from_a_float32_table_are_its_ends_too():
    """Generic code may read the ends off a float32 σ table: within 1e-6 they are the model's, as for registry names."""
    native = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    lo, hi = (float(torch.tensor(v, dtype=torch.float32)) for v in (native.sigma_min, native.sigma_max))
    for kind in ("Uniform", "Align Your Steps", "Simple", "DDIM", "Normal", "Karras"):
        torch.testing.assert_close(samplers.get_sigmas(f"a1111:{kind}", 10, native=native, sigma_min=lo, sigma_max=hi),
                                   samplers.get_sigmas(f"a1111:{kind}", 10, native=native), rtol=0, atol=0)


def test_the_models_time_input_reads_its_exact_table():
    """names.md: A1111's σ_min (its float32 table's) is timestep 3.7e-5 on SD 1.x for the model, which reads its exact
    table (A1111's wrapper reads 0); its σ_max clamps to the last timestep."""
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    a1111 = vp.with_float32_alphas_cumprod()
    assert 3.6e-5 < float(vp.time(torch.tensor(a1111.sigma_min, dtype=torch.float64))) < 3.8e-5
    assert float(vp.time(torch.tensor(a1111.sigma_max, dtype=torch.float64))) == 999.0


def test_the_models_ends_as_numpy_or_tensor_scalars_are_its_ends_too():
    """A numpy scalar or a one-element tensor of the model's end maps as a Python float does (it ran the exact
    table's end, or was refused for Uniform / Normal / SGM Uniform)."""
    import numpy

    native = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    for kind in ("Karras", "Exponential", "Uniform", "Normal", "SGM Uniform"):
        want = samplers.get_sigmas(f"a1111:{kind}", 10, native=native)
        for lo, hi in ((numpy.float32(native.sigma_min), numpy.float32(native.sigma_max)),
                       (torch.tensor(native.sigma_min), torch.tensor([native.sigma_max]))):
            torch.testing.assert_close(samplers.get_sigmas(f"a1111:{kind}", 10, native=native, sigma_min=lo,
                                                           sigma_max=hi), want, rtol=0, atol=0, msg=kind)
    # an end that is not the model's is the caller's: honoured
    assert math.isclose(float(samplers.get_sigmas("a1111:Karras", 10, native=native, sigma_min=0.03)[-2]), 0.03,
                        rel_tol=1e-12)

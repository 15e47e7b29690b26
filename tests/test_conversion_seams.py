"""Seams of the conversion to D(x, σ): float32 accuracy of the flow coefficients, σ_data's rule, half-precision σ.

- ``RectifiedFlow.coefficients``: a = 1 − t cancelled in float32 (relative error σ·2⁻²⁴, a = 0 from σ ≈ 2e7, so a
  flow model got an all-zero input on the tensor-σ path); a = 1/(1 + σ) is computed directly.
- ``sigma_data``: EDM's σ_data must be finite and > 0; a prediction that does not use it refuses one rather than
  ignoring it (an EDM-v model given as ``v`` ran as a plain v model).
- A float16 / bfloat16 σ (k-diffusion's samplers pass σ in the latents' dtype): the time input is computed and
  returned in float32, as k-diffusion's wrappers give it from their float32 tables (bfloat16 rounded SD's σ_max
  to timestep 1000, past the table).
"""
import math

import pytest
import torch

import samplers
from samplers.core.errors import InvalidInput, InvalidOption, InvalidType
from samplers.core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete

F32 = 2.0**-24
WIDE_SIGMAS = [1e-3, 0.03, 1.0, 80.0, 1e3, 1e4, 1e6, 2e7, 1e8]


# ------------------------------------------------------------------------------------------------------
# rectified flow in float32


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_coefficients_in_float32_are_correctly_rounded_over_a_wide_sigma_range(shift):
    rf = RectifiedFlow(shift=shift)
    s32 = torch.tensor(WIDE_SIGMAS, dtype=torch.float32)
    s64 = s32.double()  # the same σ values: only the arithmetic differs
    a32, b32 = rf.coefficients(s32)
    want_a, want_b = 1 / (1 + s64), s64 / (1 + s64)
    assert float(((a32.double() - want_a) / want_a).abs().max()) < 4 * F32
    assert float(((b32.double() - want_b) / want_b).abs().max()) < 4 * F32
    for s in WIDE_SIGMAS:  # the host twin, in float64
        a, b = rf.coefficients_at(s)
        assert a == pytest.approx(1 / (1 + s), rel=1e-15) and b == pytest.approx(s / (1 + s), rel=1e-15)
    inf = torch.tensor([math.inf])
    assert rf.coefficients(inf) == (torch.tensor([0.0]), torch.tensor([1.0]))
    assert rf.coefficients_at(math.inf) == (0.0, 1.0) and rf.coefficients_at(0.0) == (1.0, 0.0)
    assert rf.coefficients(torch.tensor([0.0])) == (torch.tensor([1.0]), torch.tensor([0.0]))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "flow", "score"])
def test_tensor_path_on_a_flow_schedule_agrees_with_the_host_path_and_float64(prediction):
    seen = []

    def net(x_t, t):
        seen.append(x_t.clone())
        return torch.tanh(x_t)

    D = samplers.to_denoiser(net, prediction, RectifiedFlow(shift=3.0))
    x_unit = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    for s in WIDE_SIGMAS:
        x = x_unit * s
        seen.clear()
        ref = D(x.double(), torch.full((4,), s, dtype=torch.float64))
        tensor = D(x, torch.full((4,), s))
        host = D.denoise_at(x, s)
        # the model input x_t = a·x: float32-accurate on both paths (it was all zeros from σ ≈ 2e7)
        for got in seen[1:]:
            err = float((got.double() - seen[0]).abs().max() / seen[0].abs().max())
            assert err < 8 * F32, (prediction, s, err)
        scale = float(ref.abs().max()) + float(x.abs().max()) * F32  # D's size, and the rounding of x itself
        for name, got in (("tensor", tensor), ("host", host)):
            err = float((got.double() - ref).abs().max())
            assert err <= 16 * F32 * scale, (prediction, s, name, err, scale)


def test_flow_model_input_at_a_huge_sigma_is_the_noise_not_zero():
    seen = []
    D = samplers.to_denoiser(lambda x_t, t: seen.append(x_t) or torch.zeros_like(x_t), "flow", RectifiedFlow())
    n = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    D(n * 2e7, torch.full((2,), 2e7))
    torch.testing.assert_close(seen[0], n, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------------
# sigma_data


@pytest.mark.parametrize("prediction", ["edm", "edm_v"])
@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan, math.inf, -math.inf])
def test_edm_sigma_data_must_be_finite_and_positive(prediction, bad):
    calls = []
    with pytest.raises(InvalidOption, match=r"sigma_data = .* finite number > 0.*0\.5"):
        samplers.to_denoiser(lambda x, t: calls.append(1) or x, prediction, VE(), sigma_data=bad)
    assert not calls


@pytest.mark.parametrize("bad", [True, "0.5", None, torch.tensor(0.5)])
def test_sigma_data_must_be_a_real_number(bad):
    with pytest.raises(InvalidType, match="sigma_data must be a real number"):
        samplers.to_denoiser(lambda x, t: x, "edm", VE(), sigma_data=bad)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "flow", "score", "epsilon", "v_prediction"])
def test_a_prediction_without_sigma_data_refuses_one_rather_than_ignoring_it(prediction):
    with pytest.raises(InvalidOption, match=r"sigma_data = 0\.5 with prediction .*'edm', 'edm_v'.*edm_v"):
        samplers.to_denoiser(lambda x, t: x, prediction, VE(), sigma_data=0.5)
    with pytest.raises(InvalidOption, match="sigma_data = nan"):
        samplers.to_denoiser(lambda x, t: x, prediction, VE(), sigma_data=math.nan)
    # the default, also as passed explicitly (diffusers configs without σ_data give 1: unused)
    assert samplers.to_denoiser(lambda x, t: x, prediction, VE()).sigma_data == 1.0
    assert samplers.to_denoiser(lambda x, t: x, prediction, VE(), sigma_data=1).sigma_data == 1.0


def test_valid_edm_sigma_data_is_kept():
    D = samplers.to_denoiser(lambda x, t: x, "edm_v", VE(), sigma_data=0.5)
    assert D.sigma_data == 0.5 and D.prediction == "edm_v"


# ------------------------------------------------------------------------------------------------------
# half-precision σ


SD = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
NATIVES = {"vp_discrete": SD, "vp_discrete_quantized": VPDiscrete.from_betas(quantize=True),
           "vp_continuous": VPContinuous("linear", time_scale=1000.0), "ve_sigma": VE(time_input="sigma"),
           "ve_edm": VE(time_input="edm"), "ve_log_sigma": VE(time_input="log_sigma"),
           "flow": RectifiedFlow(shift=3.0)}


@pytest.mark.parametrize("name", list(NATIVES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_time_of_a_half_precision_sigma_is_float32(name, dtype):
    native = NATIVES[name]
    sigma = torch.tensor([0.0292, 0.7, 3.1, 9.7, 14.6, 60.0]).to(dtype)
    t = native.time(sigma)
    assert t.dtype == torch.float32
    want = native.time(sigma.double())  # the same (rounded) σ values, computed in float64
    torch.testing.assert_close(t, want.float(), rtol=2 * F32, atol=0)
    for same in (torch.float32, torch.float64):  # other dtypes keep theirs
        assert native.time(sigma.to(same)).dtype == same


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_k_diffusion_call_with_half_sigma_gives_a_timestep_inside_the_table(dtype):
    seen = []
    D = samplers.to_denoiser(lambda x_t, t: seen.append(t) or torch.zeros_like(x_t), "eps", SD)
    x = torch.randn(2, 4, 8, 8).to(dtype)
    sigma = SD.sigma_max * x.new_ones([2])  # k-diffusion: sigma * s_in, s_in = x.new_ones([B])
    D(x * SD.sigma_max, sigma)
    assert seen[0].dtype == torch.float32 and float(seen[0].max()) <= 999
    assert float(seen[0][0]) == pytest.approx(SD.time_at(float(sigma[0])), abs=1e-4)


# ------------------------------------------------------------------------------------------------------
# to_denoiser's arguments and the model's output


@pytest.mark.parametrize("args, error, words", [
    ((42, "eps", VPDiscrete.from_betas()), InvalidType, "model must be callable"),
    ((None, "eps", VPDiscrete.from_betas()), InvalidType, "model must be callable"),
    ((lambda x, t: x, "eps", "vp"), InvalidType, "native noise schedule.*VPDiscrete.from_betas.*got 'vp'"),
    ((lambda x, t: x, "eps", None), InvalidType, "native noise schedule"),
    ((lambda x, t: x, ["eps"], VPDiscrete.from_betas()), InvalidType, "prediction must be a string"),
    ((lambda x, t: x, "edm", VPDiscrete.from_betas()), InvalidOption, "EDM's preconditioning.*pass a VE schedule"),
    ((lambda x, t: x, "edm_v", RectifiedFlow()), InvalidOption, "EDM's preconditioning.*pass a VE schedule"),
])
def test_to_denoiser_refuses_what_it_cannot_use_when_it_is_built(args, error, words):
    """Before: accepted at construction (a string schedule, a model of 42) and failing at the first model call with a
    raw error, a list prediction as 'unhashable', and EDM on a VP schedule fed the VP timestep (353.9 at σ = 1, where
    EDM's c_noise is ¼·ln σ = 0) and sampled."""
    with pytest.raises(error, match=words):
        samplers.to_denoiser(*args)


@pytest.mark.parametrize("make, words", [
    (lambda x: x[:1], r"shape \(1, 4, 8, 8\) for latents of shape \(3, 4, 8, 8\)"),  # batch 1: would broadcast
    (lambda x: x[:, :1], r"shape \(3, 1, 8, 8\)"),  # one channel: would broadcast
    (lambda x: torch.cat([x, x], 1), r"shape \(3, 8, 8, 8\) .*variance"),  # learned variance: a raw torch error
    (lambda x: (x,), "returned tuple, not a tensor"),
    (lambda x: x.round().long(), "torch.int64 tensor; its prediction must be floating point"),
    (lambda x: torch.zeros(x.shape, device="meta"), r"output on meta for latents on cpu.*out\.to\(x\.device\)"),
])
def test_a_model_output_that_is_not_one_prediction_per_latent_element_is_refused(make, words):
    """A batch-1 or 1-channel output broadcast to a finite, wrong x0 (no error at all); an integer one was cast."""
    D = samplers.to_denoiser(lambda x, t: make(x), "eps", VPDiscrete.from_betas())
    x = torch.randn(3, 4, 8, 8)
    for call in (lambda: D(x, torch.full((3,), 2.0)), lambda: D.denoise_at(x, 2.0)):
        with pytest.raises((InvalidInput, InvalidType), match=words):
            call()
    with pytest.raises((InvalidInput, InvalidType), match=words):
        samplers.sample("euler", D, x * 14.6, samplers.get_sigmas("karras", 2, sigma_min=0.03, sigma_max=14.6),
                        disable=True)


# ------------------------------------------------------------------------------------------------------
# a grid outside a discrete model's timestep table: refused before any model call, not clamped to its ends


def _counting_vp_model(native):
    gm = samplers.problems.GaussianMixture.default(shape=(4,), components=3, seed=0)
    inner, calls = gm.as_model("eps", native), []

    def unet(x_t, t, **kw):
        calls.append(float(t.flatten()[0]))
        return inner(x_t, t, **kw)

    return samplers.to_denoiser(unet, "eps", native), calls


@pytest.mark.parametrize("sigma_min, sigma_max, bad, end", [(0.002, 80.0, "80", r"last \(timestep 999\)"),
                                                            (0.002, 14.6, "0.002", r"first \(timestep 0\)"),
                                                            (0.1, 20.0, "20", r"last \(timestep 999\)")])
def test_a_grid_outside_the_timestep_table_is_refused_before_any_model_call(sigma_min, sigma_max, bad, end):
    # EDM's karras(0.002, 80) on an SD-1.x model: σ = 80 and 24 reached the U-Net as timestep 999, 0.002 as 0
    native = VPDiscrete.from_betas()
    D, calls = _counting_vp_model(native)
    sig = samplers.get_sigmas("karras", 6, sigma_min=sigma_min, sigma_max=sigma_max)
    for name in ("euler", "dpmpp_2m", "heun", "euler_ancestral"):
        with pytest.raises(InvalidInput, match=rf"sigmas\[\d\] = {bad} lies outside this model's timestep table, "
                                               rf"which covers σ from 0.0291672 to 14.6146: .*table's {end}.*"
                                               r"without sigma_min / sigma_max"):
            seed = {"seed": 0} if name == "euler_ancestral" else {}
            samplers.sample(name, D, torch.randn(2, 4) * sig[0], sig, disable=True, **seed)
    assert calls == []


class _KDiffusionCFG:
    """A guidance wrapper written as k-diffusion's examples and A1111 write it: the model in ``inner_model``, no
    ``prepare_times`` or ``supports_infinite_sigma`` of its own."""

    def __init__(self, model, scale=3.0):
        self.inner_model, self.scale = model, scale

    def __call__(self, x, sigma, **kw):
        u, c = self.inner_model(torch.cat([x, x]), torch.cat([sigma, sigma]), **kw).chunk(2)
        return u + (c - u) * self.scale


def test_a_wrapper_does_not_switch_the_table_and_infinite_sigma_checks_off():
    # a k-diffusion-style CFG wrapper around to_denoiser's denoiser ran karras(0.002, 80) on SD's table: the U-Net was
    # told timestep 999 at σ = 80 while the conversion used σ = 80 (the check ran only on a model with prepare_times)
    native = VPDiscrete.from_betas()
    D, calls = _counting_vp_model(native)
    sig = samplers.get_sigmas("karras", 4, sigma_min=0.03, sigma_max=80.0)
    for model in (_KDiffusionCFG(D), _KDiffusionCFG(_KDiffusionCFG(D)).__call__):  # a bound method is seen through
        with pytest.raises(InvalidInput, match=r"sigmas\[0\] = 80 lies outside this model's timestep table"):
            samplers.sample("euler", model, torch.randn(2, 4) * 80, sig, disable=True)
    assert calls == []
    ok = samplers.get_sigmas("karras", 4, native=native)
    samplers.sample("euler", _KDiffusionCFG(D), torch.randn(2, 4) * ok[0], ok, disable=True)
    assert len(calls) == 4
    # an eps model cannot be evaluated at σ = inf (a zero-SNR table's start): refused through the wrapper too
    zsnr = VPDiscrete.from_betas(rescale_betas_zero_snr=True)
    Dz, calls = _counting_vp_model(zsnr)
    trailing = samplers.get_sigmas("trailing", 4, native=zsnr)
    assert math.isinf(trailing[0])
    with pytest.raises(InvalidInput, match="cannot be evaluated at sigma = inf"):
        samplers.sample("dpmpp_2m", _KDiffusionCFG(Dz), torch.randn(2, 4), trailing, disable=True)
    assert calls == []


def test_a_grid_on_the_table_runs_to_its_ends_and_past_them_only_by_float_rounding():
    native = VPDiscrete.from_betas()
    D, calls = _counting_vp_model(native)
    for lo, hi in ((native.sigma_min, native.sigma_max), (native.sigma_min * (1 - 5e-4), native.sigma_max * (1 + 5e-4))):
        sig = samplers.get_sigmas("karras", 4, sigma_min=lo, sigma_max=hi)
        samplers.sample("euler", D, torch.randn(2, 4) * hi, sig, disable=True)
    assert len(calls) == 8
    # below the table, to half its first σ: the levels tools publish for it (reForge's AYS-32 for SD 1.5 to 0.015,
    # A1111's Align Your Steps to 0.029), which they run at timestep 0; further below is refused
    for name in ("ays_32_sd15", "Align Your Steps", "ays_gits_sd15"):
        sig = samplers.get_sigmas(name, 10, native=native, **({} if " " in name else {"append_zero": True}))
        assert float(sig[-2]) < native.sigma_min
        samplers.sample("euler", D, torch.randn(2, 4) * sig[0], sig, disable=True)
    with pytest.raises(InvalidInput, match=r"sigmas\[1\] = 0.0145 lies outside"):
        samplers.sample("euler", D, torch.randn(2, 4), torch.tensor([1.0, 0.0145, 0.0], dtype=torch.float64),
                        disable=True)
    # a grid that ends below the table (EDM-style, no final 0): Heun evaluates the model at its last σ (euler would
    # not, but its latent ends where the model has no timestep): refused for both, before any call
    before = len(calls)
    for name in ("heun", "euler"):
        with pytest.raises(InvalidInput, match=r"sigmas\[2\] = 0.002 lies outside"):
            samplers.sample(name, D, torch.randn(2, 4), torch.tensor([1.0, 0.5, 0.002], dtype=torch.float64),
                            disable=True)
    assert len(calls) == before
    # a zero-terminal-SNR table reaches σ = inf: the tools' finite stand-in 4518.76 lies inside it
    zsnr = VPDiscrete.from_betas(rescale_betas_zero_snr=True)
    gm = samplers.problems.GaussianMixture.default(shape=(4,), components=3, seed=0)
    Dz = samplers.to_denoiser(gm.as_model("v", zsnr), "v", zsnr)
    sig = samplers.get_sigmas("karras", 4, sigma_min=zsnr.sigma_min, sigma_max=4518.76)
    assert torch.isfinite(samplers.sample("euler", Dz, torch.randn(2, 4) * sig[0], sig, disable=True)).all()


def test_the_pipeline_refuses_a_preset_made_for_another_table_before_encoding():
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(None, model="eps")
    with pytest.raises(InvalidInput, match=r"sigmas\[0\] = 700 lies outside this model's timestep table.*its own "):
        spec.plan_run("euler", "ays_svd", 10, {})
    spec.plan_run("euler", "ays_sd15", 10, {})  # made for SD-1.x's table, which this model has


def test_a_model_that_writes_into_its_time_input_is_refused_and_does_not_poison_later_runs():
    """The denoiser reuses one time tensor per σ of the run's grid; a model that normalises it in place (t /= 1000)
    changed every later call and run of that denoiser (999 → 0.999 → 0.000999). Refused at the first such call
    (its ``_version`` moved: host metadata), and the grid is rebuilt for the next run."""
    seen = []

    def writes(x_t, t):
        seen.append(round(float(t[0]), 3))
        t /= 1000.0
        return torch.zeros_like(x_t)
    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    d = samplers.to_denoiser(writes, "eps", vp)
    sig = samplers.get_sigmas("karras", 3, native=vp)
    x = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(0)) * float(sig[0])
    with pytest.raises(InvalidInput, match=r"wrote into its time input.*clone it"):
        samplers.sample("euler", d, x, sig, disable=True)
    assert seen == [999.0]
    reads = []
    d.model = lambda x_t, t: reads.append(round(float(t[0]), 3)) or torch.zeros_like(x_t)
    samplers.sample("euler", d, x, sig, disable=True)
    assert reads[0] == 999.0 and len(reads) == 3


@pytest.mark.parametrize("schedule, field, value", [
    (VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012), "quantize", True),
    (RectifiedFlow(shift=3.0), "shift", 1.0),
    (VE(), "time_input", "sigma"),
    (VPContinuous(), "time_scale", 1000.0),
])
def test_a_native_schedule_cannot_be_changed_after_it_is_built(schedule, field, value):
    """A denoiser caches the time inputs of its schedule: a schedule changed afterwards (vp.quantize = True) was
    ignored by it. Schedules are frozen: the change raises, and a new schedule is built with the option."""
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(schedule, field, value)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "heun"])
def test_a_denoiser_output_on_another_device_is_refused_at_its_call(name):
    """A plain denoiser (no to_denoiser) whose output is on another device than x: a raw torch device error in the
    sampler's arithmetic before; refused at the model call, naming both devices."""
    calls = []

    def model(x, sigma):
        calls.append(1)
        return torch.zeros(x.shape, device="meta")
    x = torch.randn(2, 3, 4, 4) * 10
    with pytest.raises(InvalidInput, match=r"output on meta for latents on cpu"):
        samplers.sample(name, model, x, samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0), disable=True)
    assert len(calls) == 1

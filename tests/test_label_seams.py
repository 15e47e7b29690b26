"""Where a tool's label meets the registry: what the label runs must be what the tool computes with it by default.

1. ComfyUI's ``uni_pc`` / ``uni_pc_bh2`` (comfy/extra_samplers/uni_pc.py ``sample_unipc``) end at σ = 0.001, not with
   a denoise: the labels pass unipc's ``final_sigma=0.001``.
2. A1111's "DPM fast" / "DPM adaptive" in txt2img run on the model's whole σ range whatever Schedule type is chosen.
3. A case / spacing variant that matches both a registry name and a tool label that run different things is refused.
4. Forge's "HeunPP2" and "DDPM".
"""
import math

import pytest
import torch

import samplers
from samplers.core import labels, names
from samplers.core.errors import InvalidOption, UnknownNameError
from samplers.core.native import VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)
NATIVE = VPDiscrete.from_betas()


# ------------------------------------------------------------------ 1. ComfyUI's sample_unipc, transcribed
# comfy/extra_samplers/uni_pc.py: SigmaConvert (the VE σ as a VP noise schedule), predict_eps_sigma, the UniPC class's
# multistep loop (predict_x0, lower_order_final) and multistep_uni_pc_bh_update, in float64.

def _log_alpha(s):
    return 0.5 * torch.log(1 / (s * s + 1))


def _alpha(s):
    return torch.exp(_log_alpha(s))


def _std(s):
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(s)))


def _lambda(s):
    lmc = _log_alpha(s)
    return lmc - 0.5 * torch.log(1.0 - torch.exp(2.0 * lmc))


def _bh_update(model_fn, x, model_prev_list, t_prev_list, t, order, variant, use_corrector):
    t_prev_0 = t_prev_list[-1]
    lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
    model_prev_0 = model_prev_list[-1]
    sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
    alpha_t = torch.exp(_log_alpha(t))
    h = lambda_t - lambda_prev_0
    rks, D1s = [], []
    for i in range(1, order):
        rk = (_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h
        rks.append(rk)
        D1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
    rks.append(torch.tensor(1.0, dtype=torch.float64))
    rks = torch.stack(rks)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    R, b = [], []
    for i in range(1, order + 1):
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    R, b = torch.stack(R), torch.stack(b)
    use_predictor = len(D1s) > 0
    if use_predictor:
        D1s = torch.stack(D1s, dim=1)
        rhos_p = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
    else:
        D1s = None
    if use_corrector:
        rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
    x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
    pred_res = torch.tensordot(D1s, rhos_p, dims=([1], [0])) if use_predictor else 0
    x_t = x_t_ - alpha_t * B_h * pred_res
    model_t = None
    if use_corrector:
        model_t = model_fn(x_t, t)
        corr_res = torch.tensordot(D1s, rhos_c[:-1], dims=([1], [0])) if D1s is not None else 0
        x_t = x_t_ - alpha_t * B_h * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
    return x_t, model_t


def comfy_sample_unipc(denoise, noise, sigmas, variant="bh1"):
    """``sample_unipc(model, noise, sigmas, variant=...)`` of ComfyUI, ``noise`` the VE x at sigmas[0]."""
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    noise = noise / torch.sqrt(1.0 + timesteps[0] ** 2.0)

    def model_fn(x, t):  # predict_eps_sigma, then UniPC.data_prediction_fn (x0 = (x − σ_t·ε)/α_t)
        x_ve = x * (t ** 2 + 1.0) ** 0.5
        eps = (x_ve - denoise(x_ve, t)) / t
        return (x - _std(t) * eps) / _alpha(t)

    order = min(3, len(timesteps) - 2)
    steps = len(timesteps) - 1
    assert steps >= order
    x = noise
    t0 = timesteps[0]
    model_prev_list, t_prev_list = [model_fn(x, t0)], [t0]
    for init_order in range(1, order):
        t = timesteps[init_order]
        x, model_x = _bh_update(model_fn, x, model_prev_list, t_prev_list, t, init_order, variant, True)
        if model_x is None:
            model_x = model_fn(x, t)
        model_prev_list.append(model_x)
        t_prev_list.append(t)
    for step in range(order, steps + 1):
        t = timesteps[step]
        step_order = min(order, steps + 1 - step)
        use_corrector = step != steps
        x, model_x = _bh_update(model_fn, x, model_prev_list, t_prev_list, t, step_order, variant, use_corrector)
        for i in range(order - 1):
            t_prev_list[i] = t_prev_list[i + 1]
            model_prev_list[i] = model_prev_list[i + 1]
        t_prev_list[-1] = t
        if step < steps:
            if model_x is None:
                model_x = model_fn(x, t)
            model_prev_list[-1] = model_x
    return x / _alpha(timesteps[-1])


@pytest.mark.parametrize("steps", [2, 3, 5, 10, 20])
@pytest.mark.parametrize("name, variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_comfyui_uni_pc_is_comfyuis_sample_unipc(steps, name, variant):
    """The label on ComfyUI's sigmas (normal, and karras) = ComfyUI's loop, to float64 rounding: its order
    min(3, steps − 1), the lowered final orders, the last step to σ = 0.001 with no corrector, x returned there."""
    from samplers.interop.comfyui import ksampler_function

    for schedule in ("comfyui:normal", "karras"):
        sig = samplers.get_sigmas(schedule, steps, native=NATIVE).double()
        x = GM.noise(2, seed=0).double() * sig[0]
        theirs = comfy_sample_unipc(GM.denoise, x.clone(), sig.clone(), variant)
        ours = ksampler_function(f"comfyui:{name}")(GM.denoiser, x.clone(), sig.clone(), disable=True)
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), float((ours - theirs).abs().max())
        label = samplers.sample(f"comfyui:{name}", GM.denoiser, x.clone(), sig.clone(), disable=True)
        assert torch.equal(label, ours)


@pytest.mark.parametrize("name, variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_comfyui_uni_pc_on_a_flow_model_ends_as_comfyuis_ksampler(name, variant):
    """On a flow model ComfyUI's sample_unipc writes 0.001 over the final 0 of the caller's SIGMAS (``timesteps =
    sigmas[:]``, a view), and KSAMPLER then divides its result by 1 − sigmas[-1] (CONST's inverse_noise_scaling): the
    image is 1/0.999 of the loop's. The label's function gives that image in the same KSAMPLER (which divides by
    1 − 0 = 1: the caller's SIGMAS are left as they are); on other models the scaling is the identity (above)."""
    from samplers.interop.comfyui import FlowModel, ksampler_function

    flow = samplers.RectifiedFlow(shift=3.0)
    model = FlowModel(samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow), 3.0)
    u = torch.linspace(1, 0, 11, dtype=torch.float64)
    for t in (3 * u / (1 + 2 * u), 0.95 * 3 * u / (1 + 2 * u)):  # from t = 1 (the noise itself), and from t = 0.95
        x = GM.noise(2, seed=0).double() * (1 if t[0] == 1 else float(t[0]))
        sigmas = t.clone()
        loop = comfy_sample_unipc(model, x.clone(), sigmas.clone(), variant)
        theirs = loop / (1.0 - torch.tensor(0.001, dtype=torch.float64))  # KSAMPLER on the SIGMAS sample_unipc wrote
        ours = ksampler_function(f"comfyui:{name}")(model, x.clone(), sigmas, disable=True)
        ours = ours / (1.0 - sigmas[-1])  # KSAMPLER on the SIGMAS the label's function left
        assert float(sigmas[-1]) == 0.0
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), float((ours - theirs).abs().max())


def test_auditors_case_the_label_ends_at_0_001_not_denoised():
    """/tmp/auditI/unipc_final.py: the label = the registry sampler on the schedule with its 0 replaced by 0.001."""
    from samplers.interop.comfyui import ksampler_function

    for n in (10, 20):
        sig = samplers.get_sigmas("comfyui:normal", n, native=NATIVE).double()
        x = GM.noise(2, seed=0).double() * sig[0]
        ours = ksampler_function("comfyui:uni_pc")(GM.denoiser, x.clone(), sig, disable=True)
        comfy_like = samplers.sample("unipc_bh1", GM.denoiser, x.clone(),
                                     torch.cat([sig[:-1], torch.tensor([1e-3], dtype=sig.dtype)]), disable=True)
        assert float((ours - comfy_like).abs().max()) < 1e-12


def test_final_sigma_is_an_explicit_option_with_the_registry_default_unchanged():
    sig = samplers.get_sigmas("karras", 8, native=NATIVE).double()
    x = GM.noise(2, seed=0).double() * sig[0]
    plain = samplers.sample("unipc_bh2", GM.denoiser, x.clone(), sig, disable=True)
    assert torch.equal(plain, samplers.sample("unipc_bh2", GM.denoiser, x.clone(), sig, disable=True, final_sigma=None))
    assert samplers.info("unipc_bh2").options["final_sigma"] is None
    assert names.resolve("comfyui:uni_pc").options == {"final_sigma": 0.001}
    assert names.resolve("comfyui:uni_pc_bh2").options == {"final_sigma": 0.001}
    assert names.resolve("uni_pc").options == {"final_sigma": 0.001}  # not a registry name: ComfyUI's
    assert names.resolve("UniPC").options == {}  # A1111's label is not ComfyUI's
    # a schedule that ends above 0 ends there (ComfyUI changes only a final 0)
    nozero = sig[:-1]
    assert torch.equal(samplers.sample("unipc_bh2", GM.denoiser, x.clone(), nozero, disable=True, final_sigma=1e-3),
                       samplers.sample("unipc_bh2", GM.denoiser, x.clone(), nozero, disable=True))


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_final_sigma_must_be_finite_and_positive(value):
    sig = samplers.get_sigmas("karras", 4, native=NATIVE).double()
    x = GM.noise(1, seed=0).double() * sig[0]
    with pytest.raises(InvalidOption, match="final_sigma must be"):
        samplers.sample("unipc_bh1", GM.denoiser, x, sig, disable=True, final_sigma=value)


def test_final_sigma_at_or_above_the_last_positive_sigma_runs_as_comfyui_does():
    # at the last positive σ itself: a zero-length first-order step, the state stays (ComfyUI's x_t = x there)
    at = torch.tensor([10.0, 1.0, 0.1, 1e-3, 0.0], dtype=torch.float64)
    x = GM.noise(2, seed=0).double() * at[0]
    theirs = comfy_sample_unipc(GM.denoise, x.clone(), at.clone(), "bh1")
    ours = samplers.sample("uni_pc", GM.denoiser, x.clone(), at.clone(), disable=True)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9), float((ours - theirs).abs().max())
    # only a higher-order last step (lower_order_final=False) would divide by its zero length: refused, with fixes
    with pytest.raises(InvalidOption, match="final_sigma.*last positive σ.*zero length.*lower_order_final=True"):
        samplers.sample("unipc_bh1", GM.denoiser, x, at, disable=True, final_sigma=1e-3, lower_order_final=False)
    # a schedule that already went below 0.001 (a Karras node with sigma_min 0.0005): ComfyUI's loop steps up to it
    low = torch.tensor([10.0, 1.0, 0.1, 5e-4, 0.0], dtype=torch.float64)
    x = GM.noise(2, seed=0).double() * low[0]
    theirs = comfy_sample_unipc(GM.denoise, x.clone(), low.clone(), "bh1")
    ours = samplers.sample("uni_pc", GM.denoiser, x.clone(), low.clone(), disable=True)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), float((ours - theirs).abs().max())


# ------------------------------------------------------------------ 2. A1111's DPM fast / adaptive: the model's range

@pytest.fixture(scope="module")
def spec():
    from models.pipeline import PipelineSpec

    return PipelineSpec.read(model="eps")


@pytest.mark.parametrize("label", ["DPM fast", "k_dpm_fast", "DPM adaptive", "k_dpm_ad"])
def test_a1111_dpm_fast_and_adaptive_run_on_the_models_whole_range(spec, label):
    """KDiffusionSampler.sample: sigma_min = model_wrap.sigmas[0], sigma_max = model_wrap.sigmas[-1], n = steps, of
    A1111's table (the model's alphas_cumprod in float32)."""
    table = spec.native.with_float32_alphas_cumprod().sigmas
    for steps in (5, 10, 20):
        _, sigmas, _, _ = spec.plan_run(label, None, steps, {})
        positive = sigmas[sigmas > 0]
        assert len(sigmas) - 1 == steps
        assert math.isclose(float(sigmas[0]), float(table[-1]), rel_tol=1e-12)
        assert math.isclose(float(positive[-1]), float(table[0]), rel_tol=1e-12)


@pytest.mark.parametrize("label", ["DPM fast", "DPM adaptive"])
@pytest.mark.parametrize("schedule", ["a1111:Simple", "a1111:SGM Uniform", "a1111:DDIM", "a1111:Align Your Steps",
                                      "simple"])
def test_a1111_dpm_fast_refuses_a_schedule_type_a1111_would_ignore(spec, label, schedule):
    """/tmp/auditI/dpm_fast_range.py: "DPM fast" + Simple stopped at σ ≈ 0.34, where A1111 runs to 0.0292."""
    with pytest.raises(InvalidOption, match=r"ignores the Schedule type.*0\.02917 … 14\.61"):
        spec.plan_run(label, schedule, 10, {})


@pytest.mark.parametrize("schedule", ["a1111:Uniform", "linspace", "a1111:Karras", "a1111:Exponential",
                                      "a1111:KL Optimal"])
def test_a1111_dpm_fast_takes_a_schedule_with_the_models_ends(spec, schedule):
    """A schedule type with the model's ends (and n steps) runs what A1111 runs: these samplers use only the ends."""
    _, auto, options, _ = spec.plan_run("DPM fast", None, 10, {})
    _, sigmas, _, _ = spec.plan_run("DPM fast", schedule, 10, {})
    x = GM.noise(2, seed=0).double() * float(auto[0])
    a = samplers.sample("DPM fast", GM.denoiser, x.clone(), auto, disable=True, seed=1)
    b = samplers.sample("DPM fast", GM.denoiser, x.clone(), sigmas, disable=True, seed=1)
    assert float((a - b).abs().max()) < 1e-7  # the ends agree to float64 rounding


def test_comfyui_dpm_fast_keeps_comfyuis_rule(spec):
    """ComfyUI's KSAMPLER takes the range from the schedule it is given: any schedule goes."""
    _, sigmas, _, _ = spec.plan_run("comfyui:dpm_fast", "comfyui:simple", 10, {})
    assert float(sigmas[sigmas > 0][-1]) > 0.3
    spec.plan_run("dpm_fast", "a1111:Simple", 10, {})  # the registry name too


# ------------------------------------------------------------------ 3. case / spacing variants

@pytest.mark.parametrize("typed, spellings", [
    ("dpm fast", ("'dpm_fast' (the registry's)", "'DPM fast' (A1111's label)")),
    ("Dpm Adaptive", ("'dpm_adaptive' (the registry's)", "'DPM adaptive' (A1111's label)")),
    ("Dpm2", ("'dpm_2' (the registry's)", "'DPM2' (A1111's label)")),  # A1111 drops the next-to-last σ
    ("RESTART", ("'restart' (the registry's)", "'Restart' (A1111's label)")),
    ("unipc", ("'UniPC' (A1111's label)", "'uni_pc' (ComfyUI's name)")),  # ComfyUI's ends at σ = 0.001
    # A1111's labels draw A1111's noise (noise_sampler='a1111'), the registry's names the library's
    ("Euler A", ("'euler_a' (the registry's)", "'Euler a' (A1111's label)")),
    ("EULER", ("'euler' (the registry's)", "'Euler' (A1111's label)")),
])
def test_a_variant_matching_names_that_run_differently_is_refused(typed, spellings):
    with pytest.raises(names.InvalidInput, match="run different things") as e:
        names.resolve(typed)
    for spelt in spellings:
        assert spelt in str(e.value)


@pytest.mark.parametrize("typed, sampler", [
    ("Heunpp2", "heunpp2"),
    ("Lms", "lms"), ("er sde", "er_sde"), ("dpmpp sde", "dpmpp_sde"),
])
def test_a_variant_whose_matches_differ_only_by_a_default_schedule_or_a_prefix_resolves_as_before(typed, sampler):
    """A label's default schedule gives way to the caller's and the sampling functions never read it, and ComfyUI's
    "lms" / "er_sde" are the registry's when typed: variants of these are the registry's names, as they always were."""
    found = names.resolve(typed)
    assert (found.source, found.sampler, found.options) == ("registry", sampler, {})


@pytest.mark.parametrize("typed, label, source", [
    ("DPM fast", "DPM fast", "a1111"), ("Euler a", "Euler a", "a1111"), ("DPM2", "DPM2", "a1111"),
    ("dpm_fast", "dpm_fast", "registry"), ("restart", "restart", "registry"), ("Restart", "Restart", "a1111"),
    ("euler", "euler", "registry"), ("lms", "lms", "registry"), ("heun", "heun", "registry"),
    ("heunpp2", "heunpp2", "registry"),
    ("dpm++ 2m", "DPM++ 2M", "a1111"), ("dpm2 a", "DPM2 a", "a1111"),  # one match: taken as before
    ("a1111:dpm fast", "DPM fast", "a1111"), ("registry:Euler A", "Euler A", "registry"),  # a prefix picks the table
])
def test_exact_spellings_and_single_matches_resolve_as_before(typed, label, source):
    found = names.resolve(typed)
    assert (found.label, found.source) == (label, source)


def test_an_unknown_name_is_still_unknown():
    with pytest.raises(UnknownNameError):
        names.resolve("dpm faster")


# ------------------------------------------------------------------ 4. Forge's HeunPP2

def test_forge_heunpp2_is_its_label_on_uniform(spec):
    found, schedule, options = names.resolve_call("HeunPP2")
    assert (found.source, found.sampler, schedule, found.schedule_is_explicit, options) == \
        ("a1111", "heunpp2", "a1111:Uniform", False, labels.A1111["HeunPP2"][1])
    _, sigmas, _, _ = spec.plan_run("HeunPP2", None, 10, {})
    assert torch.equal(sigmas, spec.sigmas("a1111:Uniform", 10))


def test_forge_ddpm_is_a_k_diffusion_sampler_on_uniform_and_takes_the_schedule_types(spec):
    # Forge's ('DDPM', AlterSampler of sample_ddpm), like its HeunPP2: Automatic is Uniform, and "DDPM Karras" runs
    # Karras (the label ran the model's default, karras, and refused the types as if DDPM stepped its own timesteps)
    found, schedule, _ = names.resolve_call("DDPM")
    assert (found.source, found.sampler, schedule, found.schedule_is_explicit) == \
        ("a1111", "ddpm", "a1111:Uniform", False)
    _, sigmas, _, _ = spec.plan_run("DDPM", None, 10, {"seed": 0})
    assert torch.equal(sigmas, spec.sigmas("a1111:Uniform", 10))
    _, sigmas, _, _ = spec.plan_run("DDPM Karras", None, 10, {"seed": 0})
    assert torch.equal(sigmas, spec.sigmas("a1111:Karras", 10))


def test_a1111_dpm_fast_in_img2img_and_on_a_flow_model_runs_the_chosen_schedule(spec):
    """A1111's img2img runs DPM fast / adaptive on the chosen (truncated) schedule's ends (sample_img2img:
    sigma_sched[-2], sigma_sched[0]); a flow model has no A1111 "Automatic" schedule, so the caller's runs."""
    from models.pipeline import PipelineSpec

    _, sigmas, _, _ = spec.plan_run("DPM fast", "a1111:Simple", 10, {}, txt2img=False)
    assert float(sigmas[sigmas > 0][-1]) > 0.3  # Simple's own end, as A1111's img2img uses it
    flow = PipelineSpec.read(model="flow")
    _, sigmas, _, _ = flow.plan_run("DPM fast", "flow", 10, {})
    assert len(sigmas) == 11


# ------------------------------------------------------------------ 5. A1111 1.6-1.8's k_* aliases
# modules/sd_samplers_kdiffusion.py of those versions: ('DPM++ 2M SDE Heun Karras', ..., ['k_dpmpp_2m_sde_heun_ka'],
# {'scheduler': 'karras', 'brownian_noise': True, 'solver_type': 'heun'}), ... and 'k_dpmpp_2m_sde_ka' on both
# 'DPM++ 2M SDE' and 'DPM++ 2M SDE Karras' (sd_samplers.set_samplers: the later in the list wins).

@pytest.mark.parametrize("alias, label", [("k_dpmpp_2m_sde_heun_ka", "DPM++ 2M SDE Heun Karras"),
                                          ("k_dpmpp_2m_sde_heun_exp", "DPM++ 2M SDE Heun Exponential"),
                                          ("k_dpmpp_3m_sde_ka", "DPM++ 3M SDE Karras"),
                                          ("k_dpmpp_3m_sde_exp", "DPM++ 3M SDE Exponential")])
def test_a1111_aliases_of_the_karras_and_exponential_labels_run_their_labels(alias, label):
    got, want = names.resolve(alias), names.resolve(label)
    assert (got.sampler, got.options, got.schedule, got.schedule_is_explicit, got.discard_penultimate_sigma) == \
        (want.sampler, want.options, want.schedule, want.schedule_is_explicit, want.discard_penultimate_sigma)


def test_an_a1111_alias_of_two_labels_is_refused_naming_both():
    with pytest.raises(samplers.Unavailable, match=r"'DPM\+\+ 2M SDE Karras'.*'DPM\+\+ 2M SDE'"):
        names.resolve("k_dpmpp_2m_sde_ka")


def test_an_a1111_label_reads_s_tmax_0_as_no_upper_bound():
    # A1111's processing.py: self.s_tmax = (self.s_tmax if ... else opts.s_tmax) or float('inf'); its setting's
    # default is 0, which its API sends: the churn applies to every step, not to none
    sig = samplers.get_sigmas("karras", 4, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(2, seed=0).float() * 14.6
    want = samplers.sample("euler", GM.denoiser, x, sig, disable=True, seed=3, s_churn=1.0, noise_sampler="a1111")
    got = samplers.sample("Euler", GM.denoiser, x, sig, disable=True, seed=3, s_churn=1.0, s_tmax=0)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert names.resolve_call("euler", None, {"s_churn": 1.0, "s_tmax": 0})[2]["s_tmax"] == 0  # the registry's: 0

"""Cost per step: the conversion on host floats equals the tensor path, and the op budget holds.

The registry loop calls a denoiser with σ as a Python float (``denoise_at``); external k-diffusion-style callers
pass a per-item σ tensor (``D(x, sigma)``). Both must give the same x0 for every prediction type on every
schedule kind, and the loop must stay within its aten-op budget (counted, not timed, so CI can hold it).
"""
import math

import pytest
import torch

import samplers
from benchmarks import speed
from models.guidance import CFGDenoiser, InpaintDenoiser
from samplers.core import graph
from samplers.core.native import VE, NoiseSchedule, RectifiedFlow, VPContinuous, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(3, 2, 2), components=5, seed=1)
SCHEDULES = {
    "vp_discrete": VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012),
    "vp_discrete_zero_snr": VPDiscrete.from_betas(rescale_betas_zero_snr=True),
    "vp_discrete_quantized": VPDiscrete.from_betas(quantize=True),
    "vp_discrete_cosine": VPDiscrete.from_betas("squaredcos_cap_v2", 1000),
    "vp_continuous_linear": VPContinuous("linear", time_scale=1000.0),
    "vp_continuous_cosine": VPContinuous("cosine"),
    "ve_sigma": VE(time_input="sigma"),
    "ve_edm": VE(time_input="edm"),
    "ve_log_sigma": VE(time_input="log_sigma"),
    "flow": RectifiedFlow(shift=3.0),
}
PREDICTIONS = ["eps", "x0", "v", "flow", "score"]
SIGMAS = [0.0, 1e-4, 0.0292, 0.05, 0.7, 1.0, 3.0, 14.6, 80.0, 1e4]
# Aten ops per step beyond the model, native eps model through to_denoiser (SD-1.x discrete schedule):
# the sampler's own arithmetic plus 2 ops per model call on the run's σ grid (model input, x0; the time inputs
# are built before the loop).
OP_BUDGET = {"euler": 5, "heun": 8, "dpmpp_2m": 8, "euler_ancestral": 7}


def infinite_ok(native) -> bool:
    return math.isinf(native.sigma_max)


# ------------------------------------------------------------------------------------------------------
# the schedules' host-float twins


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_host_time_and_coefficients_equal_the_tensor_methods(name):
    native = SCHEDULES[name]
    values = SIGMAS + ([math.inf] if infinite_ok(native) else [])
    if isinstance(native, VPDiscrete):  # every table entry, the midpoints in log σ, and the ends beyond the table
        table = [s for s in native.sigmas.tolist() if math.isfinite(s)]
        values += table + [math.sqrt(lo * hi) for lo, hi in zip(table, table[1:])] + [table[0] / 2, table[-1] * 2]
        # a σ just past 0 (an ODE stage evaluates there, design.md) and NaN / −inf, which the denoisers refuse:
        # timestep 0, the table's clamped end, on both paths (the tensor path said 998)
        values += [-1e-3, -1.0, math.nan, -math.inf]
    s = torch.tensor(values, dtype=torch.float64)
    times, (a, b) = native.time(s).tolist(), native.coefficients(s)
    for sigma, want, a_i, b_i in zip(values, times, a.tolist(), b.tolist()):
        got = native.time_at(sigma)
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12) or (math.isinf(got) and got == want), (sigma, got, want)
        assert native.coefficients_at(sigma) == pytest.approx((a_i, b_i), rel=1e-12, abs=1e-15, nan_ok=True)


def test_discrete_timestep_is_exact_on_the_table_and_inf_at_a_zero_snr_end():
    vp = SCHEDULES["vp_discrete"]
    for i, sigma in enumerate(vp.sigmas.tolist()):
        assert vp.time_at(sigma) == i  # log-σ interpolation lands exactly on integer timesteps
    mid = math.exp((math.log(vp.sigmas[10]) + math.log(vp.sigmas[11])) / 2)
    assert vp.time_at(mid) == pytest.approx(10.5, abs=1e-12)
    assert vp.time_at(0.0) == 0.0 and vp.time_at(1e9) == 999.0  # clamped to the table's ends, like the tensor path
    zs = SCHEDULES["vp_discrete_zero_snr"]
    assert zs.time_at(math.inf) == 999.0 and zs.coefficients_at(math.inf) == (0.0, 1.0)
    finite_top = zs.sigmas[-2].item()
    assert zs.time_at(finite_top) == 998.0 and zs.time_at(finite_top * 10) == float(zs.time(torch.tensor([finite_top * 10],
                                                                                        dtype=torch.float64)))
    q = SCHEDULES["vp_discrete_quantized"]
    assert q.time_at(float(vp.sigma_of_time(torch.tensor([10.4], dtype=torch.float64)))) == 10.0


def test_quantized_timestep_is_k_diffusions_nearest_index_the_lower_on_a_tie():
    # k-diffusion's DiscreteSchedule.sigma_to_t(quantize=True): argmin |ln σ − log_sigmas|, the first index on a tie;
    # rounding the fractional timestep half to even gave the upper one at 425 of SD 1.x's 999 log-midpoints
    q = SCHEDULES["vp_discrete_quantized"]
    table = q.sigmas
    mid = (table[:-1] * table[1:]).sqrt()  # the log-midpoints of consecutive entries: ties, to rounding
    sigmas = torch.cat([mid, table, table[:1] / 2, table[-1:] * 2, torch.tensor([0.0, -1e-3])])
    log_table = table.log()
    k_diffusion = (sigmas.log() - log_table[:, None]).abs().argmin(dim=0)
    k_diffusion[sigmas <= 0] = 0
    assert torch.equal(q.time(sigmas), k_diffusion.double())
    host = [min(range(len(log_table)), key=lambda i: abs(math.log(s) - log_table[i].item())) if s > 0 else 0
            for s in sigmas.tolist()]  # min takes the first of equal keys, as argmin does
    assert [q.time_at(s) for s in sigmas.tolist()] == [float(i) for i in host]
    rounded = SCHEDULES["vp_discrete"].time(mid).round()  # the old rule: these are ties, where it differed
    assert int((rounded != k_diffusion[:len(mid)]).sum()) > 100


def test_a_schedule_with_only_tensor_methods_gets_host_floats_through_them():
    class Custom(NoiseSchedule):  # a user's schedule: VE with t = σ²
        sigma_min, sigma_max = 0.01, 50.0

        def coefficients(self, sigma):
            return torch.ones_like(sigma), sigma

        def time(self, sigma):
            return sigma * sigma

    D = samplers.to_denoiser(lambda x_t, t: x_t * 0.5 + t.reshape(-1, 1, 1, 1), "eps", Custom())
    x = GM.noise(4, seed=2) * 3.0
    torch.testing.assert_close(D.denoise_at(x, 3.0), D(x, torch.full((4,), 3.0, dtype=torch.float64)))


# ------------------------------------------------------------------------------------------------------
# the denoiser: host-float call versus the tensor call


def _sigmas_for(native, prediction):
    values = [0.05, 0.7, 3.0, 14.0]
    if infinite_ok(native) and prediction in ("x0", "v", "flow"):
        values.append(math.inf)
    return values


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_denoise_at_equals_the_tensor_call(name, prediction):
    native = SCHEDULES[name]
    D = samplers.to_denoiser(GM.as_model(prediction, native), prediction, native)
    for sigma in _sigmas_for(native, prediction):
        x = GM.noise(4, seed=3) if math.isinf(sigma) else GM.sample(4, seed=0) + GM.noise(4, seed=1) * sigma
        want = D(x, torch.full((4,), sigma, dtype=torch.float64))
        got = D.denoise_at(x, sigma)
        assert got.dtype == want.dtype and bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        # float32, as the registry runs it: the same to float32 rounding
        x32 = x.float()
        torch.testing.assert_close(D.denoise_at(x32, sigma), D(x32, torch.full((4,), sigma)), rtol=4e-6, atol=4e-6)


def test_edm_denoise_at_equals_the_tensor_call():
    native, sigma_data = VE(time_input="edm"), 0.5

    def model(x_in, c_noise):  # an arbitrary F: the conversion, not the model, is under test
        return torch.tanh(x_in) + c_noise.reshape(-1, 1, 1, 1)

    D = samplers.to_denoiser(model, "edm", native, sigma_data=sigma_data)
    for sigma in (0.002, 0.5, 2.5, 80.0):
        x = GM.noise(4, seed=5) * sigma
        want = D(x, torch.full((4,), sigma, dtype=torch.float64))
        torch.testing.assert_close(D.denoise_at(x, sigma), want, rtol=1e-12, atol=1e-12)
    # σ = inf lies beyond VE's σ_max, where the model was never trained (c_noise = inf): refused on both paths
    x = GM.noise(4, seed=5)
    for call in (lambda: D(x, torch.full((4,), math.inf, dtype=torch.float64)), lambda: D.denoise_at(x, math.inf)):
        with pytest.raises(samplers.InvalidInput, match="ends at sigma_max = 80, not at zero SNR"):
            call()


def test_eps_and_score_refuse_infinite_sigma_on_the_host():
    zs = SCHEDULES["vp_discrete_zero_snr"]
    for prediction in ("eps", "score"):
        D = samplers.to_denoiser(GM.as_model(prediction, zs), prediction, zs)
        with pytest.raises(ValueError, match="sigma = inf"):
            D.denoise_at(GM.noise(2, seed=0), math.inf)


def _tensor_only(D):
    """The same denoiser seen only through its k-diffusion call (as an external wrapper would hide it)."""
    def call(x, sigma, **extra_args):
        return D(x, sigma, **extra_args)
    call.supports_infinite_sigma = D.supports_infinite_sigma
    return call


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "euler_ancestral", "dpm_2", "lms", "unipc_bh2",
                                  "dpmpp_2m_sde"])
def test_a_run_through_the_host_path_equals_one_through_the_tensor_path(name):
    opts = {"seed": [0, 1, 2]} if "seed" in samplers.info(name).options else {}
    for native, prediction, schedule in ((SCHEDULES["vp_discrete"], "eps", "karras"),
                                         (SCHEDULES["flow"], "flow", "flow"),
                                         (SCHEDULES["vp_discrete_zero_snr"], "v", "trailing")):
        sig = samplers.get_sigmas(schedule, 8, native=native)
        if math.isinf(float(sig[0])) and prediction == "eps":
            continue
        D = samplers.to_denoiser(GM.as_model(prediction, native), prediction, native)
        x = samplers.initial_latent(GM.noise(3, seed=4).float(), sig)
        host = samplers.sample(name, D, x, sig, disable=True, **opts)
        tensor = samplers.sample(name, _tensor_only(D), x, sig, disable=True, **opts)
        torch.testing.assert_close(host, tensor, rtol=2e-6, atol=4e-6)  # float32 rounding


def test_flow_run_from_infinite_sigma_uses_the_host_path_exactly():
    flow = SCHEDULES["flow"]
    sig = samplers.get_sigmas("flow", 6, native=flow)
    assert math.isinf(float(sig[0]))
    D = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    x = GM.noise(3, seed=6)
    host = samplers.sample("euler", D, x, sig, disable=True)
    tensor = samplers.sample("euler", _tensor_only(D), x, sig, disable=True)
    torch.testing.assert_close(host, tensor, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------------
# guidance wrappers


def _cfg_inner(native):
    eps = GM.as_model("eps", native)

    def model(x_t, t, context):  # a conditioned eps model: the context shifts ε
        return eps(x_t, t) + 0.1 * context.reshape(-1, 1, 1, 1)
    return samplers.to_denoiser(model, "eps", native)


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_cfg_host_call_equals_tensor_call_in_one_batched_call(scale):
    native = SCHEDULES["vp_discrete"]
    inner = _cfg_inner(native)
    calls = []
    model = inner.model

    def counting(x_t, t, **kw):
        calls.append(x_t.shape[0])
        return model(x_t, t, **kw)
    inner.model = counting
    cfg = CFGDenoiser(inner, {"context": torch.tensor([1.0])}, {"context": torch.tensor([0.0])}, scale)
    x = GM.sample(3, seed=0) + GM.noise(3, seed=1) * 2.0
    got = cfg.denoise_at(x, 2.0)
    assert calls == [3 if scale == 1.0 else 6]  # one batched call on [cond; uncond]
    torch.testing.assert_close(got, cfg(x, torch.full((3,), 2.0, dtype=torch.float64)), rtol=1e-10, atol=1e-10)
    # guidance is affine in x0, so guiding x0 is guiding ε: D_cfg = D_u + s·(D_c − D_u)
    d_c = inner(x, torch.full((3,), 2.0, dtype=torch.float64), context=torch.ones(3))
    d_u = inner(x, torch.full((3,), 2.0, dtype=torch.float64), context=torch.zeros(3))
    torch.testing.assert_close(got, d_u + scale * (d_c - d_u), rtol=1e-10, atol=1e-10)


def test_inpaint_host_call_equals_tensor_call():
    native = SCHEDULES["vp_discrete_zero_snr"]
    inner = samplers.to_denoiser(GM.as_model("v", native), "v", native)
    known, noise = GM.sample(1, seed=7), GM.noise(1, seed=8)
    mask = (torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    D = InpaintDenoiser(inner, known, mask, noise)
    assert D.supports_infinite_sigma
    for sigma in (0.3, 5.0, math.inf):
        x = GM.noise(2, seed=9) * (1.0 if math.isinf(sigma) else sigma)
        torch.testing.assert_close(D.denoise_at(x, sigma), D(x, torch.full((2,), sigma, dtype=torch.float64)),
                                   rtol=1e-10, atol=1e-10)


def test_wrappers_pass_on_whether_infinite_sigma_is_supported():
    zs = SCHEDULES["vp_discrete_zero_snr"]
    eps = CFGDenoiser(_cfg_inner(zs), {"context": torch.ones(1)}, {"context": torch.zeros(1)}, 3.0)
    assert eps.supports_infinite_sigma is False
    sig = samplers.get_sigmas("trailing", 4, native=zs)
    assert math.isinf(float(sig[0]))
    with pytest.raises(ValueError, match="sigma = inf"):
        samplers.sample("euler", eps, GM.noise(2, seed=0), sig, disable=True)


def test_diffusers_model_host_call_equals_tensor_call():
    from samplers.interop.diffusers_models import denoiser_from_diffusers

    native = SCHEDULES["vp_discrete"]
    eps = GM.as_model("eps", native)

    def net(x, t, encoder_hidden_states):  # model(x_t, t, **kwargs): not a diffusers module
        return eps(x, t) + 0.1 * encoder_hidden_states.reshape(-1, 1, 1, 1)

    D = denoiser_from_diffusers(net, dict(speed.BETAS, prediction_type="epsilon"), torch.ones(1),
                                torch.zeros(1), guidance_scale=5.0)
    x = GM.sample(2, seed=0) + GM.noise(2, seed=1) * 4.0
    torch.testing.assert_close(D.denoise_at(x, 4.0), D(x, torch.full((2,), 4.0, dtype=torch.float64)),
                               rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------------
# ops: the budget CI holds, and what one model call costs


@pytest.mark.parametrize("name", list(OP_BUDGET))
def test_sampler_stays_within_its_op_budget_on_an_eps_model(name):
    got = speed.ops_per_step(name, "eps")
    assert got <= OP_BUDGET[name], (f"{name}: {got:g} aten ops per step beyond the model on an eps model through "
                                    f"to_denoiser, budget {OP_BUDGET[name]}")


def test_one_model_call_costs_at_most_three_ops_on_the_runs_grid():
    ops = speed.conversion_ops()
    two_term = {"v / VP-discrete", "v / VP-discrete, zero SNR", "v / VP-continuous", "v / rectified flow",
                "flow / VP-discrete", "flow / VP-discrete, zero SNR", "flow / VP-continuous", "edm / VE",
                "edm_v / VE"}
    for key, (on_grid, off_grid) in ops.items():
        assert off_grid == on_grid + 1, key  # off the grid: the call fills its own time input, nothing else
        if "CFG" in key:  # + stack x, split, lerp (DiffusersModel's time input comes repeated from the grid)
            assert on_grid <= 5, (key, on_grid)
        else:
            # model input + x0; x0 = c_skip·x + c_out·out is one op unless neither coefficient is 1
            assert on_grid <= (3 if key in two_term else 2), (key, on_grid)


def test_flow_on_a_rectified_flow_schedule_costs_one_fused_add_at_every_sigma():
    # c_skip = c_in/r with r = 1/(1+σ) + σ/(1+σ), 1 only to rounding: 3 of SD3's 27 grid σ (24.027, 8.583, 0.003003)
    # and about a quarter of all σ missed affine's one-op form (mul, mul, add instead of mul, add)
    native = RectifiedFlow(shift=3.0)
    grid = samplers.get_sigmas("flow", 28, native=native).tolist()[1:-1]
    sigmas = grid + torch.logspace(-3, 4, 400, dtype=torch.float64).tolist()
    counter = speed.OpCounter()
    D = samplers.to_denoiser(counter.exclude(lambda x_t, t: x_t * 0.1), "flow", native)
    x = GM.noise(2, seed=0).float()
    D.prepare_times(sigmas, x.shape[0], x.dtype, x.device)
    costs = {sigma: counter.run(lambda: D.denoise_at(x, sigma))[1] for sigma in sigmas}
    assert {sigma: dict(ops) for sigma, ops in costs.items() if dict(ops) != {"mul": 1, "add": 1}} == {}
    for sigma in (grid[0], 8.583011583011583, 0.003003003003003003):  # still the tensor call's D, to float rounding
        want = D(x.double(), torch.tensor(sigma, dtype=torch.float64))
        torch.testing.assert_close(D.denoise_at(x.double(), sigma), want, rtol=1e-14, atol=1e-14)


def test_a_guided_diffusers_model_gets_its_time_input_repeated_from_the_grid_with_the_same_result():
    from samplers.interop.diffusers_models import DiffusersModel, denoiser_from_diffusers

    seen = []

    def net(x_t, timestep, encoder_hidden_states):
        seen.append(timestep)
        return torch.tanh(x_t * (1 + timestep.reshape(-1, 1, 1, 1) / 500) + encoder_hidden_states.mean())

    config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
              "beta_end": 0.012, "prediction_type": "epsilon"}
    cond, uncond = torch.ones(1, 3, 8), torch.zeros(1, 3, 8)
    model = DiffusersModel(net, cond, uncond, guidance_scale=5.0)
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([700.0, 700.0, 700.0])
    assert model.time_copies == 2 and torch.equal(model(x, t), model(x, t.repeat(2)))
    assert DiffusersModel(net, cond, None, guidance_scale=1.0).time_copies == 1
    sig = samplers.get_sigmas("karras", 5, native=speed.sd_native())
    plain = denoiser_from_diffusers(net, config, cond, uncond, guidance_scale=5.0)
    prepared = denoiser_from_diffusers(net, config, cond, uncond, guidance_scale=5.0)
    samplers.core.conversion.prepare_times(prepared, sig.tolist(), 3, x.dtype, x.device)
    seen.clear()
    a = samplers.sample("dpmpp_2m", prepared, x * sig[0], sig, disable=True)
    rows = prepared._times[(3, x.dtype, x.device)]
    assert [t.shape for t in seen] == [(6,)] * 5
    assert all(t is rows[s] for t, s in zip(seen, sig.tolist()))  # the prepared [cond; uncond] times, as they are
    b = samplers.sample("dpmpp_2m", _tensor_only(plain), x * sig[0], sig, disable=True)
    torch.testing.assert_close(a, b, rtol=2e-6, atol=4e-6)
    off = prepared.denoise_at(x, 3.3)  # off the grid: a repeated fill of its own
    assert seen[-1].shape == (6,) and torch.equal(off, plain.denoise_at(x, 3.3))


def test_prepared_time_inputs_change_no_result_and_are_never_replaced():
    native = SCHEDULES["vp_discrete_zero_snr"]
    sig = samplers.get_sigmas("trailing", 6, native=native)
    x = samplers.initial_latent(GM.noise(3, seed=4).float(), sig)
    plain = samplers.sample("heun", _tensor_only(samplers.to_denoiser(GM.as_model("v", native), "v", native)), x, sig,
                            disable=True)
    D = samplers.to_denoiser(GM.as_model("v", native), "v", native)
    first = samplers.sample("heun", D, x, sig, disable=True)
    table = D._times[(3, torch.float32, x.device)]
    kept = dict(table)
    assert set(kept) == {s for s in sig.tolist() if s > 0}
    again = samplers.sample("heun", D, x, sig, disable=True)  # the same grid: nothing rebuilt
    other = samplers.get_sigmas("leading", 5, native=native)
    samplers.sample("heun", D, samplers.initial_latent(GM.noise(3, seed=5).float(), other), other, disable=True)
    assert all(table[s] is t for s, t in kept.items())  # another grid added entries, replaced none
    torch.testing.assert_close(first, plain, rtol=2e-6, atol=4e-6)
    assert torch.equal(first, again)
    D._times.clear()
    assert torch.equal(samplers.sample("heun", D, x, sig, disable=True), first)  # the cache changes no result
    with torch.inference_mode():  # made in inference mode, the inputs stay ordinary tensors ...
        D2 = samplers.to_denoiser(GM.as_model("v", native), "v", native)
        samplers.sample("euler", D2, x, sig, disable=True)
    w = torch.tensor(1.0, requires_grad=True)
    model = GM.as_model("v", native)

    def scaled(x_t, t):  # ... so a later run may record autograd through them
        return model(x_t, t * w)
    D2.model = scaled
    samplers.sample("euler", D2, x, sig, disable=True).sum().backward()  # on the inputs made above
    assert w.grad is not None


def test_prepared_time_inputs_are_capped():
    from samplers.core import conversion

    D = samplers.to_denoiser(GM.as_model("eps", SCHEDULES["vp_discrete"]), "eps", SCHEDULES["vp_discrete"])
    many = [float(s) for s in torch.logspace(1, -1, conversion.MAX_PREPARED_TIMES + 50, dtype=torch.float64)]
    conversion.prepare_times(D, many, 2, torch.float32, torch.device("cpu"))
    assert len(D._times[(2, torch.float32, torch.device("cpu"))]) == conversion.MAX_PREPARED_TIMES
    x = GM.noise(2, seed=0).float()
    torch.testing.assert_close(D.denoise_at(x, many[-1]), D(x, torch.full((2,), many[-1])))  # beyond it: a fill


def test_the_op_counter_excludes_the_model_and_counts_everything_else():
    counter = speed.OpCounter()
    model = counter.exclude(lambda x: (x * 2 + 1).sum())
    x = torch.ones(3)
    assert counter.run(lambda: model(x))[0] == 0
    n, ops = counter.run(lambda: model(x * 3).view(1))
    assert n == 2 and ops == {"mul": 1, "view": 1}


# ------------------------------------------------------------------------------------------------------
# the GPU path: a whole run on the host-float conversion reads nothing from the device


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_graph_body_on_the_eps_conversion_and_cfg_never_reads_the_device(name):
    native = SCHEDULES["vp_discrete"]
    D = CFGDenoiser(_cfg_inner(native), {"context": torch.ones(1)}, {"context": torch.zeros(1)}, 4.0)
    sig = samplers.get_sigmas("karras", 5, native=native)
    x = GM.noise(2, seed=1).float() * float(sig[0])
    opts = {"seed": [1, 2]} if "seed" in samplers.info(name).options else {}
    run = graph.capture(name, D, x, sig, fallback="eager", **opts)
    D.denoise_at(x, 1.0)  # the stacked conditioning is built before the body runs (as the capture's warm-up does)
    with graph.count_host_reads() as reads:
        run._body()
    assert reads["n"] == 0
    torch.testing.assert_close(run(x), samplers.sample(name, D, x, sig, disable=True, **opts))

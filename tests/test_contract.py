"""The registry contract: every registered sampler, present and future, passes this file unchanged."""
from __future__ import annotations

import functools
import inspect
import math

import pytest
import torch

import samplers
from samplers.core.graph import count_host_reads
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
NAMES = samplers.available()
HEAD = ["model", "x", "sigmas", "extra_args", "callback", "disable"]


def sigmas_for(steps: int) -> torch.Tensor:
    return samplers.get_sigmas("karras", steps, sigma_min=0.02, sigma_max=20.0)


def options_for(spec, seeds):
    return {"seed": seeds} if "seed" in spec.options else {}


def run(name, x, sigmas, seeds=None, model=None, **kw):
    spec = samplers.info(name)
    seeds = seeds if seeds is not None else list(range(10, 10 + x.shape[0]))
    return samplers.sample(name, model or GM.denoiser, x, sigmas, disable=True, **options_for(spec, seeds), **kw)


def start(batch=3, dtype=torch.float32, sigma_max=20.0):
    return (GM.noise(batch, seed=5) * sigma_max).to(dtype)


@functools.cache
def reference(sigma_max: float) -> torch.Tensor:
    """Exact PF-ODE endpoint from start()'s noise (computed once per session)."""
    noise = GM.noise(3, seed=5).to(torch.float32).double()
    return GM.ode_endpoint(noise if math.isinf(sigma_max) else noise * sigma_max, sigma_max, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_the_k_diffusion_abi(name):
    spec = samplers.info(name)
    params = list(inspect.signature(spec.fn).parameters.values())
    assert [p.name for p in params[:6]] == HEAD
    assert all(p.kind is p.KEYWORD_ONLY for p in params[6:]), "options must be keyword-only"
    assert spec.kind in ("ode", "ancestral", "sde") and spec.order >= 1 and spec.nfe_per_step > 0
    assert samplers.get(name) is spec.fn
    for alias in spec.aliases:
        assert samplers.info(alias).name == name
    if spec.stochastic:
        assert {"noise_sampler", "seed"} <= set(spec.options), "stochastic samplers take noise_sampler= and seed="


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_kept_and_result_close(name, dtype):
    x = start(dtype=dtype)
    out = run(name, x, sigmas_for(6))
    assert out.shape == x.shape and out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    # every sampler lands near the data: within a few cluster widths of the exact ODE endpoint
    ref = reference(20.0)
    assert float((out.double() - ref).pow(2).mean().sqrt()) < 3.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_and_no_state_between_calls(name):
    x = start()
    sig = sigmas_for(4)
    first = run(name, x, sig, seeds=[1, 2, 3])
    run(name, start(batch=2) * 0.5, sig, seeds=[7, 8])  # an unrelated call in between
    again = run(name, x, sig, seeds=[1, 2, 3])
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance(name):
    spec = samplers.info(name)
    x = start(batch=3)
    sig = sigmas_for(4)
    batch = run(name, x, sig, seeds=[1, 2, 3])
    alone = run(name, x[1:2], sig, seeds=[2])
    tol = 5e-3 if spec.host_sync else 1e-5  # adaptive solvers choose steps from a batch-wide error norm
    torch.testing.assert_close(batch[1:2], alone, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_callback_once_per_step(name):
    seen = []
    sig = sigmas_for(5)
    run(name, start(), sig, callback=lambda d: seen.append(d))
    assert [d["i"] for d in seen] == list(range(len(sig) - 1))
    for d in seen:
        assert {"x", "i", "sigma", "sigma_hat", "denoised"} <= set(d)
        assert d["x"].shape == d["denoised"].shape


@pytest.mark.parametrize("name", NAMES)
def test_no_host_sync_inside_the_loop(name):
    spec = samplers.info(name)
    if spec.host_sync:
        pytest.skip(f"{name} declares host_sync=True (adaptive step control on the host)")
    x = start()
    seeds = [1, 2, 3]
    run(name, x, sigmas_for(3), seeds=seeds)  # a table a sampler builds once per process (tcd's) is not counted
    reads = []
    for steps in (3, 9):
        sig = sigmas_for(steps)
        with count_host_reads() as counts:
            run(name, x, sig, seeds=seeds)
        reads.append(counts["n"])
    assert reads[0] == reads[1], f"host reads grow with the step count: {reads} for 3 and 9 steps"
    assert reads_between_model_calls(name, {}) == 0


def reads_between_model_calls(name, options, steps=5) -> int:
    """The run's host reads from its first model call to its last, the model's own left out: a read there is a
    synchronisation inside the loop, even one made once (at the first step) that does not grow with the steps."""
    marks, own = [], [0]
    with count_host_reads() as counts:
        def model(x, sigma):
            marks.append(counts["n"] - own[0])
            with count_host_reads() as inner:
                out = GM.denoiser(x, sigma)
            own[0] += inner["n"]
            return out
        run(name, start(), sigmas_for(steps), model=model, **options)
    return marks[-1] - marks[0]


# A stochastic sampler's noise paths: η or churn on, each named noise kind whose draws read no tensor. "brownian"
# builds its paths on the host and copies each draw, queued (tests/test_host_copies.py). The "brownian_tree" kinds
# are k-diffusion's BrownianTreeNoiseSampler, whose API hands its trees σ as tensors: 0-d CPU tensors made from the
# run's Python floats, compared and read back each step (no device is waited for, but this counter, which cannot
# tell a CPU tensor from a device one on this CPU, counts them), and they are left out here.
NOISE_ON = {name: {"eta": 0.7} if "eta" in spec.options else {"s_churn": 1.0} if "s_churn" in spec.options else {}
            for name in NAMES if not (spec := samplers.info(name)).host_sync and "noise_sampler" in spec.options}
NOISE_PATHS = [(name, {**on, "noise_sampler": kind}) for name, on in NOISE_ON.items()
               for kind in (None, "brownian", "comfyui")]


@pytest.mark.parametrize("name, options", NOISE_PATHS, ids=[f"{n}-{o}" for n, o in NOISE_PATHS])
def test_no_host_read_between_model_calls_where_noise_is_drawn(name, options):
    assert reads_between_model_calls(name, options) == 0


# Options and tool labels that take another code path than the registry default (the labels resolve to it)
OPTION_PATHS = [("deis", {"mode": "tab"}), ("DEIS", {}), ("sample_deis", {}), ("comfyui:deis", {}),
                ("deis", {"weights": "diffusers"}),  # diffusers' float32 weights, as CPU scalar tensors
                # SASolverScheduler's float32 coefficients, CPU scalar tensors read with numpy() (no device read)
                ("sa_solver", {"weights": "diffusers", "simple_order_2": True, "eta": 0.7}),
                ("sa_solver_pece", {"weights": "diffusers", "simple_order_2": True, "eta": 0.7})]


@pytest.mark.parametrize("name, options", OPTION_PATHS, ids=[f"{n}{o or ''}" for n, o in OPTION_PATHS])
def test_no_host_sync_inside_the_loop_of_option_paths(name, options):
    # DEIS-tAB's step weights were a sum over 10000 points in CPU torch tensors read back with float(): two
    # tensor reads per step (5 for 3 steps, 22 for 9)
    x = start()
    reads = []
    for steps in (3, 9):
        with count_host_reads() as counts:
            run(name, x, sigmas_for(steps), **options)
        reads.append(counts["n"])
    assert reads[0] == reads[1], f"host reads grow with the step count: {reads} for 3 and 9 steps"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_give_no_nan(name, dtype):
    def model(x, sigma):
        assert x.dtype == dtype, f"the model was called with {x.dtype} for {dtype} latents"
        return GM.denoiser(x.float(), sigma.float()).to(dtype)

    x = start().to(dtype)
    out = run(name, x, sigmas_for(6), model=model)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    # a native network in half precision, wrapped by to_denoiser: it gets its input in the latents' dtype, as
    # k-diffusion calls it, while the state and the conversion stay float32
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    eps = GM.as_model("eps", vp)

    def network(x_t, t):
        assert x_t.dtype == dtype, f"the network was called with {x_t.dtype} for {dtype} latents"
        return eps(x_t.float(), t).to(dtype)

    out = run(name, start(sigma_max=14.0).to(dtype), samplers.get_sigmas("karras", 6, native=vp),
              model=samplers.to_denoiser(network, "eps", vp))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", NAMES)
def test_runs_from_infinite_sigma(name):
    """Flow models sampled from t = 1: the schedule starts at σ = inf and x is the unit noise."""
    flow = samplers.RectifiedFlow(shift=1.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    sig = samplers.get_sigmas("flow", 8, native=flow)
    assert math.isinf(float(sig[0]))
    noise = GM.noise(3, seed=5, dtype=torch.float32)
    out = run(name, samplers.initial_latent(noise, sig), sig, model=model)
    assert bool(torch.isfinite(out).all())
    ref = reference(math.inf)
    assert float((out.double() - ref).pow(2).mean().sqrt()) < 3.0


@pytest.mark.parametrize("name", NAMES)
def test_leaves_the_global_generator_alone(name):
    """With its seeds given (stochastic) or none needed (deterministic), a run never touches torch's global RNG."""
    state = torch.get_rng_state()
    run(name, start(), sigmas_for(3))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", [n for n in NAMES if "seed" in samplers.info(n).options])
def test_per_item_seed_rule(name):
    """An int seed s means seeds s, s + 1, ... for the items; item k's result depends on its own seed only."""
    x = start(batch=3)
    sig = sigmas_for(3)
    by_int = samplers.sample(name, GM.denoiser, x, sig, disable=True, seed=40)
    by_list = run(name, x, sig, seeds=[40, 41, 42])
    torch.testing.assert_close(by_int, by_list, rtol=0, atol=0)
    other = run(name, x, sig, seeds=[40, 99, 42])
    torch.testing.assert_close(other[0], by_list[0], rtol=1e-5, atol=1e-5)


# Samplers with a stage inside their first step (a midpoint, a Brownian-bridge or restart interval): from σ_0 =
# 1e5 that stage sits at an arbitrary σ, so their one step there is not the limit of the step from σ = inf.
_STAGED = {"dpm_2_ancestral", "dpmpp_2s_ancestral", "restart", "torchsde.srk", "torchsde.heun", "torchsde.midpoint",
           "torchsde.reversible_heun", "torchsde.log_ode_midpoint"}


@pytest.mark.parametrize("eta, sigma_0", [(None, 1e5), (0.5, 1e40)])
@pytest.mark.parametrize("name", [n for n in NAMES if samplers.info(n).kind != "ode"
                                  and "noise_sampler" in samplers.info(n).options and n not in _STAGED])
def test_step_from_infinity_is_the_limit_of_the_samplers_own_step(name, eta, sigma_0):
    """The first step from σ = inf keeps the part of the noise the sampler's own step keeps as σ_0 → ∞ (with no
    fresh draw, it differs by how much it keeps): ddpm's posterior and er_sde keep none of it; nor do the samplers
    whose η is the SDE's (dpmpp_2m_sde, dpmpp_3m_sde, seeds_2 / 3, sa_solver, torchsde.*), whose step keeps
    (σ_1/σ_0)^η (sa_solver, torchsde: ^η²) → 0 of it, where the ancestral split kept √(1 − η²) (at η = 0.5 the
    results were 4.5 apart; η = 1 hid it). That kept part falls off as σ_0^−η², so η = 0.5 is compared from 1e40."""
    if eta is not None and "eta" not in samplers.info(name).options:
        pytest.skip("no eta option")
    options = {} if eta is None else {"eta": eta}
    flow = samplers.RectifiedFlow(shift=1.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    noise = GM.noise(3, seed=5, dtype=torch.float64)
    zero = lambda sigma, sigma_next: torch.zeros_like(noise)  # noqa: E731
    at_inf = samplers.sample(name, model, noise, torch.tensor([math.inf, 2.0], dtype=torch.float64), disable=True,
                             noise_sampler=zero, **options)
    near = samplers.sample(name, model, noise * sigma_0, torch.tensor([sigma_0, 2.0], dtype=torch.float64),
                           disable=True, noise_sampler=zero, **options)
    assert float((at_inf - near).abs().max()) < 2e-3


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_solvers_step_from_infinity_outside_its_sde_interval_keeps_the_noise(name):
    """τ = 0 where sde_interval does not hold σ_1 (ComfyUI's default 20 %-80 % on SD 1.x, below a flow schedule's
    first σ_1): its own step is the ODE's there and keeps all of σ_1·n as σ_0 → ∞; the first step from σ = inf drew it
    all fresh (by eta = 1)."""
    flow = samplers.RectifiedFlow(shift=1.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    noise = GM.noise(3, seed=5, dtype=torch.float64)
    zero = lambda sigma, sigma_next: torch.zeros_like(noise)  # noqa: E731
    at_inf, near = (samplers.sample(name, model, noise * (1.0 if math.isinf(s) else s),
                                    torch.tensor([s, 20.0], dtype=torch.float64), disable=True, noise_sampler=zero)
                    for s in (math.inf, 1e40))
    assert float((at_inf - near).abs().max()) < 2e-3


def test_a_custom_noise_scale_cannot_start_at_infinity():
    flow = samplers.RectifiedFlow(shift=1.0)
    model = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    calls = []
    with pytest.raises(samplers.InvalidInput, match="noise_scaler cannot start at sigma = inf"):
        samplers.sample("er_sde", lambda x, s: calls.append(1) or model(x, s), GM.noise(2, seed=1),
                        samplers.get_sigmas("flow", 4, native=flow), seed=0, noise_scaler=lambda s: s)
    assert not calls


def test_a_non_finite_run_from_infinity_names_the_infinite_first_sigma():
    flow = samplers.RectifiedFlow(shift=1.0)
    sig = samplers.get_sigmas("flow", 3, native=flow)
    with pytest.raises(samplers.NonFiniteError, match="here sigma = inf"):  # a plain k-diffusion-style eps wrapper
        samplers.sample("euler", lambda x, s: x - s.reshape(-1, 1, 1, 1) * torch.ones_like(x), GM.noise(2, seed=1),
                        sig, disable=True)

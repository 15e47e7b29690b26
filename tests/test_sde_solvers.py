"""ER-SDE, SA-Solver, SEEDS and Restart: deterministic limits of their stated order, exact equivalences,
the data distribution reached at high NFE, diffusers parity for SA-Solver, and honest NFE counts."""
from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture
from samplers.sde.solvers import restart_extra_nfe, restart_plan


def identity_scaler(sigma):
    return sigma


# ----------------------------------------------------------------------------------------------------
# deterministic limits: convergence order (pattern of tests/test_convergence.py)

MIX = GaussianMixture(means=[[0.7, -0.3, 0.2, 1.1], [-0.5, 0.4, 0.9, -0.2]], stds=[0.6, 0.8], weights=[0.4, 0.6])
SIGMA_START, SIGMA_END = 10.0, 0.1
X = MIX.noise(16, seed=0) * SIGMA_START
REF = MIX.ode_endpoint(X, SIGMA_START, SIGMA_END, rtol=1e-13, atol=1e-13)


def error(name, steps, **options):
    sigmas = torch.logspace(math.log10(SIGMA_START), math.log10(SIGMA_END), steps + 1, dtype=torch.float64)
    out = samplers.sample(name, MIX.denoiser, X, sigmas, disable=True, **options)
    return float((out - REF).abs().max())


# (name, options of the deterministic limit, order, steps); the registry order is the default's order.
ORDERS = [
    ("er_sde", dict(noise_scaler=identity_scaler, max_stage=1), 1, 32),
    ("er_sde", dict(noise_scaler=identity_scaler, max_stage=2), 2, 32),
    # stage 3 (the default): its derivative estimates are one-sided differences, so the limit is order 2
    ("er_sde", dict(noise_scaler=identity_scaler), 2, 32),
    ("seeds_2", dict(eta=0.0), 2, 32),
    ("seeds_2", dict(eta=0.0, solver_type="phi_2"), 2, 32),
    ("seeds_3", dict(eta=0.0), 3, 32),
    ("sa_solver", dict(eta=0.0), 4, 32),  # predictor 3 + corrector 4
    ("sa_solver", dict(eta=0.0, predictor_order=2, corrector_order=3), 3, 32),
    ("sa_solver", dict(eta=0.0, predictor_order=1, corrector_order=2), 2, 32),
    ("sa_solver_pece", dict(eta=0.0, predictor_order=2, corrector_order=3), 3, 32),
    ("restart", dict(restart=()), 2, 32),
]


@pytest.mark.parametrize("name,options,order,n", ORDERS,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items() if k != 'noise_scaler')}"
                              for c in ORDERS])
def test_deterministic_limit_has_its_order(name, options, order, n):
    slope = math.log2(error(name, n, **options) / error(name, 2 * n, **options))
    assert abs(slope - order) < 0.3, f"{name} {options}: observed order {slope:.2f}, stated {order}"


def test_registry_orders_are_the_defaults_orders():
    stated = {"er_sde": 2, "sa_solver": 4, "sa_solver_pece": 4, "seeds_2": 2, "seeds_3": 3, "restart": 2}
    assert {name: samplers.info(name).order for name in stated} == stated


def test_sa_solver_pece_default_is_at_least_fourth_order():
    # PECE's error constant shrinks with h here: measured slopes 4.28, 4.40, 4.32 from 16 to 128 steps
    slope = math.log2(error("sa_solver_pece", 32, eta=0.0) / error("sa_solver_pece", 64, eta=0.0))
    assert 3.7 < slope < 4.7


# ----------------------------------------------------------------------------------------------------
# exact equivalences of the deterministic limits

GM = GaussianMixture.default(shape=(2, 3, 3), components=4, seed=2)
EQUIVALENT = [
    ("seeds_2", dict(eta=0.0), "dpmpp_2s", {}),
    ("seeds_2", dict(eta=0.0, r=0.3), "dpmpp_2s", dict(r=0.3)),
    ("seeds_2", dict(eta=0.0, solver_type="phi_2"), "dpmpp_2s", dict(solver_type="heun")),
    ("sa_solver", dict(eta=0.0, predictor_order=1, corrector_order=0), "euler", {}),
    ("sa_solver", dict(eta=0.0, predictor_order=2, corrector_order=0), "res_multistep", {}),
    ("er_sde", dict(noise_scaler=identity_scaler, max_stage=1), "euler", {}),
    ("restart", dict(restart=()), "heun", {}),
]


@pytest.mark.parametrize("final_zero", [True, False])
@pytest.mark.parametrize("ours,ours_options,theirs,their_options", EQUIVALENT)
def test_deterministic_limit_equals_the_known_sampler(ours, ours_options, theirs, their_options, final_zero):
    sigmas = samplers.get_sigmas("karras", 9, sigma_min=0.03, sigma_max=20.0)
    if not final_zero:
        sigmas = sigmas[:-1]
    x = GM.noise(4, seed=1) * 20
    a = samplers.sample(ours, GM.denoiser, x, sigmas, disable=True, **ours_options)
    b = samplers.sample(theirs, GM.denoiser, x, sigmas, disable=True, **their_options)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# distribution: at high NFE each sampler reaches the data distribution

DATA = GaussianMixture(means=[[-2.0, 0.5], [1.5, 1.5], [0.5, -2.0]], stds=[0.3, 0.5, 0.4], weights=[0.3, 0.4, 0.3])
N = 10000
DIRECTIONS = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
DIRECTIONS = DIRECTIONS / DIRECTIONS.norm(dim=1, keepdim=True)
REFERENCE = DATA.sample(N, seed=1)
SIGMA_MAX = 40.0


def sliced_wasserstein(a, b):
    """SW₂ over 128 fixed directions between two equal-size sample sets (sorted projections)."""
    pa = (a.reshape(len(a), -1) @ DIRECTIONS.T).sort(0).values
    pb = (b.reshape(len(b), -1) @ DIRECTIONS.T).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def _threshold():
    """1.2 × the mean distance between independent exact sets of size N, plus 3 standard deviations of it.

    For a sampler whose output has exactly the data distribution, its distance to REFERENCE is distributed
    like these exact-vs-exact distances, so the 3σ term is the estimator noise (its coefficient of
    variation is ~0.4 here: the cluster proportions of N samples fluctuate); the 20 % is the allowed bias.
    """
    base = torch.tensor([sliced_wasserstein(DATA.sample(N, seed=100 + k), REFERENCE) for k in range(20)])
    return float(1.2 * base.mean() + 3 * base.std())


THRESHOLD = _threshold()


def sample_data(name, steps, **options):
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.002, sigma_max=SIGMA_MAX)
    g = torch.Generator().manual_seed(7)
    x = DATA.sample(N, seed=2) + SIGMA_MAX * torch.randn(N, 2, generator=g, dtype=torch.float64)  # exact x_T

    def noise(sigma, sigma_next):  # one generator for the whole batch: fast, and still only via noise_sampler
        return torch.randn(N, 2, generator=g, dtype=torch.float64)

    return samplers.sample(name, DATA.denoiser, x, sigmas, disable=True, noise_sampler=noise, **options)


DISTRIBUTION = [
    ("er_sde", 50, {}),
    ("sa_solver", 30, {}),
    ("sa_solver", 30, dict(sde_interval=(math.inf, 0.0))),  # τ = 1 everywhere: the full reverse SDE
    ("sa_solver_pece", 20, {}),
    ("seeds_2", 40, {}),
    ("seeds_3", 15, {}),
    ("restart", 20, {}),
    ("restart", 20, dict(restart=((3, 2, 0.3, 3.0), (2, 1, 2.0, 10.0)))),
]


@pytest.mark.parametrize("name,steps,options", DISTRIBUTION)
def test_reaches_the_data_distribution(name, steps, options):
    distance = sliced_wasserstein(sample_data(name, steps, **options), REFERENCE)
    assert distance < THRESHOLD, f"{name}: SW {distance:.4f} vs threshold {THRESHOLD:.4f}"


@pytest.mark.parametrize("name,steps,options", [
    ("er_sde", 50, dict(s_noise=0.0)),  # the drift without its noise: too concentrated
    ("seeds_2", 25, dict(s_noise=0.0)),
    ("restart", 15, dict(s_noise=0.0)),  # restarting without re-noising
    ("seeds_2", 5, {}),  # too few steps
])
def test_distribution_test_rejects_wrong_samplers(name, steps, options):
    distance = sliced_wasserstein(sample_data(name, steps, **options), REFERENCE)
    assert distance > THRESHOLD, f"{name} {options}: SW {distance:.4f} should exceed {THRESHOLD:.4f}"


# ----------------------------------------------------------------------------------------------------
# diffusers SASolverScheduler parity (data prediction, same orders, same τ, same noise)

diffusers = pytest.importorskip("diffusers")

TAUS = {"default": lambda t: 1 if 200 <= t <= 800 else 0, "ode": lambda t: 0, "sde": lambda t: 1}


PARITY = [(p, c, "default") for p, c in [(1, 1), (1, 2), (2, 2), (3, 3), (3, 4), (4, 4)]]
PARITY += [(p, c, tau) for p, c in [(2, 2), (3, 4)] for tau in ("ode", "sde")]


@pytest.mark.parametrize("predictor_order,corrector_order,tau", PARITY)
def test_sa_solver_matches_diffusers(sd15, predictor_order, corrector_order, tau):
    ours, theirs = sa_solver_and_diffusers(sd15, predictor_order, corrector_order, tau)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def sa_solver_and_diffusers(sd15, predictor_order, corrector_order, tau, steps=10, seed=4):
    """Both results in diffusers' VP coordinates at its last sigma σ(t = 0)."""
    tau_of_t = TAUS[tau]
    sch = diffusers.SASolverScheduler(**sd15.betas, predictor_order=predictor_order, corrector_order=corrector_order,
                                      tau_func=tau_of_t, algorithm_type="data_prediction")
    sch.set_timesteps(steps)
    n = sd15.noise
    latents, g = n.clone(), torch.Generator().manual_seed(seed)
    for t in sch.timesteps:
        latents = sch.step(sd15.model32(latents, t), t, latents, generator=g).prev_sample

    # the same noise: diffusers draws one normal tensor per step from g (also where τ = 0)
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randn(n.shape, generator=g) for _ in range(steps)]
    sigmas = sch.sigmas.double()  # ends at σ(t = 0) > 0, as diffusers does
    step_of = {float(s): k for k, s in enumerate(sigmas[:-1])}
    timestep_of = {float(s): int(t) for s, t in zip(sigmas[:-1], sch.timesteps)}

    def noise(sigma, sigma_next):
        return draws[step_of[sigma]]

    def tau_func(sigma, sigma_next):  # diffusers evaluates τ at the step's current timestep
        return float(tau_of_t(timestep_of[sigma]))

    x = n * math.sqrt(1 + float(sigmas[0]) ** 2)  # x_T = n in VP; / α_T in VE
    # simple_order_2 and lower_order_final: read at order 2 only (as the diffusers shim leaves them out)
    higher = {"simple_order_2": True, "lower_order_final": True} if max(predictor_order, corrector_order) >= 2 else {}
    out = samplers.sample("sa_solver", sd15.denoiser, x, sigmas, disable=True, predictor_order=predictor_order,
                          corrector_order=corrector_order, tau_func=tau_func, noise_sampler=noise, **higher)
    return out / math.sqrt(1 + float(sigmas[-1]) ** 2), latents


@pytest.mark.parametrize("tau", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("h", [0.05, 0.8, 3.0])  # z = (1+τ²)h on both sides of the series/recursion switch
@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 6])
def test_sa_weights_integrate_polynomials_exactly(nodes, h, tau):
    from scipy.integrate import quad

    from samplers.sde.solvers import _sa_weights

    lambda_s, lambda_t = 0.4, 0.4 + h
    for corrector in (False, True):
        lambdas = [lambda_s - 0.6 * h * k for k in range(nodes)]  # the current and past points
        if corrector:
            lambdas = [lambda_t] + lambdas[:-1]
        w = _sa_weights(lambdas, lambda_s, lambda_t, tau)
        a = 1 + tau * tau
        for degree in range(nodes):
            exact = quad(lambda lam: a * math.exp(a * (lam - lambda_t)) * lam**degree, lambda_s, lambda_t,
                         epsabs=1e-14, epsrel=1e-13)[0]
            got = sum(wj * lam**degree for wj, lam in zip(w, lambdas))
            assert got == pytest.approx(exact, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# NFE and noise accounting


class Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return self.model(x, sigma, **kw)


def test_restart_plan_and_its_extra_nfe():
    sigmas = samplers.get_sigmas("karras", 12, sigma_min=0.02, sigma_max=20.0)
    config = ((3, 2, 0.3, 3.0), (2, 1, 2.0, 10.0))
    values = sigmas.tolist()
    # an entry that lands on σ = 5.38 > its sigma_max 5.2 would never run: refused (left out only with drop=True,
    # A1111's rule for its automatic list)
    with pytest.raises(samplers.InvalidOption, match=r"\(4, 1, 5\.0, 5\.2\).*σ_3 = 5\.37862"):
        restart_plan(values, config + ((4, 1, 5.0, 5.2),))
    assert restart_plan(values, config + ((4, 1, 5.0, 5.2),), drop=True) == restart_plan(values, config)
    plan = restart_plan(values, config)
    j1 = min(range(1, 13), key=lambda k: abs(values[k] - 0.3))
    j2 = min(range(1, 13), key=lambda k: abs(values[k] - 2.0))
    assert sorted(plan) == sorted({j1, j2})
    grid = plan[j1][0][2]
    assert grid[0] == 3.0 and grid[-1] == values[j1] and len(grid) == 4
    assert restart_extra_nfe(sigmas, config) == 2 * 3 * 2 + 2 * 2 * 1
    model = Counting(GM.denoiser)
    samplers.sample("restart", model, GM.noise(2, seed=0) * 20, sigmas, disable=True, restart=config, seed=0)
    assert model.calls == 2 * 12 - 1 + restart_extra_nfe(sigmas, config)  # final Euler step: 1 call


@pytest.mark.parametrize("name,calls", [("sa_solver", lambda n: n), ("sa_solver_pece", lambda n: 2 * n - 1),
                                        ("er_sde", lambda n: n), ("seeds_2", lambda n: 2 * n - 1),
                                        ("seeds_3", lambda n: 3 * n - 2)])
def test_model_calls(name, calls):
    sigmas = samplers.get_sigmas("karras", 7, sigma_min=0.02, sigma_max=20.0)
    model = Counting(GM.denoiser)
    samplers.sample(name, model, GM.noise(2, seed=0) * 20, sigmas, disable=True, seed=0)
    assert model.calls == calls(7)  # the final step to σ = 0 is one call (x = D)


@pytest.mark.parametrize("name", ["er_sde", "sa_solver", "sa_solver_pece", "seeds_2", "seeds_3", "restart"])
def test_noise_only_through_the_noise_sampler(name):
    sigmas = samplers.get_sigmas("karras", 6, sigma_min=0.02, sigma_max=20.0)
    x = GM.noise(2, seed=0) * 20
    draws = []

    def noise(sigma, sigma_next):
        draws.append((sigma, sigma_next))
        return torch.zeros_like(x)

    state = torch.random.get_rng_state()
    zero_noise = samplers.sample(name, GM.denoiser, x, sigmas, disable=True, noise_sampler=noise)
    assert torch.equal(torch.random.get_rng_state(), state), "the global generator was used"
    assert draws, "a stochastic sampler with default options draws noise"
    no_noise = samplers.sample(name, GM.denoiser, x, sigmas, disable=True, s_noise=0.0, seed=0)
    torch.testing.assert_close(zero_noise, no_noise, rtol=1e-12, atol=1e-12)


def test_bad_options_raise():
    sigmas = samplers.get_sigmas("karras", 4, sigma_min=0.02, sigma_max=20.0)
    x = GM.noise(1, seed=0) * 20
    with pytest.raises(ValueError, match="max_stage"):
        samplers.sample("er_sde", GM.denoiser, x, sigmas, disable=True, max_stage=4)
    with pytest.raises(ValueError, match="corrector_order"):
        samplers.sample("sa_solver", GM.denoiser, x, sigmas, disable=True, corrector_order=7)
    with pytest.raises(ValueError, match="solver_type"):
        samplers.sample("seeds_2", GM.denoiser, x, sigmas, disable=True, solver_type="phi_3")
    with pytest.raises(ValueError, match="restart entry"):
        samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, restart=((2, 1, 3.0, 1.0),))



class _Counting:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return self.denoiser(x, sigma, **kw)


@pytest.mark.parametrize("noise", ["brownian", "brownian_tree", "object"])
@pytest.mark.parametrize("restart, steps", [(((3, 2, 0.1, 2.0),), 10), ("a1111", 40)])
def test_restart_refuses_a_brownian_path_for_an_interval_it_repeats(noise, restart, steps):
    # each of k_times restarts of one interval draws noise_sampler(σ_max, σ_min): a Brownian path answers the same
    # interval with the same draw, so the second restart added a copy of the first's noise (0.0 apart), silently
    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(2, seed=0) * 14.6
    obj = noise == "object"
    given = dict(noise_sampler=samplers.core.brownian.for_schedule(x, [5, 6], sigmas.tolist())) if obj else \
        dict(noise_sampler=noise, seed=5)
    model = _Counting(GM.denoiser)
    with pytest.raises(ValueError, match="same draw for the same interval"):
        samplers.sample("restart", model, x, sigmas, disable=True, restart=restart, **given)
    assert model.calls == 0
    # one restart per interval, no noise, or fresh noise: it runs
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, restart=((3, 1, 0.1, 2.0),), **given)
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, restart=restart, s_noise=0.0, **given)
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, seed=5, restart=restart)


@pytest.mark.parametrize("noise", ["brownian", "brownian_tree"])
def test_restart_refuses_a_brownian_path_for_entries_whose_intervals_overlap(noise):
    # two entries over [0.1, 2] and [0.5, 3]: a path answers their common part with the same increments, so the
    # second restart's noise was correlated with the first's (fresh noise is what Restart adds), silently
    sigmas = samplers.get_sigmas("karras", 10, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(2, seed=0) * 14.6
    overlapping = ((3, 1, 0.1, 2.0), (3, 1, 0.5, 3.0))
    model = _Counting(GM.denoiser)
    with pytest.raises(ValueError, match=r"\[0.\d+, 2\] and \[0.\d+, 3\], which overlap"):
        samplers.sample("restart", model, x, sigmas, disable=True, restart=overlapping, noise_sampler=noise, seed=5)
    assert model.calls == 0
    # intervals that do not overlap, no noise, or fresh noise: it runs
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, restart=((3, 1, 0.1, 0.5), (3, 1, 1.0, 3.0)),
                    noise_sampler=noise, seed=5)
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, restart=overlapping, s_noise=0.0,
                    noise_sampler=noise, seed=5)
    samplers.sample("restart", GM.denoiser, x, sigmas, disable=True, seed=5, restart=overlapping)


def test_restart_refuses_a_repeated_brownian_interval_before_the_first_step_from_infinity():
    # from σ = inf the first step (a model call) runs before the sampler, whose checks ran on a stand-in noise
    # sampler that hid the run's Brownian path: the refusal came after that call
    flow = samplers.RectifiedFlow(shift=3.0)
    sigmas = samplers.get_sigmas("flow", 40, native=flow)
    model = _Counting(lambda x, sigma, **kw: torch.zeros_like(x))
    with pytest.raises(ValueError, match="same draw for the same interval"):
        samplers.sample("restart", model, GM.noise(1, seed=0), sigmas, disable=True, restart="a1111",
                        noise_sampler="brownian", seed=0)
    assert model.calls == 0

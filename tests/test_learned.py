"""The learned multistep solver: the samplers it contains exactly, its two implementations agree, a fit beats
every fixed (sampler, schedule) start on held-out noise, and its file is checked on load."""
import json
import math

import pytest
import torch

import samplers
from samplers.fitted import solver as learned
from samplers.fitted.solver import LearnedSolver
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0


def run(solver, x, sigmas=None, **kw):
    return samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas if sigmas is None else sigmas,
                           solver=solver, disable=True, **kw)


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("name", learned.INITS)
def test_contains_known_samplers_exactly(name, schedule):
    sig = samplers.get_sigmas(schedule, 7, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    x = GM.noise(8, seed=1) * SIGMA_MAX
    mine = run(LearnedSolver.from_sampler(name, sig), x)
    torch.testing.assert_close(mine, samplers.sample(name, GM.denoiser, x, sig, disable=True), rtol=1e-10, atol=1e-10)


def test_default_is_euler():
    sig = samplers.get_sigmas("karras", 5, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    x = GM.noise(4, seed=2) * SIGMA_MAX
    torch.testing.assert_close(samplers.sample("learned_multistep", GM.denoiser, x, sig, disable=True),
                               samplers.sample("euler", GM.denoiser, x, sig, disable=True), rtol=1e-12, atol=1e-12)


def random_solver(n=6, seed=0, shifted=True) -> LearnedSolver:
    g = torch.Generator().manual_seed(seed)
    sig = samplers.get_sigmas("karras", n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).tolist()
    b = [[float(v) for v in torch.randn(i, generator=g) * 0.3] for i in range(n)]
    c = [[float(v) for v in torch.randn(i, generator=g) * 0.3] for i in range(n)]
    ms = [s * math.exp(float(torch.randn(1, generator=g)) * 0.1) for s in sig[:-1]] if shifted else None
    return LearnedSolver(sig, b, c, model_sigmas=ms).validate()


def test_fitting_rollout_is_the_registry_sampler():
    """The differentiable update the fit optimises is the loop the registry runs (float64)."""
    solver = random_solver()
    x = GM.noise(8, seed=3) * SIGMA_MAX
    b, c = learned._weights(solver)
    shift = torch.tensor([math.log(m / s) for m, s in zip(solver.model_sigmas, solver.sigmas)], dtype=torch.float64)
    torch.testing.assert_close(learned._rollout(GM.denoiser, x, solver.tensor(), b, c, shift), run(solver, x),
                               rtol=1e-10, atol=1e-10)


def test_exact_when_the_denoiser_is_constant():
    """Every weight multiplies a difference that vanishes for a constant D: any solver is then exact."""
    mu = torch.randn(1, 2, 4, 4, dtype=torch.float64)

    def constant(x, sigma):
        return mu.expand_as(x)

    solver = random_solver(seed=4, shifted=False)
    noise = GM.noise(3, seed=4)
    out = samplers.sample("learned_multistep", constant, noise * SIGMA_MAX, solver.sigmas, solver=solver, disable=True)
    torch.testing.assert_close(out, mu.expand_as(out), rtol=1e-10, atol=1e-10)  # x(0) = μ exactly


def test_fit_beats_every_fixed_start_on_held_out_noise(tmp_path):
    nfe = 4
    solver = learned.fit(GM.denoiser, nfe, GM.noise(1024, seed=0), SIGMA_MIN, SIGMA_MAX, iters=200, lr=1e-2,
                         check_every=20)
    assert solver.steps == nfe and solver.sigmas[0] == SIGMA_MAX and solver.sigmas[-1] == 0
    assert solver.meta["validation_rmse"] <= solver.meta["start"]["validation_rmse"]
    held = GM.noise(512, seed=1) * SIGMA_MAX
    ref = GM.ode_endpoint(held, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    rmse = lambda out: float((out - ref).pow(2).mean().sqrt())  # noqa: E731
    fixed = {}
    for name in learned.INITS:
        for schedule in ("karras", "exponential", "polyexponential", "kl_optimal", "vp"):
            sig = samplers.get_sigmas(schedule, nfe, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
            fixed[name, schedule] = rmse(samplers.sample(name, GM.denoiser, held, sig, disable=True))
    best = min(fixed.values())
    mine = rmse(run(solver, held))
    assert mine < 0.8 * best, f"fitted {mine:.4g} vs the best fixed start {best:.4g} ({min(fixed, key=fixed.get)})"
    # saved and loaded, it is the same solver
    again = LearnedSolver.load(solver.save(tmp_path / "s.json"))
    assert again == solver
    torch.testing.assert_close(run(again, held), run(solver, held), rtol=0, atol=0)
    # a path works as the option too
    torch.testing.assert_close(samplers.sample("learned_multistep", GM.denoiser, held[:2], solver.sigmas,
                                               solver=str(tmp_path / "s.json"), disable=True), run(solver, held[:2]))


def test_bad_input_is_named(tmp_path):
    solver = random_solver()
    x = GM.noise(2, seed=5) * SIGMA_MAX
    with pytest.raises(ValueError, match="has 6 steps but sigmas has 4"):
        run(solver, x, samplers.get_sigmas("karras", 4, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX))
    with pytest.raises(TypeError, match="LearnedSolver or a path"):
        samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver={"sigmas": []})
    with pytest.raises(ValueError, match="6 rows"):
        LearnedSolver(solver.sigmas, solver.eps_weights[:-1], solver.denoised_weights).validate()
    with pytest.raises(ValueError, match="strictly decreasing and end in 0"):
        LearnedSolver([1.0, 2.0, 0.0], [[], [0.0]], [[], [0.0]]).validate()
    with pytest.raises(ValueError, match="model_sigmas must hold 6"):
        LearnedSolver(solver.sigmas, solver.eps_weights, solver.denoised_weights, model_sigmas=[1.0]).validate()
    with pytest.raises(ValueError, match="init must be one of"):
        LearnedSolver.from_sampler("heun", solver.sigmas)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "samplers.learned_solver/1", "sigmas": [1.0')
    with pytest.raises(ValueError, match="not a valid learned-solver file"):
        LearnedSolver.load(bad)
    bad.write_text(json.dumps({"format": "other", "sigmas": [1.0, 0.0]}))
    with pytest.raises(ValueError, match="not a learned solver written by"):
        LearnedSolver.load(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        solver.save(tmp_path / "missing" / "s.json")
    with pytest.raises(ValueError, match="sigma_min < sigma_max < inf"):
        learned.fit(GM.denoiser, 3, GM.noise(4, seed=0), SIGMA_MIN, math.inf)


def test_weights_are_checked_and_hard_starts_are_drawn_by_difficulty():
    with pytest.raises(ValueError, match="one non-negative number per calibration start"):
        learned.fit(GM.denoiser, 3, GM.noise(16, seed=0), SIGMA_MIN, SIGMA_MAX, weights=torch.ones(3), iters=1)
    from benchmarks import common, learned_solvers
    problem = common.get_problem("gm-ve")
    noise, ref, w = learned_solvers.hard_starts(problem, 5, n=64, pool=512, seed=11, sigma_max=80.0)
    assert noise.shape == (64, *problem.shape) and ref.shape == noise.shape and bool((w > 0).all())
    pool = problem.noise(512, 11)
    picked = [int(torch.nonzero((pool == n).flatten(1).all(1)).flatten()[0]) for n in noise]
    assert len(set(picked)) == 64  # drawn without replacement from the pool
    # the weight is 1/(pool · probability): the hard starts, drawn more often, weigh less
    x = pool.double() * 80.0
    probe = samplers.sample("ipndm", problem.denoiser, x, problem.sigmas("karras", 5), disable=True)
    err = (probe - problem.reference(x, 80.0)).pow(2).flatten(1).mean(1).sqrt()
    score = err.clamp_min(err.median())
    torch.testing.assert_close(w, score.sum() / (512 * score[picked]))
    assert float(err[picked].mean()) > float(err.mean())


def test_pinned_node_is_exact_and_warps_a_schedule_piecewise():
    sig = samplers.get_sigmas("karras", 8, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).tolist()
    lmax, lmin = math.log(SIGMA_MAX), math.log(SIGMA_MIN)
    pin = (3, math.log(1.0))
    nodes = learned._nodes(learned._theta_for(sig, lmax, lmin, pin), lmax, lmin, pin)
    assert nodes.shape == (9,) and float(nodes[-1]) == 0 and bool((nodes[1:] < nodes[:-1]).all())
    assert math.isclose(float(nodes[3]), 1.0, rel_tol=1e-12) and math.isclose(float(nodes[0]), SIGMA_MAX, rel_tol=1e-12)
    # within each segment the log-σ gaps keep their proportions
    g_old = -torch.diff(torch.tensor(sig[:4], dtype=torch.float64).log())
    g_new = -torch.diff(nodes[:4].log())
    torch.testing.assert_close(g_new / g_new.sum(), g_old / g_old.sum(), rtol=1e-9, atol=0)
    # a schedule that already has σ_c at node 3 is unchanged (up to the floor on the slack below σ_min)
    again = learned._nodes(learned._theta_for(nodes.tolist(), lmax, lmin, pin), lmax, lmin, pin)
    torch.testing.assert_close(again, nodes, rtol=2e-4, atol=0)
    assert math.isclose(float(again[3]), 1.0, rel_tol=1e-12)


def test_checkpoint_fit_pins_the_node_and_beats_its_start_there():
    """With a checkpoint the fit also lowers the error of the mid-way state on near-boundary starts."""
    nfe, sigma_c, step = 6, 1.0, 3
    pool = GM.noise(2048, seed=4)
    x = pool * SIGMA_MAX
    ref = GM.ode_endpoint(x, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    probe = samplers.sample("euler", GM.denoiser, x, samplers.get_sigmas("karras", nfe, sigma_min=SIGMA_MIN,
                                                                          sigma_max=SIGMA_MAX), disable=True)
    hard = (probe - ref).pow(2).flatten(1).mean(1).argsort(descending=True)[:256]
    states = GM.ode_endpoint(x[hard], SIGMA_MAX, sigma_c, rtol=1e-9, atol=1e-9)
    ck = learned.Checkpoint(sigma_c, step, pool[hard], states)
    solver = learned.fit(GM.denoiser, nfe, GM.noise(512, seed=0), SIGMA_MIN, SIGMA_MAX, iters=60, lr=1e-2,
                         check_every=20, checkpoint=ck)
    assert solver.sigmas[step] == sigma_c and solver.steps == nfe
    meta = solver.meta["checkpoint"]
    assert meta["validation_criterion"] <= meta["start_criterion"]
    assert meta["validation_rmse"] < meta["start_validation_rmse"], meta
    with pytest.raises(ValueError, match="0 < step < nfe"):
        learned.fit(GM.denoiser, nfe, GM.noise(16, seed=0), SIGMA_MIN, SIGMA_MAX, iters=1,
                    checkpoint=learned.Checkpoint(sigma_c, nfe, pool[hard], states))
    with pytest.raises(ValueError, match="shaped like"):
        learned.fit(GM.denoiser, nfe, GM.noise(16, seed=0), SIGMA_MIN, SIGMA_MAX, iters=1,
                    checkpoint=learned.Checkpoint(sigma_c, step, pool[hard], states[:, :1]))


def test_boundary_starts_are_near_a_boundary_and_come_with_their_exact_mid_way_state():
    from benchmarks import common, learned_solvers
    problem = common.get_problem("gm-ve")
    gm = common.gaussian_mixture()
    noise, states = learned_solvers.boundary_starts(problem, 20, n=32, pool=1024, seed=11, sigma_max=80.0, sigma_c=1.0)
    assert noise.shape == (32, *problem.shape) and states.shape == noise.shape
    torch.testing.assert_close(states, gm.ode_endpoint(noise.double() * 80.0, 80.0, 1.0), rtol=1e-6, atol=1e-6)
    pool = problem.noise(1024, 11)
    picked = [int(torch.nonzero((pool == n).flatten(1).all(1)).flatten()[0]) for n in noise]
    assert len(set(picked)) == 32
    x = pool.double() * 80.0
    probe = samplers.sample("euler", problem.denoiser, x, problem.sigmas("karras", 20), disable=True)
    err = (probe - problem.reference(x, 80.0)).pow(2).flatten(1).mean(1).sqrt()
    assert float(err[picked].median()) > 2 * float(err.median())  # the probes' worst, where none flips
    assert [learned_solvers.checkpoint_step(n) for n in (2, 5, 10, 20)] == [1, 4, 8, 15]


def test_learned_solvers_report_pools_the_seeds_and_refuses_the_benchmarks_seeds(capsys):
    from benchmarks import common, learned_solvers
    problem = common.get_problem("gm-ve")
    solver = LearnedSolver.from_sampler("ipndm", problem.sigmas("karras", 5).tolist())
    r = learned_solvers.report(problem, solver, [11, 12], 64)
    per_seed = []
    for seed in (11, 12):
        x = problem.noise(64, seed).double() * 80.0
        per_seed.append(common.rmse(samplers.sample("ipndm", problem.denoiser, x, solver.sigmas, disable=True),
                                    problem.reference(x, 80.0)))
    assert r["starts"] == 128 and 0 <= r["wrong_mode"] <= 128
    assert r["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in per_seed) / 2), rel=1e-9)
    with pytest.raises(SystemExit):
        learned_solvers.main(["--evaluate", "x.json", "--report-seeds", "101"])
    assert "must not be a seed" in capsys.readouterr().err


def test_component_posterior_is_bayes_rule_and_margin_mining_picks_the_least_certain():
    x = GM.sample(6, seed=2) + 1.5 * GM.noise(6, seed=3)
    w = GM.component_posterior(x, 1.5)
    # Bayes' rule with x | k ~ N(μ_k, (s_k² + σ²) I), written out
    var = GM.stds**2 + 1.5**2
    d = GM.dim
    log_p = GM.weights.log() - 0.5 * (x.flatten(1)[:, None] - GM.means).pow(2).sum(-1) / var - 0.5 * d * var.log()
    torch.testing.assert_close(w, torch.softmax(log_p, 1), rtol=1e-10, atol=1e-12)
    from benchmarks import common, learned_solvers
    problem = common.get_problem("gm-ve")
    noise, states = learned_solvers.boundary_starts(problem, 10, n=16, pool=512, seed=11, sigma_max=80.0,
                                                    sigma_c=1.3, by="margin")
    pool_states = samplers.problems.pf_ode_solution(problem.denoiser, problem.noise(512, 11).double() * 80.0, 80.0, rtol=1e-9,
                                       atol=1e-9, sigma_end=1.3)
    margin = common.gaussian_mixture().component_posterior(pool_states, 1.3).max(1).values
    picked = common.gaussian_mixture().component_posterior(states, 1.3).max(1).values
    torch.testing.assert_close(picked.sort().values, margin.sort().values[:16], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="'probe' or 'margin'"):
        learned_solvers.boundary_starts(problem, 10, n=4, pool=8, seed=11, sigma_max=80.0, sigma_c=1.3, by="x")

"""The learned multistep solver: the samplers it contains exactly, its two implementations agree, a fit beats
every fixed (sampler, schedule) start on held-out noise, and its file is checked on load."""
import json
import math

import pytest
import torch

import samplers
from samplers import learned
from samplers.learned import LearnedSolver
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

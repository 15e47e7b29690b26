"""Fitting a solver: the family holds the registry's samplers exactly, the fit never ends worse than the best
fixed pair it could express, and the solver file records its model (runs on another only when allowed)."""
import inspect
import json
import math
import sys

import pytest
import torch

import samplers
from samplers.fitted import express as express_mod
from samplers.fitted import fitting
from samplers.fitted.fitting import FitConfig, fit, solver_rmse
from samplers.fitted.identity import fingerprint
from samplers.fitted.solver import LearnedSolver, OtherModelError
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=3)
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0
SIG = samplers.get_sigmas("karras", 7, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)


@pytest.mark.parametrize("name, options", [
    ("euler", {}), ("ddim", {}), ("dpmpp_2m", {}), ("dpmpp_3m", {}), ("deis", {}), ("deis", {"order": 2}),
    ("unipc_bh1", {}), ("unipc_bh2", {"order": 2}), ("ipndm", {}), ("gradient_estimation", {}), ("lms", {}),
    ("res_multistep", {}), ("midpoint", {}), ("dpm_2", {})])
def test_the_family_holds_registry_samplers_exactly(name, options):
    solver = express_mod.express(name, SIG, **options)
    assert solver is not None and solver.sigmas[0] == float(SIG[0]) and solver.sigmas[-1] == 0
    x = GM.noise(6, seed=1) * SIGMA_MAX
    mine = samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver=solver, disable=True)
    theirs = samplers.sample(name, GM.denoiser, x, SIG, disable=True, **options)
    torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    # and the differentiable rollout the fit optimises is the same computation
    torch.testing.assert_close(fitting.rollout(GM.denoiser, x, solver.tensor(), *fitting.Params.of(solver, SIGMA_MIN, 0).tensors()[1:3]),
                               theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["heun", "rk4", "kutta3", "heunpp2"])
def test_samplers_outside_the_family_are_not_expressed(name):
    # two model calls at one σ (heun's corrector, RK stages) or not linear: not a solver of this family
    assert express_mod.express(name, SIG) is None
    with pytest.raises(samplers.InvalidInput, match="not in the learned family"):
        LearnedSolver.from_sampler(name, SIG)


def random_solver(n=6, seed=0) -> LearnedSolver:
    g = torch.Generator().manual_seed(seed)
    sig = samplers.get_sigmas("karras", n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).tolist()
    b = [[float(v) for v in torch.randn(i, generator=g) * 0.3] for i in range(n)]
    c = [[float(v) for v in torch.randn(i, generator=g) * 0.3] for i in range(n)]
    ms = [s * math.exp(float(torch.randn(1, generator=g)) * 0.1) for s in sig[:-1]]
    return LearnedSolver(sig, b, c, model_sigmas=ms).validate()


def test_the_fit_rollout_is_the_registry_sampler():
    solver = random_solver()
    x = GM.noise(8, seed=3) * SIGMA_MAX
    p = fitting.Params.of(solver, SIGMA_MIN, 5)
    torch.testing.assert_close(fitting.rollout(GM.denoiser, x, solver.tensor(), p.b, p.c, p.shift),
                               samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver=solver,
                                               disable=True), rtol=1e-10, atol=1e-10)


def test_any_solver_is_exact_when_the_denoiser_is_constant():
    mu = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    solver = random_solver(seed=4)
    solver.model_sigmas = None
    out = samplers.sample("learned_multistep", lambda x, s: mu.expand_as(x), GM.noise(3, seed=4) * SIGMA_MAX,
                          solver.sigmas, solver=solver, disable=True)
    torch.testing.assert_close(out, mu.expand_as(out), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# the guarantee, on mixtures of sizes and seeds the fitting code was never developed on


def validation_starts(denoiser, noise, config, reference_fn, sigma_min, sigma_max, native=None, start=None):
    """The validation starts of ``fit(denoiser, config, noise, ...)`` from σ ``start`` (None: sigma_max), found
    again as the fit finds them: the calibration's last share, and the pool's last share where stage 1's best pairs
    disagree most, weighted as the whole of both (``w_val``)."""
    n_val = int(round(noise.shape[0] * config.validation))
    higher = native is not None and math.isinf(native.sigma_max)
    starts = fitting.Starts(noise, n_val, {}, sigma_min, sigma_max, reference_fn, higher)
    pool = fitting.make_pool(noise, {}, config, reference_fn)
    fitting.starting_point(denoiser, starts, config, native, pool=pool)
    data = starts.at(sigma_max if start is None else start)
    n_pool_val = int(round(len(pool) * config.validation))
    return fitting.with_hard_starts(denoiser, data, starts, pool, pool.strata, n_pool_val)


def guaranteed(denoiser, solver, joined) -> float:
    """The fit's weighted RMSE on ``joined`` validation starts, checked to be at most its starting pair's."""
    mine = solver_rmse(denoiser, solver, joined.x_val, joined.ref_val, weights=joined.w_val)
    theirs = solver_rmse(denoiser, LearnedSolver(**solver.meta["start"]["solver"]), joined.x_val, joined.ref_val,
                         weights=joined.w_val)
    assert mine <= theirs * (1 + 1e-9)
    return mine


@pytest.mark.parametrize("shape, modes, seed, nfe", [((3, 4, 4), 5, 101, 5), ((24,), 9, 202, 6)])
def test_never_worse_than_the_best_fixed_pair_it_can_express(shape, modes, seed, nfe, time_limit):
    gm = GaussianMixture.default(shape=shape, components=modes, seed=seed)
    noise = gm.noise(192, seed=seed)
    ref = gm.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    config = FitConfig(nfe, iters=60, lr=1e-2, check_every=10)
    with time_limit(120):
        solver = fit(gm.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref)
    n_val = 48
    x_val = noise[-n_val:] * SIGMA_MAX
    x_train, ref_train = noise[:-n_val] * SIGMA_MAX, ref[:-n_val]
    # the start is among the best expressible pairs on the training starts (every candidate scored in full), and
    # of those the best on the training starts and the pool together (never worse than the training leader)
    every = fitting.candidates(nfe, SIGMA_MIN, SIGMA_MAX)
    ranked = sorted(solver_rmse(gm.denoiser, c.solver, x_train, ref_train) for c in every)
    start = solver.meta["start"]
    assert start["training_rmse"] <= ranked[config.keep - 1] * (1 + 1e-12)
    assert start["pooled_vs_training_leader"] <= 0 and solver.meta["pool"]["starts"] == config.pool * 192
    # the guarantee on the validation part — the calibration's and the pool's last quarter, its starts where the
    # best pairs disagree most solved, weighted as the whole of both: the fit's error is never above the start's
    joined = validation_starts(gm.denoiser, noise, config, lambda x, extra, sigma: fitting.reference_endpoints(
        gm.denoiser, x, sigma), SIGMA_MIN, SIGMA_MAX)
    torch.testing.assert_close(joined.x_val[:n_val], x_val, rtol=0, atol=0)
    assert joined.x_val.shape[0] - n_val == solver.meta["pool"]["checked_on"] > 0
    # (the pool's endpoints, adaptive solves at rtol 1e-7, differ with the batch they are solved in)
    assert solver.meta["validation_rmse"] == pytest.approx(guaranteed(gm.denoiser, solver, joined), rel=1e-4)


def test_by_default_the_start_is_the_best_pair_where_a_screen_would_miss_it():
    gm = GaussianMixture.default(shape=(12,), components=6, seed=404)
    noise = gm.noise(96, seed=404)
    x = noise * SIGMA_MAX
    ref = gm.ode_endpoint(x, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    every = fitting.candidates(5, SIGMA_MIN, SIGMA_MAX)
    n_val = 24
    x_train, ref_train = x[:-n_val], ref[:-n_val]
    # the first four training starts are unlike the rest (their endpoints far from any solver's), so a ranking
    # on them alone is unrelated to the ranking on all: a screen on them keeps ten candidates, none the best
    ref_train = ref_train.clone()
    ref_train[:4] = 25.0
    errors = {c.label: solver_rmse(gm.denoiser, c.solver, x_train, ref_train) for c in every}
    best = min(errors, key=errors.get)
    data = fitting.Calibration(x_train, ref_train, x[-n_val:], ref[-n_val:], SIGMA_MIN, SIGMA_MAX)
    screened = fitting.starting_point(gm.denoiser, data, FitConfig(5, screen=4))
    exact = fitting.starting_point(gm.denoiser, data, FitConfig(5))
    assert exact[0].label == best and exact[0].error == pytest.approx(errors[best], rel=1e-12)
    assert sorted(c.error for c in exact) == pytest.approx(sorted(errors.values()), rel=1e-12)
    assert screened[0].label != best and screened[0].error > errors[best]
    with pytest.raises(samplers.InvalidOption, match="screen"):
        FitConfig(5, screen=0).validate()


def test_schedules_published_with_a_rounded_top_are_candidates_starting_at_the_top():
    # Align Your Steps' tables start at 14.615 where an SD-style model's σ_max is 14.6146: the learned family
    # expresses those grids from σ_max, and the best pair may well be one (unipc_bh1 + ays_sdxl on gm-vp-eps)
    from samplers.core.native import VPDiscrete

    native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    assert float(samplers.get_sigmas("ays_sd15", 10, native=native)[0]) != native.sigma_max
    found = fitting.candidates(10, native.sigma_min, native.sigma_max, native)
    ays = [c for c in found if c.schedule in ("ays_sd15", "ays_sdxl")]
    assert {c.schedule for c in ays} == {"ays_sd15", "ays_sdxl"} and any(c.sampler == "unipc_bh1" for c in ays)
    assert all(c.solver.sigmas[0] == native.sigma_max for c in ays)


def test_when_the_optimisation_cannot_help_the_start_itself_comes_back():
    noise = GM.noise(64, seed=9)
    ref = GM.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    # training targets that are wrong (the validation quarter keeps the true ones): every step the optimiser
    # takes moves away from the truth, and the fit must hand back the starting pair unchanged
    misleading = ref.clone()
    misleading[:48] = -2.0 * misleading[:48] + 1.0
    for config in (FitConfig(4, iters=0), FitConfig(4, iters=30, lr=5e-2, check_every=5)):
        solver = fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX,
                     reference=ref if config.iters == 0 else misleading)
        start = LearnedSolver(**solver.meta["start"]["solver"])
        assert solver.meta["kept"] == "start" and solver.meta["iteration_kept"] == 0
        assert solver.same_steps(start)  # the very pair: held-out reports score it once
        x = GM.noise(4, seed=10) * SIGMA_MAX
        torch.testing.assert_close(
            samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver=solver, disable=True),
            samplers.sample("learned_multistep", GM.denoiser, x, start.sigmas, solver=start, disable=True))


def test_fit_config_and_inputs_are_checked():
    for bad in (dict(nfe=0), dict(nfe=4, validation=1.0), dict(nfe=4, lr=-1.0), dict(nfe=4, iters=2.5),
                dict(nfe=4, batch=0), dict(nfe=4, time_budget=0), dict(nfe=4, pool=-1), dict(nfe=4, pool=1.5),
                dict(nfe=4, pool_solved=0), dict(nfe=4, pool_solved=1.5), dict(nfe=4, starts=0)):
        with pytest.raises(samplers.InvalidOption):
            FitConfig(**bad).validate()
    with pytest.raises(samplers.InvalidInput, match="sigma_max"):
        fit(GM.denoiser, 3, GM.noise(8, seed=0), SIGMA_MIN, math.inf)
    with pytest.raises(samplers.InvalidInput, match="validation"):
        fit(GM.denoiser, 3, GM.noise(2, seed=0), SIGMA_MIN, SIGMA_MAX)


def test_a_time_budget_stops_the_optimisation():
    noise = GM.noise(64, seed=9)
    ref = GM.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    lines = []
    fit(GM.denoiser, FitConfig(4, iters=100_000, time_budget=2.0), noise, SIGMA_MIN, SIGMA_MAX, reference=ref,
        log=lines.append)
    assert any("time budget spent" in line for line in lines)


def test_the_fit_runs_from_the_best_pairs_and_stage_4_holds_the_one_it_keeps_against_the_best(monkeypatch):
    noise = GM.noise(192, seed=31)
    ref = GM.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    real, runs = fitting.optimise, []

    def recorded(denoiser, start, data, config, **kw):
        best, rmse, it = real(denoiser, start, data, config, **kw)
        if sabotage and not runs:  # the best pair's fit: its nodes thrown away, as a diverging run could leave them
            best = LearnedSolver([start.sigmas[0]] + [s * 0.2 for s in start.sigmas[1:]], start.eps_weights,
                                 start.denoised_weights, model_sigmas=start.model_sigmas)
            it = 5
        runs.append((start, best, it))
        return best, rmse, it

    monkeypatch.setattr(fitting, "optimise", recorded)
    pairs = dict(samplers=("ipndm", "gradient_estimation", "dpmpp_2m"), schedules=("exponential", "vp", "karras"))
    for sabotage in (False, True):
        solvers = {}
        for starts in (1, 3):
            runs.clear()
            solver = fit(GM.denoiser, FitConfig(5, iters=40, check_every=10, starts=starts, **pairs), noise,
                         SIGMA_MIN, SIGMA_MAX, reference=ref)
            # one optimisation from each of the best pairs, in stage 1's order
            assert [r[0].sigmas for r in runs][:1] == [solver.meta["start"]["solver"]["sigmas"]]
            assert len(runs) == starts == solver.meta["fitted_from_pairs"]
            ranked = [solver.meta["start"]] + solver.meta["runner_up"]
            assert [(r["sampler"], r["schedule"]) for r in ranked[:starts]] == [
                (c.sampler, c.schedule) for c in (_pair_of(r[0], pairs) for r in runs)]
            # the result is the best pair or one of the fits, never a sabotaged one, and never worse than the best
            # pair on the validation starts (the calibration's and the pool's, weighted)
            if solver.meta["kept"] == "fit":
                assert any(solver.sigmas[1:-1] == r[1].sigmas[1:-1] for r in runs[int(sabotage):])
            joined = validation_starts(GM.denoiser, noise, FitConfig(5, **pairs), lambda x, extra, sigma:
                                       fitting.reference_endpoints(GM.denoiser, x, sigma), SIGMA_MIN, SIGMA_MAX)
            guaranteed(GM.denoiser, solver, joined)
            solvers[starts] = solver
        if sabotage:  # alone, the sabotaged fit is turned down; with the other pairs' fits, one of those may win
            assert solvers[1].meta["kept"] == "start"
            assert solvers[3].meta["kept"] == "fit" and solvers[3].meta["fitted_from"] is not None
        else:  # the first pair's fit is among those compared, so three starts end about as close as one or closer
            # (the fits are ranked on the calibration's validation starts and the pool's quarter, not on this mean)
            assert solvers[3].meta["validation_rmse"] <= solvers[1].meta["validation_rmse"] * 1.05
    # no optimisation: the other pairs come back unchanged and are no fits, so the result is the best pair's
    for starts in (1, 3):
        solver = fit(GM.denoiser, FitConfig(5, iters=0, starts=starts, **pairs), noise, SIGMA_MIN, SIGMA_MAX,
                     reference=ref)
        assert solver.meta["kept"] == "start" and solver.meta["fitted_from"] is None


def _pair_of(solver, pairs):
    return next(c for c in fitting.candidates(5, SIGMA_MIN, SIGMA_MAX, config=FitConfig(5, **pairs))
                if c.solver.sigmas == solver.sigmas and c.solver.eps_weights == solver.eps_weights
                and c.solver.denoised_weights == solver.denoised_weights)


def test_stage_4_compares_a_fit_from_another_sigma_on_the_same_starts_from_there():
    native, gm, denoiser = flow_case(seed=11)
    noise = gm.noise(128, seed=11)
    config = FitConfig(8, samplers=("euler", "gradient_estimation"), schedules=("flow", "ays_svd"))
    by = {(c.sampler, c.solver.sigmas[0]): c
          for c in fitting.candidates(8, native.sigma_min, 80.0, native, config, higher=True)}
    starts = fitting.Starts(noise, 32, {}, native.sigma_min, 80.0,
                            lambda x, extra, sigma: gm.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9), True)
    top = float(samplers.get_sigmas("ays_svd", 8, native=native)[0])  # Align Your Steps' SVD table: from 700
    a, b = by[("euler", 80.0)], by[("gradient_estimation", top)]  # euler + flow; gradient_estimation + ays_svd
    at = {sigma: starts.at(sigma) for sigma in (80.0, top)}
    err = {c.sampler: solver_rmse(denoiser, c.solver, at[c.solver.sigmas[0]].x_val, at[c.solver.sigmas[0]].ref_val)
           for c in (a, b)}
    assert err["gradient_estimation"] < 0.5 * err["euler"]
    for pair, other, kept in ((a, b, "fit"), (b, a, "start")):
        mine, theirs = at[other.solver.sigmas[0]], at[pair.solver.sigmas[0]]
        out = fitting.validate(denoiser, pair, other.solver, theirs, fitted=(mine, mine))
        # kept where it is closer, and then from its own σ, its error measured from there on the same starts
        assert out.meta["kept"] == kept
        assert out.sigmas[0] == (other if kept == "fit" else pair).solver.sigmas[0]
        assert out.meta["validation_rmse"] == pytest.approx(err["gradient_estimation"], rel=1e-9)
        assert out.meta["start"]["validation_rmse"] == pytest.approx(err[pair.sampler], rel=1e-9)
        x = samplers.initial_latent(noise[-32:], out.sigmas)
        assert solver_rmse(denoiser, out, x, mine.ref_val if kept == "fit" else theirs.ref_val) == pytest.approx(
            err["gradient_estimation"], rel=1e-9)


def test_an_interrupted_fit_resumes_from_its_state(tmp_path):
    noise = GM.noise(64, seed=9)
    ref = GM.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    state = tmp_path / "state.pt"
    config = FitConfig(4, iters=20, check_every=5)
    whole = fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref)

    class Interrupted(Exception):
        pass

    done = []

    def interrupt(n):
        done.append(n)
        if len(done) == 12:  # killed after iteration 12; the state holds iteration 10
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state, progress=interrupt)
    lines = []
    resumed = fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state,
                  log=lines.append)
    assert any("resumed at iteration 10" in line for line in lines)
    assert resumed == whole or resumed.meta["validation_rmse"] == pytest.approx(whole.meta["validation_rmse"], rel=1e-9)
    lines = []  # another configuration does not resume from that state
    fit(GM.denoiser, FitConfig(4, iters=3), noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state,
        log=lines.append)
    assert not any("resumed" in line for line in lines)
    # nor does a state of the code before the pool's rare starts joined training (its best was checked elsewhere)
    with pytest.raises(Interrupted):
        done.clear()
        fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state, progress=interrupt)
    old = torch.load(state, weights_only=True)
    del old["config"]["state_format"]
    torch.save(old, state)
    lines = []
    fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state, log=lines.append)
    assert not any("resumed" in line for line in lines)
    # nor does a fit of another model, or on other starts, with the same options (it resumed the other's best)
    other = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=4)
    other_ref = other.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    for model, starts, ends in ((other.denoiser, noise, other_ref), (GM.denoiser, noise.flip(0), ref.flip(0))):
        state.unlink()
        with pytest.raises(Interrupted):
            done.clear()
            fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state,
                progress=interrupt)
        lines = []
        fit(model, config, starts, SIGMA_MIN, SIGMA_MAX, reference=ends, state_path=state, log=lines.append)
        assert not any("resumed" in line for line in lines)
    state.write_bytes(state.read_bytes()[:100])  # a truncated file: named, with the fix
    with pytest.raises(samplers.InvalidInput, match="state.pt cannot be read .*delete it"):
        fit(GM.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref, state_path=state)


@pytest.mark.parametrize("config, message", [
    (FitConfig(4, samplers="euler"), r"non-empty tuple of names .*write \('euler',\) for one"),
    (FitConfig(4, samplers=("euler", "dpmpp_2mm")), "unknown sampler 'dpmpp_2mm'"),
    (FitConfig(4, schedules=("karras", "karas")), "unknown schedule 'karas'"),
    (FitConfig(4, lr=True), "lr must be a number"),
    (FitConfig(4, time_budget="5"), "time_budget must be a number"),
    (FitConfig(4, validation=math.nan), "validation must be a number"),
])
def test_fit_config_refuses_what_it_would_drop_or_coerce(config, message):
    calls = []

    def model(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)

    with pytest.raises(ValueError, match=message):
        fit(model, config, GM.noise(16, seed=1), SIGMA_MIN, SIGMA_MAX)
    assert not calls


def test_fit_refuses_a_calibration_with_nan_and_express_an_unknown_name_or_option():
    noise = GM.noise(16, seed=1)
    noise[3, 0, 0, 0] = math.nan
    with pytest.raises(samplers.InvalidInput, match="calibration holds NaN"):
        fit(GM.denoiser, FitConfig(4), noise, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(samplers.UnknownNameError, match="eulr"):
        express_mod.express("eulr", SIG)
    with pytest.raises(samplers.InvalidOption, match="no option 'bogus'"):
        express_mod.express("dpmpp_2m", SIG, bogus=1)
    assert express_mod.express("heun", SIG) is None  # a known sampler outside the family is still None


# ----------------------------------------------------------------------------------------------------
# the file, the model it records, and the name fitted:PATH


def _solver_for(model) -> LearnedSolver:
    solver = LearnedSolver.from_sampler("dpmpp_2m", SIG)
    solver.model = {"fingerprint": fingerprint(model), "name": "test mixture", "prediction": "x0"}
    return solver


def test_same_steps_compares_the_update_rule_not_the_records():
    solver = _solver_for(GM.denoiser)
    other = LearnedSolver.from_sampler("dpmpp_2m", SIG)  # no model, no meta
    assert solver.same_steps(other) and other.same_steps(solver) and solver != other
    told = LearnedSolver(list(other.sigmas), other.eps_weights, other.denoised_weights,
                         model_sigmas=list(other.sigmas[:-1]))
    assert solver.same_steps(told)  # the σ told at each node, spelled out, is the default
    for change in ("sigmas", "eps_weights", "denoised_weights", "model_sigmas"):
        changed = LearnedSolver(list(other.sigmas), [list(r) for r in other.eps_weights],
                                [list(r) for r in other.denoised_weights], model_sigmas=list(other.sigmas[:-1]))
        if change == "sigmas":
            changed.sigmas[2] *= 1.01
        elif change == "model_sigmas":
            changed.model_sigmas[2] *= 1.01
        else:
            getattr(changed, change)[3][1] += 0.01
        assert not solver.same_steps(changed), change


def test_the_file_round_trips_and_records_the_model(tmp_path):
    solver = _solver_for(GM.denoiser)
    path = solver.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["format"] == "samplers.fitted_solver/2" and data["nfe"] == 7 and data["sigma_max"] == float(SIG[0])
    assert data["model"]["fingerprint"] == fingerprint(GM.denoiser) is not None
    assert LearnedSolver.load(path) == solver
    for text, match in (('{"format": "samplers.fitted_solver/2", "sigmas": [1.0', "not a valid"),
                        ('{"sigmas": [1.0, 0.0]}', "not a learned solver"), ("[]", "not a learned solver")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(samplers.InvalidInput, match=match):
            LearnedSolver.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="samplers fit"):
        samplers.sample("fitted:" + str(tmp_path / "missing.json"), GM.denoiser, GM.noise(1, 0), SIG)
    with pytest.raises(samplers.InvalidInput, match="is a folder; give a solver file in it"):
        LearnedSolver.load(tmp_path)
    # a value of the wrong kind is refused, naming the file (true and null are not numbers)
    n = solver.steps
    for field, value, match in (("sigmas", [None, *solver.sigmas[1:]], "sigmas must be a list of numbers"),
                                ("sigmas", [True, *solver.sigmas[1:]], "sigmas must be a list of numbers"),
                                ("sigmas", 5, "sigmas must be a list of numbers"),
                                ("eps_weights", [[True] * i for i in range(n)], "eps_weights rows must be"),
                                ("model_sigmas", ["a"] * n, "model_sigmas must be a list of numbers"),
                                ("meta", [1, 2], "meta must be a dict")):
        (tmp_path / "bad.json").write_text(json.dumps({**data, field: value}))
        with pytest.raises(samplers.InvalidInput, match=f"bad.json: a learned solver's {match}"):
            LearnedSolver.load(tmp_path / "bad.json")


def test_an_old_solver_file_still_loads(tmp_path):
    # the first format had no record of the model: such a solver runs on any model (nothing to check)
    old = {"format": "samplers.learned_solver/1", "sigmas": [20.0, 2.0, 0.0], "eps_weights": [[], [-1.0]],
           "denoised_weights": [[], [0.0]], "meta": {"nfe": 2}, "model_sigmas": None}
    (tmp_path / "old.json").write_text(json.dumps(old))
    solver = LearnedSolver.load(tmp_path / "old.json")
    assert solver.steps == 2 and solver.model == {}
    x = GM.noise(2, seed=1) * 20.0
    torch.testing.assert_close(samplers.sample(f"fitted:{tmp_path / 'old.json'}", GM.denoiser, x, [20.0, 2.0, 0.0]),
                               samplers.sample("gradient_estimation", GM.denoiser, x, [20.0, 2.0, 0.0]))


def test_fitted_path_runs_by_name_and_refuses_another_model(tmp_path):
    path = _solver_for(GM.denoiser).save(tmp_path / "s.json")
    x = GM.noise(3, seed=5) * SIGMA_MAX
    by_name = samplers.sample(f"fitted:{path}", GM.denoiser, x, SIG, disable=True)
    torch.testing.assert_close(by_name, samplers.sample("dpmpp_2m", GM.denoiser, x, SIG, disable=True),
                               rtol=1e-9, atol=1e-9)
    assert samplers.info(f"fitted:{path}").name == "learned_multistep"
    other = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=4)
    with pytest.raises(OtherModelError, match="not to this model"):
        samplers.sample(f"fitted:{path}", other.denoiser, x, SIG)
    with pytest.raises(OtherModelError, match="no fingerprint"):
        samplers.sample(f"fitted:{path}", lambda x, s: x * 0, x, SIG)
    samplers.sample(f"fitted:{path}", other.denoiser, x, SIG, allow_other_model=True, disable=True)
    with pytest.raises(samplers.InvalidInput, match="own 7 σ nodes"):  # weights fitted on other sigmas
        samplers.sample(f"fitted:{path}", GM.denoiser, x, samplers.get_sigmas("exponential", 7, sigma_min=SIGMA_MIN,
                                                                              sigma_max=SIGMA_MAX))
    samplers.fitted.solver.register_solver("my_test_fit", path)
    torch.testing.assert_close(samplers.sample("fitted:my_test_fit", GM.denoiser, x, SIG, disable=True), by_name)
    with pytest.raises(samplers.UnknownNameError, match="no fitted solver named"):
        samplers.get("fitted:nothing_here")


def test_fingerprints_see_through_wrappers_and_guidance():
    net = torch.nn.Linear(3, 3)
    d = samplers.to_denoiser(lambda x, t: net(x), "eps", samplers.VPDiscrete.from_betas())
    assert fingerprint(d) is None  # a closure: nothing to identify
    d = samplers.to_denoiser(net, "eps", samplers.VPDiscrete.from_betas())
    # the network's weights read through its prediction and schedule (identity.denoiser_fingerprint)
    assert fingerprint(d) not in (fingerprint(net), None) and fingerprint(net) is not None
    from models.guidance import CFGDenoiser

    cond = {"c": torch.zeros(1, 1)}
    assert fingerprint(CFGDenoiser(d, cond, cond, 1.0)) == fingerprint(d)
    assert fingerprint(CFGDenoiser(d, cond, cond, 4.0)) not in (fingerprint(d), fingerprint(CFGDenoiser(d, cond, cond, 5.0)))
    before = fingerprint(d)
    with torch.no_grad():
        net.weight[0, 0] += 1
    assert fingerprint(d) != before


def test_bad_solvers_are_named(tmp_path):
    solver = random_solver()
    x = GM.noise(2, seed=5) * SIGMA_MAX
    with pytest.raises(samplers.InvalidType, match="LearnedSolver, the path of its file or its record"):
        samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver=[solver.sigmas])
    with pytest.raises(samplers.InvalidInput, match="solver is not a learned solver written by LearnedSolver.save"):
        samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver={"sigmas": []})  # not a record
    with pytest.raises(samplers.InvalidInput, match="6 rows"):
        LearnedSolver(solver.sigmas, solver.eps_weights[:-1], solver.denoised_weights).validate()
    for bad in ([1.0, 2.0, 0.0], [math.inf, math.inf, 0.0], [math.nan, 1.0, 0.0], [2.0, math.inf, 0.0]):
        with pytest.raises(samplers.InvalidInput, match="strictly decreasing, finite but for a first σ of inf"):
            LearnedSolver(bad, [[], [0.0]], [[], [0.0]]).validate()
    with pytest.raises(samplers.InvalidInput, match="finite but for inf where the first σ is inf"):
        LearnedSolver([math.inf, 1.0, 0.0], [[], [0.0]], [[], [0.0]], model_sigmas=[80.0, 1.0]).validate()
    LearnedSolver([math.inf, 1.0, 0.0], [[], [0.0]], [[], [0.0]], model_sigmas=[math.inf, 1.1]).validate()
    with pytest.raises(samplers.InvalidInput, match="model_sigmas must hold 6"):
        LearnedSolver(solver.sigmas, solver.eps_weights, solver.denoised_weights, model_sigmas=[1.0]).validate()
    with pytest.raises(samplers.InvalidInput, match="non-finite"):
        LearnedSolver(solver.sigmas, [[], [math.nan]] + solver.eps_weights[2:], solver.denoised_weights).validate()
    with pytest.raises(samplers.InvalidType, match="allow_other_model"):
        samplers.sample("learned_multistep", GM.denoiser, x, solver.sigmas, solver=solver, allow_other_model="yes")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        solver.save(tmp_path / "missing" / "s.json")
    with pytest.raises(samplers.InvalidInput, match="plain word"):
        samplers.fitted.solver.register_solver("a/b", solver)


def test_the_default_is_euler():
    x = GM.noise(4, seed=2) * SIGMA_MAX
    torch.testing.assert_close(samplers.sample("learned_multistep", GM.denoiser, x, SIG, disable=True),
                               samplers.sample("euler", GM.denoiser, x, SIG, disable=True), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# deciding on a pool: rare starts that a few hundred do not hold

TYPICAL, TAIL = "ipndm + exponential", "gradient_estimation + vp"  # on GM at 6 NFE: the first is far better on
# the typical start (median error 0.04×) and worse in mean squared error (1.5×), set by the starts it sends astray


def pool_case():
    pairs = {c.label: c for c in fitting.candidates(6, SIGMA_MIN, SIGMA_MAX, config=FitConfig(
        6, samplers=("ipndm", "gradient_estimation"), schedules=("exponential", "vp")))}
    x = GM.noise(512, seed=21) * SIGMA_MAX
    ref = GM.ode_endpoint(x, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    errors = {k: fitting.per_start_mse(GM.denoiser, c.solver, x, ref) for k, c in pairs.items()}
    # starts that hold none of the rare ones: where every pair's error is small
    calm = (torch.stack(list(errors.values())).amax(0) < 0.05).nonzero().flatten()
    return pairs, x, ref, errors, calm


def exact_pool(n=2048, seed=22, share=1 / 16):
    return fitting.Pool(GM.noise(n, seed=seed), {},
                        lambda x, extra, sigma: GM.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9), share)


def test_a_comparison_with_every_pool_start_solved_is_the_exact_difference():
    pairs, x, ref, errors, _ = pool_case()
    solvers = [pairs[TAIL].solver, pairs[TYPICAL].solver, random_solver(6, seed=5)]
    pool = exact_pool(256, share=1.0)
    got = fitting.compare(GM.denoiser, solvers, {SIGMA_MAX: (x[:64], ref[:64], {})}, pool)
    xs, refs = torch.cat([x[:64], pool.x(SIGMA_MAX)]), torch.cat([ref[:64], pool.refs[SIGMA_MAX]])
    first = fitting.per_start_mse(GM.denoiser, solvers[0], xs, refs)
    want = torch.stack([(fitting.per_start_mse(GM.denoiser, s, xs, refs) - first).mean() for s in solvers])
    assert bool(pool.solved[SIGMA_MAX].all())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_pool_sees_what_the_validation_starts_miss():
    pairs, x, ref, errors, calm = pool_case()
    assert float(errors[TYPICAL].mean()) > 1.2 * float(errors[TAIL].mean())  # the tail decides ...
    assert float(errors[TYPICAL][calm].mean()) < 0.5 * float(errors[TAIL][calm].mean())  # ... and calm starts miss it
    v = calm[:96]
    data = fitting.Calibration(x[:0], ref[:0], x[v], ref[v], SIGMA_MIN, SIGMA_MAX)
    start = pairs[TAIL]
    pool = exact_pool()
    # on the calm validation starts alone the typical-start pair looks better and would be kept ...
    assert fitting.validate(GM.denoiser, start, pairs[TYPICAL].solver, data).meta["kept"] == "fit"
    # ... on them and a pool, of which a sixteenth is solved exactly, the starting pair comes back
    out = fitting.validate(GM.denoiser, start, pairs[TYPICAL].solver, data, pool)
    assert out.meta["kept"] == "start" and out.meta["validation_gain"]["pooled_mean_mse"] < 0
    assert pool.solved_count() == len(pool) // 16
    # the estimate is close to the truth on the whole pool
    pool_ref = GM.ode_endpoint(pool.x(SIGMA_MAX), SIGMA_MAX, rtol=1e-9, atol=1e-9)
    xs, refs = torch.cat([x[v], pool.x(SIGMA_MAX)]), torch.cat([ref[v], pool_ref])
    truth = float((fitting.per_start_mse(GM.denoiser, pairs[TYPICAL].solver, xs, refs)
                   - fitting.per_start_mse(GM.denoiser, start.solver, xs, refs)).mean())
    assert -out.meta["validation_gain"]["pooled_mean_mse"] == pytest.approx(truth, rel=0.2)


def test_the_start_is_ranked_on_the_training_starts_and_the_pool():
    pairs, x, ref, errors, calm = pool_case()
    t = calm[:96]
    config = FitConfig(6, samplers=("ipndm", "gradient_estimation"), schedules=("exponential", "vp"))
    data = fitting.Calibration(x[t], ref[t], x[:8], ref[:8], SIGMA_MIN, SIGMA_MAX)
    alone = fitting.starting_point(GM.denoiser, data, config)
    assert alone[0].label == TYPICAL  # the calm training starts mislead ...
    pool = exact_pool()
    ranked = fitting.starting_point(GM.denoiser, data, config, pool=pool)
    # ... the pool does not: the start is the pair with the smallest error on the whole population
    big = GM.noise(4096, seed=23) * SIGMA_MAX
    big_ref = GM.ode_endpoint(big, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    truth = {k: float(fitting.per_start_mse(GM.denoiser, c.solver, big, big_ref).mean()) for k, c in pairs.items()}
    assert ranked[0].label == min(truth, key=truth.get) != TYPICAL
    assert [c.pooled for c in ranked] == sorted(c.pooled for c in ranked)
    assert ranked[0].pooled < 0 == next(c.pooled for c in ranked if c.label == TYPICAL)  # relative to that leader


def test_the_pool_is_other_noise_fixed_by_the_calibration_and_the_seed():
    noise = GM.noise(8, seed=9)
    extra = {"cond": torch.arange(8)}
    pool = fitting.make_pool(noise, extra, FitConfig(4, pool=3), None)
    again = fitting.make_pool(noise, extra, FitConfig(4, pool=3), None)
    other = fitting.make_pool(noise, extra, FitConfig(4, pool=3, seed=1), None)
    assert pool.noise.shape == (24, *noise.shape[1:]) and torch.equal(pool.noise, again.noise)
    assert not torch.equal(pool.noise, other.noise) and not torch.isclose(pool.noise[:8], noise).any()
    assert pool.extra["cond"].tolist() == list(range(8)) * 3  # each start with a calibration start's arguments
    assert float(pool.noise.std()) == pytest.approx(1.0, abs=0.1)
    assert torch.equal(pool.x(SIGMA_MAX), pool.noise * SIGMA_MAX)


# ----------------------------------------------------------------------------------------------------
# a model defined up to σ = ∞ (flow matching): candidates may start above the σ_max the fit is given

def flow_case(seed=11):
    from samplers.core.native import RectifiedFlow

    native = RectifiedFlow(shift=3.0, multiplier=1000.0)
    gm = GaussianMixture.default(shape=(8,), components=4, seed=seed)
    return native, gm, samplers.to_denoiser(gm.as_model("flow", native), "flow", native)


FLOW_PAIRS = dict(samplers=("ipndm", "gradient_estimation"), schedules=("karras", "ays_svd", "flow"))


def test_on_a_flow_model_pairs_on_schedules_that_start_higher_are_candidates_from_there():
    native, gm, denoiser = flow_case()
    top = float(samplers.get_sigmas("ays_svd", 5, native=native)[0])
    assert 80 < top < math.inf  # Align Your Steps' SVD table starts at 700
    config = FitConfig(5, **FLOW_PAIRS)
    higher = fitting.candidates(5, native.sigma_min, 80.0, native, config, higher=True)
    inf = math.inf
    assert {c.label: c.solver.sigmas[0] for c in higher} == {
        "ipndm + karras": 80.0, "ipndm + ays_svd": top, "ipndm + flow": 80.0, "ipndm + flow from σ = inf": inf,
        "gradient_estimation + karras": 80.0, "gradient_estimation + ays_svd": top, "gradient_estimation + flow": 80.0,
        "gradient_estimation + flow from σ = inf": inf}
    assert all(c.schedule != "ays_svd" and c.solver.sigmas[0] == 80.0
               for c in fitting.candidates(5, native.sigma_min, 80.0, native, config))
    # from σ = inf a candidate is the registry pair itself: its first step the library's exact one from there
    noise = gm.noise(6, seed=4)
    for c in higher:
        # an Align Your Steps preset has its own ends (a range is refused); the others start at 80 or from σ = inf
        sig = (samplers.get_sigmas(c.schedule, c.solver.steps, native=native) if c.schedule.startswith("ays_") else
               samplers.get_sigmas(c.schedule, c.solver.steps, native=native,
                                   sigma_max=inf if math.isinf(c.solver.sigmas[0]) else 80.0))
        torch.testing.assert_close(
            samplers.sample("learned_multistep", denoiser, samplers.initial_latent(noise, c.solver.sigmas),
                            c.solver.sigmas, solver=c.solver, disable=True),
            samplers.sample(c.sampler, denoiser, samplers.initial_latent(noise, sig), sig, disable=True),
            rtol=1e-9, atol=1e-9)


def test_a_comparison_across_starting_sigmas_is_the_exact_difference():
    native, gm, denoiser = flow_case()
    pairs = {c.label: c.solver for c in fitting.candidates(5, native.sigma_min, 80.0, native,
                                                           FitConfig(5, **FLOW_PAIRS), higher=True)}
    solvers = [pairs["ipndm + karras"], pairs["ipndm + ays_svd"]]
    noise = gm.noise(32, seed=2)
    known = {}
    for s in solvers:
        x = noise * s.sigmas[0]
        known[s.sigmas[0]] = (x, gm.ode_endpoint(x, s.sigmas[0], rtol=1e-9, atol=1e-9), {})
    pool = fitting.Pool(gm.noise(64, seed=3), {},
                        lambda x, extra, sigma: gm.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9), 1.0)
    got = fitting.compare(denoiser, solvers, known, pool)
    errs = []
    for s in solvers:  # each solver against the exact endpoints from its own start
        x, ref = known[s.sigmas[0]][:2]
        xp = pool.noise * s.sigmas[0]
        errs.append(torch.cat([fitting.per_start_mse(denoiser, s, x, ref),
                               fitting.per_start_mse(denoiser, s, xp, gm.ode_endpoint(xp, s.sigmas[0], rtol=1e-9,
                                                                                       atol=1e-9))]).mean())
    torch.testing.assert_close(got, torch.stack([e - errs[0] for e in errs]), rtol=1e-9, atol=1e-12)
    assert set(pool.solved) == {80.0, solvers[1].sigmas[0]}
    with pytest.raises(samplers.InvalidInput, match="no known starts"):
        fitting.compare(denoiser, solvers, {80.0: known[80.0]}, pool)


def test_on_a_flow_model_the_fit_may_start_above_sigma_max_and_keeps_the_guarantee_there(time_limit):
    native, gm, denoiser = flow_case()
    noise = gm.noise(128, seed=11)
    asked = []

    def reference_fn(x, extra, sigma):
        asked.append((x.shape[0], sigma))
        return gm.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9)

    config = FitConfig(5, iters=30, check_every=10, pool=2, **FLOW_PAIRS)
    with time_limit(60):
        solver = fit(denoiser, config, noise, native.sigma_min, 80.0, reference_fn=reference_fn, native=native)
    top = float(samplers.get_sigmas("ays_svd", 5, native=native)[0])
    # every candidate scored against the exact endpoints from its own start: the ays_svd pairs, from 700, win
    errors = {}
    for c in fitting.candidates(5, native.sigma_min, 80.0, native, config, higher=True):
        x = samplers.initial_latent(noise[:96], c.solver.sigmas)
        errors[c.label] = solver_rmse(denoiser, c.solver, x, gm.ode_endpoint(x, c.solver.sigmas[0], rtol=1e-9,
                                                                              atol=1e-9))
    start = solver.meta["start"]
    assert f"{start['sampler']} + {start['schedule']}" in sorted(errors, key=errors.get)[:config.keep]
    assert start["schedule"] == "ays_svd" and min(errors, key=errors.get).endswith("ays_svd")
    assert solver.sigmas[0] == top == start["solver"]["sigmas"][0]
    assert (128, 80.0) in asked and (128, top) in asked  # the calibration batch solved from both starts
    # the guarantee, on the validation starts from that σ
    joined = validation_starts(denoiser, noise, config, reference_fn, native.sigma_min, 80.0, native, start=top)
    x_val = noise[-32:] * top
    torch.testing.assert_close(joined.x_val[:32], x_val, rtol=0, atol=0)
    assert solver.meta["validation_rmse"] == pytest.approx(guaranteed(denoiser, solver, joined), rel=1e-6)
    # and it runs by name from there
    out = samplers.sample("learned_multistep", denoiser, x_val, solver.sigmas, solver=solver, disable=True)
    assert torch.isfinite(out).all()


def test_a_reference_fn_that_cannot_take_a_sigma_is_refused_before_any_model_call():
    calls = []

    def denoiser(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)

    with pytest.raises(samplers.InvalidOption, match=r"reference_fn must take \(x, extra, sigma\)"):
        fit(denoiser, FitConfig(4), GM.noise(16, seed=1), SIGMA_MIN, SIGMA_MAX,
            reference_fn=lambda x, extra: GM.ode_endpoint(x, SIGMA_MAX))
    assert calls == []


def test_a_fit_may_start_at_sigma_inf_where_its_pair_does_and_runs_from_the_unit_noise(time_limit):
    # on this mixture at 8 NFE gradient_estimation + flow is closer from σ = inf than from 80 (measured)
    native, gm, denoiser = flow_case(seed=11)
    noise = gm.noise(128, seed=11)
    # (one start: a fit from the pair's other σ, 80, may win with more; test_the_fit_runs_from_the_best_pairs...)
    config = FitConfig(8, iters=30, check_every=10, pool=2, samplers=("gradient_estimation",), schedules=("flow",),
                       starts=1)
    with time_limit(60):
        solver = fit(denoiser, config, noise, native.sigma_min, 80.0, native=native,
                     reference_fn=lambda x, extra, sigma: gm.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9))
    assert solver.sigmas[0] == math.inf and solver.meta["start"]["solver"]["sigmas"][0] == math.inf
    assert solver.model_sigmas is None or solver.model_sigmas[0] == math.inf
    x_val = noise[-32:]  # from σ = inf the start is the unit noise itself
    ref_val = gm.ode_endpoint(x_val, math.inf, rtol=1e-9, atol=1e-9)
    joined = validation_starts(denoiser, noise, config, lambda x, extra, sigma: gm.ode_endpoint(
        x, sigma, rtol=1e-9, atol=1e-9), native.sigma_min, 80.0, native, start=math.inf)
    torch.testing.assert_close(joined.x_val[:32], x_val, rtol=0, atol=0)
    assert solver.meta["validation_rmse"] == pytest.approx(guaranteed(denoiser, solver, joined), rel=1e-6)
    out = samplers.sample("learned_multistep", denoiser, x_val, solver.sigmas, solver=solver, disable=True)
    torch.testing.assert_close(out, fitting.endpoints(denoiser, solver, x_val), rtol=1e-9, atol=1e-9)
    assert solver_rmse(denoiser, solver, x_val, ref_val) == pytest.approx(float((out - ref_val).pow(2).mean().sqrt()))


def test_the_pools_hard_starts_join_training_and_validation_as_a_stratified_sample():
    pairs, x, ref, errors, _ = pool_case()
    config = FitConfig(6, samplers=("ipndm", "gradient_estimation"), schedules=("exponential", "vp"))
    data = fitting.Calibration(x[:384], ref[:384], x[384:], ref[384:], SIGMA_MIN, SIGMA_MAX)
    pool = exact_pool()
    ranked = fitting.starting_point(GM.denoiser, data, config, pool=pool)
    strata = pool.strata
    got = fitting.with_hard_starts(GM.denoiser, data, fitting.Starts.of(data), pool, strata, n_val=512)
    # the pool's hard starts are those its compared pairs disagree on most; its first 1536 train, its last 512 check
    spread = strata.spread(GM.denoiser, {SIGMA_MAX: pool.x(SIGMA_MAX)}, {})
    # the disagreement on the training starts, which stage 1 compared on, is kept and is what spread gives
    torch.testing.assert_close(strata.known, strata.spread(GM.denoiser, {SIGMA_MAX: data.x_train}, {}), rtol=0, atol=0)
    shared = {"train": strata.known}
    kept = fitting.with_hard_starts(GM.denoiser, data, fitting.Starts.of(data), pool, strata, n_val=512,
                                    spread=shared)
    torch.testing.assert_close(kept.w_train, got.w_train, rtol=0, atol=0)
    # the validation starts' disagreement, computed once, is kept for the next call on the same starts
    torch.testing.assert_close(shared["val"], strata.spread(GM.denoiser, {SIGMA_MAX: data.x_val}, {}), rtol=0, atol=0)
    again = fitting.with_hard_starts(GM.denoiser, data, fitting.Starts.of(data), pool, strata, n_val=512,
                                     spread=shared)
    torch.testing.assert_close(again.w_val, got.w_val, rtol=0, atol=0)
    hard = (spread >= strata.threshold).nonzero().flatten()
    assert hard.numel() == len(pool) // 16 and [len(s.sigmas) for s in strata.solvers] == [7] * len(ranked)
    torch.testing.assert_close(got.x_train[384:], pool.x(SIGMA_MAX)[hard[hard < 1536]], rtol=0, atol=0)
    torch.testing.assert_close(got.x_val[128:], pool.x(SIGMA_MAX)[hard[hard >= 1536]], rtol=0, atol=0)
    torch.testing.assert_close(got.x_train[:384], data.x_train, rtol=0, atol=0)
    # the weights count every calibration and pool start of the part once
    assert float(got.w_train.sum()) == pytest.approx(384 + 1536) and float(got.w_val.sum()) == pytest.approx(128 + 512)
    assert bool((got.w_train[384:] == 1).all())
    # the weighted mean estimates the mean over the calibration and the whole pool part, rare starts included:
    # on four calibrations of 128 starts, nearer the truth than the calibration's own mean
    pool_ref = GM.ode_endpoint(pool.x(SIGMA_MAX)[:1536], SIGMA_MAX, rtol=1e-9, atol=1e-9)
    off = {"weighted": [], "own": []}
    for i in range(4):
        part = fitting.Calibration(x[128 * i:128 * (i + 1)], ref[128 * i:128 * (i + 1)], x[:8], ref[:8], SIGMA_MIN,
                                   SIGMA_MAX)
        joined = fitting.with_hard_starts(GM.denoiser, part, fitting.Starts.of(part), pool, strata, n_val=512)
        for label in (TYPICAL, TAIL):
            solver = pairs[label].solver
            truth = float(torch.cat([fitting.per_start_mse(GM.denoiser, solver, part.x_train, part.ref_train),
                                     fitting.per_start_mse(GM.denoiser, solver, pool.x(SIGMA_MAX)[:1536],
                                                           pool_ref)]).mean())
            weighted = fitting.solver_rmse(GM.denoiser, solver, joined.x_train, joined.ref_train,
                                           weights=joined.w_train) ** 2
            own = fitting.solver_rmse(GM.denoiser, solver, part.x_train, part.ref_train) ** 2
            off["weighted"].append(abs(weighted / truth - 1))
            off["own"].append(abs(own / truth - 1))
    assert sum(off["weighted"]) < 0.75 * sum(off["own"]), off


def test_align_your_steps_stays_a_candidate_without_a_native_schedule():
    """The presets take no range (an explicit one without native= is refused): the candidate grid builds them
    without one, so a fit on a plain σ range keeps them as before."""
    from samplers.fitted import fitting

    found = [c for c in fitting.candidates(8, 0.03, 14.615, native=None) if "ays" in str(c)]
    assert found


def test_fitted_md_counts_the_candidates_the_fit_ranks():
    """docs/fitted.md says how many (sampler, schedule) pairs stage 1 ranks at 8 NFE on an SD-1.x-style model."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "fitted.md").read_text()
    quoted = int(re.search(r"\((\d+) at 8 NFE on an SD-1\.x-style model", page).group(1))
    native = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    assert quoted == len(fitting.candidates(8, native.sigma_min, native.sigma_max, native=native))


def counting(denoiser):
    calls = []

    def counted(x, sigma, **extra):
        calls.append(float(sigma[0]))
        return denoiser(x, sigma, **extra)
    return counted, calls


@pytest.mark.parametrize("case", ["ve", "flow"])
def test_candidates_run_together_are_each_run_bit_for_bit_with_fewer_model_calls(case):
    if case == "ve":
        denoiser = GM.denoiser
        found = fitting.candidates(6, SIGMA_MIN, SIGMA_MAX)
        noise = GM.noise(5, seed=8)
    else:  # from 80, from Align Your Steps' 700 and from σ = inf (the exact first step): each its own starts
        native, gm, denoiser = flow_case()
        found = fitting.candidates(5, native.sigma_min, 80.0, native, FitConfig(5, **FLOW_PAIRS), higher=True)
        noise = gm.noise(5, seed=8)
    # and solvers that share a prefix and part from it: another σ told at step 2, another last weight
    r = random_solver(5, seed=4)  # from σ_max exactly (karras' top rounds), as the candidates
    base = LearnedSolver([SIGMA_MAX, *r.sigmas[1:]], r.eps_weights, r.denoised_weights, model_sigmas=r.model_sigmas)
    told = LearnedSolver(base.sigmas, base.eps_weights, base.denoised_weights,
                         model_sigmas=[*base.model_sigmas[:2], base.model_sigmas[2] * 1.1, *base.model_sigmas[3:]])
    last = LearnedSolver(base.sigmas, base.eps_weights[:-1] + [[0.5] * 4], base.denoised_weights,
                         model_sigmas=base.model_sigmas)
    solvers = [c.solver for c in found] + ([base, told, last] if case == "ve" else [])
    alone, together = [], []
    for s in solvers:
        counted, calls = counting(denoiser)
        alone.append(fitting.endpoints(counted, s, samplers.initial_latent(noise, s.sigmas)))
        together.append(len(calls))
    starts = {t: (samplers.initial_latent(noise, [t]), {}) for t in {s.sigmas[0] for s in solvers}}
    each = fitting._endpoints_from(denoiser, solvers, starts)
    for a, b in zip(alone, each):
        assert torch.equal(a, b)
    counted, calls = counting(denoiser)
    fitting._endpoints_from(counted, solvers, starts)
    # one call per distinct (start, nodes, σ told, weights) prefix: fewer than the solvers alone make
    prefixes = set()
    for s in solvers:
        p = fitting.Params.of(s, s.sigmas[-2], 0)
        ms = s.model_sigmas or s.sigmas[:-1]
        for i in range(s.steps):
            prefixes.add((tuple(s.sigmas[:i + 1]), tuple(ms[:i + 1]), tuple(tuple(p.b[j, :j].tolist()) for j in range(i)),
                          tuple(tuple(p.c[j, :j].tolist()) for j in range(i))))
    assert len(calls) == len(prefixes) < sum(together)
    if case == "ve":  # the three that share a prefix: base's calls, told's own from its step 2, none for last's
        counted, calls = counting(denoiser)
        fitting.endpoints_each(counted, [base, told, last], noise * SIGMA_MAX)
        assert len(calls) == base.steps + (base.steps - 2)
    with pytest.raises(samplers.InvalidInput, match="no known starts"):
        fitting._endpoints_from(denoiser, solvers[:1], {1.0: (noise, {})})


def test_solvers_run_together_at_any_length_and_none():
    # a step is a stack entry, not a nested call: a solver of more steps than the stack has frames left runs as
    # endpoints runs it (no recursion limit). The limit is lowered to 150 frames above this one, so 300 steps (n²
    # weights: 1200 steps under the default limit took 39 s) would overflow a walk that recursed once per step.
    n = 300
    sig = torch.logspace(1.3, -2, n, dtype=torch.float64).tolist() + [0.0]
    long = LearnedSolver(sig, [[0.0] * i for i in range(n)], [[0.0] * i for i in range(n)]).validate()
    x = GM.noise(2, seed=5) * sig[0]
    here, limit = len(inspect.stack(0)), sys.getrecursionlimit()
    sys.setrecursionlimit(here + 150)
    try:
        together = fitting.endpoints_each(GM.denoiser, [long], x)[0]
    finally:
        sys.setrecursionlimit(limit)
    assert torch.equal(together, fitting.endpoints(GM.denoiser, long, x))
    assert fitting.endpoints_each(GM.denoiser, [], x) == []

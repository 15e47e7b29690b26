"""Stage 5 of the fit: the fit stage 4 keeps is held against the best pair once more on starts that neither
trained it nor picked its iterate, and handed back for the pair where it is the worse there."""
import pytest
import torch

import samplers
from samplers.core.errors import InvalidOption
from samplers.fitted import fitting
from samplers.fitted.fitting import Calibration, Candidate, FitConfig, fit
from samplers.fitted.solver import LearnedSolver
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 4, 4), components=4, seed=31)
SIGMA_MIN, SIGMA_MAX = 0.01, 20.0
SIG = samplers.get_sigmas("karras", 6, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
SIG[0] = SIGMA_MAX  # karras gives 20 − 7e-15: the result starts at the validation starts' σ exactly


def exact(x, extra, sigma):
    return GM.ode_endpoint(x, sigma, rtol=1e-9, atol=1e-9)


def misleading_validation(fitted: LearnedSolver, noise: torch.Tensor) -> Calibration:
    """Validation starts whose "exact" endpoints are ``fitted``'s own: stage 4 sees that solver as exact there (as
    an iterate picked as the best of many checks on few starts can look far better there than it is)."""
    x = noise * SIGMA_MAX
    with torch.no_grad():
        own = samplers.sample("learned_multistep", GM.denoiser, x, fitted.sigmas, solver=fitted, disable=True)
    return Calibration(x[:0], own[:0], x, own, SIGMA_MIN, SIGMA_MAX, {}, {})


def pair_and_worse():
    """A starting pair (ipndm + karras: RMSE 0.12 on this mixture) and a "fit" that is in truth worse (dpmpp_3m on
    the same σ: 0.35)."""
    pair = LearnedSolver.from_sampler("ipndm", SIG)
    worse = LearnedSolver.from_sampler("dpmpp_3m", SIG)
    return Candidate(0.0, "ipndm", {}, "karras", pair), worse


def test_stage_5_hands_back_the_pair_where_the_fit_is_worse_on_other_starts():
    start, worse = pair_and_worse()
    noise = GM.noise(32, seed=5).to(torch.float64)
    data = misleading_validation(worse, noise)
    config = FitConfig(6, check=4, check_solved=1 / 4)
    # stage 4 alone keeps it: on these starts it is exact
    assert fitting.validate(GM.denoiser, start, worse, data).meta["kept"] == "fit"
    check = fitting.make_pool(noise, {}, config, exact, check=True)
    out = fitting.validate(GM.denoiser, start, worse, data, check=check)
    assert out.meta["kept"] == "start" and out.same_steps(start.solver)
    record = out.meta["check"]
    assert record["starts"] == 128 and record["kept"] is False
    assert record["mean_mse"] < 0  # the pair's mean squared error minus the fit's there
    # solved: a quarter of the starts in full (32), and a quarter of the other 96 where the two disagree most
    assert record["solved"] == 32 + 24


def test_stage_5_keeps_a_fit_that_is_better_on_other_starts_as_it_was():
    start, worse = pair_and_worse()
    better = LearnedSolver.from_sampler("ipndm", SIG)
    start = Candidate(0.0, "dpmpp_3m", {}, "karras", worse)
    noise = GM.noise(32, seed=6).to(torch.float64)
    data = misleading_validation(better, noise)
    check = fitting.make_pool(noise, {}, FitConfig(6, check=4), exact, check=True)
    alone = fitting.validate(GM.denoiser, start, better, data)
    out = fitting.validate(GM.denoiser, start, better, data, check=check)
    assert out.meta["kept"] == alone.meta["kept"] == "fit" and out.meta["check"]["kept"] is True
    assert out.meta["check"]["mean_mse"] > 0 and out.same_steps(alone) and out.same_steps(better)
    assert alone.meta["check"] is None


def test_the_check_starts_are_other_than_the_pool_and_the_calibration_and_depend_on_nothing_else():
    noise = GM.noise(16, seed=7).to(torch.float64)
    config = FitConfig(6, pool=3, check=5)
    pool = fitting.make_pool(noise, {}, config, None)
    check = fitting.make_pool(noise, {}, config, None, check=True)
    assert len(pool) == 48 and len(check) == 80 and check.solved_share == config.check_solved
    both = torch.cat([noise, pool.noise, check.noise]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == 16 + 48 + 80
    torch.testing.assert_close(fitting.make_pool(noise, {}, config, None, check=True).noise, check.noise, rtol=0, atol=0)


@pytest.mark.parametrize("field, value", [("check", -1), ("check", 1.5), ("check", True), ("check_solved", 0),
                                          ("check_solved", 1.5), ("check_solved", float("nan")),
                                          ("check_solved", "1/64")])
def test_the_check_options_are_refused_out_of_range(field, value):
    with pytest.raises(InvalidOption, match=f"FitConfig.{field}"):
        FitConfig(5, **{field: value}).validate()


def test_a_fit_records_its_check_and_without_one_decides_as_stage_4(time_limit):
    gm = GaussianMixture.default(shape=(3, 4, 4), components=5, seed=101)
    noise = gm.noise(96, seed=101)
    ref = gm.ode_endpoint(noise * SIGMA_MAX, SIGMA_MAX, rtol=1e-9, atol=1e-9)
    config = FitConfig(5, iters=40, lr=1e-2, check_every=10, pool=2, starts=1, check=8)
    with time_limit(120):
        checked = fit(gm.denoiser, config, noise, SIGMA_MIN, SIGMA_MAX, reference=ref)
        unchecked = fit(gm.denoiser, FitConfig(**{**config.__dict__, "check": 0}), noise, SIGMA_MIN, SIGMA_MAX,
                        reference=ref)
    assert unchecked.meta["check"] is None
    if unchecked.meta["kept"] == "fit":  # stage 5 checked it: kept as it was, or the pair handed back
        record = checked.meta["check"]
        # in full as many as the 24 validation starts (768 / 64 = 12 is fewer), and 744 / 64 where the two disagree
        assert record["starts"] == 8 * 96 and record["solved"] == 24 + 12
        assert checked.same_steps(unchecked) if record["kept"] else checked.meta["kept"] == "start"
    else:  # nothing to check
        assert checked.meta["check"] is None and checked.same_steps(unchecked)
    assert checked.meta["config"]["check"] == 8


def test_recheck_makes_of_a_fit_without_stage_5_the_file_a_fit_with_it_makes(tmp_path, capsys):
    """``benchmarks.learned_solvers --recheck``: fits made before stage 5 become what fit() makes now — one it hands
    back (gm-ve/d12-k5-s6 at 6 NFE), one it keeps (gm-flow/d6-k4-s8) — byte for byte in what the file holds."""
    import json

    from benchmarks import learned_solvers

    quick = ["--calibration", "32", "--iters", "30", "--pool", "2", "--starts", "1", "--no-progress"]
    for problem in ("gm-ve/d12-k5-s6", "gm-flow/d6-k4-s8"):
        for check, out in (("0", "before"), ("16", "now")):
            assert learned_solvers.main(["--problem", problem, "--nfe", "6", "--check", check,
                                         "--out", str(tmp_path / out), *quick]) == 0
    assert learned_solvers.main(["--recheck", str(tmp_path / "before"), "--check", "16", "--out",
                                 str(tmp_path / "rechecked"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "gm-ve/d12-k5-s6 NFE 6: handed back the pair" in printed and "gm-flow/d6-k4-s8 NFE 6: kept the fit" in printed
    kept = {}
    for name in ("gm-ve_d12-k5-s6_nfe6.json", "gm-flow_d6-k4-s8_nfe6.json"):
        before, now, again = (json.loads((tmp_path / d / name).read_text()) for d in ("before", "now", "rechecked"))
        assert before["meta"]["kept"] == "fit" and before["meta"]["check"] is None
        assert again == now
        kept[name] = now["meta"]["kept"]
    assert kept == {"gm-ve_d12-k5-s6_nfe6.json": "start", "gm-flow_d6-k4-s8_nfe6.json": "fit"}
    # a folder rechecked already is left as it is; fitting options are refused (each file's own are used)
    assert learned_solvers.main(["--recheck", str(tmp_path / "now"), "--out", str(tmp_path / "again"),
                                 "--no-progress"]) == 0
    assert capsys.readouterr().out.count("checked already") == 1  # the kept fit; the handed-back one has nothing to check
    with pytest.raises(SystemExit):
        learned_solvers.main(["--recheck", str(tmp_path / "now"), "--iters", "5", "--out", str(tmp_path / "x")])
    assert "leave out --iters" in capsys.readouterr().err


def test_recheck_hands_back_a_fit_from_another_pair_only_where_it_started_at_the_best_pairs_sigma():
    import dataclasses

    from samplers.core.errors import InvalidInput

    start, worse = pair_and_worse()
    noise = GM.noise(32, seed=5).to(torch.float64)
    fitted = fitting.validate(GM.denoiser, start, worse, misleading_validation(worse, noise))
    fitted.meta.update({"config": dataclasses.asdict(FitConfig(6, check=0)), "validation_starts": 32,
                        "iteration_kept": 40, "fitted_from": {"sampler": "euler", "options": {}, "schedule": "karras",
                                                              "from_sigma": 700.0}})
    with pytest.raises(InvalidInput, match="fit it again to record the best pair's"):
        fitting.recheck(GM.denoiser, fitted, noise, exact, check=4, check_solved=1 / 4)
    fitted.meta["fitted_from"]["from_sigma"] = SIGMA_MAX  # the best pair's σ: its record stands
    out = fitting.recheck(GM.denoiser, fitted, noise, exact, check=4, check_solved=1 / 4)
    assert out.meta["kept"] == "start" and out.meta["fitted_from"] is None and out.meta["iteration_kept"] == 0
    assert out.same_steps(start.solver) and out.meta["check"]["kept"] is False
    assert out.meta["validation_rmse"] == fitted.meta["start"]["validation_rmse"]
    assert out.meta["config"]["check"] == 4 and fitted.meta["config"]["check"] == 0  # the input is left as it was

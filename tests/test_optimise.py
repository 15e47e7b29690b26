"""The schedule optimiser beats every fixed schedule on held-out noise; its result is data (JSON, a name)."""
import json

import pytest
import torch

import samplers
import samplers.schedules.optimise as so
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=4, seed=3)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


@pytest.fixture(scope="module")
def result():
    return so.optimise_schedule(GM.denoiser, "dpmpp_2m", 5, GM.noise(48, seed=0), SIGMA_MIN, SIGMA_MAX, maxiter=400)


def held_out_errors(sampler, sigmas, steps):
    x = GM.noise(256, seed=1) * SIGMA_MAX
    ref = so.reference_solution(GM.denoiser, x, SIGMA_MAX, SIGMA_MIN)
    optimised = so.schedule_error(GM.denoiser, sampler, sigmas, x, ref)
    fixed = {name: so.schedule_error(GM.denoiser, sampler,
                                     samplers.get_sigmas(name, steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX), x, ref)
             for name in so.FIXED_BASELINES}
    return optimised, fixed


def test_beats_the_best_fixed_schedule_on_held_out_noise(result):
    optimised, fixed = held_out_errors("dpmpp_2m", result.tensor(), 5)
    assert optimised < 0.9 * min(fixed.values()), f"optimised {optimised:.4f} vs fixed {fixed}"
    assert result.error < min(result.baselines.values())


@pytest.mark.parametrize("sampler, nfe, steps", [("euler", 4, 4), ("heun", 5, 3)])
def test_beats_the_best_fixed_schedule_for_euler_and_heun(sampler, nfe, steps):
    r = so.optimise_schedule(GM.denoiser, sampler, nfe, GM.noise(48, seed=0), SIGMA_MIN, SIGMA_MAX, maxiter=300)
    assert r.meta["steps"] == steps  # heun: 2 calls a step, 1 on the last (Euler) step to 0
    optimised, fixed = held_out_errors(sampler, r.tensor(), steps)
    assert optimised < 0.95 * min(fixed.values()), f"optimised {optimised:.4f} vs fixed {fixed}"


def test_shape_json_round_trip_and_name(result, tmp_path):
    s = result.tensor()
    assert s.shape == (6,) and float(s[0]) == pytest.approx(SIGMA_MAX) and float(s[-2]) == pytest.approx(SIGMA_MIN)
    assert float(s[-1]) == 0 and bool((s[1:] < s[:-1]).all())
    torch.testing.assert_close(torch.as_tensor(result), s)
    assert len(result) == 6 and float(result[-1]) == 0
    x = GM.noise(3, seed=2) * SIGMA_MAX
    torch.testing.assert_close(samplers.sample("dpmpp_2m", GM.denoiser, x, result, disable=True),
                               samplers.sample("dpmpp_2m", GM.denoiser, x, s, disable=True), rtol=0, atol=0)
    path = result.save(tmp_path / "sched.json")
    back = so.OptimisedSchedule.load(path)
    assert back == result
    back.register("test_optimised_dpmpp_2m_5")
    try:
        torch.testing.assert_close(samplers.get_sigmas("test_optimised_dpmpp_2m_5", 5), s)
        nine = samplers.get_sigmas("test_optimised_dpmpp_2m_5", 9)
        assert nine.shape == (10,) and bool((nine[1:] < nine[:-1]).all())
        torch.testing.assert_close(nine[:-1:2], s[:-1])  # log-linear resampling passes through the optimised levels
    finally:
        samplers.schedules.SCHEDULES.remove("test_optimised_dpmpp_2m_5")


def test_bad_input(tmp_path):
    noise = GM.noise(4, seed=0)
    with pytest.raises(ValueError, match="stochastic"):
        so.optimise_schedule(GM.denoiser, "euler_ancestral", 5, noise, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(ValueError, match="sigma_max < inf"):
        so.optimise_schedule(GM.denoiser, "euler", 5, noise, SIGMA_MIN, float("inf"))
    with pytest.raises(ValueError, match="integer >= 1"):
        so.optimise_schedule(GM.denoiser, "dpmpp_3s", 0, noise, SIGMA_MIN, SIGMA_MAX)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "samplers.optimised_schedule/1", "sigmas": [1.0, 2.0, 0.0], "sampler": "euler",
                               "nfe": 2, "error": 0.0}))
    with pytest.raises(ValueError, match="strictly decreasing"):
        so.OptimisedSchedule.load(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        so.OptimisedSchedule([1.0, 0.0], "euler", 1, 0.0).save(tmp_path / "missing" / "x.json")


@pytest.mark.parametrize("change, match", [
    ({"nfe": -7}, "nfe must be an integer >= 3"), ({"nfe": "eight"}, "nfe must be an integer"),
    ({"sampler": 42}, "sampler must be"), ({"error": "low"}, "error must be a real number"),
    ({"baselines": [1, 2]}, "baselines must map"), ({"baselines": {"karras": -1}}, "must be >= 0"),
    ({"sigmas": [True, False]}, "list of numbers"), ({"sigmas": ["3", "1", "0"]}, "list of numbers"),
    ({"meta": []}, "meta must be a dict"), ({"note": "x"}, "unknown \\['note'\\]"), ({"error": None}, "real number"),
])
def test_a_schedule_file_is_checked_field_by_field(tmp_path, change, match):
    good = {"format": "samplers.optimised_schedule/1", "sigmas": [14.6, 3.0, 0.5, 0.0], "sampler": "dpmpp_2m",
            "nfe": 3, "error": 0.1, "baselines": {"karras": 0.2}, "meta": {}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**good, **change}))
    with pytest.raises(samplers.InvalidInput, match=match):
        so.OptimisedSchedule.load(path)


def test_an_unreadable_schedule_file_names_itself(tmp_path):
    for name, body in (("empty.json", b""), ("latin.json", b"\xff\xfe"), ("list.json", b"[1, 2]")):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(samplers.InvalidInput, match=name):
            so.OptimisedSchedule.load(tmp_path / name)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(samplers.InvalidInput, match="not a readable schedule file"):
        so.OptimisedSchedule.load(tmp_path / "folder.json")
    one = so.OptimisedSchedule([3.0, 0.0], "euler", 1, 0.1)
    assert one.schedule(1).tolist() == [3.0, 0.0]
    with pytest.raises(samplers.InvalidInput, match="optimised for 1 step"):
        one.schedule(4)

"""The schedule optimiser beats every fixed schedule on held-out noise; its result is data (JSON, a name)."""
import json
import math
import re

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


# --- audit findings: each test failed before its fix --------------------------------------------------------------

GOOD = {"format": "samplers.optimised_schedule/1", "sigmas": [14.6, 3.0, 0.5, 0.0], "sampler": "dpmpp_2m", "nfe": 3,
        "error": 0.1, "baselines": {"karras": 0.2}, "meta": {}}


def load_with(tmp_path, change=None, raw=None):
    path = tmp_path / "s.json"
    path.write_text(raw if raw is not None else json.dumps({**GOOD, **(change or {})}))
    return so.OptimisedSchedule.load(path)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return GM.denoiser(x, sigma, **kw)


def test_a_schedule_refuses_a_range_it_was_not_optimised_on():
    from samplers.core.native import VPDiscrete

    opt = so.OptimisedSchedule([80.0, 3.0, 0.5, 0.002, 0.0], "euler", 4, 0.1,
                               meta={"sigma_min": 0.002, "sigma_max": 80.0})
    opt.register("test_opt_range")
    try:
        assert samplers.get_sigmas("test_opt_range", 4).tolist() == opt.sigmas
        assert samplers.get_sigmas("test_opt_range", 4, sigma_min=0.002, sigma_max=80.0 * (1 + 1e-9)).tolist() \
            == opt.sigmas  # its own range, within rel 1e-6
        for kw in ({"sigma_min": 0.03, "sigma_max": 14.6}, {"sigma_max": 14.6}, {"native": VPDiscrete.from_betas()}):
            with pytest.raises(samplers.InvalidInput, match=r"optimised for euler on σ 80 → 0\.002.*optimise a"):
                samplers.get_sigmas("test_opt_range", 4, **kw)
    finally:
        samplers.schedules.SCHEDULES.remove("test_opt_range")
    one = so.OptimisedSchedule([80.0, 0.0], "euler", 1, 0.1, meta={"sigma_min": 0.002, "sigma_max": 80.0})
    with pytest.raises(samplers.InvalidInput, match="optimised for euler"):
        one.schedule(1, sigma_min=0.03)


def test_ays_presets_refuse_a_range_without_a_model():
    from samplers.core.native import VPDiscrete

    for kw in ({"sigma_min": 0.5, "sigma_max": 3.0}, {"sigma_max": 3.0}, {"sigma_min": 0.5}):
        with pytest.raises(samplers.InvalidOption, match="takes no sigma_m.*published Align Your Steps"):
            samplers.get_sigmas("ays_sd15", 10, **kw)
    with pytest.raises(samplers.InvalidOption, match="takes no sigma_max"):
        samplers.get_sigmas("Align Your Steps", 10, sigma_max=3.0)
    own = samplers.get_sigmas("ays_sd15", 10)
    torch.testing.assert_close(samplers.get_sigmas("ays_sd15", 10, native=VPDiscrete.from_betas()), own)  # documented


def test_a_schedule_built_directly_is_checked_as_load_checks_it(tmp_path):
    with pytest.raises(samplers.InvalidInput, match="strictly decreasing"):
        so.OptimisedSchedule([1.0, 2.0, 0.0], "euler", 2, 0.0)
    with pytest.raises(samplers.InvalidInput, match="finite"):
        so.OptimisedSchedule([1.0, 0.5, 0.0], "euler", 2, float("nan"))
    opt = so.OptimisedSchedule([1.0, 0.5, 0.0], "euler", 2, 0.1)
    opt.error = float("nan")  # changed after construction: save and register check again
    with pytest.raises(samplers.InvalidInput, match="finite"):
        opt.save(tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()
    with pytest.raises(samplers.InvalidInput, match="finite"):
        opt.register("test_opt_nan")
    opt.error = 0.1
    text = opt.save(tmp_path / "ok.json").read_text()
    assert "NaN" not in text and text.endswith("}\n") and so.OptimisedSchedule.load(tmp_path / "ok.json") == opt


@pytest.mark.parametrize("change", [{"error": 10**400}, {"sigmas": [10**400, 3, 0]}, {"meta": {"sigma_max": 10**400}}])
def test_a_huge_number_in_a_file_names_the_file(tmp_path, change):
    with pytest.raises(samplers.InvalidInput, match="s.json.*finite"):
        load_with(tmp_path, change)


@pytest.mark.parametrize("change, match", [
    ({"sampler": "no_such_sampler"}, "unknown sampler"), ({"sampler": "euler_ancestral"}, "stochastic"),
    ({"sampler": "dpm_adaptive", "nfe": 3}, "adaptive"), ({"sampler": "DPM++ 2M Karras"}, "registry sampler name"),
    ({"nfe": 1000}, "would fit 4 steps"), ({"sampler": "heun", "nfe": 3}, "makes 5 model calls"),
    ({"meta": {"steps": 7}}, "meta\\['steps'\\] is 7"), ({"meta": {"sigma_max": 80.0}}, "sigmas start at 14.6"),
    ({"meta": {"sigma_min": 0.002}}, "lowest level"), ({"meta": {"note": 1}}, "not one of"),
    ({"baselines": {"karras": float("nan")}}, "finite"),
])
def test_a_schedule_file_with_contradictory_fields_is_refused(tmp_path, change, match):
    with pytest.raises(samplers.InvalidInput, match=match):
        load_with(tmp_path, change)


def test_a_schedule_file_budget_is_the_one_the_optimiser_sets(tmp_path):
    # heun at NFE 6: 3 steps cost 2 + 2 + 1 = 5 calls and 4 would cost 7, so nfe is the budget, not the count
    assert load_with(tmp_path, {"sampler": "heun", "nfe": 6}).nfe == 6
    assert load_with(tmp_path, {"sampler": "heun", "nfe": 5}).nfe == 5
    with pytest.raises(samplers.InvalidInput, match="appears more than once"):
        load_with(tmp_path, raw=json.dumps(GOOD)[:-1] + ', "nfe": 3}')


def test_register_takes_replace():
    opt = so.OptimisedSchedule([14.6, 3.0, 0.5, 0.0], "dpmpp_2m", 3, 0.1)
    other = so.OptimisedSchedule([14.6, 2.0, 0.5, 0.0], "dpmpp_2m", 3, 0.1)
    opt.register("test_opt_replace")
    try:
        with pytest.raises(samplers.InvalidInput, match="replace=True"):
            other.register("test_opt_replace")
        other.register("test_opt_replace", replace=True)
        assert samplers.get_sigmas("test_opt_replace", 3).tolist() == other.sigmas
    finally:
        samplers.schedules.SCHEDULES.remove("test_opt_replace")


@pytest.mark.parametrize("kw, error, match", [
    ({"baselines": ("karras", "karas")}, samplers.InvalidInput, "unknown schedule 'karas'"),
    ({"baselines": ("karras", "linspace")}, samplers.InvalidInput, "training timesteps"),
    ({"baselines": ("ays_sd15",)}, samplers.InvalidInput, "takes no sigma_m"),
    ({"baselines": "karras"}, TypeError, "list or tuple"),
    ({"baselines": ("karras", "karras")}, samplers.InvalidInput, "more than once"),
    ({"maxiter": 0}, samplers.InvalidInput, "maxiter must be an integer >= 1"),
    ({"maxiter": 2.5}, TypeError, "maxiter must be an integer"),
    ({"sigma_min": "0.1"}, TypeError, "sigma_min must be a real number"),
    ({"calibration": torch.full((4, 2, 2, 2), float("nan"))}, samplers.InvalidInput, "NaN"),
    ({"calibration": torch.zeros(0, 2, 2, 2)}, samplers.InvalidInput, "non-empty"),
    ({"calibration": torch.ones(4, 8, dtype=torch.int64)}, TypeError, "floating-point"),
    ({"sampler": "dpm_adaptive"}, samplers.InvalidInput, "adaptive"),
    # counted on the stand-in its corrector converges at once: 23 steps for 50 calls, 109 on a real model
    ({"sampler": "torchdiffeq.implicit_adams", "nfe": 50}, samplers.InvalidInput, "depend on the model"),
    ({"sampler": "DPM++ 2M Karras"}, samplers.InvalidInput, "optimiser chooses the schedule.*'dpmpp_2m'"),
])
def test_bad_arguments_are_refused_before_any_model_call(kw, error, match):
    model = Counting()
    args = {"sampler": "euler", "nfe": 3, "calibration": GM.noise(4, seed=0), "sigma_min": SIGMA_MIN,
            "sigma_max": SIGMA_MAX, "maxiter": 5, **kw}
    with pytest.raises(error, match=match):
        so.optimise_schedule(model, args.pop("sampler"), args.pop("nfe"), args.pop("calibration"), **args)
    assert model.calls == 0


def test_a_numpy_integer_budget_and_one_step():
    import numpy as np

    from samplers.core.budget import steps_for_nfe

    assert steps_for_nfe("euler", np.int64(3), lambda n: samplers.get_sigmas("karras", n, sigma_min=0.1,
                                                                             sigma_max=10.0)) == (3, 3)
    r = so.optimise_schedule(GM.denoiser, "euler", np.int64(1), GM.noise(4, seed=0), SIGMA_MIN, SIGMA_MAX)
    assert r.sigmas == [SIGMA_MAX, 0.0] and r.nfe == 1 and type(r.nfe) is int
    assert r.meta == {"steps": 1, "evaluations": 1, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
                      "calibration_batch": 4, "fixed": "1 step: its schedule is [σ_max, 0], with no point to place"}


def test_the_command_line_with_one_step(tmp_path, capsys):
    assert so.main(["--sampler", "euler", "--nfe", "1", "--calibration", "4", "--held-out", "4",
                    "--out", str(tmp_path / "new")]) == 0
    assert "1 evaluations" in capsys.readouterr().out
    assert so.OptimisedSchedule.load(tmp_path / "new" / "euler_1.json").sigmas == [SIGMA_MAX, 0.0]


@pytest.mark.parametrize("argv, match", [
    (["--sigma-max", "inf"], "--sigma-max"), (["--sigma-min", "nan"], "--sigma-min"),
    (["--sigma-min", "90"], "below --sigma-max"), (["--sampler", "no_such"], "unknown sampler"),
    (["--sampler", "euler_ancestral"], "stochastic"), (["--sampler", "dpm_adaptive"], "adaptive"),
    (["--sampler", "euler", "euler"], "more than once"), (["--calibration", "0"], "--calibration"),
    (["--held-out", "0"], "--held-out"), (["--nfe", "0"], "--nfe"),
])
def test_the_command_line_checks_every_argument_before_work(argv, match, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(so, "reference_solution", no_work)
    with pytest.raises(SystemExit) as exit_:
        so.main(argv)
    assert exit_.value.code == 2
    assert match in capsys.readouterr().err


def test_the_command_line_out_is_checked_and_created_first(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(so, "reference_solution", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work")))
    with pytest.raises(SystemExit):
        so.main(["--out", str(tmp_path / "file")])
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="work"):
        so.main(["--out", str(tmp_path / "a" / "b")])
    assert (tmp_path / "a" / "b").is_dir()  # created before the work, so the work cannot fail on it


# --- adapter audit: sampler options, budgets counted with them, half-precision noise -------------------------------

@pytest.mark.parametrize("options, match", [
    ({"s_churn": 1.0}, "s_churn.*draw noise.*leave s_churn out"),
    ({"s_churn": 1.0, "seed": 0}, "seed.*would do nothing"),
    ({"seed": 0}, "sampler_options\\['seed'\\].*leave seed out"),
    ({"noise_sampler": "brownian"}, "noise_sampler.*leave noise_sampler out"),
])
def test_options_that_draw_or_set_noise_are_refused_before_any_model_call(options, match):
    # euler with churn drew fresh noise at every objective evaluation: two identical calls gave different schedules,
    # and the file said "euler" without s_churn
    model = Counting()
    with pytest.raises(samplers.InvalidInput, match=match):
        so.optimise_schedule(model, "euler", 3, GM.noise(4, seed=0), 0.05, 10.0, maxiter=3, sampler_options=options)
    assert model.calls == 0


def test_sampler_options_are_recorded_and_the_budget_counted_with_them(tmp_path):
    # torchdiffeq.rk4 with a step_size: the optimiser counted 1 step in NFE 8 with the options, the file's check
    # counted 2 without them and refused the result after every model call
    options = {"options": {"step_size": 0.01}}
    r = so.optimise_schedule(GM.denoiser, "torchdiffeq.rk4", 8, GM.noise(4, seed=0), 0.05, 10.0, maxiter=3,
                             sampler_options=options)
    assert r.sampler_options == options and r.meta["steps"] == 1
    back = so.OptimisedSchedule.load(r.save(tmp_path / "rk4.json"))
    assert back == r and json.loads((tmp_path / "rk4.json").read_text())["sampler_options"] == options
    with pytest.raises(samplers.InvalidInput, match="would fit 2 steps"):  # counted without them: not this budget
        so.OptimisedSchedule(r.sigmas, r.sampler, r.nfe, r.error, r.baselines, r.meta)
    # a deterministic option is recorded too: the file says what the schedule was optimised with
    lms = so.optimise_schedule(GM.denoiser, "lms", 3, GM.noise(4, seed=0), 0.05, 10.0, maxiter=3,
                               sampler_options={"order": 2})
    assert json.loads(lms.save(tmp_path / "lms.json").read_text())["sampler_options"] == {"order": 2}
    # s_tmax = inf is k-diffusion's own default (A1111 passes it): recorded, and read back equal
    tmax = so.optimise_schedule(GM.denoiser, "heun", 4, GM.noise(4, seed=0), 0.05, 10.0, maxiter=2,
                                sampler_options={"s_tmax": math.inf})
    assert so.OptimisedSchedule.load(tmax.save(tmp_path / "heun.json")).sampler_options == {"s_tmax": math.inf}


@pytest.mark.parametrize("options, match", [
    ({"options": {"norm": torch.linalg.vector_norm}}, "not JSON data"),
    ({"options": {"step_t": (1.0, 2.0)}}, "not JSON data"),
    ({"info": {}}, "filled by each run"),
])
def test_options_a_file_cannot_record_are_refused_before_any_model_call(options, match):
    model = Counting()
    sampler = "torchdiffeq.rk4" if "info" in options else "torchdiffeq.euler"
    with pytest.raises(samplers.InvalidInput, match=match):
        so.optimise_schedule(model, sampler, 4, GM.noise(4, seed=0), 0.05, 10.0, maxiter=3, sampler_options=options)
    assert model.calls == 0


def test_a_schedule_file_with_noise_options_is_refused(tmp_path):
    with pytest.raises(samplers.InvalidInput, match="s.json.*draw noise"):
        load_with(tmp_path, {"sampler": "euler", "sampler_options": {"s_churn": 1.0}})
    assert load_with(tmp_path).sampler_options == {}  # a file written before options were recorded


def test_half_precision_calibration_runs_in_float32():
    # float16 noise: the reference solve ran in float16 and stopped with torchdiffeq's "underflow in dt" after two
    # model calls; it now runs in the float32 state the samplers keep for half-precision latents
    noise = GM.noise(4, seed=0)
    half = so.optimise_schedule(GM.denoiser, "euler", 3, noise.half(), 0.05, 10.0, maxiter=3)
    wide = so.optimise_schedule(GM.denoiser, "euler", 3, noise.half().float(), 0.05, 10.0, maxiter=3)
    assert half.sigmas == wide.sigmas and half.error == wide.error


def _same_up_to_rounding(a, b, where: str) -> None:
    """``a`` and ``b`` (parsed JSON) alike: the same keys, strings and structure, each number to a relative 1e-9 —
    another CPU's float rounding moves the last digits of an error (1e-16 relative), not the result."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, (where, a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_up_to_rounding(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _same_up_to_rounding(u, v, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=0), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_the_committed_schedules_are_what_the_documented_command_writes(tmp_path, capsys):
    """docs/benchmarks/optimise is `python -m samplers.schedules.optimise --nfe 6 --out docs/benchmarks/optimise`
    (docs/benchmarks/README.md, the guide): the same command writes the same files — byte for byte on the CPU that
    made them, to the last digits' rounding on another — and prints the quoted ratios."""
    import json
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "optimise"
    assert so.main(["--nfe", "6", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in committed.iterdir():
        _same_up_to_rounding(json.loads((tmp_path / path.name).read_text()), json.loads(path.read_text()), path.name)
    assert re.findall(r"\bratio (\d\.\d\d)", printed) == ["0.83", "0.66", "0.76"]


# --- audit: the model's range, NaN / Inf, two steps, float8 -------------------------------------------------------

def _sd_eps_denoiser(counter):
    """An SD-style eps model on a 1000-step table (σ 0.029 … 14.6) as a canonical denoiser, counting its calls."""
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    base = GM.as_model("eps", vp)

    def unet(x, t, **kw):
        counter.calls += 1
        return base(x, t, **kw)

    return samplers.to_denoiser(unet, "eps", vp)


class _Guided:
    """A k-diffusion-style wrapper (its model in ``inner_model``, no ``prepare_times`` of its own)."""

    def __init__(self, inner_model):
        self.inner_model = inner_model

    def __call__(self, x, sigma, **kw):
        return self.inner_model(x, sigma, **kw)


@pytest.mark.parametrize("wrap", [lambda d: d, _Guided])
def test_a_range_outside_the_model_table_is_refused_before_any_model_call(wrap):
    # the guide's range (σ 0.002 → 80) on an SD-style eps model: refused after the reference solve (231 calls) before
    counter = Counting()
    model = wrap(_sd_eps_denoiser(counter))
    with pytest.raises(samplers.InvalidInput, match="sigma_max=80 → sigma_min=0.002.*outside this model's timestep "
                                                   "table.*within the model's table"):
        so.optimise_schedule(model, "euler", 4, GM.noise(4, seed=0), SIGMA_MIN, SIGMA_MAX, maxiter=3)
    assert counter.calls == 0


def test_a_range_within_the_model_table_runs():
    counter = Counting()
    vp = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    r = so.optimise_schedule(_sd_eps_denoiser(counter), "euler", 3, GM.noise(4, seed=0), float(vp.sigma_min),
                             float(vp.sigma_max), maxiter=3)
    assert counter.calls > 0 and math.isfinite(r.error)


def test_the_reference_solve_refuses_a_model_returning_nan_naming_the_sigma():
    from samplers.problems import pf_ode_solution

    def band(x, sigma):  # NaN for 3 < σ < 5 only: torchdiffeq stopped with "AssertionError: underflow in dt 0.0"
        out = GM.denoiser(x, sigma)
        return out * float("nan") if 3 < float(sigma[0]) < 5 else out

    with pytest.raises(samplers.NonFiniteError, match=r"the model returned NaN/Inf at σ = [34]\.\d+ in the PF-ODE "
                                                      "solve from σ = 80 to σ = 0.002.*check the model"):
        pf_ode_solution(band, GM.noise(4, seed=0) * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN)
    with pytest.raises(samplers.NonFiniteError, match="NaN/Inf at σ = 80 .*no reference"):
        so.optimise_schedule(lambda x, s: GM.denoiser(x, s) * float("nan"), "euler", 4, GM.noise(4, seed=0),
                             SIGMA_MIN, SIGMA_MAX, maxiter=3)


def test_the_reference_solve_caps_its_model_evaluations():
    from samplers.problems import pf_ode_solution

    model = Counting()
    with pytest.raises(samplers.StepLimitError, match="max_evals = 5 model evaluations without finishing"):
        pf_ode_solution(model, GM.noise(4, seed=0) * SIGMA_MAX, SIGMA_MAX, max_evals=5)
    assert model.calls == 5
    with pytest.raises(samplers.InvalidInput, match="max_evals must be an integer >= 1"):
        pf_ode_solution(model, GM.noise(4, seed=0) * SIGMA_MAX, SIGMA_MAX, max_evals=0)


def test_a_nan_model_ends_under_python_O():
    # under -O torchdiffeq's "underflow in dt" assertion is gone and the solve of a NaN model never ended
    import subprocess
    import sys

    code = ("import torch, samplers\nfrom samplers.problems import pf_ode_solution\n"
            "try:\n    pf_ode_solution(lambda x, s: x * float('nan'), torch.randn(2, 4, dtype=torch.float64) * 80, 80.0)\n"
            "except samplers.NonFiniteError:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(samplers.__file__).parents[1]))
    assert done.stdout.strip() == "refused", done.stderr


def _nan_at(sigmas):
    """GM's denoiser, NaN where it is called at one of ``sigmas`` exactly (a grid point no reference solve hits)."""
    def model(x, sigma, **kw):
        out = GM.denoiser(x, sigma, **kw)
        return out * float("nan") if any(abs(float(sigma[0]) - s) <= 1e-12 * s for s in sigmas) else out
    return model


def test_a_baseline_whose_run_is_not_finite_is_recorded_as_none():
    # the guide's rule; the optimiser raised the run's NonFiniteError and stopped
    bad = float(samplers.get_sigmas("exponential", 4, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)[1])
    r = so.optimise_schedule(_nan_at([bad]), "euler", 4, GM.noise(4, seed=0), SIGMA_MIN, SIGMA_MAX, maxiter=5,
                             baselines=("karras", "exponential"))
    assert r.baselines["exponential"] is None and math.isfinite(r.baselines["karras"]) and math.isfinite(r.error)


class _NanAfter:
    """GM's denoiser returning NaN on the calls numbered in ``calls`` (from 0), counting every call."""

    def __init__(self, calls):
        self.nan, self.calls = calls, 0

    def __call__(self, x, sigma, **kw):
        out = GM.denoiser(x, sigma, **kw)
        self.calls += 1
        return out * float("nan") if (self.calls - 1) in self.nan else out


def test_a_probe_whose_run_is_not_finite_is_penalised_not_fatal():
    # the objective meant a 1e6 penalty, but the run's NonFiniteError stopped the whole optimisation
    noise, ref = GM.noise(4, seed=0), Counting()
    so.reference_solution(ref, noise * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN)
    start = ref.calls  # the calls before Nelder-Mead (no baselines): the reference solve and its final denoise
    model = _NanAfter(set(range(start + 4 * 2, start + 4 * 3)))  # the third probe's 4 euler calls: NaN
    r = so.optimise_schedule(model, "euler", 4, noise, SIGMA_MIN, SIGMA_MAX, maxiter=8, baselines=())
    assert model.calls > start + 4 * 3 and r.meta["evaluations"] > 3 and math.isfinite(r.error)
    every = _NanAfter(set(range(start, 10 ** 6)))  # every probe NaN: no finite error to optimise
    with pytest.raises(samplers.NonFiniteError, match="every one of the \\d+ schedules tried"):
        so.optimise_schedule(every, "euler", 4, noise, SIGMA_MIN, SIGMA_MAX, maxiter=3, baselines=())


@pytest.mark.parametrize("sampler, nfe, steps", [("euler", 2, 2), ("dpmpp_2m", 2, 2), ("heun", 4, 2),
                                                 ("torchdiffeq.rk4", 8, 2), ("euler", 1, 1)])
def test_one_or_two_steps_are_scored_once_not_optimised(sampler, nfe, steps):
    from samplers.core.budget import count_nfe

    # two steps: σ_max, σ_min and 0 are all fixed, yet Nelder-Mead ran 35 evaluations (239 model calls)
    noise, ref, model = GM.noise(4, seed=0), Counting(), Counting()
    so.reference_solution(ref, noise * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN)
    r = so.optimise_schedule(model, sampler, nfe, noise, SIGMA_MIN, SIGMA_MAX, baselines=())
    assert r.meta["steps"] == steps and r.meta["evaluations"] == 1 and f"{steps} step" in r.meta["fixed"]
    assert r.sigmas[0] == pytest.approx(SIGMA_MAX) and r.sigmas[-1] == 0 and len(r.sigmas) == steps + 1
    if steps == 2:
        assert r.sigmas[1] == pytest.approx(SIGMA_MIN)
    assert model.calls == ref.calls + count_nfe(sampler, r.tensor())  # the reference, then one run


def test_meta_fixed_is_only_for_one_or_two_steps(tmp_path):
    with pytest.raises(samplers.InvalidInput, match="meta\\['fixed'\\].*3 steps"):
        load_with(tmp_path, {"meta": {"fixed": "no"}})
    two = so.OptimisedSchedule([14.6, 0.03, 0.0], "euler", 2, 0.1, {}, {"fixed": "2 steps"})
    assert so.OptimisedSchedule.load(two.save(tmp_path / "two.json")) == two


def test_a_float8_calibration_is_refused_by_name_before_any_model_call():
    model = Counting()
    with pytest.raises(samplers.InvalidType, match="calibration is a torch.float8_e4m3fn tensor.*float16, bfloat16, "
                                                   "float32 or float64"):
        so.optimise_schedule(model, "euler", 4, GM.noise(4, seed=0).to(torch.float8_e4m3fn), SIGMA_MIN, SIGMA_MAX)
    assert model.calls == 0


def test_one_or_two_steps_whose_only_run_is_not_finite_raise_naming_it():
    # one step scored inf was refused as an 'error must be a real number' InvalidInput of the result it built
    noise, ref = GM.noise(4, seed=0), Counting()
    so.reference_solution(ref, noise * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN)
    for nfe in (1, 2):
        with pytest.raises(samplers.NonFiniteError, match="euler's run .* NaN/Inf on its only schedule"):
            so.optimise_schedule(_NanAfter(set(range(ref.calls, 10 ** 6))), "euler", nfe, noise, SIGMA_MIN,
                                 SIGMA_MAX, baselines=())

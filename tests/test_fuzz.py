"""Generated bad values thrown at every public entry point: each call either works or raises one of the library's
documented errors (samplers.SamplersError and its subclasses), within a time limit — never a raw exception, a
crash, a hang or a silently accepted value that gives a wrong result."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import samplers
from samplers.core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=5)
FAST = [n for n in samplers.available() if not samplers.info(n).host_sync]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70), st.booleans(), st.none(),
    st.text(max_size=3), st.lists(st.floats(-3, 3), max_size=3), st.just(float("nan")), st.just(-1.0), st.just(0),
)


def works_or_refuses(call, time_limit, seconds=20):
    """Run ``call``: a result, or a documented error; anything else fails the test."""
    with time_limit(seconds):
        try:
            return call()
        except samplers.SamplersError:
            return None


@st.composite
def sigma_lists(draw):
    kind = draw(st.sampled_from(["valid", "numbers", "tensor2d", "empty", "ints", "inf_inside"]))
    if kind == "valid":
        n = draw(st.integers(1, 6))
        return samplers.get_sigmas("karras", n, sigma_min=0.05, sigma_max=draw(st.floats(0.1, 100)))
    if kind == "numbers":
        return draw(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
                             min_size=0, max_size=6))
    if kind == "tensor2d":
        return torch.ones(2, 3)
    if kind == "empty":
        return torch.tensor([])
    if kind == "ints":
        return torch.tensor([5, 3, 0])
    return torch.tensor([10.0, math.inf, 0.0])


@st.composite
def latents(draw):
    kind = draw(st.sampled_from(["ok", "int", "nan", "scalar", "empty_batch", "half", "list"]))
    x = GM.noise(2, seed=1, dtype=torch.float32) * 10
    return {"ok": x, "int": x.long(), "nan": x * float("nan"), "scalar": torch.tensor(1.0),
            "empty_batch": x[:0], "half": x.half(), "list": x.tolist()}[kind]


@FUZZ
@given(name=st.sampled_from(FAST), sigmas=sigma_lists(), x=latents(),
       option=st.sampled_from(["eta", "s_noise", "s_churn", "order", "r", "seed", "solver_type", "bogus", None]),
       value=odd_numbers)
def test_sample(time_limit, name, sigmas, x, option, value):
    options = {} if option is None else {option: value}
    out = works_or_refuses(lambda: samplers.sample(name, GM.denoiser, x, sigmas, disable=True, **options), time_limit)
    if out is not None:
        assert out.shape == x.shape and bool(torch.isfinite(out).all())


@FUZZ
@given(name=st.sampled_from(samplers.schedules.available()), n=odd_numbers, lo=odd_numbers, hi=odd_numbers,
       extra=st.sampled_from([{}, {"rho": 0}, {"rho": -1.0}, {"shift": -1.0}, {"mu": float("nan")}, {"bogus": 1}]))
def test_get_sigmas(time_limit, name, n, lo, hi, extra):
    native = VPDiscrete.from_betas()

    def call():
        kw = {} if name in samplers.schedules.TABLE_SCHEDULES else {"sigma_min": lo, "sigma_max": hi}
        return samplers.get_sigmas(name, n, native=native, **kw, **extra)

    out = works_or_refuses(call, time_limit)
    if out is not None:
        values = out.tolist()
        assert values[-1] == 0 and all(b < a for a, b in zip(values, values[1:]))


@FUZZ
@given(kind=st.sampled_from(["vp", "vpc", "ve", "flow"]), a=odd_numbers, b=odd_numbers)
def test_native_schedules(time_limit, kind, a, b):
    build = {"vp": lambda: VPDiscrete.from_betas("linear", 1000, a, b),
             "vpc": lambda: VPContinuous(beta_min=a, beta_max=b),
             "ve": lambda: VE(sigma_min=a, sigma_max=b),
             "flow": lambda: RectifiedFlow(shift=a, multiplier=b)}[kind]
    schedule = works_or_refuses(build, time_limit)
    if schedule is not None:
        assert 0 < schedule.sigma_min < schedule.sigma_max and not math.isnan(schedule.sigma_max)


@FUZZ
@given(prediction=st.sampled_from(["eps", "v", "x0", "flow", "score", "edm", "epsilon", "velocity", "nope", 3]),
       sigma=st.sampled_from([0.5, 14.0, math.inf]))
def test_to_denoiser(time_limit, prediction, sigma):
    vp = VPDiscrete.from_betas()

    def call():
        model = GM.as_model(prediction if prediction in ("eps", "v", "x0", "score") else "eps", vp)
        D = samplers.to_denoiser(model, prediction, vp)
        s = samplers.get_sigmas("karras", 3, native=vp)
        return samplers.sample("euler", D, samplers.initial_latent(GM.noise(2, seed=0), s), s, disable=True)

    works_or_refuses(call, time_limit)


@pytest.fixture(scope="module")
def pipe():
    from models.pipeline import Pipeline

    return Pipeline.load(model="flow")


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["steps", "batch", "width", "height", "cfg", "seed", "sampler", "schedule", "prompt"]),
       value=st.one_of(odd_numbers, st.sampled_from(["DPM++ 2M Karras", "euler_cfg_pp", "beta", "", []])))
def test_pipeline(pipe, time_limit, field, value):
    kw = {"steps": 2, "width": 16, "height": 16}
    prompt = "a red circle"
    if field == "prompt":
        prompt = value
    else:
        kw[field] = value
    works_or_refuses(lambda: pipe.txt2img(prompt, progress=False, output="tensor", **kw), time_limit, seconds=60)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(args=st.lists(st.sampled_from(["list", "names", "--source", "a1111", "bogus", "--debug", "-x", ""]),
                     min_size=0, max_size=3))
def test_cli_argument_errors(time_limit, capsys, args):
    from samplers.cli import main

    with time_limit(30):
        try:
            status = main(args)
        except SystemExit as exit_:  # argparse's usage errors: status 2, one message
            assert exit_.code in (0, 2)
            return
        except samplers.SamplersError:
            assert "--debug" in args  # only --debug lets an error through as an exception
            return
    assert status in (0, 1, 2)


diffusers = pytest.importorskip("diffusers")

SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "clip_sample": False}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
                            "timestep_spacing", "steps_offset", "sampler", "schedule", "sampler_options",
                            "final_sigmas_type", "clip_sample", "shift", "trained_betas"]),
       value=st.one_of(odd_numbers, st.sampled_from(["linear", "epsilon", "flow_prediction", "trailing", "eulr",
                                                     "DPM++ 2M Karras", {"eta": -1}, {"bogus": 1}, [0.5, 1.5]])),
       steps=st.one_of(st.integers(-2, 12), st.sampled_from([2.7, None, True, 10**9])),
       shape_ok=st.booleans())
def test_diffusers_shim(time_limit, key, value, steps, shape_ok):
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    def call():
        sch = SamplerScheduler.from_config({**SD15, key: value})
        sch.set_timesteps(steps)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sch.init_noise_sigma
        for t in sch.timesteps[:3]:
            out = torch.zeros_like(x) if shape_ok else torch.zeros(1, 4, 8)
            x = sch.step(out, t, sch.scale_model_input(x, t)).prev_sample
        return x

    works_or_refuses(call, time_limit, seconds=30)

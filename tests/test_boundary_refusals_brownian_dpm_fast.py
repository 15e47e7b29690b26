"""Refusals at the boundary, before any model call: the k-diffusion drop-in's ``sample_dpm_fast`` step count (n was
uncapped: n = 10**9 ran 59 s, peaked at 21.9 GB, then raised a bare ZeroDivisionError), the range and seed of
k-diffusion's Brownian tree (a NaN end made torchsde loop forever, inf recurse), and a
'meta' tensor as sigmas or as the pipeline's images (a raw NotImplementedError / RuntimeError)."""
import numpy as np
import pytest
import torch

import samplers
from samplers.core.brownian import BatchedBrownianTree, BrownianTreeNoiseSampler
from samplers.core.errors import InvalidInput, LimitExceeded
from samplers.interop import kdiffusion
from models import pipeline

from test_pipeline import IMG, model_calls, parts  # noqa: F401  (a fixture)

X = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 10.0
K = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
NAN, INF = float("nan"), float("inf")
CAP = pipeline.MAX_STEPS  # the pipeline's cap on a run's steps (10 000); the drop-in's n, as k-diffusion's, has none


class ModelCalled(Exception):
    """Raised by the counting model: a run that reaches the model fails fast (no long run before a refusal)."""


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, x, sigma, **extra_args):
        self.n += 1
        raise ModelCalled(f"the model was called (call {self.n})")


# ----------------------------------------------------------------------------- 1. sample_dpm_fast's n


def test_sample_dpm_fast_refuses_an_n_whose_grid_does_not_fit_before_any_model_call(monkeypatch, time_limit):
    # n = 10**9 built a 22 GB grid (59 s), then divided by zero after two model calls
    monkeypatch.setattr("samplers.core.validate.available_memory", lambda device: 2**30)
    model = Counter()
    with time_limit(10), pytest.raises(LimitExceeded) as e:
        kdiffusion.sample_dpm_fast(model, X, 0.1, 10.0, 10**9, disable=True)
    assert model.n == 0
    assert "n = 1000000000" in str(e.value) and "pass a smaller n" in str(e.value)
    solver = kdiffusion.DPMSolver(model)
    with time_limit(10), pytest.raises(LimitExceeded, match="n = 1000000000.*pass a smaller n"):
        solver.dpm_solver_fast(X, solver.t(torch.tensor(10.0)), solver.t(torch.tensor(0.1)), 10**9)
    assert model.n == 0


def test_sample_dpm_fast_refuses_a_range_too_narrow_for_its_steps_before_any_model_call(time_limit):
    """10 000 calls over σ from 10.0001 to 10 split λ into steps below float32's resolution: equal neighbouring times,
    on which the steps divide by zero (a ZeroDivisionError after model calls)."""
    model = Counter()
    with time_limit(10), pytest.raises(InvalidInput) as e:
        kdiffusion.sample_dpm_fast(model, X, 10.0, 10.0001, CAP, disable=True)
    assert model.n == 0
    assert "n = 10000" in str(e.value) and "pass a smaller n, or a wider range" in str(e.value)


def test_sample_dpm_fast_still_runs_any_n_that_fits():
    """k-diffusion takes any n: above the pipeline's 10 000 steps too."""
    calls = []

    def model(x, sigma):
        calls.append(1)
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    out = kdiffusion.sample_dpm_fast(model, X, 0.1, 10.0, 7, disable=True)
    assert len(calls) == 7 and torch.isfinite(out).all()
    out = kdiffusion.sample_dpm_fast(model, X, 0.1, 10.0, CAP + 1, disable=True)
    assert len(calls) == 7 + CAP + 1 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- 2. k-diffusion's Brownian tree


@pytest.mark.parametrize("sigma_min, sigma_max, value, rule", [
    (NAN, 10.0, "sigma_min", "must be a finite number, got nan"),
    (0.1, INF, "sigma_max", "must be a finite number, got inf"),
    (0.1, NAN, "sigma_max", "must be a finite number, got nan"),
    (-1.0, 10.0, "sigma_min", "must be >= 0, got -1"),
])
def test_the_tree_refuses_a_range_it_cannot_live_on_before_any_model_call(sigma_min, sigma_max, value, rule,
                                                                         time_limit):
    model = Counter()
    with time_limit(20), pytest.raises(InvalidInput) as e:
        samplers.sample("euler_ancestral", model, X, K, disable=True,
                        noise_sampler=BrownianTreeNoiseSampler(X, sigma_min, sigma_max, seed=1))
    assert model.n == 0
    message = str(e.value)
    assert value in message and rule in message
    assert "sigmas[sigmas > 0].min()" in message


def test_the_drop_ins_sde_sampler_with_a_nan_tree_is_refused_not_looping(time_limit):
    """p11b / p11c: torchsde bisected a NaN range forever."""
    model = Counter()
    with time_limit(20), pytest.raises(InvalidInput, match="sigma_min must be a finite number, got nan; pass"):
        kdiffusion.sample_dpmpp_sde(model, X, K, disable=True,
                                    noise_sampler=kdiffusion.BrownianTreeNoiseSampler(X, NAN, 10.0, seed=1))
    assert model.n == 0


@pytest.mark.parametrize("t0, t1, name", [(NAN, 1.0, "t0"), (0.0, -INF, "t1")])
def test_a_batched_tree_built_directly_refuses_a_non_finite_end(t0, t1, name, time_limit):
    with time_limit(10), pytest.raises(InvalidInput, match=f"{name} must be a finite number.*pass the finite times"):
        BatchedBrownianTree(X, t0, t1, seed=1)


def test_the_tree_still_takes_the_ranges_and_seeds_its_callers_pass():
    """Equal ends (a schedule with one positive σ, [σ, 0]: every draw 0, as k-diffusion's), sigma_min = 0, tensor
    ends, swapped ends (sorted, as k-diffusion sorts them) and seeds of any size (k-diffusion's tree takes them)
    still build; the draws of a valid tree are torchsde's own. A draw below the path (to 0) is torchsde's: it warns and
    clamps, as k-diffusion's tree does (a run never asks a tree there: no step to 0 draws)."""
    with pytest.warns(UserWarning, match="Should have ta>=t0"):
        draw = BrownianTreeNoiseSampler(X, 5.0, 5.0, seed=1)(torch.tensor(5.0), torch.tensor(0.0))
    assert torch.equal(draw, torch.zeros_like(X))
    for lo, hi, seed in ((0.0, 5.0, 3), (torch.tensor(0.1), torch.tensor(10.0), 2**64 - 1), (0.1, 10.0, [4, 5]),
                         (10.0, 0.1, 2**70), (0.1, 10.0, [2**64 - 1, 2**64])):
        draw = BrownianTreeNoiseSampler(X, lo, hi, seed=seed)(torch.tensor(3.0), torch.tensor(1.0))
        assert draw.shape == X.shape and torch.isfinite(draw).all()
    import torchsde
    tree = torchsde.BrownianTree(torch.as_tensor(0.1), torch.zeros_like(X), torch.as_tensor(10.0), entropy=7)
    ours = BrownianTreeNoiseSampler(X, 0.1, 10.0, seed=7)(torch.tensor(3.0), torch.tensor(1.0))
    theirs = tree(torch.tensor(1.0), torch.tensor(3.0)) * -1 / torch.tensor(2.0).sqrt()
    assert torch.equal(ours, theirs)


# ----------------------------------------------------------------------------- 3. 'meta' tensors


@pytest.mark.parametrize("sigmas", [torch.tensor([10.0, 0.0], device="meta"),
                                    [torch.tensor(10.0, device="meta"), torch.tensor(0.0, device="meta")]])
def test_meta_sigmas_are_refused_before_any_model_call(sigmas):
    model = Counter()
    with pytest.raises(InvalidInput, match="sigmas is on the 'meta' device.*pass a tensor with data \\(e.g. on 'cpu'"):
        samplers.sample("euler", model, X, sigmas, disable=True)
    assert model.n == 0


@pytest.mark.parametrize("name", ["sample_dpmpp_2m_sde", "sample_dpmpp_sde", "sample_dpmpp_3m_sde", "sample_euler"])
def test_meta_sigmas_are_refused_by_the_drop_ins_brownian_tree_samplers_too(name):
    """The drop-in's SDE samplers build k-diffusion's Brownian tree on the schedule's range before the run reads the
    schedule: meta sigmas gave a raw NotImplementedError there."""
    model = Counter()
    with pytest.raises(InvalidInput, match="sigmas is on the 'meta' device"):
        getattr(kdiffusion, name)(model, X, K.float().to("meta"), disable=True)
    assert model.n == 0


@pytest.mark.parametrize("sigmas", [torch.tensor([70000.0, 5.0, 0.0]).half(),
                                    np.array([70000.0, 5.0, 0.0], dtype=np.float16),
                                    [torch.tensor(70000.0).half(), 5.0, 0.0]], ids=["tensor", "numpy", "list"])
def test_an_inf_first_sigma_in_a_float16_schedule_is_refused_as_an_overflow(sigmas):
    """70000 in float16 is inf, which was taken as an intended start from σ = inf; in float16 / bfloat16 an inf start
    cannot be told from an overflow, so it is refused (a float32 schedule keeps an intended inf)."""
    model = Counter()
    with pytest.raises(InvalidInput, match=r"sigmas\[0\] = inf in a (torch\.)?float16 schedule.*overflow.*float32"):
        samplers.sample("euler", model, X, sigmas, disable=True)
    with pytest.raises(InvalidInput, match="overflow"):
        kdiffusion.sample_euler(model, X, torch.tensor([70000.0, 5.0, 0.0]).half(), disable=True)
    assert model.n == 0
    flow = samplers.get_sigmas("flow", 3, native=samplers.RectifiedFlow()).float()  # an intended inf, in float32
    samplers.sample("euler", lambda x, s: x * 0, X, flow, disable=True)


@pytest.mark.parametrize("images", [torch.zeros(1, 3, 64, 64, device="meta"), [torch.zeros(3, 64, 64, device="meta")]])
def test_meta_images_are_refused_before_any_model_call(parts, monkeypatch, images):  # noqa: F811
    calls = model_calls(parts["eps"], monkeypatch)
    with pytest.raises(InvalidInput, match="images are on the 'meta' device.*pass a tensor with data \\(e.g. on 'cpu'"):
        parts["eps"].img2img(images, "a red circle", sampler="euler", steps=2, seed=0, progress=False,
                             output="tensor")
    assert not calls
    with pytest.raises(InvalidInput, match="'meta' device"):
        pipeline._as_image_batch(images)


def test_a_range_too_narrow_for_its_steps_is_refused_before_the_grid_is_built(monkeypatch):
    # more steps than float32 holds values between the ends: refused from the ends alone (the grid was built first,
    # 22 GB for n = 10**9 where the memory check let it through)
    def built(*a, **k):
        raise AssertionError("the grid was built")

    monkeypatch.setattr(torch, "linspace", built)
    model = Counter()
    with pytest.raises(InvalidInput, match="more than torch.float32 holds values between them"):
        kdiffusion.sample_dpm_fast(model, X, 10.0, 10.0001, 3 * 10**7, disable=True)
    assert model.n == 0


def test_dpm_fast_reports_a_copy_of_the_callers_input_at_its_first_call():
    """dpm_fast's first model call is made at the input itself, and its callback handed the caller's own tensor as
    info["x"]: a callback that normalised it in place (a preview) changed the caller's x. It gets a copy."""
    x_in = X.clone()
    seen = []

    def callback(info):
        seen.append(info["x"] is x_in)
        info["x"].mul_(0)
    samplers.sample("dpm_fast", lambda x, s: x * 0.5, x_in, K, callback=callback, disable=True)
    assert seen and not any(seen)
    assert torch.equal(x_in, X)

"""capture / GraphedSampler at the seams with samplers.sample: labels, validation before any model call, seeds, noise."""
import operator
import re

import numpy as np
import pytest
import torch

import samplers
from samplers.core import graph
from samplers.core.native import RectifiedFlow
from samplers.core.noise import PredrawnNoise
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(3, 4, 4), components=3, seed=6)
SIG = samplers.get_sigmas("karras", 6, sigma_min=0.02, sigma_max=20.0)
FLOW = RectifiedFlow(multiplier=1.0)


class Counting:
    def __init__(self, model=GM.denoiser):
        self.model, self.n = model, 0
        self.supports_infinite_sigma = True

    def __call__(self, x, sigma, **kw):
        self.n += 1
        return self.model(x, sigma, **kw)


def _x(batch=2):
    return (GM.noise(batch, seed=5) * 20.0).float()


def _seed(name):
    return {"seed": 3} if "seed" in samplers.info(name).options else {}


@pytest.mark.parametrize("name", ["comfyui:uni_pc", "DPM fast", "Restart", "DEISMultistepScheduler",
                                  "comfyui:exp_heun_2_x0"])
def test_label_options_are_kept(name):
    x = _x()
    want = samplers.sample(name, GM.denoiser, x, SIG, disable=True, **_seed(name))
    assert torch.equal(graph.capture(name, GM.denoiser, x, SIG, fallback="eager", **_seed(name))(x), want)


def test_label_callable_and_contradiction():
    x = _x()
    fn = samplers.get("comfyui:uni_pc")
    assert torch.equal(graph.capture(fn, GM.denoiser, x, SIG, fallback="eager")(x), fn(GM.denoiser, x, SIG, disable=True))
    m = Counting()
    with pytest.raises(samplers.InvalidOption, match="means seeds_2 with r=1.0"):
        graph.capture("comfyui:exp_heun_2_x0", m, x, SIG, fallback="eager", r=0.5)
    with pytest.raises(samplers.InvalidOption, match="cannot be captured"):  # its Brownian-tree noise
        graph.capture("DPM++ 2M SDE Heun", m, x, SIG, fallback="eager", seed=1)
    assert m.n == 0


def test_nonfinite_start_refused_before_any_model_call():
    m = Counting()
    bad = torch.full_like(_x(), float("nan"))
    with pytest.raises(samplers.NonFiniteError, match="starting latent x holds NaN/Inf"):
        graph.capture("euler", m, bad, SIG, fallback="eager")
    run = graph.capture("euler", m, _x(), SIG, fallback="eager")
    with pytest.raises(samplers.NonFiniteError, match="starting latent x holds NaN/Inf"):
        run(bad)
    assert m.n == 0


def test_call_dtype_and_type_are_checked():
    m = Counting()
    run = graph.capture("dpmpp_2m", m, _x(), SIG, fallback="eager")
    for bad in (_x().double(), _x().half()):
        with pytest.raises(samplers.InvalidInput, match="captured for shape .*torch.float32"):
            run(bad)
    for bad in (_x().long(), _x().tolist()):
        with pytest.raises(samplers.InvalidType, match="x must be a floating-point tensor"):
            run(bad)
    assert m.n == 0


@pytest.mark.parametrize("name", ["euler", "ddim"])
def test_no_seed_drawn_where_no_noise_is(name):
    x = _x()
    torch.manual_seed(123)
    run = graph.capture(name, GM.denoiser, x, SIG, fallback="eager")
    out = run(x)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))
    assert torch.equal(out, samplers.sample(name, GM.denoiser, x, SIG, disable=True))
    run(x, seed=7)  # a seed is taken (and checked) as samplers.sample takes it
    with pytest.raises(samplers.InvalidInput, match="seeds for a batch"):
        run(x, seed=[1, 2, 3])


@pytest.mark.parametrize("name, opts", [("restart", dict(seed=1, restart=[[5, 2, 99.0, 1.0]])),
                                        ("unipc_bh2", dict(disable_corrector=[99])),
                                        ("dpmpp_2s", dict(step_r=[0.5])),
                                        ("pndm", dict(midpoints=[1e9]))])
@pytest.mark.parametrize("start", ["finite", "inf"])
def test_sampler_checks_at_capture(name, opts, start):
    if start == "inf":
        m = Counting(samplers.to_denoiser(GM.as_model("x0", FLOW), "x0", FLOW))
        sig, x = samplers.get_sigmas("flow", 6, native=FLOW), GM.noise(2, seed=5).float()
    else:
        m, sig, x = Counting(), SIG, _x()
    with pytest.raises(ValueError) as want:
        samplers.sample(name, m, x, sig, disable=True, **opts)
    with pytest.raises(type(want.value), match="^" + re.escape(str(want.value)[:40])):
        graph.capture(name, m, x, sig, fallback="eager", **opts)
    assert m.n == 0


def test_noise_scaler_from_inf_refused_at_capture():
    m = Counting(samplers.to_denoiser(GM.as_model("x0", FLOW), "x0", FLOW))
    sig, x = samplers.get_sigmas("flow", 6, native=FLOW), GM.noise(2, seed=5).float()
    with pytest.raises(samplers.InvalidInput, match="noise_scaler cannot start at sigma = inf"):
        graph.capture("er_sde", m, x, sig, fallback="eager", seed=1, noise_scaler=lambda s: s)
    assert m.n == 0


def test_caller_noise_draws_are_shape_checked():
    x = _x()
    bad = lambda s, sn: torch.zeros(1, *x.shape[1:])  # noqa: E731 - broadcastable, but not the latent's shape
    run = graph.capture("euler_ancestral", GM.denoiser, x, SIG, fallback="eager", noise_sampler=bad)
    with pytest.raises(samplers.InvalidInput, match="the noise sampler returned shape"):
        run(x)


def test_sigma_limit_is_the_state_dtype_s():
    m = Counting()
    x = (GM.noise(2, seed=5) * 1e20).float()
    with pytest.raises(samplers.InvalidInput, match="too large for a torch.float32 state"):
        graph.capture("euler", m, x, [1e20, 10.0, 1.0, 0.0], fallback="eager")
    assert m.n == 0


def test_callback_and_fallback_messages():
    m = Counting()
    for kw in (dict(callback=print), dict(disable=True)):
        with pytest.raises(samplers.InvalidOption, match="no callback or progress bar.*samplers.sample"):
            graph.capture("euler", m, _x(), SIG, fallback="eager", **kw)
    for bad in ("Eager", True):
        with pytest.raises(samplers.InvalidInput, match="fallback must be None or 'eager'"):
            graph.capture("euler", m, _x(), SIG, fallback=bad)
    assert m.n == 0


def test_predrawn_noise_restarts_each_call():
    x = _x()
    draws = torch.randn(len(SIG) - 1, *x.shape, generator=torch.Generator().manual_seed(0))
    run = graph.capture("euler_ancestral", GM.denoiser, x, SIG, fallback="eager", noise_sampler=PredrawnNoise(draws))
    first, second = run(x), run(x)
    want = samplers.sample("euler_ancestral", GM.denoiser, x, SIG, disable=True, noise_sampler=PredrawnNoise(draws))
    assert torch.equal(first, want) and torch.equal(second, want)


def test_brownian_object_refused():
    from samplers.core.brownian import BrownianNoise

    x, m = _x(), Counting()
    with pytest.raises(samplers.InvalidOption, match="cannot be captured"):
        graph.capture("euler_ancestral", m, x, SIG, fallback="eager", noise_sampler=BrownianNoise(x, 1, 0.02, 20.0))
    assert m.n == 0


def test_a_brownian_object_for_another_latent_is_refused_as_uncapturable():
    """A tree or path built for another batch was told to be rebuilt on the run's latent (the latent check ran first),
    and the rebuilt one was then refused as uncapturable: one refusal, naming the rule that holds for both."""
    from samplers.core.brownian import BrownianNoise, BrownianTreeNoiseSampler

    x, m = _x(), Counting()
    other = _x(3)
    for noise in (BrownianTreeNoiseSampler(other, 0.02, 20.0, seed=[1, 2, 3]),
                  BrownianNoise(other, [1, 2, 3], 0.02, 20.0), BrownianTreeNoiseSampler(x, 0.02, 20.0, seed=[1, 2])):
        with pytest.raises(samplers.InvalidOption, match="cannot be captured: a Brownian path is built on the host"):
            graph.capture("dpmpp_2m_sde", m, x, SIG, fallback="eager", noise_sampler=noise)
    assert m.n == 0


@pytest.mark.parametrize("kw, error, match", [
    ({"warmup": "abc"}, samplers.InvalidType, "warmup must be an integer"),
    ({"warmup": 2.0}, samplers.InvalidType, "warmup must be an integer"),
    ({"warmup": True}, samplers.InvalidType, "warmup must be an integer"),
    ({"warmup": -3}, samplers.InvalidOption, "warmup must be an integer >= 1"),
    ({"warmup": 0}, samplers.InvalidOption, "warmup must be an integer >= 1"),
    ({"pool": object()}, samplers.InvalidType, "pool must be None or a CUDA graph pool handle"),
    ({"pool": (1,)}, samplers.InvalidType, "pool must be None or a CUDA graph pool handle"),
    ({"pool": (1, True)}, samplers.InvalidType, "pool must be None or a CUDA graph pool handle"),
])
def test_warmup_and_pool_are_checked_before_any_model_call(kw, error, match):
    # these were accepted on CPU with fallback='eager' (warmup 0 and -3 became one warm-up on CUDA)
    m = Counting()
    with pytest.raises(error, match=match):
        graph.capture("euler", m, _x(), SIG, fallback="eager", **kw)
    assert m.n == 0


def test_a_pool_handle_is_accepted():
    # torch.cuda.graph_pool_handle() and CUDAGraph.pool() return a pair of ints (torch.cuda._POOL_HANDLE)
    run = graph.capture("euler", Counting(), _x(), SIG, fallback="eager", warmup=1, pool=(0, 1))
    assert run(_x()).shape == _x().shape


@pytest.mark.parametrize("name, opts", [
    ("restart", dict(fallback="eager", restart=[(2, 0, 0.1, 2.0)])),     # the sampler's own check (k_times = 0)
    ("restart", dict(fallback="eager", restart=[(2, 1, 0.1, 1e30)])),    # its σ limit
    ("euler_ancestral", dict()),                                         # a CPU latent without fallback
])
def test_a_refused_capture_leaves_the_global_rng_alone(name, opts):
    # seed=None's default seeds were drawn from torch's global generator when the run was built, before the sampler's
    # checks and the device refusal: code that tries capture, falls back to eager and then draws its latents after
    # torch.manual_seed(s) got other images than without the attempt (samplers.sample refusing the same leaves it)
    x = _x()
    torch.manual_seed(123)
    with pytest.raises((ValueError, graph.GraphUnavailable)):
        graph.capture(name, GM.denoiser, x, SIG, **opts)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))


def test_a_capture_with_no_seed_draws_its_seeds_as_samplers_sample_does():
    x = _x()
    torch.manual_seed(5)
    got = graph.capture("euler_ancestral", GM.denoiser, x, SIG, fallback="eager")(x)
    torch.manual_seed(5)
    assert torch.equal(got, samplers.sample("euler_ancestral", GM.denoiser, x, SIG, disable=True))


def test_capture_runs_with_the_options_as_checked():
    # capture checked the options and dropped what check_options returned, so the graphed loop ran with the raw values:
    # a 0-d tensor order was read at every step (51 host reads for unipc_bh2), a numpy float32 eta computed its
    # coefficients in float32 (3e-7 from samplers.sample, which runs with float(eta))
    x = _x()
    for name, opts in [("unipc_bh2", dict(order=torch.tensor(3))), ("lms", dict(order=torch.tensor(4))),
                       ("ipndm", dict(max_order=torch.tensor(4)))]:
        run = graph.capture(name, GM.denoiser, x, SIG, fallback="eager", **opts)
        with graph.count_host_reads() as reads:
            run._body()
        assert reads["n"] == 0, name
        assert torch.equal(run(x), samplers.sample(name, GM.denoiser, x, SIG, disable=True, **opts))
    for eta in (np.float32(0.7), np.float32(0.3)):
        want = samplers.sample("dpmpp_2m_sde", GM.denoiser, x, SIG, seed=[1, 2], eta=eta, disable=True)
        run = graph.capture("dpmpp_2m_sde", GM.denoiser, x, SIG, seed=[1, 2], eta=eta, fallback="eager")
        assert torch.equal(run(x), want)


def test_count_host_reads_counts_every_read_of_a_value():
    # a tensor as an index (__index__), complex(), torch.equal / allclose / is_nonzero read the values on the host (a
    # device sync) and were not counted: a model or sampler making them passed the CPU check of a capture with 0 reads
    t, f, a = torch.tensor(3), torch.tensor(2.5), torch.ones(3)
    reads_one = {
        "t.item()": lambda: t.item(), "int(t)": lambda: int(t), "float(f)": lambda: float(f),
        "bool(t)": lambda: bool(t),
        "a.tolist()": lambda: a.tolist(), "[..][t]": lambda: [1, 2, 3, 4][t], "range(t)": lambda: range(t),
        "operator.index(t)": lambda: operator.index(t), "complex(f)": lambda: complex(f),
        "torch.equal(a, a)": lambda: torch.equal(a, a), "a.equal(a)": lambda: a.equal(a),
        "torch.allclose(a, a)": lambda: torch.allclose(a, a), "a.allclose(a)": lambda: a.allclose(a),
        "torch.is_nonzero(t)": lambda: torch.is_nonzero(t), "t.is_nonzero()": lambda: t.is_nonzero(),
    }
    for what, read in reads_one.items():
        with graph.count_host_reads() as reads:
            read()
        assert reads["n"] == 1, what
    with graph.count_host_reads() as reads:
        a.numpy()  # a CPU tensor's own memory (a device tensor refuses it): not a read a device run makes
        torch.add(a, 1)
    assert reads["n"] == 0
    assert torch.equal is torch._C._VariableFunctions.equal  # torch's own again after the block

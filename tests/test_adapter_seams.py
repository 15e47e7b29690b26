"""Seams of the torchsde / torchdiffeq adapters and the ComfyUI node: Lévy area vs Brownian trees, a BrownianNoise on
the schedule's own (rounded) range, jump_t on a schedule point, reversible Heun's callback, NaN with min_step, the
implicit Adams tolerance, and the node's option JSON."""
from __future__ import annotations

import pytest
import torch

import samplers
from samplers.core.brownian import BrownianNoise, BrownianTreeNoiseSampler
from samplers.problems import GaussianMixture
from test_comfyui import fake_comfy  # noqa: F401  (the stand-in comfy.samplers module, a fixture)

GM = GaussianMixture.default(shape=(8,), components=2, seed=1)


def _counting(fn):
    calls = []

    def model(x, s):
        calls.append(float(torch.as_tensor(s).reshape(-1)[0]))
        return fn(x, s)
    return model, calls


def _shrink(x, s):
    s = torch.as_tensor(s, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return x * 0.25 / (0.25 + s * s)


# --- 1. SRK's Lévy area must be independent of the increment -------------------------------------------------------

@pytest.mark.parametrize("kind", ["brownian_tree", "brownian_tree_device"])
def test_srk_refuses_brownian_tree_kinds_before_any_model_call(kind):
    model, calls = _counting(_shrink)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    sig = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(samplers.InvalidInput, match=r"torchsde\.srk .*Lévy area.*noise_sampler='brownian'"):
        samplers.sample("torchsde.srk", model, x, sig, seed=0, noise_sampler=kind, disable=True)
    assert calls == []


def test_srk_refuses_a_tree_object_and_a_callable_that_repeats_its_draw():
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    sig = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0)
    tree = BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[1, 2], cpu=True)
    model, calls = _counting(_shrink)
    with pytest.raises(samplers.InvalidInput, match="BrownianTreeNoiseSampler"):
        samplers.sample("torchsde.srk", model, x, sig, noise_sampler=tree, disable=True)

    def repeats(s, t):  # any sampler that answers an interval with the same draw, e.g. a wrapped tree
        return tree(s, t)
    with pytest.raises(samplers.InvalidInput, match="same draw"):
        samplers.sample("torchsde.srk", model, x, sig, noise_sampler=repeats, disable=True)
    assert calls == []
    # other methods draw no Lévy area: the tree is fine there; with η = 0 no noise reaches the state
    assert torch.isfinite(samplers.sample("torchsde.euler", model, x, sig, noise_sampler=tree, disable=True)).all()
    assert torch.isfinite(samplers.sample("torchsde.log_ode_midpoint", model, x, sig, noise_sampler=tree,
                                          disable=True)).all()
    assert torch.isfinite(samplers.sample("torchsde.srk", model, x, sig, noise_sampler="brownian_tree", seed=0,
                                          eta=0.0, disable=True)).all()


def test_srk_with_fresh_draws_keeps_running_and_its_spread():
    """The seeded default and "brownian" paths give an independent H: data N(0, 0.5²), output std ≈ 0.5·… as before."""
    # 4000 numbers in 4 items: "brownian" seeds a path per item, so 4000 one-number items took 28 s
    x = torch.randn(4, 1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10
    sig = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0)
    a = samplers.sample("torchsde.srk", _shrink, x, sig, seed=0, disable=True)
    b = samplers.sample("torchsde.srk", _shrink, x, sig, seed=0, noise_sampler="brownian", disable=True)
    assert abs(float(a.std()) - float(b.std())) < 0.02


# --- 2. a BrownianNoise on the range the schedule was built on ------------------------------------------------------

def test_brownian_noise_on_the_schedules_own_range_is_accepted():
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0)) * 20
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=20.0)
    assert float(sig[-2]) < 0.05  # 0.049999999999999996
    noise = BrownianNoise(x, [1, 2], 0.05, 20.0)
    for name in ("torchsde.euler", "torchsde.srk"):
        out = samplers.sample(name, _shrink, x, sig, noise_sampler=noise, disable=True)
        assert torch.isfinite(out).all()
    # a schedule really outside is still refused, its range printed
    with pytest.raises(samplers.InvalidInput, match=r"schedule's range \[0\.04"):
        samplers.sample("torchsde.euler", _shrink, x, samplers.get_sigmas("karras", 6, sigma_min=0.04, sigma_max=20.0),
                        noise_sampler=noise, disable=True)


# --- 3. torchdiffeq jump_t on a schedule point ------------------------------------------------------------------------

def test_jump_t_on_a_schedule_point_runs():
    x = GM.noise(2, seed=0).double() * 10
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    out = samplers.sample("torchdiffeq.dopri5", GM.denoiser, x, sig, disable=True,
                          options={"jump_t": [float(sig[2])]})
    ref = samplers.sample("torchdiffeq.dopri5", GM.denoiser, x, sig, disable=True)
    assert torch.isfinite(out).all() and float((out - ref).abs().max()) < 1e-2


# --- 4. reversible Heun's callback -------------------------------------------------------------------------------------

def test_reversible_heun_reports_the_model_call_at_the_reported_sigma():
    outputs = []

    def model(x, s):
        d = GM.denoiser(x, s)
        outputs.append((float(torch.as_tensor(s).reshape(-1)[0]), d))
        return d
    x = GM.noise(2, seed=3).double() * 20
    sig = samplers.get_sigmas("karras", 5, sigma_min=0.05, sigma_max=20.0)
    seen = []
    samplers.sample("torchsde.reversible_heun", model, x, sig, seed=1, disable=True, callback=seen.append)
    assert len(outputs) == len(sig)  # no extra model call (1 a step, +1 at the start)
    for d in seen:
        assert any(s == d["sigma"] and torch.equal(out, d["denoised"]) for s, out in outputs), d["i"]


# --- 5. NaN with min_step ----------------------------------------------------------------------------------------------

def test_nan_with_min_step_is_a_non_finite_error():
    x = GM.noise(2, seed=0).double() * 10
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    with pytest.raises(samplers.NonFiniteError, match="NaN"):
        samplers.sample("torchdiffeq.dopri5", lambda x, s: x * float("nan"), x, sig, disable=True,
                        options={"min_step": 0.01})


# --- 6. the implicit Adams corrector's tolerance --------------------------------------------------------------------

def test_implicit_adams_takes_its_correctors_tolerance():
    x = GM.noise(2, seed=0).double() * 10
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    for name in ("torchdiffeq.implicit_adams", "torchdiffeq.fixed_adams"):
        loose, tight = {}, {}
        a = samplers.sample(name, GM.denoiser, x, sig, disable=True, options={"rtol": 1e-2, "atol": 1e-2},
                            info=loose)
        samplers.sample(name, GM.denoiser, x, sig, disable=True, info=tight)
        assert torch.isfinite(a).all() and loose["nfe"] < tight["nfe"]
    with pytest.raises(samplers.InvalidOption, match="take no tolerance"):
        samplers.sample("torchdiffeq.explicit_adams", GM.denoiser, x, sig, disable=True, options={"rtol": 1e-2})
    with pytest.raises(samplers.InvalidOption):
        samplers.sample("torchdiffeq.implicit_adams", GM.denoiser, x, sig, disable=True, options={"rtol": -1.0})


# --- 7. the ComfyUI node's JSON ----------------------------------------------------------------------------------------

@pytest.fixture
def node(request):
    request.getfixturevalue("fake_comfy")  # test_comfyui's stand-in comfy.samplers module
    from samplers.interop import comfyui
    (_, cls), = comfyui.node_class_mappings()[0].items()
    return cls()


@pytest.mark.parametrize("opts, match", [
    ('{"name": "x"}', r"no option 'name'.*its options are: eta"),
    ('{"coordinates": "flow"}', r"no option 'coordinates'.*its options are: eta"),
    ('{"eta": 0.5, "eta": 2}', r"'eta' more than once"),
])
def test_node_refuses_internal_and_duplicate_keys(node, opts, match):
    with pytest.raises(samplers.InvalidOption, match=match):
        node.get_sampler("euler_ancestral", opts)
    node.get_sampler("euler_ancestral", '{"eta": 0.5}')


def test_negative_comfy_seed_names_where_it_came_from():
    from samplers.interop import comfyui
    fn = comfyui.ksampler_function("torchsde.euler")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    model, calls = _counting(_shrink)
    with pytest.raises(samplers.InvalidInput, match=r"extra_args\['seed'\] = -1"):
        fn(model, x, samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0), extra_args={"seed": -1},
           disable=True)
    assert calls == []


# --- torchdiffeq: tolerances the state cannot resolve, a norm that is no norm -----------------------------------------

SIG = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=20.0)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float32, 1e-12, 1e-12), (torch.float16, 1e-8, 0.0),
                                               (torch.float64, 1e-17, 1e-17), (torch.float32, 5e-8, 5e-8)])
def test_adaptive_tolerances_below_the_state_resolution_are_refused_before_any_model_call(method, dtype, rtol, atol):
    # dopri5 on float32 latents at rtol=atol=1e-12 made 108,849 model calls (41 s on a toy model) without reaching
    # the step cap; float16 latents run in a float32 state, whose resolution is the one that counts
    x = (GM.noise(2, seed=0) * 20.0).to(dtype)
    model, calls = _counting(_shrink)
    state = torch.float64 if dtype == torch.float64 else torch.float32
    with pytest.raises(samplers.InvalidOption, match=f"rtol={rtol!r} and atol={atol!r} are both below the resolution of "
                       f"the {state} state .*eps/2 = {torch.finfo(state).eps / 2:.3g}.*float64 latents"):
        samplers.sample(f"torchdiffeq.{method}", model, x, SIG, disable=True, rtol=rtol, atol=atol)
    assert calls == []


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float32, 1e-7, 1e-7), (torch.float32, 0.0, 1e-5),
                                               (torch.float32, 1e-12, 1e-3), (torch.float64, 1e-9, 1e-9)])
def test_adaptive_tolerances_the_state_resolves_run(dtype, rtol, atol):
    info = {}
    out = samplers.sample("torchdiffeq.dopri5", _shrink, (GM.noise(2, seed=0) * 20.0).to(dtype), SIG, disable=True,
                          rtol=rtol, atol=atol, info=info)
    assert bool(torch.isfinite(out).all()) and info["nfe"] < 2000


@pytest.mark.parametrize("norm, match", [
    (lambda t: "x", "returned 'x' \\(str\\)"),
    (lambda t: 0.5, "returned 0.5 \\(float\\).*torch.as_tensor"),
    (lambda t: t.abs(), "tensor of shape \\(2, 8\\)"),
    (lambda t: torch.tensor(float("nan")), "returned nan"),
    (lambda t: -t.pow(2).mean().sqrt(), "returned -1.0"),
    (lambda t: torch.linalg.vector_norm(t).to(torch.complex64), "complex64"),
    (lambda: torch.tensor(1.0), "raised TypeError"),
])
def test_an_adaptive_norm_is_checked_on_a_probe_before_any_model_call(norm, match):
    # norm=lambda t: "x" failed with torchdiffeq's AttributeError after one model call
    model, calls = _counting(_shrink)
    with pytest.raises(samplers.InvalidOption, match="options\\['norm'\\] .*" + match):
        samplers.sample("torchdiffeq.dopri5", model, GM.noise(2, seed=0) * 20.0, SIG, disable=True,
                        options={"norm": norm})
    assert calls == []
    info = {}
    samplers.sample("torchdiffeq.dopri5", _shrink, GM.noise(2, seed=0) * 20.0, SIG, disable=True, info=info,
                    options={"norm": lambda t: t.abs().max()})
    assert info["nfe"] > 0

"""GaussianMixture, the public analytic problem, refuses a bad argument where it is given (construction, or the
method's call), with an error that names it — before this it accepted components=0 (D ≡ 0), negative weights, std=0
or NaN, spread=inf, negative or fractional seeds, int noise (truncated normals), σ < 0 or NaN, and failed later with raw
torch errors (a matmul on a wrong x shape, 'str' has no sigma_of_time, ...)."""
from __future__ import annotations

import pytest
import torch

import samplers
from samplers.core.native import VE, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)
X = GM.noise(2, seed=0)
MEANS, STDS, WEIGHTS = [[0.7, -0.3], [-0.5, 0.4]], [0.6, 0.8], [0.4, 0.6]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"components": 0}, samplers.InvalidInput, r"components must be an integer >= 1, got 0"),
    ({"components": -1}, samplers.InvalidInput, r"components must be an integer >= 1"),
    ({"components": 2.5}, samplers.InvalidType, r"components must be an integer, got 2\.5"),
    ({"components": True}, samplers.InvalidType, r"components must be an integer, got True"),
    ({"shape": 4}, samplers.InvalidType, r"shape must be a tuple of integers >= 1.*got 4"),
    ({"shape": (2.0, 2)}, samplers.InvalidType, r"shape\[0\] must be an integer, got 2\.0"),
    ({"shape": (0,)}, samplers.InvalidInput, r"shape\[0\] must be an integer >= 1, got 0"),
    ({"shape": (-2,)}, samplers.InvalidInput, r"shape\[0\] must be an integer >= 1, got -2"),
    ({"seed": -1}, samplers.InvalidInput, r"seed = -1 is outside 0 <= seed < 2\*\*64"),
    ({"seed": 1.5}, samplers.InvalidType, r"seed must be an integer, got 1\.5"),
    ({"seed": 2**64}, samplers.InvalidInput, r"seed = 18446744073709551616 is outside"),
    ({"std": 0.0}, samplers.InvalidInput, r"std must be > 0, got 0"),
    ({"std": -1.0}, samplers.InvalidInput, r"std must be > 0, got -1"),
    ({"std": float("nan")}, samplers.InvalidInput, r"std must be a finite number, got nan"),
    ({"spread": float("inf")}, samplers.InvalidInput, r"spread must be a finite number"),
    ({"spread": -1.0}, samplers.InvalidInput, r"spread must be >= 0"),
])
def test_default_refuses_a_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianMixture.default(**kwargs)


@pytest.mark.parametrize("means,stds,weights,shape,error,match", [
    ([[0.0] * 4] * 3, [1.0, 1.0], [1.0, 1.0, 1.0], None, samplers.InvalidInput,
     r"stds holds 2 values but means holds K = 3 components"),
    ([[0.0] * 4] * 2, [1.0, 1.0], [1.0, 1.0, 1.0], None, samplers.InvalidInput,
     r"weights holds 3 values but means holds K = 2"),
    ([0.0] * 4, [1.0], [1.0], None, samplers.InvalidInput, r"means must be a \[K, d\] tensor.*shape \(4,\).*means\[None\]"),
    (MEANS, 0.5, WEIGHTS, None, samplers.InvalidInput, r"stds must be a \[K\] tensor.*shape \(\)"),
    (MEANS, STDS, [1.0, -0.5], None, samplers.InvalidInput, r"weights must be >= 0 and not all 0.*-0\.5"),
    (MEANS, STDS, [0.0, 0.0], None, samplers.InvalidInput, r"weights must be >= 0 and not all 0"),
    (MEANS, [0.6, 0.0], WEIGHTS, None, samplers.InvalidInput, r"stds must be > 0"),
    ([[0.7, float("nan")], [0.0, 0.0]], STDS, WEIGHTS, None, samplers.InvalidInput, r"means must be finite"),
    (MEANS, STDS, WEIGHTS, (3,), samplers.InvalidInput, r"shape \(3,\) does not hold 2 values"),
    (MEANS, STDS, WEIGHTS, 2, samplers.InvalidType, r"shape must be a tuple of integers"),
])
def test_the_constructor_refuses_a_bad_mixture(means, stds, weights, shape, error, match):
    with pytest.raises(error, match=match):
        GaussianMixture(means, stds, weights, shape)


@pytest.mark.parametrize("call,error,match", [
    (lambda: GM.denoise(torch.randn(2, 5, dtype=torch.float64), 1.0), samplers.InvalidInput,
     r"denoise: x has shape \(2, 5\).*\[B, \*\(2, 2, 2\)\]"),
    (lambda: GM.denoiser(X.reshape(2, 8), torch.ones(2)), samplers.InvalidInput, r"denoiser: x has shape \(2, 8\)"),
    (lambda: GM.denoise(X.long(), 1.0), samplers.InvalidType, r"x must be a floating-point tensor"),
    (lambda: GM.denoise(X, -1.0), samplers.InvalidInput, r"denoise: sigma must be >= 0, got -1"),
    (lambda: GM.denoise(X, float("nan")), samplers.InvalidInput, r"denoise: sigma must be a finite number, got nan"),
    (lambda: GM.denoise(X, torch.tensor([1.0, -1.0])), samplers.InvalidInput, r"sigma must be >= 0 and not NaN"),
    (lambda: GM.denoise(X, torch.tensor([1.0, float("nan")])), samplers.InvalidInput, r"sigma must be >= 0 and not NaN"),
    (lambda: GM.denoise(X, torch.ones(3)), samplers.InvalidInput, r"sigma is a torch\.float32 tensor of shape \(3,\)"),
    (lambda: GM.ode_endpoint(X * 80, -1.0), samplers.InvalidInput, r"ode_endpoint: sigma_start must be >= 0"),
    (lambda: GM.ode_endpoint(X * 80, float("nan")), samplers.InvalidInput, r"sigma_start must be a finite number"),
    (lambda: GM.ode_endpoint(X * 80, 80.0, float("nan")), samplers.InvalidInput, r"sigma_end must be a finite number"),
    (lambda: GM.ode_endpoint(torch.randn(2, 5, dtype=torch.float64), 80.0), samplers.InvalidInput,
     r"ode_endpoint: x has shape \(2, 5\)"),
    (lambda: GM.noise(2, dtype=torch.int64), samplers.InvalidType, r"dtype must be a floating-point torch dtype.*int64"),
    (lambda: GM.noise(-1), samplers.InvalidInput, r"n must be an integer >= 0, got -1"),
    (lambda: GM.noise(2, seed=-1), samplers.InvalidInput, r"seed = -1 is outside"),
    (lambda: GM.sample(2, seed=1.5), samplers.InvalidType, r"seed must be an integer"),
    (lambda: GM.as_model("edm", VE()), samplers.InvalidInput, r"as_model\('edm'\) is not provided"),
    (lambda: GM.as_model("eps", "vp"), samplers.InvalidType, r"schedule must be the model's native noise schedule"),
    (lambda: GM.as_model("eps", None), samplers.InvalidType, r"schedule must be the model's native noise schedule"),
])
def test_each_method_refuses_a_bad_argument_at_its_call(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_valid_uses_are_unchanged():
    # the documented forms: a list mixture with its shape as a list, a 0-d tensor σ, a [1] σ, σ = inf, n = 0
    gm = GaussianMixture(MEANS, STDS, WEIGHTS, shape=[2])
    assert gm.shape == (2,) and torch.allclose(gm.weights, torch.tensor(WEIGHTS, dtype=torch.float64))
    x = gm.noise(3, seed=0)
    assert torch.equal(gm.denoise(x, 1.0), gm.denoise(x, torch.tensor(1.0)))
    assert torch.equal(gm.denoise(x, 1.0), gm.denoiser(x, torch.ones(3)))
    assert torch.isfinite(gm.denoise(x, float("inf"))).all() and torch.isfinite(gm.denoise(x, 0.0)).all()
    assert gm.noise(0).shape == (0, 2) and gm.sample(0).shape == (0, 2)
    assert gm.denoise(x.half(), 1.0).dtype == torch.float16
    # a reference solve's stage just past σ = 0 reads the even extension: denoiser takes a tensor σ < 0
    assert torch.equal(gm.denoiser(x, torch.full((3,), -0.5)), gm.denoiser(x, torch.full((3,), 0.5)))
    # an as_model model round-trips; the first call it used to fail at is now refused when it is built
    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    D = samplers.to_denoiser(GM.as_model("eps", vp), "eps", vp)
    torch.testing.assert_close(D(X, torch.full((2,), 3.0, dtype=torch.float64)), GM.denoise(X, 3.0))

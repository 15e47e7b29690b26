"""Convergence order of the core samplers, and Butcher tables that satisfy their order conditions."""
import itertools
import math
from fractions import Fraction

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture
from samplers.ode.runge_kutta import make_rk_sampler
from samplers.ode.tableaus import TABLEAUS

# One Gaussian has a closed-form endpoint but a linear ODE, on which some methods superconverge (midpoint
# shows order 3 there); two overlapping Gaussians give a smooth nonlinear ODE with a tight dopri5 reference.
GAUSS = GaussianMixture(means=[[0.7, -0.3, 0.2, 1.1]], stds=[0.4], weights=[1.0])
MIX = GaussianMixture(means=[[0.7, -0.3, 0.2, 1.1], [-0.5, 0.4, 0.9, -0.2]], stds=[0.6, 0.8], weights=[0.4, 0.6])
SIGMA_START, SIGMA_END = 10.0, 0.1
X = MIX.noise(16, seed=0) * SIGMA_START
REF = MIX.ode_endpoint(X, SIGMA_START, SIGMA_END, rtol=1e-13, atol=1e-13)


def error(name_or_fn, steps: int) -> float:
    sigmas = torch.logspace(math.log10(SIGMA_START), math.log10(SIGMA_END), steps + 1, dtype=torch.float64)
    fn = samplers.get(name_or_fn) if isinstance(name_or_fn, str) else name_or_fn
    out = fn(MIX.denoiser, X, sigmas, disable=True)
    return float((out - REF).abs().max())


def test_single_gaussian_closed_form_matches_dopri5():
    x = GAUSS.noise(4, seed=3) * SIGMA_START
    closed = GAUSS.ode_endpoint(x, SIGMA_START, SIGMA_END)
    two = GaussianMixture(means=GAUSS.means.repeat(2, 1), stds=[0.4, 0.4], weights=[0.5, 0.5])
    torch.testing.assert_close(two.ode_endpoint(x, SIGMA_START, SIGMA_END), closed, rtol=1e-8, atol=1e-8)


# (stated order, steps): the slope is measured between `steps` and twice as many, in the asymptotic regime.
CORE = {"euler": (1, 32), "heun": (2, 32), "ddim": (1, 32), "midpoint": (2, 32), "ralston": (2, 32),
        "kutta3": (3, 32), "heun3": (3, 32), "ralston3": (3, 32), "ssprk3": (3, 32), "rk4": (4, 32),
        "rk38": (4, 32), "ralston4": (4, 32), "heun_flow": (2, 32)}


@pytest.mark.parametrize("name", list(CORE))
def test_convergence_order(name):
    order, n = CORE[name]
    assert samplers.info(name).order == order
    slope = math.log2(error(name, n) / error(name, 2 * n))
    assert abs(slope - order) < 0.3, f"{name}: observed order {slope:.2f}, stated {order}"


def trees(order):
    """Rooted trees with `order` nodes, as sorted tuples of child trees."""
    if order == 1:
        return [()]
    out = set()
    for parts in _partitions(order - 1):
        for children in itertools.product(*[trees(p) for p in parts]):
            out.add(tuple(sorted(children)))
    return sorted(out)


def _partitions(n, largest=None):
    largest = largest or n
    if n == 0:
        yield ()
        return
    for k in range(min(n, largest), 0, -1):
        for rest in _partitions(n - k, k):
            yield (k,) + rest


def size(t):
    return 1 + sum(size(c) for c in t)


def gamma(t):
    return size(t) * math.prod(gamma(c) for c in t)


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_tableau_order_conditions(name):
    tab = TABLEAUS[name]
    s = tab.stages
    exact = all(isinstance(v, (int, Fraction)) for row in tab.a for v in row) and \
        all(isinstance(v, (int, Fraction)) for v in tab.b)
    tol = 0 if exact else 1e-7
    num = Fraction if exact else float
    A = [[num(tab.a[i][j]) if j < len(tab.a[i]) else num(0) for j in range(s)] for i in range(s)]
    b = [num(v) for v in tab.b]
    for i in range(s):  # row sums: c_i = Σ_j a_ij
        assert abs(sum(A[i]) - num(tab.c[i])) <= tol

    def weights(t):  # the stage vector of tree t: Π over children of A·g(child)
        g = [num(1)] * s
        for child in t:
            gc = weights(child)
            ag = [sum(A[i][j] * gc[j] for j in range(s)) for i in range(s)]
            g = [g[i] * ag[i] for i in range(s)]
        return g

    for p in range(1, tab.order + 1):
        for t in trees(p):
            lhs = sum(bi * gi for bi, gi in zip(b, weights(t)))
            assert abs(lhs - Fraction(1, gamma(t))) <= tol, f"{name}: order condition for tree {t} fails"
    assert len(trees(4)) == 4 and len(trees(5)) == 9


def test_tables_equal_the_hand_written_samplers():
    sigmas = samplers.get_sigmas("karras", 7, sigma_min=0.01, sigma_max=10.0)
    x = GAUSS.noise(4, seed=1) * 10
    for table, name in (("rk_euler", "euler"), ("rk_heun", "heun")):
        ours = samplers.get(name)(GAUSS.denoiser, x, sigmas, disable=True)
        generic = make_rk_sampler(TABLEAUS[table])(GAUSS.denoiser, x, sigmas.tolist())
        torch.testing.assert_close(ours, generic, rtol=1e-14, atol=1e-14)


def test_heun_flow_takes_its_own_first_step_from_infinity():
    """From σ = ∞ (flow t = 1) heun_flow's first step is Heun's in t, not the shared first-order step; an eps
    model, which cannot be evaluated there, is refused before any call."""
    flow = samplers.RectifiedFlow(shift=3.0, multiplier=1000.0)
    d = samplers.to_denoiser(MIX.as_model("flow", flow), "flow", flow)
    noise = MIX.noise(8, seed=2)
    ref = MIX.ode_endpoint(noise, math.inf)
    err = {n: float((samplers.sample("heun_flow", d, noise, samplers.get_sigmas("flow", n, native=flow),
                                     disable=True) - ref).abs().max()) for n in (16, 32)}
    assert 3.0 < err[16] / err[32] < 5.0  # second order from the first step on
    vp = samplers.VPDiscrete.from_betas()
    eps = samplers.to_denoiser(MIX.as_model("eps", vp), "eps", vp)
    with pytest.raises(samplers.InvalidInput, match="sigma = inf"):
        samplers.sample("heun_flow", eps, noise, [math.inf, 1.0, 0.0])

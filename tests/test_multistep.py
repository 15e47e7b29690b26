"""DPM-Solver++ multistep / singlestep, LMS, DPM2, RES, gradient estimation, Heun++, DPM-Solver fast/adaptive:
convergence order, parity with diffusers on the same model and noise, and exact equivalences."""
import math

import pytest
import torch

import samplers
from samplers.ode.adams import deis_coefficients
from samplers.ode.multistep import lms_coefficients
from samplers.ode.singlestep import fast_orders


# name: (stated order, warm-up steps to refine, steps, options)
ORDERS = {
    "dpmpp_2m": (2, 1, 32, {}),
    "dpmpp_2m-heun": (2, 1, 32, {"solver_type": "heun"}),
    "dpmpp_3m": (2, 2, 64, {}),  # the published 3M is second order (see test_published_3m_is_second_order)
    "dpmpp_3m_exact": (3, 2, 32, {}),
    "lms": (4, 3, 32, {}),
    "lms-2": (2, 1, 32, {"order": 2}),
    "lms-3": (3, 2, 32, {"order": 3}),
    "res_multistep": (2, 1, 32, {}),
    "gradient_estimation": (1, 0, 32, {}),
    "dpm_2": (2, 0, 32, {}),
    "dpmpp_2s": (2, 0, 32, {}),
    "dpmpp_2s-heun": (2, 0, 32, {"solver_type": "heun"}),
    "dpmpp_3s": (3, 0, 16, {}),
    "heunpp2": (1, 0, 32, {}),
}


@pytest.mark.parametrize("case", list(ORDERS))
def test_convergence_order(two_clusters, case):
    order, warm, n, kw = ORDERS[case]
    name = case.split("-")[0]
    if "order" not in kw and "solver_type" not in kw:
        assert samplers.info(name).order == order
    slope = math.log2(two_clusters.error(name, two_clusters.refined_sigmas(n, warm), **kw) / two_clusters.error(name, two_clusters.refined_sigmas(2 * n, warm), **kw))
    assert abs(slope - order) < 0.3, f"{case}: observed order {slope:.2f}, stated {order}"


def test_published_3m_is_second_order_and_the_exact_weight_fixes_it(two_clusters):
    """The published D2 weight (−φ3) is half the Taylor weight: 3M's two_clusters.error falls like h², 3M-exact like h³."""
    e = {name: [two_clusters.error(name, two_clusters.refined_sigmas(n, 2)) for n in (64, 128)] for name in ("dpmpp_3m", "dpmpp_3m_exact")}
    assert abs(math.log2(e["dpmpp_3m"][0] / e["dpmpp_3m"][1]) - 2) < 0.3
    assert e["dpmpp_3m_exact"][1] < e["dpmpp_3m"][1] / 5


def test_dpm_fast_converges_with_its_budget(two_clusters):
    def sig(nfe):  # only the end points matter to dpm_fast: 3rd-order steps, 3 calls each, uniform in λ
        return torch.logspace(math.log10(two_clusters.sigma_start), math.log10(two_clusters.sigma_end), nfe + 1, dtype=torch.float64)
    # NFE ≡ 2 (mod 3) makes the plan 3rd-order steps and one 2nd-order step (11 and 22 steps here); other
    # budgets end with a 1st-order step, whose h² local error caps the global order at 2 (by design)
    errors = [two_clusters.error("dpm_fast", sig(nfe)) for nfe in (32, 65)]
    assert abs(math.log2(errors[0] / errors[1]) - 3) < 0.4
    assert fast_orders(10) == [3, 3, 3, 1] and fast_orders(9) == [3, 3, 2, 1] and sum(fast_orders(17)) == 17


def test_dpm_fast_spends_exactly_its_budget(two_clusters):
    calls = []
    sig = samplers.get_sigmas("karras", 10, sigma_min=0.05, sigma_max=10.0)
    samplers.sample("dpm_fast", lambda x, s: calls.append(1) or two_clusters.gm.denoiser(x, s), two_clusters.x, sig, disable=True)
    assert len(calls) == 10


def test_dpm_adaptive_reaches_the_exact_endpoint_and_reports_nfe(two_clusters):
    info = {}
    sig = torch.tensor([two_clusters.sigma_start, 1.0, two_clusters.sigma_end], dtype=torch.float64)
    out = samplers.sample("dpm_adaptive", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, rtol=1e-4, atol=1e-5, info=info)
    assert float((out - two_clusters.reference).abs().max()) < 2e-3
    assert info["nfe"] > 0 and info["n_accept"] > 0 and info["nfe"] == 3 * (info["n_accept"] + info["n_reject"])
    loose = {}
    samplers.sample("dpm_adaptive", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, rtol=0.05, info=loose)
    assert loose["nfe"] < info["nfe"]


# ---------------------------------------------------------------------------------------------------
# exact equivalences


def test_first_dpmpp_step_is_ddim_and_lms_order_1_is_euler(two_clusters):
    sig = samplers.get_sigmas("karras", 8, sigma_min=0.1, sigma_max=10.0)
    for name in ("dpmpp_2m", "dpmpp_3m", "dpmpp_3m_exact", "res_multistep"):
        if name != "res_multistep":
            torch.testing.assert_close(samplers.sample(name, two_clusters.gm.denoiser, two_clusters.x, sig[:2], disable=True),
                                       samplers.sample("ddim", two_clusters.gm.denoiser, two_clusters.x, sig[:2], disable=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(samplers.sample("lms", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, order=1),
                               samplers.sample("euler", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(samplers.sample("gradient_estimation", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True, ge_gamma=1.0),
                               samplers.sample("euler", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True), rtol=1e-12, atol=1e-12)


def test_lms_coefficients_integrate_polynomials_exactly():
    sig = [10.0, 6.0, 3.5, 2.0, 1.1, 0.0]
    coeffs = lms_coefficients(sig, 4)
    for i, row in enumerate(coeffs):
        k = len(row)
        for p in range(k):  # ∫ σ^p over the step is reproduced by the weights on nodes σ_i, σ_{i−1}, …
            exact = (sig[i + 1] ** (p + 1) - sig[i] ** (p + 1)) / (p + 1)
            got = sum(c * sig[i - j] ** p for j, c in enumerate(row))
            assert got == pytest.approx(exact, rel=1e-10, abs=1e-10)


def test_lms_and_deis_weights_stay_exact_at_many_steps():
    """At 5000 steps each step's weights still sum to its dσ (they integrate the constant 1) to rounding, and deis's
    match a quadrature of ℓ_k(log σ) over the step: both are built in the step's own variable. Expanded in σ (log σ)
    about 0, the two ends of the antiderivative cancelled: lms's sums were off by 8.4e-6 of dσ at 2000 steps and
    3.5e-4 at 5000, deis's weights by 1.1e-5 of dσ at 10000."""
    from scipy.integrate import quad

    sig = torch.logspace(1, -1, 5001, dtype=torch.float64).tolist()
    steps = [b - a for a, b in zip(sig, sig[1:])]
    assert max(abs(sum(row) / step - 1) for row, step in zip(lms_coefficients(sig, 4), steps)) < 1e-12
    assert max(abs(sum(deis_coefficients(sig, i, 3)) / steps[i] - 1) for i in range(2, 5000)) < 1e-12
    for i in (2, 3, 2500, 4999):
        nodes = [sig[i - k] for k in range(3)]
        for k, weight in enumerate(deis_coefficients(sig, i, 3)):
            def basis(s):  # ℓ_k(log σ) in product form, each log difference as log1p of a relative difference
                return math.prod(math.log1p((s - node) / node) / math.log1p((nodes[k] - node) / node)
                                 for m, node in enumerate(nodes) if m != k)
            exact = quad(basis, sig[i], sig[i + 1], epsabs=0, epsrel=1e-13)[0]
            assert abs(weight - exact) < 1e-12 * abs(steps[i]), (i, k, weight, exact)


def test_lms_keeps_its_order_at_fine_steps(two_clusters):
    """lms's 4th order holds from 128 to 256 steps too. The refined schedules' warm-up steps are h² long, so the first
    regular steps extrapolate from nodes bunched within 3h of σ_i: the weights are large and must be exact to
    rounding. Measured 4.34 (4.07 from 64 to 128, 3.95 from 256 to 512); with the weights expanded in σ about 0 it
    was 0.77 (their error, 1e-9 of dσ at 256 steps, outgrew the method's)."""
    errors = [two_clusters.error("lms", two_clusters.refined_sigmas(n, 3)) for n in (128, 256)]
    assert abs(math.log2(errors[0] / errors[1]) - 4) < 0.5

def test_dpmpp_2s_at_r_half_is_the_midpoint_exponential_step(two_clusters):
    """With r = 1/2 the midpoint form uses only D at the half step (k-diffusion's sample_dpmpp_2s_ancestral, η = 0)."""
    sig = torch.tensor([10.0, 2.0], dtype=torch.float64)
    sigma_mid = math.sqrt(10.0 * 2.0)
    x_mid = two_clusters.x * (sigma_mid / 10.0) + two_clusters.gm.denoiser(two_clusters.x, torch.full((16,), 10.0, dtype=torch.float64)) * (1 - sigma_mid / 10.0)
    expected = two_clusters.x * 0.2 + two_clusters.gm.denoiser(x_mid, torch.full((16,), sigma_mid, dtype=torch.float64)) * 0.8
    torch.testing.assert_close(samplers.sample("dpmpp_2s", two_clusters.gm.denoiser, two_clusters.x, sig, disable=True), expected,
                               rtol=1e-12, atol=1e-12)


def test_bad_options_are_named(two_clusters):
    sig = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(ValueError, match="solver_type"):
        samplers.sample("dpmpp_2m", two_clusters.gm.denoiser, two_clusters.x, sig, solver_type="rk")
    with pytest.raises(ValueError, match="order must be an integer >= 1, got 0"):
        samplers.sample("lms", two_clusters.gm.denoiser, two_clusters.x, sig, order=0)
    with pytest.raises(ValueError, match="order must be an integer from 1 to 4, got 5"):
        samplers.sample("ipndm", two_clusters.gm.denoiser, two_clusters.x, sig, max_order=5)
    with pytest.raises(ValueError, match="r must be"):
        samplers.sample("dpmpp_2s", two_clusters.gm.denoiser, two_clusters.x, sig, r=1.5)
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        samplers.sample("dpm_adaptive", two_clusters.gm.denoiser, two_clusters.x, sig, order=1)


# ---------------------------------------------------------------------------------------------------
# parity with diffusers on the same native eps model, timesteps and noise (float32)

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("order,solver_type", [(2, "midpoint"), (2, "heun"), (3, "midpoint"), (3, "heun")])
def test_dpmsolver_multistep_parity(sd15, order, solver_type, steps):
    sch = diffusers.DPMSolverMultistepScheduler(**sd15.betas, algorithm_type="dpmsolver++", solver_order=order,
                                                solver_type=solver_type, final_sigmas_type="zero")
    theirs = sd15.diffusers_loop(sch, steps)
    out = sd15.run("dpmpp_2m" if order == 2 else "dpmpp_3m", sd15.table_sigmas(sch.timesteps), solver_type=solver_type)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


def test_lms_parity(sd15):
    sch = diffusers.LMSDiscreteScheduler(**sd15.betas, timestep_spacing="leading", steps_offset=1)
    theirs = sd15.diffusers_loop(sch, 12)
    sig = sd15.table_sigmas(sch.timesteps)
    out = samplers.sample("lms", sd15.denoiser, sd15.noise * float(sch.init_noise_sigma), sig, disable=True)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 warns inside diffusers' KDPM2 per call
def test_kdpm2_parity(sd15):
    sch = diffusers.KDPM2DiscreteScheduler(**sd15.betas, timestep_spacing="leading", steps_offset=1)
    theirs = sd15.diffusers_loop(sch, 10)
    sig = sd15.table_sigmas(sch.timesteps[::2])
    out = samplers.sample("dpm_2", sd15.denoiser, sd15.noise * float(sch.init_noise_sigma), sig, disable=True)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)


def _at_scheduler_sigma(sd15, sch):
    """The native eps model of the same data, evaluated at the σ diffusers' update uses for each timestep.

    DPMSolverSinglestep rounds its timesteps but steps with the unrounded sigmas, so a model fed the rounded
    timestep would be evaluated at another noise level than the update assumes; this isolates the update rule.
    """
    lookup = {int(t): float(s) for t, s in zip(sch.timesteps, sch.sigmas)}

    def model(x, t):
        sigma = torch.full((x.shape[0],), lookup[int(t)], dtype=torch.float64)
        view = (-1,) + (1,) * (x.ndim - 1)
        x_ve = x.double() * torch.sqrt(1 + sigma**2).reshape(view)
        return ((x_ve - sd15.gm.denoise(x_ve, sigma)) / sigma.reshape(view)).float()

    return model


@pytest.mark.parametrize("order,solver_type", [(2, "midpoint"), (2, "heun"), (3, "midpoint")])
def test_dpmsolver_singlestep_parity(sd15, order, solver_type):
    """Exponential sigmas put diffusers' inner timesteps at fractions 1/2 (order 2) and 1/3, 2/3 (order 3) in λ."""
    sch = diffusers.DPMSolverSinglestepScheduler(**sd15.betas, algorithm_type="dpmsolver++", solver_order=order,
                                                 solver_type=solver_type, use_exponential_sigmas=True,
                                                 final_sigmas_type="zero", lower_order_final=True)
    sch.set_timesteps(9 if order == 2 else 10)
    theirs = sd15.diffusers_loop(sch, len(sch.timesteps), model=_at_scheduler_sigma(sd15, sch))
    outer = [float(s) for s in sch.sigmas[:-1:order]]
    sig = torch.tensor(outer + [0.0], dtype=torch.float64)
    kw = {"solver_type": solver_type} if order == 2 else {}
    out = sd15.run("dpmpp_2s" if order == 2 else "dpmpp_3s", sig, **kw)
    torch.testing.assert_close(out, theirs, rtol=1e-4, atol=1e-4)

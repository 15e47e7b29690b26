"""The demo's analytic table: every sampler within its NFE budget, counted, not estimated from metadata."""
import math

import samplers
from app.demo import analytic_table
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)


def test_budget_is_counted_calls():
    table = analytic_table(nfes=(10,), problem=GM, batch=4)
    x = GM.noise(4, seed=0) * 80.0
    ref = GM.ode_endpoint(x, 80.0)

    def rmse(name, steps):
        out = samplers.sample(name, GM.denoiser, x, samplers.get_sigmas("karras", steps, sigma_min=0.002, sigma_max=80.0),
                              disable=True)
        return float(((out - ref) ** 2).mean().sqrt())

    # pndm's three Runge-Kutta warm-up steps cost 4 calls each: 3 steps (4 + 4 + 1 to σ = 0) fit 10 calls
    assert math.isclose(table["pndm"][10], rmse("pndm", 3), rel_tol=1e-9)
    assert math.isclose(table["plms"][10], rmse("plms", 9), rel_tol=1e-9)  # its first step costs 2
    assert math.isclose(table["heun"][10], rmse("heun", 5), rel_tol=1e-9)  # 2 per step, 1 on the last
    assert "learned_multistep" not in table and "dpm_adaptive" not in table

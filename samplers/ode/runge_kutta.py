"""One generic explicit Runge-Kutta step on the PF-ODE, and one sampler per Butcher tableau.

The ODE is dx/dσ = (x − D(x, σ))/σ, integrated in σ. Every stage with c_i·h landing on σ = 0 would need
D at σ = 0 divided by 0, so the final step to σ = 0 is an Euler step (x = D(x, σ)), as in ``heun``.
"""
from __future__ import annotations

from ..core.registry import register
from ..core.run import progress, report
from ..core.steps import to_d
from .tableaus import TABLEAUS, Tableau


def rk_step(model, x, sigma: float, sigma_next: float, tableau: Tableau, a: list, b: list, c: list):
    """One step of the explicit method (c, A, b) from σ to σ_next; returns (x_next, D at the first stage)."""
    h = sigma_next - sigma
    ks, first_denoised = [], None
    for i in range(tableau.stages):
        x_i = x
        for a_ij, k_j in zip(a[i], ks):
            if a_ij:
                x_i = x_i + k_j * (a_ij * h)
        sigma_i = sigma + c[i] * h
        denoised = model(x_i, sigma_i)
        first_denoised = denoised if i == 0 else first_denoised
        ks.append(to_d(x_i, sigma_i, denoised))
    x_next = x
    for b_i, k_i in zip(b, ks):
        if b_i:
            x_next = x_next + k_i * (b_i * h)
    return x_next, first_denoised


def make_rk_sampler(tableau: Tableau):
    """The sampler function for one tableau (registered by :func:`_register_all`, usable unregistered in tests)."""
    # Coefficients as Python floats once, so the loop does scalar-tensor arithmetic only.
    a = [[float(v) for v in row] for row in tableau.a]
    b = [float(v) for v in tableau.b]
    c = [float(v) for v in tableau.c]

    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        for i in progress(sigmas, disable):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if sigma_next == 0:
                denoised = model(x, sigma)
                x = denoised  # Euler step to σ = 0
            else:
                x, denoised = rk_step(model, x, sigma, sigma_next, tableau, a, b, c)
            report(callback, x, i, sigma, sigma, denoised)
        return x

    sampler.__name__ = tableau.name
    sampler.__doc__ = f"Explicit Runge-Kutta on the PF-ODE in σ: {tableau.ref} (order {tableau.order}, " \
                      f"{tableau.stages} model calls per step; Euler on the final step to σ = 0)."
    return sampler


def _register_all():
    for tableau in TABLEAUS.values():
        if tableau.name in ("rk_euler", "rk_heun"):
            continue  # identical to `euler` / `heun`; kept as tables for the equivalence tests
        register(tableau.name, kind="ode", order=tableau.order, nfe_per_step=tableau.stages,
                 aliases=tableau.aliases, ref=tableau.ref, final_step="euler")(make_rk_sampler(tableau))


_register_all()

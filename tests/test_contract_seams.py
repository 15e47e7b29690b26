"""The README's contract at the seams a run reaches late: bad input is refused before any model call, or, where only
the run can tell (an adaptive solver's step sizes), with the library's own error naming the value and the fix."""
from __future__ import annotations

import pytest
import torch

import samplers
from samplers.core.errors import StepLimitError


def _flow_model(calls):
    def model(x, sigma, **kw):
        calls.append(1)
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(torch.isinf(s), torch.zeros_like(x), x / (1 + s * s))
    return model


def test_dpm_adaptive_with_an_eta_whose_step_sigma_cannot_resolve_stops_with_the_step_limit_error():
    # from σ = inf on a flow schedule, eta = 1e30 sends σ_down to 0 on every step; the error control shrinks h until
    # σ(s + h) rounds to σ(s), so the ancestral target σ_down is σ itself (t_down == s): step3 divided by h = 0, a raw
    # ZeroDivisionError after 129 model calls. It stops as the loop's other unresolvable steps do, naming eta.
    flow = samplers.RectifiedFlow(shift=3.0)
    sigmas = samplers.get_sigmas("flow", 5, native=flow)
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    calls = []
    with pytest.raises(StepLimitError, match=r"eta = 1e\+30.*lower eta"):
        samplers.sample("dpm_adaptive", _flow_model(calls), x, sigmas, disable=True, seed=1, eta=1e30)
    out = samplers.sample("dpm_adaptive", _flow_model([]), x, sigmas, disable=True, seed=1, eta=2.0)  # still runs
    assert torch.isfinite(out).all()


def _wavy(x, sigma):
    return x / (1 + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2) + 0.1 * torch.sin(x)


def test_gradient_estimation_takes_any_finite_ge_gamma_and_a_run_it_overflows_names_it():
    # ComfyUI's sample_gradient_estimation takes any float (11 and 15 run to finite images); where the extrapolated
    # slope γ·d + (1 − γ)·d_prev overflows the state, the error says such a gain can
    from samplers.core.errors import NonFiniteError

    sigmas = samplers.get_sigmas("karras", 20, sigma_min=0.03, sigma_max=14.6)
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 14.6
    for gamma in (2.0, 11.0, 15.0, -10.0):
        out = samplers.sample("gradient_estimation", _wavy, x, sigmas, disable=True, ge_gamma=gamma)
        assert torch.isfinite(out).all()
    with pytest.raises(NonFiniteError, match=r"gain such as ge_gamma"):
        samplers.sample("gradient_estimation", _wavy, x, sigmas, disable=True, ge_gamma=1e30)

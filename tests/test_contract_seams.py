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

"""Which registry samplers a fitted solver's family holds, and with which weights (:func:`express`).

A deterministic sampler that is linear in the model's outputs is, call by call, a linear recurrence: the
state it calls the model at next is a combination of the states it called the model at before and of what the
model returned. The learned family (:mod:`samplers.fitted.solver`) is every such recurrence that is exact when
the denoiser is constant along the path. So a sampler is read off by running it once on a probe — a "model"
that records where it is called and returns independent random values — and solving, call by call, the
least-squares problem that gives the recurrence's coefficients; a sampler outside the family (not linear in the
model, two calls at one σ, an estimate not at the state) leaves a residual and is not expressed. What comes
back runs the same computation as the sampler, with the σ nodes where it calls the model.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import InvalidInput, SamplersError
from .solver import LearnedSolver


class _Overrun(Exception):
    pass


def express(name: str, sigmas, *, nfe: int | None = None, tol: float = 1e-7, **options) -> LearnedSolver | None:
    """The :class:`LearnedSolver` that computes what ``samplers.sample(name, ..., sigmas, **options)`` computes,
    with nodes at the σ where the sampler calls the model, or None when the sampler is not in the family.

    ``sigmas`` must end in 0 and start finite or at inf (then the sampler's first step is the library's exact
    step from σ = inf, and ``x`` there is the unit noise); with ``nfe``, a sampler that makes another number of
    model calls is None at once, and so is a run that draws noise (η > 0, churn, an SDE: ``draws_noise``), before
    any probe call. The result's ``meta`` records the sampler and its options. An unknown sampler name
    or an option the sampler does not have is an error, not None."""
    import samplers
    from ..core.run import draws_noise
    from ..core.validate import check_options

    spec = samplers.info(name)
    check_options(spec, options)  # an unknown name or option: UnknownNameError / InvalidOption
    if draws_noise(spec, options):
        # noise is not a function of the model's outputs: outside the family, and the probe run would draw it from
        # torch's global generator (samplers leave it alone)
        return None
    try:
        s = [float(v) for v in sigmas]
    except (TypeError, ValueError, RuntimeError):
        s = None
    if s is None or len(s) < 2 or not s[0] > 0 or not all(map(math.isfinite, s[1:])) or s[-1] != 0:
        raise InvalidInput(f"express needs σ values from a positive σ (or inf) to 0, at least two, finite but for the "
                           f"first, got {sigmas!r}; build them with samplers.get_sigmas")
    limit = 4 * len(s) + 8
    width = 2 * limit + 16  # more probe coordinates than unknowns in any row
    g = torch.Generator().manual_seed(20_240_417)
    x0 = samplers.initial_latent(torch.randn(1, width, generator=g, dtype=torch.float64), s)
    values = torch.randn(limit, 1, width, generator=g, dtype=torch.float64)
    inputs, called = [], []

    def probe(x, sigma):
        if len(inputs) == limit:
            raise _Overrun
        inputs.append(x.detach().clone())
        called.append(float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma))
        return values[len(inputs) - 1].expand_as(x)

    try:
        out = samplers.sample(name, probe, x0, torch.tensor(s, dtype=torch.float64), disable=True, **options)
    except (_Overrun, SamplersError, ValueError, TypeError):
        return None
    m = len(called)
    if nfe is not None and m != nfe:
        return None
    nodes = called + [0.0]
    if m == 0 or nodes[0] != s[0] or any(not b < a for a, b in zip(nodes, nodes[1:])):
        return None
    if not torch.equal(inputs[0], x0):
        return None
    states = np.stack([v[0].numpy() for v in inputs] + [out.detach()[0].numpy()], 1)  # [width, m + 1]
    # every state in the coordinates (x_0, D_0, …, D_{m−1}): unique, as the probe's values are independent
    columns = np.stack([x0[0].numpy()] + [values[j, 0].numpy() for j in range(m)], 1)  # [width, m + 1]
    coords = np.linalg.lstsq(columns, states, rcond=None)[0]  # [m + 1 coordinates, m + 1 states]
    if np.abs(columns @ coords - states).max() > tol * max(np.abs(states).max(), 1.0):
        return None  # not linear in what the model returned (or it used a value it was not given)
    for k in range(m + 1):  # state k may only depend on the model's first k outputs
        if np.abs(coords[k + 1:, k]).max(initial=0.0) > tol * max(np.abs(coords[:, k]).max(), 1.0):
            return None
    coords = coords.T  # row k: the coordinates of state k
    unit = np.eye(m + 1)[1:]  # E_j: the coordinates of D_j
    b = [[0.0] * i for i in range(m)]
    c = [[0.0] * i for i in range(m)]
    def eps(j):  # the coordinates of step j's noise estimate ε̂_j (from σ = inf: the unit noise x_0 itself)
        return coords[0] if math.isinf(nodes[j]) else (coords[j] - unit[j]) / nodes[j]

    for i in range(m):
        sigma, sigma_next = nodes[i], nodes[i + 1]
        if math.isinf(sigma):  # the exact step from σ = inf: x_1 = D_0 + σ_1·x_0
            base = unit[0] + coords[0] * sigma_next
        else:
            h, r = sigma_next - sigma, sigma_next / sigma
            base = coords[i] * r + unit[i] * (1 - r)
        if i:  # the weights of the update in samplers.fitted.solver: any that give the same map will do
            eps_i = eps(i)
            cols = [eps(j) * h - eps_i * h for j in range(i)]
            cols += [(unit[j] - unit[i]) * (1 - r) for j in range(i)]
            a = np.stack(cols, 1)
            w = np.linalg.lstsq(a, coords[i + 1] - base, rcond=None)[0]
            base = base + a @ w
            # the solve leaves rounding noise where a weight is 0: a zero costs no op when sampling
            b[i], c[i] = ([float(v) if abs(v) > 1e-12 else 0.0 for v in part] for part in (w[:i], w[i:]))
        if np.abs(base - coords[i + 1]).max() > tol * 10 * max(np.abs(coords[i + 1]).max(), 1.0):
            return None  # linear, but not exact for a constant denoiser: outside the family
    meta = {"sampler": name, "options": dict(options)}
    return LearnedSolver(nodes, b, c, meta).validate()

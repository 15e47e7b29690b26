"""Deterministic samplers: solvers of the probability-flow ODE dx/dσ = (x − D(x, σ))/σ.

- ``basic``: Euler (with EDM churn), Heun, DDIM;
- ``runge_kutta`` + ``tableaus``: explicit Runge–Kutta methods, one per Butcher tableau (data);
- ``multistep``: DPM-Solver++ 2M / 3M, LMS, RES multistep, gradient estimation;
- ``singlestep``: DPM-Solver-2, DPM-Solver++ 2S / 3S, Heun++, DPM-Solver fast / adaptive;
- ``unipc``: UniPC (bh1, bh2); ``adams``: DEIS, iPNDM, PLMS, PNDM (Adams–Bashforth on the noise prediction).

Adding a sampler: one function with the k-diffusion signature, decorated with ``@register(...)`` from
``samplers.core.registry``, in the module of its family (a Runge–Kutta method is one more row in
``tableaus.py``). A new module is listed in ``samplers.core.registry.BUILTIN_MODULES``.
"""

"""Stochastic samplers: ancestral steps and solvers of the reverse SDE, all drawing from ``noise_sampler``.

- ``ancestral``: Euler ancestral, DPM-Solver-2 / DPM-Solver++(2S) ancestral, DDPM, LCM;
- ``dpm_solver_sde``: DPM-Solver++ SDE, 2M SDE, 3M SDE;
- ``solvers``: ER-SDE, SA-Solver (predictor and PECE), SEEDS-2 / 3, Restart.

Adding one: as for ``samplers.ode``, with ``kind="ancestral"`` or ``"sde"`` and keyword options ``eta``,
``s_noise``, ``noise_sampler=None``, ``seed=None`` (the boundary turns ``seed`` into the noise sampler).
"""

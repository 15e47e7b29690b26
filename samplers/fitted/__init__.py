"""Solvers fitted to a model.

- ``solver``: the ``learned_multistep`` sampler, its solver file (which records the model it was fitted to) and
  the ``fitted:PATH`` name that runs one everywhere a sampler name goes;
- ``express``: the registry samplers the family holds, with the weights that reproduce them exactly;
- ``identity``: a model's fingerprint (which model a solver may run on);
- ``fitting``: the fit in five stages (starting point, objective, optimisation, validation, a check on other
  starts) driven by one ``FitConfig``; loaded only when a fit runs. ``samplers fit`` (:mod:`app.fit`) is its command.

To add a fitting method, add a stage function to ``fitting`` that takes the same ``Calibration`` and returns a
:class:`~samplers.fitted.solver.LearnedSolver`; keep the validation stage, which holds the guarantee.
"""

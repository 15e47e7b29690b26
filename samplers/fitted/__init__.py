"""Solvers fitted to a model: the ``learned_multistep`` sampler and its solver file format (``solver``),
and the fitting itself (``fit``, which loads the optimisation code only when used)."""

"""Sampling schedules: pure functions ``(n, sigma_min, sigma_max, **kw) -> Tensor[n + 1]`` ending in 0.

Every schedule returns canonical (VE) sigmas in float64 on the CPU, strictly decreasing, with a trailing 0,
and is registered by name; :func:`get_sigmas` fills the range (and the training table of the timestep
spacings) from a model's native schedule. Operations on schedules (split, flip, truncate, set_first) are
plain functions.

What lives where:
- ``base``: the registry, the shared helpers and :func:`get_sigmas`;
- ``sigma``: formulas in σ (karras, exponential, polyexponential, vp, kl_optimal, laplace, beta_sigmas);
- ``timesteps``: spacings over a discrete model's training table (linspace, leading, trailing, simple, normal,
  sgm_uniform, ddim_uniform, beta_timesteps = ``beta``); ComfyUI's five also over a flow model's table;
- ``flow``: flow-time schedules (flow, flow_dynamic, linear_quadratic);
- ``presets``: published step lists as data (Align Your Steps);
- ``ops``: operations on a schedule; ``optimise``: a schedule fitted to a model (loads scipy when used).

Adding a schedule: write the function in the module of its kind and decorate it with
``@register("name", aliases=(...), needs_table=...)``; a new module is listed in
``samplers.core.registry.BUILTIN_MODULES``.
"""
from .base import SCHEDULES, TABLE_SCHEDULES, available, get, get_sigmas, register  # noqa: F401
from .ops import drop_penultimate, flip, set_first, split, truncate  # noqa: F401
# The schedule functions by name, for direct calls (``samplers.schedules.karras(10, 0.03, 14.6)``), imported in the
# order of samplers.core.registry.BUILTIN_MODULES so that available() lists them in that order.
from .sigma import beta_sigmas, exponential, karras, kl_optimal, laplace, polyexponential, vp  # noqa: F401,E402
from .timesteps import (beta_timesteps, ddim_uniform, leading, linspace, normal, sgm_uniform, simple,  # noqa: F401,E402
                        trailing)
from .flow import flow, flow_dynamic, linear_quadratic  # noqa: F401,E402
from .presets import AYS_PRESETS  # noqa: F401,E402

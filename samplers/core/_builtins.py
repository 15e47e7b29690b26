"""Imports the modules that register the built-in samplers and schedules (:data:`registry.BUILTIN_MODULES`), in
their order, as one module: :func:`registry.load_builtins` imports this, so Python's import lock serialises the
load across threads (another thread waits until every module has registered) and a failed or interrupted load is
recorded for every later lookup to name."""
import importlib

from . import registry

_module = None
try:
    for _module in registry.BUILTIN_MODULES:
        importlib.import_module(_module)
except BaseException as _err:  # KeyboardInterrupt too: the registries are partial either way
    registry._FAILED = f"importing {_module} raised {type(_err).__name__}: {_err}"
    raise
registry._LOADED = True

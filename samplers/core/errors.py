"""The library's errors: one small hierarchy, each a subclass of the built-in type callers already catch.

    SamplersError                      every error raised on purpose by samplers (and models)
    ├── InvalidInput (ValueError)      a value breaks a documented rule: the message names the value, the rule, the fix
    │   ├── InvalidOption              an option a sampler / schedule / scheduler does not accept (lists the valid ones)
    │   ├── UnknownNameError (KeyError) a sampler / schedule / label that is not registered (lists the closest names)
    │   ├── LimitExceeded              a request larger than the machine or a documented cap (names the size)
    │   └── MissingFile (FileNotFoundError)  a file the call names does not exist (names the path and the fix)
    ├── InvalidType (TypeError)        an argument of the wrong type
    ├── NonFiniteError (FloatingPointError)  NaN / Inf in the input, the model's output or the result
    ├── StepLimitError (RuntimeError)  an adaptive or data-dependent loop that would not finish within its cap
    └── Unavailable (RuntimeError)     a feature this installation or device cannot provide
        └── MissingDependency (ImportError)  an optional package is not installed (the message says which extra)

Validation happens once, at the boundary (``samplers.sample`` and every sampler call, ``get_sigmas``, the
native schedules' constructors, ``to_denoiser``, the diffusers shim, the pipeline and the CLIs), before any
model call.
"""
from __future__ import annotations


class SamplersError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidInput(SamplersError, ValueError):
    """A value breaks a documented rule."""


class InvalidOption(InvalidInput):
    """An option (keyword) that the sampler, schedule or scheduler does not have, or a value it cannot honour."""


class UnknownNameError(InvalidInput, KeyError):
    """A name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class LimitExceeded(InvalidInput):
    """A request larger than the memory the device has, or than a documented cap."""


class MissingFile(InvalidInput, FileNotFoundError):
    """A file the call names (a fitted solver, say) does not exist; the message names the path and how to make it.
    Also a FileNotFoundError, which callers caught before it existed."""


class InvalidType(SamplersError, TypeError):
    """An argument of the wrong type."""


class NonFiniteError(SamplersError, FloatingPointError):
    """NaN or Inf in the input latent, the model's output or the sampler's result."""


class StepLimitError(SamplersError, RuntimeError):
    """An adaptive or data-dependent loop reached its step cap without finishing."""


class Unavailable(SamplersError, RuntimeError):
    """A feature this installation or device cannot provide here; the message says what to do instead."""


class MissingDependency(Unavailable, ImportError):
    """An optional dependency is not installed."""


__all__ = ["SamplersError", "InvalidInput", "InvalidOption", "UnknownNameError", "LimitExceeded", "MissingFile", "InvalidType",
           "NonFiniteError", "StepLimitError", "Unavailable", "MissingDependency"]

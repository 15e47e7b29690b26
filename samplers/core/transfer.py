"""Host → device copies inside a run that do not make the host wait for the device.

A copy from ordinary (pageable) host memory to a CUDA device is ``cudaMemcpyAsync`` followed by a stream
synchronisation: the host waits until every kernel queued before it has run, once per copy. Where a run builds
something on the host at each step (a Brownian path drawn on the CPU, a table of model time inputs), it is copied
from pinned memory with ``non_blocking=True`` instead: queued behind the earlier work, the host goes on. The pinned
buffer comes from PyTorch's caching host allocator, which does not hand it out again before the copy has run.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` as ``dtype`` on ``device``, the dtype cast made where ``t`` is (a host tensor's on the host: the same
    rounding on every device). From the host to a CUDA device the copy is queued from pinned memory without a
    synchronisation; otherwise it is ``Tensor.to`` (nothing to do for a tensor already there)."""
    device = torch.device(device)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

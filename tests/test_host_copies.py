"""Copies from the host to the device inside a run are queued from pinned memory, never waited for: a blocking
copy to CUDA synchronises the stream (the host waits for every queued kernel), once per step where a run draws
Brownian noise on the host. This CPU-only machine cannot run CUDA, so the copy itself is checked with pin_memory
and Tensor.to stood in for, and the runs are checked to send every per-draw copy through it."""
from __future__ import annotations

import pytest
import torch

import samplers
from samplers.core import brownian, transfer


def test_a_copy_to_cuda_is_queued_from_pinned_memory(monkeypatch):
    calls = []

    def pin_memory(self):
        calls.append(("pin", self.dtype))
        return self

    def to(self, *args, **kwargs):
        calls.append(("to", args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    transfer.to_device(torch.zeros(3, dtype=torch.float64), torch.device("cuda", 0), torch.float16)
    # the cast on the host first (the same rounding on every device), then pinned, then queued without waiting
    assert calls == [("to", (torch.float16,), {}), ("pin", torch.float64),
                     ("to", (torch.device("cuda", 0),), {"non_blocking": True})]


def test_a_copy_elsewhere_is_tensor_to():
    t = torch.arange(4.0, dtype=torch.float64)
    out = transfer.to_device(t, torch.device("cpu"), torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, t.float())
    assert transfer.to_device(t, "cpu") is t  # nothing to do: no copy


@pytest.mark.parametrize("kind", ["brownian", "brownian_tree"])
def test_every_draw_of_a_host_path_is_copied_through_it(monkeypatch, kind):
    """The host-path kinds ("brownian": BrownianNoise on the host; "brownian_tree": trees on the CPU, as ComfyUI's
    default SDE samplers and A1111's SDE labels draw them) copy each draw to the latents' device through
    transfer.to_device, and nothing else is copied to the device in the loop."""
    copies = []
    real = transfer.to_device

    def spy(t, device, dtype=None):
        copies.append((tuple(t.shape), torch.device(device)))
        return real(t, device, dtype)

    monkeypatch.setattr(brownian, "to_device", spy)
    denoiser = samplers.problems.GaussianMixture.default(shape=(4, 8, 8), components=2, seed=1).denoiser
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14.6
    for steps in (4, 9):
        copies.clear()
        sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.03, sigma_max=14.6)
        samplers.sample("dpmpp_2m_sde", denoiser, x, sigmas, seed=[1, 2], noise_sampler=kind, disable=True)
        assert len(copies) == steps - 1  # one draw a step, none at the last step to σ = 0
        assert all(device == x.device for _, device in copies)

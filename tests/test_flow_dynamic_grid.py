"""Flux's dynamic shifting (``flow_dynamic``, ``flow`` with ``mu=``) on a model's own range is diffusers'
``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)`` grid: linear in flow time from t = 1 to the model's
*unshifted* t_min, then shifted once by e^mu; a model's fixed shift is replaced by e^mu, as diffusers ignores its
config's ``shift`` under dynamic shifting."""
import math

import pytest
import torch

import samplers
from samplers import schedules
from samplers.core.native import RectifiedFlow, flow_t, flux_mu

FLUX = dict(base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def diffusers_dynamic(n: int, mu: float, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift,
                                                    use_dynamic_shifting=True, **FLUX)
    sch.set_timesteps(n, mu=mu)
    return sch.sigmas.double()  # flow times, ending in 0


@pytest.mark.parametrize("seq", [256, 1024, 4096, 6000])
@pytest.mark.parametrize("n", [1, 2, 8, 28])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_dynamic_on_a_model_is_diffusers_dynamic_grid(seq, n, shift):
    # a model's fixed shift (SD3's 3) is replaced by e^mu: diffusers' config shift is not read with dynamic shifting
    ours = samplers.get_sigmas("flow_dynamic", n, native=RectifiedFlow(shift=shift), image_seq_len=seq)
    torch.testing.assert_close(flow_t(ours), diffusers_dynamic(n, flux_mu(seq), shift), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("native", [RectifiedFlow(), RectifiedFlow(shift=3.0), RectifiedFlow.dynamic(0.8)])
@pytest.mark.parametrize("mu", [0.5, 1.15])
def test_flow_mu_on_a_model_is_diffusers_dynamic_grid(native, mu):
    ours = samplers.get_sigmas("flow", 8, native=native, mu=mu)
    torch.testing.assert_close(flow_t(ours), diffusers_dynamic(8, mu), rtol=2e-6, atol=1e-7)
    # the last level is the model's unshifted t_min shifted once: e^mu · 0.001/0.999 in VE σ
    assert float(ours[-2]) == pytest.approx(math.exp(mu) * 1e-3 / (1 - 1e-3), rel=1e-12)


def test_a_model_s_own_t_min_is_kept_under_the_dynamic_shift():
    # ComfyUI's Flux table (10000 entries): t_min 1e-4, which diffusers' 10000-timestep config has too
    native = RectifiedFlow.dynamic(1.15, num_train_timesteps=10000)
    ours = samplers.get_sigmas("flow_dynamic", 6, native=native, image_seq_len=1024)
    torch.testing.assert_close(flow_t(ours), diffusers_dynamic(6, flux_mu(1024), num_train_timesteps=10000),
                               rtol=2e-6, atol=1e-7)


def test_explicit_ends_are_kept_exactly_with_mu():
    # an explicit sigma_min is the (shifted) end the run reaches, with or without a model
    lo = 0.01
    got = samplers.get_sigmas("flow", 5, sigma_min=lo, sigma_max=math.inf, mu=1.0)
    assert float(got[-2]) == pytest.approx(lo, rel=1e-12)
    got = samplers.get_sigmas("flow", 5, native=RectifiedFlow(shift=3.0), sigma_min=lo, mu=1.0)
    assert float(got[-2]) == pytest.approx(lo, rel=1e-12)
    torch.testing.assert_close(got, schedules.flow(5, lo, math.inf, mu=1.0), rtol=0, atol=0)


def test_model_shift_is_the_native_s_not_a_caller_s():
    with pytest.raises(samplers.InvalidOption, match="model_shift.*native="):
        samplers.get_sigmas("flow_dynamic", 4, native=RectifiedFlow(), image_seq_len=4096, model_shift=2.0)

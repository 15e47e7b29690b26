"""Options the run would not read, found by the audit sweep over the registry: a caller's own is refused before any
model call (docs/guide.md), a label's or a tool's own default is left out, and what the run does read still runs."""
import sys

import pytest
import torch

import samplers
from samplers.core.errors import InvalidOption
from samplers.core.steps import get_ancestral_step


def D(x, s):
    return x * 0.64 / (0.64 + s.view(-1, 1) ** 2)


S = samplers.get_sigmas("karras", 6, sigma_min=0.1, sigma_max=10.0)
X = torch.randn(2, 8, generator=torch.Generator().manual_seed(0)) * 10


class Counted:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, s):
        self.calls += 1
        return D(x, s)


def refused(name, match, **options):
    model = Counted()
    with pytest.raises(InvalidOption, match=match):
        samplers.sample(name, model, X, S, disable=True, **options)
    assert model.calls == 0


def run(name, sigmas=S, **options):
    return samplers.sample(name, D, X, sigmas, disable=True, **options)


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sde_interval_refused_at_eta_0(name):
    refused(name, r"sde_interval=\(5\.0, 1\.0\) with eta=0", eta=0.0, sde_interval=(5.0, 1.0))
    # read at eta > 0: the window decides where τ = eta
    assert not torch.equal(run(name, seed=1, eta=0.5), run(name, seed=1, eta=0.5, sde_interval=(5.0, 1.0)))


@pytest.mark.parametrize("name, options, match", [
    ("deis", {"order": 1, "lower_order_final": False}, "lower_order_final=False with order=1"),
    ("unipc_bh1", {"order": 1, "lower_order_final": False}, "lower_order_final=False with order=1"),
    ("unipc_bh2", {"order": 1, "lower_order_final": True}, "lower_order_final=True with order=1"),
    ("ipndm", {"max_order": 1, "variable_steps": True}, "variable_steps=True with max_order=1"),
    ("sa_solver", {"predictor_order": 1, "corrector_order": 0, "lower_order_final": True},
     "lower_order_final=True with predictor_order=1 and corrector_order<=1"),
    ("sa_solver_pece", {"predictor_order": 1, "corrector_order": 1, "lower_order_final": "comfyui"},
     "lower_order_final='comfyui' with predictor_order=1"),
    ("tcd", {"eta": 0.0, "native": samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)},
     "native=.* with eta=0"),
])
def test_unread_at_order_1_refused(name, options, match):
    refused(name, match, **options)


@pytest.mark.parametrize("name, low, key, value", [
    ("deis", {"order": 3}, "lower_order_final", False),
    ("unipc_bh1", {"order": 3}, "lower_order_final", False),
    ("ipndm", {"max_order": 2}, "variable_steps", True),
    ("sa_solver", {"predictor_order": 3, "corrector_order": 0, "seed": 1}, "lower_order_final", True),
    ("tcd", {"eta": 0.3, "seed": 1}, "native", samplers.VPDiscrete.from_betas("linear", 1000, 0.0001, 0.02)),
])
def test_read_at_higher_orders(name, low, key, value):
    """Each refused option is read at a higher order (or γ > 0): the refusal is not of a value that does something."""
    assert not torch.equal(run(name, **low), run(name, **low, **{key: value}))


def test_deis_mode_is_read_at_order_1():
    """DEIS-tAB's first-order step is Euler in σ, σ_next − σ; ρAB's is exp(log σ_next) − exp(log σ): the same number up
    to rounding, which float64 latents show (ComfyUI's bits), so mode is not refused at order 1."""
    sigmas = samplers.get_sigmas("karras", 20, sigma_min=0.03, sigma_max=14.6)
    x = X.double()
    a = samplers.sample("deis", D, x, sigmas, disable=True, order=1)
    b = samplers.sample("deis", D, x, sigmas, disable=True, order=1, mode="tab")
    assert not torch.equal(a, b)


def test_noise_at_zero_down_refused_below_eta_1():
    refused("euler_ancestral", "noise_at_zero_down=False with eta=0.5", eta=0.5, noise_at_zero_down=False)
    refused("euler_ancestral", "noise_at_zero_down=True with eta=0", eta=0.0, noise_at_zero_down=True)
    # the ComfyUI label sets it; with a caller's η below 1 it is left out, not refused
    assert torch.equal(run("comfyui:euler_ancestral", seed=1, eta=0.5),
                       run("euler_ancestral", seed=1, eta=0.5, noise_sampler="comfyui"))


def test_noise_at_zero_down_read_at_eta_1_on_a_long_step():
    """At η = 1 rounding makes σ_down 0 (σ_up = σ_next) on a step with σ_next/σ below ~2e-8: the option is read there,
    so it is not refused at η = 1."""
    assert get_ancestral_step(1e6, 1e-3, 1.0) == (0.0, 1e-3)
    sigmas = torch.tensor([1e6, 1e-3, 0.0], dtype=torch.float64)
    assert not torch.equal(run("euler_ancestral", sigmas, seed=1), run("euler_ancestral", sigmas, seed=1,
                                                                         noise_at_zero_down=False))
    # below 1 by a few ulps no step can: the rule's margin
    eta = 1 - 4 * sys.float_info.epsilon
    assert all(get_ancestral_step(s, s * r, eta)[0] > 0 for s in (1e-3, 1.0, 1e6) for r in (1e-20, 1e-9, 0.5))


def test_disable_corrector_listed_twice_refused():
    refused("unipc_bh1", r"disable_corrector lists 1 more than once", disable_corrector=[1, 1])


def test_restart_entry_k_times_0_refused():
    refused("restart", "k_times = 0", restart=[(2, 0, 0.5, 2.0)])
    refused("restart", "k_times = 0", restart=[(2, 1, 0.5, 2.0), (2, 0, 0.2, 1.0)])


# ----------------------------------------------------------------------------------------------------
# The tools' own settings at these orders keep running: they are left out where unread, as a label's are


@pytest.mark.parametrize("label, options", [
    ("comfyui:ipndm_v", {"max_order": 1}),          # sets variable_steps=True
    ("comfyui:deis", {"order": 1}),                 # sets lower_order_final=False (and mode="tab", read at order 1)
    ("comfyui:sa_solver", {"predictor_order": 1, "corrector_order": 1, "seed": 1}),  # lower_order_final="comfyui"
    ("comfyui:euler_ancestral", {"eta": 0.0}),      # noise_at_zero_down=False
])
def test_labels_at_order_1_run(label, options):
    assert torch.isfinite(run(label, **options)).all()


def test_comfyui_sa_solver_at_eta_0_runs():
    """ComfyUI's node passes its SDE window whatever its eta: at eta=0 the drop-in leaves the window out."""
    from samplers.interop.comfyui import ksampler_function

    fn = ksampler_function("comfyui:sa_solver", eta=0.0)
    out = fn(lambda x, s, **extra: D(x, s), X, S, extra_args={"seed": 1}, disable=True)
    assert torch.equal(out, run("sa_solver", eta=0.0, lower_order_final="comfyui", seed=1))


diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("name, variant", [
    ("UniPCMultistepScheduler", {"solver_order": 1}),        # lower_order_final=True in its config
    ("DEISMultistepScheduler", {"solver_order": 1}),
    ("SASolverScheduler", {"predictor_order": 1, "corrector_order": 1}),
    ("TCDScheduler", {}),                                  # the pipeline's eta=0: no table read
])
def test_diffusers_configs_at_order_1_run_as_the_class(name, variant):
    from benchmarks.compatibility import SD15, TinyModel, run as loop, source_scheduler
    from conftest import shim_latents
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    model, (noise, image, mask) = TinyModel(), shim_latents()
    theirs = loop(source_scheduler(name, SD15, variant), model, "txt2img", noise, image, mask, steps=5)
    ours = loop(SamplerScheduler.from_config(source_scheduler(name, SD15, variant).config), model, "txt2img", noise,
                image, mask, steps=5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, key", [("learned_multistep", "solver"), ("tcd", "native")])
def test_a_wrong_type_is_named_by_its_value(name, key):
    from samplers.core.errors import InvalidType

    with pytest.raises(InvalidType, match=r"got nan \(float\)"):
        samplers.sample(name, D, X, S, disable=True, **{key: float("nan")})

"""Defects a fitted-solver audit found: a guidance wrapper's scale the fingerprint did not read (an nn.Module
wrapper, a numpy or 0-d tensor scale); fit() taking a model record its denoiser contradicts and a σ range of bools or
strings; the ComfyUI adapter refusing a flow-fitted solver on its own flow model (float32 flow times, the x0 view);
express probing a noise-drawing sampler on torch's global RNG; the diffusers shim's reading of a config's grid with a
fitted solver (pinned as documented); model_sigmas far from their nodes."""
import math

import numpy as np
import pytest
import torch

import samplers
from samplers.fitted import identity
from samplers.fitted.solver import LearnedSolver, OtherModelError
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2))
SIG = samplers.get_sigmas("karras", 4, sigma_min=0.02, sigma_max=80.0)


class Cond(torch.nn.Module):
    """A conditional network: the mixture's denoiser plus a learned bias per condition."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.0, 0.3]))

    def forward(self, x, sigma, cond=0):
        return GM.denoiser(x, sigma) + self.w[cond]


def _guided(x, sigma, inner, scale):
    u, c = inner(x, sigma, cond=0), inner(x, sigma, cond=1)
    return u + (c - u) * float(scale)


class ModuleCFG(torch.nn.Module):
    """The guidance wrapper as an nn.Module holding its network (k-diffusion's CFGDenoiser shape) and a scale."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner_model, self.scale = inner, scale

    def forward(self, x, sigma, **kw):
        return _guided(x, sigma, self.inner_model, self.scale)


class PlainCFG:
    def __init__(self, inner, scale, attr="scale"):
        self.inner_model = inner
        setattr(self, attr, scale)

    def __call__(self, x, sigma, **kw):
        return _guided(x, sigma, self.inner_model, getattr(self, "scale", None) or self.guidance_scale)


def test_a_module_wrapper_at_another_guidance_scale_is_refused(tmp_path):
    net = Cond()
    solver = LearnedSolver.from_sampler("dpmpp_2m", SIG)
    solver.model = {"fingerprint": identity.fingerprint(ModuleCFG(net, 4.0)), "name": "net at cfg 4", "prediction": None}
    path = solver.save(tmp_path / "cfg4.json")
    x = samplers.initial_latent(GM.noise(1, seed=0), SIG)
    samplers.sample(f"fitted:{path}", ModuleCFG(net, 4.0), x, SIG, disable=True)  # its own model runs
    with pytest.raises(OtherModelError, match="another guidance scale"):
        samplers.sample(f"fitted:{path}", ModuleCFG(net, 7.5), x, SIG, disable=True)


@pytest.mark.parametrize("make", [float, np.float32, np.float64, torch.tensor, lambda v: torch.tensor(v).double(),
                                  lambda v: np.array(v)])
@pytest.mark.parametrize("wrapper", [ModuleCFG, PlainCFG, lambda n, s: PlainCFG(n, s, "guidance_scale")])
def test_any_real_scalar_scale_is_covered(make, wrapper):
    net = Cond()
    at4, at75, at1 = (identity.fingerprint(wrapper(net, make(v))) for v in (4.0, 7.5, 1.0))
    assert at4 != at75 and identity.is_fingerprint(at4)
    # the same scale however it is held: one fingerprint (a float 4.0, numpy's, a 0-d tensor's)
    assert at4 == identity.fingerprint(wrapper(net, 4.0))
    assert at1 == identity.fingerprint(wrapper(net, 1.0))  # 1: no guidance, the wrapped network itself


def test_a_module_scale_that_is_no_guidance_leaves_a_network_alone():
    # a network with a plain scale attribute (an attention's 1/√d) but nothing it wraps: its weights alone
    net = torch.nn.Linear(2, 2)
    before = identity.fingerprint(net)
    net.scale = 0.125
    assert identity.fingerprint(net) == before == identity.module_fingerprint(net)


def test_a_scale_that_is_not_a_number_gives_no_fingerprint():
    # a wrapper whose guidance cannot be read is not claimed to be its network: no fingerprint (refused by a solver
    # that records one, unless allow_other_model)
    assert identity.fingerprint(PlainCFG(Cond(), "strong")) is None
    assert identity.fingerprint(ModuleCFG(Cond(), [4.0, 7.5])) is None


# ------------------------------------------------------------------ fit(): its arguments checked before any call

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType  # noqa: E402
from samplers.core.native import VPDiscrete  # noqa: E402
from samplers.fitted.fitting import fit  # noqa: E402

VP = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)


class Untouchable:
    """A denoiser that says its prediction (through the wrapper) and must not be called."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x, sigma, **kw):
        raise AssertionError("the fit called the model before refusing its arguments")


EPS = Untouchable(samplers.to_denoiser(GM.as_model("eps", VP), "eps", VP))


def test_fit_refuses_a_model_record_whose_prediction_the_denoiser_contradicts():
    with pytest.raises(InvalidInput, match=r"prediction 'v'.*denoiser.*'eps'"):
        fit(EPS, 3, GM.noise(8, seed=0), 0.03, 14.6, model={"prediction": "v"})


@pytest.mark.parametrize("sigma_min, sigma_max, error, match", [
    (True, 14.6, InvalidType, r"sigma_min must be a real number.*True"),
    ("0.02", 14.6, InvalidType, r"sigma_min must be a real number.*'0.02'"),
    (0.03, "80", InvalidType, r"sigma_max must be a real number.*'80'"),
    (0.03, False, InvalidType, r"sigma_max must be a real number.*False"),
    (float("nan"), 14.6, InvalidOption, r"sigma_min must be a finite number"),
    (0.0, 14.6, InvalidOption, r"sigma_min must be > 0"),
    (0.03, float("inf"), InvalidOption, r"sigma_max must be a finite number"),
    (1.0, 0.5, InvalidInput, r"sigma_min < sigma_max"),
])
def test_fit_refuses_a_sigma_range_that_is_not_two_numbers(sigma_min, sigma_max, error, match):
    with pytest.raises(error, match=match):
        fit(EPS, 3, GM.noise(8, seed=0), sigma_min, sigma_max)


# ------------------------------------------------------------------ ComfyUI: a flow-fitted solver on a flow model

from samplers.core.native import RectifiedFlow  # noqa: E402
from samplers.interop.comfyui import FlowModel, flow_times, ksampler_function  # noqa: E402

FLOW = RectifiedFlow(shift=3.0, multiplier=1000.0)
FLOW_DENOISER = samplers.to_denoiser(GM.as_model("flow", FLOW), "flow", FLOW)


@pytest.fixture(scope="module", params=[80.0, float("inf")], ids=["from-80", "from-inf"])
def flow_fitted(request, tmp_path_factory):
    top = request.param
    sigmas = torch.tensor([top, 6.0, 1.1, 0.2, 0.0], dtype=torch.float64)
    solver = LearnedSolver.from_sampler("dpmpp_2m" if math.isfinite(top) else "euler", sigmas)
    solver.model = {"fingerprint": identity.fingerprint(FLOW_DENOISER), "name": "gm flow", "prediction": "flow"}
    return solver.save(tmp_path_factory.mktemp("flow") / "nfe4.json"), sigmas


@pytest.mark.parametrize("coordinates", ["flow", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_flow_fitted_solver_runs_through_the_comfyui_adapter(flow_fitted, coordinates, dtype):
    path, sigmas = flow_fitted
    x = samplers.initial_latent(GM.noise(2, seed=0), sigmas)
    want = samplers.sample(f"fitted:{path}", FLOW_DENOISER, x, sigmas, disable=True)
    t = torch.tensor(flow_times(sigmas), dtype=dtype)  # ComfyUI's SIGMAS on a flow model: flow times, float32
    x_t = x if math.isinf(sigmas[0]) else x / (1 + sigmas[0])
    fn = ksampler_function(f"fitted:{path}", coordinates=coordinates)
    got = fn(FlowModel(FLOW_DENOISER, shift=3.0), x_t, t, extra_args={})
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max())


def test_the_comfyui_adapter_still_refuses_other_nodes_and_another_prediction(flow_fitted, tmp_path):
    path, sigmas = flow_fitted
    x_t = GM.noise(1, seed=0)
    t = torch.tensor(flow_times(sigmas), dtype=torch.float32)
    fn = ksampler_function(f"fitted:{path}", coordinates="flow")
    moved = t.clone()
    moved[2] = torch.nextafter(moved[2], torch.tensor(0.0))  # one float32 step off a node: another schedule
    with pytest.raises(InvalidInput, match="runs on its own 4 σ nodes"):
        fn(FlowModel(FLOW_DENOISER, shift=3.0), x_t, moved, extra_args={})
    solver = LearnedSolver.load(path)
    solver.model = {**solver.model, "prediction": "v"}  # fitted to a v model: not this flow model
    other = solver.save(tmp_path / "v.json")
    with pytest.raises(OtherModelError, match="prediction is 'flow'"):
        ksampler_function(f"fitted:{other}", coordinates="flow")(FlowModel(FLOW_DENOISER, shift=3.0), x_t, t,
                                                                   extra_args={})


# ------------------------------------------------------------------ express: torch's global RNG left alone

def test_expressing_any_registry_sampler_leaves_torchs_global_rng_alone():
    from samplers.core.registry import SAMPLERS
    from samplers.fitted.express import express

    moved = []
    for name in sorted(SAMPLERS.names()):
        state = torch.get_rng_state().clone()
        try:
            express(name, SIG)
        except samplers.SamplersError:
            pass
        if not torch.equal(state, torch.get_rng_state()):
            moved.append(name)
    assert moved == []


@pytest.mark.parametrize("name, options", [("euler_ancestral", {}), ("dpmpp_2m_sde", {}), ("euler", {"s_churn": 1.0})])
def test_a_sampler_that_draws_noise_is_refused_as_such(name, options):
    state = torch.get_rng_state().clone()
    with pytest.raises(InvalidInput, match="draws noise"):
        LearnedSolver.from_sampler(name, SIG, **options)
    assert torch.equal(state, torch.get_rng_state())


def test_an_ancestral_sampler_at_eta_0_is_expressed_as_euler():
    ancestral = LearnedSolver.from_sampler("euler_ancestral", SIG, eta=0.0)
    assert ancestral.same_steps(LearnedSolver.from_sampler("euler", SIG))


# ------------------------------------------------------------------ diffusers shim: a fitted solver's own nodes

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SHIPPED = "docs/benchmarks/fitted/eps/nfe4.json"


@pytest.mark.parametrize("grid", [{}, {"use_karras_sigmas": True}, {"timestep_spacing": "trailing"},
                                  {"final_sigmas_type": "sigma_min"}, {"steps_offset": 1}])
def test_the_shim_runs_a_fitted_solver_on_its_nodes_whatever_the_configs_grid_settings(grid):
    # a pipeline's own scheduler config always carries grid settings; the solver's nodes are its schedule (documented
    # in docs/diffusers.md and docs/fitted.md), the config's model (its σ table) is what is read
    diffusers = pytest.importorskip("diffusers")
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    solver = LearnedSolver.load(SHIPPED)
    for cls in (diffusers.EulerDiscreteScheduler, diffusers.DPMSolverMultistepScheduler):
        shim = SamplerScheduler.from_config(cls(**SD, **grid).config, sampler=f"fitted:{SHIPPED}",
                                            sampler_options={"allow_other_model": True})
        shim.set_timesteps(solver.steps)
        # the σ the UNet is called at: the solver's model_sigmas (the shipped fits tell it other σ than the nodes)
        assert shim.sigmas.tolist() == torch.tensor(solver.model_sigmas + [0.0], dtype=torch.float32).tolist()


def test_the_shim_refuses_a_fitted_solver_whose_nodes_leave_the_configs_table():
    diffusers = pytest.importorskip("diffusers")
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    small = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.003, beta_schedule="scaled_linear")
    with pytest.raises(InvalidOption, match="outside this config's σ range"):
        SamplerScheduler.from_config(small.config, sampler=f"fitted:{SHIPPED}",
                                     sampler_options={"allow_other_model": True})


# ------------------------------------------------------------------ model_sigmas bounded relative to their nodes

from samplers.fitted.fitting import model_sigma  # noqa: E402
from samplers.fitted.solver import MODEL_SIGMA_RATIO  # noqa: E402


@pytest.mark.parametrize("scale", [1e-300 / 14.6, 1 / (MODEL_SIGMA_RATIO * 1.01), MODEL_SIGMA_RATIO * 1.01, 1e6])
def test_a_model_sigma_far_from_its_node_is_refused(scale):
    solver = LearnedSolver.from_sampler("dpmpp_2m", [14.6, 5.0, 1.5, 0.4, 0.0])
    solver.model_sigmas = [v * scale for v in solver.sigmas[:-1]]
    with pytest.raises(InvalidInput, match=r"model_sigmas\[0\].*times its node"):
        solver.validate()


def test_the_committed_fits_lie_well_inside_the_bound_and_a_fit_stays_inside_it():
    import glob
    import json

    ratios = []
    for path in glob.glob("docs/benchmarks/**/*.json", recursive=True):
        data = json.loads(open(path).read())
        if isinstance(data, dict) and data.get("model_sigmas"):
            LearnedSolver.load(path)  # each still loads
            ratios += [m / s for m, s in zip(data["model_sigmas"], data["sigmas"]) if math.isfinite(s)]
    assert len(ratios) > 100 and 1 / 5 < min(ratios) and max(ratios) < 5  # measured: 0.406 to 4.48
    # the fit's log-shift is held to the same bound, so a fit never writes a file its own check refuses
    assert model_sigma(2.0, torch.tensor(50.0), None) == pytest.approx(2.0 * MODEL_SIGMA_RATIO)
    assert model_sigma(2.0, -50.0 * torch.ones(()), None) == pytest.approx(2.0 / MODEL_SIGMA_RATIO)
    assert float(model_sigma(2.0, torch.tensor(0.5), None)) == 2.0 * math.exp(0.5)

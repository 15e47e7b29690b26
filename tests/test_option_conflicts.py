"""An option the run would not read is refused, before any model call, naming the value, the rule and the fix ("no
option is dropped; refuse, don't guess"): options that others make unread (dpmpp_2s's r with step_r and its
solver_type with only first-order steps, sa_solver's eta / sde_interval with tau_func and simple_order_2 at orders 1,
er_sde's quadrature at max_stage=1), a restart entry or a pndm midpoint the schedule leaves no place for,
torchdiffeq's interp on the schedule's own grid, and in the ComfyUI adapter an option given at build and call time
with different values, or a seed that would replace ComfyUI's."""

import pytest
import torch

import samplers
from samplers.interop import comfyui
from samplers.problems import GaussianMixture
from samplers.sde.solvers import SA_SDE_INTERVAL, restart_extra_nfe
from test_comfyui import fake_comfy  # noqa: F401  (the stand-in comfy.samplers module, a fixture)

GM = GaussianMixture.default(shape=(3, 4, 4), components=3, seed=6)
SIG = samplers.schedules.karras(8, 0.05, 10.0)  # 10 … 0.05, 0


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, x, sigma, **kw):
        self.n += 1
        return GM.denoiser(x, sigma)


def x0(sigmas=SIG):
    return GM.noise(2, seed=0).double() * float(sigmas[0])


def refused(name, match, sigmas=SIG, error=samplers.InvalidOption, **kw):
    model = Counter()
    with pytest.raises(error, match=match):
        samplers.sample(name, model, x0(sigmas), sigmas, disable=True, **kw)
    assert model.n == 0, f"{name} called the model {model.n} times before refusing"


def runs(name, sigmas=SIG, **kw):
    return samplers.sample(name, GM.denoiser, x0(sigmas), sigmas, disable=True, **kw)


# --- 1. dpmpp_2s: r is not read where step_r gives each step its own --------------------------------------------

@pytest.mark.parametrize("step_r", [[0.4] * 8, [None] * 8, [0.4, None] * 4])
def test_dpmpp_2s_refuses_r_with_step_r(step_r):
    refused("dpmpp_2s", r"dpmpp_2s: r=0\.3 with step_r given: .*r is never read; put the r you want into step_r",
            step_r=step_r, r=0.3)
    refused("dpmpp_2s", r"r=0\.5 with step_r given", step_r=step_r, r=0.5)  # the default value, passed: not read


def test_dpmpp_2s_r_or_step_r_alone_runs():
    a, b = runs("dpmpp_2s", r=0.3), runs("dpmpp_2s", step_r=[0.3] * 8)
    assert torch.equal(a, b)
    assert torch.equal(runs("dpmpp_2s", r=0.3, step_r=None), a)  # None: step_r's default, r read on every step


def test_dpmpp_2s_refuses_solver_type_where_every_step_is_first_order():
    refused("dpmpp_2s", r"dpmpp_2s: solver_type='heun' with every step_r None: .*never read; leave solver_type out",
            step_r=[None] * 8, solver_type="heun")
    assert not torch.equal(runs("dpmpp_2s", step_r=[0.4, None] * 4, solver_type="heun"),
                           runs("dpmpp_2s", step_r=[0.4, None] * 4))  # one second-order step reads it


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_solver_refuses_simple_order_2_where_no_step_has_order_2(name):
    refused(name, rf"{name}: simple_order_2=True with predictor_order=1 and corrector_order<=1: .*never read",
            seed=0, predictor_order=1, corrector_order=1, simple_order_2=True)
    assert not torch.equal(runs(name, seed=0, predictor_order=2, corrector_order=1, simple_order_2=True),
                           runs(name, seed=0, predictor_order=2, corrector_order=1))


@pytest.mark.parametrize("config, steps, strength", [
    ({"_class_name": "DPMSolverSinglestepScheduler", "solver_order": 2}, 10, 0.1),  # a late start: first-order only
    ({"_class_name": "DPMSolverSinglestepScheduler", "solver_order": 2}, 1, 1.0),
    ({"_class_name": "SASolverScheduler", "predictor_order": 1, "corrector_order": 1}, 6, 1.0),
])
def test_the_diffusers_shim_passes_only_options_its_run_reads(config, steps, strength):
    """The shim's own calls: DPMSolverSinglestep's first-order-only runs without solver_type, SASolver of orders 1
    without simple_order_2 (both were passed, unread, so their refusal had to wait for this)."""
    from diffusers import schedulers as ds

    from samplers.interop.diffusers_scheduler import SamplerScheduler

    real = getattr(ds, config["_class_name"]).from_config(config)
    shim = SamplerScheduler.from_config(real)
    for scheduler in (real, shim):
        scheduler.set_timesteps(steps)
    begin = len(shim.timesteps) - max(1, int(len(shim.timesteps) * strength))
    shim.set_begin_index(begin)
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in shim.timesteps[begin:]:
        latents = shim.step(0.1 * latents, t, latents, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.isfinite(latents).all()


# --- 2. sa_solver: eta and sde_interval are not read where tau_func gives τ ---------------------------------------

@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
@pytest.mark.parametrize("option,value", [("eta", 0.2), ("eta", 1.0), ("sde_interval", (2.0, 1.0))])
def test_sa_solver_refuses_eta_or_interval_with_tau_func(name, option, value):
    refused(name, rf"{name}: {option}=.* with tau_func given: τ is tau_func\(sigma, sigma_next\).*never read; make "
            "tau_func return the τ you want", seed=0, tau_func=lambda s, t: 0.7, **{option: value})


def test_sa_solver_tau_func_alone_and_eta_alone_run():
    hi, lo = SA_SDE_INTERVAL
    with_tau = runs("sa_solver", seed=0, tau_func=lambda s, t: 0.7 if hi >= t >= lo else 0.0)
    with_eta = runs("sa_solver", seed=0, eta=0.7)
    assert torch.equal(with_tau, with_eta)


# --- 3. er_sde: stage 1 takes no integral ---------------------------------------------------------------------

@pytest.mark.parametrize("quadrature", ["riemann", "gauss_legendre"])
def test_er_sde_refuses_quadrature_at_max_stage_1(quadrature):
    refused("er_sde", rf"er_sde: quadrature='{quadrature}' with max_stage=1: only stages 2 and 3 .* never read; leave "
            "quadrature out, or pass max_stage=2 or 3", seed=0, max_stage=1, quadrature=quadrature)


def test_a_labels_own_option_that_max_stage_1_leaves_unread_is_left_out_not_refused():
    """ComfyUI's er_sde sets quadrature; its node allows max_stage=1, which does not read it: nobody passed it, so
    the run is er_sde at max_stage=1 (it was refused as if the caller had passed quadrature)."""
    model = Counter()
    label = samplers.sample("comfyui:er_sde", model, x0(), SIG, disable=True, seed=0, max_stage=1)
    assert model.n > 0 and torch.equal(label, runs("er_sde", seed=0, max_stage=1, noise_sampler="comfyui"))
    refused("comfyui:er_sde", r"quadrature='riemann' with max_stage=1", seed=0, max_stage=1, quadrature="riemann")
    a, b = runs("er_sde", seed=0, max_stage=2, quadrature="riemann"), runs("er_sde", seed=0, max_stage=2)
    assert not torch.equal(a, b)  # read from stage 2 on


# --- 4. restart: a caller's entry that would never run ---------------------------------------------------------

def test_restart_refuses_an_entry_whose_sigma_max_is_not_above_its_point():
    refused("restart", r"restart entry \(4, 1, 0\.1, 0\.12\): sigma_min = 0\.1 restarts at the schedule point nearest "
            r"to it, σ_6 = 0\.142738, which is not below sigma_max = 0\.12.*give a sigma_max above 0\.142738",
            seed=0, restart=((4, 1, 0.1, 0.12),))
    refused("restart", r"\(4, 3, 0\.1, 0\.13\)", seed=0, restart=((2, 1, 0.5, 2.0), (4, 3, 0.1, 0.13)))
    with pytest.raises(samplers.InvalidOption, match=r"σ_6 = 0\.142738"):
        restart_extra_nfe(SIG, ((4, 1, 0.1, 0.12),))
    # on a schedule without a σ > 0 after its first there is nowhere to restart
    refused("restart", r"has no σ > 0 after its first \(10, 0\)", sigmas=torch.tensor([10.0, 0.0]), seed=0,
            restart=((4, 1, 0.1, 2.0),))
    runs("restart", seed=0, restart=((4, 1, 0.1, 0.2),))  # σ_6 = 0.14 < 0.2: runs


def test_restart_default_and_a1111_lists_keep_their_rule():
    # the default entry (not the caller's) is left out where the schedule cannot take it (its σ_max 2 is not above
    # the point nearest its σ_min 0.1, here σ = 3): the run is Heun, as restart=() is
    coarse = torch.tensor([20.0, 10.0, 5.0, 3.0, 0.0], dtype=torch.float64)
    assert torch.equal(runs("restart", sigmas=coarse, seed=0), runs("restart", sigmas=coarse, seed=0, restart=()))
    assert restart_extra_nfe(coarse) == 0
    # A1111's automatic list (m, k) = (9, 1) at 24 steps, on a schedule rebuilt with 24 − 9 steps: where every σ > 0
    # is above 4 its restart point and its σ_max are the same point, and A1111 skips it (max_idx == min_idx); so
    # does restart="a1111", without a refusal: Heun on the rebuilt schedule, 2·15 − 1 calls
    high = torch.cat([samplers.schedules.karras(24, 5.0, 50.0)[:-1], torch.zeros(1, dtype=torch.float64)])
    model = Counter()
    samplers.sample("a1111:Restart", model, x0(high), high, disable=True, seed=0)
    assert model.n == 2 * 15 - 1


# --- 5. pndm: one midpoint for each pseudo Runge-Kutta step that ends above 0 ----------------------------------

def test_pndm_refuses_midpoints_beyond_the_warm_up():
    refused("pndm", r"midpoints = \[7\.0, 4\.0, 2\.0, 1\.0, 0\.5\]: 5 given, but this run of 8 steps has 3 pseudo "
            r"Runge–Kutta steps .*PLMS steps, which take none; give exactly 3", midpoints=[7.0, 4.0, 2.0, 1.0, 0.5])
    refused("pndm", r"2 given", midpoints=[7.0, 4.0])


def test_pndm_refuses_a_midpoint_for_the_denoise_step():
    short = torch.tensor([10.0, 3.0, 0.0], dtype=torch.float64)
    refused("pndm", r"midpoints = \[5\.0, 123\.0\]: 2 given, but this run of 2 steps has 1 pseudo Runge–Kutta step "
            r"that takes one \(10 → 3\); the warm-up step 3 → 0 is the denoise", sigmas=short, midpoints=[5.0, 123.0])
    refused("pndm", r"midpoints\[0\] = 11 is not inside 10 → 3", sigmas=short, midpoints=[11.0])
    assert torch.equal(runs("pndm", sigmas=short, midpoints=[30 ** 0.5]), runs("pndm", sigmas=short))


# --- 6. torchdiffeq: interp only where a grid other than the schedule's is interpolated ---------------------------

@pytest.mark.parametrize("method", ["euler", "rk4", "explicit_adams"])
@pytest.mark.parametrize("interp", ["cubic", "linear"])
def test_torchdiffeq_refuses_interp_on_the_schedules_grid(method, interp):
    refused(f"torchdiffeq.{method}", rf"options\['interp'\]='{interp}' without 'step_size' or 'grid_constructor' does "
            r"nothing: the schedule's points are then the solver's grid.*give step_size", options={"interp": interp})


def test_torchdiffeq_interp_with_step_size_sets_the_callbacks_x():
    xs = {}
    out = {}
    for interp in ("linear", "cubic"):
        seen = []
        out[interp] = runs("torchdiffeq.euler", options={"step_size": 0.5, "interp": interp},
                           callback=lambda d: seen.append(d["x"].clone()))
        xs[interp] = seen
    assert torch.equal(out["linear"], out["cubic"])  # the result is a grid point, not interpolated
    assert not torch.equal(xs["linear"][3], xs["cubic"][3])


# --- 7, 8. ComfyUI: build-time vs call-time options, and ComfyUI's seed ------------------------------------------

def model_k(counter):
    def model(x, sigma, denoise_mask=None, model_options={}, seed=None):  # ComfyUI's model_k signature
        counter.n += 1
        return GM.denoiser(x, sigma)
    return model


def comfy_call(fn, extra_args, **extra_options):
    counter = Counter()
    out = fn(model_k(counter), x0(), SIG, extra_args=extra_args, callback=None, disable=True, **extra_options)
    return out, counter


EA = {"seed": 42, "model_options": {}, "denoise_mask": None}


def test_comfyui_refuses_a_call_time_option_that_contradicts_the_built_one():
    for name, built, called in (("euler_ancestral", {"eta": 0.5}, {"eta": 0.2}),
                                ("dpmpp_2m_sde", {"solver_type": "heun"}, {"solver_type": "midpoint"})):
        key = next(iter(built))
        counter = Counter()
        with pytest.raises(samplers.InvalidOption, match=rf"{key}={called[key]!r} is given at call time \(KSAMPLER's "
                           rf"extra_options\), but the sampler was built with {key}={built[key]!r}.*give {key} in one "
                           "place, or the same value in both"):
            comfyui.ksampler_function(name, **built)(model_k(counter), x0(), SIG, extra_args=dict(EA), disable=True,
                                                     **called)
        assert counter.n == 0
    same, _ = comfy_call(comfyui.ksampler_function("euler_ancestral", eta=0.5), dict(EA), eta=0.5)
    built, _ = comfy_call(comfyui.ksampler_function("euler_ancestral", eta=0.5), dict(EA))
    called, _ = comfy_call(comfyui.ksampler_function("euler_ancestral"), dict(EA), eta=0.5)
    assert torch.equal(same, built) and torch.equal(same, called)


def test_comfyui_refuses_a_seed_option_that_would_replace_comfyuis_seed():
    fn = comfyui.ksampler_function("euler_ancestral", seed=5)
    counter = Counter()
    with pytest.raises(samplers.InvalidOption, match=r"seed=5 is given as a sampler option, but ComfyUI passes "
                       r"extra_args\['seed'\] = 42 \(the sampling node's noise_seed\).*set the sampling node's "
                       "noise_seed"):
        fn(model_k(counter), x0(), SIG, extra_args=dict(EA), disable=True)
    assert counter.n == 0
    with pytest.raises(samplers.InvalidOption, match=r"seed=5 is given as a sampler option"):
        comfy_call(comfyui.ksampler_function("euler_ancestral"), dict(EA), seed=5)
    # the same seed is ComfyUI's; without one in extra_args (a call from Python) the option seeds the run
    same, _ = comfy_call(comfyui.ksampler_function("euler_ancestral", seed=42), dict(EA))
    comfys, _ = comfy_call(comfyui.ksampler_function("euler_ancestral"), dict(EA))
    assert torch.equal(same, comfys)
    own, _ = comfy_call(fn, {"model_options": {}})
    assert torch.equal(own, runs("euler_ancestral", seed=5))


@pytest.mark.usefixtures("fake_comfy")
def test_the_node_refuses_seed_in_its_options():
    classes, _ = comfyui.node_class_mappings()
    node = classes["DiffusionSamplersRegistrySampler"]()
    with pytest.raises(samplers.InvalidOption, match=r"options \{\"seed\": 5\}: in ComfyUI the sampler's noise is "
                       r"seeded by the sampling node's noise_seed.*set noise_seed there"):
        node.get_sampler("euler_ancestral", '{"seed": 5, "eta": 0.5}')
    (sampler,) = node.get_sampler("euler_ancestral", '{"eta": 0.5}')
    out, _ = comfy_call(sampler.sampler_function, dict(EA))
    assert torch.equal(out, runs("euler_ancestral", seed=42, eta=0.5))


# --- from σ = inf: the first step is the run's, the rest's checks come before it -----------------------------------

@pytest.mark.parametrize("name, options, words", [
    ("pndm", {"midpoints": [5.0, 2.0, 0.5, 0.2, 0.1, 0.05]}, "6 given"),
    ("unipc_bh2", {"disable_corrector": [99]}, "names step 99"),
    ("dpmpp_2s", {"step_r": [0.5]}, "one value in"),
    ("restart", {"restart": ((4, 1, 0.14, 0.145),)}, "0.15"),  # its point is 0.15, above its sigma_max
])
def test_a_run_from_infinity_refuses_before_its_first_model_call(name, options, words):
    """From σ = inf the run takes the first step itself (a model call), then hands the sampler the finite rest,
    whose own checks came after that call; they run first now, on a probe that stops at its first call."""
    import math

    from samplers.core.native import RectifiedFlow

    flow = RectifiedFlow(multiplier=1.0)
    calls = []

    def model(x, sigma, **kw):
        calls.append(1)
        return GM.as_model("x0", flow)(x, sigma, **kw)

    denoiser = samplers.to_denoiser(model, "x0", flow)
    sigmas = torch.tensor([math.inf, 9.0, 3.0, 1.0, 0.15, 0.1, 0.0], dtype=torch.float64)
    with pytest.raises(samplers.InvalidInput, match=words):
        samplers.sample(name, denoiser, GM.noise(2, seed=0).double(), sigmas, disable=True, **options)
    assert calls == []


@pytest.mark.usefixtures("fake_comfy")
def test_the_nodes_unknown_option_message_lists_what_the_node_takes():
    # the sampler's option list named seed, which the node refuses (its noise_seed seeds the run)
    node = comfyui.node_class_mappings()[0]["DiffusionSamplersRegistrySampler"]()
    with pytest.raises(samplers.InvalidOption, match=r"has no option 'etaa' \(did you mean 'eta'\?\); the node's "
                       r"options for it are: eta, s_noise, noise_at_zero_down, noise_sampler \(its noise is seeded") as e:
        node.get_sampler("euler_ancestral", '{"etaa": 0.5}')
    assert "seed," not in str(e.value) and not str(e.value).split("(its")[0].rstrip().endswith("seed")

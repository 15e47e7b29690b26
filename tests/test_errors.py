"""Bad input gets a clear error that names the problem and the fix."""
import math
import re

import pytest
import torch

import samplers
from samplers.cli import main as cli_main
from samplers.core.native import RectifiedFlow, VPDiscrete
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3)
SIG = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
X = GM.noise(2, seed=0, dtype=torch.float32) * 10


def test_unknown_sampler_lists_close_matches():
    with pytest.raises(samplers.UnknownNameError) as err:
        samplers.get("eulr_ancestral")
    assert "euler_ancestral" in str(err.value) and "Closest" in str(err.value)
    with pytest.raises(KeyError, match="heun"):
        samplers.info("haun")


def test_an_unknown_schedule_names_the_call_that_lists_schedules():
    with pytest.raises(samplers.UnknownNameError, match=r"Closest: karras\. See samplers\.schedules\.available\(\)"):
        samplers.get_sigmas("karas", 4, sigma_min=0.1, sigma_max=10.0)


def test_aliases_users_type():
    assert samplers.info("Euler a").name == "euler_ancestral"
    assert samplers.info("k_euler").name == "euler"
    assert samplers.info("EULER-ANCESTRAL").name == "euler_ancestral"
    assert samplers.info("3/8").name == "rk38"


@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([]), "at least 2 values"),
    (torch.tensor([5.0]), "at least 2 values"),
    (torch.tensor([1.0, 2.0, 0.0]), "strictly decreasing"),
    (torch.tensor([2.0, 2.0, 0.0]), "strictly decreasing"),
    (torch.tensor([2.0, float("nan"), 0.0]), "invalid"),
    (torch.tensor([2.0, 1.0, -1.0]), "invalid"),
    (torch.tensor([[2.0, 1.0]]), "1-D"),
])
def test_bad_sigmas(sigmas, message):
    with pytest.raises(ValueError, match=message):
        samplers.sample("euler", GM.denoiser, X, sigmas, disable=True)


def test_model_with_wrong_output_shape():
    with pytest.raises(ValueError, match=r"returned \(2, 8\) for an input of shape \(2, 2, 2, 2\)"):
        samplers.sample("euler", lambda x, s: x.reshape(2, -1), X, SIG, disable=True)


def test_model_returning_nan_is_caught_after_the_loop_and_in_debug_mode_at_the_call():
    calls = []

    def bad(x, sigma):
        calls.append(1)
        return torch.full_like(x, float("nan"))

    with pytest.raises(samplers.NonFiniteError, match="samplers.debug"):
        samplers.sample("euler", bad, X, SIG, disable=True)
    assert len(calls) == 4  # the default loop runs through and checks once, without per-step syncs
    calls.clear()
    with samplers.debug(), pytest.raises(samplers.NonFiniteError, match="sigma = 10"):
        samplers.sample("euler", bad, X, SIG, disable=True)
    assert len(calls) == 1


def test_eps_model_cannot_start_at_infinite_sigma():
    zs = VPDiscrete.from_betas(rescale_betas_zero_snr=True)
    D = samplers.to_denoiser(GM.as_model("eps", zs), "eps", zs)
    sig = samplers.get_sigmas("trailing", 5, native=zs)
    assert math.isinf(float(sig[0]))
    with pytest.raises(ValueError, match="cannot be evaluated at sigma = inf"):
        samplers.sample("euler", D, X, sig, disable=True)
    # the fix the message names works
    out = samplers.sample("euler", D, X * 200, samplers.schedules.set_first(sig, 200.0), disable=True)
    assert bool(torch.isfinite(out).all())


def test_bad_options_and_arguments():
    with pytest.raises(samplers.InvalidOption, match="no option 'etaa' \\(did you mean 'eta'\\?\\); its options are: eta, "):
        samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, etaa=1.0)
    with pytest.raises(ValueError, match="either noise_sampler or seed"):
        samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, seed=1,
                        noise_sampler=lambda s, t: torch.zeros_like(X))
    with pytest.raises(ValueError, match="3 seeds for a batch of 2"):
        samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, seed=[1, 2, 3])
    with pytest.raises(TypeError, match="floating-point tensor"):
        samplers.sample("euler", GM.denoiser, X.long(), SIG, disable=True)
    with pytest.raises(TypeError, match="callable denoiser"):
        samplers.sample("euler", None, X, SIG, disable=True)


def test_cli_list_prints_every_sampler(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in samplers.available():
        assert name in out
    assert f"{len(samplers.available())} samplers" in out


@pytest.mark.parametrize("argv, message", [
    (["generate", "a red circle", "--seed", "3", "0", "3"], "--seed lists 3 more than once"),
    (["compare", "a red circle", "--samplers", "euler", "heun", "euler"], "--samplers lists 'euler' more than once"),
    (["compare", "a red circle", "--steps", "4", "8", "4"], "--steps lists 4 more than once"),
    (["generate", "a red circle", "--sampler", "dpmpp_2m", "--allow-other-model"],
     "--allow-other-model applies to a fitted solver"),
    (["compare", "a red circle", "--n", "0"], r"--n \(images per cell, for the match rate\) must be at least 1, got 0"),
])
def test_cli_refuses_a_repeated_or_empty_list_before_loading_a_model(argv, message, tmp_path, capsys, monkeypatch):
    from models import pipeline

    monkeypatch.setattr(pipeline.Pipeline, "load", lambda *a, **k: pytest.fail("loaded a model for a bad command"))
    assert cli_main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_compare_grid_refuses_a_repeated_sampler_or_step_count():
    from app.images import compare_grid

    with pytest.raises(samplers.InvalidOption, match="sampler_names lists 'dpmpp_2m' more than once"):
        compare_grid(None, ["a red circle"], ["dpmpp_2m", "euler", "dpmpp_2m"], [4])
    with pytest.raises(samplers.InvalidOption, match="steps_list lists 5 more than once"):
        compare_grid(None, ["a red circle"], ["euler"], [5, 5])


@pytest.mark.parametrize("name, option", [("euler_ancestral", "eta"), ("euler_ancestral", "s_noise"),
                                          ("euler", "s_churn"), ("euler", "s_tmax"), ("dpmpp_2m_sde", "eta")])
def test_none_is_not_a_value_of_an_option_whose_default_is_a_value(name, option):
    calls = []

    def model(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)

    seed = {"seed": 0} if samplers.info(name).stochastic else {}
    with pytest.raises(samplers.InvalidOption, match=f"{option}=None is not a value of {option} .*leave {option} out"):
        samplers.sample(name, model, X, SIG, disable=True, **{option: None}, **seed)
    assert not calls


def test_flow_model_from_t1_accepts_the_noise_itself():
    flow = RectifiedFlow()
    D = samplers.to_denoiser(GM.as_model("flow", flow), "flow", flow)
    sig = samplers.get_sigmas("flow", 4, native=flow)
    noise = GM.noise(2, seed=1)
    assert samplers.initial_latent(noise, sig) is noise
    assert torch.equal(samplers.initial_latent(noise, SIG), noise * float(SIG[0]))
    assert bool(torch.isfinite(samplers.sample("heun", D, noise, sig, disable=True)).all())


def test_registry_remove_drops_the_name_and_its_aliases():
    from samplers.core import registry

    @registry.register("zz_removable", kind="ode", order=1, nfe_per_step=1, aliases=("ZZ Removable",))
    def removable(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    assert samplers.info("zz removable").name == "zz_removable"
    spec = registry.SAMPLERS.remove("ZZ Removable")  # by alias
    assert spec.name == "zz_removable" and "zz_removable" not in samplers.available()
    for name in ("zz_removable", "ZZ Removable"):
        with pytest.raises(samplers.UnknownNameError):
            samplers.get(name)


@pytest.mark.parametrize("name, options, error, message", [
    ("lms", {"final_denoise": "False"}, samplers.InvalidType, "final_denoise must be True or False"),
    ("dpmpp_2m", {"euler_at_final": "abc"}, samplers.InvalidType, "euler_at_final must be True or False"),
    ("ipndm", {"variable_steps": 2.5}, samplers.InvalidType, "variable_steps must be True or False"),
    ("dpm_adaptive", {"accept_safety": 1.5}, samplers.InvalidOption, "accept_safety must be <= 1"),
    ("dpm_adaptive", {"icoeff": -0.5}, samplers.InvalidOption, "icoeff must be >= 0"),
    ("dpm_adaptive", {"info": "x"}, samplers.InvalidType, "info must be a dict"),
    ("sa_solver", {"tau_func": 3}, samplers.InvalidType, "tau_func must be a function"),
    ("er_sde", {"noise_scaler": "x"}, samplers.InvalidType, "noise_scaler must be a function"),
    ("sa_solver", {"sde_interval": (0.5, 5.0)}, samplers.InvalidOption, "sigma_hi .first. must be above"),
    ("sa_solver", {"sde_interval": (math.nan, 0.5)}, samplers.InvalidOption, r"sde_interval\[0\] must be a finite"),
    ("lms", {"prior_sigmas": "95"}, samplers.InvalidType, "prior_sigmas must be a list of numbers"),
    ("unipc_bh1", {"disable_corrector": [True]}, samplers.InvalidType, r"disable_corrector\[0\] must be an integer"),
    ("dpmpp_2s", {"step_r": 0.5}, samplers.InvalidType, "step_r must be a list"),
    ("pndm", {"midpoints": "12"}, samplers.InvalidType, "midpoints must be a list of numbers"),
    ("euler_ancestral_rf", {"eta": 3.0}, samplers.InvalidOption, "eta must be <= 1"),
    ("restart", {"restart": ((10**9, 1, 0.1, 2.0),)}, samplers.LimitExceeded, "n_steps = 1000000000 is more than"),
    ("restart", {"restart": ((4.9, 1, 0.1, 2.0),)}, samplers.InvalidType, "n_steps must be an integer, got 4.9"),
    ("restart", {"restart": ((50, 200, 0.1, 2.0),)}, samplers.LimitExceeded, "adds 20000 model calls"),
])
def test_options_without_a_rule_before_are_checked_before_any_model_call(name, options, error, message):
    """Each of these was coerced (a string taken as True), ignored, hung, or failed after model calls."""
    calls = []

    def model(x, sigma):
        calls.append(1)
        return GM.denoiser(x, sigma)

    seed = {"seed": 0} if samplers.info(name).stochastic else {}
    with pytest.raises(error, match=message):
        samplers.sample(name, model, X, SIG, disable=True, **options, **seed)
    assert not calls


@pytest.mark.parametrize("sigmas, message", [
    ([True, False], "sigmas must hold real numbers, got True"), (["2", "1", "0"], "got '2'"),
    ("210", "got '210'"), ({2.0: 1, 0.0: 1}, "got {2.0"),
])
def test_sigmas_that_only_look_like_numbers_are_refused(sigmas, message):
    with pytest.raises(samplers.InvalidType, match=message):
        samplers.sample("euler", GM.denoiser, X, sigmas, disable=True)
    for fine in ([10.0, 1.0, 0.0], (10, 1, 0), [torch.tensor(10.0), torch.tensor(0.0)]):
        assert samplers.sample("euler", GM.denoiser, X, fine, disable=True).shape == X.shape


def test_range_and_calibration_errors_name_the_value_and_the_fix():
    from samplers.fitted.fitting import fit

    with pytest.raises(samplers.InvalidInput, match="other way round"):
        samplers.get_sigmas("karras", 5, sigma_min=14.6, sigma_max=0.03)
    with pytest.raises(samplers.InvalidInput, match="appends the final 0"):
        samplers.get_sigmas("karras", 5, sigma_min=0.0, sigma_max=14.6)
    gm = GaussianMixture.default(shape=(4,), components=2, seed=0)
    with pytest.raises(samplers.InvalidInput, match=r"got a torch.int64 tensor of shape \(8, 4\).*torch.randn"):
        fit(gm.denoiser, 4, torch.zeros(8, 4, dtype=torch.int64), 0.05, 10.0)
    with pytest.raises(samplers.InvalidInput, match=r"one row per calibration start \(8\), got 'cond': shape \(3,\)"):
        fit(gm.denoiser, 4, torch.randn(8, 4), 0.05, 10.0, extra_args={"cond": torch.zeros(3)})


def test_a_result_that_overflows_the_latents_half_dtype_is_refused():
    """The state is float32 and was checked before the cast to the latents' dtype: a run that ends at σ = 30000 on
    float16 latents came back as inf without an error. The cast result is checked where the dtype narrows."""
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    sigmas = [math.inf, 30000.0]
    with pytest.raises(samplers.NonFiniteError, match=r"overflows torch\.float16.*end the schedule at a lower "
                                                      r"sigma.*x\.float\(\)"):
        samplers.sample("euler", lambda x, s: torch.zeros_like(x), x, sigmas, disable=True)
    out = samplers.sample("euler", lambda x, s: torch.zeros_like(x), x.float(), sigmas, disable=True)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    out = samplers.sample("euler", lambda x, s: torch.zeros_like(x), x.bfloat16(), sigmas, disable=True)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())  # float32's range


def test_a_graphed_result_that_overflows_the_latents_half_dtype_is_refused():
    from samplers.core import graph
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    run = graph.capture("euler", lambda x, s: torch.zeros_like(x), x, [math.inf, 30000.0], fallback="eager")
    with pytest.raises(samplers.NonFiniteError, match=r"overflows torch\.float16"):
        run(x)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("entry", ["sample", "kdiffusion"])
def test_float8_latents_are_refused_at_the_boundary(dtype, entry):
    """float8 latents passed check_call (floating point) and failed deep inside the run (no float8 arithmetic)."""
    from samplers.interop import kdiffusion as K
    calls = []

    def model(x, sigma):
        calls.append(1)
        return x
    x = torch.randn(2, 3, 4, 4).to(dtype)
    with pytest.raises(samplers.InvalidType, match=rf"{dtype}.*float16, bfloat16, float32 or float64.*x\.float\(\)"):
        if entry == "sample":
            samplers.sample("euler", model, x, SIG, disable=True)
        else:
            K.sample_euler(model, x, torch.as_tensor(SIG, dtype=torch.float32), disable=True)
    assert calls == []

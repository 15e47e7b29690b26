"""torchdiffeq's solvers by name: orders on the schedule's grid, identities with ours, adaptive accuracy, NFE."""
import math
import warnings

import pytest
import torch

import samplers
from samplers.problems import GaussianMixture
from samplers.interop.torchdiffeq_adapter import ADAPTIVE, FIXED

MIX = GaussianMixture(means=[[0.7, -0.3, 0.2, 1.1], [-0.5, 0.4, 0.9, -0.2]], stds=[0.6, 0.8], weights=[0.4, 0.6])
X = MIX.noise(16, seed=0) * 10.0
REF = MIX.ode_endpoint(X, 10.0, 0.1, rtol=1e-13, atol=1e-13)


def grid(n):
    return torch.logspace(1, -1, n + 1, dtype=torch.float64)


def error(name, n, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit Adams warns when its corrector iteration stops early
        out = samplers.sample(name, MIX.denoiser, X, grid(n), disable=True, **kw)
    return float((out - REF).abs().max())


def test_every_torchdiffeq_method_is_registered():
    from torchdiffeq._impl.odeint import SOLVERS
    names = {n for n in samplers.available() if n.startswith("torchdiffeq.")}
    assert names == {f"torchdiffeq.{m}" for m in SOLVERS if m != "scipy_solver"}


@pytest.mark.parametrize("method", list(FIXED))
def test_fixed_grid_convergence_order(method):
    name = f"torchdiffeq.{method}"
    order = samplers.info(name).order
    slope = math.log2(error(name, 32) / error(name, 64))
    assert abs(slope - order) < 0.3, f"{name}: observed {slope:.2f}, stated {order}"


def test_identities_with_our_samplers():
    for theirs, ours in (("torchdiffeq.euler", "euler"), ("torchdiffeq.rk4", "rk38"), ("torchdiffeq.midpoint", "midpoint")):
        a = samplers.sample(theirs, MIX.denoiser, X, grid(8), disable=True)
        b = samplers.sample(ours, MIX.denoiser, X, grid(8), disable=True)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", list(ADAPTIVE))
def test_adaptive_methods_reach_the_exact_endpoint(method):
    tight, loose = {}, {}
    err = error(f"torchdiffeq.{method}", 3, rtol=1e-7, atol=1e-7, info=tight)
    assert err < 1e-4
    error(f"torchdiffeq.{method}", 3, rtol=1e-3, atol=1e-3, info=loose)
    assert 0 < loose["nfe"] < tight["nfe"]


def test_schedule_ending_in_zero_finishes_with_one_denoise():
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    info, seen = {}, []
    out = samplers.sample("torchdiffeq.heun3", MIX.denoiser, X, sig, disable=True, info=info,
                          callback=lambda d: seen.append(d["i"]))
    assert info["nfe"] == 5 * 3 + 1 and seen == list(range(6))
    before = samplers.sample("torchdiffeq.heun3", MIX.denoiser, X, sig[:-1], disable=True)
    torch.testing.assert_close(out, MIX.denoiser(before, torch.full((16,), float(sig[-2]), dtype=torch.float64)))


@pytest.mark.parametrize("method", ["rk4", "heun2", "dopri5"])
def test_callback_denoised_is_the_model_at_the_reported_sigma(method):
    seen = []
    sig = grid(6)
    samplers.sample(f"torchdiffeq.{method}", MIX.denoiser, X, sig, disable=True, callback=seen.append)
    states = [X] + [d["x"] for d in seen]
    for d, x in zip(seen, states):
        want = MIX.denoiser(x, torch.full((X.shape[0],), d["sigma"], dtype=torch.float64))
        # fixed grid: the step's own call; dopri5: its first-same-as-last call where an accepted step ends on σ
        torch.testing.assert_close(d["denoised"], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", list(FIXED))
def test_fixed_grid_methods_are_batch_invariant(method):
    sig = samplers.get_sigmas("karras", 6, sigma_min=0.05, sigma_max=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = samplers.sample(f"torchdiffeq.{method}", MIX.denoiser, X, sig, disable=True)
        part = samplers.sample(f"torchdiffeq.{method}", MIX.denoiser, X[:3], sig, disable=True)
    torch.testing.assert_close(full[:3], part, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", list(FIXED))
def test_fixed_grid_model_calls_are_as_declared(method):
    info, n = {}, 12
    sig = samplers.get_sigmas("karras", n, sigma_min=0.05, sigma_max=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samplers.sample(f"torchdiffeq.{method}", MIX.denoiser, X, sig, disable=True, info=info)
    per = samplers.info(f"torchdiffeq.{method}").nfe_per_step
    if "adams" not in method:
        assert info["nfe"] == per * (n - 1) + 1  # + the final denoise
    elif method == "explicit_adams":
        assert info["nfe"] == 2 * 4 + (n - 3) + 1  # two rk4 warm-up steps
    else:
        assert 2 * 4 + (n - 3) * 2 + 1 <= info["nfe"] <= 2 * 4 + (n - 3) * per + 1


def counting_model():
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return MIX.denoiser(x, sigma)
    return model, calls


@pytest.mark.parametrize("name, options, error, match", [
    ("torchdiffeq.euler", {"bogus_option": 1}, samplers.InvalidOption, "options= takes are: step_size"),
    ("torchdiffeq.dopri5", {"safty": 0.8}, samplers.InvalidOption, "did you mean 'safety'"),
    ("torchdiffeq.euler", {"norm": abs}, samplers.InvalidOption, "options has no key 'norm'"),
    ("torchdiffeq.explicit_adams", {"max_iters": 2}, samplers.InvalidOption, "options has no key 'max_iters'"),
    ("torchdiffeq.dopri5", {"max_num_steps": "many"}, samplers.InvalidOption, "integer in \\[1, 10000\\]"),
    ("torchdiffeq.dopri5", {"max_num_steps": -5}, samplers.InvalidOption, "integer in \\[1, 10000\\]"),
    ("torchdiffeq.dopri5", {"max_num_steps": 10**9}, samplers.InvalidOption, "integer in \\[1, 10000\\]"),
    ("torchdiffeq.dopri5", {"max_num_steps": 50.5}, samplers.InvalidOption, "integer in \\[1, 10000\\]"),
    ("torchdiffeq.dopri5", {"safety": -1.0}, samplers.InvalidOption, "in \\(0, 1\\]"),
    ("torchdiffeq.bosh3", {"ifactor": 0.5}, samplers.InvalidOption, "≥ 1"),
    ("torchdiffeq.bosh3", {"dfactor": 2.0}, samplers.InvalidOption, "in \\(0, 1\\)"),
    # dfactor 1: a rejected step is never shortened, and dopri5 retried until its step cap (60,002 model calls)
    ("torchdiffeq.dopri5", {"dfactor": 1.0}, samplers.InvalidOption, "never shortened"),
    ("torchdiffeq.dopri5", {"step_t": [True]}, samplers.InvalidOption, "bool"),
    ("torchdiffeq.dopri5", {"jump_t": torch.tensor([5.0 + 1j])}, samplers.InvalidOption, "complex"),
    ("torchdiffeq.dopri5", {"step_t": [5.0, 2 + 0j]}, samplers.InvalidOption, "complex"),
    ("torchdiffeq.dopri5", {"rtol": 0.5}, samplers.InvalidOption, "sampler's own argument"),
    ("torchdiffeq.rk4", {"atol": 0.5}, samplers.InvalidOption, "take no tolerance"),
    ("torchdiffeq.dopri5", "fast", samplers.InvalidType, "must be a dict"),
    ("torchdiffeq.euler", {"step_size": 1e-9}, samplers.InvalidOption, "more than the cap"),
    ("torchdiffeq.euler", {"interp": "quadratic"}, samplers.InvalidOption, "'linear' or 'cubic'"),
    ("torchdiffeq.implicit_adams", {"max_order": 20}, samplers.InvalidOption, "integer in \\[4, 12\\]"),
    ("torchdiffeq.euler", {"grid_constructor": lambda f, y, t: t[:1]}, samplers.InvalidOption, "grid_constructor"),
])
def test_bad_options_are_refused_before_any_model_call(name, options, error, match):
    model, calls = counting_model()
    with pytest.raises(error, match=match):
        samplers.sample(name, model, X, grid(4), disable=True, options=options)
    assert calls == []


@pytest.mark.parametrize("name, kw, match", [
    # a misspelt key of options= was worded as an option of the sampler ("torchdiffeq.rk4 has no option 'stepsize'
    # (did you mean 'step_size'?)"), and the step_size= that suggested then was refused without a word of options=
    ("torchdiffeq.rk4", {"options": {"stepsize": 0.01}},
     r"^torchdiffeq\.rk4: options has no key 'stepsize' \(did you mean 'step_size'\?\); the keys torchdiffeq\.rk4's "
     r"options= takes are: step_size, grid_constructor, interp, perturb$"),
    ("torchdiffeq.rk4", {"step_size": 0.01},
     r"^torchdiffeq\.rk4 has no option 'step_size' \(a key of options=, not an option: pass "
     r"options=\{'step_size': 0\.01\}\); its options are: info, options$"),
    ("torchdiffeq.dopri5", {"max_step": 1.0}, r"pass options=\{'max_step': 1\.0\}"),
    ("torchdiffeq.rk4", {"stepsize": 0.01}, r"'stepsize' \(did you mean options=\{'step_size': \.\.\.\}\?\)"),
    ("torchdiffeq.dopri5", {"rtoll": 1e-3}, r"'rtoll' \(did you mean 'rtol'\?\)"),  # its own option first
    ("torchdiffeq.dopri5", {"options": {"rtol": 1e-3}}, r"options has no key 'rtol'; pass it as the sampler's own"),
])
def test_a_key_in_the_wrong_place_is_refused_naming_where_it_belongs(name, kw, match):
    model, calls = counting_model()
    with pytest.raises(samplers.InvalidOption, match=match):
        samplers.sample(name, model, X, grid(4), disable=True, **kw)
    assert calls == []


def test_valid_options_reach_torchdiffeq():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchdiffeq warns on an option it does not read
        tight = {}
        samplers.sample("torchdiffeq.dopri5", MIX.denoiser, X, grid(3), disable=True, info=tight,
                        options={"safety": 0.5, "ifactor": 2.0, "dfactor": 0.5, "step_t": [5.0]})
        assert tight["nfe"] > 0
        with pytest.raises(samplers.StepLimitError):
            samplers.sample("torchdiffeq.dopri5", MIX.denoiser, X, grid(3), disable=True, rtol=1e-9, atol=1e-9,
                            options={"max_num_steps": 2})
        a = samplers.sample("torchdiffeq.euler", MIX.denoiser, X, grid(4), disable=True,
                            options={"grid_constructor": lambda f, y, t: t, "perturb": False})
        b = samplers.sample("torchdiffeq.euler", MIX.denoiser, X, grid(4), disable=True)
        torch.testing.assert_close(a, b)



@pytest.mark.parametrize("options", [{"step_size": 100.0}, {"step_size": 4.5},
                                     {"grid_constructor": lambda f, y, t: t[[0, -1]]}])
def test_callback_denoised_is_a_model_call_where_the_grid_skips_schedule_points(options):
    # the solver's own grid skips schedule points: the callback gets the call nearest in log σ, never the state
    model, calls = counting_model()
    outputs = []

    def recording(x, sigma):
        d = model(x, sigma)
        outputs.append((float(sigma.reshape(-1)[0]) if torch.is_tensor(sigma) else float(sigma), d))
        return d
    sig = torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    seen = []
    samplers.sample("torchdiffeq.euler", recording, X, sig, disable=True, options=options, callback=seen.append)
    outputs.pop()  # the final denoise at σ = 1, made after the integration (and the last callback's denoised)
    assert len(outputs) < 6  # the grid skips schedule points
    for d in seen[:-1]:
        dist = [abs(math.log(s) - math.log(d["sigma"])) for s, _ in outputs]
        near = min(range(len(outputs)), key=lambda n: (dist[n], -n))
        assert d["denoised"] is outputs[near][1], (d["i"], d["sigma"])


@pytest.mark.parametrize("options", [
    {"jump_t": [3.0, 3.0]},
    {"jump_t": [2.0, 3.0], "step_t": [3.0, 3.0, 2.0]},
    {"dtype": torch.float32, "jump_t": [2.0 + 1e-9]},  # = the schedule point 2.0 in float32 only
    {"dtype": torch.float32, "step_t": [3.0], "jump_t": [3.0 + 1e-9]},
    {"dtype": torch.float32, "step_t": [2.0 + 1e-9]},
    {"dtype": torch.float32, "jump_t": [3.0, 3.0 + 1e-9]},
])
def test_repeated_step_and_jump_times_are_merged_in_torchdiffeqs_time_dtype(options):
    # torchdiffeq refuses a time repeated in its time dtype (promote(options['dtype'], state dtype)) with a raw
    # ValueError after model calls; the adapter merges such points in that dtype, as it merges step_t with the schedule
    x = X.float()
    sig = [10.0, 5.0, 2.0, 1.0, 0.5, 0.0]
    out = samplers.sample("torchdiffeq.dopri5", MIX.denoiser, x, sig, disable=True, options=options)
    merged = {k: v if k == "dtype" else sorted({float(torch.tensor(t, dtype=torch.float32)) for t in v})
              for k, v in options.items()}
    if "jump_t" in merged and "step_t" in merged:
        merged["step_t"] = [t for t in merged["step_t"] if t not in merged["jump_t"]] or [5.0]
    same = samplers.sample("torchdiffeq.dopri5", MIX.denoiser, x, sig, disable=True, options=merged)
    torch.testing.assert_close(out, same, rtol=0, atol=0)


@pytest.mark.parametrize("options, match", [
    ({"step_t": [-1.0]}, "σ = -1.0, outside the integrated range \\[0.1, 10.0\\]"),
    ({"step_t": [5.0, 100.0]}, "σ = 100.0, outside"),
    ({"jump_t": [1e6]}, "σ = 1000000.0, outside"),
    ({"jump_t": [-3.0]}, "σ = -3.0, outside"),
    ({"step_t": [0.05]}, "σ = 0.05, outside"),  # below the last non-zero σ: the last step is the denoise
])
def test_step_and_jump_times_outside_the_integrated_range_are_refused(options, match):
    model, calls = counting_model()
    sig = torch.cat([grid(4), torch.zeros(1, dtype=torch.float64)])
    with pytest.raises(samplers.InvalidOption, match=match):
        samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True, options=options)
    assert calls == []


def test_step_times_on_a_schedule_that_integrates_nothing_are_refused_as_such():
    model, calls = counting_model()  # [3, 0]: the one step is the denoise at σ = 3
    with pytest.raises(samplers.InvalidOption, match="integrates nothing \\(its only non-zero σ is 3.0"):
        samplers.sample("torchdiffeq.dopri5", model, X, [3.0, 0.0], disable=True, options={"step_t": [2.0]})
    assert calls == []


def test_a_max_step_that_needs_more_steps_than_the_cap_is_refused_before_any_model_call():
    model, calls = counting_model()
    sig = [10.0, 5.0, 0.0]
    with pytest.raises(samplers.InvalidOption, match="max_step'\\]=1e-06 needs at least 5e\\+06 steps"):
        samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True, options={"max_step": 1e-6})
    with pytest.raises(samplers.InvalidOption, match="more than the cap of 100 steps"):
        samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True,
                        options={"max_step": 0.01, "max_num_steps": 100})
    assert calls == []
    # a max_step that fits the cap runs; one that only just fits but needs more steps (tolerance) names max_step
    samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True, options={"max_step": 1.0})
    with pytest.raises(samplers.StepLimitError, match="options\\['max_step'\\]=0.5 bounds every step"):
        samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True, rtol=1e-12, atol=1e-12,
                        options={"max_step": 0.5, "max_num_steps": 10})


def test_a_step_limit_with_a_dfactor_near_1_names_dfactor():
    model, _ = counting_model()
    with pytest.raises(samplers.StepLimitError, match="options\\['dfactor'\\]=0.99"):
        samplers.sample("torchdiffeq.dopri5", model, X, [10.0, 5.0, 0.0], disable=True, rtol=1e-12, atol=1e-12,
                        options={"dfactor": 0.99, "max_num_steps": 10})


def test_a_step_count_is_shown_with_g_and_one_beyond_a_float_is_refused_not_overflowed():
    model, calls = counting_model()
    sig = [10.0, 5.0, 0.0]
    with pytest.raises(samplers.InvalidOption) as exc:
        samplers.sample("torchdiffeq.dopri5", model, X, sig, disable=True, options={"max_step": 1e-300})
    assert "needs at least 5e+300 steps" in str(exc.value) and len(str(exc.value)) < 400
    for name, key in (("torchdiffeq.dopri5", "max_step"), ("torchdiffeq.euler", "step_size")):
        with pytest.raises(samplers.InvalidOption, match=f"{key}'\\]=5e-324 (needs at least|makes) inf steps"):
            samplers.sample(name, model, X, sig, disable=True, options={key: 5e-324})  # was an OverflowError
    assert calls == []


@pytest.mark.parametrize("dtype, sig, options, key, smallest", [
    (torch.float64, [10.0, 5.0, 1.0, 0.0], {"first_step": 1e-16}, "first_step", "1.78e-15"),
    (torch.float64, [10.0, 5.0, 1.0, 0.0], {"first_step": 1e-18, "min_step": 1e-16}, "first_step", "1.78e-15"),
    (torch.float32, [10.0, 5.0, 1.0, 0.0], {"dtype": torch.float32, "first_step": 1e-7}, "first_step", "9.54e-07"),
    (torch.float32, [10.0, 9.9995, 0.0], {"dtype": torch.float32, "max_step": 1e-7}, "max_step", "9.54e-07"),
])
def test_a_first_step_below_the_resolution_of_time_is_refused_before_any_model_call(dtype, sig, options, key,
                                                                                   smallest):
    """torchdiffeq's time is −σ in promote(options['dtype'], state dtype); a first step that leaves t0 where it was
    stopped the run after one model call with 'the step size fell to 0', blaming the model or the tolerances."""
    model, calls = counting_model()
    x, sig = X[:2].to(dtype), torch.tensor(sig, dtype=dtype)
    with pytest.raises(samplers.InvalidOption, match=f"options\\['{key}'\\]=.* below the resolution") as exc:
        samplers.sample("torchdiffeq.dopri5", model, x, sig, disable=True, options=options)
    assert f"pass {key} >= {smallest}" in str(exc.value) and calls == []
    if key == "first_step":  # the smallest value named runs
        out = samplers.sample("torchdiffeq.dopri5", model, x, sig, disable=True, options={**options, key: float(smallest)})
        assert bool(torch.isfinite(out).all())


def test_a_first_step_that_resolves_in_the_time_dtype_runs():
    # a float32 state integrates in float64 time (options['dtype'] defaults to float64): 1e-7 moves it from -10
    model, calls = counting_model()
    out = samplers.sample("torchdiffeq.dopri5", model, X[:2].float(), torch.tensor([10.0, 5.0, 1.0, 0.0]),
                          disable=True, options={"first_step": 1e-7})
    assert bool(torch.isfinite(out).all()) and len(calls) > 2


def test_the_time_tensor_is_on_the_states_device(monkeypatch):
    # torchdiffeq warns and copies a t that is not on y0's device; a meta state stands in for a GPU one here
    import torchdiffeq
    from samplers.interop import torchdiffeq_adapter

    seen = {}

    class Seen(Exception):
        pass

    def odeint(func, y0, t, **kw):
        seen.update(t=t.device, step_t=kw["options"].get("step_t", t).device)
        raise Seen
    monkeypatch.setattr(torchdiffeq, "odeint", odeint)
    x = torch.empty(2, 3, device="meta")
    for method in ("euler", "dopri5"):
        with pytest.raises(Seen):
            torchdiffeq_adapter._integrate(method, None, x, [10.0, 5.0, 1.0], None, True, {"options": {}}, None)
        assert seen == {"t": x.device, "step_t": x.device}


# ---- docs/guide.md's accuracy table: `python -m tests.test_torchdiffeq_adapter` prints it, a test holds it

TABLE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
TABLE_TOLS = (1e-3, 1e-5, 1e-7)


def accuracy_table() -> str:
    """Max abs error against the exact endpoint (and model calls) of each adaptive method on this module's problem
    and 3-interval grid, at rtol = atol 1e-3, 1e-5, 1e-7."""
    rows = ["| method | rtol = atol 1e-3 | 1e-5 | 1e-7 |", "|---|---|---|---|"]
    for method in TABLE_METHODS:
        cells = []
        for tol in TABLE_TOLS:
            info = {}
            err = error(f"torchdiffeq.{method}", 3, rtol=tol, atol=tol, info=info)
            shown = f"{err:.1e}".replace("e-0", "e-").replace("e+0", "e+")
            calls = " calls" if (method, tol) == (TABLE_METHODS[0], TABLE_TOLS[0]) else ""
            cells.append(f"{shown} ({info['nfe']}{calls})")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_the_accuracy_table_in_the_guide_is_this_modules_output():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    shown = page.split("<!-- torchdiffeq-accuracy: python -m tests.test_torchdiffeq_adapter -->\n", 1)[1]
    shown = shown.split("\n<!-- /torchdiffeq-accuracy -->", 1)[0]
    assert accuracy_table() == shown, "regenerate it: python -m tests.test_torchdiffeq_adapter"


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(accuracy_table())

"""Fitted solvers at the seams an audit of their entry points found open: the diffusers shim against
samplers.sample, the model record, the file's values, the pipeline's identity and the command lines."""
import json
import math
import re

import pytest
import torch

import samplers
from samplers import InvalidInput
from samplers.fitted.solver import LearnedSolver, OtherModelError

NODES = [14.6146, 4.4, 1.7, 0.7, 0.0]
MODEL_SIGMAS = [14.2357, 4.3, 1.6, 0.587]  # what the model is told: not the nodes (the shipped U-Net fits' shape)
DDIM = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
        "timestep_spacing": "leading", "clip_sample": False, "set_alpha_to_one": False}
EULER = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
         "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
ALLOW = {"allow_other_model": True}


def solver_file(folder, fingerprint="ab" * 32, model_sigmas=MODEL_SIGMAS, name="s.json"):
    """A 4-step solver with corrections and its own model σ, recorded as fitted to an eps model."""
    solver = LearnedSolver.from_sampler("euler", NODES)
    solver.eps_weights = [[0.1 * (i + j + 1) for j in range(i)] for i in range(4)]
    solver.denoised_weights = [[-0.05 * (i - j) for j in range(i)] for i in range(4)]
    solver.model_sigmas = list(model_sigmas) if model_sigmas is not None else None
    solver.model = {"fingerprint": fingerprint, "name": "x", "prediction": "eps"}
    return solver.save(folder / name)


def eps_model(x, t):
    """A fake U-Net whose output depends on its time input as well as its input."""
    t = float(torch.as_tensor(t).reshape(-1)[0])
    return torch.sin(x) * (t / 1000.0) + 0.1 * x


def shim_run(scheduler, noise):
    scheduler.set_timesteps(4)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return x


# ------------------------------------------------------------------- 1: the shim reproduces samplers.sample


@pytest.mark.parametrize("config", [DDIM, EULER], ids=["native latents", "VE latents"])
@pytest.mark.parametrize("initial_noise", [None, "sigma"])
def test_the_shim_gives_what_samplers_sample_gives_for_a_solver_with_its_own_model_sigmas(tmp_path, config,
                                                                                         initial_noise):
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    path = solver_file(tmp_path)
    shim = SamplerScheduler.from_config(config, sampler=f"fitted:{path}", sampler_options=ALLOW,
                                        initial_noise=initial_noise)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    got = shim_run(shim, noise)
    ve = config is EULER
    unit = initial_noise is None  # DDIM's own start is x_t = n, Euler's x = √(σ₀² + 1)·n: both at the first node
    start = noise * (math.sqrt(NODES[0] ** 2 + 1) if unit else NODES[0])
    want = samplers.sample(f"fitted:{path}", samplers.to_denoiser(eps_model, "eps", shim.native), start, NODES,
                           allow_other_model=True, disable=True)
    assert (got - want).abs().max().item() < 1e-4 * want.abs().max().item(), (ve, unit)


# --------------------------------------------------------------- 2: a fingerprint the shim can never compare


def test_the_shim_refuses_a_recorded_fingerprint_at_construction_naming_the_fix(tmp_path):
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    path = solver_file(tmp_path)
    with pytest.raises(OtherModelError, match=r"the diffusers scheduler sees the model's outputs, never the model.*"
                                              r"pass sampler_options=\{\"allow_other_model\": True\}"):
        SamplerScheduler.from_config(DDIM, sampler=f"fitted:{path}")
    with pytest.raises(OtherModelError, match=r"prediction is 'v'.*pass sampler_options=\{\"allow_other_model\""):
        SamplerScheduler.from_config({**DDIM, "prediction_type": "v_prediction"}, sampler=f"fitted:{path}")
    SamplerScheduler.from_config(DDIM, sampler=f"fitted:{path}", sampler_options=ALLOW)
    # nothing recorded to compare: runs without the option
    SamplerScheduler.from_config(DDIM, sampler=f"fitted:{solver_file(tmp_path, None, name='n.json')}")


# ------------------------------------------------------------------------ 8: img2img in the shim, by name


def test_the_shim_refuses_a_later_start_of_a_fitted_solver_as_the_pipeline_does(tmp_path):
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    shim = SamplerScheduler.from_config(DDIM, sampler=f"fitted:{solver_file(tmp_path)}", sampler_options=ALLOW)
    shim.set_timesteps(4)
    with pytest.raises(InvalidInput, match=r"runs on all of its own σ nodes, from the top, and set_begin_index\(2\) "
                                           r"\(img2img / inpaint with strength < 1\) would start it lower down; use "
                                           "strength=1"):
        shim.set_begin_index(2)
    shim.set_begin_index(0)


# ------------------------------------------------------- 4, 9: model_sigmas and weights held to bounds on load


def _edited(tmp_path, change, name="e.json"):
    path = solver_file(tmp_path, name="base.json")
    data = json.loads(path.read_text())
    change(data)
    (tmp_path / name).write_text(json.dumps(data))
    return tmp_path / name


def test_model_sigmas_beyond_any_float32_state_and_huge_weights_are_refused_on_load(tmp_path):
    with pytest.raises(InvalidInput, match=r"model_sigmas must hold 4 positive values.*each at most 9.22e\+18"):
        LearnedSolver.load(_edited(tmp_path, lambda d: d["model_sigmas"].__setitem__(2, 1e300)))
    with pytest.raises(InvalidInput, match=r"eps_weights\[1\]\[0\] = 1e\+300 weighs a difference of model outputs "
                                           r"by .* beyond 1e\+06"):
        LearnedSolver.load(_edited(tmp_path, lambda d: d["eps_weights"][1].__setitem__(0, 1e300)))
    # a huge weight on a tiny σ gap is a modest step (the shipped tiny-unet/nfe5.json: 2e15 on a gap of 5e-16)
    LearnedSolver.from_sampler("euler", [14.0, 1.0 + 5e-16, 1.0, 0.0]).validate()


def test_model_sigmas_outside_a_timestep_table_are_refused_before_any_model_call(tmp_path):
    from samplers.core.native import VPDiscrete

    vp = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
    calls = []

    def model(x, t):
        calls.append(t)
        return x * 0

    den = samplers.to_denoiser(model, "eps", vp)
    noise = torch.zeros(1, 4, 8, 8)
    for bad in (20.0, 1000.0, 0.01):
        path = _edited(tmp_path, lambda d: d["model_sigmas"].__setitem__(0 if bad > 1 else 3, bad))
        with pytest.raises(samplers.InvalidOption, match=rf"tells the model σ {re.escape(f'{bad:g}')} \(its model_sigmas\), outside "
                                                         r"this model's σ range \[0.0291672, 14.6146\]"):
            samplers.sample(f"fitted:{path}", den, noise, NODES, allow_other_model=True, disable=True)
    # beyond a factor 100 of its node (5000 at σ 14.6) the file itself is refused, on any model
    far = _edited(tmp_path, lambda d: d["model_sigmas"].__setitem__(0, 5000.0), "far.json")
    with pytest.raises(samplers.InvalidInput, match=r"model_sigmas\[0\] = 5000 is 342 times its node"):
        samplers.sample(f"fitted:{far}", den, noise, NODES, allow_other_model=True, disable=True)
    assert not calls
    # the margin the fits left (the time input clamped while fitting as when run): 6.5 % above in a shipped file
    ok = _edited(tmp_path, lambda d: d["model_sigmas"].__setitem__(0, 15.5588), "ok.json")
    samplers.sample(f"fitted:{ok}", den, noise, NODES, allow_other_model=True, disable=True)


def test_a_fit_keeps_the_sigma_it_tells_the_model_inside_its_table():
    from samplers.fitted.fitting import Params, rollout

    solver = LearnedSolver.load(solver_file_in_memory())
    params = Params.of(solver, solver.sigmas[-2], 1)
    params.shift = params.shift + 1.0  # far above the top at node 0 (e·14.6), far below nothing
    params.model_range = (0.0291672, 14.6146)
    told = params.solver().model_sigmas
    assert told[0] == 14.6146 and all(0.0291672 <= v <= 14.6146 for v in told)
    seen = []

    def den(x, sigma):
        seen.append(float(sigma[0]))
        return x * 0

    rollout(den, torch.zeros(1, 2), params.nodes(), params.b, params.c, params.shift, None, params.model_range)
    assert max(seen) == pytest.approx(14.6146) and len(seen) == 4


def solver_file_in_memory():
    import tempfile
    from pathlib import Path

    return solver_file(Path(tempfile.mkdtemp()))


# ------------------------------------------------------------- 3: a model's identity covers its config's meaning


def test_the_pipelines_identity_covers_its_schedule_and_the_shipped_fits_still_match_it(tmp_path):
    import shutil

    from models.pipeline import Pipeline

    shipped = LearnedSolver.load("docs/benchmarks/fitted/eps/nfe4.json")
    pipe = Pipeline.load(model="eps")
    assert pipe.identity(4.0) == shipped.model["fingerprint"]  # the shipped fits are the shipped U-Net's
    pipe.check_fitted(shipped, 4.0)
    folder = tmp_path / "eps"
    shutil.copytree("models/weights/eps", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "beta_end": 0.02}))
    edited = Pipeline.load(folder)
    assert edited.identity(4.0) != pipe.identity(4.0)  # the same weights on another noise schedule
    with pytest.raises(OtherModelError, match="not to this model"):
        edited.txt2img("a red circle", sampler="fitted:docs/benchmarks/fitted/eps/nfe4.json", cfg=4.0, seed=0,
                       progress=False, output="tensor")
    (folder / "config.json").write_text(json.dumps({**config, "name": "renamed", "extra": {}}))
    assert Pipeline.load(folder).identity(4.0) == pipe.identity(4.0)  # what does not change its function


def test_a_compiled_module_has_the_fingerprint_of_the_module_it_compiles():
    from samplers.fitted.identity import fingerprint

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Linear(3, 2)))
    want = fingerprint(net)
    assert fingerprint(torch.compile(net)) == want
    inner = torch.nn.Sequential(net[0], torch.compile(net[1]))  # a compiled submodule: keys with _orig_mod.
    assert any("_orig_mod" in k for k in inner.state_dict())
    assert fingerprint(inner) == want


# --------------------------------------------------------------------------- 5, 6: samplers fit's boundaries


def test_fit_refuses_an_infinite_time_budget_before_writing_anything(tmp_path, capsys):
    from conftest import cli_last_wins as main
    from test_fit_cli_seams import argv

    out = tmp_path / "fit"
    for bad in ("inf", "nan", "-1"):
        assert main(argv(out, "--time-budget", bad)) == 2
        assert "--time-budget must be a finite number of seconds > 0" in capsys.readouterr().err
    assert not out.exists()


def test_fit_refuses_to_fit_over_a_solver_its_report_does_not_list(tmp_path, capsys):
    from conftest import cli_last_wins as main
    from test_fit_cli_seams import argv

    out = tmp_path / "fit"
    out.mkdir()
    mine = solver_file(out, name="nfe3.json")  # someone's solver, copied in: no report lists it
    before = mine.read_bytes()
    assert main(argv(out)) == 2
    err = capsys.readouterr().err
    assert f"{out / 'report.json'} lists no fit of NFE 3, so it is not this command's to fit over" in err, err
    assert str(mine) in err and "--restart" in err, err
    assert mine.read_bytes() == before
    assert main(argv(out, "--restart")) == 0  # asked to replace it
    assert mine.read_bytes() != before


# ----------------------------------------------------- 7, 9: names on the command line and in the pipeline


def _eps_fit_of_another_model(folder, name="s.json"):
    """A 4-step solver within the eps U-Net's table, recorded as fitted to another eps model."""
    return solver_file(folder, fingerprint="cd" * 32, model_sigmas=None, name=name)


def test_generate_takes_allow_other_model_with_the_name_as_resolved(tmp_path, capsys):
    from samplers.cli import main

    path = _eps_fit_of_another_model(tmp_path)
    for sampler, extra in ((f"FITTED:{path}", []), ("learned_multistep", ["--option", f"solver={path}"])):
        out = tmp_path / f"{len(extra)}.png"
        assert main(["generate", "a red circle", "--sampler", sampler, *extra, "--allow-other-model", "--out",
                     str(out)]) == 0, capsys.readouterr().err
        assert out.exists()
    assert main(["generate", "a red circle", "--sampler", "euler", "--allow-other-model", "--out",
                 str(tmp_path / "e.png")]) == 2
    assert "--allow-other-model applies to a fitted solver" in capsys.readouterr().err


def test_learned_multistep_with_a_solver_option_runs_on_its_nodes_as_fitted_path_does(tmp_path):
    from models.pipeline import Pipeline

    path = _eps_fit_of_another_model(tmp_path)
    pipe = Pipeline.load(model="eps")
    kw = dict(seed=0, progress=False, output="tensor", allow_other_model=True)
    named = pipe.txt2img("a red circle", sampler=f"fitted:{path}", **kw)
    option = pipe.txt2img("a red circle", sampler="learned_multistep", solver=str(path), **kw)
    assert torch.equal(named, option)
    with pytest.raises(InvalidInput, match="runs exactly 4 steps on the σ nodes it was fitted on, but steps=8"):
        pipe.txt2img("a red circle", sampler="learned_multistep", solver=str(path), steps=8, **kw)


def test_compare_refuses_one_solver_named_by_two_paths(tmp_path, monkeypatch):
    from models.pipeline import Pipeline
    from app.images import compare_grid

    _eps_fit_of_another_model(tmp_path)  # writes s.json there
    monkeypatch.chdir(tmp_path)
    pipe = Pipeline.load(model="eps")
    with pytest.raises(InvalidInput, match="'fitted:s.json' and 'fitted:./s.json' run the same sampler"):
        compare_grid(pipe, ["a red circle"], ["fitted:s.json", "fitted:./s.json"], [4],
                     options={"allow_other_model": True})


def test_a_home_folder_in_a_fitted_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = _eps_fit_of_another_model(tmp_path, "home.json")
    assert samplers.core.names.resolve("fitted:~/home.json").options["solver"].same_steps(LearnedSolver.load(path))
    assert LearnedSolver.load("~/home.json").source == str(path)


# ------------------------------------------------- every entry point reads "a solver or its file" the same way


class _PathLike:
    """A path-like that is not a pathlib.Path (os.fspath reads it)."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path


def _entry_points():
    from samplers.fitted.solver import register_solver
    from samplers.interop.comfyui import ksampler_function
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    def sample(solver):
        return samplers.sample("learned_multistep", lambda x, s: x * 0, torch.zeros(1, 2), torch.tensor(NODES),
                               solver=solver, allow_other_model=True)

    def comfy(solver):
        fn = ksampler_function("learned_multistep", solver=solver, allow_other_model=True)
        sig = torch.tensor(NODES, dtype=torch.float64)
        return fn(lambda x, s, **kw: x * 0, torch.zeros(1, 2, dtype=torch.float64), sig, extra_args={})

    def shim(solver):
        return SamplerScheduler.from_config(EULER, sampler="learned_multistep",
                                            sampler_options={"solver": solver, **ALLOW})

    return {"samplers.sample": sample, "register_solver": lambda s: register_solver("entry_point_test", s),
            "comfyui": comfy, "diffusers shim": shim}


@pytest.mark.parametrize("entry", ["samplers.sample", "register_solver", "comfyui", "diffusers shim"])
def test_every_entry_point_reads_a_solver_or_any_path_like_of_its_file_and_refuses_anything_else(tmp_path, entry):
    from samplers import InvalidType

    run = _entry_points()[entry]
    path = solver_file(tmp_path)
    run(_PathLike(path))  # os.PathLike, not only str / pathlib.Path
    with pytest.raises(InvalidType, match=r"must be a samplers.fitted.solver.LearnedSolver, the path of its "
                                          r"file or its record \(LearnedSolver.record\(\)\), got 42 \(int\)"):
        run(42)


def _requesting():
    """What Pipeline.request reads of a pipeline, the run planned on the shipped eps U-Net's config (no weights)."""
    from types import SimpleNamespace as NS

    from models.pipeline import Pipeline, PipelineSpec

    spec = PipelineSpec.read(model="eps")
    stub = NS(defaults=spec.defaults, default_schedule=spec.default_schedule, _plan_run=spec._plan_run,
              guidance=lambda c: 4.0, check_size=lambda h, w: (h, w), _prompts=lambda p: [p],
              config=spec.config, model=NS(weights_sha256="0" * 64), _check_strength=lambda *a: None,
              _cut=lambda sigmas, strength, what: sigmas, _check_run_noise=lambda *a: None)
    stub._recorded_strength = lambda *a: Pipeline._recorded_strength(stub, *a)
    return stub


def test_a_png_records_a_solver_given_as_an_object_by_its_content(tmp_path):
    # the request chunk wrote a LearnedSolver option as its repr ("LearnedSolver(4 steps on σ ...)"): neither its
    # weights nor its nodes, so the image could not be made again from the PNG
    import json

    from models.pipeline import REQUEST_CHUNK, Pipeline, png_info
    from samplers.fitted.solver import LearnedSolver

    solver = LearnedSolver.load(_eps_fit_of_another_model(tmp_path))
    solver.eps_weights[1][0] += 1e-3  # changed in Python: no file holds it
    request = Pipeline.request(_requesting(), "a red circle", sampler="learned_multistep",
                               options={"solver": solver, "allow_other_model": True})
    key, _, text = png_info(request).chunks[-1][1].partition(b"\x00")  # tEXt: key NUL text; the request's last
    assert key == REQUEST_CHUNK.encode()
    recorded = json.loads(text)
    again = LearnedSolver.of(recorded["options"]["solver"])
    assert (again.sigmas, again.eps_weights, again.denoised_weights) == (solver.sigmas, solver.eps_weights,
                                                                       solver.denoised_weights)


@pytest.mark.parametrize("extra", [{}, {"strength": 1.0}])
def test_a_request_reads_a_fitted_solver_once(tmp_path, monkeypatch, extra):
    # Pipeline.request plans the run once, as the run does (it resolved the name, then planned it again, and for a
    # strength a third time: the file read two or three times, and a file changed in between recorded as another)
    from models.pipeline import Pipeline
    from samplers.fitted.solver import LearnedSolver

    path = _eps_fit_of_another_model(tmp_path)
    stub = _requesting()
    reads = []
    load = LearnedSolver.load.__func__
    monkeypatch.setattr(LearnedSolver, "load", classmethod(lambda cls, p: reads.append(p) or load(cls, p)))
    record = Pipeline.request(stub, "a red circle", sampler=f"fitted:{path}",
                              options={"allow_other_model": True}, **extra)
    assert (record["schedule"], record["steps"]) == ("fitted", 4)
    assert len(reads) == 1, reads

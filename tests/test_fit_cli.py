"""A fitted solver by name through every entry point (Pipeline, `samplers generate` / `compare`, the diffusers
shim), and `samplers fit` on the three kinds of model: a module:function problem, the shipped U-Net, a diffusers
UNet folder."""
import json

import pytest
import torch

import samplers
from conftest import cli_last_wins as main  # a base command line's options overridden by repeating them
from samplers.fitted.identity import fingerprint
from samplers.fitted.solver import LearnedSolver, OtherModelError

PROMPT = "a large red circle at the top left"


@pytest.fixture(scope="module")
def pipe():
    from models.pipeline import Pipeline

    return Pipeline.load(model="eps")


@pytest.fixture(scope="module")
def solver_file(pipe, tmp_path_factory):
    """dpmpp_2m on the model's karras grid, as a solver file recording the shipped eps model at its default cfg."""
    solver = LearnedSolver.from_sampler("dpmpp_2m", pipe.sigmas("karras", 4))
    solver.model = {"fingerprint": fingerprint(pipe.denoiser(PROMPT)), "name": "shipped eps", "prediction": "eps"}
    return solver.save(tmp_path_factory.mktemp("fit") / "nfe4.json")


def test_the_pipeline_runs_it_by_name_on_its_own_nodes(pipe, solver_file):
    name = f"fitted:{solver_file}"
    mine = pipe.txt2img(PROMPT, sampler=name, seed=3, output="tensor", progress=False)
    theirs = pipe.txt2img(PROMPT, sampler="dpmpp_2m", schedule="karras", steps=4, seed=3, output="tensor",
                          progress=False)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    pipe.txt2img(PROMPT, sampler=name, steps=4, seed=3, progress=False)  # its own step count may be given
    with pytest.raises(samplers.InvalidInput, match="runs exactly 4 steps"):
        pipe.txt2img(PROMPT, sampler=name, steps=20, seed=3, progress=False)
    with pytest.raises(samplers.InvalidOption, match="own fitted σ nodes"):
        pipe.txt2img(PROMPT, sampler=name, schedule="exponential", seed=3, progress=False)
    # another guidance scale is another denoiser: refused unless allowed
    with pytest.raises(OtherModelError, match="not to this model"):
        pipe.txt2img(PROMPT, sampler=name, cfg=1.5, seed=3, progress=False)
    pipe.txt2img(PROMPT, sampler=name, cfg=1.5, seed=3, progress=False, allow_other_model=True)


def test_generate_and_compare_take_it(solver_file, tmp_path, capsys):
    assert main(["generate", PROMPT, "--sampler", f"fitted:{solver_file}", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").exists()
    assert main(["generate", PROMPT, "--sampler", f"fitted:{solver_file}", "--cfg", "2",
                 "--out", str(tmp_path / "b.png")]) == 2
    assert "fitted to shipped eps" in capsys.readouterr().err
    assert main(["generate", PROMPT, "--sampler", f"fitted:{solver_file}", "--cfg", "2", "--allow-other-model",
                 "--out", str(tmp_path / "b.png")]) == 0
    capsys.readouterr()
    assert main(["compare", PROMPT, "--samplers", "euler", f"fitted:{solver_file}", "--steps", "3", "--n", "1",
                 "--out", str(tmp_path / "grid.png")]) == 0
    table = capsys.readouterr().out
    assert f"fitted:{solver_file}"[:18] in table and (tmp_path / "grid.png").exists()
    rows = [line.split() for line in table.splitlines()[1:-2]]
    assert [r[1] for r in rows] == ["3", "4", "4"]  # euler at 3 and 4 steps, the fitted solver at its own 4


def test_the_diffusers_shim_takes_it_and_says_it_cannot_see_the_unet(solver_file):
    from diffusers import DDPMScheduler

    from samplers.interop.diffusers_scheduler import SamplerScheduler

    config = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    with pytest.raises(OtherModelError, match="allow_other_model"):  # refused when the scheduler is built
        SamplerScheduler.from_config(config, sampler=f"fitted:{solver_file}")
    shim = SamplerScheduler.from_config(config, sampler=f"fitted:{solver_file}",
                                        sampler_options={"allow_other_model": True})
    shim.set_timesteps(4)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * shim.init_noise_sigma
    for t in shim.timesteps:
        x = shim.step(torch.zeros_like(x), t, x).prev_sample
    assert torch.isfinite(x).all()


def test_the_diffusers_shim_compares_the_recorded_prediction_with_its_configs(solver_file):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from samplers.interop.diffusers_scheduler import SamplerScheduler

    config = FlowMatchEulerDiscreteScheduler(shift=3.0).config  # a flow model: the solver was fitted to an eps one
    with pytest.raises(OtherModelError, match="prediction is 'flow'"):
        SamplerScheduler.from_config(config, sampler=f"fitted:{solver_file}")
    SamplerScheduler.from_config(config, sampler=f"fitted:{solver_file}", sampler_options={"allow_other_model": True})


def test_fit_command_on_a_flow_problem_may_start_above_sigma_max_and_scores_from_there(tmp_path, capsys):
    import math

    out = tmp_path / "flow"
    assert main(["fit", "--model", "gm-flow", "--nfe", "5", "--out", str(out), "--calibration", "64", "--heldout",
                 "64", "--iters", "6", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    solver = LearnedSolver.load(out / "nfe5.json")
    row = json.loads((out / "report.json").read_text())["rows"]["5"]
    # at 5 NFE the pairs on ays_svd (from σ = 700) lead on this model, so the fit starts there ...
    assert solver.meta["start"]["schedule"] == "ays_svd" and 80 < solver.sigmas[0] < math.inf
    assert row["sigma_start"] == solver.sigmas[0] and f"(both from σ = {solver.sigmas[0]:g})" in printed
    # ... and fit and pair are scored on held-out starts from that σ
    assert row["fit"] <= row["best_fixed"]["rmse"] * 1.5


def test_the_fit_and_its_best_fixed_pair_are_each_printed_from_their_own_start(tmp_path, capsys):
    import math

    out = tmp_path / "flow"
    # on gm-flow at 5 NFE, seed 1, the best pair starts at σ = inf and the fit stage 4 keeps starts from the second
    # pair's 700 (without stage 5: on its 96 other starts this 60-step fit is handed back for the pair)
    assert main(["fit", "--model", "gm-flow", "--nfe", "5", "--out", str(out), "--calibration", "24", "--heldout",
                 "4", "--iters", "60", "--starts", "2", "--pool", "2", "--check", "0", "--seed", "1",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    solver = LearnedSolver.load(out / "nfe5.json")
    row = json.loads((out / "report.json").read_text())["rows"]["5"]
    pair = LearnedSolver(**solver.meta["start"]["solver"])
    assert math.isinf(pair.sigmas[0]) and 80 < solver.sigmas[0] < math.inf
    assert row["sigma_start"] == solver.sigmas[0] and "sigma_start" not in row["best_fixed"]  # inf: in its label
    assert f"(fitted from σ = {solver.sigmas[0]:g}, best fixed pair from σ = inf)" in printed
    assert "both from" not in printed
    # with stage 5 (--check 4 by default) that fit is handed back, and the line says why
    again = tmp_path / "checked"
    assert main(["fit", "--model", "gm-flow", "--nfe", "5", "--out", str(again), "--calibration", "24", "--heldout",
                 "4", "--iters", "60", "--starts", "2", "--pool", "2", "--seed", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    row = json.loads((again / "report.json").read_text())["rows"]["5"]
    assert row["kept"] == "start" and row["check"]["kept"] is False and row["check"]["starts"] == 96
    assert "(the fit, better on the validation starts, was worse on 96 other starts (--check): the solver is the " \
           "starting pair itself)" in printed
    assert LearnedSolver.load(again / "nfe5.json").same_steps(pair)


def test_fit_command_on_a_problem_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "gm"
    argv = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--calibration", "32", "--heldout", "16",
            "--iters", "6", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "NFE 3: held-out RMSE fitted" in printed and "best fixed pair" in printed
    assert printed.split("\n")[0].count("→") == 1  # the problem's description gives its range: not printed twice
    report = json.loads((out / "report.json").read_text())
    row = report["rows"]["3"]
    assert row["fit"] <= row["best_fixed"]["rmse"] * 1.5  # held out: other noise than the calibration starts
    solver = LearnedSolver.load(out / "nfe3.json")
    assert solver.steps == 3 and solver.model["fingerprint"] is not None
    assert solver.meta["config"]["screen"] is None  # every candidate ranked on every training start
    assert solver.meta["pool"]["starts"] == 4 * 32 and solver.meta["pool"]["solved"] >= 8  # --pool 4 by default
    assert solver.meta["fitted_from_pairs"] == 3  # --starts 3 by default
    # fitted ÷ best fixed with its interval: the same held-out starts paired
    gain = row["fit_over_best_fixed"]
    assert gain["ratio"] == pytest.approx(row["fit"] / row["best_fixed"]["rmse"], rel=1e-12)
    assert row["heldout"] == 16 and 0 < gain["interval"][0] <= gain["interval"][1]
    assert f"fitted ÷ best fixed {gain['ratio']:.3f}, 95 % interval {gain['interval'][0]:.3f}" in printed
    assert main(argv) == 0
    assert "already fitted" in capsys.readouterr().out
    # --rescore fits nothing: the same solver on more held-out starts, the fit's own record kept
    before = LearnedSolver.load(out / "nfe3.json")
    assert main([*argv[:9], "--heldout", "48", *argv[11:], "--rescore"]) == 0
    again = json.loads((out / "report.json").read_text())["rows"]["3"]
    assert LearnedSolver.load(out / "nfe3.json").sigmas == before.sigmas and again["seconds"] == row["seconds"]
    assert again["heldout"] == 48 and again["fit"] != row["fit"] and again["kept"] == row["kept"]
    assert main([*argv[:9], "--heldout", "16", *argv[11:], "--rescore"]) == 0  # the report's own starts again
    assert json.loads((out / "report.json").read_text())["rows"]["3"] == row
    assert main(["fit", "--model", "gm-ve", "--nfe", "4", "--out", str(out), "--rescore"]) == 2
    assert "no fitted solver" in capsys.readouterr().err
    assert main(["fit", "--model", "gm-vp-eps", "--nfe", "3", "--out", str(out), "--rescore"]) == 2
    assert "holds fits made otherwise than this run asks (model 'gm-ve' → 'gm-vp-eps'" in capsys.readouterr().err
    assert main([*argv, "--rescore", "--restart"]) == 2
    assert main(["fit", "--model", "gm-ve", "--nfe", "0", "--out", str(out)]) == 2
    assert main(["fit", "--model", "nothing", "--nfe", "3", "--out", str(out)]) == 2
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(tmp_path / "no" / "such")]) == 2
    assert main([*argv[:6], str(tmp_path / "screened"), *argv[7:], "--screen", "2"]) == 0
    assert LearnedSolver.load(tmp_path / "screened" / "nfe3.json").meta["config"]["screen"] == 2
    for bad in ("0", "some", "-2"):
        assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--screen", bad]) == 2
        assert "--screen must be 'all' or a number" in capsys.readouterr().err
    assert main([*argv[:6], str(tmp_path / "no-pool"), *argv[7:], "--pool", "0"]) == 0
    assert LearnedSolver.load(tmp_path / "no-pool" / "nfe3.json").meta["pool"] is None
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--pool", "-1"]) == 2
    assert "--pool must be at least 0" in capsys.readouterr().err
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), "--starts", "0"]) == 2
    assert "--starts must be at least 1" in capsys.readouterr().err
    # a fit that hands back its pair is that pair: scored once, fitted ÷ best fixed exactly 1
    assert main([*argv[:6], str(tmp_path / "pair"), *argv[7:12], "0", *argv[13:]]) == 0
    assert LearnedSolver.load(tmp_path / "pair" / "nfe3.json").meta["kept"] == "start"
    row = json.loads((tmp_path / "pair" / "report.json").read_text())["rows"]["3"]
    assert row["fit"] == row["best_fixed"]["rmse"] and row["fit_over_best_fixed"] == {"ratio": 1.0,
                                                                                       "interval": [1.0, 1.0]}


def test_a_second_fit_into_the_same_out_is_refused_where_the_model_or_options_differ(tmp_path, capsys):
    out = tmp_path / "gm"
    quick = ["--calibration", "8", "--heldout", "2", "--iters", "0", "--pool", "0", "--starts", "1", "--screen", "4",
             "--threads", "1"]
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *quick]) == 0
    capsys.readouterr()
    cached = out / ".work" / "reference-calibration-0-tol1e-07.pt"
    before = torch.load(cached, weights_only=True)["reference"]
    # another model: its finished NFE would be kept and its cached exact endpoints reused
    assert main(["fit", "--model", "gm-flow", "--nfe", "3", "--out", str(out), *quick]) == 2
    err = capsys.readouterr().err
    assert "(model 'gm-ve' → 'gm-flow'" in err and "another model's" in err and "--restart" in err
    assert main(["fit", "--model", "gm-ve", "--nfe", "4", "--out", str(out), *quick, "--iters", "5"]) == 2
    assert "(iters 0 → 5): its finished NFEs were fitted with other options" in capsys.readouterr().err
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *quick, "--heldout", "3"]) == 2
    assert "was scored on 2 held-out starts, this run asks 3: add --rescore" in capsys.readouterr().err
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *quick, "--heldout", "3",
                 "--rescore"]) == 0
    assert LearnedSolver.load(out / "nfe3.json").model["name"] == "gm-ve"
    # --restart replaces them, and the other model's cached endpoints with them
    assert main(["fit", "--model", "gm-flow", "--nfe", "3", "--out", str(out), *quick, "--restart"]) == 0
    assert "--restart: replacing the fits" in capsys.readouterr().out
    assert LearnedSolver.load(out / "nfe3.json").model["name"] == "gm-flow"
    assert json.loads((out / "report.json").read_text())["setting"]["model"] == "gm-flow"
    assert not torch.equal(torch.load(cached, weights_only=True)["reference"], before)  # solved for gm-flow
    # a run stopped before its first NFE leaves endpoints and no report: another model's run solves its own
    (out / "report.json").unlink()
    (out / "nfe3.json").unlink()
    flow = torch.load(cached, weights_only=True)["reference"]
    assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *quick]) == 0
    assert torch.equal(torch.load(cached, weights_only=True)["reference"], before)
    assert not torch.equal(before, flow)
    for flag, value, message in (("--validation", "1.5", "--validation (the share"), ("--lr", "nan", "--lr must"),
                                 ("--batch", "0", "--batch must be at least 1"),
                                 ("--time-budget", "nan", "--time-budget must be a finite number of seconds > 0")):
        assert main(["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(tmp_path / "bad"), flag, value]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_fit_command_on_the_shipped_unet(tmp_path, capsys):
    out = tmp_path / "eps"
    assert main(["fit", "--model", "eps", "--nfe", "2", "--out", str(out), "--calibration", "8", "--heldout", "4",
                 "--iters", "2", "--reference-tol", "1e-3", "--prompts", PROMPT]) == 0
    assert "default dpmpp_2m" in capsys.readouterr().out or "default" in (out / "report.json").read_text()
    solver = LearnedSolver.load(out / "nfe2.json")
    assert solver.model["prediction"] == "eps" and solver.model["fingerprint"] is not None
    assert solver.meta["config"]["screen"] is None


def test_fit_command_on_a_diffusers_unet_folder(tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from benchmarks import tiny_unet
    from samplers.interop.diffusers_models import denoiser_from_diffusers

    folder = tiny_unet.make(tmp_path / "unet")
    out = tmp_path / "fit"
    assert main(["fit", "--model", str(folder), "--prompt-embeds", str(folder / "embeds.safetensors"),
                 "--nfe", "3", "--out", str(out), "--calibration", "8", "--heldout", "4", "--iters", "2",
                 "--reference-tol", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "NFE 3" in printed and "default diffusers DPMSolverMultistepScheduler" in printed
    # the solver runs by name on that UNet through the diffusers adapter, and refuses another
    name = f"fitted:{out / 'nfe3.json'}"
    solver = LearnedSolver.load(out / "nfe3.json")
    loaded = UNet2DConditionModel.from_pretrained(folder)
    embeds = load_file(folder / "embeds.safetensors")["prompt_embeds"]
    d = denoiser_from_diffusers(loaded, json.loads((folder / "scheduler_config.json").read_text()),
                                prompt_embeds=embeds[:1])
    x = torch.randn(1, 4, 8, 8) * solver.sigmas[0]
    with torch.no_grad():
        assert torch.isfinite(samplers.sample(name, d, x, solver.sigmas, disable=True)).all()
        next(loaded.parameters()).add_(0.1)
    with pytest.raises(OtherModelError):
        samplers.sample(name, d, x, solver.sigmas)
    assert main(["fit", "--model", str(folder), "--nfe", "3", "--out", str(out)]) == 2  # no embeddings
    # the report's default row ran the folder's scheduler: another --scheduler-config is refused there, not shown
    # beside the old row as "already fitted"
    euler = tmp_path / "euler.json"
    euler.write_text(json.dumps({**json.loads((folder / "scheduler_config.json").read_text()),
                                 "_class_name": "EulerDiscreteScheduler"}))
    capsys.readouterr()
    assert main(["fit", "--model", str(folder), "--prompt-embeds", str(folder / "embeds.safetensors"), "--nfe", "3",
                 "--out", str(out), "--calibration", "8", "--heldout", "4", "--iters", "2", "--reference-tol", "1e-3",
                 "--scheduler-config", str(euler)]) == 2
    assert "ran another scheduler config as the model's default" in capsys.readouterr().err


def test_the_benchmarks_fit_and_rank_fitted_solvers(tmp_path):
    """benchmarks.learned_solvers fits a mixture never used elsewhere; benchmarks.quality ranks the file beside
    the registry's samplers, on the problem it was fitted to (and refuses it on another)."""
    from benchmarks import learned_solvers, quality

    problem = "gm-ve/d48-k5-s101"
    assert learned_solvers.main(["--problem", problem, "--nfe", "3", "--calibration", "64", "--iters", "2",
                                 "--out", str(tmp_path / "learned")]) == 0
    path = tmp_path / "learned" / "gm-ve_d48-k5-s101_nfe3.json"
    solver = LearnedSolver.load(path)
    assert solver.steps == 3 and solver.meta["calibration_seed"] == 7
    assert quality.main(["--problem", problem, "gm-ve", "--samplers", "euler", "--nfe", "3", "--batch", "8",
                         "--no-peers", "--fitted", str(path), "--out", str(tmp_path / "q"), "--no-progress",
                         "--no-cache"]) == 0
    cells = json.loads((tmp_path / "q" / "results.json").read_text())["cells"]
    fitted = {c["problem"]: c for c in cells if c["sampler"] == f"fitted:{path}"}
    assert fitted[problem]["nfe_used"] == 3 and fitted[problem]["rmse"] > 0
    assert "fitted to gm-ve/d48-k5-s101" in fitted["gm-ve"]["skipped"]  # another mixture: refused, not run


def test_the_fits_other_references_are_solved_once_per_start_and_sigma_across_nfes_and_runs(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from app import fit as fit_cli
    from samplers.fitted import fitting

    calls = []

    def solve(denoiser, x, sigma, tol):
        calls.append(x.shape[0])
        return x * 0.5 + denoiser.keywords["c"].reshape(-1, 1)

    monkeypatch.setattr(fitting, "reference_endpoints", solve)
    target = SimpleNamespace(denoiser=lambda x, s, c: x, sigma_max=10.0, reference_tol=1e-3, identity="model a")
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    c = torch.arange(6.0)
    refs = fit_cli.PoolReferences(tmp_path / "pool.pt", target)
    refs(x[:4], {"c": c[:4]}, 10.0)
    got = refs(x[2:], {"c": c[2:]}, 10.0)  # rows 2 and 3 are kept, 4 and 5 solved
    assert calls == [4, 2] and torch.equal(got, x[2:] * 0.5 + c[2:, None])
    again = fit_cli.PoolReferences(tmp_path / "pool.pt", target)(x, {"c": c}, 10.0)  # a later run: from the file
    assert calls == [4, 2] and torch.equal(again, x * 0.5 + c[:, None])
    fit_cli.PoolReferences(tmp_path / "pool.pt", target)(x[:1], {"c": c[:1] + 1}, 10.0)  # other conditioning: solved
    assert calls == [4, 2, 1]
    fit_cli.PoolReferences(tmp_path / "pool.pt", target)(x[:1], {"c": c[:1]}, 20.0)  # the same x from another σ
    assert calls == [4, 2, 1, 1]
    other = SimpleNamespace(**{**vars(target), "identity": "model b"})  # another model: its own endpoints
    fit_cli.PoolReferences(tmp_path / "pool.pt", other)(x[:2], {"c": c[:2]}, 10.0)
    assert calls == [4, 2, 1, 1, 2]


@pytest.mark.parametrize("schedule", ["ays_svd", "flow"])
def test_a_flow_solver_that_starts_above_sigma_max_runs_from_its_own_start_in_the_pipeline(schedule, tmp_path):
    # a fit on a flow model may start where ays_svd does (σ = 700, above the σ = 80 other schedules use) or
    # where the flow schedule does, at σ = inf (t = 1): the file keeps the start, the pipeline starts there
    import math

    from models.pipeline import Pipeline

    flow = Pipeline.load(model="flow")
    sig = flow.sigmas(schedule, 4)
    assert 80 < float(sig[0]) and (schedule == "flow") == math.isinf(float(sig[0]))
    solver = LearnedSolver.from_sampler("ipndm", sig)
    solver.model = {"fingerprint": fingerprint(flow.denoiser(PROMPT)), "name": "shipped flow", "prediction": "flow"}
    path = solver.save(tmp_path / "nfe4.json")
    assert LearnedSolver.load(path).sigmas == solver.sigmas
    mine = flow.txt2img(PROMPT, sampler=f"fitted:{path}", seed=3, output="tensor", progress=False)
    theirs = flow.txt2img(PROMPT, sampler="ipndm", schedule=schedule, steps=4, seed=3, output="tensor",
                          progress=False)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_the_diffusers_shim_runs_a_solver_from_sigma_inf_as_its_registry_pair(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from samplers.core.native import RectifiedFlow
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    sig = samplers.get_sigmas("flow", 4, native=RectifiedFlow(shift=3.0, multiplier=1000.0))
    path = LearnedSolver.from_sampler("ipndm", sig).save(tmp_path / "nfe4.json")  # from σ = inf, t = 1
    config = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    mu = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(**kw):
        shim = SamplerScheduler.from_config(config, **kw)
        shim.set_timesteps(4)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * shim.init_noise_sigma
        for t in shim.timesteps:  # the exact velocity of data at mu: (x_t - mu) / t
            x = shim.step((x - mu) / (t / 1000.0), t, x).prev_sample
        return x, shim.timesteps

    mine, steps = run(sampler=f"fitted:{path}")
    theirs, their_steps = run(sampler="ipndm", schedule="flow")
    assert float(steps[0]) == 1000.0 and torch.equal(steps, their_steps)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_generate_and_compare_check_the_sampler_before_loading_the_weights(tmp_path, monkeypatch, capsys):
    from models import pipeline
    from samplers.core.native import RectifiedFlow

    loads = []

    def load(cls, *args, **kwargs):
        loads.append(args)
        raise RuntimeError("the weights were loaded before the sampler was checked")

    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(load))
    flow = LearnedSolver.from_sampler("euler", samplers.get_sigmas("flow", 4, native=RectifiedFlow(shift=3.0)))
    flow.model = {"fingerprint": "ab" * 32, "name": "a flow model", "prediction": "flow"}
    flow_file = flow.save(tmp_path / "flow4.json")
    eps = LearnedSolver.from_sampler("euler", [14.6, 5.0, 1.5, 0.4, 0.0])
    eps.model = {"fingerprint": "cd" * 32, "name": "an eps model", "prediction": "eps"}
    eps_file = eps.save(tmp_path / "eps4.json")
    (tmp_path / "bad.json").write_text("{oops")
    out = ["--out", str(tmp_path / "x.png")]
    for argv, message in (
            (["generate", PROMPT, "--sampler", f"fitted:{flow_file}"], "starts at σ = inf"),
            (["generate", PROMPT, "--sampler", f"fitted:{flow_file}", "--allow-other-model"], "starts at σ = inf"),
            (["generate", PROMPT, "--model", "flow", "--sampler", f"fitted:{eps_file}"], "prediction is 'flow'"),
            (["generate", PROMPT, "--sampler", f"fitted:{eps_file}", "--steps", "8"], "runs exactly 4 steps"),
            (["generate", PROMPT, "--sampler", f"fitted:{eps_file}", "--schedule", "karras"], "own fitted σ nodes"),
            (["generate", PROMPT, "--sampler", f"fitted:{tmp_path / 'bad.json'}"], "not a valid learned-solver"),
            (["generate", PROMPT, "--sampler", "fitted:"], "names no solver"),
            (["generate", PROMPT, "--sampler", "eulr"], "unknown"),
            (["compare", PROMPT, "--samplers", "euler", f"fitted:{flow_file}", "--n", "1"], "starts at σ = inf"),
            (["compare", PROMPT, "--samplers", "euler", f"fitted:{tmp_path / 'bad.json'}", "--n", "1"],
             "not a valid learned-solver")):
        assert main(argv + out) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not loads


QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "0", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


class _Unpickled:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_fit_refuses_a_bad_out_folder_or_report_before_building_the_model(tmp_path, capsys, monkeypatch):
    from app import fit as fit_cli

    out = tmp_path / "gm"
    argv = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    built, real = [], fit_cli.make_target
    monkeypatch.setattr(fit_cli, "make_target", lambda args: built.append(args) or real(args))
    row = report["rows"]["3"]
    for text, message in (('{"rows": ', "is not readable JSON"), ("[1, 2]", "it holds a JSON list"),
                          (json.dumps({**report, "rows": {"abc": row}}), "row 'abc' is not an NFE"),
                          (json.dumps({**report, "setting": "x"}), "its setting is 'x', not an object"),
                          (json.dumps({**report, "rows": ["3"]}), "its rows are a list"),
                          (json.dumps({**report, "rows": {"3": {**row, "fit": "low"}}}), "row 3 has no valid fit"),
                          (json.dumps({**report, "rows": {"3": {**row, "best_fixed": 1}}}), "no valid best_fixed")):
        (out / "report.json").write_text(text)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out / 'report.json'}" in err and message in err and "delete it" in err, err
    (out / "report.json").unlink()
    (out / "report.json").mkdir()
    assert main(argv) == 2 and "report.json is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    assert main([*argv[:6], str(tmp_path / "file"), *argv[7:]]) == 2
    assert "is a file, where samplers fit keeps its fits" in capsys.readouterr().err
    (out / "report.json").rmdir()
    (out / ".work").rename(tmp_path / "work")
    (out / ".work").write_text("not a folder")
    assert main(argv) == 2 and ".work is a file" in capsys.readouterr().err
    assert built == []


def test_fit_reads_its_cached_files_as_data_only_and_names_a_bad_one(tmp_path, capsys):
    out = tmp_path / "gm"
    argv = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    cached = out / ".work" / "reference-calibration-0-tol1e-07.pt"
    good, saved = cached.read_bytes(), torch.load(cached, weights_only=True)
    marker = tmp_path / "marker"
    (out / "nfe3.json").unlink()  # NFE 3 is fitted again: its cached exact endpoints are read
    for write, message in ((lambda: torch.save({"x": torch.zeros(1), "e": _Unpickled(str(marker))}, cached),
                            "(UnpicklingError: it holds Python objects a weights-only load never builds"),
                           (lambda: cached.write_bytes(good[:100]), "cannot be read ("),
                           (lambda: torch.save([1, 2], cached), "holds a list, not the dict"),
                           (lambda: torch.save({**saved, "reference": torch.zeros(2)}, cached),
                            "hold no reference of")):
        write()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"the cached exact endpoints {cached}" in err and message in err and "delete it" in err, err
    assert not marker.exists()
    cached.write_bytes(good)
    # the optimisation's resumable state goes through the same reader
    torch.save([1], out / ".work" / "state-nfe3.pt")
    assert main(argv) == 2
    assert "the fit's saved state" in (err := capsys.readouterr().err) and "holds a list" in err
    (out / ".work" / "state-nfe3.pt").unlink()
    assert main(argv) == 0
    capsys.readouterr()


def test_a_resumed_or_rescored_fit_reads_its_solver_file_and_refuses_a_broken_or_foreign_one(tmp_path, capsys):
    out = tmp_path / "gm"
    argv = ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    path = out / "nfe3.json"
    solver = LearnedSolver.load(path)
    other = LearnedSolver.load(path)
    other.model = {"fingerprint": "0" * 64, "name": "other", "prediction": "flow"}
    shorter = LearnedSolver.from_sampler("euler", [80.0, 1.0, 0.0])
    shorter.model, shorter.meta = solver.model, solver.meta
    bare = LearnedSolver.load(path)
    bare.meta = {}
    for write, message in ((lambda: path.write_text("garbage"), "is not a valid learned-solver file"),
                           (lambda: other.save(path), "was fitted to model 'other'"),
                           (lambda: shorter.save(path), "holds a solver of 2 model calls, not 3"),
                           (lambda: bare.save(path), "lacks the record samplers fit keeps")):
        write()
        before = path.read_bytes()
        for extra, fix in (([], f"delete {path} to fit NFE 3 again"), (["--rescore"], "point --out at")):
            assert main([*argv, *extra]) == 2  # never "already fitted", nor scored, with the report's old numbers
            err = capsys.readouterr().err
            assert message in err and fix in err, err
            assert path.read_bytes() == before
    assert main([*argv, "--restart"]) == 0  # --restart fits it again, replacing it
    assert LearnedSolver.load(path).model == solver.model
    capsys.readouterr()
    assert main(argv) == 0 and "already fitted" in capsys.readouterr().out


def test_a_diffusers_folders_files_are_checked_before_the_unet_is_built(tmp_path, capsys, monkeypatch):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    from benchmarks import tiny_unet

    folder = tiny_unet.make(tmp_path / "unet")
    good = load_file(folder / "embeds.safetensors")  # prompt_embeds [8, 7, 32], negative_prompt_embeds [1, 7, 32]

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        raise Built("every file passed")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", build)
    embeds = tmp_path / "e.safetensors"

    def run(tensors=None, *extra, path=embeds):
        if tensors is not None:
            save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        code = main(["fit", "--model", str(folder), "--prompt-embeds", str(path), "--nfe", "3",
                     "--out", str(tmp_path / "fit"), *QUICK, *extra])
        return code, capsys.readouterr().err

    assert run(good, "--cfg", "3") == (1, "samplers fit: error: every file passed (Built; --debug for the traceback)\n")
    nan = good["prompt_embeds"].clone()
    nan[0, 0, 0] = float("nan")
    for tensors, extra, message in (
            ({k: (v * 10).long() for k, v in good.items()}, [], "prompt_embeds in {} is torch.int64: embeddings are "
                                                                "floating point"),
            ({**good, "prompt_embeds": nan}, [], "holds 1 NaN or infinite value(s)"),
            ({k: v[..., :16] for k, v in good.items()}, [], "16 wide and the UNet in {} takes encoder_hidden_states "
                                                            "32 wide (its config's cross_attention_dim)"),
            ({**good, "negative_prompt_embeds": good["negative_prompt_embeds"][:, :3]}, ["--cfg", "3"],
             "negative_prompt_embeds in {} is [1, 3, 32], must be [1, T, C] = [1, 7, 32]"),
            ({**good, "negative_prompt_embeds": good["negative_prompt_embeds"][0]}, ["--cfg", "3"], "is [7, 32]"),
            ({"prompt_embeds": good["prompt_embeds"]}, ["--cfg", "3"], "--cfg 3 needs negative_prompt_embeds"),
            ({"prompt_embeds": good["prompt_embeds"][0]}, [], "must hold prompt_embeds [N, T, C]")):
        code, err = run(tensors, *extra)
        assert code == 2 and message.format(embeds if "{} is" in message else folder) in err, err
    for path, message in ((folder, "is a folder; give the safetensors file"),
                          (tmp_path / "none.safetensors", "no such file"),
                          (folder / "config.json", "is not a safetensors file (SafetensorError")):
        code, err = run(None, path=path)
        assert code == 2 and f"--prompt-embeds {path}" in err and message in err, err
    config = folder / "scheduler_config.json"
    kept = config.read_text()
    for text, message in (('{"_class_name": ', "is not readable JSON"), ("[]", "holds a JSON list, not an object")):
        config.write_text(text)
        code, err = run(good)
        assert code == 2 and str(config) in err and "the scheduler config" in err and message in err \
            and "--scheduler-config" in err
    # a scheduler that clips x0 is not the model the fit sees (as denoiser_from_diffusers refuses it)
    config.write_text(json.dumps({**json.loads(kept), "clip_sample": True}))
    code, err = run(good)
    assert code == 2 and "clip_sample=True" in err, err
    # read as denoiser_from_diffusers reads it (an audit of 2026-12-06): a partial DDIM config is DDIM's defaults,
    # which clip x0; Mochi's invert_sigmas and dynamic shifting are refused before the UNet is built, not after the fit
    for written, message in (({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear"}, "clip_sample=True"),
                             ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "invert_sigmas": True},
                              "invert_sigmas=True"),
                             ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
                               "use_dynamic_shifting": True}, "use_dynamic_shifting"),
                             ({**json.loads(kept), "prediction_typ": "v_prediction"}, "'prediction_typ' (did you mean")):
        config.write_text(json.dumps(written))
        code, err = run(good)
        assert code == 2 and message in err, (written, err)
    config.write_text(kept)
    code, err = run(good, "--cfg", "0.5")  # diffusers' pipelines guide only above 1
    assert code == 2 and "--cfg 0.5 is below 1, where diffusers' pipelines do not guide" in err, err


def test_fit_refuses_bad_values_and_ignored_options_before_building_the_model(tmp_path, capsys, monkeypatch):
    from app import fit as fit_cli

    monkeypatch.setattr(fit_cli, "make_target", lambda args: pytest.fail("the model was built"))
    out = ["--out", str(tmp_path / "fit")]
    for argv, words in (
            (["--model", "gm-ve", "--nfe", "3", "--seed", "-1"], ["--seed", "-1", "[0, 2**32)"]),
            (["--model", "gm-ve", "--nfe", "3", "--seed", "99999999999999999999"], ["--seed", "2**32"]),
            (["--model", "gm-ve", "--nfe", "3", "3"], ["--nfe", "3", "more than once"]),
            (["--model", "gm-ve", "--nfe", "3", "--cfg", "1e300"], ["--cfg", "100"]),
            (["--model", "gm-ve", "--nfe", "3", "--cfg", "5"], ["--cfg has no effect", "'gm-ve'", "text-conditioned"]),
            (["--model", "benchmarks.common:GM_SHAPE", "--nfe", "3", "--prompts", "a red circle"],
             ["--prompts has no effect"]),
            (["--model", "gm-flow", "--nfe", "3", "--prompt-embeds", "e.safetensors"], ["--prompt-embeds has no effect"]),
            (["--model", "eps", "--nfe", "3", "--scheduler-config", "s.json"],
             ["--scheduler-config has no effect", "'eps'", "diffusers UNet folder"]),
            (["--model", "eps", "--nfe", "3", "--prompt-embeds", "e.safetensors"], ["--prompt-embeds has no effect"]),
            (["--model", str(tmp_path), "--nfe", "3", "--prompts", "a red circle"], ["--prompts has no effect"])):
        try:
            code = main(["fit", *argv, *out])
        except SystemExit as exit_:  # argparse's own
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and all(w in err for w in words), (argv, err)
    assert not (tmp_path / "fit").exists()


@pytest.mark.parametrize("model, words", [
    ("nosuch_mod:fn", ["'nosuch_mod:fn'", "cannot be imported", "'module:function'"]),
    ("benchmarks.common:nosuch", ["has no 'nosuch'", "'module:function'"]),
    ("benchmarks.common:rmse", ["takes arguments", "rmse(a", "'module:function'"]),
    ("benchmarks.common:GM_SHAPE", ["is a tuple, not a function"]),
    ("gm-nope", ["'gm-nope'", "gm-ve, gm-vp-eps, gm-flow"]),
])
def test_fit_refuses_a_model_entry_point_that_gives_no_problem_as_a_usage_error(tmp_path, capsys, model, words):
    assert main(["fit", "--model", model, "--nfe", "3", "--out", str(tmp_path / "fit"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and all(w in err for w in words) and "--debug for the traceback" not in err, err


@pytest.mark.parametrize("cfg", [None, 7.123456789])
def test_the_command_fit_prints_for_a_shipped_model_parses_as_generate(cfg):
    """The closing line's command must run: generate's prompt is positional, and the guidance is the one the solver
    was fitted at (its fingerprint records it exactly)."""
    from app.fit import generate_command
    from samplers.cli import build_parser

    cmd = generate_command("eps", "out/fit/nfe8.json", cfg)
    args = build_parser().parse_args(cmd[1:])
    assert (args.model, args.sampler) == ("eps", "fitted:out/fit/nfe8.json") and args.prompt
    assert args.cfg == cfg


def test_a_diffusers_folder_with_an_edm_scheduler_config_is_fitted_with_its_sigma_data(tmp_path):
    """An EDMEulerScheduler config (Playground v2.5: σ_data 0.5) is read as EDM preconditioning, and the fit's
    denoiser takes the config's σ_data (it took the default 1)."""
    from diffusers import EDMEulerScheduler

    from app.fit import diffusers_target
    from benchmarks import tiny_unet

    folder = tiny_unet.make(tmp_path / "unet")
    EDMEulerScheduler(sigma_data=0.5, prediction_type="v_prediction").save_config(folder)
    target = diffusers_target(folder, None, str(folder / "embeds.safetensors"), None)
    assert target.prediction == "edm_v" and target.denoiser.inner.sigma_data == 0.5

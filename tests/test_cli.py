"""The demo's analytic table: every sampler within its NFE budget, counted, not estimated from metadata."""
import argparse
import math

import samplers
from app.demo import analytic_table
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)


def test_budget_is_counted_calls():
    table = analytic_table(nfes=(10,), problem=GM, batch=4)
    x = GM.noise(4, seed=0) * 80.0
    ref = GM.ode_endpoint(x, 80.0)

    def rmse(name, steps):
        out = samplers.sample(name, GM.denoiser, x, samplers.get_sigmas("karras", steps, sigma_min=0.002, sigma_max=80.0),
                              disable=True)
        return float(((out - ref) ** 2).mean().sqrt())

    # pndm's three Runge-Kutta warm-up steps cost 4 calls each: 3 steps (4 + 4 + 1 to σ = 0) fit 10 calls
    assert math.isclose(table["pndm"][10], rmse("pndm", 3), rel_tol=1e-9)
    assert math.isclose(table["plms"][10], rmse("plms", 9), rel_tol=1e-9)  # its first step costs 2
    assert math.isclose(table["heun"][10], rmse("heun", 5), rel_tol=1e-9)  # 2 per step, 1 on the last
    assert "learned_multistep" not in table and "dpm_adaptive" not in table


# ---- samplers generate / compare at their boundary: refused before the weights are read


import pytest  # noqa: E402


def _refused(capsys, argv, *words):
    from samplers.cli import main

    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, (status, err)
    line = err.strip().splitlines()[-1]
    assert "error:" in line and all(w in line for w in words), line
    return line


@pytest.mark.parametrize("command", ["generate", "compare"])
@pytest.mark.parametrize("cfg", ["1e30", "1e308", "-101", "inf", "nan"])
def test_a_cfg_beyond_comfyuis_widget_maximum_is_refused(capsys, no_load, tmp_path, command, cfg):
    _refused(capsys, [command, "a red circle", "--cfg", cfg, "--out", str(tmp_path / "a.png")], "--cfg", "100")


def test_the_pipeline_refuses_a_cfg_beyond_the_limit_and_takes_the_limit():
    import samplers
    from models.pipeline import Pipeline

    pipe = Pipeline.__new__(Pipeline)  # guidance reads only the defaults
    pipe.defaults = {"cfg": 4.0}
    assert pipe.guidance(100) == 100.0 and pipe.guidance(-100.0) == -100.0 and pipe.guidance(None) == 4.0
    for bad in (100.5, 1e30, 1e308, float("inf")):
        with pytest.raises(samplers.InvalidInput, match="100"):
            pipe.guidance(bad)


@pytest.mark.parametrize("seeds", [["0"], ["1", "2"]])
def test_generate_refuses_an_out_that_is_a_folder(capsys, no_load, tmp_path, seeds):
    (tmp_path / "dir").mkdir()
    _refused(capsys, ["generate", "a red circle", "--seed", *seeds, "--out", str(tmp_path / "dir")], "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]  # no dir-0.png beside it


def test_compare_refuses_an_out_that_is_a_folder(capsys, no_load, tmp_path):
    _refused(capsys, ["compare", "a red circle", "--out", str(tmp_path)], "is a folder")


@pytest.mark.parametrize("command", ["generate", "compare"])
@pytest.mark.parametrize("name, fix", [("x.txt", "x.png"), ("noext", "noext.png"), ("a.jpg", "a.png")])
def test_an_out_that_is_not_a_png_is_refused_with_the_name_to_use(capsys, no_load, tmp_path, command, name, fix):
    _refused(capsys, [command, "a red circle", "--out", str(tmp_path / name)], ".png", str(tmp_path / fix))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("samplers_", [["dpmpp_2m", "sample_dpmpp_2m"], ["dpmpp_2m", "comfyui:dpmpp_2m"],
                                       ["DPM++ 2M Karras", "DPM++ 2M"]])
def test_compare_refuses_two_names_of_one_run_before_loading(capsys, no_load, tmp_path, samplers_):
    _refused(capsys, ["compare", "a red circle", "--samplers", *samplers_, "--out", str(tmp_path / "c.png")],
             repr(samplers_[0]), repr(samplers_[1]), "list one of them")


@pytest.mark.parametrize("samplers_, schedule, refused", [
    (["DPM++ 2M Karras", "dpmpp_2m"], "karras", False),  # the label runs its own a1111:Karras there: another run
    (["DPM++ 2M Karras", "dpmpp_2m"], "a1111:Karras", True),
    (["DPM++ 2M Karras", "dpmpp_2m"], "comfyui:karras", True),  # another tool's name: the caller's, for both
    (["DPM++ 2M", "dpmpp_2m"], "karras", True),  # a label of the Automatic type runs the caller's schedule
    (["dpmpp_2m", "sample_dpmpp_2m"], "karras", True)])
def test_compare_keys_each_name_on_the_schedule_it_runs(samplers_, schedule, refused):
    """resolve_call's rule: "DPM++ 2M Karras" with schedule karras runs A1111's Karras (a1111:Karras, its float32
    table), not the registry's karras that dpmpp_2m runs, so the pair is two runs (it was refused as one)."""
    from app.cli import _same_runs

    if refused:
        with pytest.raises(samplers.InvalidInput, match="the grid would show one run twice"):
            _same_runs(samplers_, schedule)
    else:
        _same_runs(samplers_, schedule)


class _PlanOnly:
    """A pipeline that plans runs as the eps model does (its default schedule karras) and fails if it samples."""

    def __init__(self, schedule="karras"):
        from models.pipeline import Pipeline

        self.real = Pipeline.__new__(Pipeline)
        self.real.defaults = {"sampler": "dpmpp_2m", "schedule": schedule, "steps": 20, "cfg": 4.0}
        from samplers.core.native import VPDiscrete

        self.real.native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
        self.nfe = 0  # the model calls a pipeline counts (none here: it never samples)

    def guidance(self, cfg):
        return self.real.guidance(cfg)

    def plan(self, *a):
        return self.real.plan(*a)

    def runs_comfyui_flow_rule(self, found):
        return self.real.runs_comfyui_flow_rule(found)

    def txt2img(self, *a, **k):
        raise AssertionError("sampled before the names were checked")


def test_compare_grid_refuses_a_label_that_is_the_models_default_run_under_another_name():
    import samplers
    from app.images import compare_grid

    # on a model whose default schedule is A1111's Karras, dpmpp_2m runs on it: "DPM++ 2M Karras" is the same run
    with pytest.raises(samplers.InvalidInput, match="'dpmpp_2m' and 'DPM\\+\\+ 2M Karras' run the same sampler"):
        compare_grid(_PlanOnly("a1111:Karras"), ["a red circle"], ["dpmpp_2m", "DPM++ 2M Karras"], [2, 3])


def test_compare_shows_and_looks_up_each_row_by_the_name_given(monkeypatch):
    import torch

    from app.images import compare_grid
    from models import checker

    pipe = _PlanOnly()
    pipe.real.defaults["schedule"] = "exponential"  # dpmpp_2m runs there, "DPM++ 2M Karras" on karras: two runs
    made = []

    def txt2img(prompts, sampler, schedule, steps, **k):
        made.append(sampler)
        return torch.full((len(prompts), 3, 64, 64), float(len(made)) / 10)

    pipe.txt2img = txt2img
    monkeypatch.setattr(checker, "matches", lambda im, p: float(im.mean()) > 0.15)  # only the second row matches
    grid, rows = compare_grid(pipe, ["a red circle"], ["dpmpp_2m", "DPM++ 2M Karras"], [2])
    assert [r["sampler"] for r in rows] == ["dpmpp_2m", "DPM++ 2M Karras"] and [r["match"] for r in rows] == [0, 1]


def test_demo_refuses_an_out_that_is_a_file_before_the_work(capsys, monkeypatch, tmp_path):
    from app import demo

    monkeypatch.setattr(demo, "run_demo", lambda **k: pytest.fail("the demo ran"))
    (tmp_path / "file").write_text("kept")
    _refused(capsys, ["demo", "--out", str(tmp_path / "file")], "--out", "is a file")
    _refused(capsys, ["demo", "--out", str(tmp_path / "file" / "below")], "--out", "a file")
    assert (tmp_path / "file").read_text() == "kept"


def test_demo_refuses_an_out_it_cannot_write_before_the_work(capsys, monkeypatch, unwritable):
    """``samplers demo --out /sys/demo`` ended in a bare ``[Errno 1] Operation not permitted`` naming neither --out
    nor a fix: refused while parsing, naming both, and creating nothing."""
    from app import demo

    monkeypatch.setattr(demo, "run_demo", lambda **k: pytest.fail("the demo ran"))
    _refused(capsys, ["demo", "--out", str(unwritable / "demo")], "--out", "cannot write in folder", str(unwritable),
             "name a folder you can write to")
    assert not (unwritable / "demo").exists()


@pytest.mark.parametrize("err", [FileExistsError(17, "File exists"), NotADirectoryError(20, "Not a directory"),
                                 PermissionError(13, "Permission denied"), FileNotFoundError(2, "No such file")])
def test_a_path_the_user_gave_that_cannot_be_used_is_a_usage_error(err):
    from samplers.cli import exit_status

    assert exit_status(err) == 2 and exit_status(RuntimeError("x")) == 1


@pytest.mark.parametrize("command, fix", [("generate", "--allow-other-model"),
                                          ("compare", "`samplers generate --allow-other-model`")])
def test_a_fitted_solver_of_another_model_names_the_command_lines_fix(capsys, no_load, tmp_path, command, fix):
    from samplers.fitted.solver import LearnedSolver

    eps = LearnedSolver.from_sampler("euler", [14.6, 5.0, 1.5, 0.4, 0.0])
    eps.model = {"fingerprint": "cd" * 32, "name": "an eps model", "prediction": "eps"}
    path = eps.save(tmp_path / "eps4.json")
    option = "--sampler" if command == "generate" else "--samplers"
    line = _refused(capsys, [command, "a red circle", "--model", "flow", option, f"fitted:{path}",
                             "--out", str(tmp_path / "x.png")], "prediction is 'flow'", fix)
    assert "allow_other_model=True" not in line


def test_adherence_prints_the_device_it_runs_on(monkeypatch):
    import io
    import re
    from types import SimpleNamespace

    from benchmarks import adherence
    from models import data, pipeline

    config = SimpleNamespace(prediction="eps", name="stand-in")
    fake = SimpleNamespace(model=SimpleNamespace(config=config, weights_sha256="ab" * 32),
                           defaults={"cfg": 4.0, "sampler": "euler", "schedule": "karras"})
    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(lambda cls, *a, **k: fake))
    class Stop(Exception):
        pass

    def stop(*_a):
        raise Stop  # after the header: nothing is sampled

    monkeypatch.setattr(data, "eval_captions", stop)
    out = io.StringIO()
    with pytest.raises(Stop):
        adherence.run(out=out)
    assert re.search(r"on CPU [^\n]*\(\d+ cores, \d+ torch threads\)", out.getvalue())  # its model where named


# ---- generate --option KEY=VALUE: a sampler's options from the command line, checked by the sampler's rules


@pytest.mark.parametrize("args, words", [
    (["--sampler", "euler_ancestral", "--option", "eta=abc"], ["eta must be a real number", "'abc'"]),
    (["--sampler", "euler_ancestral", "--option", "etta=0.5"], ["no option 'etta'", "eta"]),
    (["--option", "bogus=1"], ["dpmpp_2m has no option 'bogus'"]),  # the model's default sampler
    (["--sampler", "euler_ancestral", "--option", "eta=0.5", "--option", "eta=0.6"], ["eta is given twice"]),
    (["--sampler", "euler_ancestral", "--option", "seed=3"], ["seed", "--seed"]),
    (["--option", "steps=8"], ["steps", "--steps"]),
    (["--sampler", "dpm_adaptive", "--option", "info={}"], ["info", "would not show"]),
    (["--sampler", "euler_ancestral", "--option", "eta"], ["KEY=VALUE", "'eta'"]),
    (["--sampler", "euler_ancestral", "--option", "=0.5"], ["KEY=VALUE"]),
])
def test_generate_refuses_a_bad_sampler_option_before_loading(capsys, no_load, tmp_path, args, words):
    _refused(capsys, ["generate", "a red circle", "--steps", "4", *args, "--out", str(tmp_path / "x.png")], *words)


def test_an_option_value_in_pythons_spelling_is_that_value():
    """--option VALUE is JSON, else Python's spelling of a constant (A1111's infotext writes s_tmax=inf): kept as
    text, 'inf' and 'False' reached the options' rules as strings ("euler_at_final must be True or False, got
    'False'"). Another spelling of a constant is refused naming both; anything else is still text."""
    from app.cli import sampler_option

    assert sampler_option("s_tmax=inf") == ("s_tmax", math.inf) == sampler_option("s_tmax=Infinity")
    assert sampler_option("x=-inf") == ("x", -math.inf) and math.isnan(sampler_option("x=nan")[1])
    assert [sampler_option(f"x={v}")[1] for v in ("True", "False", "None", "true", "null")] == [True, False, None,
                                                                                              True, None]
    assert sampler_option("noise_sampler=brownian") == ("noise_sampler", "brownian")
    for raw in ("INF", "+inf", "-INFINITY", "TRUE", "none", "NULL", "nan "):
        with pytest.raises(argparse.ArgumentTypeError, match=r"as neither JSON nor Python does; write JSON's true, "
                                                              r"false, null, Infinity.*or Python's True.*inf"):
            sampler_option(f"x={raw}")


def test_python_spellings_reach_the_rules_as_values(capsys, no_load, tmp_path):
    # A1111's defaults are taken (as docs/models.md says): the run goes on to the weights
    from samplers.cli import main

    argv = ["generate", "a red circle", "--steps", "4", "--out", str(tmp_path / "x.png")]
    for options in (["--sampler", "euler", "--option", "s_churn=1", "--option", "s_tmax=inf"],
                    ["--option", "euler_at_final=False"]):
        assert main([*argv, *options]) == 1
        assert "the weights were loaded" in capsys.readouterr().err
    # a NaN is refused by the option's own rule, not as the text 'nan'
    line = _refused(capsys, [*argv, "--sampler", "euler_ancestral", "--option", "eta=nan"], "eta")
    assert "'nan' (str)" not in line
    _refused(capsys, [*argv, "--option", "euler_at_final=FALSE"], "--option", "'FALSE'", "False", "false")


def test_generate_passes_its_options_to_the_sampler(tmp_path):
    """euler_ancestral with eta=0 takes no noise: euler's steps, so the same image byte for byte; with its default
    eta=1 another image. A value is JSON where it parses (0, 0.0), else text (noise_sampler=brownian)."""
    from samplers.cli import main

    def image(name, *args):
        path = tmp_path / f"{name}.png"
        assert main(["generate", "a large red circle at the top left", "--steps", "4", "--seed", "3",
                     "--out", str(path), *args]) == 0
        from PIL import Image

        return Image.open(path).tobytes()  # the pixels: the PNG's parameters name the sampler and options

    euler = image("euler", "--sampler", "euler")
    assert image("eta0", "--sampler", "euler_ancestral", "--option", "eta=0") == euler
    assert image("eta1", "--sampler", "euler_ancestral") != euler
    tree = image("tree", "--sampler", "euler_ancestral", "--option", "noise_sampler=brownian_tree")
    assert tree != image("eta1b", "--sampler", "euler_ancestral")


# ---- compare --option KEY=VALUE: options for every row, each checked by its sampler's rules before loading


@pytest.mark.parametrize("args, words", [
    (["--samplers", "euler", "euler_ancestral", "--option", "eta=0.5"], ["euler has no option 'eta'"]),
    (["--samplers", "euler_ancestral", "--option", "eta=abc"], ["eta must be a real number", "'abc'"]),
    (["--samplers", "euler_ancestral", "--option", "seed=3"], ["seed", "--seed"]),
    (["--samplers", "euler_ancestral", "--option", "eta=0.5", "--option", "eta=0.6"], ["eta is given twice"]),
    # compare's own flags, not generate's (it has no --allow-other-model, --sampler, --width, --height)
    (["--option", "allow_other_model=true"], ["compare runs a fitted solver on its own model only",
                                              "samplers generate --allow-other-model"]),
    (["--option", "sampler=euler"], ["--samplers"]),
    (["--option", "width=32"], ["default size", "samplers generate --width"]),
    (["--option", "batch=2"], ["--n"]),
])
def test_compare_refuses_a_bad_sampler_option_before_loading(capsys, no_load, tmp_path, args, words):
    _refused(capsys, ["compare", "a red circle", "--steps", "4", *args, "--out", str(tmp_path / "c.png")], *words)


def test_compare_passes_its_options_to_every_row(monkeypatch, tmp_path):
    """euler_ancestral with eta=0 takes no noise: euler's images, as `generate --option eta=0` gives them; without
    the option another image (had the option been dropped, the two euler_ancestral rows would be one image). Through the command, on the shipped eps model."""
    from models.pipeline import Pipeline
    from samplers.cli import main

    made = {}
    real = Pipeline.txt2img

    def txt2img(self, prompts, sampler, **k):
        images = real(self, prompts, sampler=sampler, **k)
        made[sampler, k.get("eta")] = images
        return images

    monkeypatch.setattr(Pipeline, "txt2img", txt2img)
    for args in (["euler"], ["euler_ancestral", "--option", "eta=0"], ["euler_ancestral"]):
        assert main(["compare", "a large red circle at the top left", "--steps", "3", "--n", "1", "--seed", "3",
                     "--samplers", *args, "--out", str(tmp_path / "c.png")]) == 0
    # eta=0's σ_down is σ_next up to rounding: euler's image to 1e-5 (PNG bytes equal), eta=1's 0.1 or more away
    assert (made["euler_ancestral", 0] - made["euler", None]).abs().max() < 1e-5
    assert (made["euler_ancestral", None] - made["euler", None]).abs().max() > 0.1


FITTED = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "fitted" / "eps" / "nfe8.json"


def test_compare_refuses_a_schedule_with_a_fitted_row_as_generate_does(capsys, no_load, tmp_path):
    """A fitted solver runs on its own σ nodes: a --schedule for every row is refused with it (it was dropped for
    that row), before the weights are read, naming the fix; generate refuses the same pair."""
    fitted = f"fitted:{FITTED}"
    line = _refused(capsys, ["compare", "a red circle", "--samplers", "euler", fitted, "--schedule", "exponential",
                             "--steps", "5", "--n", "1", "--out", str(tmp_path / "c.png")],
                    repr(fitted), "own fitted σ nodes", "leave --schedule out")
    assert "'exponential'" in line
    _refused(capsys, ["generate", "a red circle", "--sampler", fitted, "--schedule", "exponential",
                      "--out", str(tmp_path / "g.png")], "own fitted σ nodes", "leave schedule out")


def test_compare_grid_refuses_a_schedule_with_a_fitted_row():
    import samplers
    from app.images import compare_grid

    with pytest.raises(samplers.InvalidOption, match="own fitted σ nodes.*leave schedule out"):
        compare_grid(_PlanOnly(), ["a red circle"], ["euler", f"fitted:{FITTED}"], [5],
                     schedule="exponential")


from test_pipeline import model_calls, parts  # noqa: E402, F401  (a fixture)


@pytest.mark.parametrize("kind, want", [("eps", {"euler": 5, "heun": 9, "dpmpp_2s_ancestral": 9}),
                                        ("flow", {"euler": 5, "heun": 8, "dpmpp_2s_ancestral": 8})])
def test_compare_grids_nfe_is_the_model_calls_the_run_made(parts, monkeypatch, kind, want):  # noqa: F811
    """The NFE column is counted: a 2-call sampler's last step to σ = 0 takes one call, and on the flow model the
    first step from σ = inf one more (the estimate nfe_per_step · steps said 10 for each 2-call row)."""
    from app.images import compare_grid

    pipe = parts[kind]
    calls = model_calls(pipe, monkeypatch)
    _, rows = compare_grid(pipe, ["a red circle"], list(want), [5], cfg=3.0)
    assert {r["sampler"]: r["nfe"] for r in rows} == want
    assert calls.count("unet") == sum(want.values())  # one U-Net call per denoiser call, CFG's batched in it


@pytest.mark.parametrize("argv, flag, fix", [
    (["generate", "a red circle", "--seed", "0", "--seed", "1"], "--seed", "--seed 0 1"),
    (["compare", "a red circle", "--samplers", "euler", "--samplers", "heun"], "--samplers", "--samplers euler heun"),
    (["compare", "a red circle", "--steps", "2", "--steps", "3"], "--steps", "--steps 2 3"),
    (["generate", "a red circle", "--steps", "2", "--steps", "3"], "--steps", "give it once"),
    (["generate", "a red circle", "--cfg", "2", "--cfg", "3"], "--cfg", "give it once"),
])
def test_an_option_given_twice_is_refused_not_overwritten(capsys, no_load, tmp_path, argv, flag, fix):
    # argparse keeps the last value: `--seed 0 --seed 1` made one image, of seed 1, with exit status 0
    _refused(capsys, argv + ["--out", str(tmp_path / "a.png")], f"{flag} was given twice", fix)


def test_the_parsed_arguments_carry_no_record_of_the_check():
    from samplers.cli import build_parser

    args = build_parser().parse_args(["generate", "a red circle", "--seed", "0", "1", "--out", "a.png"])
    assert args.seed == [0, 1] and not any(k.startswith("_") for k in vars(args))


@pytest.mark.parametrize("argv, given", [
    (["compare", "a red circle", "--sampler", "heun"], "--sampler"),  # compare has --samplers only (docs/models.md)
    (["generate", "a red circle", "--step", "3"], "--step"),  # argparse read it as --steps 3
    (["fit", "--model", "gm-ve", "--nfe", "3", "--calib", "8"], "--calib"),  # read as --calibration 8
])
def test_an_abbreviated_option_is_refused_not_read_as_the_option_it_begins(capsys, no_load, tmp_path, argv, given):
    _refused(capsys, argv + ["--out", str(tmp_path / "a.png")], "unrecognized arguments", given)


@pytest.mark.parametrize("command", ["generate", "compare"])
def test_a_weights_folder_of_another_kind_than_model_is_told_with_the_flags(capsys, no_load, tmp_path, command):
    # the fix was spelt in Python: "give that folder without model (or with model='eps')"
    line = _refused(capsys, [command, "a red circle", "--weights", "models/weights/eps", "--model", "flow", "--out",
                             str(tmp_path / "a.png")],
                    "--model flow asks for", "--weights models/weights/eps holds one with prediction 'eps'",
                    "leave out --model (or pass --model eps)", "give --weights a folder of a 'flow' U-Net")
    assert "model=" not in line


def test_the_library_names_its_own_arguments_for_a_folder_of_another_kind():
    from models.pipeline import ModelKindError, PipelineSpec

    with pytest.raises(ModelKindError, match=r"model='flow' asks .* without model \(or with model='eps'\)") as e:
        PipelineSpec.read("models/weights/eps", model="flow")
    assert (e.value.model, e.value.prediction) == ("flow", "eps") and isinstance(e.value, ValueError)


# ---- the default --out: under the ignored out/ folder (made for it), not generated.png / compare.png in the current
# folder, which a plain run from a checkout left there untracked and the next run replaced


@pytest.mark.parametrize("command, argv, written", [
    ("generate", ["--steps", "2"], "generated.png"),
    ("compare", ["--samplers", "euler", "--steps", "2", "--n", "1"], "compare.png")])
def test_the_default_out_is_under_out(capsys, tmp_path, monkeypatch, command, argv, written):
    from samplers.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([command, "a red circle", *argv]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["out", f"out/{written}"]
    assert f"wrote out/{written}" in capsys.readouterr().out
    assert f"(default: out/{written}, its folder made if missing)" in " ".join(_help(command).split())


def _help(command: str) -> str:
    from samplers.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return sub.format_help()


@pytest.mark.parametrize("argv, words", [
    (["generate", "a red circle", "--sampler", "eulr"], ["'eulr'"]),
    (["generate", "a red circle", "--steps", "0"], ["argument --steps: 0 is below 1"]),
    (["generate", "a red circle", "--option", "eta=-1"], ["eta"]),
    (["compare", "a red circle", "--samplers", "eulr"], ["'eulr'"]),
    (["compare", "a red circle", "--steps", "0"], ["argument --steps: 0 is below 1"])])
def test_a_refused_command_with_the_default_out_leaves_no_out_folder(capsys, no_load, tmp_path, monkeypatch, argv,
                                                                      words):
    """out/ was made when --out was checked, before the sampler, steps and options: a command refused after that
    (exit 2) left an empty out/ in the current folder. It is made just before the image is written."""
    monkeypatch.chdir(tmp_path)
    _refused(capsys, argv, *words)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["generate", "a", "--steps", "0"], ["argument --steps: 0 is below 1: pass an integer from 1 to 10000"]),
    (["generate", "a", "--steps", "10001"], ["argument --steps: 10001 is more than 10000, the pipeline's step limit"]),
    (["compare", "a", "--steps", "4", "0"], ["argument --steps: 0 is below 1"]),
    (["generate", "a", "--seed", "3", "-1"], ["argument --seed: -1 is below 0: pass an integer from 0 to 1844"]),
    (["compare", "a", "--seed", str(2**64)], ["argument --seed: 18446744073709551616 is more than 1844"])])
def test_steps_and_seeds_out_of_range_are_refused_naming_the_flag(capsys, no_load, argv, words):
    """The pipeline's rules for steps (1 to its limit) and seeds ([0, 2**64)) are applied as the command line is
    read: the refusal names --steps / --seed (it said 'steps must be an integer >= 1, got 0', the library's keyword)."""
    _refused(capsys, argv, *words)


def test_the_default_out_refuses_a_current_folder_it_cannot_make_out_in_before_any_work(capsys, no_load, tmp_path,
                                                                                       monkeypatch):
    """Whether out/ can be made is still found before the weights are read, by trying the temporary file a write
    makes (then removed), not by making the folder."""
    from samplers.core import files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "_write_error", lambda folder, name: PermissionError(13, "Permission denied"))
    _refused(capsys, ["generate", "a red circle"], "the default --out 'out/generated.png'", "Permission denied",
             "give --out a PNG path")
    assert not any(tmp_path.iterdir())


def test_the_default_out_refuses_an_out_that_is_a_file_and_an_out_given_in_a_missing_folder(capsys, no_load, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("")
    _refused(capsys, ["generate", "a red circle"], "the default --out 'out/generated.png'", "a file of that name",
             "give --out a PNG path")
    (tmp_path / "out").unlink()
    # a link to nothing: exists() is False, and mkdir failed only after the run (the image lost)
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    _refused(capsys, ["generate", "a red circle"], "the default --out 'out/generated.png'", "a symbolic link to nothing",
             "give --out a PNG path")
    (tmp_path / "out").unlink()
    _refused(capsys, ["compare", "a red circle", "--out", "new/grid.png"], "'new' does not exist")
    assert not any(tmp_path.iterdir())  # a folder is made for the default only

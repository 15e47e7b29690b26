"""`samplers generate` / `compare` and the models' building blocks at their seams: each bad value refused once, at the
boundary, before the weights are read or any model is called, with an error naming the value, the rule and the fix;
what the checker cannot score shown as such, not a failure after the model ran."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType

ROOT = Path(__file__).resolve().parent.parent

from test_cli import _refused  # noqa: E402 (the CLI boundary's check; no_load is conftest's)


def _copy_unet(tmp_path: Path, **patch) -> Path:
    d = tmp_path / "eps"
    shutil.copytree(ROOT / "models" / "weights" / "eps", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(patch)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


# ---- F7: a cfg just beyond the limit is shown as given, not rounded to the limit


@pytest.mark.parametrize("value, shown", [(100.0001, "100.0001"), (-100.00001, "-100.00001"), (101.0, "101")])
def test_a_cfg_just_beyond_the_limit_is_shown_as_given(capsys, no_load, tmp_path, value, shown):
    line = _refused(capsys, ["generate", "a red circle", "--cfg", repr(value), "--out", str(tmp_path / "a.png")],
                    "--cfg")
    assert line.split("--cfg: ")[1].startswith(f"{shown} is beyond"), line
    from models.pipeline import Pipeline

    pipe = Pipeline.__new__(Pipeline)  # guidance reads only the defaults
    pipe.defaults = {"cfg": 4.0}
    with pytest.raises(InvalidOption, match=f"cfg = {shown} is beyond"):
        pipe.guidance(value)


# ---- F2: config.json's defaults.cfg is checked by the rule of every cfg, when config.json is read


@pytest.mark.parametrize("cfg", [1000.0, -101.0, 100.5])
def test_a_default_cfg_beyond_the_limit_is_refused_before_the_weights_naming_config_json(capsys, no_load, tmp_path,
                                                                                         cfg):
    d = _copy_unet(tmp_path, defaults={"cfg": cfg})
    line = _refused(capsys, ["generate", "a red circle", "--steps", "2", "--weights", str(d),
                             "--out", str(tmp_path / "a.png")], "config.json", "defaults.cfg", "|cfg| <= 100")
    assert "--cfg" not in line
    from models import io as mio
    from models.pipeline import PipelineSpec

    with pytest.raises(mio.ConfigMismatchError, match="defaults.cfg"):
        PipelineSpec.read(d)


def test_a_negative_default_cfg_is_a_guidance_scale_as_a_negative_cfg_is(tmp_path):
    from models.pipeline import PipelineSpec

    d = _copy_unet(tmp_path, defaults={"cfg": -3.0})
    assert PipelineSpec.read(d).defaults["cfg"] == -3.0


# ---- F4: a noise option the caller passed for a run that draws no noise is refused, not dropped


@pytest.mark.parametrize("sampler, options, words", [
    ("euler", {"noise_sampler": "brownian"}, ["noise_sampler", "s_churn > 0"]),
    ("euler", {"s_noise": 0.3}, ["s_noise", "s_churn > 0"]),
    ("euler", {"s_tmin": 0.3}, ["s_tmin", "s_churn > 0"]),
    ("heun", {"s_churn": 0, "s_tmax": 3.0}, ["s_tmax", "s_churn > 0"]),
    ("euler_ancestral", {"eta": 0, "noise_sampler": "brownian"}, ["noise_sampler", "eta > 0"]),
    ("euler_ancestral", {"eta": 0.0, "s_noise": 0.5}, ["s_noise", "eta > 0"]),
    ("ddim", {"s_noise": 0.5}, ["s_noise", "eta > 0"]),
])
def test_the_pipeline_refuses_a_noise_option_of_a_run_that_draws_no_noise_before_any_model_call(sampler, options,
                                                                                               words):
    from models.pipeline import PipelineSpec, check_sampler

    with pytest.raises(InvalidOption, match="is not read: this run draws no noise") as err:
        check_sampler(sampler, options=options)
    assert all(w in str(err.value) for w in words) and "leave" in str(err.value)
    spec = PipelineSpec.read(model="eps")  # txt2img's planning, which runs before any prompt is encoded
    with pytest.raises(InvalidOption, match="is not read"):
        spec.plan_run(sampler, None, 3, dict(options))
    with pytest.raises(InvalidOption, match="is not read"):
        spec.check_request(sampler, None, 3, dict(options), prompt="a red circle")


@pytest.mark.parametrize("sampler, options", [
    ("euler", {"s_churn": 1.0, "s_noise": 0.5, "s_tmin": 0.3, "s_tmax": 10.0, "noise_sampler": "brownian"}),
    ("euler_ancestral", {"s_noise": 0.5, "noise_sampler": "brownian"}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.5}),
    ("DPM++ 2M SDE", {"eta": 0}),  # the label's noise_sampler is the label's, not the caller's: not refused
    ("euler", {"noise_sampler": None}),  # None is the default: nothing given
])
def test_noise_options_that_the_run_reads_are_taken(sampler, options):
    from models.pipeline import check_sampler

    check_sampler(sampler, options=options)


def test_txt2img_refuses_a_noise_option_of_a_noiseless_run_before_any_model_call(monkeypatch):
    from models.pipeline import Pipeline

    pipe = Pipeline.load(model="eps")
    monkeypatch.setattr(pipe.model, "encode_text", lambda *a, **k: pytest.fail("a prompt was encoded"))
    monkeypatch.setattr(pipe, "_model_fn", lambda *a, **k: pytest.fail("the model was called"))
    with pytest.raises(InvalidOption, match="s_noise=0.3 is not read"):
        pipe.txt2img("a red circle", sampler="euler", steps=3, seed=1, s_noise=0.3, progress=False)


@pytest.mark.parametrize("command", ["generate", "compare"])
@pytest.mark.parametrize("args, words", [
    (["--option", "noise_sampler=brownian"], ["noise_sampler='brownian'", "s_churn > 0"]),
    (["--option", "s_noise=0.3"], ["s_noise=0.3", "s_churn > 0"]),
    (["--option", "s_tmin=0.3"], ["s_tmin=0.3"]),
])
def test_the_cli_refuses_a_noise_option_of_a_noiseless_run_before_loading(capsys, no_load, tmp_path, command, args,
                                                                          words):
    sampler = ["--sampler", "euler"] if command == "generate" else ["--samplers", "euler"]
    _refused(capsys, [command, "a red circle", "--steps", "3", *sampler, *args, "--out", str(tmp_path / "a.png")],
             "is not read", *words)


def test_the_cli_refuses_noise_options_with_eta_0_before_loading(capsys, no_load, tmp_path):
    _refused(capsys, ["generate", "a red circle", "--sampler", "euler_ancestral", "--option", "eta=0", "--option",
                      "noise_sampler=brownian", "--out", str(tmp_path / "a.png")], "noise_sampler", "eta > 0")


@pytest.mark.parametrize("sampler, options", [
    # A1111 sends its sampler parameters at their defaults with every sampler: nothing changes, nothing to refuse
    ("Euler", {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}),
    ("Euler a", {"eta": 0.0, "s_noise": 1.0}),
    ("DPM++ 2M SDE Karras", {"eta": 0.0, "s_noise": 1.0}),
])
def test_noise_options_at_their_defaults_are_taken_where_no_noise_is_drawn(sampler, options):
    from models.pipeline import PipelineSpec, check_sampler

    check_sampler(sampler, options=dict(options))
    PipelineSpec.read(model="eps").plan_run(sampler, None, 4, dict(options))


def test_a_label_that_sets_eta_0_is_named_with_a_fix_that_runs():
    from models.pipeline import check_sampler

    with pytest.raises(InvalidOption) as err:
        check_sampler("exp_heun_2_x0", options={"noise_sampler": "brownian_tree"})
    message = str(err.value)
    # ComfyUI's sample_exp_heun_2_x0 takes no noise_sampler: refused as ComfyUI's name, naming the settings it runs
    # (η = 0: it draws nothing) and the registry sampler that takes one
    assert "takes no noise_sampler" in message and "eta=0.0" in message and "(its default)" not in message
    assert "name the registry sampler 'seeds_2' to choose noise_sampler yourself" in message
    check_sampler("seeds_2", options={"noise_sampler": "brownian_tree", "eta": 0.5})  # the fix named runs


def test_compare_leaves_a_noise_option_out_of_the_rows_that_never_read_it_where_another_row_reads_it():
    from app.images import compare_grid
    from models.pipeline import shared_options

    rows = shared_options(["euler", "euler_ancestral"], {"s_noise": 0.5})
    assert rows == {"euler": {}, "euler_ancestral": {"s_noise": 0.5}}  # an ODE baseline beside an ancestral row
    pipe, given = _FakePipe(), {}
    pipe.txt2img = lambda prompts, sampler, **k: given.setdefault(sampler, k) is not None and torch.zeros(
        len(prompts), 3, 64, 64)
    compare_grid(pipe, ["a red circle"], ["euler", "euler_ancestral"], [2], options={"s_noise": 0.5})
    assert "s_noise" not in given["euler"] and given["euler_ancestral"]["s_noise"] == 0.5
    with pytest.raises(InvalidOption, match="no row of the grid reads it"):
        shared_options(["euler", "heun"], {"s_noise": 0.5})


def test_the_cli_compares_an_ode_row_beside_an_ancestral_one_with_a_noise_option(capsys, no_load, tmp_path):
    # every check before the weights passes: the command goes on to load them (here a stand-in that says so)
    from samplers.cli import main

    main(["compare", "a red circle", "--samplers", "euler", "euler_ancestral", "--option", "s_noise=0.5", "--steps",
          "2", "--out", str(tmp_path / "c.png")])
    assert "the weights were loaded" in capsys.readouterr().err
    _refused(capsys, ["compare", "a red circle", "--samplers", "euler", "heun", "--option", "s_noise=0.5",
                      "--steps", "2", "--out", str(tmp_path / "c.png")], "no row of the grid reads it")


# ---- F5: the batch / seed limits named as the command's flags, with a fix the command has


def test_compare_names_n_beyond_the_batch_limit(capsys, no_load, tmp_path):
    line = _refused(capsys, ["compare", "a red circle", "--n", "5000", "--out", str(tmp_path / "c.png")],
                    "--n 5000", "4096", "pass --n 4096 or fewer")
    assert "batch" not in line


def test_generate_names_the_seed_count_beyond_the_batch_limit(capsys, no_load, tmp_path):
    line = _refused(capsys, ["generate", "a red circle", "--seed", *map(str, range(4097)),
                             "--out", str(tmp_path / "g.png")], "4097 --seed values", "4096")
    assert "batch" not in line


@pytest.mark.parametrize("seed, words", [
    (str(2**64 - 2), [f"--seed {2**64 - 2}", "--n 3", f"pass --seed from 0 to {2**64 - 3}"]),
    (str(2**64), [f"argument --seed: {2**64} is more than {2**64 - 1}"])])  # beyond any seed: as it is read
def test_compare_names_its_one_seed_and_no_seed_list(capsys, no_load, tmp_path, seed, words):
    line = _refused(capsys, ["compare", "a red circle", "--n", "3", "--seed", seed, "--out", str(tmp_path / "c.png")],
                    *words)
    assert "one seed per item" not in line


def test_the_pipeline_names_a_seed_list_beyond_the_batch_limit():
    import samplers
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(model="eps")
    with pytest.raises(samplers.LimitExceeded, match="4097 seeds .* more than the limit of 4096 items per call"):
        spec.check_request("euler", None, 2, seed=list(range(4097)), prompt="a red circle")
    with pytest.raises(samplers.LimitExceeded, match="batch = 4097 is more than the limit of 4096 items per call"):
        spec.check_request("euler", None, 2, seed=0, batch=4097, prompt="a red circle")


# ---- F1 / F6: compare runs a prompt the checker cannot score (match "–"); its grid names every row in full


class _FakePipe:
    """Plans runs as the eps model does and 'samples' a flat image per call (no weights, no model call)."""

    def __init__(self):
        from samplers.core.native import VPDiscrete
        from models.pipeline import Pipeline

        self.real = Pipeline.__new__(Pipeline)
        self.real.defaults = {"sampler": "dpmpp_2m", "schedule": "karras", "steps": 20, "cfg": 4.0}
        self.real.native = VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
        self.nfe, self.made = 0, []

    def guidance(self, cfg):
        return self.real.guidance(cfg)

    def plan(self, *a):
        return self.real.plan(*a)

    def runs_comfyui_flow_rule(self, found):
        return self.real.runs_comfyui_flow_rule(found)

    def txt2img(self, prompts, sampler, **k):
        self.made.append(sampler)
        return torch.full((len(prompts), 3, 64, 64), 0.1 * len(self.made) - 0.5)


@pytest.mark.parametrize("prompt", ["a red circle in the center", "red circle", ""])
def test_compare_grid_runs_a_prompt_the_checker_cannot_score_and_shows_no_match(prompt):
    from app.images import compare_grid, format_table, unscorable

    assert unscorable(prompt) is not None and unscorable("a red circle") is None
    pipe = _FakePipe()
    grid, rows = compare_grid(pipe, [prompt] * 2, ["euler", "heun"], [2, 3])
    assert pipe.made == ["euler", "euler", "heun", "heun"] and [r["match"] for r in rows] == [None] * 4
    table = format_table(rows, 2)
    assert table.splitlines()[1].split()[3] == "–" and "cannot score" in table


def test_compare_says_at_the_start_that_the_checker_cannot_score_the_prompt(capsys, monkeypatch, tmp_path):
    from models import pipeline
    from samplers.cli import main

    seen = {}

    def load(*_a, **_k):  # the note comes before the weights are read
        seen["err"] = capsys.readouterr().err
        raise InvalidInput("stopped at Pipeline.load by the test")

    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(load))
    assert main(["compare", "a red circle in the center", "--samplers", "euler", "--steps", "2", "--n", "1",
                 "--out", str(tmp_path / "c.png")]) == 2
    note = seen["err"].strip().splitlines()
    assert len(note) == 1 and "cannot score 'a red circle in the center'" in note[0] and "caption grammar" in note[0]
    assert "match column shows –" in note[0]


def test_compare_says_nothing_of_a_prompt_the_checker_scores(capsys, monkeypatch, tmp_path):
    from models import pipeline
    from samplers.cli import main

    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(lambda *a, **k: (_ for _ in ()).throw(
        InvalidInput("stopped"))))
    assert main(["compare", "a red circle", "--samplers", "euler", "--steps", "2", "--n", "1",
                 "--out", str(tmp_path / "c.png")]) == 2
    assert "cannot score" not in capsys.readouterr().err


def test_compare_grid_labels_each_row_by_its_whole_name_and_fits_the_title():
    import numpy as np
    from PIL import Image, ImageDraw

    from app.images import _font, _wrap, compare_grid

    names = ["DPM++ 2M SDE Exponential", "DPM++ 3M SDE Exponential"]
    title = "eps: 'a large red circle at the top left and a small blue square at the bottom right', seed 0"
    grid, _ = compare_grid(_FakePipe(), ["a red circle"], names, [2], title=title)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert grid.width >= measure.textlength(title, font=_font()) + 4
    g = np.asarray(grid.convert("L"))
    rows = [g[52 + i * 146: 52 + i * 146 + 128, :100] for i in range(2)]
    assert (rows[0] != rows[1]).any()  # the two labels differ (they were both " SDE Exponential")
    long = "fitted:" + "/a-very-long-folder-name" * 6 + "/nfe8.json"
    lines = _wrap(measure, long, _font(), 106)
    assert "".join(lines) == long and all(measure.textlength(x, font=_font()) <= 106 for x in lines)
    lines = _wrap(measure, names[0], _font(), 100)
    assert " ".join(lines) == names[0] and len(lines) > 1


# ---- F8: the building blocks refuse what the pipeline refuses, by the same rules


@pytest.fixture(scope="module")
def eps():
    from models.pipeline import Pipeline

    return Pipeline.load(model="eps")


@pytest.mark.parametrize("bad", [[None], [123], ["a red circle", b"x"], None, 5])
def test_the_text_encoder_refuses_what_is_not_a_string(eps, bad):
    with pytest.raises(InvalidType, match="string"):
        eps.model.text_encoder(bad)
    with pytest.raises(InvalidType, match="string"):
        eps.tokenizer(bad if bad is not None else [None])


def test_encode_prompts_refuses_a_prompt_txt2img_refuses(eps, monkeypatch):
    long = " ".join(["a red circle and a blue square"] * 4)  # 28 words: over the encoder's 23
    with pytest.raises(InvalidInput, match="has 28 words but the text encoder reads at most 23"):
        eps.txt2img(long, steps=2, progress=False)
    monkeypatch.setattr(eps.model, "encode_text", lambda *a, **k: pytest.fail("a prompt was encoded"))
    with pytest.raises(InvalidInput, match="has 28 words but the text encoder reads at most 23"):
        eps.encode_prompts([long])
    with pytest.raises(InvalidType):
        eps.encode_prompts([None])


def test_encode_prompts_takes_a_string_as_one_prompt(eps):
    one, listed = eps.encode_prompts("a red circle"), eps.encode_prompts(["a red circle"])
    assert one["context"].shape[0] == 1 and torch.equal(one["context"], listed["context"])


@pytest.mark.parametrize("fill, words", [(255.0, "must lie in [-2, 2], got values from 255 to 255"),
                                         (float("nan"), "NaN or infinite"), (-2.5, "must lie in [-2, 2]")])
def test_the_vae_refuses_images_that_are_not_pixels(eps, fill, words):
    images = torch.full((1, 3, 64, 64), fill)
    for encode in (eps.vae.to_latent, eps.vae.encode):
        with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")) as err:
            encode(images)
        assert "127.5" in str(err.value)
    with pytest.raises(InvalidInput, match="must lie in|NaN"):  # the pipeline's img2img: its own [-1, 1], first
        eps.img2img(images, "a red circle", steps=2, progress=False)


def test_the_vae_encodes_a_resized_images_overshoot_as_diffusers_does(eps):
    # bicubic resampling overshoots [-1, 1]: still pixels, encoded (the pipeline's img2img keeps its [-1, 1])
    from models import data

    x = data.make_batch(0, 2)[0]
    up = torch.nn.functional.interpolate(x, size=(96, 96), mode="bicubic", align_corners=False)
    assert float(up.abs().max()) > 1.1
    assert torch.isfinite(eps.vae.to_latent(up)).all()
    with pytest.raises(InvalidInput, match=r"must lie in \[-1, 1\]"):
        eps.img2img(up, "a red circle", steps=2, progress=False)


def test_the_vae_takes_its_whole_pixel_range(eps):
    images = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    assert torch.isfinite(eps.vae.to_latent(images)).all()


def test_samplers_fit_checks_its_prompts_by_txt2img_rule_before_the_weights(capsys, no_load, tmp_path):
    long = " ".join(["a large red circle"] * 7)  # 28 words: over the encoder's 23
    _refused(capsys, ["fit", "--model", "eps", "--prompts", "a red circle", long, "--nfe", "4", "--out",
                      str(tmp_path / "fit")], "--prompts:", "prompt 1")


def test_compare_refuses_negative_prompt_with_the_pipelines_reason(capsys, no_load, tmp_path):
    _refused(capsys, ["compare", "a red circle", "--samplers", "euler", "euler_ancestral", "--option",
                      "negative_prompt=blurry", "--steps", "2", "--out", str(tmp_path / "c.png")],
             "the pipeline takes no negative_prompt")


def test_the_churn_refusal_also_names_the_samplers_that_draw_noise():
    from models.pipeline import check_sampler

    with pytest.raises(InvalidOption, match=r"s_churn > 0 for churn, or use an ancestral / SDE sampler"):
        check_sampler("euler", options={"s_noise": 0.5})


def test_samplers_fit_names_prompts_only_for_the_prompts(capsys, no_load, tmp_path, monkeypatch):
    from models import pipeline

    def broken(*_a, **_k):
        raise pipeline.InvalidInput("missing models/weights/eps/config.json")

    monkeypatch.setattr(pipeline.PipelineSpec, "read", classmethod(broken))
    line = _refused(capsys, ["fit", "--model", "eps", "--prompts", "a red circle", "--nfe", "4", "--out",
                             str(tmp_path / "fit")], "missing models/weights/eps/config.json")
    assert "--prompts" not in line


# ---- an --out the run could not write: refused before the weights, not after every image was made


@pytest.mark.parametrize("command", [["generate", "a red circle", "--steps", "2", "--seed", "0"],
                                     ["compare", "a red circle", "--samplers", "euler", "heun", "--steps", "1", "2"]])
def test_an_out_folder_the_run_cannot_write_in_is_refused_before_the_weights(capsys, no_load, unwritable, command):
    _refused(capsys, [*command, "--out", str(unwritable / "a.png")], "cannot write in folder", str(unwritable),
             "choose a folder you can write to")
    assert not [p for p in unwritable.iterdir() if p.name.startswith(".a.png")]


def test_a_fit_out_the_run_cannot_write_in_is_refused_before_the_model(capsys, monkeypatch, unwritable):
    """``samplers fit --out`` in a folder no file can be made in failed at ``out.mkdir``, after the model was built
    and fingerprinted, with a bare errno message ('[Errno 2] No such file or directory' for /proc/fitout): refused
    before the model, naming --out, the folder and the fix."""
    from app import fit as fit_cli

    monkeypatch.setattr(fit_cli, "make_target", lambda args: pytest.fail("the model was built"))
    for out in (unwritable, unwritable / "fit"):
        _refused(capsys, ["fit", "--model", "gm-ve", "--nfe", "3", "--out", str(out)], "--out",
                 "cannot write in folder", str(unwritable), "name a folder you can write to")
    assert not (unwritable / "fit").exists()


def test_an_out_whose_folder_is_a_file_says_so(capsys, no_load, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    line = _refused(capsys, ["generate", "a red circle", "--out", str(tmp_path / "notes.txt" / "a.png")],
                    "is a file, not a folder")
    assert "does not exist" not in line


# ---- two prompts the text encoder reads as one, at one seed, are one image twice


def test_prompts_the_encoder_reads_alike_at_one_seed_are_refused_as_twins():
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(model="eps")
    with pytest.raises(InvalidInput, match=r"items 0 and 1 have prompts the text encoder reads as one \('a red "
                                           r"circle' and 'A Red Circle!'.*and the same seed \(4\)"):
        spec.check_request(prompt=["a red circle", "A Red Circle!"], seed=[4, 4])
    with pytest.raises(InvalidInput, match="reads as one.*an unknown word as <unk>"):
        spec.check_request(prompt=["a red zorble", "a red quux"], seed=[4, 4])
    spec.check_request(prompt=["a red circle", "a red square"], seed=[4, 4])  # two images: fine
    spec.check_request(prompt=["a red circle", "A Red Circle!"], seed=[4, 5])


def test_a_shipped_models_name_given_as_the_folder_points_to_model(tmp_path, monkeypatch):
    from models.io import MissingModelError
    from models.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)  # where no folder named eps lies
    with pytest.raises(MissingModelError, match=r"model folder 'eps' does not exist; for the shipped eps model pass "
                                                r"model='eps' \(Pipeline.load\(model='eps'\)\)"):
        Pipeline.load("eps")
    with pytest.raises(MissingModelError, match=r"'other' does not exist; train one"):
        Pipeline.load("other")


# ----------------------------------------------------------------------------------------------------
# An audit of 2026-12-07: s_churn with a window that holds no step of the run (given in timesteps, say) was taken,
# and the image was the one made without it


@pytest.mark.parametrize("window", [(100.0, 200.0), (200.0, 800.0), (0.0, 0.0), (5.0, 10.0)])
def test_a_churn_window_that_holds_no_step_of_the_run_is_refused_before_any_model_call(window):
    from models.pipeline import PipelineSpec

    spec = PipelineSpec.read(model="eps")
    lo, hi = window
    starts = spec.sigmas(spec.defaults["schedule"], 4)[:-1].tolist()  # karras: 14.6, 3.2, 0.45, 0.029
    assert not any(lo <= s <= hi for s in starts)
    with pytest.raises(InvalidOption, match=rf"s_churn=1 adds no noise on this run: no step of its schedule starts "
                                            rf"within the churn window \[s_tmin, s_tmax\] = \[{lo:g}, {hi:g}\]"):
        spec.plan_run("euler", None, 4, {"s_churn": 1.0, "s_tmin": lo, "s_tmax": hi})
    spec.plan_run("euler", None, 4, {"s_churn": 1.0, "s_tmin": 0.1, "s_tmax": 5.0})  # holds 3.2 and 0.45
    spec.plan_run("euler", None, 4, {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf})  # A1111's defaults


def test_a_churn_window_above_an_img2img_cut_is_refused_and_one_within_it_churns():
    from models.pipeline import Pipeline

    pipe = Pipeline.load(model="eps")
    image = torch.full((1, 3, 64, 64), -0.5)
    before = pipe.nfe
    with pytest.raises(InvalidOption, match="adds no noise on this run"):  # the cut's steps start at 0.45 and below
        pipe.img2img(image, "a red circle", strength=0.5, sampler="heun", steps=4, seed=0, progress=False,
                     s_churn=1.0, s_tmin=1.0, s_tmax=20.0)
    assert pipe.nfe == before
    kw = dict(strength=0.5, sampler="euler", steps=4, seed=0, progress=False, output="tensor")
    plain = pipe.img2img(image, "a red circle", **kw)
    churned = pipe.img2img(image, "a red circle", s_churn=1.0, s_tmin=0.1, s_tmax=1.0, **kw)
    assert float((plain - churned).abs().max()) > 1e-3


@pytest.mark.parametrize("command", ["generate", "compare"])
def test_the_cli_refuses_an_empty_churn_window_before_the_weights_are_read(capsys, no_load, tmp_path, command):
    target = ["--samplers", "euler", "heun"] if command == "compare" else ["--sampler", "euler"]
    _refused(capsys, [command, "a red circle", *target, "--steps", "4", "--option", "s_churn=1", "--option",
                      "s_tmin=200", "--option", "s_tmax=800", "--out", str(tmp_path / "x.png")],
             "adds no noise on this run")

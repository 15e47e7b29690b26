"""Paths at the seams of the command lines and `samplers fit`: an empty path is refused (never read as the current
folder), a file given for a folder is named as a file, a diffusers folder's scheduler config and UNet files are
checked before the UNet is built or called (safetensors only: a pickle is never loaded), a scheduler config diffusers
rejects is refused before anything is fitted, and report.json's solver paths are the report's own folder's."""
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest

from conftest import cli_last_wins as main  # a base command line's options overridden by repeating them

QUICK = ["--calibration", "8", "--heldout", "2", "--iters", "0", "--pool", "0", "--starts", "1", "--screen", "4",
         "--threads", "1"]


# ------------------------------------------------------------------------------------------------ empty paths


def test_an_empty_path_is_refused_naming_the_flag_and_nothing_is_written_in_the_current_folder(
        tmp_path, monkeypatch, capsys):
    import argparse

    from samplers.core.argtypes import out_file, out_folder

    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    for parse in (out_folder, out_file):
        with pytest.raises(argparse.ArgumentTypeError, match="empty path"):
            parse("")
    for argv, flag in ((["demo", "--out", ""], "--out"),
                       (["generate", "a red circle", "--weights", "", "--out", "x.png"], "--weights"),
                       (["generate", "a red circle", "--vae", "", "--out", "x.png"], "--vae"),
                       (["generate", "a red circle", "--out", ""], "--out"),
                       (["compare", "a red circle", "--out", ""], "--out"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "", *QUICK], "--out"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "o", "--prompt-embeds", "", *QUICK],
                        "--prompt-embeds"),
                       (["fit", "--model", "gm-ve", "--nfe", "2", "--out", "o", "--scheduler-config", "", *QUICK],
                        "--scheduler-config")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"argument {flag}: '' is an empty path" in err, (argv, err)
    assert main(["fit", "--model", "", "--nfe", "2", "--out", "o", *QUICK]) == 2
    assert "--model '' is an empty path" in capsys.readouterr().err
    assert list(here.iterdir()) == []


# ------------------------------------------------------------------------------------- a file for a folder


def test_a_file_given_for_a_weights_or_vae_folder_is_named_a_file(tmp_path, capsys):
    from models.pipeline import Pipeline, PipelineSpec
    from samplers.core.errors import InvalidInput

    afile = tmp_path / "weights.txt"
    afile.write_text("x")
    for flag in ("--weights", "--vae"):
        code = main(["generate", "a red circle", flag, str(afile), "--out", str(tmp_path / "o.png")])
        err = capsys.readouterr().err
        kind = "U-Net" if flag == "--weights" else "VAE"
        assert code == 2 and f"{str(afile)!r} is a file, not a {kind} folder" in err and "does not exist" not in err
    for call in (lambda: Pipeline.load(afile), lambda: PipelineSpec.read(vae=afile), lambda: Pipeline.load("")):
        with pytest.raises(InvalidInput, match="is a file, not a|empty path"):
            call()
    assert not (tmp_path / "o.png").exists()


# ----------------------------------------------------------------------------------------- a diffusers folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from benchmarks import tiny_unet

    return tiny_unet.make(tmp_path_factory.mktemp("unet") / "tiny")


@pytest.fixture
def unbuilt(monkeypatch):
    """UNet2DConditionModel.from_pretrained raises Built: a run that reaches it passed every check of the files."""
    from diffusers import UNet2DConditionModel

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        raise Built("every file passed")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", build)


def fit_argv(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--model", str(folder), "--prompt-embeds", str(folder / "embeds.safetensors"), "--nfe", "2",
            "--out", str(out), *QUICK, *extra]


def copy_of(tiny: Path, tmp_path: Path, name: str = "unet") -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny, folder)
    return folder


def test_a_scheduler_config_too_deep_or_with_a_huge_integer_is_refused_naming_it(tiny, tmp_path, capsys, unbuilt):
    for name, text in (("deep.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                       ("bigint.json", '{"num_train_timesteps": ' + "9" * 5000 + "}")):
        path = tmp_path / name
        path.write_text(text)
        code = main(fit_argv(tiny, tmp_path / "fit", "--scheduler-config", str(path)))
        err = capsys.readouterr().err
        assert code == 2 and f"{path} is not readable JSON (the scheduler config)" in err and "--debug" not in err, err
    assert not (tmp_path / "fit").exists()


def test_a_diffusers_folders_unet_files_are_checked_before_the_unet_is_built(tiny, tmp_path, capsys, unbuilt):
    weights = "diffusion_pytorch_model.safetensors"

    def run(folder: Path) -> tuple[int, str]:
        code = main(fit_argv(folder, tmp_path / "fit", "--scheduler-config", str(tiny / "scheduler_config.json"),
                             "--prompt-embeds", str(tiny / "embeds.safetensors")))
        return code, capsys.readouterr().err

    assert run(tiny)[1].endswith("every file passed (Built; --debug for the traceback)\n")  # the good folder
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    def edit_config(**fields):
        def edit(folder: Path):
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **fields}))
        return edit

    def truncate(folder: Path):
        blob = (folder / weights).read_bytes()
        (folder / weights).write_bytes(blob[:-100])

    def pickle_only(folder: Path):
        (folder / weights).unlink()
        (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Evil()))

    cases = [(truncate, [weights, "not a readable safetensors file", "truncated"]),
             (lambda f: (f / weights).unlink(), [f"no {weights} there (no weights)", "safetensors only"]),
             (pickle_only, ["only diffusion_pytorch_model.bin, a pickle checkpoint, which is never loaded"]),
             (lambda f: (f / "config.json").write_text("[]"), ["config.json holds a JSON list"]),
             (edit_config(block_out_channels=[64, 128]),
              ["are not the UNet its config", "conv_in.weight [32, 4, 3, 3] in the weights, [64, 4, 3, 3] by the "
                                              "config"]),
             (edit_config(layers_per_block=2), ["the config's UNet has and the weights lack"]),
             (edit_config(sample_size=0), ["config.json has sample_size 0: it must be a whole number >= 1"]),
             (edit_config(sample_size=-8), ["has sample_size -8"]),
             (edit_config(in_channels=0), ["has in_channels 0"]),
             (edit_config(out_channels=8), ["has in_channels 4 and out_channels 8"]),
             (edit_config(_class_name="AutoencoderKL"), ["describes a 'AutoencoderKL', not a UNet2DConditionModel"])]
    for k, (make_bad, words) in enumerate(cases):
        folder = copy_of(tiny, tmp_path, f"unet{k}")
        make_bad(folder)
        code, err = run(folder)
        assert code == 2 and str(folder) in err and all(w in err for w in words), (k, err)
        assert "--debug" not in err and "fitting to" not in err
    assert not marker.exists() and not (tmp_path / "fit").exists()


def test_an_unknown_scheduler_class_is_refused_before_anything_is_fitted(tiny, tmp_path, capsys, unbuilt):
    config = tmp_path / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads((tiny / "scheduler_config.json").read_text()), "_class_name": "Nope"}))
    code = main(fit_argv(tiny, tmp_path / "fit", "--scheduler-config", str(config)))
    err = capsys.readouterr().err
    assert code == 2 and f"the scheduler config {config} names _class_name 'Nope'" in err, err
    assert not (tmp_path / "fit").exists()


def test_a_scheduler_config_diffusers_rejects_is_refused_with_its_reason_and_the_benchmarks_keep_skipping(
        tiny, tmp_path, capsys, unbuilt):
    from benchmarks.peers import PeerRefused, peer_steps

    settings = json.loads((tiny / "scheduler_config.json").read_text())
    for name, edit, words in (("spacing", {"timestep_spacing": 7}, ["7 is not supported", "set_timesteps refuses "
                                                                     "every step count from 1 to 2"]),
                              ("unknown", {"no_such_setting": 1}, ["'no_such_setting'", "which no diffusers "
                                                                   "scheduler class takes"])):
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({**settings, **edit}))
        code = main(fit_argv(tiny, tmp_path / "fit", "--scheduler-config", str(config)))
        err = capsys.readouterr().err
        assert code == 2 and f"the scheduler config {config}" in err and all(w in err for w in words), err
    assert not (tmp_path / "fit").exists()
    # the benchmarks' peers: a configuration that cannot run some step counts is still skipped, not an error
    bad = {k: v for k, v in {**settings, "timestep_spacing": 7}.items() if not k.startswith("_")}
    assert peer_steps("DPMSolverMultistepScheduler", bad, 2) is None
    with pytest.raises(PeerRefused):
        peer_steps("DPMSolverMultistepScheduler", bad, 2, strict=True)
    good = {k: v for k, v in settings.items() if not k.startswith("_")}
    assert peer_steps("DPMSolverMultistepScheduler", good, 3, strict=True) == peer_steps(
        "DPMSolverMultistepScheduler", good, 3)


def test_a_shipped_config_with_a_key_its_class_leaves_aside_is_the_pipelines_scheduler(tiny, tmp_path, capsys,
                                                                                       unbuilt):
    """SD-1.5's scheduler_config.json is PNDMScheduler's with clip_sample (a key of other classes), which diffusers'
    from_config leaves aside; the fit's check built PNDMScheduler(**config) and refused the pipeline's own file."""
    from benchmarks.peers import peer_steps

    sd15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
    assert peer_steps("PNDMScheduler", {k: v for k, v in sd15.items() if not k.startswith("_")}, 10,
                      strict=True) is not None
    config = tmp_path / "sd15.json"
    config.write_text(json.dumps(sd15))
    from app import fit as app_fit

    assert app_fit._check_scheduler(sd15, config, [10]) == "PNDMScheduler"


def shard(folder: Path, names: tuple[str, ...] = ("a.safetensors", "b.safetensors"), *, keep_single: bool = False,
          metadata: bool = True) -> dict:
    """``folder``'s weights split into shards ``names`` with the index save_pretrained writes beside them (the
    single file removed unless ``keep_single``); a shard whose name does not end in .safetensors is a pickle
    (torch.save). Returns the tensors written."""
    import torch
    from safetensors.torch import load_file, save_file

    single = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(single)
    keys = sorted(tensors)
    parts = {name: keys[k::len(names)] for k, name in enumerate(names)}
    for name, part in parts.items():
        piece = {key: tensors[key] for key in part}
        (save_file(piece, folder / name) if name.endswith(".safetensors") else torch.save(piece, folder / name))
    index = {"weight_map": {key: name for name, part in parts.items() for key in part}}
    (folder / f"{single.name}.index.json").write_text(json.dumps({**({"metadata": {}} if metadata else {}), **index}))
    if not keep_single:
        single.unlink()
    return tensors


def test_the_unet_weights_checked_are_the_ones_diffusers_loads_the_index_first(tiny, tmp_path, capsys):
    """An index beside the single file was ignored by the checks and loaded by diffusers, which reads the shards an
    index lists first, a pickle .bin shard with torch.load: the fit ran on weights other than the ones checked (all
    0.5 where the checked file's conv_in.weight began -0.00125, 0.0894; an audit of the loading of users' models)."""
    import torch

    from app.fit import diffusers_target

    def run(folder: Path) -> tuple[int, str]:
        code = main(fit_argv(folder, tmp_path / "fit", "--prompt-embeds", str(tiny / "embeds.safetensors")))
        return code, capsys.readouterr().err

    both = copy_of(tiny, tmp_path, "both")
    shard(both, keep_single=True)
    code, err = run(both)
    assert code == 2 and f"--model {both} holds both diffusion_pytorch_model.safetensors and " \
        "diffusion_pytorch_model.safetensors.index.json" in err and "keep one" in err, err
    pickled = copy_of(tiny, tmp_path, "pickled")
    shard(pickled, ("a.safetensors", "b.bin"))
    code, err = run(pickled)
    assert code == 2 and "lists shard(s) b.bin, not safetensors" in err and "torch.load" in err, err
    no_metadata = copy_of(tiny, tmp_path, "no-metadata")
    shard(no_metadata, metadata=False)
    code, err = run(no_metadata)
    assert code == 2 and "has no metadata object" in err, err
    assert not (tmp_path / "fit").exists()
    # the shards alone are what is checked and what is fitted
    sharded = copy_of(tiny, tmp_path, "sharded")
    written = shard(sharded)
    target = diffusers_target(sharded, None, str(sharded / "embeds.safetensors"), None, nfe=(2,))
    state = target.scheduler[2](1, 0).model.state_dict()  # the UNet the default row and the fit run
    assert set(state) == set(written) and all(torch.equal(state[k], v) for k, v in written.items())


@pytest.mark.parametrize("edit, fits", [
    ({"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
      "clip_sample": False}, False),
    ({"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
      "clip_sample": False, "prediction_type": "v_prediction"}, True),  # what the zero-SNR table is for
    ({"_class_name": "EulerDiscreteScheduler", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
     True),  # the Euler family clamps ᾱ_T to 2⁻²⁴: a finite start (σ 4096)
    ({"_class_name": "DDIMScheduler", "clip_sample": False}, True),  # 'leading' spacing: a finite start
    *[({"_class_name": name, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": False},
       False) for name in ("DDPMScheduler", "LCMScheduler", "TCDScheduler")],  # their first timestep's ᾱ is 0 as well
    # diffusers runs these from a finite σ, and so does the fit's default row: DPMSolverMultistep and UniPC clamp ᾱ_T
    # to 2⁻²⁴ (σ 4096, "so first sigma is not inf"); DEIS, DPMSolverSinglestep and SASolver take no
    # rescale_betas_zero_snr (the plain table, ᾱ_999 = 4.7e-5 on the default linear betas) — all five were refused
    *[({"_class_name": name, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, True)
      for name in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
                   "DPMSolverSinglestepScheduler", "SASolverScheduler")]])
def test_an_eps_scheduler_config_that_starts_at_zero_snr_is_refused_before_anything_is_fitted(
        tiny, tmp_path, capsys, unbuilt, edit, fits):
    """DDIM with rescale_betas_zero_snr=True, 'trailing' spacing and an ε model passed the checks; the whole fit ran
    and the report's default row then refused σ = inf, throwing the fit away (exit 2, no nfe<N>.json). Only where
    diffusers' own first step is at ᾱ = 0: a class whose own table starts it at a finite σ is fitted."""
    config = tmp_path / "scheduler_config.json"
    config.write_text(json.dumps(edit))
    code = main(fit_argv(tiny, tmp_path / "fit", "--scheduler-config", str(config), "--nfe", "4"))
    err = capsys.readouterr().err
    if fits:
        assert err.endswith("every file passed (Built; --debug for the traceback)\n"), err
        return
    assert code == 2 and f"the scheduler config {config}: {edit['_class_name']} with rescale_betas_zero_snr=True and " \
        "prediction_type='epsilon' evaluates the model first at timestep 999, where ᾱ = 0" in err \
        and "prediction_type='v_prediction'" in err and "every file passed" not in err, err
    assert "DPMSolverMultistepScheduler / UniPCMultistepScheduler clamp ᾱ_T to 2⁻²⁴" in err, err  # fixes that run
    assert not (tmp_path / "fit").exists()


@pytest.mark.parametrize("key, value, words", [
    ("conv_in.weight", float("nan"), "conv_in.weight (1 NaN, 0 infinite"),
    ("conv_out.bias", float("-inf"), "conv_out.bias (0 NaN, 1 infinite")])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor_before_any_model_call(
        tiny, tmp_path, capsys, monkeypatch, key, value, words):
    """A NaN in the weights was found by the first solve, which blamed float16 or --reference-tol (exit 1)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    folder = copy_of(tiny, tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    bad = tensors[key].clone()
    bad.view(-1)[0] = value
    save_file({**tensors, key: bad}, weights)

    def called(*args, **kwargs):
        raise AssertionError("the UNet was called")

    monkeypatch.setattr(UNet2DConditionModel, "forward", called)
    code = main(fit_argv(folder, tmp_path / "fit"))
    err = capsys.readouterr().err
    assert code == 2 and f"the UNet weights {weights} hold 1 value(s) that are not finite in {words}" in err \
        and "--debug" not in err, err
    assert not (tmp_path / "fit").exists()
    assert torch.isfinite(load_file(tiny / "diffusion_pytorch_model.safetensors")[key]).all()


def test_float64_tensors_among_the_weights_are_run_in_float32(tiny, tmp_path, monkeypatch):
    """diffusers kept a float64 tensor float64 among float32 ones: the first model call failed raw (bias type
    double); the UNet is loaded in the dtype the fit runs it in."""
    import torch
    from safetensors.torch import load_file, save_file

    from app.fit import NETWORK_DTYPE, diffusers_target

    folder = copy_of(tiny, tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({**tensors, "conv_out.bias": tensors["conv_out.bias"].double()}, weights)
    target = diffusers_target(folder, None, str(folder / "embeds.safetensors"), None)
    x = torch.randn(1, *target.shape, generator=torch.Generator().manual_seed(0))
    out = target.denoiser(x * 5.0, torch.tensor([5.0]), **target.conditioning(1, 0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert target.dtype == NETWORK_DTYPE


def test_a_quantization_config_in_the_unet_config_is_refused_by_name(tiny, tmp_path, capsys, unbuilt):
    """from_pretrained builds a quantizer from it (from_config, the checks' meta build, leaves it aside): a raw
    RuntimeError "No GPU found" (exit 1), or a quantized UNet where it runs. null is diffusers' "none"."""
    for value, words in (({"quant_method": "bitsandbytes", "load_in_8bit": True}, "(quant_method 'bitsandbytes')"),
                         ({"quant_method": "torchao", "quant_type": "int8wo"}, "(quant_method 'torchao')"),
                         (None, None)):
        folder = copy_of(tiny, tmp_path, f"unet-{value and value['quant_method']}")
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "quantization_config": value}))
        code = main(fit_argv(folder, tmp_path / "fit"))
        err = capsys.readouterr().err
        if words is None:
            assert err.endswith("every file passed (Built; --debug for the traceback)\n"), err
            continue
        assert code == 2 and f"the UNet config {folder / 'config.json'} sets quantization_config {words}" in err, err
    assert not (tmp_path / "fit").exists()


def test_a_fifo_or_a_missing_file_given_for_the_embeddings_or_scheduler_config_is_named_so(
        tiny, tmp_path, capsys, unbuilt):
    """A FIFO given as --prompt-embeds was "no such file", and as --scheduler-config "no scheduler config ... pass
    --scheduler-config" (which was passed); both are opened as regular files only, as every other read is."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    pipe, absent = tmp_path / "pipe", tmp_path / "absent.json"
    os.mkfifo(pipe)
    for extra, words in ((["--prompt-embeds", str(pipe)], [f"{pipe} is not a regular file (a FIFO",
                                                           "the --prompt-embeds safetensors file"]),
                         (["--scheduler-config", str(pipe)], [f"{pipe} is not a regular file (a FIFO",
                                                              "the scheduler config",
                                                              "give --scheduler-config the pipeline's"]),
                         (["--scheduler-config", str(absent)], [f"--scheduler-config {absent}: no such file"]),
                         (["--prompt-embeds", str(absent)], [f"--prompt-embeds {absent}: no such file"])):
        code = main(fit_argv(tiny, tmp_path / "fit", *extra))
        err = capsys.readouterr().err
        assert code == 2 and all(w in err for w in words) and "no scheduler config" not in err, (extra, err)
    assert not (tmp_path / "fit").exists()


@pytest.mark.parametrize("scheduler", ["DPMSolverMultistepScheduler", "EulerDiscreteScheduler"])
def test_an_eps_unet_on_a_zero_snr_table_is_fitted_and_its_default_row_starts_where_diffusers_does(
        tiny, tmp_path, capsys, scheduler):
    """An ε U-Net on a zero-terminal-SNR table (rescale_betas_zero_snr=True) whose scheduler starts at a finite σ
    (ᾱ_T clamped to 2⁻²⁴: σ 4096) passed the checks and failed mid-fit: the fit's guidance wrapper (ItemCFG) did not
    say that the model cannot be evaluated at σ = inf, so pairs from there were offered and the first solve from σ =
    inf refused, after the model was built. Those pairs are now left out (read through the wrapper, as a run reads
    it); the default row is diffusers' own run, from σ 4096, scored from there."""
    config = tmp_path / "scheduler_config.json"
    config.write_text(json.dumps({"_class_name": scheduler, "rescale_betas_zero_snr": True,
                                  "timestep_spacing": "trailing"}))
    out = tmp_path / "fit"
    assert main(fit_argv(tiny, out, "--scheduler-config", str(config))) == 0, capsys.readouterr().err
    row = json.loads((out / "report.json").read_text())["rows"]["2"]
    assert row["default"]["label"].startswith(f"diffusers {scheduler} (") and "σ = inf" not in row["default"]["label"]
    assert math.isfinite(row["default"]["rmse"]) and math.isfinite(row["fit"])
    assert (out / "nfe2.json").is_file()


# ------------------------------------------------------------------------------------------------- report.json


def test_the_reported_solver_path_is_the_reports_own_folders(tmp_path, capsys):
    first = tmp_path / "first"
    argv = ["fit", "--model", "gm-ve", "--nfe", "2", "--out", str(first), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    argv[6] = str(moved)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"→ {moved / 'nfe2.json'}" in printed and str(first) not in printed, printed
    report = json.loads((moved / "report.json").read_text())
    assert report["rows"]["2"]["file"] == str(moved / "nfe2.json")
    report["rows"]["2"]["file"] = "/etc/passwd"
    (moved / "report.json").write_text(json.dumps(report))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "row 2 has no valid file (its file is '/etc/passwd'" in err and "nfe2.json" in err, err


def test_a_fifo_as_the_scheduler_config_or_the_report_is_refused_not_waited_on(tmp_path):
    """Both were read with read_bytes / read_text: a FIFO there waited for a writer forever."""
    import os
    import threading

    import pytest

    from app import fit as app_fit
    from samplers.core.errors import InvalidInput

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "scheduler_config.json")
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "report.json")
    results = []

    def attempt(call):
        try:
            call()
            results.append("read")
        except InvalidInput as err:
            results.append(str(err))

    for call in (lambda: app_fit._json_object(tmp_path / "scheduler_config.json", "the scheduler config", "fix it"),
                 lambda: app_fit.read_report(tmp_path / "out")):
        worker = threading.Thread(target=attempt, args=(call,), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the read waited on the FIFO"
    assert len(results) == 2 and all("not a regular file" in r or "FIFO" in r for r in results), results

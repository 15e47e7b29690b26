"""The training commands (models.train, models.train_vae) refuse, at the boundary and before any work, what they
would otherwise take silently, crash on after work, or run with forever: an option given twice, a seed whose derived
seeds overflow, a warm-up longer than the run, levels the images do not fit, sizes that hang; a diverged run is
stopped before anything is saved; --resume continues only the run it names and a fresh run never touches another
run's checkpoint."""

from pathlib import Path

import pytest
import torch

from models import train, train_vae

VAE_TINY = ["--steps", "2", "--batch-size", "2", "--channels", "8,8,8", "--threads", "1", "--scale-samples", "8",
            "--eval-samples", "4", "--checkpoint-minutes", "1000"]


def _unet_tiny(tmp_path, *more, out="u", batch="2"):
    return ["eps", "--out", str(tmp_path / out), "--work", str(tmp_path / "w"), "--n-scenes", "2", "--channels", "16",
            "--steps", "2", "--batch-size", batch, "--threads", "1", "--checkpoint-minutes", "1000", *more]


def _refused(module, argv, capsys, *words):
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    for w in words:
        assert w in err, err
    return err


def _fails(module, argv, capsys, *words):
    """A refusal after parsing (models._checks.cli): exit 2, one line, no traceback."""
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


# 1. an option given twice


@pytest.mark.parametrize("twice", [["--steps", "5", "--steps", "6"], ["--lr", "1e-3", "--lr", "2e-3"],
                                   ["--threads", "1", "--threads", "2"]], ids=lambda t: t[0])
def test_an_option_given_twice_is_refused(twice, tmp_path, capsys):
    _refused(train_vae, ["--out", str(tmp_path / "v"), *twice], capsys, twice[0], "given twice")
    _refused(train, ["eps", "--out", str(tmp_path / "u"), *twice], capsys, twice[0], "given twice")
    _refused(train_vae, ["--out", str(tmp_path / "a"), "--out", str(tmp_path / "b")], capsys, "--out", "given twice")
    _refused(train, ["eps", "--out", str(tmp_path / "a"), "--out", str(tmp_path / "b")], capsys, "--out", "given twice")
    assert not any(tmp_path.iterdir())


# 2. seeds


def test_a_seed_whose_derived_seeds_overflow_is_refused(tmp_path, capsys):
    for module, head in ((train_vae, []), (train, ["eps"])):
        _refused(module, [*head, "--out", str(tmp_path / "o"), "--seed", str(2**45)], capsys, "--seed", "2**32")
        assert module.parse_args([*head, "--out", str(tmp_path / "o"), "--seed", str(2**32 - 1)]).seed == 2**32 - 1
    _refused(train_vae, ["--out", str(tmp_path / "o"), "--eval-seed", str(2**45)], capsys, "--eval-seed")
    # the largest seed's per-step generator seed is still valid
    torch.Generator().manual_seed((2**32 - 1) * 1_000_003 + 10**7)
    assert not (tmp_path / "o").exists()


# 3. warm-up


def test_a_warmup_longer_than_the_run_is_refused(tmp_path, capsys):
    for module, head in ((train_vae, []), (train, ["eps"])):
        _refused(module, [*head, "--out", str(tmp_path / "o"), "--warmup", "100000", "--steps", "5"], capsys,
                 "--warmup", "100000", "--steps 5")
        assert module.parse_args([*head, "--out", str(tmp_path / "o"), "--warmup", "5", "--steps", "5"]).warmup == 5
        assert module.parse_args([*head, "--out", str(tmp_path / "o"), "--steps", "3"]).warmup == 3  # default
    assert train.parse_args(["eps", "--out", str(tmp_path / "o")]).warmup == 200
    assert train_vae.parse_args(["--out", str(tmp_path / "o")]).warmup == 100


# 4. divergence


def test_train_vae_stops_at_a_non_finite_loss_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "v"
    _fails(train_vae, ["--out", str(out), *VAE_TINY, "--lr", "1e3", "--warmup", "0"], capsys, "diverged", "lower --lr")
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists()


def test_train_stops_at_a_non_finite_loss_and_saves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "diffusion_loss", lambda model, *a: sum(p.sum() for p in model.parameters()) * float("nan"))
    _fails(train, _unet_tiny(tmp_path), capsys, "diverged", "lower --lr")
    assert not (tmp_path / "u").exists() and not (tmp_path / "w" / "train_eps" / "checkpoint.pt").exists()


# 5. levels the images do not fit


def test_train_vae_refuses_levels_the_images_do_not_fit(tmp_path, capsys):
    _refused(train_vae, ["--out", str(tmp_path / "v"), "--channels", "8,8,8,8,8,8,8"], capsys, "--channels", "64 px")
    assert not (tmp_path / "v").exists()
    assert train_vae.parse_args(["--out", str(tmp_path / "v"), "--channels", "8,8,8,8,8,8"]).channels == (8,) * 6


# 6, 7. --resume continues only its own run; a fresh run leaves another run's checkpoint alone


def test_train_vae_resume_refuses_other_options_and_a_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "v"
    _fails(train_vae, ["--out", str(out), *VAE_TINY, "--resume"], capsys, "no checkpoint", "without --resume")
    assert not out.exists()
    assert train_vae.main(["--out", str(out), *VAE_TINY, "--stop-after", "1"]) == 0
    ckpt = out / "checkpoint.pt"
    before = ckpt.read_bytes()
    _fails(train_vae, ["--out", str(out), *VAE_TINY, "--lr", "2e-3", "--kl-weight", "0", "--resume"], capsys,
           "--lr 0.001 there, 0.002 here", "--kl-weight")
    _fails(train_vae, ["--out", str(out), *VAE_TINY], capsys, "unfinished run", "--resume")  # fresh run: refused
    assert ckpt.read_bytes() == before and not (out / "model.safetensors").exists()


def test_train_resume_refuses_other_options_and_a_fresh_run_keeps_the_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "w" / "train_eps" / "checkpoint.pt"
    _fails(train, _unet_tiny(tmp_path, "--resume"), capsys, "no checkpoint", "without --resume")
    assert not (tmp_path / "u").exists()
    assert train.main(_unet_tiny(tmp_path, "--stop-after", "1")) == 0
    before = ckpt.read_bytes()
    _fails(train, _unet_tiny(tmp_path, "--resume", batch="3"), capsys, "--batch-size 2 there, 3 here")
    # another run, another --out, the same --work
    _fails(train, _unet_tiny(tmp_path, out="u2"), capsys, "unfinished run", str(ckpt))
    assert ckpt.read_bytes() == before and not (tmp_path / "u2").exists()
    assert train.main(_unet_tiny(tmp_path, "--resume")) == 0  # the run it belongs to continues and finishes
    assert not ckpt.exists() and (tmp_path / "u" / "model.safetensors").is_file()


# 8. sizes that would hang


@pytest.mark.parametrize("module,head,option,value", [
    (train_vae, [], "--batch-size", "1000000000"), (train_vae, [], "--scale-samples", "10000000000"),
    (train_vae, [], "--eval-samples", "10000000000"), (train, ["eps"], "--batch-size", "1000000000"),
    (train, ["eps"], "--n-scenes", "1000000000000")], ids=lambda v: v if isinstance(v, str) else "")
def test_huge_sizes_are_refused(module, head, option, value, tmp_path, capsys):
    _refused(module, [*head, "--out", str(tmp_path / "o"), option, value], capsys, option, value, "cap")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------
# An audit of the command-line entry points (cli2): options dropped, sizes without a cap, a resumed run's record, a
# kind after the options


def test_shift_is_refused_for_an_eps_model_and_taken_for_flow(tmp_path, capsys):
    # an eps model trains and samples on its own schedule: --shift 3 was recorded in its config and did nothing
    _refused(train, _unet_tiny(tmp_path, "--shift", "3"), capsys, "--shift", "flow models only", "leave --shift out")
    _refused(train, _unet_tiny(tmp_path, "--shift", "1"), capsys, "--shift")  # given, even as 1
    assert not any(tmp_path.iterdir())
    assert train.parse_args(["flow", "--out", str(tmp_path / "o"), "--shift", "3"]).shift == 3.0
    assert train.parse_args(["eps", "--out", str(tmp_path / "o")]).shift == 1.0  # the default: no shift
    _refused(train, ["flow", "--out", str(tmp_path / "o"), "--shift", "3", "--shift", "2"], capsys, "given twice")


@pytest.mark.parametrize("module,option,value,words", [
    (train_vae, "--latent-channels", "1000000000", ["cap 64"]),  # was the allocator's traceback (9 TB)
    (train_vae, "--enc-res-blocks", "17", ["cap 16"]), (train_vae, "--dec-res-blocks", "17", ["cap 16"]),
    (train_vae, "--channels", "8,8,4096", ["width 4096", "cap 2048"]),
    (train, "--res-blocks", "17", ["cap 16"]),  # 1000 was 16 s of parsing, and taken
    (train, "--channels", "1048576", ["width 1048576", "cap 2048"]),  # was a 39 TB allocation's traceback
    (train, "--channels", ",".join(["16"] * 9), ["9 levels", "cap 8"])],
    ids=["vae-latent-channels", "vae-enc-res-blocks", "vae-dec-res-blocks", "vae-width", "res-blocks", "width",
         "levels"])
def test_model_sizes_past_their_caps_are_refused_before_anything_is_built(module, option, value, words, tmp_path,
                                                                          capsys):
    argv = _unet_tiny(tmp_path, option, value) if module is train else ["--out", str(tmp_path / "v"), *VAE_TINY,
                                                                        option, value]
    if option == "--channels":  # the tiny run's own --channels is replaced, not given twice
        at = argv.index("--channels")
        del argv[at:at + 2]
    _refused(module, argv, capsys, option, value if option != "--channels" else "", *words)
    assert not any(tmp_path.iterdir())


def _free(monkeypatch, nbytes):
    from samplers.core import validate

    monkeypatch.setattr(validate, "available_memory", lambda device: nbytes)


@pytest.mark.parametrize("module,argv,words", [
    (train_vae, ["--out", "v", *VAE_TINY[:4], "--channels", "32,64,256"],  # 7.7 M parameters: 124 MB
     ["--channels", "7.7 M parameters", "16 bytes each", "needs about 0.1 GiB but cpu has 0.1 GiB free",
      "fewer or narrower --channels"]),
    (train, ["eps", "--out", "u", "--work", "w", "--n-scenes", "2", "--steps", "2", "--batch-size", "2",
             "--channels", "128,128", "--res-blocks", "2"],  # 8.6 M parameters: 173 MB
     ["--res-blocks", "8.6 M parameters", "the EMA copy: 20 bytes each", "fewer --res-blocks"])],
    ids=["vae", "unet"])
def test_a_model_whose_training_state_exceeds_free_memory_is_refused_at_parse_time(module, argv, words, tmp_path,
                                                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _free(monkeypatch, 100 * 2**20)  # the shipped sizes (2.3 M and 4.1 M parameters) fit in 100 MiB, these do not
    _refused(module, argv, capsys, *words)
    assert not any(tmp_path.iterdir())
    head = argv[:1] if module is train else []
    assert module.parse_args([*head, "--out", "o"]).channels in ((32, 64, 128), (64, 128))


def _loss_line(err: str, steps: int) -> str:
    """The ``loss`` of the run's last ``step N/N`` line."""
    marker = f"step {steps}/{steps} loss "  # (tqdm's bar may share its line)
    assert marker in err, err
    return err.split(marker)[-1].split()[0]


def test_a_resumed_unet_run_records_the_loss_of_the_uninterrupted_run(tmp_path, capsys):
    # the weights were identical, but the loss EMA restarted at --resume: final_loss_ema 0.96078 against 1.09168
    import json

    def run(out, *more):
        assert train.main(["eps", "--out", str(tmp_path / out), "--work", str(tmp_path / f"w{out}"), "--n-scenes", "4",
                           "--channels", "16", "--steps", "4", "--batch-size", "2", "--threads", "1", *more]) == 0
        return capsys.readouterr().err

    straight = run("a")
    run("b", "--stop-after", "2")
    resumed = run("b", "--resume")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    a, b = (json.loads((tmp_path / d / "config.json").read_text())["extra"]["train"] for d in "ab")
    assert a["final_loss_ema"] == b["final_loss_ema"]
    assert _loss_line(straight, 4) == _loss_line(resumed, 4)


def test_a_resumed_vae_run_shows_the_loss_of_the_uninterrupted_run(tmp_path, capsys):
    tiny = [*VAE_TINY[2:], "--steps", "4"]
    assert train_vae.main(["--out", str(tmp_path / "a"), *tiny]) == 0
    straight = capsys.readouterr().err
    assert train_vae.main(["--out", str(tmp_path / "b"), *tiny, "--stop-after", "2"]) == 0
    assert train_vae.main(["--out", str(tmp_path / "b"), *tiny, "--resume"]) == 0
    resumed = capsys.readouterr().err
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert _loss_line(straight, 4) == _loss_line(resumed, 4)


@pytest.mark.parametrize("argv,handed", [
    (["vae", "--out", "o", "--steps", "3"], ["--out", "o", "--steps", "3"]),
    (["--out", "o", "vae"], ["--out", "o"]),  # was "invalid choice: 'vae'": only argv[0] was looked at
    (["--out=o", "--resume", "vae", "--steps", "3"], ["--out=o", "--resume", "--steps", "3"]),
    (["--latent-channels", "8", "--keep-checkpoint", "--out", "o", "vae"],
     ["--latent-channels", "8", "--keep-checkpoint", "--out", "o"]),
    # argparse reads this as kind vae; the '--' was handed over with nothing after it, and train_vae refused it
    # ("unrecognized arguments: --", exit 2): the stub asserted the broken hand-over and never parsed it
    (["--out", "o", "--", "vae"], ["--out", "o"])])
def test_train_hands_vae_to_train_vae_wherever_the_kind_is(argv, handed, monkeypatch):
    """What is handed over is what train_vae's own parser takes (parse_args: the real one, not a stub's say-so)."""
    got = []

    def vae_main(a):
        got.append(a)
        args = train_vae.parse_args(a)  # SystemExit(2) where it refuses what it was handed
        assert args.out == Path("o")
        return 0

    monkeypatch.setattr(train_vae, "main", vae_main)
    assert train.main(argv) == 0
    assert got == [handed]


def test_train_keeps_a_double_dash_before_what_follows_the_vae_kind(tmp_path, capsys):
    """After '--' everything is a positional, to argparse here as to train_vae: '-- vae --steps 3' is refused there
    as it is here, not read as an option because the '--' went with the kind."""
    _refused(train, ["--out", str(tmp_path / "o"), "--", "vae", "--steps", "3"], capsys, "unrecognized arguments",
             "--steps 3")
    assert not (tmp_path / "o").exists()


def test_train_help_lists_vae_and_a_misspelt_kind_names_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0 and "{eps,flow,vae}" in capsys.readouterr().out
    _refused(train, ["--out", str(tmp_path / "o"), "vea"], capsys, "'vea'", "'vae'")
    _refused(train, ["--out", str(tmp_path / "o"), "--seed", "1"], capsys, "kind")  # none given

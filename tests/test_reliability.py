"""Bad input and faults: every case is refused with the documented error, before any model call, and nothing hangs.

One test per failure seen when the library was tried as an adversarial user would (hangs, silent coercions,
code run from files, wrong results accepted)."""
from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import samplers
from samplers.core import registry
from samplers.core.native import VE, RectifiedFlow, VPContinuous, VPDiscrete
from samplers.problems import GaussianMixture

ROOT = Path(__file__).resolve().parents[1]
GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=4)
SIG = samplers.get_sigmas("karras", 5, sigma_min=0.1, sigma_max=10.0)
X = GM.noise(2, seed=0, dtype=torch.float32) * 10


class Counting:
    def __init__(self, fn=GM.denoiser):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return self.fn(x, sigma, **kw)


# ------------------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("kw", [{}, {"rtol": 0.0, "atol": 0.0}])
def test_dpm_adaptive_never_hangs(time_limit, kw):
    model = (lambda x, s: torch.full_like(x, float("nan"))) if not kw else GM.denoiser
    with time_limit(20), pytest.raises((samplers.NonFiniteError, samplers.InvalidOption)):
        samplers.sample("dpm_adaptive", model, X, SIG, disable=True, **kw)
    with time_limit(20), pytest.raises(samplers.StepLimitError, match="max_steps"):
        samplers.sample("dpm_adaptive", GM.denoiser, X, SIG, disable=True, rtol=1e-7, atol=1e-7, max_steps=30)
    with time_limit(20), pytest.raises(samplers.NonFiniteError, match="step size fell to 0"):
        samplers.sample("torchdiffeq.dopri5", lambda x, s: torch.full_like(x, float("nan")), X, SIG, disable=True)


@pytest.mark.parametrize("name, options, rule", [
    ("euler_ancestral", {"eta": -0.5}, "eta must be >= 0"),
    ("euler_ancestral", {"eta": float("nan")}, "eta must be a finite number"),
    ("dpmpp_2m_sde", {"eta": float("inf")}, "eta must be a finite number"),
    ("euler", {"s_churn": -1.0}, "s_churn must be >= 0"),
    ("heun", {"s_noise": float("nan")}, "s_noise must be a finite number"),
    ("euler", {"s_churn": 1.0, "s_tmin": 5.0, "s_tmax": 1.0}, "s_tmin = 5 is above s_tmax"),
    ("dpmpp_sde", {"r": 0.0}, "r must be > 0"),
    ("dpmpp_2s", {"r": 1.0}, "r must be < 1"),
    ("lms", {"order": True}, "order must be an integer"),
    ("euler_ancestral", {"etaa": 1.0}, "did you mean 'eta'"),
])
def test_bad_option_values_are_refused_before_any_model_call(name, options, rule):
    model = Counting()
    with pytest.raises((samplers.InvalidOption, samplers.InvalidType), match=rule):
        samplers.sample(name, model, X, SIG, disable=True, **options)
    assert model.calls == 0


def test_nan_start_is_the_callers_and_found_before_the_model_runs():
    model = Counting()
    x = X.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(samplers.NonFiniteError, match="starting latent"):
        samplers.sample("euler", model, x, SIG, disable=True)
    assert model.calls == 0


def test_model_output_of_the_wrong_kind_is_refused():
    with pytest.raises(samplers.InvalidType, match="torch.int64"):
        samplers.sample("euler", lambda x, s: torch.zeros_like(x, dtype=torch.int64), X, SIG, disable=True)
    with pytest.raises(samplers.InvalidInput, match="never broadcast"):
        samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True,
                        noise_sampler=lambda s, t: torch.zeros(X.shape[1:]))


@pytest.mark.parametrize("name", [n for n in samplers.available() if not samplers.info(n).stochastic])
def test_deterministic_samplers_leave_the_global_generator_alone(name):
    state = torch.get_rng_state()
    samplers.sample(name, GM.denoiser, X, SIG, disable=True)
    assert torch.equal(torch.get_rng_state(), state), f"{name} advanced torch's global generator"


@pytest.mark.parametrize("seed, error", [
    ("12", samplers.InvalidType), ([1.9, 2.9], samplers.InvalidType), (2**70, samplers.InvalidInput),
    (-1, samplers.InvalidInput), (True, samplers.InvalidType), ([1, 2, 3], samplers.InvalidInput),
    (2**64 - 1, samplers.InvalidInput),  # item 1 would need 2**64
    (2**64, samplers.InvalidInput),  # beyond what torch's generators take
])
def test_seeds_are_never_coerced(seed, error):
    with pytest.raises(error):
        samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, seed=seed)


def test_seeds_of_any_integer_type_mean_the_same():
    ref = samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, seed=3)
    for seed in (np.int64(3), torch.tensor(3), [3, 4], (np.int32(3), 4), torch.tensor([3, 4])):
        torch.testing.assert_close(samplers.sample("euler_ancestral", GM.denoiser, X, SIG, disable=True, seed=seed), ref)


def test_a_taken_name_is_refused_unless_replaced_on_purpose():
    with pytest.raises(samplers.InvalidInput, match="already registered"):
        @registry.register("euler", kind="ode", order=1, nfe_per_step=1)
        def euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
            return x
    assert samplers.info("euler").ref.startswith("Karras")


def test_sigmas_too_large_for_the_state_dtype():
    with pytest.raises(samplers.InvalidInput, match="too large for a torch.float32 state"):
        samplers.sample("euler", GM.denoiser, X, torch.tensor([1e40, 1.0, 0.0], dtype=torch.float64), disable=True)


# ------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("build, error", [
    (lambda: VPDiscrete.from_betas("linear", 1000, 0.5, 1.5), samplers.InvalidInput),
    (lambda: VPDiscrete(torch.tensor([0.9, 0.5, -0.0])), samplers.InvalidInput),
    (lambda: VPDiscrete(torch.tensor([0.9, 0.0, 0.0])), samplers.InvalidInput),  # zero SNR only at the end
    (lambda: VPDiscrete.from_betas("linear", int(1e12)), samplers.LimitExceeded),
    (lambda: VPDiscrete.from_betas("linear", 2.5), samplers.InvalidType),
    (lambda: RectifiedFlow(shift=math.inf), samplers.InvalidOption),
    (lambda: RectifiedFlow(multiplier=0), samplers.InvalidOption),
    (lambda: RectifiedFlow(t_min=1), samplers.InvalidOption),
    (lambda: VPContinuous(t_min=0), samplers.InvalidOption),
    (lambda: VE(sigma_min=5, sigma_max=1), samplers.InvalidOption),
    (lambda: samplers.get_sigmas("karras", 10, sigma_min=0.1, sigma_max=10, rho=0), samplers.InvalidOption),
    (lambda: samplers.get_sigmas("karras", 10, sigma_min=float("nan"), sigma_max=10), samplers.InvalidInput),  # the right type, no σ: a ValueError
    (lambda: samplers.get_sigmas("karras", 10**13, sigma_min=0.1, sigma_max=10), samplers.LimitExceeded),
])
def test_native_schedules_and_schedules_check_their_parameters(build, error):
    with pytest.raises(error):
        build()


# ------------------------------------------------------------------------------------------ files


def test_checkpoints_and_caches_never_run_code(tmp_path):
    from models import io as mio

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    planted = tmp_path / "checkpoint.pt"
    planted.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(mio.CorruptModelError, match="weights_only"):
        mio.load_checkpoint(planted)
    assert not marker.exists()
    safe = tmp_path / "safe.pt"
    mio.atomic_torch_save(safe, {"step": 3, "model": {"w": torch.ones(2)}, "captions": ["a"]})
    assert mio.load_checkpoint(safe)["step"] == 3


def test_a_unet_config_without_its_parameterisation_is_refused(tmp_path):
    from models import io as mio
    from models.unet import DiffusionModel

    src = ROOT / "models" / "weights" / "flow"
    config = json.loads((src / "config.json").read_text())
    del config["prediction"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    with pytest.raises(mio.ConfigMismatchError, match="no 'prediction'"):
        DiffusionModel.load(tmp_path)


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    script = (
        "import os, sys, time\n"
        "import samplers.__main__ as entry\n"
        "import samplers.core.files as f\n"
        "orig = os.fsync\n"
        "def slow(fd):\n"
        "    print('writing', flush=True); time.sleep(30); orig(fd)\n"
        "os.fsync = slow\n"
        "entry.main = lambda argv=None: f.atomic_write_bytes(sys.argv[1], b'x' * 1000) and 0\n"
        "sys.exit(entry.run())\n")
    target = tmp_path / "out.bin"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


# ------------------------------------------------------------------------------------------ pipeline and CLI


@pytest.fixture(scope="module")
def pipe():
    from models.pipeline import Pipeline

    return Pipeline.load(model="eps")


@pytest.mark.parametrize("kw, error, rule", [
    ({"steps": 0}, samplers.InvalidOption, "steps must be an integer >= 1"),
    ({"steps": 2.7}, samplers.InvalidType, "steps must be an integer"),
    ({"steps": 100_000_000}, samplers.LimitExceeded, "more than the limit"),
    ({"batch": 0}, samplers.InvalidOption, "batch must be an integer >= 1"),
    ({"width": 8192, "height": 8192}, samplers.LimitExceeded, "GiB"),
    ({"width": -64}, samplers.InvalidInput, r"nearest valid: 8\)"),
    ({"sampler": "DPM++ 2M Karras", "schedule": "exponential"}, samplers.InvalidOption, "names the 'a1111:Karras'"),
    ({"output": "png"}, samplers.InvalidInput, "output must be"),
])
def test_pipeline_refuses_before_any_model_call(pipe, kw, error, rule, time_limit, monkeypatch):
    from test_pipeline import model_calls

    calls = model_calls(pipe, monkeypatch)
    with time_limit(30), pytest.raises(error, match=rule):
        pipe.txt2img("a red circle", seed=0, progress=False, **kw)
    assert not calls
    pipe.txt2img("a red circle", seed=0, steps=1, progress=False)
    assert set(calls) == {"encode_text", "unet", "from_latent"}  # the counter sees a valid call's


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "samplers", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


@pytest.mark.parametrize("args", [
    ["generate", "a red circle", "--steps", "0"],
    ["generate", "a red circle", "--width", "8192", "--height", "8192"],
    ["generate", "a red circle", "--steps", "100000000"],
    ["generate", "a red circle", "--sampler", "eulr"],
    ["generate", "a red circle", "--out", "/nonexistent/dir/x.png"],
])
def test_cli_usage_errors_are_one_line_with_status_2(args, capsys, time_limit, tmp_path, monkeypatch):
    from samplers.cli import main

    monkeypatch.chdir(tmp_path)  # nothing is written even if a check were missed
    with time_limit(60):
        try:
            status = main(args)
        except SystemExit as exit_:  # a value refused as the command line is read (argparse's usage error)
            status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    # one line, after argparse's usage where the value is refused as the command line is read
    assert lines[-1].startswith("samplers generate: error:") and "Traceback" not in err
    assert all(line.startswith(("usage: ", " ")) for line in lines[:-1]), lines


def test_cli_debug_shows_the_traceback():
    from samplers.cli import main

    bad = ["--sampler", "euler_ancestral", "--option", "eta=-1"]
    with pytest.raises(samplers.InvalidOption):
        main(["--debug", "generate", "a red circle", *bad])
    with pytest.raises(samplers.InvalidOption):
        main(["generate", "a red circle", *bad, "--debug"])


def test_cli_survives_a_closed_pipe():
    script = f"{sys.executable} -m samplers list | head -1"
    result = subprocess.run(script, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.startswith("name") and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["samplers", "samplers.cli"])  # the `samplers` command, and its main() alone
@pytest.mark.parametrize("command", [["names"], ["list"], ["names", "--source", "a1111"]])
def test_a_reader_that_left_ends_the_command_quietly(module, command):
    """`samplers names | head` ended with "samplers names: error: [Errno 32] Broken pipe (BrokenPipeError; ...)" and
    status 1: main() took the reader's leaving for a failure. Its reader gone (the pipe's read end closed before the
    command writes, so the write fails every time), a command says nothing and ends with 141 = 128 + SIGPIPE, as
    `git log | head` does."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", module, *command], stdout=write, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.parametrize("command", [["--help"], ["generate", "--help"]])
def test_help_to_a_reader_that_left_ends_quietly_too(command):
    # argparse swallows the BrokenPipeError of its help text and exits 0, as if every line had been read
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "samplers", *command], stdout=write, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_broken_pipe_that_is_not_stdouts_is_still_an_error(tmp_path, monkeypatch, capsys):
    """Only stdout's reader leaving is quiet: a BrokenPipeError of a command's own pipe, stdout still open, is reported
    as any failure while running is."""
    from samplers import cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_list", broken)
    with open(tmp_path / "out.txt", "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        status = cli.main(["list"])
    assert status == 1 and "samplers list: error: [Errno 32] Broken pipe (BrokenPipeError" in capsys.readouterr().err


def test_demo_checks_its_output_folder_first(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    t0 = time.monotonic()
    result = _cli("demo", "--out", str(blocker / "sub"))
    assert result.returncode != 0 and time.monotonic() - t0 < 20 and "Traceback" not in result.stderr


def test_training_never_defaults_to_the_shipped_weights():
    for module in ("models.train_vae", "models.train"):
        args = [] if module == "models.train_vae" else ["eps"]
        result = subprocess.run([sys.executable, "-m", module, *args, "--steps", "1"], capture_output=True, text=True,
                                cwd=ROOT, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert result.returncode == 2 and "--out" in result.stderr

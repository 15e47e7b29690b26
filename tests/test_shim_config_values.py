"""A scheduler config's boolean keys and its file, as the shim reads them.

diffusers' classes read a boolean key by its truthiness, so a hand-edited ``"thresholding": "false"`` in a
DPMSolverMultistep scheduler_config.json ran with thresholding on (an image 2.4 apart), silently, and so did
``lower_order_final`` / ``euler_at_final`` set to "false"; only ``rescale_betas_zero_snr`` was refused. Every key
whose diffusers default is a bool is now refused unless it is true, false or null, for every class the shim
replaces. ``from_pretrained`` reads the file with the library's JSON reader first: an empty or truncated file, a
key written twice (which diffusers' json.loads keeps the last of) and a FIFO are refused naming the file.
"""
from __future__ import annotations

import json
import os

import pytest

diffusers = pytest.importorskip("diffusers")

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler, _defaults  # noqa: E402
from samplers.interop.diffusers_sources import SOURCES  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

DPM = {"_class_name": "DPMSolverMultistepScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
       "beta_start": 0.00085, "num_train_timesteps": 1000}
CASES = [(name, key) for name in sorted(SOURCES) for key, value in sorted(_defaults(name).items())
         if isinstance(value, bool)]


def test_the_cases_cover_the_classes_with_boolean_keys():
    # EDMEuler and FlowMatchHeun take no boolean key
    assert set(SOURCES) - {name for name, _ in CASES} == {"EDMEulerScheduler", "FlowMatchHeunDiscreteScheduler"}


@pytest.mark.parametrize("name, key", CASES)
@pytest.mark.parametrize("value", ["false", 0])
def test_a_boolean_key_that_is_not_a_boolean_is_refused(name, key, value):
    with pytest.raises(InvalidType, match=f"field {key} must be true or false, got {value!r}"):
        SamplerScheduler.from_config({"_class_name": name, key: value})


@pytest.mark.parametrize("key", ["thresholding", "lower_order_final", "euler_at_final"])
def test_the_audits_keys_are_refused_from_a_file_naming_it(key, tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**DPM, key: "false"}))
    with pytest.raises(InvalidType, match=f"scheduler_config.json field {key} must be true or false, got 'false'"):
        SamplerScheduler.from_pretrained(tmp_path)


def test_a_boolean_key_of_the_shims_own_config_is_refused():
    with pytest.raises(InvalidType, match="field use_karras_sigmas must be true or false, got 'no'"):
        SamplerScheduler(sampler="euler", use_karras_sigmas="no")
    with pytest.raises(InvalidType, match="field lower_order_final must be true or false"):
        SamplerScheduler(source_config={**DPM, "lower_order_final": "False"})


def test_a_saved_shims_source_config_is_checked_in_its_file(tmp_path):
    SamplerScheduler.from_config(DPM).save_config(tmp_path)
    path = tmp_path / "scheduler_config.json"
    saved = json.loads(path.read_text())
    saved["source_config"]["thresholding"] = "0"
    path.write_text(json.dumps(saved))
    with pytest.raises(InvalidType, match=r"scheduler_config.json \(its source_config\) field thresholding"):
        SamplerScheduler.from_pretrained(tmp_path)


def test_json_booleans_and_null_still_load():
    for value in (True, False, None):
        SamplerScheduler.from_config({**DPM, "lower_order_final": value, "euler_at_final": value})


@pytest.mark.parametrize("text, why", [("", "not valid JSON"), (json.dumps(DPM)[:40], "not valid JSON"),
                                       ('{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, '
                                        '"solver_order": 2}', "'solver_order' appears more than once"),
                                       ("[1, 2]", "holds a JSON list")])
def test_a_broken_config_file_is_refused_naming_it(text, why, tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=why) as err:
        SamplerScheduler.from_pretrained(tmp_path)
    assert str(path) in str(err.value)
    # the file itself, and a pipeline folder's subfolder, are read the same way
    with pytest.raises(InvalidInput, match=why):
        SamplerScheduler.from_pretrained(path)
    (tmp_path / "pipe").mkdir()
    os.replace(path, tmp_path / "pipe" / "scheduler_config.json")
    os.rename(tmp_path / "pipe", tmp_path / "scheduler")
    with pytest.raises(InvalidInput, match=why):
        SamplerScheduler.from_pretrained(tmp_path, subfolder="scheduler")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_config_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "scheduler_config.json")
    with pytest.raises(InvalidInput, match="not a regular file"):
        SamplerScheduler.from_pretrained(tmp_path)


THRESHOLDING = sorted(name for name, source in SOURCES.items() if "threshold" in source.x0)


def test_the_thresholding_classes_are_the_ones_diffusers_thresholds_in():
    assert THRESHOLDING == ["DDPMScheduler", "DEISMultistepScheduler", "DPMSolverMultistepScheduler",
                            "DPMSolverSinglestepScheduler", "EDMDPMSolverMultistepScheduler", "LCMScheduler",
                            "SASolverScheduler", "UniPCMultistepScheduler"]


@pytest.mark.parametrize("name", THRESHOLDING)
@pytest.mark.parametrize("key, value, rule", [("dynamic_thresholding_ratio", 1.5, "a number in \\[0, 1\\]"),
                                              ("dynamic_thresholding_ratio", -0.1, "a number in \\[0, 1\\]"),
                                              ("dynamic_thresholding_ratio", float("nan"), "a number in \\[0, 1\\]"),
                                              ("sample_max_value", 0.0, "at 0 or NaN"),
                                              ("sample_max_value", float("nan"), "at 0 or NaN")])
def test_a_thresholding_value_diffusers_fails_on_is_refused_at_construction(name, key, value, rule):
    """diffusers fails on these at its first step, after the first model call (torch.quantile's RuntimeError for the
    ratio; x0 / 0 = NaN for sample_max_value): the shim failed there too, with torch's raw error or a NonFiniteError.
    Now refused by from_config, naming the key, the rule and diffusers' default."""
    default = {"dynamic_thresholding_ratio": "0.995", "sample_max_value": "1.0"}[key]
    with pytest.raises(InvalidOption, match=rf"{name} with {key}={value!r}: .*{rule}.*diffusers' default {default}"):
        SamplerScheduler.from_config({"_class_name": name, "thresholding": True, key: value})
    SamplerScheduler.from_config({"_class_name": name, "thresholding": False, key: value})  # not read: runs


@pytest.mark.parametrize("key, value", [("dynamic_thresholding_ratio", 1.5), ("sample_max_value", 0.0)])
def test_diffusers_own_run_fails_on_those_thresholding_values(key, value):
    import torch

    scheduler = diffusers.DPMSolverMultistepScheduler(**{**DPM, "thresholding": True, key: value})
    scheduler.set_timesteps(3)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    try:
        for t in scheduler.timesteps:
            x = scheduler.step(2 * torch.tanh(x), t, x).prev_sample
    except RuntimeError as exc:
        assert "quantile() q must be in the range [0, 1]" in str(exc)
        return
    assert bool(torch.isnan(x).all())


def _hub_returns(monkeypatch, config_file):
    """diffusers' Hub download, stood in for by a function that hands back a local file (no network here)."""
    import diffusers.configuration_utils as cu

    calls = []

    def fetched(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("subfolder"), kwargs.get("filename")))
        return str(config_file)

    monkeypatch.setattr(cu, "hf_hub_download", fetched)
    return calls


@pytest.mark.parametrize("text, error, why", [
    ('{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, "solver_order": 2}', InvalidInput,
     "'solver_order' appears more than once"),
    (json.dumps({**DPM, "thresholding": "false"}), InvalidType, "field thresholding must be true or false"),
    ("[1, 2]", InvalidInput, "holds a JSON list"),
])
def test_a_config_diffusers_fetches_for_a_hub_id_is_read_as_a_local_one_is(text, error, why, tmp_path, monkeypatch):
    """A Hub id ("org/name") is passed on to diffusers, which downloads its scheduler_config.json (a drop-in: the
    caller asked for it); that file skipped the library's JSON reader a local one goes through: a key written twice
    kept its last value silently, a list was diffusers' own error, and a bad boolean was refused without the file."""
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_text(text)
    link = tmp_path / "snapshot" / "scheduler_config.json"  # the Hub's cache hands back a link to a blob
    link.parent.mkdir()
    link.symlink_to(blob)
    calls = _hub_returns(monkeypatch, link)
    with pytest.raises(error, match=why) as err:
        SamplerScheduler.from_pretrained("org/name", subfolder="scheduler")
    assert calls == [("org/name", "scheduler", "scheduler_config.json")] and str(link) in str(err.value)
    # a good file fetched so loads as the same file does from a folder
    link.unlink()
    link.symlink_to(tmp_path / "blobs" / "good")
    (tmp_path / "blobs" / "good").write_text(json.dumps({**DPM, "solver_order": 3}))
    fetched = SamplerScheduler.from_pretrained("org/name", subfolder="scheduler")
    assert dict(fetched.config) == dict(SamplerScheduler.from_pretrained(link.parent).config)

"""`samplers generate` / `compare` and the models' building blocks at their seams: each bad value refused once, at the
boundary, before the weights are read or any model is called, with an error naming the value, the rule and the fix;
what the checker cannot score shown as such, not a failure after the model ran."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_load(monkeypatch):
    """``Pipeline.load`` replaced by one that fails the test: every value below is refused before it."""
    from models import pipeline

    def load(*_a, **_k):
        raise AssertionError("the weights were loaded before the value was refused")

    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(load))


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

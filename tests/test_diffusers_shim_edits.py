"""A saved shim's config edited as diffusers users edit a scheduler's config — ``Cls.from_config({**pipe.scheduler.config,
key: value})``, or a key changed in the scheduler_config.json that ``save_pretrained`` wrote — runs the edited
setting, as diffusers' own class reads it from the same config (the edit was overwritten by ``source_config``'s
value without a word); an unchanged config still gives the run it gave."""
from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import SDXL, run  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402
from test_diffusers_shim_seams import IMAGE, MASK, MODEL, NOISE  # noqa: E402 (the tiny model and its inputs)

diffusers.utils.logging.set_verbosity_error()

SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False,
            clip_sample=False, timestep_spacing="leading")


def latents(scheduler, steps):
    return run(scheduler, MODEL, "txt2img", NOISE, IMAGE, MASK, steps=steps).double()


def same_run(theirs, ours, steps):
    """The shim against diffusers' class: the same timesteps, and final latents within 1e-5 of their scale."""
    theirs.set_timesteps(steps)
    ours.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    a, b = latents(theirs, steps), latents(ours, steps)
    assert torch.isfinite(a).all()
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def plain(config):
    """A config with its ``_use_default_values`` sorted (diffusers builds the list from a set)."""
    out = dict(config)
    out["_use_default_values"] = sorted(out.get("_use_default_values", []))
    return out


def shim_of(name, config):
    return SamplerScheduler.from_config(getattr(diffusers, name).from_config(config))


EDITS = [
    ("DPMSolverMultistepScheduler", SD15, {"use_karras_sigmas": True, "prediction_type": "v_prediction"}),
    ("DPMSolverMultistepScheduler", SD15, {"timestep_spacing": "trailing"}),
    ("DDIMScheduler", SD15, {"timestep_spacing": "trailing", "set_alpha_to_one": True}),
    ("EulerDiscreteScheduler", SDXL, {"use_karras_sigmas": True}),
    ("UniPCMultistepScheduler", SD15, {"solver_order": 3}),
]


@pytest.mark.parametrize("name, config, edit", EDITS)
def test_an_edited_key_of_a_shims_config_runs_as_diffusers_runs_it(name, config, edit):
    shim = shim_of(name, config)
    edited = {**shim.config, **edit}
    ours = SamplerScheduler.from_config(edited)
    assert {k: ours.config[k] for k in edit} == edit
    assert {k: ours._source_config[k] for k in edit} == edit
    same_run(getattr(diffusers, name).from_config(edited), ours, 5)
    # the class again from the edited shim's config
    back = getattr(diffusers, name).from_config(ours.config).config
    assert {k: back[k] for k in edit} == edit


@pytest.mark.parametrize("name, config, edit", EDITS)
def test_an_edited_scheduler_config_json_runs_as_diffusers_runs_it(name, config, edit, tmp_path):
    shim_of(name, config).save_pretrained(tmp_path)
    path = tmp_path / "scheduler_config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, **edit}))
    ours = SamplerScheduler.from_pretrained(tmp_path)
    assert {k: ours.config[k] for k in edit} == edit
    same_run(getattr(diffusers, name).from_pretrained(tmp_path), ours, 5)


def test_a_from_config_keyword_wins_over_an_edited_key():
    shim = shim_of("DPMSolverMultistepScheduler", SD15)
    ours = SamplerScheduler.from_config({**shim.config, "timestep_spacing": "trailing"}, timestep_spacing="linspace")
    assert ours.config.timestep_spacing == "linspace" == ours._source_config["timestep_spacing"]
    same_run(diffusers.DPMSolverMultistepScheduler.from_config({**SD15, "timestep_spacing": "linspace"}), ours, 5)


@pytest.mark.parametrize("name, config", [(name, config) for name, config, _ in EDITS]
                         + [("DPMSolverSinglestepScheduler", SD15), ("EulerAncestralDiscreteScheduler", SDXL),
                            ("LCMScheduler", SD15)])
def test_an_unchanged_config_round_trips_to_the_same_run(name, config, tmp_path):
    shim = shim_of(name, config)
    again = SamplerScheduler.from_config(shim.config)
    assert plain(again.config) == plain(shim.config)
    shim.save_pretrained(tmp_path)
    loaded = SamplerScheduler.from_pretrained(tmp_path)
    assert loaded.config.source_config == json.loads(json.dumps(shim.config.source_config))
    for other in (again, loaded):
        other.set_timesteps(6)
        shim.set_timesteps(6)
        assert other.timesteps.tolist() == shim.timesteps.tolist()
        assert torch.equal(latents(other, 6), latents(shim, 6))


@pytest.mark.parametrize("edit", [{"sampler": "heun"}, {"exact": True}, {"seed": 5, "sampler": "euler_ancestral"}])
def test_an_edited_option_of_the_shim_itself_runs(edit):
    # diffusers' from_config drops a key its _use_default_values lists (the keys it filled with their defaults): the
    # shim's own options sat there, so {**shim.config, "sampler": "heun"} ran the class's dpmpp_2m without a word
    shim = shim_of("DPMSolverMultistepScheduler", SD15)
    ours = SamplerScheduler.from_config({**shim.config, **edit})
    assert {k: ours.config[k] for k in edit} == edit
    assert ours.spec.name == edit.get("sampler", "dpmpp_2m")
    direct = SamplerScheduler.from_config(diffusers.DPMSolverMultistepScheduler.from_config(SD15), **edit)
    direct.set_timesteps(5)
    ours.set_timesteps(5)
    assert ours.timesteps.tolist() == direct.timesteps.tolist()
    assert torch.equal(latents(ours, 5), latents(direct, 5))


def test_an_edited_key_of_a_shim_without_a_source_class_runs():
    edit = {"beta_schedule": "scaled_linear", "beta_end": 0.012, "timestep_spacing": "trailing"}
    ours = SamplerScheduler.from_config({**SamplerScheduler(sampler="euler").config, **edit})
    assert {k: ours.config[k] for k in edit} == edit
    direct = SamplerScheduler(sampler="euler", **edit)
    ours.set_timesteps(5)
    direct.set_timesteps(5)
    assert ours.timesteps.tolist() == direct.timesteps.tolist()
    assert torch.equal(latents(ours, 5), latents(direct, 5))

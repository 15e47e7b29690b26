"""``sampler="learned_multistep", sampler_options={"solver": PATH}`` in the diffusers shim is ``sampler="fitted:PATH"``,
as the pipeline and the CLI map it (models/pipeline.py): the same checks at construction (the recorded fingerprint
the shim cannot compare, the prediction type), the solver's own σ nodes, the same run. It was accepted unchecked and
then failed at set_timesteps on the config's own grid; ``allow_other_model`` without a solver, which does nothing, was
refused only at set_timesteps."""
from __future__ import annotations

import os
import pytest
import torch

pytest.importorskip("diffusers")

from samplers.core.errors import InvalidInput, InvalidOption, InvalidType  # noqa: E402
from samplers.fitted.solver import LearnedSolver, OtherModelError  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

SHIPPED = "docs/benchmarks/fitted/eps/nfe4.json"
from test_fitted_entry_points import ALLOW, DDIM, EULER  # noqa: E402 (SD-1.x's DDIM / Euler configs)
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def eps_model(x, t):
    t = float(torch.as_tensor(t).reshape(-1)[0])
    return torch.sin(x) * (t / 1000.0) + 0.1 * x


def shim_run(scheduler, steps):
    scheduler.set_timesteps(steps)
    x = NOISE * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return scheduler.timesteps.tolist(), x


@pytest.mark.parametrize("config", [DDIM, EULER], ids=["native latents", "VE latents"])
@pytest.mark.parametrize("given", ["path", "solver"])
def test_learned_multistep_with_a_solver_runs_what_fitted_path_runs(config, given):
    solver = SHIPPED if given == "path" else LearnedSolver.load(SHIPPED)
    named = SamplerScheduler.from_config(config, sampler=f"fitted:{SHIPPED}", sampler_options=ALLOW)
    option = SamplerScheduler.from_config(config, sampler="learned_multistep",
                                          sampler_options={"solver": solver, **ALLOW})
    times, want = shim_run(named, 4)
    got_times, got = shim_run(option, 4)
    assert got_times == times
    assert torch.equal(got, want)
    recorded = option.config.sampler_options["solver"]  # JSON (save_pretrained): the file's absolute path, or the record
    assert recorded == (os.path.abspath(SHIPPED) if given == "path" else solver.record())


@pytest.mark.parametrize("given", ["Path", "loaded", "edited"])
def test_a_solver_given_as_an_object_is_saved_and_read_back_to_the_same_run(given, tmp_path, monkeypatch):
    """A Path or a LearnedSolver in sampler_options was kept in the config as given, and diffusers writes the config
    as JSON: save_pretrained, to_json_string and repr failed raw (TypeError: not JSON serializable) after the run.
    Recorded as the file's absolute path (a Path) or as the solver's own record (a LearnedSolver: the path it was
    loaded from may be relative, or changed since), which from_pretrained reads back to the same run anywhere."""
    from pathlib import Path

    solver = {"Path": Path(SHIPPED), "loaded": LearnedSolver.load(SHIPPED), "edited": LearnedSolver.load(SHIPPED)}[given]
    if given == "edited":
        solver.meta = {**solver.meta, "note": "changed in Python"}
    shim = SamplerScheduler.from_config(DDIM, sampler="learned_multistep", sampler_options={"solver": solver, **ALLOW})
    times, want = shim_run(shim, 4)
    shim.save_pretrained(tmp_path)
    assert repr(shim)
    recorded = shim.config.sampler_options["solver"]
    assert recorded == (os.path.abspath(SHIPPED) if given == "Path" else solver.record())
    want_solver = LearnedSolver.of(solver)
    monkeypatch.chdir(tmp_path)  # read back from another folder: a relative path would name another file there
    again = SamplerScheduler.from_pretrained(tmp_path)
    assert again.sampler_options["solver"] == want_solver
    got_times, got = shim_run(again, 4)
    assert got_times == times and torch.equal(got, want)


def test_a_solver_record_is_checked_as_its_file_is():
    record = LearnedSolver.load(SHIPPED).record()
    with pytest.raises(InvalidInput, match="must agree"):
        LearnedSolver.of({**record, "nfe": record["nfe"] + 1}, "sampler_options['solver']")
    with pytest.raises(InvalidInput, match="sampler_options\\['solver'\\].*unexpected fields"):
        SamplerScheduler.from_config(DDIM, sampler="learned_multistep",
                                     sampler_options={"solver": {**record, "extra": 1}, **ALLOW})


def test_learned_multistep_with_a_solver_is_checked_at_construction_as_fitted_path_is():
    # the shipped fit records its model's fingerprint, which the shim never sees
    for sampler, options in ((f"fitted:{SHIPPED}", {}), ("learned_multistep", {"solver": SHIPPED})):
        with pytest.raises(OtherModelError, match=r"the diffusers scheduler sees the model's outputs, never the model"
                                                  r".*pass sampler_options=\{\"allow_other_model\": True\}"):
            SamplerScheduler.from_config(DDIM, sampler=sampler, sampler_options=options)
        with pytest.raises(OtherModelError, match="prediction is 'v'"):
            SamplerScheduler.from_config({**DDIM, "prediction_type": "v_prediction"}, sampler=sampler,
                                         sampler_options=options)
        with pytest.raises(InvalidOption, match="runs on its own fitted σ nodes, but schedule='karras' is set"):
            SamplerScheduler.from_config(DDIM, sampler=sampler, sampler_options={**options, **ALLOW},
                                         schedule="karras")


def test_learned_multistep_with_a_solver_runs_its_own_steps_from_the_top_only():
    shim = SamplerScheduler.from_config(DDIM, sampler="learned_multistep", sampler_options={"solver": SHIPPED, **ALLOW})
    with pytest.raises(InvalidInput, match="runs exactly 4 steps on its fitted sigmas, but num_inference_steps=8"):
        shim.set_timesteps(8)
    shim.set_timesteps(4)
    with pytest.raises(InvalidInput, match=r"runs on all of its own σ nodes, from the top, and set_begin_index\(2\)"):
        shim.set_begin_index(2)


def test_allow_other_model_without_a_solver_is_refused_at_construction():
    with pytest.raises(InvalidOption, match="allow_other_model=True without solver= does nothing"):
        SamplerScheduler.from_config(DDIM, sampler="learned_multistep", sampler_options=ALLOW)
    # without the option: learned_multistep with every weight 0 (Euler), on the config's grid
    shim_run(SamplerScheduler.from_config(DDIM, sampler="learned_multistep"), 5)


def test_a_solver_that_is_no_solver_is_refused_at_construction():
    with pytest.raises(InvalidType, match=r"sampler_options\['solver'\] must be a samplers.fitted.solver.LearnedSolver"
                                          ", the path of its file or its record \\(LearnedSolver.record\\(\\)\\), got 3 \\(int\\)"):
        SamplerScheduler.from_config(DDIM, sampler="learned_multistep", sampler_options={"solver": 3})


def test_a_solver_meta_that_json_cannot_hold_is_refused_when_checked(tmp_path):
    """A Path in meta built and ran, then save / save_pretrained failed raw (TypeError: not JSON serializable)."""
    from pathlib import Path

    solver = LearnedSolver.load(SHIPPED)
    solver.meta = {**solver.meta, "fitted_from": Path("x")}
    with pytest.raises(InvalidInput, match="meta must hold JSON values only"):
        SamplerScheduler.from_config(DDIM, sampler="learned_multistep", sampler_options={"solver": solver, **ALLOW})
    with pytest.raises(InvalidInput, match="meta must hold JSON values only"):
        solver.validate()

"""SamplerScheduler's default against the real diffusers scheduler where a config's details decide the run: flow
sigmas read as flow times, a class name given as the sampler, configs without _class_name, a final σ repeated within
a few float32 ulps, and misspelt config keys (refused, never dropped)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from benchmarks.compatibility import SD15, SDXL, TinyModel, run  # noqa: E402
from samplers.core.errors import InvalidInput, InvalidOption  # noqa: E402
from samplers.interop import diffusers_sources as sources  # noqa: E402
from samplers.interop.diffusers_scheduler import SamplerScheduler  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

MODEL = TinyModel()
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
IMAGE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
MASK = torch.zeros(1, 1, 8, 8)
MASK[..., 2:6, 1:5] = 1.0

# Sana's scheduler config (flow sigmas on the DPM-Solver classes: their ``sigmas`` hold flow times t)
SANA = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "flow_shift": 3.0,
        "final_sigmas_type": "zero", "lower_order_final": True, "num_train_timesteps": 1000,
        "prediction_type": "flow_prediction", "solver_order": 2, "solver_type": "midpoint",
        "timestep_spacing": "linspace", "use_flow_sigmas": True}
EDM = {"_class_name": "EDMDPMSolverMultistepScheduler", "final_sigmas_type": "sigma_min", "prediction_type": "epsilon",
       "sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002, "solver_order": 2}


def diff(theirs, ours, steps, mode="txt2img"):
    a = run(theirs, MODEL, mode, NOISE, IMAGE, MASK, steps=steps)
    b = run(ours, MODEL, mode, NOISE, IMAGE, MASK, steps=steps)
    assert torch.isfinite(a).all()
    return float((a.double() - b.double()).abs().max())


def pair(name, config, **shim):
    theirs = getattr(diffusers, name).from_config(config)
    return theirs, SamplerScheduler.from_config(getattr(diffusers, name).from_config(config), **shim)


# ----------------------------------------------------------------------------------------------------
# 1. DPMSolverSinglestep on flow sigmas: its inner-step fractions from λ of the VE σ = t/(1 − t), not of t


@pytest.mark.parametrize("steps", [3, 6])
def test_singlestep_flow_sigmas_match_diffusers(steps):
    theirs, ours = pair("DPMSolverSinglestepScheduler", {**SANA, "_class_name": "DPMSolverSinglestepScheduler"})
    assert diff(theirs, ours, steps) < 1e-5


# ----------------------------------------------------------------------------------------------------
# 2. sampler=<the config's own class name> runs what sampler=None runs (the config decides algorithm and order)


@pytest.mark.parametrize("name,variant", [
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"solver_order": 1}),
    ("UniPCMultistepScheduler", {"solver_order": 3}),
    ("DEISMultistepScheduler", {"solver_order": 3}),
])
def test_own_class_name_as_sampler_keeps_the_image(name, variant):
    config = {**SDXL, "_class_name": name, **variant}
    theirs, ours = pair(name, config, sampler=name)
    default = SamplerScheduler.from_config(getattr(diffusers, name).from_config(config))
    assert ours.spec.name == default.spec.name
    assert diff(theirs, ours, 6) < 1e-5


def test_own_class_name_as_sampler_runs_the_class_itself():
    # sampler="TCDScheduler" on a TCDScheduler config is the class's own run (its γ-step, not LCM's)
    config = {**{k: v for k, v in SD15.items() if k != "_class_name"}, "_class_name": "TCDScheduler"}
    shim = SamplerScheduler.from_config(diffusers.TCDScheduler.from_config(config).config
                                        | {"_class_name": "TCDScheduler"}, sampler="TCDScheduler")
    shim.set_timesteps(4)
    assert shim.spec.name == "tcd" and shim._same


# ----------------------------------------------------------------------------------------------------
# 3. configs without _class_name: matched by their parameters only where that is unambiguous


def test_tcd_config_without_class_name_is_refused_not_run_as_lcm():
    tcd = diffusers.TCDScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 set_alpha_to_one=False, steps_offset=1)
    assert "_class_name" not in tcd.config
    with pytest.raises(InvalidOption, match="LCMScheduler, TCDScheduler.*_class_name"):
        SamplerScheduler.from_config(tcd.config)


def test_flow_map_config_without_class_name_is_refused():
    if not hasattr(diffusers, "FlowMapEulerDiscreteScheduler"):
        pytest.skip("no FlowMapEulerDiscreteScheduler in this diffusers")
    with pytest.raises(InvalidOption, match="FlowMapEulerDiscreteScheduler"):
        SamplerScheduler.from_config(diffusers.FlowMapEulerDiscreteScheduler().config)


def test_class_name_as_sampler_picks_among_ambiguous_classes():
    lcm = diffusers.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 set_alpha_to_one=False, steps_offset=1)
    ours = SamplerScheduler.from_config(lcm.config, sampler="LCMScheduler")
    assert ours._source_name == "LCMScheduler"


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DDIMScheduler", "DDPMScheduler"])
def test_unambiguous_config_without_class_name_still_runs(name):
    extra = {} if name == "EulerDiscreteScheduler" else {"clip_sample": False}
    built = getattr(diffusers, name)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **extra)
    assert "_class_name" not in built.config
    ours = SamplerScheduler.from_config(built.config)
    assert ours._source_name == name
    assert diff(getattr(diffusers, name).from_config(built.config), ours, 5) < 1e-5


@pytest.mark.parametrize("twin,name", [("DDIMParallelScheduler", "DDIMScheduler"),
                                       ("DDPMParallelScheduler", "DDPMScheduler")])
def test_same_run_twins_run_the_same_steps(twin, name):
    assert sources.SAME_RUN[twin] == name
    config = {k: v for k, v in SD15.items() if k != "_class_name"}
    for mode in ("txt2img", "img2img"):
        a = run(getattr(diffusers, twin).from_config(config), MODEL, mode, NOISE, IMAGE, MASK, steps=6)
        b = run(getattr(diffusers, name).from_config(config), MODEL, mode, NOISE, IMAGE, MASK, steps=6)
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------
# 4. a final σ repeated within a few float32 ulps (EDM's σ_min computed two ways) or a one-step karras grid


def test_repeat_within_float32_ulps():
    assert sources.same_sigma(0.0019999996293336153, 0.0020000000949949026)
    assert not sources.same_sigma(0.002, 0.00201)


@pytest.mark.parametrize("variant", [{}, {"algorithm_type": "sde-dpmsolver++"}, {"solver_order": 1}])
@pytest.mark.parametrize("steps,mode", [(6, "txt2img"), (6, "inpaint"), (2, "img2img")])
def test_edm_dpm_sigma_min_matches_diffusers(variant, steps, mode):
    theirs, ours = pair("EDMDPMSolverMultistepScheduler", {**EDM, **variant})
    assert diff(theirs, ours, steps, mode) < 1e-5


def test_edm_dpm_third_order_over_the_repeat_is_refused_by_name():
    theirs = diffusers.EDMDPMSolverMultistepScheduler.from_config({**EDM, "solver_order": 3})
    a = run(theirs, MODEL, "txt2img", NOISE, IMAGE, MASK, steps=20)
    assert not torch.isfinite(a).all()  # diffusers' own run: NaN
    ours = SamplerScheduler.from_config(diffusers.EDMDPMSolverMultistepScheduler.from_config({**EDM, "solver_order": 3}))
    with pytest.raises(InvalidOption, match="returns NaN.*solver_order=2.*final_sigmas_type='zero'"):
        ours.set_timesteps(20)


@pytest.mark.parametrize("name,variant", [
    ("DEISMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min",
                                     "algorithm_type": "sde-dpmsolver++"}),
])
def test_one_step_karras_grid_that_is_all_repeat(name, variant):
    theirs, ours = pair(name, {**SDXL, "_class_name": name, **variant})
    assert diff(theirs, ours, 1) < 1e-5  # latents of size σ_max·|n| ≈ 50: float32 rounding


# ----------------------------------------------------------------------------------------------------
# 5. SASolver on flow sigmas: refused for the real reason, with a fix that is not the config itself


def test_sasolver_flow_refusal_names_flow_sigmas():
    config = {**SANA, "_class_name": "SASolverScheduler", "algorithm_type": "data_prediction"}
    ours = SamplerScheduler.from_config(diffusers.SASolverScheduler.from_config(config))
    with pytest.raises(InvalidOption) as err:
        ours.set_timesteps(6)
    text = str(err.value)
    assert "use_flow_sigmas=True" in text and "use the default spacing" not in text and "no SASolverScheduler" in text
    assert "use_karras" not in text


# ----------------------------------------------------------------------------------------------------
# 6. misspelt config keys: refused with the closest key; real shipped configs still load

SD3_FULL = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
            "num_train_timesteps": 1000, "shift": 3.0}
FLUX = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
        "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
        "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
FLUX_LATER = {**FLUX, "shift_terminal": None, "invert_sigmas": False, "stochastic_sampling": False,
              "time_shift_type": "exponential", "use_beta_sigmas": False, "use_exponential_sigmas": False,
              "use_karras_sigmas": False}


@pytest.mark.parametrize("config,key,near", [
    ({**SDXL, "use_karas_sigmas": True}, "use_karas_sigmas", "use_karras_sigmas"),
    ({**SDXL, "_class_name": "DPMSolverMultistepScheduler", "algorithm_typ": "sde-dpmsolver++"}, "algorithm_typ",
     "algorithm_type"),
])
def test_misspelt_config_key_is_refused(config, key, near):
    with pytest.raises(InvalidOption, match=f"'{key}' \\(did you mean '{near}'\\?\\)"):
        SamplerScheduler.from_config(config)


def test_misspelt_source_config_key_is_refused():
    with pytest.raises(InvalidOption, match="use_karas_sigmas"):
        SamplerScheduler.from_config(None, source_config={**SDXL, "use_karas_sigmas": True})


@pytest.mark.parametrize("config", [SD15, {**SD15, "_diffusers_version": "0.6.0"}, SDXL, SD3_FULL, FLUX, FLUX_LATER])
def test_shipped_configs_still_load(config):
    SamplerScheduler.from_config(config)


def test_repo_configs_still_load():
    import benchmarks.compatibility as compat

    configs = [v for v in vars(compat).values() if isinstance(v, dict) and "_class_name" in v]
    assert len(configs) >= 4
    for config in configs:
        if config["_class_name"] in sources.SOURCES:
            SamplerScheduler.from_config(config)


def test_every_class_default_config_passes_the_key_check():
    from samplers.interop.diffusers_scheduler import check_config_keys

    for name in sources.SOURCES:
        check_config_keys({**dict(getattr(diffusers, name)().config), "_class_name": name}, name)
    assert math.isfinite(sources.REPEAT_RTOL)


def test_an_old_config_s_tensor_format_key_loads_as_diffusers_loads_it():
    """diffusers ≤ 0.3 wrote "tensor_format" into scheduler configs; it changes no number and diffusers drops it."""
    ours = SamplerScheduler.from_config({**SDXL, "tensor_format": "pt"})
    plain = SamplerScheduler.from_config(SDXL)
    ours.set_timesteps(4)
    plain.set_timesteps(4)
    assert torch.equal(ours.sigmas, plain.sigmas)


# ----------------------------------------------------------------------------------------------------
# UniPC's disable_corrector: diffusers ignores indices that name no corrected step of the run; the shim passes the
# sampler only those that do (shifted by the start step), and the sampler refuses the rest when called directly


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
@pytest.mark.parametrize("off", [[1, 40], [0, 3, 5], [4, 5, 6, 999]])
def test_unipc_disable_corrector_outside_the_run_matches_diffusers(mode, off):
    theirs, ours = pair("UniPCMultistepScheduler", {**SD15, "_class_name": "UniPCMultistepScheduler",
                                                    "disable_corrector": off})
    assert diff(theirs, ours, 6, mode) < 1e-5


@pytest.mark.parametrize("off, match", [([5], "a run of 5 steps corrects the results of steps 0 … 3"),
                                        ([4], "steps 0 … 3"), ([-1], r"disable_corrector\[0\]")])
def test_unipc_disable_corrector_naming_no_corrected_step_is_refused_before_any_model_call(off, match):
    import samplers

    calls = []

    def model(x, sigma, **kw):
        calls.append(1)
        return x * 0.5

    sigmas = samplers.get_sigmas("karras", 5, sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(InvalidOption, match=match):
        samplers.sample("unipc_bh2", model, torch.ones(1, 3) * 10, sigmas, disable_corrector=off, disable=True)
    with pytest.raises(InvalidOption, match="corrector=False"):
        samplers.sample("unipc_bh2", model, torch.ones(1, 3) * 10, sigmas, disable_corrector=[0], corrector=False,
                        disable=True)
    assert not calls



@pytest.mark.parametrize("cls, nearest", [("IPNDMScheduler", "ipndm")])
def test_own_unsupported_class_as_sampler_names_a_fix_that_runs(cls, nearest):
    """sampler=<the config's class> where the shim cannot reproduce that class is refused, and the fix it names
    (the registry sampler the class's name stands for elsewhere) runs on that config."""
    theirs = getattr(diffusers, cls)()
    with pytest.raises(InvalidOption, match=f"pass sampler='{nearest}'"):
        SamplerScheduler.from_config(theirs, sampler=cls)
    for config in (theirs, {**theirs.config, "_class_name": cls}):  # as the fix says: a config naming its class
        ours = SamplerScheduler.from_config(config, sampler=nearest)
        ours.set_timesteps(4)
        assert len(ours.timesteps) == 4
    with pytest.raises(InvalidOption, match="_class_name"):  # without it, LCM / TCD configs are one and the same
        SamplerScheduler.from_config(dict(theirs.config), sampler=cls)


@pytest.mark.parametrize("cls, config", [
    ("DPMSolverMultistepScheduler", dict(timestep_spacing="linspace")),  # n + 1 rounded points, the last dropped
    ("DPMSolverMultistepScheduler", dict(timestep_spacing="leading", steps_offset=1)),
    ("UniPCMultistepScheduler", dict(timestep_spacing="linspace")),
    ("EulerDiscreteScheduler", dict(timestep_spacing="leading", steps_offset=1, use_karras_sigmas=True)),
])
def test_a_class_named_as_sampler_without_its_config_is_refused(cls, config):
    # without a source class the grid is the registry's (EulerDiscreteScheduler's spacing, karras over the whole
    # table), the class's own only in some configs: these ran another grid than the class's own (SD 1.5, 20 steps: DPMSolverMultistep linspace's last
    # σ > 0 is 0.2256 in diffusers, 0.0292 here), silently
    sd = {k: SD15[k] for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")}
    theirs = getattr(diffusers, cls)(**sd, **config)
    theirs.set_timesteps(20)
    with pytest.raises(InvalidOption, match="from_config"):
        SamplerScheduler(sampler=cls, prediction_type="epsilon", **sd, **config)
    ours = SamplerScheduler.from_config(theirs.config, sampler=cls)  # the fix the error names: the class's own grid
    ours.set_timesteps(20)
    torch.testing.assert_close(ours.sigmas.double(), theirs.sigmas.double(), rtol=1e-5, atol=0)
    name = {"DPMSolverMultistepScheduler": "dpmpp_2m", "UniPCMultistepScheduler": "unipc_bh2"}.get(cls, "euler")
    SamplerScheduler(sampler=name, prediction_type="epsilon", **sd, **config)  # the registry's grid, by name


@pytest.mark.parametrize("override", [dict(timestep_spacing="trailing"), dict(use_karras_sigmas=True),
                                      dict(timestep_spacing="leading", steps_offset=1)])
@pytest.mark.parametrize("given", ["config", "scheduler"])
def test_from_config_overrides_are_kept_on_a_config_built_in_code(override, given):
    # a scheduler built in code lists the keys it left at their defaults in _use_default_values; the shim kept the
    # caller's override in its source config but left it listed there, so the class ran its default instead (the
    # linspace grid for timestep_spacing='trailing', no Karras sigmas), silently
    sd = {k: SD15[k] for k in ("beta_schedule", "beta_start", "beta_end")}
    built = diffusers.EulerDiscreteScheduler(**sd)
    assert "_use_default_values" in built.config
    theirs = diffusers.EulerDiscreteScheduler.from_config(built.config, **override)
    theirs.set_timesteps(6)
    ours = SamplerScheduler.from_config(built.config if given == "config" else built, **override)
    ours.set_timesteps(6)
    torch.testing.assert_close(ours.timesteps.double(), theirs.timesteps.double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.sigmas.double(), theirs.sigmas.double(), rtol=1e-5, atol=0)


def test_the_timestep_check_reads_no_value_each_step():
    # step() and scale_model_input() check the timestep's type on every call by metadata: reading its value
    # (float(t)) added two host reads per step, a device sync each on a GPU (Euler: 1 read per step before, 3 with it)
    sch = SamplerScheduler.from_config(diffusers.DDIMScheduler.from_config(SD15).config)
    sch.set_timesteps(3)
    t = np.asarray(sch.timesteps[0].item())  # a 0-d numpy timestep, as diffusers' DDIM takes it
    assert sch.step(0.3 * NOISE, t, NOISE).prev_sample.shape == NOISE.shape


SD_BETAS = {k: SD15[k] for k in ("beta_schedule", "beta_start", "beta_end")}


@pytest.mark.parametrize("config", [
    diffusers.EulerDiscreteScheduler.from_config(SDXL).config,
    diffusers.EulerAncestralDiscreteScheduler(**SD_BETAS).config,
    diffusers.DPMSolverMultistepScheduler(**SD_BETAS).config,
    diffusers.DDPMScheduler(**SD_BETAS).config,
    diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config,
], ids=["Euler", "EulerAncestral", "DPMSolverMultistep", "DDPM", "FlowMatchEuler"])
def test_a_runs_host_reads_do_not_grow_with_its_steps(config):
    # a pipeline's loop is captured as a CUDA graph only where step() reads no value on the host: the replay of the
    # sampler at each step re-checked the start latent (bool(isfinite(x).all())), one device sync per step; the
    # coordinates' coefficients (flow / VP latents) and DDPM's draw count read CPU tensors (float(), int()) per step.
    # The reads of a run (its start's check, the seeds, the after-loop check) are as many at 3 steps as at 9.
    from samplers.core.graph import count_host_reads

    def reads(steps):
        sch = SamplerScheduler.from_config(config)
        sch.set_timesteps(steps)
        x, n = NOISE * sch.init_noise_sigma, 0
        g = torch.Generator().manual_seed(0)
        for t in sch.timesteps:
            with count_host_reads() as c:
                x = sch.step(0.3 * torch.tanh(sch.scale_model_input(x, t)), t, x, generator=g).prev_sample
            n += c["n"]
        assert torch.isfinite(x).all()
        return n

    assert reads(9) == reads(3)


@pytest.mark.parametrize("config, sampler", [
    (diffusers.DPMSolverSDEScheduler(**SD_BETAS).config, None),
    (diffusers.EulerDiscreteScheduler(**SD_BETAS).config, "DPM++ 2M SDE Karras"),
], ids=["DPMSolverSDE", "DPM++ 2M SDE Karras"])
def test_a_brownian_runs_cost_per_step_does_not_grow_with_its_steps(config, sampler, monkeypatch):
    # each step() replays the sampler from the start: DPMSolverSDE's noise (diffusers' own Brownian tree) was queried
    # again for every earlier step, and a label's named tree was built again at every step() and queried for every
    # earlier step, so the host reads of the middle steps grew 6, 9, 12, ... (14 982 reads, 8.2 s against diffusers'
    # 0.25 s at 50 steps). A tree query reads its times on the host (documented), so a step makes a few reads, the
    # same few at any step count; the label's tree is queried once per draw of the batch's one tree.
    from samplers.core import brownian
    from samplers.core.graph import count_host_reads

    queries = [0]
    query = brownian._query
    monkeypatch.setattr(brownian, "_query", lambda *a: (queries.__setitem__(0, queries[0] + 1), query(*a))[1])

    def per_step(steps):
        sch = SamplerScheduler.from_config(config, **({} if sampler is None else {"sampler": sampler}))
        sch.set_timesteps(steps)
        x, reads = NOISE[:1] * sch.init_noise_sigma, []
        g = torch.Generator().manual_seed(0)
        queries[0] = 0
        for t in sch.timesteps:
            with count_host_reads() as c:
                x = sch.step(0.3 * torch.tanh(sch.scale_model_input(x, t)), t, x, generator=g).prev_sample
            reads.append(c["n"])
        assert torch.isfinite(x).all()
        return reads[1:-1], queries[0]

    (few, few_queries), (many, many_queries) = per_step(3), per_step(12)
    assert set(many) == set(few) and len(set(few)) == 1, (few, many)
    if sampler is not None:  # one query per draw (a draw per step but the last, to σ = 0)
        assert (few_queries, many_queries) == (2, 11)


def test_the_loading_spellings_diffusers_accepts_load(tmp_path):
    # from_config's deprecated pretrained_model_name_or_path= keyword, a config file with subfolder=, and a folder
    # whose subfolder lacks the config (diffusers' load_config falls back to the folder's own) were refused as missing
    cfg = diffusers.EulerDiscreteScheduler().config
    assert type(diffusers.EulerDiscreteScheduler.from_config(pretrained_model_name_or_path=cfg)).__name__ == \
        "EulerDiscreteScheduler"
    assert isinstance(SamplerScheduler.from_config(pretrained_model_name_or_path=cfg), SamplerScheduler)
    SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler()).save_pretrained(tmp_path)
    diffusers.EulerDiscreteScheduler.from_pretrained(tmp_path, subfolder="scheduler")  # diffusers: the fallback
    assert isinstance(SamplerScheduler.from_pretrained(tmp_path, subfolder="scheduler"), SamplerScheduler)
    config_file = tmp_path / "scheduler_config.json"
    assert isinstance(SamplerScheduler.from_pretrained(config_file, subfolder="scheduler"), SamplerScheduler)
    with pytest.raises(FileNotFoundError):  # neither the subfolder's config nor the folder's own: refused by name
        SamplerScheduler.from_pretrained(tmp_path / "missing", subfolder="scheduler")


def test_add_noise_reads_its_timesteps_at_most_once_and_not_after_set_begin_index():
    # an inpaint pipeline calls add_noise at every step: its checks read the values once, where the class reads
    # them too (two reads per call, one of them a second copy to the host, with the first version of the checks),
    # and not at all once set_begin_index makes the class ignore them
    from samplers.core.graph import count_host_reads

    sch = SamplerScheduler.from_config(diffusers.EulerDiscreteScheduler.from_config(SDXL))
    sch.set_timesteps(10)
    with count_host_reads() as c:
        for t in sch.timesteps[1:4]:
            sch.add_noise(IMAGE, NOISE, t.reshape(1))
    assert c["n"] <= 3
    sch.set_begin_index(2)
    with count_host_reads() as c:
        sch.add_noise(IMAGE, NOISE, sch.timesteps[2:3])
    assert c["n"] == 0


# --- a label's schedule or noise that a flow config cannot have: refused by set_timesteps, with the shim's own fix

FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def test_a_labels_brownian_tree_from_sigma_inf_is_refused_where_the_run_starts_there():
    """'DPM++ 2M SDE' draws k-diffusion's tree, which needs a finite range: a flow config's grid starts at σ = inf.
    A run from there is refused where the pipeline says so, before its model call (set_begin_index(0), or
    scale_model_input at the first timestep); it was refused inside the first step(), after that call, naming
    noise_sampler= (which the scheduler does not take). img2img / inpaint start below σ = inf and run."""
    match = "Brownian tree.*in this scheduler pass sampler='dpmpp_2m_sde'"
    shim = SamplerScheduler.from_config(FLOW_CONFIG, sampler="DPM++ 2M SDE", seed=0)
    shim.set_timesteps(4)
    with pytest.raises(InvalidInput, match=match):
        shim.set_begin_index(0)
    shim.set_timesteps(4)
    with pytest.raises(InvalidInput, match=match):
        shim.scale_model_input(torch.zeros(1, 4, 2, 2), shim.timesteps[0])
    shim.set_timesteps(4)
    shim.set_begin_index(1)  # img2img: the tail from a finite σ
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    for t in shim.timesteps[1:]:
        x = shim.step(torch.zeros_like(x), t, x).prev_sample
    assert torch.isfinite(x).all()
    ok = SamplerScheduler.from_config(FLOW_CONFIG, sampler="dpmpp_2m_sde", seed=0)
    ok.set_timesteps(4)
    ok.scale_model_input(torch.zeros(1, 4, 2, 2), ok.timesteps[0])


def test_a_labels_schedule_a_flow_config_cannot_build_names_the_schedulers_fix():
    shim = SamplerScheduler.from_config(FLOW_CONFIG, sampler="DPM++ 2M Karras")
    with pytest.raises(InvalidInput, match="'DPM\\+\\+ 2M Karras' runs on the 'a1111:Karras' schedule.*"
                                                    "pass sampler='dpmpp_2m'") as err:
        shim.set_timesteps(4)
    assert "sigma_max=" not in str(err.value)  # get_sigmas' fix, not an argument of this scheduler


@pytest.mark.parametrize("schedule, runs", [("exponential", None), ("a1111:Exponential", None),
                                            ("karras", "a1111:Karras"), ("Karras", "a1111:Karras"),
                                            ("comfyui:karras", "comfyui:karras")])
def test_a_label_that_names_its_schedule_with_another_is_refused_as_the_pipeline_refuses_it(schedule, runs):
    # "DPM++ 2M Karras" with schedule="exponential" ran exponential in the shim, where resolve_call (Pipeline, CLI)
    # refuses the pair; the same rule by a name of no other tool is the label's own (A1111's float32 table)
    from samplers.core import names

    config = diffusers.EulerDiscreteScheduler.from_config(SD15).config
    if runs is None:
        with pytest.raises(InvalidOption, match=f"names the 'a1111:Karras' schedule, but schedule='{schedule}'"):
            SamplerScheduler.from_config(config, sampler="DPM++ 2M Karras", schedule=schedule)
        with pytest.raises(InvalidOption, match="names the 'a1111:Karras' schedule"):
            names.resolve_call("DPM++ 2M Karras", schedule)
        return
    shim = SamplerScheduler.from_config(config, sampler="DPM++ 2M Karras", schedule=schedule)
    assert shim._schedule_name == runs == names.resolve_call("DPM++ 2M Karras", schedule)[1]


# ----------------------------------------------------------------------------------------------------
# step() keywords of the replaced classes that pipelines pass: taken where they leave the run as it is, else refused

def _first_step(shim, **kw):
    shim.set_timesteps(4)
    t = shim.timesteps[0]
    x = NOISE * getattr(shim, "init_noise_sigma", 1.0)
    if hasattr(shim, "scale_model_input"):
        x = shim.scale_model_input(x, t)
    return shim.step(MODEL(x, t), t, x, **kw).prev_sample


@pytest.mark.parametrize("name, config, kw", [
    ("EulerDiscreteScheduler", SD15, dict(s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0)),
    ("EulerDiscreteScheduler", SD15, dict(s_churn=0, s_noise=0.5)),  # s_noise scales churn noise only
    ("DDIMScheduler", SD15, dict(use_clipped_model_output=None)),  # DDIMPipeline's default
    ("DDIMScheduler", SD15, dict(use_clipped_model_output=True)),  # nothing clipped: the same ε
    ("DDIMScheduler", SD15, dict(eta=0.0, variance_noise=IMAGE)),  # eta 0 draws nothing: diffusers ignores it
    ("DPMSolverMultistepScheduler", SD15, dict(variance_noise=IMAGE)),  # the ODE variant draws nothing
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, dict(per_token_timesteps=None, s_churn=0.0)),
    ("LMSDiscreteScheduler", SD15, dict(order=4)),
])
def test_step_keywords_that_leave_the_run_as_it_is_are_taken(name, config, kw):
    theirs, ours = pair(name, config)
    assert torch.allclose(_first_step(theirs, **kw), _first_step(ours, **kw), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, config, kw, match", [
    ("EulerDiscreteScheduler", SD15, dict(s_churn=0.5), "s_churn=0.5.*churn.*pass s_churn=0"),
    ("EulerDiscreteScheduler", SD15, dict(s_churn=torch.tensor(0.0)), "s_churn=tensor.*Python number"),
    ("DDIMScheduler", SD15, dict(eta=1.0, variance_noise=IMAGE), "variance_noise=a Tensor.*LEdits"),
    ("DPMSolverMultistepScheduler", {**SD15, "algorithm_type": "sde-dpmsolver++"}, dict(variance_noise=IMAGE),
     "variance_noise=a Tensor"),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, dict(per_token_timesteps=torch.full((1, 64), 900.0)),
     "own σ"),
    ("LMSDiscreteScheduler", SD15, dict(order=2), "sampler_options=\\{'order'"),
    ("DPMSolverSDEScheduler", SD15, dict(s_noise=0.5), "sampler_options=\\{'s_noise'"),
])
def test_step_keywords_that_change_the_run_are_refused_by_name(name, config, kw, match):
    # the shim took none of these (a bare TypeError), and dropping them would change the pipeline's image silently
    shim = SamplerScheduler.from_config(getattr(diffusers, name).from_config(config))
    with pytest.raises((InvalidOption, TypeError), match=match):
        _first_step(shim, **kw)


def test_a_step_keyword_the_replaced_class_does_not_take_is_a_type_error_naming_it():
    shim = SamplerScheduler.from_config(diffusers.DDIMScheduler.from_config(SD15))
    with pytest.raises(TypeError, match="'s_churn'.*DDIMScheduler.step\\(\\)"):
        _first_step(shim, s_churn=0.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        _first_step(shim, colour=1)


@pytest.mark.parametrize("name, kw, options", [
    ("LMSDiscreteScheduler", dict(order=2), dict(sampler="lms", sampler_options={"order": 2})),
    ("DPMSolverSDEScheduler", dict(s_noise=0.5), dict(sampler_options={"s_noise": 0.5})),
    ("DPMSolverSDEScheduler", {}, dict(sampler_options={"s_noise": 1.0})),  # the default: the class's own tree
])
def test_the_fix_a_refusal_names_gives_diffusers_image(name, kw, options):
    config = getattr(diffusers, name).from_config({**SD15, "noise_sampler_seed": 5} if "SDE" in name else SD15).config

    def loop(scheduler, **step_kw):
        scheduler.set_timesteps(6)
        x = NOISE * scheduler.init_noise_sigma
        for t in scheduler.timesteps:  # (these classes scale the model input)
            x = scheduler.step(MODEL(scheduler.scale_model_input(x, t), t), t, x, **step_kw).prev_sample
        return x

    theirs = loop(getattr(diffusers, name).from_config(config), **kw)
    ours = loop(SamplerScheduler.from_config(config, **options))
    assert float((theirs - ours).abs().max() / theirs.abs().max()) < 1e-5


def _flow_run(scheduler, **kw):
    scheduler.set_timesteps(**kw)
    x = NOISE.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(MODEL(x, t), t, x, return_dict=False)[0]
    return x


def test_a_key_registered_after_the_shim_was_built_is_read_as_the_class_reads_it():
    # FlowMatchEuler's karras sigmas read sigma_min / sigma_max where its config has them; registered on the shim
    # after construction (as Cosmos2's pipelines do) they were ignored: another grid, 0.17 relative, silently
    config = diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True, shift=3.0).config
    theirs, ours = (diffusers.FlowMatchEulerDiscreteScheduler.from_config(config), SamplerScheduler.from_config(config))
    for scheduler in (theirs, ours):
        scheduler.register_to_config(sigma_min=0.05, sigma_max=0.9)
    a, b = _flow_run(theirs, num_inference_steps=6), _flow_run(ours, num_inference_steps=6)
    assert torch.allclose(theirs.sigmas.double(), ours.sigmas.double(), atol=1e-6)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5


def test_a_key_registered_on_a_shim_without_a_source_class_is_refused():
    shim = SamplerScheduler(sampler="euler", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    shim.register_to_config(sigma_max=0.9)
    with pytest.raises(InvalidOption, match="sigma_max.*nothing this scheduler runs reads"):
        shim.set_timesteps(4)


@pytest.mark.parametrize("kw", [dict(num_inference_steps=6), dict(sigmas=np.linspace(1, 0, 6)[:-1])])
def test_flow_sigmas_above_one_are_refused_by_what_they_are(kw):
    # Cosmos2's pipelines register sigma_max=80 on FlowMatchEuler (a VE Euler run): the shim's flow times cannot
    # hold it; it raised "sigmas[1] = inf is invalid" from inside the sampler
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    scheduler.register_to_config(sigma_max=80.0, sigma_min=0.002, sigma_data=1.0, final_sigmas_type="sigma_min")
    shim = SamplerScheduler.from_config(scheduler)
    with pytest.raises(InvalidInput, match="sigmas run above 1 \\(up to 80.*Cosmos2.*Keep diffusers' own scheduler"):
        shim.set_timesteps(**kw)


@pytest.mark.parametrize("name", ["DDIMScheduler", "PNDMScheduler"])
@pytest.mark.parametrize("spacing, offset, one", [(s, o, a) for s in ("linspace", "leading", "trailing")
                                                  for o in (0, 1) for a in (False, True)])
def test_every_fix_a_ddim_grid_refusal_names_runs(name, spacing, offset, one):
    # the refusals named steps_offset=1 where it was already 1 (linspace ignores it) and divisors of 1000 for
    # linspace, where no step count a pipeline uses runs; each fix now named is tried
    config = {**SD15, "timestep_spacing": spacing, "steps_offset": offset, "set_alpha_to_one": one}

    def runs(cfg, steps=7, **shim):
        try:
            SamplerScheduler.from_config(getattr(diffusers, name).from_config(cfg), **shim).set_timesteps(steps)
        except (InvalidOption, sources.Unavailable) as exc:
            return str(exc)
        return None

    message = runs(config)
    if message is None:
        return
    assert runs({**config, "timestep_spacing": "leading", "steps_offset": 1}) is None
    assert "timestep_spacing='leading' with steps_offset=1" in message
    assert runs({**config, "timestep_spacing": "trailing"}, steps=20) is None
    assert "'trailing' with a step count that divides num_train_timesteps (e.g. [20, 25, 40, 50])" in message
    if "exact=True" in message:
        assert runs(config, exact=True) is None
    if "set_alpha_to_one=True" in message.split("Use ")[-1]:
        assert runs({**config, "set_alpha_to_one": True}) is None


@pytest.mark.parametrize("name, config, override", [
    ("EulerDiscreteScheduler", SDXL, dict(interpolation_type="log_linear")),
    ("DDIMScheduler", {**SD15, "clip_sample": False, "steps_offset": 1}, dict(set_alpha_to_one=True)),
])
def test_the_configs_hidden_keys_are_not_a_later_change(name, config, override):
    # diffusers' from_config registers the keys that are no parameter of the shim after __init__, with the
    # config's values: read as a change made later, they overwrote the caller's override at the first set_timesteps
    source = getattr(diffusers, name).from_config({**config, "_class_name": name})
    theirs = getattr(diffusers, name).from_config(source.config, **override)
    ours = SamplerScheduler.from_config(source.config, **override)
    assert diff(theirs, ours, 7) < 1e-5
    assert {k: ours._source_config[k] for k in override} == override


def test_a_config_without_a_source_class_carrying_other_keys_runs():
    # a sampler on an SD 1.5 config read without its class: the config's PNDM keys were refused as a later change
    config = {k: v for k, v in SD15.items() if k != "_class_name"}
    shim = SamplerScheduler.from_config(config, sampler="euler")
    shim.set_timesteps(6)
    assert len(shim.timesteps) == 6


def test_a_batch_that_changes_within_a_run_is_refused_by_name_and_a_new_run_from_it_is_ddims():
    # TextToVideoZero denoises frame 0 alone, then steps on with every frame: the replay's start has one item (an
    # internal broadcast error before); the message's fix (set_timesteps, set_begin_index) gives diffusers' DDIM
    cfg = dict(_class_name="DDIMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               clip_sample=False, set_alpha_to_one=False, steps_offset=1)

    def model(x, t):
        return torch.tanh(x) * 0.5

    def run(s, restart=False):
        s.set_timesteps(4)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        for t in s.timesteps[:2]:
            x = s.step(model(x, t), t, x).prev_sample
        x = torch.cat([x, x + 0.1])
        if restart:
            s.set_timesteps(4)
            s.set_begin_index(2)
        for t in s.timesteps[2:]:
            x = s.step(model(x, t), t, x).prev_sample
        return x

    ref = run(diffusers.DDIMScheduler.from_config(cfg))
    with pytest.raises(InvalidInput, match=r"latents of shape \(2, 4, 8, 8\) in a run that started from \(1, 4, 8, 8\)"
                                           r".*set_begin_index\(2\)"):
        run(SamplerScheduler.from_config(cfg))
    torch.testing.assert_close(run(SamplerScheduler.from_config(cfg), restart=True), ref, rtol=0,
                               atol=1e-5 * float(ref.abs().max()))
    # within a step of two model calls (heun's second) the fix names where steps start
    heun = SamplerScheduler.from_config(cfg, sampler="heun")
    heun.set_timesteps(3)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = heun.timesteps[0]
    x = heun.step(model(x, t), t, x).prev_sample
    with pytest.raises(InvalidInput, match=r"change it where a step starts \(the model calls \[0, 2, 4\] of this run\)"):
        x2 = torch.cat([x, x])
        heun.step(model(x2, heun.timesteps[1]), heun.timesteps[1], x2)


# ----------------------------------------------------------------------------------------------------
# EDMEuler's set_timesteps(sigmas=...) reads a ramp in [0, 1] (0 is sigma_max), which its sigma_schedule maps to σ

EDM_EULER = {"_class_name": "EDMEulerScheduler", "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0,
             "sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002, "sigma_schedule": "karras"}


def _ramp_run(scheduler, ramp):
    scheduler.set_timesteps(sigmas=ramp)
    x = NOISE * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(MODEL(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return x


def test_the_classes_that_read_sigmas_as_a_ramp_are_diffusers_own():
    takes = {name for name, source in sources.SOURCES.items() if source.model_space({}) == "edm"
             and "sigmas" in inspect.signature(getattr(diffusers, name).set_timesteps).parameters}
    assert takes == set(sources.SIGMAS_AS_RAMP)


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("ramp", [torch.linspace(0, 1, 5), torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0]),
                                  torch.tensor([0.2, 0.5, 0.8])])
def test_an_edm_ramp_passed_as_sigmas_runs_as_diffusers_runs_it(schedule, final, ramp):
    # it was refused as "sigmas must be strictly decreasing ... sigmas[0] = 0 and sigmas[1] = 0.25"
    config = {**EDM_EULER, "sigma_schedule": schedule, "final_sigmas_type": final}
    theirs = _ramp_run(diffusers.EDMEulerScheduler.from_config(config), ramp)
    ours = _ramp_run(SamplerScheduler.from_config(config), ramp)
    assert float((theirs - ours).abs().max() / theirs.abs().max()) < 1e-5


@pytest.mark.parametrize("ramp, match", [
    (torch.tensor([80.0, 20.0, 5.0, 1.0, 0.1]), r"sigmas\[0\] = 80 is outside \[0, 1\]"),
    (torch.tensor([0.0, 0.5, 1.5]), r"sigmas\[2\] = 1.5 is outside \[0, 1\]"),
    (torch.tensor([1.0, 0.5, 0.0]), r"strictly increasing .*sigmas\[0\] = 1 and sigmas\[1\] = 0.5"),
    (torch.tensor([0.0, 0.5, 0.5, 1.0]), r"strictly increasing .*sigmas\[1\] = 0.5 and sigmas\[2\] = 0.5"),
])
def test_an_edm_ramp_outside_its_rule_is_refused_naming_the_value_passed(ramp, match):
    # diffusers runs noise levels passed as the ramp to σ = −2.6e14 …; the shim refused them naming its own σ
    shim = SamplerScheduler.from_config(EDM_EULER)
    with pytest.raises(InvalidInput, match=match + r".*a ramp in \[0, 1\].*not the noise levels themselves"):
        shim.set_timesteps(sigmas=ramp)


# ----------------------------------------------------------------------------------------------------
# a TypeError / AttributeError inside the class's set_timesteps: "does not take" only for a parameter it lacks

WAN_FLOW = {"num_train_timesteps": 1000, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
            "flow_shift": 3.0}


def test_values_diffusers_own_class_fails_on_are_refused_with_the_form_it_takes():
    # UniPC on a flow config does array arithmetic on sigmas: a list fails there (TypeError), a tensor too
    # (AttributeError); both were reported as "UniPCMultistepScheduler.set_timesteps does not take ['sigmas']"
    config = {**WAN_FLOW, "_class_name": "UniPCMultistepScheduler"}
    sigmas = [1.0, 0.8, 0.5, 0.2]
    for given, form in ((sigmas, "a list"), (torch.tensor(sigmas), "a torch tensor")):
        with pytest.raises(InvalidInput, match=f"diffusers' UniPCMultistepScheduler.set_timesteps itself fails on "
                                               f"sigmas \\({form}\\).*pass sigmas as a numpy array, which it takes"):
            SamplerScheduler.from_config(config).set_timesteps(sigmas=given)
    theirs = _flow_run(diffusers.UniPCMultistepScheduler.from_config(config), sigmas=np.asarray(sigmas))
    ours = _flow_run(SamplerScheduler.from_config(config), sigmas=np.asarray(sigmas))
    assert float((theirs - ours).abs().max() / theirs.abs().max()) < 1e-5
    # EDMEuler's ramp is the other way round: a tensor, not a list
    with pytest.raises(InvalidInput, match="EDMEulerScheduler.set_timesteps itself fails on sigmas \\(a list\\).*"
                                           "pass sigmas as a torch tensor"):
        SamplerScheduler.from_config(EDM_EULER).set_timesteps(sigmas=[0.0, 0.5, 1.0])


def test_an_argument_the_class_takes_but_never_reads_on_this_config_says_so():
    # DPMSolverMultistep's flow branch builds its grid from num_inference_steps alone: timesteps= fail there with
    # "unsupported operand type(s) for +: 'NoneType' and 'int'"; the shim said it did not take timesteps
    config = {**WAN_FLOW, "_class_name": "DPMSolverMultistepScheduler"}
    with pytest.raises(InvalidInput, match="itself fails on timesteps \\(a list\\).*use_flow_sigmas=True.*never reads "
                                           "timesteps.*pass num_inference_steps=4 instead") as info:
        SamplerScheduler.from_config(config).set_timesteps(timesteps=[999, 800, 500, 200])
    assert "does not take" not in str(info.value)


def test_an_argument_the_class_has_no_parameter_for_is_refused_before_its_values_are_checked():
    # EDMDPMSolverMultistep's set_timesteps takes no sigmas: refused as such, not as a ramp "not strictly decreasing"
    with pytest.raises(InvalidOption,
                       match="EDMDPMSolverMultistepScheduler.set_timesteps does not take \\['sigmas'\\]"):
        SamplerScheduler.from_config(EDM).set_timesteps(sigmas=torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler"])
@pytest.mark.parametrize("option", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
def test_flow_sigmas_with_a_vp_table_schedule_are_refused_naming_that_option(name, option):
    # these classes build karras / exponential / beta sigmas from the training betas ahead of their flow branch
    # (σ up to 157.4, read as flow times t); the refusal blamed a sigma_max in the config (Cosmos2's) and said to set
    # sigma_max ≤ 1, which these configs do not have
    config = {**WAN_FLOW, "_class_name": name, option: True}
    reference = getattr(diffusers, name).from_config(config)
    reference.set_timesteps(8)
    if float(reference.sigmas.max()) <= 1:  # UniPC maps its karras sigmas to flow times t = σ/(1 + σ): it runs
        assert diff(getattr(diffusers, name).from_config(config), SamplerScheduler.from_config(config), 8) < 1e-5
        return
    with pytest.raises(InvalidInput, match=f"sets {option}=True with use_flow_sigmas=True.*training betas' noise "
                                           f"levels \\(up to 157.4.*set {option}=False") as info:
        SamplerScheduler.from_config(config).set_timesteps(8)
    assert "sigma_max" not in str(info.value)


@pytest.mark.parametrize("twin", ["DDIMParallelScheduler", "DDPMParallelScheduler"])
def test_same_run_twins_named_by_class_or_passed_as_the_scheduler_match_diffusers(twin):
    # read as DDIM / DDPM without _class_name, but refused with it (what from_pretrained loads) and as the scheduler
    # itself: "cannot reproduce DDIMParallelScheduler: it is not a scheduler class the shim stands in for"
    built = getattr(diffusers, twin)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     clip_sample=False, steps_offset=1)
    bare = {k: v for k, v in built.config.items() if not k.startswith("_")}
    config = {**bare, "_class_name": twin}
    for given in (config, built, bare):
        ours = SamplerScheduler.from_config(given)
        for mode in ("txt2img", "img2img"):
            assert diff(getattr(diffusers, twin).from_config(config), ours, 6, mode) < 1e-5
    # the class again from the shim's config, and a saved shim with an override
    back = getattr(diffusers, twin).from_config(ours.config).config
    assert {k: back[k] for k in bare} == bare
    saved = SamplerScheduler.from_config(SamplerScheduler.from_config(built).config, timestep_spacing="trailing")
    assert saved._source_config["timestep_spacing"] == "trailing"


_TERMINAL = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0, "shift_terminal": 0.05},
             "UniPCMultistepScheduler": {**WAN_FLOW, "shift_terminal": 0.05}}


@pytest.mark.parametrize("name, kw, given", [
    *[(name, dict(num_inference_steps=1), "num_inference_steps=1") for name in _TERMINAL],
    *[(name, dict(sigmas=np.array([1.0])), r"sigmas=\[1.0\]") for name in _TERMINAL],
    ("FlowMatchEulerDiscreteScheduler", dict(timesteps=[1000.0]), r"timesteps=\[1000.0\]"),
])
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # diffusers' 0/0
def test_shift_terminal_on_a_single_step_from_flow_time_one_is_refused_naming_it(name, kw, given):
    # shift_terminal divides by 1 − the last shifted flow time, 0 for a single step from t = 1: diffusers' σ is NaN,
    # and the shim refused with "sigmas[0] = nan is invalid" from the sampler, naming neither the option nor a fix
    config = {**_TERMINAL[name], "_class_name": name}
    theirs = getattr(diffusers, name).from_config(config)
    theirs.set_timesteps(**kw)
    assert torch.isnan(theirs.sigmas).any()
    with pytest.raises(InvalidInput, match=f"{name} with shift_terminal=0.05 cannot run set_timesteps\\({given}\\).*"
                                           "NaN.*2 or more steps, or leave shift_terminal out"):
        SamplerScheduler.from_config(config).set_timesteps(**kw)
    # what it says runs: two steps, as diffusers runs them
    assert diff(getattr(diffusers, name).from_config(config), SamplerScheduler.from_config(config), 2) < 1e-5

"""The one name resolver: registry names, A1111 / ComfyUI labels, diffusers classes, prefixes, and how a label's
schedule and options meet the caller's."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import samplers
from samplers.core import labels, names
from samplers.core.registry import SAMPLERS, _normalise
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=1)


@pytest.mark.parametrize("source", sorted(names.TABLES))
def test_every_label_names_a_registered_sampler_and_its_options(source):
    for key in names.TABLES[source]:
        found = names.resolve(f"{source}:{key}")
        spec = SAMPLERS.get(found.sampler)
        unknown = set(found.options) - set(spec.options)
        assert not unknown, f"{source} label {key!r}: {found.sampler} has no option(s) {unknown}"
        if found.schedule is not None:
            names.resolve_schedule(found.schedule)


def test_no_label_is_shadowed_by_the_registry():
    # A1111 labels and diffusers classes typed as the tool spells them reach their own table ("DPM2" is A1111's,
    # with its Karras default; "dpm_2" the registry's); a ComfyUI name that is also a registry name means the same
    # sampler (it differs only in its defaults, which the comfyui: prefix gives) — but ComfyUI's ddim, which calls its
    # sample_euler: the registry's ddim at its default η = 0 is that rule (to float rounding), and takes η besides.
    for source in ("a1111", "diffusers"):
        for key in names.TABLES[source]:
            assert names.resolve(key) == names.resolve(f"{source}:{key}"), key
    registry_names = {_normalise(n) for n in SAMPLERS._lookup}
    for key, (target, *_) in labels.COMFYUI.items():
        if _normalise(key) in registry_names:
            assert samplers.info(key).name == (target if key != "ddim" else "ddim")
    assert names.resolve("comfyui:ddim").sampler == "euler"
    sigmas = samplers.get_sigmas("karras", 8, sigma_min=0.03, sigma_max=14.6)
    x = GM.noise(4, seed=0) * sigmas[0]
    torch.testing.assert_close(samplers.sample("ddim", GM.denoiser, x, sigmas, disable=True),
                               samplers.sample("comfyui:ddim", GM.denoiser, x, sigmas, disable=True), rtol=0, atol=1e-5)


def test_labels_imply_schedules_and_options():
    found = names.resolve("DPM++ 2M Karras")
    assert (found.sampler, found.schedule, found.schedule_is_explicit, found.source) == ("dpmpp_2m", "a1111:Karras", True, "a1111")
    assert names.resolve("DPM++ 2M SDE Heun").options == {"noise_sampler": "brownian_tree", "solver_type": "heun"}
    assert names.resolve("dpmpp_2m_sde_gpu").options == {"noise_sampler": "brownian_tree_device"}
    assert names.resolve("DPMSolverMultistepScheduler").sampler == "dpmpp_2m"
    assert names.resolve("UniPCMultistepScheduler").options == {"order": 2}
    assert names.resolve("DPM2 a").discard_penultimate_sigma and not names.resolve("Euler a").discard_penultimate_sigma
    assert names.resolve("DPM2").schedule == "a1111:Karras" and names.resolve("dpm_2").schedule is None
    with pytest.raises(names.InvalidInput, match="run different things"):  # registry dpm_2 or A1111's DPM2?
        names.resolve("dpm2")
    # the registry wins without a prefix; the prefix gives the tool's own defaults
    assert names.resolve("dpmpp_2m_sde").options == {}
    assert names.resolve("comfyui:dpmpp_2m_sde").options == {"noise_sampler": "brownian_tree"}
    assert names.resolve("registry:euler").sampler == "euler"


def test_a_callers_schedule_replaces_a_default_and_conflicts_with_a_named_one():
    _, schedule, _ = names.resolve_call("DPM++ 2M")
    assert schedule == "a1111:Karras"  # A1111's Karras type: on a discrete model its float32 table
    _, schedule, _ = names.resolve_call("DPM++ 2M", "exponential")
    assert schedule == "exponential"
    _, schedule, _ = names.resolve_call("DPM++ 2M Karras", "karras")  # the same rule, spelt differently: the label's
    assert schedule == "a1111:Karras"
    with pytest.raises(samplers.InvalidOption, match="names the 'a1111:Karras' schedule"):
        names.resolve_call("DPM++ 2M Karras", "exponential")
    with pytest.raises(samplers.InvalidOption, match="solver_type='heun'"):
        names.resolve_call("DPM++ 2M SDE Heun", None, {"solver_type": "midpoint"})
    _, _, options = names.resolve_call("DPM++ 2M SDE Heun", None, {"eta": 0.5})
    assert options == {"noise_sampler": "brownian_tree", "solver_type": "heun", "eta": 0.5}


def test_schedule_names_of_the_tools():
    assert names.resolve_schedule("Karras") == ("karras", {})
    assert names.resolve_schedule("beta") == ("beta_timesteps", {})  # ComfyUI's and A1111's Beta scheduler
    assert names.resolve_schedule("comfyui:beta") == ("beta_timesteps", {})
    assert names.resolve_schedule("a1111:Uniform") == ("linspace", {})
    assert names.resolve_schedule("SGM Uniform") == ("sgm_uniform", {})
    with pytest.raises(samplers.UnknownNameError):
        names.resolve_schedule("a1111:Karras Plus")


def test_refused_and_unknown_names_say_why():
    with pytest.raises(samplers.Unavailable, match="CFG\\+\\+"):
        samplers.get("euler_cfg_pp")
    with pytest.raises(samplers.UnknownNameError, match="Closest: .*DPM\\+\\+ 2M Karras") as err:
        samplers.get("DPM++ 2M Karas")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(samplers.UnknownNameError, match="unknown name prefix"):
        names.resolve("automatic1111:Euler")
    with pytest.raises(samplers.InvalidType):
        names.resolve(3)


def test_every_entry_point_takes_a_label():
    x = GM.noise(2, seed=0) * 10.0
    sigmas = samplers.get_sigmas("karras", 4, sigma_min=0.05, sigma_max=10.0)
    ours = samplers.sample("DPM++ 2M Karras", GM.denoiser, x, sigmas, disable=True)
    torch.testing.assert_close(ours, samplers.sample("dpmpp_2m", GM.denoiser, x, sigmas, disable=True))
    assert samplers.info("DPM++ 2M SDE Heun").name == "dpmpp_2m_sde"
    heun_sde = samplers.get("DPM++ 2M SDE Heun")
    a = heun_sde(GM.denoiser, x, sigmas, disable=True, seed=3)
    b = samplers.sample("dpmpp_2m_sde", GM.denoiser, x, sigmas, disable=True, seed=3, solver_type="heun",
                        noise_sampler="brownian_tree")
    torch.testing.assert_close(a, b)
    with pytest.raises(samplers.InvalidOption):
        heun_sde(GM.denoiser, x, sigmas, disable=True, solver_type="midpoint")


def test_names_command_prints_the_table(capsys):
    from samplers.cli import main

    assert main(["names", "--source", "a1111"]) == 0
    out = capsys.readouterr().out
    assert "DPM++ 2M Karras" in out and "a1111:Karras (named)" in out and "drop σ_{n-1}" in out


def test_a_tools_name_for_the_schedule_a_label_names_is_no_conflict():
    for schedule in ("karras", "Karras", "a1111:Karras"):  # the label's own runs (A1111's table)
        assert names.resolve_call("DPM++ 2M Karras", schedule)[1] == "a1111:Karras"
    assert names.resolve_call("DPM++ 2M Karras", "comfyui:karras")[1] == "comfyui:karras"  # another tool's: as asked
    with pytest.raises(samplers.InvalidOption, match="names the 'a1111:Karras' schedule"):
        names.resolve_call("DPM++ 2M Karras", "a1111:Exponential")


# ---- A1111 1.9+'s "<sampler> <Schedule type>" names (sd_samplers.get_sampler_and_scheduler)


def _a1111_types():
    from samplers.core import labels

    return [(kind, spelling) for kind, more in labels.A1111_SCHEDULE_TYPES.items() for spelling in (kind, *more)]


@pytest.mark.parametrize("kind, spelling", _a1111_types())
def test_every_a1111_sampler_name_with_every_schedule_type_is_that_sampler_on_that_type(kind, spelling):
    """"Euler a Karras", "DPM++ 2M sgm_uniform", "Heun SGMUniform": A1111 splits off the type's label, name or alias
    (the API's sampler_name, infotext) — these were unknown names. The sampler's options, A1111's dropped
    next-to-last σ and whole-range rule come with its label; the schedule is named (a caller's other one conflicts);
    "Automatic" is the label itself."""
    from samplers.core import names

    for base in names._A1111_BASES:
        label = names.resolve(f"a1111:{base}")
        if spelling == "SGM Uniform":  # A1111's parser strips " Uniform" first: its default sampler on Uniform
            with pytest.raises(samplers.InvalidOption, match=f"A1111 reads '{re.escape(base)} SGM Uniform' as "
                                                             f"'{re.escape(base)} SGM' with the Uniform type"):
                names.resolve(f"{base} {spelling}")
            continue
        if (label.schedule is None or base in labels.A1111_TIMESTEP_SAMPLERS) and kind != "Automatic":
            with pytest.raises(samplers.InvalidOption, match="steps its own timesteps whatever the type"):
                names.resolve(f"{base} {spelling}")
            continue
        found = names.resolve(f"{base} {spelling}")
        assert (found.source, found.sampler, found.options, found.discard_penultimate_sigma, found.model_range) == \
            ("a1111", label.sampler, label.options, label.discard_penultimate_sigma, label.model_range), base
        if kind == "Automatic":
            assert (found.schedule, found.schedule_is_explicit) == (label.schedule, label.schedule_is_explicit)
        else:
            assert found.schedule_is_explicit
            assert names.resolve_schedule(found.schedule) == names.resolve_schedule(f"a1111:{kind}"), (base, kind)
        typed = names.resolve(f"{base} {spelling}".lower().replace(" ", "_"))  # case, spaces and _ aside: the same
        assert dataclasses.replace(typed, label="") == dataclasses.replace(found, label="")


def test_the_labels_of_versions_before_1_9_are_what_the_split_gives():
    """The table's "DPM++ 2M Karras", "LMS Karras", "DPM++ 2M SDE Heun Exponential", ... (A1111 1.9+ reads them by
    the same split) agree with the rule for every other combination."""
    from samplers.core import labels, names

    split = [k for k in labels.A1111 if names._a1111_split(k) is not None]
    assert len(split) >= 10
    for key in split:
        table = names._from_table("a1111", key)
        rule = names._a1111_combined(key, exact=True)
        assert dataclasses.replace(rule, schedule=None) == dataclasses.replace(table, schedule=None), key
        assert names.resolve_schedule(rule.schedule) == names.resolve_schedule(table.schedule), key


def test_a1111_combined_names_meet_a_callers_schedule_as_named_labels_do():
    from samplers.core import names

    with pytest.raises(samplers.InvalidOption, match="'Euler a sgm_uniform' names the 'a1111:SGM Uniform' schedule"):
        names.resolve_call("Euler a sgm_uniform", "karras")
    assert names.resolve_call("Euler a sgm_uniform", "sgm_uniform")[1] == "a1111:SGM Uniform"  # the same rule: the label's
    assert names.resolve_call("Euler a Automatic", "karras")[1] == "karras"  # the label's default gives way


def test_a1111s_automatic_type_and_ddim_cfgpp_are_refused_with_the_reason_and_the_fix():
    from samplers.core import names

    for name in ("Automatic", "automatic", "a1111:Automatic"):
        with pytest.raises(samplers.UnknownNameError, match="leave the schedule out"):
            names.resolve_schedule(name)
    for name in ("DDIM CFG++", "ddim_cfgpp", "a1111:DDIM CFG++"):
        with pytest.raises(samplers.Unavailable, match="CFG\\+\\+ .*use 'DDIM'"):
            samplers.info(name)


def test_combined_names_of_one_spelling_ignoring_case_spaces_and_underscores_run_one_thing():
    from samplers.core import names

    seen = {}  # Forge's "iPNDM" and "IPNDM" are one label spelt two ways: one run
    for key, (base, kind) in names._A1111_COMBINED.items():
        run = (labels.A1111[base], kind)
        assert seen.setdefault(_normalise(key), run) == run, key


def test_a_labels_noise_is_its_tools_default_which_a_callers_noise_replaces():
    """A label's noise_sampler ("DPM++ 2M SDE": the Brownian tree A1111 gives it; comfyui:euler_ancestral: ComfyUI's
    generator) is its tool's default, which the tools replace by a caller's; another option still conflicts."""
    for name, default in (("DPM++ 2M SDE", "brownian_tree"), ("comfyui:euler_ancestral", "comfyui")):
        found = names.resolve(name)
        assert names.merge_options(found, {})["noise_sampler"] == default
        assert names.merge_options(found, {"noise_sampler": "seeded"})["noise_sampler"] == "seeded"
    with pytest.raises(samplers.InvalidOption, match="solver_type='heun', but solver_type='midpoint' was passed"):
        names.merge_options(names.resolve("DPM++ 2M SDE Heun"), {"solver_type": "midpoint"})


@pytest.mark.parametrize("name", sorted(labels.COMFYUI_REFUSED))
def test_every_refused_comfyui_name_is_refused_with_its_reason(name):
    """ComfyUI's cfgpp_ud10_ab (in its KSAMPLER_NAMES) was an unknown name; each refused name says why."""
    with pytest.raises(samplers.Unavailable, match=f"ComfyUI sampler '{name}' is not available: "
                                                   f"{re.escape(labels.COMFYUI_REFUSED[name][:40])}"):
        samplers.info(name)


def test_a_comma_separated_list_given_as_one_name_says_to_pass_names_apart():
    from samplers.core import names

    with pytest.raises(samplers.UnknownNameError, match="separated by spaces"):
        names.resolve("euler,heun")

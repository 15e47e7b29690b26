"""The one name resolver: registry names, A1111 / ComfyUI labels, diffusers classes, prefixes, and how a label's
schedule and options meet the caller's."""
from __future__ import annotations

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
    # sampler (it differs only in its defaults, which the comfyui: prefix gives).
    for source in ("a1111", "diffusers"):
        for key in names.TABLES[source]:
            assert names.resolve(key) == names.resolve(f"{source}:{key}"), key
    registry_names = {_normalise(n) for n in SAMPLERS._lookup}
    for key, (target, *_) in labels.COMFYUI.items():
        if _normalise(key) in registry_names:
            assert samplers.info(key).name == target


def test_labels_imply_schedules_and_options():
    found = names.resolve("DPM++ 2M Karras")
    assert (found.sampler, found.schedule, found.schedule_is_explicit, found.source) == ("dpmpp_2m", "karras", True, "a1111")
    assert names.resolve("DPM++ 2M SDE Heun").options == {"noise_sampler": "brownian_tree", "solver_type": "heun"}
    assert names.resolve("dpmpp_2m_sde_gpu").options == {"noise_sampler": "brownian_tree_device"}
    assert names.resolve("DPMSolverMultistepScheduler").sampler == "dpmpp_2m"
    assert names.resolve("UniPCMultistepScheduler").options == {"order": 2}
    assert names.resolve("DPM2 a").discard_penultimate_sigma and not names.resolve("Euler a").discard_penultimate_sigma
    assert names.resolve("DPM2").schedule == "karras" and names.resolve("dpm_2").schedule is None
    with pytest.raises(names.InvalidInput, match="run different things"):  # registry dpm_2 or A1111's DPM2?
        names.resolve("dpm2")
    # the registry wins without a prefix; the prefix gives the tool's own defaults
    assert names.resolve("dpmpp_2m_sde").options == {}
    assert names.resolve("comfyui:dpmpp_2m_sde").options == {"noise_sampler": "brownian_tree"}
    assert names.resolve("registry:euler").sampler == "euler"


def test_a_callers_schedule_replaces_a_default_and_conflicts_with_a_named_one():
    _, schedule, _ = names.resolve_call("DPM++ 2M")
    assert schedule == "karras"
    _, schedule, _ = names.resolve_call("DPM++ 2M", "exponential")
    assert schedule == "exponential"
    _, schedule, _ = names.resolve_call("DPM++ 2M Karras", "Karras")  # the same schedule, spelt differently
    assert schedule == "Karras"
    with pytest.raises(samplers.InvalidOption, match="names the 'karras' schedule"):
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
    assert "DPM++ 2M Karras" in out and "karras (named)" in out and "drop σ_{n-1}" in out


def test_a_tools_name_for_the_schedule_a_label_names_is_no_conflict():
    for schedule in ("karras", "Karras", "a1111:Karras", "comfyui:karras"):
        assert names.resolve_call("DPM++ 2M Karras", schedule)[1] == schedule
    with pytest.raises(samplers.InvalidOption, match="names the 'karras' schedule"):
        names.resolve_call("DPM++ 2M Karras", "a1111:Exponential")

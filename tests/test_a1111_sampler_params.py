"""A1111 passes its sampler settings (s_churn, s_tmin, s_tmax, s_noise) to a k-diffusion function only where its
sampler_extra_params lists them: under an A1111 label a setting the function does not receive is dropped at A1111's
default (what its API payload sends for every sampler) and refused at any other value."""
import pytest
import torch

import samplers
from samplers.core import labels, names
from samplers.core.errors import InvalidOption

PAYLOAD = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0}  # A1111's API defaults


def model(x, sigma, **kw):
    return x / (1 + sigma.view(-1, 1) ** 2)


SIGMAS = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])


@pytest.mark.parametrize("label,key", [("Euler a", "s_noise"), ("k_euler_a", "s_noise"), ("DPM adaptive", "s_noise"),
                                       ("k_dpm_ad", "s_noise"), ("Restart", "s_noise"), ("LCM", "s_noise"),
                                       ("DDIM", "s_noise"), ("LMS", "s_churn"), ("DPM2 a", "s_churn"),
                                       ("DPM++ 2M SDE", "s_tmin"), ("Euler a Karras", "s_noise")])
def test_a_setting_a1111_does_not_pass_is_refused_with_the_fix(label, key):
    with pytest.raises(InvalidOption, match=f"A1111 does not pass its {key} setting") as err:
        names.resolve_call(label, None, {key: 0.5})
    assert repr(names.resolve(label).sampler) in str(err.value)  # the registry name that runs it with the value


def test_the_refusal_holds_for_sample_too():
    x = torch.ones(1, 4) * 10
    with pytest.raises(InvalidOption, match="s_noise"):
        samplers.sample("Euler a", model, x, SIGMAS, seed=1, s_noise=0.5)
    with pytest.raises(InvalidOption, match="s_churn"):
        samplers.sample("LMS", model, x, SIGMAS, s_churn=1.0)
    # the registry name is the way to the value
    samplers.sample("euler_ancestral", model, x, SIGMAS, seed=1, s_noise=0.5)


@pytest.mark.parametrize("label", sorted(k for k, v in labels.A1111.items()))
def test_a1111_payload_defaults_are_accepted_under_every_label(label):
    found, _, merged = names.resolve_call(label, None, dict(PAYLOAD))
    received = labels.A1111_SAMPLER_PARAMS.get(f"sample_{found.sampler}", ())
    assert {k for k in PAYLOAD if k in merged} == set(received)
    assert all(k in found.options or k in received for k in merged if k in PAYLOAD)


@pytest.mark.parametrize("label", ["Euler a", "LMS", "DPM++ 2M", "DPM adaptive", "Restart"])
def test_payload_defaults_run_the_label_unchanged(label):
    x = torch.linspace(-1, 1, 8).reshape(2, 4) * 10
    seed = {} if label in ("LMS", "DPM++ 2M") else {"seed": [3, 4]}
    plain = samplers.sample(label, model, x, SIGMAS, **seed)
    pasted = samplers.sample(label, model, x, SIGMAS, **seed, **PAYLOAD)
    assert torch.equal(plain, pasted)


def test_settings_a1111_passes_still_reach_the_sampler():
    _, _, merged = names.resolve_call("Euler", None, {"s_churn": 1.0, "s_tmax": 0})
    assert merged["s_churn"] == 1.0 and merged["s_tmax"] == float("inf")
    _, _, merged = names.resolve_call("DPM++ 2M SDE", None, {"s_noise": 0.5})
    assert merged["s_noise"] == 0.5
    _, _, merged = names.resolve_call("DPM2 a", None, {"s_noise": 0.5})
    assert merged["s_noise"] == 0.5


def test_a_bool_is_not_a_default():
    with pytest.raises(InvalidOption):
        names.resolve_call("Euler a", None, {"s_noise": True})


def test_the_table_is_a1111s():
    full = ("s_churn", "s_tmin", "s_tmax", "s_noise")
    assert labels.A1111_SAMPLER_PARAMS == {
        "sample_euler": full, "sample_heun": full, "sample_dpm_2": full,
        **{f: ("s_noise",) for f in ("sample_dpm_fast", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                                      "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde")}}


# ---------------------------------------------------------------------------------------------------------- eta
# A1111 passes its eta only to a function with an eta parameter (Sampler.initialize: inspect.signature): its LCM
# (sd_samplers_lcm.sample_lcm) has none, so A1111's LCM re-noises with fresh noise only whatever the eta.

@pytest.mark.parametrize("label", ["LCM", "k_lcm", "a1111:LCM"])
def test_eta_under_lcm_is_refused_naming_the_registry_lcm(label):
    with pytest.raises(InvalidOption, match="A1111 does not pass its eta setting") as err:
        names.resolve_call(label, None, {"eta": 0.5})
    assert "no eta parameter" in str(err.value) and "'lcm'" in str(err.value)
    x = torch.ones(1, 4) * 10
    with pytest.raises(InvalidOption, match="eta"):
        samplers.sample(label, model, x, SIGMAS, seed=1, eta=0.5)
    samplers.sample("lcm", model, x, SIGMAS, seed=1, eta=0.5)  # the registry's takes it


def test_eta_at_a1111s_default_is_dropped_under_lcm_and_runs_a1111s_lcm():
    _, _, merged = names.resolve_call("LCM", None, {"eta": 1.0})
    assert "eta" not in merged
    x = torch.linspace(-1, 1, 8).reshape(2, 4) * 10
    assert torch.equal(samplers.sample("LCM", model, x, SIGMAS, seed=[3, 4]),
                       samplers.sample("LCM", model, x, SIGMAS, seed=[3, 4], eta=1.0))


def _a1111_eta_default(found) -> float:
    """A1111's eta setting's default for a label: "Eta DDIM" (0) for its timestep samplers, else "Eta for ancestral
    samplers" (1)."""
    timestep = found.sampler in {labels.A1111[k][0] for k in labels.A1111_TIMESTEP_SAMPLERS}
    return 0.0 if timestep else 1.0


@pytest.mark.parametrize("label", sorted(labels.A1111))
def test_a1111s_eta_default_is_accepted_under_every_label_and_kept_where_a1111_passes_it(label):
    found = names.resolve(label)
    _, _, merged = names.resolve_call(label, None, {"eta": _a1111_eta_default(found)})
    assert ("eta" in merged) == (f"sample_{found.sampler}" in labels.A1111_TAKES_ETA)


@pytest.mark.parametrize("label", sorted(labels.A1111))
def test_another_eta_is_refused_where_a1111_does_not_pass_it(label):
    found = names.resolve(label)
    if f"sample_{found.sampler}" in labels.A1111_TAKES_ETA:
        return
    with pytest.raises(InvalidOption, match="A1111 does not pass its eta setting") as err:
        names.resolve_call(label, None, {"eta": 0.5})
    if "eta" not in samplers.core.registry.SAMPLERS.get(found.sampler).options:
        assert f"the registry's {found.sampler!r} takes no eta either" in str(err.value)


def test_the_eta_table_is_a1111s():
    # the k-diffusion functions with an eta parameter, and A1111's timestep DDIM (sd_samplers_timesteps_impl.ddim)
    assert labels.A1111_TAKES_ETA == {
        "sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpm_fast",
        "sample_dpm_adaptive", "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_ddim"}
    # of the A1111 labels whose registry sampler takes eta, only LCM's A1111 function does not
    takes = {k for k, v in labels.A1111.items() if "eta" in samplers.core.registry.SAMPLERS.get(v[0]).options}
    assert {k for k in takes if f"sample_{labels.A1111[k][0]}" not in labels.A1111_TAKES_ETA} == {"LCM", "k_lcm"}

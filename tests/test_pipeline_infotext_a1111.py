"""The infotext of a run under an A1111 label is what A1111 writes and reads back: its Schedule type labels, its
setting keys; and the request records only what the run runs with."""
from types import SimpleNamespace as NS

import pytest

from models import pipeline as P
from models.vae import check_size
from samplers.core.errors import InvalidOption

# what Pipeline.request reads of its pipeline: the defaults, guidance, the size and prompt rules, the model's name,
# and the run's plan, the shipped eps U-Net's (its config alone: no weights read)
SPEC = P.PipelineSpec.read(model="eps")
FAKE = NS(defaults=SPEC.defaults, default_schedule=SPEC.default_schedule, _plan_run=SPEC._plan_run,
          guidance=lambda c: 4.0 if c is None else c, check_size=lambda h, w: check_size(h, w, 8),
          _prompts=lambda p: [p], config=NS(name="unet-eps"), model=NS(weights_sha256="ab" * 32))


def line(sampler, schedule=None, **options):
    return P.infotext(P.Pipeline.request(FAKE, "a cat", sampler=sampler, schedule=schedule, steps=20,
                                         options=options)).splitlines()[1]


@pytest.mark.parametrize("sampler,schedule,want", [("Euler a", "a1111:Karras", "Schedule type: Karras,"),
                                                   ("Euler a", None, "Schedule type: Uniform,"),
                                                   ("DPM++ 2M SDE", None, "Schedule type: Exponential,"),
                                                   ("Euler", "a1111:SGM Uniform", "Schedule type: SGM Uniform,"),
                                                   ("DDIM", None, "Schedule type: Automatic,"),
                                                   ("euler", "karras", "Schedule type: karras,"),
                                                   ("euler", "linspace", "Schedule type: linspace,")])
def test_schedule_type_is_a1111s_label(sampler, schedule, want):
    assert want in line(sampler, schedule)
    assert "a1111:" not in line(sampler, schedule)


def test_a1111_label_options_use_a1111s_keys():
    got = line("Euler", s_churn=0.5, s_tmin=0.1, s_tmax=5.0, s_noise=1.01)
    assert "Sigma churn: 0.5, Sigma tmin: 0.1, Sigma tmax: 5.0, Sigma noise: 1.01" in got
    assert "s_churn" not in got
    assert "Eta: 0.5" in line("Euler a", eta=0.5)
    assert "Eta DDIM: 0.5" in line("DDIM", eta=0.5)


def test_registry_names_and_library_options_keep_their_names():
    assert "s_churn: 0.5" in line("euler", s_churn=0.5)
    assert "eta: 0.5" in line("euler_ancestral", eta=0.5)
    assert "solver_type: heun" in line("DPM++ 2M SDE", solver_type="heun")  # no A1111 key for it


def test_request_refuses_what_the_run_refuses():
    with pytest.raises(InvalidOption, match="eta"):
        P.Pipeline.request(FAKE, "a cat", sampler="DPM2", options={"eta": 0.5})
    with pytest.raises(InvalidOption, match="s_noise"):
        P.Pipeline.request(FAKE, "a cat", sampler="Euler a", options={"s_noise": 0.5})


def test_request_leaves_out_a1111_defaults_its_label_drops():
    r = P.Pipeline.request(FAKE, "a cat", sampler="Euler a",
                           options={"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "eta": 0.7})
    assert r["options"] == {"eta": 0.7}
    r = P.Pipeline.request(FAKE, "a cat", sampler="Euler", options={"s_churn": 0.0, "s_noise": 1.0})
    assert r["options"] == {"s_churn": 0.0, "s_noise": 1.0}  # Euler receives them: recorded as run


def test_lcm_records_no_eta_a1111_does_not_pass_it():
    r = P.Pipeline.request(FAKE, "a cat", sampler="LCM", options={"eta": 1.0})
    assert "eta" not in r["options"] and "Eta" not in P.infotext(r)
    with pytest.raises(InvalidOption, match="eta"):
        P.Pipeline.request(FAKE, "a cat", sampler="LCM", options={"eta": 0.5})


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras", "LMS", "PLMS", "DDIM", "DPM++ 2M SDE", "UniPC",
                                     "dpmpp_2m", "euler_ancestral", "comfyui:euler"])
def test_every_image_records_a1111s_cpu_source_its_starting_noise_came_from(sampler):
    # every pipeline image starts from seeded_randn, A1111's CPU source's first draw; A1111 writes RNG for every
    # source but GPU and reads an infotext without it as GPU noise: a "DPM++ 2M Karras" PNG without it started from
    # other noise there (only the labels that draw A1111's noise in the loop recorded it)
    r = P.Pipeline.request(FAKE, "a cat", sampler=sampler, steps=20)
    assert r["rng"] == "CPU" and ", RNG: CPU," in P.infotext(r)


@pytest.mark.parametrize("schedule,want", [("beta", "beta_timesteps"), ("kl_optimal", "kl-optimal"),
                                           ("comfyui:beta", "comfyui:beta"), ("Beta", "Beta"),
                                           ("KL Optimal", "KL Optimal"), ("a1111:Beta", "Beta"),
                                           ("karras", "karras"), ("sgm_uniform", "sgm_uniform")])
def test_a_schedule_a1111_would_read_as_another_rule_is_written_in_a_name_it_does_not_hold(schedule, want):
    # A1111 reads "beta" / "kl_optimal" as its Beta (quantiles in σ) / KL Optimal (ending at σ_min), which are not
    # the schedules that ran (ComfyUI's beta over the timesteps, the registry's kl_optimal ending at 0): the PNG told
    # A1111 to run another schedule. A name it does not hold falls back to Automatic there, and reads back here.
    from samplers.core import names
    assert f"Schedule type: {P._quote(want)}," in line("Euler", schedule)
    asked = names.resolve_schedule(schedule)
    assert names.resolve_schedule(want if schedule.split(":")[0] != "a1111" else f"a1111:{want}") == asked


def test_every_name_a1111_holds_is_written_so_that_a1111_runs_what_ran_or_falls_back():
    from samplers.core import labels, names
    for kind, spellings in labels.A1111_SCHEDULE_TYPES.items():
        if kind == "Automatic":
            continue
        for name in (kind, *spellings):
            written = P._a1111_schedule_type(name)
            held = P._a1111_held(written)
            if held is not None:  # A1111 runs its own type of that name: the one that ran
                assert names.resolve_schedule(f"a1111:{held}") == names.resolve_schedule(name), name
            else:
                assert names.resolve_schedule(written) == names.resolve_schedule(name), name


@pytest.mark.parametrize("sampler, written", [("k_lms", "Sampler: LMS,"), ("a1111:LMS", "Sampler: LMS,"),
                                              ("dpm2 a", "Sampler: DPM2 a,"), ("k_euler_a", "Sampler: Euler a,"),
                                              ("dpm++ 2m sde", "Sampler: DPM++ 2M SDE,")])
def test_an_a1111_label_is_written_as_a1111_spells_it(sampler, written):
    # A1111 1.9+ reads the Sampler field in its map of names only and runs DPM++ 2M for any other spelling: k_lms,
    # a1111:LMS or 'dpm2 a', written as typed, were read back as DPM++ 2M
    assert written in line(sampler)


def test_an_option_given_as_a_0d_tensor_or_numpy_scalar_is_recorded_as_its_number():
    import json

    import numpy as np
    import torch

    record = P.Pipeline.request(FAKE, "a cat", sampler="euler", steps=20,
                                options={"s_churn": torch.tensor(0.123456789, dtype=torch.float64),
                                         "s_noise": np.float64(1.01)})
    assert record["options"] == {"s_churn": 0.123456789, "s_noise": 1.01}  # was tensor(0.1235) in both chunks
    assert "s_churn: 0.123456789" in P.infotext(record) and json.dumps(record, default=P._json_value)

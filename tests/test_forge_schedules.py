"""Forge's and reForge's Schedule types beyond A1111's: "Turbo" (Forge and reForge) and reForge's "Align Your Steps
GITS" / "11" / "32", their registry schedules (``forge_turbo``, ``ays_gits_*``, ``ays_*``, ``ays_32_*`` with
``append_zero=True``) and their names, against the tools' own formulas, step counts 1-50, on Stable Diffusion 1.x's
and an SDXL-style table.

The references are written from the tools' sources (read, not imported: neither tool is installed):
lllyasviel/stable-diffusion-webui-forge modules/sd_schedulers.py ``turbo_scheduler`` (e26abf87) on its
backend/modules/k_prediction.py ``Prediction`` σ table (float64 ᾱ, σ and log σ stored float32, ``sigma(t)`` =
exp of the float32 log σ); Panchovix/stable-diffusion-webui-reForge modules/sd_schedulers.py (1ad52e40)
``turbo_scheduler``, ``get_align_your_steps_sigmas_GITS``, ``ays_11_sigmas``, ``ays_32_sigmas`` (each: its SDXL list
where ``shared.sd_model.is_sdxl``, else its SD 1.5 one; n levels by log-linear interpolation, or the list itself
at n = len(list), then 0, returned as a float32 tensor). The level lists below are the tools' data, copied.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import samplers
from samplers.interop.diffusers_models import native_from_config

STEPS = list(range(1, 51))
SD15 = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
SDXL = native_from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                           "num_train_timesteps": 1000, "prediction_type": "epsilon"})[0]
MODELS = {"sd15": SD15, "sdxl": SDXL}

# ------------------------------------------------------------------------------------------- the tools' data

REFORGE_LEVELS = {
    "Align Your Steps GITS": {
        "sdxl": [14.615, 4.734, 2.567, 1.529, 0.987, 0.652, 0.418, 0.268, 0.179, 0.127, 0.029],
        "sd15": [14.615, 4.617, 2.507, 1.236, 0.702, 0.402, 0.240, 0.156, 0.104, 0.094, 0.029],
    },
    "Align Your Steps 11": {
        "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
        "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    },
    "Align Your Steps 32": {
        "sdxl": [14.61500000000000000, 11.14916180000000000, 8.505221270000000000, 6.488271510000000000,
                 5.437074020000000000, 4.603986190000000000, 3.898547040000000000, 3.274074570000000000,
                 2.743965270000000000, 2.299686590000000000, 1.954485140000000000, 1.671087150000000000,
                 1.428781520000000000, 1.231810090000000000, 1.067896490000000000, 0.925794430000000000,
                 0.802908860000000000, 0.696601210000000000, 0.604369030000000000, 0.528525520000000000,
                 0.467733440000000000, 0.413933790000000000, 0.362581860000000000, 0.310085170000000000,
                 0.265189250000000000, 0.223264610000000000, 0.176538770000000000, 0.139591920000000000,
                 0.105873810000000000, 0.055193690000000000, 0.028773340000000000, 0.015000000000000000],
        "sd15": [14.61500000000000000, 11.23951352000000000, 8.643630810000000000, 6.647294240000000000,
                 5.572508620000000000, 4.716485460000000000, 3.991960650000000000, 3.519560900000000000,
                 3.134904660000000000, 2.792287880000000000, 2.487736280000000000, 2.216638650000000000,
                 1.975083510000000000, 1.779317200000000000, 1.614753350000000000, 1.465409530000000000,
                 1.314849000000000000, 1.166424970000000000, 1.034755470000000000, 0.915737440000000000,
                 0.807481690000000000, 0.712023610000000000, 0.621739000000000000, 0.530652020000000000,
                 0.452909600000000000, 0.374914550000000000, 0.274618190000000000, 0.201152900000000000,
                 0.141058730000000000, 0.066828810000000000, 0.031661210000000000, 0.015000000000000000],
    },
}
# the registry schedule each list is (with append_zero=True, the tools' rule)
REGISTRY = {("Align Your Steps GITS", "sd15"): "ays_gits_sd15", ("Align Your Steps GITS", "sdxl"): "ays_gits_sdxl",
            ("Align Your Steps 11", "sd15"): "ays_sd15", ("Align Your Steps 11", "sdxl"): "ays_sdxl",
            ("Align Your Steps 32", "sd15"): "ays_32_sd15", ("Align Your Steps 32", "sdxl"): "ays_32_sdxl"}

# ------------------------------------------------------------------------------------------- the tools' formulas


class ForgePrediction:
    """Forge's backend/modules/k_prediction.py Prediction for SD 1.x / SDXL (beta_schedule 'linear' = √β linspace,
    squared; its make_beta_schedule in float64): ᾱ, σ in float64, stored float32; sigma(t) log-interpolates the
    float32 log σ (at an integer t the entry's exp, in float32)."""

    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1. - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(timestep.float(), min=0, max=(len(self.sigmas) - 1))
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()


def forge_turbo_timesteps(n: int) -> torch.Tensor:
    """turbo_scheduler's timesteps, as the tool writes them (torch's default float32)."""
    return torch.flip(torch.arange(1, n + 1) * float(1000.0 / n) - 1, (0,)).round().long().clip(0, 999)


def forge_turbo(n: int, predictor: ForgePrediction) -> torch.Tensor:
    sigmas = predictor.sigma(forge_turbo_timesteps(n))
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def reforge_ays(levels: list[float], n: int) -> torch.Tensor:
    """reForge's get_align_your_steps_sigmas_GITS / ays_11_sigmas / ays_32_sigmas on one level list."""
    def loglinear_interp(t_steps, num_steps):
        xs = np.linspace(0, 1, len(t_steps))
        ys = np.log(t_steps[::-1])
        new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
        return np.exp(new_ys)[::-1].copy()

    sigmas = list(levels)
    if n != len(sigmas):
        sigmas = np.append(loglinear_interp(sigmas, n), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas)


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double(), ref.double()
    assert ours.shape == ref.shape, (ours.tolist(), ref.tolist())
    nonzero = ref != 0
    assert torch.equal(ours[~nonzero], ref[~nonzero])
    return float(((ours[nonzero] - ref[nonzero]) / ref[nonzero]).abs().max())


FORGE = ForgePrediction()

# ------------------------------------------------------------------------------------------- the rules


def test_forge_turbo_timesteps_are_the_tools_float32_arithmetic():
    """Every step count the table allows: the timesteps the rule reads are the tool's, bit for bit (a table whose
    entry t is t + 1 gives them back)."""
    index_table = torch.arange(1, 1001, dtype=torch.float64)
    for n in range(1, 1001):
        got = samplers.get_sigmas("forge_turbo", n, training_sigmas=index_table)[:-1] - 1
        assert torch.equal(got.round().long(), forge_turbo_timesteps(n)), n


@pytest.mark.parametrize("model", list(MODELS))
def test_forge_turbo_is_forges_turbo_on_the_models_table(model):
    """The registry's forge_turbo on the model's exact table is Forge's σ to a float32 rounding."""
    worst = max(rel_error(samplers.get_sigmas("forge_turbo", n, native=MODELS[model]), forge_turbo(n, FORGE))
                for n in STEPS)
    assert worst < 2e-7


def test_turbo_is_not_trailing_where_the_timesteps_land_on_halves():
    """At n = 16, 32, 48 k·1000/n − 1 lands on halves (61.5, ...): the tool rounds them to even, diffusers' trailing
    (float64 numpy) takes another timestep; at other n the two agree."""
    for n in (16, 32, 48):
        turbo = samplers.get_sigmas("forge_turbo", n, native=SD15)
        trailing = samplers.get_sigmas("trailing", n, native=SD15)
        assert not torch.equal(turbo, trailing), n
        assert rel_error(turbo, forge_turbo(n, FORGE)) < 2e-7
    assert forge_turbo_timesteps(16)[-1] == 62  # round(61.5) in the tool; trailing: 61
    for n in (1, 2, 5, 10, 20, 25, 30, 50):
        assert torch.equal(samplers.get_sigmas("forge_turbo", n, native=SD15),
                           samplers.get_sigmas("trailing", n, native=SD15)), n


def test_turbo_and_trailing_differ_at_the_step_counts_its_docstring_names():
    """Not only where the timesteps land on halves: 122 step counts up to 1000 (61, 103, 121, 122 among them)."""
    import numpy as np

    differ = []
    for n in range(1, 1001):
        trailing = np.round(np.arange(1000, 0, -1000 / n)).astype(np.int64) - 1
        turbo = np.asarray(forge_turbo_timesteps(n))
        if trailing.shape != turbo.shape or not np.array_equal(np.maximum(trailing, 0), turbo):
            differ.append(n)
    assert differ[:10] == [16, 32, 48, 61, 64, 80, 96, 103, 112, 121] and len(differ) == 122


@pytest.mark.parametrize("kind", list(REFORGE_LEVELS))
@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_reforge_align_your_steps_lists_are_reforges(kind, model):
    """Each registry preset with append_zero=True is reForge's function on its list (float32 in the tool)."""
    levels = REFORGE_LEVELS[kind][model]
    name = REGISTRY[(kind, model)]
    worst = max(rel_error(samplers.get_sigmas(name, n, append_zero=True), reforge_ays(levels, n)) for n in STEPS)
    assert worst < 1e-7
    # the list itself at n = its length, then 0
    assert torch.equal(samplers.get_sigmas(name, len(levels), append_zero=True),
                       torch.tensor(levels + [0.0], dtype=torch.float64))


def test_the_reforge_presets_take_no_range_but_their_own():
    with pytest.raises(samplers.InvalidOption, match="takes no sigma_min"):
        samplers.get_sigmas("ays_gits_sd15", 10, sigma_min=0.1, append_zero=True)
    assert torch.equal(samplers.get_sigmas("ays_32_sdxl", 10, sigma_min=0.015, sigma_max=14.615),
                       samplers.get_sigmas("ays_32_sdxl", 10))
    with pytest.raises(samplers.InvalidOption, match="no option 'levels'"):
        samplers.get_sigmas("ays_gits_sd15", 10, levels="comfyui")

# ------------------------------------------------------------------------------------------- the names

from samplers.core import names  # noqa: E402

# each Schedule type as the tools' menus show it, their internal names, and the registry schedule the name gives
NAMES = {"Turbo": ("turbo", "forge_turbo"),
         "Align Your Steps GITS": ("align_your_steps_GITS", "ays_gits_sd15"),
         "Align Your Steps 11": ("align_your_steps_11", "ays_sd15"),
         "Align Your Steps 32": ("align_your_steps_32", "ays_32_sd15")}


@pytest.mark.parametrize("kind", list(NAMES))
def test_the_names_resolve_with_and_without_the_prefix(kind):
    """They were unknown names (UnknownNameError), with and without a1111:."""
    spelling, schedule = NAMES[kind]
    want = (schedule, {"append_zero": True} if kind != "Turbo" else {})
    for typed in (kind, spelling, f"a1111:{kind}", f"a1111:{spelling}", kind.lower(), kind.upper().replace(" ", "_")):
        assert names.resolve_schedule(typed) == want, typed
        assert names.resolve_schedule(typed, native=SD15) == (want[0], {**want[1], "float32_alphas_cumprod": True})


@pytest.mark.parametrize("model", list(MODELS))
def test_turbo_by_name_is_forges_turbo(model):
    """On A1111's float32 ᾱ, as the other A1111 names build: Forge's own table (float64 ᾱ) is within 7.2e-7."""
    native = MODELS[model]
    for typed in ("Turbo", "a1111:Turbo", "turbo"):
        worst = max(rel_error(samplers.get_sigmas(typed, n, native=native), forge_turbo(n, FORGE)) for n in STEPS)
        assert worst < 7.5e-7, typed  # names.md: 7.2e-7 up to 50 steps
    worst = max(rel_error(samplers.get_sigmas("Turbo", n, native=native), forge_turbo(n, FORGE)) for n in range(51, 151))
    assert worst < 1.7e-6  # names.md: 1.6e-6 up to 150 steps (A1111's float32 ᾱ against Forge's float64 one)
    assert not torch.equal(samplers.get_sigmas("a1111:Turbo", 16, native=native),
                           samplers.get_sigmas("trailing", 16, native=native,
                                               float32_alphas_cumprod=True))


@pytest.mark.parametrize("kind", [k for k in NAMES if k != "Turbo"])
def test_the_align_your_steps_names_are_reforges_sd15_lists(kind):
    """The names give reForge's function on its SD 1.5 list (the tool's choice on a model that is not SDXL; on SDXL
    the registry's *_sdxl presets with append_zero=True, above), with or without a model."""
    levels = REFORGE_LEVELS[kind]["sd15"]
    for n in STEPS:
        ref = reforge_ays(levels, n)
        assert rel_error(samplers.get_sigmas(f"a1111:{kind}", n), ref) < 1e-7
        assert rel_error(samplers.get_sigmas(kind, n, native=SD15), ref) < 1e-7


@pytest.mark.parametrize("kind", list(NAMES))
def test_sampler_names_with_the_types(kind):
    """"<sampler> <Schedule type>" as for A1111's own types: the sampler's label on the named type."""
    spelling, _ = NAMES[kind]
    for base in ("Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM2"):
        label = names.resolve(f"a1111:{base}")
        for typed in (f"{base} {kind}", f"{base} {spelling}"):
            found = names.resolve(typed)
            assert (found.source, found.sampler, found.options) == ("a1111", label.sampler, label.options), typed
            assert (found.schedule, found.schedule_is_explicit) == (f"a1111:{kind}", True), typed
            assert found.discard_penultimate_sigma == label.discard_penultimate_sigma
    with pytest.raises(samplers.InvalidOption, match="steps its own timesteps"):
        names.resolve(f"DDIM {kind}")

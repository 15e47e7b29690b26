"""A1111's in-loop noise (``noise_sampler="a1111"``, the default of its k-diffusion labels): the draws A1111 makes.

A1111 (modules/rng.py ``ImageRNG``, sd_samplers_common ``TorchHijack``) gives each image of a batch a generator seeded
with the image's seed; its first draw is the image's starting noise, and every ``torch.randn_like`` of a k-diffusion
sampler is answered with the next draw of every image's generator. Here that is transcribed around the real
k-diffusion package (its module's ``torch`` replaced as A1111 replaces it), and the labels run through
``samplers.sample`` from the same starting noise must give its result.
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

import samplers
from samplers.core import graph
from samplers.core.a1111_rng import A1111Noise, PhiloxGenerator, a1111_randn, philox_4x32, philox_randn
from samplers.core.errors import InvalidOption
from samplers.core.seeds import seeded_randn
from samplers.problems import GaussianMixture
from test_kdiffusion_parity import kd  # noqa: E402 (k-diffusion's sampling module, or None)

GM = GaussianMixture.default(shape=(4, 4, 4), components=3, seed=2)
SEEDS = [1234, 77, 3_000_000_000]
SIGMAS = samplers.get_sigmas("karras", 7, sigma_min=0.03, sigma_max=14.6).float()  # A1111's σ are float32


needs_kd = pytest.mark.skipif(kd is None, reason="k-diffusion is not installed: pip install --no-deps "
                                                 "k-diffusion==0.1.1.post1 (make test does)")


class ImageRNG:
    """A1111's ImageRNG with its CPU source and "Eta noise seed delta" ``delta``: one CPU generator per image."""

    def __init__(self, shape, seeds, delta=0):
        self.shape, self.seeds, self.delta = shape, seeds, delta
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def first(self):
        xs = torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
        if self.delta:
            self.generators = [torch.Generator().manual_seed(s + self.delta) for s in self.seeds]
        return xs

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


def a1111_run(monkeypatch, run, delta=0):
    """``run(x_T)`` with k-diffusion's ``torch.randn_like`` answered by the images' generators, as A1111 answers it;
    x_T is the unit starting noise A1111 draws first."""
    rng = ImageRNG(tuple(GM.shape), SEEDS, delta)
    start = rng.first()
    hijack = types.SimpleNamespace(**{n: getattr(torch, n) for n in dir(torch) if not n.startswith("__")})
    hijack.randn_like = lambda x, **_: rng.next()
    monkeypatch.setattr(kd, "torch", hijack)
    return start, run(start)


def model(x, sigma):
    return GM.denoiser(x, sigma)


# label, k-diffusion's call (A1111's, on the same σ), options A1111 sets
K_CALLS = {
    "Euler a": lambda x, s: kd.sample_euler_ancestral(model, x, s, disable=True),
    "DPM2 a": lambda x, s: kd.sample_dpm_2_ancestral(model, x, s, disable=True),
    "DPM++ 2S a": lambda x, s: kd.sample_dpmpp_2s_ancestral(model, x, s, disable=True),
    "Euler": lambda x, s: kd.sample_euler(model, x, s, disable=True, s_churn=2.0),
    "Heun": lambda x, s: kd.sample_heun(model, x, s, disable=True, s_churn=2.0),
    "DPM fast": lambda x, s: kd.sample_dpm_fast(model, x, float(s[-2]), float(s[0]), len(s) - 1, disable=True,
                                                eta=1.0),
    "DPM adaptive": lambda x, s: kd.sample_dpm_adaptive(model, x, float(s[-2]), float(s[0]), disable=True, eta=1.0),
    "DPM2": lambda x, s: kd.sample_dpm_2(model, x, s, disable=True, s_churn=2.0),
}


@needs_kd
@pytest.mark.parametrize("label", ["Euler", "Heun", "DPM2"])
def test_a1111_churn_outside_its_window_still_takes_its_draw(monkeypatch, label):
    # k-diffusion's sample_euler / _heun / _dpm_2 draw randn_like at every step, γ = 0 outside [s_tmin, s_tmax]
    # included: A1111's stream counts those draws (they were skipped here: 0.49-0.84 apart)
    fn = {"Euler": kd.sample_euler, "Heun": kd.sample_heun, "DPM2": kd.sample_dpm_2}[label]
    start, want = a1111_run(monkeypatch, lambda z: fn(model, z * SIGMAS[0], SIGMAS, disable=True, s_churn=2.0,
                                                      s_tmax=5.0))
    got = samplers.sample(label, model, start * SIGMAS[0], SIGMAS, seed=SEEDS, disable=True, s_churn=2.0, s_tmax=5.0)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    # the registry's own noise keeps drawing only where it adds noise (its images unchanged)
    calls = []
    samplers.sample(label.lower() if label != "DPM2" else "dpm_2", model, start * SIGMAS[0], SIGMAS, disable=True,
                    s_churn=2.0, s_tmax=5.0, noise_sampler=lambda a, b: calls.append(a) or torch.zeros_like(start))
    assert len(calls) == sum(1 for s in SIGMAS[:-1].tolist() if s <= 5.0)


@needs_kd
@pytest.mark.parametrize("label", ["DPM fast", "DPM adaptive"])
@pytest.mark.parametrize("eta", [0.5, 0.0])
def test_a1111s_eta_setting_replaces_the_labels(monkeypatch, label, eta):
    # A1111 passes its "Eta for ancestral samplers" setting (1 by default) to DPM fast / adaptive as to Euler a: a
    # caller's eta is that setting (it was refused, and the registry name it advised was 3.85 apart)
    fn = {"DPM fast": lambda z: kd.sample_dpm_fast(model, z, float(SIGMAS[-2]), float(SIGMAS[0]), len(SIGMAS) - 1,
                                                   disable=True, eta=eta),
          "DPM adaptive": lambda z: kd.sample_dpm_adaptive(model, z, float(SIGMAS[-2]), float(SIGMAS[0]),
                                                           disable=True, eta=eta)}[label]
    start, want = a1111_run(monkeypatch, lambda z: fn(z * SIGMAS[0]))
    got = samplers.sample(label, model, start * SIGMAS[0], SIGMAS, seed=SEEDS, disable=True, eta=eta)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("steps", [24, 40])
def test_a1111s_restart_draws_a1111s_noise(steps):
    # modules/sd_samplers_extra.restart_sampler adds k_diffusion.sampling.torch.randn_like, which A1111's hijack
    # answers as for every k-diffusion sampler (from 20 steps on, where it restarts: 1.4-2.4 apart before)
    from test_a1111_rules import a1111_restart_sampler  # noqa: E402 (its transcription, noise from a callable)

    sigmas = samplers.get_sigmas("karras", steps, sigma_min=0.0292, sigma_max=14.6146).float()
    rng = ImageRNG(tuple(GM.shape), SEEDS)
    start = rng.first()
    want = a1111_restart_sampler(model, start * sigmas[0], sigmas, lambda a, b: rng.next())
    got = samplers.sample("Restart", model, start * sigmas[0], sigmas, seed=SEEDS, disable=True)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@needs_kd
@pytest.mark.parametrize("label", sorted(K_CALLS))
def test_an_a1111_label_draws_a1111s_noise(monkeypatch, label):
    options = {"s_churn": 2.0, "s_tmax": 0} if label in ("Euler", "Heun", "DPM2") else {}
    start, want = a1111_run(monkeypatch, lambda z: K_CALLS[label](z * SIGMAS[0], SIGMAS))
    got = samplers.sample(label, model, start * SIGMAS[0], SIGMAS, seed=SEEDS, disable=True, **options)
    # DPM fast / adaptive: k-diffusion computes their times and step coefficients from float32 λ, which the labels
    # reproduce to a float32 rounding of the scale, not bit for bit (tests/test_kdiffusion_parity.py's DPM_F32);
    # over DPM adaptive's ~10 noisy steps that measured 2.6e-5 on one CPU, 7e-6 of this result's scale (3.6)
    tol = 2e-5 * float(want.abs().max()) if label in ("DPM fast", "DPM adaptive") else 2e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    # the library's own noise is another draw: the comparison can fail
    other = samplers.sample(label, model, start * SIGMAS[0], SIGMAS, seed=SEEDS, disable=True,
                            **{**options, "noise_sampler": "seeded"})
    assert float((other - want).abs().max()) > 1e-2


def test_lcm_draws_a1111s_noise():
    # A1111's sd_samplers_lcm.sample_lcm: x = D(x, σ_i), then + σ_{i+1}·randn_like through k-diffusion's
    # default_noise_sampler (answered by the images' generators)
    rng = ImageRNG(tuple(GM.shape), SEEDS)
    start = rng.first()
    x = start * SIGMAS[0]
    for i in range(len(SIGMAS) - 1):
        x = model(x, SIGMAS[i].float().expand(x.shape[0]))
        if SIGMAS[i + 1] > 0:
            x = x + SIGMAS[i + 1].float() * rng.next()
    got = samplers.sample("LCM", model, start * SIGMAS[0], SIGMAS, seed=SEEDS, disable=True)
    torch.testing.assert_close(got, x, rtol=2e-5, atol=2e-5)


@needs_kd
def test_an_eta_noise_seed_delta_draws_from_fresh_generators(monkeypatch):
    start, want = a1111_run(monkeypatch, lambda z: kd.sample_euler_ancestral(model, z * SIGMAS[0], SIGMAS,
                                                                             disable=True), delta=31337)
    x = start * SIGMAS[0]
    noise = A1111Noise(x, SEEDS, source="cpu", eta_noise_seed_delta=31337)
    got = samplers.sample("Euler a", model, x, SIGMAS, noise_sampler=noise, disable=True)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("delta", [0, 31337])
def test_an_a1111_noise_object_starts_every_run_from_its_seeds(delta):
    # A1111 builds a fresh ImageRNG for every batch: the same seeds and delta give the same draws. A second run with
    # one object continued its streams (0.66 apart at delta 0, 0.60 at 31337, on the audit's problem)
    x = SIGMAS[0] * seeded_randn((3, *GM.shape), SEEDS)
    noise = A1111Noise(x, SEEDS, source="cpu", eta_noise_seed_delta=delta)
    first = samplers.sample("Euler a", model, x, SIGMAS, noise_sampler=noise, disable=True)
    assert torch.equal(samplers.sample("Euler a", model, x, SIGMAS, noise_sampler=noise, disable=True), first)
    fresh = A1111Noise(x, SEEDS, source="cpu", eta_noise_seed_delta=delta)
    assert torch.equal(samplers.sample("Euler a", model, x, SIGMAS, noise_sampler=fresh, disable=True), first)
    # the k-diffusion drop-in and every call of a captured run likewise
    from samplers.interop import kdiffusion as drop_in
    assert torch.equal(drop_in.sample_euler_ancestral(model, x, SIGMAS, disable=True, noise_sampler=noise), first)
    run = graph.capture("Euler a", model, x, SIGMAS, fallback="eager", noise_sampler=noise)
    assert torch.equal(run(x), first) and torch.equal(run(x), first)


def test_the_pipelines_starting_noise_is_a1111s_cpu_source():
    # seeded_randn (the pipeline's, and a1111_randn's "cpu") is ImageRNG.first on the CPU
    assert torch.equal(seeded_randn((3, *GM.shape), SEEDS), ImageRNG(tuple(GM.shape), SEEDS).first())
    assert torch.equal(a1111_randn((3, *GM.shape), SEEDS, "cpu"), ImageRNG(tuple(GM.shape), SEEDS).first())
    assert torch.equal(a1111_randn((3, *GM.shape), SEEDS, "gpu"), ImageRNG(tuple(GM.shape), SEEDS).first())  # CPU


def test_the_nv_sources_philox_is_random123s():
    # Random123's known-answer vectors for Philox 4x32-10 (kat_vectors: counter, key -> output)
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, out in kat:
        words = philox_4x32(*(np.array([c], dtype=np.uint32) for c in counter), *key)
        assert tuple(int(w[0]) for w in words) == out


def test_the_nv_source_is_within_float32_rounding_of_cudas_numbers():
    # A1111's modules/rng_philox.py prints Generator(seed=0).randn((3, 4)): torch.randn(3, 4) on CUDA after
    # torch.manual_seed(0). CUDA's Box–Muller runs in float32, A1111's numpy one in float64: a few float32 ulps apart
    want = np.array([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                     [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                     [-1.07454231, -0.36314407, -1.67105067, 2.26550497]], dtype=np.float32)
    got = PhiloxGenerator(0).randn((3, 4)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.spacing(np.abs(want)).max())
    # each call is the next offset; the key holds both 32-bit words of the seed
    g = PhiloxGenerator(0)
    g.randn((3, 4))
    assert np.array_equal(g.randn((12,)).numpy(), philox_randn(0, 1, 12))
    assert not np.array_equal(philox_randn(2**32, 0, 12), philox_randn(0, 0, 12))
    draws = philox_randn(5, 0, 200_000)
    assert abs(float(draws.mean())) < 0.01 and abs(float(draws.std()) - 1) < 0.01


def test_the_nv_and_cpu_sources_continue_after_the_starting_noise():
    x = torch.zeros(3, *GM.shape)
    for source in ("nv", "cpu"):
        start = a1111_randn((3, *GM.shape), SEEDS, source)
        noise = A1111Noise(x, SEEDS, source)
        first, second = noise(1.0, 0.5), noise(0.5, 0.25)
        assert not torch.equal(first, start) and not torch.equal(first, second)
        fresh = A1111Noise(x, SEEDS, source, eta_noise_seed_delta=0)
        assert torch.equal(fresh(1.0, 0.5), first)  # a new object starts the streams again
    # NV: image k's draws are offsets 1, 2, ... of its seed's Philox stream
    noise = A1111Noise(x, SEEDS, "nv")
    n = math.prod(GM.shape)
    assert np.array_equal(noise(1.0, 0.5)[1].flatten().numpy(), philox_randn(SEEDS[1], 1, n))


def test_a1111_noise_is_batch_invariant_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    x = SIGMAS[0] * seeded_randn((3, *GM.shape), SEEDS)
    batch = samplers.sample("Euler a", model, x, SIGMAS, seed=SEEDS, disable=True)
    for k in range(3):
        alone = samplers.sample("Euler a", model, x[k:k + 1], SIGMAS, seed=[SEEDS[k]], disable=True)
        torch.testing.assert_close(alone[0], batch[k], rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_sources_and_deltas_are_refused():
    x = torch.zeros(1, 2)
    with pytest.raises(InvalidOption, match="random number generator sources"):
        A1111Noise(x, [1], source="cuda")
    with pytest.raises(InvalidOption, match="eta_noise_seed_delta=-5 takes seed 3"):
        A1111Noise(x, [3], eta_noise_seed_delta=-5)
    with pytest.raises(samplers.InvalidType):
        A1111Noise(x, [3], eta_noise_seed_delta=0.5)
    with pytest.raises(InvalidOption, match="batch 2 but 1 seeds"):
        a1111_randn((2, 3), [1])
    with pytest.raises(InvalidOption, match="1 seeds for a batch of 2"):
        A1111Noise(torch.zeros(2, 3), [1])
    with pytest.raises(InvalidOption, match="seed must be an integer >= 0"):
        A1111Noise(x, [-1])


def test_a_captured_run_reseeds_a1111s_device_noise_and_refuses_its_host_sources():
    x = SIGMAS[0] * seeded_randn((3, *GM.shape), SEEDS)
    want = samplers.sample("Euler a", model, x, SIGMAS, seed=SEEDS, disable=True)
    run = graph.capture("Euler a", model, x, SIGMAS, fallback="eager", seed=SEEDS)
    assert torch.equal(run(x), want) and torch.equal(run(x, seed=SEEDS), want)
    other = samplers.sample("Euler a", model, x, SIGMAS, seed=[5, 6, 7], disable=True)
    assert torch.equal(run(x, seed=[5, 6, 7]), other)
    for kind in ("a1111_cpu", "a1111_nv"):
        with pytest.raises(InvalidOption, match="made on the host"):
            graph.capture("euler_ancestral", model, x, SIGMAS, fallback="eager", seed=SEEDS, noise_sampler=kind)


def test_the_pipeline_draws_an_a1111_labels_noise_from_its_starting_noises_cpu_generators():
    from models.pipeline import _resolve
    # the pipeline's start is A1111's "CPU" source's first draw: the label's draws continue those generators
    assert _resolve("Euler a", None, 4, {})[3]["noise_sampler"] == "a1111_cpu"
    assert _resolve("Euler a", None, 4, {"noise_sampler": "a1111_nv"})[3]["noise_sampler"] == "a1111_nv"
    assert _resolve("euler_ancestral", None, 4, {})[3].get("noise_sampler") is None


def test_the_diffusers_shim_runs_an_a1111_label_on_the_pipelines_generator():
    # a diffusers pipeline draws its start from its generator, not from A1111's ImageRNG: the label's A1111 draws do
    # not apply there, and "Euler a" gives EulerAncestralDiscreteScheduler's image, as the registry's name does
    diffusers = pytest.importorskip("diffusers")
    from samplers.interop.diffusers_scheduler import SamplerScheduler

    sd15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                set_alpha_to_one=False, clip_sample=False, timestep_spacing="leading")

    def run(scheduler):
        scheduler.set_timesteps(6)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(0.3 * scheduler.scale_model_input(x, t), t, x, generator=g).prev_sample
        return x

    replaced = diffusers.EulerAncestralDiscreteScheduler.from_config(sd15)
    want = run(diffusers.EulerAncestralDiscreteScheduler.from_config(replaced.config))
    for name in ("Euler a", "euler_ancestral", "comfyui:euler_ancestral"):  # ComfyUI's noise likewise
        got = run(SamplerScheduler.from_config(replaced, sampler=name))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_pipelines_infotext_records_a1111s_cpu_source_for_its_labels():
    # A1111 writes "RNG: CPU" where its random number source is the CPU, and reads it back: the pipeline's A1111
    # labels draw from that source
    from models.pipeline import PipelineSpec, infotext

    spec = PipelineSpec.read(model="eps")  # the run's plan on the shipped eps U-Net's config (no weights read)

    class Stub:  # Pipeline.request reads only these
        defaults = spec.defaults
        default_schedule = spec.default_schedule
        _plan_run = spec._plan_run
        config = types.SimpleNamespace(name="m")
        model = types.SimpleNamespace(weights_sha256="0" * 64)

        def guidance(self, cfg):
            return 4.0 if cfg is None else cfg

        def check_size(self, height, width):
            return height, width

        def _prompts(self, prompt):
            return [prompt]

    from models.pipeline import Pipeline
    request = Pipeline.request(Stub(), "p", sampler="Euler a", steps=4)
    assert request["rng"] == "CPU" and "RNG: CPU" in infotext(request)
    # every image's starting noise is that source's first draw, whatever draws follow it (tests/
    # test_pipeline_infotext_a1111.py): the in-loop noise a caller chose is recorded as its option
    assert Pipeline.request(Stub(), "p", sampler="euler_ancestral", steps=4)["rng"] == "CPU"
    request = Pipeline.request(Stub(), "p", sampler="Euler a", steps=4, options={"noise_sampler": "a1111_nv"})
    assert request["rng"] == "CPU" and "noise_sampler: a1111_nv" in infotext(request)

"""Seeds run over what torch's generators take, 0 to 2**64 − 1; k-diffusion's Brownian tree takes an integer >= 0
of any size, and nothing else."""
import numpy as np
import pytest
import torch

import samplers
from samplers.core.errors import InvalidInput, InvalidType
from samplers.core.noise import SeededNoise
from samplers.interop import kdiffusion
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 3, 3), components=3, seed=4)
SIG = samplers.get_sigmas("karras", 5, sigma_min=0.05, sigma_max=10.0)


@pytest.mark.parametrize("seed", [0, 5, 2**40 + 3, 2**63 - 1])
def test_the_in_loop_noise_of_a_seed_below_2_63_is_the_stream_it_always_was(seed):
    """Seeds stopped below 2**63, and a seed's stream was (seed ^ 0x9E3779B97F4A7C15) mod 2**63: raising the limit
    changed no image of a seed that was valid."""
    x = torch.zeros(1, 2, 3)
    old = torch.Generator().manual_seed((seed ^ 0x9E3779B97F4A7C15) % 2**63)
    noise = SeededNoise(x, [seed])
    expected = [torch.randn((2, 3), generator=old) for _ in range(3)]
    for want in expected:
        assert torch.equal(noise(1.0, 0.5)[0], want)
    noise.reseed([seed])
    assert torch.equal(noise(1.0, 0.5)[0], expected[0])


@pytest.mark.parametrize("kind", ["brownian", "brownian_tree"])
def test_seeds_up_to_2_64_run_and_differ_from_the_seed_2_63_below(kind):
    """A seed in [2**63, 2**64) runs (it was refused) and is not another seed's image: the derived streams are
    bijections of [0, 2**64), not reductions mod 2**63."""
    x = GM.noise(1, seed=0) * 10.0

    def run(seed):
        return samplers.sample("euler_ancestral", GM.denoiser, x, SIG, disable=True, seed=seed, noise_sampler=kind)

    a, b = 12345, 12345 + 2**63
    assert not torch.allclose(run(a), run(b))
    torch.testing.assert_close(run(2**64 - 1), run(2**64 - 1), rtol=0, atol=0)
    with pytest.raises(InvalidInput, match="no room for 2 items"):
        samplers.sample("euler_ancestral", GM.denoiser, GM.noise(2, seed=0), SIG, disable=True, seed=2**64 - 1)


def test_the_cpu_seeded_noise_reads_a_seeds_low_32_bits_as_torch_does():
    """What the docs say of torch's CPU generator (samplers.core.seeds.SEED_LIMIT): seeds 2**32 apart draw the same
    numbers there, in this library as in every tool that seeds it."""
    x = GM.noise(1, seed=0) * 10.0
    a = samplers.sample("euler_ancestral", GM.denoiser, x, SIG, disable=True, seed=5)
    b = samplers.sample("euler_ancestral", GM.denoiser, x, SIG, disable=True, seed=5 + 2**32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _counting():
    calls = []

    def model(x, sigma, **kw):
        calls.append(1)
        return GM.denoiser(x, sigma)
    return model, calls


@pytest.mark.parametrize("seed, error, words", [
    (1.5, InvalidType, "must be an integer"), (1.0, InvalidType, "must be an integer"),
    ("5", InvalidType, "must be an integer"), (True, InvalidType, "must be an integer"),
    (-1, InvalidInput, "negative"), ([5, 6.0], InvalidType, r"seed\[1\]"), ([True, 6], InvalidType, r"seed\[0\]"),
    (np.array([[5], [6]]), InvalidType, "pass a list of ints"), (np.array([5.0, 6.0]), InvalidType, r"seed\[0\]"),
    ([5, 6, 7], InvalidInput, "3 seeds for a batch of 2"),
])
@pytest.mark.parametrize("name", ["sample_dpmpp_2m_sde", "sample_dpmpp_sde", "sample_dpmpp_3m_sde"])
def test_the_drop_ins_tree_seed_is_an_integer_never_rounded_or_parsed(name, seed, error, words):
    """k-diffusion's tree refuses 1.5 and '5' (numpy's SeedSequence); the drop-in took them as seed 1 and seed 5."""
    model, calls = _counting()
    with pytest.raises(error, match=words):
        getattr(kdiffusion, name)(model, GM.noise(2, seed=0) * 10.0, SIG, disable=True, seed=seed)
    assert calls == []


def test_an_integer_array_seeds_one_tree_per_item_as_k_diffusion_takes_it():
    """k-diffusion takes any seed whose length is the batch as one seed per item (it calls len(seed)); the drop-in
    refused an array, saying k-diffusion would take it as one tree's entropy, which it does not. An integer tensor
    (which k-diffusion's tree cannot take) gives the trees of the integers it holds."""
    from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules
    from samplers.core.brownian import BrownianTreeNoiseSampler

    try:
        kd = kdiffusion_modules()[0]  # its sampling module, without the package __init__'s optional imports
    except KDiffusionUnavailable:
        pytest.skip("k-diffusion is not installed")

    x = GM.noise(2, seed=0)
    theirs = kd.BrownianTreeNoiseSampler(x, 0.05, 10.0, seed=np.array([5, 6]))
    for seed in (np.array([5, 6]), torch.tensor([5, 6]), [5, 6]):
        ours = BrownianTreeNoiseSampler(x, 0.05, 10.0, seed=seed)
        torch.testing.assert_close(ours(torch.tensor(3.0), torch.tensor(1.0)),
                                   theirs(torch.tensor(3.0), torch.tensor(1.0)), rtol=0, atol=0)


def test_the_drop_ins_tree_takes_any_integer_seed():
    """numpy and 0-d tensor integers are the int they hold; a seed beyond 2**64 is a tree's entropy, as k-diffusion
    takes it."""
    x = GM.noise(2, seed=0) * 10.0
    five = kdiffusion.sample_dpmpp_2m_sde(GM.denoiser, x, SIG, disable=True, seed=5)
    for same in (np.int64(5), torch.tensor(5)):
        torch.testing.assert_close(kdiffusion.sample_dpmpp_2m_sde(GM.denoiser, x, SIG, disable=True, seed=same), five,
                                   rtol=0, atol=0)
    big = kdiffusion.sample_dpmpp_2m_sde(GM.denoiser, x, SIG, disable=True, seed=2**70)
    assert torch.isfinite(big).all() and not torch.allclose(big, five)

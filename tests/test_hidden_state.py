"""Sampling leaves the process as it found it: warning filters, torch.Tensor's methods."""
import threading
import warnings

import torch

import samplers
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 3, 3), components=3, seed=4)


def test_brownian_tree_draws_touch_no_warning_filter_and_raise_no_warning():
    """torchsde warns, then clamps, where a query lies outside the tree by float32 rounding; the tree used to hide
    that under warnings.catch_warnings at every draw, which swaps the process-wide filter list: threads drawing at
    once left an 'ignore' filter behind. The times are clamped first now, as torchsde clamps them."""
    x = GM.noise(2, seed=0) * 10.0
    sigmas = samplers.get_sigmas("karras", 6, sigma_min=0.0291675, sigma_max=14.614642)  # float32 rounds both ends
    before = list(warnings.filters)
    outs = {}

    def run(k):
        outs[k] = samplers.sample("dpmpp_2m_sde", GM.denoiser, x, sigmas, disable=True, seed=k,
                                  noise_sampler="brownian_tree")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from a draw fails the run
        run(0)
        inner = list(warnings.filters)
        threads = [threading.Thread(target=run, args=(k,)) for k in range(1, 5)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert list(warnings.filters) == inner
    assert list(warnings.filters) == before and len(outs) == 5
    alone = samplers.sample("dpmpp_2m_sde", GM.denoiser, x, sigmas, disable=True, seed=3, noise_sampler="brownian_tree")
    torch.testing.assert_close(outs[3], alone, rtol=0, atol=0)

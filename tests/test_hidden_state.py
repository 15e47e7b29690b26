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


def test_host_read_counts_are_per_thread_and_torch_gets_its_methods_back_however_blocks_overlap():
    """Two threads' blocks overlapping (A enters, B enters, A leaves, B leaves): B's own read was lost and A's
    wrapper stayed on torch.Tensor for good; a read in another thread was counted in the block."""
    from samplers.core.graph import count_host_reads

    own = {n: getattr(torch.Tensor, n) for n in ("item", "__bool__", "__float__", "__int__", "tolist")}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    got = {}

    def a():
        with count_host_reads() as c:
            a_in.set()
            b_in.wait()
        got["A"] = c["n"]
        a_out.set()

    def b():
        a_in.wait()
        with count_host_reads() as c:
            b_in.set()
            a_out.wait()
            torch.ones(()).item()
        got["B"] = c["n"]

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert got == {"A": 0, "B": 1}
    assert all(getattr(torch.Tensor, n) is m for n, m in own.items())
    with count_host_reads() as outer:
        other = threading.Thread(target=lambda: [torch.ones(()).item() for _ in range(5)])
        other.start()
        other.join()
        with count_host_reads() as inner:
            float(torch.ones(()))
    assert (outer["n"], inner["n"]) == (1, 1)
    assert all(getattr(torch.Tensor, n) is m for n, m in own.items())


def test_the_weights_size_check_counts_only_the_parameters_its_own_build_registers():
    """models.io builds a config's module on the meta device under torch's global parameter-registration hook, to
    stop an endless build: another thread building its own module meanwhile was counted, and failed."""
    from models import io as mio

    started, done = threading.Event(), threading.Event()

    class Slow(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.a = torch.nn.Linear(2, 2)
            started.set()
            done.wait(20)

    errors = []

    def other():
        started.wait(20)
        try:
            torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(50)])
        except BaseException as err:  # noqa: BLE001 - whatever the hook raised in this thread
            errors.append(err)
        done.set()

    worker = threading.Thread(target=other)
    worker.start()
    built = mio._meta_build(Slow, None, cap=4)
    worker.join()
    assert errors == [] and set(built.state_dict()) == {"a.weight", "a.bias"}

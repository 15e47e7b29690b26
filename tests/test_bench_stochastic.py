"""benchmarks.stochastic in quick mode: discovers the stochastic samplers, scores them and the diffusers peers
against exact samples, and writes the JSON and the Markdown table."""
from __future__ import annotations

import json

import pytest

import samplers
from benchmarks import common, stochastic
from samplers.core.budget import count_nfe, steps_for_nfe


def test_every_stochastic_sampler_is_discovered_at_run_time():
    found = stochastic.stochastic_samplers()
    assert set(found) == {n for n in samplers.available() if samplers.info(n).kind in ("ancestral", "sde")}
    assert {"euler_ancestral", "torchsde.euler", "torchsde.srk"} <= set(found)


def test_quick_run_writes_results_and_table(tmp_path):
    result = stochastic.main(["--quick", "--samples", "64", "--out", str(tmp_path), "--quiet",
                              "--samplers", "euler_ancestral", "torchsde.euler", "torchsde.srk"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["args"] == result["args"] and saved["args"]["nfe"] == [10]
    assert saved["info"]["versions"]["torchsde"] is not None
    table = (tmp_path / "table.md").read_text()
    rows = {r["sampler"]: r for r in saved["rows"]}
    problem = common.get_problem(stochastic.PROBLEM)
    exact = problem.exact_samples(64, 0)
    floors = [common.sliced_wasserstein(exact, problem.exact_samples(64, 50_000 + 1_000 * k)) for k in range(5)]
    floor = sum(floors) / 5
    assert saved["sw_floor"] == pytest.approx(floor) and saved["sw_floor_pairs"] == pytest.approx(floors)
    assert 0 < saved["sw_floor_std"] < floor
    for name in ("euler_ancestral", "torchsde.euler", "torchsde.srk"):
        row = rows[name]
        assert (row["steps"], row["nfe_used"]) == steps_for_nfe(name, 10, lambda k: problem.sigmas("karras", k))
        assert row["ratio"] == pytest.approx(row["sw"] / floor)
        assert f"| {name} |" in table
        assert row["brownian_range_warnings"] == 0
        # 10 model calls reach the data: far closer than the starting noise is
        assert row["sw"] < 0.5 * common.sliced_wasserstein(problem.noise(64, 0), problem.exact_samples(64, 0))
    # the same noise reaches every sampler: Euler–Maruyama in the adapter's variables is Euler ancestral
    assert rows["torchsde.euler"]["sw"] == pytest.approx(rows["euler_ancestral"]["sw"], rel=1e-6)
    peers = {r["sampler"]: r for r in saved["rows"] if r["source"] == "diffusers"}
    assert len(peers) == len(stochastic.PEERS)
    for label, row in peers.items():
        assert "error" not in row, f"{label}: {row.get('error')}"
        assert 0 < row["nfe_used"] <= 10 and row["sw"] > 0
    cost = saved["noise_cost_us"]["1x64"]
    assert cost["seeded"] > 0 and cost["brownian"] > 0 and "BrownianNoise" in table


@pytest.mark.parametrize("name", ["restart", "seeds_3", "torchsde.reversible_heun"])
def test_every_sampler_runs_within_the_budget_of_its_column(name):
    # steps = NFE // nfe_per_step gave restart 17 calls in the NFE 10 column (its restarts cost 2·2 + 4 more),
    # torchsde.reversible_heun 11 (one more call to start) and seeds_3 only 7 (its last step skips two stages)
    problem = common.get_problem(stochastic.PROBLEM)
    for nfe in stochastic.NFE:
        got = stochastic.run_ours(problem, name, nfe, 4, 0)
        assert got["nfe_used"] <= nfe
        steps, calls = steps_for_nfe(name, nfe, lambda k: problem.sigmas(stochastic.SCHEDULE, k))
        assert (got["steps"], got["nfe_used"]) == (steps, calls)
        # the most steps that fit: one more step would not
        assert count_nfe(name, problem.sigmas(stochastic.SCHEDULE, steps + 1)) > nfe


def test_a_peer_that_draws_from_the_global_generator_does_not_depend_on_earlier_runs():
    # DPMSolverSDEScheduler seeds its Brownian tree from torch's global generator (no noise_sampler_seed in the
    # config): its cells moved between runs of the table with what ran before it (0.076 -> 0.066 at NFE 20)
    import torch

    problem = common.get_problem(stochastic.PROBLEM)
    outs = []
    for before in (0, 1):
        torch.manual_seed(before)
        state = torch.get_rng_state()
        outs.append(stochastic.run_peer(problem, "DPMSolverSDEScheduler", 10, 4, 3)["samples"])
        assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left where it was
    assert torch.equal(outs[0], outs[1])


def test_args_record_the_samplers_and_no_peers_so_the_command_rebuilt_from_them_is_the_run():
    """--samplers and --no-peers were only in ``command``: a record without it rebuilt a command that runs every
    sampler and every peer."""
    args = {"samplers": ["euler_ancestral"], "no_peers": True}
    result = stochastic.benchmark(quick=True, samples=8, peers=False, names=args["samplers"], log=lambda *a, **k: None)
    assert {k: result["args"][k] for k in args} == args
    rebuilt = common.command_from_args(stochastic.MODULE, stochastic.parser(), result["args"], {"samples": 128})
    assert "--samplers euler_ancestral" in rebuilt and "--no-peers" in rebuilt

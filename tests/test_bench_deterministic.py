"""benchmarks.deterministic on a tiny grid (one problem, three samplers, two budgets, one diffusers peer, two
held-out seeds): it writes its JSON and the table generated from it, every cell is scored within its budget,
the peers run beside ours, and the headline ratio is the one the cells give.

The native models built for diffusers' VE peers are checked against the exact denoiser, and peers against our
sampler doing the same algorithm on the same schedule. The full --quick grid is a command, not a test
(docs/benchmarks/README.md).
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch

import samplers
from benchmarks import common, deterministic

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
LEARNED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "deterministic" / "learned"
NFE = (5, 10)
HELDOUT = (101, 102)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The whole pipeline — ours, the fitted solvers, a diffusers peer, held-out re-runs, the report — on gm-ve."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("det")
    try:  # main sets --threads (default 1); the session's setting is restored after
        deterministic.main(["--problem", "gm-ve", "--samplers", "euler", "heun", "dpmpp_2m", "--schedules", "karras",
                            "linspace", "--nfe", *map(str, NFE), "--batch", "8", "--heldout-seeds", *map(str, HELDOUT),
                            "--heldout-batch", "4", "--peer-names", "EDMEulerScheduler", "--learned", str(LEARNED),
                            "--out", str(out / "res"), "--cache", str(out / "cache"), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    return out / "res"


@pytest.fixture(scope="module")
def result(tiny):
    return json.loads((tiny / "results.json").read_text())


def test_writes_json_and_the_markdown_generated_from_it(tiny, result):
    info = result["info"]
    assert info["versions"]["torch"] == torch.__version__ and info["device"] == "cpu" and info["date_utc"]
    assert info["torch_threads"] == 1  # --threads defaults to 1 for the mixture
    assert result["args"]["seed"] == 0 and result["args"]["nfe"] == list(NFE)
    assert set(result["problems"]) == {"gm-ve"}
    table = (tiny / "table.md").read_text()
    assert table == deterministic.report(tiny / "results.json", write=False)
    assert table.startswith("<!-- Generated from results.json")
    assert "| problem | NFE |" in table and "## gm-ve" in table
    for row in result["summary"]:
        assert f"| {row['problem']} | {row['nfe']} |" in table


def test_every_cell_is_scored_within_its_budget(result):
    cells = [c for c in result["cells"] if c["seed"] == result["args"]["seed"]]
    ours = [c for c in cells if not c["sampler"].startswith("diffusers:") and c["sampler"] != deterministic.LEARNED]
    schedules = result["schedules"]
    # every (problem, applicable schedule, sampler, NFE) of the grid ran
    assert len(ours) == sum(len(schedules[p]) for p in result["problems"]) * len(result["samplers"]) * len(NFE)
    # and every fitted solver shipped for these problems and budgets, fitted on a seed of its own
    fitted = [c for c in cells if c["sampler"] == deterministic.LEARNED]
    shipped = [f for p in result["problems"] for n in NFE for f in deterministic.learned_files(LEARNED, p, n)]
    assert len(fitted) == len(shipped) > 0
    assert all(c["calibration_seed"] not in (0, 1) and c["steps"] == c["nfe_used"] == c["nfe"] for c in fitted)
    for c in cells:
        assert "skipped" not in c, c
        assert math.isfinite(c["rmse"]) and c["rmse"] > 0
        assert 1 <= c["nfe_used"] <= c["nfe"]
    # the timestep spacing needs a training table: the VE problem has none, and the run says why not
    assert schedules["gm-ve"] == ["karras"] and "training" in result["skipped_schedules"]["gm-ve"]["linspace"]
    # more budget, less error (the exact reference is from the same start)
    by = {(c["problem"], c["sampler"], c["schedule"], c["nfe"]): c["rmse"] for c in ours}
    assert by[("gm-ve", "dpmpp_2m", "karras", 10)] < by[("gm-ve", "dpmpp_2m", "karras", 5)]
    heun = [c for c in ours if c["sampler"] == "heun" and c["nfe"] == 10]
    assert heun and all(c["steps"] == 5 and c["nfe_used"] == 9 for c in heun)  # 2 per step, 1 on the last step to 0


def test_a_solver_fitted_on_the_scored_seed_is_not_ranked(tmp_path):
    solver = samplers.fitted.solver.LearnedSolver.from_sampler("euler", samplers.get_sigmas("karras", 5, sigma_min=0.002,
                                                                                      sigma_max=80.0))
    solver.meta["calibration_seed"] = 0
    solver.save(tmp_path / "gm-ve_nfe5.json")
    args = deterministic.resolve_args(deterministic.parser().parse_args(
        ["--quick", "--problem", "gm-ve", "--learned", str(tmp_path), "--no-cache"]))
    cell = deterministic.Run(args).learned("gm-ve", tmp_path / "gm-ve_nfe5.json", 5, seed=0)
    assert "skipped" in cell and "fitted on seed 0" in cell["skipped"]


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
def test_peers_run_on_every_problem(result):
    seed = result["args"]["seed"]
    for p in result["problems"]:
        peers = {c["sampler"] for c in result["cells"] if c["problem"] == p and c["seed"] == seed
                 and c["sampler"].startswith("diffusers:") and "skipped" not in c}
        assert peers and peers == {f"diffusers:{label}" for label in result["peers"][p]}, (p, peers)
    assert all(row["diffusers"] is not None for row in result["summary"])


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
def test_ratio_is_ours_best_over_diffusers_best(result):
    seed = result["args"]["seed"]
    for row in result["summary"]:
        cells = [c for c in result["cells"] if c["problem"] == row["problem"] and c["nfe"] == row["nfe"]
                 and c["seed"] == seed and c["full_range"]]
        ours = min((c for c in cells if not c["sampler"].startswith("diffusers:")), key=lambda c: c["rmse"])
        theirs = min((c for c in cells if c["sampler"].startswith("diffusers:")), key=lambda c: c["rmse"])
        assert (row["ours"]["sampler"], row["ours"]["schedule"]) == (ours["sampler"], ours["schedule"])
        assert row["diffusers"]["sampler"] == theirs["sampler"]
        assert row["ratio"] == pytest.approx(ours["rmse"] / theirs["rmse"], rel=1e-12)
    # the held-out re-run: the same winners on seeds none of them was picked on, pooled; the target is judged there
    held = {(h["problem"], h["nfe"]): h for h in result["heldout"]}
    assert held and all(h["seeds"] == result["args"]["heldout_seeds"] for h in held.values())
    assert seed not in result["args"]["heldout_seeds"]
    for row in result["summary"]:
        h = held[(row["problem"], row["nfe"])]
        for who in ("ours", "ours_fixed", "diffusers"):
            assert (h[who]["sampler"], h[who]["schedule"]) == (row[who]["sampler"], row[who]["schedule"])
            runs = [c for c in result["cells"] if c["problem"] == row["problem"] and c["nfe"] == row["nfe"]
                    and c["sampler"] == row[who]["sampler"] and c["schedule"] == row[who]["schedule"]
                    and c["seed"] in h["seeds"] and c["batch"] == h["batch"]]
            assert sorted(c["seed"] for c in runs) == sorted(h["seeds"])
            assert h[who]["rmse"] == pytest.approx(math.sqrt(sum(c["rmse"] ** 2 for c in runs) / len(runs)))
            assert h[who]["wrong_mode"] == sum(c["wrong_mode"] for c in runs)
        assert h["ratio"] == pytest.approx(h["ours"]["rmse"] / h["diffusers"]["rmse"], rel=1e-12)
        assert row["meets_target"] == (h["ratio"] <= result["target_ratio"])
        # our best on fixed schedules only is never better than our best overall on the selection seed
        assert row["ours_fixed"]["rmse"] >= row["ours"]["rmse"] and row["ours_fixed"]["sampler"] != deterministic.LEARNED


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
def test_heldout_ratios_carry_their_interval_and_no_per_start_errors_are_written(tiny, result):
    assert not any(deterministic.ITEMS in c for c in result["cells"])
    table = (tiny / "table.md").read_text()
    for h in result["heldout"]:
        for key in ("ratio", "ratio_fixed"):
            lo, hi = h[key + "_interval"]
            assert 0 < lo <= hi
            assert f"{h[key]:.3f}{'**' if key == 'ratio' and h[key] <= result['target_ratio'] else ''} " \
                   f"({lo:.2f}–{hi:.2f}) |" in table


def test_heldout_entry_pairs_each_ratio_with_the_starts_of_both_sides():
    g = torch.Generator().manual_seed(1)
    per_seed = {who: [torch.rand(6, generator=g, dtype=torch.float64) * scale for _ in range(2)]
                for who, scale in (("ours", 1.0), ("ours_fixed", 2.0), ("diffusers", 3.0))}
    per_seed["fitted"] = per_seed["ours"]
    row = {"problem": "p", "nfe": 5, **{who: {"sampler": who, "schedule": "s"} for who in per_seed}}
    runs = {who: [{"rmse": float(t.mean().sqrt()), "wrong_mode": 0, "item_median": 1.0} for t in ts]
            for who, ts in per_seed.items()}
    entry = deterministic.scoring.heldout_entry(row, runs, [1, 2], 6, per_seed)
    every = {who: torch.cat(ts) for who, ts in per_seed.items()}
    for key, who, against in deterministic.scoring.RATIOS:
        assert entry[key] == pytest.approx(float((every[who].mean() / every[against].mean()).sqrt()))
        assert entry[key + "_interval"] == common.ratio_interval(every[who], every[against])
    # a side whose per-start errors are missing (a re-run that failed) gets its ratio but no interval
    entry = deterministic.scoring.heldout_entry(row, runs, [1, 2], 6, {**per_seed, "diffusers": [None, None]})
    assert {k for k in entry if k.endswith("_interval")} == {"ratio_fitted_fixed_interval"}
    assert all(k in entry for k in ("ratio", "ratio_fixed", "ratio_fitted"))


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
def test_same_algorithm_same_schedule_same_error(result):
    # diffusers' EDM Euler (Karras σ) on the EDM-preconditioned model is our Euler on the Karras schedule:
    # only its start differs (noise·√(σ_max² + 1) instead of noise·σ_max), so the errors agree closely.
    cells = {(c["problem"], c["sampler"], c["schedule"], c["nfe"]): c["rmse"] for c in result["cells"]
             if c["seed"] == result["args"]["seed"] and "skipped" not in c}
    for n in NFE:
        assert cells[("gm-ve", "diffusers:EDMEulerScheduler", "native", n)] == pytest.approx(
            cells[("gm-ve", "euler", "karras", n)], rel=1e-4)
    rows = {(r["problem"], r["diffusers"]): r for r in result["like_for_like"]}
    edm = rows[("gm-ve", "EDMEulerScheduler")]
    assert edm["ours"] == "euler + karras"
    assert all(v == pytest.approx(1.0, rel=1e-4) for v in edm["ratio"].values()) and len(edm["ratio"]) == len(NFE)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
@pytest.mark.parametrize("problem, label, schedule", [("gm-vp-eps", "EulerDiscreteScheduler+karras", "karras"),
                                                      ("gm-flow", "FlowMatchEulerDiscreteScheduler", "flow")])
def test_a_peer_and_our_same_algorithm_agree_on_the_native_problems(problem, label, schedule):
    args = deterministic.resolve_args(deterministic.parser().parse_args(
        ["--problem", problem, "--batch", "8", "--no-cache", "--no-learned"]))
    run = deterministic.Run(args)
    theirs = run.peer(problem, label, run.configs(problem)[label], 5, seed=0)
    ours = run.ours(problem, "euler", schedule, 5, seed=0)
    assert deterministic.counterpart(label) == ("euler", schedule)
    assert "skipped" not in theirs and "skipped" not in ours
    assert theirs["nfe_used"] == ours["nfe_used"] == 5
    # diffusers starts from noise·√(σ²+1) (a VE state a hair off ours) and keeps σ in float32; flow starts at t = 1
    assert theirs["rmse"] == pytest.approx(ours["rmse"], rel=2e-2)


def test_quick_is_a_small_grid_and_output_goes_under_out():
    args = deterministic.resolve_args(deterministic.parser().parse_args(["--quick"]))
    assert args.samplers == list(deterministic.running.QUICK_SAMPLERS) and args.batch == 8 and args.heldout_batch == 8
    assert args.heldout_seeds == list(deterministic.QUICK_HELDOUT_SEEDS) and args.threads == 1
    assert args.out == Path("out/deterministic")  # tracked docs are written only where --out says so
    full = deterministic.resolve_args(deterministic.parser().parse_args([]))
    assert full.heldout_seeds == list(deterministic.HELDOUT_SEEDS) and full.batch == 2048


def test_counterparts_name_the_same_algorithm_and_schedule():
    c = deterministic.counterpart
    assert c("DPMSolverMultistepScheduler+3M+karras") == ("dpmpp_3m", "karras")
    assert c("vetable/EulerDiscreteScheduler") == ("euler", "linspace")
    assert c("EDMDPMSolverMultistepScheduler+exponential") == ("dpmpp_2m", "exponential")
    assert c("FlowMatchHeunDiscreteScheduler") == ("heun_flow", "flow")
    assert c("UniPCMultistepScheduler+order3+karras") == ("unipc_bh2", "karras")
    assert c("UniPCMultistepScheduler+karras") is None  # diffusers' default order 2, ours 3
    assert c("FlowMatchEulerDiscreteScheduler+karras") is None


def test_runs_that_start_below_the_top_of_the_range_are_not_ranked():
    problem = common.get_problem("gm-vp-eps")
    x = torch.zeros(2, *problem.shape, dtype=torch.float64)
    leading = samplers.get_sigmas("leading", 4, native=problem.native)  # starts at timestep 750, not 999
    assert not deterministic.score(problem, x, x + 0.1, float(leading[0]))["full_range"]
    assert not deterministic.score(problem, x, x, 700.0)["full_range"]  # above the VP model's σ_max
    flow = common.get_problem("gm-flow")
    assert deterministic.in_range(flow, math.inf) and deterministic.in_range(flow, 80.0)
    assert not deterministic.in_range(flow, 14.6)
    karras = problem.sigmas("karras", 4)
    scored = deterministic.score(problem, x, x + 0.1, float(karras[0]))
    assert scored["full_range"] and scored["rmse"] == pytest.approx(0.1) and scored["item_median"] == pytest.approx(0.1)
    cells = [dict(problem="p", nfe=5, seed=0, sampler=name, schedule="s", rmse=err, full_range=full)
             for name, err, full in (("a", 0.1, False), ("b", 0.3, True), ("c", 0.2, True))]
    assert deterministic.best_of(cells, "p", 5, peer=False, seed=0)["sampler"] == "c"


def test_edm_model_gives_back_the_exact_denoiser():
    gm = common.gaussian_mixture()
    model = deterministic.edm_model(gm, sigma_data=0.5)
    x0 = gm.sample(6, seed=1)
    sigma = torch.tensor([0.002, 0.05, 0.7, 3.0, 20.0, 80.0], dtype=torch.float64)
    x = x0 + sigma.reshape(-1, 1, 1, 1) * gm.noise(6, seed=2)
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt(), 1 / (s**2 + 0.25).sqrt()
    denoised = c_skip * x + c_out * model(c_in * x, 0.25 * sigma.log())
    torch.testing.assert_close(denoised, gm.denoise(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers not installed")
def test_ve_table_spans_the_ve_range_and_its_eps_model_is_exact():
    problem = common.get_problem("gm-ve")
    gm = common.gaussian_mixture()
    table = deterministic.ve_table_problem(problem, gm)
    assert table.native.sigma_min == pytest.approx(0.002, rel=1e-2)
    assert table.native.sigma_max == pytest.approx(80.0, rel=1e-4)
    target = torch.linspace(math.log(0.002), math.log(80.0), 1000, dtype=torch.float64)
    # log-uniform up to the rounding of diffusers' float32 ᾱ (1.5 % in σ where 1 − ᾱ ≈ 4e-6)
    assert float((table.native.sigmas.log() - target).abs().max()) < 0.02
    denoiser = samplers.to_denoiser(table.native_model, "eps", table.native)
    x = gm.sample(4, seed=3) + 2.0 * gm.noise(4, seed=4)
    sigma = torch.full((4,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(denoiser(x, sigma), gm.denoise(x, sigma), rtol=1e-7, atol=1e-7)


def test_wrong_mode_counts_the_starts_sent_to_another_cluster():
    problem = common.get_problem("gm-ve")
    gm = common.gaussian_mixture()
    ref = gm.sample(256, seed=3)
    out = ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert deterministic.score(problem, out, ref, 80.0)["wrong_mode"] == 0
    far = [k for k in range(1, 256) if (gm.means.sub(ref[k].flatten()).norm(dim=1).argmin()
                                        != gm.means.sub(ref[0].flatten()).norm(dim=1).argmin())][:3]
    out[far] = ref[0]  # three starts that end in the cluster of another
    assert deterministic.score(problem, out, ref, 80.0)["wrong_mode"] == 3


def test_the_reference_solve_is_not_charged_to_the_sampler_that_first_asks_for_it(monkeypatch):
    """The exact endpoints are solved once per seed and cached: their seconds (~7 s for 2048 starts) went into
    the cell of whichever sampler asked first, and against its --max-sampler-seconds, so euler's later cells
    were dropped as over budget while heun's ran."""
    args = deterministic.resolve_args(deterministic.parser().parse_args(
        ["--problem", "gm-ve", "--samplers", "euler", "--schedules", "karras", "--nfe", "5", "--batch", "8",
         "--no-cache", "--no-peers", "--no-learned", "--max-sampler-seconds", "0.5", "--no-progress"]))
    run = deterministic.Run(args)
    solve, slow = run.refs.get, 1.0

    def slow_solve(*a, **k):
        time.sleep(slow)
        return solve(*a, **k)

    monkeypatch.setattr(run.refs, "get", slow_solve)
    first = run.ours("gm-ve", "euler", "karras", 5, seed=0)
    assert "skipped" not in first and first["seconds"] < slow
    assert run.sampler_seconds[("gm-ve", "euler")] < slow
    assert "skipped" not in run.ours("gm-ve", "euler", "karras", 5, seed=1)

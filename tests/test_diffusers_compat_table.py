"""docs/compatibility.md is what `python -m benchmarks.compatibility` makes today: a regression is a changed cell.

Each cell's verdict is compared ("≤ 1e-5", the one-digit difference of a mismatch, or the refusal's text), not the
raw difference, so float noise across machines does not flip it.
"""
from __future__ import annotations

import pathlib

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks import compatibility  # noqa: E402

TABLE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"


@pytest.fixture(scope="module")
def regenerated():
    return compatibility.parse(compatibility.markdown(compatibility.table(), "test"))


def test_the_committed_table_is_what_the_command_makes(regenerated):
    committed = compatibility.parse(TABLE.read_text())
    assert set(regenerated) == set(committed), "rows changed: regenerate docs/compatibility.md"
    changed = {row: (committed[row], now) for row, now in regenerated.items() if committed[row] != now}
    assert not changed, ("cells changed (committed, now); regenerate with `python -m benchmarks.compatibility "
                         f"--out docs/compatibility.md` if intended: {changed}")


def test_every_shipped_config_of_the_common_schedulers_keeps_the_image(regenerated):
    common = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
              "DDIMScheduler", "UniPCMultistepScheduler", "HeunDiscreteScheduler", "DPMSolverSDEScheduler",
              "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "DDPMScheduler", "DEISMultistepScheduler"]
    for name in common:
        for config in ("SD-1.5", "SD-2.1-v", "SDXL"):
            assert regenerated[(name, config, "—")] == ("≤ 1e-5",) * 3, (name, config)
    assert regenerated[("FlowMatchEulerDiscreteScheduler", "SD3", "—")] == ("≤ 1e-5",) * 3
    assert regenerated[("FlowMatchHeunDiscreteScheduler", "SD3", "—")] == ("≤ 1e-5",) * 3
    assert regenerated[("PNDMScheduler", "SD-1.5", "—")][0] == "≤ 1e-5"  # SD-1.5's own scheduler, txt2img


def test_a_zero_snr_config_keeps_the_image_but_for_diffusers_float32_first_step(regenerated):
    # every class the shim runs on a zero-terminal-SNR v config matches, except Euler / EulerAncestral's txt2img:
    # they start at σ_max = 4096, where diffusers' float32 dt (and σ_up, σ_down) round by up to 2.4e-4 (the bound
    # docs/diffusers.md states: 1.2e-4 Euler, 4.7e-4 EulerAncestral over 1–50 steps)
    zsnr = {row: cells for row, cells in regenerated.items() if row[1] == "zero-SNR-v"}
    assert len(zsnr) == len(compatibility.VP_CLASSES)
    for (name, _, _), cells in zsnr.items():
        if name in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"):
            assert cells[1:] == ("≤ 1e-5",) * 2, name
            assert cells[0] == "≤ 1e-5" or float(cells[0]) <= 5e-4, (name, cells)
        elif not all(c.startswith("refused: ") for c in cells):
            assert cells == ("≤ 1e-5",) * 3, (name, cells)


def test_the_documented_zero_snr_bound_holds_over_step_counts(measured_rounding):
    import diffusers

    from samplers.interop.diffusers_scheduler import SamplerScheduler

    diffusers.utils.logging.set_verbosity_error()
    model = compatibility.TinyModel()
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for name, bound in (("EulerDiscreteScheduler", 2e-4), ("EulerAncestralDiscreteScheduler", 6e-4),
                        ("DDPMScheduler", 1e-5), ("HeunDiscreteScheduler", 1e-5)):
        for steps in (1, 2, 5, 25):
            theirs = compatibility.source_scheduler(name, compatibility.ZSNR, {})
            ours = SamplerScheduler.from_config(theirs)
            out, ref = (compatibility.run(s, model, "txt2img", noise, None, None, steps=steps) for s in (ours, theirs))
            assert float((out - ref).abs().max()) <= bound, (name, steps)


def test_parse_reads_back_what_markdown_writes():
    cell = compatibility.Cell
    rows = [dict(scheduler="A", config="SD-1.5", variant={"x": 1}, sampler="euler",
                 cells={"txt2img": cell("≤ 1e-5"), "img2img": cell("refused: because | no"), "inpaint": cell("3e-02")})]
    parsed = compatibility.parse(compatibility.markdown(rows, "env"))
    assert parsed == {("A", "SD-1.5", "x=1"): ("≤ 1e-5", "refused: because | no", "3e-02")}


def test_the_environment_line_names_the_dtype_each_table_ran_in(monkeypatch, capsys):
    # the compatibility table runs diffusers' loop in float32; --exact's analytic problem runs in float64
    monkeypatch.setattr(compatibility, "exact_gain", lambda: [])
    assert compatibility.main(["--exact"]) == 0
    assert "CPU, float64," in capsys.readouterr().err
    monkeypatch.setattr(compatibility, "table", lambda: [])
    monkeypatch.setattr(compatibility, "markdown", lambda rows, env: env)
    assert compatibility.main([]) == 0
    assert "CPU, float32," in capsys.readouterr().err

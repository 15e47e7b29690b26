"""docs/compatibility.md is what `python -m benchmarks.compatibility` makes today: a regression is a changed cell.

Each cell's verdict is compared ("≤ 1e-5", the one-digit difference of a mismatch, or the refusal's text), not the
raw difference, so float noise across machines does not flip it.
"""
from __future__ import annotations

import pathlib

import pytest

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


def test_parse_reads_back_what_markdown_writes():
    cell = compatibility.Cell
    rows = [dict(scheduler="A", config="SD-1.5", variant={"x": 1}, sampler="euler",
                 cells={"txt2img": cell("≤ 1e-5"), "img2img": cell("refused: because | no"), "inpaint": cell("3e-02")})]
    parsed = compatibility.parse(compatibility.markdown(rows, "env"))
    assert parsed == {("A", "SD-1.5", "x=1"): ("≤ 1e-5", "refused: because | no", "3e-02")}

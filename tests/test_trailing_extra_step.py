"""diffusers' trailing spacing takes one step more at some step counts (np.arange(N, 0, -N/n) holds n + 1 values, the
last timestep -1, which EulerDiscrete's np.interp reads as timestep 0): the schedule keeps diffusers' values, and the
docs say which n and what the run then does."""
from pathlib import Path

import numpy as np
import pytest

import samplers
from samplers.schedules.timesteps import trailing_extra_steps

SD = samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "schedules.md"


def test_the_step_counts_with_an_extra_step_are_numpy_s_arange_lengths():
    extra = trailing_extra_steps(1000)
    assert len(extra) == 62 and extra[:4] == [61, 103, 121, 122] and extra[-1] == 998
    assert extra == [n for n in range(1, 1001) if len(np.arange(1000, 0, -1000 / n)) == n + 1]


@pytest.mark.parametrize("n", [1, 20, 60, 61, 62, 103, 998, 1000])
def test_trailing_has_n_plus_1_steps_exactly_at_those_counts(n):
    s = samplers.get_sigmas("trailing", n, native=SD)
    if n in trailing_extra_steps(1000):
        # n + 1 steps: the extra one to table[0]'s σ (timestep -1 read as timestep 0), then to 0
        assert len(s) == n + 2 and float(s[-2]) == float(SD.sigmas[0]) and float(s[-1]) == 0.0
    else:
        assert len(s) == n + 1


def test_schedules_md_names_trailing_s_extra_step_and_its_counts():
    intro = DOCS.read_text(encoding="utf-8").split("| name |")[0]
    assert "`trailing`" in intro and "n + 1 steps" in intro
    assert "61, 103, 121, 122" in intro and "62 step counts" in intro

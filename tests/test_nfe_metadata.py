"""The model calls the registry and docs/samplers.md state are the calls a run makes, counted."""
from __future__ import annotations

import functools
import math

import pytest

import samplers
from app import docs
from samplers.core.budget import count_nfe, nfe_rule, rule_sigmas

NAMES = samplers.available()
# counting torchdiffeq's implicit Adams from a second start, its corrector may stop at max_iters
pytestmark = pytest.mark.filterwarnings("ignore:Functional iteration did not converge")
page = functools.cache(docs.samplers_md)


@functools.cache
def rules(name):
    return nfe_rule(name), nfe_rule(name, ends_in_zero=True)


@pytest.mark.parametrize("name", NAMES)
def test_the_rule_is_the_count_and_its_per_step_part_the_metadata(name):
    above, to_zero = rules(name)
    if above is None or to_zero is None:
        assert samplers.info(name).host_sync, f"{name}: no rule in n, but no host-side step control either"
        return
    assert above.per_step == to_zero.per_step == samplers.info(name).nfe_per_step
    for steps in (7, 15, 33):  # step counts the rule was not fitted on
        assert count_nfe(name, rule_sigmas(steps, False)) == above.calls(steps)
        assert count_nfe(name, rule_sigmas(steps, True)) == to_zero.calls(steps)


# the counts an audit found above nfe_per_step · n (warm-ups) or below it (skipped stages), on both schedules
KNOWN = {"pndm": ("n + 9 (n ≥ 3)", "n + 9 (n ≥ 4)"), "restart": ("2n + 8", "2n + 7 (n ≥ 2)"),
         "plms": ("n + 1", "n + 1 (n ≥ 2)"), "torchdiffeq.explicit_adams": ("n + 6 (n ≥ 2)", "n + 6 (n ≥ 3)"),
         "torchsde.reversible_heun": ("n + 1", "n + 1 (n ≥ 2)"), "heunpp2": ("3n − 3 (n ≥ 2)",) * 2,
         "sa_solver_pece": ("2n − 1",) * 2, "heun": ("2n", "2n − 1"), "euler": ("n", "n")}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_warm_ups_and_skipped_stages_are_counted_and_on_the_page(name):
    assert tuple(map(str, rules(name))) == KNOWN[name]
    above, to_zero = KNOWN[name]
    shown = above if above == to_zero else f"{above}; to σ = 0: {to_zero}"
    spec = samplers.info(name)
    row = f"| `{name}` | {spec.order} | {shown}{' (host-side steps)' if spec.host_sync else ''} |"
    assert row in page()


@pytest.mark.parametrize("name", NAMES)
def test_from_infinity_the_first_step_costs_one_call(name):
    # what docs/samplers.md says: from σ = inf, k − 1 fewer calls than to σ = 0 (none fewer with a rule of its own)
    to_zero = rules(name)[1]
    if to_zero is None:
        pytest.skip("adaptive")
    spec = samplers.info(name)
    fewer = 0 if spec.from_infinity else spec.nfe_per_step - 1
    for steps in (6, 9, 20):
        sig = rule_sigmas(steps, True).clone()
        sig[0] = math.inf
        assert count_nfe(name, sig) == to_zero.calls(steps) - fewer


def test_adaptive_samplers_are_shown_as_such():
    for name in ("dpm_adaptive", "torchdiffeq.dopri5", "torchdiffeq.fixed_adams"):
        assert f"| `{name}` | {samplers.info(name).order} | adaptive: set by the model" in page()

"""The committed benchmark tables are generated: each docs/benchmarks/<name>/table.md is what its benchmark's
``report`` writes from the results.json beside it, and no benchmark writes under docs/ unless --out says so."""
from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
# folder → the benchmark whose run wrote it (python -m <module> --out docs/benchmarks/<folder>)
GENERATED_BY = {
    "deterministic": "benchmarks.deterministic",
    "stochastic": "benchmarks.stochastic",
    "quality_cpu": "benchmarks.quality",
    "quality_cpu_all": "benchmarks.quality",
    "schedules_cpu": "benchmarks.quality",
    "vae": "benchmarks.vae_roundtrip",
    "speed_cpu": "benchmarks.speed",
    "fit_heldout": "benchmarks.fit_heldout",
    "fit_heldout_mixtures": "benchmarks.fit_heldout",
    "fit_heldout_mixtures-2": "benchmarks.fit_heldout",
    "fit_heldout_mixtures-3": "benchmarks.fit_heldout",
    "fit_heldout_mixtures-4": "benchmarks.fit_heldout",
    "fit_heldout_mixtures-5": "benchmarks.fit_heldout",
    "fit_bound": "benchmarks.fit_bound",
    "compat_exact": "benchmarks.compatibility",  # python -m benchmarks.compatibility --exact --out ...
    # the fitted solvers' evidence (docs/fitted.md has their commands)
    "fitted/mixtures": "benchmarks.deterministic",
    "fitted/mixtures-2": "benchmarks.deterministic",
    "fitted/mixtures-3": "benchmarks.deterministic",
    "fitted/mixtures-4": "benchmarks.deterministic",
    "fitted/mixtures-5": "benchmarks.deterministic",
    "fitted/eps-quality": "benchmarks.quality",
    "fitted/flow-quality": "benchmarks.quality",
}
RESULTS = sorted(p.parent.relative_to(DOCS).as_posix() for p in [*DOCS.glob("*/results.json"),
                                                                   *DOCS.glob("fitted/*/results.json")])


def test_every_committed_result_has_its_generator():
    assert set(RESULTS) == set(GENERATED_BY), "add the new folder to GENERATED_BY (and to docs/benchmarks/README.md)"
    readme = (DOCS / "README.md").read_text() + (ROOT / "docs" / "fitted.md").read_text()
    for folder, module in GENERATED_BY.items():
        assert f"--out docs/benchmarks/{folder}" in readme, (f"docs/benchmarks/README.md (or docs/fitted.md): no "
                                                             f"command writes {folder}")


@pytest.mark.parametrize("folder", RESULTS)
def test_committed_table_is_generated_from_its_results(folder):
    module = importlib.import_module(GENERATED_BY[folder])
    if not hasattr(module, "report"):
        pytest.skip(f"{module.__name__} has no report(results.json) yet")
    expected = module.report(DOCS / folder / "results.json", write=False)
    committed = (DOCS / folder / "table.md").read_text()
    assert committed == expected, (f"docs/benchmarks/{folder}/table.md is not what its results.json generates: "
                                   f"python -m {module.__name__} --report docs/benchmarks/{folder}/results.json")


@pytest.mark.parametrize("module", sorted(set(GENERATED_BY.values())))
def test_default_output_is_untracked(module):
    """A benchmark run without --out writes under out/ (ignored by git), never over the committed docs."""
    mod = importlib.import_module(module)
    parser = mod.parser() if hasattr(mod, "parser") else None
    if parser is None:
        pytest.skip(f"{module} builds its parser inside main")
    assert parser.parse_args([]).out.parts[0] == "out"
    assert (ROOT / ".gitignore").read_text().count("/out/") == 1


# the tables whose benchmark does not end them with the command yet (strict: the mark goes once one does)
NO_FOOTER_YET: set = set()


def _footer_command(folder: str) -> str:
    last = [line for line in (DOCS / folder / "table.md").read_text().splitlines() if line.strip()][-1]
    found = re.findall(r"`(python -m [^`]+)`", last)
    assert found, f"docs/benchmarks/{folder}/table.md does not end with the command that wrote it: {last!r}"
    return found[-1]


@pytest.mark.parametrize("folder", [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason="no footer yet"))
                                    if f in NO_FOOTER_YET else f for f in RESULTS])
def test_committed_table_ends_with_its_command(folder):
    """Every table's last line names the command that wrote it (the benchmark's own module): the one its run
    recorded, or, for a run that recorded none, one rebuilt from its arguments, which the benchmark parses back to
    the arguments its results.json records (the options left out are the ones the run left at their defaults, or
    at what it resolved them to: ``resolved_defaults``)."""
    command = _footer_command(folder)
    module = importlib.import_module(GENERATED_BY[folder])
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", module.__name__]
    result = json.loads((DOCS / folder / "results.json").read_text())
    if result.get("command"):
        assert command == result["command"]
        return
    parser = module.parser()
    parsed = vars(parser.parse_args(words[3:]))
    resolved = module.resolved_defaults(result) if hasattr(module, "resolved_defaults") else {}
    defaults = vars(parser.parse_args([]))
    plain = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    for key, recorded in result.get("args", {}).items():
        if key not in parsed:
            continue  # a value the run derived (grid_dir), not an option
        value = parsed[key]
        if key in resolved and plain(value) == plain(defaults[key]):
            value = resolved[key]
        assert plain(value) == plain(recorded), (f"docs/benchmarks/{folder}: the footer's command gives {key} = "
                                                 f"{value!r}, the run recorded {recorded!r}")

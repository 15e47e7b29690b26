"""The generated docs match the code, and the layers import only downward."""
from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app import docs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page", sorted(docs.PAGES))
def test_generated_docs_are_current(page):
    committed = (ROOT / "docs" / page).read_text()
    assert committed == docs.PAGES[page](), f"docs/{page} is stale: run `python -m app.docs --out docs`"


def test_readme_figures_are_current():
    readme = (ROOT / "README.md").read_text()
    assert readme == docs.readme_with_figures(readme), \
        "README's generated figures are stale: run `python -m app.docs --out docs --readme README.md`"


def test_fitted_figures_are_current():
    page = (ROOT / "docs" / "fitted.md").read_text()
    assert page == docs.with_figures(page, docs.FITTED_FIGURES), \
        "docs/fitted.md's tables are stale: run `python -m app.docs --out docs`"
    assert "not measured yet" not in page


def test_headline_names_what_the_registry_gained_since_its_run():
    # the README's table claims every (sampler, schedule) pair of the registry: a schedule or sampler added after
    # the committed run is named, not silently claimed as compared
    import samplers

    scheds = samplers.schedules.available()
    names = samplers.available("ode")
    full = {"args": {"samplers": None, "schedules": None}, "samplers": names[1:], "skipped_samplers": {names[0]: "x"},
            "schedules": {"p": scheds[2:]}, "skipped_schedules": {"p": {scheds[1]: "x"}, "q": {}}}
    assert docs.added_since(full) == [scheds[0]]
    assert docs.added_since({**full, "schedules": {"p": scheds[2:], "q": [scheds[0]]}}) == []
    assert docs.added_since({**full, "samplers": names[2:]}) == [names[1], scheds[0]]
    # a run of named samplers or schedules never claimed the whole registry
    assert docs.added_since({**full, "args": {"samplers": None, "schedules": ["karras"]}}) == []


def test_diffusers_figures_are_current():
    # the exact=True table of docs/diffusers.md is what the committed `benchmarks.compatibility --exact` run gives
    page = (ROOT / "docs" / "diffusers.md").read_text()
    assert not docs.missing_figures(page, docs.DIFFUSERS_FIGURES)
    assert page == docs.with_figures(page, docs.DIFFUSERS_FIGURES), \
        "docs/diffusers.md's exact=True table is stale: run `python -m app.docs --out docs`"
    assert "not measured yet" not in page


ALL_FIGURES = {**docs.README_FIGURES, **docs.FITTED_FIGURES, **docs.DIFFUSERS_FIGURES}


@pytest.mark.parametrize("name", sorted(ALL_FIGURES))
def test_generated_figures_have_no_unfilled_placeholders(name):
    # a string piece of a generated paragraph that lost its f prefix prints "{info['cpu_count']}" as is
    text = ALL_FIGURES[name]()
    assert not re.search(r"\{[A-Za-z_][\w.]*(\[[^\]]*\])*(:[^}]*)?\}", text), text


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    """A Markdown page without its fenced code blocks (a shell comment is not a heading, `a](b)` in code no link)."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


@functools.cache  # a page linked many times is read and parsed once
def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _prose(page), flags=re.M)}


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                       for p in (ROOT / "docs").rglob("*.md"))])
def test_doc_links_resolve(page):
    """Every relative link of the README and every Markdown page under docs/ (the generated tables too) names a file
    that exists, and a #section of a Markdown page names one of its headings."""
    src = ROOT / page
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", _prose(src)):
        if "://" in link or link.startswith("mailto:"):
            continue
        path, _, anchor = link.partition("#")
        target = (src.parent / path).resolve() if path else src
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(link)
    assert not broken, f"{page}: links that lead nowhere: {broken}"


def test_cited_test_files_exist():
    """Every tests/NAME.py that the code, the tests or the docs cite exists (heunpp2's docstring cited a
    tests/test_singlestep.py there never was: its order is measured in tests/test_multistep.py)."""
    sources = [p for d in ("samplers", "models", "app", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")
               if p != Path(__file__).resolve()]  # this file names a missing one on purpose
    sources += [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    missing = sorted({(p.relative_to(ROOT).as_posix(), cited) for p in sources
                      for cited in re.findall(r"tests/\w+\.py", p.read_text()) if not (ROOT / cited).exists()})
    assert not missing, f"(citing file, cited test file that does not exist): {missing}"


def test_a_sampler_said_to_be_registered_under_a_name_is_what_that_name_runs():
    """A sampler docstring's "registered as ``NAME``" is true: NAME runs that sampler and binds no options (lms's said so
    of ipndm_v, which runs ipndm with variable_steps=True and final_denoise=True)."""
    import samplers
    from samplers.core.names import resolve

    wrong = []
    for name in samplers.available():
        for alias in re.findall(r"registered\s+as\s+``(\w+)``", samplers.info(name).fn.__doc__ or ""):
            label = resolve(alias)
            if (label.sampler, label.options) != (name, {}):
                wrong.append((name, alias, label.sampler, label.options))
    assert not wrong, f"(sampler, name its docstring says it is registered as, what that name runs): {wrong}"

@pytest.mark.parametrize("package, sentence", [
    ("torchdiffeq", r"Every method of torchdiffeq \(`torchdiffeq\._impl\.odeint\.SOLVERS`\)(?: but `(\w+)`)?"),
    ("torchsde", r"Every torchsde method(?: but `(\w+)`)?"),
])
def test_guide_names_every_method_of_a_library_that_is_not_a_registry_sampler(package, sentence):
    """guide.md's "Every method of <library> but `X` is a registry sampler" names exactly the methods that are not
    registered (it said every torchdiffeq method is one, and later on the page that scipy_solver is not)."""
    import samplers

    pytest.importorskip(package)
    if package == "torchdiffeq":
        from torchdiffeq._impl.odeint import SOLVERS as methods
    else:
        from torchsde.settings import METHODS
        methods = [k for k in vars(METHODS) if not k.startswith("_")]  # the names (log_ode_midpoint: "log_ode")
    match = re.search(sentence, " ".join((ROOT / "docs" / "guide.md").read_text().split()))
    assert match, f"guide.md no longer says {sentence!r}"
    registered = {n.split(".", 1)[1] for n in samplers.available() if n.startswith(f"{package}.")}
    assert set(methods) - registered == ({match.group(1)} if match.group(1) else set())


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports (absolute imports, anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


# Each layer may import only the layers below it: samplers <- models <- benchmarks / app.
FORBIDDEN = {"samplers": {"models", "benchmarks", "app"}, "models": {"benchmarks", "app"}, "benchmarks": {"app"}}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_only_import_downward(package):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
           for p in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_import_samplers_stays_light():
    code = ("import sys, samplers\n"
            "samplers.available(); samplers.schedules.available(); samplers.get_sigmas('karras', 4, sigma_min=0.1, sigma_max=10.0)\n"
            "heavy = ('scipy', 'torchdiffeq', 'torchsde', 'diffusers', 'samplers.fitted.fit', "
            "'samplers.schedules.optimise', 'models', 'benchmarks')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", out


def test_the_registry_does_not_depend_on_import_order():
    code = ("from samplers.core import registry\n"  # no sampler module imported by hand
            "print(len(registry.SAMPLERS.names()), registry.info('euler').name, registry.get('DPM++ 2M').__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    import samplers

    assert out.split() == [str(len(samplers.available())), "euler", "dpmpp_2m"]
    # and the order of the names is the same whichever sampler module a caller imports first
    first = ("import samplers.sde.solvers, samplers.fitted.solver, samplers\n"
             "print(' '.join(samplers.available()))")
    order = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert order.split() == samplers.available()


def test_fitted_run_it_by_name_example_runs(tmp_path, monkeypatch):
    """docs/fitted.md's "Run it by name" block, on the committed eps solver at 8 NFE copied where the block reads
    `samplers fit`'s output (out/fit/nfe8.json): it used names it never defined."""
    import shutil

    page = (ROOT / "docs" / "fitted.md").read_text()
    block = page.split("## Run it by name", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "out" / "fit").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "benchmarks" / "fitted" / "eps" / "nfe8.json", tmp_path / "out" / "fit" / "nfe8.json")
    monkeypatch.chdir(tmp_path)
    from samplers.fitted import solver

    monkeypatch.setattr(solver, "_NAMED", dict(solver._NAMED))  # the block registers "eps8": not for later tests
    namespace = {"__name__": "fitted_example"}
    exec(compile(block, "docs/fitted.md", "exec"), namespace)
    assert namespace["x0"].shape == (1, 4, 8, 8) and len(namespace["images"]) == 1


def _docs_refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        docs.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("case", ["missing", "folder", "no-markers", "one-marker"])
def test_docs_readme_is_checked_before_any_page_is_written(tmp_path, capsys, case):
    """`python -m app.docs --readme X` wrote the three pages, then failed on X with a traceback (FileNotFoundError,
    IsADirectoryError, `ValueError: substring not found` where X lacks the figures' markers): X is now checked
    first, and a bad one is a one-line usage error naming it, with nothing written."""
    readme = {"missing": tmp_path / "none.md", "folder": tmp_path}[case] if case in ("missing", "folder") \
        else tmp_path / "R.md"
    if case == "no-markers":
        readme.write_text("# a README without the figures\n")
    if case == "one-marker":  # the headline block only: speed's is missing
        readme.write_text("<!-- figures:headline -->\nold\n<!-- /figures:headline -->\n")
    out = tmp_path / "docs"
    line = _docs_refused(["--out", str(out), "--readme", str(readme)], capsys)
    assert "--readme" in line and str(readme) in line
    assert {"missing": "does not exist", "folder": "not a file", "no-markers": "figures:headline",
            "one-marker": "figures:speed"}[case] in line
    assert not out.exists()


def test_docs_out_is_checked_and_given_once(tmp_path, capsys):
    """`--out FILE` was a FileExistsError traceback, `--out ''` wrote into the current folder, and `--out A --out B`
    wrote into B without a word: each is a usage error now."""
    afile = tmp_path / "f"
    afile.write_text("")
    assert "is a file" in _docs_refused(["--out", str(afile)], capsys)
    assert "empty path" in _docs_refused(["--out", ""], capsys)
    line = _docs_refused(["--out", str(tmp_path / "a"), "--out", str(tmp_path / "b")], capsys)
    assert "given twice" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

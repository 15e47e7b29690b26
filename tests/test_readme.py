"""The README's Python examples run as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run():
    blocks = python_blocks()
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})


def test_readme_counts_the_registry():
    import samplers

    counted = re.search(r"(\d+) in all", README.read_text())
    assert counted and int(counted.group(1)) == len(samplers.available()), (
        f"README says {counted and counted.group(1)} samplers, the registry has {len(samplers.available())}")

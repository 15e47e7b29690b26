"""The built-in samplers load once, whole, whatever the threads: a server's first requests arrive together."""
import subprocess
import sys
import textwrap

import pytest

RACE = textwrap.dedent("""
    import threading
    import samplers
    names = ["euler", "dpmpp_2m", "dpmpp_2m_sde", "karras"]
    bar = threading.Barrier(len(names)); out = {}
    def go(name):
        bar.wait()
        try:
            (samplers.schedules.get if name == "karras" else samplers.info)(name); out[name] = "ok"
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"
    ts = [threading.Thread(target=go, args=(n,)) for n in names]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(sorted(set(out.values())), len(samplers.available()))
""")

INTERRUPTED = textwrap.dedent("""
    import importlib
    import samplers
    from samplers.core import registry
    real = importlib.import_module
    def flaky(name, *a, **k):
        if name == "samplers.ode.multistep":
            raise KeyboardInterrupt
        return real(name, *a, **k)
    importlib.import_module = flaky
    try:
        samplers.available()
    except KeyboardInterrupt:
        pass
    importlib.import_module = real
    for lookup in (samplers.available, lambda: samplers.info("dpmpp_2m")):
        try:
            lookup(); print("found")
        except samplers.SamplersError as e:
            print(type(e).__name__, e)
""")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("attempt", range(3))
def test_first_lookups_from_several_threads_at_once_all_find_their_names(attempt):
    """Each thread's first lookup waits for the whole load (the second thread found 0 or 13 of 68 names)."""
    found, count = _run(RACE).rsplit(" ", 1)
    assert found == "['ok']" and int(count) >= 60


def test_an_interrupted_load_is_named_by_every_later_lookup():
    """Interrupted part-way, the registries hold some names: a later lookup refuses, naming what stopped the load,
    instead of 'unknown sampler' for a name that exists."""
    lines = _run(INTERRUPTED).splitlines()
    assert len(lines) == 2 and all(line.startswith("Unavailable") for line in lines), lines
    assert "samplers.ode.multistep raised KeyboardInterrupt" in lines[1] and "new Python process" in lines[1]

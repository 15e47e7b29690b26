"""The registry's rules for a user's names: the built-ins, which the A1111 / ComfyUI / diffusers labels and the
k-diffusion drop-in run, are never replaced; replace=True replaces only the entry registered under the name given,
and a refused registration changes nothing; lookups in other threads never see a change half-made; and a schedule's
result is checked against the schedule contract."""
from __future__ import annotations

import functools
import itertools
import json
import operator
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import samplers
import samplers.schedules as schedules
from samplers.core import registry
from samplers.core.native import VPDiscrete
from samplers.interop import kdiffusion
from samplers.problems import GaussianMixture

GM = GaussianMixture.default(shape=(2, 2, 2), components=3, seed=4)
SIG = samplers.get_sigmas("karras", 5, sigma_min=0.1, sigma_max=10.0)
X = GM.noise(2, seed=0, dtype=torch.float32) * 10
SD = VPDiscrete.from_betas()


def user_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return x * 0  # recognisably not any built-in's result


def user_schedule(n, sigma_min, sigma_max):
    return torch.linspace(sigma_max, sigma_min, n, dtype=torch.float64).tolist() + [0.0]


def user_tensor_schedule(n, sigma_min, sigma_max):
    return torch.tensor(user_schedule(n, sigma_min, sigma_max), dtype=torch.float64)


@pytest.fixture
def cleanup():
    """Removes the user names a test registers (the registries are the process's)."""
    made: list[tuple[registry.Registry, str]] = []
    yield made
    for table, name in made:
        if name in table:
            table.remove(name)


def _sampler(name, **kw):
    return registry.register(name, kind="ode", order=1, nfe_per_step=1, **kw)(user_sampler)


def _runs(label, sigmas=SIG):
    return samplers.sample(label, GM.denoiser, X, sigmas, disable=True, seed=1)


# ------------------------------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", ["euler", "EULER", "euler_a", "Euler a"])
def test_a_builtin_sampler_name_or_alias_is_never_replaced(name):
    """replace=True on 'euler' made comfyui:euler and the diffusers shim's EulerDiscreteScheduler run the user's
    function, and A1111's 'Euler' fail with "euler has no option 'noise_sampler'"; on the alias 'euler_a' it deleted
    euler_ancestral with all its aliases ("Euler a": unknown sampler)."""
    before = {label: _runs(label) for label in ("comfyui:euler", "Euler", "Euler a")}
    with pytest.raises(samplers.InvalidInput, match=r"built-in sampler '(euler|euler_ancestral)'.*another name"):
        _sampler(name, replace=True)
    for label, result in before.items():
        assert torch.equal(_runs(label), result), label
    assert samplers.info("euler").fn.__module__ == "samplers.ode.basic"
    assert torch.equal(kdiffusion.sample_euler(GM.denoiser, X, SIG, disable=True), before["comfyui:euler"])


def test_a_builtin_name_taken_without_replace_says_replace_would_not_do():
    with pytest.raises(samplers.InvalidInput, match="already registered, for the built-in") as caught:
        _sampler("dpmpp_2m")
    assert "pass replace=True" not in str(caught.value)


def test_a_user_alias_may_not_be_a_builtins_name(cleanup):
    with pytest.raises(samplers.InvalidInput, match="built-in sampler 'heun'"):
        _sampler("zz_reg_mine", aliases=("heun",), replace=True)
    assert "zz_reg_mine" not in registry.SAMPLERS


@pytest.mark.parametrize("name", ["karras", "Karras", "exponential"])
def test_a_builtin_schedule_is_never_replaced(name):
    """Replacing 'karras' made comfyui:karras and A1111's 'Karras' return the user's ramp."""
    before = {label: samplers.get_sigmas(label, 4, native=SD) for label in ("comfyui:karras", "Karras", "exponential")}
    with pytest.raises(samplers.InvalidInput, match=r"built-in schedule '(karras|exponential)'.*another name"):
        schedules.register(name, replace=True)(user_tensor_schedule)
    for label, sigmas in before.items():
        assert torch.equal(samplers.get_sigmas(label, 4, native=SD), sigmas), label
    assert torch.equal(kdiffusion.get_sigmas_karras(4, 0.1, 10.0, device="cpu"),
                       samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0).float())


def test_builtins_cannot_be_removed():
    for table, name in ((registry.SAMPLERS, "Euler a"), (schedules.SCHEDULES, "karras")):
        with pytest.raises(samplers.InvalidInput, match="cannot be removed"):
            table.remove(name)
        assert name in table


# ------------------------------------------------------------------------------------- a user's own entries


def test_replace_replaces_a_users_own_sampler_and_schedule(cleanup):
    cleanup += [(registry.SAMPLERS, "zz_reg_own"), (schedules.SCHEDULES, "zz_reg_own")]
    _sampler("zz_reg_own", aliases=("zz reg old alias",))
    registry.register("zz_reg_own", kind="sde", order=1, nfe_per_step=1, replace=True)(user_sampler)
    assert samplers.info("zz_reg_own").kind == "sde" and "zz reg old alias" not in registry.SAMPLERS
    schedules.register("zz_reg_own", needs_table=True)(lambda n, sigma_min, sigma_max, training_sigmas=None: None)
    schedules.register("zz_reg_own", replace=True)(user_tensor_schedule)
    assert "zz_reg_own" not in schedules.TABLE_SCHEDULES
    assert samplers.get_sigmas("zz_reg_own", 2, sigma_min=1.0, sigma_max=3.0).tolist() == [3.0, 1.0, 0.0]


def test_replace_by_an_alias_of_a_users_entry_is_refused(cleanup):
    """register('euler_a', replace=True) deleted the entry euler_ancestral that the alias belongs to, with all its
    names; so did an alias of a user's entry."""
    cleanup.append((registry.SAMPLERS, "zz_reg_base"))
    _sampler("zz_reg_base", aliases=("zz_reg_alias", "ZZ Reg Label"))
    with pytest.raises(samplers.InvalidInput, match="'zz_reg_alias' is an alias of 'zz_reg_base'"):
        _sampler("zz_reg_alias", replace=True)
    assert registry.SAMPLERS.canonical("ZZ Reg Label") == "zz_reg_base"


def test_a_refused_replace_leaves_the_entry_it_would_have_replaced(cleanup):
    """The old entry was removed before the new keys were checked: a refused replace lost 'myname'."""
    cleanup += [(registry.SAMPLERS, "zz_reg_keep"), (registry.SAMPLERS, "zz_reg_other"),
                (schedules.SCHEDULES, "zz_reg_keep"), (schedules.SCHEDULES, "zz_reg_other")]
    original = _sampler("zz_reg_keep", aliases=("zz reg keep alias",))
    _sampler("zz_reg_other")
    for alias in ("heun", "zz_reg_other"):
        with pytest.raises(samplers.InvalidInput, match="already registered"):
            _sampler("zz_reg_keep", aliases=(alias,), replace=True)
        assert samplers.get("zz reg keep alias") is original
    table_fn = schedules.register("zz_reg_keep", needs_table=True)(
        lambda n, sigma_min, sigma_max, training_sigmas=None: None)
    schedules.register("zz_reg_other")(user_tensor_schedule)
    for alias in ("karras", "zz_reg_other"):
        with pytest.raises(samplers.InvalidInput, match="already registered"):
            schedules.register("zz_reg_keep", aliases=(alias,), replace=True)(user_tensor_schedule)
        assert schedules.get("zz_reg_keep") is table_fn and "zz_reg_keep" in schedules.TABLE_SCHEDULES


def test_aliases_must_be_a_tuple_of_names():
    with pytest.raises(samplers.InvalidType, match=r"collection of names.*each of its characters.*\(name,\)"):
        _sampler("zz_reg_chars", aliases="zz reg chars")
    with pytest.raises(samplers.InvalidInput, match="non-empty string"):
        schedules.register("zz_reg_chars", aliases=("ok", 3))(user_tensor_schedule)
    assert "zz_reg_chars" not in registry.SAMPLERS and "zz_reg_chars" not in schedules.SCHEDULES


# ------------------------------------------------------------------------------------------------- threads


def test_lookups_never_see_a_change_half_made():
    """One thread re-registering (replace=True) a user's name and adding new ones while others looked names up gave
    'unknown sampler', a bare KeyError and 'dictionary changed size during iteration'."""
    samplers.available()
    _sampler("zz_reg_busy", aliases=("zz reg busy alias",))
    errors: list[str] = []
    stop = threading.Event()

    def write():
        try:
            for i in range(300):
                registry.register("zz_reg_busy", kind="ode", order=1, nfe_per_step=1, aliases=("zz reg busy alias",),
                                  replace=True)(user_sampler)
                schedules.register(f"zz_reg_new_{i}", aliases=(f"zz reg new alias {i}",))(user_tensor_schedule)
                _sampler(f"zz_reg_new_{i}")  # after the schedule: a reader that finds it looks both up
        finally:
            stop.set()

    def read():
        i = 0
        while not stop.is_set():
            try:
                samplers.info("zz reg busy alias")
                samplers.get("ZZ_REG_BUSY")
                samplers.available()
                if f"zz_reg_new_{i}" in registry.SAMPLERS:
                    registry.SAMPLERS.get(f"zz_reg_new_{i}")
                    schedules.get(f"zz reg new alias {i}")
                    i += 1
                schedules.available()
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{type(e).__name__}: {e}")
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    start = time.monotonic()
    try:
        threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
        [t.start() for t in threads]
        [t.join(timeout=5) for t in threads]
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        for name in ["zz_reg_busy"] + [f"zz_reg_new_{i}" for i in range(300)]:
            for table in (registry.SAMPLERS, schedules.SCHEDULES):
                if name in table:
                    table.remove(name)
    assert errors == [] and not any(t.is_alive() for t in threads) and time.monotonic() - start < 10
    assert samplers.info("euler").fn.__module__ == "samplers.ode.basic"


# ----------------------------------------------------------------------------------------- schedule results


@pytest.mark.parametrize("returned, what", [
    (lambda n: [3.0, 1.0, 0.0], r"a list \(\[3.0, 1.0, 0.0\]\)"),
    (lambda n: torch.tensor([3.0, 1.0, 0.0]), "a 1-D float32 tensor on cpu"),
    (lambda n: torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64), "a 2-D float64 tensor"),
    (lambda n: None, r"a NoneType \(None\)"),
])
def test_a_schedule_that_returns_no_float64_tensor_is_refused_by_name(cleanup, returned, what):
    """A user schedule returning a list made get_sigmas hand the list on (a raw AttributeError where it was read)."""
    cleanup.append((schedules.SCHEDULES, "zz_reg_list"))
    schedules.register("zz_reg_list")(lambda n, sigma_min, sigma_max: returned(n))
    with pytest.raises(samplers.InvalidType, match=rf"schedule 'zz_reg_list' returned {what}.*1-D torch float64"):
        samplers.get_sigmas("zz_reg_list", 2, sigma_min=1.0, sigma_max=3.0)


@pytest.mark.parametrize("name, owner", [("k_euler", "A1111's label 'k_euler'"),
                                         ("DPM++ 2M Karras", "A1111's label 'DPM++ 2M Karras'"),
                                         ("dpm++ 2m karras", "A1111's label 'DPM++ 2M Karras'"),
                                         ("EulerDiscreteScheduler", "diffusers' class 'EulerDiscreteScheduler'"),
                                         ("dpmpp_2m_sde_gpu", "ComfyUI's name 'dpmpp_2m_sde_gpu'"),
                                         ("ddim_uniform", "A1111's label 'ddim_uniform'")])
def test_a_users_sampler_may_not_take_another_tools_name(name, owner, cleanup):
    """A name is looked up in the registry first: a user's sampler registered as 'k_euler' or 'DPM++ 2M Karras' ran
    wherever that label was typed without its prefix (the pipeline, the CLI, an infotext's sampler)."""
    def resolved(name):  # what the name stands for, or the tool's own refusal of it (A1111's 'DDIM' + 'Uniform')
        try:
            return samplers.core.names.resolve(name)
        except samplers.InvalidInput as err:
            return str(err)

    before = resolved(name)
    with pytest.raises(samplers.InvalidInput, match=re.escape(f"sampler name {name!r} is {owner}") + ".*another name"):
        _sampler(name)
    with pytest.raises(samplers.InvalidInput, match=re.escape(f"is {owner}")):
        _sampler("zz_mine", aliases=(name,))
    assert "zz_mine" not in registry.SAMPLERS and resolved(name) == before


# ------------------------------------------------------------ built-in is how an entry was registered, not its code


def _library_made_entries():
    """A user's entries whose functions are the library's: a built-in schedule function under a new name, a sampler
    made by make_rk_sampler, a built-in sampler's implementation, and a functools.wraps of one."""
    from samplers.ode.runge_kutta import TABLEAUS, make_rk_sampler
    from samplers.schedules.sigma import karras

    heun = samplers.get("heun").implementation

    @functools.wraps(heun)
    def wrapped(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        return heun(model, x, sigmas, extra_args, callback, disable, **options)

    return karras, {"zz_reg_rk": lambda: make_rk_sampler(TABLEAUS["kutta3"]), "zz_reg_impl": lambda: heun,
                    "zz_reg_wraps": lambda: wrapped}


def test_a_users_entry_made_from_a_library_function_is_the_users(cleanup):
    """Built-in-ness was read from the function's __module__: a user's 'my_karras' (samplers.schedules.sigma.karras)
    or sampler from make_rk_sampler could not be removed or replaced ("the built-in sampler 'my_rk'"), as it could
    before, and was listed among the built-ins."""
    karras, made = _library_made_entries()
    cleanup += [(schedules.SCHEDULES, "zz_reg_karras")] + [(registry.SAMPLERS, name) for name in made]
    schedules.register("zz_reg_karras")(karras)
    schedules.register("zz_reg_karras", needs_table=False, replace=True)(karras)
    assert schedules.available()[-1] == "zz_reg_karras"
    assert torch.equal(samplers.get_sigmas("zz_reg_karras", 4, native=SD), samplers.get_sigmas("karras", 4, native=SD))
    assert schedules.SCHEDULES.remove("zz_reg_karras") is karras and "zz_reg_karras" not in schedules.SCHEDULES
    for name, make in made.items():
        registry.register(name, kind="ode", order=2, nfe_per_step=2)(make())
        registry.register(name, kind="ode", order=2, nfe_per_step=2, replace=True)(make())
    assert samplers.available()[-len(made):] == list(made)
    for name in made:
        registry.SAMPLERS.remove(name)
        assert name not in registry.SAMPLERS


def test_a_library_function_may_not_take_another_tools_name(cleanup):
    """The tool-label guard was skipped for a function from a built-in module: register('k_euler', ...) with heun's
    implementation was accepted, and 'k_euler' then ran heun."""
    _, made = _library_made_entries()
    cleanup += [(registry.SAMPLERS, "k_euler")]
    before = samplers.core.names.resolve("k_euler")
    for make in made.values():
        with pytest.raises(samplers.InvalidInput, match=re.escape("sampler name 'k_euler' is A1111's label")):
            registry.register("k_euler", kind="ode", order=2, nfe_per_step=2)(make())
    assert "k_euler" not in registry.SAMPLERS and samplers.core.names.resolve("k_euler") == before


def _fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` run in a fresh Python process (no registry loaded yet), from the project's root."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_library_function_registered_before_any_lookup_loads_the_builtins_first():
    """Registered before any lookup, a sampler from make_rk_sampler skipped the built-in load (it counted as one):
    under the name of a built-in not yet imported it took that name, and the load then failed on the built-in's."""
    code = ("import samplers\n"
            "from samplers.core import registry\n"
            "from samplers.ode.runge_kutta import TABLEAUS, make_rk_sampler\n"
            "kutta3 = lambda: make_rk_sampler(TABLEAUS['kutta3'])\n"
            "try:\n"
            "    registry.register('dpmpp_2m', kind='ode', order=3, nfe_per_step=3)(kutta3())\n"
            "except samplers.InvalidInput as err:\n"
            "    print('refused', 'built-in sampler' in str(err))\n"
            "print(registry._LOADED, registry._FAILED, samplers.info('dpmpp_2m').fn.__module__)\n"
            "registry.register('zz_reg_early', kind='ode', order=3, nfe_per_step=3)(kutta3())\n"
            "registry.SAMPLERS.remove('zz_reg_early')\n"
            "print(samplers.schedules.SCHEDULES.names() == samplers.schedules.available())\n")
    out = _fresh(code)
    assert out.stdout.split() == ["refused", "True", "True", "None", "samplers.ode.multistep", "True"], out.stderr


def test_builtins_registered_at_import_samplers_are_builtins():
    """The schedules register as `import samplers` imports their modules, before the built-in load: they are the
    built-ins all the same, and listed first in the order of BUILTIN_MODULES."""
    code = ("import samplers\n"
            "from samplers.core import registry\n"
            "from samplers.schedules.base import SCHEDULES\n"
            "print(registry._LOADED)\n"
            "for name in ('karras', 'trailing', 'flow', 'ays_sd15'):\n"
            "    try:\n"
            "        SCHEDULES.remove(name)\n"
            "    except samplers.InvalidInput as err:\n"
            "        print('cannot be removed' in str(err))\n"
            "print(' '.join(samplers.schedules.available()))\n")
    out = _fresh(code)
    assert out.stdout.split()[:5] == ["False", "True", "True", "True", "True"], out.stderr
    assert out.stdout.split()[5:] == schedules.available()


# ------------------------------------------------------------------------------------------ a schedule's kind


def test_a_schedules_kind_changes_with_it_for_every_reader():
    """schedules.register swapped the new function in and then changed the kind tables: get_sigmas in another thread
    found the new function with the old kind (a table schedule called without its table, a range schedule handed
    one): ~1600 failures in 20000 lookups while one name was replaced back and forth."""
    def tab(n, sigma_min, sigma_max, training_sigmas=None):
        assert training_sigmas is not None, "a table schedule called without its table"
        return torch.cat([training_sigmas.flip(0)[:n].double(), torch.zeros(1, dtype=torch.float64)])

    def ranged(n, sigma_min, sigma_max):
        return torch.cat([torch.linspace(sigma_max, sigma_min, n, dtype=torch.float64),
                          torch.zeros(1, dtype=torch.float64)])

    schedules.register("zz_reg_racy", needs_table=True)(tab)
    errors: list[str] = []
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            schedules.register("zz_reg_racy", needs_table=i % 2 == 0, replace=True)(tab if i % 2 == 0 else ranged)
            schedules.register(f"zz_reg_racy_{i}", needs_table=True)(tab)  # a new name: visible with its kind
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(4000):
            for name in ("zz_reg_racy", f"zz_reg_racy_{i}"):
                try:
                    if name in schedules.SCHEDULES:
                        samplers.get_sigmas(name, 4, native=SD)
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    errors.append(f"{type(e).__name__}: {e}")
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
        for name in [n for n in schedules.SCHEDULES.names() if n.startswith("zz_reg_racy")]:
            schedules.SCHEDULES.remove(name)
    assert errors == [], f"{len(errors)} failures, first: {errors[0]}"


def test_a_lookup_right_after_the_swap_finds_the_new_kind(monkeypatch):
    """The same window without threads: a lookup made the moment the registry's tables are swapped (here from inside
    Registry.add, as a reader thread could) found the replaced schedule's function with its old kind."""
    def tab(n, sigma_min, sigma_max, training_sigmas=None):
        assert training_sigmas is not None, "a table schedule called without its table"
        return torch.cat([training_sigmas.flip(0)[:n].double(), torch.zeros(1, dtype=torch.float64)])

    seen = []
    add = schedules.SCHEDULES.add

    def add_then_look(name, *args, **kwargs):
        old = add(name, *args, **kwargs)
        seen.append(samplers.get_sigmas(name, 2, native=SD).tolist())
        return old

    monkeypatch.setattr(schedules.SCHEDULES, "add", add_then_look)
    try:
        schedules.register("zz_reg_swap")(user_tensor_schedule)
        schedules.register("zz_reg_swap", needs_table=True, replace=True)(tab)
        schedules.register("zz_reg_swap", replace=True)(user_tensor_schedule)
    finally:
        monkeypatch.undo()
        if "zz_reg_swap" in schedules.SCHEDULES:
            schedules.SCHEDULES.remove("zz_reg_swap")
    ranged = [float(SD.sigma_max), float(SD.sigma_min), 0.0]
    assert seen == [ranged, [float(SD.sigmas[-1]), float(SD.sigmas[-2]), 0.0], ranged]


def test_the_kind_tables_read_the_registry():
    """TABLE_SCHEDULES and the others are the kinds of what is registered now: a replaced or removed name's kind goes
    with it."""
    from samplers.schedules import base

    def tab(n, sigma_min, sigma_max, training_sigmas=None, table_axis=None):
        return torch.cat([training_sigmas.flip(0)[:n].double(), torch.zeros(1, dtype=torch.float64)])

    assert {"trailing", "simple"} <= base.TABLE_SCHEDULES and "karras" not in base.TABLE_SCHEDULES
    assert "simple" in base.FLOW_TABLE_SCHEDULES and "trailing" not in base.FLOW_TABLE_SCHEDULES
    assert base.FIXED_ENDS["trailing"] and "ays_sd15" in base.PRESETS and "karras" not in base.PRESETS
    schedules.register("zz_reg_kind", needs_table=True, on_flow=True, on_edm=True, fixed_ends=("sigma_max",),
                       preset="made up")(tab)
    try:
        for table in (base.TABLE_SCHEDULES, base.FLOW_TABLE_SCHEDULES, base.EDM_TABLE_SCHEDULES):
            assert "zz_reg_kind" in table and "zz_reg_kind" in set(table) and len(table) == len(list(table))
        assert base.FIXED_ENDS["zz_reg_kind"] == ("sigma_max",) and base.PRESETS.get("zz_reg_kind") == "made up"
        schedules.register("zz_reg_kind", replace=True)(user_tensor_schedule)
        for table in (base.TABLE_SCHEDULES, base.FLOW_TABLE_SCHEDULES, base.EDM_TABLE_SCHEDULES, base.FIXED_ENDS,
                      base.PRESETS):
            assert "zz_reg_kind" not in table
        schedules.register("zz_reg_kind", needs_table=True, replace=True)(tab)
    finally:
        schedules.SCHEDULES.remove("zz_reg_kind")
    assert "zz_reg_kind" not in base.TABLE_SCHEDULES


# ---------------------------------------------------------------------------------------------------- aliases


@pytest.mark.parametrize("make", [lambda: {"zz reg set alias", "zz reg set alias 2"},
                                  lambda: frozenset({"zz reg set alias", "zz reg set alias 2"}),
                                  lambda: (a for a in ["zz reg set alias", "zz reg set alias 2"]),
                                  lambda: ["zz reg set alias", "zz reg set alias 2"]],
                         ids=["set", "frozenset", "generator", "list"])
def test_aliases_may_be_any_collection_of_names(make, cleanup):
    """A set, frozenset or generator of aliases was refused as "must be a tuple of names" (accepted before); each is
    read once, so a generator's aliases are all registered."""
    cleanup += [(registry.SAMPLERS, "zz_reg_set"), (schedules.SCHEDULES, "zz_reg_set")]
    _sampler("zz_reg_set", aliases=make())
    schedules.register("zz_reg_set", aliases=make())(user_tensor_schedule)
    expected = {"zz_reg_set", "zz reg set alias", "zz reg set alias 2"}
    for table in (registry.SAMPLERS, schedules.SCHEDULES):
        assert {k for k, owner in table._exact.items() if owner == "zz_reg_set"} == expected
    assert set(samplers.info("zz reg set alias 2").aliases) == expected - {"zz_reg_set"}


@pytest.mark.parametrize("given", ["zz reg chars", b"zz reg chars", 3, None, {"zz reg chars": "dropped"}])
def test_aliases_as_one_string_or_no_collection_are_refused(given):
    """A dict was taken as its keys, its values dropped silently."""
    with pytest.raises(samplers.InvalidType, match=r"aliases of a (sampler|schedule) must be a collection of names"):
        _sampler("zz_reg_chars", aliases=given)
    with pytest.raises(samplers.InvalidType, match=r"aliases of a (sampler|schedule) must be a collection of names"):
        schedules.register("zz_reg_chars", aliases=given)(user_tensor_schedule)
    assert "zz_reg_chars" not in registry.SAMPLERS and "zz_reg_chars" not in schedules.SCHEDULES


def test_aliases_are_read_at_most_one_past_the_limit():
    """check_aliases read any iterable to its end: aliases=itertools.repeat("a") took memory until none was left. The
    generator here stops at 100 times the limit, so that a regression fails instead of doing that."""
    seen = []

    def names():
        for i in range(100 * registry.MAX_ALIASES):
            seen.append(i)
            yield f"zz reg counted {i}"

    with pytest.raises(samplers.LimitExceeded, match=rf"aliases of a sampler are more than {registry.MAX_ALIASES}"):
        _sampler("zz_reg_counted", aliases=names())
    with pytest.raises(samplers.LimitExceeded, match=rf"aliases of a schedule are more than {registry.MAX_ALIASES}"):
        schedules.register("zz_reg_counted", aliases=names())
    assert len(seen) == 2 * (registry.MAX_ALIASES + 1)
    assert "zz_reg_counted" not in registry.SAMPLERS and "zz_reg_counted" not in schedules.SCHEDULES


# ---------------------------------------------------------------------------- the kind views and the kinds


def test_the_kind_views_read_as_the_set_and_dict_they_were():
    """TABLE_SCHEDULES | {"karras"} built a view whose field was a generator (any read of it: TypeError), .union /
    .copy were missing, FIXED_ENDS | {} unsupported: all worked when these were a set and a dict."""
    from samplers.schedules import base

    table = set(base.TABLE_SCHEDULES)
    assert {"trailing", "simple"} <= table and "karras" not in table
    union = base.TABLE_SCHEDULES | {"karras"}
    assert type(union) is set and union == table | {"karras"} and "karras" in union
    assert {"karras"} | base.TABLE_SCHEDULES == union and base.TABLE_SCHEDULES.union({"karras"}, ["x"]) == union | {"x"}
    assert base.TABLE_SCHEDULES - {"simple"} == table - {"simple"} and {"simple", "x"} - base.TABLE_SCHEDULES == {"x"}
    assert base.TABLE_SCHEDULES & {"simple", "x"} == {"simple"} == {"simple", "x"} & base.TABLE_SCHEDULES
    assert base.TABLE_SCHEDULES ^ {"simple", "x"} == table ^ {"simple", "x"}
    assert base.TABLE_SCHEDULES.intersection(["simple"]) == {"simple"} and base.TABLE_SCHEDULES.issuperset(["simple"])
    assert base.TABLE_SCHEDULES.difference(table) == set() and base.TABLE_SCHEDULES.isdisjoint({"karras"})
    copy = base.TABLE_SCHEDULES.copy()
    copy.add("karras")  # the caller's own
    assert copy == union and "karras" not in base.TABLE_SCHEDULES
    assert base.TABLE_SCHEDULES == table and base.TABLE_SCHEDULES == frozenset(table) and base.TABLE_SCHEDULES != copy
    assert base.FLOW_TABLE_SCHEDULES < base.TABLE_SCHEDULES and base.FLOW_TABLE_SCHEDULES <= base.TABLE_SCHEDULES
    assert pickle.loads(pickle.dumps(base.TABLE_SCHEDULES)) == base.TABLE_SCHEDULES  # a view compares by its names

    ends = dict(base.FIXED_ENDS)
    assert ends["linear_quadratic"] == ("sigma_min",) and "karras" not in ends
    assert base.FIXED_ENDS | {} == ends and type(base.FIXED_ENDS | {}) is dict and base.FIXED_ENDS.copy() == ends
    assert {"karras": ()} | base.FIXED_ENDS == {"karras": (), **ends} and base.FIXED_ENDS == ends
    assert dict(base.FIXED_ENDS.items()) == ends and list(base.FIXED_ENDS.keys()) == list(ends)
    assert json.loads(json.dumps(base.PRESETS.copy())) == dict(base.PRESETS)


@pytest.mark.parametrize("change", [lambda b: b.TABLE_SCHEDULES.add("karras"),
                                    lambda b: b.FLOW_TABLE_SCHEDULES.discard("simple"),
                                    lambda b: b.EDM_TABLE_SCHEDULES.update({"karras"}),
                                    lambda b: operator.ior(b.TABLE_SCHEDULES, {"karras"}),
                                    lambda b: b.FIXED_ENDS.__setitem__("karras", ("sigma_min",)),
                                    lambda b: b.PRESETS.pop("ays_sd15"),
                                    lambda b: b.FIXED_ENDS.clear()],
                         ids=["add", "discard", "update", "|=", "[k]=v", "pop", "clear"])
def test_a_change_of_a_kind_view_is_refused_saying_to_register(change):
    """A change of a view got a bare AttributeError naming neither the rule nor the fix."""
    from samplers.schedules import base

    before = [view.copy() for view in (base.TABLE_SCHEDULES, base.FLOW_TABLE_SCHEDULES, base.EDM_TABLE_SCHEDULES,
                                       base.FIXED_ENDS, base.PRESETS)]
    with pytest.raises(samplers.InvalidType, match=r"read-only view of the schedule registry.*"
                                                   r"samplers\.schedules\.register\(name, (needs_table|on_flow|on_edm|"
                                                   r"fixed_ends|preset)=\.\.\.\)"):
        change(base)
    assert [view.copy() for view in (base.TABLE_SCHEDULES, base.FLOW_TABLE_SCHEDULES, base.EDM_TABLE_SCHEDULES,
                                     base.FIXED_ENDS, base.PRESETS)] == before


def test_a_kind_view_after_an_in_place_operator_is_still_the_view():
    """``TABLE_SCHEDULES |= {...}`` with no __ior__ would rebind the name to a plain set: a stale copy in place of
    the view. It is refused, and the module's name stays the view."""
    from samplers.schedules import base

    view = base.TABLE_SCHEDULES
    with pytest.raises(samplers.InvalidType, match=r"TABLE_SCHEDULES \|= \.\.\. is refused"):
        base.TABLE_SCHEDULES |= {"karras"}
    assert base.TABLE_SCHEDULES is view


def test_metas_is_a_read_only_view():
    """metas() returned the registry's own dict: metas()['karras'] = ScheduleKind(needs_table=True) made karras a
    table schedule for every reader, bypassing the lock and the swap."""
    from samplers.schedules import base

    with pytest.raises(TypeError):
        schedules.SCHEDULES.metas()["karras"] = base.ScheduleKind(needs_table=True)
    assert "karras" not in base.TABLE_SCHEDULES and base.kind_of("karras") == base.PLAIN


@pytest.mark.parametrize("kind, error, match", [
    ({"fixed_ends": "sigma_min"}, samplers.InvalidType, r"fixed_ends must be a collection.*got 'sigma_min'"),
    ({"fixed_ends": ("sigma_mn",)}, samplers.InvalidInput, r"'sigma_mn' is not a range end.*'sigma_min', 'sigma_max'"),
    ({"fixed_ends": ("sigma_min", "sigma_min")}, samplers.InvalidInput, r"fixed_ends lists 'sigma_min' more than once"),
    ({"fixed_ends": itertools.repeat("sigma_max")}, samplers.InvalidInput, r"lists 'sigma_max' more than once"),
    ({"fixed_ends": {"sigma_min": True}}, samplers.InvalidType, r"fixed_ends must be a collection"),
    ({"fixed_ends": None}, samplers.InvalidType, r"fixed_ends must be a collection"),
    ({"needs_table": "no"}, samplers.InvalidType, r"needs_table must be True or False, got 'no'"),
    ({"needs_table": True, "on_flow": 1}, samplers.InvalidType, r"on_flow must be True or False, got 1"),
    ({"on_edm": True}, samplers.InvalidInput, r"on_edm=True .*needs_table=True"),
    ({"preset": 3}, samplers.InvalidType, r"preset must be a string.*got 3"),
])
def test_a_schedule_kind_is_checked_when_it_is_registered(kind, error, match):
    """fixed_ends="sigma_min" or ("sigma_mn",) was registered, and every get_sigmas of the schedule then raised a bare
    KeyError; the flags went through bool() (needs_table="no" registered a table schedule); preset was not checked."""
    with pytest.raises(error, match=match):
        schedules.register("zz_reg_kind_arg", **kind)(user_tensor_schedule)
    assert "zz_reg_kind_arg" not in schedules.SCHEDULES


def test_a_kind_given_as_any_collection_or_numpy_bool_is_registered_as_read(cleanup):
    cleanup.append((schedules.SCHEDULES, "zz_reg_kind_ok"))
    schedules.register("zz_reg_kind_ok", needs_table=np.bool_(True), fixed_ends={"sigma_max"}, on_flow=True)(
        lambda n, sigma_min, sigma_max, training_sigmas=None: None)
    assert schedules.SCHEDULES.find("zz_reg_kind_ok")[2] == schedules.base.ScheduleKind(
        needs_table=True, on_flow=True, fixed_ends=("sigma_max",))

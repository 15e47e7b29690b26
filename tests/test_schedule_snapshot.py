"""Every schedule's σ list on every native schedule where it builds stays what it was (bitwise).

tests/schedule_snapshot.json holds a digest of the float64 bytes of ``get_sigmas(name, n, native=...)`` for every
registered schedule (and a few option variants, and the ComfyUI / A1111 scheduler names resolved without a model)
× the natives below × n in STEPS, taken from the code before the flow-model table schedules were added: features
added since (a schedule that was refused on a native and now builds) are not in it, and what built then must give
the same bytes now. Digests of float results depend on the torch build and the CPU's vector ISA, so the exact
comparison runs only on the build that took the snapshot (recorded in the file) and is skipped elsewhere.

Regenerate (only on purpose, when a change to a schedule's numbers is intended): ``python tests/test_schedule_snapshot.py
--write``.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest
import torch

import samplers
from samplers.core import labels, names

SNAPSHOT = Path(__file__).with_name("schedule_snapshot.json")
STEPS = (1, 2, 5, 10, 30)


def natives() -> dict:
    return {
        "sd15": samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012),
        "zero_snr": samplers.VPDiscrete.from_betas("scaled_linear", 1000, 0.00085, 0.012, rescale_betas_zero_snr=True),
        "vp_linear": samplers.core.native.VPContinuous(),
        "vp_cosine": samplers.core.native.VPContinuous(kind="cosine"),
        "edm": samplers.core.native.VE(),
        "flow_1": samplers.RectifiedFlow(),
        "flow_3": samplers.RectifiedFlow(shift=3.0, multiplier=1000.0),
        "flow_3_t": samplers.RectifiedFlow(shift=3.0, multiplier=1.0),
        "flux": samplers.RectifiedFlow.dynamic(1.15),
    }


# Options a schedule needs, and option variants worth pinning down as well.
REQUIRED = {"flow_dynamic": {"image_seq_len": 4096}}
VARIANTS = [("ddim_uniform", {"keep_stepping": True}), ("kl_optimal", {"end": "sigma_min"}),
            ("leading", {"steps_offset": 1}), ("karras", {"rho": 5.0}), ("flow", {"mu": 0.8}),
            *((name, {"append_zero": True}) for name in ("ays_sd15", "ays_sdxl", "ays_svd"))]


def cases() -> list[tuple[str, str, dict]]:
    """(key, schedule, options) for every case."""
    out = [(name, name, dict(REQUIRED.get(name, {}))) for name in samplers.schedules.available()]
    out += [(f"{name}{options}", name, options) for name, options in VARIANTS]
    for prefix, table in (("comfyui", labels.COMFYUI_SCHEDULERS), ("a1111", labels.A1111_SCHEDULERS)):
        for label in table:
            name, options = names.resolve_schedule(f"{prefix}:{label}")
            out.append((f"{prefix}:{label}", name, options))
    return out


def digest(values: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update(str((v.dtype, tuple(v.shape))).encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def build() -> dict:
    """{"<case>@<native>": {"n": [steps that built], "sha": digest of their σ lists}} for the current code."""
    out = {}
    for native_key, native in natives().items():
        for key, name, options in cases():
            built, values = [], []
            for n in STEPS:
                try:
                    values.append(samplers.get_sigmas(name, n, native=native, **options))
                except (ValueError, TypeError, KeyError):
                    continue
                built.append(n)
            if built:
                out[f"{key}@{native_key}"] = {"schedule": name, "options": options, "n": built, "sha": digest(values)}
    return out


def build_id() -> dict:
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": torch.backends.cpu.get_cpu_capability()}


def test_schedules_that_built_before_give_the_same_bytes(measured_rounding):
    saved = json.loads(SNAPSHOT.read_text())
    if saved["build"] != build_id():
        pytest.skip(f"snapshot taken on {saved['build']}, this is {build_id()}: float digests are build-specific")
    all_natives = natives()
    changed = []
    for case, entry in saved["cases"].items():
        native = all_natives[case.rsplit("@", 1)[1]]
        values = [samplers.get_sigmas(entry["schedule"], n, native=native, **entry["options"]) for n in entry["n"]]
        if digest(values) != entry["sha"]:
            changed.append(case)
    assert not changed, f"σ lists changed: {changed}"


def test_tool_names_resolved_for_a_model_other_than_flow_are_unchanged():
    """A model-aware resolution gives the names' plain options on every native that is not a flow model; on a
    zero-terminal-SNR one it adds the tools' finite stand-in for ᾱ_T = 0 (tests/test_zero_snr_tool_schedules.py), and
    on a discrete model A1111's names add its float32 table (tests/test_a1111_float32_table.py)."""
    for native in natives().values():
        if isinstance(native, samplers.RectifiedFlow):
            continue
        zero_snr = isinstance(native, samplers.VPDiscrete) and native.zero_terminal_snr
        extra = {"terminal_alpha_bar": labels.TOOLS_ZERO_SNR_ALPHA_BAR} if zero_snr else {}
        # A1111 reads a discrete model's ᾱ in float32 (tests/test_a1111_float32_table.py)
        a1111 = {"float32_alphas_cumprod": True} if isinstance(native, samplers.VPDiscrete) else {}
        for prefix, table in (("comfyui", labels.COMFYUI_SCHEDULERS), ("a1111", labels.A1111_SCHEDULERS)):
            for label in table:
                name = f"{prefix}:{label}"
                plain, options = names.resolve_schedule(name)
                mine = a1111 if prefix == "a1111" else {}
                assert names.resolve_schedule(name, native=native) == (plain, {**options, **extra, **mine})


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_schedule_snapshot.py --write")
    SNAPSHOT.write_text(json.dumps({"build": build_id(), "steps": list(STEPS), "cases": build()}, indent=1,
                                   sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")

"""Weights on disk: ``model.safetensors`` with a ``config.json`` beside it, written atomically.

``save_model(folder, state_dict, config)`` writes both files through a temporary file in the same
folder (fsync, then ``os.replace``), so a crash never leaves a half-written file under the final name,
and records the weights' SHA-256 in the config. ``load_model(folder)`` checks everything it can and
raises a ``ModelLoadError`` (a ``ValueError``) that names the file and says what to do.

``atomic_write_bytes`` and ``atomic_save_image`` are the same mechanism for any other output.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Mapping

from samplers.core.errors import InvalidInput
from samplers.core.files import atomic_save, atomic_write_bytes, check_writable, write_torch  # noqa: F401  (models.io.atomic_write_bytes)
from samplers.core.files import open_regular, read_json, read_torch_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 16 << 20  # load_config reads no more (a config is a few KB; the text encoder's vocabulary in it)


class ModelLoadError(InvalidInput):
    """Weights or config cannot be loaded; the message says which file and why."""


class MissingModelError(ModelLoadError, FileNotFoundError):
    """A weights folder or one of its files does not exist."""


class CorruptModelError(ModelLoadError):
    """The weights file is truncated, unreadable, or does not match the hash in its config."""


class ConfigMismatchError(ModelLoadError):
    """The weights do not fit the module the config describes (missing / unexpected keys, shapes)."""


# ------------------------------------------------------------------------------------------ atomic I/O


def numbered(path: Path, k: int) -> Path:
    """Image ``k`` of several written for ``path``: ``<stem>-<k>.png`` beside it."""
    return path.with_name(f"{path.stem}-{k}{path.suffix}")


def check_png_path(path: str | os.PathLike, images: int = 1, what: str = "path") -> Path:
    """The PNG file ``images`` images will be written to (``images`` > 1: ``<stem>-<k>.png`` beside it,
    :func:`numbered`), checked before any is made — the rule of the CLI's ``--out`` (``what``) and of
    :func:`models.pipeline.save_images`: at least one image, not a folder, named ``.png`` (the bytes written are PNG:
    no other format under another suffix, no lossy JPEG / WebP), in an existing folder this process can write in,
    no ``<stem>-<k>.png`` a folder."""
    if images < 1:
        raise InvalidInput(f"no images to write to {what} {str(path)!r}: pass at least one image")
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"{what} {str(path)!r} is a folder: name the PNG file to write, e.g. "
                           f"{str(path / 'image.png')!r}")
    if path.suffix.lower() != ".png":
        raise InvalidInput(f"{what} {str(path)!r} does not end in .png: the image is written as PNG, so name it "
                           f"{str(path.with_suffix('.png') if path.suffix else path.with_name(path.name + '.png'))!r}")
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist; create it or choose another "
                                f"{what}")
    check_writable(path, what)  # a folder this run can write in: found now, not after every image is made
    if images > 1:
        for k in range(images):
            each = numbered(path, k)
            if each.is_dir():
                raise InvalidInput(f"{what} {str(path)!r} with {images} images writes {str(each)!r}, which is a "
                                   f"folder: choose another {what}")
    return path


def atomic_save_image(path: str | os.PathLike, image, pnginfo=None, what: str = "path") -> Path:
    """Save a PIL image atomically as PNG, to a path :func:`check_png_path` takes (``pnginfo``: PIL's
    ``PngInfo`` of text chunks to write with it)."""
    path = check_png_path(path, 1, what)
    return atomic_save(path, image.save, format="PNG", pnginfo=pnginfo)


def atomic_torch_save(path: str | os.PathLike, obj) -> Path:
    """``torch.save`` written atomically (checkpoints): :func:`samplers.core.files.write_torch`, which
    :func:`load_checkpoint` reads back."""
    return write_torch(path, obj)


CHECKPOINT_FIX = "delete it and let it be rebuilt"


def load_checkpoint(path: str | os.PathLike, fix: str = CHECKPOINT_FIX) -> dict:
    """A training checkpoint or data cache written with :func:`atomic_torch_save`, read with ``weights_only=True``:
    tensors, numbers, strings and containers only — a planted pickle that would run code is refused. Anything but a
    regular file holding a dict is a ``CorruptModelError`` naming the path and ``fix``
    (:func:`samplers.core.files.read_torch_dict`)."""
    return read_torch_dict(path, "the checkpoint", fix, error=CorruptModelError,
                           missing=MissingModelError(f"no checkpoint at {path} (no such file); check the path"))


def load_resume(path: str | os.PathLike, fields: Mapping[str, type | tuple],
                optional: Mapping[str, type | tuple] = {}) -> dict:  # noqa: B006 - read only
    """The checkpoint ``--resume`` continues from: :func:`load_checkpoint`, with every one of ``fields`` (name →
    type) present and of its type, and those of ``optional`` that are present of theirs, else a
    ``CorruptModelError`` naming the path, what is wrong and the fix (start afresh, or delete the file)."""
    fix = f"start afresh without --resume, or delete {path}"
    saved = load_checkpoint(path, fix)
    missing = [k for k in fields if k not in saved]
    wrong = [f"{k!r} is a {type(saved[k]).__name__}" for k, t in {**fields, **optional}.items()
             if k in saved and (not isinstance(saved[k], t) or isinstance(saved[k], bool))]  # True is no step count
    if missing or wrong:
        raise CorruptModelError(f"{path} is not a checkpoint this training script wrote: "
                                + "; ".join(([f"it has no {', '.join(map(repr, missing))}"] if missing else [])
                                            + ([", ".join(wrong)] if wrong else [])) + f"; {fix}")
    return saved


def resume_into(path: str | os.PathLike, load, what: str) -> None:
    """``load()`` (a module's or optimiser's ``load_state_dict`` of a checkpoint's part): its error, where the part
    does not fit, a ``CorruptModelError`` naming the path and the fix."""
    try:
        load()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise CorruptModelError(f"{path}: its {what} does not fit this run ({' '.join(str(e).split())[:300]}); start "
                                f"afresh without --resume, or delete {path}") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- save/load


def save_model(folder: str | os.PathLike, state_dict: Mapping, config: dict) -> dict:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (folder created if missing).

    Returns the config as written, with ``"weights_sha256"`` set. The weights are written first, so a
    crash between the two writes leaves a config whose hash does not match: detected on load."""
    from safetensors.torch import save as st_save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    blob = st_save(tensors, metadata={"format": "pt"})
    config = dict(config)
    config["weights_sha256"] = sha256_bytes(blob)
    atomic_write_bytes(folder / WEIGHTS_FILE, blob)
    atomic_write_bytes(folder / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return config


def _how_to_make(folder: Path, hint: str | None) -> str:
    return hint or f"train it with `python -m models.train_vae --out {folder}` (see docs/models.md)"


def load_config(folder: str | os.PathLike, reproduce_hint: str | None = None) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        if folder.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json"):  # a file's name
            raise MissingModelError(f"model folder {str(folder)!r} does not exist, and its name is a file's: a model is "
                                    f"a folder holding {CONFIG_FILE} and {WEIGHTS_FILE} (as save_model writes them); "
                                    "pass that folder")
        raise MissingModelError(f"model folder {str(folder)!r} does not exist; {_how_to_make(folder, reproduce_hint)}")
    cpath = folder / CONFIG_FILE
    fix = _how_to_make(folder, reproduce_hint)
    config = read_json(cpath, "a model config (the JSON object save_model writes)", fix, error=CorruptModelError,
                       missing=MissingModelError(f"missing {cpath}; {fix}"), limit=MAX_CONFIG_BYTES,
                       why="a config records a model's sizes, schedule and defaults: a few KB")
    if not isinstance(config, dict):
        raise CorruptModelError(f"{cpath} must hold a JSON object, got {type(config).__name__}; {fix}")
    return config


def load_model(
    folder: str | os.PathLike, verify_hash: bool = True, reproduce_hint: str | None = None
) -> tuple[dict, dict]:
    """Read ``(state_dict, config)`` from ``folder``.

    Raises ``MissingModelError`` (folder or file missing), ``CorruptModelError`` (unreadable or
    truncated safetensors, "corrupted: hash mismatch" against ``config["weights_sha256"]``, a config without
    ``weights_sha256`` unless ``verify_hash=False``), all subclasses of ``ModelLoadError(ValueError)``."""
    import torch
    from safetensors.torch import load as st_load

    folder = Path(folder)
    config = load_config(folder, reproduce_hint)
    wpath = folder / WEIGHTS_FILE
    fix = _how_to_make(folder, reproduce_hint)
    with open_regular(wpath, "a safetensors file of the model's weights", fix, error=CorruptModelError,
                      missing=MissingModelError(f"missing {wpath}; {fix}")) as f:
        blob = f.read()
    expected = config.get("weights_sha256")
    if verify_hash and not (isinstance(expected, str) and len(expected) == 64
                            and all(c in "0123456789abcdef" for c in expected)):
        what = "has no weights_sha256" if expected is None else f"has weights_sha256 {expected!r}, not a SHA-256 hex digest"
        raise CorruptModelError(
            f"{folder / CONFIG_FILE} {what}, so {wpath} cannot be checked and is not loaded; re-save the model with its "
            f"save method (models.io.save_model records the hash) or {_how_to_make(folder, reproduce_hint)}"
        )
    if verify_hash:
        actual = sha256_bytes(blob)
        if actual != expected:
            raise CorruptModelError(
                f"{wpath} is corrupted: hash mismatch (sha256 {actual[:12]}…, config.json expects {expected[:12]}…); "
                f"restore the file or {_how_to_make(folder, reproduce_hint)}"
            )
    try:
        state_dict = st_load(blob)
    except Exception as e:  # safetensors raises SafetensorError / various on truncation
        raise CorruptModelError(
            f"{wpath} is truncated or not a safetensors file ({type(e).__name__}: {e}); "
            f"{_how_to_make(folder, reproduce_hint)}"
        ) from None
    bad = sorted(k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:  # the hash only says the file is the one saved: a model saved with NaN weights gives NaN at every call
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CorruptModelError(f"{wpath} holds NaN or infinite weights ({shown}), so every model call would give "
                                f"NaN; {_how_to_make(folder, reproduce_hint)}")
    return state_dict, config


def load_into(module, state_dict: Mapping, where: str = "weights") -> None:
    """``module.load_state_dict(strict=True)`` with the dtype of the module, raising
    ``ConfigMismatchError`` that names missing / unexpected keys and shape mismatches."""
    own = module.state_dict()
    parts = _mismatches(own, state_dict)
    if parts:
        raise ConfigMismatchError(f"{where} do not match the config: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


def _mismatches(own: Mapping, state_dict: Mapping) -> list[str]:
    """What keeps ``state_dict`` from loading into a module whose state dict is ``own`` (its tensors may be on the
    meta device: only keys, shapes and dtypes are compared): missing / unexpected keys, shape mismatches, integer
    tensors for floating weights."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    kinds = [f"{k}: file {state_dict[k].dtype} vs model {own[k].dtype}" for k in own
             if k in state_dict and own[k].is_floating_point() and not state_dict[k].is_floating_point()]
    parts = []
    if missing:
        parts.append(f"missing keys {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches {_short(shapes)}")
    if kinds:  # an integer or bool tensor where weights are real numbers: never cast
        parts.append(f"non-floating tensors for floating weights {_short(kinds)}")
    return parts


def _size_fields(cls, config_from_dict, cfg: Mapping, own: Mapping, state_dict: Mapping, cap: int) -> list[str]:
    """The config field to correct where the module's tensors and the file's differ in size, shown, not guessed:
    ``field 'text.dim' (64; the weights fit 128)``: a field (nested ones by their dotted path, a list's by its name)
    whose value is a size of the module's mismatching tensors, and which set to a size of the file's ones builds a
    module (on the meta device) that the weights fit. A test of values alone named the wrong field where another
    holds the same number (``channels`` [64, 128] beside ``text.dim`` 64), or missed it where the file has that size
    elsewhere (an MLP twice as wide), so only a field so shown is named, and only where it is the one: otherwise
    (two fields edited, say) the error names no field rather than a wrong one."""
    model_dims, file_dims = set(), set()
    for k, t in own.items():
        if k in state_dict and tuple(state_dict[k].shape) != tuple(t.shape):
            model_dims.update(t.shape)
            file_dims.update(state_dict[k].shape)
    plain = {k: v for k, v in cfg.items() if k != "weights_dtype"}
    shown = []
    for path, value, put in _int_fields(plain):
        if value not in model_dims:
            continue
        for size in sorted(file_dims):
            fixed = put(size)
            try:
                module = _meta_build(cls, config_from_dict(fixed), cap)
            except Exception:  # noqa: BLE001 - no module of that size: try the next
                continue
            if not _mismatches(module.state_dict(), state_dict):
                shown.append(f"field {path!r} ({_brief(_at(plain, path))}; the weights fit "
                             f"{_brief(_at(fixed, path))})")
                break
    return shown if len(shown) == 1 else []


def _at(cfg: Mapping, path: str):
    """The value of the field at the dotted ``path`` of ``cfg``."""
    for key in path.split("."):
        cfg = cfg[key]
    return cfg


def _int_fields(cfg: Mapping, prefix: str = ""):
    """``(dotted path, integer, put)`` for each integer of ``cfg`` (each element of a list of them under the list's
    name, a nested object's by its dotted path), where ``put(n)`` is ``cfg`` with that integer replaced by ``n``."""
    for key, value in cfg.items():
        path = prefix + key
        if isinstance(value, dict):
            for sub, v, put in _int_fields(value, path + "."):
                yield sub, v, (lambda n, key=key, put=put: {**cfg, key: put(n)})
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, int) and not isinstance(v, bool):
                    yield path, v, (lambda n, key=key, value=value, i=i: {**cfg, key: [*value[:i], n, *value[i + 1:]]})
        elif isinstance(value, int) and not isinstance(value, bool):
            yield path, value, (lambda n, key=key: {**cfg, key: n})


def _fields_where(config: Mapping, test) -> list[str]:
    """``field 'name' (value)`` for each field of ``config`` holding an integer (or a list with one) that passes
    ``test``."""
    named = []
    for field, value in config.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and test(v) for v in values):
            named.append(f"field {field!r} ({_brief(value)})")
    return named


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(value)} values)" if isinstance(value, list) else text[:60] + "…"


class _TooManyParameters(Exception):
    """Raised by :func:`_check_sizes`'s hook to stop building a module far larger than its weights file."""


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" … ({len(items)} in all)" if len(items) > n else "")


def save_module(module, folder: str | os.PathLike, dtype=None) -> dict:
    """Write a module with a ``config`` (``to_dict()``) to ``folder``: its weights in ``dtype`` (float16 by default:
    half the size; float32 when None) and its config; records the weights' hash on the module."""
    import torch

    dtype = torch.float16 if dtype is None else dtype
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in module.state_dict().items()}
    cfg = module.config.to_dict()
    cfg["weights_dtype"] = str(dtype).replace("torch.", "")
    written = save_model(folder, sd, cfg)
    module._weights_sha256 = written["weights_sha256"]
    return written


def _check_sizes(cls, config_from_dict, config, cfg: Mapping, sd: Mapping, folder: Path) -> None:
    """Refuse a config whose module would not hold the weights in ``sd``, before the module is built: it is built on
    the meta device first (shapes, no memory), and that build stops once it registers many more parameters than the
    file holds tensors. So a config with a huge size (``time_dim: 2**40``) or count (``res_blocks: 10**6``) is an
    error naming the field and the file, not an allocation of terabytes or an endless build."""
    cpath, wpath = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    cap = 2 * len(sd) + 64  # a strict load needs a tensor in the file per parameter: slack for reassigned ones
    try:
        shape_only = _meta_build(cls, config, cap)
    except _TooManyParameters:
        fields = [f"field {k!r} ({_brief(v)})" for k, v in cfg.items() if _builds_without(cls, config_from_dict, cfg, k, cap)]
        raise ConfigMismatchError(
            f"{cpath} describes a module of more than {cap:,} parameter tensors, and {wpath} holds {len(sd):,}"
            + (f": check its {', '.join(fields)}" if fields else "") + f"; {SIZE_FIX}") from None
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:  # a size no tensor can have
        largest = max((t.numel() for t in sd.values()), default=0)
        fields = _fields_where(cfg, lambda v: v > largest)
        raise ConfigMismatchError(
            f"{cpath} describes no module that can be built ({' '.join(str(e).split())})"
            + (f": its {', '.join(fields)} {'exceeds' if len(fields) == 1 else 'exceed'} every tensor in {wpath} "
               f"(the largest holds {largest:,} values)" if fields else "") + f"; {SIZE_FIX}") from None
    own = shape_only.state_dict()
    parts = _mismatches(own, sd)
    if parts:
        fields = _size_fields(cls, config_from_dict, cfg, own, sd, cap)
        raise ConfigMismatchError(
            f"weights in {wpath} do not match the config {cpath}: " + "; ".join(parts)
            + (f" (the sizes come from its {', '.join(fields)})" if fields else "") + f"; {SIZE_FIX}")


def _meta_build(cls, config, cap: int):
    """``cls(config)`` on the meta device; :class:`_TooManyParameters` once it registers more than ``cap`` parameters."""
    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    count = [0]
    here = threading.get_ident()

    def counted(module, name, param):  # torch's hook is global: another thread's modules are not this build's
        if threading.get_ident() != here:
            return
        count[0] += 1
        if count[0] > cap:
            raise _TooManyParameters

    hook = register_module_parameter_registration_hook(counted)
    try:
        with torch.device("meta"):
            return cls(config)
    finally:
        hook.remove()


def _builds_without(cls, config_from_dict, cfg: Mapping, field: str, cap: int) -> bool:
    """Whether the module builds within ``cap`` parameters once ``field`` (a count, or a list) is made small: then
    that field is what makes it too large."""
    value = cfg[field]
    if isinstance(value, list):
        smaller = [value[:1], value[:2]] if len(value) > 2 else []
    elif isinstance(value, int) and not isinstance(value, bool) and value > 2:
        smaller = [1, 2]
    else:
        return False
    for small in smaller:
        try:
            config = config_from_dict({**{k: v for k, v in cfg.items() if k != "weights_dtype"}, field: small})
            _meta_build(cls, config, cap)
            return True
        except Exception:  # noqa: BLE001 - not a config that builds: try the next, or not this field
            continue
    return False


SIZE_FIX = ("correct the config's sizes to those the weights were saved with, or re-save the model with its save "
            "method, which writes both files together")


def load_module(cls, config_from_dict, folder: str | os.PathLike, type_name: str, *, default_type: str | None = None,
                reproduce_hint: str | None = None, map_location="cpu"):
    """The module ``cls(config_from_dict(config))`` with the checked weights of ``folder`` (see :func:`load_model`);
    the config's ``type`` must be ``type_name`` (``default_type`` when the config has none)."""
    folder = Path(folder)
    sd, cfg = load_model(folder, reproduce_hint=reproduce_hint)
    if cfg.get("type", default_type) != type_name:
        raise ConfigMismatchError(f"{folder / CONFIG_FILE} describes a {cfg.get('type')!r}, not a {type_name}")
    dtype = cfg.get("weights_dtype", "float32")
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ConfigMismatchError(f"{folder / CONFIG_FILE}: field 'weights_dtype' is {dtype!r}; it must be one of "
                                  "'float16', 'bfloat16', 'float32', 'float64' (the dtype save_module wrote the "
                                  "weights in); correct the field, or re-save the model with its save method")
    try:
        config = config_from_dict({k: v for k, v in cfg.items() if k != "weights_dtype"})
    except ModelLoadError as e:
        raise type(e)(f"{folder / CONFIG_FILE}: {e}") from None
    _check_sizes(cls, config_from_dict, config, cfg, sd, folder)
    # built on the CPU (the weights are CPU tensors, moved below), and its initial weights (nn initialisers, the text
    # encoder's torch.randn), which the file's replace, drawn on a forked generator: a load leaves torch's global RNG
    # where the caller put it (torch.manual_seed(0) before Pipeline.load gave another seed=None image than after)
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        module = cls(config)
    load_into(module, sd, where=f"weights in {folder / WEIGHTS_FILE}")
    module._weights_sha256 = cfg.get("weights_sha256")
    return module.to(map_location).eval()

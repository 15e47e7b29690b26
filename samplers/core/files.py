"""Files written atomically: a temporary file in the same folder, flushed and fsynced, then renamed over the final
name, so a reader never sees a half-written file. On any exception — KeyboardInterrupt, and SIGTERM in the
``samplers`` command, which turns it into SystemExit — the temporary file is removed."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. The folder must exist (FileNotFoundError naming it otherwise)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist; create it or choose another path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not possible on every platform
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_json(path: str | os.PathLike, data: dict, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (fitted schedules and solvers, benchmark results)."""
    return atomic_write_bytes(path, (json.dumps(data, indent=indent) + "\n").encode())


def write_torch(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (resumable state, cached references); read it back
    with ``torch.load(path, weights_only=True)``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


class DuplicateKey(ValueError):
    """A JSON object that names one key twice (:func:`unique_keys`); ``key`` is that key."""

    def __init__(self, key: str):
        super().__init__(f"the key {key!r} appears more than once in one object")
        self.key = key


def unique_keys(pairs: list) -> dict:
    """``object_pairs_hook`` of ``json.loads`` for files users may edit by hand (solver files, ``samplers fit``'s
    report, optimised schedules): an object that names a key twice raises :class:`DuplicateKey` — plain JSON keeps the last value and
    drops the other, so which was meant is unknown."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen.add(key)
    return dict(pairs)

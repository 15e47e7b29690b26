"""Files written atomically: a temporary file in the same folder, flushed and fsynced, then renamed over the final
name, so a reader never sees a half-written file. On any exception — KeyboardInterrupt, and SIGTERM in the
``samplers`` command, which turns it into SystemExit — the temporary file is removed.

Files read: :func:`open_regular` opens only a regular file (a FIFO would wait for a writer forever, a device such as
/dev/zero never ends), and :func:`read_json` reads one JSON file of bounded size, turning every way it can fail
into the caller's error naming the path, the rule and the fix."""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Callable

from .errors import InvalidInput

def _new_file(folder: Path, name: str) -> tuple[int, str]:
    """A new file beside ``name`` in ``folder``, opened for writing: created with mode 0666, which the kernel narrows
    by the process's umask at this moment (as ``open`` does; a umask read once at import missed a later
    ``os.umask``, and reading it means setting it, which races with other threads)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {str(folder / name)!r}")


def _write_error(folder: Path, name: str) -> OSError | None:
    """The error of creating the temporary file a write of ``name`` in ``folder`` would make (then removed), or None
    where it can be created: the one try :func:`unwritable_folder` and :func:`check_writable` make."""
    try:
        fd, tmp = _new_file(folder, name)
    except OSError as e:
        return e
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)
    return None


def unwritable_folder(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder`` — where it does not exist yet, why it cannot be made there
    (``mkdir(parents=True)``) — or None where they can. Tried as :func:`check_writable` tries a folder, by creating
    and removing a temporary file, in ``folder`` or, where it is missing, in the nearest folder above it that
    exists (the one the first new folder would be made in); nothing else is created, so a run refused for it
    leaves no folder behind. A file in the way (``folder`` or a folder above it) is a reason too."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder"
    e = _write_error(existing, "write-check")
    if e is not None:
        made = "" if existing == folder else f", where {str(folder)!r} would be created"
        return f"cannot write in folder {str(existing)!r}{made} ({e.strerror or e})"
    return None


def check_writable(path: str | os.PathLike, what: str = "the output") -> Path:
    """``path``'s folder checked as :func:`atomic_write_bytes` will write there, before any long work that would be
    lost at the end: a folder (not a file, not missing), in which a file can be created — tried by creating and
    removing the temporary file the write would make (permissions, a read-only file system, /sys). An error names
    the folder, what failed and the fix."""
    path = Path(path)
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file, not a folder, so {what} {str(path)!r} cannot be written "
                                 "in it; choose a path in a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {str(folder)!r} does not exist; create it or choose another path for {what}")
    e = _write_error(folder, path.name)
    if e is not None:
        raise PermissionError(f"cannot write in folder {str(folder)!r} ({e.strerror or e}), so {what} "
                              f"{str(path)!r} could not be saved; choose a folder you can write to")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. The folder must exist (FileNotFoundError naming it otherwise)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist; create it or choose another path")
    fd, tmp = _new_file(path.parent, path.name)
    try:
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


def atomic_save(path: str | os.PathLike, save: Callable, **kwargs) -> Path:
    """What ``save(file, **kwargs)`` writes to a file object (PIL's ``Image.save``, matplotlib's ``Figure.savefig``:
    pass the format), written to ``path`` atomically: a reader never sees half a file."""
    import io

    buf = io.BytesIO()
    save(buf, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def write_torch(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (resumable state, cached references, training
    checkpoints); read it back with :func:`read_torch_dict`."""
    import torch

    return atomic_save(path, lambda f: torch.save(obj, f))


def read_torch_dict(path: str | os.PathLike, what: str, fix: str, *, error: type[Exception] = InvalidInput,
                    missing: Exception | None = None) -> dict:
    """A dict written with :func:`write_torch` (a fit's saved state, cached endpoints, a training checkpoint), read
    with ``torch.load(weights_only=True)``: nothing in the file runs. What :func:`open_regular` refuses (a FIFO, a
    folder; ``missing`` for a path that does not exist), a file that cannot be read (truncated, a pickle of other
    objects) or one that holds anything but a dict raises ``error`` naming ``what``, the file and ``fix``."""
    import pickle
    import re

    import torch

    with open_regular(path, what, fix, error=error, missing=missing) as f:
        try:
            saved = torch.load(f, map_location="cpu", weights_only=True)
        except MemoryError:  # the machine's state, not the file's: not "delete it"
            raise
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file: named, never guessed around
            text = " ".join(str(err).split())
            if isinstance(err, pickle.UnpicklingError):  # torch's message is a page of advice on trusting the file
                found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global| Check the |$)", text)
                text = ("it holds Python objects a weights-only load never builds (weights_only=True: nothing in "
                        "the file runs)" + (f": {found.group(1).strip()}" if found else ""))
            else:
                text = text.split(". ")[0][:200] or ("it ends early" if isinstance(err, EOFError) else "no detail")
            raise error(f"{what} {path} cannot be read ({type(err).__name__}: {text}); {fix}") from None
    if not isinstance(saved, dict):
        raise error(f"{what} {path} holds a {type(saved).__name__}, not the dict written there; {fix}")
    return saved


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


MAX_JSON_BYTES = 256 << 20
"""The default bound on a JSON file :func:`read_json` reads: far above any the project writes (its largest, a
benchmark's results.json, is a few MB), low enough that a wrong path is refused rather than read into memory."""


def open_regular(path: str | os.PathLike, what: str, fix: str, *, error: type[Exception] = InvalidInput,
                 missing: Exception | None = None, folder: str | None = None):
    """``path`` opened for reading in binary mode, where it is a regular file; otherwise ``error`` naming the path
    and ``fix``: a folder (``folder``: the fix for that case), a FIFO, socket or device (reading one could wait
    forever or never end), a path that does not exist (``missing``: the exception to raise instead) or cannot be
    opened. ``what`` names the file for the messages ("a learned-solver file"). The file is opened without
    blocking and checked on the open descriptor, so a FIFO swapped in after a check is refused too."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as e:
        if missing is not None:
            raise missing from None
        raise error(f"{path} cannot be read ({e.strerror}): it must be {what}; {fix}") from None
    except IsADirectoryError:  # Windows, and some systems: a folder cannot be opened at all
        raise error(_folder(path, what, fix, folder)) from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}): it must be {what}; {fix}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(_folder(path, what, fix, folder))
        if not stat.S_ISREG(mode):
            raise error(f"{path} is not a regular file (a FIFO, socket or device, whose reading could wait forever "
                        f"or never end): it must be {what}; {fix}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _folder(path: Path, what: str, fix: str, folder: str | None) -> str:
    return f"{path} is a folder; {folder}" if folder else f"{path} is a folder, not {what}; {fix}"


def read_json(path: str | os.PathLike, what: str, fix: str, *, error: type[Exception] = InvalidInput,
              missing: Exception | None = None, folder: str | None = None, limit: int = MAX_JSON_BYTES,
              why: str = "far above any file the project writes", pairs_hook=unique_keys):
    """The JSON value in ``path`` (any type: the caller checks it), or ``error`` with a message that names the path,
    what it must be (``what``: "a learned-solver file"), why it is not and ``fix``. Refused: what
    :func:`open_regular` refuses (``missing``, ``folder`` as there); a file over ``limit`` bytes (``why``: the
    reason for the bound, for the message); text that is not UTF-8; JSON that does not parse, nests deeper than
    Python's recursion limit or holds an integer longer than Python converts (``sys.get_int_max_str_digits``);
    with ``pairs_hook`` :func:`unique_keys` (the default), an object that names a key twice."""
    path = Path(path)
    with open_regular(path, what, fix, error=error, missing=missing, folder=folder) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"{path} cannot be read ({e.strerror or e}): it must be {what}; {fix}") from None
    if len(data) > limit:
        raise error(f"{path} is larger than {limit:,} bytes, the most {what} may hold ({why}); check the path, "
                    f"or {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path} is not {what}: it is not UTF-8 text ({e}); {fix}") from None
    try:
        return json.loads(text, object_pairs_hook=pairs_hook)
    except DuplicateKey as e:
        raise error(f"{path} is not {what}: {e} (a hand edit? JSON would keep the last {e.key!r} and drop the other, "
                    f"and which was meant is unknown); keep one, or {fix}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path} is not {what}: it is not valid JSON ({e}); {fix}") from None
    except RecursionError:
        raise error(f"{path} is not {what}: its JSON nests deeper than Python reads; {fix}") from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise error(f"{path} is not {what}: it holds a value Python will not read ({e}); {fix}") from None

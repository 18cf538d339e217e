"""One layer for every file the tool writes and reads back (run metadata, the tuning
database, the calibration cache, the points log): each carries its schema and version, is
written atomically (a temporary file, fsync, rename), updated under a lock where several
processes share it, and validated when read. A damaged or foreign file is an error that names
it and says what to do, or is moved aside under a new name (and reported); it is never read
as an empty state, and never overwritten."""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError

SCHEMA_KEY, VERSION_KEY, DATA_KEY = "schema", "version", "data"


class StoreError(HarnessError):
    """A stored file that cannot be used as it is."""


def jsonable(value):
    """json.dumps default: numpy scalars, sets and tuples, else the value's text."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def atomic_write_text(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` so that readers see the old file or the new one whole."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def envelope(kind: str, version: int, data) -> dict:
    return {SCHEMA_KEY: kind, VERSION_KEY: version, DATA_KEY: data}


def write_json(path: Path, kind: str, version: int, data) -> Path:
    text = json.dumps(envelope(kind, version, data), indent=1, default=jsonable, allow_nan=True)
    return atomic_write_text(path, text)


def check_envelope(obj, path: Path, kind: str, version: int):
    """The data of a parsed envelope, or StoreError naming ``path``."""
    if not isinstance(obj, dict) or obj.get(SCHEMA_KEY) != kind:
        raise StoreError(f"{path}: not a {kind} file of this tool; move it away or delete it")
    if obj.get(VERSION_KEY) != version:
        raise StoreError(f"{path}: {kind} version {obj.get(VERSION_KEY)!r}, this version of the "
                         f"tool reads version {version}; move it away or delete it")
    return obj.get(DATA_KEY)


def read_json(path: Path, kind: str, version: int, *, missing=None):
    """The data stored at ``path``; ``missing`` when there is no file. Damage raises
    StoreError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return missing
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is damaged ({type(exc).__name__}: {exc}); move it away or "
                         "delete it") from None
    return check_envelope(obj, path, kind, version)


def aside_name(path: Path) -> Path:
    """A free name ``<name>.damaged-<time>[-n]`` beside ``path`` for a damaged copy of it."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        target = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        if not target.exists():
            return target
    raise StoreError(f"cannot set {path} aside: too many damaged copies beside it")


def move_aside(path: Path) -> Path:
    """Rename a damaged file to a free ``aside_name`` beside it, and return the new name."""
    target = aside_name(path)
    os.replace(path, target)
    return target


@contextmanager
def locked(path: Path):
    """An exclusive lock on ``path`` (through ``path.lock``), held for the block."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "w")
    except OSError as exc:
        raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def writable_dir(path: Path, what: str) -> Path:
    """``path`` created if needed and checked to accept files; StoreError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    return path

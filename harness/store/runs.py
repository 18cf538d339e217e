"""The results of one run on disk: rows appended as JSON lines as they finish, the run's
metadata, and tables derived from the rows.

``points.jsonl`` is the durable record. Its first line names its schema and version; each
finished point is one more line, written and flushed (fsync) before the next point starts,
so a crash loses at most the point in flight. A line cut short by a kill is dropped when the
file is opened. Lines that are damaged in any other way (not JSON, not a row, a row the
validator refuses) are set aside: the whole file is kept under a new name, the good rows
stay, and the damage is reported; those points are measured again on resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.store.files import (StoreError, aside_name, atomic_write_text, check_envelope,
                                 envelope, jsonable, move_aside, read_json, write_json,
                                 writable_dir)

POINTS = "points.jsonl"
RESULTS = "results.csv"
METADATA = "metadata.json"
POINTS_SCHEMA, POINTS_VERSION = "spconv.points", 2
METADATA_SCHEMA, METADATA_VERSION = "spconv.run-metadata", 1
MODEL_FIT = "model_fit.json"
MODEL_FIT_SCHEMA, MODEL_FIT_VERSION = "spconv.model-fit", 2  # 2: the mechanistic form


def read_model_fit(path: Path) -> dict | None:
    """A run's saved model fit (None if it has none); damage names the file."""
    return read_json(path, MODEL_FIT_SCHEMA, MODEL_FIT_VERSION)


class RunStore:
    """One run directory, locked against a second sweep writing to it. ``validate`` turns a
    stored row (a dict) into whatever the caller reads, raising HarnessError for a bad one.
    ``readonly`` (for reports of a run, perhaps one still being written) takes no lock and
    changes nothing: damaged lines are skipped and reported."""

    def __init__(self, run_dir: str | Path, validate: Callable[[dict, str], object] | None = None,
                 *, readonly: bool = False):
        self._validate = validate or (lambda row, where: row)
        self.readonly = readonly
        self.notes: list[str] = []  # recoveries made while reading, for the user
        self.dir = Path(run_dir) if readonly else writable_dir(run_dir, "results")
        self.points_path = self.dir / POINTS
        self._lock = None
        if readonly:
            return
        self._lock = open(self.dir / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise HarnessError(f"{self.dir} is in use by another sweep; wait for it or choose "
                               "another --out") from None
        self._repair()

    def close(self) -> None:
        """Release the run directory for other sweeps."""
        if self._lock is not None and not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _repair(self) -> None:
        """Drop a trailing partial line left by a killed writer."""
        if not self.points_path.exists():
            return
        data = self.points_path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.points_path, "r+b") as f:
                f.truncate(cut)

    def _header(self) -> str:
        return json.dumps(envelope(POINTS_SCHEMA, POINTS_VERSION, None)) + "\n"

    def rows(self) -> list:
        """Every stored row, validated; damaged lines are set aside (see the module)."""
        if not self.points_path.exists():
            return []
        lines = self.points_path.read_bytes().split(b"\n")
        lines.pop()  # the end of the last whole line, or a line a writer is still writing
        if not lines:
            return []
        try:
            check_envelope(json.loads(lines[0].decode("utf-8")), self.points_path,
                           POINTS_SCHEMA, POINTS_VERSION)
        except (UnicodeDecodeError, json.JSONDecodeError, StoreError):
            raise StoreError(f"{self.points_path}: no {POINTS_SCHEMA} v{POINTS_VERSION} schema "
                             "header on its first line (written by another version, or damaged); "
                             "start a new run with another --out") from None
        rows, good, bad = [], [lines[0]], 0
        for n, line in enumerate(lines[1:], start=2):
            where = f"{self.points_path}:{n}"
            try:
                rows.append(self._validate(json.loads(line.decode("utf-8")), where))
                good.append(line)
            except (UnicodeDecodeError, json.JSONDecodeError, HarnessError):
                bad += 1
        if bad and self.readonly:
            print(f"warning: {self.points_path}: {bad} damaged line(s) skipped", file=sys.stderr)
        elif bad:
            self._set_aside(good, bad)
        return rows

    def _set_aside(self, good: list[bytes], bad: int) -> None:
        kept = aside_name(self.points_path)
        shutil.copy2(self.points_path, kept)
        atomic_write_text(self.points_path, b"\n".join(good).decode("utf-8") + "\n")
        note = (f"{self.points_path}: {bad} damaged line(s) set aside (the original file is "
                f"kept as {kept.name}); those points will be measured again")
        self.notes.append(note)
        print(f"warning: {note}", file=sys.stderr)

    def append(self, row: dict) -> None:
        line = json.dumps(row, default=jsonable, allow_nan=True) + "\n"
        try:
            new = not self.points_path.exists() or self.points_path.stat().st_size == 0
            with open(self.points_path, "a", encoding="utf-8") as f:
                if new:
                    f.write(self._header())
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise HarnessError(f"cannot append to {self.points_path}: {exc.strerror}") from None

    def write_metadata(self, meta: dict) -> Path:
        return write_json(self.dir / METADATA, METADATA_SCHEMA, METADATA_VERSION, meta)

    def read_metadata(self) -> dict | None:
        """The run's metadata; a damaged file is moved aside (reported) and read as absent,
        since the run rewrites it and its rows live in points.jsonl."""
        path = self.dir / METADATA
        try:
            meta = read_json(path, METADATA_SCHEMA, METADATA_VERSION)
            if meta is None or isinstance(meta, dict):
                return meta
            problem = f"{path}: holds no metadata mapping"
        except StoreError as exc:
            problem = str(exc)
        if self.readonly:
            print(f"warning: {problem}", file=sys.stderr)
            return None
        kept = move_aside(path)
        note = f"{problem}; moved aside as {kept.name}, it will be written afresh"
        self.notes.append(note)
        print(f"warning: {note}", file=sys.stderr)
        return None

    def write_table(self, frame: pd.DataFrame, name: str = RESULTS) -> Path:
        return atomic_write_text(self.dir / name, frame.to_csv(index=False))

    def write_json(self, name: str, kind: str, version: int, data) -> Path:
        return write_json(self.dir / name, kind, version, data)

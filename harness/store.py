"""The results of one run on disk: rows appended as JSON lines as they finish, and a tidy
CSV derived from them.

``points.jsonl`` is the durable record: each finished point is one line, written and flushed
(fsync) before the next point starts, so a crash loses at most the point in flight; a line
cut short by a kill is dropped when the file is read or reopened. ``results.csv`` is derived
from it (with the speedups against the best dense baseline of the same run) and rewritten
atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pandas as pd

from .errors import HarnessError

POINTS = "points.jsonl"
RESULTS = "results.csv"
METADATA = "metadata.json"


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise HarnessError(f"cannot write results to {self.dir}: {exc.strerror}") from None
        self._lock = open(self.dir / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise HarnessError(f"{self.dir} is in use by another sweep; wait for it or choose "
                               "another --out") from None
        self.points_path = self.dir / POINTS
        self._repair()

    def close(self) -> None:
        """Release the run directory for other sweeps."""
        if not self._lock.closed:
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

    def rows(self) -> list[dict]:
        if not self.points_path.exists():
            return []
        rows = []
        for line in self.points_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line: the point is measured again on resume
        return rows

    def append(self, row: dict) -> None:
        line = json.dumps(row, default=_jsonable, allow_nan=True) + "\n"
        try:
            with open(self.points_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise HarnessError(f"cannot append to {self.points_path}: {exc.strerror}") from None

    def write_json(self, name: str, data: dict) -> Path:
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable, allow_nan=True))
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> dict | None:
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_table(self, frame: pd.DataFrame, name: str = RESULTS) -> Path:
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)

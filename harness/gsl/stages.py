"""What a GSL run has finished, kept in its run directory so that a run stopped by a crash or
a kill resumes from the last finished stage instead of training everything again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import HarnessError

STAGES = "stages.json"


class StageRecord:
    """stages.json: the settings the run was started with and each finished stage's results
    (accuracies, per-layer notes); the weights of a stage are saved beside it before the stage
    is recorded, so a recorded stage always has its weights."""

    def __init__(self, run_dir: Path, settings: dict):
        self.path = run_dir / STAGES
        self.data = {"settings": settings, "stages": {}}
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                raise HarnessError(f"{self.path}: unreadable; remove it or use a new --out") from None
            if saved.get("settings") != settings:
                changed = sorted(k for k in {**settings, **saved.get("settings", {})}
                                 if settings.get(k) != saved.get("settings", {}).get(k))
                raise HarnessError(f"{run_dir} holds a run made with other settings "
                                   f"({', '.join(changed)}): use a new --out")
            self.data = saved

    @property
    def finished(self) -> list[str]:
        return list(self.data["stages"])

    def get(self, stage: str) -> dict | None:
        return self.data["stages"].get(stage)

    def record(self, stage: str, results: dict) -> None:
        self.data["stages"][stage] = results
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=1, default=float))
        os.replace(tmp, self.path)

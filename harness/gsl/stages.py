"""What a GSL run has finished, kept in its run directory so that a run stopped by a crash or
a kill resumes from the last finished stage instead of training everything again."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.store.files import read_json, write_json

STAGES = "stages.json"
SCHEMA, VERSION = "spconv.gsl-stages", 1


class StageRecord:
    """stages.json: the settings the run was started with and each finished stage's results
    (accuracies, per-layer notes); the weights of a stage are saved beside it before the stage
    is recorded, so a recorded stage always has its weights."""

    def __init__(self, run_dir: Path, settings: dict):
        self.path = run_dir / STAGES
        self.data = {"settings": settings, "stages": {}}
        saved = read_json(self.path, SCHEMA, VERSION)
        if saved is not None:
            if not isinstance(saved, dict) or not isinstance(saved.get("stages"), dict):
                raise HarnessError(f"{self.path}: damaged (no stages); remove it or use a new --out")
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
        write_json(self.path, SCHEMA, VERSION, self.data)

"""Running a planned sweep: points go to an executor, rows to the run's store as they finish."""

from __future__ import annotations

from tqdm import tqdm

from harness.store.runs import RunStore
from harness.sweep.executors.base import Executor
from harness.sweep.executors.inprocess import InProcessExecutor
from harness.sweep.plan import SweepConfig, SweepPoint
from harness.sweep.record import as_json


def run_sweep(cfg: SweepConfig, store: RunStore, points: list[SweepPoint], *,
              progress: bool = True, executor: Executor | None = None,
              should_stop=lambda: False, keep=lambda row: row, desc: str = "sweep") -> int:
    """Measure ``points`` with ``executor`` (in this process by default), appending each row
    that ``keep`` returns (the row itself by default; None: not stored) to ``store`` as it
    finishes; ``should_stop`` is asked between points. Returns the count of rows stored."""
    executor = executor or InProcessExecutor(cfg)
    bar = tqdm(total=len(points), desc=desc, unit="pt", disable=not progress,
               dynamic_ncols=True)
    done = 0
    try:
        for point, row in executor.run(points, should_stop):
            row = keep(row)
            if row is not None:
                store.append(as_json(row))
                done += 1
            bar.set_postfix_str(f"{point.layer.name} s={point.sparsity:.2f} {point.method}")
            bar.update()
    finally:
        bar.close()
        executor.close()
    return done

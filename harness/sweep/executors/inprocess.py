"""Points run one after another in this process (debugging, tests, test doubles)."""

from __future__ import annotations

from harness.sweep.executors.base import Executor
from harness.sweep.plan import SweepConfig
from harness.sweep.runner import PointRunner


class InProcessExecutor(Executor):
    def __init__(self, cfg: SweepConfig):
        cfg.load_plugins()
        self.runner = PointRunner(cfg)

    def run(self, points, should_stop):
        for point in points:
            if should_stop():
                return
            yield point, self.runner.run(point)

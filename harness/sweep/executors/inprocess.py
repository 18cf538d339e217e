"""Points run one after another in this process (debugging, tests, test doubles)."""

from __future__ import annotations

import sys

from harness.machine.caps import dense_caps
from harness.sweep.executors.base import Executor
from harness.sweep.plan import SweepConfig
from harness.sweep.runner import PointRunner


class InProcessExecutor(Executor):
    def __init__(self, cfg: SweepConfig):
        cfg.load_plugins()
        self.runner = PointRunner(cfg)
        caps = dense_caps(cfg.target, cfg.host)
        if caps.active:
            print(f"warning: in this process the dense libraries run at the host's instruction "
                  f"set, not {cfg.target.isa}: their rows are marked uncapped and are no "
                  f"baseline (a worker process gets {caps.describe()})", file=sys.stderr)

    def run(self, points, should_stop):
        for point in points:
            if should_stop():
                return
            yield point, self.runner.run(point)

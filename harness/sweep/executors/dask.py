"""Sweep points on a Dask cluster, routed by architecture.

Workers declare the architecture they can measure as a Dask resource, for example
``dask worker tcp://scheduler:8786 --nthreads 1 --resources "arch-host=1"``; each point asks for
one unit of its profile's resource, so it runs only on such a worker, and a worker with one
unit runs one benchmark at a time. Points run entirely on the worker (build from its own cache,
verify, time) and the rows come back to the driver, the only writer of the results store.
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections import Counter
from pathlib import Path

from harness.errors import HarnessError
from harness.machine.caps import dense_caps
from harness.machine.hostinfo import detect_host
from harness.sweep.executors.base import Executor
from harness.sweep.plan import SweepConfig, SweepPoint
from harness.sweep.record import PointRow, updated
from harness.sweep.runner import PointRunner, failed_row

_runner: tuple[str, PointRunner] | None = None


def resource_name(cfg: SweepConfig) -> str:
    return f"arch-{cfg.profile.name}"


def config_on_worker(cfg: SweepConfig) -> SweepConfig:
    """The sweep's configuration as a task result rather than scattered data: Dask keeps one
    replica of a result (its memory manager drops the others), and only a task can be
    recomputed when the worker holding that replica dies."""
    return cfg


def run_point_on_worker(cfg: SweepConfig, sweep_id: str, point: SweepPoint) -> PointRow:
    """Executed on a worker: one runner per sweep and worker process keeps the current
    weights and reference output between points of the same group."""
    global _runner
    from distributed import get_worker

    if _runner is None or _runner[0] != sweep_id:
        cfg.load_plugins()
        # Rows name the host that measured them, not the driver's.
        cfg.host = detect_host()
        _runner = (sweep_id, PointRunner(cfg))
    return updated(_runner[1].run(point), worker_host=socket.gethostname(),
                   worker=get_worker().address)


def check_scheduler_file(path: str | None) -> None:
    """Refuse a scheduler file that does not exist (Dask would wait for it for ever)."""
    if path and not Path(path).is_file():
        raise HarnessError(f"--scheduler-file {path}: no such file (the scheduler writes it "
                           "when it starts)")


class DaskExecutor(Executor):
    def __init__(self, cfg: SweepConfig, address: str | None = None,
                 scheduler_file: str | None = None, retries: int = 1):
        try:
            from distributed import Client
        except ImportError:
            raise HarnessError("the Dask executor needs dask.distributed: pip install "
                               "'sparseconv-harness[distributed]'") from None
        self.cfg, self.retries = cfg, retries
        check_scheduler_file(scheduler_file)
        try:
            self.client = Client(address, scheduler_file=scheduler_file, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise HarnessError(f"cannot reach the Dask scheduler: {exc}") from None
        self.resource = resource_name(cfg)
        caps = dense_caps(cfg.target, cfg.host)
        if caps.active:
            print(f"note: start the {self.resource} workers with {caps.describe()} in their "
                  "environment, or their dense rows are marked uncapped", file=sys.stderr)
        self.hosts: Counter = Counter()
        self._check_workers()

    def _check_workers(self) -> None:
        workers = self.client.scheduler_info().get("workers", {})
        able = {a: w for a, w in workers.items() if w.get("resources", {}).get(self.resource)}
        if not able:
            raise HarnessError(f"no Dask worker declares the resource {self.resource}=1 "
                               f"(start workers with --resources \"{self.resource}=1\")")
        per_host = Counter(w.get("host") for w in able.values())
        crowded = [h for h, n in per_host.items() if n > 1]
        threaded = [a for a, w in able.items() if w.get("nthreads", 1) > 1 or
                    w.get("resources", {}).get(self.resource, 1) > 1]
        if crowded or threaded:
            print(f"warning: benchmarks may overlap: {len(crowded)} host(s) run several "
                  f"{self.resource} workers and {len(threaded)} worker(s) can run more than one "
                  "point at a time; timings then disturb each other", file=sys.stderr)

    def run(self, points, should_stop):
        from distributed import as_completed
        cfg_future = self.client.submit(config_on_worker, self.cfg, pure=False,
                                        resources={self.resource: 1})
        sweep_id = uuid.uuid4().hex
        futures = {}
        for point in points:
            fut = self.client.submit(run_point_on_worker, cfg_future, sweep_id, point, pure=False,
                                     resources={self.resource: 1}, retries=self.retries)
            futures[fut] = point
        for fut in as_completed(futures):
            point = futures[fut]
            if should_stop():
                for other in futures:
                    other.cancel()
                return
            try:
                row = fut.result()
            except Exception as exc:  # KilledWorker after the retries, or a task error
                row = failed_row(point, self.cfg,
                                 f"{type(exc).__name__} on the cluster: {exc}".splitlines()[0])
            self.hosts[row.worker_host or "?"] += 1
            yield point, row

    def close(self) -> None:
        self.client.close()

"""Points run in a worker process that a crash, an illegal instruction or a hang can take down
without taking the sweep with it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback

from harness import config
from harness.machine.caps import dense_caps
from harness.sweep.executors.base import Executor
from harness.sweep.plan import SweepConfig, SweepPoint
from harness.sweep.record import PointRow
from harness.sweep.runner import PointRunner, failed_row


def _worker_main(cfg: SweepConfig, conn) -> None:
    # The sweep's driver decides when to stop: Ctrl-C must not kill the point in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cfg.load_plugins()
        runner = PointRunner(cfg)
    except Exception as exc:  # reported for every point, the driver records it
        runner, setup_error = None, f"worker setup failed: {exc}"
    while True:
        try:
            point = conn.recv()
        except EOFError:
            return
        if point is None:
            return
        if runner is None:
            conn.send(failed_row(point, cfg, setup_error))
            continue
        try:
            row = runner.run(point)
        except Exception as exc:  # an unexpected failure of one point, not of the sweep
            row = failed_row(point, cfg, f"{type(exc).__name__}: {exc}".splitlines()[0],
                             traceback=traceback.format_exc(limit=5))
        conn.send(row)


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class IsolatedExecutor(Executor):
    """Points run in a worker process. A worker that dies (segmentation fault, illegal
    instruction, abort) or exceeds ``timeout`` seconds on a point is recorded as that point's
    runtime_error, with the signal, and replaced by a fresh worker for the next point."""

    def __init__(self, cfg: SweepConfig, timeout: float = config.POINT_TIMEOUT_S, cpus: list[int] | None = None):
        self.cfg, self.timeout, self.cpus = cfg, timeout, cpus
        # the dense libraries' caps for the profile: read once, when they load in the worker
        self.env = dense_caps(cfg.target, cfg.host).env
        self._ctx = mp.get_context("spawn")  # no fork: OpenMP and BLAS threads do not survive it
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker_main, args=(self.cfg, child), daemon=True)
        # A new process inherits the CPU binding of the thread that starts it, and OpenMP has
        # bound this (main) thread to one core: widen it to the sweep's CPUs while the worker
        # starts, or the worker's OpenMP and BLAS threads would all share that one core.
        bound = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # the worker starts with its caps
        try:
            self._proc.start()
        finally:
            os.sched_setaffinity(0, bound)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self._conn = parent

    def _discard(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def run_one(self, point: SweepPoint) -> PointRow:
        if self._proc is None or not self._proc.is_alive():
            self._discard()
            self._start()
        try:
            self._conn.send(point)
            if self._conn.poll(self.timeout):
                return self._conn.recv()
            reason = f"timed out after {self.timeout:g} s; worker killed"
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self._proc.join(5)
            reason = f"worker died: {_signal_name(self._proc.exitcode)}"
        self._discard()
        return failed_row(point, self.cfg, reason)

    def run(self, points, should_stop):
        for point in points:
            if should_stop():
                return
            yield point, self.run_one(point)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        if self._proc is not None:
            self._proc.join(10)
        self._discard()

"""Sweeps on a local Dask cluster of worker processes on loopback, with declared
architectures: routing, results, resume, and a worker killed mid-sweep."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")
REPO = Path(__file__).resolve().parents[2]
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


class Cluster:
    def __init__(self, tmp: Path):
        self.file = tmp / "scheduler.json"
        self.procs = []
        self.workers = {}
        self.tmp = tmp
        self._spawn([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--scheduler-file", str(self.file), "--no-dashboard"])
        deadline = time.time() + 60
        while not self.file.exists() and time.time() < deadline:
            time.sleep(0.2)

    def _spawn(self, cmd):
        log = open(self.tmp / f"proc{len(self.procs)}.log", "w")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str, arch: str):
        self.workers[name] = self._spawn(
            [DASK, "worker", "--scheduler-file", str(self.file), "--nthreads", "1",
             "--nworkers", "1", "--name", name, "--resources", f"arch-{arch}=1",
             "--no-dashboard", "--host", "127.0.0.1"])

    def wait_for(self, count: int):
        from distributed import Client
        with Client(scheduler_file=str(self.file), timeout="30s") as c:
            c.wait_for_workers(count, timeout=120)
            return {w["name"]: a for a, w in c.scheduler_info()["workers"].items()}

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


ARGS = ["--layers", "conv4,conv5", "--sparsity", "0.6,0.8,0.9", "--repeats", "2",
        "--min-time", "0.005", "--methods", "direct_sparse,lowered_sparse,dense_gemm",
        "--no-progress", "--no-fit"]


def sweep(cluster, out, *extra):
    return subprocess.run([sys.executable, str(REPO / "run_sweep.py"), *ARGS, "--scheduler-file",
                           str(cluster.file), "--out", str(out), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_points_route_to_their_architecture_and_resume(cluster, tmp_path):
    cluster.add_worker("host-a", "host")
    cluster.add_worker("host-b", "host")
    cluster.add_worker("atom", "atom-c2750")
    names = cluster.wait_for(3)
    proc = sweep(cluster, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(table) == 2 * (3 * 2 + 1) and (table["status"] == "ok").all()
    assert set(table["worker"]) <= {names["host-a"], names["host-b"]}
    assert names["atom"] not in set(table["worker"])
    again = sweep(cluster, tmp_path / "run", "--resume")
    assert again.returncode == 0 and "0 of 14 points to measure" in again.stderr


def test_no_worker_of_the_architecture_is_a_clear_error(cluster, tmp_path):
    cluster.add_worker("atom", "atom-c2750")
    cluster.wait_for(1)
    proc = sweep(cluster, tmp_path / "run")
    assert proc.returncode == 2 and "arch-host=1" in proc.stderr


def test_killed_worker_loses_nothing(cluster, tmp_path):
    # host-b joins after the sweep has started, so the sweep's configuration lives only on
    # host-a when host-a is killed: the remaining points must still run on host-b.
    cluster.add_worker("host-a", "host")
    cluster.wait_for(1)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_sweep.py"), *ARGS,
                             "--scheduler-file", str(cluster.file), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "points.jsonl").exists() and (out / "points.jsonl").read_text().count("\n") >= 3:
            break
        time.sleep(0.1)
    cluster.add_worker("host-b", "host")
    cluster.wait_for(2)
    os.killpg(cluster.workers["host-a"].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 14 and table["key"].is_unique
    # a point in flight on the dead worker is retried elsewhere, or recorded as failed
    assert set(table["status"]) <= {"ok", "runtime_error"}
    failed = table.loc[table["status"] != "ok", "reason"]
    assert len(failed) <= 1, failed.tolist()

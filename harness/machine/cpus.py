"""CPUs a sweep claims on this host, so that two sweeps running at once time on different
cores instead of both pinning themselves to the first ones.

A claim is an flock on ``cpus/cpu-<n>.lock`` in the cache directory: the kernel releases it
when the process ends, however it ends, so a crashed sweep never leaves a CPU claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field

from harness.machine.build import cache_root
from harness.store.files import writable_dir


@dataclass
class CpuClaim:
    cpus: list[int]          # the CPUs this process pins itself to
    shared: list[int]        # those of them another live sweep also holds
    _files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def claim_cpus(count: int, allowed: list[int]) -> CpuClaim:
    """The first ``count`` CPUs of ``allowed`` that no other sweep holds; when too few are
    free, the free ones and then the least recently claimed others, reported as shared."""
    directory = writable_dir(cache_root() / "cpus", "CPU claims")
    free, busy, files = [], [], []
    for cpu in allowed:
        if len(free) == count:
            break
        f = open(directory / f"cpu-{cpu}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            busy.append(cpu)
            continue
        free.append(cpu)
        files.append(f)
    shared = busy[:count - len(free)]
    return CpuClaim(sorted(free + shared), shared, files)


def allowed_cpus() -> list[int]:
    """The CPUs this process may use (every CPU where the platform has no affinity)."""
    from harness import STARTUP_CPUS
    if STARTUP_CPUS:
        return STARTUP_CPUS
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def widened_binding():
    """While a library creates its thread pool: the calling thread bound to every CPU the
    process may use. OpenMP binds the main thread to one core at its first parallel region
    (OMP_PROC_BIND), and a new thread inherits its creator's binding, so a pool created after
    that (ONNX Runtime's, DeepSparse's) would crowd onto that one core: ONNX Runtime on 2
    threads ran ResNet-50 2x slower than on one."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    bound = os.sched_getaffinity(0)
    os.sched_setaffinity(0, allowed_cpus())
    try:
        yield
    finally:
        os.sched_setaffinity(0, bound)

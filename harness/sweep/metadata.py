"""What a run needs to be reproduced and trusted: machine, software, build and settings."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

from harness.machine.blas import blas_info
from harness.machine.build import BuiltKernels
from harness.machine.hostinfo import HostInfo
from harness.machine.profiles import Profile
from harness.resources import source_checkout

PACKAGES = ("numpy", "cffi", "pandas", "matplotlib", "PyYAML", "psutil", "threadpoolctl",
            "tqdm", "scipy", "torch", "onnxruntime", "onnx", "dask", "distributed")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def frequency_state() -> dict:
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    freq = psutil.cpu_freq()
    return {
        "governor": _read(f"{cpufreq}/scaling_governor"),
        "driver": _read(f"{cpufreq}/scaling_driver"),
        "boost": _read("/sys/devices/system/cpu/cpufreq/boost"),
        "intel_no_turbo": _read("/sys/devices/system/cpu/intel_pstate/no_turbo"),
        "current_mhz": freq.current if freq else None,
        "max_mhz": freq.max if freq else None,
    }


def git_state() -> dict:
    """The commit of the checkout the tool runs from (none for an installed package)."""
    checkout = source_checkout()
    if checkout is None:
        return {"commit": None, "dirty": None}

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict:
    found = {"python": sys.version.split()[0], "implementation": platform.python_implementation()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def start_metadata(*, profile: Profile, built: BuiltKernels, host: HostInfo, argv: list[str],
                   settings: dict) -> dict:
    return {
        "command_line": argv,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {**host.as_dict(), "platform": platform.platform(),
                 "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "load_average_start": list(os.getloadavg()),
        "frequency": frequency_state(),
        "build": built.metadata(),
        "blas": blas_info(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "cpu_affinity": sorted(psutil.Process().cpu_affinity() or []),
        "versions": versions(),
        "git": git_state(),
        "profile": profile.as_dict(),
        "settings": settings,
    }


def finish_metadata(meta: dict, **extra) -> dict:
    return {**meta, **extra, "end_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_average_end": list(os.getloadavg())}

"""Calibration of the host: peak FMA throughput, triad bandwidth per cache level, SGEMM, and
the roofs of the kernels' inner loop (harness.machine.roofs).

Each number is the median of several samples, reported with its interquartile range. Results
are cached per host and kernel build, so a sweep calibrates once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from harness import config
from harness.machine.blas import blas_summary, blas_threads
from harness.machine.build import BuiltKernels, cache_root
from harness.machine.cpus import allowed_cpus
from harness.machine.hostinfo import HostInfo
from harness.machine.profiles import Profile
from harness.machine.roofs import PAD_PATHS, run_roofs
from harness.store.files import StoreError, move_aside, read_json, write_json
from harness.timing import measure, Timing
from harness.conv.weights import stable_seed


def _stat(value_per_second: float, timing: Timing) -> dict:
    """A rate's median, spread and best sample (the rate of the quiet host: see
    harness.timing.interleaved_fastest)."""
    rates = sorted(value_per_second / t for t in timing.samples)
    q1, q3 = np.percentile(rates, [25, 75])
    return {"median": float(np.median(rates)), "iqr": float(q3 - q1), "best": rates[-1],
            "samples": len(rates)}


def fma_peak(built: BuiltKernels, threads: int, repeats: int) -> dict:
    """GFLOP/s of independent vector FMAs at the build's width, over ``threads`` threads."""
    lib = built.lib
    iterations = 2_000_000
    flops = lib.spconv_fma_flops_per_iteration() * iterations * threads
    timing = measure(lambda: lib.spconv_fma_loop(iterations, threads), repeats=repeats,
                     min_time=0.05)
    return _stat(flops / 1e9, timing)


def triad_bandwidth(built: BuiltKernels, working_set_bytes: int, threads: int,
                    repeats: int) -> dict:
    """GB/s of a = b + s*c with the three arrays together ``working_set_bytes`` long."""
    n = max(1024, working_set_bytes // 12)
    arrays = [np.full(n, v, dtype=np.float32) for v in (0.0, 1.0, 2.0)]
    ptrs = [built.ffi.from_buffer("float[]", a) for a in arrays]
    inner = max(1, int(2e8 // (12 * n)))  # enough passes that one call lasts milliseconds
    timing = measure(lambda: built.lib.spconv_triad(n, inner, 0.5, *ptrs, threads),
                     repeats=repeats, min_time=0.05)
    return {**_stat(12 * n * inner / 1e9, timing), "working_set_kib": 12 * n // 1024}


def sgemm(threads: int, repeats: int, size: int = 1536) -> dict:
    rng = np.random.default_rng(stable_seed("sgemm", size))
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    c = np.empty_like(a)
    with blas_threads(threads):
        timing = measure(lambda: np.matmul(a, b, out=c), repeats=repeats, min_time=0.1)
    return _stat(2 * size**3 / 1e9, timing)


def cache_levels(host: HostInfo) -> dict[str, int]:
    """Triad working sets (bytes) meant to sit in each level: half of it, 4x L2 (the part of
    a large last-level cache nearest a core), and 4x the LLC."""
    caches = host.caches_kib
    levels = {}
    for name in ("l1d", "l2", "l3"):
        if name in caches:
            levels[name] = caches[name] * 1024 // 2
    if "l2" in caches:  # just past L2: where a layer's tensors usually stream from
        levels["past_l2"] = caches["l2"] * 1024 * 4
    llc = max(caches.values(), default=32 * 1024) * 1024
    levels["dram"] = max(4 * llc, 256 << 20)
    return levels


def run_calibration(built: BuiltKernels, host: HostInfo, threads: int,
                    repeats: int = config.CALIBRATION_REPEATS) -> dict:
    levels = cache_levels(host)
    return {
        "host": host.cpu_model, "build_key": built.key, "isa": built.isa, "threads": threads,
        "blas": blas_summary(),
        "fma_gflops_1": fma_peak(built, 1, repeats),
        "fma_gflops_all": fma_peak(built, threads, repeats),
        "triad_gbps_1": {lvl: triad_bandwidth(built, ws, 1, repeats)
                         for lvl, ws in levels.items()},
        "triad_gbps_all": {"dram": triad_bandwidth(built, levels["dram"], threads, repeats)},
        "roofs": run_roofs(built, host, threads),
        # last: OpenBLAS's threads keep spinning after it returns (see timing.POOL_SPIN_S)
        "sgemm_gflops_1": sgemm(1, repeats),
        "sgemm_gflops_all": sgemm(threads, repeats),
    }


SCHEMA, VERSION = "spconv.calibration", 1
REQUIRED = ("fma_gflops_1", "roofs")  # a cached calibration without these is taken afresh
# (a calibration without "rounds" kept the median of its rounds, not the fastest)
REQUIRED_ROOFS = ("tiles", "padding", "branch_miss_s", "call_s", "load_piece_floats", "rounds")


def _complete(cal) -> bool:
    """Whether a cached calibration has every roof this version measures (one taken before a
    roof was added is taken afresh)."""
    return (isinstance(cal, dict) and all(k in cal for k in REQUIRED)
            and all(k in cal["roofs"] for k in REQUIRED_ROOFS)
            and all(path in cal["roofs"]["padding"] for path in PAD_PATHS))


BUSY_SHARE = 0.3  # a calibration CPU more than this busy with other work makes the host busy
BUSY_PROBE_S = 0.25
# A cached calibration whose FMA rate the host no longer reaches within this share (a shared
# host's neighbours, a changed clock) is taken afresh: its prices would be as far off. Not
# tighter: on a shared 2-vCPU Xeon the best of five samples ranged 198-212 GFLOP/s between
# calibrations minutes apart, and a 5% band took one afresh (45 s, and the model's plans
# re-chosen from noisier roofs) in three runs of five.
DRIFT_SHARE = 0.08
# Probes of the FMA rate before a calibration counts as drifted, each of three samples, the
# best kept: a burst of the neighbours' load outlasts one probe (0.2 s) more often than three
# spread over a second, where a changed host stays changed. One probe took the calibration
# afresh (33-45 s) several times in one run of the tests on that Xeon (191 against 215 GFLOP/s).
DRIFT_PROBES = 3
DRIFT_PAUSE_S = 0.3


def calibration_path(built: BuiltKernels, host: HostInfo, threads: int,
                     cache_dir: Path | None = None) -> Path:
    cache = Path(cache_dir) if cache_dir else cache_root() / "calibration"
    key = stable_seed(host.cpu_model, built.key, threads, os.environ.get("OPENBLAS_CORETYPE"))
    return cache / f"calibration-{key}.json"


def busy_reason(threads: int) -> str | None:
    """Why the CPUs a calibration of ``threads`` threads runs on look busy (other work, or
    time stolen by a hypervisor), measured over a short idle pause of this process; or None.
    The process's CPUs, not the calling thread's: OpenMP binds the main thread to one core at
    its first parallel region, and the others would go unprobed. CPU time this process's own
    threads spent in the pause (a library's pool still spinning) is not other work."""
    cpus = allowed_cpus()[:threads]
    own = psutil.Process()
    before, own_before = psutil.cpu_times(percpu=True), own.cpu_times()
    time.sleep(BUSY_PROBE_S)
    after, own_after = psutil.cpu_times(percpu=True), own.cpu_times()
    own_s = (own_after.user - own_before.user) + (own_after.system - own_before.system)
    for cpu in cpus:
        if cpu >= len(after):
            continue
        a, b = before[cpu], after[cpu]
        total = sum(b) - sum(a)
        if total <= 0:
            continue
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0) - getattr(a, "iowait", 0))
        steal = getattr(b, "steal", 0) - getattr(a, "steal", 0)
        if steal / total > 0.05:
            return f"{100 * steal / total:.0f}% of CPU {cpu}'s time stolen by the hypervisor"
        others = total - idle - own_s  # the own threads' time, wherever it ran, taken off
        if others / total > BUSY_SHARE:
            return f"CPU {cpu} {100 * others / total:.0f}% busy with other work"
    return None


# An all-thread FMA rate below this share of threads x the one-thread rate means a core was
# not ours while it ran (a hypervisor's other guests): 2 threads measured 116 GFLOP/s, one
# core's worth, with the second vCPU taken, and a cached calibration kept that peak.
SCALING_SHARE = 0.75


def scaling_reason(cal: dict) -> str | None:
    """Why a calibration's all-thread FMA rate cannot be the host's (far below the one-thread
    rate times the threads it ran on), or None."""
    threads = min(cal["threads"], len(allowed_cpus()))
    one, every = cal["fma_gflops_1"]["best"], cal["fma_gflops_all"]["best"]
    if threads < 2 or every >= SCALING_SHARE * threads * one:
        return None
    return (f"{cal['threads']} threads reached {every:.0f} GFLOP/s of FMAs, "
            f"{every / one:.2f}x one thread's {one:.0f}")


def drift_reason(built: BuiltKernels, cached: dict) -> str | None:
    """Why a cached calibration no longer describes the host (its one-thread FMA rate, probed
    now, moved by more than DRIFT_SHARE), or None. The best sample of up to DRIFT_PROBES
    probes against the calibration's: a burst of load during a probe is no drift (a median
    of the three samples took a calibration afresh when one of them was slow)."""
    then = cached["fma_gflops_1"].get("best", cached["fma_gflops_1"]["median"])
    now = 0.0
    for probe in range(DRIFT_PROBES):
        if probe:
            time.sleep(DRIFT_PAUSE_S)
        now = max(now, fma_peak(built, 1, repeats=3)["best"])
        if abs(now / then - 1.0) <= DRIFT_SHARE:
            return None
    return f"the host's FMA rate is now {now:.0f} GFLOP/s, the calibration's {then:.0f}"


def calibration(built: BuiltKernels, host: HostInfo, threads: int, *,
                cache_dir: Path | None = None, refresh: bool = False) -> dict:
    """The host's calibration for this build, measured once and then read from the cache,
    unless the host's speed has drifted from it since (drift_reason).

    A damaged cache file is moved aside (reported) and measured afresh. A calibration taken
    while the host is busy (other work on its CPUs, threads that do not scale, or an FMA rate
    the host no longer shows right after) is used for this run but not cached (a busy host
    halves the FMA peak that every later fit and percent of peak would divide by)."""
    path = calibration_path(built, host, threads, cache_dir)
    if not refresh:
        try:
            cached = read_json(path, SCHEMA, VERSION)
        except StoreError as exc:
            kept = move_aside(path)
            print(f"warning: {exc}; moved aside as {kept.name}, calibrating afresh",
                  file=sys.stderr)
            cached = None
        if _complete(cached):
            drift = drift_reason(built, cached)
            if drift is None:
                return cached
            print(f"note: {drift}; calibrating afresh", file=sys.stderr)
    before = busy_reason(threads)
    result = run_calibration(built, host, threads)
    # a calibration the drift check would take afresh at once caught a busy minute (or a
    # quiet one) that the probe of the CPUs did not see: one left the AVX2 build's FMA rate
    # at 68 GFLOP/s, where the host reached 107 minutes later
    busy = (before or busy_reason(threads) or scaling_reason(result)
            or drift_reason(built, result))
    result["busy"] = busy
    if busy:
        print(f"warning: the host was busy during calibration ({busy}); its numbers are used "
              "for this run only, not cached. Calibrate again on an idle machine with "
              "`spconv calibrate --refresh`", file=sys.stderr)
    else:
        write_json(path, SCHEMA, VERSION, result)
    return result


def cached_calibration(built: BuiltKernels, host: HostInfo, threads: int, *,
                       cache_dir: Path | None = None, any_build: bool = False) -> dict | None:
    """A calibration of this build on this host already in the cache, without measuring:
    the one of ``threads`` threads, else any other (the kernel costs are per thread; only the
    call overhead of the thread counts differs). None where there is none or it is damaged.

    ``any_build``: where this build has none, the newest one of another build of the same
    instruction set on this host (the kernels changed since it was taken). Good enough to rank
    plans by, where a fit or a prediction needs the build's own: after a change of the
    kernels, prepare() took the default plan until the host was calibrated again, and
    AlexNet's conv2-5 at 90% ran 1.09-1.21x slower with it than with the plans of the
    earlier build's calibration."""
    path = calibration_path(built, host, threads, cache_dir)
    other, other_time = None, -1.0
    for candidate in [path, *sorted(path.parent.glob("calibration-*.json"))]:
        try:
            cal = read_json(candidate, SCHEMA, VERSION)
            mtime = candidate.stat().st_mtime
        except (StoreError, OSError):
            continue
        if not _complete(cal) or cal.get("host") != host.cpu_model:
            continue
        if cal.get("build_key") == built.key:
            return cal
        if any_build and cal.get("isa") == built.isa and mtime > other_time:
            other, other_time = cal, mtime
    return other


def calibrated_profile(profile: Profile, cal: dict) -> Profile:
    """The profile with its missing peak and bandwidth filled from the host's calibration."""
    return dataclasses.replace(
        profile,
        peak_sgemm_gflops=profile.peak_sgemm_gflops or cal["sgemm_gflops_all"]["median"],
        stream_gbps=profile.stream_gbps or cal["triad_gbps_all"]["dram"]["median"])

"""Measuring a kernel: warm-up, repeated samples of a calibrated minimum duration, robust
statistics, and an optional cold-cache mode."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from harness.config import NOISY_IQR

# After its last call a thread pool keeps its threads spinning for a while (OpenBLAS about
# 0.1 s, OpenMP runtimes a few milliseconds), on cores that whatever is timed next needs.
POOL_SPIN_S = 0.15


@dataclass(frozen=True)
class Timing:
    samples: list[float] = field(repr=False)  # seconds per call, one per sample
    calls_per_sample: int
    attempts: int = 1  # timings taken of the same point (steadiest keeps one of them)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def minimum(self) -> float:
        return float(np.min(self.samples))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def cv(self) -> float:
        mean = float(np.mean(self.samples))
        return float(np.std(self.samples) / mean) if mean > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISY_IQR * self.median


class CacheEvictor:
    """Streams through a buffer larger than the last-level cache to push the kernel's data out."""

    def __init__(self, llc_kib: int):
        self._buffer = np.ones(max(4 * llc_kib * 1024 // 8, 1 << 20), dtype=np.float64)

    def __call__(self) -> None:
        self._buffer += 1.0


class PoolSettler:
    """Pauses before timing a kernel when the kernel timed just before it was a different one
    on several threads, until that one's spinning thread pool has gone to sleep: otherwise the
    pool of one library (say OpenBLAS) slows whichever method follows it."""

    def __init__(self, pause: float = POOL_SPIN_S):
        self.pause = pause
        self._last: tuple | None = None

    def __call__(self, kernel: str, threads: int) -> None:
        last, self._last = self._last, (kernel, threads)
        if last is not None and last[1] > 1 and last != self._last:
            time.sleep(self.pause)


def measure(run, *, repeats: int = 7, min_time: float = 0.02, warmup: int = 1,
            evict: CacheEvictor | None = None) -> Timing:
    """Time ``run()``: ``warmup`` calls, then ``repeats`` samples. Warm cache: each sample
    loops the call enough times to last ``min_time`` seconds, so timer resolution and the
    per-call overhead of Python (a few microseconds, see :func:`call_overhead`) vanish.
    Cold cache: each sample is one call after the cache has been evicted."""
    for _ in range(max(warmup, 1)):
        run()
    if evict is not None:
        samples = []
        for _ in range(repeats):
            evict()
            t0 = time.perf_counter()
            run()
            samples.append(time.perf_counter() - t0)
        return Timing(samples, 1)
    t0 = time.perf_counter()
    run()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(np.ceil(min_time / once)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        samples.append((time.perf_counter() - t0) / calls)
    return Timing(samples, calls)


def steadiest(time_once, retries: int) -> Timing:
    """``time_once()``, taken again up to ``retries`` times while the timing is noisy (its
    IQR above NOISY_IQR of its median): a burst of load from elsewhere on a shared machine
    spreads the samples and only ever adds time, so the timing of the lowest median is kept,
    with the number of attempts."""
    timings = [time_once()]
    while timings[-1].noisy and len(timings) <= retries:
        timings.append(time_once())
    best = min(timings, key=lambda t: t.median)
    return dataclasses.replace(best, attempts=len(timings))


def _interleaved(items, time_once, rounds: int) -> dict:
    """Each item's ``time_once(item)`` in ``rounds`` rounds that time every item in turn, so
    drift or a burst of noise on the machine hits every item alike."""
    samples = {item: [] for item in items}
    for _ in range(rounds):
        for item in samples:
            samples[item].append(time_once(item))
    return samples


def interleaved_medians(items, time_once, rounds: int = 3) -> dict:
    """Each item's median time over interleaved rounds (_interleaved)."""
    return {item: float(np.median(v))
            for item, v in _interleaved(items, time_once, rounds).items()}


def interleaved_fastest(items, time_once, rounds: int) -> dict:
    """Each item's fastest time over interleaved rounds (_interleaved): for the calibration's
    short loops, whose cost on a quiet core is fixed. A shared host's load only adds time and
    comes and goes, so the fastest round is that cost, where a median of three still moved
    with the load: the tile prices of three calibrations minutes apart differed by up to 16%
    in their median (an AMD EPYC, Zen 4, shared, AVX2 build)."""
    return {item: float(np.min(v)) for item, v in _interleaved(items, time_once, rounds).items()}

import time

import numpy as np

from harness import timing
from harness.timing import PoolSettler, measure


def test_pause_only_after_a_different_multithreaded_kernel(monkeypatch):
    pauses = []
    monkeypatch.setattr(timing.time, "sleep", pauses.append)
    settle = PoolSettler(pause=0.25)
    sequence = [("dense_gemm", 1), ("direct_sparse", 1),   # nothing multi-threaded yet
                ("dense_gemm", 2), ("dense_gemm", 2),      # the same pool again: no pause
                ("direct_sparse", 2),                      # after OpenBLAS on 2 threads
                ("direct_sparse", 1),                      # after direct on 2 threads
                ("onednn", 1)]                             # after a single thread
    paused = []
    for kernel, threads in sequence:
        before = len(pauses)
        settle(kernel, threads)
        paused.append(len(pauses) > before)
    assert paused == [False, False, False, False, True, True, False]
    assert pauses == [0.25, 0.25]


def test_measure_samples_the_call():
    calls = []
    t = measure(lambda: calls.append(time.perf_counter()), repeats=4, min_time=0.001)
    assert len(t.samples) == 4 and t.calls_per_sample >= 1
    assert len(calls) == 2 + 4 * t.calls_per_sample  # warm-up, the probe call, the samples
    assert np.all(np.array(t.samples) > 0) and t.minimum <= t.median


def _timing(*samples):
    return timing.Timing(list(samples), 1)


def test_steadiest_times_a_noisy_point_again_and_keeps_the_fastest():
    taken = iter([_timing(1.0, 1.5, 2.0, 2.5), _timing(0.9, 1.0, 1.0, 1.1),
                  _timing(0.5, 0.5, 0.5, 0.5)])
    t = timing.steadiest(lambda: next(taken), retries=2)
    assert t.attempts == 2 and t.median == 1.0  # the steady second timing ends the retries
    assert next(taken).median == 0.5            # the third was never taken


def test_steadiest_stops_after_its_retries():
    noisy = [_timing(1.0, 1.0, 2.0, 2.0), _timing(0.8, 0.8, 1.6, 1.6), _timing(1.2, 1.2, 2.4, 2.4)]
    taken = iter(noisy + [_timing(0.1, 0.1, 0.1, 0.1)])
    t = timing.steadiest(lambda: next(taken), retries=2)
    assert t.attempts == 3 and t.noisy and t.median == noisy[1].median
    taken = iter(noisy)
    assert timing.steadiest(lambda: next(taken), retries=0).attempts == 1


def test_interleaved_rounds_time_every_item_in_turn_and_keep_the_fastest_or_median():
    order = []
    seconds = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def time_once(item):
        order.append(item)
        return next(seconds[item])
    assert timing.interleaved_fastest(["a", "b"], time_once, rounds=3) == {"a": 1.0, "b": 4.0}
    assert order == ["a", "b"] * 3  # a burst of load hits both items in the same round
    seconds = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}
    assert timing.interleaved_medians(["a", "b"], time_once, rounds=3) == {"a": 2.0, "b": 5.0}

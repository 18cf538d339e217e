"""Points of a sparse method out of order on their own curve, timed once more.

The same kernel on fewer non-zeros of the same layer does not take longer; on more it takes at
most longer in proportion (its fixed costs only shrink the ratio). On a shared host a burst of
load that outlasts a point's samples slows them all alike, so their spread stays small and the
noisy-point retries (harness.timing.steadiest) do not see it: in one ResNet-50 sweep on an AMD
EPYC (Zen 4), layer4.0.conv1 took 2.61 ms at 40% sparsity and 2.03 ms at 30%, and 1.9 ms at
40% when timed again, which moved its measured crossover by 0.07; on an Intel Xeon, AlexNet
conv4 took 1.71 ms at 50% and 0.96 ms at 60% (1.78x for 1.25x the non-zeros), its measured
crossover 0.53 where a run an hour earlier gave 0.44. After a sweep each such point is timed once
more and the faster of its two timings kept.
"""

from __future__ import annotations

import pandas as pd

from harness.store.runs import RunStore
from harness.sweep.plan import SweepConfig, SweepPoint
from harness.sweep.record import updated
from harness.sweep.results import results_table
from harness.sweep.run import run_sweep

CURVE = ["network", "layer", "method", "pattern", "batch", "threads"]
# slower than a denser point by more than a steady timing's own spread: 10%, the noisy
# points' bound, let AlexNet conv2 stand at 40% sparsity 8% slower than at 30%, its measured
# crossover 0.12 from the predicted (an AMD EPYC, Zen 4); a point timed again that needed no
# retiming costs only its time
OUT_OF_ORDER = 0.02
# slower than a sparser point scaled by the non-zeros it adds, by more than this: a denser
# layer's weights may spill from a cache the sparser one's fit in, which costs more per
# non-zero (a point timed again that needed no retiming costs only its time)
OUT_OF_PROPORTION = 0.15


def out_of_order(frame: pd.DataFrame) -> set[str]:
    """Keys of the sparse methods' rows slower, by more than OUT_OF_ORDER, than the fastest
    row of the same curve at a lower sparsity, or, by more than OUT_OF_PROPORTION, than a row
    at a higher sparsity times the ratio of their densities."""
    ok = frame[(frame["status"] == "ok") & (frame["dense"] != True)]  # noqa: E712
    keys: set[str] = set()
    for _, curve in ok.groupby(CURVE, sort=False):
        curve = curve.sort_values("sparsity")
        fastest_denser = curve["median_s"].cummin().shift(1)
        keys |= set(curve.loc[curve["median_s"] > (1 + OUT_OF_ORDER) * fastest_denser,
                              "key"])
        density = 1.0 - curve["sparsity"]
        # the least time per unit of density among the sparser rows bounds each row's
        per_density = (curve["median_s"] / density)[::-1].cummin()[::-1].shift(-1)
        keys |= set(curve.loc[curve["median_s"] > (1 + OUT_OF_PROPORTION) * per_density * density,
                              "key"])
    return keys


def keep_faster(frame: pd.DataFrame):
    """For run_sweep's ``keep``: a point's new row where it is faster than its row in
    ``frame`` (with both timings' attempts), else None (the earlier row stands)."""
    before = frame.set_index("key")

    def keep(row):
        old = before.loc[row.key]
        if row.status != "ok" or row.median_s >= old["median_s"]:
            return None
        earlier = int(old["attempts"]) if pd.notna(old["attempts"]) else 1
        return updated(row, attempts=int(row.attempts) + earlier)
    return keep


def retime_out_of_order(cfg: SweepConfig, store: RunStore, points: list[SweepPoint],
                        make_executor, *, progress: bool = True,
                        should_stop=lambda: False) -> tuple[int, int]:
    """Time once more each of ``points`` whose stored row is out of order on its curve
    (out_of_order), with an executor from ``make_executor()``, keeping the faster timing.
    Returns how many were timed again and how many came back faster."""
    frame = results_table(store.rows())
    keys = out_of_order(frame)
    again = [p for p in points if p.key in keys]
    if not again:
        return 0, 0
    faster = run_sweep(cfg, store, again, progress=progress, executor=make_executor(),
                       should_stop=should_stop, keep=keep_faster(frame), desc="again")
    return len(again), faster

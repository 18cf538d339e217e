"""Where a speedup curve crosses: the crossover of a model's curve and the upper bound of the
sweet spot, by the rules the measured ones follow."""

from __future__ import annotations

import numpy as np

GAIN_LIMIT = 1.10  # "extra sparsity gains less than 10% speed"


def crossing(f, lo: float, hi: float, target: float) -> float:
    """Smallest s in [lo, hi] with f(s) >= target for increasing f (bisection); NaN if none."""
    if f(hi) < target:
        return float("nan")
    if f(lo) >= target:
        return lo
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return hi


def measured_upper(s: np.ndarray, v: np.ndarray) -> float:
    """Sparsity past which the measured speedup gains less than 10% up to the top of the grid."""
    order = np.argsort(s)
    s, v = s[order], v[order]
    top = v[-1]
    for i in range(len(s)):
        if top / v[i] < GAIN_LIMIT:
            if i == 0:
                return float(s[0])
            # interpolate where v reaches top / GAIN_LIMIT
            goal = top / GAIN_LIMIT
            return float(s[i - 1] + (goal - v[i - 1]) * (s[i] - s[i - 1]) / (v[i] - v[i - 1]))
    return float(s[-1])

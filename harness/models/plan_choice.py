"""Plans chosen by the mechanistic model: for a layer the tuning database holds no plan for,
the plan the model prices fastest, found by the tuner's own search over its plan space with
the model's price in place of a timing (nothing is run).

The search moves only the choices the model ranks well: the register tile, the input-channel
block, the aligned layout and the tile order. The output-channel block, shared padding, bands
and the output-channel group stay at the default plan's: on an Intel Xeon (AVX-512) the model
priced bands of 8 rows 10-20% faster than whole images where they measured slower, and blocks
of 4 output channels as fast as all of them where they measured 40% slower. Over AlexNet
conv1-5 and ResNet-50's 3x3 layers at 70% and 90% its plans ran 0-38% faster than the default
plan (median 11%), two layers 1-11% slower (docs/measurements.md).
"""

from __future__ import annotations

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.kernels.direct import default_plan
from harness.kernels.direct_plan import DirectPlan
from harness.kernels.plans import weights_tuning_key
from harness.machine.build import BuiltKernels, cache_root
from harness.machine.calibrate import cached_calibration
from harness.machine.hostinfo import HostInfo, detect_host
from harness.models.mechanistic import KernelCosts, direct_time
from harness.sweep.tuning import multistart_search, plan_space

HELD_AXES = ("out_channel_block", "shared_padding", "band_rows", "out_group")
SEARCH_BUDGET = 200  # plans priced per layer: a fraction of a second of the model


def model_plan(costs: KernelCosts, w: np.ndarray, spec: ConvSpec, threads: int,
               built: BuiltKernels, l2_bytes: int) -> DirectPlan:
    """The plan the model prices fastest for ``w`` on ``spec`` (HELD_AXES at the default's)."""
    density = np.count_nonzero(w) / w.size
    space = plan_space(spec, built, threads, l2_bytes)
    start = space.normalised(default_plan(spec, built, threads, w))
    for axis in HELD_AXES:
        space.values[axis] = [getattr(start, axis)]
    best, _ = multistart_search(
        space, start, lambda p: direct_time(costs, spec, density, p, threads)["total_s"],
        SEARCH_BUDGET)
    return best


# Memos of this process, keyed by the cache directory too (a test or a user may switch it)
_costs: dict[tuple, KernelCosts] = {}  # (cache, build, host, threads) -> calibrated costs
_chosen: dict[tuple, DirectPlan] = {}  # (cache, tuning key, exact density) -> plan


def _cached_costs(built: BuiltKernels, host: HostInfo, threads: int) -> KernelCosts | None:
    key = (str(cache_root()), built.key, host.cpu_model, threads)
    if key not in _costs:  # looked for again until found: a sweep may calibrate meanwhile
        cal = cached_calibration(built, host, threads)
        if cal is None:
            return None
        _costs[key] = KernelCosts.from_calibration(cal)
    return _costs[key]


def chosen_plan(w: np.ndarray, spec: ConvSpec, threads: int,
                built: BuiltKernels) -> DirectPlan | None:
    """The model's plan for ``w``, or None where this build has no calibration on this host
    in the cache (a sweep, ``spconv calibrate`` or ``spconv predict`` takes one; nothing is
    measured here)."""
    host = detect_host()
    costs = _cached_costs(built, host, threads)
    if costs is None:
        return None
    key = (str(cache_root()), weights_tuning_key(w, spec, threads, built, host.cpu_model),
           round(float(np.count_nonzero(w)) / w.size, 6))
    if key not in _chosen:
        l2 = host.caches_kib.get("l2", 256) * 1024
        _chosen[key] = model_plan(costs, w, spec, threads, built, l2)
    return _chosen[key]

"""Plans chosen by the mechanistic model: for a layer the tuning database holds no plan for,
the plan the model prices fastest, found by the tuner's own search over its plan space with
the model's price in place of a timing (nothing is run).

The search moves only the choices the model ranks well: the register tile, the input-channel
block, the aligned layout and the tile order (tiles outside output channels: on an AMD EPYC,
Zen 5, ResNet-50's 56x56 and 28x28 layers ran 4-16% faster with it, net of the host's drift,
and AlexNet's conv2 at 90% 14%; at 30-50% conv2 ran 5-7% slower, priced faster). The
output-channel block, shared padding, bands and the output-channel group stay at the default
plan's. On an Intel Xeon (AVX-512), searched freely, the model priced bands of 8 rows 10-20%
faster than whole images where they ran slower and blocks of 4 output channels as fast as all
of them where they ran 40% slower: a model that picks the plans it prices lowest meets its
own errors most. Its tiles were held too while it priced narrow or 27-vector tiles over
blocks past L1 30-60% too fast; with split loads and reloads past L1 priced, the tiles it
picks ran 2-15% faster than the widest on every layer where the two differed, at 50-95%
sparsity on an AMD EPYC, Zen 4 (docs/measurements.md).
"""

from __future__ import annotations

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import support_group
from harness.conv.weights import group_pattern
from harness.kernels.direct import plan_with_tile
from harness.kernels.direct_plan import OUT_GROUPS, DirectPlan
from harness.machine.build import BuiltKernels, cache_root
from harness.machine.calibrate import cached_calibration
from harness.machine.hostinfo import HostInfo, detect_host
from harness.machine.isa import isa_table
from harness.models.mechanistic import KernelCosts, direct_time
from harness.sweep.tuning import multistart_search, plan_space_of

HELD_AXES = ("out_channel_block", "shared_padding", "band_rows", "out_group")
SEARCH_BUDGET = 200        # plans priced per layer at most: a fraction of a second
DENSITY_STEP = 0.001       # densities this close share a chosen plan (curves ask for many)


def group_tiles(isa: str, max_tile: int) -> dict[int, int]:
    """The widest register tile per output-channel group of a build of ``isa``: the group's
    tiles and one input vector per tile vector, plus one broadcast, fill the registers
    (GROUP_TILE_MAX in kernels_c/tile.c; a test checks the two agree)."""
    registers = isa_table()[isa].registers
    return {g: max_tile if g == 1 else (registers - 1) // (g + 1) for g in OUT_GROUPS}


def model_plan(costs: KernelCosts, spec: ConvSpec, density: float, threads: int,
               group: int = 1) -> DirectPlan:
    """The plan the model prices fastest for weights of ``density`` (non-zeros shared by
    blocks of ``group`` output channels: priced as that block pattern, not as the union of
    ``group`` random supports, which has 3.4 times the positions for blocks of 4 at 90%) on
    ``spec``, HELD_AXES at the default plan's; memoised on ``costs``."""
    density = max(DENSITY_STEP, round(density / DENSITY_STEP) * DENSITY_STEP)
    key = (spec, density, threads, group)
    if key not in costs.chosen_plans:
        tiles, pattern = group_tiles(costs.isa, costs.max_tile), group_pattern(group)
        space = plan_space_of(spec, costs.lanes, tiles, threads, int(costs.l2_bytes))
        start = space.normalised(plan_with_tile(spec, tiles[group], threads, group))
        for axis in HELD_AXES:
            space.values[axis] = [getattr(start, axis)]
        best, _ = multistart_search(
            space, start,
            lambda p: direct_time(costs, spec, density, p, threads, pattern)["total_s"],
            SEARCH_BUDGET)
        costs.chosen_plans[key] = best
    return costs.chosen_plans[key]


# this process's calibrated costs, by cache directory (a test or a user may switch it), build,
# host and thread count
_costs: dict[tuple, KernelCosts] = {}


def cached_costs(built: BuiltKernels, host: HostInfo, threads: int) -> KernelCosts | None:
    """The calibrated costs of ``built`` on ``host`` for ``threads`` (or, where the cache
    holds none of this build, of an earlier build of its instruction set: they rank plans
    well enough), or None where it holds neither (nothing is measured here)."""
    key = (str(cache_root()), built.key, host.cpu_model, threads)
    if key in _costs:
        return _costs[key]
    # looked for again until this build's own is found: a sweep may calibrate meanwhile
    cal = cached_calibration(built, host, threads, any_build=True)
    if cal is None:
        return None
    found = (str(cache_root()), cal["build_key"], host.cpu_model, threads)
    if found not in _costs:
        _costs[found] = KernelCosts.from_calibration(cal)
    return _costs[found]


def chosen_plan(w: np.ndarray, spec: ConvSpec, threads: int,
                built: BuiltKernels) -> DirectPlan | None:
    """The model's plan for ``w``, or None where this build has no calibration on this host
    in the cache (a sweep, ``spconv calibrate`` or ``spconv predict`` takes one; nothing is
    measured here)."""
    costs = cached_costs(built, detect_host(), threads)
    if costs is None:
        return None
    return model_plan(costs, spec, np.count_nonzero(w) / w.size, threads,
                      support_group(w, conv_groups=spec.groups))

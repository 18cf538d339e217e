"""Autotuning of the direct kernel's plan, with a tuning database so sweeps reuse results.

For one layer shape, density bucket, thread count, kernel build and host, the plan (register
tile, output-channel block, input-channel block, aligned layout, tile order, shared padding,
bands of output rows) is searched over a grid pruned with what the cost model knows (a tile
wider than the output run or an input block that cannot stay in L2 is never faster, nor is a
shared padded image that cannot stay in the threads' L2; fewer work items than threads leave
threads idle). The search is
coordinate descent (every value of one choice tried with the others held at the best plan so
far, choice after choice, until a round improves nothing or the budget of timed plans is
spent) from several starts: the default plan and its variants in layout, and the model's plan
where the host is calibrated, each sized first.
Every candidate is verified against the reference before it is timed; the few fastest are
timed again side by side and the fastest of those is stored. The database (harness.kernels.plans)
is one JSON file updated under a lock, so concurrent sweeps share it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

import harness
from harness import config, kernels
from harness.machine.build import BuiltKernels
from harness.conv.convspec import ConvSpec
from harness.kernels.direct import default_plan
from harness.kernels.direct_plan import OUT_GROUPS, DirectPlan, plan_axes
from harness.kernels.plans import TuningDB, weights_tuning_key
from harness.conv.sparsity import band_height, direct_layout
from harness.timing import interleaved_medians, measure
from harness.conv.verify import expected_output, verify

AXES = plan_axes()  # most telling first


@dataclass(frozen=True)
class PlanSpace:
    """The values each plan choice may take, and which combinations are worth timing."""

    spec: ConvSpec
    threads: int
    l2_bytes: int
    vector: int
    values: dict  # axis -> sorted candidate values
    group_tiles: dict  # out_group -> the widest register tile the build has for it
    group_tile_values: dict  # out_group -> the tile widths tried with it (values' tiles)

    def normalised(self, plan: DirectPlan) -> DirectPlan:
        """The same plan with a tile no wider than the output run (wider ones run the same),
        tile order only where there are several tiles, and no band as tall as the output."""
        band = band_height(self.spec, plan.band_rows)
        layout = direct_layout(self.spec, plan.aligned, self.vector)
        vectors = -(-band * layout.plane_w // self.vector)
        tile = min(plan.tile_vectors, vectors, self.group_tiles[plan.out_group])
        return replace(plan, tile_vectors=tile, tiles_outer=plan.tiles_outer and tile < vectors,
                       band_rows=band if band < self.spec.out_height else 0)

    def feasible(self, plan: DirectPlan) -> bool:
        spec = self.spec
        layout = direct_layout(spec, plan.aligned, self.vector, band_rows=plan.band_rows)
        block_bytes = 4 * plan.channel_block * layout.plane * layout.copies
        image_bytes = 4 * spec.in_channels * layout.plane * layout.copies
        return ((block_bytes <= self.l2_bytes
                 or plan.channel_block == min(self.values["channel_block"]))
                and (not plan.shared_padding or (image_bytes <= self.l2_bytes * self.threads
                                                 and not plan.band_rows))
                and spec.batch * -(-spec.out_channels // plan.out_channel_block)
                * -(-spec.out_height // (plan.band_rows or spec.out_height)) >= self.threads)

    def along(self, plan: DirectPlan, axis: str) -> list[DirectPlan]:
        """The feasible plans that differ from ``plan`` in ``axis`` (and, where the new value
        makes the input block spill L2, in the input-channel block shrunk until it fits)."""
        values = [v for v in self.values[axis]
                  if axis != "tile_vectors" or v in self.group_tile_values[plan.out_group]]
        plans = dict.fromkeys(self.repaired(self.normalised(with_choice(plan, axis, value)))
                              for value in values)
        return [p for p in plans if p != plan and self.feasible(p)]

    def repaired(self, plan: DirectPlan) -> DirectPlan:
        if self.feasible(plan):
            return plan
        smaller = [replace(plan, channel_block=c) for c in self.values["channel_block"]
                   if c < plan.channel_block]
        fits = [p for p in smaller if self.feasible(p)]
        return fits[-1] if fits else plan


def with_choice(plan: DirectPlan, axis: str, value) -> DirectPlan:
    """``plan`` with ``axis`` set to ``value``, its output-channel block rounded up to a
    multiple of the output-channel group (a block of 10 channels cannot hold groups of 4)."""
    fields = {**{"out_group": plan.out_group, "out_channel_block": plan.out_channel_block},
              axis: value}
    group = fields["out_group"]
    return replace(plan, **{**fields,
                            "out_channel_block": -(-fields["out_channel_block"] // group) * group})


def plan_space(spec: ConvSpec, built: BuiltKernels, threads: int, l2_bytes: int) -> PlanSpace:
    return plan_space_of(spec, built.lib.spconv_vector_floats(),
                         {g: built.lib.spconv_max_group_tile(g) for g in OUT_GROUPS},
                         threads, l2_bytes)


def plan_space_of(spec: ConvSpec, vector: int, group_tiles: dict, threads: int,
                  l2_bytes: int) -> PlanSpace:
    """The plan space of a build with ``vector`` lanes and, per output-channel group, the
    widest register tile in ``group_tiles``."""
    vectors = -(-spec.out_height * direct_layout(spec, True, vector).plane_w // vector)
    # per group size: the whole run and fractions of it (as wide as registers allow; narrow
    # tiles suit tiles_outer), and fractions of the register file. A plan tries only its
    # group's widths: the other groups' are the same ones clipped, or narrow ones that, tried
    # with every group, left a search's budget short of good plans on large planes
    group_tile_values = {
        g: sorted({min(max_tile, -(-vectors // parts)) for parts in (1, 2, 3, 6)}
                  | {max_tile, max(1, max_tile // 2), max(1, (max_tile * 2) // 3)})
        for g, max_tile in group_tiles.items()}
    tiles = set().union(*group_tile_values.values())
    out_blocks = {4, 16, 32, 64, 128, -(-spec.out_channels // threads), spec.out_channels}
    channels = spec.in_channels
    stride_one = spec.stride == (1, 1) and spec.kernel_w > 1
    return PlanSpace(spec, threads, l2_bytes, vector, {
        "tile_vectors": sorted(tiles),
        "out_channel_block": sorted(b for b in out_blocks if b <= spec.out_channels),
        "channel_block": sorted({c for c in (2, 4, 8, 16, 32, 64, channels) if c <= channels}),
        "aligned": [False, True] if stride_one else [False],
        "tiles_outer": [False, True],
        "shared_padding": [False, True],
        # bands of output rows keep a large image's input block in cache
        "band_rows": [0] + [b for b in (2, 4, 8, 16, 32) if b < spec.out_height],
        "out_group": list(OUT_GROUPS)}, group_tiles, group_tile_values)


def coordinate_search(space: PlanSpace, start: DirectPlan, cost, budget: int,
                      costs: dict | None = None, axes: tuple[str, ...] = AXES):
    """Coordinate descent over ``axes`` from ``start``, until ``costs`` (every plan timed so
    far, shared between searches) holds ``budget`` plans; returns the best plan it reached
    and ``costs``."""
    costs = {} if costs is None else costs

    def cost_of(plan):
        if plan not in costs and len(costs) < budget:
            costs[plan] = cost(plan)
        return costs.get(plan, float("inf"))

    best = start
    cost_of(best)
    improved = True
    while improved and len(costs) < budget:
        improved = False
        for axis in axes:
            for plan in space.along(best, axis):
                if cost_of(plan) < cost_of(best):
                    best, improved = plan, True
    return best, costs


LAYOUT_AXES = ("aligned", "tiles_outer")  # change which tile and input block suit a plan
SIZE_AXES = ("tile_vectors", "channel_block", "band_rows")


def multistart_search(space: PlanSpace, start: DirectPlan, cost, budget: int,
                      more_starts: tuple[DirectPlan, ...] = ()):
    """Coordinate descent from several starts: ``start`` and its variants in the layout
    choices, and ``more_starts`` as they are, each first sized (tile, then input-channel
    block) with an equal share of two thirds of the budget, then a full descent from the best
    plan with the rest. A single descent from one start stops at the first layout that beats
    its neighbours at the start's sizes, while another layout may win by more once its own
    sizes are found."""
    starts = [start]
    for axis in LAYOUT_AXES:
        starts += [p for s in starts for p in space.along(s, axis)]
    starts = list(dict.fromkeys([*starts, *more_starts]))
    costs: dict = {}
    share = max(1, (2 * budget // 3) // len(starts))
    for s in starts:
        coordinate_search(space, s, cost, min(budget, len(costs) + share), costs, SIZE_AXES)
    best = min(costs, key=costs.get)
    return coordinate_search(space, best, cost, budget, costs)


def tune(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels, *, host: str,
         l2_bytes: int, budget: int = config.TUNE_BUDGET, db: TuningDB | None = None,
         min_time: float = config.TUNE_MIN_TIME_S,
         seed: int = 0) -> tuple[DirectPlan, dict]:
    """Search plans for ``w`` on ``spec``; store and return the fastest correct one."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    expected = expected_output(x, w, None, spec, relu=False)
    out = np.empty(spec.output_shape, np.float32)

    def time_plan(plan: DirectPlan) -> float:
        k = kernels.prepare(w, input_shape=spec.input_shape, stride=spec.stride,
                            padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                            threads=threads, kernels=built, plan=plan)
        out.fill(np.nan)
        k(x, out=out)
        if not verify(out, expected).ok:
            raise RuntimeError(f"direct kernel wrong with plan {plan}")  # a kernel bug: stop
        return measure(lambda: k(x, out=out), repeats=3, min_time=min_time).median

    space = plan_space(spec, built, threads, l2_bytes)
    start = space.normalised(default_plan(spec, built, threads, w))
    # the plan prepare() would run untuned (the model's, where this host is calibrated) is a
    # start too: a search from the default plan alone, with a budget shared by eight choices,
    # stopped at plans up to 18% slower than it on large planes (docs/measurements.md)
    modelled = harness.model_plan(w, spec, threads, built)
    more = (space.normalised(modelled),) if modelled is not None else ()
    _, costs = multistart_search(space, start, time_plan, budget, more)
    finalists = sorted(costs, key=costs.get)[:config.TUNE_FINALISTS]
    for plan in (start, *more):  # their times measured alongside the best: never worse
        if plan not in finalists:
            finalists.append(plan)
    medians = interleaved_medians(finalists, time_plan)
    best = min(medians, key=medians.get)
    info = {"time_s": medians[best], "default_time_s": medians[start], "candidates": len(costs),
            **({"model_time_s": medians[more[0]]} if more else {})}
    (db or TuningDB()).put(weights_tuning_key(w, spec, threads, built, host), best, info)
    return best, info


def tuned_plan(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels, *, host: str,
               search: bool, l2_bytes: int, budget: int = config.TUNE_BUDGET,
               db: TuningDB | None = None) -> DirectPlan | None:
    """The stored plan for ``w``'s layer, density bucket and thread count; when there is none
    and ``search`` is set, the one a search finds (and stores); else None."""
    db = db or TuningDB()
    plan = db.get(weights_tuning_key(w, spec, threads, built, host))
    if plan is None and search:
        plan, _ = tune(w, spec, threads, built, host=host, l2_bytes=l2_bytes, budget=budget, db=db)
    return plan

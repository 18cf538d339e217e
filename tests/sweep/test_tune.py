from dataclasses import replace

import pandas as pd

from harness.cli.sweep import main
from harness.kernels.direct import default_out_block, default_plan
from harness.kernels.direct_plan import DirectPlan
from harness.kernels.native import host_kernels
from harness.conv.layers import LayerShape
from harness.conv.sparsity import random_sparse_weights
from harness.kernels.plans import TuningDB, density_bucket, tuning_key
from harness.sweep.tuning import (AXES, coordinate_search, multistart_search, plan_space, tune,
                                  tuned_plan, with_choice)


def test_density_buckets():
    assert density_bucket(0.1000002) == 0.1 and density_bucket(0.15) == 0.2
    assert density_bucket(0.0) == 0.01 and density_bucket(0.999) == 1.0


def test_plan_space_neighbours_are_feasible_and_differ_in_one_choice():
    spec = LayerShape("t", "c", 64, 13, 13, 96, 3, 1, 1).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 2, 1 << 20)
    start = space.normalised(replace(default_plan(spec, built, 2), tile_vectors=5))
    vectors = -(-13 * 16 // built.lib.spconv_vector_floats())
    for axis in AXES:
        plans = space.along(start, axis)
        assert plans and len(set(plans)) == len(plans) and start not in plans
        for p in plans:
            changed = [a for a in AXES if getattr(p, a) != getattr(start, a)]
            # a new layout may clamp the tile or need a smaller input block to stay in L2
            assert axis in changed and set(changed) <= {axis, "tile_vectors", "channel_block"}
            assert p.tile_vectors <= vectors
            assert -(-96 // p.out_channel_block) >= 2  # every thread gets work
    assert any(p.aligned for p in space.along(start, "aligned"))
    big = DirectPlan(start.tile_vectors, start.out_channel_block, 64, False)  # 58 KiB; aligned 184
    tight = plan_space(spec, built, 2, 64 * 1024)
    moved = tight.along(big, "aligned")
    assert moved and all(p.aligned and p.channel_block < 64 and tight.feasible(p) for p in moved)


def test_group_moves_keep_the_output_block_a_multiple_of_the_group():
    # ResNet-50's stem: the default output block (10 channels) holds no whole group of 4
    spec = LayerShape("t", "c", 3, 224, 224, 64, 7, 2, 3).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 1, 1 << 20)
    start = space.normalised(replace(default_plan(spec, built, 1), out_channel_block=10))
    grouped = space.along(start, "out_group")
    assert {p.out_group for p in grouped} == {2, 4}
    assert all(p.out_channel_block % p.out_group == 0 and p.out_channel_block >= 10
               for p in grouped)
    assert with_choice(replace(start, out_group=4, out_channel_block=12), "out_channel_block",
                       5).out_channel_block == 8


def test_shared_padding_only_where_the_padded_image_stays_in_l2():
    spec = LayerShape("t", "c", 64, 13, 13, 96, 3, 1, 1).spec(1)
    built = host_kernels()
    shared = DirectPlan(5, 48, 8, aligned=True, shared_padding=True)  # 64 x 3 x 15 x 16 floats
    image = 4 * 64 * 3 * 15 * 16
    assert plan_space(spec, built, 2, image // 2).feasible(shared)  # two threads' L2 hold it
    assert not plan_space(spec, built, 1, image // 2).feasible(shared)
    assert not any(p.shared_padding for p in
                   plan_space(spec, built, 1, image // 2).along(replace(shared, shared_padding=False),
                                                                "shared_padding"))


def test_bands_of_output_rows_in_the_plan_space():
    spec = LayerShape("t", "c", 64, 112, 112, 64, 3, 1, 1).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 1, 1 << 20)
    plan = DirectPlan(7, 64, 16, aligned=True)
    assert space.normalised(replace(plan, band_rows=112)).band_rows == 0  # one band: none
    assert not space.feasible(plan)  # 16 channels of 114 x 112 x 3 copies spill L2
    neighbours = space.along(plan, "band_rows")
    assert all(space.feasible(p) for p in neighbours)
    whole = [p for p in neighbours if not p.band_rows]
    assert whole and all(p.channel_block < 16 for p in whole)  # shrunk to fit L2
    assert max(p.channel_block for p in neighbours if p.band_rows) == 16  # a band's block fits
    shared = replace(plan, channel_block=2, shared_padding=True)
    assert not any(p.band_rows for p in plan_space(spec, built, 2, 1 << 30).along(shared, "band_rows"))


def test_coordinate_search_finds_a_separable_optimum_within_budget():
    spec = LayerShape("t", "c", 64, 13, 13, 96, 3, 1, 1).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 1, 1 << 20)
    target = DirectPlan(space.group_tile_values[1][1], 32, 16, True)
    calls = []

    def cost(plan):  # a bowl around the target, one term per choice
        calls.append(plan)
        return (abs(plan.tile_vectors - target.tile_vectors) + abs(plan.out_channel_block - 32)
                + abs(plan.channel_block - 16) + 5 * (not plan.aligned))

    start = space.normalised(default_plan(spec, built, 1))
    best, costs = coordinate_search(space, start, cost, budget=40)
    assert best == target and len(set(calls)) == len(calls) <= 40
    calls.clear()
    coordinate_search(space, start, cost, budget=3)
    assert len(calls) == 3  # the budget caps the plans timed


def test_multistart_search_finds_a_layout_that_wins_only_at_its_own_tile():
    spec = LayerShape("t", "c", 64, 27, 27, 96, 5, 1, 2).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 1, 1 << 20)
    start = space.normalised(default_plan(spec, built, 1))
    assert not start.aligned and not start.tiles_outer
    tile = space.group_tile_values[1][1]
    assert tile != start.tile_vectors

    def cost(plan):  # aligned tiles-outer plans lose except at one tile, where they win
        if plan.aligned and plan.tiles_outer:
            return 1.0 if plan.tile_vectors == tile else 10.0
        return 5.0 + (plan.aligned or plan.tiles_outer) + 0.01 * plan.tile_vectors

    single, _ = coordinate_search(space, start, cost, budget=40)
    assert cost(single) >= 5  # one descent from the default never leaves its layout
    best, costs = multistart_search(space, start, cost, budget=24)
    assert cost(best) == 1.0 and len(costs) <= 24


def test_multistart_search_sizes_a_further_start_as_it_is(rng):
    spec = LayerShape("t", "c", 64, 27, 27, 96, 5, 1, 2).spec(1)
    built = host_kernels()
    space = plan_space(spec, built, 1, 1 << 20)
    start = space.normalised(default_plan(spec, built, 1))
    far = space.normalised(replace(start, out_channel_block=4, channel_block=2, aligned=True,
                                   tiles_outer=True, band_rows=2))
    assert space.feasible(far)

    def cost(plan):  # only plans near the far start win; the default's region is flat
        return 1.0 + 0.1 * plan.channel_block if plan.band_rows == 2 and plan.aligned else 50.0

    alone, _ = multistart_search(space, start, cost, budget=24)
    assert cost(alone) == 50.0
    best, costs = multistart_search(space, start, cost, budget=24, more_starts=(far,))
    assert far in costs and cost(best) <= cost(far) < 50.0 and len(costs) <= 24


def test_tune_stores_best_plan_and_sweep_reuses_it(tmp_path, rng):
    layer = LayerShape("alexnet", "conv5", 384, 13, 13, 256, 3, 1, 1, groups=2)
    spec = layer.spec(1)
    w = random_sparse_weights(spec.weight_shape, 0.9, rng)
    db = TuningDB(tmp_path / "tuning.json")
    built = host_kernels()
    plan, info = tune(w, spec, 1, built, host="test", l2_bytes=1 << 20, budget=5, db=db,
                      min_time=0.002)
    assert isinstance(plan, DirectPlan) and info["time_s"] <= info["default_time_s"]
    assert db.get(tuning_key(spec, 0.1, 1, built, "test")) == plan
    assert db.get(tuning_key(spec, 0.5, 1, built, "test")) is None  # another density bucket
    assert tuned_plan(w, spec, 1, built, host="test", search=False, l2_bytes=1 << 20, db=db) == plan
    w_half = random_sparse_weights(spec.weight_shape, 0.5, rng)
    assert tuned_plan(w_half, spec, 1, built, host="test", search=False, l2_bytes=1 << 20,
                      db=db) is None  # nothing stored and no search asked for


def test_tune_times_the_model_plan_beside_the_best(tmp_path, rng, monkeypatch):
    import harness
    layer = LayerShape("alexnet", "conv5", 384, 13, 13, 256, 3, 1, 1, groups=2)
    spec = layer.spec(1)
    w = random_sparse_weights(spec.weight_shape, 0.9, rng)
    built = host_kernels()
    modelled = DirectPlan(4, 32, 16, True, True)
    monkeypatch.setattr(harness, "model_plan", lambda *args: modelled)
    plan, info = tune(w, spec, 1, built, host="test", l2_bytes=1 << 20, budget=5,
                      db=TuningDB(tmp_path / "tuning.json"), min_time=0.002)
    assert info["time_s"] <= min(info["default_time_s"], info["model_time_s"])


def test_sweep_searches_then_reuses(tmp_path):
    args = ["--layers", "conv5", "--sparsity", "0.9", "--methods", "direct_sparse,dense_gemm",
            "--repeats", "1", "--min-time", "0", "--no-progress", "--no-fit", "--tune-budget", "3"]
    assert main([*args, "--out", str(tmp_path / "a"), "--tune", "search"]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # default: cached plans
    for run in ("a", "b"):
        t = pd.read_csv(tmp_path / run / "results.csv")
        assert (t.loc[t["method"] == "direct_sparse", "tuned"] == "tuned").all()
    assert main([*args, "--out", str(tmp_path / "c"), "--tune", "off"]) == 0
    t = pd.read_csv(tmp_path / "c" / "results.csv")
    assert (t.loc[t["method"] == "direct_sparse", "tuned"] == "default").all()


def test_prepare_runs_the_stored_plan_of_its_shape(rng, monkeypatch):
    """The Python API is as fast as a tuned sweep: prepare() without a plan takes the tuning
    database's plan for the shape, density bucket, threads, build and host."""
    import harness
    from harness import kernels
    monkeypatch.setattr(harness, "model_plan", lambda *a: None)  # as on an uncalibrated host
    from harness.kernels.plans import TuningDB
    from harness.machine.hostinfo import detect_host
    layer = LayerShape("api", "t", 16, 11, 11, 24, 3, 1, 1)
    spec = layer.spec(1)
    w = random_sparse_weights(spec.weight_shape, 0.9, rng)
    built = host_kernels()
    db = TuningDB()  # the session's, which prepare() reads
    plan, _ = tune(w, spec, 1, built, host=detect_host().cpu_model, l2_bytes=1 << 20, budget=4,
                   db=db, min_time=0.002)
    k = kernels.prepare(w, input_shape=spec.input_shape, padding=1)
    assert k.describe()["plan_source"] == "tuned" and k.plan == plan
    other = random_sparse_weights(spec.weight_shape, 0.5, rng)  # another density bucket
    k = kernels.prepare(other, input_shape=spec.input_shape, padding=1)
    assert k.describe()["plan_source"] == "default"
    assert k.plan == default_plan(spec, built, 1)


def test_default_work_items_hold_a_conv_group_and_split_only_for_threads():
    # ResNet-50's 56x56 expanding 1x1 layer: 3.2 MB of accumulators, still one item
    wide = LayerShape("t", "c", 64, 56, 56, 256, 1).spec(1)
    assert default_out_block(wide, 1) == 256
    assert default_out_block(wide, 2) == 128  # one item per thread of the image
    assert default_out_block(LayerShape("t", "c", 64, 56, 56, 256, 1).spec(2), 2) == 256
    grouped = LayerShape("t", "c", 96, 27, 27, 256, 5, 1, 2, 1, 2).spec(1)  # AlexNet conv2
    assert default_out_block(grouped, 1) == 128  # an item pads only its group's inputs
    assert default_out_block(LayerShape("t", "c", 3, 9, 9, 10, 3).spec(1), 1, 4) == 12

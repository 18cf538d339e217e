"""The mechanistic models of the direct and pointwise kernels and the calibration they are
priced by."""

import dataclasses

import numpy as np
import pytest

from harness.conv.convspec import ConvSpec
from harness.kernels.direct_plan import DirectPlan
from harness.machine import roofs
from harness.machine.hostinfo import detect_host
from harness.machine.isa import isa_table
from harness.kernels.native import host_kernels
from harness.models.mechanistic import (KernelCosts, accumulator_extra_s, direct_time,
                                        even_split, plan_for, predicted_sweet_spot,
                                        reuse_share, steady_fixed_costs,
                                        support_probability)
from harness.models.pointwise_model import l1_miss_share, pointwise_time
from harness.models.prepared import prepared_time

CONV3 = ConvSpec.from_shapes((1, 256, 13, 13), (384, 256, 3, 3), 1, 1)


def synthetic_costs(lanes=16, max_tile=28, slow_l2=4.0, split_penalty=1.5) -> KernelCosts:
    """Rates of a made-up machine: a position costs 0.25 ns per vector of its tile in L1,
    ``slow_l2`` times that past L1, ``split_penalty`` times that with every load split."""
    levels = {"l1": 12 << 10, "l2": 1 << 20, "l3": 8 << 20}
    tiles = {}
    for g, widest in ((1, max_tile), (2, 10), (4, 6)):
        for t in roofs.measured_widths(widest):
            for lvl in levels:
                base = 0.25e-9 * t * g ** 0.5 * (1.0 if lvl == "l1" else slow_l2)
                for offsets, f in (("aligned", 1.0), ("random", split_penalty)):
                    tiles[f"{g}/{t}/{lvl}/{offsets}"] = {"position_s": base * f,
                                                         "call_s": 2e-9 * t}
    return KernelCosts(tiles, {f"{lvl}/random": 1.0 for lvl in levels}, levels,
                       {1: 2e-6, 2: 4e-6},
                       {"l1d": (24 << 10, 100.0), "l2": (1 << 20, 50.0), "dram": (1 << 30, 10.0)},
                       lanes, max_tile, "avx512", SYNTHETIC_PADDING, 5e-9)


# 1 ns per row and 0.1 ns per float, twice that at stride 2 and more (and per shifted copy)
SYNTHETIC_PADDING = {path: {"widths": [7, 56, 224],
                            "row_s": [(1.0 if stride == 1 else 2.0) * (1e-9 + 1e-10 * w)
                                      for w in (7, 56, 224)]}
                     for path, (stride, _, _) in roofs.PAD_PATHS.items()}


def work(t: dict) -> float:
    """The register tiles' share of a predicted call."""
    return t["tiles_s"] + t["split_loads_s"] + t["reloads_s"]


def test_even_split_matches_the_kernels_tiles():
    assert even_split(13, 28) == [13]
    assert even_split(30, 14) == [10, 10, 10]
    assert sum(even_split(196, 28)) == 196 and max(even_split(196, 28)) <= 28


def test_missing_tile_widths_are_interpolated_between_calibrated_ones():
    costs = synthetic_costs()
    assert 9 not in roofs.measured_widths(28)
    a, b = (costs.tile(1, w, "l1", "aligned")["position_s"] for w in (8, 12))
    assert costs.tile(1, 9, "l1", "aligned")["position_s"] == pytest.approx(a + (b - a) / 4)


def test_time_grows_with_density_and_falls_with_threads():
    costs = synthetic_costs()
    plan = plan_for(CONV3, 28, 1, None)
    times = [direct_time(costs, CONV3, d, plan, 1)["total_s"] for d in (0.05, 0.1, 0.3, 0.7)]
    assert all(a < b for a, b in zip(times, times[1:]))
    two = plan_for(CONV3, 28, 2, None)
    assert direct_time(costs, CONV3, 0.3, two, 2)["total_s"] < 0.7 * times[2]


def test_split_loads_and_working_sets_are_priced():
    costs = synthetic_costs()
    # blocks of 4 channels: both layouts within the L1 working set of the made-up machine
    unaligned = DirectPlan(13, 384, 4)
    aligned = DirectPlan(13, 384, 4, aligned=True)
    a = direct_time(costs, CONV3, 0.3, aligned, 1)
    u = direct_time(costs, CONV3, 0.3, unaligned, 1)
    assert a["split"] == 0.0 and u["split"] > 0.8
    assert a["split_loads_s"] == 0.0 and u["split_loads_s"] > 0.0
    assert work(u) > 1.15 * work(a)  # positions cost 1.5x, tile calls the same
    small = direct_time(costs, CONV3, 0.3, DirectPlan(13, 384, 4, aligned=True), 1)
    big = direct_time(costs, CONV3, 0.3, DirectPlan(13, 384, 256, aligned=True), 1)
    assert big["block_bytes"] > 8 * small["block_bytes"]
    # the same positions, read from a block past L1: dearer per position
    assert work(big) > work(small)


def test_accumulators_share_the_caches_with_the_block():
    costs = synthetic_costs()  # triad: 100 GB/s to 24 KiB, 50 to 1 MiB, 10 beyond
    moved, runs = 2 * 4 * 28 * 16, 512 << 10  # priced over L1 (its smallest level, 12 KiB)
    small_block = accumulator_extra_s(costs, moved, runs, 32 << 10)
    big_block = accumulator_extra_s(costs, moved, runs, 1 << 20)
    assert small_block > 0.0  # runs past L1
    assert big_block > 1.5 * small_block  # runs and block together past L2
    assert accumulator_extra_s(costs, moved, 4 << 10, 4 << 10) == 0.0  # all within L1


def test_block_patterns_share_supports():
    assert support_probability(0.1, 4, "block:4") == pytest.approx(0.1)
    assert support_probability(0.1, 2, "block:4") == pytest.approx(0.1)
    assert support_probability(0.1, 4, "random") == pytest.approx(1 - 0.9 ** 4)
    costs = synthetic_costs()
    grouped = DirectPlan(6, 384, 16, aligned=True, out_group=4)
    assert work(direct_time(costs, CONV3, 0.1, grouped, 1, "block:4")) < \
        work(direct_time(costs, CONV3, 0.1, grouped, 1, "random"))


def test_sweet_spot_of_a_known_curve():
    grid = np.round(np.arange(0.0, 0.951, 0.01), 2)
    spot = predicted_sweet_spot(lambda s: 0.5 / (1.0 - s), grid)  # 1 at s = 0.5
    assert spot["predicted_crossover"] == pytest.approx(0.5, abs=1e-9)
    assert spot["predicted_speedup_at_top"] == pytest.approx(10.0)
    assert 0.9 < spot["predicted_upper"] <= 0.95


def test_split_fraction_by_vector_width():
    offsets = np.array([0, 16, 32])
    assert roofs.split_fraction(offsets, 4, 16) == 0.0
    assert roofs.split_fraction(offsets + 1, 4, 16) == 1.0
    # 8-float vectors from offset 4: every other load crosses a line
    assert roofs.split_fraction(np.array([4]), 2, 8) == 0.5


def test_split_fraction_of_loads_made_in_halves():
    """A 14x14 plane puts channels at offsets 0, 4, 8 and 12 of a line: every load but the
    aligned one straddles, but loaded in halves, the one at 8 straddles at its middle only."""
    offsets = 196 * np.arange(64)
    assert roofs.split_fraction(offsets, 3, 16) == 0.75
    assert roofs.split_fraction(offsets, 3, 16, piece=8) == 0.5
    assert roofs.split_fraction(np.array([8]), 1, 16, piece=8) == 0.0


@pytest.mark.parametrize("middle, expected", [(1.0e-9, "half"), (2.0e-9, "whole")])
def test_load_piece_from_the_cost_of_a_load_straddling_at_its_middle(monkeypatch, middle,
                                                                      expected):
    """Positions cost 1 ns aligned and 2 ns straddling a line one float in; at the middle
    they cost as aligned ones (loads in halves) or as split ones (whole loads)."""
    per = {"aligned": 1e-9, "middle": middle, "edge": 2e-9}
    monkeypatch.setattr(roofs, "interleaved_fastest",
                        lambda keys, f, rounds: {(n, p): per[n] * p for n, p in keys})
    built = host_kernels()
    vec = built.lib.spconv_vector_floats()
    assert roofs.load_piece(built) == (vec // 2 if expected == "half" else vec)


def test_loads_straddling_at_their_middle_are_not_priced_as_split_where_made_in_halves():
    layer = ConvSpec.from_shapes((1, 1024, 14, 14), (256, 1024, 1, 1), 1, 0)
    plan = plan_for(layer, 28, 1, None)
    whole = direct_time(synthetic_costs(), layer, 0.3, plan, 1)
    halves = direct_time(dataclasses.replace(synthetic_costs(), load_piece=8), layer, 0.3,
                         plan, 1)
    # channels at offsets 0, 4, 8, 12 of a line: 3 of 4 split, 2 of 4 in halves
    assert halves["split"] == pytest.approx(whole["split"] * 2 / 3) and halves["split"] > 0
    assert halves["split_loads_s"] == pytest.approx(whole["split_loads_s"] * 2 / 3)


def test_tile_calibration_on_this_host(monkeypatch):
    """The real measurement, cut to two tiles and two working sets."""
    built, host = host_kernels(), detect_host()
    wide = min(12, built.lib.spconv_max_tile_vectors())
    monkeypatch.setattr(roofs, "tile_shapes", lambda b: [(1, 1), (1, wide)])
    monkeypatch.setattr(roofs, "level_bytes", lambda h: {"l1": 8 << 10, "l2": 256 << 10})
    out = roofs.tile_costs(built, host)
    assert set(out["tiles"]) == {f"1/{t}/{lvl}/{o}" for t in (1, wide) for lvl in ("l1", "l2")
                                 for o in ("aligned", "random")}
    many, one = out["tiles"][f"1/{wide}/l1/aligned"], out["tiles"]["1/1/l1/aligned"]
    # a position of a 12-vector tile makes 12 loads and FMAs, one of a 1-vector tile 1
    assert 0 < one["position_s"] < many["position_s"] < 1e-6
    vec = built.lib.spconv_vector_floats()
    assert out["random_split"]["l1/random"] > (0.5 if vec == 16 else 0.0)
    assert 0 < roofs.call_overhead(built, 1) < 1e-3


def test_costs_from_a_calibration_dict():
    isa = next(iter(isa_table()))
    cal = {"isa": isa, "roofs": {"tiles": {"1/1/l1/aligned": {"position_s": 1e-9, "call_s": 0}},
                                 "random_split": {"l1/random": 1.0}, "level_bytes": {"l1": 1},
                                 "call_s": {"1": 1e-6, "2": 2e-6},
                                 "padding": SYNTHETIC_PADDING, "branch_miss_s": 5e-9},
           "triad_gbps_1": {"l1d": {"median": 90.0, "working_set_kib": 24}}}
    costs = KernelCosts.from_calibration(cal)
    assert costs.call_overhead(2) == 2e-6 and costs.triad["l1d"] == (24 * 1024, 90.0)
    assert costs.lanes == isa_table()[isa].lanes


def test_one_widths_high_fixed_cost_is_read_as_its_neighbours():
    tiles = {f"1/{w}/l1/aligned": {"position_s": 1e-10 * w, "call_s": 1e-9 * w,
                                   "few_s": [2e-9 * w, 3e-9 * w]} for w in (2, 4, 6, 8)}
    tiles["1/6/l1/aligned"].update(call_s=20e-9, few_s=[40e-9, 60e-9])
    steady = steady_fixed_costs(tiles)
    assert steady["1/6/l1/aligned"]["call_s"] == pytest.approx(8e-9)   # the higher neighbour's
    assert steady["1/6/l1/aligned"]["few_s"] == pytest.approx([16e-9, 24e-9])
    # smooth widths, the ends and the costs per position as calibrated; the input untouched
    assert steady["1/4/l1/aligned"] == tiles["1/4/l1/aligned"]
    assert steady["1/2/l1/aligned"] == tiles["1/2/l1/aligned"]
    assert steady["1/8/l1/aligned"] == tiles["1/8/l1/aligned"]
    assert steady["1/6/l1/aligned"]["position_s"] == tiles["1/6/l1/aligned"]["position_s"]
    assert tiles["1/6/l1/aligned"]["call_s"] == 20e-9


def test_an_empty_batch_costs_one_call():
    costs = synthetic_costs()
    empty = ConvSpec.from_shapes((0, 256, 13, 13), (384, 256, 3, 3), 1, 1)
    t = direct_time(costs, empty, 0.1, plan_for(empty, 28, 1, None), 1)
    assert t["total_s"] == costs.call_overhead(1) and t["tiles_s"] == 0


def test_a_tile_over_the_whole_run_reads_all_of_an_aligned_block():
    from harness.conv.sparsity import direct_layout
    from harness.models.mechanistic import tile_window_bytes
    layout = direct_layout(CONV3, True, 16, 16)  # 16 channels, 3 shifted copies of 15x16
    block = 4 * 16 * layout.copies * layout.plane
    assert tile_window_bytes(CONV3, layout, 13 * 16) == block
    assert tile_window_bytes(CONV3, layout, 16) < block / 3  # one row's tile: a few rows


def test_padding_is_priced_per_row_of_its_copy_path():
    costs = synthetic_costs()
    slow = direct_time(costs, ConvSpec.from_shapes((1, 64, 56, 56), (64, 64, 1, 1), 1, 0),
                       0.1, DirectPlan(28, 64, 8), 1)["padding_s"]
    # where moving the rows at the triad's rates takes longer, that binds
    assert slow > 64 * 56 * costs.pad_row_s("stride1", 56)
    costs = dataclasses.replace(costs, triad={k: (size, 1e3 * rate)
                                              for k, (size, rate) in costs.triad.items()})
    assert costs.pad_row_s("stride1", 56) == pytest.approx(1e-9 + 5.6e-9)
    assert costs.pad_row_s("stride1", 31.5) == pytest.approx(1e-9 + 3.15e-9)  # interpolated
    assert costs.pad_row_s("stride1", 448) == pytest.approx(1e-9 + 44.8e-9)  # extrapolated
    one = ConvSpec.from_shapes((1, 64, 56, 56), (64, 64, 1, 1), 1, 0)
    two = ConvSpec.from_shapes((1, 64, 56, 56), (64, 64, 3, 3), 2, 0)
    plan = DirectPlan(28, 64, 8)  # one work item: every channel's 56 rows padded once
    t1, t2 = (direct_time(costs, s, 0.1, plan, 1)["padding_s"] for s in (one, two))
    assert t1 == pytest.approx(64 * 56 * costs.pad_row_s("stride1", 56))
    # stride 2: 27 output rows read input rows 0-54, at twice the cost a row
    assert t2 == pytest.approx(64 * 55 * 2 * costs.pad_row_s("stride1", 56))
    # a 1x1 kernel at stride 2 pads one phase of four: every input row its 27 output rows
    # span (55, read or skipped) at its own path's cost
    strided_1x1 = ConvSpec.from_shapes((1, 64, 56, 56), (64, 64, 1, 1), 2, 0)
    own = {"widths": [7, 224], "row_s": [3e-9, 3e-9]}
    costs = dataclasses.replace(costs, padding={**costs.padding, "pointwise_stride2": own})
    assert direct_time(costs, strided_1x1, 0.1, plan, 1)["padding_s"] == \
        pytest.approx(64 * 55 * 3e-9)
    assert direct_time(costs, two, 0.1, plan, 1)["padding_s"] == pytest.approx(t2)
    # a calibration taken before that path was added prices it as a quarter of the stride's
    del costs.padding["pointwise_stride2"]
    assert direct_time(costs, strided_1x1, 0.1, plan, 1)["padding_s"] == pytest.approx(t2 / 4)
    # two work items pad every channel twice
    assert direct_time(costs, one, 0.1, DirectPlan(28, 32, 8), 1)["padding_s"] == \
        pytest.approx(2 * t1)


def test_padding_calibration_on_this_host():
    # the fastest of three rounds: the strided 1x1 path's rows of 7 and 224 floats differ by
    # a few nanoseconds, and one round on a shared host once timed them the other way round
    out = roofs.padding_costs(host_kernels(), rounds=3)
    assert set(out) == set(roofs.PAD_PATHS)
    for path in out.values():
        assert path["widths"] == list(roofs.PAD_WIDTHS)
        # a row of 224 floats takes more instructions than one of 7
        assert 0 < path["row_s"][0] < path["row_s"][-1] < 1e-5


def test_random_outcomes_cost_branch_misses():
    from harness.models.mechanistic import unpredictable_count
    assert unpredictable_count(1, 0.3) == 0.0   # one slot: a non-empty call has one non-zero
    assert unpredictable_count(9, 1.0) == 0.0   # dense: always all of them
    assert 0.5 < unpredictable_count(144, 0.1) < 0.95
    costs = synthetic_costs()
    spec = ConvSpec.from_shapes((1, 1024, 14, 14), (2048, 1024, 1, 1), 2, 0)
    plan = DirectPlan(4, 2048, 8)
    cheap = dataclasses.replace(costs, branch_miss_s=0.0)
    # at 95%, a third of the groups has a non-zero in a block of 8 channels: about 2048 x 128
    # x (1/3 + 1/3 x 0.4) misses
    extra = (direct_time(costs, spec, 0.05, plan, 1)["tiles_s"]
             - direct_time(cheap, spec, 0.05, plan, 1)["tiles_s"])
    assert 2048 * 128 * 0.3 * 5e-9 < extra < 2048 * 128 * 0.6 * 5e-9


# ResNet-50's layer3.1.conv1: 1024 input channels on a 14x14 plane
POINTWISE = ConvSpec.from_shapes((1, 1024, 14, 14), (256, 1024, 1, 1), 1, 0)


def test_pointwise_time_grows_with_density_and_falls_with_threads():
    costs = synthetic_costs()
    times = [pointwise_time(costs, POINTWISE, d, 64, 1024, 256, 1)["total_s"]
             for d in (0.05, 0.1, 0.3, 0.7)]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert pointwise_time(costs, POINTWISE, 0.3, 64, 1024, 256, 2)["total_s"] < 0.7 * times[2]


def test_pointwise_channel_blocks_trade_round_trips_for_slices_in_l1():
    costs = synthetic_costs(slow_l2=4.0)
    whole = pointwise_time(costs, POINTWISE, 0.3, 64, 1024, 256, 1)
    blocks = pointwise_time(costs, POINTWISE, 0.3, 64, 96, 256, 1)
    assert whole["sums_s"] == 0.0 < blocks["sums_s"]
    # a slice of 1024 channels (256 KiB) streams from L2 at every position; blocks of 96
    # (24 KiB) stay in L1
    assert blocks["tiles_s"] < 0.5 * whole["tiles_s"]
    # where L2 costs what L1 does, the blocks' extra tile calls are all that is left
    flat = synthetic_costs(slow_l2=1.0)
    assert (pointwise_time(flat, POINTWISE, 0.3, 64, 96, 256, 1)["tiles_s"]
            > pointwise_time(flat, POINTWISE, 0.3, 64, 1024, 256, 1)["tiles_s"])


def test_a_slice_past_l1_is_missed_in_proportion_to_its_size():
    # each output row reads its own non-zeros' channel rows, a random subset of the slice:
    # a line read again is still in L1 with about the chance that L1 holds any line of it
    assert l1_miss_share(10_000, 20_000) == 0.0
    assert l1_miss_share(40_000, 20_000) == pytest.approx(0.5)
    assert l1_miss_share(80_000, 20_000) == pytest.approx(0.75)
    slow, flat = synthetic_costs(slow_l2=4.0), synthetic_costs(slow_l2=1.0)

    def extra(channels):  # the tiles' price over that of the same slice in L1
        return (pointwise_time(slow, POINTWISE, 0.1, 64, channels, 256, 1)["tiles_s"]
                - pointwise_time(flat, POINTWISE, 0.1, 64, channels, 256, 1)["tiles_s"])
    row = 4 * 64  # bytes of a channel's row of a chunk of 64 pixels
    assert extra(int(0.8 * slow.l1_bytes) // row) == 0.0
    # slices of 128 and 256 KiB (L1 48 KiB): both past twice L1, yet the smaller one still
    # finds more of its lines in L1
    assert 0.0 < extra(512) < 0.85 * extra(1024)


def test_prepared_kernels_are_priced_as_prepared(rng):
    from harness import kernels
    built = host_kernels()
    costs = synthetic_costs(lanes=built.lib.spconv_vector_floats(),
                            max_tile=built.lib.spconv_max_tile_vectors())
    w = rng.standard_normal((32, 64, 1, 1)).astype(np.float32) * (rng.random((32, 64, 1, 1)) < 0.2)
    shape = (1, 64, 14, 14)
    point = kernels.prepare(w, input_shape=shape, method="pointwise_sparse", kernels=built)
    density = np.count_nonzero(w) / w.size
    assert prepared_time(costs, point) == pointwise_time(
        costs, point.spec, density, point.chunk, point.channel_block, point.out_block,
        1)["total_s"]
    # a fused shortcut addition reads the residual too: one output's worth of bytes more
    added = prepared_time(costs, point, residual=True) - prepared_time(costs, point)
    out_bytes = 4 * 32 * 14 * 14
    assert costs.stream_s(out_bytes, 1e12) >= added >= costs.stream_s(out_bytes, 1.0) > 0
    direct = kernels.prepare(w, input_shape=shape, kernels=built)
    assert prepared_time(costs, direct) == direct_time(costs, direct.spec, density, direct.plan,
                                                       1)["total_s"]
    dense = kernels.prepare(w, input_shape=shape, method="dense_gemm")
    assert prepared_time(costs, dense) is None


def test_a_stored_pointwise_row_is_priced_with_the_work_items_it_recorded():
    import pandas as pd
    from harness.models.pointwise_model import default_pointwise_time, pointwise_zero_shot
    costs = synthetic_costs()
    row = dict(batch=1, in_channels=1024, height=14, width=14, out_channels=256, kernel=1,
               stride=1, padding=0, dilation=1, groups=1, threads=1, nnz=1024 * 256 // 10)
    recorded = dict(pointwise_chunk=64, pointwise_channel_block=1024, pointwise_out_block=256)
    spec = ConvSpec.from_shapes((1, 1024, 14, 14), (256, 1024, 1, 1))
    density = row["nnz"] / (256 * 1024)
    as_recorded = pointwise_time(costs, spec, density, 64, 1024, 256, 1)["total_s"]
    priced = pointwise_zero_shot(costs, pd.DataFrame([{**row, **recorded}, row]))
    assert priced[0] == as_recorded                      # the blocks it ran with
    l1d = detect_host().caches_kib.get("l1d", 32) * 1024
    assert priced[1] == default_pointwise_time(costs, spec, density, 1, l1d)  # none: defaults
    assert priced[0] != priced[1]    # today's defaults block these channels differently


def test_reuse_share_runs_from_a_full_sweep_to_one_minus_one_over_e():
    assert reuse_share(1.0) == 1.0
    assert reuse_share(0.0) == pytest.approx(1.0 - np.exp(-1.0))
    shares = [reuse_share(t) for t in (0.05, 0.25, 0.5, 0.75, 0.99)]
    assert all(a < b for a, b in zip(shares, shares[1:]))  # sparser touches, shorter reuse
    assert reuse_share(0.5) == pytest.approx(0.75)         # 1 - 0.5^2


def test_non_zeros_stream_from_where_all_of_a_layers_lie():
    costs = synthetic_costs()
    big = ConvSpec.from_shapes((1, 512, 7, 7), (512, 512, 3, 3), 1, 1)  # 13 MB at density 0.7
    small = ConvSpec.from_shapes((1, 8, 7, 7), (8, 8, 3, 3), 1, 1)     # 3 KB: in L1
    assert direct_time(costs, big, 0.7, plan_for(big, 28, 1, None), 1)["weights_s"] > 0
    assert direct_time(costs, small, 0.7, plan_for(small, 28, 1, None), 1)["weights_s"] == 0
    # the pointwise kernel streams each item's rows again for every chunk of pixels (1024 x
    # 256 at density 0.7: 1.5 MB, past L2): 196 pixels in chunks of 4 vectors or of 2
    wide, narrow = (pointwise_time(costs, POINTWISE, 0.7, chunk, 1024, 256, 1)["weights_s"]
                    for chunk in (64, 32))
    chunks = [len(even_split(13, vectors)) for vectors in (4, 2)]
    assert wide > 0 and narrow / wide == pytest.approx(chunks[1] / chunks[0])

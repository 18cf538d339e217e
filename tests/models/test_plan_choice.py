"""Plans chosen by the mechanistic model for layers the tuning database has no plan for."""

import dataclasses
import os

import numpy as np
import pytest

from harness import kernels
from harness.conv.sparsity import random_sparse_weights
from harness.conv.verify import expected_output, verify
from harness.kernels.direct import default_plan
from harness.kernels.native import host_kernels
from harness.kernels.plans import TuningDB, weights_tuning_key
from harness.machine.calibrate import SCHEMA, VERSION, cached_calibration, calibration_path
from harness.machine.hostinfo import detect_host
from harness.machine.roofs import ROUNDS
from harness.models import plan_choice
from harness.models.mechanistic import direct_time
from harness.store.files import write_json
from harness.sweep.tuning import plan_space
from test_mechanistic import CONV3, synthetic_costs


def calibration_of(costs, built, host, threads=1) -> dict:
    """A calibration file's content that prices as ``costs`` do."""
    return {"host": host.cpu_model, "build_key": built.key, "isa": built.isa,
            "threads": threads, "fma_gflops_1": {"median": 100.0},
            "roofs": {"tiles": costs.tiles, "random_split": costs.random_split,
                      "level_bytes": costs.level_bytes, "padding": costs.padding,
                      "branch_miss_s": costs.branch_miss_s,
                      "load_piece_floats": costs.load_piece, "rounds": ROUNDS,
                      "call_s": {str(t): s for t, s in costs.call_s.items()}},
            "triad_gbps_1": {lvl: {"working_set_kib": size / 1024, "median": rate}
                             for lvl, (size, rate) in costs.triad.items()}}


@pytest.fixture
def weights(rng):
    return random_sparse_weights(CONV3.weight_shape, 0.9, rng)


def test_the_model_moves_only_the_choices_it_ranks_well(weights):
    built = host_kernels()
    costs = synthetic_costs(lanes=built.lib.spconv_vector_floats(),
                            max_tile=built.lib.spconv_max_tile_vectors())
    costs = dataclasses.replace(costs, triad={**costs.triad, "l1d": (8 << 10, 100.0)})
    start = plan_space(CONV3, built, 1, 1 << 20).normalised(default_plan(CONV3, built, 1, weights))
    plan = plan_choice.model_plan(costs, CONV3, 0.1, 1)
    assert all(getattr(plan, a) == getattr(start, a) for a in plan_choice.HELD_AXES)
    price = {p: direct_time(costs, CONV3, 0.1, p, 1)["total_s"] for p in (start, plan)}
    assert price[plan] <= price[start]
    # this made-up machine's L1 holds 16 KiB and its L2 is four times slower: the model
    # shrinks the input block the default sizes for 32 KiB
    assert plan.channel_block < start.channel_block
    assert plan_choice.model_plan(costs, CONV3, 0.1001, 1) is plan  # memoised on the costs


@pytest.mark.parametrize("group, pattern", [(1, "random"), (2, "block:2"), (4, "block:4")])
def test_plans_for_weights_whose_groups_share_a_support_are_priced_as_that_pattern(
        group, pattern, monkeypatch):
    """Not as the union of ``group`` random supports: blocks of 4 channels at 90% would be
    priced with 3.4 times their positions."""
    built = host_kernels()
    costs = synthetic_costs(lanes=built.lib.spconv_vector_floats(),
                            max_tile=built.lib.spconv_max_tile_vectors())
    priced = set()

    def recording(*args, **kwargs):
        priced.add(kwargs.get("pattern", args[5] if len(args) > 5 else "random"))
        return direct_time(*args, **kwargs)
    monkeypatch.setattr(plan_choice, "direct_time", recording)
    plan = plan_choice.model_plan(costs, CONV3, 0.1, 1, group)
    assert plan.out_group == group and priced == {pattern}


def test_prepare_runs_the_model_plan_once_the_host_is_calibrated(weights, rng, monkeypatch,
                                                                  tmp_path):
    built, host = host_kernels(), detect_host()
    costs = synthetic_costs(lanes=built.lib.spconv_vector_floats(),
                            max_tile=built.lib.spconv_max_tile_vectors())
    calibrated = {"cal": None}
    monkeypatch.setattr(plan_choice, "cached_calibration", lambda *a, **k: calibrated["cal"])
    monkeypatch.setattr(plan_choice, "_costs", {})
    db = TuningDB(tmp_path / "tuning.json")
    monkeypatch.setattr(kernels.plans, "TuningDB", lambda: db)

    def prepared():
        return kernels.prepare(weights, input_shape=CONV3.input_shape, padding=1, relu=True)
    k = prepared()
    assert k.describe()["plan_source"] == "default"
    assert k.plan == default_plan(CONV3, built, 1, weights)

    calibrated["cal"] = calibration_of(costs, built, host)
    k = prepared()
    assert k.describe()["plan_source"] == "model"
    assert k.plan == plan_choice.model_plan(plan_choice._costs.popitem()[1], CONV3, 0.1, 1)
    x = rng.standard_normal(CONV3.input_shape).astype(np.float32)
    out = np.full(CONV3.output_shape, np.nan, np.float32)
    k(x, out=out)
    assert verify(out, expected_output(x, weights, None, CONV3, relu=True)).ok

    tuned = default_plan(CONV3, built, 1, weights)  # a measured plan outranks the model's
    db.put(weights_tuning_key(weights, CONV3, 1, built, host.cpu_model), tuned, {})
    k = prepared()
    assert k.describe()["plan_source"] == "tuned" and k.plan == tuned


def test_a_cached_calibration_of_this_build_and_host_is_found_for_any_thread_count(tmp_path):
    built, host = host_kernels(), detect_host()
    assert cached_calibration(built, host, 1, cache_dir=tmp_path) is None
    cal = calibration_of(synthetic_costs(), built, host, threads=2)
    other = {**cal, "build_key": "another build", "threads": 4}
    write_json(calibration_path(built, host, 4, tmp_path), SCHEMA, VERSION, other)
    assert cached_calibration(built, host, 1, cache_dir=tmp_path) is None
    calibration_path(built, host, 3, tmp_path).write_text("{damaged")
    write_json(calibration_path(built, host, 2, tmp_path), SCHEMA, VERSION, cal)
    found = cached_calibration(built, host, 1, cache_dir=tmp_path)
    assert found is not None and found["threads"] == 2 and found["build_key"] == built.key


def test_an_earlier_build_of_the_same_instruction_set_prices_plans_until_this_one_is_calibrated(
        tmp_path):
    built, host = host_kernels(), detect_host()
    cal = calibration_of(synthetic_costs(), built, host)
    for n, (key, isa) in enumerate([("older build", built.isa), ("newer build", built.isa),
                                    ("another isa", "not-" + built.isa)]):
        path = calibration_path(built, host, 2 + n, tmp_path)
        write_json(path, SCHEMA, VERSION, {**cal, "build_key": key, "isa": isa})
        os.utime(path, (1e9 + n, 1e9 + n))  # taken in this order
    assert cached_calibration(built, host, 1, cache_dir=tmp_path) is None
    found = cached_calibration(built, host, 1, cache_dir=tmp_path, any_build=True)
    assert found["build_key"] == "newer build"  # the newest of the same instruction set
    write_json(calibration_path(built, host, 1, tmp_path), SCHEMA, VERSION, cal)
    for any_build in (False, True):  # this build's own, once there is one
        found = cached_calibration(built, host, 1, cache_dir=tmp_path, any_build=any_build)
        assert found["build_key"] == built.key


def test_an_earlier_builds_costs_serve_until_this_build_is_calibrated(monkeypatch):
    built, host = host_kernels(), detect_host()
    own = calibration_of(synthetic_costs(), built, host)
    earlier = {**own, "build_key": "an earlier build"}
    found = {"cal": earlier}
    monkeypatch.setattr(plan_choice, "cached_calibration", lambda *a, **k: found["cal"])
    monkeypatch.setattr(plan_choice, "_costs", {})
    first = plan_choice.cached_costs(built, host, 1)
    assert first is not None and plan_choice.cached_costs(built, host, 1) is first  # memoised
    found["cal"] = own  # a sweep calibrated this build meanwhile: looked for again, found
    mine = plan_choice.cached_costs(built, host, 1)
    assert mine is not first
    found["cal"] = earlier
    assert plan_choice.cached_costs(built, host, 1) is mine  # this build's own, from now on

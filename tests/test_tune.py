import pandas as pd

from harness.cli import main
from harness.kernels.direct import DirectPlan, default_plan
from harness.kernels.native import host_kernels
from harness.layers import LayerShape
from harness.sparsity import random_sparse_weights
from harness.tune import TuningDB, candidate_plans, density_bucket, tune, tuning_key


def test_density_buckets():
    assert density_bucket(0.1000002) == 0.1 and density_bucket(0.15) == 0.2
    assert density_bucket(0.0) == 0.01 and density_bucket(0.999) == 1.0


def test_candidates_are_distinct_and_start_with_default():
    spec = LayerShape("t", "c", 64, 13, 13, 96, 3, 1, 1).spec(1)
    built = host_kernels()
    plans = candidate_plans(spec, built, 1, 1 << 20, budget=20)
    assert plans[0] == default_plan(spec, built, 1)
    assert len(plans) == 20 and len(set(plans)) == 20
    assert any(p.aligned for p in plans)
    vectors = -(-13 * 16 // built.lib.spconv_vector_floats())
    assert all(p.tile_vectors <= max(vectors, plans[0].tile_vectors) for p in plans)
    two = candidate_plans(spec, built, 2, 1 << 20, budget=200)
    assert all(-(-96 // p.out_channel_block) >= 2 for p in two)  # every thread gets work


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

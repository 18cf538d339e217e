import numpy as np
import pandas as pd
import pytest

from harness.models.fitted import crossing, fit_model, measured_upper, row_spec, validate, work_terms
from harness.conv.layers import network_layers

L2 = 1 << 20
TRUE = {"fixed": 2e-5, "pad": 1e-9, "out": 8e-10, "tile": 2e-10, "fma": 4.5e-10}


def synthetic_frame(noise=0.0, seed=0):
    """Direct-sparse and dense rows whose times follow known costs."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer in network_layers("alexnet"):
        base = {**layer.as_dict(), "layer": layer.name, "batch": 1, "threads": 1,
                "status": "ok"}
        spec = row_spec(base)
        dense_s = spec.dense_flops() / 100e9
        rows.append({**base, "method": "onednn", "sparsity": 0.0, "median_s": dense_s,
                     "nnz": spec.out_channels * spec.reduction_length})
        for s in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
            nnz = round((1 - s) * spec.out_channels * spec.reduction_length)
            terms = work_terms(spec, nnz, "avx512", 1, L2)
            t = sum(TRUE[k] * terms[k] for k in TRUE) * (1 + noise * rng.standard_normal())
            rows.append({**base, "method": "direct_sparse", "sparsity": s, "median_s": t,
                         "nnz": nnz})
    frame = pd.DataFrame(rows)
    frame["best_dense_s"] = frame.groupby("layer")["median_s"].transform(
        lambda g: g[frame.loc[g.index, "method"] == "onednn"].iloc[0])
    frame["speedup"] = frame["best_dense_s"] / frame["median_s"]
    return frame


def test_fit_recovers_known_costs():
    report = validate(synthetic_frame(), "avx512", L2)
    assert report["median_rel_error"] < 1e-3 and report["worst_lolo_median"] < 0.05


def test_fit_tolerates_noise():
    report = validate(synthetic_frame(noise=0.03), "avx512", L2)
    assert report["median_rel_error"] < 0.05


def test_fitted_speedup_crosses_one_where_the_data_does():
    frame = synthetic_frame()
    model = fit_model(frame, "avx512", L2)
    conv3 = frame[(frame["layer"] == "conv3") & (frame["method"] == "direct_sparse")].iloc[0]
    spec = row_spec(conv3)
    f = lambda s: model.speedup(spec, s, 1, "k3s1", ("alexnet/conv3", 1, 1))  # noqa: E731
    s_cross = crossing(f, 0.0, 0.95, 1.0)
    assert f(s_cross) == pytest.approx(1.0, rel=1e-3) and f(s_cross - 0.05) < 1


def test_measured_upper_bound():
    s = np.array([0.5, 0.7, 0.9, 0.95])
    assert measured_upper(s, np.array([1.0, 2.0, 3.0, 3.1])) == pytest.approx(0.7 + 0.2 * (3.1 / 1.1 - 2))

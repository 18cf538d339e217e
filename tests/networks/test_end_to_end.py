"""spconv e2e: a whole network timed against the dense runtimes, with its breakdown."""

import json

import pandas as pd
import pytest

pytest.importorskip("torch")

from harness.cli.e2e import main as e2e  # noqa: E402

MODEL_FILE = '''
import torch
from torch import nn

def model(batch=1):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 10))
    return net.eval(), torch.randn(batch, 3, 24, 24)
'''


def test_e2e_times_every_runtime_and_breaks_the_time_down(tmp_path, capsys, monkeypatch):
    import harness.machine.calibrate as calibrate
    calibrated, real = [], calibrate.calibration
    monkeypatch.setattr(calibrate, "calibration", lambda built, host, threads, **kw: (
        calibrated.append(threads) or real(built, host, threads, **kw)))
    path = tmp_path / "small.py"
    path.write_text(MODEL_FILE)
    out = tmp_path / "e2e"
    assert e2e(["--model", str(path), "--sparsity", "0.5,0.9", "--batch", "1,2",
                "--threads", "1", "--rounds", "1", "--min-time", "0", "--out", str(out)]) == 0
    rows = pd.read_csv(out / "e2e.csv")
    assert len(rows) == 4 and set(rows["sparsity"]) == {0.5, 0.9}
    for column in ("sparsified_ms", "torch_eager_ms", "torch_best_ms", "speedup_vs_torch",
                   "sparse_conv_ms", "dense_conv_ms", "other_ms", "overhead_us_per_layer"):
        assert (rows[column] >= 0).all(), column
    assert (rows["relative_error"] < 1e-5).all() and (rows["layers"] == 3).all()
    if "onnxruntime_ms" in rows:
        assert (rows["speedup_vs_onnxruntime"] > 0).all()
    layers = pd.read_csv(out / "e2e_layers.csv")
    # each layer runs on the fastest of the sparse kernels, PyTorch and the dense libraries
    assert len(layers) == 4 * 3
    assert set(layers["run"]) <= {"sparse", "torch", "onnxruntime", "onednn"}
    first = layers[layers["layer"].astype(str) == "0"]
    assert (first["density"] == 1.0).all()  # the first convolution is never pruned
    assert (layers["predicted_ms"] > 0).all()
    assert (rows["predicted_ms"] >= rows["other_ms"]).all()
    # a layer run dense is predicted at the time it took alone when its runtime was chosen
    for _, layer in layers[layers["run"] != "sparse"].iterrows():
        assert layer["predicted_ms"] == pytest.approx(layer[f"decide_{layer['run']}_ms"])
    if (layers["run"] != "sparse").any():
        assert rows["model"].str.contains("timed alone when chosen").any()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["data"]["host"]["cpu_model"] and meta["data"]["blas"]
    assert "sparsified" in capsys.readouterr().out
    # calibrated first, before any timing: untuned layers then run the model's plans
    assert calibrated[:1] == [1]


def test_e2e_prices_the_sparse_layers_kernels_as_prepared(tmp_path):
    path = tmp_path / "small.py"
    path.write_text(MODEL_FILE)
    out = tmp_path / "e2e"
    assert e2e(["--model", str(path), "--sparsity", "0.9", "--choice", "sparse", "--rounds",
                "1", "--min-time", "0", "--out", str(out)]) == 0
    row = pd.read_csv(out / "e2e.csv").iloc[0]
    # the calibration taken first prices every sparse layer's kernels: the direct kernel's
    # with its plan, the pointwise kernel's with its chunks
    assert row["model"].startswith("mechanistic model of the build's calibration (3 sparse")
    layers = pd.read_csv(out / "e2e_layers.csv")
    assert (layers["run"] == "sparse").all() and (layers["predicted_ms"] > 0).all()
    assert row["predicted_ms"] == pytest.approx(layers["predicted_ms"].sum() + row["other_ms"])


@pytest.mark.parametrize("model, says", [("nosuchnet", "nosuchnet"),
                                         ("net.onnx", "not found")])
def test_e2e_bad_model_is_one_line_and_exit_2(tmp_path, capsys, model, says):
    assert e2e(["--model", model, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "e").exists()

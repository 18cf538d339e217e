"""Importing ONNX files and Python model files, and sweeping their real layers."""

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from harness.cli.sweep import main as sweep  # noqa: E402
from harness.networks.onnx_import import import_onnx  # noqa: E402
from harness.networks.runtimes import export_onnx  # noqa: E402
from harness.networks.torch_graph import import_torch  # noqa: E402
from test_networks import mixed  # noqa: E402

QUICK = ["--repeats", "1", "--min-time", "0", "--no-progress", "--no-fit", "--in-process",
         "--tune", "off", "--methods", "direct_sparse,pointwise_sparse,dense_gemm"]


def test_onnx_import_matches_torch_import(tmp_path):
    model, x = mixed()
    path = export_onnx(model, x, tmp_path / "mixed.onnx")
    from_onnx, notes = import_onnx(path)
    from_torch, _ = import_torch(model, x)
    assert notes == []
    assert len(from_onnx) == len(from_torch)
    for a, b in zip(from_onnx, from_torch):
        assert (a.input_shape, a.stride, a.padding, a.dilation, a.groups, a.relu) == \
            (b.input_shape, b.stride, b.padding, b.dilation, b.groups, b.relu), (a.name, b.name)
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(0 if a.bias is None else a.bias,
                                   0 if b.bias is None else b.bias, rtol=1e-5, atol=1e-6)


def _graph_with(nodes, initializers, shape=(1, 4, 8, 8)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)])


def test_onnx_batchnorm_folded_and_an_unsupported_operation_named(tmp_path, rng):
    w1 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((5, 6, 1, 1)).astype(np.float32)
    scale, shift = (rng.uniform(0.5, 1.5, 6).astype(np.float32) for _ in range(2))
    mean, var = rng.uniform(-0.2, 0.2, 6).astype(np.float32), rng.uniform(0.5, 1.5, 6).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="first"),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Mystery", ["r1"], ["q"], domain="com.example"),
             helper.make_node("Conv", ["q", "w2"], ["y"], name="second")]
    path = tmp_path / "custom.onnx"
    onnx.save(_graph_with(nodes, {"w1": w1, "w2": w2, "s": scale, "b": shift, "m": mean,
                                  "v": var}), path)
    convs, notes = import_onnx(path)
    assert [c.name for c in convs] == ["first"]
    first = convs[0]
    factor = scale / np.sqrt(var.astype(np.float64) + 1e-3)
    np.testing.assert_allclose(first.weight, w1 * factor[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(first.bias, shift - mean * factor, rtol=1e-5, atol=1e-6)
    assert first.relu and first.padding == (1, 1)
    assert any("'Mystery'" in n and "com.example" in n for n in notes)
    assert any("'second'" in n and "input shape is unknown" in n for n in notes)


def test_sweep_of_an_onnx_model_runs_what_it_can_read(tmp_path, rng, capsys):
    """The readable layer is swept; the note names the operation it could not read."""
    w1 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="first"),
             helper.make_node("Mystery", ["c1"], ["y"], domain="com.example")]
    path = tmp_path / "custom.onnx"
    onnx.save(_graph_with(nodes, {"w1": w1}), path)
    out = tmp_path / "run"
    assert sweep(["--model", str(path), "--prune", "magnitude", "--sparsity", "0.5,0.9",
                  "--out", str(out), *QUICK]) == 0
    assert "Mystery" in capsys.readouterr().err
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["layer"]) == {"first"} and (rows["status"] == "ok").all()
    sparse = rows[rows["method"] == "direct_sparse"]
    assert sorted(sparse["sparsity"].round(2)) == [0.5, 0.9]


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x08\x07\x12\x00\xff"])
def test_malformed_onnx_is_one_line_and_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    assert sweep(["--model", str(path), "--out", str(tmp_path / "r"), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.onnx" in err[0] and "not a valid ONNX model" in err[0]
    assert not (tmp_path / "r").exists()


MODEL_FILE = '''
import torch
from torch import nn

def build(batch=1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 1), nn.ReLU())
    return model.eval(), torch.randn(batch, 4, 10, 10)
'''


def test_sweep_of_a_python_model_with_targets(tmp_path):
    model_file = tmp_path / "net.py"
    model_file.write_text(MODEL_FILE)
    targets = tmp_path / "targets.yaml"
    targets.write_text("layers:\n  '0': 0.75\n  '3': 0.5\n")
    out = tmp_path / "run"
    assert sweep(["--model", f"{model_file}:build", "--targets", str(targets),
                  "--out", str(out), *QUICK]) == 0
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "ok").all() and set(rows["network"]) == {"net"}
    by = rows.groupby("layer")["sparsity"].max().round(3).to_dict()
    assert by == {0: 0.75, 3: 0.5} or by == {"0": 0.75, "3": 0.5}
    assert "pointwise_sparse" in set(rows[rows["layer"].astype(str) == "3"]["method"])
    assert "pointwise_sparse" not in set(rows[rows["layer"].astype(str) == "0"]["method"])


def test_model_options_refuse_what_makes_no_sense(tmp_path, capsys):
    assert sweep(["--prune", "magnitude", "--out", str(tmp_path / "r"), *QUICK]) == 2
    assert "--prune" in capsys.readouterr().err
    assert sweep(["--model", str(tmp_path / "missing.py"), "--out", str(tmp_path / "r"),
                  *QUICK]) == 2
    assert "not found" in capsys.readouterr().err

"""ONNX models run whole: rebuilt as PyTorch modules, sparsified, and timed end to end."""

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from harness.cli.e2e import main as e2e  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.networks.onnx_import import import_onnx  # noqa: E402
from harness.networks.onnx_torch import onnx_module  # noqa: E402
from harness.networks.pruning import prune_convolutions  # noqa: E402
from harness.networks.runtimes import export_onnx  # noqa: E402
from harness.networks.sparsify import sparsify  # noqa: E402
from harness.networks.torch_graph import import_torch  # noqa: E402
from test_networks import mixed  # noqa: E402


def _close(got, want, rtol=1e-5):
    got, want = got.detach(), want.detach()
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= rtol * float(want.abs().max())


def test_exported_model_rebuilt_computes_the_same_function_and_has_its_layers(tmp_path):
    """Every geometry of the mixed model (strides, dilation, groups, depthwise, 'same', a
    tall kernel, BatchNorm, ReLU, a residual add) survives the round trip through ONNX."""
    model, x = mixed()
    prune_convolutions(model, 0.8)
    path = export_onnx(model, x, tmp_path / "mixed.onnx")
    rebuilt, example = onnx_module(path)
    assert example.shape == x.shape
    with torch.no_grad():
        _close(rebuilt(x), model(x))
    # its convolutions as the layer sweep reads them from the file: same names and weights
    from_torch, notes = import_torch(rebuilt, x)
    from_file, _ = import_onnx(path)
    assert notes == [] and [c.name for c in from_torch] == [c.name for c in from_file]
    for a, b in zip(from_torch, from_file):
        assert (a.input_shape, a.stride, a.padding, a.dilation, a.groups) == \
            (b.input_shape, b.stride, b.padding, b.dilation, b.groups)
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6, atol=1e-7)
    # sparsified: every convolution on the sparse kernels, the same function
    net = sparsify(rebuilt, x, choice="sparse")
    assert len(net.layers()) == len(from_file) and all(layer.sparse for layer in net.layers())
    _close(net(x), model(x))
    # another batch size: the graph's stored shapes follow the input
    rebuilt3, example3 = onnx_module(path, batch=3)
    x3 = torch.randn(3, *x.shape[1:])
    with torch.no_grad():
        assert example3.shape[0] == 3
        _close(rebuilt3(x3), model(x3))


def _model(nodes, initializers, shape, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_operations_beyond_pytorch_export_equal_onnx_runtime(tmp_path, rng):
    """Asymmetric and 'SAME' padding, ReLU6 as Clip, average and max pools, Concat, Reshape,
    Gemm and Softmax, checked against ONNX Runtime on the same file."""
    ort = pytest.importorskip("onnxruntime")
    f32 = np.float32
    init = {"w1": rng.standard_normal((8, 4, 3, 3)).astype(f32),
            "b1": rng.standard_normal(8).astype(f32),
            "w2": rng.standard_normal((8, 8, 3, 3)).astype(f32),
            "w3": rng.standard_normal((6, 4, 1, 1)).astype(f32),
            "lo": np.array(0, f32), "hi": np.array(6, f32),
            "shape": np.array([2, -1], np.int64),
            "fc": rng.standard_normal((10, 14 * 4 * 4)).astype(f32),
            "fcb": rng.standard_normal(10).astype(f32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 2, 1], name="asym"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2],
                         name="same"),
        helper.make_node("AveragePool", ["c2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["x"], ["p0"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p0", "w3"], ["c3"], strides=[2, 2], name="point"),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Concat", ["p2", "r3"], ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1, alpha=0.5),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    path = tmp_path / "ops.onnx"
    onnx.save(_model(nodes, init, (2, 4, 16, 16)), path)
    x = rng.standard_normal((2, 4, 16, 16)).astype(f32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    rebuilt, _ = onnx_module(path)
    with torch.no_grad():
        got = rebuilt(torch.from_numpy(x))
    _close(got, torch.from_numpy(want), rtol=1e-4)
    net = sparsify(rebuilt, torch.from_numpy(x), choice="sparse")
    assert {layer.conv.name for layer in net.layers()} == {"asym", "same", "point"}
    _close(net(torch.from_numpy(x)), torch.from_numpy(want), rtol=1e-4)


def test_a_clip_from_zero_is_read_as_a_relu_capped_or_not(tmp_path, rng):
    f32 = np.float32
    init = {"w": rng.standard_normal((4, 3, 3, 3)).astype(f32), "lo": np.array(0, f32),
            "hi": np.array(2.5, f32), "neg": np.array(-1, f32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1], name="open"),
             helper.make_node("Clip", ["c1", "lo"], ["r1"]),       # no upper bound: a ReLU
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="capped"),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="other"),
             helper.make_node("Clip", ["c3", "neg", "hi"], ["y"])]  # not from 0: no ReLU
    init["w2"] = rng.standard_normal((4, 4, 3, 3)).astype(f32)
    init["w3"] = rng.standard_normal((4, 4, 1, 1)).astype(f32)
    path = tmp_path / "clips.onnx"
    onnx.save(_model(nodes, init, (1, 3, 8, 8)), path)
    convs = {c.name: (c.relu, c.relu_max) for c in import_onnx(path)[0]}
    assert convs == {"open": (True, None), "capped": (True, 2.5), "other": (False, None)}


def test_unsupported_operation_is_named(tmp_path, rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="first"),
             helper.make_node("Mystery", ["c"], ["y"], domain="com.example", name="odd")]
    model = _model(nodes, {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32)},
                   (1, 3, 8, 8))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    with pytest.raises(HarnessError, match="'Mystery'.*'odd'"):
        onnx_module(path)
    assert [c.name for c in import_onnx(path)[0]] == ["first"]  # the sweep still reads it


def test_e2e_runs_an_onnx_file_and_refuses_a_bad_one_with_exit_2(tmp_path, capsys, rng):
    model, x = mixed()
    path = export_onnx(model, x[:1], tmp_path / "mixed.onnx")
    out = tmp_path / "e2e"
    assert e2e(["--model", str(path), "--sparsity", "0.9", "--threads", "1", "--rounds", "1",
                "--min-time", "0", "--out", str(out)]) == 0
    rows = pd.read_csv(out / "e2e.csv")
    assert len(rows) == 1 and rows["network"].iloc[0] == "mixed"
    assert (rows["relative_error"] < 1e-5).all() and (rows["layers"] == 8).all()
    capsys.readouterr()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    assert e2e(["--model", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid ONNX model" in err[0]
    assert not (tmp_path / "e").exists()


def test_capped_relus_survive_the_round_trip_through_onnx(tmp_path):
    """ReLU6 and Hardtanh(0, 3) export as Clip nodes: the layer sweep reads their caps from
    the file, and the rebuilt module fuses them into its convolutions."""
    from test_networks import Capped
    torch.manual_seed(4)
    model, x = Capped().eval(), 3 * torch.randn(1, 3, 9, 9)
    path = export_onnx(model, x, tmp_path / "capped.onnx")
    caps = [(c.relu, c.relu_max) for c in import_onnx(path)[0]]
    assert caps.count((True, 6.0)) == 2 and caps.count((True, 3.0)) == 1
    rebuilt, _ = onnx_module(path)
    net = sparsify(rebuilt, x, choice="sparse")
    assert sorted(layer.conv.relu_max or 0.0 for layer in net.layers()) == [0.0, 3.0, 6.0, 6.0, 6.0]
    _close(net(x), model(x))

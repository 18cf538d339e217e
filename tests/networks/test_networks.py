"""Whole networks: the catalog's modules, model import from PyTorch and ONNX, sparsify."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from harness.conv.layers import (distinct, mobilenetv2_convolutions, network_layers,  # noqa: E402
                                 resnet50_convolutions)
from harness.errors import HarnessError  # noqa: E402
from harness.networks.architectures import ARCHITECTURES, build  # noqa: E402
from harness.networks.pruning import prune_convolutions, read_targets  # noqa: E402
from harness.networks.sparsify import sparsify  # noqa: E402
from harness.networks.torch_graph import import_torch  # noqa: E402


class Mixed(nn.Module):
    """Convolutions of every geometry the importers must read: strides, dilation, groups,
    depthwise, 'same' padding, a non-square kernel, BatchNorm with and without a ReLU, ReLU as
    a module, a function and a method, a residual add, a convolution with two users."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 5, stride=2, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.relu = nn.ReLU(inplace=True)
        self.dilated = nn.Conv2d(12, 12, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(12, 24, 3, padding=1, groups=3)
        self.depthwise = nn.Conv2d(24, 24, 3, padding="same", groups=24, bias=False)
        self.dw_bn = nn.BatchNorm2d(24)
        self.tall = nn.Conv2d(24, 16, (3, 1), padding=(1, 0))
        self.point = nn.Conv2d(16, 16, 1)
        self.shortcut = nn.Conv2d(24, 16, 1, stride=2, bias=False)
        self.reduce = nn.Conv2d(16, 8, 1, stride=2)

    def forward(self, x):
        y = self.relu(self.bn(self.stem(x)))
        y = torch.relu(self.dilated(y))
        y = self.grouped(y).relu()
        d = nn.functional.relu(self.dw_bn(self.depthwise(y)))
        t = self.tall(d)
        u = self.point(t) + t                     # `t` has two users: nothing fuses into it
        return self.reduce(u[:, :, ::2, ::2] + self.shortcut(d))


def mixed(seed=0):
    torch.manual_seed(seed)
    model = Mixed()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.randn(2, 3, 23, 19)


def test_torch_import_reads_geometry_folds_batchnorm_and_notes_relu():
    model, x = mixed()
    convs, notes = import_torch(model, x)
    assert notes == []
    by = {c.name: c for c in convs}
    assert [c.name for c in convs] == ["stem", "dilated", "grouped", "depthwise", "tall",
                                       "point", "shortcut", "reduce"]
    stem = by["stem"]
    assert stem.input_shape == (2, 3, 23, 19) and stem.stride == (2, 2) and stem.padding == (2, 2)
    assert stem.relu and stem.batchnorm == "bn"
    bn = model.bn
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    np.testing.assert_allclose(stem.weight, model.stem.weight.detach().numpy()
                               * factor[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(stem.bias, (bn.bias - bn.running_mean * bn.weight
                                           / torch.sqrt(bn.running_var + bn.eps)).detach().numpy(),
                               rtol=1e-5, atol=1e-7)
    assert by["dilated"].dilation == (2, 2) and by["dilated"].relu          # torch.relu
    assert by["grouped"].groups == 3 and by["grouped"].relu                 # .relu()
    assert by["depthwise"].groups == 24 and by["depthwise"].padding == (1, 1)  # 'same'
    assert by["depthwise"].batchnorm == "dw_bn" and by["depthwise"].relu
    assert by["tall"].weight.shape == (16, 24, 3, 1) and by["tall"].padding == (1, 0)
    assert not by["tall"].relu and not by["point"].relu
    assert by["shortcut"].stride == (2, 2) and by["shortcut"].bias is None
    assert by["reduce"].input_shape[1:] == (16, 6, 5) and by["reduce"].stride == (2, 2)


def _same_function(model, x, net):
    with torch.no_grad():
        want = model(x)
    got = net(x)
    scale = want.abs().max().item()
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * scale


@pytest.mark.parametrize("choice", ["sparse", "dense", "auto"])
def test_sparsified_model_computes_the_same_function(choice):
    model, x = mixed()
    prune_convolutions(model, 0.8)
    net = sparsify(model, x, choice=choice, threads=2)   # checks every layer on the way
    _same_function(model, x, net)
    assert all(layer.sparse == (choice == "sparse") for layer in net.layers()) \
        or choice == "auto"
    _same_function(model, torch.randn_like(x), net)      # another input, the same layers


def test_close_runners_are_chosen_again_inside_the_network(monkeypatch):
    """With every runner close, each layer times every one inside the network (PyTorch only
    where it was the fastest alone), keeps one of them, frees the others' kernels, and the
    network computes the same function."""
    from harness.networks import sparsify as sparsify_module
    monkeypatch.setattr(sparsify_module, "IN_NETWORK_WITHIN", 1e9)
    model, x = mixed()
    prune_convolutions(model, 0.8)
    net = sparsify(model, x, choice="auto")
    _same_function(model, x, net)
    timed = [layer for layer in net.layers() if layer.times.in_network]
    assert timed and all(not layer.residual for layer in timed)
    for layer in timed:
        assert set(layer.times.in_network) == set(layer.close_runners())
        alone = min(layer.times.decided, key=layer.times.decided.get)
        assert ("torch" in layer.times.in_network) == (alone == "torch")
        assert "sparse" in layer.times.in_network
        assert layer.runner in layer.times.in_network
        assert {runner for runner, _ in layer._runs} == {layer.runner} - {"torch"}


def test_a_layer_pytorch_wins_alone_is_timed_against_the_kernels_inside(monkeypatch):
    """Where PyTorch was the fastest alone, the layer still times the kernels that came
    close inside the network (PyTorch's allocation and separate ReLU cost there what they do
    not alone), and whichever it keeps computes the same function."""
    from harness.networks import sparsify as sparsify_module
    real = sparsify_module.interleaved_medians

    def torch_fastest_alone(names, time_one, *args, **kwargs):
        times = real(names, time_one, *args, **kwargs)
        if "torch" in times:
            times = {name: 0.5 if name == "torch" else 1.0 for name in times}
        return times
    monkeypatch.setattr(sparsify_module, "interleaved_medians", torch_fastest_alone)
    model, x = mixed()
    prune_convolutions(model, 0.8)
    net = sparsify(model, x, choice="auto")
    _same_function(model, x, net)
    timed = [layer for layer in net.layers() if not layer.residual]
    assert timed
    for layer in timed:
        assert {"torch", "sparse"} <= set(layer.times.in_network)
        assert layer.runner in layer.times.in_network


@pytest.mark.parametrize("last", ["conv", "max pool", "average pool"])
def test_sparsified_output_survives_the_next_call(last):
    """A network output that is a fused layer's or a pool's reused buffer (or a view of one)
    is handed out as a copy."""
    torch.manual_seed(1)
    tail = {"conv": [], "max pool": [nn.MaxPool2d(2)],
            "average pool": [nn.AdaptiveAvgPool2d(1), nn.Flatten()]}[last]
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1),
                          *tail).eval()
    x = torch.randn(1, 4, 9, 9)
    net = sparsify(model, x, choice="sparse")
    first = net(x)
    kept = first.clone()
    net(torch.randn_like(x))
    assert torch.equal(first, kept)


@pytest.mark.parametrize("any_size", [True, False])
def test_a_smaller_output_reuses_a_larger_free_buffer(any_size, monkeypatch):
    """The third convolution's output (8 channels) goes into the first's buffer (16 channels),
    free once the second has read it: two buffers, not one per size (three with the earlier
    plan, kept to measure against, that reuses only buffers of an output's own size)."""
    import functools
    import harness.networks.sparsify as sparsify_module
    from harness.networks.memory import share_buffers
    monkeypatch.setattr(sparsify_module, "share_buffers",
                        functools.partial(share_buffers, any_size=any_size))
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1),
                          nn.Conv2d(8, 8, 1)).eval()
    x = torch.randn(1, 4, 9, 9)
    net = sparsify(model, x, choice="sparse")
    addresses = [run.address for layer in net.layers() for run in layer._runs.values()]
    assert len(addresses) == 3 and addresses[0] != addresses[1]
    assert (addresses[2] == addresses[0]) == any_size and addresses[2] != addresses[1]
    first = net(x)
    with torch.no_grad():
        assert torch.allclose(first, model(x), atol=1e-4, rtol=1e-4)
    kept = first.clone()
    net(torch.randn_like(x))
    assert torch.equal(first, kept)  # the output shares a buffer: handed out as a copy


def test_magnitude_pruning_keeps_the_stem_and_follows_targets():
    model, _ = build("resnet50", size=64)
    levels = prune_convolutions(model, 0.9)
    assert "conv1" not in levels and len(levels) == 52
    w = model.layer1[0].conv1.weight
    assert abs((w == 0).float().mean().item() - 0.9) < 0.01
    assert (model.conv1.weight != 0).all()
    model, _ = build("resnet50", size=64)
    prune_convolutions(model, {"layer2.0.conv2": 0.5})
    assert abs((model.layer2[0].conv2.weight == 0).float().mean().item() - 0.5) < 0.01
    assert (model.layer2[0].conv1.weight != 0).all()
    with pytest.raises(HarnessError, match="no convolution"):
        prune_convolutions(model, {"nope": 0.5})
    model, _ = build("mobilenetv2", size=32)
    levels = prune_convolutions(model, 0.9, pointwise_only=True)
    assert levels and all(model.get_submodule(n).kernel_size == (1, 1) for n in levels)
    assert (model.features[1].depthwise[0].weight != 0).all()


def test_targets_file(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text("layers:\n  a: {prune: true, min_sparsity: 0.6, target_sparsity: 0.85}\n"
                    "  b: {prune: false, min_sparsity: null, target_sparsity: null}\n"
                    "  c: {prune: true, min_sparsity: 0.7, target_sparsity: null}\n")
    assert read_targets(path) == {"a": 0.85, "c": 0.7}
    path.write_text("layers: {a: 1.5}\n")
    with pytest.raises(HarnessError, match="in \\[0, 1\\)"):
        read_targets(path)


def test_every_catalog_network_is_a_module():
    from harness.conv.layers import CATALOG
    assert set(ARCHITECTURES) == set(CATALOG)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_catalog_modules_have_the_catalog_layers(name):
    """The runnable modules and the catalog's shape lists describe the same networks."""
    model, x = build(name)
    convs, notes = import_torch(model, x)
    assert notes == []
    imported = [c.layer_shape(name) for c in convs]
    every = {"resnet50": resnet50_convolutions, "mobilenetv2": mobilenetv2_convolutions}
    catalog = every[name]() if name in every else network_layers(name)
    if name == "googlenet":  # the catalog holds its 3x3 and 5x5 convolutions only
        assert {l.geometry for l in catalog} <= {l.geometry for l in imported}
    else:
        assert [(l.name, l.geometry) for l in imported] == [(l.name, l.geometry) for l in catalog]
    if name in every:  # the catalog sweeps each geometry once
        assert network_layers(name) == distinct(catalog)


def test_mobilenetv2_sparsified_end_to_end():
    """Depthwise and pointwise layers, ReLU6 fused, residual adds."""
    model, x = build("mobilenetv2", size=64)
    prune_convolutions(model, 0.7)
    net = sparsify(model, x, choice="sparse")
    _same_function(model, x, net)
    runs = {layer.conv.name: layer for layer in net.layers()}
    depthwise = runs["features.1.depthwise.0"].conv
    assert len(runs) == 52 and depthwise.relu and depthwise.relu_max == 6.0
    # every layer ran its kernel by address, residual adds fused into some of them
    assert all(run.by_address is not None for layer in net.layers()
               for run in layer._runs.values())
    assert any(layer.residual for layer in net.layers())
    graph = net.graph_module
    assert not any(isinstance(graph.get_submodule(n.target), nn.ReLU6)
                   for n in graph.graph.nodes if n.op == "call_module")


class Capped(nn.Module):
    """Capped ReLUs of every spelling after convolutions, one after a residual add, and a
    Hardtanh that is no ReLU (it stays in PyTorch)."""

    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.c = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.d, self.e = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
        self.six, self.three = nn.ReLU6(), nn.Hardtanh(0.0, 3.0)

    def forward(self, x):
        y = self.six(self.bn(self.a(x)))
        y = nn.functional.relu6(self.b(y))
        y = self.three(self.c(y))
        y = nn.functional.hardtanh(self.d(y) + y, 0.0, 6.0)   # residual add, then ReLU6
        return nn.functional.hardtanh(self.e(y), -1.0, 1.0)


@pytest.mark.parametrize("choice", ["sparse", "dense", "auto"])
def test_capped_relus_are_read_and_fused(choice):
    torch.manual_seed(3)
    model, x = Capped().eval(), 3 * torch.randn(1, 3, 9, 9)
    convs = {c.name: c for c in import_torch(model, x)[0]}
    assert [(convs[n].relu, convs[n].relu_max) for n in "abcde"] == [
        (True, 6.0), (True, 6.0), (True, 3.0), (False, None), (False, None)]
    net = sparsify(model, x, choice=choice)   # checks every layer on the way
    _same_function(model, x, net)
    fused = {layer.conv.name: layer.conv for layer in net.layers()}
    assert fused["d"].relu and fused["d"].relu_max == 6.0   # the add's ReLU6, fused
    assert not fused["e"].relu                               # hardtanh(-1, 1) is not one


@pytest.mark.parametrize("seed", range(16))
def test_max_pool_kernel_equals_torch(seed):
    from harness.machine.build import host_kernels
    from harness.networks.pooling import MaxPool, fast_poolable
    rng = np.random.default_rng(seed)
    kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    padding = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
    pool = nn.MaxPool2d(kernel, stride, padding)
    assert fast_poolable(pool)
    x = torch.from_numpy(rng.standard_normal((2, 3, kernel[0] + int(rng.integers(0, 12)),
                                              kernel[1] + int(rng.integers(0, 12))))
                         .astype(np.float32))
    x[0, 1, 0, 0] = float("nan")  # propagates like PyTorch's, from any place in a window
    x[torch.from_numpy(rng.random(x.shape) < 0.03)] = float("nan")
    x[1, 2, -1, -1] = -float("inf")
    got = MaxPool(pool, 1 + seed % 2, host_kernels())(x)
    assert torch.equal(got.isnan(), pool(x).isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(pool(x)))
    assert not fast_poolable(nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    assert not fast_poolable(nn.MaxPool2d(3, 2, 1, dilation=2))


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (2, 2, 0), (3, 2, 0)])
def test_max_pool_kernel_equals_torch_on_the_usual_pools(kernel, stride, padding):
    """The pools with their own one-pass loop (3 and 2 wide at stride 2), NaNs included, on
    odd and even widths."""
    from harness.machine.build import host_kernels
    from harness.networks.pooling import MaxPool
    rng = np.random.default_rng(kernel * 10 + padding)
    pool = nn.MaxPool2d(kernel, stride, padding)
    for width in (kernel, 9, 16, 37):
        x = torch.from_numpy(rng.standard_normal((1, 3, 7, width)).astype(np.float32))
        x[torch.from_numpy(rng.random(x.shape) < 0.05)] = float("nan")
        got, want = MaxPool(pool, 1, host_kernels())(x), pool(x)
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


@pytest.mark.parametrize("seed", range(8))
def test_global_average_pool_kernel_equals_torch(seed):
    from harness.machine.build import host_kernels
    from harness.networks.pooling import GlobalAvgPool, global_poolable
    rng = np.random.default_rng(seed)
    pool = nn.AdaptiveAvgPool2d(1 if seed % 2 else (1, 1))
    assert global_poolable(pool)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 20)),
             int(rng.integers(1, 20)))
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32) * 10 + 3)
    if seed == 0:
        x[0, 0, 0, 0] = float("nan")  # a plane with a NaN averages to NaN
    got = GlobalAvgPool(pool, 1 + seed % 2, host_kernels())(x)
    want = pool(x.double()).float()
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    # float32 sums: within a few ulps of the plane's magnitude per summed pixel
    bound = 4 * np.finfo(np.float32).eps * x.abs().amax(dim=(2, 3), keepdim=True)
    assert torch.all(torch.nan_to_num(got - want).abs() <= torch.nan_to_num(bound))
    assert not global_poolable(nn.AdaptiveAvgPool2d(2))
    assert not global_poolable(nn.AdaptiveAvgPool2d((1, None)))


def test_sparsify_runs_the_pools_in_c():
    from harness.networks.pooling import GlobalAvgPool, MaxPool
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 10, 10)
    net = sparsify(model, x, choice="sparse")
    kinds = [type(m) for m in net.modules()]
    assert MaxPool in kinds and GlobalAvgPool in kinds
    _same_function(model, x, net)

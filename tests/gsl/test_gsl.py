"""Guided Sparsity Learning on small data the tests make themselves."""

import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from harness.gsl.datasets import load_idx_dataset, synthetic_dataset  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.cli.gsl import main as gsl_main  # noqa: E402
from harness.gsl.guidance import LayerGuidance, allocate_for_time, guide, weight_count  # noqa: E402
from harness.gsl.network import ReferenceNet, conv_shapes  # noqa: E402
from harness.gsl.pipeline import GSLSettings, run_gsl  # noqa: E402
from harness.gsl.pruning import GuidedPruner, PruneSettings, sparsity, train_epochs  # noqa: E402
from harness.machine.profiles import HOST_PROFILE, load_profile  # noqa: E402


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28))
    labels = rng.integers(0, 10, 7)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:3], False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:3], True)
    data = load_idx_dataset("mnist", tmp_path)
    assert data.train_x.shape == (7, 1, 28, 28) and data.train_x.max() <= 1.0
    np.testing.assert_array_equal(data.train_y, labels)
    np.testing.assert_allclose(data.test_x[:, 0] * 255, imgs[:3], atol=1e-3)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09ab")
    with pytest.raises(HarnessError, match="header says"):
        load_idx_dataset("mnist", tmp_path)


def test_missing_dataset_says_how_to_install(tmp_path, capsys):
    with pytest.raises(HarnessError, match="dataset-fashion-mnist"):
        load_idx_dataset("fashion-mnist", tmp_path)
    assert gsl_main(["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_shapes_from_hooks():
    shapes = conv_shapes(ReferenceNet(width=8), torch.zeros(2, 1, 28, 28))
    assert [(s.in_channels, s.out_channels, s.height) for s in shapes.values()] == \
        [(1, 8, 28), (8, 8, 28), (8, 16, 14), (16, 16, 14), (16, 32, 7), (32, 32, 7)]
    assert all(s.kernel == 3 and s.padding == 1 for s in shapes.values())


def test_guidance_excludes_layers_without_potential():
    shapes = conv_shapes(ReferenceNet(width=8), torch.zeros(1, 1, 28, 28))
    first = next(iter(shapes))

    def speedup(layer, s):  # the first layer never wins; the others win above 60%
        return 0.5 if layer.name == first else 0.4 / max(1e-3, 1 - s) * (1 if s < 0.9 else 0.9 + 0.1 * s)
    g = guide(shapes, speedup, max_target=0.9)
    assert not g[first].prune and "never faster" in g[first].reason
    other = g[list(shapes)[1]]
    assert other.prune and math.isclose(other.lower, 0.6, abs_tol=1e-3) and other.target <= 0.9


def test_time_allocation_keeps_the_weights_and_prunes_wide_layers_harder():
    shapes = conv_shapes(ReferenceNet(width=8), torch.zeros(1, 1, 28, 28))

    def time(layer, s):  # a fixed cost per output pixel plus one per weight applied to a pixel
        pixels = layer.height * layer.width
        return pixels * layer.out_channels * (2.0 + (1 - s) * weight_count(layer) / layer.out_channels)
    names = list(shapes)
    guidance = {n: LayerGuidance(n, 0.3, 0.97, 0.9, 5.0, i > 0, "test") for i, n in enumerate(names)}
    allocated = allocate_for_time(guidance, shapes, time)
    assert allocated[names[0]] == guidance[names[0]]  # layers outside the pruned set untouched
    pruned = names[1:]

    def kept(g):
        return sum((1 - g[n].target) * weight_count(shapes[n]) for n in pruned)
    step = max((0.97 - 0.3) / 199 * weight_count(shapes[n]) for n in pruned)
    assert kept(guidance) <= kept(allocated) <= kept(guidance) + step
    assert all(0.3 <= allocated[n].target <= 0.97 for n in pruned)
    total = {label: sum(time(shapes[n], g[n].target) for n in pruned)
             for label, g in [("uniform", guidance), ("allocated", allocated)]}
    assert total["allocated"] < 0.9 * total["uniform"]
    wide, narrow = pruned[0], pruned[-1]  # 28x28 against 7x7
    assert allocated[wide].target > guidance[wide].target > allocated[narrow].target


def small_setup(width=4):
    data = synthetic_dataset(n_train=256, n_test=128, size=12, classes=4)
    model = ReferenceNet(classes=4, width=width)
    shapes = conv_shapes(model, torch.from_numpy(data.test_x[:1]))
    names = list(shapes)
    guidance = {n: LayerGuidance(n, 0.3, 0.8, 0.8, 3.0, i > 0, "test") for i, n in enumerate(names)}
    return data, model, names, guidance


@pytest.mark.parametrize("method", ["l1", "dns"])
def test_pruning_reaches_targets_and_keeps_masks(method):
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    settings = PruneSettings(method=method, reproject_every=2, batch_size=32)
    pruner = GuidedPruner(model, guidance, settings, total_steps=4 * 8)
    train_epochs(model, data, 4, settings, pruner=pruner, log=lambda *_: None)
    pruner.finish()
    for n in names[1:]:
        assert sparsity(model.get_submodule(n).weight) >= 0.79
    assert sparsity(model.get_submodule(names[0]).weight) < 0.05  # not in the pruned set
    before = {n: (model.get_submodule(n).weight == 0).clone() for n in names[1:]}
    train_epochs(model, data, 1, settings, fixed_masks=pruner, lr_scale=0.1, log=lambda *_: None)
    for n in names[1:]:  # fine-tuning keeps every pruned weight at zero
        assert bool((model.get_submodule(n).weight[before[n]] == 0).all())


def test_stalled_layer_is_restored_dense():
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    guidance = {n: LayerGuidance(n, 0.7, 0.9, 0.9, 3.0, i > 0, "test") for i, n in enumerate(names)}
    dense = model.get_submodule(names[1]).weight.detach().clone()
    settings = PruneSettings(threshold_cap=1e-6, reproject_every=1, stall_window=2, batch_size=32)
    pruner = GuidedPruner(model, guidance, settings, total_steps=16)
    train_epochs(model, data, 2, settings, pruner=pruner, log=lambda *_: None)
    state = pruner.layers[names[1]]
    assert "dense weights restored" in state.reason
    assert sparsity(model.get_submodule(names[1]).weight) < 0.05
    assert not torch.equal(dense, torch.zeros_like(dense))


def test_pipeline_end_to_end(tmp_path):
    torch.manual_seed(0)
    data = synthetic_dataset(n_train=400, n_test=200, size=28, classes=4)
    settings = GSLSettings(dense_epochs=2, prune_epochs=2, finetune_epochs=1, timing_repeats=1)
    out = tmp_path / "gsl"

    def run(settings, log):
        return run_gsl(ReferenceNet(classes=4, width=8), data, load_profile(HOST_PROFILE), out,
                       prune=PruneSettings(batch_size=32), settings=settings, log=log,
                       results_root=tmp_path / "no-runs")
    run(settings, lambda *_: None)
    for name in ("pruned_gsl.pt", "dense.pt", "pruned_convs.npz", "layers.csv", "history_gsl.csv",
                 "summary.json", "gsl_training.png", "history_unguided.csv", "stages.json"):
        assert (out / name).exists(), name
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers.columns) >= {"in_pruned_set", "why", "sparsity", "predicted_speedup",
                                   "measured_speedup"}
    assert layers["measured_speedup"].notna().all()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["gsl"]["conv_speedup_measured"] > 0 and "unguided" in saved
    assert 0 <= saved["dense_accuracy_same_epochs"] <= 100
    e2e = saved["gsl"]["end_to_end"]  # the pruned network run whole by harness.sparsify
    assert abs(e2e["sparse_execution_accuracy"] - saved["gsl"]["accuracy_after_finetune"]) <= 0.5
    assert e2e["sparsified_ms"] > 0 and e2e["torch_best_ms"] > 0 and e2e["sparse_layers"] >= 0
    assert "end_to_end" in saved["unguided"]
    timing = pd.read_csv(out / "timing" / "results.csv")
    assert (timing["status"] == "ok").all() and (timing["pattern"] == "file").all()
    assert {layer.rsplit("@", 1)[1] for layer in timing["layer"]} == {"gsl", "unguided"}

    # A rerun into the same directory resumes: nothing is trained again, the results stand.
    lines = []
    again = run(settings, lines.append)
    assert any("resuming" in line for line in lines)
    assert not any(re.search(r"epoch \d+/", line) for line in lines)  # no training
    assert again["gsl"]["accuracy_after_finetune"] == saved["gsl"]["accuracy_after_finetune"]
    assert again["unguided"]["accuracy_after_finetune"] == saved["unguided"]["accuracy_after_finetune"]
    with pytest.raises(HarnessError, match="other settings"):
        run(GSLSettings(dense_epochs=2, prune_epochs=3, finetune_epochs=1, timing_repeats=1),
            lambda *_: None)


def test_time_allocation_with_a_layer_pinned_by_its_sweet_spot():
    shapes = conv_shapes(ReferenceNet(width=8), torch.zeros(1, 1, 28, 28))
    names = list(shapes)
    guidance = {n: LayerGuidance(n, 0.5, 0.5 if i == 1 else 0.95, 0.5 if i == 1 else 0.9, 3.0,
                                 True, "test") for i, n in enumerate(names)}
    allocated = allocate_for_time(guidance, shapes, lambda layer, s: (1 - s) * layer.height)
    assert allocated[names[1]].target == 0.5  # nowhere to move: lower == upper
    assert all(0.5 <= g.target <= 0.95 for g in allocated.values())


@pytest.mark.parametrize("method", ["l1", "dns"])
@pytest.mark.parametrize("block", [2, 4])
def test_block_pruning_keeps_whole_blocks(method, block):
    """With --pattern block:G the pruned convolutions share one support per block of G output
    channels, which the direct kernel then runs with its grouped tiles."""
    from harness.conv.sparsity import support_group
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    settings = PruneSettings(method=method, reproject_every=2, batch_size=32, block=block)
    pruner = GuidedPruner(model, guidance, settings, total_steps=4 * 8)
    train_epochs(model, data, 4, settings, pruner=pruner, log=lambda *_: None)
    pruner.finish()
    for n in names[1:]:
        w = model.get_submodule(n).weight.detach().numpy()
        assert sparsity(model.get_submodule(n).weight) >= 0.75
        assert support_group(w, (block,)) == block, n

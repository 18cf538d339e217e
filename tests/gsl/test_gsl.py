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

from harness.gsl.datasets import hold_out_validation, load_idx_dataset, synthetic_dataset  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.cli.gsl import main as gsl_main  # noqa: E402
from harness.gsl.guidance import LayerGuidance, allocate_for_time, guide, weight_count  # noqa: E402
from harness.gsl.network import BottleneckNet, ReferenceNet, conv_shapes  # noqa: E402
from harness.gsl.pipeline import run_gsl  # noqa: E402
from harness.gsl.pruning import GuidedPruner, sparsity  # noqa: E402
from harness.gsl.settings import GSLSettings, PruneSettings, TrainSettings  # noqa: E402
from harness.gsl.summary import aggregate  # noqa: E402
from harness.gsl.training import (BF16_FLAGS, accuracy, augmented,  # noqa: E402
                                  distillation_loss, resolve_precision, train_epochs)
from harness.machine.hostinfo import detect_host  # noqa: E402
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
    first, second, third = list(shapes)[:3]

    def speedup(layer, s):  # the second layer never wins; the others win above 60%
        return 0.5 if layer.name == second else 0.4 / max(1e-3, 1 - s) * (1 if s < 0.9 else 0.9 + 0.1 * s)
    g = guide(shapes, speedup, max_target=0.9)
    assert not g[first].prune and not g[first].eligible and "first layer" in g[first].reason
    assert not g[second].prune and g[second].eligible and "never faster" in g[second].reason
    other = g[third]
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
    capped = allocate_for_time(guidance, shapes, time, cap=0.93)  # no layer past the cap
    assert all(capped[n].target <= 0.93 for n in pruned)
    assert kept(guidance) <= kept(capped) <= kept(guidance) + step
    assert capped[wide].target > guidance[wide].target


QUICK = TrainSettings(batch_size=32, augment=False, lr=0.02)


def small_setup(width=4):
    data = hold_out_validation(synthetic_dataset(n_train=288, n_test=128, size=12, classes=4), 32)
    model = ReferenceNet(classes=4, width=width)
    shapes = conv_shapes(model, torch.from_numpy(data.test_x[:1]))
    names = list(shapes)
    guidance = {n: LayerGuidance(n, 0.3, 0.8, 0.8, 3.0, i > 0, "test") for i, n in enumerate(names)}
    return data, model, names, guidance


@pytest.mark.parametrize("method", ["gmp", "l1", "dns"])
def test_pruning_reaches_targets_and_keeps_masks(method):
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    settings = PruneSettings(method=method, reproject_every=2)
    pruner = GuidedPruner(model, guidance, settings, total_steps=4 * 8)
    assert (float(pruner.penalty().detach()) == 0) == (method == "gmp")  # gmp: magnitude alone
    train_epochs(model, data, 4, QUICK, kind="rewind", pruner=pruner, prune_epochs=4,
                 log=lambda *_: None)
    for n in names[1:]:
        assert sparsity(model.get_submodule(n).weight) >= 0.79
    assert sparsity(model.get_submodule(names[0]).weight) < 0.05  # not in the pruned set
    before = {n: (model.get_submodule(n).weight == 0).clone() for n in names[1:]}
    train_epochs(model, data, 1, QUICK, kind="rewind", fixed_masks=pruner, log=lambda *_: None)
    for n in names[1:]:  # fine-tuning keeps every pruned weight at zero
        assert bool((model.get_submodule(n).weight[before[n]] == 0).all())


def test_gmp_follows_the_cubic_schedule():
    """Gradual magnitude pruning: sparsity s_f (1 - (1 - t)^3) at the share t of the ramp."""
    data, model, names, guidance = small_setup()
    pruner = GuidedPruner(model, guidance, PruneSettings(reproject_every=1000), total_steps=100)
    state = pruner.layers[names[1]]
    for step in (0, 20, 40, 80, 100):
        t = min(1.0, step / 80)
        assert math.isclose(pruner.scheduled(state, step), 0.8 * (1 - (1 - t) ** 3))
    pruner.after_step(40)
    assert sparsity(model.get_submodule(names[1]).weight) == pytest.approx(0.8 * 0.875, abs=0.02)


@pytest.mark.parametrize("method", ["gmp", "l1"])
def test_pruned_weights_moved_off_zero_do_not_empty_the_mask(method):
    """An optimiser step moves pruned weights off zero (momentum); were they scored with the
    kept ones, larger revived values would take the top of the quantile and the mask, an
    intersection, would lose every weight."""
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    pruner = GuidedPruner(model, guidance, PruneSettings(method=method, threshold_cap=1e9,
                                                         reproject_every=1000), total_steps=100)
    w = model.get_submodule(names[1]).weight
    pruner.after_step(20)
    pruned = pruner.masks[names[1]].logical_not()
    assert 0.3 < float(pruned.float().mean()) < 0.7
    with torch.no_grad():
        w[pruned] = 10 * float(w.abs().max())   # revived, larger than every kept weight
    pruner.after_step(40)
    assert sparsity(w) == pytest.approx(0.8 * 0.875, abs=0.02)
    assert bool(w[pruned].eq(0).all())


def test_stalled_layer_is_restored_dense():
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    guidance = {n: LayerGuidance(n, 0.7, 0.9, 0.9, 3.0, i > 0, "test") for i, n in enumerate(names)}
    dense = model.get_submodule(names[1]).weight.detach().clone()
    settings = PruneSettings(method="l1", threshold_cap=1e-6, reproject_every=1, stall_window=2)
    pruner = GuidedPruner(model, guidance, settings, total_steps=16)
    train_epochs(model, data, 2, QUICK, kind="rewind", pruner=pruner, prune_epochs=2,
                 log=lambda *_: None)
    state = pruner.layers[names[1]]
    assert "dense weights restored" in state.reason
    assert sparsity(model.get_submodule(names[1]).weight) < 0.05
    assert not torch.equal(dense, torch.zeros_like(dense))


def test_pipeline_end_to_end(tmp_path):
    from harness.networks.sources import torch_model
    data = synthetic_dataset(n_train=440, n_test=200, size=28, classes=4)
    settings = GSLSettings(dense_epochs=2, prune_epochs=2, finetune_epochs=1, seeds=2,
                           validation=40, timing_repeats=1, e2e_min_time=0.005)
    spec = {"network": "reference", "classes": 4, "width": 8, "channels": 1, "height": 28}
    out = tmp_path / "gsl"

    def run(settings, log):
        return run_gsl(spec, data, load_profile(HOST_PROFILE), out, train=QUICK,
                       prune=PruneSettings(), settings=settings, log=log,
                       results_root=tmp_path / "no-runs")
    saved = run(settings, lambda *_: None)
    for seed in (0, 1):
        for name in ("dense.pt", "pruned_gsl.pt", "pruned_gsl.py", "pruned_unguided.pt",
                     "pruned_convs_gsl.npz", "pruned_convs_unguided.npz", "history_gsl.csv",
                     "stages.json"):
            assert (out / f"seed-{seed}" / name).exists(), name
    for name in ("layers.csv", "summary.json", "gsl_training.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0, 1]

    # the pruned network's model file is what spconv sweep --model and spconv e2e --model read
    _, loaded, example = torch_model(str(out / "seed-1" / "pruned_gsl.py"))
    state = torch.load(out / "seed-1" / "pruned_gsl.pt", weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert example.shape == (1, 1, 28, 28)
    assert math.isclose(accuracy(loaded, data.test_x, data.test_y),
                        saved["runs"][1]["gsl"]["test_accuracy"])

    layers = pd.read_csv(out / "layers.csv")
    assert set(layers["seed"]) == {0, 1}
    assert set(layers.columns) >= {"in_pruned_set", "why", "sparsity", "predicted_speedup",
                                   "measured_speedup"}
    assert layers["measured_speedup"].notna().all()
    a = saved["aggregate"]
    for key in ("dense_accuracy", "dense_same_budget_accuracy", "best_dense_accuracy",
                "gsl_accuracy", "unguided_accuracy", "gsl_conv_speedup", "gsl_conv_sparsity",
                "guided_over_unguided_conv_speed", "gsl_e2e_sparsified_ms"):
        assert len(a[key]["values"]) == 2 and a[key]["std"] >= 0, key
    for r in saved["runs"]:
        assert r["dense"]["epoch"] >= 1 and 0 <= r["dense_same_budget"]["test_accuracy"] <= 100
        assert r["gsl"]["epoch"] > settings.prune_epochs - 1  # chosen once the masks are final
        # the uniform comparison keeps as many convolution weights as the guided one
        assert abs(r["unguided"]["conv_sparsity"] - r["gsl"]["conv_sparsity"]) < 0.02
        e2e = r["gsl"]["end_to_end"]  # the pruned network run whole by harness.sparsify
        assert abs(e2e["sparse_execution_accuracy"] - r["gsl"]["test_accuracy"]) <= 0.5
    timing = pd.read_csv(out / "timing" / "results.csv")
    assert (timing["status"] == "ok").all() and (timing["pattern"] == "file").all()
    assert {layer.rsplit("@", 1)[1] for layer in timing["layer"]} == \
        {"gsl-s0", "gsl-s1", "unguided-s0", "unguided-s1"}

    # A rerun into the same directory resumes: nothing is trained again, the results stand.
    lines = []
    again = run(settings, lines.append)
    assert any("resuming" in line for line in lines)
    assert not any(re.search(r"epoch \d+/", line) for line in lines)  # no training
    for stage in ("gsl", "unguided"):
        assert again["aggregate"][f"{stage}_accuracy"] == saved["aggregate"][f"{stage}_accuracy"]
    lines = []
    with pytest.raises(HarnessError, match="other settings"):
        run(GSLSettings(dense_epochs=2, prune_epochs=3, finetune_epochs=1, seeds=2,
                        validation=40, timing_repeats=1, e2e_min_time=0.005), lines.append)
    assert not any("guidance" in line for line in lines)  # refused before the model's work


def test_validation_is_held_out_of_training_never_the_test_set():
    data = synthetic_dataset(n_train=100, n_test=30, size=12)
    split = hold_out_validation(data, 20)
    assert len(split.val_x) == 20 and len(split.train_x) == 80
    rows = {tuple(x.ravel()[:16]) for x in data.train_x}
    assert all(tuple(x.ravel()[:16]) in rows for x in split.val_x)
    assert not {tuple(x.ravel()[:16]) for x in split.val_x} & {tuple(x.ravel()[:16]) for x in split.train_x}
    np.testing.assert_array_equal(split.test_x, data.test_x)
    np.testing.assert_array_equal(hold_out_validation(data, 20).val_x, split.val_x)
    with pytest.raises(HarnessError, match="validation split"):
        hold_out_validation(data, 100)


def test_training_keeps_the_epoch_with_the_best_validation_accuracy():
    torch.manual_seed(0)
    data, model, _, _ = small_setup()
    history = []
    chosen = train_epochs(model, data, 4, QUICK, log=lambda *_: None, history=history)
    assert chosen["val_accuracy"] == max(h["val_accuracy"] for h in history)
    assert history[chosen["epoch"] - 1]["val_accuracy"] == chosen["val_accuracy"]
    assert accuracy(model, data.val_x, data.val_y) == chosen["val_accuracy"]  # its weights
    # early stopping: a rate too small to learn anything stops after `patience` epochs
    frozen = TrainSettings(batch_size=32, augment=False, lr=1e-12, patience=2)
    history = []
    train_epochs(ReferenceNet(classes=4, width=4), data, 10, frozen, log=lambda *_: None,
                 history=history)
    assert len(history) == 3


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it():
    native = any(f in detect_host().features for f in BF16_FLAGS)
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(HarnessError, match="precision must be one of"):
        resolve_precision("fp16")


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_learns_in_either_precision_and_keeps_float32_weights(precision):
    torch.manual_seed(0)
    data, model, _, _ = small_setup()
    before = accuracy(model, data.val_x, data.val_y)
    settings = TrainSettings(batch_size=32, augment=False, lr=0.02, precision=precision)
    chosen = train_epochs(model, data, 4, settings, log=lambda *_: None)
    assert chosen["val_accuracy"] >= max(before + 25.0, 50.0)  # 4 classes: chance is 25%
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_student_learns_from_the_teachers_soft_targets_alone():
    logits = torch.randn(8, 4)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, -logits, 4.0)) > 0.0
    torch.manual_seed(0)
    data, teacher, _, _ = small_setup()
    train_epochs(teacher, data, 4, QUICK, log=lambda *_: None)
    # distill 1: the labels weigh nothing, so all a student learns comes from the teacher
    soft_only = TrainSettings(batch_size=32, augment=False, lr=0.02, distill=1.0)
    student = ReferenceNet(classes=4, width=4)
    train_epochs(student, data, 8, soft_only, log=lambda *_: None, teacher=teacher)
    assert accuracy(student, data.test_x, data.test_y) >= 50.0  # 4 classes: chance is 25%
    assert not teacher.training  # the teacher only predicts


def test_augmentation_flips_and_shifts():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 2:6, 2] = 1.0  # a bar near the left edge
    out = augmented(x, np.random.default_rng(1), shift=2)
    assert out.shape == x.shape
    moved = [int(torch.nonzero(img[0].sum(0))[0]) for img in out]
    assert len(set(moved)) == 2 and max(moved) - min(moved) == 3  # flipped or not, one shift
    assert float(out.sum()) <= float(x.sum())  # shifts crop, never invent pixels


def test_summary_is_mean_and_spread_over_seeds():
    def run(dense_val, same_val, gsl_acc, speed):
        return {"dense": {"test_accuracy": 90.0, "val_accuracy": dense_val},
                "dense_same_budget": {"test_accuracy": 91.0, "val_accuracy": same_val},
                "gsl": {"test_accuracy": gsl_acc, "conv_sparsity": 0.9, "conv_speedup_measured": speed},
                "unguided": {"test_accuracy": gsl_acc, "conv_sparsity": 0.9,
                             "conv_speedup_measured": 2.0}}
    a = aggregate([run(92, 91, 89.0, 3.0), run(90, 91, 90.0, 2.0), run(92, 93, 91.0, 2.5)])
    # the best dense is chosen on validation: converged, longer, longer
    assert a["best_dense_accuracy"]["values"] == [90.0, 91.0, 91.0]
    assert a["gsl_accuracy"]["mean"] == 90.0 and math.isclose(a["gsl_accuracy"]["std"], 1.0)
    assert a["gsl_points_below_best_dense"]["values"] == [1.0, 1.0, 0.0]
    assert a["guided_over_unguided_conv_speed"]["values"] == [1.5, 1.0, 1.25]


def test_bottleneck_network_mixes_pointwise_strided_and_3x3():
    shapes = conv_shapes(BottleneckNet(width=16), torch.zeros(1, 1, 28, 28))
    kinds = {(s.kernel, s.stride) for s in shapes.values()}
    assert {(1, 1), (3, 1), (3, 2), (1, 2)} <= kinds
    assert {s.height for s in shapes.values()} == {28, 14, 7}
    assert BottleneckNet(classes=10, width=16)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_time_allocation_with_a_layer_pinned_by_its_sweet_spot():
    shapes = conv_shapes(ReferenceNet(width=8), torch.zeros(1, 1, 28, 28))
    names = list(shapes)
    guidance = {n: LayerGuidance(n, 0.5, 0.5 if i == 1 else 0.95, 0.5 if i == 1 else 0.9, 3.0,
                                 True, "test") for i, n in enumerate(names)}
    allocated = allocate_for_time(guidance, shapes, lambda layer, s: (1 - s) * layer.height)
    assert allocated[names[1]].target == 0.5  # nowhere to move: lower == upper
    assert all(0.5 <= g.target <= 0.95 for g in allocated.values())


@pytest.mark.parametrize("method", ["gmp", "dns"])
@pytest.mark.parametrize("block", [2, 4])
def test_block_pruning_keeps_whole_blocks(method, block):
    """With --pattern block:G the pruned convolutions share one support per block of G output
    channels, which the direct kernel then runs with its grouped tiles."""
    from harness.conv.sparsity import support_group
    torch.manual_seed(0)
    data, model, names, guidance = small_setup()
    settings = PruneSettings(method=method, reproject_every=2, block=block)
    pruner = GuidedPruner(model, guidance, settings, total_steps=4 * 8)
    train_epochs(model, data, 4, QUICK, kind="rewind", pruner=pruner, prune_epochs=4,
                 log=lambda *_: None)
    for n in names[1:]:
        w = model.get_submodule(n).weight.detach().numpy()
        assert sparsity(model.get_submodule(n).weight) >= 0.75
        assert support_group(w, (block,)) == block, n


def test_a_validation_split_larger_than_the_training_set_is_refused(tmp_path, capsys):
    assert gsl_main(["--dataset", "synthetic", "--train-subset", "100", "--validation", "100",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--validation 100" in err[0]


def test_network_speed_times_each_layer_on_the_kernel_sparsify_runs():
    """A 1x1 layer counts at the pointwise kernel's time even where the direct one was faster
    (sparsify runs the pointwise one), and a layer whose sparse kernel loses to the best dense
    method (of any variant) counts at the dense time."""
    from harness.gsl.measure import network_speed
    rows = [("pw@gsl", "pointwise_sparse", False, 4.0), ("pw@gsl", "direct_sparse", False, 3.0),
            ("pw@gsl", "onnxruntime", True, 8.0), ("k3@gsl", "direct_sparse", False, 6.0),
            ("k3@gsl", "onnxruntime", True, 7.0), ("k3@uniform", "onnxruntime", True, 5.0),
            ("k3@uniform", "direct_sparse", False, 2.0)]
    frame = pd.DataFrame(rows, columns=["layer", "method", "dense", "median_s"])
    frame["status"], frame["sparsity"] = "ok", 0.9
    table, speedup = network_speed(frame, "gsl")
    by = table.set_index("layer")
    assert by.loc["pw", "sparse_method"] == "pointwise_sparse" and by.loc["pw", "sparse_s"] == 4.0
    assert by.loc["k3", "best_dense_s"] == 5.0 and not by.loc["k3", "runs_sparse"]
    assert speedup == pytest.approx((8.0 + 5.0) / (4.0 + 5.0))


def test_sparse_kernel_choice_is_pointwise_only_where_it_applies():
    from harness import kernels
    spec = kernels.ConvSpec.from_shapes
    assert kernels.sparse_method_for(spec((1, 8, 6, 6), (4, 8, 1, 1), 1, 0, 1, 1)) == "pointwise_sparse"
    assert kernels.sparse_method_for(spec((1, 8, 6, 6), (4, 8, 1, 1), 2, 0, 1, 1)) == "pointwise_sparse"
    assert kernels.sparse_method_for(spec((1, 8, 6, 6), (4, 8, 1, 1), 1, 1, 1, 1)) == "direct_sparse"
    assert kernels.sparse_method_for(spec((1, 8, 6, 6), (4, 8, 3, 3), 1, 1, 1, 1)) == "direct_sparse"

"""spconv predict: the mechanistic model's predictions for a profile's build on this host, from
calibration alone: no sparse layer is timed.

It calibrates the build (the roofs of the kernels' inner loop included), times the dense
libraries once per layer shape (the dense side of every speedup; through the sweep, so a
profile's caps on them apply), and then predicts, for each layer, batch, thread count and
sparsity, the time of the sparse kernel a sparsified network runs on the layer (`kernel`: the
pointwise one for 1x1 layers without padding, with its default chunks and blocks, else the
direct one with the plan prepare() runs untuned). Writes DIR/predictions.csv (one row per point),
DIR/sweet_spots.csv (layer, kernel, batch, threads, predicted_crossover, predicted_upper, and
the predicted speedup at the top of the grid), DIR/metadata.json and the dense timings' own
run in DIR/dense/.
"""

from __future__ import annotations

import numpy as np

from harness import config
from harness.cli import common

GRID = np.round(np.arange(0.0, 0.951, 0.01), 2)  # the curves' sparsities (the sweep's top)


def build_parser(prog: str):
    p = common.parser(prog, "Predict where direct sparse convolution pays on this host for a "
                            "profile's build, from calibration alone: predicted times, speedup "
                            "curves, crossovers and upper bounds per layer.")
    common.add_profile(p)
    common.add_layer_source(p)
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,16")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    p.add_argument("--sparsity", default=config.SPARSITIES,
                   help="sparsities of predictions.csv (the sweet spots use a 0.01 grid)")
    p.add_argument("--out", required=True, help="directory for the predictions")
    return p


def main(argv: list[str] | None = None, prog: str = "spconv predict") -> int:
    return common.run(_predict, build_parser(prog).parse_args(argv))


def _dense_argv(args, out) -> list[str]:
    from harness import kernels

    dense = [m for m in kernels.methods_where(dense=True) if m in kernels.available_methods()
             and m != "reference"]
    argv = ["--profile", args.profile, "--methods", ",".join(dense), "--sparsity", "0.5",
            "--batch", args.batch, "--threads", args.threads, "--out", str(out), "--no-fit",
            "--no-progress"]
    if args.trust_profile:
        argv.append("--trust-profile")
    if args.layer_file:
        argv += ["--layer-file", args.layer_file]
    else:
        argv += ["--network", args.network]
    if args.layers:
        argv += ["--layers", args.layers]
    if (out / "results.csv").exists():
        argv.append("--resume")
    return argv


def _predict(args) -> int:
    from pathlib import Path

    import pandas as pd

    from harness.cli import sweep
    from harness.errors import HarnessError
    from harness.machine.build import build
    from harness.machine.calibrate import calibration
    from harness.models.mechanistic import KernelCosts, predicted_sweet_spot, direct_time
    from harness import kernels
    from harness.kernels.pointwise import PointwiseSparseConv
    from harness.models.plan_choice import model_plan
    from harness.models.pointwise_model import default_pointwise_time
    from harness.models.rows import row_spec
    from harness.store.files import write_json

    sparsities = sweep.parse_sparsities(args.sparsity)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile, target, host = common.load_target(args)
    built = build(target)
    print(f"dense libraries, once per layer shape ({out / 'dense'}):")
    rc = sweep.main(_dense_argv(args, out / "dense"))
    if rc:
        return rc
    dense = pd.read_csv(out / "dense" / "results.csv")
    dense = dense[(dense["status"] == "ok") & dense["dense"].astype(bool)
                  & dense["best_dense_s"].notna()]
    if dense.empty:
        raise HarnessError("no dense library ran correctly on these layers: nothing to "
                           "compare the predictions with")
    threads_max = int(dense["threads"].max())
    cal = calibration(built, host, threads_max)
    costs = KernelCosts.from_calibration(cal)
    l1d = host.caches_kib.get("l1d", 32) * 1024

    points, spots = [], []
    # best_dense_s: the sweep's baseline, the fastest at the profile's instruction set
    for (net, layer, b, t), g in dense.groupby(["network", "layer", "batch", "threads"]):
        first = g.iloc[0]
        spec, t = row_spec(first), int(t)
        dense_method, dense_s = first["best_dense_method"], float(first["best_dense_s"])
        row = {"network": net, "layer": layer, "batch": int(b), "threads": t}

        # the sparse kernel a network runs here
        kernel = row["kernel"] = kernels.sparse_method_for(spec)

        def sparse_s(s, spec=spec, t=t, kernel=kernel):
            if kernel == PointwiseSparseConv.method:  # with its default chunks and blocks
                return default_pointwise_time(costs, spec, 1.0 - s, t, l1d)
            # the plan prepare() runs untuned: the model's
            return direct_time(costs, spec, 1.0 - s, model_plan(costs, spec, 1.0 - s, t),
                               t)["total_s"]
        for s in sparsities:
            pred = sparse_s(s)
            points.append({**row, "sparsity": s, "predicted_s": pred, "dense_method": dense_method,
                           "dense_s": dense_s, "predicted_speedup": dense_s / pred})
        spot = predicted_sweet_spot(lambda s: dense_s / sparse_s(s), GRID)
        spots.append({**row, **spot, "dense_method": dense_method, "dense_s": dense_s})
    pd.DataFrame(points).to_csv(out / "predictions.csv", index=False)
    spots = pd.DataFrame(spots)
    spots.to_csv(out / "sweet_spots.csv", index=False)
    write_json(out / "metadata.json", "spconv.predict", 1, {
        "profile": profile.name, "host": host.cpu_model, "isa": built.isa,
        "build_key": built.key,
        "model": "mechanistic (calibration only): the direct kernel with the model's plans, "
                 "the pointwise kernel with its default chunks and blocks",
        "calibration": cal})
    print(spots[["layer", "kernel", "batch", "threads", "predicted_crossover",
                 "predicted_upper", "predicted_speedup_at_top"]].round(3).to_string(index=False))
    print(f"predictions: {out / 'predictions.csv'}, sweet spots: {out / 'sweet_spots.csv'}")
    return 0

"""spconv e2e: whole-network latency of a pruned, sparsified network against PyTorch (eager,
channels_last, frozen TorchScript), ONNX Runtime and DeepSparse (when installed), side by side
in one run, with a breakdown of the sparsified network's time."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from harness import config
from harness.cli import common
from harness.conv.layers import CATALOG
from harness.errors import HarnessError

E2E_SCHEMA, E2E_VERSION = "spconv-e2e", 1


def build_parser(prog: str):
    p = common.parser(prog, "Time a whole network end to end: its convolutions pruned by "
                            "magnitude and run by the sparse kernels where they measure faster "
                            "(harness.sparsify), against the dense runtimes on the same "
                            "weights, interleaved in one run.")
    common.add_profile(p)
    p.add_argument("--model", default="resnet50",
                   help=f"a catalog network ({', '.join(CATALOG)}), a Python file "
                        "FILE.py[:FUNCTION] returning (torch model, example input), or an "
                        "ONNX file (its operations rebuilt in PyTorch)")
    p.add_argument("--sparsity", default="0.7,0.9",
                   help="sparsities to prune every convolution but the first to")
    p.add_argument("--prune", choices=["magnitude", "none"], default="magnitude",
                   help="none: time the model's weights as they are (one row per batch and "
                        "thread count)")
    p.add_argument("--pointwise-only", action="store_true",
                   help="prune only the 1x1 convolutions (MobileNet's depthwise stay dense)")
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,16")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    p.add_argument("--choice", choices=["auto", "sparse", "dense"], default="auto",
                   help="auto: per layer, whichever of sparse and dense measures faster")
    p.add_argument("--tune", choices=["cached", "search"], default=config.TUNE_MODE,
                   help="direct-kernel plans: the tuning database's, or searched where missing")
    p.add_argument("--rounds", type=common.number("--rounds", low=1, high=100, integer=True),
                   default=3, help="interleaved rounds of timing every runtime")
    p.add_argument("--min-time", type=common.number("--min-time", low=0, high=60),
                   default=0.2, help="minimum seconds per timing sample")
    p.add_argument("--out", default=None,
                   help="directory for e2e.csv, e2e_layers.csv and metadata.json "
                        f"(default {config.RESULTS_ROOT}/e2e-<model>-<time>)")
    return p


def main(argv: list[str] | None = None, prog: str = "spconv e2e") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    return common.run(lambda a: _e2e(a, [prog, *argv]), args)


def _e2e(args, argv) -> int:
    from harness.cli.sweep import parse_ints, parse_sparsities

    sparsities = parse_sparsities(args.sparsity) if args.prune == "magnitude" else [None]
    batches, threads = parse_ints(args.batch, "--batch"), parse_ints(args.threads, "--threads")
    if importlib.util.find_spec("torch") is None:
        raise HarnessError("spconv e2e needs PyTorch: pip install 'sparseconv-harness[torch]'")
    import pandas as pd

    from harness.machine.build import build
    from harness.machine.calibrate import calibration
    from harness.models.plan_choice import cached_costs
    from harness.models.speedup import ModelSpeedup
    from harness.networks.end_to_end import Case, time_case
    from harness.networks.sources import torch_model
    from harness.store.files import atomic_write_text, write_json
    from harness.sweep.metadata import finish_metadata, start_metadata

    profile, target, host = common.load_target(args)
    built = build(target)
    loaded = {batches[0]: torch_model(args.model, batches[0])}  # a bad --model fails here
    out = Path(args.out) if args.out else Path(config.RESULTS_ROOT) / (
        f"e2e-{Path(args.model.split(':')[0]).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    meta = start_metadata(profile=profile, built=built, host=host, argv=argv,
                          settings={k: v for k, v in vars(args).items()})
    threads = sorted({min(t, host.logical_cpus) for t in threads})
    # taken before any timing (once per build, then cached): without it the direct kernel's
    # layers that the tuning database lacks run the default plan, not the model's
    calibration(built, host, max(threads))
    rows, layer_rows = [], []
    for batch in batches:
        name, model, example = loaded.pop(batch, None) or torch_model(args.model, batch)
        for t in threads:
            predictor = ModelSpeedup(profile, Path(config.RESULTS_ROOT), t)  # read once
            costs = cached_costs(built, host, t)  # the sparse layers' mechanistic prices
            for s in sparsities:
                case = Case(name, 0.0 if s is None else s, batch, t)
                print(f"{name}: sparsity {'as given' if s is None else s}, batch {batch}, "
                      f"{t} thread(s) ...", file=sys.stderr, flush=True)
                row = time_case(case, model, example, choice=args.choice, tune=args.tune,
                                rounds=args.rounds, min_time=args.min_time,
                                workdir=out, pruned=s is None,
                                pointwise_only=args.pointwise_only,
                                predictor=predictor, costs=costs)
                layers = row.pop("per_layer")
                layer_rows += [{"network": name, "sparsity": case.sparsity, "batch": batch,
                                "threads": t, **layer} for layer in layers]
                rows.append(row)
                print(_line(row), flush=True)
                # written after every case: an interrupted run keeps what it measured
                atomic_write_text(out / "e2e.csv", pd.DataFrame(rows).to_csv(index=False))
                atomic_write_text(out / "e2e_layers.csv",
                                  pd.DataFrame(layer_rows).to_csv(index=False))
    write_json(out / "metadata.json", E2E_SCHEMA, E2E_VERSION, finish_metadata(meta))
    print(f"results: {out / 'e2e.csv'} ({len(rows)} rows), per layer: {out / 'e2e_layers.csv'}")
    return 0


def _line(row: dict) -> str:
    """One case in words: latencies, speedups and where the sparsified time goes."""
    parts = [f"sparsified {row['sparsified_ms']:.1f} ms",
             f"{row['torch_best']} {row['torch_best_ms']:.1f} ms ({row['speedup_vs_torch']:.2f}x)"]
    for name in ("onnxruntime", "deepsparse"):
        if f"{name}_ms" in row:
            parts.append(f"{name} {row[f'{name}_ms']:.1f} ms ({row[f'speedup_vs_{name}']:.2f}x)")
    if "predicted_ms" in row:
        parts.append(f"predicted {row['predicted_ms']:.1f} ms")
    parts.append(f"[sparse conv {row['sparse_conv_ms']:.1f}, dense conv "
                 f"{row['dense_conv_ms']:.1f}, other {row['other_ms']:.1f} ms; "
                 f"{row['sparse_layers']}/{row['layers']} layers sparse; Python "
                 f"{row['overhead_us_per_layer']:.0f} us per layer]")
    return "  " + ", ".join(parts)

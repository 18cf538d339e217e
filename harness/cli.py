"""Command line of run_sweep.py: time kernels over layers x sparsity x batch x threads."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import HarnessError

DEFAULT_SPARSITIES = "0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9,0.95"
RESULTS_ROOT = Path("results")


def parse_sparsities(text: str) -> list[float]:
    """'0.5,0.9' or a range 'start:stop:step' (stop included when on the grid)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            values = np.arange(start, stop + step / 2, step)
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HarnessError(f"--sparsity: expected numbers like 0.5,0.9 or 0.5:0.95:0.05, "
                           f"got {text!r}") from None
    out = sorted({round(float(v), 6) for v in values})
    bad = [v for v in out if not 0.0 <= v < 1.0]
    if not out or bad:
        raise HarnessError(f"--sparsity: every sparsity must be in [0, 1), got {text!r}")
    return out


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise HarnessError(f"{option}: expected positive integers like 1,2, got {text!r}") from None
    if not values or values[0] < 1:
        raise HarnessError(f"{option}: expected positive integers like 1,2, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_sweep.py",
        description="Time direct sparse convolution against dense and lowered-sparse baselines "
                    "over layer shapes x sparsity x batch x threads, verifying every output.")
    p.add_argument("--profile", default=None,
                   help="architecture profile YAML (default: arch_profiles/host.yaml)")
    p.add_argument("--network", default="alexnet",
                   help="network of the layer catalog: alexnet, vgg16, resnet50, googlenet")
    p.add_argument("--layers", default=None, help="comma-separated layer names to keep")
    p.add_argument("--layer-file", default=None, help="YAML file of layers (replaces --network)")
    p.add_argument("--sparsity", default=DEFAULT_SPARSITIES,
                   help=f"sparsity list or start:stop:step (default {DEFAULT_SPARSITIES})")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: every available one)")
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,16")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=7, help="timing samples per point")
    p.add_argument("--min-time", type=float, default=0.05,
                   help="minimum seconds per timing sample (short kernels loop)")
    p.add_argument("--pattern", default="random", choices=["random", "magnitude"],
                   help="how generated weights are made sparse")
    p.add_argument("--weights", default=None,
                   help=".npz of real weights named by layer (their own sparsity is used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cold-cache", action="store_true",
                   help="evict the last-level cache before every sample")
    p.add_argument("--out", default=None,
                   help="run directory (default results/<profile>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run: skip points already measured (with --out, or the "
                        "latest run of the profile)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: AlexNet conv3-5, sparsity 0.5 and 0.9, few short samples")
    p.add_argument("--tune", choices=["off", "cached", "search"], default="cached",
                   help="direct kernel plans: the default plan, tuned plans from the tuning "
                        "database when present (default), or search and store missing ones")
    p.add_argument("--tune-budget", type=int, default=40, help="plans tried per tuning search")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (which registers extra methods) in every process")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the points on a Dask cluster (tcp://HOST:PORT), routed to workers "
                        "with the resource arch-<profile name>")
    p.add_argument("--scheduler-file", default=None, help="Dask scheduler file (instead of --scheduler)")
    p.add_argument("--in-process", action="store_true",
                   help="run kernels in this process instead of a crash-isolated worker")
    p.add_argument("--point-timeout", type=float, default=600.0,
                   help="seconds a point may take before its worker is killed (default 600)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--refit", metavar="RUN_DIR", default=None,
                   help="refit the models and sweet spots of a stored run, without timing")
    p.add_argument("--report", metavar="RUN_DIR", nargs="+", default=None,
                   help="redraw the figures and report of stored runs without timing; with "
                        "several runs, also compare them (into --out or results/compare-<time>)")
    p.add_argument("--no-fit", action="store_true",
                   help="skip calibration and the model fit after the sweep")
    return p


def _new_run_dir(profile_name: str) -> Path:
    """A fresh directory under results/, unique even for runs started in the same second."""
    stem = RESULTS_ROOT / f"{profile_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise HarnessError(f"cannot create a run directory under {RESULTS_ROOT}: "
                               f"{exc.strerror}") from None
    raise HarnessError(f"too many runs named {stem}")


def _latest_run(profile_name: str) -> Path | None:
    runs = sorted(RESULTS_ROOT.glob(f"{profile_name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.report:
            return _report_runs([Path(p) for p in args.report], args.out)
        return _run(args, sys.argv if argv is None else ["run_sweep.py", *argv])
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args, argv: list[str]) -> int:
    # Imports that load native libraries come after the OpenMP environment is set.
    from .build import build
    from .hostinfo import detect_host
    from .profiles import HOST_PROFILE, build_target, load_profile
    from .store import RunStore

    host = detect_host()
    profile = load_profile(args.profile or HOST_PROFILE, host=host)
    target = build_target(profile, host=host)  # refuses an ISA the host lacks, before building
    if args.refit:
        return _refit(Path(args.refit), profile, host, build(target))
    cfg = _sweep_config(args, profile, target, host)
    store = RunStore(_run_dir(args, profile.name))
    try:
        return _sweep(args, argv, cfg, store)
    finally:
        store.close()


def _sweep_config(args, profile, target, host):
    """The sweep the command line asks for, validated before anything is built or timed."""
    from . import kernels
    from .layers import load_layer_file, network_layers
    from .sweep import SweepConfig
    from .weights import load_weight_file

    layers = load_layer_file(args.layer_file) if args.layer_file else network_layers(args.network)
    sparsities = parse_sparsities(args.sparsity)
    repeats, min_time = args.repeats, args.min_time
    if args.quick:
        if not args.layers and not args.layer_file and args.network == "alexnet":
            args.layers = "conv3,conv4,conv5"
        sparsities, repeats, min_time = [0.5, 0.9], min(repeats, 3), min(min_time, 0.01)
    if args.layers:
        wanted = [n.strip() for n in args.layers.split(",") if n.strip()]
        missing = [n for n in wanted if n not in {l.name for l in layers}]
        if missing:
            raise HarnessError(f"--layers: no layer {missing[0]!r} (have: "
                               f"{', '.join(l.name for l in layers)})")
        layers = [l for l in layers if l.name in wanted]
    if repeats < 1 or min_time < 0:
        raise HarnessError("--repeats must be >= 1 and --min-time >= 0")
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else kernels.available_methods())
    methods = [m for m in methods if m != "reference"] or methods
    max_threads = min(profile.total_cores * profile.threads_per_core, host.logical_cpus)
    asked = parse_ints(args.threads, "--threads")
    threads = sorted({min(t, max_threads) for t in asked})
    if threads != asked:
        print(f"note: threads capped at {max_threads} (profile {profile.name} on this host)",
              file=sys.stderr)
    cfg = SweepConfig(
        profile=profile, target=target, host=host, layers=layers, sparsities=sparsities,
        methods=methods, batches=parse_ints(args.batch, "--batch"), threads=threads,
        pattern=args.pattern, seed=args.seed, repeats=repeats, min_time=min_time,
        cold_cache=args.cold_cache,
        weight_files=load_weight_file(args.weights, layers) if args.weights else {},
        tune=args.tune, tune_budget=args.tune_budget, plugins=args.plugin)
    cfg.load_plugins()
    return cfg


def _run_dir(args, profile_name: str) -> Path:
    if args.out:
        run_dir = Path(args.out)
    elif args.resume:
        run_dir = _latest_run(profile_name)
        if run_dir is None:
            raise HarnessError(f"--resume: no earlier run of profile {profile_name} under "
                               f"{RESULTS_ROOT}/; give --out")
    else:
        run_dir = _new_run_dir(profile_name)
    if (run_dir / "points.jsonl").exists() and not args.resume:
        raise HarnessError(f"{run_dir} already holds a run; add --resume to continue it or "
                           "choose another --out")
    return run_dir


def _executor(args, cfg, cpus):
    from .executors import InProcessExecutor, IsolatedExecutor
    if args.scheduler or args.scheduler_file:
        from .distributed import DaskExecutor
        return DaskExecutor(cfg, args.scheduler, args.scheduler_file)
    if args.in_process:
        return InProcessExecutor(cfg)
    return IsolatedExecutor(cfg, timeout=args.point_timeout, cpus=cpus)


def _pin_threads(threads: int) -> list[int] | None:
    """Pin to the first CPUs the largest thread count needs, so runs are repeatable;
    returns them."""
    import psutil

    from . import STARTUP_CPUS
    try:
        cpus = (STARTUP_CPUS or sorted(psutil.Process().cpu_affinity()))[:threads]
        psutil.Process().cpu_affinity(cpus)
        return cpus
    except (AttributeError, OSError, ValueError):
        return None


def _sweep(args, argv, cfg, store) -> int:
    from .metadata import finish_metadata, start_metadata
    from .store import METADATA
    from .results import results_table, summary_table
    from .sweep import pending_points, plan_points, run_sweep
    from .timing import call_overhead

    cpus = _pin_threads(max(cfg.threads))
    built, profile, host = cfg.built, cfg.profile, cfg.host
    points = plan_points(cfg)
    on_cluster = bool(args.scheduler or args.scheduler_file)
    todo = pending_points(points, store, cfg, same_machine=not on_cluster)
    settings = {"layers": [l.key for l in cfg.layers], "sparsities": cfg.sparsities,
                "methods": cfg.methods, "batches": cfg.batches, "threads": cfg.threads,
                "pattern": cfg.pattern, "seed": cfg.seed, "repeats": cfg.repeats,
                "min_time_s": cfg.min_time, "cold_cache": cfg.cold_cache,
                "weights_file": args.weights, "tune": cfg.tune, "tune_budget": cfg.tune_budget,
                "points_planned": len(points), "points_to_measure": len(todo),
                "call_overhead_s": call_overhead(built)}
    meta = start_metadata(profile=profile, built=built, host=host, argv=argv, settings=settings)
    previous = store.read_json(METADATA)
    if previous:
        meta["previous_sessions"] = previous.get("previous_sessions", []) + [
            {k: previous.get(k) for k in ("start_time", "end_time", "command_line")}]
    store.write_json(METADATA, meta)

    where = f"{profile.name} on {host.cpu_model}" + (" (emulated ISA)" if built.emulated else "")
    print(f"run {store.dir}: {len(todo)} of {len(points)} points to measure; {where}",
          file=sys.stderr)
    stop = _StopOnInterrupt()
    try:
        with stop:
            run_sweep(cfg, store, todo, progress=not args.no_progress,
                      executor=_executor(args, cfg, cpus), should_stop=stop.requested)
    except KeyboardInterrupt:  # a second Ctrl-C: give up on the point in flight
        pass
    interrupted = stop.count > 0
    frame = results_table(store.rows())
    store.write_table(frame)
    summary = summary_table(frame)
    store.write_table(summary, "summary.csv")
    measured_by = sorted({r.get("worker") or r.get("host") for r in store.rows()})
    store.write_json(METADATA, finish_metadata(meta, interrupted=interrupted,
                                               measured_by=measured_by))
    _report(frame, summary, store.dir)
    if interrupted:
        print(f"interrupted; finished points are saved. Resume with: "
              f"python run_sweep.py --profile {profile.path} --out {store.dir} --resume",
              file=sys.stderr)
        return 130
    if not args.no_fit:
        _fit(store, frame, profile, host, built, max(cfg.threads))
    return 0


class _StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) asks the sweep to stop after the point in
    flight; a second one interrupts at once."""

    def __init__(self):
        self.count = 0

    def requested(self) -> bool:
        return self.count > 0

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            print("\ninterrupt: stopping after the point in flight (Ctrl-C again to abort)",
                  file=sys.stderr)
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        import signal
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        import signal
        signal.signal(signal.SIGINT, self._previous)
        return False


def _fit(store, frame, profile, host, built, threads: int) -> None:
    """Calibrate (cached), fit the models and write sweet spots and targets; a fit that the
    run's points cannot support is a warning, not a failure of the sweep."""
    from .analysis import analyse, print_analysis
    from .calibrate import calibration

    cal = calibration(built, host, threads)
    l2 = host.caches_kib.get("l2", 1024) * 1024
    try:
        result = analyse(store, frame, profile, cal, l2, built.isa)
    except (HarnessError, ValueError) as exc:
        print(f"warning: no model fit: {exc}", file=sys.stderr)
        return
    print_analysis(result)
    from .report import write_report
    md, _ = write_report(store.dir)
    print(f"model: {store.dir / 'model_fit.json'}, sweet spots: {store.dir / 'sweet_spots.csv'}, "
          f"targets: {store.dir / 'targets.yaml'}, report: {md}")


def _report_runs(run_dirs: list[Path], out: str | None) -> int:
    from .report import compare, write_report
    for run_dir in run_dirs:
        md, html = write_report(run_dir)
        print(f"report: {md} and {html}")
    if len(run_dirs) > 1:
        target = Path(out) if out else RESULTS_ROOT / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"comparison: {compare(run_dirs, target)}")
    return 0


def _refit(run_dir: Path, profile, host, built) -> int:
    import pandas as pd

    from .store import RESULTS, RunStore
    if not (run_dir / RESULTS).exists():
        raise HarnessError(f"--refit: {run_dir} has no {RESULTS}")
    store = RunStore(run_dir)
    frame = pd.read_csv(run_dir / RESULTS)
    threads = int(frame["threads"].max()) if len(frame) else 1
    _fit(store, frame, profile, host, built, threads)
    return 0


def _report(frame, summary, run_dir: Path) -> None:
    bad = frame[frame["status"] != "ok"]
    noisy = frame[(frame["status"] == "ok") & (frame["noisy"] == True)]  # noqa: E712
    if len(summary):
        print(summary.to_string(index=False))
    for _, r in bad.iterrows():
        print(f"warning: {r['layer']} {r['method']} s={r['sparsity']}: {r['status']}: "
              f"{r['reason']}", file=sys.stderr)
    if len(noisy):
        print(f"warning: {len(noisy)} points have an IQR above 10% of their median "
              "(machine busy?)", file=sys.stderr)
    print(f"results: {run_dir / 'results.csv'}  ({len(frame)} rows, "
          f"{int((frame['status'] == 'ok').sum())} ok)")

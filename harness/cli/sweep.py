"""spconv sweep (and run_sweep.py): time kernels over layers x sparsity x batch x threads,
verify every output, then fit the models and write the report."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from harness import config
from harness.cli import common
from harness.conv.weights import PATTERNS, check_pattern
from harness.errors import HarnessError

_RUN_NAME = r"-\d{8}-\d{6}(-\d+)?"  # <profile>-<date>-<time>[-n]: see _new_run_dir


def parse_sparsities(text: str, max_points: int = config.MAX_POINTS) -> list[float]:
    """'0.5,0.9' or a range 'start:stop:step' (stop included when on the grid), at most
    ``max_points`` values."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not (np.isfinite(start) and np.isfinite(stop) and np.isfinite(step)) or step <= 0:
                raise ValueError
            count = int((stop - start) / step) + 1 if stop >= start else 0
            if count > max_points:
                raise HarnessError(f"--sparsity: {text!r} makes {count} values (at most "
                                   f"{max_points}; raise --max-points to allow more)")
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
    if not values or values[0] < 1 or values[-1] > 1 << 16:
        raise HarnessError(f"{option}: expected positive integers like 1,2, got {text!r}")
    return values


def _patterns(text: str) -> list[str]:
    """--pattern: one or more weight patterns, in the order given, each once."""
    patterns = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    try:
        for p in patterns or [text]:
            check_pattern(p)
    except HarnessError as exc:
        raise argparse.ArgumentTypeError(f"--pattern: {exc}") from None
    return patterns


def build_parser(prog: str = "run_sweep.py"):
    p = common.parser(prog, "Time direct sparse convolution against dense and lowered-sparse "
                            "baselines over layer shapes x sparsity x batch x threads, verifying "
                            "every output; then fit the models and write the report.")
    common.add_profile(p)
    common.add_layer_source(p)
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="sweep a model's own convolutions with their real weights (BatchNorm "
                        "folded in): an .onnx file, a Python file FILE.py[:FUNCTION] whose "
                        "function returns (torch model, example input), or a catalog network "
                        "(replaces --network)")
    p.add_argument("--prune", choices=["none", "magnitude"], default="none",
                   help="with --model: prune each layer's real weights by magnitude to every "
                        "--sparsity (none: sweep them as they are)")
    p.add_argument("--targets", default=None, metavar="YAML",
                   help="with --model: prune each layer by magnitude to its own sparsity from "
                        "a targets.yaml (a sweep's, or layers: {name: sparsity})")
    p.add_argument("--sparsity", default=config.SPARSITIES,
                   help="sparsity list or start:stop:step")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: every available one)")
    p.add_argument("--batch", default=config.BATCHES, help="batch sizes, e.g. 1,16")
    p.add_argument("--threads", default=config.THREADS, help="thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=common.number("--repeats", low=1, high=1000, integer=True),
                   default=config.REPEATS, help="timing samples per point")
    p.add_argument("--min-time", type=common.number("--min-time", low=0, high=60),
                   default=config.MIN_TIME_S,
                   help="minimum seconds per timing sample (short kernels loop)")
    p.add_argument("--noisy-retries", default=config.NOISY_RETRIES,
                   type=common.number("--noisy-retries", low=0, high=20, integer=True),
                   help="times a point is timed again while its samples spread (IQR) more "
                        f"than {config.NOISY_IQR * 100:.0f}%% of their median; the fastest "
                        "timing is kept. Unless 0, a sparse point slower than a denser point "
                        "of its curve is timed once more after the sweep")
    p.add_argument("--pattern", default=config.PATTERN, type=_patterns,
                   help="how generated weights are made sparse, one or a comma-separated list, "
                        "swept side by side: " + ", ".join(PATTERNS) + " (block:G prunes "
                        "blocks of G output channels that share one support)")
    p.add_argument("--weights", default=None,
                   help=".npz of real weights named by layer, or a PyTorch state dict .pt "
                        "(their own sparsity is used)")
    p.add_argument("--seed", type=common.number("--seed", low=0, high=2**32 - 1, integer=True),
                   default=config.SEED, help="seed of the generated weights and inputs")
    p.add_argument("--cold-cache", action="store_true",
                   help="evict the last-level cache before every sample")
    p.add_argument("--out", default=None,
                   help="run directory (default results/<profile>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run: skip points already measured (with --out, or the "
                        "latest run of the profile)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: AlexNet conv3-5, sparsity 0.5 and 0.9, few short samples")
    p.add_argument("--max-points", type=common.number("--max-points", low=1, integer=True),
                   default=config.MAX_POINTS, help="refuse a sweep of more points than this")
    p.add_argument("--tune", choices=["off", "cached", "search"], default=config.TUNE_MODE,
                   help="direct kernel plans: the default plan, tuned plans from the tuning "
                        "database when present, or search and store missing ones")
    p.add_argument("--tune-budget", type=common.number("--tune-budget", low=1, high=10000,
                                                       integer=True),
                   default=config.TUNE_BUDGET, help="plans tried per tuning search")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (which registers extra methods) in every process")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the points on a Dask cluster (tcp://HOST:PORT), routed to workers "
                        "with the resource arch-<profile name>")
    p.add_argument("--scheduler-file", default=None, help="Dask scheduler file (instead of --scheduler)")
    p.add_argument("--in-process", action="store_true",
                   help="run kernels in this process instead of a crash-isolated worker")
    p.add_argument("--point-timeout", type=common.number("--point-timeout", low=0, open_low=True,
                                                         high=86400),
                   default=config.POINT_TIMEOUT_S,
                   help="seconds a point may take before its worker is killed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--refit", metavar="RUN_DIR", default=None,
                   help="refit the models and sweet spots of a stored run, without timing "
                        "(as spconv refit)")
    p.add_argument("--report", metavar="RUN_DIR", nargs="+", default=None,
                   help="redraw the figures and report of stored runs without timing "
                        "(as spconv report)")
    p.add_argument("--no-fit", action="store_true",
                   help="skip calibration and the model fit after the sweep")
    return p


def main(argv: list[str] | None = None, prog: str = "run_sweep.py") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    if args.report:
        from harness.cli.report import report_runs
        return common.run(lambda a: report_runs([Path(p) for p in a.report], a.out), args)
    return common.run(lambda a: _run(a, [prog, *argv]), args)


def _run(args, argv: list[str]) -> int:
    from harness.store.runs import RunStore
    from harness.sweep.record import from_mapping

    profile, target, host = common.load_target(args)
    if args.refit:
        from harness.cli.refit import refit
        return refit(Path(args.refit), profile, target, host)
    cfg = _sweep_config(args, profile, target, host)
    cfg.built  # compile (or load) before a run directory exists: a failed build leaves none
    store = RunStore(_run_dir(args, profile.name), validate=from_mapping)
    try:
        return _sweep(args, argv, cfg, store)
    finally:
        store.close()


def _sweep_config(args, profile, target, host):
    """The sweep the command line asks for, validated before anything is built or timed."""
    from harness import kernels
    from harness.conv.layers import load_layer_file, network_layers
    from harness.conv.weights import load_weight_file
    from harness.sweep.executors.dask import check_scheduler_file
    from harness.sweep.plan import SweepConfig
    from harness.kernels.plans import TuningDB

    weight_files, prune_files = {}, False
    if args.model:
        layers, weight_files, prune_files = _model_layers(args)
    elif args.prune != "none" or args.targets:
        raise HarnessError("--prune and --targets apply to the weights of a --model")
    elif args.layer_file:
        layers = load_layer_file(args.layer_file)
    else:
        layers = network_layers(args.network)
    if args.weights:
        weight_files = load_weight_file(args.weights, layers)
    sparsities = parse_sparsities(args.sparsity, args.max_points)
    repeats, min_time = args.repeats, args.min_time
    if args.quick:
        if not args.layers and not args.layer_file and not args.model \
                and args.network == config.NETWORK:
            args.layers = config.QUICK_LAYERS
        sparsities = list(config.QUICK_SPARSITIES)
        repeats, min_time = min(repeats, config.QUICK_REPEATS), min(min_time, config.QUICK_MIN_TIME_S)
    if args.layers:
        wanted = [n.strip() for n in args.layers.split(",") if n.strip()]
        missing = [n for n in wanted if n not in {l.name for l in layers}]
        if missing:
            raise HarnessError(f"--layers: no layer {missing[0]!r} (have: "
                               f"{', '.join(l.name for l in layers)})")
        layers = [l for l in layers if l.name in wanted]
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else kernels.default_methods())
    max_threads = min(profile.total_cores * profile.threads_per_core, host.logical_cpus)
    asked = parse_ints(args.threads, "--threads")
    threads = sorted({min(t, max_threads) for t in asked})
    if threads != asked:
        print(f"note: threads capped at {max_threads} (profile {profile.name} on this host)",
              file=sys.stderr)
    batches = parse_ints(args.batch, "--batch")
    planned = (len(layers) * len(batches) * len(threads) * len(methods) * len(sparsities)
               * len(args.pattern))
    if planned > args.max_points:
        raise HarnessError(f"the sweep would measure up to {planned} points (at most "
                           f"{args.max_points}; raise --max-points to allow more)")
    if args.tune != "off":
        TuningDB().check()  # a damaged database is named now, not at every point
    check_scheduler_file(args.scheduler_file)
    cfg = SweepConfig(
        profile=profile, target=target, host=host, layers=layers, sparsities=sparsities,
        methods=methods, batches=batches, threads=threads,
        patterns=args.pattern, seed=args.seed, repeats=repeats, min_time=min_time,
        noisy_retries=args.noisy_retries, cold_cache=args.cold_cache,
        weight_files=weight_files, prune_files=prune_files,
        tune=args.tune, tune_budget=args.tune_budget, plugins=args.plugin)
    cfg.load_plugins()
    for m in methods:
        kernels.method_class(m)  # refuses an unknown method (plugins loaded)
    return cfg


def _model_layers(args):
    """The layers of --model and their real weights: as they are, pruned to each --sparsity
    (--prune magnitude), or pruned once to per-layer --targets."""
    from harness.conv.sparsity import magnitude_prune
    from harness.networks.layers import sweep_layers
    from harness.networks.pruning import read_targets
    from harness.networks.sources import model_convolutions

    if args.layer_file or args.weights:
        raise HarnessError("--model brings its own layers and weights: drop --layer-file "
                           "and --weights")
    name, convs, notes = model_convolutions(args.model)
    layers, weights, more = sweep_layers(convs, name)
    for note in notes + more:
        print(f"note: {note}", file=sys.stderr)
    if not layers:
        raise HarnessError(f"{args.model}: no convolution the sweep can run")
    if args.targets:
        targets = read_targets(args.targets)
        unknown = sorted(set(targets) - {l.name for l in layers})
        if unknown:
            raise HarnessError(f"{args.targets}: no layer {unknown[0]!r} in {args.model}")
        weights = {l.key: magnitude_prune(weights[l.key], targets[l.name])
                   if l.name in targets else weights[l.key] for l in layers}
        return layers, weights, False
    return layers, weights, args.prune == "magnitude"


def _new_run_dir(profile_name: str) -> Path:
    """A fresh directory under results/, unique even for runs started in the same second."""
    root = Path(config.RESULTS_ROOT)
    stem = root / f"{profile_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise HarnessError(f"cannot create a run directory under {root}: "
                               f"{exc.strerror}") from None
    raise HarnessError(f"too many runs named {stem}")


def _latest_run(profile_name: str) -> Path | None:
    """The newest run of exactly this profile that holds points (another profile whose name
    starts the same, or a directory a failed start left empty, is not it)."""
    pattern = re.compile(re.escape(profile_name) + _RUN_NAME)
    from harness.store.runs import POINTS
    runs = [p for p in Path(config.RESULTS_ROOT).glob(f"{profile_name}-*")
            if pattern.fullmatch(p.name) and (p / POINTS).exists()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _run_dir(args, profile_name: str) -> Path:
    from harness.store.runs import POINTS
    if args.out:
        run_dir = Path(args.out)
    elif args.resume:
        run_dir = _latest_run(profile_name)
        if run_dir is None:
            raise HarnessError(f"--resume: no earlier run of profile {profile_name} under "
                               f"{config.RESULTS_ROOT}/; give --out")
    else:
        run_dir = _new_run_dir(profile_name)
    if (run_dir / POINTS).exists() and not args.resume:
        raise HarnessError(f"{run_dir} already holds a run; add --resume to continue it or "
                           "choose another --out")
    return run_dir


def _executor(args, cfg, cpus):
    from harness.sweep.executors.inprocess import InProcessExecutor
    from harness.sweep.executors.isolated import IsolatedExecutor
    if args.scheduler or args.scheduler_file:
        from harness.sweep.executors.dask import DaskExecutor
        return DaskExecutor(cfg, args.scheduler, args.scheduler_file)
    if args.in_process:
        return InProcessExecutor(cfg)
    return IsolatedExecutor(cfg, timeout=args.point_timeout, cpus=cpus)


def _pin_threads(threads: int):
    """Claim and pin the CPUs the largest thread count needs (free of other sweeps where
    possible), so runs are repeatable and concurrent sweeps do not share cores."""
    import psutil

    from harness.machine.cpus import allowed_cpus, claim_cpus
    claim = claim_cpus(threads, allowed_cpus())
    if claim.shared:
        print(f"warning: another sweep is running on CPU(s) {claim.shared}; both sweeps' "
              "timings will disturb each other", file=sys.stderr)
    try:
        psutil.Process().cpu_affinity(claim.cpus)
    except (AttributeError, OSError, ValueError):
        pass
    return claim


def _check_resume(previous: dict | None, settings: dict, run_dir: Path) -> None:
    if not previous or "settings" not in previous:
        return
    old = previous["settings"]
    changed = sorted(k for k in settings if k in old and old[k] != settings[k])
    if changed:
        raise HarnessError(f"{run_dir} holds a run made with other settings "
                           f"({', '.join(changed)}); resume it with its own command line "
                           f"(see {run_dir}/metadata.json) or choose another --out")


def resume_command(argv: list[str], run_dir: Path) -> str:
    """The command line that continues this run: the original options, with --out and
    --resume set."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--out":
            skip = True
            continue
        if word == "--resume" or word.startswith("--out="):
            continue
        words.append(word)
    head = ["python", "run_sweep.py"] if words[0] == "run_sweep.py" else words[0].split()
    return shlex.join([*head, *words[1:], "--out", str(run_dir), "--resume"])


def _sweep(args, argv, cfg, store) -> int:
    from harness import kernels
    from harness.machine.caps import dense_caps
    from harness.machine.profiles import not_reproduced
    from harness.sweep.metadata import finish_metadata, start_metadata
    from harness.sweep.plan import pending_points, plan_points
    from harness.sweep.recheck import retime_out_of_order
    from harness.sweep.results import results_table, summary_table
    from harness.sweep.run import run_sweep
    from harness.sweep.runner import call_overhead

    claim = _pin_threads(max(cfg.threads))
    built, profile, host = cfg.built, cfg.profile, cfg.host
    points = plan_points(cfg)
    on_cluster = bool(args.scheduler or args.scheduler_file)
    settings = cfg.settings()
    previous = store.read_metadata()
    _check_resume(previous, settings, store.dir)
    todo = pending_points(points, store.rows(), cfg, same_machine=not on_cluster)
    meta = start_metadata(profile=profile, built=built, host=host, argv=argv, settings={
        **settings, "weights_file": args.weights, "points_planned": len(points),
        "points_to_measure": len(todo), "call_overhead_s": call_overhead(built)})
    meta["cpus"] = {"pinned": claim.cpus, "shared_with_another_sweep": claim.shared}
    caps = dense_caps(cfg.target, host)
    meta["dense_caps"] = {"profile_isa": caps.profile_isa, "host_isa": caps.host_isa,
                          "env": caps.env, "not_reproduced": not_reproduced(profile, host)}
    if previous:
        meta["previous_sessions"] = previous.get("previous_sessions", []) + [
            {k: previous.get(k) for k in ("start_time", "end_time", "command_line")}]
    store.write_metadata(meta)

    where = f"{profile.name} on {host.cpu_model}" + (" (fallback build)" if built.emulated else "")
    if caps.active:
        where += f"; dense libraries capped to {profile.isa} ({caps.describe()})"
    print(f"run {store.dir}: {len(todo)} of {len(points)} points to measure; {where}",
          file=sys.stderr)
    if todo and not args.no_fit and cfg.tune != "off" and any(
            kernels.method_class(m).tunable for m in cfg.methods):
        # taken now rather than for the fit only: the direct kernel's plans that the tuning
        # database lacks are then the model's, from the first run on (cached afterwards)
        from harness.machine.calibrate import calibration
        calibration(built, host, max(cfg.threads))
    stop = _StopOnInterrupt()
    try:
        with stop:
            run_sweep(cfg, store, todo, progress=not args.no_progress,
                      executor=_executor(args, cfg, claim.cpus), should_stop=stop.requested)
            if cfg.noisy_retries and todo and not stop.requested():
                again, faster = retime_out_of_order(
                    cfg, store, points, lambda: _executor(args, cfg, claim.cpus),
                    progress=not args.no_progress, should_stop=stop.requested)
                if again:
                    print(f"note: {again} points out of order on their curve (slower than "
                          "a denser point, or than a sparser one by more than the non-zeros "
                          f"they add) timed again; {faster} came back faster and were kept",
                          file=sys.stderr)
    except KeyboardInterrupt:  # a second Ctrl-C: give up on the point in flight
        pass
    interrupted = stop.count > 0
    rows = store.rows()
    frame = results_table(rows)
    store.write_table(frame)
    summary = summary_table(frame)
    store.write_table(summary, "summary.csv")
    measured_by = sorted({r.worker or r.host for r in rows})
    store.write_metadata(finish_metadata(meta, interrupted=interrupted, measured_by=measured_by,
                                         notes=store.notes))
    _print_results(frame, summary, store.dir)
    if interrupted:
        print(f"interrupted; finished points are saved. Resume with: "
              f"{resume_command(argv, store.dir)}", file=sys.stderr)
        return 130
    if not args.no_fit:
        from harness.cli.refit import fit_and_report
        fit_and_report(store, frame, profile, host, built, max(cfg.threads))
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


def _print_results(frame, summary, run_dir: Path) -> None:
    from harness.sweep.results import noise_note
    bad = frame[frame["status"] != "ok"]
    if len(summary):
        print(summary.to_string(index=False))
    for _, r in bad.iterrows():
        print(f"warning: {r['layer']} {r['method']} s={r['sparsity']}: {r['status']}: "
              f"{r['reason']}", file=sys.stderr)
    if frame["noisy"].eq(True).any() or frame["attempts"].gt(1).any():
        print(f"note: {noise_note(frame)}", file=sys.stderr)
    print(f"results: {run_dir / 'results.csv'}  ({len(frame)} rows, "
          f"{int((frame['status'] == 'ok').sum())} ok)")

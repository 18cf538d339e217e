"""spconv refit RUN_DIR: calibrate (cached), fit the models and write sweet spots, targets
and the report of a stored run, without timing anything."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.cli import common
from harness.errors import HarnessError


def build_parser(prog: str):
    p = common.parser(prog, "Calibrate (cached), fit the models and write sweet spots, targets "
                            "and the report of a stored run, without timing anything.")
    p.add_argument("run_dir", help="a run directory written by spconv sweep")
    common.add_profile(p)
    return p


def main(argv: list[str] | None = None, prog: str = "spconv refit") -> int:
    args = build_parser(prog).parse_args(argv)

    def go(a):
        profile, target, host = common.load_target(a)
        return refit(Path(a.run_dir), profile, target, host)
    return common.run(go, args)


def refit(run_dir: Path, profile, target, host) -> int:
    from harness.machine.build import build
    from harness.store.runs import RunStore
    from harness.sweep.record import from_mapping
    from harness.sweep.results import load_results

    frame = load_results(run_dir)  # rebuilt from points.jsonl: results.csv may be damaged
    recorded = sorted(set(frame["profile"].dropna())) if len(frame) else []
    if recorded and recorded != [profile.name]:
        raise HarnessError(f"{run_dir} was measured with profile {', '.join(recorded)}, not "
                           f"{profile.name}: refit it with --profile naming that profile")
    store = RunStore(run_dir, validate=from_mapping)
    try:
        store.write_table(frame)
        threads = int(frame["threads"].max()) if len(frame) else 1
        fit_and_report(store, frame, profile, host, build(target), threads)
    finally:
        store.close()
    return 0


def fit_and_report(store, frame, profile, host, built, threads: int) -> None:
    """Calibrate (cached), fit the models and write sweet spots, targets and the report; a
    fit that the run's points cannot support is a warning, not a failure of the sweep."""
    from harness.machine.calibrate import calibration
    from harness.models.analysis import analyse, print_analysis
    from harness.report.document import write_report

    cal = calibration(built, host, threads)
    try:
        result = analyse(store, frame, profile, cal)
    except (HarnessError, ValueError) as exc:
        print(f"warning: no model fit: {exc}", file=sys.stderr)
        return
    print_analysis(result)
    md, _ = write_report(store.dir)
    print(f"model: {store.dir / 'model_fit.json'}, sweet spots: {store.dir / 'sweet_spots.csv'}, "
          f"targets: {store.dir / 'targets.yaml'}, report: {md}")

"""spconv report RUN_DIR...: redraw the figures and report of stored runs without timing;
with several runs, also compare them."""

from __future__ import annotations

import time
from pathlib import Path

from harness import config
from harness.cli import common


def build_parser(prog: str):
    p = common.parser(prog, "Redraw the figures and report of stored runs without timing; with "
                            "several runs, also compare them.")
    p.add_argument("run_dirs", nargs="+", help="run directories written by spconv sweep")
    p.add_argument("--out", default=None,
                   help="where a comparison of several runs goes (default "
                        "results/compare-<time>)")
    return p


def main(argv: list[str] | None = None, prog: str = "spconv report") -> int:
    args = build_parser(prog).parse_args(argv)
    return common.run(lambda a: report_runs([Path(p) for p in a.run_dirs], a.out), args)


def report_runs(run_dirs: list[Path], out: str | None) -> int:
    from harness.report.document import compare, write_report
    for run_dir in run_dirs:
        md, html = write_report(run_dir)
        print(f"report: {md} and {html}")
    if len(run_dirs) > 1:
        target = Path(out) if out else (Path(config.RESULTS_ROOT) /
                                         f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"comparison: {compare(run_dirs, target)}")
    return 0

"""spconv calibrate: measure this host's FMA peak, triad bandwidth per cache level and SGEMM
for a profile's build, and cache them for the model fits (--refresh measures again)."""

from __future__ import annotations

from harness.cli import common


def build_parser(prog: str):
    p = common.parser(prog, "Measure this host's FMA peak, triad bandwidth per cache level and "
                            "SGEMM for a profile's build; cached for the model fits.")
    common.add_profile(p)
    p.add_argument("--threads", type=common.number("--threads", low=1, high=4096, integer=True),
                   default=1, help="threads of the multi-threaded measurements")
    p.add_argument("--refresh", action="store_true",
                   help="measure again and replace the stored calibration")
    return p


def main(argv: list[str] | None = None, prog: str = "spconv calibrate") -> int:
    return common.run(_calibrate, build_parser(prog).parse_args(argv))


def _calibrate(args) -> int:
    from harness.machine.build import build
    from harness.machine.calibrate import calibration, calibration_path

    profile, target, host = common.load_target(args)
    built = build(target)
    threads = min(args.threads, host.logical_cpus)
    cal = calibration(built, host, threads, refresh=args.refresh)
    print(f"{host.cpu_model}, build {built.key} ({built.isa}), {threads} thread(s); "
          f"BLAS {cal['blas']}")
    print(f"FMA peak: {cal['fma_gflops_1']['median']:.1f} GFLOP/s on 1 thread, "
          f"{cal['fma_gflops_all']['median']:.1f} on {threads}")
    for level, stat in cal["triad_gbps_1"].items():
        print(f"triad {level} ({stat['working_set_kib']} KiB): {stat['median']:.1f} GB/s")
    print(f"SGEMM: {cal['sgemm_gflops_1']['median']:.1f} GFLOP/s on 1 thread, "
          f"{cal['sgemm_gflops_all']['median']:.1f} on {threads}")
    print("not cached: the host was busy" if cal.get("busy") else
          f"stored in {calibration_path(built, host, threads)}")
    return 0

"""The `spconv` command: one subcommand per job, each in its own module of this package.

OpenMP reads its thread-binding settings when its runtime loads, so they are set here, before
any subcommand imports the kernels.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")

COMMANDS = {
    "sweep": "time the kernels over layers x sparsity x batch x threads, fit and report",
    "tune": "search the direct kernel's plans for layers and store them",
    "calibrate": "measure this host's FMA peak, bandwidths and SGEMM (cached)",
    "predict": "predict where sparsity pays for a profile's build from calibration alone",
    "report": "redraw the figures and report of stored runs; compare several",
    "refit": "refit the models and sweet spots of a stored run",
    "gsl": "prune a network to the model's targets, fine-tune, time it",
    "e2e": "time a whole pruned network end to end against PyTorch and ONNX Runtime",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: spconv [--version] <command> [options]", "",
             "Where does pruning a CNN buy real speed on this CPU? Commands:", ""]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "spconv <command> --help shows a command's options and their defaults."]
    return "\n".join(lines)


def _version() -> str:
    import harness
    from harness.errors import HarnessError
    try:
        from harness.machine.build import build_key
        from harness.machine.profiles import HOST_PROFILE, build_target, load_profile
        target = build_target(load_profile(HOST_PROFILE))
        kernels = f"kernels {build_key(target)} (host profile, {target.isa})"
    except HarnessError as exc:
        kernels = f"kernels: {exc}"
    return f"sparseconv-harness {harness.__version__}; {kernels}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(_version())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r} (commands: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"harness.cli.{command}")
    return module.main(rest, prog=f"spconv {command}")

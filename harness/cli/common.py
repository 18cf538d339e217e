"""What every subcommand shares: help that shows defaults, option types that refuse what
makes no sense, and the rule that a user's mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap

from harness.errors import HarnessError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default."""


class ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes are one line too (argparse prints the whole usage before them)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return ArgumentParser(prog=prog, description=textwrap.fill(description, 90),
                          formatter_class=HelpFormatter)


def add_profile(p: argparse.ArgumentParser) -> None:
    from harness.machine.profiles import shipped_profiles

    p.add_argument("--profile", default="host",
                   help="architecture profile: a YAML path or the name of a shipped profile "
                        f"({', '.join(shipped_profiles())})")
    p.add_argument("--trust-profile", action="store_true",
                   help="allow compiler flags in the profile that run programs or load code "
                        "(-wrapper, -fplugin, -specs, -B, @file)")


def add_layer_source(p: argparse.ArgumentParser) -> None:
    """The layers a command works on: a catalog network, some of its layers, or a layer file."""
    from harness import config
    from harness.conv.layers import CATALOG

    p.add_argument("--network", default=config.NETWORK,
                   help="network of the layer catalog: " + ", ".join(CATALOG))
    p.add_argument("--layers", default=None, help="comma-separated layer names to keep")
    p.add_argument("--layer-file", default=None, help="YAML file of layers (replaces --network)")


def number(option: str, *, low: float | None = None, high: float | None = None,
           integer: bool = False, open_low: bool = False):
    """An argparse type: a finite number (an integer if asked) within [low, high] (or
    (low, high] with ``open_low``), else one line naming the option."""
    def convert(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected {'an integer' if integer else 'a number'}, got {text!r}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{option}: must be finite, got {text!r}")
        if low is not None and (value < low or (open_low and value == low)):
            raise argparse.ArgumentTypeError(
                f"{option}: must be {'above' if open_low else 'at least'} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{option}: must be at most {high:g}, got {text!r}")
        return value
    return convert


def run(fn, args) -> int:
    """Call ``fn(args)``; a HarnessError becomes one line on stderr and exit status 2."""
    try:
        return fn(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def load_target(args):
    """The profile the command line names, and how it builds on this host (refusing an ISA
    the host lacks before anything is built)."""
    from harness.machine.hostinfo import detect_host
    from harness.machine.profiles import build_target, load_profile, profile_path

    host = detect_host()
    profile = load_profile(profile_path(args.profile), host=host)
    return profile, build_target(profile, host=host, trust_flags=args.trust_profile), host

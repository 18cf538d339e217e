#!/usr/bin/env python3
"""Sweep driver: python run_sweep.py --profile arch_profiles/host.yaml (see --help)."""

import os
import sys

# OpenMP reads its binding settings when its runtime loads: set them before any import.
os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

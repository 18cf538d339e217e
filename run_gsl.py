#!/usr/bin/env python3
"""Guided Sparsity Learning: python run_gsl.py --profile arch_profiles/host.yaml (see --help)."""

import os
import sys

os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")

from harness.gsl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

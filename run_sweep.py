#!/usr/bin/env python3
"""Sweep driver, the same as `spconv sweep`: python run_sweep.py --profile arch_profiles/host.yaml"""

import sys

from harness.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())

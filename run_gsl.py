#!/usr/bin/env python3
"""Guided Sparsity Learning, the same as `spconv gsl`: python run_gsl.py --profile arch_profiles/host.yaml"""

import sys

from harness.cli.gsl import main

if __name__ == "__main__":
    sys.exit(main())

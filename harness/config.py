"""Every default of the tool, in one place: the command line, the sweep, the tuner and the
calibration read them from here."""

from __future__ import annotations

# Sweep grid
SPARSITIES = "0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9,0.95"
NETWORK = "alexnet"
BATCHES = "1"
THREADS = "1"
PATTERN = "random"
SEED = 0
MAX_POINTS = 5000            # a grid larger than this is refused unless --max-points allows it

# Timing of one point
REPEATS = 7                  # samples per point
MIN_TIME_S = 0.05            # seconds per sample (short kernels loop)
POINT_TIMEOUT_S = 600.0      # seconds before an isolated worker is killed
NOISY_IQR = 0.10             # a point whose IQR exceeds this fraction of its median is flagged
NOISY_RETRIES = 2            # times a flagged point is timed again (the fastest timing is kept)

# --quick: a smoke run
QUICK_LAYERS = "conv3,conv4,conv5"
QUICK_SPARSITIES = (0.5, 0.9)
QUICK_REPEATS = 3
QUICK_MIN_TIME_S = 0.01

# Tuning of the direct kernel's plan
TUNE_MODE = "cached"         # off | cached | search
TUNE_BUDGET = 40             # plans timed per search
TUNE_MIN_TIME_S = 0.02       # seconds per sample while tuning
TUNE_FINALISTS = 5           # fastest plans timed again side by side

# Calibration
CALIBRATION_REPEATS = 5

# Where runs go
RESULTS_ROOT = "results"

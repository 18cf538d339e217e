"""Test double loaded into sweep workers with --plugin: reports the CPUs its process may use."""

import os

from harness.kernels import register
from harness.kernels.direct import DirectSparseConv

# Taken when the worker imports its plugins, before its OpenMP runtime binds any thread.
WORKER_CPUS = sorted(os.sched_getaffinity(0))


@register
class AffinityProbeConv(DirectSparseConv):
    method = "affinity_probe"

    def describe(self) -> dict:
        return {**super().describe(), "affinity": WORKER_CPUS}

"""Benchmarking and autotuning harness for direct sparse convolution on CPUs."""

import os

__version__ = "0.1.0"

# The CPUs this process may use, read before any OpenMP runtime binds the main thread to one
# of them (after that, the main thread's affinity no longer tells the process's CPUs).
STARTUP_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def sparsify(model, example_input, **options):
    """``model`` (a torch.nn.Module) rewritten to run its convolutions with the sparse kernels
    where they measure faster than dense; see harness.networks.sparsify.sparsify for the
    options. Needs PyTorch."""
    from harness.networks.sparsify import sparsify as rewrite
    return rewrite(model, example_input, **options)


def model_plan(w, spec, threads: int, built):
    """The performance model's plan of the direct kernel for weights ``w`` on layer ``spec``
    (harness.models.plan_choice), or None where this build has no calibration on this host in
    the cache. The kernels ask it for a layer the tuning database holds no plan for; the model
    sits above them, so they reach it through here."""
    from harness.models.plan_choice import chosen_plan
    return chosen_plan(w, spec, threads, built)

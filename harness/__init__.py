"""Benchmarking and autotuning harness for direct sparse convolution on CPUs."""

__version__ = "0.1.0"

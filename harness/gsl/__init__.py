"""Guided Sparsity Learning: prune a network to the performance model's per-layer sweet spots.

Needs PyTorch (the ``torch`` extra)."""

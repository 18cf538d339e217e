"""Checking a kernel's output against the float64 reference, with a tolerance scaled to how
many products each output sums."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.conv.reference import reference_conv

FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Rounding errors of a float32 sum of K products grow like sqrt(K) for any summation order the
# kernels use; the factor leaves room for unlucky cases while a single dropped product, let
# alone a skipped write, still fails.
SAFETY = 16.0


@dataclass(frozen=True)
class Expected:
    value: np.ndarray      # float64 reference output
    magnitude: np.ndarray  # float64 reference of |x| * |w| (+ |bias|): scale of the rounding
    reduction_length: int


@dataclass(frozen=True)
class Verdict:
    ok: bool
    max_error: float       # largest |out - ref|
    error_ratio: float     # largest |out - ref| / tolerance (<= 1 passes)


def expected_output(x: np.ndarray, w: np.ndarray, bias, spec: ConvSpec, relu: bool,
                    relu_max: float | None = None) -> Expected:
    value = reference_conv(x, w, bias, spec, relu, relu_max)
    magnitude = reference_conv(np.abs(x), np.abs(w), None if bias is None else np.abs(bias),
                               spec, False)
    return Expected(value, magnitude, spec.reduction_length)


def tolerance(expected: Expected) -> np.ndarray:
    return SAFETY * np.sqrt(expected.reduction_length) * FLOAT32_EPS * expected.magnitude + 1e-30


def verify(out: np.ndarray, expected: Expected) -> Verdict:
    if out.shape != expected.value.shape:
        return Verdict(False, float("inf"), float("inf"))
    diff = np.abs(out.astype(np.float64) - expected.value)
    if not np.isfinite(diff).all():
        return Verdict(False, float("inf"), float("inf"))
    ratio = diff / tolerance(expected)
    return Verdict(bool((ratio <= 1.0).all()), float(diff.max(initial=0.0)),
                   float(ratio.max(initial=0.0)))

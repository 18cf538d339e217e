"""The prepared-kernel interface every convolution method implements, and the capabilities a
method declares so that the sweep, the tuner, the reports and the pruning stage can treat it
right without knowing its name."""

from __future__ import annotations

import importlib.util

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.errors import HarnessError, ShapeError


RELU6 = 6.0  # the cap of MobileNet's ReLU6, which the C kernels apply themselves


class KernelError(HarnessError):
    """A kernel failed at run time (a C error code, a library exception)."""


def as_float32_array(name: str, a, shape=None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ShapeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ShapeError(f"{name} must be float32, got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ShapeError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    return np.ascontiguousarray(a)


def check_weights(w, bias, groups_out: int | None = None):
    """Validate weights and bias; non-finite weights are refused (sparse methods skip zeros,
    so 0 * inf would differ between methods)."""
    w = as_float32_array("weight", w)
    if w.ndim != 4:
        raise ShapeError(f"weight must be 4-D (M, C/groups, KH, KW), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ShapeError("weight contains NaN or Inf")
    if bias is not None:
        bias = as_float32_array("bias", bias, (w.shape[0],))
        if not np.isfinite(bias).all():
            raise ShapeError("bias contains NaN or Inf")
    return w, bias


class PreparedConv:
    """Weights converted once for one input shape; calling it runs the convolution.

    A subclass names itself (``method``) and declares what it can do:
    """

    method = "abstract"
    dense = False            # its time does not depend on the zeros: timed once per layer,
                             # and a candidate for the best dense baseline of a point
    tunable = False          # takes a ``plan`` (a DirectPlan) that the tuner searches
    native = False           # runs the project's C kernels: takes the sweep's build (kernels=)
    modelled = False         # the method the performance models describe
    in_default_sweep = True  # swept when no --methods are given (the slow reference is not)
    requires: tuple[str, ...] = ()  # optional Python packages it needs

    @classmethod
    def available(cls) -> bool:
        """Whether it can run here (its optional packages are installed)."""
        return all(importlib.util.find_spec(p) is not None for p in cls.requires)

    @classmethod
    def applies(cls, spec: ConvSpec) -> bool:
        """Whether it runs convolutions of this geometry (a method for one shape class, such
        as pointwise_sparse, says no to the others)."""
        return True

    def __init__(self, spec: ConvSpec, *, relu: bool, threads: int,
                 relu_max: float | None = None):
        """``relu_max`` caps the ReLU (6.0: ReLU6); a method that cannot apply the cap
        itself (fuses_relu_max) has it applied to its output after each call."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ShapeError(f"threads must be a positive integer, got {threads!r}")
        if relu_max is not None and (not relu or not float(relu_max) > 0.0):
            raise ShapeError(f"relu_max caps a ReLU: it needs relu=True and a positive value, "
                             f"got relu={relu!r}, relu_max={relu_max!r}")
        self.spec, self.relu, self.threads = spec, bool(relu), threads
        # held, not recomputed per call: a call of a small layer takes a few microseconds
        self._input_shape, self._output_shape = spec.input_shape, spec.output_shape
        self.relu_max = None if relu_max is None else float(relu_max)
        self._cap_after = (None if self.relu_max is None or self.fuses_relu_max(self.relu_max)
                           else self.relu_max)

    @classmethod
    def fuses_relu_max(cls, relu_max: float) -> bool:
        """Whether the method applies this cap of the ReLU itself."""
        return False

    def _cap(self, out: np.ndarray) -> None:
        """The ReLU's cap, where the method did not apply it."""
        if self._cap_after is not None:
            np.minimum(out, self._cap_after, out=out)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        x = as_float32_array("input", x, self._input_shape)
        if out is None:
            out = np.empty(self._output_shape, dtype=np.float32)
        elif out.shape != self._output_shape or out.dtype != np.float32 or \
                not out.flags.c_contiguous:
            raise ShapeError(f"out must be a C-contiguous float32 array of shape "
                             f"{self._output_shape}")
        self.run_into(x, out)
        return out

    def run_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """The convolution without the checks of ``__call__``, for callers that pass
        C-contiguous float32 arrays of the prepared input and output shapes (a network's
        fused layers, where the shapes are fixed when it is built)."""
        if self.spec.batch:
            self._run(x, out)
            self._cap(out)

    def _run(self, x: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def address_runner(self, out: np.ndarray):
        """A function that runs the convolution into ``out`` (C-contiguous float32 of the
        output shape, kept alive by the caller) from the C-contiguous float32 input of the
        prepared shape at a memory address (a tensor's data_ptr()): f(x_address), and, for a
        kernel that adds a residual of the output's shape, f(x_address, residual_address).
        None where the method has none; a network's fused layers then pass numpy views. It
        spares each call the conversions to numpy and to C pointers (about 2 us of Python,
        as much as a small layer's products)."""
        return None

    def _whole_by_address(self) -> bool:
        """Whether a call by address computes the whole output: no cap of the ReLU left for
        numpy after the kernel, and a batch to run."""
        return self._cap_after is None and bool(self.spec.batch)

    def describe(self) -> dict:
        """Method-specific facts recorded with every timing (plan, library, settings)."""
        return {}

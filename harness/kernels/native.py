"""Access to the compiled C kernels: the host profile's build unless a caller passes one."""

from __future__ import annotations

from harness.machine.build import (BuiltKernels, aligned_zeros, float_ptr,  # noqa: F401
                                    host_kernels, int_ptr)
from harness.kernels.base import RELU6, KernelError, PreparedConv


def resolve(kernels: BuiltKernels | None) -> BuiltKernels:
    return kernels if kernels is not None else host_kernels()


def c_kernels_fuse(relu_max: float) -> bool:
    """Whether the C kernels apply this cap of a ReLU themselves (ReLU6's): the
    PreparedConv.fuses_relu_max of the methods that run them."""
    return relu_max == RELU6


def activation(built: BuiltKernels, k: PreparedConv) -> int:
    """The activation code (SPCONV_ACT_* of spconv_api.h) the C kernels take for ``k``'s
    ReLU; a cap they do not fuse is applied after them."""
    if not k.relu:
        return built.lib.SPCONV_ACT_NONE
    return built.lib.SPCONV_ACT_RELU6 if c_kernels_fuse(k.relu_max) else built.lib.SPCONV_ACT_RELU


def error_message(built: BuiltKernels, rc: int) -> str:
    """The C kernels' own words for an error code (spconv_error_message in smoke.c)."""
    return built.ffi.string(built.lib.spconv_error_message(rc)).decode()


def check_rc(built: BuiltKernels, rc: int, what: str) -> None:
    if rc != 0:
        raise KernelError(f"{what}: {error_message(built, rc)} (error code {rc})")


def im2col(built: BuiltKernels, image_ptr, spec, cols_ptr, threads: int,
           row_stride: int | None = None) -> None:
    """Lower one image (all groups at once: the group's channels are consecutive), its rows
    ``row_stride`` floats apart (default: packed)."""
    check_rc(built, built.lib.spconv_im2col(
        image_ptr, spec.in_channels, spec.height, spec.width, spec.kernel_h, spec.kernel_w,
        *spec.padding, *spec.stride, *spec.dilation, spec.out_height, spec.out_width,
        cols_ptr, row_stride or spec.out_pixels, threads), "spconv_im2col")

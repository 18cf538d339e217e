"""Direct sparse convolution (kernels_c/direct.c) behind the prepared-kernel interface."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from harness.conv.sparsity import (band_height, block_major, direct_csr, direct_geometry,
                                   direct_layout, support_group)
from harness.errors import ShapeError
from harness.kernels import native
from harness.kernels.native import c_kernels_fuse
from harness.kernels.base import PreparedConv
from harness.kernels.direct_plan import DirectPlan, check_plan_struct
from harness.kernels.plans import best_known_plan
from harness.machine.hostinfo import detect_host


MIN_GROUP_ITEM = 16  # output channels of a conv group that make a work item of their own


def default_out_block(spec, threads: int, group: int = 1) -> int:
    """Output channels per work item: every channel of a conv group (each item pads its
    input blocks afresh), split further only to give each thread an item; a multiple of the
    output-channel group. The accumulators are not kept within L2: on ResNet-50's 56x56 and
    28x28 layers, VGG-16's first layers and AlexNet's, such items ran 1.0-2.7x as fast as
    items capped at 512 KiB of accumulators (docs/measurements.md), the padding saved
    outweighing accumulators streamed from L3. Conv groups of fewer than
    MIN_GROUP_ITEM channels (a depthwise layer's one) share items: an item of one channel
    paid the item's fixed costs for nine non-zeros (MobileNetV2's 960-channel 7x7 depthwise
    layer took 1.45 ms in such items, 0.10 ms in one)."""
    per_image = max(1, -(-threads // max(1, spec.batch)))
    per_group = spec.out_channels // spec.groups
    block = -(-spec.out_channels // per_image)
    if per_group >= MIN_GROUP_ITEM:
        block = min(per_group, block)
    return -(-block // group) * group


def default_plan(spec, built, threads: int, w=None) -> DirectPlan:
    """A sound untuned plan: the weights' own output-channel group (the block pattern they
    have, if any), the widest register tile for it, input-channel blocks whose slice of the
    padded input fits in about 32 KiB, and large work items (default_out_block)."""
    group = 1 if w is None else support_group(w, conv_groups=spec.groups)
    return plan_with_tile(spec, built.lib.spconv_max_group_tile(group), threads, group)


def plan_with_tile(spec, tile_vectors: int, threads: int, group: int = 1) -> DirectPlan:
    """The default plan for a build whose widest tile for ``group`` is ``tile_vectors``."""
    plane_bytes = 4 * direct_layout(spec).plane
    channel_block = max(1, min(spec.in_channels, (32 * 1024) // plane_bytes))
    return DirectPlan(tile_vectors, default_out_block(spec, threads, group), channel_block,
                      out_group=group)


class DirectSparseConv(PreparedConv):
    method = "direct_sparse"
    tunable = True
    native = True
    modelled = True

    fuses_relu_max = staticmethod(c_kernels_fuse)

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None,
                 plan: DirectPlan | None = None, relu_max=None, through_scratch: bool = False):
        """``plan`` None takes the best plan known (harness.kernels.plans.best_known_plan):
        the tuning database's for this shape, density bucket, thread count, build and host,
        else the performance model's, else the default plan. ``through_scratch`` runs the
        earlier kernel, which accumulates every output channel in a scratch run and copies
        it out (kept to measure against; bench/direct_store.py)."""
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        built = self.built = native.resolve(kernels)
        ffi, lib = built.ffi, built.lib
        check_plan_struct(built)
        if plan is None:  # the best plan known for this shape, else a sound default
            plan, self.plan_source = best_known_plan(w, spec, threads, built,
                                                     detect_host().cpu_model)
        else:
            self.plan_source = "given"
        plan = self.plan = plan or default_plan(spec, built, threads, w)
        vector = lib.spconv_vector_floats()
        layout = self.layout = direct_layout(spec, plan.aligned, vector,
                                             plan.channel_block, plan.band_rows)
        band = band_height(spec, plan.band_rows)
        self._geometry = ffi.new("spconv_geometry *", direct_geometry(spec, layout))
        self._plan = ffi.new("spconv_plan *", dict(
            tile_vectors=plan.tile_vectors, out_channel_block=plan.out_channel_block,
            channel_blocks=-(-spec.in_channels // layout.block_channels),
            block_channels=layout.block_channels, tiles_outer=int(plan.tiles_outer),
            shared_padding=int(plan.shared_padding),
            band_rows=band if band < spec.out_height else 0, out_group=plan.out_group,
            threads=threads, through_scratch=int(through_scratch)))
        self.through_scratch = bool(through_scratch)
        rc = lib.spconv_direct_check(self._geometry, self._plan)
        if rc:  # the kernel's own check: one source for what it accepts
            raise ShapeError(f"direct_sparse cannot run plan {plan} on {built.isa}: "
                             f"{native.error_message(built, rc)}")
        blocked = block_major(direct_csr(w, spec, layout), spec, plan.channel_block,
                              plan.out_group)
        self.nnz = int(np.count_nonzero(w))
        self.positions = blocked.positions
        self._colidx, self._values, self._blkptr = blocked.colidx, blocked.values, blocked.blkptr
        self._bias = None if bias is None else bias.copy()
        # Zeroed once: the kernel writes only the interior (and, with bands, zeroes the rows a
        # band must read as padding), so the padding stays zero.
        self._padded = native.aligned_zeros(lib.spconv_padded_floats(self._geometry, self._plan), 64)
        self._scratch = native.aligned_zeros(lib.spconv_scratch_floats(self._geometry, self._plan), 64)
        self._ptrs = (
            native.int_ptr(built, self._blkptr), native.int_ptr(built, self._colidx),
            native.float_ptr(built, self._values),
            ffi.NULL if self._bias is None else native.float_ptr(built, self._bias))
        self._work = (native.float_ptr(built, self._padded), native.float_ptr(built, self._scratch))
        self._act = native.activation(built, self)

    def _run(self, x, out):
        self._run_pointers(native.float_ptr(self.built, x), native.float_ptr(self.built, out))

    def _run_pointers(self, x_ptr, out_ptr) -> None:
        """The kernel on C pointers."""
        rc = self.built.lib.spconv_direct(self._geometry, self._plan, *self._ptrs, self._act,
                                          x_ptr, *self._work, out_ptr)
        native.check_rc(self.built, rc, "spconv_direct")

    def address_runner(self, out):
        if not self._whole_by_address():
            return None
        cast, call = self.built.ffi.cast, self._run_pointers
        out_ptr = native.float_ptr(self.built, out)

        def run(x_address: int) -> None:
            call(cast("float *", x_address), out_ptr)
        return run

    def describe(self) -> dict:
        return {"plan": asdict(self.plan), "plan_source": self.plan_source, "nnz": self.nnz,
                "through_scratch": self.through_scratch,
                "positions": self.positions,
                "isa": self.built.isa, "build_key": self.built.key}

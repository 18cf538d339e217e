"""Direct sparse convolution (kernels_c/direct.c) behind the prepared-kernel interface."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

from harness.conv.sparsity import band_height, block_major, direct_csr, direct_layout
from harness.errors import BuildError, ShapeError
from harness.kernels import native
from harness.kernels.base import PreparedConv


def _choice(default=dataclasses.MISSING, *, search_rank: int):
    """A plan field; ``search_rank`` orders the tuner's coordinate descent (most telling
    first)."""
    return field(default=default, metadata={"search_rank": search_rank})


@dataclass(frozen=True)
class DirectPlan:
    """Run-time tuning choices of the direct kernel (no recompilation to change them). The
    one declaration of the plan: the tuner's axes, the results' plan_* columns and the check
    against the C struct spconv_plan all derive from these fields."""

    tile_vectors: int = _choice(search_rank=4)       # accumulator vectors kept in registers
    out_channel_block: int = _choice(search_rank=3)  # output channels per work item
    channel_block: int = _choice(search_rank=2)      # input channels per cache block
    # shifted input copies so every load is vector-aligned (stride 1)
    aligned: bool = _choice(False, search_rank=0)
    # register tiles outside output channels within a channel block
    tiles_outer: bool = _choice(False, search_rank=5)
    # pad each image once for all threads, not per work item
    shared_padding: bool = _choice(False, search_rank=1)
    # output rows per work item (0: the whole image); not with shared padding
    band_rows: int = _choice(0, search_rank=6)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = isinstance(value, (bool, np.bool_))
            if f.type in (bool, "bool") and flag:
                object.__setattr__(self, f.name, bool(value))
            elif f.type in (int, "int") and isinstance(value, (int, np.integer)) and not flag:
                object.__setattr__(self, f.name, int(value))
            else:
                raise ShapeError(f"plan field {f.name} must be {f.type}, got {value!r}")
        if min(self.tile_vectors, self.out_channel_block, self.channel_block) < 1 or \
                self.band_rows < 0:
            raise ShapeError(f"plan sizes must be positive and band_rows non-negative: {self}")


def plan_axes() -> tuple[str, ...]:
    """The plan's fields in the tuner's order."""
    return tuple(f.name for f in sorted(dataclasses.fields(DirectPlan),
                                        key=lambda f: f.metadata["search_rank"]))


# How a DirectPlan reaches the C struct spconv_plan: its fields that pass unchanged, the one
# passed under another name, the aligned layout (which the geometry carries as copies), and
# the fields the wrapper fills in.
_C_RENAMED = {"channel_block": "block_channels"}
_C_ELSEWHERE = ("aligned",)
_C_DERIVED = ("channel_blocks", "threads")
_checked_builds: set[str] = set()


def check_plan_struct(built) -> None:
    """Refuse a build whose spconv_plan does not have exactly the fields DirectPlan maps to
    (a field added on one side only)."""
    if built.key in _checked_builds:
        return
    c_fields = {name for name, _ in built.ffi.typeof("spconv_plan").fields}
    expected = {_C_RENAMED.get(f.name, f.name) for f in dataclasses.fields(DirectPlan)
                if f.name not in _C_ELSEWHERE} | set(_C_DERIVED)
    if c_fields != expected:
        raise BuildError(f"spconv_plan in spconv_api.h has fields {sorted(c_fields)} but "
                         f"DirectPlan maps to {sorted(expected)}: update both together")
    _checked_builds.add(built.key)


ACC_BYTES = 512 * 1024  # accumulators of one work item kept within about half an L2


def default_out_block(spec, threads: int) -> int:
    """Output channels per work item: as many as possible, since each item pads its input
    blocks afresh, but one item per thread and accumulators that stay in L2."""
    per_image = max(1, -(-threads // max(1, spec.batch)))
    run = spec.out_height * direct_layout(spec).plane_w
    return max(1, min(-(-spec.out_channels // per_image), ACC_BYTES // (4 * run)))


def default_plan(spec, built, threads: int) -> DirectPlan:
    """A sound untuned plan: widest register tile, input-channel blocks whose slice of the
    padded input fits in about 32 KiB, and large work items (default_out_block)."""
    plane_bytes = 4 * direct_layout(spec).plane
    channel_block = max(1, min(spec.in_channels, (32 * 1024) // plane_bytes))
    return DirectPlan(built.lib.spconv_max_tile_vectors(), default_out_block(spec, threads),
                      channel_block)


class DirectSparseConv(PreparedConv):
    method = "direct_sparse"
    tunable = True
    native = True
    modelled = True

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, plan: DirectPlan | None = None):
        super().__init__(spec, relu=relu, threads=threads)
        built = self.built = native.resolve(kernels)
        ffi, lib = built.ffi, built.lib
        check_plan_struct(built)
        plan = self.plan = plan or default_plan(spec, built, threads)
        vector = lib.spconv_vector_floats()
        layout = self.layout = direct_layout(spec, plan.aligned, vector,
                                             plan.channel_block, plan.band_rows)
        band = band_height(spec, plan.band_rows)
        self._geometry = ffi.new("spconv_geometry *", dict(
            batch=spec.batch, channels=spec.in_channels, height=spec.height, width=spec.width,
            out_channels=spec.out_channels, out_height=spec.out_height,
            out_width=spec.out_width, pad_h=spec.padding[0], pad_w=spec.padding[1],
            stride_h=spec.stride[0], stride_w=spec.stride[1], plane_h=layout.plane_h,
            plane_w=layout.plane_w, copies=layout.copies, copy_shift=spec.dilation[1]))
        self._plan = ffi.new("spconv_plan *", dict(
            tile_vectors=plan.tile_vectors, out_channel_block=plan.out_channel_block,
            channel_blocks=-(-spec.in_channels // layout.block_channels),
            block_channels=layout.block_channels, tiles_outer=int(plan.tiles_outer),
            shared_padding=int(plan.shared_padding),
            band_rows=band if band < spec.out_height else 0, threads=threads))
        rc = lib.spconv_direct_check(self._geometry, self._plan)
        if rc:  # the kernel's own check: one source for what it accepts
            raise ShapeError(f"direct_sparse cannot run plan {plan} on {built.isa}: "
                             f"{native.error_message(built, rc)}")
        blocked = block_major(direct_csr(w, spec, layout), spec, plan.channel_block)
        self.nnz = blocked.values.size
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

    def _run(self, x, out):
        built = self.built
        rc = built.lib.spconv_direct(
            self._geometry, self._plan, *self._ptrs, int(self.relu),
            native.float_ptr(built, x), *self._work, native.float_ptr(built, out))
        native.check_rc(built, rc, "spconv_direct")

    def describe(self) -> dict:
        return {"plan": asdict(self.plan), "nnz": self.nnz, "isa": self.built.isa,
                "build_key": self.built.key}

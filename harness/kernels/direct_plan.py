"""The direct kernel's plan: its run-time choices, declared once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from harness.errors import BuildError, ShapeError


def _choice(default=dataclasses.MISSING, *, search_rank: int):
    """A plan field; ``search_rank`` orders the tuner's coordinate descent (most telling
    first)."""
    return field(default=default, metadata={"search_rank": search_rank})


OUT_GROUPS = (1, 2, 4)  # the group sizes kernels_c/tile.c has register tiles for


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
    # output channels sharing one support (1, 2 or 4): one input load per group; a multiple
    # of it is out_channel_block. Weights without such a pattern run too (zeros fill the union)
    out_group: int = _choice(1, search_rank=7)

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
        if self.out_group not in OUT_GROUPS or self.out_channel_block % self.out_group:
            raise ShapeError(f"out_group must be one of {OUT_GROUPS} and divide "
                             f"out_channel_block: {self}")


def plan_axes() -> tuple[str, ...]:
    """The plan's fields in the tuner's order."""
    return tuple(f.name for f in sorted(dataclasses.fields(DirectPlan),
                                        key=lambda f: f.metadata["search_rank"]))


# How a DirectPlan reaches the C struct spconv_plan: its fields that pass unchanged, the one
# passed under another name, the aligned layout (which the geometry carries as copies), and
# the fields the wrapper fills in.
_C_RENAMED = {"channel_block": "block_channels"}
_C_ELSEWHERE = ("aligned",)
_C_DERIVED = ("channel_blocks", "threads", "through_scratch")
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

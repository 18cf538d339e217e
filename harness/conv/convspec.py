"""The geometry of one convolution, validated: shapes, stride, padding, dilation, groups."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ShapeError


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ShapeError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ShapeError(f"{name} must be {'positive' if minimum else 'non-negative'} "
                             f"integers, got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class ConvSpec:
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def from_shapes(cls, input_shape, weight_shape, stride=1, padding=0, dilation=1,
                    groups=1) -> "ConvSpec":
        """Validate torch-style shapes: input (N, C, H, W), weight (M, C/groups, KH, KW)."""
        for name, shape in (("input", input_shape), ("weight", weight_shape)):
            if len(shape) != 4 or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
                raise ShapeError(f"{name} shape must be 4 integers, got {tuple(shape)!r}")
        n, c, h, w = input_shape
        m, cg, kh, kw = weight_shape
        if n < 0 or min(c, h, w) <= 0:
            raise ShapeError(f"input shape {tuple(input_shape)} has a non-positive size")
        if min(m, cg, kh, kw) <= 0:
            raise ShapeError(f"weight shape {tuple(weight_shape)} has a non-positive size")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ShapeError(f"groups must be a positive integer, got {groups!r}")
        if c % groups or m % groups:
            raise ShapeError(f"groups={groups} must divide input channels {c} and output "
                             f"channels {m}")
        if cg != c // groups:
            raise ShapeError(f"weight has {cg} input channels per group, input has "
                             f"{c} channels / {groups} groups = {c // groups}")
        spec = cls(n, c, h, w, m, kh, kw, _pair(stride, "stride", 1), _pair(padding, "padding", 0),
                   _pair(dilation, "dilation", 1), groups)
        if spec.out_height <= 0 or spec.out_width <= 0:
            raise ShapeError(
                f"kernel {kh}x{kw} with dilation {spec.dilation} is larger than the padded "
                f"input {h + 2 * spec.padding[0]}x{w + 2 * spec.padding[1]}: empty output")
        return spec

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w)

    @property
    def out_height(self) -> int:
        span = self.dilation[0] * (self.kernel_h - 1) + 1
        return (self.height + 2 * self.padding[0] - span) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        span = self.dilation[1] * (self.kernel_w - 1) + 1
        return (self.width + 2 * self.padding[1] - span) // self.stride[1] + 1

    @property
    def out_pixels(self) -> int:
        return self.out_height * self.out_width

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    @property
    def padded_h(self) -> int:
        return self.height + 2 * self.padding[0]

    @property
    def padded_w(self) -> int:
        return self.width + 2 * self.padding[1]

    @property
    def reduction_length(self) -> int:
        """Products summed into one output: input channels per group x kernel area."""
        return self.in_channels // self.groups * self.kernel_h * self.kernel_w

    def dense_flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs, over the whole batch."""
        return 2 * self.batch * self.out_channels * self.reduction_length * self.out_pixels

    def with_batch(self, batch: int) -> "ConvSpec":
        return ConvSpec(batch, self.in_channels, self.height, self.width, self.out_channels,
                        self.kernel_h, self.kernel_w, self.stride, self.padding, self.dilation,
                        self.groups)

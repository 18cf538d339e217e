"""Plain numpy convolution accumulating in float64: the ground truth every method is checked
against."""

from __future__ import annotations

import numpy as np

from harness.conv.convspec import ConvSpec


def reference_conv(x: np.ndarray, w: np.ndarray, bias, spec: ConvSpec, relu: bool,
                   relu_max: float | None = None) -> np.ndarray:
    """act(conv(x, w) + bias), act the ReLU (capped at ``relu_max``, where given) if
    ``relu``."""
    (ph, pw), (sh, sw), (dh, dw) = spec.padding, spec.stride, spec.dilation
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = spec.out_height, spec.out_width
    mg, cg = spec.out_channels // spec.groups, spec.in_channels // spec.groups
    out = np.zeros(spec.output_shape, dtype=np.float64)
    w64 = w.astype(np.float64)
    for g in range(spec.groups):
        wg = w64[g * mg:(g + 1) * mg]
        xg = xp[:, g * cg:(g + 1) * cg]
        for r in range(spec.kernel_h):
            for s in range(spec.kernel_w):
                window = xg[:, :, r * dh: r * dh + (oh - 1) * sh + 1: sh,
                            s * dw: s * dw + (ow - 1) * sw + 1: sw]
                out[:, g * mg:(g + 1) * mg] += np.einsum("mc,ncyx->nmyx", wg[:, :, r, s], window)
    if bias is not None:
        out += bias.astype(np.float64)[None, :, None, None]
    if relu:
        np.maximum(out, 0.0, out=out)
        if relu_max is not None:
            np.minimum(out, relu_max, out=out)
    return out

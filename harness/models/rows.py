"""Reading a sweep's stored rows as the models need them: the layer's ConvSpec, its shape
class, and the direct kernel's rows the models are fitted to."""

from __future__ import annotations

import pandas as pd

from harness.conv.convspec import ConvSpec
from harness.conv.weights import is_block
from harness.kernels import modelled_method


def row_spec(r) -> ConvSpec:
    k = int(r["kernel"])
    return ConvSpec.from_shapes(
        (int(r["batch"]), int(r["in_channels"]), int(r["height"]), int(r["width"])),
        (int(r["out_channels"]), int(r["in_channels"]) // int(r["groups"]), k, k),
        int(r["stride"]), int(r["padding"]), int(r["dilation"]), int(r["groups"]))


def row_density(r, spec: ConvSpec) -> float:
    """Share of a row's weights that are non-zero."""
    return float(r["nnz"]) / (spec.out_channels * spec.reduction_length)


def layer_class(r) -> str:
    return f"k{int(r['kernel'])}s{int(r['stride'])}"


def direct_rows(frame: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """The correct rows of unstructured sparsity of ``method`` (default the modelled one; the
    block patterns run other register tiles and are shown beside them, not fitted)."""
    patterns = frame["pattern"] if "pattern" in frame else pd.Series("random", frame.index)
    unstructured = ~patterns.map(is_block).astype(bool)
    return frame[(frame["method"] == (method or modelled_method())) & (frame["status"] == "ok")
                 & unstructured].copy()

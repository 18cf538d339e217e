"""The declared record of one measured point: every column a row of ``points.jsonl`` and
``results.csv`` may hold, with its type. Rows are built as ``PointRow``s, stored through
``as_json()`` and read back through ``from_mapping()``, which checks and converts each field
(a CSV's "True", "1.0" or empty cell included), so no reader has to guess a column's type.

The direct kernel's plan is recorded as one ``plan_<field>`` column per field of DirectPlan,
derived from that dataclass: the plan's fields are declared there and nowhere else. The
pointwise kernel's work items likewise, as ``pointwise_<field>`` columns from its
CONFIG_FIELDS.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.kernels.direct_plan import DirectPlan
from harness.kernels.pointwise import CONFIG_FIELDS as POINTWISE_FIELDS, PointwiseSparseConv

STATUSES = ("ok", "incorrect", "build_error", "runtime_error", "skipped")
PLAN_PREFIX = "plan_"
POINTWISE_PREFIX = "pointwise_"

_PLAN_TYPES = {"int": int, "bool": bool, str(int): int, str(bool): bool}
# name, type, whether the results table carries it. Types: str, int, float, bool, and
# "json" for a value kept only in points.jsonl (lists and mappings).
_FIELDS: list[tuple[str, Any, bool]] = [
    ("network", str, True), ("layer", str, True), ("method", str, True),
    ("dense", bool, True), ("sparsity", float, True), ("target_sparsity", float, True),
    ("batch", int, True), ("threads", int, True), ("status", str, True),
    ("median_s", float, True), ("min_s", float, True), ("iqr_s", float, True),
    ("cv", float, True), ("noisy", bool, True), ("attempts", int, True),
    ("useful_gflops", float, True),
    ("effective_gflops", float, True), ("best_dense_method", str, True),
    ("best_dense_s", float, True), ("speedup", float, True), ("nnz", int, True),
    ("dense_flops", int, True), ("useful_flops", int, True), ("max_error", float, True),
    ("error_ratio", float, True), ("worker", str, True), ("tuned", str, True),
    *((PLAN_PREFIX + f.name, _PLAN_TYPES[str(f.type)], True)
      for f in dataclasses.fields(DirectPlan)),
    *((POINTWISE_PREFIX + name, kind, True) for name, kind in POINTWISE_FIELDS.items()),
    ("profile", str, True), ("isa", str, True), ("ran_isa", str, True), ("uncapped", bool, True),
    ("caps", str, True), ("emulated", bool, True), ("fallback", bool, True),
    ("not_reproduced", str, True), ("host", str, True),
    ("build_key", str, True), ("pattern", str, True), ("seed", int, True),
    ("in_channels", int, True), ("height", int, True), ("width", int, True),
    ("out_channels", int, True), ("kernel", int, True), ("stride", int, True),
    ("padding", int, True), ("dilation", int, True), ("groups", int, True),
    ("repeats", int, True), ("min_time_s", float, True), ("calls_per_sample", int, True),
    ("cold_cache", bool, True), ("reason", str, True), ("key", str, True),
    ("worker_host", str, False), ("timestamp", float, False), ("samples_s", "json", False),
    ("details", "json", False), ("traceback", str, False),
]
# Columns that identify a point and must be present in every stored row.
REQUIRED = ("key", "network", "layer", "method", "batch", "threads", "status", "profile", "host",
            "build_key")

PointRow = dataclasses.make_dataclass(
    "PointRow", [(name, Any, dataclasses.field(default=None)) for name, _, _ in _FIELDS],
    namespace={"__module__": __name__,  # so that rows pickle across worker processes
               "__doc__": "One measured (or failed) point; see harness.sweep.record."})
_TYPES = {name: kind for name, kind, _ in _FIELDS}
TABLE_COLUMNS = [name for name, _, tabled in _FIELDS if tabled]


def _convert(name: str, value):
    """``value`` as the declared type of column ``name``; None for missing or NaN."""
    kind = _TYPES[name]
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if kind == "json":
        return value
    if kind is bool:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("true", "1", "1.0"):
                return True
            if text in ("false", "0", "0.0"):
                return False
            if text in ("", "nan"):
                return None
            raise ValueError(f"{value!r} is not a boolean")
        return bool(value)
    if kind is int:
        if isinstance(value, str) and value.strip() in ("", "nan"):
            return None
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    if kind is float:
        if isinstance(value, str) and value.strip() == "":
            return None
        return float(value)
    return str(value)


def make_row(**values) -> PointRow:
    """A row from keyword values, each converted to its declared type."""
    unknown = set(values) - set(_TYPES)
    if unknown:
        raise TypeError(f"PointRow has no field {sorted(unknown)[0]!r}")
    return PointRow(**{k: _convert(k, v) for k, v in values.items()})


def from_mapping(data, where: str = "row") -> PointRow:
    """Validate a stored row (a mapping read back from points.jsonl or results.csv): the
    identifying columns present, every known column of its declared type; unknown columns
    (from a newer version) are dropped. Raises HarnessError naming ``where``."""
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: not a row object but {type(data).__name__}")
    missing = [k for k in REQUIRED if data.get(k) in (None, "")]
    if missing:
        raise HarnessError(f"{where}: row lacks the field {missing[0]!r}")
    try:
        row = PointRow(**{k: _convert(k, v) for k, v in data.items() if k in _TYPES})
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{where}: {exc}") from None
    return with_pointwise_config(row)


def with_pointwise_config(row: PointRow) -> PointRow:
    """A pointwise-kernel row with its ``pointwise_<field>`` columns filled from the kernel's
    own description in ``details`` where they are empty: as the sweep measures it, and for a
    row stored before those columns existed (points.jsonl keeps the details)."""
    if row.method != PointwiseSparseConv.method or not isinstance(row.details, dict):
        return row
    details = row.details
    missing = {name: details.get(name) for name in POINTWISE_FIELDS
               if getattr(row, POINTWISE_PREFIX + name) is None}
    if missing.get("in_place", False) is None:
        missing["in_place"] = False  # stored before the kernel could read in place: it packed
    if not missing or not all(_is_a(value, POINTWISE_FIELDS[name])
                              for name, value in missing.items()):
        return row
    return updated(row, **{POINTWISE_PREFIX + name: v for name, v in missing.items()})


def _is_a(value, kind) -> bool:
    """``value`` is of ``kind`` (int or bool, a bool not counting as an int)."""
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def updated(row: PointRow, **values) -> PointRow:
    return dataclasses.replace(row, **{k: _convert(k, v) for k, v in values.items()})


def as_json(row: PointRow) -> dict:
    return dataclasses.asdict(row)


def _recorded(row, prefix: str, names) -> dict:
    """The columns ``prefix + name`` of a row (a PointRow or a table row), by name, each of
    its declared type (None where empty)."""
    get = row.get if hasattr(row, "get") else lambda k: getattr(row, k, None)
    return {name: _convert(prefix + name, get(prefix + name)) for name in names}


def plan_of(row) -> DirectPlan | None:
    """The direct kernel's plan a row (a PointRow or a table row) ran with, if recorded."""
    values = _recorded(row, PLAN_PREFIX, [f.name for f in dataclasses.fields(DirectPlan)])
    required = [f.name for f in dataclasses.fields(DirectPlan)
                if f.default is dataclasses.MISSING]
    if any(values[name] is None for name in required):
        return None
    return DirectPlan(**{k: v for k, v in values.items() if v is not None})


def pointwise_config_of(row) -> dict | None:
    """The pointwise kernel's work items a row (a PointRow or a table row) ran with
    (CONFIG_FIELDS: chunk, channel_block, out_block, in_place), if recorded (a row stored
    before in_place existed packed every chunk)."""
    values = _recorded(row, POINTWISE_PREFIX, POINTWISE_FIELDS)
    if values["in_place"] is None:
        values["in_place"] = False
    return None if any(v is None for v in values.values()) else values


def table_dtypes() -> dict:
    """pandas dtypes of the results table's columns (nullable, so a missing value stays one)."""
    kinds = {str: "string", int: "Int64", float: "float64", bool: "boolean"}
    return {name: kinds[_TYPES[name]] for name in TABLE_COLUMNS}

"""The tuning database: the fastest plan found for each layer shape, density bucket, thread
count, kernel build and host. The tuner (harness.sweep.tuning) fills it; the direct kernel
reads it, so ``prepare()`` runs the best plan known for its shape without a sweep."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

import harness
from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import support_group
from harness.errors import HarnessError
from harness.kernels.direct_plan import DirectPlan
from harness.machine.build import BuiltKernels, cache_root
from harness.store.files import StoreError, locked, read_json, write_json

DENSITY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def density_bucket(density: float) -> float:
    """The bucket nearest to ``density`` on a log scale (plans are shared within a bucket)."""
    density = max(density, 1e-6)
    return min(DENSITY_BUCKETS, key=lambda b: abs(np.log(b / density)))


def tuning_key(spec: ConvSpec, density: float, threads: int, built: BuiltKernels, host: str,
               support: int = 1) -> str:
    """The key of a plan: layer geometry, density bucket, the weights' shared-support group
    (block patterns run best with other plans), thread count, build and host."""
    geometry = (f"{spec.input_shape}|{spec.weight_shape}|s{spec.stride}|p{spec.padding}"
                f"|d{spec.dilation}|g{spec.groups}")
    pattern = f"|block{support}" if support > 1 else ""
    return f"{built.key}|{host}|{geometry}|t{threads}|x~{density_bucket(density)}{pattern}"


def weights_tuning_key(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels,
                       host: str) -> str:
    """tuning_key() for the density and support pattern of ``w``."""
    return tuning_key(spec, np.count_nonzero(w) / w.size, threads, built, host,
                      support_group(w, conv_groups=spec.groups))


class TuningDB:
    """The tuned plans: one versioned JSON file, key -> {plan, timings}, shared by concurrent
    sweeps (updates happen under a lock). A damaged database is an error naming the file, so
    that no tuning run overwrites the plans stored in it."""

    SCHEMA, VERSION = "spconv.tuning-db", 1

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_root() / "tuning.json"

    def _load(self) -> tuple[dict, dict[str, DirectPlan]]:
        """The stored entries and their plans (key -> plan), every entry checked; StoreError
        naming the file otherwise."""
        data = read_json(self.path, self.SCHEMA, self.VERSION, missing={})
        if not isinstance(data, dict):
            raise StoreError(f"{self.path}: damaged tuning database (not a mapping of plans); "
                             "move it away or delete it to start an empty one")
        plans = {}
        for key, entry in data.items():
            try:
                plans[key] = DirectPlan(**entry["plan"])
            except (TypeError, KeyError, HarnessError) as exc:
                raise StoreError(f"{self.path}: damaged entry {key!r} ({exc}); move the file "
                                 "away or delete it to start an empty database") from None
        return data, plans

    def check(self) -> int:
        """The number of stored plans; StoreError if the file is damaged."""
        return len(self._load()[1])

    def get(self, key: str) -> DirectPlan | None:
        return self._load()[1].get(key)

    def put(self, key: str, plan: DirectPlan, info: dict) -> None:
        with locked(self.path):
            data, _ = self._load()  # refuses a damaged file: it is never overwritten
            data[key] = {"plan": asdict(plan), **info}
            write_json(self.path, self.SCHEMA, self.VERSION, data)


def best_known_plan(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels,
                    host: str, db: TuningDB | None = None) -> tuple[DirectPlan | None, str]:
    """The plan ``prepare()`` runs when given none, and where it comes from: the tuning
    database's ("tuned"), else the performance model's where this host's calibration is
    cached ("model"), else (None, "default") for the default plan."""
    plan = stored_plan(w, spec, threads, built, host, db)
    if plan is not None:
        return plan, "tuned"
    plan = harness.model_plan(w, spec, threads, built)
    return (plan, "model") if plan is not None else (None, "default")


def stored_plan(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels, host: str,
                db: TuningDB | None = None) -> DirectPlan | None:
    """The stored plan for ``w``'s layer shape, density bucket, pattern and thread count, or
    None."""
    return (db or TuningDB()).get(weights_tuning_key(w, spec, threads, built, host))

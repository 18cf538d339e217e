"""Autotuning of the direct kernel's plan, with a tuning database so sweeps reuse results.

For one layer shape, density bucket, thread count, kernel build and host, candidate plans
(register tile, output-channel block, input-channel block, aligned layout) are drawn from a
grid, pruned with what the cost model knows (a tile wider than the output run or an input block
that cannot stay in L2 is never faster; fewer work items than threads leave threads idle),
verified against the reference and timed; the fastest is stored. The database is one JSON file
updated under a lock, so concurrent sweeps share it.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import random
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import kernels
from .build import BuiltKernels, cache_root
from .convspec import ConvSpec
from .kernels.direct import DirectPlan, default_plan
from .sparsity import direct_layout
from .timing import measure
from .verify import expected_output, verify

DENSITY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def density_bucket(density: float) -> float:
    """The bucket nearest to ``density`` on a log scale (plans are shared within a bucket)."""
    density = max(density, 1e-6)
    return min(DENSITY_BUCKETS, key=lambda b: abs(np.log(b / density)))


def tuning_key(spec: ConvSpec, density: float, threads: int, built: BuiltKernels, host: str) -> str:
    geometry = (f"{spec.input_shape}|{spec.weight_shape}|s{spec.stride}|p{spec.padding}"
                f"|d{spec.dilation}|g{spec.groups}")
    return f"{built.key}|{host}|{geometry}|t{threads}|x~{density_bucket(density)}"


class TuningDB:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_root() / "tuning.json"

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> DirectPlan | None:
        entry = self._read().get(key)
        return DirectPlan(**entry["plan"]) if entry else None

    def put(self, key: str, plan: DirectPlan, info: dict) -> None:
        with self._locked():
            data = self._read()
            data[key] = {"plan": asdict(plan), **info}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)


def candidate_plans(spec: ConvSpec, built: BuiltKernels, threads: int, l2_bytes: int,
                    budget: int, seed: int = 0) -> list[DirectPlan]:
    """The default plan plus up to ``budget - 1`` distinct, model-pruned grid points."""
    lib = built.lib
    vector, max_tile = lib.spconv_vector_floats(), lib.spconv_max_tile_vectors()
    tiles = sorted({max_tile, max(1, max_tile // 2), max(1, (max_tile * 2) // 3)})
    out_blocks = sorted({4, 16, 32, 64, 128, -(-spec.out_channels // threads), spec.out_channels})
    channels = spec.in_channels
    channel_blocks = sorted({c for c in (2, 4, 8, 16, 32, 64, channels) if c <= channels})
    aligned = [False, True] if spec.stride == (1, 1) and spec.kernel_w > 1 else [False]
    seen, plans = set(), []
    for tile, mb, cb, al in itertools.product(tiles, out_blocks, channel_blocks, aligned):
        layout = direct_layout(spec, al, vector)
        vectors = -(-spec.out_height * layout.plane_w // vector)
        block_bytes = 4 * cb * layout.plane * layout.copies
        if block_bytes > l2_bytes and cb != channel_blocks[0]:
            continue  # an input block that spills L2 only adds misses
        if spec.batch * -(-spec.out_channels // mb) < threads:
            continue  # fewer work items than threads leaves threads idle
        plan = DirectPlan(min(tile, vectors), min(mb, spec.out_channels), cb, al)
        if plan not in seen:
            seen.add(plan)
            plans.append(plan)
    rng = random.Random(seed)
    rng.shuffle(plans)
    first = default_plan(spec, built, threads)
    return [first] + [p for p in plans if p != first][:max(0, budget - 1)]


def tune(w: np.ndarray, spec: ConvSpec, threads: int, built: BuiltKernels, *, host: str,
         l2_bytes: int, budget: int = 24, db: TuningDB | None = None, min_time: float = 0.02,
         seed: int = 0) -> tuple[DirectPlan, dict]:
    """Search plans for ``w`` on ``spec``; store and return the fastest correct one."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    expected = expected_output(x, w, None, spec, relu=False)
    out = np.empty(spec.output_shape, np.float32)
    results = []
    for plan in candidate_plans(spec, built, threads, l2_bytes, budget, seed):
        k = kernels.prepare(w, input_shape=spec.input_shape, stride=spec.stride,
                            padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                            threads=threads, kernels=built, plan=plan)
        out.fill(np.nan)
        k(x, out=out)
        if not verify(out, expected).ok:
            raise RuntimeError(f"direct kernel wrong with plan {plan}")  # a kernel bug: stop
        results.append((measure(lambda: k(x, out=out), repeats=3, min_time=min_time).median, plan))
    results.sort(key=lambda r: r[0])
    best_time, best = results[0]
    default_time = next(t for t, p in results if p == default_plan(spec, built, threads))
    info = {"time_s": best_time, "default_time_s": default_time, "candidates": len(results)}
    density = np.count_nonzero(w) / w.size
    (db or TuningDB()).put(tuning_key(spec, density, threads, built, host), best, info)
    return best, info

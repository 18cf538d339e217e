"""The sweep: a plan of points (layer x sparsity x method x batch x threads), each made,
verified against the reference and timed, with rows stored as they finish."""

from __future__ import annotations

import importlib
import random
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import kernels
from .build import BuiltKernels, build
from .errors import BuildError, HarnessError
from .hostinfo import HostInfo
from .kernels.base import KernelError
from .layers import LayerShape
from .profiles import BuildTarget, Profile
from .sparsity import check_sparsity, sparsity_of
from .store import RunStore
from .timing import CacheEvictor, PoolSettler, measure
from .tune import TuningDB, tuned_plan
from .verify import expected_output, verify
from .weights import generated_weights, sweep_input

NATIVE_METHODS = ("direct_sparse", "lowered_sparse", "lowered_scipy", "dense_gemm")
STATUSES = ("ok", "incorrect", "build_error", "runtime_error", "skipped")


@dataclass(frozen=True)
class SweepPoint:
    layer: LayerShape
    sparsity: float        # target fraction of zero weights (file weights: their own)
    method: str
    batch: int
    threads: int
    pattern: str           # random | magnitude | file
    seed: int

    @property
    def key(self) -> str:
        return (f"{self.layer.key}|s={self.sparsity:.6f}|{self.method}|b={self.batch}"
                f"|t={self.threads}|{self.pattern}|seed={self.seed}")

    @property
    def weights_key(self) -> tuple:
        return (self.layer.key, self.sparsity, self.pattern, self.seed, self.batch)


@dataclass
class SweepConfig:
    """Everything a sweep point needs; picklable, so worker processes can rebuild it."""

    profile: Profile
    target: BuildTarget
    host: HostInfo
    layers: list[LayerShape]
    sparsities: list[float]
    methods: list[str]
    batches: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=lambda: [1])
    pattern: str = "random"
    seed: int = 0
    repeats: int = 7
    min_time: float = 0.05
    cold_cache: bool = False
    weight_files: dict[str, np.ndarray] = field(default_factory=dict)  # layer key -> weights
    tune: str = "cached"  # direct plans: "off" default, "cached" from the tuning DB, "search"
    tune_budget: int = 40
    plugins: list[str] = field(default_factory=list)  # modules registering extra methods

    @property
    def built(self) -> BuiltKernels:
        """The kernels of this process (compiled once, then loaded from the cache)."""
        return build(self.target)

    def load_plugins(self) -> None:
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise HarnessError(f"plugin {module!r} could not be imported: {exc}") from None


def plan_points(cfg: SweepConfig) -> list[SweepPoint]:
    """Every point, grouped so that points sharing weights run together; groups and the
    methods within them are shuffled (seeded) so slow drift of the machine spreads over all
    methods instead of biasing one."""
    for s in cfg.sparsities:
        check_sparsity(s)
    unknown = [m for m in cfg.methods if m not in kernels.METHODS]
    if unknown:
        raise HarnessError(f"unknown method {unknown[0]!r} (known: {', '.join(kernels.METHODS)})")
    groups: list[list[SweepPoint]] = []
    for layer in cfg.layers:
        from_file = layer.key in cfg.weight_files
        pattern = "file" if from_file else cfg.pattern
        for batch in cfg.batches:
            if from_file:
                levels = {None: cfg.methods}  # the file's own sparsity, every method
            else:
                dense = [m for m in cfg.methods if m in kernels.DENSE_METHODS]
                sparse = [m for m in cfg.methods if m not in kernels.DENSE_METHODS]
                levels = {s: sparse for s in cfg.sparsities}
                if dense:  # a dense method's time does not depend on the zeros: time it once
                    levels[0.0] = sorted(set(levels.get(0.0, [])) | set(dense),
                                         key=cfg.methods.index)
            for sparsity, methods in levels.items():
                if not methods:
                    continue
                s = sparsity_of(cfg.weight_files[layer.key]) if from_file else sparsity
                groups.append([SweepPoint(layer, round(float(s), 6), m, batch, t, pattern, cfg.seed)
                               for m in methods for t in cfg.threads])
    rng = random.Random(cfg.seed)
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    return [p for g in groups for p in g]


class PointRunner:
    """Runs points, keeping the current group's weights, input and reference output."""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg
        self._group_key = None
        self._group = None
        llc = max(cfg.host.caches_kib.values(), default=32 * 1024)
        self._evictor = CacheEvictor(llc) if cfg.cold_cache else None
        self._db = TuningDB()
        self._settle = PoolSettler()
        self.built = cfg.built  # once: resolving the build hashes every kernel source

    def _group_data(self, point: SweepPoint):
        if point.weights_key != self._group_key:
            layer = point.layer
            if point.pattern == "file":
                w = self.cfg.weight_files[layer.key]
            else:
                w = generated_weights(layer, point.sparsity, point.pattern, point.seed)
            x = sweep_input(layer, point.batch, point.seed)
            spec = layer.spec(point.batch)
            self._group = (w, x, spec, expected_output(x, w, None, spec, relu=False))
            self._group_key = point.weights_key
        return self._group

    def _plan(self, w, spec, threads: int):
        """The tuned plan for this layer, density and thread count (searched if asked), or
        None for the default plan; and how it was chosen."""
        cfg = self.cfg
        if cfg.tune == "off":
            return None, "default"
        plan = tuned_plan(w, spec, threads, self.built, host=cfg.host.cpu_model,
                          search=cfg.tune == "search", budget=cfg.tune_budget, db=self._db,
                          l2_bytes=cfg.host.caches_kib.get("l2", 256) * 1024)
        return (plan, "tuned") if plan is not None else (None, "default")

    def run(self, point: SweepPoint) -> dict:
        row = base_row(point, self.cfg, self.built)
        try:
            w, x, spec, expected = self._group_data(point)
        except HarnessError as exc:
            return {**row, "status": "skipped", "reason": str(exc)}
        row.update(sparsity=round(sparsity_of(w), 6), nnz=int(np.count_nonzero(w)),
                   dense_flops=spec.dense_flops(),
                   useful_flops=spec.dense_flops() * np.count_nonzero(w) // w.size)
        options = {"kernels": self.built} if point.method in NATIVE_METHODS else {}
        self._settle(point.method, point.threads)  # before tuning and timing alike
        try:
            if point.method == "direct_sparse":
                options["plan"], row["tuned"] = self._plan(w, spec, point.threads)
            k = kernels.prepare(w, input_shape=spec.input_shape, stride=spec.stride,
                                padding=spec.padding, dilation=spec.dilation,
                                groups=spec.groups, method=point.method,
                                threads=point.threads, **options)
        except BuildError as exc:
            return {**row, "status": "build_error", "reason": str(exc)}
        except HarnessError as exc:
            return {**row, "status": "skipped", "reason": str(exc)}
        row["details"] = k.describe()
        plan = row["details"].get("plan")
        if plan:  # the direct kernel's plan, as columns the model fit can use
            row.update({f"plan_{key}": value for key, value in plan.items()})
        out = np.full(spec.output_shape, np.nan, dtype=np.float32)
        try:
            k(x, out=out)
            verdict = verify(out, expected)
            row.update(max_error=verdict.max_error, error_ratio=verdict.error_ratio)
            if not verdict.ok:
                return {**row, "status": "incorrect",
                        "reason": f"output differs from the reference (max error "
                                  f"{verdict.max_error:.3g}, {verdict.error_ratio:.3g}x tolerance)"}
            timing = measure(lambda: k(x, out=out), repeats=self.cfg.repeats,
                             min_time=self.cfg.min_time, evict=self._evictor)
        except (KernelError, HarnessError, RuntimeError, MemoryError) as exc:
            return {**row, "status": "runtime_error", "reason": str(exc).splitlines()[0]}
        row.update(status="ok", median_s=timing.median, min_s=timing.minimum,
                   iqr_s=timing.iqr, cv=timing.cv, noisy=timing.noisy,
                   calls_per_sample=timing.calls_per_sample, samples_s=timing.samples,
                   useful_gflops=row["useful_flops"] / timing.median / 1e9,
                   effective_gflops=row["dense_flops"] / timing.median / 1e9)
        return row


def base_row(point: SweepPoint, cfg: SweepConfig, built: BuiltKernels | None = None) -> dict:
    """The columns that say which point, build, profile and host a row is."""
    built = built or cfg.built
    layer = point.layer
    return {
        "key": point.key, "network": layer.network, "layer": layer.name,
        "in_channels": layer.in_channels, "height": layer.height, "width": layer.width,
        "out_channels": layer.out_channels, "kernel": layer.kernel, "stride": layer.stride,
        "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups,
        "method": point.method, "target_sparsity": point.sparsity, "sparsity": point.sparsity,
        "pattern": point.pattern, "seed": point.seed, "batch": point.batch,
        "threads": point.threads, "profile": cfg.profile.name, "isa": built.isa,
        "emulated": built.emulated, "host": cfg.host.cpu_model,
        "build_key": built.key, "status": "", "reason": "", "repeats": cfg.repeats,
        "cold_cache": cfg.cold_cache, "timestamp": time.time(),
    }


def pending_points(points: list[SweepPoint], store: RunStore, cfg: SweepConfig,
                   same_machine: bool = True) -> list[SweepPoint]:
    """Points not yet measured in this run directory for the same profile, and (unless the
    points ran on a cluster, whose workers have builds and hosts of their own) with the same
    build and host."""
    done = {r["key"] for r in store.rows()
            if r.get("profile") == cfg.profile.name and (not same_machine or (
                r.get("build_key") == cfg.built.key and r.get("host") == cfg.host.cpu_model))}
    return [p for p in points if p.key not in done]


def run_sweep(cfg: SweepConfig, store: RunStore, points: list[SweepPoint], *,
              progress: bool = True, executor=None, should_stop=lambda: False) -> int:
    """Measure ``points`` with ``executor`` (in this process by default), appending each row
    to ``store`` as it finishes; ``should_stop`` is asked between points. Returns the count."""
    from .executors import InProcessExecutor
    executor = executor or InProcessExecutor(cfg)
    bar = tqdm(total=len(points), desc="sweep", unit="pt", disable=not progress,
               dynamic_ncols=True)
    done = 0
    try:
        for point, row in executor.run(points, should_stop):
            store.append(row)
            done += 1
            bar.set_postfix_str(f"{point.layer.name} s={point.sparsity:.2f} {point.method}")
            bar.update()
    finally:
        bar.close()
        executor.close()
    return done

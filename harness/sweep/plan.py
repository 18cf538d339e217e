"""The plan of a sweep: its configuration, and its points (layer x sparsity x method x batch x
threads) in a seeded order that spreads drift of the machine over every method."""

from __future__ import annotations

import hashlib
import importlib
import random
from dataclasses import dataclass, field

import numpy as np

from harness import config, kernels
from harness.conv.layers import LayerShape
from harness.conv.sparsity import check_sparsity, sparsity_of
from harness.conv.weights import check_pattern
from harness.errors import HarnessError
from harness.machine.build import BuiltKernels, build
from harness.machine.hostinfo import HostInfo
from harness.machine.profiles import BuildTarget, Profile


@dataclass(frozen=True)
class SweepPoint:
    layer: LayerShape
    sparsity: float        # target fraction of zero weights (file weights: their own)
    method: str
    batch: int
    threads: int
    pattern: str           # one of conv.weights.PATTERNS, or file
    seed: int

    @property
    def key(self) -> str:
        """Everything that defines the point: the layer's name and full geometry, sparsity,
        method, batch, threads, weight pattern and seed (a layer whose shape was edited is a
        new point, never the old row)."""
        return (f"{self.layer.key}[{self.layer.geometry}]|s={self.sparsity:.6f}|{self.method}"
                f"|b={self.batch}|t={self.threads}|{self.pattern}|seed={self.seed}")

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
    patterns: list[str] = field(default_factory=lambda: [config.PATTERN])  # weight patterns
    seed: int = config.SEED
    repeats: int = config.REPEATS
    min_time: float = config.MIN_TIME_S
    noisy_retries: int = config.NOISY_RETRIES  # times a noisy point is timed again
    cold_cache: bool = False
    weight_files: dict[str, np.ndarray] = field(default_factory=dict)  # layer key -> weights
    prune_files: bool = False  # prune those weights by magnitude to each sparsity ("pruned")
    tune: str = config.TUNE_MODE  # direct plans: "off" default, "cached" tuning DB, "search"
    tune_budget: int = config.TUNE_BUDGET
    plugins: list[str] = field(default_factory=list)  # modules registering extra methods

    @property
    def built(self) -> BuiltKernels:
        """The kernels of this process (compiled once, then loaded from the cache)."""
        return build(self.target)

    def settings(self) -> dict:
        """What defines the run: its grid, and the settings that change what a point
        measures. A run resumed with other values would mix two kinds of rows, so resuming
        compares them."""
        weights = hashlib.sha256()
        for name in sorted(self.weight_files):
            weights.update(name.encode() + self.weight_files[name].tobytes())
        return {"layers": [f"{l.key}[{l.geometry}]" for l in self.layers],
                "sparsities": self.sparsities, "methods": self.methods, "batches": self.batches,
                "threads": self.threads, "pattern": ",".join(self.patterns), "seed": self.seed,
                "profile": self.profile.name, "isa": self.target.isa,
                "cflags": list(self.target.cflags), "repeats": self.repeats,
                "min_time_s": self.min_time, "noisy_retries": self.noisy_retries,
                "cold_cache": self.cold_cache,
                "tune": self.tune, "tune_budget": self.tune_budget,
                "weights_sha256": weights.hexdigest() if self.weight_files else None,
                "prune_files": self.prune_files,
                "plugins": list(self.plugins)}

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
    dense_methods = set(kernels.methods_where(dense=True))
    for m in cfg.methods:
        kernels.method_class(m)  # refuses an unknown name
    groups: list[list[SweepPoint]] = []
    for p in cfg.patterns:
        check_pattern(p)
    for layer in cfg.layers:
        from_file = layer.key in cfg.weight_files
        patterns = ["pruned"] if from_file and cfg.prune_files else cfg.patterns
        for batch in cfg.batches:
            methods = [m for m in cfg.methods
                       if kernels.method_class(m).applies(layer.spec(batch))]
            if from_file and not cfg.prune_files:  # the file's own sparsity, every method
                levels = {(None, "file"): methods}
            else:
                dense = [m for m in methods if m in dense_methods]
                sparse = [m for m in methods if m not in dense_methods]
                levels = {(s, p): sparse for p in patterns for s in cfg.sparsities}
                if dense:  # a dense method's time does not depend on the zeros: time it once
                    first = (0.0, patterns[0])
                    levels[first] = sorted(set(levels.get(first, [])) | set(dense),
                                           key=cfg.methods.index)
            for (sparsity, pattern), methods in levels.items():
                if not methods:
                    continue
                s = sparsity_of(cfg.weight_files[layer.key]) if sparsity is None else sparsity
                groups.append([SweepPoint(layer, round(float(s), 6), m, batch, t, pattern, cfg.seed)
                               for m in methods for t in cfg.threads])
    rng = random.Random(cfg.seed)
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    return [p for g in groups for p in g]


def pending_points(points: list[SweepPoint], rows, cfg: SweepConfig,
                   same_machine: bool = True) -> list[SweepPoint]:
    """Points not yet measured in this run directory for the same profile, and (unless the
    points ran on a cluster, whose workers have builds and hosts of their own) with the same
    build and host."""
    done = {r.key for r in rows
            if r.profile == cfg.profile.name and (not same_machine or (
                r.build_key == cfg.built.key and r.host == cfg.host.cpu_model))}
    return [p for p in points if p.key not in done]



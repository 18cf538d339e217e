"""Measuring one sweep point: make its weights and input, prepare the method, check its
output against the float64 reference, then time it; the result is a PointRow."""

from __future__ import annotations

import time

import numpy as np

from harness import kernels
from harness.conv.sparsity import magnitude_prune, sparsity_of
from harness.conv.verify import expected_output, verify
from harness.conv.weights import generated_weights, sweep_input
from harness.errors import BuildError, HarnessError
from harness.kernels.base import KernelError
from harness.kernels.direct import default_plan
from harness.machine.build import BuiltKernels
from harness.machine.caps import caps_in_effect, dense_caps
from harness.machine.isa import wider
from harness.machine.profiles import not_reproduced
from harness.sweep.plan import SweepConfig, SweepPoint
from harness.sweep.record import (PLAN_PREFIX, PointRow, make_row, updated,
                                  with_pointwise_config)
from harness.kernels.plans import TuningDB
from harness.sweep.tuning import tuned_plan
from harness.timing import CacheEvictor, PoolSettler, measure, steadiest


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
        self._caps = dense_caps(cfg.target, cfg.host)
        self.built = cfg.built  # once: resolving the build hashes every kernel source

    def _group_data(self, point: SweepPoint):
        if point.weights_key != self._group_key:
            layer = point.layer
            if point.pattern == "file":
                w = self.cfg.weight_files[layer.key]
            elif point.pattern == "pruned":
                w = magnitude_prune(self.cfg.weight_files[layer.key], point.sparsity)
            else:
                w = generated_weights(layer, point.sparsity, point.pattern, point.seed)
            x = sweep_input(layer, point.batch, point.seed)
            spec = layer.spec(point.batch)
            self._group = (w, x, spec, expected_output(x, w, None, spec, relu=False))
            self._group_key = point.weights_key
        return self._group

    def _plan(self, w, spec, threads: int):
        """The plan for this layer, density and thread count, and how it was chosen: the
        default plan with tuning off; else the tuned one (searched if asked), or None, which
        leaves the choice to prepare() (the model's plan, else the default)."""
        cfg = self.cfg
        if cfg.tune == "off":
            return default_plan(spec, self.built, threads, w), "default"
        plan = tuned_plan(
            w, spec, threads, self.built, host=cfg.host.cpu_model, search=cfg.tune == "search",
            budget=cfg.tune_budget, db=self._db, l2_bytes=cfg.host.caches_kib.get("l2", 256) * 1024)
        return plan, "tuned" if plan is not None else None

    def _level(self, ran_isa: str | None) -> dict:
        """What a method reported of the level it ran at, and whether that is above the
        profile's: such a row is not the profile's machine and is never a baseline. A method
        that reports no level is taken to run at the host's, uncapped where caps are due."""
        above = wider(ran_isa, self.cfg.target.isa) if ran_isa else self._caps.active
        return {"ran_isa": ran_isa, "uncapped": above}

    def run(self, point: SweepPoint) -> PointRow:
        row = base_row(point, self.cfg, self.built)
        try:
            w, x, spec, expected = self._group_data(point)
        except HarnessError as exc:
            return updated(row, status="skipped", reason=str(exc))
        nnz = int(np.count_nonzero(w))
        row = updated(row, sparsity=round(sparsity_of(w), 6), nnz=nnz,
                      dense_flops=spec.dense_flops(),
                      useful_flops=spec.dense_flops() * nnz // w.size)
        method = kernels.method_class(point.method)
        options = {"kernels": self.built} if method.native else {}
        self._settle(point.method, point.threads)  # before tuning and timing alike
        try:
            source = None
            if method.tunable:
                options["plan"], source = self._plan(w, spec, point.threads)
            k = kernels.prepare(w, input_shape=spec.input_shape, stride=spec.stride,
                                padding=spec.padding, dilation=spec.dilation,
                                groups=spec.groups, method=point.method,
                                threads=point.threads, **options)
        except BuildError as exc:
            return updated(row, status="build_error", reason=str(exc))
        except HarnessError as exc:
            return updated(row, status="skipped", reason=str(exc))
        details = k.describe()
        plan = details.get("plan")
        if method.tunable:
            row = updated(row, tuned=source or details["plan_source"])
        row = with_pointwise_config(updated(  # plans also as columns the models can use
            row, details=details,
            **{f"{PLAN_PREFIX}{key}": value for key, value in (plan or {}).items()},
            **self._level(details.get("isa"))))
        out = np.full(spec.output_shape, np.nan, dtype=np.float32)
        try:
            k(x, out=out)
            verdict = verify(out, expected)
            row = updated(row, max_error=verdict.max_error, error_ratio=verdict.error_ratio)
            if not verdict.ok:
                return updated(row, status="incorrect",
                               reason=f"output differs from the reference (max error "
                                      f"{verdict.max_error:.3g}, {verdict.error_ratio:.3g}x "
                                      "tolerance)")
            timing = steadiest(
                lambda: measure(lambda: k(x, out=out), repeats=self.cfg.repeats,
                                min_time=self.cfg.min_time, evict=self._evictor),
                self.cfg.noisy_retries)
        except (KernelError, HarnessError, RuntimeError, MemoryError) as exc:
            return updated(row, status="runtime_error", reason=str(exc).splitlines()[0])
        return updated(row, status="ok", median_s=timing.median, min_s=timing.minimum,
                       iqr_s=timing.iqr, cv=timing.cv, noisy=timing.noisy,
                       attempts=timing.attempts,
                       calls_per_sample=timing.calls_per_sample, samples_s=timing.samples,
                       useful_gflops=row.useful_flops / timing.median / 1e9,
                       effective_gflops=row.dense_flops / timing.median / 1e9)


def base_row(point: SweepPoint, cfg: SweepConfig, built: BuiltKernels | None = None) -> PointRow:
    """The columns that say which point, build, profile and host a row is."""
    built = built or cfg.built
    layer = point.layer
    method = kernels.METHODS.get(point.method)
    return make_row(
        key=point.key, network=layer.network, layer=layer.name,
        in_channels=layer.in_channels, height=layer.height, width=layer.width,
        out_channels=layer.out_channels, kernel=layer.kernel, stride=layer.stride,
        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        method=point.method, dense=bool(method and method.dense),
        target_sparsity=point.sparsity, sparsity=point.sparsity,
        pattern=point.pattern, seed=point.seed, batch=point.batch,
        threads=point.threads, profile=cfg.profile.name, isa=built.isa,
        caps=caps_in_effect(), emulated=not cfg.profile.is_host, fallback=built.emulated,
        not_reproduced=", ".join(not_reproduced(cfg.profile, cfg.host)), host=cfg.host.cpu_model,
        build_key=built.key, status="", reason="", repeats=cfg.repeats,
        min_time_s=cfg.min_time, cold_cache=cfg.cold_cache, timestamp=time.time())


def failed_row(point: SweepPoint, cfg: SweepConfig, reason: str, **extra) -> PointRow:
    """The row of a point that could not be measured (a dead worker, a cluster error)."""
    return updated(base_row(point, cfg), status="runtime_error", reason=reason, **extra)


def call_overhead(built: BuiltKernels | None = None) -> float:
    """Seconds per call of a prepared direct kernel on a 1x1 problem: an upper bound on what
    calling from Python adds to every timed call (argument checks, buffer passing, C entry)."""
    w = np.ones((1, 1, 1, 1), dtype=np.float32)
    x = np.ones((1, 1, 1, 1), dtype=np.float32)
    k = kernels.prepare(w, input_shape=x.shape, kernels=built)
    out = np.empty((1, 1, 1, 1), dtype=np.float32)
    return measure(lambda: k(x, out=out), repeats=5, min_time=0.01).median

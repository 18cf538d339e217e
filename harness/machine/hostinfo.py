"""Detection of the host CPU: model, cores, ISA features and caches (Linux /proc and /sys)."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.machine.isa import isa_table

# cpuinfo flag names of the features the profiles and kernels care about.
KNOWN_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq",
    "avx512vl", "avx512er", "avx512pf",
)


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    physical_cores: int
    logical_cpus: int
    features: frozenset[str]
    caches_kib: dict[str, int] = field(default_factory=dict)  # l1d, l2, l3 (per instance)
    max_mhz: float | None = None

    def has(self, *features: str) -> bool:
        return all(f in self.features for f in features)

    def best_isa(self) -> str:
        """The widest instruction set of the table this host can execute."""
        return next(i.name for i in isa_table().values() if self.has(*i.features))

    def as_dict(self) -> dict:
        return {
            "cpu_model": self.cpu_model,
            "physical_cores": self.physical_cores,
            "logical_cpus": self.logical_cpus,
            "features": sorted(f for f in self.features if f in KNOWN_FEATURES),
            "caches_kib": dict(self.caches_kib),
            "max_mhz": self.max_mhz,
        }


def _cpuinfo_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # first processor only
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _parse_size_kib(text: str) -> int | None:
    text = text.strip().upper()
    for suffix, scale in (("K", 1), ("M", 1024), ("G", 1024 * 1024)):
        if text.endswith(suffix):
            try:
                return int(float(text[:-1]) * scale)
            except ValueError:
                return None
    try:
        return int(text) // 1024
    except ValueError:
        return None


def _sysfs_caches() -> dict[str, int]:
    """Cache sizes of cpu0 by level, in KiB (one instance, as the kernel reports it)."""
    caches: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _parse_size_kib((index / "size").read_text())
        except OSError:
            continue
        if size is None or kind == "Instruction":
            continue
        name = "l1d" if level == "1" else f"l{level}"
        caches[name] = size
    return caches


@functools.lru_cache(maxsize=1)
def detect_host() -> HostInfo:
    info = _cpuinfo_fields()
    flags = frozenset(info.get("flags", "").split())
    model = info.get("model name") or platform.processor() or platform.machine()
    freq = psutil.cpu_freq()
    return HostInfo(
        cpu_model=model,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cpus=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        features=flags,
        caches_kib=_sysfs_caches(),
        max_mhz=(freq.max or None) if freq else None,
    )

"""Dense libraries held to a profile's instruction set, so that a sweep of another machine's
profile compares its sparse kernels (built for that machine's ISA) with dense baselines at
the same level, never with what only this host can run.

The caps are environment variables the libraries read once, when they load: oneDNN's
ONEDNN_MAX_CPU_ISA and OpenBLAS's OPENBLAS_CORETYPE. A worker process starts with them set
(harness.sweep.executors.isolated); a process whose libraries are already loaded cannot be
capped, and every method reports the level it actually ran at (``ran_isa`` of its rows), so a
row that ran above its profile's level is marked instead of compared.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from harness.machine.hostinfo import HostInfo
from harness.machine.isa import isa_table, wider
from harness.machine.profiles import BuildTarget

CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")

# OpenBLAS core types by the widest level their kernels use (threadpoolctl's "architecture").
_OPENBLAS_LEVEL = {
    "avx512": ("skylakex", "cooperlake", "sapphirerapids"),
    "avx2": ("haswell", "zen", "skylake", "alderlake"),
    "sse4.2": ("sandybridge", "nehalem", "atom", "penryn", "dunnington", "core2", "barcelona",
               "bobcat", "bulldozer", "piledriver", "steamroller", "excavator"),
    "portable": ("prescott", "katmai", "coppermine", "northwood", "banias", "generic"),
}


@dataclass(frozen=True)
class DenseCaps:
    """The caps a sweep of ``profile_isa`` needs on a host whose widest level is
    ``host_isa``: none when the profile is at the host's level."""

    profile_isa: str
    host_isa: str
    env: dict

    @property
    def active(self) -> bool:
        return bool(self.env)

    def describe(self) -> str:
        return _env_text(self.env)


def dense_caps(target: BuildTarget, host: HostInfo) -> DenseCaps:
    host_isa = host.best_isa()
    if not wider(host_isa, target.isa):
        return DenseCaps(target.isa, host_isa, {})
    row = isa_table()[target.isa]
    return DenseCaps(target.isa, host_isa, {
        "ONEDNN_MAX_CPU_ISA": row.onednn_cap,
        "OPENBLAS_CORETYPE": target.profile.blas_coretype or row.openblas_core})


def caps_in_effect() -> str:
    """The caps set in this process's environment, as text."""
    return _env_text({k: os.environ[k] for k in CAP_VARS if k in os.environ})


def _env_text(env: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def openblas_level(architecture: str | None) -> str | None:
    """The level of an OpenBLAS core type, None when unknown."""
    name = (architecture or "").lower()
    return next((level for level, cores in _OPENBLAS_LEVEL.items() if name in cores), None)


def onednn_level(isa_text: str | None) -> str | None:
    """The level of oneDNN's own name for its ISA ("Intel AVX2", "Intel SSE4.1", ...). AVX10
    is AVX-512's successor ("Intel AVX 10.1" on a Xeon with AVX-512 FP16), 512 bits wide
    unless named /256."""
    text = (isa_text or "").upper().replace("-", "")
    avx10 = re.search(r"AVX\s*10(\.\d+)?(/(\d+))?", text)
    if avx10:
        return "avx2" if avx10.group(3) == "256" else "avx512"
    if "AVX512" in text or "AMX" in text:
        return "avx512"
    if "AVX2" in text:
        return "avx2"
    if "SSE4" in text or "AVX" in text:
        return "sse4.2"
    return None

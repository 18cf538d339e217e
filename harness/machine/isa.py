"""The instruction-set table of ``kernels_c/isa.def``: for each code path of the kernels, its
preprocessor macro, fp32 vector width, largest register tile and the CPU flags a host needs."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from harness.errors import BuildError
from harness.resources import kernel_dir

TABLE = "isa.def"
_ROW = re.compile(r'^SPCONV_ISA\(\s*(\w+)\s*,\s*"([^"]+)"\s*,\s*(\d+)\s*,\s*(\d+)\s*,'
                  r'\s*(\d+)\s*,\s*"([^"]*)"\s*,\s*"(\w+)"\s*,\s*"(\w+)"\s*\)', re.M)


@dataclass(frozen=True)
class ISA:
    id: str                  # the C identifier: the build defines SPCONV_ISA_<id>
    name: str                # as profiles and rows spell it
    lanes: int               # fp32 values per vector
    max_tile: int            # accumulator vectors a register tile may hold
    registers: int           # vector registers (the register blocks of grouped tiles)
    features: tuple[str, ...]  # /proc/cpuinfo flags a host needs to execute it
    onednn_cap: str          # ONEDNN_MAX_CPU_ISA that holds oneDNN to this level
    openblas_core: str       # OPENBLAS_CORETYPE that holds OpenBLAS to this level

    @property
    def macro(self) -> str:
        return f"SPCONV_ISA_{self.id}"

    def defines(self) -> tuple[str, ...]:
        """The compiler flags that select this row in the C headers."""
        return (f"-D{self.macro}", f"-DSPCONV_VEC_FLOATS={self.lanes}",
                f"-DSPCONV_MAX_TILE={self.max_tile}",
                f"-DSPCONV_VEC_REGISTERS={self.registers}", f'-DSPCONV_ISA_NAME="{self.name}"')


@functools.lru_cache(maxsize=1)
def isa_table() -> dict[str, ISA]:
    """Name -> ISA, widest first, as the table lists them."""
    path = kernel_dir() / TABLE
    try:
        text = path.read_text()
    except OSError as exc:
        raise BuildError(f"{path}: cannot read the instruction-set table: {exc.strerror}") from None
    rows = [ISA(i, n, int(lanes), int(tile), int(regs), tuple(flags.split()), dnnl, blas)
            for i, n, lanes, tile, regs, flags, dnnl, blas in _ROW.findall(text)]
    if not rows:
        raise BuildError(f"{path}: no SPCONV_ISA rows")
    return {row.name: row for row in rows}


def wider(a: str, b: str) -> bool:
    """Whether instruction set ``a`` is a wider (higher) level than ``b``."""
    order = list(isa_table())  # widest first
    return order.index(a) < order.index(b)


def isa(name: str) -> ISA:
    table = isa_table()
    if name not in table:
        raise BuildError(f"unknown instruction set {name!r} (known: {', '.join(table)})")
    return table[name]

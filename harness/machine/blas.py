"""Which BLAS numpy's matmul runs on, with which settings, and control of its thread count."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from threadpoolctl import ThreadpoolController

# Environment variables that change which code path or how many threads the BLAS uses.
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_VERBOSE",
                 "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE",
                 "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "BLIS_NUM_THREADS")


@functools.lru_cache(maxsize=1)
def controller() -> ThreadpoolController:
    import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)
    return ThreadpoolController()


def blas_info() -> dict:
    """The BLAS libraries loaded in this process and the environment that steers them."""
    libs = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture",
                                   "threading_layer", "num_threads", "filepath")}
        for info in controller().info() if info.get("user_api") == "blas"
    ]
    return {"libraries": libs,
            "env": {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ}}


def numpy_blas() -> dict | None:
    """The entry of blas_info()["libraries"] that numpy's matmul calls: scipy and torch may
    load BLAS copies of their own, listed before it."""
    import numpy
    libs = blas_info()["libraries"]
    home = Path(numpy.__file__).resolve().parent
    for lib in libs:
        path = Path(lib["filepath"] or "").resolve()
        if path.is_relative_to(home) or path.parent.name.startswith("numpy"):
            return lib
    return libs[0] if libs else None


def blas_summary() -> str:
    info = blas_info()
    lib = numpy_blas()
    if lib is None:
        return "no BLAS found"
    core = info["env"].get("OPENBLAS_CORETYPE")
    extra = f", OPENBLAS_CORETYPE={core}" if core else ""
    return f"{lib['internal_api']} {lib['version']} ({lib['architecture']}{extra})"


def blas_threads(threads: int):
    """Context manager limiting the BLAS to ``threads`` threads."""
    return controller().limit(limits=threads, user_api="blas")

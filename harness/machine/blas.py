"""Which BLAS numpy's matmul runs on, with which settings, and control of its thread count."""

from __future__ import annotations

import functools
import os

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


def blas_summary() -> str:
    info = blas_info()
    if not info["libraries"]:
        return "no BLAS found"
    lib = info["libraries"][0]
    core = info["env"].get("OPENBLAS_CORETYPE")
    extra = f", OPENBLAS_CORETYPE={core}" if core else ""
    return f"{lib['internal_api']} {lib['version']} ({lib['architecture']}{extra})"


def blas_threads(threads: int):
    """Context manager limiting the BLAS to ``threads`` threads."""
    return controller().limit(limits=threads, user_api="blas")

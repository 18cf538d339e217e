"""Compile the C kernels of ``kernels_c/`` through cffi (API mode) with a profile's flags.

cffi generates the extension's C wrapper; the compiler is invoked here directly so that the
exact command line can be recorded and its own error message shown. The sources compile one
process each, in parallel on the CPUs this process may use, and link into one module: what the
recorded single compiler call does file by file. Built modules are cached
under a name derived from a hash of everything that affects the binary (sources, headers,
flags, compiler version, Python ABI), built in a temporary directory and moved into place
atomically, so an unchanged build is never recompiled and concurrent builds do not collide.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cffi
import contextlib
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harness.errors import BuildError
from harness.machine.isa import isa
from harness.machine.profiles import HOST_PROFILE, BuildTarget, build_target, load_profile
from harness.resources import kernel_dir
from harness.store.files import atomic_write_text, writable_dir

API_HEADER = "spconv_api.h"
# Instrumented at -O1 (it follows the profile's -O3, and the last -O wins), as the sanitizers'
# authors advise: the checks follow the source's accesses, intrinsics included, and GCC took
# 94 s to instrument the unrolled register tiles of tile.c at -O3 against 11 s at -O1.
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined", "-O1")


@dataclass(frozen=True)
class BuiltKernels:
    lib: object             # the cffi lib: C functions of spconv_api.h
    ffi: cffi.FFI
    path: Path              # the shared object
    key: str                # hash naming this build
    command: tuple[str, ...]  # compiler command line that produced it
    compiled: bool          # False when taken from the cache
    isa: str
    emulated: bool
    compiler_version: str

    def metadata(self) -> dict:
        return {"build_key": self.key, "isa": self.isa, "emulated": self.emulated,
                "compiler_version": self.compiler_version,
                "compile_command": shlex.join(self.command), "module": str(self.path)}


def cache_root() -> Path:
    """Where builds, calibrations and the tuning database live ($SPCONV_CACHE_DIR)."""
    env = os.environ.get("SPCONV_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sparseconv-harness"


def default_cache_dir() -> Path:
    return cache_root() / "kernels"


@functools.lru_cache(maxsize=None)
def compiler_version(compiler: str) -> str:
    path = shutil.which(compiler)
    if path is None:
        raise BuildError(f"compiler '{compiler}' not found on PATH; install it or set "
                         "'compiler' in the profile")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"compiler '{compiler}' could not be run: {exc}") from None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else compiler


def _sources() -> list[Path]:
    src = kernel_dir()
    files = sorted(src.glob("*.c")) + sorted(src.glob("*.h")) + sorted(src.glob("*.def"))
    if not (src / API_HEADER).exists():
        raise BuildError(f"kernel sources not found in {src}")
    return files


def _cflags(target: BuildTarget, extra: tuple[str, ...]) -> tuple[str, ...]:
    return (*target.cflags, *isa(target.isa).defines(), "-fopenmp", "-fPIC", *extra)


def build_key(target: BuildTarget, extra: tuple[str, ...] = ()) -> str:
    """The hash naming the build of ``target``: sources, flags, compiler, Python ABI, cffi."""
    h = hashlib.sha256()
    for path in _sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update("\0".join(_cflags(target, extra)).encode())
    h.update(compiler_version(target.profile.compiler).encode())
    h.update((sys.implementation.cache_tag + str(sysconfig.get_config_var("EXT_SUFFIX"))).encode())
    h.update(cffi.__version__.encode())
    return h.hexdigest()[:20]


def _make_ffi(module: str) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef((kernel_dir() / API_HEADER).read_text())
    ffi.set_source(module, f'#include "{API_HEADER}"')
    return ffi


def _run_compiler(command: tuple[str, ...], target: BuildTarget) -> None:
    """Run one compiler command; its first error line as a BuildError if it fails."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise BuildError(f"compiling the kernels for {target.profile.name} timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        message = (errors or lines or [f"exit status {proc.returncode}"])[0]
        raise BuildError(f"compiling the kernels for profile {target.profile.name} failed: "
                         f"{message.strip()}")


def _compile(target: BuildTarget, extra: tuple[str, ...], module: str, dest: Path) -> tuple[str, ...]:
    """Compile the kernels into ``dest``; the compiler call that builds them in one step, as
    recorded (the build runs it file by file, in parallel: the register tiles' files take
    most of the time)."""
    compiler = shutil.which(target.profile.compiler)
    ffi = _make_ffi(module)
    writable_dir(dest.parent, "kernel builds (set $SPCONV_CACHE_DIR to another directory)")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        wrapper = Path(tmp) / f"{module}.c"
        with contextlib.redirect_stdout(io.StringIO()):  # cffi announces the file
            ffi.emit_c_code(str(wrapper))
        out = Path(tmp) / dest.name
        flags = _cflags(target, extra)
        includes = (f"-I{sysconfig.get_paths()['include']}", f"-I{kernel_dir()}")
        sources = [wrapper, *(p for p in _sources() if p.suffix == ".c")]
        objects = [Path(tmp) / f"{i}-{src.stem}.o" for i, src in enumerate(sources)]
        jobs = [(compiler, *flags, *includes, "-c", str(src), "-o", str(obj))
                for src, obj in zip(sources, objects)]
        from harness.machine.cpus import allowed_cpus  # it keeps its cache beside the builds
        # the process's CPUs, not the calling thread's (OpenMP binds it to one at its first
        # parallel region), and a platform without affinity compiles on every CPU
        workers = max(1, min(len(jobs), len(allowed_cpus())))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda job: _run_compiler(job, target), jobs))  # the first error raises
        _run_compiler((compiler, *flags, "-shared", *map(str, objects), "-o", str(out), "-lm"),
                      target)
        if not out.is_file() or out.stat().st_size == 0:
            raise BuildError(f"compiler {target.profile.compiler!r} of profile "
                             f"{target.profile.name} exited without writing the kernels; is it "
                             "a C compiler?")
        os.replace(out, dest)  # atomic: a concurrent loader sees the old file or the new one
    # Recorded as it would be run in place, not in the vanished temporary directory.
    return (compiler, *flags, "-shared", *includes, str(wrapper), *map(str, sources[1:]),
            "-o", str(dest), "-lm")


_loaded: dict[str, BuiltKernels] = {}


def build(target: BuildTarget, *, extra_cflags: tuple[str, ...] = (),
          cache_dir: Path | None = None) -> BuiltKernels:
    """Return the kernels compiled for ``target``, compiling only if no cached build exists."""
    version = compiler_version(target.profile.compiler)
    key = build_key(target, extra_cflags)
    if key in _loaded:
        return _loaded[key]
    module = f"_spconv_{key}"
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = cache / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    command_file = dest.with_suffix(".cmd")
    compiled = False
    if dest.exists() and command_file.exists():
        command = tuple(shlex.split(command_file.read_text()))
    else:
        command = _compile(target, extra_cflags, module, dest)
        atomic_write_text(command_file, shlex.join(command))
        compiled = True
    try:
        spec = importlib.util.spec_from_file_location(
            module, dest, loader=importlib.machinery.ExtensionFileLoader(module, str(dest)))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except ImportError as exc:
        raise BuildError(f"built kernels at {dest} could not be loaded: {exc}") from None
    built = BuiltKernels(mod.lib, mod.ffi, dest, key, command, compiled, target.isa,
                         target.emulated, version)
    _loaded[key] = built
    return built


@functools.lru_cache(maxsize=1)
def host_kernels() -> BuiltKernels:
    """The kernels built for this host's own profile: what the Python API uses by default."""
    return build(build_target(load_profile(HOST_PROFILE)))


def float_ptr(built: BuiltKernels, a: np.ndarray):
    return built.ffi.from_buffer("float[]", a)


def int_ptr(built: BuiltKernels, a: np.ndarray):
    return built.ffi.from_buffer("int[]", a)


def aligned_zeros(count: int, alignment: int) -> np.ndarray:
    """Zeroed float32 array whose data starts on an ``alignment``-byte boundary."""
    raw = np.zeros(count + alignment // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % alignment) // 4
    return raw[skip:skip + count]

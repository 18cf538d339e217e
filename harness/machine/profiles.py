"""Architecture profiles: YAML files describing a machine, loaded into a validated dataclass.

A profile names the instruction set the kernels are compiled for, the machine's size and the
numbers the performance model needs. Fields set to ``auto`` are detected on the host (the
``host.yaml`` profile). Every problem is reported as one line naming the file and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ProfileError, UnsupportedISAError
from harness.machine.hostinfo import HostInfo, detect_host
from harness.machine.isa import isa_table
from harness.resources import profile_dir

AUTO = "auto"
PROFILE_DIR = profile_dir()
HOST_PROFILE = PROFILE_DIR / "host.yaml"


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship with the tool (``host``, ``xeon_e5_2697v4``, ...)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name_or_path: str | Path | None) -> Path:
    """A profile given as a path, or as the name of a shipped profile; default the host's."""
    if name_or_path is None:
        return HOST_PROFILE
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or len(path.parts) > 1:
        return path
    shipped = PROFILE_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    raise ProfileError(f"--profile: no profile file {name_or_path!r} and no shipped profile of "
                       f"that name (shipped: {', '.join(shipped_profiles())})")


@dataclass(frozen=True)
class Fallback:
    """Same-width code a profile may be built with when the host lacks some of its features."""

    cflags: tuple[str, ...]
    required_features: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    isa: str
    simd_width_fp32: int
    sockets: int
    cores: int
    threads_per_core: int
    clock_ghz: float | None
    caches_kib: dict[str, int]
    peak_sgemm_gflops: float | None
    stream_gbps: float | None
    compiler: str
    cflags: tuple[str, ...]
    required_features: tuple[str, ...]
    alpha: float | None
    beta: float
    fallback: Fallback | None = None
    blas_coretype: str | None = None  # OPENBLAS_CORETYPE for this machine (default: the ISA's)
    path: str = ""
    detected: tuple[str, ...] = ()  # fields filled in from the host

    @property
    def is_host(self) -> bool:
        """Whether the profile describes the machine it runs on (its ISA is detected)."""
        return "isa" in self.detected

    @property
    def total_cores(self) -> int:
        return self.sockets * self.cores

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BuildTarget:
    """What a profile compiles to on a given host: its flags, and whether they emulate it."""

    profile: Profile
    isa: str
    cflags: tuple[str, ...]
    emulated: bool
    note: str = ""


class _Fields:
    """Typed access to a mapping read from YAML, raising one-line errors naming the field."""

    def __init__(self, data: dict, source: str, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def fail(self, key: str, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: field '{self.prefix}{key}': {message}")

    def raw(self, key: str, required: bool = True, default: Any = None) -> Any:
        if key not in self.data:
            if required:
                raise self.fail(key, "missing")
            return default
        return self.data[key]

    def string(self, key: str, required: bool = True, default: str = "") -> str:
        value = self.raw(key, required, default)
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def number(self, key: str, *, integer: bool = False, required: bool = True,
               nullable: bool = False, maximum: float = 1e9, allow_zero: bool = False):
        value = self.raw(key, required, None)
        if value is None and (nullable or not required):
            return None
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integer and not isinstance(value, int)):
            raise self.fail(key, f"must be {kind}, got {value!r}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise self.fail(key, f"must be a positive {'integer' if integer else 'finite number'}, got {value!r}")
        if value > maximum:
            raise self.fail(key, f"{value!r} is implausibly large (at most {maximum:g})")
        return value

    def string_list(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self.raw(key, required, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(map(str, self.data)) - allowed)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


_TOP_KEYS = {
    "name", "description", "isa", "simd_width_fp32", "sockets", "cores", "threads_per_core",
    "clock_ghz", "caches_kib", "peak_sgemm_gflops", "stream_gbps", "compiler", "cflags",
    "required_features", "fallback", "model", "blas_coretype",
}


def _read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile file not found") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ProfileError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping of fields")
    return data


def _caches(f: _Fields, host: HostInfo, detected: list[str]) -> dict[str, int]:
    value = f.raw("caches_kib")
    if value == AUTO:
        detected.append("caches_kib")
        return dict(host.caches_kib)
    if not isinstance(value, dict) or not value:
        raise f.fail("caches_kib", f"must be a mapping like {{l1d: 32, l2: 256}} or 'auto', got {value!r}")
    sub = _Fields(value, f.source, "caches_kib.")
    sub.check_keys({"l1d", "l2", "l3", "mcdram"})
    return {k: sub.number(k, integer=True, maximum=1 << 30) for k in value}


def _fallback(f: _Fields, isa: str) -> Fallback | None:
    value = f.raw("fallback", required=False)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise f.fail("fallback", f"must be a mapping, got {value!r}")
    sub = _Fields(value, f.source, "fallback.")
    sub.check_keys({"cflags", "required_features", "note"})
    features = sub.string_list("required_features")
    needed = isa_table()[isa].features
    if not set(needed) <= set(features):
        raise sub.fail("required_features", f"a fallback must keep the {isa} width: "
                       f"include {', '.join(needed)}")
    return Fallback(sub.string_list("cflags"), features, sub.string("note"))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Compiler options that run other programs or load code: a profile is trusted like a
# Makefile's flags, but not to that extent unless the user says so (--trust-profile).
_UNSAFE_NAMES = {"-o", "-include", "-imacros", "-save-temps", "-no-integrated-cpp", "-dumpdir",
                 "-dumpbase", "--sysroot", "-Xassembler", "-Xlinker", "-Xpreprocessor"}
_UNSAFE_PREFIXES = ("@", "-B", "-wrapper", "-fplugin", "-specs", "--specs", "-iplugindir",
                    "-Wl,", "-Wa,", "-Wp,")


def _name(f: _Fields) -> str:
    """The profile's name: it names run directories, so it must stay one plain path part."""
    name = f.string("name")
    if not _NAME.fullmatch(name):
        raise f.fail("name", f"must be letters, digits, '.', '_' or '-' (at most 64, not "
                             f"starting with '.' or '-'), got {name!r}")
    return name


def unsafe_flags(cflags) -> list[str]:
    """The flags of ``cflags`` that could run a program or load code at build time."""
    return [flag for flag in cflags
            if flag.split("=", 1)[0] in _UNSAFE_NAMES or flag.startswith(_UNSAFE_PREFIXES)]


def load_profile(path: str | Path, host: HostInfo | None = None) -> Profile:
    """Read and validate a profile; ``auto`` fields are filled from ``host`` (detected)."""
    path = Path(path)
    source = str(path)
    data = _read_yaml(path)
    f = _Fields(data, source)
    f.check_keys(_TOP_KEYS)
    host = host or detect_host()
    detected: list[str] = []

    isa = f.raw("isa")
    if isa == AUTO:
        isa = host.best_isa()
        detected.append("isa")
    table = isa_table()
    if isa not in table:
        raise f.fail("isa", f"unknown ISA {isa!r} (known: {', '.join(table)}, auto)")
    lanes = table[isa].lanes

    def maybe_auto(key: str, detect, **kw):
        if f.raw(key, required=True) == AUTO:
            detected.append(key)
            return detect()
        return f.number(key, **kw)

    width = maybe_auto("simd_width_fp32", lambda: lanes, integer=True, maximum=64)
    if width != lanes:
        raise f.fail("simd_width_fp32", f"{isa} has {lanes} fp32 lanes, not {width}")
    cores = maybe_auto("cores", lambda: host.physical_cores, integer=True, maximum=4096)
    tpc = maybe_auto("threads_per_core",
                     lambda: max(1, host.logical_cpus // max(1, host.physical_cores)),
                     integer=True, maximum=16)
    clock = maybe_auto("clock_ghz", lambda: round(host.max_mhz / 1000, 3) if host.max_mhz else None,
                       maximum=10, nullable=True)

    model = f.raw("model", required=False, default={}) or {}
    if not isinstance(model, dict):
        raise f.fail("model", f"must be a mapping with alpha and beta, got {model!r}")
    mf = _Fields(model, source, "model.")
    mf.check_keys({"alpha", "beta"})
    beta = mf.number("beta", required=False, maximum=100)

    required = f.string_list("required_features", required=False) or table[isa].features
    cflags = f.string_list("cflags")
    return Profile(
        name=_name(f),
        description=f.string("description", required=False),
        isa=isa,
        simd_width_fp32=width,
        sockets=f.number("sockets", integer=True, maximum=64),
        cores=cores,
        threads_per_core=tpc,
        clock_ghz=clock,
        caches_kib=_caches(f, host, detected),
        peak_sgemm_gflops=f.number("peak_sgemm_gflops", nullable=True, maximum=1e7),
        stream_gbps=f.number("stream_gbps", nullable=True, maximum=1e5),
        compiler=f.string("compiler"),
        cflags=cflags,
        required_features=tuple(required),
        alpha=mf.number("alpha", required=False, maximum=1000),
        beta=2.0 if beta is None else beta,
        fallback=_fallback(f, isa),
        blas_coretype=f.string("blas_coretype", required=False) or None,
        path=source,
        detected=tuple(detected),
    )


def not_reproduced(profile: Profile, host: HostInfo) -> list[str]:
    """The parts of a machine that a sweep of ``profile`` on ``host`` does not reproduce: only
    its instruction set is (and threads within its cores); none for the host's own profile."""
    if profile.is_host:
        return []
    parts = []
    if profile.total_cores * profile.threads_per_core != host.logical_cpus:
        parts.append("cores")
    if any(profile.caches_kib.get(level) != size for level, size in host.caches_kib.items()
           if level in profile.caches_kib) or set(profile.caches_kib) != set(host.caches_kib):
        parts.append("caches")
    host_ghz = (host.max_mhz or 0) / 1000
    if not profile.clock_ghz or not host_ghz or abs(profile.clock_ghz - host_ghz) > 0.05 * host_ghz:
        parts.append("clock")
    parts.append("memory")  # bandwidth and latency are the host's
    return parts


def build_target(profile: Profile, host: HostInfo | None = None, *,
                 trust_flags: bool = False) -> BuildTarget:
    """Decide how ``profile`` is compiled on ``host``, refusing what the host cannot execute,
    and compiler flags that run programs or load code unless ``trust_flags``.

    This runs before any kernel is built or loaded, so a missing ISA is a clear error and never
    an illegal-instruction crash.
    """
    if not trust_flags:
        flags = [*profile.cflags, *(profile.fallback.cflags if profile.fallback else ())]
        bad = unsafe_flags(flags)
        if bad:
            raise ProfileError(f"{profile.path or profile.name}: compiler flag {bad[0]!r} can run "
                               "programs or load code; pass --trust-profile if you trust this "
                               "profile like a Makefile")
    host = host or detect_host()
    missing = [feat for feat in profile.required_features if feat not in host.features]
    if not missing:
        return BuildTarget(profile, profile.isa, profile.cflags, emulated=False)
    fb = profile.fallback
    if fb is not None and all(feat in host.features for feat in fb.required_features):
        return BuildTarget(profile, profile.isa, fb.cflags, emulated=True,
                           note=f"emulated: host lacks {', '.join(missing)}; {fb.note}")
    raise UnsupportedISAError(
        f"{profile.path or profile.name}: this host ({host.cpu_model}) cannot execute the "
        f"profile's {profile.isa} code: it lacks CPU features {', '.join(missing)}")

import subprocess

import numpy as np
import pytest

from harness.machine import build as build_mod
from harness.errors import BuildError, UnsupportedISAError
from harness.machine.profiles import PROFILE_DIR, build_target, load_profile

PROFILES = sorted(PROFILE_DIR.glob("*.yaml"))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "_loaded", {})
    return tmp_path / "cache"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_builds_or_is_refused(path, fresh_cache, monkeypatch):
    try:
        target = build_target(load_profile(path))
    except UnsupportedISAError as exc:
        assert "cannot execute" in str(exc)
        return
    built = build_mod.build(target, cache_dir=fresh_cache)
    assert built.compiled and built.path.exists()
    assert built.lib.spconv_vector_floats() == target.profile.simd_width_fp32
    x = np.arange(37, dtype=np.float32)
    y = np.ones(37, dtype=np.float32)
    built.lib.spconv_axpy(37, 2.0, built.ffi.from_buffer("float[]", x),
                          built.ffi.from_buffer("float[]", y))
    np.testing.assert_array_equal(y, 1 + 2 * x)
    assert "-fopenmp" in built.command and built.lib.spconv_openmp_enabled() == 1

    # A second build, even in a new process (in-memory cache cleared), never compiles.
    monkeypatch.setattr(build_mod, "_loaded", {})
    real_run = subprocess.run

    def no_compiler(cmd, *a, **kw):
        assert "-shared" not in cmd, "the compiler was invoked for a cached build"
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(build_mod.subprocess, "run", no_compiler)
    again = build_mod.build(target, cache_dir=fresh_cache)
    assert not again.compiled and again.key == built.key and again.command == built.command


def test_changed_flags_rebuild(fresh_cache):
    target = build_target(load_profile(PROFILE_DIR / "host.yaml"))
    a = build_mod.build(target, cache_dir=fresh_cache)
    b = build_mod.build(target, cache_dir=fresh_cache, extra_cflags=("-DSPCONV_UNUSED=1",))
    assert a.key != b.key and b.compiled


def test_rejected_flag_is_one_line(fresh_cache):
    target = build_target(load_profile(PROFILE_DIR / "host.yaml"))
    bad = build_mod.BuildTarget(target.profile, target.isa, (*target.cflags, "-fno-such-flag"),
                                False)
    with pytest.raises(BuildError) as info:
        build_mod.build(bad, cache_dir=fresh_cache)
    assert "no-such-flag" in str(info.value) and "\n" not in str(info.value)


def test_missing_compiler(fresh_cache):
    import dataclasses
    target = build_target(load_profile(PROFILE_DIR / "host.yaml"))
    profile = dataclasses.replace(target.profile, compiler="no-such-cc-4711")
    with pytest.raises(BuildError, match="not found"):
        build_mod.build(dataclasses.replace(target, profile=profile), cache_dir=fresh_cache)

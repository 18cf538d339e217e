from pathlib import Path

import pytest

from harness.errors import ProfileError, UnsupportedISAError
from harness.machine.hostinfo import HostInfo, detect_host
from harness.machine.profiles import PROFILE_DIR, build_target, load_profile

BAD = sorted((Path(__file__).parents[1] / "data" / "bad_profiles").glob("*.yaml"))
SHIPPED = sorted(PROFILE_DIR.glob("*.yaml"))


def fake_host(*features):
    return HostInfo("Test CPU", 4, 8, frozenset(features), {"l1d": 32, "l2": 512}, 3000.0)


def test_ships_the_paper_machines_and_host():
    names = {p.stem for p in SHIPPED}
    assert {"atom_c2750", "xeon_e5_2697v4", "xeon_phi_7250", "host"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profiles_load(path):
    p = load_profile(path)
    assert p.cores >= 1 and p.simd_width_fp32 in (4, 8, 16) and p.cflags


def test_paper_numbers():
    bdw = load_profile(PROFILE_DIR / "xeon_e5_2697v4.yaml")
    assert (bdw.isa, bdw.cores, bdw.peak_sgemm_gflops, bdw.stream_gbps, bdw.alpha) == \
        ("avx2", 18, 2150, 122, 3.0)
    atom = load_profile(PROFILE_DIR / "atom_c2750.yaml")
    assert (atom.isa, atom.cores, atom.peak_sgemm_gflops, atom.alpha) == ("sse4.2", 8, 62, 1.2)
    knl = load_profile(PROFILE_DIR / "xeon_phi_7250.yaml")
    assert (knl.simd_width_fp32, knl.cores, knl.stream_gbps) == (16, 68, 480)


def test_host_profile_is_detected():
    host = fake_host("sse4_2", "avx2", "fma")
    p = load_profile(PROFILE_DIR / "host.yaml", host=host)
    assert (p.isa, p.simd_width_fp32, p.cores, p.threads_per_core) == ("avx2", 8, 4, 2)
    assert p.caches_kib == {"l1d": 32, "l2": 512} and "isa" in p.detected


def test_real_host_detection():
    host = detect_host()
    assert host.physical_cores >= 1 and host.logical_cpus >= host.physical_cores
    assert host.cpu_model


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_malformed_profiles_give_one_line(path):
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_isa_refused_without_avx512():
    knl = load_profile(PROFILE_DIR / "xeon_phi_7250.yaml", host=fake_host("avx2", "fma"))
    with pytest.raises(UnsupportedISAError, match="avx512f"):
        build_target(knl, host=fake_host("sse4_2", "avx2", "fma"))


def test_knl_falls_back_on_other_avx512_cpus():
    host = fake_host("sse4_2", "avx2", "fma", "avx512f", "avx512cd", "avx512bw")
    target = build_target(load_profile(PROFILE_DIR / "xeon_phi_7250.yaml", host=host), host=host)
    assert target.emulated and "avx512er" in target.note and "-mtune=knl" in target.cflags


def test_knl_native_on_knl():
    host = fake_host("avx2", "fma", "avx512f", "avx512cd", "avx512er", "avx512pf")
    target = build_target(load_profile(PROFILE_DIR / "xeon_phi_7250.yaml", host=host), host=host)
    assert not target.emulated and "-march=knl" in target.cflags


def test_broadwell_refused_on_sse_only_host():
    host = fake_host("sse4_2")
    with pytest.raises(UnsupportedISAError, match="avx2"):
        build_target(load_profile(PROFILE_DIR / "xeon_e5_2697v4.yaml", host=host), host=host)

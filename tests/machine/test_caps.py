"""A profile below the host's instruction set holds the dense libraries to its level."""

from harness.machine.caps import dense_caps, onednn_level, openblas_level
from harness.machine.hostinfo import HostInfo
from harness.machine.profiles import PROFILE_DIR, build_target, load_profile, not_reproduced


def host_with(*features):
    return HostInfo("Test CPU", 2, 4, frozenset(features), {"l1d": 32, "l2": 512}, 3000.0)


AVX512_HOST = host_with("avx512f", "avx2", "fma", "sse4_2")
AVX2_HOST = host_with("avx2", "fma", "sse4_2")


def caps_for(profile_file, host):
    profile = load_profile(PROFILE_DIR / profile_file, host=host)
    return dense_caps(build_target(profile, host=host), host)


def test_caps_follow_the_profile_level_below_the_host():
    assert caps_for("xeon_e5_2697v4.yaml", AVX512_HOST).env == {
        "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
    assert not caps_for("xeon_e5_2697v4.yaml", AVX2_HOST).active  # the host's own level
    atom = caps_for("atom_c2750.yaml", AVX2_HOST)
    assert atom.env == {"ONEDNN_MAX_CPU_ISA": "SSE41", "OPENBLAS_CORETYPE": "Atom"}
    assert not caps_for("host.yaml", AVX512_HOST).active


def test_library_reports_map_to_levels():
    assert onednn_level("Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions") == "avx512"
    assert onednn_level("Intel AVX2") == "avx2" and onednn_level("Intel SSE4.1") == "sse4.2"
    # PyTorch 2.13's oneDNN on a Xeon with AVX-512 FP16 names AVX-512's successor
    assert onednn_level("Intel AVX 10.1") == "avx512"
    assert onednn_level("Intel AVX10.2/512 with AMX") == "avx512"
    assert onednn_level("Intel AVX10.1/256") == "avx2"
    assert onednn_level("Intel AVX") == "sse4.2"
    assert openblas_level("Haswell") == "avx2" and openblas_level("Zen") == "avx2"
    assert openblas_level("Nehalem") == "sse4.2" and openblas_level("SkylakeX") == "avx512"
    assert openblas_level("SomethingNew") is None


def test_a_projection_names_what_it_does_not_reproduce():
    host = AVX2_HOST
    assert not_reproduced(load_profile(PROFILE_DIR / "host.yaml", host=host), host) == []
    parts = not_reproduced(load_profile(PROFILE_DIR / "atom_c2750.yaml", host=host), host)
    assert parts == ["cores", "caches", "clock", "memory"]


def test_the_blas_of_numpy_is_the_one_reported_even_beside_scipys():
    import numpy
    import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS, listed before numpy's)
    from pathlib import Path

    from harness.machine.blas import numpy_blas
    lib = numpy_blas()
    home = Path(numpy.__file__).resolve().parent
    path = Path(lib["filepath"]).resolve()
    assert path.is_relative_to(home) or path.parent.name.startswith("numpy")

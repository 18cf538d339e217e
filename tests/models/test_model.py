import pytest

from harness.errors import HarnessError
from harness.conv.layers import network_layers
from harness.models.paper import LayerCost, PaperModel
from harness.machine.profiles import PROFILE_DIR, load_profile

ALEXNET = {l.name: l for l in network_layers("alexnet")}


@pytest.fixture(scope="module")
def broadwell():
    return PaperModel(load_profile(PROFILE_DIR / "xeon_e5_2697v4.yaml"))


@pytest.fixture(scope="module")
def atom():
    return PaperModel(load_profile(PROFILE_DIR / "atom_c2750.yaml"))


def test_layer_flops_match_the_paper():
    for name, mflop in {"conv1": 210.8, "conv2": 447.9, "conv3": 299.0, "conv4": 224.3,
                        "conv5": 149.5}.items():
        assert LayerCost.of(ALEXNET[name]).flops / 1e6 == pytest.approx(mflop, abs=0.1)


@pytest.mark.parametrize("name", ["conv2", "conv3", "conv4", "conv5"])
def test_compute_bound_speedups_at_9_percent(name, broadwell, atom):
    assert round(broadwell.speedup(ALEXNET[name], 0.91), 2) == 3.70
    assert round(atom.speedup(ALEXNET[name], 0.91), 2) == 9.26


@pytest.mark.parametrize("name, x_u", [("conv2", 0.0139), ("conv3", 0.0099),
                                       ("conv4", 0.0158), ("conv5", 0.0197)])
def test_upper_bounds_on_broadwell(name, x_u, broadwell):
    assert broadwell.upper_density(ALEXNET[name]) == pytest.approx(x_u, rel=5e-3)
    low, high = broadwell.sweet_spot(ALEXNET[name])
    assert low == pytest.approx(1 - 1 / 3) and high == pytest.approx(1 - x_u, abs=1e-4)


def test_memory_bound_past_the_upper_bound(broadwell):
    layer = ALEXNET["conv5"]
    x_u = broadwell.upper_density(layer)
    # Beyond x_u the memory term dominates: the speedup flattens.
    assert broadwell.speedup(layer, 1 - x_u / 4) < 1.6 * broadwell.speedup(layer, 1 - x_u)
    assert broadwell.speedup(layer, 0.5) < 1  # dense wins below the lower bound


def test_missing_alpha_is_clear():
    knl = load_profile(PROFILE_DIR / "xeon_phi_7250.yaml")
    with pytest.raises(HarnessError, match="alpha"):
        PaperModel(knl)
    assert PaperModel(knl, alpha=3.0).speedup(ALEXNET["conv3"], 0.91) == pytest.approx(3.70, abs=5e-3)

"""Every convolution method against the float64 reference on randomised shapes."""

import numpy as np
import pytest

from harness import kernels
from harness.machine.build import build, host_kernels
from harness.conv.convspec import ConvSpec
from harness.errors import HarnessError, ShapeError
from harness.kernels.base import RELU6
from harness.machine.hostinfo import detect_host
from harness.machine.isa import isa_table
from harness.machine.profiles import HOST_PROFILE, BuildTarget, load_profile
from harness.conv.sparsity import (block_pruned_weights, direct_layout, random_sparse_weights,
                                   support_group)
from harness.conv.weights import block_group
from harness.conv.verify import expected_output, verify

# Methods for every geometry (pointwise_sparse, for 1x1 layers only, has tests of its own).
GENERAL = ConvSpec.from_shapes((1, 4, 9, 9), (4, 2, 3, 3), 2, 1, 1, 2)
METHODS = [m for m in kernels.available_methods()
           if m != "reference" and kernels.METHODS[m].applies(GENERAL)]


def random_case(rng):
    """A random convolution covering odd sizes, 1x1 to 11x11 kernels, strides 1-4, dilation,
    groups and batches up to 4."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cg = int(rng.integers(1, 6))
    mg = int(rng.integers(1, 7))
    kh, kw = (int(rng.choice([1, 2, 3, 5, 7, 11])) for _ in range(2))
    stride = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
    h = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]) + int(rng.integers(0, 23))
    w = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]) + int(rng.integers(0, 23))
    batch = int(rng.integers(1, 5))
    return dict(input_shape=(batch, groups * cg, h, w), weight_shape=(groups * mg, cg, kh, kw),
                stride=stride, padding=padding, dilation=dilation, groups=groups)


def check_method(method, case, sparsity, rng, *, relu, threads, bias=True, pattern="random",
                 relu_max=None, **options):
    x = rng.standard_normal(case["input_shape"]).astype(np.float32)
    w = (random_sparse_weights(case["weight_shape"], sparsity, rng) if pattern == "random" else
         block_pruned_weights(case["weight_shape"], sparsity, rng, block_group(pattern)))
    b = rng.standard_normal(case["weight_shape"][0]).astype(np.float32) if bias else None
    conv = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], **conv)
    expected = expected_output(x, w, b, spec, relu, relu_max)
    k = kernels.prepare(w, b, input_shape=case["input_shape"], relu=relu, relu_max=relu_max,
                        method=method, threads=threads, **conv, **options)
    for _ in range(2):  # twice: workspaces reused across calls must not leak state
        out = np.full(spec.output_shape, np.nan, dtype=np.float32)  # poisoned
        k(x, out=out)
        verdict = verify(out, expected)
        assert verdict.ok, (method, case, sparsity, verdict)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_match_reference(method, seed):
    rng = np.random.default_rng(1000 + seed)
    case = random_case(rng)
    sparsity = float(rng.choice([0.0, 0.3, 0.7, 0.9, 0.99, 0.999999]))
    check_method(method, case, sparsity, rng, relu=bool(seed % 2), threads=1 + seed % 2,
                 bias=seed % 3 != 0)


@pytest.mark.parametrize("seed", range(12))
def test_aligned_layout_matches_reference(seed):
    """The shifted-copy layout (stride 1) on random shapes, dilations and plans."""
    rng = np.random.default_rng(2000 + seed)
    case = random_case(rng)
    case["stride"] = (1, 1)
    plan = kernels.DirectPlan(int(rng.integers(1, 9)), int(rng.integers(1, 9)),
                              int(rng.integers(1, 9)), aligned=True, tiles_outer=seed % 3 == 0,
                              shared_padding=seed % 4 < 2)
    check_method("direct_sparse", case, float(rng.choice([0.0, 0.5, 0.9])), rng,
                 relu=bool(seed % 2), threads=1 + seed % 2, plan=plan)


@pytest.fixture(scope="module", params=sorted(isa_table()))
def isa_build(request):
    """The kernels compiled for each instruction-set code path this host can execute (the
    host profile's flags, one SPCONV_ISA_* path each), not only the host's best one."""
    isa = request.param
    if not detect_host().has(*isa_table()[isa].features):
        pytest.skip(f"this host cannot execute {isa} code")
    return build(BuildTarget(load_profile(HOST_PROFILE), isa, ("-O2", "-march=native"), False))


@pytest.mark.parametrize("seed", range(6))
def test_every_isa_path_matches_reference(isa_build, seed):
    rng = np.random.default_rng(3000 + seed)
    case = random_case(rng)
    if seed % 2 == 0:
        case["stride"] = (1, 1)  # the shifted-copy layout
    vector = isa_build.lib.spconv_vector_floats()
    plan = kernels.DirectPlan(int(rng.integers(1, isa_build.lib.spconv_max_tile_vectors() + 1)),
                              int(rng.integers(1, 9)), int(rng.integers(1, 9)),
                              aligned=seed % 2 == 0, tiles_outer=seed % 3 == 0,
                              shared_padding=seed == 1)
    sparsity = float(rng.choice([0.3, 0.9]))
    check_method("direct_sparse", case, sparsity, rng, relu=bool(seed % 2), threads=1 + seed % 2,
                 kernels=isa_build, plan=plan)
    check_method("lowered_sparse", case, sparsity, rng, relu=False, threads=1, kernels=isa_build)
    group = (2, 4)[seed % 2]
    grouped = _grouped_plan(rng, group, isa_build.lib.spconv_max_group_tile(group),
                            aligned=seed % 2 == 0, tiles_outer=seed % 3 == 0)
    check_method("direct_sparse", case, sparsity, rng, relu=True, threads=1, kernels=isa_build,
                 plan=grouped, pattern=f"block:{group}")
    assert vector == {"avx512": 16, "avx2": 8}.get(isa_build.isa, 4)


@pytest.mark.parametrize("seed", range(16))
def test_banded_plans_match_reference(seed):
    """Bands of output rows on random shapes, strides, dilations and both layouts: each band
    pads only its input rows, zeroing rows beyond the image that an earlier band filled."""
    rng = np.random.default_rng(4000 + seed)
    case = random_case(rng)
    if seed % 2:
        case["stride"] = (1, 1)
    out_rows = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], case["stride"],
                                    case["padding"], case["dilation"], case["groups"]).out_height
    plan = kernels.DirectPlan(int(rng.integers(1, 9)), int(rng.integers(1, 9)),
                              int(rng.integers(1, 9)), aligned=seed % 2 == 1,
                              tiles_outer=seed % 3 == 0,
                              band_rows=int(rng.integers(1, max(2, out_rows))))
    check_method("direct_sparse", case, float(rng.choice([0.0, 0.5, 0.9])), rng,
                 relu=bool(seed % 2), threads=1 + seed % 2, plan=plan)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("width", [1, 7, 15, 16, 17, 33])
def test_widths_around_vector_length(method, width, rng):
    case = dict(input_shape=(2, 4, 5, width), weight_shape=(6, 4, 3, 3), stride=1,
                padding=1, dilation=1, groups=1)
    check_method(method, case, 0.5, rng, relu=False, threads=2)


@pytest.mark.parametrize("width", [1, 7, 15, 16, 17, 32, 33])
@pytest.mark.parametrize("kernel, pad, dilation", [(3, 1, 1), (5, 2, 1), (3, 0, 1), (3, 3, 2)])
def test_aligned_widths_around_vector_length(isa_build, width, kernel, pad, dilation, rng):
    """Shifted copies' rows are only as wide as the output row (in whole vectors): output
    rows ending on, before and after a vector boundary, padded rows wider than them."""
    span = dilation * (kernel - 1) + 1
    if width + 2 * pad < span:
        width = span - 2 * pad
    case = dict(input_shape=(1, 3, 6, width), weight_shape=(4, 3, kernel, kernel), stride=1,
                padding=pad, dilation=dilation, groups=1)
    for tile in (1, 3):
        check_method("direct_sparse", case, 0.3, rng, relu=False, threads=1, kernels=isa_build,
                     plan=kernels.DirectPlan(tile, 2, 2, aligned=True))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("size, stride", [(14, 1), (14, 2), (13, 1)])
def test_planes_padded_against_set_aliasing(isa_build, aligned, size, stride, rng):
    """Planes of a multiple of four cache lines (14x14 at stride 1) get a row more, which
    the kernel pads and never reads; others (13x13, and the phase planes of stride 2) keep
    their rows."""
    spec = ConvSpec.from_shapes((1, 8, size, size), (8, 8, 3, 3), stride, 1, 1, 1)
    layout = direct_layout(spec, aligned, isa_table()[isa_build.isa].lanes, 4)
    assert (4 * layout.plane_h * layout.plane_w) % 256 != 0 or stride == 2
    assert (layout.plane_h * stride > spec.padded_h) == (size == 14 and stride == 1)
    case = dict(input_shape=(2, 8, size, size), weight_shape=(8, 8, 3, 3), stride=stride,
                padding=1, dilation=1, groups=1)
    for tile, outer in ((3, False), (7, True)):
        check_method("direct_sparse", case, 0.5, rng, relu=True, threads=2, kernels=isa_build,
                     plan=kernels.DirectPlan(tile, 4, 4, aligned=aligned, tiles_outer=outer))


@pytest.mark.parametrize("width, pad", [(w, p) for w in (1, 2, 31, 32, 33, 34, 65)
                                         for p in (0, 1, 3) if w + 2 * p >= 3])
def test_stride_two_widths_around_vector_length(width, pad, rng):
    """The stride-2 padding splits rows into column phases a vector pair at a time: rows
    ending on, before and after a vector boundary, from either phase."""
    case = dict(input_shape=(1, 3, 4, width), weight_shape=(5, 3, 3, 3), stride=2,
                padding=pad, dilation=1, groups=1)
    check_method("direct_sparse", case, 0.3, rng, relu=False, threads=1)


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_weights_give_bias(method, rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = np.zeros((5, 3, 3, 3), dtype=np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    out = kernels.conv2d(x, w, b, padding=1, method=method)
    np.testing.assert_array_equal(out, np.broadcast_to(b[None, :, None, None], out.shape))


@pytest.mark.parametrize("method", METHODS)
def test_alexnet_conv3_shape_dense_and_sparse(method, rng):
    for sparsity in (0.0, 0.9):
        case = dict(input_shape=(1, 256, 13, 13), weight_shape=(384, 256, 3, 3), stride=1,
                    padding=1, dilation=1, groups=1)
        check_method(method, case, sparsity, rng, relu=True, threads=2)


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch(method, rng):
    w = random_sparse_weights((4, 3, 3, 3), 0.5, rng)
    out = kernels.conv2d(np.zeros((0, 3, 8, 8), np.float32), w, method=method)
    assert out.shape == (0, 4, 6, 6)


def test_direct_plan_variants_agree(rng):
    case = dict(input_shape=(2, 12, 14, 15), weight_shape=(10, 12, 3, 3), stride=1,
                padding=1, dilation=1, groups=1)
    x = rng.standard_normal(case["input_shape"]).astype(np.float32)
    w = random_sparse_weights(case["weight_shape"], 0.8, rng)
    ref = kernels.conv2d(x, w, padding=1, method="reference")
    for plan in (kernels.DirectPlan(1, 1, 1), kernels.DirectPlan(3, 4, 5),
                 kernels.DirectPlan(8, 100, 100), kernels.DirectPlan(2, 3, 4, aligned=True),
                 kernels.DirectPlan(8, 16, 100, aligned=True), kernels.DirectPlan(1, 3, 5, False, True),
                 kernels.DirectPlan(2, 100, 4, aligned=True, tiles_outer=True),
                 kernels.DirectPlan(3, 4, 5, shared_padding=True),
                 kernels.DirectPlan(2, 3, 4, aligned=True, tiles_outer=True, shared_padding=True),
                 kernels.DirectPlan(3, 4, 5, band_rows=4),
                 kernels.DirectPlan(2, 3, 4, aligned=True, tiles_outer=True, band_rows=5)):
        for threads in (1, 2):
            out = kernels.conv2d(x, w, padding=1, plan=plan, threads=threads)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(groups=2), "groups=2 must divide"),
    (dict(stride=0), "stride must be positive"),
    (dict(padding=-1), "padding must be non-negative"),
    (dict(method="magic"), "unknown method"),
    (dict(threads=0), "threads must be a positive integer"),
    (dict(plan=dict(tile_vectors=2, out_channel_block=2, channel_block=2, shared_padding=True,
                    band_rows=3)), "shared padding pads whole images"),
    (dict(plan=dict(tile_vectors=2, out_channel_block=2, channel_block=2, band_rows=-1)),
     "band_rows non-negative"),
    (dict(plan=dict(tile_vectors=99, out_channel_block=2, channel_block=2)), "tile_vectors must"),
    (dict(plan=dict(tile_vectors=2, out_channel_block=2, channel_block=2, aligned="yes")),
     "plan field aligned must be bool"),
])
def test_bad_parameters_are_clear_errors(kwargs, message, rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(HarnessError, match=message):
        if isinstance(kwargs.get("plan"), dict):  # the plan itself may be what is refused
            kwargs = {**kwargs, "plan": kernels.DirectPlan(**kwargs["plan"])}
        kernels.conv2d(x, w, **kwargs)


def test_bad_arrays_are_clear_errors(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ShapeError, match="float32"):
        kernels.conv2d(x.astype(np.float64), w)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        kernels.conv2d(x[:, :, :2, :2], w)
    with pytest.raises(ShapeError, match="input channels per group"):
        kernels.conv2d(x, w[:, :2])
    bad = w.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ShapeError, match="NaN"):
        kernels.conv2d(x, bad)
    k = kernels.prepare(w, input_shape=x.shape)
    with pytest.raises(ShapeError, match="shape"):
        k(np.zeros((2, 3, 8, 8), np.float32))


def test_nan_input_propagates_only_where_read(rng):
    """NaN policy: non-finite inputs propagate through non-zero weights like a dense conv."""
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 3, 3] = np.nan
    w = np.zeros((1, 2, 1, 1), np.float32)
    w[0, 0] = 1.0
    out = kernels.conv2d(x, w)
    assert np.isnan(out[0, 0, 3, 3]) and np.isfinite(np.delete(out.ravel(), 3 * 6 + 3)).all()


def test_compiled_code_paths_agree_with_the_isa_table(isa_build):
    """The lanes and tile of each code path come from kernels_c/isa.def, and simd.h checks its
    vector type against them at compile time; the built module reports what it got."""
    row = isa_table()[isa_build.isa]
    lib = isa_build.lib
    assert isa_build.ffi.string(lib.spconv_isa()).decode() == row.name
    assert lib.spconv_vector_floats() == row.lanes
    assert lib.spconv_max_tile_vectors() == row.max_tile


def test_plan_fields_match_the_c_struct():
    """DirectPlan and spconv_plan are checked against each other when a build is first used:
    a field added on one side only is refused."""
    from types import SimpleNamespace

    from harness.errors import BuildError
    from harness.kernels.direct_plan import check_plan_struct
    from harness.machine.build import host_kernels
    check_plan_struct(host_kernels())  # the real pair agrees
    real = host_kernels().ffi.typeof("spconv_plan").fields
    fake_ffi = SimpleNamespace(typeof=lambda name: SimpleNamespace(fields=real[:-1]))
    with pytest.raises(BuildError, match="spconv_plan"):
        check_plan_struct(SimpleNamespace(key="a-build-missing-a-field", ffi=fake_ffi))


def test_tuner_axes_are_the_plan_fields():
    import dataclasses

    from harness.machine.build import host_kernels
    from harness.sweep.tuning import AXES, plan_space
    spec = kernels.ConvSpec.from_shapes((1, 8, 9, 9), (8, 8, 3, 3), 1, 1, 1, 1)
    names = {f.name for f in dataclasses.fields(kernels.DirectPlan)}
    assert set(AXES) == names
    assert set(plan_space(spec, host_kernels(), 1, 1 << 20).values) == names


def test_a_registered_native_plugin_gets_the_sweeps_build(monkeypatch):
    """A plugin method is first-class: declaring native=True gives it the sweep's build, not
    the host profile's."""
    from harness.conv.layers import LayerShape
    from harness.kernels.base import PreparedConv
    from harness.sweep.plan import SweepConfig, SweepPoint
    from harness.sweep.runner import PointRunner
    seen = []

    class Probe(PreparedConv):
        method = "probe_native"
        native = True

        def __init__(self, w, bias, spec, *, relu, threads, kernels=None, **_):
            super().__init__(spec, relu=relu, threads=threads)
            seen.append(kernels)
            self.inner = kernels_module.prepare(w, input_shape=spec.input_shape,
                                                padding=spec.padding, kernels=kernels)

        def _run(self, x, out):
            self.inner(x, out=out)

    kernels_module = kernels
    monkeypatch.setitem(kernels.METHODS, Probe.method, Probe)
    profile = load_profile(HOST_PROFILE)
    target = BuildTarget(profile, "sse4.2", ("-O2",), False)  # not the host profile's build
    cfg = SweepConfig(profile=profile, target=target, host=detect_host(),
                      layers=[LayerShape("t", "l", 4, 6, 6, 4, 3, 1, 1)], sparsities=[0.5],
                      methods=[Probe.method], repeats=1, min_time=0.0, tune="off")
    row = PointRunner(cfg).run(SweepPoint(cfg.layers[0], 0.5, Probe.method, 1, 1, "random", 0))
    assert row.status == "ok", row.reason
    assert seen and seen[0].key == cfg.built.key and seen[0].isa == "sse4.2"


def _grouped_plan(rng, group, max_tile, **layout):
    return kernels.DirectPlan(int(rng.integers(1, max_tile + 1)), group * int(rng.integers(1, 4)),
                              int(rng.integers(1, 9)), out_group=group, **layout)


@pytest.mark.parametrize("seed", range(12))
def test_output_paths_match_reference(seed):
    """Both ways the sums reach the output: from the registers through the lane map (with one
    input-channel block no accumulator is touched; with several, the last block's tiles
    write), and the earlier kernel's scratch runs copied out; on random shapes, bands and
    output-channel groups, with bias and activation."""
    rng = np.random.default_rng(6000 + seed)
    case = random_case(rng)
    spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], case["stride"],
                                case["padding"], case["dilation"], case["groups"])
    group = (1, 2, 4)[seed % 3]
    one_block = seed % 2 == 0
    plan = kernels.DirectPlan(
        int(rng.integers(1, 4)), group * int(rng.integers(1, 4)),
        spec.in_channels if one_block else int(rng.integers(1, 3)),
        tiles_outer=seed % 4 < 2, out_group=group,
        band_rows=int(rng.integers(0, spec.out_height)))
    for through_scratch in (False, True):
        check_method("direct_sparse", case, float(rng.choice([0.5, 0.9, 0.999999])), rng,
                     relu=bool(seed % 2), relu_max=RELU6 if seed % 4 == 1 else None, threads=1,
                     plan=plan, through_scratch=through_scratch)


@pytest.mark.parametrize("seed", range(16))
def test_grouped_plans_match_reference(seed):
    """Output-channel groups (out_group 2 and 4) on random shapes, strides, dilations, layouts,
    bands and shared padding, with block-pattern weights and with unstructured ones (whose
    groups hold the union of their channels' supports)."""
    rng = np.random.default_rng(5000 + seed)
    case = random_case(rng)
    if seed % 2:
        case["stride"] = (1, 1)
    group = (2, 4)[seed % 2]
    spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], case["stride"],
                                case["padding"], case["dilation"], case["groups"])
    max_tile = host_kernels().lib.spconv_max_group_tile(group)
    plan = _grouped_plan(rng, group, max_tile, aligned=seed % 2 == 1,
                         tiles_outer=seed % 3 == 0, shared_padding=seed % 4 == 2,
                         band_rows=0 if seed % 4 == 2 else int(rng.integers(0, spec.out_height)))
    pattern = f"block:{group}" if seed % 3 else "random"
    check_method("direct_sparse", case, float(rng.choice([0.0, 0.5, 0.9])), rng,
                 relu=bool(seed % 2), threads=1 + seed % 2, plan=plan, pattern=pattern)


@pytest.mark.parametrize("seed", range(8))
def test_many_conv_groups_with_blocks_across_them_match_reference(seed):
    """Depthwise layers and others of many conv groups: each channel block scans only the
    output channels of the groups it holds, with blocks that straddle groups, items that span
    many groups and output-channel groups of 2 within a conv group."""
    rng = np.random.default_rng(7000 + seed)
    groups, cg = int(rng.choice([6, 8, 12])), int(rng.choice([1, 1, 2, 3]))
    mg, h = int(rng.choice([1, 2, 4])), int(rng.integers(5, 20))
    case = dict(input_shape=(1 + seed % 2, groups * cg, h, h + 3),
                weight_shape=(groups * mg, cg, 3, 3),
                stride=(1 + seed % 2, 1 + seed % 2), padding=(1, 1), dilation=(1, 1), groups=groups)
    out_group = 2 if mg % 2 == 0 and seed % 2 else 1
    plan = kernels.DirectPlan(int(rng.integers(1, 8)), out_group * int(rng.integers(1, 2 * groups)),
                              int(rng.integers(1, 2 * cg + 2)), tiles_outer=seed % 3 == 0,
                              shared_padding=seed % 4 == 1, out_group=out_group)
    check_method("direct_sparse", case, float(rng.choice([0.0, 0.5])), rng, relu=True,
                 threads=1 + seed % 2, plan=plan)


@pytest.mark.parametrize("method", [*METHODS, "pointwise_sparse"])
@pytest.mark.parametrize("relu_max", [6.0, 0.5])
def test_capped_relu_matches_reference(method, relu_max):
    """ReLU6 (fused by the C kernels and ONNX Runtime) and another cap (applied after the
    method where it cannot) on random shapes whose outputs reach past the cap."""
    fixed = [dict(input_shape=(1, 32, 9, 11), weight_shape=(24, 32, 1, 1), stride=(1, 1),
                  padding=(0, 0), dilation=(1, 1), groups=1),      # the pointwise kernel
             dict(input_shape=(2, 16, 9, 9), weight_shape=(8, 16, 3, 3), stride=(1, 1),
                  padding=(1, 1), dilation=(1, 1), groups=1)]
    for seed in range(5):
        rng = np.random.default_rng(9000 + seed)
        case = fixed[seed] if seed < len(fixed) else random_case(rng)
        spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], case["stride"],
                                    case["padding"], case["dilation"], case["groups"])
        if not kernels.METHODS[method].applies(spec):
            continue
        check_method(method, case, 0.5, rng, relu=True, relu_max=relu_max, threads=1 + seed % 2)


def test_a_cap_without_a_relu_is_refused(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for bad in (dict(relu=False, relu_max=6.0), dict(relu=True, relu_max=0.0)):
        with pytest.raises(ShapeError, match="relu_max caps a ReLU"):
            kernels.prepare(w, input_shape=(1, 3, 8, 8), **bad)


def _special_weights(kind, shape, rng):
    """Weight patterns at the edges of the grouped kernel."""
    w = np.zeros(shape, np.float32)
    if kind == "one non-zero":
        w.flat[int(rng.integers(w.size))] = 1.5
    elif kind == "dense":
        w[:] = rng.standard_normal(shape)
    elif kind == "one output channel":
        w[int(rng.integers(shape[0]))] = rng.standard_normal(shape[1:])
    elif kind == "zero blocks":  # block:4 weights with whole blocks and channels zeroed
        w[:] = block_pruned_weights(shape, 0.5, rng, 4)
        w[:4] = 0
    return w


@pytest.mark.parametrize("kind", ["all zero", "one non-zero", "dense", "one output channel",
                                  "zero blocks"])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_grouped_kernel_edge_patterns(kind, group, rng):
    case = dict(input_shape=(3, 5, 9, 11), weight_shape=(10, 5, 3, 3), stride=(1, 2),
                padding=(1, 2), dilation=(2, 1), groups=1)
    spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], case["stride"],
                                case["padding"], case["dilation"], case["groups"])
    x = rng.standard_normal(case["input_shape"]).astype(np.float32)
    w = _special_weights(kind, case["weight_shape"], rng)
    b = rng.standard_normal(10).astype(np.float32)
    plan = kernels.DirectPlan(2, 2 * group, 2, out_group=group, tiles_outer=True)
    k = kernels.prepare(w, b, input_shape=case["input_shape"], stride=case["stride"],
                        padding=case["padding"], dilation=case["dilation"], plan=plan)
    out = np.full(spec.output_shape, np.nan, np.float32)
    k(x, out=out)
    assert verify(out, expected_output(x, w, b, spec, False)).ok, kind


def test_block_patterns_run_grouped_by_default(rng):
    """prepare() finds the shared support of block-pattern weights and runs the grouped tiles
    on it; unstructured weights keep today's kernel (out_group 1)."""
    shape = (16, 8, 3, 3)
    for group in (2, 4):
        w = block_pruned_weights(shape, 0.8, rng, group)
        assert support_group(w) == group
        k = kernels.prepare(w, input_shape=(1, 8, 10, 10), padding=1)
        # the model's plan, where the session has calibrated, keeps the default's group
        assert k.plan.out_group == group and k.plan_source in ("default", "model")
        assert k.positions * group == np.count_nonzero(w)
    w = random_sparse_weights(shape, 0.8, rng)
    assert support_group(w) == 1
    assert kernels.prepare(w, input_shape=(1, 8, 10, 10), padding=1).plan.out_group == 1


def test_depthwise_weights_share_no_support_across_conv_groups(rng):
    """A depthwise layer's dense weights look like a block pattern, but each output channel
    reads its own input channel: no load is shared, so it runs as group 1. Groups of output
    channels within one conv group still count."""
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    assert support_group(w) == 4 and support_group(w, conv_groups=16) == 1
    k = kernels.prepare(w, input_shape=(1, 16, 12, 12), padding=1, groups=16)
    assert k.plan.out_group == 1
    assert support_group(np.repeat(w, 4, axis=0), conv_groups=16) == 4


@pytest.mark.parametrize("plan, message", [
    (dict(out_group=3), "out_group must be one of"),
    (dict(out_group=4, out_channel_block=6), "out_group must be one of"),
    (dict(out_group=4, tile_vectors=99), "tile_vectors must"),
])
def test_bad_grouped_plans_are_refused(plan, message, rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    with pytest.raises(HarnessError, match=message):
        fields = {"tile_vectors": 2, "out_channel_block": 4, "channel_block": 2, **plan}
        kernels.prepare(w, input_shape=(1, 3, 8, 8), plan=kernels.DirectPlan(**fields))


def test_a_grouped_tile_wider_than_the_registers_is_refused_by_the_kernel(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    built = host_kernels()
    too_wide = built.lib.spconv_max_group_tile(4) + 1
    with pytest.raises(ShapeError, match="out_group must be 1, 2 or 4, with a tile"):
        kernels.prepare(w, input_shape=(1, 3, 8, 8),
                        plan=kernels.DirectPlan(too_wide, 4, 2, out_group=4))


def test_the_models_register_tiles_match_each_build(isa_build):
    """harness.models.plan_choice knows each build's widest tile per output-channel group
    without the build (it plans from a calibration alone)."""
    from harness.models.plan_choice import group_tiles
    tiles = group_tiles(isa_build.isa, isa_build.lib.spconv_max_tile_vectors())
    assert tiles == {g: isa_build.lib.spconv_max_group_tile(g) for g in tiles}

"""The pointwise kernel (1x1 layers, input read in place or, at a stride, gathered) against the
float64 reference."""

import numpy as np
import pytest

from harness import kernels
from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import random_sparse_weights
from harness.conv.verify import expected_output, verify
from harness.errors import ShapeError
from harness.machine.build import host_kernels
from test_kernels import isa_build  # noqa: F401  (the fixture: one build per ISA path)

CHUNKS = (None, 8, 16, 24, 64)


def run(w, b, x, *, relu, threads, built=None, stride=1, **options):
    spec = ConvSpec.from_shapes(x.shape, w.shape, stride)
    k = kernels.prepare(w, b, input_shape=x.shape, relu=relu, method="pointwise_sparse",
                        threads=threads, kernels=built, stride=stride, **options)
    expected = expected_output(x, w, b, spec, relu)
    for _ in range(2):  # twice: the packed slices are reused across calls
        out = np.full(spec.output_shape, np.nan, np.float32)
        k(x, out=out)
        verdict = verify(out, expected)
        assert verdict.ok, (x.shape, w.shape, stride, options, verdict)


@pytest.mark.parametrize("seed", range(16))
def test_random_pointwise_layers_match_reference(seed):
    """Pixel counts that are not whole vectors or chunks, one to many channels, partial
    output- and input-channel blocks, batches, threads, both output paths, every density, and
    strides 1-4 (unequal ones too) over odd and even planes, both storage orders, the input
    packed or read in place."""
    rng = np.random.default_rng(seed)
    batch, c, m = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 40))
    h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    weights = random_sparse_weights((m, c, 1, 1), float(rng.choice([0, 0.5, 0.9, 0.99, 1 - 1e-9])), rng)
    bias = rng.standard_normal(m).astype(np.float32) if seed % 3 else None
    vector = host_kernels().lib.spconv_vector_floats()
    chunk = CHUNKS[seed % len(CHUNKS)]
    stride = (1, 1) if seed % 4 == 0 else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    run(weights, bias, x, relu=seed % 2 == 0, threads=1 + seed % 2, stride=stride,
        chunk=None if chunk is None else -(-chunk // vector) * vector,
        out_block=None if seed % 4 else int(rng.integers(1, m + 1)),
        channel_block=None if seed % 3 == 1 else int(rng.integers(1, c + 1)),
        through_scratch=[None, False, True][seed % 3], row_major=seed % 5 == 2,
        in_place=None if stride != (1, 1) else [None, True, False][seed // 4 % 3])


def test_every_isa_path_the_host_runs(isa_build, rng):
    x = rng.standard_normal((2, 37, 5, 7)).astype(np.float32)  # 35 pixels: a partial vector
    w = random_sparse_weights((19, 37, 1, 1), 0.8, rng)
    b = rng.standard_normal(19).astype(np.float32)
    run(w, b, x, relu=True, threads=2, built=isa_build)
    run(w, b, x, relu=True, threads=2, built=isa_build, stride=(2, 3))


def test_refuses_layers_it_does_not_run(rng):
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    for shape, conv in [((4, 4, 3, 3), {}), ((4, 4, 1, 1), {"padding": 1}),
                        ((4, 2, 1, 1), {"groups": 2})]:
        w = rng.standard_normal(shape).astype(np.float32)
        spec = ConvSpec.from_shapes(x.shape, w.shape, **conv)
        assert not kernels.METHODS["pointwise_sparse"].applies(spec)
        with pytest.raises(ShapeError, match="pointwise_sparse runs 1x1"):
            kernels.prepare(w, input_shape=x.shape, method="pointwise_sparse", **conv)


def test_non_finite_input_spreads_through_non_zero_weights_only(rng):
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    x[0, 1, 2, 3] = np.inf
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w[0, 1] = w[2, 1] = 0.0
    out = kernels.conv2d(x, w, method="pointwise_sparse")
    assert np.isfinite(out[0, [0, 2]]).all()
    assert not np.isfinite(out[0, [1, 3], 2, 3]).any()


@pytest.mark.parametrize("relu", [False, True])
def test_residual_is_added_before_the_activation(rng, relu):
    x = rng.standard_normal((2, 13, 5, 9)).astype(np.float32)
    w = random_sparse_weights((11, 13, 1, 1), 0.7, rng)
    b = rng.standard_normal(11).astype(np.float32)
    residual = rng.standard_normal((2, 11, 5, 9)).astype(np.float32)
    k = kernels.prepare(w, b, input_shape=x.shape, relu=relu, method="pointwise_sparse",
                        threads=2)
    out = np.full(k.spec.output_shape, np.nan, np.float32)
    k.run_with_residual(x, residual, out)
    plain = expected_output(x, w, b, k.spec, False)
    want = plain.value + residual
    if relu:
        want = np.maximum(want, 0)
    tolerance = 1e-5 * (plain.magnitude + np.abs(residual)) + 1e-6
    assert (np.abs(out - want) <= tolerance).all()


def test_output_tiles_match_the_scratch_row_kernel_bit_for_bit(isa_build, rng):
    """The accumulators stored straight from registers (the default) and the earlier kernel
    through a scratch row compute the same sums in the same order, residual and ReLU
    included, on every ISA path and on rows that end in a partial vector or a partial tile;
    so does the input read in place instead of packed; other input-channel blocks split the
    sums elsewhere (narrow tiles spread a block's
    non-zeros over several accumulator sets), so they agree to rounding."""
    for c, m, h, w, chunk in [(37, 19, 5, 7, None), (5, 3, 3, 3, None), (64, 33, 11, 13, 96),
                              (9, 70, 28, 28, None), (6, 5, 25, 25, 560)]:  # 560: > 1 tile
        x = rng.standard_normal((2, c, h, w)).astype(np.float32)
        x[0, 0, 0, 0] = np.nan  # NaN and -0 meet the ReLU as in the scratch kernel
        x[1, :, 0, 1] = -0.0
        weights = random_sparse_weights((m, c, 1, 1), 0.8, rng)
        b = rng.standard_normal(m).astype(np.float32)
        residual = rng.standard_normal((2, m, h, w)).astype(np.float32)
        vector = isa_build.lib.spconv_vector_floats()
        options = {} if chunk is None else {"chunk": -(-chunk // vector) * vector}
        for relu in (False, True):
            for res in (None, residual):
                outs = []
                for through_scratch, channel_block, in_place in [
                        (False, None, False), (True, None, False), (False, 4, False),
                        (True, 4, False), (False, None, True), (False, 4, True),
                        (False, 7, False)]:
                    k = kernels.prepare(weights, b, input_shape=x.shape, relu=relu,
                                        method="pointwise_sparse", threads=2, kernels=isa_build,
                                        through_scratch=through_scratch,
                                        channel_block=channel_block, in_place=in_place,
                                        **options)
                    out = np.full(k.spec.output_shape, 7.0, np.float32)
                    k.run_with_residual(x, res, out)
                    outs.append(out)
                np.testing.assert_array_equal(outs[0], outs[1])  # one block
                np.testing.assert_array_equal(outs[2], outs[3])  # blocks of 4 channels
                np.testing.assert_array_equal(outs[0], outs[4])  # read in place
                np.testing.assert_array_equal(outs[2], outs[5])
                for other in outs[2:]:
                    np.testing.assert_allclose(other, outs[0], rtol=1e-5, atol=1e-5)


def test_channel_blocks_only_where_the_slice_spills_and_a_block_pays():
    from harness.kernels.pointwise import (L1_SLICE_BYTES, MIN_BLOCK_NNZ, default_channel_block,
                                           default_out_block)
    chunk, l1d = 64, 48 * 1024
    wide = ConvSpec.from_shapes((1, 2048, 7, 7), (512, 2048, 1, 1))
    narrow = ConvSpec.from_shapes((1, 128, 28, 28), (512, 128, 1, 1))
    block = L1_SLICE_BYTES // (4 * chunk)
    assert default_channel_block(wide, chunk, l1d, 0.3) == block  # 512 KiB slice, 29 a row
    assert block * 0.1 < MIN_BLOCK_NNZ
    # too few non-zeros in an L1-sized block: equal blocks that hold enough of them
    assert default_channel_block(wide, chunk, l1d, 0.1) == 256
    assert 256 * 0.1 >= MIN_BLOCK_NNZ > 128 * 0.1
    half = ConvSpec.from_shapes((1, 1024, 14, 14), (256, 1024, 1, 1))
    assert default_channel_block(half, chunk, l1d, 0.1) == 256
    assert default_channel_block(half, chunk, l1d, 0.05) == 1024  # fewer than three would fit
    assert default_channel_block(narrow, chunk, l1d, 0.3) == 128  # 32 KiB: L1 holds it
    # a slice past one and a half L1s is blocked, one up to that is not
    mid = ConvSpec.from_shapes((1, 256, 56, 56), (64, 256, 1, 1))  # 64 KiB at chunks of 64
    assert default_channel_block(mid, chunk, 32 * 1024, 0.5) == block
    assert default_channel_block(mid, chunk, 48 * 1024, 0.5) == 256
    # with blocks, an item's scratch rows stay within a quarter of an L2
    assert default_out_block(wide, 1, chunk, block) * chunk * 4 <= 256 * 1024
    assert default_out_block(narrow, 1, chunk, 128) == 512  # one block: every channel an item


def test_output_channels_split_only_where_chunks_are_fewer_than_threads():
    from harness.kernels.pointwise import default_out_block
    seven = ConvSpec.from_shapes((1, 2048, 7, 7), (512, 2048, 1, 1))        # one chunk of 64
    fourteen = ConvSpec.from_shapes((1, 1024, 14, 14), (256, 1024, 1, 1))   # four chunks
    assert default_out_block(seven, 1, 64, 2048) == 512
    assert default_out_block(seven, 2, 64, 2048) == 256  # an item for each thread
    assert default_out_block(seven, 3, 64, 2048) == 171
    assert default_out_block(fourteen, 2, 64, 1024) == 256  # two chunks a thread: no repacking
    assert default_out_block(fourteen, 16, 64, 1024) == 64


def test_a_plane_narrower_than_a_chunk_is_one_chunk(rng):
    from harness.kernels.pointwise import MIN_CHUNK_VECTORS, default_chunk
    seven = ConvSpec.from_shapes((1, 2048, 7, 7), (512, 2048, 1, 1))
    assert default_chunk(seven, 16, 28) == 64  # four vectors, not three and a one-pixel chunk
    assert default_chunk(seven, 8, 14) == 8 * MIN_CHUNK_VECTORS  # seven vectors: chunks of 4
    assert default_chunk(ConvSpec.from_shapes((1, 2048, 14, 14), (512, 2048, 1, 1)), 16,
                         28) == 16 * MIN_CHUNK_VECTORS
    # a one-chunk 7x7 plane of 4 vectors stores from registers; a plane of one vector does not
    w = random_sparse_weights((8, 16, 1, 1), 0.5, rng)
    vector = host_kernels().lib.spconv_vector_floats()
    k = kernels.prepare(w, input_shape=(1, 16, 7, 7), method="pointwise_sparse")
    assert k.chunk == vector * -(-49 // vector)
    assert k.through_scratch == (k.chunk < 4 * vector)
    assert kernels.prepare(w, input_shape=(1, 16, 3, 3), method="pointwise_sparse").through_scratch


def test_input_read_in_place_from_any_address(rng):
    """In place, the tiles read the caller's input where it lies: at an address that is not
    a whole vector (a view one float into its buffer), and where the last chunk is packed
    because the plane is not whole vectors."""
    w = random_sparse_weights((21, 40, 1, 1), 0.9, rng)
    for h, width in [(8, 8), (7, 9)]:
        buffer = rng.standard_normal(1 + 2 * 40 * h * width).astype(np.float32)
        x = buffer[1:].reshape(2, 40, h, width)
        run(w, None, x, relu=False, threads=2, in_place=True)


def test_in_place_is_the_default_where_the_input_is_read_little(rng):
    x = np.zeros((1, 64, 14, 14), np.float32)
    sparse, dense = (random_sparse_weights((64, 64, 1, 1), s, rng) for s in (0.97, 0.5))
    assert kernels.prepare(sparse, input_shape=x.shape, method="pointwise_sparse").in_place
    assert not kernels.prepare(dense, input_shape=x.shape, method="pointwise_sparse").in_place
    strided = kernels.prepare(sparse, input_shape=x.shape, method="pointwise_sparse", stride=2)
    assert not strided.in_place
    with pytest.raises(ShapeError, match="in place at stride 1 only"):
        kernels.prepare(sparse, input_shape=x.shape, method="pointwise_sparse", stride=2,
                        in_place=True)

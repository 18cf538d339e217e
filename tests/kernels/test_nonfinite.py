"""What a NaN or Inf in the input does, method by method (the README states it).

Sparse methods store only the non-zero weights, so a non-finite input reaches exactly the
outputs that read it through a non-zero weight; every other output is what it would be with
that input at zero. Dense methods multiply by the zeros too (0 x Inf and 0 x NaN are NaN), as
torch.nn.functional.conv2d does: they spread it to every output whose window holds it."""

import numpy as np
import pytest

from harness import kernels
from harness.conv.convspec import ConvSpec
from harness.conv.reference import reference_conv

GENERAL = ConvSpec.from_shapes((1, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1)
SPARSE = [m for m in kernels.available_methods() if not kernels.METHODS[m].dense
          and m != "reference" and kernels.METHODS[m].applies(GENERAL)]
DENSE = [m for m in kernels.available_methods() if kernels.METHODS[m].dense]


def case(rng, value):
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0.0
    x[0, 1, 4, 4] = value
    spec = ConvSpec.from_shapes(x.shape, w.shape, 1, 1, 1, 1)
    at_zero = x.copy()
    at_zero[0, 1, 4, 4] = 0.0
    mark = np.zeros_like(x)
    mark[0, 1, 4, 4] = 1.0
    through_nonzero = reference_conv(mark, (w != 0).astype(np.float32), None, spec, False) > 0
    in_window = reference_conv(mark, np.ones_like(w), None, spec, False) > 0
    return x, w, reference_conv(at_zero, w, None, spec, False), through_nonzero, in_window


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", SPARSE)
def test_sparse_methods_spread_non_finite_inputs_through_non_zero_weights_only(method, value, rng):
    x, w, at_zero, reached, in_window = case(rng, value)
    assert reached.sum() < in_window.sum()  # the case tells the two policies apart
    out = kernels.conv2d(x, w, padding=1, method=method)
    assert not np.isfinite(out[reached]).any()
    np.testing.assert_allclose(out[~reached], at_zero[~reached], rtol=1e-4, atol=1e-4)
    if value == np.inf and method == "direct_sparse":  # one Inf through one weight stays Inf
        assert np.isinf(out[reached]).any()


@pytest.mark.parametrize("method", DENSE)
def test_dense_methods_spread_non_finite_inputs_like_torch(method, rng):
    x, w, at_zero, reached, in_window = case(rng, np.inf)
    out = kernels.conv2d(x, w, padding=1, method=method)
    assert not np.isfinite(out[in_window]).any()
    np.testing.assert_allclose(out[~in_window], at_zero[~in_window], rtol=1e-4, atol=1e-4)


def test_prepared_weights_are_copies(rng):
    """Changing the caller's weights after prepare() changes no method's output."""
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    tested = set()
    for size, padding in ((3, 1), (1, 0)):  # a 3x3 layer, and a 1x1 one for pointwise_sparse
        spec = ConvSpec.from_shapes(x.shape, (5, 4, size, size), 1, padding)
        for method in kernels.available_methods():
            if not kernels.METHODS[method].applies(spec):
                continue
            w = rng.standard_normal((5, 4, size, size)).astype(np.float32)
            k = kernels.prepare(w, input_shape=x.shape, padding=padding, method=method)
            before = k(x).copy()
            w *= 3.0
            np.testing.assert_array_equal(k(x), before, err_msg=method)
            tested.add(method)
    assert tested == set(kernels.available_methods())

"""Run the randomised kernel checks on a build instrumented with AddressSanitizer and
UndefinedBehaviorSanitizer. Started by test_sanitizers.py in a process that preloads the
sanitizer runtimes; exits non-zero on the first wrong output (the sanitizers abort on their
own on the first memory or UB error)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import kernels  # noqa: E402
from harness.kernels.base import RELU6  # noqa: E402
from harness.machine.build import SANITIZE_FLAGS, build  # noqa: E402
from harness.conv.convspec import ConvSpec  # noqa: E402
from harness.machine.profiles import HOST_PROFILE, build_target, load_profile  # noqa: E402
from harness.conv.sparsity import block_pruned_weights, random_sparse_weights  # noqa: E402
from harness.conv.verify import expected_output, verify  # noqa: E402
from test_kernels import random_case  # noqa: E402


def main(cache_dir: str, cases: int) -> int:
    built = build(build_target(load_profile(HOST_PROFILE)), extra_cflags=SANITIZE_FLAGS,
                  cache_dir=Path(cache_dir))
    rng = np.random.default_rng(7)
    for i in range(cases):
        case = random_case(rng)
        conv = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
        spec = ConvSpec.from_shapes(case["input_shape"], case["weight_shape"], **conv)
        x = rng.standard_normal(case["input_shape"]).astype(np.float32)
        w = random_sparse_weights(case["weight_shape"], float(rng.choice([0, 0.5, 0.9, 1 - 1e-9])), rng)
        b = rng.standard_normal(spec.out_channels).astype(np.float32)
        plans = {"direct_sparse": kernels.DirectPlan(1 + i % 5, 1 + i % 3, 1 + i % 4,
                                                     shared_padding=i % 3 == 0,
                                                     band_rows=0 if i % 3 == 0 else i % 4),
                 "direct_aligned": kernels.DirectPlan(1 + i % 7, 2, 3, aligned=True,
                                                      tiles_outer=i % 2 == 0,
                                                      shared_padding=i % 3 == 1,
                                                      band_rows=0 if i % 3 == 1 else i % 5),
                 # output-channel groups over block-pattern weights (every other case) and
                 # unstructured ones
                 "direct_grouped": kernels.DirectPlan(1 + i % 3, 4 * (1 + i % 2), 1 + i % 5,
                                                      aligned=i % 2 == 0,
                                                      tiles_outer=i % 3 == 0,
                                                      shared_padding=i % 4 == 1,
                                                      band_rows=0 if i % 4 == 1 else i % 3,
                                                      out_group=(2, 4)[i % 2])}
        grouped = block_pruned_weights(spec.weight_shape, 0.6, rng, 4) if i % 2 else w
        cap = RELU6 if i % 2 else None  # the kernels' ReLU6 on every other case
        expected = expected_output(x, w, b, spec, True, cap)
        expected_grouped = expected_output(x, grouped, b, spec, True, cap) if i % 2 else expected
        for method in ("direct_sparse", "direct_aligned", "direct_grouped", "lowered_sparse",
                       "dense_gemm"):
            options = {"plan": plans[method]} if method in plans else {}
            weights, want = ((grouped, expected_grouped) if method == "direct_grouped"
                             else (w, expected))
            k = kernels.prepare(weights, b, input_shape=spec.input_shape, relu=True,
                                relu_max=cap,
                                method="direct_sparse" if method in plans else method,
                                threads=1 + i % 2, kernels=built, **conv, **options)
            out = np.full(spec.output_shape, np.nan, np.float32)
            k(x, out=out)
            if not verify(out, want).ok:
                print(f"wrong output: {method} {case}", file=sys.stderr)
                return 1
        if not pointwise_case_ok(built, rng, i) or not max_pool_case_ok(built, rng, i):
            return 1
    print(f"sanitized kernels clean on {cases} random cases")
    return 0


def pointwise_case_ok(built, rng, i: int) -> bool:
    """A 1x1 layer through the pointwise kernel: odd pixel counts (partial vectors and chunks),
    partial output- and input-channel blocks, both output paths and storage orders, strides
    1-3 (pixels gathered), the input read in place at stride 1."""
    batch, c, m = 1 + i % 3, int(rng.integers(1, 40)), int(rng.integers(1, 30))
    x = rng.standard_normal((batch, c, int(rng.integers(1, 15)), int(rng.integers(1, 15))))
    x = x.astype(np.float32)
    w = random_sparse_weights((m, c, 1, 1), float(rng.choice([0, 0.5, 0.9])), rng)
    b = rng.standard_normal(m).astype(np.float32)
    vector = built.lib.spconv_vector_floats()
    stride = (1 + i % 3, 1 + i // 3 % 3)
    cap = RELU6 if i % 2 else None
    k = kernels.prepare(w, b, input_shape=x.shape, relu=True, relu_max=cap,
                        method="pointwise_sparse",
                        stride=stride, threads=1 + i % 2, kernels=built, chunk=vector * (1 + i % 3),
                        out_block=1 + i % 5, channel_block=1 + i % 7,
                        through_scratch=i % 4 == 3, row_major=i % 2 == 1,
                        in_place=stride == (1, 1) and i % 4 != 3)
    out = np.full(k.spec.output_shape, np.nan, np.float32)
    k(x, out=out)
    if not verify(out, expected_output(x, w, b, k.spec, True, cap)).ok:
        print(f"wrong output: pointwise_sparse {x.shape} {w.shape} stride {stride}",
              file=sys.stderr)
        return False
    return True


def max_pool_case_ok(built, rng, i: int) -> bool:
    """Max pooling (kernels_c/pool.c) of odd plane sizes, strides 1-3 and every padding it
    accepts, NaNs among the inputs, against numpy over the -inf-padded planes."""
    (kh, kw), (sh, sw) = rng.integers(1, 5, 2), rng.integers(1, 4, 2)
    ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    planes, h, w = 1 + i % 4, int(kh + rng.integers(0, 20)), int(kw + rng.integers(0, 20))
    x = rng.standard_normal((planes, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.nan
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))
    want = windows[:, ::sh, ::sw][:, :oh, :ow].max(axis=(3, 4))
    out = np.full((planes, oh, ow), np.nan, np.float32)
    ptr = lambda a: built.ffi.cast("float *", built.ffi.from_buffer(a))  # noqa: E731
    rc = built.lib.spconv_max_pool(ptr(x), planes, h, w, int(kh), int(kw), int(sh), int(sw),
                                   ph, pw, oh, ow, ptr(out), 1 + i % 2)
    if rc != 0 or not np.array_equal(out, want, equal_nan=True):
        print(f"wrong output: max pool {x.shape} k{kh}x{kw} s{sh}x{sw} p{ph}x{pw}",
              file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))

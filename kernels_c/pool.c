/* Pooling of NCHW planes between fused convolutions: max pooling, and global average
   pooling (below).

   Max pooling (padding counts as -inf, dilation 1, floor rounding): the
   semantics of torch.nn.functional.max_pool2d, NaN propagating. PyTorch's own NCHW path is
   scalar and, at ResNet's stem, costs as much as a pruned convolution stage; pooling runs
   between fused convolutions, so it is kept in this layout.

   Each output row is the maximum of kernel_h input rows (whole rows), written between
   -inf borders, then of kernel_w columns of that. Both steps are branch-free selects that
   the compiler vectorises: a comparison branch per element mispredicted on real data and
   made ResNet-50's stem pool (64 planes of 112x112) take 1.5 ms on an AMD EPYC (Zen 5),
   against 0.1 ms branch-free. */
#include <math.h>
#include <stdlib.h>

#include "spconv_api.h"

#define POOL_LINE 16  /* floats in a 64-byte cache line */

/* a, unless b is larger or NaN: NaN propagates from either side */
static inline float max_nan(float a, float b)
{
    const float m = b > a ? b : a;
    return b != b ? b : m;
}

/* dst[i] = max over k < kernel of row[i * stride + k]; stride a constant where inlined */
static inline void columns_max(float *restrict dst, const float *restrict row, int n,
                               int kernel, int stride)
{
    for (int i = 0; i < n; ++i)
        dst[i] = row[(long)i * stride];
    for (int k = 1; k < kernel; ++k)
        for (int i = 0; i < n; ++i)
            dst[i] = max_nan(dst[i], row[(long)i * stride + k]);
}

/* The same in one pass over the output, for a kernel and stride that are constants where
   inlined (3 and 2, 2 and 2: the usual pools), so that the loop over k unrolls: passes over
   the output cost more than the maxima on short rows (ResNet-50's stem pool 1.15x faster) */
static inline void columns_max_once(float *restrict dst, const float *restrict row, int n,
                                    int kernel, int stride)
{
    for (int i = 0; i < n; ++i) {
        float m = row[(long)i * stride];
        for (int k = 1; k < kernel; ++k)
            m = max_nan(m, row[(long)i * stride + k]);
        dst[i] = m;
    }
}

int spconv_max_pool(const float *input, int planes, int height, int width, int kernel_h,
                    int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w,
                    int out_height, int out_width, float *output, int threads)
{
    if (planes < 0 || height <= 0 || width <= 0 || kernel_h <= 0 || kernel_w <= 0 ||
        stride_h <= 0 || stride_w <= 0 || pad_h < 0 || pad_w < 0 || 2 * pad_h > kernel_h ||
        2 * pad_w > kernel_w || out_height <= 0 || out_width <= 0 || threads < 1 ||
        (long)(out_height - 1) * stride_h - pad_h >= height ||
        (long)(out_width - 1) * stride_w - pad_w >= width)
        return SPCONV_EGEOMETRY;
    /* the padded row: pad_w of -inf, the row's maxima, -inf to the last window's end */
    const long padded = (long)(out_width - 1) * stride_w + kernel_w > width + pad_w
                            ? (long)(out_width - 1) * stride_w + kernel_w : width + pad_w;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        /* the row's maxima start on a cache line: written at pad_w floats past one, every
           vector store of them split across two lines (ResNet-50's stem pool 1.2x slower) */
        const long lead = (pad_w + POOL_LINE - 1) / POOL_LINE * POOL_LINE;
        const long floats = (lead + padded - pad_w + POOL_LINE - 1) / POOL_LINE * POOL_LINE;
        float *base = aligned_alloc(POOL_LINE * sizeof(float), sizeof(float) * (size_t)floats);
        float *buffer = base ? base + lead - pad_w : NULL;
        if (!buffer)
            failed = 1;
        else
            for (long x = 0; x < padded; ++x)
                buffer[x] = -INFINITY;
        float *restrict row = buffer ? buffer + pad_w : NULL;
#pragma omp for schedule(static)
        for (long item = 0; item < (long)planes * out_height; ++item) {
            if (!buffer)
                continue;
            const long plane = item / out_height;
            const int oy = (int)(item % out_height);
            const float *restrict src = input + plane * height * (long)width;
            float *restrict dst = output + plane * out_height * (long)out_width +
                                  (long)oy * out_width;
            int y0 = oy * stride_h - pad_h, y1 = y0 + kernel_h;
            y0 = y0 < 0 ? 0 : y0;
            y1 = y1 > height ? height : y1;
            /* the first two rows in one pass */
            const float *first = src + (long)y0 * width, *second = first + width;
            if (y1 - y0 == 1)
                for (int x = 0; x < width; ++x)
                    row[x] = first[x];
            else
                for (int x = 0; x < width; ++x)
                    row[x] = max_nan(first[x], second[x]);
            for (int y = y0 + 2; y < y1; ++y) {
                const float *line = src + (long)y * width;
                for (int x = 0; x < width; ++x)
                    row[x] = max_nan(row[x], line[x]);
            }
            if (kernel_w == 3 && stride_w == 2)
                columns_max_once(dst, buffer, out_width, 3, 2);
            else if (kernel_w == 2 && stride_w == 2)
                columns_max_once(dst, buffer, out_width, 2, 2);
            else if (stride_w == 1)
                columns_max(dst, buffer, out_width, kernel_w, 1);
            else if (stride_w == 2)
                columns_max(dst, buffer, out_width, kernel_w, 2);
            else
                columns_max(dst, buffer, out_width, kernel_w, stride_w);
        }
        free(base);
    }
    return failed ? SPCONV_EPLAN : 0;
}

/* Each plane summed in AVG_LANES partial sums the compiler keeps in a vector register (no
   reassociation needed), then across them: PyTorch's reduction of ResNet-50's last planes
   (2048 of 7x7) took 15-30 us warm and 150 us inside the network, where its code is cold. */
#define AVG_LANES 16

int spconv_global_avg_pool(const float *input, long planes, long pixels, float *output,
                           int threads)
{
    if (planes < 0 || pixels <= 0 || threads < 1)
        return SPCONV_EGEOMETRY;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < planes; ++p) {
        const float *restrict x = input + p * pixels;
        float part[AVG_LANES] = {0.0f};
        long i = 0;
        for (; i + AVG_LANES <= pixels; i += AVG_LANES)
            for (int k = 0; k < AVG_LANES; ++k)
                part[k] += x[i + k];
        float sum = 0.0f;
        for (; i < pixels; ++i)
            sum += x[i];
        for (int k = 0; k < AVG_LANES; ++k)
            sum += part[k];
        output[p] = sum / (float)pixels;
    }
    return 0;
}

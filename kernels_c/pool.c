/* Max pooling of NCHW planes (padding counts as -inf, dilation 1, floor rounding): the
   semantics of torch.nn.functional.max_pool2d, NaN propagating. PyTorch's own NCHW path is
   scalar and, at ResNet's stem, costs as much as a pruned convolution stage; pooling runs
   between fused convolutions, so it is kept in this layout. Each output row is the maximum of
   kernel_h input rows (whole rows, vectorisable), then of kernel_w columns of that. */
#include <math.h>
#include <stdlib.h>

#include "spconv_api.h"

static inline float max_nan(float a, float b)
{
    return (a > b || a != a) ? a : b;
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
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *row = malloc(sizeof(float) * (size_t)width);
        if (!row)
            failed = 1;
#pragma omp for schedule(static)
        for (long item = 0; item < (long)planes * out_height; ++item) {
            if (!row)
                continue;
            const long plane = item / out_height;
            const int oy = (int)(item % out_height);
            const float *src = input + plane * height * (long)width;
            float *dst = output + plane * out_height * (long)out_width + (long)oy * out_width;
            int y0 = oy * stride_h - pad_h, y1 = y0 + kernel_h;
            y0 = y0 < 0 ? 0 : y0;
            y1 = y1 > height ? height : y1;
            for (int x = 0; x < width; ++x)
                row[x] = src[(long)y0 * width + x];
            for (int y = y0 + 1; y < y1; ++y)
                for (int x = 0; x < width; ++x)
                    row[x] = max_nan(src[(long)y * width + x], row[x]);
            for (int ox = 0; ox < out_width; ++ox) {
                int x0 = ox * stride_w - pad_w, x1 = x0 + kernel_w;
                x0 = x0 < 0 ? 0 : x0;
                x1 = x1 > width ? width : x1;
                float m = row[x0];
                for (int x = x0 + 1; x < x1; ++x)
                    m = max_nan(row[x], m);
                dst[ox] = m;
            }
        }
        free(row);
    }
    return failed ? SPCONV_EPLAN : 0;
}

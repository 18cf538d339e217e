/* im2col: lower one image to the dense matrix the GEMM and lowered-sparse baselines multiply. */
#include <string.h>

#include "spconv_api.h"

int spconv_im2col(const float *image, int channels, int height, int width,
                  int kernel_h, int kernel_w, int pad_h, int pad_w,
                  int stride_h, int stride_w, int dilation_h, int dilation_w,
                  int out_height, int out_width, float *cols, long row_stride, int threads)
{
    if (channels <= 0 || kernel_h <= 0 || kernel_w <= 0 || stride_h <= 0 || stride_w <= 0 ||
        dilation_h <= 0 || dilation_w <= 0 || out_height <= 0 || out_width <= 0 || threads <= 0 ||
        row_stride < (long)out_height * out_width)
        return SPCONV_EGEOMETRY;
    const long rows = (long)channels * kernel_h * kernel_w;

#pragma omp parallel for schedule(static) num_threads(threads)
    for (long k = 0; k < rows; ++k) {
        const int c = (int)(k / (kernel_h * kernel_w));
        const int r = (int)(k / kernel_w % kernel_h);
        const int s = (int)(k % kernel_w);
        const float *src = image + (long)c * height * width;
        float *dst = cols + k * row_stride;
        for (int y = 0; y < out_height; ++y) {
            const int h = y * stride_h - pad_h + r * dilation_h;
            float *row = dst + (long)y * out_width;
            if (h < 0 || h >= height) {
                memset(row, 0, sizeof(float) * out_width);
                continue;
            }
            const float *line = src + (long)h * width;
            for (int x = 0; x < out_width; ++x) {
                const int w = x * stride_w - pad_w + s * dilation_w;
                row[x] = (w >= 0 && w < width) ? line[w] : 0.0f;
            }
        }
    }
    return 0;
}

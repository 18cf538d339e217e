/* CSR x dense product for the lowered-sparse baseline (im2col, then sparse GEMM). */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spconv_api.h"
#include "simd.h"
#include "tile.h"

int spconv_csr_spmm(int rows, int n, const int *rowptr, const int *colidx,
                    const float *values, const float *dense, const float *bias, int act,
                    int tile_vectors, float *scratch, float *out, int threads)
{
    if (rows < 0 || n <= 0 || tile_vectors < 1 || tile_vectors > MAX_TILE || threads < 1)
        return SPCONV_EPLAN;
    const long npad = round_up_vec(n);

#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        float *acc = scratch + (long)omp_get_thread_num() * npad;
#else
        float *acc = scratch;
#endif
#pragma omp for schedule(dynamic, 4)
        for (int m = 0; m < rows; ++m) {
            const float b = bias ? bias[m] : 0.0f;
            for (long i = 0; i < npad; ++i) acc[i] = b;
            spconv_accumulate(acc, npad, dense, colidx + rowptr[m], values + rowptr[m],
                              rowptr[m + 1] - rowptr[m], tile_vectors);
            float *dst = out + (long)m * n;
            if (act)
                for (int i = 0; i < n; ++i) dst[i] = float_act(acc[i], act);
            else
                memcpy(dst, acc, sizeof(float) * n);
        }
    }
    return 0;
}

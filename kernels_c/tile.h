/* Register-blocked sparse accumulation shared by the direct and the lowered kernels. */
#ifndef SPCONV_TILE_H
#define SPCONV_TILE_H

/* acc[0..n) += sum_j values[j] * base[colidx[j] + 0..n), for j < nnz.
   n is a multiple of the vector length; acc is processed in register tiles of tile_vectors
   vectors, each tile streaming all nnz weights while its accumulators stay in registers. */
void spconv_accumulate(float *acc, long n, const float *base, const int *colidx,
                       const float *values, int nnz, int tile_vectors);

#endif

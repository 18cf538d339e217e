/* Register-blocked sparse accumulation shared by the direct and the lowered kernels. */
#ifndef SPCONV_TILE_H
#define SPCONV_TILE_H

/* acc[0..n) += sum_j values[j] * base[colidx[j] + 0..n), for j < nnz.
   n is a multiple of the vector length; acc is processed in register tiles of tile_vectors
   vectors, each tile streaming all nnz weights while its accumulators stay in registers. */
void spconv_accumulate(float *acc, long n, const float *base, const int *colidx,
                       const float *values, int nnz, int tile_vectors);

/* out[0..n) = act(start + sum_j values[j] * base[colidx[j] + 0..n) (+ residual[0..n))), act
   the ReLU if relu, start = partial[0..n) (sums so far, n rounded up to whole vectors) or,
   with partial NULL, bias: for any n, the accumulators go from registers to the output.
   base must be readable up to each offset + n rounded up to whole vectors (the rows of a
   packed slice are zero-filled to whole vectors); out and residual are touched only in
   [0, n). */
void spconv_accumulate_out(float *out, long n, float bias, const float *partial,
                           const float *residual, int relu, const float *base,
                           const int *colidx, const float *values, int nnz, int tile_vectors);

/* spconv_accumulate_group(), the same for output channels sharing one support, is declared
   in spconv_api.h (the benchmarks call it). */

/* The even split of a run of `vectors` vectors into register tiles: tile_count() tiles of
   nearly equal width, each at most tile_vectors wide (so the last one is not a sliver);
   tile t covers vectors [tile_start(t), tile_start(t + 1)). */
static inline long tile_count(long vectors, int tile_vectors)
{
    return (vectors + tile_vectors - 1) / tile_vectors;
}

static inline long tile_start(long vectors, long ntiles, long t)
{
    return vectors * t / ntiles;
}

#endif

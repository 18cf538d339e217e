/* Register tiles: one function per tile width, unrolled so the accumulators live in registers.
   The width is a run-time choice of the plan, dispatched through a table. */
#include "tile.h"
#include "simd.h"

typedef void (*tile_fn)(float *acc, const float *base, const int *colidx,
                        const float *values, int nnz);

#define DEFINE_TILE(T)                                                                   \
    static void tile_##T(float *acc, const float *base, const int *colidx,              \
                         const float *values, int nnz)                                   \
    {                                                                                    \
        vec_t a[T];                                                                      \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v) a[v] = vec_load(acc + v * VEC_FLOATS); \
        for (int j = 0; j < nnz; ++j) {                                                  \
            const vec_t w = vec_set1(values[j]);                                         \
            const float *p = base + colidx[j];                                           \
            _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                         \
                a[v] = vec_fma(w, vec_load(p + v * VEC_FLOATS), a[v]);                   \
        }                                                                                \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v) vec_store(acc + v * VEC_FLOATS, a[v]); \
    }

DEFINE_TILE(1) DEFINE_TILE(2) DEFINE_TILE(3) DEFINE_TILE(4)
DEFINE_TILE(5) DEFINE_TILE(6) DEFINE_TILE(7) DEFINE_TILE(8)
#if MAX_TILE >= 14
DEFINE_TILE(9) DEFINE_TILE(10) DEFINE_TILE(11) DEFINE_TILE(12) DEFINE_TILE(13) DEFINE_TILE(14)
#endif
#if MAX_TILE >= 28
DEFINE_TILE(15) DEFINE_TILE(16) DEFINE_TILE(17) DEFINE_TILE(18) DEFINE_TILE(19) DEFINE_TILE(20)
DEFINE_TILE(21) DEFINE_TILE(22) DEFINE_TILE(23) DEFINE_TILE(24) DEFINE_TILE(25) DEFINE_TILE(26)
DEFINE_TILE(27) DEFINE_TILE(28)
#endif

static const tile_fn tiles[MAX_TILE + 1] = {
    0, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6, tile_7, tile_8,
#if MAX_TILE >= 14
    tile_9, tile_10, tile_11, tile_12, tile_13, tile_14,
#endif
#if MAX_TILE >= 28
    tile_15, tile_16, tile_17, tile_18, tile_19, tile_20, tile_21, tile_22, tile_23, tile_24,
    tile_25, tile_26, tile_27, tile_28,
#endif
};

void spconv_accumulate(float *acc, long n, const float *base, const int *colidx,
                       const float *values, int nnz, int tile_vectors)
{
    const long vectors = n / VEC_FLOATS;
    long v = 0;
    if (nnz <= 0 || vectors <= 0)
        return;
    if (vectors <= tile_vectors) {  /* one tile: skip the divisions of the even split */
        tiles[vectors](acc, base, colidx, values, nnz);
        return;
    }
    const long ntiles = tile_count(vectors, tile_vectors);
    for (long t = 0; t < ntiles; ++t) {
        const long end = tile_start(vectors, ntiles, t + 1);
        const int width = (int)(end - v);
        tiles[width](acc + v * VEC_FLOATS, base + v * VEC_FLOATS, colidx, values, nnz);
        v = end;
    }
}

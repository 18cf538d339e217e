/* Output tiles: as the tiles of tile.c, but the accumulators start at the bias (or at the sums
   of earlier channel blocks) and go from registers straight to the output, the residual added
   and the activation applied on the way: no accumulator row is initialised, stored and copied
   out (for a layer with few non-zeros per output channel those round trips cost as many loads
   as the products). A file of their own, sharing tile.c's inner loop (tile_products.h), so
   that a build compiles the two in parallel. */
#include "spconv_api.h"
#include "simd.h"
#include "tile.h"
#include "tile_products.h"

/* out[0..n) = act(x + residual), n below one vector for the last one of a row. */
static inline void store_output(float *out, long n, vec_t x, const float *residual, int act)
{
    if (n >= VEC_FLOATS) {
        if (residual)
            x = vec_add(x, vec_load(residual));
        vec_store(out, vec_act(x, act));
        return;
    }
#if defined(SPCONV_ISA_AVX512)
    const __mmask16 m = (__mmask16)((1u << n) - 1);
    if (residual)
        x = vec_add(x, _mm512_maskz_loadu_ps(m, residual));
    _mm512_mask_storeu_ps(out, m, vec_act(x, act));
#else
    float t[VEC_FLOATS];
    vec_store(t, x);
    for (long i = 0; i < n; ++i) {
        const float y = residual ? t[i] + residual[i] : t[i];
        out[i] = float_act(y, act);
    }
#endif
}

/* Row k of r, one tile of T vectors at column `first` (of `valid` floats). */
#define OUT_TILE(T, r, k, first, valid)                                                   \
    {                                                                                     \
        const spconv_sparse_row row_ = spconv_row(&(r)->sparse, (k), 1);                 \
        const int *colidx = row_.colidx;                                                  \
        const float *values = row_.values;                                                \
        const int nnz = row_.npos;                                                        \
        const float *base = (r)->sparse.base + (first);                                   \
        const float *partial =                                                            \
            (r)->partial ? (r)->partial + (k) * (r)->partial_stride + (first) : 0;        \
        const float *residual =                                                           \
            (r)->residual ? (r)->residual + (k) * (r)->out_stride + (first) : 0;          \
        float *out = (r)->out + (k) * (r)->out_stride + (first);                          \
        const vec_t bias = vec_set1((r)->bias ? (r)->bias[k] : 0.0f);                     \
        vec_t a[T];                                                                       \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                              \
            a[v] = partial ? vec_load(partial + v * VEC_FLOATS) : bias;                   \
        ACCUMULATE_PRODUCTS(T, a)                                                         \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                              \
            store_output(out + v * VEC_FLOATS, (valid) - (long)v * VEC_FLOATS, a[v],      \
                         residual ? residual + v * VEC_FLOATS : 0, (r)->act);            \
    }

/* Row k's output just past this chunk (the next chunk's), prefetched for writing. */
static inline void prefetch_next_output(const spconv_out_rows *r, long k)
{
    float *next = r->out + k * r->out_stride + r->valid;
    for (long i = 0; i < r->prefetch; i += 16)
        __builtin_prefetch(next + i, 1);
}

typedef void (*out_tile_fn)(const spconv_out_rows *r, long k, long first, long valid);

/* One tile of one row (rows wider than one tile). */
#define DEFINE_OUT_TILE(T)                                                                \
    static void out_tile_##T(const spconv_out_rows *r, long k, long first, long valid)    \
        OUT_TILE(T, r, k, first, valid)
#define OUT_TILE_ENTRY(T) out_tile_##T,

/* Every row, one tile each (rows of at most T vectors): the loop over rows inside. */
#define DEFINE_OUT_ROWS(T)                                                                \
    static void out_rows_##T(const spconv_out_rows *r)                                    \
    {                                                                                     \
        for (long k = 0; k < r->sparse.rows; ++k) {                                       \
            prefetch_next_output(r, k);                                                   \
            OUT_TILE(T, r, k, 0, r->valid)                                                \
        }                                                                                 \
    }
#define OUT_ROWS_ENTRY(T) out_rows_##T,

TILE_WIDTHS(DEFINE_OUT_TILE)
TILE_WIDTHS(DEFINE_OUT_ROWS)

static const out_tile_fn out_tiles[MAX_TILE + 1] = {0, TILE_WIDTHS(OUT_TILE_ENTRY)};
static void (*const out_rows[MAX_TILE + 1])(const spconv_out_rows *) = {
    0, TILE_WIDTHS(OUT_ROWS_ENTRY)};

void spconv_accumulate_out_rows(const spconv_out_rows *r, int tile_vectors)
{
    const long vectors = (r->valid + VEC_FLOATS - 1) / VEC_FLOATS;
    if (vectors <= 0 || r->sparse.rows <= 0)
        return;
    if (vectors <= tile_vectors) {
        out_rows[vectors](r);
        return;
    }
    for (long k = 0; k < r->sparse.rows; ++k) {
        prefetch_next_output(r, k);
        tile_walk walk = tile_walk_begin(vectors, tile_vectors);
        for (long t = 0, v = 0; t < walk.ntiles; ++t) {
            const long end = tile_walk_next(&walk);
            const long first = v * VEC_FLOATS;
            const long last = end * VEC_FLOATS < r->valid ? end * VEC_FLOATS : r->valid;
            out_tiles[end - v](r, k, first, last - first);
            v = end;
        }
    }
}

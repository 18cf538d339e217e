/* The inner loop the register tiles of tile.c and out_tile.c share, and the list of tile
   widths this build has: private to those two files (compiled apart, so that a build compiles
   them in parallel). */
#ifndef SPCONV_TILE_PRODUCTS_H
#define SPCONV_TILE_PRODUCTS_H

#include "simd.h"

/* A tile of T vectors has T chains of FMAs, and every non-zero adds one FMA to each: a chain
   waits the FMA latency (about 4 cycles) between its steps, so with fewer than CHAINS chains
   the latency binds, not the loads (a 7x7 plane is a tile of 4 AVX-512 vectors). Narrow tiles
   therefore spread the non-zeros over SETS(T) sets of accumulators, position j into set
   j % SETS(T) (the last, partial round into the first set), summed into the first at the end. */
#define CHAINS 8
#define SETS(T) ((T) >= CHAINS ? 1 : (CHAINS + (T) - 1) / (T))

/* One non-zero's products into the accumulator set x. */
#define ADD_PRODUCTS(T, x, j)                                                            \
    {                                                                                    \
        const vec_t w_ = vec_set1(values[j]);                                            \
        const float *p_ = base + colidx[j];                                              \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                             \
            x[v] = vec_fma(w_, vec_load(p_ + v * VEC_FLOATS), x[v]);                     \
    }

/* a[0..T) += values[j] * base[colidx[j] + 0..T vectors), for j < nnz: the loop every tile
   runs between setting its accumulators up and storing them. */
#define ACCUMULATE_PRODUCTS(T, a)                                                        \
    {                                                                                    \
        enum { S_ = SETS(T) };                                                           \
        vec_t more_[S_ > 1 ? S_ - 1 : 1][T];                                             \
        int j = 0;                                                                       \
        if (S_ > 1) {                                                                    \
            _Pragma("GCC unroll 8") for (int k = 0; k < S_ - 1; ++k)                     \
                _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                     \
                    more_[k][v] = vec_set1(0.0f);                                        \
            for (; j + S_ <= nnz; j += S_) {                                             \
                ADD_PRODUCTS(T, a, j)                                                    \
                _Pragma("GCC unroll 8") for (int k = 0; k < S_ - 1; ++k)                 \
                    ADD_PRODUCTS(T, more_[k], j + 1 + k)                                 \
            }                                                                            \
        }                                                                                \
        for (; j < nnz; ++j)                                                             \
            ADD_PRODUCTS(T, a, j)                                                        \
        if (S_ > 1)                                                                      \
            _Pragma("GCC unroll 8") for (int k = 0; k < S_ - 1; ++k)                     \
                _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v)                     \
                    a[v] = vec_add(a[v], more_[k][v]);                                   \
    }

/* The tile widths this build has (up to MAX_TILE), as an X-macro list: X(T) for each. */
#define TILE_WIDTHS_8(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)
#define TILE_WIDTHS_14(X) X(9) X(10) X(11) X(12) X(13) X(14)
#define TILE_WIDTHS_28(X) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) \
    X(25) X(26) X(27) X(28)
#if MAX_TILE >= 28
#define TILE_WIDTHS(X) TILE_WIDTHS_8(X) TILE_WIDTHS_14(X) TILE_WIDTHS_28(X)
#elif MAX_TILE >= 14
#define TILE_WIDTHS(X) TILE_WIDTHS_8(X) TILE_WIDTHS_14(X)
#else
#define TILE_WIDTHS(X) TILE_WIDTHS_8(X)
#endif

#endif

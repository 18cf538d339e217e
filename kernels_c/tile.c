/* Register tiles: one function per tile width, unrolled so the accumulators live in registers.
   The width is a run-time choice of the plan, dispatched through a table. */
#include "spconv_api.h"
#include "simd.h"
#include "tile.h"
#include "tile_products.h"

/* The ends of one tile: where its group's sums start and where they go (spconv_acc_rows's
   choices for one row, the pointers at the tile's first vector). */
typedef struct {
    float *acc;
    long acc_stride;           /* between the group's channels */
    int from_bias;
    const float *bias;         /* the group's first channel's, or NULL */
    const spconv_lane *lanes;  /* NULL: the sums go back to acc */
    float *out;
    long out_stride;
    int act;
    long channels;             /* channels of the group that exist (with from_bias or lanes) */
} tile_io;

static inline vec_t io_start(const tile_io *io, int g, int v)
{
    if (!io->from_bias)
        return vec_load(io->acc + g * io->acc_stride + (long)v * VEC_FLOATS);
    return vec_set1(io->bias && g < io->channels ? io->bias[g] : 0.0f);
}

static inline void io_end(const tile_io *io, int g, int v, vec_t x)
{
    if (!io->lanes) {
        vec_store(io->acc + g * io->acc_stride + (long)v * VEC_FLOATS, x);
    } else if (g < io->channels) {
        const spconv_lane *l = &io->lanes[v];
        vec_store_lanes(io->out + g * io->out_stride + l->offset, vec_act(x, io->act), l->mask,
                        l->perm, l->count);
    }
}

/* The same ends for the tile `v` vectors further along the run. */
static inline tile_io io_at(const tile_io *io, long v)
{
    tile_io t = *io;
    t.acc += v * VEC_FLOATS;
    if (t.lanes)
        t.lanes += v;
    return t;
}

/* Row k's ends (its group's first channel is k * group). */
static inline tile_io row_io(const spconv_acc_rows *r, long k)
{
    const long c = k * r->group;
    return (tile_io){r->acc + k * r->acc_stride, r->group_stride, r->from_bias,
                     r->bias ? r->bias + c : 0, r->lanes, r->out ? r->out + c * r->out_stride : 0,
                     r->out_stride, r->act, r->channels - c};
}

typedef void (*tile_fn)(const tile_io *io, const float *base, const int *colidx,
                        const float *values, int nnz);

/* T vectors of sums from io's start, plus the products of the nnz non-zeros at colidx and
   values, to io's end. */
#define TILE_BODY(T)                                                                     \
    {                                                                                    \
        vec_t a[T];                                                                      \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v) a[v] = io_start(io, 0, v);  \
        ACCUMULATE_PRODUCTS(T, a)                                                        \
        _Pragma("GCC unroll 32") for (int v = 0; v < T; ++v) io_end(io, 0, v, a[v]);     \
    }

#define DEFINE_TILE(T)                                                                   \
    static void tile_##T(const tile_io *io, const float *base, const int *colidx,       \
                         const float *values, int nnz)                                   \
        TILE_BODY(T)

/* Every row of r in one tile of T vectors, rows without non-zeros skipped (unless their sums
   go to the output): the loop over rows inside, so a row costs the loop's step and not a
   call's (with few non-zeros a row, as at high sparsity, the calls cost as much as the
   work). */
#define DEFINE_ROWS(T)                                                                   \
    static void rows_##T(const spconv_acc_rows *r)                                       \
    {                                                                                    \
        const float *base = r->sparse.base;                                              \
        for (long k = 0; k < r->sparse.rows; ++k) {                                      \
            const spconv_sparse_row row = spconv_row(&r->sparse, k, 1);                  \
            if (row.npos <= 0 && !r->lanes)                                              \
                continue;                                                                \
            const tile_io io_ = row_io(r, k), *io = &io_;                                \
            const int *colidx = row.colidx;                                              \
            const float *values = row.values;                                            \
            const int nnz = row.npos;                                                    \
            TILE_BODY(T)                                                                 \
        }                                                                                \
    }

#define TILE_ENTRY(T) tile_##T,

#define ROWS_ENTRY(T) rows_##T,

TILE_WIDTHS(DEFINE_TILE)
TILE_WIDTHS(DEFINE_ROWS)

static const tile_fn tiles[MAX_TILE + 1] = {0, TILE_WIDTHS(TILE_ENTRY)};
static void (*const acc_rows[MAX_TILE + 1])(const spconv_acc_rows *) = {
    0, TILE_WIDTHS(ROWS_ENTRY)};

/* One output channel's run of n floats, tile by tile (the even split of tile.h). */
static void accumulate_run(const tile_io *io, long n, const float *base, const int *colidx,
                           const float *values, int nnz, int tile_vectors)
{
    const long vectors = n / VEC_FLOATS;
    long v = 0;
    if ((nnz <= 0 && !io->lanes) || vectors <= 0)
        return;
    if (vectors <= tile_vectors) {  /* one tile: skip the divisions of the even split */
        tiles[vectors](io, base, colidx, values, nnz);
        return;
    }
    tile_walk walk = tile_walk_begin(vectors, tile_vectors);
    for (long t = 0; t < walk.ntiles; ++t) {
        const long end = tile_walk_next(&walk);
        const tile_io at = io_at(io, v);
        tiles[end - v](&at, base + v * VEC_FLOATS, colidx, values, nnz);
        v = end;
    }
}

void spconv_accumulate(float *acc, long n, const float *base, const int *colidx,
                       const float *values, int nnz, int tile_vectors)
{
    const tile_io io = {.acc = acc};
    accumulate_run(&io, n, base, colidx, values, nnz, tile_vectors);
}

static void accumulate_group_run(const tile_io *io, long n, const float *base,
                                 const int *colidx, const float *values, int npos, int group,
                                 int tile_vectors);

void spconv_accumulate_rows(const spconv_acc_rows *r, int tile_vectors)
{
    const long vectors = r->n / VEC_FLOATS;
    if (vectors <= 0)
        return;
    if (r->group == 1 && vectors <= tile_vectors) {
        acc_rows[vectors](r);
        return;
    }
    for (long k = 0; k < r->sparse.rows; ++k) {
        const spconv_sparse_row row = spconv_row(&r->sparse, k, r->group);
        if (row.npos > 0 || r->lanes) {  /* a call per empty group cost 2 ns */
            const tile_io io = row_io(r, k);
            accumulate_group_run(&io, r->n, r->sparse.base, row.colidx, row.values, row.npos,
                                 r->group, tile_vectors);
        }
    }
}

/* Grouped tiles: `group` output channels that share one support, so each input vector is
   loaded once for all of them (one load per `group` FMAs instead of one per FMA). The group's
   T input vectors, its accumulators and one weight broadcast fill the registers:
   T * (group + 1) + 1 <= VEC_REGISTERS. */
typedef void (*group_tile_fn)(const tile_io *io, const float *base, const int *colidx,
                              const float *values, int npos);

#define DEFINE_GROUP_TILE(G, T)                                                          \
    static void group_tile_##G##_##T(const tile_io *io, const float *base,               \
                                     const int *colidx, const float *values, int npos)   \
    {                                                                                    \
        vec_t a[G][T];                                                                   \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < T; ++v)                         \
                a[g][v] = io_start(io, g, v);                                            \
        for (int j = 0; j < npos; ++j) {                                                 \
            const float *p = base + colidx[j];                                           \
            vec_t x[T];                                                                  \
            _Pragma("GCC unroll 16") for (int v = 0; v < T; ++v)                         \
                x[v] = vec_load(p + v * VEC_FLOATS);                                     \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) {                        \
                const vec_t w = vec_set1(values[(long)j * G + g]);                       \
                _Pragma("GCC unroll 16") for (int v = 0; v < T; ++v)                     \
                    a[g][v] = vec_fma(w, x[v], a[g][v]);                                 \
            }                                                                            \
        }                                                                                \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)                              \
            _Pragma("GCC unroll 16") for (int v = 0; v < T; ++v)                         \
                io_end(io, g, v, a[g][v]);                                               \
    }

#define GROUP_TILE_MAX(G) ((VEC_REGISTERS - 1) / ((G) + 1))

DEFINE_GROUP_TILE(2, 1) DEFINE_GROUP_TILE(2, 2) DEFINE_GROUP_TILE(2, 3)
DEFINE_GROUP_TILE(2, 4) DEFINE_GROUP_TILE(2, 5)
DEFINE_GROUP_TILE(4, 1) DEFINE_GROUP_TILE(4, 2) DEFINE_GROUP_TILE(4, 3)
#if VEC_REGISTERS >= 32
DEFINE_GROUP_TILE(2, 6) DEFINE_GROUP_TILE(2, 7) DEFINE_GROUP_TILE(2, 8)
DEFINE_GROUP_TILE(2, 9) DEFINE_GROUP_TILE(2, 10)
DEFINE_GROUP_TILE(4, 4) DEFINE_GROUP_TILE(4, 5) DEFINE_GROUP_TILE(4, 6)
#endif

static const group_tile_fn group2_tiles[GROUP_TILE_MAX(2) + 1] = {
    0, group_tile_2_1, group_tile_2_2, group_tile_2_3, group_tile_2_4, group_tile_2_5,
#if VEC_REGISTERS >= 32
    group_tile_2_6, group_tile_2_7, group_tile_2_8, group_tile_2_9, group_tile_2_10,
#endif
};
static const group_tile_fn group4_tiles[GROUP_TILE_MAX(4) + 1] = {
    0, group_tile_4_1, group_tile_4_2, group_tile_4_3,
#if VEC_REGISTERS >= 32
    group_tile_4_4, group_tile_4_5, group_tile_4_6,
#endif
};
_Static_assert(sizeof group2_tiles / sizeof *group2_tiles == GROUP_TILE_MAX(2) + 1 &&
               sizeof group4_tiles / sizeof *group4_tiles == GROUP_TILE_MAX(4) + 1,
               "a grouped tile table does not match the register count");

int spconv_max_group_tile(int group)
{
    return group == 1 ? MAX_TILE : group == 2 ? GROUP_TILE_MAX(2)
                                 : group == 4 ? GROUP_TILE_MAX(4) : 0;
}

static void accumulate_group_run(const tile_io *io, long n, const float *base,
                                 const int *colidx, const float *values, int npos, int group,
                                 int tile_vectors)
{
    const long vectors = n / VEC_FLOATS;
    if ((npos <= 0 && !io->lanes) || vectors <= 0)
        return;
    if (group == 1) {
        accumulate_run(io, n, base, colidx, values, npos, tile_vectors);
        return;
    }
    const group_tile_fn *table = group == 2 ? group2_tiles : group4_tiles;
    tile_walk walk = tile_walk_begin(vectors, tile_vectors);
    for (long t = 0, v = 0; t < walk.ntiles; ++t) {
        const long end = tile_walk_next(&walk);
        const tile_io at = io_at(io, v);
        table[end - v](&at, base + v * VEC_FLOATS, colidx, values, npos);
        v = end;
    }
}

void spconv_accumulate_group(float *acc, long acc_stride, long n, const float *base,
                             const int *colidx, const float *values, int npos, int group,
                             int tile_vectors)
{
    const tile_io io = {.acc = acc, .acc_stride = acc_stride};
    accumulate_group_run(&io, n, base, colidx, values, npos, group, tile_vectors);
}

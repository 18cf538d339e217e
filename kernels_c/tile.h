/* Register-blocked sparse accumulation shared by the direct and the lowered kernels. */
#ifndef SPCONV_TILE_H
#define SPCONV_TILE_H

/* acc[0..n) += sum_j values[j] * base[colidx[j] + 0..n), for j < nnz.
   n is a multiple of the vector length; acc is processed in register tiles of tile_vectors
   vectors, each tile streaming all nnz weights while its accumulators stay in registers. */
void spconv_accumulate(float *acc, long n, const float *base, const int *colidx,
                       const float *values, int nnz, int tile_vectors);

/* Rows of sparse weights over one input: row k's positions are [rowptr[i], rowptr[i + 1]) of
   colidx (offsets into base) and of values, for i = k * rowptr_stride (1 for consecutive
   rows; 0 repeats one row, as the calibration times it), for k < rows. */
typedef struct {
    const float *base;
    const int *rowptr;
    long rowptr_stride;
    const int *colidx;
    const float *values;
    long rows;
} spconv_sparse_rows;

/* Row k of s: its offsets, its values (per_position each) and its count of positions. */
typedef struct {
    const int *colidx;
    const float *values;
    int npos;
} spconv_sparse_row;

static inline spconv_sparse_row spconv_row(const spconv_sparse_rows *s, long k, int per_position)
{
    const int *ptr = s->rowptr + k * s->rowptr_stride;
    return (spconv_sparse_row){s->colidx + ptr[0], s->values + (long)ptr[0] * per_position,
                               ptr[1] - ptr[0]};
}

/* Where one vector of an accumulator run goes in the output: its `count` valid lanes (the set
   bits of `mask`, in lane order) to `offset` onwards, consecutive there; `perm` lists those
   lanes 3 bits each (8-lane vectors only). Lanes of junk columns are dropped. */
typedef struct {
    int offset, count;
    unsigned mask, perm;
} spconv_lane;

/* spconv_accumulate_group() for the rows of `sparse`, each a group of `group` output channels
   (1, 2 or 4) sharing one support (`group` values per position): row k's accumulators at
   acc + k * acc_stride, its channels group_stride floats apart; rows without any are skipped.
   One call runs all the rows (see spconv_accumulate_out_rows).

   The sums start from the accumulators, or with from_bias from bias[c] (0 without bias) for
   channel c = k * group + g, acc unread. With lanes they end in the output, not in acc: channel
   c's vector v through lanes[v] to out + c * out_stride, the activation act applied; rows
   without non-zeros are written too, and channels from `channels` on (a last, partial group)
   are neither read from bias nor written. */
typedef struct {
    float *acc;
    long acc_stride, n;
    int group;
    long group_stride;
    spconv_sparse_rows sparse;
    int from_bias;
    const float *bias;
    const spconv_lane *lanes;
    float *out;
    long out_stride;
    int act;
    long channels;
} spconv_acc_rows;

void spconv_accumulate_rows(const spconv_acc_rows *r, int tile_vectors);

/* Output rows m0..m1 of one pixel chunk, the rows of `sparse` (k = m - m0): row m's
   out[0..valid) = act(start + its products over base[colidx[j] + 0..valid) (+ residual)),
   act the activation r->act (SPCONV_ACT_*), start = that row of partial (sums so far, valid
   rounded up to whole vectors) or, with partial NULL, bias[m] (0 without bias): for any
   valid, the accumulators go from registers to the output. base must be readable up to each
   offset + valid rounded up to whole vectors (the rows of a packed slice are zero-filled to
   whole vectors); out and residual are touched only in [0, valid) of each row. Each row
   also prefetches, for writing, the prefetch floats after its first `valid` ones (the next
   chunk's output). One call runs all the rows, so the per-row cost is the loop's, not a
   call's (on a layer with few non-zeros per row that cost is as large as the work). */
typedef struct {
    float *out;
    long out_stride;
    long valid, prefetch;
    const float *bias;                  /* per output channel, from m0; NULL: no bias */
    const float *partial;               /* NULL, or rows partial_stride floats apart */
    long partial_stride;
    const float *residual;              /* NULL, or rows out_stride floats apart */
    int act;                            /* SPCONV_ACT_* */
    spconv_sparse_rows sparse;          /* sparse.rows = m1 - m0 */
} spconv_out_rows;

void spconv_accumulate_out_rows(const spconv_out_rows *r, int tile_vectors);

/* spconv_accumulate_group(), the same for output channels sharing one support, is declared
   in spconv_api.h (the benchmarks call it). */

/* The even split of a run of `vectors` vectors into register tiles: tile_count() tiles of
   nearly equal width, each at most tile_vectors wide (so the last one is not a sliver); tile t
   ends at floor(vectors (t + 1) / ntiles). It is walked tile by tile with two divisions per
   run rather than one per tile (a division costs as much as a few non-zeros' products in a
   short tile call): with vectors = q ntiles + r, each end is q more than the last, and one
   more whenever the running remainder r (t + 1) mod ntiles wraps. */
static inline long tile_count(long vectors, int tile_vectors)
{
    return (vectors + tile_vectors - 1) / tile_vectors;
}

typedef struct {
    long end, ntiles, q, r, carry;
} tile_walk;

static inline tile_walk tile_walk_begin(long vectors, int tile_vectors)
{
    const long ntiles = tile_count(vectors, tile_vectors);
    return (tile_walk){0, ntiles, vectors / ntiles, vectors % ntiles, 0};
}

/* The end of the next tile (its start is the previous end, 0 for the first). */
static inline long tile_walk_next(tile_walk *w)
{
    w->end += w->q;
    w->carry += w->r;
    if (w->carry >= w->ntiles) {
        w->carry -= w->ntiles;
        ++w->end;
    }
    return w->end;
}

#endif

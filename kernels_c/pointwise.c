/* Pointwise sparse convolution: a 1x1 kernel, no padding, one group. Each output pixel mixes
   the channels of one input pixel, so no padding or im2col is needed:
   out[n][m][p] = act(bias[m] + sum_j values[j] * x[n][c_j][q(p)]), q(p) = p at stride 1, else
   the input pixel at (y * stride_h, x * stride_w) for output pixel p = (y, x): a strided 1x1
   layer (a ResNet shortcut) gathers its pixels while packing, where a subsampled copy of the
   input would be written and read again.

   With a residual (same shape as the output), out = act(conv + residual): a network's
   shortcut addition and the ReLU after it, fused.

   Work items are (image, pixel chunk, block of output channels). An item packs its chunk of
   one block of input channels into one contiguous slice (channel rows lie a whole image plane
   apart, which maps them onto few L1 sets; packed, the slice stays in L1 while it is reused),
   then each output channel of the item streams its non-zeros in that block over the slice in
   register tiles; block after block, and after the last one it writes its chunk once. With
   more than one block (many input channels: every channel's slice would not fit L1) the sums
   wait in a scratch row per output channel between blocks. The last chunk is zero-filled to
   whole vectors, so no load reads past the input.

   In place (a plan choice at stride 1), a chunk of whole vectors is not packed: its tiles
   read the input where it lies. That saves a copy of the chunk, every channel of it (a
   sparse layer's items read few), at the price of those few L1 sets and, on planes that are
   not whole vectors, of loads that straddle cache lines; a last, partial chunk is packed. */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spconv_api.h"
#include "simd.h"
#include "tile.h"

/* Per thread: the packed slice of one channel block and, where sums wait between blocks or
   go through scratch rows (through_scratch), one scratch row per output channel of an item. */
static long slice_floats(const spconv_pointwise_args *a)
{
    return (long)a->channel_block * a->chunk;
}

static long rows_floats(const spconv_pointwise_args *a)
{
    const int rows = a->through_scratch || a->channel_block < a->channels;
    return rows ? (long)a->out_block * a->chunk : 0;
}

long spconv_pointwise_scratch_floats(const spconv_pointwise_args *a)
{
    return (long)a->threads * (slice_floats(a) + rows_floats(a));
}

/* dst[0..len) = src[0..len), zeros up to whole vectors: vector copies (a call to memcpy per
   row of a few vectors costs as much as the copy). */
static inline void pack_row(float *dst, const float *src, long len)
{
    const long full = len / VEC_FLOATS * VEC_FLOATS;
    for (long i = 0; i < full; i += VEC_FLOATS)
        vec_store(dst + i, vec_load(src + i));
    if (full < len) {
        long i = full;
        for (; i < len; ++i)
            dst[i] = src[i];
        for (; i < full + VEC_FLOATS; ++i)
            dst[i] = 0.0f;
    }
}

/* Prefetch the `ahead` pixels from p of channels [c0, c1): the next chunk's rows are more
   streams than the hardware prefetchers follow. */
static void prefetch_block(const spconv_pointwise_args *a, const float *x, int c0, int c1,
                           long p, long ahead)
{
    for (int c = c0; c < c1; ++c)
        for (long i = 0; i < ahead; i += 16)
            __builtin_prefetch(x + c * a->in_pixels + p + i);
}

/* Pack channels [c0, c1) of the chunk [p0, p0 + len) into the slice, each row chunk floats
   apart, prefetching the `ahead` floats of the next chunk. */
static void pack_block(const spconv_pointwise_args *a, const float *x, int c0, int c1, long p0,
                       long len, long ahead, float *slice)
{
    for (int c = c0; c < c1; ++c)
        pack_row(slice + (long)(c - c0) * a->chunk, x + c * a->in_pixels + p0, len);
    prefetch_block(a, x, c0, c1, p0 + len, ahead);
}

/* pack_block at a stride: output pixel p of the chunk gathered from input row
   (p / out_width) * stride_h, column (p % out_width) * stride_w, output row by output row. */
static void pack_block_strided(const spconv_pointwise_args *a, const float *x, int c0, int c1,
                               long p0, long len, float *slice)
{
    const long y0 = p0 / a->out_width, x0 = p0 - y0 * a->out_width;
    const long row_step = (long)a->stride_h * a->in_width;
    const int sw = a->stride_w;
    for (int c = c0; c < c1; ++c) {
        const float *plane = x + c * a->in_pixels;
        float *dst = slice + (long)(c - c0) * a->chunk;
        long i = 0, y = y0, col = x0;
        while (i < len) {
            const long n = a->out_width - col < len - i ? a->out_width - col : len - i;
            const float *src = plane + y * row_step + col * sw;
            if (sw == 2)  /* a constant stride the compiler vectorizes (ResNet's shortcuts) */
                for (long j = 0; j < n; ++j)
                    dst[i + j] = src[2 * j];
            else
                for (long j = 0; j < n; ++j)
                    dst[i + j] = src[j * sw];
            i += n, col = 0, ++y;
        }
        for (; i % VEC_FLOATS; ++i)
            dst[i] = 0.0f;
    }
}

/* The first pixel of chunk k: the plane's vectors split evenly into chunks of at most
   a->chunk floats (as tiles split a run), so that no chunk is a sliver that costs every
   non-zero a tile call of its own and leaves one thread's share of a small plane short
   (196 pixels in chunks of 64 were 64, 64, 64 and 4). */
static inline long chunk_start(long k, long vectors, long chunks, long pixels)
{
    const long p = VEC_FLOATS * (vectors * k / chunks);
    return p < pixels ? p : pixels;
}

/* One thread's share of the work items (called in a parallel region, or alone on one thread:
   a parallel region of one thread costs about 0.8 us a call, as much as a small layer's
   products). */
static void pointwise_work(const spconv_pointwise_args *a, const int *blkptr, const int *colidx,
                           const int *in_colidx, const float *values, const float *bias,
                           int act, const float *input, const float *residual, float *scratch,
                           float *output)
{
    const long pixels = a->pixels, chunk = a->chunk;
    const int strided = a->stride_h > 1 || a->stride_w > 1;
    const long vectors = (pixels + VEC_FLOATS - 1) / VEC_FLOATS;
    const long chunks = tile_count(vectors, (int)(chunk / VEC_FLOATS));
    const int blocks = (a->out_channels + a->out_block - 1) / a->out_block;
    const int cblocks = (a->channels + a->channel_block - 1) / a->channel_block;
    /* blkptr's steps from one channel block, and from one output row, to the next */
    const long block_step = a->row_major ? 1 : a->out_channels + 1;
    const long row_step = a->row_major ? cblocks + 1 : 1;
    const long per_image = (long)a->channels * a->in_pixels;
    const long out_per_image = (long)a->out_channels * pixels;
    {  /* this thread's slice and scratch rows */
#ifdef _OPENMP
        float *slice = scratch + (long)omp_get_thread_num() *
                                     (slice_floats(a) + rows_floats(a));
#else
        float *slice = scratch;
#endif
        float *rows = slice + slice_floats(a);
#pragma omp for collapse(3) schedule(static)
        for (int n = 0; n < a->batch; ++n)
            for (long k = 0; k < chunks; ++k)
                for (int b = 0; b < blocks; ++b) {
                    const float *x = input + n * per_image;
                    float *y = output + n * out_per_image;
                    const long p0 = chunk_start(k, vectors, chunks, pixels);
                    const long p1 = chunk_start(k + 1, vectors, chunks, pixels);
                    const long len = p1 - p0;
                    const long ahead = chunk_start(k + 2, vectors, chunks, pixels) - p1;
                    const long padded = (len + VEC_FLOATS - 1) / VEC_FLOATS * VEC_FLOATS;
                    const int m0 = b * a->out_block;
                    const int m1 = m0 + a->out_block < a->out_channels ? m0 + a->out_block
                                                                       : a->out_channels;
                    for (int cb = 0; cb < cblocks; ++cb) {
                        const int c0 = cb * a->channel_block;
                        const int c1 = c0 + a->channel_block < a->channels
                                           ? c0 + a->channel_block : a->channels;
                        const int last = cb == cblocks - 1;
                        /* where the non-zeros' tiles read: the input itself (a chunk of whole
                           vectors, in place), or the packed slice */
                        const float *src = slice;
                        const int *cols = colidx;
                        if (a->in_place && len == padded) {
                            src = x + (long)c0 * a->in_pixels + p0;
                            cols = in_colidx;
                            prefetch_block(a, x, c0, c1, p0 + len, ahead);
                        } else if (strided) {
                            pack_block_strided(a, x, c0, c1, p0, len, slice);
                        } else {
                            pack_block(a, x, c0, c1, p0, len, ahead, slice);
                        }
                        const int *ptr0 = blkptr + cb * block_step + m0 * row_step;
                        const float *res0 =
                            residual ? residual + n * out_per_image + (long)m0 * pixels + p0 : NULL;
                        if (last && !a->through_scratch) {
                            /* the last block's sums go from registers to the output, with the
                               next chunk's output rows prefetched for writing (a layer's output
                               is usually out of cache, and its rows are too many streams for
                               the hardware prefetchers) */
                            const spconv_out_rows r = {
                                .out = y + (long)m0 * pixels + p0, .out_stride = pixels,
                                .valid = len, .prefetch = ahead,
                                .bias = bias ? bias + m0 : NULL,
                                .partial = cb ? rows : NULL, .partial_stride = chunk,
                                .residual = res0, .act = act,
                                .sparse = {.base = src, .rowptr = ptr0,
                                           .rowptr_stride = row_step, .colidx = cols,
                                           .values = values, .rows = m1 - m0}};
                            spconv_accumulate_out_rows(&r, a->tile_vectors);
                            continue;
                        }
                        for (int m = m0; m < m1; ++m) {
                            const int *ptr = ptr0 + (m - m0) * row_step;
                            float *acc = rows + (long)(m - m0) * chunk;
                            if (cb == 0) {
                                const float b0 = bias ? bias[m] : 0.0f;
                                for (long i = 0; i < padded; ++i)
                                    acc[i] = b0;
                            }
                            spconv_accumulate(acc, padded, src, cols + ptr[0],
                                              values + ptr[0], ptr[1] - ptr[0], a->tile_vectors);
                            if (!last)
                                continue;
                            /* through the scratch row: add, activate and copy out */
                            float *dst = y + (long)m * pixels + p0;
                            const float *res = res0 ? res0 + (long)(m - m0) * pixels : NULL;
                            if (res)
                                for (long i = 0; i < len; ++i)
                                    acc[i] += res[i];
                            if (act)
                                for (long i = 0; i < len; ++i)
                                    dst[i] = float_act(acc[i], act);
                            else
                                memcpy(dst, acc, sizeof(float) * len);
                        }
                    }
                }
    }
}

int spconv_pointwise(const spconv_pointwise_args *a, const int *blkptr, const int *colidx,
                     const int *in_colidx, const float *values, const float *bias, int act,
                     const float *input, const float *residual, float *scratch, float *output)
{
    const long pixels = a->pixels, chunk = a->chunk;
    if (a->batch < 0 || a->channels <= 0 || a->out_channels <= 0 || pixels <= 0 ||
        chunk <= 0 || chunk % VEC_FLOATS || a->out_block <= 0 || a->threads < 1 ||
        a->channel_block <= 0 || a->stride_h < 1 || a->stride_w < 1 || a->out_width <= 0 ||
        pixels % a->out_width || a->in_width < (long)(a->out_width - 1) * a->stride_w + 1 ||
        a->in_pixels % a->in_width ||
        a->in_pixels / a->in_width < (pixels / a->out_width - 1) * a->stride_h + 1)
        return SPCONV_EGEOMETRY;
    const int strided = a->stride_h > 1 || a->stride_w > 1;
    if (!strided && (a->in_pixels != pixels || a->in_width != a->out_width))
        return SPCONV_EGEOMETRY;
    if (a->in_place && (strided || !in_colidx))
        return SPCONV_EPLAN;
    if (a->tile_vectors < 1 || a->tile_vectors > MAX_TILE)
        return SPCONV_EPLAN;
    if (a->threads == 1) {
        pointwise_work(a, blkptr, colidx, in_colidx, values, bias, act, input, residual, scratch,
                       output);
        return 0;
    }
#pragma omp parallel num_threads(a->threads)
    pointwise_work(a, blkptr, colidx, in_colidx, values, bias, act, input, residual, scratch,
                   output);
    return 0;
}

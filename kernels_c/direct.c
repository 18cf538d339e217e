/* Direct sparse convolution (Park et al. 2017), generalised to any stride and dilation.

   The padded input is stored split by stride phase: element (h, w) of channel c lands in
   plane (h % stride_h, w % stride_w) at row h / stride_h, column w / stride_w. A weight at
   (c, r, s) then reads, for output (y, x), phase-plane element (r*dil_h / stride_h + y,
   s*dil_w / stride_w + x): a constant offset plus y * plane_w + x. So every output channel is
   one contiguous run of out_height * plane_w values (columns past out_width are junk and never
   stored) and each non-zero is one vectorised multiply-add over that run, for any stride. With
   stride 1 this is the paper's padded-row layout.

   Aligned layout (stride 1, copies = kernel width): copy k of the input shifted left by
   k * copy_shift columns, its rows as wide as an output row rounded up to whole vectors, so a
   weight at kernel column k reads copy k at a vector-aligned offset: no load straddles two
   cache lines.

   Padding is fused with the input-channel blocking: a work item pads one block of channels
   into its thread's small buffer right before the block's non-zeros stream through it, so the
   padded copy is written and read while it sits in L1/L2, instead of a whole padded image
   (several copies of it, for the aligned layout) going out to memory and coming back.
   The price is that every work item pads its blocks afresh; with many threads on one image,
   each thread pads nearly the whole input. Shared padding (a plan choice) instead pads every
   image once, split over the threads, into one buffer that all work items then read: the
   better choice where the padded image fits the threads' caches and work items are many. */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spconv_api.h"
#include "simd.h"
#include "tile.h"

long spconv_channel_plane(const spconv_geometry *g)
{
    return (long)g->stride_h * g->stride_w * g->plane_h * g->plane_w;
}

/* Output rows per work item: a band of the image (plan.band_rows, checked to be below
   out_height), or all of it. */
static int band_rows(const spconv_geometry *g, const spconv_plan *p)
{
    return p->band_rows > 0 ? p->band_rows : g->out_height;
}

/* Outputs computed per channel for `rows` output rows, junk columns included, in whole
   vectors. */
static long rows_run_floats(const spconv_geometry *g, int rows)
{
    return round_up_vec((long)rows * g->plane_w);
}

/* The longest run: one band's. */
static long run_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return rows_run_floats(g, band_rows(g, p));
}

/* Floats of one padded block: copies x block_channels x plane. */
static long block_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return (long)g->copies * p->block_channels * spconv_channel_plane(g);
}

/* Room for one padded block: a non-zero's offset is below block_floats() and its run reads
   run_floats() past it; whole vectors keep every block aligned. */
static long block_slot_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return round_up_vec(block_floats(g, p) + run_floats(g, p) + VEC_FLOATS);
}

/* Shared padding: one image padded whole, every channel block in its own slot. */
static long image_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return (long)p->channel_blocks * block_slot_floats(g, p);
}

long spconv_padded_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return p->shared_padding ? (long)g->batch * image_floats(g, p)
                             : (long)p->threads * block_slot_floats(g, p);
}

/* Output-channel groups: a group's non-zeros are one row of the block pointers. */
static int group_count(const spconv_geometry *g, const spconv_plan *p)
{
    return (g->out_channels + p->out_group - 1) / p->out_group;
}

/* Room for the lane maps of a whole band and of the last, shorter one (spconv_lane). */
static long lanes_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return round_up_vec(2 * run_floats(g, p) / VEC_FLOATS *
                        (long)(sizeof(spconv_lane) / sizeof(float)));
}

/* The lane maps, then each thread's accumulators (sums kept between channel blocks). */
long spconv_scratch_floats(const spconv_geometry *g, const spconv_plan *p)
{
    return lanes_floats(g, p) + (long)p->threads * p->out_channel_block * run_floats(g, p);
}

int spconv_direct_check(const spconv_geometry *g, const spconv_plan *p)
{
    if (g->batch < 0 || g->channels <= 0 || g->out_channels <= 0 || g->out_height <= 0 ||
        g->out_width <= 0 || g->stride_h <= 0 || g->stride_w <= 0 || g->pad_h < 0 ||
        g->pad_w < 0 || g->groups < 0 ||
        (g->groups > 1 && (g->channels % g->groups || g->out_channels % g->groups)))
        return SPCONV_EGEOMETRY;
    if (p->band_rows < 0 || p->band_rows >= g->out_height)
        return SPCONV_EPLAN;
    /* a shifted copy's row needs only the output row's width; a phase plane the padded row's;
       a plane holds the padded image's rows, or with bands at least one band's */
    const int banded = band_rows(g, p) < g->out_height;
    if ((g->copies == 1 && (long)g->plane_w * g->stride_w < g->width + 2L * g->pad_w) ||
        (!banded && (long)g->plane_h * g->stride_h < g->height + 2L * g->pad_h) ||
        (banded && g->plane_h < band_rows(g, p)) || g->plane_w < g->out_width)
        return SPCONV_ELAYOUT;
    if (banded && p->shared_padding)
        return SPCONV_EBANDSHARED;  /* the shared buffer holds whole images */
    if (p->tile_vectors < 1 || p->tile_vectors > MAX_TILE || p->out_channel_block < 1 ||
        p->channel_blocks < 1 || p->block_channels < 1 || p->threads < 1 ||
        (long)p->channel_blocks * p->block_channels < g->channels)
        return SPCONV_EPLAN;
    if ((p->out_group != 1 && p->out_group != 2 && p->out_group != 4) ||
        p->tile_vectors > spconv_max_group_tile(p->out_group) ||
        p->out_channel_block % p->out_group)
        return SPCONV_EGROUP;
    if (g->copies < 1 || (g->copies > 1 && (g->stride_h != 1 || g->stride_w != 1 ||
                                            g->copy_shift < 1 || g->plane_w % VEC_FLOATS)))
        return SPCONV_ECOPIES;
    return SPCONV_OK;
}

/* The padded rows one work item pads: rows [first, first + rows) of the padded image land at
   rows 0.. of its buffer (of its stride phases: first is a multiple of stride_h, so the phases
   agree with the whole image's). Buffer rows outside the image are zeroed when `clear` is set
   (with bands, such a row may still hold an image row of an earlier band); otherwise they are
   left as they are (zero since the buffer was cleared). */
typedef struct {
    int first, rows, clear;
} row_window;

/* The window over the whole image (plane_h rows per row phase cover the padded image). */
static row_window whole_image(const spconv_geometry *g)
{
    const row_window win = {0, g->plane_h * g->stride_h, 0};
    return win;
}

/* The image rows [*h0, *h1) inside the window; image row h lands at buffer row
   h + pad_h - first. */
static void image_rows(const spconv_geometry *g, const row_window *win, int *h0, int *h1)
{
    const int lo = win->first - g->pad_h, hi = lo + win->rows;
    *h0 = lo > 0 ? lo : 0;
    *h1 = hi < g->height ? hi : g->height;
    if (*h1 < *h0)
        *h1 = *h0;
}

/* Zero buffer row i of one channel in every shifted copy or column phase. */
static void clear_row(const spconv_geometry *g, float *dst, long copy, int i)
{
    if (g->copies > 1) {
        for (int k = 0; k < g->copies; ++k)
            memset(dst + k * copy + (long)i * g->plane_w, 0, sizeof(float) * g->plane_w);
        return;
    }
    const long phase = (long)g->plane_h * g->plane_w;
    const int q = i % g->stride_h, r = i / g->stride_h;
    for (int c = 0; c < g->stride_w; ++c)
        memset(dst + (long)(q * g->stride_w + c) * phase + (long)r * g->plane_w, 0,
               sizeof(float) * g->plane_w);
}

/* Copy one channel of one image into its shifted copies (aligned layout), copy k starting
   k * copy floats after dst: its row h holds padded columns k * copy_shift onwards. Rows of
   padding are never written. */
#if defined(SPCONV_ISA_AVX512)
/* Each row of a copy is built whole in registers and written with aligned full-vector stores
   (zeros included): no partial or line-straddling stores. Vector v of a row of copy k holds
   input columns first + 0..15, first = v * 16 + k * copy_shift - pad_w; lanes outside the row
   are zero. */
static void pad_channel_copies(const spconv_geometry *g, const row_window *win, const float *src,
                               float *dst, long copy)
{
    int h0, h1;
    image_rows(g, win, &h0, &h1);
    const int row_vectors = g->plane_w / VEC_FLOATS;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int k = 0; k < g->copies; ++k)
        for (int v = 0; v < row_vectors; ++v) {
            const int first = v * VEC_FLOATS + k * g->copy_shift - g->pad_w;
            const int lo = first < 0 ? -first : 0;     /* lanes before the row start */
            const int hi = g->width - first < VEC_FLOATS ? g->width - first : VEC_FLOATS;
            /* image row h at buffer row h + pad_h - first */
            float *out = dst + k * copy + (long)(g->pad_h - win->first) * g->plane_w +
                         v * VEC_FLOATS;
            if (hi <= lo) {
                for (int h = h0; h < h1; ++h)
                    _mm512_store_ps(out + (long)h * g->plane_w, _mm512_setzero_ps());
                continue;
            }
            /* load the hi - lo valid elements from the row itself, then move them up lo lanes */
            const __mmask16 load = (__mmask16)((1u << (hi - lo)) - 1);
            const __mmask16 keep = (__mmask16)(load << lo);
            const __m512i from = _mm512_sub_epi32(lane, _mm512_set1_epi32(lo));
            const float *in = src + first + lo;
            for (int h = h0; h < h1; ++h) {
                __m512 x = _mm512_maskz_loadu_ps(load, in + (long)h * g->width);
                if (lo)
                    x = _mm512_maskz_permutexvar_ps(keep, from, x);
                _mm512_store_ps(out + (long)h * g->plane_w, x);
            }
        }
}
#else
static void pad_channel_copies(const spconv_geometry *g, const row_window *win, const float *src,
                               float *dst, long copy)
{
    int h0, h1;
    image_rows(g, win, &h0, &h1);
    for (int k = 0; k < g->copies; ++k) {
        const int shift = k * g->copy_shift;
        const int w0 = shift > g->pad_w ? shift - g->pad_w : 0;  /* first column kept */
        const int col = w0 + g->pad_w - shift;                    /* where it lands */
        /* the source row's rest, cut where the copy's row ends */
        const int n = g->width - w0 < g->plane_w - col ? g->width - w0 : g->plane_w - col;
        if (n <= 0)
            continue;
        for (int h = h0; h < h1; ++h)
            copy_floats(dst + k * copy + (long)(h + g->pad_h - win->first) * g->plane_w + col,
                        src + (long)h * g->width + w0, n);
    }
}
#endif

/* dst[i] = src[2 * i] for i < n: one column phase of a stride-2 row. With AVX-512, two
   vectors of the row are split by one two-source permute (a strided padding copy element by
   element took a quarter of a stride-2 ResNet layer's time; gathers were slower still). The
   loads are masked to the 2n - 1 floats read, so nothing past the row's last one is touched. */
static void copy_even_floats(float *restrict dst, const float *restrict src, int n)
{
#if defined(SPCONV_ISA_AVX512)
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    for (int i = 0; i < n; i += VEC_FLOATS) {
        const int outputs = n - i < VEC_FLOATS ? n - i : VEC_FLOATS, inputs = 2 * outputs - 1;
        const __mmask16 lo = (__mmask16)(inputs >= 16 ? 0xffffu : (1u << inputs) - 1);
        const __mmask16 hi = (__mmask16)(inputs > 16 ? (1u << (inputs - 16)) - 1 : 0u);
        const __m512 a = _mm512_maskz_loadu_ps(lo, src + 2 * i);
        const __m512 b = _mm512_maskz_loadu_ps(hi, src + 2 * i + VEC_FLOATS);
        _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << outputs) - 1),
                              _mm512_permutex2var_ps(a, even, b));
    }
#else
    for (int i = 0; i < n; ++i)
        dst[i] = src[2 * i];
#endif
}

/* even[i] = src[2 * i] for i < (n + 1) / 2 and odd[i] = src[2 * i + 1] for i < n / 2: a row of
   n floats split into its two column phases at stride 2. With AVX-512, each 32 floats are
   loaded once and split by two two-source permutes (the two phases copied one by one read
   every row twice and took three times as long as a stride-1 row copy). */
static void split_even_odd(float *restrict even, float *restrict odd, const float *restrict src,
                           int n)
{
#if defined(SPCONV_ISA_AVX512)
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16,
                                           14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (int i = 0; 2 * i < n; i += VEC_FLOATS) {
        const int inputs = n - 2 * i < 2 * VEC_FLOATS ? n - 2 * i : 2 * VEC_FLOATS;
        const __mmask16 lo = (__mmask16)(inputs >= 16 ? 0xffffu : (1u << inputs) - 1);
        const __mmask16 hi = (__mmask16)(inputs > 16 ? (1u << (inputs - 16)) - 1 : 0u);
        const __m512 a = _mm512_maskz_loadu_ps(lo, src + 2 * i);
        const __m512 b = _mm512_maskz_loadu_ps(hi, src + 2 * i + VEC_FLOATS);
        const int n_even = (inputs + 1) / 2, n_odd = inputs / 2;
        _mm512_mask_storeu_ps(even + i, (__mmask16)((1u << n_even) - 1),
                              _mm512_permutex2var_ps(a, evens, b));
        _mm512_mask_storeu_ps(odd + i, (__mmask16)((1u << n_odd) - 1),
                              _mm512_permutex2var_ps(a, odds, b));
    }
#else
    for (int i = 0; 2 * i < n; ++i) {
        even[i] = src[2 * i];
        if (2 * i + 1 < n)
            odd[i] = src[2 * i + 1];
    }
#endif
}

/* Copy the window's rows of one channel of one image into its phase planes (or its shifted
   copies, copy floats apart); see row_window for the rows outside the image. */
static void pad_channel(const spconv_geometry *g, const row_window *win, const float *src,
                        float *dst, long copy)
{
    int h0, h1;
    image_rows(g, win, &h0, &h1);
    if (win->clear)
        for (int i = 0; i < win->rows; ++i)
            if (i < h0 + g->pad_h - win->first || i >= h1 + g->pad_h - win->first)
                clear_row(g, dst, copy, i);
    if (g->copies > 1) {
        pad_channel_copies(g, win, src, dst, copy);
        return;
    }
    const int sh = g->stride_h, sw = g->stride_w;
    if (sh == 1 && sw == 1) {  /* one plane: no phases to step through per row */
        float *to = dst + (long)(h0 + g->pad_h - win->first) * g->plane_w + g->pad_w;
        for (int h = h0; h < h1; ++h, to += g->plane_w)
            copy_floats(to, src + (long)h * g->width, g->width);
        return;
    }
    /* a 1x1 kernel's taps read row (column) phase 0 only */
    const int read_sh = g->kernel_h > 1 ? sh : 1, read_sw = g->kernel_w > 1 ? sw : 1;
    const long phase = (long)g->plane_h * g->plane_w;
    /* buffer row i = h + pad_h - first lives in row phase q = i % sh at phase row r = i / sh;
       both are stepped instead of divided (short rows make divisions a real cost) */
    const int i0 = h0 + g->pad_h - win->first;
    int q = i0 % sh, r = i0 / sh;
    for (int h = h0; h < h1; ++h) {
        const float *row = src + (long)h * g->width;
        float *phase_row = dst + (long)q * sw * phase + (long)r * g->plane_w;
        if (q < read_sh && sw == 1) {
            copy_floats(phase_row + g->pad_w, row, g->width);
        } else if (q < read_sh && sw == 2 && read_sw == 2) {
            /* column phase c holds source columns j * 2 + c - pad_w from its first one
               inside the row, at j0: the phase whose first is even takes the even columns,
               the other the odd ones */
            float *starts[2];
            for (int c = 0; c < 2; ++c) {
                const int j0 = c >= g->pad_w ? 0 : (g->pad_w - c + 1) / 2;
                starts[(j0 * 2 + c - g->pad_w) & 1] = phase_row + (long)c * phase + j0;
            }
            split_even_odd(starts[0], starts[1], row, g->width);
        } else if (q < read_sh) {
            /* column phase c holds padded columns j * sw + c, i.e. source columns
               j * sw + c - pad_w: a strided gather per phase, no divisions per element */
            for (int c = 0; c < read_sw; ++c) {
                float *dst_row = phase_row + (long)c * phase;
                const int j0 = c >= g->pad_w ? 0 : (g->pad_w - c + sw - 1) / sw;
                const int w0 = j0 * sw + c - g->pad_w;
                if (sw == 2) {
                    if (w0 < g->width)
                        copy_even_floats(dst_row + j0, row + w0, (g->width - w0 + 1) / 2);
                    continue;
                }
                for (int j = j0, w = w0; w < g->width; ++j, w += sw)
                    dst_row[j] = row[w];
            }
        }
        if (++q == sh) {
            q = 0;
            ++r;
        }
    }
}

void spconv_pad_repeat(long reps, const spconv_geometry *g, int channels, const float *input,
                       float *block)
{
    const row_window all = whole_image(g);
    const long plane = spconv_channel_plane(g), copy = (long)channels * plane;
    for (long r = 0; r < reps; ++r)
        for (int c = 0; c < channels; ++c)
            pad_channel(g, &all, input + (long)c * g->height * g->width, block + c * plane,
                        copy);
}

/* Write `rows` output rows of one channel from its accumulator run (through_scratch): drop
   junk columns, apply the activation act. */
static void store_rows(const spconv_geometry *g, const float *acc, int rows, int act, float *out)
{
    for (int y = 0; y < rows; ++y) {
        const float *src = acc + (long)y * g->plane_w;
        float *dst = out + (long)y * g->out_width;
        if (act)
            for (int x = 0; x < g->out_width; ++x) dst[x] = float_act(src[x], act);
        else
            copy_floats(dst, src, g->out_width);
    }
}

/* The lane map of a band of `rows` output rows: run position y * plane_w + x is output
   y * out_width + x where x < out_width, so a vector's valid lanes land consecutively. */
static void build_lanes(const spconv_geometry *g, int rows, spconv_lane *lanes)
{
    const long vectors = rows_run_floats(g, rows) / VEC_FLOATS, end = (long)rows * g->plane_w;
    for (long v = 0; v < vectors; ++v) {
        spconv_lane l = {0, 0, 0u, 0u};
        const long first = v * VEC_FLOATS, last = first + VEC_FLOATS < end ? first + VEC_FLOATS
                                                                           : end;
        for (long i = first; i < last;) {  /* segments of one row's valid or junk columns */
            const long y = i / g->plane_w, x = i % g->plane_w;
            const long to = x < g->out_width ? i + g->out_width - x : i + g->plane_w - x;
            const long stop = to < last ? to : last;
            if (x < g->out_width)
                for (long j = i; j < stop; ++j) {
                    const unsigned lane = (unsigned)(j - first);
                    if (!l.count)
                        l.offset = (int)(y * g->out_width + x);
                    l.mask |= 1u << lane;
                    if (VEC_FLOATS <= 8)
                        l.perm |= lane << (3 * l.count);
                    ++l.count;
                }
            i = stop;
        }
        lanes[v] = l;
    }
}

/* Ask for the window's rows of input channels [c0, c1) of one image to be brought towards L2
   while the current block computes: the next block's padding then reads them from near
   instead of from L3 or memory, where the previous call's weights and outputs pushed them. */
static void prefetch_channels(const spconv_geometry *g, const row_window *win,
                              const float *in_n, int c0, int c1)
{
    int h0, h1;
    image_rows(g, win, &h0, &h1);
    for (int c = c0; c < c1; ++c) {
        const float *channel = in_n + (long)c * g->height * g->width;
        const char *end = (const char *)(channel + (long)h1 * g->width);
        for (const char *q = (const char *)(channel + (long)h0 * g->width); q < end; q += 64)
            __builtin_prefetch(q, 0, 2);
    }
}

/* The output-channel groups of [q0, q1) that can have non-zeros in channel block cb: those
   of the conv groups its input channels belong to (all of them with one conv group). A
   depthwise layer's block then scans its own few rows, not every row of the item. */
static void block_groups(const spconv_geometry *g, const spconv_plan *p, int cb, int q0,
                         int q1, int *lo, int *hi)
{
    *lo = q0, *hi = q1;
    if (g->groups <= 1)
        return;
    const int per_in = g->channels / g->groups, per_out = g->out_channels / g->groups;
    const int c0 = cb * p->block_channels;
    const int c1 = c0 + p->block_channels < g->channels ? c0 + p->block_channels : g->channels;
    const int m0 = c0 / per_in * per_out, m1 = ((c1 - 1) / per_in + 1) * per_out;
    const int G = p->out_group;
    if (m0 / G > *lo)
        *lo = m0 / G;
    if ((m1 + G - 1) / G < *hi)
        *hi = (m1 + G - 1) / G;
    if (*hi < *lo)
        *hi = *lo;
}

/* Block cb's row of the block pointers: its non-zeros of output-channel group q (of
   out_group channels; a channel with out_group 1) are [row[q], row[q + 1]). */
static const int *block_row(const spconv_geometry *g, const spconv_plan *p, const int *blkptr,
                            int cb)
{
    return blkptr + (long)cb * (group_count(g, p) + 1);
}

/* One channel block's non-zeros for the rows of r (output-channel groups, over a run of
   r.n floats): with tiles outside output channels, register tile by register tile (the even
   split of tile.h, as spconv_accumulate makes it), so a tile reads only its rows of the
   block, which stay in L1 while every output channel streams through them; else each group
   over the whole run. */
static void accumulate_block(const spconv_plan *p, spconv_acc_rows r)
{
    if (!p->tiles_outer) {
        spconv_accumulate_rows(&r, p->tile_vectors);
        return;
    }
    float *const acc = r.acc;
    const float *const block = r.sparse.base;
    const spconv_lane *const lanes = r.lanes;
    tile_walk walk = tile_walk_begin(r.n / VEC_FLOATS, p->tile_vectors);
    for (long t = 0, start = 0; t < walk.ntiles; ++t) {
        const long end = tile_walk_next(&walk);
        r.acc = acc + start * VEC_FLOATS;
        r.sparse.base = block + start * VEC_FLOATS;
        r.lanes = lanes ? lanes + start : NULL;
        r.n = (end - start) * VEC_FLOATS;
        spconv_accumulate_rows(&r, p->tile_vectors);
        start = end;
    }
}

/* Output rows of the last band (the others have band_rows()). */
static int last_band_rows(const spconv_geometry *g, const spconv_plan *p)
{
    const int band = band_rows(g, p);
    return g->out_height - (g->out_height - 1) / band * band;
}

/* The lane maps at the start of the scratch: a band's, then the last band's where it has
   fewer rows (else the same map). */
static spconv_lane *last_lanes_of(const spconv_geometry *g, const spconv_plan *p, float *scratch)
{
    const int same = last_band_rows(g, p) == band_rows(g, p);
    return (spconv_lane *)scratch + (same ? 0 : run_floats(g, p) / VEC_FLOATS);
}

/* One thread's share of the work items (called in a parallel region, or alone on one thread:
   a parallel region of one thread cost 0.8 us a call, as much as a small layer's products). */
static void direct_work(const spconv_geometry *g, const spconv_plan *p,
                        const int *blkptr, const int *colidx, const float *values,
                        const float *bias, int act, const float *input,
                        float *padded, float *scratch, float *output)
{
    const long plane = spconv_channel_plane(g);
    const long copy = (long)p->block_channels * plane;
    const long acc_stride = run_floats(g, p);
    const long in_plane = (long)g->height * g->width;
    const long out_plane = (long)g->out_height * g->out_width;
    const int mb = p->out_channel_block, ncb = p->channel_blocks, bc = p->block_channels;
    const int G = p->out_group;
    const int mblocks = (g->out_channels + mb - 1) / mb;
    const int band = band_rows(g, p), bands = (g->out_height + band - 1) / band;
    const long items = (long)g->batch * bands * mblocks;
    const spconv_lane *const band_lanes = (const spconv_lane *)scratch;
    const spconv_lane *const last_lanes = last_lanes_of(g, p, scratch);
    {  /* this thread's accumulators and padded block */
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
#else
        const int tid = 0, nthreads = 1;
#endif
        float *acc_base = scratch + lanes_floats(g, p) + (long)tid * mb * acc_stride;
        float *own_block = padded + (long)tid * block_slot_floats(g, p);

        if (p->shared_padding) {
            /* every channel of every image once, into its block's slot; the loop's implicit
               barrier makes the whole padded batch visible to all work items */
            const row_window all = whole_image(g);
#pragma omp for schedule(static)
            for (long i = 0; i < (long)g->batch * g->channels; ++i) {
                const long n = i / g->channels;
                const int c = (int)(i % g->channels), cb = c / bc;
                pad_channel(g, &all, input + i * in_plane, padded + n * image_floats(g, p) +
                            cb * block_slot_floats(g, p) + (long)(c - cb * bc) * plane, copy);
            }
        }

        /* A work item: one band of output rows of one image for one block of output channels
           (the output-channel blocks of one band next to each other, so threads working at
           the same time read the same input rows). Items go round the threads in a fixed
           order, so that a thread gets the same items at the next call, their weights and
           outputs still in its own cache (handed out first come, first served, the two items
           of AlexNet's conv3 on two threads changed threads in a third of the calls). */
        for (long item = tid; item < items; item += nthreads) {
            const long n = item / ((long)bands * mblocks);
            const int y0 = (int)(item / mblocks % bands) * band;
            const int rows = y0 + band < g->out_height ? band : g->out_height - y0;
            const int m0 = (int)(item % mblocks) * mb;
            const int m1 = m0 + mb < g->out_channels ? m0 + mb : g->out_channels;
            const float *in_n = input + n * g->channels * in_plane;
            const long run = rows_run_floats(g, rows);
            /* the band's padded rows, from its first output row's first input row */
            const row_window win = bands > 1
                ? (row_window){y0 * g->stride_h, g->plane_h * g->stride_h, 1}
                : whole_image(g);

            /* the item's groups [q0, q1) (whole groups fit its out_channel_block, a multiple
               of the group); with several channel blocks the sums wait in the accumulators
               between blocks, which start at the bias; those of channels past m1 (a last,
               partial group) start at zero and are never stored */
            const int q0 = m0 / G, q1 = (m1 + G - 1) / G;
            if (ncb > 1 || p->through_scratch)
                for (int m = m0; m < q1 * G; ++m) {
                    float *acc = acc_base + (long)(m - m0) * acc_stride;
                    const float b = bias && m < m1 ? bias[m] : 0.0f;
                    for (long i = 0; i < run; ++i) acc[i] = b;
                }
            float *out_m0 = output + (n * g->out_channels + m0) * out_plane +
                            (long)y0 * g->out_width;
            /* Channel blocks outermost: a block is padded once per work item (unless padding
               is shared) and stays in cache while every output channel of the item streams its
               non-zeros through it. Blocks no channel of the item reads (other groups) are
               skipped: not even padded. The last block's sums go from the registers to the
               output, for every channel of the item (those it has no non-zeros of too), unless
               the sums go through the scratch runs. */
            for (int cb = 0; cb < ncb; ++cb) {
                const int *row = block_row(g, p, blkptr, cb);
                const int last = cb == ncb - 1 && !p->through_scratch;
                int lo, hi;
                block_groups(g, p, cb, q0, q1, &lo, &hi);
                const int work = row[hi] > row[lo];
                if (!work && !last)
                    continue;
                const float *block = own_block;  /* not padded, not read, without work */
                if (work && p->shared_padding) {
                    block = padded + n * image_floats(g, p) + cb * block_slot_floats(g, p);
                } else if (work) {
                    const int c0 = cb * bc, c1 = c0 + bc < g->channels ? c0 + bc : g->channels;
                    for (int c = c0; c < c1; ++c)
                        pad_channel(g, &win, in_n + c * in_plane, own_block + (c - c0) * plane,
                                    copy);
                    if (c1 < g->channels)
                        prefetch_channels(g, &win, in_n, c1,
                                          c1 + bc < g->channels ? c1 + bc : g->channels);
                }
                if (last)
                    lo = q0, hi = q1;
                spconv_acc_rows r = {
                    .acc = acc_base + (long)(lo - q0) * G * acc_stride,
                    .acc_stride = G * acc_stride, .n = run, .group = G,
                    .group_stride = acc_stride,
                    .sparse = {.base = block, .rowptr = row + lo, .rowptr_stride = 1,
                               .colidx = colidx, .values = values, .rows = hi - lo}};
                if (last) {
                    r.from_bias = ncb == 1;
                    r.bias = bias ? bias + (long)lo * G : NULL;
                    r.lanes = rows == band ? band_lanes : last_lanes;
                    r.out = out_m0 + (long)(lo - q0) * G * out_plane;
                    r.out_stride = out_plane;
                    r.act = act;
                    r.channels = m1 - (long)lo * G;
                }
                accumulate_block(p, r);
            }
            if (p->through_scratch)
                for (int m = m0; m < m1; ++m)
                    store_rows(g, acc_base + (long)(m - m0) * acc_stride, rows, act,
                               out_m0 + (long)(m - m0) * out_plane);
        }
    }
}

int spconv_direct(const spconv_geometry *g, const spconv_plan *p,
                  const int *blkptr, const int *colidx, const float *values,
                  const float *bias, int act, const float *input,
                  float *padded, float *scratch, float *output)
{
    const int err = spconv_direct_check(g, p);
    if (err)
        return err;
    const int band = band_rows(g, p), last_rows = last_band_rows(g, p);
    build_lanes(g, band, (spconv_lane *)scratch);
    if (last_rows != band)
        build_lanes(g, last_rows, last_lanes_of(g, p, scratch));
    if (p->threads == 1) {
        direct_work(g, p, blkptr, colidx, values, bias, act, input, padded, scratch, output);
        return 0;
    }
#pragma omp parallel num_threads(p->threads)
    direct_work(g, p, blkptr, colidx, values, bias, act, input, padded, scratch, output);
    return 0;
}

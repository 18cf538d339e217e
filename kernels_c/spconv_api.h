/* Public interface of the kernels: plain declarations only (cffi parses this file). */

typedef struct {
    int batch, channels, height, width;      /* input N, C, H, W */
    int out_channels, out_height, out_width; /* M, OH, OW */
    int pad_h, pad_w, stride_h, stride_w;
    int plane_h, plane_w;   /* rows and columns of one stride phase of the padded input */
    int copies;             /* 1, or kernel width: shifted copies of the input (stride 1) */
    int copy_shift;         /* columns each further copy is shifted by (the dilation) */
    int kernel_h, kernel_w; /* a strided 1x1 kernel reads only the first row (column) phase:
                               the others are not padded */
    int groups;             /* conv groups (0: one): a channel block is read only by the
                               output channels of the groups its channels belong to */
} spconv_geometry;

typedef struct {
    int tile_vectors;       /* register block: accumulator vectors held in registers */
    int out_channel_block;  /* output channels one work item covers */
    int channel_blocks;     /* input-channel blocks: rows of the block pointers */
    int block_channels;     /* input channels per block (the last block may hold fewer) */
    int tiles_outer;        /* 1: register tiles outside output channels within a block, so
                               only one tile's rows of the block need to stay in L1 */
    int shared_padding;     /* 1: pad each image once into a buffer all threads read, instead
                               of each work item padding its blocks into its thread's buffer */
    int band_rows;          /* output rows per work item, below out_height (0: all): a band pads and reads only
                               its rows of the input, so large images stay in cache; the
                               geometry's plane_h then holds one band's input rows */
    int out_group;          /* 1, 2 or 4: output channels that share one support within a channel
                               block (their absent weights stored as zeros), so each input
                               vector is loaded once per group; out_channel_block is a
                               multiple of it */
    int threads;            /* OpenMP threads for this call */
    int through_scratch;    /* 1: the earlier kernel, kept to measure against: every channel's
                               sums set to the bias in a scratch run, accumulated there, then
                               copied out; 0: the last block's tiles write the output from
                               the registers */
} spconv_plan;

/* The activation a kernel applies to its outputs (its `act` argument): none, ReLU, or ReLU6
   (the ReLU capped at 6, MobileNet's). */
enum { SPCONV_ACT_NONE = 0, SPCONV_ACT_RELU = 1, SPCONV_ACT_RELU6 = 2 };

/* Error codes the functions return; spconv_error_message() says what each means (the one
   place they are put into words, for C and Python callers alike). */
enum {
    SPCONV_OK = 0,
    SPCONV_EGEOMETRY = -1,   /* sizes, strides or padding out of range */
    SPCONV_ELAYOUT = -2,     /* the padded planes are too small for the image or band */
    SPCONV_EPLAN = -3,       /* tile, blocks or threads out of range */
    SPCONV_ECOPIES = -4,     /* shifted copies with a stride, or rows not in whole vectors */
    SPCONV_EBANDSHARED = -5, /* bands of output rows with shared padding */
    SPCONV_EGROUP = -6       /* out_group not 1, 2 or 4, its tile too wide, or a block of
                                output channels not a multiple of it */
};
const char *spconv_error_message(int code);

/* Build-path smoke test and facts about the compiled code path. */
void spconv_axpy(long n, float a, const float *x, float *y);
const char *spconv_isa(void);
int spconv_vector_floats(void);
int spconv_max_tile_vectors(void);
int spconv_max_group_tile(int group);   /* widest tile for a group size; 0: no such group */
int spconv_openmp_enabled(void);

/* Workspace sizes in floats (they include the slack vector over-reads need). */
long spconv_padded_floats(const spconv_geometry *g, const spconv_plan *p);
long spconv_scratch_floats(const spconv_geometry *g, const spconv_plan *p);
long spconv_channel_plane(const spconv_geometry *g);

/* 0 when spconv_direct() accepts this geometry and plan, else its error code. */
int spconv_direct_check(const spconv_geometry *g, const spconv_plan *p);

/* Direct sparse convolution. The non-zeros are stored block-major, in the order the kernel
   walks them: blkptr has channel_blocks rows of out_channels + 1 entries, row b delimiting each
   output channel's non-zeros in input-channel block b; colidx holds offsets into
   the padded copy of one input-channel block (stride-phase split, see direct.c), counted from
   the block's first channel. With out_group G > 1 the rows are groups of G output channels
   (row b has ceil(out_channels / G) + 1 entries) and a group's non-zero j has G values,
   values[j * G + g] for its channel g (zero where that channel has no weight). padded (one block buffer per thread, or the whole padded batch
   with shared padding) must be spconv_padded_floats() long and zeroed once before first use;
   calls only write the interior of each padded channel. Returns 0 or a negative error code. */
int spconv_direct(const spconv_geometry *g, const spconv_plan *p,
                  const int *blkptr, const int *colidx, const float *values,
                  const float *bias, int act, const float *input,
                  float *padded, float *scratch, float *output);

/* Pointwise sparse convolution (kernels_c/pointwise.c): 1x1 kernel, no padding, one group, no
   padded copy of the input (at a stride, each chunk gathers the pixels it reads). The
   non-zeros are stored block-major, as for spconv_direct(): output channel m's in
   input-channel block b are [blkptr[b * (out_channels + 1) + m], blkptr[b * (out_channels +
   1) + m + 1]); or, with row_major, row by row: [blkptr[m * (channel_blocks + 1) + b],
   blkptr[m * (channel_blocks + 1) + b + 1]). colidx[j] = (c_j - b * channel_block) * chunk
   (offsets into the packed slice of one block and chunk); with in_place, in_colidx[j] =
   (c_j - b * channel_block) * in_pixels (offsets into the input itself), else NULL. chunk
   (pixels per work item) is a multiple of the vector length; scratch holds
   spconv_pointwise_scratch_floats() floats.
   residual (NULL or the output's shape) is added before the activation. */
typedef struct {
    int batch, channels, out_channels;
    long pixels;            /* output pixels: out_height * out_width */
    long in_pixels;         /* input pixels: in_height * in_width */
    int in_width, out_width;
    int stride_h, stride_w; /* output pixel (y, x) reads input pixel (y * stride_h,
                               x * stride_w) */
    long chunk;             /* pixels one work item covers */
    int out_block;          /* output channels one work item covers */
    int channel_block;      /* input channels packed and streamed at a time (all of them: one
                               block); with several blocks each output row's sums wait in a
                               scratch row between blocks */
    int tile_vectors;       /* register tile width, at most the ISA's largest */
    int threads;
    int row_major;          /* 1: the non-zeros stored row by row (the earlier storage, kept
                               to measure against; each row's segment of a block lies a jump
                               from the next row's) */
    int through_scratch;    /* 1: each output row is accumulated in a scratch row, then copied
                               out (the earlier kernel, kept to measure against); 0: the
                               accumulators go from registers straight to the output */
    int in_place;           /* 1 (stride 1 only): chunks of whole vectors read the input where
                               it lies, through in_colidx, instead of packing a slice first */
} spconv_pointwise_args;

long spconv_pointwise_scratch_floats(const spconv_pointwise_args *a);
int spconv_pointwise(const spconv_pointwise_args *a, const int *blkptr, const int *colidx,
                     const int *in_colidx, const float *values, const float *bias, int act, const float *input,
                     const float *residual, float *scratch, float *output);

/* Max pooling of `planes` NCHW planes, torch.nn.functional.max_pool2d's semantics with
   dilation 1 and floor rounding (padding at most half the kernel); kernels_c/pool.c. */
int spconv_max_pool(const float *input, int planes, int height, int width, int kernel_h,
                    int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w,
                    int out_height, int out_width, float *output, int threads);

/* Global average pooling: output[p] = the mean of plane p's `pixels` floats, for p < planes
   (torch's adaptive_avg_pool2d to 1x1); kernels_c/pool.c. */
int spconv_global_avg_pool(const float *input, long planes, long pixels, float *output,
                           int threads);

/* im2col of one image for every group: cols[group][(c, r, s)][(y, x)], each row of
   out_height * out_width values starting row_stride floats after the previous one (a stride
   of whole vectors keeps every row aligned; the gap is left as it is). */
int spconv_im2col(const float *image, int channels, int height, int width,
                  int kernel_h, int kernel_w, int pad_h, int pad_w,
                  int stride_h, int stride_w, int dilation_h, int dilation_w,
                  int out_height, int out_width, float *cols, long row_stride, int threads);

/* out[m][0..n) = act(bias[m] + sum_j values[j] * dense[colidx[j] + 0..n)) for m < rows:
   CSR times a row-major dense matrix whose rows start at the offsets in colidx. dense must
   be readable up to the largest offset + n rounded up to spconv_vector_floats(). */
int spconv_csr_spmm(int rows, int n, const int *rowptr, const int *colidx,
                    const float *values, const float *dense, const float *bias, int act,
                    int tile_vectors, float *scratch, float *out, int threads);

/* Calibration: a register-only FMA loop (spconv_fma_flops_per_iteration() FLOPs per
   iteration and thread) and the STREAM triad a = b + s * c. */
float spconv_fma_loop(long iterations, int threads);
long spconv_fma_flops_per_iteration(void);
void spconv_triad(long n, int repeats, float s, float *a, const float *b, const float *c,
                  int threads);
/* The load roofs (one thread): `passes` passes over buf[0..floats), floats a multiple of 12
   vectors, each loading every vector once (floats / vector floats loads), or with broadcast
   every float, with `fmas` (0-4) FMAs per loaded vector; returns a checksum. */
float spconv_load_loop(const float *buf, long floats, long passes, int fmas, int broadcast);

/* The register tiles of the direct kernel, alone (kernels_c/tile.c): `group` output channels
   (1, 2 or 4) sharing npos positions, acc[g * acc_stride + 0..n) += values[j * group + g] *
   base[colidx[j] + 0..n). n is whole vectors, tile_vectors at most
   spconv_max_group_tile(group). */
void spconv_accumulate_group(float *acc, long acc_stride, long n, const float *base,
                             const int *colidx, const float *values, int npos, int group,
                             int tile_vectors);
/* The same, `reps` times over: the calibration of a tile's cost per call (kernels_c/calibrate.c). */
void spconv_tile_repeat(long reps, float *acc, long acc_stride, long n, const float *base,
                        const int *colidx, const float *values, int npos, int group,
                        int tile_vectors);
/* One tile over `groups` output-channel groups reading the same input, group i with npos[i]
   positions (skipped when none) on accumulator run i % acc_runs, `reps` times: the cost of a
   mispredicted branch, from counts in random and in sorted order (kernels_c/calibrate.c). */
void spconv_tile_channels(long reps, float *acc, long acc_stride, int acc_runs, int groups,
                          long n, const float *base, const int *colidx, const float *values,
                          const int *npos, int group, int tile_vectors);
/* The direct kernel's padding alone, `reps` times over: channels [0, channels) of one image
   of g copied whole into their padded layout at block (channels * spconv_channel_plane(g) *
   copies floats, zeroed once before). The calibration of the padding's cost per row. */
void spconv_pad_repeat(long reps, const spconv_geometry *g, int channels, const float *input,
                       float *block);

/* Calibration microbenchmarks: peak fp32 FMA throughput and triad bandwidth, built with the
   profile's flags and vector width. */
#include "spconv_api.h"
#include "simd.h"
#include "tile.h"

/* Independent FMA chains (more than the FMA latency x throughput product of any current
   core) over registers only: the returned value keeps the compiler from removing them. */
#define CHAINS 12

float spconv_fma_loop(long iterations, int threads)
{
    float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        vec_t acc[CHAINS];
        const vec_t a = vec_set1(0.999999f), b = vec_set1(1e-7f);
        for (int c = 0; c < CHAINS; ++c) acc[c] = vec_set1((float)c);
        for (long i = 0; i < iterations; ++i) {
            _Pragma("GCC unroll 12") for (int c = 0; c < CHAINS; ++c)
                acc[c] = vec_fma(acc[c], a, b);
        }
        float lanes[VEC_FLOATS];
        for (int c = 1; c < CHAINS; ++c) acc[0] = acc[0] + acc[c];
        vec_store(lanes, acc[0]);
        for (int l = 0; l < VEC_FLOATS; ++l) total += lanes[l];
    }
    return total;
}

long spconv_fma_flops_per_iteration(void) { return 2L * CHAINS * VEC_FLOATS; }

/* a[i] = b[i] + s * c[i] over n floats, repeated; each thread works on its own slice. */
void spconv_triad(long n, int repeats, float s, float *a, const float *b, const float *c,
                  int threads)
{
#pragma omp parallel num_threads(threads)
    for (int r = 0; r < repeats; ++r) {
#pragma omp for schedule(static) nowait
        for (long i = 0; i < n; ++i)
            a[i] = b[i] + s * c[i];
    }
}

/* The load roofs: passes over a buffer of `floats` floats (its size picks the cache level
   it is read from), loading every vector of it once per pass (or, broadcast, every float
   broadcast to a vector) with `fmas` FMAs per loaded value, into independent accumulators
   (fmas 0: one add per load, to time the loads alone). Returns a checksum that keeps the
   loads from being optimised away. U loads in flight, U * max(K, 1) accumulator chains.
   `floats` is a multiple of 12 vectors, so a pass makes floats / VEC_FLOATS vector loads
   (floats broadcasts) in every variant. */
#define LOAD_LOOP(NAME, U, K, STEP, LOAD)                                                   \
    static float NAME(const float *buf, long floats, long passes)                           \
    {                                                                                       \
        enum { CHAINS_ = U * (K ? K : 1) };                                                 \
        vec_t acc[CHAINS_], w[K ? K : 1];                                                   \
        for (int c = 0; c < CHAINS_; ++c) acc[c] = vec_set1(0.0f);                          \
        for (int f = 0; f < (K ? K : 1); ++f) w[f] = vec_set1(1e-3f * (f + 1));             \
        for (long p = 0; p < passes; ++p)                                                   \
            for (long i = 0; i + U * STEP <= floats; i += U * STEP) {                       \
                _Pragma("GCC unroll 16") for (int u = 0; u < U; ++u) {                      \
                    const vec_t x = LOAD(buf + i + u * STEP);                               \
                    if (K == 0)                                                             \
                        acc[u] = acc[u] + x;                                                \
                    _Pragma("GCC unroll 4") for (int f = 0; f < K; ++f)                     \
                        acc[u * K + f] = vec_fma(w[f], x, acc[u * K + f]);                  \
                }                                                                           \
            }                                                                               \
        for (int c = 1; c < CHAINS_; ++c) acc[0] = acc[0] + acc[c];                         \
        float lanes[VEC_FLOATS], total = 0.0f;                                              \
        vec_store(lanes, acc[0]);                                                           \
        for (int l = 0; l < VEC_FLOATS; ++l) total += lanes[l];                             \
        return total;                                                                       \
    }
#define VECTOR_LOAD(p) vec_load(p)
#define BROADCAST_LOAD(p) vec_set1(*(p))

LOAD_LOOP(vector_loads, 12, 0, VEC_FLOATS, VECTOR_LOAD)
LOAD_LOOP(broadcast_loads, 12, 0, 1, BROADCAST_LOAD)
LOAD_LOOP(vector_fma1, 12, 1, VEC_FLOATS, VECTOR_LOAD)
LOAD_LOOP(vector_fma2, 6, 2, VEC_FLOATS, VECTOR_LOAD)
LOAD_LOOP(vector_fma3, 4, 3, VEC_FLOATS, VECTOR_LOAD)
LOAD_LOOP(vector_fma4, 3, 4, VEC_FLOATS, VECTOR_LOAD)

float spconv_load_loop(const float *buf, long floats, long passes, int fmas, int broadcast)
{
    if (broadcast)
        return broadcast_loads(buf, floats, passes);
    switch (fmas) {
    case 0: return vector_loads(buf, floats, passes);
    case 1: return vector_fma1(buf, floats, passes);
    case 2: return vector_fma2(buf, floats, passes);
    case 3: return vector_fma3(buf, floats, passes);
    default: return vector_fma4(buf, floats, passes);
    }
}

/* One register tile call made `reps` times over the same arguments, along the path the
   direct kernel takes (the loop over rows in the tile function): a tile's cost per call and
   per position, without the caller's overhead per call. */
void spconv_tile_repeat(long reps, float *acc, long acc_stride, long n, const float *base,
                        const int *colidx, const float *values, int npos, int group,
                        int tile_vectors)
{
    const int rowptr[2] = {0, npos};
    const spconv_acc_rows r = {.acc = acc, .acc_stride = 0, .n = n, .group = group,
                               .group_stride = acc_stride,
                               .sparse = {.base = base, .rowptr = rowptr, .rowptr_stride = 0,
                                          .colidx = colidx, .values = values, .rows = reps}};
    spconv_accumulate_rows(&r, tile_vectors);
}

/* The kernel's walk of one channel block, output-channel group after group, each reading the
   same input: group i makes npos[i] positions (none: skipped, as the kernel skips it) on
   accumulator run i % acc_runs (group * acc_stride floats each), `reps` times. With the same
   counts in an order the branch predictor cannot follow and sorted, it times a mispredicted
   branch. */
void spconv_tile_channels(long reps, float *acc, long acc_stride, int acc_runs, int groups,
                          long n, const float *base, const int *colidx, const float *values,
                          const int *npos, int group, int tile_vectors)
{
    for (long r = 0; r < reps; ++r)
        for (int i = 0; i < groups; ++i)
            if (npos[i] > 0)
                spconv_accumulate_group(acc + (long)(i % acc_runs) * group * acc_stride,
                                        acc_stride, n, base, colidx, values, npos[i], group,
                                        tile_vectors);
}

/* Calibration microbenchmarks: peak fp32 FMA throughput and triad bandwidth, built with the
   profile's flags and vector width. */
#include "spconv_api.h"
#include "simd.h"

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

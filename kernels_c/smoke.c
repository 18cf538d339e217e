/* Small functions that exercise the build path and report what was compiled. */
#include "spconv_api.h"
#include "simd.h"

void spconv_axpy(long n, float a, const float *x, float *y)
{
    const vec_t va = vec_set1(a);
    long i = 0;
    for (; i + VEC_FLOATS <= n; i += VEC_FLOATS)
        vec_store(y + i, vec_fma(va, vec_load(x + i), vec_load(y + i)));
    for (; i < n; ++i)
        y[i] += a * x[i];
}

const char *spconv_isa(void) { return ISA_NAME; }
int spconv_vector_floats(void) { return VEC_FLOATS; }
int spconv_max_tile_vectors(void) { return MAX_TILE; }

int spconv_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

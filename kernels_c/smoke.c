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

const char *spconv_error_message(int code)
{
    switch (code) {
    case SPCONV_OK: return "no error";
    case SPCONV_EGEOMETRY: return "sizes, strides or padding out of range";
    case SPCONV_ELAYOUT: return "the padded planes are too small for the image or band";
    case SPCONV_EPLAN:
        return "plan out of range: tile_vectors must be in [1, the ISA's largest tile], blocks "
               "and threads positive, band_rows in [0, output rows)";
    case SPCONV_ECOPIES:
        return "the aligned layout needs stride 1 and rows of whole vectors";
    case SPCONV_EBANDSHARED:
        return "shared padding pads whole images: no band_rows with it";
    case SPCONV_EGROUP:
        return "out_group must be 1, 2 or 4, with a tile no wider than the ISA allows for it "
               "and out_channel_block a multiple of it";
    default: return "unknown error";
    }
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

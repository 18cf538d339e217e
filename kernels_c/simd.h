/* One vector abstraction over the instruction sets the kernels are compiled for.
   The build defines one row of isa.def: SPCONV_ISA_<ID>, SPCONV_VEC_FLOATS, SPCONV_MAX_TILE,
   SPCONV_VEC_REGISTERS and SPCONV_ISA_NAME (harness/machine/build.py). Include spconv_api.h
   first (the activation codes). */
#ifndef SPCONV_SIMD_H
#define SPCONV_SIMD_H

#include <string.h>

#if !defined(SPCONV_VEC_FLOATS) || !defined(SPCONV_MAX_TILE) || !defined(SPCONV_ISA_NAME) || \
    !defined(SPCONV_VEC_REGISTERS)
#error "build through harness.machine.build: it defines the isa.def row (SPCONV_VEC_FLOATS, ...)"
#endif
#define VEC_FLOATS SPCONV_VEC_FLOATS
#define MAX_TILE SPCONV_MAX_TILE
#define VEC_REGISTERS SPCONV_VEC_REGISTERS
#define ISA_NAME SPCONV_ISA_NAME

#if defined(SPCONV_ISA_AVX512)
#include <immintrin.h>
typedef __m512 vec_t;
#define vec_load(p) _mm512_loadu_ps(p)
#define vec_store(p, v) _mm512_storeu_ps((p), (v))
#define vec_set1(x) _mm512_set1_ps(x)
#define vec_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vec_add(a, b) _mm512_add_ps((a), (b))
#define vec_relu(x) _mm512_max_ps((x), _mm512_setzero_ps())  /* NaN and -0 give +0 */
#define vec_min(a, b) _mm512_min_ps((a), (b))

#elif defined(SPCONV_ISA_AVX2)
#include <immintrin.h>
typedef __m256 vec_t;
#define vec_load(p) _mm256_loadu_ps(p)
#define vec_store(p, v) _mm256_storeu_ps((p), (v))
#define vec_set1(x) _mm256_set1_ps(x)
#define vec_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vec_add(a, b) _mm256_add_ps((a), (b))
#define vec_relu(x) _mm256_max_ps((x), _mm256_setzero_ps())
#define vec_min(a, b) _mm256_min_ps((a), (b))

#elif defined(SPCONV_ISA_SSE42)
#include <nmmintrin.h>
typedef __m128 vec_t;
#define vec_load(p) _mm_loadu_ps(p)
#define vec_store(p, v) _mm_storeu_ps((p), (v))
#define vec_set1(x) _mm_set1_ps(x)
#define vec_fma(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))   /* no FMA before Haswell */
#define vec_add(a, b) _mm_add_ps((a), (b))
#define vec_relu(x) _mm_max_ps((x), _mm_setzero_ps())
#define vec_min(a, b) _mm_min_ps((a), (b))

#else /* portable: GCC/Clang vector extensions, lowered to whatever the target has */
typedef float vec_t __attribute__((vector_size(16)));
static inline vec_t vec_load(const float *p) { vec_t v; memcpy(&v, p, sizeof v); return v; }
static inline void vec_store(float *p, vec_t v) { memcpy(p, &v, sizeof v); }
static inline vec_t vec_set1(float x) { vec_t v = {x, x, x, x}; return v; }
#define vec_fma(a, b, c) ((a) * (b) + (c))
#define vec_add(a, b) ((a) + (b))
static inline vec_t vec_relu(vec_t x)
{
    float t[4];
    memcpy(t, &x, sizeof t);
    for (int i = 0; i < 4; ++i)
        t[i] = t[i] > 0.0f ? t[i] : 0.0f;
    memcpy(&x, t, sizeof t);
    return x;
}
static inline vec_t vec_min(vec_t a, vec_t b)
{
    float s[4], t[4];
    memcpy(s, &a, sizeof s);
    memcpy(t, &b, sizeof t);
    for (int i = 0; i < 4; ++i)
        s[i] = s[i] < t[i] ? s[i] : t[i];
    memcpy(&a, s, sizeof s);
    return a;
}
#endif

/* The fused activation act (SPCONV_ACT_*) of a vector and of one float: ReLU (NaN and -0
   give +0), ReLU6 the same capped at 6. */
static inline vec_t vec_act(vec_t x, int act)
{
    if (act == SPCONV_ACT_NONE)
        return x;
    x = vec_relu(x);
    return act == SPCONV_ACT_RELU6 ? vec_min(x, vec_set1(6.0f)) : x;
}

static inline float float_act(float y, int act)
{
    if (act == SPCONV_ACT_NONE)
        return y;
    y = y > 0.0f ? y : 0.0f;
    return act == SPCONV_ACT_RELU6 && y > 6.0f ? 6.0f : y;
}

_Static_assert(sizeof(vec_t) == VEC_FLOATS * sizeof(float),
               "isa.def's lane count disagrees with this code path's vector type");

/* Copy n floats: whole vectors, then the tail (one masked vector where the ISA has masks). */
static inline void copy_floats(float *restrict dst, const float *restrict src, int n)
{
    int i = 0;
    for (; i + VEC_FLOATS <= n; i += VEC_FLOATS)
        vec_store(dst + i, vec_load(src + i));
#if defined(SPCONV_ISA_AVX512)
#if defined(__AVX512VL__)  /* not on Knights Landing */
    if (i < n && n - i <= 8) {  /* in half a vector: 1.7x faster on Zen 4, short rows gain */
        const __mmask8 m = (__mmask8)((1u << (n - i)) - 1);
        _mm256_mask_storeu_ps(dst + i, m, _mm256_maskz_loadu_ps(m, src + i));
        return;
    }
#endif
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
    }
#else
    for (; i < n; ++i)
        dst[i] = src[i];
#endif
}

/* dst[0..count) = the lanes of x selected by `mask`, in lane order (count of them): AVX-512
   compresses them in a register, AVX2 permutes them by `perm` (the selected lanes, 3 bits
   each); a masked store writes them. Other paths go lane by lane. */
static inline void vec_store_lanes(float *dst, vec_t x, unsigned mask, unsigned perm, int count)
{
#if defined(SPCONV_ISA_AVX512)
    (void)perm;
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << count) - 1),
                          _mm512_maskz_compress_ps((__mmask16)mask, x));
#elif defined(SPCONV_ISA_AVX2)
    (void)mask;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i from = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32((int)perm),
                          _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21)),
        _mm256_set1_epi32(7));
    _mm256_maskstore_ps(dst, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane),
                        _mm256_permutevar8x32_ps(x, from));
#else
    (void)perm;
    float t[VEC_FLOATS];
    vec_store(t, x);
    for (int i = 0, k = 0; i < VEC_FLOATS && k < count; ++i)
        if (mask >> i & 1u)
            dst[k++] = t[i];
#endif
}

/* Round n up to a whole number of vectors. */
static inline long round_up_vec(long n) { return (n + VEC_FLOATS - 1) / VEC_FLOATS * VEC_FLOATS; }

#endif

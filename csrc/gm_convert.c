/* gm_convert.c -- IEEE half precision (float16) to float32, exactly.
 *
 * Feature caches store float16 (docs/method.md, "Feature cache"); every
 * evaluation converts each map once.  NumPy's float16 cast converts one value
 * at a time (about 1 ns a value on the development machine); this loop is
 * integer arithmetic the compiler vectorizes, and on AVX-512 CPUs the
 * VCVTPH2PS instruction does 16 values at once.  The conversion is exact, so
 * results are those of NumPy's cast, bit for bit (tested). */
#include "geomatch.h"

#include <string.h>

#include "gm_avx512.h"

/* The bit-manipulation conversion of n values; returns nonzero if any is
 * infinite or NaN.  O(n). */
static uint32_t gm_f16_to_f32_bits(const uint16_t *x, float *y, size_t n)
{
    uint32_t special = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        union { float f; uint32_t u; } sub, out;
        uint32_t h = x[i], em = h & 0x7fffu;
        /* masks: all ones where the half is subnormal (or zero), inf/NaN */
        uint32_t is_sub = 0u - (uint32_t)(em < 0x0400u);
        uint32_t is_spec = 0u - (uint32_t)(em >= 0x7c00u);
        /* normal: rebias the exponent (15 -> 127), widen the mantissa;
         * inf / NaN: all-ones exponent, the mantissa (NaN payload) kept;
         * subnormal: m 2^-24, exact in float (an integer scaled by a power
         * of two, never a subnormal float operand) */
        uint32_t normal = (em << 13) + (112u << 23);
        uint32_t inf_nan = (em << 13) | 0x7f800000u;
        sub.f = (float)(int32_t)em * 0x1p-24f;
        out.u = (sub.u & is_sub) | (inf_nan & is_spec) | (normal & ~(is_sub | is_spec));
        out.u |= (h & 0x8000u) << 16;
        special |= is_spec;
        y[i] = out.f;
    }
    return special;
}

#if GM_HAVE_AVX512
/* 16 values per VCVTPH2PS (exact for every finite half, subnormals
 * included); a block holding an infinity or NaN goes through the bit
 * version, which keeps NaN payloads as they are (the instruction would
 * quiet a signalling NaN).  About ten times the bit loop.  O(n). */
GM_AVX512_TARGET static uint32_t gm_f16_to_f32_avx512(const uint16_t *x, float *y, size_t n)
{
    const __m256i mag = _mm256_set1_epi16(0x7fff), inf = _mm256_set1_epi16(0x7c00);
    uint32_t special = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(x + i));
        if (_mm256_cmpge_epu16_mask(_mm256_and_si256(h, mag), inf))
            special |= gm_f16_to_f32_bits(x + i, y + i, 16);
        else
            _mm512_storeu_ps(y + i, _mm512_cvtph_ps(h));
    }
    return special | gm_f16_to_f32_bits(x + i, y + i, n - i);
}
#endif

int gm_f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    uint32_t special;
    if (n > 0 && (!x || !y)) return GM_ERR_INVALID;
#if GM_HAVE_AVX512
    special = gm_avx512_supported() ? gm_f16_to_f32_avx512(x, y, n)
                                    : gm_f16_to_f32_bits(x, y, n);
#else
    special = gm_f16_to_f32_bits(x, y, n);
#endif
    return special ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}

int gm_f16_all_finite(const uint16_t *x, size_t n)
{
    uint32_t special = 0;
    size_t i;
    if (n > 0 && !x) return GM_ERR_INVALID;
    /* inf / NaN: all-ones exponent; OR-reduced so the loop vectorizes */
    for (i = 0; i < n; i++) special |= (uint32_t)((x[i] & 0x7fffu) >= 0x7c00u);
    return special ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}

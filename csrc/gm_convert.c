/* gm_convert.c -- IEEE half precision (float16) to float32, exactly.
 *
 * Feature caches store float16 (docs/method.md, "Feature cache"); every
 * evaluation converts each map once.  NumPy's float16 cast converts one value
 * at a time (about 1 ns a value on the development machine); this loop is
 * integer arithmetic the compiler vectorizes.  The conversion is exact, so
 * results are those of NumPy's cast, bit for bit (tested). */
#include "geomatch.h"

#include <string.h>

int gm_f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    uint32_t special = 0;
    size_t i;
    if (n > 0 && (!x || !y)) return GM_ERR_INVALID;
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
    return special ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}

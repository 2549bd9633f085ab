/* gm_math.h -- private inline math shared by the kernels.
 *
 * gm_exp_f32 / gm_exp_f64: branch-free exponentials that GCC auto-vectorizes
 * (libm's expf does not vectorize without -ffast-math).  Range reduction
 * x = n*ln2 + r, |r| <= ln2/2, then a Taylor polynomial for e^r (degree 7 in
 * float: relative error < 2 ulp; degree 12 in double: < 2 ulp) and 2^n built
 * in the exponent bits.  n = round(x log2 e) is formed by adding and
 * subtracting 1.5 * 2^23 (2^52), which GCC vectorizes in any loop (rint
 * only in some; round() not without -ffast-math); in the default rounding
 * mode it rounds exactly as rint.  Inputs below the underflow limit
 * (including -inf) give exactly 0; inputs are clamped above the overflow
 * limit, so callers that can overflow must check.  A NaN input gives a
 * finite garbage value without undefined behaviour (callers that may see
 * NaN scan for it themselves). */
#ifndef GM_MATH_H
#define GM_MATH_H

#include <stdint.h>
#include <string.h>

/* c[0] r^(n-1) + c[1] r^(n-2) + ... + c[n-1] by Horner's rule, in the
 * argument's type (one multiply-add per coefficient, in this order; the
 * compiler unrolls it for constant n).  O(n). */
static inline float gm_horner_f32(float r, const float *c, int n)
{
    float p = c[0];
    for (int k = 1; k < n; k++) p = p * r + c[k];
    return p;
}

static inline double gm_horner_f64(double r, const double *c, int n)
{
    double p = c[0];
    for (int k = 1; k < n; k++) p = p * r + c[k];
    return p;
}

/* gm_exp_f32 without the clamp and the underflow select, for an argument the
 * caller knows to lie in [-87, 88]: there it computes exactly gm_exp_f32's
 * value, with fewer instructions (the dustbin layer's exponential pass ran
 * 24% faster).  Outside that range the result is wrong, and a NaN argument is
 * undefined behaviour (float-to-int conversion). */
static inline float gm_exp_f32_in(float xc)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.428606765330187045e-06f;
    const float shift = 12582912.0f;
    float n = (xc * log2e + shift) - shift;
    float r = xc - n * ln2_hi - n * ln2_lo;
    static const float c[8] = {1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f,
                               1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
    float p = gm_horner_f32(r, c, 8);
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float gm_exp_f32(float x)
{
    float xc = x > -87.0f ? (x < 88.0f ? x : 88.0f) : -87.0f;  /* NaN -> -87 */
    float y = gm_exp_f32_in(xc);
    return x < -87.0f ? 0.0f : y;
}

/* gm_exp_f64 without the clamp and the underflow select, for an argument in
 * [-708, 709] (as gm_exp_f32_in). */
static inline double gm_exp_f64_in(double xc)
{
    const double log2e = 1.4426950408889634074;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double shift = 6755399441055744.0;
    double n = (xc * log2e + shift) - shift;
    double r = xc - n * ln2_hi - n * ln2_lo;
    static const double c[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                                 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    double p = gm_horner_f64(r, c, 13);
    int64_t bits = ((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double gm_exp_f64(double x)
{
    double xc = x > -708.0 ? (x < 709.0 ? x : 709.0) : -708.0;  /* NaN -> -708 */
    double y = gm_exp_f64_in(xc);
    return x < -708.0 ? 0.0 : y;
}

#endif

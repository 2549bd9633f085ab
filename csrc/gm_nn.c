/* gm_nn.c -- ViT building blocks for the torch-free DINOv2 backbone:
 * linear layers (+ bias, GELU, residual accumulation), LayerNorm, SwiGLU and
 * tiled multi-head self-attention.  float and double versions are generated
 * from gm_nn_impl.h. */
#include "geomatch.h"
#include "gm_blas.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Query rows per attention tile. */
#define GM_NN_ATTN_TILE 128

/* e^x for float as gm_exp_f32 (degree-7 Taylor after x = n ln2 + r), but
 * rounding n with the 1.5 * 2^23 shifter instead of roundf, so that GCC
 * vectorizes it without -fno-trapping-math.  Inputs below -87 give 0.
 * Relative error < 3e-7.  O(1). */
static inline float gm_nn_exp_f32(float x)
{
    const float shifter = 12582912.0f;
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (xc * 1.44269504088896341f + shifter) - shifter;
    float r = xc - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    float y = p * u.f;
    return x < -87.0f ? 0.0f : y;
}

/* e^x for double: the same scheme with a degree-12 polynomial and the
 * 1.5 * 2^52 shifter.  Inputs below -708 give 0.  O(1). */
static inline double gm_nn_exp_f64(double x)
{
    const double shifter = 6755399441055744.0;
    double xc = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double n = (xc * 1.4426950408889634074 + shifter) - shifter;
    double r = xc - n * 6.93147180369123816490e-01 - n * 1.90821492927058770002e-10;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    union { int64_t i; double f; } u;
    u.i = ((int64_t)n + 1023) << 52;
    double y = p * u.f;
    return x < -708.0 ? 0.0 : y;
}

/* erf for float, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7 plus float
 * rounding), built on the vectorizable gm_nn_exp_f32; odd symmetry handles
 * negative arguments.  O(1). */
static inline float gm_erf_f32(float x)
{
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float r = 1.0f - p * t * gm_nn_exp_f32(-ax * ax);
    return x < 0 ? -r : r;
}

#define T float
#define GM_NN_NAME(name) name##_f32
#define GEMM GM_CBLAS(sgemm)
#define EXPF gm_nn_exp_f32
#define ERFF gm_erf_f32
#include "gm_nn_impl.h"
#undef T
#undef GM_NN_NAME
#undef GEMM
#undef EXPF
#undef ERFF

#define T double
#define GM_NN_NAME(name) name##_f64
#define GEMM GM_CBLAS(dgemm)
#define EXPF gm_nn_exp_f64
#define ERFF erf
#include "gm_nn_impl.h"
#undef T
#undef GM_NN_NAME
#undef GEMM
#undef EXPF
#undef ERFF

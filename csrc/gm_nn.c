/* gm_nn.c -- ViT building blocks for the torch-free DINOv2 backbone: linear
 * layers (+ bias, exact GELU, residual accumulation) and SwiGLU.  Its
 * LayerNorm is gm_layernorm.c and its attention gm_attention.c (shared with
 * the head).  float and double versions are generated from gm_nn_tpl.h. */
#include "geomatch.h"
#include "gm_blas.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* erf for float, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7 plus float
 * rounding), built on the vectorizable gm_exp_f32; odd symmetry handles
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
    float r = 1.0f - p * t * gm_exp_f32(-ax * ax);
    return x < 0 ? -r : r;
}

/* erf for double: libm's. */
static inline double gm_erf_f64(double x) { return erf(x); }

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_nn_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_nn_tpl.h"
#include "gm_tpl_end.h"

/* Exact GELU in place over n floats: one function (not inlined), so the
 * bf16 linear layer's separate pass and its fused epilogue run the same
 * machine code on every value.  O(n). */
__attribute__((noinline)) void gm_nn_gelu_f32(float *y, size_t n)
{
    gm_nn_bias_gelu_f32(y, NULL, n);
}

/* Exact GELU in place over n rows of d floats (the bf16 linear layer's
 * activation pass, gm_bf16.c).  O(n d). */
void gm_nn_gelu_rows_f32(float *y, size_t n, size_t d, int nthreads)
{
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 16)
    for (long i = 0; i < (long)n; i++) gm_nn_gelu_f32(y + (size_t)i * d, d);
}

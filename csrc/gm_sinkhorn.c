/* gm_sinkhorn.c -- entropic optimal transport (balanced, unbalanced and
 * semi-relaxed Sinkhorn), batched, float and double.
 *
 * Problem: minimize <C, P> + reg sum_ij P_ij (log P_ij - 1)
 *                  + reg_m_a KL(P 1 | a) + reg_m_b KL(P^T 1 | b)
 * (counting-measure entropy, kernel exp(-C/reg); a marginal weight of +inf
 * makes that marginal a hard constraint, so both infinite = balanced OT).
 * With phi = reg_m / (reg_m + reg) (1 for a hard constraint) the
 * alternating dual updates are
 *   f_i = phi_a (reg log a_i - reg LSE_j((g_j - C_ij)/reg)),
 *   g_j = phi_b (reg log b_j - reg LSE_i((f_i - C_ij)/reg)),
 * rows first, potentials starting at 0, and the plan is
 *   P_ij = exp((f_i + g_j - C_ij)/reg)      (f = reg log u in POT's terms).
 *
 * Every iteration is ONE pass over the n x m matrix: each row is updated
 * and, while it is in cache, its new plan entries are added into column
 * partial sums of its block of GM_SK_RB rows; the column update then sums
 * the blocks in block order.  The blocks are fixed (not per thread), so the
 * result does not depend on the thread count.  The column sums are the
 * column marginal of the plan after the row update, which gives the
 * stopping test for free: the iteration stops when the max over columns of
 * the change of the column marginal made by the column update is < tol
 * (for balanced OT that change is exactly max_j |(P^T 1)_j - b_j|).
 *
 * Two ways to do a pass, chosen automatically:
 *  - log domain: one exp per entry, with a per-row max shift (never
 *    overflows; a column whose sums underflowed is recomputed exactly);
 *  - kernel domain (fast path): K_ij = exp((f0_i + g0_j - C_ij)/reg) is
 *    stored (in the output buffer P) by a log pass, then iterations run on
 *    scalings u, v (P = u K v: two flops per entry, no exp) until some
 *    scaling leaves [1/tau, tau]; then u, v are absorbed into f, g and K is
 *    rebuilt by the next log pass (sinkhorn_stabilized-style).  When the
 *    kernel domain keeps breaking down (very small reg), the rebuilds back
 *    off exponentially and log passes do the work. */
#include "geomatch.h"
#include <stdint.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define GM_SK_RB 32          /* rows per column-partial-sum block */
#ifndef GM_SK_FORCE_LOG
#define GM_SK_FORCE_LOG 0   /* testing: never use the kernel domain */
#endif
#define GM_SK_CB 64          /* columns per column-pass chunk */
#define GM_SK_MINRUN 4       /* kernel runs shorter than this back off */
#define GM_SK_MAXBACKOFF 64  /* at most this many log passes between tries */
#define GM_SK_SMALL 131072   /* n*m below this: parallel over the batch */
#define GM_SK_PARMIN 131072  /* n*m from this: threads inside a problem (one
                                fork/join per iteration must pay off) */
/* Balanced OT: relative tolerance on |sum a - sum b|. */
#define GM_SK_MASS_RTOL(T) (sizeof(T) == 4 ? 1e-5 : 1e-6)

/* exp(x) for the hot loops: gm_exp_f32/f64's algorithm (gm_math.h) with
 * round-to-nearest-even (rint) for the range reduction: GCC 12 does not
 * vectorize roundf without -ffast-math (it emits a libm call per element),
 * but vectorizes rint.  Same accuracy (|r| <= ln2/2 either way); 0 below
 * the underflow limit, clamped above the overflow limit. */
static inline float gm_sk_exp_f32(float x)
{
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = __builtin_rintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

static inline double gm_sk_exp_f64(double x)
{
    double xc = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double n = __builtin_rint(xc * 1.4426950408889634074);
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
    int64_t bits = ((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -708.0 ? 0.0 : p * scale;
}

/* Thread number inside the current team (0 outside OpenMP). */
static int gm_sk_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#define T float
#define SFX(x) x##_f32
#define EXPT gm_sk_exp_f32
#define SK_TAU 1e4
#include "gm_sinkhorn_tmpl.h"
#undef T
#undef SFX
#undef EXPT
#undef SK_TAU

#define T double
#define SFX(x) x##_f64
#define EXPT gm_sk_exp_f64
#define SK_TAU 1e8
#include "gm_sinkhorn_tmpl.h"
#undef T
#undef SFX
#undef EXPT
#undef SK_TAU

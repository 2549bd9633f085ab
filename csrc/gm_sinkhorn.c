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
#include "gm_math.h"
#include "gm_parallel.h"
#include <stdint.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>


#define GM_SK_RB 32          /* rows per column-partial-sum block */
#ifndef GM_SK_FORCE_LOG
#define GM_SK_FORCE_LOG 0   /* testing: never use the kernel domain */
#endif
#define GM_SK_CB 64          /* columns per column-pass chunk */
#define GM_SK_MINRUN 4       /* kernel runs shorter than this back off */
#define GM_SK_MAXBACKOFF 64  /* at most this many log passes between tries */
/* Balanced OT: relative tolerance on |sum a - sum b|. */
#define GM_SK_MASS_RTOL(T) (sizeof(T) == 4 ? 1e-5 : 1e-6)

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_sinkhorn_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_sinkhorn_tpl.h"
#include "gm_tpl_end.h"

/* gm_dustbin.c -- the dustbin OT layer (GECO / SuperGlue style), forward and
 * reverse-mode vector-Jacobian product.
 *
 * Problem (docs/method.md, "Dustbin layer"): scores S (N x M)
 * are augmented to S~ ((N+1) x (M+1)) whose extra row, column and corner hold
 * bin_score; with lam = 1/reg and phi = reg_m/(reg_m+reg), potentials start
 * at zero and each of n_iter iterations performs
 *     u_i = (phi/lam) (log mu_i - LSE_j(lam S~_ij + lam v_j))
 *     v_j = (phi/lam) (log nu_j - LSE_i(lam S~_ij + lam u_i));
 * the plan is P_ij = exp(lam (S~_ij + u_i + v_j)).
 *
 * Two exact evaluations of the same recursion:
 *  - kernel domain (fast): K'_ij = exp(lam (S~_ij - c)) with c the centre of
 *    the range of S~, computed once; every half-iteration is one matrix-vector
 *    product with K' (or K'^T) and O(N+M) work in double on log potentials,
 *    which are re-normalized (max 1) every step so nothing over/underflows.
 *    Used when lam * range(S~) / 2 <= DB_LMAX (30 in float, 300 in double):
 *    then every sum is >= exp(-L) and terms lost to underflow are below
 *    1e-15 relative (see db_plan_rows for the plan).
 *  - log domain (fallback): literal log-sum-exp sweeps.
 * Threads: rows are reduced by one thread each; column sums are computed by
 * column blocks with each column summed in row order; sums that cross both
 * use fixed-size chunk partials.  Results never depend on the thread count.
 */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "geomatch.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* ---- shared scalar helpers ---------------------------------------------- */

/* Natural log of a positive normal double, branch-free and vectorizable:
 * x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1))
 * by its odd series to f^21 (|f| <= 0.1716: truncation < 1e-19).  O(1). */
static inline double db_log_fast(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t e = (int64_t)((bits >> 52) & 0x7ff) - 1023;
    uint64_t mb = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &mb, sizeof m);
    double big = m > 1.4142135623730951 ? 1.0 : 0.0;
    m = m * (1.0 - 0.5 * big);
    double ed = (double)e + big;
    double f = (m - 1.0) / (m + 1.0);
    double s = f * f;
    static const double c[11] = {1.0 / 21.0, 1.0 / 19.0, 1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0,
                                 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0};
    double p = gm_horner_f64(s, c, 11);
    return ed * 6.93147180369123816490e-01 + (2.0 * f * p + ed * 1.90821492927058770002e-10);
}

/* out[i] = log(x[i]) for n positive finite values (libm for subnormals);
 * out must not alias x.  O(n), vectorized. */
static void db_log_array(const double *x, double *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = db_log_fast(x[i]);
    for (size_t i = 0; i < n; i++)
        if (!(x[i] >= DBL_MIN && x[i] <= DBL_MAX)) out[i] = log(x[i]);
}

/* Hint that the cache line at p will be read soon (GCC and Clang; nothing
 * elsewhere). */
#if defined(__GNUC__)
#define DB_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define DB_PREFETCH(p) ((void)(p))
#endif

/* `bytes` bytes aligned to 64 (a cache line, one AVX-512 vector), zeroed
 * when `zero`; NULL on failure.  Freed with free().  O(bytes) when zeroed. */
static void *db_amalloc(size_t bytes, int zero)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;
    if (zero) memset(p, 0, bytes);
    return p;
}

/* Threads for a problem with `work` matrix entries (gm_parallel.h's policy:
 * one below 2**17 entries, where the ~2 thread synchronizations per
 * iteration would dominate). */
static int db_threads(size_t work) { return gm_threads_for((double)work * GM_WORK_EXP); }

#define db_tid gm_thread_id
#define db_nth gm_team_size

/* Column range [j0, j1) of this thread: blocks of 16 columns split evenly. */
static void db_col_range(size_t m, size_t *j0, size_t *j1)
{
    size_t nb = (m + 15) / 16, t = (size_t)db_tid(), nt = (size_t)db_nth();
    size_t b0 = nb * t / nt, b1 = nb * (t + 1) / nt;
    *j0 = 16 * b0;
    *j1 = 16 * b1 < m ? 16 * b1 : m;
    if (*j0 > m) *j0 = m;
}

/* This thread's share [k0, k1) of nk row chunks of DB_CHUNK rows, in
 * contiguous runs; the extra chunk of an uneven split goes to the last
 * threads, which hold the short last chunk (with 2 threads and N = 1369:
 * 672 and 697 rows, where OpenMP's static schedule gives 704 and 665).  The
 * split changes no result: every chunk writes its own rows and partial.
 * O(1). */
static void db_chunk_range(size_t nk, size_t *k0, size_t *k1)
{
    size_t t = (size_t)db_tid(), nt = (size_t)db_nth();
    *k0 = nk * t / nt;
    *k1 = nk * (t + 1) / nt;
}

/* Per-thread statistics of an iteration (slot k of thread `tid`): the max
 * of the column log potentials lb, the min and max of Delta_j = lb^t_j -
 * lb^{t-1}_j over columns of positive mass, the max of the row log
 * potentials la over rows of positive mass.  Min and max are exact, so
 * combining them over threads does not depend on the thread count. */
#define DB_TST 8 /* slots per thread: one cache line of doubles */
enum { DB_ST_LBMAX = 0, DB_ST_DMIN = 1, DB_ST_DMAX = 2, DB_ST_LAMAX = 3 };

/* The la max of iteration t is written at the end of a thread's sweep while
 * a slower thread may still read that of t-1: two slots by parity. */
#define DB_ST_LA(t) (DB_ST_LAMAX + ((t) & 1))

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_dustbin_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_dustbin_tpl.h"
#include "gm_tpl_end.h"

/* geomatch.h -- the one public header of geomatch's C core.
 *
 * Pure C99, no Python.  Every kernel returns an int status: GM_OK (0) or one
 * of the negative GM_ERR_* codes below; outputs are written only on success
 * unless documented otherwise.  Arrays are dense, C-contiguous, row-major.
 * Kernels come in float (suffix _f32) and double (suffix _f64) versions.
 * Threads: OpenMP; results never depend on the thread count (every output
 * element is reduced by one thread in a fixed order). */
#ifndef GEOMATCH_H
#define GEOMATCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------ */
#define GM_OK 0
#define GM_ERR_NOMEM (-1)     /* an allocation failed */
#define GM_ERR_INVALID (-2)   /* a size or scalar parameter out of range */
#define GM_ERR_NUMERIC (-3)   /* the computation overflowed / produced NaN */
/* A non-finite (NaN/inf) value in input argument number k (0-based, in the
 * order of the C function's array arguments): GM_ERR_NONFINITE_ARG(k). */
#define GM_ERR_NONFINITE_BASE (-100)
#define GM_ERR_NONFINITE_ARG(k) (GM_ERR_NONFINITE_BASE - (k))
/* A negative value in input argument k where masses are expected. */
#define GM_ERR_NEGATIVE_BASE (-200)
#define GM_ERR_NEGATIVE_ARG(k) (GM_ERR_NEGATIVE_BASE - (k))
/* An all-zero mass vector in input argument k. */
#define GM_ERR_ZEROMASS_BASE (-300)
#define GM_ERR_ZEROMASS_ARG(k) (GM_ERR_ZEROMASS_BASE - (k))

/* Short English text for a status code (static storage). */
const char *gm_strerror(int status);

/* ---- threads and configuration ----------------------------------------- */
/* Set the number of OpenMP threads used by every kernel (n >= 1) and by the
 * BLAS library.  Returns GM_ERR_INVALID for n < 1. */
int gm_set_num_threads(int n);
/* Number of threads kernels will use. */
int gm_get_num_threads(void);
/* Number of processors OpenMP sees. */
int gm_num_procs(void);
/* BLAS library description, e.g. "OpenBLAS 0.3.34 DYNAMIC_ARCH ...". */
const char *gm_blas_config(void);
/* Name of the BLAS build's kernel for this CPU (e.g. "Zen"). */
const char *gm_blas_corename(void);
/* BLAS threading model: 0 sequential, 1 pthreads, 2 OpenMP. */
int gm_blas_parallel(void);
/* Highest SIMD instruction set the core was compiled for, e.g. "AVX512F". */
const char *gm_simd_level(void);
/* 1 if the core was built with OpenMP. */
int gm_have_openmp(void);

/* ---- finite checks (shared helper) -------------------------------------- */
/* Return 1 if all n values are finite, else 0.  O(n), one pass. */
int gm_all_finite_f32(const float *x, size_t n);
int gm_all_finite_f64(const double *x, size_t n);

/* ==== kernels: cosine similarity ========================================= */
/* @@section similarity */
/* @@end similarity */

/* ==== kernels: Sinkhorn (balanced / unbalanced) ========================== */
/* @@section sinkhorn */
/* Entropic OT: minimize <C,P> + reg sum P(log P - 1) + reg_m_a KL(P1|a)
 * + reg_m_b KL(P^T1|b) for `batch` problems stored back to back (C: batch x
 * n x m, a: batch x n, b: batch x m, all contiguous).  reg_m_* = INFINITY
 * makes that marginal a hard constraint (both: balanced OT, which requires
 * sum a == sum b to a relative 1e-5 (float) / 1e-6 (double), else
 * GM_ERR_INVALID); reg_m = 0 ignores that marginal.  Iterates (rows, then
 * columns) until the max change of the column marginal made by an
 * iteration's column update is < tol, or max_iter iterations.
 * Outputs: P (batch x n x m) the plan; optional (NULL to skip) f (batch x n)
 * and g (batch x m) the dual potentials in cost units (POT's reg*log u,
 * reg*log v), with P_ij = exp((f_i + g_j - C_ij)/reg) and -inf where a mass
 * is 0; n_iter (batch) the iterations done; err (batch) the last marginal
 * change.  Status: GM_ERR_INVALID (sizes, reg <= 0, reg_m < 0, max_iter < 1,
 * tol < 0, unequal masses), GM_ERR_NONFINITE_ARG(0..2) (C, a, b),
 * GM_ERR_NEGATIVE_ARG(1..2), GM_ERR_ZEROMASS_ARG(1..2), GM_ERR_NUMERIC,
 * GM_ERR_NOMEM.  Cost O(batch * iterations * n * m); results identical for
 * any thread count. */
int gm_sinkhorn_f32(const float *C, const float *a, const float *b, size_t batch,
                    size_t n, size_t m, double reg, double reg_m_a, double reg_m_b,
                    int max_iter, double tol, float *P, float *f, float *g,
                    int *n_iter, double *err);
int gm_sinkhorn_f64(const double *C, const double *a, const double *b, size_t batch,
                    size_t n, size_t m, double reg, double reg_m_a, double reg_m_b,
                    int max_iter, double tol, double *P, double *f, double *g,
                    int *n_iter, double *err);
/* @@end sinkhorn */

/* ==== kernels: dustbin OT layer, forward and backward ==================== */
/* @@section dustbin */
/* @@end dustbin */

/* ==== kernels: argmax / window soft-argmax =============================== */
/* @@section softargmax */
/* @@end softargmax */

/* ==== kernels: keypoint transfer (upsample-argmax) ======================= */
/* @@section transfer */
/* @@end transfer */

/* ==== kernels: backbone / head building blocks =========================== */
/* @@section nn */
/* @@end nn */

#ifdef __cplusplus
}
#endif

#endif /* GEOMATCH_H */

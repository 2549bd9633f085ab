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
/* @@end sinkhorn */

/* ==== kernels: dustbin OT layer, forward and backward ==================== */
/* @@section dustbin */
/* The dustbin OT layer of DESIGN.md ("Partial assignment with a dustbin").
 * S: N x M scores; mu: N+1 and nu: M+1 marginals (dustbin masses last; >= 0,
 * not all zero; zero entries give zero plan rows/columns); bin_score: the
 * value of the extra row, column and corner; lam = 1/reg (reg > 0);
 * phi = reg_m/(reg_m+reg) (reg_m >= 0, INFINITY gives phi = 1); n_iter >= 1
 * row-then-column log-domain updates from zero potentials.
 * method: GM_DUSTBIN_AUTO (kernel domain when lam*range(S~)/2 <= 30 in float,
 * 300 in double, else log domain), GM_DUSTBIN_KERNEL (GM_ERR_NUMERIC when
 * that bound fails), GM_DUSTBIN_LOG.  *method_used (may be NULL) receives
 * GM_DUSTBIN_KERNEL or GM_DUSTBIN_LOG.  Array arguments for status codes:
 * 0 S, 1 mu, 2 nu, 3 G.  Cost O(n_iter N M); memory O(n_iter (N + M)).
 * Forward: P ((N+1) x (M+1)) receives the plan exp(lam (S~ + u + v)). */
#define GM_DUSTBIN_AUTO 0
#define GM_DUSTBIN_KERNEL 1
#define GM_DUSTBIN_LOG 2
int gm_dustbin_sinkhorn_f32(const float *S, const float *mu, const float *nu, size_t N,
                            size_t M, double bin_score, double reg, double reg_m,
                            int n_iter, int method, float *P, int *method_used);
int gm_dustbin_sinkhorn_f64(const double *S, const double *mu, const double *nu, size_t N,
                            size_t M, double bin_score, double reg, double reg_m,
                            int n_iter, int method, double *P, int *method_used);
/* Vector-Jacobian product by reverse mode through the n_iter iterations:
 * G ((N+1) x (M+1)) is dL/dP (wrt_log = 0) or dL/dlog P (wrt_log = 1);
 * dS (N x M) receives dL/dS and *dbin (may be NULL) dL/dbin_score.  The
 * forward is recomputed inside (same path choice as the forward). */
int gm_dustbin_sinkhorn_vjp_f32(const float *S, const float *mu, const float *nu,
                                const float *G, size_t N, size_t M, double bin_score,
                                double reg, double reg_m, int n_iter, int method,
                                int wrt_log, float *dS, double *dbin, int *method_used);
int gm_dustbin_sinkhorn_vjp_f64(const double *S, const double *mu, const double *nu,
                                const double *G, size_t N, size_t M, double bin_score,
                                double reg, double reg_m, int n_iter, int method,
                                int wrt_log, double *dS, double *dbin, int *method_used);
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

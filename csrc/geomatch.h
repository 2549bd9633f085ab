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
/* Copy `rows` rows of length d from x to out (both dense, rows x d), each
 * divided by its Euclidean norm; an all-zero row stays all zero (so its
 * cosine similarity with anything is 0).  Overflow/underflow-safe norm.
 * GM_ERR_NONFINITE_ARG(0) if x holds NaN/inf.  x and out may be the same
 * buffer.  OpenMP over rows.  O(rows * d). */
int gm_l2_normalize_rows_f32(const float *x, float *out, size_t rows, size_t d);
int gm_l2_normalize_rows_f64(const double *x, double *out, size_t rows, size_t d);
/* Cosine similarity: out[b, i, j] = <x[b, i], y[b, j]> / (|x[b, i]| |y[b, j]|)
 * for x (batch, n, d), y (batch, m, d), out (batch, n, m); 0 where either
 * row is all zero.  Rows are normalized into an (n + m) * d scratch buffer,
 * then one BLAS GEMM per batch item.  GM_ERR_NONFINITE_ARG(0 or 1) for
 * NaN/inf in x or y, GM_ERR_INVALID for n, m or d above INT_MAX,
 * GM_ERR_NOMEM.  O(batch * n * m * d). */
int gm_cosine_similarity_f32(const float *x, const float *y, float *out, size_t batch,
                             size_t n, size_t m, size_t d);
int gm_cosine_similarity_f64(const double *x, const double *y, double *out, size_t batch,
                             size_t n, size_t m, size_t d);
/* @@end similarity */

/* ==== kernels: Sinkhorn (balanced / unbalanced) ========================== */
/* @@section sinkhorn */
/* @@end sinkhorn */

/* ==== kernels: dustbin OT layer, forward and backward ==================== */
/* @@section dustbin */
/* @@end dustbin */

/* ==== kernels: argmax / window soft-argmax =============================== */
/* @@section softargmax */
/* sim holds nmaps maps of h * w values each, row-major (cell (r, c) at
 * r * w + c); coordinates are (x, y) = (column, row) on that grid.
 * Both return GM_ERR_NONFINITE_ARG(0) if sim holds NaN/inf and
 * GM_ERR_INVALID for h == 0 or w == 0.  OpenMP over maps. */
/* out_xy (nmaps, 2): integer (x, y) of the first maximum in row-major order
 * (NumPy's argmax rule).  O(nmaps * h * w). */
int gm_argmax_2d_f32(const float *sim, size_t nmaps, size_t h, size_t w, int64_t *out_xy);
int gm_argmax_2d_f64(const double *sim, size_t nmaps, size_t h, size_t w, int64_t *out_xy);
/* out_xy (nmaps, 2): window soft-argmax (GeoAware-SC's soft evaluation):
 * the first maximum (r*, c*), then p(r, c) = softmax over the window
 * |r - r*| <= window, |c - c*| <= window (clipped at the border) of
 * sim / temperature, and out = sum p(r, c) * (c, r).  window >= 0 and a
 * finite temperature > 0, else GM_ERR_INVALID.
 * O(nmaps * (h * w + (2 * window + 1)^2)). */
int gm_window_soft_argmax_f32(const float *sim, size_t nmaps, size_t h, size_t w,
                              long window, double temperature, float *out_xy);
int gm_window_soft_argmax_f64(const double *sim, size_t nmaps, size_t h, size_t w,
                              long window, double temperature, double *out_xy);
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

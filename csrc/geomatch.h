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
/* @@end dustbin */

/* ==== kernels: argmax / window soft-argmax =============================== */
/* @@section softargmax */
/* @@end softargmax */

/* ==== kernels: keypoint transfer (upsample-argmax) ======================= */
/* @@section transfer */
/* @@end transfer */

/* ==== kernels: backbone / head building blocks =========================== */
/* @@section nn */
/* Activations for gm_nn_linear. */
#define GM_NN_ACT_NONE 0
#define GM_NN_ACT_GELU 1 /* exact GELU, 0.5 x (1 + erf(x / sqrt 2)) */
/* y (n x dout) = act(x (n x din) w^T + b), or y += x w^T + b when
 * accumulate (act must then be NONE).  w is dout x din; b may be NULL.
 * One BLAS GEMM, O(n din dout). */
int gm_nn_linear_f32(const float *x, size_t n, size_t din, const float *w, const float *b,
                     size_t dout, int act, int accumulate, float *y);
int gm_nn_linear_f64(const double *x, size_t n, size_t din, const double *w,
                     const double *b, size_t dout, int act, int accumulate, double *y);
/* Row-wise LayerNorm of x (n x d) into y (may alias x); gamma/beta may be
 * NULL.  O(n d). */
int gm_nn_layernorm_f32(const float *x, size_t n, size_t d, const float *gamma,
                        const float *beta, double eps, float *y);
int gm_nn_layernorm_f64(const double *x, size_t n, size_t d, const double *gamma,
                        const double *beta, double eps, double *y);
/* SwiGLU gate: y (n x hidden) = silu(h[:, :hidden]) * h[:, hidden:].  O(n hidden). */
int gm_nn_swiglu_f32(const float *h, size_t n, size_t hidden, float *y);
int gm_nn_swiglu_f64(const double *h, size_t n, size_t hidden, double *y);
/* Multi-head self-attention core: qkv (batch x n x 3*heads*hd, [q|k|v]) ->
 * out (batch x n x heads*hd) = softmax(q k^T / sqrt(hd)) v per head.
 * O(batch heads n^2 hd) time, O(threads * 128 * n) scratch. */
int gm_nn_attention_f32(const float *qkv, size_t batch, size_t n, size_t heads, size_t hd,
                        float *out);
int gm_nn_attention_f64(const double *qkv, size_t batch, size_t n, size_t heads,
                        size_t hd, double *out);
/* @@end nn */

#ifdef __cplusplus
}
#endif

#endif /* GEOMATCH_H */

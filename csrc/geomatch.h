/* geomatch.h -- the one public header of geomatch's C core.
 *
 * ISO C11 (no GNU extensions) with OpenMP and POSIX threads, no Python.
 * Every kernel validates its own arguments and returns an int status: GM_OK
 * (0) or one of the negative GM_ERR_* codes below, most of which name the
 * offending argument by its position; gm_error_detail() then gives the
 * numbers behind a failure where the kernel recorded them.  Outputs are
 * written only on success unless documented otherwise.  Arrays are dense,
 * C-contiguous, row-major.  Kernels come in float (suffix _f32) and double
 * (suffix _f64) versions.  Threads: OpenMP, with one process-wide thread
 * count (gm_set_num_threads); results never depend on the thread count
 * (every output element is reduced by one thread in a fixed order). */
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
#define GM_ERR_UNBALANCED (-4) /* balanced OT with sum(a) != sum(b) */
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
/* A value of argument k outside its allowed range (a keypoint outside its
 * image, an image size beyond GM_MAX_IMAGE_SIDE, ...). */
#define GM_ERR_RANGE_BASE (-400)
#define GM_ERR_RANGE_ARG(k) (GM_ERR_RANGE_BASE - (k))
/* 1 if status is BASE_ARG(k) for some argument k, for a *_BASE above. */
#define GM_ERR_IS(status, base) ((status) <= (base) && (status) > (base) - 100)
/* The argument k of a status GM_ERR_IS(status, base). */
#define GM_ERR_ARG(status, base) ((base) - (status))

/* ---- size policy ---------------------------------------------------------
 * Limits every kernel enforces before it allocates or loops (docs/limits.md,
 * "C core"): an image side (W or H) of at most GM_MAX_IMAGE_SIDE pixels, at
 * most GM_MAX_THREADS threads. */
#define GM_MAX_IMAGE_SIDE 65536
#define GM_MAX_THREADS 4096

/* Short English text for a status code (static storage). */
const char *gm_strerror(int status);
/* Details of the last failure recorded on the calling thread (the values
 * behind it, e.g. "sum(a)=0.75, sum(b)=1.25"), "" if none.  Kernels record
 * them (gm_fail) from the calling thread only; call gm_clear_error() before
 * a kernel to tell its details from an earlier call's. */
const char *gm_error_detail(void);
void gm_clear_error(void);
/* Record printf-style details for the calling thread; returns status. */
int gm_fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- threads and configuration ----------------------------------------- */
/* Set the number of threads used by every kernel (1 <= n <= GM_MAX_THREADS)
 * and by the BLAS library, for the whole process: kernels called from any
 * thread use it.  Returns GM_ERR_INVALID otherwise.  In a child made by
 * fork() the count is reset to 1 (GNU OpenMP cannot use the parent's
 * threads there; see docs/limits.md). */
int gm_set_num_threads(int n);
/* Number of threads kernels will use (OMP_NUM_THREADS or the processor
 * count until gm_set_num_threads is called). */
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

/* ==== matrix product on the core's threads ============================== */
/* C = alpha op(A) op(B) + beta C, row-major, op(X) = X^T when trans_x != 0:
 * op(A) is m x k (A stored m x k with row stride lda >= k, or k x m with
 * lda >= m when transposed), op(B) k x n (ldb >= n, or >= k transposed),
 * C m x n (ldc >= n).  The rows of C (its columns when m < n) are split
 * into one block per OpenMP thread, each one single-threaded BLAS call: no
 * BLAS thread pool runs beside OpenMP's.  GM_ERR_INVALID for a zero size,
 * a size above INT_MAX or a leading dimension too small.  O(m n k). */
int gm_gemm_f32(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                size_t ldc);
int gm_gemm_f64(int trans_a, int trans_b, size_t m, size_t n, size_t k, double alpha,
                const double *a, size_t lda, const double *b, size_t ldb, double beta,
                double *c, size_t ldc);
/* float32 GEMM of the core for CPUs with AVX-512 (gm_sgemm_avx512.c): same
 * arguments as gm_gemm_f32, threads over blocks of C; the sum over k is cut
 * into blocks fixed by k alone, so results do not depend on the thread
 * count or on how a caller splits C.  GM_ERR_INVALID on a CPU without
 * AVX-512, GM_ERR_NOMEM.  gm_gemm_f32, gm_nn_linear_f32 and every other
 * float32 product of the core (gm_sgemm_dispatch) use it when
 * gm_sgemm_uses_avx512() (mode GM_SGEMM_AUTO on an AVX-512 CPU, or
 * GM_SGEMM_AVX512); GM_SGEMM_BLAS keeps OpenBLAS's sgemm.  gm_sgemm_set_mode:
 * GM_ERR_INVALID for an unknown mode or GM_SGEMM_AVX512 on a CPU without
 * AVX-512.  gm_fma_peak_gflops(width, iters, reps): GFLOP/s of a
 * register-only float32 FMA loop on the calling thread, width 256 (AVX2) or
 * 512 (AVX-512); a negative GM_ERR_INVALID where the CPU lacks it. */
#define GM_SGEMM_AUTO 0
#define GM_SGEMM_AVX512 1
#define GM_SGEMM_BLAS 2
int gm_sgemm_avx512(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                    size_t ldc);
int gm_sgemm_avx512_supported(void);
/* gm_sgemm_avx512_abt: C = alpha A B^T (A m x k, lda >= k; B n x k, ldb >= k;
 * C m x n, ldc >= n, overwritten), every element bit for bit what
 * gm_sgemm_avx512(0, 1, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc) computes
 * (finite inputs), but computed as C^T = B A^T with B's rows read in place:
 * B is never packed (transposed), A^T is packed into panels of 32 or 16
 * columns.  For a small m and a large B read once (the keypoint transfer's
 * grid dots: m keypoints, B the target map).  Threads over units of 28 rows
 * of B; results identical for any thread count.  GM_ERR_INVALID (zero size,
 * leading dimension too small, no AVX-512), GM_ERR_NOMEM.  O(m n k). */
int gm_sgemm_avx512_abt(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float *c, size_t ldc);
int gm_avx2_supported(void);
int gm_sgemm_set_mode(int mode);
int gm_sgemm_get_mode(void);
int gm_sgemm_uses_avx512(void);
double gm_fma_peak_gflops(int width, long iters, int reps);
/* gm_bf16_peak_gflops(iters, reps): the same for AVX512_BF16 VDPBF16PS on zmm
 * (4 flops per lane and instruction: two products, two additions), in
 * gm_bf16.c; a negative GM_ERR_INVALID where the CPU lacks AVX512_BF16. */
double gm_bf16_peak_gflops(long iters, int reps);

/* ==== kernels: cosine similarity ========================================= */
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

/* ==== kernels: Sinkhorn (balanced / unbalanced) ========================== */
/* Entropic OT: minimize <C,P> + reg sum P(log P - 1) + reg_m_a KL(P1|a)
 * + reg_m_b KL(P^T1|b) for `batch` problems stored back to back (C: batch x
 * n x m, a: batch x n, b: batch x m, all contiguous).  reg_m_* = INFINITY
 * makes that marginal a hard constraint (both: balanced OT, which requires
 * sum a == sum b to a relative 1e-5 (float) / 1e-6 (double), else
 * GM_ERR_UNBALANCED with both sums in gm_error_detail()); reg_m = 0 ignores
 * that marginal.  Iterates (rows, then
 * columns) until the max change of the column marginal made by an
 * iteration's column update is < tol, or max_iter iterations.
 * Outputs: P (batch x n x m) the plan; optional (NULL to skip) f (batch x n)
 * and g (batch x m) the dual potentials in cost units (POT's reg*log u,
 * reg*log v), with P_ij = exp((f_i + g_j - C_ij)/reg) and -inf where a mass
 * is 0; n_iter (batch) the iterations done; err (batch) the last marginal
 * change.  Status: GM_ERR_INVALID (sizes, reg <= 0, reg_m < 0, max_iter < 1,
 * tol < 0), GM_ERR_UNBALANCED, GM_ERR_NONFINITE_ARG(0..2) (C, a, b),
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

/* ==== kernels: dustbin OT layer, forward and backward ==================== */
/* The dustbin OT layer of docs/method.md ("Dustbin layer").
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

/* ==== kernels: argmax / window soft-argmax =============================== */
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

/* ==== conversion ========================================================= */
/* y[i] = x[i] for n IEEE half-precision values x (their bits as uint16),
 * exactly; every value is written.  GM_ERR_NONFINITE_ARG(0) if any is
 * infinite or NaN (converted all the same), GM_ERR_INVALID for NULL
 * pointers with n > 0.  O(n). */
int gm_f16_to_f32(const uint16_t *x, float *y, size_t n);
/* GM_OK if the n half-precision values x are all finite, else
 * GM_ERR_NONFINITE_ARG(0) (GM_ERR_INVALID for NULL x with n > 0).  O(n). */
int gm_f16_all_finite(const uint16_t *x, size_t n);

/* ==== kernels: keypoint transfer (upsample-argmax) ======================= */
/* Keypoint transfer by exact upsample-argmax (the published protocol):
 * both feature maps -- src_feat (batch, hs, ws, dim) and trg_feat
 * (batch, ht, wt, dim), channel-last, C-contiguous -- are taken as upsampled
 * bilinearly to their image sizes with PyTorch's align_corners=False rule
 * (source coordinate s = (dst + 0.5) in/out - 0.5, s < 0 clamped to 0, the
 * upper tap clamped to in - 1); the source descriptor of keypoint (x, y) is
 * the upsampled source map at pixel (floor(y), floor(x)); the prediction is
 * the target pixel (X, Y) of maximal cosine similarity over all Wt x Ht
 * pixels (first pixel in row-major order on exact ties; a target
 * descriptor whose squared norm is below the smallest normal number counts
 * as zero and has cosine 0).  No upsampled map is materialized: cost
 * O(batch (ht wt dim (5 + nkps) + ht Wt + nkps (ht wt + E))), E the pixels
 * of the grid cells an exact branch and bound evaluates (a few hundred when
 * the cell bounds separate, else Ht Wt: the exhaustive scan).
 * src_kps: (batch, nkps, 2) as (x, y) with 0 <= x < Ws, 0 <= y < Hs;
 * src_size, trg_size: (batch, 2) as (W, H), each side 1 to
 * GM_MAX_IMAGE_SIDE (checked first, by gm_transfer_check).  out: (batch,
 * nkps, 2) integer-valued (X, Y).  Errors: GM_ERR_RANGE_ARG(2) (a keypoint
 * outside the source image), GM_ERR_RANGE_ARG(3 or 4) (src_size or trg_size
 * out of range), GM_ERR_INVALID (grid sizes), GM_ERR_NONFINITE_ARG(0..2)
 * for src_feat, trg_feat, src_kps, GM_ERR_NUMERIC if the Gram products
 * overflow, GM_ERR_NOMEM. */
int gm_transfer_upsample_argmax_f32(const float *src_feat, const float *trg_feat,
                                    const float *src_kps, const int64_t *src_size,
                                    const int64_t *trg_size, size_t batch, size_t hs,
                                    size_t ws, size_t ht, size_t wt, size_t dim,
                                    size_t nkps, float *out);
int gm_transfer_upsample_argmax_f64(const double *src_feat, const double *trg_feat,
                                    const double *src_kps, const int64_t *src_size,
                                    const int64_t *trg_size, size_t batch, size_t hs,
                                    size_t ws, size_t ht, size_t wt, size_t dim,
                                    size_t nkps, double *out);
/* gm_transfer_upsample_argmax with flags: GM_TRANSFER_SRC_FINITE skips the
 * scan of src_feat for non-finite values (a caller that has checked the map
 * already, like the evaluation's feature loader: the scan reads the whole map
 * for the few vectors the keypoints use); GM_TRANSFER_FULL_SCAN evaluates
 * every pixel for every keypoint instead of the exact branch and bound over
 * grid cells (same results, bit for bit: for tests and benchmarks);
 * GM_TRANSFER_PACKED_GEMM computes the float32 grid dots with the packed
 * gm_sgemm_avx512 (which transposes the target map) instead of
 * gm_sgemm_avx512_abt (same bits: for tests and benchmarks).  flags 0
 * is gm_transfer_upsample_argmax. */
#define GM_TRANSFER_SRC_FINITE 1
#define GM_TRANSFER_FULL_SCAN 2
#define GM_TRANSFER_PACKED_GEMM 4
int gm_transfer_upsample_argmax_ex_f32(const float *src_feat, const float *trg_feat,
                                       const float *src_kps, const int64_t *src_size,
                                       const int64_t *trg_size, size_t batch, size_t hs,
                                       size_t ws, size_t ht, size_t wt, size_t dim,
                                       size_t nkps, int flags, float *out);
int gm_transfer_upsample_argmax_ex_f64(const double *src_feat, const double *trg_feat,
                                       const double *src_kps, const int64_t *src_size,
                                       const int64_t *trg_size, size_t batch, size_t hs,
                                       size_t ws, size_t ht, size_t wt, size_t dim,
                                       size_t nkps, int flags, double *out);

/* gm_transfer_upsample_argmax_ex for npairs pairs that share one target map
 * trg_feat (ht, wt, dim) of size trg_size (W, H): pair p has the source map
 * src_feats[p] (hs, ws, dim), nkps[p] keypoints src_kps[p] (nkps[p], 2) in
 * an image of size src_size[2p], src_size[2p + 1], and gets its predictions
 * in outs[p] (nkps[p], 2).  Every keypoint's prediction is bit for bit that
 * of a call per pair; the target's tables are built once and the target is
 * read once for all the keypoints.  Errors as gm_transfer_upsample_argmax
 * (the details name the pair where they concern one). */
int gm_transfer_upsample_argmax_group_f32(const float *const *src_feats,
                                          const float *const *src_kps, const size_t *nkps,
                                          const int64_t *src_size, size_t npairs, size_t hs,
                                          size_t ws, const float *trg_feat,
                                          const int64_t *trg_size, size_t ht, size_t wt,
                                          size_t dim, int flags, float *const *outs);
int gm_transfer_upsample_argmax_group_f64(const double *const *src_feats,
                                          const double *const *src_kps, const size_t *nkps,
                                          const int64_t *src_size, size_t npairs, size_t hs,
                                          size_t ws, const double *trg_feat,
                                          const int64_t *trg_size, size_t ht, size_t wt,
                                          size_t dim, int flags, double *const *outs);

/* gm_transfer_upsample_argmax_group_f32 for feature maps stored in IEEE half
 * precision (their bits as uint16; keypoints and outputs float32): the
 * target is converted to float32 once (exactly) and each keypoint's <= 4
 * source vectors as they are read, so every prediction is bit for bit that
 * of the float32 call on the converted maps, without a float32 copy of the
 * sources.  A non-finite value in a source map (unless flags has
 * GM_TRANSFER_SRC_FINITE) or in the target is GM_ERR_NONFINITE_ARG(0) / (1).
 * work: ht wt dim floats for the converted target (a caller's buffer reused
 * between calls spares the system's zeroing of fresh pages), or NULL to
 * allocate one.  O(ht wt D) more than the float32 call for the conversion. */
int gm_transfer_upsample_argmax_group_f16(const uint16_t *const *src_feats,
                                          const float *const *src_kps, const size_t *nkps,
                                          const int64_t *src_size, size_t npairs, size_t hs,
                                          size_t ws, const uint16_t *trg_feat,
                                          const int64_t *trg_size, size_t ht, size_t wt,
                                          size_t dim, int flags, float *work,
                                          float *const *outs);

/* The size policy and keypoint checks of every transfer mode: each side of
 * src_size and trg_size (batch x (W, H)) within 1..GM_MAX_IMAGE_SIDE
 * (GM_ERR_RANGE_ARG(3) / (4)), src_kps (batch x nkps x (x, y)) finite
 * (GM_ERR_NONFINITE_ARG(2)) and inside the source image
 * (GM_ERR_RANGE_ARG(2)); argument numbers are those of
 * gm_transfer_upsample_argmax, details in gm_error_detail().  O(batch nkps). */
int gm_transfer_check_f32(const float *src_kps, const int64_t *src_size,
                          const int64_t *trg_size, size_t batch, size_t nkps);
int gm_transfer_check_f64(const double *src_kps, const int64_t *src_size,
                          const int64_t *trg_size, size_t batch, size_t nkps);
/* Linear-interpolation taps (PyTorch align_corners=False) of output sample
 * dst when resizing n_in samples to n_out: value = (1 - w1) v[i0] + w1 v[i1]. */
void gm_transfer_linear_taps(int64_t dst, int64_t n_in, int64_t n_out,
                             int64_t *i0, int64_t *i1, double *w1);

/* ==== kernels: backbone / head building blocks =========================== */
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
 * NULL.  The one LayerNorm of the core: gm_layernorm_fwd with nothing kept.
 * O(n d). */
int gm_nn_layernorm_f32(const float *x, size_t n, size_t d, const float *gamma,
                        const float *beta, double eps, float *y);
int gm_nn_layernorm_f64(const double *x, size_t n, size_t d, const double *gamma,
                        const double *beta, double eps, double *y);
/* SwiGLU gate: y (n x hidden) = silu(h[:, :hidden]) * h[:, hidden:].  O(n hidden). */
int gm_nn_swiglu_f32(const float *h, size_t n, size_t hidden, float *y);
int gm_nn_swiglu_f64(const double *h, size_t n, size_t hidden, double *y);
/* Multi-head self-attention core: qkv (batch x n x 3*heads*hd, [q|k|v]) ->
 * out (batch x n x heads*hd) = softmax(q k^T / sqrt(hd)) v per head, keeping
 * nothing (gm_attention.c).  Two kernels:
 *   GM_NN_ATTN_TILED: 128 query rows per task, scores (128 x n) written to a
 *     scratch between two BLAS products; O(threads * 128 * n) scratch;
 *   GM_NN_ATTN_FUSED: float32, head dimension 64, AVX-512 CPUs only
 *     (gm_nn_attention_fused_supported): flash-style, 4 query rows against
 *     64-key blocks, scores in registers, online softmax in float32; the
 *     n x n score matrix is never written; O(heads * n * hd) scratch.
 * GM_NN_ATTN_AUTO (what gm_nn_attention_f32/f64 use) picks the fused kernel
 * where it applies, else the tiled one.  Asking for the fused kernel where
 * it does not apply returns GM_ERR_INVALID.  O(batch heads n^2 hd) time. */
#define GM_NN_ATTN_AUTO 0
#define GM_NN_ATTN_TILED 1
#define GM_NN_ATTN_FUSED 2
int gm_nn_attention_fused_supported(void);
int gm_nn_attention_kernel_f32(const float *qkv, size_t batch, size_t n, size_t heads,
                               size_t hd, int kernel, float *out);
int gm_nn_attention_kernel_f64(const double *qkv, size_t batch, size_t n, size_t heads,
                               size_t hd, int kernel, double *out);
int gm_nn_attention_f32(const float *qkv, size_t batch, size_t n, size_t heads, size_t hd,
                        float *out);
int gm_nn_attention_f64(const double *qkv, size_t batch, size_t n, size_t heads,
                        size_t hd, double *out);
/* bfloat16 linear layer (gm_bf16.c): the reduced-precision backbone path.
 * gm_bf16_supported: 1 when the CPU (and OS) run AVX512-BF16, else 0.
 * gm_bf16_pack_weight: w (dout x din float32) rounded to bfloat16 (nearest
 * even) into gm_bf16_packed_size(din, dout) uint16 values (panels of 16 output
 * columns, k in pairs).  gm_nn_linear_bf16: as gm_nn_linear_f32 with x
 * rounded to bfloat16 and float32 accumulation; GM_ERR_INVALID on a CPU
 * without AVX512-BF16.  O(n din dout). */
int gm_bf16_supported(void);
size_t gm_bf16_packed_size(size_t din, size_t dout);
int gm_bf16_pack_weight(const float *w, size_t din, size_t dout, uint16_t *out);
int gm_nn_linear_bf16(const float *x, size_t n, size_t din, const uint16_t *wpack,
                      const float *b, size_t dout, int act, int accumulate, float *y);
/* gm_nn_linear_bf16 with bfloat16 activations on either side (their bits as
 * uint16, n rows of din / dout values, din and dout even): x16 (or, when
 * x16 is NULL, x converted as gm_nn_linear_bf16 converts it) in, and, when
 * y16 is not NULL, act(x W^T + b) rounded to bfloat16 (nearest even) written
 * to y16 instead of y (accumulate must be 0; dout a multiple of 32).  The
 * bits are those of gm_nn_linear_bf16 followed by its own rounding of the
 * result for the next layer, without the float32 pass in between.  O(n din
 * dout). */
int gm_nn_linear_bf16_io(const float *x, const uint16_t *x16, size_t n, size_t din,
                         const uint16_t *wpack, const float *b, size_t dout, int act,
                         int accumulate, float *y, uint16_t *y16);
void gm_nn_gelu_rows_f32(float *y, size_t n, size_t d, int nthreads);
/* Exact GELU in place over n floats (the function every GELU pass of the
 * bf16 path runs).  O(n). */
void gm_nn_gelu_f32(float *y, size_t n);
/* gm_nn_attention_f32 with q, k, v and the probabilities rounded to bfloat16,
 * float32 accumulation and softmax; flash-style (no n x n score matrix, one
 * 64-key block at a time); head dimension 64 only (GM_ERR_INVALID
 * otherwise, or without AVX512-BF16).  O(batch heads n^2 hd). */
int gm_nn_attention_bf16(const float *qkv, size_t batch, size_t n, size_t heads, size_t hd,
                         float *out);

/* ==== kernels: the trained attention head ================================ */
/* Multi-head softmax attention forward that keeps the backward's inputs
 * (the attention of gm_nn_attention, in 256-row tiles, e and rz kept).
 * qkv: batch x n x 3*heads*hd laid out [q | k | v], each heads x hd.
 * Writes e (batch x heads x n x n) = exp(s - rowmax(s)) for the scores
 * s = q k^T / sqrt(hd), rz (batch x heads x n) = 1 / row sums of e, and
 * out (batch x n x heads*hd) = softmax(s) v per head.
 * O(batch heads n^2 hd) time. */
int gm_head_attention_fwd_f32(const float *qkv, size_t batch, size_t n, size_t heads,
                              size_t hd, float *e, float *rz, float *out);
int gm_head_attention_fwd_f64(const double *qkv, size_t batch, size_t n, size_t heads,
                              size_t hd, double *e, double *rz, double *out);
/* Reverse mode of gm_head_attention_fwd: from qkv, e, rz, out and
 * dout = d loss / d out, writes dqkv = d loss / d qkv (batch x n x
 * 3*heads*hd).  Overwrites e with the score gradients.  GM_ERR_NOMEM.
 * O(batch heads n^2 hd) time. */
int gm_head_attention_bwd_f32(const float *qkv, float *e, const float *rz, const float *out,
                              const float *dout, size_t batch, size_t n, size_t heads,
                              size_t hd, float *dqkv);
int gm_head_attention_bwd_f64(const double *qkv, double *e, const double *rz,
                              const double *out, const double *dout, size_t batch, size_t n,
                              size_t heads, size_t hd, double *dqkv);
/* LayerNorm over the rows of x (n x d), the one of gm_nn_layernorm, keeping
 * the backward's inputs when xhat and rstd are not NULL: xhat = (x - mean)
 * / sqrt(var + eps) (biased variance), rstd = 1 / sqrt(var + eps) (length
 * n); y = xhat * gamma + beta (y may alias x; gamma/beta may be NULL).
 * O(n d). */
int gm_layernorm_fwd_f32(const float *x, size_t n, size_t d, const float *gamma,
                         const float *beta, double eps, float *y, float *xhat, float *rstd);
int gm_layernorm_fwd_f64(const double *x, size_t n, size_t d, const double *gamma,
                         const double *beta, double eps, double *y, double *xhat,
                         double *rstd);
/* Reverse mode of gm_layernorm_fwd: dx (= or += when accumulate) from dy,
 * xhat, rstd, gamma; dgamma = sum over rows of dy * xhat, dbeta = sum of dy
 * (overwritten; summed over fixed 64-row blocks in order).  GM_ERR_NOMEM.
 * O(n d). */
int gm_layernorm_bwd_f32(const float *dy, const float *xhat, const float *rstd,
                         const float *gamma, size_t n, size_t d, int accumulate, float *dx,
                         float *dgamma, float *dbeta);
int gm_layernorm_bwd_f64(const double *dy, const double *xhat, const double *rstd,
                         const double *gamma, size_t n, size_t d, int accumulate, double *dx,
                         double *dgamma, double *dbeta);
/* GELU, tanh form, over count values: t = tanh(sqrt(2/pi) (u + 0.044715 u^3)),
 * g = 0.5 u (1 + t).  O(count). */
int gm_gelu_tanh_fwd_f32(const float *u, size_t count, float *g, float *t);
int gm_gelu_tanh_fwd_f64(const double *u, size_t count, double *g, double *t);
/* Its reverse mode: du from dg, u and the forward's t (du may alias dg). */
int gm_gelu_tanh_bwd_f32(const float *dg, const float *u, const float *t, size_t count,
                         float *du);
int gm_gelu_tanh_bwd_f64(const double *dg, const double *u, const double *t, size_t count,
                         double *du);

/* ==== kernels: the training loss ========================================= */
/* Foreground x background negatives of the loss on an (n+1) x (m+1) plan p
 * (dense, row stride m + 1; the last row and column are the dustbins):
 * *sum = sum over i < n, j < m where exactly one of src_fg[i], trg_fg[j]
 * is nonzero of
 * -log(1 - clip(p_ij, lo, hi)) (double).  With grad != NULL writes the whole
 * (n+1) x (m+1) grad: weight / (1 - clip(p_ij)) on those entries, 0
 * elsewhere.  GM_ERR_INVALID unless 0 <= lo < hi < 1 and n, m >= 1;
 * GM_ERR_NOMEM.  Results do not depend on the thread count.  O(n m). */
int gm_loss_fgbg_f32(const float *p, size_t n, size_t m, const uint8_t *src_fg,
                     const uint8_t *trg_fg, double lo, double hi, double weight,
                     double *sum, float *grad);
int gm_loss_fgbg_f64(const double *p, size_t n, size_t m, const uint8_t *src_fg,
                     const uint8_t *trg_fg, double lo, double hi, double weight,
                     double *sum, double *grad);

#ifdef __cplusplus
}
#endif

#endif /* GEOMATCH_H */

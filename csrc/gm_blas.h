/* Private header: maps CBLAS/OpenBLAS names to the library the build found.
 *
 * The scipy-openblas32 wheel exports every symbol with a "scipy_" prefix and
 * ships a cblas.h that declares the prefixed names; a system OpenBLAS uses the
 * plain names.  setup.py defines GM_BLAS_SCIPY_OPENBLAS for the former. */
#ifndef GM_BLAS_H
#define GM_BLAS_H

#include <cblas.h>

#include "geomatch.h"

#ifdef GM_BLAS_SCIPY_OPENBLAS
#define GM_CBLAS(name) scipy_cblas_##name
#define GM_OPENBLAS(name) scipy_openblas_##name
#else
#define GM_CBLAS(name) cblas_##name
#define GM_OPENBLAS(name) openblas_##name
#endif

/* sgemm with CBLAS's arguments, through geomatch's AVX-512F kernel
 * (gm_sgemm_avx512.c) when gm_sgemm_uses_avx512() and the call is row-major,
 * else OpenBLAS's sgemm.  The float32 GM_GEMM of the dtype templates (gm_tpl.h),
 * so every float32 product of the core follows GEOMATCH_SGEMM.  Inside a
 * parallel region the kernel runs on the calling thread only.  O(m n k). */
static inline void gm_sgemm_dispatch(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta,
                                     enum CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                                     const float *a, int lda, const float *b, int ldb,
                                     float beta, float *c, int ldc)
{
    if (order == CblasRowMajor && m > 0 && n > 0 && k > 0 && gm_sgemm_uses_avx512() &&
        gm_sgemm_avx512(ta != CblasNoTrans, tb != CblasNoTrans, (size_t)m, (size_t)n,
                        (size_t)k, alpha, a, (size_t)lda, b, (size_t)ldb, beta, c,
                        (size_t)ldc) == GM_OK)
        return;
    GM_CBLAS(sgemm)(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Row blocks for running a BLAS product of `len` output rows (and `flops`
 * flops) as one single-threaded BLAS call per block, the blocks spread over
 * the OpenMP threads.  The blocks depend on the shape only, never on the
 * thread count: OpenBLAS sums in a different order for small calls (its
 * small-matrix kernels), so blocks that changed with the thread count would
 * change the results.  One block below 2e6 flops, else up to 8 blocks of at
 * least 64 rows, their length a multiple of 16.  Writes the block length to
 * *per and returns the block count.  O(1). */
static inline int gm_blas_row_blocks(size_t len, double flops, size_t *per)
{
    size_t nblk = flops < 2.0e6 ? 1 : (len + 63) / 64;
    if (nblk > 8) nblk = 8;
    if (nblk < 1) nblk = 1;
    size_t p = (len + nblk - 1) / nblk;
    p = (p + 15) / 16 * 16;
    *per = p;
    return (int)((len + p - 1) / p);
}

#endif

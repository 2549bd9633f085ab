/* gm_gemm_tpl.h -- type-generic body of gm_gemm.c, instantiated once per
 * type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header. */

/* C = alpha op(A) op(B) + beta C (row-major; op(X) = X^T when trans_x).
 * The rows of C (or its columns when C has fewer rows than columns) are cut
 * into blocks chosen from the shape alone (gm_blas_row_blocks), spread over
 * the threads; each block is one single-threaded BLAS call, so the result
 * does not depend on the thread count.  O(m n k). */
int GM_FN(gm_gemm)(int trans_a, int trans_b, size_t m, size_t n, size_t k, GM_T alpha,
                          const GM_T *a, size_t lda, const GM_T *b, size_t ldb, GM_T beta, GM_T *c,
                          size_t ldc)
{
    if (m == 0 || n == 0 || k == 0) return GM_ERR_INVALID;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX
        || ldc > INT_MAX)
        return GM_ERR_INVALID;
    if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n) return GM_ERR_INVALID;
#if GM_IS_F32
    if (gm_sgemm_uses_avx512()) {
        int st = gm_sgemm_avx512(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        if (st != GM_ERR_NOMEM) return st;
    }
#endif
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    int nthreads = gm_get_num_threads();
    int by_rows = m >= n;
    size_t len = by_rows ? m : n, per;
    int nblk = gm_blas_row_blocks(len, 2.0 * (double)m * (double)n * (double)k, &per);
    int nteam = nblk < nthreads ? nblk : nthreads;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel for schedule(static) num_threads(nteam) if (nteam > 1)
    for (int blk = 0; blk < nblk; blk++) {
        size_t lo = (size_t)blk * per;
        if (lo >= len) continue;
        size_t cnt = len - lo < per ? len - lo : per;
        if (by_rows) {
            const GM_T *ab = trans_a ? a + lo : a + lo * lda;
            GM_GEMM(CblasRowMajor, ta, tb, (int)cnt, (int)n, (int)k, alpha, ab, (int)lda, b,
                 (int)ldb, beta, c + lo * ldc, (int)ldc);
        } else {
            const GM_T *bb = trans_b ? b + lo * ldb : b + lo;
            GM_GEMM(CblasRowMajor, ta, tb, (int)m, (int)cnt, (int)k, alpha, a, (int)lda, bb,
                 (int)ldb, beta, c + lo, (int)ldc);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    return GM_OK;
}

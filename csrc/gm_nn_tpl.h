/* gm_nn_tpl.h -- type-generic bodies of the ViT building blocks (gm_nn.c),
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header. */

/* In place: y_j = gelu(y_j + b_j) over one row of d values (b may be NULL). */
static void GM_FN(gm_nn_bias_gelu)(GM_T *restrict y, const GM_T *restrict b, size_t d)
{
    if (b != NULL)
        for (size_t j = 0; j < d; j++) y[j] += b[j];
    for (size_t j = 0; j < d; j++) {
        GM_T v = y[j];
        y[j] = (GM_T)0.5 * v * ((GM_T)1 + GM_FN(gm_erf)(v * (GM_T)0.70710678118654752440));
    }
}

/* y (n x dout) = act(x (n x din) * w^T + b) [+ y when accumulate].
 * w is dout x din (a torch Linear weight).  One GEMM plus one pass over y:
 * O(n * din * dout). */
int GM_FN(gm_nn_linear)(const GM_T *x, size_t n, size_t din, const GM_T *w, const GM_T *b,
                             size_t dout, int act, int accumulate, GM_T *y)
{
    if (n == 0 || din == 0 || dout == 0) return GM_ERR_INVALID;
    if (act != GM_NN_ACT_NONE && act != GM_NN_ACT_GELU) return GM_ERR_INVALID;
    if (act == GM_NN_ACT_GELU && accumulate) return GM_ERR_INVALID;
#if GM_IS_F32
    if (gm_sgemm_uses_avx512()) {
        /* the core's AVX-512 GEMM threads itself (results independent of
         * the thread count); bias folded in through beta = 1 */
        long rows = (long)n;
        int bias_first = act == GM_NN_ACT_NONE && b != NULL;
        int nthr = gm_threads_for((double)n * (double)dout);
        if (bias_first) {
#pragma omp parallel for schedule(static) num_threads(nthr)
            for (long i = 0; i < rows; i++) {
                GM_T *yi = y + (size_t)i * dout;
                if (accumulate)
                    for (size_t j = 0; j < dout; j++) yi[j] += b[j];
                else
                    memcpy(yi, b, dout * sizeof(GM_T));
            }
        }
        GM_T beta = (bias_first || accumulate) ? (GM_T)1 : (GM_T)0;
        int st = gm_sgemm_avx512(0, 1, n, dout, din, (GM_T)1, x, din, w, din, beta, y, dout);
        if (st != GM_OK || act != GM_NN_ACT_GELU) return st;
        nthr = gm_threads_for(GM_WORK_EXP * (double)n * (double)dout);
#pragma omp parallel for schedule(static) num_threads(nthr)
        for (long i = 0; i < rows; i++) GM_FN(gm_nn_bias_gelu)(y + (size_t)i * dout, b, dout);
        return GM_OK;
    }
#endif
    int nthreads = gm_get_num_threads();
    /* Row blocks chosen from the shape alone (gm_blas_row_blocks), spread
     * over the threads: each block is a single-threaded GEMM, then the
     * bias/activation pass on the rows it just wrote (no BLAS thread pool
     * next to OpenMP's; results independent of the thread count). */
    size_t per;
    int nblk = gm_blas_row_blocks(n, 2.0 * (double)n * (double)din * (double)dout, &per);
    int nteam = nblk < nthreads ? nblk : nthreads;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel for schedule(static) num_threads(nteam) if (nteam > 1)
    for (long blk = 0; blk < (long)nblk; blk++) {
        size_t r0 = (size_t)blk * per;
        if (r0 >= n) continue;
        size_t nr = n - r0 < per ? n - r0 : per;
        const GM_T *xb = x + r0 * din;
        GM_T *yb = y + r0 * dout;
        if (act == GM_NN_ACT_NONE) {
            /* fold the bias in through beta = 1 */
            for (size_t i = 0; i < nr; i++) {
                GM_T *yi = yb + i * dout;
                if (b != NULL && accumulate)
                    for (size_t j = 0; j < dout; j++) yi[j] += b[j];
                else if (b != NULL)
                    for (size_t j = 0; j < dout; j++) yi[j] = b[j];
                else if (!accumulate)
                    for (size_t j = 0; j < dout; j++) yi[j] = 0;
            }
            GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)dout, (int)din, 1.0,
                 xb, (int)din, w, (int)din, 1.0, yb, (int)dout);
        } else {
            GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)dout, (int)din, 1.0,
                 xb, (int)din, w, (int)din, 0.0, yb, (int)dout);
            for (size_t i = 0; i < nr; i++) GM_FN(gm_nn_bias_gelu)(yb + i * dout, b, dout);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    return GM_OK;
}

/* SwiGLU gate: y[i, j] = silu(h[i, j]) * h[i, hidden + j] for h of shape
 * n x (2 * hidden), y of shape n x hidden.  O(n * hidden). */
int GM_FN(gm_nn_swiglu)(const GM_T *h, size_t n, size_t hidden, GM_T *y)
{
    if (n == 0 || hidden == 0) return GM_ERR_INVALID;
    long rows = (long)n;
    int nthr = gm_threads_for(GM_WORK_EXP * (double)n * (double)hidden);
#pragma omp parallel for schedule(static) num_threads(nthr)
    for (long i = 0; i < rows; i++) {
        const GM_T *a = h + (size_t)i * 2 * hidden;
        const GM_T *g = a + hidden;
        GM_T *yi = y + (size_t)i * hidden;
        for (size_t j = 0; j < hidden; j++)
            yi[j] = a[j] / ((GM_T)1 + GM_EXP(-a[j])) * g[j];
    }
    return GM_OK;
}

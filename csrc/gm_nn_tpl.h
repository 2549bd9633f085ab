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

/* Row-wise LayerNorm: y_i = (x_i - mean) / sqrt(var + eps) * gamma + beta,
 * biased variance (two passes).  y may alias x.  O(n * d). */
int GM_FN(gm_nn_layernorm)(const GM_T *x, size_t n, size_t d, const GM_T *gamma,
                                const GM_T *beta, double eps, GM_T *y)
{
    if (n == 0 || d == 0 || !(eps >= 0.0)) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long i = 0; i < rows; i++) {
        const GM_T *xi = x + (size_t)i * d;
        GM_T *yi = y + (size_t)i * d;
        GM_T mean = GM_FN(gm_vec_dot16)(xi, NULL, d) / (GM_T)d;
        GM_T var = GM_FN(gm_vec_sqdev16)(xi, mean, d) / (GM_T)d;
        GM_T rstd = (GM_T)(1.0 / sqrt((double)var + eps));
        if (gamma != NULL && beta != NULL) {
            for (size_t j = 0; j < d; j++) yi[j] = (xi[j] - mean) * rstd * gamma[j] + beta[j];
        } else {
            for (size_t j = 0; j < d; j++) {
                GM_T v = (xi[j] - mean) * rstd;
                if (gamma != NULL) v *= gamma[j];
                if (beta != NULL) v += beta[j];
                yi[j] = v;
            }
        }
    }
    return GM_OK;
}

/* SwiGLU gate: y[i, j] = silu(h[i, j]) * h[i, hidden + j] for h of shape
 * n x (2 * hidden), y of shape n x hidden.  O(n * hidden). */
int GM_FN(gm_nn_swiglu)(const GM_T *h, size_t n, size_t hidden, GM_T *y)
{
    if (n == 0 || hidden == 0) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)n * (double)hidden))
    for (long i = 0; i < rows; i++) {
        const GM_T *a = h + (size_t)i * 2 * hidden;
        const GM_T *g = a + hidden;
        GM_T *yi = y + (size_t)i * hidden;
        for (size_t j = 0; j < hidden; j++)
            yi[j] = a[j] / ((GM_T)1 + GM_EXP(-a[j])) * g[j];
    }
    return GM_OK;
}


/* One attention tile: rows [r0, r0 + nr) of one head of one image.
 * s is scratch of nr x n.  out rows get softmax(q k^T * scale) v. */
static void GM_FN(gm_nn_attn_tile)(const GM_T *qkv, size_t n, size_t heads, size_t hd,
                                        size_t head, size_t r0, size_t nr, GM_T scale,
                                        GM_T *s, GM_T *out)
{
    size_t dm = heads * hd, ld = 3 * dm;
    const GM_T *q = qkv + r0 * ld + head * hd;
    const GM_T *k = qkv + dm + head * hd;
    const GM_T *v = qkv + 2 * dm + head * hd;
    GM_T *o = out + r0 * dm + head * hd;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)n, (int)hd, scale,
         q, (int)ld, k, (int)ld, 0.0, s, (int)n);
    GM_T inv[GM_NN_ATTN_TILE];
    for (size_t i = 0; i < nr; i++) inv[i] = GM_FN(gm_vec_exp_row)(s + i * n, n);
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)n, 1.0,
         s, (int)n, v, (int)ld, 0.0, o, (int)dm);
    for (size_t i = 0; i < nr; i++)
        for (size_t c = 0; c < hd; c++) o[i * dm + c] *= inv[i];
}

/* Multi-head self-attention without projections, for `batch` images of n
 * tokens: qkv is batch x n x (3 * heads * hd) laid out [q | k | v], each
 * heads x hd; out is batch x n x (heads * hd).  Softmax(q k^T / sqrt(hd)) v
 * per head, computed in tiles of GM_NN_ATTN_TILE query rows so the score
 * block stays in cache; tiles run in parallel (dynamic schedule, as other
 * processes may hold a core) with single-threaded BLAS, each tile done
 * entirely by one thread (results independent of the thread count).
 * O(batch * heads * n^2 * hd) time, O(threads * tile * n) scratch. */
int GM_FN(gm_nn_attention)(const GM_T *qkv, size_t batch, size_t n, size_t heads,
                                size_t hd, GM_T *out)
{
    if (batch == 0 || n == 0 || heads == 0 || hd == 0) return GM_ERR_INVALID;
    size_t tiles = (n + GM_NN_ATTN_TILE - 1) / GM_NN_ATTN_TILE;
    long ntask = (long)(batch * heads * tiles);
    int nthreads = gm_get_num_threads();
    GM_T *scratch = (GM_T *)malloc((size_t)nthreads * GM_NN_ATTN_TILE * n * sizeof(GM_T));
    if (scratch == NULL) return GM_ERR_NOMEM;
    GM_T scale = (GM_T)(1.0 / sqrt((double)hd));
    size_t dm = heads * hd;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel num_threads(nthreads)
    {
        int tid = gm_thread_id();
        GM_T *s = scratch + (size_t)tid * GM_NN_ATTN_TILE * n;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            size_t img = (size_t)t / (heads * tiles);
            size_t rem = (size_t)t % (heads * tiles);
            size_t head = rem / tiles, tile = rem % tiles;
            size_t r0 = tile * GM_NN_ATTN_TILE;
            size_t nr = n - r0 < GM_NN_ATTN_TILE ? n - r0 : GM_NN_ATTN_TILE;
            GM_FN(gm_nn_attn_tile)(qkv + img * n * 3 * dm, n, heads, hd, head, r0, nr,
                                        scale, s, out + img * n * dm);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    free(scratch);
    return GM_OK;
}

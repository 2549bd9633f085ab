/* gm_nn_impl.h -- type-generic bodies of the ViT building blocks (gm_nn.c).
 * Included twice by gm_nn.c with T = float / double and SUF = f32 / f64;
 * GEMM names the matching CBLAS routine, EXPF the gm_math exponential and
 * ERFF the error function. */

/* In place: y_j = gelu(y_j + b_j) over one row of d values (b may be NULL). */
static void GM_NN_NAME(gm_nn_bias_gelu)(T *restrict y, const T *restrict b, size_t d)
{
    if (b != NULL)
        for (size_t j = 0; j < d; j++) y[j] += b[j];
    for (size_t j = 0; j < d; j++) {
        T v = y[j];
        y[j] = (T)0.5 * v * ((T)1 + ERFF(v * (T)0.70710678118654752440));
    }
}

/* y (n x dout) = act(x (n x din) * w^T + b) [+ y when accumulate].
 * w is dout x din (a torch Linear weight).  One GEMM plus one pass over y:
 * O(n * din * dout). */
int GM_NN_NAME(gm_nn_linear)(const T *x, size_t n, size_t din, const T *w, const T *b,
                             size_t dout, int act, int accumulate, T *y)
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
        const T *xb = x + r0 * din;
        T *yb = y + r0 * dout;
        if (act == GM_NN_ACT_NONE) {
            /* fold the bias in through beta = 1 */
            for (size_t i = 0; i < nr; i++) {
                T *yi = yb + i * dout;
                if (b != NULL && accumulate)
                    for (size_t j = 0; j < dout; j++) yi[j] += b[j];
                else if (b != NULL)
                    for (size_t j = 0; j < dout; j++) yi[j] = b[j];
                else if (!accumulate)
                    for (size_t j = 0; j < dout; j++) yi[j] = 0;
            }
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)dout, (int)din, 1.0,
                 xb, (int)din, w, (int)din, 1.0, yb, (int)dout);
        } else {
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)dout, (int)din, 1.0,
                 xb, (int)din, w, (int)din, 0.0, yb, (int)dout);
            for (size_t i = 0; i < nr; i++) GM_NN_NAME(gm_nn_bias_gelu)(yb + i * dout, b, dout);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    return GM_OK;
}

/* Sum of n values with 16 partial accumulators in a fixed order
 * (vectorizable, deterministic).  With c != NULL sums (v_j - *c)^2. */
static T GM_NN_NAME(gm_nn_sum16)(const T *restrict v, size_t n, const T *c)
{
    T acc[16];
    size_t j = 0;
    for (int k = 0; k < 16; k++) acc[k] = 0;
    if (c == NULL) {
        for (; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k++) acc[k] += v[j + k];
    } else {
        T m = *c;
        for (; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k++) acc[k] += (v[j + k] - m) * (v[j + k] - m);
    }
    T sum = 0;
    for (int k = 0; k < 16; k++) sum += acc[k];
    for (; j < n; j++) sum += c == NULL ? v[j] : (v[j] - *c) * (v[j] - *c);
    return sum;
}

/* Row-wise LayerNorm: y_i = (x_i - mean) / sqrt(var + eps) * gamma + beta,
 * biased variance (two passes).  y may alias x.  O(n * d). */
int GM_NN_NAME(gm_nn_layernorm)(const T *x, size_t n, size_t d, const T *gamma,
                                const T *beta, double eps, T *y)
{
    if (n == 0 || d == 0 || !(eps >= 0.0)) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long i = 0; i < rows; i++) {
        const T *xi = x + (size_t)i * d;
        T *yi = y + (size_t)i * d;
        T mean = GM_NN_NAME(gm_nn_sum16)(xi, d, NULL) / (T)d;
        T var = GM_NN_NAME(gm_nn_sum16)(xi, d, &mean) / (T)d;
        T rstd = (T)(1.0 / sqrt((double)var + eps));
        if (gamma != NULL && beta != NULL) {
            for (size_t j = 0; j < d; j++) yi[j] = (xi[j] - mean) * rstd * gamma[j] + beta[j];
        } else {
            for (size_t j = 0; j < d; j++) {
                T v = (xi[j] - mean) * rstd;
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
int GM_NN_NAME(gm_nn_swiglu)(const T *h, size_t n, size_t hidden, T *y)
{
    if (n == 0 || hidden == 0) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)n * (double)hidden))
    for (long i = 0; i < rows; i++) {
        const T *a = h + (size_t)i * 2 * hidden;
        const T *g = a + hidden;
        T *yi = y + (size_t)i * hidden;
        for (size_t j = 0; j < hidden; j++)
            yi[j] = a[j] / ((T)1 + EXPF(-a[j])) * g[j];
    }
    return GM_OK;
}

#define GM_EXP_ROW_NAME GM_NN_NAME(gm_nn_softmax_row)
#include "gm_exp_row_tpl.h"
#undef GM_EXP_ROW_NAME

/* One attention tile: rows [r0, r0 + nr) of one head of one image.
 * s is scratch of nr x n.  out rows get softmax(q k^T * scale) v. */
static void GM_NN_NAME(gm_nn_attn_tile)(const T *qkv, size_t n, size_t heads, size_t hd,
                                        size_t head, size_t r0, size_t nr, T scale,
                                        T *s, T *out)
{
    size_t dm = heads * hd, ld = 3 * dm;
    const T *q = qkv + r0 * ld + head * hd;
    const T *k = qkv + dm + head * hd;
    const T *v = qkv + 2 * dm + head * hd;
    T *o = out + r0 * dm + head * hd;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)n, (int)hd, scale,
         q, (int)ld, k, (int)ld, 0.0, s, (int)n);
    T inv[GM_NN_ATTN_TILE];
    for (size_t i = 0; i < nr; i++) inv[i] = GM_NN_NAME(gm_nn_softmax_row)(s + i * n, n);
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)n, 1.0,
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
int GM_NN_NAME(gm_nn_attention)(const T *qkv, size_t batch, size_t n, size_t heads,
                                size_t hd, T *out)
{
    if (batch == 0 || n == 0 || heads == 0 || hd == 0) return GM_ERR_INVALID;
    size_t tiles = (n + GM_NN_ATTN_TILE - 1) / GM_NN_ATTN_TILE;
    long ntask = (long)(batch * heads * tiles);
    int nthreads = gm_get_num_threads();
    T *scratch = (T *)malloc((size_t)nthreads * GM_NN_ATTN_TILE * n * sizeof(T));
    if (scratch == NULL) return GM_ERR_NOMEM;
    T scale = (T)(1.0 / sqrt((double)hd));
    size_t dm = heads * hd;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel num_threads(nthreads)
    {
        int tid = gm_thread_id();
        T *s = scratch + (size_t)tid * GM_NN_ATTN_TILE * n;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            size_t img = (size_t)t / (heads * tiles);
            size_t rem = (size_t)t % (heads * tiles);
            size_t head = rem / tiles, tile = rem % tiles;
            size_t r0 = tile * GM_NN_ATTN_TILE;
            size_t nr = n - r0 < GM_NN_ATTN_TILE ? n - r0 : GM_NN_ATTN_TILE;
            GM_NN_NAME(gm_nn_attn_tile)(qkv + img * n * 3 * dm, n, heads, hd, head, r0, nr,
                                        scale, s, out + img * n * dm);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    free(scratch);
    return GM_OK;
}

/* gm_head_tpl.h -- type-generic bodies of gm_head.c,
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header. */


/* Shapes shared by the attention kernels. */
typedef struct {
    size_t n, heads, hd;
    size_t dm;   /* heads * hd: width of q, k, v and of the output */
    size_t ld;   /* 3 * dm: row stride of qkv */
    size_t tiles;
} GM_FN(gm_attn_dims);

static int GM_FN(gm_attn_dims_init)(GM_FN(gm_attn_dims) *d, size_t batch,
                                           size_t n, size_t heads, size_t hd)
{
    if (batch == 0 || n == 0 || heads == 0 || hd == 0) return GM_ERR_INVALID;
    if (n > INT_MAX / 4 || heads * hd > INT_MAX / 4) return GM_ERR_INVALID;
    d->n = n;
    d->heads = heads;
    d->hd = hd;
    d->dm = heads * hd;
    d->ld = 3 * d->dm;
    d->tiles = (n + GM_HEAD_TILE - 1) / GM_HEAD_TILE;
    return GM_OK;
}

/* One task of a sweep over (image, head, tile of 256 rows). */
typedef struct {
    size_t bh;    /* image * heads + head: index of the head's n x n block */
    size_t img, h;
    size_t r0;    /* first row of the tile (query rows or key rows) */
    size_t nr;    /* rows in the tile */
} GM_FN(gm_attn_task);

/* Task number t of a sweep, tasks ordered image, head, tile.  O(1). */
static GM_FN(gm_attn_task) GM_FN(gm_attn_task_of)(
    const GM_FN(gm_attn_dims) *d, long t)
{
    GM_FN(gm_attn_task) k;
    k.bh = (size_t)t / d->tiles;
    k.img = k.bh / d->heads;
    k.h = k.bh % d->heads;
    k.r0 = (size_t)t % d->tiles * GM_HEAD_TILE;
    k.nr = d->n - k.r0 < GM_HEAD_TILE ? d->n - k.r0 : GM_HEAD_TILE;
    return k;
}

/* Forward of one tile: query rows [r0, r0 + nr) of head h of one image.
 * s -> e rows, exponentials of the shifted scores; rz[i] = 1 / row sum;
 * o rows = (e v) * rz.  O(nr n hd). */
static void GM_FN(gm_attn_fwd_tile)(const GM_FN(gm_attn_dims) *d,
                                           const GM_T *qkv, size_t h, size_t r0, size_t nr,
                                           GM_T scale, GM_T *e, GM_T *rz, GM_T *out)
{
    size_t n = d->n, ld = d->ld, dm = d->dm, hd = d->hd;
    const GM_T *q = qkv + r0 * ld + h * hd;
    const GM_T *k = qkv + dm + h * hd;
    const GM_T *v = qkv + 2 * dm + h * hd;
    GM_T *s = e + r0 * n;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)n, (int)hd, scale, q,
         (int)ld, k, (int)ld, 0.0, s, (int)n);
    for (size_t i = 0; i < nr; i++) rz[r0 + i] = GM_FN(gm_vec_exp_row)(s + i * n, n);
    GM_T *o = out + r0 * dm + h * hd;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)n, 1.0, s, (int)n,
         v, (int)ld, 0.0, o, (int)dm);
    for (size_t i = 0; i < nr; i++)
        for (size_t c = 0; c < hd; c++) o[i * dm + c] *= rz[r0 + i];
}

/* Multi-head attention forward keeping what the backward needs.
 * qkv: batch x n x 3*heads*hd, [q | k | v], each heads x hd.
 * e (out): batch x heads x n x n, e = exp(s - rowmax s) of the scores
 * s = q k^T / sqrt(hd); rz (out): batch x heads x n, 1 / row sums of e;
 * out: batch x n x heads*hd, softmax(s) v per head.  Tiles of query rows
 * run in parallel (dynamic schedule) with single-threaded BLAS, each tile
 * on one thread.  O(batch heads n^2 hd) time; e is the O(batch heads n^2)
 * memory. */
int GM_FN(gm_head_attention_fwd)(const GM_T *qkv, size_t batch, size_t n, size_t heads,
                                        size_t hd, GM_T *e, GM_T *rz, GM_T *out)
{
    GM_FN(gm_attn_dims) d;
    int st = GM_FN(gm_attn_dims_init)(&d, batch, n, heads, hd);
    if (st != GM_OK) return st;
    GM_T scale = (GM_T)(1.0 / sqrt((double)hd));
    long ntask = (long)(batch * heads * d.tiles);
    int nthreads = gm_get_num_threads();
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long t = 0; t < ntask; t++) {
        GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
        GM_FN(gm_attn_fwd_tile)(&d, qkv + k.img * n * d.ld, k.h, k.r0, k.nr, scale,
                                       e + k.bh * n * n, rz + k.bh * n,
                                       out + k.img * n * d.dm);
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    return GM_OK;
}

/* Backward phase 0 for rows [r0, r0 + nr) of head h of one image:
 * ad = dout * rz (nr x hd), delta = -rz * rowsum(dout * out).  O(nr hd). */
static void GM_FN(gm_attn_bwd_rows)(const GM_FN(gm_attn_dims) *d, size_t h,
                                           size_t r0, size_t nr, const GM_T *rz, const GM_T *out,
                                           const GM_T *dout, GM_T *ad, GM_T *delta)
{
    size_t hd = d->hd, dm = d->dm;
    for (size_t i = r0; i < r0 + nr; i++) {
        const GM_T *go = dout + i * dm + h * hd;
        const GM_T *o = out + i * dm + h * hd;
        GM_T dot = 0;
        for (size_t c = 0; c < hd; c++) {
            ad[i * hd + c] = go[c] * rz[i];
            dot += go[c] * o[c];
        }
        delta[i] = -rz[i] * dot;
    }
}

/* Backward phase B for query rows [r0, r0 + nr): g = ad v^T (scratch),
 * e rows <- dS = e * (g + delta) in place, dq rows = scale dS k.
 * O(nr n hd). */
static void GM_FN(gm_attn_bwd_query_tile)(const GM_FN(gm_attn_dims) *d,
                                                 const GM_T *qkv, size_t h, size_t r0,
                                                 size_t nr, GM_T scale, GM_T *e, const GM_T *ad,
                                                 const GM_T *delta, GM_T *g, GM_T *dqkv)
{
    size_t n = d->n, ld = d->ld, dm = d->dm, hd = d->hd;
    const GM_T *k = qkv + dm + h * hd;
    const GM_T *v = qkv + 2 * dm + h * hd;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)n, (int)hd, 1.0,
         ad + r0 * hd, (int)hd, v, (int)ld, 0.0, g, (int)n);
    GM_T *ds = e + r0 * n;
    for (size_t i = 0; i < nr; i++) {
        GM_T *restrict row = ds + i * n;
        const GM_T *restrict gi = g + i * n;
        GM_T di = delta[r0 + i];
        for (size_t j = 0; j < n; j++) row[j] *= gi[j] + di;
    }
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)n, scale, ds,
         (int)n, k, (int)ld, 0.0, dqkv + r0 * ld + h * hd, (int)ld);
}

/* Reverse mode of gm_head_attention_fwd.  Given e, rz and out from the
 * forward and dout = d loss / d out (batch x n x heads*hd), writes
 * dqkv = d loss / d qkv (batch x n x 3*heads*hd).  e is overwritten with
 * the score gradients dS (it is not needed afterwards).  With A = e * rz:
 * dv = A^T dout, dS = A * (dout v^T - rowsum(dout * out)), dq = dS k / sqrt(hd),
 * dk = dS^T q / sqrt(hd).  Three parallel sweeps over tiles (dv from key
 * tiles of e, dS and dq from query tiles, dk from key tiles of dS); every
 * output row is written by one thread.  O(batch heads n^2 hd) time,
 * O(batch n heads hd + threads * 256 n) scratch. */
int GM_FN(gm_head_attention_bwd)(const GM_T *qkv, GM_T *e, const GM_T *rz, const GM_T *out,
                                        const GM_T *dout, size_t batch, size_t n, size_t heads,
                                        size_t hd, GM_T *dqkv)
{
    GM_FN(gm_attn_dims) d;
    int st = GM_FN(gm_attn_dims_init)(&d, batch, n, heads, hd);
    if (st != GM_OK) return st;
    int nthreads = gm_get_num_threads();
    size_t nbh = batch * heads;
    GM_T *ad = (GM_T *)malloc(nbh * n * hd * sizeof(GM_T));
    GM_T *delta = (GM_T *)malloc(nbh * n * sizeof(GM_T));
    GM_T *scratch = (GM_T *)malloc((size_t)nthreads * GM_HEAD_TILE * n * sizeof(GM_T));
    if (ad == NULL || delta == NULL || scratch == NULL) {
        free(ad);
        free(delta);
        free(scratch);
        return GM_ERR_NOMEM;
    }
    GM_T scale = (GM_T)(1.0 / sqrt((double)hd));
    long ntask = (long)(nbh * d.tiles);
    size_t ld = d.ld, dm = d.dm;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel num_threads(nthreads)
    {
        int tid = gm_thread_id();
        GM_T *g = scratch + (size_t)tid * GM_HEAD_TILE * n;
#pragma omp for schedule(static)
        for (long t = 0; t < ntask; t++) {
            GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
            GM_FN(gm_attn_bwd_rows)(&d, k.h, k.r0, k.nr, rz + k.bh * n,
                                           out + k.img * n * dm, dout + k.img * n * dm,
                                           ad + k.bh * n * hd, delta + k.bh * n);
        }
        /* dv for the key rows of tile k: e[:, rows]^T ad */
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
            GM_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k.nr, (int)hd, (int)n, 1.0,
                 e + k.bh * n * n + k.r0, (int)n, ad + k.bh * n * hd, (int)hd, 0.0,
                 dqkv + k.img * n * ld + k.r0 * ld + 2 * dm + k.h * hd, (int)ld);
        }
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
            GM_FN(gm_attn_bwd_query_tile)(&d, qkv + k.img * n * ld, k.h, k.r0, k.nr,
                                                 scale, e + k.bh * n * n, ad + k.bh * n * hd,
                                                 delta + k.bh * n, g, dqkv + k.img * n * ld);
        }
        /* dk for the key rows of tile k: scale dS[:, rows]^T q */
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
            GM_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k.nr, (int)hd, (int)n, scale,
                 e + k.bh * n * n + k.r0, (int)n, qkv + k.img * n * ld + k.h * hd, (int)ld,
                 0.0, dqkv + k.img * n * ld + k.r0 * ld + dm + k.h * hd, (int)ld);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    free(ad);
    free(delta);
    free(scratch);
    return GM_OK;
}

/* Row-wise LayerNorm keeping the backward's inputs: xhat = (x - mean) * rstd,
 * rstd = 1 / sqrt(var + eps) (biased variance, two passes), y = xhat * gamma
 * + beta.  x, y, xhat are n x d (y may alias x).  Rows in parallel.
 * O(n d). */
int GM_FN(gm_layernorm_fwd)(const GM_T *x, size_t n, size_t d, const GM_T *gamma,
                                   const GM_T *beta, double eps, GM_T *y, GM_T *xhat, GM_T *rstd)
{
    if (n == 0 || d == 0 || !(eps >= 0.0)) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long i = 0; i < rows; i++) {
        const GM_T *xi = x + (size_t)i * d;
        GM_T *restrict hi = xhat + (size_t)i * d;
        GM_T *yi = y + (size_t)i * d;
        GM_T mean = GM_FN(gm_vec_dot16)(xi, NULL, d) / (GM_T)d;
        for (size_t j = 0; j < d; j++) hi[j] = xi[j] - mean;
        GM_T var = GM_FN(gm_vec_dot16)(hi, hi, d) / (GM_T)d;
        GM_T r = (GM_T)(1.0 / sqrt((double)var + eps));
        rstd[i] = r;
        for (size_t j = 0; j < d; j++) {
            hi[j] *= r;
            yi[j] = hi[j] * gamma[j] + beta[j];
        }
    }
    return GM_OK;
}

/* Rows per block of the parameter-gradient partial sums (fixed, so the sums
 * do not depend on the thread count). */
#define GM_HEAD_LN_BLOCK 64
/* Columns per chunk of the row means in gm_layernorm_bwd (stack buffer). */
#define GM_HEAD_LN_MAXD 512

/* Reverse mode of gm_layernorm_fwd: from dy (n x d), xhat, rstd and gamma,
 * dx = rstd (dy gamma - mean(dy gamma) - xhat mean(dy gamma xhat)), written
 * to dx or added to it when accumulate; dgamma = sum_i dy xhat and dbeta =
 * sum_i dy (length d) are overwritten.  The column sums go through partials
 * over fixed blocks of 64 rows added in block order.  O(n d) time,
 * O(n d / 64) scratch. */
int GM_FN(gm_layernorm_bwd)(const GM_T *dy, const GM_T *xhat, const GM_T *rstd,
                                   const GM_T *gamma, size_t n, size_t d, int accumulate,
                                   GM_T *dx, GM_T *dgamma, GM_T *dbeta)
{
    if (n == 0 || d == 0) return GM_ERR_INVALID;
    size_t nblk = (n + GM_HEAD_LN_BLOCK - 1) / GM_HEAD_LN_BLOCK;
    GM_T *part = (GM_T *)malloc(nblk * 2 * d * sizeof(GM_T));
    if (part == NULL) return GM_ERR_NOMEM;
    long blocks = (long)nblk;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long b = 0; b < blocks; b++) {
        GM_T *restrict pg = part + (size_t)b * 2 * d;
        GM_T *restrict pb = pg + d;
        for (size_t j = 0; j < d; j++) pg[j] = pb[j] = 0;
        size_t lo = (size_t)b * GM_HEAD_LN_BLOCK;
        size_t hi = lo + GM_HEAD_LN_BLOCK < n ? lo + GM_HEAD_LN_BLOCK : n;
        for (size_t i = lo; i < hi; i++) {
            const GM_T *restrict g = dy + i * d;
            const GM_T *restrict xh = xhat + i * d;
            GM_T *restrict o = dx + i * d;
            for (size_t j = 0; j < d; j++) {
                pg[j] += g[j] * xh[j];
                pb[j] += g[j];
                o[j] = accumulate ? o[j] : 0;
            }
            /* m1 = mean(dy gamma), m2 = mean(dy gamma xhat) */
            GM_T gg[GM_HEAD_LN_MAXD];
            GM_T m1 = 0, m2 = 0;
            for (size_t j0 = 0; j0 < d; j0 += GM_HEAD_LN_MAXD) {
                size_t len = d - j0 < GM_HEAD_LN_MAXD ? d - j0 : GM_HEAD_LN_MAXD;
                for (size_t j = 0; j < len; j++) gg[j] = g[j0 + j] * gamma[j0 + j];
                m1 += GM_FN(gm_vec_dot16)(gg, NULL, len);
                m2 += GM_FN(gm_vec_dot16)(gg, xh + j0, len);
            }
            m1 /= (GM_T)d;
            m2 /= (GM_T)d;
            GM_T r = rstd[i];
            for (size_t j = 0; j < d; j++) o[j] += (g[j] * gamma[j] - m1 - xh[j] * m2) * r;
        }
    }
    for (size_t j = 0; j < d; j++) dgamma[j] = dbeta[j] = 0;
    for (size_t b = 0; b < nblk; b++)
        for (size_t j = 0; j < d; j++) {
            dgamma[j] += part[b * 2 * d + j];
            dbeta[j] += part[b * 2 * d + d + j];
        }
    free(part);
    return GM_OK;
}

/* tanh(x) = 1 - 2 / (e^{2x} + 1) on the vectorizing exponential (absolute
 * error a few ulp of 1; saturates to +-1).  O(1). */
static inline GM_T GM_FN(gm_head_tanh)(GM_T x)
{
    GM_T e = GM_EXP((GM_T)2 * x);
    return (GM_T)1 - (GM_T)2 / (e + (GM_T)1);
}

/* GELU, tanh form: t = tanh(c (u + 0.044715 u^3)), g = 0.5 u (1 + t) with
 * c = sqrt(2 / pi), over `count` values; t is kept for the backward.
 * O(count). */
int GM_FN(gm_gelu_tanh_fwd)(const GM_T *u, size_t count, GM_T *g, GM_T *t)
{
    const GM_T c = (GM_T)0.79788456080286535588;
    long nblk = (long)((count + 4095) / 4096);
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)count))
    for (long b = 0; b < nblk; b++) {
        size_t lo = (size_t)b * 4096, hi = lo + 4096 < count ? lo + 4096 : count;
        for (size_t i = lo; i < hi; i++) {
            GM_T v = u[i];
            GM_T th = GM_FN(gm_head_tanh)(c * (v + (GM_T)0.044715 * v * v * v));
            t[i] = th;
            g[i] = (GM_T)0.5 * v * ((GM_T)1 + th);
        }
    }
    return GM_OK;
}

/* Reverse mode: du = dg * (0.5 (1 + t) + 0.5 u (1 - t^2) c (1 + 3 * 0.044715 u^2)).
 * du may alias dg.  O(count). */
int GM_FN(gm_gelu_tanh_bwd)(const GM_T *dg, const GM_T *u, const GM_T *t, size_t count, GM_T *du)
{
    const GM_T c = (GM_T)0.79788456080286535588;
    long nblk = (long)((count + 4095) / 4096);
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)count))
    for (long b = 0; b < nblk; b++) {
        size_t lo = (size_t)b * 4096, hi = lo + 4096 < count ? lo + 4096 : count;
        for (size_t i = lo; i < hi; i++) {
            GM_T v = u[i], th = t[i];
            GM_T dt = c * ((GM_T)1 + (GM_T)(3 * 0.044715) * v * v);
            du[i] = dg[i] * ((GM_T)0.5 * ((GM_T)1 + th) + (GM_T)0.5 * v * ((GM_T)1 - th * th) * dt);
        }
    }
    return GM_OK;
}

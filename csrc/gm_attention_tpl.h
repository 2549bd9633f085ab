/* gm_attention_tpl.h -- type-generic body of gm_attention.c, instantiated
 * once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header. */

/* Shapes shared by the attention kernels. */
typedef struct {
    size_t n, heads, hd;
    size_t dm;   /* heads * hd: width of q, k, v and of the output */
    size_t ld;   /* 3 * dm: row stride of qkv */
    size_t tile;  /* query (or key) rows per task */
    size_t tiles;
} GM_FN(gm_attn_dims);

static int GM_FN(gm_attn_dims_init)(GM_FN(gm_attn_dims) *d, size_t batch, size_t n,
                                    size_t heads, size_t hd, size_t tile)
{
    if (batch == 0 || n == 0 || heads == 0 || hd == 0) return GM_ERR_INVALID;
    if (n > INT_MAX / 4 || heads * hd > INT_MAX / 4) return GM_ERR_INVALID;
    d->n = n;
    d->heads = heads;
    d->hd = hd;
    d->dm = heads * hd;
    d->ld = 3 * d->dm;
    d->tile = tile;
    d->tiles = (n + tile - 1) / tile;
    return GM_OK;
}

/* One task of a sweep over (image, head, tile of rows). */
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
    k.r0 = (size_t)t % d->tiles * d->tile;
    k.nr = d->n - k.r0 < d->tile ? d->n - k.r0 : d->tile;
    return k;
}

/* Forward of one tile: query rows [r0, r0 + nr) of head h of one image.
 * s (nr x n) <- exponentials of the shifted scores; rz[i] = 1 / row sum;
 * o rows = (s v) * rz.  O(nr n hd). */
static void GM_FN(gm_attn_fwd_tile)(const GM_FN(gm_attn_dims) *d, const GM_T *qkv, size_t h,
                                    size_t r0, size_t nr, GM_T scale, GM_T *s, GM_T *rz,
                                    GM_T *out)
{
    size_t n = d->n, ld = d->ld, dm = d->dm, hd = d->hd;
    const GM_T *q = qkv + r0 * ld + h * hd;
    const GM_T *k = qkv + dm + h * hd;
    const GM_T *v = qkv + 2 * dm + h * hd;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)n, (int)hd, scale, q,
            (int)ld, k, (int)ld, 0.0, s, (int)n);
    for (size_t i = 0; i < nr; i++) rz[i] = GM_FN(gm_vec_exp_row)(s + i * n, n);
    GM_T *o = out + r0 * dm + h * hd;
    GM_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)hd, (int)n, 1.0, s,
            (int)n, v, (int)ld, 0.0, o, (int)dm);
    for (size_t i = 0; i < nr; i++)
        for (size_t c = 0; c < hd; c++) o[i * dm + c] *= rz[i];
}

/* The one attention forward: out (batch x n x heads*hd) = softmax(q k^T /
 * sqrt(hd)) v per head, for qkv (batch x n x 3*heads*hd, [q | k | v]), in
 * tasks of `tile` query rows (at most GM_ATTN_MAXTILE) run in parallel
 * (dynamic schedule) with single-threaded BLAS, each task on one thread (so
 * results do not depend on the thread count).  With e and rz given, the
 * exponentials of the shifted scores (batch x heads x n x n) and 1 / their
 * row sums (batch x heads x n) are kept there for the backward; without
 * them, each thread works in a tile x n scratch.  O(batch heads n^2 hd). */
static int GM_FN(gm_attention)(const GM_T *qkv, size_t batch, size_t n, size_t heads,
                               size_t hd, size_t tile, GM_T *e, GM_T *rz, GM_T *out)
{
    GM_FN(gm_attn_dims) d;
    int st = GM_FN(gm_attn_dims_init)(&d, batch, n, heads, hd, tile);
    if (st != GM_OK) return st;
    GM_T scale = (GM_T)(1.0 / sqrt((double)hd));
    long ntask = (long)(batch * heads * d.tiles);
    int nthreads = gm_get_num_threads();
    GM_T *scratch = NULL;
    if (e == NULL && !(scratch = (GM_T *)malloc((size_t)nthreads * tile * n * sizeof(GM_T))))
        return GM_ERR_NOMEM;
    GM_OPENBLAS(set_num_threads)(1);
#pragma omp parallel num_threads(nthreads)
    {
        GM_T *s0 = scratch ? scratch + (size_t)gm_thread_id() * tile * n : NULL;
        GM_T inv[GM_ATTN_MAXTILE];
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            GM_FN(gm_attn_task) k = GM_FN(gm_attn_task_of)(&d, t);
            GM_FN(gm_attn_fwd_tile)(&d, qkv + k.img * n * d.ld, k.h, k.r0, k.nr, scale,
                                    s0 ? s0 : e + k.bh * n * n + k.r0 * n,
                                    rz ? rz + k.bh * n + k.r0 : inv, out + k.img * n * d.dm);
        }
    }
    GM_OPENBLAS(set_num_threads)(nthreads);
    free(scratch);
    return GM_OK;
}

/* Backbone attention (gm_nn_attention_kernel in geomatch.h): nothing kept;
 * the fused float32 kernel (gm_attention.c) where it applies. */
int GM_FN(gm_nn_attention_kernel)(const GM_T *qkv, size_t batch, size_t n, size_t heads,
                                  size_t hd, int kernel, GM_T *out)
{
    if (kernel != GM_NN_ATTN_AUTO && kernel != GM_NN_ATTN_TILED && kernel != GM_NN_ATTN_FUSED)
        return GM_ERR_INVALID;
#if GM_IS_F32
    if (kernel != GM_NN_ATTN_TILED && hd == GM_FA_HD && gm_nn_attention_fused_supported())
        return gm_fa_attention(qkv, batch, n, heads, out);
#endif
    if (kernel == GM_NN_ATTN_FUSED) return GM_ERR_INVALID;
    return GM_FN(gm_attention)(qkv, batch, n, heads, hd, GM_ATTN_TILE_NN, NULL, NULL, out);
}

int GM_FN(gm_nn_attention)(const GM_T *qkv, size_t batch, size_t n, size_t heads, size_t hd,
                           GM_T *out)
{
    return GM_FN(gm_nn_attention_kernel)(qkv, batch, n, heads, hd, GM_NN_ATTN_AUTO, out);
}

/* Head attention forward (gm_head_attention_fwd in geomatch.h): keeps e
 * and rz for gm_head_attention_bwd. */
int GM_FN(gm_head_attention_fwd)(const GM_T *qkv, size_t batch, size_t n, size_t heads,
                                 size_t hd, GM_T *e, GM_T *rz, GM_T *out)
{
    if (e == NULL || rz == NULL) return GM_ERR_INVALID;
    return GM_FN(gm_attention)(qkv, batch, n, heads, hd, GM_ATTN_TILE_HEAD, e, rz, out);
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
    int st = GM_FN(gm_attn_dims_init)(&d, batch, n, heads, hd, GM_ATTN_TILE_HEAD);
    if (st != GM_OK) return st;
    int nthreads = gm_get_num_threads();
    size_t nbh = batch * heads;
    GM_T *ad = (GM_T *)malloc(nbh * n * hd * sizeof(GM_T));
    GM_T *delta = (GM_T *)malloc(nbh * n * sizeof(GM_T));
    GM_T *scratch = (GM_T *)malloc((size_t)nthreads * GM_ATTN_TILE_HEAD * n * sizeof(GM_T));
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
        GM_T *g = scratch + (size_t)tid * GM_ATTN_TILE_HEAD * n;
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

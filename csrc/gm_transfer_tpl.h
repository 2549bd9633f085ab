/* gm_transfer_tpl.h -- type-generic body of gm_transfer.c,
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header. */

/* The five Gram products of a 2x2 block of grid vectors t00 t01 / t10 t11
 * (row-major neighbours) in one pass over D: out = {t00.t00, t00.t01,
 * t00.t10, t00.t11, t01.t10}.  Each is accumulated in 16 fixed lanes summed
 * in a fixed order, so values never depend on alignment, on the vectorizer's
 * choices or on the thread count.  O(D). */
static void GM_FN(gm_tr_gram5)(const GM_T *t00, const GM_T *t01, const GM_T *t10,
                                const GM_T *t11, size_t n, GM_T out[5])
{
    GM_T a0[16], a1[16], a2[16], a3[16], a4[16];
    size_t i = 0;
    int j;
    for (j = 0; j < 16; j++) a0[j] = a1[j] = a2[j] = a3[j] = a4[j] = (GM_T)0;
    for (; i + 16 <= n; i += 16) {
        for (j = 0; j < 16; j++) {
            GM_T x = t00[i + j], y = t01[i + j], z = t10[i + j];
            a0[j] += x * x;
            a1[j] += x * y;
            a2[j] += x * z;
            a3[j] += x * t11[i + j];
            a4[j] += y * z;
        }
    }
    for (j = 0; i < n; i++, j++) {
        GM_T x = t00[i], y = t01[i], z = t10[i];
        a0[j] += x * x;
        a1[j] += x * y;
        a2[j] += x * z;
        a3[j] += x * t11[i];
        a4[j] += y * z;
    }
    out[0] = GM_FN(gm_vec_fold)(a0, 16);
    out[1] = GM_FN(gm_vec_fold)(a1, 16);
    out[2] = GM_FN(gm_vec_fold)(a2, 16);
    out[3] = GM_FN(gm_vec_fold)(a3, 16);
    out[4] = GM_FN(gm_vec_fold)(a4, 16);
}

/* Four dot products q0.t, q1.t, q2.t, q3.t sharing the loads of t (length
 * n), each with the fixed-lane summation order of gm_tr_gram5.  O(n). */
static void GM_FN(gm_tr_dot4)(const GM_T *q0, const GM_T *q1, const GM_T *q2,
                               const GM_T *q3, const GM_T *t, size_t n, GM_T out[4])
{
    GM_T a0[16], a1[16], a2[16], a3[16];
    size_t i = 0;
    int j;
    for (j = 0; j < 16; j++) a0[j] = a1[j] = a2[j] = a3[j] = (GM_T)0;
    for (; i + 16 <= n; i += 16) {
        for (j = 0; j < 16; j++) {
            GM_T x = t[i + j];
            a0[j] += q0[i + j] * x;
            a1[j] += q1[i + j] * x;
            a2[j] += q2[i + j] * x;
            a3[j] += q3[i + j] * x;
        }
    }
    for (j = 0; i < n; i++, j++) {
        GM_T x = t[i];
        a0[j] += q0[i] * x;
        a1[j] += q1[i] * x;
        a2[j] += q2[i] * x;
        a3[j] += q3[i] * x;
    }
    out[0] = GM_FN(gm_vec_fold)(a0, 16);
    out[1] = GM_FN(gm_vec_fold)(a1, 16);
    out[2] = GM_FN(gm_vec_fold)(a2, 16);
    out[3] = GM_FN(gm_vec_fold)(a3, 16);
}

/* Workspace of one call, sized for the largest target image of the batch. */
typedef struct {
    size_t hw, wp;        /* target grid cells; padded row length (>= max W) */
    GM_T *tab;            /* 5 Gram tables, each ht*wt: N, Hn, V, D1, D2 */
    GM_T *q;              /* nkps x dim source descriptors */
    GM_T *g;              /* nkps x ht*wt grid dot products */
    int *c0, *c1;         /* column taps per target pixel column (max W) */
    GM_T *b0, *b1;
    int *r0, *r1;         /* row taps per target pixel row (max H) */
    GM_T *a0, *a1;
    GM_T *nrow, *mx;      /* ht x wp: |row-interpolated vector|^2, row cross term */
    GM_T *p;              /* nkps x ht x wp: row-interpolated numerators */
    GM_T *tbuf;           /* nthr x 2 x wp: per-thread 1/norm row and values row */
    GM_T *bestv;          /* nthr x nkps best value of each thread's row block */
    int64_t *bestx, *besty;
    int nthr;
} GM_FN(gm_tr_ws);

static void GM_FN(gm_tr_ws_free)(GM_FN(gm_tr_ws) *w)
{
    free(w->tab); free(w->q); free(w->g);
    free(w->c0); free(w->c1); free(w->b0); free(w->b1);
    free(w->r0); free(w->r1); free(w->a0); free(w->a1);
    free(w->nrow); free(w->mx); free(w->p); free(w->tbuf);
    free(w->bestv); free(w->bestx); free(w->besty);
}

/* Allocate the workspace; GM_ERR_NOMEM on failure (then freed).  O(sizes). */
static int GM_FN(gm_tr_ws_alloc)(GM_FN(gm_tr_ws) *w, size_t ht, size_t wt, size_t dim,
                                  size_t nkps, size_t maxw, size_t maxh)
{
    size_t s = sizeof(GM_T);
    memset(w, 0, sizeof *w);
    w->hw = ht * wt;
    w->wp = gm_tr_pad16(maxw);
    w->nthr = gm_get_num_threads();
    if (w->nthr < 1) w->nthr = 1;
    w->tab = gm_tr_alloc(5 * w->hw * s);
    w->q = gm_tr_alloc(nkps * dim * s);
    w->g = gm_tr_alloc(nkps * w->hw * s);
    w->c0 = gm_tr_alloc(maxw * sizeof(int));
    w->c1 = gm_tr_alloc(maxw * sizeof(int));
    w->b0 = gm_tr_alloc(maxw * s);
    w->b1 = gm_tr_alloc(maxw * s);
    w->r0 = gm_tr_alloc(maxh * sizeof(int));
    w->r1 = gm_tr_alloc(maxh * sizeof(int));
    w->a0 = gm_tr_alloc(maxh * s);
    w->a1 = gm_tr_alloc(maxh * s);
    w->nrow = gm_tr_alloc(ht * w->wp * s);
    w->mx = gm_tr_alloc(ht * w->wp * s);
    w->p = gm_tr_alloc(nkps * ht * w->wp * s);
    w->tbuf = gm_tr_alloc((size_t)w->nthr * 2 * w->wp * s);
    w->bestv = gm_tr_alloc((size_t)w->nthr * nkps * s);
    w->bestx = gm_tr_alloc((size_t)w->nthr * nkps * sizeof(int64_t));
    w->besty = gm_tr_alloc((size_t)w->nthr * nkps * sizeof(int64_t));
    if (!w->tab || !w->q || !w->g || !w->c0 || !w->c1 || !w->b0 || !w->b1 || !w->r0 ||
        !w->r1 || !w->a0 || !w->a1 || !w->nrow || !w->mx || !w->p || !w->tbuf ||
        !w->bestv || !w->bestx || !w->besty) {
        GM_FN(gm_tr_ws_free)(w);
        return GM_ERR_NOMEM;
    }
    return GM_OK;
}

/* Source descriptor of keypoint (x, y): the upsampled source map at pixel
 * (floor(y), floor(x)), i.e. a bilinear combination of <= 4 grid vectors,
 * scaled to unit length (left zero if it is zero).  O(D). */
static void GM_FN(gm_tr_source_desc)(const GM_T *sf, size_t hs, size_t ws, size_t dim,
                                      int64_t W, int64_t H, GM_T x, GM_T y, GM_T *q)
{
    int64_t i0, i1, j0, j1;
    double wy, wx;
    size_t d;
    gm_transfer_linear_taps((int64_t)floor((double)y), (int64_t)hs, H, &i0, &i1, &wy);
    gm_transfer_linear_taps((int64_t)floor((double)x), (int64_t)ws, W, &j0, &j1, &wx);
    {
        GM_T w00 = (GM_T)((1.0 - wy) * (1.0 - wx)), w01 = (GM_T)((1.0 - wy) * wx);
        GM_T w10 = (GM_T)(wy * (1.0 - wx)), w11 = (GM_T)(wy * wx);
        const GM_T *s00 = sf + ((size_t)i0 * ws + (size_t)j0) * dim;
        const GM_T *s01 = sf + ((size_t)i0 * ws + (size_t)j1) * dim;
        const GM_T *s10 = sf + ((size_t)i1 * ws + (size_t)j0) * dim;
        const GM_T *s11 = sf + ((size_t)i1 * ws + (size_t)j1) * dim;
        double nn = 0.0;
        for (d = 0; d < dim; d++) {
            q[d] = w00 * s00[d] + w01 * s01[d] + w10 * s10[d] + w11 * s11[d];
            nn += (double)q[d] * (double)q[d];
        }
        /* unit length (the argmax is scale-free); this bounds the numerators
         * by the target norms, so squaring them cannot overflow */
        if (nn > 0.0) {
            GM_T inv = (GM_T)(1.0 / sqrt(nn));
            for (d = 0; d < dim; d++) q[d] *= inv;
        }
    }
}

/* Per-grid-row work of one pair, for target grid row r: the five Gram
 * tables, the grid dot products g = q_k . t[r, c], the row-interpolated
 * squared norms nrow[r][X] and cross terms mx[r][X] (rows r, r + 1), and the
 * row-interpolated numerators P[k][r][X].  Rows are independent.  Returns
 * 0 if every value is finite, 1 if a Gram value is not (a non-finite input
 * or an overflow), else 2 if a later value is not (everything is written
 * either way).  O(w D (5 + K) + W (2 + K)). */
static int GM_FN(gm_tr_row)(GM_FN(gm_tr_ws) *w, const GM_T *tf, size_t r, size_t ht,
                             size_t wt, size_t dim, size_t nkps, int64_t Wt)
{
    const size_t hw = w->hw, wp = w->wp, r1 = r + 1 < ht ? r + 1 : r;
    GM_T *N = w->tab + r * wt, *Hn = w->tab + hw + r * wt, *V = w->tab + 2 * hw + r * wt;
    GM_T *D1 = w->tab + 3 * hw + r * wt, *D2 = w->tab + 4 * hw + r * wt;
    GM_T *nr = w->nrow + r * wp, *m = w->mx + r * wp;
    size_t c, k;
    int64_t X;
    int bad = 0, gram_bad;
    for (c = 0; c < wt; c++) {
        size_t c1 = c + 1 < wt ? c + 1 : c;
        const GM_T *t = tf + (r * wt + c) * dim;
        GM_T o[5];
        GM_FN(gm_tr_gram5)(t, tf + (r * wt + c1) * dim, tf + (r1 * wt + c) * dim,
                            tf + (r1 * wt + c1) * dim, dim, o);
        N[c] = o[0];
        Hn[c] = o[1];
        V[c] = o[2];
        D1[c] = o[3];
        D2[c] = o[4];
        for (k = 0; k + 4 <= nkps; k += 4) {
            const GM_T *q = w->q + k * dim;
            GM_FN(gm_tr_dot4)(q, q + dim, q + 2 * dim, q + 3 * dim, t, dim, o);
            w->g[k * hw + r * wt + c] = o[0];
            w->g[(k + 1) * hw + r * wt + c] = o[1];
            w->g[(k + 2) * hw + r * wt + c] = o[2];
            w->g[(k + 3) * hw + r * wt + c] = o[3];
        }
        if (k < nkps) {
            /* 1-3 leftover keypoints: one more dot4 with repeated queries */
            const GM_T *q = w->q + k * dim, *ql = w->q + (nkps - 1) * dim;
            size_t j;
            GM_FN(gm_tr_dot4)(q, k + 1 < nkps ? q + dim : ql, k + 2 < nkps ? q + 2 * dim : ql,
                               ql, t, dim, o);
            for (j = 0; k + j < nkps; j++) w->g[(k + j) * hw + r * wt + c] = o[j];
        }
    }
    gram_bad = !GM_FN(gm_vec_all_finite)(N, wt) || !GM_FN(gm_vec_all_finite)(Hn, wt) ||
               !GM_FN(gm_vec_all_finite)(V, wt) || !GM_FN(gm_vec_all_finite)(D1, wt) ||
               !GM_FN(gm_vec_all_finite)(D2, wt);
    for (X = 0; X < Wt; X++) {
        int c0 = w->c0[X], c1 = w->c1[X];
        GM_T b0 = w->b0[X], b1 = w->b1[X];
        nr[X] = b0 * b0 * N[c0] + 2 * b0 * b1 * Hn[c0] + b1 * b1 * N[c1];
        m[X] = b0 * b0 * V[c0] + b1 * b1 * V[c1] + b0 * b1 * (D1[c0] + D2[c0]);
    }
    bad |= !GM_FN(gm_vec_all_finite)(nr, (size_t)Wt) || !GM_FN(gm_vec_all_finite)(m, (size_t)Wt);
    for (k = 0; k < nkps; k++) {
        const GM_T *g = w->g + k * hw + r * wt;
        GM_T *p = w->p + (k * ht + r) * wp;
        for (X = 0; X < Wt; X++) p[X] = w->b0[X] * g[w->c0[X]] + w->b1[X] * g[w->c1[X]];
        bad |= !GM_FN(gm_vec_all_finite)(p, (size_t)Wt);
    }
    return gram_bad ? 1 : (bad ? 2 : 0);
}

/* Scan of one target pixel row Y for every keypoint.  With the unit source
 * descriptor q, num = q.t(Y, X) = a0 P[r0] + a1 P[r1] and d = |t(Y, X)|^2,
 * the cosine is num / sqrt(d); the scan ranks pixels by the monotone
 * transform cos |cos| = num |num| / d instead, which needs no square root
 * (a libm sqrtf does not vectorize under the default -fmath-errno) and one
 * division per pixel shared by all keypoints.  Since |num| <= sqrt(d) the
 * values lie in [-1, 1] (up to rounding) and cannot overflow; a pixel with
 * d below the smallest normal number counts as a zero vector (value 0).
 * Values go to a row buffer; its maximum and, when that beats the calling
 * thread's best so far (bv/bx/by), the first X attaining it.  O(W (1 + K)). */
static void GM_FN(gm_tr_scan_row)(const GM_FN(gm_tr_ws) *w, long Y, size_t ht,
                                   size_t nkps, int nW, GM_T *inv, GM_T *val, GM_T *bv,
                                   int64_t *bx, int64_t *by)
{
    const size_t wp = w->wp;
    const int r0 = w->r0[Y], r1 = w->r1[Y];
    const GM_T a0 = w->a0[Y], a1 = w->a1[Y];
    const GM_T w00 = a0 * a0, w11 = a1 * a1, w01 = 2 * a0 * a1;
    const GM_T *n0 = w->nrow + (size_t)r0 * wp, *n1 = w->nrow + (size_t)r1 * wp;
    const GM_T *m0 = w->mx + (size_t)r0 * wp;
    size_t kk;
    int X;
    for (X = 0; X < nW; X++) {
        GM_T d = w00 * n0[X] + w11 * n1[X] + w01 * m0[X];
        inv[X] = d >= GM_T_TINY ? (GM_T)1 / d : (GM_T)0;
    }
    for (kk = 0; kk < nkps; kk++) {
        const GM_T *p0 = w->p + (kk * ht + (size_t)r0) * wp;
        const GM_T *p1 = w->p + (kk * ht + (size_t)r1) * wp;
        GM_T m;
        for (X = 0; X < nW; X++) {
            GM_T num = a0 * p0[X] + a1 * p1[X];
            val[X] = num * GM_FABS(num) * inv[X];
        }
        m = val[0];
#pragma omp simd reduction(max : m)
        for (X = 0; X < nW; X++) m = val[X] > m ? val[X] : m;
        if (m > bv[kk]) {
            int idx = nW;
#pragma omp simd reduction(min : idx)
            for (X = 0; X < nW; X++) {
                int c = val[X] == m ? X : nW;
                idx = c < idx ? c : idx;
            }
            if (idx < nW) {
                bv[kk] = m;
                bx[kk] = idx;
                by[kk] = Y;
            }
        }
    }
}

/* One pair, in one parallel region with a single barrier: per-grid-row
 * tables (threaded over target grid rows), then the pixel scan (threaded
 * over target pixel rows).  Each thread scans one contiguous block of pixel
 * rows in order (static schedule) and the blocks are merged in thread order
 * with a strict comparison, so exact ties go to the first pixel in row-major
 * order whatever the thread count.  Writes (x, y) per keypoint to out.
 * Returns GM_OK, GM_ERR_NUMERIC or GM_ERR_NONFINITE_ARG(1).
 * O(h w D (5 + K) + h W (2 + K) + H W (1 + K)). */
static int GM_FN(gm_tr_pair)(GM_FN(gm_tr_ws) *w, const GM_T *sf, const GM_T *tf,
                              const GM_T *kps, size_t hs, size_t ws, size_t ht, size_t wt,
                              size_t dim, size_t nkps, int64_t Ws, int64_t Hs, int64_t Wt,
                              int64_t Ht, GM_T *out)
{
    const int nthr = w->nthr;
    size_t i, k;
    int t, par, worst = 0;
    for (k = 0; k < nkps; k++)
        GM_FN(gm_tr_source_desc)(sf, hs, ws, dim, Ws, Hs, kps[2 * k], kps[2 * k + 1],
                                  w->q + k * dim);
    for (i = 0; i < (size_t)nthr * nkps; i++) {
        w->bestv[i] = -(GM_T)INFINITY;
        w->bestx[i] = w->besty[i] = -1;
    }
    /* tiny problems run on one thread: a parallel region costs more */
    par = gm_threads_for(GM_WORK_FMA * ((double)ht * (double)wt * (double)dim * (double)(5 + nkps) +
                                        (double)Ht * (double)Wt * (double)(1 + nkps) * 4.0)) > 1;
#pragma omp parallel num_threads(par ? nthr : 1) reduction(max : worst)
    {
        int tid = gm_thread_id();
        GM_T *inv = w->tbuf + (size_t)tid * 2 * w->wp, *val = inv + w->wp;
        long r, Y;
#pragma omp for schedule(static)
        for (r = 0; r < (long)ht; r++) {
            int st = GM_FN(gm_tr_row)(w, tf, (size_t)r, ht, wt, dim, nkps, Wt);
            worst = st > worst ? st : worst;
        }
#pragma omp for schedule(static)
        for (Y = 0; Y < (long)Ht; Y++)
            GM_FN(gm_tr_scan_row)(w, Y, ht, nkps, (int)Wt, inv, val,
                                   w->bestv + (size_t)tid * nkps, w->bestx + (size_t)tid * nkps,
                                   w->besty + (size_t)tid * nkps);
    }
    if (worst == 1)
        return GM_FN(gm_vec_all_finite)(tf, ht * wt * dim) ? GM_ERR_NUMERIC
                                                           : GM_ERR_NONFINITE_ARG(1);
    if (worst) return GM_ERR_NUMERIC;
    for (k = 0; k < nkps; k++) {
        GM_T best = -(GM_T)INFINITY;
        int64_t bx = 0, by = 0;
        for (t = 0; t < nthr; t++) {
            size_t j = (size_t)t * nkps + k;
            if (w->besty[j] >= 0 && w->bestv[j] > best) {
                best = w->bestv[j];
                bx = w->bestx[j];
                by = w->besty[j];
            }
        }
        out[2 * k] = (GM_T)bx;
        out[2 * k + 1] = (GM_T)by;
    }
    return GM_OK;
}

/* Taps of the n_out pixels of one axis from n_in grid cells.  O(n_out). */
static void GM_FN(gm_tr_axis_taps)(int64_t n_out, int64_t n_in, int *i0s, int *i1s,
                                   GM_T *w0, GM_T *w1)
{
    int64_t i, i0, i1;
    double f;
    for (i = 0; i < n_out; i++) {
        gm_transfer_linear_taps(i, n_in, n_out, &i0, &i1, &f);
        i0s[i] = (int)i0;
        i1s[i] = (int)i1;
        w0[i] = (GM_T)(1.0 - f);
        w1[i] = (GM_T)f;
    }
}

/* Taps of every target pixel column and row.  O(W + H). */
static void GM_FN(gm_tr_taps)(GM_FN(gm_tr_ws) *w, size_t ht, size_t wt, int64_t Wt,
                              int64_t Ht)
{
    GM_FN(gm_tr_axis_taps)(Wt, (int64_t)wt, w->c0, w->c1, w->b0, w->b1);
    GM_FN(gm_tr_axis_taps)(Ht, (int64_t)ht, w->r0, w->r1, w->a0, w->a1);
}

/* Image sizes and keypoints of a transfer (see gm_transfer_check in
 * geomatch.h).  O(batch nkps). */
int GM_FN(gm_transfer_check)(const GM_T *src_kps, const int64_t *src_size,
                              const int64_t *trg_size, size_t batch, size_t nkps)
{
    size_t b, k;
    if (batch > 0 && (!src_size || !trg_size || (nkps > 0 && !src_kps)))
        return GM_ERR_INVALID;
    for (b = 0; b < batch; b++) {
        for (k = 0; k < 4; k++) {
            const int64_t *sz = k < 2 ? src_size : trg_size;
            int64_t v = sz[2 * b + k % 2];
            if (v < 1 || v > GM_MAX_IMAGE_SIDE)
                return gm_fail(GM_ERR_RANGE_ARG(k < 2 ? 3 : 4),
                               "image size %s = %lld of pair %zu is outside the supported "
                               "range 1 to %d pixels", k % 2 ? "H" : "W", (long long)v, b,
                               GM_MAX_IMAGE_SIDE);
        }
    }
    if (!GM_FN(gm_all_finite)(src_kps, batch * nkps * 2)) return GM_ERR_NONFINITE_ARG(2);
    for (b = 0; b < batch; b++) {
        for (k = 0; k < nkps; k++) {
            double x = (double)src_kps[(b * nkps + k) * 2];
            double y = (double)src_kps[(b * nkps + k) * 2 + 1];
            if (!(x >= 0.0 && x < (double)src_size[2 * b] && y >= 0.0 &&
                  y < (double)src_size[2 * b + 1]))
                return gm_fail(GM_ERR_RANGE_ARG(2),
                               "keypoint %zu of pair %zu, (x, y) = (%.9g, %.9g), lies outside "
                               "the source image of size (W, H) = (%lld, %lld); need 0 <= x < "
                               "W and 0 <= y < H", k, b, x, y, (long long)src_size[2 * b],
                               (long long)src_size[2 * b + 1]);
        }
    }
    return GM_OK;
}

/* Validate the arguments of gm_transfer_upsample_argmax (see geomatch.h).
 * O(batch (hs ws + ht wt) D) for the finite checks. */
static int GM_FN(gm_tr_validate)(const GM_T *src_feat, const GM_T *trg_feat,
                                  const GM_T *src_kps, const int64_t *src_size,
                                  const int64_t *trg_size, size_t batch, size_t hs,
                                  size_t ws, size_t ht, size_t wt, size_t dim,
                                  size_t nkps, const GM_T *out)
{
    int st;
    if (hs == 0 || ws == 0 || ht == 0 || wt == 0 || dim == 0) return GM_ERR_INVALID;
    if (hs > INT32_MAX || ws > INT32_MAX || ht > INT32_MAX || wt > INT32_MAX)
        return GM_ERR_INVALID;
    if ((st = GM_FN(gm_transfer_check)(src_kps, src_size, trg_size, batch, nkps)) != GM_OK)
        return st;
    if (batch == 0 || nkps == 0) return GM_OK;
    if (!src_feat || !trg_feat || !out) return GM_ERR_INVALID;
    /* trg_feat is checked through its Gram table (a non-finite entry makes
     * its cell's squared norm non-finite); see gm_transfer_upsample_argmax. */
    if (!GM_FN(gm_vec_all_finite)(src_feat, batch * hs * ws * dim))
        return GM_ERR_NONFINITE_ARG(0);
    return GM_OK;
}

int GM_FN(gm_transfer_upsample_argmax)(const GM_T *src_feat, const GM_T *trg_feat,
                                        const GM_T *src_kps, const int64_t *src_size,
                                        const int64_t *trg_size, size_t batch, size_t hs,
                                        size_t ws, size_t ht, size_t wt, size_t dim,
                                        size_t nkps, GM_T *out)
{
    GM_FN(gm_tr_ws) w;
    size_t b, maxw = 1, maxh = 1;
    int status = GM_FN(gm_tr_validate)(src_feat, trg_feat, src_kps, src_size, trg_size,
                                        batch, hs, ws, ht, wt, dim, nkps, out);
    if (status != GM_OK || batch == 0 || nkps == 0) return status;
    for (b = 0; b < batch; b++) {
        if ((size_t)trg_size[2 * b] > maxw) maxw = (size_t)trg_size[2 * b];
        if ((size_t)trg_size[2 * b + 1] > maxh) maxh = (size_t)trg_size[2 * b + 1];
    }
    status = GM_FN(gm_tr_ws_alloc)(&w, ht, wt, dim, nkps, maxw, maxh);
    if (status != GM_OK) return status;
    for (b = 0; b < batch && status == GM_OK; b++) {
        int64_t Ws = src_size[2 * b], Hs = src_size[2 * b + 1];
        int64_t Wt = trg_size[2 * b], Ht = trg_size[2 * b + 1];
        GM_FN(gm_tr_taps)(&w, ht, wt, Wt, Ht);
        status = GM_FN(gm_tr_pair)(&w, src_feat + b * hs * ws * dim,
                                    trg_feat + b * ht * wt * dim, src_kps + b * nkps * 2, hs,
                                    ws, ht, wt, dim, nkps, Ws, Hs, Wt, Ht, out + b * nkps * 2);
    }
    GM_FN(gm_tr_ws_free)(&w);
    if (status == GM_ERR_NUMERIC)
        status = gm_fail(GM_ERR_NUMERIC, "dot products of the feature vectors overflow %s; "
                         "rescale src_feat/trg_feat", sizeof(GM_T) == 4 ? "float32" : "float64");
    return status;
}

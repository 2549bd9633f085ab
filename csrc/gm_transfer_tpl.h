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

/* Eight dot products q[0].t .. q[7].t sharing the loads of t (length n;
 * the q[j] may repeat), each accumulated in 16 fixed lanes summed in a fixed
 * order like gm_tr_gram5, so a value never depends on which other queries
 * share the call.  O(n). */
static void GM_FN(gm_tr_dot8)(const GM_T *const q[8], const GM_T *t, size_t n, GM_T out[8])
{
    const GM_T *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *q4 = q[4], *q5 = q[5];
    const GM_T *q6 = q[6], *q7 = q[7];
    GM_T a0[16], a1[16], a2[16], a3[16], a4[16], a5[16], a6[16], a7[16];
    size_t i = 0;
    int j;
    for (j = 0; j < 16; j++)
        a0[j] = a1[j] = a2[j] = a3[j] = a4[j] = a5[j] = a6[j] = a7[j] = (GM_T)0;
    for (; i + 16 <= n; i += 16) {
        for (j = 0; j < 16; j++) {
            GM_T x = t[i + j];
            a0[j] += q0[i + j] * x;
            a1[j] += q1[i + j] * x;
            a2[j] += q2[i + j] * x;
            a3[j] += q3[i + j] * x;
            a4[j] += q4[i + j] * x;
            a5[j] += q5[i + j] * x;
            a6[j] += q6[i + j] * x;
            a7[j] += q7[i + j] * x;
        }
    }
    for (j = 0; i < n; i++, j++) {
        GM_T x = t[i];
        a0[j] += q0[i] * x;
        a1[j] += q1[i] * x;
        a2[j] += q2[i] * x;
        a3[j] += q3[i] * x;
        a4[j] += q4[i] * x;
        a5[j] += q5[i] * x;
        a6[j] += q6[i] * x;
        a7[j] += q7[i] * x;
    }
    out[0] = GM_FN(gm_vec_fold)(a0, 16);
    out[1] = GM_FN(gm_vec_fold)(a1, 16);
    out[2] = GM_FN(gm_vec_fold)(a2, 16);
    out[3] = GM_FN(gm_vec_fold)(a3, 16);
    out[4] = GM_FN(gm_vec_fold)(a4, 16);
    out[5] = GM_FN(gm_vec_fold)(a5, 16);
    out[6] = GM_FN(gm_vec_fold)(a6, 16);
    out[7] = GM_FN(gm_vec_fold)(a7, 16);
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
    int *xlo, *ylo;       /* first pixel column (row) of each grid column (row),
                           * wt + 1 (ht + 1) entries: the pixels whose lower
                           * tap is grid column c are xlo[c] <= X < xlo[c + 1] */
    GM_T *nrow, *mx;      /* ht x wp: |row-interpolated vector|^2, row cross term */
    double *dlow;         /* ht*wt: lower bound of the computed |t(Y, X)|^2 in a cell */
    int64_t *area;        /* ht*wt: pixels of each cell (gm_tr_taps) */
    double *invd;         /* ht*wt: 1 / dlow, 0 where dlow is below GM_T_TINY */
    int *rowst;           /* ht: status of each grid row's tables (gm_tr_row) */
    GM_T *tbuf;           /* nthr x 3 x wp: per-thread rows (p0, p1, values of a
                           * cell; 1/d and values of a full-scan row) */
    double *bnd;          /* nthr x ht*wt: per-thread cell bounds of one keypoint */
    GM_T *p;              /* nkps x ht x wp: row-interpolated numerators of the
                           * keypoints that take the full scan (dense order);
                           * allocated on first use, else NULL */
    size_t plen;          /* its size in values */
    int full_scan;        /* GM_TRANSFER_FULL_SCAN: no branch and bound */
    int g_ready;          /* g already holds every grid dot (float32: the
                           * core's AVX-512 GEMM); gm_tr_row skips them */
    int gram_ready;       /* tab already holds the Gram tables (built while a
                           * float16 target was converted); gm_tr_row skips them */
    int packed_gemm;      /* GM_TRANSFER_PACKED_GEMM: grid dots through the
                           * packed GEMM (the previous path, same bits) */
    int *dense;           /* nkps: 1 if keypoint k takes the full scan */
    int *dlist;           /* nkps: those keypoints, in increasing order */
    GM_T *bestv;          /* nthr x nkps: full scan, best of each thread's rows */
    int64_t *bestx, *besty;
    int nthr;
} GM_FN(gm_tr_ws);

static void GM_FN(gm_tr_ws_free)(GM_FN(gm_tr_ws) *w)
{
    free(w->tab); free(w->q); free(w->g);
    free(w->c0); free(w->c1); free(w->b0); free(w->b1);
    free(w->r0); free(w->r1); free(w->a0); free(w->a1);
    free(w->xlo); free(w->ylo);
    free(w->nrow); free(w->mx); free(w->dlow); free(w->area); free(w->invd); free(w->rowst);
    free(w->tbuf); free(w->bnd); free(w->p); free(w->dense); free(w->dlist);
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
    w->xlo = gm_tr_alloc((wt + 1) * sizeof(int));
    w->ylo = gm_tr_alloc((ht + 1) * sizeof(int));
    w->nrow = gm_tr_alloc(ht * w->wp * s);
    w->mx = gm_tr_alloc(ht * w->wp * s);
    w->dlow = gm_tr_alloc(w->hw * sizeof(double));
    w->area = gm_tr_alloc(w->hw * sizeof(int64_t));
    w->invd = gm_tr_alloc(w->hw * sizeof(double));
    w->rowst = gm_tr_alloc(ht * sizeof(int));
    w->tbuf = gm_tr_alloc((size_t)w->nthr * 3 * w->wp * s);
    w->bnd = gm_tr_alloc((size_t)w->nthr * w->hw * sizeof(double));
    w->plen = nkps * ht * w->wp;
    w->p = NULL;              /* allocated when a keypoint needs the full scan */
    w->dense = gm_tr_alloc(nkps * sizeof(int));
    w->dlist = gm_tr_alloc(nkps * sizeof(int));
    w->bestv = gm_tr_alloc((size_t)w->nthr * nkps * s);
    w->bestx = gm_tr_alloc((size_t)w->nthr * nkps * sizeof(int64_t));
    w->besty = gm_tr_alloc((size_t)w->nthr * nkps * sizeof(int64_t));
    if (!w->dense || !w->dlist || !w->bestv || !w->bestx || !w->besty ||
        !w->tab || !w->q || !w->g || !w->c0 || !w->c1 || !w->b0 || !w->b1 || !w->r0 ||
        !w->r1 || !w->a0 || !w->a1 || !w->xlo || !w->ylo || !w->nrow || !w->mx ||
        !w->dlow || !w->area || !w->invd || !w->rowst || !w->tbuf || !w->bnd) {
        GM_FN(gm_tr_ws_free)(w);
        return GM_ERR_NOMEM;
    }
    return GM_OK;
}

/* Taps of the source descriptor of keypoint (x, y): the upsampled source map
 * at pixel (floor(y), floor(x)) is sum_i wt[i] sf[idx[i]] over <= 4 grid
 * vectors (rows of D values; idx in grid-vector units).  O(1). */
static void GM_FN(gm_tr_source_taps)(size_t hs, size_t ws, int64_t W, int64_t H, GM_T x,
                                      GM_T y, size_t idx[4], GM_T wt[4])
{
    int64_t i0, i1, j0, j1;
    double wy, wx;
    gm_transfer_linear_taps((int64_t)floor((double)y), (int64_t)hs, H, &i0, &i1, &wy);
    gm_transfer_linear_taps((int64_t)floor((double)x), (int64_t)ws, W, &j0, &j1, &wx);
    wt[0] = (GM_T)((1.0 - wy) * (1.0 - wx));
    wt[1] = (GM_T)((1.0 - wy) * wx);
    wt[2] = (GM_T)(wy * (1.0 - wx));
    wt[3] = (GM_T)(wy * wx);
    idx[0] = (size_t)i0 * ws + (size_t)j0;
    idx[1] = (size_t)i0 * ws + (size_t)j1;
    idx[2] = (size_t)i1 * ws + (size_t)j0;
    idx[3] = (size_t)i1 * ws + (size_t)j1;
}

/* q = the combination sum_i wt[i] s[i] of four D-vectors, scaled to unit
 * length (left zero if it is zero).  O(D). */
static void GM_FN(gm_tr_source_combine)(const GM_T *const s[4], const GM_T wt[4], size_t dim,
                                         GM_T *q)
{
    double nn = 0.0;
    size_t d;
    for (d = 0; d < dim; d++) {
        q[d] = wt[0] * s[0][d] + wt[1] * s[1][d] + wt[2] * s[2][d] + wt[3] * s[3][d];
        nn += (double)q[d] * (double)q[d];
    }
    /* unit length (the argmax is scale-free); this bounds the numerators
     * by the target norms, so squaring them cannot overflow */
    if (nn > 0.0) {
        GM_T inv = (GM_T)(1.0 / sqrt(nn));
        for (d = 0; d < dim; d++) q[d] *= inv;
    }
}

/* Source descriptor of keypoint (x, y): the upsampled source map at pixel
 * (floor(y), floor(x)), i.e. a bilinear combination of <= 4 grid vectors,
 * scaled to unit length (left zero if it is zero).  O(D). */
static void GM_FN(gm_tr_source_desc)(const GM_T *sf, size_t hs, size_t ws, size_t dim,
                                      int64_t W, int64_t H, GM_T x, GM_T y, GM_T *q)
{
    size_t idx[4], i;
    GM_T wt[4];
    const GM_T *s[4];
    GM_FN(gm_tr_source_taps)(hs, ws, W, H, x, y, idx, wt);
    for (i = 0; i < 4; i++) s[i] = sf + idx[i] * dim;
    GM_FN(gm_tr_source_combine)(s, wt, dim, q);
}

/* Per-grid-row work of one pair, for target grid row r: the five Gram
 * tables, the grid dot products g = q_k . t[r, c], and the row-interpolated
 * squared norms nrow[r][X] and cross terms mx[r][X] (rows r, r + 1).  Rows
 * are independent.  Returns 0 if every value is finite, 1 if a Gram value
 * is not (a non-finite input or an overflow), else 2 if a later value is
 * not (everything is written either way).  O(w D (5 + K) + W). */
/* The five Gram tables of target grid row r (reads rows r and r + 1).
 * O(w D). */
static void GM_FN(gm_tr_gram_row)(GM_FN(gm_tr_ws) *w, const GM_T *tf, size_t r, size_t ht,
                                  size_t wt, size_t dim)
{
    const size_t hw = w->hw, r1 = r + 1 < ht ? r + 1 : r;
    size_t c;
    for (c = 0; c < wt; c++) {
        size_t c1 = c + 1 < wt ? c + 1 : c, i = r * wt + c;
        GM_T o[5];
        GM_FN(gm_tr_gram5)(tf + (r * wt + c) * dim, tf + (r * wt + c1) * dim,
                            tf + (r1 * wt + c) * dim, tf + (r1 * wt + c1) * dim, dim, o);
        w->tab[i] = o[0];
        w->tab[hw + i] = o[1];
        w->tab[2 * hw + i] = o[2];
        w->tab[3 * hw + i] = o[3];
        w->tab[4 * hw + i] = o[4];
    }
}

static int GM_FN(gm_tr_row)(GM_FN(gm_tr_ws) *w, const GM_T *tf, size_t r, size_t ht,
                             size_t wt, size_t dim, size_t nkps, int64_t Wt)
{
    const size_t hw = w->hw, wp = w->wp;
    GM_T *N = w->tab + r * wt, *Hn = w->tab + hw + r * wt, *V = w->tab + 2 * hw + r * wt;
    GM_T *D1 = w->tab + 3 * hw + r * wt, *D2 = w->tab + 4 * hw + r * wt;
    GM_T *nr = w->nrow + r * wp, *m = w->mx + r * wp;
    size_t c, k;
    int64_t X;
    int bad = 0, gram_bad;
    if (!w->gram_ready) GM_FN(gm_tr_gram_row)(w, tf, r, ht, wt, dim);
    /* grid dots, eight keypoints at a time (gm_tr_dot8) over the whole grid
     * row, so that their queries stay in the L1 cache while the row's
     * vectors stream; the last group repeats its last query (its extra
     * values are not stored).  Every value is the same whatever the group */
    for (k = w->g_ready ? nkps : 0; k < nkps; k += 8) {
        const GM_T *q[8];
        size_t j;
        for (j = 0; j < 8; j++) q[j] = w->q + (k + j < nkps ? k + j : nkps - 1) * dim;
        for (c = 0; c < wt; c++) {
            GM_T o[8];
            GM_FN(gm_tr_dot8)(q, tf + (r * wt + c) * dim, dim, o);
            for (j = 0; j < 8 && k + j < nkps; j++) w->g[(k + j) * hw + r * wt + c] = o[j];
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
    for (k = 0; k < nkps; k++) bad |= !GM_FN(gm_vec_all_finite)(w->g + k * hw + r * wt, wt);
    return gram_bad ? 1 : (bad ? 2 : 0);
}

/* ---- exact branch and bound over the cells of the upsampled map ----------
 *
 * A "cell" (r, c) is the block of target pixels whose lower taps are grid
 * row r and grid column c: ylo[r] <= Y < ylo[r + 1], xlo[c] <= X < xlo[c + 1].
 * Each of its pixels is a combination t(Y, X) = sum_i w_i t_i of the cell's
 * four corners t_0 = t[r, c], t_1 = t[r, c'], t_2 = t[r', c], t_3 = t[r', c']
 * (r' = min(r + 1, h - 1), c' = min(c + 1, w - 1)) with weights
 * (a0 b0, a0 b1, a1 b0, a1 b1) >= 0 that sum to 1 up to rounding.  The scan
 * ranks pixels by val = num |num| / d (gm_tr_cell_eval), num = q.t(Y, X),
 * d = |t(Y, X)|^2.  A cell bound B >= every computed val of the cell lets
 * the search skip cells with B < the best value found so far, and the pixels
 * that are evaluated are computed with exactly the arithmetic of a full
 * scan, so the result is the full scan's pixel, ties included.
 *
 * Why B is an upper bound of the *computed* values (u = unit roundoff of
 * GM_T, gamma = (ceil(D / 16) + 4) u, the error factor of one Gram or dot
 * product: at most ceil(D / 16) multiply-adds per lane and a 4-level fold):
 *  - Denominator.  G^ (the computed Gram matrix of the corners, from the five
 *    tables) differs from the exact Gram matrix G of the stored vectors by
 *    |E_ij| <= gamma |t_i| |t_j| <= gamma Gmax (Gmax = max_i G^_ii, to first
 *    order).  G is positive semidefinite, so f(w) = w'Gw is convex on the
 *    simplex and for ANY simplex point v (Frank-Wolfe duality)
 *        min_simplex f >= f(v) + min_i grad f(v).(e_i - v) = 2 min_i (Gv)_i - v'Gv.
 *    Evaluated with G^ instead of G that expression moves by at most
 *    3 gamma Gmax; we take the largest of it over nine points v (the centre,
 *    the corners, the edge midpoints), computed in double: LB.  A pixel's
 *    computed d is w'G^w (weights summing to s, s^2 >= 1 - 4u) up to 12 u s^2
 *    Gmax of rounding in nrow, mx and d, and w'G^w >= s^2 (min_simplex f -
 *    gamma Gmax).  Hence every computed d >= dlow = (1 - 8u) LB -
 *    (4 gamma + 32 u) Gmax, where we use 4 (ceil(D / 16) + 8) u + 32 u.
 *  - Numerator.  num is the weighted combination of the computed grid dots
 *    g_i of the corners, so num <= s gmax + 4 u s gabs (gmax, gabs: largest
 *    g_i and |g_i|; two FMA levels of rounding), s <= 1 + 2u.  If
 *    numhi = (1 + 2u)(gmax + 4 u gabs) <= 0 then num <= 0 and val <= 0: B = 0.
 *  - val = fl(fl(num |num|) fl(1 / d)) <= numhi^2 / d (1 + u)^3, so
 *    B = numhi^2 (1 / dlow) (1 + 8u) in double, 1 / dlow computed once per
 *    cell and target (gm_tr_cell_row): four double roundings, each at most
 *    u, leave B >= numhi^2 / dlow (1 + 8u)(1 - u)^4 > numhi^2 / dlow
 *    (1 + u)^3; a pixel with d below the smallest normal number has
 *    val = 0 <= B; if dlow is below it, B = +inf (the cell is always
 *    evaluated). */

/* dlow for the cells of grid row r (needs the tables of rows r and r + 1).
 * O(w). */
static void GM_FN(gm_tr_cell_row)(GM_FN(gm_tr_ws) *w, size_t r, size_t ht, size_t wt,
                                   size_t dim)
{
    const size_t hw = w->hw, r1 = r + 1 < ht ? r + 1 : r;
    const GM_T *N = w->tab, *Hn = w->tab + hw, *V = w->tab + 2 * hw;
    const GM_T *D1 = w->tab + 3 * hw, *D2 = w->tab + 4 * hw;
    const double u = GM_IS_F32 ? 0x1p-24 : 0x1p-53;
    const double slack = (4.0 * (double)((dim + 15) / 16 + 8) + 32.0) * u;
    /* corner pairs (a, b) of the four cell edges */
    static const int ea[4] = {0, 0, 1, 2}, eb[4] = {1, 2, 3, 3};
    size_t c;
    for (c = 0; c < wt; c++) {
        size_t c1 = c + 1 < wt ? c + 1 : c;
        size_t i00 = r * wt + c, i01 = r * wt + c1, i10 = r1 * wt + c, i11 = r1 * wt + c1;
        double G[4][4], gm = 0.0, lb, v, row[4];
        int i, j, e;
        G[0][0] = N[i00]; G[1][1] = N[i01]; G[2][2] = N[i10]; G[3][3] = N[i11];
        G[0][1] = G[1][0] = Hn[i00];
        G[2][3] = G[3][2] = Hn[i10];
        G[0][2] = G[2][0] = V[i00];
        G[1][3] = G[3][1] = V[i01];
        G[0][3] = G[3][0] = D1[i00];
        G[1][2] = G[2][1] = D2[i00];
        for (i = 0; i < 4; i++) gm = G[i][i] > gm ? G[i][i] : gm;
        /* centre */
        {
            double tot = 0.0, mn = INFINITY;
            for (i = 0; i < 4; i++) {
                row[i] = 0.25 * (G[i][0] + G[i][1] + G[i][2] + G[i][3]);
                tot += 0.25 * row[i];
                mn = row[i] < mn ? row[i] : mn;
            }
            lb = 2.0 * mn - tot;
        }
        /* corners */
        for (j = 0; j < 4; j++) {
            double mn = G[0][j];
            for (i = 1; i < 4; i++) mn = G[i][j] < mn ? G[i][j] : mn;
            v = 2.0 * mn - G[j][j];
            lb = v > lb ? v : lb;
        }
        /* edge midpoints */
        for (e = 0; e < 4; e++) {
            int a = ea[e], b = eb[e];
            double mn = INFINITY, tot = 0.25 * (G[a][a] + 2.0 * G[a][b] + G[b][b]);
            for (i = 0; i < 4; i++) {
                double x = 0.5 * (G[i][a] + G[i][b]);
                mn = x < mn ? x : mn;
            }
            v = 2.0 * mn - tot;
            lb = v > lb ? v : lb;
        }
        w->dlow[r * wt + c] = (1.0 - 8.0 * u) * lb - slack * gm;
        {   /* its reciprocal for the bounds, 0 when below the smallest normal */
            double d = w->dlow[r * wt + c];
            w->invd[r * wt + c] = d >= (double)GM_T_TINY ? 1.0 / d : 0.0;
        }
    }
}

/* Upper bounds B (see above) of the computed values val of the pixels of
 * the cells of grid row r for the keypoint whose grid dots are g, into
 * bnd[0 .. wt-1]; -inf for a cell without pixels.  Branch-free, so the loop
 * vectorizes.  O(w). */
static inline double GM_FN(gm_tr_bound1)(GM_T g0, GM_T g1, GM_T g2, GM_T g3, double inv,
                                         int nonempty, double u)
{
    GM_T m01 = g0 > g1 ? g0 : g1, m23 = g2 > g3 ? g2 : g3;
    GM_T a01 = GM_FABS(g0) > GM_FABS(g1) ? GM_FABS(g0) : GM_FABS(g1);
    GM_T a23 = GM_FABS(g2) > GM_FABS(g3) ? GM_FABS(g2) : GM_FABS(g3);
    double gmax = (double)(m01 > m23 ? m01 : m23), gabs = (double)(a01 > a23 ? a01 : a23);
    double numhi = (1.0 + 2.0 * u) * (gmax + 4.0 * u * gabs);
    double q = numhi * numhi * inv * (1.0 + 8.0 * u);
    double v = numhi <= 0.0 ? 0.0 : (inv > 0.0 ? q : INFINITY);
    return nonempty ? v : -INFINITY;
}

static void GM_FN(gm_tr_bound_row)(const GM_FN(gm_tr_ws) *w, const GM_T *g, size_t r,
                                   size_t ht, size_t wt, double *bnd)
{
    const double u = GM_IS_F32 ? 0x1p-24 : 0x1p-53;
    const size_t r1 = r + 1 < ht ? r + 1 : r, last = wt - 1;
    const GM_T *ga = g + r * wt, *gb = g + r1 * wt;
    const double *id = w->invd + r * wt;
    const int *xlo = w->xlo;
    size_t c;
    if (w->ylo[r + 1] <= w->ylo[r]) {
        for (c = 0; c < wt; c++) bnd[c] = -INFINITY;
        return;
    }
    /* corners (c, c + 1) with contiguous loads; the last column's right
     * neighbour is itself */
    for (c = 0; c < last; c++)
        bnd[c] = GM_FN(gm_tr_bound1)(ga[c], ga[c + 1], gb[c], gb[c + 1], id[c],
                                     xlo[c + 1] > xlo[c], u);
    bnd[last] = GM_FN(gm_tr_bound1)(ga[last], ga[last], gb[last], gb[last], id[last],
                                    xlo[last + 1] > xlo[last], u);
}

/* Evaluate every pixel of cell (r, c) for the keypoint whose grid dots are g
 * with the arithmetic of the full scan -- per pixel row Y the grid-row
 * numerators p = b0 g[.][c0] + b1 g[.][c1] of rows r0(Y), r1(Y), then
 * num = a0 p0 + a1 p1, d = a0^2 nrow[r0] + a1^2 nrow[r1] + 2 a0 a1 mx[r0],
 * val = num |num| (1 / d) (0 when d is below the smallest normal number) --
 * and update the best value *bv at raster index *bi (Y * W + X) when a pixel
 * beats it, or ties it at a smaller index.  buf: 3 rows of wp.
 * O(pixels of the cell). */
static void GM_FN(gm_tr_cell_eval)(const GM_FN(gm_tr_ws) *w, const GM_T *g, size_t r,
                                    size_t c, size_t wt, int64_t Wt, GM_T *buf, GM_T *bv,
                                    int64_t *bi)
{
    const size_t wp = w->wp;
    const int x0 = w->xlo[c], x1 = w->xlo[c + 1], nx = x1 - x0;
    const int y0 = w->ylo[r], y1 = w->ylo[r + 1];
    GM_T *p0 = buf, *p1 = buf + wp, *val = buf + 2 * wp;
    int X, Y, pr0 = -1, pr1 = -1;
    for (Y = y0; Y < y1; Y++) {
        const int r0 = w->r0[Y], r1 = w->r1[Y];
        const GM_T a0 = w->a0[Y], a1 = w->a1[Y];
        const GM_T w00 = a0 * a0, w11 = a1 * a1, w01 = 2 * a0 * a1;
        const GM_T *n0 = w->nrow + (size_t)r0 * wp + x0, *n1 = w->nrow + (size_t)r1 * wp + x0;
        const GM_T *m0 = w->mx + (size_t)r0 * wp + x0;
        GM_T m;
        int idx;
        if (r0 != pr0 || r1 != pr1) {
            const GM_T *g0 = g + (size_t)r0 * wt, *g1 = g + (size_t)r1 * wt;
            for (X = 0; X < nx; X++) {
                int xx = x0 + X;
                p0[X] = w->b0[xx] * g0[w->c0[xx]] + w->b1[xx] * g0[w->c1[xx]];
                p1[X] = w->b0[xx] * g1[w->c0[xx]] + w->b1[xx] * g1[w->c1[xx]];
            }
            pr0 = r0;
            pr1 = r1;
        }
        for (X = 0; X < nx; X++) {
            GM_T d = w00 * n0[X] + w11 * n1[X] + w01 * m0[X];
            GM_T inv = d >= GM_T_TINY ? (GM_T)1 / d : (GM_T)0;
            GM_T num = a0 * p0[X] + a1 * p1[X];
            val[X] = num * GM_FABS(num) * inv;
        }
        m = val[0];
#pragma omp simd reduction(max : m)
        for (X = 0; X < nx; X++) m = val[X] > m ? val[X] : m;
        if (m < *bv) continue;
        idx = nx;
#pragma omp simd reduction(min : idx)
        for (X = 0; X < nx; X++) {
            int cc = val[X] == m ? X : nx;
            idx = cc < idx ? cc : idx;
        }
        if (idx < nx) {
            int64_t pi = (int64_t)Y * Wt + x0 + idx;
            if (m > *bv || pi < *bi) {
                *bv = m;
                *bi = pi;
            }
        }
    }
}

/* Pixels of the cells whose bound reaches v (an integer sum: vectorized).
 * O(h w). */
static double GM_FN(gm_tr_left)(const GM_FN(gm_tr_ws) *w, const double *bnd, double v)
{
    const int64_t *area = w->area;
    int64_t left = 0;
    size_t i;
    for (i = 0; i < w->hw; i++) left += bnd[i] >= v ? area[i] : 0;
    return (double)left;
}

/* 1 if some of bnd[i..i+16) (within n) is > v (strict) or, with ge, >= v.
 * O(16), vectorized. */
static inline int GM_FN(gm_tr_any16)(const double *bnd, size_t i, size_t n, double v, int ge)
{
    int any = 0;
    size_t j, e = i + 16 < n ? i + 16 : n;
    if (ge)
        for (j = i; j < e; j++) any |= bnd[j] >= v;
    else
        for (j = i; j < e; j++) any |= bnd[j] > v;
    return any;
}

/* The best pixel of one keypoint (grid dots g): bound every cell, evaluate
 * the cells of the GM_TR_TOP largest bounds in decreasing order (ties:
 * raster order), then every other cell whose bound reaches the best value
 * so far, in raster order.  Pixels are compared by value and then raster
 * index, so the order of evaluation does not matter.  Returns the raster
 * index of the first pixel of maximal value, or -1 when the bounds do not
 * separate this keypoint's cells (features whose neighbours are nearly
 * orthogonal, constant features): the cells evaluated first and those whose
 * bound still reaches the best value after them hold more than a quarter of
 * the image's pixels -- the full scan, which shares 1/d between keypoints,
 * is then cheaper.  The
 * choice depends on the values only, never on the thread count.  bnd:
 * ht*wt entries.  O(h w + pixels of the evaluated cells). */
#define GM_TR_TOP 8
static int64_t GM_FN(gm_tr_keypoint)(const GM_FN(gm_tr_ws) *w, const GM_T *g, size_t ht,
                                      size_t wt, int64_t Wt, int64_t Ht, GM_T *buf,
                                      double *bnd)
{
    size_t r, c, i, j, nt = 0, top[GM_TR_TOP];
    double left, done = 0.0, npix = (double)Wt * (double)Ht;
    GM_T bv = -(GM_T)INFINITY;
    int64_t bi = INT64_MAX;
    if (w->full_scan) return -1;
    for (r = 0; r < ht; r++) GM_FN(gm_tr_bound_row)(w, g, r, ht, wt, bnd + r * wt);
    /* the GM_TR_TOP largest bounds, decreasing, ties in raster order; once
     * GM_TR_TOP are held, blocks of 16 with none above the smallest held
     * are skipped at once (the same cells as one at a time) */
    for (c = 0; c < w->hw; c++) {
        double b = bnd[c];
        if (nt == GM_TR_TOP && (c & 15) == 0 &&
            !GM_FN(gm_tr_any16)(bnd, c, w->hw, bnd[top[nt - 1]], 0)) {
            c += 15;
            continue;
        }
        if (b == -INFINITY || (nt == GM_TR_TOP && b <= bnd[top[nt - 1]])) continue;
        for (j = nt < GM_TR_TOP ? nt++ : GM_TR_TOP - 1; j > 0 && bnd[top[j - 1]] < b; j--)
            top[j] = top[j - 1];
        top[j] = c;
    }
    for (i = 0; i < nt && bnd[top[i]] >= (double)bv; i++) {
        size_t cr = top[i] / wt, cc = top[i] % wt;
        GM_FN(gm_tr_cell_eval)(w, g, cr, cc, wt, Wt, buf, &bv, &bi);
        done += (double)(w->ylo[cr + 1] - w->ylo[cr]) * (double)(w->xlo[cc + 1] - w->xlo[cc]);
        bnd[top[i]] = -INFINITY;
        if (i == 0 && GM_FN(gm_tr_left)(w, bnd, (double)bv) > 0.5 * npix) return -1;
    }
    for (; i < nt; i++) bnd[top[i]] = -INFINITY;        /* below the best value */
    left = GM_FN(gm_tr_left)(w, bnd, (double)bv);
    if (done + left > 0.25 * npix) return -1;
    /* every other cell whose bound reaches the best value, in raster order
     * (blocks of 16 below it skipped at once) */
    for (c = 0; c < w->hw; c += 16) {
        size_t e = c + 16 < w->hw ? c + 16 : w->hw;
        if (!GM_FN(gm_tr_any16)(bnd, c, w->hw, (double)bv, 1)) continue;
        for (i = c; i < e; i++)
            if (bnd[i] >= (double)bv)
                GM_FN(gm_tr_cell_eval)(w, g, i / wt, i % wt, wt, Wt, buf, &bv, &bi);
    }
    return bi;
}

/* Full scan, for the nd keypoints of w->dlist: the row-interpolated
 * numerators P[j][r][X] of grid row r.  O(W nd). */
static void GM_FN(gm_tr_prow)(GM_FN(gm_tr_ws) *w, size_t r, size_t ht, size_t wt,
                               size_t nd, int64_t Wt)
{
    size_t j;
    int64_t X;
    for (j = 0; j < nd; j++) {
        const GM_T *g = w->g + (size_t)w->dlist[j] * w->hw + r * wt;
        GM_T *p = w->p + (j * ht + r) * w->wp;
        for (X = 0; X < Wt; X++) p[X] = w->b0[X] * g[w->c0[X]] + w->b1[X] * g[w->c1[X]];
    }
}

/* Full scan of one target pixel row Y for the nd keypoints of w->dlist, with
 * the arithmetic of gm_tr_cell_eval (1/d computed once per pixel and shared).
 * Values go to a row buffer; its maximum and, when that beats the calling
 * thread's best so far (bv/bx/by, indexed like dlist), the first X
 * attaining it.  O(W (1 + nd)). */
static void GM_FN(gm_tr_scan_row)(const GM_FN(gm_tr_ws) *w, long Y, size_t ht,
                                   size_t nd, int nW, GM_T *inv, GM_T *val, GM_T *bv,
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
    for (kk = 0; kk < nd; kk++) {
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

/* One pair, in one parallel region: per-grid-row tables (threaded over
 * target grid rows), the cells' norm bounds (over grid rows), the branch
 * and bound of each keypoint (over keypoints), then the full scan of the
 * keypoints whose bounds do not prune (threaded over target pixel rows:
 * each thread scans one contiguous block of rows in order and the blocks
 * are merged in thread order with a strict comparison).  Either way a
 * keypoint gets the first pixel in row-major order of maximal value, so
 * results do not depend on the thread count.  Writes (x, y) per keypoint to
 * out.  Returns GM_OK, GM_ERR_NUMERIC or GM_ERR_NONFINITE_ARG(1).
 * O(h w D (5 + K) + h W + K (h w + evaluated pixels)), at most
 * O(h w D (5 + K) + h W (2 + K) + H W (1 + K)) when nothing prunes.  The
 * unit source descriptors of the K keypoints are in w->q. */
static int GM_FN(gm_tr_pair_q)(GM_FN(gm_tr_ws) *w, const GM_T *tf, size_t ht, size_t wt,
                                size_t dim, size_t nkps, int64_t Wt, int64_t Ht, GM_T *out)
{
    const int nthr = w->nthr;
    size_t k, r, nd = 0;
    int par, t, worst = 0;
    for (k = 0; k < (size_t)nthr * nkps; k++) {
        w->bestv[k] = -(GM_T)INFINITY;
        w->bestx[k] = w->besty[k] = -1;
    }
    /* float32 with the core's AVX-512 GEMM: every grid dot at once,
     * g = q t' (nkps x dim @ dim x ht*wt), before the row tables.  Each value
     * is that kernel's sum over k (blocks fixed by dim alone), so it depends
     * neither on the thread count nor on nkps (how keypoints are grouped);
     * other types and GEMM modes keep gm_tr_dot8's 16-lane sums.
     * gm_sgemm_avx512_abt computes g' = t q' reading the map's rows in place
     * (the packed GEMM would transpose the whole map on every call), with
     * the packed GEMM's operations: the same bits (GM_TRANSFER_PACKED_GEMM
     * takes the packed GEMM, for tests and benchmarks). */
    w->g_ready = 0;
#if GM_IS_F32
    if (nkps > 0 && gm_sgemm_uses_avx512()) {
        int rc = w->packed_gemm
                     ? gm_sgemm_avx512(0, 1, nkps, ht * wt, dim, 1.0f, w->q, dim, tf, dim, 0.0f,
                                       w->g, w->hw)
                     : gm_sgemm_avx512_abt(nkps, ht * wt, dim, 1.0f, w->q, dim, tf, dim, w->g,
                                           w->hw);
        if (rc == GM_ERR_NOMEM) return rc;
        w->g_ready = rc == GM_OK;
    }
#endif
    /* tiny problems run on one thread: a parallel region costs more */
    par = gm_threads_for(GM_WORK_FMA * (double)ht * (double)wt * (double)dim *
                         (double)(5 + nkps)) > 1;
#pragma omp parallel num_threads(par ? nthr : 1)
    {
        int tid = gm_thread_id(), bad = 0;
        GM_T *buf = w->tbuf + (size_t)tid * 3 * w->wp;
        double *bnd = w->bnd + (size_t)tid * w->hw;
        size_t j;
        long i;
#pragma omp for schedule(static)
        for (i = 0; i < (long)ht; i++)
            w->rowst[i] = GM_FN(gm_tr_row)(w, tf, (size_t)i, ht, wt, dim, nkps, Wt);
        /* implicit barrier: every thread sees every row's status */
        for (j = 0; j < ht; j++) bad = w->rowst[j] > bad ? w->rowst[j] : bad;
        if (!bad) {
#pragma omp for schedule(static)
            for (i = 0; i < (long)ht; i++) GM_FN(gm_tr_cell_row)(w, (size_t)i, ht, wt, dim);
#pragma omp for schedule(static)
            for (i = 0; i < (long)nkps; i++) {
                int64_t bi = GM_FN(gm_tr_keypoint)(w, w->g + (size_t)i * w->hw, ht, wt, Wt,
                                                    Ht, buf, bnd);
                w->dense[i] = bi < 0;
                if (bi >= 0) {
                    out[2 * i] = (GM_T)(bi % Wt);
                    out[2 * i + 1] = (GM_T)(bi / Wt);
                }
            }
        }
    }
    for (r = 0; r < ht; r++) worst = w->rowst[r] > worst ? w->rowst[r] : worst;
    for (k = 0; !worst && k < nkps; k++)
        if (w->dense[k]) w->dlist[nd++] = (int)k;
    if (nd > 0) {
        /* the full scan, in a second region */
        if (!w->p && !(w->p = gm_tr_alloc(w->plen * sizeof(GM_T)))) return GM_ERR_NOMEM;
        par = gm_threads_for(GM_WORK_FMA * 4.0 * (double)Ht * (double)Wt * (double)(1 + nd)) > 1;
#pragma omp parallel num_threads(par ? nthr : 1)
        {
            int tid = gm_thread_id();
            GM_T *buf = w->tbuf + (size_t)tid * 3 * w->wp;
            long i;
#pragma omp for schedule(static)
            for (i = 0; i < (long)ht; i++) GM_FN(gm_tr_prow)(w, (size_t)i, ht, wt, nd, Wt);
#pragma omp for schedule(static)
            for (i = 0; i < (long)Ht; i++)
                GM_FN(gm_tr_scan_row)(w, i, ht, nd, (int)Wt, buf, buf + w->wp,
                                      w->bestv + (size_t)tid * nkps,
                                      w->bestx + (size_t)tid * nkps,
                                      w->besty + (size_t)tid * nkps);
        }
    }
    if (worst == 1)
        return GM_FN(gm_vec_all_finite)(tf, ht * wt * dim) ? GM_ERR_NUMERIC
                                                           : GM_ERR_NONFINITE_ARG(1);
    if (worst) return GM_ERR_NUMERIC;
    for (k = 0; k < nd; k++) {
        GM_T best = -(GM_T)INFINITY;
        int64_t bx = 0, by = 0;
        size_t kk = (size_t)w->dlist[k];
        for (t = 0; t < nthr; t++) {
            size_t j = (size_t)t * nkps + k;
            if (w->besty[j] >= 0 && w->bestv[j] > best) {
                best = w->bestv[j];
                bx = w->bestx[j];
                by = w->besty[j];
            }
        }
        out[2 * kk] = (GM_T)bx;
        out[2 * kk + 1] = (GM_T)by;
    }
    return GM_OK;
}

/* One pair: the source descriptors of its keypoints, then gm_tr_pair_q. */
static int GM_FN(gm_tr_pair)(GM_FN(gm_tr_ws) *w, const GM_T *sf, const GM_T *tf,
                              const GM_T *kps, size_t hs, size_t ws, size_t ht, size_t wt,
                              size_t dim, size_t nkps, int64_t Ws, int64_t Hs, int64_t Wt,
                              int64_t Ht, GM_T *out)
{
    size_t k;
    for (k = 0; k < nkps; k++)
        GM_FN(gm_tr_source_desc)(sf, hs, ws, dim, Ws, Hs, kps[2 * k], kps[2 * k + 1],
                                  w->q + k * dim);
    return GM_FN(gm_tr_pair_q)(w, tf, ht, wt, dim, nkps, Wt, Ht, out);
}

/* Taps of the n_out pixels of one axis from n_in grid cells, and the first
 * pixel lo[i] of each grid index i (lo[n_in] = n_out): taps i0 are
 * non-decreasing in the pixel.  O(n_out + n_in). */
static void GM_FN(gm_tr_axis_taps)(int64_t n_out, int64_t n_in, int *i0s, int *i1s,
                                   GM_T *w0, GM_T *w1, int *lo)
{
    int64_t i, i0, i1, j = 0;
    double f;
    for (i = 0; i < n_out; i++) {
        gm_transfer_linear_taps(i, n_in, n_out, &i0, &i1, &f);
        i0s[i] = (int)i0;
        i1s[i] = (int)i1;
        w0[i] = (GM_T)(1.0 - f);
        w1[i] = (GM_T)f;
        while (j <= i0) lo[j++] = (int)i;
    }
    while (j <= n_in) lo[j++] = (int)n_out;
}

/* Taps of every target pixel column and row.  O(W + H + w + h). */
static void GM_FN(gm_tr_taps)(GM_FN(gm_tr_ws) *w, size_t ht, size_t wt, int64_t Wt,
                              int64_t Ht)
{
    size_t r, c;
    GM_FN(gm_tr_axis_taps)(Wt, (int64_t)wt, w->c0, w->c1, w->b0, w->b1, w->xlo);
    GM_FN(gm_tr_axis_taps)(Ht, (int64_t)ht, w->r0, w->r1, w->a0, w->a1, w->ylo);
    for (r = 0; r < ht; r++)
        for (c = 0; c < wt; c++)
            w->area[r * wt + c] = (int64_t)(w->ylo[r + 1] - w->ylo[r]) *
                                  (int64_t)(w->xlo[c + 1] - w->xlo[c]);
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
                                  size_t nkps, const GM_T *out, int flags)
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
    if (!(flags & GM_TRANSFER_SRC_FINITE) &&
        !GM_FN(gm_vec_all_finite)(src_feat, batch * hs * ws * dim))
        return GM_ERR_NONFINITE_ARG(0);
    return GM_OK;
}

int GM_FN(gm_transfer_upsample_argmax)(const GM_T *src_feat, const GM_T *trg_feat,
                                        const GM_T *src_kps, const int64_t *src_size,
                                        const int64_t *trg_size, size_t batch, size_t hs,
                                        size_t ws, size_t ht, size_t wt, size_t dim,
                                        size_t nkps, GM_T *out)
{
    return GM_FN(gm_transfer_upsample_argmax_ex)(src_feat, trg_feat, src_kps, src_size,
                                                 trg_size, batch, hs, ws, ht, wt, dim, nkps,
                                                 0, out);
}

int GM_FN(gm_transfer_upsample_argmax_ex)(const GM_T *src_feat, const GM_T *trg_feat,
                                           const GM_T *src_kps, const int64_t *src_size,
                                           const int64_t *trg_size, size_t batch, size_t hs,
                                           size_t ws, size_t ht, size_t wt, size_t dim,
                                           size_t nkps, int flags, GM_T *out)
{
    GM_FN(gm_tr_ws) w;
    size_t b, maxw = 1, maxh = 1;
    int status = GM_FN(gm_tr_validate)(src_feat, trg_feat, src_kps, src_size, trg_size,
                                        batch, hs, ws, ht, wt, dim, nkps, out, flags);
    if (status != GM_OK || batch == 0 || nkps == 0) return status;
    for (b = 0; b < batch; b++) {
        if ((size_t)trg_size[2 * b] > maxw) maxw = (size_t)trg_size[2 * b];
        if ((size_t)trg_size[2 * b + 1] > maxh) maxh = (size_t)trg_size[2 * b + 1];
    }
    status = GM_FN(gm_tr_ws_alloc)(&w, ht, wt, dim, nkps, maxw, maxh);
    if (status != GM_OK) return status;
    w.full_scan = (flags & GM_TRANSFER_FULL_SCAN) != 0;
    w.packed_gemm = (flags & GM_TRANSFER_PACKED_GEMM) != 0;
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

/* The group transfer (gm_transfer_upsample_argmax_group in geomatch.h) on
 * source maps of GM_T (src_half = 0) or, float32 only, of IEEE half
 * precision (src_half = 1: each keypoint's <= 4 source vectors are converted
 * exactly before the same arithmetic, so results are bit for bit those of
 * the converted maps).  trg_feat is GM_T.  Arguments validated except the
 * finiteness of half-precision sources (the caller's). */
static int GM_FN(gm_tr_group)(const void *const *src_feats, int src_half,
                              const GM_T *const *src_kps, const size_t *nkps,
                              const int64_t *src_size, size_t npairs, size_t hs, size_t ws,
                              const GM_T *trg_feat, const uint16_t *trg_half,
                              const int64_t *trg_size, size_t ht,
                              size_t wt, size_t dim, int flags, GM_T *const *outs)
{
    GM_FN(gm_tr_ws) w;
    size_t p, k, total = 0;
    GM_T *out = NULL, *conv = NULL;
    int status;
    for (p = 0; p < npairs; p++) total += nkps[p];
    if (total == 0) return GM_OK;
    if (trg_size[0] < 1 || trg_size[0] > GM_MAX_IMAGE_SIDE || trg_size[1] < 1 ||
        trg_size[1] > GM_MAX_IMAGE_SIDE)
        return GM_ERR_RANGE_ARG(4);
    status = GM_FN(gm_tr_ws_alloc)(&w, ht, wt, dim, total, (size_t)trg_size[0],
                                   (size_t)trg_size[1]);
    if (status != GM_OK) return status;
    w.full_scan = (flags & GM_TRANSFER_FULL_SCAN) != 0;
    w.packed_gemm = (flags & GM_TRANSFER_PACKED_GEMM) != 0;
    out = gm_tr_alloc(total * 2 * sizeof(GM_T));
    if (src_half) conv = gm_tr_alloc(4 * dim * sizeof(GM_T));
    if (!out || (src_half && !conv)) {
        free(out);
        GM_FN(gm_tr_ws_free)(&w);
        return GM_ERR_NOMEM;
    }
    for (p = 0, total = 0; p < npairs; p++) {
        for (k = 0; k < nkps[p]; k++, total++) {
            GM_T x = src_kps[p][2 * k], y = src_kps[p][2 * k + 1];
            GM_T *q = w.q + total * dim;
            if (!src_half) {
                GM_FN(gm_tr_source_desc)((const GM_T *)src_feats[p], hs, ws, dim,
                                          src_size[2 * p], src_size[2 * p + 1], x, y, q);
            } else {
#if GM_IS_F32
                size_t idx[4], i;
                GM_T wts[4];
                const GM_T *s[4];
                GM_FN(gm_tr_source_taps)(hs, ws, src_size[2 * p], src_size[2 * p + 1], x, y,
                                          idx, wts);
                for (i = 0; i < 4; i++) {
                    (void)gm_f16_to_f32((const uint16_t *)src_feats[p] + idx[i] * dim,
                                        conv + i * dim, dim);
                    s[i] = conv + i * dim;
                }
                GM_FN(gm_tr_source_combine)(s, wts, dim, q);
#endif
            }
        }
    }
#if GM_IS_F32
    if (trg_half) {
        /* trg_feat (the caller's buffer) := the float16 target, one grid row
         * ahead of the Gram tables, which then read rows just written
         * (cache-hot) instead of the whole map again */
        GM_T *tf = (GM_T *)trg_feat;
        size_t r, row = wt * dim;
        int bad = gm_f16_to_f32(trg_half, tf, row) != GM_OK;
        for (r = 0; r < ht; r++) {
            if (r + 1 < ht)
                bad |= gm_f16_to_f32(trg_half + (r + 1) * row, tf + (r + 1) * row, row) != GM_OK;
            if (r + 2 < ht) {   /* the row after: fetched from memory during this row's tables */
                const char *nx = (const char *)(trg_half + (r + 2) * row);
                size_t b;
                for (b = 0; b < row * sizeof(uint16_t); b += 64) __builtin_prefetch(nx + b);
            }
            GM_FN(gm_tr_gram_row)(&w, tf, r, ht, wt, dim);
        }
        if (bad) {
            free(out);
            free(conv);
            GM_FN(gm_tr_ws_free)(&w);
            return GM_ERR_NONFINITE_ARG(1);
        }
        w.gram_ready = 1;
    }
#else
    (void)trg_half;
#endif
    GM_FN(gm_tr_taps)(&w, ht, wt, trg_size[0], trg_size[1]);
    status = GM_FN(gm_tr_pair_q)(&w, trg_feat, ht, wt, dim, total, trg_size[0], trg_size[1],
                                 out);
    if (status == GM_OK) {
        for (p = 0, total = 0; p < npairs; p++) {
            memcpy(outs[p], out + 2 * total, nkps[p] * 2 * sizeof(GM_T));
            total += nkps[p];
        }
    }
    free(out);
    free(conv);
    GM_FN(gm_tr_ws_free)(&w);
    if (status == GM_ERR_NUMERIC)
        status = gm_fail(GM_ERR_NUMERIC, "dot products of the feature vectors overflow %s; "
                         "rescale src_feat/trg_feat", sizeof(GM_T) == 4 ? "float32" : "float64");
    return status;
}

int GM_FN(gm_transfer_upsample_argmax_group)(const GM_T *const *src_feats,
                                              const GM_T *const *src_kps, const size_t *nkps,
                                              const int64_t *src_size, size_t npairs,
                                              size_t hs, size_t ws, const GM_T *trg_feat,
                                              const int64_t *trg_size, size_t ht, size_t wt,
                                              size_t dim, int flags, GM_T *const *outs)
{
    size_t p, total = 0;
    int status;
    if (npairs > 0 && (!src_feats || !src_kps || !nkps || !src_size || !outs))
        return GM_ERR_INVALID;
    if (!trg_size) return GM_ERR_INVALID;
    for (p = 0; p < npairs; p++) {
        status = GM_FN(gm_tr_validate)(src_feats[p], trg_feat, src_kps[p], src_size + 2 * p,
                                        trg_size, 1, hs, ws, ht, wt, dim, nkps[p], outs[p],
                                        flags);
        if (status != GM_OK) {
            /* name the pair: the details so far are about "pair 0" of one call */
            if (status == GM_ERR_NONFINITE_ARG(0))
                return gm_fail(status, "non-finite value in the source map of pair %zu", p);
            return status;
        }
        if (nkps[p] > SIZE_MAX / 2 - total) return GM_ERR_INVALID;
        total += nkps[p];
    }
    return GM_FN(gm_tr_group)((const void *const *)src_feats, 0, src_kps, nkps, src_size,
                              npairs, hs, ws, trg_feat, NULL, trg_size, ht, wt, dim, flags,
                              outs);
}

#if GM_IS_F32
int gm_transfer_upsample_argmax_group_f16(const uint16_t *const *src_feats,
                                          const float *const *src_kps, const size_t *nkps,
                                          const int64_t *src_size, size_t npairs, size_t hs,
                                          size_t ws, const uint16_t *trg_feat,
                                          const int64_t *trg_size, size_t ht, size_t wt,
                                          size_t dim, int flags, float *work,
                                          float *const *outs)
{
    static const float dummy = 0.0f;   /* a non-NULL map for the shared validation */
    size_t p, total = 0, n;
    float *trg;
    int status;
    if (npairs > 0 && (!src_feats || !src_kps || !nkps || !src_size || !outs))
        return GM_ERR_INVALID;
    if (!trg_size) return GM_ERR_INVALID;
    if (hs > SIZE_MAX / (ws ? ws : 1) || ht > SIZE_MAX / (wt ? wt : 1) ||
        ht * wt > SIZE_MAX / sizeof(float) / (dim ? dim : 1))
        return GM_ERR_INVALID;
    for (p = 0; p < npairs; p++) {
        status = GM_FN(gm_tr_validate)(src_feats[p] ? &dummy : NULL, trg_feat ? &dummy : NULL,
                                        src_kps[p], src_size + 2 * p, trg_size, 1, hs, ws, ht,
                                        wt, dim, nkps[p], outs[p],
                                        flags | GM_TRANSFER_SRC_FINITE);
        if (status != GM_OK) return status;
        if (nkps[p] > 0 && !(flags & GM_TRANSFER_SRC_FINITE)) {
            int st = gm_f16_all_finite(src_feats[p], hs * ws * dim);
            if (st != GM_OK)
                return gm_fail(GM_ERR_NONFINITE_ARG(0),
                               "non-finite value in the source map of pair %zu", p);
        }
        if (nkps[p] > SIZE_MAX / 2 - total) return GM_ERR_INVALID;
        total += nkps[p];
    }
    if (total == 0) return GM_OK;
    /* the target once in float32 (exact), checked on the way */
    n = ht * wt * dim;
    if (!(trg = work) && !(trg = gm_tr_alloc(n * sizeof(float)))) return GM_ERR_NOMEM;
    status = gm_tr_group_f32((const void *const *)src_feats, 1, src_kps, nkps, src_size,
                             npairs, hs, ws, trg, trg_feat, trg_size, ht, wt, dim, flags, outs);
    if (trg != work) free(trg);
    return status;
}
#endif

/* gm_dustbin_tpl.h -- type-generic body of gm_dustbin.c, instantiated once
 * per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header.
 * DB_LMAX bounds lam * range(S~) / 2 for the kernel domain; DB_LOGMAX and
 * DB_LOGMIN are the exponent range gm_exp handles.
 *
 * Notation: n = N, m = M (score matrix), n1 = N+1, m1 = M+1 (augmented).
 * Log potentials la = lam*u (n1) and lb = lam*v (m1) are kept in double.
 * Kernel path state: a~_i = exp(la_i - sig_a), b~_j = exp(lb_j - sig_b) with
 * sig = max (so max a~ = max b~ = 1); row sums s_i = (K' b~)_i, column sums
 * t_j = (K'^T a~)_j; then la_i = phi (log mu_i - lam c - sig_b - log s_i).
 * Log path state: fu = lam u, gv = lam v in the working type, with the
 * log-sum-exps nlr = -LSE_row, nlc = -LSE_col kept for the backward.
 * The plan is log P_ij = lam S~_ij + alpha_i + beta_j (alpha = la, beta = lb). */

#define DB_LMAX (GM_IS_F32 ? 30.0 : 300.0)
#define DB_LOGMAX (GM_IS_F32 ? 88.0 : 708.0)
#define DB_LOGMIN (GM_IS_F32 ? -87.0 : -707.0)
#define DB_LANES 32
#define DB_FB 64
#define DB_CHUNK 32
#define DB_RG 8
#define DB_FC (GM_IS_F32 ? 32 : 16) /* two 64-byte vectors */

typedef struct {
    size_t n, m, n1, m1, mpad, nchunk;
    const GM_T *S;
    const GM_T *G;
    double lam, phi, bin, c, L;
    int iters, store, kernel, rebuild, wrt_log, nt, nu_pos, dsbad, pre_fused;
    GM_T lamT, lamcT, lambinT, kb;
    GM_T *K, *kbuf, *dS;
    size_t ldk;
    double *logmu, *lognu, *la, *lb, *lbp, *dn, *dm, *rs, *cs, *gbc, *gbr;
    double sig_a, sig_b, dbacc, pre_u;
    unsigned char *mulrow;
    GM_T *at, *srow, *tcol, *bmat, *brot, *bfin, *hu;
    GM_T *fu, *gv, *nlr, *nlc;
    GM_T *vn, *vm, *vm2, *part, *rowtmp, *abuf;
    double *tmn, *tmx, *tst;
    int *tbad;
    int err;
} GM_FN(db_ctx);

/* Record an error status from any thread (the last writer wins; all are
 * equivalent for the caller).  O(1). */
static inline void GM_FN(db_set_err)(GM_FN(db_ctx) *c, int st)
{
#pragma omp atomic write
    c->err = st;
    (void)st; /* GCC reports st as unused after an atomic write */
}

/* Potential update phi*(logm - lse); 0 when phi == 0 (marginals ignored),
 * -inf when the mass is zero.  O(1). */
static inline double GM_FN(db_pot)(double phi, double logm, double lse)
{
    if (phi == 0.0) return 0.0;
    return phi * (logm - lse);
}

/* Slot of iteration t (1-based) in a history array of stride len. */
static inline size_t GM_FN(db_slot)(const GM_FN(db_ctx) *c, int t)
{
    return c->store ? (size_t)(t - 1) : (size_t)((t - 1) & 1);
}

/* b~^t (t = 0..iters) in the kernel path: rows T.. of bmat when storing. */
static inline GM_T *GM_FN(db_bptr)(GM_FN(db_ctx) *c, int t)
{
    if (!c->store) return c->brot + (size_t)(t & 1) * c->mpad;
    if (t == c->iters) return c->bfin;
    return c->bmat + (size_t)(c->iters + t) * c->mpad;
}

/* lam v^t (t = 0..iters) in the log path. */
static inline GM_T *GM_FN(db_gvptr)(GM_FN(db_ctx) *c, int t)
{
    size_t k = c->store ? (size_t)t : (size_t)(t & 1);
    return c->gv + k * c->mpad;
}

/* Four dot products of rows x, x+ldx, x+2ldx, x+3ldx with y, sharing the
 * loads of y; each row's arithmetic is exactly that of db_dot.  O(4m). */
static inline void GM_FN(db_dot4)(const GM_T *x, size_t ldx, const GM_T *y, size_t m,
                                   GM_T *out)
{
    GM_T a0[DB_LANES], a1[DB_LANES], a2[DB_LANES], a3[DB_LANES];
    const GM_T *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    size_t j = 0;
    for (int l = 0; l < DB_LANES; l++) a0[l] = a1[l] = a2[l] = a3[l] = 0;
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++) {
            GM_T yv = y[j + l];
            a0[l] += x0[j + l] * yv;
            a1[l] += x1[j + l] * yv;
            a2[l] += x2[j + l] * yv;
            a3[l] += x3[j + l] * yv;
        }
    for (int l = 0; j + (size_t)l < m; l++) {
        GM_T yv = y[j + l];
        a0[l] += x0[j + l] * yv;
        a1[l] += x1[j + l] * yv;
        a2[l] += x2[j + l] * yv;
        a3[l] += x3[j + l] * yv;
    }
    out[0] = GM_FN(gm_vec_fold)(a0, DB_LANES);
    out[1] = GM_FN(gm_vec_fold)(a1, DB_LANES);
    out[2] = GM_FN(gm_vec_fold)(a2, DB_LANES);
    out[3] = GM_FN(gm_vec_fold)(a3, DB_LANES);
}

/* w[q] = K row q . y for the r <= 4 rows at k0 (row stride ldk), each with
 * the arithmetic of gm_vec_dot32 (fused loads when r == 4).  O(r m). */
static inline void GM_FN(db_dots)(const GM_T *k0, size_t ldk, const GM_T *y, size_t m,
                                  size_t r, GM_T *w)
{
    if (r == 4) {
        GM_FN(db_dot4)(k0, ldk, y, m, w);
    } else {
        for (size_t q = 0; q < r; q++) w[q] = GM_FN(gm_vec_dot32)(k0 + q * ldk, y, m);
    }
}

/* y += sum_q h[q] K row q over the r <= 4 rows at k0, added row by row in
 * order for every j (one pass when r == 4).  O(r m). */
static inline void GM_FN(db_axpy_rows)(GM_T *y, const GM_T *k0, size_t ldk, const GM_T *h,
                                       size_t r, size_t m)
{
    if (r == 4) {
        const GM_T *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
        GM_T h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3];
        for (size_t j = 0; j < m; j++) {
            GM_T v = y[j];
            v += h0 * k0[j];
            v += h1 * k1[j];
            v += h2 * k2[j];
            v += h3 * k3[j];
            y[j] = v;
        }
    } else {
        for (size_t q = 0; q < r; q++) {
            const GM_T *kq = k0 + q * ldk;
            GM_T hq = h[q];
            for (size_t j = 0; j < m; j++) y[j] += hq * kq[j];
        }
    }
}

/* Inside a parallel region: out[i] = (K' y)_i + kb * y[m] for rows i < n, in
 * groups of four rows (the grouping depends on n only, not on the thread
 * count).  O(NM). */
static void GM_FN(db_rowmv)(const GM_T *K, size_t ldk, size_t n, size_t m, const GM_T *y,
                             GM_T kb, GM_T *out)
{
    size_t ng = n / 4;
#pragma omp for schedule(static) nowait
    for (size_t g = 0; g < ng; g++) {
        GM_FN(db_dot4)(K + 4 * g * ldk, ldk, y, m, out + 4 * g);
        for (int r = 0; r < 4; r++) out[4 * g + r] += kb * y[m];
    }
#pragma omp for schedule(static)
    for (size_t i = 4 * ng; i < n; i++) out[i] = GM_FN(gm_vec_dot32)(K + i * ldk, y, m) + kb * y[m];
}

/* out[j] = sum_{i<n} w_i K_ij (rows in order i = 0..n-1) for this thread's
 * columns [j0, j1); rows are taken four at a time with the same order of
 * additions.  O(n (j1-j0)). */
static void GM_FN(db_colmv)(const GM_T *K, size_t ldk, size_t n, const GM_T *w,
                             GM_T *out, size_t j0, size_t j1)
{
    for (size_t j = j0; j < j1; j++) out[j] = 0;
    for (size_t i = 0; i < n; i += 4)
        GM_FN(db_axpy_rows)(out + j0, K + i * ldk + j0, ldk, w + i, n - i < 4 ? n - i : 4,
                            j1 - j0);
}

/* Validate sizes and scalars, check S / mu / nu (finite, masses >= 0, not
 * all zero) and fill log mu, log nu.  S is scanned later in parallel.
 * O(N + M). */
static int GM_FN(db_check_marg)(const GM_T *x, size_t len, int arg, double *logx)
{
    double total = 0.0;
    for (size_t i = 0; i < len; i++) {
        double v = (double)x[i];
        if (!isfinite(v)) return GM_ERR_NONFINITE_ARG(arg);
        if (v < 0.0) return GM_ERR_NEGATIVE_ARG(arg);
        total += v;
        logx[i] = v > 0.0 ? log(v) : -INFINITY;
    }
    if (!(total > 0.0)) return GM_ERR_ZEROMASS_ARG(arg);
    return GM_OK;
}

/* Allocate the context's buffers (history kept when c->store).  Returns
 * GM_ERR_NOMEM on failure (everything freed by db_free). */
static int GM_FN(db_alloc)(GM_FN(db_ctx) *c)
{
    size_t n1 = c->n1, m1 = c->m1, mp = c->mpad, T = (size_t)c->iters;
    size_t H = c->store ? T : 2, nt = (size_t)c->nt;
    /* the VJP keeps O(n_iter (N + M)) history: refuse more than 4 GiB up
     * front (overcommitting systems would otherwise fail late) */
    if (c->store && (double)T * (double)(4 * n1 + 4 * mp) * sizeof(GM_T) > 4294967296.0)
        return GM_ERR_NOMEM;
    c->logmu = malloc(n1 * sizeof(double));
    c->lognu = malloc(m1 * sizeof(double));
    c->la = malloc(n1 * sizeof(double));
    c->lb = calloc(m1, sizeof(double));
    c->lbp = calloc(m1, sizeof(double));
    c->dn = malloc(n1 * sizeof(double));
    c->dm = malloc(m1 * sizeof(double));
    c->rs = malloc(n1 * sizeof(double));
    c->cs = malloc(m1 * sizeof(double));
    c->gbc = malloc(n1 * sizeof(double));
    c->gbr = malloc(m1 * sizeof(double));
    c->mulrow = malloc(n1);
    c->at = db_amalloc(H * n1 * sizeof(GM_T), 0);
    c->srow = db_amalloc(H * n1 * sizeof(GM_T), 0);
    c->tcol = db_amalloc(H * m1 * sizeof(GM_T), 0);
    c->bmat = db_amalloc((c->store ? 2 * T * mp : 1) * sizeof(GM_T), 1);
    c->brot = db_amalloc((2 * mp) * sizeof(GM_T), 1);
    c->bfin = db_amalloc((mp) * sizeof(GM_T), 1);
    c->hu = db_amalloc((c->store ? T * n1 : 1) * sizeof(GM_T), 0);
    c->fu = db_amalloc(H * n1 * sizeof(GM_T), 0);
    c->gv = db_amalloc(((c->store ? T + 1 : 2) * mp) * sizeof(GM_T), 1);
    c->nlr = db_amalloc(H * n1 * sizeof(GM_T), 0);
    c->nlc = db_amalloc(H * m1 * sizeof(GM_T), 0);
    c->vn = db_amalloc(n1 * sizeof(GM_T), 0);
    c->vm = db_amalloc((mp) * sizeof(GM_T), 1);
    c->vm2 = db_amalloc((mp) * sizeof(GM_T), 1);
    c->part = db_amalloc(c->nchunk * mp * sizeof(GM_T) + sizeof(GM_T), 0);
    c->rowtmp = db_amalloc(4 * nt * mp * sizeof(GM_T), 0);
    c->abuf = db_amalloc(2 * DB_RG * nt * T * sizeof(GM_T), 0);
    c->tmn = malloc(nt * sizeof(double));
    c->tmx = malloc(nt * sizeof(double));
    c->tst = db_amalloc(DB_TST * nt * sizeof(double), 0);
    c->tbad = malloc(nt * sizeof(int));
    if (!c->logmu || !c->lognu || !c->la || !c->lb || !c->lbp || !c->dn || !c->dm || !c->rs ||
        !c->cs || !c->gbc || !c->gbr || !c->mulrow || !c->at || !c->srow || !c->tcol ||
        !c->bmat || !c->brot || !c->bfin || !c->hu || !c->fu || !c->gv || !c->nlr ||
        !c->nlc || !c->vn || !c->vm || !c->vm2 || !c->part || !c->rowtmp || !c->abuf || !c->tmn ||
        !c->tmx || !c->tbad || !c->tst)
        return GM_ERR_NOMEM;
    return GM_OK;
}

/* Free every buffer of the context.  O(1). */
static void GM_FN(db_free)(GM_FN(db_ctx) *c)
{
    void *p[] = {c->logmu, c->lognu, c->la, c->lb, c->lbp, c->dn, c->dm, c->rs, c->cs, c->gbc,
                 c->gbr, c->mulrow, c->at, c->srow, c->tcol, c->bmat, c->brot, c->bfin,
                 c->hu, c->fu, c->gv, c->nlr, c->nlc, c->vn, c->vm, c->vm2, c->part,
                 c->rowtmp, c->abuf, c->tmn, c->tmx, c->tbad, c->kbuf,
                 c->tst};
    for (size_t k = 0; k < sizeof p / sizeof p[0]; k++) free(p[k]);
}

/* K' in its own buffer: rows of mpad entries (a multiple of 64), 64-byte
 * aligned, so that every vector load of a row is aligned (rows of M or M+1
 * entries inside the caller's array straddle cache lines: measured 15%
 * slower per sweep).  Not needed by the log method.  O(1). */
static int GM_FN(db_alloc_k)(GM_FN(db_ctx) *c, int method)
{
    void *p = NULL;
    if (method == GM_DUSTBIN_LOG) return GM_OK;
    if (!(p = db_amalloc(c->n * c->mpad * sizeof(GM_T), 0))) return GM_ERR_NOMEM;
    c->kbuf = p;
    c->K = p;
    c->ldk = c->mpad;
    return GM_OK;
}

/* Set up the context: scalar checks, marginal checks, allocation.  O(N+M). */
static int GM_FN(db_setup)(GM_FN(db_ctx) *c, const GM_T *S, const GM_T *mu,
                            const GM_T *nu, size_t n, size_t m, double bin, double reg,
                            double reg_m, int iters, int store)
{
    int st;
    memset(c, 0, sizeof *c);
    if (!S || !mu || !nu || n < 1 || m < 1 || iters < 1) return GM_ERR_INVALID;
    if (!(reg > 0.0) || !isfinite(reg) || !isfinite(bin) || !(reg_m >= 0.0))
        return GM_ERR_INVALID;
    c->n = n;
    c->m = m;
    c->n1 = n + 1;
    c->m1 = m + 1;
    c->mpad = (m + 1 + DB_FB - 1) / DB_FB * DB_FB;
    c->nchunk = (n + DB_CHUNK - 1) / DB_CHUNK;
    c->S = S;
    c->lam = 1.0 / reg;
    c->phi = isinf(reg_m) ? 1.0 : reg_m / (reg_m + reg);
    c->bin = bin;
    c->iters = iters;
    c->store = store;
    c->nt = db_threads(n * m);
    if ((st = GM_FN(db_alloc)(c)) != GM_OK) return st;
    if ((st = GM_FN(db_check_marg)(mu, c->n1, 1, c->logmu)) != GM_OK) return st;
    if ((st = GM_FN(db_check_marg)(nu, c->m1, 2, c->lognu)) != GM_OK) return st;
    c->nu_pos = 1;
    for (size_t j = 0; j < c->m1; j++)
        if (c->lognu[j] == -INFINITY) c->nu_pos = 0;
    return GM_OK;
}

/* Min / max of row s (length m) into *lo, *hi; returns 1 if all are finite.
 * Lane-wise, vectorized.  O(m). */
static int GM_FN(db_rowstats)(const GM_T *s, size_t m, GM_T *lo, GM_T *hi)
{
    GM_T zl[DB_LANES], lol[DB_LANES], hil[DB_LANES], z = 0, a = s[0], b = s[0];
    size_t j = 0;
    for (int l = 0; l < DB_LANES; l++) {
        zl[l] = 0;
        lol[l] = hil[l] = s[0];
    }
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++) {
            GM_T v = s[j + l];
            zl[l] += v * (GM_T)0;
            lol[l] = v < lol[l] ? v : lol[l];
            hil[l] = v > hil[l] ? v : hil[l];
        }
    for (; j < m; j++) {
        GM_T v = s[j];
        z += v * (GM_T)0;
        a = v < a ? v : a;
        b = v > b ? v : b;
    }
    for (int l = 0; l < DB_LANES; l++) {
        z += zl[l];
        a = lol[l] < a ? lol[l] : a;
        b = hil[l] > b ? hil[l] : b;
    }
    *lo = a;
    *hi = b;
    return z == 0;
}

/* Row i of K' = exp(lam S - lam c) into K, returning its sum plus kb (the
 * first row sum s^1_i, since b~^0 = 1).  O(M). */
static GM_T GM_FN(db_exp_row)(GM_FN(db_ctx) *c, size_t i, int in)
{
    const GM_T *si = c->S + i * c->m;
    GM_T *ki = c->K + i * c->ldk, lamT = c->lamT, lamcT = c->lamcT;
    size_t m = c->m, j = 0;
    /* the exponentials are compute-bound: fetch the next row of S meanwhile
     * (one cache line per block of 16 values) */
    const GM_T *nx = i + 1 < c->n ? si + m : si;
    if (in) {
        for (; j + 16 <= m; j += 16) {
            DB_PREFETCH(nx + j);
            for (size_t l = 0; l < 16; l++) ki[j + l] = GM_EXP_IN(lamT * si[j + l] - lamcT);
        }
        for (; j < m; j++) ki[j] = GM_EXP_IN(lamT * si[j] - lamcT);
    } else {
        for (; j + 16 <= m; j += 16) {
            DB_PREFETCH(nx + j);
            for (size_t l = 0; l < 16; l++) ki[j + l] = GM_EXP(lamT * si[j + l] - lamcT);
        }
        for (; j < m; j++) ki[j] = GM_EXP(lamT * si[j] - lamcT);
    }
    return GM_FN(gm_vec_sum32)(ki, m) + c->kb;
}

/* Whether every exponent lam S_ij - lam c of a row with finite values in
 * [lo, hi] lies well inside GM_EXP_IN's range (1 of margin for the float
 * rounding of the exponent), so that db_exp_row may skip the clamp.  O(1). */
static int GM_FN(db_exp_in)(const GM_FN(db_ctx) *c, GM_T lo, GM_T hi)
{
    double xl = (double)c->lamT * (double)lo - (double)c->lamcT;
    double xh = (double)c->lamT * (double)hi - (double)c->lamcT;
    return xl > DB_LOGMIN + 1.0 && xh < DB_LOGMAX - 1.0;
}

/* Set the working-type constants for centre cc and bound L.  O(1). */
static void GM_FN(db_set_centre)(GM_FN(db_ctx) *c, double cc, double L)
{
    c->c = cc;
    c->L = L;
    c->lamT = (GM_T)c->lam;
    c->lamcT = (GM_T)(c->lam * cc);
    c->lambinT = (GM_T)(c->lam * c->bin);
    c->kb = (GM_T)exp(c->lam * (c->bin - cc));
}

/* Slot k of thread tid's statistics (gm_dustbin.c, DB_ST_*).  O(1). */
static inline double *GM_FN(db_st)(const GM_FN(db_ctx) *c, int tid)
{
    return c->tst + (size_t)tid * DB_TST;
}

/* Combined statistic k over the team: max (or min with `lo`).  O(threads). */
static double GM_FN(db_st_all)(const GM_FN(db_ctx) *c, int k, int lo)
{
    double v = lo ? INFINITY : -INFINITY;
    for (int t = 0; t < db_nth(); t++) {
        double x = GM_FN(db_st)(c, t)[k];
        if (lo ? x < v : x > v) v = x;
    }
    return v;
}

/* a~_i = exp(la_i - sig) for one row from its row sum s (double work).
 * O(1). */
static inline GM_T GM_FN(db_arow)(GM_FN(db_ctx) *c, size_t i, GM_T s, double off, double sig)
{
    double sd = (double)s;
    double ls = sd >= DBL_MIN && sd <= DBL_MAX ? db_log_fast(sd) : log(sd);
    c->la[i] = GM_FN(db_pot)(c->phi, c->logmu[i], off + ls);
    return (GM_T)gm_exp_f64(c->la[i] - sig);
}

/* a~ for the r <= DB_RG rows at i from their row sums s (db_arow's
 * arithmetic, one row per lane, so that the double log and exp vectorize
 * across rows; libm's log for a sum outside the normal range).  O(r). */
static inline void GM_FN(db_arows)(GM_FN(db_ctx) *c, size_t i, const GM_T *s, size_t r,
                                   double off, double sig, GM_T *a)
{
    double sd[DB_RG], ls[DB_RG], lm[DB_RG], la[DB_RG], ex[DB_RG], phi = c->phi;
    for (size_t q = 0; q < DB_RG; q++) {
        sd[q] = q < r ? (double)s[q] : 1.0;
        lm[q] = q < r ? c->logmu[i + q] : 0.0;
    }
#pragma omp simd
    for (int q = 0; q < DB_RG; q++) ls[q] = db_log_fast(sd[q]);
    for (size_t q = 0; q < r; q++)
        if (!(sd[q] >= DBL_MIN && sd[q] <= DBL_MAX)) ls[q] = log(sd[q]);
    if (phi == 0.0) {
        for (int q = 0; q < DB_RG; q++) la[q] = 0.0;
    } else {
#pragma omp simd
        for (int q = 0; q < DB_RG; q++) la[q] = phi * (lm[q] - (off + ls[q]));
    }
#pragma omp simd
    for (int q = 0; q < DB_RG; q++) ex[q] = gm_exp_f64(la[q] - sig);
    for (size_t q = 0; q < r; q++) {
        c->la[i + q] = la[q];
        a[q] = (GM_T)ex[q];
    }
}

/* Provisional shift for iteration 1 fused into the exponential pass: with
 * b~^0 = 1 every row sum is s_i >= kb, so la^1_i <= U = max_i pot(log mu_i,
 * lam c + log kb) over rows of positive mass, and a~_i = exp(la^1_i - U) <= 1.
 * Single thread, O(N). */
static double GM_FN(db_pre_shift)(const GM_FN(db_ctx) *c)
{
    double u = -INFINITY, off = c->lam * c->c + log((double)c->kb);
    for (size_t i = 0; i < c->n1; i++) {
        if (c->logmu[i] == -INFINITY) continue;
        double v = GM_FN(db_pot)(c->phi, c->logmu[i], off);
        u = v > u ? v : u;
    }
    return u;
}

/* Parallel part before the iterations: scan S (finite, min, max) and choose
 * the path.  For method auto/kernel the scan is fused with building K' =
 * exp(lam (S - bin)), the first row sums s^1 and -- while each group of four
 * rows is cached -- the chunk partials of the first column sums K'^T a~^1
 * with a~^1 = exp(la^1 - U) (db_pre_shift), so that iteration 1 needs no
 * pass of its own; that shortcut is kept (c->pre_fused) when 2L + D <=
 * -log(min normal) - 30 with D = U - max la^1 (see db_kernel_forward), else
 * iteration 1 runs exactly.  The kernel domain is used when L = lam *
 * max|S~ - c| <= DB_LMAX with c = bin_score, else with c the centre of the
 * range (K' rebuilt, no shortcut), else the log domain.  O(NM). */
static void GM_FN(db_prepare)(GM_FN(db_ctx) *c, int method)
{
    int tid = db_tid(), bad = 0, built = method != GM_DUSTBIN_LOG;
    double mn = c->bin, mx = c->bin;
    size_t n = c->n, m = c->m, mp = c->mpad;
    GM_T *s1 = c->srow + GM_FN(db_slot)(c, 1) * c->n1;
    GM_T *a1 = c->at + GM_FN(db_slot)(c, 1) * c->n1;
#pragma omp single
    {
        GM_FN(db_set_centre)(c, c->bin, 0.0);
        if (built) c->pre_u = GM_FN(db_pre_shift)(c);
    }
    if (built) {
        double off = c->lam * c->c, u = c->pre_u;
        size_t k0, k1;
        db_chunk_range(c->nchunk, &k0, &k1);
        for (size_t ch = k0; ch < k1; ch++) {
            GM_T *tp = c->part + ch * mp;
            size_t i0 = ch * DB_CHUNK, i1 = i0 + DB_CHUNK < n ? i0 + DB_CHUNK : n;
            for (size_t j = 0; j < m; j++) tp[j] = 0;
            for (size_t i = i0; i < i1; i += 4) {
                size_t r = i1 - i < 4 ? i1 - i : 4;
                for (size_t q = 0; q < r; q++) {
                    GM_T lo, hi;
                    int ok = GM_FN(db_rowstats)(c->S + (i + q) * m, m, &lo, &hi);
                    if (!ok) bad = 1;
                    if ((double)lo < mn) mn = (double)lo;
                    if ((double)hi > mx) mx = (double)hi;
                    s1[i + q] = GM_FN(db_exp_row)(c, i + q, ok && GM_FN(db_exp_in)(c, lo, hi));
                }
                GM_FN(db_arows)(c, i, s1 + i, r, off, u, a1 + i);
                GM_FN(db_axpy_rows)(tp, c->K + i * c->ldk, c->ldk, a1 + i, r, m);
            }
        }
    } else {
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            GM_T lo, hi;
            if (!GM_FN(db_rowstats)(c->S + i * m, m, &lo, &hi)) bad = 1;
            if ((double)lo < mn) mn = (double)lo;
            if ((double)hi > mx) mx = (double)hi;
        }
    }
    c->tmn[tid] = mn;
    c->tmx[tid] = mx;
    c->tbad[tid] = bad;
#pragma omp barrier
#pragma omp single
    {
        for (int t = 0; t < db_nth(); t++) {
            if (c->tbad[t]) c->err = GM_ERR_NONFINITE_ARG(0);
            if (c->tmn[t] < mn) mn = c->tmn[t];
            if (c->tmx[t] > mx) mx = c->tmx[t];
        }
        double lb = c->lam * (mx - c->bin > c->bin - mn ? mx - c->bin : c->bin - mn);
        double lm = 0.5 * c->lam * (mx - mn);
        c->kernel = 0;
        c->rebuild = 0;
        c->pre_fused = 0;
        if (method != GM_DUSTBIN_LOG && lb <= DB_LMAX) {
            c->kernel = 1;
            c->L = lb;
        } else if (method != GM_DUSTBIN_LOG && lm <= DB_LMAX) {
            c->kernel = 1;
            c->rebuild = 1;
            GM_FN(db_set_centre)(c, 0.5 * (mn + mx), lm);
        }
        if (method == GM_DUSTBIN_KERNEL && !c->kernel && c->err == GM_OK)
            c->err = GM_ERR_NUMERIC;
        if (c->kernel) {
            GM_T *b0 = GM_FN(db_bptr)(c, 0);
            for (size_t j = 0; j < c->m1; j++) b0[j] = 1;
        }
        if (c->kernel && !c->rebuild && c->err == GM_OK) {
            /* the bin row of iteration 1, then whether the shortcut holds */
            double amax = -INFINITY, lmax = -INFINITY;
            s1[n] = c->kb * GM_FN(gm_vec_sum32)(GM_FN(db_bptr)(c, 0), c->m1);
            a1[n] = GM_FN(db_arow)(c, n, s1[n], c->lam * c->c, c->pre_u);
            for (size_t i = 0; i < c->n1; i++) {
                lmax = c->la[i] > lmax ? c->la[i] : lmax;
                if (c->logmu[i] != -INFINITY && c->la[i] > amax) amax = c->la[i];
            }
            if (isfinite(lmax) && 2.0 * c->L + (c->pre_u - lmax) <= -DB_LOGMIN - 30.0) {
                c->pre_fused = 1;
                c->sig_a = c->pre_u;
                for (int q = 0; q < db_nth(); q++)
                    GM_FN(db_st)(c, q)[DB_ST_LA(1)] = q == 0 ? amax : -INFINITY;
            }
        }
    }
    if (c->err == GM_OK && c->rebuild) {
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++)  /* S finite, every exponent within +-L <= DB_LMAX */
            s1[i] = GM_FN(db_exp_row)(c, i, c->L < DB_LOGMAX - 2.0);
    }
}

/* la_i = pot(log mu_i, lam c + shift + log s_i) for all n1 rows, then a~ =
 * exp(la - max la) into `a`.  Returns the max.  O(n1), vectorized. */
static double GM_FN(db_kupdate)(const GM_FN(db_ctx) *c, const GM_T *s, const double *logm,
                                 size_t len, double shift, double *l, double *tmp, GM_T *a)
{
    double off = c->lam * c->c + shift, mx = -INFINITY;
    for (size_t i = 0; i < len; i++) tmp[i] = (double)s[i];
    db_log_array(tmp, l, len);
    for (size_t i = 0; i < len; i++) l[i] = GM_FN(db_pot)(c->phi, logm[i], off + l[i]);
    for (size_t i = 0; i < len; i++) mx = l[i] > mx ? l[i] : mx;
    for (size_t i = 0; i < len; i++) a[i] = (GM_T)gm_exp_f64(l[i] - mx);
    return mx;
}

/* Column sums t_j = sum over chunks (in chunk order) of the partials, plus
 * `extra`.  Single thread, O(M N / 32), vectorized. */
static void GM_FN(db_reduce_parts)(const GM_FN(db_ctx) *c, GM_T extra, GM_T *out)
{
    for (size_t j = 0; j < c->m; j++) out[j] = 0;
    for (size_t ch = 0; ch < c->nchunk; ch++) {
        const GM_T *tp = c->part + ch * c->mpad;
        for (size_t j = 0; j < c->m; j++) out[j] += tp[j];
    }
    for (size_t j = 0; j < c->m; j++) out[j] += extra;
}

/* Provisional shift for the fused iteration t (every thread, O(threads)):
 * with Delta_j = lb^{t-1}_j - lb^{t-2}_j over columns of positive mass,
 * la^t_i <= la^{t-1}_i - phi min Delta and >= la^{t-1}_i - phi max Delta, so
 * sig = max la^{t-1} - phi min Delta keeps every a~ <= 1 and the largest
 * >= exp(-D), D = phi (max Delta - min Delta).  Returns 1 (and sets *sig)
 * when 2L + D leaves float room (see db_kernel_forward), else 0.  The
 * extremes come from the per-thread statistics of iteration t-1. */
static int GM_FN(db_fused_shift)(const GM_FN(db_ctx) *c, int t, double *sig)
{
    if (t < 2 || (t == 2 && !c->nu_pos)) return 0;
    double dmin = GM_FN(db_st_all)(c, DB_ST_DMIN, 1), dmax = GM_FN(db_st_all)(c, DB_ST_DMAX, 0);
    double amax = GM_FN(db_st_all)(c, DB_ST_LA(t - 1), 0);
    if (!(dmax >= dmin) || !isfinite(amax)) return 0;
    if (2.0 * c->L + c->phi * (dmax - dmin) > -DB_LOGMIN - 30.0) return 0;
    *sig = amax - c->phi * dmin;
    return 1;
}

/* Fused iteration t >= 2 (inside the parallel region): one sweep over K' in
 * fixed 32-row chunks computing the row sums s^t = K' b~^{t-1}, a~^t for
 * groups of DB_RG rows, and the chunk partials of the column sums
 * K'^T a~^t from the same rows while they are cached (reduced in chunk
 * order by db_col_update).  Also the thread's max of la over rows of
 * positive mass (the bin row's, `amax0`, computed before).  Ends with a
 * barrier.  O(NM), one pass over K' instead of two. */
static void GM_FN(db_fused_iter)(GM_FN(db_ctx) *c, int t, GM_T *s, GM_T *a, const GM_T *bp,
                                  double sig, double amax0)
{
    size_t n = c->n, m = c->m, ldk = c->ldk, mp = c->mpad;
    GM_T kbb = c->kb * bp[m];
    double off = c->lam * c->c + c->sig_b, amax = amax0;
    size_t k0, k1;
    db_chunk_range(c->nchunk, &k0, &k1);
    for (size_t ch = k0; ch < k1; ch++) {
        GM_T *tp = c->part + ch * mp, w[DB_RG];
        size_t i0 = ch * DB_CHUNK, i1 = i0 + DB_CHUNK < n ? i0 + DB_CHUNK : n;
        for (size_t j = 0; j < m; j++) tp[j] = 0;
        for (size_t i = i0; i < i1; i += DB_RG) {
            size_t r = i1 - i < DB_RG ? i1 - i : DB_RG;
            const GM_T *k0 = c->K + i * ldk;
            for (size_t q = 0; q < r; q += 4)
                GM_FN(db_dots)(k0 + q * ldk, ldk, bp, m, r - q < 4 ? r - q : 4, w + q);
            for (size_t q = 0; q < r; q++) s[i + q] = w[q] + kbb;
            GM_FN(db_arows)(c, i, s + i, r, off, sig, a + i);
            for (size_t q = 0; q < r; q += 4)
                GM_FN(db_axpy_rows)(tp, k0 + q * ldk, ldk, a + i + q, r - q < 4 ? r - q : 4, m);
        }
        for (size_t i = i0; i < i1; i++)
            if (c->logmu[i] != -INFINITY && c->la[i] > amax) amax = c->la[i];
    }
    GM_FN(db_st)(c, db_tid())[DB_ST_LA(t)] = amax;
#pragma omp barrier
}

/* Column half of iteration t on this thread's columns [j0, j1) (and the bin
 * column on the last thread), after the row half: column sums (from the
 * chunk partials in chunk order when `fused`, else already in tc), lb =
 * pot(log nu, lam c + sig_a + log t), the thread's statistics; a barrier;
 * then b~ = exp(lb - max lb) into bn, sig_b = max lb, and a second barrier.
 * O((M/threads) (N/32 + 1)) plus O(threads). */
static void GM_FN(db_col_update)(GM_FN(db_ctx) *c, int fused, const GM_T *a, GM_T *tc,
                                    GM_T *bn)
{
    size_t n = c->n, m = c->m, mp = c->mpad, j0, j1, je;
    GM_T kb = c->kb, extra = a[n] * kb;
    double off = c->lam * c->c + c->sig_a, mx = -INFINITY, dmin = INFINITY, dmax = -INFINITY;
    int tid = db_tid();
    db_col_range(m, &j0, &j1);
    je = tid == db_nth() - 1 ? m + 1 : j1; /* the last thread also takes column M */
    if (fused) {
        for (size_t j = j0; j < j1; j++) tc[j] = 0;
        for (size_t ch = 0; ch < c->nchunk; ch++) {
            const GM_T *tp = c->part + ch * mp;
            for (size_t j = j0; j < j1; j++) tc[j] += tp[j];
        }
        for (size_t j = j0; j < j1; j++) tc[j] += extra;
    }
    if (je > j1) tc[m] = kb * GM_FN(gm_vec_sum32)(a, c->n1);
    if (je > j0) {
        double *l = c->lb + j0, *tmp = c->dm + j0;
        memcpy(c->lbp + j0, l, (je - j0) * sizeof(double));
        for (size_t j = j0; j < je; j++) tmp[j - j0] = (double)tc[j];
        db_log_array(tmp, l, je - j0);
        for (size_t j = j0; j < je; j++) c->lb[j] = GM_FN(db_pot)(c->phi, c->lognu[j], off + c->lb[j]);
        for (size_t j = j0; j < je; j++) mx = c->lb[j] > mx ? c->lb[j] : mx;
        for (size_t j = j0; j < je; j++) {
            if (c->lognu[j] == -INFINITY) continue;
            double d = c->lb[j] - c->lbp[j];
            dmin = d < dmin ? d : dmin;
            dmax = d > dmax ? d : dmax;
        }
    }
    {
        double *st = GM_FN(db_st)(c, tid);
        st[DB_ST_LBMAX] = mx;
        st[DB_ST_DMIN] = dmin;
        st[DB_ST_DMAX] = dmax;
    }
#pragma omp barrier
    mx = GM_FN(db_st_all)(c, DB_ST_LBMAX, 0);
    for (size_t j = j0; j < je; j++) bn[j] = (GM_T)gm_exp_f64(c->lb[j] - mx);
    /* every thread read c->sig_b (db_fused_iter, db_arow, db_kupdate)
     * before the barrier above; the next reads follow the one below */
    if (tid == 0) c->sig_b = mx;
#pragma omp barrier
}

/* Kernel-domain forward (inside the parallel region): K' and the first row
 * sums come from db_prepare; iteration 1 is a column pass; iterations t >= 2
 * are single fused sweeps (db_fused_iter) when the provisional shift of
 * db_fused_shift is safe -- 2L + D <= -log(min normal) - 30, so every
 * column sum is >= exp(-L-D) and terms lost to subnormal a~ stay below
 * 1e-13 relative -- else a row pass and a column pass with exact
 * normalization.  The column half (db_col_update) runs on every thread's
 * own columns; each thread decides `fused` itself from the team's
 * statistics (the same decision everywhere).  Three barriers per
 * iteration, no serial section except the O(N) row update of a non-fused
 * iteration.  O(n_iter N M). */
static void GM_FN(db_kernel_forward)(GM_FN(db_ctx) *c)
{
    size_t n = c->n, m = c->m, ldk = c->ldk;
    GM_T kb = c->kb;
    int tid = db_tid(), fused = 0;
    double sig_f = 0.0;
    for (int t = 1; t <= c->iters; t++) {
        GM_T *s = c->srow + GM_FN(db_slot)(c, t) * c->n1;
        GM_T *a = c->at + GM_FN(db_slot)(c, t) * c->n1;
        GM_T *tc = c->tcol + GM_FN(db_slot)(c, t) * c->m1;
        GM_T *bp = GM_FN(db_bptr)(c, t - 1);
        GM_T *bn = GM_FN(db_bptr)(c, t);
        double amax0 = -INFINITY;
        /* start of iteration t: bin-row sum and (when fused) its a~, on
         * thread 0; read by the others after the next barrier */
        fused = GM_FN(db_fused_shift)(c, t, &sig_f);
        if (fused && tid == 0) {
            double off = c->lam * c->c + c->sig_b;
            s[n] = kb * GM_FN(gm_vec_sum32)(bp, c->m1);
            a[n] = GM_FN(db_arow)(c, n, s[n], off, sig_f);
            c->sig_a = sig_f;
            if (c->logmu[n] != -INFINITY) amax0 = c->la[n];
        }
        if (t == 1 && c->pre_fused) {
            /* row half and column partials done by db_prepare */
            fused = 1;
        } else if (fused) {
            GM_FN(db_fused_iter)(c, t, s, a, bp, sig_f, amax0);
        } else {
            size_t j0, j1;
            if (t > 1) GM_FN(db_rowmv)(c->K, ldk, n, m, bp, kb, s);
#pragma omp single
            {
                double amax = -INFINITY;
                s[n] = kb * GM_FN(gm_vec_sum32)(bp, c->m1);
                c->sig_a = GM_FN(db_kupdate)(c, s, c->logmu, c->n1, c->sig_b, c->la, c->dn, a);
                for (size_t i = 0; i < c->n1; i++)
                    if (c->logmu[i] != -INFINITY && c->la[i] > amax) amax = c->la[i];
                for (int q = 0; q < db_nth(); q++)
                    GM_FN(db_st)(c, q)[DB_ST_LA(t)] = q == 0 ? amax : -INFINITY;
            }
            db_col_range(m, &j0, &j1);
            GM_FN(db_colmv)(c->K, ldk, n, a, tc, j0, j1);
            for (size_t j = j0; j < j1; j++) tc[j] += a[n] * kb;
        }
        GM_FN(db_col_update)(c, fused, a, tc, bn);
    }
}

/* Log-sum-exp of lam*S_row + g (length m) plus the bin term xb, in double.
 * O(m) exponentials. */
static double GM_FN(db_row_lse)(const GM_FN(db_ctx) *c, const GM_T *srow, const GM_T *g,
                                 GM_T xb)
{
    size_t m = c->m;
    GM_T mx = xb, acc[DB_LANES];
    for (size_t j = 0; j < m; j++) {
        GM_T x = c->lamT * srow[j] + g[j];
        mx = x > mx ? x : mx;
    }
    for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
    size_t j = 0;
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++)
            acc[l] += GM_EXP(c->lamT * srow[j + l] + g[j + l] - mx);
    for (int l = 0; j + (size_t)l < m; l++) acc[l] += GM_EXP(c->lamT * srow[j + l] + g[j + l] - mx);
    double sum = (double)GM_FN(gm_vec_fold)(acc, DB_LANES);
    return (double)mx + log(sum + exp((double)xb - (double)mx));
}


/* x0 + LSE_k v_k in double over len values (the dustbin row's or column's
 * log-sum-exp, all of whose scores are bin_score): shifted by the max.
 * O(len). */
static double GM_FN(db_bin_lse)(double x0, const GM_T *v, size_t len)
{
    double mxd = -INFINITY, sd = 0.0;
    for (size_t k = 0; k < len; k++) mxd = (double)v[k] > mxd ? (double)v[k] : mxd;
    for (size_t k = 0; k < len; k++) sd += exp((double)v[k] - mxd);
    return x0 + mxd + log(sd);
}

/* Log-domain forward (inside the parallel region): literal LSE sweeps, row
 * LSEs by one thread per row, column LSEs by column blocks (max pass, then
 * exponential-sum pass).  O(n_iter N M) exponentials. */
static void GM_FN(db_log_forward)(GM_FN(db_ctx) *c)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1;
    for (int t = 1; t <= c->iters; t++) {
        GM_T *fu = c->fu + GM_FN(db_slot)(c, t) * n1;
        GM_T *nlr = c->nlr + GM_FN(db_slot)(c, t) * n1;
        GM_T *nlc = c->nlc + GM_FN(db_slot)(c, t) * m1;
        GM_T *gp = GM_FN(db_gvptr)(c, t - 1), *gn = GM_FN(db_gvptr)(c, t);
        GM_T *mx = c->vm, *sm = c->vm2;
        size_t j0, j1;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            double lse = GM_FN(db_row_lse)(c, c->S + i * m, gp, c->lambinT + gp[m]);
            c->la[i] = GM_FN(db_pot)(c->phi, c->logmu[i], lse);
            fu[i] = (GM_T)c->la[i];
            nlr[i] = (GM_T)(-lse);
        }
#pragma omp single
        {
            double lse = GM_FN(db_bin_lse)(c->lam * c->bin, gp, m1);
            c->la[n] = GM_FN(db_pot)(c->phi, c->logmu[n], lse);
            fu[n] = (GM_T)c->la[n];
            nlr[n] = (GM_T)(-lse);
        }
        db_col_range(m, &j0, &j1);
        for (size_t j = j0; j < j1; j++) mx[j] = c->lambinT + fu[n];
        for (size_t i = 0; i < n; i++) {
            const GM_T *si = c->S + i * m;
            GM_T f = fu[i];
            for (size_t j = j0; j < j1; j++) {
                GM_T x = c->lamT * si[j] + f;
                mx[j] = x > mx[j] ? x : mx[j];
            }
        }
        for (size_t j = j0; j < j1; j++) sm[j] = 0;
        for (size_t i = 0; i < n; i++) {
            const GM_T *si = c->S + i * m;
            GM_T f = fu[i];
            for (size_t j = j0; j < j1; j++) sm[j] += GM_EXP(c->lamT * si[j] + f - mx[j]);
        }
        for (size_t j = j0; j < j1; j++) {
            double lse = (double)mx[j] +
                         log((double)sm[j] + exp((double)(c->lambinT + fu[n]) - (double)mx[j]));
            c->lb[j] = GM_FN(db_pot)(c->phi, c->lognu[j], lse);
            gn[j] = (GM_T)c->lb[j];
            nlc[j] = (GM_T)(-lse);
        }
#pragma omp barrier
#pragma omp single
        {
            double lse = GM_FN(db_bin_lse)(c->lam * c->bin, fu, n1);
            c->lb[m] = GM_FN(db_pot)(c->phi, c->lognu[m], lse);
            gn[m] = (GM_T)c->lb[m];
            nlc[m] = (GM_T)(-lse);
        }
    }
}

/* After the forward: choose for every row how its plan entries are formed
 * (kernel path: r_i K'_ij b~_j when that keeps every intermediate normal,
 * else exp(lam S_ij + alpha_i + beta_j)), and fill vm with beta in the
 * working type.  Single thread, O(N+M). */
static void GM_FN(db_plan_prepare)(GM_FN(db_ctx) *c)
{
    for (size_t i = 0; i < c->n1; i++) {
        double rho = c->la[i] + c->lam * c->c + c->sig_b;
        int ok = c->la[i] == -INFINITY ||
                 (rho >= DB_LOGMIN + c->L + 2.0 && rho + c->L <= DB_LOGMAX - 2.0);
        c->mulrow[i] = (unsigned char)(c->kernel && ok);
        c->dn[i] = rho;
    }
    for (size_t j = 0; j < c->m1; j++) c->vm[j] = (GM_T)c->lb[j];
}

/* Row i < N of the plan (columns j < M) into out (may alias the K' row when
 * ldk rows are the plan rows).  Sets c->err on overflow.  O(M). */
static void GM_FN(db_plan_row)(GM_FN(db_ctx) *c, size_t i, GM_T *out)
{
    size_t m = c->m;
    if (c->mulrow[i]) {
        const GM_T *ki = c->K + i * c->ldk, *b = c->bfin;
        GM_T r = (GM_T)exp(c->dn[i]);
        if (c->la[i] == -INFINITY) r = 0;
        for (size_t j = 0; j < m; j++) out[j] = r * ki[j] * b[j];
    } else {
        const GM_T *si = c->S + i * m, *beta = c->vm;
        GM_T a = (GM_T)c->la[i], mx = -(GM_T)INFINITY;
        for (size_t j = 0; j < m; j++) {
            GM_T x = c->lamT * si[j] + a + beta[j];
            mx = x > mx ? x : mx;
            out[j] = GM_EXP(x);
        }
        if ((double)mx > DB_LOGMAX) GM_FN(db_set_err)(c, GM_ERR_NUMERIC);
    }
}

/* Plan entry in a bin row or column, from log P = lam bin + alpha + beta in
 * double.  Sets c->err on overflow.  O(1). */
static GM_T GM_FN(db_plan_bin)(GM_FN(db_ctx) *c, size_t i, size_t j)
{
    double x = c->lam * c->bin + c->la[i] + c->lb[j];
    if (x > DB_LOGMAX) GM_FN(db_set_err)(c, GM_ERR_NUMERIC);
    return (GM_T)exp(x);
}

/* Forward driver (inside the parallel region, after db_prepare).  Writes the
 * plan into P ((N+1) x (M+1)) unless P is NULL (vjp).  O(n_iter N M). */
static void GM_FN(db_forward)(GM_FN(db_ctx) *c, GM_T *P)
{
    if (c->err != GM_OK) return;
    if (c->kernel)
        GM_FN(db_kernel_forward)(c);
    else
        GM_FN(db_log_forward)(c);
#pragma omp single
    {
        if (!c->kernel) c->sig_b = 0.0;
        GM_FN(db_plan_prepare)(c);
        if (c->kernel && c->store == 0) memcpy(c->bfin, GM_FN(db_bptr)(c, c->iters),
                                               c->mpad * sizeof(GM_T));
    }
    if (P == NULL) return;
    {
        size_t n = c->n, m = c->m, m1 = c->m1;
        /* rows, then the bin row: disjoint entries, one barrier (the
         * region's end) */
#pragma omp for schedule(static) nowait
        for (size_t i = 0; i < n; i++) {
            GM_FN(db_plan_row)(c, i, P + i * m1);
            P[i * m1 + m] = GM_FN(db_plan_bin)(c, i, m);
        }
#pragma omp for schedule(static) nowait
        for (size_t j = 0; j < m1; j++) P[n * m1 + j] = GM_FN(db_plan_bin)(c, n, j);
    }
}

/* Status of a finished call, with details: a "kernel" method that the
 * inputs make unsafe is a bad argument (GM_ERR_INVALID), not an overflow.
 * Runs on the calling thread, after the parallel region.  O(1). */
static int GM_FN(db_status)(const GM_FN(db_ctx) *c, int method)
{
    if (c->err == GM_ERR_NUMERIC && method == GM_DUSTBIN_KERNEL && !c->kernel)
        return gm_fail(GM_ERR_INVALID,
                       "method='kernel' is unsafe for these inputs: (max(S~) - min(S~)) / "
                       "(2 reg) exceeds %d for %s; use method='auto'", (int)DB_LMAX,
                       sizeof(GM_T) == 4 ? "float32" : "float64");
    return c->err;
}

int GM_FN(gm_dustbin_sinkhorn)(const GM_T *S, const GM_T *mu, const GM_T *nu, size_t n,
                                size_t m, double bin_score, double reg, double reg_m,
                                int n_iter, int method, GM_T *P, int *method_used)
{
    GM_FN(db_ctx) c;
    int st;
    if (P == NULL || method < 0 || method > 2) return GM_ERR_INVALID;
    st = GM_FN(db_setup)(&c, S, mu, nu, n, m, bin_score, reg, reg_m, n_iter, 0);
    if (st == GM_OK) {
        c.K = P;
        c.ldk = m + 1;
        st = GM_FN(db_alloc_k)(&c, method);
    }
    if (st == GM_OK) {
#pragma omp parallel num_threads(c.nt)
        {
            GM_FN(db_prepare)(&c, method);
            GM_FN(db_forward)(&c, P);
        }
        st = GM_FN(db_status)(&c, method);
        if (method_used) *method_used = c.kernel ? 1 : 2;
    }
    GM_FN(db_free)(&c);
    return st;
}

/* ---- backward ------------------------------------------------------------ */

/* g_ij = G_ij P_ij (plan) or G_ij (log plan) for row i < N into out (j < M);
 * the bin-column entry is returned.  tmp holds the P row.  O(M). */
static double GM_FN(db_g_row)(GM_FN(db_ctx) *c, size_t i, GM_T *out, GM_T *tmp)
{
    size_t m = c->m, m1 = c->m1;
    const GM_T *gi = c->G + i * m1;
    if (c->wrt_log) {
        if (out != gi) memcpy(out, gi, m * sizeof(GM_T));
        return (double)gi[m];
    }
    GM_FN(db_plan_row)(c, i, tmp);
    for (size_t j = 0; j < m; j++) out[j] = gi[j] * tmp[j];
    return (double)gi[m] * (double)GM_FN(db_plan_bin)(c, i, m);
}

/* g pass: row sums rs (n1) and column sums cs (m1) of g over the augmented
 * matrix, with column sums built from fixed 32-row chunk partials so the
 * result does not depend on the thread count.  When `into` is not NULL,
 * lam*g (g itself when `raw`) is written there (row stride M).  O(NM). */
static void GM_FN(db_gpass)(GM_FN(db_ctx) *c, GM_T *into, int raw)
{
    size_t n = c->n, m = c->m, m1 = c->m1, mp = c->mpad;
    GM_T *row = c->rowtmp + 2 * (size_t)db_tid() * mp;
    GM_T *gbuf = row + mp;
    {
#pragma omp for schedule(static)
        for (size_t ch = 0; ch < c->nchunk; ch++) {
            GM_T *pp = c->part + ch * mp;
            size_t i0 = ch * DB_CHUNK, i1 = i0 + DB_CHUNK < n ? i0 + DB_CHUNK : n;
            for (size_t j = 0; j < m; j++) pp[j] = 0;
            for (size_t i = i0; i < i1; i++) {
                if (!GM_FN(gm_vec_all_finite)(c->G + i * m1, m1))
                    GM_FN(db_set_err)(c, GM_ERR_NONFINITE_ARG(3));
                GM_T *gr = raw ? into + i * m : gbuf;
                c->gbc[i] = GM_FN(db_g_row)(c, i, gr, row);
                c->rs[i] = (double)GM_FN(gm_vec_sum32)(gr, m) + c->gbc[i];
                for (size_t j = 0; j < m; j++) pp[j] += gr[j];
                if (into && !raw) {
                    GM_T *o = into + i * m;
                    for (size_t j = 0; j < m; j++) o[j] = c->lamT * gbuf[j];
                }
            }
        }
    }
#pragma omp single
    if (!GM_FN(gm_vec_all_finite)(c->G + n * m1, m1)) c->err = GM_ERR_NONFINITE_ARG(3);
    if (c->err != GM_OK) return;
    {
        size_t j0, j1;
        GM_T *acc = c->vm2;
        db_col_range(m, &j0, &j1);
        for (size_t j = j0; j < j1; j++) acc[j] = 0;
        for (size_t ch = 0; ch < c->nchunk; ch++) {
            const GM_T *pp = c->part + ch * mp;
            for (size_t j = j0; j < j1; j++) acc[j] += pp[j];
        }
        for (size_t j = j0; j < j1; j++) c->cs[j] = (double)acc[j];
    }
#pragma omp barrier
    {
        /* the bin row's g (one exponential each) on all threads, then the
         * sums in order on one */
        const GM_T *gn = c->G + n * m1;
#pragma omp for schedule(static)
        for (size_t j = 0; j < m1; j++) {
            double g = (double)gn[j];
            if (!c->wrt_log) g *= (double)GM_FN(db_plan_bin)(c, n, j);
            c->gbr[j] = g;
        }
    }
#pragma omp single
    {
        double rn = 0.0, cm = 0.0;
        for (size_t j = 0; j < m1; j++) {
            double g = c->gbr[j];
            rn += g;
            if (j < m) c->cs[j] += g;
        }
        c->rs[n] = rn;
        for (size_t i = 0; i < n; i++) cm += c->gbc[i];
        c->cs[m] = cm + c->gbr[m];
        c->gbc[n] = c->gbr[m];
    }
}

/* The bin row's hu^t_N of backward step t (its row product is kb *
 * sum(hv^t)).  O(M). */
static void GM_FN(db_bwd_bin)(GM_FN(db_ctx) *c, int t)
{
    size_t n = c->n;
    const GM_T *hv = c->bmat + (size_t)(t - 1) * c->mpad;
    const GM_T *a = c->at + (size_t)(t - 1) * c->n1, *s = c->srow + (size_t)(t - 1) * c->n1;
    GM_T *hu = c->hu + (size_t)(t - 1) * c->n1;
    double lrs = t == c->iters ? c->lam : 0.0;
    double w = (double)(c->kb * GM_FN(gm_vec_sum32)(hv, c->m1));
    hu[n] = (GM_T)((lrs * c->rs[n] - c->phi * (double)a[n] * w) / (double)s[n]);
}

/* Serial start of backward step t: hv^t = gbar_v^t / t^t and the bin row's
 * hu^t_N.  O(N+M). */
static void GM_FN(db_bwd_start)(GM_FN(db_ctx) *c, int t)
{
    size_t m1 = c->m1;
    GM_T *hv = c->bmat + (size_t)(t - 1) * c->mpad;
    const GM_T *tc = c->tcol + (size_t)(t - 1) * m1;
    for (size_t j = 0; j < m1; j++) hv[j] = (GM_T)(c->dm[j] / (double)tc[j]);
    GM_FN(db_bwd_bin)(c, t);
}

/* Kernel-domain backward (inside the parallel region, after db_forward with
 * history): reverse sweep of n_iter row and column matrix-vector products,
 * each iteration t >= 2 is one fused pass (row products w = K' hv^t giving
 * hu^t row by row, then the column partials of K'^T hu^t from the same rows
 * while cached, in fixed 32-row chunks); the t = 1 row product is fused with
 * the final pass dS_ij = lam g_ij - phi K'_ij sum_t (a~^t_i hv^t_j +
 * hu^t_i b~^{t-1}_j), written over K' (= dS).  O(n_iter N M). */
static void GM_FN(db_kernel_backward)(GM_FN(db_ctx) *c, double *dbin)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1, mp = c->mpad;
    int T = c->iters;
    GM_T kb = c->kb, phiT = (GM_T)c->phi;
    GM_FN(db_gpass)(c, c->dS, 1);
    if (c->err != GM_OK) return;
#pragma omp single
    {
        for (size_t j = 0; j < m1; j++) c->dm[j] = c->lam * c->cs[j];
        GM_FN(db_bwd_start)(c, T);
    }
    for (int t = T; t >= 2; t--) {
        GM_T *hv = c->bmat + (size_t)(t - 1) * mp;
        GM_T *a = c->at + (size_t)(t - 1) * n1, *s = c->srow + (size_t)(t - 1) * n1;
        GM_T *tc = c->tcol + (size_t)(t - 1) * m1, *hu = c->hu + (size_t)(t - 1) * n1;
        GM_T *bp = GM_FN(db_bptr)(c, t - 1);
        double lrs = t == T ? c->lam : 0.0;
        (void)tc;
        /* fused: w = K' hv per row, hu from it, z partials += hu_i K'_i */
        size_t k0, k1;
        db_chunk_range(c->nchunk, &k0, &k1);
        for (size_t ch = k0; ch < k1; ch++) {
            GM_T *zp = c->part + ch * mp, w4[4];
            size_t i0 = ch * DB_CHUNK, i1 = i0 + DB_CHUNK < n ? i0 + DB_CHUNK : n, i = i0;
            for (size_t j = 0; j < m; j++) zp[j] = 0;
            for (; i < i1; i += 4) {
                size_t r = i1 - i < 4 ? i1 - i : 4;
                const GM_T *kr = c->K + i * c->ldk;
                GM_FN(db_dots)(kr, c->ldk, hv, m, r, w4);
                for (size_t q = 0; q < r; q++) {
                    double w = (double)(w4[q] + kb * hv[m]);
                    double g = lrs * c->rs[i + q] - c->phi * (double)a[i + q] * w;
                    hu[i + q] = (GM_T)(g / (double)s[i + q]);
                }
                GM_FN(db_axpy_rows)(zp, kr, c->ldk, hu + i, r, m);
            }
        }
#pragma omp barrier
        {
            /* column half on this thread's columns (the bin column on the
             * last thread): z = K'^T hu from the chunk partials in chunk
             * order, gbar_v, and hv^{t-1} = gbar_v / t^{t-1} */
            size_t j0, j1, je;
            GM_T *z = c->vm, extra = hu[n] * kb, *hvn = c->bmat + (size_t)(t - 2) * mp;
            const GM_T *tcn = c->tcol + (size_t)(t - 2) * m1;
            db_col_range(m, &j0, &j1);
            je = db_tid() == db_nth() - 1 ? m1 : j1;
            for (size_t j = j0; j < j1; j++) z[j] = 0;
            for (size_t ch = 0; ch < c->nchunk; ch++) {
                const GM_T *zp = c->part + ch * mp;
                for (size_t j = j0; j < j1; j++) z[j] += zp[j];
            }
            for (size_t j = j0; j < j1; j++) z[j] += extra;
            if (je > j1) z[m] = kb * GM_FN(gm_vec_sum32)(hu, n1);
            for (size_t j = j0; j < je; j++) {
                c->dm[j] = -c->phi * (double)bp[j] * (double)z[j];
                hvn[j] = (GM_T)(c->dm[j] / (double)tcn[j]);
            }
        }
#pragma omp barrier
        /* the bin row's hu^{t-1}, read after the next barrier */
        if (db_tid() == 0) GM_FN(db_bwd_bin)(c, t - 1);
    }
    {
        /* t = 1: row pass fused with the final pass, rows in groups of
         * DB_RG (grouping fixed by N) and DB_FC columns at a time so that
         * the rank-2T sums stay in registers (two vectors per row).  g was
         * stored in dS by the g pass; each finished row is checked for
         * overflow while cached. */
        GM_T *hv = c->bmat, *a = c->at, *s = c->srow, *hu = c->hu;
        GM_T *A = c->abuf + (size_t)db_tid() * DB_RG * 2 * (size_t)T;
        double lrs = T == 1 ? c->lam : 0.0;
        size_t twoT = 2 * (size_t)T, ng = (n + DB_RG - 1) / DB_RG;
#pragma omp for schedule(static)
        for (size_t gi = 0; gi < ng; gi++) {
            size_t i0 = DB_RG * gi, r = n - i0 < DB_RG ? n - i0 : DB_RG;
            const GM_T *k0 = c->K + i0 * c->ldk;
            GM_T w[DB_RG];
            for (size_t q = 0; q < r; q += 4)
                GM_FN(db_dots)(k0 + q * c->ldk, c->ldk, hv, m, r - q < 4 ? r - q : 4, w + q);
            for (size_t q = 0; q < DB_RG; q++) {
                GM_T *Aq = A + q * twoT;
                size_t i = i0 + q;
                if (q >= r) {
                    for (size_t k = 0; k < twoT; k++) Aq[k] = 0;
                    continue;
                }
                double wd = (double)(w[q] + kb * hv[m]);
                hu[i] = (GM_T)((lrs * c->rs[i] - c->phi * (double)a[i] * wd) / (double)s[i]);
                for (size_t k = 0; k < (size_t)T; k++) {
                    Aq[k] = c->at[k * n1 + i];
                    Aq[T + k] = c->hu[k * n1 + i];
                }
            }
            for (size_t j0 = 0; j0 < m; j0 += DB_FC) {
                /* columns up to j0 + DB_FC <= mpad: the padding of bmat is 0 */
                GM_T acc[DB_RG][DB_FC];
                size_t jn = m - j0 < DB_FC ? m - j0 : DB_FC;
                for (int q = 0; q < DB_RG; q++)
                    for (int l = 0; l < DB_FC; l++) acc[q][l] = 0;
                for (size_t k = 0; k < twoT; k++) {
                    const GM_T *b = c->bmat + k * mp + j0;
                    for (int q = 0; q < DB_RG; q++) {
                        GM_T x = A[(size_t)q * twoT + k];
                        for (int l = 0; l < DB_FC; l++) acc[q][l] += x * b[l];
                    }
                }
                for (size_t q = 0; q < r; q++) {
                    const GM_T *kq = c->K + (i0 + q) * c->ldk + j0;
                    GM_T *dq = c->dS + (i0 + q) * m + j0;
                    for (size_t l = 0; l < jn; l++)
                        dq[l] = c->lamT * dq[l] - phiT * kq[l] * acc[q][l];
                }
            }
            for (size_t q = 0; q < r; q++)
                if (!GM_FN(gm_vec_all_finite)(c->dS + (i0 + q) * m, m)) {
#pragma omp atomic write
                    c->dsbad = 1;
                }
        }
    }
    {
        /* dL/dbin: the terms of the entries (i, M) for i < N, then of the
         * whole bin row (N, j), on all threads (into dn and dm, free by now),
         * summed in that order on one */
        size_t ne = n + m1;
#pragma omp for schedule(static)
        for (size_t e = 0; e < ne; e++) {
            size_t i = e < n ? e : n, j = e < n ? m : e - n;
            double acc = 0.0;
            for (int k = 0; k < T; k++)
                acc += (double)c->at[(size_t)k * n1 + i] * (double)c->bmat[(size_t)k * mp + j] +
                       (double)c->hu[(size_t)k * n1 + i] *
                           (double)c->bmat[(size_t)(T + k) * mp + j];
            double g = i < n ? c->gbc[i] : c->gbr[j];
            double term = c->lam * g - c->phi * (double)kb * acc;
            if (e < n)
                c->dn[e] = term;
            else
                c->dm[e - n] = term;
        }
    }
#pragma omp single
    {
        double d = 0.0;
        for (size_t i = 0; i < n; i++) d += c->dn[i];
        for (size_t j = 0; j < m1; j++) d += c->dm[j];
        if (dbin) *dbin = d;
    }
}

/* Log-domain backward (inside the parallel region, after db_forward with
 * history): for t = n_iter..1 a row pass (Q^t weights, exponentials) and a
 * column pass (R^t weights) that also accumulate -phi * (terms) into dS,
 * which the g pass initialized to lam g.  O(n_iter N M) exponentials. */
static void GM_FN(db_log_backward)(GM_FN(db_ctx) *c, GM_T *dS, double *dbin)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1;
    int T = c->iters;
    GM_T phiT = (GM_T)c->phi;
    GM_FN(db_gpass)(c, dS, 0);
    if (c->err != GM_OK) return;
#pragma omp single
    {
        double d = 0.0;
        for (size_t j = 0; j < m1; j++) c->dm[j] = c->lam * c->cs[j];
        for (size_t i = 0; i < n; i++) d += c->lam * c->gbc[i];
        for (size_t j = 0; j < m1; j++) d += c->lam * c->gbr[j];
        c->dbacc = d;
    }
    for (int t = T; t >= 1; t--) {
        const GM_T *fu = c->fu + (size_t)(t - 1) * n1, *nlr = c->nlr + (size_t)(t - 1) * n1;
        const GM_T *nlc = c->nlc + (size_t)(t - 1) * m1, *gp = GM_FN(db_gvptr)(c, t - 1);
        GM_T *gvb = c->vm, *gub = c->vn;
        size_t j0, j1;
#pragma omp single
        for (size_t j = 0; j < m1; j++) gvb[j] = (GM_T)c->dm[j];
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            const GM_T *si = c->S + i * m;
            GM_T *di = dS + i * m, f = fu[i], acc[DB_LANES];
            for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
            size_t j = 0;
            for (; j + DB_LANES <= m; j += DB_LANES)
                for (int l = 0; l < DB_LANES; l++) {
                    GM_T q = GM_EXP(c->lamT * si[j + l] + f + nlc[j + l]) * gvb[j + l];
                    acc[l] += q;
                    di[j + l] -= phiT * q;
                }
            for (int l = 0; j + (size_t)l < m; l++) {
                GM_T q = GM_EXP(c->lamT * si[j + l] + f + nlc[j + l]) * gvb[j + l];
                acc[l] += q;
                di[j + l] -= phiT * q;
            }
            c->dn[i] = (double)GM_FN(gm_vec_fold)(acc, DB_LANES) +
                       exp(c->lam * c->bin + (double)f + (double)nlc[m]) * c->dm[m];
        }
#pragma omp single
        {
            double w = 0.0, db = 0.0;
            for (size_t j = 0; j < m1; j++)
                w += exp(c->lam * c->bin + (double)fu[n] + (double)nlc[j]) * c->dm[j];
            c->dn[n] = w;
            for (size_t i = 0; i < n; i++)
                db += exp(c->lam * c->bin + (double)fu[i] + (double)nlc[m]) * c->dm[m];
            db += w;
            c->dbacc -= c->phi * db;
            for (size_t i = 0; i < n1; i++) {
                double g = (t == T ? c->lam * c->rs[i] : 0.0) - c->phi * c->dn[i];
                c->dn[i] = g;
                gub[i] = (GM_T)g;
            }
        }
        db_col_range(m, &j0, &j1);
        {
            GM_T *z = c->vm2;
            GM_T rb = (GM_T)(c->lam * c->bin), gn = gub[n], ln = nlr[n];
            for (size_t j = j0; j < j1; j++) z[j] = GM_EXP(rb + gp[j] + ln) * gn;
            for (size_t i = 0; i < n; i++) {
                const GM_T *si = c->S + i * m;
                GM_T *di = dS + i * m, g = gub[i], lr = nlr[i];
                for (size_t j = j0; j < j1; j++) {
                    GM_T r = GM_EXP(c->lamT * si[j] + gp[j] + lr) * g;
                    z[j] += r;
                    di[j] -= phiT * r;
                }
            }
        }
#pragma omp barrier
#pragma omp single
        {
            double zm = 0.0, db = 0.0;
            for (size_t i = 0; i < n1; i++)
                zm += exp(c->lam * c->bin + (double)gp[m] + (double)nlr[i]) * c->dn[i];
            for (size_t i = 0; i < n; i++)
                db += exp(c->lam * c->bin + (double)gp[m] + (double)nlr[i]) * c->dn[i];
            for (size_t j = 0; j < m1; j++)
                db += exp(c->lam * c->bin + (double)gp[j] + (double)nlr[n]) * c->dn[n];
            c->dbacc -= c->phi * db;
            for (size_t j = 0; j < m; j++) c->dm[j] = -c->phi * (double)c->vm2[j];
            c->dm[m] = -c->phi * zm;
        }
    }
#pragma omp single
    if (dbin) *dbin = c->dbacc;
}

int GM_FN(gm_dustbin_sinkhorn_vjp)(const GM_T *S, const GM_T *mu, const GM_T *nu,
                                    const GM_T *G, size_t n, size_t m, double bin_score,
                                    double reg, double reg_m, int n_iter, int method,
                                    int wrt_log, GM_T *dS, double *dbin, int *method_used)
{
    GM_FN(db_ctx) c;
    int st;
    double db = 0.0;
    if (dS == NULL || G == NULL || method < 0 || method > 2) return GM_ERR_INVALID;
    st = GM_FN(db_setup)(&c, S, mu, nu, n, m, bin_score, reg, reg_m, n_iter, 1);
    if (st == GM_OK) {
        c.G = G;
        c.wrt_log = wrt_log != 0;
        c.K = dS;
        c.ldk = m;
        c.dS = dS;
        st = GM_FN(db_alloc_k)(&c, method);
    }
    if (st == GM_OK) {
#pragma omp parallel num_threads(c.nt)
        {
            GM_FN(db_prepare)(&c, method);
            GM_FN(db_forward)(&c, NULL);
            if (c.err == GM_OK) {
                if (c.kernel)
                    GM_FN(db_kernel_backward)(&c, &db);
                else
                    GM_FN(db_log_backward)(&c, dS, &db);
            }
        }
        st = GM_FN(db_status)(&c, method);
        /* like the forward, an overflow (tiny reg, huge G) is an error, not
         * a NaN gradient */
        /* the kernel path checked dS row by row (db_kernel_backward) */
        if (st == GM_OK &&
            ((c.kernel ? c.dsbad : !GM_FN(gm_all_finite)(dS, n * m)) || !isfinite(db)))
            st = gm_fail(GM_ERR_NUMERIC, "the gradient overflowed or produced NaN (reg=%.9g); "
                         "try a larger regularization, a smaller grad_P or float64", reg);
        if (st == GM_OK && dbin) *dbin = db;
        if (method_used) *method_used = c.kernel ? 1 : 2;
    }
    GM_FN(db_free)(&c);
    return st;
}

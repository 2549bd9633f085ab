/* gm_dustbin_impl.h -- type-generic body of gm_dustbin.c, included once for
 * float and once for double with DB_T, DB_SFX, DB_EXP, DB_LMAX, DB_LOGMAX
 * and DB_LOGMIN defined.  Not a public header.
 *
 * Notation: n = N, m = M (score matrix), n1 = N+1, m1 = M+1 (augmented).
 * Log potentials la = lam*u (n1) and lb = lam*v (m1) are kept in double.
 * Kernel path state: a~_i = exp(la_i - sig_a), b~_j = exp(lb_j - sig_b) with
 * sig = max (so max a~ = max b~ = 1); row sums s_i = (K' b~)_i, column sums
 * t_j = (K'^T a~)_j; then la_i = phi (log mu_i - lam c - sig_b - log s_i).
 * Log path state: fu = lam u, gv = lam v in the working type, with the
 * log-sum-exps nlr = -LSE_row, nlc = -LSE_col kept for the backward.
 * The plan is log P_ij = lam S~_ij + alpha_i + beta_j (alpha = la, beta = lb). */

#define DB_LANES 32
#define DB_FB 32
#define DB_CHUNK 32

typedef struct {
    size_t n, m, n1, m1, mpad, nchunk;
    const DB_T *S;
    const DB_T *G;
    double lam, phi, bin, c, L;
    int iters, store, kernel, wrt_log, nt;
    DB_T lamT, lamcT, lambinT, kb;
    DB_T *K;
    size_t ldk;
    double *logmu, *lognu, *la, *lb, *dn, *dm, *rs, *cs, *gbc, *gbr;
    double sig_a, sig_b, dbacc;
    unsigned char *mulrow;
    DB_T *at, *srow, *tcol, *bmat, *brot, *bfin, *hu;
    DB_T *fu, *gv, *nlr, *nlc;
    DB_T *vn, *vm, *vm2, *part, *rowtmp;
    double *tmn, *tmx;
    int *tbad;
    int err;
} DB_SFX(db_ctx);

/* Record an error status from any thread (the last writer wins; all are
 * equivalent for the caller).  O(1). */
static inline void DB_SFX(db_set_err)(DB_SFX(db_ctx) *c, int st)
{
    __atomic_store_n(&c->err, st, __ATOMIC_RELAXED);
}

/* Potential update phi*(logm - lse); 0 when phi == 0 (marginals ignored),
 * -inf when the mass is zero.  O(1). */
static inline double DB_SFX(db_pot)(double phi, double logm, double lse)
{
    if (phi == 0.0) return 0.0;
    return phi * (logm - lse);
}

/* Slot of iteration t (1-based) in a history array of stride len. */
static inline size_t DB_SFX(db_slot)(const DB_SFX(db_ctx) *c, int t)
{
    return c->store ? (size_t)(t - 1) : (size_t)((t - 1) & 1);
}

/* b~^t (t = 0..iters) in the kernel path: rows T.. of bmat when storing. */
static inline DB_T *DB_SFX(db_bptr)(DB_SFX(db_ctx) *c, int t)
{
    if (!c->store) return c->brot + (size_t)(t & 1) * c->mpad;
    if (t == c->iters) return c->bfin;
    return c->bmat + (size_t)(c->iters + t) * c->mpad;
}

/* lam v^t (t = 0..iters) in the log path. */
static inline DB_T *DB_SFX(db_gvptr)(DB_SFX(db_ctx) *c, int t)
{
    size_t k = c->store ? (size_t)t : (size_t)(t & 1);
    return c->gv + k * c->mpad;
}

/* Dot product of x and y (length m) with DB_LANES fixed partial sums and a
 * fixed pairwise reduction: the same result on any thread.  O(m). */
static inline DB_T DB_SFX(db_dot)(const DB_T *x, const DB_T *y, size_t m)
{
    DB_T acc[DB_LANES];
    size_t j = 0;
    for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++) acc[l] += x[j + l] * y[j + l];
    for (int l = 0; j + (size_t)l < m; l++) acc[l] += x[j + l] * y[j + l];
    for (int w = DB_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* Sum of x (length m), same lane scheme as db_dot.  O(m). */
static inline DB_T DB_SFX(db_sum)(const DB_T *x, size_t m)
{
    DB_T acc[DB_LANES];
    size_t j = 0;
    for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++) acc[l] += x[j + l];
    for (int l = 0; j + (size_t)l < m; l++) acc[l] += x[j + l];
    for (int w = DB_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* out[j] = sum_{i<n} w_i K_ij (rows in order i = 0..n-1) for this thread's
 * columns [j0, j1); rows are taken four at a time with the same order of
 * additions.  O(n (j1-j0)). */
static void DB_SFX(db_colmv)(const DB_T *K, size_t ldk, size_t n, const DB_T *w,
                             DB_T *out, size_t j0, size_t j1)
{
    size_t i = 0;
    for (size_t j = j0; j < j1; j++) out[j] = 0;
    for (; i + 4 <= n; i += 4) {
        const DB_T *k0 = K + i * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
        DB_T w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];
        for (size_t j = j0; j < j1; j++) {
            DB_T t = out[j];
            t += w0 * k0[j];
            t += w1 * k1[j];
            t += w2 * k2[j];
            t += w3 * k3[j];
            out[j] = t;
        }
    }
    for (; i < n; i++) {
        const DB_T *k0 = K + i * ldk;
        DB_T w0 = w[i];
        for (size_t j = j0; j < j1; j++) out[j] += w0 * k0[j];
    }
}

/* 1 if all len values are finite.  O(len). */
static int DB_SFX(db_finite)(const DB_T *x, size_t len)
{
    DB_T z = 0;
    for (size_t j = 0; j < len; j++) z += x[j] * (DB_T)0;
    return z == 0;
}

/* Validate sizes and scalars, check S / mu / nu (finite, masses >= 0, not
 * all zero) and fill log mu, log nu.  S is scanned later in parallel.
 * O(N + M). */
static int DB_SFX(db_check_marg)(const DB_T *x, size_t len, int arg, double *logx)
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
static int DB_SFX(db_alloc)(DB_SFX(db_ctx) *c)
{
    size_t n1 = c->n1, m1 = c->m1, mp = c->mpad, T = (size_t)c->iters;
    size_t H = c->store ? T : 2, nt = (size_t)c->nt;
    c->logmu = malloc(n1 * sizeof(double));
    c->lognu = malloc(m1 * sizeof(double));
    c->la = malloc(n1 * sizeof(double));
    c->lb = malloc(m1 * sizeof(double));
    c->dn = malloc(n1 * sizeof(double));
    c->dm = malloc(m1 * sizeof(double));
    c->rs = malloc(n1 * sizeof(double));
    c->cs = malloc(m1 * sizeof(double));
    c->gbc = malloc(n1 * sizeof(double));
    c->gbr = malloc(m1 * sizeof(double));
    c->mulrow = malloc(n1);
    c->at = malloc(H * n1 * sizeof(DB_T));
    c->srow = malloc(H * n1 * sizeof(DB_T));
    c->tcol = malloc(H * m1 * sizeof(DB_T));
    c->bmat = calloc(2 * T * mp, sizeof(DB_T));
    c->brot = calloc(2 * mp, sizeof(DB_T));
    c->bfin = calloc(mp, sizeof(DB_T));
    c->hu = malloc(T * n1 * sizeof(DB_T));
    c->fu = malloc(H * n1 * sizeof(DB_T));
    c->gv = calloc((c->store ? T + 1 : 2) * mp, sizeof(DB_T));
    c->nlr = malloc(H * n1 * sizeof(DB_T));
    c->nlc = malloc(H * m1 * sizeof(DB_T));
    c->vn = malloc(n1 * sizeof(DB_T));
    c->vm = calloc(mp, sizeof(DB_T));
    c->vm2 = calloc(mp, sizeof(DB_T));
    c->part = malloc(c->nchunk * mp * sizeof(DB_T) + sizeof(DB_T));
    c->rowtmp = malloc((2 * nt * mp + 2 * nt * T) * sizeof(DB_T));
    c->tmn = malloc(nt * sizeof(double));
    c->tmx = malloc(nt * sizeof(double));
    c->tbad = malloc(2 * nt * sizeof(int));
    if (!c->logmu || !c->lognu || !c->la || !c->lb || !c->dn || !c->dm || !c->rs ||
        !c->cs || !c->gbc || !c->gbr || !c->mulrow || !c->at || !c->srow || !c->tcol ||
        !c->bmat || !c->brot || !c->bfin || !c->hu || !c->fu || !c->gv || !c->nlr ||
        !c->nlc || !c->vn || !c->vm || !c->vm2 || !c->part || !c->rowtmp || !c->tmn ||
        !c->tmx || !c->tbad)
        return GM_ERR_NOMEM;
    return GM_OK;
}

/* Free every buffer of the context.  O(1). */
static void DB_SFX(db_free)(DB_SFX(db_ctx) *c)
{
    void *p[] = {c->logmu, c->lognu, c->la, c->lb, c->dn, c->dm, c->rs, c->cs, c->gbc,
                 c->gbr, c->mulrow, c->at, c->srow, c->tcol, c->bmat, c->brot, c->bfin,
                 c->hu, c->fu, c->gv, c->nlr, c->nlc, c->vn, c->vm, c->vm2, c->part,
                 c->rowtmp, c->tmn, c->tmx, c->tbad};
    for (size_t k = 0; k < sizeof p / sizeof p[0]; k++) free(p[k]);
}

/* Set up the context: scalar checks, marginal checks, allocation.  O(N+M). */
static int DB_SFX(db_setup)(DB_SFX(db_ctx) *c, const DB_T *S, const DB_T *mu,
                            const DB_T *nu, size_t n, size_t m, double bin, double reg,
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
    if ((st = DB_SFX(db_alloc)(c)) != GM_OK) return st;
    if ((st = DB_SFX(db_check_marg)(mu, c->n1, 1, c->logmu)) != GM_OK) return st;
    if ((st = DB_SFX(db_check_marg)(nu, c->m1, 2, c->lognu)) != GM_OK) return st;
    return GM_OK;
}

/* Parallel part: min / max of S and its finiteness, then the choice of path
 * (kernel when lam * range(S~) / 2 <= DB_LMAX and allowed).  O(NM). */
static void DB_SFX(db_range)(DB_SFX(db_ctx) *c, int method)
{
    int tid = db_tid();
    double mn = INFINITY, mx = -INFINITY;
    int bad = 0;
#pragma omp for schedule(static)
    for (size_t i = 0; i < c->n; i++) {
        const DB_T *s = c->S + i * c->m;
        DB_T lo = s[0], hi = s[0], z = 0;
        for (size_t j = 0; j < c->m; j++) {
            DB_T v = s[j];
            z += v * (DB_T)0;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (z != 0) bad = 1;
        if ((double)lo < mn) mn = (double)lo;
        if ((double)hi > mx) mx = (double)hi;
    }
    c->tmn[tid] = mn;
    c->tmx[tid] = mx;
    c->tbad[2 * tid] = bad;
    bad = 0;
    if (c->G != NULL) {
#pragma omp for schedule(static)
        for (size_t i = 0; i < c->n1; i++)
            if (!DB_SFX(db_finite)(c->G + i * c->m1, c->m1)) bad = 1;
    }
    c->tbad[2 * tid + 1] = bad;
#pragma omp barrier
#pragma omp single
    {
        for (int t = 0; t < db_nth(); t++) {
            if (c->tbad[2 * t + 1] && c->err == GM_OK) c->err = GM_ERR_NONFINITE_ARG(3);
            if (c->tbad[2 * t]) c->err = GM_ERR_NONFINITE_ARG(0);
            if (c->tmn[t] < mn) mn = c->tmn[t];
            if (c->tmx[t] > mx) mx = c->tmx[t];
        }
        if (c->bin < mn) mn = c->bin;
        if (c->bin > mx) mx = c->bin;
        c->c = 0.5 * (mn + mx);
        c->L = 0.5 * c->lam * (mx - mn);
        c->kernel = method != 2 && c->L <= DB_LMAX;
        if (method == 1 && !c->kernel && c->err == GM_OK) c->err = GM_ERR_NUMERIC;
        c->lamT = (DB_T)c->lam;
        c->lamcT = (DB_T)(c->lam * c->c);
        c->lambinT = (DB_T)(c->lam * c->bin);
        c->kb = (DB_T)exp(c->lam * (c->bin - c->c));
        if (c->kernel) {
            DB_T *b0 = DB_SFX(db_bptr)(c, 0);
            for (size_t j = 0; j < c->m1; j++) b0[j] = 1;
        }
    }
}

/* la_i = pot(log mu_i, lam c + shift + log s_i) for all n1 rows, then a~ =
 * exp(la - max la) into `a`.  Returns the max.  O(n1), vectorized. */
static double DB_SFX(db_kupdate)(const DB_SFX(db_ctx) *c, const DB_T *s, const double *logm,
                                 size_t len, double shift, double *l, double *tmp, DB_T *a)
{
    double off = c->lam * c->c + shift, mx = -INFINITY;
    for (size_t i = 0; i < len; i++) tmp[i] = (double)s[i];
    db_log_array(tmp, l, len);
    for (size_t i = 0; i < len; i++) l[i] = DB_SFX(db_pot)(c->phi, logm[i], off + l[i]);
    for (size_t i = 0; i < len; i++) mx = l[i] > mx ? l[i] : mx;
    for (size_t i = 0; i < len; i++) a[i] = (DB_T)gm_exp_f64(l[i] - mx);
    return mx;
}

/* Kernel-domain forward (inside the parallel region): K' and the first row
 * sums in one pass, then n_iter row/column matrix-vector products with
 * O(N+M) double work between them.  O(n_iter N M). */
static void DB_SFX(db_kernel_forward)(DB_SFX(db_ctx) *c)
{
    size_t n = c->n, m = c->m, ldk = c->ldk;
    DB_T kb = c->kb, lamT = c->lamT, lamcT = c->lamcT;
    for (int t = 1; t <= c->iters; t++) {
        DB_T *s = c->srow + DB_SFX(db_slot)(c, t) * c->n1;
        DB_T *a = c->at + DB_SFX(db_slot)(c, t) * c->n1;
        DB_T *tc = c->tcol + DB_SFX(db_slot)(c, t) * c->m1;
        DB_T *bp = DB_SFX(db_bptr)(c, t - 1);
        DB_T *bn = DB_SFX(db_bptr)(c, t);
        size_t j0, j1;
        if (t == 1) {
#pragma omp for schedule(static)
            for (size_t i = 0; i < n; i++) {
                const DB_T *si = c->S + i * m;
                DB_T *ki = c->K + i * ldk;
                for (size_t j = 0; j < m; j++) ki[j] = DB_EXP(lamT * si[j] - lamcT);
                s[i] = DB_SFX(db_sum)(ki, m) + kb;
            }
        } else {
#pragma omp for schedule(static)
            for (size_t i = 0; i < n; i++)
                s[i] = DB_SFX(db_dot)(c->K + i * ldk, bp, m) + kb * bp[m];
        }
#pragma omp single
        {
            s[n] = kb * DB_SFX(db_sum)(bp, c->m1);
            c->sig_a = DB_SFX(db_kupdate)(c, s, c->logmu, c->n1, c->sig_b, c->la, c->dn, a);
        }
        db_col_range(m, &j0, &j1);
        DB_SFX(db_colmv)(c->K, ldk, n, a, tc, j0, j1);
        for (size_t j = j0; j < j1; j++) tc[j] += a[n] * kb;
#pragma omp barrier
#pragma omp single
        {
            tc[m] = kb * DB_SFX(db_sum)(a, c->n1);
            c->sig_b = DB_SFX(db_kupdate)(c, tc, c->lognu, c->m1, c->sig_a, c->lb, c->dm, bn);
        }
    }
}

/* Log-sum-exp of lam*S_row + g (length m) plus the bin term xb, in double.
 * O(m) exponentials. */
static double DB_SFX(db_row_lse)(const DB_SFX(db_ctx) *c, const DB_T *srow, const DB_T *g,
                                 DB_T xb)
{
    size_t m = c->m;
    DB_T mx = xb, acc[DB_LANES];
    for (size_t j = 0; j < m; j++) {
        DB_T x = c->lamT * srow[j] + g[j];
        mx = x > mx ? x : mx;
    }
    for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
    size_t j = 0;
    for (; j + DB_LANES <= m; j += DB_LANES)
        for (int l = 0; l < DB_LANES; l++)
            acc[l] += DB_EXP(c->lamT * srow[j + l] + g[j + l] - mx);
    for (int l = 0; j + (size_t)l < m; l++) acc[l] += DB_EXP(c->lamT * srow[j + l] + g[j + l] - mx);
    for (int w = DB_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return (double)mx + log((double)acc[0] + exp((double)xb - (double)mx));
}

/* Log-domain forward (inside the parallel region): literal LSE sweeps, row
 * LSEs by one thread per row, column LSEs by column blocks (max pass, then
 * exponential-sum pass).  O(n_iter N M) exponentials. */
static void DB_SFX(db_log_forward)(DB_SFX(db_ctx) *c)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1;
    for (int t = 1; t <= c->iters; t++) {
        DB_T *fu = c->fu + DB_SFX(db_slot)(c, t) * n1;
        DB_T *nlr = c->nlr + DB_SFX(db_slot)(c, t) * n1;
        DB_T *nlc = c->nlc + DB_SFX(db_slot)(c, t) * m1;
        DB_T *gp = DB_SFX(db_gvptr)(c, t - 1), *gn = DB_SFX(db_gvptr)(c, t);
        DB_T *mx = c->vm, *sm = c->vm2;
        size_t j0, j1;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            double lse = DB_SFX(db_row_lse)(c, c->S + i * m, gp, c->lambinT + gp[m]);
            c->la[i] = DB_SFX(db_pot)(c->phi, c->logmu[i], lse);
            fu[i] = (DB_T)c->la[i];
            nlr[i] = (DB_T)(-lse);
        }
#pragma omp single
        {
            double x0 = c->lam * c->bin, mxd = -INFINITY, sd = 0.0;
            for (size_t j = 0; j < m1; j++) mxd = (double)gp[j] > mxd ? (double)gp[j] : mxd;
            for (size_t j = 0; j < m1; j++) sd += exp((double)gp[j] - mxd);
            double lse = x0 + mxd + log(sd);
            c->la[n] = DB_SFX(db_pot)(c->phi, c->logmu[n], lse);
            fu[n] = (DB_T)c->la[n];
            nlr[n] = (DB_T)(-lse);
        }
        db_col_range(m, &j0, &j1);
        for (size_t j = j0; j < j1; j++) mx[j] = c->lambinT + fu[n];
        for (size_t i = 0; i < n; i++) {
            const DB_T *si = c->S + i * m;
            DB_T f = fu[i];
            for (size_t j = j0; j < j1; j++) {
                DB_T x = c->lamT * si[j] + f;
                mx[j] = x > mx[j] ? x : mx[j];
            }
        }
        for (size_t j = j0; j < j1; j++) sm[j] = 0;
        for (size_t i = 0; i < n; i++) {
            const DB_T *si = c->S + i * m;
            DB_T f = fu[i];
            for (size_t j = j0; j < j1; j++) sm[j] += DB_EXP(c->lamT * si[j] + f - mx[j]);
        }
        for (size_t j = j0; j < j1; j++) {
            double lse = (double)mx[j] +
                         log((double)sm[j] + exp((double)(c->lambinT + fu[n]) - (double)mx[j]));
            c->lb[j] = DB_SFX(db_pot)(c->phi, c->lognu[j], lse);
            gn[j] = (DB_T)c->lb[j];
            nlc[j] = (DB_T)(-lse);
        }
#pragma omp barrier
#pragma omp single
        {
            double x0 = c->lam * c->bin, mxd = -INFINITY, sd = 0.0;
            for (size_t i = 0; i < n1; i++) mxd = (double)fu[i] > mxd ? (double)fu[i] : mxd;
            for (size_t i = 0; i < n1; i++) sd += exp((double)fu[i] - mxd);
            double lse = x0 + mxd + log(sd);
            c->lb[m] = DB_SFX(db_pot)(c->phi, c->lognu[m], lse);
            gn[m] = (DB_T)c->lb[m];
            nlc[m] = (DB_T)(-lse);
        }
    }
}

/* After the forward: choose for every row how its plan entries are formed
 * (kernel path: r_i K'_ij b~_j when that keeps every intermediate normal,
 * else exp(lam S_ij + alpha_i + beta_j)), and fill vm with beta in the
 * working type.  Single thread, O(N+M). */
static void DB_SFX(db_plan_prepare)(DB_SFX(db_ctx) *c)
{
    for (size_t i = 0; i < c->n1; i++) {
        double rho = c->la[i] + c->lam * c->c + c->sig_b;
        int ok = c->la[i] == -INFINITY ||
                 (rho >= DB_LOGMIN + c->L + 2.0 && rho + c->L <= DB_LOGMAX - 2.0);
        c->mulrow[i] = (unsigned char)(c->kernel && ok);
        c->dn[i] = rho;
    }
    for (size_t j = 0; j < c->m1; j++) c->vm[j] = (DB_T)c->lb[j];
}

/* Row i < N of the plan (columns j < M) into out (may alias the K' row when
 * ldk rows are the plan rows).  Sets c->err on overflow.  O(M). */
static void DB_SFX(db_plan_row)(DB_SFX(db_ctx) *c, size_t i, DB_T *out)
{
    size_t m = c->m;
    if (c->mulrow[i]) {
        const DB_T *ki = c->K + i * c->ldk, *b = c->bfin;
        DB_T r = (DB_T)exp(c->dn[i]);
        if (c->la[i] == -INFINITY) r = 0;
        for (size_t j = 0; j < m; j++) out[j] = r * ki[j] * b[j];
    } else {
        const DB_T *si = c->S + i * m, *beta = c->vm;
        DB_T a = (DB_T)c->la[i], mx = -(DB_T)INFINITY;
        for (size_t j = 0; j < m; j++) {
            DB_T x = c->lamT * si[j] + a + beta[j];
            mx = x > mx ? x : mx;
            out[j] = DB_EXP(x);
        }
        if ((double)mx > DB_LOGMAX) DB_SFX(db_set_err)(c, GM_ERR_NUMERIC);
    }
}

/* Plan entry in a bin row or column, from log P = lam bin + alpha + beta in
 * double.  Sets c->err on overflow.  O(1). */
static DB_T DB_SFX(db_plan_bin)(DB_SFX(db_ctx) *c, size_t i, size_t j)
{
    double x = c->lam * c->bin + c->la[i] + c->lb[j];
    if (x > DB_LOGMAX) DB_SFX(db_set_err)(c, GM_ERR_NUMERIC);
    return (DB_T)exp(x);
}

/* Forward driver (inside the parallel region, after db_range).  Writes the
 * plan into P ((N+1) x (M+1)) unless P is NULL (vjp).  O(n_iter N M). */
static void DB_SFX(db_forward)(DB_SFX(db_ctx) *c, DB_T *P)
{
    if (c->err != GM_OK) return;
    if (c->kernel)
        DB_SFX(db_kernel_forward)(c);
    else
        DB_SFX(db_log_forward)(c);
#pragma omp single
    {
        if (!c->kernel) c->sig_b = 0.0;
        DB_SFX(db_plan_prepare)(c);
        if (c->kernel && c->store == 0) memcpy(c->bfin, DB_SFX(db_bptr)(c, c->iters),
                                               c->mpad * sizeof(DB_T));
    }
    if (P == NULL) return;
    {
        size_t n = c->n, m = c->m, m1 = c->m1;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            DB_SFX(db_plan_row)(c, i, P + i * m1);
            P[i * m1 + m] = DB_SFX(db_plan_bin)(c, i, m);
        }
#pragma omp single
        for (size_t j = 0; j < m1; j++) P[n * m1 + j] = DB_SFX(db_plan_bin)(c, n, j);
    }
}

int DB_SFX(gm_dustbin_sinkhorn)(const DB_T *S, const DB_T *mu, const DB_T *nu, size_t n,
                                size_t m, double bin_score, double reg, double reg_m,
                                int n_iter, int method, DB_T *P, int *method_used)
{
    DB_SFX(db_ctx) c;
    int st;
    if (P == NULL || method < 0 || method > 2) return GM_ERR_INVALID;
    st = DB_SFX(db_setup)(&c, S, mu, nu, n, m, bin_score, reg, reg_m, n_iter, 0);
    if (st == GM_OK) {
        c.K = P;
        c.ldk = m + 1;
#pragma omp parallel num_threads(c.nt)
        {
            DB_SFX(db_range)(&c, method);
            DB_SFX(db_forward)(&c, P);
        }
        st = c.err;
        if (method_used) *method_used = c.kernel ? 1 : 2;
    }
    DB_SFX(db_free)(&c);
    return st;
}

/* ---- backward ------------------------------------------------------------ */

/* g_ij = G_ij P_ij (plan) or G_ij (log plan) for row i < N into out (j < M);
 * the bin-column entry is returned.  tmp holds the P row.  O(M). */
static double DB_SFX(db_g_row)(DB_SFX(db_ctx) *c, size_t i, DB_T *out, DB_T *tmp)
{
    size_t m = c->m, m1 = c->m1;
    const DB_T *gi = c->G + i * m1;
    if (c->wrt_log) {
        if (out != gi) memcpy(out, gi, m * sizeof(DB_T));
        return (double)gi[m];
    }
    DB_SFX(db_plan_row)(c, i, tmp);
    for (size_t j = 0; j < m; j++) out[j] = gi[j] * tmp[j];
    return (double)gi[m] * (double)DB_SFX(db_plan_bin)(c, i, m);
}

/* g pass: row sums rs (n1) and column sums cs (m1) of g over the augmented
 * matrix, with column sums built from fixed 32-row chunk partials so the
 * result does not depend on the thread count.  When `into` is not NULL,
 * lam*g is written there (row stride M).  O(NM). */
static void DB_SFX(db_gpass)(DB_SFX(db_ctx) *c, DB_T *into)
{
    size_t n = c->n, m = c->m, m1 = c->m1, mp = c->mpad;
    DB_T *row = c->rowtmp + 2 * (size_t)db_tid() * mp;
    DB_T *gbuf = row + mp;
    {
#pragma omp for schedule(static)
        for (size_t ch = 0; ch < c->nchunk; ch++) {
            DB_T *pp = c->part + ch * mp;
            size_t i0 = ch * DB_CHUNK, i1 = i0 + DB_CHUNK < n ? i0 + DB_CHUNK : n;
            for (size_t j = 0; j < m; j++) pp[j] = 0;
            for (size_t i = i0; i < i1; i++) {
                c->gbc[i] = DB_SFX(db_g_row)(c, i, gbuf, row);
                c->rs[i] = (double)DB_SFX(db_sum)(gbuf, m) + c->gbc[i];
                for (size_t j = 0; j < m; j++) pp[j] += gbuf[j];
                if (into) {
                    DB_T *o = into + i * m;
                    for (size_t j = 0; j < m; j++) o[j] = c->lamT * gbuf[j];
                }
            }
        }
    }
    if (c->err != GM_OK) return;
    {
        size_t j0, j1;
        DB_T *acc = c->vm2;
        db_col_range(m, &j0, &j1);
        for (size_t j = j0; j < j1; j++) acc[j] = 0;
        for (size_t ch = 0; ch < c->nchunk; ch++) {
            const DB_T *pp = c->part + ch * mp;
            for (size_t j = j0; j < j1; j++) acc[j] += pp[j];
        }
        for (size_t j = j0; j < j1; j++) c->cs[j] = (double)acc[j];
    }
#pragma omp barrier
#pragma omp single
    {
        const DB_T *gn = c->G + n * m1;
        double rn = 0.0, cm = 0.0;
        for (size_t j = 0; j < m1; j++) {
            double g = (double)gn[j];
            if (!c->wrt_log) g *= (double)DB_SFX(db_plan_bin)(c, n, j);
            c->gbr[j] = g;
            rn += g;
            if (j < m) c->cs[j] += g;
        }
        c->rs[n] = rn;
        for (size_t i = 0; i < n; i++) cm += c->gbc[i];
        c->cs[m] = cm + c->gbr[m];
        c->gbc[n] = c->gbr[m];
    }
}

/* Kernel-domain backward (inside the parallel region, after db_forward with
 * history): reverse sweep of n_iter row and column matrix-vector products,
 * then one fused pass dS_ij = lam g_ij - phi K'_ij sum_t (a~^t_i hv^t_j +
 * hu^t_i b~^{t-1}_j), written over K' (= dS).  O(n_iter N M). */
static void DB_SFX(db_kernel_backward)(DB_SFX(db_ctx) *c, double *dbin)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1, mp = c->mpad;
    int T = c->iters;
    DB_T kb = c->kb;
    DB_SFX(db_gpass)(c, NULL);
    if (c->err != GM_OK) return;
#pragma omp single
    for (size_t j = 0; j < m1; j++) c->dm[j] = c->lam * c->cs[j];
    for (int t = T; t >= 1; t--) {
        DB_T *hv = c->bmat + (size_t)(t - 1) * mp;
        DB_T *a = c->at + (size_t)(t - 1) * n1, *s = c->srow + (size_t)(t - 1) * n1;
        DB_T *tc = c->tcol + (size_t)(t - 1) * m1, *hu = c->hu + (size_t)(t - 1) * n1;
        DB_T *bp = DB_SFX(db_bptr)(c, t - 1);
        DB_T *w = c->vn, *z = c->vm;
#pragma omp single
        for (size_t j = 0; j < m1; j++) hv[j] = (DB_T)(c->dm[j] / (double)tc[j]);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) w[i] = DB_SFX(db_dot)(c->K + i * c->ldk, hv, m) + kb * hv[m];
#pragma omp single
        {
            w[n] = kb * DB_SFX(db_sum)(hv, m1);
            for (size_t i = 0; i < n1; i++) {
                double g = (t == T ? c->lam * c->rs[i] : 0.0) - c->phi * (double)a[i] * (double)w[i];
                hu[i] = (DB_T)(g / (double)s[i]);
            }
        }
        if (t > 1) {
            size_t j0, j1;
            db_col_range(m, &j0, &j1);
            DB_SFX(db_colmv)(c->K, c->ldk, n, hu, z, j0, j1);
            for (size_t j = j0; j < j1; j++) z[j] += hu[n] * kb;
#pragma omp barrier
#pragma omp single
            {
                z[m] = kb * DB_SFX(db_sum)(hu, n1);
                for (size_t j = 0; j < m1; j++) c->dm[j] = -c->phi * (double)bp[j] * (double)z[j];
            }
        }
    }
    {
        DB_T *tmp = c->rowtmp + 2 * (size_t)db_tid() * mp;
        DB_T *A = c->rowtmp + 2 * (size_t)c->nt * mp + (size_t)db_tid() * 2 * (size_t)T;
        int twoT = 2 * T;
        DB_T phiT = (DB_T)c->phi;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            DB_T *ki = c->K + i * c->ldk;
            const DB_T *gi = c->G + i * m1;
            if (!c->wrt_log) {
                DB_SFX(db_plan_row)(c, i, tmp);
                for (size_t j = 0; j < m; j++) tmp[j] *= gi[j];
            } else {
                memcpy(tmp, gi, m * sizeof(DB_T));
            }
            for (int k = 0; k < T; k++) {
                A[k] = c->at[(size_t)k * n1 + i];
                A[T + k] = c->hu[(size_t)k * n1 + i];
            }
            for (size_t j0 = 0; j0 < m; j0 += DB_FB) {
                DB_T acc[DB_FB];
                size_t jn = m - j0 < DB_FB ? m - j0 : DB_FB;
                for (int l = 0; l < DB_FB; l++) acc[l] = 0;
                for (int k = 0; k < twoT; k++) {
                    const DB_T *b = c->bmat + (size_t)k * mp + j0;
                    DB_T ak = A[k];
                    for (int l = 0; l < DB_FB; l++) acc[l] += ak * b[l];
                }
                for (size_t l = 0; l < jn; l++)
                    ki[j0 + l] = c->lamT * tmp[j0 + l] - phiT * ki[j0 + l] * acc[l];
            }
        }
    }
#pragma omp single
    {
        double d = 0.0;
        for (size_t i = 0; i < n1; i++) {
            /* entries (i, M) for i < N, then the whole bin row (N, j) */
            size_t jlo = i < n ? m : 0;
            for (size_t j = jlo; j < m1; j++) {
                double acc = 0.0;
                for (int k = 0; k < T; k++)
                    acc += (double)c->at[(size_t)k * n1 + i] * (double)c->bmat[(size_t)k * mp + j] +
                           (double)c->hu[(size_t)k * n1 + i] *
                               (double)c->bmat[(size_t)(T + k) * mp + j];
                double g = i < n ? c->gbc[i] : c->gbr[j];
                d += c->lam * g - c->phi * (double)kb * acc;
            }
        }
        if (dbin) *dbin = d;
    }
}

/* Log-domain backward (inside the parallel region, after db_forward with
 * history): for t = n_iter..1 a row pass (Q^t weights, exponentials) and a
 * column pass (R^t weights) that also accumulate -phi * (terms) into dS,
 * which the g pass initialized to lam g.  O(n_iter N M) exponentials. */
static void DB_SFX(db_log_backward)(DB_SFX(db_ctx) *c, DB_T *dS, double *dbin)
{
    size_t n = c->n, m = c->m, n1 = c->n1, m1 = c->m1;
    int T = c->iters;
    DB_T phiT = (DB_T)c->phi;
    DB_SFX(db_gpass)(c, dS);
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
        const DB_T *fu = c->fu + (size_t)(t - 1) * n1, *nlr = c->nlr + (size_t)(t - 1) * n1;
        const DB_T *nlc = c->nlc + (size_t)(t - 1) * m1, *gp = DB_SFX(db_gvptr)(c, t - 1);
        DB_T *gvb = c->vm, *gub = c->vn;
        size_t j0, j1;
#pragma omp single
        for (size_t j = 0; j < m1; j++) gvb[j] = (DB_T)c->dm[j];
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            const DB_T *si = c->S + i * m;
            DB_T *di = dS + i * m, f = fu[i], acc[DB_LANES];
            for (int l = 0; l < DB_LANES; l++) acc[l] = 0;
            size_t j = 0;
            for (; j + DB_LANES <= m; j += DB_LANES)
                for (int l = 0; l < DB_LANES; l++) {
                    DB_T q = DB_EXP(c->lamT * si[j + l] + f + nlc[j + l]) * gvb[j + l];
                    acc[l] += q;
                    di[j + l] -= phiT * q;
                }
            for (int l = 0; j + (size_t)l < m; l++) {
                DB_T q = DB_EXP(c->lamT * si[j + l] + f + nlc[j + l]) * gvb[j + l];
                acc[l] += q;
                di[j + l] -= phiT * q;
            }
            for (int w = DB_LANES / 2; w > 0; w /= 2)
                for (int l = 0; l < w; l++) acc[l] += acc[l + w];
            c->dn[i] = (double)acc[0] +
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
                gub[i] = (DB_T)g;
            }
        }
        db_col_range(m, &j0, &j1);
        {
            DB_T *z = c->vm2;
            DB_T rb = (DB_T)(c->lam * c->bin), gn = gub[n], ln = nlr[n];
            for (size_t j = j0; j < j1; j++) z[j] = DB_EXP(rb + gp[j] + ln) * gn;
            for (size_t i = 0; i < n; i++) {
                const DB_T *si = c->S + i * m;
                DB_T *di = dS + i * m, g = gub[i], lr = nlr[i];
                for (size_t j = j0; j < j1; j++) {
                    DB_T r = DB_EXP(c->lamT * si[j] + gp[j] + lr) * g;
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

int DB_SFX(gm_dustbin_sinkhorn_vjp)(const DB_T *S, const DB_T *mu, const DB_T *nu,
                                    const DB_T *G, size_t n, size_t m, double bin_score,
                                    double reg, double reg_m, int n_iter, int method,
                                    int wrt_log, DB_T *dS, double *dbin, int *method_used)
{
    DB_SFX(db_ctx) c;
    int st;
    if (dS == NULL || G == NULL || method < 0 || method > 2) return GM_ERR_INVALID;
    st = DB_SFX(db_setup)(&c, S, mu, nu, n, m, bin_score, reg, reg_m, n_iter, 1);
    if (st == GM_OK) {
        c.G = G;
        c.wrt_log = wrt_log != 0;
        c.K = dS;
        c.ldk = m;
#pragma omp parallel num_threads(c.nt)
        {
            DB_SFX(db_range)(&c, method);
            DB_SFX(db_forward)(&c, NULL);
            if (c.err == GM_OK) {
                if (c.kernel)
                    DB_SFX(db_kernel_backward)(&c, dbin);
                else
                    DB_SFX(db_log_backward)(&c, dS, dbin);
            }
        }
        st = c.err;
        if (method_used) *method_used = c.kernel ? 1 : 2;
    }
    DB_SFX(db_free)(&c);
    return st;
}

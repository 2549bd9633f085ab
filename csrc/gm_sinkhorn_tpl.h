/* gm_sinkhorn_tpl.h -- type-generic body of gm_sinkhorn.c,
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header.
 * GM_SK_TAU is the absorption threshold of the kernel-domain scalings.
 *
 * Notation (see gm_sinkhorn.c for the derivation): the plan is
 *   P_ij = exp((f_i + g_j - C_ij) / reg)
 * with dual potentials f, g in cost units.  In the kernel (scaling) domain
 * the plan is kept as P_ij = u_i K_ij v_j with K_ij = exp((f0_i + g0_j -
 * C_ij)/reg) for snapshot potentials f0, g0, i.e. f = f0 + reg log u. */

#define GM_SK_TAU (GM_IS_F32 ? 1e4 : 1e8)

/* One problem's state and scratch buffers. */
typedef struct {
    size_t n, m, nblk;
    int par;                 /* threads inside the sweeps (1: serial) */
    double reg, ireg, phia, phib, tau;
    const GM_T *C, *a, *b;
    GM_T *P;                    /* output plan; doubles as the kernel K */
    GM_T *f, *g;                /* potentials (log mode) */
    GM_T *f0, *g0;              /* snapshot potentials of K (kernel mode) */
    GM_T *u, *v, *uold;         /* scalings (kernel mode) */
    GM_T *part;                 /* nblk x m column partial sums */
    GM_T *ebuf;                 /* one row buffer per thread */
    double *la, *lb;         /* log a, log b */
    unsigned char *deada, *deadb; /* zero-mass rows / columns (dropped) */
} GM_FN(sk_ws);

/* Free a workspace's buffers. O(1). */
static void GM_FN(sk_free)(GM_FN(sk_ws) *w)
{
    free(w->f0); free(w->g0); free(w->u); free(w->v); free(w->uold);
    free(w->part); free(w->ebuf); free(w->la); free(w->lb);
    free(w->deada); free(w->deadb);
}

/* Allocate a workspace for n x m problems with nthr row buffers.
 * Returns GM_OK or GM_ERR_NOMEM. O(n + m + nblk*m). */
static int GM_FN(sk_alloc)(GM_FN(sk_ws) *w, size_t n, size_t m, int nthr)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->m = m;
    w->nblk = (n + GM_SK_RB - 1) / GM_SK_RB;
    w->f0 = malloc(n * sizeof(GM_T));
    w->g0 = malloc(m * sizeof(GM_T));
    w->u = malloc(n * sizeof(GM_T));
    w->v = malloc(m * sizeof(GM_T));
    w->uold = malloc(n * sizeof(GM_T));
    w->part = malloc(w->nblk * m * sizeof(GM_T));
    w->ebuf = malloc((size_t)nthr * m * sizeof(GM_T));
    w->la = malloc(n * sizeof(double));
    w->lb = malloc(m * sizeof(double));
    w->deada = malloc(n);
    w->deadb = malloc(m);
    if (!w->f0 || !w->g0 || !w->u || !w->v || !w->uold || !w->part || !w->ebuf ||
        !w->la || !w->lb || !w->deada || !w->deadb) {
        GM_FN(sk_free)(w);
        memset(w, 0, sizeof *w);
        return GM_ERR_NOMEM;
    }
    return GM_OK;
}

/* Validate a mass vector x (length n, argument index k): finite,
 * non-negative, not all zero.  O(n). */
static int GM_FN(sk_check_mass)(const GM_T *x, size_t n, int k, double *sum)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return GM_ERR_NONFINITE_ARG(k);
        if (x[i] < 0) return GM_ERR_NEGATIVE_ARG(k);
        s += (double)x[i];
    }
    if (!(s > 0.0)) return GM_ERR_ZEROMASS_ARG(k);
    *sum = s;
    return GM_OK;
}

/* Row pass in the log domain: for every row i (given g), update
 * f_i = phia (reg log a_i - reg LSE_j((g_j - C_ij)/reg)) and accumulate the
 * new plan's entries P_ij = exp((f_i + g_j - C_ij)/reg) into the row block's
 * column partial sums; with store_k also write them to K (= P buffer).
 * One exp per entry, O(n m). */
static void GM_FN(sk_log_rows)(GM_FN(sk_ws) *w, int store_k)
{
    const size_t n = w->n, m = w->m, nblk = w->nblk;
    const GM_T ireg = (GM_T)w->ireg;
    const double reg = w->reg, phia = w->phia;
#pragma omp parallel for schedule(static) num_threads(w->par)
    for (size_t blk = 0; blk < nblk; blk++) {
        GM_T *part = w->part + blk * m;
        GM_T *e = w->ebuf + (size_t)gm_thread_id() * m;
        const GM_T *g = w->g;
        size_t i1 = (blk + 1) * GM_SK_RB < n ? (blk + 1) * GM_SK_RB : n;
        memset(part, 0, m * sizeof(GM_T));
        for (size_t i = blk * GM_SK_RB; i < i1; i++) {
            const GM_T *Ci = w->C + i * m;
            GM_T *Ki = w->P + i * m;
            if (w->deada[i]) {
                w->f[i] = (GM_T)-INFINITY;
                if (store_k) memset(Ki, 0, m * sizeof(GM_T));
                continue;
            }
            GM_T mx = (GM_T)-INFINITY;
#pragma omp simd reduction(max : mx)
            for (size_t j = 0; j < m; j++) {
                GM_T x = g[j] - Ci[j];
                e[j] = x;
                mx = x > mx ? x : mx;
            }
            GM_T s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t j = 0; j < m; j++) {
                GM_T y = GM_EXP((e[j] - mx) * ireg);
                e[j] = y;
                s += y;
            }
            /* f_i / reg and log of the row weight w_i = exp(f_i/reg + mx/reg) */
            double ls = log((double)s), mxr = (double)mx * w->ireg, lw, fr;
            if (phia > 0.0) {
                fr = phia * (w->la[i] - mxr - ls);
                lw = phia * (w->la[i] - ls) + (1.0 - phia) * mxr;
            } else {
                fr = 0.0;
                lw = mxr;
            }
            w->f[i] = (GM_T)(reg * fr);
            GM_T wi = (GM_T)exp(lw);
            if (store_k) {
                for (size_t j = 0; j < m; j++) {
                    GM_T p = wi * e[j];
                    Ki[j] = p;
                    part[j] += p;
                }
            } else {
                for (size_t j = 0; j < m; j++) part[j] += wi * e[j];
            }
        }
    }
}

/* Sum the column partials of column chunk c, columns [c CB, c CB + len),
 * over the row blocks in block order, into t (double); returns len.
 * O(nblk len). */
static size_t GM_FN(sk_colsum)(const GM_FN(sk_ws) *w, size_t c, double *t)
{
    size_t j0 = c * GM_SK_CB, len = j0 + GM_SK_CB < w->m ? GM_SK_CB : w->m - j0;
    for (size_t jj = 0; jj < len; jj++) t[jj] = 0.0;
    for (size_t blk = 0; blk < w->nblk; blk++) {
        const GM_T *p = w->part + blk * w->m + j0;
        for (size_t jj = 0; jj < len; jj++) t[jj] += (double)p[jj];
    }
    return len;
}

/* Exact column update in the log domain for the columns flagged in `need`
 * (their partial sums underflowed): g_j = phib (reg log b_j -
 * reg LSE_i((f_i - C_ij)/reg)), two passes over those columns. O(n m) worst. */
static void GM_FN(sk_log_cols_exact)(GM_FN(sk_ws) *w, const unsigned char *need)
{
    const size_t n = w->n, m = w->m, nch = (m + GM_SK_CB - 1) / GM_SK_CB;
#pragma omp parallel for schedule(static) num_threads(w->par)
    for (size_t c = 0; c < nch; c++) {
        size_t j0 = c * GM_SK_CB, len = j0 + GM_SK_CB < m ? GM_SK_CB : m - j0;
        int any = 0;
        for (size_t jj = 0; jj < len; jj++) any |= need[j0 + jj];
        if (!any) continue;
        double mx[GM_SK_CB], s[GM_SK_CB];
        for (size_t jj = 0; jj < len; jj++) { mx[jj] = -INFINITY; s[jj] = 0.0; }
        for (size_t i = 0; i < n; i++) {
            if (w->deada[i]) continue;
            const GM_T *Ci = w->C + i * m + j0;
            for (size_t jj = 0; jj < len; jj++) {
                double x = (double)w->f[i] - (double)Ci[jj];
                mx[jj] = x > mx[jj] ? x : mx[jj];
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (w->deada[i]) continue;
            const GM_T *Ci = w->C + i * m + j0;
            for (size_t jj = 0; jj < len; jj++)
                s[jj] += exp(((double)w->f[i] - (double)Ci[jj] - mx[jj]) * w->ireg);
        }
        for (size_t jj = 0; jj < len; jj++) {
            size_t j = j0 + jj;
            if (!need[j]) continue;
            double lse = mx[jj] * w->ireg + log(s[jj]);
            w->g[j] = (GM_T)(w->phib > 0.0 ? w->phib * w->reg * (w->lb[j] - lse) : 0.0);
        }
    }
}

/* Column pass in the log domain (after sk_log_rows): t_j = column sums of
 * the current plan; g_j += reg d_j with d_j = phib (log b_j - log t_j) -
 * (1 - phib) g_j / reg.  Returns the max over columns of the change of the
 * column marginal, t_j |1 - exp(d_j)| (= |t_j - b_j| when balanced); +inf
 * when some column underflowed (then updated exactly), NaN on overflow.
 * O(nblk m) plus the exact fallback. */
static double GM_FN(sk_log_cols)(GM_FN(sk_ws) *w, unsigned char *need)
{
    const size_t m = w->m, nch = (m + GM_SK_CB - 1) / GM_SK_CB;
    double err = 0.0;
    int under = 0, bad = 0;
/* serial: a parallel region here costs more than the O(nblk m) work */
    for (size_t c = 0; c < nch; c++) {
        double t[GM_SK_CB];
        size_t j0 = c * GM_SK_CB, len = GM_FN(sk_colsum)(w, c, t);
        for (size_t jj = 0; jj < len; jj++) {
            size_t j = j0 + jj;
            need[j] = 0;
            if (w->deadb[j]) continue;
            if (!isfinite(t[jj])) { bad = 1; continue; }
            if (!(t[jj] > 0.0)) { need[j] = 1; under = 1; continue; }
            double gr = (double)w->g[j] * w->ireg, d;
            if (w->phib > 0.0)
                d = w->phib * (w->lb[j] - log(t[jj])) - (1.0 - w->phib) * gr;
            else
                d = -gr;
            w->g[j] = (GM_T)(w->reg * (gr + d));
            double e = t[jj] * fabs(expm1(d));
            err = e > err ? e : err;
        }
    }
    if (bad) return NAN;
    if (under) {
        GM_FN(sk_log_cols_exact)(w, need);
        return INFINITY;
    }
    return err;
}

/* Row pass in the kernel domain: s_i = sum_j K_ij v_j (contiguous dot
 * product), u_i = exp(phia (log a_i - log s_i) - (1 - phia) f0_i / reg)
 * (= a_i / s_i when balanced), column partials += u_i K_ij.  Returns flags:
 * 1 = some u_i left [1/tau, tau] (absorb after this sweep), 2 = some s_i
 * underflowed or overflowed (sweep invalid).  Two flops per entry, O(n m). */
static int GM_FN(sk_kern_rows)(GM_FN(sk_ws) *w)
{
    const size_t n = w->n, m = w->m, nblk = w->nblk;
    const double phia = w->phia, tau = w->tau, itau = 1.0 / w->tau;
    int flags = 0;
#pragma omp parallel for schedule(static) reduction(| : flags) num_threads(w->par)
    for (size_t blk = 0; blk < nblk; blk++) {
        GM_T *part = w->part + blk * m;
        const GM_T *v = w->v;
        size_t i1 = (blk + 1) * GM_SK_RB < n ? (blk + 1) * GM_SK_RB : n;
        memset(part, 0, m * sizeof(GM_T));
        for (size_t i = blk * GM_SK_RB; i < i1; i++) {
            if (w->deada[i]) continue;
            const GM_T *Ki = w->P + i * m;
            GM_T s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t j = 0; j < m; j++) s += Ki[j] * v[j];
            if (!(s > 0) || !isfinite(s)) { flags |= 2; continue; }
            double ui;
            if (phia == 1.0)
                ui = (double)w->a[i] / (double)s;
            else if (phia > 0.0)
                ui = exp(phia * (w->la[i] - log((double)s)) -
                         (1.0 - phia) * (double)w->f0[i] * w->ireg);
            else
                ui = exp(-(double)w->f0[i] * w->ireg);
            if (!(ui <= tau && ui >= itau)) flags |= 1;
            if (!isfinite(ui) || (GM_T)ui == 0) { flags |= 2; continue; }
            GM_T uT = (GM_T)ui;
            w->u[i] = uT;
            for (size_t j = 0; j < m; j++) part[j] += uT * Ki[j];
        }
    }
    return flags;
}

/* Column pass in the kernel domain: t_j = sum_i u_i K_ij, v_j updated like
 * u_i.  Returns the max change of the column marginal t_j |v_j - v_j'| via
 * *err and flags as sk_kern_rows (2: some t_j underflowed; then no v_j is
 * changed).  O(nblk m). */
static int GM_FN(sk_kern_cols)(GM_FN(sk_ws) *w, double *errp)
{
    const size_t m = w->m, nch = (m + GM_SK_CB - 1) / GM_SK_CB;
    const double phib = w->phib, tau = w->tau, itau = 1.0 / w->tau;
    double err = 0.0;
    int flags = 0;
    GM_T *vnew = w->ebuf; /* scratch: length m */
/* serial: a parallel region here costs more than the O(nblk m) work */
    for (size_t c = 0; c < nch; c++) {
        double t[GM_SK_CB];
        size_t j0 = c * GM_SK_CB, len = GM_FN(sk_colsum)(w, c, t);
        for (size_t jj = 0; jj < len; jj++) {
            size_t j = j0 + jj;
            if (w->deadb[j]) { vnew[j] = 0; continue; }
            if (!(t[jj] > 0.0) || !isfinite(t[jj])) { flags |= 2; continue; }
            double vj;
            if (phib == 1.0)
                vj = (double)w->b[j] / t[jj];
            else if (phib > 0.0)
                vj = exp(phib * (w->lb[j] - log(t[jj])) -
                         (1.0 - phib) * (double)w->g0[j] * w->ireg);
            else
                vj = exp(-(double)w->g0[j] * w->ireg);
            if (!(vj <= tau && vj >= itau)) flags |= 1;
            if (!isfinite(vj) || (GM_T)vj == 0) { flags |= 2; continue; }
            double e = t[jj] * fabs((double)w->v[j] - vj);
            err = e > err ? e : err;
            vnew[j] = (GM_T)vj;
        }
    }
    if (!(flags & 2)) memcpy(w->v, vnew, m * sizeof(GM_T));
    *errp = err;
    return flags;
}

/* Potentials from the kernel-domain state: f = f0 + reg log u, g likewise
 * (-inf for dropped rows/columns).  O(n + m). */
static void GM_FN(sk_absorb)(GM_FN(sk_ws) *w)
{
    for (size_t i = 0; i < w->n; i++)
        w->f[i] = w->deada[i] ? (GM_T)-INFINITY
                              : (GM_T)((double)w->f0[i] + w->reg * log((double)w->u[i]));
    for (size_t j = 0; j < w->m; j++)
        w->g[j] = w->deadb[j] ? (GM_T)-INFINITY
                              : (GM_T)((double)w->g0[j] + w->reg * log((double)w->v[j]));
}

/* Start the kernel domain right after a storing log sweep: K holds the plan
 * for (f_new, g_old), saved as the snapshot (f0, g0 = g_old); u = 1 and v
 * carries the column update g_old -> g_new.  Returns 0 (and stays in the
 * log domain) when some v_j would leave [1/tau, tau].  O(n + m). */
static int GM_FN(sk_enter_kernel)(GM_FN(sk_ws) *w)
{
    for (size_t j = 0; j < w->m; j++) {
        double vj = exp(((double)w->g[j] - (double)w->g0[j]) * w->ireg);
        if (!w->deadb[j] && !(vj <= w->tau && vj >= 1.0 / w->tau)) return 0;
        w->v[j] = w->deadb[j] ? 0 : (GM_T)vj;
    }
    for (size_t i = 0; i < w->n; i++) {
        w->f0[i] = w->f[i];
        w->u[i] = w->deada[i] ? 0 : 1;
    }
    return 1;
}

/* Write the plan into P: u_i K_ij v_j in place (kernel mode) or
 * exp((f_i + g_j - C_ij)/reg) (log mode).  O(n m). */
static void GM_FN(sk_write_plan)(GM_FN(sk_ws) *w, int kernel)
{
    const size_t n = w->n, m = w->m;
    const GM_T ireg = (GM_T)w->ireg;
#pragma omp parallel for schedule(static) num_threads(w->par)
    for (size_t i = 0; i < n; i++) {
        GM_T *Pi = w->P + i * m;
        const GM_T *Ci = w->C + i * m;
        if (w->deada[i]) { memset(Pi, 0, m * sizeof(GM_T)); continue; }
        if (kernel) {
            GM_T ui = w->u[i];
            for (size_t j = 0; j < m; j++) Pi[j] = ui * Pi[j] * w->v[j];
        } else {
            GM_T fi = w->f[i];
            for (size_t j = 0; j < m; j++) {
                GM_T x = (fi + w->g[j] - Ci[j]) * ireg;
                Pi[j] = w->deadb[j] ? 0 : GM_EXP(x);
            }
        }
    }
}

/* Solve one problem (C: n x m, a: n, b: m) into P, f, g.  Mixed strategy:
 * log-domain sweeps until a storing sweep builds K, then kernel-domain
 * sweeps while the scalings stay within [1/tau, tau]; leaving the kernel
 * domain quickly backs off exponentially before K is rebuilt.  O(iters n m).
 */
static int GM_FN(sk_solve)(GM_FN(sk_ws) *w, int max_iter, double tol, int *n_iter,
                         double *err_out)
{
    const size_t n = w->n, m = w->m;
    int it, kernel = 0, wait = 1, backoff = 1, ksweeps = 0, st = GM_OK;
    double err = INFINITY;
    unsigned char *need = malloc(m);
    if (!need) return GM_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        w->deada[i] = w->phia > 0.0 && w->a[i] == 0;
        w->la[i] = log((double)w->a[i]);
        w->f[i] = 0;
    }
    for (size_t j = 0; j < m; j++) {
        w->deadb[j] = w->phib > 0.0 && w->b[j] == 0;
        w->lb[j] = log((double)w->b[j]);
        w->g[j] = w->deadb[j] ? (GM_T)-INFINITY : 0;
    }
    for (it = 0; it < max_iter; it++) {
        if (kernel) {
            int fl;
            memcpy(w->uold, w->u, n * sizeof(GM_T));
            fl = GM_FN(sk_kern_rows)(w);
            if (!(fl & 2)) fl |= GM_FN(sk_kern_cols)(w, &err);
            if (fl & 2) { /* invalid sweep: roll back and redo it in logs */
                memcpy(w->u, w->uold, n * sizeof(GM_T));
                GM_FN(sk_absorb)(w);
                kernel = 0;
                backoff = backoff < GM_SK_MAXBACKOFF ? 2 * backoff : backoff;
                wait = backoff;
                it--;
                continue;
            }
            ksweeps++;
            if (fl & 1) {
                GM_FN(sk_absorb)(w);
                kernel = 0;
                if (ksweeps < GM_SK_MINRUN)
                    backoff = backoff < GM_SK_MAXBACKOFF ? 2 * backoff : backoff;
                else
                    backoff = 1;
                wait = backoff - 1;
            }
        } else {
            int store = wait <= 0 && !GM_SK_FORCE_LOG;
            if (store) memcpy(w->g0, w->g, m * sizeof(GM_T));
            GM_FN(sk_log_rows)(w, store);
            err = GM_FN(sk_log_cols)(w, need);
            if (isnan(err)) { st = GM_ERR_NUMERIC; break; }
            if (store && isfinite(err) && GM_FN(sk_enter_kernel)(w)) {
                kernel = 1;
                ksweeps = 0;
            } else if (store && isfinite(err)) {
                backoff = backoff < GM_SK_MAXBACKOFF ? 2 * backoff : backoff;
                wait = backoff;
            } else {
                wait--;
            }
        }
        if (err < tol) { it++; break; }
    }
    if (st == GM_OK) {
        if (kernel) GM_FN(sk_absorb)(w);
        GM_FN(sk_write_plan)(w, kernel);
    }
    free(need);
    *n_iter = it < max_iter ? it : max_iter;
    *err_out = err;
    return st;
}

/* Public entry point: validate, then solve each batch element (in parallel
 * over the batch when the problems are small).  O(batch iters n m). */
int GM_FN(gm_sinkhorn)(const GM_T *C, const GM_T *a, const GM_T *b, size_t batch, size_t n,
                     size_t m, double reg, double reg_m_a, double reg_m_b,
                     int max_iter, double tol, GM_T *P, GM_T *f, GM_T *g, int *n_iter,
                     double *err)
{
    int st = GM_OK, nthr = gm_get_num_threads();
    if (!C || !a || !b || !P || batch == 0 || n == 0 || m == 0) return GM_ERR_INVALID;
    if (!(reg > 0.0) || !isfinite(reg) || !(reg_m_a >= 0.0) || !(reg_m_b >= 0.0) ||
        max_iter < 1 || !(tol >= 0.0))
        return GM_ERR_INVALID;
    if (n > ((size_t)-1) / m / sizeof(GM_T) / batch) return GM_ERR_INVALID;
    for (size_t k = 0; k < batch && st == GM_OK; k++) {
        double sa = 0, sb = 0;
        if (!GM_FN(gm_all_finite)(C + k * n * m, n * m)) return GM_ERR_NONFINITE_ARG(0);
        st = GM_FN(sk_check_mass)(a + k * n, n, 1, &sa);
        if (st == GM_OK) st = GM_FN(sk_check_mass)(b + k * m, m, 2, &sb);
        if (st == GM_OK && isinf(reg_m_a) && isinf(reg_m_b) &&
            fabs(sa - sb) > GM_SK_MASS_RTOL(GM_T) * (sa > sb ? sa : sb))
            st = gm_fail(GM_ERR_UNBALANCED,
                         "a and b must have the same total mass for balanced OT (both "
                         "marginal weights infinite, reg_m=None): sum(a)=%.9g, sum(b)=%.9g "
                         "(problem %zu); normalize them or pass a finite reg_m", sa, sb, k);
    }
    if (st != GM_OK) return st;
    double phia = isinf(reg_m_a) ? 1.0 : reg_m_a / (reg_m_a + reg);
    double phib = isinf(reg_m_b) ? 1.0 : reg_m_b / (reg_m_b + reg);
    /* small problems: one thread each, the batch spread over the threads;
     * large ones: threads inside each problem (one fork/join per sweep must
     * pay off) */
    int big = gm_threads_for((double)n * (double)m * GM_WORK_EXP) > 1;
    int over_batch = batch > 1 && nthr > 1 && !big;
    int inner = !over_batch && nthr > 1 && big;
    int fail = GM_OK;
#pragma omp parallel for schedule(dynamic) num_threads(over_batch ? nthr : 1)
    for (size_t k = 0; k < batch; k++) {
        GM_FN(sk_ws) w;
        int s, it = 0;
        double e = 0;
        int failed;
#pragma omp atomic read
        failed = fail;
        if (failed != GM_OK) continue;
        s = GM_FN(sk_alloc)(&w, n, m, inner ? nthr : 1);
        GM_T *fb = f ? f + k * n : malloc(n * sizeof(GM_T));
        GM_T *gb = g ? g + k * m : malloc(m * sizeof(GM_T));
        if (s == GM_OK && fb && gb) {
            w.par = inner ? nthr : 1;
            w.reg = reg;
            w.ireg = 1.0 / reg;
            w.phia = phia;
            w.phib = phib;
            w.tau = GM_SK_TAU;
            w.C = C + k * n * m;
            w.a = a + k * n;
            w.b = b + k * m;
            w.P = P + k * n * m;
            w.f = fb;
            w.g = gb;
            s = GM_FN(sk_solve)(&w, max_iter, tol, &it, &e);
        } else if (s == GM_OK) {
            s = GM_ERR_NOMEM;
        }
        GM_FN(sk_free)(&w);
        if (!f) free(fb);
        if (!g) free(gb);
        if (n_iter) n_iter[k] = it;
        if (err) err[k] = e;
        if (s != GM_OK) {
#pragma omp atomic write
            fail = s;
        }
    }
    return fail;
}

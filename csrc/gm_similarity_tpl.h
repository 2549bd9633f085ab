/* gm_similarity_tpl.h -- type-generic body of gm_similarity.c, instantiated once per
 * type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header. */

/* Euclidean norm of the d values at x, safe against overflow and underflow
 * of the squares: the double sum of squares, and (double inputs only) a
 * second pass scaled by max|x_k| when that sum left the safe range.
 * Returns NaN or inf if any value is non-finite.  O(d). */
static double GM_FN(gm_row_norm)(const GM_T *x, size_t d)
{
    double ss = GM_FN(gm_vec_sumsq_f64acc)(x, d);
    if (ss != ss) return ss;
    if (ss > 1e-280 && ss < 1e280) return sqrt(ss);
    double amax = 0.0;
    for (size_t k = 0; k < d; k++) {
        double a = fabs((double)x[k]);
        if (!(a <= amax)) amax = a;  /* also propagates NaN / inf */
    }
    if (amax == 0.0 || !isfinite(amax)) return amax;
    ss = 0.0;
    for (size_t k = 0; k < d; k++) {
        double t = (double)x[k] / amax;
        ss += t * t;
    }
    return amax * sqrt(ss);
}

/* Copy `rows` rows of length d from x to out, each divided by its Euclidean
 * norm; an all-zero row stays all zero.  Rows are split among OpenMP threads
 * (static schedule; each row is computed by one thread, so the result does
 * not depend on the thread count) by gm_parallel.h's policy.  A row too
 * small for 1/|x| to be a finite number is scaled by max|x_k| first, so it
 * still becomes a unit row.  O(rows * d). */
int GM_FN(gm_l2_normalize_rows)(const GM_T *x, GM_T *out, size_t rows, size_t d)
{
    int bad = 0;
    if (rows == 0 || d == 0) return GM_OK;
    if (x == NULL || out == NULL) return GM_ERR_INVALID;
    ptrdiff_t nr = (ptrdiff_t)rows;
    int nthr = gm_threads_for((double)rows * (double)d);
#pragma omp parallel for schedule(static) reduction(| : bad) num_threads(nthr)
    for (ptrdiff_t i = 0; i < nr; i++) {
        const GM_T *xi = x + (size_t)i * d;
        GM_T *oi = out + (size_t)i * d;
        double nrm = GM_FN(gm_row_norm)(xi, d);
        if (!isfinite(nrm)) {
            bad = 1;
            continue;
        }
        double invd = nrm > 0.0 ? 1.0 / nrm : 0.0;
        if (invd <= (sizeof(GM_T) == 4 ? (double)FLT_MAX : DBL_MAX)) {
            GM_T inv = (GM_T)invd;
            for (size_t k = 0; k < d; k++) oi[k] = xi[k] * inv;
        } else {
            /* a tiny row (1/|x| overflows): scale by max|x_k| first, as a
             * safe hypot does, so the result is a unit row, never inf */
            double amax = 0.0, ss = 0.0;
            for (size_t k = 0; k < d; k++)
                if (fabs((double)xi[k]) > amax) amax = fabs((double)xi[k]);
            for (size_t k = 0; k < d; k++) ss += ((double)xi[k] / amax) * ((double)xi[k] / amax);
            double sc = sqrt(ss);
            for (size_t k = 0; k < d; k++) oi[k] = (GM_T)(((double)xi[k] / amax) / sc);
        }
    }
    return bad ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}

/* Cosine similarity of every row of x (batch, n, d) with every row of y
 * (batch, m, d) into out (batch, n, m).  Batch items are processed in
 * chunks of up to GM_SIM_SCRATCH values of scratch: the chunk's x rows and
 * y rows are L2-normalized (one pass each), then one GEMM per item.
 * O(batch * n * m * d) time, O(max((n + m) * d, GM_SIM_SCRATCH)) memory. */
int GM_FN(gm_cosine_similarity)(const GM_T *x, const GM_T *y, GM_T *out, size_t batch,
                                size_t n, size_t m, size_t d)
{
    int status = GM_OK;
    if (batch == 0 || n == 0 || m == 0) return GM_OK;
    if (x == NULL || y == NULL || out == NULL) return GM_ERR_INVALID;
    if (n > INT_MAX || m > INT_MAX || d > INT_MAX) return GM_ERR_INVALID;
    if (d == 0) {
        memset(out, 0, batch * n * m * sizeof(GM_T));
        return GM_OK;
    }
    size_t per_item = (n + m) * d;
    size_t chunk = GM_SIM_SCRATCH / per_item;
    if (chunk < 1) chunk = 1;
    if (chunk > batch) chunk = batch;
    GM_T *xn = malloc(chunk * per_item * sizeof(GM_T));
    if (xn == NULL) return GM_ERR_NOMEM;
    GM_T *yn = xn + chunk * n * d;
    for (size_t b0 = 0; b0 < batch && status == GM_OK; b0 += chunk) {
        size_t cb = batch - b0 < chunk ? batch - b0 : chunk;
        status = GM_FN(gm_l2_normalize_rows)(x + b0 * n * d, xn, cb * n, d);
        if (status != GM_OK) break;
        status = GM_FN(gm_l2_normalize_rows)(y + b0 * m * d, yn, cb * m, d);
        if (status != GM_OK) {
            status = GM_ERR_NONFINITE_ARG(1);
            break;
        }
        /* gm_gemm: blocks fixed by the shape, so the result does not depend
         * on the thread count (a multithreaded BLAS call sums in another
         * order for each thread count). */
        for (size_t b = 0; b < cb && status == GM_OK; b++)
            status = GM_FN(gm_gemm)(0, 1, n, m, d, (GM_T)1, xn + b * n * d, d, yn + b * m * d,
                                    d, (GM_T)0, out + (b0 + b) * n * m, m);
    }
    free(xn);
    return status;
}


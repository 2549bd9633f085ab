/* gm_loss_tpl.h -- type-generic body of gm_loss.c,
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header. */

/* Sum over i < n, j < m where exactly one of src_fg[i], trg_fg[j] is nonzero
 * of -log(1 - P_ij), P_ij
 * clipped to [lo, hi]; with grad != NULL also writes the whole
 * (n+1) x (m+1) grad: weight / (1 - P_ij) (clipped) on those entries, 0
 * elsewhere (dustbin row and column included).  p and grad are dense with
 * row stride m + 1.  Rows run in parallel; the row sums (double) are added
 * in row order, so the result does not depend on the thread count.
 * O(n m). */
int GM_FN(gm_loss_fgbg)(const GM_T *p, size_t n, size_t m, const uint8_t *src_fg,
                               const uint8_t *trg_fg, double lo, double hi, double weight,
                               double *sum, GM_T *grad)
{
    if (n == 0 || m == 0) return GM_ERR_INVALID;
    if (!(hi > 0.0 && hi < 1.0) || !(lo >= 0.0 && lo < hi))
        return gm_fail(GM_ERR_INVALID, "need 0 <= lo < hi < 1, got lo=%.9g, hi=%.9g", lo, hi);
    size_t ld = m + 1;
    double *rows = (double *)malloc(n * sizeof(double));
    if (rows == NULL) return GM_ERR_NOMEM;
    long nrows = (long)n;
    int nthr = gm_threads_for((double)n * (double)m * GM_WORK_EXP);
#pragma omp parallel for schedule(static) num_threads(nthr)
    for (long i = 0; i < nrows; i++) {
        const GM_T *pi = p + (size_t)i * ld;
        GM_T *gi = grad == NULL ? NULL : grad + (size_t)i * ld;
        int si = src_fg[i] != 0;
        double acc = 0.0;
        for (size_t j = 0; j < m; j++) {
            if ((trg_fg[j] != 0) == si) {
                if (gi != NULL) gi[j] = 0;
                continue;
            }
            double v = (double)pi[j];
            v = v < lo ? lo : (v > hi ? hi : v);
            acc += gm_neglog1m(v);
            if (gi != NULL) gi[j] = (GM_T)(weight / (1.0 - v));
        }
        if (gi != NULL) gi[m] = 0;
        rows[i] = acc;
    }
    if (grad != NULL)
        for (size_t j = 0; j < ld; j++) grad[n * ld + j] = 0;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += rows[i];
    free(rows);
    *sum = total;
    return GM_OK;
}

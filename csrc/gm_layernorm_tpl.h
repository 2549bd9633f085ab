/* gm_layernorm_tpl.h -- type-generic body of gm_layernorm.c, instantiated
 * once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header. */

/* The one row-wise LayerNorm: y = (x - mean) * rstd * gamma + beta with
 * rstd = 1 / sqrt(var + eps) (biased variance, two passes); gamma and beta
 * may be NULL (1 and 0).  x and y are n x d (y may alias x).  With xhat and
 * rstd given (the head's training step) xhat = (x - mean) * rstd and rstd
 * (n) are kept for gm_layernorm_bwd; both paths compute the same y.  Rows
 * in parallel.  O(n d). */
int GM_FN(gm_layernorm_fwd)(const GM_T *x, size_t n, size_t d, const GM_T *gamma,
                            const GM_T *beta, double eps, GM_T *y, GM_T *xhat, GM_T *rstd)
{
    if (n == 0 || d == 0 || !(eps >= 0.0)) return GM_ERR_INVALID;
    long rows = (long)n;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long i = 0; i < rows; i++) {
        const GM_T *xi = x + (size_t)i * d;
        GM_T *yi = y + (size_t)i * d;
        GM_T *restrict hi = xhat ? xhat + (size_t)i * d : NULL;
        GM_T mean = GM_FN(gm_vec_dot16)(xi, NULL, d) / (GM_T)d;
        GM_T var;
        if (hi) {
            for (size_t j = 0; j < d; j++) hi[j] = xi[j] - mean;
            var = GM_FN(gm_vec_dot16)(hi, hi, d) / (GM_T)d;
        } else {
            var = GM_FN(gm_vec_sqdev16)(xi, mean, d) / (GM_T)d;
        }
        GM_T r = (GM_T)(1.0 / sqrt((double)var + eps));
        if (rstd) rstd[i] = r;
        if (hi && gamma && beta) {
            for (size_t j = 0; j < d; j++) {
                hi[j] *= r;
                yi[j] = hi[j] * gamma[j] + beta[j];
            }
        } else if (hi) {
            for (size_t j = 0; j < d; j++) {
                GM_T v = hi[j] *= r;
                if (gamma != NULL) v *= gamma[j];
                if (beta != NULL) v += beta[j];
                yi[j] = v;
            }
        } else if (gamma && beta) {
            for (size_t j = 0; j < d; j++) yi[j] = (xi[j] - mean) * r * gamma[j] + beta[j];
        } else {
            for (size_t j = 0; j < d; j++) {
                GM_T v = (xi[j] - mean) * r;
                if (gamma != NULL) v *= gamma[j];
                if (beta != NULL) v += beta[j];
                yi[j] = v;
            }
        }
    }
    return GM_OK;
}

/* Backbone LayerNorm (gm_nn_layernorm in geomatch.h): nothing kept. */
int GM_FN(gm_nn_layernorm)(const GM_T *x, size_t n, size_t d, const GM_T *gamma,
                           const GM_T *beta, double eps, GM_T *y)
{
    return GM_FN(gm_layernorm_fwd)(x, n, d, gamma, beta, eps, y, NULL, NULL);
}

/* Rows per block of the parameter-gradient partial sums (fixed, so the sums
 * do not depend on the thread count). */
#define GM_LN_BLOCK 64
/* Columns per chunk of the row means in gm_layernorm_bwd (stack buffer). */
#define GM_LN_MAXD 512

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
    size_t nblk = (n + GM_LN_BLOCK - 1) / GM_LN_BLOCK;
    GM_T *part = (GM_T *)malloc(nblk * 2 * d * sizeof(GM_T));
    if (part == NULL) return GM_ERR_NOMEM;
    long blocks = (long)nblk;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(8.0 * (double)n * (double)d))
    for (long b = 0; b < blocks; b++) {
        GM_T *restrict pg = part + (size_t)b * 2 * d;
        GM_T *restrict pb = pg + d;
        for (size_t j = 0; j < d; j++) pg[j] = pb[j] = 0;
        size_t lo = (size_t)b * GM_LN_BLOCK;
        size_t hi = lo + GM_LN_BLOCK < n ? lo + GM_LN_BLOCK : n;
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
            GM_T gg[GM_LN_MAXD];
            GM_T m1 = 0, m2 = 0;
            for (size_t j0 = 0; j0 < d; j0 += GM_LN_MAXD) {
                size_t len = d - j0 < GM_LN_MAXD ? d - j0 : GM_LN_MAXD;
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

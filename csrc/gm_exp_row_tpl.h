/* gm_exp_row_tpl.h -- the shifted-exponential row pass shared by the
 * attention kernels of gm_nn_tpl.h and gm_head_tpl.h.  Included once per
 * type by each of them, inside their instantiation (gm_tpl.h), with
 * GM_EXP_ROW_NAME (the function's name) defined.  Not a public header. */

/* In place over one row of n >= 1 scores: s_j = exp(s_j - max_j s_j);
 * returns 1 / sum_j s_j (the caller normalizes later).  16 partial
 * accumulators in a fixed order keep the reductions vectorizable and
 * deterministic.  O(n). */
static GM_T GM_EXP_ROW_NAME(GM_T *restrict s, size_t n)
{
    GM_T acc[16];
    size_t j = 0;
    for (int q = 0; q < 16; q++) acc[q] = s[0];
    for (; j + 16 <= n; j += 16)
        for (int q = 0; q < 16; q++) acc[q] = s[j + q] > acc[q] ? s[j + q] : acc[q];
    GM_T mx = acc[0];
    for (int q = 1; q < 16; q++) mx = acc[q] > mx ? acc[q] : mx;
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    for (size_t i = 0; i < n; i++) s[i] = GM_EXP(s[i] - mx);
    for (int q = 0; q < 16; q++) acc[q] = 0;
    for (j = 0; j + 16 <= n; j += 16)
        for (int q = 0; q < 16; q++) acc[q] += s[j + q];
    GM_T sum = 0;
    for (int q = 0; q < 16; q++) sum += acc[q];
    for (; j < n; j++) sum += s[j];
    return (GM_T)1 / sum;
}

/* gm_vec_tpl.h -- the shared vector primitives of one type (private),
 * included by gm_tpl.h, so every kernel template has them.
 *
 * Every reduction here sums in fixed lanes combined in a fixed order: the
 * result depends on the values and the length only, never on alignment,
 * the vectorizer or the thread that runs it.  Kernels use these instead of
 * writing their own; a kernel that fuses several reductions over the same
 * data (to share the loads) keeps its fused loop but folds its lanes with
 * gm_vec_fold. */

/* Pairwise fold of `lanes` (a power of two, at most 64) partial sums, halving:
 * acc[j] += acc[j + lanes/2], ... until one is left; acc is overwritten.
 * O(lanes). */
static inline GM_T GM_FN(gm_vec_fold)(GM_T *acc, int lanes)
{
    /* one constant-length loop per step (lanes <= 64), so that the steps
     * unroll and vectorize once lanes is known */
    if (lanes >= 64) for (int j = 0; j < 32; j++) acc[j] += acc[j + 32];
    if (lanes >= 32) for (int j = 0; j < 16; j++) acc[j] += acc[j + 16];
    if (lanes >= 16) for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    if (lanes >= 8) for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    if (lanes >= 4) for (int j = 0; j < 2; j++) acc[j] += acc[j + 2];
    if (lanes >= 2) acc[0] += acc[1];
    return acc[0];
}

/* 1 if all n values are finite: x * 0 is NaN exactly for NaN/inf, summed in
 * 64 independent lanes so the scan runs at memory speed.  O(n). */
static inline int GM_FN(gm_vec_all_finite)(const GM_T *x, size_t n)
{
    GM_T acc[64];
    size_t i = 0;
    int j;
    for (j = 0; j < 64; j++) acc[j] = (GM_T)0;
    for (; i + 64 <= n; i += 64)
        for (j = 0; j < 64; j++) acc[j] += x[i + j] * (GM_T)0;
    for (j = 0; i < n; i++, j++) acc[j] += x[i] * (GM_T)0;
    for (j = 1; j < 64; j++) acc[0] += acc[j];
    return acc[0] == (GM_T)0;
}

/* Dot product of x and y (length n) in 32 lanes folded pairwise
 * (gm_vec_fold).  O(n). */
static inline GM_T GM_FN(gm_vec_dot32)(const GM_T *x, const GM_T *y, size_t n)
{
    GM_T acc[32];
    size_t j = 0;
    for (int l = 0; l < 32; l++) acc[l] = 0;
    for (; j + 32 <= n; j += 32)
        for (int l = 0; l < 32; l++) acc[l] += x[j + l] * y[j + l];
    for (int l = 0; j + (size_t)l < n; l++) acc[l] += x[j + l] * y[j + l];
    return GM_FN(gm_vec_fold)(acc, 32);
}

/* Sum of x (length n), the lane scheme of gm_vec_dot32.  O(n). */
static inline GM_T GM_FN(gm_vec_sum32)(const GM_T *x, size_t n)
{
    GM_T acc[32];
    size_t j = 0;
    for (int l = 0; l < 32; l++) acc[l] = 0;
    for (; j + 32 <= n; j += 32)
        for (int l = 0; l < 32; l++) acc[l] += x[j + l];
    for (int l = 0; j + (size_t)l < n; l++) acc[l] += x[j + l];
    return GM_FN(gm_vec_fold)(acc, 32);
}

/* sum_j a_j b_j (b == NULL: sum_j a_j) over n values: 16 lanes added in
 * order, then the tail in order (the row statistics of LayerNorm).  O(n). */
static inline GM_T GM_FN(gm_vec_dot16)(const GM_T *restrict a, const GM_T *restrict b, size_t n)
{
    GM_T acc[16] = {0};
    size_t j = 0;
    if (b == NULL) {
        for (; j + 16 <= n; j += 16)
            for (int q = 0; q < 16; q++) acc[q] += a[j + q];
    } else {
        for (; j + 16 <= n; j += 16)
            for (int q = 0; q < 16; q++) acc[q] += a[j + q] * b[j + q];
    }
    GM_T s = 0;
    for (int q = 0; q < 16; q++) s += acc[q];
    for (; j < n; j++) s += b == NULL ? a[j] : a[j] * b[j];
    return s;
}

/* sum_j (a_j - c)^2 over n values, the lanes and order of gm_vec_dot16 (so
 * it equals gm_vec_dot16(d, d, n) for d_j = a_j - c rounded).  O(n). */
static inline GM_T GM_FN(gm_vec_sqdev16)(const GM_T *restrict a, GM_T c, size_t n)
{
    GM_T acc[16] = {0};
    size_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int q = 0; q < 16; q++) acc[q] += (a[j + q] - c) * (a[j + q] - c);
    GM_T s = 0;
    for (int q = 0; q < 16; q++) s += acc[q];
    for (; j < n; j++) s += (a[j] - c) * (a[j] - c);
    return s;
}

/* Sum of squares of x in double: 8 lanes combined as ((0+1)+(2+3)) +
 * ((4+5)+(6+7)).  NaN or inf if a value is non-finite.  O(n). */
static inline double GM_FN(gm_vec_sumsq_f64acc)(const GM_T *x, size_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[k + l] * (double)x[k + l];
    for (int l = 0; k < n; k++, l++) acc[l] += (double)x[k] * (double)x[k];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* In place over one row of n >= 1 scores: s_j = exp(s_j - max_j s_j);
 * returns 1 / sum_j s_j (the caller normalizes later).  16 lanes in a fixed
 * order for the max and the sum (the softmax rows of attention).  O(n). */
static inline GM_T GM_FN(gm_vec_exp_row)(GM_T *restrict s, size_t n)
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

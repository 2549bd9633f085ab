/* gm_softargmax_tpl.h -- type-generic body of gm_softargmax.c, instantiated once per
 * type through gm_tpl.h (GM_T, GM_FN, ...).  Not a public header. */

/* Flat index of the first maximum of the n values at s (row-major order, as
 * NumPy's argmax); sets *finite to 0 if any value is NaN/inf.  Two passes,
 * both vectorized with `omp simd`: the maximum (exact, so independent of
 * the reduction order) together with a finiteness check, then a search for
 * the first block of 64 holding the maximum and a scan inside it.  O(n). */
static size_t GM_FN(gm_first_argmax)(const GM_T *s, size_t n, int *finite)
{
    GM_T vmax = s[0], acc = 0;
    size_t i = 0;
#pragma omp simd reduction(max : vmax) reduction(+ : acc)
    for (size_t k = 0; k < n; k++) {
        vmax = s[k] > vmax ? s[k] : vmax;
        acc += s[k] * (GM_T)0;
    }
    *finite = acc == (GM_T)0;
    if (!*finite) return 0;
    for (; i + 64 <= n; i += 64) {
        int hit = 0;
#pragma omp simd reduction(| : hit)
        for (int l = 0; l < 64; l++) hit |= s[i + l] == vmax;
        if (hit) break;
    }
    for (; i < n; i++)
        if (s[i] == vmax) return i;
    return 0;
}

/* Integer (x, y) = (column, row) of the first maximum of each of the nmaps
 * maps of h * w values (row-major) in sim; out_xy is (nmaps, 2).  OpenMP
 * over maps.  O(nmaps * h * w). */
int GM_FN(gm_argmax_2d)(const GM_T *sim, size_t nmaps, size_t h, size_t w, int64_t *out_xy)
{
    int bad = 0;
    if (nmaps == 0) return GM_OK;
    if (sim == NULL || out_xy == NULL || h == 0 || w == 0 || h > SIZE_MAX / w)
        return GM_ERR_INVALID;
    size_t hw = h * w;
    ptrdiff_t nm = (ptrdiff_t)nmaps;
    int nthr = gm_threads_for((double)nmaps * (double)hw);
#pragma omp parallel for schedule(static) reduction(| : bad) num_threads(nthr)
    for (ptrdiff_t k = 0; k < nm; k++) {
        int finite;
        size_t a = GM_FN(gm_first_argmax)(sim + (size_t)k * hw, hw, &finite);
        if (!finite) bad = 1;
        out_xy[2 * k] = (int64_t)(a % w);
        out_xy[2 * k + 1] = (int64_t)(a / w);
    }
    return bad ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}

/* Expected (x, y) under p(r, c) proportional to exp((s[r, c] - smax) * inv_t)
 * over the window rows r0..r1, columns c0..c1 of one map s (row stride w).
 * Per-row sums in GM_T, vectorized with `omp simd` (a fixed order for a
 * given build, independent of the thread count), rows summed in double.
 * The window holds the maximum, so the normalizer is >= 1.
 * O((r1 - r0 + 1) * (c1 - c0 + 1)). */
static void GM_FN(gm_window_expectation)(const GM_T *s, size_t w, size_t r0, size_t r1,
                                         size_t c0, size_t c1, GM_T smax, GM_T inv_t,
                                         GM_T *out)
{
    double z = 0.0, sx = 0.0, sy = 0.0;
    for (size_t r = r0; r <= r1; r++) {
        const GM_T *row = s + r * w;
        GM_T zr = 0, sxr = 0;
#pragma omp simd reduction(+ : zr, sxr)
        for (size_t c = c0; c <= c1; c++) {
            GM_T p = GM_EXP((row[c] - smax) * inv_t);
            zr += p;
            sxr += p * (GM_T)c;
        }
        z += (double)zr;
        sx += (double)sxr;
        sy += (double)zr * (double)r;
    }
    out[0] = (GM_T)(sx / z);
    out[1] = (GM_T)(sy / z);
}

/* Window soft-argmax of each of the nmaps maps of h * w values in sim:
 * argmax (first maximum), then a softmax of sim / temperature restricted
 * to the (2 * window + 1)^2 cells around it (clipped at the grid border),
 * and the expected (x, y) = (column, row) into out_xy (nmaps, 2).
 * GM_ERR_INVALID for window < 0 or temperature not finite and > 0;
 * GM_ERR_NONFINITE_ARG(0) for NaN/inf in sim.  OpenMP over maps.
 * O(nmaps * (h * w + (2 * window + 1)^2)). */
int GM_FN(gm_window_soft_argmax)(const GM_T *sim, size_t nmaps, size_t h, size_t w,
                                 long window, double temperature, GM_T *out_xy)
{
    int bad = 0;
    if (window < 0 || !(temperature > 0.0) || !isfinite(temperature)) return GM_ERR_INVALID;
    if (nmaps == 0) return GM_OK;
    if (sim == NULL || out_xy == NULL || h == 0 || w == 0 || h > SIZE_MAX / w)
        return GM_ERR_INVALID;
    size_t hw = h * w;
    size_t win = (size_t)window;
    /* 1 / temperature, kept finite so that 0 * inv_t stays 0. */
    double inv_d = 1.0 / temperature;
    GM_T inv_t = inv_d < (double)GM_T_MAX ? (GM_T)inv_d : GM_T_MAX;
    ptrdiff_t nm = (ptrdiff_t)nmaps;
    int nthr = gm_threads_for((double)nmaps * (double)hw);
#pragma omp parallel for schedule(static) reduction(| : bad) num_threads(nthr)
    for (ptrdiff_t k = 0; k < nm; k++) {
        const GM_T *s = sim + (size_t)k * hw;
        int finite;
        size_t a = GM_FN(gm_first_argmax)(s, hw, &finite);
        if (!finite) {
            bad = 1;
            continue;
        }
        size_t r = a / w, c = a % w;
        size_t r0 = r > win ? r - win : 0, c0 = c > win ? c - win : 0;
        size_t r1 = h - 1 - r > win ? r + win : h - 1;
        size_t c1 = w - 1 - c > win ? c + win : w - 1;
        GM_FN(gm_window_expectation)(s, w, r0, r1, c0, c1, s[a], inv_t,
                                     out_xy + 2 * (size_t)k);
    }
    return bad ? GM_ERR_NONFINITE_ARG(0) : GM_OK;
}


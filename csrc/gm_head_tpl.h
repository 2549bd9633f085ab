/* gm_head_tpl.h -- type-generic bodies of gm_head.c,
 * instantiated once per type through gm_tpl.h (GM_T, GM_FN, ...).  Not a
 * public header. */

/* tanh(x) = 1 - 2 / (e^{2x} + 1) on the vectorizing exponential (absolute
 * error a few ulp of 1; saturates to +-1).  O(1). */
static inline GM_T GM_FN(gm_head_tanh)(GM_T x)
{
    GM_T e = GM_EXP((GM_T)2 * x);
    return (GM_T)1 - (GM_T)2 / (e + (GM_T)1);
}

/* GELU, tanh form: t = tanh(c (u + 0.044715 u^3)), g = 0.5 u (1 + t) with
 * c = sqrt(2 / pi), over `count` values; t is kept for the backward.
 * O(count). */
int GM_FN(gm_gelu_tanh_fwd)(const GM_T *u, size_t count, GM_T *g, GM_T *t)
{
    const GM_T c = (GM_T)0.79788456080286535588;
    long cnt = (long)count;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)count))
    for (long i = 0; i < cnt; i++) {
        GM_T v = u[i];
        GM_T th = GM_FN(gm_head_tanh)(c * (v + (GM_T)0.044715 * v * v * v));
        t[i] = th;
        g[i] = (GM_T)0.5 * v * ((GM_T)1 + th);
    }
    return GM_OK;
}

/* Reverse mode: du = dg * (0.5 (1 + t) + 0.5 u (1 - t^2) c (1 + 3 * 0.044715 u^2)).
 * du may alias dg.  O(count). */
int GM_FN(gm_gelu_tanh_bwd)(const GM_T *dg, const GM_T *u, const GM_T *t, size_t count, GM_T *du)
{
    const GM_T c = (GM_T)0.79788456080286535588;
    long cnt = (long)count;
#pragma omp parallel for schedule(static) num_threads(gm_threads_for(GM_WORK_EXP * (double)count))
    for (long i = 0; i < cnt; i++) {
        GM_T v = u[i], th = t[i];
        GM_T dt = c * ((GM_T)1 + (GM_T)(3 * 0.044715) * v * v);
        du[i] = dg[i] * ((GM_T)0.5 * ((GM_T)1 + th) + (GM_T)0.5 * v * ((GM_T)1 - th * th) * dt);
    }
    return GM_OK;
}

/* Tests of gm_loss.c: the foreground x background term of the training loss
 * against a naive double loop with log1p (series and log1p branches,
 * clipping to [lo, hi]), its dense gradient, float against double,
 * thread-count independence and the error codes. */
#include "geomatch.h"
#include "gm_test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long seed = 2463534242ULL;

/* Uniform in [0, 1). */
static double unif(void) { return gm_test_uniform(&seed); }


/* Kinds of plan values: tiny (series branch), large (log1p branch), and a
 * mix of both with values outside [lo, hi] for the clipping. */
enum { P_TINY, P_LARGE, P_MIXED };

/* Values outside [1e-6, 0.999], the clip range of the P_MIXED tests. */
static const double outliers[6] = {0.0, 1e-12, 5e-7, 0.9995, 0.99999994, 1.0};

/* One plan value of the given kind, rounded to float so the f32 and f64
 * kernels see the same values. */
static double draw_p(int kind)
{
    if (kind == P_MIXED) {
        double u = unif();
        if (u < 0.25) return outliers[(int)(unif() * 6.0)];
        kind = u < 0.6 ? P_TINY : P_LARGE;
    }
    double v = kind == P_TINY ? exp(log(1e-8) + unif() * (log(1e-4) - log(1e-8)))
                              : 0.01 + 0.98 * unif();
    return (double)(float)v;
}

/* One problem: the (n+1) x (m+1) plan in double and float and 0/1
 * foreground masks. */
typedef struct {
    size_t n, m;
    double *p;
    float *pf;
    uint8_t *sfg, *tfg;
} loss_case;

/* Random plan of the given kind (dustbin row and column too) and masks. */
static void loss_setup(loss_case *c, size_t n, size_t m, int kind)
{
    size_t len = (n + 1) * (m + 1);
    c->n = n;
    c->m = m;
    c->p = gm_test_xmalloc(len * sizeof *c->p);
    c->pf = gm_test_xmalloc(len * sizeof *c->pf);
    c->sfg = gm_test_xmalloc(n);
    c->tfg = gm_test_xmalloc(m);
    for (size_t i = 0; i < len; i++) c->pf[i] = (float)(c->p[i] = draw_p(kind));
    for (size_t i = 0; i < n; i++) c->sfg[i] = unif() < 0.5;
    for (size_t j = 0; j < m; j++) c->tfg[j] = unif() < 0.4;
}

/* Frees the buffers of loss_setup. */
static void loss_free(loss_case *c)
{
    gm_test_free_all((void *[]){c->p, c->pf, c->sfg, c->tfg}, 4);
}

/* Naive reference in double: the sum of -log1p(-clip(p)) over the
 * foreground x background pairs; grad (dense, (n+1) x (m+1)) is
 * weight / (1 - clip(p)) there and 0 elsewhere. */
static double ref_loss(const loss_case *c, double lo, double hi, double weight, double *grad)
{
    size_t n = c->n, m = c->m, ld = m + 1;
    double sum = 0.0;
    for (size_t i = 0; i <= n; i++)
        for (size_t j = 0; j <= m; j++) {
            grad[i * ld + j] = 0.0;
            if (i == n || j == m || c->sfg[i] == c->tfg[j]) continue;
            double v = fmin(fmax(c->p[i * ld + j], lo), hi);
            sum += -log1p(-v);
            grad[i * ld + j] = weight / (1.0 - v);
        }
    return sum;
}

/* Both kernels against ref_loss; grad starts as NaN so every entry must be
 * written, and grad == NULL gives the same sum. */
static void loss_check(const loss_case *c, double lo, double hi, double weight)
{
    size_t n = c->n, m = c->m, len = (n + 1) * (m + 1);
    double *ref = gm_test_xmalloc(len * sizeof *ref), *g = gm_test_xmalloc(len * sizeof *g);
    float *gf = gm_test_xmalloc(len * sizeof *gf);
    for (size_t i = 0; i < len; i++) gf[i] = (float)(g[i] = NAN);
    double want = ref_loss(c, lo, hi, weight, ref), s = -1.0, sf = -1.0, s0 = -1.0, sf0 = -1.0;
    GM_CHECK(gm_loss_fgbg_f64(c->p, n, m, c->sfg, c->tfg, lo, hi, weight, &s, g) == GM_OK);
    GM_CHECK(gm_loss_fgbg_f32(c->pf, n, m, c->sfg, c->tfg, lo, hi, weight, &sf, gf) == GM_OK);
    GM_CHECK(gm_loss_fgbg_f64(c->p, n, m, c->sfg, c->tfg, lo, hi, weight, &s0, NULL) == GM_OK);
    GM_CHECK(gm_loss_fgbg_f32(c->pf, n, m, c->sfg, c->tfg, lo, hi, weight, &sf0, NULL)
             == GM_OK);
    GM_CHECK_CLOSE(s, want, 1e-12, 0.0);
    GM_CHECK_CLOSE(sf, want, 1e-12, 0.0);
    GM_CHECK(s0 == s && sf0 == sf);
    for (size_t i = 0; i < len; i++) {
        GM_CHECK_CLOSE(g[i], ref[i], 1e-15, 0.0);
        GM_CHECK_CLOSE(gf[i], ref[i], 1e-7, 0.0);
    }
    free(ref);
    free(g);
    free(gf);
}

/* One plan of each kind, each checked at two (lo, hi, weight):
 * P_TINY, values in [1e-8, 1e-4]: the 6-term series branch;
 * P_LARGE, values in [0.01, 0.99]: the log1p branch;
 * P_MIXED, both branches and values below lo and above hi (0, 1 included). */
static void test_kinds(void)
{
    static const struct { size_t n, m; int kind; double lo[2], hi[2], w[2]; } cases[] = {
        {37, 53, P_TINY, {1e-9, 0.0}, {0.999, 0.5}, {0.7, 1.0}},
        {41, 29, P_LARGE, {1e-9, 0.05}, {0.999, 0.9}, {0.7, 2.5}},
        {64, 70, P_MIXED, {1e-6, 0.0}, {0.999, 0.999}, {0.7, 0.7}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        loss_case c;
        loss_setup(&c, cases[k].n, cases[k].m, cases[k].kind);
        for (int t = 0; t < 2; t++) loss_check(&c, cases[k].lo[t], cases[k].hi[t], cases[k].w[t]);
        loss_free(&c);
    }
}

/* 1 x 1 plans across the series / log1p boundary p = 2^-10 against
 * -log1p(-p) to a few ulp; masks that never differ give 0. */
static void test_single_entry(void)
{
    const double ps[8] = {1e-8, 1e-6, 9.765e-4, 0.0009765625, 0.0009766, 1e-3, 0.5, 0.99};
    uint8_t one = 1, zero = 0;
    for (int k = 0; k < 8; k++) {
        double p[4] = {ps[k], 0.3, 0.3, 0.3}, g[4], s = -1.0;
        GM_CHECK(gm_loss_fgbg_f64(p, 1, 1, &one, &zero, 0.0, 0.999, 2.0, &s, g) == GM_OK);
        GM_CHECK_CLOSE(s, -log1p(-ps[k]), 1e-15, 0.0);
        GM_CHECK_CLOSE(g[0], 2.0 / (1.0 - ps[k]), 1e-15, 0.0);
        GM_CHECK(g[1] == 0.0 && g[2] == 0.0 && g[3] == 0.0);
        GM_CHECK(gm_loss_fgbg_f64(p, 1, 1, &one, &one, 0.0, 0.999, 2.0, &s, g) == GM_OK);
        GM_CHECK(s == 0.0 && g[0] == 0.0 && g[1] == 0.0 && g[2] == 0.0 && g[3] == 0.0);
    }
}

/* Both kernels on c with lo = 1e-6, hi = 0.999, weight = 0.7. */
static void loss_run(const loss_case *c, double *s, double *g, double *sf, float *gf)
{
    GM_CHECK(gm_loss_fgbg_f64(c->p, c->n, c->m, c->sfg, c->tfg, 1e-6, 0.999, 0.7, s, g)
             == GM_OK);
    GM_CHECK(gm_loss_fgbg_f32(c->pf, c->n, c->m, c->sfg, c->tfg, 1e-6, 0.999, 0.7, sf, gf)
             == GM_OK);
}

/* Sum and grad bitwise identical with 1 and with 2 threads. */
static void test_threads_identical(void)
{
    loss_case c;
    loss_setup(&c, 300, 257, P_MIXED);
    size_t len = 301 * 258;
    double *g1 = gm_test_xmalloc(len * sizeof *g1), *g2 = gm_test_xmalloc(len * sizeof *g2);
    float *f1 = gm_test_xmalloc(len * sizeof *f1), *f2 = gm_test_xmalloc(len * sizeof *f2);
    double s1, s2, t1, t2;
    int before = gm_get_num_threads();
    GM_CHECK(gm_set_num_threads(1) == GM_OK);
    loss_run(&c, &s1, g1, &t1, f1);
    GM_CHECK(gm_set_num_threads(2) == GM_OK);
    loss_run(&c, &s2, g2, &t2, f2);
    GM_CHECK(gm_set_num_threads(before) == GM_OK);
    GM_CHECK(memcmp(&s1, &s2, sizeof s1) == 0 && memcmp(&t1, &t2, sizeof t1) == 0);
    GM_CHECK(memcmp(g1, g2, len * sizeof *g1) == 0);
    GM_CHECK(memcmp(f1, f2, len * sizeof *f1) == 0);
    loss_check(&c, 1e-6, 0.999, 0.7);
    gm_test_free_all((void *[]){g1, g2, f1, f2}, 4);
    loss_free(&c);
}

/* GM_ERR_INVALID unless 0 <= lo < hi < 1 and n, m >= 1; the outputs are
 * not written then. */
static void test_invalid(void)
{
    double p[9] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}, g[9], s = 42.0;
    float pf[9] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f}, gf[9];
    uint8_t a[2] = {1, 0}, b[2] = {0, 1};
    for (int i = 0; i < 9; i++) gf[i] = (float)(g[i] = -5.0);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, 0.0, 1.0, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, 0.0, 1.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, 0.5, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, 0.6, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, -0.1, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, 0.0, NAN, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 2, a, b, NAN, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 0, 2, a, b, 0.0, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f64(p, 2, 0, a, b, 0.0, 0.5, 1.0, &s, g) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f32(pf, 2, 2, a, b, 0.0, 1.0, 1.0, &s, gf) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f32(pf, 2, 2, a, b, 0.5, 0.5, 1.0, &s, gf) == GM_ERR_INVALID);
    GM_CHECK(gm_loss_fgbg_f32(pf, 0, 2, a, b, 0.0, 0.5, 1.0, &s, gf) == GM_ERR_INVALID);
    int untouched = s == 42.0;
    for (int i = 0; i < 9; i++) untouched &= g[i] == -5.0 && gf[i] == -5.0f;
    GM_CHECK(untouched);
}

int main(void)
{
    GM_RUN(test_kinds);
    GM_RUN(test_single_entry);
    GM_RUN(test_threads_identical);
    GM_RUN(test_invalid);
    return gm_test_summary();
}

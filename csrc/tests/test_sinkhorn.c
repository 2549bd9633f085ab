/* Tests of gm_sinkhorn.c: plans against a direct double-precision
 * log-domain Sinkhorn loop, marginals, batches, thread-count invariance,
 * tiny regularization, zero masses and error codes. */
#include "geomatch.h"
#include "gm_test.h"

#include <stdlib.h>
#include <string.h>

/* Direct reference: `iters` plain log-domain iterations (rows, then
 * columns) in double; writes the plan into P. O(iters n m). */
static void ref_sinkhorn(const double *C, const double *a, const double *b, int n,
                         int m, double reg, double rma, double rmb, int iters, double *P)
{
    double *f = calloc(n, sizeof *f), *g = calloc(m, sizeof *g);
    double pa = isinf(rma) ? 1.0 : rma / (rma + reg), pb = isinf(rmb) ? 1.0 : rmb / (rmb + reg);
    for (int it = 0; it < iters; it++) {
        for (int i = 0; i < n; i++) {
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < m; j++) mx = fmax(mx, (g[j] - C[i * m + j]) / reg);
            for (int j = 0; j < m; j++) s += exp((g[j] - C[i * m + j]) / reg - mx);
            f[i] = pa * reg * (log(a[i]) - mx - log(s));
        }
        for (int j = 0; j < m; j++) {
            double mx = -INFINITY, s = 0;
            for (int i = 0; i < n; i++) mx = fmax(mx, (f[i] - C[i * m + j]) / reg);
            for (int i = 0; i < n; i++) s += exp((f[i] - C[i * m + j]) / reg - mx);
            g[j] = pb * reg * (log(b[j]) - mx - log(s));
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) P[i * m + j] = exp((f[i] + g[j] - C[i * m + j]) / reg);
    free(f);
    free(g);
}

/* Random problem: costs in [0, 1), positive masses summing to 1. */
static void make_problem(unsigned long long seed, int n, int m, double *C, double *a,
                         double *b)
{
    unsigned long long st = seed;
    double sa = 0, sb = 0;
    for (int k = 0; k < n * m; k++) C[k] = gm_test_uniform(&st);
    for (int i = 0; i < n; i++) sa += (a[i] = 0.1 + gm_test_uniform(&st));
    for (int j = 0; j < m; j++) sb += (b[j] = 0.1 + gm_test_uniform(&st));
    for (int i = 0; i < n; i++) a[i] /= sa;
    for (int j = 0; j < m; j++) b[j] /= sb;
}

/* Max |row sums - a| and |column sums - b| of a plan. */
static double marg_err(const double *P, const double *a, const double *b, int n, int m)
{
    double e = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < m; j++) s += P[i * m + j];
        e = fmax(e, fabs(s - a[i]));
    }
    for (int j = 0; j < m; j++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += P[i * m + j];
        e = fmax(e, fabs(s - b[j]));
    }
    return e;
}

static void check_against_ref(int n, int m, double reg, double rma, double rmb)
{
    double *C = malloc(sizeof(double) * n * m), *a = malloc(sizeof(double) * n);
    double *b = malloc(sizeof(double) * m), *P = malloc(sizeof(double) * n * m);
    double *R = malloc(sizeof(double) * n * m), err = 0, worst = 0;
    float *Cf = malloc(sizeof(float) * n * m), *af = malloc(sizeof(float) * n);
    float *bf = malloc(sizeof(float) * m), *Pf = malloc(sizeof(float) * n * m);
    int it = 0, itf = 0;
    make_problem(7 + n * 31 + m, n, m, C, a, b);
    for (int k = 0; k < n * m; k++) Cf[k] = (float)C[k];
    for (int i = 0; i < n; i++) af[i] = (float)a[i];
    for (int j = 0; j < m; j++) bf[j] = (float)b[j];
    /* fixed iteration count (tol 0) so both do the same iterations */
    GM_CHECK(gm_sinkhorn_f64(C, a, b, 1, n, m, reg, rma, rmb, 300, 0.0, P, NULL, NULL,
                             &it, &err) == GM_OK);
    GM_CHECK(it == 300);
    ref_sinkhorn(C, a, b, n, m, reg, rma, rmb, 300, R);
    for (int k = 0; k < n * m; k++) worst = fmax(worst, fabs(P[k] - R[k]));
    GM_CHECK_CLOSE(worst, 0.0, 0.0, 1e-12);
    if (isinf(rma) && isinf(rmb)) GM_CHECK(marg_err(P, a, b, n, m) < 1e-6);
    GM_CHECK(gm_sinkhorn_f32(Cf, af, bf, 1, n, m, reg, rma, rmb, 300, 0.0, Pf, NULL, NULL,
                             &itf, &err) == GM_OK);
    worst = 0;
    for (int k = 0; k < n * m; k++) worst = fmax(worst, fabs(Pf[k] - R[k]));
    GM_CHECK_CLOSE(worst, 0.0, 0.0, 2e-5);
    free(C); free(a); free(b); free(P); free(R); free(Cf); free(af); free(bf); free(Pf);
}

static void test_balanced(void)
{
    check_against_ref(5, 7, 0.1, INFINITY, INFINITY);
    check_against_ref(40, 33, 0.05, INFINITY, INFINITY);
    check_against_ref(70, 3, 1.0, INFINITY, INFINITY);
}

static void test_unbalanced(void)
{
    check_against_ref(6, 9, 0.1, 1.0, 1.0);
    check_against_ref(33, 40, 0.05, 0.5, 2.0);
    check_against_ref(20, 20, 0.1, INFINITY, 0.3); /* semi-relaxed */
    check_against_ref(8, 5, 0.2, 0.0, INFINITY);   /* a ignored */
}

/* Converged balanced plan has both marginals; tol is honoured. */
static void test_tol_and_batch(void)
{
    enum { B = 3, N = 17, M = 23 };
    double C[B * N * M], a[B * N], b[B * M], P[B * N * M], f[B * N], g[B * M], err[B];
    int it[B];
    for (int k = 0; k < B; k++) make_problem(100 + k, N, M, C + k * N * M, a + k * N, b + k * M);
    GM_CHECK(gm_sinkhorn_f64(C, a, b, B, N, M, 0.05, INFINITY, INFINITY, 5000, 1e-12, P,
                             f, g, it, err) == GM_OK);
    for (int k = 0; k < B; k++) {
        GM_CHECK(err[k] < 1e-12 && it[k] < 5000 && it[k] > 1);
        GM_CHECK(marg_err(P + k * N * M, a + k * N, b + k * M, N, M) < 1e-10);
        /* P = exp((f + g - C)/reg) */
        double w = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < M; j++) {
                double q = exp((f[k * N + i] + g[k * M + j] - C[k * N * M + i * M + j]) / 0.05);
                w = fmax(w, fabs(q - P[k * N * M + i * M + j]));
            }
        GM_CHECK(w < 1e-12);
        /* each batch element equals its own single solve */
        double P1[N * M];
        int it1;
        double e1;
        GM_CHECK(gm_sinkhorn_f64(C + k * N * M, a + k * N, b + k * M, 1, N, M, 0.05,
                                 INFINITY, INFINITY, 5000, 1e-12, P1, NULL, NULL, &it1,
                                 &e1) == GM_OK);
        GM_CHECK(it1 == it[k] && memcmp(P1, P + k * N * M, sizeof P1) == 0);
    }
}

/* Same bits for 1 and 2 threads, small (batch-parallel) and large problems. */
static void test_threads(void)
{
    int sizes[2][3] = {{4, 30, 20}, {1, 400, 340}};
    int before = gm_get_num_threads();
    for (int s = 0; s < 2; s++) {
        int B = sizes[s][0], n = sizes[s][1], m = sizes[s][2], it1[4], it2[4];
        size_t nm = (size_t)n * m;
        float *C = malloc(sizeof(float) * B * nm), *a = malloc(sizeof(float) * B * n);
        float *b = malloc(sizeof(float) * B * m), *P1 = malloc(sizeof(float) * B * nm);
        float *P2 = malloc(sizeof(float) * B * nm);
        unsigned long long st = 99;
        double e[4];
        for (size_t k = 0; k < B * nm; k++) C[k] = (float)gm_test_uniform(&st);
        for (int k = 0; k < B * n; k++) a[k] = 1.0f / n;
        for (int k = 0; k < B * m; k++) b[k] = 1.0f / m;
        for (int reg_i = 0; reg_i < 2; reg_i++) {
            double reg = reg_i ? 1e-3 : 0.05;
            gm_set_num_threads(1);
            GM_CHECK(gm_sinkhorn_f32(C, a, b, B, n, m, reg, INFINITY, 2.0, 200, 1e-9, P1,
                                     NULL, NULL, it1, e) == GM_OK);
            gm_set_num_threads(2);
            GM_CHECK(gm_sinkhorn_f32(C, a, b, B, n, m, reg, INFINITY, 2.0, 200, 1e-9, P2,
                                     NULL, NULL, it2, e) == GM_OK);
            GM_CHECK(memcmp(P1, P2, sizeof(float) * B * nm) == 0);
            GM_CHECK(memcmp(it1, it2, sizeof(int) * B) == 0);
        }
        free(C); free(a); free(b); free(P1); free(P2);
    }
    gm_set_num_threads(before);
}

/* reg = 1e-4 x cost range (float) and 1e-6 (double): finite, non-zero,
 * marginals met. */
static void test_tiny_reg(void)
{
    enum { N = 40, M = 50 };
    double C[N * M], a[N], b[M], P[N * M], err;
    float Cf[N * M], af[N], bf[M], Pf[N * M];
    int it;
    make_problem(5, N, M, C, a, b);
    for (int k = 0; k < N * M; k++) Cf[k] = (float)C[k];
    for (int i = 0; i < N; i++) af[i] = (float)a[i];
    for (int j = 0; j < M; j++) bf[j] = (float)b[j];
    GM_CHECK(gm_sinkhorn_f64(C, a, b, 1, N, M, 1e-6, INFINITY, INFINITY, 20000, 1e-9, P,
                             NULL, NULL, &it, &err) == GM_OK);
    double tot = 0, col = 0;
    int finite = 1;
    for (int k = 0; k < N * M; k++) { finite &= isfinite(P[k]); tot += P[k]; }
    GM_CHECK(finite && fabs(tot - 1.0) < 1e-6);
    for (int j = 0; j < M; j++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += P[i * M + j];
        col = fmax(col, fabs(s - b[j]));
    }
    GM_CHECK(col < 1e-9);
    GM_CHECK(gm_sinkhorn_f32(Cf, af, bf, 1, N, M, 1e-4, INFINITY, INFINITY, 20000, 1e-7, Pf,
                             NULL, NULL, &it, &err) == GM_OK);
    tot = 0;
    finite = 1;
    for (int k = 0; k < N * M; k++) { finite &= isfinite(Pf[k]); tot += Pf[k]; }
    GM_CHECK(finite && fabs(tot - 1.0) < 1e-4);
}

/* Zero masses give zero rows/columns and -inf potentials. */
static void test_zero_mass(void)
{
    double C[12], a[3] = {0.5, 0.0, 0.5}, b[4] = {0.25, 0.25, 0.0, 0.5}, P[12], f[3], g[4], e;
    int it;
    unsigned long long st = 3;
    for (int k = 0; k < 12; k++) C[k] = gm_test_uniform(&st);
    GM_CHECK(gm_sinkhorn_f64(C, a, b, 1, 3, 4, 0.1, INFINITY, INFINITY, 2000, 1e-12, P, f,
                             g, &it, &e) == GM_OK);
    GM_CHECK(isinf(f[1]) && f[1] < 0 && isinf(g[2]) && g[2] < 0);
    for (int j = 0; j < 4; j++) GM_CHECK(P[4 + j] == 0.0);
    for (int i = 0; i < 3; i++) GM_CHECK(P[i * 4 + 2] == 0.0);
    GM_CHECK(marg_err(P, a, b, 3, 4) < 1e-10);
}

static void test_errors(void)
{
    double C[4] = {0, 1, 1, 0}, a[2] = {0.5, 0.5}, b[2] = {0.5, 0.5}, P[4];
    int it;
    double e;
#define SK(C_, a_, b_, reg, rma, rmb, mi, tol) \
    gm_sinkhorn_f64(C_, a_, b_, 1, 2, 2, reg, rma, rmb, mi, tol, P, NULL, NULL, &it, &e)
    GM_CHECK(SK(C, a, b, 0.1, INFINITY, INFINITY, 10, 1e-9) == GM_OK);
    GM_CHECK(SK(C, a, b, 0.0, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, -1.0, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, NAN, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, 0.1, -1.0, INFINITY, 10, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, 0.1, 1.0, NAN, 10, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, 0.1, INFINITY, INFINITY, 0, 1e-9) == GM_ERR_INVALID);
    GM_CHECK(SK(C, a, b, 0.1, INFINITY, INFINITY, 10, -1.0) == GM_ERR_INVALID);
    double Cn[4] = {0, NAN, 1, 0}, an[2] = {-0.5, 1.5}, az[2] = {0, 0}, bi[2] = {INFINITY, 1};
    double bu[2] = {0.25, 0.25};
    GM_CHECK(SK(Cn, a, b, 0.1, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_NONFINITE_ARG(0));
    GM_CHECK(SK(C, an, b, 0.1, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_NEGATIVE_ARG(1));
    GM_CHECK(SK(C, a, az, 0.1, 1.0, 1.0, 10, 1e-9) == GM_ERR_ZEROMASS_ARG(2));
    GM_CHECK(SK(C, a, bi, 0.1, 1.0, 1.0, 10, 1e-9) == GM_ERR_NONFINITE_ARG(2));
    gm_clear_error();
    GM_CHECK(SK(C, a, bu, 0.1, INFINITY, INFINITY, 10, 1e-9) == GM_ERR_UNBALANCED);
    /* the details carry both totals: sum(a) = 1, sum(b) = 0.5 */
    GM_CHECK(strstr(gm_error_detail(), "sum(a)=1,") != NULL);
    GM_CHECK(strstr(gm_error_detail(), "sum(b)=0.5 ") != NULL);
    GM_CHECK(SK(C, a, bu, 0.1, 1.0, INFINITY, 10, 1e-9) == GM_OK); /* semi-relaxed: fine */
    GM_CHECK(gm_sinkhorn_f64(C, a, b, 0, 2, 2, 0.1, INFINITY, INFINITY, 10, 0, P, NULL, NULL,
                             &it, &e) == GM_ERR_INVALID);
#undef SK
}

int main(void)
{
    printf("test_sinkhorn\n");
    GM_RUN(test_balanced);
    GM_RUN(test_unbalanced);
    GM_RUN(test_tol_and_batch);
    GM_RUN(test_threads);
    GM_RUN(test_tiny_reg);
    GM_RUN(test_zero_mass);
    GM_RUN(test_errors);
    return gm_test_summary();
}

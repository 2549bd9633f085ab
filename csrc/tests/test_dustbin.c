/* Tests of gm_dustbin.c: forward plan against a literal double-precision
 * log-domain reference, the VJP against central finite differences of that
 * reference, float32 against float64, thread-count independence, and the
 * error codes. */
#include "geomatch.h"
#include "gm_test.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* Literal reference: the docs/method.md ("Dustbin layer") recursion on the augmented matrix, in
 * double, with two-pass log-sum-exp.  P is (n+1) x (m+1). */
static void ref_plan(const double *S, const double *mu, const double *nu, size_t n, size_t m,
                     double bin, double reg, double reg_m, int iters, double *P)
{
    size_t n1 = n + 1, m1 = m + 1;
    double lam = 1.0 / reg, phi = reg_m / (reg_m + reg);
    double *St = malloc(n1 * m1 * sizeof *St), *u = calloc(n1, sizeof *u),
           *v = calloc(m1, sizeof *v);
    for (size_t i = 0; i < n1; i++)
        for (size_t j = 0; j < m1; j++)
            St[i * m1 + j] = (i < n && j < m) ? S[i * m + j] : bin;
    for (int t = 0; t < iters; t++) {
        for (size_t i = 0; i < n1; i++) {
            double mx = -INFINITY, s = 0.0;
            for (size_t j = 0; j < m1; j++) mx = fmax(mx, lam * St[i * m1 + j] + lam * v[j]);
            for (size_t j = 0; j < m1; j++) s += exp(lam * St[i * m1 + j] + lam * v[j] - mx);
            u[i] = phi / lam * (log(mu[i]) - (mx + log(s)));
        }
        for (size_t j = 0; j < m1; j++) {
            double mx = -INFINITY, s = 0.0;
            for (size_t i = 0; i < n1; i++) mx = fmax(mx, lam * St[i * m1 + j] + lam * u[i]);
            for (size_t i = 0; i < n1; i++) s += exp(lam * St[i * m1 + j] + lam * u[i] - mx);
            v[j] = phi / lam * (log(nu[j]) - (mx + log(s)));
        }
    }
    for (size_t i = 0; i < n1; i++)
        for (size_t j = 0; j < m1; j++) P[i * m1 + j] = exp(lam * (St[i * m1 + j] + u[i] + v[j]));
    free(St);
    free(u);
    free(v);
}

/* Random problem: scores in [-1, 1], positive marginals with a dustbin mass. */
static void make_problem(unsigned long long *seed, size_t n, size_t m, double *S, double *mu,
                         double *nu)
{
    double sm = 0.0, sn = 0.0;
    for (size_t k = 0; k < n * m; k++) S[k] = 2.0 * gm_test_uniform(seed) - 1.0;
    for (size_t i = 0; i < n; i++) sm += (mu[i] = 0.2 + gm_test_uniform(seed));
    for (size_t j = 0; j < m; j++) sn += (nu[j] = 0.2 + gm_test_uniform(seed));
    for (size_t i = 0; i < n; i++) mu[i] *= 0.7 / sm;
    for (size_t j = 0; j < m; j++) nu[j] *= 0.6 / sn;
    mu[n] = 0.3;
    nu[m] = 0.4;
}

static double max_abs(const double *x, size_t len)
{
    double r = 0.0;
    for (size_t k = 0; k < len; k++) r = fmax(r, fabs(x[k]));
    return r;
}

static void test_forward_f64(void)
{
    unsigned long long seed = 11;
    size_t sizes[3][2] = {{1, 1}, {7, 5}, {40, 33}};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s][0], m = sizes[s][1], len = (n + 1) * (m + 1);
        double *S = malloc(n * m * 8), *mu = malloc((n + 1) * 8), *nu = malloc((m + 1) * 8);
        double *P = malloc(len * 8), *R = malloc(len * 8);
        make_problem(&seed, n, m, S, mu, nu);
        ref_plan(S, mu, nu, n, m, 0.3, 0.1, 10.0, 10, R);
        for (int method = 0; method <= 2; method++) {
            int used = -1;
            GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, n, m, 0.3, 0.1, 10.0, 10, method, P,
                                             &used) == GM_OK);
            GM_CHECK(used == (method == GM_DUSTBIN_LOG ? GM_DUSTBIN_LOG : GM_DUSTBIN_KERNEL));
            double sc = max_abs(R, len);
            for (size_t k = 0; k < len; k++) GM_CHECK_CLOSE(P[k], R[k], 1e-10, 1e-13 * sc);
        }
        free(S), free(mu), free(nu), free(P), free(R);
    }
}

static void test_forward_f32(void)
{
    unsigned long long seed = 12;
    size_t n = 23, m = 31, len = (n + 1) * (m + 1);
    double S[23 * 31], mu[24], nu[32], R[24 * 32];
    float Sf[23 * 31], muf[24], nuf[32], P[24 * 32];
    make_problem(&seed, n, m, S, mu, nu);
    for (size_t k = 0; k < n * m; k++) S[k] = (double)(Sf[k] = (float)S[k]);
    for (size_t i = 0; i <= n; i++) mu[i] = (double)(muf[i] = (float)mu[i]);
    for (size_t j = 0; j <= m; j++) nu[j] = (double)(nuf[j] = (float)nu[j]);
    ref_plan(S, mu, nu, n, m, -0.2, 0.05, 3.0, 7, R);
    for (int method = 1; method <= 2; method++) {
        GM_CHECK(gm_dustbin_sinkhorn_f32(Sf, muf, nuf, n, m, -0.2, 0.05, 3.0, 7, method, P,
                                         NULL) == GM_OK);
        double sc = max_abs(R, len);
        for (size_t k = 0; k < len; k++) GM_CHECK_CLOSE(P[k], R[k], 3e-4, 3e-6 * sc);
    }
}

/* sum(G * P) (or sum(G * log P)) for the reference plan. */
static double ref_loss(const double *S, const double *mu, const double *nu, const double *G,
                       size_t n, size_t m, double bin, int wrt_log)
{
    size_t len = (n + 1) * (m + 1);
    double *P = malloc(len * 8), l = 0.0;
    ref_plan(S, mu, nu, n, m, bin, 0.1, 10.0, 5, P);
    for (size_t k = 0; k < len; k++) l += G[k] * (wrt_log ? log(P[k]) : P[k]);
    free(P);
    return l;
}

static void test_vjp_finite_differences(void)
{
    unsigned long long seed = 13;
    size_t n = 3, m = 4, len = 4 * 5;
    double S[12], mu[4], nu[5], G[20], dS[12], Sp[12], Sm[12], db;
    make_problem(&seed, n, m, S, mu, nu);
    for (size_t k = 0; k < len; k++) G[k] = 2.0 * gm_test_uniform(&seed) - 1.0;
    for (int method = 1; method <= 2; method++)
        for (int wl = 0; wl <= 1; wl++) {
            const double h = 1e-6;
            GM_CHECK(gm_dustbin_sinkhorn_vjp_f64(S, mu, nu, G, n, m, 0.3, 0.1, 10.0, 5, method,
                                                 wl, dS, &db, NULL) == GM_OK);
            for (size_t k = 0; k < n * m; k++) {
                memcpy(Sp, S, sizeof S);
                memcpy(Sm, S, sizeof S);
                Sp[k] += h;
                Sm[k] -= h;
                double fd = (ref_loss(Sp, mu, nu, G, n, m, 0.3, wl) -
                             ref_loss(Sm, mu, nu, G, n, m, 0.3, wl)) / (2 * h);
                GM_CHECK_CLOSE(dS[k], fd, 1e-5, 1e-8);
            }
            double fdb = (ref_loss(S, mu, nu, G, n, m, 0.3 + h, wl) -
                          ref_loss(S, mu, nu, G, n, m, 0.3 - h, wl)) / (2 * h);
            GM_CHECK_CLOSE(db, fdb, 1e-5, 1e-8);
        }
}

static void test_vjp_f32_vs_f64(void)
{
    unsigned long long seed = 14;
    size_t n = 30, m = 21, len = 31 * 22;
    double S[30 * 21], mu[31], nu[22], G[31 * 22], d64[30 * 21], b64;
    float Sf[30 * 21], muf[31], nuf[22], Gf[31 * 22], d32[30 * 21];
    double b32;
    make_problem(&seed, n, m, S, mu, nu);
    for (size_t k = 0; k < len; k++) G[k] = 2.0 * gm_test_uniform(&seed) - 1.0;
    for (size_t k = 0; k < n * m; k++) S[k] = (double)(Sf[k] = (float)S[k]);
    for (size_t i = 0; i <= n; i++) mu[i] = (double)(muf[i] = (float)mu[i]);
    for (size_t j = 0; j <= m; j++) nu[j] = (double)(nuf[j] = (float)nu[j]);
    for (size_t k = 0; k < len; k++) G[k] = (double)(Gf[k] = (float)G[k]);
    GM_CHECK(gm_dustbin_sinkhorn_vjp_f64(S, mu, nu, G, n, m, 0.3, 0.1, 10.0, 10, 0, 1, d64,
                                         &b64, NULL) == GM_OK);
    for (int method = 1; method <= 2; method++) {
        GM_CHECK(gm_dustbin_sinkhorn_vjp_f32(Sf, muf, nuf, Gf, n, m, 0.3, 0.1, 10.0, 10, method,
                                             1, d32, &b32, NULL) == GM_OK);
        double sc = max_abs(d64, n * m);
        for (size_t k = 0; k < n * m; k++) GM_CHECK_CLOSE(d32[k], d64[k], 1e-3, 1e-5 * sc);
        GM_CHECK_CLOSE(b32, b64, 1e-4, 1e-6);
    }
}

static void test_threads_identical(void)
{
    unsigned long long seed = 15;
    size_t n = 603, m = 517, len = 604 * 518;   /* above the threading threshold */
    int before = gm_get_num_threads();
    float *S = malloc(n * m * 4), *mu = malloc(604 * 4), *nu = malloc(518 * 4);
    float *G = malloc(len * 4), *P1 = malloc(len * 4), *P2 = malloc(len * 4);
    float *d1 = malloc(n * m * 4), *d2 = malloc(n * m * 4);
    double *Sd = malloc(n * m * 8), mud[604], nud[518], b1, b2;
    make_problem(&seed, n, m, Sd, mud, nud);
    for (size_t k = 0; k < n * m; k++) S[k] = (float)Sd[k];
    for (size_t i = 0; i < 604; i++) mu[i] = (float)mud[i];
    for (size_t j = 0; j < 518; j++) nu[j] = (float)nud[j];
    for (size_t k = 0; k < len; k++) G[k] = (float)gm_test_uniform(&seed);
    for (int method = 1; method <= 2; method++) {
        gm_set_num_threads(1);
        GM_CHECK(gm_dustbin_sinkhorn_f32(S, mu, nu, n, m, 0.3, 0.1, 10.0, 10, method, P1, NULL) ==
                 GM_OK);
        GM_CHECK(gm_dustbin_sinkhorn_vjp_f32(S, mu, nu, G, n, m, 0.3, 0.1, 10.0, 10, method, 0,
                                             d1, &b1, NULL) == GM_OK);
        gm_set_num_threads(3);
        GM_CHECK(gm_dustbin_sinkhorn_f32(S, mu, nu, n, m, 0.3, 0.1, 10.0, 10, method, P2, NULL) ==
                 GM_OK);
        GM_CHECK(gm_dustbin_sinkhorn_vjp_f32(S, mu, nu, G, n, m, 0.3, 0.1, 10.0, 10, method, 0,
                                             d2, &b2, NULL) == GM_OK);
        GM_CHECK(memcmp(P1, P2, len * 4) == 0);
        GM_CHECK(memcmp(d1, d2, n * m * 4) == 0);
        GM_CHECK(b1 == b2);
    }
    gm_set_num_threads(before);
    free(S), free(mu), free(nu), free(G), free(P1), free(P2), free(d1), free(d2), free(Sd);
}

static void test_errors(void)
{
    double S[6] = {0, 0.1, 0.2, 0.3, 0.4, 0.5}, mu[3] = {0.3, 0.3, 0.4}, nu[4] = {0.2, 0.2, 0.2, 0.4};
    double P[12], G[12] = {0}, dS[6];
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 0, P, NULL) == GM_OK);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.0, 10, 10, 0, P, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, -1, 10, 0, P, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 0, 0, P, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 0, 3, 0.3, 0.1, 10, 10, 0, P, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, NAN, 0.1, 10, 10, 0, P, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, INFINITY, 10, 0, P, NULL) ==
             GM_OK);
    S[4] = NAN;
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 0, P, NULL) ==
             GM_ERR_NONFINITE_ARG(0));
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 2, P, NULL) ==
             GM_ERR_NONFINITE_ARG(0));
    S[4] = 0.4;
    mu[1] = -0.1;
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 0, P, NULL) ==
             GM_ERR_NEGATIVE_ARG(1));
    mu[1] = 0.3;
    memset(nu, 0, sizeof nu);
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 0, P, NULL) ==
             GM_ERR_ZEROMASS_ARG(2));
    nu[0] = nu[3] = 0.5;   /* zero entries are fine */
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.1, 10, 10, 0, P, NULL) == GM_OK);
    GM_CHECK(P[1] == 0.0 && P[2] == 0.0);
    G[5] = INFINITY;
    GM_CHECK(gm_dustbin_sinkhorn_vjp_f64(S, mu, nu, G, 2, 3, 0.3, 0.1, 10, 10, 1, 0, dS, NULL,
                                         NULL) == GM_ERR_NONFINITE_ARG(3));
    GM_CHECK(gm_dustbin_sinkhorn_vjp_f64(S, mu, nu, G, 2, 3, 0.3, 0.1, 10, 10, 2, 1, dS, NULL,
                                         NULL) == GM_ERR_NONFINITE_ARG(3));
    /* kernel domain forced where it is unsafe: lam * range / 2 = 2000 */
    /* an overflowing gradient is an error, like the forward's, not NaN:
     * reg = 1e-30 in float, and a huge upstream gradient */
    {
        float Sf[6], muf[3], nuf[4], Gf[12], dSf[6];
        double db = -1.0;
        for (int i = 0; i < 6; i++) Sf[i] = (float)S[i];
        for (int i = 0; i < 3; i++) muf[i] = (float)mu[i];
        for (int i = 0; i < 4; i++) nuf[i] = (float)nu[i];
        for (int i = 0; i < 12; i++) Gf[i] = (float)(i % 3) - 1.0f;
        gm_clear_error();
        GM_CHECK(gm_dustbin_sinkhorn_vjp_f32(Sf, muf, nuf, Gf, 2, 3, 0.3, 1e-30, 10, 10, 0, 0,
                                             dSf, &db, NULL) == GM_ERR_NUMERIC);
        GM_CHECK(strstr(gm_error_detail(), "reg=1e-30") != NULL);
        for (int i = 0; i < 12; i++) Gf[i] *= 3e38f;
        GM_CHECK(gm_dustbin_sinkhorn_vjp_f32(Sf, muf, nuf, Gf, 2, 3, 0.3, 0.1, 10, 10, 0, 0,
                                             dSf, &db, NULL) == GM_ERR_NUMERIC);
        GM_CHECK(db == -1.0); /* outputs untouched on failure */
    }
    gm_clear_error();
    GM_CHECK(gm_dustbin_sinkhorn_f64(S, mu, nu, 2, 3, 0.3, 0.0001, 10, 10, GM_DUSTBIN_KERNEL, P,
                                     NULL) == GM_ERR_INVALID);
    GM_CHECK(strstr(gm_error_detail(), "method='kernel' is unsafe") != NULL);
}

int main(void)
{
    printf("test_dustbin\n");
    GM_RUN(test_forward_f64);
    GM_RUN(test_forward_f32);
    GM_RUN(test_vjp_finite_differences);
    GM_RUN(test_vjp_f32_vs_f64);
    GM_RUN(test_threads_identical);
    GM_RUN(test_errors);
    return gm_test_summary();
}

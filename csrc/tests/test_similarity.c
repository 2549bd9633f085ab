/* Tests of gm_similarity.c: cosine similarity against a naive double
 * reference, zero rows, non-finite inputs, extreme magnitudes, threads. */
#include "geomatch.h"
#include "gm_test.h"

#include <string.h>

static void fill(double *x, size_t n, unsigned long long *st)
{
    for (size_t i = 0; i < n; i++) x[i] = 2.0 * gm_test_uniform(st) - 1.0;
}

static void test_against_naive(void)
{
    enum { B = 3, N = 17, M = 23, D = 40 };
    unsigned long long st = 42;
    double *x = malloc(B * N * D * sizeof *x), *y = malloc(B * M * D * sizeof *y);
    double *o = malloc(B * N * M * sizeof *o);
    float *xf = malloc(B * N * D * sizeof *xf), *yf = malloc(B * M * D * sizeof *yf);
    float *of = malloc(B * N * M * sizeof *of);
    fill(x, B * N * D, &st);
    fill(y, B * M * D, &st);
    memset(x + (1 * N + 5) * D, 0, D * sizeof *x); /* a zero row in x, batch 1 */
    memset(y + (2 * M + 0) * D, 0, D * sizeof *y); /* a zero row in y, batch 2 */
    for (size_t i = 0; i < B * N * D; i++) xf[i] = (float)x[i];
    for (size_t i = 0; i < B * M * D; i++) yf[i] = (float)y[i];
    for (size_t i = 0; i < B * N * D; i++) x[i] = xf[i];
    for (size_t i = 0; i < B * M * D; i++) y[i] = yf[i];
    GM_CHECK(gm_cosine_similarity_f64(x, y, o, B, N, M, D) == GM_OK);
    GM_CHECK(gm_cosine_similarity_f32(xf, yf, of, B, N, M, D) == GM_OK);
    double e64 = 0, e32 = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < M; j++) {
                double r = gm_test_cosine(x + (b * N + i) * D, y + (b * M + j) * D, D);
                size_t at = (b * N + i) * M + j;
                if (fabs(o[at] - r) > e64) e64 = fabs(o[at] - r);
                if (fabs(of[at] - r) > e32) e32 = fabs(of[at] - r);
            }
    GM_CHECK(e64 < 1e-13);
    GM_CHECK(e32 < 1e-5);
    GM_CHECK(o[(1 * N + 5) * M + 3] == 0.0);
    GM_CHECK(of[(2 * N + 4) * M + 0] == 0.0f);
    free(x); free(y); free(o); free(xf); free(yf); free(of);
}

static void test_nonfinite(void)
{
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6] = {1, 0, 0, 0, 1, 0}, o[4];
    x[4] = NAN;
    GM_CHECK(gm_cosine_similarity_f32(x, y, o, 1, 2, 2, 3) == GM_ERR_NONFINITE_ARG(0));
    x[4] = 5;
    y[1] = -INFINITY;
    GM_CHECK(gm_cosine_similarity_f32(x, y, o, 1, 2, 2, 3) == GM_ERR_NONFINITE_ARG(1));
    double xd[3] = {1, INFINITY, 0}, od[1];
    GM_CHECK(gm_l2_normalize_rows_f64(xd, od, 1, 3) == GM_ERR_NONFINITE_ARG(0));
}

static void test_extreme_magnitudes(void)
{
    /* Squares would overflow / underflow in double: the norm is rescaled. */
    double big[3] = {3e200, 4e200, 0}, tiny[3] = {3e-200, 0, 4e-200}, o[3];
    GM_CHECK(gm_l2_normalize_rows_f64(big, o, 1, 3) == GM_OK);
    GM_CHECK_CLOSE(o[0], 0.6, 1e-15, 0);
    GM_CHECK_CLOSE(o[1], 0.8, 1e-15, 0);
    GM_CHECK(gm_l2_normalize_rows_f64(tiny, o, 1, 3) == GM_OK);
    GM_CHECK_CLOSE(o[2], 0.8, 1e-15, 0);
    float bf[2] = {3e38f, -3e38f}, of[2];
    GM_CHECK(gm_l2_normalize_rows_f32(bf, of, 1, 2) == GM_OK);
    GM_CHECK_CLOSE(of[1], -sqrt(0.5), 1e-6, 0);
    /* In place. */
    GM_CHECK(gm_l2_normalize_rows_f64(big, big, 1, 3) == GM_OK);
    GM_CHECK_CLOSE(big[1], 0.8, 1e-15, 0);
    /* Rows so small that 1/|x| overflows: still unit rows, never inf. */
    float tf[3] = {3e-40f, 0.0f, 4e-40f}, otf[3];
    GM_CHECK(gm_l2_normalize_rows_f32(tf, otf, 1, 3) == GM_OK);
    /* (subnormal inputs are stored with a few digits: compare with them) */
    double nt = sqrt((double)tf[0] * tf[0] + (double)tf[2] * tf[2]);
    GM_CHECK_CLOSE(otf[0], (double)tf[0] / nt, 1e-6, 0);
    GM_CHECK_CLOSE(otf[2], (double)tf[2] / nt, 1e-6, 0);
    double td[2] = {-3e-310, 4e-310}, otd[2];
    GM_CHECK(gm_l2_normalize_rows_f64(td, otd, 1, 2) == GM_OK);
    GM_CHECK_CLOSE(otd[0], -0.6, 1e-12, 0);
    GM_CHECK_CLOSE(otd[1], 0.8, 1e-12, 0);
}

static void test_threads_identical(void)
{
    enum { N = 300, M = 200, D = 64 };
    unsigned long long st = 7;
    float *x = malloc(N * D * sizeof *x), *y = malloc(M * D * sizeof *y);
    float *o1 = malloc(N * M * sizeof *o1), *o2 = malloc(N * M * sizeof *o2);
    for (size_t i = 0; i < N * D; i++) x[i] = (float)gm_test_uniform(&st) - 0.5f;
    for (size_t i = 0; i < M * D; i++) y[i] = (float)gm_test_uniform(&st) - 0.5f;
    int before = gm_get_num_threads();
    gm_set_num_threads(1);
    GM_CHECK(gm_cosine_similarity_f32(x, y, o1, 1, N, M, D) == GM_OK);
    gm_set_num_threads(2);
    GM_CHECK(gm_cosine_similarity_f32(x, y, o2, 1, N, M, D) == GM_OK);
    gm_set_num_threads(before);
    GM_CHECK(memcmp(o1, o2, N * M * sizeof *o1) == 0);
    free(x); free(y); free(o1); free(o2);
}

/* Above the parallel threshold (4M values) normalization runs on OpenMP
 * threads: the result must not depend on their number. */
static void test_threads_identical_parallel_path(void)
{
    enum { N = 4100, M = 8, D = 1024 };
    unsigned long long st = 11;
    float *x = malloc((size_t)N * D * sizeof *x), *y = malloc(M * D * sizeof *y);
    float *o1 = malloc(N * M * sizeof *o1), *o2 = malloc(N * M * sizeof *o2);
    float *n1 = malloc((size_t)N * D * sizeof *n1), *n2 = malloc((size_t)N * D * sizeof *n2);
    for (size_t i = 0; i < (size_t)N * D; i++) x[i] = (float)gm_test_uniform(&st) - 0.5f;
    for (size_t i = 0; i < M * D; i++) y[i] = (float)gm_test_uniform(&st) - 0.5f;
    int before = gm_get_num_threads();
    gm_set_num_threads(1);
    GM_CHECK(gm_l2_normalize_rows_f32(x, n1, N, D) == GM_OK);
    GM_CHECK(gm_cosine_similarity_f32(x, y, o1, 1, N, M, D) == GM_OK);
    gm_set_num_threads(2);
    GM_CHECK(gm_l2_normalize_rows_f32(x, n2, N, D) == GM_OK);
    GM_CHECK(gm_cosine_similarity_f32(x, y, o2, 1, N, M, D) == GM_OK);
    gm_set_num_threads(before);
    GM_CHECK(memcmp(n1, n2, (size_t)N * D * sizeof *n1) == 0);
    GM_CHECK(memcmp(o1, o2, N * M * sizeof *o1) == 0);
    double ss = 0;
    for (size_t k = 0; k < D; k++) ss += (double)n1[7 * D + k] * n1[7 * D + k];
    GM_CHECK_CLOSE(ss, 1.0, 1e-6, 0);
    x[(size_t)(N - 1) * D + 3] = NAN;    /* detected on the parallel path too */
    gm_set_num_threads(2);
    GM_CHECK(gm_l2_normalize_rows_f32(x, n2, N, D) == GM_ERR_NONFINITE_ARG(0));
    gm_set_num_threads(before);
    free(x); free(y); free(o1); free(o2); free(n1); free(n2);
}

static void test_degenerate_sizes(void)
{
    double x[2] = {1, 2}, o[4] = {9, 9, 9, 9};
    GM_CHECK(gm_cosine_similarity_f64(x, x, o, 0, 1, 1, 2) == GM_OK);
    GM_CHECK(o[0] == 9);
    GM_CHECK(gm_cosine_similarity_f64(x, x, o, 1, 2, 2, 0) == GM_OK);
    GM_CHECK(o[0] == 0 && o[3] == 0);
    GM_CHECK(gm_cosine_similarity_f64(NULL, x, o, 1, 1, 1, 2) == GM_ERR_INVALID);
    GM_CHECK(gm_cosine_similarity_f64(x, x, o, 1, 1, 1, 2) == GM_OK);
    GM_CHECK_CLOSE(o[0], 1.0, 1e-15, 0);
}

int main(void)
{
    printf("test_similarity\n");
    GM_RUN(test_against_naive);
    GM_RUN(test_nonfinite);
    GM_RUN(test_extreme_magnitudes);
    GM_RUN(test_threads_identical);
    GM_RUN(test_threads_identical_parallel_path);
    GM_RUN(test_degenerate_sizes);
    return gm_test_summary();
}

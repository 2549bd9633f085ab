/* Tests of gm_softargmax.c: argmax ties, window soft-argmax against a naive
 * double reference (interior, borders, window larger than the grid),
 * parameter and non-finite errors, thread-count independence. */
#include "geomatch.h"
#include "gm_test.h"

#include <string.h>

/* Naive window soft-argmax of one h x w map, with libm exp. */
static void naive_soft(const double *s, size_t h, size_t w, long win, double t,
                       double *out)
{
    size_t a = 0;
    for (size_t i = 1; i < h * w; i++)
        if (s[i] > s[a]) a = i;
    long ar = (long)(a / w), ac = (long)(a % w);
    double z = 0, sx = 0, sy = 0;
    for (long r = 0; r < (long)h; r++)
        for (long c = 0; c < (long)w; c++) {
            if (labs(r - ar) > win || labs(c - ac) > win) continue;
            double p = exp((s[r * w + c] - s[a]) / t);
            z += p;
            sx += p * c;
            sy += p * r;
        }
    out[0] = sx / z;
    out[1] = sy / z;
}

static void test_argmax_ties(void)
{
    float s[2 * 12] = {0};
    int64_t xy[4];
    s[5] = 1; s[7] = 1;            /* map 0: tie, first (row 1, col 1) wins */
    s[12 + 11] = 2; s[12 + 0] = -1; /* map 1: last cell */
    GM_CHECK(gm_argmax_2d_f32(s, 2, 3, 4, xy) == GM_OK);
    GM_CHECK(xy[0] == 1 && xy[1] == 1);
    GM_CHECK(xy[2] == 3 && xy[3] == 2);
    double c[6] = {0, 0, 0, 0, 0, 0};   /* constant map: (0, 0) */
    GM_CHECK(gm_argmax_2d_f64(c, 1, 2, 3, xy) == GM_OK);
    GM_CHECK(xy[0] == 0 && xy[1] == 0);
}

static void check_soft_case(size_t h, size_t w, long win, double t, unsigned long long seed,
                            size_t peak)
{
    size_t n = h * w;
    double *s = malloc(n * sizeof *s), ref[2], out[2];
    float *sf = malloc(n * sizeof *sf), outf[2];
    for (size_t i = 0; i < n; i++) s[i] = 0.1 * gm_test_uniform(&seed);
    s[peak] = 0.2;
    for (size_t i = 0; i < n; i++) sf[i] = (float)s[i];
    for (size_t i = 0; i < n; i++) s[i] = sf[i];
    naive_soft(s, h, w, win, t, ref);
    GM_CHECK(gm_window_soft_argmax_f64(s, 1, h, w, win, t, out) == GM_OK);
    GM_CHECK(gm_window_soft_argmax_f32(sf, 1, h, w, win, t, outf) == GM_OK);
    GM_CHECK_CLOSE(out[0], ref[0], 1e-12, 1e-12);
    GM_CHECK_CLOSE(out[1], ref[1], 1e-12, 1e-12);
    GM_CHECK_CLOSE(outf[0], ref[0], 1e-5, 1e-5);
    GM_CHECK_CLOSE(outf[1], ref[1], 1e-5, 1e-5);
    free(s);
    free(sf);
}

static void test_soft_against_naive(void)
{
    check_soft_case(37, 37, 7, 0.02, 1, 18 * 37 + 18);   /* interior */
    check_soft_case(37, 37, 7, 0.02, 2, 0);              /* corner */
    check_soft_case(20, 31, 7, 0.05, 3, 19 * 31 + 3);    /* bottom border */
    check_soft_case(5, 6, 50, 0.1, 4, 2 * 6 + 4);        /* window > grid */
    check_soft_case(9, 9, 0, 0.02, 5, 40);               /* window 0 */
    check_soft_case(1, 13, 3, 1.0, 6, 12);               /* one row */
}

static void test_soft_window_zero_is_argmax(void)
{
    double s[12] = {0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0}, out[2];
    GM_CHECK(gm_window_soft_argmax_f64(s, 1, 3, 4, 0, 0.02, out) == GM_OK);
    GM_CHECK(out[0] == 3.0 && out[1] == 1.0);
    /* A flat window averages its cells: uniform 3x3 around (1, 1). */
    double u[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    GM_CHECK(gm_window_soft_argmax_f64(u, 1, 3, 3, 1, 0.02, out) == GM_OK);
    GM_CHECK_CLOSE(out[0], 0.5, 1e-15, 0); /* argmax (0,0): window rows/cols 0..1 */
    GM_CHECK_CLOSE(out[1], 0.5, 1e-15, 0);
}

static void test_errors(void)
{
    float s[4] = {0, 1, 2, 3}, o[2];
    int64_t xy[2];
    GM_CHECK(gm_window_soft_argmax_f32(s, 1, 2, 2, -1, 0.02, o) == GM_ERR_INVALID);
    GM_CHECK(gm_window_soft_argmax_f32(s, 1, 2, 2, 1, 0.0, o) == GM_ERR_INVALID);
    GM_CHECK(gm_window_soft_argmax_f32(s, 1, 2, 2, 1, INFINITY, o) == GM_ERR_INVALID);
    GM_CHECK(gm_window_soft_argmax_f32(s, 1, 0, 2, 1, 0.02, o) == GM_ERR_INVALID);
    s[2] = NAN;
    GM_CHECK(gm_window_soft_argmax_f32(s, 1, 2, 2, 1, 0.02, o) == GM_ERR_NONFINITE_ARG(0));
    GM_CHECK(gm_argmax_2d_f32(s, 1, 2, 2, xy) == GM_ERR_NONFINITE_ARG(0));
    /* Tiny temperature: no NaN, the argmax itself. */
    double d[4] = {0, 1, 1 - 1e-12, 0}, od[2];
    GM_CHECK(gm_window_soft_argmax_f64(d, 1, 2, 2, 1, 1e-300, od) == GM_OK);
    GM_CHECK(od[0] == 1.0 && od[1] == 0.0);
}

static void test_threads_identical(void)
{
    enum { K = 500, H = 23, W = 29 };
    unsigned long long st = 99;
    float *s = malloc(K * H * W * sizeof *s), *o1 = malloc(2 * K * sizeof *o1);
    float *o2 = malloc(2 * K * sizeof *o2);
    for (size_t i = 0; i < (size_t)K * H * W; i++) s[i] = (float)gm_test_uniform(&st);
    int before = gm_get_num_threads();
    gm_set_num_threads(1);
    GM_CHECK(gm_window_soft_argmax_f32(s, K, H, W, 7, 0.02, o1) == GM_OK);
    gm_set_num_threads(2);
    GM_CHECK(gm_window_soft_argmax_f32(s, K, H, W, 7, 0.02, o2) == GM_OK);
    gm_set_num_threads(before);
    GM_CHECK(memcmp(o1, o2, 2 * K * sizeof *o1) == 0);
    free(s); free(o1); free(o2);
}

/* Above the parallel threshold (4M values): maps split among threads. */
static void test_threads_identical_parallel_path(void)
{
    enum { K = 1200, H = 50, W = 70 };
    unsigned long long st = 5;
    size_t n = (size_t)K * H * W;
    double *s = malloc(n * sizeof *s), *o1 = malloc(2 * K * sizeof *o1);
    double *o2 = malloc(2 * K * sizeof *o2);
    int64_t *a1 = malloc(2 * K * sizeof *a1), *a2 = malloc(2 * K * sizeof *a2);
    for (size_t i = 0; i < n; i++) s[i] = gm_test_uniform(&st);
    int before = gm_get_num_threads();
    gm_set_num_threads(1);
    GM_CHECK(gm_window_soft_argmax_f64(s, K, H, W, 7, 0.02, o1) == GM_OK);
    GM_CHECK(gm_argmax_2d_f64(s, K, H, W, a1) == GM_OK);
    gm_set_num_threads(2);
    GM_CHECK(gm_window_soft_argmax_f64(s, K, H, W, 7, 0.02, o2) == GM_OK);
    GM_CHECK(gm_argmax_2d_f64(s, K, H, W, a2) == GM_OK);
    GM_CHECK(memcmp(o1, o2, 2 * K * sizeof *o1) == 0);
    GM_CHECK(memcmp(a1, a2, 2 * K * sizeof *a1) == 0);
    /* spot-check one map against the naive reference */
    double ref[2];
    naive_soft(s + (size_t)(K - 1) * H * W, H, W, 7, 0.02, ref);
    GM_CHECK_CLOSE(o2[2 * (K - 1)], ref[0], 1e-12, 1e-12);
    GM_CHECK_CLOSE(o2[2 * (K - 1) + 1], ref[1], 1e-12, 1e-12);
    s[n - 1] = INFINITY;
    GM_CHECK(gm_argmax_2d_f64(s, K, H, W, a2) == GM_ERR_NONFINITE_ARG(0));
    gm_set_num_threads(before);
    free(s); free(o1); free(o2); free(a1); free(a2);
}

int main(void)
{
    printf("test_softargmax\n");
    GM_RUN(test_argmax_ties);
    GM_RUN(test_soft_against_naive);
    GM_RUN(test_soft_window_zero_is_argmax);
    GM_RUN(test_errors);
    GM_RUN(test_threads_identical);
    GM_RUN(test_threads_identical_parallel_path);
    return gm_test_summary();
}

/* Tests of gm_sgemm_avx512.c (and gm_gemm_f32 in both modes) against a
 * naive double product: every transpose combination, sizes around the
 * 14 x 32 tile and the k blocks, strided operands, alpha/beta with beta = 0
 * over NaN, and identical bits for 1..4 threads.  Bound: |C - C64| <=
 * (k + 2) eps32 (|alpha| |A||B| + |beta| |C0|). */
#include "geomatch.h"
#include "gm_test.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long seed = 0x2545F4914F6CDD1DULL;

static double rnd(void) { return 2.0 * gm_test_uniform(&seed) - 1.0; }

/* One product: op(A) m x k, op(B) k x n, leading dimensions padded by pad. */
static void check_one(int mode, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                      float beta, size_t pad)
{
    size_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    size_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    float *a = gm_test_xmalloc(ar * lda * sizeof(float));
    float *b = gm_test_xmalloc(br * ldb * sizeof(float));
    float *c = gm_test_xmalloc(m * ldc * sizeof(float));
    float *c0 = gm_test_xmalloc(m * ldc * sizeof(float));
    for (size_t i = 0; i < ar * lda; i++) a[i] = (float)rnd();
    for (size_t i = 0; i < br * ldb; i++) b[i] = (float)rnd();
    for (size_t i = 0; i < m * ldc; i++) c0[i] = c[i] = beta == 0.0f ? NAN : (float)rnd();
    GM_CHECK(gm_sgemm_set_mode(mode) == GM_OK);
    GM_CHECK(gm_gemm_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == GM_OK);
    int bad = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (size_t p = 0; p < k; p++) {
                double x = ta ? a[p * lda + i] : a[i * lda + p];
                double y = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += x * y;
                mag += fabs(x * y);
            }
            double ref = alpha * s, bound = fabs(alpha) * mag;
            if (beta != 0.0f) {
                ref += beta * (double)c0[i * ldc + j];
                bound += fabs(beta * (double)c0[i * ldc + j]);
            }
            bound = (double)(k + 2) * FLT_EPSILON * bound + FLT_MIN;
            double got = c[i * ldc + j];
            if (!(fabs(got - ref) <= bound)) bad++;
        }
    GM_CHECK(bad == 0);
    if (bad)
        fprintf(stderr, "  mode %d ta %d tb %d m %zu n %zu k %zu: %d bad\n", mode, ta, tb, m, n,
                k, bad);
    /* the padding of C is untouched (NaN or the initial values) */
    int pad_ok = 1;
    for (size_t i = 0; i < m; i++)
        for (size_t j = n; j < ldc; j++)
            if (memcmp(&c[i * ldc + j], &c0[i * ldc + j], sizeof(float)) != 0) pad_ok = 0;
    GM_CHECK(pad_ok);
    free(a);
    free(b);
    free(c);
    free(c0);
}

static const size_t sizes[][3] = {{1, 1, 1},   {13, 31, 2},  {14, 32, 3},   {15, 33, 5},
                                  {29, 65, 383}, {31, 17, 384}, {33, 7, 385}, {43, 97, 769},
                                  {3, 200, 31}, {200, 3, 37}};

static void test_modes_transposes_sizes(void)
{
    int modes[2] = {GM_SGEMM_BLAS, GM_SGEMM_AVX512};
    int nmodes = gm_sgemm_avx512_supported() ? 2 : 1;
    for (int mi = 0; mi < nmodes; mi++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                    check_one(modes[mi], ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], 1.0f,
                              0.0f, 0);
                    check_one(modes[mi], ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], -0.5f,
                              1.5f, 3);
                }
    GM_CHECK(gm_sgemm_set_mode(GM_SGEMM_AUTO) == GM_OK);
}

static void test_threads_identical(void)
{
    enum { M = 131, N = 77, K = 800 };
    float *a = gm_test_xmalloc(M * K * sizeof(float)), *b = gm_test_xmalloc(K * N * sizeof(float));
    float *c1 = gm_test_xmalloc(M * N * sizeof(float)), *c = gm_test_xmalloc(M * N * sizeof(float));
    for (int i = 0; i < M * K; i++) a[i] = (float)rnd();
    for (int i = 0; i < K * N; i++) b[i] = (float)rnd();
    int before = gm_get_num_threads();
    for (int mode = GM_SGEMM_AUTO; mode <= GM_SGEMM_BLAS; mode++) {
        if (gm_sgemm_set_mode(mode) != GM_OK) continue;
        gm_set_num_threads(1);
        GM_CHECK(gm_gemm_f32(0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c1, N) == GM_OK);
        for (int t = 2; t <= 4; t++) {
            gm_set_num_threads(t);
            GM_CHECK(gm_gemm_f32(0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N) == GM_OK);
            GM_CHECK(memcmp(c, c1, M * N * sizeof(float)) == 0);
        }
    }
    gm_set_num_threads(before);
    GM_CHECK(gm_sgemm_set_mode(GM_SGEMM_AUTO) == GM_OK);
    free(a);
    free(b);
    free(c1);
    free(c);
}

static void test_errors_and_peak(void)
{
    float x[4] = {1, 2, 3, 4}, y[4];
    GM_CHECK(gm_sgemm_set_mode(7) == GM_ERR_INVALID);
    GM_CHECK(gm_sgemm_get_mode() == GM_SGEMM_AUTO);
    if (gm_sgemm_avx512_supported()) {
        GM_CHECK(gm_sgemm_avx512(0, 0, 0, 2, 2, 1.0f, x, 2, x, 2, 0.0f, y, 2) == GM_ERR_INVALID);
        GM_CHECK(gm_sgemm_avx512(0, 0, 2, 2, 2, 1.0f, x, 1, x, 2, 0.0f, y, 2) == GM_ERR_INVALID);
        GM_CHECK(gm_sgemm_avx512(0, 0, 2, 2, 2, 1.0f, x, 2, x, 2, 0.0f, y, 2) == GM_OK);
        GM_CHECK(y[0] == 7.0f && y[1] == 10.0f && y[2] == 15.0f && y[3] == 22.0f);
        GM_CHECK(gm_fma_peak_gflops(512, 1000, 1) > 0);
    } else {
        GM_CHECK(gm_sgemm_set_mode(GM_SGEMM_AVX512) == GM_ERR_INVALID);
        GM_CHECK(gm_sgemm_avx512(0, 0, 2, 2, 2, 1.0f, x, 2, x, 2, 0.0f, y, 2) == GM_ERR_INVALID);
        GM_CHECK(gm_fma_peak_gflops(512, 1000, 1) < 0);
    }
    GM_CHECK(gm_fma_peak_gflops(128, 1000, 1) < 0);
}

/* gm_sgemm_avx512_abt (B read in place, C^T computed) against
 * gm_sgemm_avx512(0, 1, ...) (B packed): the same bits for every m around
 * the 16/32-column panels, k around the 16-value chunks and the k blocks,
 * n around the 14-row tiles, strided operands, alpha, and 1..3 threads;
 * C's padding untouched. */
static void check_abt(size_t m, size_t n, size_t k, float alpha, size_t pad)
{
    size_t lda = k + pad, ldb = k + 2 * pad, ldc = n + pad;
    float *a = gm_test_xmalloc(m * lda * sizeof(float));
    float *b = gm_test_xmalloc(n * ldb * sizeof(float));
    float *c = gm_test_xmalloc(m * ldc * sizeof(float));
    float *c0 = gm_test_xmalloc(m * ldc * sizeof(float));
    for (size_t i = 0; i < m * lda; i++) a[i] = (float)rnd();
    for (size_t i = 0; i < n * ldb; i++) b[i] = (float)rnd();
    /* exact zeros and signed zeros too: products of -0 and +0 terms */
    a[0] = -0.0f;
    b[ldb - 1 - pad] = 0.0f;
    for (size_t i = 0; i < m * ldc; i++) c0[i] = c[i] = NAN;
    GM_CHECK(gm_sgemm_avx512(0, 1, m, n, k, alpha, a, lda, b, ldb, 0.0f, c0, ldc) == GM_OK);
    int before = gm_get_num_threads(), same = 1;
    for (int t = 1; t <= 3; t++) {
        gm_set_num_threads(t);
        GM_CHECK(gm_sgemm_avx512_abt(m, n, k, alpha, a, lda, b, ldb, c, ldc) == GM_OK);
        if (memcmp(c, c0, m * ldc * sizeof(float)) != 0) same = 0;
    }
    gm_set_num_threads(before);
    GM_CHECK(same);
    if (!same) fprintf(stderr, "  abt m %zu n %zu k %zu pad %zu: bits differ\n", m, n, k, pad);
    free(a);
    free(b);
    free(c);
    free(c0);
}

static void test_abt_bitwise(void)
{
    if (!gm_sgemm_avx512_supported()) {
        float x[4] = {1, 2, 3, 4}, y[4];
        GM_CHECK(gm_sgemm_avx512_abt(2, 2, 2, 1.0f, x, 2, x, 2, y, 2) == GM_ERR_INVALID);
        return;
    }
    static const size_t ms[] = {1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 80, 100};
    static const size_t ks[] = {1, 7, 16, 100, 383, 384, 385, 768, 1000};
    static const size_t ns[] = {1, 13, 14, 15, 29, 97};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++)
            check_abt(ms[i], ns[(i + j) % 6], ks[j], 1.0f, (i + j) % 3);
    for (size_t mm = 1; mm <= 100; mm += 3) check_abt(mm, 43, 385, 1.0f, 0);
    check_abt(80, 1369, 768, 1.0f, 0);
    check_abt(37, 200, 769, -0.75f, 5);
    float x[4] = {1, 2, 3, 4}, y[4] = {9, 9, 9, 9};
    GM_CHECK(gm_sgemm_avx512_abt(0, 2, 2, 1.0f, x, 2, x, 2, y, 2) == GM_ERR_INVALID);
    GM_CHECK(gm_sgemm_avx512_abt(2, 2, 2, 1.0f, x, 1, x, 2, y, 2) == GM_ERR_INVALID);
    GM_CHECK(gm_sgemm_avx512_abt(2, 2, 2, 1.0f, x, 2, x, 2, y, 1) == GM_ERR_INVALID);
    GM_CHECK(gm_sgemm_avx512_abt(2, 2, 2, 0.0f, x, 2, x, 2, y, 2) == GM_OK);
    GM_CHECK(y[0] == 0.0f && y[3] == 0.0f);
    /* A B^T: rows (1 2), (3 4) against themselves */
    GM_CHECK(gm_sgemm_avx512_abt(2, 2, 2, 1.0f, x, 2, x, 2, y, 2) == GM_OK);
    GM_CHECK(y[0] == 5.0f && y[1] == 11.0f && y[2] == 11.0f && y[3] == 25.0f);
}

int main(void)
{
    GM_RUN(test_modes_transposes_sizes);
    GM_RUN(test_threads_identical);
    GM_RUN(test_errors_and_peak);
    GM_RUN(test_abt_bitwise);
    return gm_test_summary();
}

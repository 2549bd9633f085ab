/* gm_test.h -- a minimal test harness for the C core's own test programs.
 * Each tests/test_*.c is a program: it calls GM_RUN(test_fn) for each test
 * function and returns gm_test_summary(). */
#ifndef GM_TEST_H
#define GM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int gm_test_failures = 0;
static int gm_test_checks = 0;

#define GM_CHECK(cond)                                                        \
    do {                                                                      \
        gm_test_checks++;                                                     \
        if (!(cond)) {                                                        \
            gm_test_failures++;                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                     \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define GM_CHECK_CLOSE(a, b, rtol, atol)                                      \
    do {                                                                      \
        double a_ = (double)(a), b_ = (double)(b);                            \
        gm_test_checks++;                                                     \
        if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_))) {                 \
            gm_test_failures++;                                               \
            fprintf(stderr, "%s:%d: %s = %.17g not close to %s = %.17g\n",    \
                    __FILE__, __LINE__, #a, a_, #b, b_);                      \
        }                                                                     \
    } while (0)

#define GM_RUN(fn)                                                            \
    do {                                                                      \
        int before_ = gm_test_failures;                                       \
        fn();                                                                 \
        printf("  %-40s %s\n", #fn, gm_test_failures == before_ ? "ok" : "FAILED"); \
    } while (0)

static int gm_test_summary(void)
{
    printf("  %d checks, %d failures\n", gm_test_checks, gm_test_failures);
    return gm_test_failures ? 1 : 0;
}

/* Deterministic xorshift64* uniform in [0, 1). */
static double gm_test_uniform(unsigned long long *state)
{
    unsigned long long x = *state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return (double)((x * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}

/* malloc that ends the program when memory runs out. */
static void *gm_test_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* Reference attention, in double, of query row i of head h: base is one batch
 * item's packed (N, 3 * H * HD) rows (queries | keys | values, heads side by
 * side), softmax(q k^T / sqrt(HD)) v.  p is scratch of N doubles; the HD
 * outputs go to o. */
static void gm_test_attention_row(const double *base, int N, int H, int HD, int h, int i,
                                  double *p, double *o)
{
    const int DM = H * HD;
    double mx = -1e300, sum = 0;
    for (int j = 0; j < N; j++) {
        double t = 0;
        for (int c = 0; c < HD; c++)
            t += base[i * 3 * DM + h * HD + c] * base[j * 3 * DM + DM + h * HD + c];
        p[j] = t / sqrt((double)HD);
        if (p[j] > mx) mx = p[j];
    }
    for (int j = 0; j < N; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
    for (int c = 0; c < HD; c++) {
        double v = 0;
        for (int j = 0; j < N; j++) v += p[j] * base[j * 3 * DM + 2 * DM + h * HD + c];
        o[c] = v / sum;
    }
}

/* free() each of the n pointers. */
static void gm_test_free_all(void *const *ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++) free(ptrs[i]);
}

/* Naive cosine similarity of rows a and b (length d) in double; 0 when
 * either row is all zero. */
static double gm_test_cosine(const double *a, const double *b, size_t d)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t k = 0; k < d; k++) {
        ab += a[k] * b[k];
        aa += a[k] * a[k];
        bb += b[k] * b[k];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

#endif

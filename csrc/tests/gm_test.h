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

#endif

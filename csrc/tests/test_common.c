/* Tests of gm_common.c: status strings, threads, finite checks, gm_exp. */
#include "geomatch.h"
#include "gm_math.h"
#include "gm_test.h"

#include <string.h>

static void test_status_strings(void)
{
    GM_CHECK(strcmp(gm_strerror(GM_OK), "success") == 0);
    GM_CHECK(strstr(gm_strerror(GM_ERR_NONFINITE_ARG(3)), "non-finite") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_NEGATIVE_ARG(1)), "negative") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_ZEROMASS_ARG(0)), "zero") != NULL);
}

static void test_threads(void)
{
    int before = gm_get_num_threads();
    GM_CHECK(gm_set_num_threads(0) == GM_ERR_INVALID);
    GM_CHECK(gm_set_num_threads(1) == GM_OK);
    GM_CHECK(gm_get_num_threads() == 1);
    GM_CHECK(gm_set_num_threads(before) == GM_OK);
    GM_CHECK(gm_blas_config() != NULL && strlen(gm_blas_config()) > 0);
}

static void test_finite(void)
{
    float xf[5] = {0, 1, -2, 3e38f, 1e-30f};
    double xd[5] = {0, 1, -2, 1e308, 1e-300};
    GM_CHECK(gm_all_finite_f32(xf, 5));
    GM_CHECK(gm_all_finite_f64(xd, 5));
    xf[2] = INFINITY;
    xd[4] = NAN;
    GM_CHECK(!gm_all_finite_f32(xf, 5));
    GM_CHECK(!gm_all_finite_f64(xd, 5));
    GM_CHECK(gm_all_finite_f32(xf, 0));
}

static void test_exp(void)
{
    double worst32 = 0, worst64 = 0;
    for (double x = -86.0; x < 88.0; x += 0.0137) {
        float y = gm_exp_f32((float)x);
        double ref = exp((double)(float)x);
        double e = fabs(y - ref) / ref;
        if (e > worst32) worst32 = e;
    }
    for (double x = -700.0; x < 709.0; x += 0.0731) {
        double e = fabs(gm_exp_f64(x) - exp(x)) / exp(x);
        if (e > worst64) worst64 = e;
    }
    GM_CHECK(worst32 < 2.5e-7);
    GM_CHECK(worst64 < 1e-15);
    GM_CHECK(gm_exp_f32(-INFINITY) == 0.0f);
    GM_CHECK(gm_exp_f64(-INFINITY) == 0.0);
    GM_CHECK(gm_exp_f32(0.0f) == 1.0f);
    GM_CHECK(gm_exp_f64(0.0) == 1.0);
}

int main(void)
{
    printf("test_common\n");
    GM_RUN(test_status_strings);
    GM_RUN(test_threads);
    GM_RUN(test_finite);
    GM_RUN(test_exp);
    return gm_test_summary();
}

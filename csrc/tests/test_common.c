/* Tests of gm_common.c: status strings, failure details, threads (process
 * wide, and in a forked child), finite checks, gm_exp. */
#define _POSIX_C_SOURCE 200809L
#include "geomatch.h"
#include "gm_math.h"
#include "gm_test.h"

#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_status_strings(void)
{
    GM_CHECK(strcmp(gm_strerror(GM_OK), "success") == 0);
    GM_CHECK(strstr(gm_strerror(GM_ERR_NONFINITE_ARG(3)), "non-finite") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_NEGATIVE_ARG(1)), "negative") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_ZEROMASS_ARG(0)), "zero") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_RANGE_ARG(4)), "range") != NULL);
    GM_CHECK(strstr(gm_strerror(GM_ERR_UNBALANCED), "mass") != NULL);
    /* the families are disjoint and give back their argument */
    GM_CHECK(GM_ERR_IS(GM_ERR_RANGE_ARG(4), GM_ERR_RANGE_BASE));
    GM_CHECK(!GM_ERR_IS(GM_ERR_RANGE_ARG(4), GM_ERR_ZEROMASS_BASE));
    GM_CHECK(GM_ERR_ARG(GM_ERR_RANGE_ARG(4), GM_ERR_RANGE_BASE) == 4);
    GM_CHECK(!GM_ERR_IS(GM_ERR_UNBALANCED, GM_ERR_NONFINITE_BASE));
}

static void *detail_in_thread(void *arg)
{
    /* details are per thread: a new thread starts empty */
    *(int *)arg = gm_error_detail()[0] == '\0';
    gm_fail(GM_ERR_INVALID, "other thread");
    return NULL;
}

static void test_details(void)
{
    pthread_t th;
    int empty = 0;
    gm_clear_error();
    GM_CHECK(strcmp(gm_error_detail(), "") == 0);
    GM_CHECK(gm_fail(GM_ERR_RANGE_ARG(2), "x = %.9g of %d", 0.75, 3) == GM_ERR_RANGE_ARG(2));
    GM_CHECK(strcmp(gm_error_detail(), "x = 0.75 of 3") == 0);
    GM_CHECK(pthread_create(&th, NULL, detail_in_thread, &empty) == 0);
    pthread_join(th, NULL);
    GM_CHECK(empty);
    GM_CHECK(strcmp(gm_error_detail(), "x = 0.75 of 3") == 0);
    gm_clear_error();
    GM_CHECK(gm_error_detail()[0] == '\0');
}

static void *set_two(void *arg)
{
    (void)arg;
    gm_set_num_threads(2);
    return NULL;
}

/* The thread count is process-wide: set from another thread, seen here. */
static void test_threads_process_wide(void)
{
    pthread_t th;
    int before = gm_get_num_threads();
    GM_CHECK(gm_set_num_threads(1) == GM_OK);
    GM_CHECK(pthread_create(&th, NULL, set_two, NULL) == 0);
    pthread_join(th, NULL);
    GM_CHECK(gm_get_num_threads() == 2);
    GM_CHECK(gm_set_num_threads(GM_MAX_THREADS + 1) == GM_ERR_INVALID);
    GM_CHECK(gm_set_num_threads(before) == GM_OK);
}

/* A forked child runs kernels on one thread (GNU OpenMP's pool is gone
 * there); the parent keeps its count. */
static void test_fork_child_single_thread(void)
{
    int before = gm_get_num_threads(), status = -1;
    gm_set_num_threads(2);
    pid_t pid = fork();
    if (pid == 0) _exit(gm_get_num_threads() == 1 ? 0 : 1);
    GM_CHECK(pid > 0);
    GM_CHECK(waitpid(pid, &status, 0) == pid);
    GM_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    GM_CHECK(gm_get_num_threads() == 2);
    gm_set_num_threads(before);
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
    GM_RUN(test_details);
    GM_RUN(test_threads);
    GM_RUN(test_threads_process_wide);
    GM_RUN(test_fork_child_single_thread);
    GM_RUN(test_finite);
    GM_RUN(test_exp);
    return gm_test_summary();
}

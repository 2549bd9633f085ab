/* gm_common.c -- status strings and failure details, the process-wide
 * thread count (and its reset in a forked child), build configuration and
 * the finite-value checks shared by all kernels. */
#define _POSIX_C_SOURCE 200809L
#include "geomatch.h"
#include "gm_blas.h"
#include "gm_parallel.h"
#include "gm_simd.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#ifdef _OPENMP
#include <omp.h>
#endif

const char *gm_strerror(int status)
{
    if (status == GM_OK) return "success";
    if (status == GM_ERR_NOMEM) return "out of memory";
    if (status == GM_ERR_INVALID) return "invalid size or parameter";
    if (status == GM_ERR_NUMERIC) return "numerical overflow or NaN";
    if (status == GM_ERR_UNBALANCED) return "unequal total masses for balanced OT";
    if (GM_ERR_IS(status, GM_ERR_RANGE_BASE)) return "value out of range";
    if (GM_ERR_IS(status, GM_ERR_ZEROMASS_BASE)) return "all-zero masses";
    if (GM_ERR_IS(status, GM_ERR_NEGATIVE_BASE)) return "negative masses";
    if (GM_ERR_IS(status, GM_ERR_NONFINITE_BASE)) return "non-finite value (NaN or inf)";
    return "unknown error";
}

/* ---- failure details ----------------------------------------------------- */
/* One buffer per OS thread: the binding reads it on the thread that called
 * the kernel, so concurrent calls from several Python threads do not mix. */
static _Thread_local char gm_detail[512];

int gm_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(gm_detail, sizeof gm_detail, fmt, ap);
    va_end(ap);
    return status;
}

const char *gm_error_detail(void) { return gm_detail; }

void gm_clear_error(void) { gm_detail[0] = '\0'; }

/* ---- threads ------------------------------------------------------------- */
/* The process-wide thread count: 0 until set (then OpenMP's default, i.e.
 * OMP_NUM_THREADS or the processor count, read once).  Every parallel region
 * of the core takes its team size from here (see gm_parallel.h), never from
 * OpenMP's per-thread setting, so gm_set_num_threads called from any thread
 * applies to calls from every thread. */
static int gm_nthreads = 0;
static pthread_once_t gm_atfork_once = PTHREAD_ONCE_INIT;

/* In the child of fork(): the parent's OpenMP worker threads do not exist
 * there and GNU libgomp would wait for them forever at its first barrier, so
 * the child runs every kernel on one thread (it may raise the count again
 * with gm_set_num_threads at its own risk). */
static void gm_atfork_child(void)
{
#pragma omp atomic write
    gm_nthreads = 1;
}

static void gm_register_atfork(void) { pthread_atfork(NULL, NULL, gm_atfork_child); }

int gm_set_num_threads(int n)
{
    if (n < 1 || n > GM_MAX_THREADS) return GM_ERR_INVALID;
    pthread_once(&gm_atfork_once, gm_register_atfork);
#pragma omp atomic write
    gm_nthreads = n;
    GM_OPENBLAS(set_num_threads)(n);
    return GM_OK;
}

int gm_get_num_threads(void)
{
    int n;
    pthread_once(&gm_atfork_once, gm_register_atfork);
#pragma omp atomic read
    n = gm_nthreads;
    if (n > 0) return n;
#ifdef _OPENMP
    n = omp_get_max_threads();
#else
    n = 1;
#endif
    if (n > GM_MAX_THREADS) n = GM_MAX_THREADS;
    return n < 1 ? 1 : n;
}

int gm_num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

int gm_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *gm_blas_config(void) { return GM_OPENBLAS(get_config)(); }
const char *gm_blas_corename(void) { return GM_OPENBLAS(get_corename)(); }
int gm_blas_parallel(void) { return GM_OPENBLAS(get_parallel)(); }

const char *gm_simd_level(void) { return GM_SIMD_LEVEL; }

/* Finite checks: the shared primitive of each type (gm_vec_tpl.h). */
#define GM_TPL 32
#include "gm_tpl.h"
int gm_all_finite_f32(const float *x, size_t n) { return GM_FN(gm_vec_all_finite)(x, n); }
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
int gm_all_finite_f64(const double *x, size_t n) { return GM_FN(gm_vec_all_finite)(x, n); }
#include "gm_tpl_end.h"

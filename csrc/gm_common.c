/* gm_common.c -- status strings, thread control, build configuration and the
 * finite-value checks shared by all kernels. */
#include "geomatch.h"
#include "gm_blas.h"

#include <math.h>
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
    if (status <= GM_ERR_ZEROMASS_BASE && status > GM_ERR_ZEROMASS_BASE - 100)
        return "all-zero masses";
    if (status <= GM_ERR_NEGATIVE_BASE && status > GM_ERR_NEGATIVE_BASE - 100)
        return "negative masses";
    if (status <= GM_ERR_NONFINITE_BASE && status > GM_ERR_NONFINITE_BASE - 100)
        return "non-finite value (NaN or inf)";
    return "unknown error";
}

int gm_set_num_threads(int n)
{
    if (n < 1) return GM_ERR_INVALID;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    GM_OPENBLAS(set_num_threads)(n);
    return GM_OK;
}

int gm_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
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

const char *gm_simd_level(void)
{
#if defined(__AVX512F__)
    return "AVX512F";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2+FMA";
#elif defined(__AVX__)
    return "AVX";
#elif defined(__SSE4_2__)
    return "SSE4.2";
#elif defined(__SSE2__)
    return "SSE2";
#elif defined(__ARM_NEON)
    return "NEON";
#else
    return "none";
#endif
}

/* Finite check: accumulate x*0 (NaN for inf/NaN, else 0) so the loop
 * vectorizes without branches.  O(n). */
int gm_all_finite_f32(const float *x, size_t n)
{
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f;
    return acc == 0.0f;
}

int gm_all_finite_f64(const double *x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0;
    return acc == 0.0;
}

/* gm_avx512.h -- AVX-512 helpers shared by the kernels that are compiled
 * for it with function target attributes and chosen at run time
 * (gm_bf16.c, gm_attention.c, gm_sgemm_avx512.c).  Private.
 *
 * GM_HAVE_AVX512 is 1 where the compiler can build such functions (x86-64
 * GCC or Clang); the kernels may run only after gm_avx512_supported() said
 * the CPU and the OS have AVX-512 F/BW/VL/DQ. */
#ifndef GM_AVX512_H
#define GM_AVX512_H

#if defined(__x86_64__) && defined(__GNUC__)
#define GM_HAVE_AVX512 1
#include <immintrin.h>
#define GM_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

/* 1 if the CPU has AVX-512 F, BW, VL and DQ and the OS saves the zmm state
 * (libgcc checks XCR0 before reporting them).  O(1). */
static inline int gm_avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

/* e^x for float32 lanes (x clamped to [-87, 88]): Cody-Waite reduction by
 * ln 2 and a degree-6 Taylor polynomial, |relative error| < 2e-7 (about
 * 2 ulp).  A NaN lane gives a finite value: callers that may see NaN test
 * for it themselves.  Inlined into any AVX-512 caller. */
static inline __attribute__((always_inline, target("avx512f"))) __m512 gm_avx512_exp_ps(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#else
#define GM_HAVE_AVX512 0
#endif

#endif

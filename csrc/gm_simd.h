/* gm_simd.h -- GM_SIMD_LEVEL: the widest SIMD level the compiler targets, read
 * from its own predefined macros ("AVX512F", "AVX2+FMA", "AVX", "SSE4.2",
 * "SSE2", "NEON" or "none").  One definition for gm_simd_level() of the C
 * core and for geomatch._buildinfo, which compiles it alone, so that the two
 * agree whenever both were built with the same flags. */
#ifndef GM_SIMD_H
#define GM_SIMD_H

#if defined(__AVX512F__)
#define GM_SIMD_LEVEL "AVX512F"
#elif defined(__AVX2__) && defined(__FMA__)
#define GM_SIMD_LEVEL "AVX2+FMA"
#elif defined(__AVX__)
#define GM_SIMD_LEVEL "AVX"
#elif defined(__SSE4_2__)
#define GM_SIMD_LEVEL "SSE4.2"
#elif defined(__SSE2__)
#define GM_SIMD_LEVEL "SSE2"
#elif defined(__ARM_NEON)
#define GM_SIMD_LEVEL "NEON"
#else
#define GM_SIMD_LEVEL "none"
#endif

#endif

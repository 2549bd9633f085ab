/* gm_tpl.h -- the one macro set of the C core's dtype templates (private).
 *
 * A kernel file instantiates its template, gm_<kernel>_tpl.h, once per type:
 *
 *     #define GM_TPL 32            (or 64)
 *     #include "gm_tpl.h"          GM_T, GM_FN, ... for that type
 *     #include "gm_<kernel>_tpl.h"
 *     #include "gm_tpl_end.h"      undefines them all, GM_TPL included
 *
 * Macros: GM_T (float / double), GM_FN(name) (name_f32 / name_f64),
 * GM_IS_F32 (1 / 0), GM_EXP (gm_exp_f32 / gm_exp_f64 of gm_math.h), GM_EXP_IN
 * (their forms without the range clamp, gm_exp_f32_in / gm_exp_f64_in), GM_FABS
 * (fabsf / fabs), GM_T_MAX and GM_T_TINY (the largest and the smallest
 * normal value), GM_GEMM (CBLAS dgemm, and for float gm_sgemm_dispatch: geomatch's AVX-512F
 * sgemm or CBLAS's, where gm_blas.h is included).
 * Templates derive their own per-type constants from GM_IS_F32.  The shared
 * vector primitives of the type (gm_vec_tpl.h) come with it. */
#if !defined(GM_TPL)
#error "define GM_TPL as 32 or 64 before including gm_tpl.h"
#endif

#include <float.h>
#include <math.h>

#include "gm_math.h"

#if GM_TPL == 32
#define GM_T float
#define GM_FN(name) name##_f32
#define GM_IS_F32 1
#define GM_EXP gm_exp_f32
#define GM_EXP_IN gm_exp_f32_in
#define GM_FABS fabsf
#define GM_T_MAX FLT_MAX
#define GM_T_TINY FLT_MIN
#define GM_GEMM gm_sgemm_dispatch
#elif GM_TPL == 64
#define GM_T double
#define GM_FN(name) name##_f64
#define GM_IS_F32 0
#define GM_EXP gm_exp_f64
#define GM_EXP_IN gm_exp_f64_in
#define GM_FABS fabs
#define GM_T_MAX DBL_MAX
#define GM_T_TINY DBL_MIN
#define GM_GEMM GM_CBLAS(dgemm)
#else
#error "GM_TPL must be 32 or 64"
#endif

#include "gm_vec_tpl.h"

/* gm_softargmax.c -- argmax and window soft-argmax over 2-D similarity
 * maps, float and double. */
#include "geomatch.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define GM_T float
#define GM_SFX f32
#define GM_EXP gm_exp_f32
#define GM_T_MAX FLT_MAX
#include "gm_softargmax_tpl.h"
#undef GM_T
#undef GM_SFX
#undef GM_EXP
#undef GM_T_MAX

#define GM_T double
#define GM_SFX f64
#define GM_EXP gm_exp_f64
#define GM_T_MAX DBL_MAX
#include "gm_softargmax_tpl.h"
#undef GM_T
#undef GM_SFX
#undef GM_EXP
#undef GM_T_MAX

/* gm_softargmax.c -- argmax and window soft-argmax over 2-D similarity
 * maps, float and double. */
#include "geomatch.h"
#include "gm_math.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define GM_T float
#define GM_SFX f32
#include "gm_softargmax_tpl.h"
#undef GM_T
#undef GM_SFX

#define GM_T double
#define GM_SFX f64
#include "gm_softargmax_tpl.h"
#undef GM_T
#undef GM_SFX

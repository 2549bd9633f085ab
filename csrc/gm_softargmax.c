/* gm_softargmax.c -- argmax and window soft-argmax over 2-D similarity
 * maps, float and double. */
#include "geomatch.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_softargmax_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_softargmax_tpl.h"
#include "gm_tpl_end.h"

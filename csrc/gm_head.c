/* gm_head.c -- the head's own kernel: GELU in its tanh form (GECO's MLP)
 * and its reverse mode.  The head's attention is gm_attention.c, its
 * LayerNorm gm_layernorm.c.  float and double versions are generated from
 * gm_head_tpl.h. */
#include "geomatch.h"
#include "gm_parallel.h"

#include <math.h>

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_head_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_head_tpl.h"
#include "gm_tpl_end.h"

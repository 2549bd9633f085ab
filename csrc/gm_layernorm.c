/* gm_layernorm.c -- the one LayerNorm of the core: forward for the backbone
 * (gm_nn_layernorm) and, keeping xhat and rstd, for the head's training step
 * (gm_layernorm_fwd), and the reverse mode (gm_layernorm_bwd).  float and
 * double versions are generated from gm_layernorm_tpl.h. */
#include "geomatch.h"
#include "gm_parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_layernorm_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_layernorm_tpl.h"
#include "gm_tpl_end.h"

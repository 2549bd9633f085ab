/* gm_similarity.c -- cosine similarity of L2-normalized rows (GEMM-based)
 * and row normalization, float and double. */
#include "geomatch.h"
#include "gm_parallel.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Values of normalized scratch per chunk of batch items (at least one item). */
#define GM_SIM_SCRATCH ((size_t)1 << 22)

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_similarity_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_similarity_tpl.h"
#include "gm_tpl_end.h"

/* gm_attention.c -- the one multi-head softmax attention of the core, used
 * by the backbone (gm_nn_attention: nothing kept) and by the trained head
 * (gm_head_attention_fwd: the exponentials and row sums kept for
 * gm_head_attention_bwd, its reverse mode).  float and double versions are
 * generated from gm_attention_tpl.h. */
#include "geomatch.h"
#include "gm_blas.h"
#include "gm_parallel.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Query rows per task.  Measured on the head's 37 x 37-token step (2
 * images, 2 heads of 64): 64 -> 256 rows cut the forward + backward from 88
 * to 79 ms on one thread; 512 gave no more.  The backbone keeps 128-row
 * tiles (its scratch is threads x 128 x n, nothing is kept). */
#define GM_ATTN_TILE_HEAD 256
#define GM_ATTN_TILE_NN 128
#define GM_ATTN_MAXTILE 256

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_attention_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_attention_tpl.h"
#include "gm_tpl_end.h"

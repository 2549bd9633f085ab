/* gm_head.c -- kernels of the trained attention head (geomatch/model/head.py):
 *  - gm_head_attention_fwd / _bwd: multi-head softmax attention that keeps
 *    the exponentials for the backward pass, and its reverse mode.
 * float and double versions are generated from gm_head_tpl.h. */
#include "geomatch.h"
#include "gm_blas.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Query (or key) rows per tile of the attention kernels.  Measured on the
 * 37 x 37-token step (2 images, 2 heads of 64): 64 -> 256 rows cut the
 * forward + backward from 88 to 79 ms on one thread; 512 gave no more. */
#define GM_HEAD_TILE 256

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_head_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_head_tpl.h"
#include "gm_tpl_end.h"

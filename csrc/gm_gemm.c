/* gm_gemm.c -- C = alpha op(A) op(B) + beta C on geomatch's own threads:
 * the rows (or columns) of C are split into blocks fixed by the shape
 * (gm_blas_row_blocks), spread over the OpenMP threads, each block one
 * single-threaded BLAS call, so no BLAS thread pool runs (and spins) beside
 * OpenMP's and results do not depend on the thread count.  Used by the
 * head, the backbone's linear layers (through NumPy) and cosine similarity.
 * float and double versions are generated from gm_gemm_tpl.h. */
#include "geomatch.h"
#include "gm_blas.h"
#include "gm_parallel.h"

#include <limits.h>

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_gemm_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_gemm_tpl.h"
#include "gm_tpl_end.h"

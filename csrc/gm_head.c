/* gm_head.c -- kernels of the trained attention head (geomatch/head.py):
 *  - gm_gemm: C = alpha op(A) op(B) + beta C with the rows (or columns) of C
 *    split over the OpenMP threads, each block one single-threaded BLAS
 *    call, so no BLAS thread pool runs (and spins) beside OpenMP's;
 *  - gm_head_attention_fwd / _bwd: multi-head softmax attention that keeps
 *    the exponentials for the backward pass, and its reverse mode.
 * float and double versions are generated from gm_head_impl.h. */
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
#define T float
#define GM_HEAD_NAME(name) name##_f32
#define GEMM GM_CBLAS(sgemm)
#define EXPF gm_exp_f32
#include "gm_head_impl.h"
#undef T
#undef GM_HEAD_NAME
#undef GEMM
#undef EXPF

#define T double
#define GM_HEAD_NAME(name) name##_f64
#define GEMM GM_CBLAS(dgemm)
#define EXPF gm_exp_f64
#include "gm_head_impl.h"
#undef T
#undef GM_HEAD_NAME
#undef GEMM
#undef EXPF

/* gm_transfer.c -- exact upsample-argmax keypoint transfer.
 *
 * The published protocol upsamples both (h, w, D) feature maps bilinearly to
 * the original image sizes (PyTorch's align_corners=False rule), takes the
 * source descriptor at pixel (floor(y), floor(x)) and returns the target
 * pixel of maximal cosine similarity.  Here no upsampled map is built:
 *
 *  - an upsampled target descriptor is t(Y, X) = sum_ij a_i(Y) b_j(X) t[r_i, c_j]
 *    (two rows r0 <= r1, two columns c0 <= c1, weights a, b);
 *  - the numerator q.t(Y, X) is the same bilinear combination of the grid dot
 *    products g = q.t[r, c];
 *  - |t(Y, X)|^2 = sum a_i a_k b_j b_l t[r_i, c_j].t[r_k, c_l] needs only the
 *    Gram products of each grid vector with its right, lower and diagonal
 *    neighbours (5 tables of h*w values);
 *  - row weights depend on Y only and column weights on X only, so the norm
 *    and the numerator factor into per-row-of-the-grid arrays over X, and
 *    each pixel costs a handful of flops independent of D (pixels are ranked
 *    by cos |cos| = num |num| / |t|^2, a monotone function of the cosine
 *    that needs no square root; see gm_tr_scan_row).
 *
 *  - pixels are not all scanned: each grid cell (the pixels sharing their
 *    lower taps) gets an upper bound of its pixels' values, computed from
 *    the corner dots and the corners' Gram matrix, and only cells whose
 *    bound reaches the best value so far are evaluated -- with the
 *    arithmetic of the exhaustive scan, so the result is that scan's pixel
 *    bit for bit (gm_tr_cell_row has the bound and its rounding proof).
 *    Keypoints whose bounds do not separate the cells take the exhaustive
 *    scan, which shares each pixel's 1/|t|^2 between keypoints.
 *
 * Total cost per pair: O(h w D (5 + K)) for the tables and grid dot
 * products, O(h W) for the per-grid-row arrays, O(K h w) for the bounds and
 * the pixels of the evaluated cells (O(H W (1 + K)) at most); memory
 * O(h w K + h W + threads (W + h w)), plus O(h W K) for the exhaustive scan.
 * gm_transfer_upsample_argmax_group runs the pairs that share a target in
 * one pass over it.  The float
 * version works in float throughout except for the interpolation weights,
 * which are computed in double from the exact rational source coordinate.
 *
 * The kernel body is a template (gm_transfer_tpl.h) instantiated for float
 * and double. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "geomatch.h"
#include "gm_parallel.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Linear-interpolation taps of output sample `dst` when resizing n_in samples
 * to n_out with PyTorch's align_corners=False rule: source coordinate
 * s = (dst + 0.5) * n_in / n_out - 0.5, negative s clamped to 0; taps
 * i0 = floor(s), i1 = i0 + 1 with weights (1 - w1, w1); at the upper border
 * (i0 >= n_in - 1) both taps are n_in - 1 with w1 = 0.  The rational s is
 * evaluated as ((2 dst + 1) n_in - n_out) / (2 n_out) in double, so an exact
 * integer s is never misrounded.  O(1). */
void gm_transfer_linear_taps(int64_t dst, int64_t n_in, int64_t n_out,
                             int64_t *i0, int64_t *i1, double *w1)
{
    double s;
    int64_t f;
    if (n_in == n_out) {
        s = (double)dst;
    } else {
        s = ((double)(2 * dst + 1) * (double)n_in - (double)n_out) / (2.0 * (double)n_out);
    }
    if (s < 0.0) s = 0.0;
    f = (int64_t)floor(s);
    if (f >= n_in - 1) {
        *i0 = *i1 = n_in - 1;
        *w1 = 0.0;
        return;
    }
    *i0 = f;
    *i1 = f + 1;
    *w1 = s - (double)f;
}

/* 64-byte aligned allocation of n bytes (NULL on failure or n == 0 -> 64). */
static void *gm_tr_alloc(size_t n)
{
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

/* Round n up to a multiple of 16 elements (64 bytes of float). */
static size_t gm_tr_pad16(size_t n) { return (n + 15) & ~(size_t)15; }

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_transfer_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_transfer_tpl.h"
#include "gm_tpl_end.h"

/* gm_loss.c -- the dense term of geomatch's training loss (geomatch/loss.py):
 * the foreground x background negatives on the dustbin OT plan, their sum of
 * -log(1 - P) and the gradient wrt the plan, in one pass.  float and double
 * versions are generated from gm_loss_tpl.h. */
#include "geomatch.h"
#include "gm_math.h"
#include "gm_parallel.h"

#include <math.h>
#include <stdlib.h>

/* -log(1 - p) for 0 <= p < 1 in double: a 6-term series below 2^-10
 * (truncation error below p^7 / 7, relative to p below 1e-21), log1p
 * above.  O(1). */
static inline double gm_neglog1m(double p)
{
    if (p < 0.0009765625) {
        static const double c[6] = {1.0 / 6.0, 1.0 / 5.0, 1.0 / 4.0, 1.0 / 3.0, 0.5, 1.0};
        return gm_horner_f64(p, c, 6) * p;
    }
    return -log1p(-p);
}

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_loss_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_loss_tpl.h"
#include "gm_tpl_end.h"

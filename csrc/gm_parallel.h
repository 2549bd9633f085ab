/* gm_parallel.h -- the one threading helper of the C core (private).
 *
 * Every parallel region takes its team size from gm_threads_for(work) (or
 * gm_get_num_threads() where the work is split into shape-fixed blocks), so
 * the process-wide count of gm_set_num_threads applies from any calling
 * thread and a forked child runs on one thread.
 *
 * Threshold policy (one for the whole core): a region runs on more than one
 * thread only when it does at least GM_PAR_MIN_WORK units of work, a unit
 * being one value passed through a memory-bound loop (a scan, a copy, a
 * scaling); a value that costs an exp or a log with its bookkeeping counts
 * GM_WORK_EXP units, a multiply-add GM_WORK_FMA.  2**22 units is about a
 * millisecond on one core: below that, waking the team and its barriers
 * cost more than they save, badly so on an oversubscribed machine.  Kernels
 * whose work is split into blocks fixed by the shape (gm_blas_row_blocks)
 * take at most one thread per block.
 * Results never depend on the team size: every output is reduced by one
 * thread in a fixed order, or from fixed-size blocks summed in block order. */
#ifndef GM_PARALLEL_H
#define GM_PARALLEL_H

#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "geomatch.h"

#define GM_PAR_MIN_WORK 4194304.0
#define GM_WORK_EXP 32.0
#define GM_WORK_FMA 2.0

/* Threads for a region doing `work` units: 1 below GM_PAR_MIN_WORK, else the
 * process-wide count.  O(1). */
static inline int gm_threads_for(double work)
{
    return work < GM_PAR_MIN_WORK ? 1 : gm_get_num_threads();
}

/* Number of the calling thread inside its team (0 outside a region). */
static inline int gm_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Size of the calling thread's team (1 outside a region). */
static inline int gm_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#endif

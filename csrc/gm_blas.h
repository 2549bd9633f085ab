/* Private header: maps CBLAS/OpenBLAS names to the library the build found.
 *
 * The scipy-openblas32 wheel exports every symbol with a "scipy_" prefix and
 * ships a cblas.h that declares the prefixed names; a system OpenBLAS uses the
 * plain names.  setup.py defines GM_BLAS_SCIPY_OPENBLAS for the former. */
#ifndef GM_BLAS_H
#define GM_BLAS_H

#include <cblas.h>

#ifdef GM_BLAS_SCIPY_OPENBLAS
#define GM_CBLAS(name) scipy_cblas_##name
#define GM_OPENBLAS(name) scipy_openblas_##name
#else
#define GM_CBLAS(name) cblas_##name
#define GM_OPENBLAS(name) openblas_##name
#endif

#endif

/* geomatch._buildinfo: how the compiled extensions were built.
 *
 * setup.py compiles this file with exactly the flags of geomatch._core and
 * passes what it decided as macros (GM_BUILD_BLAS, GM_BUILD_CFLAGS,
 * GM_BUILD_NATIVE), so the installed binaries themselves say how they were
 * built: no generated Python file, nothing written into the source tree.
 * "simd" is read from the compiler's own predefined macros by csrc/gm_simd.h,
 * the header behind gm_simd_level() of the C core, so a mismatch with
 * geomatch._core.build_info()["simd"] reveals objects built with other flags.
 * It links nothing else (geomatch.runtime.blas reads it before the BLAS
 * library is loaded). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "gm_simd.h"

#ifndef GM_BUILD_BLAS
#define GM_BUILD_BLAS "unknown"
#endif
#ifndef GM_BUILD_CFLAGS
#define GM_BUILD_CFLAGS "unknown"
#endif
#ifndef GM_BUILD_NATIVE
#define GM_BUILD_NATIVE 0
#endif


static PyObject *info(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:s,s:s,s:O,s:s}", "blas", GM_BUILD_BLAS, "cflags", GM_BUILD_CFLAGS,
                         "native", GM_BUILD_NATIVE ? Py_True : Py_False, "simd", GM_SIMD_LEVEL);
}

static PyMethodDef methods[] = {
    {"info", info, METH_NOARGS,
     "info()\n--\n\nBLAS, compiler flags, native (-march=native) and SIMD level of the build."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_buildinfo",
                                    "How geomatch's extensions were built.", -1, methods};

PyMODINIT_FUNC PyInit__buildinfo(void) { return PyModule_Create(&module); }

/* _core.c -- the one CPython/NumPy binding of geomatch's C core.
 *
 * The binding only converts: the kernels validate their arguments and
 * report failures as status codes naming the argument (geomatch.h); Python
 * normalises options.  Conventions (every function below follows them):
 *  - arguments go through the converters in the first part of this file
 *    (gm_float_type_of, gm_as_array, gm_out_array, gm_parse_real,
 *    gm_parse_int), which raise TypeError/ValueError naming the argument;
 *  - arrays are converted to C-contiguous float32 or float64 (the common
 *    type of the inputs: float64 if any input is float64, else float32;
 *    float16 is promoted to float32; other dtypes are refused);
 *  - GM_RUN calls the float or double kernel with the GIL released; its
 *    status becomes an exception through the one table gm_status_table,
 *    with the kernel's details (gm_error_detail) and the argument's name;
 *  - one cleanup exit per function; an exception that is already set is
 *    never overwritten; every PyArg format ends with ":name";
 *  - numbers never go through PyErr_Format's own formatting (it has no
 *    %g): kernels format theirs, Python objects are shown with %R.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL GM_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>

#include "geomatch.h"

/* ======================================================================== */
/* Errors                                                                   */
/* ======================================================================== */

/* Set a Python exception unless one is already set. */
static void gm_set_error(PyObject *type, const char *fmt, ...)
{
    if (PyErr_Occurred()) return;
    va_list ap;
    va_start(ap, fmt);
    PyErr_FormatV(type, fmt, ap);
    va_end(ap);
}

/* The one map from kernel status to exception.  `base` is a status, or the
 * base of a family that names argument k (base - k); `text` is used when
 * the kernel recorded no details. */
typedef struct {
    int base, per_arg;
    PyObject **type;
    const char *text;
} gm_status_row;

static const gm_status_row gm_status_table[] = {
    {GM_ERR_NOMEM, 0, &PyExc_MemoryError, "out of memory"},
    {GM_ERR_NUMERIC, 0, &PyExc_FloatingPointError,
     "the computation overflowed or produced NaN; try a larger regularization or float64"},
    {GM_ERR_UNBALANCED, 0, &PyExc_ValueError, "a and b must have the same total mass"},
    {GM_ERR_INVALID, 0, &PyExc_ValueError, "invalid size or parameter"},
    {GM_ERR_NONFINITE_BASE, 1, &PyExc_ValueError, "contains NaN or infinite values"},
    {GM_ERR_NEGATIVE_BASE, 1, &PyExc_ValueError, "must be non-negative"},
    {GM_ERR_ZEROMASS_BASE, 1, &PyExc_ValueError,
     "must have a positive total mass (all zeros given)"},
    {GM_ERR_RANGE_BASE, 1, &PyExc_ValueError, "is out of range"},
};

/* Raise the exception for a kernel status (with the GIL held, on the thread
 * that ran the kernel).  argnames[k] names the C function's k-th argument
 * (nargs of them); func names the call. */
static void gm_raise_status(int status, const char *func, const char *const *argnames,
                            int nargs)
{
    const char *detail = gm_error_detail();
    size_t i, n = sizeof gm_status_table / sizeof gm_status_table[0];
    if (status == GM_OK || PyErr_Occurred()) return;
    for (i = 0; i < n; i++) {
        const gm_status_row *r = &gm_status_table[i];
        if (r->per_arg ? !GM_ERR_IS(status, r->base) : status != r->base) continue;
        if (r->per_arg) {
            int k = GM_ERR_ARG(status, r->base);
            const char *arg = k < nargs ? argnames[k] : "an argument";
            if (detail[0])
                PyErr_Format(*r->type, "%s: %s", arg, detail);
            else
                PyErr_Format(*r->type, "%s %s", arg, r->text);
        } else {
            PyErr_Format(*r->type, "%s: %s", func, detail[0] ? detail : r->text);
        }
        return;
    }
    PyErr_Format(PyExc_RuntimeError, "%s: unexpected status %d (%s)", func, status,
                 gm_strerror(status));
}

/* Nonzero, with the exception raised, when a kernel status is a failure. */
static int gm_failed(int status, const char *func, const char *const *argnames, int nargs)
{
    if (status == GM_OK) return 0;
    gm_raise_status(status, func, argnames, nargs);
    return 1;
}

/* The owned array *a as the wrapper's result (the caller's reference). */
static PyObject *gm_steal(PyArrayObject **a)
{
    PyObject *r = (PyObject *)*a;
    *a = NULL;
    return r;
}

/* Release the n references (NULL skipped) a wrapper owns at its exit. */
static void gm_release(PyArrayObject *const *arrs, int n)
{
    for (int i = 0; i < n; i++) Py_XDECREF(arrs[i]);
}

/* Call kernel fn_f32 or fn_f64 (by the NumPy type) with the GIL released,
 * storing its status in st.  Array arguments must be void pointers. */
#define GM_CALL(type, fn, ...) \
    ((type) == NPY_FLOAT32 ? fn##_f32(__VA_ARGS__) : fn##_f64(__VA_ARGS__))
#define GM_RUN(st, type, fn, ...)                \
    do {                                         \
        Py_BEGIN_ALLOW_THREADS                   \
        gm_clear_error();                        \
        (st) = GM_CALL(type, fn, __VA_ARGS__);   \
        Py_END_ALLOW_THREADS                     \
    } while (0)

/* ======================================================================== */
/* Converters                                                               */
/* ======================================================================== */

static const char *gm_type_name(int type)
{
    return type == NPY_FLOAT32 ? "float32" : "float64";
}

/* Floating type of one array-like: NPY_FLOAT32 or NPY_FLOAT64 (float16 is
 * promoted).  Raises TypeError naming `name` for any other dtype.  Returns
 * -1 on error. */
static int gm_float_type_of(PyObject *obj, const char *name)
{
    PyArray_Descr *descr = NULL;
    int type;
    if (PyArray_Check(obj)) {
        descr = PyArray_DESCR((PyArrayObject *)obj);
        Py_INCREF(descr);
    } else {
        PyArrayObject *tmp = (PyArrayObject *)PyArray_FROM_O(obj);
        if (tmp == NULL) {
            PyErr_Clear();
            gm_set_error(PyExc_TypeError, "%s must be an array of floats, got %s",
                         name, Py_TYPE(obj)->tp_name);
            return -1;
        }
        descr = PyArray_DESCR(tmp);
        Py_INCREF(descr);
        Py_DECREF(tmp);
    }
    type = descr->type_num;
    if (type == NPY_FLOAT32 || type == NPY_FLOAT16) type = NPY_FLOAT32;
    else if (type != NPY_FLOAT64) {
        gm_set_error(PyExc_TypeError, "%s must have a real floating-point dtype (float32 "
                     "or float64), got %S", name, (PyObject *)descr);
        type = -1;
    }
    Py_DECREF(descr);
    return type;
}

/* Common floating type of n array-likes (float64 wins; NULL/None skipped).
 * -1 on error. */
static int gm_common_float_type(PyObject *const *objs, const char *const *names, int n)
{
    int result = NPY_FLOAT32;
    for (int i = 0; i < n; i++) {
        if (objs[i] == NULL || objs[i] == Py_None) continue;
        int t = gm_float_type_of(objs[i], names[i]);
        if (t < 0) return -1;
        if (t == NPY_FLOAT64) result = NPY_FLOAT64;
    }
    return result;
}

/* New reference to a C-contiguous, aligned array of `type` holding obj, with
 * min_ndim <= ndim <= max_ndim and no zero-length axis (unless allow_empty).
 * NULL with TypeError/ValueError naming `name` on failure. */
static PyArrayObject *gm_as_array(PyObject *obj, int type, const char *name,
                                  int min_ndim, int max_ndim, int allow_empty)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(
        obj, type, 0, 0, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (arr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) return NULL;
        PyErr_Clear();
        gm_set_error(PyExc_TypeError, "%s could not be converted to a float array", name);
        return NULL;
    }
    int nd = PyArray_NDIM(arr);
    if (nd < min_ndim || nd > max_ndim) {
        if (min_ndim == max_ndim)
            gm_set_error(PyExc_ValueError, "%s must be %d-dimensional, got %d dimensions",
                         name, min_ndim, nd);
        else
            gm_set_error(PyExc_ValueError,
                         "%s must have between %d and %d dimensions, got %d",
                         name, min_ndim, max_ndim, nd);
        Py_DECREF(arr);
        return NULL;
    }
    if (!allow_empty && PyArray_SIZE(arr) == 0) {
        gm_set_error(PyExc_ValueError, "%s must not be empty (shape has a zero-length axis)",
                     name);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* A caller's NumPy array of dtype `type` (borrowed) or NULL with TypeError
 * naming `name`. */
static PyArrayObject *gm_ndarray_of(PyObject *obj, int type, const char *name)
{
    if (!PyArray_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a NumPy array", name);
        return NULL;
    }
    if (PyArray_TYPE((PyArrayObject *)obj) != type) {
        gm_set_error(PyExc_TypeError, "%s must have dtype %s", name, gm_type_name(type));
        return NULL;
    }
    return (PyArrayObject *)obj;
}

/* Output (or in-out) array: a new C-contiguous array of `type` and shape
 * dims when obj is NULL or None (and `make`), else obj itself (new
 * reference) after checking that it is an aligned C-contiguous array of that
 * dtype and exact shape, writable if `writable`.  NULL with an error naming
 * `name`. */
static PyArrayObject *gm_out_array(PyObject *obj, int type, int nd, const npy_intp *dims,
                                   const char *name, int writable, int make)
{
    if (make && (obj == NULL || obj == Py_None))
        return (PyArrayObject *)PyArray_SimpleNew(nd, (npy_intp *)dims, type);
    PyArrayObject *a = gm_ndarray_of(obj, type, name);
    if (a == NULL) return NULL;
    int ok = PyArray_NDIM(a) == nd && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a)
             && (!writable || PyArray_ISWRITEABLE(a));
    for (int i = 0; ok && i < nd; i++) ok = PyArray_DIM(a, i) == dims[i];
    if (!ok) {
        PyObject *shape = PyTuple_New(nd);
        for (int i = 0; shape && i < nd; i++)
            PyTuple_SET_ITEM(shape, i, PyLong_FromSsize_t((Py_ssize_t)dims[i]));
        if (shape)
            gm_set_error(PyExc_ValueError, "%s must be a%s C-contiguous %s array of shape "
                         "%R", name, writable ? " writable" : "", gm_type_name(type), shape);
        Py_XDECREF(shape);
        return NULL;
    }
    Py_INCREF(a);
    return a;
}

/* What gm_parse_real accepts besides finite numbers of any sign. */
#define GM_NONNEG 1  /* >= 0 */
#define GM_POS 2     /* > 0 */
#define GM_INF 4     /* +inf too */

/* Parse a real Python number (not bool or complex) into *out under `rule`
 * (GM_* flags).  -1 with TypeError/ValueError naming `name` otherwise. */
static int gm_parse_real(PyObject *obj, const char *name, int rule, double *out)
{
    double v;
    if (obj == NULL || PyBool_Check(obj) || PyComplex_Check(obj) || !PyNumber_Check(obj) ||
        PyArray_IsScalar(obj, ComplexFloating)) {
        gm_set_error(PyExc_TypeError, "%s must be a real number, got %s", name,
                     obj ? Py_TYPE(obj)->tp_name : "nothing");
        return -1;
    }
    v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
        PyErr_Clear();
        gm_set_error(PyExc_TypeError, "%s must be a real number, got %s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int ok = (isfinite(v) || (rule & GM_INF && v == INFINITY))
             && !(rule & GM_POS && !(v > 0.0)) && !(rule & GM_NONNEG && !(v >= 0.0));
    if (!ok) {
        gm_set_error(PyExc_ValueError, "%s must be a%s number%s%s, got %R", name,
                     rule & GM_INF ? "" : " finite",
                     rule & GM_POS ? " > 0" : (rule & GM_NONNEG ? " >= 0" : ""),
                     rule & GM_INF ? " (inf allowed)" : "", obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parse a Python int into [lo, hi].  -1 with an error naming `name`. */
static int gm_parse_int(PyObject *obj, const char *name, long lo, long hi, long *out)
{
    long v;
    if (obj == NULL || PyBool_Check(obj) ||
        !(PyLong_Check(obj) || PyArray_IsScalar(obj, Integer))) {
        gm_set_error(PyExc_TypeError, "%s must be an integer, got %s", name,
                     obj ? Py_TYPE(obj)->tp_name : "nothing");
        return -1;
    }
    v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();  /* beyond a long: out of range */
    } else if (v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    gm_set_error(PyExc_ValueError, "%s must be between %ld and %ld, got %R", name, lo, hi,
                 obj);
    return -1;
}

/* Product of the first `nlead` dimensions of arr (the batch size). */
static npy_intp gm_batch_size(PyArrayObject *arr, int nlead)
{
    npy_intp b = 1;
    for (int i = 0; i < nlead; i++) b *= PyArray_DIM(arr, i);
    return b;
}

/* 0 if a and b have identical first `nlead` dimensions, else ValueError. */
static int gm_check_same_batch(PyArrayObject *a, const char *na, int nlead_a,
                               PyArrayObject *b, const char *nb, int nlead_b)
{
    int ok = nlead_a == nlead_b;
    for (int i = 0; ok && i < nlead_a; i++)
        ok = PyArray_DIM(a, i) == PyArray_DIM(b, i);
    if (!ok) {
        PyObject *shape_a = PyObject_GetAttrString((PyObject *)a, "shape");
        PyObject *shape_b = PyObject_GetAttrString((PyObject *)b, "shape");
        if (shape_a && shape_b)
            gm_set_error(PyExc_ValueError,
                         "%s and %s must have the same leading (batch) dimensions, got "
                         "shapes %R and %R", na, nb, shape_a, shape_b);
        Py_XDECREF(shape_a);
        Py_XDECREF(shape_b);
        return -1;
    }
    return 0;
}

/* ======================================================================== */
/* Configuration and threads                                                */
/* ======================================================================== */

PyDoc_STRVAR(py_set_num_threads__doc__,
             "set_num_threads(n)\n--\n\nSet the process-wide thread count of kernels and BLAS.");

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    long n;
    if (gm_parse_int(arg, "n", 1, GM_MAX_THREADS, &n) < 0) return NULL;
    gm_set_num_threads((int)n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(py_get_num_threads__doc__,
             "get_num_threads()\n--\n\nThread count kernels use.");

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(gm_get_num_threads());
}

PyDoc_STRVAR(py_set_sgemm__doc__,
             "set_sgemm(mode)\n--\n\nfloat32 GEMM of the core: 0 auto (AVX-512F kernel where "
             "the CPU has it, else BLAS), 1 the AVX-512F kernel, 2 BLAS sgemm.");

static PyObject *py_set_sgemm(PyObject *self, PyObject *arg)
{
    long mode;
    if (gm_parse_int(arg, "mode", 0, 2, &mode) < 0) return NULL;
    if (gm_sgemm_set_mode((int)mode) != GM_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "sgemm mode 'avx512' needs a CPU (and OS) with AVX-512 (F, BW, VL, DQ); this one has none");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(py_get_sgemm__doc__,
             "get_sgemm()\n--\n\n(mode, uses_avx512, avx512_supported): the mode of set_sgemm, "
             "whether float32 GEMMs run the AVX-512F kernel, whether the CPU has AVX-512F.");

static PyObject *py_get_sgemm(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(iOO)", gm_sgemm_get_mode(),
                         gm_sgemm_uses_avx512() ? Py_True : Py_False,
                         gm_sgemm_avx512_supported() ? Py_True : Py_False);
}

PyDoc_STRVAR(py_fma_peak__doc__,
             "fma_peak(width, iters=1000000, reps=10, kind='f32')\n--\n\nPeak of one thread in "
             "GFLOP/s, measured by a register-only loop of 16 independent multiply-adds on "
             "vectors of `width` bits, the best of `reps` runs.  kind 'f32': float32 FMA "
             "(width 256: AVX2+FMA, 512: AVX-512F); kind 'bf16': AVX512_BF16 VDPBF16PS "
             "(width 512 only; 4 flops per lane and instruction).  None when the CPU lacks "
             "that instruction set.");

static PyObject *py_fma_peak(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"width", "iters", "reps", "kind", NULL};
    int width;
    long iters = 1000000;
    int reps = 10;
    const char *kind = "f32";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|lis:fma_peak", kw, &width, &iters, &reps,
                                     &kind))
        return NULL;
    int bf16 = 0;
    if (strcmp(kind, "bf16") == 0) bf16 = 1;
    else if (strcmp(kind, "f32") != 0) {
        PyErr_SetString(PyExc_ValueError, "kind must be 'f32' or 'bf16'");
        return NULL;
    }
    if (width != 256 && width != 512) {
        PyErr_SetString(PyExc_ValueError, "width must be 256 or 512");
        return NULL;
    }
    if (bf16 && width != 512) {
        PyErr_SetString(PyExc_ValueError, "width must be 512 for kind 'bf16'");
        return NULL;
    }
    if (iters < 1 || iters > 100000000L || reps < 1 || reps > 100) {
        PyErr_SetString(PyExc_ValueError, "iters must be in 1..1e8 and reps in 1..100");
        return NULL;
    }
    double g;
    Py_BEGIN_ALLOW_THREADS
    g = bf16 ? gm_bf16_peak_gflops(iters, reps) : gm_fma_peak_gflops(width, iters, reps);
    Py_END_ALLOW_THREADS
    if (g < 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(g);
}

PyDoc_STRVAR(py_build_info__doc__,
             "build_info()\n--\n\nBLAS, OpenMP and SIMD configuration as a dict.");

static PyObject *py_build_info(PyObject *self, PyObject *unused)
{
    static const char *parallel[] = {"sequential", "pthreads", "OpenMP"};
    int p = gm_blas_parallel();
    return Py_BuildValue("{s:s,s:s,s:s,s:i,s:i,s:s,s:i}",
                         "blas_config", gm_blas_config(),
                         "blas_corename", gm_blas_corename(),
                         "blas_threading", (p >= 0 && p <= 2) ? parallel[p] : "unknown",
                         "openmp", gm_have_openmp(),
                         "num_threads", gm_get_num_threads(),
                         "simd", gm_simd_level(),
                         "num_procs", gm_num_procs());
}

/* ======================================================================== */
/* Similarity                                                               */
/* ======================================================================== */

PyDoc_STRVAR(py_cosine_similarity__doc__,
             "cosine_similarity(x, y)\n--\n\nCosine similarity (..., N, D) x (..., M, D) "
             "-> (..., N, M).");

/* cosine_similarity(x, y): x (..., N, D), y (..., M, D) with identical
 * leading dimensions -> (..., N, M) of the common float type. */
static PyObject *py_cosine_similarity(PyObject *self, PyObject *args)
{
    PyObject *objs[2], *result = NULL;
    PyArrayObject *x = NULL, *y = NULL, *out = NULL;
    static const char *const names[] = {"x", "y"};
    int type, nd, st = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OO:cosine_similarity", &objs[0], &objs[1])) return NULL;
    if ((type = gm_common_float_type(objs, names, 2)) < 0) goto done;
    if (!(x = gm_as_array(objs[0], type, "x", 2, NPY_MAXDIMS, 0))) goto done;
    if (!(y = gm_as_array(objs[1], type, "y", 2, NPY_MAXDIMS, 0))) goto done;
    nd = PyArray_NDIM(x);
    if (gm_check_same_batch(x, "x", nd - 2, y, "y", PyArray_NDIM(y) - 2) < 0) goto done;
    npy_intp n = PyArray_DIM(x, nd - 2), m = PyArray_DIM(y, nd - 2), d = PyArray_DIM(x, nd - 1);
    if (PyArray_DIM(y, nd - 1) != d) {
        gm_set_error(PyExc_ValueError,
                     "x and y must have the same feature size (last dimension), got "
                     "%zd and %zd", (Py_ssize_t)d, (Py_ssize_t)PyArray_DIM(y, nd - 1));
        goto done;
    }
    for (int i = 0; i < nd - 2; i++) dims[i] = PyArray_DIM(x, i);
    dims[nd - 2] = n;
    dims[nd - 1] = m;
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, type))) goto done;
    GM_RUN(st, type, gm_cosine_similarity, PyArray_DATA(x), PyArray_DATA(y),
           PyArray_DATA(out), (size_t)gm_batch_size(x, nd - 2), (size_t)n, (size_t)m,
           (size_t)d);
    if (gm_failed(st, "cosine_similarity", names, 2)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){x, y, out}, 3);
    return result;
}

/* ======================================================================== */
/* Sinkhorn                                                                 */
/* ======================================================================== */

PyDoc_STRVAR(py_sinkhorn__doc__,
             "sinkhorn(C, a, b, reg, reg_m_a, reg_m_b, max_iter, tol)\n--\n\n"
             "Entropic OT (see geomatch.sinkhorn); returns (P, f, g, n_iter, err).");

/* _core.sinkhorn(C, a, b, reg, reg_m_a, reg_m_b, max_iter, tol)
 *   -> (P, f, g, n_iter, err).  C (..., N, M), a (..., N), b (..., M).
 * Masses (sign, zeros, balance) are the kernel's to check. */
static PyObject *py_sinkhorn(PyObject *self, PyObject *args)
{
    PyObject *objs[3], *oreg, *orma, *ormb, *oiter, *otol;
    PyArrayObject *C = NULL, *a = NULL, *b = NULL, *P = NULL, *f = NULL, *g = NULL;
    PyArrayObject *nit = NULL, *err = NULL;
    PyObject *result = NULL;
    double reg, rma, rmb, tol;
    long max_iter;
    int type, st = GM_OK, nd;
    npy_intp n, m;
    static const char *const names[] = {"C", "a", "b"};

    if (!PyArg_ParseTuple(args, "OOOOOOOO:sinkhorn", &objs[0], &objs[1], &objs[2], &oreg,
                          &orma, &ormb, &oiter, &otol))
        return NULL;
    if ((type = gm_common_float_type(objs, names, 3)) < 0) goto done;
    if (gm_parse_real(oreg, "reg", GM_POS, &reg) < 0 ||
        gm_parse_real(orma, "reg_m", GM_NONNEG | GM_INF, &rma) < 0 ||
        gm_parse_real(ormb, "reg_m", GM_NONNEG | GM_INF, &rmb) < 0 ||
        gm_parse_int(oiter, "max_iter", 1, 2147483647L, &max_iter) < 0 ||
        gm_parse_real(otol, "tol", GM_NONNEG, &tol) < 0)
        goto done;
    if (!(C = gm_as_array(objs[0], type, "C", 2, NPY_MAXDIMS, 0))) goto done;
    nd = PyArray_NDIM(C);
    if (!(a = gm_as_array(objs[1], type, "a", nd - 1, nd - 1, 0))) goto done;
    if (!(b = gm_as_array(objs[2], type, "b", nd - 1, nd - 1, 0))) goto done;
    if (gm_check_same_batch(C, "C", nd - 2, a, "a", nd - 2) < 0) goto done;
    if (gm_check_same_batch(C, "C", nd - 2, b, "b", nd - 2) < 0) goto done;
    n = PyArray_DIM(C, nd - 2);
    m = PyArray_DIM(C, nd - 1);
    if (PyArray_DIM(a, nd - 2) != n) {
        gm_set_error(PyExc_ValueError, "a must have length N=%zd (C's rows), got %zd",
                     (Py_ssize_t)n, (Py_ssize_t)PyArray_DIM(a, nd - 2));
        goto done;
    }
    if (PyArray_DIM(b, nd - 2) != m) {
        gm_set_error(PyExc_ValueError, "b must have length M=%zd (C's columns), got %zd",
                     (Py_ssize_t)m, (Py_ssize_t)PyArray_DIM(b, nd - 2));
        goto done;
    }
    if (!(P = (PyArrayObject *)PyArray_SimpleNew(nd, PyArray_DIMS(C), type)) ||
        !(f = (PyArrayObject *)PyArray_SimpleNew(nd - 1, PyArray_DIMS(a), type)) ||
        !(g = (PyArrayObject *)PyArray_SimpleNew(nd - 1, PyArray_DIMS(b), type)) ||
        !(nit = (PyArrayObject *)PyArray_SimpleNew(nd - 2, PyArray_DIMS(C), NPY_INT)) ||
        !(err = (PyArrayObject *)PyArray_SimpleNew(nd - 2, PyArray_DIMS(C), NPY_DOUBLE)))
        goto done;
    GM_RUN(st, type, gm_sinkhorn, PyArray_DATA(C), PyArray_DATA(a), PyArray_DATA(b),
           (size_t)gm_batch_size(C, nd - 2), (size_t)n, (size_t)m, reg, rma, rmb,
           (int)max_iter, tol, PyArray_DATA(P), PyArray_DATA(f), PyArray_DATA(g),
           PyArray_DATA(nit), PyArray_DATA(err));
    if (gm_failed(st, "sinkhorn", names, 3)) goto done;
    result = Py_BuildValue("(OOOOO)", P, f, g, nit, err);
done:
    gm_release((PyArrayObject *[]){C, a, b, P, f, g, nit, err}, 8);
    return result;
}

/* ======================================================================== */
/* Dustbin OT layer                                                         */
/* ======================================================================== */

/* Shared argument handling of the dustbin functions: arrays converted to the
 * common float type, shapes checked (S (..., N, M); mu (..., N+1) or (N+1,);
 * nu (..., M+1) or (M+1,); G (..., N+1, M+1) when given), scalars parsed. */
typedef struct {
    PyArrayObject *S, *mu, *nu, *G;
    int type, nlead;
    npy_intp batch, N, M;
    double bin, reg, reg_m;
    long n_iter, method;
} db_args;

static const char *const db_names[] = {"S", "mu", "nu", "grad_P"};

static void db_args_free(db_args *a)
{
    gm_release((PyArrayObject *[]){a->S, a->mu, a->nu, a->G}, 4);
}

/* Marginal `arr` (name) must be (len,) or S's batch dims + (len,). */
static int db_check_marginal(db_args *a, PyArrayObject *arr, const char *name, npy_intp len)
{
    int nd = PyArray_NDIM(arr);
    if (nd != 1 && nd != a->nlead + 1) {
        gm_set_error(PyExc_ValueError,
                     "%s must have shape (%zd,) or S's batch dimensions followed by %zd "
                     "(N+1 / M+1 with the dustbin), got %d dimensions",
                     name, (Py_ssize_t)len, (Py_ssize_t)len, nd);
        return -1;
    }
    if (nd > 1 && gm_check_same_batch(a->S, "S", a->nlead, arr, name, a->nlead) < 0)
        return -1;
    if (PyArray_DIM(arr, nd - 1) != len) {
        gm_set_error(PyExc_ValueError,
                     "%s must have length %zd along its last axis (the dustbin included), "
                     "got %zd", name, (Py_ssize_t)len, (Py_ssize_t)PyArray_DIM(arr, nd - 1));
        return -1;
    }
    return 0;
}

static int db_parse(db_args *a, PyObject *S, PyObject *mu, PyObject *nu, PyObject *G,
                    PyObject *bin, PyObject *reg, PyObject *reg_m, PyObject *n_iter,
                    PyObject *method)
{
    PyObject *objs[4] = {S, mu, nu, G};
    a->type = gm_common_float_type(objs, db_names, G ? 4 : 3);
    if (a->type < 0) return -1;
    if (gm_parse_real(bin, "bin_score", 0, &a->bin) < 0 ||
        gm_parse_real(reg, "reg", GM_POS, &a->reg) < 0 ||
        gm_parse_real(reg_m, "reg_m", GM_NONNEG | GM_INF, &a->reg_m) < 0 ||
        gm_parse_int(n_iter, "n_iter", 1, 1000000, &a->n_iter) < 0 ||
        gm_parse_int(method, "method", 0, 2, &a->method) < 0)
        return -1;
    if (!(a->S = gm_as_array(S, a->type, "S", 2, NPY_MAXDIMS, 0))) return -1;
    if (!(a->mu = gm_as_array(mu, a->type, "mu", 1, NPY_MAXDIMS, 0))) return -1;
    if (!(a->nu = gm_as_array(nu, a->type, "nu", 1, NPY_MAXDIMS, 0))) return -1;
    a->nlead = PyArray_NDIM(a->S) - 2;
    a->N = PyArray_DIM(a->S, a->nlead);
    a->M = PyArray_DIM(a->S, a->nlead + 1);
    a->batch = gm_batch_size(a->S, a->nlead);
    if (db_check_marginal(a, a->mu, "mu", a->N + 1) < 0) return -1;
    if (db_check_marginal(a, a->nu, "nu", a->M + 1) < 0) return -1;
    if (G) {
        if (!(a->G = gm_as_array(G, a->type, "grad_P", 2, NPY_MAXDIMS, 0))) return -1;
        if (PyArray_NDIM(a->G) != a->nlead + 2 ||
            gm_check_same_batch(a->S, "S", a->nlead, a->G, "grad_P", a->nlead) < 0 ||
            PyArray_DIM(a->G, a->nlead) != a->N + 1 ||
            PyArray_DIM(a->G, a->nlead + 1) != a->M + 1) {
            gm_set_error(PyExc_ValueError,
                         "grad_P must have the plan's shape: S's batch dimensions followed "
                         "by (%zd, %zd)", (Py_ssize_t)(a->N + 1), (Py_ssize_t)(a->M + 1));
            return -1;
        }
    }
    return 0;
}

/* Byte offset of batch item bb in an array of `per` elements per item (0
 * for a marginal shared by the batch). */
#define DB_AT(arr, per, bb, es) ((void *)((char *)PyArray_DATA(arr) + (bb) * (per) * (es)))

PyDoc_STRVAR(py_dustbin_sinkhorn__doc__,
             "dustbin_sinkhorn(S, mu, nu, bin_score, reg, reg_m, n_iter, method)\n--\n\n"
             "Dustbin OT plan; returns (P, method_used). See geomatch.dustbin.");

static PyObject *py_dustbin_sinkhorn(PyObject *self, PyObject *args)
{
    PyObject *S, *mu, *nu, *bin, *reg, *reg_m, *n_iter, *method;
    PyArrayObject *P = NULL;
    PyObject *result = NULL;
    db_args a;
    int st = GM_OK, used = 0;
    memset(&a, 0, sizeof a);
    if (!PyArg_ParseTuple(args, "OOOOOOOO:dustbin_sinkhorn", &S, &mu, &nu, &bin, &reg,
                          &reg_m, &n_iter, &method))
        return NULL;
    if (db_parse(&a, S, mu, nu, NULL, bin, reg, reg_m, n_iter, method) < 0) goto done;
    {
        npy_intp dims[NPY_MAXDIMS];
        for (int i = 0; i < a.nlead; i++) dims[i] = PyArray_DIM(a.S, i);
        dims[a.nlead] = a.N + 1;
        dims[a.nlead + 1] = a.M + 1;
        if (!(P = (PyArrayObject *)PyArray_SimpleNew(a.nlead + 2, dims, a.type))) goto done;
    }
    {
        size_t N = (size_t)a.N, M = (size_t)a.M, es = PyArray_ITEMSIZE(a.S);
        size_t smu = PyArray_NDIM(a.mu) == 1 ? 0 : N + 1;
        size_t snu = PyArray_NDIM(a.nu) == 1 ? 0 : M + 1;
        Py_BEGIN_ALLOW_THREADS
        gm_clear_error();
        for (size_t bb = 0; bb < (size_t)a.batch && st == GM_OK; bb++)
            st = GM_CALL(a.type, gm_dustbin_sinkhorn, DB_AT(a.S, N * M, bb, es),
                         DB_AT(a.mu, smu, bb, es), DB_AT(a.nu, snu, bb, es), N, M, a.bin,
                         a.reg, a.reg_m, (int)a.n_iter, (int)a.method,
                         DB_AT(P, (N + 1) * (M + 1), bb, es), &used);
        Py_END_ALLOW_THREADS
    }
    if (gm_failed(st, "dustbin_sinkhorn", db_names, 4)) goto done;
    result = Py_BuildValue("Oi", (PyObject *)P, used);
done:
    gm_release((PyArrayObject *[]){P}, 1);
    db_args_free(&a);
    return result;
}

PyDoc_STRVAR(py_dustbin_sinkhorn_vjp__doc__,
             "dustbin_sinkhorn_vjp(S, mu, nu, grad_P, bin_score, reg, reg_m, n_iter, "
             "method, wrt_log)\n--\n\nReverse-mode VJP; returns (dS, dbin, method_used).");

static PyObject *py_dustbin_sinkhorn_vjp(PyObject *self, PyObject *args)
{
    PyObject *S, *mu, *nu, *G, *bin, *reg, *reg_m, *n_iter, *method;
    int wrt_log;
    PyArrayObject *dS = NULL, *dbin = NULL;
    PyObject *result = NULL;
    db_args a;
    int st = GM_OK, used = 0;
    memset(&a, 0, sizeof a);
    if (!PyArg_ParseTuple(args, "OOOOOOOOOp:dustbin_sinkhorn_vjp", &S, &mu, &nu, &G, &bin,
                          &reg, &reg_m, &n_iter, &method, &wrt_log))
        return NULL;
    if (db_parse(&a, S, mu, nu, G, bin, reg, reg_m, n_iter, method) < 0) goto done;
    if (!(dS = (PyArrayObject *)PyArray_SimpleNew(a.nlead + 2, PyArray_DIMS(a.S), a.type)) ||
        !(dbin = (PyArrayObject *)PyArray_SimpleNew(a.nlead, PyArray_DIMS(a.S), NPY_FLOAT64)))
        goto done;
    {
        size_t N = (size_t)a.N, M = (size_t)a.M, es = PyArray_ITEMSIZE(a.S);
        size_t smu = PyArray_NDIM(a.mu) == 1 ? 0 : N + 1;
        size_t snu = PyArray_NDIM(a.nu) == 1 ? 0 : M + 1;
        double *bp = (double *)PyArray_DATA(dbin);
        Py_BEGIN_ALLOW_THREADS
        gm_clear_error();
        for (size_t bb = 0; bb < (size_t)a.batch && st == GM_OK; bb++)
            st = GM_CALL(a.type, gm_dustbin_sinkhorn_vjp, DB_AT(a.S, N * M, bb, es),
                         DB_AT(a.mu, smu, bb, es), DB_AT(a.nu, snu, bb, es),
                         DB_AT(a.G, (N + 1) * (M + 1), bb, es), N, M, a.bin, a.reg, a.reg_m,
                         (int)a.n_iter, (int)a.method, wrt_log, DB_AT(dS, N * M, bb, es),
                         bp + bb, &used);
        Py_END_ALLOW_THREADS
    }
    if (gm_failed(st, "dustbin_sinkhorn_vjp", db_names, 4)) goto done;
    result = Py_BuildValue("OOi", (PyObject *)dS, (PyObject *)dbin, used);
done:
    gm_release((PyArrayObject *[]){dS, dbin}, 2);
    db_args_free(&a);
    return result;
}

/* ======================================================================== */
/* Argmax and soft-argmax over 2-D maps                                     */
/* ======================================================================== */

/* Shared argument handling of argmax_2d / window_soft_argmax: sim as a
 * float array of >= 1 dimension whose last axis has h * w entries.  Fills
 * *nmaps and the output shape (sim.shape[:-1] + (2,)); NULL on error. */
static PyArrayObject *gm_parse_maps(PyObject *simo, PyObject *ho, PyObject *wo, long *h,
                                    long *w, size_t *nmaps, int *nd, npy_intp *dims)
{
    static const char *const names[] = {"sim"};
    int type = gm_common_float_type(&simo, names, 1);
    if (type < 0) return NULL;
    if (gm_parse_int(ho, "shape[0] (h)", 1, 1L << 30, h) < 0) return NULL;
    if (gm_parse_int(wo, "shape[1] (w)", 1, 1L << 30, w) < 0) return NULL;
    PyArrayObject *sim = gm_as_array(simo, type, "sim", 1, NPY_MAXDIMS, 0);
    if (sim == NULL) return NULL;
    *nd = PyArray_NDIM(sim);
    if ((long long)PyArray_DIM(sim, *nd - 1) != (long long)*h * (long long)*w) {
        gm_set_error(PyExc_ValueError,
                     "sim's last dimension must be h*w = %ld*%ld = %lld for shape "
                     "(%ld, %ld), got %zd", *h, *w, (long long)*h * *w, *h, *w,
                     (Py_ssize_t)PyArray_DIM(sim, *nd - 1));
        Py_DECREF(sim);
        return NULL;
    }
    for (int i = 0; i < *nd - 1; i++) dims[i] = PyArray_DIM(sim, i);
    dims[*nd - 1] = 2;
    *nmaps = (size_t)gm_batch_size(sim, *nd - 1);
    return sim;
}

PyDoc_STRVAR(py_argmax_2d__doc__,
             "argmax_2d(sim, h, w)\n--\n\nInteger (x, y) of the first maximum of each h*w map.");

/* argmax_2d(sim, h, w) -> int64 (..., 2) integer (x, y) of the first max. */
static PyObject *py_argmax_2d(PyObject *self, PyObject *args)
{
    PyObject *simo, *ho, *wo, *result = NULL;
    PyArrayObject *sim = NULL, *out = NULL;
    static const char *const names[] = {"sim"};
    long h, w;
    size_t nmaps;
    int nd, st = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OOO:argmax_2d", &simo, &ho, &wo)) return NULL;
    if (!(sim = gm_parse_maps(simo, ho, wo, &h, &w, &nmaps, &nd, dims))) goto done;
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, NPY_INT64))) goto done;
    GM_RUN(st, PyArray_TYPE(sim), gm_argmax_2d, PyArray_DATA(sim), nmaps, (size_t)h,
           (size_t)w, PyArray_DATA(out));
    if (gm_failed(st, "argmax_2d", names, 1)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){sim, out}, 2);
    return result;
}

PyDoc_STRVAR(py_window_soft_argmax__doc__,
             "window_soft_argmax(sim, h, w, window, temperature)\n--\n\nWindowed "
             "soft-argmax (x, y) of each h*w map.");

/* window_soft_argmax(sim, h, w, window, temperature) -> (..., 2) float
 * expected (x, y) of the windowed softmax around the first max. */
static PyObject *py_window_soft_argmax(PyObject *self, PyObject *args)
{
    PyObject *simo, *ho, *wo, *wino, *to, *result = NULL;
    PyArrayObject *sim = NULL, *out = NULL;
    static const char *const names[] = {"sim"};
    long h, w, window;
    double temperature;
    size_t nmaps;
    int nd, st = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OOOOO:window_soft_argmax", &simo, &ho, &wo, &wino, &to))
        return NULL;
    if (gm_parse_int(wino, "window", 0, 1L << 30, &window) < 0) goto done;
    if (gm_parse_real(to, "temperature", GM_POS, &temperature) < 0) goto done;
    if (!(sim = gm_parse_maps(simo, ho, wo, &h, &w, &nmaps, &nd, dims))) goto done;
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, PyArray_TYPE(sim)))) goto done;
    GM_RUN(st, PyArray_TYPE(sim), gm_window_soft_argmax, PyArray_DATA(sim), nmaps, (size_t)h,
           (size_t)w, window, temperature, PyArray_DATA(out));
    if (gm_failed(st, "window_soft_argmax", names, 1)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){sim, out}, 2);
    return result;
}

/* ======================================================================== */
/* Keypoint transfer                                                        */
/* ======================================================================== */

/* C argument names of gm_transfer_upsample_argmax (and of gm_transfer_check's
 * status codes). */
static const char *const tr_names[] = {"src_feat", "trg_feat", "src_kps", "src_size",
                                       "trg_size"};

/* Sizes argument -> new C-contiguous int64 array of shape lead + (2,); the
 * values are the kernel's to check.  NULL with TypeError/ValueError naming
 * `name`. */
static PyArrayObject *gm_transfer_sizes(PyObject *obj, const char *name, PyArrayObject *lead,
                                        int nlead)
{
    PyArrayObject *arr = NULL, *tmp = (PyArrayObject *)PyArray_FROM_O(obj);
    if (tmp == NULL) {
        PyErr_Clear();
        gm_set_error(PyExc_TypeError, "%s must be an array of integers (W, H)", name);
        return NULL;
    }
    if (!PyArray_ISINTEGER(tmp) || PyArray_ISBOOL(tmp)) {
        gm_set_error(PyExc_TypeError, "%s must hold integers (W, H), got dtype %S", name,
                     (PyObject *)PyArray_DESCR(tmp));
        Py_DECREF(tmp);
        return NULL;
    }
    arr = (PyArrayObject *)PyArray_FROMANY((PyObject *)tmp, NPY_INT64, 0, 0,
                                           NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(tmp);
    if (arr == NULL) return NULL;
    if (PyArray_NDIM(arr) != nlead + 1 || PyArray_DIM(arr, nlead) != 2 ||
        gm_check_same_batch(arr, name, nlead, lead, "src_kps", nlead) < 0) {
        gm_set_error(PyExc_ValueError, "%s must have shape (batch..., 2) matching the "
                     "leading dimensions of src_kps", name);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* The keypoints and both size arrays of a transfer call, converted: src_kps
 * (..., K, 2) of `type` with nlead batch dimensions, sizes (..., 2) int64. */
static int gm_transfer_points(PyObject *o_kp, PyObject *o_ss, PyObject *o_ts, int type,
                              int nlead, PyArrayObject **kp, PyArrayObject **ss,
                              PyArrayObject **ts)
{
    if (!(*kp = gm_as_array(o_kp, type, "src_kps", nlead + 2, nlead + 2, 1))) return -1;
    if (PyArray_DIM(*kp, nlead + 1) != 2) {
        gm_set_error(PyExc_ValueError, "src_kps must have shape (..., K, 2), got last "
                     "dimension %zd", (Py_ssize_t)PyArray_DIM(*kp, nlead + 1));
        return -1;
    }
    if (!(*ss = gm_transfer_sizes(o_ss, "src_size", *kp, nlead))) return -1;
    if (!(*ts = gm_transfer_sizes(o_ts, "trg_size", *kp, nlead))) return -1;
    return 0;
}

PyDoc_STRVAR(py_transfer_check__doc__,
             "transfer_check(src_kps, src_size, trg_size)\n--\n\n"
             "Raise ValueError unless the image sizes are within the size policy and every\n"
             "keypoint lies inside its source image (docs/limits.md).");

/* transfer_check(src_kps, src_size, trg_size): the size policy and keypoint
 * bounds of every transfer mode (gm_transfer_check), for the grid modes that
 * run in Python.  src_kps (..., K, 2), sizes (..., 2) int.  Returns None. */
static PyObject *py_transfer_check(PyObject *self, PyObject *args)
{
    PyObject *o_kp, *o_ss, *o_ts, *result = NULL;
    PyArrayObject *kp = NULL, *ss = NULL, *ts = NULL;
    int type, nlead, st = GM_OK;
    if (!PyArg_ParseTuple(args, "OOO:transfer_check", &o_kp, &o_ss, &o_ts)) return NULL;
    if ((type = gm_common_float_type(&o_kp, tr_names + 2, 1)) < 0) goto done;
    if (!(kp = gm_as_array(o_kp, type, "src_kps", 2, NPY_MAXDIMS, 1))) goto done;
    nlead = PyArray_NDIM(kp) - 2;
    Py_CLEAR(kp);
    if (gm_transfer_points(o_kp, o_ss, o_ts, type, nlead, &kp, &ss, &ts) < 0) goto done;
    GM_RUN(st, type, gm_transfer_check, PyArray_DATA(kp), PyArray_DATA(ss), PyArray_DATA(ts),
           (size_t)gm_batch_size(kp, nlead), (size_t)PyArray_DIM(kp, nlead));
    if (gm_failed(st, "transfer_check", tr_names, 5)) goto done;
    Py_INCREF(Py_None);
    result = Py_None;
done:
    gm_release((PyArrayObject *[]){kp, ss, ts}, 3);
    return result;
}

PyDoc_STRVAR(py_transfer_upsample_argmax__doc__,
             "transfer_upsample_argmax(src_feat, trg_feat, src_kps, src_size, trg_size, *, "
             "check_src=True, full_scan=False, packed_gemm=False)\n--\n\n"
             "Exact upsample-argmax keypoint transfer (see geomatch.transfer); "
             "check_src=False skips the scan of src_feat for non-finite values (the "
             "caller has checked it); full_scan=True evaluates every pixel instead of the "
             "branch and bound over grid cells (same results; for tests); "
             "packed_gemm=True computes the float32 grid dots with the packed AVX-512 GEMM "
             "(which transposes the target map) instead of sgemm_abt's kernel (same results; "
             "for tests and benchmarks).");

/* transfer_upsample_argmax(src_feat, trg_feat, src_kps, src_size, trg_size):
 * src_feat (..., hs, ws, D), trg_feat (..., ht, wt, D), src_kps (..., K, 2),
 * sizes (..., 2) int -> (..., K, 2) float (x, y) target pixels.  Sizes,
 * keypoints and values are the kernel's to check. */
static PyObject *py_transfer_upsample_argmax(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"src_feat", "trg_feat", "src_kps", "src_size", "trg_size",
                             "check_src", "full_scan", "packed_gemm", NULL};
    PyObject *objs[3], *o_ss, *o_ts, *result = NULL;
    int check_src = 1, full_scan = 0, packed_gemm = 0;
    PyArrayObject *sf = NULL, *tf = NULL, *kp = NULL, *ss = NULL, *ts = NULL, *out = NULL;
    npy_intp dims[NPY_MAXDIMS];
    int type, nd, nlead, st = GM_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|$ppp:transfer_upsample_argmax", kwlist,
                                     &objs[0], &objs[1], &objs[2], &o_ss, &o_ts, &check_src,
                                     &full_scan, &packed_gemm))
        return NULL;
    if ((type = gm_common_float_type(objs, tr_names, 3)) < 0) goto done;
    if (!(sf = gm_as_array(objs[0], type, "src_feat", 3, NPY_MAXDIMS - 1, 0))) goto done;
    nd = PyArray_NDIM(sf);
    nlead = nd - 3;
    if (!(tf = gm_as_array(objs[1], type, "trg_feat", nd, nd, 0))) goto done;
    if (gm_check_same_batch(sf, "src_feat", nlead, tf, "trg_feat", nlead) < 0) goto done;
    if (gm_transfer_points(objs[2], o_ss, o_ts, type, nlead, &kp, &ss, &ts) < 0) goto done;
    if (gm_check_same_batch(sf, "src_feat", nlead, kp, "src_kps", nlead) < 0) goto done;
    if (PyArray_DIM(tf, nd - 1) != PyArray_DIM(sf, nd - 1)) {
        gm_set_error(PyExc_ValueError, "src_feat and trg_feat must have the same feature "
                     "dimension, got %zd and %zd", (Py_ssize_t)PyArray_DIM(sf, nd - 1),
                     (Py_ssize_t)PyArray_DIM(tf, nd - 1));
        goto done;
    }
    for (int i = 0; i < nlead + 1; i++) dims[i] = PyArray_DIM(kp, i);
    dims[nlead + 1] = 2;
    if (!(out = (PyArrayObject *)PyArray_ZEROS(nlead + 2, dims, type, 0))) goto done;
    GM_RUN(st, type, gm_transfer_upsample_argmax_ex, PyArray_DATA(sf), PyArray_DATA(tf),
           PyArray_DATA(kp), PyArray_DATA(ss), PyArray_DATA(ts),
           (size_t)gm_batch_size(sf, nlead), (size_t)PyArray_DIM(sf, nlead),
           (size_t)PyArray_DIM(sf, nlead + 1), (size_t)PyArray_DIM(tf, nlead),
           (size_t)PyArray_DIM(tf, nlead + 1), (size_t)PyArray_DIM(sf, nd - 1),
           (size_t)PyArray_DIM(kp, nlead),
           (check_src ? 0 : GM_TRANSFER_SRC_FINITE) | (full_scan ? GM_TRANSFER_FULL_SCAN : 0) |
               (packed_gemm ? GM_TRANSFER_PACKED_GEMM : 0),
           PyArray_DATA(out));
    if (gm_failed(st, "transfer_upsample_argmax", tr_names, 5)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){sf, tf, kp, ss, ts, out}, 6);
    return result;
}

/* ======================================================================== */
/* Backbone building blocks                                                 */
/* ======================================================================== */

/* Check that a 1-D array (may be NULL) has length n. */
static int gm_check_vec(PyArrayObject *v, npy_intp n, const char *name)
{
    if (v != NULL && (PyArray_NDIM(v) != 1 || PyArray_DIM(v, 0) != n)) {
        gm_set_error(PyExc_ValueError, "%s must have shape (%zd,)", name, (Py_ssize_t)n);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(py_nn_linear__doc__,
             "nn_linear(x, weight, bias=None, out=None, act=0, accumulate=False)\n--\n\n"
             "act(x @ weight.T + bias) (act 1 = exact GELU), or out += x @ weight.T + bias.");

static PyObject *py_nn_linear(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "weight", "bias", "out", "act", "accumulate", NULL};
    static const char *const names[] = {"x", "weight", "bias"};
    PyObject *objs[3] = {NULL, NULL, Py_None}, *oout = Py_None, *oact = NULL;
    int accumulate = 0, st = GM_OK, type;
    long act = 0;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOOp:nn_linear", kwlist, &objs[0],
                                     &objs[1], &objs[2], &oout, &oact, &accumulate))
        return NULL;
    if (oact != NULL && gm_parse_int(oact, "act", 0, 1, &act) < 0) goto done;
    if ((type = gm_common_float_type(objs, names, 3)) < 0) goto done;
    if (!(x = gm_as_array(objs[0], type, "x", 2, 2, 0))) goto done;
    if (!(w = gm_as_array(objs[1], type, "weight", 2, 2, 0))) goto done;
    if (objs[2] != Py_None && !(b = gm_as_array(objs[2], type, "bias", 1, 1, 0))) goto done;
    if (PyArray_DIM(w, 1) != PyArray_DIM(x, 1)) {
        gm_set_error(PyExc_ValueError, "weight must have shape (dout, %zd), got (%zd, %zd)",
                     (Py_ssize_t)PyArray_DIM(x, 1), (Py_ssize_t)PyArray_DIM(w, 0),
                     (Py_ssize_t)PyArray_DIM(w, 1));
        goto done;
    }
    if (gm_check_vec(b, PyArray_DIM(w, 0), "bias") < 0) goto done;
    if (accumulate && oout == Py_None) {
        gm_set_error(PyExc_ValueError, "accumulate=True needs out");
        goto done;
    }
    if (accumulate && act != 0) {
        gm_set_error(PyExc_ValueError, "act must be 0 when accumulate=True");
        goto done;
    }
    npy_intp dims[2] = {PyArray_DIM(x, 0), PyArray_DIM(w, 0)};
    if (!(out = gm_out_array(oout, type, 2, dims, "out", 1, 1))) goto done;
    GM_RUN(st, type, gm_nn_linear, PyArray_DATA(x), (size_t)dims[0],
           (size_t)PyArray_DIM(x, 1), PyArray_DATA(w), b ? PyArray_DATA(b) : NULL,
           (size_t)dims[1], (int)act, accumulate, PyArray_DATA(out));
    if (gm_failed(st, "nn_linear", names, 3)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){x, w, b, out}, 4);
    return result;
}

PyDoc_STRVAR(py_nn_layernorm__doc__,
             "nn_layernorm(x, weight=None, bias=None, eps=1e-6, out=None)\n--\n\n"
             "Row-wise LayerNorm of a 2-D array.");

static PyObject *py_nn_layernorm(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "weight", "bias", "eps", "out", NULL};
    static const char *const names[] = {"x", "weight", "bias"};
    PyObject *objs[3] = {NULL, Py_None, Py_None}, *oeps = NULL, *oout = Py_None;
    double eps = 1e-6;
    int st = GM_OK, type;
    PyArrayObject *x = NULL, *g = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOO:nn_layernorm", kwlist, &objs[0],
                                     &objs[1], &objs[2], &oeps, &oout))
        return NULL;
    if (oeps != NULL && gm_parse_real(oeps, "eps", GM_NONNEG, &eps) < 0) goto done;
    if ((type = gm_common_float_type(objs, names, 3)) < 0) goto done;
    if (!(x = gm_as_array(objs[0], type, "x", 2, 2, 0))) goto done;
    if (objs[1] != Py_None && !(g = gm_as_array(objs[1], type, "weight", 1, 1, 0))) goto done;
    if (objs[2] != Py_None && !(b = gm_as_array(objs[2], type, "bias", 1, 1, 0))) goto done;
    if (gm_check_vec(g, PyArray_DIM(x, 1), "weight") < 0) goto done;
    if (gm_check_vec(b, PyArray_DIM(x, 1), "bias") < 0) goto done;
    if (!(out = gm_out_array(oout, type, 2, PyArray_DIMS(x), "out", 1, 1))) goto done;
    GM_RUN(st, type, gm_nn_layernorm, PyArray_DATA(x), (size_t)PyArray_DIM(x, 0),
           (size_t)PyArray_DIM(x, 1), g ? PyArray_DATA(g) : NULL, b ? PyArray_DATA(b) : NULL,
           eps, PyArray_DATA(out));
    if (gm_failed(st, "nn_layernorm", names, 3)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){x, g, b, out}, 4);
    return result;
}

PyDoc_STRVAR(py_nn_swiglu__doc__,
             "nn_swiglu(h, out=None)\n--\n\nsilu(h[:, :k]) * h[:, k:] with k = h.shape[1] // 2.");

static PyObject *py_nn_swiglu(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"h", "out", NULL};
    static const char *const names[] = {"h"};
    PyObject *oh, *oout = Py_None, *result = NULL;
    int st = GM_OK, type;
    PyArrayObject *h = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:nn_swiglu", kwlist, &oh, &oout))
        return NULL;
    if ((type = gm_common_float_type(&oh, names, 1)) < 0) goto done;
    if (!(h = gm_as_array(oh, type, "h", 2, 2, 0))) goto done;
    if (PyArray_DIM(h, 1) % 2 != 0) {
        gm_set_error(PyExc_ValueError, "h must have an even number of columns");
        goto done;
    }
    npy_intp dims[2] = {PyArray_DIM(h, 0), PyArray_DIM(h, 1) / 2};
    if (!(out = gm_out_array(oout, type, 2, dims, "out", 1, 1))) goto done;
    GM_RUN(st, type, gm_nn_swiglu, PyArray_DATA(h), (size_t)dims[0], (size_t)dims[1],
           PyArray_DATA(out));
    if (gm_failed(st, "nn_swiglu", names, 1)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){h, out}, 2);
    return result;
}

/* qkv's last dimension as 3 * heads * hd: hd (> 0), or -1 with ValueError. */
static long gm_qkv_head_dim(PyArrayObject *q, long heads)
{
    npy_intp c = PyArray_DIM(q, PyArray_NDIM(q) - 1);
    if (c % (3 * heads) != 0) {
        gm_set_error(PyExc_ValueError,
                     "qkv's last dimension (%zd) must be a multiple of 3 * heads (%ld)",
                     (Py_ssize_t)c, 3 * heads);
        return -1;
    }
    return (long)(c / (3 * heads));
}

PyDoc_STRVAR(py_nn_attention__doc__,
             "nn_attention(qkv, heads, out=None, kernel='auto')\n--\n\n"
             "softmax(q k^T / sqrt(hd)) v per head; qkv is ([B,] n, 3*D) laid out [q|k|v].\n"
             "kernel: 'auto' (the fused one where it applies), 'tiled' (BLAS tiles) or\n"
             "'fused' (float32, head dimension 64, AVX-512 CPUs: see\n"
             "nn_attention_fused_supported).");

static PyObject *py_nn_attention(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"qkv", "heads", "out", "kernel", NULL};
    static const char *const names[] = {"qkv"};
    PyObject *oq, *oheads, *oout = Py_None, *result = NULL;
    const char *kname = "auto";
    long heads, hd;
    int st = GM_OK, type, nd, kernel;
    PyArrayObject *q = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Os:nn_attention", kwlist, &oq, &oheads,
                                     &oout, &kname))
        return NULL;
    if (strcmp(kname, "auto") == 0)
        kernel = GM_NN_ATTN_AUTO;
    else if (strcmp(kname, "tiled") == 0)
        kernel = GM_NN_ATTN_TILED;
    else if (strcmp(kname, "fused") == 0)
        kernel = GM_NN_ATTN_FUSED;
    else {
        PyErr_Format(PyExc_ValueError, "kernel must be 'auto', 'tiled' or 'fused', got '%s'",
                     kname);
        return NULL;
    }
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) goto done;
    if ((type = gm_common_float_type(&oq, names, 1)) < 0) goto done;
    if (!(q = gm_as_array(oq, type, "qkv", 2, 3, 0))) goto done;
    if ((hd = gm_qkv_head_dim(q, heads)) < 0) goto done;
    if (kernel == GM_NN_ATTN_FUSED &&
        (type != NPY_FLOAT32 || hd != 64 || !gm_nn_attention_fused_supported())) {
        PyErr_Format(PyExc_ValueError,
                     "kernel: 'fused' needs float32 qkv (got %s), head dimension 64 (got %ld) "
                     "and a CPU with AVX-512 (%s)", gm_type_name(type), hd,
                     gm_nn_attention_fused_supported() ? "present" : "absent");
        goto done;
    }
    nd = PyArray_NDIM(q);
    npy_intp batch = nd == 3 ? PyArray_DIM(q, 0) : 1, n = PyArray_DIM(q, nd - 2);
    npy_intp dims[3] = {batch, n, heads * hd};
    if (!(out = gm_out_array(oout, type, nd, dims + 3 - nd, "out", 1, 1))) goto done;
    GM_RUN(st, type, gm_nn_attention_kernel, PyArray_DATA(q), (size_t)batch, (size_t)n,
           (size_t)heads, (size_t)hd, kernel, PyArray_DATA(out));
    if (gm_failed(st, "nn_attention", names, 1)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){q, out}, 2);
    return result;
}

PyDoc_STRVAR(py_nn_attention_fused_supported__doc__,
             "nn_attention_fused_supported()\n--\n\nTrue when this CPU runs the fused "
             "float32 attention kernel (AVX-512).");

static PyObject *py_nn_attention_fused_supported(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(gm_nn_attention_fused_supported());
}


/* ---- bfloat16 backbone path (gm_bf16.c) ---- */

/* uint16 values before the packed panels: din, dout (32 bits each), padding
 * to 64 bytes so the panels stay aligned like the array itself */
#define GM_BF16_HEADER 32

/* accumulate=True needs out and act 0. */
static int gm_bf16_check_accumulate(int accumulate, PyObject *oout, long act)
{
    if (accumulate && oout == Py_None) {
        gm_set_error(PyExc_ValueError, "accumulate=True needs out");
        return -1;
    }
    if (accumulate && act != 0) {
        gm_set_error(PyExc_ValueError, "act must be 0 when accumulate=True");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(py_bf16_supported__doc__,
             "bf16_supported()\n--\n\nTrue when this CPU runs the AVX512-BF16 kernels.");

static PyObject *py_bf16_supported(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(gm_bf16_supported());
}

PyDoc_STRVAR(py_transfer_upsample_argmax_group__doc__,
             "transfer_upsample_argmax_group(src_feats, src_kps, src_sizes, trg_feat, trg_size, "
             "*, check_src=True, full_scan=False, work=None, packed_gemm=False)\n--\n\n"
             "transfer_upsample_argmax for several pairs sharing one target map: src_feats "
             "and src_kps are sequences of (hs, ws, D) maps and (K_p, 2) keypoints, "
             "src_sizes an (n, 2) integer array, trg_feat (ht, wt, D), trg_size (W, H).  "
             "Returns a list of (K_p, 2) arrays, each bit for bit the per-pair result.  "
             "check_src, full_scan and packed_gemm as for transfer_upsample_argmax.  When every "
             "map is "
             "float16 and the keypoints float32, the maps are read as they are (no float32 "
             "copies; results those of the float32 maps) and the target is converted into "
             "work (a float32 array of at least trg_feat's size, reused between calls) when "
             "given.");

/* transfer_upsample_argmax_group(...): gm_transfer_upsample_argmax_group on
 * converted copies (common float type of every array) of the inputs. */
static PyObject *py_transfer_upsample_argmax_group(PyObject *self, PyObject *args,
                                                   PyObject *kwds)
{
    static char *kwlist[] = {"src_feats", "src_kps", "src_sizes", "trg_feat", "trg_size",
                             "check_src", "full_scan", "work", "packed_gemm", NULL};
    PyObject *o_sf, *o_kp, *o_ss, *o_tf, *o_ts, *seq_sf = NULL, *seq_kp = NULL;
    PyObject *o_work = Py_None;
    float *work = NULL;
    PyObject *result = NULL;
    PyArrayObject *tf = NULL, *ss = NULL, *ts = NULL;
    PyArrayObject **arrs = NULL;          /* n source maps, n keypoint arrays, n outputs */
    const void **psf = NULL, **pkp = NULL;
    void **pout = NULL;
    size_t *nk = NULL;
    Py_ssize_t n = 0, i;
    int check_src = 1, full_scan = 0, packed_gemm = 0, type = NPY_FLOAT32, st = GM_OK, half = 0;
    int flags;
    size_t hs = 0, ws = 0, dim;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|$ppOp:transfer_upsample_argmax_group",
                                     kwlist, &o_sf, &o_kp, &o_ss, &o_tf, &o_ts, &check_src,
                                     &full_scan, &o_work, &packed_gemm))
        return NULL;
    if (!(seq_sf = PySequence_Fast(o_sf, "src_feats must be a sequence of arrays"))) goto done;
    if (!(seq_kp = PySequence_Fast(o_kp, "src_kps must be a sequence of arrays"))) goto done;
    n = PySequence_Fast_GET_SIZE(seq_sf);
    if (PySequence_Fast_GET_SIZE(seq_kp) != n) {
        gm_set_error(PyExc_ValueError, "src_feats and src_kps must have the same length");
        goto done;
    }
    {
        int t = gm_float_type_of(o_tf, "trg_feat");
        if (t < 0) goto done;
        if (t == NPY_FLOAT64) type = NPY_FLOAT64;
        half = PyArray_Check(o_tf) && PyArray_TYPE((PyArrayObject *)o_tf) == NPY_FLOAT16;
        for (i = 0; i < n; i++) {
            PyObject *f = PySequence_Fast_GET_ITEM(seq_sf, i);
            int a = gm_float_type_of(f, "src_feats");
            int b = a < 0 ? -1 : gm_float_type_of(PySequence_Fast_GET_ITEM(seq_kp, i), "src_kps");
            if (b < 0) goto done;
            if (a == NPY_FLOAT64 || b == NPY_FLOAT64) type = NPY_FLOAT64;
            half = half && PyArray_Check(f) && PyArray_TYPE((PyArrayObject *)f) == NPY_FLOAT16;
        }
        /* every map float16 (a feature cache's dtype) and float32 keypoints:
         * the maps go to the kernel as they are (gm_transfer_upsample_argmax_group_f16,
         * bit for bit the float32 result on converted maps) */
        half = half && type == NPY_FLOAT32;
    }
    if (!(tf = gm_as_array(o_tf, half ? NPY_FLOAT16 : type, "trg_feat", 3, 3, 0))) goto done;
    dim = (size_t)PyArray_DIM(tf, 2);
    if (!(ts = gm_transfer_sizes(o_ts, "trg_size", NULL, 0))) goto done;
    ss = (PyArrayObject *)PyArray_FROMANY(o_ss, NPY_INT64, 2, 2,
                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!ss || PyArray_DIM(ss, 0) != n || PyArray_DIM(ss, 1) != 2) {
        PyErr_Clear();
        gm_set_error(PyExc_ValueError, "src_sizes must be an (n, 2) integer array, one (W, H) "
                     "per pair");
        goto done;
    }
    arrs = PyMem_Calloc((size_t)(3 * n + 1), sizeof *arrs);
    psf = PyMem_Calloc((size_t)(n + 1), sizeof *psf);
    pkp = PyMem_Calloc((size_t)(n + 1), sizeof *pkp);
    pout = PyMem_Calloc((size_t)(n + 1), sizeof *pout);
    nk = PyMem_Calloc((size_t)(n + 1), sizeof *nk);
    if (!arrs || !psf || !pkp || !pout || !nk) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyArrayObject *a, *k, *o;
        npy_intp dims[2];
        if (!(a = arrs[i] = gm_as_array(PySequence_Fast_GET_ITEM(seq_sf, i),
                                        half ? NPY_FLOAT16 : type, "src_feats", 3, 3, 0)))
            goto done;
        if (!(k = arrs[n + i] = gm_as_array(PySequence_Fast_GET_ITEM(seq_kp, i), type,
                                            "src_kps", 2, 2, 1)))
            goto done;
        if (i == 0) {
            hs = (size_t)PyArray_DIM(a, 0);
            ws = (size_t)PyArray_DIM(a, 1);
        }
        if ((size_t)PyArray_DIM(a, 0) != hs || (size_t)PyArray_DIM(a, 1) != ws ||
            (size_t)PyArray_DIM(a, 2) != dim) {
            gm_set_error(PyExc_ValueError, "src_feats must all have the same grid and the "
                         "feature dimension of trg_feat");
            goto done;
        }
        if (PyArray_DIM(k, 1) != 2) {
            gm_set_error(PyExc_ValueError, "src_kps must be (K, 2) arrays");
            goto done;
        }
        dims[0] = PyArray_DIM(k, 0);
        dims[1] = 2;
        if (!(o = arrs[2 * n + i] = (PyArrayObject *)PyArray_ZEROS(2, dims, type, 0)))
            goto done;
        psf[i] = PyArray_DATA(a);
        pkp[i] = PyArray_DATA(k);
        pout[i] = PyArray_DATA(o);
        nk[i] = (size_t)dims[0];
    }
    flags = (check_src ? 0 : GM_TRANSFER_SRC_FINITE) | (full_scan ? GM_TRANSFER_FULL_SCAN : 0) |
            (packed_gemm ? GM_TRANSFER_PACKED_GEMM : 0);
    if (o_work != Py_None) {
        PyArrayObject *wa;
        if (!(wa = gm_ndarray_of(o_work, NPY_FLOAT32, "work"))) goto done;
        if (!PyArray_IS_C_CONTIGUOUS(wa) || !PyArray_ISWRITEABLE(wa) || !PyArray_ISALIGNED(wa) ||
            (size_t)PyArray_SIZE(wa) < (size_t)PyArray_SIZE(tf)) {
            gm_set_error(PyExc_ValueError, "work must be a writable C-contiguous float32 array "
                         "of at least %zd values (trg_feat's size)", (Py_ssize_t)PyArray_SIZE(tf));
            goto done;
        }
        work = (float *)PyArray_DATA(wa);
    }
    if (half) {
        Py_BEGIN_ALLOW_THREADS
        gm_clear_error();
        st = gm_transfer_upsample_argmax_group_f16(
            (const uint16_t *const *)psf, (const float *const *)pkp, nk, PyArray_DATA(ss),
            (size_t)n, hs, ws, PyArray_DATA(tf), PyArray_DATA(ts), (size_t)PyArray_DIM(tf, 0),
            (size_t)PyArray_DIM(tf, 1), dim, flags, work, (float *const *)pout);
        Py_END_ALLOW_THREADS
    } else {
        GM_RUN(st, type, gm_transfer_upsample_argmax_group, (void *)psf, (void *)pkp, nk,
               PyArray_DATA(ss), (size_t)n, hs, ws, PyArray_DATA(tf), PyArray_DATA(ts),
               (size_t)PyArray_DIM(tf, 0), (size_t)PyArray_DIM(tf, 1), dim, flags,
               (void *)pout);
    }
    if (gm_failed(st, "transfer_upsample_argmax_group", tr_names, 5)) goto done;
    if (!(result = PyList_New(n))) goto done;
    for (i = 0; i < n; i++) {
        PyList_SET_ITEM(result, i, (PyObject *)arrs[2 * n + i]);
        arrs[2 * n + i] = NULL;
    }
done:
    if (arrs)
        for (i = 0; i < 3 * n; i++) Py_XDECREF(arrs[i]);
    PyMem_Free(arrs);
    PyMem_Free(psf);
    PyMem_Free(pkp);
    PyMem_Free(pout);
    PyMem_Free(nk);
    Py_XDECREF(seq_sf);
    Py_XDECREF(seq_kp);
    gm_release((PyArrayObject *[]){tf, ss, ts}, 3);
    return result;
}

PyDoc_STRVAR(py_f16_all_finite__doc__,
             "f16_all_finite(src)\n--\n\nTrue if every value of the C-contiguous float16 "
             "array src is finite.");

/* f16_all_finite(src): gm_f16_all_finite over one C-contiguous float16 array. */
static PyObject *py_f16_all_finite(PyObject *self, PyObject *args)
{
    PyArrayObject *src;
    int st;
    if (!PyArg_ParseTuple(args, "O!:f16_all_finite", &PyArray_Type, &src)) return NULL;
    if (PyArray_TYPE(src) != NPY_FLOAT16 || !PyArray_IS_C_CONTIGUOUS(src)) {
        gm_set_error(PyExc_TypeError, "src must be a C-contiguous float16 array");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = gm_f16_all_finite((const uint16_t *)PyArray_DATA(src), (size_t)PyArray_SIZE(src));
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(st == GM_OK);
}

PyDoc_STRVAR(py_f16_to_f32__doc__,
             "f16_to_f32(src, out)\n--\n\nCopy the float16 array src into the float32 array "
             "out (same number of values, both C-contiguous), exactly.  Returns True if "
             "every value is finite.");

/* f16_to_f32(src, out): gm_f16_to_f32 from one C-contiguous float16 array into
 * a writable C-contiguous float32 array of as many values.  Returns whether
 * all are finite. */
static PyObject *py_f16_to_f32(PyObject *self, PyObject *args)
{
    PyArrayObject *src, *out;
    int st;
    if (!PyArg_ParseTuple(args, "O!O!:f16_to_f32", &PyArray_Type, &src, &PyArray_Type, &out))
        return NULL;
    if (PyArray_TYPE(src) != NPY_FLOAT16 || !PyArray_IS_C_CONTIGUOUS(src)) {
        gm_set_error(PyExc_TypeError, "src must be a C-contiguous float16 array");
        return NULL;
    }
    if (PyArray_TYPE(out) != NPY_FLOAT32 || !PyArray_IS_C_CONTIGUOUS(out) ||
        !PyArray_ISWRITEABLE(out) || !PyArray_ISALIGNED(out)) {
        gm_set_error(PyExc_TypeError, "out must be a writable C-contiguous float32 array");
        return NULL;
    }
    if (PyArray_SIZE(src) != PyArray_SIZE(out)) {
        gm_set_error(PyExc_ValueError, "out must have as many values as src (%zd), got %zd",
                     (Py_ssize_t)PyArray_SIZE(src), (Py_ssize_t)PyArray_SIZE(out));
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = gm_f16_to_f32((const uint16_t *)PyArray_DATA(src), (float *)PyArray_DATA(out),
                       (size_t)PyArray_SIZE(src));
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(st == GM_OK);
}

PyDoc_STRVAR(py_bf16_pack__doc__,
             "bf16_pack(weight)\n--\n\nA (dout, din) float32 weight rounded to bfloat16 "
             "(nearest even) and packed for nn_linear_bf16 (1-D uint16, shape in a header).");

static PyObject *py_bf16_pack(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"weight", NULL};
    PyObject *ow;
    PyArrayObject *w = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:bf16_pack", kwlist, &ow)) return NULL;
    if (!(w = gm_as_array(ow, NPY_FLOAT32, "weight", 2, 2, 0))) return NULL;
    size_t dout = (size_t)PyArray_DIM(w, 0), din = (size_t)PyArray_DIM(w, 1);
    if (dout == 0 || din == 0 || din > 0xffffffffu || dout > 0xffffffffu) {
        gm_set_error(PyExc_ValueError, "weight must be non-empty (and below 2^32 per side), "
                     "got shape (%zd, %zd)", (Py_ssize_t)dout, (Py_ssize_t)din);
        Py_DECREF(w);
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)gm_bf16_packed_size(din, dout) + GM_BF16_HEADER};
    out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT16);
    if (out != NULL) {
        uint16_t *o = PyArray_DATA(out);
        memset(o, 0, GM_BF16_HEADER * sizeof(uint16_t));
        o[0] = (uint16_t)(din & 0xffff);
        o[1] = (uint16_t)(din >> 16);
        o[2] = (uint16_t)(dout & 0xffff);
        o[3] = (uint16_t)(dout >> 16);
        gm_bf16_pack_weight(PyArray_DATA(w), din, dout, o + GM_BF16_HEADER);
    }
    Py_DECREF(w);
    return (PyObject *)out;
}

PyDoc_STRVAR(py_nn_linear_bf16__doc__,
             "nn_linear_bf16(x, packed, bias=None, out=None, act=0, accumulate=False)\n--\n\n"
             "nn_linear with x and the packed weight in bfloat16, float32 accumulation.  x "
             "may hold bfloat16 bits already (a uint16 array, an even number of columns), "
             "and out may be a uint16 (n, dout) array (dout a multiple of 32, no "
             "accumulate): the result act(x W^T + b) is then rounded to bfloat16 there, "
             "bit for bit what the next layer's conversion of the float32 result gives.");

static PyObject *py_nn_linear_bf16(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "packed", "bias", "out", "act", "accumulate", NULL};
    static const char *const names[] = {"x", "packed", "bias"};
    PyObject *ox, *ow, *ob = Py_None, *oout = Py_None, *oact = NULL, *result = NULL;
    int accumulate = 0, st = GM_OK, x16 = 0, y16 = 0;
    long act = 0;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOOp:nn_linear_bf16", kwlist, &ox, &ow,
                                     &ob, &oout, &oact, &accumulate))
        return NULL;
    if (oact != NULL && gm_parse_int(oact, "act", 0, 1, &act) < 0) goto done;
    if (!gm_bf16_supported()) {
        gm_set_error(PyExc_RuntimeError, "nn_linear_bf16: this CPU has no AVX512-BF16");
        goto done;
    }
    x16 = PyArray_Check(ox) && PyArray_TYPE((PyArrayObject *)ox) == NPY_UINT16;
    if (x16) {
        x = (PyArrayObject *)ox;
        Py_INCREF(x);
        if (PyArray_NDIM(x) != 2 || !PyArray_IS_C_CONTIGUOUS(x) || PyArray_DIM(x, 1) % 2) {
            gm_set_error(PyExc_ValueError, "x of bfloat16 bits (uint16) must be a C-contiguous "
                         "2-D array with an even number of columns");
            goto done;
        }
    } else if (!(x = gm_as_array(ox, NPY_FLOAT32, "x", 2, 2, 0))) {
        goto done;
    }
    if (!PyArray_Check(ow) || PyArray_TYPE((PyArrayObject *)ow) != NPY_UINT16 ||
        PyArray_NDIM((PyArrayObject *)ow) != 1 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)ow) ||
        PyArray_DIM((PyArrayObject *)ow, 0) <= GM_BF16_HEADER) {
        gm_set_error(PyExc_TypeError, "packed must be a 1-D contiguous uint16 array "
                     "from bf16_pack");
        goto done;
    }
    w = (PyArrayObject *)ow;
    Py_INCREF(w);
    const uint16_t *hdr = PyArray_DATA(w);
    size_t n = (size_t)PyArray_DIM(x, 0), din = (size_t)PyArray_DIM(x, 1);
    size_t wdin = (size_t)hdr[0] | ((size_t)hdr[1] << 16);
    size_t dout = (size_t)hdr[2] | ((size_t)hdr[3] << 16);
    if (wdin == 0 || dout == 0 ||
        (size_t)PyArray_DIM(w, 0) != gm_bf16_packed_size(wdin, dout) + GM_BF16_HEADER) {
        gm_set_error(PyExc_TypeError, "packed must be a 1-D contiguous uint16 array "
                     "from bf16_pack");
        goto done;
    }
    if (n == 0 || din == 0) {
        gm_set_error(PyExc_ValueError, "x must be non-empty");
        goto done;
    }
    if (wdin != din) {
        gm_set_error(PyExc_ValueError, "packed holds a (%zd, %zd) weight; x has %zd columns",
                     (Py_ssize_t)dout, (Py_ssize_t)wdin, (Py_ssize_t)din);
        goto done;
    }
    if (ob != Py_None && !(b = gm_as_array(ob, NPY_FLOAT32, "bias", 1, 1, 0))) goto done;
    if (gm_check_vec(b, (npy_intp)dout, "bias") < 0) goto done;
    if (gm_bf16_check_accumulate(accumulate, oout, act) < 0) goto done;
    npy_intp dims[2] = {(npy_intp)n, (npy_intp)dout};
    y16 = oout != Py_None && PyArray_Check(oout) &&
          PyArray_TYPE((PyArrayObject *)oout) == NPY_UINT16;
    if (y16 && (accumulate || dout % 32)) {
        gm_set_error(PyExc_ValueError, "out of bfloat16 bits (uint16) needs accumulate=False "
                     "and a multiple of 32 output columns, got %zd", (Py_ssize_t)dout);
        goto done;
    }
    if (!(out = gm_out_array(oout, y16 ? NPY_UINT16 : NPY_FLOAT32, 2, dims, "out", 1, 1)))
        goto done;
    {
        const void *px = PyArray_DATA(x);
        const float *pb = b ? PyArray_DATA(b) : NULL;
        void *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        st = gm_nn_linear_bf16_io(x16 ? NULL : (const float *)px,
                                  x16 ? (const uint16_t *)px : NULL, n, din,
                                  hdr + GM_BF16_HEADER, pb, dout, (int)act, accumulate,
                                  y16 ? NULL : (float *)py, y16 ? (uint16_t *)py : NULL);
        Py_END_ALLOW_THREADS
    }
    if (gm_failed(st, "nn_linear_bf16", names, 3)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){x, w, b, out}, 4);
    return result;
}

PyDoc_STRVAR(py_nn_attention_bf16__doc__,
             "nn_attention_bf16(qkv, heads, out=None)\n--\n\nnn_attention with bfloat16 q, k, "
             "v and probabilities, float32 softmax and sums; flash-style; head dimension 64; "
             "qkv is (batch, n, 3*D) float32.");

static PyObject *py_nn_attention_bf16(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"qkv", "heads", "out", NULL};
    static const char *const names[] = {"qkv"};
    PyObject *oq, *oout = Py_None, *result = NULL;
    Py_ssize_t heads;
    int st = GM_OK;
    PyArrayObject *q = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|O:nn_attention_bf16", kwlist, &oq, &heads,
                                     &oout))
        return NULL;
    if (!gm_bf16_supported()) {
        gm_set_error(PyExc_RuntimeError, "nn_attention_bf16: this CPU has no AVX512-BF16");
        goto done;
    }
    if (!(q = gm_as_array(oq, NPY_FLOAT32, "qkv", 3, 3, 0))) goto done;
    npy_intp b = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1), c = PyArray_DIM(q, 2);
    if (heads < 1 || c % (3 * heads) != 0 || c / (3 * heads) != 64 || b == 0 || n == 0) {
        gm_set_error(PyExc_ValueError, "qkv must have shape (batch, n, 3 * heads * 64) with "
                     "batch, n >= 1 (head dimension 64), got (%zd, %zd, %zd) for heads=%zd",
                     (Py_ssize_t)b, (Py_ssize_t)n, (Py_ssize_t)c, heads);
        goto done;
    }
    npy_intp dims[3] = {b, n, c / 3};
    if (!(out = gm_out_array(oout, NPY_FLOAT32, 3, dims, "out", 1, 1))) goto done;
    {
        const float *pq = PyArray_DATA(q);
        float *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        st = gm_nn_attention_bf16(pq, (size_t)b, (size_t)n, (size_t)heads, 64, py);
        Py_END_ALLOW_THREADS
    }
    if (gm_failed(st, "nn_attention_bf16", names, 1)) goto done;
    result = gm_steal(&out);
done:
    gm_release((PyArrayObject *[]){q, out}, 2);
    return result;
}

/* ======================================================================== */
/* Head kernels                                                             */
/* ======================================================================== */

/* A 2-D matrix operand of gemm: an ndarray of dtype `type`, aligned, whose
 * rows are contiguous (unit stride along axis 1) with row stride *ld >= its
 * number of columns (a single row counts as row stride = columns).  With
 * `writable` it must be writable.  Borrowed: no reference is taken.
 * -1 with TypeError/ValueError naming `name` otherwise. */
static int gm_matrix_operand(PyObject *obj, int type, const char *name, int writable,
                             PyArrayObject **arr, size_t *ld)
{
    PyArrayObject *a = gm_ndarray_of(obj, type, name);
    if (a == NULL) return -1;
    if (PyArray_NDIM(a) != 2 || PyArray_DIM(a, 0) < 1 || PyArray_DIM(a, 1) < 1) {
        gm_set_error(PyExc_ValueError, "%s must be a non-empty 2-D array", name);
        return -1;
    }
    npy_intp item = PyArray_ITEMSIZE(a);
    npy_intp rows = PyArray_DIM(a, 0), cols = PyArray_DIM(a, 1);
    npy_intp s0 = PyArray_STRIDE(a, 0), s1 = PyArray_STRIDE(a, 1);
    if (!PyArray_ISALIGNED(a) || (cols > 1 && s1 != item)
        || (rows > 1 && (s0 % item != 0 || s0 / item < cols))) {
        gm_set_error(PyExc_ValueError, "%s must have contiguous rows (unit stride along "
                     "its last axis, non-overlapping rows)", name);
        return -1;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        gm_set_error(PyExc_ValueError, "%s must be writable", name);
        return -1;
    }
    *arr = a;
    *ld = rows > 1 ? (size_t)(s0 / item) : (size_t)cols;
    return 0;
}

PyDoc_STRVAR(py_gemm__doc__,
             "gemm(a, b, c, trans_a, trans_b, alpha, beta)\n--\n\n"
             "c = alpha op(a) op(b) + beta c in place (op(x) = x.T when trans_x); a, b, c\n"
             "are 2-D arrays of c's dtype with contiguous rows.");

static PyObject *py_gemm(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"a", "b", "c"};
    PyObject *oa, *ob, *oc, *result = NULL;
    int trans_a, trans_b, st = GM_OK, type = -1;
    double alpha, beta;
    PyArrayObject *a, *b, *c;
    size_t lda, ldb, ldc;
    if (!PyArg_ParseTuple(args, "OOOppdd:gemm", &oa, &ob, &oc, &trans_a, &trans_b, &alpha,
                          &beta))
        return NULL;
    if (PyArray_Check(oc)) type = PyArray_TYPE((PyArrayObject *)oc);
    if (type != NPY_FLOAT32 && type != NPY_FLOAT64) {
        gm_set_error(PyExc_TypeError, "c must be a NumPy array of dtype float32 or float64");
        goto done;
    }
    if (gm_matrix_operand(oa, type, "a", 0, &a, &lda) < 0
        || gm_matrix_operand(ob, type, "b", 0, &b, &ldb) < 0
        || gm_matrix_operand(oc, type, "c", 1, &c, &ldc) < 0)
        goto done;
    size_t m = (size_t)PyArray_DIM(a, trans_a ? 1 : 0);
    size_t k = (size_t)PyArray_DIM(a, trans_a ? 0 : 1);
    size_t kb = (size_t)PyArray_DIM(b, trans_b ? 1 : 0);
    size_t n = (size_t)PyArray_DIM(b, trans_b ? 0 : 1);
    if (kb != k || (size_t)PyArray_DIM(c, 0) != m || (size_t)PyArray_DIM(c, 1) != n) {
        gm_set_error(PyExc_ValueError, "gemm: shapes do not match: op(a) is %zu x %zu, "
                     "op(b) %zu x %zu, c %zd x %zd", m, k, kb, n, (Py_ssize_t)PyArray_DIM(c, 0),
                     (Py_ssize_t)PyArray_DIM(c, 1));
        goto done;
    }
    GM_RUN(st, type, gm_gemm, trans_a, trans_b, m, n, k, alpha, PyArray_DATA(a), lda,
           PyArray_DATA(b), ldb, beta, PyArray_DATA(c), ldc);
    if (gm_failed(st, "gemm", names, 3)) goto done;
    Py_INCREF(Py_None);
    result = Py_None;
done:
    return result;
}

PyDoc_STRVAR(py_sgemm_abt__doc__,
             "sgemm_abt(a, b, c, alpha)\n--\n\n"
             "c = alpha a b.T in place, float32 (a m x k, b n x k, c m x n, contiguous rows), "
             "with the AVX-512 kernel that reads b's rows in place (gm_sgemm_avx512_abt, the "
             "transfer's grid dots): bit for bit gemm(a, b, c, False, True, alpha, 0.0) with "
             "the AVX-512 GEMM.  ValueError on a CPU without AVX-512.");

static PyObject *py_sgemm_abt(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"a", "b", "c"};
    PyObject *oa, *ob, *oc, *result = NULL;
    int st;
    double alpha;
    PyArrayObject *a, *b, *c;
    size_t lda, ldb, ldc;
    if (!PyArg_ParseTuple(args, "OOOd:sgemm_abt", &oa, &ob, &oc, &alpha)) return NULL;
    if (gm_matrix_operand(oa, NPY_FLOAT32, "a", 0, &a, &lda) < 0
        || gm_matrix_operand(ob, NPY_FLOAT32, "b", 0, &b, &ldb) < 0
        || gm_matrix_operand(oc, NPY_FLOAT32, "c", 1, &c, &ldc) < 0)
        return NULL;
    size_t m = (size_t)PyArray_DIM(a, 0), k = (size_t)PyArray_DIM(a, 1);
    size_t n = (size_t)PyArray_DIM(b, 0);
    if ((size_t)PyArray_DIM(b, 1) != k || (size_t)PyArray_DIM(c, 0) != m
        || (size_t)PyArray_DIM(c, 1) != n) {
        gm_set_error(PyExc_ValueError, "sgemm_abt: shapes do not match: a is %zu x %zu, "
                     "b %zd x %zd, c %zd x %zd", m, k, (Py_ssize_t)PyArray_DIM(b, 0),
                     (Py_ssize_t)PyArray_DIM(b, 1), (Py_ssize_t)PyArray_DIM(c, 0),
                     (Py_ssize_t)PyArray_DIM(c, 1));
        return NULL;
    }
    if (!gm_sgemm_avx512_supported()) {
        gm_set_error(PyExc_ValueError, "sgemm_abt needs a CPU (and OS) with AVX-512 "
                     "(F, BW, VL, DQ); this one has none");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = gm_sgemm_avx512_abt(m, n, k, (float)alpha, PyArray_DATA(a), lda, PyArray_DATA(b),
                             ldb, PyArray_DATA(c), ldc);
    Py_END_ALLOW_THREADS
    if (gm_failed(st, "sgemm_abt", names, 3)) goto done;
    Py_INCREF(Py_None);
    result = Py_None;
done:
    return result;
}

PyDoc_STRVAR(py_head_attention_fwd__doc__,
             "head_attention_fwd(qkv, heads, e=None)\n--\n\n"
             "(e, rz, out): exponentials of the shifted scores (written into e when\n"
             "given), 1 / their row sums and the attention output for qkv (batch, n,\n"
             "3*D) laid out [q|k|v].");

static PyObject *py_head_attention_fwd(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"qkv"};
    PyObject *oq, *oheads, *obuf = Py_None, *result = NULL;
    long heads, hd;
    int st = GM_OK, type;
    PyArrayObject *q = NULL, *e = NULL, *rz = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OO|O:head_attention_fwd", &oq, &oheads, &obuf)) return NULL;
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) goto done;
    if ((type = gm_common_float_type(&oq, names, 1)) < 0) goto done;
    if (!(q = gm_as_array(oq, type, "qkv", 3, 3, 0))) goto done;
    if ((hd = gm_qkv_head_dim(q, heads)) < 0) goto done;
    npy_intp batch = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1);
    npy_intp de[4] = {batch, heads, n, n}, dz[3] = {batch, heads, n};
    npy_intp dout[3] = {batch, n, heads * hd};
    /* e may be the caller's buffer (saves faulting in fresh pages) */
    if (!(e = gm_out_array(obuf, type, 4, de, "e", 1, 1)) ||
        !(rz = (PyArrayObject *)PyArray_SimpleNew(3, dz, type)) ||
        !(out = (PyArrayObject *)PyArray_SimpleNew(3, dout, type)))
        goto done;
    GM_RUN(st, type, gm_head_attention_fwd, PyArray_DATA(q), (size_t)batch, (size_t)n,
           (size_t)heads, (size_t)hd, PyArray_DATA(e), PyArray_DATA(rz), PyArray_DATA(out));
    if (gm_failed(st, "head_attention_fwd", names, 1)) goto done;
    result = Py_BuildValue("(OOO)", e, rz, out);
done:
    gm_release((PyArrayObject *[]){q, e, rz, out}, 4);
    return result;
}

PyDoc_STRVAR(py_head_attention_bwd__doc__,
             "head_attention_bwd(qkv, e, rz, out, dout, heads)\n--\n\n"
             "d loss / d qkv given dout = d loss / d out; e is overwritten.");

static PyObject *py_head_attention_bwd(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"qkv", "e", "rz", "out", "dout"};
    PyObject *objs[5], *oheads, *result = NULL;
    long heads, hd;
    int st = GM_OK, type;
    PyArrayObject *q = NULL, *e = NULL, *rz = NULL, *o = NULL, *g = NULL, *dq = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOO:head_attention_bwd", &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &oheads))
        return NULL;
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) goto done;
    PyObject *conv[2] = {objs[0], objs[4]};
    const char *const conv_names[2] = {"qkv", "dout"};
    if ((type = gm_common_float_type(conv, conv_names, 2)) < 0) goto done;
    if (!(q = gm_as_array(objs[0], type, "qkv", 3, 3, 0))) goto done;
    if ((hd = gm_qkv_head_dim(q, heads)) < 0) goto done;
    npy_intp batch = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1);
    npy_intp de[4] = {batch, heads, n, n}, dz[3] = {batch, heads, n};
    npy_intp dout[3] = {batch, n, heads * hd};
    if (!(e = gm_out_array(objs[1], type, 4, de, "e", 1, 0)) ||
        !(rz = gm_out_array(objs[2], type, 3, dz, "rz", 0, 0)) ||
        !(o = gm_out_array(objs[3], type, 3, dout, "out", 0, 0)))
        goto done;
    if (!(g = gm_as_array(objs[4], type, "dout", 3, 3, 0))) goto done;
    if (PyArray_DIM(g, 0) != batch || PyArray_DIM(g, 1) != n
        || PyArray_DIM(g, 2) != heads * hd) {
        gm_set_error(PyExc_ValueError, "dout must have shape (%zd, %zd, %zd)",
                     (Py_ssize_t)batch, (Py_ssize_t)n, (Py_ssize_t)(heads * hd));
        goto done;
    }
    if (!(dq = (PyArrayObject *)PyArray_SimpleNew(3, PyArray_DIMS(q), type))) goto done;
    GM_RUN(st, type, gm_head_attention_bwd, PyArray_DATA(q), PyArray_DATA(e),
           PyArray_DATA(rz), PyArray_DATA(o), PyArray_DATA(g), (size_t)batch, (size_t)n,
           (size_t)heads, (size_t)hd, PyArray_DATA(dq));
    if (gm_failed(st, "head_attention_bwd", names, 5)) goto done;
    result = gm_steal(&dq);
done:
    gm_release((PyArrayObject *[]){q, e, rz, o, g, dq}, 6);
    return result;
}

/* Convert the float arrays objs[0..k) (all of type `type`) into arrs; each
 * after the first must have the shape of arrs[0] (vec[i] == 0) or be 1-D of
 * length arrs[0].shape[-1] (vec[i] != 0); arrs[0] has nd0 dimensions (1 to
 * 32 when nd0 is 0).  -1 on error (arrs holds what was converted, for the
 * caller to release). */
static int gm_same_shapes(PyObject *const *objs, const char *const *names, const int *vec,
                          int k, int type, int nd0, PyArrayObject **arrs)
{
    for (int i = 0; i < k; i++) {
        int lo = vec[i] ? 1 : (nd0 ? nd0 : 1), hi = vec[i] ? 1 : (nd0 ? nd0 : 32);
        if (!(arrs[i] = gm_as_array(objs[i], type, names[i], lo, hi, nd0 == 0))) return -1;
        int last = PyArray_NDIM(arrs[0]) - 1;
        int ok = vec[i] ? PyArray_DIM(arrs[i], 0) == PyArray_DIM(arrs[0], last)
                        : PyArray_SAMESHAPE(arrs[i], arrs[0]);
        if (i > 0 && !ok) {
            gm_set_error(PyExc_ValueError, "%s does not match the shape of %s", names[i],
                         names[0]);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(py_layernorm_fwd__doc__,
             "layernorm_fwd(x, gamma, beta, eps)\n--\n\n(y, xhat, rstd) of row LayerNorm.");

static PyObject *py_layernorm_fwd(PyObject *self, PyObject *args)
{
    static const char *const names[3] = {"x", "gamma", "beta"};
    static const int vec[3] = {0, 1, 1};
    PyObject *objs[3], *oeps, *result = NULL;
    double eps;
    int st = GM_OK, type;
    PyArrayObject *arrs[3] = {NULL, NULL, NULL}, *y = NULL, *xh = NULL, *rs = NULL;
    if (!PyArg_ParseTuple(args, "OOOO:layernorm_fwd", &objs[0], &objs[1], &objs[2], &oeps))
        return NULL;
    if (gm_parse_real(oeps, "eps", GM_NONNEG, &eps) < 0) goto done;
    if ((type = gm_common_float_type(objs, names, 3)) < 0) goto done;
    if (gm_same_shapes(objs, names, vec, 3, type, 2, arrs) < 0) goto done;
    npy_intp *dims = PyArray_DIMS(arrs[0]);
    if (!(y = (PyArrayObject *)PyArray_SimpleNew(2, dims, type))
        || !(xh = (PyArrayObject *)PyArray_SimpleNew(2, dims, type))
        || !(rs = (PyArrayObject *)PyArray_SimpleNew(1, dims, type)))
        goto done;
    GM_RUN(st, type, gm_layernorm_fwd, PyArray_DATA(arrs[0]), (size_t)dims[0],
           (size_t)dims[1], PyArray_DATA(arrs[1]), PyArray_DATA(arrs[2]), eps, PyArray_DATA(y),
           PyArray_DATA(xh), PyArray_DATA(rs));
    if (gm_failed(st, "layernorm_fwd", names, 3)) goto done;
    result = Py_BuildValue("(OOO)", y, xh, rs);
done:
    gm_release(arrs, 3);
    gm_release((PyArrayObject *[]){y, xh, rs}, 3);
    return result;
}

PyDoc_STRVAR(py_layernorm_bwd__doc__,
             "layernorm_bwd(dy, xhat, rstd, gamma, dx=None)\n--\n\n"
             "(dx, dgamma, dbeta); with dx given the input gradient is added to it.");

static PyObject *py_layernorm_bwd(PyObject *self, PyObject *args)
{
    static const char *const names[4] = {"dy", "xhat", "rstd", "gamma"};
    static const char *const names3[3] = {"dy", "xhat", "gamma"};
    static const int vec3[3] = {0, 0, 1};
    PyObject *objs[4], *odx = Py_None, *result = NULL;
    int st = GM_OK, accumulate = 0, type;
    PyArrayObject *a3[3] = {NULL, NULL, NULL}, *rstd = NULL, *dx = NULL, *dg = NULL;
    PyArrayObject *db = NULL;
    if (!PyArg_ParseTuple(args, "OOOO|O:layernorm_bwd", &objs[0], &objs[1], &objs[2],
                          &objs[3], &odx))
        return NULL;
    if ((type = gm_common_float_type(objs, names, 4)) < 0) goto done;
    /* rstd has one entry per row: checked apart */
    PyObject *objs3[3] = {objs[0], objs[1], objs[3]};
    if (gm_same_shapes(objs3, names3, vec3, 3, type, 2, a3) < 0) goto done;
    npy_intp *dims = PyArray_DIMS(a3[0]);
    if (!(rstd = gm_as_array(objs[2], type, "rstd", 1, 1, 0))) goto done;
    if (PyArray_DIM(rstd, 0) != dims[0]) {
        gm_set_error(PyExc_ValueError, "rstd must have one entry per row of dy");
        goto done;
    }
    accumulate = odx != Py_None;
    if (!(dx = gm_out_array(odx, type, 2, dims, "dx", 1, 1))) goto done;
    if (PyArray_DATA(dx) == PyArray_DATA(a3[0])) {
        gm_set_error(PyExc_ValueError, "dx must not be dy");
        goto done;
    }
    if (!(dg = (PyArrayObject *)PyArray_SimpleNew(1, dims + 1, type))
        || !(db = (PyArrayObject *)PyArray_SimpleNew(1, dims + 1, type)))
        goto done;
    GM_RUN(st, type, gm_layernorm_bwd, PyArray_DATA(a3[0]), PyArray_DATA(a3[1]),
           PyArray_DATA(rstd), PyArray_DATA(a3[2]), (size_t)dims[0], (size_t)dims[1],
           accumulate, PyArray_DATA(dx), PyArray_DATA(dg), PyArray_DATA(db));
    if (gm_failed(st, "layernorm_bwd", names, 4)) goto done;
    result = Py_BuildValue("(OOO)", dx, dg, db);
done:
    gm_release(a3, 3);
    gm_release((PyArrayObject *[]){rstd, dx, dg, db}, 4);
    return result;
}

PyDoc_STRVAR(py_gelu_tanh_fwd__doc__,
             "gelu_tanh_fwd(u)\n--\n\n(g, t): tanh-form GELU and the tanh kept for bwd.");

static PyObject *py_gelu_tanh_fwd(PyObject *self, PyObject *args)
{
    static const char *const names[1] = {"u"};
    static const int vec[1] = {0};
    PyObject *ou, *result = NULL;
    PyArrayObject *u = NULL, *g = NULL, *t = NULL;
    int st = GM_OK, type;
    if (!PyArg_ParseTuple(args, "O:gelu_tanh_fwd", &ou)) return NULL;
    if ((type = gm_common_float_type(&ou, names, 1)) < 0) goto done;
    if (gm_same_shapes(&ou, names, vec, 1, type, 0, &u) < 0) goto done;
    if (!(g = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(u), PyArray_DIMS(u), type))
        || !(t = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(u), PyArray_DIMS(u), type)))
        goto done;
    GM_RUN(st, type, gm_gelu_tanh_fwd, PyArray_DATA(u), (size_t)PyArray_SIZE(u),
           PyArray_DATA(g), PyArray_DATA(t));
    if (gm_failed(st, "gelu_tanh_fwd", names, 1)) goto done;
    result = Py_BuildValue("(OO)", g, t);
done:
    gm_release((PyArrayObject *[]){u, g, t}, 3);
    return result;
}

PyDoc_STRVAR(py_gelu_tanh_bwd__doc__,
             "gelu_tanh_bwd(dg, u, t)\n--\n\nd loss / d u of the tanh-form GELU.");

static PyObject *py_gelu_tanh_bwd(PyObject *self, PyObject *args)
{
    static const char *const names[3] = {"dg", "u", "t"};
    static const int vec[3] = {0, 0, 0};
    PyObject *objs[3], *result = NULL;
    PyArrayObject *a[3] = {NULL, NULL, NULL}, *du = NULL;
    int st = GM_OK, type;
    if (!PyArg_ParseTuple(args, "OOO:gelu_tanh_bwd", &objs[0], &objs[1], &objs[2]))
        return NULL;
    if ((type = gm_common_float_type(objs, names, 3)) < 0) goto done;
    if (gm_same_shapes(objs, names, vec, 3, type, 0, a) < 0) goto done;
    if (!(du = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(a[0]), PyArray_DIMS(a[0]),
                                                  type)))
        goto done;
    GM_RUN(st, type, gm_gelu_tanh_bwd, PyArray_DATA(a[0]), PyArray_DATA(a[1]),
           PyArray_DATA(a[2]), (size_t)PyArray_SIZE(a[0]), PyArray_DATA(du));
    if (gm_failed(st, "gelu_tanh_bwd", names, 3)) goto done;
    result = gm_steal(&du);
done:
    gm_release(a, 3);
    gm_release((PyArrayObject *[]){du}, 1);
    return result;
}

/* ======================================================================== */
/* Training loss                                                            */
/* ======================================================================== */

/* New reference to a C-contiguous one-byte boolean copy of a 1-D mask of
 * length n (any integer/bool array-like; nonzero = True).  NULL with
 * ValueError naming `name`. */
static PyArrayObject *gm_as_mask(PyObject *obj, npy_intp n, const char *name)
{
    PyArrayObject *raw = (PyArrayObject *)PyArray_FROMANY(obj, NPY_BOOL, 1, 1,
                                                          NPY_ARRAY_IN_ARRAY);
    if (raw == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) return NULL;
        PyErr_Clear();
        gm_set_error(PyExc_ValueError, "%s must be a 1-D boolean mask", name);
        return NULL;
    }
    if (PyArray_DIM(raw, 0) != n) {
        gm_set_error(PyExc_ValueError, "%s has %zd entries, the plan needs %zd", name,
                     (Py_ssize_t)PyArray_DIM(raw, 0), (Py_ssize_t)n);
        Py_DECREF(raw);
        return NULL;
    }
    return raw;  /* NPY_BOOL is one byte per entry, 0 or 1 */
}

PyDoc_STRVAR(py_loss_fgbg__doc__,
             "loss_fgbg(P, src_fg, trg_fg, lo, hi, weight, need_grad)\n--\n\n"
             "(sum of -log(1 - clip(P, lo, hi)) over foreground x background entries,\n"
             "gradient (weight / (1 - P) there, 0 elsewhere) or None).");

static PyObject *py_loss_fgbg(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"P"};
    PyObject *op, *os, *ot, *olo, *ohi, *ow, *result = NULL;
    double lo, hi, weight, sum = 0.0;
    int need_grad, st = GM_OK, type;
    PyArrayObject *p = NULL, *sm = NULL, *tm = NULL, *grad = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOp:loss_fgbg", &op, &os, &ot, &olo, &ohi, &ow,
                          &need_grad))
        return NULL;
    if (gm_parse_real(olo, "lo", 0, &lo) < 0 || gm_parse_real(ohi, "hi", 0, &hi) < 0 ||
        gm_parse_real(ow, "weight", 0, &weight) < 0)
        goto done;
    if ((type = gm_common_float_type(&op, names, 1)) < 0) goto done;
    if (!(p = gm_as_array(op, type, "P", 2, 2, 0))) goto done;
    npy_intp n = PyArray_DIM(p, 0) - 1, m = PyArray_DIM(p, 1) - 1;
    if (n < 1 || m < 1) {
        gm_set_error(PyExc_ValueError, "P must be (N+1) x (M+1) with N, M >= 1");
        goto done;
    }
    if (!(sm = gm_as_mask(os, n, "src_fg")) || !(tm = gm_as_mask(ot, m, "trg_fg"))) goto done;
    if (need_grad && !(grad = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(p), type)))
        goto done;
    GM_RUN(st, type, gm_loss_fgbg, PyArray_DATA(p), (size_t)n, (size_t)m,
           (const uint8_t *)PyArray_DATA(sm), (const uint8_t *)PyArray_DATA(tm), lo, hi,
           weight, &sum, grad ? PyArray_DATA(grad) : NULL);
    if (gm_failed(st, "loss_fgbg", names, 1)) goto done;
    result = Py_BuildValue("(dO)", sum, grad ? (PyObject *)grad : Py_None);
done:
    gm_release((PyArrayObject *[]){p, sm, tm, grad}, 4);
    return result;
}

/* ======================================================================== */
/* Module                                                                   */
/* ======================================================================== */

/* One method-table entry: py_<name>, its flags and py_<name>__doc__. */
#define GM_FUNC(name, flags) \
    {#name, (PyCFunction)(void (*)(void))py_##name, (flags), py_##name##__doc__}

static PyMethodDef gm_methods[] = {
    GM_FUNC(set_num_threads, METH_O),
    GM_FUNC(get_num_threads, METH_NOARGS),
    GM_FUNC(build_info, METH_NOARGS),
    GM_FUNC(set_sgemm, METH_O),
    GM_FUNC(get_sgemm, METH_NOARGS),
    GM_FUNC(fma_peak, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(cosine_similarity, METH_VARARGS),
    GM_FUNC(sinkhorn, METH_VARARGS),
    GM_FUNC(dustbin_sinkhorn, METH_VARARGS),
    GM_FUNC(dustbin_sinkhorn_vjp, METH_VARARGS),
    GM_FUNC(argmax_2d, METH_VARARGS),
    GM_FUNC(window_soft_argmax, METH_VARARGS),
    GM_FUNC(transfer_check, METH_VARARGS),
    GM_FUNC(f16_to_f32, METH_VARARGS),
    GM_FUNC(f16_all_finite, METH_VARARGS),
    GM_FUNC(transfer_upsample_argmax_group, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(transfer_upsample_argmax, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_linear, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_layernorm, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_swiglu, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_attention, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(bf16_supported, METH_NOARGS),
    GM_FUNC(nn_attention_fused_supported, METH_NOARGS),
    GM_FUNC(bf16_pack, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_linear_bf16, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(nn_attention_bf16, METH_VARARGS | METH_KEYWORDS),
    GM_FUNC(gemm, METH_VARARGS),
    GM_FUNC(sgemm_abt, METH_VARARGS),
    GM_FUNC(head_attention_fwd, METH_VARARGS),
    GM_FUNC(head_attention_bwd, METH_VARARGS),
    GM_FUNC(layernorm_fwd, METH_VARARGS),
    GM_FUNC(layernorm_bwd, METH_VARARGS),
    GM_FUNC(gelu_tanh_fwd, METH_VARARGS),
    GM_FUNC(gelu_tanh_bwd, METH_VARARGS),
    GM_FUNC(loss_fgbg, METH_VARARGS),
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef gm_module = {
    PyModuleDef_HEAD_INIT, "geomatch._core",
    "geomatch's C core (similarity, optimal transport, matching kernels).", -1,
    gm_methods,
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    gm_get_num_threads();  /* registers the fork handler before any fork */
    return PyModule_Create(&gm_module);
}

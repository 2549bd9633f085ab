/* _core.c -- the one CPython/NumPy binding of geomatch's C core.
 *
 * Conventions (every function below follows them):
 *  - arguments go through the converter helpers in the first part of this
 *    file, which raise TypeError/ValueError naming the argument;
 *  - arrays are converted to C-contiguous float32 or float64 (the common
 *    type of the inputs: float64 if any input is float64, else float32;
 *    float16 is promoted to float32; other dtypes are refused);
 *  - the GIL is released around every kernel call; the C status is turned
 *    into an exception only after the GIL is re-acquired;
 *  - one cleanup exit per function; an exception that is already set is
 *    never overwritten.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL GM_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>

#include "geomatch.h"

/* ======================================================================== */
/* Converter helpers                                                        */
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
    Py_DECREF(descr);
    if (type == NPY_FLOAT32 || type == NPY_FLOAT16) return NPY_FLOAT32;
    if (type == NPY_FLOAT64) return NPY_FLOAT64;
    {
        PyArray_Descr *d = PyArray_DescrFromType(type);
        PyObject *s = d ? PyObject_Str((PyObject *)d) : NULL;
        gm_set_error(PyExc_TypeError,
                     "%s must have a real floating-point dtype (float32 or "
                     "float64), got %s", name, s ? PyUnicode_AsUTF8(s) : "?");
        Py_XDECREF(s);
        Py_XDECREF(d);
    }
    return -1;
}

/* Common floating type of n array-likes (float64 wins).  -1 on error. */
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

/* 0 if every value of arr is finite, else -1 with ValueError naming `name`.
 * The scan runs without the GIL. */
static int gm_check_finite(PyArrayObject *arr, const char *name)
{
    int ok;
    size_t n = (size_t)PyArray_SIZE(arr);
    void *data = PyArray_DATA(arr);
    int type = PyArray_TYPE(arr);
    Py_BEGIN_ALLOW_THREADS
    ok = type == NPY_FLOAT32 ? gm_all_finite_f32((const float *)data, n)
                             : gm_all_finite_f64((const double *)data, n);
    Py_END_ALLOW_THREADS
    if (!ok) {
        gm_set_error(PyExc_ValueError, "%s contains NaN or infinite values", name);
        return -1;
    }
    return 0;
}

/* Parse a Python number into a finite double > 0 (or >= 0 if allow_zero).
 * -1 with TypeError/ValueError naming `name` on failure. */
static int gm_parse_positive(PyObject *obj, const char *name, int allow_zero, double *out)
{
    double v;
    if (obj == NULL || PyBool_Check(obj) || !PyNumber_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a real number, got %s", name,
                     obj ? Py_TYPE(obj)->tp_name : "nothing");
        return -1;
    }
    if (PyComplex_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a real number, got complex", name);
        return -1;
    }
    v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (!isfinite(v) || v < 0.0 || (!allow_zero && v == 0.0)) {
        gm_set_error(PyExc_ValueError, "%s must be a finite number %s 0, got %R", name,
                     allow_zero ? ">=" : ">", obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parse a Python int into [lo, hi].  -1 with an error naming `name`. */
static int gm_parse_int(PyObject *obj, const char *name, long lo, long hi, long *out)
{
    long v;
    if (obj == NULL || PyBool_Check(obj) || !PyLong_Check(obj)) {
        if (obj != NULL && PyArray_IsScalar(obj, Integer)) {
            /* NumPy integer scalars are fine */
        } else {
            gm_set_error(PyExc_TypeError, "%s must be an integer, got %s", name,
                         obj ? Py_TYPE(obj)->tp_name : "nothing");
            return -1;
        }
    }
    v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        gm_set_error(PyExc_ValueError, "%s must be between %ld and %ld, got %R",
                     name, lo, hi, obj);
        return -1;
    }
    if (v < lo || v > hi) {
        gm_set_error(PyExc_ValueError, "%s must be between %ld and %ld, got %R",
                     name, lo, hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* Raise the exception for a kernel status (after re-acquiring the GIL).
 * argnames[k] names the C function's k-th array argument. */
static void gm_raise_status(int status, const char *func, const char *const *argnames,
                            int nargs)
{
    int k;
    if (status == GM_OK || PyErr_Occurred()) return;
    if (status == GM_ERR_NOMEM) {
        PyErr_NoMemory();
        return;
    }
    if (status <= GM_ERR_NONFINITE_BASE && status > GM_ERR_NONFINITE_BASE - 100) {
        k = GM_ERR_NONFINITE_BASE - status;
        gm_set_error(PyExc_ValueError, "%s contains NaN or infinite values",
                     k < nargs ? argnames[k] : "an argument");
        return;
    }
    if (status <= GM_ERR_NEGATIVE_BASE && status > GM_ERR_NEGATIVE_BASE - 100) {
        k = GM_ERR_NEGATIVE_BASE - status;
        gm_set_error(PyExc_ValueError, "%s must be non-negative",
                     k < nargs ? argnames[k] : "an argument");
        return;
    }
    if (status <= GM_ERR_ZEROMASS_BASE && status > GM_ERR_ZEROMASS_BASE - 100) {
        k = GM_ERR_ZEROMASS_BASE - status;
        gm_set_error(PyExc_ValueError, "%s must have a positive total mass (all zeros given)",
                     k < nargs ? argnames[k] : "an argument");
        return;
    }
    if (status == GM_ERR_NUMERIC) {
        gm_set_error(PyExc_FloatingPointError,
                     "%s: the computation overflowed or produced NaN; try a larger "
                     "regularization or float64", func);
        return;
    }
    gm_set_error(PyExc_ValueError, "%s: %s", func, gm_strerror(status));
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
        PyObject *sa = shape_a ? PyObject_Str(shape_a) : NULL;
        PyObject *sb = shape_b ? PyObject_Str(shape_b) : NULL;
        Py_XDECREF(shape_a);
        Py_XDECREF(shape_b);
        PyErr_Clear();
        gm_set_error(PyExc_ValueError,
                     "%s and %s must have the same leading (batch) dimensions, got "
                     "shapes %s and %s", na, nb, sa ? PyUnicode_AsUTF8(sa) : "?",
                     sb ? PyUnicode_AsUTF8(sb) : "?");
        Py_XDECREF(sa);
        Py_XDECREF(sb);
        return -1;
    }
    return 0;
}

/* ======================================================================== */
/* Configuration and threads                                                */
/* ======================================================================== */

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    long n;
    if (gm_parse_int(arg, "n", 1, 4096, &n) < 0) return NULL;
    gm_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(gm_get_num_threads());
}

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

#define GM_METHODS_CONFIG                                                          \
    {"set_num_threads", (PyCFunction)py_set_num_threads, METH_O,                    \
     "set_num_threads(n)\n--\n\nSet the thread count of kernels and BLAS."},       \
    {"get_num_threads", (PyCFunction)py_get_num_threads, METH_NOARGS,              \
     "get_num_threads()\n--\n\nThread count kernels use."},                         \
    {"build_info", (PyCFunction)py_build_info, METH_NOARGS,                        \
     "build_info()\n--\n\nBLAS, OpenMP and SIMD configuration as a dict."},

/* ======================================================================== */
/* similarity                                                               */
/* @@section similarity */
/* cosine_similarity(x, y): x (..., N, D), y (..., M, D) with identical
 * leading dimensions -> (..., N, M) of the common float type. */
static PyObject *py_cosine_similarity(PyObject *self, PyObject *args)
{
    PyObject *xo, *yo, *result = NULL;
    PyArrayObject *x = NULL, *y = NULL, *out = NULL;
    static const char *const names[] = {"x", "y"};
    int type, nd, status = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OO:cosine_similarity", &xo, &yo)) return NULL;
    PyObject *objs[2] = {xo, yo};
    type = gm_common_float_type(objs, names, 2);
    if (type < 0) goto done;
    x = gm_as_array(xo, type, "x", 2, NPY_MAXDIMS, 0);
    if (x == NULL) goto done;
    y = gm_as_array(yo, type, "y", 2, NPY_MAXDIMS, 0);
    if (y == NULL) goto done;
    nd = PyArray_NDIM(x);
    if (gm_check_same_batch(x, "x", nd - 2, y, "y", PyArray_NDIM(y) - 2) < 0) goto done;
    npy_intp n = PyArray_DIM(x, nd - 2), m = PyArray_DIM(y, nd - 2), d = PyArray_DIM(x, nd - 1);
    if (PyArray_DIM(y, nd - 1) != d) {
        gm_set_error(PyExc_ValueError,
                     "x and y must have the same feature size (last dimension), got "
                     "%zd and %zd", (Py_ssize_t)d, (Py_ssize_t)PyArray_DIM(y, nd - 1));
        goto done;
    }
    if (n > INT_MAX || m > INT_MAX || d > INT_MAX) {
        gm_set_error(PyExc_ValueError, "x and y: N, M and D must each be below 2**31");
        goto done;
    }
    for (int i = 0; i < nd - 2; i++) dims[i] = PyArray_DIM(x, i);
    dims[nd - 2] = n;
    dims[nd - 1] = m;
    out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, type);
    if (out == NULL) goto done;
    {
        size_t batch = (size_t)gm_batch_size(x, nd - 2);
        const void *xp = PyArray_DATA(x), *yp = PyArray_DATA(y);
        void *op = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_cosine_similarity_f32(xp, yp, op, batch, (size_t)n, (size_t)m,
                                              (size_t)d);
        else
            status = gm_cosine_similarity_f64(xp, yp, op, batch, (size_t)n, (size_t)m,
                                              (size_t)d);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "cosine_similarity", names, 2);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(out);
    return result;
}

#define GM_METHODS_SIMILARITY                                                      \
    {"cosine_similarity", (PyCFunction)py_cosine_similarity, METH_VARARGS,         \
     "cosine_similarity(x, y)\n--\n\nCosine similarity (..., N, D) x (..., M, D) " \
     "-> (..., N, M)."},
/* @@end similarity */
/* ======================================================================== */

/* ======================================================================== */
/* sinkhorn                                                                 */
/* @@section sinkhorn */

/* Parse a marginal weight: a real number >= 0, +inf allowed. */
static int gm_sk_parse_reg_m(PyObject *obj, const char *name, double *out)
{
    double v;
    if (obj == NULL || PyBool_Check(obj) || !PyNumber_Check(obj) || PyComplex_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a real number, got %s", name,
                     obj ? Py_TYPE(obj)->tp_name : "nothing");
        return -1;
    }
    v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(v) || v < 0.0) {
        gm_set_error(PyExc_ValueError, "%s must be >= 0 (inf allowed), got %R", name, obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* 0 if each batch element has sum(a) == sum(b) to the kernel's relative
 * tolerance (balanced OT), else ValueError naming a and b.  O(size). */
static int gm_sk_check_masses(PyArrayObject *a, PyArrayObject *b, npy_intp batch)
{
    npy_intp n = PyArray_DIM(a, PyArray_NDIM(a) - 1);
    npy_intp m = PyArray_DIM(b, PyArray_NDIM(b) - 1);
    int f32 = PyArray_TYPE(a) == NPY_FLOAT32;
    double rtol = f32 ? 1e-5 : 1e-6;
    for (npy_intp k = 0; k < batch; k++) {
        double sa = 0.0, sb = 0.0;
        for (npy_intp i = 0; i < n; i++)
            sa += f32 ? (double)((const float *)PyArray_DATA(a))[k * n + i]
                      : ((const double *)PyArray_DATA(a))[k * n + i];
        for (npy_intp j = 0; j < m; j++)
            sb += f32 ? (double)((const float *)PyArray_DATA(b))[k * m + j]
                      : ((const double *)PyArray_DATA(b))[k * m + j];
        if (!isfinite(sa) || !isfinite(sb)) return 0; /* the kernel names it */
        if (fabs(sa - sb) > rtol * (sa > sb ? sa : sb)) {
            gm_set_error(PyExc_ValueError,
                         "a and b must have the same total mass for balanced OT "
                         "(reg_m=None): sum(a)=%.9g, sum(b)=%.9g (problem %zd); "
                         "normalize them or pass a finite reg_m", sa, sb, (Py_ssize_t)k);
            return -1;
        }
    }
    return 0;
}

/* _core.sinkhorn(C, a, b, reg, reg_m_a, reg_m_b, max_iter, tol)
 *   -> (P, f, g, n_iter, err).  C (..., N, M), a (..., N), b (..., M). */
static PyObject *py_sinkhorn(PyObject *self, PyObject *args)
{
    PyObject *oC, *oa, *ob, *oreg, *orma, *ormb, *oiter, *otol;
    PyArrayObject *C = NULL, *a = NULL, *b = NULL, *P = NULL, *f = NULL, *g = NULL;
    PyArrayObject *nit = NULL, *err = NULL;
    PyObject *result = NULL;
    double reg, rma, rmb, tol;
    long max_iter;
    int type, st = GM_OK, nd;
    npy_intp batch, n, m;
    static const char *const names[] = {"C", "a", "b"};

    if (!PyArg_ParseTuple(args, "OOOOOOOO:sinkhorn", &oC, &oa, &ob, &oreg, &orma,
                          &ormb, &oiter, &otol))
        return NULL;
    {
        PyObject *objs[3] = {oC, oa, ob};
        type = gm_common_float_type(objs, names, 3);
    }
    if (type < 0) goto done;
    if (gm_parse_positive(oreg, "reg", 0, &reg) < 0) goto done;
    if (gm_sk_parse_reg_m(orma, "reg_m", &rma) < 0) goto done;
    if (gm_sk_parse_reg_m(ormb, "reg_m", &rmb) < 0) goto done;
    if (gm_parse_int(oiter, "max_iter", 1, 2147483647L, &max_iter) < 0) goto done;
    if (gm_parse_positive(otol, "tol", 1, &tol) < 0) goto done;
    C = gm_as_array(oC, type, "C", 2, NPY_MAXDIMS, 0);
    if (C == NULL) goto done;
    nd = PyArray_NDIM(C);
    a = gm_as_array(oa, type, "a", nd - 1, nd - 1, 0);
    if (a == NULL) goto done;
    b = gm_as_array(ob, type, "b", nd - 1, nd - 1, 0);
    if (b == NULL) goto done;
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
    batch = gm_batch_size(C, nd - 2);
    if (isinf(rma) && isinf(rmb)) {
        if (gm_check_finite(a, "a") < 0 || gm_check_finite(b, "b") < 0) goto done;
        if (gm_sk_check_masses(a, b, batch) < 0) goto done;
    }
    P = (PyArrayObject *)PyArray_SimpleNew(nd, PyArray_DIMS(C), type);
    f = (PyArrayObject *)PyArray_SimpleNew(nd - 1, PyArray_DIMS(a), type);
    g = (PyArrayObject *)PyArray_SimpleNew(nd - 1, PyArray_DIMS(b), type);
    nit = (PyArrayObject *)PyArray_SimpleNew(nd - 2, PyArray_DIMS(C), NPY_INT);
    err = (PyArrayObject *)PyArray_SimpleNew(nd - 2, PyArray_DIMS(C), NPY_DOUBLE);
    if (!P || !f || !g || !nit || !err) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (type == NPY_FLOAT32)
        st = gm_sinkhorn_f32(PyArray_DATA(C), PyArray_DATA(a), PyArray_DATA(b),
                             (size_t)batch, (size_t)n, (size_t)m, reg, rma, rmb,
                             (int)max_iter, tol, PyArray_DATA(P), PyArray_DATA(f),
                             PyArray_DATA(g), PyArray_DATA(nit), PyArray_DATA(err));
    else
        st = gm_sinkhorn_f64(PyArray_DATA(C), PyArray_DATA(a), PyArray_DATA(b),
                             (size_t)batch, (size_t)n, (size_t)m, reg, rma, rmb,
                             (int)max_iter, tol, PyArray_DATA(P), PyArray_DATA(f),
                             PyArray_DATA(g), PyArray_DATA(nit), PyArray_DATA(err));
    Py_END_ALLOW_THREADS
    if (st != GM_OK) {
        gm_raise_status(st, "sinkhorn", names, 3);
        goto done;
    }
    result = Py_BuildValue("(OOOOO)", P, f, g, nit, err);
done:
    Py_XDECREF(C); Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(P); Py_XDECREF(f);
    Py_XDECREF(g); Py_XDECREF(nit); Py_XDECREF(err);
    return result;
}

#define GM_METHODS_SINKHORN                                                         \
    {"sinkhorn", (PyCFunction)py_sinkhorn, METH_VARARGS,                            \
     "sinkhorn(C, a, b, reg, reg_m_a, reg_m_b, max_iter, tol)\n--\n\n"             \
     "Entropic OT (see geomatch.sinkhorn); returns (P, f, g, n_iter, err)."},
/* @@end sinkhorn */
/* ======================================================================== */

/* ======================================================================== */
/* dustbin                                                                  */
/* @@section dustbin */

/* A real, finite Python number (any sign) into *out; TypeError/ValueError
 * naming `name`.  With allow_posinf, +inf is accepted too. */
static int db_parse_real(PyObject *obj, const char *name, int allow_posinf, double *out)
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
        PyErr_Clear();
        gm_set_error(PyExc_TypeError, "%s must be a real number, got %s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (isnan(v) || (isinf(v) && !(allow_posinf && v > 0))) {
        gm_set_error(PyExc_ValueError, "%s must be %s, got %R", name,
                     allow_posinf ? "a number or +inf" : "a finite number", obj);
        return -1;
    }
    *out = v;
    return 0;
}

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

static void db_args_free(db_args *a)
{
    Py_XDECREF(a->S);
    Py_XDECREF(a->mu);
    Py_XDECREF(a->nu);
    Py_XDECREF(a->G);
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
    const char *names[4] = {"S", "mu", "nu", "grad_P"};
    memset(a, 0, sizeof *a);
    a->type = gm_common_float_type(objs, names, G ? 4 : 3);
    if (a->type < 0) return -1;
    if (db_parse_real(bin, "bin_score", 0, &a->bin) < 0) return -1;
    if (gm_parse_positive(reg, "reg", 0, &a->reg) < 0) return -1;
    if (db_parse_real(reg_m, "reg_m", 1, &a->reg_m) < 0) return -1;
    if (a->reg_m < 0) {
        gm_set_error(PyExc_ValueError, "reg_m must be >= 0 (or inf), got %R", reg_m);
        return -1;
    }
    if (gm_parse_int(n_iter, "n_iter", 1, 1000000, &a->n_iter) < 0) return -1;
    if (gm_parse_int(method, "method", 0, 2, &a->method) < 0) return -1;
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

/* Raise for a dustbin kernel status; names the arguments. */
static void db_raise(int st, const db_args *a, int used)
{
    static const char *const argnames[] = {"S", "mu", "nu", "grad_P"};
    if (st == GM_ERR_NUMERIC && a->method == GM_DUSTBIN_KERNEL && used == GM_DUSTBIN_LOG) {
        gm_set_error(PyExc_ValueError,
                     "method='kernel' is unsafe for these inputs: "
                     "(max(S~) - min(S~)) / (2 reg) exceeds %d for %s; use method='auto'",
                     a->type == NPY_FLOAT32 ? 30 : 300,
                     a->type == NPY_FLOAT32 ? "float32" : "float64");
        return;
    }
    gm_raise_status(st, "dustbin_sinkhorn", argnames, 4);
}

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
        P = (PyArrayObject *)PyArray_SimpleNew(a.nlead + 2, dims, a.type);
        if (P == NULL) goto done;
    }
    {
        size_t N = (size_t)a.N, M = (size_t)a.M;
        size_t smu = PyArray_NDIM(a.mu) == 1 ? 0 : N + 1;
        size_t snu = PyArray_NDIM(a.nu) == 1 ? 0 : M + 1;
        char *sp = PyArray_DATA(a.S), *mp = PyArray_DATA(a.mu), *np_ = PyArray_DATA(a.nu);
        char *pp = PyArray_DATA(P);
        size_t es = a.type == NPY_FLOAT32 ? 4 : 8;
        Py_BEGIN_ALLOW_THREADS
        for (npy_intp b = 0; b < a.batch && st == GM_OK; b++) {
            size_t bb = (size_t)b;
            if (a.type == NPY_FLOAT32)
                st = gm_dustbin_sinkhorn_f32(
                    (const float *)(sp + bb * N * M * es), (const float *)(mp + bb * smu * es),
                    (const float *)(np_ + bb * snu * es), N, M, a.bin, a.reg, a.reg_m,
                    (int)a.n_iter, (int)a.method, (float *)(pp + bb * (N + 1) * (M + 1) * es),
                    &used);
            else
                st = gm_dustbin_sinkhorn_f64(
                    (const double *)(sp + bb * N * M * es), (const double *)(mp + bb * smu * es),
                    (const double *)(np_ + bb * snu * es), N, M, a.bin, a.reg, a.reg_m,
                    (int)a.n_iter, (int)a.method,
                    (double *)(pp + bb * (N + 1) * (M + 1) * es), &used);
        }
        Py_END_ALLOW_THREADS
    }
    if (st != GM_OK) {
        db_raise(st, &a, used);
        goto done;
    }
    result = Py_BuildValue("Oi", (PyObject *)P, used);
done:
    Py_XDECREF(P);
    db_args_free(&a);
    return result;
}

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
    dS = (PyArrayObject *)PyArray_SimpleNew(a.nlead + 2, PyArray_DIMS(a.S), a.type);
    dbin = (PyArrayObject *)PyArray_SimpleNew(a.nlead, PyArray_DIMS(a.S), NPY_FLOAT64);
    if (dS == NULL || dbin == NULL) goto done;
    {
        size_t N = (size_t)a.N, M = (size_t)a.M;
        size_t smu = PyArray_NDIM(a.mu) == 1 ? 0 : N + 1;
        size_t snu = PyArray_NDIM(a.nu) == 1 ? 0 : M + 1;
        char *sp = PyArray_DATA(a.S), *mp = PyArray_DATA(a.mu), *np_ = PyArray_DATA(a.nu);
        char *gp = PyArray_DATA(a.G), *dp = PyArray_DATA(dS);
        double *bp = (double *)PyArray_DATA(dbin);
        size_t es = a.type == NPY_FLOAT32 ? 4 : 8;
        Py_BEGIN_ALLOW_THREADS
        for (npy_intp b = 0; b < a.batch && st == GM_OK; b++) {
            size_t bb = (size_t)b;
            if (a.type == NPY_FLOAT32)
                st = gm_dustbin_sinkhorn_vjp_f32(
                    (const float *)(sp + bb * N * M * es), (const float *)(mp + bb * smu * es),
                    (const float *)(np_ + bb * snu * es),
                    (const float *)(gp + bb * (N + 1) * (M + 1) * es), N, M, a.bin, a.reg,
                    a.reg_m, (int)a.n_iter, (int)a.method, wrt_log,
                    (float *)(dp + bb * N * M * es), bp + bb, &used);
            else
                st = gm_dustbin_sinkhorn_vjp_f64(
                    (const double *)(sp + bb * N * M * es), (const double *)(mp + bb * smu * es),
                    (const double *)(np_ + bb * snu * es),
                    (const double *)(gp + bb * (N + 1) * (M + 1) * es), N, M, a.bin, a.reg,
                    a.reg_m, (int)a.n_iter, (int)a.method, wrt_log,
                    (double *)(dp + bb * N * M * es), bp + bb, &used);
        }
        Py_END_ALLOW_THREADS
    }
    if (st != GM_OK) {
        db_raise(st, &a, used);
        goto done;
    }
    result = Py_BuildValue("OOi", (PyObject *)dS, (PyObject *)dbin, used);
done:
    Py_XDECREF(dS);
    Py_XDECREF(dbin);
    db_args_free(&a);
    return result;
}

#define GM_METHODS_DUSTBIN                                                          \
    {"dustbin_sinkhorn", (PyCFunction)py_dustbin_sinkhorn, METH_VARARGS,             \
     "dustbin_sinkhorn(S, mu, nu, bin_score, reg, reg_m, n_iter, method)\n--\n\n"   \
     "Dustbin OT plan; returns (P, method_used). See geomatch.dustbin."},           \
    {"dustbin_sinkhorn_vjp", (PyCFunction)py_dustbin_sinkhorn_vjp, METH_VARARGS,     \
     "dustbin_sinkhorn_vjp(S, mu, nu, grad_P, bin_score, reg, reg_m, n_iter, "      \
     "method, wrt_log)\n--\n\nReverse-mode VJP; returns (dS, dbin, method_used)."}, 
/* @@end dustbin */
/* ======================================================================== */

/* ======================================================================== */
/* softargmax                                                               */
/* @@section softargmax */
/* Shared argument handling of argmax_2d / window_soft_argmax: sim as a
 * float array of >= 1 dimension whose last axis has h * w entries.  Fills
 * *nmaps and the output shape (sim.shape[:-1] + (2,)); NULL on error. */
static PyArrayObject *gm_parse_maps(PyObject *simo, PyObject *ho, PyObject *wo, long *h,
                                    long *w, size_t *nmaps, int *nd, npy_intp *dims)
{
    PyObject *objs[1] = {simo};
    static const char *const names[] = {"sim"};
    int type = gm_common_float_type(objs, names, 1);
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

/* argmax_2d(sim, h, w) -> int64 (..., 2) integer (x, y) of the first max. */
static PyObject *py_argmax_2d(PyObject *self, PyObject *args)
{
    PyObject *simo, *ho, *wo, *result = NULL;
    PyArrayObject *sim = NULL, *out = NULL;
    static const char *const names[] = {"sim"};
    long h, w;
    size_t nmaps;
    int nd, status = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OOO:argmax_2d", &simo, &ho, &wo)) return NULL;
    sim = gm_parse_maps(simo, ho, wo, &h, &w, &nmaps, &nd, dims);
    if (sim == NULL) goto done;
    out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, NPY_INT64);
    if (out == NULL) goto done;
    {
        const void *sp = PyArray_DATA(sim);
        int64_t *op = (int64_t *)PyArray_DATA(out);
        int type = PyArray_TYPE(sim);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_argmax_2d_f32(sp, nmaps, (size_t)h, (size_t)w, op);
        else
            status = gm_argmax_2d_f64(sp, nmaps, (size_t)h, (size_t)w, op);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "argmax_2d", names, 1);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(sim);
    Py_XDECREF(out);
    return result;
}

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
    int nd, status = GM_OK;
    npy_intp dims[NPY_MAXDIMS];
    if (!PyArg_ParseTuple(args, "OOOOO:window_soft_argmax", &simo, &ho, &wo, &wino, &to))
        return NULL;
    if (gm_parse_int(wino, "window", 0, 1L << 30, &window) < 0) goto done;
    if (gm_parse_positive(to, "temperature", 0, &temperature) < 0) goto done;
    sim = gm_parse_maps(simo, ho, wo, &h, &w, &nmaps, &nd, dims);
    if (sim == NULL) goto done;
    out = (PyArrayObject *)PyArray_SimpleNew(nd, dims, PyArray_TYPE(sim));
    if (out == NULL) goto done;
    {
        const void *sp = PyArray_DATA(sim);
        void *op = PyArray_DATA(out);
        int type = PyArray_TYPE(sim);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_window_soft_argmax_f32(sp, nmaps, (size_t)h, (size_t)w, window,
                                               temperature, op);
        else
            status = gm_window_soft_argmax_f64(sp, nmaps, (size_t)h, (size_t)w, window,
                                               temperature, op);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "window_soft_argmax", names, 1);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(sim);
    Py_XDECREF(out);
    return result;
}

#define GM_METHODS_SOFTARGMAX                                                      \
    {"argmax_2d", (PyCFunction)py_argmax_2d, METH_VARARGS,                         \
     "argmax_2d(sim, h, w)\n--\n\nInteger (x, y) of the first maximum of each "    \
     "h*w map."},                                                                  \
    {"window_soft_argmax", (PyCFunction)py_window_soft_argmax, METH_VARARGS,       \
     "window_soft_argmax(sim, h, w, window, temperature)\n--\n\nWindowed "         \
     "soft-argmax (x, y) of each h*w map."},
/* @@end softargmax */
/* ======================================================================== */

/* ======================================================================== */
/* transfer                                                                 */
/* @@section transfer */

/* Sizes argument -> new C-contiguous int64 array of shape lead + (2,) with
 * every entry > 0.  NULL with TypeError/ValueError naming `name`. */
static PyArrayObject *gm_transfer_sizes(PyObject *obj, const char *name, PyArrayObject *lead,
                                        int nlead)
{
    PyArrayObject *arr = NULL, *tmp = (PyArrayObject *)PyArray_FROM_O(obj);
    npy_intp i, n;
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
        gm_check_same_batch(arr, name, nlead, lead, "src_feat", nlead) < 0) {
        gm_set_error(PyExc_ValueError, "%s must have shape (batch..., 2) matching the "
                     "leading dimensions of src_feat", name);
        Py_DECREF(arr);
        return NULL;
    }
    n = PyArray_SIZE(arr);
    for (i = 0; i < n; i++) {
        int64_t v = ((const int64_t *)PyArray_DATA(arr))[i];
        if (v <= 0 || v > (1 << 30)) {
            gm_set_error(PyExc_ValueError, "%s must hold image sizes (W, H) between 1 and "
                         "2**30, got %lld", name, (long long)v);
            Py_DECREF(arr);
            return NULL;
        }
    }
    return arr;
}

/* transfer_upsample_argmax(src_feat, trg_feat, src_kps, src_size, trg_size):
 * src_feat (..., hs, ws, D), trg_feat (..., ht, wt, D), src_kps (..., K, 2),
 * sizes (..., 2) int -> (..., K, 2) float (x, y) target pixels. */
static PyObject *py_transfer_upsample_argmax(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"src_feat", "trg_feat", "src_kps", "src_size", "trg_size", NULL};
    static const char *argn[] = {"src_feat", "trg_feat", "src_kps"};
    PyObject *o_sf, *o_tf, *o_kp, *o_ss, *o_ts, *result = NULL;
    PyArrayObject *sf = NULL, *tf = NULL, *kp = NULL, *ss = NULL, *ts = NULL, *out = NULL;
    npy_intp dims[NPY_MAXDIMS];
    int type, nd, nlead, status = GM_OK;
    size_t batch, hs, ws, ht, wt, dim, nkps;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO:transfer_upsample_argmax", kwlist,
                                     &o_sf, &o_tf, &o_kp, &o_ss, &o_ts))
        return NULL;
    {
        PyObject *objs[3] = {o_sf, o_tf, o_kp};
        type = gm_common_float_type(objs, argn, 3);
        if (type < 0) goto done;
    }
    sf = gm_as_array(o_sf, type, "src_feat", 3, NPY_MAXDIMS - 1, 0);
    if (sf == NULL) goto done;
    nd = PyArray_NDIM(sf);
    nlead = nd - 3;
    tf = gm_as_array(o_tf, type, "trg_feat", nd, nd, 0);
    if (tf == NULL) goto done;
    kp = gm_as_array(o_kp, type, "src_kps", nlead + 2, nlead + 2, 1);
    if (kp == NULL) goto done;
    if (gm_check_same_batch(sf, "src_feat", nlead, tf, "trg_feat", nlead) < 0 ||
        gm_check_same_batch(sf, "src_feat", nlead, kp, "src_kps", nlead) < 0)
        goto done;
    if (PyArray_DIM(tf, nd - 1) != PyArray_DIM(sf, nd - 1)) {
        gm_set_error(PyExc_ValueError, "src_feat and trg_feat must have the same feature "
                     "dimension, got %zd and %zd", (Py_ssize_t)PyArray_DIM(sf, nd - 1),
                     (Py_ssize_t)PyArray_DIM(tf, nd - 1));
        goto done;
    }
    if (PyArray_DIM(kp, nlead + 1) != 2) {
        gm_set_error(PyExc_ValueError, "src_kps must have shape (..., K, 2), got last "
                     "dimension %zd", (Py_ssize_t)PyArray_DIM(kp, nlead + 1));
        goto done;
    }
    ss = gm_transfer_sizes(o_ss, "src_size", sf, nlead);
    if (ss == NULL) goto done;
    ts = gm_transfer_sizes(o_ts, "trg_size", sf, nlead);
    if (ts == NULL) goto done;
    /* src_feat and trg_feat are checked for NaN/inf by the kernel (fused
     * with its first pass; reported through gm_raise_status). */
    if (gm_check_finite(kp, "src_kps") < 0) goto done;
    batch = (size_t)gm_batch_size(sf, nlead);
    hs = (size_t)PyArray_DIM(sf, nlead);
    ws = (size_t)PyArray_DIM(sf, nlead + 1);
    ht = (size_t)PyArray_DIM(tf, nlead);
    wt = (size_t)PyArray_DIM(tf, nlead + 1);
    dim = (size_t)PyArray_DIM(sf, nd - 1);
    nkps = (size_t)PyArray_DIM(kp, nlead);
    {
        const int64_t *szs = (const int64_t *)PyArray_DATA(ss);
        size_t b, k;
        for (b = 0; b < batch; b++) {
            for (k = 0; k < nkps; k++) {
                double x, y;
                if (type == NPY_FLOAT32) {
                    x = ((const float *)PyArray_DATA(kp))[2 * (b * nkps + k)];
                    y = ((const float *)PyArray_DATA(kp))[2 * (b * nkps + k) + 1];
                } else {
                    x = ((const double *)PyArray_DATA(kp))[2 * (b * nkps + k)];
                    y = ((const double *)PyArray_DATA(kp))[2 * (b * nkps + k) + 1];
                }
                if (!(x >= 0.0 && x < (double)szs[2 * b] && y >= 0.0 &&
                      y < (double)szs[2 * b + 1])) {
                    gm_set_error(PyExc_ValueError,
                                 "src_kps: keypoint %zu of pair %zu, (x, y) = (%g, %g), lies "
                                 "outside the source image of size (W, H) = (%lld, %lld); "
                                 "need 0 <= x < W and 0 <= y < H", k, b, x, y,
                                 (long long)szs[2 * b], (long long)szs[2 * b + 1]);
                    goto done;
                }
            }
        }
    }
    for (int i = 0; i < nlead + 1; i++) dims[i] = PyArray_DIM(kp, i);
    dims[nlead + 1] = 2;
    out = (PyArrayObject *)PyArray_ZEROS(nlead + 2, dims, type, 0);
    if (out == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (type == NPY_FLOAT32)
        status = gm_transfer_upsample_argmax_f32(
            (const float *)PyArray_DATA(sf), (const float *)PyArray_DATA(tf),
            (const float *)PyArray_DATA(kp), (const int64_t *)PyArray_DATA(ss),
            (const int64_t *)PyArray_DATA(ts), batch, hs, ws, ht, wt, dim, nkps,
            (float *)PyArray_DATA(out));
    else
        status = gm_transfer_upsample_argmax_f64(
            (const double *)PyArray_DATA(sf), (const double *)PyArray_DATA(tf),
            (const double *)PyArray_DATA(kp), (const int64_t *)PyArray_DATA(ss),
            (const int64_t *)PyArray_DATA(ts), batch, hs, ws, ht, wt, dim, nkps,
            (double *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (status == GM_ERR_NUMERIC) {
        gm_set_error(PyExc_FloatingPointError,
                     "transfer_upsample_argmax: dot products of the feature vectors "
                     "overflow %s; rescale src_feat/trg_feat",
                     type == NPY_FLOAT32 ? "float32" : "float64");
        goto done;
    }
    if (status != GM_OK) {
        gm_raise_status(status, "transfer_upsample_argmax", argn, 3);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(sf);
    Py_XDECREF(tf);
    Py_XDECREF(kp);
    Py_XDECREF(ss);
    Py_XDECREF(ts);
    Py_XDECREF(out);
    return result;
}

#define GM_METHODS_TRANSFER                                                        \
    {"transfer_upsample_argmax", (PyCFunction)(void (*)(void))py_transfer_upsample_argmax, \
     METH_VARARGS | METH_KEYWORDS,                                                 \
     "transfer_upsample_argmax(src_feat, trg_feat, src_kps, src_size, trg_size)\n--\n\n" \
     "Exact upsample-argmax keypoint transfer (see geomatch.transfer)."},
/* @@end transfer */
/* ======================================================================== */

/* ======================================================================== */
/* nn                                                                       */
/* @@section nn */
/* Output array for an nn kernel: a new C-contiguous array of `type` and
 * shape dims when out is None, else out itself (new reference) after checking
 * that it is a writable C-contiguous array of that dtype and shape. */
static PyArrayObject *gm_nn_out(PyObject *out, int type, int nd, npy_intp *dims,
                                const char *name)
{
    if (out == NULL || out == Py_None)
        return (PyArrayObject *)PyArray_SimpleNew(nd, dims, type);
    if (!PyArray_Check(out)) {
        gm_set_error(PyExc_TypeError, "%s must be a NumPy array", name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)out;
    if (PyArray_TYPE(a) != type) {
        gm_set_error(PyExc_TypeError, "%s must have dtype %s", name,
                     type == NPY_FLOAT32 ? "float32" : "float64");
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISWRITEABLE(a) || !PyArray_ISALIGNED(a)) {
        gm_set_error(PyExc_ValueError, "%s must be a writable C-contiguous array", name);
        return NULL;
    }
    int ok = PyArray_NDIM(a) == nd;
    for (int i = 0; ok && i < nd; i++) ok = PyArray_DIM(a, i) == dims[i];
    if (!ok) {
        gm_set_error(PyExc_ValueError, "%s has the wrong shape", name);
        return NULL;
    }
    Py_INCREF(a);
    return a;
}

/* Check that a 1-D array (may be NULL) has length n. */
static int gm_nn_check_vec(PyArrayObject *v, npy_intp n, const char *name)
{
    if (v != NULL && (PyArray_NDIM(v) != 1 || PyArray_DIM(v, 0) != n)) {
        gm_set_error(PyExc_ValueError, "%s must have shape (%ld,)", name, (long)n);
        return -1;
    }
    return 0;
}

/* accumulate=True needs out and act 0 (nn_linear, nn_linear_bf16). */
static int gm_nn_check_accumulate(int accumulate, PyObject *oout, long act)
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

static PyObject *py_nn_linear(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "weight", "bias", "out", "act", "accumulate", NULL};
    PyObject *ox, *ow, *ob = Py_None, *oout = Py_None, *oact = NULL;
    int accumulate = 0, status = GM_OK;
    long act = 0;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOOp", kwlist, &ox, &ow, &ob, &oout,
                                     &oact, &accumulate))
        return NULL;
    if (oact != NULL && gm_parse_int(oact, "act", 0, 1, &act) < 0) return NULL;
    PyObject *objs[3] = {ox, ow, ob};
    const char *names[3] = {"x", "weight", "bias"};
    int type = gm_common_float_type(objs, names, 3);
    if (type < 0) return NULL;
    if (!(x = gm_as_array(ox, type, "x", 2, 2, 0))) goto done;
    if (!(w = gm_as_array(ow, type, "weight", 2, 2, 0))) goto done;
    if (ob != Py_None && !(b = gm_as_array(ob, type, "bias", 1, 1, 0))) goto done;
    if (PyArray_DIM(w, 1) != PyArray_DIM(x, 1)) {
        gm_set_error(PyExc_ValueError, "weight must have shape (dout, %ld), got (%ld, %ld)",
                     (long)PyArray_DIM(x, 1), (long)PyArray_DIM(w, 0),
                     (long)PyArray_DIM(w, 1));
        goto done;
    }
    if (gm_nn_check_vec(b, PyArray_DIM(w, 0), "bias") < 0) goto done;
    if (gm_nn_check_accumulate(accumulate, oout, act) < 0) goto done;
    {
        npy_intp dims[2] = {PyArray_DIM(x, 0), PyArray_DIM(w, 0)};
        if (!(out = gm_nn_out(oout, type, 2, dims, "out"))) goto done;
        size_t n = (size_t)dims[0], din = (size_t)PyArray_DIM(x, 1), dout = (size_t)dims[1];
        void *px = PyArray_DATA(x), *pw = PyArray_DATA(w), *pb = b ? PyArray_DATA(b) : NULL;
        void *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_nn_linear_f32(px, n, din, pw, pb, dout, (int)act, accumulate, py);
        else
            status = gm_nn_linear_f64(px, n, din, pw, pb, dout, (int)act, accumulate, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        static const char *an[] = {"x", "weight", "bias"};
        gm_raise_status(status, "nn_linear", an, 3);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

static PyObject *py_nn_layernorm(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "weight", "bias", "eps", "out", NULL};
    PyObject *ox, *og = Py_None, *ob = Py_None, *oeps = NULL, *oout = Py_None;
    double eps = 1e-6;
    int status = GM_OK;
    PyArrayObject *x = NULL, *g = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOO", kwlist, &ox, &og, &ob, &oeps, &oout))
        return NULL;
    if (oeps != NULL && gm_parse_positive(oeps, "eps", 1, &eps) < 0) return NULL;
    PyObject *objs[3] = {ox, og, ob};
    const char *names[3] = {"x", "weight", "bias"};
    int type = gm_common_float_type(objs, names, 3);
    if (type < 0) return NULL;
    if (!(x = gm_as_array(ox, type, "x", 2, 2, 0))) goto done;
    if (og != Py_None && !(g = gm_as_array(og, type, "weight", 1, 1, 0))) goto done;
    if (ob != Py_None && !(b = gm_as_array(ob, type, "bias", 1, 1, 0))) goto done;
    if (gm_nn_check_vec(g, PyArray_DIM(x, 1), "weight") < 0) goto done;
    if (gm_nn_check_vec(b, PyArray_DIM(x, 1), "bias") < 0) goto done;
    {
        npy_intp dims[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)};
        if (!(out = gm_nn_out(oout, type, 2, dims, "out"))) goto done;
        size_t n = (size_t)dims[0], d = (size_t)dims[1];
        void *px = PyArray_DATA(x), *pg = g ? PyArray_DATA(g) : NULL;
        void *pb = b ? PyArray_DATA(b) : NULL, *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_nn_layernorm_f32(px, n, d, pg, pb, eps, py);
        else
            status = gm_nn_layernorm_f64(px, n, d, pg, pb, eps, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        static const char *an[] = {"x", "weight", "bias"};
        gm_raise_status(status, "nn_layernorm", an, 3);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(x);
    Py_XDECREF(g);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

static PyObject *py_nn_swiglu(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"h", "out", NULL};
    PyObject *oh, *oout = Py_None;
    int status = GM_OK;
    PyArrayObject *h = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &oh, &oout)) return NULL;
    const char *names[1] = {"h"};
    int type = gm_common_float_type(&oh, names, 1);
    if (type < 0) return NULL;
    if (!(h = gm_as_array(oh, type, "h", 2, 2, 0))) goto done;
    if (PyArray_DIM(h, 1) % 2 != 0) {
        gm_set_error(PyExc_ValueError, "h must have an even number of columns");
        goto done;
    }
    {
        npy_intp dims[2] = {PyArray_DIM(h, 0), PyArray_DIM(h, 1) / 2};
        if (!(out = gm_nn_out(oout, type, 2, dims, "out"))) goto done;
        size_t n = (size_t)dims[0], hid = (size_t)dims[1];
        void *ph = PyArray_DATA(h), *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_nn_swiglu_f32(ph, n, hid, py);
        else
            status = gm_nn_swiglu_f64(ph, n, hid, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "nn_swiglu", names, 1);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(h);
    Py_XDECREF(out);
    return result;
}

static PyObject *py_nn_attention(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"qkv", "heads", "out", NULL};
    PyObject *oq, *oheads, *oout = Py_None;
    long heads;
    int status = GM_OK;
    PyArrayObject *q = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O", kwlist, &oq, &oheads, &oout))
        return NULL;
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) return NULL;
    const char *names[1] = {"qkv"};
    int type = gm_common_float_type(&oq, names, 1);
    if (type < 0) return NULL;
    if (!(q = gm_as_array(oq, type, "qkv", 2, 3, 0))) goto done;
    {
        int nd = PyArray_NDIM(q);
        npy_intp batch = nd == 3 ? PyArray_DIM(q, 0) : 1;
        npy_intp n = PyArray_DIM(q, nd - 2), c = PyArray_DIM(q, nd - 1);
        if (c % (3 * heads) != 0) {
            gm_set_error(PyExc_ValueError,
                         "qkv's last dimension (%ld) must be a multiple of 3 * heads (%ld)",
                         (long)c, 3 * heads);
            goto done;
        }
        npy_intp dims[3];
        if (nd == 3) { dims[0] = batch; dims[1] = n; dims[2] = c / 3; }
        else { dims[0] = n; dims[1] = c / 3; }
        if (!(out = gm_nn_out(oout, type, nd, dims, "out"))) goto done;
        size_t hd = (size_t)(c / 3 / heads);
        void *pq = PyArray_DATA(q), *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_nn_attention_f32(pq, (size_t)batch, (size_t)n, (size_t)heads, hd, py);
        else
            status = gm_nn_attention_f64(pq, (size_t)batch, (size_t)n, (size_t)heads, hd, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "nn_attention", names, 1);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(q);
    Py_XDECREF(out);
    return result;
}

/* uint16 values before the packed panels: din, dout (32 bits each), padding
 * to 64 bytes so the panels stay aligned like the array itself */
#define GM_BF16_HEADER 32

static PyObject *py_bf16_supported(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(gm_bf16_supported());
}

static PyObject *py_bf16_pack(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"weight", NULL};
    PyObject *ow;
    PyArrayObject *w = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &ow)) return NULL;
    if (!(w = gm_as_array(ow, NPY_FLOAT32, "weight", 2, 2, 0))) return NULL;
    size_t dout = (size_t)PyArray_DIM(w, 0), din = (size_t)PyArray_DIM(w, 1);
    if (dout == 0 || din == 0) {
        gm_set_error(PyExc_ValueError, "weight must be non-empty, got shape (%ld, %ld)",
                     (long)dout, (long)din);
        Py_DECREF(w);
        return NULL;
    }
    if (din > 0xffffffffu || dout > 0xffffffffu) {
        gm_set_error(PyExc_ValueError, "weight is too large to pack");
        Py_DECREF(w);
        return NULL;
    }
    /* header: din and dout as 32-bit values in two uint16 each, then the panels */
    npy_intp dims[1] = {(npy_intp)gm_bf16_packed_size(din, dout) + GM_BF16_HEADER};
    out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT16);
    if (out != NULL) {
        uint16_t *o = PyArray_DATA(out);
        o[0] = (uint16_t)(din & 0xffff);
        o[1] = (uint16_t)(din >> 16);
        o[2] = (uint16_t)(dout & 0xffff);
        o[3] = (uint16_t)(dout >> 16);
        for (int k = 4; k < GM_BF16_HEADER; k++) o[k] = 0;
        gm_bf16_pack_weight(PyArray_DATA(w), din, dout, o + GM_BF16_HEADER);
    }
    Py_DECREF(w);
    return (PyObject *)out;
}

static PyObject *py_nn_linear_bf16(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "packed", "bias", "out", "act", "accumulate", NULL};
    PyObject *ox, *ow, *ob = Py_None, *oout = Py_None, *oact = NULL;
    int accumulate = 0, status = GM_OK;
    long act = 0;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOOp", kwlist, &ox, &ow, &ob,
                                     &oout, &oact, &accumulate))
        return NULL;
    if (oact != NULL && gm_parse_int(oact, "act", 0, 1, &act) < 0) return NULL;
    if (!gm_bf16_supported()) {
        gm_set_error(PyExc_RuntimeError, "nn_linear_bf16: this CPU has no AVX512-BF16");
        return NULL;
    }
    if (!(x = gm_as_array(ox, NPY_FLOAT32, "x", 2, 2, 0))) goto done;
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
    if (n == 0 || din == 0) {
        gm_set_error(PyExc_ValueError, "x must be non-empty");
        goto done;
    }
    if (wdin == 0 || dout == 0 ||
        (size_t)PyArray_DIM(w, 0) != gm_bf16_packed_size(wdin, dout) + GM_BF16_HEADER) {
        gm_set_error(PyExc_TypeError, "packed must be a 1-D contiguous uint16 array "
                     "from bf16_pack");
        goto done;
    }
    if (wdin != din) {
        gm_set_error(PyExc_ValueError, "packed holds a (%ld, %ld) weight; x has %ld columns",
                     (long)dout, (long)wdin, (long)din);
        goto done;
    }
    if (ob != Py_None && !(b = gm_as_array(ob, NPY_FLOAT32, "bias", 1, 1, 0))) goto done;
    if (gm_nn_check_vec(b, (npy_intp)dout, "bias") < 0) goto done;
    if (gm_nn_check_accumulate(accumulate, oout, act) < 0) goto done;
    {
        npy_intp dims[2] = {(npy_intp)n, (npy_intp)dout};
        if (!(out = gm_nn_out(oout, NPY_FLOAT32, 2, dims, "out"))) goto done;
        const float *px = PyArray_DATA(x), *pb = b ? PyArray_DATA(b) : NULL;
        const uint16_t *pw = hdr + GM_BF16_HEADER;
        float *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        status = gm_nn_linear_bf16(px, n, din, pw, pb, dout, (int)act, accumulate, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        static const char *an[] = {"x", "packed", "bias"};
        gm_raise_status(status, "nn_linear_bf16", an, 3);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

static PyObject *py_nn_attention_bf16(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"qkv", "heads", "out", NULL};
    PyObject *oq, *oout = Py_None;
    Py_ssize_t heads;
    int status = GM_OK;
    PyArrayObject *q = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|O", kwlist, &oq, &heads, &oout))
        return NULL;
    if (!gm_bf16_supported()) {
        gm_set_error(PyExc_RuntimeError, "nn_attention_bf16: this CPU has no AVX512-BF16");
        return NULL;
    }
    if (!(q = gm_as_array(oq, NPY_FLOAT32, "qkv", 3, 3, 0))) return NULL;
    npy_intp b = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1), c = PyArray_DIM(q, 2);
    if (heads < 1 || c % (3 * heads) != 0 || c / (3 * heads) != 64 || b == 0 || n == 0) {
        gm_set_error(PyExc_ValueError, "qkv must have shape (batch, n, 3 * heads * 64) with "
                     "batch, n >= 1 (head dimension 64), got (%ld, %ld, %ld) for heads=%ld",
                     (long)b, (long)n, (long)c, (long)heads);
        goto done;
    }
    {
        npy_intp dims[3] = {b, n, c / 3};
        if (!(out = gm_nn_out(oout, NPY_FLOAT32, 3, dims, "out"))) goto done;
        const float *pq = PyArray_DATA(q);
        float *py = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        status = gm_nn_attention_bf16(pq, (size_t)b, (size_t)n, (size_t)heads, 64, py);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        static const char *an[] = {"qkv"};
        gm_raise_status(status, "nn_attention_bf16", an, 1);
        goto done;
    }
    Py_INCREF(out);
    result = (PyObject *)out;
done:
    Py_XDECREF(q);
    Py_XDECREF(out);
    return result;
}

#define GM_METHODS_NN                                                               \
    {"bf16_supported", (PyCFunction)py_bf16_supported, METH_NOARGS,                 \
     "bf16_supported()\n--\n\nTrue when this CPU runs the AVX512-BF16 kernels."},   \
    {"bf16_pack", (PyCFunction)(void (*)(void))py_bf16_pack, METH_VARARGS | METH_KEYWORDS, \
     "bf16_pack(weight)\n--\n\nA (dout, din) float32 weight rounded to bfloat16 "     \
     "(nearest even) and packed for nn_linear_bf16 (1-D uint16)."},                   \
    {"nn_attention_bf16", (PyCFunction)(void (*)(void))py_nn_attention_bf16,         \
     METH_VARARGS | METH_KEYWORDS,                                                   \
     "nn_attention_bf16(qkv, heads, out=None)\n--\n\nnn_attention with bfloat16 q, k, v and " \
     "probabilities, float32 softmax and sums; flash-style; head dimension 64."},      \
    {"nn_linear_bf16", (PyCFunction)(void (*)(void))py_nn_linear_bf16,               \
     METH_VARARGS | METH_KEYWORDS,                                                   \
     "nn_linear_bf16(x, packed, bias=None, out=None, act=0, accumulate=False)\n--\n\n" \
     "nn_linear with x and the packed weight in bfloat16, float32 accumulation."},    \
    {"nn_linear", (PyCFunction)(void (*)(void))py_nn_linear, METH_VARARGS | METH_KEYWORDS, \
     "nn_linear(x, weight, bias=None, out=None, act=0, accumulate=False)\n--\n\n"  \
     "act(x @ weight.T + bias) (act 1 = exact GELU), or out += x @ weight.T + bias."}, \
    {"nn_layernorm", (PyCFunction)(void (*)(void))py_nn_layernorm,                 \
     METH_VARARGS | METH_KEYWORDS,                                                  \
     "nn_layernorm(x, weight=None, bias=None, eps=1e-6, out=None)\n--\n\n"         \
     "Row-wise LayerNorm of a 2-D array."},                                        \
    {"nn_swiglu", (PyCFunction)(void (*)(void))py_nn_swiglu, METH_VARARGS | METH_KEYWORDS, \
     "nn_swiglu(h, out=None)\n--\n\nsilu(h[:, :k]) * h[:, k:] with k = h.shape[1] // 2."}, \
    {"nn_attention", (PyCFunction)(void (*)(void))py_nn_attention,                 \
     METH_VARARGS | METH_KEYWORDS,                                                  \
     "nn_attention(qkv, heads, out=None)\n--\n\n"                                  \
     "softmax(q k^T / sqrt(hd)) v per head; qkv is ([B,] n, 3*D) laid out [q|k|v]."},
/* @@end nn */
/* ======================================================================== */
/* @@section head                                                           */
/* ======================================================================== */

/* A 2-D matrix operand of gemm: an ndarray of dtype `type`, aligned, whose
 * rows are contiguous (unit stride along axis 1) with row stride *ld >= its
 * number of columns (a single row counts as row stride = columns).  With
 * `writable` it must be writable.  Borrowed: no reference is taken.
 * -1 with TypeError/ValueError naming `name` otherwise. */
static int gm_matrix_operand(PyObject *obj, int type, const char *name, int writable,
                             PyArrayObject **arr, size_t *ld)
{
    if (!PyArray_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a NumPy array", name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != type) {
        gm_set_error(PyExc_TypeError, "%s must have dtype %s", name,
                     type == NPY_FLOAT32 ? "float32" : "float64");
        return -1;
    }
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

static PyObject *py_gemm(PyObject *self, PyObject *args)
{
    PyObject *oa, *ob, *oc;
    int trans_a, trans_b, status = GM_OK;
    double alpha, beta;
    PyArrayObject *a, *b, *c;
    size_t lda, ldb, ldc;
    if (!PyArg_ParseTuple(args, "OOOppdd", &oa, &ob, &oc, &trans_a, &trans_b, &alpha, &beta))
        return NULL;
    if (!PyArray_Check(oc)) {
        gm_set_error(PyExc_TypeError, "c must be a NumPy array");
        return NULL;
    }
    int type = PyArray_TYPE((PyArrayObject *)oc);
    if (type != NPY_FLOAT32 && type != NPY_FLOAT64) {
        gm_set_error(PyExc_TypeError, "c must have dtype float32 or float64");
        return NULL;
    }
    if (gm_matrix_operand(oa, type, "a", 0, &a, &lda) < 0
        || gm_matrix_operand(ob, type, "b", 0, &b, &ldb) < 0
        || gm_matrix_operand(oc, type, "c", 1, &c, &ldc) < 0)
        return NULL;
    size_t m = (size_t)PyArray_DIM(a, trans_a ? 1 : 0);
    size_t k = (size_t)PyArray_DIM(a, trans_a ? 0 : 1);
    size_t kb = (size_t)PyArray_DIM(b, trans_b ? 1 : 0);
    size_t n = (size_t)PyArray_DIM(b, trans_b ? 0 : 1);
    if (kb != k || (size_t)PyArray_DIM(c, 0) != m || (size_t)PyArray_DIM(c, 1) != n) {
        gm_set_error(PyExc_ValueError, "gemm: shapes do not match: op(a) is %zu x %zu, "
                     "op(b) %zu x %zu, c %ld x %ld", m, k, kb, n, (long)PyArray_DIM(c, 0),
                     (long)PyArray_DIM(c, 1));
        return NULL;
    }
    void *pa = PyArray_DATA(a), *pb = PyArray_DATA(b), *pc = PyArray_DATA(c);
    Py_BEGIN_ALLOW_THREADS
    if (type == NPY_FLOAT32)
        status = gm_gemm_f32(trans_a, trans_b, m, n, k, (float)alpha, pa, lda, pb, ldb,
                             (float)beta, pc, ldc);
    else
        status = gm_gemm_f64(trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb, beta, pc,
                             ldc);
    Py_END_ALLOW_THREADS
    if (status != GM_OK) {
        static const char *an[] = {"a", "b", "c"};
        gm_raise_status(status, "gemm", an, 3);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Check qkv (batch, n, 3 * heads * hd) and return hd (> 0), or -1. */
static long gm_head_qkv_dims(PyArrayObject *q, long heads)
{
    npy_intp c = PyArray_DIM(q, 2);
    if (c % (3 * heads) != 0) {
        gm_set_error(PyExc_ValueError,
                     "qkv's last dimension (%ld) must be a multiple of 3 * heads (%ld)",
                     (long)c, 3 * heads);
        return -1;
    }
    return (long)(c / (3 * heads));
}

/* An existing C-contiguous array of `type` with exactly the shape dims. */
static int gm_head_check_exact(PyObject *obj, int type, int nd, const npy_intp *dims,
                               int writable, const char *name)
{
    if (!PyArray_Check(obj)) {
        gm_set_error(PyExc_TypeError, "%s must be a NumPy array", name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    int ok = PyArray_TYPE(a) == type && PyArray_NDIM(a) == nd && PyArray_IS_C_CONTIGUOUS(a)
             && PyArray_ISALIGNED(a) && (!writable || PyArray_ISWRITEABLE(a));
    for (int i = 0; ok && i < nd; i++) ok = PyArray_DIM(a, i) == dims[i];
    if (!ok) {
        gm_set_error(PyExc_ValueError, "%s must be a%s C-contiguous %s array of shape "
                     "(batch, heads, n, n) / (batch, heads, n) / (batch, n, D) as "
                     "head_attention_fwd returns", name, writable ? " writable" : "",
                     type == NPY_FLOAT32 ? "float32" : "float64");
        return -1;
    }
    return 0;
}

static PyObject *py_head_attention_fwd(PyObject *self, PyObject *args)
{
    PyObject *oq, *oheads, *obuf = Py_None;
    long heads, hd;
    int status = GM_OK;
    PyArrayObject *q = NULL, *e = NULL, *rz = NULL, *out = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OO|O", &oq, &oheads, &obuf)) return NULL;
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) return NULL;
    const char *names[1] = {"qkv"};
    int type = gm_common_float_type(&oq, names, 1);
    if (type < 0) return NULL;
    if (!(q = gm_as_array(oq, type, "qkv", 3, 3, 0))) goto done;
    if ((hd = gm_head_qkv_dims(q, heads)) < 0) goto done;
    {
        npy_intp batch = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1);
        npy_intp de[4] = {batch, heads, n, n}, dz[3] = {batch, heads, n};
        npy_intp dout[3] = {batch, n, heads * hd};
        if (obuf != Py_None) {
            /* reuse the caller's buffer for e (saves faulting in fresh pages) */
            if (gm_head_check_exact(obuf, type, 4, de, 1, "e") < 0) goto done;
            e = (PyArrayObject *)obuf;
            Py_INCREF(e);
        } else if (!(e = (PyArrayObject *)PyArray_SimpleNew(4, de, type))) {
            goto done;
        }
        if (!(rz = (PyArrayObject *)PyArray_SimpleNew(3, dz, type))) goto done;
        if (!(out = (PyArrayObject *)PyArray_SimpleNew(3, dout, type))) goto done;
        void *pq = PyArray_DATA(q), *pe = PyArray_DATA(e), *pz = PyArray_DATA(rz);
        void *po = PyArray_DATA(out);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_head_attention_fwd_f32(pq, (size_t)batch, (size_t)n, (size_t)heads,
                                               (size_t)hd, pe, pz, po);
        else
            status = gm_head_attention_fwd_f64(pq, (size_t)batch, (size_t)n, (size_t)heads,
                                               (size_t)hd, pe, pz, po);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "head_attention_fwd", names, 1);
        goto done;
    }
    result = Py_BuildValue("(OOO)", e, rz, out);
done:
    Py_XDECREF(q);
    Py_XDECREF(e);
    Py_XDECREF(rz);
    Py_XDECREF(out);
    return result;
}

static PyObject *py_head_attention_bwd(PyObject *self, PyObject *args)
{
    PyObject *oq, *oe, *oz, *oo, *og, *oheads;
    long heads, hd;
    int status = GM_OK;
    PyArrayObject *q = NULL, *g = NULL, *dq = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOO", &oq, &oe, &oz, &oo, &og, &oheads)) return NULL;
    if (gm_parse_int(oheads, "heads", 1, 1L << 20, &heads) < 0) return NULL;
    const char *names[2] = {"qkv", "dout"};
    PyObject *objs[2] = {oq, og};
    int type = gm_common_float_type(objs, names, 2);
    if (type < 0) return NULL;
    if (!(q = gm_as_array(oq, type, "qkv", 3, 3, 0))) goto done;
    if ((hd = gm_head_qkv_dims(q, heads)) < 0) goto done;
    {
        npy_intp batch = PyArray_DIM(q, 0), n = PyArray_DIM(q, 1);
        npy_intp de[4] = {batch, heads, n, n}, dz[3] = {batch, heads, n};
        npy_intp dout[3] = {batch, n, heads * hd};
        if (gm_head_check_exact(oe, type, 4, de, 1, "e") < 0
            || gm_head_check_exact(oz, type, 3, dz, 0, "rz") < 0
            || gm_head_check_exact(oo, type, 3, dout, 0, "out") < 0)
            goto done;
        if (!(g = gm_as_array(og, type, "dout", 3, 3, 0))) goto done;
        if (PyArray_DIM(g, 0) != batch || PyArray_DIM(g, 1) != n
            || PyArray_DIM(g, 2) != heads * hd) {
            gm_set_error(PyExc_ValueError, "dout must have shape (%ld, %ld, %ld)", (long)batch,
                         (long)n, (long)(heads * hd));
            goto done;
        }
        if (!(dq = (PyArrayObject *)PyArray_SimpleNew(3, PyArray_DIMS(q), type))) goto done;
        void *pq = PyArray_DATA(q), *pe = PyArray_DATA((PyArrayObject *)oe);
        void *pz = PyArray_DATA((PyArrayObject *)oz), *po = PyArray_DATA((PyArrayObject *)oo);
        void *pg = PyArray_DATA(g), *pd = PyArray_DATA(dq);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_head_attention_bwd_f32(pq, pe, pz, po, pg, (size_t)batch, (size_t)n,
                                               (size_t)heads, (size_t)hd, pd);
        else
            status = gm_head_attention_bwd_f64(pq, pe, pz, po, pg, (size_t)batch, (size_t)n,
                                               (size_t)heads, (size_t)hd, pd);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "head_attention_bwd", names, 2);
        goto done;
    }
    Py_INCREF(dq);
    result = (PyObject *)dq;
done:
    Py_XDECREF(q);
    Py_XDECREF(g);
    Py_XDECREF(dq);
    return result;
}

/* Convert the 2-D float arrays objs[0..k) (all of the common float type) into
 * arrs; each after the first must have the shape of arrs[0] (or, for
 * vec[i] != 0, be 1-D of length arrs[0].shape[1]).  -1 on error (arrs holds
 * what was converted, for the caller to release). */
static int gm_head_same_shapes(PyObject *const *objs, const char *const *names,
                               const int *vec, int k, int type, PyArrayObject **arrs)
{
    for (int i = 0; i < k; i++) {
        int nd = vec[i] ? 1 : 2;
        if (!(arrs[i] = gm_as_array(objs[i], type, names[i], nd, nd, 0))) return -1;
        int ok = vec[i] ? PyArray_DIM(arrs[i], 0) == PyArray_DIM(arrs[0], 1)
                        : PyArray_DIM(arrs[i], 0) == PyArray_DIM(arrs[0], 0)
                              && PyArray_DIM(arrs[i], 1) == PyArray_DIM(arrs[0], 1);
        if (i > 0 && !ok) {
            gm_set_error(PyExc_ValueError, "%s does not match the shape of %s", names[i],
                         names[0]);
            return -1;
        }
    }
    return 0;
}

static PyObject *py_layernorm_fwd(PyObject *self, PyObject *args)
{
    PyObject *objs[3];
    double eps;
    int status = GM_OK;
    PyArrayObject *arrs[3] = {NULL, NULL, NULL}, *y = NULL, *xh = NULL, *rs = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOd", &objs[0], &objs[1], &objs[2], &eps)) return NULL;
    static const char *names[3] = {"x", "gamma", "beta"};
    static const int vec[3] = {0, 1, 1};
    int type = gm_common_float_type(objs, names, 3);
    if (type < 0) return NULL;
    if (gm_head_same_shapes(objs, names, vec, 3, type, arrs) < 0) goto done;
    {
        npy_intp *dims = PyArray_DIMS(arrs[0]);
        if (!(y = (PyArrayObject *)PyArray_SimpleNew(2, dims, type))
            || !(xh = (PyArrayObject *)PyArray_SimpleNew(2, dims, type))
            || !(rs = (PyArrayObject *)PyArray_SimpleNew(1, dims, type)))
            goto done;
        size_t n = (size_t)dims[0], d = (size_t)dims[1];
        void *px = PyArray_DATA(arrs[0]), *pg = PyArray_DATA(arrs[1]);
        void *pb = PyArray_DATA(arrs[2]), *py = PyArray_DATA(y), *ph = PyArray_DATA(xh);
        void *pr = PyArray_DATA(rs);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_layernorm_fwd_f32(px, n, d, pg, pb, eps, py, ph, pr);
        else
            status = gm_layernorm_fwd_f64(px, n, d, pg, pb, eps, py, ph, pr);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "layernorm_fwd", names, 3);
        goto done;
    }
    result = Py_BuildValue("(OOO)", y, xh, rs);
done:
    for (int i = 0; i < 3; i++) Py_XDECREF(arrs[i]);
    Py_XDECREF(y);
    Py_XDECREF(xh);
    Py_XDECREF(rs);
    return result;
}

static PyObject *py_layernorm_bwd(PyObject *self, PyObject *args)
{
    PyObject *objs[4], *odx = Py_None;
    int status = GM_OK, accumulate = 0;
    PyArrayObject *arrs[4] = {NULL, NULL, NULL, NULL}, *dx = NULL, *dg = NULL, *db = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOO|O", &objs[0], &objs[1], &objs[2], &objs[3], &odx))
        return NULL;
    static const char *names[4] = {"dy", "xhat", "rstd", "gamma"};
    int type = gm_common_float_type(objs, names, 4);
    if (type < 0) return NULL;
    /* rstd has one entry per row: check it apart */
    PyObject *objs3[3] = {objs[0], objs[1], objs[3]};
    const char *names3[3] = {"dy", "xhat", "gamma"};
    const int vec3[3] = {0, 0, 1};
    PyArrayObject *a3[3] = {NULL, NULL, NULL};
    if (gm_head_same_shapes(objs3, names3, vec3, 3, type, a3) < 0) {
        for (int i = 0; i < 3; i++) Py_XDECREF(a3[i]);
        return NULL;
    }
    arrs[0] = a3[0];
    arrs[1] = a3[1];
    arrs[3] = a3[2];
    npy_intp *dims = PyArray_DIMS(arrs[0]);
    if (!(arrs[2] = gm_as_array(objs[2], type, "rstd", 1, 1, 0))) goto done;
    if (PyArray_DIM(arrs[2], 0) != dims[0]) {
        gm_set_error(PyExc_ValueError, "rstd must have one entry per row of dy");
        goto done;
    }
    if (odx != Py_None) {
        if (!(dx = gm_nn_out(odx, type, 2, dims, "dx"))) goto done;
        if (PyArray_DATA(dx) == PyArray_DATA(arrs[0])) {
            gm_set_error(PyExc_ValueError, "dx must not be dy");
            goto done;
        }
        accumulate = 1;
    } else if (!(dx = (PyArrayObject *)PyArray_SimpleNew(2, dims, type))) {
        goto done;
    }
    if (!(dg = (PyArrayObject *)PyArray_SimpleNew(1, dims + 1, type))
        || !(db = (PyArrayObject *)PyArray_SimpleNew(1, dims + 1, type)))
        goto done;
    {
        size_t n = (size_t)dims[0], d = (size_t)dims[1];
        void *p0 = PyArray_DATA(arrs[0]), *p1 = PyArray_DATA(arrs[1]);
        void *p2 = PyArray_DATA(arrs[2]), *p3 = PyArray_DATA(arrs[3]);
        void *pdx = PyArray_DATA(dx), *pdg = PyArray_DATA(dg), *pdb = PyArray_DATA(db);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_layernorm_bwd_f32(p0, p1, p2, p3, n, d, accumulate, pdx, pdg, pdb);
        else
            status = gm_layernorm_bwd_f64(p0, p1, p2, p3, n, d, accumulate, pdx, pdg, pdb);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        gm_raise_status(status, "layernorm_bwd", names, 4);
        goto done;
    }
    result = Py_BuildValue("(OOO)", dx, dg, db);
done:
    for (int i = 0; i < 4; i++) Py_XDECREF(arrs[i]);
    Py_XDECREF(dx);
    Py_XDECREF(dg);
    Py_XDECREF(db);
    return result;
}

static PyObject *py_gelu_tanh_fwd(PyObject *self, PyObject *arg)
{
    const char *names[1] = {"u"};
    int type = gm_common_float_type(&arg, names, 1);
    PyArrayObject *u = NULL, *g = NULL, *t = NULL;
    PyObject *result = NULL;
    if (type < 0) return NULL;
    if (!(u = gm_as_array(arg, type, "u", 1, 32, 1))) goto done;
    if (!(g = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(u), PyArray_DIMS(u), type))
        || !(t = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(u), PyArray_DIMS(u), type)))
        goto done;
    {
        size_t count = (size_t)PyArray_SIZE(u);
        void *pu = PyArray_DATA(u), *pg = PyArray_DATA(g), *pt = PyArray_DATA(t);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            gm_gelu_tanh_fwd_f32(pu, count, pg, pt);
        else
            gm_gelu_tanh_fwd_f64(pu, count, pg, pt);
        Py_END_ALLOW_THREADS
    }
    result = Py_BuildValue("(OO)", g, t);
done:
    Py_XDECREF(u);
    Py_XDECREF(g);
    Py_XDECREF(t);
    return result;
}

static PyObject *py_gelu_tanh_bwd(PyObject *self, PyObject *args)
{
    PyObject *objs[3];
    PyArrayObject *a[3] = {NULL, NULL, NULL}, *du = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &objs[0], &objs[1], &objs[2])) return NULL;
    static const char *names[3] = {"dg", "u", "t"};
    int type = gm_common_float_type(objs, names, 3);
    if (type < 0) return NULL;
    for (int i = 0; i < 3; i++) {
        if (!(a[i] = gm_as_array(objs[i], type, names[i], 1, 32, 1))) goto done;
        if (i > 0 && !PyArray_SAMESHAPE(a[i], a[0])) {
            gm_set_error(PyExc_ValueError, "%s does not match the shape of dg", names[i]);
            goto done;
        }
    }
    if (!(du = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(a[0]), PyArray_DIMS(a[0]),
                                                  type)))
        goto done;
    {
        size_t count = (size_t)PyArray_SIZE(a[0]);
        void *p0 = PyArray_DATA(a[0]), *p1 = PyArray_DATA(a[1]), *p2 = PyArray_DATA(a[2]);
        void *pd = PyArray_DATA(du);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            gm_gelu_tanh_bwd_f32(p0, p1, p2, count, pd);
        else
            gm_gelu_tanh_bwd_f64(p0, p1, p2, count, pd);
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(du);
    result = (PyObject *)du;
done:
    for (int i = 0; i < 3; i++) Py_XDECREF(a[i]);
    Py_XDECREF(du);
    return result;
}

#define GM_METHODS_HEAD                                                              \
    {"gemm", (PyCFunction)py_gemm, METH_VARARGS,                                     \
     "gemm(a, b, c, trans_a, trans_b, alpha, beta)\n--\n\n"                          \
     "c = alpha op(a) op(b) + beta c in place (op(x) = x.T when trans_x); a, b, c\n" \
     "are 2-D arrays of c's dtype with contiguous rows."},                           \
    {"head_attention_fwd", (PyCFunction)py_head_attention_fwd, METH_VARARGS,         \
     "head_attention_fwd(qkv, heads, e=None)\n--\n\n"                                \
     "(e, rz, out): exponentials of the shifted scores (written into e when\n"       \
     "given), 1 / their row sums and the attention output for qkv (batch, n,\n"      \
     "3*D) laid out [q|k|v]."},                                                      \
    {"head_attention_bwd", (PyCFunction)py_head_attention_bwd, METH_VARARGS,         \
     "head_attention_bwd(qkv, e, rz, out, dout, heads)\n--\n\n"                      \
     "d loss / d qkv given dout = d loss / d out; e is overwritten."},              \
    {"layernorm_fwd", (PyCFunction)py_layernorm_fwd, METH_VARARGS,                   \
     "layernorm_fwd(x, gamma, beta, eps)\n--\n\n(y, xhat, rstd) of row LayerNorm."}, \
    {"layernorm_bwd", (PyCFunction)py_layernorm_bwd, METH_VARARGS,                   \
     "layernorm_bwd(dy, xhat, rstd, gamma, dx=None)\n--\n\n"                         \
     "(dx, dgamma, dbeta); with dx given the input gradient is added to it."},       \
    {"gelu_tanh_fwd", (PyCFunction)py_gelu_tanh_fwd, METH_O,                         \
     "gelu_tanh_fwd(u)\n--\n\n(g, t): tanh-form GELU and the tanh kept for bwd."},   \
    {"gelu_tanh_bwd", (PyCFunction)py_gelu_tanh_bwd, METH_VARARGS,                   \
     "gelu_tanh_bwd(dg, u, t)\n--\n\nd loss / d u of the tanh-form GELU."},
/* @@end head */
/* ======================================================================== */
/* @@section loss                                                           */
/* ======================================================================== */

/* New reference to a C-contiguous uint8 copy of a 1-D boolean mask of
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
        gm_set_error(PyExc_ValueError, "%s has %ld entries, the plan needs %ld", name,
                     (long)PyArray_DIM(raw, 0), (long)n);
        Py_DECREF(raw);
        return NULL;
    }
    return raw;  /* NPY_BOOL is one byte per entry, 0 or 1 */
}

static PyObject *py_loss_fgbg(PyObject *self, PyObject *args)
{
    PyObject *op, *os, *ot;
    double lo, hi, weight, sum = 0.0;
    int need_grad, status = GM_OK;
    PyArrayObject *p = NULL, *sm = NULL, *tm = NULL, *grad = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOdddp", &op, &os, &ot, &lo, &hi, &weight, &need_grad))
        return NULL;
    const char *names[1] = {"P"};
    int type = gm_common_float_type(&op, names, 1);
    if (type < 0) return NULL;
    if (!(p = gm_as_array(op, type, "P", 2, 2, 0))) goto done;
    {
        npy_intp n = PyArray_DIM(p, 0) - 1, m = PyArray_DIM(p, 1) - 1;
        if (n < 1 || m < 1) {
            gm_set_error(PyExc_ValueError, "P must be (N+1) x (M+1) with N, M >= 1");
            goto done;
        }
        if (!(sm = gm_as_mask(os, n, "src_fg")) || !(tm = gm_as_mask(ot, m, "trg_fg")))
            goto done;
        if (need_grad && !(grad = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(p), type)))
            goto done;
        void *pp = PyArray_DATA(p), *pg = grad ? PyArray_DATA(grad) : NULL;
        const uint8_t *ps = PyArray_DATA(sm), *pt = PyArray_DATA(tm);
        Py_BEGIN_ALLOW_THREADS
        if (type == NPY_FLOAT32)
            status = gm_loss_fgbg_f32(pp, (size_t)n, (size_t)m, ps, pt, lo, hi, weight, &sum,
                                      pg);
        else
            status = gm_loss_fgbg_f64(pp, (size_t)n, (size_t)m, ps, pt, lo, hi, weight, &sum,
                                      pg);
        Py_END_ALLOW_THREADS
    }
    if (status != GM_OK) {
        if (status == GM_ERR_INVALID)
            gm_set_error(PyExc_ValueError, "loss_fgbg: need 0 <= lo < hi < 1, got lo=%g, "
                         "hi=%g", lo, hi);
        gm_raise_status(status, "loss_fgbg", names, 1);
        goto done;
    }
    result = Py_BuildValue("(dO)", sum, grad ? (PyObject *)grad : Py_None);
done:
    Py_XDECREF(p);
    Py_XDECREF(sm);
    Py_XDECREF(tm);
    Py_XDECREF(grad);
    return result;
}

#define GM_METHODS_LOSS                                                              \
    {"loss_fgbg", (PyCFunction)py_loss_fgbg, METH_VARARGS,                           \
     "loss_fgbg(P, src_fg, trg_fg, lo, hi, weight, need_grad)\n--\n\n"               \
     "(sum of -log(1 - clip(P, lo, hi)) over foreground x background entries,\n"     \
     "gradient (weight / (1 - P) there, 0 elsewhere) or None)."},
/* @@end loss */
/* ======================================================================== */

static PyMethodDef gm_methods[] = {
    GM_METHODS_CONFIG
    GM_METHODS_SIMILARITY
    GM_METHODS_SINKHORN
    GM_METHODS_DUSTBIN
    GM_METHODS_SOFTARGMAX
    GM_METHODS_TRANSFER
    GM_METHODS_NN
    GM_METHODS_HEAD
    GM_METHODS_LOSS
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
    return PyModule_Create(&gm_module);
}

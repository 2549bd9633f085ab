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
        PyObject *sa = PyObject_Str(PyObject_GetAttrString((PyObject *)a, "shape"));
        PyObject *sb = PyObject_Str(PyObject_GetAttrString((PyObject *)b, "shape"));
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
#define GM_METHODS_SIMILARITY
/* @@end similarity */
/* ======================================================================== */

/* ======================================================================== */
/* sinkhorn                                                                 */
/* @@section sinkhorn */
#define GM_METHODS_SINKHORN
/* @@end sinkhorn */
/* ======================================================================== */

/* ======================================================================== */
/* dustbin                                                                  */
/* @@section dustbin */
#define GM_METHODS_DUSTBIN
/* @@end dustbin */
/* ======================================================================== */

/* ======================================================================== */
/* softargmax                                                               */
/* @@section softargmax */
#define GM_METHODS_SOFTARGMAX
/* @@end softargmax */
/* ======================================================================== */

/* ======================================================================== */
/* transfer                                                                 */
/* @@section transfer */
#define GM_METHODS_TRANSFER
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
    if (accumulate && oout == Py_None) {
        gm_set_error(PyExc_ValueError, "accumulate=True needs out");
        goto done;
    }
    if (accumulate && act != 0) {
        gm_set_error(PyExc_ValueError, "act must be 0 when accumulate=True");
        goto done;
    }
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

#define GM_METHODS_NN                                                               \
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

static PyMethodDef gm_methods[] = {
    GM_METHODS_CONFIG
    GM_METHODS_SIMILARITY
    GM_METHODS_SINKHORN
    GM_METHODS_DUSTBIN
    GM_METHODS_SOFTARGMAX
    GM_METHODS_TRANSFER
    GM_METHODS_NN
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

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
#define GM_METHODS_NN
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

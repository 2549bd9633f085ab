"""Tests of geomatch.sinkhorn against a slow NumPy oracle, closed forms and POT."""
import math
import warnings

import numpy as np
from argnames import names_an_argument
import pytest

import geomatch as gm
from geomatch.testing import reference

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


# ---------------------------------------------------------------- the oracle
# plain log-domain Sinkhorn in float64 (geomatch.testing.reference.sinkhorn)
lse = reference.lse
ref_sinkhorn = reference.sinkhorn


def problem(rng, shape, n, m, dtype=np.float64):
    C = rng.random(shape + (n, m))
    a = rng.random(shape + (n,)) + 0.1
    b = rng.random(shape + (m,)) + 0.1
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    return C.astype(dtype), a.astype(dtype), b.astype(dtype)


def strided(x):
    """A non-contiguous view with the same values."""
    big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    big[..., ::2] = x
    return big[..., ::2]


REG_MS = [None, 1.0, (math.inf, 0.5), (0.3, 2.0), (0.0, math.inf)]


def pair(reg_m):
    if reg_m is None:
        return (math.inf, math.inf)
    if np.isscalar(reg_m):
        return (reg_m, reg_m)
    return reg_m


# ---------------------------------------------------------- oracle agreement
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 2)])
@pytest.mark.parametrize("reg_m", REG_MS)
def test_matches_reference(rng, dtype, batch, reg_m):
    C, a, b = problem(rng, batch, 9, 13, dtype)
    reg = 0.05
    P, f, g, it = gm.sinkhorn(C, a, b, reg, reg_m=reg_m, max_iter=60, tol=0,
                              return_potentials=True)
    R, fr, gr = ref_sinkhorn(C, a, b, reg, pair(reg_m), n_iter=60)
    assert P.dtype == dtype and P.shape == C.shape
    assert f.shape == a.shape and g.shape == b.shape
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert np.max(np.abs(P - R)) <= rtol * np.max(R)
    # potentials: P = exp((f + g - C) / reg); POT's reg*log(u) convention
    Q = np.exp((f[..., :, None].astype(np.float64) + g[..., None, :] - C) / reg)
    assert np.max(np.abs(Q - R)) <= 10 * rtol * np.max(R)
    if batch:
        assert np.all(it == 60) and it.shape == batch
    else:
        assert it == 60 and isinstance(it, int)


@pytest.mark.parametrize("reg", [2.0, 0.01, 1e-3, 1e-4])
@pytest.mark.parametrize("reg_m", [None, (0.5, math.inf)])
def test_matches_reference_across_regimes(rng, reg, reg_m):
    # small reg: scalings leave their range (absorption, kernel rebuilds,
    # log-domain sweeps, underflowed columns); all must follow the oracle.
    C, a, b = problem(rng, (), 70, 60)
    C = 2.0 * C - 0.5
    P = gm.sinkhorn(C, a, b, reg, reg_m=reg_m, max_iter=200, tol=0)
    R, _, _ = ref_sinkhorn(C, a, b, reg, pair(reg_m), n_iter=200)
    assert np.max(np.abs(P - R)) <= 1e-9 * np.max(R)
    P32 = gm.sinkhorn(C.astype(np.float32), a.astype(np.float32), b.astype(np.float32), reg,
                      reg_m=reg_m, max_iter=200, tol=0)
    assert np.all(np.isfinite(P32))
    if reg >= 0.01:  # float32 rounding of C / reg grows as reg shrinks
        assert np.max(np.abs(P32 - R)) <= 1e-3 * np.max(R)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["C", "a", "b", "all"])
def test_strided_inputs(rng, dtype, which):
    C, a, b = problem(rng, (2,), 11, 8, dtype)
    ref = gm.sinkhorn(C, a, b, 0.1, reg_m=(1.0, 3.0), max_iter=40, tol=0)
    args = {"C": C, "a": a, "b": b}
    for k in (["C", "a", "b"] if which == "all" else [which]):
        args[k] = strided(args[k])
        assert not args[k].flags.c_contiguous
    got = gm.sinkhorn(args["C"], args["a"], args["b"], 0.1, reg_m=(1.0, 3.0),
                      max_iter=40, tol=0)
    np.testing.assert_array_equal(got, ref)
    # a transposed cost matrix (Fortran order) too
    got = gm.sinkhorn(np.ascontiguousarray(np.swapaxes(C, -1, -2)).swapaxes(-1, -2),
                      a, b, 0.1, reg_m=(1.0, 3.0), max_iter=40, tol=0)
    np.testing.assert_array_equal(got, ref)


def test_mixed_dtypes_promote_to_float64(rng):
    C, a, b = problem(rng, (), 6, 7)
    P = gm.sinkhorn(C.astype(np.float32), a, b.astype(np.float32), 0.1, max_iter=30, tol=0)
    assert P.dtype == np.float64
    P16 = gm.sinkhorn(C.astype(np.float16), a.astype(np.float32), b.astype(np.float32),
                      0.1, max_iter=30, tol=0)
    assert P16.dtype == np.float32
    R, _, _ = ref_sinkhorn(C.astype(np.float32), a, b.astype(np.float32), 0.1, n_iter=30)
    assert np.max(np.abs(P - R)) <= 1e-10 * R.max()


@pytest.mark.parametrize("shape", [((4,), 12, 10), ((), 90, 70), ((2,), 380, 350)])
@pytest.mark.parametrize("reg", [0.05, 1e-3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_identical(rng, shape, reg, dtype):
    C, a, b = problem(rng, *shape, dtype=dtype)
    before = gm.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            gm.set_num_threads(t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(gm.sinkhorn(C, a, b, reg, reg_m=(math.inf, 2.0), max_iter=150,
                                       tol=1e-9, return_potentials=True))
    finally:
        gm.set_num_threads(before)
    for x, y in zip(out[0], out[1]):
        np.testing.assert_array_equal(x, y)


def test_batch_equals_separate_solves(rng):
    C, a, b = problem(rng, (3,), 20, 15)
    P, f, g, it = gm.sinkhorn(C, a, b, 0.02, tol=1e-11, max_iter=5000,
                              return_potentials=True)
    for k in range(3):
        Pk, fk, gk, itk = gm.sinkhorn(C[k], a[k], b[k], 0.02, tol=1e-11, max_iter=5000,
                                      return_potentials=True)
        np.testing.assert_array_equal(P[k], Pk)
        assert it[k] == itk


# ------------------------------------------------------------ convergence/tol
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-7), (np.float64, 1e-12)])
def test_balanced_converges_to_marginals(rng, dtype, tol):
    C, a, b = problem(rng, (), 30, 40, dtype)
    P, f, g, it = gm.sinkhorn(C, a, b, 0.02, tol=tol, max_iter=10000, return_potentials=True)
    assert 1 < it < 10000
    P64 = P.astype(np.float64)
    slack = 5e-7 if dtype == np.float32 else 1e-14
    # the stopping rule: the column update changed the column marginal by < tol,
    # i.e. rows were within ~tol before it; columns are exact after it
    assert np.max(np.abs(P64.sum(0) - b)) <= 1e-6 if dtype == np.float32 else 1e-15
    assert np.sum(np.abs(P64.sum(1) - a)) <= len(b) * tol + slack
    # and the result is the fixed point of the oracle
    R, _, _ = ref_sinkhorn(C, a, b, 0.02, n_iter=4000)
    assert np.max(np.abs(P64 - R)) <= (1e-5 if dtype == np.float32 else 1e-10) * R.max()


def test_fewer_iterations_with_looser_tol(rng):
    C, a, b = problem(rng, (), 20, 20)
    *_, it1 = gm.sinkhorn(C, a, b, 0.02, tol=1e-4, return_potentials=True)
    *_, it2 = gm.sinkhorn(C, a, b, 0.02, tol=1e-12, max_iter=20000, return_potentials=True)
    assert 1 <= it1 < it2


def test_not_converged_warns(rng):
    C, a, b = problem(rng, (), 20, 20)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        gm.sinkhorn(C, a, b, 0.001, max_iter=3, tol=1e-12)


# -------------------------------------------------------------- closed forms
@pytest.mark.parametrize("reg", [1.0, 0.1, 0.01])
def test_closed_form_2x2_balanced(reg):
    # POT docs example (reg=1 gives [[0.36552929, 0.13447071], ...]): for a
    # symmetric 2x2 problem P11 P22 / (P12 P21) = exp(2 / reg).
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    a = np.array([0.5, 0.5])
    P = gm.sinkhorn(M, a, a, reg, tol=1e-14, max_iter=10000)
    p = 0.5 / (1.0 + math.exp(-1.0 / reg))
    np.testing.assert_allclose(P, [[p, 0.5 - p], [0.5 - p, p]], rtol=1e-10, atol=1e-14)
    if reg == 1.0:
        np.testing.assert_allclose(P, [[0.36552929, 0.13447071],
                                       [0.13447071, 0.36552929]], atol=1e-8)


@pytest.mark.parametrize("reg,reg_m", [(1.0, 1.0), (0.5, 2.0), (0.1, 0.3)])
def test_closed_form_2x2_unbalanced(reg, reg_m):
    # symmetric fixed point u = v: u^(1+phi) = (a / (1 + e^(-1/reg)))^phi, P11 = u^2;
    # POT's docs give [[0.51122814, 0.18807032], ...] for reg = reg_m = 1.
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    a = np.array([0.5, 0.5])
    P = gm.sinkhorn(M, a, a, reg, reg_m=reg_m, tol=1e-15, max_iter=10000)
    k = math.exp(-1.0 / reg)
    phi = reg_m / (reg_m + reg)
    u = (0.5 / (1 + k)) ** (phi / (1 + phi))
    np.testing.assert_allclose(P, [[u * u, u * u * k], [u * u * k, u * u]], rtol=1e-10)
    if reg == reg_m == 1.0:
        np.testing.assert_allclose(P, [[0.51122814, 0.18807032],
                                       [0.18807032, 0.51122814]], atol=1e-7)


def test_semi_relaxed_fixed_point(rng):
    # POT's test_unbalanced_convergence setup, with a hard constraint on a:
    # rows must equal a, and g must solve its own (damped) fixed-point equation.
    n = 100
    x = np.random.RandomState(42).randn(n, 2)
    a = np.full(n, 1.0 / n)
    b = np.full(n, 1.5 / n)
    M = ((x[:, None] - x[None]) ** 2).sum(-1)
    P, f, g, it = gm.sinkhorn(M, a, b, 1.0, reg_m=(math.inf, 1.0), tol=1e-13,
                              max_iter=5000, return_potentials=True)
    np.testing.assert_allclose(P.sum(1), a, rtol=1e-10)
    phi = 1.0 / (1.0 + 1.0)
    g_fp = phi * (np.log(b) - lse((f[:, None] - M) / 1.0, 0))
    np.testing.assert_allclose(g, g_fp, atol=1e-10)


# ------------------------------------------------------------------- vs POT
ot = pytest.importorskip("ot", reason="the reference is POT (test extra)")


def _pot_problem(n=100, m=80, seed=0):
    r = np.random.RandomState(seed)
    xs, xt = r.randn(n, 2), r.randn(m, 2) + 0.5
    M = ot.dist(xs, xt)
    M /= M.max()
    a = r.rand(n) + 0.2
    b = r.rand(m) + 0.2
    return M, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("reg", [1.0, 0.05, 0.01])
def test_pot_balanced(reg):
    M, a, b = _pot_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Q = ot.sinkhorn(a, b, M, reg, stopThr=1e-13, numItermax=20000,
                        method="sinkhorn_log")
    P = gm.sinkhorn(M, a, b, reg, tol=1e-13, max_iter=20000)
    np.testing.assert_allclose(P, Q, atol=1e-10 * Q.max() + 1e-15, rtol=1e-7)
    P32 = gm.sinkhorn(M.astype(np.float32), a.astype(np.float32), b.astype(np.float32),
                      reg, tol=1e-8, max_iter=20000)
    assert np.max(np.abs(P32 - Q)) <= 1e-4 * Q.max()


def test_pot_balanced_uniform_docs_setup():
    # POT's test_sinkhorn: uniform weights on 100 Gaussian points, reg 1.
    n = 100
    x = np.random.RandomState(0).randn(n, 2)
    u = np.full(n, 1.0 / n)
    M = ot.dist(x, x)
    Q = ot.sinkhorn(u, u, M, 1, stopThr=1e-12)
    P = gm.sinkhorn(M, u, u, 1.0, tol=1e-12)
    np.testing.assert_allclose(P.sum(0), u, atol=1e-12)
    np.testing.assert_allclose(P.sum(1), u, atol=1e-11)
    np.testing.assert_allclose(P, Q, atol=1e-11)


@pytest.mark.parametrize("reg_m", [1.0, 0.1, (0.5, 2.0), (math.inf, 1.0), (1.0, math.inf)])
@pytest.mark.parametrize("reg", [1.0, 0.05])
def test_pot_unbalanced(reg, reg_m):
    M, a, b = _pot_problem(60, 50, seed=1)
    b = 1.5 * b  # unbalanced masses
    if isinstance(reg_m, tuple) and math.isinf(reg_m[0]) and math.isinf(reg_m[1]):
        pytest.skip("balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Q = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, reg_m, reg_type="entropy",
                                              stopThr=1e-14, numItermax=50000)
    P = gm.sinkhorn(M, a, b, reg, reg_m=reg_m, tol=1e-15, max_iter=50000)
    np.testing.assert_allclose(P, Q, atol=1e-9 * Q.max(), rtol=1e-6)


def test_pot_unbalanced_fixed_point_equations():
    # POT's test_unbalanced_convergence (reg_type="entropy"): with
    # logu = f / reg, logv = g / reg the damped fixed-point equations hold.
    n = 100
    x = np.random.RandomState(42).randn(n, 2)
    a = np.full(n, 1.0 / n)
    b = np.full(n, 1.5 / n)
    M = ot.dist(x, x)
    eps, reg_m = 1.0, 1.0
    P, f, g, _ = gm.sinkhorn(M, a, b, eps, reg_m=reg_m, tol=1e-14, max_iter=10000,
                             return_potentials=True)
    fi = reg_m / (reg_m + eps)
    logu, logv = f / eps, g / eps
    v_final = fi * (np.log(b) - lse(logu[None, :] - M.T / eps, 1))
    u_final = fi * (np.log(a) - lse(logv[None, :] - M / eps, 1))
    np.testing.assert_allclose(u_final, logu, atol=1e-9)
    np.testing.assert_allclose(v_final, logv, atol=1e-9)
    G = ot.unbalanced.sinkhorn_unbalanced(a, b, M, eps, reg_m, reg_type="entropy",
                                          stopThr=1e-12)
    np.testing.assert_allclose(P, G, atol=1e-9)


# ---------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype,rel_reg", [(np.float32, 1e-4), (np.float64, 1e-6)])
@pytest.mark.parametrize("reg_m", [None, (1.0, math.inf)])
def test_small_reg_is_stable(rng, dtype, rel_reg, reg_m):
    C, a, b = problem(rng, (), 40, 30, dtype)
    C = (3.0 * C - 1.0).astype(dtype)  # costs in [-1, 2): range ~3
    reg = rel_reg * float(np.ptp(C))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        P, f, g, it = gm.sinkhorn(C, a, b, reg, reg_m=reg_m, max_iter=3000, tol=1e-9,
                                  return_potentials=True)
    assert np.all(np.isfinite(P)) and np.all(P >= 0) and P.max() > 0
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(g))
    P64 = P.astype(np.float64)
    # Plain Sinkhorn needs far more than 3000 iterations to converge at this
    # reg on random costs; what must hold anyway: the last update was the
    # column one, so the column marginal (a hard constraint in both cases)
    # and the total mass are met, and the rows are mass-consistent.
    np.testing.assert_allclose(P64.sum(0), b, rtol=1e-5 if dtype == np.float32 else 1e-9)
    np.testing.assert_allclose(P64.sum(), b.sum(dtype=np.float64),
                               rtol=1e-5 if dtype == np.float32 else 1e-9)
    assert np.all(P64.sum(1) <= 1.0 + 1e-6)


@pytest.mark.parametrize("dtype,rel_reg", [(np.float32, 1e-4), (np.float64, 1e-6)])
def test_small_reg_converges_on_clear_assignment(rng, dtype, rel_reg):
    # a permutation is clearly optimal: even tiny reg converges to it quickly
    n = 50
    perm = rng.permutation(n)
    C = 1.0 + 0.3 * rng.random((n, n))
    C[np.arange(n), perm] = 0.2 * rng.random(n)
    C = C.astype(dtype)
    u = np.full(n, 1.0 / n, dtype)
    reg = rel_reg * float(np.ptp(C))
    P = gm.sinkhorn(C, u, u, reg, tol=1e-9, max_iter=2000)
    assert np.all(np.isfinite(P))
    expect = np.zeros((n, n))
    expect[np.arange(n), perm] = 1.0 / n
    np.testing.assert_allclose(P, expect, atol=1e-6)


def test_large_costs_and_tiny_masses_stay_finite(rng):
    C, a, b = problem(rng, (), 20, 25, np.float32)
    C = (C * 1e4).astype(np.float32)
    a = (a * 1e-20).astype(np.float32)
    b = (b * 1e-20).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        P = gm.sinkhorn(C, a, b, 1.0, max_iter=500, tol=1e-30)
    assert np.all(np.isfinite(P)) and P.max() > 0
    np.testing.assert_allclose(P.astype(np.float64).sum(0), b, rtol=1e-4)


def test_zero_masses():
    C = np.random.default_rng(0).random((3, 4))
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.25, 0.25, 0.0, 0.5])
    P, f, g, _ = gm.sinkhorn(C, a, b, 0.1, tol=1e-12, return_potentials=True)
    assert np.all(P[1] == 0) and np.all(P[:, 2] == 0)
    assert f[1] == -np.inf and g[2] == -np.inf
    np.testing.assert_allclose(P.sum(1), a, atol=1e-11)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-11)
    R, _, _ = ref_sinkhorn(C[[0, 2]][:, [0, 1, 3]], a[[0, 2]], b[[0, 1, 3]], 0.1, n_iter=500)
    np.testing.assert_allclose(P[[0, 2]][:, [0, 1, 3]], R, atol=1e-11)


# --------------------------------------------------------------- bad input
def _ok():
    return np.ones((3, 4)), np.full(3, 1 / 3), np.full(4, 1 / 4)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(C=np.ones((3, 5))), ValueError, "b must have length"),
    (dict(a=np.full(4, 0.25)), ValueError, "a must have length"),
    (dict(C=np.ones(4)), ValueError, "C must have"),
    (dict(a=np.full((1, 3), 1 / 3)), ValueError, "a must"),
    (dict(C=np.ones((2, 3, 4))), ValueError, "a must"),
    (dict(C=np.ones((3, 4), dtype=np.int64)), TypeError, "C must have a real floating"),
    (dict(a=np.array([1, 1, 1])), TypeError, "a must have a real floating"),
    (dict(b=np.ones(4, dtype=np.complex128) / 4), TypeError, "b must have a real"),
    (dict(C=np.ones((3, 4), dtype=bool)), TypeError, "C must"),
    (dict(C=np.full((3, 4), np.nan)), ValueError, "C contains NaN"),
    (dict(C=np.array([[1, 2, np.inf, 0]] * 3)), ValueError, "C contains NaN"),
    (dict(a=np.array([0.5, np.nan, 0.5])), ValueError, "a contains NaN"),
    (dict(b=np.array([0.5, -0.25, 0.5, 0.25])), ValueError, "b must be non-negative"),
    (dict(a=np.zeros(3), reg_m=1.0), ValueError, "a must have a positive total mass"),
    (dict(b=np.full(4, 0.5)), ValueError, "a and b must have the same total mass"),
    (dict(reg=0.0), ValueError, "reg must be"),
    (dict(reg=-1.0), ValueError, "reg must be"),
    (dict(reg=np.nan), ValueError, "reg must be"),
    (dict(reg="x"), TypeError, "reg must be"),
    (dict(reg_m=-1.0), ValueError, "reg_m"),
    (dict(reg_m=(1.0, np.nan)), ValueError, "reg_m"),
    (dict(reg_m=(1.0, 2.0, 3.0)), ValueError, "reg_m"),
    (dict(reg_m="big"), TypeError, "reg_m"),
    (dict(reg_m=(1.0, "x")), TypeError, r"reg_m\[1\]"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(tol=-1e-3), ValueError, "tol"),
    (dict(tol=np.nan), ValueError, "tol"),
    (dict(C=np.ones((0, 4)), a=np.ones(0)), ValueError, "C must not be empty"),
    (dict(C=np.ones((3, 4)), a=[[1 / 3] * 3]), ValueError, "a must"),
    (dict(C="abc"), TypeError, "C must"),
    (dict(return_potentials="yes"), TypeError, "return_potentials"),
])
def test_bad_input(kwargs, exc, match):
    C, a, b = _ok()
    args = dict(C=C, a=a, b=b, reg=0.1)
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("reg_m", "max_iter", "tol", "return_potentials")
             if k in args}
    with pytest.raises(exc, match=match):
        gm.sinkhorn(args["C"], args["a"], args["b"], args["reg"], **extra)


def test_batch_mismatch_names_arguments():
    with pytest.raises(ValueError, match="C and a"):
        gm.sinkhorn(np.ones((2, 3, 4)), np.full((3, 3), 1 / 3), np.full((2, 4), 0.25), 0.1)
    with pytest.raises(ValueError, match="C and b"):
        gm.sinkhorn(np.ones((2, 3, 4)), np.full((2, 3), 1 / 3), np.full((1, 4), 0.25), 0.1)


def test_unequal_masses_fine_when_unbalanced_or_semi_relaxed(rng):
    C, a, b = problem(rng, (), 5, 6)
    for reg_m in (1.0, (math.inf, 1.0), (1.0, math.inf)):
        P = gm.sinkhorn(C, a, 2 * b, 0.1, reg_m=reg_m, tol=1e-10)
        assert np.all(np.isfinite(P))


# ------------------------------------------------------------------ fuzzing
_dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.complex64, bool])
_values = st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, np.nan, np.inf, 3.0])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.integers(0, 2), max_size=2), n=st.integers(0, 5),
       m=st.integers(0, 5), dn=st.integers(-1, 1), dm=st.integers(-1, 1),
       dtypes=st.tuples(_dtypes, _dtypes, _dtypes), poke=st.tuples(_values, _values, _values),
       reg=st.sampled_from([0.1, 1e-6, 0.0, -1.0, 1e10, np.inf]),
       reg_m=st.sampled_from([None, 0.0, 1.0, np.inf, (0.0, 1.0), (np.inf, 2.0), -1.0]),
       max_iter=st.sampled_from([1, 3, 0]), seed=st.integers(0, 2 ** 16))
def test_fuzz_binding(batch, n, m, dn, dm, dtypes, poke, reg, reg_m, max_iter, seed):
    r = np.random.default_rng(seed)
    shape = tuple(batch)
    C = r.random(shape + (n, m)).astype(dtypes[0])
    a = (r.random(shape + (max(n + dn, 0),)) + 0.1).astype(dtypes[1])
    b = (r.random(shape + (max(m + dm, 0),)) + 0.1).astype(dtypes[2])
    for arr, v in zip((C, a, b), poke):
        if arr.size and arr.dtype.kind == "f" and r.random() < 0.5:
            arr.flat[r.integers(arr.size)] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            P = gm.sinkhorn(C, a, b, reg, reg_m=reg_m, max_iter=max_iter, tol=1e-9)
        except (ValueError, TypeError) as e:
            msg = str(e)
            assert names_an_argument(msg, ("C", "a", "b", "reg", "reg_m", "max_iter")), msg
            return
        except FloatingPointError:
            return  # documented: overflow for extreme inputs is reported, not silent
    assert P.shape == C.shape
    assert np.all(np.isfinite(P)) and np.all(P >= 0)

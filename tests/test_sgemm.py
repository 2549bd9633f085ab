"""geomatch's float32 GEMM (csrc/gm_sgemm_avx512.c) and its switch
(GEOMATCH_SGEMM / gm.set_sgemm), against float64 NumPy products written here.

Error bound of a float32 product summed in float32 (any order, with or
without FMA): |C - C64| <= k eps32 (|alpha| |A| |B| + |beta| |C0|), plus one
rounding of the result; the tests use that bound, with |A| |B| computed in
float64, not a fixed tolerance.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import geomatch as gm
from geomatch import _core
from geomatch.ops.linalg import matmul

AVX512 = _core.get_sgemm()[2]
MODES = ["blas"] + (["avx512"] if AVX512 else [])
EPS = float(np.finfo(np.float32).eps)
MR, NR, KC = 14, 32, 384   # the kernel's register tile and longest k block


@pytest.fixture
def restore_threads():
    n = gm.get_num_threads()
    yield
    gm.set_num_threads(n)


@pytest.fixture
def restore_sgemm():
    before = _core.get_sgemm()[0]
    yield
    _core.set_sgemm(before)


def _operand(rng, rows, cols, trans, pad):
    """op(X) of shape rows x cols: the stored array (cols x rows when trans),
    as a view of a wider array when pad (a leading dimension > its width)."""
    shape = (cols, rows) if trans else (rows, cols)
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    if pad:
        wide = np.full((shape[0], shape[1] + pad), np.nan, np.float32)
        wide[:, 1:1 + shape[1]] = x
        x = wide[:, 1:1 + shape[1]]
    return x


def _check(a, b, ta, tb, c0, alpha, beta, mode):
    """Run _core.gemm in `mode` on out = c0.copy() and check the bound."""
    gm.set_sgemm(mode)
    A = (a.T if ta else a).astype(np.float64)
    B = (b.T if tb else b).astype(np.float64)
    c = c0.copy()
    _core.gemm(a, b, c, ta, tb, alpha, beta)
    k = A.shape[1]
    prior = 0.0 if beta == 0 else beta * c0.astype(np.float64)
    ref = alpha * (A @ B) + prior
    mag = abs(alpha) * (np.abs(A) @ np.abs(B)) + (0.0 if beta == 0 else abs(beta) * np.abs(c0))
    bound = (k + 2) * EPS * mag + np.finfo(np.float32).tiny
    err = np.abs(c.astype(np.float64) - ref)
    assert np.all(np.isfinite(c)), "non-finite output"
    assert np.all(err <= bound), (f"max err {err.max():.3g} vs bound at argmax "
                                  f"{bound.flat[err.argmax()]:.3g}")
    return c


SIZES = [(1, 1, 1), (MR - 1, NR - 1, 2), (MR, NR, 3), (MR + 1, NR + 1, 5), (31, 33, 7),
         (33, 31, KC - 1), (2 * MR + 1, 2 * NR + 3, KC), (17, 65, KC + 1), (97, 101, 2 * KC + 3),
         (1, 300, 13), (300, 1, 11), (5, 7, 1000)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("m,n,k", SIZES)
def test_sgemm_matches_float64(mode, ta, tb, m, n, k, restore_sgemm):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a = _operand(rng, m, k, ta, 0)
    b = _operand(rng, k, n, tb, 0)
    _check(a, b, ta, tb, np.full((m, n), np.nan, np.float32), 1.0, 0.0, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (-0.5, 2.0), (3.0, 0.0), (0.25, -1.0)])
def test_sgemm_strided_alpha_beta(mode, ta, tb, alpha, beta, restore_sgemm):
    rng = np.random.default_rng(7)
    m, n, k = 43, 71, 389
    a = _operand(rng, m, k, ta, 5)
    b = _operand(rng, k, n, tb, 3)
    big = rng.uniform(-1, 1, size=(m, n + 9)).astype(np.float32)
    before = big.copy()
    out = big[:, 4:4 + n]                    # ldc = n + 9
    c0 = out.copy()
    gm.set_sgemm(mode)
    _core.gemm(a, b, out, ta, tb, alpha, beta)
    A = (a.T if ta else a).astype(np.float64)
    B = (b.T if tb else b).astype(np.float64)
    ref = alpha * (A @ B) + beta * c0
    bound = (k + 2) * EPS * (abs(alpha) * (np.abs(A) @ np.abs(B)) + abs(beta) * np.abs(c0))
    assert np.all(np.abs(out - ref) <= bound + 1e-30)
    # the columns outside the view are untouched
    np.testing.assert_array_equal(big[:, :4], before[:, :4])
    np.testing.assert_array_equal(big[:, 4 + n:], before[:, 4 + n:])


@pytest.mark.parametrize("mode", MODES)
def test_sgemm_beta_zero_never_reads_c_and_alpha_zero(mode, restore_sgemm):
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, size=(20, 40)).astype(np.float32)
    b = rng.uniform(-1, 1, size=(40, 35)).astype(np.float32)
    gm.set_sgemm(mode)
    c = np.full((20, 35), np.nan, np.float32)
    _core.gemm(a, b, c, False, False, 1.0, 0.0)
    assert np.all(np.isfinite(c))
    c = np.full((20, 35), np.inf, np.float32)
    _core.gemm(a, b, c, False, False, 0.0, 0.0)       # alpha = beta = 0: zeros
    np.testing.assert_array_equal(c, 0.0)
    c = np.full((20, 35), 2.0, np.float32)
    _core.gemm(a, b, c, False, False, 0.0, 0.5)       # alpha = 0: C scaled only
    np.testing.assert_array_equal(c, 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_sgemm_bit_identical_for_1_to_4_threads(mode, restore_threads, restore_sgemm):
    rng = np.random.default_rng(11)
    gm.set_sgemm(mode)
    for (m, n, k, ta, tb) in [(300, 120, 90, False, False), (30, 120, 400, True, False),
                              (130, 100, 790, False, True), (64, 1369, 64, True, True),
                              (1369, 64, 1369, False, False), (2738, 256, 256, False, True)]:
        a = _operand(rng, m, k, ta, 0)
        b = _operand(rng, k, n, tb, 0)
        outs = []
        for t in (1, 2, 3, 4):
            gm.set_num_threads(t)
            c = np.empty((m, n), np.float32)
            _core.gemm(a, b, c, ta, tb, 1.0, 0.0)
            outs.append(c)
        for t, c in zip((2, 3, 4), outs[1:]):
            np.testing.assert_array_equal(outs[0], c, err_msg=f"{(m, n, k)} at {t} threads")


def test_avx512_kernel_sums_k_in_an_order_fixed_by_k(restore_sgemm, restore_threads):
    """Rows and columns computed in separate calls (other tiles, other edges)
    give the same bits as the whole product: the order of the sum over k
    depends on k only.  (On a CPU without AVX-512F: the mode is refused.)"""
    if not AVX512:
        with pytest.raises(ValueError, match="AVX-512"):
            gm.set_sgemm("avx512")
        return
    gm.set_sgemm("avx512")
    gm.set_num_threads(1)
    rng = np.random.default_rng(5)
    m, n, k = 61, 83, 2 * KC + 17
    a = rng.uniform(-1, 1, size=(m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    whole = np.empty((m, n), np.float32)
    _core.gemm(a, b, whole, False, False, 1.0, 0.0)
    parts = np.empty((m, n), np.float32)
    for r0, r1 in [(0, 5), (5, 20), (20, 61)]:
        for c0, c1 in [(0, 1), (1, 40), (40, 83)]:
            blk = np.empty((r1 - r0, c1 - c0), np.float32)
            _core.gemm(np.ascontiguousarray(a[r0:r1]), np.ascontiguousarray(b[:, c0:c1]), blk,
                       False, False, 1.0, 0.0)
            parts[r0:r1, c0:c1] = blk
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("k", [768, 100, 385, 1000, 1, 16, KC - 1, KC, 2 * KC + 1])
def test_sgemm_abt_is_the_packed_gemm_bit_for_bit(k, restore_sgemm, restore_threads):
    """The transfer's grid dots g = q t' (q: keypoints x D, t: the map, h*w x D):
    sgemm_abt (gm_sgemm_avx512_abt) reads t's rows in place and must give the
    packed GEMM's bits exactly (the same k blocks and FMA chains), for every
    number of keypoints 1..100 (16- and 32-column panels, both edges), small
    and SPair-sized maps (14-row tiles, partial last tile), padded rows, 1 and
    2 threads; and both stay within the float32 bound of a float64 product."""
    if not AVX512:
        with pytest.raises(ValueError, match="AVX-512"):
            _core.sgemm_abt(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32),
                            np.empty((2, 2), np.float32), 1.0)
        return
    gm.set_sgemm("avx512")
    rng = np.random.default_rng(k)
    for n, pad in ((1369, 0), (13, 3), (1, 0), (29, 5)):
        t = _operand(rng, n, k, False, pad)
        t[0, 0] = -0.0
        for m in range(1, 101):
            if n != 1369 and m % 7 not in (1, 2) and m not in (15, 16, 17, 31, 32, 33, 80):
                continue
            q = _operand(rng, m, k, False, pad)
            want = np.full((m, n + pad), np.nan, np.float32)[:, :n]
            _core.gemm(q, t, want, False, True, 1.0, 0.0)
            for threads in (1, 2):
                gm.set_num_threads(threads)
                got = np.full((m, n + pad), np.nan, np.float32)
                _core.sgemm_abt(q, t, got[:, :n], 1.0)
                np.testing.assert_array_equal(got[:, :n].view(np.uint32), want.view(np.uint32),
                                              err_msg=f"m {m} n {n} k {k} threads {threads}")
                assert np.isnan(got[:, n:]).all()           # the padding untouched
            if m in (1, 17, 80, 100):
                Q, T = q.astype(np.float64), t.astype(np.float64)
                bound = (k + 2) * EPS * (np.abs(Q) @ np.abs(T).T)
                assert (np.abs(got[:, :n] - Q @ T.T) <= bound).all()
    a = _operand(rng, 37, 2 * KC + 5, False, 3)
    b = _operand(rng, 45, 2 * KC + 5, False, 1)
    want = np.empty((37, 45), np.float32)
    got = np.empty((37, 45), np.float32)
    _core.gemm(a, b, want, False, True, -0.75, 0.0)
    _core.sgemm_abt(a, b, got, -0.75)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    got = np.empty((3, 2), np.float32)
    _core.sgemm_abt(np.ones((3, 4), np.float32), np.full((2, 4), 2, np.float32), got, -0.5)
    np.testing.assert_array_equal(got, np.full((3, 2), -4.0))
    with pytest.raises(ValueError, match="shapes"):
        _core.sgemm_abt(np.ones((3, 4), np.float32), np.ones((2, 5), np.float32), got, 1.0)
    with pytest.raises(TypeError, match="b"):
        _core.sgemm_abt(np.ones((3, 4), np.float32), np.ones((2, 4)), got, 1.0)
    with pytest.raises(ValueError, match="c"):
        _core.sgemm_abt(np.ones((3, 4), np.float32), np.ones((2, 4), np.float32),
                        np.empty((2, 3), np.float32).T, 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_nn_linear_in_both_modes(mode, restore_sgemm, restore_threads):
    """The backbone's linear layer (bias, GELU, accumulate) on the chosen GEMM."""
    rng = np.random.default_rng(13)
    x = rng.uniform(-1, 1, size=(150, 97)).astype(np.float32)
    w = rng.uniform(-1, 1, size=(45, 97)).astype(np.float32)
    bias = rng.uniform(-1, 1, size=45).astype(np.float32)
    gm.set_sgemm(mode)
    X, W = x.astype(np.float64), w.astype(np.float64)
    ref = X @ W.T + bias
    bound = (97 + 3) * EPS * (np.abs(X) @ np.abs(W).T + np.abs(bias))
    y = _core.nn_linear(x, w, bias)
    assert np.all(np.abs(y - ref) <= bound)
    acc = np.ones((150, 45), np.float32)
    _core.nn_linear(x, w, bias, out=acc, accumulate=True)
    assert np.all(np.abs(acc - (ref + 1)) <= bound + 2 * EPS)
    outs = []
    for t in (1, 2, 3):
        gm.set_num_threads(t)
        outs.append(_core.nn_linear(x, w, bias, act=1))
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)


def test_matmul_views_on_the_kernel(restore_sgemm):
    rng = np.random.default_rng(17)
    a = rng.uniform(-1, 1, size=(70, 400)).astype(np.float32)[:, ::1]
    b = rng.uniform(-1, 1, size=(50, 400)).astype(np.float32)
    for mode in MODES:
        gm.set_sgemm(mode)
        got = matmul(a, b.T)
        ref = a.astype(np.float64) @ b.T.astype(np.float64)
        bound = 402 * EPS * (np.abs(a).astype(np.float64) @ np.abs(b.T).astype(np.float64))
        assert np.all(np.abs(got - ref) <= bound)


def test_switch_values_and_errors(restore_sgemm):
    gm.set_sgemm("blas")
    assert gm.get_sgemm() == "blas"
    gm.set_sgemm("auto")
    assert gm.get_sgemm() == ("avx512" if AVX512 else "blas")
    if AVX512:
        gm.set_sgemm("AVX512")
        assert gm.get_sgemm() == "avx512"
    else:
        with pytest.raises(ValueError, match="AVX-512"):
            gm.set_sgemm("avx512")
    for bad in ("fast", "", 1, None):
        with pytest.raises(ValueError, match="GEOMATCH_SGEMM"):
            gm.set_sgemm(bad)
    with pytest.raises(ValueError, match="mode"):
        _core.set_sgemm(3)


def _import_with(value):
    env = dict(os.environ, GEOMATCH_SGEMM=value)
    code = "import geomatch as gm; print(gm.get_sgemm()); gm.show_config()"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable():
    r = _import_with("blas")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "blas"
    assert "GEOMATCH_SGEMM=blas" in r.stdout
    r = _import_with("auto")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == ("avx512" if AVX512 else "blas")
    # a bad value does not make the import fail: one warning naming the
    # variable and the value, and the default stays in effect
    r = _import_with("turbo")
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" in r.stderr and "GEOMATCH_SGEMM" in r.stderr and "turbo" in r.stderr
    assert r.stdout.splitlines()[0] == ("avx512" if AVX512 else "blas")


def test_fma_peak():
    g256 = _core.fma_peak(256, iters=20000, reps=2)
    g512 = _core.fma_peak(512, iters=20000, reps=2)
    assert g256 is None or g256 > 0
    assert (g512 is not None) == AVX512
    with pytest.raises(ValueError, match="width"):
        _core.fma_peak(128)
    with pytest.raises(ValueError, match="iters"):
        _core.fma_peak(512, iters=0)
    gbf = _core.fma_peak(512, iters=20000, reps=2, kind="bf16")
    assert (gbf is not None) == bool(_core.bf16_supported())
    assert gbf is None or gbf > 0
    with pytest.raises(ValueError, match="kind"):
        _core.fma_peak(512, kind="fp8")
    with pytest.raises(ValueError, match="width"):
        _core.fma_peak(256, kind="bf16")


def test_limits_print_the_peaks_and_both_gemm_paths(capsys):
    from geomatch.testing import limits

    g = limits.fma_peak(256, threads=2, iters=20000, reps=1)
    assert g is None or g > 0
    assert (limits.fma_peak(512, threads=2, iters=20000, reps=1) is not None) == AVX512
    lim = {"sgemm_gflops": 200.0, "sgemm_kernel": "avx512", "blas_sgemm_gflops": 100.0,
           "numpy_sgemm_gflops": 110.0, "fma_peak_avx2_gflops": 125.0,
           "fma_peak_avx512_gflops": 250.0, "read_pass_s": 1e-4, "read_pass_median_s": 2e-4,
           "read_gbs": 75.0}
    limits.print_limits(lim)
    out = capsys.readouterr().out
    assert "200.0 GFLOP/s (geomatch nn_linear, avx512 kernel)" in out
    assert "100.0 GFLOP/s (geomatch nn_linear on BLAS)" in out
    assert "AVX2 125.0, AVX-512 250.0 GFLOP/s (sgemm at 80% of the AVX-512 peak)" in out
    assert "bf16" not in out
    limits.print_limits(dict(lim, bf16_peak_gflops=500.0))
    out = capsys.readouterr().out
    assert "bf16 VDPBF16PS peak 500.0 GFLOP/s (2.00x the AVX-512 float32 peak" in out
    g = limits.fma_peak(512, threads=2, iters=20000, reps=1, kind="bf16")
    assert (g is not None) == bool(_core.bf16_supported())

"""gm.argmax_2d and gm.window_soft_argmax against slow NumPy oracles."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import geomatch as gm
from geomatch.testing import reference


# explicit scans (first maximum; softmax over the clipped window)
oracle_argmax = reference.argmax_2d
oracle_soft = reference.window_soft_argmax


TOL = {np.float32: 2e-5, np.float64: 1e-11}


def maps(rng, lead, h, w, dtype):
    """Cosine-like maps in [-0.2, 0.8] rounded to float precision."""
    return (rng.random((*lead, h * w)) - 0.2).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead", [(1,), (4,), (2, 3)])
def test_argmax_matches_oracle(rng, dtype, lead):
    s = maps(rng, lead, 6, 9, dtype)
    out = gm.argmax_2d(s, (6, 9))
    assert out.dtype == np.int64 and out.shape == (*lead, 2)
    np.testing.assert_array_equal(out, oracle_argmax(s, (6, 9)))
    flat = np.argmax(s, axis=-1)
    np.testing.assert_array_equal(out[..., 0], flat % 9)
    np.testing.assert_array_equal(out[..., 1], flat // 9)


def test_argmax_ties_first_like_numpy():
    s = np.zeros((3, 12))
    s[0, [5, 7, 11]] = 1.0
    s[1, :] = 2.0
    s[2, [10, 3]] = -0.5
    s[2, :] -= 1
    out = gm.argmax_2d(s, (3, 4))
    np.testing.assert_array_equal(out, [[1, 1], [0, 0], [0, 0]])
    # a single 1-D map
    np.testing.assert_array_equal(gm.argmax_2d(np.arange(6.0), (2, 3)), [2, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead", [(1,), (5,), (2, 3)])
@pytest.mark.parametrize("window, temperature", [(7, 0.02), (1, 0.1), (0, 0.02), (3, 1.0)])
def test_soft_matches_oracle(rng, dtype, lead, window, temperature):
    h, w = 11, 13
    s = maps(rng, lead, h, w, dtype)
    out = gm.window_soft_argmax(s, (h, w), window=window, temperature=temperature)
    assert out.dtype == dtype and out.shape == (*lead, 2)
    np.testing.assert_allclose(out, oracle_soft(s, (h, w), window, temperature),
                               rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_borders_and_large_window(rng, dtype):
    h, w = 8, 10
    s = maps(rng, (6,), h, w, dtype)
    peaks = [0, w - 1, (h - 1) * w, h * w - 1, 3 * w, 5]   # corners and edges
    for k, p in enumerate(peaks):
        s[k, p] = 1.0
    for window in (2, 7, 100):
        out = gm.window_soft_argmax(s, (h, w), window=window, temperature=0.05)
        np.testing.assert_allclose(out, oracle_soft(s, (h, w), window, 0.05),
                                   rtol=0, atol=TOL[dtype])
        assert np.all(out[:, 0] >= 0) and np.all(out[:, 0] <= w - 1)
        assert np.all(out[:, 1] >= 0) and np.all(out[:, 1] <= h - 1)


def test_soft_window_zero_equals_argmax(rng):
    s = maps(rng, (20,), 7, 7, np.float64)
    np.testing.assert_array_equal(gm.window_soft_argmax(s, (7, 7), window=0),
                                  gm.argmax_2d(s, (7, 7)).astype(np.float64))


def test_soft_symmetric_peak_is_centered():
    # A peak with symmetric neighbours: expectation is exactly the peak.
    m = np.zeros((9, 9))
    m[4, 4] = 1.0
    m[3, 4] = m[5, 4] = m[4, 3] = m[4, 5] = 0.9
    out = gm.window_soft_argmax(m.reshape(1, -1), (9, 9), window=2, temperature=0.1)
    np.testing.assert_allclose(out, [[4.0, 4.0]], atol=1e-12)
    # a flat map at the top-left corner averages the clipped window
    out = gm.window_soft_argmax(np.ones((1, 25)), (5, 5), window=1)
    np.testing.assert_allclose(out, [[0.5, 0.5]], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_inputs(rng, dtype):
    big = maps(rng, (8, 3), 6, 8, dtype)          # (8, 3, 48)
    s = big[::2, 1]                                # (4, 48), non-contiguous
    assert not s.flags.c_contiguous
    np.testing.assert_allclose(gm.window_soft_argmax(s, (6, 8), window=2),
                               oracle_soft(s, (6, 8), 2, 0.02), atol=TOL[dtype])
    np.testing.assert_array_equal(gm.argmax_2d(s, (6, 8)), oracle_argmax(s, (6, 8)))
    r = big[:, :, ::-1]
    np.testing.assert_array_equal(gm.argmax_2d(r, (8, 6)), oracle_argmax(r, (8, 6)))


def test_threads_identical(rng, at_threads):
    s = maps(rng, (300,), 23, 29, np.float32)
    (a1, s1), (a2, s2) = at_threads(
        lambda: (gm.argmax_2d(s, (23, 29)), gm.window_soft_argmax(s, (23, 29))))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1, s2)


def test_tiny_temperature_no_nan():
    s = np.zeros((1, 16))
    s[0, 5] = 1.0
    s[0, 6] = 1.0 - 1e-12
    out = gm.window_soft_argmax(s, (4, 4), temperature=1e-300)
    np.testing.assert_array_equal(out, [[1.0, 1.0]])


GOOD = np.zeros((2, 12))


@pytest.mark.parametrize("call, exc, word", [
    (lambda: gm.window_soft_argmax(GOOD, (3, 3)), ValueError, "sim"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4, 1)), ValueError, "shape"),
    (lambda: gm.window_soft_argmax(GOOD, 12), TypeError, "shape"),
    (lambda: gm.window_soft_argmax(GOOD, (0, 4)), ValueError, "shape"),
    (lambda: gm.window_soft_argmax(GOOD, (3.0, 4)), TypeError, "shape"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), window=-1), ValueError, "window"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), window=1.5), TypeError, "window"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), temperature=0), ValueError, "temperature"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), temperature=-1.0), ValueError,
     "temperature"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), temperature=np.inf), ValueError,
     "temperature"),
    (lambda: gm.window_soft_argmax(GOOD, (3, 4), temperature="a"), TypeError,
     "temperature"),
    (lambda: gm.window_soft_argmax(GOOD.astype(np.int32), (3, 4)), TypeError, "sim"),
    (lambda: gm.window_soft_argmax(np.zeros((0, 12)), (3, 4)), ValueError, "sim"),
    (lambda: gm.window_soft_argmax(np.zeros(()), (1, 1)), ValueError, "sim"),
    (lambda: gm.argmax_2d(GOOD, (4, 4)), ValueError, "sim"),
    (lambda: gm.argmax_2d(GOOD, (3, -4)), ValueError, "shape"),
    (lambda: gm.argmax_2d(GOOD.astype(bool), (3, 4)), TypeError, "sim"),
    (lambda: gm.argmax_2d(np.zeros((3, 0)), (3, 4)), ValueError, "sim"),
])
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_named(bad, dtype):
    s = np.zeros((3, 12), dtype=dtype)
    s[2, 7] = bad
    with pytest.raises(ValueError, match="sim contains NaN"):
        gm.window_soft_argmax(s, (3, 4))
    with pytest.raises(ValueError, match="sim contains NaN"):
        gm.argmax_2d(s, (3, 4))


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4),
       window=st.integers(0, 10), temperature=st.floats(1e-3, 5.0),
       seed=st.integers(0, 2**31 - 1), f64=st.booleans(), levels=st.integers(2, 6))
def test_fuzz_against_oracle(h, w, k, window, temperature, seed, f64, levels):
    r = np.random.default_rng(seed)
    dtype = np.float64 if f64 else np.float32
    # few distinct levels => many ties
    s = (r.integers(0, levels, size=(k, h * w)) / levels).astype(dtype)
    np.testing.assert_array_equal(gm.argmax_2d(s, (h, w)), oracle_argmax(s, (h, w)))
    np.testing.assert_allclose(
        gm.window_soft_argmax(s, (h, w), window=window, temperature=temperature),
        oracle_soft(s, (h, w), window, temperature), rtol=0, atol=TOL[dtype])


def geoaware_soft_eval(sim, n, window, beta=0.02):
    """GeoAware-SC's soft evaluation re-derived in NumPy (square n x n grid):
    similarities outside the clipped window around the argmax are multiplied
    by 0 (kept in the softmax), softmax of (s - max) / beta over the whole
    map, expectation of linspace(-1, 1, n) coordinates, mapped back with
    (g + 1) * (n - 1) / 2."""
    out = []
    lin = np.linspace(-1, 1, n)
    for s in np.asarray(sim, dtype=np.float64):
        a = int(np.argmax(s))
        ay, ax = divmod(a, n)
        mask = np.zeros((n, n))
        offs = np.arange(-window, window + 1)
        ys = np.clip(ay + offs, 0, n - 1)
        xs = np.clip(ax + offs, 0, n - 1)
        mask[np.ix_(ys, xs)] = 1
        m = s.reshape(n, n) * mask
        e = np.exp((m - m.max()) / beta)
        p = e / e.sum()
        gx = (p.sum(axis=0) * lin).sum()
        gy = (p.sum(axis=1) * lin).sum()
        out.append(((gx + 1) * (n - 1) / 2, (gy + 1) * (n - 1) / 2))
    return np.array(out)


def test_agrees_with_geoaware_convention(rng):
    # Cosine-like maps whose maximum is clearly positive (the realistic case):
    # excluding vs zeroing the outside cells differs by < n^2 exp(-smax/beta).
    n = 15
    s = rng.random((10, n * n)) * 0.3 + 0.2
    s[np.arange(10), rng.integers(0, n * n, 10)] = 0.9
    ours = gm.window_soft_argmax(s, (n, n), window=3, temperature=0.02)
    np.testing.assert_allclose(ours, geoaware_soft_eval(s, n, 3), atol=1e-9)


def test_threads_identical_parallel_path(rng, at_threads):
    # 1200 maps of 50 x 70: above the size from which maps go to OpenMP threads.
    s = rng.random((1200, 50 * 70))
    (a1, s1), (a2, s2) = at_threads(
        lambda: (gm.argmax_2d(s, (50, 70)), gm.window_soft_argmax(s, (50, 70))))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1, s2)
    flat = np.argmax(s, axis=1)
    np.testing.assert_array_equal(a2, np.stack([flat % 70, flat // 70], axis=1))
    idx = [0, 599, 1199]
    np.testing.assert_allclose(s2[idx], oracle_soft(s[idx], (50, 70), 7, 0.02), atol=1e-11)

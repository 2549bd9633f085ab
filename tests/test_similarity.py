"""gm.cosine_similarity against a slow NumPy oracle."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import geomatch as gm
from geomatch.testing import reference


# loop-based cosine similarity in float64; zero rows give 0
oracle = reference.cosine_similarity


TOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 2)])
def test_matches_oracle(rng, dtype, batch):
    x = rng.standard_normal((*batch, 7, 12)).astype(dtype)
    y = rng.standard_normal((*batch, 5, 12)).astype(dtype)
    s = gm.cosine_similarity(x, y)
    assert s.dtype == dtype and s.shape == (*batch, 7, 5)
    np.testing.assert_allclose(s, oracle(x, y), rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_inputs(rng, dtype):
    big_x = rng.standard_normal((3, 14, 30)).astype(dtype)
    big_y = rng.standard_normal((3, 9, 20)).astype(dtype)
    x = big_x[:, ::2, 1::2]          # (3, 7, 15), non-contiguous
    y = big_y[::-1, :, :15]          # (3, 9, 15), negative batch stride
    assert not x.flags.c_contiguous and not y.flags.c_contiguous
    np.testing.assert_allclose(gm.cosine_similarity(x, y), oracle(x, y), rtol=0,
                               atol=TOL[dtype])
    xt = np.asfortranarray(big_x[0])
    np.testing.assert_allclose(gm.cosine_similarity(xt, big_x[1]),
                               oracle(xt, big_x[1]), rtol=0, atol=TOL[dtype])


def test_mixed_and_promoted_dtypes(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.standard_normal((3, 6))
    assert gm.cosine_similarity(x, y).dtype == np.float64
    assert gm.cosine_similarity(x.astype(np.float16), x).dtype == np.float32
    s = gm.cosine_similarity(x.tolist(), x.astype(np.float32))
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_vectors_give_zero(rng, dtype):
    x = rng.standard_normal((4, 8)).astype(dtype)
    y = rng.standard_normal((5, 8)).astype(dtype)
    x[2] = 0
    y[0] = 0
    s = gm.cosine_similarity(x, y)
    assert np.all(np.isfinite(s))
    assert np.all(s[2] == 0) and np.all(s[:, 0] == 0)
    np.testing.assert_allclose(s, oracle(x, y), atol=TOL[dtype])


def test_known_values():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    y = np.array([[3.0, 0.0], [0.0, 0.5]])
    expected = np.array([[1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)], [-1.0, 0.0]])
    np.testing.assert_allclose(gm.cosine_similarity(x, y), expected, atol=1e-15)


def test_extreme_magnitudes_float64():
    x = np.array([[3e200, 4e200], [3e-200, 4e-200]])
    y = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(gm.cosine_similarity(x, y)[:, 0], [0.6, 0.6], rtol=1e-14)
    xf = np.array([[3e38, 3e38]], dtype=np.float32)
    np.testing.assert_allclose(gm.cosine_similarity(xf, xf), [[1.0]], rtol=1e-6)


def test_threads_identical(rng, at_threads):
    x = rng.standard_normal((2, 150, 64)).astype(np.float32)
    y = rng.standard_normal((2, 170, 64)).astype(np.float32)
    s1, s2 = at_threads(lambda: gm.cosine_similarity(x, y))
    np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("x, y, exc, word", [
    (np.ones(3), np.ones((2, 3)), ValueError, "x"),
    (np.ones((2, 3)), np.ones(3), ValueError, "y"),
    (np.ones((2, 3)), np.ones((2, 4)), ValueError, "feature size"),
    (np.ones((2, 2, 3)), np.ones((3, 2, 3)), ValueError, "batch"),
    (np.ones((2, 2, 3)), np.ones((2, 3)), ValueError, "batch"),
    (np.ones((0, 3)), np.ones((2, 3)), ValueError, "x"),
    (np.ones((2, 3)), np.ones((2, 0)), ValueError, "y"),
    (np.ones((2, 3), dtype=int), np.ones((2, 3)), TypeError, "x"),
    (np.ones((2, 3)), np.ones((2, 3), dtype=complex), TypeError, "y"),
    (np.ones((2, 3)), "abc", TypeError, "y"),
])
def test_bad_input(x, y, exc, word):
    with pytest.raises(exc, match=word):
        gm.cosine_similarity(x, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_named(bad, dtype):
    x = np.ones((3, 4), dtype=dtype)
    y = np.ones((2, 4), dtype=dtype)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x contains NaN"):
        gm.cosine_similarity(x, y)
    with pytest.raises(ValueError, match="y contains NaN"):
        gm.cosine_similarity(y, x)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), d=st.integers(1, 9),
       b=st.integers(0, 2), seed=st.integers(0, 2**31 - 1),
       f64=st.booleans(), zero_frac=st.floats(0, 0.5))
def test_fuzz_against_oracle(n, m, d, b, seed, f64, zero_frac):
    r = np.random.default_rng(seed)
    dtype = np.float64 if f64 else np.float32
    batch = (b,) if b else ()
    x = r.standard_normal((*batch, n, d)).astype(dtype)
    y = r.standard_normal((*batch, m, d)).astype(dtype)
    x[r.random(x.shape[:-1]) < zero_frac] = 0
    y[r.random(y.shape[:-1]) < zero_frac] = 0
    s = gm.cosine_similarity(x, y)
    np.testing.assert_allclose(s, oracle(x, y), rtol=0, atol=TOL[dtype])


def test_threads_identical_parallel_path(rng, at_threads):
    # 4100 x 1024 values: above the size from which rows are normalized on
    # OpenMP threads; spot-check rows against the oracle.
    x = rng.standard_normal((4100, 1024)).astype(np.float32)
    y = rng.standard_normal((6, 1024)).astype(np.float32)
    x[17] = 0
    s1, s2 = at_threads(lambda: gm.cosine_similarity(x, y))
    np.testing.assert_array_equal(s1, s2)
    rows = [0, 17, 2048, 4099]
    np.testing.assert_allclose(s2[rows], oracle(x[rows], y), atol=2e-6)

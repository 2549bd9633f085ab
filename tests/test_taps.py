"""PyTorch's align_corners=False bilinear taps: ``ops.upsampled.linear_taps``
(the upsample-argmax map) and ``ops.resample.grid_to_image`` (label maps) share
one tap builder (``ops.resample.bilinear_taps``); both against the plain
per-sample oracle of ``geomatch.testing.reference``."""
import numpy as np
import pytest

from geomatch.ops.resample import grid_to_image
from geomatch.ops.upsampled import linear_taps
from geomatch.testing.reference import resize_matrix

SIZES = [(1, 1), (1, 7), (2, 2), (3, 1), (5, 17), (7, 3), (16, 16), (37, 500), (60, 853)]


def _matrix(i0, i1, w1, n_in):
    m = np.zeros((len(i0), n_in))
    rows = np.arange(len(i0))
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


@pytest.mark.parametrize("n_in, n_out", SIZES)
def test_linear_taps_match_the_oracle(n_in, n_out):
    i0, i1, w1 = linear_taps(n_in, n_out)
    assert i0.dtype == i1.dtype == np.int64 and w1.dtype == np.float64
    assert np.all((0 <= i0) & (i0 <= i1) & (i1 < n_in)) and np.all((0 <= w1) & (w1 < 1))
    np.testing.assert_allclose(_matrix(i0, i1, w1, n_in), resize_matrix(n_in, n_out),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_in, n_out", SIZES)
def test_grid_to_image_taps_match_the_oracle(n_in, n_out):
    t = grid_to_image(n_out, n_in)
    np.testing.assert_allclose(t.matrix(), resize_matrix(n_in, n_out), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(t.w0 + t.w1, np.ones(n_out))


def test_linear_taps_clamp_both_ends():
    # upsampling 2 -> 8: the first outputs clamp to sample 0 (weight 0 on the
    # next), the last ones read only the last sample
    i0, i1, w1 = linear_taps(2, 8)
    np.testing.assert_array_equal(i0, [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(i1, [1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(w1, [0, 0, 0.125, 0.375, 0.625, 0.875, 0, 0])
    # downsampling 7 -> 3: sources 2/3, 3 and 16/3
    i0, i1, w1 = linear_taps(7, 3)
    np.testing.assert_array_equal(i0, [0, 3, 5])
    np.testing.assert_array_equal(i1, [1, 4, 6])
    np.testing.assert_allclose(w1, [2 / 3, 0, 1 / 3], rtol=0, atol=1e-15)

"""The backbone's attention kernels (``_core.nn_attention``): the fused float32
kernel (head dimension 64, AVX-512) and the tiled BLAS kernel, against the
float64 NumPy reference of ``geomatch.testing.reference.attention``."""
import numpy as np
import pytest

import geomatch as gm
from geomatch import _core
from geomatch.testing.reference import attention as ref_attention

FUSED = _core.nn_attention_fused_supported()
needs_fused = pytest.mark.skipif(not FUSED, reason="the fused kernel needs an AVX-512 CPU")


@pytest.fixture
def restore_threads():
    before = gm.get_num_threads()
    yield
    gm.set_num_threads(before)


def _qkv(batch, n, heads, hd, seed, grow=0.0):
    """Random qkv; with ``grow`` > 0 the keys' scale grows along the sequence,
    so the running maximum of a row's scores rises from block to block."""
    rng = np.random.default_rng(seed)
    qkv = 2 * rng.standard_normal((batch, n, 3 * heads * hd))
    d = heads * hd
    qkv[:, :, d:2 * d] *= (1 + grow * np.arange(n))[None, :, None]
    return qkv.astype(np.float32)


@needs_fused
@pytest.mark.parametrize("batch,n,heads", [(1, 1, 1), (1, 5, 2), (2, 63, 3), (1, 64, 1),
                                           (2, 65, 2), (1, 131, 3), (3, 257, 2), (1, 385, 6)])
@pytest.mark.parametrize("grow", [0.0, 0.05])
def test_fused_matches_reference_and_threads(restore_threads, batch, n, heads, grow):
    qkv = _qkv(batch, n, heads, 64, n, grow)
    want = ref_attention(qkv, heads)
    outs = []
    for t in (1, 2, 3):
        gm.set_num_threads(t)
        outs.append(_core.nn_attention(qkv, heads, kernel="fused"))
    tol = 2e-5 * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(outs[0], want, rtol=0, atol=tol)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # the default picks the fused kernel; the tiled one agrees to float32 tolerance
    np.testing.assert_array_equal(_core.nn_attention(qkv, heads), outs[1])
    np.testing.assert_allclose(_core.nn_attention(qkv, heads, kernel="tiled"), want, rtol=0,
                               atol=tol)
    # one image without its batch axis is the first image of the batch
    np.testing.assert_array_equal(_core.nn_attention(qkv[0], heads, kernel="fused"), outs[0][0])


@needs_fused
def test_fused_row_independent_of_position():
    """A row's result depends on its own query only, not on which tile holds it."""
    qkv = _qkv(1, 200, 2, 64, 7)
    full = _core.nn_attention(qkv, 2, kernel="fused")
    rolled = qkv.copy()
    d = 2 * 64
    rolled[0, :, :d] = np.roll(qkv[0, :, :d], 5, axis=0)  # queries only: same keys
    np.testing.assert_array_equal(_core.nn_attention(rolled, 2, kernel="fused")[0],
                                  np.roll(full[0], 5, axis=0))


@needs_fused
def test_fused_strided_input_and_out():
    qkv = _qkv(2, 70, 2, 64, 3)
    want = _core.nn_attention(qkv, 2, kernel="fused")
    wide = np.zeros((2, 70, 2 * qkv.shape[2]), np.float32)
    wide[:, :, ::2] = qkv
    np.testing.assert_array_equal(_core.nn_attention(wide[:, :, ::2], 2, kernel="fused"), want)
    out = np.full_like(want, np.nan)
    assert _core.nn_attention(qkv, 2, out=out, kernel="fused") is out
    np.testing.assert_array_equal(out, want)


@needs_fused
def test_fused_nan_stays_in_its_row():
    qkv = _qkv(1, 70, 2, 64, 5)
    qkv[0, 9, 3] = np.nan  # one query value of head 0, row 9
    out = _core.nn_attention(qkv, 2, kernel="fused")
    assert np.isnan(out[0, 9, :64]).all()
    assert np.isfinite(np.delete(out[0], 9, axis=0)).all() and np.isfinite(out[0, 9, 64:]).all()


def test_kernel_argument():
    qkv = _qkv(1, 20, 2, 64, 1)
    with pytest.raises(ValueError, match="kernel must be"):
        _core.nn_attention(qkv, 2, kernel="flash")
    with pytest.raises(ValueError, match="head dimension 64"):
        _core.nn_attention(_qkv(1, 20, 4, 32, 1), 4, kernel="fused")
    with pytest.raises(ValueError, match="float32"):
        _core.nn_attention(qkv.astype(np.float64), 2, kernel="fused")
    if not FUSED:
        with pytest.raises(ValueError, match="AVX-512"):
            _core.nn_attention(qkv, 2, kernel="fused")
    # where the fused kernel does not apply, auto is the tiled kernel
    q32 = _qkv(1, 20, 4, 32, 1)
    np.testing.assert_array_equal(_core.nn_attention(q32, 4),
                                  _core.nn_attention(q32, 4, kernel="tiled"))
    q64 = qkv.astype(np.float64)
    np.testing.assert_allclose(_core.nn_attention(q64, 2), ref_attention(q64, 2), rtol=1e-12,
                               atol=1e-12)

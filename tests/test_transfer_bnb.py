"""The exact branch and bound of upsample-argmax transfer, its group form and
the float16 loader.

The C kernel skips grid cells whose bound cannot reach the best value found
so far (csrc/gm_transfer_tpl.h).  Checked here: bit for bit the exhaustive
scan of every pixel (``full_scan=True``, the kernel's previous algorithm,
kept for keypoints the bounds do not prune) on adversarial inputs -- ties,
constant maps, zero vectors, border keypoints, 1x1 / 1xN / Nx1 grids,
images smaller than the grid, tiny and huge scales, float32 and float64,
strided inputs -- and against the independent float64 NumPy oracle
(upsample, normalize, argmax; ties within float tolerance).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geomatch as gm
from geomatch import _core
from geomatch.testing import reference

from test_transfer import TOL, check_against_oracle


def _features(rng, kind, h, w, d, dtype):
    if kind == "normal":
        f = rng.standard_normal((h, w, d))
    elif kind == "smooth":           # neighbours correlated, as in DINOv2 maps
        f = np.cumsum(np.cumsum(rng.standard_normal((h, w, d)), 0), 1)
    elif kind == "shared":           # the bench_eval maps: shared base + noise
        f = 0.7 * rng.standard_normal((1, 1, d)) + rng.standard_normal((h, w, d))
    elif kind == "integer":          # many exact ties
        f = rng.integers(-1, 2, (h, w, d)).astype(float)
    elif kind == "constant":         # every pixel ties
        f = np.broadcast_to(rng.standard_normal(d), (h, w, d)).copy()
    elif kind == "zeros":            # blocks of zero vectors (cosine 0)
        f = rng.standard_normal((h, w, d))
        f[rng.random((h, w)) < 0.5] = 0.0
    elif kind == "allzero":
        f = np.zeros((h, w, d))
    elif kind == "negative":         # every cosine negative
        f = -np.abs(rng.standard_normal((h, w, d)))
    elif kind == "tiny":
        f = rng.standard_normal((h, w, d)) * 1e-17
    else:                            # huge
        f = rng.standard_normal((h, w, d)) * 1e15
    return f.astype(dtype)


def _both(sf, tf, kps, ss, ts):
    a = _core.transfer_upsample_argmax(sf, tf, kps, np.asarray(ss), np.asarray(ts))
    b = _core.transfer_upsample_argmax(sf, tf, kps, np.asarray(ss), np.asarray(ts),
                                       full_scan=True)
    return a, b


KINDS = ["normal", "smooth", "shared", "integer", "constant", "zeros", "allzero",
         "negative", "tiny", "huge"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS),
                  src_kind=st.sampled_from(["normal", "smooth", "negative"]),
                  hs=st.integers(1, 9), ws=st.integers(1, 9), ht=st.integers(1, 9),
                  wt=st.integers(1, 9), d=st.sampled_from([1, 3, 16, 17, 40]),
                  W=st.integers(1, 70), H=st.integers(1, 70), k=st.integers(1, 6),
                  f64=st.booleans(), border=st.booleans())
def test_branch_and_bound_is_the_full_scan(seed, kind, src_kind, hs, ws, ht, wt, d, W, H, k,
                                           f64, border):
    dtype = np.float64 if f64 else np.float32
    rng = np.random.default_rng(seed)
    sf = _features(rng, src_kind, hs, ws, d, dtype)
    tf = _features(rng, kind, ht, wt, d, dtype)
    Ws, Hs = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    kps = np.stack([rng.uniform(0, Ws, k), rng.uniform(0, Hs, k)], 1)
    if border:                       # first and last pixels, and pixel corners
        kps[0] = (0, 0)
        kps[-1] = (np.nextafter(Ws, 0), np.nextafter(Hs, 0))
    kps = np.minimum(kps.astype(dtype), np.array([Ws, Hs], dtype) * (1 - 1e-6))
    a, b = _both(sf, tf, kps, (Ws, Hs), (W, H))
    np.testing.assert_array_equal(a, b)
    if kind not in ("tiny", "huge"):
        check_against_oracle(a, sf, tf, kps, (Ws, Hs), (W, H), TOL[dtype])


@pytest.mark.parametrize("shape", [(1, 1), (1, 12), (12, 1), (2, 30), (37, 37)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grids_and_oracle(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    for kind in ("normal", "shared", "smooth", "integer", "zeros"):
        sf = _features(rng, "normal", *shape, 24, dtype)
        tf = _features(rng, kind, *shape, 24, dtype)
        ss, ts = (61, 47), (53, 71)
        kps = np.stack([rng.uniform(0, ss[0], 6), rng.uniform(0, ss[1], 6)], 1).astype(dtype)
        a, b = _both(sf, tf, kps, ss, ts)
        np.testing.assert_array_equal(a, b)
        check_against_oracle(a, sf, tf, kps, ss, ts, TOL[dtype])


def test_images_smaller_than_the_grid():
    """Downsampling: some grid cells own no pixel and are never candidates."""
    rng = np.random.default_rng(3)
    sf = _features(rng, "normal", 9, 11, 16, np.float32)
    tf = _features(rng, "shared", 9, 11, 16, np.float32)
    kps = np.array([[0.5, 0.5], [3.2, 2.9], [4.9, 3.9]], np.float32)
    for ts in [(4, 3), (1, 1), (11, 2), (5, 9)]:
        a, b = _both(sf, tf, kps, (5, 4), ts)
        np.testing.assert_array_equal(a, b)
        check_against_oracle(a, sf, tf, kps, (5, 4), ts, TOL[np.float32])


def test_strided_inputs_and_threads_spair_sized():
    """SPair-sized pairs (the bench_eval features, where the bound prunes, and
    smooth ones, where it does not): 1 and 2 threads, strided and contiguous
    inputs, branch and bound and full scan -- all bit for bit equal."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((37, 37, 96)).astype(np.float32)
    big = np.empty((2, 37, 37, 192), np.float32)
    big[..., ::2] = 0.7 * base + rng.standard_normal((2, 37, 37, 96), dtype=np.float32)
    big[1, ..., ::2] = np.cumsum(big[1, ..., ::2], axis=1) / 6
    sf, tf = big[0, ..., ::2], big[1, ..., ::2]       # strided along D
    kps = np.stack([rng.uniform(0, 500, 12), rng.uniform(0, 375, 12)], 1).astype(np.float32)
    outs = []
    try:
        for threads in (1, 2):
            gm.set_num_threads(threads)
            for tgt in (tf, big[0, ..., ::2]):
                a, b = _both(sf, tgt, kps, (500, 375), (480, 360))
                c = gm.transfer_keypoints(np.ascontiguousarray(sf), np.ascontiguousarray(tgt),
                                          kps, (500, 375), (480, 360))
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(a, c)
                outs.append(a)
    finally:
        gm.set_num_threads(2)
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])


def test_check_src_false_same_result_default_still_checks():
    rng = np.random.default_rng(4)
    sf = _features(rng, "normal", 5, 6, 8, np.float32)
    tf = _features(rng, "shared", 6, 5, 8, np.float32)
    kps = np.array([[1.0, 2.0], [30.5, 20.25]], np.float32)
    a = _core.transfer_upsample_argmax(sf, tf, kps, np.array([40, 30]), np.array([50, 60]))
    b = _core.transfer_upsample_argmax(sf, tf, kps, np.array([40, 30]), np.array([50, 60]),
                                       check_src=False)
    np.testing.assert_array_equal(a, b)
    bad = sf.copy()
    bad[4, 5, 7] = np.nan               # far from both keypoints
    with pytest.raises(ValueError, match="src_feat"):
        _core.transfer_upsample_argmax(bad, tf, kps, np.array([40, 30]), np.array([50, 60]))


# --------------------------------------------------------------------------
# transfer_upsample_argmax_group: pairs sharing a target
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_is_per_pair(dtype):
    rng = np.random.default_rng(8)
    tf = _features(rng, "shared", 7, 6, 20, dtype)
    srcs, kpss, sizes = [], [], []
    for p, k in enumerate([3, 0, 5, 1, 4]):
        srcs.append(_features(rng, "normal" if p % 2 else "smooth", 5, 4, 20, dtype))
        size = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
        kpss.append(np.stack([rng.uniform(0, size[0], k), rng.uniform(0, size[1], k)],
                             1).astype(dtype))
        sizes.append(size)
    try:
        for threads in (1, 2):
            gm.set_num_threads(threads)
            outs = _core.transfer_upsample_argmax_group(srcs, kpss, np.array(sizes), tf,
                                                        np.array([45, 33]))
            full = _core.transfer_upsample_argmax_group(srcs, kpss, np.array(sizes), tf,
                                                        np.array([45, 33]), full_scan=True)
            assert len(outs) == len(srcs) == len(full)
            for s, kp, size, out, fo in zip(srcs, kpss, sizes, outs, full):
                one = _core.transfer_upsample_argmax(s, tf, kp, np.array(size),
                                                     np.array([45, 33]))
                one_full = _core.transfer_upsample_argmax(s, tf, kp, np.array(size),
                                                          np.array([45, 33]), full_scan=True)
                assert out.dtype == dtype and out.shape == (len(kp), 2)
                np.testing.assert_array_equal(out, one)
                np.testing.assert_array_equal(fo, one_full)
                np.testing.assert_array_equal(fo, out)
    finally:
        gm.set_num_threads(2)


def test_group_errors():
    rng = np.random.default_rng(9)
    tf = _features(rng, "normal", 4, 4, 8, np.float32)
    sf = _features(rng, "normal", 3, 3, 8, np.float32)
    kp = np.array([[1.0, 1.0]], np.float32)
    grp = _core.transfer_upsample_argmax_group
    with pytest.raises(ValueError, match="same length"):
        grp([sf], [kp, kp], np.array([[9, 9]]), tf, np.array([9, 9]))
    with pytest.raises(ValueError, match="src_sizes"):
        grp([sf], [kp], np.array([9, 9]), tf, np.array([9, 9]))
    with pytest.raises(ValueError, match="same grid"):
        grp([sf, sf[:2]], [kp, kp], np.array([[9, 9], [9, 9]]), tf, np.array([9, 9]))
    with pytest.raises(ValueError, match="src_kps"):
        grp([sf], [np.array([[12.0, 1.0]], np.float32)], np.array([[9, 9]]), tf,
            np.array([9, 9]))
    bad = sf.copy()
    bad[2, 2, 0] = np.inf               # a cell the keypoint (1, 1) does not use
    with pytest.raises(ValueError, match="src_feat"):
        grp([sf, bad], [kp, kp], np.array([[9, 9], [9, 9]]), tf, np.array([9, 9]))
    np.testing.assert_array_equal(
        grp([sf, bad], [kp, kp], np.array([[9, 9], [9, 9]]), tf, np.array([9, 9]),
            check_src=False)[0],
        _core.transfer_upsample_argmax(sf, tf, kp, np.array([9, 9]), np.array([9, 9])))
    bad[0, 0, 0] = np.inf               # a cell it uses: an error, never a silent NaN
    with pytest.raises((ValueError, FloatingPointError)):
        grp([bad], [kp], np.array([[9, 9]]), tf, np.array([9, 9]), check_src=False)
    assert grp([], [], np.zeros((0, 2), np.int64), tf, np.array([9, 9])) == []


# --------------------------------------------------------------------------
# float16 -> float32 loader
# --------------------------------------------------------------------------

def test_f16_to_f32_every_bit_pattern():
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    out = np.empty(65536, np.float32)
    assert _core.f16_to_f32(x, out) is False          # infinities and NaNs among them
    ref = x.astype(np.float32)                         # NumPy's cast, exact
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    finite = x[np.isfinite(x)].reshape(-1, 8)[:, :5]          # a strided view
    out = np.empty(finite.shape, np.float32)
    assert _core.f16_to_f32(np.ascontiguousarray(finite), out) is True
    np.testing.assert_array_equal(out, finite.astype(np.float32))


def test_f16_to_f32_errors():
    x = np.zeros((3, 4), np.float16)
    with pytest.raises(TypeError, match="src"):
        _core.f16_to_f32(x.astype(np.float32), np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="src"):
        _core.f16_to_f32(x[:, ::2], np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="out"):
        _core.f16_to_f32(x, np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match="as many"):
        _core.f16_to_f32(x, np.empty((3, 5), np.float32))
    ro = np.empty((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="out"):
        _core.f16_to_f32(x, ro)


def test_f16_to_f32_lengths_and_offsets():
    """Every length 0..70 at every start offset 0..3 (the 16-value vector
    blocks, their tail, unaligned starts), finite values incl. subnormals,
    and one NaN / infinity at each position: NumPy's cast bit for bit."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 0x7c00, 80).astype(np.uint16) | \
        (rng.integers(0, 2, 80).astype(np.uint16) << 15)
    bits[::7] &= 0x83ff                                  # subnormals and zeros
    for off in range(4):
        for n in range(71):
            x = bits.view(np.float16)[off:off + n]
            if len(x) < n:
                continue
            out = np.full(n, 7.0, np.float32)
            assert _core.f16_to_f32(x, out) is True
            np.testing.assert_array_equal(out.view(np.uint32), x.astype(np.float32).view(np.uint32))
            assert _core.f16_all_finite(x) is True
            for pos in {0, n // 2, n - 1} if n else ():
                for special in (0x7e01, 0xfc00, 0x7c01):  # quiet NaN, -inf, signalling NaN
                    y = x.copy()
                    y.view(np.uint16)[pos] = special
                    out = np.empty(n, np.float32)
                    assert _core.f16_to_f32(y, out) is False
                    np.testing.assert_array_equal(out.view(np.uint32),
                                                  y.astype(np.float32).view(np.uint32))
                    assert _core.f16_all_finite(y) is False


def test_f16_all_finite_every_bit_pattern():
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    ok = np.isfinite(x)
    for i in np.flatnonzero(~ok)[::37]:
        y = np.zeros(33, np.float16)
        y[i % 33] = x[i]
        assert _core.f16_all_finite(y) is False
    assert _core.f16_all_finite(np.ascontiguousarray(x[ok])) is True
    with pytest.raises(TypeError, match="src"):
        _core.f16_all_finite(np.zeros(4, np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_group_float16_maps_are_the_float32_maps(threads):
    """float16 maps go to the kernel as they are (the target converted once
    into ``work`` or a buffer of the kernel's, four source vectors per
    keypoint): every prediction bit for bit that of the float32 maps, with
    and without the bounds."""
    rng = np.random.default_rng(7)
    grp = _core.transfer_upsample_argmax_group
    old = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        for trial in range(24):
            h, w = (int(v) for v in rng.integers(1, 14, 2))
            d = int(rng.choice([1, 16, 37, 100, 385]))
            n = int(rng.integers(1, 5))
            kind = ["normal", "smooth", "shared"][trial % 3]
            maps = [_features(rng, kind, h, w, d, np.float32).astype(np.float16)
                    for _ in range(n + 1)]
            ss = rng.integers(1, 300, (n, 2))
            kps = [np.stack([rng.uniform(0, s[0], k), rng.uniform(0, s[1], k)], 1)
                   .astype(np.float32) for s, k in zip(ss, rng.integers(0, 12, n))]
            kps = [np.minimum(k, (s - 1e-3).astype(np.float32)) for k, s in zip(kps, ss)]
            ts = rng.integers(1, 300, 2)
            work = np.full(maps[0].size + 3, np.nan, np.float32) if trial % 2 else None
            for full in (False, True):
                a = grp(maps[1:], kps, ss, maps[0], ts, full_scan=full, work=work)
                b = grp([m.astype(np.float32) for m in maps[1:]], kps, ss,
                        maps[0].astype(np.float32), ts, full_scan=full)
                for x, y in zip(a, b):
                    assert x.dtype == np.float32
                    np.testing.assert_array_equal(x, y)
    finally:
        gm.set_num_threads(old)


def test_group_float16_errors():
    grp = _core.transfer_upsample_argmax_group
    t = np.ones((3, 3, 16), np.float16)
    bad = t.copy()
    bad[2, 2, 15] = np.inf                         # far from keypoint (0, 0)'s vectors
    kp = [np.zeros((1, 2), np.float32)]
    with pytest.raises(ValueError, match="source map of pair 0"):
        grp([bad], kp, np.array([[9, 9]]), t, np.array([9, 9]))
    out = grp([bad], kp, np.array([[9, 9]]), t, np.array([9, 9]), check_src=False)
    assert out[0].shape == (1, 2)                  # the caller vouched for the map
    with pytest.raises(ValueError, match="trg_feat"):
        grp([t], kp, np.array([[9, 9]]), bad, np.array([9, 9]))
    with pytest.raises(ValueError, match="work"):
        grp([t], kp, np.array([[9, 9]]), t, np.array([9, 9]), work=np.empty(10, np.float32))
    with pytest.raises(TypeError, match="work"):
        grp([t], kp, np.array([[9, 9]]), t, np.array([9, 9]), work=np.empty(144))
    # float64 keypoints: the float64 path on converted maps (no work needed)
    out = grp([t], [np.zeros((1, 2))], np.array([[9, 9]]), t, np.array([9, 9]))
    assert out[0].dtype == np.float64


def test_reference_oracle_is_independent():
    """The oracle used above builds the upsampled maps explicitly."""
    f = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    up = reference.upsample_bilinear(f, 3, 2)
    np.testing.assert_array_equal(up, f)               # same size: identity




@pytest.mark.parametrize("mode", ["blas", "avx512"])
def test_group_is_per_pair_each_gemm(mode):
    """float32 grid dots come from geomatch's AVX-512 GEMM when it is in use
    and from gm_tr_dot8 otherwise: in both, groups equal single pairs, branch
    and bound equals the full scan, for 1 and 2 threads."""
    from geomatch import _core as core
    from geomatch.runtime.config import _SGEMM_MODES

    prev = _SGEMM_MODES[core.get_sgemm()[0]]
    try:
        gm.set_sgemm(mode)
    except ValueError:
        pytest.skip("no AVX-512 on this CPU")
    try:
        test_group_is_per_pair(np.float32)
    finally:
        gm.set_sgemm(prev)


# --------------------------------------------------------------------------
# float32 grid dots: the map read in place (sgemm_abt) = the packed GEMM
# (the GEMM's values themselves: tests/test_sgemm.py)
# --------------------------------------------------------------------------

def _avx512_or_skip():
    from geomatch.runtime.config import _SGEMM_MODES
    prev = _SGEMM_MODES[_core.get_sgemm()[0]]
    try:
        gm.set_sgemm("avx512")
    except ValueError:
        pytest.skip("no AVX-512 on this CPU")
    return prev


@pytest.mark.parametrize("d", [768, 100, 385, 1000])
def test_grid_dots_in_place_same_predictions_as_packed_gemm(d):
    """Predictions of the float32 transfer with the grid dots read in place
    (default) and through the packed GEMM (packed_gemm=True, the previous
    path): bit for bit, per pair and grouped (float32 and float16 maps),
    branch and bound and full scan, for 1..100 keypoints, small and
    SPair-sized grids, 1 and 2 threads."""
    prev = _avx512_or_skip()
    rng = np.random.default_rng(d)
    try:
        for (ht, wt), kind in (((5, 7), "smooth"), ((37, 37), "shared"), ((2, 1), "normal")):
            tf = _features(rng, kind, ht, wt, d, np.float32)
            sf = _features(rng, kind, 6, 5, d, np.float32)
            ts, ss = np.array([51, 44]), np.array([30, 41])
            for nk in (1, 15, 16, 17, 31, 32, 33, 80, 100):
                kps = np.stack([rng.uniform(0, 30, nk), rng.uniform(0, 41, nk)],
                               1).astype(np.float32)
                for threads in (1, 2):
                    gm.set_num_threads(threads)
                    for full in (False, True):
                        a = _core.transfer_upsample_argmax(sf, tf, kps, ss, ts, full_scan=full)
                        b = _core.transfer_upsample_argmax(sf, tf, kps, ss, ts, full_scan=full,
                                                           packed_gemm=True)
                        np.testing.assert_array_equal(a, b)
                    cut = nk // 3
                    grp = [_core.transfer_upsample_argmax_group(
                        [sf, sf], [kps[:cut], kps[cut:]], np.array([ss, ss]), tf, ts,
                        packed_gemm=packed) for packed in (False, True)]
                    for x, y, part in zip(grp[0], grp[1], (kps[:cut], kps[cut:])):
                        np.testing.assert_array_equal(x, y)
                        if len(part):
                            np.testing.assert_array_equal(
                                x, _core.transfer_upsample_argmax(sf, tf, part, ss, ts))
                    np.testing.assert_array_equal(np.concatenate(grp[0]), a)
                    # float16 maps (the evaluation's path: the target converted into work)
                    h16 = [_core.transfer_upsample_argmax_group(
                        [sf.astype(np.float16)], [kps], np.array([ss]), tf.astype(np.float16),
                        ts, work=np.empty(tf.size, np.float32), packed_gemm=packed)[0]
                        for packed in (False, True)]
                    np.testing.assert_array_equal(h16[0], h16[1])
    finally:
        gm.set_num_threads(2)
        gm.set_sgemm(prev)

"""Tests of gm.transfer_keypoints against slow, literal NumPy oracles.

The upsample-argmax oracle builds both upsampled maps explicitly (bilinear,
align_corners=False, written here from PyTorch's documented rule) and takes
the cosine argmax over every target pixel.  Where the predicted pixel differs
from the oracle's, the two must be a float tie: the oracle similarity at the
predicted pixel must equal the oracle maximum within a small tolerance.
"""
import math

import numpy as np
import pytest

import geomatch as gm
from geomatch.testing import reference

TOL = {np.float32: 2e-5, np.float64: 1e-11}


# --------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------

resize_taps = reference.resize_taps          # PyTorch's align_corners=False taps
upsample_oracle = reference.upsample_bilinear  # pixel by pixel, float64


def cosine_map(src_up, trg_up, x, y):
    """Cosine of the source descriptor at pixel (floor y, floor x) with every
    target pixel; zero vectors give 0."""
    q = src_up[int(math.floor(y)), int(math.floor(x))]
    t = trg_up.reshape(-1, trg_up.shape[-1])
    den = np.linalg.norm(t, axis=1) * np.linalg.norm(q)
    num = t @ q
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def check_against_oracle(pred, sf, tf, kps, ssize, tsize, tol):
    """pred (K, 2) vs the literal upsample-then-argmax oracle for one pair."""
    su = upsample_oracle(sf, *ssize)
    tu = upsample_oracle(tf, *tsize)
    W = tsize[0]
    for k, (x, y) in enumerate(np.asarray(kps, dtype=np.float64)):
        sim = cosine_map(su, tu, x, y)
        px, py = pred[k]
        assert px == int(px) and py == int(py), "prediction must be integer-valued"
        assert 0 <= px < tsize[0] and 0 <= py < tsize[1]
        best = int(np.argmax(sim))
        got = int(py) * W + int(px)
        if got != best:
            assert sim[best] - sim[got] <= tol, (
                f"keypoint {k}: predicted {(px, py)} sim {sim[got]!r}, oracle "
                f"{(best % W, best // W)} sim {sim[best]!r}")


def random_pair(rng, hs, ws, ht, wt, d, ssize, tsize, k, dtype):
    sf = rng.standard_normal((hs, ws, d)).astype(dtype)
    tf = rng.standard_normal((ht, wt, d)).astype(dtype)
    kps = np.stack([rng.uniform(0, ssize[0], k), rng.uniform(0, ssize[1], k)], axis=1)
    return sf, tf, kps.astype(dtype)


# --------------------------------------------------------------------------
# upsample-argmax vs the oracles
# --------------------------------------------------------------------------

def test_oracle_matches_torch_interpolate():
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for (h, w, W, H) in [(5, 7, 23, 11), (6, 4, 3, 5), (3, 3, 3, 3), (1, 4, 9, 2),
                         (7, 5, 7, 40)]:
        feat = rng.standard_normal((h, w, 3))
        ref = F.interpolate(torch.from_numpy(feat).permute(2, 0, 1)[None], size=(H, W),
                            mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(upsample_oracle(feat, W, H), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_argmax_random(dtype):
    rng = np.random.default_rng(1 if dtype == np.float32 else 2)
    cases = [  # (hs, ws, ht, wt, D, src (W, H), trg (W, H))
        (5, 5, 5, 5, 8, (31, 31), (29, 33)),
        (4, 6, 7, 3, 5, (40, 17), (13, 45)),      # non-square everything
        (6, 6, 6, 6, 4, (4, 3), (5, 2)),          # images smaller than the grid
        (3, 8, 2, 9, 6, (8, 3), (9, 2)),          # image size == grid size
        (1, 1, 1, 5, 3, (7, 6), (22, 4)),         # single-cell grids
        (5, 4, 6, 6, 1, (9, 9), (14, 10)),        # D = 1 (cosine is +-1: ties)
        (4, 4, 5, 5, 16, (50, 37), (41, 53)),
    ]
    for hs, ws, ht, wt, d, ss, ts in cases:
        sf, tf, kps = random_pair(rng, hs, ws, ht, wt, d, ss, ts, 6, dtype)
        pred = gm.transfer_keypoints(sf, tf, kps, ss, ts, layout="hwc")
        assert pred.dtype == dtype and pred.shape == (6, 2)
        check_against_oracle(pred, sf, tf, kps, ss, ts, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_argmax_border_keypoints(dtype):
    rng = np.random.default_rng(3)
    ss, ts = (23, 17), (19, 26)
    sf, tf, _ = random_pair(rng, 5, 4, 4, 6, 7, ss, ts, 1, dtype)
    W, H = ss
    kps = np.array([[0, 0], [W - 1, H - 1], [0, H - 1], [W - 1, 0], [W - 0.01, H - 0.01],
                    [0.99, 12.5], [11, 0.0]], dtype=dtype)
    pred = gm.transfer_keypoints(sf, tf, kps, ss, ts, layout="hwc")
    check_against_oracle(pred, sf, tf, kps, ss, ts, TOL[dtype])


def test_upsample_argmax_matches_torch_protocol():
    """The published code path: F.interpolate + normalize + argmax in float32."""
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    for (hs, ws, ht, wt, d, ss, ts) in [(6, 6, 6, 6, 24, (61, 45), (52, 66)),
                                         (5, 7, 8, 4, 12, (30, 30), (7, 5))]:
        sf, tf, kps = random_pair(rng, hs, ws, ht, wt, d, ss, ts, 8, np.float32)
        kps[0] = (ss[0] - 1, ss[1] - 1)
        kps[1] = (0, 0)
        pred = gm.transfer_keypoints(sf, tf, kps, ss, ts)
        su = F.interpolate(torch.from_numpy(sf).permute(2, 0, 1)[None], size=(ss[1], ss[0]),
                           mode="bilinear", align_corners=False)[0]
        tu = F.interpolate(torch.from_numpy(tf).permute(2, 0, 1)[None], size=(ts[1], ts[0]),
                           mode="bilinear", align_corners=False)[0]
        tn = F.normalize(tu.reshape(d, -1), dim=0)
        for k, (x, y) in enumerate(kps):
            q = F.normalize(su[:, int(np.floor(y)), int(np.floor(x))], dim=0)
            sim = (q @ tn).numpy()
            got = int(pred[k, 1]) * ts[0] + int(pred[k, 0])
            assert sim.max() - sim[got] <= 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_argmax_batched_strided_threads(dtype):
    rng = np.random.default_rng(5)
    lead = (2, 3)
    hs, ws, ht, wt, d, k = 4, 5, 5, 3, 6, 5
    sf_big = rng.standard_normal(lead + (hs, ws, 2 * d)).astype(dtype)
    tf_big = rng.standard_normal(lead + (ht, 2 * wt, d)).astype(dtype)
    sf = sf_big[..., ::2]                     # strided along D
    tf = tf_big[..., ::2, :]                  # strided along w
    ss = rng.integers(3, 30, size=lead + (2,))
    ts = rng.integers(3, 30, size=lead + (2,))
    kp_big = np.zeros(lead + (k, 4), dtype=dtype)
    kp_big[..., 0] = rng.uniform(0, 1, lead + (k,)) * ss[..., None, 0]
    kp_big[..., 2] = rng.uniform(0, 1, lead + (k,)) * ss[..., None, 1]
    kps = kp_big[..., ::2]                    # strided keypoints
    assert not sf.flags.c_contiguous and not tf.flags.c_contiguous
    gm.set_num_threads(1)
    try:
        p1 = gm.transfer_keypoints(sf, tf, kps, ss, ts)
        gm.set_num_threads(2)
        p2 = gm.transfer_keypoints(sf, tf, kps, ss, ts)
        pc = gm.transfer_keypoints(np.ascontiguousarray(sf), np.ascontiguousarray(tf),
                                   np.ascontiguousarray(kps), ss, ts)
    finally:
        gm.set_num_threads(2)
    assert p1.shape == lead + (k, 2) and p1.dtype == dtype
    np.testing.assert_array_equal(p1, p2)
    for i in range(lead[0]):
        for j in range(lead[1]):
            one = gm.transfer_keypoints(sf[i, j], tf[i, j], kps[i, j], ss[i, j], ts[i, j])
            np.testing.assert_array_equal(one, p1[i, j])
            check_against_oracle(p1[i, j], sf[i, j], tf[i, j], kps[i, j],
                                 tuple(ss[i, j]), tuple(ts[i, j]), TOL[dtype])
            check_against_oracle(pc[i, j], sf[i, j], tf[i, j], kps[i, j],
                                 tuple(ss[i, j]), tuple(ts[i, j]), TOL[dtype])


def test_threads_identical_larger_pair():
    """Exact equality across thread counts on a pair with many rows per thread."""
    rng = np.random.default_rng(6)
    sf, tf, kps = random_pair(rng, 9, 9, 9, 9, 40, (120, 90), (133, 101), 9, np.float32)
    try:
        gm.set_num_threads(1)
        p1 = gm.transfer_keypoints(sf, tf, kps, (120, 90), (133, 101))
        gm.set_num_threads(2)
        p2 = gm.transfer_keypoints(sf, tf, kps, (120, 90), (133, 101))
    finally:
        gm.set_num_threads(2)
    np.testing.assert_array_equal(p1, p2)


def test_sizes_forms_and_dtype_promotion():
    rng = np.random.default_rng(7)
    sf, tf, kps = random_pair(rng, 4, 4, 4, 4, 5, (20, 15), (18, 21), 3, np.float32)
    a = gm.transfer_keypoints(sf, tf, kps, (20, 15), (18, 21))
    b = gm.transfer_keypoints(sf, tf, kps, np.array([20, 15]), [18.0, 21.0])
    np.testing.assert_array_equal(a, b)
    c = gm.transfer_keypoints(sf, tf, kps.astype(np.float64), (20, 15), (18, 21))
    assert a.dtype == np.float32 and c.dtype == np.float64
    check_against_oracle(c, sf, tf, kps, (20, 15), (18, 21), TOL[np.float32])


def test_zero_vectors_and_scale_invariance():
    rng = np.random.default_rng(8)
    sf, tf, kps = random_pair(rng, 4, 5, 5, 4, 6, (17, 13), (16, 19), 5, np.float64)
    tf[1:3, 1:3] = 0.0          # a zero block: its upsampled pixels have norm 0
    pred = gm.transfer_keypoints(sf, tf, kps, (17, 13), (16, 19))
    assert np.all(np.isfinite(pred))
    check_against_oracle(pred, sf, tf, kps, (17, 13), (16, 19), TOL[np.float64])
    scaled = gm.transfer_keypoints(4.0 * sf, 0.25 * tf, kps, (17, 13), (16, 19))
    np.testing.assert_array_equal(pred, scaled)
    zero_src = gm.transfer_keypoints(np.zeros_like(sf), tf, kps, (17, 13), (16, 19))
    np.testing.assert_array_equal(zero_src, 0.0)  # all cosines 0: first pixel


def test_large_float32_values_do_not_overflow():
    rng = np.random.default_rng(9)
    sf, tf, kps = random_pair(rng, 4, 4, 4, 4, 8, (15, 15), (15, 15), 3, np.float64)
    ref = gm.transfer_keypoints(sf, tf, kps, (15, 15), (15, 15))
    big = gm.transfer_keypoints((sf * 1e25).astype(np.float32), (tf * 1e25).astype(np.float32),
                                kps.astype(np.float32), (15, 15), (15, 15))
    assert big.dtype == np.float32
    check_against_oracle(big, sf, tf, kps, (15, 15), (15, 15), 1e-5)
    check_against_oracle(ref, sf, tf, kps, (15, 15), (15, 15), 1e-11)


def test_small_float32_values():
    rng = np.random.default_rng(14)
    sf, tf, kps = random_pair(rng, 4, 5, 5, 4, 8, (15, 12), (13, 17), 4, np.float64)
    small = gm.transfer_keypoints((sf * 1e-12).astype(np.float32),
                                  (tf * 1e-12).astype(np.float32), kps.astype(np.float32),
                                  (15, 12), (13, 17))
    check_against_oracle(small, sf, tf, kps, (15, 12), (13, 17), 2e-5)


def test_empty_keypoints():
    rng = np.random.default_rng(10)
    sf, tf, _ = random_pair(rng, 3, 3, 3, 3, 4, (9, 9), (9, 9), 1, np.float32)
    out = gm.transfer_keypoints(sf, tf, np.zeros((0, 2), np.float32), (9, 9), (9, 9))
    assert out.shape == (0, 2)


# --------------------------------------------------------------------------
# grid-argmax and soft-argmax
# --------------------------------------------------------------------------

def grid_oracle(sf, tf, kps, ss, ts, soft, window=7, temperature=0.02):
    return reference.grid_transfer(sf, tf, kps, ss, ts, soft=soft, window=window,
                                   temperature=temperature)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["grid-argmax", "soft-argmax"])
def test_grid_modes(mode, dtype):
    rng = np.random.default_rng(11)
    lead = (2,)
    sf = rng.standard_normal(lead + (6, 5, 9)).astype(dtype)
    tf = rng.standard_normal(lead + (18, 20, 9)).astype(dtype)
    ss, ts = np.array([[50, 40], [7, 9]]), np.array([[200, 150], [12, 11]])
    kps = np.stack([rng.uniform(0, 1, (2, 4)) * ss[:, None, 0],
                    rng.uniform(0, 1, (2, 4)) * ss[:, None, 1]], axis=-1).astype(dtype)
    kps[0, 0] = (49, 39)
    for window, temp in [(7, 0.02), (2, 0.5)]:
        pred = gm.transfer_keypoints(sf, tf, kps, ss, ts, mode=mode, window=window,
                                     temperature=temp)
        assert pred.dtype == dtype and pred.shape == (2, 4, 2)
        for b in range(2):
            ref = grid_oracle(sf[b], tf[b], kps[b], ss[b], ts[b], mode == "soft-argmax",
                              window, temp)
            np.testing.assert_allclose(pred[b], ref, rtol=1e-4 if dtype == np.float32 else 1e-9,
                                       atol=1e-3 if dtype == np.float32 else 1e-9)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def _good(rng=None):
    rng = rng or np.random.default_rng(12)
    sf, tf, kps = random_pair(rng, 4, 4, 4, 4, 5, (20, 20), (20, 20), 3, np.float32)
    return dict(src_feat=sf, trg_feat=tf, src_kps=kps, src_size=(20, 20), trg_size=(20, 20))


@pytest.mark.parametrize("mode", ["upsample-argmax", "grid-argmax", "soft-argmax"])
def test_errors_name_the_argument(mode):
    g = _good()

    def call(**over):
        args = dict(g)
        args.update(over)
        return gm.transfer_keypoints(args["src_feat"], args["trg_feat"], args["src_kps"],
                                     args["src_size"], args["trg_size"], mode=mode)

    nan_s = g["src_feat"].copy()
    nan_s[1, 2, 3] = np.nan
    inf_t = g["trg_feat"].copy()
    inf_t[3, 3, 0] = np.inf
    nan_k = g["src_kps"].copy()
    nan_k[1, 0] = np.nan
    cases = [
        (dict(src_feat=g["src_feat"].astype(np.int32)), TypeError, "src_feat"),
        (dict(trg_feat=g["trg_feat"].astype(np.complex64)), TypeError, "trg_feat"),
        (dict(src_kps=np.array([[True, False]])), TypeError, "src_kps"),
        (dict(src_kps=np.array([["1", "2"]])), TypeError, "src_kps"),
        (dict(src_kps=np.array([[1 + 2j, 2]])), TypeError, "src_kps"),
        (dict(src_feat=g["src_feat"][0]), ValueError, "src_feat"),
        (dict(trg_feat=g["trg_feat"][None]), ValueError, "trg_feat"),
        (dict(trg_feat=g["trg_feat"][..., :4]), ValueError, "trg_feat"),
        (dict(src_kps=g["src_kps"][:, :1]), ValueError, "src_kps"),
        (dict(src_kps=g["src_kps"][None]), ValueError, "src_kps"),
        (dict(src_feat=nan_s), ValueError, "src_feat"),
        (dict(trg_feat=inf_t), ValueError, "trg_feat"),
        (dict(src_kps=nan_k), ValueError, "src_kps"),
        (dict(src_size=(0, 20)), ValueError, "src_size"),
        (dict(trg_size=(20, -3)), ValueError, "trg_size"),
        (dict(trg_size=(20.5, 20)), ValueError, "trg_size"),
        (dict(src_size=(20, 20, 3)), ValueError, "src_size"),
        (dict(src_size=[(20, 20), (20, 20)]), ValueError, "src_size"),
        (dict(trg_size="big"), TypeError, "trg_size"),
        (dict(src_size=(True, True)), TypeError, "src_size"),
        (dict(src_kps=np.array([[20.0, 5.0]], np.float32)), ValueError, "src_kps"),
        (dict(src_kps=np.array([[5.0, 20.0]], np.float32)), ValueError, "src_kps"),
        (dict(src_kps=np.array([[-0.5, 5.0]], np.float32)), ValueError, "src_kps"),
        (dict(src_feat=np.zeros((0, 4, 5), np.float32)), ValueError, "src_feat"),
    ]
    for over, exc, name in cases:
        with pytest.raises(exc, match=name):
            call(**over)


def test_bad_mode_and_soft_params():
    g = _good()
    args = (g["src_feat"], g["trg_feat"], g["src_kps"], (20, 20), (20, 20))
    with pytest.raises(ValueError, match="mode"):
        gm.transfer_keypoints(*args, mode="bilinear")
    with pytest.raises(ValueError, match="mode"):
        gm.transfer_keypoints(*args, mode=None)
    with pytest.raises(ValueError, match="window"):
        gm.transfer_keypoints(*args, mode="soft-argmax", window=-1)
    with pytest.raises(TypeError, match="window"):
        gm.transfer_keypoints(*args, mode="soft-argmax", window=1.5)
    with pytest.raises(ValueError, match="temperature"):
        gm.transfer_keypoints(*args, mode="soft-argmax", temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        gm.transfer_keypoints(*args, mode="soft-argmax", temperature=float("nan"))


def test_core_binding_validates_too():
    g = _good()
    core = gm._core.transfer_upsample_argmax
    sz = np.array([20, 20])
    with pytest.raises(TypeError, match="src_size"):
        core(g["src_feat"], g["trg_feat"], g["src_kps"], np.array([20.0, 20.0]), sz)
    with pytest.raises(ValueError, match="trg_size"):
        core(g["src_feat"], g["trg_feat"], g["src_kps"], sz, np.array([20, 0]))
    with pytest.raises(ValueError, match="trg_size"):
        core(g["src_feat"], g["trg_feat"], g["src_kps"], sz, np.array([[20, 20]]))
    with pytest.raises(ValueError, match="src_kps"):
        core(g["src_feat"], g["trg_feat"], np.array([[3.0, 25.0]]), sz, sz)
    with pytest.raises(ValueError, match="src_feat"):
        core(g["src_feat"][..., :2], g["trg_feat"], g["src_kps"], sz, sz)


def test_spair_sized_grid_against_torch_and_threads():
    """37x37 grid to 500x375 images (SPair-like), D reduced to keep torch cheap."""
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    F = torch.nn.functional
    rng = np.random.default_rng(13)
    base = rng.standard_normal((2, 39, 39, 32)).astype(np.float32)
    feats = (base[:, :-2, :-2] + base[:, 1:-1, 1:-1] + base[:, 2:, 2:]) / 3 + 0.2
    sf, tf = feats[0], feats[1]
    ss, ts = (500, 375), (375, 500)
    kps = np.stack([rng.uniform(0, 500, 10), rng.uniform(0, 375, 10)], 1).astype(np.float32)
    kps[0] = (499, 374)
    try:
        gm.set_num_threads(1)
        p1 = gm.transfer_keypoints(sf, tf, kps, ss, ts)
        gm.set_num_threads(2)
        p2 = gm.transfer_keypoints(sf, tf, kps, ss, ts)
    finally:
        gm.set_num_threads(2)
    np.testing.assert_array_equal(p1, p2)
    su = F.interpolate(torch.from_numpy(sf).permute(2, 0, 1)[None], size=(ss[1], ss[0]),
                       mode="bilinear", align_corners=False)[0]
    tu = F.interpolate(torch.from_numpy(tf).permute(2, 0, 1)[None], size=(ts[1], ts[0]),
                       mode="bilinear", align_corners=False)[0]
    tn = F.normalize(tu.reshape(32, -1), dim=0)
    q = F.normalize(su[:, torch.from_numpy(np.floor(kps[:, 1]).astype(np.int64)),
                       torch.from_numpy(np.floor(kps[:, 0]).astype(np.int64))].T, dim=1)
    sim = (q @ tn).numpy()
    got = p1[:, 1].astype(np.int64) * ts[0] + p1[:, 0].astype(np.int64)
    gap = sim.max(axis=1) - sim[np.arange(10), got]
    assert np.all(gap <= 2e-6), gap


@pytest.mark.parametrize("mode", ["upsample-argmax", "grid-argmax", "soft-argmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kdtype", [np.int64, np.int32, np.uint16])
def test_integer_keypoints_are_pixel_coordinates(mode, dtype, kdtype):
    """Integer keypoints (pixel indices) give exactly what the same values as
    floats give, in the maps' float type; an out-of-image integer keypoint is
    refused like a float one."""
    rng = np.random.default_rng(21)
    sf, tf, _ = random_pair(rng, 5, 4, 6, 5, 8, (30, 24), (28, 22), 3, dtype)
    kps = np.array([[0, 0], [29, 23], [7, 11], [15, 3]], kdtype)
    got = gm.transfer_keypoints(sf, tf, kps, (30, 24), (28, 22), mode=mode)
    want = gm.transfer_keypoints(sf, tf, kps.astype(dtype), (30, 24), (28, 22), mode=mode)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="src_kps"):
        gm.transfer_keypoints(sf, tf, np.array([[30, 0]], kdtype), (30, 24), (28, 22),
                              mode=mode)

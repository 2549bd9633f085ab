"""Channel-first maps need layout="chw"; torch tensors that NumPy cannot
take get an error saying what to call."""
import numpy as np
import pytest

import geomatch as gm
from geomatch.data.cache import FeatureCache


def _pair(rng, d=32, h=37, w=37):
    return (rng.normal(size=(h, w, d)).astype(np.float32),
            rng.normal(size=(h, w, d)).astype(np.float32))


def test_transfer_channel_first_needs_layout(rng):
    sf, tf = _pair(rng)
    kps = np.array([[10.0, 20.0], [500.0, 3.0]], np.float32)
    want = gm.transfer_keypoints(sf, tf, kps, (518, 518), (518, 518))
    chw_s, chw_t = np.ascontiguousarray(sf.transpose(2, 0, 1)), \
        np.ascontiguousarray(tf.transpose(2, 0, 1))
    # (32, 37, 37): the last two axes equal, the first not -> looks channel-first
    with pytest.raises(ValueError, match=r"src_feat has shape \(32, 37, 37\).*layout='chw'"):
        gm.transfer_keypoints(chw_s, chw_t, kps, (518, 518), (518, 518))
    got = gm.transfer_keypoints(chw_s, chw_t, kps, (518, 518), (518, 518), layout="chw")
    np.testing.assert_array_equal(got, want)
    # (768, 37, 37): first axis larger than both others
    big = np.zeros((768, 37, 37), np.float32)
    with pytest.raises(ValueError, match="looks channel-first"):
        gm.transfer_keypoints(big, big, kps, (518, 518), (518, 518))
    # batched channel-first maps (B, D, h, w)
    got_b = gm.transfer_keypoints(chw_s[None], chw_t[None], kps[None], (518, 518), (518, 518),
                                  layout="chw")
    np.testing.assert_array_equal(got_b[0], want)
    # a tall channel-last map with few channels passes with layout="hwc"
    tall = rng.normal(size=(9, 4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="looks channel-first"):
        gm.transfer_keypoints(tall, tall, kps[:1], (40, 90), (40, 90))
    gm.transfer_keypoints(tall, tall, kps[:1], (40, 90), (40, 90), layout="hwc")
    with pytest.raises(ValueError, match="layout must be"):
        gm.transfer_keypoints(sf, tf, kps, (518, 518), (518, 518), layout="whc")


def test_torch_tensors_get_a_message_saying_what_to_call(rng):
    torch = pytest.importorskip("torch", reason="torch tensors as input")
    sf, tf = _pair(rng, d=16, h=6, w=6)
    kps = np.array([[3.0, 4.0]], np.float32)
    want = gm.transfer_keypoints(sf, tf, kps, (60, 60), (60, 60))
    t_s = torch.from_numpy(sf.transpose(2, 0, 1).copy())
    t_t = torch.from_numpy(tf.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(
        gm.transfer_keypoints(t_s, t_t, kps, (60, 60), (60, 60), layout="chw"), want)
    with pytest.raises(TypeError, match=r"requires grad.*src_feat\.detach\(\)"):
        gm.transfer_keypoints(t_s.clone().requires_grad_(True), t_t, kps, (60, 60), (60, 60),
                              layout="chw")
    with pytest.raises(TypeError, match=r"bfloat16.*trg_feat\.float\(\)"):
        gm.transfer_keypoints(t_s, t_t.to(torch.bfloat16), kps, (60, 60), (60, 60),
                              layout="chw")


def test_cache_put_channel_first(tmp_path, rng):
    manifest = gm.datasets.feature_manifest(backbone="x", dim=24, grid=(5, 5),
                                            preprocess="resize")
    cache = FeatureCache.create(tmp_path / "c", manifest)
    hwc = rng.normal(size=(5, 5, 24)).astype(np.float32)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"features has shape \(24, 5, 5\).*layout='chw'"):
        cache.put("a/b", chw)
    cache.put("a/b", chw, layout="chw")
    np.testing.assert_array_equal(cache.get("a/b"), hwc)
    cache.put("a/c", chw[None], layout="chw")          # (1, D, h, w) as torch saves it
    np.testing.assert_array_equal(cache.get("a/c"), hwc)
    torch = pytest.importorskip("torch", reason="torch tensors as input")
    with pytest.raises(TypeError, match="detach"):
        cache.put("a/d", torch.ones(5, 5, 24, requires_grad=True))
    with pytest.raises(TypeError, match="bfloat16"):
        cache.put("a/d", torch.ones(5, 5, 24, dtype=torch.bfloat16))
    cache.put("a/e", torch.from_numpy(hwc))
    np.testing.assert_array_equal(cache.get("a/e"), hwc)

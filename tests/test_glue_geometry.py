"""Coordinate conventions pinned with numbers worked out by hand.

Inputs are chosen where the plausible wrong rules give different answers:
keypoints on patch borders rather than centres, images whose padding leaves
an odd number of rows, a target image of another size than the source, a
prediction exactly at alpha * T.
"""
import numpy as np
import pytest

from geomatch.data.base import PairRecord, make_image_record
from geomatch.data.cache import FeatureCache, grid_frame
from geomatch.eval import evaluate as E
from geomatch.eval import metrics as M
from geomatch.model import train as T


# ------------------------------------------------------------- padding frame

def test_pad_frame_of_an_image_whose_padding_is_odd():
    # 500 x 333 into 840 x 840: scale 840/500 = 1.68, content height
    # round(333 * 1.68) = round(559.44) = 559, padding 281 rows: 140 above
    # (floor of half), 141 below; in original pixels the frame starts at
    # y = -140 / 1.68 = -83.333... and spans 500 x 500.
    x0, y0, fw, fh = grid_frame((500, 333), {"preprocess": "pad", "resolution": [840, 840]})
    assert (x0, fw, fh) == (0.0, 500.0, 500.0)
    assert y0 == pytest.approx(-140 / 1.68, abs=1e-9)
    # portrait: 333 x 500 pads columns the same way
    x0, y0, fw, fh = grid_frame((333, 500), {"preprocess": "pad", "resolution": [840, 840]})
    assert x0 == pytest.approx(-140 / 1.68, abs=1e-9) and y0 == 0.0


def test_padded_input_pixels_start_at_the_same_offset():
    from geomatch.backbone.preprocess import preprocess_image

    img = np.full((333, 500, 3), 255, np.uint8)
    x = np.asarray(preprocess_image(img, "pad", 840)[0] if isinstance(
        preprocess_image(img, "pad", 840), tuple) else preprocess_image(img, "pad", 840))
    # channel-last or channel-first: find the axis of length 3
    if x.shape[0] == 3:
        x = np.moveaxis(x, 0, -1)
    x = x.reshape(840, 840, 3)
    white = x[:, 420, 0] > 0           # normalized white is positive, black padding negative
    rows = np.flatnonzero(white)
    assert (rows[0], rows[-1]) == (140, 140 + 559 - 1)


# ------------------------------------------------------- flip augmentation

def test_flip_maps_pixel_x_to_W_minus_1_minus_x_on_patch_borders():
    # W = 100, grid 10 x 10 (10-pixel patches).  x = 10 flips to 89 (patch 8);
    # the rule W - x would give 90 (patch 9).  x = 59 flips to 40 (patch 4;
    # W - x: 41, patch 4 too) and x = 0 to 99 (patch 9).
    G, W = 10, 100
    kps = np.array([[10.0, 5.0], [59.0, 35.0], [0.0, 95.0]])
    rec = make_image_record("t", "c", "c/a", "/nonexistent/a.jpg", (W, W), kps,
                            np.ones(3, bool), [0, 0, 99, 99])
    pair = PairRecord(dataset="t", split="trn", category="c", pair_id="p", src=rec, trg=rec,
                      keypoint_names=("a", "b", "c"), flip_perm=np.arange(3), meta={})
    manifest = {"preprocess": "resize", "resolution": [140, 140], "grid": [G, G]}
    masks = T._MaskStore(manifest)
    fl = T.prepare_pair(pair, (G, G), manifest, masks, flip_src=True)
    # (row, col) -> row * G + col
    assert list(fl.src_patch[:3]) == [0 * G + 8, 3 * G + 4, 9 * G + 9]


# ------------------------------------------- evaluation on images of two sizes

def test_evaluation_maps_predictions_with_the_target_image_size(tmp_path):
    # source 80 x 60, target 160 x 90, both on an 8 x 6 grid of one-hot
    # features: keypoint k sits on patch (r, c) in both images, so grid-argmax
    # predicts the centre of that patch in target pixels under the
    # align_corners=False convention (docs/method.md, keypoint transfer):
    # ((c + 0.5) * 160 / 8 - 0.5, (r + 0.5) * 90 / 6 - 0.5).
    GW, GH, Dm = 8, 6, 4
    patches = {0: (1, 2), 1: (4, 6), 2: (2, 5)}
    feat = np.zeros((GH, GW, Dm), np.float32)
    feat[..., 3] = 1
    for k, (r, c) in patches.items():
        feat[r, c] = 0
        feat[r, c, k] = 1

    def rec(key, W, H):
        kps = [((c + 0.5) * W / GW, (r + 0.5) * H / GH) for r, c in patches.values()]
        return make_image_record("fake", "cat", key, "/nonexistent.jpg", (W, H), kps,
                                 np.ones(3, bool), [0, 0, W, H])

    src, trg = rec("cat/s", 80, 60), rec("cat/t", 160, 90)
    pair = PairRecord(dataset="fake", split="test", category="cat", pair_id="p", src=src,
                      trg=trg, keypoint_names=("a", "b", "c"), flip_perm=np.arange(3), meta={})

    class DS:
        name = "fake"
        skipped = []

        def pairs(self, split, categories=None, subsample=None, seed=0):
            return [pair]

    cache = FeatureCache.create(tmp_path / "c", dict(
        backbone="fake", weights_sha256="0" * 64, resolution=[84, 112], preprocess="resize",
        grid=[GH, GW], dim=Dm, dtype="float32"))
    cache.put("cat/s", feat)
    cache.put("cat/t", feat)
    expected = np.array([((c + 0.5) * 20.0 - 0.5, (r + 0.5) * 15.0 - 0.5)
                         for r, c in patches.values()])
    pred = E.transfer_pair(pair, feat, feat, cache.manifest, mode="grid-argmax")
    np.testing.assert_allclose(pred, expected, atol=1e-4)
    res = E.evaluate(DS(), "test", cache, mode="grid-argmax", progress=False)
    # T = 160 (target box), alpha 0.05 -> 8 px: every prediction exact
    np.testing.assert_allclose(res.overall["pck_point"], [1.0] * len(res.overall["pck_point"]))


# ------------------------------------------------- breakdown at d == alpha*T

def test_breakdown_counts_a_prediction_exactly_at_alpha_T_as_correct():
    # left eye (0) and right eye (1) visible in both; prediction for 0 lies
    # exactly 10 px (alpha 0.1 * T 100) from its ground truth, on the side away
    # from the twin; prediction for 1 is exact.
    trg = np.array([[100.0, 100.0], [300.0, 100.0]])
    pred = np.array([[90.0, 100.0], [300.0, 100.0]])
    vis = np.ones(2, bool)
    bd = M.geometry_breakdown(pred, vis, trg, vis, np.array([1, 0]), 100.0, alphas=(0.1,))
    assert int(bd["11"][0]) == 2
    assert int(bd["11_hat"][0]) == 2 and int(bd["11_bar"][0]) == 0
    bd = M.geometry_breakdown(pred, vis, trg, vis, np.array([1, 0]), 100.0 - 1e-9,
                              alphas=(0.1,))
    assert int(bd["11_hat"][0]) == 1

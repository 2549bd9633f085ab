"""Tests of geomatch.eval.metrics on small hand-computed cases."""
import json
import math

import numpy as np
import pytest

import geomatch as gm
from geomatch import metrics as M

NAN = float("nan")


# ---------------------------------------------------------------- plain PCK

def test_pck_three_points_inclusive_boundary():
    gt = np.zeros((3, 2))
    # distances 5, 10, 20; T = 100 -> ratios 0.05, 0.10, 0.20
    pred = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 20.0]])
    got = gm.metrics.pck(pred, gt, 100.0)
    np.testing.assert_allclose(got, [1 / 3, 2 / 3, 2 / 3])
    got = M.pck(pred, gt, 100.0, alphas=(0.2, 0.19))
    np.testing.assert_allclose(got, [1.0, 2 / 3])


def test_pck_float32_input_and_visibility():
    gt = np.array([[0, 0], [NAN, NAN], [10, 10]], dtype=np.float32)
    pred = np.array([[1, 0], [500, 500], [10, 22]], dtype=np.float32)
    # visible by default: rows 0 and 2; d = 1 and 12; T = 100
    np.testing.assert_allclose(M.pck(pred, gt, 100), [0.5, 0.5, 1.0])
    vis = np.array([False, False, True])
    np.testing.assert_allclose(M.pck(pred, gt, 100, visible=vis), [0.0, 0.0, 1.0])


def test_pck_per_pair_thresholds_and_nan_prediction():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[8, 0], [0, 12]], [[8, 0], [NAN, NAN]]], dtype=np.float64)
    # pair 0: T=100 -> ratios .08 .12 ; pair 1: T=200 -> .04, nan (never correct)
    got = M.pck(pred, gt, np.array([100.0, 200.0]), alphas=(0.05, 0.1, 0.15))
    np.testing.assert_allclose(got, [1 / 4, 2 / 4, 3 / 4])
    mask = M.correct_mask(pred, gt, [100.0, 200.0], alphas=(0.1,))
    assert mask.shape == (1, 2, 2)
    assert mask.tolist() == [[[True, False], [True, False]]]


def test_thresholds_helpers():
    assert M.bbox_threshold([10, 20, 60, 50]) == 50          # w 50, h 30
    assert M.bbox_threshold([0, 0, 10, 40]) == 40
    np.testing.assert_array_equal(M.image_threshold([[640, 480], [300, 500]]), [640, 500])

    class Img:
        bbox = [5, 5, 25, 105]
        size = (300, 200)

    class Pair:
        trg = Img()

    assert M.pair_threshold(Pair(), "bbox") == 100
    assert M.pair_threshold(Pair(), "image") == 300
    with pytest.raises(ValueError, match="mode"):
        M.pair_threshold(Pair(), "box")


def test_pck_errors():
    gt = np.zeros((3, 2))
    with pytest.raises(ValueError, match="thresholds"):
        M.pck(gt, gt, 0.0)
    with pytest.raises(ValueError, match="thresholds"):
        M.pck(gt, gt, [1.0, 2.0])
    with pytest.raises(ValueError, match="pred"):
        M.pck(np.zeros((3, 3)), gt, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        M.pck(np.zeros((2, 2)), gt, 1.0)
    with pytest.raises(ValueError, match="alphas"):
        M.pck(gt, gt, 1.0, alphas=(-0.1,))
    with pytest.raises(TypeError, match="visible"):
        M.pck(gt, gt, 1.0, visible=np.ones(3, dtype=int))
    with pytest.raises(ValueError, match="visible"):
        M.pck(gt, np.full((3, 2), NAN), 1.0)
    with pytest.raises(ValueError, match="gt"):
        M.pck(gt, np.full((3, 2), NAN), 1.0, visible=np.ones(3, bool))
    with pytest.raises(ValueError, match="bbox"):
        M.bbox_threshold([0, 0, 0, 0])


# ---------------------------------------------------- accumulator, categories

def _pair(cat, n_pts, n_ok, T=100.0, pid="", alphas=M.DEFAULT_ALPHAS):
    """A pair with n_pts visible keypoints of which the first n_ok are exact hits."""
    gt = np.stack([np.arange(n_pts) * 50.0, np.zeros(n_pts)], 1)
    pred = gt.copy()
    pred[n_ok:, 1] += 0.5 * T          # far off at every alpha
    vis = np.ones(n_pts, bool)
    return M.evaluate_pair(pred, gt, T, src_visible=vis, trg_visible=vis, category=cat,
                           pair_id=pid, alphas=alphas)


def test_per_point_vs_per_image_and_categories():
    acc = M.PCKAccumulator()
    acc.add(_pair("a", 4, 4))
    acc.add(_pair("a", 1, 0))
    acc.add(_pair("b", 2, 1))
    s = acc.summary()
    a, b, ov = s["categories"]["a"], s["categories"]["b"], s["overall"]
    # category a: 4/5 per point, (1 + 0)/2 per image
    np.testing.assert_allclose(a["pck_point"], [0.8] * 3)
    np.testing.assert_allclose(a["pck_image"], [0.5] * 3)
    np.testing.assert_allclose(b["pck_point"], [0.5] * 3)
    np.testing.assert_allclose(b["pck_image"], [0.5] * 3)
    assert (a["n_pairs"], a["n_points"], b["n_pairs"], b["n_points"]) == (2, 5, 1, 2)
    # pooled: 5/7 per point, (1 + 0 + .5)/3 per image; category means .65 and .5
    np.testing.assert_allclose(ov["pck_point"], [5 / 7] * 3)
    np.testing.assert_allclose(ov["pck_image"], [0.5] * 3)
    np.testing.assert_allclose(ov["pck_point_catmean"], [0.65] * 3)
    np.testing.assert_allclose(ov["pck_image_catmean"], [0.5] * 3)
    json.dumps(s)  # JSON-ready
    rows = acc.rows()
    assert [r["category"] for r in rows] == ["a", "b", "all", "mean"]
    assert rows[2]["pck_point@0.1"] == pytest.approx(100 * 5 / 7)
    assert rows[3]["pck_point@0.1"] == pytest.approx(65.0)
    md = acc.to_markdown()
    assert "| a | 2 | 5 | 80.00 | 80.00 | 80.00 |" in md
    assert "| all | 3 | 7 | 71.43 |" in md
    assert "| mean |  |  | 65.00 |" in md


def test_pair_without_scored_points_left_out_of_per_image():
    acc = M.PCKAccumulator(alphas=(0.1,))
    acc.add(_pair("a", 2, 2, alphas=(0.1,)))
    gt = np.array([[1.0, 1.0]])
    acc.add(M.evaluate_pair(gt, gt, 10.0, src_visible=np.array([True]),
                            trg_visible=np.array([False]), category="a", alphas=(0.1,)))
    st = acc.summary()["categories"]["a"]
    assert st["n_pairs"] == 2 and st["n_pairs_scored"] == 1
    assert st["pck_image"] == [1.0]
    with pytest.raises(ValueError, match="alphas"):
        acc.add(_pair("a", 1, 1))


# ---------------------------------------------------------- geometry breakdown

# keypoints: 0 left eye, 1 right eye, 2 nose, 3 left ear, 4 right ear,
#            5 tail (no counterpart), 6 chin (no counterpart)
FLIP = np.array([1, 0, 2, 4, 3, 5, 6])


def _swap_case():
    trg = np.array([[10, 10], [30, 10], [20, 20], [0, 0], [NAN, NAN], [NAN, NAN], [20, 40]])
    trg_vis = np.array([True, True, True, True, False, False, True])
    src_vis = np.array([True, True, True, True, True, True, False])
    pred = np.array([
        [30, 10],    # k0 lands on k1: a left/right swap (d to k0 = 20)
        [30, 11],    # k1 correct (d = 1), far from k0
        [20, 20],    # nose, no counterpart: correct
        [0, 50],     # left ear, right ear occluded: wrong (d = 50)
        [1, 0],      # right ear invisible, lands on the left ear
        [70, 70],    # tail invisible in target, no counterpart -> 00
        [20, 40],    # chin: not in the source, ignored everywhere
    ], dtype=np.float64)
    return pred, src_vis, trg, trg_vis


def test_breakdown_left_right_swap():
    pred, sv, trg, tv = _swap_case()
    bd = M.geometry_breakdown(pred, sv, trg, tv, FLIP, 100.0)
    expect = {"11": 2, "11_hat": 1, "11_tilde": 0, "11_bar": 1, "10": 1, "10_hat": 0,
              "1x": 1, "1x_hat": 1, "01": 1, "01_bar": 1, "00": 1}
    assert set(bd) == set(M.BREAKDOWN_KEYS)
    for key, v in expect.items():
        assert bd[key].tolist() == [v] * 3, key


def test_breakdown_tilde_and_alpha_dependence():
    trg = np.array([[10, 10], [14, 10]], dtype=np.float64)
    vis = np.array([True, True])
    # k0 predicted midway: 2 px from both; k1 predicted 8 px off to the right
    pred = np.array([[12, 10], [22, 10]], dtype=np.float64)
    bd = M.geometry_breakdown(pred, vis, trg, vis, [1, 0], 100.0, alphas=(0.01, 0.05, 0.1))
    # alpha .01 (1 px): nothing; .05 (5 px): k0 correct+tilde; .1 (10 px): also k1, near k0 (12 px)? no
    assert bd["11"].tolist() == [2, 2, 2]
    assert bd["11_hat"].tolist() == [0, 1, 2]
    assert bd["11_tilde"].tolist() == [0, 1, 1]
    assert bd["11_bar"].tolist() == [0, 0, 0]


def test_evaluate_pair_breakdown_matches_pck_and_geo_subset():
    pred, sv, trg, tv = _swap_case()
    r = M.evaluate_pair(pred, trg, 100.0, src_visible=sv, trg_visible=tv, flip_perm=FLIP,
                        category="cat")
    assert r.n_points == 4                     # k0..k3
    assert r.n_correct.tolist() == [2, 2, 2]   # k1, k2
    # geometry-aware: group {0,1} has both visible in the target -> k0, k1; {3,4} only one
    assert r.n_geo == 2
    assert r.n_geo_correct.tolist() == [1, 1, 1]
    acc = M.PCKAccumulator()
    acc.add(r)
    ov = acc.summary()["overall"]
    np.testing.assert_allclose(ov["pck_breakdown"], [0.5] * 3)
    np.testing.assert_allclose(ov["pck_point"], [0.5] * 3)
    np.testing.assert_allclose(ov["pck_geo"], [0.5] * 3)
    assert ov["breakdown"]["11_bar"] == [1, 1, 1]
    assert "Geometry breakdown" in acc.to_markdown()


def test_geo_aware_mask_groups():
    grp = [[0, 1, 2, 3]]
    # two members visible in target, one visible in both -> only that one
    got = M.geo_aware_mask([False, True, True, True], [True, True, False, False], grp)
    assert got.tolist() == [False, True, False, False]
    # only one member visible in the target -> none
    assert not M.geo_aware_mask([True] * 4, [True, False, False, False], grp).any()
    # two visible in target but none in the source -> none
    assert not M.geo_aware_mask([False] * 4, [True, True, False, False], grp).any()
    assert M.flip_groups(FLIP) == [[0, 1], [3, 4]]
    assert [9, 10, 11, 12] in M.geo_groups("spair", "dog")
    assert M.geo_groups("pfpascal", "x", [1, 0, 2]) == [[0, 1]]


def test_breakdown_errors():
    pred, sv, trg, tv = _swap_case()
    with pytest.raises(ValueError, match="flip_perm"):
        M.geometry_breakdown(pred, sv, trg, tv, [1, 2, 0, 3, 4, 5, 6], 100.0)
    with pytest.raises(ValueError, match="flip_perm"):
        M.geometry_breakdown(pred, sv, trg, tv, [0, 1], 100.0)
    with pytest.raises(TypeError, match="src_visible"):
        M.geometry_breakdown(pred, sv.astype(int), trg, tv, FLIP, 100.0)
    with pytest.raises(ValueError, match="threshold"):
        M.geometry_breakdown(pred, sv, trg, tv, FLIP, math.inf)
    with pytest.raises(ValueError, match="trg_kps"):
        M.evaluate_pair(pred, trg, 1.0, src_visible=sv, trg_visible=np.ones(7, bool))

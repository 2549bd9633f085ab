"""Metrics checked against the published tables and on asymmetric inputs.

The geometry-aware keypoint groups are transcribed from GeoAware-SC's
``utils/utils_geoware.py`` (``SPAIR_GEO_AWARE`` and ``AP10K_GEO_AWARE``: only
the groups of two or more keypoints matter; ``8+2`` etc. written out), for all
eighteen SPair-71k categories rather than a spot check of one.
"""
import numpy as np
import pytest

from geomatch.data.tables import SPAIR_CATEGORIES
from geomatch.eval import metrics as M

PUBLISHED_SPAIR_GROUPS = {
    "aeroplane": [[4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17], [18, 19],
                  [20, 21]],
    "bicycle": [[2, 3], [6, 7], [9, 10]],
    "bird": [[1, 2], [10, 11], [12, 13], [14, 15]],
    "boat": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]],
    "bottle": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]],
    "bus": [[0, 1], [2, 3, 5, 6], [4, 7], [10, 13, 20, 23], [11, 14, 21, 24],
            [12, 15, 22, 25], [16, 17, 26, 27], [18, 19, 28, 29]],
    "car": [[0, 1], [2, 3, 6, 7], [4, 8], [5, 9], [10, 13, 20, 23], [11, 14, 21, 24],
            [12, 15, 22, 25], [16, 17, 26, 27], [18, 19, 28, 29]],
    "cat": [[2, 3], [9, 10, 11, 12]],
    "chair": [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9], [10, 11], [12, 13]],
    "cow": [[2, 3], [9, 10, 11, 12], [15, 16, 17, 18], [19, 20]],
    "dog": [[2, 3], [9, 10, 11, 12]],
    "horse": [[2, 3], [10, 11, 12, 13], [16, 17, 18, 19]],
    "motorbike": [[0, 1], [2, 3]],
    "person": [[8, 9], [10, 11], [12, 13], [14, 15], [16, 17], [18, 19]],
    "pottedplant": [[0, 1, 2, 3], [4, 5], [6, 8]],
    "sheep": [[2, 3], [9, 10, 11, 12], [15, 16, 17, 18], [19, 20]],
    "train": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17]],
    "tvmonitor": [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]],
}
PUBLISHED_AP10K_GROUPS = [[5, 8], [6, 9, 12, 15], [7, 10, 13, 16], [11, 14]]


def _canon(groups):
    return sorted(sorted(int(k) for k in g) for g in groups)


def test_spair_has_the_eighteen_published_categories():
    assert sorted(SPAIR_CATEGORIES) == sorted(PUBLISHED_SPAIR_GROUPS)


@pytest.mark.parametrize("category", sorted(PUBLISHED_SPAIR_GROUPS))
def test_spair_geometry_aware_groups_equal_the_published_table(category):
    assert _canon(M.geo_groups("spair", category)) == _canon(PUBLISHED_SPAIR_GROUPS[category])


def test_ap10k_geometry_aware_groups_equal_the_published_table():
    assert _canon(M.geo_groups("ap10k", "any")) == _canon(PUBLISHED_AP10K_GROUPS)


def _pair(cat, hits, total, T=100.0):
    """A pair with ``total`` visible keypoints of which the first ``hits`` are exact."""
    gt = np.stack([np.arange(total) * 50.0, np.zeros(total)], 1)
    pred = gt.copy()
    pred[hits:, 1] += 0.5 * T
    vis = np.ones(total, bool)
    return M.evaluate_pair(pred, gt, T, src_visible=vis, trg_visible=vis, category=cat,
                           alphas=(0.1,))


def test_per_image_pck_is_the_mean_of_asymmetric_per_pair_values():
    # per-pair PCK 1/1, 1/4, 0/3, 2/2: mean 0.5625, median 0.625, pooled 4/10
    acc = M.PCKAccumulator(alphas=(0.1,))
    for hits, total in [(1, 1), (1, 4), (0, 3), (2, 2)]:
        acc.add(_pair("c", hits, total))
    s = acc.summary()["categories"]["c"]
    assert s["pck_image"][0] == pytest.approx((1 + 0.25 + 0 + 1) / 4)
    assert s["pck_point"][0] == pytest.approx(4 / 10)


def test_category_mean_weights_categories_not_pairs():
    # category a: two pairs at 1.0 and 0.0 (per image 0.5); b: one pair at 1/3
    acc = M.PCKAccumulator(alphas=(0.1,))
    acc.add(_pair("a", 3, 3))
    acc.add(_pair("a", 0, 1))
    acc.add(_pair("b", 1, 3))
    ov = acc.summary()["overall"]
    assert ov["pck_image"][0] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert ov["pck_image_catmean"][0] == pytest.approx((0.5 + 1 / 3) / 2)
    assert ov["pck_point"][0] == pytest.approx(4 / 7)
    assert ov["pck_point_catmean"][0] == pytest.approx((3 / 4 + 1 / 3) / 2)

"""Metrics checked against the published tables and on asymmetric inputs.

The geometry-aware keypoint groups are transcribed from GeoAware-SC's
``utils/utils_geoware.py`` (``SPAIR_GEO_AWARE`` and ``AP10K_GEO_AWARE``: only
the groups of two or more keypoints matter), for all eighteen SPair-71k
categories rather than a spot check of one.  The rows are written in the
published notation (flat lists with nested groups) and converted by
``_groups_of``, independently of the table in ``geomatch/eval/metrics.py``.
"""
import numpy as np
import pytest

from geomatch.data.tables import SPAIR_CATEGORIES
from geomatch.eval import metrics as M

# The published rows as written there: every keypoint id in order, a nested list
# for a group of symmetric keypoints, a bare id for a keypoint on its own; the
# bus rows keep the ``+ 2`` of the original (ids shifted past two unused slots).
PUBLISHED_SPAIR_ROWS = {
    "aeroplane": [0, 1, 2, 3, [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15],
                  [16, 17], [18, 19], [20, 21], 22, 23, 24],
    "bicycle": [0, 1, [2, 3], 4, 5, [6, 7], 8, [9, 10], 11 + 2],
    "bird": [0, [1, 2], 3, 4, 5, 6, 7, 8, 9, [10, 11], [12, 13], [14, 15], 16],
    "boat": [0, [1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], 13],
    "bottle": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]],
    "bus": [[0, 1], [2, 3, 5, 6], [4, 7], [8 + 2, 11 + 2, 18 + 2, 21 + 2],
            [9 + 2, 12 + 2, 19 + 2, 22 + 2], [10 + 2, 13 + 2, 20 + 2, 23 + 2],
            [14 + 2, 15 + 2, 24 + 2, 25 + 2], [16 + 2, 17 + 2, 26 + 2, 27 + 2]],
    "car": [[0, 1], [2, 3, 6, 7], [4, 8], [5, 9], [10, 13, 20, 23], [11, 14, 21, 24],
            [12, 15, 22, 25], [16, 17, 26, 27], [18, 19, 28, 29]],
    "cat": [0, 1, [2, 3], 4, 5, 6, 7, 8, [9, 10, 11, 12], 13, 14],
    "chair": [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9], [10, 11], [12, 13]],
    "cow": [0, 1, [2, 3], 4, 5, 6, 7, 8, [9, 10, 11, 12], 13, 14, [15, 16, 17, 18], [19, 20]],
    "dog": [0, 1, [2, 3], 4, 5, 6, 7, 8, [9, 10, 11, 12], 13, 14, 15],
    "horse": [0, 1, [2, 3], 4, 5, 6, 7, 8, 9, [10, 11, 12, 13], 14, 15, [16, 17, 18, 19]],
    "motorbike": [[0, 1], [2, 3], 4, 5, 6, 7, 8, 9, 10, 11, 12],
    "person": [0, 1, 2, 3, 4, 5, 6, 7, [8, 9], [10, 11], [12, 13], [14, 15], [16, 17],
               [18, 19]],
    "pottedplant": [[0, 1, 2, 3], [4, 5], [6, 8], 7],
    "sheep": [0, 1, [2, 3], 4, 5, 6, 7, 8, [9, 10, 11, 12], 13, 14, [15, 16, 17, 18], [19, 20]],
    "train": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17]],
    "tvmonitor": [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]],
}
PUBLISHED_AP10K_ROW = [0, 1, 2, 3, 4, [5, 8], [6, 9, 12, 15], [7, 10, 13, 16], [11, 14]]


def _groups_of(row):
    """The nested lists of a published row: the groups of two or more keypoints."""
    return [list(item) for item in row if isinstance(item, list) and len(item) > 1]


PUBLISHED_SPAIR_GROUPS = {cat: _groups_of(row) for cat, row in PUBLISHED_SPAIR_ROWS.items()}
PUBLISHED_AP10K_GROUPS = _groups_of(PUBLISHED_AP10K_ROW)


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

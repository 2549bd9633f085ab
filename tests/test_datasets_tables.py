"""Keypoint name tables and left/right flip permutations of all datasets."""
import re

import numpy as np
import pytest

from geomatch.data import tables as T

# Number of keypoints per SPair category, independently from GeoAware-SC's
# SPAIR_LR side table (one entry per keypoint slot).
SPAIR_K = {"aeroplane": 25, "bicycle": 14, "bird": 17, "boat": 14, "bottle": 10,
           "bus": 30, "car": 30, "cat": 15, "chair": 14, "cow": 21, "dog": 16,
           "horse": 20, "motorbike": 13, "person": 20, "pottedplant": 9,
           "sheep": 21, "train": 18, "tvmonitor": 16}

SIDE = {"left": "right", "right": "left"}
ENDS = {"front": "back", "back": "front"}


def _norm(name):
    return name.lower().replace("_", " ").strip()


def _swap(name, table):
    return re.sub(r"\b(" + "|".join(table) + r")\b",
                  lambda m: table[m.group(1)], _norm(name))


def _has(name, table):
    return re.search(r"\b(" + "|".join(table) + r")\b", _norm(name)) is not None


def _all_tables():
    for cat, names in T.SPAIR_KEYPOINT_NAMES.items():
        yield f"spair/{cat}", names, T.SPAIR_LR_PAIRS[cat]
    yield "ap10k", T.AP10K_KEYPOINT_NAMES, T.AP10K_LR_PAIRS
    yield "cub", T.CUB_PART_NAMES, T.CUB_LR_PAIRS


@pytest.mark.parametrize("label,names,pairs", list(_all_tables()),
                         ids=[t[0] for t in _all_tables()])
def test_flip_permutation_matches_names(label, names, pairs):
    perm = T.flip_permutation(len(names), pairs)
    k = len(names)
    assert perm.dtype == np.int64 and perm.shape == (k,)
    assert sorted(perm.tolist()) == list(range(k))          # a permutation
    assert np.array_equal(perm[perm], np.arange(k))         # an involution
    assert len(set(names)) == k                             # names unique
    for i in range(k):
        j = int(perm[i])
        if j == i:
            # unpaired parts carry no side
            assert not _has(names[i], SIDE), (label, names[i])
        else:
            # "left ..." <-> "right ..."
            assert _has(names[i], SIDE), (label, names[i])
            assert _swap(names[i], SIDE) == _norm(names[j]), (label, names[i], names[j])


def test_every_sided_keypoint_has_its_twin():
    # a name with "left" whose "right" twin exists must be paired with it
    for label, names, pairs in _all_tables():
        perm = T.flip_permutation(len(names), pairs)
        normed = [_norm(n) for n in names]
        for i, n in enumerate(normed):
            twin = _swap(n, SIDE)
            if twin != n and twin in normed:
                assert perm[i] == normed.index(twin), (label, names[i])


def test_spair_tables_cover_18_categories():
    assert list(T.SPAIR_CATEGORIES) == sorted(SPAIR_K)
    for cat, k in SPAIR_K.items():
        assert len(T.SPAIR_KEYPOINT_NAMES[cat]) == k, cat
    # spot checks against the published name list
    assert T.SPAIR_KEYPOINT_NAMES["cat"][:2] == ("right ear", "left ear")
    assert T.SPAIR_KEYPOINT_NAMES["bicycle"][11:14] == ("unused 11", "unused 12", "chainring")
    assert T.SPAIR_KEYPOINT_NAMES["car"][29] == "top-left back-windshield"
    assert T.SPAIR_KEYPOINT_NAMES["aeroplane"][24] == "vertical stabilizer-back"


def test_spair_geco_table_adds_only_front_back_pairs():
    for cat, extra in T.SPAIR_FRONT_BACK_PAIRS.items():
        names = T.SPAIR_KEYPOINT_NAMES[cat]
        lr = {i for p in T.SPAIR_LR_PAIRS[cat] for i in p}
        perm = T.flip_permutation(len(names), T.SPAIR_LR_PAIRS[cat] + extra)
        assert np.array_equal(perm[perm], np.arange(len(names)))
        for i, j in extra:
            assert i not in lr and j not in lr
            assert not _has(names[i], SIDE)
            assert _swap(names[i], ENDS) == _norm(names[j]), (cat, names[i], names[j])


def test_known_permutations():
    # GECO's CUB permutation and GeoAware-SC's AP-10K flip
    cub = T.flip_permutation(15, T.CUB_LR_PAIRS)
    assert cub.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14]
    ap = T.flip_permutation(17, T.AP10K_LR_PAIRS)
    assert ap.tolist() == [1, 0, 2, 3, 4, 8, 9, 10, 5, 6, 7, 14, 15, 16, 11, 12, 13]
    assert len(T.PFPASCAL_CLASSES) == 20


@pytest.mark.parametrize("pairs,msg", [([(0, 0)], "itself"), ([(0, 1), (1, 2)], "two"),
                                       ([(0, 9)], "out of range")])
def test_flip_permutation_rejects_bad_pairs(pairs, msg):
    with pytest.raises(ValueError, match=msg):
        T.flip_permutation(4, pairs)

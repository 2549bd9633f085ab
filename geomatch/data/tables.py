"""Keypoint names and left/right flip tables of the four datasets.

Every table here is data: the keypoint names of each category, in the order
of the dataset's annotation files, and the pairs ``(i, j)`` of keypoints that
are each other's mirror image.  :func:`flip_permutation` turns a pair list
into the permutation ``perm`` with ``perm[i] = j``, ``perm[j] = i`` and
``perm[k] = k`` for a keypoint without a counterpart.

Sources (facts re-derived, checked by ``tests/test_datasets_tables.py``):

* SPair-71k names: GECO ``download_data/spair_keypoint_names.csv`` (trailing
  blanks stripped; the ``N/A`` slots, which are never annotated, are named
  ``"unused <index>"`` so that names stay unique).
* SPair-71k left/right pairs: GeoAware-SC ``utils/utils_geoware.py``
  ``SPAIR_FLIP_TRN`` (indices over the full 30-slot list).  GECO's
  ``spair_keypoint_l_r_permutation.csv`` contains the same left/right pairs
  plus a few front/back pairs of vehicles (bicycle wheels, license plates,
  ...); those are :data:`SPAIR_FRONT_BACK_PAIRS`, selected with
  ``flip_table="geco"``.
* AP-10K: the 17 COCO-style keypoints of AP-10K; pairs as GeoAware-SC
  ``AP10K_FLIP``.
* CUB-200-2011: ``parts/parts.txt`` (15 parts); left/right eye, leg, wing.
* PF-PASCAL: the 20 PASCAL VOC classes.  The dataset ships no keypoint names
  and neither GECO nor GeoAware-SC publishes a left/right table for it, so
  the keypoints are named by index and have no counterpart (identity flip).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "SPAIR_CATEGORIES", "SPAIR_KEYPOINT_NAMES", "SPAIR_LR_PAIRS",
    "SPAIR_FRONT_BACK_PAIRS", "AP10K_KEYPOINT_NAMES", "AP10K_LR_PAIRS",
    "CUB_PART_NAMES", "CUB_LR_PAIRS", "PFPASCAL_CLASSES", "flip_permutation",
]

# One category a paragraph: ``category: name, name, ...``; an indented line
# continues the paragraph above it.
_SPAIR_KEYPOINT_NAMES_TEXT = """
aeroplane: nose, windshield, cockpit, front wheel, right wheel, left wheel,
    right engine-fan, left engine-fan, right wing-tip, left wing-tip, right engine,
    left engine, right wing-front, left wing-front, right wing-back, left wing-back,
    right stabilizer-tip, left stabilizer-tip, right stabilizer-front,
    left stabilizer-front, right stabilizer-back, left stabilizer-back,
    vertical stabilizer-tip, vertical stabilizer-front, vertical stabilizer-back
bicycle: front wheel, back wheel, right handlebar, left handlebar, middle handlebar,
    front seat, back-right seat, back-left seat, seat-post, right pedal, left pedal,
    unused 11, unused 12, chainring
bird: crown, right wing, left wing, beak, right cheek, left cheek, forehead, right eye,
    left eye, nape, right foot, left foot, right knee, left knee, right hip, left hip,
    tail
boat: front deck, front-right deck, front-left deck, mid-right deck, mid-left deck,
    back-right deck, back-left deck, front-right hull, front-left hull, mid-right hull,
    mid-left hull, back-right hull, back-left hull, front hull
bottle: right cap, left cap, right neck, left neck, top-right body, top-left body,
    right-center body, left-center body, right-bottom body, left-bottom body
bus: right mirror, left mirror, right headlight, left headlight, front license-plate,
    right tail-light, left tail-light, back license-plate, unused 8, unused 9,
    back-right wheel-back-liner, back-right wheel, back-right wheel-front-liner,
    front-right wheel-back-liner, front-right wheel, front-right wheel-front-liner,
    bottom-right bus-front, bottom-left bus-front, top-right bus-front,
    top-left bus-front, back-left wheel-back-liner, back-left wheel,
    back-left wheel-front-liner, front-left wheel-back-liner, front-left wheel,
    front-left wheel-front-liner, bus-back bottom-right, bus-back bottom-left,
    bus-back top-right, bus-back top-left
car: right mirror, left mirror, right headlight, left headlight, front license-plate,
    front emblem, right tail-light, left tail-light, back license-plate, back emblem,
    back-right wheel-back-liner, back-right wheel, back-right wheel-front-liner,
    front-right wheel-back-liner, front-right wheel, front-right wheel-front-liner,
    bottom-right front-windshield, bottom-left front-windshield,
    top-right front-windshield, top-left front-windshield, back-left wheel-back-liner,
    back-left wheel, back-left wheel-front-liner, front-left wheel-back-liner,
    front-left wheel, front-left wheel-front-liner, bottom-right back-windshield,
    bottom-left back-windshield, top-right back-windshield, top-left back-windshield
cat: right ear, left ear, right ear-tip, left ear-tip, right eye, left eye, right nostril,
    left nostril, mouth, front-right foot, front-left foot, back-right foot,
    back-left foot, tail-tip, tail-base
chair: right front-seat, left front-seat, bottom-right back, bottom-left back,
    front-right leg, front-left leg, back-right leg, back-left leg, top-right back,
    top-left back, right armrest, left armrest, right elbowrest, left elbowrest
cow: right ear, left ear, right ear-tip, left ear-tip, right eye, left eye, right nostril,
    left nostril, mouth, front-right foot, front-left foot, back-right foot,
    back-left foot, tail-tip, tail-base, front-right knee, front-left knee,
    back-right knee, back-left knee, right horn, left horn
dog: right ear, left ear, right ear-tip, left ear-tip, right eye, left eye, nose,
    forehead, mouth, front-right foot, front-left foot, back-right foot, back-left foot,
    tail-tip, tail-base, nape
horse: right ear, left ear, right ear-tip, left ear-tip, right eye, left eye,
    right nostril, left nostril, mouth, forehead, front-right foot, front-left foot,
    back-right foot, back-left foot, tail-tip, tail-base, front-right knee,
    front-left knee, back-right knee, back-left knee
motorbike: right mirror, left mirror, right handlebar, left handlebar, front light,
    back light, front wheel, back wheel, license-plate, tail, exhaustpipe, front wheelhub,
    back wheelhub
person: right eye, left eye, right ear, left ear, nose, chin, nape, mouth, right shoulder,
    left shoulder, right elbow, left elbow, right hand, left hand, right knee, left knee,
    right ankle, left ankle, right foot, left foot
pottedplant: right rim, back rim, left rim, front rim, right body, left body, right base,
    middle base, left base
sheep: right ear, left ear, right ear-tip, left ear-tip, right eye, left eye,
    right nostril, left nostril, mouth, front-right foot, front-left foot,
    back-right foot, back-left foot, tail-tip, tail-base, front-right knee,
    front-left knee, back-right knee, back-left knee, right horn, left horn
train: top-left front, top-right front, bottom-left front, bottom-right front,
    top-left back, top-right back, bottom-left back, bottom-right back,
    top-left windshield, top-right windshield, bottom-left windshield,
    bottom-right windshield, top-left windshield-center, top-right windshield-center,
    bottom-left windshield-center, bottom-right windshield-center, left headlight,
    right headlight
tvmonitor: top-right frame-corner, frame-top, top-left frame-corner, left frame-side,
    bottom-left frame-corner, frame-base, bottom-right frame-corner, right frame-side,
    top-right screen-corner, screen-top, top-left screen-corner, left screen-side,
    bottom-left screen-corner, screen-base, bottom-right screen-corner, right screen-side
"""


def _parse_name_table(text: str) -> dict:
    """``{category: names}`` of a table written as in ``_SPAIR_KEYPOINT_NAMES_TEXT``."""
    paragraphs = []
    for line in text.strip().splitlines():
        if line.startswith(" ") and paragraphs:
            paragraphs[-1] += " " + line.strip()
        else:
            paragraphs.append(line)
    table = {}
    for paragraph in paragraphs:
        category, names = paragraph.split(":", 1)
        table[category] = tuple(n.strip() for n in names.split(","))
    return table


SPAIR_KEYPOINT_NAMES = _parse_name_table(_SPAIR_KEYPOINT_NAMES_TEXT)

SPAIR_CATEGORIES = tuple(SPAIR_KEYPOINT_NAMES)

# Left/right counterparts over the full keypoint list of each category.
SPAIR_LR_PAIRS = {
    "aeroplane": [(4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17),
                  (18, 19), (20, 21)],
    "bicycle": [(2, 3), (6, 7), (9, 10)],
    "bird": [(1, 2), (4, 5), (7, 8), (10, 11), (12, 13), (14, 15)],
    "boat": [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)],
    "bottle": [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)],
    "bus": [(0, 1), (2, 3), (5, 6), (10, 20), (11, 21), (12, 22), (13, 23),
            (14, 24), (15, 25), (16, 17), (18, 19), (26, 27), (28, 29)],
    "car": [(0, 1), (2, 3), (6, 7), (10, 20), (11, 21), (12, 22), (13, 23),
            (14, 24), (15, 25), (16, 17), (18, 19), (26, 27), (28, 29)],
    "cat": [(0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12)],
    "chair": [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)],
    "cow": [(0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12), (15, 16), (17, 18),
            (19, 20)],
    "dog": [(0, 1), (2, 3), (4, 5), (9, 10), (11, 12)],
    "horse": [(0, 1), (2, 3), (4, 5), (6, 7), (10, 11), (12, 13), (16, 17),
              (18, 19)],
    "motorbike": [(0, 1), (2, 3)],
    "person": [(0, 1), (2, 3), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17),
               (18, 19)],
    "pottedplant": [(0, 2), (4, 5), (6, 8)],
    "sheep": [(0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12), (15, 16),
              (17, 18), (19, 20)],
    "train": [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13),
              (14, 15), (16, 17)],
    "tvmonitor": [(0, 2), (3, 7), (4, 6), (8, 10), (11, 15), (12, 14)],
}

# Extra front/back pairs in GECO's permutation csv (``flip_table="geco"``).
SPAIR_FRONT_BACK_PAIRS = {
    "bicycle": [(0, 1)],
    "bus": [(4, 7)],
    "car": [(4, 8), (5, 9)],
    "motorbike": [(4, 5), (6, 7), (11, 12)],
    "pottedplant": [(1, 3)],
}

# AP-10K (COCO-style order of the annotation's 17 keypoints).
AP10K_KEYPOINT_NAMES = (
    "left eye", "right eye", "nose", "neck", "root of tail",
    "left shoulder", "left elbow", "left front paw",
    "right shoulder", "right elbow", "right front paw",
    "left hip", "left knee", "left back paw",
    "right hip", "right knee", "right back paw",
)
AP10K_LR_PAIRS = [(0, 1), (5, 8), (6, 9), (7, 10), (11, 14), (12, 15), (13, 16)]

# CUB-200-2011 parts/parts.txt, ids 1..15 -> indices 0..14.
CUB_PART_NAMES = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye",
    "left leg", "left wing", "nape", "right eye", "right leg", "right wing",
    "tail", "throat",
)
CUB_LR_PAIRS = [(6, 10), (7, 11), (8, 12)]

# PF-PASCAL class ids 1..20 of the pair csv files.
PFPASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def flip_permutation(num_keypoints: int,
                     pairs: Iterable[Sequence[int]]) -> np.ndarray:
    """Permutation swapping each keypoint with its left/right counterpart.

    Parameters
    ----------
    num_keypoints : int
        Length K of the keypoint list.
    pairs : iterable of (int, int)
        Counterpart pairs; each index may appear in at most one pair.

    Returns
    -------
    numpy.ndarray
        int64 ``(K,)``; ``perm[i] == j`` and ``perm[j] == i`` for each pair,
        ``perm[k] == k`` otherwise.  It is an involution.
    """
    perm = np.arange(int(num_keypoints), dtype=np.int64)
    seen = set()
    for pair in pairs:
        i, j = (int(v) for v in pair)
        if i == j:
            raise ValueError(f"flip pair {pair} pairs a keypoint with itself")
        for v in (i, j):
            if not 0 <= v < num_keypoints:
                raise ValueError(f"flip pair {pair} out of range for "
                                 f"{num_keypoints} keypoints")
            if v in seen:
                raise ValueError(f"keypoint {v} appears in two flip pairs")
            seen.add(v)
        perm[i], perm[j] = j, i
    return perm

"""PCK metrics for semantic correspondence, with the geometry breakdown of GECO
(docs/method.md#metrics).

A transferred keypoint is *correct at α* when its distance to the ground truth
is at most α·T, where T is the per-pair threshold: the longer side of the
target bounding box (``"bbox"`` mode) or of the target image (``"image"``
mode).  Only keypoints visible in both images are scored.

Two ways of averaging are reported:

- *per-point* PCK pools all scored keypoints (of a category, or of the whole
  split);
- *per-image* PCK averages the fraction of correct keypoints within each pair,
  then over the pairs (pairs with no scored keypoint are left out and counted).

Overall figures are given both pooled over all pairs/points and as the mean of
the per-category figures.

The geometry breakdown follows GECO (``reginehartwig/geco``,
``src/evaluation/pck.py``, ``update_counters_pck_alpha``): every keypoint ``k``
annotated in the *source* is classified by whether ``k`` and its left/right
counterpart ``k' = flip_perm[k]`` are visible in the *target*:

======  ===============================================================
``11``  ``k`` and ``k'`` visible (``k' != k``); ``11_hat``: correct;
        ``11_tilde``: within α·T of both ``k`` and ``k'``;
        ``11_bar``: not correct but within α·T of ``k'`` (a left/right swap)
``10``  ``k`` visible, ``k'`` exists but is not visible; ``10_hat``: correct
``1x``  ``k`` visible, ``k`` has no counterpart (``flip_perm[k] == k``);
        ``1x_hat``: correct
``01``  ``k`` not visible, ``k'`` visible; ``01_bar``: the prediction lands
        within α·T of ``k'``
``00``  neither visible (or ``k`` not visible and without counterpart)
======  ===============================================================

and PCK = (n̂₁₀ + n̂₁₁ + n̂₁ₓ) / (n₁₀ + n₁₁ + n₁ₓ), which equals the per-point
PCK.  Like GECO, the test is ``distance / T <= α``.

The geometry-aware subset follows GeoAware-SC (``Junyi42/GeoAware-SC``,
``pck_train.py``, ``compute_pck`` with ``COMPUTE_GEOAWARE_METRICS``): for each
symmetric group of keypoints (e.g. the four paws of a dog), when at least two
members are visible in the target and at least one member is visible in both
images, every member visible in both images is a geometry-aware keypoint.  Its
PCK is reported pooled per point and per image (over the pairs that have
geometry-aware keypoints), with GeoAware-SC's occurrence ratios.

The test is ``distance / T <= α`` by default (GECO); ``compare="lt"`` gives
GeoAware-SC's ``distance < α·T``, and ``scale`` makes the test in another
frame (GeoAware-SC's 840-pixel padded square).  See ``docs/protocols.md`` and
docs/method.md#metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "DEFAULT_ALPHAS", "BREAKDOWN_KEYS", "pck", "correct_mask", "bbox_threshold",
    "image_threshold", "pair_threshold", "geometry_breakdown", "geo_aware_mask",
    "flip_groups", "geo_groups", "PairResult", "evaluate_pair", "PCKAccumulator",
]

DEFAULT_ALPHAS = (0.05, 0.10, 0.15)

#: Counter names of the geometry breakdown (see the module docstring).
BREAKDOWN_KEYS = ("11", "11_hat", "11_tilde", "11_bar", "10", "10_hat", "1x",
                  "1x_hat", "01", "01_bar", "00")

# Symmetric keypoint groups with two or more members, by SPair-71k keypoint id
# (the ids "0".."29" of the annotation files), as used for the geometry-aware
# subset of GeoAware-SC (table SPAIR_GEO_AWARE in utils/utils_geoware.py;
# singleton groups are irrelevant and omitted).
_SPAIR_GEO_GROUPS: Dict[str, List[List[int]]] = {
    "aeroplane": [[4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17],
                  [18, 19], [20, 21]],
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
    "train": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15],
              [16, 17]],
    "tvmonitor": [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]],
}

# AP-10K's 17 keypoints (same source, table AP10K_GEO_AWARE): shoulders,
# elbows+knees, front+back paws, hips.
_AP10K_GEO_GROUPS: List[List[int]] = [[5, 8], [6, 9, 12, 15], [7, 10, 13, 16], [11, 14]]


# --------------------------------------------------------------------------
# thresholds
# --------------------------------------------------------------------------

def bbox_threshold(bbox) -> np.ndarray:
    """PCK threshold T of a bounding box: its longer side.

    Parameters
    ----------
    bbox : array_like, shape (..., 4)
        ``[x1, y1, x2, y2]`` in pixels.

    Returns
    -------
    numpy.ndarray or float
        ``max(x2 - x1, y2 - y1)``, float64, shape ``(...)``.
    """
    b = np.asarray(bbox, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"bbox must have shape (..., 4), got {b.shape}")
    t = np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
    _check_thresholds(t, "bbox")
    return t


def image_threshold(size) -> np.ndarray:
    """PCK threshold T of an image: its longer side.

    Parameters
    ----------
    size : array_like, shape (..., 2)
        ``(W, H)`` in pixels.
    """
    s = np.asarray(size, dtype=np.float64)
    if s.shape[-1:] != (2,):
        raise ValueError(f"size must have shape (..., 2) holding (W, H), got {s.shape}")
    t = np.maximum(s[..., 0], s[..., 1])
    _check_thresholds(t, "size")
    return t


def pair_threshold(pair, mode: str = "bbox") -> float:
    """PCK threshold of a :class:`PairRecord`-like object (uses its target).

    ``mode="bbox"``: longer side of ``pair.trg.bbox``; ``mode="image"``:
    longer side of ``pair.trg.size``.
    """
    if mode == "bbox":
        return float(bbox_threshold(pair.trg.bbox))
    if mode == "image":
        return float(image_threshold(pair.trg.size))
    raise ValueError(f"threshold mode must be 'bbox' or 'image', got {mode!r}")


def _check_thresholds(t: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"{name}: PCK thresholds must be finite and positive")


def _check_alphas(alphas) -> np.ndarray:
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas!r}")
    return a


def _as_points(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim < 2 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (..., K, 2), got {arr.shape}")
    return arr


# --------------------------------------------------------------------------
# plain PCK
# --------------------------------------------------------------------------

def correct_mask(pred, gt, thresholds, alphas=DEFAULT_ALPHAS) -> np.ndarray:
    """Which predictions are within α·T of the ground truth.

    Parameters
    ----------
    pred, gt : array_like, shape (..., K, 2)
        Predicted and ground-truth (x, y) pixels.  A non-finite prediction is
        never correct.
    thresholds : array_like
        T, broadcastable to ``(..., K)``; an array of shape ``(...)`` equal to
        the pair dimensions (one T per pair) is accepted as well.
    alphas : sequence of float

    Returns
    -------
    numpy.ndarray of bool, shape (len(alphas), ..., K)
        ``distance / T <= alpha`` (False where the distance is not finite).
    """
    p = _as_points(pred, "pred")
    g = _as_points(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    a = _check_alphas(alphas)
    t = np.asarray(thresholds, dtype=np.float64)
    lead = p.shape[:-2]
    if t.ndim > 0 and t.shape == lead:
        t = t[..., None]
    try:
        t = np.broadcast_to(t, p.shape[:-1])
    except ValueError:
        raise ValueError(f"thresholds of shape {np.shape(thresholds)} do not broadcast "
                         f"to the keypoints' shape {p.shape[:-1]}") from None
    _check_thresholds(t, "thresholds")
    d = np.hypot(p[..., 0] - g[..., 0], p[..., 1] - g[..., 1])
    ratio = d / t
    with np.errstate(invalid="ignore"):
        return (ratio[None] <= a.reshape((-1,) + (1,) * ratio.ndim)) & np.isfinite(ratio)[None]


def pck(pred, gt, thresholds, alphas=DEFAULT_ALPHAS, *, visible=None) -> np.ndarray:
    """Per-point PCK: the fraction of visible keypoints within α·T.

    Parameters
    ----------
    pred, gt : array_like, shape (..., K, 2)
        Predicted and ground-truth (x, y) pixels, in the same frame as T.
    thresholds : array_like
        T per keypoint, broadcastable to ``(..., K)``, or one per pair with
        shape ``(...)``.  The test is ``distance / T <= alpha``.
    alphas : sequence of float, default (0.05, 0.10, 0.15)
    visible : array_like of bool, shape (..., K), optional
        Keypoints to score (those visible in both images).  Default: every
        keypoint whose ground truth is finite (NaN rows mark invisible ones).

    Returns
    -------
    numpy.ndarray, shape (len(alphas),)
        PCK in [0, 1] for each α, pooled over all scored keypoints.

    Raises
    ------
    ValueError
        On shape mismatches, non-positive thresholds or alphas, a visible
        keypoint without finite ground truth, or no keypoint to score.
    """
    g = _as_points(gt, "gt")
    gt_finite = np.all(np.isfinite(g), axis=-1)
    if visible is None:
        vis = gt_finite
    else:
        vis = np.asarray(visible)
        if vis.dtype != np.bool_:
            raise TypeError(f"visible must be a boolean array, got dtype {vis.dtype}")
        if vis.shape != g.shape[:-1]:
            raise ValueError(f"visible must have shape {g.shape[:-1]}, got {vis.shape}")
        if np.any(vis & ~gt_finite):
            raise ValueError("gt: a keypoint marked visible has a non-finite ground truth")
    ok = correct_mask(pred, np.where(gt_finite[..., None], g, 0.0), thresholds, alphas)
    n = int(vis.sum())
    if n == 0:
        raise ValueError("visible: no keypoint to score")
    return ok[:, vis].sum(axis=1) / n


# --------------------------------------------------------------------------
# geometry breakdown and the geometry-aware subset
# --------------------------------------------------------------------------

def _check_perm(flip_perm, k: int) -> np.ndarray:
    perm = np.asarray(flip_perm)
    if perm.dtype.kind not in "iu":
        raise TypeError(f"flip_perm must be an integer array, got dtype {perm.dtype}")
    perm = perm.astype(np.int64, copy=False)
    if perm.shape != (k,) or np.any(perm < 0) or np.any(perm >= k):
        raise ValueError(f"flip_perm must be {k} indices in [0, {k}), got shape {perm.shape}")
    if np.any(perm[perm] != np.arange(k)):
        raise ValueError("flip_perm must be an involution (flip_perm[flip_perm[k]] == k)")
    return perm


def _check_vis(v, k: int, name: str) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},), got {arr.shape}")
    return arr


COMPARES = ("le", "lt")


def _check_compare(compare: str) -> str:
    if compare not in COMPARES:
        raise ValueError(f"compare must be 'le' (distance / T <= alpha, GECO) or 'lt' "
                         f"(distance < alpha * T, GeoAware-SC), got {compare!r}")
    return compare


def _within(pred: np.ndarray, pts: np.ndarray, t: float, a: np.ndarray,
            compare: str = "le") -> np.ndarray:
    """(A, K) bool, False where not finite.

    ``compare="le"``: ``distance / t <= alpha`` (GECO's test, written as a
    ratio); ``"lt"``: ``distance < alpha * t`` (GeoAware-SC's test, written as
    a product).
    """
    d = np.hypot(pred[:, 0] - pts[:, 0], pred[:, 1] - pts[:, 1])
    with np.errstate(invalid="ignore"):
        if compare == "lt":
            return (d[None, :] < a[:, None] * t) & np.isfinite(d)[None, :]
        d = d / t
        return (d[None, :] <= a[:, None]) & np.isfinite(d)[None, :]


def _check_pair_points(pred, trg_kps, src_visible, trg_visible):
    """Validated (K, 2) predictions and target keypoints of one pair and their
    (K,) source / target visibility masks."""
    p = _as_points(pred, "pred")
    g = _as_points(trg_kps, "trg_kps")
    if p.ndim != 2 or g.shape != p.shape:
        raise ValueError(f"pred and trg_kps must both have shape (K, 2), got {p.shape} and {g.shape}")
    k = p.shape[0]
    return p, g, _check_vis(src_visible, k, "src_visible"), _check_vis(trg_visible, k, "trg_visible")


def geometry_breakdown(pred, src_visible, trg_kps, trg_visible, flip_perm, threshold,
                       alphas=DEFAULT_ALPHAS, compare: str = "le") -> Dict[str, np.ndarray]:
    """GECO's geometry breakdown of one pair (see the module docstring).

    Parameters
    ----------
    pred : array_like, shape (K, 2)
        Transferred positions of every source keypoint (rows of keypoints
        invisible in the source are ignored and may be NaN).
    src_visible, trg_visible : array_like of bool, shape (K,)
    trg_kps : array_like, shape (K, 2)
        Target ground truth (rows of invisible keypoints are ignored).
    flip_perm : array_like of int, shape (K,)
        Left/right counterpart of each keypoint (``flip_perm[k] == k``: none).
    threshold : float
        T of the pair.
    alphas : sequence of float
    compare : {"le", "lt"}
        ``distance / T <= alpha`` (GECO, default) or ``distance < alpha * T``.

    Returns
    -------
    dict
        ``BREAKDOWN_KEYS`` → int64 array of shape (len(alphas),); the
        visibility classes (``11``, ``10``, ``1x``, ``01``, ``00``) repeat
        the same count for every α.
    """
    p, g, sv, tv = _check_pair_points(pred, trg_kps, src_visible, trg_visible)
    k = p.shape[0]
    perm = _check_perm(flip_perm, k)
    a = _check_alphas(alphas)
    t = float(threshold)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"threshold must be finite and positive, got {threshold!r}")
    return _breakdown(p, sv, g, tv, perm, t, a, _check_compare(compare))


def _twin_classes(sv, tv, has_cp, cp_vis):
    """The five keypoint classes of the geometry-aware breakdown (one home for
    both the per-pair and the batched scoring): visible in the source and in
    the target with its mirror twin visible (c11), with a twin not visible
    (c10), without a twin (c1x); visible in the source only, twin visible in
    the target (c01) or not (c00).  Boolean arrays broadcast together."""
    return (sv & tv & cp_vis, sv & tv & has_cp & ~cp_vis, sv & tv & ~has_cp,
            sv & ~tv & cp_vis, sv & ~tv & ~cp_vis)


def _breakdown(p, sv, g, tv, perm, t, a, compare="le") -> Dict[str, np.ndarray]:
    has_cp = perm != np.arange(len(perm))
    cp_vis = tv[perm] & has_cp          # counterpart exists and is visible in the target
    ok = _within(p, g, t, a, compare)            # (A, K) near k
    near_cp = _within(p, g[perm], t, a, compare)  # (A, K) near k'
    c11, c10, c1x, c01, c00 = _twin_classes(sv, tv, has_cp, cp_vis)
    na = len(a)

    def count(m):
        return np.full(na, int(m.sum()), dtype=np.int64)

    def count_a(m2):
        return m2.sum(axis=1).astype(np.int64)

    return {
        "11": count(c11),
        "11_hat": count_a(ok & c11),
        "11_tilde": count_a(ok & near_cp & c11),
        "11_bar": count_a(~ok & near_cp & c11),
        "10": count(c10),
        "10_hat": count_a(ok & c10),
        "1x": count(c1x),
        "1x_hat": count_a(ok & c1x),
        "01": count(c01),
        "01_bar": count_a(near_cp & c01),
        "00": count(c00),
    }


def flip_groups(flip_perm) -> List[List[int]]:
    """The left/right pairs ``[k, flip_perm[k]]`` (k < flip_perm[k]) of a flip permutation."""
    perm = np.asarray(flip_perm, dtype=np.int64).reshape(-1)
    return [[int(k), int(perm[k])] for k in range(len(perm)) if perm[k] > k]


def geo_groups(dataset: str, category: str, flip_perm=None) -> List[List[int]]:
    """Symmetric keypoint groups for the geometry-aware subset.

    SPair-71k (by keypoint id) and AP-10K use GeoAware-SC's tables, which
    merge e.g. the four paws of an animal into one group.  Other datasets
    fall back to the left/right pairs of ``flip_perm``.
    """
    name = (dataset or "").lower().replace("-", "").replace("_", "")
    if name.startswith("spair") and category in _SPAIR_GEO_GROUPS:
        return [list(g) for g in _SPAIR_GEO_GROUPS[category]]
    if name.startswith("ap10k"):
        return [list(g) for g in _AP10K_GEO_GROUPS]
    if flip_perm is None:
        return []
    return flip_groups(flip_perm)


def geo_aware_mask(src_visible, trg_visible, groups: Iterable[Sequence[int]]) -> np.ndarray:
    """Keypoints of the geometry-aware subset of one pair (GeoAware-SC).

    A group counts when at least two of its members are visible in the target
    and at least one is visible in both images; then its members visible in
    both images are geometry-aware.  Group members beyond K are ignored.

    Returns
    -------
    numpy.ndarray of bool, shape (K,)
    """
    sv = np.asarray(src_visible, dtype=bool)
    tv = np.asarray(trg_visible, dtype=bool)
    k = len(tv)
    both = sv & tv
    out = np.zeros(k, dtype=bool)
    for grp in groups:
        idx = np.asarray([i for i in grp if 0 <= i < k], dtype=np.int64)
        if idx.size == 0:
            continue
        if tv[idx].sum() >= 2 and both[idx].any():
            out[idx[both[idx]]] = True
    return out


# --------------------------------------------------------------------------
# per-pair results and the accumulator
# --------------------------------------------------------------------------

@dataclass
class PairResult:
    """The scores of one pair (all arrays indexed by α).

    Attributes
    ----------
    category, pair_id : str
    n_points : int
        Keypoints scored (visible in both images).
    n_correct : numpy.ndarray of int64, shape (A,)
    breakdown : dict of str → numpy.ndarray of int64, shape (A,)
        GECO's counters (empty when no flip permutation was given).
    n_geo : int
        Geometry-aware keypoints among the scored ones.
    n_geo_correct : numpy.ndarray of int64, shape (A,)
    kp_ids : numpy.ndarray of int64, shape (n_points,)
        Indices of the scored keypoints (the keypoint ids of the category).
    kp_correct : numpy.ndarray of bool, shape (A, n_points)
        Which scored keypoints are correct.
    azimuth_diff : int or None
        Circular difference of the two images' azimuth bins (SPair-71k:
        ``min(|a - b|, 8 - |a - b|)``, 0..4), where known.
    mirror : int or None
        1 when the two images face opposite sides (GeoAware-SC: one azimuth
        bin in 0..3, the other in 4..7), 0 otherwise, where known.
    """
    category: str
    pair_id: str
    n_points: int
    n_correct: np.ndarray
    breakdown: Dict[str, np.ndarray] = field(default_factory=dict)
    n_geo: int = 0
    n_geo_correct: Optional[np.ndarray] = None
    kp_ids: Optional[np.ndarray] = None
    kp_correct: Optional[np.ndarray] = None
    azimuth_diff: Optional[int] = None
    mirror: Optional[int] = None


def evaluate_pair(pred, trg_kps, threshold, *, src_visible, trg_visible, flip_perm=None,
                  groups=None, alphas=DEFAULT_ALPHAS, category: str = "",
                  pair_id: str = "", compare: str = "le", scale: float = 1.0,
                  azimuth_diff: Optional[int] = None,
                  mirror: Optional[int] = None) -> PairResult:
    """Score one pair: PCK counts, geometry breakdown and geometry-aware subset.

    Parameters
    ----------
    pred : array_like, shape (K, 2)
        Transferred source keypoints (rows of keypoints invisible in the
        source are ignored).
    trg_kps : array_like, shape (K, 2)
        Target ground truth (NaN rows allowed where invisible).
    threshold : float
        T of the pair (see :func:`pair_threshold`), in original pixels.
    src_visible, trg_visible : array_like of bool, shape (K,)
    flip_perm : array_like of int, shape (K,), optional
        Enables the geometry breakdown.
    groups : list of lists of int, optional
        Symmetric groups for the geometry-aware subset (default: the pairs of
        ``flip_perm``; none without it).
    compare : {"le", "lt"}
        ``distance / T <= alpha`` (GECO) or ``distance < alpha * T``
        (GeoAware-SC).
    scale : float
        Distances and T are multiplied by this before the test (the frame in
        which the test is made: 1 for the original image, ``S / max(W, H)``
        for GeoAware-SC's S-pixel padded frame).
    azimuth_diff, mirror : int, optional
        Kept on the result for the breakdowns of :class:`PCKAccumulator`.
    """
    p, g, sv, tv = _check_pair_points(pred, trg_kps, src_visible, trg_visible)
    k = p.shape[0]
    if np.any(tv & ~np.all(np.isfinite(g), axis=1)):
        raise ValueError("trg_kps: a keypoint marked visible has a non-finite position")
    a = _check_alphas(alphas)
    compare = _check_compare(compare)
    t = float(threshold)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"threshold must be finite and positive, got {threshold!r}")
    sc = float(scale)
    if not (math.isfinite(sc) and sc > 0):
        raise ValueError(f"scale must be finite and positive, got {scale!r}")
    if sc != 1.0:
        p, g, t = p * sc, g * sc, t * sc
    both = sv & tv
    ok = _within(p, g, t, a, compare)
    n_correct = (ok & both[None]).sum(axis=1).astype(np.int64)
    bd: Dict[str, np.ndarray] = {}
    if flip_perm is not None:
        perm = _check_perm(flip_perm, k)
        bd = _breakdown(p, sv, g, tv, perm, t, a, compare)
        if groups is None:
            groups = flip_groups(perm)
    geo = geo_aware_mask(sv, tv, groups or [])
    ids = np.flatnonzero(both).astype(np.int64)
    return PairResult(category=str(category), pair_id=str(pair_id), n_points=int(both.sum()),
                      n_correct=n_correct, breakdown=bd, n_geo=int(geo.sum()),
                      n_geo_correct=(ok & geo[None]).sum(axis=1).astype(np.int64),
                      kp_ids=ids, kp_correct=ok[:, ids],
                      azimuth_diff=None if azimuth_diff is None else int(azimuth_diff),
                      mirror=None if mirror is None else int(mirror))


def _evaluate_pairs_same_k(pred, trg_kps, thresholds, src_visible, trg_visible, perm, groups,
                           a, compare, scales, categories, pair_ids, azimuths,
                           mirrors) -> List[PairResult]:
    """:func:`evaluate_pair` of N pairs with the same K, flip permutation and
    groups at once (``(N, K, 2)`` float64 points, ``(N, K)`` bool masks,
    ``(N,)`` thresholds and scales, all already validated as
    :func:`evaluate_pair` validates them; ``perm`` checked, ``a`` and
    ``compare`` too).  Every value is computed elementwise with exactly the
    operations of :func:`evaluate_pair`, so the results are the same."""
    p, g, sv, tv = pred, trg_kps, src_visible, trg_visible
    n, k = sv.shape
    sc = scales[:, None, None]
    p, g = p * sc, g * sc            # x * 1.0 == x: the same as the per-pair branch
    t = (thresholds * scales)[:, None, None]

    def within(q):                   # (N, A, K), as _within
        d = np.hypot(p[..., 0] - q[..., 0], p[..., 1] - q[..., 1])[:, None, :]
        with np.errstate(invalid="ignore"):
            if compare == "lt":
                return (d < a[None, :, None] * t) & np.isfinite(d)
            d = d / t
            return (d <= a[None, :, None]) & np.isfinite(d)

    both = sv & tv
    ok = within(g)
    n_correct = (ok & both[:, None]).sum(axis=2).astype(np.int64)
    bd = None
    if perm is not None:
        has_cp = perm != np.arange(k)
        cp_vis = tv[:, perm] & has_cp
        near_cp = within(g[:, perm])
        c11, c10, c1x, c01, c00 = _twin_classes(sv, tv, has_cp, cp_vis)
        na = len(a)

        def count(m):
            return np.repeat(m.sum(axis=1).astype(np.int64)[:, None], na, axis=1)

        def count_a(m2):
            return m2.sum(axis=2).astype(np.int64)

        bd = {"11": count(c11), "11_hat": count_a(ok & c11[:, None]),
              "11_tilde": count_a(ok & near_cp & c11[:, None]),
              "11_bar": count_a(~ok & near_cp & c11[:, None]),
              "10": count(c10), "10_hat": count_a(ok & c10[:, None]),
              "1x": count(c1x), "1x_hat": count_a(ok & c1x[:, None]),
              "01": count(c01), "01_bar": count_a(near_cp & c01[:, None]),
              "00": count(c00)}
    geo = np.zeros((n, k), dtype=bool)
    for grp in groups:
        idx = np.asarray([i for i in grp if 0 <= i < k], dtype=np.int64)
        if idx.size == 0:
            continue
        cond = (tv[:, idx].sum(axis=1) >= 2) & both[:, idx].any(axis=1)
        geo[:, idx] |= both[:, idx] & cond[:, None]
    n_geo = geo.sum(axis=1)
    n_geo_correct = (ok & geo[:, None]).sum(axis=2).astype(np.int64)
    n_points = both.sum(axis=1)
    out = []
    for i in range(n):
        ids = np.flatnonzero(both[i]).astype(np.int64)
        az, mi = azimuths[i], mirrors[i]
        out.append(PairResult(
            category=str(categories[i]), pair_id=str(pair_ids[i]), n_points=int(n_points[i]),
            n_correct=n_correct[i], breakdown={} if bd is None else {key: v[i] for key, v in bd.items()},
            n_geo=int(n_geo[i]), n_geo_correct=n_geo_correct[i], kp_ids=ids,
            kp_correct=ok[i][:, ids], azimuth_diff=None if az is None else int(az),
            mirror=None if mi is None else int(mi)))
    return out


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


class PCKAccumulator:
    """Collects :class:`PairResult` objects and produces PCK tables.

    Parameters
    ----------
    alphas : sequence of float, default (0.05, 0.10, 0.15)

    Examples
    --------
    >>> acc = PCKAccumulator()
    >>> acc.add(evaluate_pair(pred, gt, T, src_visible=sv, trg_visible=tv))  # doctest: +SKIP
    >>> acc.summary()["overall"]["pck_point"]                                 # doctest: +SKIP
    """

    def __init__(self, alphas=DEFAULT_ALPHAS):
        self.alphas = tuple(float(x) for x in _check_alphas(alphas))
        self.results: List[PairResult] = []

    def __len__(self) -> int:
        return len(self.results)

    def add(self, result: PairResult) -> PairResult:
        """Add one pair's result (must have been computed with the same alphas)."""
        if not isinstance(result, PairResult):
            raise TypeError(f"result must be a PairResult, got {type(result).__name__}")
        if len(result.n_correct) != len(self.alphas):
            raise ValueError(f"result has {len(result.n_correct)} alphas, expected {len(self.alphas)}")
        self.results.append(result)
        return result

    def add_pair(self, pred, trg_kps, threshold, **kwargs) -> PairResult:
        """Score one pair with :func:`evaluate_pair` (same keywords) and add it."""
        kwargs.setdefault("alphas", self.alphas)
        return self.add(evaluate_pair(pred, trg_kps, threshold, **kwargs))

    def categories(self) -> List[str]:
        """Categories seen, sorted."""
        return sorted({r.category for r in self.results})

    @staticmethod
    def _stats(results: Sequence[PairResult], na: int) -> dict:
        # arrays over the pairs; every figure is computed with the operations
        # of a loop over the pairs (integer sums, the same per-pair divisions,
        # np.mean over the same stacked rows), so the values do not change
        n_pairs = len(results)
        npts = np.array([r.n_points for r in results], dtype=np.int64)
        ngeo = np.array([r.n_geo for r in results], dtype=np.int64)
        nc = (np.array([r.n_correct for r in results], dtype=np.int64)
              if results else np.zeros((0, na), np.int64))
        n_points = int(npts.sum())
        n_correct = nc.sum(axis=0) if results else np.zeros(na, dtype=np.int64)
        sc = npts > 0
        per_image = nc[sc] / npts[sc][:, None]
        g = np.flatnonzero(ngeo > 0)
        n_geo = int(ngeo[g].sum())
        if len(g):
            gc = np.array([results[i].n_geo_correct for i in g], dtype=np.int64)
            n_geo_correct = gc.sum(axis=0)
            per_image_geo = gc / ngeo[g][:, None]
        else:
            n_geo_correct = np.zeros(na, dtype=np.int64)
            per_image_geo = np.zeros((0, na))
        with_bd = [r.breakdown for r in results if r.breakdown]
        has_bd = bool(with_bd)
        bd = {key: (np.array([b[key] for b in with_bd], dtype=np.int64).sum(axis=0)
                    if has_bd else np.zeros(na, dtype=np.int64)) for key in BREAKDOWN_KEYS}
        n_scored = len(per_image)
        out = {
            "n_pairs": n_pairs,
            "n_pairs_scored": n_scored,
            "n_points": int(n_points),
            "pck_point": (n_correct / n_points).tolist() if n_points else [None] * na,
            "pck_image": np.mean(per_image, axis=0).tolist() if n_scored else [None] * na,
            "n_geo_points": int(n_geo),
            "n_geo_pairs": len(per_image_geo),
            "pck_geo": (n_geo_correct / n_geo).tolist() if n_geo else [None] * na,
            "pck_geo_image": (np.mean(per_image_geo, axis=0).tolist() if len(per_image_geo)
                              else [None] * na),
            # GeoAware-SC's occurrence ratios: pairs with a geometry-aware
            # keypoint among the scored pairs, geometry-aware among scored points
            "geo_pair_ratio": len(per_image_geo) / n_scored if n_scored else None,
            "geo_point_ratio": n_geo / n_points if n_points else None,
        }
        if has_bd:
            out["breakdown"] = {key: v.tolist() for key, v in bd.items()}
            den = bd["10"] + bd["11"] + bd["1x"]
            num = bd["10_hat"] + bd["11_hat"] + bd["1x_hat"]
            out["pck_breakdown"] = [float(x) / float(y) if y else None for x, y in zip(num, den)]
        return out

    @staticmethod
    def _by_keypoint(results: Sequence[PairResult], na: int) -> dict:
        """keypoint id -> {"n_points", "pck_point"} over the scored keypoints."""
        rs = [r for r in results if r.kp_ids is not None and len(r.kp_ids)]
        if not rs:
            return {}
        ids = np.concatenate([np.asarray(r.kp_ids, dtype=np.int64) for r in rs])
        ok = np.concatenate([np.asarray(r.kp_correct).reshape(na, -1) for r in rs], axis=1)
        keys, inv = np.unique(ids, return_inverse=True)
        n = np.bincount(inv, minlength=len(keys))
        c = np.zeros((len(keys), na), dtype=np.int64)
        np.add.at(c, inv, ok.T.astype(np.int64))
        return {str(int(k)): {"n_points": int(n[i]), "pck_point": (c[i] / n[i]).tolist()}
                for i, k in enumerate(keys)}

    def _split_by(self, attr: str, na: int) -> dict:
        groups: Dict[int, List[PairResult]] = {}
        for r in self.results:
            v = getattr(r, attr)
            if v is not None:
                groups.setdefault(int(v), []).append(r)
        return {str(v): self._stats(groups[v], na) for v in sorted(groups)}

    def summary(self) -> dict:
        """All figures as a JSON-ready dict.

        Returns
        -------
        dict
            ``alphas``; ``categories``: category → stats (plus
            ``by_keypoint``: keypoint id → ``n_points``, ``pck_point``);
            ``overall``: stats pooled over all pairs plus
            ``pck_point_catmean``, ``pck_image_catmean``, ``pck_geo_catmean``
            and ``pck_geo_image_catmean`` (means of the per-category figures
            over the categories that have them); ``by_azimuth`` (azimuth
            difference 0..4 → stats) and ``by_mirror`` (0/1 → stats) where
            pairs carry them.  Stats hold ``n_pairs``, ``n_pairs_scored``,
            ``n_points``, ``pck_point``, ``pck_image``, ``n_geo_points``,
            ``n_geo_pairs``, ``pck_geo`` (per point), ``pck_geo_image`` (per
            image, over pairs with a geometry-aware keypoint),
            ``geo_pair_ratio``, ``geo_point_ratio``, and with a flip
            permutation ``breakdown`` (counter → list per α) and
            ``pck_breakdown``.  PCK values are fractions in [0, 1] per α, or
            None when nothing was scored.
        """
        na = len(self.alphas)
        by_cat: Dict[str, List[PairResult]] = {}
        for r in self.results:
            by_cat.setdefault(r.category, []).append(r)
        cats = {}
        for c in sorted(by_cat):
            cats[c] = self._stats(by_cat[c], na)
            cats[c]["by_keypoint"] = self._by_keypoint(by_cat[c], na)
        overall = self._stats(self.results, na)
        for key in ("pck_point", "pck_image", "pck_geo", "pck_geo_image"):
            vals = [s[key] for s in cats.values() if s[key][0] is not None]
            overall[key + "_catmean"] = np.mean(vals, axis=0).tolist() if vals else [None] * na
        out = {"alphas": list(self.alphas), "categories": cats, "overall": overall}
        by_az = self._split_by("azimuth_diff", na)
        if by_az:
            out["by_azimuth"] = by_az
        by_mirror = self._split_by("mirror", na)
        if by_mirror:
            out["by_mirror"] = by_mirror
        return out

    def rows(self) -> List[dict]:
        """Flat table rows (one per category, then ``all`` and ``mean``)."""
        s = self.summary()
        return summary_rows(s)

    def to_markdown(self) -> str:
        """Per-category Markdown tables of PCK (per point, per image, geometry-aware)."""
        return summary_markdown(self.summary())


def summary_rows(summary: Mapping) -> List[dict]:
    """Table rows of a summary (see :func:`geomatch.eval.report.summary_rows`)."""
    from .report import summary_rows as _rows

    return _rows(summary)


def summary_markdown(summary: Mapping) -> str:
    """Markdown tables of a summary (see :func:`geomatch.eval.report.summary_markdown`)."""
    from .report import summary_markdown as _md

    return _md(summary)

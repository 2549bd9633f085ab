"""Dataset records shared by all loaders.

A dataset yields :class:`ImageRecord` (one annotated image) and
:class:`PairRecord` (a source/target pair of the same category).  Keypoints
always cover the category's FULL keypoint list so that index ``k`` means the
same semantic part in every image of the category; rows of keypoints that are
not visible in an image hold NaN.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageRecord", "PairRecord"]


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One annotated image.

    Attributes
    ----------
    dataset : str
        Dataset name ("spair", "pfpascal", "ap10k", "cub").
    category : str
        Category (class, species) name.
    key : str
        Identifier unique and stable within the dataset (used as the feature
        cache key), e.g. ``"aeroplane/2008_000033"``.
    path : pathlib.Path
        Image file.
    size : tuple of int
        ``(W, H)`` in pixels.
    keypoints : numpy.ndarray
        float32 ``(K, 2)`` ``(x, y)`` pixels over the category's full keypoint
        list; rows of invisible keypoints are NaN.
    visible : numpy.ndarray
        bool ``(K,)``.
    bbox : numpy.ndarray
        float32 ``(4,)`` ``[x1, y1, x2, y2]``.
    mask_path : pathlib.Path or None
        Segmentation mask where the dataset has one.
    """

    dataset: str
    category: str
    key: str
    path: Path
    size: tuple[int, int]
    keypoints: np.ndarray
    visible: np.ndarray
    bbox: np.ndarray
    mask_path: Path | None = None

    @property
    def num_keypoints(self) -> int:
        """Length K of the category's keypoint list."""
        return int(self.visible.shape[0])


@dataclass(frozen=True, eq=False)
class PairRecord:
    """A source/target pair of images of one category.

    Attributes
    ----------
    dataset, split, category : str
    pair_id : str
        Identifier unique within (dataset, split).
    src, trg : ImageRecord
        Keypoints/visibility may be restricted to the pair's annotation (e.g.
        SPair's per-pair keypoint list), so they can differ from the
        per-image records of :meth:`Dataset.images`.
    keypoint_names : tuple of str
        The K keypoint names of the category.
    flip_perm : numpy.ndarray
        int64 ``(K,)``: index of each keypoint's left/right counterpart
        (itself if it has none).
    meta : dict
        Dataset-specific extras (SPair ``mirror``, ``viewpoint_variation``...).
    """

    dataset: str
    split: str
    category: str
    pair_id: str
    src: ImageRecord
    trg: ImageRecord
    keypoint_names: tuple[str, ...]
    flip_perm: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mutual_visible(self) -> np.ndarray:
        """bool ``(K,)``: keypoints visible in both images."""
        return self.src.visible & self.trg.visible

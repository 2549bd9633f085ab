"""Dataset records shared by all loaders.

A dataset yields :class:`ImageRecord` (one annotated image) and
:class:`PairRecord` (a source/target pair of the same category).  Keypoints
always cover the category's FULL keypoint list so that index ``k`` means the
same semantic part in every image of the category; rows of keypoints that are
not visible in an image hold NaN.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageRecord", "PairRecord", "Dataset", "SkipReport"]


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


# --------------------------------------------------------------------------
# Skipped-pair bookkeeping
# --------------------------------------------------------------------------

@dataclass
class SkipReport:
    """Pairs left out by the last :meth:`Dataset.pairs` call.

    Attributes
    ----------
    count : int
        Number of skipped pairs.
    reasons : list of (str, str)
        ``(pair_id, reason)`` for each skipped pair, in loading order.
    """

    count: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)

    def add(self, pair_id: str, reason: str) -> None:
        self.count += 1
        self.reasons.append((pair_id, reason))

    def by_reason(self) -> dict[str, int]:
        """Number of skipped pairs per reason."""
        out: dict[str, int] = {}
        for _, reason in self.reasons:
            out[reason] = out.get(reason, 0) + 1
        return out

    def __int__(self) -> int:
        return self.count


NO_MUTUAL_KEYPOINT = "no mutually visible keypoint"


# --------------------------------------------------------------------------
# Small parsing helpers shared by the loaders
# --------------------------------------------------------------------------

def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: missing directory {path}")
    return path


def pair_files_by_category(folder: Path) -> dict[str, list[str]]:
    """Pair annotation files ``<id>-<src>-<trg>:<category>.json`` of a folder,
    grouped by category, each list sorted by name (SPair-71k's naming, which
    the AP-10K pairs prepared for GeoAware-SC follow)."""
    by_cat: dict[str, list[str]] = {}
    for fname in os.listdir(folder):
        if fname.endswith(".json") and ":" in fname:
            by_cat.setdefault(fname[:-5].rsplit(":", 1)[1], []).append(fname)
    for v in by_cat.values():
        v.sort()
    return by_cat


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: missing file {path}")
    return path


def read_json(path: Path, what: str) -> dict:
    """Load a JSON object; missing file -> FileNotFoundError, bad JSON or a
    non-object top level -> ValueError naming the file."""
    import json

    require_file(path, what)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed {what} {path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"malformed {what} {path}: expected a JSON object, "
                         f"got {type(data).__name__}")
    return data


def get_field(data: dict, key: str, path: Path, what: str) -> Any:
    """``data[key]`` or ValueError naming the file and the missing field."""
    if key not in data:
        raise ValueError(f"malformed {what} {path}: missing field {key!r}")
    return data[key]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def as_numbers(value: Any, n: int | None, key: str, path: Path, what: str,
               min_len: int | None = None) -> np.ndarray:
    """A flat list of ``n`` finite numbers (float64), else ValueError."""
    ok = isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    if ok and n is not None:
        ok = len(value) == n
    if ok and min_len is not None:
        ok = len(value) >= min_len
    arr = np.asarray(value, dtype=np.float64) if ok else None
    if arr is None or not np.all(np.isfinite(arr)):
        want = f"{n} numbers" if n is not None else "a list of numbers"
        raise ValueError(f"malformed {what} {path}: field {key!r} must be "
                         f"{want}, got {value!r:.80}")
    return arr


def as_int(value: Any, key: str, path: Path, what: str, minimum: int = 1) -> int:
    """A (positive) integer field, else ValueError."""
    if isinstance(value, float) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"malformed {what} {path}: field {key!r} must be an "
                         f"integer >= {minimum}, got {value!r:.80}")
    return int(value)


def frozen_array(arr: np.ndarray) -> np.ndarray:
    """Read-only view so that records can be shared safely."""
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def make_image_record(dataset: str, category: str, key: str, path: Path,
                      size: tuple[int, int], keypoints: np.ndarray,
                      visible: np.ndarray, bbox: np.ndarray,
                      mask_path: Path | None = None) -> ImageRecord:
    """Build an :class:`ImageRecord` with normalized dtypes (NaN rows for
    invisible keypoints, read-only arrays)."""
    kps = np.array(keypoints, dtype=np.float32).reshape(-1, 2)
    vis = np.array(visible, dtype=bool).reshape(-1)
    if vis.shape[0] != kps.shape[0]:
        raise ValueError("keypoints and visible disagree in length")
    kps[~vis] = np.nan
    box = np.array(bbox, dtype=np.float32).reshape(4)
    return ImageRecord(dataset=dataset, category=category, key=key,
                       path=Path(path), size=(int(size[0]), int(size[1])),
                       keypoints=frozen_array(kps), visible=frozen_array(vis),
                       bbox=frozen_array(box),
                       mask_path=None if mask_path is None else Path(mask_path))


def image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of an image file, read from its header only."""
    from PIL import Image, UnidentifiedImageError

    require_file(path, "image")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image {path}: {exc}") from None


# --------------------------------------------------------------------------
# Dataset base class
# --------------------------------------------------------------------------

class PairFolders:
    """Pair handles of a dataset with one folder of pair files named as
    SPair-71k's (:func:`pair_files_by_category`) per split, listed once.

    Mixed in before :class:`Dataset`; the subclass sets ``self._pair_lists = {}``
    and defines ``_pair_dir(split)`` (the folder) and ``_pair_dir_what(split)``
    (what the folder holds, for the error when it is missing).
    """

    _pair_lists: dict[str, dict[str, list[str]]]

    def _split_lists(self, split) -> dict[str, list[str]]:
        if split not in self._pair_lists:
            d = require_dir(self._pair_dir(split), self._pair_dir_what(split))
            self._pair_lists[split] = pair_files_by_category(d)
        return self._pair_lists[split]

    def _pair_handles(self, split, category):
        return self._split_lists(split).get(category, [])


class Dataset:
    """Common interface of the dataset loaders.

    Subclasses set :attr:`name`, :attr:`splits`, :attr:`categories` and
    implement ``_pair_handles(split, category)`` (a cheap, deterministic,
    ordered list of pair handles), ``_load_pair(split, category, handle)``
    (a :class:`PairRecord`), ``_image_handles(split, category)`` and
    ``_load_image(category, handle)``, plus ``_keypoint_names(category)``
    and ``_flip_perm(category)``.
    """

    name: str = ""
    splits: tuple[str, ...] = ()
    split_aliases: dict[str, str] = {}

    def __init__(self, root: str | Path):
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{self.name} root not found: {root}")
        if not root.is_dir():
            raise FileNotFoundError(f"{self.name} root is not a directory: {root}")
        self.root = root
        self.categories: list[str] = []
        self.skipped = SkipReport()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, "
                f"categories={len(self.categories)}, splits={self.splits})")

    # ---- keypoint tables -------------------------------------------------
    def keypoint_names(self, category: str) -> tuple[str, ...]:
        """Names of the category's K keypoints, in annotation order."""
        self._check_category(category)
        return tuple(self._keypoint_names(category))

    def flip_perm(self, category: str) -> np.ndarray:
        """int64 ``(K,)`` index of each keypoint's left/right counterpart
        (itself when it has none)."""
        self._check_category(category)
        return np.array(self._flip_perm(category), dtype=np.int64)

    def num_keypoints(self, category: str) -> int:
        return len(self.keypoint_names(category))

    # ---- selection helpers -----------------------------------------------
    def _canonical_split(self, split: str) -> str:
        if not isinstance(split, str):
            raise TypeError(f"split must be a str, got {type(split).__name__}")
        split = self.split_aliases.get(split, split)
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for {self.name}; "
                             f"expected one of {list(self.splits)}")
        return split

    def _check_category(self, category: str) -> None:
        if category not in self.categories:
            raise ValueError(f"unknown category {category!r} for {self.name}; "
                             f"available: {self.categories}")

    def _select_categories(self, categories) -> list[str]:
        if categories is None:
            return list(self.categories)
        if isinstance(categories, str):
            categories = [categories]
        cats = list(categories)
        for c in cats:
            self._check_category(c)
        return cats

    # ---- pairs -------------------------------------------------------------
    def _sampled_handles(self, split, cats, subsample, seed, per_category,
                         sampling):
        per_cat = [(c, h) for c in cats for h in self._pair_handles(split, c)]
        if subsample is None:
            return per_cat
        if isinstance(subsample, bool) or not isinstance(subsample, (int, np.integer)) \
                or subsample < 0:
            raise ValueError(f"subsample must be a non-negative int or None, "
                             f"got {subsample!r}")
        if sampling not in ("random", "geoaware"):
            raise ValueError(f"sampling must be 'random' or 'geoaware', got {sampling!r}")
        n = int(subsample)
        if sampling == "geoaware":
            # GeoAware-SC: per category, legacy RandomState(seed).choice with
            # replacement over the sorted pair files, in draw order.
            out = []
            for c in cats:
                hs = [h for cc, h in per_cat if cc == c]
                if n == 0 or not hs:
                    continue
                rs = np.random.RandomState(seed)
                out.extend((c, hs[i]) for i in rs.choice(len(hs), n))
            return out
        rng = np.random.default_rng(seed)
        if not per_category:
            take = min(n, len(per_cat))
            idx = np.sort(rng.choice(len(per_cat), size=take, replace=False))
            return [per_cat[i] for i in idx]
        out = []
        for c in cats:
            hs = [h for cc, h in per_cat if cc == c]
            take = min(n, len(hs))
            idx = np.sort(rng.choice(len(hs), size=take, replace=False))
            out.extend((c, hs[i]) for i in idx)
        return out

    def iter_pairs(self, split: str, categories=None, subsample: int | None = None,
                   seed: int = 0, *, per_category: bool = False,
                   sampling: str = "random", keep_empty: bool = False):
        """Generator over the pairs of a split (see :meth:`pairs`)."""
        split = self._canonical_split(split)
        cats = self._select_categories(categories)
        handles = self._sampled_handles(split, cats, subsample, seed,
                                        per_category, sampling)
        self.skipped = report = SkipReport()
        for cat, handle in handles:
            rec = self._load_pair(split, cat, handle)
            if not keep_empty and not np.any(rec.src.visible & rec.trg.visible):
                report.add(rec.pair_id, NO_MUTUAL_KEYPOINT)
                continue
            yield rec

    def pairs(self, split: str, categories=None, subsample: int | None = None,
              seed: int = 0, *, per_category: bool = False,
              sampling: str = "random", keep_empty: bool = False) -> list[PairRecord]:
        """Pairs of a split.

        Parameters
        ----------
        split : str
            One of :attr:`splits` (``"train"`` is accepted for ``"trn"`` and
            vice versa where the dataset names it differently).
        categories : str or list of str, optional
            Restrict to these categories (default: all).
        subsample : int, optional
            Keep a fixed-seed random subset of ``subsample`` pairs, drawn
            without replacement from the ordered pair list (over all selected
            categories, or within each category when ``per_category``), in
            the original order.  ``sampling="geoaware"`` reproduces
            GeoAware-SC instead: per category,
            ``np.random.RandomState(seed).choice(n, subsample)`` (with
            replacement) over the sorted pair files.
        seed : int
            Seed of the subsample.
        keep_empty : bool
            Keep pairs without any keypoint visible in both images (GECO
            evaluates them: they feed the n01/n00 counters).

        Returns
        -------
        list of PairRecord
            Unless ``keep_empty``, pairs without any keypoint visible in both
            images are left out and counted in :attr:`skipped`.
        """
        return list(self.iter_pairs(split, categories, subsample, seed,
                                    per_category=per_category, sampling=sampling,
                                    keep_empty=keep_empty))

    # ---- images ------------------------------------------------------------
    def iter_images(self, split: str, categories=None):
        """Generator over the unique images of a split (see :meth:`images`)."""
        split = self._canonical_split(split)
        for cat in self._select_categories(categories):
            for handle in self._image_handles(split, cat):
                yield self._load_image(cat, handle)

    def images(self, split: str, categories=None) -> list[ImageRecord]:
        """Unique images used by the split, each with its full keypoint list,
        ordered by category then key."""
        return list(self.iter_images(split, categories))

    def images_of_splits(self, splits, categories=None) -> list[ImageRecord]:
        """Unique images of several splits, in split order, each image once
        (an image used by two splits is listed at its first split)."""
        seen, out = set(), []
        for split in splits:
            for rec in self.iter_images(split, categories):
                if rec.key not in seen:
                    seen.add(rec.key)
                    out.append(rec)
        return out

    # ---- to implement ------------------------------------------------------
    def _keypoint_names(self, category):  # pragma: no cover - abstract
        raise NotImplementedError

    def _flip_perm(self, category):  # pragma: no cover - abstract
        raise NotImplementedError

    def _pair_handles(self, split, category):  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_pair(self, split, category, handle):  # pragma: no cover - abstract
        raise NotImplementedError

    def _image_handles(self, split, category):  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_image(self, category, handle):  # pragma: no cover - abstract
        raise NotImplementedError

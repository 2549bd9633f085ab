"""CUB-200-2011 with its 15 part keypoints.

::

    <root>/images.txt                 <image_id> <class_dir>/<file>.jpg
    <root>/image_class_labels.txt     <image_id> <class_id>
    <root>/classes.txt                <class_id> <class_name>
    <root>/train_test_split.txt       <image_id> <is_training_image>
    <root>/bounding_boxes.txt         <image_id> <x> <y> <width> <height>
    <root>/parts/part_locs.txt        <image_id> <part_id> <x> <y> <visible>
    <root>/images/<class_dir>/<file>.jpg
    <root>/segmentations/<class_dir>/<file>.png   (optional)

``<root>`` is the ``CUB_200_2011`` directory.  CUB has no pair list: pairs
are drawn at random, with a fixed seed, among the images of one species in
one split (``pairs_per_species`` ordered pairs of distinct images per
species, or all of them when None).  A part is visible when its flag is 1
and it lies inside the image (as GECO reads it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (Dataset, ImageRecord, PairRecord, frozen_array, image_size,
                   make_image_record, require_file)
from .tables import CUB_LR_PAIRS, CUB_PART_NAMES, flip_permutation

__all__ = ["CUB"]


class CUB(Dataset):
    """CUB-200-2011 loader.

    Parameters
    ----------
    root : path
        The ``CUB_200_2011`` directory.
    pairs_per_species : int or None
        Ordered pairs drawn per species and split (default 50; None: all).
    pair_seed : int
        Seed of the pair drawing (the species id is mixed in, so each
        species' pairs do not depend on the others).
    """

    name = "cub"
    splits = ("train", "test")
    split_aliases = {"trn": "train"}

    def __init__(self, root, pairs_per_species: int | None = 50, pair_seed: int = 0):
        super().__init__(root)
        if pairs_per_species is not None and (
                isinstance(pairs_per_species, bool)
                or not isinstance(pairs_per_species, (int, np.integer))
                or pairs_per_species < 1):
            raise ValueError(f"pairs_per_species must be a positive int or None, "
                             f"got {pairs_per_species!r}")
        self.pairs_per_species = pairs_per_species
        self.pair_seed = int(pair_seed)
        self._perm = flip_permutation(len(CUB_PART_NAMES), CUB_LR_PAIRS)
        self._classes = self._read_table("classes.txt", 2, "classes")
        self.categories = [name for _, name in self._classes]
        self._class_id = {name: int(cid) for cid, name in self._classes}
        self._loaded = False
        self._image_cache: dict[int, ImageRecord] = {}

    # ---- tables -----------------------------------------------------------
    def _keypoint_names(self, category):
        return CUB_PART_NAMES

    def _flip_perm(self, category):
        return self._perm.copy()

    # ---- metadata files -----------------------------------------------------
    def _read_table(self, rel: str, ncols: int, what: str) -> list[tuple[str, ...]]:
        path = require_file(self.root / rel, f"CUB-200-2011 {what} list")
        rows = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.split(maxsplit=ncols - 1) if ncols == 2 else line.split()
                if len(parts) != ncols:
                    raise ValueError(f"malformed CUB-200-2011 {what} list {path}, "
                                     f"line {i}: expected {ncols} columns, got "
                                     f"{len(parts)}")
                rows.append(tuple(p.strip() for p in parts))
        return rows

    def _num(self, value: str, path_rel: str, what: str, cast=float):
        try:
            v = cast(value)
        except ValueError:
            raise ValueError(f"malformed CUB-200-2011 {what} list "
                             f"{self.root / path_rel}: {value!r} is not a number") from None
        if cast is float and not np.isfinite(v):
            raise ValueError(f"malformed CUB-200-2011 {what} list "
                             f"{self.root / path_rel}: non-finite value {value!r}")
        return v

    def _load_meta(self):
        if self._loaded:
            return
        n = self._num
        self._paths = {n(a, "images.txt", "images", int): b
                       for a, b in self._read_table("images.txt", 2, "images")}
        labels = {n(a, "image_class_labels.txt", "class label", int):
                  n(b, "image_class_labels.txt", "class label", int)
                  for a, b in self._read_table("image_class_labels.txt", 2, "class label")}
        split = {n(a, "train_test_split.txt", "split", int):
                 n(b, "train_test_split.txt", "split", int)
                 for a, b in self._read_table("train_test_split.txt", 2, "split")}
        self._bbox = {}
        for row in self._read_table("bounding_boxes.txt", 5, "bounding box"):
            x, y, w, h = (n(v, "bounding_boxes.txt", "bounding box") for v in row[1:])
            self._bbox[n(row[0], "bounding_boxes.txt", "bounding box", int)] = (x, y, x + w, y + h)
        k = len(CUB_PART_NAMES)
        self._parts: dict[int, np.ndarray] = {}
        for row in self._read_table("parts/part_locs.txt", 5, "part location"):
            iid = n(row[0], "parts/part_locs.txt", "part location", int)
            pid = n(row[1], "parts/part_locs.txt", "part location", int)
            if not 1 <= pid <= k:
                raise ValueError(f"malformed CUB-200-2011 part location list "
                                 f"{self.root / 'parts/part_locs.txt'}: part id {pid} "
                                 f"not in 1..{k}")
            arr = self._parts.setdefault(iid, np.zeros((k, 3)))
            arr[pid - 1] = [n(v, "parts/part_locs.txt", "part location") for v in row[2:]]
        by = {}
        for iid in sorted(self._paths):
            for name, f in (("class label", labels), ("split", split),
                            ("bounding box", self._bbox)):
                if iid not in f:
                    raise ValueError(f"CUB-200-2011: image {iid} "
                                     f"({self._paths[iid]}) has no {name} entry")
            s = "train" if split[iid] == 1 else "test"
            by.setdefault((s, labels[iid]), []).append(iid)
        self._by_split_class = by
        self._loaded = True

    # ---- pairs ----------------------------------------------------------------
    def _image_handles(self, split, category):
        self._load_meta()
        return list(self._by_split_class.get((split, self._class_id[category]), []))

    def _pair_handles(self, split, category):
        ids = self._image_handles(split, category)
        n = len(ids)
        total = n * (n - 1)
        if total == 0:
            return []
        if self.pairs_per_species is None or self.pairs_per_species >= total:
            flat = np.arange(total)
        else:
            rng = np.random.default_rng([self.pair_seed, self._class_id[category],
                                         0 if split == "train" else 1])
            flat = np.sort(rng.choice(total, size=self.pairs_per_species, replace=False))
        i = flat // (n - 1)
        r = flat % (n - 1)
        j = r + (r >= i)
        return [(ids[a], ids[b]) for a, b in zip(i.tolist(), j.tolist())]

    def _load_image(self, category, iid) -> ImageRecord:
        rec = self._image_cache.get(iid)
        if rec is not None:
            return rec
        rel = self._paths[iid]
        img = self.root / "images" / rel
        w, h = image_size(img)
        parts = self._parts.get(iid)
        if parts is None:
            raise ValueError(f"CUB-200-2011: image {iid} ({rel}) has no entry in "
                             f"{self.root / 'parts/part_locs.txt'}")
        xy = parts[:, :2]
        vis = (parts[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 1] >= 0) \
            & (xy[:, 0] <= w) & (xy[:, 1] <= h)
        mask = self.root / "segmentations" / Path(rel).with_suffix(".png")
        rec = make_image_record("cub", category, str(Path(rel).with_suffix("")).replace("\\", "/"),
                                img, (w, h), xy, vis, self._bbox[iid],
                                mask if mask.is_file() else None)
        self._image_cache[iid] = rec
        return rec

    def _load_pair(self, split, category, handle) -> PairRecord:
        a, b = handle
        src = self._load_image(category, a)
        trg = self._load_image(category, b)
        return PairRecord(dataset="cub", split=split, category=category,
                          pair_id=f"{a}-{b}:{category}", src=src, trg=trg,
                          keypoint_names=CUB_PART_NAMES,
                          flip_perm=frozen_array(self._perm.copy()),
                          meta={"src_image_id": a, "trg_image_id": b,
                                "pair_seed": self.pair_seed})

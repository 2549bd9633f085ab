"""SPair-71k in its published on-disk layout.

::

    <root>/JPEGImages/<cat>/<name>.jpg
    <root>/ImageAnnotation/<cat>/<name>.json   kps {"0".."29": [x, y] | null},
                                               bndbox, image_width, image_height
    <root>/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json
    <root>/Segmentation/<cat>/<name>.png       (optional)

Keypoints follow the published protocol of GeoAware-SC and GECO: each image
carries the FULL keypoint list of its category from ``ImageAnnotation``, and
a keypoint is scored when it is visible in both images of a pair.  The pair
file supplies the bounding boxes and image sizes (as GeoAware-SC reads them)
and everything else (``mirror``, ``viewpoint_variation``, ``kps_ids``, ...)
lands in :attr:`PairRecord.meta`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .base import (Dataset, ImageRecord, PairFolders, PairRecord, as_int, as_numbers,
                   frozen_array, get_field, make_image_record, read_json,
                   require_dir, require_file)
from .tables import (SPAIR_CATEGORIES, SPAIR_FRONT_BACK_PAIRS,
                     SPAIR_KEYPOINT_NAMES, SPAIR_LR_PAIRS, flip_permutation)

__all__ = ["SPair"]

_PAIR_FIELDS = ("src_imname", "trg_imname", "category", "src_bndbox",
                "trg_bndbox", "src_imsize", "trg_imsize")


class SPair(PairFolders, Dataset):
    """SPair-71k loader.

    Parameters
    ----------
    root : path
        The ``SPair-71k`` directory.
    flip_table : {"lr", "geco"}
        ``"lr"`` (default): strict left/right counterparts (GeoAware-SC).
        ``"geco"``: GECO's permutation csv, which also swaps a few front/back
        parts of vehicles (wheels, license plates, lights).
    """

    name = "spair"
    splits = ("trn", "val", "test")
    split_aliases = {"train": "trn"}

    def __init__(self, root, flip_table: str = "lr"):
        super().__init__(root)
        if flip_table not in ("lr", "geco"):
            raise ValueError(f"flip_table must be 'lr' or 'geco', got {flip_table!r}")
        self.flip_table = flip_table
        ann = require_dir(self.root / "ImageAnnotation", "SPair-71k ImageAnnotation")
        present = {p.name for p in ann.iterdir() if p.is_dir()}
        self.categories = [c for c in SPAIR_CATEGORIES if c in present]
        if not self.categories:
            raise FileNotFoundError(
                f"SPair-71k: no category folder of {list(SPAIR_CATEGORIES)} "
                f"under {ann}")
        self._pair_lists = {}
        self._image_cache: dict[tuple[str, str], ImageRecord] = {}
        self._azimuth: dict[tuple[str, str], int] = {}

    # ---- tables -----------------------------------------------------------
    def _keypoint_names(self, category):
        return SPAIR_KEYPOINT_NAMES[category]

    def _flip_perm(self, category):
        pairs = list(SPAIR_LR_PAIRS[category])
        if self.flip_table == "geco":
            pairs += SPAIR_FRONT_BACK_PAIRS.get(category, [])
        return flip_permutation(len(SPAIR_KEYPOINT_NAMES[category]), pairs)

    # ---- pair lists ---------------------------------------------------------
    def _pair_dir(self, split) -> Path:
        return self.root / "PairAnnotation" / split

    def _pair_dir_what(self, split) -> str:
        return f"SPair-71k pair annotations of split {split!r}"

    def _image_handles(self, split, category):
        names = set()
        for fname in self._pair_handles(split, category):
            parts = fname[:-5].rsplit(":", 1)[0].split("-")
            if len(parts) == 3:
                names.update(parts[1:])
            else:  # unusual name: read the pair file itself
                path = self._pair_dir(split) / fname
                data = read_json(path, "SPair-71k pair annotation")
                for key in ("src_imname", "trg_imname"):
                    names.add(Path(str(get_field(data, key, path,
                                                 "SPair-71k pair annotation"))).stem)
        return sorted(names)

    # ---- loading ------------------------------------------------------------
    def _load_image(self, category, stem) -> ImageRecord:
        ck = (category, stem)
        rec = self._image_cache.get(ck)
        if rec is not None:
            return rec
        what = "SPair-71k image annotation"
        path = self.root / "ImageAnnotation" / category / f"{stem}.json"
        data = read_json(path, what)
        names = SPAIR_KEYPOINT_NAMES[category]
        kps, vis = _parse_kps(get_field(data, "kps", path, what), len(names), path)
        w = as_int(get_field(data, "image_width", path, what), "image_width", path, what)
        h = as_int(get_field(data, "image_height", path, what), "image_height", path, what)
        bbox = as_numbers(get_field(data, "bndbox", path, what), 4, "bndbox", path, what)
        az = data.get("azimuth_id")
        if isinstance(az, (int, np.integer)) and not isinstance(az, bool):
            self._azimuth[ck] = int(az)
        img = self.root / "JPEGImages" / category / f"{stem}.jpg"
        require_file(img, "SPair-71k image")
        mask = self.root / "Segmentation" / category / f"{stem}.png"
        rec = make_image_record("spair", category, f"{category}/{stem}", img,
                                (w, h), kps, vis, bbox,
                                mask if mask.is_file() else None)
        self._image_cache[ck] = rec
        return rec

    def _load_pair(self, split, category, fname) -> PairRecord:
        what = "SPair-71k pair annotation"
        path = self._pair_dir(split) / fname
        data = read_json(path, what)
        for key in _PAIR_FIELDS:
            get_field(data, key, path, what)
        if data["category"] != category:
            raise ValueError(f"malformed {what} {path}: category "
                             f"{data['category']!r} does not match file name "
                             f"category {category!r}")
        side, mismatch = {}, {}
        for s in ("src", "trg"):
            imname = data[f"{s}_imname"]
            if not isinstance(imname, str) or not imname:
                raise ValueError(f"malformed {what} {path}: field "
                                 f"'{s}_imname' must be a file name")
            img = self._load_image(category, Path(imname).stem)
            box = as_numbers(data[f"{s}_bndbox"], 4, f"{s}_bndbox", path, what)
            size = as_numbers(data[f"{s}_imsize"], None, f"{s}_imsize", path,
                              what, min_len=2)
            wh = (int(size[0]), int(size[1]))
            if wh != img.size:
                mismatch[s] = wh
            side[s] = dataclasses.replace(img, bbox=_ro(box))
        meta = {k: v for k, v in data.items() if k not in _PAIR_FIELDS}
        if mismatch:  # sizes are taken from ImageAnnotation; keep the others
            meta["pair_imsize_mismatch"] = mismatch
        meta["annotation_path"] = path
        for s in ("src", "trg"):   # azimuth bins of ImageAnnotation (0..7), where given
            az = self._azimuth.get((category, Path(data[f"{s}_imname"]).stem))
            if az is not None:
                meta[f"{s}_azimuth_id"] = az
        return PairRecord(dataset="spair", split=split, category=category,
                          pair_id=fname[:-5], src=side["src"], trg=side["trg"],
                          keypoint_names=SPAIR_KEYPOINT_NAMES[category],
                          flip_perm=_ro(self._flip_perm(category), np.int64),
                          meta=meta)


def _ro(arr, dtype=np.float32):
    return frozen_array(np.array(arr, dtype=dtype))


def _parse_kps(kps, num, path):
    """SPair ``kps`` dict -> ((num, 2) float, (num,) bool)."""
    what = "SPair-71k image annotation"
    if not isinstance(kps, dict):
        raise ValueError(f"malformed {what} {path}: field 'kps' must be an "
                         f"object mapping keypoint ids to [x, y] or null")
    xy = np.full((num, 2), np.nan, dtype=np.float64)
    vis = np.zeros(num, dtype=bool)
    for key, val in kps.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"malformed {what} {path}: keypoint id {key!r} "
                             f"is not an integer") from None
        if val is None:
            continue
        pt = as_numbers(val, 2, f"kps[{key!r}]", path, what)
        if not 0 <= k < num:
            raise ValueError(f"malformed {what} {path}: keypoint {k} is "
                             f"annotated but the category has {num} keypoints")
        xy[k] = pt
        vis[k] = True
    return xy, vis

"""AP-10K as prepared for GeoAware-SC (``prepare_ap10k.ipynb``).

::

    <root>/ImageAnnotation/<family>/<species>/<id>.json
        COCO-style per-image record: keypoints (17 x [x, y, v], flat),
        bbox [left, top, width, height], width, height, name, supercategory
    <root>/JPEGImages/<family>/<species>/<id>.jpg
    <root>/PairAnnotation/<split>/<src>-<trg>:<category>.json
        {"src_json_path": ..., "trg_json_path": ...}

``<split>`` is ``trn``/``val``/``test`` for intra-species pairs (category =
species), ``val_cross_species``/``test_cross_species`` for pairs across the
species of one family (category = family) and ``val_cross_family``/
``test_cross_family`` for pairs across families (category ``"all"``).  The
json paths inside pair files were written relative to GeoAware-SC's working
directory (``data/ap-10k/ImageAnnotation/...``); they are resolved under
``<root>/ImageAnnotation``.  A keypoint is visible when its ``v`` flag is
positive (GeoAware-SC scores ``v_src/2 * v_trg/2 > 0``).
"""
from __future__ import annotations

from pathlib import Path


from .base import (Dataset, ImageRecord, PairFolders, PairRecord, as_int, as_numbers,
                   frozen_array, get_field, make_image_record, read_json,
                   require_dir, require_file)
from .tables import AP10K_KEYPOINT_NAMES, AP10K_LR_PAIRS, flip_permutation

__all__ = ["AP10K"]

SPLIT_KINDS = {"intra-species": "", "cross-species": "_cross_species",
               "cross-family": "_cross_family"}


class AP10K(PairFolders, Dataset):
    """AP-10K loader.

    Parameters
    ----------
    root : path
        The ``ap-10k`` directory.
    split_kind : {"intra-species", "cross-species", "cross-family"}
        Which pair set to read.
    """

    name = "ap10k"
    split_aliases = {"train": "trn"}

    def __init__(self, root, split_kind: str = "intra-species"):
        super().__init__(root)
        kind = str(split_kind).replace("_", "-")
        if kind not in SPLIT_KINDS:
            raise ValueError(f"split_kind must be one of {list(SPLIT_KINDS)}, "
                             f"got {split_kind!r}")
        self.split_kind = kind
        self.splits = ("trn", "val", "test") if kind == "intra-species" else ("val", "test")
        ann = require_dir(self.root / "ImageAnnotation", "AP-10K ImageAnnotation")
        self.families: dict[str, list[str]] = {}
        for fam in sorted(p.name for p in ann.iterdir() if p.is_dir()):
            species = sorted(p.name for p in (ann / fam).iterdir() if p.is_dir())
            if species:
                self.families[fam] = species
        if not self.families:
            raise FileNotFoundError(f"AP-10K: no <family>/<species> folder under {ann}")
        if kind == "intra-species":
            self.categories = sorted(s for v in self.families.values() for s in v)
        elif kind == "cross-species":
            self.categories = [f for f, v in self.families.items() if len(v) > 1]
        else:
            self.categories = ["all"]
        self._pair_lists = {}
        self._image_cache: dict[Path, ImageRecord] = {}
        self._perm = flip_permutation(len(AP10K_KEYPOINT_NAMES), AP10K_LR_PAIRS)

    # ---- tables -----------------------------------------------------------
    def _keypoint_names(self, category):
        return AP10K_KEYPOINT_NAMES

    def _flip_perm(self, category):
        return self._perm.copy()

    # ---- pair lists ---------------------------------------------------------
    def _pair_dir(self, split) -> Path:
        return self.root / "PairAnnotation" / (split + SPLIT_KINDS[self.split_kind])

    def _pair_dir_what(self, split) -> str:
        return f"AP-10K pair annotations of split {split!r} ({self.split_kind})"

    def _pair_json_paths(self, split, fname):
        what = "AP-10K pair annotation"
        path = self._pair_dir(split) / fname
        data = read_json(path, what)
        out = []
        for key in ("src_json_path", "trg_json_path"):
            val = get_field(data, key, path, what)
            if not isinstance(val, str) or not val:
                raise ValueError(f"malformed {what} {path}: field {key!r} must "
                                 f"be a path string")
            out.append(self._resolve(val))
        return path, data, out[0], out[1]

    def _resolve(self, stored: str) -> Path:
        s = stored.replace("\\", "/")
        marker = "ImageAnnotation/"
        if marker in s:
            return self.root / "ImageAnnotation" / s.rsplit(marker, 1)[1]
        p = Path(s)
        return p if p.is_absolute() else self.root / p

    def _image_handles(self, split, category):
        seen = set()
        for fname in self._pair_handles(split, category):
            _, _, a, b = self._pair_json_paths(split, fname)
            seen.update((a, b))
        return sorted(seen)

    # ---- loading ------------------------------------------------------------
    def _load_image(self, category, path: Path) -> ImageRecord:
        rec = self._image_cache.get(path)
        if rec is not None:
            return rec
        what = "AP-10K image annotation"
        data = read_json(path, what)
        raw = as_numbers(get_field(data, "keypoints", path, what),
                         3 * len(AP10K_KEYPOINT_NAMES), "keypoints", path, what)
        raw = raw.reshape(-1, 3)
        vis = raw[:, 2] > 0
        l, t, w, h = as_numbers(get_field(data, "bbox", path, what), 4, "bbox", path, what)
        width = as_int(get_field(data, "width", path, what), "width", path, what)
        height = as_int(get_field(data, "height", path, what), "height", path, what)
        rel = path.relative_to(self.root / "ImageAnnotation")
        if len(rel.parts) != 3:
            raise ValueError(f"AP-10K image annotation {path} is not under "
                             f"ImageAnnotation/<family>/<species>/")
        family, species = rel.parts[0], rel.parts[1]
        img = self.root / "JPEGImages" / family / species / f"{path.stem}.jpg"
        require_file(img, "AP-10K image")
        rec = make_image_record("ap10k", species, f"{family}/{species}/{path.stem}",
                                img, (width, height), raw[:, :2], vis,
                                [l, t, l + w, t + h], None)
        self._image_cache[path] = rec
        return rec

    def _load_pair(self, split, category, fname) -> PairRecord:
        path, data, a, b = self._pair_json_paths(split, fname)
        src = self._load_image(category, a)
        trg = self._load_image(category, b)
        meta = {k: v for k, v in data.items()
                if k not in ("src_json_path", "trg_json_path")}
        meta.update(annotation_path=path, split_kind=self.split_kind,
                    src_species=src.category, trg_species=trg.category,
                    src_family=src.key.split("/")[0], trg_family=trg.key.split("/")[0])
        return PairRecord(dataset="ap10k", split=split, category=category,
                          pair_id=fname[:-5], src=src, trg=trg,
                          keypoint_names=AP10K_KEYPOINT_NAMES,
                          flip_perm=frozen_array(self._perm.copy()), meta=meta)

"""PF-PASCAL in its published on-disk layout.

::

    <root>/{train,val,test}_pairs_pf_pascal.csv
    <root>/JPEGImages/<name>.jpg
    <root>/Annotations/<class>/<name>.mat       kps (K x 2, NaN rows = not
                                                visible), bbox (optional)

``<root>`` is the ``PF-dataset-PASCAL`` directory.  The csv files hold one
pair per row after a header: source path, target path (relative to the
directory above ``<root>``), class id 1..20, and for ``val``/``test`` the
``;``-separated x and y lists of the source (``XA``, ``YA``) and target
(``XB``, ``YB``) points.  Those points are the keypoints visible in both
images, in annotation order; the loader places them at their index in the
class's full keypoint list (read from the ``.mat`` files), so that index k
means the same part in every image of the class.  For ``train`` the
keypoints come from the ``.mat`` files alone (as in GeoAware-SC and GECO).
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from .base import (Dataset, ImageRecord, PairRecord, frozen_array,
                   image_size, make_image_record, require_dir, require_file)
from .tables import PFPASCAL_CLASSES, flip_permutation

__all__ = ["PFPascal"]


class PFPascal(Dataset):
    """PF-PASCAL loader (20 PASCAL VOC classes).

    Parameters
    ----------
    root : path
        The ``PF-dataset-PASCAL`` directory.
    keypoint_names : dict, optional
        ``{class: [name, ...]}`` to name a class's keypoints (default
        ``"keypoint <i>"``; the dataset ships no names).
    flip_pairs : dict, optional
        ``{class: [(i, j), ...]}`` left/right counterparts of a class
        (default: none, i.e. the identity permutation).
    """

    name = "pfpascal"
    splits = ("train", "val", "test")
    split_aliases = {"trn": "train"}

    def __init__(self, root, keypoint_names: dict | None = None,
                 flip_pairs: dict | None = None):
        super().__init__(root)
        self.categories = list(PFPASCAL_CLASSES)
        for opt, val in (("keypoint_names", keypoint_names), ("flip_pairs", flip_pairs)):
            if val is not None and (not isinstance(val, dict)
                                    or not set(val) <= set(PFPASCAL_CLASSES)):
                raise ValueError(f"{opt} must be a dict keyed by PF-PASCAL class "
                                 f"names {list(PFPASCAL_CLASSES)}")
        self._names_override = {k: tuple(str(n) for n in v)
                                for k, v in (keypoint_names or {}).items()}
        self._pairs_override = {k: [tuple(p) for p in v]
                                for k, v in (flip_pairs or {}).items()}
        self._rows: dict[str, list[dict]] = {}
        self._num_kps: dict[str, int] = {}
        self._mat_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]] = {}
        self._image_cache: dict[tuple[str, str], ImageRecord] = {}

    # ---- tables -----------------------------------------------------------
    def _keypoint_names(self, category):
        k = self._category_k(category)
        names = self._names_override.get(category)
        if names is None:
            return tuple(f"keypoint {i}" for i in range(k))
        if len(names) != k:
            raise ValueError(f"keypoint_names[{category!r}] has {len(names)} "
                             f"names but the class has {k} keypoints")
        return names

    def _flip_perm(self, category):
        # No published left/right table exists for PF-PASCAL (see tables.py);
        # the identity unless the user supplied flip_pairs.
        return flip_permutation(self._category_k(category),
                                self._pairs_override.get(category, []))

    def _category_k(self, category) -> int:
        """K of a class: the largest keypoint count of its ``.mat`` files."""
        if category not in self._num_kps:
            d = require_dir(self.root / "Annotations" / category,
                            f"PF-PASCAL annotations of class {category!r}")
            k = 0
            for mat in sorted(d.glob("*.mat")):
                k = max(k, self._read_mat(category, mat)[0].shape[0])
            if k == 0:
                raise FileNotFoundError(f"PF-PASCAL: no .mat annotation in {d}")
            self._num_kps[category] = k
        return self._num_kps[category]

    # ---- csv ----------------------------------------------------------------
    def _csv_rows(self, split) -> list[dict]:
        if split in self._rows:
            return self._rows[split]
        path = require_file(self.root / f"{split}_pairs_pf_pascal.csv",
                            f"PF-PASCAL {split} pair list")
        with open(path, newline="", encoding="utf-8") as fh:
            table = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
        if not table:
            raise ValueError(f"malformed PF-PASCAL pair list {path}: empty file")
        header, body = table[0], table[1:]
        with_points = split != "train"
        need = 7 if with_points else 3
        rows = []
        for i, r in enumerate(body, start=2):
            where = f"PF-PASCAL pair list {path}, line {i}"
            if len(r) < need:
                raise ValueError(f"malformed {where}: expected at least {need} "
                                 f"columns, got {len(r)}")
            try:
                cls = int(float(r[2]))
            except ValueError:
                raise ValueError(f"malformed {where}: class id {r[2]!r} is not "
                                 f"an integer") from None
            if not 1 <= cls <= len(PFPASCAL_CLASSES):
                raise ValueError(f"malformed {where}: class id {cls} not in 1..20")
            row = {"line": i, "src": r[0].strip(), "trg": r[1].strip(),
                   "category": PFPASCAL_CLASSES[cls - 1], "csv": path,
                   "extra": dict(zip(header[3:], r[3:])) if not with_points else {}}
            if with_points:
                pts = [_parse_list(r[c], where, header[c] if c < len(header) else c)
                       for c in (3, 4, 5, 6)]
                n = len(pts[0])
                if any(len(p) != n for p in pts):
                    raise ValueError(f"malformed {where}: the x/y lists must "
                                     f"have the same length, got "
                                     f"{[len(p) for p in pts]}")
                row["src_xy"] = np.stack([pts[0], pts[1]], 1).reshape(n, 2)
                row["trg_xy"] = np.stack([pts[2], pts[3]], 1).reshape(n, 2)
            rows.append(row)
        self._rows[split] = rows
        return rows

    def _pair_handles(self, split, category):
        return [r for r in self._csv_rows(split) if r["category"] == category]

    def _image_handles(self, split, category):
        seen = {}
        for r in self._pair_handles(split, category):
            for rel in (r["src"], r["trg"]):
                seen.setdefault(Path(rel).stem, rel)
        return [seen[k] for k in sorted(seen)]

    # ---- loading ------------------------------------------------------------
    def _resolve_image(self, rel: str) -> Path:
        relp = Path(rel)
        cands = [self.root.parent / relp]
        if len(relp.parts) > 1:
            cands.append(self.root / Path(*relp.parts[1:]))
        cands.append(self.root / "JPEGImages" / relp.name)
        for c in cands:
            if c.is_file():
                return c
        raise FileNotFoundError(f"PF-PASCAL image not found: {rel!r} (looked "
                                f"for {', '.join(str(c) for c in cands)})")

    def _read_mat(self, category, path: Path):
        key = (category, path.stem)
        if key in self._mat_cache:
            return self._mat_cache[key]
        require_file(path, "PF-PASCAL annotation")
        mat = _load_annotation(path)
        if "kps" not in mat:
            raise ValueError(f"malformed PF-PASCAL annotation {path}: missing "
                             f"field 'kps'")
        kps = np.asarray(mat["kps"])
        if kps.size == 0:
            kps = kps.reshape(0, 2)
        if kps.ndim != 2 or kps.shape[1] != 2 or not np.issubdtype(kps.dtype, np.number):
            raise ValueError(f"malformed PF-PASCAL annotation {path}: 'kps' must "
                             f"be a numeric K x 2 array, got shape {kps.shape}")
        bbox = None
        if "bbox" in mat:
            b = np.asarray(mat["bbox"], dtype=np.float64).reshape(-1)
            if b.size != 4 or not np.all(np.isfinite(b)):
                raise ValueError(f"malformed PF-PASCAL annotation {path}: 'bbox' "
                                 f"must hold 4 numbers")
            bbox = b
        out = (kps.astype(np.float64), bbox)
        self._mat_cache[key] = out
        return out

    def _load_image(self, category, rel) -> ImageRecord:
        stem = Path(rel).stem
        ck = (category, stem)
        if ck in self._image_cache:
            return self._image_cache[ck]
        img = self._resolve_image(rel)
        w, h = image_size(img)
        kps, bbox = self._read_mat(
            category, self.root / "Annotations" / category / f"{stem}.mat")
        k = self._category_k(category)
        full = np.full((k, 2), np.nan)
        full[: kps.shape[0]] = kps
        vis = np.all(np.isfinite(full), axis=1)
        if bbox is None:
            bbox = np.array([0.0, 0.0, w, h])
        rec = make_image_record("pfpascal", category, f"{category}/{stem}", img,
                                (w, h), full, vis, bbox, None)
        self._image_cache[ck] = rec
        return rec

    def _load_pair(self, split, category, row) -> PairRecord:
        src = self._load_image(category, row["src"])
        trg = self._load_image(category, row["trg"])
        meta = {"csv_path": row["csv"], "csv_line": row["line"], **row["extra"]}
        if "src_xy" in row:
            src, trg, meta["kp_index"] = _place_csv_points(src, trg, row)
        else:
            meta["kp_index"] = "annotation"
        pair_id = f"{Path(row['src']).stem}-{Path(row['trg']).stem}:{category}"
        return PairRecord(dataset="pfpascal", split=split, category=category,
                          pair_id=pair_id, src=src, trg=trg,
                          keypoint_names=self.keypoint_names(category),
                          flip_perm=frozen_array(self._flip_perm(category)),
                          meta=meta)


def _load_annotation(path: Path) -> dict:
    """``kps`` and ``bbox`` of a PF-PASCAL .mat file: geomatch's own MAT
    reader (no scipy needed); scipy.io.loadmat, when installed, for files
    using features that reader does not handle."""
    from .matfile import UnsupportedMatFile, read_mat

    try:
        return read_mat(path, names=("kps", "bbox"))
    except UnsupportedMatFile as exc:
        try:
            from scipy.io import loadmat
        except ImportError:
            raise ValueError(f"malformed PF-PASCAL annotation {path}: unreadable .mat ({exc}; "
                             "installing scipy may help)") from None
        try:
            return loadmat(str(path))
        except Exception as exc2:  # scipy raises several types on bad files
            raise ValueError(f"malformed PF-PASCAL annotation {path}: "
                             f"unreadable .mat ({exc2})") from None
    except ValueError as exc:
        raise ValueError(f"malformed PF-PASCAL annotation {path}: unreadable .mat ({exc})") \
            from None


def _parse_list(text, where, column) -> np.ndarray:
    parts = [p for p in str(text).strip().split(";") if p.strip()]
    try:
        vals = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"malformed {where}: column {column!r} must be a "
                         f"';'-separated list of numbers") from None
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"malformed {where}: column {column!r} holds non-finite values")
    return vals


def _place_csv_points(src: ImageRecord, trg: ImageRecord, row):
    """Put the csv's mutually visible points at their full-list indices.

    The csv lists the keypoints visible in both images, in annotation order.
    When the ``.mat`` files agree (same count, coordinates within 1 px) the
    csv coordinates replace those rows; otherwise the points are put at
    indices 0..n-1 and only they are marked visible (``kp_index="csv-order"``).
    """
    import dataclasses

    a, b = row["src_xy"], row["trg_xy"]
    n = a.shape[0]
    idx = np.flatnonzero(src.visible & trg.visible)
    if (idx.size == n and np.allclose(src.keypoints[idx], a, atol=1.01)
            and np.allclose(trg.keypoints[idx], b, atol=1.01)):
        out = []
        for rec, xy in ((src, a), (trg, b)):
            kps = np.array(rec.keypoints, dtype=np.float32)
            kps[idx] = xy
            out.append(dataclasses.replace(rec, keypoints=frozen_array(kps)))
        return out[0], out[1], "annotation"
    k = src.visible.shape[0]
    if n > k:
        raise ValueError(f"malformed PF-PASCAL pair list {row['csv']}, line "
                         f"{row['line']}: {n} points but the class has {k} keypoints")
    warnings.warn(f"PF-PASCAL {row['csv']} line {row['line']}: csv points do "
                  f"not match the .mat annotations; using csv order",
                  RuntimeWarning, stacklevel=3)
    out = []
    for rec, xy in ((src, a), (trg, b)):
        kps = np.full((k, 2), np.nan, dtype=np.float32)
        kps[:n] = xy
        vis = np.zeros(k, dtype=bool)
        vis[:n] = True
        out.append(dataclasses.replace(rec, keypoints=frozen_array(kps),
                                       visible=frozen_array(vis)))
    return out[0], out[1], "csv-order"

"""PASCAL-Part in its published on-disk layout, with GECO's part lists.

::

    <root>/Parts/Annotations_Part/<imname>.mat        one ``anno`` struct per image
    <root>/VOCdevkit/VOC2010/JPEGImages/<imname>.jpg  the VOC2010 images

(the layout GECO's ``download_data/prepare_pascalparts.sh`` produces:
``VOCtrainval_03-May-2010.tar`` and the Pascal-Part ``trainval.tar.gz``).
Each ``.mat`` file holds ``anno.imname`` and ``anno.objects``, a struct array
with ``class`` (PASCAL VOC class name), ``mask`` (H x W object mask) and
``parts``, a struct array with ``part_name`` and ``mask``.

Conventions (GECO ``src/dataset/pascalparts.py``; see docs/segmentation.md):

* only images with exactly one annotated object are used (lines 70-78), each
  under its object's class;
* GECO's 20 classes, with ``table`` for the dining table; the part list of a
  class is Pascal-Part's ``part2ind`` index table (GECO
  ``src/dataset/pascalparts_part2ind.py``), e.g. ``engine_1`` ... ``engine_10``
  are separate parts; the classes are the indices that occur, in index order;
* a class without part definitions (boat, chair, table, sofa) has the single
  part ``fg`` = the object mask (lines 142-146);
* a pixel covered by several parts gets the part with the highest index;
  pixels of the object that no part covers are background (lines 158-168);
* GECO's ``split`` argument is stored but unused: ``train`` and ``test`` are
  the same image list; the segmentation classifier is fitted on a seeded
  subset of it (:mod:`geomatch.eval.segmentation`).  Images are listed in
  sorted name order (GECO uses ``os.listdir`` order, which is not portable).

:meth:`PascalParts.part_labels` gives the full-resolution label map,
:meth:`PascalParts.grid_part_scores` the part masks resized to a feature
grid (bilinear, ``align_corners=False``, as GECO ``src/dataset/utils.py``
lines 18-33).  Reading ``.mat`` files needs SciPy (``pip install scipy``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import Dataset, ImageRecord, make_image_record, require_dir

__all__ = ["PascalParts", "PartTable", "PASCALPARTS_CLASSES", "part_table"]

PASCALPARTS_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
                       "chair", "cow", "table", "dog", "horse", "motorbike", "person",
                       "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_CLASS_ALIASES = {"diningtable": "table"}


# --------------------------------------------------------------------------
# Part tables: Pascal-Part part2ind indices, mirror pairs, GECO's orientation
# --------------------------------------------------------------------------

def _numbered(prefix: str, base: int, n: int) -> Dict[str, int]:
    return {f"{prefix}_{k}": base + k for k in range(1, n + 1)}


def _parts_of(category: str) -> Tuple[Dict[str, int], List[Tuple[int, int]]]:
    """(part name -> Pascal-Part index, mirror pairs of indices) of a class."""
    c = category
    if c == "aeroplane":
        p = {"body": 1, "stern": 2, "lwing": 3, "rwing": 4, "tail": 5}
        p.update(_numbered("engine", 10, 10))
        p.update(_numbered("wheel", 20, 10))
        return p, [(3, 4)]
    if c == "bicycle":
        p = {"fwheel": 1, "bwheel": 2, "saddle": 3, "handlebar": 4, "chainwheel": 5}
        p.update(_numbered("headlight", 10, 10))
        return p, [(1, 2)]
    if c == "bird":
        p = {"head": 1, "leye": 2, "reye": 3, "beak": 4, "torso": 5, "neck": 6, "lwing": 7,
             "rwing": 8, "lleg": 9, "lfoot": 10, "rleg": 11, "rfoot": 12, "tail": 13}
        return p, [(2, 3), (7, 8), (9, 11), (10, 12)]
    if c == "bottle":
        return {"cap": 1, "body": 2}, []
    if c in ("bus", "car"):
        p = {"frontside": 1, "leftside": 2, "rightside": 3, "backside": 4, "roofside": 5,
             "leftmirror": 6, "rightmirror": 7, "fliplate": 8, "bliplate": 9}
        p.update(_numbered("door", 10, 10))
        p.update(_numbered("wheel", 20, 10))
        p.update(_numbered("headlight", 30, 10))
        p.update(_numbered("window", 40, 20))
        return p, [(1, 4), (2, 3), (6, 7), (8, 9)]
    if c in ("cat", "dog"):
        p = {"head": 1, "leye": 2, "reye": 3, "lear": 4, "rear": 5, "nose": 6, "torso": 7,
             "neck": 8, "lfleg": 9, "lfpa": 10, "rfleg": 11, "rfpa": 12, "lbleg": 13,
             "lbpa": 14, "rbleg": 15, "rbpa": 16, "tail": 17}
        if c == "dog":
            p["muzzle"] = 18
        return p, [(2, 3), (4, 5), (9, 11), (10, 12), (13, 15), (14, 16)]
    if c in ("cow", "horse", "sheep"):
        p = {"head": 1, "leye": 2, "reye": 3, "lear": 4, "rear": 5, "muzzle": 6, "torso": 9,
             "neck": 10, "lfuleg": 11, "lflleg": 12, "rfuleg": 13, "rflleg": 14,
             "lbuleg": 15, "lblleg": 16, "rbuleg": 17, "rblleg": 18, "tail": 19}
        pairs = [(2, 3), (4, 5), (11, 13), (12, 14), (15, 17), (16, 18)]
        if c in ("cow", "sheep"):
            p.update({"lhorn": 7, "rhorn": 8})
            pairs.append((7, 8))
        else:
            p.update({"lfho": 30, "rfho": 31, "lbho": 32, "rbho": 33})
            pairs += [(30, 31), (32, 33)]
        return p, pairs
    if c == "motorbike":
        p = {"fwheel": 1, "bwheel": 2, "handlebar": 3, "saddle": 4}
        p.update(_numbered("headlight", 10, 10))
        # GECO swaps headlight_1 and headlight_2 too (part2ind.py lines 191-192)
        return p, [(1, 2), (11, 12)]
    if c == "person":
        p = {"head": 1, "leye": 2, "reye": 3, "lear": 4, "rear": 5, "lebrow": 6, "rebrow": 7,
             "nose": 8, "mouth": 9, "hair": 10, "torso": 11, "neck": 12, "llarm": 13,
             "luarm": 14, "lhand": 15, "rlarm": 16, "ruarm": 17, "rhand": 18, "llleg": 19,
             "luleg": 20, "lfoot": 21, "rlleg": 22, "ruleg": 23, "rfoot": 24}
        return p, [(2, 3), (4, 5), (6, 7), (13, 16), (14, 17), (15, 18), (19, 22), (20, 23),
                   (21, 24)]
    if c == "pottedplant":
        return {"pot": 1, "plant": 2}, []
    if c == "train":
        p = {"head": 1, "hfrontside": 2, "hleftside": 3, "hrightside": 4, "hbackside": 5,
             "hroofside": 6}
        for prefix, base in (("headlight", 10), ("coach", 20), ("cfrontside", 30),
                             ("cleftside", 40), ("crightside", 50), ("cbackside", 60),
                             ("croofside", 70)):
            p.update(_numbered(prefix, base, 10))
        pairs = [(2, 5), (3, 4)]
        pairs += [(40 + k, 50 + k) for k in range(1, 11)]   # cleftside_k <-> crightside_k
        pairs += [(30 + k, 60 + k) for k in range(1, 11)]   # cfrontside_k <-> cbackside_k
        return p, pairs
    if c == "tvmonitor":
        return {"screen": 1}, []
    return {}, []            # boat, chair, table, sofa: no part definitions


# GECO's PART_WITH_ORIENTATION marks a part when its permutation entry moves
# it.  Its train table sets cfrontside_10 -> cbackside_10 but not the reverse
# (part2ind.py line 294), so cbackside_10 (index 70) is NOT oriented there.
_GECO_NOT_ORIENTED = {"train": {70}}


@dataclass(frozen=True)
class PartTable:
    """The part classes of one PASCAL-Part category.

    Attributes
    ----------
    category : str
    names : tuple of str
        Part names in class order (class ``k`` is ``names[k]``; label ``k + 1``
        in label maps, 0 is background).  ``("fg",)`` for categories without
        part definitions.
    indices : tuple of int
        Pascal-Part ``part2ind`` index of each part (0 for ``fg``).
    flip_perm : numpy.ndarray
        int64 (P,): the class of each part's left/right (front/back) twin,
        itself when it has none.
    oriented : numpy.ndarray
        bool (P,): GECO's ``KP_WITH_ORIENTATION``, the parts the "geo" metrics
        keep (all False where GECO defines no orientation).
    has_parts : bool
        False for categories whose only class is the object mask.
    """

    category: str
    names: Tuple[str, ...]
    indices: Tuple[int, ...]
    flip_perm: np.ndarray
    oriented: np.ndarray
    has_parts: bool

    @property
    def num_parts(self) -> int:
        return len(self.names)


def part_table(category: str) -> PartTable:
    """The :class:`PartTable` of a PASCAL-Part category (GECO's class names)."""
    if category not in PASCALPARTS_CLASSES:
        raise ValueError(f"unknown PASCAL-Part category {category!r}; "
                         f"expected one of {list(PASCALPARTS_CLASSES)}")
    pimap, pairs = _parts_of(category)
    if not pimap:
        return PartTable(category, ("fg",), (0,), np.zeros(1, np.int64),
                         np.zeros(1, bool), False)
    order = sorted(pimap.items(), key=lambda kv: kv[1])
    names = tuple(n for n, _ in order)
    idx = tuple(i for _, i in order)
    pos = {i: k for k, i in enumerate(idx)}
    perm = np.arange(len(idx), dtype=np.int64)
    oriented = np.zeros(len(idx), dtype=bool)
    skip = _GECO_NOT_ORIENTED.get(category, set())
    for a, b in pairs:
        if a in pos and b in pos:
            perm[pos[a]], perm[pos[b]] = pos[b], pos[a]
            oriented[pos[a]] = a not in skip
            oriented[pos[b]] = b not in skip
    for arr in (perm, oriented):
        arr.setflags(write=False)
    return PartTable(category, names, idx, perm, oriented, True)


# --------------------------------------------------------------------------
# .mat reading
# --------------------------------------------------------------------------

def _loadmat(path: Path):
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is a test dependency
        raise ImportError("reading PASCAL-Part .mat annotations needs SciPy: "
                          "pip install scipy") from exc
    try:
        mat = loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"PASCAL-Part annotation not found: {path}") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"unreadable PASCAL-Part annotation {path}: {exc}") from None
    if "anno" not in mat:
        raise ValueError(f"malformed PASCAL-Part annotation {path}: no 'anno' struct")
    return mat["anno"]


def _field(obj, name: str, path: Path, what: str):
    if not hasattr(obj, name):
        raise ValueError(f"malformed PASCAL-Part annotation {path}: {what} has no "
                         f"field {name!r}")
    return getattr(obj, name)


def _as_list(x) -> list:
    """A squeezed struct array as a list of structs (0, 1 or more)."""
    if isinstance(x, np.ndarray):
        return list(x.reshape(-1))
    return [x]


def _mask(m, path: Path, what: str, shape=None) -> np.ndarray:
    arr = np.asarray(m)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf" or 0 in arr.shape:
        raise ValueError(f"malformed PASCAL-Part annotation {path}: {what} mask must be a "
                         f"2-D numeric array, got {arr.dtype} {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"malformed PASCAL-Part annotation {path}: {what} mask has shape "
                         f"{arr.shape}, the object mask {shape}")
    return arr != 0


@dataclass(frozen=True)
class _Entry:
    imname: str                  # anno.imname: the image file and the record key
    annotation: Path             # the .mat file
    size: Tuple[int, int]        # (W, H)
    bbox: Tuple[float, float, float, float]


class PascalParts(Dataset):
    """PASCAL-Part loader (GECO's part segmentation benchmark).

    Parameters
    ----------
    root : path
        The directory holding ``Parts/Annotations_Part`` and
        ``VOCdevkit/VOC2010/JPEGImages`` (GECO's ``PASCAL-VOC`` folder).
    progress : bool, optional
        Progress bar while the annotations are indexed (default: on unless
        ``GEOMATCH_NO_PROGRESS=1``).

    Notes
    -----
    The annotation folder is indexed (every ``.mat`` file read once) on first
    use.  Records carry no keypoints (``K = 0``); the part annotations come
    from :meth:`part_labels` and :meth:`grid_part_scores`.
    """

    name = "pascalparts"
    splits = ("train", "test")
    split_aliases = {"trn": "train", "val": "test"}

    def __init__(self, root, progress: Optional[bool] = None):
        super().__init__(root)
        self.categories = list(PASCALPARTS_CLASSES)
        self.annotation_dir = self.root / "Parts" / "Annotations_Part"
        self.image_dir = self.root / "VOCdevkit" / "VOC2010" / "JPEGImages"
        require_dir(self.annotation_dir, "PASCAL-Part annotations")
        require_dir(self.image_dir, "VOC2010 images")
        self._progress = progress
        self._index: Optional[Dict[str, List[_Entry]]] = None
        self._multi: List[str] = []

    # ---- index ------------------------------------------------------------
    def _build_index(self) -> Dict[str, List[_Entry]]:
        if self._index is not None:
            return self._index
        from ..runtime.progress import progress as _progress

        files = sorted(self.annotation_dir.glob("*.mat"))
        if not files:
            raise FileNotFoundError(f"PASCAL-Part annotations not found: no .mat file in "
                                    f"{self.annotation_dir}")
        index: Dict[str, List[_Entry]] = {c: [] for c in PASCALPARTS_CLASSES}
        multi = []
        bar = _progress(files, desc="index PASCAL-Part", total=len(files), unit="file",
                        disable=None if self._progress is None else not self._progress)
        for path in bar:
            anno = _loadmat(path)
            objects = _as_list(_field(anno, "objects", path, "anno"))
            if len(objects) != 1:      # GECO keeps single-object images only
                multi.append(path.stem)
                continue
            obj = objects[0]
            cls = str(_field(obj, "class", path, "object"))
            cls = _CLASS_ALIASES.get(cls, cls)
            if cls not in index:
                raise ValueError(f"malformed PASCAL-Part annotation {path}: unknown class "
                                 f"{cls!r}")
            imname = str(getattr(anno, "imname", "") or path.stem)
            m = _mask(_field(obj, "mask", path, "object"), path, "object")
            ys, xs = np.nonzero(m)
            box = ((float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
                   if xs.size else (0.0, 0.0, float(m.shape[1] - 1), float(m.shape[0] - 1)))
            index[cls].append(_Entry(imname, path, (int(m.shape[1]), int(m.shape[0])), box))
        for c in index:
            index[c].sort(key=lambda e: e.imname)
        self._index, self._multi = index, multi
        return index

    @property
    def multi_object_images(self) -> List[str]:
        """Image names left out because they hold more than one object."""
        self._build_index()
        return list(self._multi)

    # ---- tables ------------------------------------------------------------
    def part_table(self, category: str) -> PartTable:
        """GECO's part classes of ``category`` (see :class:`PartTable`)."""
        self._check_category(category)
        return part_table(category)

    def part_names(self, category: str) -> Tuple[str, ...]:
        return self.part_table(category).names

    def _keypoint_names(self, category):
        return ()

    def _flip_perm(self, category):
        return np.zeros(0, dtype=np.int64)

    # ---- images --------------------------------------------------------------
    def _pair_handles(self, split, category):
        return []

    def _image_handles(self, split, category):
        return list(self._build_index()[category])

    def _load_image(self, category, handle: _Entry) -> ImageRecord:
        return make_image_record(
            self.name, category, f"{category}/{handle.imname}",
            self.image_dir / f"{handle.imname}.jpg", handle.size,
            np.zeros((0, 2), np.float32), np.zeros(0, bool), handle.bbox,
            mask_path=handle.annotation)

    # ---- part annotations ----------------------------------------------------
    def _annotation_path(self, record: ImageRecord) -> Path:
        if record.mask_path is not None:
            return Path(record.mask_path)
        return self.annotation_dir / f"{record.key.split('/', 1)[-1]}.mat"

    def part_labels(self, record: ImageRecord) -> np.ndarray:
        """Full-resolution part label map of an image.

        Returns
        -------
        numpy.ndarray
            int32 (H, W): 0 for background, ``k + 1`` for part class ``k`` of
            :meth:`part_table` (the highest Pascal-Part index where parts
            overlap; object pixels outside every part are background).

        Raises
        ------
        FileNotFoundError
            The annotation file is missing (the message names it).
        ValueError
            A malformed file, several objects, or a part name the category's
            table does not know (the message names file and part).
        """
        table = self.part_table(record.category)
        path = self._annotation_path(record)
        anno = _loadmat(path)
        objects = _as_list(_field(anno, "objects", path, "anno"))
        if len(objects) != 1:
            raise ValueError(f"PASCAL-Part annotation {path} holds {len(objects)} objects; "
                             "only single-object images are used")
        obj = objects[0]
        omask = _mask(_field(obj, "mask", path, "object"), path, "object")
        if not table.has_parts:
            return omask.astype(np.int32)
        pos = {n: k for k, n in enumerate(table.names)}
        # GECO assigns each part's mask to its slot (a repeated part name keeps
        # the last mask), then takes the highest slot set at each pixel.
        slots: Dict[int, np.ndarray] = {}
        parts = _field(obj, "parts", path, "object") if hasattr(obj, "parts") else []
        for part in _as_list(parts):
            pname = str(_field(part, "part_name", path, "part"))
            if pname not in pos:
                raise ValueError(f"PASCAL-Part annotation {path}: part {pname!r} is not a "
                                 f"part of {record.category!r} (known: {list(table.names)})")
            slots[pos[pname]] = _mask(_field(part, "mask", path, f"part {pname!r}"), path,
                                      f"part {pname!r}", omask.shape)
        labels = np.zeros(omask.shape, dtype=np.int32)
        for k in sorted(slots):
            labels[slots[k]] = k + 1
        return labels

    def grid_part_scores(self, record: ImageRecord, grid: Tuple[int, int],
                         frame: Optional[Tuple[float, float, float, float]] = None,
                         labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Part masks resized to a feature grid, as GECO does for training.

        The one-hot part masks (background excluded) are resized with
        bilinear interpolation (``align_corners=False``) to the grid.

        Parameters
        ----------
        record : ImageRecord
        grid : (h, w)
        frame : (x0, y0, fw, fh), optional
            The image rectangle the grid covers
            (:func:`geomatch.geometry.grid_frame`); default the whole image.
        labels : ndarray, optional
            :meth:`part_labels` of the record, if already read.

        Returns
        -------
        numpy.ndarray
            float64 (h, w, P) soft part masks; a cell is foreground where the
            sum is positive, its label is the argmax.
        """
        table = self.part_table(record.category)
        if labels is None:
            labels = self.part_labels(record)
        return soft_grid_masks(labels, table.num_parts, grid, frame)


def soft_grid_masks(labels: np.ndarray, num_parts: int, grid: Tuple[int, int],
                    frame: Optional[Tuple[float, float, float, float]] = None) -> np.ndarray:
    """One-hot masks of a label map (0 = background) resized to ``grid``.

    See :meth:`PascalParts.grid_part_scores`; float64 (h, w, num_parts).
    """
    from ..ops.resample import image_to_grid, resample_labels

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D label map, got shape {labels.shape}")
    h_img, w_img = labels.shape
    gh, gw = (int(v) for v in grid)
    x0, y0, fw, fh = frame if frame is not None else (0.0, 0.0, float(w_img), float(h_img))
    return resample_labels(labels, num_parts, image_to_grid(gh, h_img, y0, fh),
                           image_to_grid(gw, w_img, x0, fw))

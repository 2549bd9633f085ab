"""A small synthetic dataset in the SPair-71k on-disk layout, for demos and tests.

:func:`generate_spair_like` renders the 3-D toy objects of
:mod:`geomatch.demo.world` -- ``dog`` and ``cat`` (ears, ear tips, eyes,
nose or nostrils, mouth, four feet, tail) and ``car`` (wheels, mirrors,
head- and tail-lights, plates, emblems), three SPair-71k categories -- from
varied azimuths, elevations, rolls, scales and positions, with articulated
legs and head, and writes them exactly as SPair-71k lays out its files::

    root/JPEGImages/<cat>/<name>.jpg
    root/ImageAnnotation/<cat>/<name>.json
    root/Segmentation/<cat>/<name>.png
    root/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json
    root/Layout/large/{trn,val,test}.txt
    root/keypoints.json          (extra: keypoint names and flip tables)

Each drawn part is annotated under its real SPair-71k keypoint index (the
category's full name list and left/right table are
:mod:`geomatch.data.tables`'), so ``geomatch.data.load_dataset("spair",
root)`` reads the folder like the real dataset.

Mirror-twin parts (left/right eye, left/right front wheel, ...) share shape
and colour, so only the layout of the whole object tells them apart -- the
situation geometry-aware matching is about.  A part is annotated as visible
(its ``kps`` entry is ``[x, y]``) only where it is actually seen in the
picture (:func:`geomatch.demo.world.render` decides with a z-buffer): parts
hidden behind the body, covered by a random occluder or outside the image
are ``null``.  ``azimuth_id = round(phi / 45) mod 8`` with the azimuth
convention of :mod:`geomatch.demo.world`.

Pairs: ``mirror`` is 1 when source and target face opposite horizontal
directions; ``viewpoint_variation`` is 0, 1 or 2 for azimuth-bin
differences of 0-1, 2-3 and 4; ``scale_variation`` 0, 1, 2 for bounding-box
size ratios below 1.5, 2 and above; ``truncation`` / ``occlusion`` count the
images (0, 1 or 2) of the pair that are truncated / occluded.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from . import world as _world

from ..data.tables import SPAIR_KEYPOINT_NAMES, SPAIR_LR_PAIRS
from ..data.tables import flip_permutation as _spair_flip

__all__ = ["SYNTHETIC_KEYPOINTS", "CATEGORIES", "keypoint_names", "flip_permutation",
           "drawn_keypoints", "generate_spair_like"]

SPLITS = ("trn", "val", "test")
MAX_KPS = 30  # SPair-71k annotates keypoints "0".."29" for every category

#: The synthetic categories (real SPair-71k category names).
CATEGORIES: tuple[str, ...] = tuple(sorted(_world.CATEGORIES))

#: Per category: ``names`` (the full SPair-71k keypoint list of the category)
#: and ``flip`` (index of each keypoint's left/right counterpart, itself if
#: none) -- exactly ``geomatch.data.tables``' SPair-71k tables.
SYNTHETIC_KEYPOINTS: dict[str, dict[str, tuple]] = {
    cat: {"names": tuple(SPAIR_KEYPOINT_NAMES[cat]),
          "flip": tuple(int(v) for v in _spair_flip(len(SPAIR_KEYPOINT_NAMES[cat]),
                                                     SPAIR_LR_PAIRS[cat]))}
    for cat in CATEGORIES
}

# Keypoint index of each drawn part.
_PART_INDEX = {cat: [SPAIR_KEYPOINT_NAMES[cat].index(n) for n in names]
               for cat, names in _world.PART_NAMES.items()}


def keypoint_names(category: str) -> tuple[str, ...]:
    """The category's full SPair-71k keypoint-name list (index order)."""
    return SYNTHETIC_KEYPOINTS[_check_category(category)]["names"]


def flip_permutation(category: str) -> np.ndarray:
    """int64 ``(K,)``: index of each keypoint's left/right twin (itself if none)."""
    return np.asarray(SYNTHETIC_KEYPOINTS[_check_category(category)]["flip"], dtype=np.int64)


def drawn_keypoints(category: str) -> tuple[int, ...]:
    """Indices of the keypoints the toy model of ``category`` draws (the others
    are never annotated)."""
    return tuple(sorted(_PART_INDEX[_check_category(category)]))


def _check_category(category: str) -> str:
    if category not in SYNTHETIC_KEYPOINTS:
        raise ValueError(f"category must be one of {list(CATEGORIES)}, got {category!r}")
    return category


def _render(category, rng, size):
    """One random view: (PIL image, mask, kps list over the SPair keypoint
    indices, info) or None."""
    out = _world.render(category, rng, size)
    if out is None:
        return None
    image, mask, named, info = out
    kps = [None] * len(SPAIR_KEYPOINT_NAMES[category])
    for name, xy in named.items():
        kps[SPAIR_KEYPOINT_NAMES[category].index(name)] = xy
    return Image.fromarray(image, "RGB"), mask, kps, info


def _pose_name(phi):
    deg = math.degrees(phi) % 360.0
    names = ["Right", "Rear", "Left", "Frontal"]     # facing right shows the right side
    return names[int(((deg + 45.0) % 360.0) // 90.0)]


def _facing(phi):
    """+1 facing image-right, -1 facing left, 0 (nearly) frontal/rear."""
    c = math.cos(phi)
    return 0 if abs(c) < 0.2 else (1 if c > 0 else -1)


# ---------------------------------------------------------------------------
# Dataset writer
# ---------------------------------------------------------------------------


def _image_json(name, category, size, kps, info):
    w, h = size
    kp_dict = {str(i): (kps[i] if i < len(kps) else None) for i in range(MAX_KPS)}
    return {
        "filename": f"{name}.jpg", "src_database": "geomatch-synthetic",
        "image_width": w, "image_height": h, "image_depth": 3,
        "category": category, "pose": _pose_name(info["phi"]),
        "truncated": int(info["truncated"]), "occluded": int(info["occluded"]),
        "difficult": 0, "bndbox": info["bbox"], "kps": kp_dict,
        "azimuth_id": int(round(math.degrees(info["phi"]) / 45.0)) % 8,
    }


def _pair_json(pair_id, name, category, src, trg):
    (sname, sann, sinfo), (tname, tann, tinfo) = src, trg
    k = len(SYNTHETIC_KEYPOINTS[category]["names"])
    common = [i for i in range(k) if sann["kps"][str(i)] is not None
              and tann["kps"][str(i)] is not None]
    da = abs(sann["azimuth_id"] - tann["azimuth_id"])
    da = min(da, 8 - da)
    sb, tb = sann["bndbox"], tann["bndbox"]
    ratio = max(max(sb[2] - sb[0], sb[3] - sb[1]), 1) / max(max(tb[2] - tb[0], tb[3] - tb[1]), 1)
    ratio = max(ratio, 1.0 / ratio)
    fs, ft = _facing(sinfo["phi"]), _facing(tinfo["phi"])
    return {
        "pair_id": pair_id, "filename": name,
        "src_imname": f"{sname}.jpg", "trg_imname": f"{tname}.jpg",
        "src_imsize": [sann["image_width"], sann["image_height"], 3],
        "trg_imsize": [tann["image_width"], tann["image_height"], 3],
        "src_bndbox": sb, "trg_bndbox": tb, "category": category,
        "src_pose": sann["pose"], "trg_pose": tann["pose"],
        "src_kps": [sann["kps"][str(i)] for i in common],
        "trg_kps": [tann["kps"][str(i)] for i in common],
        "kps_ids": [str(i) for i in common],
        "mirror": int(fs * ft < 0),
        "viewpoint_variation": 0 if da <= 1 else (1 if da <= 3 else 2),
        "scale_variation": 0 if ratio < 1.5 else (1 if ratio < 2.0 else 2),
        "truncation": int(sann["truncated"]) + int(tann["truncated"]),
        "occlusion": int(sann["occluded"]) + int(tann["occluded"]),
    }


def _split_counts(n):
    n_val = max(2, n // 5)
    n_test = max(2, n // 4)
    return n - n_val - n_test, n_val, n_test


def generate_spair_like(root, *, n_images_per_category: int = 12, n_pairs: int = 10,
                        seed: int = 0, size: tuple[int, int] = (240, 180),
                        categories=None) -> dict:
    """Write a small synthetic dataset in the SPair-71k layout under ``root``.

    Parameters
    ----------
    root : str or path-like
        Output folder (created; existing files of the same names are
        overwritten).
    n_images_per_category : int, default 12
        Images per category, at least 6; split into disjoint train / val /
        test image sets (about 55 / 20 / 25 %).
    n_pairs : int, default 10
        Pairs per category and split (ordered pairs of distinct images of
        that split with at least one keypoint visible in both); fewer when
        the split has not enough such pairs.
    seed : int, default 0
        Everything written depends only on ``seed`` and the other arguments.
    size : (int, int), default (240, 180)
        Image size ``(W, H)`` in pixels.
    categories : sequence of str, optional
        Subset of :data:`CATEGORIES` (default: all).

    Returns
    -------
    dict
        ``root`` (Path), ``categories`` (list), ``pairs`` (split -> list of
        pair names as in ``Layout/large/<split>.txt``), ``images``
        (category -> list of image names) and ``keypoints``
        (:data:`SYNTHETIC_KEYPOINTS` restricted to the categories).
    """
    n_img = int(n_images_per_category)
    if n_img < 6:
        raise ValueError(f"n_images_per_category must be >= 6, got {n_images_per_category}")
    if int(n_pairs) < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"size must be a pair (W, H) of integers, got {size!r}") from None
    if w < 32 or h < 32:
        raise ValueError(f"size must be at least (32, 32), got {size!r}")
    cats = list(CATEGORIES) if categories is None else [_check_category(c) for c in categories]
    root = Path(root)
    for sub in ("JPEGImages", "ImageAnnotation", "Segmentation"):
        for c in cats:
            (root / sub / c).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (root / "PairAnnotation" / split).mkdir(parents=True, exist_ok=True)
    (root / "Layout" / "large").mkdir(parents=True, exist_ok=True)

    pairs = {s: [] for s in SPLITS}
    images = {}
    counter = {s: 0 for s in SPLITS}
    for ci, cat in enumerate(cats):
        cat_index = CATEGORIES.index(cat)
        records = []
        i = 0
        while len(records) < n_img:
            rng = np.random.default_rng([seed, cat_index, i])
            i += 1
            out = _render(cat, rng, (w, h))
            if out is None or sum(k is not None for k in out[2]) < 2:
                continue
            image, mask, kps, info = out
            name = f"{cat_index + 1:02d}{len(records) + 1:05d}"
            image.save(root / "JPEGImages" / cat / f"{name}.jpg", quality=92)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(
                root / "Segmentation" / cat / f"{name}.png")
            ann = _image_json(name, cat, (w, h), kps, info)
            with open(root / "ImageAnnotation" / cat / f"{name}.json", "w") as f:
                json.dump(ann, f)
            records.append((name, ann, info))
        images[cat] = [r[0] for r in records]
        n_trn, n_val, _ = _split_counts(n_img)
        split_records = {"trn": records[:n_trn], "val": records[n_trn:n_trn + n_val],
                         "test": records[n_trn + n_val:]}
        for si, split in enumerate(SPLITS):
            recs = split_records[split]
            cand = [(a, b) for a in range(len(recs)) for b in range(len(recs)) if a != b]
            prng = np.random.default_rng([seed, cat_index, 1000 + si])
            order = prng.permutation(len(cand))
            chosen = 0
            for j in order:
                if chosen >= n_pairs:
                    break
                a, b = cand[j]
                counter[split] += 1
                pid = counter[split]
                pname = f"{pid:06d}-{recs[a][0]}-{recs[b][0]}:{cat}"
                pj = _pair_json(pid, f"{pname}.json", cat, recs[a], recs[b])
                if not pj["kps_ids"]:
                    counter[split] -= 1
                    continue
                with open(root / "PairAnnotation" / split / f"{pname}.json", "w") as f:
                    json.dump(pj, f)
                pairs[split].append(pname)
                chosen += 1
    for split in SPLITS:
        with open(root / "Layout" / "large" / f"{split}.txt", "w") as f:
            f.write("".join(p + "\n" for p in pairs[split]))
    table = {c: {"names": list(SYNTHETIC_KEYPOINTS[c]["names"]),
                 "flip": list(SYNTHETIC_KEYPOINTS[c]["flip"])} for c in cats}
    with open(root / "keypoints.json", "w") as f:
        json.dump(table, f, indent=1)
    return {"root": root, "categories": cats, "pairs": pairs, "images": images,
            "keypoints": {c: SYNTHETIC_KEYPOINTS[c] for c in cats}}

"""A small synthetic dataset in the SPair-71k on-disk layout, for demos and tests.

:func:`generate_spair_like` draws bilaterally symmetric toy objects of
three SPair-71k categories -- ``dog`` and ``cat`` (ears, ear tips, eyes,
nose or nostrils, mouth, four feet, tail) and ``car`` (four wheels,
mirrors, head- and tail-lights, plates, emblems) -- with PIL, seen from any
azimuth (which side faces the camera), at varied positions, scales and
in-plane rotations, and writes them exactly as SPair-71k lays out its
files::

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

Mirror-twin parts (left/right eye, left/right front wheel, ...) are drawn
identically, so only the global layout of the object tells them apart --
the situation geometry-aware matching is about.  A part is annotated as
visible (its ``kps`` entry is ``[x, y]``) only where it is actually seen in
the picture: parts hidden behind the body, covered by a random occluder or
outside the image are ``null``.

Object model and conventions
----------------------------
Each category is a 3-D model in an object frame (forward, up, right), the
right side being ``forward x up``; a right part sits at lateral +r and its
left twin at -r.  An image shows the model rotated about
its up axis by the azimuth ``phi`` and projected orthographically: at
``phi = 0`` it faces image-right showing its right side, at 90 deg it shows
its back, at 180 deg it faces left showing its left side, at 270 deg it
faces the camera.  ``azimuth_id = round(phi / 45) mod 8``.  The view is then
rotated in the image plane, scaled and translated.  Everything is drawn in
depth order (painter's algorithm); a per-element id buffer decides
visibility and gives the segmentation mask.

Pairs: ``mirror`` is 1 when source and target face opposite horizontal
directions; ``viewpoint_variation`` is 0, 1 or 2 for azimuth-bin
differences of 0-1, 2-3 and 4; ``scale_variation`` 0, 1, 2 for bounding-box
size ratios below 1.5, 2 and above; ``truncation`` / ``occlusion`` count the
images (0, 1 or 2) of the pair that are truncated / occluded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.tables import SPAIR_KEYPOINT_NAMES, SPAIR_LR_PAIRS
from ..data.tables import flip_permutation as _spair_flip

__all__ = ["SYNTHETIC_KEYPOINTS", "CATEGORIES", "keypoint_names", "flip_permutation",
           "drawn_keypoints", "generate_spair_like"]

SPLITS = ("trn", "val", "test")
MAX_KPS = 30  # SPair-71k annotates keypoints "0".."29" for every category

# ---------------------------------------------------------------------------
# Category models.  The categories are three real SPair-71k categories, and
# every drawn part is annotated under its SPair-71k keypoint index, so the
# generated folder is read by geomatch.data' SPair loader with the real
# keypoint-name and flip tables (geomatch.data.tables).  Keypoint slots of
# the category that the toy model does not draw stay null.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    name: str                    # SPair-71k keypoint name
    pos: tuple[float, float, float]   # model frame (forward, up, right)
    radius: float
    colour: str
    shape: str = "disc"          # "disc" (sphere-like) or "wheel" (disc in f-u plane)
    limb_from: tuple[float, float, float] | None = None   # draw a limb from here
    limb_width: float = 0.0
    limb_colour: str = "body"


def _twins(right, left, f, u, r, radius, colour, **kw):
    """Mirror-twin parts: ``right`` at lateral +r, ``left`` at -r, drawn alike."""
    out = []
    for name, sign in ((right, 1.0), (left, -1.0)):
        k = dict(kw)
        if k.get("limb_from") is not None:
            lf, lu, lr = k["limb_from"]
            k["limb_from"] = (lf, lu, sign * abs(lr))
        out.append(_Part(name, (f, u, sign * r), radius, colour, **k))
    return out


def _animal(nose_twins, leg, ear_tip_up, tail_len):
    """Dog- or cat-like model (SPair dog/cat keypoint names)."""
    head = [
        *_twins("right ear", "left ear", 0.97, 0.74, 0.17, 0.10, "ear"),
        *_twins("right ear-tip", "left ear-tip", 0.92, 0.74 + ear_tip_up, 0.20, 0.06,
                "eartip", limb_from=(0.97, 0.74, 0.17), limb_width=0.12,
                limb_colour="ear"),
        *_twins("right eye", "left eye", 1.20, 0.56, 0.14, 0.08, "eye"),
        _Part("mouth", (1.30, 0.25, 0.0), 0.06, "mouth"),
    ]
    if nose_twins:
        head += _twins("right nostril", "left nostril", 1.36, 0.43, 0.06, 0.045, "nose")
    else:
        head += [_Part("nose", (1.36, 0.43, 0.0), 0.07, "nose"),
                 _Part("forehead", (1.14, 0.72, 0.0), 0.06, "blaze"),
                 _Part("nape", (0.82, 0.64, 0.0), 0.06, "blaze")]
    legs = [
        *_twins("front-right foot", "front-left foot", 0.60, -0.25 - leg, 0.20, 0.11, "paw",
                limb_from=(0.55, -0.1, 0.2), limb_width=0.10),
        *_twins("back-right foot", "back-left foot", -0.60, -0.25 - leg, 0.20, 0.11, "paw",
                limb_from=(-0.55, -0.1, 0.2), limb_width=0.10),
    ]
    tail = [_Part("tail-base", (-0.86, 0.12, 0.0), 0.07, "tailbase"),
            _Part("tail-tip", (-0.86 - tail_len, 0.12 + 0.6 * tail_len, 0.0), 0.08, "tail",
                  limb_from=(-0.86, 0.12, 0.0), limb_width=0.06, limb_colour="tail")]
    return head + legs + tail


_PARTS = {
    "dog": _animal(nose_twins=False, leg=0.60, ear_tip_up=0.16, tail_len=0.50),
    "cat": _animal(nose_twins=True, leg=0.42, ear_tip_up=0.26, tail_len=0.75),
    "car": [
        *_twins("front-right wheel", "front-left wheel", 0.65, -0.36, 0.50, 0.22, "wheel",
                shape="wheel"),
        *_twins("back-right wheel", "back-left wheel", -0.65, -0.36, 0.50, 0.22, "wheel",
                shape="wheel"),
        *_twins("right mirror", "left mirror", 0.32, 0.30, 0.52, 0.09, "mirror"),
        *_twins("right headlight", "left headlight", 1.06, 0.04, 0.30, 0.09, "headlight"),
        *_twins("right tail-light", "left tail-light", -1.06, 0.04, 0.30, 0.09,
                "taillight"),
        _Part("front license-plate", (1.10, -0.15, 0.0), 0.08, "plate"),
        _Part("back license-plate", (-1.10, -0.15, 0.0), 0.08, "plate"),
        _Part("front emblem", (1.10, 0.10, 0.0), 0.05, "emblem"),
        _Part("back emblem", (-1.10, 0.10, 0.0), 0.05, "emblem"),
    ],
}

# Body ellipsoids: (centre (f, u, r), semi-axes (a_f, b_u, c_r), colour key).
_BODIES = {
    "dog": [((0.0, 0.0, 0.0), (0.90, 0.36, 0.30), "body"),
            ((1.05, 0.45, 0.0), (0.30, 0.30, 0.30), "body")],
    "cat": [((0.0, 0.0, 0.0), (0.80, 0.32, 0.28), "body"),
            ((1.02, 0.42, 0.0), (0.32, 0.32, 0.30), "body")],
    "car": [((0.0, 0.0, 0.0), (1.12, 0.36, 0.56), "body"),
            ((-0.10, 0.34, 0.0), (0.55, 0.26, 0.46), "cabin")],
}
_FIXED_COLOURS = {
    "eye": (20, 20, 30), "ear": (120, 70, 40), "eartip": (60, 35, 20),
    "nose": (10, 10, 10), "mouth": (200, 60, 80), "blaze": (250, 250, 240),
    "paw": (240, 230, 210), "tail": (90, 60, 40), "tailbase": (70, 45, 30),
    "wheel": (25, 25, 25), "mirror": (170, 200, 230), "headlight": (250, 240, 120),
    "taillight": (220, 30, 30), "plate": (245, 245, 245), "emblem": (200, 170, 40),
    "cabin": (150, 200, 235),
}

#: The synthetic categories (real SPair-71k category names).
CATEGORIES: tuple[str, ...] = tuple(sorted(_PARTS))

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
_PART_INDEX = {cat: [SPAIR_KEYPOINT_NAMES[cat].index(p.name) for p in parts]
               for cat, parts in _PARTS.items()}


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


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


@dataclass
class _View:
    phi: float          # azimuth, radians
    alpha: float        # in-plane rotation, radians
    scale: float        # pixels per model unit
    cx: float
    cy: float

    def camera(self, p):
        """Model point (f, u, r) -> camera (X right, Y up, Z toward camera)."""
        f, u, r = p
        c, s = math.cos(self.phi), math.sin(self.phi)
        return (c * f + s * r, u, -s * f + c * r)

    def image_xy(self, cam_x, cam_y):
        """Camera (X, Y) -> image pixel (x right, y down)."""
        ca, sa = math.cos(self.alpha), math.sin(self.alpha)
        u, v = cam_x, -cam_y
        return (self.cx + self.scale * (ca * u - sa * v),
                self.cy + self.scale * (sa * u + ca * v))

    def ellipse_polygon(self, cam_x, cam_y, ax, ay, n=40):
        """Image polygon of the camera-plane ellipse with semi-axes ax (X), ay (Y)."""
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        return [self.image_xy(cam_x + ax * math.cos(a), cam_y + ay * math.sin(a)) for a in t]


def _body_silhouette(view, centre, axes):
    """Camera-plane ellipse of an ellipsoid rotated about its up axis."""
    x, y, z = view.camera(centre)
    a, b, c = axes
    half_w = math.sqrt((a * math.cos(view.phi)) ** 2 + (c * math.sin(view.phi)) ** 2)
    return x, y, z, half_w, b


def _random_background(rng, size):
    w, h = size
    grid = rng.integers(80, 180, size=(3, 4, 3)).astype(np.uint8)
    bg = Image.fromarray(grid, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(bg).astype(np.int16)
    arr = arr + rng.integers(-8, 9, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _render(category, rng, size):
    """Draw one image.  Returns (image, mask, kps list, info dict)."""
    w, h = size
    parts = _PARTS[category]
    phi = rng.uniform(0.0, 2.0 * np.pi)
    length = rng.uniform(0.45, 0.75) * min(w, h * 1.3)      # object length in pixels
    view = _View(phi=phi, alpha=math.radians(rng.uniform(-25.0, 25.0)),
                 scale=length / 2.4, cx=rng.uniform(0.25, 0.75) * w,
                 cy=rng.uniform(0.3, 0.7) * h)
    if rng.random() < 0.15:   # sometimes push the object partly out of the frame
        view.cx = rng.choice([0.08, 0.92]) * w
    body_rgb = tuple(int(v) for v in rng.integers(40, 230, size=3))
    colours = dict(_FIXED_COLOURS, body=body_rgb)

    # Elements: (depth, id, draw-callable).  ids 1..len(parts) are the parts,
    # larger ids are bodies and limbs, 255 the occluder.
    elements = []
    for i, (centre, axes, ckey) in enumerate(_BODIES[category]):
        x, y, z, hw_, hh = _body_silhouette(view, centre, axes)
        poly = view.ellipse_polygon(x, y, hw_, hh)
        elements.append((z, 100 + i, ("poly", poly, colours[ckey])))
    for k, part in enumerate(parts):
        x, y, z = view.camera(part.pos)
        if part.limb_from is not None:
            lx, ly, lz = view.camera(part.limb_from)
            line = [view.image_xy(lx, ly), view.image_xy(x, y)]
            lw = max(1, int(round(part.limb_width * view.scale)))
            elements.append(((z + lz) / 2 - 1e-3, 150 + k,
                             ("line", line, colours[part.limb_colour], lw)))
        if part.shape == "wheel":
            ax = part.radius * max(abs(math.cos(phi)), 0.3)
            poly = view.ellipse_polygon(x, y, ax, part.radius)
        else:
            poly = view.ellipse_polygon(x, y, part.radius, part.radius, n=20)
        elements.append((z, 1 + k, ("poly", poly, colours[part.colour])))
    elements.sort(key=lambda e: (e[0], e[1]))

    image = _random_background(rng, size)
    ids = Image.new("L", size, 0)
    draw, idraw = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    for _, eid, spec in elements:
        if spec[0] == "poly":
            draw.polygon(spec[1], fill=spec[2])
            idraw.polygon(spec[1], fill=eid)
        else:
            draw.line(spec[1], fill=spec[2], width=spec[3])
            idraw.line(spec[1], fill=eid, width=spec[3])
    occluded = False
    if rng.random() < 0.3:   # a grey box in front of part of the object
        ox, oy = view.image_xy(*view.camera(parts[rng.integers(len(parts))].pos)[:2])
        bw, bh = rng.uniform(0.08, 0.2) * w, rng.uniform(0.1, 0.25) * h
        box = [ox - bw / 2, oy - bh / 2, ox + bw / 2, oy + bh / 2]
        g = int(rng.integers(90, 170))
        draw.rectangle(box, fill=(g, g, g))
        idraw.rectangle(box, fill=255)
        occluded = True

    idbuf = np.asarray(ids)
    mask = (idbuf > 0) & (idbuf < 255)
    kps = [None] * len(SPAIR_KEYPOINT_NAMES[category])   # full SPair keypoint list
    for k, part in enumerate(parts):
        x, y, _ = view.camera(part.pos)
        px, py = view.image_xy(x, y)
        ix, iy = int(round(px)), int(round(py))
        seen = 0 <= ix < w and 0 <= iy < h and idbuf[iy, ix] == 1 + k
        kps[_PART_INDEX[category][k]] = [ix, iy] if seen else None
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    truncated = bool(mask[:, 0].any() or mask[:, -1].any() or mask[0].any() or mask[-1].any())
    info = {"phi": phi, "bbox": bbox, "truncated": truncated, "occluded": occluded}
    return image, mask, kps, info


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

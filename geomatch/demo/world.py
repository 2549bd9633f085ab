"""The demo's 3-D world: articulated toy animals and a car, rendered with NumPy.

Each category is a bilaterally symmetric 3-D model made of ellipsoids in an
object frame (forward ``f``, up ``u``, right ``r = f x u``): a body, a head,
legs, ears, a tail, and small coloured *parts* whose centres are the
keypoints (SPair-71k names: ``left eye``, ``front-right foot``, ...).  A
right part sits at lateral ``+r`` and its left *mirror twin* at ``-r``; twins
share their shape and colour, so up close they look the same, and only the
object's pose tells them apart -- the situation of DINOv2 features on
SPair-71k, whose typical error is a left/right swap.

A view (:class:`Camera`) rotates the model about its up axis by the azimuth
``phi`` (0: facing image-right with its right side to the camera, 90 deg: its
back, 180 deg: facing left, 270 deg: facing the camera), tilts it by the
elevation ``theta`` (the camera looks down from above, so nearer points
appear lower), rolls it slightly in the image plane, scales and places it,
and projects orthographically.  The demo's views face the camera, up to
:data:`AZIMUTH_SPREAD` degrees either way (from three-quarter left to
three-quarter right views), at elevations :data:`ELEVATION`.  Every pixel keeps
the nearest surface (a z-buffer): a keypoint is visible only where its own
part is the nearest surface at its pixel, so parts behind the body or the
head, under an occluder or outside the frame are not annotated.  The
ellipsoids are shaded by a light placed above the camera (symmetric under a
horizontal flip of the image).

Which twin is which then follows from the object's layout: facing the
camera, the object's right side appears on the image's left, so of two twins
the right one is the one further to the image-left *of the pair*; where that
is depends on the azimuth, elevation and roll of the view, so a model has to
locate both twins and the object, not a fixed image region.  (A world seen
from every side would also need the facing direction to be inferred; the
demo's small head does not learn that product within its CPU budget, see
``docs/demo.md``.)

The legs swing by a random gait angle per image (articulation) and the head
turns by a small random yaw, so no two images of a category share a shape.

:func:`render` draws one random view; :mod:`geomatch.demo.synthetic` writes
many of them in the SPair-71k layout.  The method's conventions are in
``docs/demo.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.tables import SPAIR_KEYPOINT_NAMES

__all__ = ["Camera", "Ellipsoid", "model", "render", "CATEGORIES", "PART_NAMES"]

# Light direction in camera coordinates (X right, Y up, Z toward the camera):
# above the camera, so shading is mirror-symmetric.
_LIGHT = np.array([0.0, 0.6, 0.8])


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned (in the object frame) ellipsoid of a model.

    ``centre`` and ``axes`` are (f, u, r); ``colour`` a key of the palette;
    ``part`` the SPair-71k keypoint name whose location is ``centre`` (None
    for body pieces)."""

    centre: Tuple[float, float, float]
    axes: Tuple[float, float, float]
    colour: str
    part: Optional[str] = None


# Part colours: twins share one; every twin pair and middle part has its own.
PALETTE: Dict[str, Tuple[int, int, int]] = {
    "ear": (150, 90, 40), "eartip": (40, 25, 15), "eye": (30, 170, 60),
    "nose": (15, 15, 15), "mouth": (220, 40, 90), "forehead": (250, 250, 235),
    "nape": (90, 60, 200), "nostril": (15, 15, 15), "ffoot": (250, 200, 40),
    "bfoot": (40, 200, 230), "tailbase": (130, 40, 150), "tailtip": (250, 120, 20),
    "leg": (110, 110, 110), "tail": (90, 70, 60),
    "wheel": (25, 25, 25), "hub": (200, 200, 210), "mirror": (60, 120, 240),
    "headlight": (250, 245, 140), "taillight": (230, 20, 20), "plate": (245, 245, 245),
    "emblem": (200, 160, 30), "cabin": (140, 200, 235),
}


def _twin(name_r, name_l, c, axes, colour):
    f, u, r = c
    return [Ellipsoid((f, u, abs(r)), axes, colour, name_r),
            Ellipsoid((f, u, -abs(r)), axes, colour, name_l)]


def _animal(cat: bool, gait: float, head_yaw: float) -> List[Ellipsoid]:
    """Dog (``cat=False``) or cat: body, head, four legs swung by ``gait``
    (radians), ears, eyes, nose or nostrils, mouth, feet, tail."""
    leg = 0.42 if cat else 0.58
    L: List[Ellipsoid] = [Ellipsoid((0.0, 0.0, 0.0), (0.85, 0.34, 0.36), "body")]
    hf, hu = 1.02, 0.42
    L.append(Ellipsoid((hf, hu, 0.0), (0.30, 0.28, 0.30), "body"))
    L.append(Ellipsoid((0.78, 0.25, 0.0), (0.22, 0.22, 0.20), "body"))   # neck

    def head_pt(f, u, r):        # head turned by head_yaw about its own up axis
        c, s = math.cos(head_yaw), math.sin(head_yaw)
        df = f - hf
        return (hf + c * df - s * r, u, s * df + c * r)

    def head_twins(nr, nl, f, u, r, axes, colour):
        return [Ellipsoid(head_pt(f, u, r), axes, colour, nr),
                Ellipsoid(head_pt(f, u, -r), axes, colour, nl)]

    L += head_twins("right ear", "left ear", 0.95, 0.68, 0.24, (0.09, 0.10, 0.09), "ear")
    tip_u = 0.92 if cat else 0.80
    L += head_twins("right ear-tip", "left ear-tip", 0.93, tip_u, 0.30, (0.06, 0.07, 0.06), "eartip")
    L += head_twins("right eye", "left eye", 1.18, 0.52, 0.19, (0.07, 0.07, 0.07), "eye")
    L.append(Ellipsoid(head_pt(1.30, 0.24, 0.0), (0.06, 0.05, 0.08), "mouth", "mouth"))
    if cat:
        L += head_twins("right nostril", "left nostril", 1.33, 0.40, 0.06, (0.045, 0.045, 0.045),
                        "nostril")
    else:
        L.append(Ellipsoid(head_pt(1.33, 0.40, 0.0), (0.07, 0.07, 0.07), "nose", "nose"))
        L.append(Ellipsoid(head_pt(1.12, 0.70, 0.0), (0.07, 0.06, 0.07), "forehead", "forehead"))
        L.append(Ellipsoid((0.70, 0.58, 0.0), (0.07, 0.06, 0.07), "nape", "nape"))
    # legs: front pair swings by +gait on the right and -gait on the left, back pair opposite
    for front, (fr, fl), colour in ((True, ("front-right foot", "front-left foot"), "ffoot"),
                                    (False, ("back-right foot", "back-left foot"), "bfoot")):
        f0 = 0.55 if front else -0.55
        for name, side in ((fr, 1.0), (fl, -1.0)):
            swing = gait * side * (1.0 if front else -1.0)
            ff = f0 + leg * math.sin(swing)
            uu = -0.15 - leg * math.cos(swing)
            r = 0.30 * side
            for t in (0.3, 0.65):
                L.append(Ellipsoid((f0 + t * (ff - f0), -0.15 + t * (uu + 0.15), r),
                                   (0.08, 0.12, 0.08), "leg"))
            L.append(Ellipsoid((ff, uu, r), (0.10, 0.07, 0.09), colour, name))
    L.append(Ellipsoid((-0.82, 0.14, 0.0), (0.07, 0.07, 0.07), "tailbase", "tail-base"))
    tl = 0.75 if cat else 0.5
    for t in (0.35, 0.7):
        L.append(Ellipsoid((-0.82 - t * tl, 0.14 + 0.6 * t * tl, 0.0), (0.06, 0.06, 0.06), "tail"))
    L.append(Ellipsoid((-0.82 - tl, 0.14 + 0.6 * tl, 0.0), (0.08, 0.08, 0.08), "tailtip", "tail-tip"))
    return L


def _car() -> List[Ellipsoid]:
    L: List[Ellipsoid] = [Ellipsoid((0.0, 0.0, 0.0), (1.12, 0.34, 0.52), "body"),
                          Ellipsoid((-0.10, 0.32, 0.0), (0.55, 0.24, 0.44), "cabin")]
    for nr, nl, f in (("front-right wheel", "front-left wheel", 0.66),
                      ("back-right wheel", "back-left wheel", -0.66)):
        L += [Ellipsoid((f, -0.32, 0.46), (0.23, 0.23, 0.08), "wheel"),
              Ellipsoid((f, -0.32, -0.46), (0.23, 0.23, 0.08), "wheel")]
        L += _twin(nr, nl, (f, -0.32, 0.53), (0.10, 0.10, 0.03), "hub")
    L += _twin("right mirror", "left mirror", (0.30, 0.28, 0.56), (0.07, 0.06, 0.07), "mirror")
    L += _twin("right headlight", "left headlight", (1.06, 0.06, 0.30), (0.08, 0.07, 0.09), "headlight")
    L += _twin("right tail-light", "left tail-light", (-1.06, 0.06, 0.30), (0.08, 0.07, 0.09),
               "taillight")
    L += [Ellipsoid((1.10, -0.14, 0.0), (0.05, 0.06, 0.13), "plate", "front license-plate"),
          Ellipsoid((-1.10, -0.14, 0.0), (0.05, 0.06, 0.13), "plate", "back license-plate"),
          Ellipsoid((1.11, 0.14, 0.0), (0.04, 0.05, 0.05), "emblem", "front emblem"),
          Ellipsoid((-1.11, 0.14, 0.0), (0.04, 0.05, 0.05), "emblem", "back emblem")]
    return L


#: Keypoint parts are drawn this much larger than modelled (to cover about a
#: feature-grid patch at the demo's image size).
PART_SCALE = 1.5

#: Views: azimuth within this many degrees of the frontal view (270 deg), and
#: elevation range (degrees) of the camera above the object.
AZIMUTH_SPREAD = 60.0
ELEVATION = (10.0, 35.0)

#: The categories (real SPair-71k category names).
CATEGORIES: Tuple[str, ...] = ("car", "cat", "dog")


def model(category: str, gait: float = 0.0, head_yaw: float = 0.0) -> List[Ellipsoid]:
    """The ellipsoids of ``category``'s model with the given articulation."""
    if category == "car":
        parts = _car()
    elif category in ("cat", "dog"):
        parts = _animal(category == "cat", gait, head_yaw)
    else:
        raise ValueError(f"category must be one of {list(CATEGORIES)}, got {category!r}")
    return [e if e.part is None else
            Ellipsoid(e.centre, tuple(PART_SCALE * a for a in e.axes), e.colour, e.part)
            for e in parts]


#: Keypoint names drawn by each model (all are SPair-71k names of the category).
PART_NAMES: Dict[str, Tuple[str, ...]] = {
    c: tuple(e.part for e in model(c) if e.part is not None) for c in CATEGORIES}
for _c, _names in PART_NAMES.items():
    _missing = set(_names) - set(SPAIR_KEYPOINT_NAMES[_c])
    assert not _missing, (_c, _missing)


@dataclass(frozen=True)
class Camera:
    """Orthographic view of a model.

    ``phi`` azimuth and ``theta`` elevation (radians), ``roll`` in-plane
    rotation (radians), ``scale`` pixels per model unit, ``cx, cy`` the
    image position of the model origin."""

    phi: float
    theta: float
    roll: float
    scale: float
    cx: float
    cy: float

    def rotation(self) -> np.ndarray:
        """3 x 3 matrix: object (f, u, r) -> camera (X right, Y up, Z toward camera)."""
        c, s = math.cos(self.phi), math.sin(self.phi)
        az = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        ct, st = math.cos(self.theta), math.sin(self.theta)
        el = np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
        return el @ az

    def to_pixels(self, cam_xy: np.ndarray) -> np.ndarray:
        """Camera-plane (X, Y) -> image pixels (x right, y down)."""
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        u, v = cam_xy[..., 0], -cam_xy[..., 1]
        return np.stack([self.cx + self.scale * (cr * u - sr * v),
                         self.cy + self.scale * (sr * u + cr * v)], axis=-1)

    def to_camera_plane(self, px: np.ndarray, py: np.ndarray):
        """Image pixels -> camera-plane (X, Y) (inverse of :meth:`to_pixels`)."""
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        dx, dy = (px - self.cx) / self.scale, (py - self.cy) / self.scale
        u = cr * dx + sr * dy
        v = -sr * dx + cr * dy
        return u, -v


def _draw(e: Ellipsoid, R: np.ndarray, cam: Camera, rgb, zbuf, idbuf, ident, colour):
    """Z-buffer one shaded ellipsoid into the image arrays."""
    H, W = zbuf.shape
    cc = R @ np.asarray(e.centre)
    # M maps a camera-frame offset to unit-sphere coordinates of the ellipsoid
    M = np.diag(1.0 / np.asarray(e.axes)) @ R.T
    rad = max(e.axes) * cam.scale
    cpx = cam.to_pixels(cc[:2])
    x0, x1 = int(max(0, math.floor(cpx[0] - rad))), int(min(W, math.ceil(cpx[0] + rad) + 1))
    y0, y1 = int(max(0, math.floor(cpx[1] - rad))), int(min(H, math.ceil(cpx[1] + rad) + 1))
    if x0 >= x1 or y0 >= y1:
        return
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    X, Y = cam.to_camera_plane(px, py)
    v0 = np.stack([X - cc[0], Y - cc[1], np.zeros_like(X)], axis=-1)
    w = v0 @ M.T
    m = M[:, 2]
    a = m @ m
    b = w @ m
    disc = b * b - a * (np.sum(w * w, axis=-1) - 1.0)
    hit = disc > 0
    if not hit.any():
        return
    t = (-b + np.sqrt(np.where(hit, disc, 0.0))) / a        # front surface (largest Z)
    z = cc[2] + t
    sub_z = zbuf[y0:y1, x0:x1]
    draw = hit & (z > sub_z)
    if not draw.any():
        return
    q = w + t[..., None] * m                                  # unit-sphere point
    n = q @ M                                                 # normal (camera frame)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    shade = 0.45 + 0.55 * np.clip(n @ _LIGHT, 0.0, 1.0)
    sub_z[draw] = z[draw]
    idbuf[y0:y1, x0:x1][draw] = ident
    rgb[y0:y1, x0:x1][draw] = np.asarray(colour, np.float64) * shade[draw][:, None]


def _background(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    """Smooth random colour field plus pixel noise, (H, W, 3) float."""
    w, h = size
    coarse = rng.uniform(70, 190, size=(3, 4, 3))
    yy = np.linspace(0, 2, h)[:, None]
    xx = np.linspace(0, 3, w)[None, :]
    y0, x0 = np.minimum(yy.astype(int), 1), np.minimum(xx.astype(int), 2)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    c = coarse
    out = ((1 - fy) * (1 - fx) * c[y0, x0] + (1 - fy) * fx * c[y0, x0 + 1]
           + fy * (1 - fx) * c[y0 + 1, x0] + fy * fx * c[y0 + 1, x0 + 1])
    return out


def render(category: str, rng: np.random.Generator, size: Tuple[int, int], *,
           noise: float = 6.0):
    """Draw one random view of ``category``.

    Parameters
    ----------
    category : str
    rng : numpy.random.Generator
        Everything random (pose, articulation, colours, occluder, noise).
    size : (int, int)
        ``(W, H)`` in pixels.
    noise : float
        Standard deviation of the pixel noise (0-255 scale).

    Returns
    -------
    (image, mask, keypoints, info) or None
        ``image`` uint8 (H, W, 3); ``mask`` bool (H, W) (the object,
        occluder excluded); ``keypoints`` dict SPair name -> ``[x, y]`` int
        pixel or None where not visible; ``info`` dict with ``phi``,
        ``theta``, ``bbox`` [x1, y1, x2, y2], ``truncated``, ``occluded``.
        None when the object is not in the picture.
    """
    w, h = (int(v) for v in size)
    gait = rng.uniform(-0.45, 0.45)
    head_yaw = rng.uniform(-0.35, 0.35)
    parts = model(category, gait, head_yaw)
    # facing the camera, up to AZIMUTH_SPREAD degrees either way
    phi = math.radians(270.0 + rng.uniform(-AZIMUTH_SPREAD, AZIMUTH_SPREAD))
    theta = math.radians(rng.uniform(*ELEVATION))
    cam = Camera(phi=phi, theta=theta, roll=math.radians(rng.uniform(-10.0, 10.0)),
                 scale=rng.uniform(0.42, 0.52) * min(w, h), cx=rng.uniform(0.4, 0.6) * w,
                 cy=rng.uniform(0.45, 0.6) * h)
    if rng.random() < 0.1:        # sometimes partly out of the frame
        cam = Camera(phi, theta, cam.roll, cam.scale, rng.choice([0.12, 0.88]) * w, cam.cy)
    R = cam.rotation()
    body = np.array(rng.integers(60, 200, size=3), np.float64)
    colours = {k: np.clip(np.asarray(v, float) + rng.normal(0, 8, 3), 0, 255)
               for k, v in PALETTE.items()}
    colours["body"] = body
    rgb = _background(rng, (w, h))
    zbuf = np.full((h, w), -np.inf)
    idbuf = np.zeros((h, w), np.int32)
    for i, e in enumerate(parts):
        _draw(e, R, cam, rgb, zbuf, idbuf, i + 1, colours[e.colour])
    occluded = False
    if rng.random() < 0.25:       # a grey box in front of part of the object
        target = parts[int(rng.integers(len(parts)))]
        ox, oy = cam.to_pixels((R @ np.asarray(target.centre))[:2])
        bw, bh = rng.uniform(0.08, 0.18) * w, rng.uniform(0.1, 0.22) * h
        xa, xb = int(max(0, ox - bw / 2)), int(min(w, ox + bw / 2))
        ya, yb = int(max(0, oy - bh / 2)), int(min(h, oy + bh / 2))
        if xa < xb and ya < yb:
            rgb[ya:yb, xa:xb] = rng.uniform(90, 170)
            idbuf[ya:yb, xa:xb] = -1
            occluded = True
    rgb = rgb + rng.normal(0.0, noise, rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    mask = idbuf > 0
    if not mask.any():
        return None
    kps: Dict[str, Optional[List[int]]] = {}
    for i, e in enumerate(parts):
        if e.part is None:
            continue
        px, py = cam.to_pixels((R @ np.asarray(e.centre))[:2])
        ix, iy = int(round(px - 0.5)), int(round(py - 0.5))
        seen = 0 <= ix < w and 0 <= iy < h and idbuf[iy, ix] == i + 1
        kps[e.part] = [ix, iy] if seen else None
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    truncated = bool(mask[:, 0].any() or mask[:, -1].any() or mask[0].any() or mask[-1].any())
    info = {"phi": phi, "theta": theta, "bbox": bbox, "truncated": truncated,
            "occluded": occluded}
    return image, mask, kps, info

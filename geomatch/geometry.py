"""Image <-> network input <-> feature grid coordinates: the one home.

Everything that maps a point or a pixel between the three spaces of the
pipeline lives here, and every other module (preprocessing, the feature cache,
keypoint transfer, the loss, training, evaluation) calls these functions.  The
conventions are specified in ``docs/method.md#coordinates``; in short:

Coordinates
    A point is ``(x, y)`` with x to the right and y down.  Keypoints are in
    pixels of the original image of size ``(W, H)``: pixel ``(i, j)`` (row,
    column) covers the square ``[j, j + 1) x [i, i + 1)``, so a keypoint at
    ``x`` lies in pixel column ``floor(x)`` and ``0 <= x < W``.

Frame (:class:`Frame`, :func:`make_frame`, :func:`grid_frame`)
    How the original image sits in the square network input of side ``S``.
    ``"resize"`` (GECO) stretches the image to ``S x S``; ``"pad"``
    (GeoAware-SC) scales the longer side to ``S``, the shorter one to
    ``round(S * short / long)`` (round half to even) and centres it with an
    offset of ``floor((S - new) / 2)`` input pixels (:func:`pad_geometry`).
    The *region* ``(x0, y0, fw, fh)`` of a frame is the rectangle of
    original-image coordinates that the whole input (and so the feature grid)
    covers: ``(0, 0, W, H)`` for "resize" and
    ``(-ox / s, -oy / s, max(W, H), max(W, H))`` with ``s = S / max(W, H)``
    for "pad".  A keypoint ``p`` sits at ``p - (x0, y0)`` of a "frame image"
    of size ``(fw, fh)``, which is what the feature grid tiles uniformly.

Patches (:func:`patch_index`, :func:`keypoint_patches`, :func:`patch_centers`)
    On a grid of ``h x w`` patches covering an image of size ``(W, H)``, the
    point ``(x, y)`` belongs to patch ``(floor(y h / H), floor(x w / W))``,
    clamped to the grid; patch ``(i, j)`` maps back to the pixel of its centre
    under PyTorch's ``align_corners=False`` upsampling,
    ``((j + 0.5) W / w - 0.5, (i + 0.5) H / h - 0.5)``.

Foreground (:func:`foreground_grid`)
    Patch ``(r, c)`` samples the image pixel ``(floor(y0 + floor(r fh / h)),
    floor(x0 + floor(c fw / w)))`` (nearest-neighbour resizing as
    ``torch.nn.functional.interpolate(mode="nearest")``); a sample outside the
    image (the padding) is background.

Flips (:func:`flip_x`) -- the one rule
    Mirroring an image of width ``W`` reflects the continuous plane about its
    centre line ``x = W / 2``: a continuous coordinate ``x`` goes to ``W - x``
    and the pixel *index* ``j`` (the pixel covering ``[j, j + 1)``) goes to
    ``W - 1 - j``.  Both are the same reflection; which one applies depends on
    what the number is:

    * a network-input position (:meth:`Frame.to_input`, which maps the
      continuous plane of the image onto the input) is continuous:
      ``S - x``, as GeoAware-SC's ``flip_keypoints`` does on its padded
      input (``img_size - x``);
    * a keypoint annotation used for flip augmentation in training, and a
      column index into a mask, are pixel indices: ``W - 1 - x``, as GECO's
      augmentation does (``imsize - kps - 1``), so a keypoint annotated on
      pixel column ``j`` lands on the mirrored pixel column (and a keypoint
      in patch column ``c`` in patch column ``w - 1 - c`` whenever ``W / w``
      is an integer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

import numpy as np

__all__ = ["PREPROCESS_MODES", "DEFAULT_SIZES", "MAX_INPUT_SIZE", "check_input_size",
           "Frame", "make_frame", "grid_frame",
           "pad_geometry", "flip_x", "patch_index", "keypoint_patches", "patch_centers",
           "foreground_grid"]

PREPROCESS_MODES = ("resize", "pad")
DEFAULT_SIZES = {"resize": 518, "pad": 840}
#: Largest side of the network input (4 x 518 = 148 patches of 14); see
#: docs/limits.md.  Larger inputs are refused before anything is allocated.
MAX_INPUT_SIZE = 2072

Region = Tuple[float, float, float, float]


# ---------------------------------------------------------------------------
# flips

def flip_x(x, width, *, pixel_index: bool):
    """Mirror x coordinates in an image (or input) of width ``width``.

    Parameters
    ----------
    x : float, int or ndarray
        x coordinates (any shape).
    width : int or float
        Width of the mirrored image.
    pixel_index : bool
        True: ``x`` are pixel indices (or keypoints annotated on pixels),
        mapped to ``width - 1 - x``.  False: ``x`` are continuous coordinates
        of the image plane, mapped to ``width - x``.  See the module docstring
        for which applies where.

    Returns
    -------
    Same type as ``x`` (NumPy's arithmetic rules).
    """
    if pixel_index:
        return width - 1 - x
    return width - x


# ---------------------------------------------------------------------------
# the frame of an image in the network input

def _check_mode(mode) -> None:
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess mode must be 'resize' or 'pad', got {mode!r}")


def pad_geometry(w: int, h: int, size: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Resized size and paste offset of the GeoAware-SC ``"pad"`` mode.

    Parameters
    ----------
    w, h : int
        Original image size.
    size : int
        Side ``S`` of the square network input.

    Returns
    -------
    ((nw, nh), (ox, oy)) : the image is resized to ``(nw, nh)`` (longer side
    ``S``, shorter ``round(S * short / long)``, NumPy's round half to even) and
    pasted at ``(ox, oy) = ((S - nw) // 2, (S - nh) // 2)``.
    """
    if h <= w:
        nw, nh = size, int(np.around(size * h / w))
        return (nw, nh), (0, (size - nh) // 2)
    nw, nh = int(np.around(size * w / h)), size
    return (nw, nh), ((size - nw) // 2, 0)


def _region(w: float, h: float, mode: str, size: Optional[int]) -> Region:
    """The region (x0, y0, fw, fh) of the original plane that the input covers."""
    if mode == "resize":
        return 0.0, 0.0, w, h
    long_side = max(w, h)
    scale = size / long_side
    _, (off_x, off_y) = pad_geometry(w, h, size)
    return -off_x / scale, -off_y / scale, long_side, long_side


def grid_frame(image_size, manifest: Mapping) -> Region:
    """The rectangle of the original image that the feature grid covers.

    Parameters
    ----------
    image_size : (W, H)
        Original image size in pixels.
    manifest : dict
        A cache manifest (uses ``preprocess`` and ``resolution``).

    Returns
    -------
    (x0, y0, fw, fh) : tuple of float
        The grid spans original-image x in [x0, x0 + fw] and y in
        [y0, y0 + fh].  ``"resize"``: ``(0, 0, W, H)``.  ``"pad"`` (the
        GeoAware-SC convention of ``preprocess_kps_pad`` in
        ``utils/utils_dataset.py``): scale = S / max(W, H); the short side
        becomes round(S·short/long) (round half to even) and is centred with
        an offset of floor((S − new)/2) pixels of the S×S input, so the frame
        is ``(-offset_x/scale, -offset_y/scale, max(W, H), max(W, H))``.
        The same numbers as ``make_frame(...).region``; see
        ``docs/method.md#coordinates``.

    Keypoints map into the frame as ``p - (x0, y0)`` for a frame image of
    size (fw, fh), and back by adding (x0, y0).
    """
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (W, H), got {image_size!r}") from None
    if not (w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h)):
        raise ValueError(f"image_size must be positive (W, H), got {image_size!r}")
    mode = manifest.get("preprocess") if isinstance(manifest, Mapping) else None
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"manifest 'preprocess' must be 'resize' or 'pad', got {mode!r}")
    size = int(manifest["resolution"][0]) if mode == "pad" else None
    return _region(w, h, mode, size)


@dataclass(frozen=True)
class Frame:
    """How an original image sits in the network input.

    Attributes
    ----------
    image_size : (W, H) of the original image.
    input_size : (W, H) of the network input.
    scale : (sx, sy) network-input pixels per original pixel.
    offset : (ox, oy) of the original image's origin in the network input.
    flipped : whether the network input is mirrored horizontally.
    patch_size : ViT patch size (the feature grid is input_size // patch_size).
    """

    image_size: Tuple[int, int]
    input_size: Tuple[int, int]
    scale: Tuple[float, float]
    offset: Tuple[float, float]
    flipped: bool = False
    patch_size: int = 14
    # exact (x0, y0, fw, fh) as grid_frame computes it (set by make_frame)
    _region: Optional[Region] = field(default=None, compare=False, repr=False)

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w) of the patch-feature grid."""
        return self.input_size[1] // self.patch_size, self.input_size[0] // self.patch_size

    @property
    def region(self) -> Region:
        """(x0, y0, fw, fh): the rectangle of original-image coordinates the
        (unflipped) input covers, as :func:`grid_frame` returns it."""
        if self._region is not None:
            return self._region
        sx, sy = self.scale
        return (-self.offset[0] / sx, -self.offset[1] / sy, self.input_size[0] / sx,
                self.input_size[1] / sy)

    def to_input(self, xy) -> np.ndarray:
        """Map (..., 2) original pixel coordinates (x, y) to the network input.

        A flipped frame mirrors the continuous input plane: ``x -> S - x``
        (:func:`flip_x` with ``pixel_index=False``)."""
        p = np.asarray(xy, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"xy must have shape (..., 2), got {p.shape}")
        x = p[..., 0] * self.scale[0] + self.offset[0]
        y = p[..., 1] * self.scale[1] + self.offset[1]
        if self.flipped:
            x = flip_x(x, self.input_size[0], pixel_index=False)
        return np.stack([x, y], axis=-1)

    def to_image(self, xy) -> np.ndarray:
        """Map (..., 2) network-input coordinates back to the original image."""
        p = np.asarray(xy, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"xy must have shape (..., 2), got {p.shape}")
        x = p[..., 0]
        if self.flipped:
            x = flip_x(x, self.input_size[0], pixel_index=False)
        return np.stack([(x - self.offset[0]) / self.scale[0],
                         (p[..., 1] - self.offset[1]) / self.scale[1]], axis=-1)

    def flip(self) -> "Frame":
        """The same frame for the horizontally mirrored network input."""
        return Frame(self.image_size, self.input_size, self.scale, self.offset,
                     not self.flipped, self.patch_size, self._region)


def check_input_size(size, patch_size: Optional[int] = 14, name: str = "size") -> int:
    """Validate the side of a square network input and return it as an int.

    The one size policy of the backbone: a positive multiple of
    ``patch_size`` of at most :data:`MAX_INPUT_SIZE` pixels (``patch_size``
    None: only positive and at most the maximum, for a check made before the
    model is loaded).

    Raises
    ------
    TypeError
        ``size`` is not an integer.
    ValueError
        ``size`` is not positive, not a multiple of ``patch_size`` or above
        :data:`MAX_INPUT_SIZE` (the message names ``name``).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {size!r}")
    size = int(size)
    if patch_size is None:
        if size < 1:
            raise ValueError(f"{name} must be positive, got {size}")
    elif size < patch_size or size % patch_size:
        raise ValueError(f"{name} must be a positive multiple of {patch_size}, got {size}")
    if size > MAX_INPUT_SIZE:
        raise ValueError(f"{name} must be at most {MAX_INPUT_SIZE} (4 x 518), got {size}")
    return size


def make_frame(image_size, mode: str = "resize", size: Optional[int] = None, *,
               flipped: bool = False, patch_size: int = 14) -> Frame:
    """The :class:`Frame` of an image of ``image_size`` (W, H).

    Parameters
    ----------
    image_size : (W, H)
        Original image size in pixels (positive integers).
    mode : {"resize", "pad"}
        Preprocessing convention (see the module docstring).
    size : int, optional
        Side of the square network input, a multiple of ``patch_size``
        (default 518 for "resize", 840 for "pad").
    flipped : bool
        Whether the network input is mirrored horizontally.
    patch_size : int
        ViT patch size.

    Returns
    -------
    Frame
        Without touching pixels; :func:`geomatch.backbone.preprocess_image`
        returns the same frame with the pixels.
    """
    _check_mode(mode)
    size = check_input_size(DEFAULT_SIZES[mode] if size is None else size, patch_size)
    w, h = (int(v) for v in image_size)
    if w < 1 or h < 1:
        raise ValueError(f"image_size must be positive (W, H), got {image_size}")
    region = _region(float(w), float(h), mode, size)
    x0, y0, fw, fh = region
    sx, sy = size / fw, size / fh
    return Frame((w, h), (size, size), (sx, sy), (-x0 * sx, -y0 * sy), flipped, patch_size,
                 region)


# ---------------------------------------------------------------------------
# keypoints <-> patches

def patch_index(x, y, W, H, w: int, h: int):
    """Patch (row, column) of points (x, y) on an h x w grid over a W x H image.

    ``(floor(y h / H), floor(x w / W))`` clamped to ``[0, h - 1] x [0, w - 1]``
    (a point exactly on the right or bottom border stays in the last patch).

    Parameters
    ----------
    x, y : ndarray
        Coordinates (any broadcastable shapes; computed in their dtype, with
        NumPy's promotion against ``W`` and ``H``).
    W, H : float, int or ndarray
        Image size (broadcast against ``x`` and ``y``).
    w, h : int
        Grid size.

    Returns
    -------
    (rows, cols) : int64 ndarrays.
    """
    r = np.clip(np.floor(y * h / H), 0, h - 1).astype(np.int64)
    c = np.clip(np.floor(x * w / W), 0, w - 1).astype(np.int64)
    return r, c


def keypoint_patches(kps, visible, size, grid) -> np.ndarray:
    """Flat patch index r * w + c of each keypoint, -1 where not visible.

    Parameters
    ----------
    kps : (K, 2) array of (x, y) pixels (rows of invisible keypoints may be NaN).
    visible : (K,) bool.
    size : (W, H) of the image.
    grid : (h, w) of its feature map.

    The patch of (x, y) is (floor(y h / H), floor(x w / W)), clamped to the grid
    (:func:`patch_index`).
    """
    kps = np.asarray(kps, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    if kps.ndim != 2 or kps.shape[1] != 2:
        raise ValueError(f"kps must have shape (K, 2), got {kps.shape}")
    if vis.shape != (kps.shape[0],):
        raise ValueError(f"visible must have shape ({kps.shape[0]},), got {vis.shape}")
    W, H = float(size[0]), float(size[1])
    h, w = int(grid[0]), int(grid[1])
    out = np.full(kps.shape[0], -1, dtype=np.int64)
    if vis.any():
        p = kps[vis]
        if not np.isfinite(p).all():
            raise ValueError("kps: visible keypoints must have finite coordinates")
        r, c = patch_index(p[:, 0], p[:, 1], W, H, w, h)
        out[vis] = r * w + c
    return out


def patch_centers(grid_xy, W, H, w: int, h: int) -> np.ndarray:
    """Pixel (x, y) of patch centres under ``align_corners=False`` upsampling.

    Parameters
    ----------
    grid_xy : ndarray (..., 2)
        Grid positions as (column j, row i) -- integer patches or fractional
        positions (a soft-argmax).
    W, H : float or ndarray
        Image size (broadcast against ``ij[..., 0]``).
    w, h : int
        Grid size.

    Returns
    -------
    ndarray (..., 2) float64: ``x = (j + 0.5) W / w - 0.5``, ``y = (i + 0.5)
    H / h - 0.5``, clipped to ``[0, W - 1] x [0, H - 1]``.
    """
    g = np.asarray(grid_xy, dtype=np.float64)
    out = np.empty(g.shape, dtype=np.float64)
    out[..., 0] = np.clip((g[..., 0] + 0.5) * (W / w) - 0.5, 0, W - 1)
    out[..., 1] = np.clip((g[..., 1] + 0.5) * (H / h) - 0.5, 0, H - 1)
    return out


# ---------------------------------------------------------------------------
# foreground on the grid

def foreground_grid(grid, size, *, mask=None, bbox=None, region: Optional[Region] = None,
                    flipped: bool = False) -> np.ndarray:
    """Foreground of the (h, w) patch grid from a segmentation mask, else a bbox.

    Nearest-neighbour resizing as ``torch.nn.functional.interpolate(mode="nearest")``
    (GECO): patch (r, c) takes the pixel (floor(x0 + floor(c fw / w)),
    floor(y0 + floor(r fh / h))) of the image; samples outside the image (the
    padding of a "pad" frame) are background.

    Parameters
    ----------
    grid : (h, w).
    size : (W, H) of the image.
    mask : (H, W) array (or (H, W, C): channel 0), nonzero = object, or None.
    bbox : (x1, y1, x2, y2) pixels, used when ``mask`` is None.
    region : (x0, y0, fw, fh)
        The frame region the grid covers (:func:`grid_frame`); default the
        whole image ``(0, 0, W, H)``.
    flipped : bool
        The grid belongs to the horizontally mirrored input: column ``c``
        samples the mirrored pixel column (:func:`flip_x` on pixel indices).

    Returns
    -------
    (h, w) bool array.
    """
    h, w = int(grid[0]), int(grid[1])
    W, H = int(size[0]), int(size[1])
    x0, y0, fw, fh = (0.0, 0.0, W, H) if region is None else region
    xs = np.floor(x0 + np.floor(np.arange(w) * (fw / w))).astype(np.int64)
    ys = np.floor(y0 + np.floor(np.arange(h) * (fh / h))).astype(np.int64)
    inx = (xs >= 0) & (xs < W)
    iny = (ys >= 0) & (ys < H)
    ys = np.clip(ys, 0, H - 1)
    xs = np.clip(xs, 0, W - 1)
    if flipped:
        xs = flip_x(xs, W, pixel_index=True)
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 3:
            m = m[..., 0]
        if m.shape != (H, W):
            raise ValueError(f"mask has shape {m.shape}, expected (H, W) = {(H, W)}")
        fg = m[np.ix_(ys, xs)] != 0
    else:
        if bbox is None:
            raise ValueError("foreground_grid needs a mask or a bbox")
        x1, y1, x2, y2 = (float(v) for v in bbox)
        inr = (ys >= y1) & (ys <= y2)
        inc = (xs >= x1) & (xs <= x2)
        fg = inr[:, None] & inc[None, :]
    return fg & iny[:, None] & inx[None, :]

"""Image preprocessing for the DINOv2 backbone, with coordinate bookkeeping.

Two published conventions:

* ``"resize"`` (GECO): stretch the image to ``size`` x ``size`` (518), PIL
  bilinear -- what ``torchvision.transforms.Resize((518, 518))`` does on a
  PIL image.
* ``"pad"`` (GeoAware-SC, ``utils/utils_correspondence.py: resize``): scale the
  longer side to ``size`` (840) with PIL Lanczos, the shorter one to
  ``round(size * short / long)`` (NumPy rounding), and paste the result
  centred on a black square (offset ``(size - short) // 2``).  Keypoints map
  with the uniform scale ``size / max(W, H)`` plus that offset, as
  GeoAware-SC's ``preprocess_kps_pad`` does.

Both then scale to [0, 1] and normalize with the ImageNet mean/std.  A
horizontal flip mirrors the network input; a point x of the unflipped input
goes to ``input_width - x`` (GeoAware-SC's ``flip_keypoints`` convention).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_SIZES", "Frame", "make_frame",
           "load_image", "preprocess_image", "normalize"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_SIZES = {"resize": 518, "pad": 840}


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

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w) of the patch-feature grid."""
        return self.input_size[1] // self.patch_size, self.input_size[0] // self.patch_size

    def to_input(self, xy) -> np.ndarray:
        """Map (..., 2) original pixel coordinates (x, y) to the network input."""
        p = np.asarray(xy, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"xy must have shape (..., 2), got {p.shape}")
        x = p[..., 0] * self.scale[0] + self.offset[0]
        y = p[..., 1] * self.scale[1] + self.offset[1]
        if self.flipped:
            x = self.input_size[0] - x
        return np.stack([x, y], axis=-1)

    def to_image(self, xy) -> np.ndarray:
        """Map (..., 2) network-input coordinates back to the original image."""
        p = np.asarray(xy, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"xy must have shape (..., 2), got {p.shape}")
        x = p[..., 0]
        if self.flipped:
            x = self.input_size[0] - x
        return np.stack([(x - self.offset[0]) / self.scale[0],
                         (p[..., 1] - self.offset[1]) / self.scale[1]], axis=-1)

    def flip(self) -> "Frame":
        """The same frame for the horizontally mirrored network input."""
        return Frame(self.image_size, self.input_size, self.scale, self.offset,
                     not self.flipped, self.patch_size)


def _check_mode(mode: str) -> None:
    if mode not in DEFAULT_SIZES:
        raise ValueError(f"preprocess mode must be 'resize' or 'pad', got {mode!r}")


def _pad_geometry(w: int, h: int, size: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(resized (W, H), paste offset (ox, oy)) of the GeoAware-SC pad mode."""
    if h <= w:
        nw, nh = size, int(np.around(size * h / w))
        return (nw, nh), (0, (size - nh) // 2)
    nw, nh = int(np.around(size * w / h)), size
    return (nw, nh), ((size - nw) // 2, 0)


def make_frame(image_size, mode: str = "resize", size: int = None, *, flipped: bool = False,
               patch_size: int = 14) -> Frame:
    """The :class:`Frame` that :func:`preprocess_image` uses for an image of
    ``image_size`` (W, H), without touching pixels."""
    _check_mode(mode)
    size = int(DEFAULT_SIZES[mode] if size is None else size)
    if size < patch_size or size % patch_size:
        raise ValueError(f"size must be a positive multiple of {patch_size}, got {size}")
    w, h = (int(v) for v in image_size)
    if w < 1 or h < 1:
        raise ValueError(f"image_size must be positive (W, H), got {image_size}")
    # One definition of the coordinate convention: geomatch.data.cache.grid_frame
    # (the evaluation uses it to map keypoints onto cached feature grids).
    from ..data.cache import grid_frame

    x0, y0, fw, fh = grid_frame((w, h), {"preprocess": mode, "resolution": [size, size]})
    sx, sy = size / fw, size / fh
    return Frame((w, h), (size, size), (sx, sy), (-x0 * sx, -y0 * sy), flipped, patch_size)


def load_image(path):
    """Open an image file as an RGB PIL image (FileNotFoundError names the path)."""
    from PIL import Image

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path}: {exc} (raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                         "the file)") from None


def normalize(rgb_uint8: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32, /255, ImageNet mean/std."""
    x = np.asarray(rgb_uint8, dtype=np.float32) * np.float32(1 / 255)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def preprocess_image(image, mode: str = "resize", size: int = None, *, flip: bool = False,
                     patch_size: int = 14):
    """Network input and frame for one image.

    Parameters
    ----------
    image : path, PIL image or uint8 array (H, W, 3)
    mode : ``"resize"`` (GECO, 518 stretch) or ``"pad"`` (GeoAware-SC, 840
        longest side, centred black padding)
    size : side of the square network input (default 518 / 840)
    flip : mirror the network input horizontally

    Returns
    -------
    pixels : float32 (size, size, 3), normalized, channel-last
    frame : :class:`Frame` mapping original coordinates to the input
    """
    from PIL import Image

    _check_mode(mode)
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("image arrays must be uint8 of shape (H, W, 3), got "
                             f"{image.dtype} {image.shape}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"image must be a path, PIL image or uint8 array, got {type(image)}")
    else:
        image = image.convert("RGB")
    frame = make_frame(image.size, mode, size, flipped=flip, patch_size=patch_size)
    s = frame.input_size[0]
    if mode == "resize":
        arr = np.asarray(image.resize((s, s), Image.BILINEAR))
    else:
        (nw, nh), (ox, oy) = _pad_geometry(image.size[0], image.size[1], s)
        small = np.asarray(image.resize((nw, nh), Image.LANCZOS))
        arr = np.zeros((s, s, 3), dtype=np.uint8)
        arr[oy:oy + nh, ox:ox + nw] = small
    pixels = normalize(arr)
    if flip:
        pixels = np.ascontiguousarray(pixels[:, ::-1])
    return pixels, frame

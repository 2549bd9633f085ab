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
The coordinate bookkeeping (:class:`Frame`, :func:`make_frame`, the pad
maths) lives in :mod:`geomatch.geometry` and is re-exported here; see
``docs/method.md#preprocessing``.
"""
from __future__ import annotations

import os

import numpy as np

from ..geometry import (DEFAULT_SIZES, MAX_INPUT_SIZE, Frame, _check_mode, check_input_size,
                        make_frame, pad_geometry)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_SIZES", "MAX_INPUT_SIZE", "Frame",
           "make_frame", "check_input_size", "load_image", "preprocess_image", "normalize"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


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
        (nw, nh), (ox, oy) = pad_geometry(image.size[0], image.size[1], s)
        small = np.asarray(image.resize((nw, nh), Image.LANCZOS))
        arr = np.zeros((s, s, 3), dtype=np.uint8)
        arr[oy:oy + nh, ox:ox + nw] = small
    pixels = normalize(arr)
    if flip:
        pixels = np.ascontiguousarray(pixels[:, ::-1])
    return pixels, frame

"""Keypoint transfer: predict where source keypoints land in a target image.

Three modes share one entry point, :func:`transfer_keypoints`
(docs/method.md#keypoint-transfer; the pixel conventions are those of
:mod:`geomatch.geometry`, docs/method.md#coordinates):

``"upsample-argmax"`` (default, the published GECO / GeoAware-SC protocol)
    Both feature maps are upsampled bilinearly to their original image sizes
    with PyTorch's ``align_corners=False`` rule (source coordinate
    ``s = (dst + 0.5) * in / out - 0.5``, negative ``s`` clamped to 0, the
    upper tap clamped to the last grid index), the source descriptor is read
    at pixel ``(floor(y), floor(x))`` and the prediction is the target pixel
    of maximal cosine similarity over every pixel of the upsampled target
    map.  The C core returns exactly that pixel without building any
    upsampled map: the numerator is a bilinear interpolation of grid dot
    products, and the squared norm of an interpolated descriptor needs only
    the Gram products of neighbouring grid vectors, so each pixel costs a few
    flops independent of the feature dimension; an exact branch and bound
    over grid cells evaluates only the cells whose bound can reach the best
    value (docs/performance.md, "Keypoint transfer").

``"grid-argmax"``
    Cosine argmax on the patch grid.  The source descriptor is the grid
    vector of the keypoint's patch ``(floor(y * h / H), floor(x * w / W))``;
    the best target patch ``(i, j)`` is mapped to the pixel of its centre
    under the same ``align_corners=False`` convention,
    ``x = (j + 0.5) * W / w - 0.5``, ``y = (i + 0.5) * H / h - 0.5``
    (the pixel whose upsampling source coordinate is exactly ``j``, ``i``),
    clipped to ``[0, W - 1] x [0, H - 1]``.

``"grid-argmax-corner"``
    GECO's evaluation without upsampling (its AP-10K protocol): the same
    grid argmax, but the best patch ``(i, j)`` is mapped to the pixel of its
    top-left corner ``x = floor(j * W / w)``, ``y = floor(i * H / h)``
    (:func:`grid_cell_corner`; the scale is formed in float32 as GECO's
    ``ArgmaxMatcher.get_one_trg_point`` does).

``"soft-argmax"``
    Window soft-argmax on the grid (:func:`geomatch.window_soft_argmax`): the
    grid argmax as above, then a softmax of ``cosine / temperature``
    restricted to the ``(2 * window + 1)^2`` window around it (clipped at the
    grid border), and the expected grid position, mapped to pixels with the
    same formula.

Cosine similarity with a zero vector is taken as 0 (in "upsample-argmax", a
target descriptor whose squared norm underflows -- below about 1e-38 in
float32 -- counts as zero).  Ties go to the first pixel (row-major); the
answer is the published protocol's pixel up to float rounding ties.

Memory of "upsample-argmax": O(K h w + h W) floats per call (K keypoints, h x w
grid, W target width; O(K h W) when a keypoint takes the exhaustive scan),
never the O(H W D) of the upsampled maps.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from .. import _core
from ..geometry import patch_centers, patch_index
from .layout import as_feature_map, check_torch_tensor
from .matching import argmax_2d, window_soft_argmax
from .similarity import cosine_similarity

__all__ = ["transfer_keypoints", "TRANSFER_MODES", "grid_cell_corner"]

TRANSFER_MODES = ("upsample-argmax", "grid-argmax", "grid-argmax-corner", "soft-argmax")

SizeLike = Union[Sequence[int], np.ndarray]


def _float_type(name: str, arr: np.ndarray) -> type:
    if arr.dtype == np.float64:
        return np.float64
    if arr.dtype in (np.float32, np.float16):
        return np.float32
    raise TypeError(f"{name} must have a real floating-point dtype (float32 or float64), "
                    f"got {arr.dtype}")


def _as_float_array(name: str, obj) -> np.ndarray:
    check_torch_tensor(name, obj)
    try:
        arr = np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a float array") from exc
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must have a real floating-point dtype (float32 or "
                        f"float64), got {arr.dtype}")
    return arr


def _keypoint_array(name: str, obj, like: np.ndarray) -> np.ndarray:
    """Keypoints as a float array: float arrays as they are; integer pixel
    indices (not bool) converted to the feature maps' float type, since a
    pixel index is a valid (x, y) coordinate.  Anything else: TypeError."""
    check_torch_tensor(name, obj)
    try:
        arr = np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a float array") from exc
    if arr.dtype != bool and np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64 if like.dtype == np.float64 else np.float32)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold float or integer pixel coordinates, got dtype "
                        f"{arr.dtype}")
    return arr


def _sizes(name: str, obj, lead: tuple) -> np.ndarray:
    """Image sizes (W, H): (2,) or lead + (2,) -> int64 array lead + (2,).

    Only converts: the range (the size policy of docs/limits.md) is checked
    by the C core, for every mode."""
    try:
        arr = np.asarray(obj)
    except Exception as exc:
        raise TypeError(f"{name} must be an image size (W, H) of integers") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be an image size (W, H) of integers, got dtype "
                        f"{arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must be (W, H) or have shape (..., 2), got shape "
                         f"{arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer image sizes (W, H), got {arr}")
        arr = np.clip(arr, -1, 2**62)  # beyond int64: out of range either way
    try:
        out = np.broadcast_to(arr.astype(np.int64), lead + (2,))
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape} does not match the batch "
                         f"dimensions {lead} of the feature maps") from None
    return np.ascontiguousarray(out)


def transfer_keypoints(src_feat: np.ndarray, trg_feat: np.ndarray, src_kps: np.ndarray,
                       src_size: SizeLike, trg_size: SizeLike, *,
                       mode: str = "upsample-argmax", window: int = 7,
                       temperature: float = 0.02, layout: Optional[str] = None) -> np.ndarray:
    """Transfer source keypoints to the target image by cosine matching.

    Parameters
    ----------
    src_feat, trg_feat : ndarray, shape (..., h, w, D)
        Channel-last feature maps of the source and target images (grid sizes
        may differ between the two; the leading batch dimensions and ``D``
        must agree).  float32 (working type) or float64.
    src_kps : ndarray, shape (..., K, 2)
        Source keypoints as (x, y) pixels, ``0 <= x < W`` and ``0 <= y < H``
        of the source image: float, or integer pixel indices (converted to
        the feature maps' float type).
    src_size, trg_size : (W, H) or array of shape (..., 2)
        Original image sizes in pixels, one per batch element or one for
        all: integers from 1 to 65536 (``2**16``) per side, the C core's size
        policy (docs/limits.md), checked before any allocation.
    mode : {"upsample-argmax", "grid-argmax", "grid-argmax-corner", "soft-argmax"}
        See the module docstring.  ``"upsample-argmax"`` reproduces the
        published protocol exactly (up to float ties) at a small fraction of
        the cost of upsampling.
    window : int
        Half-width of the soft-argmax window (``"soft-argmax"`` only).
    temperature : float
        Softmax temperature of ``"soft-argmax"``.
    layout : {None, "hwc", "chw"}
        Channel order of both maps.  ``"chw"``: channel-first ``(..., D, h, w)``
        as torch code writes them (transposed here).  ``None``: channel-last,
        and a map that looks channel-first -- the first of its last three
        axes larger than both others, or the last two equal and the first
        not -- is refused (pass ``"hwc"`` to insist); see
        :mod:`geomatch.ops.layout`.

    Returns
    -------
    ndarray, shape (..., K, 2)
        Predicted target (x, y) pixels; float64 if any of ``src_feat``,
        ``trg_feat`` or ``src_kps`` is float64, else float32.  Integer-valued
        for ``"upsample-argmax"``.

    Raises
    ------
    ValueError, TypeError
        Bad shapes or dtypes, non-finite values, sizes outside 1..65536,
        keypoints outside the source image, an unknown mode, a map that looks
        channel-first without ``layout``, a torch tensor that requires grad
        or is bfloat16 (the message says what to call); the message names
        the argument and shows the offending values.
    """
    return _transfer(src_feat, trg_feat, src_kps, src_size, trg_size, mode=mode,
                     window=window, temperature=temperature, layout=layout, check_src=True)


def _transfer_checked_src(src_feat, trg_feat, src_kps, src_size, trg_size, *,
                          mode: str = "upsample-argmax", window: int = 7,
                          temperature: float = 0.02, layout: Optional[str] = None) -> np.ndarray:
    """:func:`transfer_keypoints` for a caller that has checked ``src_feat``
    for non-finite values already (the evaluation's feature loader): the C
    kernel then skips its scan of the whole source map, which costs about as
    much memory traffic as the transfer itself (it needs only the few grid
    vectors around the keypoints).  Same results."""
    return _transfer(src_feat, trg_feat, src_kps, src_size, trg_size, mode=mode,
                     window=window, temperature=temperature, layout=layout, check_src=False)


def _transfer(src_feat, trg_feat, src_kps, src_size, trg_size, *, mode, window, temperature,
              layout, check_src):
    if not isinstance(mode, str) or mode not in TRANSFER_MODES:
        raise ValueError(f"mode must be one of {TRANSFER_MODES}, got {mode!r}")
    sf = _as_float_array("src_feat", as_feature_map("src_feat", src_feat, layout))
    tf = _as_float_array("trg_feat", as_feature_map("trg_feat", trg_feat, layout))
    if layout == "chw":
        sf, tf = np.ascontiguousarray(sf), np.ascontiguousarray(tf)
    kp = _keypoint_array("src_kps", src_kps, sf)
    if sf.ndim < 3:
        raise ValueError(f"src_feat must have shape (..., h, w, D), got shape {sf.shape}")
    lead = sf.shape[:-3]
    if tf.ndim != sf.ndim or tf.shape[:-3] != lead:
        raise ValueError(f"trg_feat must have shape {lead} + (h, w, D) like src_feat, "
                         f"got shape {tf.shape}")
    if kp.ndim != len(lead) + 2 or kp.shape[:-2] != lead or kp.shape[-1] != 2:
        raise ValueError(f"src_kps must have shape {lead} + (K, 2), got shape {kp.shape}")
    ss = _sizes("src_size", src_size, lead)
    ts = _sizes("trg_size", trg_size, lead)
    if mode == "upsample-argmax":
        try:
            return _core.transfer_upsample_argmax(sf, tf, kp, ss, ts, check_src=check_src)
        except FloatingPointError:
            # float32 dot products overflowed (|values| beyond ~1e18): cosine is
            # scale-free, so float64 gives the same protocol without overflow.
            if np.float64 in (sf.dtype, tf.dtype, kp.dtype):
                raise
            out = _core.transfer_upsample_argmax(sf.astype(np.float64), tf.astype(np.float64),
                                                 kp.astype(np.float64), ss, ts)
            return out.astype(np.float32)
    window, temperature = _check_soft_params(window, temperature)
    return _grid_transfer(sf, tf, kp, ss, ts, soft=(mode == "soft-argmax"),
                          window=window, temperature=temperature,
                          corner=(mode == "grid-argmax-corner"))


def grid_cell_corner(cell, grid_shape, image_size) -> np.ndarray:
    """Top-left pixel of grid cells (GECO's no-upsampling convention).

    Parameters
    ----------
    cell : array_like, shape (..., 2)
        Grid positions (column j, row i), integers.
    grid_shape : (h, w)
    image_size : (W, H) or array of shape (..., 2)

    Returns
    -------
    numpy.ndarray, float64, shape (..., 2)
        ``(floor(j * (W / w)), floor(i * (H / h)))`` with the scale ``W / w``
        formed and multiplied in float32, as GECO's
        ``src/matcher/argmaxmatcher.py: get_one_trg_point`` does.
    """
    c = np.asarray(cell)
    if c.shape[-1:] != (2,):
        raise ValueError(f"cell must have shape (..., 2), got {c.shape}")
    h, w = (int(v) for v in grid_shape)
    if h < 1 or w < 1:
        raise ValueError(f"grid_shape must be positive (h, w), got {grid_shape!r}")
    size = np.asarray(image_size)
    if size.shape[-1:] != (2,) or np.any(size <= 0):
        raise ValueError(f"image_size must be positive (W, H), got {image_size!r}")
    sx = size[..., 0].astype(np.float32) / np.float32(w)
    sy = size[..., 1].astype(np.float32) / np.float32(h)
    x = np.floor(c[..., 0].astype(np.float32) * sx)
    y = np.floor(c[..., 1].astype(np.float32) * sy)
    return np.stack([x, y], axis=-1).astype(np.float64)


def _check_soft_params(window, temperature):
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"window must be an integer, got {type(window).__name__}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating,
                                                                     np.integer)):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return int(window), float(temperature)


def _grid_transfer(sf, tf, kp, ss, ts, *, soft, window, temperature, corner=False):
    """Grid-argmax / window soft-argmax transfer.  O(B K h w D).

    Cosines come from :func:`geomatch.cosine_similarity`, the argmax from
    :func:`geomatch.argmax_2d` and the window soft-argmax from
    :func:`geomatch.window_soft_argmax` (all C kernels)."""
    dt = np.float64 if np.float64 in (_float_type("src_feat", sf), _float_type("trg_feat", tf),
                                      _float_type("src_kps", kp)) else np.float32
    if 0 in sf.shape[-3:] or 0 in tf.shape[-3:]:
        raise ValueError("src_feat and trg_feat must not be empty")
    if sf.shape[-1] != tf.shape[-1]:
        raise ValueError(f"src_feat and trg_feat must have the same feature dimension, "
                         f"got {sf.shape[-1]} and {tf.shape[-1]}")
    sf, tf, kp = (np.asarray(a, dtype=dt) for a in (sf, tf, kp))
    for name, a in (("src_feat", sf), ("trg_feat", tf)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
    lead = sf.shape[:-3]
    hs, ws, dim = sf.shape[-3:]
    ht, wt = tf.shape[-3:-1]
    nk = kp.shape[-2]
    batch = int(np.prod(lead, dtype=np.int64))
    sf = sf.reshape(batch, hs, ws, dim)
    tf = tf.reshape(batch, ht * wt, dim)
    kp = kp.reshape(batch, nk, 2)
    ss = ss.reshape(batch, 2)
    ts = ts.reshape(batch, 2)
    _core.transfer_check(kp, ss, ts)  # size policy and keypoint bounds
    x, y = kp[..., 0], kp[..., 1]
    if nk == 0:
        return np.zeros(lead + (0, 2), dtype=dt)
    # source patch of each keypoint: (floor(y h / H), floor(x w / W))
    ii, jj = patch_index(x, y, ss[:, None, 0], ss[:, None, 1], ws, hs)
    q = sf[np.arange(batch)[:, None], ii, jj]                      # (B, K, D)
    sim = cosine_similarity(q, tf)                                 # (B, K, h*w)
    if soft:
        grid = window_soft_argmax(sim, (ht, wt), window=window, temperature=temperature)
    else:
        grid = argmax_2d(sim, (ht, wt))
    if corner:
        out = grid_cell_corner(grid, (ht, wt), ts[:, None, :])
        return out.astype(dt).reshape(lead + (nk, 2))
    out = patch_centers(grid, ts[:, None, 0].astype(np.float64),
                        ts[:, None, 1].astype(np.float64), wt, ht)
    return out.astype(dt).reshape(lead + (nk, 2))

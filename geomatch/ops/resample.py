"""Bilinear resampling between an image and a feature grid, as matrices.

PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` is separable:
output sample ``i`` of ``n_out`` reads the input at the source coordinate
``s = (i + 0.5) * n_in / n_out - 0.5`` (pixel-centre index space), with
``s < 0`` clamped to 0, ``i0 = floor(s)``, ``i1 = min(i0 + 1, n_in - 1)`` and
weights ``1 - (s - i0)`` and ``s - i0``.  :func:`bilinear_matrix` writes those
weights as an ``(n_out, n_in)`` matrix ``R`` so that resampling an
``(H, W, C)`` array is two matrix products, ``R_y @ X`` along the rows and
``R_x`` along the columns (:func:`resample`): BLAS work, no per-pixel Python.

The grid of a feature cache need not cover exactly the image: with GeoAware-SC
padding it covers a larger square (:func:`geomatch.data.cache.grid_frame`).
The ``start``/``length`` arguments place the grid in image pixels; grid cells
whose centre falls outside the image read nothing (zero rows), image pixels
always read the grid (GECO's resize is ``start=0, length=n``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["bilinear_matrix", "image_to_grid_matrix", "grid_to_image_matrix", "resample"]


def _check_n(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _extent(start, length, n_image: int) -> float:
    length = float(n_image if length is None else length)
    if not (length > 0 and np.isfinite(length) and np.isfinite(start)):
        raise ValueError(f"grid extent must be finite and positive, got start={start!r}, "
                         f"length={length!r}")
    return length


def bilinear_matrix(src: np.ndarray, n_in: int, *, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """``(len(src), n_in)`` linear-interpolation weights at source coordinates.

    Parameters
    ----------
    src : array_like (n_out,)
        Source coordinates in pixel-centre index space (0 = centre of the
        first input sample).  PyTorch's clamping rules apply: below 0 reads
        sample 0, beyond ``n_in - 1`` reads the last sample.
    n_in : int
        Number of input samples.
    valid : array_like of bool (n_out,), optional
        Rows set to False are all zero (the output sample reads nothing).
    """
    n_in = _check_n("n_in", n_in)
    s = np.maximum(np.asarray(src, dtype=np.float64).reshape(-1), 0.0)
    if not np.all(np.isfinite(s)):
        raise ValueError("src must be finite")
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    lam = np.where(i0 < n_in - 1, s - i0, 0.0)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = np.zeros((s.shape[0], n_in), dtype=np.float64)
    rows = np.arange(s.shape[0])
    np.add.at(w, (rows, i0), 1.0 - lam)
    np.add.at(w, (rows, i1), lam)
    if valid is not None:
        w[~np.asarray(valid, dtype=bool).reshape(-1)] = 0.0
    return w


def image_to_grid_matrix(n_grid: int, n_image: int, start: float = 0.0,
                         length: Optional[float] = None) -> np.ndarray:
    """``(n_grid, n_image)`` weights that sample an image axis at grid-cell centres.

    The grid spans image coordinates ``[start, start + length]`` (edges, in
    pixels; default the whole axis).  Cell ``i``'s centre sits at image pixel
    index ``start + (i + 0.5) * length / n_grid - 0.5``; cells whose centre
    lies outside the image (``< -0.5`` or ``> n_image - 0.5``, i.e. on
    padding) get a zero row.  With ``start=0, length=n_image`` this is
    exactly PyTorch's bilinear ``align_corners=False`` resize.
    """
    n_grid = _check_n("n_grid", n_grid)
    n_image = _check_n("n_image", n_image)
    length = _extent(start, length, n_image)
    c = float(start) + (np.arange(n_grid) + 0.5) * (length / n_grid) - 0.5
    if start == 0.0 and length == n_image:
        return bilinear_matrix(c, n_image)
    return bilinear_matrix(c, n_image, valid=(c >= -0.5) & (c <= n_image - 0.5))


def grid_to_image_matrix(n_image: int, n_grid: int, start: float = 0.0,
                         length: Optional[float] = None) -> np.ndarray:
    """``(n_image, n_grid)`` weights that upsample a grid axis to image pixels.

    Image pixel ``j``'s centre ``j + 0.5`` lies at grid coordinate
    ``(j + 0.5 - start) * n_grid / length - 0.5``; PyTorch's clamping at both
    ends.  With ``start=0, length=n_image`` this is exactly PyTorch's bilinear
    ``align_corners=False`` resize of the grid to the image size.
    """
    n_image = _check_n("n_image", n_image)
    n_grid = _check_n("n_grid", n_grid)
    length = _extent(start, length, n_image)
    c = (np.arange(n_image) + 0.5 - float(start)) * (n_grid / length) - 0.5
    return bilinear_matrix(c, n_grid)


def resample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ x @ cols.T`` applied to the two leading axes of ``x`` (H, W, ...).

    Parameters
    ----------
    x : ndarray (H, W) or (H, W, C)
    rows : ndarray (H', H)
    cols : ndarray (W', W)

    Returns
    -------
    ndarray (H', W') or (H', W', C) in ``x``'s float dtype (float32 stays
    float32), computed as two BLAS products.
    """
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must have shape (H, W) or (H, W, C), got {x.shape}")
    h, w = x.shape[:2]
    if rows.shape[1] != h or cols.shape[1] != w:
        raise ValueError(f"resampling matrices {rows.shape} and {cols.shape} do not fit "
                         f"an array of shape {x.shape}")
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    c = 1 if x.ndim == 2 else x.shape[2]
    r = rows.astype(dt, copy=False)
    k = cols.astype(dt, copy=False)
    t = r @ np.ascontiguousarray(x, dtype=dt).reshape(h, w * c)          # (H', W*C)
    t = t.reshape(r.shape[0], w, c).transpose(1, 0, 2).reshape(w, -1)    # (W, H'*C)
    t = (k @ t).reshape(k.shape[0], r.shape[0], c).transpose(1, 0, 2)    # (H', W', C)
    t = np.ascontiguousarray(t)
    return t[..., 0] if x.ndim == 2 else t

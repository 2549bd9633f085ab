"""Bilinear resampling between an image and a feature grid (PyTorch's rules).

PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` is separable:
output sample ``i`` of ``n_out`` reads the input at the source coordinate
``s = (i + 0.5) * n_in / n_out - 0.5`` (pixel-centre index space), with
``s < 0`` clamped to 0, ``i0 = floor(s)``, ``i1 = min(i0 + 1, n_in - 1)`` and
weights ``w0 = 1 - (s - i0)``, ``w1 = s - i0``; a 2-D output is
``h0 (w0 x[y0, x0] + w1 x[y0, x1]) + h1 (w0 x[y1, x0] + w1 x[y1, x1])``.
:class:`Taps` holds the two indices and weights of every output sample along
one axis; :func:`sample` evaluates that formula, in that order, for a whole
grid or for chosen output pixels only (gathers, no per-pixel Python), and
:func:`resample_labels` resizes the one-hot masks of a label map without
building them.

The grid of a feature cache need not cover exactly the image: with GeoAware-SC
padding it covers a larger square (:func:`geomatch.geometry.grid_frame`).
``start``/``length`` place the grid in image pixels; grid cells whose centre
lies outside the image read nothing (zero weights), image pixels always read
the grid.  ``start=0, length=n`` is GECO's resize, i.e. PyTorch's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Taps", "bilinear_taps", "image_to_grid", "grid_to_image", "sample",
           "resample_labels"]


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


@dataclass(frozen=True)
class Taps:
    """Linear-interpolation taps along one axis: output ``o`` is
    ``w0[o] * x[i0[o]] + w1[o] * x[i1[o]]`` (both weights 0 where the output
    reads nothing)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    n_in: int

    @property
    def valid(self) -> np.ndarray:
        """bool: outputs that read the input."""
        return (self.w0 != 0) | (self.w1 != 0)

    def matrix(self) -> np.ndarray:
        """The ``(n_out, n_in)`` interpolation matrix."""
        m = np.zeros((self.i0.shape[0], self.n_in))
        rows = np.arange(self.i0.shape[0])
        np.add.at(m, (rows, self.i0), self.w0)
        np.add.at(m, (rows, self.i1), self.w1)
        return m


def bilinear_taps(src, n_in: int, *, valid: Optional[np.ndarray] = None) -> Taps:
    """:class:`Taps` at source coordinates ``src`` (pixel-centre index space).

    PyTorch's clamping: below 0 reads sample 0, beyond ``n_in - 1`` the last
    sample.  Outputs where ``valid`` is False get zero weights.
    """
    n_in = _check_n("n_in", n_in)
    s = np.maximum(np.asarray(src, dtype=np.float64).reshape(-1), 0.0)
    if not np.all(np.isfinite(s)):
        raise ValueError("src must be finite")
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    w1 = np.where(i0 < n_in - 1, s - i0, 0.0)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w0 = 1.0 - w1
    if valid is not None:
        ok = np.asarray(valid, dtype=bool).reshape(-1)
        w0 = np.where(ok, w0, 0.0)
        w1 = np.where(ok, w1, 0.0)
    return Taps(i0, i1, w0, w1, n_in)


def image_to_grid(n_grid: int, n_image: int, start: float = 0.0,
                  length: Optional[float] = None) -> Taps:
    """Taps that sample an image axis at the centres of ``n_grid`` cells.

    The grid spans image coordinates ``[start, start + length]`` (edges, in
    pixels; default the whole axis).  Cell ``i``'s centre lies at image pixel
    index ``start + (i + 0.5) * length / n_grid - 0.5``; a cell whose centre
    lies outside the image (``< -0.5`` or ``> n_image - 0.5``: padding) reads
    nothing.
    """
    n_grid = _check_n("n_grid", n_grid)
    n_image = _check_n("n_image", n_image)
    length = _extent(start, length, n_image)
    c = float(start) + (np.arange(n_grid) + 0.5) * (length / n_grid) - 0.5
    return bilinear_taps(c, n_image, valid=(c >= -0.5) & (c <= n_image - 0.5))


def grid_to_image(n_image: int, n_grid: int, start: float = 0.0,
                  length: Optional[float] = None) -> Taps:
    """Taps that upsample a grid axis to ``n_image`` pixels.

    Pixel ``j``'s centre ``j + 0.5`` lies at grid coordinate
    ``(j + 0.5 - start) * n_grid / length - 0.5``, clamped at both ends.
    """
    n_image = _check_n("n_image", n_image)
    n_grid = _check_n("n_grid", n_grid)
    length = _extent(start, length, n_image)
    c = (np.arange(n_image) + 0.5 - float(start)) * (n_grid / length) - 0.5
    return bilinear_taps(c, n_grid)


def sample(x, ty: Taps, tx: Taps, ys=None, xs=None) -> np.ndarray:
    """Bilinear samples of ``x`` (h, w) or (h, w, C), in PyTorch's order.

    Parameters
    ----------
    x : array_like (h, w[, C])
    ty, tx : Taps
        Along the rows (``ty.n_in == h``) and the columns (``tx.n_in == w``).
    ys, xs : array_like of int (N,), optional
        Output pixels to compute; default the whole ``(len(ty), len(tx))`` grid.

    Returns
    -------
    numpy.ndarray
        float64 (N[, C]) or (H, W[, C]).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[0] != ty.n_in or x.shape[1] != tx.n_in:
        raise ValueError(f"x of shape {x.shape} does not fit taps over {ty.n_in} rows and "
                         f"{tx.n_in} columns")
    if ys is None:
        ys, xs = np.meshgrid(np.arange(ty.i0.shape[0]), np.arange(tx.i0.shape[0]),
                             indexing="ij")
    ys = np.asarray(ys, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    tail = (slice(None),) * (x.ndim - 2)
    pad = (None,) * (x.ndim - 2)
    y0, y1, h0, h1 = ty.i0[ys], ty.i1[ys], ty.w0[ys][(...,) + pad], ty.w1[ys][(...,) + pad]
    x0, x1, w0, w1 = tx.i0[xs], tx.i1[xs], tx.w0[xs][(...,) + pad], tx.w1[xs][(...,) + pad]
    top = w0 * x[(y0, x0) + tail] + w1 * x[(y0, x1) + tail]
    bottom = w0 * x[(y1, x0) + tail] + w1 * x[(y1, x1) + tail]
    return h0 * top + h1 * bottom


def resample_labels(labels, num_classes: int, ty: Taps, tx: Taps) -> np.ndarray:
    """The one-hot masks of classes ``1..num_classes`` of a label map, resampled.

    Equal to ``sample(onehot, ty, tx)`` with ``onehot[..., k] = labels == k + 1``
    (label 0, background, has no mask), computed from the four labels each
    output reads instead of the ``(H, W, num_classes)`` one-hot array.

    Returns
    -------
    numpy.ndarray
        float64 (len(ty), len(tx), num_classes).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape != (ty.n_in, tx.n_in):
        raise ValueError(f"labels of shape {lab.shape} do not fit taps over {ty.n_in} rows "
                         f"and {tx.n_in} columns")
    n = int(num_classes) + 1
    if lab.dtype.kind not in "iu" or (lab.size and (lab.min() < 0 or lab.max() >= n)):
        raise ValueError(f"labels must be integers in [0, {n - 1}]")
    gh, gw = ty.i0.shape[0], tx.i0.shape[0]
    cell = (np.arange(gh)[:, None] * gw + np.arange(gw)[None, :]) * n
    size = gh * gw * n

    def row(iy):                       # w0 * onehot[iy, x0] + w1 * onehot[iy, x1]
        acc = np.bincount((cell + lab[iy[:, None], tx.i0[None, :]]).ravel(),
                          np.broadcast_to(tx.w0[None, :], (gh, gw)).ravel(), size)
        acc += np.bincount((cell + lab[iy[:, None], tx.i1[None, :]]).ravel(),
                           np.broadcast_to(tx.w1[None, :], (gh, gw)).ravel(), size)
        return acc.reshape(gh, gw, n)

    out = ty.w0[:, None, None] * row(ty.i0) + ty.w1[:, None, None] * row(ty.i1)
    return out[..., 1:]

"""Keypoint matching on a patch grid: argmax and window soft-argmax.

Similarity maps are given flat, ``sim[..., k, :]`` holding the ``h * w``
similarities of source point ``k`` with every target patch in row-major
order (the layout :func:`geomatch.cosine_similarity` returns for
``(h * w, D)`` target descriptors).  Coordinates are grid coordinates
``(x, y) = (column, row)``; cell centres sit on integers.
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from .. import _core

__all__ = ["argmax_2d", "window_soft_argmax"]


def _grid_shape(shape) -> tuple[int, int]:
    """Validate ``shape`` = (h, w) of positive ints."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a pair (h, w) of positive integers, got "
                        f"{type(shape).__name__}") from None
    if len(items) != 2:
        raise ValueError(f"shape must be a pair (h, w), got {len(items)} values")
    out = []
    for name, v in zip(("h", "w"), items):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"shape ({name}) must be an integer, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"shape ({name}) must be >= 1, got {v}")
        out.append(int(v))
    return out[0], out[1]


def argmax_2d(sim: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """Grid position of the maximum of each similarity map.

    Parameters
    ----------
    sim : array_like, shape (..., h * w)
        Similarity maps, float32 or float64, flattened row-major over the
        ``h x w`` grid (reshape ``(..., h, w)`` maps with
        ``sim.reshape(*sim.shape[:-2], -1)``).
    shape : (int, int)
        The grid size ``(h, w)``.

    Returns
    -------
    numpy.ndarray of int64, shape (..., 2)
        ``(x, y) = (column, row)`` of the maximum; on ties the first maximum
        in row-major order wins (NumPy's and PyTorch's ``argmax`` rule).

    Raises
    ------
    TypeError
        For a non-float ``sim`` or non-integer ``shape``.
    ValueError
        If ``sim`` is empty, holds NaN/inf, or its last axis is not ``h * w``.
    """
    h, w = _grid_shape(shape)
    return _core.argmax_2d(sim, h, w)


def window_soft_argmax(sim: ArrayLike, shape: tuple[int, int], *, window: int = 7,
                       temperature: float = 0.02) -> np.ndarray:
    """Window soft-argmax of each similarity map (sub-patch keypoint position).

    For each map: take the argmax cell ``(r*, c*)`` (first maximum on ties),
    restrict to the window ``|r - r*| <= window, |c - c*| <= window``
    (clipped at the grid border, so it is smaller near the border and the
    whole grid when ``window`` exceeds it), form
    ``p(r, c) = softmax(sim / temperature)`` over that window and return the
    expected position ``sum p(r, c) * (c, r)``.

    This is the soft evaluation of GeoAware-SC (``get_flow`` with
    ``SOFT_EVAL_WINDOW``, temperature ``beta = 0.02``), whose expected
    coordinates, mapped back from [-1, 1], are exactly column/row indices.
    One deliberate difference: GeoAware-SC multiplies the similarities
    outside the window by 0 and keeps them in the softmax, whereas here they
    are excluded.  The two agree to within ``N * exp(-s_max / temperature)``
    (about 1e-10 patches for ``s_max = 0.6``), but differ when the maximum
    similarity is <= 0.

    Parameters
    ----------
    sim : array_like, shape (..., h * w)
        Similarity maps, float32 or float64, flattened row-major (see
        :func:`argmax_2d`), e.g. rows of :func:`geomatch.cosine_similarity`.
    shape : (int, int)
        The grid size ``(h, w)``.
    window : int, default 7
        Half-size of the window, >= 0 (0 gives the argmax itself).
    temperature : float, default 0.02
        Softmax temperature, finite and > 0.

    Returns
    -------
    numpy.ndarray, shape (..., 2)
        Expected ``(x, y) = (column, row)`` in grid coordinates, in
        ``[0, w - 1] x [0, h - 1]``, with ``sim``'s float type.

    Raises
    ------
    TypeError
        For a non-float ``sim``, non-integer ``window``/``shape`` or a
        non-numeric ``temperature``.
    ValueError
        If ``sim`` is empty, holds NaN/inf, its last axis is not ``h * w``,
        ``window < 0`` or ``temperature <= 0``.

    Notes
    -----
    C kernel, OpenMP over maps; results do not depend on the thread count.
    Cost O(n_maps * (h * w + (2 * window + 1) ** 2)).
    """
    h, w = _grid_shape(shape)
    return _core.window_soft_argmax(sim, h, w, window, temperature)

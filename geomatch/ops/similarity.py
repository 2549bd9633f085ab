"""Cosine similarity of patch descriptors (BLAS-backed C kernel; docs/method.md#similarity)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .. import _core

__all__ = ["cosine_similarity"]


def cosine_similarity(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Cosine similarity of every row of ``x`` with every row of ``y``.

    Parameters
    ----------
    x : array_like, shape (..., N, D)
        Descriptors, float32 or float64 (float16 is promoted to float32).
        Any strides; non-contiguous inputs are copied once.
    y : array_like, shape (..., M, D)
        Descriptors with the same leading (batch) dimensions as ``x`` -- they
        must be identical, there is no broadcasting -- and the same ``D``.

    Returns
    -------
    numpy.ndarray, shape (..., N, M)
        ``S[..., i, j] = <x_i, y_j> / (|x_i| |y_j|)``, float64 if either
        input is float64, else float32.  A row that is all zeros has
        similarity 0 with everything (not NaN).  Values lie in [-1, 1] up to
        rounding (they are not clipped).

    Raises
    ------
    TypeError
        If an input is not a real floating-point array.
    ValueError
        If an input has fewer than 2 dimensions, is empty, holds NaN or
        infinite values, or the batch dimensions or ``D`` differ.

    Notes
    -----
    Rows are L2-normalized into a scratch buffer in C (OpenMP over rows, with
    an overflow-safe norm), then one ``sgemm``/``dgemm`` per batch item
    computes all dot products.  Threads: :func:`geomatch.set_num_threads`
    sets both the OpenMP and the BLAS thread count; the result does not
    depend on it.  Cost O(batch * N * M * D).

    Examples
    --------
    >>> import numpy as np, geomatch as gm
    >>> gm.cosine_similarity(np.eye(2, dtype=np.float32), [[1.0, 1.0]]).round(4)
    array([[0.7071],
           [0.7071]], dtype=float32)
    """
    return _core.cosine_similarity(x, y)

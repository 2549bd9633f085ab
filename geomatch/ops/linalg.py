"""Matrix products on geomatch's own BLAS and OpenMP threads.

The training step alternates BLAS products with geomatch's OpenMP kernels.
Products through NumPy run on NumPy's OpenBLAS, whose worker threads keep
spinning after each call and then compete for the cores with the OpenMP
threads of the next kernel (on 2 cores this doubled the time of the OT layer
inside a step).  :func:`matmul` runs the product with ``_core.gemm``
instead: the rows of the result are split over geomatch's OpenMP threads,
each block one single-threaded BLAS call, so only one thread pool exists.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _core

__all__ = ["matmul"]


def _has_contiguous_rows(x: np.ndarray) -> bool:
    """True when the rows of the 2-D x are contiguous and do not overlap."""
    item = x.itemsize
    return ((x.shape[1] == 1 or x.strides[1] == item)
            and (x.shape[0] == 1
                 or (x.strides[0] % item == 0 and x.strides[0] >= x.shape[1] * item)))


def _operand(x: np.ndarray):
    """(array with contiguous rows, transposed?) describing the matrix x."""
    if _has_contiguous_rows(x):
        return x, False
    if _has_contiguous_rows(x.T):
        return x.T, True
    return np.ascontiguousarray(x), False


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None, *,
           alpha: float = 1.0, accumulate: bool = False) -> np.ndarray:
    """``alpha * a @ b`` for 2-D float arrays of one dtype (``out += ...`` with
    ``accumulate``).

    ``a`` and ``b`` may be transposed views (``x.T``) or views of column
    blocks (``x[:, i:j]``): they are passed to BLAS without copies.  ``out``
    may be a view with contiguous rows.  Results do not depend on the
    thread count.
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul needs 2-D arrays, got {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not chain")
    dtype = a.dtype
    if b.dtype != dtype or dtype not in (np.float32, np.float64):
        raise TypeError(f"matmul needs two float32 or two float64 arrays, got {a.dtype} "
                        f"and {b.dtype}")
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs out")
        out = np.empty((a.shape[0], b.shape[1]), dtype=dtype)
    if a.size == 0 or b.size == 0 or out.size == 0:
        if not accumulate:
            out[...] = 0
        return out
    pa, ta = _operand(a)
    pb, tb = _operand(b)
    _core.gemm(pa, pb, out, ta, tb, float(alpha), 1.0 if accumulate else 0.0)
    return out

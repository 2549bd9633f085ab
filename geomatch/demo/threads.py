"""Thread limits for the demo's small matrices (geomatch's kernels and NumPy's BLAS)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["limit_threads"]


def _numpy_blas_threads():
    """(get, set) of the thread count of NumPy's own OpenBLAS, or None.

    NumPy's wheels bundle a separate OpenBLAS (not the one geomatch's C core
    uses); :func:`geomatch.set_num_threads` does not reach it.
    """
    import ctypes
    import glob

    base = os.path.dirname(np.__file__)
    paths = (glob.glob(os.path.join(base, os.pardir, "numpy.libs", "*openblas*"))
             + glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                       "openblas_{}_num_threads"):
            get, put = suffix.format("get"), suffix.format("set")
            if hasattr(lib, get) and hasattr(lib, put):
                getter, setter = getattr(lib, get), getattr(lib, put)
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                return getter, setter
    return None


class limit_threads:
    """Context manager: run with ``n`` threads in geomatch's kernels and in
    NumPy's BLAS (``None``: leave both alone), restoring the previous counts.

    >>> with limit_threads(1):                     # doctest: +SKIP
    ...     run = train(dataset, cache, "run")
    """

    def __init__(self, n: Optional[int]):
        self.n = n

    def __enter__(self):
        import geomatch as gm

        self.saved = None
        if self.n is None:
            return self
        blas = _numpy_blas_threads()
        self.saved = (gm.get_num_threads(), blas, blas[0]() if blas else None)
        gm.set_num_threads(int(self.n))
        if blas:
            blas[1](int(self.n))
        return self

    def __exit__(self, *exc):
        import geomatch as gm

        if self.saved is not None:
            n_gm, blas, n_blas = self.saved
            gm.set_num_threads(n_gm)
            if blas and n_blas and n_blas > 0:
                blas[1](n_blas)
        return False

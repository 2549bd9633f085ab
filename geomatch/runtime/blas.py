"""Make the BLAS library the extension was linked against loadable.

When geomatch is built against the scipy-openblas32 wheel, the extension
records ``libscipy_openblas.so`` as a dependency but the wheel's folder is not
on the loader's search path.  Loading the library by absolute path first (with
RTLD_GLOBAL) lets the dynamic loader resolve the extension's dependency to the
copy already in memory.
"""
import ctypes
import os

from .._buildinfo import info as _build


def preload() -> None:
    if not _build()["blas"].startswith("scipy-openblas32"):
        return
    try:
        import scipy_openblas32
    except ImportError as exc:  # pragma: no cover - broken installation
        raise ImportError(
            "geomatch was built against the scipy-openblas32 wheel, which is "
            "not installed: pip install scipy-openblas32") from exc
    path = os.path.join(scipy_openblas32.get_lib_dir(),
                        scipy_openblas32.get_library(fullname=True))
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)

"""Build configuration and thread control."""
from __future__ import annotations

import os
import sys

from .. import _buildinfo, _core


def build_info() -> dict:
    """Return the configuration of the compiled core as a dict.

    Keys: ``blas`` (which library the build linked), ``blas_config`` (the
    library's own description, with its version), ``blas_corename``,
    ``blas_threading``, ``openmp``, ``num_threads``, ``num_procs``, ``simd``
    (the highest instruction set the core was compiled for), ``cflags``
    and ``build``.

    Everything comes from the compiled extensions themselves: ``blas``,
    ``cflags`` and whether ``-march=native`` was used are compiled into
    ``geomatch._buildinfo`` (built with the core's flags), ``simd`` is what
    the core's own objects were compiled for.  ``build`` is ``"native"`` or
    ``"portable"`` when both agree, and says ``"inconsistent"`` (with both
    SIMD levels) when the core was compiled with other flags than recorded.
    """
    info = dict(_core.build_info())
    b = _buildinfo.info()
    info["blas"] = b["blas"]
    info["cflags"] = b["cflags"]
    kind = "native" if b["native"] else "portable"
    if b["simd"] == info["simd"]:
        info["build"] = kind
    else:
        info["build"] = (f"inconsistent: recorded {kind} ({b['simd']}) but the core was "
                         f"compiled for {info['simd']}; rebuild geomatch")
    return info


def show_config(file=None) -> None:
    """Print the BLAS library, its threading, OpenMP threads and SIMD level."""
    info = build_info()
    out = file if file is not None else sys.stdout
    lines = [
        "geomatch configuration",
        f"  BLAS library   : {info['blas']}",
        f"  BLAS build     : {info['blas_config'].strip()}",
        f"  BLAS kernel    : {info['blas_corename']}",
        f"  BLAS threading : {info['blas_threading']}",
        f"  OpenMP         : {'yes' if info['openmp'] else 'no'}"
        f" (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')},"
        f" GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')})",
        f"  threads        : {info['num_threads']} (of {info['num_procs']} processors)",
        f"  SIMD level     : {info['simd']}",
        f"  float32 GEMM   : {_sgemm_line()}",
        f"  build          : {info['build']}",
        f"  compiler flags : {info['cflags']}",
    ]
    print("\n".join(lines), file=out)


def set_num_threads(n: int) -> None:
    """Set the number of threads used by every kernel and by BLAS.

    The setting is process-wide: kernels called from any Python thread use
    it (not only the calling thread, as OpenMP's own setting would).  In a
    child made by ``fork`` (multiprocessing's fork start method, DataLoader
    workers) it is reset to 1, because OpenMP's threads do not survive a fork
    (docs/limits.md, "Threads and fork").

    Parameters
    ----------
    n : int
        Number of threads, 1 to 4096.  The default is the number of
        processors, or ``OMP_NUM_THREADS`` when set.  Results are identical
        for every thread count.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n`` is outside 1..4096.
    """
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Return the number of threads kernels use."""
    return _core.get_num_threads()


_SGEMM_MODES = ("auto", "avx512", "blas")


def _sgemm_line() -> str:
    mode, uses, supported = _core.get_sgemm()
    kernel = "geomatch AVX-512F kernel" if uses else "BLAS sgemm"
    cpu = "AVX-512" if supported else "no AVX-512"
    return f"{kernel} (GEOMATCH_SGEMM={_SGEMM_MODES[mode]}; CPU: {cpu})"


def set_sgemm(mode: str) -> None:
    """Choose the float32 matrix product of the core (GEOMATCH_SGEMM).

    Every float32 GEMM of geomatch (the backbone's linear layers, the
    attention head's products, cosine similarity, ``geomatch.ops.matmul``)
    runs either geomatch's own AVX-512F kernel (``csrc/gm_sgemm_avx512.c``)
    or the BLAS library's ``sgemm``.  float64 always uses BLAS.

    Parameters
    ----------
    mode : str
        ``"auto"`` (the default): the AVX-512 kernel when the CPU and the OS
        support AVX-512 (F, BW, VL, DQ: every AVX-512 CPU since Skylake-SP),
        else BLAS.  ``"avx512"``: the kernel (ValueError on a CPU without).
        ``"blas"``: BLAS ``sgemm`` (which follows OpenBLAS's own
        ``OPENBLAS_CORETYPE``).  The environment variable
        ``GEOMATCH_SGEMM`` sets the same value when geomatch is imported.
        Both paths give results identical for every thread count; they
        differ from each other in the last bits (another summation order).

    Raises
    ------
    ValueError
        For another value, or ``"avx512"`` on a CPU without AVX-512.
    """
    if not isinstance(mode, str) or mode.strip().lower() not in _SGEMM_MODES:
        raise ValueError(f"sgemm mode (GEOMATCH_SGEMM) must be one of "
                         f"{', '.join(_SGEMM_MODES)}; got {mode!r}")
    _core.set_sgemm(_SGEMM_MODES.index(mode.strip().lower()))


def get_sgemm() -> str:
    """Return the float32 GEMM in use: ``"avx512"`` (geomatch's kernel) or
    ``"blas"``; see :func:`set_sgemm` for the mode that chose it."""
    return "avx512" if _core.get_sgemm()[1] else "blas"


def _sgemm_from_environment() -> None:
    """Apply GEOMATCH_SGEMM at import.  A value that cannot apply (a typo, or
    ``avx512`` on a CPU without AVX-512) must not make ``import geomatch``
    fail: it is reported in one RuntimeWarning naming the variable, and the
    default (``auto``) stays in effect."""
    value = os.environ.get("GEOMATCH_SGEMM")
    if value is None or value.strip() == "":
        return
    try:
        set_sgemm(value)
    except ValueError as exc:
        import warnings
        warnings.warn(f"GEOMATCH_SGEMM={value!r} ignored ({exc}); using 'auto'",
                      RuntimeWarning, stacklevel=2)


_sgemm_from_environment()

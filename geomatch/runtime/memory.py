"""Keep freed memory in the process for reuse during training (glibc only).

A training step allocates and frees the same large arrays every time (the
N x M similarity, plan and gradients: 7.5 MB each at 37 x 37 tokens).  With
glibc's default, dynamic thresholds the heap top is handed back to the kernel
after the step and the next step faults it in again: about 3,000 page faults
and 25 ms of system time per step on the 2-core benchmark machine
(``benchmarks/bench_train.py`` prints both counts).  :func:`retain_freed_memory`
fixes the thresholds so that blocks up to 64 MiB come from the heap and up to
256 MiB of free heap is kept; :func:`geomatch.model.train.train` calls it.  The cost
is a resident size that stays at the step's peak.  Elsewhere (another C
library, or the user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``)
it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 64 << 20
_TRIM_THRESHOLD = 256 << 20
_done = None


def retain_freed_memory() -> bool:
    """Set glibc's malloc thresholds for training (idempotent).

    Returns True when the thresholds are in effect (set now or before), False
    when this is not glibc or the user's environment already chose them.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc after all
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
          and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)
    _done = bool(ok)
    return _done

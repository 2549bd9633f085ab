"""geomatch: geometry-aware semantic correspondences with a fast C core.

Implements GECO (Hartwig et al., ICCV 2025): an attention head trained on
frozen DINOv2 features with a KL-regularized optimal-transport loss with a
dustbin, plus the SPair-71k / PF-Pascal / AP-10K / CUB evaluation protocols.
"""
import os as _os

# What ``from geomatch import *`` binds (the names bound below; gm.Matcher and
# gm.Matches load on first use and are not among them).
__all__ = [
    "argmax_2d", "backbone", "build_info", "cosine_similarity", "data", "datasets",
    "dustbin_marginals", "dustbin_sinkhorn", "dustbin_sinkhorn_vjp", "eval", "geometry",
    "get_num_threads", "get_sgemm", "head", "metrics", "model", "ops", "runtime", "set_num_threads",
    "set_sgemm", "show_config", "sinkhorn", "transfer_keypoints", "window_soft_argmax",
]

# How OpenMP threads wait at a barrier decides whether the kernels are fast on
# an idle machine and whether they survive a busy one.  Measured on 2 cores
# (dustbin layer, 1370x1370, 10 iterations): spinning forever
# (OMP_WAIT_POLICY=ACTIVE) 2.0 ms idle but 124 ms next to two busy processes;
# sleeping at once (PASSIVE) 3.6-4.5 ms idle, 3.7 ms loaded; a short spin
# (GOMP_SPINCOUNT=10000, then sleep) 2.0 ms idle, 6 ms loaded.  libgomp reads
# these when the extension loads it; a user's own setting of either wins.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from .runtime.blas import preload as _preload  # noqa: E402

_preload()
del _preload

# (importing runtime.config loads the C extension, after the BLAS preload above)
from .runtime.config import (build_info, get_num_threads, get_sgemm, set_num_threads,  # noqa: E402
                             set_sgemm, show_config)

from . import _version  # noqa: E402

__version__ = _version.__version__

from .ops.similarity import cosine_similarity  # noqa: E402

from .ops.dustbin import dustbin_marginals, dustbin_sinkhorn, dustbin_sinkhorn_vjp  # noqa: E402,F401
from .ops.ot import sinkhorn  # noqa: E402

from .ops.matching import argmax_2d, window_soft_argmax  # noqa: E402

from .ops.transfer import transfer_keypoints  # noqa: E402

from . import geometry  # noqa: E402,F401
from . import data  # noqa: E402,F401
from . import backbone  # noqa: E402,F401
from .eval import metrics  # noqa: E402
from .model import head  # noqa: E402,F401

# The public submodules under the names they had before the packages were
# grouped by stage (``gm.datasets``, ``import geomatch.eval.metrics``, ...).
datasets = data
import sys as _sys  # noqa: E402

for _old, _new in {"datasets": data, "metrics": metrics, "head": head}.items():
    _sys.modules[f"{__name__}.{_old}"] = _new
del _sys, _old, _new


def __getattr__(name):
    # gm.Matcher loads on first use (Pillow and the viewer are not needed by
    # ``import geomatch``)
    if name in ("Matcher", "Matches"):
        from . import match as _match

        value = getattr(_match, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

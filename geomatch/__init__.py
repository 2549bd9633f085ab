"""geomatch: geometry-aware semantic correspondences with a fast C core.

Implements GECO (Hartwig et al., ICCV 2025): an attention head trained on
frozen DINOv2 features with a KL-regularized optimal-transport loss with a
dustbin, plus the SPair-71k / PF-Pascal / AP-10K / CUB evaluation protocols.
"""
from ._blas import preload as _preload

_preload()
del _preload

from . import _core  # noqa: E402
from .config import build_info, get_num_threads, set_num_threads, show_config  # noqa: E402

__version__ = "0.1.0"

# @@section similarity
# @@end similarity

# @@section ot
from .ot import sinkhorn  # noqa: E402
# @@end ot

# @@section matching
# @@end matching

# @@section transfer
# @@end transfer

# @@section submodules
# @@end submodules

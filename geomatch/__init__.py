"""geomatch: geometry-aware semantic correspondences with a fast C core.

Implements GECO (Hartwig et al., ICCV 2025): an attention head trained on
frozen DINOv2 features with a KL-regularized optimal-transport loss with a
dustbin, plus the SPair-71k / PF-Pascal / AP-10K / CUB evaluation protocols.
"""
import os as _os

# OpenMP threads that spin while they wait at a barrier make every kernel many
# times slower as soon as the cores are shared with other work (measured on 2
# cores at load 3: dustbin forward 124 ms spinning, 9 ms passive).  libgomp
# reads this when the extension loads it; set OMP_WAIT_POLICY=ACTIVE before
# importing geomatch to keep spinning on a dedicated machine.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._blas import preload as _preload  # noqa: E402

_preload()
del _preload

from . import _core  # noqa: E402
from .config import build_info, get_num_threads, set_num_threads, show_config  # noqa: E402

__version__ = "0.1.0"

# @@section similarity
from .similarity import cosine_similarity  # noqa: E402
# @@end similarity

# @@section ot
from .dustbin import dustbin_marginals, dustbin_sinkhorn, dustbin_sinkhorn_vjp  # noqa: E402,F401
from .ot import sinkhorn  # noqa: E402
# @@end ot

# @@section matching
from .matching import argmax_2d, window_soft_argmax  # noqa: E402
# @@end matching

# @@section transfer
from .transfer import transfer_keypoints  # noqa: E402
# @@end transfer

# @@section submodules
from . import datasets  # noqa: E402,F401
from . import metrics  # noqa: E402
from . import head  # noqa: E402,F401
from . import backbone  # noqa: E402,F401
# @@end submodules

"""The C-backed kernels: similarity, optimal transport, matching, keypoint transfer.

Each module validates nothing the C core already checks; it normalises
options, dispatches on dtype and maps the core's status codes to exceptions.
"""
from .dustbin import dustbin_marginals, dustbin_sinkhorn, dustbin_sinkhorn_vjp
from .matching import argmax_2d, window_soft_argmax
from .ot import sinkhorn
from .similarity import cosine_similarity
from .transfer import transfer_keypoints

__all__ = ["cosine_similarity", "sinkhorn", "dustbin_marginals", "dustbin_sinkhorn",
           "dustbin_sinkhorn_vjp", "argmax_2d", "window_soft_argmax", "transfer_keypoints"]

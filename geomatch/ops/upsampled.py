"""The full-resolution cosine map of the upsample-argmax rule, in NumPy.

:func:`geomatch.transfer_keypoints` (``mode="upsample-argmax"``) returns only
the best pixel.  :func:`upsampled_similarity` returns the whole map it ranks:
the cosine between the source descriptor of one point and every pixel of the
target's feature map upsampled to the target size, under the same rule (see
:mod:`geomatch.ops.transfer`): PyTorch's bilinear ``align_corners=False``
taps (``s = (dst + 0.5) * n_in / n_out - 0.5``, negative ``s`` clamped to 0,
the upper tap clamped to the last grid index), the source descriptor read at
pixel ``(floor(y), floor(x))``, a target descriptor whose squared norm is
below the smallest normal float32 (about 1.2e-38) counted as zero (cosine 0).

No upsampled map is built: the numerator is the bilinear combination of the
grid dot products and the squared norm of an interpolated target vector
needs only the Gram products of neighbouring grid vectors (as the C kernel
does), so memory is O(H W + h W) and the cost O(h w D + H W).  Computed in
float64.
"""
from __future__ import annotations

import numpy as np

from .resample import bilinear_taps

__all__ = ["linear_taps", "source_descriptor", "upsampled_similarity"]

_TINY32 = float(np.finfo(np.float32).tiny)


def linear_taps(n_in: int, n_out: int):
    """Bilinear taps of every output sample: (i0, i1, w1) arrays of length n_out.

    PyTorch's ``align_corners=False`` rule; the source coordinate is the exact
    rational ``((2 dst + 1) n_in - n_out) / (2 n_out)`` evaluated in float64
    (the C kernel's), and the taps at it are
    :func:`geomatch.ops.resample.bilinear_taps`'s (clamping included).
    """
    dst = np.arange(n_out, dtype=np.float64)
    if n_in == n_out:
        s = dst.copy()
    else:
        s = ((2 * dst + 1) * n_in - n_out) / (2.0 * n_out)
    taps = bilinear_taps(s, n_in)
    return taps.i0, taps.i1, taps.w1


def source_descriptor(src_feat: np.ndarray, point, src_size) -> np.ndarray:
    """The (D,) upsampled source descriptor at pixel (floor(y), floor(x)), float64.

    ``point`` is (x, y) in a source image of ``src_size`` (W, H) pixels.
    """
    sf = np.asarray(src_feat, dtype=np.float64)
    hs, ws = sf.shape[:2]
    W, H = (int(v) for v in src_size)
    x, y = (float(v) for v in point)
    r0, r1, wy = (a[int(np.floor(y))] for a in linear_taps(hs, H))
    c0, c1, wx = (a[int(np.floor(x))] for a in linear_taps(ws, W))
    return ((1 - wy) * (1 - wx) * sf[r0, c0] + (1 - wy) * wx * sf[r0, c1]
            + wy * (1 - wx) * sf[r1, c0] + wy * wx * sf[r1, c1])


def upsampled_similarity(src_feat: np.ndarray, trg_feat: np.ndarray, point, src_size,
                         trg_size) -> np.ndarray:
    """Cosine similarity of one source point with every target pixel, (H, W) float64.

    Parameters
    ----------
    src_feat, trg_feat : ndarray (h, w, D)
        Channel-last feature maps (grid sizes may differ).
    point : (x, y)
        Source pixel, ``0 <= x < W_src``, ``0 <= y < H_src``.
    src_size, trg_size : (W, H)
        Image sizes the maps are upsampled to.

    Returns
    -------
    ndarray (H_trg, W_trg)
        The map whose first (row-major) maximum is the upsample-argmax
        prediction, up to float rounding.
    """
    q = source_descriptor(src_feat, point, src_size)
    nq = np.sqrt(q @ q)
    if nq > 0:
        q = q / nq
    t = np.asarray(trg_feat, dtype=np.float64)
    h, w, _ = t.shape
    W, H = (int(v) for v in trg_size)
    cn = np.minimum(np.arange(w) + 1, w - 1)       # right neighbour (itself at the border)
    rn = np.minimum(np.arange(h) + 1, h - 1)       # lower neighbour
    N = np.einsum("rcd,rcd->rc", t, t)
    Hn = np.einsum("rcd,rcd->rc", t, t[:, cn])
    V = np.einsum("rcd,rcd->rc", t, t[rn])
    D1 = np.einsum("rcd,rcd->rc", t, t[rn][:, cn])
    D2 = np.einsum("rcd,rcd->rc", t[:, cn], t[rn])
    g = t @ q                                       # (h, w) grid dot products
    c0, c1, b1 = linear_taps(w, W)
    b0 = 1 - b1
    # row-interpolated (along x) squared norms, cross terms with the next grid
    # row, and numerators: (h, W)
    nrow = b0 * b0 * N[:, c0] + 2 * b0 * b1 * Hn[:, c0] + b1 * b1 * N[:, c1]
    mx = b0 * b0 * V[:, c0] + b1 * b1 * V[:, c1] + b0 * b1 * (D1[:, c0] + D2[:, c0])
    p = b0 * g[:, c0] + b1 * g[:, c1]
    r0, r1, a1 = linear_taps(h, H)
    a0 = (1 - a1)[:, None]
    a1 = a1[:, None]
    d = a0 * a0 * nrow[r0] + a1 * a1 * nrow[r1] + 2 * a0 * a1 * mx[r0]
    num = a0 * p[r0] + a1 * p[r1]
    ok = d >= _TINY32
    return np.where(ok, num / np.sqrt(np.where(ok, d, 1.0)), 0.0)

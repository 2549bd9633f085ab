"""GECO's training loss on the dustbin OT plan of a pair (docs/method.md#loss).

For one pair with head embeddings e_s (h_s, w_s, E) and e_t (h_t, w_t, E):

1. S = cosine similarities of the L2-normalized patch embeddings, N x M
   (N = h_s w_s, M = h_t w_t, row-major patch order r * w + c);
2. marginals mu (N+1), nu (M+1): foreground patches share
   m0 = mass * (n_visible + 1) / (n_kp + 1) uniformly, background patches share
   1 - mass, the dustbin gets the rest (``gm.dustbin_marginals``);
3. P = gm.dustbin_sinkhorn(S, mu, nu, bin_score, reg, reg_m, n_iter), (N+1) x (M+1);
4. L = w_pos/(N+1) * mean_{M+} -log P + w_bin/(N+1) * mean_{M0} -log P
       + w_neg * mean_{M-} -log(1 - P) + w_fgbg * mean_{fg x bg} -log(1 - P)

with the match sets of :func:`match_sets`.  A term with no entries contributes 0.
The gradient wrt the embeddings goes through ``gm.dustbin_sinkhorn_vjp`` (the
OT layer's C backward) and the cosine normalization.

Correspondence with GECO (reginehartwig/geco, ``src/losses/__init__.py``,
``src/dataset/pairwise_utils.py``, ``src/matcher/ot_matcher.py``), and where
this module differs:

* the entry sets, their de-duplication (GECO's ``unique``), the 1/(N+1) factor
  on pos and bin, the weights (1, 1, 10, 10), the masses, and skipping a pair
  whose source or target foreground is empty all follow GECO;
* GECO concatenates the entries of all pairs of a batch and averages each term
  over the batch; geomatch defines the loss per pair (docs/method.md#loss: each
  term is averaged over its entries), so here each pair's terms are averaged over that pair's
  entries and the training loop (:mod:`geomatch.model.train`) averages the pair
  losses and gradients over the batch -- pairs with many entries weigh no
  more than others;
* M- pairs (k in the source, flip(k) in the target) for every k with a
  counterpart, both visible; GECO builds the same set from its
  ``kps_symm_only`` tables (keypoints without a counterpart zeroed) and
  de-duplicates it;
* GECO's keypoints are stored (y, x) and scaled by the feature size / image
  size; the patch of (x, y) here is (floor(y h / H), floor(x w / W)) as in
  docs/method.md#coordinates, clamped to the grid (a keypoint exactly on the right/bottom
  border would otherwise fall outside);
* GECO removes zero-norm features from the OT problem (``ft_remove_bkg``);
  head embeddings are never exactly zero, so that step is omitted;
* the marginals are ``gm.dustbin_marginals`` (GECO's rule, including a dustbin
  mass of exactly 0 when every keypoint is visible and there is background);
* log P and log(1 - P) are evaluated with P clipped to [tiny, 1 - eps] so a
  plan entry that underflows to 0 gives a large finite loss, not inf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Dict, Optional, Tuple

import numpy as np

from .. import _core
from ..geometry import foreground_grid, keypoint_patches  # re-exported (patches, foreground)
from ..ops.dustbin import dustbin_marginals, dustbin_sinkhorn, dustbin_sinkhorn_vjp
from ..ops.linalg import matmul

__all__ = ["LossConfig", "keypoint_patches", "foreground_grid", "dustbin_marginal",
           "match_sets", "pair_loss", "PairLoss"]


@dataclass(frozen=True)
class LossConfig:
    """Constants of the OT layer and of the loss (GECO's defaults)."""

    bin_score: float = 0.3
    reg: float = 0.1
    reg_m: float = 10.0
    n_iter: int = 10
    mass: float = 0.9
    w_pos: float = 1.0
    w_bin: float = 1.0
    w_neg: float = 10.0
    w_fgbg: float = 10.0

    def __post_init__(self):
        if not (self.reg > 0 and math.isfinite(self.reg)):
            raise ValueError(f"loss config: reg must be positive, got {self.reg!r}")
        if not (self.reg_m > 0):
            raise ValueError(f"loss config: reg_m must be positive, got {self.reg_m!r}")
        if not (0 < self.mass < 1):
            raise ValueError(f"loss config: mass must lie in (0, 1), got {self.mass!r}")
        if int(self.n_iter) < 1:
            raise ValueError(f"loss config: n_iter must be at least 1, got {self.n_iter!r}")
        for k in ("w_pos", "w_bin", "w_neg", "w_fgbg"):
            if not getattr(self, k) >= 0:
                raise ValueError(f"loss config: {k} must be non-negative")

    def to_dict(self) -> dict:
        return asdict(self)


def dustbin_marginal(fg, n_visible: int, n_kp: int, mass: float = 0.9) -> np.ndarray:
    """Kept for compatibility: ``gm.dustbin_marginals(fg, n_visible, n_kp,
    fg_mass=mass, dtype=np.float64)`` (:func:`geomatch.ops.dustbin.dustbin_marginals`,
    docs/method.md#marginals)."""
    return dustbin_marginals(fg, int(n_visible), int(n_kp), fg_mass=mass, dtype=np.float64)


def match_sets(src_patch, trg_patch, flip_perm, N: int, M: int) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Index sets into the (N+1) x (M+1) plan (dustbin = index N / M), de-duplicated.

    Parameters
    ----------
    src_patch, trg_patch : (K,) flat patch of each keypoint, -1 if not visible.
    flip_perm : (K,) left/right counterpart of each keypoint (itself if none).

    Returns
    -------
    dict with "pos" (M+), "bin" (M0) and "neg" (M-), each (rows, cols).
    """
    sp = np.asarray(src_patch, dtype=np.int64)
    tp = np.asarray(trg_patch, dtype=np.int64)
    perm = np.asarray(flip_perm, dtype=np.int64)
    K = sp.shape[0]
    if tp.shape != (K,) or perm.shape != (K,):
        raise ValueError(f"keypoint arrays disagree: src {sp.shape}, trg {tp.shape}, "
                         f"flip_perm {perm.shape}")
    if K and (perm.min() < 0 or perm.max() >= K):
        raise ValueError("flip_perm must be a permutation of range(K)")
    sv, tv = sp >= 0, tp >= 0
    both = sv & tv
    pos = (sp[both], tp[both])
    only_s = sv & ~tv
    only_t = tv & ~sv
    bins = (np.concatenate([sp[only_s], np.full(int(only_t.sum()), N, np.int64)]),
            np.concatenate([np.full(int(only_s.sum()), M, np.int64), tp[only_t]]))
    # (k in source, flip(k) in target) for every k with a counterpart; this also
    # yields (flip(k), k) when the loop reaches flip(k).
    has = (perm != np.arange(K)) & sv & tv[perm]
    neg = (sp[has], tp[perm[has]])

    def uniq(rc):
        r, c = rc
        if r.size == 0:
            return r, c
        flat = np.unique(r * (M + 1) + c)
        return flat // (M + 1), flat % (M + 1)

    return {"pos": uniq(pos), "bin": uniq(bins), "neg": uniq(neg)}


# ---------------------------------------------------------------------------
# OT layer access

def _ot_impl():
    """(forward, vjp) of the dustbin OT layer, looked up at each call so that
    tests and ``benchmarks/bench_train.py`` can substitute an oracle or a timer."""
    return dustbin_sinkhorn, dustbin_sinkhorn_vjp


def _l2n(e):
    n = np.sqrt(np.einsum("ij,ij->i", e, e))
    n = np.maximum(n, np.finfo(e.dtype).tiny ** 0.5)
    return e / n[:, None], n


class PairLoss:
    """The loss of one pair and its gradient wrt both embeddings."""

    def __init__(self, config: Optional[LossConfig] = None):
        self.config = config if config is not None else LossConfig()

    def __call__(self, emb_src, emb_trg, *, src_patch, trg_patch, flip_perm, src_fg, trg_fg,
                 n_vis_src: int, n_vis_trg: int, n_kp: int, need_grad: bool = True):
        """Loss value, gradients and per-term values.

        Parameters
        ----------
        emb_src : (h_s, w_s, E), emb_trg : (h_t, w_t, E) head embeddings.
        src_patch, trg_patch : (K,) from :func:`keypoint_patches`.
        flip_perm : (K,) left/right permutation.
        src_fg, trg_fg : (h, w) bool foreground grids.
        n_vis_src, n_vis_trg : visible keypoints of each image; n_kp : keypoints
            of the category.

        Returns
        -------
        (loss, grad_src, grad_trg, info): ``loss`` float; gradients with the
        embeddings' shapes (None without ``need_grad``); ``info`` holds the
        unweighted term values, entry counts, and ``skipped`` (True when a
        foreground is empty, as GECO skips such pairs: loss 0, zero gradients).
        """
        cfg = self.config
        es = np.asarray(emb_src)
        et = np.asarray(emb_trg)
        if es.ndim != 3 or et.ndim != 3 or es.shape[-1] != et.shape[-1]:
            raise ValueError(f"embeddings must be (h, w, E) with the same E, got "
                             f"{es.shape} and {et.shape}")
        dtype = np.result_type(es.dtype, et.dtype, np.float32)
        hs, ws, E = es.shape
        ht, wt, _ = et.shape
        N, M = hs * ws, ht * wt
        sfg = np.asarray(src_fg, dtype=bool).reshape(-1)
        tfg = np.asarray(trg_fg, dtype=bool).reshape(-1)
        if sfg.size != N or tfg.size != M:
            raise ValueError(f"foreground grids {np.shape(src_fg)}, {np.shape(trg_fg)} do not "
                             f"match the embeddings {es.shape[:2]}, {et.shape[:2]}")
        info = {"skipped": False}
        if not sfg.any() or not tfg.any():
            info["skipped"] = True
            z = (np.zeros_like(es, dtype=dtype), np.zeros_like(et, dtype=dtype))
            return 0.0, (z[0] if need_grad else None), (z[1] if need_grad else None), info
        xs, ns = _l2n(es.reshape(N, E).astype(dtype, copy=False))
        xt, nt = _l2n(et.reshape(M, E).astype(dtype, copy=False))
        S = matmul(xs, xt.T)  # geomatch's threads (see geomatch.ops.linalg)
        mu = dustbin_marginals(sfg, int(n_vis_src), int(n_kp), fg_mass=cfg.mass, dtype=dtype)
        nu = dustbin_marginals(tfg, int(n_vis_trg), int(n_kp), fg_mass=cfg.mass, dtype=dtype)
        fwd, vjp = _ot_impl()
        kw = dict(bin_score=cfg.bin_score, reg=cfg.reg, reg_m=cfg.reg_m, n_iter=int(cfg.n_iter))
        P = fwd(S, mu, nu, **kw)
        sets = match_sets(src_patch, trg_patch, flip_perm, N, M)
        tiny = 1e-30
        hi = 1.0 - (1e-12 if dtype == np.float64 else 1e-7)
        # foreground x background negatives (dustbin row/column excluded): one
        # C pass gives their sum of -log(1 - P) and, with need_grad, a fresh
        # gradient array (zero outside those entries) the sparse terms add to
        n1 = int(sfg.sum()) * int((~tfg).sum())
        n2 = int((~sfg).sum()) * int(tfg.sum())
        nfb = n1 + n2
        info["n_fgbg"] = nfb
        fb_sum, gP = _core.loss_fgbg(P, sfg, tfg, tiny, hi,
                                     cfg.w_fgbg / nfb if nfb else 0.0, need_grad)
        loss = 0.0
        scale_pn = 1.0 / (N + 1)
        for name, w, positive in (("pos", cfg.w_pos * scale_pn, True),
                                  ("bin", cfg.w_bin * scale_pn, True),
                                  ("neg", cfg.w_neg, False)):
            r, c = sets[name]
            info["n_" + name] = int(r.size)
            if r.size == 0:
                info[name] = 0.0
                continue
            p = np.clip(P[r, c].astype(np.float64), tiny, hi)
            if positive:
                term = float(np.mean(-np.log(p)))
                g = -1.0 / p
            else:
                term = float(np.mean(-np.log1p(-p)))
                g = 1.0 / (1.0 - p)
            info[name] = term
            loss += w * term
            if need_grad:
                np.add.at(gP, (r, c), (w / r.size * g).astype(P.dtype))
        if nfb:
            term = fb_sum / nfb
            info["fgbg"] = term
            loss += cfg.w_fgbg * term
        else:
            info["fgbg"] = 0.0
        info["loss"] = loss
        if not need_grad:
            return loss, None, None, info
        gS = vjp(S, mu, nu, gP, **kw)
        if isinstance(gS, tuple):
            gS = gS[0]
        gS = np.asarray(gS, dtype=dtype)
        # S = xs xt^T with x = e / |e|:  dx_s = gS xt, dx_t = gS^T xs,
        # de = (dx - x (x . dx)) / |e|
        dxs = matmul(gS, xt)
        dxt = matmul(gS.T, xs)
        dxs -= xs * np.einsum("ij,ij->i", xs, dxs)[:, None]
        dxs /= ns[:, None]
        dxt -= xt * np.einsum("ij,ij->i", xt, dxt)[:, None]
        dxt /= nt[:, None]
        return loss, dxs.reshape(es.shape), dxt.reshape(et.shape), info


def pair_loss(emb_src, emb_trg, *, src_kps, src_visible, trg_kps, trg_visible, src_size,
              trg_size, flip_perm, src_fg, trg_fg, n_kp: Optional[int] = None,
              config: Optional[LossConfig] = None, need_grad: bool = True):
    """GECO loss of one pair from keypoints in pixels (see :class:`PairLoss`).

    Parameters
    ----------
    emb_src, emb_trg : (h, w, E) head embeddings of source and target.
    src_kps, trg_kps : (K, 2) (x, y) pixels; src_visible, trg_visible : (K,) bool.
    src_size, trg_size : (W, H) of the images.
    flip_perm : (K,) left/right permutation of the keypoints.
    src_fg, trg_fg : (h, w) bool foreground on the feature grids
        (:func:`foreground_grid`).
    n_kp : keypoints of the category (default K).

    Returns
    -------
    (loss, grad_src, grad_trg, info) as :meth:`PairLoss.__call__`.
    """
    es, et = np.asarray(emb_src), np.asarray(emb_trg)
    sv = np.asarray(src_visible, dtype=bool)
    tv = np.asarray(trg_visible, dtype=bool)
    sp = keypoint_patches(src_kps, sv, src_size, es.shape[:2])
    tp = keypoint_patches(trg_kps, tv, trg_size, et.shape[:2])
    K = sp.shape[0]
    return PairLoss(config)(es, et, src_patch=sp, trg_patch=tp, flip_perm=flip_perm,
                            src_fg=src_fg, trg_fg=trg_fg, n_vis_src=int(sv.sum()),
                            n_vis_trg=int(tv.sum()), n_kp=K if n_kp is None else int(n_kp),
                            need_grad=need_grad)

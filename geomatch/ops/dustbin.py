"""The dustbin optimal-transport layer of GECO (forward and backward).

See docs/method.md#dustbin-layer.  For scores ``S``
(N x M) the augmented matrix ``S~`` ((N+1) x (M+1)) holds ``bin_score`` in its
extra row, column and corner.  With ``lam = 1/reg`` and
``phi = reg_m / (reg_m + reg)``, potentials start at zero and each of the
``n_iter`` iterations updates rows first, then columns::

    u_i = (phi/lam) * (log mu_i - LSE_j(lam S~_ij + lam v_j))
    v_j = (phi/lam) * (log nu_j - LSE_i(lam S~_ij + lam u_i))

and the plan is ``P_ij = exp(lam (S~_ij + u_i + v_j))``.

The C core evaluates this recursion in the kernel domain (one matrix-vector
product per half-iteration with ``exp(lam (S~ - c))`` computed once) when
that is numerically safe, and with literal log-sum-exp sweeps otherwise; both
give the same result to working precision.

Performance (``python benchmarks/bench_dustbin.py``; 2 cores of an AMD EPYC
Zen 5, 2026-12-01; docs/performance.md has the roofline): at N = M = 1369
(37 x 37 patches), 10 iterations, float32, the forward takes about 1.0 ms on
2 threads (about 27 passes over the matrix at this machine's read rate) and
2.1 ms on one; the VJP about 2.2 ms on 2 threads.  The kernels synchronize
threads a few times per iteration, so the OpenMP wait policy matters:
geomatch's default (GOMP_SPINCOUNT=10000) suits idle cores;
``OMP_WAIT_POLICY=PASSIVE`` is safer when many more threads than cores are
runnable.
"""
from __future__ import annotations

from typing import Literal, Tuple, Union

import numpy as np

from .. import _core

__all__ = ["dustbin_sinkhorn", "dustbin_sinkhorn_vjp", "dustbin_marginals"]

_METHODS = {"auto": 0, "kernel": 1, "log": 2}


def _method_code(method: str) -> int:
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of 'auto', 'kernel', 'log', got {method!r}")
    return _METHODS[method]


def dustbin_sinkhorn(S, mu, nu, *, bin_score: float = 0.3, reg: float = 0.1,
                     reg_m: float = 10.0, n_iter: int = 10,
                     method: Literal["auto", "kernel", "log"] = "auto") -> np.ndarray:
    """Transport plan of GECO's KL-regularized OT layer with a dustbin.

    Parameters
    ----------
    S : array_like, shape (..., N, M)
        Scores (cosine similarities), float32 or float64; leading dimensions
        are a batch.  Any strides.
    mu : array_like, shape (..., N+1) or (N+1,)
        Source marginal, the dustbin mass last (see :func:`dustbin_marginals`).
        Non-negative, not all zero; a zero entry gives a zero plan row.
    nu : array_like, shape (..., M+1) or (M+1,)
        Target marginal, the dustbin mass last.
    bin_score : float
        Score of the extra row, column and corner (default 0.3).
    reg : float
        Entropic regularization (> 0); ``lam = 1/reg``.
    reg_m : float
        Weight of the KL marginal penalty (>= 0; ``inf`` gives the balanced
        updates, ``phi = 1``).
    n_iter : int
        Number of row-then-column iterations (>= 1).
    method : {"auto", "kernel", "log"}
        Evaluation strategy; "auto" uses the kernel domain when
        ``(max S~ - min S~) / (2 reg)`` is at most 30 (float32) / 300
        (float64), else log-sum-exp sweeps.  "kernel" raises ValueError when
        unsafe.  All give the same plan to working precision.

    Returns
    -------
    numpy.ndarray, shape (..., N+1, M+1)
        The plan, float32 unless an input is float64.

    Raises
    ------
    TypeError
        Non-float arrays (integers, complex, bool) or non-numeric scalars.
    ValueError
        Bad shapes, NaN/inf, negative or all-zero marginals, ``reg <= 0``,
        ``reg_m < 0``, ``n_iter < 1``, empty arrays.
    """
    P, _ = _core.dustbin_sinkhorn(S, mu, nu, bin_score, reg, reg_m, n_iter,
                                  _method_code(method))
    return P


def _dustbin_sinkhorn_path(S, mu, nu, *, bin_score=0.3, reg=0.1, reg_m=10.0, n_iter=10,
                           method="auto") -> Tuple[np.ndarray, str]:
    """Like :func:`dustbin_sinkhorn`, also naming the path used ("kernel"/"log")."""
    P, used = _core.dustbin_sinkhorn(S, mu, nu, bin_score, reg, reg_m, n_iter,
                                     _method_code(method))
    return P, ("kernel" if used == 1 else "log")


def dustbin_sinkhorn_vjp(S, mu, nu, grad_P, *, bin_score: float = 0.3, reg: float = 0.1,
                         reg_m: float = 10.0, n_iter: int = 10,
                         wrt: Literal["plan", "log_plan"] = "plan",
                         return_bin_grad: bool = False,
                         method: Literal["auto", "kernel", "log"] = "auto",
                         ) -> Union[np.ndarray, Tuple[np.ndarray, Union[float, np.ndarray]]]:
    """Vector-Jacobian product of :func:`dustbin_sinkhorn` with respect to ``S``.

    Reverse mode through the ``n_iter`` iterations (the forward is recomputed
    in C and its per-iteration state kept for the backward).

    Parameters
    ----------
    S, mu, nu, bin_score, reg, reg_m, n_iter, method
        As for :func:`dustbin_sinkhorn`.
    grad_P : array_like, shape (..., N+1, M+1)
        Upstream gradient: dL/dP (``wrt="plan"``) or dL/d(log P)
        (``wrt="log_plan"``, e.g. for losses written on ``log P``).
    wrt : {"plan", "log_plan"}
        What ``grad_P`` is the gradient with respect to.
    return_bin_grad : bool
        Also return dL/d(bin_score): a float, or an array of the batch shape.

    Returns
    -------
    numpy.ndarray, shape (..., N, M)
        dL/dS (the bin row/column are not part of S); with
        ``return_bin_grad``, the tuple ``(dL/dS, dL/dbin_score)``.
    """
    if wrt not in ("plan", "log_plan"):
        raise ValueError(f"wrt must be 'plan' or 'log_plan', got {wrt!r}")
    dS, dbin, _ = _core.dustbin_sinkhorn_vjp(S, mu, nu, grad_P, bin_score, reg, reg_m,
                                             n_iter, _method_code(method),
                                             wrt == "log_plan")
    if not return_bin_grad:
        return dS
    return dS, (float(dbin) if dbin.ndim == 0 else dbin)


def dustbin_marginals(fg_mask, n_visible: int, n_kp: int, *, fg_mass: float = 0.9,
                      dtype=np.float32) -> np.ndarray:
    """Marginal of one image for the dustbin layer (GECO's rule).

    Foreground patches share ``m0 = fg_mass * (n_visible + 1) / (n_kp + 1)``
    uniformly, background patches share ``1 - fg_mass`` (0.1) uniformly (only
    when there is background), and the dustbin, the last entry, gets the
    rest, so the marginal sums to 1.  This matches GECO's
    ``get_partial_distributions_input_marginals`` with the masses of its
    ``PairwiseLoss``.  When every keypoint is visible and there is
    background, the dustbin mass is exactly 0 (its plan row/column is zero).

    Parameters
    ----------
    fg_mask : array_like of bool, any shape (e.g. (h, w))
        Foreground patches (segmentation mask, else bounding box), flattened
        in C order; needs at least one foreground patch.
    n_visible : int
        Keypoints visible in this image (0 <= n_visible <= n_kp).
    n_kp : int
        Keypoints of the category (>= 1).
    fg_mass : float
        Total foreground mass when all keypoints are visible (default 0.9).
    dtype : numpy dtype
        Output dtype, float32 (default) or float64; any other dtype raises
        TypeError (masses below 1 cannot be stored in integers).

    Returns
    -------
    numpy.ndarray, shape (fg_mask.size + 1,)
        See docs/method.md#marginals.
    """
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if out_dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {out_dtype}")
    mask = np.asarray(fg_mask)
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()):
            raise TypeError("fg_mask must be a boolean array (or 0/1 integers), got "
                            f"dtype {mask.dtype}")
        mask = mask.astype(bool)
    mask = mask.reshape(-1)
    if mask.size == 0:
        raise ValueError("fg_mask must not be empty")
    for name, v in (("n_visible", n_visible), ("n_kp", n_kp)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if n_kp < 1:
        raise ValueError(f"n_kp must be >= 1, got {n_kp}")
    if not 0 <= n_visible <= n_kp:
        raise ValueError(f"n_visible must be between 0 and n_kp={n_kp}, got {n_visible}")
    if isinstance(fg_mass, bool) or not isinstance(fg_mass, (int, float, np.floating)) \
            or not 0.0 < float(fg_mass) <= 1.0:
        raise ValueError(f"fg_mass must be a number in (0, 1], got {fg_mass!r}")
    n_fg = int(mask.sum())
    if n_fg == 0:
        raise ValueError("fg_mask has no foreground patch")
    n_bg = mask.size - n_fg
    m0 = float(fg_mass) * (n_visible + 1) / (n_kp + 1)
    bg = (1.0 - float(fg_mass)) if n_bg > 0 else 0.0
    out = np.empty(mask.size + 1, dtype=np.float64)
    out[:-1] = np.where(mask, m0 / n_fg, bg / max(n_bg, 1))
    out[-1] = max(0.0, 1.0 - m0 - bg)
    return out.astype(out_dtype)

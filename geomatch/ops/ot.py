"""Entropic optimal transport (balanced, unbalanced, semi-relaxed Sinkhorn;
docs/method.md#optimal-transport)."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence, Union

import numpy as np

from .. import _core

__all__ = ["sinkhorn"]

RegM = Union[None, float, Sequence[float]]


def _reg_m_pair(reg_m: RegM) -> tuple[float, float]:
    """(a side, b side) marginal weights; None means balanced (inf, inf)."""
    if reg_m is None:
        return math.inf, math.inf
    if isinstance(reg_m, (numbers.Real, np.floating, np.integer)) and not isinstance(
            reg_m, bool):
        return float(reg_m), float(reg_m)
    if isinstance(reg_m, (str, bytes)) or not hasattr(reg_m, "__len__"):
        raise TypeError("reg_m must be None, a real number or a pair of real "
                        f"numbers (a side, b side), got {type(reg_m).__name__}")
    if len(reg_m) != 2:
        raise ValueError(f"reg_m must be a pair (a side, b side), got {len(reg_m)} values")
    out = []
    for k, v in enumerate(reg_m):
        if v is None:
            v = math.inf
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating,
                                                      np.integer)):
            raise TypeError(f"reg_m[{k}] must be a real number, got {type(v).__name__}")
        out.append(float(v))
    return out[0], out[1]


#: Default stopping tolerance (max column-marginal change, mass units) by the
#: working dtype: 1e-9 is below float32's resolution of a unit mass (its
#: marginals stall near 1e-7 and the solver would run to max_iter), so
#: float32 stops at 1e-6, about ten float32 ulps of a mass of 1.
DEFAULT_TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-9}


def _working_dtype(*arrays) -> np.dtype:
    """float64 if any input is float64, else float32 (the kernel's rule)."""
    f64 = any(getattr(x, "dtype", None) == np.float64
              or (not hasattr(x, "dtype") and np.asarray(x).dtype == np.float64)
              for x in arrays)
    return np.dtype(np.float64 if f64 else np.float32)


def sinkhorn(C, a, b, reg: float, *, reg_m: RegM = None, max_iter: int = 1000,
             tol: Union[float, None] = None, return_potentials: bool = False):
    r"""Entropic optimal transport plan by (log-stabilized) Sinkhorn iterations.

    Solves

    .. math::
        \min_{P \ge 0} \langle C, P\rangle + \mathrm{reg}\sum_{ij} P_{ij}(\log P_{ij} - 1)
        + \rho_a \mathrm{KL}(P\mathbf 1 \,|\, a) + \rho_b \mathrm{KL}(P^\top\mathbf 1 \,|\, b)

    with the entropy taken against the counting measure (kernel
    ``exp(-C / reg)``; POT's ``reg_type="entropy"``) and generalized KL
    divergences.  ``reg_m=None`` (or ``inf``) makes both marginals hard
    constraints: balanced OT, the problem of POT's ``ot.sinkhorn``.  A finite
    ``reg_m`` is POT's ``ot.unbalanced.sinkhorn_unbalanced(...,
    reg_type="entropy")``; ``reg_m=(rho_a, rho_b)`` weighs the sides
    separately, and ``inf`` on one side gives semi-relaxed OT; ``0`` ignores
    that marginal.

    Iterations update the rows first, then the columns, from zero
    potentials.  The solver picks its own arithmetic: iterations on a
    precomputed kernel (scaling domain, absorbed into the potentials when
    the scalings grow) where that is safe, log-domain (log-sum-exp) sweeps
    otherwise, so very small ``reg`` (down to about 1e-4 times the cost
    range in float32, 1e-6 in float64) gives a finite plan.  Results do not
    depend on the thread count.

    Parameters
    ----------
    C : array_like, shape (..., N, M)
        Cost matrices (finite).  Leading dimensions are a batch of
        independent problems.  float32 is the working type; float64 (on any
        of C, a, b) computes in float64.  Any strides are accepted.
    a : array_like, shape (..., N)
        Source masses, non-negative, not all zero.
    b : array_like, shape (..., M)
        Target masses, non-negative, not all zero.  For balanced OT
        ``sum(a)`` must equal ``sum(b)`` (relative tolerance 1e-5 in float32,
        1e-6 in float64); POT does not check this, geomatch raises
        ``ValueError`` showing both sums (normalize the masses, or use a
        finite ``reg_m``).
    reg : float
        Entropic regularization, > 0 (same units as C).
    reg_m : None, float or (float, float), optional
        Marginal KL weights ``(rho_a, rho_b)``, each >= 0 or ``inf``.  A single
        number applies to both sides.  None: balanced.
    max_iter : int, optional
        Maximum number of iterations (each one row and one column update), >= 1.
    tol : float, optional
        Stop when, in one iteration, the column update changes the column
        marginal ``P.sum(-2)`` by less than ``tol`` (max norm, mass units).
        For balanced OT this is ``max_j |P.sum(-2)_j - b_j|`` of the plan
        after the row update (POT measures the same violation in the 2-norm,
        every 10 iterations).  ``tol=0`` runs ``max_iter`` iterations.
        None (default): 1e-6 when the working dtype is float32, 1e-9 in
        float64 (``DEFAULT_TOL``), tolerances each dtype can reach.
    return_potentials : bool, optional
        Also return the dual potentials and the iteration counts.

    Returns
    -------
    P : ndarray, shape (..., N, M)
        The transport plan (float32, or float64 if any input is float64).
        Its column marginals are those of the last column update.
    f : ndarray, shape (..., N)
        Only with ``return_potentials``: the row potential in cost units,
        POT's ``reg * log_u`` convention: ``P = exp((f[..., :, None] +
        g[..., None, :] - C) / reg)``.  ``-inf`` where a mass is zero (with a
        positive marginal weight).  For balanced OT, (f + c, g - c) is an
        equally valid pair; this is the one the iterations produce.
    g : ndarray, shape (..., M)
        Only with ``return_potentials``: the column potential, as f.
    n_iter : int or ndarray of int, shape (...)
        Only with ``return_potentials``: iterations done per problem.

    Raises
    ------
    TypeError
        Non-float (integer, bool, complex, object) arrays or non-numeric
        scalars; the message names the argument.
    ValueError
        Mismatched shapes or dimensions, empty arrays, NaN/inf entries,
        negative or all-zero masses, ``reg <= 0``, ``reg_m < 0``,
        ``max_iter < 1``, ``tol < 0``, unequal total masses in the balanced
        case; the message names the argument.

    Warns
    -----
    RuntimeWarning
        When some problem did not reach ``tol`` within ``max_iter`` iterations.

    Examples
    --------
    >>> import numpy as np, geomatch as gm
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    >>> a = b = np.array([0.5, 0.5], dtype=np.float32)
    >>> P = gm.sinkhorn(C, a, b, 0.1)
    >>> bool(np.allclose(P.sum(1), a, atol=1e-6))
    True
    """
    rma, rmb = _reg_m_pair(reg_m)
    if isinstance(return_potentials, (bool, np.bool_)) is False:
        raise TypeError("return_potentials must be a bool, got "
                        f"{type(return_potentials).__name__}")
    if tol is None:
        tol = DEFAULT_TOL[_working_dtype(C, a, b)]
    P, f, g, n_iter, err = _core.sinkhorn(C, a, b, reg, rma, rmb, max_iter, tol)
    if tol > 0 and np.any(~(err < tol)):
        warnings.warn(f"sinkhorn did not converge to tol={tol:g} in max_iter="
                      f"{max_iter} iterations (largest final marginal change "
                      f"{float(np.max(err)):.3g}); increase max_iter or reg",
                      RuntimeWarning, stacklevel=2)
    if not return_potentials:
        return P
    n_iter = int(n_iter) if n_iter.ndim == 0 else n_iter.astype(np.int64)
    return P, f, g, n_iter

"""Plain-NumPy references of geomatch's kernels, written from docs/method.md.

Everything here computes in float64 with loops or direct array expressions
and imports nothing from geomatch: tests compare the C kernels against these
functions, and benchmarks time them as the "literal" implementation.  Slow by
design; keep problems small in tests.

Contents: :func:`central_differences` (numerical gradients); :func:`lse`; the dustbin layer (:func:`dustbin_augment`,
:func:`dustbin_plan`, :func:`dustbin_vjp`, docs/method.md#dustbin-layer);
entropic OT (:func:`sinkhorn`, docs/method.md#optimal-transport); cosine
similarity (:func:`cosine_similarity`, docs/method.md#similarity); grid
argmax and window soft-argmax (:func:`argmax_2d`, :func:`window_soft_argmax`);
bilinear upsampling with ``align_corners=False`` (:func:`resize_taps`,
:func:`resize_matrix`, :func:`upsample_bilinear`) and grid keypoint transfer
(:func:`grid_transfer`, docs/method.md#keypoint-transfer); the head's layers
(:func:`layer_norm`, :func:`gelu_tanh`, :func:`attention`,
docs/method.md#attention-head).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["central_differences", "lse", "dustbin_augment", "dustbin_plan", "dustbin_vjp", "sinkhorn",
           "cosine_similarity", "argmax_2d", "window_soft_argmax", "resize_taps",
           "resize_matrix", "upsample_bilinear", "grid_transfer", "layer_norm", "gelu_tanh",
           "attention"]


def central_differences(f, x, eps=1e-6, indices=None) -> np.ndarray:
    """Numerical derivative of the scalar ``f()`` with respect to each entry of ``x``.

    ``(f() at x + eps e_i  -  f() at x - eps e_i) / (2 eps)``, float64 of the
    shape of ``x``: ``x`` (an array that ``f`` reads) is perturbed in place one
    entry at a time and restored.  ``indices`` limits the entries (others stay 0).
    """
    out = np.zeros(np.shape(x), dtype=np.float64)
    for idx in (np.ndindex(np.shape(x)) if indices is None else indices):
        old = x[idx]
        x[idx] = old + eps
        fp = f()
        x[idx] = old - eps
        fm = f()
        x[idx] = old
        out[idx] = (fp - fm) / (2 * eps)
    return out


def lse(x, axis):
    """log(sum(exp(x), axis)), shifted by the maximum; ``axis`` is removed."""
    x = np.asarray(x)
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# ---------------------------------------------------------------------------
# the dustbin layer

def dustbin_augment(S, bin_score) -> np.ndarray:
    """(N+1, M+1) float64: ``S`` with ``bin_score`` in the extra row, column and corner."""
    S = np.asarray(S, np.float64)
    N, M = S.shape
    Z = np.full((N + 1, M + 1), float(bin_score))
    Z[:N, :M] = S
    return Z


def dustbin_plan(S, mu, nu, *, bin_score=0.3, reg=0.1, reg_m=10.0, n_iter=10,
                 history=False):
    """The dustbin plan by the log-domain recursion, float64.

    With ``lam = 1/reg``, ``phi = reg_m / (reg_m + reg)`` (1 for an infinite
    ``reg_m``) and ``Z = lam * S~``, potentials ``U = lam u``, ``V = lam v``
    start at 0 and each iteration sets
    ``U = phi (log mu - LSE_j(Z + V))``, then ``V = phi (log nu - LSE_i(Z + U))``;
    the plan is ``exp(Z + U + V)``.

    Returns
    -------
    P, or with ``history`` the tuple (P, Z, Us, Vs, phi, lam) with the
    potentials of every iteration (what :func:`dustbin_vjp` needs).
    """
    lam = 1.0 / reg
    phi = 1.0 if math.isinf(reg_m) else reg_m / (reg_m + reg)
    Z = lam * dustbin_augment(S, bin_score)
    with np.errstate(divide="ignore"):  # a zero dustbin mass gives log 0 = -inf
        a = np.log(np.asarray(mu, np.float64))
        b = np.log(np.asarray(nu, np.float64))
    U = np.zeros(Z.shape[0])
    V = np.zeros(Z.shape[1])
    Us, Vs = [], []
    for _ in range(n_iter):
        U = phi * (a - lse(Z + V[None, :], 1)) if phi else np.zeros_like(U)
        Us.append(U)
        V = phi * (b - lse(Z + U[:, None], 0)) if phi else np.zeros_like(V)
        Vs.append(V)
    P = np.exp(Z + U[:, None] + V[None, :])
    if history:
        return P, Z, Us, Vs, phi, lam
    return P


def dustbin_vjp(S, mu, nu, grad_P, *, bin_score=0.3, reg=0.1, reg_m=10.0, n_iter=10):
    """dL/dS for dL/dP = ``grad_P``: reverse mode through the unrolled
    iterations of :func:`dustbin_plan`, float64, (N, M)."""
    P, Z, Us, Vs, phi, lam = dustbin_plan(S, mu, nu, bin_score=bin_score, reg=reg,
                                          reg_m=reg_m, n_iter=n_iter, history=True)
    W = np.asarray(grad_P, np.float64) * P
    gZ = W.copy()
    gU = W.sum(1)
    gV = W.sum(0)
    for t in reversed(range(n_iter)):
        # V_t = phi (b - LSE_i(Z + U_t)): column softmax Q
        A = Z + Us[t][:, None]
        Q = np.exp(A - lse(A, 0)[None, :])
        gZ -= phi * Q * gV[None, :]
        gU = gU - phi * (Q * gV[None, :]).sum(1)
        # U_t = phi (a - LSE_j(Z + V_{t-1})): row softmax R
        Vprev = Vs[t - 1] if t > 0 else np.zeros_like(gV)
        B = Z + Vprev[None, :]
        R = np.exp(B - lse(B, 1)[:, None])
        gZ -= phi * R * gU[:, None]
        gV = -phi * (R * gU[:, None]).sum(0)
        gU = np.zeros_like(gU)
    N, M = np.shape(S)
    return lam * gZ[:N, :M]


# ---------------------------------------------------------------------------
# entropic OT

def sinkhorn(C, a, b, reg, reg_m=(math.inf, math.inf), n_iter=50):
    """Log-domain Sinkhorn in float64 (batched over leading dimensions).

    ``n_iter`` updates of ``f`` (rows) then ``g`` (columns) from zero
    potentials, each scaled by ``reg_m / (reg_m + reg)`` on its side (1 for an
    infinite ``reg_m``: the balanced constraint).

    Returns
    -------
    (P, f, g) : plan ``exp((f + g - C) / reg)`` and the potentials.
    """
    C, a, b = (np.asarray(x, np.float64) for x in (C, a, b))
    pa, pb = (1.0 if math.isinf(r) else r / (r + reg) for r in reg_m)
    f = np.zeros(C.shape[:-1])
    g = np.zeros(b.shape)
    for _ in range(n_iter):
        f = pa * (reg * np.log(a) - reg * lse((g[..., None, :] - C) / reg, -1))
        g = pb * (reg * np.log(b) - reg * lse((f[..., :, None] - C) / reg, -2))
    P = np.exp((f[..., :, None] + g[..., None, :] - C) / reg)
    return P, f, g


# ---------------------------------------------------------------------------
# similarity and grid matching

def cosine_similarity(x, y) -> np.ndarray:
    """Loop-based cosine similarity (..., N, D) x (..., M, D) -> (..., N, M),
    float64; a zero row gives 0."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    batch = x.shape[:-2]
    xs = x.reshape(-1, *x.shape[-2:])
    ys = y.reshape(-1, *y.shape[-2:])
    out = np.zeros((xs.shape[0], xs.shape[1], ys.shape[1]))
    for b in range(xs.shape[0]):
        for i in range(xs.shape[1]):
            for j in range(ys.shape[1]):
                u, v = xs[b, i], ys[b, j]
                nu, nv = np.sqrt(np.sum(u * u)), np.sqrt(np.sum(v * v))
                if nu > 0 and nv > 0:
                    out[b, i, j] = np.sum(u * v) / (nu * nv)
    return out.reshape(*batch, xs.shape[1], ys.shape[1])


def argmax_2d(sim, shape) -> np.ndarray:
    """First maximum (x = column, y = row) of each (..., h*w) map, by an
    explicit scan over rows then columns."""
    h, w = shape
    maps = np.asarray(sim, dtype=np.float64).reshape(-1, h, w)
    out = np.zeros((maps.shape[0], 2), dtype=np.int64)
    for k, m in enumerate(maps):
        best, at = -np.inf, (0, 0)
        for r in range(h):
            for c in range(w):
                if m[r, c] > best:
                    best, at = m[r, c], (c, r)
        out[k] = at
    return out.reshape(*np.shape(sim)[:-1], 2)


def window_soft_argmax(sim, shape, window, temperature) -> np.ndarray:
    """Softmax of ``sim / temperature`` over the (2 window + 1)^2 window around
    the argmax (clipped at the border); expected (x, y) grid position."""
    h, w = shape
    maps = np.asarray(sim, dtype=np.float64).reshape(-1, h, w)
    amax = argmax_2d(maps.reshape(-1, h * w), shape)
    out = np.zeros((maps.shape[0], 2))
    for k, m in enumerate(maps):
        c0, r0 = amax[k]
        num_x = num_y = den = 0.0
        for r in range(h):
            for c in range(w):
                if abs(r - r0) <= window and abs(c - c0) <= window:
                    p = np.exp((m[r, c] - m[r0, c0]) / temperature)
                    num_x += p * c
                    num_y += p * r
                    den += p
        out[k] = (num_x / den, num_y / den)
    return out.reshape(*np.shape(sim)[:-1], 2)


# ---------------------------------------------------------------------------
# upsampling and keypoint transfer

def resize_taps(n_in, n_out):
    """Per output sample: (lower index, upper index, lower weight, upper weight).

    PyTorch's linear rule with align_corners=False: real source index
    (dst + 0.5) * n_in / n_out - 0.5, negative values clamped to zero; lower
    index floor of it (at most n_in - 1); the upper index is the next sample
    unless the lower one is the last; weight of the upper tap = fractional
    part clamped to [0, 1]."""
    taps = []
    for dst in range(n_out):
        real = (dst + 0.5) * (n_in / n_out) - 0.5
        if real < 0:
            real = 0.0
        lo = min(int(math.floor(real)), n_in - 1)
        hi = lo + 1 if lo < n_in - 1 else lo
        lam = min(max(real - lo, 0.0), 1.0)
        taps.append((lo, hi, 1.0 - lam, lam))
    return taps


def resize_matrix(n_in, n_out) -> np.ndarray:
    """(n_out, n_in) float64 matrix of the :func:`resize_taps` rule (a separable
    bilinear resize is ``Ry @ F @ Rx.T`` per channel)."""
    m = np.zeros((n_out, n_in))
    for d, (lo, hi, w_lo, w_hi) in enumerate(resize_taps(n_in, n_out)):
        m[d, lo] += w_lo
        m[d, hi] += w_hi
    return m


def upsample_bilinear(feat, out_w, out_h) -> np.ndarray:
    """(h, w, D) -> (out_h, out_w, D) bilinear, pixel by pixel, in float64."""
    feat = np.asarray(feat, dtype=np.float64)
    h, w, d = feat.shape
    ty, tx = resize_taps(h, out_h), resize_taps(w, out_w)
    out = np.zeros((out_h, out_w, d))
    for yy, (y0, y1, wy0, wy1) in enumerate(ty):
        for xx, (x0, x1, wx0, wx1) in enumerate(tx):
            out[yy, xx] = (wy0 * wx0 * feat[y0, x0] + wy0 * wx1 * feat[y0, x1]
                           + wy1 * wx0 * feat[y1, x0] + wy1 * wx1 * feat[y1, x1])
    return out


def grid_transfer(sf, tf, kps, ss, ts, *, soft=False, window=7, temperature=0.02):
    """Grid-argmax (or window soft-argmax) keypoint transfer of one pair, float64.

    The source descriptor is the grid vector of the keypoint's patch
    ``(floor(y h / H), floor(x w / W))`` (clamped); the best target patch (or
    the soft-argmax position) ``(i, j)`` maps to the pixel
    ``((j + 0.5) W / w - 0.5, (i + 0.5) H / h - 0.5)`` clipped to the image.
    """
    sf = np.asarray(sf, np.float64)
    tf = np.asarray(tf, np.float64)
    hs, ws, _ = sf.shape
    ht, wt, _ = tf.shape
    out = []
    for x, y in np.asarray(kps, np.float64):
        i, j = min(int(y * hs // ss[1]), hs - 1), min(int(x * ws // ss[0]), ws - 1)
        q = sf[i, j]
        sim = np.zeros((ht, wt))
        for r in range(ht):
            for c in range(wt):
                t = tf[r, c]
                den = np.linalg.norm(q) * np.linalg.norm(t)
                sim[r, c] = q @ t / den if den > 0 else 0.0
        br, bc = np.unravel_index(np.argmax(sim), sim.shape)
        gr, gc = float(br), float(bc)
        if soft:
            num_r = num_c = tot = 0.0
            for r in range(max(br - window, 0), min(br + window, ht - 1) + 1):
                for c in range(max(bc - window, 0), min(bc + window, wt - 1) + 1):
                    e = math.exp((sim[r, c] - sim[br, bc]) / temperature)
                    num_r += e * r
                    num_c += e * c
                    tot += e
            gr, gc = num_r / tot, num_c / tot
        px = min(max((gc + 0.5) * ts[0] / wt - 0.5, 0.0), ts[0] - 1)
        py = min(max((gr + 0.5) * ts[1] / ht - 0.5, 0.0), ts[1] - 1)
        out.append((px, py))
    return np.array(out).reshape(-1, 2)


# ---------------------------------------------------------------------------
# the attention head's layers

def layer_norm(x, gamma, beta, eps):
    """LayerNorm over the last axis, float64: (x - mean) / sqrt(var + eps) * gamma + beta
    (biased variance)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def gelu_tanh(u):
    """GELU, tanh form: 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))), float64."""
    u = np.asarray(u, dtype=np.float64)
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def attention(qkv, heads):
    """Multi-head self-attention of (B, n, 3 d_a) packed [q | k | v] (each
    split into ``heads`` slices of d_a / heads): softmax(q k^T / sqrt(d_h)) v
    per head, concatenated, float64 (B, n, d_a)."""
    qkv = np.asarray(qkv, dtype=np.float64)
    B, n, c = qkv.shape
    da = c // 3
    hd = da // heads
    out = np.zeros((B, n, da))
    for b in range(B):
        for h in range(heads):
            q = qkv[b, :, h * hd:(h + 1) * hd]
            k = qkv[b, :, da + h * hd:da + (h + 1) * hd]
            v = qkv[b, :, 2 * da + h * hd:2 * da + (h + 1) * hd]
            s = q @ k.T / math.sqrt(hd)
            a = np.exp(s - s.max(axis=1, keepdims=True))
            a /= a.sum(axis=1, keepdims=True)
            out[b, :, h * hd:(h + 1) * hd] = a @ v
    return out

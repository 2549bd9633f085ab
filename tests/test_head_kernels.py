"""The C kernels behind the attention head and the loss, each against a plain
NumPy reference (geomatch.testing.reference, or written here): matrix products
on geomatch's threads, the attention forward/backward that keeps its
exponentials, LayerNorm, tanh-GELU and the foreground x background loss term."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geomatch as gm
from geomatch import _core
from geomatch.ops.linalg import matmul
from geomatch.testing import reference
from geomatch.testing.reference import central_differences

DTYPES = [(np.float32, 2e-5), (np.float64, 1e-12)]


@pytest.fixture
def restore_threads():
    n = gm.get_num_threads()
    yield
    gm.set_num_threads(n)


# --------------------------------------------------------------------------
# NumPy references

ref_attention = reference.attention    # softmax(q k^T / sqrt(hd)) v per head
ref_gelu = reference.gelu_tanh


def ref_layernorm(x, gamma, beta, eps):
    return reference.layer_norm(x, gamma, beta, eps)


def ref_fgbg(P, sfg, tfg, lo, hi, weight):
    P = np.asarray(P, dtype=np.float64)
    n, m = P.shape[0] - 1, P.shape[1] - 1
    mask = sfg[:, None] != tfg[None, :]
    p = np.clip(P[:n, :m], lo, hi)
    total = float(-np.log1p(-p[mask]).sum())
    grad = np.zeros_like(P)
    grad[:n, :m][mask] = weight / (1.0 - p[mask])
    return total, grad


# --------------------------------------------------------------------------
# matmul (gemm)

def _views(rng, m, k, dtype):
    """The matrix a (m x k) as a contiguous array, a transposed view, a view
    of a column block of a wider array, and a row-strided view."""
    base = rng.normal(size=(m, k)).astype(dtype)
    wide = np.zeros((m, k + 5), dtype=dtype)
    wide[:, 2:2 + k] = base
    rows = np.zeros((2 * m, k), dtype=dtype)
    rows[::2] = base
    return {"contiguous": base, "transposed": np.ascontiguousarray(base.T).T,
            "column block": wide[:, 2:2 + k], "every other row": rows[::2]}


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (130, 90, 100), (40, 300, 80)])
def test_matmul_matches_numpy_for_every_layout(dtype, tol, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    A = _views(rng, m, k, dtype)
    Bv = _views(rng, k, n, dtype)
    ref = A["contiguous"].astype(np.float64) @ Bv["contiguous"].astype(np.float64)
    scale = np.abs(ref).max() + 1
    for na, a in A.items():
        for nb, b in Bv.items():
            got = matmul(a, b)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale * k,
                                       err_msg=f"{na} x {nb}")


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_matmul_alpha_accumulate_and_strided_out(dtype, tol):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(70, 33)).astype(dtype)
    b = rng.normal(size=(33, 50)).astype(dtype)
    big = rng.normal(size=(70, 60)).astype(dtype)
    before = big.copy()
    out = big[:, 4:54]
    matmul(a, b, out=out, alpha=0.5, accumulate=True)
    ref = before[:, 4:54] + 0.5 * (a.astype(np.float64) @ b)
    np.testing.assert_allclose(big[:, 4:54], ref, rtol=0, atol=tol * 100)
    # the columns outside the view are untouched
    np.testing.assert_array_equal(big[:, :4], before[:, :4])
    np.testing.assert_array_equal(big[:, 54:], before[:, 54:])
    # a NaN in an uninitialized out never leaks in without accumulate
    junk = np.full((70, 50), np.nan, dtype=dtype)
    np.testing.assert_allclose(matmul(a, b, out=junk), a.astype(np.float64) @ b,
                               rtol=0, atol=tol * 100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_threads_identical(dtype, restore_threads):
    rng = np.random.default_rng(2)
    # (130, 100, 90) and (60, 100, 200) sit just above the split threshold,
    # where OpenBLAS's small-matrix kernels would change the sums if the
    # blocks followed the thread count
    for shape in [(300, 120, 90), (30, 120, 400), (130, 100, 90), (60, 100, 200),
                  (2738, 768, 256)]:
        m, k, n = shape
        a = rng.uniform(-1, 1, size=(m, k)).astype(dtype)
        b = rng.uniform(-1, 1, size=(k, n)).astype(dtype)
        bt = np.ascontiguousarray(b.T).T          # the same matrix, transposed layout
        for bb in (b, bt):
            gm.set_num_threads(1)
            one = matmul(a, bb)
            gm.set_num_threads(2)
            two = matmul(a, bb)
            np.testing.assert_array_equal(one, two, err_msg=f"{shape}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backbone_linear_threads_identical(dtype, restore_threads):
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, size=(130, 100)).astype(dtype)
    w = rng.uniform(-1, 1, size=(90, 100)).astype(dtype)
    out = []
    for t in (1, 2):
        gm.set_num_threads(t)
        out.append(_core.nn_linear(x, w))
    np.testing.assert_array_equal(out[0], out[1])


def test_matmul_and_gemm_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="chain"):
        matmul(a, np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="float32 or two float64"):
        matmul(a, np.ones((4, 2), np.float64))
    with pytest.raises(ValueError, match="2-D"):
        matmul(a, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="accumulate"):
        matmul(a, np.ones((4, 2), np.float32), accumulate=True)
    c = np.empty((3, 2), np.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        _core.gemm(a, np.ones((5, 2), np.float32), c, False, False, 1.0, 0.0)
    with pytest.raises(TypeError, match="b must have dtype float32"):
        _core.gemm(a, np.ones((4, 2)), c, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="c must be writable"):
        ro = np.empty((3, 2), np.float32)
        ro.flags.writeable = False
        _core.gemm(a, np.ones((4, 2), np.float32), ro, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="a must have contiguous rows"):
        _core.gemm(np.ones((3, 8), np.float32)[:, ::2], np.ones((4, 2), np.float32), c,
                   False, False, 1.0, 0.0)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40),
       ta=st.booleans(), tb=st.booleans(), f64=st.booleans())
def test_matmul_fuzz_shapes_and_transposes(m, k, n, ta, tb, f64):
    dtype = np.float64 if f64 else np.float32
    rng = np.random.default_rng(m * 1600 + k * 40 + n)
    a = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    av = a.T if ta else a
    bv = b.T if tb else b
    got = matmul(av, bv)
    ref = av.astype(np.float64) @ bv.astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=(1e-5 if not f64 else 1e-12) * k * 10)


# --------------------------------------------------------------------------
# attention

@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("B,n,heads,hd", [(1, 1, 1, 4), (2, 70, 2, 8), (3, 130, 1, 16)])
def test_attention_forward_matches_softmax_reference(dtype, tol, B, n, heads, hd):
    rng = np.random.default_rng(3)
    qkv = rng.normal(size=(B, n, 3 * heads * hd)).astype(dtype) * 2
    e, rz, out = _core.head_attention_fwd(qkv, heads)
    assert e.shape == (B, heads, n, n) and rz.shape == (B, heads, n)
    ref = ref_attention(qkv, heads)
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol * 50)
    # e * rz is the softmax itself: rows sum to 1, max entry exactly exp(0)
    np.testing.assert_allclose((e * rz[..., None]).sum(axis=-1), 1.0, rtol=tol * 50)
    np.testing.assert_allclose(e.max(axis=-1), 1.0, rtol=tol)
    # the caller's buffer is filled in place
    buf = np.empty_like(e)
    e2, _, out2 = _core.head_attention_fwd(qkv, heads, buf)
    assert e2 is buf
    np.testing.assert_array_equal(buf, e)
    np.testing.assert_array_equal(out2, out)


def _attention_loss(qkv, dout, heads):
    return float((ref_attention(qkv, heads) * dout).sum())


def _attention_problem(seed, B, n, heads, hd):
    """Random float64 qkv (B, n, 3 heads hd), an output gradient, and the C
    kernel's input gradient for them."""
    rng = np.random.default_rng(seed)
    qkv = rng.normal(size=(B, n, 3 * heads * hd))
    dout = rng.normal(size=(B, n, heads * hd))
    e, rz, out = _core.head_attention_fwd(qkv, heads)
    return qkv, dout, _core.head_attention_bwd(qkv, e, rz, out, dout, heads)


def test_attention_backward_matches_finite_differences():
    heads = 2
    qkv, dout, got = _attention_problem(4, 2, 9, heads, 3)
    num = central_differences(lambda: _attention_loss(qkv, dout, heads), qkv)
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)


def test_attention_float32_backward_matches_float64_and_threads(restore_threads):
    heads = 2
    qkv, dout, ref = _attention_problem(5, 2, 150, heads, 16)
    q32, d32 = qkv.astype(np.float32), dout.astype(np.float32)
    res = []
    for t in (1, 2):
        gm.set_num_threads(t)
        e, rz, out = _core.head_attention_fwd(q32, heads)
        res.append((out, _core.head_attention_bwd(q32, e, rz, out, d32, heads)))
    np.testing.assert_allclose(res[0][1], ref, rtol=0, atol=2e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


def test_attention_errors():
    qkv = np.zeros((1, 5, 12), np.float32)
    with pytest.raises(ValueError, match="multiple of 3 \\* heads"):
        _core.head_attention_fwd(qkv, 3)
    with pytest.raises(ValueError, match="qkv must be 3-dimensional"):
        _core.head_attention_fwd(qkv[0], 2)
    with pytest.raises(ValueError, match="e must be a writable C-contiguous float32"):
        _core.head_attention_fwd(qkv, 2, np.empty((1, 2, 5, 4), np.float32))
    e, rz, out = _core.head_attention_fwd(qkv, 2)
    with pytest.raises(ValueError, match="dout must have shape"):
        _core.head_attention_bwd(qkv, e, rz, out, np.zeros((1, 5, 3), np.float32), 2)
    with pytest.raises(ValueError, match="rz must be a C-contiguous"):
        _core.head_attention_bwd(qkv, e, rz[:, :1], out, np.zeros((1, 5, 4), np.float32), 2)


# --------------------------------------------------------------------------
# LayerNorm and GELU

@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("n,d", [(1, 1), (130, 37), (70, 600)])
def test_layernorm_forward_and_backward(dtype, tol, n, d):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(n, d)) * 3 + 1).astype(dtype)
    gamma = rng.normal(size=d).astype(dtype)
    beta = rng.normal(size=d).astype(dtype)
    y, xhat, rstd = _core.layernorm_fwd(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(y, ref_layernorm(x, gamma, beta, 1e-5), rtol=0,
                               atol=tol * 100)
    np.testing.assert_allclose(xhat, ref_layernorm(x, 1.0, 0.0, 1e-5), rtol=0, atol=tol * 100)
    dy = rng.normal(size=(n, d)).astype(dtype)
    dx, dg, db = _core.layernorm_bwd(dy, xhat, rstd, gamma)
    # reference backward in float64 from the definition
    x64, g64 = x.astype(np.float64), dy.astype(np.float64) * gamma
    mu = x64.mean(1, keepdims=True)
    r = 1 / np.sqrt(((x64 - mu) ** 2).mean(1, keepdims=True) + 1e-5)
    xh = (x64 - mu) * r
    ref_dx = r * (g64 - g64.mean(1, keepdims=True) - xh * (g64 * xh).mean(1, keepdims=True))
    np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=tol * 100 * max(1, np.abs(ref_dx).max()))
    np.testing.assert_allclose(dg, (dy * xh).sum(0), rtol=0, atol=tol * 100 * n)
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(0), rtol=0, atol=tol * 100 * n)
    # accumulate into an existing gradient
    acc = np.ones((n, d), dtype)
    _core.layernorm_bwd(dy, xhat, rstd, gamma, acc)
    np.testing.assert_allclose(acc, 1 + ref_dx, rtol=0,
                               atol=tol * 100 * max(1, np.abs(ref_dx).max()))


def test_layernorm_backward_finite_differences_and_errors():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 6))
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    dy = rng.normal(size=(4, 6))
    _, xhat, rstd = _core.layernorm_fwd(x, gamma, beta, 1e-5)
    dx, _, _ = _core.layernorm_bwd(dy, xhat, rstd, gamma)
    num = central_differences(lambda: (ref_layernorm(x, gamma, beta, 1e-5) * dy).sum(), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="gamma does not match"):
        _core.layernorm_fwd(x, gamma[:5], beta, 1e-5)
    with pytest.raises(ValueError, match="rstd must have one entry per row"):
        _core.layernorm_bwd(dy, xhat, rstd[:3], gamma)
    with pytest.raises(ValueError, match="dx must not be dy"):
        _core.layernorm_bwd(dy, xhat, rstd, gamma, dy)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_gelu_tanh_forward_and_backward(dtype, tol):
    u = np.concatenate([np.linspace(-10, 10, 2001), [0.0, -30.0, 30.0, 1e-8]]).astype(dtype)
    g, t = _core.gelu_tanh_fwd(u)
    np.testing.assert_allclose(g, ref_gelu(u), rtol=0, atol=max(tol, 1e-15) * 20)
    assert np.isfinite(g).all() and np.isfinite(t).all()
    dg = np.linspace(-1, 1, u.size).astype(dtype)
    du = _core.gelu_tanh_bwd(dg, u, t)
    h = 1e-6
    u64 = u.astype(np.float64)
    num = (ref_gelu(u64 + h) - ref_gelu(u64 - h)) / (2 * h) * dg
    np.testing.assert_allclose(du, num, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-8)
    with pytest.raises(ValueError, match="t does not match"):
        _core.gelu_tanh_bwd(dg, u, t[:-1])


# --------------------------------------------------------------------------
# loss: foreground x background term

@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_loss_fgbg_matches_reference(dtype, tol, restore_threads):
    rng = np.random.default_rng(8)
    n, m = 90, 70
    P = rng.uniform(0, 1e-4, size=(n + 1, m + 1))
    P[rng.random(P.shape) < 0.1] = rng.uniform(0.01, 0.99)   # the log1p branch
    P[0, 0], P[1, 1] = 1.0, 0.0                              # clipped
    P = P.astype(dtype)
    sfg = rng.random(n) < 0.4
    tfg = rng.random(m) < 0.6
    lo, hi, w = 1e-30, 1 - 1e-7, 0.37
    total, grad = _core.loss_fgbg(P, sfg, tfg, lo, hi, w, True)
    rt, rg = ref_fgbg(P, sfg, tfg, lo, hi, w)
    assert total == pytest.approx(rt, rel=1e-12)
    np.testing.assert_allclose(grad, rg, rtol=tol * 5)
    assert grad.dtype == dtype
    t2, g2 = _core.loss_fgbg(P, sfg, tfg, lo, hi, w, False)
    assert g2 is None and t2 == total
    gm.set_num_threads(1)
    assert _core.loss_fgbg(P, sfg, tfg, lo, hi, w, False)[0] == total


def test_loss_fgbg_errors():
    P = np.full((4, 3), 0.1)
    with pytest.raises(ValueError, match="src_fg has 2 entries, the plan needs 3"):
        _core.loss_fgbg(P, np.ones(2, bool), np.ones(2, bool), 0.0, 0.9, 1.0, True)
    with pytest.raises(ValueError, match="lo < hi < 1"):
        _core.loss_fgbg(P, np.ones(3, bool), np.ones(2, bool), 0.0, 1.0, 1.0, True)
    with pytest.raises(ValueError, match="P must be"):
        _core.loss_fgbg(np.ones((1, 3)), np.ones(0, bool), np.ones(2, bool), 0.0, 0.9, 1.0,
                        True)

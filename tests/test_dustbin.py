"""Tests of the dustbin OT layer (geomatch.ops.dustbin): forward plan, VJP, marginals.

References used here, all independent of the code under test:
- ``oracle_plan``: a literal NumPy float64 loop of the equations of
  docs/method.md#dustbin-layer;
- torch autograd through a torch log-domain implementation (float64);
- central finite differences of the oracle (float64);
- POT's ``sinkhorn_unbalanced`` with ``reg_type="entropy"`` (same updates).
"""
import warnings

import numpy as np
from argnames import names_an_argument
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geomatch as gm
from geomatch.ops.dustbin import _dustbin_sinkhorn_path
from geomatch.testing import reference

# ---------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------


def oracle_plan(S, mu, nu, bin_score=0.3, reg=0.1, reg_m=10.0, n_iter=10):
    """The dustbin recursion (docs/method.md#dustbin-layer), literally, in float64."""
    return reference.dustbin_plan(S, mu, nu, bin_score=bin_score, reg=reg, reg_m=reg_m,
                            n_iter=n_iter)


def cosine_scores(rng, N, M, D=16):
    x = rng.standard_normal((N, D))
    y = rng.standard_normal((M, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x @ y.T


def marginal(rng, n, bin_mass=0.3):
    w = rng.uniform(0.2, 1.0, n - 1)
    return np.concatenate([(1 - bin_mass) * w / w.sum(), [bin_mass]])


def close(P, ref, dtype):
    scale = np.abs(ref).max()
    if dtype == np.float32:
        np.testing.assert_allclose(P, ref, rtol=2e-4, atol=2e-6 * scale)
    else:
        np.testing.assert_allclose(P, ref, rtol=1e-9, atol=1e-12 * scale)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = gm.get_num_threads()
    yield
    gm.set_num_threads(before)


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["auto", "kernel", "log"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 40), (70, 3)])
def test_forward_matches_oracle(rng, dtype, method, shape):
    S = cosine_scores(rng, *shape)
    mu, nu = marginal(rng, shape[0] + 1), marginal(rng, shape[1] + 1, 0.5)
    P, used = _dustbin_sinkhorn_path(S.astype(dtype), mu.astype(dtype), nu.astype(dtype),
                                     method=method)
    assert P.dtype == dtype and P.shape == (shape[0] + 1, shape[1] + 1)
    assert used == ("log" if method == "log" else "kernel")
    close(P, oracle_plan(S.astype(dtype), mu.astype(dtype), nu.astype(dtype)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(bin_score=-0.7, reg=0.05, reg_m=1.0, n_iter=3),
                                dict(bin_score=1.5, reg=0.2, reg_m=np.inf, n_iter=25),
                                dict(bin_score=0.0, reg=0.1, reg_m=0.0, n_iter=2),
                                dict(n_iter=1)])
def test_forward_parameters(rng, dtype, kw):
    S = cosine_scores(rng, 12, 9)
    mu, nu = marginal(rng, 13), marginal(rng, 10)
    ref = oracle_plan(S.astype(dtype), mu, nu, **kw)
    for method in ("kernel", "log"):
        P = gm.dustbin_sinkhorn(S.astype(dtype), mu.astype(dtype), nu.astype(dtype),
                                method=method, **kw)
        close(P, ref, dtype)


def test_balanced_limit_matches_pot(rng):
    """reg_m = inf gives POT's balanced-style updates; finite reg_m POT's unbalanced."""
    ot = pytest.importorskip("ot", reason="the reference is POT (test extra)")
    S = cosine_scores(rng, 20, 15)
    mu, nu = marginal(rng, 21), marginal(rng, 16)
    St = np.full((21, 16), 0.3)
    St[:20, :15] = S
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reg_m in (10.0, 1.0):
            ref = ot.unbalanced.sinkhorn_unbalanced(mu, nu, -St, 0.1, reg_m, method="sinkhorn",
                                                    reg_type="entropy", numItermax=7,
                                                    stopThr=0.0)
            P = gm.dustbin_sinkhorn(S, mu, nu, reg_m=reg_m, n_iter=7)
            np.testing.assert_allclose(P, ref, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_switches_to_log_domain(rng, dtype):
    """A large lam * range(S) makes the kernel domain unsafe: auto uses log sweeps."""
    S = rng.uniform(-1, 1, (9, 11))
    mu, nu = marginal(rng, 10), marginal(rng, 12)
    reg = 0.01 if dtype == np.float32 else 0.002
    P, used = _dustbin_sinkhorn_path(S.astype(dtype), mu.astype(dtype), nu.astype(dtype),
                                     reg=reg)
    assert used == "log"
    ref = oracle_plan(S.astype(dtype), mu.astype(dtype), nu.astype(dtype), reg=reg)
    scale = ref.max()
    tol = 3e-3 if dtype == np.float32 else 1e-8   # lam*S ~ 100 (f32) / 500 (f64)
    np.testing.assert_allclose(P, ref, rtol=tol, atol=tol * 1e-3 * scale)
    with pytest.raises(ValueError, match="kernel"):
        gm.dustbin_sinkhorn(S.astype(dtype), mu.astype(dtype), nu.astype(dtype), reg=reg,
                            method="kernel")


def test_kernel_recentres_shifted_scores(rng):
    """Scores far from bin_score: the kernel domain re-centres instead of falling back."""
    S = rng.uniform(5.0, 6.0, (15, 12))
    mu, nu = marginal(rng, 16), marginal(rng, 13)
    # lam*max|S~ - bin| = 57 > 30 but lam*range/2 = 28.5 <= 30 (float32)
    P, used = _dustbin_sinkhorn_path(S.astype(np.float32), mu.astype(np.float32),
                                     nu.astype(np.float32))
    assert used == "kernel"
    ref = oracle_plan(S.astype(np.float32), mu.astype(np.float32), nu.astype(np.float32))
    np.testing.assert_allclose(P, ref, rtol=2e-3, atol=1e-6 * ref.max())


@pytest.mark.parametrize("method", ["kernel", "log"])
def test_zero_masses(rng, method):
    """Zero entries (e.g. a dustbin with no mass) give zero plan rows/columns."""
    S = cosine_scores(rng, 8, 6)
    mu, nu = marginal(rng, 9), marginal(rng, 7)
    mu[-1] = 0.0
    nu[2] = 0.0
    P = gm.dustbin_sinkhorn(S, mu, nu, method=method)
    assert np.all(P[-1] == 0) and np.all(P[:, 2] == 0)
    close(P, oracle_plan(S, mu, nu), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_inputs(rng, dtype):
    big = cosine_scores(rng, 30, 40).astype(dtype)
    S = big[::2, 1::3]                    # (15, 13), non-contiguous
    St = np.ascontiguousarray(big[:13, :15]).T   # transposed view (15, 13)
    mu_big = np.repeat(marginal(rng, 16), 2).astype(dtype) / 2
    mu = mu_big[::2] * 2
    nu = marginal(rng, 14).astype(dtype)
    for s in (S, St):
        assert not s.flags.c_contiguous
        close(gm.dustbin_sinkhorn(s, mu, nu), oracle_plan(s, mu, nu), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(1,), (3,), (2, 2)])
def test_batched(rng, dtype, batch):
    N, M = 6, 9
    S = rng.uniform(-1, 1, batch + (N, M)).astype(dtype)
    mu = np.stack([marginal(rng, N + 1) for _ in range(int(np.prod(batch)))])
    mu = mu.reshape(batch + (N + 1,)).astype(dtype)
    nu1 = marginal(rng, M + 1).astype(dtype)          # shared (broadcast) marginal
    P = gm.dustbin_sinkhorn(S, mu, nu1)
    assert P.shape == batch + (N + 1, M + 1)
    for idx in np.ndindex(*batch):
        close(P[idx], oracle_plan(S[idx], mu[idx], nu1), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["kernel", "log"])
def test_threads_identical(rng, dtype, method):
    N, M = 603, 517          # above the size where the kernels start using threads
    S = cosine_scores(rng, N, M).astype(dtype)
    mu, nu = marginal(rng, N + 1).astype(dtype), marginal(rng, M + 1).astype(dtype)
    G = rng.standard_normal((N + 1, M + 1)).astype(dtype)
    out = []
    for nt in (1, 2, 3):
        gm.set_num_threads(nt)
        P = gm.dustbin_sinkhorn(S, mu, nu, method=method)
        dS, db = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, method=method, return_bin_grad=True)
        out.append((P, dS, db))
    for P, dS, db in out[1:]:
        assert np.array_equal(P, out[0][0])
        assert np.array_equal(dS, out[0][1])
        assert db == out[0][2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kw", [
    ((1001, 777), {}),                                  # N not a multiple of 8 or 32
    ((300, 1100), {}),                                  # N < M, 10 chunks of 32 rows
    ((515, 606), dict(bin_score=0.0, reg=1 / 29.0)),    # L = 29: no fused iteration
])
def test_threads_identical_kernel_shapes(rng, dtype, shape, kw):
    """The kernel path's row groups, chunk partials, per-thread column halves and
    per-thread statistics give the same bits for any team size, and match the
    oracle with several threads."""
    N, M = shape
    S = cosine_scores(rng, N, M).astype(dtype)
    S[0, 0] = 1.0      # L = lam * max|S~ - bin| = 29 for the last case: 2L > 57
    mu, nu = marginal(rng, N + 1).astype(dtype), marginal(rng, M + 1).astype(dtype)
    G = rng.standard_normal((N + 1, M + 1)).astype(dtype)
    out = []
    for nt in (1, 2, 3, 4):
        gm.set_num_threads(nt)
        P, used = _dustbin_sinkhorn_path(S, mu, nu, method="kernel", **kw)
        assert used == "kernel"
        dS, db = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, method="kernel", return_bin_grad=True,
                                         **kw)
        out.append((P, dS, db))
    for P, dS, db in out[1:]:
        assert np.array_equal(P, out[0][0])
        assert np.array_equal(dS, out[0][1])
        assert db == out[0][2]
    close(out[3][0], oracle_plan(S, mu, nu, **kw), dtype)


def test_kernel_and_log_paths_agree_at_scale(rng):
    S = cosine_scores(rng, 150, 170, D=8)
    mu, nu = marginal(rng, 151), marginal(rng, 171)
    Pk = gm.dustbin_sinkhorn(S, mu, nu, method="kernel")
    Pl = gm.dustbin_sinkhorn(S, mu, nu, method="log")
    np.testing.assert_allclose(Pk, Pl, rtol=1e-11, atol=1e-15)
    S32 = S.astype(np.float32)
    Pmix = gm.dustbin_sinkhorn(S32, mu, nu.astype(np.float32), method="kernel")
    assert Pmix.dtype == np.float64   # a float64 marginal makes the working type float64
    Pref = gm.dustbin_sinkhorn(S32.astype(np.float64), mu, nu.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(Pmix, Pref)


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------


def torch_plan(torch, S, mu, nu, b, reg=0.1, reg_m=10.0, n_iter=10, log=False):
    N, M = S.shape
    St = torch.cat([torch.cat([S, b.expand(N, 1)], 1), b.expand(1, M + 1)], 0)
    lam = 1.0 / reg
    phi = 1.0 if np.isinf(reg_m) else reg_m / (reg_m + reg)
    lmu, lnu = torch.log(mu), torch.log(nu)
    u = torch.zeros(N + 1, dtype=S.dtype)
    v = torch.zeros(M + 1, dtype=S.dtype)
    for _ in range(n_iter):
        u = phi / lam * (lmu - torch.logsumexp(lam * St + lam * v[None, :], 1))
        v = phi / lam * (lnu - torch.logsumexp(lam * St + lam * u[:, None], 0))
    Z = lam * (St + u[:, None] + v[None, :])
    return Z if log else Z.exp()


@pytest.mark.parametrize("wrt", ["plan", "log_plan"])
@pytest.mark.parametrize("method", ["kernel", "log"])
@pytest.mark.parametrize("shape", [(4, 6), (41, 29)])
def test_vjp_matches_torch_autograd(rng, wrt, method, shape):
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    N, M = shape
    S = cosine_scores(rng, N, M)
    mu, nu = marginal(rng, N + 1), marginal(rng, M + 1)
    G = rng.standard_normal((N + 1, M + 1))
    kw = dict(bin_score=0.25, reg=0.08, reg_m=5.0, n_iter=6)
    St = torch.tensor(S, requires_grad=True)
    bt = torch.tensor(kw["bin_score"], dtype=torch.float64, requires_grad=True)
    out = torch_plan(torch, St, torch.tensor(mu), torch.tensor(nu), bt, reg=kw["reg"],
                     reg_m=kw["reg_m"], n_iter=kw["n_iter"], log=wrt == "log_plan")
    (out * torch.tensor(G)).sum().backward()
    ref, refb = St.grad.numpy(), bt.grad.item()
    for dtype in (np.float64, np.float32):
        dS, db = gm.dustbin_sinkhorn_vjp(S.astype(dtype), mu.astype(dtype), nu.astype(dtype),
                                         G.astype(dtype), wrt=wrt, method=method,
                                         return_bin_grad=True, **kw)
        assert dS.dtype == dtype and dS.shape == S.shape
        if dtype == np.float64:
            np.testing.assert_allclose(dS, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
            assert db == pytest.approx(refb, rel=1e-8, abs=1e-12)
        else:
            # float32 inputs change S itself by ~1e-8; compare loosely
            np.testing.assert_allclose(dS, ref, rtol=5e-3, atol=2e-4 * np.abs(ref).max())
            assert db == pytest.approx(refb, rel=5e-3, abs=1e-4 * abs(refb) + 1e-7)


@pytest.mark.parametrize("method", ["kernel", "log"])
def test_vjp_matches_finite_differences(rng, method):
    N, M = 3, 4
    S = cosine_scores(rng, N, M)
    mu, nu = marginal(rng, N + 1), marginal(rng, M + 1)
    G = rng.standard_normal((N + 1, M + 1))
    kw = dict(bin_score=0.3, reg=0.1, reg_m=10.0, n_iter=5)

    def loss(S_, b_, log):
        P = oracle_plan(S_, mu, nu, **{**kw, "bin_score": b_})
        return np.sum(G * (np.log(P) if log else P))

    h = 1e-6
    for wrt in ("plan", "log_plan"):
        dS, db = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, wrt=wrt, method=method,
                                         return_bin_grad=True, **kw)
        fd = np.zeros_like(S)
        for idx in np.ndindex(N, M):
            e = np.zeros_like(S)
            e[idx] = h
            fd[idx] = (loss(S + e, 0.3, wrt == "log_plan") -
                       loss(S - e, 0.3, wrt == "log_plan")) / (2 * h)
        fdb = (loss(S, 0.3 + h, wrt == "log_plan") - loss(S, 0.3 - h, wrt == "log_plan")) / (2 * h)
        np.testing.assert_allclose(dS, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
        assert db == pytest.approx(fdb, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vjp_batched_strided(rng, dtype):
    B, N, M = 3, 7, 5
    big = rng.uniform(-1, 1, (B, 2 * N, M)).astype(dtype)
    S = big[:, ::2, :]
    mu = np.stack([marginal(rng, N + 1) for _ in range(B)]).astype(dtype)
    nu = np.stack([marginal(rng, M + 1) for _ in range(B)]).astype(dtype)
    G = rng.standard_normal((B, M + 1, N + 1)).astype(dtype).transpose(0, 2, 1)
    dS, db = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, return_bin_grad=True)
    assert dS.shape == S.shape and db.shape == (B,)
    for b in range(B):
        d1, b1 = gm.dustbin_sinkhorn_vjp(np.ascontiguousarray(S[b]), mu[b], nu[b],
                                         np.ascontiguousarray(G[b]), return_bin_grad=True)
        assert np.array_equal(dS[b], d1) and db[b] == b1


# ---------------------------------------------------------------------------
# marginals
# ---------------------------------------------------------------------------


def test_marginals_rule():
    mask = np.zeros((37, 37), bool)
    mask[5:15, 10:22] = True                      # 120 foreground patches
    m = gm.dustbin_marginals(mask, n_visible=5, n_kp=10)
    assert m.shape == (37 * 37 + 1,) and m.dtype == np.float32
    m0 = 0.9 * 6 / 11                             # GECO: 0.9 * (vis + 1) / (numkp + 1)
    flat = mask.ravel()
    np.testing.assert_allclose(m[:-1][flat], m0 / 120, rtol=1e-6)
    np.testing.assert_allclose(m[:-1][~flat], 0.1 / (37 * 37 - 120), rtol=1e-6)
    assert m[-1] == pytest.approx(1 - m0 - 0.1, rel=1e-6)
    assert float(np.sum(m, dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)


def test_marginals_edge_cases():
    mask = np.ones((4, 4), bool)                  # no background: it gets nothing
    m = gm.dustbin_marginals(mask, 3, 3, dtype=np.float64)
    assert m[-1] == pytest.approx(0.1) and np.allclose(m[:-1], 0.9 / 16)
    mask[0, 0] = False                            # all visible + background: empty bin
    m = gm.dustbin_marginals(mask, 3, 3, dtype=np.float64)
    assert m[-1] == 0.0 and m.sum() == pytest.approx(1.0)
    P = gm.dustbin_sinkhorn(np.zeros((16, 16)), m, m)   # usable as is
    assert np.all(P[-1] == 0) and np.all(np.isfinite(P))
    for bad, exc, word in [((np.zeros((3, 3), bool), 1, 2), ValueError, "foreground"),
                           ((np.ones(0, bool), 1, 2), ValueError, "fg_mask"),
                           ((np.ones(5, bool), 3, 2), ValueError, "n_visible"),
                           ((np.ones(5, bool), 0, 0), ValueError, "n_kp"),
                           ((np.ones(5) * 0.5, 1, 2), TypeError, "fg_mask"),
                           ((np.ones(5, bool), 1.0, 2), TypeError, "n_visible")]:
        with pytest.raises(exc, match=word):
            gm.dustbin_marginals(*bad)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

S0 = np.zeros((3, 4), np.float32)
MU0 = np.full(4, 0.25, np.float32)
NU0 = np.full(5, 0.2, np.float32)


@pytest.mark.parametrize("args,kw,exc,word", [
    ((np.zeros(4), MU0, NU0), {}, ValueError, "S"),
    ((np.zeros((3, 4), np.int64), MU0, NU0), {}, TypeError, "S"),
    ((np.zeros((3, 4), np.complex64), MU0, NU0), {}, TypeError, "S"),
    ((np.zeros((3, 4), bool), MU0, NU0), {}, TypeError, "S"),
    (("abc", MU0, NU0), {}, TypeError, "S"),
    ((np.zeros((0, 4)), np.ones(1), NU0), {}, ValueError, "S"),
    ((S0, np.full(3, 0.3), NU0), {}, ValueError, "mu"),
    ((S0, MU0, np.full(4, 0.3)), {}, ValueError, "nu"),
    ((S0, np.full((2, 4), 0.3), NU0), {}, ValueError, "mu"),
    ((np.full((3, 4), np.nan), MU0, NU0), {}, ValueError, "S"),
    ((np.full((3, 4), np.inf), MU0, NU0), {"method": "log"}, ValueError, "S"),
    ((S0, np.array([0.5, np.inf, 0.1, 0.1]), NU0), {}, ValueError, "mu"),
    ((S0, np.array([0.5, -0.1, 0.3, 0.3]), NU0), {}, ValueError, "mu"),
    ((S0, MU0, np.zeros(5)), {}, ValueError, "nu"),
    ((S0, MU0, NU0), {"reg": 0.0}, ValueError, "reg"),
    ((S0, MU0, NU0), {"reg": -1.0}, ValueError, "reg"),
    ((S0, MU0, NU0), {"reg": np.nan}, ValueError, "reg"),
    ((S0, MU0, NU0), {"reg_m": -1.0}, ValueError, "reg_m"),
    ((S0, MU0, NU0), {"reg_m": np.nan}, ValueError, "reg_m"),
    ((S0, MU0, NU0), {"reg_m": -np.inf}, ValueError, "reg_m"),
    ((S0, MU0, NU0), {"n_iter": 0}, ValueError, "n_iter"),
    ((S0, MU0, NU0), {"n_iter": 2.0}, TypeError, "n_iter"),
    ((S0, MU0, NU0), {"bin_score": np.nan}, ValueError, "bin_score"),
    ((S0, MU0, NU0), {"bin_score": "x"}, TypeError, "bin_score"),
    ((S0, MU0, NU0), {"bin_score": 1j}, TypeError, "bin_score"),
    ((S0, MU0, NU0), {"method": "fast"}, ValueError, "method"),
])
def test_bad_input_forward(args, kw, exc, word):
    with pytest.raises(exc, match=word):
        gm.dustbin_sinkhorn(*args, **kw)


@pytest.mark.parametrize("G,kw,exc,word", [
    (np.zeros((4, 4)), {}, ValueError, "grad_P"),
    (np.zeros((2, 4, 5)), {}, ValueError, "grad_P"),
    (np.full((4, 5), np.nan), {}, ValueError, "grad_P"),
    (np.full((4, 5), np.nan), {"method": "log"}, ValueError, "grad_P"),
    (np.zeros((4, 5), np.int32), {}, TypeError, "grad_P"),
    (np.zeros((4, 5)), {"wrt": "S"}, ValueError, "wrt"),
])
def test_bad_input_vjp(G, kw, exc, word):
    with pytest.raises(exc, match=word):
        gm.dustbin_sinkhorn_vjp(S0, MU0, NU0, G, **kw)


def test_vjp_history_too_large_is_memory_error():
    """The VJP keeps O(n_iter (N+M)) history; absurd sizes fail up front."""
    S = np.zeros((2000, 2000), np.float32)
    m = np.ones(2001, np.float32)
    with pytest.raises(MemoryError):
        gm.dustbin_sinkhorn_vjp(S, m, m, np.ones((2001, 2001), np.float32), n_iter=1000000)


_dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.bool_,
                           np.complex64])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sshape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
       mulen=st.integers(0, 5), nulen=st.integers(0, 5), dt=_dtypes,
       fill=st.sampled_from([0.0, 0.5, -1.0, np.nan, np.inf, 1e30]),
       margfill=st.sampled_from([0.0, 0.3, -0.1, np.inf, 1e-30]),
       reg=st.sampled_from([0.1, 0.0, -1.0, 1e-4, np.inf, 1e10]),
       reg_m=st.sampled_from([10.0, 0.0, -1.0, np.inf, np.nan]),
       n_iter=st.sampled_from([1, 3, 0, -2]),
       use_vjp=st.booleans())
def test_fuzz_binding(sshape, mulen, nulen, dt, fill, margfill, reg, reg_m, n_iter, use_vjp):
    with np.errstate(all="ignore"):
        S = np.full(sshape, fill).astype(dt)
        mu = np.full(mulen, margfill).astype(dt)
        nu = np.full(nulen, margfill).astype(dt)
    try:
        if use_vjp:
            G = np.ones(tuple(sshape[:-2]) + (mulen, nulen))
            out = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, reg=reg, reg_m=reg_m, n_iter=n_iter)
            assert out.shape == S.shape
        else:
            out = gm.dustbin_sinkhorn(S, mu, nu, reg=reg, reg_m=reg_m, n_iter=n_iter)
            assert out.shape == tuple(sshape[:-2]) + (mulen, nulen)
    except (ValueError, TypeError) as e:
        assert names_an_argument(str(e), ("S", "mu", "nu", "grad_P", "reg", "reg_m", "n_iter")), e
        return
    except FloatingPointError as e:
        assert str(e)
        return
    assert np.all(np.isfinite(out))

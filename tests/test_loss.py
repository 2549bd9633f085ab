"""Tests of the GECO loss (geomatch.model.loss).

The oracle for the OT layer is the slow NumPy log-domain implementation of
the recursion of docs/method.md#dustbin-layer (forward) and of its reverse-mode
derivative through the unrolled iterations in geomatch.testing.reference
(checked here by finite differences and against the torch code path of GECO's
``log_sinkhorn_iterations_kl``).
"""

import numpy as np
import pytest

import geomatch as gm
from geomatch.model import loss as L
from geomatch.testing import reference


# ----------------------------------------------------------------- OT oracle
def oracle_forward(S, mu, nu, **kw):
    """The dustbin plan of geomatch.testing.reference in the dtype of S."""
    return reference.dustbin_plan(S, mu, nu, **kw).astype(np.result_type(S, np.float32))


def oracle_vjp(S, mu, nu, grad_P, **kw):
    return reference.dustbin_vjp(S, mu, nu, grad_P, **kw).astype(np.result_type(S, np.float32))


def _oracle_impl():
    return oracle_forward, oracle_vjp


@pytest.fixture
def use_oracle(monkeypatch):
    monkeypatch.setattr(L, "_ot_impl", _oracle_impl)


@pytest.fixture(params=["oracle", "gm"])
def ot_layer(request, monkeypatch):
    """Run a test with the NumPy oracle OT layer and with geomatch's C layer."""
    if request.param == "oracle":
        monkeypatch.setattr(L, "_ot_impl", _oracle_impl)
    return request.param


def _problem(rng, N=6, M=5):
    S = np.tanh(rng.normal(size=(N, M)))
    mu = rng.uniform(0.5, 1.5, N + 1)
    nu = rng.uniform(0.5, 1.5, M + 1)
    return S, mu / mu.sum(), nu / nu.sum()


def test_oracle_vjp_matches_finite_differences():
    rng = np.random.default_rng(0)
    S, mu, nu = _problem(rng)
    G = rng.normal(size=(S.shape[0] + 1, S.shape[1] + 1))
    g = oracle_vjp(S, mu, nu, G, n_iter=4)
    num = reference.central_differences(
        lambda: (oracle_forward(S, mu, nu, n_iter=4) * G).sum(), S)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_oracle_matches_geco_torch_recursion():
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    rng = np.random.default_rng(1)
    S, mu, nu = _problem(rng, 7, 4)
    lam, reg_kl = 10.0, 10.0
    Z = lam * torch.tensor(reference.dustbin_augment(S, 0.3))[None]
    lmu, lnu = torch.tensor(np.log(mu))[None], torch.tensor(np.log(nu))[None]
    u, v = torch.zeros_like(lmu), torch.zeros_like(lnu)
    phi = reg_kl / (reg_kl + 1 / lam)
    for _ in range(10):
        u = (lmu - torch.logsumexp(Z + v.unsqueeze(1) * lam, dim=2)) / lam * phi
        v = (lnu - torch.logsumexp(Z + u.unsqueeze(2) * lam, dim=1)) / lam * phi
    P = (Z + u.unsqueeze(2) * lam + v.unsqueeze(1) * lam).exp()[0].numpy()
    np.testing.assert_allclose(oracle_forward(S, mu, nu), P, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_gm_ot_layer_agrees_with_oracle(dtype, tol):
    rng = np.random.default_rng(2)
    S, mu, nu = _problem(rng, 9, 8)
    G = rng.normal(size=(10, 9))
    P = gm.dustbin_sinkhorn(S.astype(dtype), mu.astype(dtype), nu.astype(dtype))
    np.testing.assert_allclose(P, oracle_forward(S, mu, nu), rtol=tol, atol=tol * 1e-2)
    g = gm.dustbin_sinkhorn_vjp(S.astype(dtype), mu.astype(dtype), nu.astype(dtype),
                                G.astype(dtype))
    if isinstance(g, tuple):
        g = g[0]
    ref = oracle_vjp(S, mu, nu, G)
    np.testing.assert_allclose(g, ref, rtol=0, atol=tol * np.abs(ref).max() * 10)


# ------------------------------------------------------------ geometry helpers
def test_keypoint_patches_floor_rule_and_clamp():
    kps = np.array([[0.0, 0.0], [99.9, 49.9], [100.0, 50.0], [np.nan, np.nan], [30.0, 20.0]])
    vis = np.array([True, True, True, False, True])
    # image W=100, H=50, grid h=5, w=4: patch = (floor(y*5/50), floor(x*4/100))
    p = L.keypoint_patches(kps, vis, (100, 50), (5, 4))
    assert p.tolist() == [0, 4 * 4 + 3, 4 * 4 + 3, -1, 2 * 4 + 1]
    with pytest.raises(ValueError, match="kps"):
        L.keypoint_patches(np.zeros((3, 3)), np.ones(3, bool), (10, 10), (2, 2))
    with pytest.raises(ValueError, match="kps"):
        L.keypoint_patches(np.full((1, 2), np.nan), np.ones(1, bool), (10, 10), (2, 2))


def test_foreground_grid_from_mask_and_bbox():
    mask = np.zeros((8, 12), np.uint8)
    mask[2:6, 3:9] = 1
    fg = L.foreground_grid((4, 4), (12, 8), mask=mask)
    # rows take pixels y = 0, 2, 4, 6; cols take x = 0, 3, 6, 9
    expect = np.zeros((4, 4), bool)
    expect[1:3, 1:3] = True
    np.testing.assert_array_equal(fg, expect)
    fb = L.foreground_grid((4, 4), (12, 8), bbox=(3, 2, 8, 5))
    np.testing.assert_array_equal(fb, expect)
    with pytest.raises(ValueError, match="mask"):
        L.foreground_grid((4, 4), (12, 8), mask=np.ones((3, 3)))


def test_dustbin_marginal():
    fg = np.array([[1, 1, 0], [0, 1, 0]], bool)
    mu = L.dustbin_marginal(fg, n_visible=3, n_kp=7)
    m0 = 0.9 * 4 / 8
    np.testing.assert_allclose(mu[:-1][fg.ravel()], m0 / 3)
    np.testing.assert_allclose(mu[:-1][~fg.ravel()], 0.1 / 3)
    np.testing.assert_allclose(mu[-1], 1 - m0 - 0.1)
    np.testing.assert_allclose(mu.sum(), 1.0)
    allfg = L.dustbin_marginal(np.ones(4, bool), 2, 5)
    np.testing.assert_allclose(allfg[-1], 1 - 0.9 * 3 / 6)
    full = L.dustbin_marginal(fg, n_visible=7, n_kp=7)
    assert full[-1] == pytest.approx(0.0, abs=1e-12)  # GECO: no dustbin mass left
    with pytest.raises(ValueError, match="fg"):
        L.dustbin_marginal(np.zeros(3, bool), 1, 2)


def test_match_sets_explicit():
    # K = 5 keypoints; 0<->1 and 2<->3 are mirror twins, 4 has no counterpart.
    perm = np.array([1, 0, 3, 2, 4])
    sp = np.array([10, 11, -1, 13, 14])
    tp = np.array([20, 21, 22, -1, 24])
    N, M = 30, 40
    s = L.match_sets(sp, tp, perm, N, M)
    pairs = {k: sorted(zip(r.tolist(), c.tolist())) for k, (r, c) in s.items()}
    assert pairs["pos"] == [(10, 20), (11, 21), (14, 24)]
    # 2 visible only in target -> (dustbin, 22); 3 only in source -> (13, dustbin)
    assert pairs["bin"] == [(13, M), (N, 22)]
    # (0 in src, 1 in trg), (1 in src, 0 in trg), (3 in src, 2 in trg); 4 has no twin
    assert pairs["neg"] == [(10, 21), (11, 20), (13, 22)]
    # duplicates (two keypoints in the same patch pair) are counted once
    s2 = L.match_sets(np.array([5, 5]), np.array([7, 7]), np.array([0, 1]), 10, 10)
    assert s2["pos"][0].tolist() == [5] and s2["pos"][1].tolist() == [7]
    with pytest.raises(ValueError, match="flip_perm"):
        L.match_sets(sp, tp, np.array([0, 1, 2, 3, 9]), N, M)


# ------------------------------------------------------------------ the loss
def _tiny_pair(rng, E=5):
    hs, ws, ht, wt = 3, 4, 4, 3
    es = rng.normal(size=(hs, ws, E))
    et = rng.normal(size=(ht, wt, E))
    sfg = np.zeros((hs, ws), bool)
    sfg[0:2, 1:4] = True
    tfg = np.zeros((ht, wt), bool)
    tfg[1:4, 0:2] = True
    perm = np.array([1, 0, 2, 4, 3])
    # image sizes (W, H): source 40 x 30, target 30 x 40 -> 10-pixel patches
    skps = np.array([[15, 5], [35, 15], [25, 5], [np.nan, np.nan], [5, 25]], float)
    svis = np.array([True, True, True, False, True])
    tkps = np.array([[5, 15], [15, 25], [np.nan, np.nan], [5, 35], [25, 5]], float)
    tvis = np.array([True, True, False, True, True])
    kw = dict(src_kps=skps, src_visible=svis, trg_kps=tkps, trg_visible=tvis,
              src_size=(40, 30), trg_size=(30, 40), flip_perm=perm, src_fg=sfg, trg_fg=tfg,
              n_kp=6)
    return es, et, kw


def test_loss_value_matches_direct_formula(use_oracle):
    rng = np.random.default_rng(3)
    es, et, kw = _tiny_pair(rng)
    loss, gs, gt, info = L.pair_loss(es, et, **kw)
    # independent evaluation
    xs = es.reshape(12, -1) / np.linalg.norm(es.reshape(12, -1), axis=1, keepdims=True)
    xt = et.reshape(12, -1) / np.linalg.norm(et.reshape(12, -1), axis=1, keepdims=True)
    S = xs @ xt.T
    sfg, tfg = kw["src_fg"].ravel(), kw["trg_fg"].ravel()
    m0s, m0t = 0.9 * 5 / 7, 0.9 * 5 / 7
    mu = np.r_[np.where(sfg, m0s / sfg.sum(), 0.1 / (~sfg).sum()), 1 - m0s - 0.1]
    nu = np.r_[np.where(tfg, m0t / tfg.sum(), 0.1 / (~tfg).sum()), 1 - m0t - 0.1]
    P = oracle_forward(S, mu, nu)
    # patches: source (row, col) = (y//10, x//10) on 3x4; target on 4x3
    sp = {0: 0 * 4 + 1, 1: 1 * 4 + 3, 2: 0 * 4 + 2, 4: 2 * 4 + 0}
    tp = {0: 1 * 3 + 0, 1: 2 * 3 + 1, 3: 3 * 3 + 0, 4: 0 * 3 + 2}
    pos = [(sp[k], tp[k]) for k in (0, 1, 4)]
    binn = [(sp[2], 12), (12, tp[3])]
    neg = [(sp[0], tp[1]), (sp[1], tp[0])]  # 3<->4 twins: 4 in src, 3 in trg
    neg.append((sp[4], tp[3]))
    fgbg = [(i, j) for i in range(12) for j in range(12) if sfg[i] != tfg[j]]
    expect = (np.mean([-np.log(P[i, j]) for i, j in pos]) / 13
              + np.mean([-np.log(P[i, j]) for i, j in binn]) / 13
              + 10 * np.mean([-np.log(1 - P[i, j]) for i, j in neg])
              + 10 * np.mean([-np.log(1 - P[i, j]) for i, j in fgbg]))
    assert info["n_pos"] == 3 and info["n_bin"] == 2 and info["n_neg"] == 3
    assert info["n_fgbg"] == len(fgbg)
    assert loss == pytest.approx(expect, rel=1e-10)


def test_loss_gradient_matches_finite_differences(ot_layer):
    rng = np.random.default_rng(4)
    es, et, kw = _tiny_pair(rng)
    _, gs, gt, _ = L.pair_loss(es, et, **kw)
    for arr, g in ((es, gs), (et, gt)):
        num = reference.central_differences(
            lambda: L.pair_loss(es, et, need_grad=False, **kw)[0], arr)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


def test_loss_gradient_through_the_head(use_oracle):
    from geomatch.model.head import AttentionHead, HeadConfig
    rng = np.random.default_rng(5)
    cfg = HeadConfig(in_dim=6, dim=8, out_dim=5, num_heads=2, num_blocks=1, mlp_dim=8,
                     attn_dim=8)
    head = AttentionHead(cfg, dtype=np.float64, seed=2)
    _, _, kw = _tiny_pair(rng)
    fs = rng.normal(size=(3, 4, 6))
    ft = rng.normal(size=(4, 3, 6))

    def total():
        return L.pair_loss(head(fs), head(ft), need_grad=False, **kw)[0]

    ys = head.forward(fs)
    yt = head(ft)
    _, gs, gt, _ = L.pair_loss(ys, yt, **kw)
    grads = head.backward(gs)
    head.forward(ft)
    for k, v in head.backward(gt).items():
        grads[k] += v
    for name in ("in_proj.weight", "blocks.0.attn.qkv.weight", "out_proj.bias", "pos_gain"):
        p = head.parameters()[name]
        some = list(np.ndindex(p.shape))[:6]
        num = reference.central_differences(total, p, indices=some)
        for idx in some:
            assert grads[name][idx] == pytest.approx(num[idx], rel=1e-5, abs=1e-8)


def test_empty_foreground_pair_is_skipped(use_oracle):
    rng = np.random.default_rng(6)
    es, et, kw = _tiny_pair(rng)
    kw["trg_fg"] = np.zeros((4, 3), bool)
    loss, gs, gt, info = L.pair_loss(es, et, **kw)
    assert info["skipped"] and loss == 0.0
    assert not gs.any() and not gt.any()


def test_loss_input_errors(use_oracle):
    rng = np.random.default_rng(7)
    es, et, kw = _tiny_pair(rng)
    with pytest.raises(ValueError, match="embeddings"):
        L.pair_loss(es[..., :3], et, **kw)
    bad = dict(kw, src_fg=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="foreground"):
        L.pair_loss(es, et, **bad)
    with pytest.raises(ValueError, match="reg"):
        L.LossConfig(reg=0)


def test_zero_dustbin_mass_when_all_keypoints_visible(ot_layer):
    # every keypoint visible in the source and background present: GECO's
    # marginal gives the source dustbin no mass; loss and gradient stay finite.
    rng = np.random.default_rng(8)
    es, et, kw = _tiny_pair(rng)
    kw = dict(kw, n_kp=5)
    kw["src_kps"] = np.array([[15, 5], [35, 15], [25, 5], [15, 15], [5, 25]], float)
    kw["src_visible"] = np.ones(5, bool)
    loss, gs, gt, info = L.pair_loss(es, et, **kw)
    assert np.isfinite(loss) and np.isfinite(gs).all() and np.isfinite(gt).all()
    i = (1, 2, 0)
    old = es[i]
    es[i] = old + 1e-6
    lp = L.pair_loss(es, et, need_grad=False, **kw)[0]
    es[i] = old - 1e-6
    lm = L.pair_loss(es, et, need_grad=False, **kw)[0]
    es[i] = old
    assert gs[i] == pytest.approx((lp - lm) / 2e-6, rel=1e-5, abs=1e-8)

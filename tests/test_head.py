"""Tests of the attention head (geomatch.model.head) and AdamW (geomatch.model.optim).

Oracles: central finite differences in float64 for every parameter tensor, and
PyTorch autograd on the same weights (an independent functional re-implementation
with torch.nn.functional ops).
"""
import math

import numpy as np
import pytest

from geomatch.model.head import AttentionHead, HeadConfig, load_head, sincos_2d
from geomatch.model.optim import AdamW
from geomatch.testing.reference import central_differences

SMALL = HeadConfig(in_dim=16, dim=8, out_dim=6, num_heads=2, num_blocks=2, mlp_dim=12,
                   attn_dim=8)


def _perturbed_head(cfg, seed=1, scale=0.3, dtype=np.float64):
    head = AttentionHead(cfg, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for v in head.parameters().values():  # move away from the special init values
        v += rng.normal(0, scale, v.shape).astype(v.dtype)
    return head


@pytest.mark.parametrize("cfg", [SMALL, HeadConfig(in_dim=16, dim=8, out_dim=4, num_heads=2,
                                                   num_blocks=1, mlp_dim=6, attn_dim=4)])
def test_gradients_match_finite_differences_for_every_parameter(cfg):
    head = _perturbed_head(cfg)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 16))
    G = rng.normal(size=(5, 4, cfg.out_dim))

    def loss():
        return float((head(x) * G).sum())

    head.forward(x, cache=True)
    grads = head.backward(G, input_grad=True)
    assert set(grads) == set(head.parameters()) | {"input"}
    eps = 1e-6
    for name, p in head.parameters().items():
        num = central_differences(loss, p, eps)
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-7, err_msg=name)
    # input gradient too
    num = central_differences(loss, x, eps)
    np.testing.assert_allclose(grads["input"], num, rtol=1e-6, atol=1e-7)


def _torch_forward(torch, cfg, params, x):
    F = torch.nn.functional
    T = x.shape[0] * x.shape[1]
    h, w = x.shape[:2]
    d, da, H = cfg.dim, cfg.attention_dim, cfg.num_heads
    dh = da // H
    xt = x.reshape(T, -1)
    pe = torch.from_numpy(sincos_2d(h, w, d, np.float64).reshape(T, d))
    z = xt @ params["in_proj.weight"] + params["in_proj.bias"] + pe * params["pos_gain"]
    for b in range(cfg.num_blocks):
        pre = f"blocks.{b}."
        a = F.layer_norm(z, (d,), params[pre + "norm1.weight"], params[pre + "norm1.bias"],
                         cfg.ln_eps)
        qkv = a @ params[pre + "attn.qkv.weight"] + params[pre + "attn.qkv.bias"]
        q, k, v = qkv.split(da, dim=1)
        q = q.reshape(T, H, dh).transpose(0, 1)
        k = k.reshape(T, H, dh).transpose(0, 1)
        v = v.reshape(T, H, dh).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, da)
        z = z + o @ params[pre + "attn.proj.weight"] + params[pre + "attn.proj.bias"]
        bb = F.layer_norm(z, (d,), params[pre + "norm2.weight"], params[pre + "norm2.bias"],
                          cfg.ln_eps)
        u = F.gelu(bb @ params[pre + "mlp.fc1.weight"] + params[pre + "mlp.fc1.bias"],
                   approximate="tanh")
        z = z + u @ params[pre + "mlp.fc2.weight"] + params[pre + "mlp.fc2.bias"]
    zo = F.layer_norm(z, (d,), params["norm_out.weight"], params["norm_out.bias"], cfg.ln_eps)
    y = zo @ params["out_proj.weight"] + params["out_proj.bias"]
    return y.reshape(h, w, -1)


@pytest.mark.parametrize("dtype,rtol,big", [(np.float64, 1e-9, False), (np.float32, 2e-4, False),
                                            (np.float64, 1e-9, True)])
def test_forward_and_backward_match_torch_autograd(dtype, rtol, big):
    # big: attention scores beyond the no-shift bound (|s| up to ~100s), so the
    # row-maximum shift path of the softmax is exercised
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    cfg = HeadConfig(in_dim=24, dim=16, out_dim=12, num_heads=4, num_blocks=2, mlp_dim=20,
                     attn_dim=8)
    head = _perturbed_head(cfg, seed=3, scale=0.1, dtype=dtype)
    if big:
        for b in range(cfg.num_blocks):
            head.parameters()[f"blocks.{b}.attn.qkv.weight"][:, :16] *= 12.0
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 6, 24)).astype(dtype)
    G = rng.normal(size=(7, 6, 12)).astype(dtype)
    y = head.forward(x)
    grads = head.backward(G, input_grad=True)

    tp = {k: torch.tensor(v.astype(np.float64), requires_grad=True)
          for k, v in head.parameters().items()}
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = _torch_forward(torch, cfg, tp, xt)
    (yt * torch.from_numpy(G.astype(np.float64))).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=rtol)
    for k, t in tp.items():
        ref = t.grad.numpy()
        scale = np.abs(ref).max() + 1e-12
        np.testing.assert_allclose(grads[k] / scale, ref / scale, rtol=0, atol=rtol * 10,
                                   err_msg=k)
    ref = xt.grad.numpy()
    np.testing.assert_allclose(grads["input"], ref, rtol=0, atol=rtol * 10 * np.abs(ref).max())


def test_batched_forward_equals_single_and_backward_sums():
    head = _perturbed_head(SMALL, scale=0.1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4, 16))
    G = rng.normal(size=(3, 5, 4, 6))
    y = head.forward(x)
    g = head.backward(G)
    total = {k: np.zeros_like(v) for k, v in head.parameters().items()}
    for b in range(3):
        yb = head.forward(x[b])
        np.testing.assert_allclose(yb, y[b], rtol=1e-12, atol=1e-12)
        for k, v in head.backward(G[b]).items():
            total[k] += v
    for k in total:
        np.testing.assert_allclose(g[k], total[k], rtol=1e-10, atol=1e-12)


def test_default_head_shapes_dtype_and_size():
    head = AttentionHead()
    n = head.num_parameters()
    assert 100_000 < n < 3_000_000
    assert n == sum(v.size for v in head.parameters().values())
    feat = np.random.default_rng(0).normal(size=(6, 5, 768)).astype(np.float64)
    y = head(feat)
    assert y.shape == (6, 5, 256) and y.dtype == np.float32
    assert np.isfinite(y).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_forward_equals_training_forward_and_backward_consumes_cache(dtype):
    # head(x) runs the attention without keeping its weights (the backbone's
    # kernel), forward(x) keeps them for backward: same embeddings.
    head = _perturbed_head(SMALL, scale=0.2, dtype=dtype)
    x = np.random.default_rng(3).normal(size=(2, 7, 9, 16))
    y = head.forward(x)
    np.testing.assert_allclose(head(x), y, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-13)
    head.backward(np.ones_like(y))
    with pytest.raises(ValueError, match="consumes the cache"):
        head.backward(np.ones_like(y))


def test_attention_sees_the_whole_grid_and_positions():
    # Changing one far-away token changes the embedding of another token
    # (global attention), and identical tokens at different places get
    # different embeddings (positional information).
    head = _perturbed_head(SMALL, scale=0.2)
    x = np.ones((5, 4, 16))
    y = head(x)
    assert np.abs(y[0, 0] - y[4, 3]).max() > 1e-3
    x2 = x.copy()
    x2[4, 3] += 1.0
    y2 = head(x2)
    assert np.abs(y2[0, 0] - y[0, 0]).max() > 1e-6


def test_sincos_embedding_values():
    pe = sincos_2d(3, 5, 8, np.float64)
    # f = 2 frequencies: pi and 64 pi
    r = (np.arange(3) + 0.5) / 3
    c = (np.arange(5) + 0.5) / 5
    np.testing.assert_allclose(pe[:, 0, 0], np.sin(np.pi * r))
    np.testing.assert_allclose(pe[:, 0, 1], np.sin(64 * np.pi * r))
    np.testing.assert_allclose(pe[:, 0, 3], np.cos(64 * np.pi * r))
    np.testing.assert_allclose(pe[0, :, 4], np.sin(np.pi * c))
    np.testing.assert_allclose(pe[0, :, 7], np.cos(64 * np.pi * c))


def test_input_validation():
    head = AttentionHead(SMALL)
    with pytest.raises(ValueError, match="feat"):
        head(np.zeros((5, 16)))
    with pytest.raises(ValueError, match="channels"):
        head(np.zeros((5, 4, 15)))
    with pytest.raises(ValueError, match="non-finite"):
        head(np.full((5, 4, 16), np.nan))
    with pytest.raises(TypeError, match="feat"):
        head(np.zeros((5, 4, 16), dtype=np.int32))
    with pytest.raises(ValueError, match="backward"):
        AttentionHead(SMALL).backward(np.zeros((5, 4, 6)))
    head.forward(np.zeros((5, 4, 16)))
    with pytest.raises(ValueError, match="grad_out"):
        head.backward(np.zeros((5, 4, 7)))
    with pytest.raises(ValueError, match="num_heads"):
        HeadConfig(dim=8, attn_dim=9, num_heads=2)
    with pytest.raises(ValueError, match="ln_eps"):
        HeadConfig(ln_eps=0.0)
    with pytest.raises(ValueError, match="dim"):
        HeadConfig(dim=10)


def test_save_load_roundtrip_and_errors(tmp_path):
    head = _perturbed_head(SMALL, dtype=np.float32)
    path = tmp_path / "h.npz"
    head.save(path)
    back = load_head(path)
    assert back.config == head.config
    x = np.random.default_rng(1).normal(size=(5, 4, 16)).astype(np.float32)
    np.testing.assert_array_equal(back(x), head(x))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_head(tmp_path / "nope.npz")
    other = HeadConfig(in_dim=16, dim=8, out_dim=6, num_heads=2, num_blocks=1, mlp_dim=12)
    with pytest.raises(ValueError, match="h.npz"):
        load_head(path, config=other)
    # a file whose arrays do not fit its declared configuration
    z = dict(np.load(path))
    z["param/out_proj.weight"] = np.zeros((8, 7), np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **z)
    with pytest.raises(ValueError, match="bad.npz.*out_proj.weight"):
        load_head(bad)
    z = dict(np.load(path))
    del z["param/pos_gain"]
    np.savez(bad, **z)
    with pytest.raises(ValueError, match="bad.npz.*pos_gain"):
        load_head(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_head(junk)
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(ValueError, match="bad.npz"):
        load_head(bad)


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
    tparams = [torch.tensor(params["a"].copy(), requires_grad=True),
               torch.tensor(params["b"].copy(), requires_grad=True)]
    opt = AdamW(params, lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)
    topt = torch.optim.AdamW(tparams, lr=3e-2, betas=(0.8, 0.95), eps=1e-6,
                             weight_decay=0.05, foreach=False)
    for step in range(6):
        ga, gb = rng.normal(size=(4, 3)) * (step + 1), rng.normal(size=5) * 1e-3
        opt.step({"a": ga, "b": gb})
        tparams[0].grad = torch.tensor(ga)
        tparams[1].grad = torch.tensor(gb)
        topt.step()
        np.testing.assert_allclose(params["a"], tparams[0].detach().numpy(), rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(params["b"], tparams[1].detach().numpy(), rtol=1e-12,
                                   atol=1e-14)


def test_adamw_state_roundtrip_and_errors():
    p = {"w": np.ones(3)}
    opt = AdamW(p, lr=0.1)
    opt.step({"w": np.array([1.0, -2.0, 3.0])})
    state = opt.state_dict()
    q = {"w": p["w"].copy()}
    opt2 = AdamW(q, lr=0.1)
    opt2.load_state_dict(state)
    opt.step({"w": np.ones(3)})
    opt2.step({"w": np.ones(3)})
    np.testing.assert_array_equal(p["w"], q["w"])
    with pytest.raises(ValueError, match="lr"):
        AdamW(p, lr=0)
    with pytest.raises(ValueError, match="missing"):
        opt.step({})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.ones(4)})
    with pytest.raises(ValueError, match="ckpt.npz"):
        AdamW({"w": np.ones(4)}).load_state_dict(state, source="ckpt.npz")

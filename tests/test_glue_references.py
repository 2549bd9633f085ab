"""Independent references for the Python glue around the kernels.

Each reference here is written from the published formulas with the
constants spelled out in the test (never read from the code under test), and
the inputs are chosen to expose a class of bug that a symmetric or centred
input would hide: a LayerNorm epsilon that only matters for small variances,
an AdamW update checked over several steps with weight decay, every manifest
field of the feature cache, a failed write that must leave nothing behind.
"""
import json
import math
import os

import numpy as np
import pytest

from geomatch.data.cache import FeatureCache
from geomatch.model.head import AttentionHead, HeadConfig
from geomatch.model.optim import AdamW
from geomatch.testing import reference

# ---------------------------------------------------------------- the head

LN_EPS = 1e-5          # the head's LayerNorm epsilon (docs/method.md, "attention head")


def _sincos_reference(h, w, dim):
    """2-D sine-cosine embedding, written out: for k < dim/4,
    omega_k = pi * 64**(k / (dim/4 - 1)), r = (row + 0.5) / h, c = (col + 0.5) / w;
    channels: sin(omega r), cos(omega r), sin(omega c), cos(omega c)."""
    f = dim // 4
    pe = np.zeros((h, w, dim))
    for row in range(h):
        for col in range(w):
            r, c = (row + 0.5) / h, (col + 0.5) / w
            for k in range(f):
                om = math.pi * 64.0 ** (k / (f - 1))
                pe[row, col, k] = math.sin(om * r)
                pe[row, col, f + k] = math.cos(om * r)
                pe[row, col, 2 * f + k] = math.sin(om * c)
                pe[row, col, 3 * f + k] = math.cos(om * c)
    return pe


def _layer_norm(x, g, b):
    return reference.layer_norm(x, g, b, LN_EPS)


_gelu_tanh = reference.gelu_tanh


def _head_reference(p, x, *, heads, blocks, attn_dim):
    h, w, _ = x.shape
    T = h * w
    z = x.reshape(T, -1) @ p["in_proj.weight"] + p["in_proj.bias"]
    z = z + _sincos_reference(h, w, z.shape[1]).reshape(T, -1) * p["pos_gain"]
    dh = attn_dim // heads
    for b in range(blocks):
        pre = f"blocks.{b}."
        a = _layer_norm(z, p[pre + "norm1.weight"], p[pre + "norm1.bias"])
        qkv = a @ p[pre + "attn.qkv.weight"] + p[pre + "attn.qkv.bias"]
        out = np.zeros((T, attn_dim))
        for hd in range(heads):
            sl = slice(hd * dh, (hd + 1) * dh)
            q = qkv[:, :attn_dim][:, sl]
            k = qkv[:, attn_dim:2 * attn_dim][:, sl]
            v = qkv[:, 2 * attn_dim:][:, sl]
            s = q @ k.T / math.sqrt(dh)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, sl] = (e / e.sum(axis=1, keepdims=True)) @ v
        z = z + out @ p[pre + "attn.proj.weight"] + p[pre + "attn.proj.bias"]
        bb = _layer_norm(z, p[pre + "norm2.weight"], p[pre + "norm2.bias"])
        u = bb @ p[pre + "mlp.fc1.weight"] + p[pre + "mlp.fc1.bias"]
        z = z + _gelu_tanh(u) @ p[pre + "mlp.fc2.weight"] + p[pre + "mlp.fc2.bias"]
    zo = _layer_norm(z, p["norm_out.weight"], p["norm_out.bias"])
    return (zo @ p["out_proj.weight"] + p["out_proj.bias"]).reshape(h, w, -1)


@pytest.mark.parametrize("scale", [1.0, 3e-3])
def test_head_forward_matches_a_numpy_reference_with_spelled_out_constants(scale):
    # scale 3e-3: the residual stream has a variance near 1e-5, where the
    # LayerNorm epsilon changes the output by tens of percent
    cfg = HeadConfig(in_dim=12, dim=8, out_dim=5, num_heads=2, num_blocks=2, mlp_dim=10,
                     attn_dim=6)
    head = AttentionHead(cfg, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    params = head.parameters()
    for k, v in params.items():
        v += rng.normal(scale=0.2, size=v.shape)       # no parameter left at its init
    params["in_proj.weight"] *= scale
    params["in_proj.bias"] *= scale
    params["pos_gain"] *= scale
    x = rng.normal(size=(5, 7, 12))                    # h != w: rows and columns not swapped
    ref = _head_reference(params, x, heads=2, blocks=2, attn_dim=6)
    np.testing.assert_allclose(head(x), ref, rtol=1e-9, atol=1e-12)


def test_adamw_matches_a_numpy_reference_over_several_steps():
    lr, b1, b2, eps, wd = 3e-2, 0.8, 0.95, 1e-6, 0.1
    rng = np.random.default_rng(3)
    p0 = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
    params = {k: v.copy() for k, v in p0.items()}
    opt = AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = {k: v.copy() for k, v in p0.items()}
    m = {k: np.zeros_like(v) for k, v in p0.items()}
    v2 = {k: np.zeros_like(v) for k, v in p0.items()}
    for t in range(1, 6):
        grads = {k: rng.normal(size=v.shape) * t for k, v in p0.items()}
        opt.step(grads)
        for k in ref:
            ref[k] = ref[k] - lr * wd * ref[k]
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v2[k] = b2 * v2[k] + (1 - b2) * grads[k] ** 2
            mhat = m[k] / (1 - b1 ** t)
            vhat = v2[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * mhat / (np.sqrt(vhat) + eps)
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ------------------------------------------------------------ feature cache

BASE_MANIFEST = {"backbone": "dinov2_vitb14", "weights_sha256": "a" * 64,
                 "resolution": [518, 518], "preprocess": "resize", "grid": [37, 37],
                 "dim": 768, "dtype": "float16"}
CHANGED = {"backbone": "dinov2_vits14", "weights_sha256": "b" * 64,
           "resolution": [840, 840], "preprocess": "pad", "grid": [60, 60], "dim": 384,
           "dtype": "float32"}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_cache_refuses_a_manifest_differing_in_any_one_field(tmp_path, field):
    FeatureCache.create(tmp_path / "c", BASE_MANIFEST)
    other = dict(BASE_MANIFEST, **{field: CHANGED[field]})
    with pytest.raises(ValueError, match=field):
        FeatureCache.create(tmp_path / "c", other)
    # the same manifest reopens
    assert FeatureCache.create(tmp_path / "c", BASE_MANIFEST).manifest["dim"] == 768


def test_cache_refuses_an_extra_field_that_differs(tmp_path):
    # e.g. the LoRA file the features were computed with
    FeatureCache.create(tmp_path / "c", dict(BASE_MANIFEST, lora="x" * 64))
    with pytest.raises(ValueError, match="lora"):
        FeatureCache.create(tmp_path / "c", dict(BASE_MANIFEST, lora="y" * 64))
    with pytest.raises(ValueError, match="lora"):
        FeatureCache.create(tmp_path / "c", BASE_MANIFEST)


def test_cache_get_refuses_a_file_of_another_dtype_or_shape(tmp_path):
    m = dict(BASE_MANIFEST, grid=[2, 3], dim=4)
    c = FeatureCache.create(tmp_path / "c", m)
    c.put("img", np.ones((2, 3, 4)))
    fn = [f for f in os.listdir(tmp_path / "c" / "features") if f.endswith(".npy")][0]
    path = tmp_path / "c" / "features" / fn
    np.save(path, np.ones((2, 3, 4), np.float32))    # right shape, wrong dtype
    with pytest.raises(ValueError, match="float32"):
        c.get("img")
    np.save(path, np.ones((3, 2, 4), np.float16))    # right dtype, wrong shape
    with pytest.raises(ValueError, match=r"\(3, 2, 4\)"):
        c.get("img")


def test_cache_corrupt_manifest_is_an_error_naming_the_file(tmp_path):
    c = FeatureCache.create(tmp_path / "c", BASE_MANIFEST)
    mpath = os.path.join(c.path, "manifest.json")
    with open(mpath, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        FeatureCache.open(tmp_path / "c")
    with open(mpath, "w") as f:
        json.dump(dict(BASE_MANIFEST, dim=-3), f)
    with pytest.raises(ValueError, match="manifest.json"):
        FeatureCache.open(tmp_path / "c")


def test_cache_failed_put_leaves_no_file_behind(tmp_path, monkeypatch):
    c = FeatureCache.create(tmp_path / "c", dict(BASE_MANIFEST, grid=[2, 2], dim=3))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError):
        c.put("img", np.ones((2, 2, 3)))
    monkeypatch.undo()
    assert os.listdir(tmp_path / "c" / "features") == []
    assert not c.has("img") and "img" not in c.keys()

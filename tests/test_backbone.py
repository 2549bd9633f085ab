"""Torch-free DINOv2 against a PyTorch reference built from the official
architecture (facebookresearch/dinov2), for every checkpoint layout."""
import json
import os
import struct

import numpy as np
import pytest

import geomatch as gm
from geomatch import _core
from geomatch.backbone import DinoV2Config, load_dinov2
from geomatch.backbone.dinov2 import interpolation_matrix

torch = pytest.importorskip("torch", reason="the reference is written with PyTorch (test extra)")
nn = torch.nn
F = torch.nn.functional

RTOL = 1e-4

# ---------------------------------------------------------------------------
# Compact PyTorch reference, following dinov2/models/vision_transformer.py and
# dinov2/layers/*.py (state-dict names identical to the official checkpoints).


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.lora = None  # GECO: (A_q, B_q, A_v, B_v) added to q and v

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x)
        if self.lora is not None:
            aq, bq, av, bv = self.lora
            qkv = qkv.clone()
            qkv[:, :, :c] += x @ aq.T @ bq.T
            qkv[:, :, -c:] += x @ av.T @ bv.T
        qkv = qkv.reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class RefLayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim))

    def forward(self, x):
        return x * self.gamma


class RefMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class RefSwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class RefBlock(nn.Module):
    def __init__(self, dim, heads, swiglu):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.ls1 = RefLayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (RefSwiGLU if swiglu else RefMlp)(dim, 4 * dim)
        self.ls2 = RefLayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class RefDinoV2(nn.Module):
    def __init__(self, dim=128, depth=2, heads=2, grid=4, reg=0, swiglu=False,
                 offset=0.1, antialias=False):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 14, 14)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.empty(1, reg, dim)) if reg else None
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList([RefBlock(dim, heads, swiglu) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.offset, self.antialias, self.reg = offset, antialias, reg
        gen = torch.Generator().manual_seed(dim * 7 + depth + reg)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm1.weight") or name.endswith("norm2.weight") \
                        or name == "norm.weight":
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                elif "gamma" in name:
                    p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
                elif p.dim() >= 2 and "token" not in name and "pos" not in name:
                    p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p[0].numel()))
                else:
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))

    def interpolate_pos_encoding(self, x, h_img, w_img):
        # dinov2's code names the height "w" and the width "h"
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and h_img == w_img:
            return self.pos_embed
        m = int(np.sqrt(n))
        h0, w0 = h_img // 14, w_img // 14
        kw = {}
        if self.offset:
            kw["scale_factor"] = ((h0 + self.offset) / m, (w0 + self.offset) / m)
        else:
            kw["size"] = (h0, w0)
        patch = self.pos_embed[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, mode="bicubic", antialias=self.antialias, **kw)
        assert patch.shape[-2:] == (h0, w0)
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, x.shape[-1])
        return torch.cat([self.pos_embed[:, :1], patch], dim=1)

    def forward(self, img, layers=None):
        b, _, hh, ww = img.shape
        x = self.patch_embed.proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(x, hh, ww)
        if self.reg:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(self.norm(x))
        return outs


def _ref_features(ref, pixels, layer=-1):
    with torch.no_grad():
        img = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        out = ref(img)[layer].numpy()
    h, w = pixels.shape[1] // 14, pixels.shape[2] // 14
    return out[:, 1 + ref.reg:].reshape(-1, h, w, out.shape[-1]), out[:, 0]


def _close(a, b, rtol=RTOL):
    err = np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def _small_config(**kw):
    base = dict(embed_dim=128, depth=2, num_heads=2, pos_grid=4)
    base.update(kw)
    return DinoV2Config(**base)


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(3)
    return rng.standard_normal((2, 56, 56, 3)).astype(np.float32)


# ---------------------------------------------------------------------------
# official torch.save layout


@pytest.mark.parametrize("shape", [(56, 56), (70, 84), (42, 28)])
def test_official_checkpoint_matches_torch(tmp_path, shape):
    ref = RefDinoV2()
    path = tmp_path / "dinov2_small_pretrain.pth"
    torch.save(ref.state_dict(), path)
    model = load_dinov2(path)  # architecture inferred from the shapes
    assert model.config.interpolation == "offset" and model.config.depth == 2
    rng = np.random.default_rng(shape[0])
    px = rng.standard_normal((2, *shape, 3)).astype(np.float32)
    feats, cls = model.features(px, return_class_token=True)
    want, want_cls = _ref_features(ref, px)
    assert feats.shape == (2, shape[0] // 14, shape[1] // 14, 128)
    assert feats.dtype == np.float32
    _close(feats, want)
    _close(cls, want_cls)
    # single image, intermediate layer 0 (normalized by the final norm)
    f0 = model.features(px[1], layers=[0, -1])
    w0, _ = _ref_features(ref, px[1:], layer=0)
    _close(f0[0], w0[0])
    _close(f0[1], want[1])


def test_official_checkpoint_with_registers_and_swiglu(tmp_path):
    ref = RefDinoV2(reg=4, swiglu=True, offset=0.0, antialias=True)
    path = tmp_path / "reg.pth"
    torch.save(ref.state_dict(), path)
    model = load_dinov2(path)
    assert model.config.num_register_tokens == 4 and model.config.ffn == "swiglu"
    assert model.config.interpolation == "antialias"
    px = np.random.default_rng(1).standard_normal((1, 98, 70, 3)).astype(np.float32)
    feats, cls = model.features(px, return_class_token=True)
    want, want_cls = _ref_features(ref, px)
    _close(feats, want)
    _close(cls, want_cls)


def test_explicit_config_with_other_head_count(tmp_path, pixels):
    ref = RefDinoV2(dim=64, heads=4)
    torch.save(ref.state_dict(), tmp_path / "h4.pth")
    model = load_dinov2(tmp_path / "h4.pth", config=_small_config(embed_dim=64, num_heads=4))
    _close(model.features(pixels), _ref_features(ref, pixels)[0])


def test_half_precision_checkpoint(tmp_path, pixels):
    ref = RefDinoV2()
    sd = {k: v.to(torch.bfloat16) if "blocks.0" in k else v.half() for k, v in
          ref.state_dict().items()}
    path = tmp_path / "half.pth"
    torch.save(sd, path)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    _close(load_dinov2(path).features(pixels), _ref_features(ref, pixels)[0])


def test_nested_and_strided_tensors(tmp_path, pixels):
    ref = RefDinoV2()
    sd = dict(ref.state_dict())
    w = sd["blocks.1.mlp.fc1.weight"]
    sd["blocks.1.mlp.fc1.weight"] = w.T.contiguous().T  # non-contiguous strides
    torch.save({"model": sd, "epoch": 3}, tmp_path / "nested.pth")
    _close(load_dinov2(tmp_path / "nested.pth").features(pixels), _ref_features(ref, pixels)[0])


# ---------------------------------------------------------------------------
# Hugging Face layout


def _to_hf(sd, depth):
    hf = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"],
    }
    if "register_tokens" in sd:
        hf["embeddings.register_tokens"] = sd["register_tokens"]
    for i in range(depth):
        b, o = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[b + f"attn.qkv.{kind}"].chunk(3, dim=0)
            hf[o + f"attention.attention.query.{kind}"] = q
            hf[o + f"attention.attention.key.{kind}"] = k
            hf[o + f"attention.attention.value.{kind}"] = v
            hf[o + f"attention.output.dense.{kind}"] = sd[b + f"attn.proj.{kind}"]
            hf[o + f"norm1.{kind}"] = sd[b + f"norm1.{kind}"]
            hf[o + f"norm2.{kind}"] = sd[b + f"norm2.{kind}"]
            if b + "mlp.fc1.weight" in sd:
                hf[o + f"mlp.fc1.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
                hf[o + f"mlp.fc2.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
            else:
                hf[o + f"mlp.weights_in.{kind}"] = sd[b + f"mlp.w12.{kind}"]
                hf[o + f"mlp.weights_out.{kind}"] = sd[b + f"mlp.w3.{kind}"]
        hf[o + "layer_scale1.lambda1"] = sd[b + "ls1.gamma"]
        hf[o + "layer_scale2.lambda1"] = sd[b + "ls2.gamma"]
    return {k: v.contiguous() for k, v in hf.items()}


@pytest.mark.parametrize("registers", [False, True])
def test_hf_directory_matches_torch(tmp_path, registers):
    from safetensors.torch import save_file

    # 4 heads of 16: the head count comes from config.json
    ref = RefDinoV2(dim=64, heads=4, reg=4 if registers else 0, swiglu=registers, offset=0.0,
                    antialias=registers)
    save_file(_to_hf(ref.state_dict(), 2), str(tmp_path / "model.safetensors"))
    cfg = {"model_type": "dinov2_with_registers" if registers else "dinov2",
           "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "mlp_ratio": 4, "use_swiglu_ffn": registers, "image_size": 56, "patch_size": 14,
           "layer_norm_eps": 1e-6}
    if registers:
        cfg["num_register_tokens"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = load_dinov2(tmp_path)
    px = np.random.default_rng(5).standard_normal((1, 84, 56, 3)).astype(np.float32)
    _close(model.features(px), _ref_features(ref, px)[0])


def test_own_safetensors_reader_handles_dtypes(tmp_path):
    from geomatch.backbone.checkpoints import read_safetensors
    from safetensors.torch import save_file

    t = {"a": torch.randn(3, 4), "b": torch.randn(5).half(), "c": torch.randn(2, 2).bfloat16(),
         "d": torch.randn(2).double()}
    save_file(t, str(tmp_path / "x.safetensors"))
    got = read_safetensors(tmp_path / "x.safetensors")
    for k, v in t.items():
        np.testing.assert_array_equal(got[k].astype(np.float64), v.double().numpy())


# ---------------------------------------------------------------------------
# GECO LoRA


def test_geco_lora_merged_matches_unmerged_torch(tmp_path, pixels):
    ref = RefDinoV2()
    base = tmp_path / "base.pth"
    torch.save(ref.state_dict(), base)
    gen = torch.Generator().manual_seed(9)
    r, lora = 3, {}
    for i, blk in enumerate(ref.blocks):
        fac = [0.2 * torch.randn(r, 128, generator=gen), 0.2 * torch.randn(128, r, generator=gen),
               0.2 * torch.randn(r, 128, generator=gen), 0.2 * torch.randn(128, r, generator=gen)]
        blk.attn.lora = fac
        lora[f"w_a_{2 * i:03d}"], lora[f"w_b_{2 * i:03d}"] = fac[0], fac[1]
        lora[f"w_a_{2 * i + 1:03d}"], lora[f"w_b_{2 * i + 1:03d}"] = fac[2], fac[3]
    lpath = tmp_path / "best_lora_weights.pth"
    torch.save(lora, lpath)
    want = _ref_features(ref, pixels)[0]
    _close(load_dinov2(base, lora=lpath).features(pixels), want)
    # base weights and LoRA factors in one file are merged too
    both = tmp_path / "both.pth"
    torch.save({**ref.state_dict(), **lora}, both)
    _close(load_dinov2(both).features(pixels), want)
    with pytest.raises(ValueError, match="LoRA"):
        load_dinov2(lpath)
    del lora["w_b_003"]
    lora["w_a_000"] = torch.zeros(r, 65)
    torch.save(lora, lpath)
    with pytest.raises(ValueError) as ei:
        load_dinov2(base, lora=lpath)
    assert "w_b_003" in str(ei.value) and "w_a_000" in str(ei.value)
    assert str(lpath) in str(ei.value)


def test_lora_and_weights_in_safetensors_are_read_by_content(tmp_path, pixels):
    """QA: a LoRA file in safetensors format was refused as 'not a torch zip
    checkpoint ... or use a safetensors file'; the reader is chosen by the
    file's content, not its name."""
    from safetensors.numpy import save_file

    ref = RefDinoV2()
    base = tmp_path / "base.pth"
    torch.save(ref.state_dict(), base)
    rng = np.random.default_rng(4)
    lora = {}
    for i in range(2 * len(ref.blocks)):
        lora[f"w_a_{i:03d}"] = (0.2 * rng.normal(size=(2, 128))).astype(np.float32)
        lora[f"w_b_{i:03d}"] = (0.2 * rng.normal(size=(128, 2))).astype(np.float32)
    pth = tmp_path / "lora.pth"
    torch.save({k: torch.from_numpy(v) for k, v in lora.items()}, pth)
    st = tmp_path / "lora.safetensors"
    save_file(lora, str(st))
    want = load_dinov2(base, lora=pth).features(pixels)
    np.testing.assert_array_equal(load_dinov2(base, lora=st).features(pixels), want)
    # official-named weights in a safetensors file without the .safetensors suffix
    odd = tmp_path / "dinov2-weights.bin"
    save_file({k: v.numpy() for k, v in ref.state_dict().items()}, str(odd))
    np.testing.assert_array_equal(load_dinov2(odd, lora=st).features(pixels), want)


# ---------------------------------------------------------------------------
# positional-embedding interpolation against torch.nn.functional.interpolate


@pytest.mark.parametrize("n_in,n_out", [(4, 6), (37, 60), (37, 37), (6, 4), (5, 2)])
@pytest.mark.parametrize("mode", ["size", "offset", "antialias"])
def test_interpolation_matrix_matches_torch(n_in, n_out, mode):
    rng = np.random.default_rng(n_in * 100 + n_out)
    grid = rng.standard_normal((n_in, n_in))
    t = torch.from_numpy(grid)[None, None]
    if mode == "offset":
        sf = (n_out + 0.1) / n_in
        want = F.interpolate(t, scale_factor=(sf, sf), mode="bicubic")[0, 0].numpy()
        w = interpolation_matrix(n_in, n_out, "size", sf)
    else:
        want = F.interpolate(t, size=(n_out, n_out), mode="bicubic",
                             antialias=mode == "antialias")[0, 0].numpy()
        w = interpolation_matrix(n_in, n_out, mode)
    np.testing.assert_allclose(w @ grid @ w.T, want, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# errors


def test_errors_list_every_bad_tensor(tmp_path):
    ref = RefDinoV2()
    sd = dict(ref.state_dict())
    del sd["blocks.0.norm1.bias"], sd["norm.weight"]
    sd["blocks.1.attn.proj.weight"] = torch.zeros(128, 127)
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(511, 128)
    sd["head.weight"] = torch.zeros(3)
    sd["extra_thing"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as ei:
        load_dinov2(path, config=_small_config())
    msg = str(ei.value)
    for name in ("blocks.0.norm1.bias", "norm.weight", "blocks.1.attn.proj.weight",
                 "blocks.0.mlp.fc1.weight", "head.weight", "extra_thing"):
        assert name in msg
    assert str(path) in msg
    # a ViT-S/14 checkpoint name checks the file against the real architecture
    torch.save(ref.state_dict(), path)
    with pytest.raises(ValueError, match="cls_token"):
        load_dinov2(path, model="vits14")


def test_missing_paths_and_bad_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_dinov2(missing)
    torch.save(RefDinoV2().state_dict(), tmp_path / "ok.pth")
    with pytest.raises(FileNotFoundError, match="lora_missing"):
        load_dinov2(tmp_path / "ok.pth", lora=tmp_path / "lora_missing.pth")
    (tmp_path / "hf").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_dinov2(tmp_path / "hf")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_dinov2(junk)
    st = tmp_path / "junk.safetensors"
    st.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_dinov2(st)
    with pytest.raises(ValueError, match="unknown DINOv2 model"):
        load_dinov2(tmp_path / "ok.pth", model="vitz14")


def test_restricted_unpickler_refuses_code(tmp_path):
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="posix.system|os.system|system"):
        load_dinov2(path)


def test_bad_pixels(tmp_path):
    torch.save(RefDinoV2().state_dict(), tmp_path / "ok.pth")
    model = load_dinov2(tmp_path / "ok.pth")
    with pytest.raises(ValueError, match="multiples of 14"):
        model.features(np.zeros((50, 56, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.features(np.zeros((56, 56), np.float32))
    with pytest.raises(TypeError, match="float"):
        model.features(np.zeros((56, 56, 3), np.uint8))
    bad = np.zeros((56, 56, 3), np.float32)
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.features(bad)
    with pytest.raises(ValueError, match="layers"):
        model.features(np.zeros((56, 56, 3), np.float32), layers=[5])


def test_thread_count_does_not_change_features(tmp_path, pixels, at_threads):
    torch.save(RefDinoV2().state_dict(), tmp_path / "ok.pth")
    model = load_dinov2(tmp_path / "ok.pth")
    a, b = at_threads(lambda: model.features(pixels))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# the C kernels against slow NumPy oracles


def _erf(x):
    from math import erf
    return np.vectorize(erf)(x)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("n", [1, 3, 130])
def test_nn_linear_kernel(dtype, tol, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 40)).astype(dtype)
    w = rng.standard_normal((33, 40)).astype(dtype) * 0.3
    b = rng.standard_normal(33).astype(dtype)
    t = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(_core.nn_linear(x, w, b), t, rtol=tol, atol=tol)
    gelu = 0.5 * t * (1 + _erf(t / np.sqrt(2)))
    np.testing.assert_allclose(_core.nn_linear(x, w, b, act=1), gelu, rtol=tol, atol=tol * 5)
    y = rng.standard_normal((n, 33)).astype(dtype)
    y0 = y.astype(np.float64).copy()
    _core.nn_linear(x, w, b, out=y, accumulate=True)
    np.testing.assert_allclose(y, y0 + t, rtol=tol, atol=tol)
    # strided (non-contiguous) input is accepted
    xs = np.asfortranarray(x)
    np.testing.assert_allclose(_core.nn_linear(xs, w, None), t - b, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="weight"):
        _core.nn_linear(x, w[:, :5], b)
    with pytest.raises(ValueError, match="bias"):
        _core.nn_linear(x, w, b[:4])
    with pytest.raises(ValueError, match="out"):
        _core.nn_linear(x, w, b, out=np.empty((n, 5), dtype))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_nn_layernorm_and_swiglu_kernels(dtype, tol):
    rng = np.random.default_rng(0)
    x = (3 + 2 * rng.standard_normal((7, 37))).astype(dtype)
    g, b = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-6) * g + b
    np.testing.assert_allclose(_core.nn_layernorm(x, g, b, 1e-6), want, rtol=tol, atol=tol)
    h = rng.standard_normal((5, 18)).astype(dtype)
    h64 = h.astype(np.float64)
    sw = h64[:, :9] / (1 + np.exp(-h64[:, :9])) * h64[:, 9:]
    np.testing.assert_allclose(_core.nn_swiglu(h), sw, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="even"):
        _core.nn_swiglu(h[:, :7])


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("batch,n", [(1, 5), (2, 131), (3, 257)])
def test_nn_attention_kernel(dtype, tol, batch, n):
    rng = np.random.default_rng(n)
    heads, hd = 3, 8
    qkv = (2 * rng.standard_normal((batch, n, 3 * heads * hd))).astype(dtype)
    q, k, v = qkv.astype(np.float64).reshape(batch, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = (p @ v).transpose(0, 2, 1, 3).reshape(batch, n, heads * hd)
    before = gm.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            gm.set_num_threads(t)
            outs.append(_core.nn_attention(qkv, heads))
    finally:
        gm.set_num_threads(before)
    np.testing.assert_allclose(outs[0], want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(_core.nn_attention(qkv[0], heads), want[0], rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="heads"):
        _core.nn_attention(qkv, 5)


def test_released_architectures():
    from geomatch.backbone import DinoV2Config

    g = DinoV2Config.from_name("dinov2_vitg14_reg4_pretrain")
    s = g.expected_shapes()
    assert (g.embed_dim, g.depth, g.num_heads, g.num_register_tokens) == (1536, 40, 24, 4)
    assert s["blocks.39.mlp.w12.weight"] == (8192, 1536) and s["blocks.0.mlp.w3.weight"] == (1536, 4096)
    assert s["pos_embed"] == (1, 1370, 1536) and s["register_tokens"] == (1, 4, 1536)
    assert g.interpolation == "antialias"
    b = DinoV2Config.from_name("vitb14")
    assert b.interpolation == "offset" and b.interpolate_offset == 0.1
    assert b.expected_shapes()["blocks.11.mlp.fc1.weight"] == (3072, 768)
    assert DinoV2Config.from_name("vitl14").expected_shapes()["blocks.23.attn.qkv.weight"] == (
        3072, 1024)
    assert DinoV2Config.from_name("vits14").head_dim == 64

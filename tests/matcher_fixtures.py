"""Small real inputs for the Matcher tests: two image files and random DINOv2
weights in each supported on-disk format (written here, not by geomatch)."""
import json
import os

import numpy as np

TINY = dict(embed_dim=64, depth=2, num_heads=1, pos_grid=4)


def tiny_state(seed=0, embed_dim=64, depth=2, pos_grid=4):
    """Random reference-layout (official naming) DINOv2 state, float32."""
    from geomatch.backbone.dinov2 import DinoV2Config

    cfg = DinoV2Config(embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // 64),
                       pos_grid=pos_grid)
    rng = np.random.default_rng(seed)
    state = {}
    for k, shape in cfg.expected_shapes().items():
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            state[k] = (1 + 0.1 * rng.normal(size=shape)).astype(np.float32)
        elif "ls1" in k or "ls2" in k:
            state[k] = np.full(shape, 0.5, np.float32)
        else:
            state[k] = (rng.normal(size=shape) * 0.2).astype(np.float32)
    return state


def write_weights(tmp_path, fmt, seed=0, **kw):
    """Write tiny random weights as 'pth' (torch.save), 'safetensors' or 'hf'
    (config.json + model.safetensors with Hugging Face names)."""
    state = tiny_state(seed, **kw)
    if fmt == "pth":
        import torch

        path = os.path.join(tmp_path, "tiny.pth")
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
        return path
    from safetensors.numpy import save_file

    if fmt == "safetensors":
        path = os.path.join(tmp_path, "tiny.safetensors")
        save_file(state, path)
        return path
    assert fmt == "hf"
    d = kw.get("embed_dim", 64)
    depth = kw.get("depth", 2)
    hf = {}
    simple = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
              "pos_embed": "embeddings.position_embeddings",
              "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
              "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
              "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    for k, v in state.items():
        if k in simple:
            hf[simple[k]] = v
            continue
        parts = k.split(".")
        i, rest = parts[1], ".".join(parts[2:])
        pre = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = parts[-1]
            q, kk, vv = np.split(v, 3, axis=0)
            for nm, a in (("query", q), ("key", kk), ("value", vv)):
                hf[pre + f"attention.attention.{nm}.{kind}"] = np.ascontiguousarray(a)
        elif rest.startswith("ls"):
            hf[pre + f"layer_scale{rest[2]}.lambda1"] = v
        else:
            m = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense",
                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
            mod, kind = rest.rsplit(".", 1)
            hf[pre + m[mod] + "." + kind] = v
    out = os.path.join(tmp_path, "hf")
    os.makedirs(out, exist_ok=True)
    save_file(hf, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "dinov2", "hidden_size": d, "num_hidden_layers": depth,
                   "num_attention_heads": max(1, d // 64), "mlp_ratio": 4, "patch_size": 14,
                   "image_size": 14 * kw.get("pos_grid", 4), "layer_norm_eps": 1e-6}, f)
    return out


def write_images(tmp_path, seed=0, sizes=((96, 72), (80, 100))):
    """Two smooth colour images (PNG and JPEG) with a bright blob each; returns paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for n, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.zeros((h, w, 3))
        for c in range(3):
            fx, fy, ph = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6)]
            img[..., c] = 0.5 + 0.4 * np.sin(fx * xx + fy * yy + ph)
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        img += 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 * w * h))[..., None]
        arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        ext = "png" if n == 0 else "jpg"
        p = os.path.join(tmp_path, f"img{n}.{ext}")
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths

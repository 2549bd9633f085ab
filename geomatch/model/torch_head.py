"""A PyTorch definition of geomatch's attention head (standalone file).

This file imports nothing from geomatch: :func:`geomatch.model.export.export_head`
copies it next to the exported ``head.safetensors`` so that a trained head can
be used in any PyTorch code::

    from geomatch_head import GeomatchHead
    head = GeomatchHead.from_safetensors("head.safetensors")
    emb = head(feats)            # (B, h, w, D_in) channel-last -> (B, h, w, E)

Architecture (see geomatch's ``model/head.py``): input projection plus a
learned gain times a fixed 2-D sine-cosine embedding of the normalized patch
centres, pre-norm transformer blocks (multi-head softmax attention with
[q|k|v] projections, tanh-GELU MLP), a final LayerNorm and output projection.
Linear weights follow ``torch.nn.Linear`` (out, in).
"""
import json
import math

import torch
from torch import nn


def sincos_2d(h, w, dim, dtype=torch.float32):
    """Fixed (h, w, dim) embedding: sin/cos of the row then of the column
    centre ((i + 0.5) / h), dim/4 frequencies pi * 64**(k / (dim/4 - 1))."""
    f = dim // 4
    omega = (torch.tensor([math.pi], dtype=torch.float64) if f == 1 else
             math.pi * 64.0 ** (torch.arange(f, dtype=torch.float64) / (f - 1)))
    r = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    c = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    ar, ac = r[:, None] * omega, c[:, None] * omega
    pe = torch.empty(h, w, dim, dtype=torch.float64)
    pe[:, :, 0 * f:1 * f] = torch.sin(ar)[:, None, :]
    pe[:, :, 1 * f:2 * f] = torch.cos(ar)[:, None, :]
    pe[:, :, 2 * f:3 * f] = torch.sin(ac)[None, :, :]
    pe[:, :, 3 * f:4 * f] = torch.cos(ac)[None, :, :]
    return pe.to(dtype)


class Attention(nn.Module):
    def __init__(self, dim, attn_dim, heads):
        super().__init__()
        self.heads, self.attn_dim = heads, attn_dim
        self.qkv = nn.Linear(dim, 3 * attn_dim)
        self.proj = nn.Linear(attn_dim, dim)

    def forward(self, x):                      # (B, T, dim)
        B, T, _ = x.shape
        hd = self.attn_dim // self.heads
        q, k, v = self.qkv(x).split(self.attn_dim, dim=-1)
        q, k, v = (t.reshape(B, T, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, T, self.attn_dim))


class Block(nn.Module):
    def __init__(self, dim, attn_dim, heads, mlp_dim, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, attn_dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, mlp_dim))
        self.mlp.add_module("act", nn.GELU(approximate="tanh"))
        self.mlp.add_module("fc2", nn.Linear(mlp_dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GeomatchHead(nn.Module):
    """geomatch's attention head; ``config`` holds the HeadConfig fields."""

    def __init__(self, config):
        super().__init__()
        c = dict(config)
        self.config = c
        attn_dim = c.get("attn_dim") or c["dim"]
        self.in_proj = nn.Linear(c["in_dim"], c["dim"])
        self.pos_gain = nn.Parameter(torch.full((c["dim"],), float(c.get("pos_gain_init", 0.1))))
        self.blocks = nn.ModuleList(
            Block(c["dim"], attn_dim, c["num_heads"], c["mlp_dim"], c.get("ln_eps", 1e-5))
            for _ in range(c["num_blocks"]))
        self.norm_out = nn.LayerNorm(c["dim"], eps=c.get("ln_eps", 1e-5))
        self.out_proj = nn.Linear(c["dim"], c["out_dim"])

    def forward(self, feat):
        """(h, w, D_in) or (B, h, w, D_in) channel-last -> same leading shape with E."""
        single = feat.dim() == 3
        x = feat[None] if single else feat
        B, h, w, _ = x.shape
        z = self.in_proj(x.reshape(B, h * w, -1))
        z = z + (sincos_2d(h, w, self.config["dim"], z.dtype).to(z.device).reshape(h * w, -1)
                 * self.pos_gain)
        for blk in self.blocks:
            z = blk(z)
        y = self.out_proj(self.norm_out(z)).reshape(B, h, w, -1)
        return y[0] if single else y

    @classmethod
    def from_safetensors(cls, path):
        """Load a head written by geomatch (``head.safetensors``)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        if "geomatch_head_config" not in meta:
            raise ValueError(f"{path}: not a geomatch head (no geomatch_head_config metadata)")
        module = cls(json.loads(meta["geomatch_head_config"]))
        state = load_file(path)
        module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
        return module

"""DINOv2 ViT inference in NumPy + geomatch's C kernels (no torch).

The architecture follows facebookresearch/dinov2
(``dinov2/models/vision_transformer.py``): a 14x14 patch embedding, a class
token (plus optional register tokens), learned positional embeddings
interpolated bicubically to the input grid, pre-norm blocks
``x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))`` with LayerScale, an
MLP with exact GELU (SwiGLU for ViT-g), and a final LayerNorm.  The output is
the normalized patch tokens of the last block as an (h, w, D) channel-last
map.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import checkpoints as ck

__all__ = ["DinoV2Config", "DinoV2", "load_dinov2", "read_dinov2", "MODEL_NAMES",
           "PRECISIONS", "bf16_available",
           "interpolation_matrix", "interpolate_pos_embed"]

# name -> (embed_dim, depth, heads, ffn)
_ARCHS = {
    "vits14": (384, 12, 6, "mlp"),
    "vitb14": (768, 12, 12, "mlp"),
    "vitl14": (1024, 24, 16, "mlp"),
    "vitg14": (1536, 40, 24, "swiglu"),
}
MODEL_NAMES = tuple(list(_ARCHS) + [n + "_reg" for n in _ARCHS])


@dataclass(frozen=True)
class DinoV2Config:
    """Hyper-parameters of a DINOv2 ViT.

    ``pos_grid`` is the side of the square positional-embedding grid (37 for
    the released 518-pixel models).  ``interpolation`` says how it is resized
    to other grids, as the source implementation does it:
    ``"offset"`` (official models without registers: bicubic with
    scale_factor (n + 0.1) / pos_grid), ``"antialias"`` (official register
    models and HF ``dinov2_with_registers``: bicubic to the size, antialias),
    ``"size"`` (HF ``dinov2``: bicubic to the size, no antialias).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    num_register_tokens: int = 0
    patch_size: int = 14
    pos_grid: int = 37
    layer_norm_eps: float = 1e-6
    layerscale: bool = True
    interpolation: str = "offset"
    interpolate_offset: float = 0.1

    def __post_init__(self):
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.interpolation not in ("offset", "antialias", "size"):
            raise ValueError("interpolation must be 'offset', 'antialias' or 'size', "
                             f"got {self.interpolation!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be a multiple of num_heads")
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "pos_grid"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_name(cls, name: str) -> "DinoV2Config":
        """Config of a released model: ``vits14``, ``vitb14``, ``vitl14``,
        ``vitg14``, each optionally with ``_reg`` (4 registers); the prefix
        ``dinov2_`` and the suffixes ``_reg4`` / ``_pretrain`` are accepted."""
        key = name.lower().replace("dinov2_", "").replace("_pretrain", "").replace("_reg4", "_reg")
        key = key.replace("vit_small", "vits14").replace("vit_base", "vitb14")
        reg = key.endswith("_reg")
        base = key[: -len("_reg")] if reg else key
        if base not in _ARCHS:
            raise ValueError(f"unknown DINOv2 model {name!r}; expected one of "
                             + ", ".join(MODEL_NAMES))
        d, depth, heads, ffn = _ARCHS[base]
        if reg:
            return cls(d, depth, heads, 4.0, ffn, 4, interpolation="antialias",
                       interpolate_offset=0.0)
        return cls(d, depth, heads, 4.0, ffn, 0)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        h = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":
            h = (int(h * 2 / 3) + 7) // 8 * 8
        return h

    @property
    def name(self) -> str:
        for key, (d, depth, heads, ffn) in _ARCHS.items():
            if (d, depth, heads, ffn) == (self.embed_dim, self.depth, self.num_heads, self.ffn):
                return key + ("_reg" if self.num_register_tokens else "")
        return (f"vit-d{self.embed_dim}-l{self.depth}-h{self.num_heads}"
                + (f"-reg{self.num_register_tokens}" if self.num_register_tokens else ""))

    def expected_shapes(self) -> Dict[str, tuple]:
        """Tensor names and shapes of a state dict in the official layout."""
        d, p, h = self.embed_dim, self.patch_size, self.hidden_dim
        s = {
            "cls_token": (1, 1, d),
            "pos_embed": (1, self.pos_grid ** 2 + 1, d),
            "mask_token": (1, d),
            "patch_embed.proj.weight": (d, 3, p, p),
            "patch_embed.proj.bias": (d,),
            "norm.weight": (d,),
            "norm.bias": (d,),
        }
        if self.num_register_tokens:
            s["register_tokens"] = (1, self.num_register_tokens, d)
        for i in range(self.depth):
            b = f"blocks.{i}."
            s.update({
                b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            })
            if self.layerscale:
                s[b + "ls1.gamma"] = (d,)
                s[b + "ls2.gamma"] = (d,)
            if self.ffn == "mlp":
                s.update({b + "mlp.fc1.weight": (h, d), b + "mlp.fc1.bias": (h,),
                          b + "mlp.fc2.weight": (d, h), b + "mlp.fc2.bias": (d,)})
            else:
                s.update({b + "mlp.w12.weight": (2 * h, d), b + "mlp.w12.bias": (2 * h,),
                          b + "mlp.w3.weight": (d, h), b + "mlp.w3.bias": (d,)})
        return s


# --------------------------------------------------------------------------
# positional-embedding interpolation (PyTorch's bicubic rules, re-derived)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter a, at |x| < 2."""
    x = np.abs(x)
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, w1, np.where(x < 2, w2, 0.0))


def interpolation_matrix(n_in: int, n_out: int, mode: str = "size",
                         scale_factor: Optional[float] = None) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D bicubic interpolation weights.

    ``mode="size"``/``"offset"``: PyTorch's ``interpolate(mode="bicubic",
    align_corners=False)``: source position (i + 0.5) * r - 0.5 with
    r = 1 / scale_factor when a scale factor is given, else n_in / n_out;
    Keys kernel a = -0.75 on the 4 neighbours, indices clamped to the border.
    ``mode="antialias"``: the ``antialias=True`` path: Keys kernel a = -0.5
    stretched by max(r, 1), centred at (i + 0.5) * r, support truncated at the
    borders and the weights renormalized.
    """
    w = np.zeros((n_out, n_in), dtype=np.float64)
    if mode == "antialias":
        r = n_in / n_out
        support = 2.0 * r if r >= 1.0 else 2.0
        inv = 1.0 / r if r >= 1.0 else 1.0
        for i in range(n_out):
            center = r * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            j = np.arange(lo, hi)
            k = _cubic((j - center + 0.5) * inv, -0.5)
            tot = k.sum()
            w[i, lo:hi] = k / tot if tot != 0 else k
        return w
    r = (1.0 / scale_factor) if scale_factor else n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * r - 0.5
        i0 = math.floor(src)
        t = src - i0
        coef = _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)
        for k in range(4):
            w[i, min(max(i0 - 1 + k, 0), n_in - 1)] += coef[k]
    return w


def interpolate_pos_embed(pos_embed: np.ndarray, config: DinoV2Config, h: int,
                          w: int) -> np.ndarray:
    """Positional embeddings (1 + h*w, D), float32, of an h x w patch grid from
    the learned (1 + m*m, D) table, interpolated as the source implementation
    does (``config.interpolation``); shared by the C and the torch engine."""
    m = config.pos_grid
    pos_embed = np.asarray(pos_embed, dtype=np.float32).reshape(1 + m * m, -1)
    if h * w == m * m and h == w:
        return pos_embed
    patch = pos_embed[1:].astype(np.float64).reshape(m, m, -1)
    if config.interpolation == "offset":
        wr = interpolation_matrix(m, h, "size", (h + config.interpolate_offset) / m)
        wc = interpolation_matrix(m, w, "size", (w + config.interpolate_offset) / m)
    else:
        wr = interpolation_matrix(m, h, config.interpolation)
        wc = interpolation_matrix(m, w, config.interpolation)
    grid = np.einsum("ai,ijd,bj->abd", wr, patch, wc, optimize=True)
    return np.concatenate([pos_embed[:1], grid.reshape(h * w, -1)]).astype(np.float32)


def check_pixels(pixels, patch_size: int) -> np.ndarray:
    """A network input as a (B, H, W, 3) float array, checked: float dtype,
    H and W positive multiples of ``patch_size`` of at most ``MAX_INPUT_SIZE``,
    finite values."""
    arr = np.asarray(pixels)
    if arr.dtype.kind != "f":
        raise TypeError(f"pixels must be a float array (normalized image), got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError("pixels must have shape (H, W, 3) or (B, H, W, 3), got "
                         f"{np.shape(pixels)}")
    p = patch_size
    if arr.shape[1] % p or arr.shape[2] % p or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"pixels height and width must be positive multiples of {p}, "
                         f"got {arr.shape[1]}x{arr.shape[2]}")
    from .preprocess import MAX_INPUT_SIZE

    if max(arr.shape[1], arr.shape[2]) > MAX_INPUT_SIZE:
        raise ValueError(f"pixels height and width must be at most {MAX_INPUT_SIZE} "
                         f"(docs/limits.md), got {arr.shape[1]}x{arr.shape[2]}")
    if not np.isfinite(arr).all():
        raise ValueError("pixels contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------
# the model


def _core():
    from .. import _core
    return _core


#: compute precisions of the C engine
PRECISIONS = ("float32", "bfloat16")


def normalize_precision(precision) -> str:
    """``"float32"`` (also ``"fp32"``, ``"f32"``) or ``"bfloat16"`` (also
    ``"bf16"``); a clear ValueError otherwise."""
    key = str(precision).lower()
    key = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}.get(key, key)
    if key not in PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'bf16' (bfloat16), got {precision!r}")
    return key


def check_precision(precision) -> str:
    """:func:`normalize_precision`, and for bfloat16 a ValueError naming the
    reason when this CPU cannot run it (as the torch engine refuses a
    precision its device lacks)."""
    precision = normalize_precision(precision)
    if precision == "bfloat16" and not bf16_available():
        raise ValueError(
            "precision='bf16' needs a CPU with AVX512-BF16 (this one has none, checked "
            "with CPUID); use precision='float32', or the torch engine "
            "(geomatch extract --engine torch --precision bfloat16)")
    return precision


def bf16_available() -> bool:
    """True when this CPU runs geomatch's bfloat16 kernels (AVX512-BF16,
    checked at run time with CPUID)."""
    return bool(_core().bf16_supported())


class BackboneShape:
    """``embed_dim`` and ``patch_size`` of a model holding a ``config``
    (:class:`DinoV2Config`); shared by the C and the torch engine."""

    config: DinoV2Config

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def patch_size(self) -> int:
        return self.config.patch_size


class DinoV2(BackboneShape):
    """A DINOv2 ViT ready for inference (weights prepared for the C kernels).

    Build it with :func:`load_dinov2`.  Call :meth:`features` on a
    normalized network input of shape (H, W, 3) or (B, H, W, 3) with H and W
    multiples of 14.
    """

    #: images per forward pass in ``extract`` (each with its flipped copy)
    default_batch_images = 1

    def __init__(self, config: DinoV2Config, state: Mapping[str, np.ndarray], *,
                 source: str = "weights", precision: str = "float32"):
        ck.check_state(state, config.expected_shapes(), source)
        self.config = config
        self.source = source
        precision = check_precision(precision)
        #: compute precision of the matrix products: "float32" or "bfloat16"
        self.precision = precision
        f32 = lambda k: np.ascontiguousarray(state[k], dtype=np.float32)  # noqa: E731
        d = config.embed_dim
        self.cls_token = f32("cls_token").reshape(d)
        self.pos_embed = f32("pos_embed").reshape(-1, d)
        self.register_tokens = (f32("register_tokens").reshape(-1, d)
                                if config.num_register_tokens else np.zeros((0, d), np.float32))
        self.patch_w = f32("patch_embed.proj.weight").reshape(d, -1)
        self.patch_b = f32("patch_embed.proj.bias")
        self.norm_w, self.norm_b = f32("norm.weight"), f32("norm.bias")
        self.blocks = []
        for i in range(config.depth):
            b = f"blocks.{i}."
            g1 = (state[b + "ls1.gamma"] if config.layerscale else np.ones(d)).astype(np.float64)
            g2 = (state[b + "ls2.gamma"] if config.layerscale else np.ones(d)).astype(np.float64)
            f1, f2 = ("mlp.fc1", "mlp.fc2") if config.ffn == "mlp" else ("mlp.w12", "mlp.w3")

            def scaled(name, g, bias=False):
                # LayerScale folded into the output rows of the linear layer
                a = np.asarray(state[name], dtype=np.float64)
                return np.ascontiguousarray((a * g if bias else a * g[:, None]), dtype=np.float32)

            self.blocks.append(dict(
                n1w=f32(b + "norm1.weight"), n1b=f32(b + "norm1.bias"),
                qkv_w=f32(b + "attn.qkv.weight"), qkv_b=f32(b + "attn.qkv.bias"),
                proj_w=scaled(b + "attn.proj.weight", g1),
                proj_b=scaled(b + "attn.proj.bias", g1, True),
                n2w=f32(b + "norm2.weight"), n2b=f32(b + "norm2.bias"),
                fc1_w=f32(b + f1 + ".weight"), fc1_b=f32(b + f1 + ".bias"),
                fc2_w=scaled(b + f2 + ".weight", g2),
                fc2_b=scaled(b + f2 + ".bias", g2, True),
            ))
            if precision == "bfloat16":
                # weights rounded to bfloat16 once, packed for the kernel
                blk = self.blocks[-1]
                for name in ("qkv", "proj", "fc1", "fc2"):
                    wt = blk.pop(name + "_w")
                    blk[name + "_p"] = _core().bf16_pack(wt)
        self._pos_cache: Dict[Tuple[int, int], np.ndarray] = {}
        #: how :func:`load_dinov2` built it (weights, model, lora, config), or
        #: None; lets :func:`geomatch.backbone.extract.extract_features` have
        #: Dask workers load the same model from the same files
        self.load_args: Optional[dict] = None

    @property
    def engine(self) -> str:
        """The feature-cache manifest's ``engine``: ``"c"`` (float32) or
        ``"c-bfloat16"``, so features of the two precisions never share a cache."""
        return "c" if self.precision == "float32" else "c-" + self.precision

    def __repr__(self) -> str:
        c = self.config
        prec = "" if self.precision == "float32" else f", precision={self.precision!r}"
        return (f"DinoV2({c.name}, dim={c.embed_dim}, depth={c.depth}, heads={c.num_heads}, "
                f"registers={c.num_register_tokens}, source={self.source!r}{prec})")

    #: bf16 MLPs keep the hidden layer in bfloat16 (fc1's fused GELU and
    #: rounding); False: the float32 hidden layer, the same bits (tested)
    _bf16_hidden = True

    def _linear(self, blk: dict, name: str, x: np.ndarray, out: np.ndarray, *,
                act: int = 0, accumulate: bool = False) -> None:
        """out = act(x W^T + b) (or out += ...) for the block's layer ``name``,
        in this model's precision."""
        core = _core()
        if self.precision == "bfloat16":
            core.nn_linear_bf16(x, blk[name + "_p"], blk[name + "_b"], out=out, act=act,
                                accumulate=accumulate)
        else:
            core.nn_linear(x, blk[name + "_w"], blk[name + "_b"], out=out, act=act,
                           accumulate=accumulate)

    def positional_embedding(self, h: int, w: int) -> np.ndarray:
        """Positional embeddings (1 + h*w, D) for an h x w patch grid,
        interpolated as the source implementation does."""
        key = (h, w)
        if key not in self._pos_cache:
            self._pos_cache[key] = interpolate_pos_embed(self.pos_embed, self.config, h, w)
        return self._pos_cache[key]

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        core = _core()
        b, hh, ww, _ = pixels.shape
        p, c = self.patch_size, self.config
        h, w = hh // p, ww // p
        patches = pixels.reshape(b, h, p, w, p, 3).transpose(0, 1, 3, 5, 2, 4)
        patches = np.ascontiguousarray(patches, dtype=np.float32).reshape(b * h * w, 3 * p * p)
        emb = core.nn_linear(patches, self.patch_w, self.patch_b).reshape(b, h * w, -1)
        pos = self.positional_embedding(h, w)
        r = c.num_register_tokens
        x = np.empty((b, 1 + r + h * w, c.embed_dim), dtype=np.float32)
        x[:, 0] = self.cls_token + pos[0]
        x[:, 1:1 + r] = self.register_tokens
        np.add(emb, pos[1:], out=x[:, 1 + r:])
        return x

    def _check_pixels(self, pixels) -> np.ndarray:
        return check_pixels(pixels, self.patch_size)

    def features(self, pixels, *, layers: Optional[Sequence[int]] = None,
                 return_class_token: bool = False):
        """Patch features of a normalized network input.

        Parameters
        ----------
        pixels : array (H, W, 3) or (B, H, W, 3)
            ImageNet-normalized input, channel-last, H and W multiples of 14.
        layers : sequence of int, optional
            Block indices (negative from the end) whose outputs to return, each
            normalized with the final LayerNorm (as DINOv2's
            ``get_intermediate_layers(norm=True)``).  Default: the last block.
        return_class_token : bool
            Also return the normalized class token(s).

        Returns
        -------
        feats : float32 array (h, w, D) (or (B, h, w, D)); a list of them when
            ``layers`` is given.
        cls : float32 array (D,) or (B, D) (or a list), only with
            ``return_class_token``.
        """
        arr = self._check_pixels(pixels)
        single = np.ndim(pixels) == 3
        c = self.config
        depth = c.depth
        if layers is None:
            want = [depth - 1]
        else:
            want = []
            for li in layers:
                li = int(li)
                if not -depth <= li < depth:
                    raise ValueError(f"layers entries must be in [-{depth}, {depth - 1}], got {li}")
                want.append(li % depth)
        outs = self._run(arr, sorted(set(want)))
        b, hh, ww, _ = arr.shape
        h, w = hh // c.patch_size, ww // c.patch_size
        r = c.num_register_tokens
        feats, clss = [], []
        for li in want:
            tok = outs[li]
            f = tok[:, 1 + r:].reshape(b, h, w, -1)
            cl = tok[:, 0]
            feats.append(f[0] if single else f)
            clss.append(cl[0] if single else cl)
        if layers is None:
            feats, clss = feats[0], clss[0]
        return (feats, clss) if return_class_token else feats

    __call__ = features

    def _run(self, arr: np.ndarray, want: List[int]) -> Dict[int, np.ndarray]:
        core = _core()
        c = self.config
        x = self._embed(arr)
        b, n, d = x.shape
        rows = b * n
        x2 = x.reshape(rows, d)
        t = np.empty((rows, d), np.float32)
        qkv = np.empty((b, n, 3 * d), np.float32)
        att = np.empty((rows, d), np.float32)
        hdim = self.blocks[0]["fc1_b"].shape[0]
        # bf16 MLP: fc1 writes its GELU output as bfloat16, the bits fc2
        # would have rounded it to (no float32 pass over the hidden layer)
        half = (self.precision == "bfloat16" and c.ffn == "mlp" and hdim % 32 == 0
                and self._bf16_hidden)
        hid = np.empty((rows, hdim), np.uint16 if half else np.float32)
        gate = np.empty((rows, c.hidden_dim), np.float32) if c.ffn == "swiglu" else None
        eps = c.layer_norm_eps
        outs = {}
        last = max(want)
        attention = core.nn_attention_bf16 if (self.precision == "bfloat16"
                                               and c.head_dim == 64) else core.nn_attention
        lin = self._linear
        for i, blk in enumerate(self.blocks[: last + 1]):
            core.nn_layernorm(x2, blk["n1w"], blk["n1b"], eps, out=t)
            lin(blk, "qkv", t, qkv.reshape(rows, 3 * d))
            attention(qkv, c.num_heads, out=att.reshape(b, n, d))
            lin(blk, "proj", att, x2, accumulate=True)
            core.nn_layernorm(x2, blk["n2w"], blk["n2b"], eps, out=t)
            if c.ffn == "mlp":
                lin(blk, "fc1", t, hid, act=1)
                lin(blk, "fc2", hid, x2, accumulate=True)
            else:
                lin(blk, "fc1", t, hid)
                core.nn_swiglu(hid, out=gate)
                lin(blk, "fc2", gate, x2, accumulate=True)
            if i in want:
                outs[i] = core.nn_layernorm(x2, self.norm_w, self.norm_b, eps).reshape(b, n, d)
        return outs


# --------------------------------------------------------------------------
# loading


def _config_from_state(state: Mapping[str, np.ndarray], base: Optional[DinoV2Config],
                       source: str) -> DinoV2Config:
    """Infer the architecture from tensor shapes (head dim 64, as all DINOv2)."""
    if base is not None:
        return base
    if "cls_token" not in state or "pos_embed" not in state:
        raise ValueError(f"{source}: not a DINOv2 state dict (no cls_token / pos_embed); "
                         "pass model= to name the architecture")
    d = int(np.shape(state["cls_token"])[-1])
    depth = 1 + max((int(k.split(".")[1]) for k in state
                     if k.startswith("blocks.") and k.split(".")[1].isdigit()), default=-1)
    ffn = "swiglu" if "blocks.0.mlp.w12.weight" in state else "mlp"
    reg = int(np.shape(state["register_tokens"])[1]) if "register_tokens" in state else 0
    m = int(round(math.sqrt(np.shape(state["pos_embed"])[1] - 1)))
    patch = int(np.shape(state["patch_embed.proj.weight"])[-1]) \
        if "patch_embed.proj.weight" in state else 14
    heads = max(1, d // 64)
    return DinoV2Config(d, max(depth, 1), heads, 4.0, ffn, reg, patch, m,
                        interpolation="antialias" if reg else "offset",
                        interpolate_offset=0.0 if reg else 0.1)


def _hf_config(cfg: dict) -> DinoV2Config:
    reg = int(cfg.get("num_register_tokens", 0) or 0)
    registers = cfg.get("model_type", "dinov2") == "dinov2_with_registers" or reg > 0
    patch = int(cfg.get("patch_size", 14))
    return DinoV2Config(
        embed_dim=int(cfg["hidden_size"]), depth=int(cfg["num_hidden_layers"]),
        num_heads=int(cfg["num_attention_heads"]), mlp_ratio=float(cfg.get("mlp_ratio", 4)),
        ffn="swiglu" if cfg.get("use_swiglu_ffn", False) else "mlp",
        num_register_tokens=reg, patch_size=patch,
        pos_grid=int(cfg.get("image_size", 518)) // patch,
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)),
        interpolation="antialias" if registers else "size", interpolate_offset=0.0)


def load_dinov2(weights, model: Optional[str] = None, *, lora=None,
                config: Optional[DinoV2Config] = None, precision: str = "float32") -> DinoV2:
    """Load DINOv2 weights without torch (the C engine).

    Parameters
    ----------
    weights : path
        An official ``dinov2_*_pretrain.pth`` (torch zip) file, a
        ``.safetensors`` file (official or HF naming), or a Hugging Face
        ``facebook/dinov2-*`` directory (``config.json`` + ``model.safetensors``).
        A torch file holding both the base weights and GECO's LoRA factors
        (``w_a_###`` / ``w_b_###``) is merged automatically.
    model : str, optional
        ``vits14``, ``vitb14``, ``vitl14``, ``vitg14`` (``_reg`` for the
        register variants).  The file is checked against it; default: inferred
        from the tensor shapes (or from config.json).
    lora : path, optional
        GECO's LoRA checkpoint (``best_lora_weights.pth`` /
        ``last_lora_weights.pth``), merged into every block's qkv.
    config : DinoV2Config, optional
        Full architecture (overrides ``model``); for non-standard sizes.
    precision : {"float32", "bf16"}
        Compute precision of the matrix products.  ``"bf16"`` (opt-in;
        ``"bfloat16"`` too): the linear layers' weights (qkv, projection, MLP)
        are rounded to bfloat16 once here and their inputs on the fly, and the
        attention's q, k, v and probabilities are rounded to bfloat16; all
        products are accumulated in float32 (AVX512-BF16, checked at run
        time).  The patch embedding, LayerNorm, softmax, the residual stream
        and the output stay float32.  Speed and accuracy
        against float32 are measured in docs/performance.md.

    Raises
    ------
    FileNotFoundError
        ``weights`` or ``lora`` does not exist (the message names it).
    ValueError
        Missing, unexpected or mis-shaped tensors (all listed by name), an
        unknown ``precision``, or ``precision="bf16"`` on a CPU without
        AVX512-BF16 (the message says so).
    """
    precision = check_precision(precision)   # before reading any weights
    cfg, state, source = read_dinov2(weights, model, lora=lora, config=config)
    net = DinoV2(cfg, state, source=source, precision=precision)
    net.load_args = {"weights": os.path.abspath(os.fspath(weights)), "model": model,
                     "lora": None if lora is None else os.path.abspath(os.fspath(lora)),
                     "config": config, "precision": precision}
    return net


def _read_state_file(path: str) -> Dict[str, np.ndarray]:
    """Tensors of a safetensors file (Hugging Face names mapped to the
    official ones) or of a torch.save zip, told apart by the content (a
    safetensors file starts with an 8-byte header length and ``{``), not by
    the file name."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[:2] != b"PK" and head[8:9] == b"{":
        return ck.hf_to_reference(ck.read_safetensors(path))
    return ck.read_torch_file(path)


def read_dinov2(weights, model: Optional[str] = None, *, lora=None,
                config: Optional[DinoV2Config] = None
                ) -> Tuple[DinoV2Config, Dict[str, np.ndarray], str]:
    """Read and check DINOv2 weights (LoRA merged): ``(config, state, source)``.

    ``state`` is in the official naming, checked against ``config``; the
    arguments are those of :func:`load_dinov2`, which builds the C-engine
    model from it (:func:`geomatch.backbone.torch_engine.load_dinov2_torch`
    builds the torch one).
    """
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights not found: {path}")
    if lora is not None and not os.path.exists(os.fspath(lora)):
        raise FileNotFoundError(f"LoRA weights not found: {os.fspath(lora)}")
    base = config if config is not None else (DinoV2Config.from_name(model) if model else None)
    if os.path.isdir(path):
        state, hf = ck.read_hf_dir(path)
        try:
            hfc = _hf_config(hf)
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{os.path.join(path, 'config.json')}: not a DINOv2 configuration "
                             f"({what})") from None
        if base is None:
            base = hfc
        elif config is None:
            base = replace(base, interpolation=hfc.interpolation,
                           interpolate_offset=hfc.interpolate_offset)
    else:
        state = _read_state_file(path)
    if ck.is_lora_state(state):
        raise ValueError(f"{path} holds only GECO LoRA factors; pass it as lora= together "
                         "with the base DINOv2 weights")
    lora_in_file = {k: v for k, v in state.items() if ck._LORA_RE.match(k)}
    cfg = _config_from_state(state, base, path)
    if lora_in_file:
        state = {k: v for k, v in state.items() if k not in lora_in_file}
        ck.check_state(state, cfg.expected_shapes(), path)
        state = ck.merge_geco_lora(state, lora_in_file, cfg.depth, cfg.embed_dim)
    source = path
    if lora is not None:
        ck.check_state(state, cfg.expected_shapes(), path)
        lstate = _read_state_file(os.fspath(lora))
        try:
            state = ck.merge_geco_lora(state, lstate, cfg.depth, cfg.embed_dim)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(lora)}: {exc}") from None
        source = f"{path} + LoRA {os.fspath(lora)}"
    ck.check_state(state, cfg.expected_shapes(), source)
    return cfg, state, source

"""DINOv2 in PyTorch: the optional GPU engine of ``geomatch extract``.

``pip install "geomatch[torch]"``.  The model is built from the same
checkpoint readers as the C engine (:func:`geomatch.backbone.dinov2.read_dinov2`:
official ``.pth``, ``.safetensors``, Hugging Face directories, GECO's LoRA
merged into qkv, registers, every size of :data:`~geomatch.backbone.MODEL_NAMES`),
takes the same preprocessed input (channel-last, ImageNet-normalized) and
returns the same (B, h, w, D) float32 maps, so its features go into the same
cache format.  The architecture is the one of
:class:`geomatch.backbone.DinoV2` (patch embedding, class and register tokens,
positional embeddings interpolated by the same NumPy routine, pre-norm blocks
with LayerScale, exact GELU or SwiGLU, final LayerNorm), written with
``torch.nn.functional`` on plain tensors.

Precision: ``dtype="float32"`` computes in float32 (on CUDA without TF32:
the matmul precision is set to "highest" while the model runs);
``"float16"`` / ``"bfloat16"`` run under :func:`torch.autocast` (matrix
products and attention in the low precision; the residual stream, the
LayerNorms and the output stay float32).
On CPU it uses geomatch's thread count (``--threads``,
:func:`geomatch.set_num_threads`).  On CPU, float32 features agree with the
C engine to 1e-4 relative; the
measured effect of the low precisions is in docs/scaling.md.

torch is imported when a model is built, never by ``import geomatch``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np

from .dinov2 import BackboneShape, DinoV2Config, check_pixels, interpolate_pos_embed, read_dinov2

__all__ = ["TorchDinoV2", "load_dinov2_torch", "PRECISIONS"]

PRECISIONS = ("float32", "float16", "bfloat16")


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError('the torch engine needs PyTorch: pip install "geomatch[torch]"') from None
    return torch


def _check_device(torch, device: str):
    dev = str(device)
    kind = dev.split(":")[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev!r}: this PyTorch sees no CUDA device "
                             f"(torch {torch.__version__})")
        d = torch.device(dev)
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {dev!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return d
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {dev!r}: MPS (Apple GPU) is not available here")
        return torch.device("mps")
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {dev!r}")


class TorchDinoV2(BackboneShape):
    """A DINOv2 ViT in PyTorch, for inference (build with :func:`load_dinov2_torch`).

    Same interface as :class:`geomatch.backbone.DinoV2` for extraction:
    :meth:`features` takes a normalized (H, W, 3) or (B, H, W, 3) NumPy
    input and returns float32 NumPy maps (h, w, D) or (B, h, w, D).
    """

    default_batch_images = 8

    def __init__(self, config: DinoV2Config, state: Dict[str, np.ndarray], *,
                 device: str = "cpu", dtype: str = "float32", source: str = "weights"):
        torch = _torch()
        if dtype not in PRECISIONS:
            raise ValueError(f"dtype must be one of {PRECISIONS}, got {dtype!r}")
        from . import checkpoints as ck

        ck.check_state(state, config.expected_shapes(), source)
        self.config = config
        self.source = source
        self.compute_dtype = dtype
        self._dev = _check_device(torch, device)
        self.device = str(self._dev)
        if dtype != "float32":
            try:
                with torch.autocast(self._dev.type, dtype=getattr(torch, dtype)):
                    pass
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"precision {dtype} is not supported on {self.device}: "
                                 f"{exc}") from None
        self.load_args: Optional[dict] = None
        d = config.embed_dim

        def t(a, shape=None):
            a = np.asarray(a, dtype=np.float32)
            if shape is not None:
                a = a.reshape(shape)
            return torch.from_numpy(np.ascontiguousarray(a)).to(self._dev)

        self._pos_np = np.asarray(state["pos_embed"], np.float32).reshape(-1, d)
        self.cls_token = t(state["cls_token"], (d,))
        r = config.num_register_tokens
        self.register_tokens = t(state["register_tokens"], (r, d)) if r else None
        self.patch_w = t(state["patch_embed.proj.weight"], (d, -1))
        self.patch_b = t(state["patch_embed.proj.bias"])
        self.norm = (t(state["norm.weight"]), t(state["norm.bias"]))
        f1, f2 = ("mlp.fc1", "mlp.fc2") if config.ffn == "mlp" else ("mlp.w12", "mlp.w3")
        ones = np.ones(d, np.float32)
        self.blocks = []
        for i in range(config.depth):
            b = f"blocks.{i}."
            self.blocks.append(dict(
                n1=(t(state[b + "norm1.weight"]), t(state[b + "norm1.bias"])),
                qkv=(t(state[b + "attn.qkv.weight"]), t(state[b + "attn.qkv.bias"])),
                proj=(t(state[b + "attn.proj.weight"]), t(state[b + "attn.proj.bias"])),
                ls1=t(state[b + "ls1.gamma"] if config.layerscale else ones),
                n2=(t(state[b + "norm2.weight"]), t(state[b + "norm2.bias"])),
                fc1=(t(state[b + f1 + ".weight"]), t(state[b + f1 + ".bias"])),
                fc2=(t(state[b + f2 + ".weight"]), t(state[b + f2 + ".bias"])),
                ls2=t(state[b + "ls2.gamma"] if config.layerscale else ones),
            ))
        self._pos_cache: Dict[Tuple[int, int], object] = {}

    def __repr__(self) -> str:
        c = self.config
        return (f"TorchDinoV2({c.name}, dim={c.embed_dim}, depth={c.depth}, "
                f"registers={c.num_register_tokens}, device={self.device!r}, "
                f"dtype={self.compute_dtype!r}, source={self.source!r})")

    @property
    def engine(self) -> str:
        """The feature-cache manifest's ``engine``: ``torch-<precision>``."""
        return f"torch-{self.compute_dtype}"

    def _pos(self, h: int, w: int):
        key = (h, w)
        if key not in self._pos_cache:
            torch = _torch()
            pos = interpolate_pos_embed(self._pos_np, self.config, h, w)
            self._pos_cache[key] = torch.from_numpy(np.ascontiguousarray(pos)).to(self._dev)
        return self._pos_cache[key]

    def _forward(self, x):
        torch = _torch()
        F = torch.nn.functional
        c = self.config
        b, hh, ww, _ = x.shape
        p, d = c.patch_size, c.embed_dim
        h, w = hh // p, ww // p
        # patches in the (channel, row, column) order of the conv weight
        patches = x.reshape(b, h, p, w, p, 3).permute(0, 1, 3, 5, 2, 4).reshape(b, h * w, 3 * p * p)
        pos = self._pos(h, w)
        emb = F.linear(patches, self.patch_w, self.patch_b) + pos[1:]
        parts = [(self.cls_token + pos[0]).expand(b, 1, d)]
        if self.register_tokens is not None:
            parts.append(self.register_tokens.expand(b, -1, d))
        parts.append(emb)
        x = torch.cat(parts, dim=1)
        n = x.shape[1]
        heads = c.num_heads
        eps = c.layer_norm_eps
        for blk in self.blocks:
            t = F.layer_norm(x, (d,), *blk["n1"], eps)
            qkv = F.linear(t, *blk["qkv"]).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            a = a.transpose(1, 2).reshape(b, n, d)
            x = x + blk["ls1"] * F.linear(a, *blk["proj"])
            t = F.layer_norm(x, (d,), *blk["n2"], eps)
            if c.ffn == "mlp":
                hid = F.gelu(F.linear(t, *blk["fc1"]))
            else:
                x1, x2 = F.linear(t, *blk["fc1"]).chunk(2, dim=-1)
                hid = F.silu(x1) * x2
            x = x + blk["ls2"] * F.linear(hid, *blk["fc2"])
        x = F.layer_norm(x.float(), (d,), *self.norm, eps)
        r = c.num_register_tokens
        return x[:, 1 + r:].reshape(b, h, w, d)

    def features(self, pixels) -> np.ndarray:
        """Patch features of a normalized network input.

        Parameters
        ----------
        pixels : array (H, W, 3) or (B, H, W, 3)
            ImageNet-normalized input, channel-last, H and W multiples of 14.

        Returns
        -------
        float32 array (h, w, D) (or (B, h, w, D)), on the host.
        """
        torch = _torch()
        single = np.ndim(pixels) == 3
        arr = check_pixels(pixels, self.patch_size)
        if self._dev.type == "cpu":
            from ..runtime.config import get_num_threads

            if torch.get_num_threads() != get_num_threads():
                torch.set_num_threads(get_num_threads())   # follow geomatch's --threads
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self._dev)
        prev = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("highest")   # no TF32 on CUDA
            with torch.inference_mode():
                if self.compute_dtype == "float32":
                    out = self._forward(x)
                else:
                    with torch.autocast(self._dev.type, dtype=getattr(torch, self.compute_dtype)):
                        out = self._forward(x)
            out = out.float().cpu().numpy()
        finally:
            torch.set_float32_matmul_precision(prev)
        return out[0] if single else out

    __call__ = features


def load_dinov2_torch(weights, model: Optional[str] = None, *, lora=None,
                      config: Optional[DinoV2Config] = None, device: str = "cpu",
                      dtype: str = "float32") -> TorchDinoV2:
    """Load DINOv2 weights into the PyTorch engine.

    Parameters
    ----------
    weights, model, lora, config
        As :func:`geomatch.backbone.load_dinov2` (the same readers).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    dtype : {"float32", "float16", "bfloat16"}
        Compute precision (the low ones under autocast).

    Raises
    ------
    ImportError
        PyTorch is not installed.
    ValueError
        Unavailable device or precision, or weights that do not match.
    FileNotFoundError
        ``weights`` or ``lora`` does not exist.
    """
    _torch()
    cfg, state, source = read_dinov2(weights, model, lora=lora, config=config)
    net = TorchDinoV2(cfg, state, device=device, dtype=dtype, source=source)
    net.load_args = {"weights": os.path.abspath(os.fspath(weights)), "model": model,
                     "lora": None if lora is None else os.path.abspath(os.fspath(lora)),
                     "config": config}
    return net

"""A trained head outside geomatch: safetensors files and a PyTorch module.

* :func:`save_safetensors` writes the parameters in PyTorch's layout (linear
  weights (out, in), names as :class:`geomatch.model.torch_head.GeomatchHead`'s
  ``state_dict``) with the configuration in the file's metadata
  (``geomatch_head_config``, JSON); :func:`load_safetensors` reads it back
  into an :class:`~geomatch.model.head.AttentionHead`.
* :func:`export_head` writes ``head.safetensors`` plus ``geomatch_head.py``,
  the standalone PyTorch module definition (it imports only torch and
  safetensors), into a folder.
* :func:`to_torch` returns that module with the head's weights (needs torch).

Neither writing nor reading needs torch.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Union

import numpy as np

__all__ = ["save_safetensors", "load_safetensors", "export_head", "to_torch", "FORMAT"]

FORMAT = "geomatch.head.torch/1"


def _torch_layout(params) -> dict:
    """geomatch names -> the torch module's state_dict (2-D weights transposed)."""
    return {k: np.ascontiguousarray((v.T if v.ndim == 2 else v), dtype=np.float32)
            for k, v in params.items()}


def save_safetensors(head, path: Union[str, os.PathLike]) -> str:
    """Write ``head`` (an AttentionHead) as a safetensors file in PyTorch's layout."""
    from ..backbone.checkpoints import write_safetensors

    meta = {"format": FORMAT, "geomatch_head_config": json.dumps(head.config.to_dict())}
    return write_safetensors(path, _torch_layout(head.parameters()), meta)


def load_safetensors(path: Union[str, os.PathLike], *, dtype=np.float32):
    """Read a file written by :func:`save_safetensors` back into an AttentionHead.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a geomatch head file, or names/shapes that do not match its
        configuration (the message names the path).
    """
    from ..backbone.checkpoints import read_safetensors
    from .head import AttentionHead, HeadConfig

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"head file not found: {path}")
    with open(path, "rb") as f:
        import struct

        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        try:
            header = json.loads(f.read(n)) if 0 < n < (1 << 26) else {}
        except ValueError:
            header = {}
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if meta.get("format") != FORMAT or "geomatch_head_config" not in meta:
        raise ValueError(f"{path}: not a geomatch head safetensors file (format {FORMAT})")
    try:
        cfg = HeadConfig.from_dict(json.loads(meta["geomatch_head_config"]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid head configuration ({exc})") from None
    tensors = read_safetensors(path)
    head = AttentionHead(cfg, dtype=dtype)
    shapes = head.expected_shapes()
    params = {k: (v.T if v.ndim == 2 else v) for k, v in tensors.items()}
    if set(params) != set(shapes):
        raise ValueError(f"{path}: tensors do not match the head configuration (missing "
                         f"{sorted(set(shapes) - set(params))}, unexpected "
                         f"{sorted(set(params) - set(shapes))})")
    bad = [k for k in shapes if params[k].shape != shapes[k]]
    if bad:
        raise ValueError(f"{path}: wrong shapes for {bad}")
    bad = [k for k in shapes if not np.isfinite(params[k]).all()]
    if bad:
        raise ValueError(f"{path}: non-finite values in {bad}")
    head.set_parameters(params)
    return head


def export_head(head, out_dir: Union[str, os.PathLike]) -> dict:
    """Write ``head.safetensors`` and ``geomatch_head.py`` into ``out_dir``.

    Returns ``{"weights": path, "module": path}``.  In PyTorch::

        from geomatch_head import GeomatchHead
        module = GeomatchHead.from_safetensors("head.safetensors")
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    weights = save_safetensors(head, os.path.join(out_dir, "head.safetensors"))
    module = os.path.join(out_dir, "geomatch_head.py")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_head.py")
    tmp = module + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, module)
    return {"weights": weights, "module": module}


def to_torch(head):
    """The head as a ``torch.nn.Module`` (:class:`geomatch.model.torch_head.GeomatchHead`).

    Its forward takes channel-last (h, w, D_in) or (B, h, w, D_in) tensors and
    matches ``head(feat)`` to about 1e-5 in float32.

    Raises
    ------
    ImportError
        torch is not installed (the message says so).
    """
    try:
        import torch
    except ImportError:
        raise ImportError("geomatch.head.to_torch needs PyTorch (pip install torch); "
                          "geomatch.head.save_safetensors works without it") from None
    from .torch_head import GeomatchHead

    module = GeomatchHead(head.config.to_dict())
    module.load_state_dict({k: torch.from_numpy(v) for k, v in
                            _torch_layout(head.parameters()).items()})
    return module.eval()

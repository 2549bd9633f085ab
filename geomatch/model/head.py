"""The attention head trained on frozen backbone tokens (NumPy, hand-written backward).

Specified in docs/method.md#attention-head; the file format in
docs/method.md#head-file-format.

Architecture (``HeadConfig`` defaults in brackets), per image of h x w tokens::

    feat (h, w, D_in)                                   [D_in = 768]
      -> x0 = feat @ W_in + b_in + pos_gain * PE(h, w)  [d = 256]
      -> num_blocks pre-norm transformer blocks          [1 block]
             x = x + Attn(LN1(x))     multi-head self-attention over all h*w
                                      tokens: q, k, v = LN1(x) @ W_qkv (d -> 3 * d_a)
                                      [d_a = 128, 2 heads of 64],
                                      softmax(q k^T / sqrt(d_h)) v per head,
                                      concatenated, projected d_a -> d
             x = x + MLP(LN2(x))      d -> mlp_dim -> d, GELU (tanh form) [mlp_dim 256]
      -> LN_out(x) @ W_out + b_out                       [E = 256]
    -> (h, w, E)

``PE`` is a fixed 2-D sine-cosine embedding of the normalized patch centre
((row + 0.5)/h, (col + 0.5)/w): d/4 frequencies per axis, geometric from pi to
64 pi, [sin, cos] of the row then [sin, cos] of the column.  Because it uses
normalized coordinates it works for any grid size.  It is scaled by a learned
per-channel gain (initialized to 0.1) so that at initialization the head output
still mirrors the backbone's similarity structure.

The default head has 527,744 parameters (``AttentionHead().num_parameters()``);
the attention width d_a = 128 < d keeps one training step on a 37 x 37 pair
within the CPU budget (the T x T attention products dominate the cost).

Forward and backward are hand-written: the matrix products run on
geomatch's BLAS and OpenMP threads (:func:`geomatch.ops.linalg.matmul`, no
second thread pool), the attention (which keeps its exponentials for the
backward pass and overwrites them with their gradients), LayerNorm and GELU
are C kernels (``csrc/gm_head.c``); NumPy glues them.  The whole computation
runs in the dtype of the parameters (float32 by default; float64 for
gradient checks).  Linear weights are stored as (in, out) so that
``y = x @ W + b`` (the transpose of ``torch.nn.Linear.weight``).

Speed (``benchmarks/bench_train.py``, 2 cores): forward + backward of the
default head on two 37 x 37 x 768 maps takes about 90 ms, the whole
training step of a pair (with the loss and the OT layer) 110-130 ms.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Union

import numpy as np

from .. import _core
from ..ops.linalg import matmul

__all__ = ["HeadConfig", "AttentionHead", "load_head", "read_head_file", "HeadFile",
           "HEAD_FORMAT", "sincos_2d", "to_torch", "save_safetensors", "load_safetensors",
           "export_head"]

#: ``format`` field of a head file's metadata (docs/method.md#head-file-format)
HEAD_FORMAT = "geomatch.model.head/1"


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of :class:`AttentionHead`.

    Attributes
    ----------
    in_dim : int
        Channels of the backbone tokens (768 for DINOv2 ViT-B/14).
    dim : int
        Width of the transformer (a multiple of ``4`` and of ``num_heads``).
    out_dim : int
        Channels E of the output embedding per patch.
    num_heads : int
        Attention heads per block.
    num_blocks : int
        Number of pre-norm transformer blocks.
    mlp_dim : int
        Hidden width of each block's MLP.
    attn_dim : int or None
        Total width of the queries, keys and values (split over the heads);
        None means ``dim``.
    ln_eps : float
        LayerNorm epsilon.
    pos_gain_init : float
        Initial value of the per-channel gain of the positional embedding.
    """

    in_dim: int = 768
    dim: int = 256
    out_dim: int = 256
    num_heads: int = 2
    num_blocks: int = 1
    mlp_dim: int = 256
    attn_dim: Optional[int] = 128
    ln_eps: float = 1e-5
    pos_gain_init: float = 0.1

    def __post_init__(self):
        for name in ("in_dim", "dim", "out_dim", "num_heads", "mlp_dim"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"head config: {name} must be a positive integer, got {v!r}")
        if not isinstance(self.num_blocks, (int, np.integer)) or self.num_blocks < 0:
            raise ValueError(f"head config: num_blocks must be a non-negative integer, "
                             f"got {self.num_blocks!r}")
        if self.dim % 4:
            raise ValueError(f"head config: dim must be a multiple of 4 (2-D sine-cosine "
                             f"embedding), got {self.dim}")
        if self.attn_dim is not None and (not isinstance(self.attn_dim, (int, np.integer))
                                          or self.attn_dim < 1):
            raise ValueError(f"head config: attn_dim must be a positive integer or None, "
                             f"got {self.attn_dim!r}")
        if not (isinstance(self.ln_eps, (int, float)) and self.ln_eps > 0):
            raise ValueError(f"head config: ln_eps must be positive, got {self.ln_eps!r}")
        if self.attention_dim % self.num_heads:
            raise ValueError(f"head config: attention width ({self.attention_dim}) must be "
                             f"a multiple of num_heads ({self.num_heads})")

    @property
    def attention_dim(self) -> int:
        """Width of queries, keys and values (``attn_dim`` or ``dim``)."""
        return self.dim if self.attn_dim is None else int(self.attn_dim)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"head config: unknown keys {sorted(unknown)}")
        return cls(**d)


def sincos_2d(h: int, w: int, dim: int, dtype=np.float32) -> np.ndarray:
    """Fixed 2-D sine-cosine positional embedding, shape (h, w, dim).

    Channels ``[0, dim/4)`` are sin(omega * r), ``[dim/4, dim/2)`` cos(omega * r),
    then the same for c, with r = (row + 0.5)/h and c = (col + 0.5)/w and
    omega_k = pi * 64**(k / (dim/4 - 1)).
    """
    f = dim // 4
    if f == 1:
        omega = np.array([math.pi])
    else:
        omega = math.pi * 64.0 ** (np.arange(f) / (f - 1))
    r = (np.arange(h) + 0.5) / h
    c = (np.arange(w) + 0.5) / w
    ar = r[:, None] * omega[None, :]
    ac = c[:, None] * omega[None, :]
    pe = np.empty((h, w, dim), dtype=np.float64)
    pe[:, :, 0 * f:1 * f] = np.sin(ar)[:, None, :]
    pe[:, :, 1 * f:2 * f] = np.cos(ar)[:, None, :]
    pe[:, :, 2 * f:3 * f] = np.sin(ac)[None, :, :]
    pe[:, :, 3 * f:4 * f] = np.cos(ac)[None, :, :]
    return pe.astype(dtype)


def _ln_forward(x, gamma, beta, eps):
    """Row LayerNorm (C kernel): y and the (xhat, rstd) its backward needs."""
    y, xhat, rstd = _core.layernorm_fwd(x, gamma, beta, eps)
    return y, (xhat, rstd)


def _ln_backward(dy, ctx, gamma, dx=None):
    """(dx, dgamma, dbeta) of the LayerNorm; with ``dx`` given the input
    gradient is added to it in place (a residual branch)."""
    xhat, rstd = ctx
    return _core.layernorm_bwd(dy, xhat, rstd, gamma, dx)


def _linear(x, weight, bias, residual=None):
    """x @ weight + bias (+ residual), a new array, on geomatch's threads
    (see :mod:`geomatch.ops.linalg`)."""
    y = np.empty((x.shape[0], weight.shape[1]), dtype=x.dtype)
    if residual is None:
        y[...] = bias
    else:
        np.add(residual, bias, out=y)
    return matmul(x, weight, out=y, accumulate=True)


def _linear_backward(x, dy, weight, grads, name, input_grad=True):
    """Backward of ``y = x @ weight + bias``: adds dL/dweight and dL/dbias into
    ``grads[name + ".weight"]`` and ``grads[name + ".bias"]``; returns dL/dx
    (None without ``input_grad``)."""
    matmul(x.T, dy, out=grads[name + ".weight"], accumulate=True)
    grads[name + ".bias"] += dy.sum(axis=0)
    return matmul(dy, weight.T) if input_grad else None


def _gelu_forward(u):
    """Tanh-form GELU (C kernel): g and the tanh t its backward needs."""
    return _core.gelu_tanh_fwd(u)


def _gelu_backward(dg, u, t):
    return _core.gelu_tanh_bwd(dg, u, t)


class AttentionHead:
    """Light transformer head mapping backbone tokens (h, w, D_in) to embeddings (h, w, E).

    Parameters
    ----------
    config : HeadConfig, optional
        Architecture; the defaults give a 528k-parameter head for 768-d tokens.
    seed : int
        Seed of the parameter initialization.
    dtype : numpy dtype
        float32 (default) or float64; all computation runs in this dtype.
    **overrides
        Fields of :class:`HeadConfig` that override ``config``.

    Notes
    -----
    Initialization: linear weights ~ N(0, 1/fan_in) (so that the residual
    stream keeps the scale and, approximately, the cosine geometry of the input
    tokens), biases 0, LayerNorm gains 1 and shifts 0, the attention and MLP
    output projections ~ N(0, 0.1^2/fan_in) (small residual branches at start).
    """

    def __init__(self, config: Optional[HeadConfig] = None, *, seed: int = 0,
                 dtype=np.float32, **overrides):
        if config is None:
            config = HeadConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, HeadConfig):
            raise TypeError(f"config must be a HeadConfig, got {type(config).__name__}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        #: The features the head was trained on (``features_fingerprint`` of
        #: the training cache's manifest; see geomatch.data.cache), saved with
        #: the head; None when unknown.
        self.trained_on: Optional[dict] = None
        self._params = self._init_params(np.random.default_rng(seed))
        self._cache = None
        self._pe = {}
        self._attn_bufs = {}

    # ------------------------------------------------------------------ params
    def _init_params(self, rng) -> Dict[str, np.ndarray]:
        c = self.config
        p: Dict[str, np.ndarray] = {}

        def lin(name, fin, fout, gain=1.0):
            p[name + ".weight"] = rng.normal(0.0, gain / math.sqrt(fin), (fin, fout))
            p[name + ".bias"] = np.zeros(fout)

        def ln(name, d):
            p[name + ".weight"] = np.ones(d)
            p[name + ".bias"] = np.zeros(d)

        lin("in_proj", c.in_dim, c.dim)
        p["pos_gain"] = np.full(c.dim, c.pos_gain_init)
        for b in range(c.num_blocks):
            pre = f"blocks.{b}."
            ln(pre + "norm1", c.dim)
            lin(pre + "attn.qkv", c.dim, 3 * c.attention_dim)
            lin(pre + "attn.proj", c.attention_dim, c.dim, gain=0.1)
            ln(pre + "norm2", c.dim)
            lin(pre + "mlp.fc1", c.dim, c.mlp_dim)
            lin(pre + "mlp.fc2", c.mlp_dim, c.dim, gain=0.1)
        ln("norm_out", c.dim)
        lin("out_proj", c.dim, c.out_dim)
        return {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in p.items()}

    def expected_shapes(self) -> Dict[str, tuple]:
        """Name -> shape of every parameter for this configuration."""
        return {k: v.shape for k, v in self._init_params(np.random.default_rng(0)).items()}

    def parameters(self) -> Dict[str, np.ndarray]:
        """The parameter arrays by name (live references: in-place updates train the head)."""
        return self._params

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(v.size for v in self._params.values()))

    def set_parameters(self, params: Dict[str, np.ndarray]) -> None:
        """Copy ``params`` (same names and shapes) into the head."""
        mine = self._params
        if set(params) != set(mine):
            raise ValueError(f"params: names do not match the head "
                             f"{_name_mismatch(params, mine)}")
        for k, v in params.items():
            v = np.asarray(v)
            if v.shape != mine[k].shape:
                raise ValueError(f"params: {k} has shape {v.shape}, expected {mine[k].shape}")
            mine[k][...] = v

    def astype(self, dtype) -> "AttentionHead":
        """A copy of the head computing in ``dtype``."""
        new = AttentionHead(self.config, dtype=dtype)
        new.set_parameters(self._params)
        new.trained_on = self.trained_on
        return new

    def __repr__(self) -> str:
        return (f"AttentionHead({self.config}, dtype={self.dtype.name}, "
                f"parameters={self.num_parameters():,})")

    # ----------------------------------------------------------------- forward
    def _attention_buffer(self, block, B, T):
        """The (B, H, T, T) buffer block ``block`` keeps its attention weights in.

        Reused from one training step to the next (a fresh 30 MB array per
        step at 37 x 37 tokens costs ~7,000 page faults); only the latest
        shape is kept per block.
        """
        shape = (B, self.config.num_heads, T, T)
        buf = self._attn_bufs.get(block)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=self.dtype)
            self._attn_bufs[block] = buf
        return buf

    def _pos(self, h, w):
        key = (h, w)
        if key not in self._pe:
            self._pe[key] = sincos_2d(h, w, self.config.dim, self.dtype).reshape(h * w, -1)
        return self._pe[key]

    def _check_input(self, feat):
        x = np.asarray(feat)
        if x.ndim not in (3, 4):
            raise ValueError(f"feat must have shape (h, w, D) or (B, h, w, D), got {x.shape}")
        if x.shape[-1] != self.config.in_dim:
            raise ValueError(f"feat has {x.shape[-1]} channels, the head expects "
                             f"{self.config.in_dim}")
        if x.shape[-2] < 1 or x.shape[-3] < 1:
            raise ValueError(f"feat has an empty grid: {x.shape}")
        if x.dtype.kind != "f":
            raise TypeError(f"feat must be a floating-point array, got {x.dtype}")
        x = np.asarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            raise ValueError("feat contains non-finite values")
        return x

    def __call__(self, feat) -> np.ndarray:
        """Embeddings (h, w, E) (or (B, h, w, E)) of the tokens ``feat``; no cache kept."""
        return self.forward(feat, cache=False)

    def forward(self, feat, cache: bool = True) -> np.ndarray:
        """Embeddings of ``feat`` ((h, w, D) or (B, h, w, D)); with ``cache`` keep
        what :meth:`backward` needs (the next ``forward(cache=True)`` replaces it;
        ``cache=False`` leaves a kept cache untouched)."""
        x = self._check_input(feat)
        single = x.ndim == 3
        if single:
            x = x[None]
        B, h, w, _ = x.shape
        # the B images share every linear layer (one product over B*h*w rows);
        # attention runs per image
        y, ctx = self._forward_batch(x.reshape(B * h * w, -1), B, h, w, cache)
        if cache:
            self._cache = (ctx, single, B)
        out = y.reshape(B, h, w, -1)
        return out[0] if single else out

    def _forward_batch(self, x, B, h, w, keep):
        c, p = self.config, self._params
        T, d, H = h * w, c.dim, c.num_heads
        ctx = {"x": x, "h": h, "w": w}
        z = _linear(x, p["in_proj.weight"], p["in_proj.bias"])
        z.reshape(B, T, d)[...] += self._pos(h, w) * p["pos_gain"]
        for b in range(c.num_blocks):
            pre = f"blocks.{b}."
            a, ln1 = _ln_forward(z, p[pre + "norm1.weight"], p[pre + "norm1.bias"], c.ln_eps)
            qkv = _linear(a, p[pre + "attn.qkv.weight"], p[pre + "attn.qkv.bias"])
            q3 = qkv.reshape(B, T, -1)
            if keep:
                # the exponentials stay for the backward pass (C kernel)
                E, rz, o = _core.head_attention_fwd(q3, H, self._attention_buffer(b, B, T))
            else:
                o = _core.nn_attention(q3, H)
            o = o.reshape(B * T, -1)
            z = _linear(o, p[pre + "attn.proj.weight"], p[pre + "attn.proj.bias"], z)
            bb, ln2 = _ln_forward(z, p[pre + "norm2.weight"], p[pre + "norm2.bias"], c.ln_eps)
            u = _linear(bb, p[pre + "mlp.fc1.weight"], p[pre + "mlp.fc1.bias"])
            g, t = _gelu_forward(u)
            z = _linear(g, p[pre + "mlp.fc2.weight"], p[pre + "mlp.fc2.bias"], z)
            if keep:
                ctx[b] = dict(a=a, ln1=ln1, qkv=q3, E=E, rz=rz, o=o, bb=bb, ln2=ln2, u=u, t=t,
                              g=g)
        zo, lno = _ln_forward(z, p["norm_out.weight"], p["norm_out.bias"], c.ln_eps)
        y = _linear(zo, p["out_proj.weight"], p["out_proj.bias"])
        if keep:
            ctx["zo"], ctx["lno"] = zo, lno
        return y, ctx

    # ---------------------------------------------------------------- backward
    def backward(self, grad_out, *, input_grad: bool = False):
        """Gradients of a scalar loss wrt every parameter, given d loss / d output.

        Parameters
        ----------
        grad_out : array, same shape as the last ``forward(..., cache=True)`` output.
        input_grad : bool
            Also return d loss / d feat (under the key ``"input"``).

        Returns
        -------
        dict name -> array (same shapes as :meth:`parameters`), summed over the batch.

        Each call consumes the cache of the last ``forward(..., cache=True)``
        (the attention's kept exponentials are overwritten by their
        gradients); a second backward needs a new forward.
        """
        if self._cache is None:
            raise ValueError("backward needs a preceding forward(feat, cache=True) (each "
                             "backward consumes the cache of one forward)")
        ctx, single, B = self._cache
        g = np.asarray(grad_out, dtype=self.dtype)
        if single:
            g = g[None]
        h, w = ctx["h"], ctx["w"]
        want = (B, h, w, self.config.out_dim)
        if g.shape != want:
            raise ValueError(f"grad_out has shape {np.asarray(grad_out).shape}, expected "
                             f"{want[1:] if single else want}")
        grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._cache = None  # the attention backward overwrites the kept exponentials
        gx = self._backward_batch(ctx, g.reshape(B * h * w, -1), B, grads, input_grad)
        if input_grad:
            gx = gx.reshape(B, h, w, -1)
            grads["input"] = gx[0] if single else gx
        return grads

    def _backward_batch(self, ctx, dy, B, grads, input_grad):
        c, p = self.config, self._params
        h, w = ctx["h"], ctx["w"]
        T, H = h * w, c.num_heads
        dzo = _linear_backward(ctx["zo"], dy, p["out_proj.weight"], grads, "out_proj")
        dz, dgm, dbt = _ln_backward(dzo, ctx["lno"], p["norm_out.weight"])
        grads["norm_out.weight"] += dgm
        grads["norm_out.bias"] += dbt
        for b in reversed(range(c.num_blocks)):
            pre = f"blocks.{b}."
            cb = ctx[b]
            # MLP branch
            dg = _linear_backward(cb["g"], dz, p[pre + "mlp.fc2.weight"], grads, pre + "mlp.fc2")
            du = _gelu_backward(dg, cb["u"], cb["t"])
            dbb = _linear_backward(cb["bb"], du, p[pre + "mlp.fc1.weight"], grads, pre + "mlp.fc1")
            _, dgm, dbt = _ln_backward(dbb, cb["ln2"], p[pre + "norm2.weight"], dz)  # dz +=
            grads[pre + "norm2.weight"] += dgm
            grads[pre + "norm2.bias"] += dbt
            # attention branch
            do = _linear_backward(cb["o"], dz, p[pre + "attn.proj.weight"], grads,
                                  pre + "attn.proj")
            # (consumes the kept exponentials: backward runs once per forward)
            dqkv = _core.head_attention_bwd(cb["qkv"], cb["E"], cb["rz"],
                                            cb["o"].reshape(B, T, -1),
                                            do.reshape(B, T, -1), H).reshape(B * T, -1)
            dln = _linear_backward(cb["a"], dqkv, p[pre + "attn.qkv.weight"], grads,
                                   pre + "attn.qkv")
            _, dgm, dbt = _ln_backward(dln, cb["ln1"], p[pre + "norm1.weight"], dz)  # dz +=
            grads[pre + "norm1.weight"] += dgm
            grads[pre + "norm1.bias"] += dbt
        grads["pos_gain"] += np.einsum("bti,ti->i", dz.reshape(B, T, -1), self._pos(h, w))
        return _linear_backward(ctx["x"], dz, p["in_proj.weight"], grads, "in_proj", input_grad)

    # -------------------------------------------------------------------- I/O
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the configuration, the parameters and the record of the
        training features (:attr:`trained_on`) to an ``.npz`` file at ``path``."""
        arrays = {"param/" + k: v for k, v in self._params.items()}
        meta = json.dumps(head_meta(self))
        path = os.fspath(path)
        tmp = path + ".tmp.npz"
        np.savez(tmp, __meta__=np.array(meta), **arrays)
        os.replace(tmp, path)


def head_meta(head: "AttentionHead") -> dict:
    """The ``__meta__`` record of a head file: format, configuration and the
    features the head was trained on (None when it was not trained on a cache)."""
    # null for a head never trained on a cache (nothing to check); files of
    # geomatch before this record existed lack the key altogether
    return {"format": HEAD_FORMAT, "config": head.config.to_dict(), "features": head.trained_on}


def _check_npz_sizes(path) -> None:
    """Refuse an ``.npz`` member whose ``.npy`` header declares more data than
    the member holds, before NumPy allocates the declared array."""
    import zipfile

    fmt = np.lib.format
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                major, _ = fmt.read_magic(f)
                read_header = (fmt.read_array_header_1_0 if major == 1
                               else fmt.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                offset = f.tell()
            need = math.prod(shape) * dtype.itemsize
            if offset + need != info.file_size:
                raise ValueError(f"entry {info.filename} declares {dtype} {shape} "
                                 f"({need} bytes) but holds {info.file_size - offset} bytes")


def _file_kind(path: str) -> str:
    """'npz' (a zip archive), 'safetensors' (8-byte length + JSON header) or ''."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except IsADirectoryError:
        return ""
    if head[:4] == b"PK\x03\x04":
        return "npz"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return ""


def _name_mismatch(got, want) -> str:
    """'(missing [...], unexpected [...])' between two collections of names."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    return f"(missing {missing}, unexpected {extra})"


@dataclass(frozen=True)
class HeadFile:
    """The contents of a head file (:meth:`AttentionHead.save`, or a training
    checkpoint, which adds optimizer state and a ``train`` entry to the metadata).

    Attributes
    ----------
    path : str
    meta : dict
        The JSON metadata (``format``, ``config``, and for training
        checkpoints ``kind`` and ``train``).
    config : HeadConfig
        The architecture stored in ``meta["config"]``.
    arrays : dict of str -> ndarray
        Every stored array: ``param/<name>`` for the parameters, plus
        whatever else the file holds (a checkpoint's ``adamw/...`` state).
    """

    path: str
    meta: dict
    config: HeadConfig
    arrays: Dict[str, np.ndarray]

    def head(self, dtype=np.float32) -> "AttentionHead":
        """The :class:`AttentionHead` with this file's parameters (ValueError
        naming the path when names, shapes or values do not fit the config)."""
        path = self.path
        head = AttentionHead(self.config, dtype=dtype)
        params = {k[len("param/"):]: v for k, v in self.arrays.items() if k.startswith("param/")}
        shapes = head.expected_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"{path}: parameters do not match the head configuration "
                             f"{_name_mismatch(params, shapes)}")
        for k, v in params.items():
            if v.shape != shapes[k]:
                raise ValueError(f"{path}: parameter {k} has shape {v.shape}, the "
                                 f"configuration needs {shapes[k]}")
            if not np.isfinite(v).all():
                raise ValueError(f"{path}: parameter {k} contains non-finite values")
        head.set_parameters(params)
        rec = self.meta.get("features")
        if rec is not None and not (isinstance(rec, dict)
                                    and isinstance(rec.get("fingerprint"), str)):
            raise ValueError(f"{path}: corrupt record of the training features: {rec!r}")
        head.trained_on = rec
        # a file written before heads recorded their training features
        head._unrecorded_features = "features" not in self.meta
        return head


def read_head_file(path: Union[str, os.PathLike], *,
                   config: Optional[HeadConfig] = None) -> HeadFile:
    """Read a head file's metadata, configuration and arrays (no head is built).

    Parameters
    ----------
    path : path to the ``.npz`` file.
    config : HeadConfig, optional
        When given, the stored architecture must equal it.

    Returns
    -------
    HeadFile

    Raises
    ------
    FileNotFoundError if ``path`` does not exist; ValueError naming ``path``
    when it is not a readable head file of format :data:`HEAD_FORMAT` or its
    configuration is invalid or differs from ``config``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"head checkpoint not found: {path}")
    if _file_kind(path) != "npz":
        raise ValueError(f"{path}: not a geomatch head checkpoint (the .npz written by "
                         f"geomatch train or AttentionHead.save)")
    try:
        _check_npz_sizes(path)
        z = np.load(path, allow_pickle=False)
        files = dict(z.items())
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz head checkpoint ({exc})") from None
    if "__meta__" not in files:
        raise ValueError(f"{path}: not a geomatch head checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(str(files.pop("__meta__")))
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt head metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: unsupported head format {fmt!r}")
    try:
        cfg = HeadConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid head configuration ({exc})") from None
    if config is not None and cfg != config:
        raise ValueError(f"{path}: head architecture {cfg} does not match the requested "
                         f"{config}")
    return HeadFile(path, meta, cfg, files)


def load_head(path: Union[str, os.PathLike], *, config: Optional[HeadConfig] = None,
              dtype=np.float32) -> AttentionHead:
    """Load a head written by :meth:`AttentionHead.save`.

    Parameters
    ----------
    path : path to the ``.npz`` file (a training checkpoint works too) or the
        ``.safetensors`` file of :func:`export_head` / :func:`save_safetensors`.
    config : HeadConfig, optional
        When given, the file's architecture must equal it.
    dtype : float32 or float64.

    Raises
    ------
    FileNotFoundError if ``path`` does not exist; ValueError naming ``path`` when
    the file is not a head checkpoint or its configuration, parameter names or
    shapes do not match.
    """
    fs_path = os.fspath(path)
    if os.path.isfile(fs_path) and _file_kind(fs_path) == "safetensors":
        head = load_safetensors(fs_path, dtype=dtype)
        if config is not None and head.config != config:
            raise ValueError(f"{fs_path}: head architecture {head.config} does not match the "
                             f"requested {config}")
        return head
    if os.path.exists(fs_path) and _file_kind(fs_path) != "npz":
        raise ValueError(f"{fs_path}: not a geomatch head (expected the .npz of geomatch "
                         f"train / AttentionHead.save or the .safetensors of "
                         f"geomatch.head.export_head)")
    return read_head_file(path, config=config).head(dtype)


# outside geomatch: safetensors in PyTorch's layout and a torch module (no torch
# needed to import this module)
from .export import export_head, load_safetensors, save_safetensors, to_torch  # noqa: E402

"""Torch-free readers for DINOv2 weights.

Three layouts are understood:

* the official ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` files written by
  ``torch.save`` (a zip archive holding ``<name>/data.pkl`` and the raw
  storages ``<name>/data/<key>``), read with a restricted unpickler that only
  resolves the handful of names a state dict needs;
* Hugging Face ``facebook/dinov2-*`` directories (``config.json`` and
  ``model.safetensors``), whose tensor names are mapped to the reference
  layout;
* GECO's LoRA files (``w_a_000`` ... / ``w_b_000`` ...: rank-r updates of the
  q and v rows of every block's ``attn.qkv``), merged into qkv at load time.

Every reader returns ``{name: numpy array}`` in the reference (official
DINOv2) naming.  Nothing here imports torch.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import zipfile
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "read_torch_file",
    "read_safetensors",
    "write_safetensors",
    "read_torch_tensor",
    "read_hf_dir",
    "hf_to_reference",
    "merge_geco_lora",
    "is_lora_state",
    "check_state",
    "MAX_TENSOR_BYTES",
]

#: Largest single tensor (and torch storage) a weights file may declare, in
#: bytes (docs/limits.md).  The largest tensor of any released DINOv2 model
#: (ViT-g/14) is far below 1 GiB.
MAX_TENSOR_BYTES = 4 << 30

# Errors a malformed file can raise from inside zipfile, pickle, json, struct
# or int(): all are turned into one ValueError naming the file.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, EOFError,
                RecursionError, OverflowError, struct.error, TypeError, KeyError,
                IndexError, AttributeError, UnicodeDecodeError, NotImplementedError,
                ValueError, MemoryError)

# --------------------------------------------------------------------------
# dtypes


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 -> float32 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


# Element types of the two formats: torch storage class, safetensors dtype
# code, NumPy dtype of the raw bytes, and whether those are bfloat16.
_DTYPE_TABLE = (
    ("FloatStorage", "F32", np.float32, False),
    ("DoubleStorage", "F64", np.float64, False),
    ("HalfStorage", "F16", np.float16, False),
    ("BFloat16Storage", "BF16", np.uint16, True),
    ("LongStorage", "I64", np.int64, False),
    ("IntStorage", "I32", np.int32, False),
    ("ShortStorage", "I16", np.int16, False),
    ("CharStorage", "I8", np.int8, False),
    ("ByteStorage", "U8", np.uint8, False),
    ("BoolStorage", "BOOL", np.bool_, False),
)
# torch storage class name / safetensors dtype -> (numpy dtype of the raw bytes, is_bfloat16)
_TORCH_STORAGES = {torch_name: (dt, bf16) for torch_name, _, dt, bf16 in _DTYPE_TABLE}
_SAFETENSORS_DTYPES = {st_name: (dt, bf16) for _, st_name, dt, bf16 in _DTYPE_TABLE}


def _check_exists(path: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


# --------------------------------------------------------------------------
# torch.save zip archives


class _StorageType:
    __slots__ = ("name", "dtype", "bf16")

    def __init__(self, name: str):
        self.name = name
        self.dtype, self.bf16 = _TORCH_STORAGES[name]

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"checkpoint tries to set attributes of torch.{self.name}")


class _Storage:
    """A storage read from the archive: flat array of its dtype."""

    def __init__(self, data: np.ndarray, bf16: bool):
        self.data = data
        self.bf16 = bf16


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise ValueError("malformed checkpoint: tensor without a storage")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError("malformed checkpoint: bad tensor size/stride")
    flat = storage.data
    offset = int(storage_offset)
    numel = math.prod(size)
    # A tensor may not hold more elements than its storage (a stride-0 view of
    # a huge shape would otherwise turn a tiny file into a huge allocation).
    if numel > flat.size:
        raise ValueError(f"malformed checkpoint: a tensor of shape {size} declares {numel} "
                         f"elements but its storage holds {flat.size}")
    if 0 in size:
        out = np.zeros(size, dtype=flat.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or last >= flat.size:
            raise ValueError("malformed checkpoint: tensor extends past its storage")
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
        out = np.array(view)  # own, contiguous copy
    if storage.bf16:
        out = _bf16_to_f32(out)
    return out


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


class _Sealed:
    """What :meth:`_RestrictedUnpickler.find_class` hands to the pickle
    machinery: callable, but without attributes to set.  The pickle BUILD
    opcode (``__setstate__`` / attribute assignment) on it is refused, so a
    file cannot change the reader's functions (e.g. their ``__defaults__``)."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"checkpoint tries to set attributes of {self._name}")

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"checkpoint tries to set attributes of {self._name}")

    __delattr__ = __setattr__


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch state dicts: resolves only the names they use."""

    def __init__(self, fobj, zf: zipfile.ZipFile, prefix: str):
        super().__init__(fobj)
        self._zf = zf
        self._prefix = prefix
        self._storages: Dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            import collections
            return _Sealed(collections.OrderedDict, "collections.OrderedDict")
        if module == "torch._utils" and name in _REBUILDERS:
            return _Sealed(_REBUILDERS[name], f"torch._utils.{name}")
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"checkpoint refers to {module}.{name}, which a weights file should not need "
            "(only tensors and dicts are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])   # pid[3]: location, unused
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("unsupported storage type in checkpoint")
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                info = self._zf.getinfo(name)
            except KeyError:
                raise ValueError(f"malformed checkpoint: storage {name} is missing") from None
            dtype = np.dtype(stype.dtype).newbyteorder("<")
            need = numel * dtype.itemsize
            # Sizes are checked against the entry's declared size before a
            # byte is inflated, and only `need` bytes are ever read.
            if numel < 0 or need > MAX_TENSOR_BYTES:
                raise ValueError(f"malformed checkpoint: storage {name} declares {numel} "
                                 f"elements ({need} bytes; the limit is {MAX_TENSOR_BYTES})")
            if info.file_size != need:
                raise ValueError(f"malformed checkpoint: storage {name} holds {info.file_size} "
                                 f"bytes but declares {numel} elements ({need} bytes)")
            with self._zf.open(info) as f:
                raw = f.read(need)
            if len(raw) != need:
                raise ValueError(f"malformed checkpoint: storage {name} is truncated")
            data = np.frombuffer(raw, dtype=dtype, count=numel)
            self._storages[key] = _Storage(data, stype.bf16)
        return self._storages[key]


def read_torch_file(path) -> Dict[str, np.ndarray]:
    """Read a ``torch.save`` zip checkpoint into ``{name: array}`` without torch.

    Nested dicts (e.g. ``{"model": state_dict}`` or ``{"state_dict": ...}``)
    are unwrapped when they are the only tensor container.  bfloat16 tensors
    become float32; float16 stays float16.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zip-format torch checkpoint, or malformed.
    """
    path = _check_exists(path)
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a torch zip checkpoint (legacy torch.save format or another "
            "file type); re-save it with torch>=1.6 or use a safetensors file")
    return _flatten_state(_load_torch_object(path), path)


def _load_torch_object(path: str):
    """The object of a torch zip archive (tensors as NumPy arrays); every
    failure (CRC, nesting, sizes, refused names) is a ValueError naming ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkls = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if len(pkls) != 1:
                raise ValueError(f"expected one data.pkl in the archive, found {len(pkls)}")
            prefix = pkls[0][: -len("data.pkl")]
            with zf.open(pkls[0]) as f:
                return _RestrictedUnpickler(f, zf, prefix).load()
    except _READ_ERRORS as exc:
        raise _reader_error(path, exc) from None


def read_torch_tensor(path) -> np.ndarray:
    """Read a ``torch.save``-d tensor (or a dict holding exactly one) without torch.

    This is how GECO's and GeoAware-SC's per-image feature files are stored.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zip-format torch file, or it holds no single tensor.
    """
    path = _check_exists(path)
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a torch zip file (legacy torch.save format or "
                         "another file type)")
    obj = _load_torch_object(path)
    if isinstance(obj, Mapping):
        arrays = [v for v in obj.values() if isinstance(v, np.ndarray)]
        if len(arrays) == 1:
            return arrays[0]
        raise ValueError(f"{path}: expected one tensor, found a dict with "
                         f"{len(arrays)} tensors ({', '.join(map(str, obj))})")
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path}: expected a tensor, found {type(obj).__name__}")
    return obj


def _reader_error(path, exc) -> ValueError:
    """One ValueError naming ``path`` for any failure of a reader."""
    msg = str(exc)
    if isinstance(exc, RecursionError):
        msg = "nested too deeply"
    elif isinstance(exc, MemoryError):
        msg = "declares more memory than is available"
    elif not isinstance(exc, ValueError) or not msg:
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if msg.startswith(f"{path}:") or msg.startswith(f"{path} "):
        return ValueError(msg)
    return ValueError(f"{path}: unreadable weights file ({msg})")


_REBUILDERS = {
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


def _flatten_state(obj, path, depth: int = 0) -> Dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: the checkpoint does not hold a dict of tensors")
    if all(isinstance(v, np.ndarray) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    for key in ("model", "state_dict", "teacher", "student"):
        if key in obj and isinstance(obj[key], Mapping) and depth < 8:
            return _flatten_state(obj[key], path, depth + 1)
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        raise ValueError(f"{path}: no tensors found in the checkpoint")
    return out


# --------------------------------------------------------------------------
# safetensors


def read_safetensors(path) -> Dict[str, np.ndarray]:
    """Read a ``.safetensors`` file: u64 little-endian header length, JSON
    header ``{name: {dtype, shape, data_offsets}}``, then the raw data.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Naming ``path``: not a safetensors file, negative or oversized shapes,
        data offsets that are reversed, overlap or lie outside the file.
    """
    path = _check_exists(path)
    try:
        return _read_safetensors(path)
    except _READ_ERRORS as exc:
        raise _reader_error(path, exc) from None


def _read_safetensors(path) -> Dict[str, np.ndarray]:
    if os.path.isdir(path):
        raise ValueError(f"{path}: not a safetensors file (a directory)")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        size = os.path.getsize(path)
        if n > size - 8:
            raise ValueError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    nbytes = size - 8 - n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, bf16 = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(_json_int(s) for s in info["shape"])
            begin, end = (_json_int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: bad or unsupported header entry for {name!r}") from None
        if any(s < 0 for s in shape):
            raise ValueError(f"{path}: tensor {name!r} has a negative shape {list(shape)}")
        dt = np.dtype(dtype).newbyteorder("<")
        need = math.prod(shape) * dt.itemsize
        if need > MAX_TENSOR_BYTES:
            raise ValueError(f"{path}: tensor {name!r} of shape {list(shape)} is larger than "
                             f"the limit of {MAX_TENSOR_BYTES} bytes")
        if not 0 <= begin <= end <= nbytes or end - begin != need:
            raise ValueError(f"{path}: tensor {name!r} has inconsistent data offsets "
                             f"[{begin}, {end}] (shape {list(shape)} needs {need} bytes; "
                             f"the data holds {nbytes})")
        entries.append((begin, end, name, dt, bf16, shape))
    entries.sort(key=lambda e: (e[0], e[1]))
    for a, b in zip(entries, entries[1:]):
        if b[0] < a[1]:
            raise ValueError(f"{path}: tensors {a[2]!r} and {b[2]!r} overlap in the data")
    # memory-map the data so that only one copy of the weights is made
    data = (np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if nbytes > 0
            else np.zeros(0, np.uint8))
    out = {}
    for begin, end, name, dt, bf16, shape in entries:
        count = math.prod(shape)
        arr = np.frombuffer(data, dtype=dt, count=count, offset=begin).reshape(shape).copy()
        out[name] = _bf16_to_f32(arr) if bf16 else arr
    return out


def _json_int(v) -> int:
    """An integer from a JSON header (bool, float and strings refused)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"not an integer: {v!r}")
    return v


_WRITE_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
                 np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
                 np.dtype(np.int32): "I32", np.dtype(np.int16): "I16", np.dtype(np.int8): "I8",
                 np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def write_safetensors(path, tensors: Mapping[str, np.ndarray],
                      metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write ``{name: array}`` as a ``.safetensors`` file (what
    :func:`read_safetensors` and the ``safetensors`` package read).

    Written to a temporary file in the same folder and renamed, so ``path``
    never holds half a file.  ``metadata`` values must be strings.
    """
    path = os.fspath(path)
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
        if np.dtype(dt) not in _WRITE_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be written to safetensors")
        raw = np.ascontiguousarray(arr, dtype=np.dtype(dt).newbyteorder("<")).tobytes()
        header[name] = {"dtype": _WRITE_DTYPES[np.dtype(dt)], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        arrays.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    from ..runtime.files import atomic_file

    with atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in arrays:
            f.write(raw)
    return path


# --------------------------------------------------------------------------
# Hugging Face layout

_HF_PREFIXES = ("dinov2.", "dinov2_with_registers.", "model.")

_HF_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}

_HF_LAYER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.w12",
    "mlp.weights_out": "mlp.w3",
}

_HF_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def hf_to_reference(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename a Hugging Face ``Dinov2Model`` state dict to the official layout.

    query/key/value are concatenated into ``attn.qkv``; ``layer_scale{1,2}``
    become ``ls{1,2}.gamma``.  Unknown names are kept as they are (and then
    reported as unexpected by :func:`check_state`); a q/k/v triple with a
    member missing is kept unmerged for the same reason.
    """
    out: Dict[str, np.ndarray] = {}
    qkv: Dict[Tuple[int, str], Dict[str, np.ndarray]] = {}
    for name, arr in state.items():
        key = name
        for p in _HF_PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                break
        if key in _HF_SIMPLE:
            out[_HF_SIMPLE[key]] = arr
            continue
        m = _HF_LAYER_RE.match(key)
        if m is None:
            out[name] = arr
            continue
        i, mod, kind = int(m.group(1)), m.group(2), m.group(3)
        if mod in ("layer_scale1", "layer_scale2") and kind == "lambda1":
            out[f"blocks.{i}.ls{mod[-1]}.gamma"] = arr
        elif mod in ("attention.attention.query", "attention.attention.key",
                     "attention.attention.value") and kind != "lambda1":
            qkv.setdefault((i, kind), {})[mod.rsplit(".", 1)[1]] = arr
        elif mod in _HF_LAYER and kind != "lambda1":
            out[f"blocks.{i}.{_HF_LAYER[mod]}.{kind}"] = arr
        else:
            out[name] = arr
    for (i, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"} and len(
                {p.shape[1:] for p in parts.values()}) == 1:
            out[f"blocks.{i}.attn.qkv.{kind}"] = np.concatenate(
                [parts["query"], parts["key"], parts["value"]], axis=0)
        else:
            for part, arr in parts.items():
                out[f"encoder.layer.{i}.attention.attention.{part}.{kind}"] = arr
    return out


def read_hf_dir(path) -> Tuple[Dict[str, np.ndarray], dict]:
    """Read a Hugging Face DINOv2 directory: (reference-layout state, config.json)."""
    path = _check_exists(path)
    cfg_path = os.path.join(path, "config.json")
    st_path = os.path.join(path, "model.safetensors")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"Hugging Face model directory without config.json: {cfg_path}")
    if not os.path.exists(st_path):
        raise FileNotFoundError(
            f"Hugging Face model directory without model.safetensors: {st_path}")
    try:
        with open(cfg_path, "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
    except _READ_ERRORS as exc:
        raise _reader_error(cfg_path, exc) from None
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path}: not a Hugging Face config (not a JSON object)")
    return hf_to_reference(read_safetensors(st_path)), config


# --------------------------------------------------------------------------
# GECO LoRA

_LORA_RE = re.compile(r"^w_([ab])_(\d{3,})$")


def is_lora_state(state: Mapping[str, np.ndarray]) -> bool:
    """True if every tensor of ``state`` is a GECO LoRA factor (w_a_###/w_b_###)."""
    return bool(state) and all(_LORA_RE.match(k) for k in state)


def merge_geco_lora(state: Dict[str, np.ndarray], lora: Mapping[str, np.ndarray],
                    depth: int, dim: int) -> Dict[str, np.ndarray]:
    """Merge GECO's LoRA factors into the qkv weights (a new dict is returned).

    GECO (``src/models/featurizer/dinov2_lora.py``) adds, for every block i,
    ``B_q A_q x`` to the q rows and ``B_v A_v x`` to the v rows of
    ``blocks.i.attn.qkv``, with no extra scaling; the factors are saved as
    ``w_a_{2i:03d}`` / ``w_b_{2i:03d}`` (q) and ``w_a_{2i+1:03d}`` /
    ``w_b_{2i+1:03d}`` (v), A of shape (r, dim) and B of shape (dim, r).

    Raises
    ------
    ValueError
        Listing every missing, unexpected or mis-shaped LoRA tensor.
    """
    expected = [f"w_{ab}_{j:03d}" for ab in "ab" for j in range(2 * depth)]
    missing = [k for k in expected if k not in lora]
    extra = sorted(k for k in lora if k not in set(expected))
    ranks = {np.shape(lora[k])[0] for k in expected if k.startswith("w_a") and k in lora
             and np.ndim(lora[k]) == 2}
    r = min(ranks) if ranks else 0
    bad = []
    for k in expected:
        if k not in lora:
            continue
        want = (r, dim) if k.startswith("w_a") else (dim, r)
        if tuple(np.shape(lora[k])) != want:
            bad.append(f"{k} {tuple(np.shape(lora[k]))} (expected {want})")
    if missing or extra or bad:
        raise ValueError("GECO LoRA weights do not match the model: "
                         + _problems(missing, extra, bad))
    out = dict(state)
    for i in range(depth):
        key = f"blocks.{i}.attn.qkv.weight"
        w = np.array(out[key], dtype=np.float64)
        for part, j in ((0, 2 * i), (2, 2 * i + 1)):
            a = np.asarray(lora[f"w_a_{j:03d}"], dtype=np.float64)
            b = np.asarray(lora[f"w_b_{j:03d}"], dtype=np.float64)
            w[part * dim:(part + 1) * dim] += b @ a
        out[key] = w.astype(np.float32)
    return out


# --------------------------------------------------------------------------
# validation


def _problems(missing, extra, bad, show: int = 4) -> str:
    """Counts of each kind of problem with the first ``show`` names of each
    (a file of another model differs in every tensor: the full list would be
    kilobytes long)."""
    def names(items):
        items = list(items)
        more = f", ... ({len(items) - show} more)" if len(items) > show else ""
        return ", ".join(items[:show]) + more

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: " + names(missing))
    if extra:
        parts.append(f"unexpected {len(extra)}: " + names(extra))
    if bad:
        parts.append(f"wrong shape {len(bad)}: " + names(bad))
    return "; ".join(parts)


def check_state(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                source: str, optional: Tuple[str, ...] = ("mask_token",)) -> None:
    """Raise ValueError listing every missing, unexpected and mis-shaped tensor.

    ``optional`` names may be absent (``mask_token`` is unused at inference).
    Non-finite values are reported as well.
    """
    missing = [k for k in expected if k not in state and k not in optional]
    extra = sorted(k for k in state if k not in expected)
    bad = [f"{k} {tuple(np.shape(state[k]))} (expected {tuple(expected[k])})"
           for k in expected if k in state and tuple(np.shape(state[k])) != tuple(expected[k])]
    if missing or extra or bad:
        raise ValueError(f"{source}: weights do not match the model: "
                         + _problems(missing, extra, bad))
    nonfinite = [k for k in expected if k in state
                 and np.issubdtype(np.asarray(state[k]).dtype, np.floating)
                 and not np.isfinite(state[k]).all()]
    if nonfinite:
        raise ValueError(f"{source}: non-finite values in " + ", ".join(nonfinite))
    notfloat = [k for k in expected if k in state
                and not np.issubdtype(np.asarray(state[k]).dtype, np.floating)]
    if notfloat:
        raise ValueError(f"{source}: tensors that are not floating point: " + ", ".join(notfloat))

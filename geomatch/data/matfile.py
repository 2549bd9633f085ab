"""A small reader for the numeric matrices of MATLAB level-5 ``.mat`` files.

PF-PASCAL's annotations (``Annotations/<category>/<image>.mat``) hold two
numeric matrices, ``kps`` (K x 2, NaN rows for absent keypoints) and
``bbox`` (1 x 4).  This reader understands what such files use, so that the
dataset loader needs no scipy:

* the 128-byte header (text, subsystem offset, version, endian indicator
  ``IM`` little-endian or ``MI`` big-endian);
* top-level data elements, plain or ``miCOMPRESSED`` (zlib), each an
  ``miMATRIX`` of a numeric class (double, single, int8 ... uint64, also
  logical), real, of any rank, stored column-major with any storage type
  (MATLAB may store a double matrix as, e.g., ``miUINT8``);
* the small data element format (a tag whose upper 16 bits hold the size).

Other variables (cells, structs, strings, sparse, complex) are skipped when
not asked for.  Files it cannot read (MAT v4, v7.3/HDF5, a requested variable
of another kind) raise :class:`UnsupportedMatFile`; callers may then try
``scipy.io.loadmat``.  Malformed files raise ValueError naming the file.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Dict, Iterable, Optional

import numpy as np

__all__ = ["read_mat", "UnsupportedMatFile", "MAX_ELEMENT_BYTES"]

#: Largest decompressed size of one variable, in bytes (annotation files are
#: a few hundred bytes; see docs/limits.md).
MAX_ELEMENT_BYTES = 64 << 20

_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
       12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# mxCLASS -> numpy dtype of the array
_MX = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
       14: "i8", 15: "u8"}
_FLAG_COMPLEX = 0x0800


class UnsupportedMatFile(ValueError):
    """A valid-looking .mat file using features this reader does not handle."""


class _Reader:
    def __init__(self, buf: bytes, order: str, path: str):
        self.buf, self.order, self.path, self.pos = buf, order, path, 0

    def bad(self, why) -> ValueError:
        return ValueError(f"{self.path}: malformed .mat file ({why})")

    def tag(self):
        """(type, nbytes, data start, next element start)."""
        if self.pos + 8 > len(self.buf):
            raise self.bad("truncated data element tag")
        (first,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        if first >> 16:  # small data element: size in the upper half, data in 4 bytes
            mtype, nbytes = first & 0xFFFF, first >> 16
            if nbytes > 4:
                raise self.bad("small data element larger than 4 bytes")
            return mtype, nbytes, self.pos + 4, self.pos + 8
        mtype, nbytes = struct.unpack_from(self.order + "II", self.buf, self.pos)
        start = self.pos + 8
        if start + nbytes > len(self.buf):
            raise self.bad("data element extends past the end")
        return mtype, nbytes, start, start + nbytes + (-nbytes % 8)

    def element(self):
        mtype, nbytes, start, nxt = self.tag()
        self.pos = min(nxt, len(self.buf))
        return mtype, self.buf[start:start + nbytes]


def _values(path, order, mtype, raw) -> np.ndarray:
    if mtype not in _MI:
        raise UnsupportedMatFile(f"{path}: .mat data of storage type {mtype} is not supported")
    dt = np.dtype(_MI[mtype]).newbyteorder(order)
    if len(raw) % dt.itemsize:
        raise ValueError(f"{path}: malformed .mat file (data size {len(raw)} is not a multiple "
                         f"of {dt.itemsize})")
    return np.frombuffer(raw, dtype=dt)


def _matrix(path, order, body: bytes, want: Optional[set]):
    """(name, array or None) of one miMATRIX body."""
    r = _Reader(body, order, path)
    if not body:
        return None, None
    t, flags_raw = r.element()
    if t != 6 or len(flags_raw) < 8:
        raise r.bad("array flags missing")
    flags, = struct.unpack_from(order + "I", flags_raw, 0)
    cls = flags & 0xFF
    t, dims_raw = r.element()
    if t != 5:
        raise r.bad("dimensions missing")
    dims = tuple(int(d) for d in _values(path, order, 5, dims_raw))
    if any(d < 0 for d in dims):
        raise r.bad(f"negative dimensions {dims}")
    t, name_raw = r.element()
    if t not in (1, 2):
        raise r.bad("array name missing")
    name = bytes(name_raw).decode("ascii", "replace")
    if want is not None and name not in want:
        return name, None
    if cls not in _MX or flags & _FLAG_COMPLEX:
        raise UnsupportedMatFile(f"{path}: variable {name!r} is not a real numeric matrix "
                                 f"(class {cls}); only numeric matrices are read")
    t, raw = r.element()
    vals = _values(path, order, t, raw)
    count = int(np.prod(dims, dtype=np.int64)) if dims else 0
    if vals.size != count:
        raise r.bad(f"variable {name!r} holds {vals.size} values for dimensions {dims}")
    # (a logical matrix comes back as its class, uint8, as scipy.io.loadmat does)
    return name, vals.astype(_MX[cls]).reshape(dims, order="F")


def read_mat(path, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Numeric variables of a level-5 ``.mat`` file as ``{name: array}``.

    Parameters
    ----------
    path : path of the file.
    names : only these variables (others are skipped without being decoded).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnsupportedMatFile
        A MAT v4 or v7.3 (HDF5) file, or a requested variable that is not a
        real numeric matrix.
    ValueError
        A malformed file (the message names it).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 128:
        raise ValueError(f"{path}: not a MATLAB .mat file (shorter than its 128-byte header)")
    if buf[:19] == b"MATLAB 7.3 MAT-file":
        raise UnsupportedMatFile(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported")
    endian = buf[126:128]
    if not buf.startswith(b"MATLAB") or endian not in (b"IM", b"MI"):
        raise UnsupportedMatFile(f"{path}: not a MATLAB level-5 .mat file")
    order = "<" if endian == b"IM" else ">"
    want = None if names is None else set(names)
    out: Dict[str, np.ndarray] = {}
    r = _Reader(buf, order, path)
    r.pos = 128
    while r.pos < len(buf):
        mtype, nbytes, start, nxt = r.tag()
        body = buf[start:start + nbytes]
        if mtype == _MI_COMPRESSED:
            r.pos = start + nbytes  # compressed elements are not padded
            d = zlib.decompressobj()
            try:
                inner = d.decompress(body, MAX_ELEMENT_BYTES + 8)
            except zlib.error as exc:
                raise r.bad(f"corrupt compressed element: {exc}") from None
            if d.unconsumed_tail:
                raise ValueError(f"{path}: a compressed variable inflates to more than "
                                 f"{MAX_ELEMENT_BYTES} bytes")
            ir = _Reader(inner, order, path)
            mtype, body = ir.element()
        else:
            r.pos = nxt
        if mtype != _MI_MATRIX:
            continue  # e.g. subsystem data
        if len(body) > MAX_ELEMENT_BYTES:
            raise ValueError(f"{path}: a variable is larger than {MAX_ELEMENT_BYTES} bytes")
        name, arr = _matrix(path, order, body, want)
        if arr is not None:
            out[name] = arr
    return out

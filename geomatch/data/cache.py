"""On-disk cache of backbone feature maps, one ``.npy`` file per image
(docs/method.md#feature-cache).

Layout of a cache directory::

    PATH/manifest.json           what produced the features (see below)
    PATH/index.json              the stored (key, flipped) entries, rebuilt from the files
    PATH/features/<name>.npy     (h, w, D) array of one image
    PATH/features/<name>@flip.npy  the same for the horizontally flipped image

``<name>`` is the image key (``ImageRecord.key``, e.g. ``"cat/2008_000123"``)
percent-encoded into a single file name.  Every file is written to a temporary
name in the same folder and then renamed (``os.replace``), so a reader sees
either the whole array or nothing; leftover temporary files (``.tmp-*``) of an
interrupted writer are ignored.  Files are created with the permissions the
process umask allows (a cache can be shared by a group), and the manifest is
published with a hard link, which fails when the name exists: of several
processes creating the same cache at once, exactly one writes the manifest
and the others compare theirs with it.

The manifest is a dict with the fields

``backbone`` (str), ``weights_sha256`` (str), ``resolution`` ([H, W] of the
network input), ``preprocess`` (``"resize"``: stretch to the resolution, as
GECO does for 518×518; ``"pad"``: longest side to S, zero-padded to a square,
as GeoAware-SC does), ``grid`` ([h, w]), ``dim`` (D), ``dtype``
(``"float16"`` or ``"float32"``), ``engine`` (what computed the features:
``"c"``, geomatch's torch-free C engine, the default and the value of a
manifest written before the field existed; ``"torch-float32"``,
``"torch-float16"``, ``"torch-bfloat16"``: the PyTorch engine and its compute
precision; ``"external"``: maps made outside geomatch,
:func:`geomatch.data.external.feature_manifest`) and ``geomatch_version``.  Extra fields are kept.  Two manifests
are the same cache when every field other than ``geomatch_version`` agrees,
so features of two engines never share a cache (see docs/scaling.md).
"""
from __future__ import annotations

import errno
import json
import os
import threading
from typing import Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote, unquote

import numpy as np

from .._version import __version__
from ..geometry import grid_frame  # re-exported: the frame of an image in the input
from ..runtime.files import atomic_file, create_temp

__all__ = ["FeatureCache", "grid_frame", "MANIFEST_FIELDS", "features_fingerprint",
           "check_features_record"]

MANIFEST_FIELDS = ("backbone", "weights_sha256", "resolution", "preprocess", "grid", "dim",
                   "dtype", "engine", "geomatch_version")
_IGNORED_IN_COMPARISON = ("geomatch_version",)
_FLIP_SUFFIX = "@flip"


def _normalize_manifest(manifest: Mapping) -> dict:
    """Validate a manifest and return it with JSON-normal types."""
    if not isinstance(manifest, Mapping):
        raise TypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    m = dict(manifest)
    m.setdefault("geomatch_version", __version__)
    m.setdefault("engine", "c")
    missing = [f for f in MANIFEST_FIELDS if f not in m]
    if missing:
        raise ValueError(f"manifest: missing fields {missing}")
    for f in ("backbone", "weights_sha256", "geomatch_version", "engine"):
        if not isinstance(m[f], str):
            raise TypeError(f"manifest field {f!r} must be a string, got {m[f]!r}")
    for f in ("resolution", "grid"):
        v = m[f]
        if (not isinstance(v, (list, tuple)) or len(v) != 2
                or not all(isinstance(x, (int, np.integer)) and int(x) > 0 for x in v)):
            raise ValueError(f"manifest field {f!r} must be two positive integers [H, W], got {v!r}")
        m[f] = [int(v[0]), int(v[1])]
    if not isinstance(m["dim"], (int, np.integer)) or int(m["dim"]) <= 0:
        raise ValueError(f"manifest field 'dim' must be a positive integer, got {m['dim']!r}")
    m["dim"] = int(m["dim"])
    if m["preprocess"] not in ("resize", "pad"):
        raise ValueError(f"manifest field 'preprocess' must be 'resize' or 'pad', got {m['preprocess']!r}")
    if m["preprocess"] == "pad" and m["resolution"][0] != m["resolution"][1]:
        raise ValueError(f"manifest: preprocess 'pad' needs a square resolution, got {m['resolution']}")
    if m["dtype"] not in ("float16", "float32"):
        raise ValueError(f"manifest field 'dtype' must be 'float16' or 'float32', got {m['dtype']!r}")
    try:
        json.dumps(m)
    except TypeError as exc:
        raise TypeError(f"manifest must be JSON-serializable: {exc}") from None
    return m


def _atomic_write_text(path: str, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def _publish_once(path: str, text: str) -> bool:
    """Write ``path`` atomically unless it exists; True when this call wrote it.

    The complete file is hard-linked to ``path``; ``link`` fails when the name
    exists, so concurrent writers cannot replace each other's file.
    """
    fd, tmp = create_temp(os.path.dirname(path), ".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        try:  # exclusive create, then the content (readers retry a partial file)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    finally:
        _silent_unlink(tmp)


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def key_to_filename(key: str, flipped: bool = False) -> str:
    """File name (inside ``features/``) of an image key; reversible."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty string, got {key!r}")
    name = quote(key, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + (_FLIP_SUFFIX if flipped else "") + ".npy"


def filename_to_key(name: str) -> Optional[Tuple[str, bool]]:
    """Inverse of :func:`key_to_filename`; None for files that are not entries."""
    if name.startswith(".") or not name.endswith(".npy"):
        return None
    stem = name[:-4]
    flipped = stem.endswith(_FLIP_SUFFIX)
    if flipped:
        stem = stem[: -len(_FLIP_SUFFIX)]
    if not stem:
        return None
    return unquote(stem), flipped


class FeatureCache:
    """A directory of per-image feature maps with a manifest.

    Create with :meth:`create` (or reopen an existing cache for resuming) and
    open read-only-ish with :meth:`open`; do not call the constructor directly.

    Examples
    --------
    >>> cache = FeatureCache.create("/tmp/feats", manifest)          # doctest: +SKIP
    >>> cache.put("cat/img1", feats)                                 # doctest: +SKIP
    >>> cache.get("cat/img1").shape                                  # doctest: +SKIP
    (37, 37, 768)
    """

    def __init__(self, path: str, manifest: dict, _token=None):
        if _token is not _TOKEN:
            raise TypeError("use FeatureCache.create(path, manifest) or FeatureCache.open(path)")
        self.path = os.path.abspath(os.fspath(path))
        self._manifest = manifest
        self._dir = os.path.join(self.path, "features")
        self._lock = threading.Lock()
        self._entries = set()
        self._dirty = False
        self._npy_header: Optional[bytes] = None   # see read()
        self.refresh()

    # ------------------------------------------------------------ factories
    @classmethod
    def create(cls, path, manifest: Mapping) -> "FeatureCache":
        """Create a cache at ``path``, or reopen it when it holds the same manifest.

        Raises
        ------
        ValueError
            When ``path`` already holds a cache with a different manifest (the
            message lists the differing fields), or the manifest is invalid.
        """
        path = os.path.abspath(os.fspath(path))
        m = _normalize_manifest(manifest)
        mpath = os.path.join(path, "manifest.json")
        if not os.path.exists(mpath):
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"feature cache path {path} exists and is not a directory")
            os.makedirs(os.path.join(path, "features"), exist_ok=True)
            if _publish_once(mpath, json.dumps(m, indent=2, sort_keys=True) + "\n"):
                return cls(path, m, _TOKEN)
        # an existing cache (possibly created a moment ago by another process)
        old = _read_manifest(mpath, retry=True)
        keys = sorted((set(old) | set(m)) - set(_IGNORED_IN_COMPARISON))
        diff = [k for k in keys if old.get(k) != m.get(k)]
        if diff:
            details = ", ".join(f"{k}: cached {old.get(k)!r} != requested {m.get(k)!r}"
                                for k in diff)
            raise ValueError(f"feature cache {path} exists with a different manifest "
                             f"(fields {diff}: {details})")
        return cls(path, old, _TOKEN)

    @classmethod
    def open(cls, path) -> "FeatureCache":
        """Open an existing cache.

        Raises
        ------
        FileNotFoundError
            When ``path`` holds no cache (the message names the path).
        """
        path = os.path.abspath(os.fspath(path))
        mpath = os.path.join(path, "manifest.json")
        if not os.path.isfile(mpath):
            raise FileNotFoundError(f"no feature cache at {path} (missing {mpath})")
        return cls(path, _read_manifest(mpath), _TOKEN)

    # ------------------------------------------------------------ properties
    @property
    def manifest(self) -> dict:
        """A copy of the manifest dict."""
        return json.loads(json.dumps(self._manifest))

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(h, w, D) of every stored array."""
        h, w = self._manifest["grid"]
        return int(h), int(w), int(self._manifest["dim"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._manifest["dtype"])

    def _file(self, key: str, flipped: bool) -> str:
        return os.path.join(self._dir, key_to_filename(key, bool(flipped)))

    # ------------------------------------------------------------ entries
    def put(self, key: str, features, flipped: bool = False, *,
            layout: Optional[str] = None) -> None:
        """Store the (h, w, D) features of image ``key`` atomically.

        The array is converted to the manifest's dtype; an existing entry is
        replaced.

        Parameters
        ----------
        key : str
            Image key (e.g. ``"cat/2008_000123"``).
        features : array_like or torch tensor, (h, w, D)
            Channel-last map; a leading axis of length 1 is dropped.
        flipped : bool
            Whether these are the features of the horizontally flipped image.
        layout : {None, "hwc", "chw"}
            ``"chw"`` for a channel-first ``(D, h, w)`` map (transposed
            here); ``None`` refuses a map that looks channel-first (see
            :mod:`geomatch.ops.layout`).

        Raises
        ------
        ValueError
            Wrong shape, non-finite values, or a channel-first-looking map
            without ``layout``.
        TypeError
            Non-numeric array, bad key, or a torch tensor that requires grad
            or is bfloat16 (the message says what to call).
        """
        from ..ops.layout import as_feature_map

        arr = as_feature_map("features", features, layout)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"features must be a numeric array, got dtype {arr.dtype}")
        if arr.shape != self.shape:
            raise ValueError(f"features for {key!r} must have shape {self.shape} "
                             f"(grid {self._manifest['grid']}, dim {self._manifest['dim']}), got {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(arr, dtype=self.dtype)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"features for {key!r} contain non-finite values "
                             f"(after conversion to {self.dtype})")
        final = self._file(key, flipped)
        try:
            os.makedirs(self._dir, exist_ok=True)
            with atomic_file(final, "wb") as f:
                np.lib.format.write_array(f, out, allow_pickle=False)
        except OSError as exc:
            # e.g. a full disk: name the file (write_array's error does not)
            raise OSError(exc.errno, f"cannot write feature cache file {final}: "
                                     f"{exc.strerror or exc}", final) from None
        with self._lock:
            self._entries.add((key, bool(flipped)))
            self._dirty = True

    def get(self, key: str, flipped: bool = False) -> np.ndarray:
        """The (h, w, D) features of ``key``, memory-mapped read-only.

        Raises
        ------
        KeyError
            When the cache has no such entry (the message names key and cache).
        ValueError
            When the stored array does not match the manifest.
        """
        fn = self._file(key, flipped)
        try:
            arr = np.load(fn, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            what = "flipped features" if flipped else "features"
            raise KeyError(f"feature cache {self.path} has no {what} for {key!r}") from None
        except (ValueError, OSError, EOFError) as exc:
            detail = "not an .npy array" if "pickle" in str(exc) else str(exc)
            raise ValueError(f"feature cache file {fn} of {key!r} is damaged ({detail}); "
                             f"delete it and rerun geomatch extract to recompute it") from None
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"feature cache file {fn} holds {arr.dtype} {arr.shape}, "
                             f"expected {self.dtype} {self.shape}")
        return arr

    def read(self, key: str, flipped: bool = False, out: Optional[np.ndarray] = None
             ) -> np.ndarray:
        """The (h, w, D) features of ``key`` read into memory (not mapped).

        One open and one read per entry: the file's ``.npy`` header is
        compared byte for byte with the header of an entry that :meth:`get`
        validated earlier (every entry of a cache has the same shape and
        dtype), and the data are read straight into ``out``.  An entry whose
        header differs (the first one read, a file written by another NumPy)
        goes through :meth:`get`'s checks and is copied.

        Parameters
        ----------
        key, flipped
            As for :meth:`get`.
        out : numpy.ndarray, optional
            A writable C-contiguous array of the cache's shape and dtype to
            fill (e.g. a buffer reused from an earlier map); a new one if None.

        Returns
        -------
        numpy.ndarray
            ``out`` (or the new array), holding the stored values.

        Raises
        ------
        KeyError, ValueError
            As :meth:`get`; ValueError also for an ``out`` of the wrong shape,
            dtype or layout.
        """
        shape, dtype = self.shape, self.dtype
        if out is None:
            out = np.empty(shape, dtype)
        elif (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous {dtype} array of shape "
                             f"{shape}, got {getattr(out, 'dtype', type(out).__name__)} "
                             f"{getattr(out, 'shape', '')}")
        fn = self._file(key, flipped)
        hdr = self._npy_header
        if hdr is not None:
            try:
                with open(fn, "rb", buffering=0) as f:
                    if f.read(len(hdr)) == hdr:
                        if f.readinto(memoryview(out).cast("B")) == out.nbytes:
                            return out
            except FileNotFoundError:
                what = "flipped features" if flipped else "features"
                raise KeyError(f"feature cache {self.path} has no {what} for {key!r}") from None
            except OSError:
                pass   # get() names the problem
        arr = self.get(key, flipped)
        out[...] = arr
        off = getattr(arr, "offset", None)
        if isinstance(arr, np.memmap) and isinstance(off, int) and 0 < off <= 4096:
            try:
                with open(fn, "rb") as f:
                    self._npy_header = f.read(off)
            except OSError:
                pass
        return out

    def prefetch(self, key: str, flipped: bool = False) -> None:
        """Ask the OS to start reading the file of ``key`` into its page cache
        (``posix_fadvise(WILLNEED)``) and return at once, so that a later
        :meth:`read` finds it in memory.  A no-op where the OS has no such call,
        for a missing entry, or on any error (a hint only)."""
        advise = getattr(os, "posix_fadvise", None)
        willneed = getattr(os, "POSIX_FADV_WILLNEED", None)
        if advise is None or willneed is None:
            return
        try:
            fd = os.open(self._file(key, flipped), os.O_RDONLY)
        except OSError:
            return
        try:
            advise(fd, 0, 0, willneed)
        except OSError:
            pass
        finally:
            os.close(fd)

    def has(self, key: str, flipped: bool = False) -> bool:
        """Whether features of ``key`` (flipped or not) are stored."""
        return os.path.isfile(self._file(key, flipped))

    __contains__ = has

    def keys(self, flipped: Optional[bool] = False) -> List[str]:
        """Sorted keys with stored features (``flipped=None``: either kind)."""
        with self._lock:
            return sorted({k for k, f in self._entries if flipped is None or f == bool(flipped)})

    def __len__(self) -> int:
        return len(self.keys(False))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys(False))

    # ------------------------------------------------------------ index
    def refresh(self) -> None:
        """Rebuild the entry list from the files (and rewrite ``index.json``)."""
        entries = set()
        if os.path.isdir(self._dir):
            for name in os.listdir(self._dir):
                parsed = filename_to_key(name)
                if parsed is not None:
                    entries.add(parsed)
        with self._lock:
            self._entries = entries
            self._dirty = True
        self.flush()

    def flush(self) -> None:
        """Write ``index.json`` (atomically) if entries were added since the last write."""
        with self._lock:
            if not self._dirty:
                return
            items = sorted(self._entries)
            self._dirty = False
        doc = {"entries": [{"key": k, "flipped": f} for k, f in items]}
        try:
            _atomic_write_text(os.path.join(self.path, "index.json"), json.dumps(doc) + "\n")
        except OSError:
            pass  # a read-only cache: the index is a convenience, files are the truth

    def close(self) -> None:
        """Write the index; the cache stays usable."""
        self.flush()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self._manifest
        return (f"FeatureCache({self.path!r}, backbone={m['backbone']!r}, grid={m['grid']}, "
                f"dim={m['dim']}, dtype={m['dtype']!r}, entries={len(self._entries)})")


_TOKEN = object()


def _read_manifest(mpath: str, retry: bool = False) -> dict:
    """Read and validate a manifest; ValueError naming ``mpath`` when it is not
    one.  ``retry``: a manifest being written by another process (a file
    system without hard links) may be read again for up to a second."""
    import time

    for attempt in range(20 if retry else 1):
        try:
            with open(mpath, "rb") as f:
                m = json.loads(f.read().decode("utf-8"))
            break
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            if attempt + 1 >= (20 if retry else 1):
                raise ValueError(f"feature cache manifest {mpath} is not valid JSON "
                                 f"({type(exc).__name__}: {exc})") from None
            time.sleep(0.05)
    try:
        return _normalize_manifest(m)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"feature cache manifest {mpath} is invalid: {exc}") from None


def features_fingerprint(manifest: Mapping) -> dict:
    """What identifies the features of a cache: a record for a head file.

    Returns ``{"fingerprint": sha256, "fields": {...}}`` where ``fields`` are
    the manifest fields that determine the features (every field but
    ``geomatch_version``: backbone and LoRA, ``weights_sha256``, preprocessing,
    resolution, grid, dim, dtype and any extra field) and ``fingerprint`` is
    the SHA-256 of their canonical JSON (sorted keys, no spaces).
    """
    import hashlib

    m = _normalize_manifest(manifest)
    fields = {k: v for k, v in m.items() if k not in _IGNORED_IN_COMPARISON}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return {"fingerprint": hashlib.sha256(text.encode("utf-8")).hexdigest(), "fields": fields}


def check_features_record(record: Optional[Mapping], manifest: Mapping, *, what: str,
                          where: str, force: bool = False) -> None:
    """Compare the features a head was trained on with a cache's manifest.

    Parameters
    ----------
    record : the head's record (:func:`features_fingerprint` of its training
        cache), or None for a head file that does not record it.
    manifest : the manifest of the cache about to be used.
    what, where : names of the head and of the cache, for messages.
    force : only warn on a mismatch.

    Raises
    ------
    ValueError
        The fingerprints differ (the message lists the differing fields) and
        ``force`` is false.
    """
    import warnings

    if record is None:
        warnings.warn(f"{what} does not record the features it was trained on (a file of an "
                      f"older geomatch); cannot check that it fits {where}", stacklevel=3)
        return
    mine = features_fingerprint(manifest)
    if record.get("fingerprint") == mine["fingerprint"]:
        return
    theirs = record.get("fields") or {}
    keys = sorted(set(theirs) | set(mine["fields"]))
    diff = [f"{k}: trained on {theirs.get(k)!r}, cache has {mine['fields'].get(k)!r}"
            for k in keys if theirs.get(k) != mine["fields"].get(k)]
    msg = (f"{what} was trained on other features than those of {where} ("
           + ("; ".join(diff) if diff else "fingerprints differ") + ")")
    if force:
        warnings.warn(msg + "; used anyway (force=True)", stacklevel=3)
        return
    raise ValueError(msg + "; pass force=True (--force) to use it anyway")


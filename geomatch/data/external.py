"""Bring your own features: feature maps from any source into a feature cache.

A feature cache (:class:`geomatch.data.cache.FeatureCache`) holds one
channel-last ``(h, w, D)`` map per image key plus a manifest saying how the
maps were made.  :func:`feature_manifest` builds a valid manifest,
:func:`write_features` stores maps from a dict or an iterable of
``(key, map)`` pairs, and the two importers read the per-image files that
GECO and GeoAware-SC write:

* GECO (``scripts/store_feats.py``): ``<root>/<category>/<image>.pth``, one
  ``torch.save``-d tensor ``(1, D, h, w)`` per image (e.g. ViT-B at 518:
  ``(1, 768, 37, 37)``), from the 518 x 518 stretched image
  (``preprocess="resize"``).
* GeoAware-SC (``preprocess_map.py``): ``<root>/<category>/<image>_dino.pt``
  and ``<image>_dino_flip.pt`` (the horizontally flipped image), tensors
  ``(1, D, 60, 60)`` of the 840-pixel padded image (``preprocess="pad"``).

Keys are ``"<category>/<image>"`` -- the keys geomatch's dataset loaders use
(``ImageRecord.key``), so ``geomatch eval --cache`` finds the maps.  Files are
read without torch (:func:`geomatch.backbone.checkpoints.read_torch_tensor`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Tuple, Union

if TYPE_CHECKING:
    from .cache import FeatureCache

__all__ = ["feature_manifest", "write_features", "import_geco_features",
           "import_geoaware_features"]


def feature_manifest(*, backbone: str, dim: int, grid: Tuple[int, int], preprocess: str,
                     resolution: Optional[Tuple[int, int]] = None, dtype: str = "float32",
                     weights_sha256: str = "", **extra) -> dict:
    """A feature-cache manifest for maps made outside geomatch.

    Parameters
    ----------
    backbone : str
        Free-form name of what made the maps (e.g. ``"dinov2_vitb14+geco_lora"``).
    dim : int
        Channels D of every map.
    grid : (h, w)
        Grid size of every map.
    preprocess : {"resize", "pad"}
        How the image was fitted into the network input: stretched to
        ``resolution`` (GECO) or longest side scaled to ``resolution`` and
        centred on a black square (GeoAware-SC).  This decides how keypoints
        map onto the grid.
    resolution : (H, W), optional
        Network input size; default ``grid * 14``.
    dtype : {"float32", "float16"}
        Storage dtype.
    weights_sha256 : str
        Digest of the weights, if known (caches with different values are
        never mixed).
    **extra
        Further JSON fields kept in the manifest (e.g. ``source="GECO"``);
        ``engine`` defaults to ``"external"`` (see :mod:`geomatch.data.cache`).
    """
    h, w = (int(v) for v in grid)
    res = [h * 14, w * 14] if resolution is None else [int(v) for v in resolution]
    from .cache import _normalize_manifest

    extra.setdefault("engine", "external")
    return _normalize_manifest(dict(extra, backbone=backbone, weights_sha256=weights_sha256,
                                    resolution=res, preprocess=preprocess, grid=[h, w],
                                    dim=int(dim), dtype=dtype))


@contextlib.contextmanager
def _new_cache(path, manifest):
    """``FeatureCache.create``; a cache that this call created is removed again
    when the call fails before storing any map, so that a corrected call is
    not refused by the manifest of the failed one."""
    from .cache import FeatureCache

    fs_path = os.fspath(path)
    fresh = not os.path.exists(fs_path)
    cache = FeatureCache.create(fs_path, manifest)
    try:
        with cache:
            yield cache
    except BaseException:
        if fresh and not cache.keys() and not cache.keys(flipped=True):
            shutil.rmtree(fs_path, ignore_errors=True)
        raise


def write_features(path, maps: Union[Mapping, Iterable], manifest: Mapping, *,
                   flipped: bool = False, layout: Optional[str] = None,
                   progress: Optional[bool] = None) -> "FeatureCache":
    """Store feature maps in a cache (created, or reopened when the manifest agrees).

    Parameters
    ----------
    path : path of the cache directory.
    maps : dict ``{key: map}`` or iterable of ``(key, map)``
        Keys are image keys (``"<category>/<image>"`` for the dataset
        loaders); maps are ``(h, w, D)`` NumPy arrays or CPU torch tensors
        (``(1, h, w, D)`` works too).
    manifest : dict (see :func:`feature_manifest`)
    flipped : bool
        Store them as the features of the horizontally flipped images.
    layout : {None, "hwc", "chw"}
        ``"chw"`` for channel-first maps ``(D, h, w)`` / ``(1, D, h, w)`` as torch
        code makes them; ``None`` refuses maps that look channel-first
        (:mod:`geomatch.ops.layout`).

    Returns
    -------
    FeatureCache
    """
    from ..runtime.progress import progress as _progress

    items = maps.items() if isinstance(maps, Mapping) else maps
    total = len(maps) if hasattr(maps, "__len__") else None
    with _new_cache(path, manifest) as cache:
        for key, arr in _progress(items, desc="write features", total=total, unit="img",
                                  disable=None if progress is None else not progress):
            cache.put(key, arr, flipped=flipped, layout=layout)
    return cache


def _walk(root: str, suffix: str):
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(suffix) and not name.startswith("."):
                yield os.path.join(dirpath, name)


def _import(root, out, suffixes, *, backbone, preprocess, resolution, dtype, progress,
            source) -> dict:
    from ..backbone.checkpoints import read_torch_tensor

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"feature folder not found: {root}")
    files = []
    for suffix, flipped in suffixes:
        for p in _walk(root, suffix):
            rel = os.path.relpath(p, root)[: -len(suffix)].replace(os.sep, "/")
            files.append((rel, flipped, p))
    if not files:
        raise ValueError(f"{root}: no {source} feature files ("
                         + ", ".join(f"*{s}" for s, _ in suffixes) + ") found")
    first = read_torch_tensor(files[0][2])
    if first.ndim not in (3, 4) or (first.ndim == 4 and first.shape[0] != 1):
        raise ValueError(f"{files[0][2]}: expected a (1, D, h, w) tensor, got {first.shape}")
    d, h, w = first.shape[-3:]
    manifest = feature_manifest(backbone=backbone, dim=d, grid=(h, w), preprocess=preprocess,
                                resolution=resolution, dtype=dtype, source=source)
    from ..runtime.progress import progress as _progress

    n = {False: 0, True: 0}
    with _new_cache(out, manifest) as cache:
        for key, flipped, p in _progress(files, desc=f"import {source}", unit="file",
                                         disable=None if progress is None else not progress):
            arr = read_torch_tensor(p)
            if arr.shape[-3:] != (d, h, w):
                raise ValueError(f"{p}: shape {arr.shape} differs from the first file's "
                                 f"(1, {d}, {h}, {w})")
            try:
                cache.put(key, arr.reshape(d, h, w), flipped=flipped, layout="chw")
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from None
            n[flipped] += 1
    return {"cache": os.path.abspath(os.fspath(out)), "images": n[False],
            "flipped": n[True], "grid": [h, w], "dim": d}


def import_geco_features(root, out, *, backbone: str = "geco", resolution=(518, 518),
                         dtype: str = "float32", progress: Optional[bool] = None) -> dict:
    """Import GECO's stored features (``<root>/<category>/<image>.pth``) into a cache.

    The maps are channel-first ``(1, D, h, w)`` tensors of the stretched
    ``resolution`` image, so the cache gets ``preprocess="resize"``.

    Returns
    -------
    dict with ``cache``, ``images``, ``flipped`` (0), ``grid``, ``dim``.
    """
    return _import(root, out, [(".pth", False)], backbone=backbone, preprocess="resize",
                   resolution=resolution, dtype=dtype, progress=progress, source="GECO")


def import_geoaware_features(root, out, *, backbone: str = "geoaware-sc", resolution=(840, 840),
                             dtype: str = "float32", progress: Optional[bool] = None) -> dict:
    """Import GeoAware-SC's DINOv2 features (``<image>_dino.pt``, ``<image>_dino_flip.pt``).

    The maps are channel-first ``(1, D, 60, 60)`` tensors of the 840-pixel
    padded image, so the cache gets ``preprocess="pad"``; ``_dino_flip``
    files become the flipped entries.

    Returns
    -------
    dict with ``cache``, ``images``, ``flipped``, ``grid``, ``dim``.
    """
    return _import(root, out, [("_dino_flip.pt", True), ("_dino.pt", False)], backbone=backbone,
                   preprocess="pad", resolution=resolution, dtype=dtype, progress=progress,
                   source="GeoAware-SC")

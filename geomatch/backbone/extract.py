"""``geomatch extract``: DINOv2 features of a dataset split into a feature cache.

Every image of the chosen split(s) is featurized together with its
horizontally flipped version and stored with :class:`geomatch.data.cache.FeatureCache`
(``put(key, feats, flipped=...)``).  Images already in the cache are skipped,
so an interrupted run resumes where it stopped; the cache refuses to mix
settings (backbone, weights, resolution, preprocessing, dtype).
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Iterable, Optional

import numpy as np

__all__ = ["extract_features", "weights_sha256", "cache_manifest", "configure_parser",
           "run_cli"]


def _sha256_file(path: str, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h


def weights_sha256(weights, lora=None) -> str:
    """SHA-256 of the weights (``model.safetensors`` and ``config.json`` for a
    Hugging Face directory), chained with the LoRA file when given."""
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights not found: {path}")
    if os.path.isdir(path):
        h = hashlib.sha256()
        for name in ("config.json", "model.safetensors"):
            p = os.path.join(path, name)
            if not os.path.exists(p):
                raise FileNotFoundError(f"Hugging Face model directory without {name}: {p}")
            _sha256_file(p, h)
    else:
        h = _sha256_file(path)
    if lora is not None:
        lpath = os.fspath(lora)
        if not os.path.exists(lpath):
            raise FileNotFoundError(f"LoRA weights not found: {lpath}")
        h.update(b"+lora:")
        _sha256_file(lpath, h)
    return h.hexdigest()


def cache_manifest(model, *, preprocess: str, size: int, dtype: str, sha256: str,
                   lora: bool = False) -> dict:
    """The feature-cache manifest for features of ``model`` (a DinoV2)."""
    from .. import __version__

    g = size // model.patch_size
    return {
        "backbone": f"dinov2_{model.config.name}" + ("+geco_lora" if lora else ""),
        "weights_sha256": sha256,
        "resolution": [int(size), int(size)],
        "preprocess": preprocess,
        "grid": [g, g],
        "dim": int(model.embed_dim),
        "dtype": dtype,
        "geomatch_version": __version__,
    }


def extract_features(images: Iterable, model, out, *, preprocess: str = "resize",
                     size: Optional[int] = None, dtype: str = "float32", sha256: str = "",
                     lora: bool = False, flip: bool = True, progress: Optional[bool] = None,
                     desc: str = "extract") -> dict:
    """Featurize images (anything with ``key`` and ``path``) into a cache.

    Parameters
    ----------
    images : iterable of records with ``.key`` and ``.path``
    model : DinoV2
    out : path of the feature cache (created, or reopened to resume)
    preprocess : ``"resize"`` (GECO, 518) or ``"pad"`` (GeoAware-SC, 840)
    size : network input side (default 518 / 840)
    dtype : ``"float32"`` or ``"float16"`` storage
    sha256 : weights digest recorded in the manifest
    flip : also store the features of the horizontally flipped image

    Returns
    -------
    dict with ``computed``, ``skipped``, ``seconds`` and ``cache`` (path).
    """
    from ..runtime.progress import progress as _progress
    from ..data.cache import FeatureCache
    from .preprocess import DEFAULT_SIZES, preprocess_image

    if preprocess not in DEFAULT_SIZES:
        raise ValueError(f"preprocess must be 'resize' or 'pad', got {preprocess!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    size = int(size or DEFAULT_SIZES[preprocess])
    if size % model.patch_size:
        raise ValueError(f"size must be a multiple of {model.patch_size}, got {size}")
    manifest = cache_manifest(model, preprocess=preprocess, size=size, dtype=dtype,
                              sha256=sha256, lora=lora)
    images = list(images)
    computed = skipped = 0
    t0 = time.perf_counter()
    with FeatureCache.create(out, manifest) as cache:
        todo = [r for r in images
                if not (cache.has(r.key) and (not flip or cache.has(r.key, flipped=True)))]
        skipped = len(images) - len(todo)
        bar = _progress(todo, desc=desc, total=len(todo), unit="img", disable=(
            None if progress is None else not progress))
        for i, rec in enumerate(bar):
            pixels, _ = preprocess_image(rec.path, preprocess, size)
            batch = np.stack([pixels, pixels[:, ::-1]]) if flip else pixels[None]
            feats = model.features(batch)
            cache.put(rec.key, feats[0])
            if flip:
                cache.put(rec.key, feats[1], flipped=True)
            computed += 1
            if (i + 1) % 50 == 0:
                cache.flush()
        path = cache.path
    return {"computed": computed, "skipped": skipped,
            "seconds": time.perf_counter() - t0, "cache": path}


def configure_parser(parser) -> None:
    from .dinov2 import MODEL_NAMES

    parser.add_argument("--dataset", required=True,
                        help="dataset name: spair, pfpascal, ap10k, cub")
    parser.add_argument("--root", required=True, help="dataset directory")
    parser.add_argument("--weights", required=True,
                        help="DINOv2 weights: official .pth, .safetensors or a Hugging Face "
                             "directory")
    parser.add_argument("--out", required=True, help="feature cache directory")
    parser.add_argument("--model", default=None, choices=MODEL_NAMES,
                        help="architecture to check the weights against (default: inferred)")
    parser.add_argument("--lora", default=None, help="GECO LoRA weights to merge into qkv (default: none)")
    parser.add_argument("--preprocess", default="resize", choices=("resize", "pad"),
                        help="resize: stretch to 518x518 (GECO); pad: longest side 840, "
                             "centred zero padding (GeoAware-SC) (default: resize)")
    parser.add_argument("--size", type=int, default=None,
                        help="network input side (default 518 for resize, 840 for pad)")
    parser.add_argument("--split", nargs="+", default=["test"],
                        help="split(s) whose images to featurize (default: test)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="storage dtype of the cached features (default: float32)")
    parser.add_argument("--no-flip", action="store_true",
                        help="do not store features of the flipped images")


def run_cli(args) -> int:
    from ..data import load_dataset
    from .dinov2 import load_dinov2

    dataset = load_dataset(args.dataset, args.root)
    images = dataset.images_of_splits(args.split)
    sha = weights_sha256(args.weights, args.lora)
    model = load_dinov2(args.weights, args.model, lora=args.lora)
    res = extract_features(images, model, args.out, preprocess=args.preprocess, size=args.size,
                           dtype=args.dtype, sha256=sha, lora=args.lora is not None,
                           flip=not args.no_flip, desc=f"extract {args.dataset}")
    rate = res["computed"] / res["seconds"] if res["seconds"] > 0 else 0.0
    print(f"{res['computed']} images featurized ({rate:.2f} images/s), "
          f"{res['skipped']} already cached -> {res['cache']}")
    return 0

"""``geomatch extract``: DINOv2 features of a dataset split into a feature cache.

Every image of the chosen split(s) is featurized together with its
horizontally flipped version and stored with :class:`geomatch.data.cache.FeatureCache`
(``put(key, feats, flipped=...)``).  Images already in the cache are skipped,
so an interrupted run resumes where it stopped; the cache refuses to mix
settings (backbone, weights, engine, resolution, preprocessing, dtype).

The work can be spread (docs/scaling.md): ``client=`` / ``--dask ADDRESS``
runs tasks of images on a Dask cluster (:func:`extract_task`, a plain
function of paths and options; each worker loads the weights once from a
:class:`BackboneSpec`), ``shard=`` / ``--shard I/N`` keeps a fixed part of
the images (:func:`shard_of`), and ``--engine torch`` computes the features
with PyTorch (:mod:`geomatch.backbone.torch_engine`).  With the C engine
every cache file has the same bytes however the work was spread.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Tuple

import numpy as np

from .._version import __version__
from ..runtime.distributed import on_worker

__all__ = ["extract_features", "weights_sha256", "cache_manifest", "BackboneSpec",
           "parse_shard", "shard_of", "extract_task", "configure_parser", "run_cli"]


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
    """The feature-cache manifest for features of ``model`` (a DinoV2 or a
    :class:`~geomatch.backbone.torch_engine.TorchDinoV2`); ``engine`` records
    which implementation computed them."""
    g = size // model.patch_size
    return {
        "backbone": f"dinov2_{model.config.name}" + ("+geco_lora" if lora else ""),
        "weights_sha256": sha256,
        "resolution": [int(size), int(size)],
        "preprocess": preprocess,
        "grid": [g, g],
        "dim": int(model.embed_dim),
        "dtype": dtype,
        "engine": getattr(model, "engine", "c"),
        "geomatch_version": __version__,
    }


ENGINES = ("c", "torch")


@dataclass(frozen=True)
class BackboneSpec:
    """How to load a backbone from files: what a Dask worker needs to build
    the same model as the client.

    Parameters
    ----------
    weights : str
        DINOv2 weights (see :func:`geomatch.backbone.load_dinov2`); every
        worker must see this path.
    model : str, optional
        Architecture name to check the weights against.
    lora : str, optional
        GECO LoRA weights merged into qkv.
    engine : {"c", "torch"}
        geomatch's torch-free C engine (default) or PyTorch.
    device, compute_dtype : str
        ``device``, torch engine only: ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``.  ``compute_dtype``: ``"float32"`` or ``"bfloat16"`` (both
        engines), ``"float16"`` (torch engine).
    sha256 : str
        Expected :func:`weights_sha256`; a worker whose file differs refuses.
    """
    weights: str
    model: Optional[str] = None
    lora: Optional[str] = None
    engine: str = "c"
    device: str = "cpu"
    compute_dtype: str = "float32"
    sha256: str = ""

    def __post_init__(self):
        object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.lora is not None:
            object.__setattr__(self, "lora", os.fspath(self.lora))
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")

    def load(self):
        """Check the weights' digest (when given) and build the model."""
        if self.sha256:
            got = weights_sha256(self.weights, self.lora)
            if got != self.sha256:
                raise ValueError(f"weights {self.weights} (LoRA {self.lora}) have SHA-256 "
                                 f"{got[:12]}..., expected {self.sha256[:12]}... "
                                 "(another file at the same path?)")
        if self.engine == "torch":
            from .torch_engine import load_dinov2_torch

            return load_dinov2_torch(self.weights, self.model, lora=self.lora,
                                     device=self.device, dtype=self.compute_dtype)
        from .dinov2 import load_dinov2

        return load_dinov2(self.weights, self.model, lora=self.lora,
                           precision=self.compute_dtype)


def _spec_of(model, sha256: str):
    """A BackboneSpec for a model built by load_dinov2 / load_dinov2_torch, or None."""
    args = getattr(model, "load_args", None)
    if not args or args.get("config") is not None:
        return None
    engine = "torch" if str(getattr(model, "engine", "c")).startswith("torch") else "c"
    dtype = getattr(model, "compute_dtype", None) or getattr(model, "precision", "float32")
    return BackboneSpec(args["weights"], args.get("model"), args.get("lora"), engine,
                        str(getattr(model, "device", "cpu")), str(dtype), sha256)


def parse_shard(shard) -> Optional[Tuple[int, int]]:
    """``"I/N"`` (or ``(I, N)``) -> ``(I, N)`` with 0 <= I < N; None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        parts = shard.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"shard must be 'I/N' with 0 <= I < N (e.g. 0/4), got {shard!r}")
        i, n = int(parts[0]), int(parts[1])
    else:
        try:
            i, n = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise ValueError(f"shard must be 'I/N' or (I, N), got {shard!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: needs N >= 1 and 0 <= I < N")
    return i, n


def shard_of(key: str, n: int) -> int:
    """The shard (of ``n``) that image ``key`` belongs to: a fixed function of
    the key alone (SHA-256), so the partition does not depend on which
    images, splits or categories a run lists, nor on their order."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def _featurize_into(model, records, cache, preprocess: str, size: int, flip: bool) -> int:
    """Features of ``records`` into ``cache``; images already there are
    skipped.  The C engine runs one forward pass per image (with its flipped
    copy), so its bytes do not depend on how images are grouped into tasks;
    the torch engine runs the whole group as one batch.  The per-task work of
    extract, on a worker or here."""
    from .preprocess import preprocess_image

    todo = [r for r in records if not _cached(cache, r.key, flip)]
    per_pass = len(todo) if str(getattr(model, "engine", "c")).startswith("torch") else 1
    for i in range(0, len(todo), per_pass):
        group = todo[i:i + per_pass]
        batch = []
        for rec in group:
            pixels, _ = preprocess_image(rec.path, preprocess, size)
            batch.append(pixels)
            if flip:
                batch.append(pixels[:, ::-1])
        feats = model.features(np.stack(batch))
        step = 2 if flip else 1
        for j, rec in enumerate(group):
            cache.put(rec.key, feats[step * j])
            if flip:
                cache.put(rec.key, feats[step * j + 1], flipped=True)
    return len(todo)


def _cached(cache, key: str, flip: bool) -> bool:
    return cache.has(key) and (not flip or cache.has(key, flipped=True))


@on_worker
def extract_task(model, records: list, out: str, manifest: dict, preprocess: str, size: int,
                 flip: bool) -> int:
    """One Dask task of extract: featurize ``records`` (``_Image`` key/path
    pairs) into the existing cache ``out``.  ``model`` is a BackboneSpec
    (loaded once per worker process) or a model.  Idempotent: images already
    cached are skipped and every file is written atomically, so a rerun of a
    task whose worker died writes the same bytes.  Returns images computed."""
    from ..runtime.distributed import worker_cached

    if isinstance(model, BackboneSpec):
        model = worker_cached(("backbone", model), model.load)
    cache = worker_cached(("cache", out, json.dumps(manifest, sort_keys=True)),
                          lambda: _open_for_worker(out, manifest), keep=4)
    return _featurize_into(model, records, cache, preprocess, size, flip)


def _open_for_worker(out: str, manifest: dict):
    from ..data.cache import FeatureCache

    cache = FeatureCache.open(out)   # names the path if this worker cannot see it
    want = {k: v for k, v in manifest.items() if k != "geomatch_version"}
    have = {k: v for k, v in cache.manifest.items() if k != "geomatch_version"}
    if want != have:
        raise ValueError(f"feature cache {out} holds another manifest than the client's "
                         "(is the path shared by client and workers?)")
    return cache


@on_worker
def manifest_task(spec: "BackboneSpec", preprocess: str, size: Optional[int], dtype: str):
    """Load ``spec`` on a worker (kept for its extract tasks) and return the
    cache manifest; the client never loads the weights."""
    from ..runtime.distributed import worker_cached
    from .preprocess import DEFAULT_SIZES, check_input_size

    model = worker_cached(("backbone", spec), spec.load)
    size = check_input_size(DEFAULT_SIZES[preprocess] if size is None else size,
                            model.patch_size)
    return cache_manifest(model, preprocess=preprocess, size=size, dtype=dtype,
                          sha256=spec.sha256, lora=spec.lora is not None)


@dataclass(frozen=True)
class _Image:
    key: str
    path: str


def extract_features(images: Iterable, model, out, *, preprocess: str = "resize",
                     size: Optional[int] = None, dtype: str = "float32", sha256: str = "",
                     lora: bool = False, flip: bool = True, progress: Optional[bool] = None,
                     desc: str = "extract", client=None, shard=None,
                     batch_size: Optional[int] = None) -> dict:
    """Featurize images (anything with ``key`` and ``path``) into a cache.

    Parameters
    ----------
    images : iterable of records with ``.key`` and ``.path``
    model : DinoV2, TorchDinoV2 or BackboneSpec
        The backbone, or how to load it (a spec is loaded here, or once on
        every Dask worker).
    out : path of the feature cache (created, or reopened to resume)
    preprocess : ``"resize"`` (GECO, 518) or ``"pad"`` (GeoAware-SC, 840)
    size : network input side (default 518 / 840)
    dtype : ``"float32"`` or ``"float16"`` storage
    sha256 : weights digest recorded in the manifest (a spec's own wins)
    lora : whether LoRA was merged (recorded in the manifest's backbone)
    flip : also store the features of the horizontally flipped image
    client : distributed.Client, optional
        Run on this Dask cluster (see :mod:`geomatch.runtime.distributed`):
        tasks of ``batch_size`` images, the weights loaded once per worker
        (from the model's files: every worker must see them and ``out``),
        results byte-identical to a run without ``client``.
    shard : "I/N" or (I, N), optional
        Only the images with :func:`shard_of` (key, N) == I: N runs with
        I = 0..N-1 (e.g. a SLURM array) fill the same cache as one full run.
    batch_size : int, optional
        Images per Dask task, and for the torch engine per forward pass (each
        with its flipped copy); default the model's ``default_batch_images``
        (1 for the C engine, 8 for torch).  The C engine's features do not
        depend on it (one pass per image), nor on the thread count.

    Returns
    -------
    dict with ``computed``, ``skipped``, ``seconds``, ``cache`` (path),
    ``images`` (in this shard) and ``engine``.

    Raises
    ------
    ValueError
        Bad options, or ``out`` holds a cache of other settings (weights,
        engine, resolution, ...).
    ConnectionError, FileNotFoundError
        From the cluster: a worker that cannot see a path names it and itself.
    """
    from ..runtime.progress import progress as _progress
    from ..data.cache import FeatureCache
    from .preprocess import DEFAULT_SIZES, check_input_size

    if preprocess not in DEFAULT_SIZES:
        raise ValueError(f"preprocess must be 'resize' or 'pad', got {preprocess!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if size is not None:  # bounded before any weights are loaded (docs/limits.md)
        check_input_size(size, None)
    sh = parse_shard(shard)
    records = [_Image(str(r.key), os.fspath(r.path)) for r in images]
    if sh is not None:
        records = [r for r in records if shard_of(r.key, sh[1]) == sh[0]]
    t0 = time.perf_counter()

    spec = model if isinstance(model, BackboneSpec) else None
    if spec is not None and client is None:
        model = replace(spec, sha256="").load()   # the caller's digest is of this very file
    if spec is not None:
        sha256, lora = spec.sha256, spec.lora is not None
    if spec is not None and client is not None:
        manifest = client.submit(manifest_task, spec, preprocess, size, dtype,
                                 pure=False).result()
        engine = manifest["engine"]
        batch = int(batch_size or (8 if spec.engine == "torch" else 1))
    else:
        size = check_input_size(DEFAULT_SIZES[preprocess] if size is None else size,
                                model.patch_size)
        manifest = cache_manifest(model, preprocess=preprocess, size=size, dtype=dtype,
                                  sha256=sha256, lora=lora)
        engine = manifest["engine"]
        batch = int(batch_size or getattr(model, "default_batch_images", 1))
    size = int(manifest["resolution"][0])
    disable = None if progress is None else not progress

    with FeatureCache.create(out, manifest) as cache:
        todo = [r for r in records if not _cached(cache, r.key, flip)]
        skipped = len(records) - len(todo)
        chunks = [todo[i:i + batch] for i in range(0, len(todo), batch)]
        if client is None:
            bar = _progress(None, desc=desc, total=len(todo), unit="img", disable=disable)
            try:
                for chunk in chunks:
                    _featurize_into(model, chunk, cache, preprocess, size, flip)
                    bar.update(len(chunk))
            finally:
                bar.close()
        else:
            from ..runtime.distributed import run_tasks

            ref = spec or _spec_of(model, sha256)
            if ref is None:   # a model built in memory: send it to every worker once
                ref = client.scatter(model, broadcast=True)
            run_tasks(client, extract_task,
                      [(ref, chunk, cache.path, manifest, preprocess, size, flip)
                       for chunk in chunks],
                      desc=desc, unit="img", weights=[len(c) for c in chunks],
                      progress=progress)
        cache.refresh()   # the index lists every file, whoever wrote it
        path = cache.path
    return {"computed": len(todo), "skipped": skipped, "seconds": time.perf_counter() - t0,
            "cache": path, "images": len(records), "engine": engine}


def configure_parser(parser) -> None:
    from .arguments import add_backbone_arguments

    parser.add_argument("--dataset", required=True,
                        help="dataset name: spair, pfpascal, ap10k, cub, pascalparts")
    parser.add_argument("--root", required=True, help="dataset directory")
    parser.add_argument("--out", required=True, help="feature cache directory")
    add_backbone_arguments(parser)
    parser.add_argument("--split", nargs="+", default=["test"],
                        help="split(s) whose images to featurize (default: test)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="storage dtype of the cached features (default: float32)")
    parser.add_argument("--no-flip", action="store_true",
                        help="do not store features of the flipped images")
    parser.add_argument("--engine", default="c", choices=ENGINES,
                        help="c: geomatch's torch-free engine (default); torch: PyTorch "
                             '(pip install "geomatch[torch]"), for GPUs')
    parser.add_argument("--device", default=None,
                        help="torch engine: cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--precision", default=None,
                        choices=("float32", "float16", "bfloat16", "bf16"),
                        help="compute precision (default float32).  C engine: float32 or "
                             "bf16 (= bfloat16: matrix products in bfloat16 with float32 "
                             "sums, on CPUs with AVX512-BF16); torch engine: float16 / "
                             "bfloat16 run under autocast where the device supports it. "
                             "--dtype is the storage dtype of the cache")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per Dask task, and per forward pass of the torch "
                             "engine (default: 1 for the C engine, 8 for torch)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="run on a Dask cluster: a scheduler address (tcp://host:8786) or "
                             'local:N for N local worker processes (pip install "geomatch[dask]"); '
                             'default: none, run in this process')
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="only shard I of N (0 <= I < N) of the images, a fixed partition "
                             "by image key: N runs (e.g. a SLURM array) fill the same cache "
                             "(default: all images)")


def run_cli(args) -> int:
    from ..data import load_dataset
    from ..runtime.distributed import dask_client, parse_address
    from .preprocess import check_input_size

    if args.size is not None:  # checked before any file is read
        check_input_size(args.size, name="--size")
    shard = parse_shard(args.shard)
    precision = "bfloat16" if args.precision == "bf16" else args.precision
    if args.engine != "torch" and args.device is not None:
        raise ValueError("--device needs --engine torch")
    if args.engine != "torch" and precision not in (None, "float32", "bfloat16"):
        raise ValueError(f"--precision {args.precision} needs --engine torch (the C engine "
                         "computes in float32 or bf16)")
    if args.engine != "torch" and precision == "bfloat16":
        from .dinov2 import check_precision
        check_precision(precision)   # a CPU without AVX512-BF16 stops here, one line
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.dask is not None:
        parse_address(args.dask)
    dataset = load_dataset(args.dataset, args.root)
    images = dataset.images_of_splits(args.split)
    if not os.path.exists(args.weights):
        raise FileNotFoundError(f"weights not found: {args.weights}")
    with dask_client(args.dask) as client:   # an unreachable scheduler fails here, nothing written
        sha = weights_sha256(args.weights, args.lora)
        spec = BackboneSpec(os.path.abspath(args.weights), args.model,
                            None if args.lora is None else os.path.abspath(args.lora),
                            args.engine, args.device or "cpu", precision or "float32", sha)
        res = extract_features(images, spec, args.out, preprocess=args.preprocess,
                               size=args.size, dtype=args.dtype, flip=not args.no_flip,
                               desc=f"extract {args.dataset}", client=client, shard=shard,
                               batch_size=args.batch_size)
    rate = res["computed"] / res["seconds"] if res["seconds"] > 0 else 0.0
    where = f" on {args.dask}" if args.dask else ""
    part = f" (shard {shard[0]}/{shard[1]}: {res['images']} of {len(images)} images)" if shard \
        else ""
    print(f"{res['computed']} images featurized ({rate:.2f} images/s, engine {res['engine']}"
          f"{where}){part}, {res['skipped']} already cached -> {res['cache']}")
    return 0

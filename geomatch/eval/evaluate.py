"""Evaluate keypoint transfer on a dataset split with cached features.

For every pair, the source keypoints are transferred to the target with
:func:`geomatch.transfer_keypoints` on the cached feature maps (optionally
passed through a trained head first), and scored with :mod:`geomatch.eval.metrics`:
PCK per point and per image, per category and overall, GECO's geometry
breakdown and GeoAware-SC's geometry-aware subset.

Command line::

    geomatch eval --dataset spair --root PATH --split test --cache CACHE \\
        [--head CKPT] [--mode upsample-argmax] [--out DIR] [--figures] \\
        [--categories cat dog] [--subsample N]
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import metrics as _metrics
from ..runtime.progress import progress as _progress
from ..data.cache import FeatureCache, check_features_record
from ..geometry import grid_frame
from ..ops.transfer import TRANSFER_MODES, transfer_keypoints

__all__ = ["evaluate", "EvalResult", "MODES", "configure_parser", "run_cli"]

MODES = TRANSFER_MODES  # the keypoint transfer modes (kept under this name)
_FIGURES_PER_CATEGORY = 3


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes
    ----------
    summary : dict
        :meth:`geomatch.eval.metrics.PCKAccumulator.summary` (fractions in [0, 1]).
    config : dict
        dataset, split, mode, threshold, alphas, head, cache, categories,
        subsample, seed.
    skipped : int
        Pairs the dataset skipped while loading (unreadable annotations...).
    n_pairs : int
        Pairs evaluated.
    elapsed_s : float
        Wall-clock seconds of the evaluation loop.
    pair_results : list of geomatch.eval.metrics.PairResult
    figures : list of str
        PNG files written (``figures=True``).
    """
    summary: dict
    config: dict
    skipped: int = 0
    n_pairs: int = 0
    elapsed_s: float = 0.0
    pair_results: List[_metrics.PairResult] = field(default_factory=list, repr=False)
    figures: List[str] = field(default_factory=list)

    @property
    def alphas(self) -> List[float]:
        return list(self.summary["alphas"])

    @property
    def overall(self) -> dict:
        """Overall figures (pooled, plus ``*_catmean``)."""
        return self.summary["overall"]

    @property
    def categories(self) -> Dict[str, dict]:
        """Per-category figures."""
        return self.summary["categories"]

    def rows(self) -> List[dict]:
        """Table rows (percent): one per category, then ``all`` and ``mean``."""
        return _metrics.summary_rows(self.summary)

    def to_markdown(self) -> str:
        """Markdown: a header line, then PCK tables per point, per image,
        geometry-aware, and the geometry breakdown."""
        c = self.config
        head = (f"## {c.get('dataset')} {c.get('split')} — mode {c.get('mode')}, "
                f"threshold {c.get('threshold')}, {self.n_pairs} pairs"
                f" ({self.skipped} skipped while loading)")
        return head + "\n\n" + _metrics.summary_markdown(self.summary)

    def to_dict(self, per_pair: bool = False) -> dict:
        """JSON-ready dict: config, summary, counts (and per-pair scores)."""
        d = {"config": self.config, "n_pairs": self.n_pairs, "skipped": self.skipped,
             "elapsed_s": self.elapsed_s, "summary": self.summary, "figures": self.figures}
        if per_pair:
            d["pairs"] = [{"pair_id": r.pair_id, "category": r.category, "n_points": r.n_points,
                           "n_correct": r.n_correct.tolist(), "n_geo": r.n_geo}
                          for r in self.pair_results]
        return d

    def to_json(self, path, per_pair: bool = False) -> str:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(per_pair), f, indent=2)
            f.write("\n")
        return path

    def to_csv(self, path) -> str:
        """Write :meth:`rows` as CSV (empty cells for missing values); returns the path."""
        path = os.fspath(path)
        rows = self.rows()
        cols = list(rows[0].keys()) if rows else ["category"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return path


class _FeatureLRU:
    """float32 (optionally head-transformed) feature maps, least-recently-used, by bytes."""

    def __init__(self, cache: FeatureCache, head: Optional[Callable], max_bytes: int):
        self.cache = cache
        self.head = head
        self.max_bytes = max_bytes
        self.data: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.nbytes = 0

    def get(self, key: str) -> np.ndarray:
        arr = self.data.get(key)
        if arr is not None:
            self.data.move_to_end(key)
            return arr
        arr = np.asarray(self.cache.get(key), dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"feature cache {self.cache.path}: the features of {key!r} "
                             f"contain non-finite values; delete that entry and rerun "
                             f"geomatch extract")
        if self.head is not None:
            arr = np.asarray(self.head(arr), dtype=np.float32)
            if arr.ndim != 3:
                raise ValueError(f"head must return an (h, w, E) array, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"head returned non-finite values for image {key!r}")
        arr = np.ascontiguousarray(arr)
        self.data[key] = arr
        self.nbytes += arr.nbytes
        while self.nbytes > self.max_bytes and len(self.data) > 1:
            _, old = self.data.popitem(last=False)
            self.nbytes -= old.nbytes
        return arr


def _resolve_head(head, manifest: Optional[dict] = None):
    """(callable or None, name) of ``head``; with the cache's ``manifest``, a
    head trained on features of another dimension is refused here, naming it."""
    if head is None or callable(head):
        fn, name = head, (None if head is None else getattr(head, "name", type(head).__name__))
    elif isinstance(head, (str, os.PathLike)):
        from ..model.head import load_head  # lazy: only needed with --head

        fn, name = load_head(os.fspath(head)), os.fspath(head)
    else:
        raise TypeError(f"head must be None, a callable or a checkpoint path, "
                        f"got {type(head).__name__}")
    in_dim = getattr(getattr(fn, "config", None), "in_dim", None)
    dim = (manifest or {}).get("dim")
    if in_dim is not None and dim is not None and int(in_dim) != int(dim):
        raise ValueError(f"head {name}: trained on {in_dim}-dimensional features, but the "
                         f"feature cache holds {dim}-dimensional ones "
                         f"(backbone {manifest.get('backbone')})")
    return fn, name


def _skipped_count(dataset) -> int:
    """Pairs the dataset skipped: an int, an object with ``count`` or ``__int__``, or a list."""
    s = getattr(dataset, "skipped", 0)
    if s is None:
        return 0
    count = getattr(s, "count", None)
    if isinstance(count, (int, np.integer)):
        return int(count)
    if isinstance(s, (int, np.integer)) or hasattr(s, "__int__"):
        return int(s)
    try:
        return len(s)
    except TypeError:
        return 0


def transfer_pair(pair, src_feat: np.ndarray, trg_feat: np.ndarray, manifest: dict, *,
                  mode: str = "upsample-argmax", transfer: Optional[Callable] = None) -> np.ndarray:
    """Transfer the source keypoints of one pair to the target.

    Keypoints are mapped into the region of each image that the feature grid
    covers (:func:`geomatch.geometry.grid_frame`), transferred, and mapped back
    to target pixels.

    Returns
    -------
    numpy.ndarray, float64 (K, 2)
        Predicted target (x, y); NaN rows for keypoints invisible in the source.
    """
    fn = transfer or transfer_keypoints
    vis = np.asarray(pair.src.visible, dtype=bool)
    k = vis.shape[0]
    pred = np.full((k, 2), np.nan)
    if not vis.any():
        return pred
    sx0, sy0, sfw, sfh = grid_frame(pair.src.size, manifest)
    tx0, ty0, tfw, tfh = grid_frame(pair.trg.size, manifest)
    src_kps = np.asarray(pair.src.keypoints, dtype=np.float64)[vis] - (sx0, sy0)
    ssize = (int(round(sfw)), int(round(sfh)))
    tsize = (int(round(tfw)), int(round(tfh)))
    # keep source positions inside the frame image, as pixel lookups require
    src_kps[:, 0] = np.clip(src_kps[:, 0], 0.0, ssize[0] - 1e-3)
    src_kps[:, 1] = np.clip(src_kps[:, 1], 0.0, ssize[1] - 1e-3)
    # cached maps are channel-last by construction: no layout guess for the default
    kw = {"layout": "hwc"} if transfer is None else {}
    out = fn(src_feat, trg_feat, src_kps.astype(np.float32), ssize, tsize, mode=mode, **kw)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (int(vis.sum()), 2):
        raise ValueError(f"transfer returned shape {out.shape}, expected {(int(vis.sum()), 2)}")
    pred[vis] = out + (tx0, ty0)
    return pred


def evaluate(dataset, split: str, cache, *, head=None, mode: str = "upsample-argmax",
             alphas: Sequence[float] = _metrics.DEFAULT_ALPHAS, threshold: str = "bbox",
             categories: Optional[Sequence[str]] = None, subsample: Optional[int] = None,
             seed: int = 0, out_dir=None, figures: bool = False, progress: bool = True,
             transfer: Optional[Callable] = None, lru_bytes: int = 768 << 20,
             workers: Optional[int] = None, client=None,
             force: bool = False) -> EvalResult:
    """Evaluate keypoint transfer on one split of a dataset.

    Parameters
    ----------
    dataset : Dataset
        From :func:`geomatch.data.load_dataset`; must provide
        ``pairs(split, categories=, subsample=, seed=)`` and ``skipped``.
    split : str
        ``"test"``, ``"val"``, ...
    cache : FeatureCache or path
        Features of every image of the split (keys ``ImageRecord.key``).
    head : callable or path, optional
        Applied to each (h, w, D) feature map; a path is loaded with
        :func:`geomatch.model.head.load_head`.
    mode : {"upsample-argmax", "grid-argmax", "soft-argmax"}
        Keypoint transfer (see :func:`geomatch.transfer_keypoints`).
    alphas : sequence of float, default (0.05, 0.10, 0.15)
    threshold : {"bbox", "image"}
        T = longer side of the target bounding box or of the target image.
    categories : list of str, optional
        Restrict to these categories.
    subsample : int, optional
        Pairs per category (drawn with ``seed``), as ``Dataset.pairs`` does.
    seed : int
    out_dir : path, optional
        Write ``results.json`` (with per-pair scores), ``results.csv`` and
        ``results.md`` there (and figures under ``figures/``).
    figures : bool
        Draw a few keypoint transfers per category (needs ``out_dir``).
    progress : bool
        Show a progress bar (also silenced by ``GEOMATCH_NO_PROGRESS=1``).
    transfer : callable, optional
        Replacement for :func:`geomatch.transfer_keypoints` (same signature).
    lru_bytes : int
        Memory for float32 feature maps kept between pairs (images recur).
    workers : int, optional
        Threads that transfer pairs concurrently, each running its kernels
        single-threaded (default: :func:`geomatch.get_num_threads`).  Per-pair
        kernels are small (milliseconds), so this uses the cores far better
        than multithreading each kernel, above all on a busy machine.  With
        1, pairs run one after the other on the calling thread and kernels
        use all configured threads.  Reading features and scoring stay on
        the calling thread, in pair order, so results are identical for any
        ``workers``.
    client : distributed.Client, optional
        Transfer blocks of pairs on this Dask cluster (every worker must see
        the cache and the head file; a head given as a callable is sent to
        each worker once).  Scoring stays here, in pair order, so results
        are identical to a run without ``client``.
    force : bool
        Evaluate a head even when it was trained on other features than the
        cache's (its file records the fingerprint of its training cache's
        manifest, :func:`geomatch.data.cache.features_fingerprint`); a
        warning is issued instead of the error.

    Returns
    -------
    EvalResult

    Raises
    ------
    FileNotFoundError
        When the cache misses features of images of the split (lists some).
    ValueError
        Bad mode, threshold, alphas, or no pair to evaluate; a head trained
        on other features than the cache's (unless ``force``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if threshold not in ("bbox", "image"):
        raise ValueError(f"threshold must be 'bbox' or 'image', got {threshold!r}")
    alphas = tuple(float(a) for a in _metrics._check_alphas(alphas))
    if figures and out_dir is None:
        raise ValueError("figures=True needs out_dir")
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {os.fspath(out_dir)} exists and is not a directory")
    if workers is None:
        from ..runtime.config import get_num_threads

        workers = max(1, int(get_num_threads()))
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache.open(cache)
    manifest = cache.manifest
    head_fn, head_name = _resolve_head(head, manifest)
    # a head with a record is checked against the cache; a head file of an
    # older geomatch (no record at all) gives a warning
    if head_fn is not None and (getattr(head_fn, "trained_on", None) is not None
                                or getattr(head_fn, "_unrecorded_features", False)):
        check_features_record(getattr(head_fn, "trained_on", None), manifest,
                              what=f"head {head_name}", where=f"feature cache {cache.path}",
                              force=force)
    fn = transfer or transfer_keypoints

    pairs = dataset.pairs(split, categories=categories, subsample=subsample, seed=seed)
    pairs = list(pairs)
    if not pairs:
        raise ValueError(f"no pairs to evaluate in split {split!r}"
                         + (f" for categories {list(categories)}" if categories else ""))
    needed = sorted({p.src.key for p in pairs} | {p.trg.key for p in pairs})
    missing = [k for k in needed if not cache.has(k)]
    if missing:
        raise FileNotFoundError(
            f"feature cache {cache.path} misses features of {len(missing)} of {len(needed)} images "
            f"of split {split!r}, e.g. {missing[:5]}")

    acc = _metrics.PCKAccumulator(alphas)
    feats = _FeatureLRU(cache, head_fn, lru_bytes)
    groups_by_cat: Dict[Any, list] = {}
    fig_pairs: Dict[str, list] = {}

    def score(pair, pred):
        gkey = (pair.dataset, pair.category)
        if gkey not in groups_by_cat:
            groups_by_cat[gkey] = _metrics.geo_groups(pair.dataset, pair.category, pair.flip_perm)
        res = _metrics.evaluate_pair(
            pred, pair.trg.keypoints, _metrics.pair_threshold(pair, threshold),
            src_visible=np.asarray(pair.src.visible, bool),
            trg_visible=np.asarray(pair.trg.visible, bool), flip_perm=pair.flip_perm,
            groups=groups_by_cat[gkey], alphas=alphas, category=pair.category,
            pair_id=pair.pair_id)
        acc.add(res)
        if figures and res.n_points > 0:
            lst = fig_pairs.setdefault(pair.category, [])
            if len(lst) < _FIGURES_PER_CATEGORY:
                lst.append((pair, pred))

    t0 = time.perf_counter()
    bar = None if client is not None else _progress(
        pairs, desc=f"eval {split}", total=len(pairs), unit="pair", disable=not progress or None)
    if client is not None:
        _run_on_client(client, pairs, cache.path, manifest, head, mode, transfer, score,
                       progress, split)
    elif workers <= 1:
        for pair in bar:
            pred = transfer_pair(pair, feats.get(pair.src.key), feats.get(pair.trg.key),
                                 manifest, mode=mode, transfer=fn)
            score(pair, pred)
    else:
        _run_pipelined(bar, feats, manifest, mode, fn, score, workers)
    elapsed = time.perf_counter() - t0

    config = {"dataset": getattr(dataset, "name", pairs[0].dataset), "split": split,
              "mode": mode, "threshold": threshold, "alphas": list(alphas), "head": head_name,
              "cache": cache.path, "backbone": manifest.get("backbone"),
              "preprocess": manifest.get("preprocess"),
              "categories": list(categories) if categories else None,
              "subsample": subsample, "seed": seed, "workers": int(workers)}
    result = EvalResult(summary=acc.summary(), config=config, skipped=_skipped_count(dataset),
                        n_pairs=len(pairs), elapsed_s=elapsed, pair_results=acc.results)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if figures:
            from .plotting import save_transfer_figure

            fig_dir = os.path.join(os.fspath(out_dir), "figures")
            os.makedirs(fig_dir, exist_ok=True)
            alpha = min(alphas, key=lambda a: abs(a - 0.1))
            for cat, items in sorted(fig_pairs.items()):
                for i, (pair, pred) in enumerate(items):
                    path = os.path.join(fig_dir, f"{_safe(cat)}_{i}.png")
                    save_transfer_figure(pair, pred, path, alpha=alpha,
                                         threshold=_metrics.pair_threshold(pair, threshold))
                    result.figures.append(path)
        result.to_json(os.path.join(out_dir, "results.json"), per_pair=True)
        result.to_csv(os.path.join(out_dir, "results.csv"))
        with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
            f.write(result.to_markdown() + "\n")
    return result


def _run_pipelined(pairs, feats, manifest, mode, fn, score, workers: int) -> None:
    """Transfer on ``workers`` threads (one kernel thread each); score in order here."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from ..runtime import config as _config

    prev = _config.get_num_threads()

    def init():
        _config.set_num_threads(1)   # process-wide: every kernel single-threaded

    pending: deque = deque()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=init) as pool:
            for pair in pairs:
                src, trg = feats.get(pair.src.key), feats.get(pair.trg.key)
                pending.append((pair, pool.submit(transfer_pair, pair, src, trg, manifest,
                                                  mode=mode, transfer=fn)))
                while len(pending) > 2 * workers:
                    p, fut = pending.popleft()
                    score(p, fut.result())
            while pending:
                p, fut = pending.popleft()
                score(p, fut.result())
    finally:
        _config.set_num_threads(prev)   # restores the process-wide kernel and BLAS count


# ----------------------------------------------------------------- Dask

def _block_size(n_pairs: int, n_workers: int) -> int:
    """Pairs per task: about eight tasks per worker, 1..256 pairs each."""
    return max(1, min(256, math.ceil(n_pairs / (8 * n_workers))))


def _worker_head(head):
    """The head on a worker: a checkpoint path is loaded once per process."""
    if isinstance(head, (str, os.PathLike)):
        from ..runtime.distributed import worker_cached

        path = os.path.abspath(os.fspath(head))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"head checkpoint not found: {path}")
        st = os.stat(path)
        return worker_cached(("head", path, st.st_size, st.st_mtime_ns),
                             lambda: _resolve_head(path)[0])
    return head


def transfer_block(pairs: list, cache_path: str, manifest: dict, head, mode: str,
                   transfer: Optional[Callable] = None) -> list:
    """One Dask task of eval: predicted target keypoints of ``pairs`` (a list
    of float64 (K, 2) arrays), from the features in ``cache_path``."""
    from ..runtime.distributed import on_worker

    def work():
        cache = FeatureCache.open(cache_path)   # names the path if this worker cannot see it
        if cache.manifest.get("weights_sha256") != manifest.get("weights_sha256"):
            raise ValueError(f"feature cache {cache_path} holds other features than the "
                             "client's (is the path shared by client and workers?)")
        feats = _FeatureLRU(cache, _worker_head(head), 256 << 20)
        fn = transfer or transfer_keypoints
        return [transfer_pair(p, feats.get(p.src.key), feats.get(p.trg.key), manifest,
                              mode=mode, transfer=fn) for p in pairs]

    return on_worker(work)()


def _run_on_client(client, pairs, cache_path, manifest, head, mode, transfer, score,
                   progress, split) -> None:
    from ..runtime.distributed import n_workers, run_tasks

    if head is not None and not isinstance(head, (str, os.PathLike)):
        head = client.scatter(head, broadcast=True)
    elif head is not None:
        head = os.path.abspath(os.fspath(head))
    size = _block_size(len(pairs), n_workers(client))
    blocks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    preds = run_tasks(client, transfer_block,
                      [(b, cache_path, manifest, head, mode, transfer) for b in blocks],
                      desc=f"eval {split}", unit="pair", weights=[len(b) for b in blocks],
                      progress=progress)
    for block, block_preds in zip(blocks, preds):
        for pair, pred in zip(block, block_preds):
            score(pair, pred)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


# ----------------------------------------------------------------- CLI

def configure_parser(parser) -> None:
    """Arguments of ``geomatch eval``."""
    parser.add_argument("--dataset", required=True,
                        help="dataset name (spair, pfpascal, ap10k, cub)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--split", default="test", help="split (default: test)")
    parser.add_argument("--cache", required=True, help="feature cache folder")
    parser.add_argument("--head", default=None, help="trained head checkpoint (default: none, raw features)")
    parser.add_argument("--mode", default="upsample-argmax", choices=MODES,
                        help="keypoint transfer (default: upsample-argmax)")
    parser.add_argument("--threshold", default="bbox", choices=("bbox", "image"),
                        help="PCK threshold: longer side of target bbox or image (default: bbox)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(_metrics.DEFAULT_ALPHAS),
                        help="PCK alphas (default: 0.05 0.1 0.15)")
    parser.add_argument("--out", default=None,
                        help="output folder for results.json/.csv/.md "
                             "(default: eval-<dataset>-<split>)")
    parser.add_argument("--figures", action="store_true",
                        help="draw a few keypoint transfers per category as PNG")
    parser.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all)")
    parser.add_argument("--subsample", type=int, default=None, help="pairs per category (default: all pairs)")
    parser.add_argument("--seed", type=int, default=0, help="subsampling seed (default: 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="pairs transferred concurrently, one kernel thread each "
                             "(default: the thread count; 1: one pair at a time, "
                             "multithreaded kernels)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="transfer blocks of pairs on a Dask cluster: a scheduler address "
                             "(tcp://host:8786) or local:N worker processes "
                             '(pip install "geomatch[dask]"); default: none, run in this process')
    parser.add_argument("--force", action="store_true",
                        help="evaluate --head even if it was trained on other features "
                             "(another backbone, weights or preprocessing) than --cache holds")


def run_cli(args) -> int:
    """Run ``geomatch eval``: print Markdown tables, write JSON and CSV."""
    from ..data import load_dataset

    if args.subsample is not None and args.subsample < 1:
        raise ValueError("--subsample must be at least 1")
    from ..runtime.distributed import dask_client, parse_address

    if args.dask is not None:
        parse_address(args.dask)
    cache = FeatureCache.open(args.cache)
    dataset = load_dataset(args.dataset, args.root)
    out = args.out or f"eval-{args.dataset}-{args.split}"
    with dask_client(args.dask) as client:   # an unreachable scheduler fails here, nothing written
        res = evaluate(dataset, args.split, cache, head=args.head, mode=args.mode,
                       alphas=tuple(args.alphas), threshold=args.threshold,
                       categories=args.categories, subsample=args.subsample, seed=args.seed,
                       out_dir=out, figures=args.figures, progress=not args.no_progress,
                       workers=args.workers, client=client, force=args.force)
    print(res.to_markdown())
    print(f"wrote {os.path.join(out, 'results.json')}, {os.path.join(out, 'results.csv')}"
          + (f" and {len(res.figures)} figures in {os.path.join(out, 'figures')}"
             if res.figures else "")
          + f" ({res.elapsed_s:.1f} s)")
    return 0

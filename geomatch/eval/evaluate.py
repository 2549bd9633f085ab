"""Evaluate keypoint transfer on a dataset split with cached features.

An evaluation is four small steps, each its own function:

1. **options** -- :func:`geomatch.eval.protocols.resolve_options`: geomatch's
   defaults, a protocol preset (``protocol="geco"`` / ``"geoaware-sc"`` /
   ``"geoaware-sc-zero-shot"``), then every explicit choice;
2. **pair selection** -- :func:`select_pairs` (``all``, ``first:N``,
   ``random:N:SEED``, ``geoaware:N:SEED``; pairs without a co-visible
   keypoint skipped or kept);
3. **transfer** -- :func:`predict_pairs` (a function of the pairs, the cache
   and the options only): :func:`geomatch.transfer_keypoints` on the cached
   feature maps, optionally through a trained head, optionally with
   GeoAware-SC's test-time flip; one :class:`~geomatch.eval.predictions.Prediction`
   per pair;
4. **scoring** -- :func:`score_predictions`: PCK per point and per image, the
   geometry-aware subset (per point and per image), GECO's geometry breakdown,
   breakdowns by azimuth difference, mirror flag and keypoint id.

and :func:`write_reports` writes ``predictions.npz`` (re-scored by
:func:`geomatch.eval.predictions.rescore`), ``results.json``, ``results.csv``
and ``results.md``.

Command line::

    geomatch eval --dataset spair --root PATH --split test --cache CACHE \\
        [--protocol geco|geoaware-sc|geoaware-sc-zero-shot] [--head CKPT] \\
        [--mode M] [--threshold bbox|image] [--threshold-frame original|pad:S] \\
        [--compare le|lt] [--alphas A ...] [--flip-table lr|geco] \\
        [--select all|first:N|random:N:SEED|geoaware[:N[:SEED]]] \\
        [--empty-pairs skip|count] [--test-flip off|masked|mutual-nn] \\
        [--window W] [--temperature T] [--out DIR] [--figures]
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from . import metrics as _metrics
from . import report as _report
from .predictions import Prediction, save_predictions
from .protocols import (EvalOptions, dataset_key, parse_select,
                        resolve_options)
from ..runtime.progress import progress as _progress
from ..data.cache import FeatureCache, check_features_record
from ..geometry import grid_frame
from ..ops.transfer import TRANSFER_MODES, _transfer_checked_src, transfer_keypoints

__all__ = ["evaluate", "EvalResult", "MODES", "select_pairs", "predict_pairs", "predict_pair",
           "transfer_pair", "score_predictions", "write_reports", "scoring_flip_perm",
           "add_scoring_arguments", "pose_distance", "pose_masks", "flip_replacement",
           "transfer_block",
           "configure_parser", "run_cli"]

MODES = TRANSFER_MODES  # the keypoint transfer modes (kept under this name)
_FIGURES_PER_CATEGORY = 3


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate` (or :func:`geomatch.eval.predictions.rescore`).

    Attributes
    ----------
    summary : dict
        :meth:`geomatch.eval.metrics.PCKAccumulator.summary` (fractions in [0, 1]).
    config : dict
        dataset, split, ``options`` (every choice and where it came from:
        :meth:`EvalOptions.to_dict`), mode, threshold, alphas, head, cache,
        categories, subsample, seed, workers.
    skipped : int
        Pairs the dataset skipped while loading (unreadable annotations, or
        no co-visible keypoint unless ``empty_pairs="count"``).
    n_pairs : int
        Pairs evaluated.
    elapsed_s : float
        Wall-clock seconds of the transfer and scoring.
    pair_results : list of geomatch.eval.metrics.PairResult
    figures : list of str
        PNG files written (``figures=True``).
    predictions : list of geomatch.eval.predictions.Prediction
    """
    summary: dict
    config: dict
    skipped: int = 0
    n_pairs: int = 0
    elapsed_s: float = 0.0
    pair_results: List[_metrics.PairResult] = field(default_factory=list, repr=False)
    figures: List[str] = field(default_factory=list)
    predictions: List[Prediction] = field(default_factory=list, repr=False)

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

    @property
    def options(self) -> dict:
        """Every choice of the evaluation (see :class:`EvalOptions`)."""
        return self.config.get("options", {})

    def headline(self) -> Dict[str, list]:
        """The protocol's headline figures: summary key -> overall values per α."""
        return {k: self.overall.get(k) for k in self.options.get("headline", [])}

    def rows(self) -> List[dict]:
        """Table rows (percent): one per category, then ``all`` and ``mean``."""
        return _report.summary_rows(self.summary)

    def to_markdown(self) -> str:
        """Markdown: a header line, every choice made, the headline figures,
        then the PCK tables and breakdowns."""
        c = self.config
        o = self.options
        proto = o.get("protocol")
        head = (f"## {c.get('dataset')} {c.get('split')} — "
                + (f"protocol {proto}, " if proto else "")
                + f"mode {c.get('mode')}, threshold {c.get('threshold')}, {self.n_pairs} pairs"
                + f" ({self.skipped} skipped while loading)")
        parts = [head, ""]
        if o:
            parts += ["### Choices", "", _report.options_markdown(o), ""]
            hl = _report.headline_markdown(self.summary, o.get("headline", []))
            if hl:
                parts += ["### Headline", "", hl, ""]
        return "\n".join(parts) + "\n" + _report.summary_markdown(self.summary)

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
        return _report.write_json(path, self.to_dict(per_pair))

    def to_csv(self, path) -> str:
        """Write :meth:`rows` as CSV (empty cells for missing values); returns the path."""
        return _report.write_csv(path, self.rows())


#: per-thread scratch buffers of the evaluation (see :func:`_work_buffer`)
_WORK = threading.local()


def _is_attention_head(fn) -> bool:
    from ..model.head import AttentionHead

    return isinstance(fn, AttentionHead)


class _FeatureLRU:
    """float32 (optionally head-transformed) feature maps, least-recently-used, by bytes.

    A float16 map is converted by the C core (exactly, like NumPy's cast,
    about ten times faster) into the buffer of a map evicted earlier when no
    one else holds that one, so a long evaluation does not keep asking the
    system for fresh memory (whose pages it zeroes first).  With ``half``
    (the grouped upsample-argmax path, whose kernel reads float16 maps as
    they are) a float16 cache's maps are kept in float16: half the memory
    and no conversion here; the kernel converts the target once per group."""

    def __init__(self, cache: FeatureCache, head: Optional[Callable], max_bytes: int,
                 half: bool = False):
        self.cache = cache
        self.head = head
        self.max_bytes = max_bytes
        self.half = bool(half) and head is None
        self.data: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self.nbytes = 0
        self.spare: Optional[np.ndarray] = None
        self.lock = threading.Lock()
        # maps may be loaded by several threads: geomatch's AttentionHead is
        # stateless at inference and runs concurrently; any other callable
        # is applied by one thread at a time
        self.head_lock = None if head is None or _is_attention_head(head) else threading.Lock()

    def _take_spare(self, shape, dtype) -> np.ndarray:
        with self.lock:
            buf, self.spare = self.spare, None
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
        return buf

    def _load(self, key: str, flipped: bool) -> np.ndarray:
        cache = self.cache
        if cache.dtype == np.float16:
            if self.half:
                buf = cache.read(key, flipped, out=self._take_spare(cache.shape, np.float16))
                if not _core.f16_all_finite(buf):
                    self._nonfinite(key, flipped)
                return buf
            f16 = getattr(_WORK, "f16", None)   # this thread's read buffer
            if f16 is None or f16.shape != cache.shape:
                f16 = _WORK.f16 = np.empty(cache.shape, np.float16)
            src = cache.read(key, flipped, out=f16)
            buf = self._take_spare(src.shape, np.float32)
            if not _core.f16_to_f32(src, buf):
                self._nonfinite(key, flipped)
            return buf
        arr = np.asarray(cache.get(key, flipped=flipped), dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            self._nonfinite(key, flipped)
        return arr

    def _nonfinite(self, key: str, flipped: bool):
        raise ValueError(f"feature cache {self.cache.path}: the features of {key!r}"
                         + (" (flipped)" if flipped else "")
                         + " contain non-finite values; delete that entry and rerun "
                         "geomatch extract")

    def prefetch(self, group) -> None:
        """Start the OS reading the maps of a group of pairs that are not
        held here (:meth:`FeatureCache.prefetch`; a hint, returns at once)."""
        keys = {group[0].trg.key} | {p.src.key for p in group}
        with self.lock:
            keys = [k for k in keys if (k, False) not in self.data]
        for k in sorted(keys):
            self.cache.prefetch(k)

    def get(self, key: str, flipped: bool = False) -> np.ndarray:
        """The map of ``key``; thread-safe (maps are read outside the lock, so
        several threads load at once; of two loading the same key, the first
        to finish is kept)."""
        k = (key, bool(flipped))
        with self.lock:
            arr = self.data.get(k)
            if arr is not None:
                self.data.move_to_end(k)
                return arr
        arr = self._load(key, bool(flipped))
        if self.head is not None:
            if self.head_lock is None:
                arr = np.asarray(self.head(arr), dtype=np.float32)
            else:
                with self.head_lock:
                    arr = np.asarray(self.head(arr), dtype=np.float32)
            if arr.ndim != 3:
                raise ValueError(f"head must return an (h, w, E) array, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"head returned non-finite values for image {key!r}")
        arr = np.ascontiguousarray(arr)
        with self.lock:
            have = self.data.get(k)
            if have is not None:
                self.data.move_to_end(k)
                return have
            self.data[k] = arr
            self.nbytes += arr.nbytes
            while self.nbytes > self.max_bytes and len(self.data) > 1:
                _, old = self.data.popitem(last=False)
                self.nbytes -= old.nbytes
                # reuse only a buffer nobody else holds (a pair in flight, a
                # view): getrefcount counts `old` and its own argument
                if (old.dtype in (np.float32, np.float16) and old.base is None
                        and old.flags.writeable and sys.getrefcount(old) <= 2):
                    self.spare = old
                del old
        return arr


def _default_transfer(checked_src: bool = False) -> Callable:
    """:func:`geomatch.transfer_keypoints` on channel-last maps (cached maps are
    channel-last by construction: no layout guess); a replacement installed as
    ``geomatch.transfer_keypoints`` is called as it is.  ``checked_src``: the
    source maps come from :class:`_FeatureLRU`, which has checked them for
    non-finite values, so the kernel need not scan them again."""
    import functools

    import geomatch as gm

    fn = getattr(gm, "transfer_keypoints", None)
    if fn is None:
        raise RuntimeError("geomatch.transfer_keypoints is not available in this build")
    if fn is not transfer_keypoints:
        return fn
    return functools.partial(_transfer_checked_src if checked_src else fn, layout="hwc")


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


def _check_head_features(head_fn, head_name: str, cache: FeatureCache, force: bool) -> None:
    """Refuse a head trained on other features than the cache's (its file
    records its training cache's fingerprint); ``force`` makes it a warning.
    A head file of an older geomatch (no record at all) gives a warning;
    a callable without a record is not checked."""
    if head_fn is None:
        return
    record = getattr(head_fn, "trained_on", None)
    if record is not None or getattr(head_fn, "_unrecorded_features", False):
        check_features_record(record, cache.manifest, what=f"head {head_name}",
                              where=f"feature cache {cache.path}", force=force)


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


# ------------------------------------------------------------ 1. options

def _options(dataset, protocol, subsample, seed, choices: Dict[str, Any]) -> EvalOptions:
    """Resolve the options; ``subsample``/``seed`` (the older keywords) mean
    ``select="random:N:SEED"`` unless ``select`` is given."""
    if subsample is not None:
        if isinstance(subsample, bool) or not isinstance(subsample, (int, np.integer)) \
                or subsample < 1:
            raise ValueError(f"subsample must be a positive integer, got {subsample!r}")
        if choices.get("select") is None:
            choices["select"] = f"random:{int(subsample)}:{int(seed)}"
    name = getattr(dataset, "name", None)
    opts = resolve_options(protocol, name, **choices)
    kind = parse_select(opts.select)[0]
    if kind == "geoaware" and dataset_key(name) not in ("spair", "ap10k", "pfpascal"):
        raise ValueError(f"select 'geoaware' (GeoAware-SC's TEST_SAMPLE) needs a dataset with "
                         f"GeoAware-SC's geometry groups (spair, ap10k, pfpascal), "
                         f"not {name!r}")
    return opts


# ------------------------------------------------------- 2. pair selection

def select_pairs(dataset, split: str, categories, options: EvalOptions) -> list:
    """The pairs an evaluation scores, in order.

    ``select`` ``all``: every pair; ``first:N``: the first N pairs of each
    category in the dataset's order (GECO's ``n_pairs_eval_pck``; pairs
    without a co-visible keypoint count among the N when they are kept);
    ``random:N:SEED``: ``dataset.pairs(subsample=N, seed=SEED)``;
    ``geoaware:N:SEED``: ``dataset.pairs(subsample=N, seed=SEED,
    sampling="geoaware")``.  ``empty_pairs="count"`` keeps pairs without a
    co-visible keypoint (``dataset.pairs(keep_empty=True)``).
    """
    kind, n, seed = parse_select(options.select)
    kw: Dict[str, Any] = {}
    if options.empty_pairs == "count":
        kw["keep_empty"] = True
    if kind == "geoaware":
        kw["sampling"] = "geoaware"
    name = getattr(dataset, "name", type(dataset).__name__)
    try:
        if kind in ("random", "geoaware"):
            pairs = dataset.pairs(split, categories=categories, subsample=n, seed=seed, **kw)
        else:
            pairs = dataset.pairs(split, categories=categories, **kw)
    except TypeError as exc:
        if not kw:
            raise
        raise ValueError(f"dataset {name!r} cannot select pairs with "
                         f"select {options.select!r} / empty_pairs {options.empty_pairs!r} "
                         f"({exc})") from None
    pairs = list(pairs)
    if kind == "first":
        taken: Dict[str, int] = {}
        out = []
        for p in pairs:
            if taken.get(p.category, 0) < n:
                taken[p.category] = taken.get(p.category, 0) + 1
                out.append(p)
        pairs = out
    if not pairs:
        raise ValueError(f"no pairs to evaluate in split {split!r}"
                         + (f" for categories {list(categories)}" if categories else ""))
    return pairs


def _check_cache_covers(cache: FeatureCache, pairs, split: str, options: EvalOptions) -> None:
    needed = sorted({p.src.key for p in pairs} | {p.trg.key for p in pairs})
    missing = [k for k in needed if not cache.has(k)]
    if missing:
        raise FileNotFoundError(
            f"feature cache {cache.path} misses features of {len(missing)} of {len(needed)} images "
            f"of split {split!r}, e.g. {missing[:5]}")
    if options.test_flip != "off":
        srcs = sorted({p.src.key for p in pairs})
        missing = [k for k in srcs if not cache.has(k, flipped=True)]
        if missing:
            raise FileNotFoundError(
                f"feature cache {cache.path} misses flipped features (needed by test_flip "
                f"{options.test_flip!r}) of {len(missing)} of {len(srcs)} source images, "
                f"e.g. {missing[:5]}; run `geomatch extract` without --no-flip")


# ------------------------------------------------------------- 3. transfer

def scoring_flip_perm(dataset: str, category: str, k: int, perm, flip_table: str) -> np.ndarray:
    """Counterparts used for scoring: SPair-71k's left/right table
    (``"lr"``) or GECO's permutation csv (``"geco"``); other datasets keep
    their own ``perm``."""
    if dataset_key(dataset) == "spair":
        from ..data.tables import (SPAIR_FRONT_BACK_PAIRS, SPAIR_KEYPOINT_NAMES,
                                   SPAIR_LR_PAIRS, flip_permutation)

        if category in SPAIR_LR_PAIRS and len(SPAIR_KEYPOINT_NAMES[category]) == k:
            pairs = list(SPAIR_LR_PAIRS[category])
            if flip_table == "geco":
                pairs += SPAIR_FRONT_BACK_PAIRS.get(category, [])
            return flip_permutation(k, pairs)
    return np.asarray(perm, dtype=np.int64)


def _transfer_kwargs(options: EvalOptions) -> dict:
    kw = {"mode": options.mode}
    if options.mode == "soft-argmax":
        kw.update(window=int(options.window), temperature=float(options.temperature))
    return kw


def _stride_pixels(out: np.ndarray, grid, tsize, manifest: dict, integral: bool) -> np.ndarray:
    """Frame pixels of grid positions under GeoAware-SC's convention: the
    centre pixel ``x = (g + 0.5) W / w - 0.5`` that the transfer returns is
    turned back into the grid position g, then mapped to ``g s + floor(s / 2)``
    network-input pixels (s = input size / grid size,
    ``utils/utils_correspondence.py: calculate_keypoint_transformation``) and
    back to frame pixels."""
    h, w = (int(v) for v in grid)
    sy_in, sx_in = (float(v) for v in manifest["resolution"])
    res = np.empty_like(out)
    for axis, (n, size_in, size) in enumerate(((w, sx_in, tsize[0]), (h, sy_in, tsize[1]))):
        g = (out[:, axis] + 0.5) * n / size - 0.5
        if integral:
            g = np.round(g)
        stride = size_in / n
        res[:, axis] = (g * stride + np.floor(stride / 2)) * (size / size_in)
    return res


class _Points(NamedTuple):
    """One pair's visible source keypoints in the grid frame (float32), the
    frame sizes and the target frame's offset; see :func:`_transfer_points`."""
    vis: np.ndarray
    kps: np.ndarray
    ssize: Tuple[int, int]
    tsize: Tuple[int, int]
    offset: Tuple[float, float]


def _prepare_points(kps, vis, src_size, trg_size, manifest,
                    mirror: bool = False) -> Optional[_Points]:
    """The first half of :func:`_transfer_points`: None if no row is visible."""
    vis = np.asarray(vis, dtype=bool)
    if not vis.any():
        return None
    sx0, sy0, sfw, sfh = grid_frame(src_size, manifest)
    tx0, ty0, tfw, tfh = grid_frame(trg_size, manifest)
    src_kps = np.asarray(kps, dtype=np.float64)[vis] - (sx0, sy0)
    if mirror:
        src_kps[:, 0] = sfw - src_kps[:, 0]
    ssize = (int(round(sfw)), int(round(sfh)))
    tsize = (int(round(tfw)), int(round(tfh)))
    # keep source positions inside the frame image, as pixel lookups require
    src_kps[:, 0] = np.clip(src_kps[:, 0], 0.0, ssize[0] - 1e-3)
    src_kps[:, 1] = np.clip(src_kps[:, 1], 0.0, ssize[1] - 1e-3)
    return _Points(vis, src_kps.astype(np.float32), ssize, tsize, (tx0, ty0))


def _prepare_group(pairs: Sequence, manifest) -> List[Optional[_Points]]:
    """:func:`_prepare_points` of pairs that share a target image (no mirror),
    the frames computed once per image size and the keypoints of pairs with
    as many keypoints in one array pass: the same values, element for element."""
    k = {len(p.src.visible) for p in pairs}
    if len(k) != 1 or next(iter(k)) == 0:
        return [_prepare_points(p.src.keypoints, p.src.visible, p.src.size, p.trg.size,
                                manifest) for p in pairs]
    frames: Dict[Any, tuple] = {}

    def frame(size):
        key = (float(size[0]), float(size[1]))
        f = frames.get(key)
        if f is None:
            f = frames[key] = grid_frame(size, manifest)
        return f

    tx0, ty0, tfw, tfh = frame(pairs[0].trg.size)
    tsize = (int(round(tfw)), int(round(tfh)))
    vis = np.array([np.asarray(p.src.visible, dtype=bool) for p in pairs])
    kps = np.array([np.asarray(p.src.keypoints, dtype=np.float64) for p in pairs])
    src = [frame(p.src.size) for p in pairs]
    ssize = [(int(round(f[2])), int(round(f[3]))) for f in src]
    off = np.array([(f[0], f[1]) for f in src])
    hi = np.array([(w - 1e-3, h - 1e-3) for w, h in ssize])
    # as _prepare_points: kps - (x0, y0), clipped to [0, size - 1e-3], float32
    with np.errstate(invalid="ignore"):
        pts = np.clip(kps - off[:, None, :], 0.0, hi[:, None, :]).astype(np.float32)
    return [_Points(vis[i], pts[i][vis[i]], ssize[i], tsize, (tx0, ty0))
            if vis[i].any() else None for i in range(len(pairs))]


def _finish_points(pts: Optional[_Points], n: int, out, trg_feat=None, manifest=None,
                   kw=None, pixel: str = "centre") -> np.ndarray:
    """The second half of :func:`_transfer_points`: the transfer's output
    ``out`` (target frame pixels of the visible rows) as (n, 2) target pixels,
    NaN rows for the rest."""
    pred = np.full((n, 2), np.nan)
    if pts is None:
        return pred
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (int(pts.vis.sum()), 2):
        raise ValueError(f"transfer returned shape {out.shape}, expected "
                         f"{(int(pts.vis.sum()), 2)}")
    if pixel == "stride" and kw["mode"] in ("grid-argmax", "soft-argmax"):
        out = _stride_pixels(out, np.shape(trg_feat)[:2], pts.tsize, manifest,
                             integral=kw["mode"] == "grid-argmax")
    pred[pts.vis] = out + pts.offset
    return pred


def _transfer_points(kps, vis, src_size, trg_size, src_feat, trg_feat, manifest, fn, kw,
                     mirror: bool = False, pixel: str = "centre") -> np.ndarray:
    """Transfer the visible rows of ``kps`` (original source pixels); NaN rows elsewhere.
    ``mirror``: the source features are those of the mirrored input, so the
    points are mirrored in the grid frame first (x -> frame width - x)."""
    n = np.asarray(vis).shape[0]
    pts = _prepare_points(kps, vis, src_size, trg_size, manifest, mirror)
    if pts is None:
        return _finish_points(None, n, None)
    out = fn(src_feat, trg_feat, pts.kps, pts.ssize, pts.tsize, **kw)
    return _finish_points(pts, n, out, trg_feat, manifest, kw, pixel)


def transfer_pair(pair, src_feat: np.ndarray, trg_feat: np.ndarray, manifest: dict, *,
                  mode: str = "upsample-argmax", transfer: Optional[Callable] = None,
                  window: int = 7, temperature: float = 0.02) -> np.ndarray:
    """Transfer the source keypoints of one pair to the target.

    Keypoints are mapped into the region of each image that the feature grid
    covers (:func:`geomatch.geometry.grid_frame`), transferred, and mapped back
    to target pixels.

    Returns
    -------
    numpy.ndarray, float64 (K, 2)
        Predicted target (x, y); NaN rows for keypoints invisible in the source.
    """
    fn = transfer or _default_transfer()
    kw = {"mode": mode}
    if mode == "soft-argmax":
        kw.update(window=window, temperature=temperature)
    return _transfer_points(pair.src.keypoints, pair.src.visible, pair.src.size, pair.trg.size,
                            src_feat, trg_feat, manifest, fn, kw)


#: GeoAware-SC's ``normalize_feats`` epsilon (``pck_train.py:24-37``).
FEAT_EPS = 1e-10
#: GeoAware-SC's ``get_distance`` resolution (``utils/utils_correspondence.py:22``).
POSE_RESOLUTION = 64
#: the value ``get_distance`` writes over every zero of the masked features
#: (``utils/utils_correspondence.py:35-36``).
MASKED_FILL = -100000.0


def _unit_rows(f: np.ndarray) -> np.ndarray:
    """Rows divided by (their L2 norm + 1e-10), as GeoAware-SC's ``normalize_feats``."""
    x = np.asarray(f, dtype=np.float64).reshape(-1, f.shape[-1])
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + FEAT_EPS)


def _pairwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def _upsample(feat: np.ndarray, size) -> np.ndarray:
    """(h, w, C) -> (H, W, C), ``F.interpolate(mode="bilinear",
    align_corners=False)`` (:mod:`geomatch.ops.resample`)."""
    from ..ops.resample import grid_to_image, sample

    h, w = feat.shape[:2]
    return sample(feat, grid_to_image(int(size[0]), h), grid_to_image(int(size[1]), w))


def pose_distance(src_feat, trg_feat, kind: str, src_fg=None, trg_fg=None) -> float:
    """GeoAware-SC's pose-alignment score of a source/target feature pair
    (lower: better aligned).

    Both feature grids are first normalised as ``normalize_feats``
    (``pck_train.py:24-37``: each descriptor divided by its L2 norm + 1e-10).

    ``"mutual-nn"`` (``get_distance_mutual_nn``,
    ``utils/utils_correspondence.py:54-72``): the mean nearest-neighbour
    distance over the source patches whose nearest target patch has them as
    nearest source patch (first index on ties, as ``argmin``).

    ``"masked"`` (``get_distance``, ``utils/utils_correspondence.py:22-52``):
    the grids are resized to 64x64 (bilinear, ``align_corners=False``) and
    multiplied by the 64x64 foreground masks ``src_fg``/``trg_fg`` (already
    resized with the nearest rule, see :func:`pose_masks`); every exact zero of
    the result is set to -100000; the score is the mean, over the source
    foreground cells, of the distance to the nearest of all 64x64 target cells
    (background cells included, at -100000 in every channel).

    Returns NaN where the official mean runs over nothing (no source
    foreground cell; no mutual neighbour); a NaN distance never triggers the
    flip (``flip_dist < original_dist`` is false).
    """
    if kind not in ("masked", "mutual-nn"):
        raise ValueError(f"kind must be 'masked' or 'mutual-nn', got {kind!r}")
    src_feat, trg_feat = np.asarray(src_feat), np.asarray(trg_feat)
    if kind == "mutual-nn":
        a, b = _unit_rows(src_feat), _unit_rows(trg_feat)
        d = _pairwise_dist(a, b)
        nn12 = d.argmin(axis=1)
        nn21 = d.argmin(axis=0)
        mutual = nn21[nn12] == np.arange(len(a))
        return float(d.min(axis=1)[mutual].mean()) if mutual.any() else math.nan
    if src_fg is None or trg_fg is None:
        raise ValueError("pose_distance(kind='masked') needs src_fg and trg_fg")
    sm, tm = np.asarray(src_fg, bool), np.asarray(trg_fg, bool)
    if sm.ndim != 2 or sm.shape != tm.shape:
        raise ValueError(f"src_fg/trg_fg must be equal (H, W) masks, got {sm.shape} and "
                         f"{tm.shape}")
    size = sm.shape
    out = []
    for feat, m in ((src_feat, sm), (trg_feat, tm)):
        if feat.ndim != 3:
            raise ValueError(f"features must be (h, w, C) grids, got shape {feat.shape}")
        u = _unit_rows(feat).reshape(feat.shape)
        up = _upsample(u, size) * m[..., None]
        up[up == 0] = MASKED_FILL
        out.append(up.reshape(-1, up.shape[-1]))
    a = out[0][sm.reshape(-1)]
    if len(a) == 0:
        return math.nan
    tflat = tm.reshape(-1)
    cands = []
    if tflat.any():
        cands.append(_pairwise_dist(a, out[1][tflat]).min(axis=1))
    if not tflat.all():
        # every background target cell is the same vector (-100000, ...)
        bg = np.full((1, a.shape[1]), MASKED_FILL)
        cands.append(np.sqrt(((a - bg) ** 2).sum(1)))
    return float(np.min(cands, axis=0).mean())


def pose_masks(masks, rec, flipped: bool) -> np.ndarray:
    """64x64 foreground mask of an image for the masked pose distance: the
    image's mask (or its box) resized with ``F.interpolate(mode="nearest")``'s
    rule, cell i <- pixel floor(i * size / 64), in the cached frame."""
    return masks.get(rec, (POSE_RESOLUTION, POSE_RESOLUTION), flipped)


def flip_replacement(src_vis, trg_vis, perm) -> np.ndarray:
    """Keypoints whose prediction the mirrored source replaces, as
    GeoAware-SC's ``optimized_kps_1_to_2`` (``utils/utils_geoware.py:269-279``):
    keypoint k when it is visible in both images and so is its counterpart
    ``perm[k]`` (``vis_flip = vis[perm] * trg_vis * src_vis`` with ``vis`` the
    co-visibility and ``perm`` the full flip permutation)."""
    sv = np.asarray(src_vis, bool)
    tv = np.asarray(trg_vis, bool)
    perm = np.asarray(perm, np.int64)
    return (sv & tv)[perm] & tv & sv


def _test_time_flip(pair, pred, src_feat, trg_feat, src_flip, manifest, options, fn, masks):
    """GeoAware-SC's adaptive flip (``pck_train.py``, ``ADAPT_FLIP``): when the
    mirrored source is better aligned with the target, keypoints whose mirrored
    counterpart is co-visible take the prediction from the mirrored source."""
    k = len(pair.src.visible)
    perm = scoring_flip_perm(pair.dataset, pair.category, k, pair.flip_perm, "lr")
    if options.test_flip == "masked":
        tm = pose_masks(masks, pair.trg, False)
        d0 = pose_distance(src_feat, trg_feat, "masked", pose_masks(masks, pair.src, False), tm)
        d1 = pose_distance(src_flip, trg_feat, "masked", pose_masks(masks, pair.src, True), tm)
    else:
        d0 = pose_distance(src_feat, trg_feat, "mutual-nn")
        d1 = pose_distance(src_flip, trg_feat, "mutual-nn")
    if not d1 < d0:
        return pred, False
    sv = np.asarray(pair.src.visible, bool)
    tv = np.asarray(pair.trg.visible, bool)
    kps = np.asarray(pair.src.keypoints, np.float64)
    # row k of the mirrored source is the mirror image of keypoint perm[k]
    pred_f = _transfer_points(kps[perm], sv[perm], pair.src.size, pair.trg.size, src_flip,
                              trg_feat, manifest, fn, _transfer_kwargs(options), mirror=True,
                              pixel=options.pixel)
    use = flip_replacement(sv, tv, perm)
    out = np.array(pred, copy=True)
    out[use] = pred_f[use]
    return out, True


def _azimuth_and_mirror(pair):
    """(azimuth difference 0..4, mirror flag) from SPair's azimuth bins
    (GeoAware-SC's ``utils/eval_spair.py``), else the pair's ``mirror`` field."""
    meta = getattr(pair, "meta", None) or {}
    a, b = meta.get("src_azimuth_id"), meta.get("trg_azimuth_id")
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        d = abs(int(a) - int(b))
        return min(d, 8 - d), int((a <= 3) != (b <= 3))
    m = meta.get("mirror")
    return None, (int(m) if isinstance(m, (int, np.integer, bool)) else None)


def _prediction(pair, pred, options: EvalOptions, flipped: bool) -> Prediction:
    k = len(pair.src.visible)
    az, mirror = _azimuth_and_mirror(pair)
    return Prediction(
        dataset=str(pair.dataset), split=str(getattr(pair, "split", "")),
        category=str(pair.category), pair_id=str(pair.pair_id), src_key=str(pair.src.key),
        trg_key=str(pair.trg.key), src_kps=np.asarray(pair.src.keypoints, np.float64),
        trg_kps=np.asarray(pair.trg.keypoints, np.float64), pred=np.asarray(pred, np.float64),
        src_vis=np.asarray(pair.src.visible, bool), trg_vis=np.asarray(pair.trg.visible, bool),
        flip_perm=scoring_flip_perm(pair.dataset, pair.category, k, pair.flip_perm,
                                    options.flip_table),
        trg_bbox=np.asarray(pair.trg.bbox, np.float64),
        trg_size=(int(pair.trg.size[0]), int(pair.trg.size[1])),
        src_size=(int(pair.src.size[0]), int(pair.src.size[1])),
        azimuth_diff=az, mirror=mirror, flipped=bool(flipped))


def predict_pair(pair, src_feat, trg_feat, manifest: dict, options: EvalOptions, *,
                 transfer: Optional[Callable] = None, src_feat_flipped=None,
                 masks=None) -> Prediction:
    """Transfer one pair's keypoints under ``options`` (test-time flip included)."""
    fn = transfer or _default_transfer()
    pred = _transfer_points(pair.src.keypoints, pair.src.visible, pair.src.size, pair.trg.size,
                            src_feat, trg_feat, manifest, fn, _transfer_kwargs(options),
                            pixel=options.pixel)
    flipped = False
    if options.test_flip != "off":
        pred, flipped = _test_time_flip(pair, pred, src_feat, trg_feat, src_feat_flipped,
                                        manifest, options, fn, masks)
    return _prediction(pair, pred, options, flipped)


def predict_pairs(pairs: Sequence, cache, options: EvalOptions, *, head=None,
                  transfer: Optional[Callable] = None, workers: int = 1,
                  progress: bool = False, lru_bytes: int = 768 << 20,
                  desc: str = "eval") -> List[Prediction]:
    """Predictions of ``pairs`` (in order) from the features in ``cache``.

    A function of (pairs, cache, options) only -- the unit of work that
    distributed evaluation splits into blocks.  ``workers`` threads transfer
    pairs concurrently, each running its kernels single-threaded; results do
    not depend on ``workers``.  Features are read on the calling thread, except
    for upsample-argmax without test-time flip, whose groups of pairs (one
    target each) read their maps on the worker that transfers them.
    """
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache.open(cache)
    manifest = cache.manifest
    head_fn, _ = _resolve_head(head, manifest)
    fn = transfer or _default_transfer(checked_src=True)   # maps from the LRU are checked
    feats = _FeatureLRU(cache, head_fn, lru_bytes, half=_groupable(transfer, options))
    masks = None
    if options.test_flip == "masked":
        from ..model.train import _MaskStore

        masks = _MaskStore(manifest)
    flip = options.test_flip != "off"

    def job(pair):
        src, trg = feats.get(pair.src.key), feats.get(pair.trg.key)
        srcf = feats.get(pair.src.key, flipped=True) if flip else None
        return (predict_pair, pair, src, trg, manifest, options, fn, srcf, masks)

    # pairs that share a target run back to back: its feature map is then
    # read once (upsample-argmax: one kernel call for the group) or from the
    # processor's cache rather than from memory
    order = _target_order(pairs)
    bar = _progress([pairs[i] for i in order], desc=desc, total=len(pairs), unit="pair",
                    disable=not progress or None)
    if _groupable(transfer, options):
        def gjob(group):   # the group's maps are read on the thread that transfers it
            return (_load_transfer_group, group, feats, manifest, options, fn)

        groups = _prefetched(_target_groups(bar), feats, ahead=4 * max(1, workers))
        if workers <= 1:
            done = [p for g in groups for p in _run_group(gjob(g))]
        else:
            done = [p for g in _run_pipelined(groups, gjob, workers, run=_run_group) for p in g]
    elif workers <= 1:
        done = [_run_job(job(p)) for p in bar]
    else:
        done = _run_pipelined(bar, job, workers)
    out: List[Prediction] = [None] * len(done)  # type: ignore[list-item]
    for i, pred in zip(order, done):
        out[i] = pred
    return out


#: most pairs transferred in one call against a shared target
_GROUP_MAX = 32


def _groupable(transfer, options: EvalOptions) -> bool:
    """True when predictions may come from :func:`_transfer_group`: the default
    transfer (not a replacement installed as ``geomatch.transfer_keypoints``),
    upsample-argmax, no test-time flip."""
    import geomatch as gm

    return (transfer is None and options.mode == "upsample-argmax"
            and options.test_flip == "off"
            and getattr(gm, "transfer_keypoints", None) is transfer_keypoints)


def _target_groups(pairs):
    """Runs of consecutive pairs with the same target image, at most
    ``_GROUP_MAX`` pairs each (a generator, so a progress bar advances)."""
    group: list = []
    for pair in pairs:
        if group and (pair.trg.key != group[0].trg.key or len(group) >= _GROUP_MAX):
            yield group
            group = []
        group.append(pair)
    if group:
        yield group


def _prefetched(groups, feats: "_FeatureLRU", ahead: int):
    """``groups`` as they are, after asking the OS to read the maps of the
    ``ahead`` groups that follow each (those not in ``feats``) into its page
    cache: from a cold page cache the disk then works while the kernels run."""
    from collections import deque

    window: deque = deque()
    for g in groups:
        window.append(g)
        feats.prefetch(g)
        if len(window) > ahead:
            yield window.popleft()
    while window:
        yield window.popleft()


def _run_group(j):
    return j[0](*j[1:])


def _load_transfer_group(group, feats: "_FeatureLRU", manifest, options: EvalOptions,
                         fn) -> List[Prediction]:
    """Read the maps of a group of pairs sharing a target from ``feats`` and
    transfer them (:func:`_transfer_group`)."""
    items = [(pair, pts, feats.get(pair.src.key) if pts is not None else None)
             for pair, pts in zip(group, _prepare_group(group, manifest))]
    # the target last: the kernel reads all of it (the sources: 4 vectors per
    # keypoint), so it is then still in the processor's cache
    return _transfer_group(items, feats.get(group[0].trg.key), options, fn)


def _work_buffer(n: int) -> np.ndarray:
    """This thread's float32 scratch of at least ``n`` values: where the
    grouped kernel converts a float16 target, reused from call to call (fresh
    memory would cost the system's zeroing of its pages on every call)."""
    buf = getattr(_WORK, "buf", None)
    if buf is None or buf.size < n:
        buf = _WORK.buf = np.empty(n, np.float32)
    return buf


def _transfer_group(items, trg_feat, options: EvalOptions, fn) -> List[Prediction]:
    """Predictions of pairs sharing the target map ``trg_feat`` (no test-time
    flip, upsample-argmax): one C call for all their keypoints
    (:func:`geomatch._core.transfer_upsample_argmax_group`, bit for bit the
    per-pair results).  ``items``: (pair, _Points or None, source map).  If
    the call fails (e.g. float32 overflow), each pair goes through ``fn`` as
    :func:`predict_pair` would send it, with that path's errors and fallbacks."""
    live = [(pts, src) for _, pts, src in items if pts is not None]
    outs = None
    if live and len({pts.tsize for pts, _ in live}) == 1:
        try:
            outs = _core.transfer_upsample_argmax_group(
                [src for _, src in live], [pts.kps for pts, _ in live],
                np.array([pts.ssize for pts, _ in live], dtype=np.int64),
                trg_feat, np.array(live[0][0].tsize, dtype=np.int64), check_src=False,
                work=_work_buffer(trg_feat.size) if trg_feat.dtype == np.float16 else None)
        except (ValueError, TypeError, FloatingPointError):
            outs = None
    kw = _transfer_kwargs(options)
    res = iter(outs) if outs is not None else None
    preds = []
    for pair, pts, src in items:
        n = np.asarray(pair.src.visible).shape[0]
        if pts is None:
            out = None
        elif res is not None:
            out = next(res)
        else:   # float16 maps of the LRU go to fn as float32, like everywhere else
            out = fn(np.asarray(src, np.float32), np.asarray(trg_feat, np.float32), pts.kps,
                     pts.ssize, pts.tsize, **kw)
        pred = _finish_points(pts, n, out, trg_feat, None, kw, options.pixel)
        preds.append(_prediction(pair, pred, options, False))
    return preds


def _target_order(pairs: Sequence) -> List[int]:
    """Indices of ``pairs`` grouped by target image, groups in the order of
    their first pair (a stable reordering: the input order within a group)."""
    groups: Dict[Any, List[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.trg.key, []).append(i)
    return [i for g in groups.values() for i in g]


def _run_job(j):
    f, pair, src, trg, manifest, options, fn, srcf, masks = j
    return f(pair, src, trg, manifest, options, transfer=fn, src_feat_flipped=srcf, masks=masks)


def _run_pipelined(pairs, job, workers: int, run=None) -> list:
    """Transfer on ``workers`` threads (one kernel thread each); collect in order here.
    ``run`` (default :func:`_run_job`) runs one ``job(pair)`` on a worker."""
    run = run or _run_job
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from ..runtime import config as _config

    prev = _config.get_num_threads()

    def init():
        _config.set_num_threads(1)   # process-wide: every kernel single-threaded

    out: List[Prediction] = []
    pending: deque = deque()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=init) as pool:
            for pair in pairs:
                pending.append(pool.submit(run, job(pair)))
                while len(pending) > 2 * workers:
                    out.append(pending.popleft().result())
            while pending:
                out.append(pending.popleft().result())
    finally:
        _config.set_num_threads(prev)   # restores the process-wide kernel and BLAS count
    return out


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


def transfer_block(pairs: list, cache_path: str, manifest: dict, head, options,
                   transfer: Optional[Callable] = None) -> List[Prediction]:
    """One Dask task of eval: :func:`predict_pairs` of ``pairs`` from the
    features in ``cache_path`` (``options``: an :class:`EvalOptions`, or a
    transfer mode name with geomatch's defaults for the rest)."""
    from ..runtime.distributed import on_worker

    if isinstance(options, str):
        options = resolve_options(mode=options)

    def work():
        cache = FeatureCache.open(cache_path)   # names the path if this worker cannot see it
        if cache.manifest.get("weights_sha256") != manifest.get("weights_sha256"):
            raise ValueError(f"feature cache {cache_path} holds other features than the "
                             "client's (is the path shared by client and workers?)")
        return predict_pairs(pairs, cache, options, head=_worker_head(head), transfer=transfer,
                             workers=1, progress=False, lru_bytes=256 << 20)

    return on_worker(work)()


def _predict_on_client(client, pairs, cache_path, manifest, head, options, transfer,
                       progress, split) -> List[Prediction]:
    from ..runtime.distributed import n_workers, run_tasks

    if head is not None and not isinstance(head, (str, os.PathLike)):
        head = client.scatter(head, broadcast=True)
    elif head is not None:
        head = os.path.abspath(os.fspath(head))
    size = _block_size(len(pairs), n_workers(client))
    blocks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    preds = run_tasks(client, transfer_block,
                      [(b, cache_path, manifest, head, options, transfer) for b in blocks],
                      desc=f"eval {split}", unit="pair", weights=[len(b) for b in blocks],
                      progress=progress)
    return [p for block in preds for p in block]


# -------------------------------------------------------------- 4. scoring

def _threshold(p: Prediction, kind: str) -> float:
    if kind == "bbox":
        return float(_metrics.bbox_threshold(p.trg_bbox))
    return float(_metrics.image_threshold(p.trg_size))


def score_predictions(predictions: Sequence[Prediction],
                      options: EvalOptions) -> _metrics.PCKAccumulator:
    """Score predictions under ``options`` (threshold kind and frame, compare,
    alphas; the counterparts are those stored on each prediction).

    Returns
    -------
    geomatch.eval.metrics.PCKAccumulator
    """
    acc = _metrics.PCKAccumulator(options.alphas)
    frame = options.frame_size
    groups: Dict[Any, list] = {}
    # pairs of one category (same K, flip permutation and groups) are scored
    # together (:func:`geomatch.eval.metrics._evaluate_pairs_same_k`, the same
    # values as one :func:`~geomatch.eval.metrics.evaluate_pair` per pair);
    # a batch with anything unusual is scored pair by pair, which raises
    # evaluate_pair's errors
    batches: Dict[Any, List[int]] = {}
    for i, p in enumerate(predictions):
        perm = np.asarray(p.flip_perm)
        gkey = (p.dataset, p.category, tuple(perm.tolist()))
        if gkey not in groups:
            groups[gkey] = _metrics.geo_groups(p.dataset, p.category, p.flip_perm)
        batches.setdefault(gkey, []).append(i)
    results: List[Any] = [None] * len(predictions)
    for gkey, idx in batches.items():
        batch = [predictions[i] for i in idx]
        res = _score_batch(batch, options, groups[gkey], frame)
        if res is None:
            res = [_score_one(p, options, groups[gkey], frame) for p in batch]
        for i, r in zip(idx, res):
            results[i] = r
    for r in results:
        acc.add(r)
    return acc


def _score_one(p: Prediction, options: EvalOptions, groups, frame):
    scale = frame / max(p.trg_size) if frame else 1.0
    return _metrics.evaluate_pair(
        p.pred, p.trg_kps, _threshold(p, options.threshold), src_visible=p.src_vis,
        trg_visible=p.trg_vis, flip_perm=p.flip_perm, groups=groups,
        alphas=options.alphas, category=p.category, pair_id=p.pair_id,
        compare=options.compare, scale=scale, azimuth_diff=p.azimuth_diff,
        mirror=p.mirror)


def _score_batch(batch: Sequence[Prediction], options: EvalOptions, groups, frame):
    """:func:`_score_one` of every prediction of ``batch`` (one category: the
    same flip permutation) at once, or None when some input is not plain
    (then each pair is scored on its own, with evaluate_pair's checks and errors)."""
    k = len(np.asarray(batch[0].src_vis))
    try:
        for p in batch:
            for arr, shape, kind in ((p.pred, (k, 2), "f"), (p.trg_kps, (k, 2), "f"),
                                     (p.src_vis, (k,), "b"), (p.trg_vis, (k,), "b")):
                if not (isinstance(arr, np.ndarray) and arr.shape == shape
                        and arr.dtype.kind == kind):
                    return None
        a = _metrics._check_alphas(options.alphas)
        compare = _metrics._check_compare(options.compare)
        perm = _metrics._check_perm(batch[0].flip_perm, k)
        # np.array of equal-shape arrays (checked above): np.stack's values,
        # without its per-array Python overhead
        pred = np.array([p.pred for p in batch], dtype=np.float64)
        g = np.array([p.trg_kps for p in batch], dtype=np.float64)
        sv = np.array([p.src_vis for p in batch], dtype=bool)
        tv = np.array([p.trg_vis for p in batch], dtype=bool)
        if options.threshold == "bbox":
            t = _metrics.bbox_threshold(np.stack([np.asarray(p.trg_bbox, np.float64)
                                                  for p in batch]))
        else:
            t = _metrics.image_threshold(np.array([p.trg_size for p in batch], np.float64))
        scale = np.array([frame / max(p.trg_size) if frame else 1.0 for p in batch], np.float64)
    except (ValueError, TypeError):
        return None
    t = np.asarray(t, np.float64)
    if (np.any(tv & ~np.all(np.isfinite(g), axis=2)) or not np.all(np.isfinite(t))
            or np.any(t <= 0) or not np.all(np.isfinite(scale)) or np.any(scale <= 0)):
        return None
    return _metrics._evaluate_pairs_same_k(
        pred, g, t, sv, tv, perm, groups, a, compare, scale,
        [p.category for p in batch], [p.pair_id for p in batch],
        [p.azimuth_diff for p in batch], [p.mirror for p in batch])


# --------------------------------------------------------------- 5. writing

def write_reports(result: EvalResult, out_dir, *, predictions: bool = True) -> List[str]:
    """Write ``predictions.npz`` (with ``predictions``), ``results.json``
    (with per-pair scores), ``results.csv`` and ``results.md`` into
    ``out_dir``; each file is written whole or not at all."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if predictions:
        meta = {"dataset": result.config.get("dataset"), "split": result.config.get("split"),
                "options": result.options, "skipped": result.skipped,
                "config": result.config}
        written.append(save_predictions(os.path.join(out_dir, "predictions.npz"),
                                        result.predictions, meta))
    written.append(result.to_json(os.path.join(out_dir, "results.json"), per_pair=True))
    written.append(result.to_csv(os.path.join(out_dir, "results.csv")))
    written.append(_report.write_text(os.path.join(out_dir, "results.md"),
                                      result.to_markdown() + "\n"))
    return written


def _draw_figures(pairs, result: EvalResult, out_dir, options: EvalOptions) -> List[str]:
    from .plotting import save_transfer_figure

    fig_dir = os.path.join(os.fspath(out_dir), "figures")
    os.makedirs(fig_dir, exist_ok=True)
    alpha = min(options.alphas, key=lambda a: abs(a - 0.1))
    count: Dict[str, int] = {}
    paths = []
    for pair, pred, res in zip(pairs, result.predictions, result.pair_results):
        i = count.get(pair.category, 0)
        if res.n_points == 0 or i >= _FIGURES_PER_CATEGORY:
            continue
        count[pair.category] = i + 1
        path = os.path.join(fig_dir, f"{_safe(pair.category)}_{i}.png")
        save_transfer_figure(pair, pred.pred, path, alpha=alpha,
                             threshold=_threshold(pred, options.threshold))
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


# ------------------------------------------------------------- evaluate()

def evaluate(dataset, split: str, cache, *, protocol: Optional[str] = None, head=None,
             mode: Optional[str] = None, pixel: Optional[str] = None,
             alphas: Optional[Sequence[float]] = None,
             threshold: Optional[str] = None, frame: Optional[str] = None,
             compare: Optional[str] = None, flip_table: Optional[str] = None,
             select: Optional[str] = None, window: Optional[int] = None,
             temperature: Optional[float] = None, empty_pairs: Optional[str] = None,
             test_flip: Optional[str] = None, headline: Optional[Sequence[str]] = None,
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
    protocol : {"geco", "geoaware-sc", "geoaware-sc-zero-shot"}, optional
        Preset of every choice below as the paper's code makes it for this
        dataset (``docs/protocols.md``).  Explicit arguments override it.
    head : callable or path, optional
        Applied to each (h, w, D) feature map; a path is loaded with
        :func:`geomatch.model.head.load_head`.
    mode : {"upsample-argmax", "grid-argmax", "grid-argmax-corner", "soft-argmax"}
        Keypoint transfer (default "upsample-argmax").
    pixel : {"centre", "stride"}
        Pixel of a grid position in the grid modes: patch centre (default) or
        GeoAware-SC's ``g * s + floor(s / 2)`` input pixels.
    alphas : sequence of float
        Default (0.05, 0.10, 0.15).
    threshold : {"bbox", "image"}
        T = longer side of the target bounding box (default) or image.
    frame : {"original", "pad:S"}
        Frame of the distance test (default the original image).
    compare : {"le", "lt"}
        ``distance / T <= alpha`` (default) or ``distance < alpha * T``.
    flip_table : {"lr", "geco"}
        SPair-71k counterparts for the geometry breakdown (default "lr").
    select : str
        ``"all"`` (default), ``"first:N"``, ``"random:N:SEED"``,
        ``"geoaware[:N[:SEED]]"`` (see :func:`select_pairs`).
    window, temperature : soft-argmax window half-width (7) and temperature (0.02).
    empty_pairs : {"skip", "count"}
        Pairs without a co-visible keypoint: skipped (default) or scored (GECO).
    test_flip : {"off", "masked", "mutual-nn"}
        GeoAware-SC's test-time flip (needs flipped features in the cache).
    headline : sequence of str
        Summary keys reported first.
    categories : list of str, optional
        Restrict to these categories.
    subsample, seed : int, optional
        Same as ``select="random:SUBSAMPLE:SEED"`` (kept for compatibility).
    out_dir : path, optional
        Write ``predictions.npz``, ``results.json`` (with per-pair scores),
        ``results.csv`` and ``results.md`` there (and figures under ``figures/``).
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
        single-threaded (default: :func:`geomatch.get_num_threads`).  With
        1, pairs run one after the other and kernels use all configured
        threads.  Results are identical for any ``workers``.
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
        Unknown protocol, bad option (the message names it), a choice the
        dataset cannot support, no pair to evaluate, ``out_dir`` an existing
        file, a head of another feature dimension than the cache's, or a head
        trained on other features than the cache's (unless ``force``).
    """
    choices = dict(mode=mode, pixel=pixel, alphas=alphas, threshold=threshold, frame=frame,
                   compare=compare,
                   flip_table=flip_table, select=select, window=window,
                   temperature=temperature, empty_pairs=empty_pairs, test_flip=test_flip,
                   headline=headline)
    opts = _options(dataset, protocol, subsample, seed, choices)
    if figures and out_dir is None:
        raise ValueError("figures=True needs out_dir")
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {os.fspath(out_dir)} exists and is not a directory")
    workers = _check_workers(workers)
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache.open(cache)
    head_fn, head_name = _resolve_head(head, cache.manifest)
    _check_head_features(head_fn, head_name, cache, force)
    pairs = select_pairs(dataset, split, categories, opts)
    _check_cache_covers(cache, pairs, split, opts)

    t0 = time.perf_counter()
    if client is not None:
        preds = _predict_on_client(client, pairs, cache.path, cache.manifest, head, opts,
                                   transfer, progress, split)
    else:
        preds = predict_pairs(pairs, cache, opts, head=head_fn, transfer=transfer,
                              workers=workers, progress=progress, lru_bytes=lru_bytes,
                              desc=f"eval {split}")
    acc = score_predictions(preds, opts)
    elapsed = time.perf_counter() - t0

    manifest = cache.manifest
    config = {"dataset": getattr(dataset, "name", pairs[0].dataset), "split": split,
              "mode": opts.mode, "threshold": opts.threshold, "alphas": list(opts.alphas),
              "options": opts.to_dict(), "head": head_name,
              "cache": cache.path, "backbone": manifest.get("backbone"),
              "preprocess": manifest.get("preprocess"),
              "categories": list(categories) if categories else None,
              "subsample": subsample, "seed": seed, "workers": int(workers)}
    result = EvalResult(summary=acc.summary(), config=config, skipped=_skipped_count(dataset),
                        n_pairs=len(pairs), elapsed_s=elapsed, pair_results=acc.results,
                        predictions=preds)
    if out_dir is not None:
        if figures:
            result.figures = _draw_figures(pairs, result, out_dir, opts)
        write_reports(result, out_dir)
    return result


def _check_workers(workers) -> int:
    if workers is None:
        from ..runtime.config import get_num_threads

        workers = max(1, int(get_num_threads()))
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


# ----------------------------------------------------------------- CLI

#: option -> its command-line flag (error messages name the flag)
_FLAGS = {"protocol": "--protocol", "mode": "--mode", "pixel": "--pixel", "alphas": "--alphas",
          "threshold": "--threshold", "frame": "--threshold-frame", "compare": "--compare",
          "flip_table": "--flip-table", "select": "--select", "window": "--window",
          "temperature": "--temperature", "empty_pairs": "--empty-pairs",
          "test_flip": "--test-flip", "headline": "--headline", "subsample": "--subsample",
          "workers": "--workers", "figures=True": "--figures", "out_dir": "--out"}


def _flag_message(msg: str) -> str:
    first = msg.split(" ", 1)[0].rstrip(":")
    flag = _FLAGS.get(first)
    return f"{flag}: {msg}" if flag else msg


def add_scoring_arguments(parser, default: Optional[str] = None) -> None:
    """The scoring choices shared by ``geomatch eval`` and ``geomatch rescore``
    (``--threshold``, ``--threshold-frame``, ``--compare``, ``--alphas``,
    ``--flip-table``); ``default`` replaces the stated defaults (rescore: "the
    run's")."""
    def d(text):
        return f"(default: {default or text})"

    parser.add_argument("--threshold", default=None,
                        help="PCK threshold T: longer side of the target 'bbox' or 'image' "
                             + d("bbox"))
    parser.add_argument("--threshold-frame", dest="frame", default=None,
                        help="frame of the distance test: 'original' or 'pad:S' "
                             "(GeoAware-SC: pad:840) " + d("original"))
    parser.add_argument("--compare", default=None,
                        help="'le': distance/T <= alpha (GECO); 'lt': distance < alpha*T "
                             "(GeoAware-SC) " + d("le"))
    parser.add_argument("--alphas", type=float, nargs="+", default=None,
                        help="PCK alphas " + d("0.05 0.1 0.15"))
    parser.add_argument("--flip-table", default=None,
                        help="SPair-71k counterparts of the geometry breakdown: 'lr' or "
                             "'geco' (GECO's permutation csv) " + d("lr"))


def configure_parser(parser) -> None:
    """Arguments of ``geomatch eval``.  Every choice defaults to None ("not
    given"): the protocol preset, else geomatch's default, fills it."""
    parser.add_argument("--dataset", required=True,
                        help="dataset name (spair, pfpascal, ap10k, cub)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--split", default="test", help="split (default: test)")
    parser.add_argument("--cache", required=True, help="feature cache folder")
    parser.add_argument("--head", default=None, help="trained head checkpoint (default: none, raw features)")
    parser.add_argument("--protocol", default=None,
                        help="preset of every choice as a paper's code makes it: geco, "
                             "geoaware-sc, geoaware-sc-zero-shot (see docs/protocols.md); "
                             "explicit flags override it (default: none, geomatch's defaults)")
    parser.add_argument("--mode", default=None,
                        help=f"keypoint transfer, one of {', '.join(MODES)} "
                             "(default: upsample-argmax)")
    parser.add_argument("--pixel", default=None,
                        help="pixel of a grid position in grid-argmax / soft-argmax: 'centre' "
                             "(default) or 'stride' (GeoAware-SC: g*s + floor(s/2) input pixels)")
    add_scoring_arguments(parser)
    parser.add_argument("--select", default=None,
                        help="pairs: all (default), first:N (per category), "
                             "random:N:SEED, geoaware[:N[:SEED]] (GeoAware-SC's TEST_SAMPLE)")
    parser.add_argument("--empty-pairs", default=None,
                        help="pairs without a co-visible keypoint: 'skip' (default) or "
                             "'count' (GECO: they feed n01/n00)")
    parser.add_argument("--test-flip", default=None,
                        help="GeoAware-SC's test-time flip: off (default), masked, mutual-nn")
    parser.add_argument("--window", type=int, default=None,
                        help="soft-argmax window half-width (default: 7)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="soft-argmax temperature (default: 0.02)")
    parser.add_argument("--headline", nargs="+", default=None,
                        help="summary keys reported first, e.g. pck_image pck_geo_image "
                             "(default: the protocol's, else pck_point pck_image)")
    parser.add_argument("--out", default=None,
                        help="output folder for predictions.npz and results.json/.csv/.md "
                             "(default: eval-<dataset>-<split>)")
    parser.add_argument("--figures", action="store_true",
                        help="draw a few keypoint transfers per category as PNG")
    parser.add_argument("--categories", nargs="+", default=None,
                        help="only these categories (default: all)")
    parser.add_argument("--subsample", type=int, default=None,
                        help="same as --select random:N:SEED with --seed (default: all pairs)")
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
    """Run ``geomatch eval``: print Markdown tables, write predictions, JSON, CSV, Markdown."""
    from ..data import load_dataset
    from ..runtime.distributed import dask_client, parse_address

    if args.dask is not None:
        parse_address(args.dask)
    cache = FeatureCache.open(args.cache)
    dataset = load_dataset(args.dataset, args.root)
    out = args.out or f"eval-{args.dataset}-{args.split}"
    try:
        # an unreachable scheduler fails here, before anything is written
        with dask_client(args.dask) as client:
            res = evaluate(dataset, args.split, cache, protocol=args.protocol, head=args.head,
                           mode=args.mode, pixel=args.pixel, alphas=args.alphas,
                           threshold=args.threshold, frame=args.frame, compare=args.compare,
                           flip_table=args.flip_table, select=args.select, window=args.window,
                           temperature=args.temperature, empty_pairs=args.empty_pairs,
                           test_flip=args.test_flip, headline=args.headline,
                           categories=args.categories, subsample=args.subsample,
                           seed=args.seed, out_dir=out, figures=args.figures,
                           progress=not args.no_progress, workers=args.workers,
                           client=client, force=args.force)
    except ValueError as exc:
        raise ValueError(_flag_message(str(exc))) from None
    print(res.to_markdown())
    print(f"wrote {os.path.join(out, 'predictions.npz')}, {os.path.join(out, 'results.json')}, "
          f"{os.path.join(out, 'results.csv')}"
          + (f" and {len(res.figures)} figures in {os.path.join(out, 'figures')}"
             if res.figures else "")
          + f" ({res.elapsed_s:.1f} s)")
    return 0

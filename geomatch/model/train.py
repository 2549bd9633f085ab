"""Training the attention head on cached backbone features with GECO's OT loss.

``train(dataset, cache, out_dir, ...)`` runs AdamW (lr 1e-4 by default) over
batches of pairs of a split:

* pairs are visited in a seeded order: epoch e is the permutation
  ``default_rng([seed, e])`` of the pair list, and step s takes the pairs
  s*B ... s*B + B - 1 of the concatenated epochs; the augmentations of step s
  come from ``default_rng([seed, s, 1])``.  The run is therefore a function of
  (seed, step) only: the same seed gives the same weights, and a resumed run
  continues exactly as the uninterrupted one;
* flip augmentation (each image with probability 1/2): the cached features of
  the mirrored image (``cache.get(key, flipped=True)``), keypoints mirrored
  x -> W - 1 - x (pixel positions, :func:`geomatch.geometry.flip_x`) and relabelled with the flip permutation
  (new[k] = old[flip_perm[k]]), foreground mirrored;
* foreground (for the marginals and the fg/bg negatives): the segmentation
  mask (``ImageRecord.mask_path``) where that file exists, else the bounding
  box, sampled on the feature grid with the nearest-neighbour rule through
  the cache's grid frame (:func:`geomatch.geometry.foreground_grid`);
* pair swapping (probability 1/2): source and target exchanged;
* per pair: head forward on both feature maps, the loss of
  :mod:`geomatch.model.loss` and its gradient, head backward; gradients are averaged
  over the (non-skipped) pairs of the batch, then one AdamW step;
* every ``val_every`` steps (and at the end), PCK@0.1 (per point, bbox
  threshold) and the left/right confusion rate n̄11/n11 on a fixed subset of
  the validation split; ``best.npz`` keeps the best PCK, ``last.npz`` the
  latest state (head, optimizer, step: what ``resume`` needs);
* ``log.csv`` (one row per step, validation columns where evaluated) and
  ``curves.png`` (loss and validation PCK against steps).

Before the first step it checks, with errors that name the problem: the cache
holds (flipped, with ``flip_aug``) features of every image of the training and
validation pairs and their channels fit the head; every pair's keypoint table
(names, keypoints, flip permutation) is consistent; a ``resume`` checkpoint
has the requested head architecture.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .head import AttentionHead, HeadConfig, head_meta, read_head_file
from ..geometry import flip_x, foreground_grid, grid_frame, keypoint_patches
from .loss import LossConfig, PairLoss
from .optim import AdamW

__all__ = ["train", "TrainResult", "validate", "feature_source", "prepare_pair",
           "resolve_train_options", "TRAIN_PROTOCOLS", "configure_parser", "run_cli"]

_CKPT_KIND = "geomatch.model.train/1"


# ---------------------------------------------------------------------------
# data helpers

def _manifest(cache) -> dict:
    m = getattr(cache, "manifest", None)
    return dict(m) if isinstance(m, dict) else {"preprocess": "resize"}


def _features_record(manifest):
    """The record of the training features saved with the head (None when the
    cache has no full manifest, e.g. an in-memory stand-in)."""
    from ..data.cache import features_fingerprint

    try:
        return features_fingerprint(manifest)
    except (TypeError, ValueError):
        return None


def _frame(size, manifest):
    """Region (x0, y0, fw, fh) of an image in the cached grid
    (:func:`geomatch.geometry.grid_frame`; a manifest without ``preprocess``
    means "resize")."""
    return grid_frame(size, {"preprocess": "resize", **manifest})


def _cache_has(cache, key, flipped=False) -> bool:
    has = getattr(cache, "has", None)
    if has is not None:
        return bool(has(key, flipped=flipped))
    try:
        cache.get(key, flipped=flipped)
        return True
    except KeyError:
        return False


class _MaskStore:
    """Foreground grids per (image key, flipped), from the mask file or the bbox."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.data = {}

    def get(self, rec, grid, flipped):
        k = (rec.key, bool(flipped), tuple(grid))
        if k not in self.data:
            self.data[k] = self._compute(rec, grid, flipped)
        return self.data[k]

    def _compute(self, rec, grid, flipped):
        H, W = int(rec.size[1]), int(rec.size[0])
        mask = None
        mp = getattr(rec, "mask_path", None)
        if mp is not None and os.path.isfile(mp):
            from PIL import Image

            with Image.open(mp) as im:
                mask = np.asarray(im)
            if mask.ndim == 3:
                mask = mask[..., 0]
            if mask.shape != (H, W):
                raise ValueError(f"mask {mp} has shape {mask.shape}, the image is {(H, W)}")
        return foreground_grid(grid, rec.size, mask=mask, bbox=rec.bbox,
                               region=_frame(rec.size, self.manifest), flipped=flipped)


@dataclass
class PreparedPair:
    """Everything the loss needs about one (augmented) pair."""

    src_key: str
    trg_key: str
    src_flipped: bool
    trg_flipped: bool
    src_patch: np.ndarray
    trg_patch: np.ndarray
    flip_perm: np.ndarray
    src_fg: np.ndarray
    trg_fg: np.ndarray
    n_vis_src: int
    n_vis_trg: int
    n_kp: int


def _image_side(rec, flipped, perm, grid, manifest, masks):
    kps = np.asarray(rec.keypoints, dtype=np.float64).copy()
    vis = np.asarray(rec.visible, dtype=bool).copy()
    if flipped:
        # annotations are pixel positions: x -> W - 1 - x (docs/method.md#coordinates)
        kps[:, 0] = flip_x(kps[:, 0], float(rec.size[0]), pixel_index=True)
        kps, vis = kps[perm], vis[perm]
    x0, y0, fw, fh = _frame(rec.size, manifest)
    kf = kps - (x0, y0)
    patch = keypoint_patches(kf, vis, (fw, fh), grid)
    fg = masks.get(rec, grid, flipped)
    return patch, fg, int(vis.sum())


def prepare_pair(pair, grid, manifest, masks, *, flip_src=False, flip_trg=False,
                 swap=False) -> PreparedPair:
    """Patches of the keypoints and foreground grids of an (augmented) pair."""
    src, trg = (pair.trg, pair.src) if swap else (pair.src, pair.trg)
    perm = np.asarray(pair.flip_perm, dtype=np.int64)
    sp, sfg, nvs = _image_side(src, flip_src, perm, grid, manifest, masks)
    tp, tfg, nvt = _image_side(trg, flip_trg, perm, grid, manifest, masks)
    return PreparedPair(src.key, trg.key, bool(flip_src), bool(flip_trg), sp, tp, perm,
                        sfg, tfg, nvs, nvt, int(perm.shape[0]))


# ---------------------------------------------------------------------------
# validation

def feature_source(cache, head: Optional[Callable] = None) -> Callable[[str], np.ndarray]:
    """``key -> (h, w, E)`` float32 features of an image: the cache's, or the
    head's output on them; each image is computed once."""
    feats: Dict[str, np.ndarray] = {}

    def feat(key):
        if key not in feats:
            f = np.asarray(cache.get(key), dtype=np.float32)
            feats[key] = np.asarray(head(f), dtype=np.float32) if head is not None else f
        return feats[key]

    return feat


def validate(pairs: Sequence, cache, head: Optional[Callable] = None, *,
             mode: str = "grid-argmax", alpha: float = 0.1) -> Dict[str, float]:
    """PCK@alpha (per point, bbox threshold) and the left/right confusion rate.

    Keypoints are transferred with ``gm.transfer_keypoints`` through the grid
    frames of the cache (:func:`geomatch.eval.evaluate.transfer_pair`) and scored
    with :func:`geomatch.eval.metrics.evaluate_pair`.

    Parameters
    ----------
    pairs : sequence of PairRecord.
    cache : feature cache (``get(key)`` -> (h, w, D), ``manifest``).
    head : callable (h, w, D) -> (h, w, E), or None for the raw features.
    mode : keypoint transfer mode of ``gm.transfer_keypoints``.

    Returns
    -------
    dict with ``pck`` (correct / scored keypoints), ``confusion`` (n̄11 / n11:
    among keypoints whose counterpart is also visible in the target, the share
    predicted within alpha T of the counterpart but not of the keypoint),
    ``n_points``, ``n11``, ``n11_bar``.
    """
    from ..eval import metrics
    from ..eval.evaluate import transfer_pair

    manifest = _manifest(cache)
    feat = feature_source(cache, head)
    n_pts = n_ok = n11 = n11_bar = 0
    for pair in pairs:
        pred = transfer_pair(pair, feat(pair.src.key), feat(pair.trg.key), manifest, mode=mode)
        r = metrics.evaluate_pair(pred, pair.trg.keypoints, metrics.pair_threshold(pair, "bbox"),
                                  src_visible=pair.src.visible, trg_visible=pair.trg.visible,
                                  flip_perm=pair.flip_perm, alphas=(alpha,))
        n_pts += r.n_points
        n_ok += int(r.n_correct[0])
        n11 += int(r.breakdown["11"][0])
        n11_bar += int(r.breakdown["11_bar"][0])
    return {"pck": n_ok / n_pts if n_pts else float("nan"),
            "confusion": n11_bar / n11 if n11 else float("nan"),
            "n_points": n_pts, "n11": n11, "n11_bar": n11_bar}


# ---------------------------------------------------------------------------
# several datasets in one run, GECO's per-category balancing, the GECO preset

#: ``geomatch train --protocol geco``: GECO's training setting
#: (configs/train_setting_default.yaml, configs/train_pairs.yaml; see
#: docs/protocols.md).  Explicit arguments override it.
TRAIN_PROTOCOLS = {
    "geco": {"lr": 1e-4, "weight_decay": 0.0, "batch_pairs": 6, "epochs": 8.0,
             "pairs_per_category": 800, "flip_aug": True},
}
_TRAIN_DEFAULTS = {"lr": 1e-4, "weight_decay": 0.0, "batch_pairs": 4, "epochs": None,
                   "pairs_per_category": None, "flip_aug": True}


def resolve_train_options(protocol: Optional[str] = None, **explicit) -> Dict[str, object]:
    """Training hyper-parameters: geomatch's defaults, then the protocol's
    preset, then every explicit (non-None) value; ``sources`` tells where
    each came from."""
    if protocol is not None and protocol not in TRAIN_PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(TRAIN_PROTOCOLS)}, got {protocol!r}")
    unknown = sorted(set(explicit) - set(_TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}")
    out = dict(_TRAIN_DEFAULTS)
    src = {k: "default" for k in out}
    for k, v in (TRAIN_PROTOCOLS.get(protocol) or {}).items():
        out[k], src[k] = v, f"protocol {protocol}"
    for k, v in explicit.items():
        if v is not None:
            out[k], src[k] = v, "explicit"
    out["sources"] = src
    return out


class _RoutedCache:
    """Several feature caches behind one ``get``/``has``: keys are
    ``"<i>|<key>"`` with i the index of the cache."""

    def __init__(self, caches):
        self.caches = list(caches)
        ref = None
        for c in self.caches:
            m = _manifest(c)
            sig = {k: m.get(k) for k in ("preprocess", "resolution", "grid", "dim")}
            if ref is None:
                ref, ref_path = sig, getattr(c, "path", c)
            elif sig != ref:
                raise ValueError(f"feature cache {getattr(c, 'path', c)} was made with "
                                 f"{sig}, unlike {ref_path} ({ref}): one run needs the same "
                                 f"preprocessing, grid and feature size in every cache")
        # the head file records one set of features: every cache must hold the same
        # (backbone, weights, preprocessing; geomatch.data.cache.features_fingerprint)
        recs = [(getattr(c, "path", c), _features_record(_manifest(c))) for c in self.caches]
        recs = [(p, r) for p, r in recs if r is not None]
        for p, r in recs[1:]:
            if r["fingerprint"] != recs[0][1]["fingerprint"]:
                f0, f1 = recs[0][1]["fields"], r["fields"]
                diff = sorted(k for k in set(f0) | set(f1) if f0.get(k) != f1.get(k))
                raise ValueError(f"feature cache {p} holds other features than {recs[0][0]} "
                                 f"(fields {diff} differ): one run needs the same backbone, "
                                 f"weights and preprocessing in every cache")
        self.manifest = _manifest(self.caches[0])
        self.path = " + ".join(str(getattr(c, "path", c)) for c in self.caches)

    def _split(self, key):
        i, _, k = key.partition("|")
        return self.caches[int(i)], k

    def get(self, key, flipped=False):
        c, k = self._split(key)
        return c.get(k, flipped=flipped)

    def has(self, key, flipped=False):
        c, k = self._split(key)
        return _cache_has(c, k, flipped)


def _route_pair(pair, i: int):
    import dataclasses

    return dataclasses.replace(pair, src=dataclasses.replace(pair.src, key=f"{i}|{pair.src.key}"),
                               trg=dataclasses.replace(pair.trg, key=f"{i}|{pair.trg.key}"))


def _combine_sources(datasets, caches):
    """(datasets, caches) of several sources -> the routed cache and a
    function that routes one source's pairs to it."""
    if len(datasets) != len(caches):
        raise ValueError(f"give one cache per dataset: {len(datasets)} datasets, "
                         f"{len(caches)} caches")
    from ..data.cache import FeatureCache

    caches = [FeatureCache.open(c) if isinstance(c, (str, os.PathLike)) else c for c in caches]
    return _RoutedCache(caches), (lambda pairs, i: [_route_pair(p, i) for p in pairs])


def _epoch_order(pairs: Sequence, per_category: Optional[int], seed: int):
    """(epoch size n, order(e) -> indices into ``pairs`` for epoch e).

    Without ``per_category``: a permutation of all pairs per epoch.  With it
    (GECO's ``num_el``): each (dataset, category) contributes
    min(per_category, its size) pairs per epoch, taken in turn from a stream
    of seeded permutations of its pairs (so consecutive epochs see different
    pairs), and the epoch's pairs are shuffled."""
    if per_category is None:
        n = len(pairs)
        return n, lambda e: np.random.default_rng([seed, e]).permutation(n)
    if int(per_category) < 1:
        raise ValueError(f"pairs_per_category must be at least 1, got {per_category!r}")
    m_max = int(per_category)
    groups: Dict[tuple, List[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault((getattr(p, "dataset", ""), p.category), []).append(i)
    members = list(groups.values())
    perms: Dict[tuple, np.ndarray] = {}

    def stream(gi, t):
        size = len(members[gi])
        c, pos = divmod(t, size)
        if (gi, c) not in perms:
            perms[(gi, c)] = np.random.default_rng([seed, 2, gi, c]).permutation(size)
        return members[gi][perms[(gi, c)][pos]]

    n = sum(min(m_max, len(m)) for m in members)

    def order(e):
        idx = []
        for gi, mem in enumerate(members):
            m = min(m_max, len(mem))
            idx.extend(stream(gi, t) for t in range(e * m, (e + 1) * m))
        idx = np.asarray(idx, dtype=np.int64)
        return idx[np.random.default_rng([seed, e]).permutation(len(idx))]

    return n, order


# ---------------------------------------------------------------------------
# checkpoints

def _save_checkpoint(path, head: AttentionHead, opt: AdamW, meta: dict) -> None:
    arrays = {"param/" + k: v for k, v in head.parameters().items()}
    arrays.update(opt.state_dict())
    full = dict(head_meta(head), kind=_CKPT_KIND, train=meta)
    tmp = os.fspath(path) + ".tmp.npz"
    np.savez(tmp, __meta__=np.array(json.dumps(full)), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path, head_config: Optional[HeadConfig]):
    hf = read_head_file(path, config=head_config)
    if hf.meta.get("kind") != _CKPT_KIND or "adamw/t" not in hf.arrays:
        raise ValueError(f"{hf.path}: not a training checkpoint (no optimizer state); "
                         f"use it as an initial head instead")
    return hf.head(), hf.meta.get("train", {}), hf.arrays


# ---------------------------------------------------------------------------
# the loop

@dataclass
class TrainResult:
    """What :func:`train` produced."""

    head: AttentionHead
    out_dir: Path
    last_path: Path
    best_path: Optional[Path]
    best_val: Optional[float]
    history: List[dict] = field(default_factory=list)
    val_history: List[dict] = field(default_factory=list)
    steps: int = 0


def _pairs_of(dataset, split, categories, subsample, seed):
    if isinstance(dataset, (list, tuple)):
        return list(dataset)
    return list(dataset.pairs(split, categories=categories, subsample=subsample, seed=seed))


def _check_pairs(pairs, what):
    for p in pairs:
        perm = np.asarray(p.flip_perm)
        K = perm.shape[0]
        bad = None
        names = getattr(p, "keypoint_names", None)
        if names is not None and len(names) != K:
            bad = f"{len(names)} keypoint names but a flip permutation of length {K}"
        for side, rec in (("source", p.src), ("target", p.trg)):
            kp = np.asarray(rec.keypoints)
            vis = np.asarray(rec.visible)
            if bad is None and (kp.shape != (K, 2) or vis.shape != (K,)):
                bad = (f"{side} keypoints {kp.shape} / visibility {vis.shape} do not fit "
                       f"the category's {K} keypoints")
            if bad is None and vis.any() and not np.isfinite(kp[vis.astype(bool)]).all():
                bad = f"{side} has visible keypoints with non-finite coordinates"
        if bad is None and (perm.dtype.kind not in "iu" or sorted(perm.tolist()) != list(range(K))
                            or not np.array_equal(perm[perm], np.arange(K))):
            bad = "flip_perm is not an involutive permutation of range(K)"
        if bad is not None:
            raise ValueError(f"{what} pair {getattr(p, 'pair_id', '?')} "
                             f"({getattr(p, 'category', '?')}): keypoint table does not fit "
                             f"the dataset: {bad}")


def _check_cache(cache, pairs, flipped, in_dim, what):
    keys = sorted({p.src.key for p in pairs} | {p.trg.key for p in pairs})
    for fl in ((False, True) if flipped else (False,)):
        missing = [k for k in keys if not _cache_has(cache, k, fl)]
        if missing:
            kind = "flipped features (needed by flip_aug)" if fl else "features"
            raise ValueError(f"feature cache {getattr(cache, 'path', cache)} misses {kind} of "
                             f"{len(missing)} of {len(keys)} images of the {what} split, "
                             f"e.g. {missing[:5]}")
    f = cache.get(keys[0])
    if f.ndim != 3 or f.shape[-1] != in_dim:
        raise ValueError(f"feature cache {getattr(cache, 'path', cache)} holds features of "
                         f"shape {f.shape}; the head expects (h, w, {in_dim})")
    return tuple(f.shape[:2])


def _plot(out_dir, history, val_history):
    # A bare Figure renders with Agg on savefig without touching pyplot's
    # backend, so a notebook's inline figures keep working after training.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots(1, 2)
    if history:
        s = [h["step"] for h in history]
        ax[0].plot(s, [h["loss"] for h in history], lw=0.8, label="loss")
        if len(s) >= 10:
            k = max(len(s) // 20, 2)
            sm = np.convolve([h["loss"] for h in history], np.ones(k) / k, mode="valid")
            ax[0].plot(s[k - 1:], sm, lw=1.6, label=f"mean of {k}")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("training loss")
        ax[0].legend()
    if val_history:
        s = [v["step"] for v in val_history]
        ax[1].plot(s, [v["pck"] for v in val_history], "o-", label="PCK@0.1")
        ax[1].plot(s, [v["confusion"] for v in val_history], "s--", label="n̄11/n11")
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("validation")
        ax[1].legend()
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=110)
    return path


_CSV_FIELDS = ["step", "epoch", "loss", "pos", "bin", "neg", "fgbg", "pairs", "lr",
               "steps_per_s", "val_pck", "val_confusion"]


def _open_log(log_path: Path, start_step: int):
    """``log.csv`` opened for writing, keeping the rows up to ``start_step``
    (a resumed run); returns (file, writer, loss history, validation history)."""
    rows_kept = []
    if start_step and log_path.exists():
        with open(log_path, newline="") as fh:
            rows_kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
    fh = open(log_path, "w", newline="")
    writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
    writer.writeheader()
    for r in rows_kept:
        writer.writerow(r)
    history = [{"step": int(r["step"]), "loss": float(r["loss"])} for r in rows_kept]
    val_history = [{"step": int(r["step"]), "pck": float(r["val_pck"]),
                    "confusion": float(r["val_confusion"] or "nan")}
                   for r in rows_kept if r.get("val_pck")]
    return fh, writer, history, val_history


def _batch_gradients(head, loss_fn, batch, rng, grid, manifest, masks, feature, flip_aug,
                     swap_aug):
    """Summed head gradients and loss terms of one batch of pairs (augmentations
    drawn from ``rng``: swap, flip source, flip target per pair); pairs the
    loss skips do not count.  Returns (grads, sums, used)."""
    grads = {k: np.zeros_like(v) for k, v in head.parameters().items()}
    sums = {"loss": 0.0, "pos": 0.0, "bin": 0.0, "neg": 0.0, "fgbg": 0.0}
    used = 0
    for pair in batch:
        fl = rng.random(3)
        swap = bool(swap_aug and fl[0] < 0.5)
        fs = bool(flip_aug and fl[1] < 0.5)
        ft = bool(flip_aug and fl[2] < 0.5)
        pp = prepare_pair(pair, grid, manifest, masks, flip_src=fs, flip_trg=ft, swap=swap)
        x = np.stack([feature(pp.src_key, fs), feature(pp.trg_key, ft)])
        y = head.forward(x, cache=True)
        loss, gs, gt, info = loss_fn(y[0], y[1], src_patch=pp.src_patch,
                                     trg_patch=pp.trg_patch, flip_perm=pp.flip_perm,
                                     src_fg=pp.src_fg, trg_fg=pp.trg_fg,
                                     n_vis_src=pp.n_vis_src, n_vis_trg=pp.n_vis_trg,
                                     n_kp=pp.n_kp)
        if info["skipped"]:
            continue
        used += 1
        for k in sums:
            sums[k] += info[k] if k != "loss" else loss
        for k, g in head.backward(np.stack([gs, gt])).items():
            grads[k] += g
    return grads, sums, used


def _initial_head(resume, head_config, init_head, cache, pairs, seed):
    """(head, first step, best validation PCK, checkpoint arrays or None):
    from a ``resume`` checkpoint, from ``init_head``, or freshly initialised
    (``head_config``, else the default architecture for the cache's D)."""
    if resume is not None:
        head, tmeta, files = _load_checkpoint(resume, head_config)
        return head, int(tmeta.get("step", 0)), tmeta.get("best_val"), files
    if head_config is None and init_head is not None:
        head_config = init_head.config
    if head_config is None:
        f0 = cache.get(pairs[0].src.key) if _cache_has(cache, pairs[0].src.key) else None
        head_config = HeadConfig(in_dim=int(f0.shape[-1]) if f0 is not None else 768)
    if init_head is not None:
        if init_head.config != head_config:
            raise ValueError("init_head has a different architecture than head_config")
        return init_head.astype(np.float32), 0, None, None
    return AttentionHead(head_config, seed=seed), 0, None, None


def _training_pairs(dataset, cache, split, val_split, categories, train_subset, val_pairs,
                    val_subset, seed):
    """(cache, training pairs, validation pairs) of one dataset, a list of
    pairs, or a tuple of datasets with a tuple of caches (keys routed)."""
    from ..data.base import Dataset

    multi = isinstance(dataset, tuple) and dataset and all(isinstance(d, Dataset)
                                                          for d in dataset)
    if multi:
        if not isinstance(cache, (tuple, list)):
            raise ValueError("several datasets need a tuple of caches, one per dataset")
        cache, route = _combine_sources(dataset, cache)
        pairs, vals = [], []
        for i, ds in enumerate(dataset):
            cats = [c for c in (categories or ds.categories) if c in ds.categories]
            got = _pairs_of(ds, split, cats, train_subset, seed)
            if not got:
                raise ValueError(f"no training pairs in split {split!r} of {ds.name}")
            pairs += route(got, i)
            if val_pairs is None and val_subset:
                try:
                    vals += route(ds.pairs(val_split, categories=cats,
                                           subsample=int(val_subset), seed=0), i)
                except (ValueError, FileNotFoundError):
                    pass   # a dataset without that split: no validation pairs from it
        return cache, pairs, list(val_pairs) if val_pairs is not None else vals
    if isinstance(cache, (str, os.PathLike)):
        from ..data.cache import FeatureCache

        cache = FeatureCache.open(cache)
    pairs = _pairs_of(dataset, split, categories, train_subset, seed)
    if not pairs:
        raise ValueError(f"no training pairs in split {split!r}")
    if val_pairs is None and val_subset and not isinstance(dataset, (list, tuple)):
        val_pairs = list(dataset.pairs(val_split, categories=categories,
                                       subsample=int(val_subset), seed=0))
    return cache, pairs, list(val_pairs or [])


def train(dataset, cache, out_dir, *, split: str = "trn", val_split: str = "val",
          categories=None, train_subset: Optional[int] = None,
          val_pairs: Optional[Sequence] = None,
          head_config: Optional[HeadConfig] = None, loss_config: Optional[LossConfig] = None,
          lr: float = 1e-4, weight_decay: float = 0.0, batch_pairs: int = 4,
          steps: Optional[int] = None, epochs: Optional[float] = None, seed: int = 0,
          flip_aug: bool = True, swap_aug: bool = True, val_subset: Optional[int] = 100,
          val_every: Optional[int] = None, val_mode: str = "grid-argmax",
          resume=None, init_head: Optional[AttentionHead] = None,
          progress: Optional[bool] = None, save_every: Optional[int] = None,
          pairs_per_category: Optional[int] = None) -> TrainResult:
    """Train an :class:`~geomatch.model.head.AttentionHead` on cached features.

    Parameters
    ----------
    dataset : Dataset (``pairs(split, categories=, subsample=, seed=)``), a
        list of PairRecord (the training pairs; then give ``val_pairs``), or a
        tuple of Datasets trained on together (GECO trains on AP-10K, SPair-71k
        and PF-Pascal at once); then ``cache`` is a tuple with one cache each.
    cache : FeatureCache (``get(key, flipped=)``, ``has``) or a path to one
        (a tuple of them with a tuple of datasets).
    out_dir : folder for ``last.npz``, ``best.npz``, ``log.csv``, ``curves.png``.
    split, val_split : dataset splits for training and validation.
    categories : restrict to these categories.
    train_subset : use a fixed-seed subset of this many training pairs.
    val_pairs : explicit validation pairs (default: ``val_subset`` pairs of ``val_split``,
        drawn with seed 0 so the subset is fixed; None or 0 disables validation).
    head_config : architecture (default :class:`HeadConfig` with the cache's D).
    loss_config : OT and loss constants (default GECO's).
    lr, weight_decay : AdamW (weight decay 0 as GECO's training setting).
    batch_pairs : pairs per step.
    steps, epochs : length of the run (``steps`` wins; default 1 epoch).
    seed : seeds the initialization, the pair order and the augmentations.
    flip_aug, swap_aug : augmentations (see the module docstring).
    val_every : validate every this many steps (default: 5 times per run).
    val_mode : transfer mode for validation.
    resume : path of a ``last.npz``/``best.npz`` training checkpoint to continue.
    init_head : start from this head (ignored with ``resume``).
    progress : progress bar (default: on unless GEOMATCH_NO_PROGRESS=1).
    save_every : write ``last.npz`` every this many steps (default: at validations).
    pairs_per_category : each epoch takes this many pairs of every (dataset,
        category), or all of a smaller one (GECO's ``num_el``: 800), drawn in
        turn from seeded permutations so epochs differ; an epoch is then the
        sum of those counts.  Default: every pair once per epoch.

    Notes
    -----
    On glibc, training fixes malloc's thresholds so that freed step buffers
    are reused rather than returned to the system (see ``geomatch.runtime.memory``);
    the process then keeps its peak resident size.

    Returns
    -------
    TrainResult
    """
    from ..runtime.memory import retain_freed_memory
    from ..runtime.progress import progress as _progress_bar

    if int(batch_pairs) < 1:
        raise ValueError(f"batch_pairs must be at least 1, got {batch_pairs!r}")
    batch_pairs = int(batch_pairs)
    if steps is not None and int(steps) < 0:
        raise ValueError(f"steps must be non-negative, got {steps!r}")
    for name, v in (("val_every", val_every), ("save_every", save_every)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {os.fspath(out_dir)} exists and is not a directory")
    out_dir = Path(out_dir)
    loss_config = loss_config or LossConfig()

    # ---- data and checks (before any step) ----
    cache, pairs, val_pairs = _training_pairs(dataset, cache, split, val_split, categories,
                                              train_subset, val_pairs, val_subset, seed)
    _check_pairs(pairs, "training")
    _check_pairs(val_pairs, "validation")
    head, start_step, best_val, files = _initial_head(resume, head_config, init_head, cache,
                                                      pairs, seed)
    head_config = head.config
    grid = _check_cache(cache, pairs, flip_aug, head_config.in_dim, split)
    if val_pairs:
        _check_cache(cache, val_pairs, False, head_config.in_dim, val_split)
    opt = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    # every step frees and re-allocates the same large arrays: keep them in
    # the heap instead of faulting fresh pages in each step (geomatch.runtime.memory)
    retain_freed_memory()
    if resume is not None:
        opt.load_state_dict(files, source=os.fspath(resume))
    manifest = _manifest(cache)
    masks = _MaskStore(manifest)
    record = _features_record(manifest)
    if resume is not None and record is not None and (
            head.trained_on is not None or getattr(head, "_unrecorded_features", False)):
        from ..data.cache import check_features_record

        check_features_record(head.trained_on, manifest, what=f"checkpoint {os.fspath(resume)}",
                              where=f"feature cache {getattr(cache, 'path', cache)}")
    head.trained_on = record
    n, epoch_order = _epoch_order(pairs, pairs_per_category, seed)
    if steps is None:
        ep = 1.0 if epochs is None else float(epochs)
        if not ep > 0:
            raise ValueError(f"epochs must be positive, got {epochs!r}")
        steps = max(1, int(math.ceil(ep * n / batch_pairs)))
    total = int(steps)
    if val_every is None:
        val_every = max(1, total // 5)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.npz"
    best_path = out_dir / "best.npz"
    log_path = out_dir / "log.csv"
    loss_fn = PairLoss(loss_config)

    fh, writer, history, val_history = _open_log(log_path, start_step)

    perms: Dict[int, np.ndarray] = {}

    def pair_at(g):
        e = g // n
        if e not in perms:
            perms[e] = epoch_order(e)
        return pairs[perms[e][g % n]]

    def feature(key, flipped):
        return np.asarray(cache.get(key, flipped=flipped), dtype=np.float32)

    def meta(step, best):
        return {"step": step, "best_val": best, "seed": seed, "lr": lr,
                "weight_decay": weight_decay, "batch_pairs": batch_pairs,
                "loss_config": loss_config.to_dict(), "flip_aug": flip_aug,
                "swap_aug": swap_aug, "split": split,
                "pairs_per_category": pairs_per_category}

    def run_validation(step):
        nonlocal best_val
        if not val_pairs:
            return None
        v = validate(val_pairs, cache, head, mode=val_mode)
        v["step"] = step
        val_history.append(v)
        if best_val is None or v["pck"] > best_val:
            best_val = v["pck"]
            _save_checkpoint(best_path, head, opt, meta(step, best_val))
        return v

    t_start = time.perf_counter()
    bar = _progress_bar(range(start_step, total), desc="train", total=total - start_step,
                        unit="step", disable=None if progress is None else not progress)
    try:
        for step in bar:
            batch = [pair_at(step * batch_pairs + i) for i in range(batch_pairs)]
            grads, sums, used = _batch_gradients(
                head, loss_fn, batch, np.random.default_rng([seed, step, 1]), grid, manifest,
                masks, feature, flip_aug, swap_aug)
            if used:
                for g in grads.values():
                    g /= used
                opt.step(grads)
                for k in sums:
                    sums[k] /= used
            else:
                sums = {k: float("nan") for k in sums}
            done = step + 1
            sps = (done - start_step) / max(time.perf_counter() - t_start, 1e-9)
            row = {"step": done, "epoch": f"{done * batch_pairs / n:.4f}",
                   "loss": f"{sums['loss']:.6g}", "pos": f"{sums['pos']:.6g}",
                   "bin": f"{sums['bin']:.6g}", "neg": f"{sums['neg']:.6g}",
                   "fgbg": f"{sums['fgbg']:.6g}", "pairs": used, "lr": lr,
                   "steps_per_s": f"{sps:.4g}", "val_pck": "", "val_confusion": ""}
            history.append({"step": done, "loss": sums["loss"]})
            if done % val_every == 0 or done == total:
                v = run_validation(done)
                if v is not None:
                    row["val_pck"] = f"{v['pck']:.6g}"
                    row["val_confusion"] = f"{v['confusion']:.6g}"
                _save_checkpoint(last_path, head, opt, meta(done, best_val))
            elif save_every and done % save_every == 0:
                _save_checkpoint(last_path, head, opt, meta(done, best_val))
            writer.writerow(row)
            fh.flush()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{sums['loss']:.4f}", steps_s=f"{sps:.2f}")
    finally:
        fh.close()
    if start_step >= total:
        _save_checkpoint(last_path, head, opt, meta(start_step, best_val))
    _plot(out_dir, history, val_history)
    return TrainResult(head=head, out_dir=out_dir, last_path=last_path,
                       best_path=best_path if best_path.exists() else None,
                       best_val=best_val, history=history, val_history=val_history,
                       steps=total)


# ---------------------------------------------------------------------------
# CLI

def configure_parser(parser) -> None:
    parser.add_argument("--dataset", required=True, nargs="+",
                        help="dataset name(s): spair, pfpascal, ap10k or cub; several train "
                             "together, e.g. --dataset ap10k spair pfpascal as GECO (required)")
    parser.add_argument("--root", required=True, nargs="+",
                        help="dataset directory, one per --dataset (required)")
    parser.add_argument("--cache", required=True, nargs="+",
                        help="feature cache directory (from geomatch extract), one per "
                             "--dataset (required)")
    parser.add_argument("--out", required=True,
                        help="run directory for checkpoints, log and curves (required)")
    parser.add_argument("--protocol", default=None,
                        help="hyper-parameter preset: geco (lr 1e-4, batch 6, 8 epochs, "
                             "800 pairs per category and epoch); explicit flags override it "
                             "(default: none, geomatch's defaults)")
    parser.add_argument("--split", default="trn",
                        help="training split (default: trn)")
    parser.add_argument("--val-split", default="val",
                        help="validation split (default: val)")
    parser.add_argument("--categories", nargs="*", default=None,
                        help="train only on these categories (default: all)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="use a fixed-seed subset of this many training pairs "
                             "(default: all pairs)")
    parser.add_argument("--pairs-per-category", type=int, default=None,
                        help="pairs of every (dataset, category) per epoch, as GECO's num_el "
                             "(default: every pair once; geco: 800)")
    parser.add_argument("--val-subset", type=int, default=100,
                        help="validation pairs drawn from --val-split of each dataset "
                             "(default: 100)")
    parser.add_argument("--val-every", type=int, default=None,
                        help="validate every this many steps (default: 5 times per run)")
    parser.add_argument("--val-mode", default="grid-argmax",
                        help="keypoint transfer rule of the validation PCK "
                             "(default: grid-argmax)")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of optimizer steps; wins over --epochs "
                             "(default: one epoch)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="length of the run in epochs over the training pairs "
                             "(default: 1 when --steps is not given; geco: 8)")
    parser.add_argument("--batch-pairs", type=int, default=None,
                        help="image pairs per optimizer step (default: 4; geco: 6)")
    parser.add_argument("--lr", type=float, default=None,
                        help="AdamW learning rate (default: 1e-4; geco: 1e-4)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="AdamW weight decay (default: 0, as GECO)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of initialization, sampling and augmentation (default: 0)")
    parser.add_argument("--no-flip", action="store_true",
                        help="disable flip augmentation (default: flips on)")
    parser.add_argument("--no-swap", action="store_true",
                        help="disable source/target swapping (default: swaps on)")
    parser.add_argument("--resume", default=None,
                        help="training checkpoint to continue from (default: a fresh run)")
    parser.add_argument("--head-config", default=None,
                        help="JSON object of HeadConfig fields, e.g. '{\"num_blocks\": 2}' "
                             "(default: the default head)")


def run_cli(args) -> int:
    from ..data import load_dataset
    from ..data.cache import FeatureCache

    n = len(args.dataset)
    for flag, vals in (("--root", args.root), ("--cache", args.cache)):
        if len(vals) != n:
            raise ValueError(f"{flag}: give one per --dataset ({n}), got {len(vals)}")
    try:
        opts = resolve_train_options(args.protocol, lr=args.lr, weight_decay=args.weight_decay,
                                     batch_pairs=args.batch_pairs, epochs=args.epochs,
                                     pairs_per_category=args.pairs_per_category,
                                     flip_aug=False if args.no_flip else None)
    except ValueError as exc:
        raise ValueError(f"--protocol: {exc}") from None
    datasets = tuple(load_dataset(name, root) for name, root in zip(args.dataset, args.root))
    caches = [FeatureCache.open(c) for c in args.cache]
    cfg = None
    if args.head_config:
        try:
            d = json.loads(args.head_config)
        except ValueError as exc:
            raise ValueError(f"--head-config is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ValueError("--head-config must be a JSON object")
        d.setdefault("in_dim", int(caches[0].shape[-1]))
        cfg = HeadConfig.from_dict(d)
    ds, cache = (datasets[0], caches[0]) if n == 1 else (datasets, tuple(caches))
    print("training choices: " + ", ".join(
        f"{k}={opts[k]} ({opts['sources'][k]})" for k in opts if k != "sources"))
    res = train(ds, cache, args.out, split=args.split, val_split=args.val_split,
                categories=args.categories, train_subset=args.train_subset,
                head_config=cfg, lr=opts["lr"], weight_decay=opts["weight_decay"],
                batch_pairs=opts["batch_pairs"], steps=args.steps, epochs=opts["epochs"],
                seed=args.seed, flip_aug=bool(opts["flip_aug"]), swap_aug=not args.no_swap,
                val_subset=args.val_subset, val_every=args.val_every, val_mode=args.val_mode,
                resume=args.resume, pairs_per_category=opts["pairs_per_category"])
    print(f"head: {res.head.num_parameters():,} parameters, {res.head.config}")
    print(f"trained {res.steps} steps; last checkpoint {res.last_path}"
          + (f"; best {res.best_path} (val PCK@0.1 {res.best_val:.4f})" if res.best_path else ""))
    return 0

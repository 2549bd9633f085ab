"""Part segmentation by nearest centroid on PASCAL-Part (GECO's dense evaluation).

For every category GECO fits a nearest-centroid classifier on foreground
features of a seeded subset of the images and labels every foreground pixel
of every test image with the part whose centroid is most cosine-similar.
Left and right parts are separate classes, so the score measures how well the
features tell orientation apart.  Everything follows GECO's code; the file and
line of each step are in docs/segmentation.md.

1. Training set: ``np.random.seed(0); np.random.permutation(n)[:num_samples]``
   of the category's images (``num_samples = 100``).  Part masks are resized
   to the feature grid (bilinear, ``align_corners=False``); foreground cells
   are those with a positive mask sum, labelled by the argmax.
2. :class:`NearestCentroid`: features L2-normalised, PCA to ``n_components``
   (32) fitted on them, projections (without centring) L2-normalised, the
   centroid of each part the coordinate-wise median of its projections (the
   L1 centroid, scikit-learn's ``NearestCentroid(metric="manhattan")``).
3. Prediction: the features are projected, L2-normalised and scored against
   the L2-normalised centroids (cosine); parts absent from the training set
   score 0; the label is the argmax.  ``resolution="full"`` (GECO) upsamples
   the features bilinearly (``align_corners=False``) to the image size first
   (done on the projections, the same numbers since both steps are linear)
   and compares with the full-resolution annotation; ``"grid"`` compares
   on the feature grid with the resized masks of step 1.
4. Background pixels (no part in the annotation) are excluded from the
   prediction: they are class 0 in both maps.  One confusion matrix per
   category over all test pixels (rows = prediction, columns = annotation)
   gives the metrics of :func:`part_metrics`; categories with fewer than two
   part classes are skipped (GECO returns no result for them), the mean is
   over the evaluated categories.

The PCA, the centroids and the scoring of every pixel are matrix products
(the C core's row-blocked BLAS gemm, whose results do not depend on the thread
count) and vectorised gathers; no Python loop runs over pixels.

Command line::

    geomatch seg-eval --dataset pascalparts --root PASCAL-VOC --cache CACHE \\
        [--head CKPT] [--out DIR] [--resolution full|grid] [--figures N]
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.progress import progress as _progress

__all__ = ["confusion_matrix", "accuracy", "mean_precision", "mean_recall", "mean_iou",
           "part_metrics", "METRIC_KEYS", "NearestCentroid", "training_indices",
           "evaluate_segmentation", "SegResult", "configure_parser", "run_cli"]

_BASE_KEYS = ("acc", "m_prcn", "m_rcll", "m_iou", "acc_precnorm", "m_prcn_precnorm",
              "m_rcll_precnorm", "m_iou_precnorm")
#: Metric names in output order: all parts, then the oriented parts ("_geo").
METRIC_KEYS = _BASE_KEYS + tuple(k + "_geo" for k in _BASE_KEYS)
RESOLUTIONS = ("full", "grid")
_TINY = 1e-20      # GECO's threshold for "non-empty" rows, columns and denominators


# --------------------------------------------------------------------------
# confusion matrix and GECO's metrics
# --------------------------------------------------------------------------

def confusion_matrix(pred, gt, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of pixels predicted ``i`` whose annotation is ``j``.

    Parameters
    ----------
    pred, gt : array_like of int
        Labels in ``0 .. num_classes - 1`` (same shape).
    num_classes : int

    Returns
    -------
    numpy.ndarray
        int64 (num_classes, num_classes); rows are predictions, columns the
        ground truth (GECO's orientation: scikit-learn's ``confusion_matrix``
        called with the prediction first).
    """
    p = np.asarray(pred).reshape(-1)
    g = np.asarray(gt).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same size, got {p.size} and {g.size}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if p.size and (p.dtype.kind not in "iu" or g.dtype.kind not in "iu"):
        raise TypeError(f"labels must be integers, got {p.dtype} and {g.dtype}")
    n = int(num_classes)
    if p.size and (p.min() < 0 or g.min() < 0 or p.max() >= n or g.max() >= n):
        raise ValueError(f"labels must lie in [0, {n - 1}]")
    return np.bincount(p.astype(np.int64) * n + g, minlength=n * n).reshape(n, n)


def accuracy(conf) -> float:
    """trace / sum (0 for an empty matrix)."""
    c = np.asarray(conf, dtype=np.float64)
    s = c.sum()
    return float(np.trace(c) / s) if s > _TINY else 0.0


def _mean_diag_ratio(c: np.ndarray, axis: int) -> float:
    """Mean of C[i, i] / (sum along ``axis``) over the non-empty lines."""
    if c.size == 0:
        return 0.0
    s = c.sum(axis=axis)
    keep = s > _TINY
    return float(np.mean(np.diag(c)[keep] / s[keep])) if keep.any() else 0.0


def mean_precision(conf) -> float:
    """Mean over the rows (predicted classes) with a positive sum of C[i, i] / row sum."""
    return _mean_diag_ratio(np.asarray(conf, dtype=np.float64), 1)


def mean_recall(conf) -> float:
    """Mean over the columns (annotated classes) with a positive sum of C[j, j] / column sum."""
    return _mean_diag_ratio(np.asarray(conf, dtype=np.float64), 0)


def mean_iou(conf) -> float:
    """Mean over classes with a positive union of C[i, i] / (row sum + column sum - C[i, i])."""
    c = np.asarray(conf, dtype=np.float64)
    if c.size == 0:
        return 0.0
    d = np.diag(c)
    union = c.sum(axis=1) + c.sum(axis=0) - d
    keep = union > _TINY
    return float(np.mean(d[keep] / union[keep])) if keep.any() else 0.0


def part_metrics(conf, oriented: Optional[Sequence[bool]] = None) -> Dict[str, float]:
    """GECO's segmentation metrics of one category's confusion matrix.

    Parameters
    ----------
    conf : array_like (P + 1, P + 1)
        :func:`confusion_matrix` over all test pixels, class 0 = background
        (background pixels are counted: predicted and annotated 0).
    oriented : sequence of bool (P,), optional
        GECO's ``KP_WITH_ORIENTATION`` of the parts; adds the ``_geo`` keys.

    Returns
    -------
    dict
        ``acc``, ``m_prcn``, ``m_rcll``, ``m_iou`` on the matrix restricted to
        the classes with at least one annotated pixel (background included),
        and the ``_precnorm`` variants on that matrix with every column divided
        by its number of annotated pixels; with ``oriented``, the same eight
        again (``_geo``) keeping only the background and the oriented parts.
        Fractions in [0, 1].
    """
    c = np.asarray(conf, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ValueError(f"conf must be a square matrix, got shape {c.shape}")
    out = _metric_block(c, np.ones(c.shape[0], dtype=bool), "")
    if oriented is not None:
        o = np.asarray(oriented, dtype=bool).reshape(-1)
        if o.shape[0] != c.shape[0] - 1:
            raise ValueError(f"oriented must have one entry per part ({c.shape[0] - 1}), "
                             f"got {o.shape[0]}")
        out.update(_metric_block(c, np.concatenate([[True], o]), "_geo"))
    return out


def _metric_block(c: np.ndarray, allowed: np.ndarray, suffix: str) -> Dict[str, float]:
    n_gt = np.where(allowed, c.sum(axis=0), 0.0)      # annotated pixels per class
    keep = n_gt != 0
    sub = c[np.ix_(keep, keep)]
    norm = sub / n_gt[keep][None, :]
    return {"acc" + suffix: accuracy(sub), "m_prcn" + suffix: mean_precision(sub),
            "m_rcll" + suffix: mean_recall(sub), "m_iou" + suffix: mean_iou(sub),
            "acc_precnorm" + suffix: accuracy(norm),
            "m_prcn_precnorm" + suffix: mean_precision(norm),
            "m_rcll_precnorm" + suffix: mean_recall(norm),
            "m_iou_precnorm" + suffix: mean_iou(norm)}


# --------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------

def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 product on the core's gemm: the same bits for every thread count."""
    from ..ops.linalg import matmul

    return matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _unit_rows(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    n = np.sqrt(np.einsum("ij,ij->i", x, x))
    n[n == 0] = 1.0                      # an all-zero row stays zero instead of NaN
    if inplace:
        x /= n[:, None]
        return x
    return x / n[:, None]


@dataclass
class NearestCentroid:
    """GECO's nearest-centroid part classifier (fitted with :meth:`fit`).

    Attributes
    ----------
    components : numpy.ndarray
        float64 (n_components, D): principal axes of the normalised training
        features, strongest first.
    centroids : numpy.ndarray
        float64 (len(present), n_components): per part, the coordinate-wise
        median of its normalised projections.
    present : numpy.ndarray
        int64: the part classes (0-based) seen in training, ascending.
    num_parts : int
        Number of part classes P (scores have P columns).
    """

    components: np.ndarray
    centroids: np.ndarray
    present: np.ndarray
    num_parts: int

    @classmethod
    def fit(cls, features, labels, num_parts: int, n_components: int = 32) -> "NearestCentroid":
        """Fit on foreground features.

        Parameters
        ----------
        features : array_like (N, D)
        labels : array_like of int (N,)
            Part classes in ``0 .. num_parts - 1``.
        num_parts : int
        n_components : int
            PCA dimension, at most ``min(N, D)``.

        Raises
        ------
        ValueError
            No training features, bad labels or ``n_components``.
        """
        x = np.array(features, dtype=np.float64)          # a private copy, normalised in place
        y = np.asarray(labels).reshape(-1)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have one entry per feature ({x.shape[0]}), "
                             f"got {y.shape[0]}")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= num_parts:
            raise ValueError(f"labels must be integers in [0, {num_parts - 1}]")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain non-finite values")
        n, d = x.shape
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
                or not 1 <= n_components <= min(n, d):
            raise ValueError(f"n_components must be between 1 and min(n_samples, n_features) = "
                             f"{min(n, d)}, got {n_components!r}")
        x = _unit_rows(x, inplace=True)
        mu = x.mean(axis=0)
        cov = _mm(x.T, x) - n * np.outer(mu, mu)   # (x - mu)^T (x - mu) without the copy
        _, v = np.linalg.eigh(cov)                 # ascending eigenvalues
        comps = np.ascontiguousarray(v[:, ::-1][:, :int(n_components)].T)
        proj = _unit_rows(_mm(x, comps.T))
        present = np.unique(y).astype(np.int64)
        order = np.argsort(y, kind="stable")
        bounds = np.searchsorted(y[order], present, side="left")
        ends = np.searchsorted(y[order], present, side="right")
        cents = np.stack([np.median(proj[order[a:b]], axis=0) for a, b in zip(bounds, ends)])
        return cls(comps, cents, present, int(num_parts))

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def project(self, features) -> np.ndarray:
        """(N, D) features -> (N, n_components) projections (no centring, not normalised)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.components.shape[1]:
            raise ValueError(f"features must have shape (N, {self.components.shape[1]}), "
                             f"got {x.shape}")
        return _mm(x, self.components.T)

    def scores_from_projections(self, proj) -> np.ndarray:
        """Cosine of normalised projections with the normalised centroids.

        Returns (N, num_parts); parts absent from training score 0 (GECO).
        """
        p = _unit_rows(np.asarray(proj, dtype=np.float64))
        s = _mm(p, _unit_rows(self.centroids).T)
        out = np.zeros((p.shape[0], self.num_parts), dtype=np.float64)
        out[:, self.present] = s
        return out

    def scores(self, features) -> np.ndarray:
        """(N, D) features -> (N, num_parts) scores."""
        return self.scores_from_projections(self.project(features))

    def predict(self, features) -> np.ndarray:
        """(N, D) features -> int64 part classes (0-based; first maximum on ties)."""
        return np.argmax(self.scores(features), axis=1)


def training_indices(n: int, num_samples: int = 100, seed: int = 0) -> np.ndarray:
    """GECO's training subset: ``np.random.seed(seed); np.random.permutation(n)[:num_samples]``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return np.random.RandomState(seed).permutation(np.arange(int(n)))[:int(num_samples)]


# --------------------------------------------------------------------------
# per-image work
# --------------------------------------------------------------------------

def _grid_labels(soft: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(fg mask, 1-based labels) of soft grid masks (h, w, P), as GECO's training."""
    fg = soft.sum(axis=-1) > 0
    return fg, np.where(fg, np.argmax(soft, axis=-1) + 1, 0)


def _cells_inside(size, grid, frame) -> np.ndarray:
    """bool (h, w): grid cells whose centre lies on the image (not on padding)."""
    from ..ops.resample import image_to_grid

    (w_img, h_img), (gh, gw) = size, grid
    x0, y0, fw, fh = frame
    rows = image_to_grid(gh, h_img, y0, fh).valid
    cols = image_to_grid(gw, w_img, x0, fw).valid
    return rows[:, None] & cols[None, :]


def _predict_full(clf: NearestCentroid, feats: np.ndarray, fg: np.ndarray,
                  frame: Tuple[float, float, float, float]) -> np.ndarray:
    """Labels (H, W) of the foreground pixels from grid features (h, w, D).

    GECO upsamples the features to the image and projects every pixel; the
    projection is linear, so the grid is projected first and only the
    foreground pixels are interpolated (PyTorch's bilinear formula).
    """
    from ..ops.resample import grid_to_image, sample

    h, w, d = feats.shape
    H, W = fg.shape
    x0, y0, fw, fh = frame
    pred = np.zeros((H, W), dtype=np.int64)
    ys, xs = np.nonzero(fg)
    if ys.size:
        proj = clf.project(feats.reshape(h * w, d)).reshape(h, w, -1)
        up = sample(proj, grid_to_image(H, h, y0, fh), grid_to_image(W, w, x0, fw), ys, xs)
        pred[ys, xs] = np.argmax(clf.scores_from_projections(up), axis=1) + 1
    return pred


@dataclass
class SegResult:
    """The outcome of :func:`evaluate_segmentation`.

    Attributes
    ----------
    categories : dict
        Per evaluated category: the 16 metrics of :func:`part_metrics`
        (fractions), plus ``n_test``, ``n_train``, ``n_parts``.
    mean : dict
        Each metric averaged over the evaluated categories (GECO's
        ``segmentation_mean_*``).
    skipped : dict
        Category -> reason it was not evaluated.
    confusion : dict
        Category -> int64 confusion matrix (rows prediction, columns truth).
    part_names : dict
        Category -> part names (class k + 1 of the confusion matrix).
    config : dict
    elapsed_s : float
    figures : list of str
    """
    categories: Dict[str, dict]
    mean: Dict[str, float]
    skipped: Dict[str, str]
    confusion: Dict[str, np.ndarray] = field(repr=False)
    part_names: Dict[str, Tuple[str, ...]] = field(repr=False)
    config: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    figures: List[str] = field(default_factory=list)

    def rows(self) -> List[dict]:
        """CSV rows (metrics in percent): one per category, then ``mean``."""
        out = []
        for cat, m in self.categories.items():
            r = {"category": cat, "n_test": m["n_test"], "n_train": m["n_train"],
                 "n_parts": m["n_parts"]}
            r.update({k: 100.0 * m[k] for k in METRIC_KEYS})
            out.append(r)
        if self.categories:
            r = {"category": "mean", "n_test": sum(m["n_test"] for m in self.categories.values()),
                 "n_train": sum(m["n_train"] for m in self.categories.values()), "n_parts": ""}
            r.update({k: 100.0 * self.mean[k] for k in METRIC_KEYS})
            out.append(r)
        return out

    def to_markdown(self) -> str:
        """Two Markdown tables (all parts, oriented parts), in percent."""
        c = self.config
        lines = [f"## PASCAL-Part part segmentation — nearest centroid (PCA {c.get('n_components')}, "
                 f"at most {c.get('num_samples')} training images, {c.get('resolution')} resolution"
                 f"{', head ' + str(c['head']) if c.get('head') else ''})", ""]
        for title, keys in (("All parts", _BASE_KEYS),
                            ("Oriented parts (geo)", tuple(k + "_geo" for k in _BASE_KEYS))):
            lines += [f"### {title}", "",
                      "| category | images | parts | " + " | ".join(keys) + " |",
                      "|---|---:|---:|" + "---:|" * len(keys)]
            for r in self.rows():
                lines.append(f"| {r['category']} | {r['n_test']} | {r['n_parts']} | "
                             + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
            lines.append("")
        if self.skipped:
            lines.append("Not evaluated: " + "; ".join(f"{k} ({v})" for k, v in
                                                       self.skipped.items()))
        return "\n".join(lines).rstrip() + "\n"

    def _repr_markdown_(self) -> str:         # Jupyter shows the tables
        return self.to_markdown()

    def to_dict(self) -> dict:
        """JSON-ready dict (metrics as fractions, confusion matrices as lists)."""
        return {"config": self.config, "categories": self.categories, "mean": self.mean,
                "skipped": self.skipped, "elapsed_s": self.elapsed_s, "figures": self.figures,
                "part_names": {k: list(v) for k, v in self.part_names.items()},
                "confusion": {k: v.tolist() for k, v in self.confusion.items()}}

    def to_json(self, path) -> str:
        _atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return os.fspath(path)

    def to_csv(self, path) -> str:
        rows = self.rows()
        cols = ["category", "n_test", "n_train", "n_parts"] + list(METRIC_KEYS)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        _atomic_write(path, buf.getvalue())
        return os.fspath(path)


def _atomic_write(path, text: str) -> None:
    from ..runtime.files import atomic_file

    with atomic_file(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _select(dataset, categories) -> Tuple[List[str], Dict[str, str]]:
    """Categories to evaluate and the reasons others are skipped."""
    explicit = categories is not None
    cats = dataset._select_categories(categories)
    todo, skipped = [], {}
    for cat in cats:
        table = dataset.part_table(cat)
        if not table.has_parts:
            reason = "no part annotations in PASCAL-Part"
        elif table.num_parts < 2:
            reason = f"only one part class ({table.names[0]})"
        else:
            todo.append(cat)
            continue
        if explicit:
            raise ValueError(f"PASCAL-Part category {cat!r} cannot be evaluated: {reason} "
                             "(part segmentation needs at least two part classes)")
        skipped[cat] = reason
    return todo, skipped


def _run_categories(dataset, cats, train_images, images, feats, manifest, cache, resolution,
                    n_components, figures, tick, per_cat, confusion, names, shown) -> None:
    """Fit and evaluate every category (fills per_cat, confusion, names, shown)."""
    from ..geometry import grid_frame

    for cat in cats:
        table = dataset.part_table(cat)
        P = table.num_parts
        xs, ys = [], []
        for rec in train_images[cat]:
            f = feats.get(rec.key)
            soft = dataset.grid_part_scores(rec, f.shape[:2], grid_frame(rec.size, manifest))
            fg, lab = _grid_labels(soft)
            xs.append(f[fg])
            ys.append(lab[fg] - 1)
            next(tick, None)
        x = np.concatenate(xs) if xs else np.zeros((0, cache.shape[2]))
        if x.shape[0] == 0:
            raise ValueError(f"PASCAL-Part category {cat!r}: the training images have no "
                             "annotated part pixels")
        try:
            clf = NearestCentroid.fit(x, np.concatenate(ys), P, n_components)
        except ValueError as exc:
            if "n_components" not in str(exc):
                raise
            raise ValueError(f"PASCAL-Part category {cat!r}: {exc} (training foreground "
                             f"pixels x feature channels); lower --n-components") from None
        conf = np.zeros((P + 1, P + 1), dtype=np.int64)
        for rec in images[cat]:
            f = feats.get(rec.key)
            labels = dataset.part_labels(rec)
            frame = grid_frame(rec.size, manifest)
            if resolution == "full":
                gt = labels
                pred = _predict_full(clf, f, gt > 0, frame)
            else:
                soft = dataset.grid_part_scores(rec, f.shape[:2], frame, labels=labels)
                fgm, gt = _grid_labels(soft)
                pred = np.zeros(gt.shape, dtype=np.int64)
                if fgm.any():
                    pred[fgm] = clf.predict(f[fgm]) + 1
                if manifest.get("preprocess") == "pad":     # cells on the padding are no pixels
                    inside = _cells_inside(rec.size, f.shape[:2], frame)
                    pred, gt = pred[inside], gt[inside]
            conf += confusion_matrix(pred, gt, P + 1)
            if len(shown.setdefault(cat, [])) < figures:
                shown[cat].append((rec, gt, pred))
            next(tick, None)
        m = part_metrics(conf, table.oriented)
        m.update(n_test=len(images[cat]), n_train=len(train_images[cat]), n_parts=P)
        per_cat[cat], confusion[cat], names[cat] = m, conf, table.names


def evaluate_segmentation(dataset, cache, *, head=None, categories=None, n_components: int = 32,
                          num_samples: int = 100, resolution: str = "full", seed: int = 0,
                          figures: int = 0, out_dir=None,
                          progress: Optional[bool] = None) -> SegResult:
    """Nearest-centroid part segmentation on PASCAL-Part, GECO's protocol.

    Parameters
    ----------
    dataset : geomatch.data.pascalparts.PascalParts
    cache : FeatureCache or path
        Features of every image of the evaluated categories
        (``geomatch extract --dataset pascalparts``).
    head : callable, checkpoint path or None
        Applied to each (h, w, D) feature map first (a trained head).
    categories : list of str, optional
        Default: every category with at least two part classes (the others
        are listed in :attr:`SegResult.skipped`); naming one without raises.
    n_components : int
        PCA dimension (GECO: 32).
    num_samples : int
        Training images per category (GECO: 100).
    resolution : {"full", "grid"}
        ``"full"`` (GECO): predict at every image pixel from bilinearly
        upsampled features against the full-resolution annotation; ``"grid"``:
        on the feature grid against the resized masks.
    seed : int
        Seed of the training subset (GECO: 0).
    figures : int
        Predicted vs annotated part maps of the first ``figures`` test images
        per category, as PNG in ``out_dir/figures`` (needs ``out_dir``).
    out_dir : path, optional
        Write ``results.json``, ``results.csv``, ``results.md`` (and figures)
        there once everything is computed.

    Raises
    ------
    ValueError
        A category that cannot be evaluated, images missing from the cache
        (the message names the first one), bad options.
    """
    from ..data.cache import FeatureCache
    from .evaluate import _FeatureLRU, _resolve_head

    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    if isinstance(figures, bool) or not isinstance(figures, (int, np.integer)) or figures < 0:
        raise ValueError(f"figures must be a non-negative integer, got {figures!r}")
    if figures and out_dir is None:
        raise ValueError("figures need out_dir")
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
            or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    training_indices(1, num_samples)          # validates num_samples
    if not hasattr(dataset, "part_table"):
        raise TypeError(f"dataset must be a PASCAL-Part loader, got {type(dataset).__name__}")
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache.open(cache)
    manifest = cache.manifest
    head_fn, head_name = _resolve_head(head, manifest)
    cats, skipped = _select(dataset, categories)

    # everything is checked before any work or any file is written
    images = {c: dataset.images("test", [c]) for c in cats}
    train_images = {}
    for c in cats:
        if not images[c]:
            skipped[c] = "no single-object image"
            continue
        pool = dataset.images("train", [c])
        train_images[c] = [pool[i] for i in training_indices(len(pool), num_samples, seed)]
    cats = [c for c in cats if c in train_images]
    if categories is not None and skipped:
        c, why = next(iter(skipped.items()))
        raise ValueError(f"PASCAL-Part category {c!r} cannot be evaluated: {why} in "
                         f"{dataset.root}")
    if not cats:
        raise ValueError(f"no PASCAL-Part category to evaluate in {dataset.root} ("
                         + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    missing = [r.key for c in cats for r in images[c] if not cache.has(r.key)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"feature cache {cache.path} has no features for image "
                         f"{missing[0]!r}{more}; run geomatch extract --dataset pascalparts "
                         f"on the same root first")
    for c in cats:                      # the images the figures will show
        for r in images[c][:figures]:
            if not os.path.isfile(r.path):
                raise FileNotFoundError(f"image not found: {r.path} (needed for the figures)")

    t0 = time.perf_counter()
    feats = _FeatureLRU(cache, head_fn, 512 << 20)
    per_cat: Dict[str, dict] = {}
    confusion: Dict[str, np.ndarray] = {}
    names: Dict[str, Tuple[str, ...]] = {}
    shown: Dict[str, list] = {}
    total = sum(len(train_images[c]) + len(images[c]) for c in cats)
    bar = _progress(range(total), desc="seg-eval pascalparts", total=total, unit="img",
                    disable=None if progress is None else not progress)
    it = iter(bar)
    try:
        _run_categories(dataset, cats, train_images, images, feats, manifest, cache, resolution,
                        n_components, figures, it, per_cat, confusion, names, shown)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    mean = {k: float(np.mean([per_cat[c][k] for c in per_cat])) for k in METRIC_KEYS} \
        if per_cat else {}
    config = {"dataset": "pascalparts", "root": str(dataset.root), "cache": cache.path,
              "backbone": manifest.get("backbone"), "preprocess": manifest.get("preprocess"),
              "grid": manifest.get("grid"), "head": head_name, "n_components": int(n_components),
              "num_samples": int(num_samples), "resolution": resolution, "seed": int(seed),
              "categories": list(per_cat)}
    res = SegResult(per_cat, mean, skipped, confusion, names, config,
                    time.perf_counter() - t0)
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        if figures:
            from .plotting import save_part_figure
            fig_dir = os.path.join(out_dir, "figures")
            os.makedirs(fig_dir, exist_ok=True)
            for cat, items in shown.items():
                for rec, gt, pred in items:
                    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in rec.key)
                    path = os.path.join(fig_dir, f"{name}.png")
                    save_part_figure(path, rec.path, gt, pred, names[cat],
                                     title=f"{rec.key} ({resolution} resolution)")
                    res.figures.append(path)
        res.to_json(os.path.join(out_dir, "results.json"))
        res.to_csv(os.path.join(out_dir, "results.csv"))
        _atomic_write(os.path.join(out_dir, "results.md"), res.to_markdown())
    return res


# ----------------------------------------------------------------- CLI

def configure_parser(parser) -> None:
    """Arguments of ``geomatch seg-eval``."""
    parser.add_argument("--dataset", default="pascalparts", choices=("pascalparts",),
                        help="dataset (default: pascalparts)")
    parser.add_argument("--root", required=True,
                        help="PASCAL-Part folder (holding Parts/ and VOCdevkit/)")
    parser.add_argument("--cache", required=True,
                        help="feature cache of the images (geomatch extract --dataset pascalparts)")
    parser.add_argument("--head", default=None,
                        help="trained head checkpoint applied to the features (default: none)")
    parser.add_argument("--out", default=None,
                        help="output folder for results.json/.csv/.md (default: seg-pascalparts)")
    parser.add_argument("--categories", nargs="+", default=None,
                        help="only these categories (default: all with at least two parts)")
    parser.add_argument("--n-components", type=int, default=32,
                        help="PCA dimension of the classifier (default: 32, as GECO)")
    parser.add_argument("--num-samples", type=int, default=100,
                        help="training images per category (default: 100, as GECO)")
    parser.add_argument("--resolution", default="full", choices=RESOLUTIONS,
                        help="full: every image pixel from upsampled features (GECO); "
                             "grid: on the feature grid (default: full)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training subset (default: 0, as GECO)")
    parser.add_argument("--figures", type=int, default=0, metavar="N",
                        help="draw predicted vs annotated part maps of N test images per "
                             "category (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    """Run ``geomatch seg-eval``: print the Markdown tables, write JSON/CSV/Markdown."""
    from ..data import load_dataset
    from ..data.cache import FeatureCache

    cache = FeatureCache.open(args.cache)
    dataset = load_dataset(args.dataset, args.root,
                           progress=False if args.no_progress else None)
    out = args.out or f"seg-{args.dataset}"
    res = evaluate_segmentation(dataset, cache, head=args.head, categories=args.categories,
                                n_components=args.n_components, num_samples=args.num_samples,
                                resolution=args.resolution, seed=args.seed,
                                figures=args.figures, out_dir=out,
                                progress=False if args.no_progress else None)
    print(res.to_markdown())
    print(f"wrote {os.path.join(out, 'results.json')}, {os.path.join(out, 'results.csv')}, "
          f"{os.path.join(out, 'results.md')}"
          + (f" and {len(res.figures)} figures in {os.path.join(out, 'figures')}"
             if res.figures else "") + f" ({res.elapsed_s:.1f} s)")
    return 0

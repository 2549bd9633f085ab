"""An end-to-end demo that runs offline in a few minutes: ``geomatch demo``.

:func:`run_demo` walks through the whole method on a small synthetic dataset
of mirror-symmetric objects (:mod:`geomatch.demo.synthetic`, written in the
SPair-71k on-disk layout and read by the ordinary SPair-71k loader), with a
weight-free stand-in for DINOv2
(:class:`geomatch.demo.featurizers.LocalAppearanceFeaturizer`, whose descriptors
cannot tell a part from its mirror twin):

1. generate the dataset into ``OUT/data``;
2. featurize every image and its horizontal flip into a feature cache
   ``OUT/cache`` (:class:`geomatch.data.cache.FeatureCache`);
3. evaluate the raw features on the test split (:func:`geomatch.eval.evaluate.evaluate`);
4. train the attention head on the training split with validation
   (:func:`geomatch.model.train.train`, run folder ``OUT/train``);
5. evaluate the trained head on the test split;
6. write ``OUT/report.md``: PCK@0.05/0.10/0.15 and GECO's geometry breakdown
   before and after training, and the figures in ``OUT/figures``: keypoint
   transfers before/after, the left/right confusions before/after and the
   training curves.

It finishes by printing the commands that do the same on SPair-71k with real
DINOv2 weights (:func:`next_steps`).

Command line::

    geomatch demo [--out DIR] [--quick] [--seed N]

The pieces (:func:`featurize_dataset`, :func:`plot_transfer_comparison`,
:func:`plot_confusions`, :func:`plot_training`, :func:`write_report`) are
public so that ``notebooks/quickstart.ipynb`` can run the same steps one by
one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..eval.style import CORRECT as _CORRECT, HEAD as _HEAD_COLOUR, LIGHT as _LIGHT
from ..eval.style import RAW as _RAW_COLOUR, SWAPPED as _SWAPPED, WRONG as _WRONG
from ..runtime.progress import progress as _progress

__all__ = ["DemoSettings", "QUICK", "FULL", "run_demo", "featurize_dataset",
           "confusion_counts", "comparison_tables", "select_figure_pairs", "plot_transfer_comparison",
           "plot_confusions", "plot_training", "write_report", "next_steps", "limit_threads",
           "configure_parser", "run_cli"]

_MARKER = "geomatch-demo.json"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run (see :data:`QUICK` and :data:`FULL`).

    Attributes
    ----------
    n_images_per_category, n_pairs, image_size, categories
        Passed to :func:`geomatch.demo.synthetic.generate_spair_like`
        (``n_pairs`` per category and split).
    grid, patch, neighbourhoods
        :class:`~geomatch.demo.featurizers.LocalAppearanceFeaturizer` settings.
    head
        Fields of :class:`~geomatch.model.head.HeadConfig` (``in_dim`` comes from
        the featurizer).
    steps, batch_pairs, lr, flip_aug, swap_aug, val_subset, val_every
        Passed to :func:`geomatch.model.train.train`.
    n_figures
        Keypoint-transfer figures drawn (one test pair each).
    """

    n_images_per_category: int = 40
    n_pairs: int = 40
    image_size: tuple = (240, 180)
    categories: Optional[tuple] = None
    grid: tuple = (24, 24)
    patch: int = 8
    neighbourhoods: tuple = (1, 2)
    head: tuple = (("dim", 256), ("out_dim", 256), ("num_heads", 2), ("num_blocks", 1),
                   ("mlp_dim", 256), ("attn_dim", 64), ("pos_gain_init", 0.1))
    steps: int = 300
    batch_pairs: int = 4
    lr: float = 1e-3
    flip_aug: bool = True
    swap_aug: bool = True
    val_subset: int = 20
    val_every: Optional[int] = None
    n_figures: int = 3

    def head_config(self, in_dim: int):
        """The :class:`~geomatch.model.head.HeadConfig` for features of ``in_dim`` channels."""
        from ..model.head import HeadConfig

        return HeadConfig(in_dim=int(in_dim), **dict(self.head))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["head"] = dict(self.head)
        return d


#: The full demo: 3 categories x 40 images, a 24 x 24 grid, 300 training steps
#: (about 70 s of CPU time).
FULL = DemoSettings()

#: ``--quick``: 30 images per category, a 20 x 20 grid, 80 steps (about 15 s of
#: CPU time; used by the tests).
QUICK = DemoSettings(n_images_per_category=30, n_pairs=30, grid=(20, 20), steps=80,
                     n_figures=2)


# ---------------------------------------------------------------------------
# steps

def _featurizer(settings: DemoSettings):
    from .featurizers import LocalAppearanceFeaturizer

    return LocalAppearanceFeaturizer(grid=settings.grid, patch=settings.patch,
                                     neighbourhoods=settings.neighbourhoods)


def featurize_dataset(dataset, cache_dir, featurizer, *, splits: Sequence[str] = ("trn", "val", "test"),
                      flip: bool = True, progress: Optional[bool] = None):
    """Featurize every image of ``splits`` (and its horizontal flip) into a cache.

    Parameters
    ----------
    dataset : Dataset
        From :func:`geomatch.data.load_dataset`.
    cache_dir : path
        Feature cache folder (created; an existing cache of the same
        featurizer is reused and only missing images are computed).
    featurizer : callable
        Image path -> ``(h, w, D)`` float32 features, with ``grid``,
        ``input_size`` and ``dim`` attributes
        (:class:`~geomatch.demo.featurizers.LocalAppearanceFeaturizer`).
    splits : sequence of str
    flip : bool
        Also store the features of the mirrored image (``flipped=True``),
        which the training's flip augmentation reads.
    progress : bool, optional
        Progress bar (default: on unless ``GEOMATCH_NO_PROGRESS=1``).

    Returns
    -------
    FeatureCache
    """
    from PIL import Image

    from ..data.cache import FeatureCache

    w_in, h_in = featurizer.input_size
    manifest = {"backbone": "local-appearance", "weights_sha256": "none (weight-free)",
                "resolution": [int(h_in), int(w_in)], "preprocess": "resize",
                "grid": [int(v) for v in featurizer.grid], "dim": int(featurizer.dim),
                "dtype": "float32", "featurizer": repr(featurizer)}
    cache = FeatureCache.create(cache_dir, manifest)
    images = dataset.images_of_splits(splits)
    todo = [r for r in images if not cache.has(r.key) or (flip and not cache.has(r.key, True))]
    for rec in _progress(todo, desc="featurize", total=len(todo), unit="img",
                         disable=None if progress is None else not progress):
        with Image.open(rec.path) as im:
            im = im.convert("RGB")
            cache.put(rec.key, featurizer(im))
            if flip:
                cache.put(rec.key, featurizer(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                          flipped=True)
    cache.flush()
    return cache


def confusion_counts(result, alpha: float = 0.10) -> Dict[str, Dict[str, int]]:
    """Left/right confusions of an :class:`~geomatch.eval.evaluate.EvalResult`.

    Returns ``{"all": {...}, <category>: {...}}`` with ``n11`` (keypoints
    whose mirror twin is also visible in the target) and ``n11_bar`` (their
    predictions that land within ``alpha``·T of the twin but not of the
    keypoint) at the α of the result closest to ``alpha``.
    """
    i = int(np.argmin([abs(a - alpha) for a in result.alphas]))
    out = {}
    for name, st in [("all", result.overall)] + sorted(result.categories.items()):
        bd = st.get("breakdown")
        if bd is not None:
            out[name] = {"n11": int(bd["11"][i]), "n11_bar": int(bd["11_bar"][i])}
    return out


def _pair_confusions(pred, pair, alpha: float) -> tuple:
    """(correct, swapped, scored) bool masks of one pair's predictions."""
    from ..eval.metrics import pair_threshold

    t = pair_threshold(pair, "bbox")
    sv = np.asarray(pair.src.visible, bool)
    tv = np.asarray(pair.trg.visible, bool)
    perm = np.asarray(pair.flip_perm, np.int64)
    gt = np.asarray(pair.trg.keypoints, np.float64)
    pred = np.asarray(pred, np.float64)
    with np.errstate(invalid="ignore"):
        d = np.hypot(*(pred - gt).T) / t
        dt = np.hypot(*(pred - gt[perm]).T) / t
    scored = sv & tv & np.isfinite(d)
    correct = scored & (d <= alpha)
    twin_vis = tv[perm] & (perm != np.arange(len(perm)))
    swapped = scored & ~correct & twin_vis & (dt <= alpha)
    return correct, swapped, scored


def select_figure_pairs(pairs, preds_before, preds_after, n: int, alpha: float = 0.10) -> List[int]:
    """Indices of ``n`` test pairs to draw: one per category in turn, each the
    pair where the trained head fixed the most left/right confusions of the
    raw features (ties: more keypoints scored, then the pair order)."""
    scored = []
    for i, pair in enumerate(pairs):
        _, sw0, sc = _pair_confusions(preds_before[i], pair, alpha)
        c1, sw1, _ = _pair_confusions(preds_after[i], pair, alpha)
        scored.append((-(int(sw0.sum()) - int(sw1.sum())), -int(sc.sum()), i, pair.category))
    by_cat: Dict[str, list] = {}
    for s in sorted(scored):
        by_cat.setdefault(s[3], []).append(s[2])
    chosen: List[int] = []
    cats = sorted(by_cat)
    while len(chosen) < n and any(by_cat.values()):
        for c in cats:
            if by_cat[c] and len(chosen) < n:
                chosen.append(by_cat[c].pop(0))
    return chosen


# ---------------------------------------------------------------------------
# figures

def _pyplot():
    from ..eval.plotting import _pyplot as get

    return get()


def _draw_target(ax, img, pair, pred, alpha, title):
    """Target image, ground truth (hollow circles in keypoint colours) and
    the predictions coloured by outcome, each joined to its ground truth."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    correct, swapped, scored = _pair_confusions(pred, pair, alpha)
    gt = np.asarray(pair.trg.keypoints, np.float64)
    pred = np.asarray(pred, np.float64)
    ax.imshow(img)
    for k in np.flatnonzero(scored):
        col = cmap(k % 20)
        if correct[k]:
            c, m, ms = _CORRECT, "o", 7
        elif swapped[k]:
            c, m, ms = _SWAPPED, "D", 7
        else:
            c, m, ms = _WRONG, "X", 9
        ax.plot([gt[k, 0], pred[k, 0]], [gt[k, 1], pred[k, 1]], "-", color=c, lw=1.8, zorder=2)
        ax.plot(gt[k, 0], gt[k, 1], "o", ms=11, mfc="none", mec="white", mew=3.5, zorder=3)
        ax.plot(gt[k, 0], gt[k, 1], "o", ms=11, mfc="none", mec=col, mew=2.0, zorder=4)
        ax.plot(pred[k, 0], pred[k, 1], m, ms=ms, mfc=c, mec="white", mew=1.0, zorder=5)
    n = int(scored.sum())
    ax.set_title(f"{title}\n{int(correct.sum())}/{n} correct, "
                 f"{int(swapped.sum())} left/right swapped", fontsize=10)
    h, w = img.shape[:2]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()


def plot_transfer_comparison(pair, pred_before, pred_after, *, alpha: float = 0.10,
                             labels=("raw features", "trained head"), figsize=(15, 4.4)):
    """Source keypoints and the transfers of two models side by side.

    Left: the source image with its keypoints (colour = keypoint, labelled
    by name).  Middle and right: the target with the ground truth (hollow
    circles in the keypoint's colour) and each model's predictions joined to
    their ground truth: green circle = correct (within α·T), orange diamond
    = landed on the mirror twin (a left/right confusion), red cross = other
    miss.  Keypoints visible in both images are drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    from ..eval.plotting import _load_image

    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    src_img = _load_image(pair.src.path)
    trg_img = _load_image(pair.trg.path)
    both = np.asarray(pair.src.visible, bool) & np.asarray(pair.trg.visible, bool)
    names = list(getattr(pair, "keypoint_names", None) or [])
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    ax = axes[0]
    ax.imshow(src_img)
    kps = np.asarray(pair.src.keypoints, np.float64)
    w_src = src_img.shape[1]
    for j, k in enumerate(np.flatnonzero(both)):
        col = cmap(k % 20)
        ax.plot(kps[k, 0], kps[k, 1], "o", ms=9, mfc=col, mec="white", mew=1.5, zorder=3)
        label = names[k] if k < len(names) else str(k)
        # labels point away from the nearer side edge and alternate up/down
        left = kps[k, 0] > 0.6 * w_src
        ax.annotate(label, (kps[k, 0], kps[k, 1]), xytext=(-6 if left else 6, 5 if j % 2 else -11),
                    textcoords="offset points", ha="right" if left else "left",
                    fontsize=7, color="white", zorder=4, annotation_clip=False,
                    bbox=dict(boxstyle="round,pad=0.15", fc=col, ec="none", alpha=0.85))
    ax.set_title(f"source — {pair.pair_id}\nkeypoints visible in both images", fontsize=10)
    ax.set_axis_off()
    _draw_target(axes[1], trg_img, pair, pred_before, alpha, f"target — {labels[0]}")
    _draw_target(axes[2], trg_img, pair, pred_after, alpha, f"target — {labels[1]}")
    handles = [
        Line2D([], [], marker="o", ls="none", ms=10, mfc="none", mec="0.25", mew=2,
               label="ground truth (colour = keypoint)"),
        Line2D([], [], marker="o", ls="-", color=_CORRECT, ms=7, mfc=_CORRECT, mec="white",
               label=f"correct (within {alpha:g}·T)"),
        Line2D([], [], marker="D", ls="-", color=_SWAPPED, ms=7, mfc=_SWAPPED, mec="white",
               label="left/right swap (on the mirror twin)"),
        Line2D([], [], marker="X", ls="-", color=_WRONG, ms=9, mfc=_WRONG, mec="white",
               label="other miss"),
    ]
    fig.subplots_adjust(left=0.005, right=0.995, top=0.87, bottom=0.09, wspace=0.03)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    return fig


def plot_confusions(before, after, *, labels=("raw features", "trained head"),
                    figsize=(11, 4.2)):
    """Bar chart of left/right confusions before and after training.

    Left panel: the share n̄₁₁/n₁₁ of keypoints (with their mirror twin
    visible in the target) predicted on the twin, for every α.  Right
    panel: the same at α = 0.10 per category.  Counts n̄₁₁/n₁₁ are written
    on the bars.

    Parameters
    ----------
    before, after : EvalResult
    """
    plt = _pyplot()
    fig, (ax_a, ax_c) = plt.subplots(1, 2, figsize=figsize,
                                     gridspec_kw={"width_ratios": [1, 1.3]})
    width = 0.38
    alphas = before.alphas
    for j, (res, lab, col) in enumerate(((before, labels[0], _RAW_COLOUR),
                                         (after, labels[1], _HEAD_COLOUR))):
        bd = res.overall["breakdown"]
        n11 = np.asarray(bd["11"], float)
        bar = np.asarray(bd["11_bar"], float)
        rate = np.where(n11 > 0, 100.0 * bar / np.maximum(n11, 1), 0.0)
        x = np.arange(len(alphas)) + (j - 0.5) * width
        ax_a.bar(x, rate, width, color=col, label=lab)
        for xi, r, b, n in zip(x, rate, bar, n11):
            ax_a.annotate(f"{int(b)}/{int(n)}", (xi, r), xytext=(0, 2), textcoords="offset points",
                          ha="center", va="bottom", fontsize=8)
        cb = confusion_counts(res, 0.10)
        cats = [c for c in cb if c != "all"]
        rates = [100.0 * cb[c]["n11_bar"] / cb[c]["n11"] if cb[c]["n11"] else 0.0 for c in cats]
        xc = np.arange(len(cats)) + (j - 0.5) * width
        ax_c.bar(xc, rates, width, color=col, label=lab)
        for xi, r, c in zip(xc, rates, cats):
            ax_c.annotate(f"{cb[c]['n11_bar']}/{cb[c]['n11']}", (xi, r), xytext=(0, 2),
                          textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax_a.set_xticks(np.arange(len(alphas)))
    ax_a.set_xticklabels([f"α = {a:g}" for a in alphas])
    ax_a.set_ylabel("left/right confusions n̄₁₁ / n₁₁ (%)")
    ax_a.set_title("all test keypoints whose mirror twin is visible")
    ax_c.set_xticks(np.arange(len(cats)))
    ax_c.set_xticklabels(cats)
    ax_c.set_title("per category (α = 0.1)")
    for ax in (ax_a, ax_c):
        ax.legend(fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        lo, hi = ax.get_ylim()
        ax.set_ylim(0, hi * 1.15 + 1)
    fig.suptitle("Left/right confusions on the test split (lower is better)")
    fig.tight_layout()
    return fig


def plot_training(train_result, *, raw_val: Optional[dict] = None, figsize=(11, 3.8)):
    """Training curves: the loss per step (and its running mean), and the
    validation PCK@0.1 and left/right confusion rate n̄₁₁/n₁₁ against steps
    (dashed: the raw features on the same validation pairs)."""
    plt = _pyplot()
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=figsize)
    hist = [h for h in train_result.history if np.isfinite(h["loss"])]
    if hist:
        s = np.array([h["step"] for h in hist])
        loss = np.array([h["loss"] for h in hist])
        ax_l.plot(s, loss, lw=0.8, color=_LIGHT, label="loss per step")
        k = max(2, len(s) // 15)
        if len(s) >= 2 * k:
            sm = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax_l.plot(s[k - 1:], sm, lw=2.0, color=_HEAD_COLOUR, label=f"running mean of {k}")
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("training loss (GECO OT loss)")
    ax_l.set_title("training loss")
    ax_l.legend(fontsize=9)
    vh = train_result.val_history
    if vh:
        s = [v["step"] for v in vh]
        ax_v.plot(s, [100 * v["pck"] for v in vh], "o-", color=_CORRECT, label="PCK@0.1 (head)")
        ax_v.plot(s, [100 * v["confusion"] for v in vh], "D-", color=_SWAPPED,
                  label="left/right confusions (head)")
        if raw_val is not None:
            ax_v.axhline(100 * raw_val["pck"], ls="--", color=_CORRECT, lw=1.2,
                         label="PCK@0.1 (raw features)")
            ax_v.axhline(100 * raw_val["confusion"], ls="--", color=_SWAPPED, lw=1.2,
                         label="confusions (raw features)")
    ax_v.set_xlabel("step")
    ax_v.set_ylabel("%")
    ax_v.set_title("validation")
    ax_v.set_ylim(0, 100)
    ax_v.legend(fontsize=8, loc="upper right")
    for ax in (ax_l, ax_v):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _save(fig, path) -> str:
    plt = _pyplot()
    try:
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)
    return os.fspath(path)


# ---------------------------------------------------------------------------
# report

def _pct(v) -> str:
    return "–" if v is None else f"{100.0 * v:.1f}"


def _pck_table(before, after, labels) -> List[str]:
    al = before.alphas
    head = "| | " + " | ".join(f"PCK@{a:.2f}" for a in al) + " |"
    lines = [head, "|---|" + "---:|" * len(al)]
    for kind, title in (("pck_point", "per point"), ("pck_image", "per image"),
                        ("pck_geo", "geometry-aware subset")):
        for res, lab in zip((before, after), labels):
            vals = " | ".join(_pct(v) for v in res.overall[kind])
            lines.append(f"| {lab}, {title} | {vals} |")
    return lines


def _category_table(before, after, labels, alpha: float = 0.10) -> List[str]:
    i = int(np.argmin([abs(a - alpha) for a in before.alphas]))
    lines = [f"| category | pairs | points | {labels[0]} PCK@{alpha:.2f} | "
             f"{labels[1]} PCK@{alpha:.2f} | {labels[0]} n̄₁₁/n₁₁ | {labels[1]} n̄₁₁/n₁₁ |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    cb, ca = confusion_counts(before, alpha), confusion_counts(after, alpha)
    for cat in sorted(before.categories):
        sb, sa = before.categories[cat], after.categories[cat]
        lines.append(f"| {cat} | {sb['n_pairs']} | {sb['n_points']} | {_pct(sb['pck_point'][i])} | "
                     f"{_pct(sa['pck_point'][i])} | {cb[cat]['n11_bar']}/{cb[cat]['n11']} | "
                     f"{ca[cat]['n11_bar']}/{ca[cat]['n11']} |")
    return lines


_BD_COLUMNS = (("11", "n₁₁"), ("11_hat", "n̂₁₁"), ("11_tilde", "ñ₁₁"), ("11_bar", "n̄₁₁"),
               ("10", "n₁₀"), ("10_hat", "n̂₁₀"), ("1x", "n₁ₓ"), ("1x_hat", "n̂₁ₓ"),
               ("01", "n₀₁"), ("01_bar", "n̄₀₁"), ("00", "n₀₀"))


def _breakdown_table(before, after, labels) -> List[str]:
    head = "| | α | " + " | ".join(t for _, t in _BD_COLUMNS) + " | n̄₁₁/n₁₁ (%) | PCK (%) |"
    lines = [head, "|---|---|" + "---:|" * (len(_BD_COLUMNS) + 2)]
    for res, lab in zip((before, after), labels):
        bd = res.overall["breakdown"]
        for i, a in enumerate(res.alphas):
            vals = " | ".join(str(bd[k][i]) for k, _ in _BD_COLUMNS)
            n11 = bd["11"][i]
            rate = f"{100.0 * bd['11_bar'][i] / n11:.1f}" if n11 else "–"
            lines.append(f"| {lab} | {a:.2f} | {vals} | {rate} | "
                         f"{_pct(res.overall['pck_breakdown'][i])} |")
    return lines


def comparison_tables(before, after, labels=("raw features", "trained head")) -> str:
    """Markdown tables comparing two evaluations of the same split: PCK
    (per point, per image, geometry-aware subset) at every α, PCK@0.10 and
    left/right confusions per category, and GECO's geometry breakdown."""
    lines = ["#### PCK (%)", ""] + _pck_table(before, after, labels)
    lines += ["", "#### Per category", ""] + _category_table(before, after, labels)
    lines += ["", "#### Geometry breakdown (all categories)", ""]
    lines += _breakdown_table(before, after, labels)
    return "\n".join(lines) + "\n"


def next_steps() -> str:
    """The commands that run the same pipeline on SPair-71k with real DINOv2
    weights (placeholders in angle brackets)."""
    return "\n".join([
        "# 1. DINOv2 features (and those of the flipped images) of every split into a cache",
        "geomatch extract --dataset spair --root <SPAIR71K_DIR> --weights <DINOV2_WEIGHTS> \\",
        "    --model vitb14 --split trn val test --out <CACHE_DIR>",
        "# 2. train the attention head on the cached training features",
        "geomatch train --dataset spair --root <SPAIR71K_DIR> --cache <CACHE_DIR> --out <RUN_DIR>",
        "# 3. evaluate the raw features, then the trained head, on the test split",
        "geomatch eval --dataset spair --root <SPAIR71K_DIR> --split test --cache <CACHE_DIR> \\",
        "    --out <EVAL_DIR>/raw",
        "geomatch eval --dataset spair --root <SPAIR71K_DIR> --split test --cache <CACHE_DIR> \\",
        "    --head <RUN_DIR>/best.npz --out <EVAL_DIR>/head --figures",
    ])


def write_report(path, before, after, *, figures: Dict[str, object], settings=None,
                 timings: Optional[Dict[str, float]] = None, train_result=None,
                 labels=("raw features", "trained head"), title: str = "geomatch demo") -> str:
    """Write the Markdown report of a before/after comparison.

    Parameters
    ----------
    path : path of ``report.md``; figure paths are written relative to its folder.
    before, after : EvalResult of the raw features and of the trained head.
    figures : dict with ``transfers`` (list of paths), ``confusions`` and
        ``training`` (paths), any of them optional.
    settings : DemoSettings or dict, optional.
    timings : stage -> seconds, optional.
    train_result : TrainResult, optional (steps, best validation PCK).

    Returns
    -------
    str : the path written.
    """
    path = Path(path)
    base = path.parent

    def rel(p):
        p = Path(p)
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return p.as_posix()

    cb, ca = confusion_counts(before)["all"], confusion_counts(after)["all"]
    i10 = int(np.argmin([abs(a - 0.10) for a in before.alphas]))
    p0, p1 = before.overall["pck_point"][i10], after.overall["pck_point"][i10]
    L = [f"# {title}", "",
         "Keypoint transfer on a synthetic SPair-71k-layout dataset of mirror-symmetric "
         "objects (`geomatch.demo.synthetic`), with weight-free local-appearance features "
         "(`geomatch.demo.featurizers.LocalAppearanceFeaturizer`) in place of DINOv2. "
         "Mirror-twin parts (left/right eye, front-left/front-right foot, ...) look "
         "identical up close, so the raw features confuse them; the attention head sees "
         "the whole object and is trained to tell them apart.", "",
         f"**Test split, {before.n_pairs} pairs (PCK per point, α = 0.10, bbox threshold): "
         f"{labels[0]} {_pct(p0)} % → {labels[1]} {_pct(p1)} %; left/right confusions "
         f"n̄₁₁ {cb['n11_bar']}/{cb['n11']} → {ca['n11_bar']}/{ca['n11']}.**", "",
         "## PCK (%), test split", ""]
    L += _pck_table(before, after, labels)
    L += ["", "## Per category", ""]
    L += _category_table(before, after, labels)
    L += ["", "## Geometry breakdown (all categories)", "",
          "For each source keypoint k with mirror twin k': n₁₁ — k and k' visible in the "
          "target (n̂₁₁ correct, ñ₁₁ within α·T of both, n̄₁₁ within α·T of k' only: a "
          "left/right confusion); n₁₀ — k visible, k' not; n₁ₓ — k has no twin; n₀₁ — k "
          "not visible but k' is (n̄₀₁: lands on k'); n₀₀ — neither. "
          "PCK = (n̂₁₀ + n̂₁₁ + n̂₁ₓ)/(n₁₀ + n₁₁ + n₁ₓ).", ""]
    L += _breakdown_table(before, after, labels)
    L += ["", "## Figures", ""]
    if figures.get("confusions"):
        L += ["Left/right confusions before and after training:", "",
              f"![left/right confusions]({rel(figures['confusions'])})", ""]
    if figures.get("training"):
        L += ["Training curves (validation every few steps; dashed: raw features):", "",
              f"![training curves]({rel(figures['training'])})", ""]
    tr = list(figures.get("transfers") or [])
    if tr:
        L += ["Keypoint transfers on test pairs (for each category, the pair where the head "
              "fixed the most left/right confusions of the raw features): ground truth as "
              "hollow circles, predictions green (correct), orange (on the mirror twin) or red "
              "(other miss).", ""]
        L += [f"![transfer {i}]({rel(p)})" for i, p in enumerate(tr)] + [""]
    L += ["## Run", ""]
    if train_result is not None:
        bv = train_result.best_val
        L.append(f"- training: {train_result.steps} steps; best validation PCK@0.1 "
                 f"{_pct(bv)} % (`{rel(train_result.best_path) if train_result.best_path else '–'}`)")
    if timings:
        L.append("- time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if settings is not None:
        sd = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
        L += ["- settings: `" + json.dumps(sd, sort_keys=True) + "`"]
    L += ["", "## Next: SPair-71k with real DINOv2 weights", "",
          "```sh", next_steps(), "```", "",
          "<details><summary>Full evaluation tables</summary>", "",
          f"### {labels[0]}", "", before.to_markdown(), "",
          f"### {labels[1]}", "", after.to_markdown(), "", "</details>", ""]
    path.write_text("\n".join(L), encoding="utf-8")
    return os.fspath(path)


# ---------------------------------------------------------------------------
# threads

def _numpy_blas_threads():
    """(get, set) of the thread count of NumPy's own OpenBLAS, or None.

    NumPy's wheels bundle a separate OpenBLAS (not the one geomatch's C core
    uses); :func:`geomatch.set_num_threads` does not reach it.
    """
    import ctypes
    import glob

    base = os.path.dirname(np.__file__)
    paths = (glob.glob(os.path.join(base, os.pardir, "numpy.libs", "*openblas*"))
             + glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                       "openblas_{}_num_threads"):
            get, put = suffix.format("get"), suffix.format("set")
            if hasattr(lib, get) and hasattr(lib, put):
                getter, setter = getattr(lib, get), getattr(lib, put)
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                return getter, setter
    return None


class limit_threads:
    """Context manager: run with ``n`` threads in geomatch's kernels and in
    NumPy's BLAS (``None``: leave both alone), restoring the previous counts.

    >>> with limit_threads(1):                     # doctest: +SKIP
    ...     run = train(dataset, cache, "run")
    """

    def __init__(self, n: Optional[int]):
        self.n = n

    def __enter__(self):
        import geomatch as gm

        self.saved = None
        if self.n is None:
            return self
        blas = _numpy_blas_threads()
        self.saved = (gm.get_num_threads(), blas, blas[0]() if blas else None)
        gm.set_num_threads(int(self.n))
        if blas:
            blas[1](int(self.n))
        return self

    def __exit__(self, *exc):
        import geomatch as gm

        if self.saved is not None:
            n_gm, blas, n_blas = self.saved
            gm.set_num_threads(n_gm)
            if blas and n_blas and n_blas > 0:
                blas[1](n_blas)
        return False


# ---------------------------------------------------------------------------
# the whole run

def _prepare_out(out: Path) -> None:
    """Create ``out``; clear the folders of an earlier demo run there."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise ValueError(f"out_dir {out} is not empty and holds no earlier demo run "
                         f"({_MARKER}); choose an empty or new folder")
    for sub in ("data", "cache", "train", "figures"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    for f in ("report.md", _MARKER):
        if (out / f).is_file():
            (out / f).unlink()
    out.mkdir(parents=True, exist_ok=True)


def run_demo(out_dir="geomatch-demo", quick: bool = False, seed: int = 0, *,
             settings: Optional[DemoSettings] = None, progress: Optional[bool] = None,
             verbose: bool = True, threads: Optional[int] = 1) -> dict:
    """Run the whole demo (see the module docstring) and write the report.

    Parameters
    ----------
    out_dir : path
        Output folder: ``data/``, ``cache/``, ``train/``, ``figures/``,
        ``report.md``.  It must be new, empty or an earlier demo's folder
        (whose outputs are replaced).
    quick : bool
        Use :data:`QUICK` instead of :data:`FULL`.
    seed : int
        Seeds the dataset, the head's initialization and the training order.
    settings : DemoSettings, optional
        Overrides ``quick``.
    progress : bool, optional
        Progress bars (default: on unless ``GEOMATCH_NO_PROGRESS=1``).
    verbose : bool
        Print what each stage does, and where the report is.
    threads : int or None, default 1
        Threads for geomatch's kernels and NumPy's BLAS during the run
        (restored afterwards).  The demo's matrices are small, so one thread
        loses little on an idle machine and avoids the synchronization
        stalls of OpenMP/OpenBLAS worker threads on a busy one (measured
        7x slower training with two threads on an oversubscribed 2-core
        machine).  None keeps the current settings.

    Returns
    -------
    dict
        ``report`` (path), ``figures`` (dict: ``transfers`` list, ``confusions``,
        ``training``), ``before`` / ``after`` (:class:`~geomatch.eval.evaluate.EvalResult`),
        ``train`` (:class:`~geomatch.model.train.TrainResult`), ``head`` (the
        evaluated head: the checkpoint of best validation PCK), ``raw_val``
        (validation figures of the raw features), ``timings`` (stage ->
        seconds), ``settings`` (dict), ``out_dir``, ``dataset``, ``cache``.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    with limit_threads(threads):
        return _run_demo(out_dir, quick, seed, settings, progress, verbose)


def _run_demo(out_dir, quick, seed, settings, progress, verbose) -> dict:
    from . import synthetic
    from ..data import load_dataset
    from ..eval.evaluate import evaluate, transfer_pair
    from ..model.head import load_head
    from ..model.train import train, validate

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    settings = settings or (QUICK if quick else FULL)
    if not isinstance(settings, DemoSettings):
        raise TypeError(f"settings must be a DemoSettings, got {type(settings).__name__}")
    out = Path(out_dir).expanduser()
    _prepare_out(out)
    say = print if verbose else (lambda *a, **k: None)
    timings: Dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name, t0):
        timings[name] = time.perf_counter() - t0

    # 1. data
    t0 = time.perf_counter()
    say(f"[1/6] generating the synthetic dataset in {out / 'data'} ...")
    info = synthetic.generate_spair_like(
        out / "data", n_images_per_category=settings.n_images_per_category,
        n_pairs=settings.n_pairs, seed=int(seed), size=settings.image_size,
        categories=settings.categories)
    dataset = load_dataset("spair", out / "data")
    n_pairs = {s: len(v) for s, v in info["pairs"].items()}
    say(f"      categories {info['categories']}, pairs {n_pairs}")
    stage("data", t0)

    # 2. features
    t0 = time.perf_counter()
    featurizer = _featurizer(settings)
    say(f"[2/6] featurizing every image and its mirror image: {featurizer}")
    cache = featurize_dataset(dataset, out / "cache", featurizer, progress=progress)
    stage("features", t0)

    # 3. raw features
    t0 = time.perf_counter()
    say("[3/6] evaluating the raw features on the test split ...")
    before = evaluate(dataset, "test", cache, progress=progress is not False)
    stage("eval raw", t0)

    # 4. training
    t0 = time.perf_counter()
    head_cfg = settings.head_config(cache.shape[-1])
    val_pairs = list(dataset.pairs("val", subsample=settings.val_subset, seed=0))
    say(f"[4/6] training the attention head ({settings.steps} steps of {settings.batch_pairs} "
        f"pairs, validation on {len(val_pairs)} pairs) ...")
    tres = train(dataset, cache, out / "train", val_pairs=val_pairs, head_config=head_cfg,
                 lr=settings.lr, batch_pairs=settings.batch_pairs, steps=settings.steps,
                 seed=int(seed), flip_aug=settings.flip_aug, swap_aug=settings.swap_aug,
                 val_every=settings.val_every, progress=progress)
    raw_val = validate(val_pairs, cache, None)
    stage("train", t0)

    # 5. trained head: the checkpoint with the best validation PCK
    t0 = time.perf_counter()
    head = load_head(tres.best_path) if tres.best_path is not None else tres.head
    say(f"[5/6] evaluating the trained head ({tres.best_path or 'last step'}) on the test split ...")
    after = evaluate(dataset, "test", cache, head=head, progress=progress is not False)
    stage("eval head", t0)

    # 6. figures and report
    t0 = time.perf_counter()
    say("[6/6] drawing the figures and writing the report ...")
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: Dict[str, object] = {}
    figures["confusions"] = _save(plot_confusions(before, after), fig_dir / "confusions.png")
    figures["training"] = _save(plot_training(tres, raw_val=raw_val), fig_dir / "training.png")
    pairs = list(dataset.pairs("test"))
    manifest = cache.manifest
    raw_feats = {}
    head_feats = {}

    def feats(key, trained):
        store = head_feats if trained else raw_feats
        if key not in store:
            f = np.asarray(cache.get(key), dtype=np.float32)
            store[key] = np.asarray(head(f), dtype=np.float32) if trained else f
        return store[key]

    preds_b = [transfer_pair(p, feats(p.src.key, False), feats(p.trg.key, False), manifest)
               for p in pairs]
    preds_a = [transfer_pair(p, feats(p.src.key, True), feats(p.trg.key, True), manifest)
               for p in pairs]
    figures["transfers"] = []
    for j, i in enumerate(select_figure_pairs(pairs, preds_b, preds_a, settings.n_figures)):
        fig = plot_transfer_comparison(pairs[i], preds_b[i], preds_a[i])
        name = f"transfer_{j}_{pairs[i].category}.png"
        figures["transfers"].append(_save(fig, fig_dir / name))
    stage("figures", t0)
    timings["total"] = time.perf_counter() - t_all
    report = write_report(out / "report.md", before, after, figures=figures, settings=settings,
                          timings=timings, train_result=tres)
    cb, ca = confusion_counts(before)["all"], confusion_counts(after)["all"]
    summary = {"seed": int(seed), "settings": settings.to_dict(), "timings": timings,
               "pck_point": {"raw": before.overall["pck_point"],
                             "head": after.overall["pck_point"]},
               "confusions": {"raw": cb, "head": ca}, "alphas": before.alphas}
    (out / _MARKER).write_text(json.dumps(summary, indent=1) + "\n")
    i10 = int(np.argmin([abs(a - 0.10) for a in before.alphas]))
    say("")
    say(f"PCK@0.10 (test, per point): raw features {_pct(before.overall['pck_point'][i10])} % "
        f"-> trained head {_pct(after.overall['pck_point'][i10])} %; left/right confusions "
        f"{cb['n11_bar']}/{cb['n11']} -> {ca['n11_bar']}/{ca['n11']}  "
        f"({timings['total']:.0f} s)")
    say(f"Report: {report}")
    say(f"Figures: {fig_dir}")
    say("")
    say("Next, on SPair-71k with real DINOv2 weights:")
    say(next_steps())
    return {"out_dir": out, "report": report, "figures": figures, "before": before,
            "after": after, "train": tres, "head": head, "raw_val": raw_val, "timings": timings,
            "settings": settings.to_dict(), "dataset": dataset, "cache": cache}


# ---------------------------------------------------------------------------
# CLI

def configure_parser(parser) -> None:
    """Arguments of ``geomatch demo``."""
    parser.add_argument("--out", default="geomatch-demo",
                        help="output folder (default: ./geomatch-demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller, faster run (under 30 s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_cli(args) -> int:
    """Run ``geomatch demo``."""
    threads = getattr(args, "threads", None)      # the global ``geomatch --threads N``
    run_demo(args.out, quick=args.quick, seed=args.seed,
             progress=False if args.no_progress else None,
             threads=1 if threads is None else threads)
    return 0

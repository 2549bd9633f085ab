"""The demo's figures: keypoint transfers before/after, left/right confusions,
training curves, and the rule that picks the transfer pairs to draw.

Colours come from :mod:`geomatch.eval.style` (shared with
:mod:`geomatch.eval.plotting`).
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from ..eval.style import CORRECT as _CORRECT, HEAD as _HEAD_COLOUR, HEAD_LIGHT as _HEAD_LIGHT
from ..eval.style import KEYPOINT_CMAP
from ..eval.style import RAW as _RAW_COLOUR, SWAPPED as _SWAPPED, WRONG as _WRONG
from .report import confusion_counts

__all__ = ["FIGURE_RULE", "select_figure_pairs", "pair_outcomes", "plot_transfer_comparison",
           "plot_confusions", "plot_training", "save_figure"]

#: The rule that picks the keypoint-transfer figures, fixed before any result
#: is seen (``{seed}``: ``DemoSettings.figure_seed``).
FIGURE_RULE = ("the first test pair of each category (in the order of the split's pair "
               "list) and one test pair drawn at random with numpy.random.default_rng({seed}) "
               "among the others, chosen without looking at any prediction")


def select_figure_pairs(pairs, seed: int = 2025) -> List[int]:
    """Indices of the test pairs to draw, by :data:`FIGURE_RULE`.

    The choice depends only on the pair list and ``seed``, never on any
    prediction: the first pair of each category (in list order), then one
    pair drawn uniformly from the remaining ones with
    ``numpy.random.default_rng(seed)`` (none when no pair remains).
    """
    first: dict = {}
    for i, p in enumerate(pairs):
        first.setdefault(p.category, i)
    chosen = [first[c] for c in sorted(first, key=first.get)]
    rest = [i for i in range(len(pairs)) if i not in set(chosen)]
    if rest:
        chosen.append(rest[int(np.random.default_rng(seed).integers(len(rest)))])
    return chosen


def pair_outcomes(pred, pair, alpha: float = 0.10) -> tuple:
    """(correct, swapped, scored) bool masks of one pair's predictions:
    scored = visible in both images; correct = within α·T (bbox) of the
    ground truth; swapped = not correct but within α·T of the visible mirror
    twin (a left/right confusion)."""
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


# ---------------------------------------------------------------------------
# figures

def _pyplot():
    from ..eval.plotting import _pyplot as get

    return get()


def _draw_target(ax, img, pair, pred, alpha, title):
    """Target image, ground truth (hollow circles in keypoint colours) and
    the predictions coloured by outcome, each joined to its ground truth."""
    plt = _pyplot()
    cmap = plt.get_cmap(KEYPOINT_CMAP)
    correct, swapped, scored = pair_outcomes(pred, pair, alpha)
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
    cmap = plt.get_cmap(KEYPOINT_CMAP)
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
        ax_l.plot(s, loss, lw=0.8, color=_HEAD_LIGHT, label="loss per step")
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
                  label="left/right confusions n̄₁₁/n₁₁ (head)")
        best = int(np.nanargmax([v["pck"] for v in vh]))
        ax_v.axvline(s[best], color="0.5", lw=1.0, ls=":",
                     label=f"kept checkpoint (best PCK, step {s[best]})")
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


def save_figure(fig, path) -> str:
    """Save ``fig`` as a PNG (100 dpi), close it and return the path."""
    plt = _pyplot()
    try:
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)
    return os.fspath(path)

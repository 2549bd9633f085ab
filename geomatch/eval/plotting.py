"""Pictures of keypoint transfers and part maps (matplotlib; no display needed).

:func:`plot_transfer` draws a source image with its keypoints next to the
target image with the ground truth and the predictions: a line from each
ground-truth point to its prediction, correct predictions as green filled
circles, wrong ones as red crosses, and a legend.  :func:`plot_part_maps`
draws an image with its annotated and predicted part label maps and a legend
of part names.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["plot_transfer", "save_transfer_figure", "plot_part_maps", "save_part_figure"]

from .style import CORRECT as _CORRECT, KEYPOINT_CMAP, WRONG as _WRONG


def _pyplot():
    """pyplot, leaving the backend to matplotlib and the user.

    Without a display matplotlib already falls back to Agg; switching the
    backend here would stop a notebook's inline figures from showing.
    """
    import matplotlib.pyplot as plt

    return plt


def _load_image(path) -> np.ndarray:
    from PIL import Image

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"image not found: {p}")
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"))


def plot_transfer(src_img, trg_img, src_kps, trg_kps, pred, correct, *, names=None,
                  title: Optional[str] = None, figsize=(11, 5)):
    """Draw one keypoint transfer and return the matplotlib Figure.

    Parameters
    ----------
    src_img, trg_img : array_like (H, W, 3) or path
        Images (a path is read with Pillow).
    src_kps : array_like (K, 2)
        Source keypoints; NaN rows are not drawn.
    trg_kps : array_like (K, 2)
        Target ground truth; NaN rows are not drawn.
    pred : array_like (K, 2)
        Predicted target positions; NaN rows are not drawn.
    correct : array_like of bool (K,)
        Whether each prediction counts as correct (drawn only where both
        ``trg_kps`` and ``pred`` are finite).
    names : sequence of str, optional
        Keypoint names, written next to the source keypoints.
    title : str, optional
    """
    plt = _pyplot()
    if not isinstance(src_img, np.ndarray):
        src_img = _load_image(src_img)
    if not isinstance(trg_img, np.ndarray):
        trg_img = _load_image(trg_img)
    src_kps = np.asarray(src_kps, dtype=np.float64)
    trg_kps = np.asarray(trg_kps, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    k = src_kps.shape[0]
    if trg_kps.shape != (k, 2) or pred.shape != (k, 2) or src_kps.shape != (k, 2) or correct.shape != (k,):
        raise ValueError("src_kps, trg_kps, pred must be (K, 2) and correct (K,) with the same K")
    cmap = plt.get_cmap(KEYPOINT_CMAP)
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=figsize)
    ax_s.imshow(src_img)
    ax_t.imshow(trg_img)
    for ax, t in ((ax_s, "source"), (ax_t, "target")):
        ax.set_title(t)
        ax.set_axis_off()
    src_ok = np.all(np.isfinite(src_kps), axis=1)
    scored = src_ok & np.all(np.isfinite(trg_kps), axis=1) & np.all(np.isfinite(pred), axis=1)
    for i in range(k):
        if not src_ok[i]:
            continue
        col = cmap(i % 20)
        ax_s.plot(src_kps[i, 0], src_kps[i, 1], "o", ms=8, mfc=col, mec="white", mew=1.5)
        label = names[i] if names is not None and i < len(names) else str(i)
        ax_s.annotate(label, (src_kps[i, 0], src_kps[i, 1]), xytext=(5, 5),
                      textcoords="offset points", fontsize=7, color="white",
                      bbox=dict(boxstyle="round,pad=0.15", fc=col, ec="none", alpha=0.8))
        if np.all(np.isfinite(trg_kps[i])):
            ax_t.plot(trg_kps[i, 0], trg_kps[i, 1], "o", ms=9, mfc="none", mec=col, mew=2.0,
                      zorder=3)
        if scored[i]:
            ok = bool(correct[i])
            c = _CORRECT if ok else _WRONG
            ax_t.plot([trg_kps[i, 0], pred[i, 0]], [trg_kps[i, 1], pred[i, 1]], "-", color=c, lw=1.5,
                      zorder=2)
            if ok:
                ax_t.plot(pred[i, 0], pred[i, 1], "o", ms=6, mfc=c, mec="white", mew=1.0,
                          zorder=5)
            else:
                ax_t.plot(pred[i, 0], pred[i, 1], "x", ms=10, color=c, mew=3.0, zorder=5)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="none", ms=9, mfc="none", mec="0.3", mew=2,
               label="ground truth (colour = keypoint)"),
        Line2D([], [], marker="o", ls="-", color=_CORRECT, ms=6, mfc=_CORRECT, mec="white",
               label=f"correct prediction ({int((correct & scored).sum())})"),
        Line2D([], [], marker="x", ls="-", color=_WRONG, ms=9, mew=2.5,
               label=f"wrong prediction ({int((~correct & scored).sum())})"),
    ]
    ax_t.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                fontsize=8, frameon=False)
    h, w = trg_img.shape[:2]
    ax_t.set_xlim(-0.5, w - 0.5)
    ax_t.set_ylim(h - 0.5, -0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_transfer_figure(pair, pred, path, *, alpha: float = 0.1,
                         threshold: Optional[float] = None, dpi: int = 110) -> str:
    """Draw the transfer of a :class:`PairRecord` and save it as PNG.

    Keypoints visible in both images are scored at ``alpha`` with the PCK
    threshold ``threshold`` (default: longer side of the target bbox).
    Returns the path written.
    """
    from .metrics import pair_threshold

    t = float(threshold) if threshold is not None else pair_threshold(pair, "bbox")
    src_vis = np.asarray(pair.src.visible, bool)
    trg_vis = np.asarray(pair.trg.visible, bool)
    both = src_vis & trg_vis
    src_kps = np.where(src_vis[:, None], np.asarray(pair.src.keypoints, np.float64), np.nan)
    trg_kps = np.where(both[:, None], np.asarray(pair.trg.keypoints, np.float64), np.nan)
    pred = np.where(both[:, None], np.asarray(pred, np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        d = np.hypot(pred[:, 0] - trg_kps[:, 0], pred[:, 1] - trg_kps[:, 1])
        correct = (d / t) <= alpha
    n = int(both.sum())
    title = (f"{pair.category} {pair.pair_id}: PCK@{alpha:g} = {int(correct.sum())}/{n}"
             if n else f"{pair.category} {pair.pair_id}")
    fig = plot_transfer(pair.src.path, pair.trg.path, src_kps, trg_kps, pred, correct,
                        names=getattr(pair, "keypoint_names", None), title=title)
    try:
        fig.savefig(os.fspath(path), dpi=dpi)
    finally:
        _pyplot().close(fig)
    return os.fspath(path)


def _part_colors(n: int) -> np.ndarray:
    """(n, 3) distinct colours for part classes 1..n (tab20, then hsv)."""
    plt = _pyplot()
    if n <= 20:
        return np.asarray([plt.get_cmap("tab20")(i)[:3] for i in range(n)])
    return np.asarray([plt.get_cmap("hsv")(i / n)[:3] for i in range(n)])


def plot_part_maps(image, gt, pred, part_names, *, title: Optional[str] = None,
                   alpha: float = 0.6, figsize=(13, 4.8)):
    """Image, annotated part map and predicted part map side by side.

    Parameters
    ----------
    image : array_like (H, W, 3) or path
    gt, pred : array_like of int (h, w)
        Label maps, 0 = background, ``k + 1`` = ``part_names[k]``; drawn over
        the image (stretched to it when they are on the feature grid).
    part_names : sequence of str
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The legend lists the parts present in either map.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    img = image if isinstance(image, np.ndarray) else _load_image(image)
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be 2-D label maps of one shape, got {gt.shape} "
                         f"and {pred.shape}")
    n = len(part_names)
    if gt.size and (min(gt.min(), pred.min()) < 0 or max(gt.max(), pred.max()) > n):
        raise ValueError(f"labels must lie in [0, {n}] for {n} part names")
    colors = _part_colors(n)
    h, w = img.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    axes[0].imshow(img)
    axes[0].set_title("image")
    for ax, lab, t in ((axes[1], gt, "annotation"), (axes[2], pred, "prediction")):
        rgba = np.zeros(lab.shape + (4,))
        fg = lab > 0
        rgba[fg, :3] = colors[lab[fg] - 1]
        rgba[fg, 3] = alpha
        ax.imshow(img)
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        ax.set_title(t)
    for ax in axes:
        ax.set_axis_off()
    shown = sorted(set(np.unique(gt[gt > 0]).tolist()) | set(np.unique(pred[pred > 0]).tolist()))
    handles = [Patch(color=colors[k - 1], label=part_names[k - 1]) for k in shown]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    return fig


def save_part_figure(path, image, gt, pred, part_names, *, title: Optional[str] = None,
                     dpi: int = 100) -> str:
    """:func:`plot_part_maps` saved as PNG; returns the path."""
    fig = plot_part_maps(image, gt, pred, part_names, title=title)
    try:
        fig.savefig(os.fspath(path), dpi=dpi)
    finally:
        _pyplot().close(fig)
    return os.fspath(path)

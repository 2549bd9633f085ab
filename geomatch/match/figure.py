"""The ``matches.png`` figure: both images side by side, numbered points, lines."""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["plot_matches"]


def plot_matches(src_rgb, trg_rgb, points, matches, scores: Optional[np.ndarray] = None, *,
                 title: Optional[str] = None, figsize=(11, 5.5)):
    """Draw matched points and return the matplotlib Figure.

    Parameters
    ----------
    src_rgb, trg_rgb : uint8 arrays (H, W, 3)
    points : array (K, 2)
        Source (x, y) pixels.
    matches : array (K, 2)
        Predicted target (x, y) pixels.
    scores : array (K,), optional
        Cosine similarity of each match, written into the legend line.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import ConnectionPatch

    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matches = np.asarray(matches, dtype=np.float64).reshape(-1, 2)
    if points.shape != matches.shape:
        raise ValueError(f"points {points.shape} and matches {matches.shape} must agree")
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=figsize)
    ax_s.imshow(src_rgb)
    ax_t.imshow(trg_rgb)
    ax_s.set_title(f"source ({src_rgb.shape[1]} x {src_rgb.shape[0]})")
    ax_t.set_title(f"target ({trg_rgb.shape[1]} x {trg_rgb.shape[0]})")
    cmap = plt.get_cmap("tab20")
    for i, ((xs, ys), (xt, yt)) in enumerate(zip(points, matches)):
        col = cmap(i % 20)
        for ax, (x, y) in ((ax_s, (xs, ys)), (ax_t, (xt, yt))):
            ax.plot(x, y, "o", ms=7, mfc=col, mec="white", mew=1.2, zorder=3)
            ax.annotate(str(i + 1), (x, y), xytext=(4, 4), textcoords="offset points",
                        fontsize=7, color="white",
                        bbox=dict(boxstyle="round,pad=0.12", fc=col, ec="none", alpha=0.85))
        fig.add_artist(ConnectionPatch(xyA=(xs, ys), coordsA=ax_s.transData, xyB=(xt, yt),
                                       coordsB=ax_t.transData, color=col, lw=1.0, alpha=0.8))
    for ax, img in ((ax_s, src_rgb), (ax_t, trg_rgb)):
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
    if scores is not None and len(scores):
        s = np.asarray(scores, dtype=np.float64)
        fig.text(0.5, 0.02, f"{len(s)} points; cosine at the match: median {np.median(s):.3f}, "
                 f"min {s.min():.3f}, max {s.max():.3f}", ha="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig

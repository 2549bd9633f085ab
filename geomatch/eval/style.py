"""One colour palette for every figure geomatch draws.

Outcome colours of a predicted keypoint (:data:`CORRECT`, :data:`SWAPPED`,
:data:`WRONG`) and model colours of comparison charts (:data:`RAW`,
:data:`HEAD`) are used by :mod:`geomatch.eval.plotting` and by the demo's
figures (:mod:`geomatch.demo.figures`), so the same thing has the same
colour everywhere.
"""
from __future__ import annotations

__all__ = ["CORRECT", "SWAPPED", "WRONG", "RAW", "HEAD", "HEAD_LIGHT", "KEYPOINT_CMAP"]

#: Prediction within α·T of the ground truth (green).
CORRECT = "#1a9850"
#: Prediction on the keypoint's mirror twin: a left/right confusion (orange).
SWAPPED = "#f28e1c"
#: Any other miss (red).
WRONG = "#d73027"
#: Raw backbone features in before/after charts (grey).
RAW = "#8c8c8c"
#: The trained head in before/after charts (blue).
HEAD = "#2166ac"
#: A light shade of :data:`HEAD` (noisy per-step curves under their running mean).
HEAD_LIGHT = "#9ecae1"
#: Matplotlib colour map naming the keypoints (colour = keypoint index mod 20).
KEYPOINT_CMAP = "tab20"

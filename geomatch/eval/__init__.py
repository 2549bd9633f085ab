"""Evaluation: PCK and geometry-aware metrics, the evaluation run over a split, figures.

Flow: dataset pairs + feature cache -> :mod:`.protocols` (every choice, from a
paper's preset and explicit options) -> :mod:`.evaluate` (pair selection and
keypoint transfer per pair) -> :mod:`.predictions` (``predictions.npz``,
re-scoring) -> :mod:`.metrics` (PCK per point / per image, geometry-aware
subsets, left/right breakdown, azimuth / mirror / keypoint breakdowns) ->
:mod:`.report` tables and :mod:`.plotting` figures.
:mod:`.segmentation`: GECO's PASCAL-Part part segmentation by nearest centroid.
"""

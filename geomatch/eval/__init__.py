"""Evaluation: PCK and geometry-aware metrics, the evaluation run over a split, figures.

Flow: dataset pairs + feature cache -> :mod:`.evaluate` (keypoint transfer per
pair) -> :mod:`.metrics` (PCK per point / per image, geometry-aware subsets,
left/right breakdown) -> report tables and :mod:`.plotting` figures.
:mod:`.segmentation`: GECO's PASCAL-Part part segmentation by nearest centroid.
"""

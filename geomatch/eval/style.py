"""The colours of geomatch's figures (evaluation plots, training curves, the demo).

One palette so that a correct prediction is the same green in every figure.
"""
__all__ = ["CORRECT", "SWAPPED", "WRONG", "RAW", "HEAD", "LIGHT"]

CORRECT = "#1a9850"   # green: within alpha*T of the ground truth
SWAPPED = "#f28e1c"   # orange: left/right confusion (lands on the mirror twin)
WRONG = "#d73027"     # red: any other miss
RAW = "#8c8c8c"       # grey: raw backbone features
HEAD = "#2166ac"      # blue: the trained head
LIGHT = "#9ecae1"     # light blue: per-step (noisy) series under a running mean

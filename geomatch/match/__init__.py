"""Your own images: :class:`Matcher`, the ``geomatch match`` command and the
interactive HTML viewer.

The submodules load on first use, so ``import geomatch`` stays cheap (no
Pillow, no matplotlib).
"""
from __future__ import annotations

import importlib

__all__ = ["Matcher", "Matches", "Viewer", "load_rgb"]

_LAZY = {"Matcher": "matcher", "Matches": "matcher", "load_rgb": "matcher", "Viewer": "viewer"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

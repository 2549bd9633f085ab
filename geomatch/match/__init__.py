"""Your own images: :class:`Matcher`, the ``geomatch match`` command and the
interactive HTML viewer.

``import geomatch`` does not load this package (``gm.Matcher`` does, on first
use); Pillow and matplotlib load only when an image is read or drawn.
"""
from .matcher import Matcher, Matches, load_rgb
from .viewer import Viewer

__all__ = ["Matcher", "Matches", "Viewer", "load_rgb"]
